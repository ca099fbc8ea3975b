//! Who may see the UI, and the checks on every UI request (THREATS W1–W6).
//!
//! [`guard`] runs on every `/ui/` route (dispatched from [`crate::http`]'s one auth middleware)
//! and decides from the matched route template ([`ui_access`]):
//!
//! - **Identity.** In order: forward-auth headers (`X-authentik-username`,
//!   `X-authentik-groups`) — only when the peer is in `ui.trusted_proxies` (W1); the
//!   `__Host-steward-session` cookie of a local login (W4); the admin API bearer token (pages
//!   only: it has no CSRF token, so its `POST`s are refused). The identity headers are removed
//!   from every request before any handler runs, so nothing downstream can read a
//!   client-supplied one, whatever the route (W1, the Caddy #7545 case).
//! - **Access.** Public routes (login, stylesheet) need nobody; "managed for me" needs any
//!   signed-in person; everything else an admin (the admin group, a local login, the token).
//!   An anonymous `GET` gets `401` with the login form; a non-admin `403`.
//! - **State changes.** Every non-public `POST` must carry the signed-in identity's CSRF token
//!   (compared in constant time) **and** come from this origin (`Origin`, else `Referer`, and
//!   `Sec-Fetch-Site` when sent) (W2). The guard reads and checks the form itself, so a
//!   handler cannot forget; handlers take the checked [`crate::ui::form::Form`].
//! - **Headers.** Every UI response, errors included, carries the CSP, `nosniff`,
//!   `Referrer-Policy`, `X-Frame-Options` and `Cache-Control: no-store` (W3).
//!
//! Local login (W5): argon2id, failed attempts recorded per source address and in total over a
//! sliding window, refused beyond either limit before the password is even checked; the
//! session id is new at every login (rotation, W4) and the previous session is deleted; the
//! login form itself carries a double-submit token against login CSRF. `next` after login is a
//! path of this UI or nothing (W6).

use std::net::SocketAddr;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use askama::Template;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use steward_protocol::Timestamp;

use crate::db::audit::NewAuditEntry;
use crate::db::{self};
use crate::service;
use crate::state::AppState;
use crate::ui::form::{FormData, MAX_FORM_BYTES};
use crate::ui::{error_page, render_status, see_other, session};

/// The session cookie of a local login.
pub const SESSION_COOKIE: &str = "__Host-steward-session";
/// The login form's double-submit cookie.
pub const LOGIN_COOKIE: &str = "__Host-steward-login";

/// The forward-auth identity headers (Authentik's); stripped from every request.
pub const IDENTITY_HEADERS: &[&str] = &[
    "x-authentik-username",
    "x-authentik-groups",
    "x-authentik-email",
    "x-authentik-name",
    "x-authentik-uid",
    "x-authentik-jwt",
];

/// The Content-Security-Policy of every UI response.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; \
     base-uri 'none'";

/// The actor name of the local admin in the audit log.
pub const LOCAL_ADMIN_ACTOR: &str = "ui:local-admin";

/// UI routes anyone may call.
pub const UI_PUBLIC_ROUTES: &[&str] = &["/ui/login", "/ui/static/style.css"];

/// Who may call a UI route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UiAccess {
    /// Anyone (identity headers are still stripped and never honoured).
    Public,
    /// Any signed-in person.
    User,
    /// An admin.
    Admin,
}

/// The access rule of a UI route template.
pub fn ui_access(route: &str) -> UiAccess {
    if UI_PUBLIC_ROUTES.contains(&route) {
        UiAccess::Public
    } else if route == "/ui/me" {
        UiAccess::User
    } else {
        UiAccess::Admin
    }
}

/// How a person was identified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Forward-auth headers from a trusted proxy.
    ForwardAuth,
    /// A local login session.
    Session,
    /// The admin API bearer token.
    Token,
}

/// A signed-in person, as the guard verified them.
#[derive(Debug, Clone)]
pub struct UiUser {
    /// Display name (SSO username, `admin`, `admin-api`).
    pub name: String,
    /// The SSO username (forward auth only), for "managed for me".
    pub sso_user: Option<String>,
    /// Audit actor.
    pub actor: String,
    /// Whether they may use the admin pages.
    pub admin: bool,
    /// Their forms' CSRF token (`None`: they cannot `POST`).
    pub csrf: Option<String>,
    /// How they were identified.
    pub via: Via,
}

impl UiUser {
    /// Whether a logout button makes sense (a local session).
    pub fn can_logout(&self) -> bool {
        self.via == Via::Session
    }
}

