//! Read queries only the UI needs: the fleet with each node's last run and current compile
//! failure (one statement, no N+1), pending nodes with their keys, run outcomes per day,
//! failures and flapping resources across the fleet. The per-table queries the API shares
//! live in [`crate::db`].
//!
//! "A node's last run" is the newest by `(started_at, id)` through the `runs_by_node_time`
//! index; events of a run are read through `UNIQUE (run_id, seq)`.
//!
//! The schema has no `sqlite_stat1` (nobody runs `ANALYZE`), so the planner guesses
//! selectivities. Queries that must walk the fleet node by node (each node's last runs, then
//! their events) say so with `CROSS JOIN`, which SQLite never reorders: left to itself, the
//! planner drove "current failures" from `resource_events_by_status_time` (every failed event
//! ever) with a scan of `nodes` and a correlated subquery per pair, 1,000 × 1,000 subqueries
//! on the UI benchmark (`cargo bench -p steward-server --bench ui`), about two seconds.

use sqlx::Row;
use steward_protocol::{EnrollmentStatus, RunId, RunStatus, Serial, Timestamp};

use crate::db::codec::parse_enrollment_status;
use crate::db::{Context as _, Db, DbError};
use crate::ui::parse_run_status;

/// A node's last run, in brief.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRun {
    /// Run id.
    pub run_id: RunId,
    /// Outcome.
    pub status: RunStatus,
    /// Received (server's clock).
    pub received_at: Timestamp,
    /// Failed resources.
    pub failed: u32,
    /// Changed resources.
    pub changed: u32,
    /// Resources.
    pub resources: u32,
    /// Resources left as found on purpose (a notice, not a failure).
    pub kept: u32,
    /// Changes waiting for a condition (a notice, not a failure).
    pub deferred: u32,
    /// Events carrying a drift notice.
    pub drift: u32,
}

impl LastRun {
    /// Kept, deferred and drift notices together.
    pub fn notices(&self) -> u32 {
        self.kept + self.deferred + self.drift
    }
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
    /// Catalog serial served.
    pub catalog_serial: Option<Serial>,
    /// The last run.
    pub last_run: Option<LastRun>,
    /// The current compile failure's message.
    pub compile_failure: Option<String>,
    /// A new key waits for approval (re-enrollment).
    pub pending_key: bool,
}

/// Every node (or the one named), by name, with its last run and current compile failure.
pub async fn fleet(db: &Db, only: Option<&str>) -> Result<Vec<FleetNode>, DbError> {
    let rows = sqlx::query(
        "SELECT n.name, n.status, n.class, n.catalog_serial, \
                r.uuid, r.status AS run_status, r.received_at, \
                r.total_failed, r.total_changed, r.total_resources, \
                r.total_kept, r.total_deferred, r.total_drift, \
                cf.message AS failure_message, \
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
    .context("listing the fleet")?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let uuid: Option<String> = row.get("uuid");
            let last_run = uuid.map(|uuid| LastRun {
                run_id: RunId(uuid),
                status: parse_run_status(row.get::<String, _>("run_status").as_str())
                    .unwrap_or(RunStatus::Error),
                received_at: Timestamp(row.get("received_at")),
                failed: u32::try_from(row.get::<i64, _>("total_failed")).unwrap_or(0),
                changed: u32::try_from(row.get::<i64, _>("total_changed")).unwrap_or(0),
                resources: u32::try_from(row.get::<i64, _>("total_resources")).unwrap_or(0),
                kept: u32::try_from(row.get::<i64, _>("total_kept")).unwrap_or(0),
                deferred: u32::try_from(row.get::<i64, _>("total_deferred")).unwrap_or(0),
                drift: u32::try_from(row.get::<i64, _>("total_drift")).unwrap_or(0),
            });
            FleetNode {
                name: row.get("name"),
                status: parse_enrollment_status(row.get::<String, _>("status").as_str())
                    .unwrap_or(EnrollmentStatus::Pending),
                class: row.get("class"),
                catalog_serial: row
                    .get::<Option<i64>, _>("catalog_serial")
                    .and_then(|serial| u64::try_from(serial).ok())
                    .map(Serial),
                last_run,
                compile_failure: row.get("failure_message"),
                pending_key: row.get::<bool, _>("pending_key"),
            }
        })
        .collect())
}

/// A node waiting for an admin's approval, with its active key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingNode {
    /// Hostname.
    pub name: String,
    /// Its machine id.
    pub machine_id: Option<String>,
    /// When it asked to enroll.
    pub created_at: Timestamp,
    /// Its active key's id.
    pub key_id: Option<String>,
}

