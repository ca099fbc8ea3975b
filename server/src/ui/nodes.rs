//! Nodes: the list (filter by status and name, sort, the last run's notice count), the node
//! page (the last run's notices: deferred changes, drift and kept resources; facts, keys,
//! catalogs and the diff between two serials, recent runs with a timeline chart, flapping
//! resources), and
//! the node actions (approve, revoke, run now), which are `POST`s through
//! [`crate::service::admin`] and so land in the audit log.

use std::collections::BTreeMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use serde_json::Value;
use steward_protocol::{Catalog, EnrollmentStatus, NodeId, Serial, Timestamp};

use crate::catalog_diff::{self, Change};
use crate::db::runs::{Page, RunFilter};
use crate::db::{self};
use crate::metrics::status_name;
use crate::service;
use crate::service::admin as operations;
use crate::state::AppState;
use crate::ui::auth::UiUser;
use crate::ui::chart::{bar_chart, format_ms, BarChart, Column};
use crate::ui::form::Form;
use crate::ui::queries::{self, FleetNode};
use crate::ui::text::{clean, clean_short};
use crate::ui::{
    ago, format_duration_ms, format_time, format_time_full, notice_legend, query_escape, render,
    see_other, Badge, Layout, LegendItem, UiError,
};

/// What a node looks like from the fleet views: one word, one colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    /// The site does not compile for it (it keeps its last good catalog).
    CompileFailed,
    /// Its last run had failures (or could not run).
    Failed,
    /// No report for 2 × (interval + splay).
    Unreported,
    /// Its last run changed something.
    Changed,
    /// Its last run was a noop run.
    Noop,
    /// Its last run changed nothing.
    Unchanged,
    /// Waiting for an admin.
    Pending,
    /// Refused (key reuse, clone).
    Quarantined,
    /// Revoked.
    Revoked,
}

impl Health {
    /// Every health, in the overview's order.
    pub const ALL: [Health; 9] = [
        Health::Failed,
        Health::CompileFailed,
        Health::Unreported,
        Health::Changed,
        Health::Unchanged,
        Health::Noop,
        Health::Pending,
        Health::Quarantined,
        Health::Revoked,
    ];

    /// URL word.
    pub fn key(self) -> &'static str {
        match self {
            Health::CompileFailed => "compile-failed",
            Health::Failed => "failed",
            Health::Unreported => "unreported",
            Health::Changed => "changed",
            Health::Noop => "noop",
            Health::Unchanged => "unchanged",
            Health::Pending => "pending",
            Health::Quarantined => "quarantined",
            Health::Revoked => "revoked",
        }
    }

    /// Label.
    pub fn label(self) -> &'static str {
        match self {
            Health::CompileFailed => "compile failed",
            other => other.key(),
        }
    }

    /// Badge colour class.
    pub fn class(self) -> &'static str {
        match self {
            Health::CompileFailed | Health::Failed => "failed",
            Health::Unreported | Health::Quarantined => "warn",
            Health::Changed => "changed",
            Health::Noop | Health::Pending => "info",
            Health::Unchanged => "ok",
            Health::Revoked => "muted",
        }
    }

    /// The badge.
    pub fn badge(self) -> Badge {
        Badge::new(self.label(), self.class())
    }

    fn parse(text: &str) -> Option<Health> {
        Health::ALL.into_iter().find(|health| health.key() == text)
    }
}

/// The health of a node at `now`, given the unreported threshold in seconds.
pub fn health(node: &FleetNode, now: Timestamp, unreported_after: i64) -> Health {
    match node.status {
        EnrollmentStatus::Pending => return Health::Pending,
        EnrollmentStatus::Quarantined => return Health::Quarantined,
        EnrollmentStatus::Revoked => return Health::Revoked,
        EnrollmentStatus::Approved => {}
    }
    if node.compile_failure.is_some() {
        return Health::CompileFailed;
    }
    let Some(run) = &node.last_run else {
        return Health::Unreported;
    };
    if now.0 - run.received_at.0 > unreported_after {
        return Health::Unreported;
    }
    match run.status {
        steward_protocol::RunStatus::Failed | steward_protocol::RunStatus::Error => Health::Failed,
        steward_protocol::RunStatus::Changed => Health::Changed,
        steward_protocol::RunStatus::Noop => Health::Noop,
        steward_protocol::RunStatus::Unchanged => Health::Unchanged,
    }
}

