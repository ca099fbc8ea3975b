//! Read queries only the UI needs: the fleet with each node's last run and current compile
//! failure (one statement, no N+1), run outcomes per day, failures and flapping resources
//! across the fleet. The per-table queries the API shares live in [`crate::db`].
//!
//! "A node's last run" is the newest by `(started_at, id)` through the `runs_by_node_time`
//! index; events of a run are read through `UNIQUE (run_id, seq)`.

use sqlx::Row;
use steward_protocol::{EnrollmentStatus, RunId, RunStatus, Serial, Timestamp};

use crate::db::{Db, DbError};
use crate::ui::parse_run_status;

fn query_error(context: &'static str) -> impl FnOnce(sqlx::Error) -> DbError {
    move |source| DbError::Query { context, source }
}

fn enrollment_status(text: &str) -> EnrollmentStatus {
    match text {
        "approved" => EnrollmentStatus::Approved,
        "revoked" => EnrollmentStatus::Revoked,
        "quarantined" => EnrollmentStatus::Quarantined,
        _ => EnrollmentStatus::Pending,
    }
}

/// A node's last run, in brief.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    /// Run id.
    pub run_id: RunId,
    /// Outcome.
    pub status: RunStatus,
    /// Start (agent's clock).
    pub started_at: Timestamp,
    /// Received (server's clock).
    pub received_at: Timestamp,
    /// Duration.
    pub duration_ms: u64,
    /// Failed resources.
    pub failed: u32,
    /// Changed resources.
    pub changed: u32,
    /// Resources.
    pub resources: u32,
}

/// A node with what the fleet views show about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetNode {
    /// Hostname.
    pub name: String,
    /// Enrollment status.
    pub status: EnrollmentStatus,
    /// Host class (from its token).
    pub class: Option<String>,
    /// First enrollment.
    pub created_at: Timestamp,
    /// Last authenticated request.
    pub last_seen_at: Option<Timestamp>,
    /// Catalog serial served.
    pub catalog_serial: Option<Serial>,
    /// The last run.
    pub last_run: Option<LastRun>,
    /// The current compile failure's message and last time.
    pub compile_failure: Option<(String, Timestamp)>,
    /// A new key waits for approval (re-enrollment).
    pub pending_key: bool,
}

/// Every node (or the one named), by name, with its last run and current compile failure.
pub async fn fleet(db: &Db, only: Option<&str>) -> Result<Vec<FleetNode>, DbError> {
    let rows = sqlx::query(
        "SELECT n.name, n.status, n.class, n.created_at, n.last_seen_at, n.catalog_serial, \
                r.uuid, r.status AS run_status, r.started_at, r.received_at, r.duration_ms, \
                r.total_failed, r.total_changed, r.total_resources, \
                cf.message AS failure_message, cf.last_at AS failure_at, \
                EXISTS (SELECT 1 FROM pending_keys pk WHERE pk.node_id = n.id) AS pending_key \
         FROM nodes n \
         LEFT JOIN runs r ON r.id = (SELECT r2.id FROM runs r2 WHERE r2.node_id = n.id \
                                     ORDER BY r2.started_at DESC, r2.id DESC LIMIT 1) \
         LEFT JOIN compile_failures cf ON cf.node_id = n.id AND cf.resolved_at IS NULL \
         WHERE ?1 IS NULL OR n.name = ?1 \
         ORDER BY n.name",
    )
    .bind(only)
    .fetch_all(db.pool())
    .await
    .map_err(query_error("listing the fleet"))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let uuid: Option<String> = row.get("uuid");
            let last_run = uuid.map(|uuid| LastRun {
                run_id: RunId(uuid),
                status: parse_run_status(row.get::<String, _>("run_status").as_str())
                    .unwrap_or(RunStatus::Error),
                started_at: Timestamp(row.get("started_at")),
                received_at: Timestamp(row.get("received_at")),
                duration_ms: u64::try_from(row.get::<i64, _>("duration_ms")).unwrap_or(0),
                failed: u32::try_from(row.get::<i64, _>("total_failed")).unwrap_or(0),
                changed: u32::try_from(row.get::<i64, _>("total_changed")).unwrap_or(0),
                resources: u32::try_from(row.get::<i64, _>("total_resources")).unwrap_or(0),
            });
            let failure: Option<String> = row.get("failure_message");
            FleetNode {
                name: row.get("name"),
                status: enrollment_status(row.get::<String, _>("status").as_str()),
                class: row.get("class"),
                created_at: Timestamp(row.get("created_at")),
                last_seen_at: row.get::<Option<i64>, _>("last_seen_at").map(Timestamp),
                catalog_serial: row
                    .get::<Option<i64>, _>("catalog_serial")
                    .and_then(|serial| u64::try_from(serial).ok())
                    .map(Serial),
                last_run,
                compile_failure: failure.map(|message| (message, Timestamp(row.get("failure_at")))),
                pending_key: row.get::<bool, _>("pending_key"),
            }
        })
        .collect())
}

