//! Sessions of local admin logins and the failed-login record, in SQLite (`ui_sessions`,
//! `ui_login_failures`, migration 0003).
//!
//! A session id is 32 random bytes, sent to the browser as hex in the `__Host-` cookie and
//! stored only as its SHA-256, so a copy of the database opens no session. A session is checked
//! on every request against its idle and absolute timeouts; an expired one is deleted then.

use sha2::{Digest, Sha256};
use sqlx::Row;
use steward_protocol::Timestamp;

use crate::config::UiSettings;
use crate::db::{Context as _, Db, DbError};

/// How stale `last_seen_at` may get before a request updates it (keeps reads read-only).
const TOUCH_RESOLUTION_SECS: i64 = 30;

/// A live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Who logged in (audit actor).
    pub actor: String,
    /// The synchronizer token of its forms.
    pub csrf_token: String,
    /// Login time.
    pub created_at: Timestamp,
    /// Last request.
    pub last_seen_at: Timestamp,
}

/// 32 random bytes as hex.
pub fn random_token() -> Result<String, DbError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|_| DbError::Invalid {
        what: "session id",
        detail: "the operating system gave no random bytes".into(),
    })?;
    Ok(hex::encode(bytes))
}

fn id_hash(cookie_value: &str) -> Vec<u8> {
    Sha256::digest(cookie_value.as_bytes()).to_vec()
}

/// Creates a session for `actor`; returns the cookie value and the session.
pub async fn create(db: &Db, actor: &str, now: Timestamp) -> Result<(String, Session), DbError> {
    let id = random_token()?;
    let csrf_token = random_token()?;
    sqlx::query(
        "INSERT INTO ui_sessions (id_hash, actor, csrf_token, created_at, last_seen_at) \
         VALUES (?1, ?2, ?3, ?4, ?4)",
    )
    .bind(id_hash(&id))
    .bind(actor)
    .bind(&csrf_token)
    .bind(now.0)
    .execute(db.pool())
    .await
    .context("creating ui session")?;
    Ok((
        id,
        Session {
            actor: actor.to_owned(),
            csrf_token,
            created_at: now,
            last_seen_at: now,
        },
    ))
}

/// The live session of a cookie value, touched at `now`; `None` for an unknown or expired one
/// (an expired one is deleted).
pub async fn find(
    db: &Db,
    cookie_value: &str,
    settings: &UiSettings,
    now: Timestamp,
) -> Result<Option<Session>, DbError> {
    if cookie_value.len() != 64 || !cookie_value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let hash = id_hash(cookie_value);
    let row = sqlx::query(
        "SELECT actor, csrf_token, created_at, last_seen_at FROM ui_sessions WHERE id_hash = ?1",
    )
    .bind(&hash)
    .fetch_optional(db.pool())
    .await
    .context("reading ui session")?;
    let Some(row) = row else {
        return Ok(None);
    };
    let session = Session {
        actor: row.get("actor"),
        csrf_token: row.get("csrf_token"),
        created_at: Timestamp(row.get("created_at")),
        last_seen_at: Timestamp(row.get("last_seen_at")),
    };
    let idle = i64::try_from(settings.session_idle.as_secs()).unwrap_or(i64::MAX);
    let max = i64::try_from(settings.session_max.as_secs()).unwrap_or(i64::MAX);
    if now.0 - session.last_seen_at.0 >= idle || now.0 - session.created_at.0 >= max {
        delete_hash(db, &hash).await?;
        return Ok(None);
    }
    if now.0 - session.last_seen_at.0 >= TOUCH_RESOLUTION_SECS {
        // Bookkeeping, like a node's last-seen time: no fsync needed.
        sqlx::query("UPDATE ui_sessions SET last_seen_at = ?2 WHERE id_hash = ?1")
            .bind(&hash)
            .bind(now.0)
            .execute(db.relaxed())
            .await
            .context("touching ui session")?;
    }
    Ok(Some(session))
}

/// Deletes the session of a cookie value (logout, or rotation at login).
pub async fn delete(db: &Db, cookie_value: &str) -> Result<(), DbError> {
    delete_hash(db, &id_hash(cookie_value)).await
}

