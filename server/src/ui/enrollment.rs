//! Enrollment: nodes waiting for an admin (new hosts, and new keys of enrolled hosts) to approve
//! or reject, quarantined identities, bootstrap tokens (create — the join string is shown once,
//! in the answer to the `POST` — and revoke).

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde::Deserialize;
use steward_protocol::join::JoinString;
use steward_protocol::EnrollmentStatus;

use crate::config::parse_duration;
use crate::db::{self};
use crate::service;
use crate::service::admin::{self as operations, TokenRequest};
use crate::state::AppState;
use crate::ui::auth::UiUser;
use crate::ui::form::Form;
use crate::ui::queries;
use crate::ui::text::clean_short;
use crate::ui::{ago, format_time, render, see_other, Badge, Layout, UiError};

/// A node waiting for an admin.
#[derive(Debug, Clone)]
pub struct PendingRow {
    /// Node.
    pub name: String,
    /// Node link.
    pub href: String,
    /// What waits: a new host or a new key.
    pub what: String,
    /// Key fingerprint.
    pub key: String,
    /// Machine id.
    pub machine_id: String,
    /// Since.
    pub since: String,
}

/// A quarantined or revoked node.
#[derive(Debug, Clone)]
pub struct HeldRow {
    /// Node.
    pub name: String,
    /// Link.
    pub href: String,
    /// Badge.
    pub badge: Badge,
    /// Since.
    pub since: String,
}

/// A bootstrap token.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Id.
    pub id: String,
    /// Description.
    pub description: String,
    /// Constraints.
    pub scope: String,
    /// Uses.
    pub uses: String,
    /// Expiry.
    pub expires: String,
    /// Created by.
    pub created_by: String,
    /// State badge.
    pub state: Badge,
    /// Can be revoked.
    pub active: bool,
}

/// A token just created: shown once.
#[derive(Debug, Clone)]
pub struct Created {
    /// Id.
    pub id: String,
    /// The join string.
    pub join: String,
    /// Expiry.
    pub expires: String,
}

/// The enrollment page.
#[derive(Debug, Template)]
#[template(path = "ui/enrollment.html")]
pub struct EnrollmentPage {
    layout: Layout,
    pending: Vec<PendingRow>,
    held: Vec<HeldRow>,
    tokens: Vec<TokenRow>,
    created: Option<Created>,
    form_error: Option<String>,
    public_url: String,
}

/// `GET /ui/enrollment` query.
#[derive(Debug, Default, Deserialize)]
pub struct EnrollmentQuery {
    done: Option<String>,
}

