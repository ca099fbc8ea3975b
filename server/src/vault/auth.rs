//! The token: where it comes from ([`Credentials`]), how long it lives ([`Lease`]), and the
//! calls that get, check and renew it (AppRole login, `lookup-self`, `renew-self`).
//!
//! The policy (see the module docs of [`crate::vault`]) lives in [`VaultClient::refresh`].

use std::fmt;
use std::path::PathBuf;
use std::sync::PoisonError;
use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderValue, CONTENT_TYPE};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use steward_protocol::Secret;
use zeroize::Zeroizing;

use crate::vault::config::VaultAuth;
use crate::vault::path::check_mount;
use crate::vault::{wire, VaultClient, VaultError};

const LOOKUP_SELF: &str = "auth/token/lookup-self";
const RENEW_SELF: &str = "auth/token/renew-self";

/// Resolved [`VaultAuth`]. `Debug` redacts the role id.
pub(crate) enum Credentials {
    Token(TokenSource),
    AppRole {
        mount: String,
        role_id: Secret,
        secret_id_file: PathBuf,
    },
}

impl Credentials {
    pub(crate) fn from_config(auth: VaultAuth) -> Result<Self, VaultError> {
        let invalid = |key, reason| VaultError::InvalidConfig { key, reason };
        match auth {
            VaultAuth::Token {
                token_file: Some(file),
                token_env: None,
            } => Ok(Credentials::Token(TokenSource::File(file))),
            VaultAuth::Token {
                token_file: None,
                token_env: Some(name),
            } => {
                if name.is_empty() || name.contains('=') {
                    return Err(invalid("vault.auth.token_env", "is not a variable name"));
                }
                Ok(Credentials::Token(TokenSource::Env(name)))
            }
            VaultAuth::Token {
                token_file: None,
                token_env: None,
            } => Err(invalid(
                "vault.auth",
                "with method = \"token\" needs token_file or token_env",
            )),
            VaultAuth::Token {
                token_file: Some(_),
                token_env: Some(_),
            } => Err(invalid(
                "vault.auth",
                "sets both token_file and token_env; keep one",
            )),
            VaultAuth::AppRole {
                mount,
                role_id,
                secret_id_file,
            } => {
                check_mount(&mount).map_err(|reason| invalid("vault.auth.mount", reason))?;
                let role_id = role_id.trim();
                if role_id.is_empty() {
                    return Err(invalid("vault.auth.role_id", "is empty"));
                }
                Ok(Credentials::AppRole {
                    mount,
                    role_id: Secret::new(role_id.to_owned()),
                    secret_id_file,
                })
            }
        }
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Token(source) => f.debug_tuple("Token").field(source).finish(),
            Credentials::AppRole {
                mount,
                role_id,
                secret_id_file,
            } => f
                .debug_struct("AppRole")
                .field("mount", mount)
                .field("role_id", role_id)
                .field("secret_id_file", secret_id_file)
                .finish(),
        }
    }
}

/// Where a ready-made token is read from.
#[derive(Debug)]
pub(crate) enum TokenSource {
    File(PathBuf),
    Env(String),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::File(path) => write!(f, "token file {}", path.display()),
            TokenSource::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

impl TokenSource {
    /// Reads the token, trimmed. A tiny blocking read: acceptable on the async path.
    pub(crate) fn read(&self) -> Result<Secret, VaultError> {
        let raw = match self {
            TokenSource::File(path) => {
                Zeroizing::new(std::fs::read_to_string(path).map_err(|source| {
                    VaultError::ReadFile {
                        what: "token file",
                        path: path.clone(),
                        source,
                    }
                })?)
            }
            TokenSource::Env(name) => Zeroizing::new(std::env::var(name).map_err(|_| {
                VaultError::Auth(format!(
                    "environment variable {name} is not set (or not utf-8)"
                ))
            })?),
        };
        let token = raw.trim();
        if token.is_empty() {
            return Err(VaultError::Auth(format!("the {self} is empty")));
        }
        Ok(Secret::new(token.to_owned()))
    }
}

/// The token in use.
#[derive(Clone)]
pub(crate) struct Session {
    pub(crate) token: Secret,
    pub(crate) lease: Lease,
}

/// How long the token in use lives, as the client last learned it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lease {
    /// TTL 0: a root or otherwise non-expiring token.
    Never,
    Expiring {
        expires_at: Instant,
        /// `expires_at` on the wall clock, for metrics and readiness.
        expires_at_wall: SystemTime,
        /// When the next renewal (or re-login, or expiry check) is due.
        renew_at: Instant,
        /// The TTL a full renewal grants; a renewal that grants less has hit the max TTL.
        full_ttl: Duration,
        renewable: bool,
        /// The last renewal was cut short by the max TTL: renewing again is pointless.
        capped: bool,
    },
}