/// Every pending node with its active key, by name, in one statement (the one active key of
/// a node is `node_keys_one_active_per_node`).
pub async fn pending_nodes(db: &Db) -> Result<Vec<PendingNode>, DbError> {
    let rows = sqlx::query(
        "SELECT n.name, n.machine_id, n.created_at, k.key_id \
         FROM nodes n \
         LEFT JOIN node_keys k ON k.node_id = n.id AND k.revoked_at IS NULL \
         WHERE n.status = 'pending' \
         ORDER BY n.name",
    )
    .fetch_all(db.pool())
    .await
    .context("listing pending nodes")?;
    Ok(rows
        .into_iter()
        .map(|row| PendingNode {
            name: row.get("name"),
            machine_id: row.get("machine_id"),
            created_at: Timestamp(row.get("created_at")),
            key_id: row.get("key_id"),
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
///
/// The period's runs are found in `runs_by_time` and then read in rowid (arrival) order, each
/// table page once, rather than in start-time order: on the UI benchmark the same 47,000 runs
/// take about 25 ms on every pooled connection this way, against 20 to 80 ms depending on the
/// connection (one of them re-reads pages it has just read) the direct way.
pub async fn outcomes_per_day(
    db: &Db,
    since: Timestamp,
    node: Option<&str>,
) -> Result<Vec<DayOutcome>, DbError> {
    let rows = sqlx::query(
        "SELECT r.started_at / 86400 AS day, r.status, count(*) AS runs, \
                avg(r.duration_ms) AS mean_ms, max(r.duration_ms) AS max_ms \
         FROM runs r \
         WHERE r.id IN (SELECT r0.id FROM runs r0 WHERE r0.started_at >= ?1) \
           AND (?2 IS NULL OR r.node_id = (SELECT id FROM nodes WHERE name = ?2)) \
         GROUP BY day, r.status",
    )
    .bind(since.0)
    .bind(node)
    .fetch_all(db.pool())
    .await
    .context("counting runs per day")?;
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
///
/// Node by node (`CROSS JOIN`): its last run through `runs_by_node_time`, and that run's
/// events only when its totals count a failure (the server refuses a report whose totals do
/// not match its events).
pub async fn current_failures(db: &Db) -> Result<Vec<CurrentFailure>, DbError> {
    let rows = sqlx::query(
        "SELECT n.name, r.uuid, r.started_at, e.resource, e.message \
         FROM nodes n \
         CROSS JOIN runs r ON r.id = (SELECT r2.id FROM runs r2 WHERE r2.node_id = n.id \
                                      ORDER BY r2.started_at DESC, r2.id DESC LIMIT 1) \
                          AND r.total_failed > 0 \
         CROSS JOIN resource_events e ON e.run_id = r.id AND e.status = 'failed' \
         ORDER BY e.resource, n.name",
    )
    .fetch_all(db.pool())
    .await
    .context("listing current failures")?;
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
    .context("listing failure history")?;
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
///
/// Node by node (`CROSS JOIN`), each node's last real runs are read newest first from
/// `runs_by_node_time`, stopping after `runs` of them: a few rows per node, whatever the
/// history's length (ranking every run of the period with a window function read and sorted
/// all of them: ~50,000 runs for 30 days of 1,000 nodes, 80–130 ms, also for one node).
pub async fn flapping(
    db: &Db,
    runs: u32,
    since: Timestamp,
    node: Option<&str>,
) -> Result<Vec<Flapping>, DbError> {
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "WITH recent AS MATERIALIZED ( \
             SELECT r.id, r.node_id, r.total_changed \
             FROM nodes n \
             CROSS JOIN runs r ON r.id IN ( \
                 SELECT r2.id FROM runs r2 \
                 WHERE r2.node_id = n.id AND r2.noop = 0 AND r2.started_at >= ",
    );
    query
        .push_bind(since.0)
        .push(" ORDER BY r2.started_at DESC, r2.id DESC LIMIT ")
        .push_bind(i64::from(runs))
        .push(")");
    // A literal condition rather than `?x IS NULL OR`, which would hide the index from the
    // planner.
    if let Some(node) = node {
        query.push(" WHERE n.name = ").push_bind(node.to_owned());
    }
    query
        .push(
            "), \
             candidates AS ( \
                 SELECT node_id FROM recent \
                 GROUP BY node_id HAVING count(*) = ",
        )
        .push_bind(i64::from(runs))
        .push(
            " AND min(total_changed) > 0 \
             ) \
             SELECT n.name, e.resource, count(*) AS changed \
             FROM candidates c \
             CROSS JOIN recent ON recent.node_id = c.node_id \
             CROSS JOIN resource_events e ON e.run_id = recent.id AND e.status = 'changed' \
             JOIN nodes n ON n.id = c.node_id \
             GROUP BY c.node_id, e.resource HAVING count(*) >= ",
        )
        .push_bind(i64::from(runs))
        .push(" ORDER BY n.name, e.resource");
    let rows = query
        .build()
        .fetch_all(db.pool())
        .await
        .context("listing flapping resources")?;
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
    .context("listing failed runs")?;
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

/// An event as the person pages read it: resource id, status, message and drift notice.
pub type PersonEvent = (String, String, Option<String>, Option<String>);

/// The last real (not noop) run of an approved node and those of its events whose resource id
/// contains one of the needles, in apply order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastRunEvents {
    /// Node.
    pub node: String,
    /// The run.
    pub run_id: RunId,
    /// Its start.
    pub started_at: Timestamp,
    /// The matching events.
    pub events: Vec<PersonEvent>,
}

/// The events of every approved node's last real (not noop) run whose resource id contains
/// one of `needles` (the people's names: a cheap superset of their resources, checked exactly
/// by the caller), in one statement, by node name.
///
/// Node by node (`CROSS JOIN`), and one row per node with its events as a JSON array: a row
/// per event (14,000 for two people on 1,000 nodes) cost more to hand over than the query
/// itself.
pub async fn last_run_events_mentioning(
    db: &Db,
    needles: &[&str],
) -> Result<Vec<LastRunEvents>, DbError> {
    if needles.is_empty() {
        return Ok(Vec::new());
    }
    let mut query = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
        "SELECT n.name, r.uuid, r.started_at, \
                json_group_array(json_array(e.resource, e.status, e.message, e.drift) \
                                 ORDER BY e.seq) AS events \
         FROM nodes n \
         CROSS JOIN runs r ON r.id = (SELECT r2.id FROM runs r2 WHERE r2.node_id = n.id \
                                      AND r2.noop = 0 \
                                      ORDER BY r2.started_at DESC, r2.id DESC LIMIT 1) \
         CROSS JOIN resource_events e ON e.run_id = r.id \
         WHERE n.status = 'approved' AND (0",
    );
    for needle in needles {
        query
            .push(" OR instr(e.resource, ")
            .push_bind(needle.to_string())
            .push(") > 0");
    }
    query.push(") GROUP BY n.id ORDER BY n.name");
    let rows = query
        .build()
        .fetch_all(db.pool())
        .await
        .context("reading the fleet's last resource events")?;
    rows.into_iter()
        .map(|row| {
            let events: String = row.get("events");
            Ok(LastRunEvents {
                node: row.get("name"),
                run_id: RunId(row.get("uuid")),
                started_at: Timestamp(row.get("started_at")),
                events: serde_json::from_str(&events).map_err(|error| DbError::Corrupt {
                    what: "last run events",
                    detail: error.to_string(),
                })?,
            })
        })
        .collect()
}

/// A notice of a run: an event that is `kept` or `deferred`, or carries a drift notice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    /// Resource id.
    pub resource: String,
    /// Its status (`kept`, `deferred`, or any other when only drift is noted).
    pub status: String,
    /// The agent's message.
    pub message: Option<String>,
    /// The drift notice.
    pub drift: Option<String>,
}

/// `SELECT` of a run's notices (run id `?1`): its events by `UNIQUE (run_id, seq)`.
pub(crate) const RUN_NOTICES_SQL: &str = "SELECT e.resource, e.status, e.message, e.drift \
     FROM resource_events e \
     WHERE e.run_id = (SELECT id FROM runs WHERE uuid = ?1) \
       AND (e.status IN ('kept', 'deferred') OR e.drift IS NOT NULL) \
     ORDER BY e.seq";

/// The notices of one run, in apply order. The run's events are read through
/// `UNIQUE (run_id, seq)`; callers skip the query when the run's totals count no notice.
pub async fn run_notices(db: &Db, run_id: &RunId) -> Result<Vec<Notice>, DbError> {
    let rows = sqlx::query(RUN_NOTICES_SQL)
        .bind(run_id.0.as_str())
        .fetch_all(db.pool())
        .await
        .context("reading a run's notices")?;
    Ok(rows
        .into_iter()
        .map(|row| Notice {
            resource: row.get("resource"),
            status: row.get("status"),
            message: row.get("message"),
            drift: row.get("drift"),
        })
        .collect())
}