async fn delete_hash(db: &Db, hash: &[u8]) -> Result<(), DbError> {
    sqlx::query("DELETE FROM ui_sessions WHERE id_hash = ?1")
        .bind(hash)
        .execute(db.pool())
        .await
        .context("deleting ui session")?;
    Ok(())
}

/// Deletes every expired session and failed login older than the window.
pub async fn prune(db: &Db, settings: &UiSettings, now: Timestamp) -> Result<(), DbError> {
    let idle = i64::try_from(settings.session_idle.as_secs()).unwrap_or(i64::MAX);
    let max = i64::try_from(settings.session_max.as_secs()).unwrap_or(i64::MAX);
    let window = i64::try_from(settings.login_window.as_secs()).unwrap_or(i64::MAX);
    sqlx::query("DELETE FROM ui_sessions WHERE last_seen_at <= ?1 OR created_at <= ?2")
        .bind(now.0.saturating_sub(idle))
        .bind(now.0.saturating_sub(max))
        .execute(db.pool())
        .await
        .context("pruning ui sessions")?;
    sqlx::query("DELETE FROM ui_login_failures WHERE at <= ?1")
        .bind(now.0.saturating_sub(window))
        .execute(db.pool())
        .await
        .context("pruning failed logins")?;
    Ok(())
}

/// Records a failed login from `source`.
pub async fn record_failure(db: &Db, source: &str, now: Timestamp) -> Result<(), DbError> {
    sqlx::query("INSERT INTO ui_login_failures (source, at) VALUES (?1, ?2)")
        .bind(source)
        .bind(now.0)
        .execute(db.pool())
        .await
        .context("recording a failed login")?;
    Ok(())
}

/// Failed logins within the window: from `source`, and from everywhere.
pub async fn failures(
    db: &Db,
    source: &str,
    settings: &UiSettings,
    now: Timestamp,
) -> Result<(u32, u32), DbError> {
    let window = i64::try_from(settings.login_window.as_secs()).unwrap_or(i64::MAX);
    let since = now.0.saturating_sub(window);
    let row = sqlx::query(
        "SELECT (SELECT count(*) FROM ui_login_failures WHERE source = ?1 AND at > ?2), \
                (SELECT count(*) FROM ui_login_failures WHERE at > ?2)",
    )
    .bind(source)
    .bind(since)
    .fetch_one(db.pool())
    .await
    .context("counting failed logins")?;
    let count = |i: usize| u32::try_from(row.get::<i64, _>(i)).unwrap_or(u32::MAX);
    Ok((count(0), count(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn count(db: &Db, table: &str) -> i64 {
        sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(db.pool())
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn prune_deletes_idle_and_too_old_sessions_and_old_failures_only() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("steward.db")).await.unwrap();
        let settings = UiSettings::default();
        let idle = i64::try_from(settings.session_idle.as_secs()).unwrap();
        let max = i64::try_from(settings.session_max.as_secs()).unwrap();
        let window = i64::try_from(settings.login_window.as_secs()).unwrap();
        let now = Timestamp(1_800_000_000);

        // Idle too long; alive; too old though touched just now.
        let (idle_cookie, _) = create(&db, "a", Timestamp(now.0 - idle)).await.unwrap();
        let (live_cookie, _) = create(&db, "b", Timestamp(now.0 - 10)).await.unwrap();
        let (old_cookie, _) = create(&db, "c", Timestamp(now.0 - max)).await.unwrap();
        sqlx::query("UPDATE ui_sessions SET last_seen_at = ?1 WHERE id_hash = ?2")
            .bind(now.0)
            .bind(id_hash(&old_cookie))
            .execute(db.pool())
            .await
            .unwrap();
        record_failure(&db, "198.51.100.7", Timestamp(now.0 - window))
            .await
            .unwrap();
        record_failure(&db, "198.51.100.7", Timestamp(now.0 - 1))
            .await
            .unwrap();

        prune(&db, &settings, now).await.unwrap();
        assert_eq!(count(&db, "ui_sessions").await, 1);
        assert_eq!(count(&db, "ui_login_failures").await, 1);
        assert!(find(&db, &live_cookie, &settings, now)
            .await
            .unwrap()
            .is_some());
        for gone in [idle_cookie, old_cookie] {
            assert!(find(&db, &gone, &settings, now).await.unwrap().is_none());
        }
        db.close().await;
    }
}
