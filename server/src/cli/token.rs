//! `steward-server token create|list|revoke`: bootstrap tokens. `create` prints the join string
//! once; only the secret's hash is stored.

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use steward_protocol::join::JoinString;

use crate::cli::store::{actor, format_time, runtime, StoreArgs};
use crate::config::parse_duration;
use crate::db;
use crate::keys::root_key_id;
use crate::service;
use crate::service::admin::{self, TokenRequest};

/// Arguments of `token`.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: TokenCommand,
    /// Where the database is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `token` subcommands.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create a bootstrap token and print its join string (shown only this once).
    Create(CreateArgs),
    /// List tokens (never their secrets).
    List,
    /// Revoke a token by id.
    Revoke {
        /// The token id (the part before the dot).
        #[arg(value_name = "ID")]
        id: String,
    },
}

/// Arguments of `token create`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// How long the token is valid (e.g. 1h, 24h, 30d).
    #[arg(long, default_value = "24h")]
    pub ttl: String,
    /// How many hosts may enroll with it.
    #[arg(long, default_value_t = 1)]
    pub uses: u32,
    /// Only hostnames matching this glob (`*`, `?`) may enroll with it.
    #[arg(long, value_name = "GLOB")]
    pub hostname: Option<String>,
    /// Host class of the nodes it enrolls; auto-approval then requires the hostname to match
    /// that class of the site.
    #[arg(long, value_name = "CLASS")]
    pub class: Option<String>,
    /// Approve enrolled nodes without an admin when the site's host classes allow it.
    #[arg(long)]
    pub auto_approve: bool,
    /// May replace the key of an already enrolled hostname (tokens for VM templates).
    #[arg(long)]
    pub reenroll: bool,
    /// The URL agents use to reach the server (default: the config's `public_url`).
    #[arg(long, value_name = "URL")]
    pub server_url: Option<String>,
    /// What the token is for.
    #[arg(long, default_value = "")]
    pub description: String,
}

pub fn run(args: TokenArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let db = args.store.open_db().await?;
        let result = match args.command {
            TokenCommand::Create(create) => create_token(&args.store, &db, create).await,
            TokenCommand::List => list(&db).await,
            TokenCommand::Revoke { id } => {
                admin::revoke_token(&db, &id, &actor(), service::now()).await?;
                println!("token {id} revoked");
                Ok(())
            }
        };
        db.close().await;
        result.map(|()| ExitCode::SUCCESS)
    })
}

async fn create_token(store: &StoreArgs, db: &db::Db, args: CreateArgs) -> anyhow::Result<()> {
    let server_url = match args.server_url {
        Some(url) => url,
        None => store.config()?.public_url.context(
            "no --server-url given and no `public_url` in the config; pass --server-url https://...",
        )?,
    };
    steward_protocol::join::check_server_url(&server_url)
        .with_context(|| format!("--server-url {server_url:?}"))?;
    let ttl = parse_duration(&args.ttl)
        .with_context(|| format!("--ttl {:?} is not a duration (e.g. 1h, 24h, 30d)", args.ttl))?;
    let root = root_key_id(&store.data_dir()?)?;
    let request = TokenRequest {
        description: args.description,
        ttl,
        uses: args.uses,
        hostname_glob: args.hostname,
        class: args.class,
        auto_approve: args.auto_approve,
        may_reenroll: args.reenroll,
    };
    let (token, expires_at) = admin::create_token(db, &request, &actor(), service::now()).await?;
    let id = token.id().to_owned();
    let join = JoinString::new(&server_url, token, root)?;
    eprintln!(
        "token {id} created, valid until {}; the join string below is shown only once:",
        format_time(expires_at.0)
    );
    println!("{join}");
    Ok(())
}

async fn list(db: &db::Db) -> anyhow::Result<()> {
    let tokens = db::tokens::list(db).await?;
    let now = service::now();
    println!(
        "{:<12}  {:<20}  {:<9}  {:<10}  {:<16}  {:<12}  description",
        "id", "expires", "uses", "state", "hostname", "flags"
    );
    for token in tokens {
        let state = if token.revoked_at.is_some() {
            "revoked"
        } else if token.expires_at <= now {
            "expired"
        } else if token.uses_done >= token.uses_allowed {
            "spent"
        } else {
            "valid"
        };
        let mut flags = Vec::new();
        if token.auto_approve {
            flags.push("auto");
        }
        if token.may_reenroll {
            flags.push("reenroll");
        }
        println!(
            "{:<12}  {:<20}  {:<9}  {:<10}  {:<16}  {:<12}  {}",
            token.token_id,
            format_time(token.expires_at.0),
            format!("{}/{}", token.uses_done, token.uses_allowed),
            state,
            token.hostname_glob.as_deref().unwrap_or("*"),
            flags.join(","),
            token.description
        );
    }
    Ok(())
}