/// Runs of one day and outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct DayOutcome {
    /// Days since the epoch (UTC).
    pub day: i64,
    /// Outcome.
    pub status: RunStatus,
    /// Runs.
    pub runs: u64,
    /// Mean duration.
    pub mean_duration_ms: f64,
    /// Longest duration.
    pub max_duration_ms: u64,
}

/// Runs per day and outcome since `since` (by start time), optionally of one node.
pub async fn outcomes_per_day(
    db: &Db,
    since: Timestamp,
    node: Option<&str>,
) -> Result<Vec<DayOutcome>, DbError> {
    let rows = sqlx::query(
        "SELECT r.started_at / 86400 AS day, r.status, count(*) AS runs, \
                avg(r.duration_ms) AS mean_ms, max(r.duration_ms) AS max_ms \
         FROM runs r \
         WHERE r.started_at >= ?1 \
           AND (?2 IS NULL OR r.node_id = (SELECT id FROM nodes WHERE name = ?2)) \
         GROUP BY day, r.status",
    )
    .bind(since.0)
    .bind(node)
    .fetch_all(db.pool())
    .await
    .map_err(query_error("counting runs per day"))?;
    Ok(rows
        .into_iter()
        .filter_map(|row| {
            Some(DayOutcome {
                day: row.get("day"),
                status: parse_run_status(row.get::<String, _>("status").as_str())?,
                runs: u64::try_from(row.get::<i64, _>("runs")).unwrap_or(0),
                mean_duration_ms: row.get::<f64, _>("mean_ms"),
                max_duration_ms: u64::try_from(row.get::<i64, _>("max_ms")).unwrap_or(0),
            })
        })
        .collect())
}

/// A failed resource in a node's last run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentFailure {
    /// Node.
    pub node: String,
    /// The run.
    pub run_id: RunId,
    /// Its start.
    pub started_at: Timestamp,
    /// Resource id.
    pub resource: String,
    /// The agent's message.
    pub message: Option<String>,
}

/// Every failed resource of every node's last run, by resource then node.
pub async fn current_failures(db: &Db) -> Result<Vec<CurrentFailure>, DbError> {
    let rows = sqlx::query(
        "SELECT n.name, r.uuid, r.started_at, e.resource, e.message \
         FROM nodes n \
         JOIN runs r ON r.id = (SELECT r2.id FROM runs r2 WHERE r2.node_id = n.id \
                                ORDER BY r2.started_at DESC, r2.id DESC LIMIT 1) \
         JOIN resource_events e ON e.run_id = r.id AND e.status = 'failed' \
         ORDER BY e.resource, n.name",
    )
    .fetch_all(db.pool())
    .await
    .map_err(query_error("listing current failures"))?;
    Ok(rows
        .into_iter()
        .map(|row| CurrentFailure {
            node: row.get("name"),
            run_id: RunId(row.get("uuid")),
            started_at: Timestamp(row.get("started_at")),
            resource: row.get("resource"),
            message: row.get("message"),
        })
        .collect())
}

/// A resource's failures over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureHistory {
    /// Resource id.
    pub resource: String,
    /// Nodes it failed on.
    pub nodes: u64,
    /// Failed events.
    pub events: u64,
    /// First failure in the period.
    pub first_at: Timestamp,
    /// Last failure.
    pub last_at: Timestamp,
}

/// Failed resources since `since`, most widespread first (index
/// `resource_events_by_status_time`).
pub async fn failure_history(
    db: &Db,
    since: Timestamp,
    limit: u32,
) -> Result<Vec<FailureHistory>, DbError> {
    let rows = sqlx::query(
        "SELECT e.resource, count(DISTINCT e.node_id) AS nodes, count(*) AS events, \
                min(e.run_started_at) AS first_at, max(e.run_started_at) AS last_at \
         FROM resource_events e \
         WHERE e.status = 'failed' AND e.run_started_at >= ?1 \
         GROUP BY e.resource ORDER BY nodes DESC, events DESC, e.resource LIMIT ?2",
    )
    .bind(since.0)
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await
    .map_err(query_error("listing failure history"))?;
    Ok(rows
        .into_iter()
        .map(|row| FailureHistory {
            resource: row.get("resource"),
            nodes: u64::try_from(row.get::<i64, _>("nodes")).unwrap_or(0),
            events: u64::try_from(row.get::<i64, _>("events")).unwrap_or(0),
            first_at: Timestamp(row.get("first_at")),
            last_at: Timestamp(row.get("last_at")),
        })
        .collect())
}

/// A resource that changed in each of a node's last runs (not idempotent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Flapping {
    /// Node.
    pub node: String,
    /// Resource id.
    pub resource: String,
    /// How many of the last runs changed it (all of them).
    pub runs: u32,
}