impl Lease {
    /// A fresh token (login or lookup) with `ttl` left, of a full TTL `full_ttl`.
    pub(crate) fn starting(
        now: Instant,
        wall: SystemTime,
        ttl: Duration,
        full_ttl: Duration,
        renewable: bool,
    ) -> Lease {
        if ttl.is_zero() {
            return Lease::Never;
        }
        Lease::Expiring {
            expires_at: now + ttl,
            expires_at_wall: wall + ttl,
            renew_at: now + ttl * 2 / 3,
            full_ttl: full_ttl.max(ttl),
            renewable,
            capped: false,
        }
    }

    /// After a renewal that granted `ttl`. Vault caps a renewal at the token's max TTL, so a
    /// grant shorter than the full TTL means this is (nearly) the last one.
    pub(crate) fn renewed(
        now: Instant,
        wall: SystemTime,
        ttl: Duration,
        full_ttl: Duration,
        renewable: bool,
    ) -> Lease {
        Lease::Expiring {
            expires_at: now + ttl,
            expires_at_wall: wall + ttl,
            renew_at: now + ttl * 2 / 3,
            full_ttl,
            renewable,
            capped: ttl < full_ttl,
        }
    }

    /// Whether the token needs attention before the next request.
    pub(crate) fn is_due(&self, now: Instant) -> bool {
        match self {
            Lease::Never => false,
            Lease::Expiring { renew_at, .. } => now >= *renew_at,
        }
    }

    pub(crate) fn expires_at(&self) -> Option<SystemTime> {
        match self {
            Lease::Never => None,
            Lease::Expiring {
                expires_at_wall, ..
            } => Some(*expires_at_wall),
        }
    }

    /// A renewal failed but may work later: try again halfway to expiry.
    fn retry_later(mut self, now: Instant) -> Lease {
        if let Lease::Expiring {
            expires_at,
            renew_at,
            ..
        } = &mut self
        {
            *renew_at = now + expires_at.saturating_duration_since(now) / 2;
        }
        self
    }

    /// No renewal will help: look again only at expiry.
    fn hold_until_expiry(mut self) -> Lease {
        if let Lease::Expiring {
            expires_at,
            renew_at,
            capped,
            ..
        } = &mut self
        {
            *renew_at = *expires_at;
            *capped = true;
        }
        self
    }
}

/// Token counts for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthStats {
    /// Successful AppRole logins since the client was built.
    pub logins: u64,
    /// Successful token renewals since the client was built.
    pub renewals: u64,
}

/// The `X-Vault-Token` header, marked sensitive so the HTTP stack never prints it.
pub(crate) fn token_header(token: &Secret) -> Result<HeaderValue, VaultError> {
    let mut value = HeaderValue::from_str(token.expose()).map_err(|_| {
        VaultError::Auth(
            "the vault token holds characters not allowed in an http header".to_owned(),
        )
    })?;
    value.set_sensitive(true);
    Ok(value)
}

fn seconds(value: u64) -> Duration {
    Duration::from_secs(value)
}

impl VaultClient {
    /// The token to use now: logs in, looks up, renews or re-reads first when due. Holding the
    /// session lock across that work makes concurrent requests wait for one login or renewal.
    pub(crate) async fn current_token(&self) -> Result<Secret, VaultError> {
        let mut session = self.inner.session.lock().await;
        let now = Instant::now();
        let next = match session.as_ref() {
            None => Some(self.establish().await?),
            Some(current) if current.lease.is_due(now) => Some(self.refresh(current, now).await?),
            Some(_) => None,
        };
        if let Some(next) = next {
            *self
                .inner
                .expires_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = next.lease.expires_at();
            *session = Some(next);
        }
        session
            .as_ref()
            .map(|current| current.token.clone())
            .ok_or_else(|| VaultError::Auth("no vault token".to_owned()))
    }