/// `GET /ui/enrollment`.
pub async fn page(
    State(state): State<AppState>,
    user: UiUser,
    query: Result<Query<EnrollmentQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, UiError> {
    let done = query.ok().and_then(|Query(q)| q.done);
    let page = build(&state, &user, None, None).await?;
    let page = EnrollmentPage {
        layout: page.layout.with_notice(done.as_deref()),
        ..page
    };
    Ok(render(&page))
}

async fn build(
    state: &AppState,
    user: &UiUser,
    created: Option<Created>,
    form_error: Option<String>,
) -> Result<EnrollmentPage, UiError> {
    let now = service::now();
    let waiting_keys = db::pending_keys::list(&state.db).await?;
    let mut pending: Vec<PendingRow> = queries::pending_nodes(&state.db)
        .await?
        .into_iter()
        .map(|node| PendingRow {
            href: format!("/ui/nodes/{}", node.name),
            what: "new host".into(),
            key: node.key_id.unwrap_or_default(),
            machine_id: node.machine_id.unwrap_or_else(|| "—".into()),
            since: ago(node.created_at, now),
            name: node.name,
        })
        .collect();
    for waiting in waiting_keys {
        pending.push(PendingRow {
            href: format!("/ui/nodes/{}", waiting.node.0),
            name: waiting.node.0.clone(),
            what: "new key for an enrolled host".into(),
            key: waiting.key.key_id.0.clone(),
            machine_id: waiting.key.machine_id.unwrap_or_else(|| "—".into()),
            since: ago(waiting.requested_at, now),
        });
    }
    let held = db::nodes::list(&state.db, Some(EnrollmentStatus::Quarantined))
        .await?
        .iter()
        .map(|node| HeldRow {
            href: format!("/ui/nodes/{}", node.name.0),
            name: node.name.0.clone(),
            badge: Badge::new("quarantined", "warn"),
            since: format_time(node.created_at),
        })
        .collect();
    let tokens = db::tokens::list(&state.db)
        .await?
        .into_iter()
        .map(|token| {
            let (state_badge, active) = if token.revoked_at.is_some() {
                (Badge::new("revoked", "muted"), false)
            } else if token.expires_at.0 <= now.0 {
                (Badge::new("expired", "muted"), false)
            } else if token.uses_done >= token.uses_allowed {
                (Badge::new("used up", "muted"), false)
            } else {
                (Badge::new("active", "ok"), true)
            };
            let mut scope = Vec::new();
            if let Some(glob) = &token.hostname_glob {
                scope.push(format!("hosts {glob}"));
            }
            if let Some(class) = &token.class {
                scope.push(format!("class {class}"));
            }
            if token.auto_approve {
                scope.push("auto-approve".into());
            }
            if token.may_reenroll {
                scope.push("re-enroll".into());
            }
            TokenRow {
                id: token.token_id,
                description: clean_short(&token.description, 80),
                scope: if scope.is_empty() {
                    "any host, admin approves".into()
                } else {
                    scope.join(" · ")
                },
                uses: format!("{} / {}", token.uses_done, token.uses_allowed),
                expires: if token.expires_at.0 > now.0 {
                    ago(token.expires_at, now)
                } else {
                    format_time(token.expires_at)
                },
                created_by: clean_short(&token.created_by, 60),
                state: state_badge,
                active,
            }
        })
        .collect();
    Ok(EnrollmentPage {
        layout: Layout::new(user, "enrollment", "Enrollment"),
        pending,
        held,
        tokens,
        created,
        form_error,
        public_url: state.config.public_url.clone().unwrap_or_default(),
    })
}

/// `POST /ui/enrollment/tokens`: creates a token and answers with the page showing its join
/// string, this once (the answer is `no-store`; only the secret's hash is kept).
pub async fn create_token(
    State(state): State<AppState>,
    user: UiUser,
    Form(form): Form,
) -> Result<Response, UiError> {
    let outcome = async {
        let server_url = form
            .text("server_url")
            .or_else(|| state.config.public_url.clone())
            .ok_or_else(|| {
                UiError::BadRequest(
                    "no server URL given and no `public_url` configured for join strings".into(),
                )
            })?;
        steward_protocol::join::check_server_url(&server_url)
            .map_err(|error| UiError::BadRequest(error.to_string()))?;
        let ttl_text = form.text("ttl").unwrap_or_else(|| "24h".into());
        let ttl = parse_duration(&ttl_text)
            .ok_or_else(|| UiError::BadRequest(format!("invalid ttl {ttl_text:?} (e.g. 24h)")))?;
        let uses = match form.text("uses") {
            None => 1,
            Some(text) => text
                .parse()
                .map_err(|_| UiError::BadRequest("uses must be a number".into()))?,
        };
        let request = TokenRequest {
            description: form.text("description").unwrap_or_default(),
            ttl,
            uses,
            hostname_glob: form.text("hostname_glob"),
            class: form.text("class"),
            auto_approve: form.checked("auto_approve"),
            may_reenroll: form.checked("may_reenroll"),
        };
        let (token, expires_at) =
            operations::create_token(&state.db, &request, &user.actor, service::now()).await?;
        let id = token.id().to_owned();
        let join = JoinString::new(&server_url, token, state.keys.root_key_id())
            .map_err(|error| UiError::BadRequest(error.to_string()))?;
        Ok::<_, UiError>(Created {
            id,
            join: join.to_string(),
            expires: format_time(expires_at),
        })
    }
    .await;
    let (created, form_error) = match outcome {
        Ok(created) => (Some(created), None),
        Err(UiError::BadRequest(message)) => (None, Some(message)),
        Err(other) => return Err(other),
    };
    let status = if form_error.is_some() {
        axum::http::StatusCode::BAD_REQUEST
    } else {
        axum::http::StatusCode::OK
    };
    let page = build(&state, &user, created, form_error).await?;
    let mut response = crate::ui::render_status(status, &page);
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

/// `POST /ui/enrollment/tokens/{token_id}/revoke`.
pub async fn revoke_token(
    State(state): State<AppState>,
    user: UiUser,
    Path(token_id): Path<String>,
    _form: Form,
) -> Result<Response, UiError> {
    if token_id.len() > 64 || !token_id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(UiError::BadRequest("invalid token id".into()));
    }
    operations::revoke_token(&state.db, &token_id, &user.actor, service::now()).await?;
    Ok(see_other("/ui/enrollment?done=token-revoked"))
}
