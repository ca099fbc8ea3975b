//! `runs` and `resource_events`: run reports, as the agents sent them.
//!
//! [`insert_report`] is idempotent by run id (the agent resubmits until it gets an answer) and
//! writes the run and all its events in one transaction; [`insert_reports`] writes several
//! reports in one. Lists page by keyset on
//! `(started_at, id)`, newest first, so a page costs the same however deep it is.
//! Retention lives on [`crate::db::Db::prune_runs_older_than`].

use std::fmt;
use std::str::FromStr;

use sqlx::{Connection, QueryBuilder, Sqlite, SqliteConnection};
use steward_protocol::{
    NodeId, ResourceEvent, ResourceId, ResourceStatus, RunId, RunReport, RunStatus, Serial,
    Timestamp, Totals,
};

use crate::db::codec::{
    parse_resource_status, parse_run_status, resource_status_str, run_status_str, serial_from_i64,
    serial_to_i64, timestamp, to_i64, to_u32, to_u64,
};
use crate::db::error::Context;
use crate::db::{begin_immediate, nodes, DbError, Handle};

/// Events per multi-row `INSERT` (12 parameters each, well below SQLite's 32766 limit).
const EVENTS_PER_STATEMENT: usize = 200;

/// What [`insert_report`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertOutcome {
    /// The run was new and is stored with its events.
    Inserted,
    /// This node had already reported this run id; nothing was written.
    Duplicate,
}

/// A stored run, without its events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The agent's run id.
    pub run_id: RunId,
    /// The node that ran.
    pub node: NodeId,
    /// Serial of the catalog applied, if one was.
    pub catalog_serial: Option<Serial>,
    /// Start, agent's clock.
    pub started_at: Timestamp,
    /// End, agent's clock.
    pub finished_at: Timestamp,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Overall outcome.
    pub status: RunStatus,
    /// Whether it was a `--noop` run.
    pub noop: bool,
    /// Run-level message.
    pub message: Option<String>,
    /// Agent version.
    pub agent_version: String,
    /// Counts per status, as the agent reported them.
    pub totals: Totals,
    /// When the server stored it (server's clock).
    pub received_at: Timestamp,
    /// Where this run sits in a list; pass it as [`Page::before`] to continue after it.
    pub cursor: RunCursor,
}

/// A run with its events in apply order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunWithEvents {
    /// The run.
    pub run: Run,
    /// Its events.
    pub events: Vec<ResourceEvent>,
}

/// Which runs [`list`] returns. Every field narrows; the default is every run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    /// Only this node's runs.
    pub node: Option<NodeId>,
    /// Only runs with this outcome.
    pub status: Option<RunStatus>,
    /// Only `--noop` runs (`Some(true)`) or only real ones (`Some(false)`).
    pub noop: Option<bool>,
    /// Only runs started at or after this time.
    pub since: Option<Timestamp>,
    /// Only runs started before this time.
    pub until: Option<Timestamp>,
}

/// A page of a list: at most `limit` rows after `before` (exclusive), newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Page {
    /// Rows per page (at least 1 is returned when any are left; capped at [`Page::MAX_LIMIT`]).
    pub limit: u32,
    /// Continue after this run (`RunPage::next` of the previous page); `None` for the first page.
    pub before: Option<RunCursor>,
}

impl Page {
    /// The largest page [`list`] returns.
    pub const MAX_LIMIT: u32 = 1000;

    /// The first page of `limit` rows.
    pub fn first(limit: u32) -> Page {
        Page {
            limit,
            before: None,
        }
    }
}

/// A position in a run list: the run's start time and its row id. Its text form,
/// `<started_at>.<id>`, can travel in a URL query.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RunCursor {
    /// `started_at` of the run.
    pub started_at: Timestamp,
    /// Row id of the run (tie-breaker between runs started in the same second).
    pub id: i64,
}

impl fmt::Display for RunCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.started_at.0, self.id)
    }
}

impl FromStr for RunCursor {
    type Err = DbError;

    fn from_str(text: &str) -> Result<RunCursor, DbError> {
        let invalid = || DbError::Invalid {
            what: "run list cursor",
            detail: "expected <started_at>.<id>".into(),
        };
        let (started_at, id) = text.split_once('.').ok_or_else(invalid)?;
        Ok(RunCursor {
            started_at: Timestamp(started_at.parse().map_err(|_| invalid())?),
            id: id.parse().map_err(|_| invalid())?,
        })
    }
}

