//! `steward-server node list|approve|reject|revoke|run-now`: node administration on the database
//! directly, audited with the operator's login name. A revocation takes effect on the node's
//! next request (key status is read per request); a run-now wakes the node's long-poll within
//! seconds (the server sweeps for requests made here).

use std::process::ExitCode;

use clap::{Args, Subcommand};
use steward_protocol::{is_valid_hostname, NodeId};

use crate::cli::store::{actor, format_time, runtime, StoreArgs};
use crate::db;
use crate::metrics::status_name;
use crate::service;
use crate::service::admin;

/// Arguments of `node`.
#[derive(Debug, Args)]
pub struct NodeArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: NodeCommand,
    /// Where the database is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `node` subcommands.
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List nodes with their status, last contact and catalog serial.
    List,
    /// Approve a pending node, or the new key waiting for an enrolled one (the old key is
    /// revoked).
    Approve {
        /// The node (hostname).
        name: String,
    },
    /// Reject what waits for approval: a new node (revoked), or the new key waiting for an
    /// enrolled one (refused for good; the node keeps its current key).
    Reject {
        /// The node (hostname).
        name: String,
    },
    /// Revoke a node: its keys stop working on its next request.
    Revoke {
        /// The node (hostname).
        name: String,
        /// Why (kept in the key history and the audit log).
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Ask a node to run now.
    RunNow {
        /// The node (hostname).
        name: String,
    },
}

pub fn run(args: NodeArgs) -> anyhow::Result<ExitCode> {
    runtime()?.block_on(async move {
        let db = args.store.open_db().await?;
        let result = command(&db, args.command).await;
        db.close().await;
        result.map(|()| ExitCode::SUCCESS)
    })
}

fn node_name(name: &str) -> anyhow::Result<NodeId> {
    anyhow::ensure!(
        is_valid_hostname(name),
        "invalid node name {name:?}: expected a lowercase hostname such as devvm"
    );
    Ok(NodeId(name.to_owned()))
}

async fn command(db: &db::Db, command: NodeCommand) -> anyhow::Result<()> {
    let now = service::now();
    match command {
        NodeCommand::List => {
            let pending = db::pending_keys::list(db).await?;
            println!(
                "{:<32}  {:<11}  {:<12}  {:<20}  {:<14}  note",
                "name", "status", "class", "last seen", "serial"
            );
            for node in db::nodes::list(db, None).await? {
                let note = if pending.iter().any(|p| p.node == node.name) {
                    "new key waiting for approval"
                } else {
                    ""
                };
                println!(
                    "{:<32}  {:<11}  {:<12}  {:<20}  {:<14}  {note}",
                    node.name,
                    status_name(node.status),
                    node.class.as_deref().unwrap_or("-"),
                    node.last_seen_at
                        .map_or_else(|| "never".to_owned(), |at| format_time(at.0)),
                    node.catalog_serial
                        .map_or_else(|| "-".to_owned(), |serial| serial.to_string()),
                );
            }
        }
        NodeCommand::Approve { name } => {
            let name = node_name(&name)?;
            let approved = admin::approve(db, &name, &actor(), now).await?;
            if approved.replaced_key {
                println!("{name} approved with its new key; the old key is revoked");
            } else {
                println!("{name} approved (was {})", status_name(approved.previous));
            }
        }
        NodeCommand::Reject { name } => {
            let name = node_name(&name)?;
            match admin::reject(db, &name, &actor(), "enrollment rejected", now).await? {
                admin::Rejected::WaitingKey => {
                    println!("{name}: the waiting key is rejected; the current key keeps working")
                }
                admin::Rejected::Node => println!("{name} rejected (revoked)"),
            }
        }
        NodeCommand::Revoke { name, reason } => {
            let name = node_name(&name)?;
            admin::revoke(db, &name, &actor(), &reason, now).await?;
            println!("{name} revoked; its next request is refused");
        }
        NodeCommand::RunNow { name } => {
            let name = node_name(&name)?;
            admin::run_now(db, &name, &actor(), now).await?;
            println!("{name} asked to run now");
        }
    }
    Ok(())
}
