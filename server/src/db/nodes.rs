//! `nodes`: one row per hostname, with its enrollment status, last facts, the catalog currently
//! served and a pending "run now" request. Keys live in [`crate::db::keys`].

use steward_protocol::{EnrollmentStatus, Facts, KeyId, NodeId, Serial, Timestamp};

use crate::db::codec::{
    enrollment_status_str, optional_timestamp, parse_enrollment_status, serial_from_i64, timestamp,
};
use crate::db::error::Context;
use crate::db::{DbError, Handle};

/// A node as stored (facts are read separately with [`get_facts`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The node id: its hostname.
    pub name: NodeId,
    /// Enrollment status.
    pub status: EnrollmentStatus,
    /// Host class (from the site's classes or the bootstrap token).
    pub class: Option<String>,
    /// When it first enrolled.
    pub created_at: Timestamp,
    /// When it was last approved.
    pub approved_at: Option<Timestamp>,
    /// Last authenticated request.
    pub last_seen_at: Option<Timestamp>,
    /// `machine_id` of the last facts.
    pub machine_id: Option<String>,
    /// Serial of the catalog currently served.
    pub catalog_serial: Option<Serial>,
    /// Digest of the catalog currently served.
    pub catalog_digest: Option<String>,
    /// An admin asked for a run at this time, and the agent has not been told yet.
    pub run_now_requested_at: Option<Timestamp>,
}

/// A node to create with [`insert_pending`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNode {
    /// Its hostname (already validated with `steward_protocol::is_valid_hostname`).
    pub name: NodeId,
    /// Host class, if known.
    pub class: Option<String>,
    /// `/etc/machine-id` sent at enrollment.
    pub machine_id: Option<String>,
}

#[derive(sqlx::FromRow)]
pub(crate) struct NodeRow {
    name: String,
    status: String,
    class: Option<String>,
    created_at: i64,
    approved_at: Option<i64>,
    last_seen_at: Option<i64>,
    machine_id: Option<String>,
    catalog_serial: Option<i64>,
    catalog_digest: Option<String>,
    run_now_requested_at: Option<i64>,
}

impl NodeRow {
    pub(crate) fn into_node(self) -> Result<Node, DbError> {
        Ok(Node {
            name: NodeId(self.name),
            status: parse_enrollment_status(&self.status)?,
            class: self.class,
            created_at: timestamp(self.created_at),
            approved_at: optional_timestamp(self.approved_at),
            last_seen_at: optional_timestamp(self.last_seen_at),
            machine_id: self.machine_id,
            catalog_serial: self
                .catalog_serial
                .map(|serial| serial_from_i64(serial, "nodes.catalog_serial"))
                .transpose()?,
            catalog_digest: self.catalog_digest,
            run_now_requested_at: optional_timestamp(self.run_now_requested_at),
        })
    }
}

/// The columns of [`NodeRow`], for `concat!`.
macro_rules! node_columns {
    () => {
        "n.name, n.status, n.class, n.created_at, n.approved_at, n.last_seen_at, n.machine_id, \
         n.catalog_serial, n.catalog_digest, n.run_now_requested_at"
    };
}

/// Creates a node in `pending` status. Fails with [`DbError::AlreadyExists`] if the hostname is
/// enrolled already: a re-enrolling host keeps its row (see [`crate::db::keys`]).
pub async fn insert_pending(
    db: impl Into<Handle<'_>>,
    node: &NewNode,
    now: Timestamp,
) -> Result<(), DbError> {
    let mut connection = db.into().connection().await?;
    let inserted = sqlx::query(
        "INSERT INTO nodes (name, status, class, created_at, machine_id) \
         VALUES (?1, 'pending', ?2, ?3, ?4) ON CONFLICT (name) DO NOTHING",
    )
    .bind(node.name.as_str())
    .bind(node.class.as_deref())
    .bind(now.0)
    .bind(node.machine_id.as_deref())
    .execute(&mut *connection)
    .await
    .context("inserting node")?;
    if inserted.rows_affected() == 0 {
        return Err(DbError::AlreadyExists {
            what: "node",
            key: node.name.to_string(),
        });
    }
    Ok(())
}

