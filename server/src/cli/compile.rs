//! `steward-server compile --site DIR --node NAME [--vault-data FILE] [--format json|yaml]`
//! prints a node's catalog with sensitive values redacted.
//!
//! With `--signed --to-key AGENT_X25519_PUBKEY_B64 [--data-dir DIR] [--serial N] [--out FILE]`
//! it writes what the server would serve instead: the catalog with its secrets sealed to the
//! agent's key, signed with the data directory's catalog key and certificate (offline signing,
//! e.g. for a host that cannot reach the server). The serial defaults to the current time in
//! milliseconds, so the agent accepts it over what it applied before; the node's sticky ports
//! and managed users come from the server's database when it knows the node.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::{Args, ValueEnum};
use steward_catalogs::compile::{compile, CompileError, NodeInfo};
use steward_catalogs::loader::{load_site_dir, load_vault_file, LoadError};
use steward_catalogs::{State, VaultData};
use steward_protocol::seal::OsRng;
use steward_protocol::{
    is_valid_hostname, seal_catalog_secrets, sign_catalog, NodeId, Serial, Timestamp,
};

use crate::keys::ServerKeys;

/// Output format of `compile`.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Format {
    /// Pretty JSON.
    Json,
    /// YAML.
    Yaml,
}

/// Arguments of `compile`.
#[derive(Debug, Args)]
pub struct CompileArgs {
    /// The site directory.
    #[arg(long, value_name = "DIR")]
    pub site: PathBuf,
    /// The node (hostname) to compile for.
    #[arg(long, value_name = "NAME")]
    pub node: String,
    /// Vault data in the offline YAML shape (without it, nodes that read Vault fail to compile).
    #[arg(long, value_name = "FILE")]
    pub vault_data: Option<PathBuf>,
    /// Output format (of the unsigned catalog).
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Write a signed catalog envelope (secrets sealed to --to-key) instead of the redacted
    /// catalog.
    #[arg(long, requires = "to_key")]
    pub signed: bool,
    /// The agent's X25519 public key, base64 (its `encryption_key`).
    #[arg(long, value_name = "BASE64", requires = "signed")]
    pub to_key: Option<String>,
    /// The server's data directory, holding its keys (default: the config's `data_dir`).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The server's config file (for `data_dir`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The catalog serial (default: now in milliseconds).
    #[arg(long, value_name = "N", requires = "signed")]
    pub serial: Option<u64>,
    /// Write the output to FILE (mode 0600) instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

pub fn run(args: CompileArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        is_valid_hostname(&args.node),
        "invalid node name {:?}: expected a lowercase hostname such as devvm",
        args.node
    );
    let site = match load_site_dir(&args.site) {
        Ok(site) => site,
        Err(LoadError::Site(errors)) => {
            super::print_site_errors(&args.site, &errors);
            return Ok(ExitCode::FAILURE);
        }
        Err(other) => return Err(other).context("loading the site"),
    };
    let vault = match &args.vault_data {
        Some(path) => match load_vault_file(path) {
            Ok(data) => data,
            Err(LoadError::Site(errors)) => {
                super::print_site_errors(std::path::Path::new(""), &errors);
                return Ok(ExitCode::FAILURE);
            }
            Err(other) => return Err(other).context("loading the vault data"),
        },
        None => VaultData::default(),
    };
    let node = NodeInfo::new(NodeId(args.node.clone()));
    let now = crate::service::now();
    let signing = if args.signed {
        let store = super::store::StoreArgs {
            config: args.config.clone(),
            data_dir: args.data_dir.clone(),
        };
        Some(Signing::prepare(
            &store,
            args.to_key.as_deref().unwrap_or_default(),
            &node.name,
            now,
        )?)
    } else {
        None
    };
    let state = signing
        .as_ref()
        .map_or_else(State::default, |signing| signing.state.clone());
    let compiled = match compile(&site, &vault, &node, &state, now) {
        Ok(compiled) => compiled,
        Err(CompileError { errors, .. }) => {
            super::print_site_errors(&args.site, &errors);
            return Ok(ExitCode::FAILURE);
        }
    };
    let bytes = match signing {
        Some(signing) => {
            let mut catalog = compiled.catalog;
            catalog.serial = Serial(args.serial.unwrap_or_else(crate::service::now_ms));
            seal_catalog_secrets(&mut catalog, &signing.recipient, &mut OsRng);
            let mut envelope = sign_catalog(
                &catalog,
                signing.keys.catalog_key(),
                &signing.keys.certificate().envelope,
            )
            .context("signing the catalog")?;
            envelope.push(b'\n');
            eprintln!(
                "signed catalog for {} with serial {}, expires {}",
                catalog.node,
                catalog.serial,
                super::store::format_time(catalog.expires_at.0)
            );
            envelope
        }
        // Unsealed secrets serialize as "<redacted>" (steward_protocol::Secret), so printing
        // the payload can never show a sensitive value in clear.
        None => match args.format {
            Format::Json => serde_json::to_string_pretty(&compiled.catalog)? + "\n",
            Format::Yaml => serde_yaml::to_string(&compiled.catalog)?,
        }
        .into_bytes(),
    };
    match &args.out {
        Some(path) => crate::keys::write_atomically(path, &bytes)?,
        None => std::io::stdout()
            .write_all(&bytes)
            .context("writing to standard output")?,
    }
    Ok(ExitCode::SUCCESS)
}

/// What `--signed` needs: the server's keys, the recipient key and the node's state.
struct Signing {
    keys: ServerKeys,
    recipient: [u8; 32],
    state: State,
}

impl Signing {
    fn prepare(
        store: &super::store::StoreArgs,
        to_key: &str,
        node: &NodeId,
        now: Timestamp,
    ) -> anyhow::Result<Signing> {
        let recipient: [u8; 32] = STANDARD
            .decode(to_key.trim())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .context("--to-key must be the agent's X25519 public key: 32 bytes of base64")?;
        let data_dir = store.data_dir()?;
        let lifetime = store.config()?.resolve_certificate_lifetime()?;
        let keys = ServerKeys::load_existing(&data_dir, lifetime, now)?;
        let state = if data_dir.join(crate::app::DB_FILE).exists() {
            super::store::runtime()?.block_on(async {
                let db = store.open_db().await?;
                let state = match crate::db::state::load(&db, node).await {
                    Ok(state) => Ok(state),
                    Err(crate::db::DbError::NotFound { .. }) => Ok(State::default()),
                    Err(error) => Err(error),
                };
                db.close().await;
                state.context("reading the node's state")
            })?
        } else {
            State::default()
        };
        Ok(Signing {
            keys,
            recipient,
            state,
        })
    }
}
