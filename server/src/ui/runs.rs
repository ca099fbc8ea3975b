//! Runs: the list (filter by node, outcome and day range; keyset pages through
//! [`crate::db::runs::list`]) and the run detail (totals, every resource event with its status,
//! message and diff, corrective or intentional). `kept` and `deferred` events, and events that
//! carry a drift notice, are shown apart as notices, each badge explained: never with the
//! failures.
//!
//! Event messages and diffs are what the agent reported: the agent never puts sensitive
//! content in a diff (it reports "content changed" for sealed files) and the server stores the
//! report as received; the page shows them through [`crate::ui::text::clean`] and escaping.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use serde::Deserialize;
use steward_protocol::{NodeId, ResourceStatus, RunId, Timestamp};

use crate::db::codec::run_status_str;
use crate::db::runs::{Page, RunCursor, RunFilter};
use crate::db::{self};
use crate::service;
use crate::state::AppState;
use crate::ui::auth::UiUser;
use crate::ui::nodes::{run_row, Choice, RunRow};
use crate::ui::text::{clean, clean_short};
use crate::ui::{
    ago, drift_badge, format_duration_ms, format_time, format_time_full, notice_legend,
    parse_run_status, query_escape, render, Badge, Layout, LegendItem, UiError,
};

/// Runs per page.
const PAGE_SIZE: u32 = 50;

/// `GET /ui/runs` query.
#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    node: Option<String>,
    status: Option<String>,
    /// `YYYY-MM-DD`, inclusive.
    since: Option<String>,
    /// `YYYY-MM-DD`, inclusive.
    until: Option<String>,
    noop: Option<String>,
    before: Option<String>,
}

/// A run in the fleet list (with its node).
#[derive(Debug, Clone)]
pub struct FleetRunRow {
    /// Node.
    pub node: String,
    /// Node link.
    pub node_href: String,
    /// The rest.
    pub run: RunRow,
    /// Run-level message.
    pub message: String,
}

/// The runs page.
#[derive(Debug, Template)]
#[template(path = "ui/runs.html")]
pub struct RunsPage {
    layout: Layout,
    rows: Vec<FleetRunRow>,
    node: String,
    since: String,
    until: String,
    statuses: Vec<Choice>,
    noops: Vec<Choice>,
    next_href: Option<String>,
    first_href: Option<String>,
}

/// `GET /ui/runs?node=&status=&since=&until=&noop=&before=`.
pub async fn list(
    State(state): State<AppState>,
    user: UiUser,
    query: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let node = query
        .node
        .as_deref()
        .map(str::trim)
        .filter(|n| !n.is_empty())
        .map(str::to_lowercase);
    if let Some(node) = &node {
        if !steward_protocol::is_valid_hostname(node) {
            return Err(UiError::BadRequest(
                "the node filter must be a hostname".into(),
            ));
        }
    }
    let status = query
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| parse_run_status(s).ok_or_else(|| UiError::BadRequest("unknown status".into())))
        .transpose()?;
    let since = parse_day(query.since.as_deref())?;
    let until = parse_day(query.until.as_deref())?.map(|day| Timestamp(day.0 + 86_400));
    let noop = match query.noop.as_deref() {
        Some("yes") => Some(true),
        Some("no") => Some(false),
        _ => None,
    };
    let before = query
        .before
        .as_deref()
        .filter(|b| !b.is_empty())
        .map(str::parse::<RunCursor>)
        .transpose()
        .map_err(|_| UiError::BadRequest("invalid page cursor".into()))?;
    let filter = RunFilter {
        node: node.clone().map(NodeId),
        status,
        noop,
        since,
        until,
    };
    let page = db::runs::list(
        &state.db,
        &filter,
        Page {
            limit: PAGE_SIZE,
            before,
        },
    )
    .await?;
    let now = service::now();
    let rows = page
        .runs
        .iter()
        .map(|run| FleetRunRow {
            node: run.node.0.clone(),
            node_href: format!("/ui/nodes/{}", run.node.0),
            run: run_row(run, now),
            message: run
                .message
                .as_deref()
                .map(|m| clean_short(m, 140))
                .unwrap_or_default(),
        })
        .collect();
    let mut base = Vec::new();
    if let Some(node) = &node {
        base.push(format!("node={}", query_escape(node)));
    }
    if let Some(status) = status {
        base.push(format!("status={}", run_status_str(status)));
    }
    for (key, value) in [("since", &query.since), ("until", &query.until)] {
        if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
            base.push(format!("{key}={}", query_escape(value)));
        }
    }
    if let Some(value) = query.noop.as_deref().filter(|v| *v == "yes" || *v == "no") {
        base.push(format!("noop={value}"));
    }
    let href = |extra: Option<String>| {
        let mut parts = base.clone();
        parts.extend(extra);
        if parts.is_empty() {
            "/ui/runs".to_owned()
        } else {
            format!("/ui/runs?{}", parts.join("&"))
        }
    };
    let next_href = page
        .next
        .map(|cursor| href(Some(format!("before={cursor}"))));
    let first_href = before.map(|_| href(None));
    let mut statuses = vec![Choice {
        value: String::new(),
        label: "any outcome".into(),
        selected: status.is_none(),
    }];
    for name in ["failed", "error", "changed", "unchanged", "noop"] {
        statuses.push(Choice {
            value: name.into(),
            label: name.into(),
            selected: status.map(run_status_str) == Some(name),
        });
    }
    let noops = [
        ("", "real and noop"),
        ("no", "real runs"),
        ("yes", "noop runs"),
    ]
    .into_iter()
    .map(|(value, label)| Choice {
        value: value.into(),
        label: label.into(),
        selected: query.noop.as_deref().unwrap_or_default() == value,
    })
    .collect();
    Ok(render(&RunsPage {
        layout: Layout::new(&user, "runs", "Runs"),
        rows,
        node: node.unwrap_or_default(),
        since: query.since.unwrap_or_default(),
        until: query.until.unwrap_or_default(),
        statuses,
        noops,
        next_href,
        first_href,
    }))
}