/// The node named `node`.
pub async fn get_by_name(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
) -> Result<Option<Node>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<NodeRow> = sqlx::query_as(concat!(
        "SELECT ",
        node_columns!(),
        " FROM nodes n WHERE n.name = ?1"
    ))
    .bind(node.as_str())
    .fetch_optional(&mut *connection)
    .await
    .context("reading node")?;
    row.map(NodeRow::into_node).transpose()
}

/// The node whose **active** (not revoked) key is `key_id`: the lookup behind every signed
/// agent request. A revoked key finds nothing (THREATS E5); the caller still checks the node's
/// status.
pub async fn get_by_key_id(
    db: impl Into<Handle<'_>>,
    key_id: &KeyId,
) -> Result<Option<Node>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<NodeRow> = sqlx::query_as(concat!(
        "SELECT ",
        node_columns!(),
        " FROM node_keys k JOIN nodes n ON n.id = k.node_id \
         WHERE k.key_id = ?1 AND k.revoked_at IS NULL"
    ))
    .bind(key_id.as_str())
    .fetch_optional(&mut *connection)
    .await
    .context("reading node by key")?;
    row.map(NodeRow::into_node).transpose()
}

/// All nodes, or those with `status`, by name.
pub async fn list(
    db: impl Into<Handle<'_>>,
    status: Option<EnrollmentStatus>,
) -> Result<Vec<Node>, DbError> {
    let mut connection = db.into().connection().await?;
    let rows: Vec<NodeRow> = sqlx::query_as(concat!(
        "SELECT ",
        node_columns!(),
        " FROM nodes n WHERE ?1 IS NULL OR n.status = ?1 ORDER BY n.name"
    ))
    .bind(status.map(enrollment_status_str))
    .fetch_all(&mut *connection)
    .await
    .context("listing nodes")?;
    rows.into_iter().map(NodeRow::into_node).collect()
}

/// Sets the node's status; moving to `approved` also sets `approved_at`.
pub async fn set_status(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    status: EnrollmentStatus,
    now: Timestamp,
) -> Result<(), DbError> {
    let mut connection = db.into().connection().await?;
    let updated = sqlx::query(
        "UPDATE nodes SET status = ?2, \
         approved_at = CASE WHEN ?2 = 'approved' THEN ?3 ELSE approved_at END \
         WHERE name = ?1",
    )
    .bind(node.as_str())
    .bind(enrollment_status_str(status))
    .bind(now.0)
    .execute(&mut *connection)
    .await
    .context("setting node status")?;
    found(updated.rows_affected(), node)
}

/// Records an authenticated request at `now` (never moves `last_seen_at` backwards).
pub async fn touch_last_seen(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    now: Timestamp,
) -> Result<(), DbError> {
    let mut connection = db.into().connection().await?;
    let updated = sqlx::query(
        "UPDATE nodes SET last_seen_at = max(coalesce(last_seen_at, ?2), ?2) WHERE name = ?1",
    )
    .bind(node.as_str())
    .bind(now.0)
    .execute(&mut *connection)
    .await
    .context("updating node last seen")?;
    found(updated.rows_affected(), node)
}

/// Stores the node's latest facts (and their `machine_id`, kept in its own column).
pub async fn set_facts(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    facts: &Facts,
) -> Result<(), DbError> {
    let json = serde_json::to_string(facts).map_err(|error| DbError::Invalid {
        what: "facts",
        detail: error.to_string(),
    })?;
    let mut connection = db.into().connection().await?;
    let updated = sqlx::query("UPDATE nodes SET facts = ?2, machine_id = ?3 WHERE name = ?1")
        .bind(node.as_str())
        .bind(json)
        .bind(facts.machine_id.as_deref())
        .execute(&mut *connection)
        .await
        .context("storing node facts")?;
    found(updated.rows_affected(), node)
}

