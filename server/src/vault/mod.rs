//! The Vault / OpenBao client: KV v2 reads with token or AppRole auth, token renewal, a brief
//! per-path cache, and health. Works with HashiCorp Vault and OpenBao (same HTTP API).
//!
//! It owns the HTTP conversation with Vault and nothing else: it never writes to Vault, and it
//! must not let a token, a secret id or a secret value reach an error, a log line or a `Debug`
//! rendering (THREATS K1). Errors carry paths and statuses; logs are `tracing` fields (path,
//! status), never bodies. A failure is always an error, never an empty map (K6, R3): the
//! caller fails the compile of the hosts that need the path and keeps their last good catalog.
//!
//! Paths are written as in a site, `secret/openclaw`: the first segment is the KV v2 mount,
//! the rest the secret's path, read with `GET /v1/secret/data/openclaw`. Nested mounts
//! (`kv/team/…` mounted at `kv/team`) are not supported.
//!
//! # Token lifetime
//!
//! Renewal is lazy: before each request the client looks at its token's lease under one async
//! mutex, so concurrent reads wait for a single login or renewal.
//!
//! - When 2/3 of the lease granted by the last login, lookup or renewal has passed, it calls
//!   `auth/token/renew-self`. A renewal granting less than the token's full TTL means the max
//!   TTL is near: the token is marked capped and not renewed again.
//! - AppRole: when the lease is due and renewal fails, is not possible or is capped, the
//!   client logs in again (`auth/<mount>/login`), reading the secret id from its file then.
//! - Token: a token that can no longer be renewed is used until it expires (with a warning),
//!   then its file or variable is read again; if that still holds the same token, every read
//!   fails with [`VaultError::Auth`] saying the token expired and cannot be renewed.
//! - A 403 on a read is checked with `auth/token/lookup-self`: if the token is valid the path
//!   is [`VaultError::Forbidden`]; otherwise the token died early (revoked) and the client
//!   authenticates again, once.
//!
//! An idle server renews nothing. To fail fast at startup, or to keep a static token alive
//! without traffic, call [`VaultClient::authenticate`] (e.g. from the readiness loop, more often
//! than a third of the token TTL). [`VaultClient::token_expires_at`] feeds metrics.

mod auth;
mod config;
mod error;
mod path;
mod wire;

#[cfg(test)]
mod tests;

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::HeaderValue;
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use steward_catalogs::model::{VaultData, VaultSecret};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use zeroize::Zeroizing;

pub use auth::AuthStats;
pub use config::{
    VaultAuth, VaultConfig, DEFAULT_APPROLE_MOUNT, DEFAULT_CACHE_TTL, DEFAULT_TIMEOUT,
};
pub use error::VaultError;

use auth::{token_header, Credentials, Session};
use path::{check_mount, KvPath};

/// `User-Agent` of every request.
const USER_AGENT: &str = concat!("steward-server/", env!("CARGO_PKG_VERSION"));
/// Upper bound of the connect timeout (the request timeout may be longer).
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest response body read; Vault's answers are a few KiB.
const MAX_BODY: usize = 4 << 20;
/// Reads in flight at once in [`VaultClient::read_many`].
const READ_CONCURRENCY: usize = 8;

/// A Vault client. Cheap to clone (one shared connection pool, token and cache).
///
/// `Debug` shows the address, auth method and counts, never the token, role id, secret id or
/// cached data.
#[derive(Clone)]
pub struct VaultClient {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    /// The address with a trailing `/`; API paths are joined as `v1/<path>`.
    base: Url,
    /// The address as configured, for errors and logs.
    address: String,
    namespace: Option<(String, HeaderValue)>,
    credentials: Credentials,
    session: tokio::sync::Mutex<Option<Session>>,
    /// The session's expiry, readable without the async lock.
    expires_at: Mutex<Option<SystemTime>>,
    logins: AtomicU64,
    renewals: AtomicU64,
    cache_ttl: Duration,
    cache: Mutex<HashMap<String, Cached>>,
}

struct Cached {
    fetched_at: Instant,
    secret: VaultSecret,
}

/// A response: status and body (zeroed when dropped: it may hold a token or secret values).
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    body: Zeroizing<Vec<u8>>,
}