impl<S: Send + Sync> FromRequestParts<S> for UiUser {
    type Rejection = crate::ui::UiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<UiUser>()
            .cloned()
            .ok_or(crate::ui::UiError::Forbidden)
    }
}

/// Forward-auth headers read (and removed) from a request.
#[derive(Debug, Clone, Default)]
struct Forwarded {
    username: Option<String>,
    groups: Vec<String>,
    /// `X-Forwarded-Host` of a trusted proxy.
    host: Option<String>,
}

/// The peer's IP address (`None` on the unix socket).
fn peer_of(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}

/// Removes the identity headers from `headers`; returns what they said when `trusted`.
fn take_identity_headers(headers: &mut HeaderMap, trusted: bool) -> Forwarded {
    let mut values: Vec<(&str, Option<String>)> = Vec::new();
    for name in IDENTITY_HEADERS {
        let value = headers
            .remove(*name)
            .and_then(|value| value.to_str().ok().map(str::to_owned));
        values.push((name, value));
    }
    if !trusted {
        if values.iter().any(|(_, value)| value.is_some()) {
            tracing::warn!("identity headers from an untrusted address ignored");
        }
        return Forwarded::default();
    }
    let get = |name: &str| {
        values
            .iter()
            .find(|(header, _)| *header == name)
            .and_then(|(_, value)| value.clone())
    };
    let username = get("x-authentik-username")
        .map(|name| name.trim().to_owned())
        .filter(|name| valid_username(name));
    let groups = get("x-authentik-groups")
        .map(|groups| {
            groups
                .split('|')
                .map(|group| group.trim().to_owned())
                .filter(|group| !group.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let host = headers
        .get("x-forwarded-host")
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    Forwarded {
        username,
        groups,
        host,
    }
}

/// An SSO username we accept: printable ASCII without spaces, at most 128 bytes.
fn valid_username(name: &str) -> bool {
    !name.is_empty() && name.len() <= 128 && name.bytes().all(|b| b.is_ascii_graphic())
}

/// The UI guard: see the module documentation.
pub async fn guard(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_default();
    let peer = peer_of(&request);
    let settings = &state.config.ui;
    let trusted = settings
        .trusted_proxies
        .iter()
        .any(|source| source.contains(peer));
    let forwarded = take_identity_headers(request.headers_mut(), trusted);
    let access = ui_access(&route);
    let response = match access {
        UiAccess::Public => {
            let expected = forwarded.host.clone().or_else(|| host_of(&request));
            request.extensions_mut().insert(ExpectedHost(expected));
            next.run(request).await
        }
        UiAccess::User | UiAccess::Admin => match admit(&state, request, forwarded, access).await {
            Ok(request) => next.run(request).await,
            Err(response) => response,
        },
    };
    with_security_headers(response)
}

/// The host this request was addressed to (the proxy's `X-Forwarded-Host` when trusted).
#[derive(Debug, Clone)]
struct ExpectedHost(Option<String>);

async fn admit(
    state: &AppState,
    request: Request,
    forwarded: Forwarded,
    access: UiAccess,
) -> Result<Request, Response> {
    let expected_host = forwarded.host.clone().or_else(|| host_of(&request));
    let user = identify(state, request.headers(), forwarded)
        .await
        .map_err(|error| error.into_response())?;
    let Some(user) = user else {
        return Err(if request.method() == Method::GET {
            login_required(state, &request)
        } else {
            error_page(
                StatusCode::UNAUTHORIZED,
                "sign in first; your session may have expired",
            )
        });
    };
    if access == UiAccess::Admin && !user.admin {
        return Err(error_page(
            StatusCode::FORBIDDEN,
            "this page is for admins; your own page is “Managed for me”",
        ));
    }
    let (mut parts, body) = request.into_parts();
    let body = if parts.method == Method::GET || parts.method == Method::HEAD {
        body
    } else {
        let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
            .await
            .map_err(|_| error_page(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large"))?;
        if !same_origin(&parts.headers, expected_host.as_deref()) {
            tracing::warn!(actor = %user.actor, "ui post from another origin refused");
            return Err(error_page(
                StatusCode::FORBIDDEN,
                "this request did not come from a page of this server",
            ));
        }
        let form = FormData::parse(&bytes).unwrap_or_default();
        let presented = form.get("csrf").unwrap_or_default();
        let valid = user
            .csrf
            .as_deref()
            .is_some_and(|expected| constant_time_eq(expected.as_bytes(), presented.as_bytes()));
        if !valid {
            tracing::warn!(actor = %user.actor, "ui post without a valid csrf token refused");
            return Err(error_page(
                StatusCode::FORBIDDEN,
                "the form's security token is missing or expired; reload the page and try again",
            ));
        }
        parts.extensions.insert(form);
        Body::from(bytes)
    };
    parts.extensions.insert(user);
    Ok(Request::from_parts(parts, body))
}

/// Who is asking: forward auth, then a session, then the admin token.
async fn identify(
    state: &AppState,
    headers: &HeaderMap,
    forwarded: Forwarded,
) -> Result<Option<UiUser>, crate::ui::UiError> {
    let settings = &state.config.ui;
    if let Some(username) = forwarded.username {
        let admin = forwarded.groups.contains(&settings.admin_group);
        let csrf = forward_auth_csrf(state, &username, service::now());
        return Ok(Some(UiUser {
            name: username.clone(),
            actor: format!("sso:{username}"),
            sso_user: Some(username),
            admin,
            csrf: Some(csrf),
            via: Via::ForwardAuth,
        }));
    }
    if let Some(cookie) = cookie(headers, SESSION_COOKIE) {
        if let Some(found) = session::find(&state.db, &cookie, settings, service::now()).await? {
            return Ok(Some(UiUser {
                name: "admin".to_owned(),
                actor: found.actor,
                sso_user: None,
                admin: true,
                csrf: Some(found.csrf_token),
                via: Via::Session,
            }));
        }
    }
    if crate::http::auth::admin_token_matches(state, headers) {
        return Ok(Some(UiUser {
            name: "admin-api".to_owned(),
            actor: "admin-api".to_owned(),
            sso_user: None,
            admin: true,
            csrf: None,
            via: Via::Token,
        }));
    }
    Ok(None)
}

/// The CSRF token of a forward-auth user: a MAC of their name and the UTC day (keyed with the
/// content key, domain-separated), so it needs no server-side session and changes daily; a
/// form loaded before midnight must be reloaded after it.
fn forward_auth_csrf(state: &AppState, username: &str, now: Timestamp) -> String {
    let day = (now.0.div_euclid(86_400)).to_be_bytes();
    hex::encode(state.keys.content_mac([
        b"steward/ui-csrf/v1".as_slice(),
        username.as_bytes(),
        &day,
    ]))
}

/// Compares two byte strings without an early exit on the first difference.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The value of cookie `name`.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim().to_owned())
}

/// The request's `Host` (or the URI authority on HTTP/2).
fn host_of(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
}

/// Whether a state-changing request comes from a page of this server: `Sec-Fetch-Site`, when
/// sent, is `same-origin`; and the `Origin` (else the `Referer`) names the host the request was
/// sent to. A request with neither is refused.
pub fn same_origin(headers: &HeaderMap, expected_host: Option<&str>) -> bool {
    if let Some(site) = headers.get("sec-fetch-site") {
        if site.as_bytes() != b"same-origin" {
            return false;
        }
    }
    let Some(expected_host) = expected_host else {
        return false;
    };
    let source = headers
        .get(header::ORIGIN)
        .or_else(|| headers.get(header::REFERER))
        .and_then(|value| value.to_str().ok());
    let Some(source) = source else {
        return false;
    };
    let Some((scheme, rest)) = source.split_once("://") else {
        return false;
    };
    if scheme != "https" && scheme != "http" {
        return false;
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    !authority.is_empty()
        && !authority.contains('@')
        && authority.eq_ignore_ascii_case(expected_host.trim())
}

/// Adds the security headers every UI response carries.
pub fn with_security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let set = |headers: &mut HeaderMap, name: HeaderName, value: &'static str| {
        headers.insert(name, HeaderValue::from_static(value));
    };
    set(
        headers,
        header::CONTENT_SECURITY_POLICY,
        CONTENT_SECURITY_POLICY,
    );
    set(headers, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(headers, header::REFERRER_POLICY, "same-origin");
    set(headers, header::X_FRAME_OPTIONS, "DENY");
    if !headers.contains_key(header::CACHE_CONTROL) {
        set(headers, header::CACHE_CONTROL, "no-store");
    }
    response
}

// ---------------------------------------------------------------------------------------------
// Login and logout

/// The login page.
#[derive(Debug, Template)]
#[template(path = "ui/login.html")]
struct LoginPage {
    local_login: bool,
    forward_auth: bool,
    login_csrf: String,
    next: String,
    message: Option<String>,
}

/// `GET /ui/login` query.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `next` if it is a path of this UI, else the overview (never another origin, W6).
pub fn safe_next(next: Option<&str>) -> String {
    let default = "/ui/".to_owned();
    let Some(next) = next else {
        return default;
    };
    let ok = next.len() <= 512
        && (next == "/ui" || next.starts_with("/ui/") || next.starts_with("/ui?"))
        && !next.contains('\\')
        && !next.contains("//")
        && !next.chars().any(char::is_control)
        && !next.starts_with("/ui/login");
    if ok {
        next.to_owned()
    } else {
        default
    }
}

fn login_page(
    state: &AppState,
    status: StatusCode,
    next: &str,
    message: Option<String>,
    existing_token: Option<String>,
) -> Response {
    let settings = &state.config.ui;
    let token = existing_token
        .filter(|token| token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()))
        .or_else(|| session::random_token().ok())
        .unwrap_or_default();
    let mut response = render_status(
        status,
        &LoginPage {
            local_login: settings.admin_password_hash.is_some(),
            forward_auth: !settings.trusted_proxies.is_empty(),
            login_csrf: token.clone(),
            next: next.to_owned(),
            message,
        },
    );
    if let Ok(value) = HeaderValue::from_str(&format!(
        "{LOGIN_COOKIE}={token}; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=3600"
    )) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
    response
}

/// The answer to an anonymous `GET` of a page: 401 with the login form, returning here.
fn login_required(state: &AppState, request: &Request) -> Response {
    let next = request
        .uri()
        .path_and_query()
        .map_or("/ui/", |path| path.as_str());
    login_page(
        state,
        StatusCode::UNAUTHORIZED,
        &safe_next(Some(next)),
        None,
        cookie(request.headers(), LOGIN_COOKIE),
    )
}

/// `GET /ui/login`.
pub async fn login_form(
    State(state): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<LoginQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let next = query.ok().and_then(|Query(query)| query.next);
    login_page(
        &state,
        StatusCode::OK,
        &safe_next(next.as_deref()),
        None,
        cookie(&headers, LOGIN_COOKIE),
    )
}

/// `POST /ui/login`: see the module documentation (W4, W5, W6).
pub async fn login(State(state): State<AppState>, request: Request) -> Response {
    let peer = peer_of(&request);
    let expected_host = request
        .extensions()
        .get::<ExpectedHost>()
        .and_then(|host| host.0.clone());
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_FORM_BYTES).await else {
        return error_page(StatusCode::PAYLOAD_TOO_LARGE, "the form is too large");
    };
    let Some(form) = FormData::parse(&bytes) else {
        return error_page(StatusCode::BAD_REQUEST, "the form could not be read");
    };
    let (Some(password), Some(presented_token)) = (form.get("password"), form.get("login_csrf"))
    else {
        return error_page(StatusCode::BAD_REQUEST, "the form needs a password");
    };
    let next = safe_next(form.get("next"));
    let settings = &state.config.ui;
    let Some(hash) = settings.admin_password_hash.clone() else {
        return error_page(
            StatusCode::FORBIDDEN,
            "local login is not configured on this server",
        );
    };
    let login_cookie = cookie(&parts.headers, LOGIN_COOKIE);
    let token_ok = login_cookie.as_deref().is_some_and(|expected| {
        !expected.is_empty() && constant_time_eq(expected.as_bytes(), presented_token.as_bytes())
    });
    if !token_ok || !same_origin(&parts.headers, expected_host.as_deref()) {
        tracing::warn!("login post without a valid form token or from another origin refused");
        return error_page(
            StatusCode::FORBIDDEN,
            "this login form expired or did not come from this server; reload it",
        );
    }
    let source = crate::http::auth::client_source(&settings.trusted_proxies, peer, &parts.headers);
    let now = service::now();
    let failures = match session::failures(&state.db, &source, settings, now).await {
        Ok(counts) => counts,
        Err(error) => return crate::ui::UiError::from(error).into_response(),
    };
    if failures.0 >= settings.login_failures_per_address
        || failures.1 >= settings.login_failures_total
    {
        tracing::warn!(source = %source, "local login refused: too many failed attempts");
        let mut response = error_page(
            StatusCode::TOO_MANY_REQUESTS,
            "too many failed logins; local login is locked for a while, try again later",
        );
        let retry = settings.login_window.as_secs().to_string();
        if let Ok(value) = HeaderValue::from_str(&retry) {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
        return response;
    }
    let password = zeroize::Zeroizing::new(password.to_owned());
    let verified = tokio::task::spawn_blocking(move || verify_password(&password, &hash.0))
        .await
        .unwrap_or(false);
    if !verified {
        if let Err(error) = session::record_failure(&state.db, &source, now).await {
            return crate::ui::UiError::from(error).into_response();
        }
        tracing::warn!(source = %source, "local login with a wrong password");
        return login_page(
            &state,
            StatusCode::UNAUTHORIZED,
            &next,
            Some("Wrong password.".to_owned()),
            login_cookie,
        );
    }
    // Rotation: whatever session the browser had is gone; the new id is fresh randomness.
    if let Some(old) = cookie(&parts.headers, SESSION_COOKIE) {
        if let Err(error) = session::delete(&state.db, &old).await {
            return crate::ui::UiError::from(error).into_response();
        }
    }
    let created = async {
        session::prune(&state.db, settings, now).await?;
        let created = session::create(&state.db, LOCAL_ADMIN_ACTOR, now).await?;
        db::audit::record(
            &state.db,
            &NewAuditEntry {
                at: now,
                actor: LOCAL_ADMIN_ACTOR.to_owned(),
                action: "ui.login".to_owned(),
                target: None,
                detail: Some(serde_json::json!({ "source": source })),
            },
        )
        .await?;
        Ok::<_, db::DbError>(created)
    }
    .await;
    let (id, _) = match created {
        Ok(created) => created,
        Err(error) => return crate::ui::UiError::from(error).into_response(),
    };
    tracing::info!(actor = LOCAL_ADMIN_ACTOR, "local login");
    let mut response = see_other(&next);
    let headers = response.headers_mut();
    for value in [
        format!("{SESSION_COOKIE}={id}; Secure; HttpOnly; SameSite=Strict; Path=/"),
        format!("{LOGIN_COOKIE}=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    ] {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.append(header::SET_COOKIE, value);
        }
    }
    response
}

/// `POST /ui/logout`: deletes the session server-side and clears the cookie.
pub async fn logout(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        if let Err(error) = session::delete(&state.db, &id).await {
            return crate::ui::UiError::from(error).into_response();
        }
    }
    let mut response = see_other("/ui/login");
    response.headers_mut().append(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "__Host-steward-session=; Secure; HttpOnly; SameSite=Strict; Path=/; Max-Age=0",
        ),
    );
    response
}

/// Whether `password` matches the argon2id PHC string `hash`.
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// The argon2id PHC string of `password` with a fresh random salt (argon2 crate defaults:
/// 19 MiB, 2 passes, 1 lane, OWASP's minimum).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt)
        .map_err(|_| anyhow::anyhow!("the operating system gave no random bytes"))?;
    let salt = SaltString::encode_b64(&salt)
        .map_err(|error| anyhow::anyhow!("encoding the salt: {error}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| anyhow::anyhow!("hashing the password: {error}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_path_of_this_ui_or_the_overview() {
        for good in ["/ui/", "/ui/nodes?status=failed", "/ui"] {
            assert_eq!(safe_next(Some(good)), good);
        }
        for bad in [
            "//evil.example",
            "https://evil.example/ui/",
            "/\\evil.example",
            "/ui//evil.example",
            "/ui/\\evil",
            "javascript:alert(1)",
            "/uix",
            "/ui/login?next=//evil",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad}");
        }
        assert_eq!(safe_next(None), "/ui/");
    }

    #[test]
    fn origin_must_name_the_host() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut map = HeaderMap::new();
            for (name, value) in pairs {
                map.insert(
                    HeaderName::from_bytes(name.as_bytes()).unwrap(),
                    value.parse().unwrap(),
                );
            }
            map
        };
        let host = Some("steward.example:8443");
        assert!(same_origin(
            &headers(&[("origin", "https://steward.example:8443")]),
            host
        ));
        assert!(same_origin(
            &headers(&[("referer", "https://steward.example:8443/ui/nodes")]),
            host
        ));
        assert!(!same_origin(&headers(&[]), host));
        assert!(!same_origin(&headers(&[("origin", "null")]), host));
        assert!(!same_origin(
            &headers(&[("origin", "https://evil.example")]),
            host
        ));
        assert!(!same_origin(
            &headers(&[
                ("origin", "https://steward.example:8443"),
                ("sec-fetch-site", "cross-site")
            ]),
            host
        ));
        assert!(!same_origin(
            &headers(&[("referer", "https://steward.example:8443@evil.example/")]),
            host
        ));
    }

    #[test]
    fn passwords_hash_to_argon2id_and_verify() {
        let hash = hash_password("correct horse battery staple").unwrap();
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(verify_password("correct horse battery staple", &hash));
        assert!(!verify_password("wrong", &hash));
        assert!(!verify_password("x", "not a hash"));
    }
}
