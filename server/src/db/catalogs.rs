//! `catalogs`: the redacted copy of every catalog served, for diffs between serials, and the
//! node's current serial and digest (`nodes.catalog_serial`, `nodes.catalog_digest`).
//!
//! Must not: receive sealed or secret content. The caller stores the catalog with every
//! sensitive value already replaced by `<redacted>`. [`insert`] refuses a serial that is not
//! above the node's current one, so the stored serial is a durable, monotonic floor (THREATS R7).

use steward_protocol::{NodeId, Serial, Timestamp};

use crate::db::codec::{serial_from_i64, serial_to_i64, timestamp};
use crate::db::error::Context;
use crate::db::{begin_immediate, nodes, DbError, Handle};

/// A node's catalog as stored: what [`insert`] takes and [`latest`] / [`get`] return.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogRecord {
    /// The node it was compiled for.
    pub node: NodeId,
    /// Its serial: above the node's current one.
    pub serial: Serial,
    /// Digest of the signed payload (`steward_protocol::catalog_digest`).
    pub digest: String,
    /// When it was compiled.
    pub compiled_at: Timestamp,
    /// When agents stop accepting it.
    pub expires_at: Timestamp,
    /// Hash of the site it was compiled from.
    pub site_hash: String,
    /// The catalog as JSON, with every sensitive value redacted.
    pub redacted_json: String,
}

/// A stored catalog without its JSON, for lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSummary {
    /// Its serial.
    pub serial: Serial,
    /// Digest of the signed payload.
    pub digest: String,
    /// When it was compiled.
    pub compiled_at: Timestamp,
    /// When it expires.
    pub expires_at: Timestamp,
    /// Site hash.
    pub site_hash: String,
}

#[derive(sqlx::FromRow)]
struct CatalogRow {
    node: String,
    serial: i64,
    digest: String,
    compiled_at: i64,
    expires_at: i64,
    site_hash: String,
    redacted_json: String,
}

impl CatalogRow {
    fn into_catalog(self) -> Result<CatalogRecord, DbError> {
        Ok(CatalogRecord {
            node: NodeId(self.node),
            serial: serial_from_i64(self.serial, "catalogs.serial")?,
            digest: self.digest,
            compiled_at: timestamp(self.compiled_at),
            expires_at: timestamp(self.expires_at),
            site_hash: self.site_hash,
            redacted_json: self.redacted_json,
        })
    }
}

#[derive(sqlx::FromRow)]
struct SummaryRow {
    serial: i64,
    digest: String,
    compiled_at: i64,
    expires_at: i64,
    site_hash: String,
}

macro_rules! catalog_columns {
    () => {
        "n.name AS node, c.serial, c.digest, c.compiled_at, c.expires_at, c.site_hash, \
         c.redacted_json"
    };
}

/// The node's newest catalog (highest serial).
pub async fn latest(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
) -> Result<Option<CatalogRecord>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<CatalogRow> = sqlx::query_as(concat!(
        "SELECT ",
        catalog_columns!(),
        " FROM catalogs c JOIN nodes n ON n.id = c.node_id \
         WHERE n.name = ?1 ORDER BY c.serial DESC LIMIT 1"
    ))
    .bind(node.as_str())
    .fetch_optional(&mut *connection)
    .await
    .context("reading latest catalog")?;
    row.map(CatalogRow::into_catalog).transpose()
}

/// Stores a catalog and makes it the node's current one, in one transaction. Refuses
/// ([`DbError::SerialNotIncreasing`]) a serial not above the current one.
pub async fn insert(db: impl Into<Handle<'_>>, catalog: &CatalogRecord) -> Result<(), DbError> {
    let serial = serial_to_i64(catalog.serial)?;
    let mut connection = db.into().connection().await?;
    let mut tx = begin_immediate(&mut connection).await?;
    let current: Option<(i64, Option<i64>)> =
        sqlx::query_as("SELECT id, catalog_serial FROM nodes WHERE name = ?1")
            .bind(catalog.node.as_str())
            .fetch_optional(&mut *tx)
            .await
            .context("reading current catalog serial")?;
    let Some((node_id, current_serial)) = current else {
        return Err(nodes::not_found(&catalog.node));
    };
    let newest_stored: Option<i64> =
        sqlx::query_scalar("SELECT max(serial) FROM catalogs WHERE node_id = ?1")
            .bind(node_id)
            .fetch_one(&mut *tx)
            .await
            .context("reading latest catalog serial")?;
    if let Some(current) = current_serial.max(newest_stored) {
        if serial <= current {
            return Err(DbError::SerialNotIncreasing {
                node: catalog.node.clone(),
                serial: catalog.serial,
                current: serial_from_i64(current, "catalogs.serial")?,
            });
        }
    }
    sqlx::query(
        "INSERT INTO catalogs \
         (node_id, serial, digest, compiled_at, expires_at, site_hash, redacted_json) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(node_id)
    .bind(serial)
    .bind(&catalog.digest)
    .bind(catalog.compiled_at.0)
    .bind(catalog.expires_at.0)
    .bind(&catalog.site_hash)
    .bind(&catalog.redacted_json)
    .execute(&mut *tx)
    .await
    .context("storing catalog")?;
    sqlx::query("UPDATE nodes SET catalog_serial = ?2, catalog_digest = ?3 WHERE id = ?1")
        .bind(node_id)
        .bind(serial)
        .bind(&catalog.digest)
        .execute(&mut *tx)
        .await
        .context("updating current catalog")?;
    tx.commit().await.context("committing catalog")
}

/// A node whose serial floor [`rebase`] lowered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rebased {
    /// The node.
    pub node: NodeId,
    /// Its highest serial before (current or stored).
    pub from: Serial,
    /// Its current serial after: the highest record at or below the ceiling, if any.
    pub to: Option<Serial>,
    /// How many catalog records above the ceiling were dropped.
    pub dropped: u64,
    /// The highest serial above the ceiling the node reported applying, if any: its own
    /// clock ran ahead too, and it refuses the lower serials until it is reset.
    pub applied_above: Option<Serial>,
}

