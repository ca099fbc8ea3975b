//! Enrollment policy (DESIGN §5, THREATS E2–E4): who may ask, who is approved, what happens to
//! a hostname that is already enrolled.
//!
//! - A bootstrap token only lets a host *ask*. The answer is `approved` only when the token is
//!   valid **and** auto-approves **and** the hostname falls in one of the site's host classes
//!   (the token's class, if it names one). Otherwise the node waits (`pending`) for an admin.
//! - The token is checked in this order: found with its secret (the hash lookup does the
//!   comparison), not revoked, not expired, a use left, hostname matching its glob; only then is
//!   a use counted, atomically. A refused request never spends a use.
//! - The same key again is idempotent: the answer is the node's current status.
//! - A new key for a hostname that has one: with a token that may re-enroll, the old key is
//!   revoked (with a reason, kept in the history) and the new one takes its place; otherwise the
//!   new key waits in `pending_keys` for an admin, and the old key keeps working (E3).
//! - The same key reported with another machine id is a cloned identity: the node is
//!   quarantined and every request refused until an admin acts (E4).
//! - Requests are rate-limited per source address and per token.
//! - The request is signed with the key it enrolls (proof of possession, the protocol's request
//!   scheme with a fresh nonce), so nobody can enroll, or get quarantined, a key they do not
//!   hold: public keys are not secrets.

use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use steward_catalogs::compile::glob_match;
use steward_protocol::join::BootstrapToken;
use steward_protocol::request::{verify_request, SignedRequestHeaders};
use steward_protocol::{
    is_valid_hostname, EnrollRequest, EnrollResponse, EnrollmentStatus, KeyId, NodeId, Timestamp,
};

use crate::config::EnrollSettings;
use crate::db::audit::NewAuditEntry;
use crate::db::keys::NewNodeKey;
use crate::db::nodes::NewNode;
use crate::db::tokens::{Consumption, SecretHash, Token};
use crate::db::{self, Db, DbError};
use crate::keys::ServerKeys;
use crate::service::catalog::CatalogService;
use crate::service::nonces::{NonceCheck, NonceStore};
use crate::service::rate_limit::RateLimiter;

/// Longest machine id accepted.
const MAX_MACHINE_ID_LEN: usize = 64;
/// Longest agent version accepted.
const MAX_AGENT_VERSION_LEN: usize = 64;

/// Why an enrollment request is refused.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// The request is malformed; the message says what to fix.
    #[error("{0}")]
    BadRequest(String),
    /// No token, or the token is not valid for this request.
    #[error("bootstrap token refused")]
    TokenRefused,
    /// The request is not signed by the key it enrolls (or is stale or replayed). The caller
    /// learns nothing more.
    #[error("enrollment request not signed by its key")]
    Unsigned,
    /// Too many requests from this address or with this token.
    #[error("too many enrollment requests; retry later")]
    RateLimited {
        /// Seconds to wait.
        retry_after: u64,
    },
    /// The key cannot be used for this hostname.
    #[error("{0}")]
    Forbidden(&'static str),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// Per-address and per-token limiters.
#[derive(Debug)]
pub struct EnrollLimits {
    per_address: RateLimiter,
    per_token: RateLimiter,
}

impl EnrollLimits {
    /// Limiters for these settings.
    pub fn new(settings: &EnrollSettings) -> EnrollLimits {
        EnrollLimits {
            per_address: RateLimiter::new(settings.per_address_per_minute),
            per_token: RateLimiter::new(settings.per_token_per_minute),
        }
    }
}

/// What enrollment needs from the server.
#[derive(Debug, Clone, Copy)]
pub struct EnrollContext<'a> {
    /// The store.
    pub db: &'a Db,
    /// The keys (for the root key in the answer).
    pub keys: &'a ServerKeys,
    /// The site's host classes.
    pub catalogs: &'a CatalogService,
    /// Policy knobs.
    pub settings: &'a EnrollSettings,
    /// Rate limiters.
    pub limits: &'a EnrollLimits,
    /// Nonces of signed requests (replay protection).
    pub nonces: &'a NonceStore,
    /// Largest accepted clock difference of a signed request, seconds.
    pub max_clock_skew_secs: u32,
}