/// The node's latest facts; `None` if it never sent any. [`DbError::NotFound`] for an unknown
/// node.
pub async fn get_facts(db: impl Into<Handle<'_>>, node: &NodeId) -> Result<Option<Facts>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<(Option<String>,)> = sqlx::query_as("SELECT facts FROM nodes WHERE name = ?1")
        .bind(node.as_str())
        .fetch_optional(&mut *connection)
        .await
        .context("reading node facts")?;
    let Some((json,)) = row else {
        return Err(not_found(node));
    };
    json.map(|json| {
        serde_json::from_str(&json).map_err(|error| DbError::Corrupt {
            what: "nodes.facts",
            detail: error.to_string(),
        })
    })
    .transpose()
}

/// Asks the node to run now: its long-poll wakes on the next check. Keeps the earliest pending
/// request time if one is pending already.
pub async fn request_run_now(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    now: Timestamp,
) -> Result<(), DbError> {
    let mut connection = db.into().connection().await?;
    let updated = sqlx::query(
        "UPDATE nodes SET run_now_requested_at = coalesce(run_now_requested_at, ?2) \
         WHERE name = ?1",
    )
    .bind(node.as_str())
    .bind(now.0)
    .execute(&mut *connection)
    .await
    .context("requesting run now")?;
    found(updated.rows_affected(), node)
}

/// Clears a "run now" request the agent has been told about: only one made at or before
/// `delivered` (the `run_now_requested_at` the caller read), so a request made meanwhile stays.
/// Returns whether a request was cleared.
pub async fn clear_run_now(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    delivered: Timestamp,
) -> Result<bool, DbError> {
    let mut connection = db.into().connection().await?;
    let updated = sqlx::query(
        "UPDATE nodes SET run_now_requested_at = NULL \
         WHERE name = ?1 AND run_now_requested_at <= ?2",
    )
    .bind(node.as_str())
    .bind(delivered.0)
    .execute(&mut *connection)
    .await
    .context("clearing run now")?;
    Ok(updated.rows_affected() > 0)
}

/// How many nodes have each status (statuses without nodes are left out).
pub async fn count_by_status(
    db: impl Into<Handle<'_>>,
) -> Result<Vec<(EnrollmentStatus, u64)>, DbError> {
    let mut connection = db.into().connection().await?;
    let rows: Vec<(String, i64)> =
        sqlx::query_as("SELECT status, count(*) FROM nodes GROUP BY status ORDER BY status")
            .fetch_all(&mut *connection)
            .await
            .context("counting nodes")?;
    rows.into_iter()
        .map(|(status, count)| {
            Ok((
                parse_enrollment_status(&status)?,
                u64::try_from(count).unwrap_or(0),
            ))
        })
        .collect()
}

/// Names of the nodes with a pending "run now" request (for the server's wake-up sweep, which
/// notices requests made by the admin CLI in another process).
pub async fn with_run_now_pending(db: impl Into<Handle<'_>>) -> Result<Vec<NodeId>, DbError> {
    let mut connection = db.into().connection().await?;
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM nodes WHERE run_now_requested_at IS NOT NULL ORDER BY name",
    )
    .fetch_all(&mut *connection)
    .await
    .context("listing run-now requests")?;
    Ok(names.into_iter().map(NodeId).collect())
}

/// The integer id of `node`, for inserts into tables that refer to it.
pub(crate) async fn id_of(
    connection: &mut sqlx::SqliteConnection,
    node: &NodeId,
) -> Result<i64, DbError> {
    let id: Option<i64> = sqlx::query_scalar("SELECT id FROM nodes WHERE name = ?1")
        .bind(node.as_str())
        .fetch_optional(&mut *connection)
        .await
        .context("looking up node")?;
    id.ok_or_else(|| not_found(node))
}

pub(crate) fn not_found(node: &NodeId) -> DbError {
    DbError::NotFound {
        what: "node",
        key: node.to_string(),
    }
}

fn found(rows_affected: u64, node: &NodeId) -> Result<(), DbError> {
    if rows_affected == 0 {
        Err(not_found(node))
    } else {
        Ok(())
    }
}
