//! The HTTP API: every route in one table ([`routes`]), deny by default.
//!
//! | route | who |
//! | --- | --- |
//! | `POST /v1/enroll` | public (signed by the key it enrolls) |
//! | `POST /v1/catalog`, `GET /v1/wait`, `POST /v1/reports` | agents (signed requests) |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | public |
//! | `/api/v1/...` | admin bearer token |
//! | `GET /ui/login`, `POST /ui/login`, `GET /ui/static/style.css` | public |
//! | `/ui/...` | an admin of the web UI (forward auth, local login session, or the admin token for pages); `/ui/me` any signed-in person |
//!
//! **Deny by default.** One middleware ([`auth::authenticate`]) sits on every route and decides
//! from the *matched route template* alone: a route in [`PUBLIC_ROUTES`] passes; `/api/` needs
//! the admin token; `/v1/` needs a verified agent signature from an active key of an approved
//! node; anything else is refused. A handler added without an auth extractor is therefore still
//! protected (THREATS S1, Salt CVE-2020-11651). The handlers then take the typed principal
//! ([`auth::AgentAuth`], [`auth::Admin`]) that the middleware verified.
//!
//! Routes under `/ui/` go to the web UI's guard instead ([`crate::ui::auth::guard`]): sessions,
//! forward auth from trusted proxies, CSRF and Origin checks on every `POST`, security headers.
//! The forward-auth identity headers are stripped from every request, whatever its route, so no
//! handler can ever read a client-supplied one (THREATS W1).
//!
//! `/metrics` is public on purpose: Prometheus scrapes without credentials, and the metrics
//! carry only route templates, statuses and counts (never a node name or anything from a
//! request), so they reveal the fleet's size and health, nothing about a host.

pub mod admin;
pub mod agent;
pub mod auth;
pub mod error;
pub mod health;

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use tracing::Instrument;

use crate::state::AppState;
use crate::ui;

/// Routes anyone may call. Everything else requires credentials.
pub const PUBLIC_ROUTES: &[&str] = &[
    "/v1/enroll",
    "/healthz",
    "/readyz",
    "/metrics",
    "/ui/login",
    "/ui/static/style.css",
];

/// Who may call a route, decided from its template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone.
    Public,
    /// A signed agent request.
    Agent,
    /// An admin: the admin bearer token on `/api/`; on `/ui/`, an admin of the web UI.
    Admin,
    /// Nobody (a route outside every known prefix).
    Denied,
}

/// The access rule of a route template.
pub fn access_of(route: &str) -> Access {
    if PUBLIC_ROUTES.contains(&route) {
        Access::Public
    } else if route.starts_with("/api/") || route.starts_with("/ui/") {
        Access::Admin
    } else if route.starts_with("/v1/") {
        Access::Agent
    } else {
        Access::Denied
    }
}

/// One route: method, template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteInfo {
    /// `GET` or `POST`.
    pub method: &'static str,
    /// The template, e.g. `/api/v1/nodes/{name}`.
    pub path: &'static str,
}