/// The proof that the caller holds the key it enrolls: the request's signature headers and the
/// exact body they sign (`POST /v1/enroll`).
#[derive(Debug, Clone, Copy)]
pub struct Possession<'a> {
    /// Signature headers, when the request had them.
    pub headers: Option<&'a SignedRequestHeaders>,
    /// The raw body.
    pub body: &'a [u8],
}

/// Refuses a request not signed by `signing_key` (the key it enrolls), stale, or replayed.
fn check_possession(
    context: &EnrollContext<'_>,
    signing_key: &[u8; 32],
    possession: Possession<'_>,
    now: Timestamp,
) -> Result<(), EnrollError> {
    let Some(headers) = possession.headers else {
        tracing::info!("enrollment request without a signature refused");
        return Err(EnrollError::Unsigned);
    };
    let skew = context.max_clock_skew_secs;
    if let Err(refusal) = verify_request(
        signing_key,
        "POST",
        ENROLL_PATH,
        headers,
        possession.body,
        now,
        skew,
    ) {
        tracing::info!(reason = %refusal, "enrollment request with a bad signature refused");
        return Err(EnrollError::Unsigned);
    }
    if context.nonces.check_request(headers, now) == NonceCheck::Replay {
        tracing::warn!("replayed enrollment request refused");
        return Err(EnrollError::Unsigned);
    }
    Ok(())
}

/// The path enrollment requests are signed for.
pub const ENROLL_PATH: &str = "/v1/enroll";

