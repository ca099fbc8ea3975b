//! The admin web UI: server-rendered pages under `/ui/` (askama templates in
//! `server/templates/ui/`, one stylesheet in `server/static/`, no JavaScript).
//!
//! - [`auth`]: the UI guard (forward auth from trusted proxies, local login sessions, CSRF and
//!   Origin checks on every `POST`, security headers on every response), login and logout.
//! - [`session`]: sessions and failed logins in SQLite.
//! - [`overview`], [`nodes`], [`runs`], [`failures`], [`enrollment`], [`roster`], [`audit`],
//!   [`me`]: the pages, each with its `#[derive(Debug, Template)]` structs next to its handlers.
//! - [`queries`]: the read queries only the UI needs (fleet status, charts, failures).
//! - [`chart`]: SVG charts computed on the server; [`text`]: report text made safe to show.
//!
//! Must not: change state on a `GET`; show anything a host sent without [`text::clean`] and the
//! template's HTML escaping; show a secret (the database holds only redacted catalogs and
//! reports, and token secrets are shown once, in the answer to the `POST` that made them).
//!
//! Every route is declared in [`crate::http::routes`] and guarded by [`auth::guard`]; which
//! routes are public and which need an admin is [`auth::ui_access`].

pub mod audit;
pub mod auth;
pub mod chart;
pub mod enrollment;
pub mod failures;
pub mod form;
pub mod me;
pub mod nodes;
pub mod overview;
pub mod queries;
pub mod roster;
pub mod runs;
pub mod session;
pub mod text;

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use steward_protocol::{ResourceStatus, RunStatus, Timestamp};

use crate::db::DbError;
use crate::service::admin::AdminError;
use crate::ui::auth::UiUser;

/// The stylesheet, served from the binary.
pub const STYLE_CSS: &str = include_str!("../../static/style.css");

/// `GET /ui/static/style.css`.
pub async fn style_css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        STYLE_CSS,
    )
        .into_response()
}

/// What every page's layout needs: who is signed in, their CSRF token, the active section.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Shown in the header.
    pub user: String,
    /// Admin pages are in the navigation only for admins.
    pub admin: bool,
    /// The token every form carries.
    pub csrf: String,
    /// Whether a logout form is shown (local sessions).
    pub can_logout: bool,
    /// The active navigation entry.
    pub section: &'static str,
    /// The page title.
    pub title: String,
    /// A confirmation after a `POST`, if any.
    pub notice: Option<String>,
}

impl Layout {
    /// The layout for `user` on `section`.
    pub fn new(user: &UiUser, section: &'static str, title: impl Into<String>) -> Layout {
        Layout {
            user: user.name.clone(),
            admin: user.admin,
            csrf: user.csrf.clone().unwrap_or_default(),
            can_logout: user.can_logout(),
            section,
            title: title.into(),
            notice: None,
        }
    }

    /// With a notice (from a fixed list, chosen by a `done=` query parameter).
    pub fn with_notice(mut self, done: Option<&str>) -> Layout {
        self.notice = done.and_then(notice_text).map(str::to_owned);
        self
    }

    /// The navigation entries.
    pub fn nav(&self) -> Vec<NavItem> {
        let entries = if self.admin {
            NAV_ADMIN
        } else {
            &NAV_ADMIN[NAV_ADMIN.len() - 1..]
        };
        entries
            .iter()
            .map(|(section, label, href)| NavItem {
                label,
                href,
                active: *section == self.section,
            })
            .collect()
    }
}

/// A navigation entry.
#[derive(Debug, Clone)]
pub struct NavItem {
    /// Text.
    pub label: &'static str,
    /// Link.
    pub href: &'static str,
    /// The current section.
    pub active: bool,
}

/// The navigation bar: (section, label, href). The last entry is the only one non-admins see.
const NAV_ADMIN: &[(&str, &str, &str)] = &[
    ("overview", "Overview", "/ui/"),
    ("nodes", "Nodes", "/ui/nodes"),
    ("runs", "Runs", "/ui/runs"),
    ("failures", "Failures", "/ui/failures"),
    ("roster", "Roster", "/ui/roster"),
    ("enrollment", "Enrollment", "/ui/enrollment"),
    ("audit", "Audit", "/ui/audit"),
    ("me", "Managed for me", "/ui/me"),
];