/// Drops every catalog record with a serial above `ceiling` and sets each affected node's
/// current serial to its highest remaining record (none: no floor), in one transaction; with
/// `apply` false, reports what it would do and changes nothing. The recovery after the
/// server's clock ran ahead (`steward-server serials rebase`): serials above `ceiling` (a day
/// past the right time) were refused by every host whose clock is right, so the floor they
/// set only strands the fleet. Agents still refuse any serial below the one they applied.
pub async fn rebase(
    db: impl Into<Handle<'_>>,
    ceiling: Serial,
    apply: bool,
) -> Result<Vec<Rebased>, DbError> {
    let ceiling = serial_to_i64(ceiling)?;
    let mut connection = db.into().connection().await?;
    let mut tx = begin_immediate(&mut connection).await?;
    let ahead: Vec<(i64, String, i64, i64, Option<i64>)> = sqlx::query_as(
        "SELECT n.id, n.name, \
         max(coalesce(n.catalog_serial, 0), \
             coalesce((SELECT max(serial) FROM catalogs c WHERE c.node_id = n.id), 0)), \
         (SELECT count(*) FROM catalogs c WHERE c.node_id = n.id AND c.serial > ?1), \
         (SELECT max(r.catalog_serial) FROM runs r \
          WHERE r.node_id = n.id AND r.catalog_serial > ?1) \
         FROM nodes n WHERE n.catalog_serial > ?1 \
         OR EXISTS (SELECT 1 FROM catalogs c WHERE c.node_id = n.id AND c.serial > ?1) \
         ORDER BY n.name",
    )
    .bind(ceiling)
    .fetch_all(&mut *tx)
    .await
    .context("reading serials above the ceiling")?;
    let mut rebased = Vec::with_capacity(ahead.len());
    for (node_id, name, from, dropped, applied_above) in ahead {
        sqlx::query("DELETE FROM catalogs WHERE node_id = ?1 AND serial > ?2")
            .bind(node_id)
            .bind(ceiling)
            .execute(&mut *tx)
            .await
            .context("dropping catalogs above the ceiling")?;
        let newest: Option<(i64, String)> = sqlx::query_as(
            "SELECT serial, digest FROM catalogs WHERE node_id = ?1 ORDER BY serial DESC LIMIT 1",
        )
        .bind(node_id)
        .fetch_optional(&mut *tx)
        .await
        .context("reading the newest remaining catalog")?;
        sqlx::query("UPDATE nodes SET catalog_serial = ?2, catalog_digest = ?3 WHERE id = ?1")
            .bind(node_id)
            .bind(newest.as_ref().map(|(serial, _)| *serial))
            .bind(newest.as_ref().map(|(_, digest)| digest.as_str()))
            .execute(&mut *tx)
            .await
            .context("lowering the node's serial floor")?;
        rebased.push(Rebased {
            node: NodeId(name),
            from: serial_from_i64(from, "catalogs.serial")?,
            to: newest
                .map(|(serial, _)| serial_from_i64(serial, "catalogs.serial"))
                .transpose()?,
            dropped: u64::try_from(dropped).unwrap_or(0),
            applied_above: applied_above
                .map(|serial| serial_from_i64(serial, "runs.catalog_serial"))
                .transpose()?,
        });
    }
    if apply {
        tx.commit().await.context("committing the rebase")?;
    } else {
        tx.rollback().await.context("rolling back the dry run")?;
    }
    Ok(rebased)
}

/// The node's catalog with this serial.
pub async fn get(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    serial: Serial,
) -> Result<Option<CatalogRecord>, DbError> {
    let serial = serial_to_i64(serial)?;
    let mut connection = db.into().connection().await?;
    let row: Option<CatalogRow> = sqlx::query_as(concat!(
        "SELECT ",
        catalog_columns!(),
        " FROM catalogs c JOIN nodes n ON n.id = c.node_id \
         WHERE n.name = ?1 AND c.serial = ?2"
    ))
    .bind(node.as_str())
    .bind(serial)
    .fetch_optional(&mut *connection)
    .await
    .context("reading catalog")?;
    row.map(CatalogRow::into_catalog).transpose()
}

/// The node's `limit` newest catalogs, without their JSON, newest first.
pub async fn list(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    limit: u32,
) -> Result<Vec<CatalogSummary>, DbError> {
    let mut connection = db.into().connection().await?;
    let rows: Vec<SummaryRow> = sqlx::query_as(
        "SELECT c.serial, c.digest, c.compiled_at, c.expires_at, c.site_hash \
         FROM catalogs c JOIN nodes n ON n.id = c.node_id \
         WHERE n.name = ?1 ORDER BY c.serial DESC LIMIT ?2",
    )
    .bind(node.as_str())
    .bind(i64::from(limit))
    .fetch_all(&mut *connection)
    .await
    .context("listing catalogs")?;
    rows.into_iter()
        .map(|row| {
            Ok(CatalogSummary {
                serial: serial_from_i64(row.serial, "catalogs.serial")?,
                digest: row.digest,
                compiled_at: timestamp(row.compiled_at),
                expires_at: timestamp(row.expires_at),
                site_hash: row.site_hash,
            })
        })
        .collect()
}