impl Reply {
    /// Parses the body; a body that does not parse is a [`VaultError::Malformed`] saying
    /// why in general terms (the `serde_json` error is dropped: it may quote a value).
    pub(crate) fn parse<T: DeserializeOwned>(&self, path: &str) -> Result<T, VaultError> {
        serde_json::from_slice(&self.body).map_err(|error| {
            let reason = malformed_reason(&self.body, &error);
            tracing::debug!(
                path,
                status = self.status.as_u16(),
                reason,
                "vault response did not parse"
            );
            VaultError::Malformed {
                path: path.to_owned(),
                status: self.status.as_u16(),
                reason,
            }
        })
    }
}

/// Why a body did not parse, naming no part of it: not UTF-8 (JSON text is UTF-8, so a
/// proxy or a corrupted store is in the way), not JSON at all, or JSON of another shape.
fn malformed_reason(body: &[u8], error: &serde_json::Error) -> &'static str {
    if std::str::from_utf8(body).is_err() {
        "the body is not valid UTF-8"
    } else if error.is_syntax() || error.is_eof() {
        "the body is not JSON"
    } else {
        "the body is not the JSON vault sends"
    }
}

impl VaultClient {
    /// Validates `config` and builds the HTTP client (timeouts, `User-Agent`, extra CA, no
    /// redirects: a redirect would carry `X-Vault-Token` to another host). Proxy variables
    /// (`HTTPS_PROXY`, `NO_PROXY`) apply, as for Vault's own CLI. Sends nothing.
    pub fn new(config: VaultConfig) -> Result<VaultClient, VaultError> {
        let base = parse_address(&config.address)?;
        if config.timeout.is_zero() {
            return Err(VaultError::InvalidConfig {
                key: "vault.timeout",
                reason: "must be more than zero",
            });
        }
        let credentials = Credentials::from_config(config.auth)?;
        let namespace = match config.namespace {
            None => None,
            Some(namespace) => {
                let invalid = |reason| VaultError::InvalidConfig {
                    key: "vault.namespace",
                    reason,
                };
                check_mount(&namespace).map_err(invalid)?;
                let header = HeaderValue::from_str(&namespace)
                    .map_err(|_| invalid("is not a valid header value"))?;
                Some((namespace, header))
            }
        };
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(MAX_CONNECT_TIMEOUT))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(path) = &config.ca_cert {
            let pem = std::fs::read(path).map_err(|source| VaultError::ReadFile {
                what: "ca certificate",
                path: path.clone(),
                source,
            })?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| {
                VaultError::CaCert {
                    path: path.clone(),
                    source,
                }
            })?;
            if certificates.is_empty() {
                return Err(VaultError::InvalidConfig {
                    key: "vault.ca_cert",
                    reason: "holds no PEM certificate",
                });
            }
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder.build().map_err(VaultError::Client)?;
        if base.scheme() == "http" && !is_loopback(&base) {
            tracing::warn!(
                address = %config.address,
                "vault address is plain http to another host; the token travels in clear text"
            );
        }
        Ok(VaultClient {
            inner: Arc::new(Inner {
                http,
                base,
                address: config.address,
                namespace,
                credentials,
                session: tokio::sync::Mutex::new(None),
                expires_at: Mutex::new(None),
                logins: AtomicU64::new(0),
                renewals: AtomicU64::new(0),
                cache_ttl: config.cache_ttl,
                cache: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The configured address.
    pub fn address(&self) -> &str {
        &self.inner.address
    }

    /// Makes sure the client holds a usable token: logs in or looks the token up the first
    /// time, renews or logs in again when due. Reads do this themselves; call it at startup to
    /// fail fast, or periodically to keep an idle token alive.
    pub async fn authenticate(&self) -> Result<(), VaultError> {
        self.current_token().await.map(drop)
    }

    /// When the token in use expires: `None` before the first login or lookup, and for a
    /// token that never expires (root).
    pub fn token_expires_at(&self) -> Option<SystemTime> {
        *self
            .inner
            .expires_at
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// How long a read is served from the cache (zero: not cached).
    pub fn cache_ttl(&self) -> Duration {
        self.inner.cache_ttl
    }

    /// Logins and renewals so far.
    pub fn auth_stats(&self) -> AuthStats {
        AuthStats {
            logins: self.inner.logins.load(Ordering::Relaxed),
            renewals: self.inner.renewals.load(Ordering::Relaxed),
        }
    }

    /// Reads one KV v2 secret, `path` as written in a site (`secret/openclaw`): its data map
    /// and version. Served from the cache when read less than `cache_ttl` ago. A missing path,
    /// or one whose latest version is deleted, is [`VaultError::NotFound`]; a key missing from
    /// the data is the compiler's business.
    pub async fn read_kv(&self, path: &str) -> Result<VaultSecret, VaultError> {
        let kv_path = KvPath::parse(path)?;
        if let Some(secret) = self.cached(path) {
            tracing::trace!(path, "vault read served from cache");
            return Ok(secret);
        }
        let secret = self.fetch_kv(path, kv_path).await?;
        self.store(path, &secret);
        Ok(secret)
    }

    /// Reads every path (at most 8 at once, each through the cache). Any failure fails the
    /// whole read with that path's error; nothing partial is returned. Every path is validated
    /// before the first request.
    pub async fn read_many(&self, paths: &BTreeSet<String>) -> Result<VaultData, VaultError> {
        for path in paths {
            KvPath::parse(path)?;
        }
        let limit = Arc::new(Semaphore::new(READ_CONCURRENCY));
        let mut reads = JoinSet::new();
        for path in paths {
            let client = self.clone();
            let path = path.clone();
            let limit = Arc::clone(&limit);
            reads.spawn(async move {
                // The semaphore is never closed, so acquiring cannot fail.
                let _permit = limit.acquire_owned().await;
                let result = client.read_kv(&path).await;
                (path, result)
            });
        }
        let mut data = VaultData::default();
        while let Some(joined) = reads.join_next().await {
            let (path, result) = match joined {
                Ok(read) => read,
                Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
                Err(_) => continue,
            };
            // Returning drops the JoinSet, which aborts the reads still running.
            data.paths.insert(path, result?);
        }
        Ok(data)
    }

    /// `GET /v1/sys/health`: `Ok` for an initialized, unsealed, active node; otherwise
    /// [`VaultError::Sealed`], [`VaultError::Uninitialized`], [`VaultError::Standby`],
    /// [`VaultError::Unreachable`] or [`VaultError::BadResponse`]. Needs no token.
    pub async fn health(&self) -> Result<(), VaultError> {
        const HEALTH: &str = "sys/health";
        // Not namespaced: sys/health lives in the root namespace.
        let request = self.inner.http.get(self.url(HEALTH)?);
        let reply = self.send(request, HEALTH).await?;
        let body: Option<wire::Health> = serde_json::from_slice(&reply.body).ok();
        let address = || self.inner.address.clone();
        let status = reply.status.as_u16();
        tracing::debug!(status, "vault health");
        match status {
            200 => Ok(()),
            // 429: standby; 473: performance standby.
            429 | 473 => Err(VaultError::Standby { address: address() }),
            501 if body.as_ref().is_some_and(|h| h.initialized == Some(false)) => {
                Err(VaultError::Uninitialized { address: address() })
            }
            503 if body.as_ref().is_some_and(|h| h.sealed == Some(true)) => {
                Err(VaultError::Sealed { address: address() })
            }
            _ => Err(VaultError::BadResponse {
                path: HEALTH.to_owned(),
                status,
            }),
        }
    }

    async fn fetch_kv(&self, path: &str, kv_path: KvPath<'_>) -> Result<VaultSecret, VaultError> {
        let api_path = kv_path.data_api_path();
        let reply = self.get_with_token(&api_path, path).await?;
        tracing::debug!(path, status = reply.status.as_u16(), "vault read");
        match reply.status {
            StatusCode::OK => {
                let read: wire::KvRead = reply.parse(path)?;
                let Some(read) = read.data else {
                    return Err(VaultError::BadResponse {
                        path: path.to_owned(),
                        status: 200,
                    });
                };
                let Some(metadata) = read.metadata else {
                    // No metadata: not a KV v2 mount.
                    return Err(VaultError::BadResponse {
                        path: path.to_owned(),
                        status: 200,
                    });
                };
                match read.data {
                    Some(data) => Ok(VaultSecret {
                        data,
                        version: metadata.version,
                    }),
                    // The latest version is deleted or destroyed.
                    None => Err(VaultError::NotFound {
                        path: path.to_owned(),
                    }),
                }
            }
            StatusCode::NOT_FOUND => Err(VaultError::NotFound {
                path: path.to_owned(),
            }),
            status => Err(self.unexpected(status, path).await),
        }
    }

    /// A GET with the current token; on 403 tells a policy denial from a dead token (which it
    /// replaces once).
    async fn get_with_token(&self, api_path: &str, path: &str) -> Result<Reply, VaultError> {
        for _attempt in 0..2 {
            let token = self.current_token().await?;
            let request = self
                .request(Method::GET, api_path)?
                .header("X-Vault-Token", token_header(&token)?);
            let reply = self.send(request, path).await?;
            if reply.status != StatusCode::FORBIDDEN {
                return Ok(reply);
            }
            if self.token_is_valid(&token).await? {
                return Err(VaultError::Forbidden {
                    path: path.to_owned(),
                });
            }
            tracing::warn!(path, "vault rejected the token; authenticating again");
            self.discard_token(&token).await;
        }
        Err(VaultError::Auth(
            "vault rejected the token again right after authenticating".to_owned(),
        ))
    }

    /// The error for a status the caller did not expect. A 503 is usually a sealed Vault:
    /// ask `sys/health` to say so.
    pub(crate) async fn unexpected(&self, status: StatusCode, path: &str) -> VaultError {
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::NOT_IMPLEMENTED {
            if let Err(error @ (VaultError::Sealed { .. } | VaultError::Uninitialized { .. })) =
                self.health().await
            {
                return error;
            }
        }
        tracing::debug!(path, status = status.as_u16(), "unexpected vault response");
        VaultError::BadResponse {
            path: path.to_owned(),
            status: status.as_u16(),
        }
    }

    fn url(&self, api_path: &str) -> Result<Url, VaultError> {
        self.inner
            .base
            .join(&format!("v1/{api_path}"))
            .map_err(|_| VaultError::InvalidPath {
                path: api_path.to_owned(),
                reason: "does not make a valid url",
            })
    }

    /// A request to `/v1/<api_path>` in the configured namespace.
    pub(crate) fn request(
        &self,
        method: Method,
        api_path: &str,
    ) -> Result<RequestBuilder, VaultError> {
        let mut request = self.inner.http.request(method, self.url(api_path)?);
        if let Some((_, header)) = &self.inner.namespace {
            request = request.header("X-Vault-Namespace", header.clone());
        }
        Ok(request)
    }

    /// Sends and reads the body (at most 4 MiB). `path` names the request in errors.
    pub(crate) async fn send(
        &self,
        request: RequestBuilder,
        path: &str,
    ) -> Result<Reply, VaultError> {
        // Not logged here: the caller logs the error where it handles it.
        let unreachable = |source: reqwest::Error| VaultError::Unreachable {
            address: self.inner.address.clone(),
            source: source.without_url(),
        };
        let mut response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let too_large = || VaultError::BadResponse {
            path: path.to_owned(),
            status: status.as_u16(),
        };
        let expected =
            usize::try_from(response.content_length().unwrap_or(0)).unwrap_or(usize::MAX);
        if expected > MAX_BODY {
            return Err(too_large());
        }
        // Sized up front so the buffer is not reallocated, leaving unzeroed copies behind.
        let mut body = Zeroizing::new(Vec::with_capacity(expected));
        while let Some(chunk) = response.chunk().await.map_err(unreachable)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply { status, body })
    }

    fn cached(&self, path: &str) -> Option<VaultSecret> {
        if self.inner.cache_ttl.is_zero() {
            return None;
        }
        let cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache
            .get(path)
            .filter(|entry| entry.fetched_at.elapsed() < self.inner.cache_ttl)
            .map(|entry| entry.secret.clone())
    }

    fn store(&self, path: &str, secret: &VaultSecret) {
        if self.inner.cache_ttl.is_zero() {
            return;
        }
        let mut cache = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        cache.retain(|_, entry| entry.fetched_at.elapsed() < self.inner.cache_ttl);
        cache.insert(
            path.to_owned(),
            Cached {
                fetched_at: Instant::now(),
                secret: secret.clone(),
            },
        );
    }
}

impl fmt::Debug for VaultClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cached_paths = self
            .inner
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        f.debug_struct("VaultClient")
            .field("address", &self.inner.address)
            .field(
                "namespace",
                &self.inner.namespace.as_ref().map(|(name, _)| name),
            )
            .field("auth", &self.inner.credentials)
            .field("token_expires_at", &self.token_expires_at())
            .field("auth_stats", &self.auth_stats())
            .field("cache_ttl", &self.inner.cache_ttl)
            .field("cached_paths", &cached_paths)
            .finish_non_exhaustive()
    }
}

/// `vault.address` → base URL ending in `/`.
fn parse_address(address: &str) -> Result<Url, VaultError> {
    let invalid = |reason| VaultError::InvalidConfig {
        key: "vault.address",
        reason,
    };
    let mut url = Url::parse(address)
        .map_err(|_| invalid("is not a url; write it like https://vault.example:8200"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must start with https:// or http://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not hold a user name or password"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host_str() {
        Some("localhost") => true,
        Some(host) => host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback()),
        None => false,
    }
}
