//! `node_keys`: each node's public keys, with history. Re-enrollment revokes the old key (kept,
//! with its reason) and adds the new one; at most one key per node is active, which the schema
//! enforces (THREATS E3). Key ids are unique forever, so a revoked key can never come back.

use steward_protocol::{KeyId, NodeId, Timestamp};

use crate::db::codec::{optional_timestamp, timestamp};
use crate::db::error::Context;
use crate::db::nodes::{Node, NodeRow};
use crate::db::{nodes, DbError, Handle};

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeKey {
    /// The node it belongs to.
    pub node: NodeId,
    /// Fingerprint of `signing_key`.
    pub key_id: KeyId,
    /// ed25519 request-signing public key, base64.
    pub signing_key: String,
    /// X25519 public key for sealed secrets, base64.
    pub encryption_key: String,
    /// `/etc/machine-id` the host reported when it enrolled with this key.
    pub machine_id: Option<String>,
    /// When it was added.
    pub created_at: Timestamp,
    /// When it was revoked, if it was.
    pub revoked_at: Option<Timestamp>,
    /// Why (re-enrollment, admin revocation, cloned identity...).
    pub revoke_reason: Option<String>,
}

/// A key to add with [`add`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNodeKey {
    /// Fingerprint of `signing_key` (the caller computes it from the decoded key bytes).
    pub key_id: KeyId,
    /// ed25519 public key, base64.
    pub signing_key: String,
    /// X25519 public key, base64.
    pub encryption_key: String,
    /// `/etc/machine-id` sent with the enrollment.
    pub machine_id: Option<String>,
}

#[derive(sqlx::FromRow)]
struct KeyRow {
    node: String,
    key_id: String,
    signing_key: String,
    encryption_key: String,
    machine_id: Option<String>,
    created_at: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
}

impl From<KeyRow> for NodeKey {
    fn from(row: KeyRow) -> NodeKey {
        NodeKey {
            node: NodeId(row.node),
            key_id: KeyId(row.key_id),
            signing_key: row.signing_key,
            encryption_key: row.encryption_key,
            machine_id: row.machine_id,
            created_at: timestamp(row.created_at),
            revoked_at: optional_timestamp(row.revoked_at),
            revoke_reason: row.revoke_reason,
        }
    }
}

macro_rules! key_columns {
    () => {
        "n.name AS node, k.key_id, k.signing_key, k.encryption_key, k.machine_id, k.created_at, \
         k.revoked_at, k.revoke_reason"
    };
}

/// Adds an active key to `node`. Fails with [`DbError::AlreadyExists`] if the node still has an
/// active key (revoke it first, in the same transaction: [`revoke_all_for_node`]) or if this key
/// id was ever used before.
pub async fn add(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    key: &NewNodeKey,
    now: Timestamp,
) -> Result<(), DbError> {
    let mut connection = db.into().connection().await?;
    let node_id = nodes::id_of(&mut connection, node).await?;
    let inserted = sqlx::query(
        "INSERT INTO node_keys \
         (node_id, key_id, signing_key, encryption_key, machine_id, created_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )
    .bind(node_id)
    .bind(key.key_id.as_str())
    .bind(&key.signing_key)
    .bind(&key.encryption_key)
    .bind(key.machine_id.as_deref())
    .bind(now.0)
    .execute(&mut *connection)
    .await
    .context("adding node key");
    match inserted {
        Ok(_) => Ok(()),
        Err(error) if error.is_unique_violation() => Err(DbError::AlreadyExists {
            what: "active key or key id for node",
            key: node.to_string(),
        }),
        Err(error) => Err(error),
    }
}

/// Records `key` in `node`'s key history as already revoked with `reason` (a waiting key an
/// admin rejected), so that the same key can never enroll again ([`ever_used`]).
pub async fn add_revoked(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    key: &NewNodeKey,
    reason: &str,
    now: Timestamp,
) -> Result<(), DbError> {
    let mut connection = db.into().connection().await?;
    let node_id = nodes::id_of(&mut connection, node).await?;
    sqlx::query(
        "INSERT INTO node_keys (node_id, key_id, signing_key, encryption_key, machine_id, \
         created_at, revoked_at, revoke_reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7)",
    )
    .bind(node_id)
    .bind(key.key_id.as_str())
    .bind(&key.signing_key)
    .bind(&key.encryption_key)
    .bind(key.machine_id.as_deref())
    .bind(now.0)
    .bind(reason)
    .execute(&mut *connection)
    .await
    .context("recording a rejected node key")?;
    Ok(())
}

/// Revokes every active key of `node` with `reason`. Returns how many were revoked.
pub async fn revoke_all_for_node(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    reason: &str,
    now: Timestamp,
) -> Result<u64, DbError> {
    let mut connection = db.into().connection().await?;
    let node_id = nodes::id_of(&mut connection, node).await?;
    let revoked = sqlx::query(
        "UPDATE node_keys SET revoked_at = ?2, revoke_reason = ?3 \
         WHERE node_id = ?1 AND revoked_at IS NULL",
    )
    .bind(node_id)
    .bind(now.0)
    .bind(reason)
    .execute(&mut *connection)
    .await
    .context("revoking node keys")?;
    Ok(revoked.rows_affected())
}

/// The active key with this id, if there is one (revoked keys are not returned).
pub async fn find_active_by_key_id(
    db: impl Into<Handle<'_>>,
    key_id: &KeyId,
) -> Result<Option<NodeKey>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<KeyRow> = sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM node_keys k JOIN nodes n ON n.id = k.node_id \
         WHERE k.key_id = ?1 AND k.revoked_at IS NULL"
    ))
    .bind(key_id.as_str())
    .fetch_optional(&mut *connection)
    .await
    .context("reading node key")?;
    Ok(row.map(NodeKey::from))
}

