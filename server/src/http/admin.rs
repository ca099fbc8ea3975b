//! The admin JSON API under `/api/v1/`, behind the admin bearer token (the web UI will add SSO).
//! Reads are GETs and never change state; every state change is a POST that writes the audit
//! log (through [`crate::service::admin`]).

use axum::body::Body;
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use steward_protocol::join::JoinString;
use steward_protocol::{strict, EnrollmentStatus, Facts, NodeId, ResourceEvent, RunId, Timestamp};

use crate::config::parse_duration;
use crate::db::audit::{AuditEntry, AuditFilter};
use crate::db::catalogs::CatalogSummary;
use crate::db::compile_failures::CompileFailure;
use crate::db::keys::NodeKey;
use crate::db::nodes::Node;
use crate::db::pending_keys::PendingKey;
use crate::db::runs::{Page, Run, RunCursor, RunFilter};
use crate::db::tokens::Token;
use crate::db::{self};
use crate::http::auth::Admin;
use crate::http::error::ApiError;
use crate::metrics::status_name;
use crate::service;
use crate::service::admin::{self as operations, TokenRequest};
use crate::state::AppState;

/// Largest admin request body.
const MAX_ADMIN_BODY: usize = 16 * 1024;

fn path<T>(extracted: Result<Path<T>, PathRejection>) -> Result<T, ApiError> {
    extracted
        .map(|Path(value)| value)
        .map_err(|error| ApiError::BadRequest(error.body_text()))
}

fn query<T>(extracted: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    extracted
        .map(|Query(value)| value)
        .map_err(|error| ApiError::BadRequest(error.body_text()))
}

fn node_name(name: String) -> Result<NodeId, ApiError> {
    if steward_protocol::is_valid_hostname(&name) {
        Ok(NodeId(name))
    } else {
        Err(ApiError::BadRequest("invalid node name".into()))
    }
}

async fn json_body<T: serde::de::DeserializeOwned + Default>(body: Body) -> Result<T, ApiError> {
    let bytes = axum::body::to_bytes(body, MAX_ADMIN_BODY)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_ADMIN_BODY))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    strict::from_slice(&bytes, MAX_ADMIN_BODY)
        .map_err(|error| ApiError::BadRequest(format!("invalid request body: {error}")))
}

/// A node in lists.
#[derive(Debug, Serialize)]
pub struct NodeView {
    name: String,
    status: &'static str,
    class: Option<String>,
    created_at: i64,
    approved_at: Option<i64>,
    last_seen_at: Option<i64>,
    machine_id: Option<String>,
    catalog_serial: Option<u64>,
    catalog_digest: Option<String>,
    run_now_requested_at: Option<i64>,
}

impl From<Node> for NodeView {
    fn from(node: Node) -> NodeView {
        NodeView {
            name: node.name.0,
            status: status_name(node.status),
            class: node.class,
            created_at: node.created_at.0,
            approved_at: node.approved_at.map(|t| t.0),
            last_seen_at: node.last_seen_at.map(|t| t.0),
            machine_id: node.machine_id,
            catalog_serial: node.catalog_serial.map(|s| s.0),
            catalog_digest: node.catalog_digest,
            run_now_requested_at: node.run_now_requested_at.map(|t| t.0),
        }
    }
}

/// A key in a node's history.
#[derive(Debug, Serialize)]
pub struct KeyView {
    key_id: String,
    encryption_key: String,
    machine_id: Option<String>,
    created_at: i64,
    revoked_at: Option<i64>,
    revoke_reason: Option<String>,
}

impl From<NodeKey> for KeyView {
    fn from(key: NodeKey) -> KeyView {
        KeyView {
            key_id: key.key_id.0,
            encryption_key: key.encryption_key,
            machine_id: key.machine_id,
            created_at: key.created_at.0,
            revoked_at: key.revoked_at.map(|t| t.0),
            revoke_reason: key.revoke_reason,
        }
    }
}

/// A key waiting for approval.
#[derive(Debug, Serialize)]
pub struct PendingKeyView {
    key_id: String,
    machine_id: Option<String>,
    token_id: Option<String>,
    requested_at: i64,
}

impl From<PendingKey> for PendingKeyView {
    fn from(pending: PendingKey) -> PendingKeyView {
        PendingKeyView {
            key_id: pending.key.key_id.0,
            machine_id: pending.key.machine_id,
            token_id: pending.token_id,
            requested_at: pending.requested_at.0,
        }
    }
}

/// A compile failure.
#[derive(Debug, Serialize)]
pub struct FailureView {
    node: String,
    first_at: i64,
    last_at: i64,
    occurrences: u32,
    message: String,
    site_hash: Option<String>,
    resolved_at: Option<i64>,
}