    /// Forgets `token` if it is still the one in use, so the next request authenticates again.
    pub(crate) async fn discard_token(&self, token: &Secret) {
        let mut session = self.inner.session.lock().await;
        if session
            .as_ref()
            .is_some_and(|current| current.token == *token)
        {
            *session = None;
            *self
                .inner
                .expires_at
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = None;
        }
    }

    /// First token: AppRole login, or the configured token checked with `lookup-self`.
    async fn establish(&self) -> Result<Session, VaultError> {
        match &self.inner.credentials {
            Credentials::AppRole { .. } => self.login().await,
            Credentials::Token(source) => self.adopt(source.read()?, source).await,
        }
    }

    /// The lease is due: renew while renewal can extend it; otherwise log in again (AppRole)
    /// or keep the static token until it expires, then re-read its source.
    async fn refresh(&self, current: &Session, now: Instant) -> Result<Session, VaultError> {
        if let Lease::Expiring {
            renewable: true,
            capped: false,
            full_ttl,
            ..
        } = current.lease
        {
            match self.renew(&current.token, full_ttl).await {
                Ok(lease) => {
                    return Ok(Session {
                        token: current.token.clone(),
                        lease,
                    });
                }
                Err(error) => tracing::warn!(%error, "vault token renewal failed"),
            }
        }
        match &self.inner.credentials {
            Credentials::AppRole { .. } => self.login().await,
            Credentials::Token(source) => self.keep_or_reload(current, now, source).await,
        }
    }

    /// A static token that was not renewed: use it until it expires, then read its source
    /// again (a Vault Agent sink may have rotated it).
    async fn keep_or_reload(
        &self,
        current: &Session,
        now: Instant,
        source: &TokenSource,
    ) -> Result<Session, VaultError> {
        let Lease::Expiring {
            expires_at,
            renewable,
            capped,
            ..
        } = current.lease
        else {
            return Ok(current.clone());
        };
        if now < expires_at {
            let lease = if renewable && !capped {
                current.lease.retry_later(now)
            } else {
                tracing::warn!(
                    source = %source,
                    expires_in_secs = expires_at.saturating_duration_since(now).as_secs(),
                    "vault token cannot be renewed any more; replace it before it expires"
                );
                current.lease.hold_until_expiry()
            };
            return Ok(Session {
                token: current.token.clone(),
                lease,
            });
        }
        let fresh = source.read()?;
        if fresh != current.token {
            tracing::info!(source = %source, "vault token changed; using the new one");
            return self.adopt(fresh, source).await;
        }
        Err(VaultError::Auth(format!(
            "the vault token from the {source} expired and cannot be renewed (max ttl reached \
             or not renewable); write a new token there, or use a periodic token or approle"
        )))
    }

    /// Checks a configured token with `lookup-self` and learns its lease.
    async fn adopt(&self, token: Secret, source: &TokenSource) -> Result<Session, VaultError> {
        let request = self
            .request(Method::GET, LOOKUP_SELF)?
            .header("X-Vault-Token", token_header(&token)?);
        let reply = self.send(request, LOOKUP_SELF).await?;
        match reply.status {
            StatusCode::OK => {
                let lookup: wire::Lookup = reply.parse(LOOKUP_SELF)?;
                let data = lookup.data;
                let lease = Lease::starting(
                    Instant::now(),
                    SystemTime::now(),
                    seconds(data.ttl),
                    seconds(data.creation_ttl),
                    data.renewable,
                );
                tracing::info!(
                    source = %source,
                    ttl_secs = data.ttl,
                    renewable = data.renewable,
                    "using the configured vault token"
                );
                if data.ttl > 0 && !data.renewable {
                    tracing::warn!(
                        source = %source,
                        expires_in_secs = data.ttl,
                        "vault token is not renewable; replace it before it expires or use approle"
                    );
                }
                Ok(Session { token, lease })
            }
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Err(VaultError::Auth(format!(
                "vault refused the token from the {source} (expired, revoked or mistyped); \
                 write a valid token there"
            ))),
            status => Err(self.unexpected(status, LOOKUP_SELF).await),
        }
    }

