//! Admin operations shared by the admin API and the CLI: approve, revoke, run now, bootstrap
//! tokens. Each one changes the database in one transaction together with its audit entry, so
//! there is never an action without its record. Key status is read from the database on every
//! agent request, so a revocation takes effect on the next request (THREATS E5).

use std::time::Duration;

use steward_protocol::join::BootstrapToken;
use steward_protocol::{EnrollmentStatus, NodeId, Timestamp};

use crate::db::audit::NewAuditEntry;
use crate::db::tokens::{NewToken, SecretHash};
use crate::db::{self, Db, DbError};

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such node or token.
    #[error("{what} {key:?} does not exist")]
    NotFound {
        /// `node` or `token`.
        what: &'static str,
        /// Its name.
        key: String,
    },
    /// The operation does not apply in the current state; the message says why.
    #[error("{0}")]
    Conflict(String),
    /// Invalid input; the message says what to fix.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Db(#[from] DbError),
}

/// What [`approve`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Approved {
    /// The status before.
    pub previous: EnrollmentStatus,
    /// A waiting key was activated (and the old one revoked).
    pub replaced_key: bool,
}

/// Approves `node`: activates its waiting key if it has one (revoking the old key), and sets it
/// `approved`.
pub async fn approve(
    db: &Db,
    node: &NodeId,
    actor: &str,
    now: Timestamp,
) -> Result<Approved, AdminError> {
    let mut tx = db.begin_write().await?;
    let found = db::nodes::get_by_name(&mut tx, node)
        .await?
        .ok_or_else(|| not_found("node", node.as_str()))?;
    let pending = db::pending_keys::take(&mut tx, node).await?;
    let replaced_key = pending.is_some();
    if let Some(pending) = &pending {
        let reason = format!("replaced by a new key approved by {actor}");
        db::keys::revoke_all_for_node(&mut tx, node, &reason, now).await?;
        db::keys::add(&mut tx, node, &pending.key, now).await?;
    } else {
        let has_active = db::keys::history(&mut tx, node)
            .await?
            .iter()
            .any(|key| key.revoked_at.is_none());
        if !has_active {
            return Err(AdminError::Conflict(format!(
                "node {node} has no active or waiting key; the host must enroll again"
            )));
        }
    }
    db::nodes::set_status(&mut tx, node, EnrollmentStatus::Approved, now).await?;
    audit(
        &mut tx,
        now,
        actor,
        "node.approve",
        node.as_str(),
        serde_json::json!({
            "previous_status": crate::metrics::status_name(found.status),
            "new_key": pending.as_ref().map(|p| p.key.key_id.as_str()),
        }),
    )
    .await?;
    tx.commit().await.map_err(commit_error)?;
    Ok(Approved {
        previous: found.status,
        replaced_key,
    })
}

/// Revokes `node`: every key (active or waiting) and its status. Its next request is refused.
pub async fn revoke(
    db: &Db,
    node: &NodeId,
    actor: &str,
    reason: &str,
    now: Timestamp,
) -> Result<(), AdminError> {
    let reason = reason.trim();
    if reason.len() > 500 || reason.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "the reason must be one line of at most 500 bytes".into(),
        ));
    }
    let mut tx = db.begin_write().await?;
    let found = db::nodes::get_by_name(&mut tx, node)
        .await?
        .ok_or_else(|| not_found("node", node.as_str()))?;
    revoke_in(&mut tx, &found, actor, reason, now).await?;
    tx.commit().await.map_err(commit_error)
}

/// [`revoke`] inside the caller's write transaction, of `found` (read in it), `reason` checked.
async fn revoke_in(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    found: &db::nodes::Node,
    actor: &str,
    reason: &str,
    now: Timestamp,
) -> Result<(), AdminError> {
    let node = &found.name;
    let reason = if reason.is_empty() {
        format!("revoked by {actor}")
    } else {
        format!("revoked by {actor}: {reason}")
    };
    let revoked = db::keys::revoke_all_for_node(&mut *tx, node, &reason, now).await?;
    let pending = db::pending_keys::take(&mut *tx, node).await?;
    db::nodes::set_status(&mut *tx, node, EnrollmentStatus::Revoked, now).await?;
    audit(
        &mut *tx,
        now,
        actor,
        "node.revoke",
        node.as_str(),
        serde_json::json!({
            "previous_status": crate::metrics::status_name(found.status),
            "keys_revoked": revoked,
            "waiting_key_dropped": pending.is_some(),
            "reason": reason,
        }),
    )
    .await?;
    Ok(())
}