#[derive(sqlx::FromRow)]
struct KeyAndNodeRow {
    key_id: String,
    signing_key: String,
    encryption_key: String,
    key_machine_id: Option<String>,
    key_created_at: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
    #[sqlx(flatten)]
    node: NodeRow,
}

/// The active key with this id and its node, read together: the one query behind every signed
/// agent request. A revoked key finds nothing (THREATS E5); the caller checks the node's
/// status.
pub async fn find_active_with_node(
    db: impl Into<Handle<'_>>,
    key_id: &KeyId,
) -> Result<Option<(NodeKey, Node)>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<KeyAndNodeRow> = sqlx::query_as(
        "SELECT k.key_id, k.signing_key, k.encryption_key, k.machine_id AS key_machine_id, \
         k.created_at AS key_created_at, k.revoked_at, k.revoke_reason, \
         n.name, n.status, n.class, n.created_at, n.approved_at, n.last_seen_at, n.machine_id, \
         n.catalog_serial, n.catalog_digest, n.run_now_requested_at \
         FROM node_keys k JOIN nodes n ON n.id = k.node_id \
         WHERE k.key_id = ?1 AND k.revoked_at IS NULL",
    )
    .bind(key_id.as_str())
    .fetch_optional(&mut *connection)
    .await
    .context("reading node key and node")?;
    let Some(row) = row else {
        return Ok(None);
    };
    let node = row.node.into_node()?;
    let key = NodeKey {
        node: node.name.clone(),
        key_id: KeyId(row.key_id),
        signing_key: row.signing_key,
        encryption_key: row.encryption_key,
        machine_id: row.key_machine_id,
        created_at: timestamp(row.key_created_at),
        revoked_at: optional_timestamp(row.revoked_at),
        revoke_reason: row.revoke_reason,
    };
    Ok(Some((key, node)))
}

/// Every key `node` ever had, newest first.
pub async fn history(db: impl Into<Handle<'_>>, node: &NodeId) -> Result<Vec<NodeKey>, DbError> {
    let mut connection = db.into().connection().await?;
    let rows: Vec<KeyRow> = sqlx::query_as(concat!(
        "SELECT ",
        key_columns!(),
        " FROM node_keys k JOIN nodes n ON n.id = k.node_id \
         WHERE n.name = ?1 ORDER BY k.created_at DESC, k.id DESC"
    ))
    .bind(node.as_str())
    .fetch_all(&mut *connection)
    .await
    .context("reading key history")?;
    Ok(rows.into_iter().map(NodeKey::from).collect())
}

/// Whether this key id was ever stored, active or revoked (key ids are unique forever, so a
/// revoked key can never be enrolled again).
pub async fn ever_used(db: impl Into<Handle<'_>>, key_id: &KeyId) -> Result<bool, DbError> {
    let mut connection = db.into().connection().await?;
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM node_keys WHERE key_id = ?1")
        .bind(key_id.as_str())
        .fetch_optional(&mut *connection)
        .await
        .context("looking up key id")?;
    Ok(found.is_some())
}
