//! `steward-server keys show|rotate-catalog`: the data directory's keys.
//!
//! `rotate-catalog` replaces the online catalog signing key (a suspected leak, or routine
//! rotation) and certifies it at the next key generation ([`crate::keys`]). Agents pin the root
//! key, not the catalog key, so they accept catalogs signed with the new key at once; once a
//! host applied one, it refuses the old key for good (THREATS C7). The root key is never
//! rotated by a command (see the README's operations section). The running server keeps
//! signing with the key it loaded until it restarts.

use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::cli::store::{actor, format_time, runtime, StoreArgs};
use crate::db::{self, audit::NewAuditEntry};
use crate::keys::{self, ServerKeys};
use crate::service;

/// Arguments of `keys`.
#[derive(Debug, Args)]
pub struct KeysArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: KeysCommand,
    /// Where the data directory is.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `keys` subcommands.
#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the root key fingerprint (what join strings pin), the catalog key fingerprint and
    /// its certificate's validity.
    Show,
    /// Replace the catalog signing key; restart the server afterwards to use it.
    RotateCatalog,
}

pub fn run(args: KeysArgs) -> anyhow::Result<ExitCode> {
    let data_dir = args.store.data_dir()?;
    match args.command {
        KeysCommand::Show => {
            let lifetime = args.store.config()?.resolve_certificate_lifetime()?;
            let keys = ServerKeys::load_existing(&data_dir, lifetime, service::now())?;
            let certificate = keys.certificate();
            println!("root key:     {}", keys.root_key_id());
            println!("catalog key:  {}", keys.catalog_key().key_id());
            println!("generation:   {}", certificate.key_generation);
            println!(
                "certificate:  issued {}, expires {}",
                format_time(certificate.issued_at.0),
                format_time(certificate.expires_at.0)
            );
        }
        KeysCommand::RotateCatalog => {
            let lifetime = args.store.config()?.resolve_certificate_lifetime()?;
            // The database first: no rotation without its audit entry.
            let rotation = runtime()?.block_on(async {
                let db = args.store.open_db().await?;
                let rotated = match keys::rotate_catalog_key(&data_dir, lifetime, service::now()) {
                    Ok(rotated) => rotated,
                    Err(error) => {
                        db.close().await;
                        return Err(error);
                    }
                };
                let (old, new) = (&rotated.old, &rotated.new);
                let recorded = db::audit::record(
                    &db,
                    &NewAuditEntry {
                        at: service::now(),
                        actor: actor(),
                        action: "keys.rotate_catalog".to_owned(),
                        target: None,
                        detail: Some(serde_json::json!({
                            "old": old.as_str(),
                            "new": new.as_str(),
                            "key_generation": rotated.key_generation,
                        })),
                    },
                )
                .await;
                db.close().await;
                recorded?;
                anyhow::Ok(rotated)
            })?;
            println!(
                "catalog key {} replaced by {} (generation {})",
                rotation.old, rotation.new, rotation.key_generation
            );
            println!(
                "restart the server (systemctl restart steward-server) to sign with it; agents \
                 accept it at once (it is certified by the same root key) and refuse the old key \
                 once they applied a catalog signed by the new one"
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
