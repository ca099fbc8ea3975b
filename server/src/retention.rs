//! Scheduled retention (`[retention]`): every `interval`, the runs received more than
//! `runs_max_age` ago are deleted with their events ([`Db::prune_runs_older_than`], batched so
//! report writers are never blocked for long), and the deletion is recorded in the audit log.
//! The first pass runs at start-up.

use std::time::Duration;

use tokio::task::JoinSet;

use crate::config::RetentionSettings;
use crate::db::audit::{self, NewAuditEntry};
use crate::db::{Db, DbError};
use crate::service;
use crate::state::AppState;
use steward_protocol::Timestamp;

/// Spawns the pruning task into `tasks` when retention is configured.
pub fn spawn(tasks: &mut JoinSet<()>, state: &AppState) {
    let Some(settings) = state.config.retention.clone() else {
        return;
    };
    let db = state.db.clone();
    tasks.spawn(async move {
        let mut interval = tokio::time::interval(settings.interval);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            match prune_once(&db, &settings, service::now()).await {
                Ok(0) => tracing::debug!("retention: no run to delete"),
                Ok(deleted) => tracing::info!(runs = deleted, "retention: old runs deleted"),
                Err(error) => tracing::warn!(error = %error, "retention: pruning runs failed"),
            }
        }
    });
}

/// One pass at `now`: deletes the runs received before `now - runs_max_age`. Returns how many.
pub async fn prune_once(
    db: &Db,
    settings: &RetentionSettings,
    now: Timestamp,
) -> Result<u64, DbError> {
    let cutoff = cutoff(now, settings.runs_max_age);
    let deleted = db
        .prune_runs_older_than(cutoff, settings.batch_size)
        .await?;
    if deleted > 0 {
        audit::record(
            db,
            &NewAuditEntry {
                at: now,
                actor: "system".into(),
                action: "retention.prune".into(),
                target: None,
                detail: Some(serde_json::json!({ "runs": deleted, "received_before": cutoff.0 })),
            },
        )
        .await?;
    }
    Ok(deleted)
}

fn cutoff(now: Timestamp, max_age: Duration) -> Timestamp {
    let age = i64::try_from(max_age.as_secs()).unwrap_or(i64::MAX);
    Timestamp(now.0.saturating_sub(age))
}