/// One page of runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunPage {
    /// The runs, newest first.
    pub runs: Vec<Run>,
    /// Where the next page starts; `None` on the last page.
    pub next: Option<RunCursor>,
}

/// An event with the run it belongs to, for queries across runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    /// The run.
    pub run_id: RunId,
    /// The node.
    pub node: NodeId,
    /// The run's start (agent's clock).
    pub run_started_at: Timestamp,
    /// The event.
    pub event: ResourceEvent,
}

#[derive(sqlx::FromRow)]
struct RunRow {
    id: i64,
    uuid: String,
    node: String,
    catalog_serial: Option<i64>,
    started_at: i64,
    finished_at: i64,
    duration_ms: i64,
    status: String,
    noop: bool,
    message: Option<String>,
    agent_version: String,
    total_resources: i64,
    total_unchanged: i64,
    total_changed: i64,
    total_would_change: i64,
    total_failed: i64,
    total_skipped: i64,
    total_kept: i64,
    total_deferred: i64,
    total_drift: i64,
    received_at: i64,
}

impl RunRow {
    fn into_run(self) -> Result<Run, DbError> {
        Ok(Run {
            run_id: RunId(self.uuid),
            node: NodeId(self.node),
            catalog_serial: self
                .catalog_serial
                .map(|serial| serial_from_i64(serial, "runs.catalog_serial"))
                .transpose()?,
            started_at: timestamp(self.started_at),
            finished_at: timestamp(self.finished_at),
            duration_ms: to_u64(self.duration_ms, "runs.duration_ms")?,
            status: parse_run_status(&self.status)?,
            noop: self.noop,
            message: self.message,
            agent_version: self.agent_version,
            totals: Totals {
                resources: to_u32(self.total_resources, "runs.total_resources")?,
                unchanged: to_u32(self.total_unchanged, "runs.total_unchanged")?,
                changed: to_u32(self.total_changed, "runs.total_changed")?,
                would_change: to_u32(self.total_would_change, "runs.total_would_change")?,
                failed: to_u32(self.total_failed, "runs.total_failed")?,
                skipped: to_u32(self.total_skipped, "runs.total_skipped")?,
                kept: to_u32(self.total_kept, "runs.total_kept")?,
                deferred: to_u32(self.total_deferred, "runs.total_deferred")?,
                drift: to_u32(self.total_drift, "runs.total_drift")?,
            },
            received_at: timestamp(self.received_at),
            cursor: RunCursor {
                started_at: timestamp(self.started_at),
                id: self.id,
            },
        })
    }
}

#[derive(sqlx::FromRow)]
struct EventRow {
    resource: String,
    status: String,
    message: Option<String>,
    diff: Option<String>,
    duration_ms: i64,
    corrective: bool,
    drift: Option<String>,
}

impl EventRow {
    fn into_event(self) -> Result<ResourceEvent, DbError> {
        Ok(ResourceEvent {
            resource: ResourceId(self.resource),
            status: parse_resource_status(&self.status)?,
            message: self.message,
            diff: self.diff,
            duration_ms: to_u64(self.duration_ms, "resource_events.duration_ms")?,
            corrective: self.corrective,
            drift: self.drift,
        })
    }
}

#[derive(sqlx::FromRow)]
struct EventRecordRow {
    uuid: String,
    node: String,
    run_started_at: i64,
    #[sqlx(flatten)]
    event: EventRow,
}

impl EventRecordRow {
    fn into_record(self) -> Result<EventRecord, DbError> {
        Ok(EventRecord {
            run_id: RunId(self.uuid),
            node: NodeId(self.node),
            run_started_at: timestamp(self.run_started_at),
            event: self.event.into_event()?,
        })
    }
}

macro_rules! run_columns {
    () => {
        "r.id, r.uuid, n.name AS node, r.catalog_serial, r.started_at, r.finished_at, \
         r.duration_ms, r.status, r.noop, r.message, r.agent_version, r.total_resources, \
         r.total_unchanged, r.total_changed, r.total_would_change, r.total_failed, \
         r.total_skipped, r.total_kept, r.total_deferred, r.total_drift, r.received_at"
    };
}

macro_rules! event_columns {
    () => {
        "e.resource, e.status, e.message, e.diff, e.duration_ms, e.corrective, e.drift"
    };
}