/// Seconds without a report before a node is unreported.
pub fn unreported_after(state: &AppState) -> i64 {
    i64::try_from(state.config.ui.unreported_after().as_secs()).unwrap_or(i64::MAX)
}

/// A row of the node list.
#[derive(Debug, Clone)]
pub struct NodeRow {
    /// Name.
    pub name: String,
    /// Link.
    pub href: String,
    /// Health badge.
    pub health: Badge,
    /// Class or `—`.
    pub class: String,
    /// Last report, relative.
    pub last_report: String,
    /// Last report, absolute.
    pub last_report_title: String,
    /// Last run summary (`3 changed, 1 failed of 40`).
    pub summary: String,
    /// Last run link.
    pub run_href: Option<String>,
    /// Serial served.
    pub serial: String,
    /// A note (compile failure, waiting key).
    pub note: String,
    /// Kept, deferred and drift notices of the last run, counted (never a failure).
    pub notices: Option<Badge>,
    health_order: Health,
    last_report_at: i64,
}

fn node_row(node: &FleetNode, now: Timestamp, threshold: i64) -> NodeRow {
    let health = health(node, now, threshold);
    let (last_report, last_report_title, last_report_at) = match &node.last_run {
        Some(run) => (
            ago(run.received_at, now),
            format_time_full(run.received_at),
            run.received_at.0,
        ),
        None => ("never".to_owned(), String::new(), i64::MIN),
    };
    let summary = node.last_run.as_ref().map_or_else(String::new, |run| {
        let mut parts = Vec::new();
        if run.failed > 0 {
            parts.push(format!("{} failed", run.failed));
        }
        if run.changed > 0 {
            parts.push(format!("{} changed", run.changed));
        }
        if parts.is_empty() {
            format!("{} resources in sync", run.resources)
        } else {
            format!("{} of {}", parts.join(", "), run.resources)
        }
    });
    let note = if let Some(message) = &node.compile_failure {
        clean_short(message, 120)
    } else if node.pending_key {
        "a new key waits for approval".to_owned()
    } else {
        String::new()
    };
    NodeRow {
        href: format!("/ui/nodes/{}", node.name),
        name: node.name.clone(),
        health: health.badge(),
        class: node.class.clone().unwrap_or_else(|| "—".to_owned()),
        last_report,
        last_report_title,
        summary,
        run_href: node
            .last_run
            .as_ref()
            .map(|run| format!("/ui/runs/{}", run.run_id)),
        serial: node
            .catalog_serial
            .map_or_else(|| "—".to_owned(), |serial| serial.0.to_string()),
        note,
        notices: node
            .last_run
            .as_ref()
            .map(|run| run.notices())
            .filter(|count| *count > 0)
            .map(notice_count_badge),
        health_order: health,
        last_report_at,
    }
}

/// "3 notices": the badge of a count of kept, deferred and drift notices.
pub fn notice_count_badge(count: u32) -> Badge {
    Badge::new(
        format!("{count} notice{}", if count == 1 { "" } else { "s" }),
        "info",
    )
}

/// `GET /ui/nodes` query.
#[derive(Debug, Default, Deserialize)]
pub struct NodesQuery {
    status: Option<String>,
    q: Option<String>,
    sort: Option<String>,
}

/// A filter choice.
#[derive(Debug, Clone)]
pub struct Choice {
    /// Value.
    pub value: String,
    /// Label.
    pub label: String,
    /// Selected.
    pub selected: bool,
}

/// The node list.
#[derive(Debug, Template)]
#[template(path = "ui/nodes.html")]
pub struct NodesPage {
    layout: Layout,
    rows: Vec<NodeRow>,
    total: usize,
    statuses: Vec<Choice>,
    sorts: Vec<Choice>,
    q: String,
}

