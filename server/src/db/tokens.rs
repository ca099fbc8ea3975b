//! `bootstrap_tokens`: tokens `<token_id>.<secret>` that let a host *ask* to enroll.
//!
//! The secret is never stored: only its SHA-256 ([`SecretHash`]), which is enough because the
//! secret is high-entropy (the caller generates at least 128 random bits). [`consume_use`]
//! checks the secret, expiry, use count and revocation and counts the use in one statement, so
//! two hosts racing for the last use cannot both win.

use std::fmt;

use sha2::{Digest, Sha256};
use steward_protocol::Timestamp;

use crate::db::codec::{optional_timestamp, timestamp, to_u32};
use crate::db::error::Context;
use crate::db::{DbError, Handle};

/// SHA-256 of a token secret: the only form in which a secret reaches the database.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretHash([u8; 32]);

impl SecretHash {
    /// Hashes the secret part of a bootstrap token.
    pub fn of_secret(secret: &str) -> SecretHash {
        SecretHash(Sha256::digest(secret.as_bytes()).into())
    }
}

impl fmt::Debug for SecretHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretHash(..)")
    }
}

/// A token to create with [`create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The public id (the part before the `.`).
    pub token_id: String,
    /// Hash of the secret part.
    pub secret_hash: SecretHash,
    /// What it is for.
    pub description: String,
    /// Admin who created it.
    pub created_by: String,
    /// Refused from this time on.
    pub expires_at: Timestamp,
    /// How many enrollments it allows (at least 1).
    pub uses_allowed: u32,
    /// Hostnames it may enroll (glob, matched by the caller); `None` for any.
    pub hostname_glob: Option<String>,
    /// Class given to nodes it enrolls.
    pub class: Option<String>,
    /// Nodes it enrolls are approved without an admin (if the site's policy agrees).
    pub auto_approve: bool,
    /// It may re-enroll an existing hostname with a new key (template tokens).
    pub may_reenroll: bool,
}

/// A stored token (without its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    /// The public id.
    pub token_id: String,
    /// What it is for.
    pub description: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// Admin who created it.
    pub created_by: String,
    /// Refused from this time on.
    pub expires_at: Timestamp,
    /// Enrollments allowed.
    pub uses_allowed: u32,
    /// Enrollments done.
    pub uses_done: u32,
    /// Hostname glob, `None` for any.
    pub hostname_glob: Option<String>,
    /// Class for nodes it enrolls.
    pub class: Option<String>,
    /// Auto-approve enrolled nodes.
    pub auto_approve: bool,
    /// May re-enroll an existing hostname.
    pub may_reenroll: bool,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
}

/// What [`consume_use`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consumption {
    /// One use was counted; the token as it is now.
    Consumed(Token),
    /// Nothing was counted.
    Refused(TokenRefusal),
}

/// Why a token was refused. Without the right secret the answer is always `Unknown`, so the
/// state of a token is only revealed to someone who holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenRefusal {
    /// No such token, or the secret does not match.
    Unknown,
    /// Revoked by an admin.
    Revoked,
    /// Past `expires_at`.
    Expired,
    /// Every use is spent.
    Exhausted,
}

#[derive(sqlx::FromRow)]
struct TokenRow {
    token_id: String,
    description: String,
    created_at: i64,
    created_by: String,
    expires_at: i64,
    uses_allowed: i64,
    uses_done: i64,
    hostname_glob: Option<String>,
    class: Option<String>,
    auto_approve: bool,
    may_reenroll: bool,
    revoked_at: Option<i64>,
}

impl TokenRow {
    fn into_token(self) -> Result<Token, DbError> {
        Ok(Token {
            token_id: self.token_id,
            description: self.description,
            created_at: timestamp(self.created_at),
            created_by: self.created_by,
            expires_at: timestamp(self.expires_at),
            uses_allowed: to_u32(self.uses_allowed, "bootstrap_tokens.uses_allowed")?,
            uses_done: to_u32(self.uses_done, "bootstrap_tokens.uses_done")?,
            hostname_glob: self.hostname_glob,
            class: self.class,
            auto_approve: self.auto_approve,
            may_reenroll: self.may_reenroll,
            revoked_at: optional_timestamp(self.revoked_at),
        })
    }
}

macro_rules! token_columns {
    () => {
        "token_id, description, created_at, created_by, expires_at, uses_allowed, uses_done, \
         hostname_glob, class, auto_approve, may_reenroll, revoked_at"
    };
}

/// Stores a new token. [`DbError::AlreadyExists`] if the id is taken.
pub async fn create(
    db: impl Into<Handle<'_>>,
    token: &NewToken,
    now: Timestamp,
) -> Result<(), DbError> {
    if token.uses_allowed == 0 {
        return Err(DbError::Invalid {
            what: "bootstrap token uses",
            detail: "a token must allow at least one use".into(),
        });
    }
    let mut connection = db.into().connection().await?;
    let inserted = sqlx::query(
        "INSERT INTO bootstrap_tokens (token_id, secret_hash, description, created_at, \
         created_by, expires_at, uses_allowed, hostname_glob, class, auto_approve, may_reenroll) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
         ON CONFLICT (token_id) DO NOTHING",
    )
    .bind(&token.token_id)
    .bind(&token.secret_hash.0[..])
    .bind(&token.description)
    .bind(now.0)
    .bind(&token.created_by)
    .bind(token.expires_at.0)
    .bind(i64::from(token.uses_allowed))
    .bind(token.hostname_glob.as_deref())
    .bind(token.class.as_deref())
    .bind(token.auto_approve)
    .bind(token.may_reenroll)
    .execute(&mut *connection)
    .await
    .context("creating bootstrap token")?;
    if inserted.rows_affected() == 0 {
        return Err(DbError::AlreadyExists {
            what: "bootstrap token",
            key: token.token_id.clone(),
        });
    }
    Ok(())
}

