//! `audit_log`: admin actions (approve, revoke, run now, token create) and security events
//! (re-enrollment, quarantine). Append-only: the schema refuses updates.
//!
//! Must not: hold secrets. `detail` is for ids, names and reasons; a token's secret, a key's
//! private half or a Vault value never goes in it.

use sqlx::{QueryBuilder, Sqlite};
use steward_protocol::Timestamp;

use crate::db::codec::timestamp;
use crate::db::error::Context;
use crate::db::{DbError, Handle};

/// An entry to record.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAuditEntry {
    /// When.
    pub at: Timestamp,
    /// Who: an admin's user name, or `node:<name>` / `system` for automatic events.
    pub actor: String,
    /// What, as a stable dotted word: `node.approve`, `token.create`...
    pub action: String,
    /// What it was done to: a node name, a token id...
    pub target: Option<String>,
    /// Anything else, as JSON.
    pub detail: Option<serde_json::Value>,
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq)]
pub struct AuditEntry {
    /// Position in the log (increasing).
    pub id: i64,
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: String,
    /// What.
    pub action: String,
    /// To what.
    pub target: Option<String>,
    /// Details.
    pub detail: Option<serde_json::Value>,
}

/// Which entries [`list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Only entries about this target.
    pub target: Option<String>,
    /// Only entries before this id (the last id of the previous page).
    pub before_id: Option<i64>,
    /// At most this many (capped at 1000; 0 means 100).
    pub limit: u32,
}

#[derive(sqlx::FromRow)]
struct AuditRow {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    target: Option<String>,
    detail: Option<String>,
}

/// Appends an entry; returns its id.
pub async fn record(db: impl Into<Handle<'_>>, entry: &NewAuditEntry) -> Result<i64, DbError> {
    let detail = entry.detail.as_ref().map(serde_json::Value::to_string);
    let mut connection = db.into().connection().await?;
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO audit_log (at, actor, action, target, detail) \
         VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
    )
    .bind(entry.at.0)
    .bind(&entry.actor)
    .bind(&entry.action)
    .bind(entry.target.as_deref())
    .bind(detail)
    .fetch_one(&mut *connection)
    .await
    .context("recording audit entry")?;
    Ok(id)
}

/// Entries matching `filter`, newest first.
pub async fn list(
    db: impl Into<Handle<'_>>,
    filter: &AuditFilter,
) -> Result<Vec<AuditEntry>, DbError> {
    let limit = match filter.limit {
        0 => 100,
        limit => limit.min(1000),
    };
    let mut query =
        QueryBuilder::<Sqlite>::new("SELECT id, at, actor, action, target, detail FROM audit_log");
    query.push(" WHERE 1 = 1");
    if let Some(target) = &filter.target {
        query.push(" AND target = ").push_bind(target.as_str());
    }
    if let Some(before_id) = filter.before_id {
        query.push(" AND id < ").push_bind(before_id);
    }
    query
        .push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(limit));
    let mut connection = db.into().connection().await?;
    let rows: Vec<AuditRow> = query
        .build_query_as()
        .fetch_all(&mut *connection)
        .await
        .context("listing audit log")?;
    rows.into_iter()
        .map(|row| {
            Ok(AuditEntry {
                id: row.id,
                at: timestamp(row.at),
                actor: row.actor,
                action: row.action,
                target: row.target,
                detail: row
                    .detail
                    .map(|detail| serde_json::from_str(&detail))
                    .transpose()
                    .map_err(|error| DbError::Corrupt {
                        what: "audit_log.detail",
                        detail: error.to_string(),
                    })?,
            })
        })
        .collect()
}
