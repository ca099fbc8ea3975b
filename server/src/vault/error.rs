//! [`VaultError`]: what can go wrong talking to Vault.
//!
//! **Invariant:** no variant carries a token, a secret id, a secret value or a response body.
//! Variants hold paths (as written in the site), statuses, addresses, file names and causes
//! from the HTTP stack or the filesystem; `serde_json` errors are never kept, because their
//! messages can quote the value that failed to parse.

use std::io;
use std::path::PathBuf;

/// An error from the Vault client. Every one means "no data": callers fail the compile of the
/// hosts that needed the path and keep serving their last good catalog (THREATS R3, K6).
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// Connection refused, DNS, TLS or timeout.
    #[error("cannot reach vault at {address}")]
    Unreachable {
        /// The configured address.
        address: String,
        /// The HTTP stack's error (its URL removed).
        #[source]
        source: reqwest::Error,
    },
    /// Vault answers but is sealed.
    #[error("vault at {address} is sealed; unseal it (`bao operator unseal`)")]
    Sealed {
        /// The configured address.
        address: String,
    },
    /// Vault answers but was never initialized.
    #[error("vault at {address} is not initialized; run `bao operator init`")]
    Uninitialized {
        /// The configured address.
        address: String,
    },
    /// The node is a standby (from [`super::VaultClient::health`] only: reads on a standby
    /// are forwarded to the active node).
    #[error("vault at {address} is a standby node; reads are forwarded to the active node")]
    Standby {
        /// The configured address.
        address: String,
    },
    /// The token is valid but its policy does not allow reading the path.
    #[error(
        "vault denied reading {path}; the server's policy needs `read` on {}",
        kv_data_path(path)
    )]
    Forbidden {
        /// The path as written in the site.
        path: String,
    },
    /// No secret at the path, or its latest version is deleted or destroyed.
    #[error("vault has no secret at {path}")]
    NotFound {
        /// The path as written in the site.
        path: String,
    },
    /// Login, token lookup or renewal failed; the message says which and what to fix.
    #[error("vault authentication failed: {0}")]
    Auth(String),
    /// A status or body the client does not expect (the body is never kept).
    #[error("unexpected response from vault for {path}: http status {status}")]
    BadResponse {
        /// The path as written in the site, or the API path (`auth/token/renew-self`).
        path: String,
        /// The HTTP status.
        status: u16,
    },
    /// A body that does not parse as what was asked for (the body is never kept: only a
    /// general reason, e.g. that it is not valid UTF-8).
    #[error("unexpected response from vault for {path}: http status {status}, {reason}")]
    Malformed {
        /// The path as written in the site, or the API path.
        path: String,
        /// The HTTP status.
        status: u16,
        /// Why it does not parse, naming no part of the body.
        reason: &'static str,
    },
    /// A KV path that is not `<mount>/<path>` made of `[A-Za-z0-9._-]` segments.
    #[error("invalid vault path {path:?}: {reason}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A `[vault]` setting that cannot work.
    #[error("invalid vault config: `{key}` {reason}")]
    InvalidConfig {
        /// The key, e.g. `vault.address`.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A token, secret id or CA file that cannot be read.
    #[error("cannot read the vault {what} {}", .path.display())]
    ReadFile {
        /// `token file`, `approle secret id file`, `ca certificate`.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// A CA file that is not PEM certificates.
    #[error("cannot use the vault ca certificate {}; it must hold PEM certificates", .path.display())]
    CaCert {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: reqwest::Error,
    },
    /// The HTTP client could not be built (TLS backend initialization).
    #[error("cannot build the vault http client")]
    Client(#[source] reqwest::Error),
}

/// `secret/openclaw` → `secret/data/openclaw`, the path a KV v2 policy names.
fn kv_data_path(path: &str) -> String {
    match path.split_once('/') {
        Some((mount, rest)) => format!("{mount}/data/{rest}"),
        None => path.to_owned(),
    }
}
