//! The agent API: enrollment (public), catalogs, the run-now long-poll and reports (signed).
//! Every body is parsed with [`steward_protocol::strict::from_slice`] under its size limit.

use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use steward_protocol::request::SignedRequestHeaders;
use steward_protocol::{
    strict, EnrollRequest, EnrollResponse, Facts, RunReport, Serial, Totals, MAX_ENROLL_BYTES,
    MAX_REPORT_BYTES,
};

use crate::db::runs::InsertOutcome;
use crate::db::{self, DbError};
use crate::http::auth::{AgentAuth, AgentRequest, ClientAddr};
use crate::http::error::ApiError;
use crate::metrics::Metrics;
use crate::service;
use crate::service::catalog::{CatalogAnswer, NodeRequest};
use crate::service::enroll::{self as enrollment, EnrollContext, Possession};
use crate::service::reports::ReportError;
use crate::state::AppState;

/// Largest facts document in a catalog request.
pub const MAX_FACTS_BYTES: usize = 64 * 1024;

/// `POST /v1/enroll`: a host asks to join. The token travels only in this body; the request is
/// signed with the key it enrolls (see [`enrollment::Possession`]).
pub async fn enroll(
    State(state): State<AppState>,
    client: ClientAddr,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<EnrollResponse>, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_ENROLL_BYTES)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_ENROLL_BYTES))?;
    let request: EnrollRequest = strict::from_slice(&bytes, MAX_ENROLL_BYTES)
        .map_err(|error| ApiError::BadRequest(format!("invalid enrollment request: {error}")))?;
    let context = EnrollContext {
        db: &state.db,
        keys: &state.keys,
        catalogs: &state.catalogs,
        settings: &state.config.enroll,
        limits: &state.enroll_limits,
        nonces: &state.nonces,
        max_clock_skew_secs: state.config.max_clock_skew_secs,
    };
    let signature = SignedRequestHeaders::from_lookup(|name| {
        headers.get(name).and_then(|value| value.to_str().ok())
    })
    .ok();
    let possession = Possession {
        headers: signature.as_ref(),
        body: &bytes,
    };
    match enrollment::enroll(
        context,
        &request,
        possession,
        &client.source(),
        service::now(),
    )
    .await
    {
        Ok(response) => Ok(Json(response)),
        Err(error) => {
            Metrics::inc(&state.metrics.enroll_refused);
            Err(error.into())
        }
    }
}

/// `POST /v1/catalog` (signed; body: facts): the node's signed catalog envelope. `ETag` is the
/// payload digest; `If-None-Match` with it answers 304 (and then no envelope is even looked
/// up). A failed compile serves the last good serial (with `x-steward-stale: 1`: 304, or its
/// envelope while the envelope cache holds it), or 503 when there is none; a busy server
/// answers 429 with `Retry-After`.
pub async fn catalog(
    State(state): State<AppState>,
    AgentAuth(agent): AgentAuth,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let facts: Facts = if agent.body.is_empty() {
        Facts::default()
    } else {
        strict::from_slice(&agent.body, MAX_FACTS_BYTES)
            .map_err(|error| ApiError::BadRequest(format!("invalid facts: {error}")))?
    };
    check_machine_id(&state, &agent, &facts).await?;
    state
        .facts
        .store(&state.db, &agent.node.name, &facts, service::now())
        .await?;
    let request = NodeRequest {
        node: agent.node.name.clone(),
        encryption_key: agent.key.encryption_key.clone(),
        stored_serial: agent.node.catalog_serial,
        held: if_none_match(&headers),
    };
    match state.catalogs.catalog_for(&request, service::now()).await? {
        CatalogAnswer::Envelope {
            issued,
            envelope,
            stale,
        } => {
            let etag = format!("\"{}\"", issued.digest);
            let mut response = match envelope {
                Some(envelope) => {
                    ([(header::CONTENT_TYPE, "application/json")], envelope).into_response()
                }
                None => StatusCode::NOT_MODIFIED.into_response(),
            };
            let response_headers = response.headers_mut();
            if let Ok(value) = HeaderValue::from_str(&etag) {
                response_headers.insert(header::ETAG, value);
            }
            if let Ok(value) = HeaderValue::from_str(&issued.serial.to_string()) {
                response_headers.insert("x-steward-serial", value);
            }
            response_headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            if stale {
                response_headers.insert("x-steward-stale", HeaderValue::from_static("1"));
            }
            Ok(response)
        }
        CatalogAnswer::Busy { retry_after } => Err(ApiError::TooManyRequests { retry_after }),
        CatalogAnswer::Unavailable => Err(ApiError::Unavailable),
    }
}