/// Resources changed in each of the last `runs` real (not noop) runs of their node, among runs
/// started since `since`; of one node or of the fleet. Only nodes whose last runs all changed
/// something (the runs' own totals) have their events read.
pub async fn flapping(
    db: &Db,
    runs: u32,
    since: Timestamp,
    node: Option<&str>,
) -> Result<Vec<Flapping>, DbError> {
    let rows = sqlx::query(
        "WITH ranked AS ( \
             SELECT r.id, r.node_id, r.total_changed, row_number() OVER ( \
                 PARTITION BY r.node_id ORDER BY r.started_at DESC, r.id DESC) AS position \
             FROM runs r \
             WHERE r.noop = 0 AND r.started_at >= ?2 \
               AND (?3 IS NULL OR r.node_id = (SELECT id FROM nodes WHERE name = ?3)) \
         ), \
         recent AS (SELECT id, node_id, total_changed FROM ranked WHERE position <= ?1), \
         candidates AS ( \
             SELECT node_id FROM recent \
             GROUP BY node_id HAVING count(*) = ?1 AND min(total_changed) > 0 \
         ) \
         SELECT n.name, e.resource, count(*) AS changed \
         FROM recent \
         JOIN candidates c ON c.node_id = recent.node_id \
         JOIN resource_events e ON e.run_id = recent.id AND e.status = 'changed' \
         JOIN nodes n ON n.id = recent.node_id \
         GROUP BY recent.node_id, e.resource HAVING count(*) >= ?1 \
         ORDER BY n.name, e.resource",
    )
    .bind(i64::from(runs))
    .bind(since.0)
    .bind(node)
    .fetch_all(db.pool())
    .await
    .map_err(query_error("listing flapping resources"))?;
    Ok(rows
        .into_iter()
        .map(|row| Flapping {
            node: row.get("name"),
            resource: row.get("resource"),
            runs: u32::try_from(row.get::<i64, _>("changed")).unwrap_or(0),
        })
        .collect())
}

/// Failed and errored runs across the fleet, newest first.
pub async fn recent_failed_runs(
    db: &Db,
    limit: u32,
) -> Result<Vec<(String, RunId, RunStatus, Timestamp, u32, Option<String>)>, DbError> {
    let rows = sqlx::query(
        "SELECT n.name, r.uuid, r.status, r.started_at, r.total_failed, r.message FROM ( \
             SELECT * FROM (SELECT id FROM runs WHERE status = 'failed' \
                            ORDER BY started_at DESC, id DESC LIMIT ?1) \
             UNION ALL \
             SELECT * FROM (SELECT id FROM runs WHERE status = 'error' \
                            ORDER BY started_at DESC, id DESC LIMIT ?1) \
         ) picked JOIN runs r ON r.id = picked.id JOIN nodes n ON n.id = r.node_id \
         ORDER BY r.started_at DESC, r.id DESC LIMIT ?1",
    )
    .bind(i64::from(limit))
    .fetch_all(db.pool())
    .await
    .map_err(query_error("listing failed runs"))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.get("name"),
                RunId(row.get("uuid")),
                parse_run_status(row.get::<String, _>("status").as_str())
                    .unwrap_or(RunStatus::Error),
                Timestamp(row.get("started_at")),
                u32::try_from(row.get::<i64, _>("total_failed")).unwrap_or(0),
                row.get("message"),
            )
        })
        .collect())
}

/// The events of every approved node's last real (not noop) run whose resource id contains
/// one of `needles` (the people's names: a cheap superset of their resources, checked exactly
/// by the caller), in one statement: node, run, its start, resource, status, message.
pub async fn last_run_events_mentioning(
    db: &Db,
    needles: &[&str],
) -> Result<Vec<(String, RunId, Timestamp, String, String, Option<String>)>, DbError> {
    if needles.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "SELECT n.name, r.uuid, r.started_at, e.resource, e.status, e.message \
         FROM nodes n \
         JOIN runs r ON r.id = (SELECT r2.id FROM runs r2 WHERE r2.node_id = n.id \
                                AND r2.noop = 0 \
                                ORDER BY r2.started_at DESC, r2.id DESC LIMIT 1) \
         JOIN resource_events e ON e.run_id = r.id \
         WHERE n.status = 'approved' AND (0",
    );
    for needle in needles {
        query
            .push(" OR instr(e.resource, ")
            .push_bind(needle.to_string())
            .push(") > 0");
    }
    query.push(") ORDER BY n.name, e.seq");
    let rows = query
        .build()
        .fetch_all(db.pool())
        .await
        .map_err(query_error("reading the fleet's last resource events"))?;
    Ok(rows
        .into_iter()
        .map(|row| {
            (
                row.get("name"),
                RunId(row.get("uuid")),
                Timestamp(row.get("started_at")),
                row.get("resource"),
                row.get("status"),
                row.get("message"),
            )
        })
        .collect())
}