/// A diff's lines with a class each, for colour.
pub fn diff_lines(diff: &str) -> Vec<(&'static str, String)> {
    clean(diff)
        .lines()
        .map(|line| {
            let class = if line.starts_with("+++") || line.starts_with("---") {
                "file"
            } else if line.starts_with('+') {
                "add"
            } else if line.starts_with('-') {
                "del"
            } else if line.starts_with("@@") {
                "hunk"
            } else {
                ""
            };
            (class, line.to_owned())
        })
        .collect()
}

/// `YYYY-MM-DD` as the timestamp of its midnight UTC.
fn parse_day(text: Option<&str>) -> Result<Option<Timestamp>, UiError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    let invalid = || UiError::BadRequest(format!("{text:?} is not a date (YYYY-MM-DD)"));
    let mut parts = text.splitn(3, '-');
    let (Some(y), Some(m), Some(d)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(invalid());
    };
    let (Ok(y), Ok(m), Ok(d)) = (y.parse::<i64>(), m.parse::<i64>(), d.parse::<i64>()) else {
        return Err(invalid());
    };
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return Err(invalid());
    }
    Ok(Some(Timestamp(days_from_civil(y, m, d) * 86_400)))
}

pub use steward_protocol::calendar::days_from_civil;

/// A resource event on the run page.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Resource id.
    pub resource: String,
    /// Badge.
    pub badge: Badge,
    /// Corrective / intentional, for changes.
    pub kind: Option<Badge>,
    /// Message (cleaned).
    pub message: String,
    /// Diff lines (cleaned), each with its class (`add`, `del`, `hunk`, ``).
    pub diff: Vec<(&'static str, String)>,
    /// Drift notice (cleaned), empty when none.
    pub drift: String,
    /// The drift badge, shown with `drift`.
    pub drift_badge: Badge,
    /// Duration.
    pub duration: String,
    /// Row class for emphasis.
    pub row_class: &'static str,
}

/// The run page.
#[derive(Debug, Template)]
#[template(path = "ui/run.html")]
pub struct RunPage {
    layout: Layout,
    run_id: String,
    node: String,
    node_href: String,
    badge: Badge,
    noop: bool,
    started: String,
    started_ago: String,
    finished: String,
    received: String,
    duration: String,
    serial: String,
    agent_version: String,
    message: String,
    totals: Vec<(&'static str, u32, &'static str)>,
    problems: Vec<EventRow>,
    notices: Vec<EventRow>,
    legend: Vec<LegendItem>,
    changes: Vec<EventRow>,
    others: Vec<EventRow>,
}