/// `GET /ui/nodes?status=&q=&sort=name|status|report`.
pub async fn list(
    State(state): State<AppState>,
    user: UiUser,
    query: Result<Query<NodesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let now = service::now();
    let threshold = unreported_after(&state);
    let fleet = queries::fleet(&state.db, None).await?;
    let total = fleet.len();
    let wanted = query.status.as_deref().and_then(Health::parse);
    let needle = query
        .q
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_lowercase();
    let mut rows: Vec<NodeRow> = fleet
        .iter()
        .map(|node| node_row(node, now, threshold))
        .filter(|row| wanted.is_none_or(|health| row.health_order == health))
        .filter(|row| needle.is_empty() || row.name.contains(&needle))
        .collect();
    let sort = query.sort.as_deref().unwrap_or("status");
    match sort {
        "name" => rows.sort_by(|a, b| a.name.cmp(&b.name)),
        "report" => rows.sort_by(|a, b| {
            a.last_report_at
                .cmp(&b.last_report_at)
                .then(a.name.cmp(&b.name))
        }),
        _ => rows.sort_by(|a, b| {
            a.health_order
                .cmp(&b.health_order)
                .then(a.name.cmp(&b.name))
        }),
    }
    let mut statuses = vec![Choice {
        value: String::new(),
        label: "any status".to_owned(),
        selected: wanted.is_none(),
    }];
    statuses.extend(Health::ALL.into_iter().map(|health| Choice {
        value: health.key().to_owned(),
        label: health.label().to_owned(),
        selected: wanted == Some(health),
    }));
    let sorts = [
        ("status", "worst first"),
        ("name", "name"),
        ("report", "oldest report first"),
    ]
    .into_iter()
    .map(|(value, label)| Choice {
        value: value.to_owned(),
        label: label.to_owned(),
        selected: value == sort,
    })
    .collect();
    Ok(render(&NodesPage {
        layout: Layout::new(&user, "nodes", "Nodes"),
        rows,
        total,
        statuses,
        sorts,
        q: needle,
    }))
}

/// A key in the node's history.
#[derive(Debug, Clone)]
pub struct KeyRow {
    /// `sha256:...`.
    pub fingerprint: String,
    /// Machine id.
    pub machine_id: String,
    /// Added.
    pub created: String,
    /// Badge.
    pub state: Badge,
    /// Why revoked.
    pub reason: String,
}

/// A catalog serial of the node.
#[derive(Debug, Clone)]
pub struct CatalogRow {
    /// Serial.
    pub serial: u64,
    /// Compiled.
    pub compiled: String,
    /// Site hash (short).
    pub site: String,
    /// Is it the one served.
    pub current: bool,
    /// Chosen as "from" in the diff form.
    pub from_selected: bool,
    /// Chosen as "to".
    pub to_selected: bool,
}

/// A run in the node page's list.
#[derive(Debug, Clone)]
pub struct RunRow {
    /// Link.
    pub href: String,
    /// Badge.
    pub badge: Badge,
    /// Started, relative.
    pub when: String,
    /// Started, absolute.
    pub when_title: String,
    /// Duration.
    pub duration: String,
    /// Serial.
    pub serial: String,
    /// Counts.
    pub summary: String,
    /// Noop run.
    pub noop: bool,
}

/// One changed resource between two serials.
#[derive(Debug, Clone)]
pub struct DiffRow {
    /// `added`, `removed`, `changed`.
    pub kind: &'static str,
    /// Badge class.
    pub class: &'static str,
    /// Resource id.
    pub resource: String,
    /// Field lines (already redacted).
    pub lines: Vec<String>,
}

/// The diff section.
#[derive(Debug, Clone)]
pub struct DiffView {
    /// From serial.
    pub from: u64,
    /// To serial.
    pub to: u64,
    /// Changes.
    pub rows: Vec<DiffRow>,
}

/// A fact.
#[derive(Debug, Clone)]
pub struct FactRow {
    /// Name.
    pub name: String,
    /// Value as text.
    pub value: String,
}

/// A notice on the node page: the resource and what the agent said.
#[derive(Debug, Clone)]
pub struct NoticeRow {
    /// Resource id (cleaned).
    pub resource: String,
    /// The agent's message or drift text (cleaned).
    pub text: String,
}

/// The node page's "Notices" panel, from the node's last run: nothing failed, but someone
/// should know.
#[derive(Debug, Clone)]
pub struct NoticesPanel {
    /// The run they come from.
    pub run_href: String,
    /// When it started.
    pub when: String,
    /// Deferred changes, with who is active and since when (the agent's message).
    pub deferred: Vec<NoticeRow>,
    /// Drift notices.
    pub drift: Vec<NoticeRow>,
    /// Resources kept as found, with the reason.
    pub kept: Vec<NoticeRow>,
    /// What each badge means.
    pub legend: Vec<LegendItem>,
}

