//! The overview: nodes by status, run outcomes and durations per day over 14 days (SVG drawn on
//! the server), recent failed runs, current compile errors.

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use steward_protocol::{RunStatus, Timestamp};

use crate::db::{self};
use crate::service;
use crate::state::AppState;
use crate::ui::auth::UiUser;
use crate::ui::chart::{bar_chart, format_count, format_ms, BarChart, Column};
use crate::ui::nodes::{health, seg_class, unreported_after, Health};
use crate::ui::queries;
use crate::ui::text::{clean, clean_short};
use crate::ui::{ago, format_time, format_time_full, render, Badge, Layout, UiError};

/// Days in the charts.
const CHART_DAYS: i64 = 14;

/// A status count card.
#[derive(Debug, Clone)]
pub struct Card {
    /// Label.
    pub label: &'static str,
    /// Count.
    pub count: usize,
    /// Colour class.
    pub class: &'static str,
    /// Link to the filtered node list.
    pub href: String,
}

/// A failed run in the overview.
#[derive(Debug, Clone)]
pub struct FailedRun {
    /// Node.
    pub node: String,
    /// Node link.
    pub node_href: String,
    /// Run link.
    pub href: String,
    /// Badge.
    pub badge: Badge,
    /// When.
    pub when: String,
    /// When (title).
    pub when_title: String,
    /// What.
    pub summary: String,
}

/// A current compile error.
#[derive(Debug, Clone)]
pub struct CompileError {
    /// Node.
    pub node: String,
    /// Node link.
    pub node_href: String,
    /// Since.
    pub since: String,
    /// Occurrences.
    pub occurrences: u32,
    /// `FILE:LINE: field: message` lines.
    pub message: String,
}

/// The overview page.
#[derive(Debug, Template)]
#[template(path = "ui/overview.html")]
pub struct OverviewPage {
    layout: Layout,
    total: usize,
    cards: Vec<Card>,
    outcomes: BarChart,
    durations: BarChart,
    legend: Vec<(&'static str, &'static str)>,
    failed_runs: Vec<FailedRun>,
    compile_errors: Vec<CompileError>,
    unreported_after: String,
}

/// `GET /ui/`.
pub async fn page(State(state): State<AppState>, user: UiUser) -> Result<Response, UiError> {
    let now = service::now();
    let threshold = unreported_after(&state);
    let fleet = queries::fleet(&state.db, None).await?;
    let cards = Health::ALL
        .into_iter()
        .filter(|h| *h != Health::Revoked)
        .map(|h| Card {
            label: h.label(),
            count: fleet
                .iter()
                .filter(|node| health(node, now, threshold) == h)
                .count(),
            class: h.class(),
            href: format!("/ui/nodes?status={}", h.key()),
        })
        .collect();
    let today = now.0.div_euclid(86_400);
    let first_day = today - (CHART_DAYS - 1);
    let per_day = queries::outcomes_per_day(&state.db, Timestamp(first_day * 86_400), None).await?;
    let (outcomes, durations) = day_charts(&per_day, first_day, today);
    let failed_runs = queries::recent_failed_runs(&state.db, 10)
        .await?
        .into_iter()
        .map(
            |(node, run_id, status, started_at, failed, message)| FailedRun {
                node_href: format!("/ui/nodes/{node}"),
                node,
                href: format!("/ui/runs/{run_id}"),
                badge: Badge::run(status),
                when: ago(started_at, now),
                when_title: format_time_full(started_at),
                summary: if status == RunStatus::Error {
                    message
                        .as_deref()
                        .map(|m| clean_short(m, 120))
                        .unwrap_or_else(|| "could not run".into())
                } else {
                    format!(
                        "{failed} resource{} failed",
                        if failed == 1 { "" } else { "s" }
                    )
                },
            },
        )
        .collect();
    let compile_errors = db::compile_failures::list_current(&state.db)
        .await?
        .into_iter()
        .map(|failure| CompileError {
            node_href: format!("/ui/nodes/{}", failure.node.0),
            node: failure.node.0,
            since: format_time(failure.first_at),
            occurrences: failure.occurrences,
            message: clean(&failure.message),
        })
        .collect();
    let total = fleet.len();
    Ok(render(&OverviewPage {
        layout: Layout::new(&user, "overview", "Overview"),
        total,
        cards,
        outcomes,
        durations,
        legend: vec![
            ("seg-failed", "failed / error"),
            ("seg-changed", "changed"),
            ("seg-ok", "unchanged"),
            ("seg-info", "noop"),
        ],
        failed_runs,
        compile_errors,
        unreported_after: crate::ui::format_span(threshold),
    }))
}

/// The outcome (stacked) and mean-duration charts over `first_day..=last_day`.
pub fn day_charts(
    per_day: &[queries::DayOutcome],
    first_day: i64,
    last_day: i64,
) -> (BarChart, BarChart) {
    let order = [
        (RunStatus::Failed, "failed"),
        (RunStatus::Error, "error"),
        (RunStatus::Changed, "changed"),
        (RunStatus::Unchanged, "unchanged"),
        (RunStatus::Noop, "noop"),
    ];
    let mut outcome_columns = Vec::new();
    let mut duration_columns = Vec::new();
    for day in first_day..=last_day {
        let date = format_time(Timestamp(day * 86_400));
        let label = date.get(5..10).unwrap_or_default().to_owned();
        let of_day: Vec<&queries::DayOutcome> = per_day.iter().filter(|o| o.day == day).collect();
        let values = order
            .iter()
            .filter_map(|(status, name)| {
                let runs = of_day
                    .iter()
                    .find(|o| o.status == *status)
                    .map_or(0, |o| o.runs);
                (runs > 0).then(|| {
                    (
                        runs as f64,
                        seg_class(Badge::run(*status).class),
                        format!("{}: {runs} {name}", &date[..10.min(date.len())]),
                    )
                })
            })
            .collect();
        outcome_columns.push(Column {
            label: label.clone(),
            href: None,
            values,
        });
        let runs: u64 = of_day.iter().map(|o| o.runs).sum();
        let mean = if runs == 0 {
            0.0
        } else {
            of_day
                .iter()
                .map(|o| o.mean_duration_ms * o.runs as f64)
                .sum::<f64>()
                / runs as f64
        };
        let max = of_day.iter().map(|o| o.max_duration_ms).max().unwrap_or(0);
        duration_columns.push(Column {
            label,
            href: None,
            values: vec![(
                mean,
                "seg-info",
                format!(
                    "{}: mean {}, longest {}",
                    &date[..10.min(date.len())],
                    crate::ui::format_duration_ms(mean as u64),
                    crate::ui::format_duration_ms(max)
                ),
            )],
        });
    }
    (
        bar_chart(
            &outcome_columns,
            "runs per day by outcome, last 14 days",
            format_count,
        ),
        bar_chart(
            &duration_columns,
            "mean run duration per day, last 14 days",
            format_ms,
        ),
    )
}