/// `SELECT` of the last result of one resource on one node: the node's runs newest first
/// (index `runs_by_node_time`), each run's events by `UNIQUE (run_id, seq)`, stopping at the
/// first run that has the resource.
pub(crate) const LAST_EVENT_FOR_RESOURCE_SQL: &str = concat!(
    "SELECT r.uuid, n.name AS node, e.run_started_at, ",
    event_columns!(),
    " FROM runs r JOIN resource_events e ON e.run_id = r.id JOIN nodes n ON n.id = r.node_id \
     WHERE r.node_id = (SELECT id FROM nodes WHERE name = ?1) AND e.resource = ?2 \
     ORDER BY r.started_at DESC, r.id DESC LIMIT 1"
);

/// `SELECT` of events with one status across the fleet, newest first
/// (index `resource_events_by_status_time`).
pub(crate) const EVENTS_WITH_STATUS_SQL: &str = concat!(
    "SELECT r.uuid, n.name AS node, e.run_started_at, ",
    event_columns!(),
    " FROM resource_events e JOIN runs r ON r.id = e.run_id JOIN nodes n ON n.id = e.node_id \
     WHERE e.status = ?1 AND e.run_started_at >= ?2 \
     ORDER BY e.run_started_at DESC, e.id DESC LIMIT ?3"
);

/// Stores `report`, received at `received_at`, with all its events in one transaction.
///
/// The same run id from the same node again is [`InsertOutcome::Duplicate`] and writes nothing;
/// from another node it is [`DbError::RunIdConflict`]. The report's node must exist
/// ([`DbError::NotFound`]); the caller has already checked that it is the node whose key signed
/// the request.
pub async fn insert_report(
    db: impl Into<Handle<'_>>,
    report: &RunReport,
    received_at: Timestamp,
) -> Result<InsertOutcome, DbError> {
    let mut connection = db.into().connection().await?;
    let mut tx = begin_immediate(&mut connection).await?;
    let outcome = insert_in_transaction(&mut tx, report, received_at).await?;
    tx.commit().await.context("committing run report")?;
    Ok(outcome)
}

/// Stores several reports in one transaction: one commit, so one fsync, for all of them (the
/// report writer's group commit, [`crate::service::reports`]). Returns each report's outcome,
/// as [`insert_report`] would have; `Err` only when the transaction could not commit, and then
/// none of them is stored.
///
/// When a report of the batch fails (a run id another node reported, a node that is gone), the
/// batch is rolled back and every report is stored in a transaction of its own, so that one
/// failure costs the others nothing but time. No savepoint per report: SQLite copies every page
/// a savepoint touches again into its sub-journal, which would cost more than the commit saved.
pub async fn insert_reports(
    db: impl Into<Handle<'_>>,
    reports: &[(&RunReport, Timestamp)],
) -> Result<Vec<Result<InsertOutcome, DbError>>, DbError> {
    let mut connection = db.into().connection().await?;
    {
        let mut tx = begin_immediate(&mut connection).await?;
        let mut outcomes = Vec::with_capacity(reports.len());
        for (report, received_at) in reports {
            match insert_in_transaction(&mut tx, report, *received_at).await {
                Ok(outcome) => outcomes.push(Ok(outcome)),
                Err(_) => break,
            }
        }
        if outcomes.len() == reports.len() {
            tx.commit().await.context("committing run reports")?;
            return Ok(outcomes);
        }
        tx.rollback().await.context("rolling back run reports")?;
    }
    let mut outcomes = Vec::with_capacity(reports.len());
    for (report, received_at) in reports {
        outcomes.push(insert_report(&mut *connection, report, *received_at).await);
    }
    Ok(outcomes)
}

