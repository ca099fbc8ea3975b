//! The `[vault]` table of the server's config, as written by the admin.
//!
//! [`super::VaultClient::new`] validates it (address, auth source, CA file) before any request.
//! Nothing here holds a secret: the token and the AppRole secret id stay in files or the
//! environment and are read when they are needed.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::config::parse_duration;

/// Default for [`VaultConfig::timeout`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for [`VaultConfig::cache_ttl`].
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(30);
/// Default AppRole mount.
pub const DEFAULT_APPROLE_MOUNT: &str = "approle";

/// How to reach and authenticate to Vault / OpenBao.
///
/// ```toml
/// [vault]
/// address = "https://vault.example:8200"
/// ca_cert = "/etc/steward/vault-ca.pem"  # optional, added to the built-in roots
/// timeout = "10s"                        # whole request; connect gets at most 5 s
/// cache_ttl = "30s"                      # per-path cache of KV reads; "0s" disables it
///
/// [vault.auth]
/// method = "approle"                     # or "token" with token_file / token_env
/// role_id = "c0ffee…"
/// secret_id_file = "/etc/steward/vault-secret-id"
/// ```
///
/// Durations are whole seconds (`30`) or a string with a unit (`"500ms"`, `"30s"`, `"5m"`, `"1h"`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VaultConfig {
    /// Base URL, `http://` or `https://`, e.g. `https://vault.example:8200`.
    pub address: String,
    /// How the server gets its token.
    pub auth: VaultAuth,
    /// Extra PEM CA certificate(s) to trust for `address`.
    #[serde(default)]
    pub ca_cert: Option<PathBuf>,
    /// Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    #[serde(default)]
    pub namespace: Option<String>,
    /// Whole-request timeout; the connect timeout is the smaller of this and 5 s.
    #[serde(default = "default_timeout", deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
    /// How long a KV read is served from memory; zero disables the cache.
    #[serde(
        default = "default_cache_ttl",
        deserialize_with = "deserialize_duration"
    )]
    pub cache_ttl: Duration,
}

impl VaultConfig {
    /// A config with the default timeout, cache TTL, no extra CA and no namespace.
    pub fn new(address: impl Into<String>, auth: VaultAuth) -> Self {
        VaultConfig {
            address: address.into(),
            auth,
            ca_cert: None,
            namespace: None,
            timeout: DEFAULT_TIMEOUT,
            cache_ttl: DEFAULT_CACHE_TTL,
        }
    }
}

/// Where the server's Vault token comes from.
///
/// `Debug` does not print the AppRole `role_id` (Vault calls it non-secret, but it is half of a
/// login and has no business in logs).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "method", deny_unknown_fields)]
pub enum VaultAuth {
    /// A ready-made token, read from a file (trimmed; re-read when the token in use expires or is
    /// refused, so a Vault Agent sink can rotate it) or from an environment variable. Exactly
    /// one of the two must be set.
    #[serde(rename = "token")]
    Token {
        /// File holding the token.
        #[serde(default)]
        token_file: Option<PathBuf>,
        /// Environment variable holding the token.
        #[serde(default)]
        token_env: Option<String>,
    },
    /// AppRole login; the secret id is read from its file at every login.
    #[serde(rename = "approle")]
    AppRole {
        /// Auth mount, `approle` by default.
        #[serde(default = "default_approle_mount")]
        mount: String,
        /// The role id.
        role_id: String,
        /// File holding the secret id.
        secret_id_file: PathBuf,
    },
}

impl fmt::Debug for VaultAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VaultAuth::Token {
                token_file,
                token_env,
            } => f
                .debug_struct("Token")
                .field("token_file", token_file)
                .field("token_env", token_env)
                .finish(),
            VaultAuth::AppRole {
                mount,
                role_id: _,
                secret_id_file,
            } => f
                .debug_struct("AppRole")
                .field("mount", mount)
                .field("role_id", &format_args!("<redacted>"))
                .field("secret_id_file", secret_id_file)
                .finish(),
        }
    }
}

fn default_timeout() -> Duration {
    DEFAULT_TIMEOUT
}

fn default_cache_ttl() -> Duration {
    DEFAULT_CACHE_TTL
}

fn default_approle_mount() -> String {
    DEFAULT_APPROLE_MOUNT.to_owned()
}

fn deserialize_duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Seconds(u64),
        Text(String),
    }
    match Raw::deserialize(deserializer)? {
        Raw::Seconds(seconds) => Ok(Duration::from_secs(seconds)),
        Raw::Text(text) => parse_duration(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid duration {text:?}; write whole seconds or a number with ms, s, m or h"
            ))
        }),
    }
}