/// The entity tags of `If-None-Match`, unquoted (`*` kept as is).
fn if_none_match(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|tag| tag.trim().trim_start_matches("W/").trim_matches('"'))
        .filter(|tag| !tag.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `GET /v1/wait` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// The serial the agent holds.
    pub serial: Option<u64>,
    /// Longest wait in seconds (capped by `catalog.wait_timeout`).
    pub timeout: Option<u64>,
}

/// Why a long-poll returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WakeReason {
    /// The node's serial differs from the one the agent holds: fetch the catalog.
    SerialChanged,
    /// An admin asked for a run now.
    RunNow,
    /// The site changed: fetch the catalog (the serial moves if the content did).
    SiteChanged,
    /// Nothing happened within the timeout (or the server is shutting down).
    Timeout,
}

/// `GET /v1/wait` answer.
#[derive(Debug, Serialize)]
pub struct WaitAnswer {
    /// Why it returned.
    pub reason: WakeReason,
    /// The node's current serial, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial: Option<Serial>,
}

/// `GET /v1/wait?serial=N` (signed): returns as soon as the node's serial differs from `N`, an
/// admin's run-now is pending for it (which it then clears: the agent has been told), or the
/// site or its Vault data changed (also when that happened since the node's last catalog, while
/// it was not waiting); else after the timeout (at most `catalog.wait_timeout`, 55 s by default).
/// Waiting holds no database connection: it sleeps on the node's watch channel.
pub async fn wait(
    State(state): State<AppState>,
    AgentAuth(agent): AgentAuth,
    query: Result<Query<WaitQuery>, QueryRejection>,
) -> Result<Json<WaitAnswer>, ApiError> {
    let Query(query) = query.map_err(|error| ApiError::BadRequest(error.body_text()))?;
    let node = agent.node.name.clone();
    let limit = state.config.wait_timeout;
    let timeout = query
        .timeout
        .map_or(limit, |secs| Duration::from_secs(secs).min(limit));
    let deadline = tokio::time::Instant::now() + timeout;
    // Subscribe before checking, so nothing that happens between the check and the wait is
    // missed.
    let mut node_changes = state.waiters.subscribe(&node);
    let mut site_changes = state.catalogs.subscribe_site();
    let mut shutdown = state.shutdown.clone();
    node_changes.mark_unchanged();
    site_changes.mark_unchanged();
    loop {
        let current = db::nodes::get_by_name(&state.db, &node)
            .await?
            .ok_or(ApiError::Unauthorized)?;
        if let Some(requested_at) = current.run_now_requested_at {
            db::nodes::clear_run_now(&state.db, &node, requested_at).await?;
            return Ok(Json(WaitAnswer {
                reason: WakeReason::RunNow,
                serial: current.catalog_serial,
            }));
        }
        let serial = state
            .catalogs
            .current_serial(&node)
            .await
            .max(current.catalog_serial);
        if serial.map(|serial| serial.0) != query.serial {
            return Ok(Json(WaitAnswer {
                reason: WakeReason::SerialChanged,
                serial,
            }));
        }
        // A change while the host was applying its catalog (not waiting) is not lost.
        if state.catalogs.behind_site(&node) {
            return Ok(Json(WaitAnswer {
                reason: WakeReason::SiteChanged,
                serial,
            }));
        }
        tokio::select! {
            changed = node_changes.changed() => {
                if changed.is_err() {
                    return Ok(Json(WaitAnswer { reason: WakeReason::Timeout, serial }));
                }
            }
            changed = site_changes.changed() => {
                let reason = if changed.is_ok() { WakeReason::SiteChanged } else { WakeReason::Timeout };
                return Ok(Json(WaitAnswer { reason, serial }));
            }
            () = tokio::time::sleep_until(deadline) => {
                return Ok(Json(WaitAnswer { reason: WakeReason::Timeout, serial }));
            }
            _ = shutdown.wait_for(|stopping| *stopping) => {
                return Ok(Json(WaitAnswer { reason: WakeReason::Timeout, serial }));
            }
        }
    }
}

