//! Where Vault data comes from at run time: a Vault / OpenBao server through
//! [`crate::vault::VaultClient`], or (development and tests only) a file in the offline
//! `vault-data.yaml` shape. Both answer "these paths" with all of them or an error, never an
//! empty map for a path that failed (THREATS K6, R3).

use std::collections::BTreeSet;
use std::path::PathBuf;

use steward_catalogs::loader::load_vault_file;
use steward_catalogs::VaultData;

use crate::vault::{VaultClient, VaultError};

/// The configured source.
#[derive(Debug, Clone)]
pub enum VaultBackend {
    /// A Vault server.
    Client(VaultClient),
    /// A file, re-read at every fetch.
    File(PathBuf),
}

/// Why Vault data could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No secret at this path.
    #[error("vault has no secret at {0}")]
    NotFound(String),
    /// Anything else: Vault unreachable, sealed, forbidden, a bad file. The message names
    /// paths and statuses only.
    #[error("{0}")]
    Unavailable(String),
}

impl VaultBackend {
    /// Reads `paths`.
    pub async fn read_many(&self, paths: &BTreeSet<String>) -> Result<VaultData, FetchError> {
        match self {
            VaultBackend::Client(client) => {
                client.read_many(paths).await.map_err(|error| match error {
                    VaultError::NotFound { path } => FetchError::NotFound(path),
                    other => FetchError::Unavailable(error_chain(&other)),
                })
            }
            VaultBackend::File(file) => {
                let file = file.clone();
                let all = tokio::task::spawn_blocking(move || load_vault_file(&file))
                    .await
                    .map_err(|_| {
                        FetchError::Unavailable("reading the vault data file failed".into())
                    })?
                    .map_err(|error| {
                        FetchError::Unavailable(format!("vault data file: {error}"))
                    })?;
                let mut data = VaultData::default();
                for path in paths {
                    match all.paths.get(path) {
                        Some(secret) => {
                            data.paths.insert(path.clone(), secret.clone());
                        }
                        None => return Err(FetchError::NotFound(path.clone())),
                    }
                }
                Ok(data)
            }
        }
    }

    /// Whether the source can answer now (`/readyz`).
    pub async fn health(&self) -> Result<(), String> {
        match self {
            VaultBackend::Client(client) => client.health().await.map_err(|e| error_chain(&e)),
            VaultBackend::File(file) => {
                if file.is_file() {
                    Ok(())
                } else {
                    Err(format!("vault data file {} is missing", file.display()))
                }
            }
        }
    }
}

/// `error: cause: cause`, for errors whose messages are safe to show (Vault errors name paths
/// and statuses, never values).
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