impl NoticesPanel {
    /// Groups a run's notices by kind; `None` when there is none.
    pub fn of(notices: Vec<queries::Notice>, run_href: String, when: String) -> Option<Self> {
        let mut panel = NoticesPanel {
            run_href,
            when,
            deferred: Vec::new(),
            drift: Vec::new(),
            kept: Vec::new(),
            legend: notice_legend(),
        };
        for notice in notices {
            let resource = clean(&notice.resource);
            if let Some(drift) = &notice.drift {
                panel.drift.push(NoticeRow {
                    resource: resource.clone(),
                    text: clean(drift),
                });
            }
            let list = match notice.status.as_str() {
                "deferred" => &mut panel.deferred,
                "kept" => &mut panel.kept,
                _ => continue,
            };
            list.push(NoticeRow {
                resource,
                text: notice.message.as_deref().map(clean).unwrap_or_default(),
            });
        }
        let empty = panel.deferred.is_empty() && panel.drift.is_empty() && panel.kept.is_empty();
        (!empty).then_some(panel)
    }
}

/// The node page.
#[derive(Debug, Template)]
#[template(path = "ui/node.html")]
pub struct NodePage {
    layout: Layout,
    name: String,
    health: Badge,
    status: &'static str,
    class: String,
    created: String,
    approved: String,
    last_seen: String,
    serial: String,
    run_now_pending: bool,
    can_approve: bool,
    /// A new node or a new key waits: "Reject" is offered.
    can_reject: bool,
    can_revoke: bool,
    can_run: bool,
    compile_failure: Option<String>,
    pending_key: Option<String>,
    facts: Vec<FactRow>,
    keys: Vec<KeyRow>,
    catalogs: Vec<CatalogRow>,
    diff: Option<DiffView>,
    diff_error: Option<String>,
    runs: Vec<RunRow>,
    runs_href: String,
    timeline: BarChart,
    flapping: Vec<String>,
    notices: Option<NoticesPanel>,
}

/// `GET /ui/nodes/{name}` query: the two serials to compare.
#[derive(Debug, Default, Deserialize)]
pub struct NodeQuery {
    from: Option<u64>,
    to: Option<u64>,
    done: Option<String>,
}

/// Runs shown on the node page and in its timeline.
const NODE_RUNS: u32 = 30;
/// A resource changed in each of this many last runs is flapping.
pub const FLAPPING_RUNS: u32 = 3;