/// `POST /v1/reports` answer.
#[derive(Debug, Serialize)]
pub struct ReportAnswer {
    /// The run id.
    pub run_id: String,
    /// `stored`, or `duplicate` for a resubmission.
    pub outcome: &'static str,
}

/// `POST /v1/reports` (signed): stores a run report, idempotent by run id, through the report
/// writer ([`crate::service::reports`]); the answer comes once it is committed. The report must
/// name the node whose key signed the request (THREATS S2), carry a valid UUID run id and totals
/// that match its events.
pub async fn report(
    State(state): State<AppState>,
    AgentAuth(agent): AgentAuth,
) -> Result<Json<ReportAnswer>, ApiError> {
    let report: RunReport = strict::from_slice(&agent.body, MAX_REPORT_BYTES)
        .map_err(|error| ApiError::BadRequest(format!("invalid run report: {error}")))?;
    if report.node != agent.node.name {
        tracing::warn!(node = %agent.node.name, "report names another node; refused");
        return Err(ApiError::Forbidden);
    }
    if !report.run_id.is_valid() {
        return Err(ApiError::BadRequest(
            "invalid run_id: expected a lowercase hyphenated uuid".into(),
        ));
    }
    if report.totals != Totals::of(&report.events) {
        return Err(ApiError::BadRequest(
            "totals do not match the events".into(),
        ));
    }
    check_machine_id(&state, &agent, &report.facts).await?;
    let run_id = report.run_id.clone();
    let facts = report.facts.clone();
    let totals = report.totals;
    let outcome = match state.reports.store(report, service::now()).await {
        Ok(outcome) => outcome,
        Err(ReportError::Db(DbError::RunIdConflict { .. })) => {
            return Err(ApiError::Conflict(
                "this run id was reported by another node".into(),
            ))
        }
        Err(ReportError::Stopped) => return Err(ApiError::Unavailable),
        Err(error) => return Err(ApiError::Internal(error.into())),
    };
    state
        .facts
        .store(&state.db, &agent.node.name, &facts, service::now())
        .await?;
    let outcome = match outcome {
        InsertOutcome::Inserted => {
            Metrics::inc(&state.metrics.reports_received);
            state.metrics.record_report(&totals);
            "stored"
        }
        InsertOutcome::Duplicate => {
            Metrics::inc(&state.metrics.reports_duplicate);
            "duplicate"
        }
    };
    Ok(Json(ReportAnswer {
        run_id: run_id.0,
        outcome,
    }))
}

/// THREATS E4: the key's machine id (from enrollment) against the one in these facts. Another
/// machine id means a cloned identity: the node is quarantined and the request refused.
async fn check_machine_id(
    state: &AppState,
    agent: &AgentRequest,
    facts: &Facts,
) -> Result<(), ApiError> {
    let (Some(known), Some(seen)) = (&agent.key.machine_id, &facts.machine_id) else {
        return Ok(());
    };
    if known == seen {
        return Ok(());
    }
    let mut tx = state.db.begin_write().await?;
    let actor = format!("node:{}", agent.node.name);
    enrollment::quarantine(
        &mut tx,
        &agent.node.name,
        &actor,
        "signed request",
        service::now(),
    )
    .await?;
    tx.commit().await.map_err(|source| DbError::Query {
        context: "committing quarantine",
        source,
    })?;
    Err(ApiError::Forbidden)
}
