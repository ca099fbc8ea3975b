//! `request_nonces`: replay protection for signed agent requests. A nonce is accepted once per
//! key; entries older than the replay window are pruned as new ones arrive.

use steward_protocol::{KeyId, Timestamp};

use crate::db::error::Context;
use crate::db::{begin_immediate, DbError, Handle};

/// Records `nonce` for `key_id` at `now`. Returns `true` if it is new (accept the request),
/// `false` if it was seen before (a replay: refuse it).
///
/// `window_secs` is the clock skew the request check allows either way
/// (`|request timestamp - now| <= window_secs`). A request stamped up to `window_secs` ahead is
/// still fresh until `window_secs` after that, so nonces are kept for `2 * window_secs` after
/// they were first seen; older ones are deleted here, in the same transaction.
pub async fn check_and_record(
    db: impl Into<Handle<'_>>,
    key_id: &KeyId,
    nonce: &str,
    now: Timestamp,
    window_secs: i64,
) -> Result<bool, DbError> {
    if nonce.is_empty() || nonce.len() > 128 {
        return Err(DbError::Invalid {
            what: "request nonce",
            detail: "expected 1 to 128 bytes".into(),
        });
    }
    let mut connection = db.into().connection().await?;
    let mut tx = begin_immediate(&mut connection).await?;
    sqlx::query("DELETE FROM request_nonces WHERE seen_at < ?1")
        .bind(now.plus_secs(window_secs.saturating_mul(-2)).0)
        .execute(&mut *tx)
        .await
        .context("pruning request nonces")?;
    let inserted = sqlx::query(
        "INSERT INTO request_nonces (key_id, nonce, seen_at) VALUES (?1, ?2, ?3) \
         ON CONFLICT (key_id, nonce) DO NOTHING",
    )
    .bind(key_id.as_str())
    .bind(nonce)
    .bind(now.0)
    .execute(&mut *tx)
    .await
    .context("recording request nonce")?;
    tx.commit().await.context("committing request nonce")?;
    Ok(inserted.rows_affected() == 1)
}