impl From<CompileFailure> for FailureView {
    fn from(failure: CompileFailure) -> FailureView {
        FailureView {
            node: failure.node.0,
            first_at: failure.first_at.0,
            last_at: failure.last_at.0,
            occurrences: failure.occurrences,
            message: failure.message,
            site_hash: failure.site_hash,
            resolved_at: failure.resolved_at.map(|t| t.0),
        }
    }
}

/// A stored catalog's summary.
#[derive(Debug, Serialize)]
pub struct CatalogView {
    serial: u64,
    digest: String,
    compiled_at: i64,
    expires_at: i64,
    site_hash: String,
}

impl From<CatalogSummary> for CatalogView {
    fn from(catalog: CatalogSummary) -> CatalogView {
        CatalogView {
            serial: catalog.serial.0,
            digest: catalog.digest,
            compiled_at: catalog.compiled_at.0,
            expires_at: catalog.expires_at.0,
            site_hash: catalog.site_hash,
        }
    }
}

/// `GET /api/v1/nodes` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesQuery {
    status: Option<EnrollmentStatus>,
}

/// `GET /api/v1/nodes[?status=pending]`.
pub async fn list_nodes(
    State(state): State<AppState>,
    _admin: Admin,
    params: Result<Query<NodesQuery>, QueryRejection>,
) -> Result<Json<Vec<NodeView>>, ApiError> {
    let params = query(params)?;
    let nodes = db::nodes::list(&state.db, params.status).await?;
    Ok(Json(nodes.into_iter().map(NodeView::from).collect()))
}

/// `GET /api/v1/nodes/{name}` answer.
#[derive(Debug, Serialize)]
pub struct NodeDetail {
    node: NodeView,
    facts: Option<Facts>,
    keys: Vec<KeyView>,
    pending_key: Option<PendingKeyView>,
    compile_failure: Option<FailureView>,
    catalogs: Vec<CatalogView>,
}

/// `GET /api/v1/nodes/{name}`: the node, its facts, key history, waiting key, current compile
/// failure and recent catalogs.
pub async fn node_detail(
    State(state): State<AppState>,
    _admin: Admin,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<NodeDetail>, ApiError> {
    let name = node_name(path(name)?)?;
    let node = db::nodes::get_by_name(&state.db, &name)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("node {name:?} does not exist")))?;
    Ok(Json(NodeDetail {
        facts: db::nodes::get_facts(&state.db, &name).await?,
        keys: db::keys::history(&state.db, &name)
            .await?
            .into_iter()
            .map(KeyView::from)
            .collect(),
        pending_key: db::pending_keys::get(&state.db, &name)
            .await?
            .map(PendingKeyView::from),
        compile_failure: db::compile_failures::current(&state.db, &name)
            .await?
            .map(FailureView::from),
        catalogs: db::catalogs::list(&state.db, &name, 20)
            .await?
            .into_iter()
            .map(CatalogView::from)
            .collect(),
        node: NodeView::from(node),
    }))
}

/// `POST /api/v1/nodes/{name}/approve`.
pub async fn approve_node(
    State(state): State<AppState>,
    admin: Admin,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = node_name(path(name)?)?;
    let approved = operations::approve(&state.db, &name, &admin.actor, service::now()).await?;
    state.waiters.notify(&name);
    Ok(Json(serde_json::json!({
        "node": name,
        "status": "approved",
        "previous_status": status_name(approved.previous),
        "replaced_key": approved.replaced_key,
    })))
}

/// `POST /api/v1/nodes/{name}/revoke` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeBody {
    #[serde(default)]
    reason: String,
}

/// `POST /api/v1/nodes/{name}/revoke` (body optional: `{"reason": "..."}`).
pub async fn revoke_node(
    State(state): State<AppState>,
    admin: Admin,
    name: Result<Path<String>, PathRejection>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = node_name(path(name)?)?;
    let body: RevokeBody = json_body(body).await?;
    operations::revoke(&state.db, &name, &admin.actor, &body.reason, service::now()).await?;
    state.waiters.notify(&name);
    Ok(Json(
        serde_json::json!({ "node": name, "status": "revoked" }),
    ))
}

/// `POST /api/v1/nodes/{name}/reject`: refuses the new node, or the new key waiting beside an
/// approved node's key (the node keeps its current key).
pub async fn reject_node(
    State(state): State<AppState>,
    admin: Admin,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = node_name(path(name)?)?;
    let rejected = operations::reject(
        &state.db,
        &name,
        &admin.actor,
        "enrollment rejected",
        service::now(),
    )
    .await?;
    state.waiters.notify(&name);
    Ok(Json(serde_json::json!({
        "node": name,
        "rejected": match rejected {
            operations::Rejected::WaitingKey => "waiting_key",
            operations::Rejected::Node => "node",
        },
    })))
}