/// The confirmations a redirect after a `POST` may show.
fn notice_text(done: &str) -> Option<&'static str> {
    Some(match done {
        "approved" => "Node approved.",
        "revoked" => "Node revoked: its keys are refused from its next request.",
        "rejected" => "Enrollment rejected: the node is revoked.",
        "key-rejected" => "New key rejected: it can never enroll; the node keeps its current key.",
        "run-now" => "Run requested: the agent is woken through its long-poll.",
        "token-revoked" => "Token revoked.",
        _ => return None,
    })
}

/// Renders a page, or the generic error page if rendering fails (logged).
pub fn render<T: Template>(page: &T) -> Response {
    render_status(StatusCode::OK, page)
}

/// Renders a page with `status`.
pub fn render_status<T: Template>(status: StatusCode, page: &T) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(error) => {
            tracing::error!(error = %error, "rendering a page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                Html("<!doctype html><title>Error</title><p>Internal error.</p>".to_owned()),
            )
                .into_response()
        }
    }
}

/// A `303 See Other` to a path of the UI.
pub fn see_other(location: &str) -> Response {
    let mut response = StatusCode::SEE_OTHER.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Why a UI request failed: an HTML page with the status. 5xx pages are generic and the error
/// is logged once, here.
#[derive(Debug, thiserror::Error)]
pub enum UiError {
    /// 400 with what to fix.
    #[error("{0}")]
    BadRequest(String),
    /// 403.
    #[error("you may not do this")]
    Forbidden,
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 500, logged, never shown.
    #[error("internal error; the server log has the details")]
    Internal(#[source] anyhow::Error),
}

/// The error page.
#[derive(Debug, Template)]
#[template(path = "ui/error.html")]
struct ErrorPage {
    status: u16,
    reason: String,
    message: String,
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let status = match &self {
            UiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            UiError::Forbidden => StatusCode::FORBIDDEN,
            UiError::NotFound(_) => StatusCode::NOT_FOUND,
            UiError::Conflict(_) => StatusCode::CONFLICT,
            UiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "ui request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        error_page(status, &self.to_string())
    }
}

/// An error page with `status` and a message (already safe to show).
pub fn error_page(status: StatusCode, message: &str) -> Response {
    render_status(
        status,
        &ErrorPage {
            status: status.as_u16(),
            reason: status.canonical_reason().unwrap_or("Error").to_owned(),
            message: text::clean(message),
        },
    )
}

impl From<DbError> for UiError {
    fn from(error: DbError) -> UiError {
        UiError::Internal(error.into())
    }
}

impl From<AdminError> for UiError {
    fn from(error: AdminError) -> UiError {
        match error {
            AdminError::NotFound { .. } => UiError::NotFound(error.to_string()),
            AdminError::Conflict(message) => UiError::Conflict(message),
            AdminError::Invalid(message) => UiError::BadRequest(message),
            AdminError::Db(error) => error.into(),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// View helpers shared by the pages: formatting happens in Rust, templates only print.

/// `2026-05-04 13:02 UTC`.
pub fn format_time(at: Timestamp) -> String {
    let full = crate::cli::store::format_time(at.0);
    // `YYYY-MM-DD HH:MM:SSZ` → minutes are enough on a page; the title attribute has seconds.
    format!("{} UTC", &full[..16.min(full.len())])
}

/// `2026-05-04 13:02:07Z`, for title attributes.
pub fn format_time_full(at: Timestamp) -> String {
    crate::cli::store::format_time(at.0)
}

/// `3 min ago`, `2 h ago`, `5 d ago`, `in 3 h`.
pub fn ago(at: Timestamp, now: Timestamp) -> String {
    let delta = now.0 - at.0;
    let (amount, future) = if delta >= 0 {
        (delta, false)
    } else {
        (-delta, true)
    };
    let text = if amount < 60 {
        format!("{amount} s")
    } else if amount < 3600 {
        format!("{} min", amount / 60)
    } else if amount < 2 * 86_400 {
        format!("{} h", amount / 3600)
    } else {
        format!("{} d", amount / 86_400)
    };
    if future {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

/// `45 s`, `20 min`, `1 h 20 min`, `3 d`.
pub fn format_span(seconds: i64) -> String {
    let seconds = seconds.max(0);
    if seconds < 60 {
        format!("{seconds} s")
    } else if seconds < 3600 {
        format!("{} min", seconds / 60)
    } else if seconds < 2 * 86_400 {
        match (seconds / 3600, seconds % 3600 / 60) {
            (hours, 0) => format!("{hours} h"),
            (hours, minutes) => format!("{hours} h {minutes} min"),
        }
    } else {
        format!("{} d", seconds / 86_400)
    }
}

/// `850 ms`, `12.4 s`, `3 min 05 s`.
pub fn format_duration_ms(ms: u64) -> String {
    if ms < 1000 {
        format!("{ms} ms")
    } else if ms < 60_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} min {:02} s", ms / 60_000, (ms / 1000) % 60)
    }
}

/// A run status from its wire name (the store's codec).
pub fn parse_run_status(text: &str) -> Option<RunStatus> {
    crate::db::codec::parse_run_status(text).ok()
}

/// A status badge: label and colour class.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Badge {
    /// Text.
    pub label: String,
    /// `ok`, `changed`, `failed`, `warn`, `muted`, `info`.
    pub class: &'static str,
}

impl Badge {
    /// A badge.
    pub fn new(label: impl Into<String>, class: &'static str) -> Badge {
        Badge {
            label: label.into(),
            class,
        }
    }

    /// The badge of a run status.
    pub fn run(status: RunStatus) -> Badge {
        let class = match status {
            RunStatus::Unchanged => "ok",
            RunStatus::Changed => "changed",
            RunStatus::Noop => "info",
            RunStatus::Failed | RunStatus::Error => "failed",
        };
        Badge::new(crate::db::codec::run_status_str(status), class)
    }

    /// The badge of a resource status.
    pub fn resource(status: ResourceStatus) -> Badge {
        let (label, class) = match status {
            ResourceStatus::Unchanged => ("unchanged", "ok"),
            ResourceStatus::Changed => ("changed", "changed"),
            ResourceStatus::WouldChange => ("would change", "info"),
            ResourceStatus::Failed => ("failed", "failed"),
            ResourceStatus::Skipped => ("skipped", "warn"),
            ResourceStatus::Kept => ("kept", "info"),
            ResourceStatus::Deferred => ("deferred", "warn"),
        };
        Badge::new(label, class)
    }
}

/// The notice badges (kept, deferred, drift), each with the one sentence the pages show to
/// explain it. None of them is a failure: they never count as one, on any page.
pub const NOTICE_LEGEND: [(&str, &str, &str); 3] = [
    (
        "kept",
        "info",
        "left as found on purpose: it existed before Steward managed it and differs only in \
         what the site does not enforce (add the attribute to the resource's enforce: to take \
         it over).",
    ),
    (
        "deferred",
        "warn",
        "a due change waiting for a condition, such as a restart waiting for its user to go \
         idle; the agent retries it at every run and forces it after max_defer if one is set.",
    ),
    (
        "drift",
        "warn",
        "a divergence Steward reports but does not repair by itself, such as privileged groups \
         beyond the person's tier (list them in revoke_groups to remove them).",
    ),
];

/// The legend of the notice badges, for templates.
#[derive(Debug, Clone)]
pub struct LegendItem {
    /// The badge.
    pub badge: Badge,
    /// What it means.
    pub text: &'static str,
}

/// [`NOTICE_LEGEND`] as badges.
pub fn notice_legend() -> Vec<LegendItem> {
    NOTICE_LEGEND
        .into_iter()
        .map(|(label, class, text)| LegendItem {
            badge: Badge::new(label, class),
            text,
        })
        .collect()
}

/// The drift badge.
pub fn drift_badge() -> Badge {
    Badge::new("drift", "warn")
}

/// `value` for a URL query component (RFC 3986 unreserved characters kept).
pub fn query_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}
