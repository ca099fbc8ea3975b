//! `pending_keys`: a new key asking for a hostname that already has one, waiting for an admin
//! (THREATS E3). The node's active key keeps working until the admin approves the new key
//! ([`take`], then [`crate::db::keys::revoke_all_for_node`] and [`crate::db::keys::add`] in one
//! transaction) or revokes the node.

use steward_protocol::{KeyId, NodeId, Timestamp};

use crate::db::codec::timestamp;
use crate::db::error::Context;
use crate::db::keys::NewNodeKey;
use crate::db::{nodes, DbError, Handle};

/// A key waiting for approval.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingKey {
    /// The node (hostname) it asks for.
    pub node: NodeId,
    /// The key.
    pub key: NewNodeKey,
    /// Id of the bootstrap token the request carried.
    pub token_id: Option<String>,
    /// When it was (last) requested.
    pub requested_at: Timestamp,
}

#[derive(sqlx::FromRow)]
struct PendingRow {
    node: String,
    key_id: String,
    signing_key: String,
    encryption_key: String,
    machine_id: Option<String>,
    token_id: Option<String>,
    requested_at: i64,
}

impl From<PendingRow> for PendingKey {
    fn from(row: PendingRow) -> PendingKey {
        PendingKey {
            node: NodeId(row.node),
            key: NewNodeKey {
                key_id: KeyId(row.key_id),
                signing_key: row.signing_key,
                encryption_key: row.encryption_key,
                machine_id: row.machine_id,
            },
            token_id: row.token_id,
            requested_at: timestamp(row.requested_at),
        }
    }
}

macro_rules! pending_columns {
    () => {
        "n.name AS node, p.key_id, p.signing_key, p.encryption_key, p.machine_id, p.token_id, \
         p.requested_at"
    };
}

/// Records `key` as waiting for `node`, replacing any key already waiting for it.
/// [`DbError::AlreadyExists`] if this key id waits for another node.
pub async fn put(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    key: &NewNodeKey,
    token_id: Option<&str>,
    now: Timestamp,
) -> Result<(), DbError> {
    let mut connection = db.into().connection().await?;
    let node_id = nodes::id_of(&mut connection, node).await?;
    let stored = sqlx::query(
        "INSERT INTO pending_keys \
         (node_id, key_id, signing_key, encryption_key, machine_id, token_id, requested_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
         ON CONFLICT (node_id) DO UPDATE SET key_id = excluded.key_id, \
         signing_key = excluded.signing_key, encryption_key = excluded.encryption_key, \
         machine_id = excluded.machine_id, token_id = excluded.token_id, \
         requested_at = excluded.requested_at",
    )
    .bind(node_id)
    .bind(key.key_id.as_str())
    .bind(&key.signing_key)
    .bind(&key.encryption_key)
    .bind(key.machine_id.as_deref())
    .bind(token_id)
    .bind(now.0)
    .execute(&mut *connection)
    .await
    .context("storing pending key");
    match stored {
        Ok(_) => Ok(()),
        Err(error) if error.is_unique_violation() => Err(DbError::AlreadyExists {
            what: "pending key id",
            key: key.key_id.to_string(),
        }),
        Err(error) => Err(error),
    }
}

/// The key waiting for `node`, if any.
pub async fn get(db: impl Into<Handle<'_>>, node: &NodeId) -> Result<Option<PendingKey>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<PendingRow> = sqlx::query_as(concat!(
        "SELECT ",
        pending_columns!(),
        " FROM pending_keys p JOIN nodes n ON n.id = p.node_id WHERE n.name = ?1"
    ))
    .bind(node.as_str())
    .fetch_optional(&mut *connection)
    .await
    .context("reading pending key")?;
    Ok(row.map(PendingKey::from))
}

/// The waiting key with this id, whatever node it asks for.
pub async fn find_by_key_id(
    db: impl Into<Handle<'_>>,
    key_id: &KeyId,
) -> Result<Option<PendingKey>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<PendingRow> = sqlx::query_as(concat!(
        "SELECT ",
        pending_columns!(),
        " FROM pending_keys p JOIN nodes n ON n.id = p.node_id WHERE p.key_id = ?1"
    ))
    .bind(key_id.as_str())
    .fetch_optional(&mut *connection)
    .await
    .context("reading pending key")?;
    Ok(row.map(PendingKey::from))
}

/// Removes and returns the key waiting for `node`.
pub async fn take(db: impl Into<Handle<'_>>, node: &NodeId) -> Result<Option<PendingKey>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<PendingRow> = sqlx::query_as(concat!(
        "SELECT ",
        pending_columns!(),
        " FROM pending_keys p JOIN nodes n ON n.id = p.node_id WHERE n.name = ?1"
    ))
    .bind(node.as_str())
    .fetch_optional(&mut *connection)
    .await
    .context("reading pending key")?;
    if row.is_some() {
        sqlx::query(
            "DELETE FROM pending_keys WHERE node_id = (SELECT id FROM nodes WHERE name = ?1)",
        )
        .bind(node.as_str())
        .execute(&mut *connection)
        .await
        .context("removing pending key")?;
    }
    Ok(row.map(PendingKey::from))
}

/// Every waiting key, oldest request first.
pub async fn list(db: impl Into<Handle<'_>>) -> Result<Vec<PendingKey>, DbError> {
    let mut connection = db.into().connection().await?;
    let rows: Vec<PendingRow> = sqlx::query_as(concat!(
        "SELECT ",
        pending_columns!(),
        " FROM pending_keys p JOIN nodes n ON n.id = p.node_id ORDER BY p.requested_at, n.name"
    ))
    .fetch_all(&mut *connection)
    .await
    .context("listing pending keys")?;
    Ok(rows.into_iter().map(PendingKey::from).collect())
}