/// Every route of the server with its handler: the single place routes are declared.
fn routes() -> Vec<(RouteInfo, MethodRouter<AppState>)> {
    fn r(
        method: &'static str,
        path: &'static str,
        handler: MethodRouter<AppState>,
    ) -> (RouteInfo, MethodRouter<AppState>) {
        (RouteInfo { method, path }, handler)
    }
    vec![
        r("GET", "/healthz", get(health::healthz)),
        r("GET", "/readyz", get(health::readyz)),
        r("GET", "/metrics", get(health::metrics)),
        r("POST", "/v1/enroll", post(agent::enroll)),
        r("POST", "/v1/catalog", post(agent::catalog)),
        r("GET", "/v1/wait", get(agent::wait)),
        r("POST", "/v1/reports", post(agent::report)),
        r("GET", "/api/v1/nodes", get(admin::list_nodes)),
        r("GET", "/api/v1/nodes/{name}", get(admin::node_detail)),
        r(
            "POST",
            "/api/v1/nodes/{name}/approve",
            post(admin::approve_node),
        ),
        r(
            "POST",
            "/api/v1/nodes/{name}/revoke",
            post(admin::revoke_node),
        ),
        r(
            "POST",
            "/api/v1/nodes/{name}/reject",
            post(admin::reject_node),
        ),
        r("POST", "/api/v1/nodes/{name}/run-now", post(admin::run_now)),
        r("GET", "/api/v1/runs", get(admin::list_runs)),
        r("GET", "/api/v1/runs/{run_id}", get(admin::run_detail)),
        r(
            "GET",
            "/api/v1/compile-failures",
            get(admin::compile_failures),
        ),
        r("GET", "/api/v1/tokens", get(admin::list_tokens)),
        r("POST", "/api/v1/tokens", post(admin::create_token)),
        r(
            "POST",
            "/api/v1/tokens/{token_id}/revoke",
            post(admin::revoke_token),
        ),
        r("GET", "/api/v1/audit", get(admin::audit_log)),
        // The web UI (crate::ui): pages are GETs, every state change a CSRF-checked POST.
        r("GET", "/ui/login", get(ui::auth::login_form)),
        r("POST", "/ui/login", post(ui::auth::login)),
        r("POST", "/ui/logout", post(ui::auth::logout)),
        r("GET", "/ui/static/style.css", get(ui::style_css)),
        r("GET", "/ui/", get(ui::overview::page)),
        r("GET", "/ui/nodes", get(ui::nodes::list)),
        r("GET", "/ui/nodes/{name}", get(ui::nodes::detail)),
        r("POST", "/ui/nodes/{name}/approve", post(ui::nodes::approve)),
        r("POST", "/ui/nodes/{name}/revoke", post(ui::nodes::revoke)),
        r("POST", "/ui/nodes/{name}/reject", post(ui::nodes::reject)),
        r("POST", "/ui/nodes/{name}/run-now", post(ui::nodes::run_now)),
        r("GET", "/ui/runs", get(ui::runs::list)),
        r("GET", "/ui/runs/{run_id}", get(ui::runs::detail)),
        r("GET", "/ui/failures", get(ui::failures::page)),
        r("GET", "/ui/roster", get(ui::roster::page)),
        r("GET", "/ui/roster/{name}", get(ui::roster::person)),
        r("GET", "/ui/enrollment", get(ui::enrollment::page)),
        r(
            "POST",
            "/ui/enrollment/tokens",
            post(ui::enrollment::create_token),
        ),
        r(
            "POST",
            "/ui/enrollment/tokens/{token_id}/revoke",
            post(ui::enrollment::revoke_token),
        ),
        r("GET", "/ui/audit", get(ui::audit::page)),
        r("GET", "/ui/me", get(ui::me::page)),
    ]
}

/// The route table (for the route audit test and documentation).
pub fn route_table() -> Vec<RouteInfo> {
    routes().into_iter().map(|(info, _)| info).collect()
}

/// The router with every route, the auth middleware on each, and request tracing and metrics
/// around everything.
pub fn router(state: AppState) -> Router {
    let mut router = Router::new();
    for (info, handler) in routes() {
        router = router.route(info.path, handler);
    }
    router
        .route_layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// The one auth middleware on every route: the web UI's guard for `/ui/` routes, the API's
/// ([`auth::authenticate`]) for the others, after stripping the forward-auth identity headers
/// (only the UI guard reads them, and only from a trusted proxy).
async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let is_ui = request
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|path| path.as_str().starts_with("/ui/"));
    if is_ui {
        return ui::auth::guard(State(state), request, next).await;
    }
    for name in ui::auth::IDENTITY_HEADERS {
        request.headers_mut().remove(*name);
    }
    auth::authenticate(State(state), request, next).await
}

/// One span per request with method and matched route (never the raw URI, a body or a
/// header), one log line at the end, and the request counter.
async fn observe(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!("request", method = %method, route = %route);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    state
        .metrics
        .record_request(&route, method.as_str(), status);
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        if PUBLIC_ROUTES.contains(&route.as_str()) && route != "/v1/enroll" {
            tracing::debug!(status, elapsed_ms, "request handled");
        } else {
            tracing::info!(status, elapsed_ms, "request handled");
        }
    });
    response
}
