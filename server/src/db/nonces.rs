//! `request_nonces`: the persisted copy of the replay memory of signed agent requests.
//!
//! The server checks nonces in memory ([`crate::service::nonces::NonceStore`]) and writes them
//! here in batches ([`record_batch`]), so that a restart reloads them ([`load_since`]) and still
//! refuses a replay within the window. A nonce is unique per key; `seen_at` is the server's
//! clock when it was first accepted, and rows older than the window are pruned with each batch.

use sqlx::{QueryBuilder, Sqlite};
use steward_protocol::{KeyId, Timestamp};

use crate::db::error::Context;
use crate::db::{begin_immediate, DbError, Handle};

/// Rows per multi-row `INSERT` (3 parameters each).
const ROWS_PER_STATEMENT: usize = 300;

/// One accepted nonce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceRecord {
    /// The key that signed the request.
    pub key_id: KeyId,
    /// The request's nonce (1 to 128 bytes).
    pub nonce: String,
    /// When the server accepted it (server's clock).
    pub seen_at: Timestamp,
}

/// Stores `records` (a nonce already stored for the key is left as it is) and deletes the rows
/// seen before `prune_before`, in one transaction.
pub async fn record_batch(
    db: impl Into<Handle<'_>>,
    records: &[NonceRecord],
    prune_before: Timestamp,
) -> Result<(), DbError> {
    if let Some(bad) = records
        .iter()
        .find(|record| record.nonce.is_empty() || record.nonce.len() > 128)
    {
        return Err(DbError::Invalid {
            what: "request nonce",
            detail: format!("expected 1 to 128 bytes, got {}", bad.nonce.len()),
        });
    }
    let mut connection = db.into().connection().await?;
    let mut tx = begin_immediate(&mut connection).await?;
    sqlx::query("DELETE FROM request_nonces WHERE seen_at < ?1")
        .bind(prune_before.0)
        .execute(&mut *tx)
        .await
        .context("pruning request nonces")?;
    for chunk in records.chunks(ROWS_PER_STATEMENT) {
        let mut insert =
            QueryBuilder::<Sqlite>::new("INSERT INTO request_nonces (key_id, nonce, seen_at) ");
        insert.push_values(chunk, |mut row, record| {
            row.push_bind(record.key_id.as_str())
                .push_bind(record.nonce.as_str())
                .push_bind(record.seen_at.0);
        });
        insert.push(" ON CONFLICT (key_id, nonce) DO NOTHING");
        // Only full chunks have a fixed text: a statement per batch size would crowd the
        // connection's statement cache with large prepared statements.
        insert
            .build()
            .persistent(chunk.len() == ROWS_PER_STATEMENT)
            .execute(&mut *tx)
            .await
            .context("recording request nonces")?;
    }
    tx.commit().await.context("committing request nonces")
}

/// Every nonce seen at or after `since`, oldest first.
pub async fn load_since(
    db: impl Into<Handle<'_>>,
    since: Timestamp,
) -> Result<Vec<NonceRecord>, DbError> {
    let mut connection = db.into().connection().await?;
    let rows: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT key_id, nonce, seen_at FROM request_nonces WHERE seen_at >= ?1 ORDER BY seen_at",
    )
    .bind(since.0)
    .fetch_all(&mut *connection)
    .await
    .context("loading request nonces")?;
    Ok(rows
        .into_iter()
        .map(|(key_id, nonce, seen_at)| NonceRecord {
            key_id: KeyId(key_id),
            nonce,
            seen_at: Timestamp(seen_at),
        })
        .collect())
}