/// `POST /api/v1/nodes/{name}/run-now`.
pub async fn run_now(
    State(state): State<AppState>,
    admin: Admin,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let name = node_name(path(name)?)?;
    operations::run_now(&state.db, &name, &admin.actor, service::now()).await?;
    state.waiters.notify(&name);
    Ok(Json(serde_json::json!({ "node": name, "run_now": true })))
}

/// `GET /api/v1/runs` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    node: Option<String>,
    status: Option<steward_protocol::RunStatus>,
    noop: Option<bool>,
    since: Option<i64>,
    until: Option<i64>,
    limit: Option<u32>,
    before: Option<String>,
}

/// A run in lists.
#[derive(Debug, Serialize)]
pub struct RunView {
    run_id: String,
    node: String,
    catalog_serial: Option<u64>,
    started_at: i64,
    finished_at: i64,
    duration_ms: u64,
    status: steward_protocol::RunStatus,
    noop: bool,
    message: Option<String>,
    agent_version: String,
    totals: steward_protocol::Totals,
    received_at: i64,
}

impl From<Run> for RunView {
    fn from(run: Run) -> RunView {
        RunView {
            run_id: run.run_id.0,
            node: run.node.0,
            catalog_serial: run.catalog_serial.map(|s| s.0),
            started_at: run.started_at.0,
            finished_at: run.finished_at.0,
            duration_ms: run.duration_ms,
            status: run.status,
            noop: run.noop,
            message: run.message,
            agent_version: run.agent_version,
            totals: run.totals,
            received_at: run.received_at.0,
        }
    }
}

/// A page of runs.
#[derive(Debug, Serialize)]
pub struct RunPageView {
    runs: Vec<RunView>,
    /// Pass as `before` for the next page; absent on the last page.
    next: Option<String>,
}

/// `GET /api/v1/runs?node=&status=&noop=&since=&until=&limit=&before=`: newest first, keyset
/// pagination (`before` is the previous page's `next`).
pub async fn list_runs(
    State(state): State<AppState>,
    _admin: Admin,
    params: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<RunPageView>, ApiError> {
    let params = query(params)?;
    let node = params.node.map(node_name).transpose()?;
    let before = params
        .before
        .as_deref()
        .map(str::parse::<RunCursor>)
        .transpose()
        .map_err(|_| ApiError::BadRequest("invalid `before` cursor".into()))?;
    let filter = RunFilter {
        node,
        status: params.status,
        noop: params.noop,
        since: params.since.map(Timestamp),
        until: params.until.map(Timestamp),
    };
    let page = db::runs::list(
        &state.db,
        &filter,
        Page {
            limit: params.limit.unwrap_or(50),
            before,
        },
    )
    .await?;
    Ok(Json(RunPageView {
        runs: page.runs.into_iter().map(RunView::from).collect(),
        next: page.next.map(|cursor| cursor.to_string()),
    }))
}

/// `GET /api/v1/runs/{run_id}` answer.
#[derive(Debug, Serialize)]
pub struct RunDetail {
    run: RunView,
    events: Vec<ResourceEvent>,
}

/// `GET /api/v1/runs/{run_id}`: a run with its events.
pub async fn run_detail(
    State(state): State<AppState>,
    _admin: Admin,
    run_id: Result<Path<String>, PathRejection>,
) -> Result<Json<RunDetail>, ApiError> {
    let run_id = RunId(path(run_id)?);
    if !run_id.is_valid() {
        return Err(ApiError::BadRequest("invalid run id".into()));
    }
    let found = db::runs::get_with_events(&state.db, &run_id)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("run {run_id} does not exist")))?;
    Ok(Json(RunDetail {
        run: RunView::from(found.run),
        events: found.events,
    }))
}