/// What [`reject`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// The key waiting for an approved node was refused; the node's current key keeps working.
    WaitingKey,
    /// A node that was never approved was revoked.
    Node,
}

/// Rejects what waits for approval on `node`. A new key waiting beside an approved node's key
/// (a re-enrollment without a token that allows it, THREATS E3) is refused on its own: it goes
/// into the node's key history as revoked, so it can never enroll again, and the node keeps
/// working with its current key. A node that is itself pending is revoked ([`revoke`]).
pub async fn reject(
    db: &Db,
    node: &NodeId,
    actor: &str,
    reason: &str,
    now: Timestamp,
) -> Result<Rejected, AdminError> {
    let mut tx = db.begin_write().await?;
    let found = db::nodes::get_by_name(&mut tx, node)
        .await?
        .ok_or_else(|| not_found("node", node.as_str()))?;
    if found.status == EnrollmentStatus::Pending {
        revoke_in(&mut tx, &found, actor, reason, now).await?;
        tx.commit().await.map_err(commit_error)?;
        return Ok(Rejected::Node);
    }
    let Some(waiting) = db::pending_keys::take(&mut tx, node).await? else {
        return Err(AdminError::Conflict(format!(
            "nothing of node {node} waits for approval"
        )));
    };
    let reason = format!("rejected by {actor} before use");
    db::keys::add_revoked(&mut tx, node, &waiting.key, &reason, now).await?;
    audit(
        &mut tx,
        now,
        actor,
        "node.reject_key",
        node.as_str(),
        serde_json::json!({ "key": waiting.key.key_id.as_str() }),
    )
    .await?;
    tx.commit().await.map_err(commit_error)?;
    Ok(Rejected::WaitingKey)
}

