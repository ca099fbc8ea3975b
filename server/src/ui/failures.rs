//! Failures across the fleet: what is failing now (in each node's last run), grouped by
//! resource; what failed over the last 7 days; and flapping resources (changed in each of a
//! node's last runs: not idempotent).

use askama::Template;
use axum::extract::State;
use axum::response::Response;
use steward_protocol::Timestamp;

use crate::service;
use crate::state::AppState;
use crate::ui::auth::UiUser;
use crate::ui::nodes::FLAPPING_RUNS;
use crate::ui::queries;
use crate::ui::text::{clean, clean_short};
use crate::ui::{ago, format_time, render, Layout, UiError};

/// Days of failure history.
const HISTORY_DAYS: i64 = 7;

/// A node where a resource fails.
#[derive(Debug, Clone)]
pub struct FailingNode {
    /// Node.
    pub node: String,
    /// Node link.
    pub node_href: String,
    /// Run link.
    pub run_href: String,
    /// When.
    pub when: String,
    /// The agent's message.
    pub message: String,
}

/// A resource failing now, with its nodes.
#[derive(Debug, Clone)]
pub struct FailingResource {
    /// Resource id.
    pub resource: String,
    /// Nodes.
    pub nodes: Vec<FailingNode>,
    /// The most common message (short), for the heading.
    pub headline: String,
}

/// A resource in the failure history.
#[derive(Debug, Clone)]
pub struct HistoryRow {
    /// Resource id.
    pub resource: String,
    /// Nodes.
    pub nodes: u64,
    /// Failed events.
    pub events: u64,
    /// First.
    pub first: String,
    /// Last.
    pub last: String,
}

/// A flapping resource.
#[derive(Debug, Clone)]
pub struct FlappingRow {
    /// Node.
    pub node: String,
    /// Node link.
    pub node_href: String,
    /// Resource.
    pub resource: String,
    /// Runs.
    pub runs: u32,
}

/// The failures page.
#[derive(Debug, Template)]
#[template(path = "ui/failures.html")]
pub struct FailuresPage {
    layout: Layout,
    failing: Vec<FailingResource>,
    history: Vec<HistoryRow>,
    flapping: Vec<FlappingRow>,
    flapping_runs: u32,
}

/// `GET /ui/failures`.
pub async fn page(State(state): State<AppState>, user: UiUser) -> Result<Response, UiError> {
    let now = service::now();
    let mut failing: Vec<FailingResource> = Vec::new();
    for failure in queries::current_failures(&state.db).await? {
        let node = FailingNode {
            node_href: format!("/ui/nodes/{}", failure.node),
            node: failure.node,
            run_href: format!("/ui/runs/{}", failure.run_id),
            when: ago(failure.started_at, now),
            message: failure.message.as_deref().map(clean).unwrap_or_default(),
        };
        // Grouped by the resource as shown: compare the cleaned id with the group's.
        let resource = clean(&failure.resource);
        match failing.last_mut() {
            Some(group) if group.resource == resource => group.nodes.push(node),
            _ => failing.push(FailingResource {
                resource,
                headline: clean_short(&node.message, 160),
                nodes: vec![node],
            }),
        }
    }
    failing.sort_by(|a, b| {
        b.nodes
            .len()
            .cmp(&a.nodes.len())
            .then(a.resource.cmp(&b.resource))
    });
    let history =
        queries::failure_history(&state.db, Timestamp(now.0 - HISTORY_DAYS * 86_400), 100)
            .await?
            .into_iter()
            .map(|row| HistoryRow {
                resource: clean(&row.resource),
                nodes: row.nodes,
                events: row.events,
                first: format_time(row.first_at),
                last: ago(row.last_at, now),
            })
            .collect();
    let flapping = queries::flapping(
        &state.db,
        FLAPPING_RUNS,
        Timestamp(now.0 - 30 * 86_400),
        None,
    )
    .await?
    .into_iter()
    .map(|row| FlappingRow {
        node_href: format!("/ui/nodes/{}", row.node),
        node: row.node,
        resource: clean(&row.resource),
        runs: row.runs,
    })
    .collect();
    Ok(render(&FailuresPage {
        layout: Layout::new(&user, "failures", "Failures"),
        failing,
        history,
        flapping,
        flapping_runs: FLAPPING_RUNS,
    }))
}
