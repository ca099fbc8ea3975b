//! What the admin commands share: finding the config and data directory, opening the existing
//! database, and naming the operator in the audit log.

use std::path::PathBuf;

use anyhow::{bail, Context};
use clap::Args;

use crate::app::DB_FILE;
use crate::config::{load_for_admin, Config};
use crate::db::Db;

/// `--config` and `--data-dir` of the admin commands.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// The server's config file (default /etc/steward/server.toml, if it exists).
    #[arg(long, value_name = "FILE", global = true)]
    pub config: Option<PathBuf>,
    /// The data directory (overrides the config's `data_dir`).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
}

impl StoreArgs {
    /// The config file's contents (defaults when there is none).
    pub fn config(&self) -> anyhow::Result<Config> {
        load_for_admin(self.config.as_deref())
    }

    /// The data directory.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        match &self.data_dir {
            Some(dir) => Ok(dir.clone()),
            None => Ok(self.config()?.data_dir()),
        }
    }

    /// Opens the server's existing database (never creates one in the wrong place).
    pub async fn open_db(&self) -> anyhow::Result<Db> {
        let path = self.data_dir()?.join(DB_FILE);
        if !path.exists() {
            bail!(
                "no database at {}; start the server once, or pass --data-dir / --config",
                path.display()
            );
        }
        Db::open(&path)
            .await
            .with_context(|| format!("opening {}", path.display()))
    }
}

/// The audit actor of a CLI command: `cli:<login name>` (or `cli:uid:<uid>`).
pub fn actor() -> String {
    let name = std::env::var("SUDO_USER")
        .ok()
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .filter(|name| {
            !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        });
    match name {
        Some(name) => format!("cli:{name}"),
        None => {
            use std::os::unix::fs::MetadataExt;
            let uid = std::fs::metadata("/proc/self").map_or(u32::MAX, |meta| meta.uid());
            format!("cli:uid:{uid}")
        }
    }
}

/// A current-thread runtime for one admin command.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ` (UTC), for tables.
pub fn format_time(seconds: i64) -> String {
    let (y, mo, d, h, mi, s) = steward_protocol::calendar::civil_from_secs(seconds);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}Z")
}

/// Where the admin commands read Vault data: `--vault-data FILE` when given, else the server
/// config's `[vault]` (or its dev-only `vault_data_file`); `None` when there is neither.
pub fn vault_backend(
    store: &StoreArgs,
    vault_data: Option<&std::path::Path>,
) -> anyhow::Result<Option<crate::service::vault_source::VaultBackend>> {
    use crate::service::vault_source::{VaultBackend, VaultFile};
    if let Some(path) = vault_data {
        return Ok(Some(VaultBackend::File(VaultFile::new(path.to_owned()))));
    }
    let config = store.config()?;
    Ok(match (config.vault, config.vault_data_file) {
        (Some(vault), _) => Some(VaultBackend::Client(
            crate::vault::VaultClient::new(vault).context("setting up the vault client")?,
        )),
        (None, Some(path)) => Some(VaultBackend::File(VaultFile::new(path))),
        (None, None) => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_utc_times() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00Z");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13:20Z");
    }
}
