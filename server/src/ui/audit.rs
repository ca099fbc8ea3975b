//! The audit log: every admin action (approve, revoke, run now, tokens, logins), newest first,
//! paged by id.

use askama::Template;
use axum::extract::{Query, State};
use axum::response::Response;
use serde::Deserialize;

use crate::db::audit::AuditFilter;
use crate::db::{self};
use crate::service;
use crate::state::AppState;
use crate::ui::auth::UiUser;
use crate::ui::text::clean_short;
use crate::ui::{ago, format_time_full, query_escape, render, Badge, Layout, UiError};

const PAGE_SIZE: u32 = 100;

/// An audit entry.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// When.
    pub when: String,
    /// When (title).
    pub when_title: String,
    /// Who.
    pub actor: String,
    /// What.
    pub action: Badge,
    /// On what.
    pub target: String,
    /// Link to the target, when it is a node.
    pub target_href: Option<String>,
    /// Details (JSON, short).
    pub detail: String,
}

/// The audit page.
#[derive(Debug, Template)]
#[template(path = "ui/audit.html")]
pub struct AuditPage {
    layout: Layout,
    rows: Vec<AuditRow>,
    target: String,
    next_href: Option<String>,
}

/// `GET /ui/audit` query.
#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    target: Option<String>,
    before: Option<i64>,
}

/// `GET /ui/audit?target=&before=`.
pub async fn page(
    State(state): State<AppState>,
    user: UiUser,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let query = query.map(|Query(q)| q).unwrap_or_default();
    let target = query
        .target
        .map(|t| t.trim().to_owned())
        .filter(|t| !t.is_empty());
    let entries = db::audit::list(
        &state.db,
        &AuditFilter {
            target: target.clone(),
            before_id: query.before,
            limit: PAGE_SIZE,
        },
    )
    .await?;
    let now = service::now();
    let next_href = (entries.len() == PAGE_SIZE as usize)
        .then(|| entries.last().map(|e| e.id))
        .flatten()
        .map(|id| match &target {
            Some(target) => format!("/ui/audit?target={}&before={id}", query_escape(target)),
            None => format!("/ui/audit?before={id}"),
        });
    let rows = entries
        .into_iter()
        .map(|entry| {
            let class = if entry.action.contains("revoke") {
                "failed"
            } else if entry.action.contains("approve") {
                "ok"
            } else if entry.action.starts_with("ui.") {
                "muted"
            } else {
                "info"
            };
            let target = entry.target.clone().unwrap_or_default();
            AuditRow {
                when: ago(entry.at, now),
                when_title: format_time_full(entry.at),
                actor: clean_short(&entry.actor, 80),
                action: Badge::new(clean_short(&entry.action, 40), class),
                target_href: (entry.action.starts_with("node.")
                    && steward_protocol::is_valid_hostname(&target))
                .then(|| format!("/ui/nodes/{target}")),
                target: clean_short(&target, 80),
                detail: entry
                    .detail
                    .map(|d| clean_short(&d.to_string(), 300))
                    .unwrap_or_default(),
            }
        })
        .collect();
    Ok(render(&AuditPage {
        layout: Layout::new(&user, "audit", "Audit log"),
        rows,
        target: target.unwrap_or_default(),
        next_href,
    }))
}