/// Handles one enrollment request from `source` (an address, or `unix` for the socket).
pub async fn enroll(
    context: EnrollContext<'_>,
    request: &EnrollRequest,
    possession: Possession<'_>,
    source: &str,
    now: Timestamp,
) -> Result<EnrollResponse, EnrollError> {
    let rate_limited = |wait: std::time::Duration| EnrollError::RateLimited {
        retry_after: wait.as_secs().max(1),
    };
    context
        .limits
        .per_address
        .check(source, Instant::now())
        .map_err(rate_limited)?;
    let hostname = validate(request)?;
    let signing_key = decode_key(&request.signing_key, "signing_key")?;
    decode_key(&request.encryption_key, "encryption_key")?;
    let key_id = KeyId::of_public_key_bytes(&signing_key);
    check_possession(&context, &signing_key, possession, now)?;
    let token = match &request.token {
        Some(text) => Some(
            BootstrapToken::parse(text)
                .map_err(|error| EnrollError::BadRequest(format!("invalid token: {error}")))?,
        ),
        None => None,
    };
    if let Some(token) = &token {
        context
            .limits
            .per_token
            .check(token.id(), Instant::now())
            .map_err(rate_limited)?;
    }
    let machine_id = request.facts.machine_id.clone();
    let new_key = NewNodeKey {
        key_id: key_id.clone(),
        signing_key: request.signing_key.clone(),
        encryption_key: request.encryption_key.clone(),
        machine_id: machine_id.clone(),
    };
    let class = context.catalogs.class_of(&hostname).await;
    let actor = format!("node:{hostname}");
    let answer = |status: EnrollmentStatus, message: Option<&str>| EnrollResponse {
        node: hostname.clone(),
        status,
        root_key: context.keys.root_public_base64(),
        root_key_id: context.keys.root_key_id(),
        message: message.map(str::to_owned),
    };

    let mut tx = context.db.begin_write().await?;

    // The same key again: idempotent, unless it shows up with another machine id (a clone).
    if let Some(active) = db::keys::find_active_by_key_id(&mut tx, &key_id).await? {
        let cloned = matches!((&active.machine_id, &machine_id), (Some(a), Some(b)) if a != b);
        if cloned {
            quarantine(&mut tx, &active.node, &actor, source, now).await?;
            tx.commit().await.map_err(commit_error)?;
            return Ok(answer(
                EnrollmentStatus::Quarantined,
                Some("this key was seen with two machine ids; an admin must revoke the node and let the host enroll with a new key"),
            ));
        }
        if active.node != hostname {
            return Err(EnrollError::Forbidden(
                "this key is enrolled for another hostname",
            ));
        }
        let node = db::nodes::get_by_name(&mut tx, &hostname)
            .await?
            .ok_or_else(|| db::nodes::not_found(&hostname))?;
        tx.commit().await.map_err(commit_error)?;
        return Ok(answer(node.status, status_message(node.status)));
    }
    if db::keys::ever_used(&mut tx, &key_id).await? {
        return Err(EnrollError::Forbidden(
            "this key was revoked; the host must generate a new key",
        ));
    }
    if let Some(pending) = db::pending_keys::find_by_key_id(&mut tx, &key_id).await? {
        if pending.node != hostname {
            return Err(EnrollError::Forbidden(
                "this key waits for another hostname",
            ));
        }
        return Ok(answer(
            EnrollmentStatus::Pending,
            Some("this hostname is enrolled with another key; an admin must approve the new key"),
        ));
    }

    // A new key: it needs a token (unless configured otherwise), checked without spending it.
    if token.is_none() && !context.settings.allow_without_token {
        return Err(EnrollError::TokenRefused);
    }
    let checked = match &token {
        Some(token) => Some(check_token(&mut tx, token, &hostname, now).await?),
        None => None,
    };
    let token = checked.as_ref().map(|(token, _)| token);
    let class_allowed = match (&class, token.and_then(|t| t.class.as_deref())) {
        (Some(site_class), Some(wanted)) => site_class.name == wanted,
        (Some(_), None) => true,
        (None, _) => false,
    };
    let auto_approve = token.is_some_and(|t| t.auto_approve) && class_allowed;
    let node_class = token
        .and_then(|t| t.class.clone())
        .or_else(|| class.as_ref().map(|c| c.name.clone()));
    let token_id = token.map(|t| t.token_id.clone());

    let existing = db::nodes::get_by_name(&mut tx, &hostname).await?;
    let (status, action, message) = match existing {
        None => {
            db::nodes::insert_pending(
                &mut tx,
                &NewNode {
                    name: hostname.clone(),
                    class: node_class,
                    machine_id: machine_id.clone(),
                },
                now,
            )
            .await?;
            db::keys::add(&mut tx, &hostname, &new_key, now).await?;
            spend(&mut tx, checked.as_ref(), now).await?;
            let status = if auto_approve {
                db::nodes::set_status(&mut tx, &hostname, EnrollmentStatus::Approved, now).await?;
                EnrollmentStatus::Approved
            } else {
                EnrollmentStatus::Pending
            };
            (status, "node.enroll", status_message(status))
        }
        Some(node)
            if token.is_some_and(|t| t.may_reenroll)
                && matches!(
                    node.status,
                    EnrollmentStatus::Approved | EnrollmentStatus::Pending
                ) =>
        {
            spend(&mut tx, checked.as_ref(), now).await?;
            let reason = format!(
                "replaced by a re-enrollment with token {}",
                token_id.as_deref().unwrap_or("?")
            );
            db::keys::revoke_all_for_node(&mut tx, &hostname, &reason, now).await?;
            db::pending_keys::take(&mut tx, &hostname).await?;
            db::keys::add(&mut tx, &hostname, &new_key, now).await?;
            let status = if auto_approve {
                EnrollmentStatus::Approved
            } else {
                EnrollmentStatus::Pending
            };
            db::nodes::set_status(&mut tx, &hostname, status, now).await?;
            (status, "node.reenroll", status_message(status))
        }
        Some(_) => {
            db::pending_keys::put(&mut tx, &hostname, &new_key, token_id.as_deref(), now).await?;
            (
                EnrollmentStatus::Pending,
                "node.reenroll_requested",
                Some(
                    "this hostname is enrolled with another key; an admin must approve the new key",
                ),
            )
        }
    };
    db::audit::record(
        &mut tx,
        &NewAuditEntry {
            at: now,
            actor,
            action: action.to_owned(),
            target: Some(hostname.to_string()),
            detail: Some(serde_json::json!({
                "key_id": key_id.as_str(),
                "token_id": token_id,
                "status": crate::metrics::status_name(status),
                "source": source,
            })),
        },
    )
    .await?;
    tx.commit().await.map_err(commit_error)?;
    tracing::info!(
        node = %hostname,
        status = crate::metrics::status_name(status),
        action,
        "enrollment request handled"
    );
    Ok(answer(status, message))
}

