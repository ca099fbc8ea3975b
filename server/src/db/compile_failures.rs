//! `compile_failures`: why a node's catalog could not be compiled. The last good catalog keeps
//! being served meanwhile (DESIGN §6); these rows feed the UI's compile-errors page and metrics.
//!
//! A node has at most one *current* failure (not resolved). The same failure recorded again
//! (same message and site hash) bumps its count and `last_at` instead of adding a row, so a
//! broken site does not add a row per agent poll. Must not: hold secret values; the caller
//! passes the compiler's `FILE:LINE: field: message` text, never rendered content.

use steward_protocol::{NodeId, Timestamp};

use crate::db::codec::{optional_timestamp, timestamp, to_u32};
use crate::db::error::Context;
use crate::db::{begin_immediate, nodes, DbError, Handle};

/// A stored compile failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileFailure {
    /// The node.
    pub node: NodeId,
    /// First time this failure was seen.
    pub first_at: Timestamp,
    /// Last time it was seen.
    pub last_at: Timestamp,
    /// How many compiles failed this way in a row.
    pub occurrences: u32,
    /// The error text.
    pub message: String,
    /// Hash of the site that failed, when it could be loaded.
    pub site_hash: Option<String>,
    /// When a compile succeeded again (or the failure was superseded by another one).
    pub resolved_at: Option<Timestamp>,
}

#[derive(sqlx::FromRow)]
struct FailureRow {
    node: String,
    first_at: i64,
    last_at: i64,
    occurrences: i64,
    message: String,
    site_hash: Option<String>,
    resolved_at: Option<i64>,
}

impl FailureRow {
    fn into_failure(self) -> Result<CompileFailure, DbError> {
        Ok(CompileFailure {
            node: NodeId(self.node),
            first_at: timestamp(self.first_at),
            last_at: timestamp(self.last_at),
            occurrences: to_u32(self.occurrences, "compile_failures.occurrences")?,
            message: self.message,
            site_hash: self.site_hash,
            resolved_at: optional_timestamp(self.resolved_at),
        })
    }
}

macro_rules! failure_columns {
    () => {
        "n.name AS node, f.first_at, f.last_at, f.occurrences, f.message, f.site_hash, \
         f.resolved_at"
    };
}

/// Records that compiling `node` failed at `at`: bumps the current failure if it is the same
/// one, otherwise resolves it and starts a new current failure.
pub async fn record(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    at: Timestamp,
    message: &str,
    site_hash: Option<&str>,
) -> Result<(), DbError> {
    let mut connection = db.into().connection().await?;
    let mut tx = begin_immediate(&mut connection).await?;
    let node_id = nodes::id_of(&mut tx, node).await?;
    let bumped = sqlx::query(
        "UPDATE compile_failures SET occurrences = occurrences + 1, last_at = max(last_at, ?2) \
         WHERE node_id = ?1 AND resolved_at IS NULL AND message = ?3 AND site_hash IS ?4",
    )
    .bind(node_id)
    .bind(at.0)
    .bind(message)
    .bind(site_hash)
    .execute(&mut *tx)
    .await
    .context("recording compile failure")?;
    if bumped.rows_affected() == 0 {
        sqlx::query(
            "UPDATE compile_failures SET resolved_at = ?2 \
             WHERE node_id = ?1 AND resolved_at IS NULL",
        )
        .bind(node_id)
        .bind(at.0)
        .execute(&mut *tx)
        .await
        .context("superseding compile failure")?;
        sqlx::query(
            "INSERT INTO compile_failures (node_id, first_at, last_at, message, site_hash) \
             VALUES (?1, ?2, ?2, ?3, ?4)",
        )
        .bind(node_id)
        .bind(at.0)
        .bind(message)
        .bind(site_hash)
        .execute(&mut *tx)
        .await
        .context("recording compile failure")?;
    }
    tx.commit().await.context("committing compile failure")
}

/// Resolves the node's current failure (a compile succeeded at `at`). Returns whether there was
/// one.
pub async fn clear(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    at: Timestamp,
) -> Result<bool, DbError> {
    let mut connection = db.into().connection().await?;
    let cleared = sqlx::query(
        "UPDATE compile_failures SET resolved_at = ?2 \
         WHERE node_id = (SELECT id FROM nodes WHERE name = ?1) AND resolved_at IS NULL",
    )
    .bind(node.as_str())
    .bind(at.0)
    .execute(&mut *connection)
    .await
    .context("clearing compile failure")?;
    Ok(cleared.rows_affected() > 0)
}

/// The node's current failure, if its last compile failed.
pub async fn current(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
) -> Result<Option<CompileFailure>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<FailureRow> = sqlx::query_as(concat!(
        "SELECT ",
        failure_columns!(),
        " FROM compile_failures f JOIN nodes n ON n.id = f.node_id \
         WHERE n.name = ?1 AND f.resolved_at IS NULL"
    ))
    .bind(node.as_str())
    .fetch_optional(&mut *connection)
    .await
    .context("reading compile failure")?;
    row.map(FailureRow::into_failure).transpose()
}

/// Every node's current failure, most recently seen first.
pub async fn list_current(db: impl Into<Handle<'_>>) -> Result<Vec<CompileFailure>, DbError> {
    let mut connection = db.into().connection().await?;
    let rows: Vec<FailureRow> = sqlx::query_as(concat!(
        "SELECT ",
        failure_columns!(),
        " FROM compile_failures f JOIN nodes n ON n.id = f.node_id \
         WHERE f.resolved_at IS NULL ORDER BY f.last_at DESC, n.name"
    ))
    .fetch_all(&mut *connection)
    .await
    .context("listing compile failures")?;
    rows.into_iter().map(FailureRow::into_failure).collect()
}

/// The node's `limit` most recent failures, current or resolved, newest first.
pub async fn history(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    limit: u32,
) -> Result<Vec<CompileFailure>, DbError> {
    let mut connection = db.into().connection().await?;
    let rows: Vec<FailureRow> = sqlx::query_as(concat!(
        "SELECT ",
        failure_columns!(),
        " FROM compile_failures f JOIN nodes n ON n.id = f.node_id \
         WHERE n.name = ?1 ORDER BY f.first_at DESC, f.id DESC LIMIT ?2"
    ))
    .bind(node.as_str())
    .bind(i64::from(limit))
    .fetch_all(&mut *connection)
    .await
    .context("reading compile failure history")?;
    rows.into_iter().map(FailureRow::into_failure).collect()
}