/// `GET /ui/runs/{run_id}`.
pub async fn detail(
    State(state): State<AppState>,
    user: UiUser,
    Path(run_id): Path<String>,
) -> Result<Response, UiError> {
    let run_id = RunId(run_id);
    if !run_id.is_valid() {
        return Err(UiError::BadRequest("invalid run id".into()));
    }
    let found = db::runs::get_with_events(&state.db, &run_id)
        .await?
        .ok_or_else(|| UiError::NotFound(format!("run {run_id} does not exist")))?;
    let now = service::now();
    let run = found.run;
    let mut problems = Vec::new();
    let mut notices = Vec::new();
    let mut changes = Vec::new();
    let mut others = Vec::new();
    for event in found.events {
        let kind = match event.status {
            ResourceStatus::Changed | ResourceStatus::WouldChange => Some(if event.corrective {
                Badge::new("corrective", "warn")
            } else {
                Badge::new("intentional", "info")
            }),
            _ => None,
        };
        let row = EventRow {
            resource: clean(&event.resource.0),
            badge: Badge::resource(event.status),
            kind,
            message: event.message.as_deref().map(clean).unwrap_or_default(),
            diff: event.diff.as_deref().map(diff_lines).unwrap_or_default(),
            drift: event.drift.as_deref().map(clean).unwrap_or_default(),
            drift_badge: drift_badge(),
            duration: format_duration_ms(event.duration_ms),
            row_class: match event.status {
                ResourceStatus::Failed => "row-failed",
                ResourceStatus::Skipped => "row-warn",
                ResourceStatus::Kept | ResourceStatus::Deferred => "row-notice",
                _ if event.drift.is_some() => "row-notice",
                _ => "",
            },
        };
        // Kept, deferred and drift are notices: never with the problems. A change that also
        // noted drift stays a change (its drift is shown on its row).
        match event.status {
            ResourceStatus::Failed | ResourceStatus::Skipped => problems.push(row),
            ResourceStatus::Changed | ResourceStatus::WouldChange => changes.push(row),
            ResourceStatus::Kept | ResourceStatus::Deferred => notices.push(row),
            ResourceStatus::Unchanged if event.drift.is_some() => notices.push(row),
            ResourceStatus::Unchanged => others.push(row),
        }
    }
    let t = &run.totals;
    let mut totals = vec![
        ("resources", t.resources, "muted"),
        ("changed", t.changed, "changed"),
        ("would change", t.would_change, "info"),
        ("failed", t.failed, "failed"),
        ("skipped", t.skipped, "warn"),
        ("unchanged", t.unchanged, "ok"),
    ];
    // The notices only when there are some: most runs have none.
    totals.extend(
        [
            ("kept", t.kept, "info"),
            ("deferred", t.deferred, "warn"),
            ("drift", t.drift, "warn"),
        ]
        .into_iter()
        .filter(|(_, count, _)| *count > 0),
    );
    Ok(render(&RunPage {
        layout: Layout::new(&user, "runs", format!("Run on {}", run.node.0)),
        run_id: run.run_id.0.clone(),
        node_href: format!("/ui/nodes/{}", run.node.0),
        node: run.node.0.clone(),
        badge: Badge::run(run.status),
        noop: run.noop,
        started: format_time_full(run.started_at),
        started_ago: ago(run.started_at, now),
        finished: format_time(run.finished_at),
        received: format_time(run.received_at),
        duration: format_duration_ms(run.duration_ms),
        serial: run
            .catalog_serial
            .map_or_else(|| "none".to_owned(), |s| s.0.to_string()),
        agent_version: clean_short(&run.agent_version, 40),
        message: run.message.as_deref().map(clean).unwrap_or_default(),
        totals,
        problems,
        legend: if notices.is_empty() {
            Vec::new()
        } else {
            notice_legend()
        },
        notices,
        changes,
        others,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(
            parse_day(Some("2024-02-29")).unwrap(),
            Some(Timestamp(days_from_civil(2024, 2, 29) * 86_400))
        );
        assert!(parse_day(Some("2024-13-01")).is_err());
        assert!(parse_day(Some("yesterday")).is_err());
        assert_eq!(parse_day(Some("")).unwrap(), None);
    }
}