/// Quarantines `node` (a key seen with two machine ids) and audits it.
pub async fn quarantine(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    node: &NodeId,
    actor: &str,
    source: &str,
    now: Timestamp,
) -> Result<(), DbError> {
    db::nodes::set_status(&mut *tx, node, EnrollmentStatus::Quarantined, now).await?;
    db::audit::record(
        &mut *tx,
        &NewAuditEntry {
            at: now,
            actor: actor.to_owned(),
            action: "node.quarantine".to_owned(),
            target: Some(node.to_string()),
            detail: Some(serde_json::json!({
                "reason": "the same key was seen with two machine ids",
                "source": source,
            })),
        },
    )
    .await?;
    tracing::warn!(node = %node, "node quarantined: one key, two machine ids");
    Ok(())
}

fn status_message(status: EnrollmentStatus) -> Option<&'static str> {
    match status {
        EnrollmentStatus::Approved => None,
        EnrollmentStatus::Pending => Some("waiting for an admin to approve this node"),
        EnrollmentStatus::Revoked => Some("this node was revoked"),
        EnrollmentStatus::Quarantined => Some("this node is quarantined; an admin must intervene"),
    }
}

fn validate(request: &EnrollRequest) -> Result<NodeId, EnrollError> {
    if !is_valid_hostname(&request.hostname) {
        return Err(EnrollError::BadRequest(
            "invalid hostname: expected lowercase RFC 1123 labels ([a-z0-9-], dot-separated, at most 253 bytes)".into(),
        ));
    }
    if let Some(machine_id) = &request.facts.machine_id {
        if machine_id.is_empty()
            || machine_id.len() > MAX_MACHINE_ID_LEN
            || !machine_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(EnrollError::BadRequest(
                "invalid facts.machine_id: expected up to 64 letters, digits or '-'".into(),
            ));
        }
    }
    if request.agent_version.is_empty()
        || request.agent_version.len() > MAX_AGENT_VERSION_LEN
        || !request.agent_version.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(EnrollError::BadRequest(
            "invalid agent_version: expected up to 64 printable ascii characters".into(),
        ));
    }
    Ok(NodeId(request.hostname.clone()))
}

fn decode_key(text: &str, field: &str) -> Result<[u8; 32], EnrollError> {
    STANDARD
        .decode(text)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(|| {
            EnrollError::BadRequest(format!("invalid {field}: expected 32 bytes of base64"))
        })
}

/// Finds the token by id and secret and checks it for `hostname`, spending nothing.
async fn check_token(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    token: &BootstrapToken,
    hostname: &NodeId,
    now: Timestamp,
) -> Result<(Token, SecretHash), EnrollError> {
    let hash = SecretHash::of_secret(token.secret());
    let Some(found) = db::tokens::find_with_secret(&mut *tx, token.id(), &hash).await? else {
        tracing::info!(
            token.id = token.id(),
            "enrollment with an unknown token refused"
        );
        return Err(EnrollError::TokenRefused);
    };
    let usable = found.revoked_at.is_none()
        && now < found.expires_at
        && found.uses_done < found.uses_allowed
        && found
            .hostname_glob
            .as_deref()
            .is_none_or(|glob| glob_match(glob, hostname.as_str()));
    if !usable {
        tracing::info!(token.id = token.id(), node = %hostname, "enrollment token refused (revoked, expired, spent or hostname not allowed)");
        return Err(EnrollError::TokenRefused);
    }
    Ok((found, hash))
}

/// Counts one use of the checked token (atomic; a race lost for the last use refuses).
async fn spend(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    token: Option<&(Token, SecretHash)>,
    now: Timestamp,
) -> Result<(), EnrollError> {
    let Some((token, hash)) = token else {
        return Ok(());
    };
    match db::tokens::consume_use(&mut *tx, &token.token_id, hash, now).await? {
        Consumption::Consumed(_) => Ok(()),
        Consumption::Refused(_) => Err(EnrollError::TokenRefused),
    }
}

fn commit_error(source: sqlx::Error) -> EnrollError {
    EnrollError::Db(DbError::Query {
        context: "committing enrollment",
        source,
    })
}