/// [`insert_report`] on a connection inside a transaction the caller commits.
async fn insert_in_transaction(
    tx: &mut SqliteConnection,
    report: &RunReport,
    received_at: Timestamp,
) -> Result<InsertOutcome, DbError> {
    if !report.run_id.is_valid() {
        return Err(DbError::Invalid {
            what: "run id",
            detail: "expected a lowercase hyphenated UUID".into(),
        });
    }
    let catalog_serial = report.catalog_serial.map(serial_to_i64).transpose()?;
    let duration_ms = to_i64(report.duration_ms, "run duration")?;
    let event_durations = report
        .events
        .iter()
        .map(|event| to_i64(event.duration_ms, "event duration"))
        .collect::<Result<Vec<i64>, DbError>>()?;

    let node_id = nodes::id_of(&mut *tx, &report.node).await?;
    let totals = &report.totals;
    let run_pk: Option<i64> = sqlx::query_scalar(
        "INSERT INTO runs (uuid, node_id, catalog_serial, started_at, finished_at, duration_ms, \
         status, noop, message, agent_version, total_resources, total_unchanged, total_changed, \
         total_would_change, total_failed, total_skipped, total_kept, total_deferred, \
         total_drift, received_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
         ?19, ?20) \
         ON CONFLICT (uuid) DO NOTHING RETURNING id",
    )
    .bind(report.run_id.0.as_str())
    .bind(node_id)
    .bind(catalog_serial)
    .bind(report.started_at.0)
    .bind(report.finished_at.0)
    .bind(duration_ms)
    .bind(run_status_str(report.status))
    .bind(report.noop)
    .bind(report.message.as_deref())
    .bind(&report.agent_version)
    .bind(i64::from(totals.resources))
    .bind(i64::from(totals.unchanged))
    .bind(i64::from(totals.changed))
    .bind(i64::from(totals.would_change))
    .bind(i64::from(totals.failed))
    .bind(i64::from(totals.skipped))
    .bind(i64::from(totals.kept))
    .bind(i64::from(totals.deferred))
    .bind(i64::from(totals.drift))
    .bind(received_at.0)
    .fetch_optional(&mut *tx)
    .await
    .context("inserting run")?;

    let Some(run_pk) = run_pk else {
        let first_node: String = sqlx::query_scalar(
            "SELECT n.name FROM runs r JOIN nodes n ON n.id = r.node_id WHERE r.uuid = ?1",
        )
        .bind(report.run_id.0.as_str())
        .fetch_one(&mut *tx)
        .await
        .context("reading duplicate run")?;
        if first_node != report.node.0 {
            return Err(DbError::RunIdConflict {
                run_id: report.run_id.clone(),
                first_node: NodeId(first_node),
                node: report.node.clone(),
            });
        }
        return Ok(InsertOutcome::Duplicate);
    };

    let events: Vec<(usize, &ResourceEvent, i64)> = report
        .events
        .iter()
        .zip(event_durations)
        .enumerate()
        .map(|(seq, (event, duration_ms))| (seq, event, duration_ms))
        .collect();
    for chunk in events.chunks(EVENTS_PER_STATEMENT) {
        let mut insert = QueryBuilder::<Sqlite>::new(
            "INSERT INTO resource_events (run_id, seq, node_id, run_started_at, resource, \
             resource_type, status, message, diff, duration_ms, corrective, drift) ",
        );
        insert.push_values(chunk, |mut row, (seq, event, duration_ms)| {
            row.push_bind(run_pk)
                .push_bind(i64::try_from(*seq).unwrap_or(i64::MAX))
                .push_bind(node_id)
                .push_bind(report.started_at.0)
                .push_bind(event.resource.as_str())
                .push_bind(event.resource.kind())
                .push_bind(resource_status_str(event.status))
                .push_bind(event.message.as_deref())
                .push_bind(event.diff.as_deref())
                .push_bind(*duration_ms)
                .push_bind(event.corrective)
                .push_bind(event.drift.as_deref());
        });
        // Only full chunks have a fixed text: a prepared statement per report size would crowd
        // the connection's statement cache with large statements.
        insert
            .build()
            .persistent(chunk.len() == EVENTS_PER_STATEMENT)
            .execute(&mut *tx)
            .await
            .context("inserting resource events")?;
    }
    Ok(InsertOutcome::Inserted)
}

/// One page of runs matching `filter`, newest first (by `started_at`, then row id).
pub async fn list(
    db: impl Into<Handle<'_>>,
    filter: &RunFilter,
    page: Page,
) -> Result<RunPage, DbError> {
    let limit = page.limit.clamp(1, Page::MAX_LIMIT);
    let mut query = list_query("", filter, page.before, limit + 1);
    let mut connection = db.into().connection().await?;
    let rows: Vec<RunRow> = query
        .build_query_as()
        .fetch_all(&mut *connection)
        .await
        .context("listing runs")?;
    let mut runs = rows
        .into_iter()
        .map(RunRow::into_run)
        .collect::<Result<Vec<Run>, DbError>>()?;
    let next = if runs.len() > limit as usize {
        runs.truncate(limit as usize);
        runs.last().map(|run| run.cursor)
    } else {
        None
    };
    Ok(RunPage { runs, next })
}