/// Asks `node` to run now (its long-poll wakes). The caller notifies in-process waiters.
pub async fn run_now(
    db: &Db,
    node: &NodeId,
    actor: &str,
    now: Timestamp,
) -> Result<(), AdminError> {
    let mut tx = db.begin_write().await?;
    let found = db::nodes::get_by_name(&mut tx, node)
        .await?
        .ok_or_else(|| not_found("node", node.as_str()))?;
    if found.status != EnrollmentStatus::Approved {
        return Err(AdminError::Conflict(format!(
            "node {node} is {}, not approved; it cannot run",
            crate::metrics::status_name(found.status)
        )));
    }
    db::nodes::request_run_now(&mut tx, node, now).await?;
    audit(
        &mut tx,
        now,
        actor,
        "node.run_now",
        node.as_str(),
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await.map_err(commit_error)
}

/// A bootstrap token to create.
#[derive(Debug, Clone)]
pub struct TokenRequest {
    /// What it is for.
    pub description: String,
    /// How long it is valid.
    pub ttl: Duration,
    /// Enrollments allowed.
    pub uses: u32,
    /// Hostname glob.
    pub hostname_glob: Option<String>,
    /// Host class of the nodes it enrolls (must be a class of the site to auto-approve).
    pub class: Option<String>,
    /// Approve without an admin when the site's classes agree.
    pub auto_approve: bool,
    /// May replace the key of an enrolled hostname (template tokens).
    pub may_reenroll: bool,
}

/// Creates a token and returns it: the only time its secret is seen (only its hash is kept).
pub async fn create_token(
    db: &Db,
    request: &TokenRequest,
    actor: &str,
    now: Timestamp,
) -> Result<(BootstrapToken, Timestamp), AdminError> {
    if request.uses == 0 {
        return Err(AdminError::Invalid(
            "a token must allow at least one use".into(),
        ));
    }
    if request.ttl.is_zero() || request.ttl > Duration::from_secs(366 * 86_400) {
        return Err(AdminError::Invalid(
            "the ttl must be more than zero and at most 366 days".into(),
        ));
    }
    if let Some(glob) = &request.hostname_glob {
        let valid = !glob.is_empty()
            && glob.len() <= 253
            && glob
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.*?".contains(&b));
        if !valid {
            return Err(AdminError::Invalid(
                "the hostname glob may hold lowercase letters, digits, '-', '.', '*' and '?'"
                    .into(),
            ));
        }
    }
    if let Some(class) = &request.class {
        if class.is_empty()
            || class.len() > 64
            || !class
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(AdminError::Invalid(
                "the class must be a site class name (letters, digits, '-', '_')".into(),
            ));
        }
    }
    if request.description.len() > 200 || request.description.chars().any(char::is_control) {
        return Err(AdminError::Invalid(
            "the description must be one line of at most 200 bytes".into(),
        ));
    }
    let mut id = [0u8; 6];
    let mut secret = [0u8; 16];
    getrandom::getrandom(&mut id)
        .and_then(|()| getrandom::getrandom(&mut secret))
        .map_err(|_| AdminError::Conflict("the operating system gave no random bytes".into()))?;
    let token = BootstrapToken::from_random_bytes(id, secret);
    let expires_at = now.plus_secs(i64::try_from(request.ttl.as_secs()).unwrap_or(i64::MAX));
    let mut tx = db.begin_write().await?;
    db::tokens::create(
        &mut tx,
        &NewToken {
            token_id: token.id().to_owned(),
            secret_hash: SecretHash::of_secret(token.secret()),
            description: request.description.clone(),
            created_by: actor.to_owned(),
            expires_at,
            uses_allowed: request.uses,
            hostname_glob: request.hostname_glob.clone(),
            class: request.class.clone(),
            auto_approve: request.auto_approve,
            may_reenroll: request.may_reenroll,
        },
        now,
    )
    .await?;
    audit(
        &mut tx,
        now,
        actor,
        "token.create",
        token.id(),
        serde_json::json!({
            "expires_at": expires_at.0,
            "uses": request.uses,
            "hostname_glob": request.hostname_glob,
            "class": request.class,
            "auto_approve": request.auto_approve,
            "may_reenroll": request.may_reenroll,
        }),
    )
    .await?;
    tx.commit().await.map_err(commit_error)?;
    Ok((token, expires_at))
}

/// Revokes a token.
pub async fn revoke_token(
    db: &Db,
    token_id: &str,
    actor: &str,
    now: Timestamp,
) -> Result<(), AdminError> {
    let mut tx = db.begin_write().await?;
    if db::tokens::find(&mut tx, token_id).await?.is_none() {
        return Err(not_found("token", token_id));
    }
    if !db::tokens::revoke(&mut tx, token_id, now).await? {
        return Err(AdminError::Conflict(format!(
            "token {token_id} is revoked already"
        )));
    }
    audit(
        &mut tx,
        now,
        actor,
        "token.revoke",
        token_id,
        serde_json::json!({}),
    )
    .await?;
    tx.commit().await.map_err(commit_error)
}

async fn audit(
    tx: &mut sqlx::Transaction<'static, sqlx::Sqlite>,
    now: Timestamp,
    actor: &str,
    action: &str,
    target: &str,
    detail: serde_json::Value,
) -> Result<(), DbError> {
    db::audit::record(
        &mut *tx,
        &NewAuditEntry {
            at: now,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: Some(target.to_owned()),
            detail: Some(detail),
        },
    )
    .await
    .map(drop)
}

fn not_found(what: &'static str, key: &str) -> AdminError {
    AdminError::NotFound {
        what,
        key: key.to_owned(),
    }
}

fn commit_error(source: sqlx::Error) -> AdminError {
    AdminError::Db(DbError::Query {
        context: "committing admin action",
        source,
    })
}
