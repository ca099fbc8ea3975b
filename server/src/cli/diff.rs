//! `steward-server diff --site NEW --against CURRENT`: what a site change would do to every
//! enrolled host, before it is merged. Each host is compiled with both sites and reported as
//! errored, changed (resource by resource, sensitive content never shown) or unchanged.
//!
//! Exit codes as `--detailed-exitcodes`: 0 nothing changes, 2 changes, 4 some host fails to
//! compile with the new site, 6 both; 1 when the command itself cannot run.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use clap::Args;
use steward_catalogs::compile::{CompileError, CompiledCatalog, Compiler, NodeInfo};
use steward_catalogs::loader::{load_site_dir, LoadError};
use steward_catalogs::{Site, SiteErrors, State, VaultData};
use steward_protocol::{is_valid_hostname, EnrollmentStatus, NodeId, Timestamp};

use super::store::{runtime, vault_backend, StoreArgs};
use crate::catalog_diff::{diff, Change};
use crate::service::vault_source::VaultBackend;

/// Arguments of `diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The proposed site.
    #[arg(long, value_name = "DIR")]
    pub site: PathBuf,
    /// The site to compare with (normally the deployed one).
    #[arg(long, value_name = "DIR")]
    pub against: PathBuf,
    /// Compile these nodes (repeatable) instead of every approved node of the database.
    #[arg(long = "node", value_name = "NAME")]
    pub nodes: Vec<String>,
    /// Vault data in the offline YAML shape, instead of the server's configured Vault.
    #[arg(long, value_name = "FILE")]
    pub vault_data: Option<PathBuf>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(args: DiffArgs) -> anyhow::Result<ExitCode> {
    let new_site = load(&args.site)?;
    let old_site = load(&args.against)?;
    let new = Compiler::new(&new_site);
    let old = Compiler::new(&old_site).ok();
    let now = crate::service::now();
    runtime()?.block_on(async move {
        let (nodes, db) = if args.nodes.is_empty() {
            let db = args.store.open_db().await?;
            let nodes = crate::db::nodes::list(&db, Some(EnrollmentStatus::Approved))
                .await
                .context("listing approved nodes")?
                .into_iter()
                .map(|node| node.name)
                .collect::<Vec<_>>();
            (nodes, Some(db))
        } else {
            let mut nodes = Vec::new();
            for name in &args.nodes {
                anyhow::ensure!(is_valid_hostname(name), "invalid node name {name:?}");
                nodes.push(NodeId(name.clone()));
            }
            // With explicit nodes the database is optional (it only adds sticky state).
            let db = args.store.open_db().await.ok();
            (nodes, db)
        };
        if nodes.is_empty() {
            println!("no approved nodes to compare; name some with --node");
            return Ok(ExitCode::SUCCESS);
        }
        let Some(vault) = vault_backend(&args.store, args.vault_data.as_deref())? else {
            bail!("no Vault configured: pass --vault-data FILE or --config FILE");
        };
        let mut counts = (0usize, 0usize, 0usize);
        for node in &nodes {
            let state = match &db {
                Some(db) => crate::db::state::load(db, node).await.unwrap_or_default(),
                None => State::default(),
            };
            let old_result = match &old {
                Some(compiler) => compile(compiler, &vault, node, &state, now).await?,
                None => Err(SiteErrors(Vec::new()).into()),
            };
            // The new site starts from the state the current one leaves (sticky ports, managed
            // users), as the server would after the current site has been deployed.
            let state_after = old_result.as_ref().map_or(&state, |compiled| &compiled.state);
            let new_result = match &new {
                Ok(compiler) => compile(compiler, &vault, node, state_after, now).await?,
                Err(errors) => Err(errors.clone().into()),
            };
            match (old_result, new_result) {
                (_, Err(error)) => {
                    counts.2 += 1;
                    println!("{node}: errored with the new site");
                    for line in error.errors() {
                        let mut shown = line.clone();
                        shown.loc.file = args.site.join(&line.loc.file).display().to_string();
                        println!("  {shown}");
                    }
                }
                (Err(_), Ok(compiled)) => {
                    counts.0 += 1;
                    println!(
                        "{node}: changed: did not compile with the current site, compiles now ({} resources)",
                        compiled.catalog.resources.len()
                    );
                }
                (Ok(before), Ok(after)) => {
                    let changes = diff(&before.catalog, &after.catalog);
                    if changes.is_empty() {
                        counts.1 += 1;
                        println!("{node}: unchanged");
                    } else {
                        counts.0 += 1;
                        println!("{node}: changed ({} resources)", changes.len());
                        for change in &changes {
                            print_change(change);
                        }
                    }
                }
            }
        }
        if let Some(db) = db {
            db.close().await;
        }
        println!(
            "{} changed, {} unchanged, {} errored",
            counts.0, counts.1, counts.2
        );
        let code = u8::from(counts.0 > 0) * 2 + u8::from(counts.2 > 0) * 4;
        Ok(ExitCode::from(code))
    })
}

fn print_change(change: &Change) {
    match change {
        Change::Added(id) => println!("  + {id}"),
        Change::Removed(id) => println!("  - {id}"),
        Change::Changed(id, fields) => {
            println!("  ~ {id}");
            for field in fields {
                for line in field.lines() {
                    println!("      {line}");
                }
            }
        }
    }
}

fn load(dir: &Path) -> anyhow::Result<Site> {
    match load_site_dir(dir) {
        Ok(site) => Ok(site),
        // A site that does not parse still gets a report: every host errors with it.
        Err(LoadError::Site(errors)) => {
            for error in &errors.0 {
                let mut shown = error.clone();
                shown.loc.file = dir.join(&error.loc.file).display().to_string();
                eprintln!("{shown}");
            }
            bail!(
                "{} does not load ({} errors)",
                dir.display(),
                errors.0.len()
            )
        }
        Err(other) => Err(other).with_context(|| format!("loading {}", dir.display())),
    }
}

/// Compiles, fetching the Vault paths the compile turns out to need (bounded rounds).
async fn compile(
    compiler: &Compiler,
    vault: &VaultBackend,
    node: &NodeId,
    state: &State,
    now: Timestamp,
) -> anyhow::Result<Result<CompiledCatalog, CompileError>> {
    let mut paths = BTreeSet::from([compiler.site().config.vault.roles_path.clone()]);
    let node_info = NodeInfo::new(node.clone());
    for _ in 0..8 {
        let data: VaultData = match vault.read_many(&paths).await {
            Ok(data) => data,
            Err(error) => bail!("reading vault for {node}: {error}"),
        };
        match compiler.compile(&data, &node_info, state, now) {
            Err(error)
                if !error.missing_vault_paths.is_empty()
                    && !error.missing_vault_paths.is_subset(&paths) =>
            {
                paths.extend(error.missing_vault_paths.iter().cloned());
            }
            result => return Ok(result),
        }
    }
    bail!("{node}: the compile kept asking for more vault paths")
}