/// `GET /ui/nodes/{name}?from=&to=`.
pub async fn detail(
    State(state): State<AppState>,
    user: UiUser,
    Path(name): Path<String>,
    query: Result<Query<NodeQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let name = node_name(&name)?;
    let node = db::nodes::get_by_name(&state.db, &name)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("node {name} does not exist")))?;
    let now = service::now();
    let fleet_node = queries::fleet(&state.db, Some(name.as_str()))
        .await?
        .into_iter()
        .next();
    let health = fleet_node.as_ref().map_or(Health::Pending, |n| {
        health(n, now, unreported_after(&state))
    });
    let facts = db::nodes::get_facts(&state.db, &name)
        .await?
        .map(|facts| fact_rows(&serde_json::to_value(facts).unwrap_or(Value::Null)))
        .unwrap_or_default();
    let keys = db::keys::history(&state.db, &name)
        .await?
        .into_iter()
        .rev()
        .map(|key| KeyRow {
            fingerprint: key.key_id.0,
            machine_id: key.machine_id.unwrap_or_else(|| "—".to_owned()),
            created: format_time(key.created_at),
            state: if key.revoked_at.is_some() {
                Badge::new("revoked", "muted")
            } else {
                Badge::new("active", "ok")
            },
            reason: key
                .revoke_reason
                .map(|r| clean_short(&r, 200))
                .unwrap_or_default(),
        })
        .collect();
    let pending_key = db::pending_keys::get(&state.db, &name)
        .await?
        .map(|pending| {
            format!(
                "{} (machine {}) asked {}",
                pending.key.key_id.0,
                pending.key.machine_id.unwrap_or_else(|| "unknown".into()),
                ago(pending.requested_at, now)
            )
        });
    // The fleet row holds the node's one current failure (compile_failures_one_current_per_node).
    let compile_failure = fleet_node
        .as_ref()
        .and_then(|n| n.compile_failure.as_deref())
        .map(clean);
    let summaries = db::catalogs::list(&state.db, &name, 50).await?;
    let newest = summaries.first().map(|c| c.serial.0);
    let second = summaries.get(1).map(|c| c.serial.0);
    let to = query.to.or(newest);
    let from = query.from.or(second);
    let catalogs = summaries
        .iter()
        .map(|catalog| CatalogRow {
            serial: catalog.serial.0,
            compiled: format_time(catalog.compiled_at),
            site: catalog.site_hash.chars().take(12).collect(),
            current: node.catalog_serial == Some(catalog.serial),
            from_selected: from == Some(catalog.serial.0),
            to_selected: to == Some(catalog.serial.0),
        })
        .collect();
    let (diff, diff_error) = match (from, to) {
        (Some(from), Some(to)) if from != to => {
            match serial_diff(&state, &name, Serial(from), Serial(to)).await? {
                Ok(rows) => (Some(DiffView { from, to, rows }), None),
                Err(message) => (None, Some(message)),
            }
        }
        _ => (None, None),
    };
    let page = db::runs::list(
        &state.db,
        &RunFilter {
            node: Some(name.clone()),
            ..RunFilter::default()
        },
        Page::first(NODE_RUNS),
    )
    .await?;
    let runs: Vec<RunRow> = page.runs.iter().map(|run| run_row(run, now)).collect();
    let columns: Vec<Column> = page
        .runs
        .iter()
        .rev()
        .map(|run| {
            let badge = Badge::run(run.status);
            Column {
                label: String::new(),
                href: Some(format!("/ui/runs/{}", run.run_id)),
                values: vec![(
                    run.duration_ms as f64,
                    seg_class(badge.class),
                    format!(
                        "{} — {} — {}",
                        format_time(run.started_at),
                        badge.label,
                        format_duration_ms(run.duration_ms)
                    ),
                )],
            }
        })
        .collect();
    let timeline = bar_chart(
        &columns,
        "duration of the last runs, coloured by outcome",
        format_ms,
    );
    let flapping = queries::flapping(
        &state.db,
        FLAPPING_RUNS,
        Timestamp(now.0 - 30 * 86_400),
        Some(name.as_str()),
    )
    .await?
    .into_iter()
    .map(|f| f.resource)
    .collect();
    let notices = match fleet_node.as_ref().and_then(|n| n.last_run.as_ref()) {
        Some(run) if run.notices() > 0 => {
            let started = page
                .runs
                .iter()
                .find(|r| r.run_id == run.run_id)
                .map_or_else(String::new, |r| ago(r.started_at, now));
            NoticesPanel::of(
                queries::run_notices(&state.db, &run.run_id).await?,
                format!("/ui/runs/{}", run.run_id),
                started,
            )
        }
        _ => None,
    };
    let approved = node.status == EnrollmentStatus::Approved;
    Ok(render(&NodePage {
        layout: Layout::new(&user, "nodes", format!("Node {}", name.0))
            .with_notice(query.done.as_deref()),
        health: health.badge(),
        status: status_name(node.status),
        class: node.class.clone().unwrap_or_else(|| "—".to_owned()),
        created: format_time(node.created_at),
        approved: node.approved_at.map_or_else(|| "—".to_owned(), format_time),
        last_seen: node
            .last_seen_at
            .map_or_else(|| "never".to_owned(), |t| ago(t, now)),
        serial: node
            .catalog_serial
            .map_or_else(|| "none yet".to_owned(), |s| s.0.to_string()),
        run_now_pending: node.run_now_requested_at.is_some(),
        can_approve: node.status != EnrollmentStatus::Approved || pending_key.is_some(),
        can_reject: node.status == EnrollmentStatus::Pending || pending_key.is_some(),
        can_revoke: node.status != EnrollmentStatus::Revoked,
        can_run: approved,
        compile_failure,
        pending_key,
        facts,
        keys,
        catalogs,
        diff,
        diff_error,
        runs,
        runs_href: format!("/ui/runs?node={}", query_escape(&name.0)),
        timeline,
        flapping,
        notices,
        name: name.0,
    }))
}