/// The token with this id, whatever its state (for policy checks and the UI; it does not check
/// the secret).
pub async fn find(db: impl Into<Handle<'_>>, token_id: &str) -> Result<Option<Token>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<TokenRow> = sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM bootstrap_tokens WHERE token_id = ?1"
    ))
    .bind(token_id)
    .fetch_optional(&mut *connection)
    .await
    .context("reading bootstrap token")?;
    row.map(TokenRow::into_token).transpose()
}

/// The token with this id whose secret hashes to `secret_hash`, whatever its state. Without the
/// right secret the answer is `None`, as for an unknown id, so a token's state (and its hostname
/// glob) is only revealed to someone who holds it. The comparison happens in the lookup: the
/// secret is high-entropy and only its hash is compared, so timing reveals nothing useful.
pub async fn find_with_secret(
    db: impl Into<Handle<'_>>,
    token_id: &str,
    secret_hash: &SecretHash,
) -> Result<Option<Token>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<TokenRow> = sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM bootstrap_tokens WHERE token_id = ?1 AND secret_hash = ?2"
    ))
    .bind(token_id)
    .bind(&secret_hash.0[..])
    .fetch_optional(&mut *connection)
    .await
    .context("reading bootstrap token")?;
    row.map(TokenRow::into_token).transpose()
}

/// Counts one use of the token if, at `now`, the secret matches, it is not revoked, not expired
/// and has a use left, all in one `UPDATE`: concurrent callers are serialized by SQLite's write
/// lock, so a token is never used more often than it allows.
pub async fn consume_use(
    db: impl Into<Handle<'_>>,
    token_id: &str,
    secret_hash: &SecretHash,
    now: Timestamp,
) -> Result<Consumption, DbError> {
    let mut connection = db.into().connection().await?;
    let consumed: Option<TokenRow> = sqlx::query_as(concat!(
        "UPDATE bootstrap_tokens SET uses_done = uses_done + 1 \
         WHERE token_id = ?1 AND secret_hash = ?2 AND revoked_at IS NULL \
         AND expires_at > ?3 AND uses_done < uses_allowed \
         RETURNING ",
        token_columns!()
    ))
    .bind(token_id)
    .bind(&secret_hash.0[..])
    .bind(now.0)
    .fetch_optional(&mut *connection)
    .await
    .context("consuming bootstrap token")?;
    if let Some(row) = consumed {
        return Ok(Consumption::Consumed(row.into_token()?));
    }
    // Nothing counted: say why (for the audit log), re-reading only to explain a refusal that
    // has already happened.
    let state: Option<(bool, Option<i64>, i64, i64, i64)> = sqlx::query_as(
        "SELECT secret_hash = ?2, revoked_at, expires_at, uses_done, uses_allowed \
         FROM bootstrap_tokens WHERE token_id = ?1",
    )
    .bind(token_id)
    .bind(&secret_hash.0[..])
    .fetch_optional(&mut *connection)
    .await
    .context("reading bootstrap token")?;
    let refusal = match state {
        None | Some((false, ..)) => TokenRefusal::Unknown,
        Some((true, Some(_), ..)) => TokenRefusal::Revoked,
        Some((true, None, expires_at, ..)) if expires_at <= now.0 => TokenRefusal::Expired,
        Some((true, None, _, uses_done, uses_allowed)) if uses_done >= uses_allowed => {
            TokenRefusal::Exhausted
        }
        // The token became usable between the two statements (cannot happen: nothing un-revokes
        // or un-spends a token); refuse anyway rather than count a use here.
        Some(_) => TokenRefusal::Unknown,
    };
    Ok(Consumption::Refused(refusal))
}

/// Revokes the token. Returns `false` if it does not exist or was revoked already.
pub async fn revoke(
    db: impl Into<Handle<'_>>,
    token_id: &str,
    now: Timestamp,
) -> Result<bool, DbError> {
    let mut connection = db.into().connection().await?;
    let revoked = sqlx::query(
        "UPDATE bootstrap_tokens SET revoked_at = ?2 WHERE token_id = ?1 AND revoked_at IS NULL",
    )
    .bind(token_id)
    .bind(now.0)
    .execute(&mut *connection)
    .await
    .context("revoking bootstrap token")?;
    Ok(revoked.rows_affected() > 0)
}

/// Every token, newest first.
pub async fn list(db: impl Into<Handle<'_>>) -> Result<Vec<Token>, DbError> {
    let mut connection = db.into().connection().await?;
    let rows: Vec<TokenRow> = sqlx::query_as(concat!(
        "SELECT ",
        token_columns!(),
        " FROM bootstrap_tokens ORDER BY created_at DESC, token_id"
    ))
    .fetch_all(&mut *connection)
    .await
    .context("listing bootstrap tokens")?;
    rows.into_iter().map(TokenRow::into_token).collect()
}