/// `GET /api/v1/compile-failures`: every node's current compile failure.
pub async fn compile_failures(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<FailureView>>, ApiError> {
    let failures = db::compile_failures::list_current(&state.db).await?;
    Ok(Json(failures.into_iter().map(FailureView::from).collect()))
}

/// A bootstrap token (never its secret, which is not stored).
#[derive(Debug, Serialize)]
pub struct TokenView {
    token_id: String,
    description: String,
    created_at: i64,
    created_by: String,
    expires_at: i64,
    uses_allowed: u32,
    uses_done: u32,
    hostname_glob: Option<String>,
    class: Option<String>,
    auto_approve: bool,
    may_reenroll: bool,
    revoked_at: Option<i64>,
}

impl From<Token> for TokenView {
    fn from(token: Token) -> TokenView {
        TokenView {
            token_id: token.token_id,
            description: token.description,
            created_at: token.created_at.0,
            created_by: token.created_by,
            expires_at: token.expires_at.0,
            uses_allowed: token.uses_allowed,
            uses_done: token.uses_done,
            hostname_glob: token.hostname_glob,
            class: token.class,
            auto_approve: token.auto_approve,
            may_reenroll: token.may_reenroll,
            revoked_at: token.revoked_at.map(|t| t.0),
        }
    }
}

/// `GET /api/v1/tokens`.
pub async fn list_tokens(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<TokenView>>, ApiError> {
    let tokens = db::tokens::list(&state.db).await?;
    Ok(Json(tokens.into_iter().map(TokenView::from).collect()))
}

/// `POST /api/v1/tokens` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenBody {
    #[serde(default)]
    description: String,
    /// `24h` by default.
    ttl: Option<String>,
    /// 1 by default.
    uses: Option<u32>,
    hostname_glob: Option<String>,
    class: Option<String>,
    #[serde(default)]
    auto_approve: bool,
    #[serde(default)]
    may_reenroll: bool,
    /// Overrides `public_url` in the join string.
    server_url: Option<String>,
}

/// `POST /api/v1/tokens` answer: the join string is shown this once.
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    token_id: String,
    expires_at: i64,
    join_string: String,
}

/// `POST /api/v1/tokens`: creates a bootstrap token and returns its join string (once).
pub async fn create_token(
    State(state): State<AppState>,
    admin: Admin,
    body: Body,
) -> Result<Json<CreatedToken>, ApiError> {
    let body: CreateTokenBody = json_body(body).await?;
    let server_url = body
        .server_url
        .or_else(|| state.config.public_url.clone())
        .ok_or_else(|| {
            ApiError::BadRequest(
                "no server_url given and no `public_url` configured for join strings".into(),
            )
        })?;
    steward_protocol::join::check_server_url(&server_url)
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    let ttl = match &body.ttl {
        None => std::time::Duration::from_secs(86_400),
        Some(text) => parse_duration(text)
            .ok_or_else(|| ApiError::BadRequest(format!("invalid ttl {text:?}")))?,
    };
    let request = TokenRequest {
        description: body.description,
        ttl,
        uses: body.uses.unwrap_or(1),
        hostname_glob: body.hostname_glob,
        class: body.class,
        auto_approve: body.auto_approve,
        may_reenroll: body.may_reenroll,
    };
    let (token, expires_at) =
        operations::create_token(&state.db, &request, &admin.actor, service::now()).await?;
    let token_id = token.id().to_owned();
    let join = JoinString::new(&server_url, token, state.keys.root_key_id())
        .map_err(|error| ApiError::BadRequest(error.to_string()))?;
    Ok(Json(CreatedToken {
        token_id,
        expires_at: expires_at.0,
        join_string: join.to_string(),
    }))
}

/// `POST /api/v1/tokens/{token_id}/revoke`.
pub async fn revoke_token(
    State(state): State<AppState>,
    admin: Admin,
    token_id: Result<Path<String>, PathRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let token_id = path(token_id)?;
    if token_id.len() > 64 || !token_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(ApiError::BadRequest("invalid token id".into()));
    }
    operations::revoke_token(&state.db, &token_id, &admin.actor, service::now()).await?;
    Ok(Json(
        serde_json::json!({ "token_id": token_id, "revoked": true }),
    ))
}

/// `GET /api/v1/audit` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    target: Option<String>,
    before: Option<i64>,
    limit: Option<u32>,
}

/// An audit entry.
#[derive(Debug, Serialize)]
pub struct AuditView {
    id: i64,
    at: i64,
    actor: String,
    action: String,
    target: Option<String>,
    detail: Option<serde_json::Value>,
}

impl From<AuditEntry> for AuditView {
    fn from(entry: AuditEntry) -> AuditView {
        AuditView {
            id: entry.id,
            at: entry.at.0,
            actor: entry.actor,
            action: entry.action,
            target: entry.target,
            detail: entry.detail,
        }
    }
}

/// `GET /api/v1/audit?target=&before=&limit=`: newest first; `before` is the last id seen.
pub async fn audit_log(
    State(state): State<AppState>,
    _admin: Admin,
    params: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Json<Vec<AuditView>>, ApiError> {
    let params = query(params)?;
    let entries = db::audit::list(
        &state.db,
        &AuditFilter {
            target: params.target,
            before_id: params.before,
            limit: params.limit.unwrap_or(100),
        },
    )
    .await?;
    Ok(Json(entries.into_iter().map(AuditView::from).collect()))
}