/// The `SELECT` behind [`list`], after `prefix` (`EXPLAIN QUERY PLAN ` in tests).
pub(crate) fn list_query<'a>(
    prefix: &str,
    filter: &'a RunFilter,
    before: Option<RunCursor>,
    limit: u32,
) -> QueryBuilder<'a, Sqlite> {
    let mut query = QueryBuilder::<Sqlite>::new(prefix);
    query.push(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs r JOIN nodes n ON n.id = r.node_id WHERE 1 = 1"
    ));
    if let Some(node) = &filter.node {
        query
            .push(" AND r.node_id = (SELECT id FROM nodes WHERE name = ")
            .push_bind(node.as_str())
            .push(")");
    }
    if let Some(status) = filter.status {
        query
            .push(" AND r.status = ")
            .push_bind(run_status_str(status));
    }
    if let Some(noop) = filter.noop {
        query.push(" AND r.noop = ").push_bind(noop);
    }
    if let Some(since) = filter.since {
        query.push(" AND r.started_at >= ").push_bind(since.0);
    }
    if let Some(until) = filter.until {
        query.push(" AND r.started_at < ").push_bind(until.0);
    }
    if let Some(before) = before {
        query
            .push(" AND (r.started_at, r.id) < (")
            .push_bind(before.started_at.0)
            .push(", ")
            .push_bind(before.id)
            .push(")");
    }
    query
        .push(" ORDER BY r.started_at DESC, r.id DESC LIMIT ")
        .push_bind(i64::from(limit));
    query
}

/// The run with this id and its events in apply order, read from one snapshot.
pub async fn get_with_events(
    db: impl Into<Handle<'_>>,
    run_id: &RunId,
) -> Result<Option<RunWithEvents>, DbError> {
    let mut connection = db.into().connection().await?;
    // A read transaction: the run and its events come from the same snapshot even if
    // retention deletes the run meanwhile.
    let mut tx = Connection::begin(&mut *connection)
        .await
        .context("reading run")?;
    let row: Option<RunRow> = sqlx::query_as(concat!(
        "SELECT ",
        run_columns!(),
        " FROM runs r JOIN nodes n ON n.id = r.node_id WHERE r.uuid = ?1"
    ))
    .bind(run_id.0.as_str())
    .fetch_optional(&mut *tx)
    .await
    .context("reading run")?;
    let Some(row) = row else {
        return Ok(None);
    };
    let events: Vec<EventRow> = sqlx::query_as(concat!(
        "SELECT ",
        event_columns!(),
        " FROM resource_events e WHERE e.run_id = ?1 ORDER BY e.seq"
    ))
    .bind(row.id)
    .fetch_all(&mut *tx)
    .await
    .context("reading run events")?;
    tx.commit().await.context("reading run")?;
    Ok(Some(RunWithEvents {
        run: row.into_run()?,
        events: events
            .into_iter()
            .map(EventRow::into_event)
            .collect::<Result<_, _>>()?,
    }))
}

/// The most recent event of `resource` on `node` ("last result of X"), by run start time.
///
/// Reads the node's runs newest first until one has the resource: one run's events when the
/// resource is still in the catalog, the node's whole history when it never was.
pub async fn last_event_for_resource(
    db: impl Into<Handle<'_>>,
    node: &NodeId,
    resource: &ResourceId,
) -> Result<Option<EventRecord>, DbError> {
    let mut connection = db.into().connection().await?;
    let row: Option<EventRecordRow> = sqlx::query_as(LAST_EVENT_FOR_RESOURCE_SQL)
        .bind(node.as_str())
        .bind(resource.as_str())
        .fetch_optional(&mut *connection)
        .await
        .context("reading last resource event")?;
    row.map(EventRecordRow::into_record).transpose()
}

/// Events with `status` (e.g. failures) across every node, from runs started at or after
/// `since`, newest first, at most `limit`.
pub async fn events_with_status(
    db: impl Into<Handle<'_>>,
    status: ResourceStatus,
    since: Timestamp,
    limit: u32,
) -> Result<Vec<EventRecord>, DbError> {
    let mut connection = db.into().connection().await?;
    let rows: Vec<EventRecordRow> = sqlx::query_as(EVENTS_WITH_STATUS_SQL)
        .bind(resource_status_str(status))
        .bind(since.0)
        .bind(i64::from(limit.min(Page::MAX_LIMIT)))
        .fetch_all(&mut *connection)
        .await
        .context("listing resource events")?;
    rows.into_iter().map(EventRecordRow::into_record).collect()
}
