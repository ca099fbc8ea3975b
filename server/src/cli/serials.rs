//! `steward-server serials rebase [--dry-run]`: the recovery after the server's clock ran
//! ahead (deploy/README.md, "Clock recovery").
//!
//! Serials follow the server's clock (`max(last + 1, now in ms)`), and agents refuse a serial
//! more than a day ahead of their own clock (THREATS C6). Serials issued while the clock ran
//! ahead were refused by every host with a right clock, yet they stay the node's floor, so the
//! server refuses to issue more ([`crate::service::catalog::next_serial`]) and the fleet gets
//! no new catalog. `rebase` drops the database's records of serials more than a day ahead of
//! the (corrected) clock and lowers each node's floor to its newest remaining record; the next
//! serial is then the clock again. It is safe for the hosts: no host with a right clock can
//! have applied a dropped serial, and every agent still refuses a serial below the one it
//! applied, so no old catalog becomes acceptable again. A node that reported applying a dropped
//! serial (its own clock ran ahead too) is named: it needs its clock fixed and its accepted
//! serial reset on the host. Run it with the server stopped (a running server keeps the
//! serials it issued in memory); it is audited.

use std::process::ExitCode;

use clap::{Args, Subcommand};
use steward_protocol::envelope::MAX_SERIAL_LEAD_MS;
use steward_protocol::Serial;

use crate::cli::store::{actor, runtime, StoreArgs};
use crate::db::{self, audit::NewAuditEntry};
use crate::service;

/// Arguments of `serials`.
#[derive(Debug, Args)]
pub struct SerialsArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: SerialsCommand,
    /// Where the database is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `serials` subcommands.
#[derive(Debug, Subcommand)]
pub enum SerialsCommand {
    /// After the server's clock ran ahead and was corrected: forget the serials issued more
    /// than a day ahead of the clock, so that new serials follow the clock again. Stop the
    /// server first.
    Rebase {
        /// Print what would change, change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(args: SerialsArgs) -> anyhow::Result<ExitCode> {
    let SerialsCommand::Rebase { dry_run } = args.command;
    let ceiling = Serial(service::now_ms().saturating_add(MAX_SERIAL_LEAD_MS));
    let rebased = runtime()?.block_on(async {
        let db = args.store.open_db().await?;
        let result = async {
            let rebased = db::catalogs::rebase(&db, ceiling, !dry_run).await?;
            if !dry_run && !rebased.is_empty() {
                let nodes: Vec<&str> = rebased.iter().map(|r| r.node.as_str()).collect();
                db::audit::record(
                    &db,
                    &NewAuditEntry {
                        at: service::now(),
                        actor: actor(),
                        action: "serials.rebase".to_owned(),
                        target: None,
                        detail: Some(serde_json::json!({
                            "ceiling": ceiling.0,
                            "nodes": nodes,
                        })),
                    },
                )
                .await?;
            }
            anyhow::Ok(rebased)
        }
        .await;
        db.close().await;
        result
    })?;
    if rebased.is_empty() {
        println!("no serial is more than a day ahead of this clock ({ceiling} ms); nothing to do");
        return Ok(ExitCode::SUCCESS);
    }
    for node in &rebased {
        println!(
            "{}: serial {} -> {} ({} catalog record(s) above {} dropped)",
            node.node,
            node.from,
            node.to
                .map_or_else(|| "none (the clock)".to_owned(), |s| s.to_string()),
            node.dropped,
            ceiling
        );
        if let Some(applied) = node.applied_above {
            println!(
                "{}: reported applying serial {applied}: its own clock ran ahead too, and it \
                 refuses lower serials; fix its clock and reset it (deploy/README.md, clock \
                 recovery)",
                node.node
            );
        }
    }
    if dry_run {
        println!("dry run: nothing changed");
    } else {
        println!("start the server: new serials follow its clock again, and hosts accept them");
    }
    Ok(ExitCode::SUCCESS)
}