    /// AppRole login with the secret id read from its file now.
    async fn login(&self) -> Result<Session, VaultError> {
        let Credentials::AppRole {
            mount,
            role_id,
            secret_id_file,
        } = &self.inner.credentials
        else {
            return Err(VaultError::Auth(
                "approle login without approle credentials".to_owned(),
            ));
        };
        let raw = Zeroizing::new(std::fs::read_to_string(secret_id_file).map_err(|source| {
            VaultError::ReadFile {
                what: "approle secret id file",
                path: secret_id_file.clone(),
                source,
            }
        })?);
        let secret_id = raw.trim();
        if secret_id.is_empty() {
            return Err(VaultError::Auth(format!(
                "the approle secret id file {} is empty",
                secret_id_file.display()
            )));
        }
        #[derive(Serialize)]
        struct LoginBody<'a> {
            role_id: &'a str,
            secret_id: &'a str,
        }
        let body = serde_json::to_vec(&LoginBody {
            role_id: role_id.expose(),
            secret_id,
        })
        .map_err(|_| VaultError::Auth("cannot encode the approle login".to_owned()))?;
        let api_path = format!("auth/{mount}/login");
        let request = self
            .request(Method::POST, &api_path)?
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        let reply = self.send(request, &api_path).await?;
        match reply.status {
            StatusCode::OK => {
                let login: wire::Login = reply.parse(&api_path)?;
                let auth = login.auth;
                let ttl = seconds(auth.lease_duration);
                let lease =
                    Lease::starting(Instant::now(), SystemTime::now(), ttl, ttl, auth.renewable);
                let token = Secret::new(auth.client_token);
                self.inner
                    .logins
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(
                    mount = %mount,
                    ttl_secs = auth.lease_duration,
                    renewable = auth.renewable,
                    "logged in to vault with approle"
                );
                Ok(Session { token, lease })
            }
            StatusCode::BAD_REQUEST | StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                Err(VaultError::Auth(format!(
                    "approle login at auth/{mount} was refused (http {}); check vault.auth.role_id \
                     and the secret id in {}",
                    reply.status.as_u16(),
                    secret_id_file.display()
                )))
            }
            StatusCode::NOT_FOUND => Err(VaultError::Auth(format!(
                "no approle auth method is mounted at auth/{mount}; check vault.auth.mount"
            ))),
            status => Err(self.unexpected(status, &api_path).await),
        }
    }

    /// `renew-self`; the grant becomes the new lease.
    async fn renew(&self, token: &Secret, full_ttl: Duration) -> Result<Lease, VaultError> {
        let request = self
            .request(Method::POST, RENEW_SELF)?
            .header("X-Vault-Token", token_header(token)?)
            .header(CONTENT_TYPE, "application/json")
            .body("{}");
        let reply = self.send(request, RENEW_SELF).await?;
        match reply.status {
            StatusCode::OK => {
                let renew: wire::Renew = reply.parse(RENEW_SELF)?;
                let lease = Lease::renewed(
                    Instant::now(),
                    SystemTime::now(),
                    seconds(renew.auth.lease_duration),
                    full_ttl,
                    renew.auth.renewable,
                );
                self.inner
                    .renewals
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let capped = matches!(lease, Lease::Expiring { capped: true, .. });
                tracing::debug!(
                    ttl_secs = renew.auth.lease_duration,
                    capped,
                    "vault token renewed"
                );
                Ok(lease)
            }
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED | StatusCode::BAD_REQUEST => {
                Err(VaultError::Auth(format!(
                    "vault refused to renew the token (http {})",
                    reply.status.as_u16()
                )))
            }
            status => Err(self.unexpected(status, RENEW_SELF).await),
        }
    }

    /// Whether Vault still accepts `token` (after a 403: denied by policy, or a dead token?).
    pub(crate) async fn token_is_valid(&self, token: &Secret) -> Result<bool, VaultError> {
        let request = self
            .request(Method::GET, LOOKUP_SELF)?
            .header("X-Vault-Token", token_header(token)?);
        let reply = self.send(request, LOOKUP_SELF).await?;
        match reply.status {
            StatusCode::OK => Ok(true),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => Ok(false),
            status => Err(self.unexpected(status, LOOKUP_SELF).await),
        }
    }
}
