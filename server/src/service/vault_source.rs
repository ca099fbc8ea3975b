//! Where Vault data comes from at run time: a Vault / OpenBao server through
//! [`crate::vault::VaultClient`], or (development and tests only) a file in the offline
//! `vault-data.yaml` shape. Both answer "these paths" with all of them or an error, never an
//! empty map for a path that failed (THREATS K6, R3).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use steward_catalogs::loader::load_vault_file;
use steward_catalogs::VaultData;

use crate::vault::{VaultClient, VaultError};

/// The configured source.
#[derive(Debug, Clone)]
pub enum VaultBackend {
    /// A Vault server.
    Client(VaultClient),
    /// A file, re-read when it changes.
    File(VaultFile),
}

/// The offline Vault data file, parsed again only when its size, times or inode change (a
/// `stat` per fetch instead of a read and a YAML parse).
#[derive(Debug, Clone)]
pub struct VaultFile {
    path: PathBuf,
    parsed: ParsedFile,
}

/// The last parse of the file and the stamp it was made from.
type ParsedFile = Arc<Mutex<Option<(FileStamp, Arc<VaultData>)>>>;

/// What tells one version of a file from the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    inode: u64,
    modified: Option<SystemTime>,
    changed: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: meta.len(),
            inode: meta.ino(),
            modified: meta.modified().ok(),
            changed: (meta.ctime(), meta.ctime_nsec()),
        })
    }
}

impl VaultFile {
    /// The file at `path` (read at the first fetch).
    pub fn new(path: PathBuf) -> VaultFile {
        VaultFile {
            path,
            parsed: Arc::new(Mutex::new(None)),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole file, parsed; from memory while it has not changed.
    async fn load(&self) -> Result<Arc<VaultData>, FetchError> {
        // Stamped before reading: a change during the read shows at the next fetch.
        let stamp = FileStamp::of(&self.path);
        if let (Some(stamp), Some((cached, data))) = (
            stamp,
            &*self.parsed.lock().unwrap_or_else(PoisonError::into_inner),
        ) {
            if stamp == *cached {
                return Ok(Arc::clone(data));
            }
        }
        let file = self.path.clone();
        let data = tokio::task::spawn_blocking(move || load_vault_file(&file))
            .await
            .map_err(|_| FetchError::Unavailable("reading the vault data file failed".into()))?
            .map_err(|error| FetchError::Unavailable(format!("vault data file: {error}")))?;
        let data = Arc::new(data);
        *self.parsed.lock().unwrap_or_else(PoisonError::into_inner) =
            stamp.map(|stamp| (stamp, Arc::clone(&data)));
        Ok(data)
    }
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
                let all = file.load().await?;
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

    /// How often [`crate::service::catalog::CatalogService::refresh_vault`] looks: a Vault
    /// server once per cache lifetime (30 s when caching is off), so watching adds at most one
    /// read per path per lifetime; a file every `site_check` (a `stat`), at least every 50 ms.
    pub fn watch_interval(&self, site_check: Duration) -> Duration {
        match self {
            VaultBackend::Client(client) => match client.cache_ttl() {
                ttl if ttl.is_zero() => Duration::from_secs(30),
                ttl => ttl.max(Duration::from_secs(1)),
            },
            VaultBackend::File(_) => site_check.max(Duration::from_millis(50)),
        }
    }

    /// Whether the source can answer now (`/readyz`).
    pub async fn health(&self) -> Result<(), String> {
        match self {
            VaultBackend::Client(client) => client.health().await.map_err(|e| error_chain(&e)),
            VaultBackend::File(file) => {
                if file.path().is_file() {
                    Ok(())
                } else {
                    Err(format!(
                        "vault data file {} is missing",
                        file.path().display()
                    ))
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