/// The CSS class of a chart segment for a badge class.
pub fn seg_class(badge_class: &str) -> &'static str {
    match badge_class {
        "ok" => "seg-ok",
        "changed" => "seg-changed",
        "failed" => "seg-failed",
        "warn" => "seg-warn",
        "info" => "seg-info",
        _ => "seg-muted",
    }
}

/// `1 kept, 2 deferred, 1 drift`, or `None` when there is no notice.
pub fn notice_summary(kept: u32, deferred: u32, drift: u32) -> Option<String> {
    let parts: Vec<String> = [(kept, "kept"), (deferred, "deferred"), (drift, "drift")]
        .into_iter()
        .filter(|(count, _)| *count > 0)
        .map(|(count, label)| format!("{count} {label}"))
        .collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// A run as a list row.
pub fn run_row(run: &db::runs::Run, now: Timestamp) -> RunRow {
    let totals = &run.totals;
    let mut parts = Vec::new();
    if totals.failed > 0 {
        parts.push(format!("{} failed", totals.failed));
    }
    if totals.changed > 0 {
        parts.push(format!("{} changed", totals.changed));
    }
    if totals.would_change > 0 {
        parts.push(format!("{} would change", totals.would_change));
    }
    if totals.skipped > 0 {
        parts.push(format!("{} skipped", totals.skipped));
    }
    let summary = if parts.is_empty() {
        format!("{} in sync", totals.resources)
    } else {
        format!("{} of {}", parts.join(", "), totals.resources)
    };
    let summary = match notice_summary(totals.kept, totals.deferred, totals.drift) {
        Some(notices) => format!("{summary} · {notices}"),
        None => summary,
    };
    RunRow {
        href: format!("/ui/runs/{}", run.run_id),
        badge: Badge::run(run.status),
        when: ago(run.started_at, now),
        when_title: format_time_full(run.started_at),
        duration: format_duration_ms(run.duration_ms),
        serial: run
            .catalog_serial
            .map_or_else(|| "—".to_owned(), |s| s.0.to_string()),
        summary,
        noop: run.noop,
    }
}

fn fact_rows(value: &Value) -> Vec<FactRow> {
    let mut rows = Vec::new();
    let mut flat = BTreeMap::new();
    flatten("", value, &mut flat);
    for (name, value) in flat {
        rows.push(FactRow {
            name,
            value: clean_short(&value, 300),
        });
    }
    rows
}

fn flatten(prefix: &str, value: &Value, out: &mut BTreeMap<String, String>) {
    match value {
        Value::Object(map) => {
            for (key, value) in map {
                let name = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                flatten(&name, value, out);
            }
        }
        Value::Null => {}
        Value::String(text) => {
            out.insert(prefix.to_owned(), text.clone());
        }
        Value::Array(items) if items.iter().all(|item| !item.is_object()) => {
            let text = items
                .iter()
                .map(|item| match item {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(", ");
            out.insert(prefix.to_owned(), text);
        }
        other => {
            out.insert(prefix.to_owned(), other.to_string());
        }
    }
}

/// The resource diff between two stored (redacted) catalogs of a node; `Ok(Err(message))`
/// when one of them is missing or unreadable.
async fn serial_diff(
    state: &AppState,
    node: &NodeId,
    from: Serial,
    to: Serial,
) -> Result<Result<Vec<DiffRow>, String>, UiError> {
    let (Some(old), Some(new)) = (
        db::catalogs::get(&state.db, node, from).await?,
        db::catalogs::get(&state.db, node, to).await?,
    ) else {
        return Ok(Err(format!(
            "serial {} or {} is not stored for this node",
            from.0, to.0
        )));
    };
    let (Some(old), Some(new)) = (
        stored_catalog(&old.redacted_json),
        stored_catalog(&new.redacted_json),
    ) else {
        return Ok(Err("a stored catalog could not be read".to_owned()));
    };
    Ok(Ok(catalog_diff::diff(&old, &new)
        .into_iter()
        .map(|change| match change {
            Change::Added(id) => DiffRow {
                kind: "added",
                class: "ok",
                resource: id.0,
                lines: Vec::new(),
            },
            Change::Removed(id) => DiffRow {
                kind: "removed",
                class: "failed",
                resource: id.0,
                lines: Vec::new(),
            },
            Change::Changed(id, lines) => DiffRow {
                kind: "changed",
                class: "changed",
                resource: id.0,
                lines: lines.iter().map(|line| clean(line)).collect(),
            },
        })
        .collect()))
}

/// A stored redacted catalog as a [`Catalog`]. Redacted content (`{"secret": "<redacted>"}`,
/// which never deserializes) becomes an empty sealed value, so the diff reports a change
/// between text and sensitive content as "sensitive content changed (not shown)" and can
/// never print it: the stored copy has no sensitive value to print.
pub fn stored_catalog(json: &str) -> Option<Catalog> {
    let mut value: Value = serde_json::from_str(json).ok()?;
    if let Some(resources) = value.get_mut("resources").and_then(Value::as_array_mut) {
        for resource in resources {
            replace_redacted(resource);
        }
    }
    serde_json::from_value(value).ok()
}

fn replace_redacted(value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(content) = map.get_mut("content") {
                if content.get("secret").is_some() {
                    *content = serde_json::json!({
                        "sealed": { "alg": "redacted", "ciphertext": "" }
                    });
                }
            }
            for child in map.values_mut() {
                replace_redacted(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(replace_redacted),
        _ => {}
    }
}

fn node_name(name: &str) -> Result<NodeId, UiError> {
    if steward_protocol::is_valid_hostname(name) {
        Ok(NodeId(name.to_owned()))
    } else {
        Err(UiError::BadRequest("invalid node name".into()))
    }
}

/// Where to go after an action: back to the page the form came from (`return` field, a UI
/// path), else the node page.
fn back(form: &Form, fallback: &str, done: &str) -> String {
    let target = match form.0.get("return") {
        Some(path) => crate::ui::auth::safe_next(Some(path)),
        None => fallback.to_owned(),
    };
    let separator = if target.contains('?') { '&' } else { '?' };
    format!("{target}{separator}done={done}")
}

/// `POST /ui/nodes/{name}/approve`.
pub async fn approve(
    State(state): State<AppState>,
    user: UiUser,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, UiError> {
    let name = node_name(&name)?;
    operations::approve(&state.db, &name, &user.actor, service::now()).await?;
    state.waiters.notify(&name);
    Ok(see_other(&back(
        &form,
        &format!("/ui/nodes/{}", name.0),
        "approved",
    )))
}

/// `POST /ui/nodes/{name}/revoke`.
pub async fn revoke(
    State(state): State<AppState>,
    user: UiUser,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, UiError> {
    let name = node_name(&name)?;
    let reason = form.0.text("reason").unwrap_or_default();
    operations::revoke(&state.db, &name, &user.actor, &reason, service::now()).await?;
    state.waiters.notify(&name);
    Ok(see_other(&back(
        &form,
        &format!("/ui/nodes/{}", name.0),
        "revoked",
    )))
}

/// `POST /ui/nodes/{name}/reject`: refuses what waits for approval, a new node or a new key of
/// an approved node (which keeps its current key).
pub async fn reject(
    State(state): State<AppState>,
    user: UiUser,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, UiError> {
    let name = node_name(&name)?;
    let done = match operations::reject(
        &state.db,
        &name,
        &user.actor,
        "enrollment rejected",
        service::now(),
    )
    .await?
    {
        operations::Rejected::WaitingKey => "key-rejected",
        operations::Rejected::Node => {
            state.waiters.notify(&name);
            "rejected"
        }
    };
    Ok(see_other(&back(
        &form,
        &format!("/ui/nodes/{}", name.0),
        done,
    )))
}

/// `POST /ui/nodes/{name}/run-now`.
pub async fn run_now(
    State(state): State<AppState>,
    user: UiUser,
    Path(name): Path<String>,
    form: Form,
) -> Result<Response, UiError> {
    let name = node_name(&name)?;
    operations::run_now(&state.db, &name, &user.actor, service::now()).await?;
    state.waiters.notify(&name);
    Ok(see_other(&back(
        &form,
        &format!("/ui/nodes/{}", name.0),
        "run-now",
    )))
}
