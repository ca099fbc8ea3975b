//! Authentication: the middleware that guards every route ([`authenticate`]) and the typed
//! principals handlers take ([`AgentAuth`], [`Admin`], [`ClientAddr`]).
//!
//! Agent requests (DESIGN §5, "Requests"): the four `x-steward-*` headers are verified with
//! [`steward_protocol::verify_request`] against the **active** key they name (±
//! `requests.max_clock_skew`), the nonce is recorded in memory (a repeat is a replay,
//! [`crate::service::nonces`]), the node must be
//! **approved**, and `last_seen_at` is touched. Key and node status are read from the database
//! on every request (one query): a revocation takes effect on the next one (THREATS E5), also
//! when the CLI made it from another process. The node's identity comes
//! from the key alone (S2, C5). Refusals are 401 (no or bad credentials) or 403 (a valid key of
//! a node that may not act), with generic bodies.

use std::net::SocketAddr;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use steward_protocol::{verify_request, EnrollmentStatus, SignedRequestHeaders, MAX_REPORT_BYTES};

use crate::db;
use crate::db::keys::NodeKey;
use crate::db::nodes::Node;
use crate::http::error::ApiError;
use crate::http::{access_of, Access};
use crate::service;
use crate::service::nonces::NonceCheck;
use crate::state::AppState;
use crate::ui::auth::constant_time_eq;

/// Largest body of a signed agent request (the largest agent document is a run report).
pub const MAX_AGENT_BODY: usize = MAX_REPORT_BYTES;

/// A verified agent request: the node (from its key alone), the key, and the body bytes that
/// were verified.
#[derive(Debug, Clone)]
pub struct AgentRequest {
    /// The node, approved at the time of the request.
    pub node: Node,
    /// The active key that signed.
    pub key: NodeKey,
    /// The request body, exactly as signed.
    pub body: Bytes,
}

/// Extractor of the [`AgentRequest`] the middleware verified. Refuses (401) when there is none,
/// which only happens on a route the middleware does not treat as an agent route.
#[derive(Debug, Clone)]
pub struct AgentAuth(pub AgentRequest);

impl<S: Send + Sync> FromRequestParts<S> for AgentAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .remove::<AgentRequest>()
            .map(AgentAuth)
            .ok_or(ApiError::Unauthorized)
    }
}

/// An authenticated admin (the admin API token). `actor` names them in the audit log.
#[derive(Debug, Clone)]
pub struct Admin {
    /// Audit actor.
    pub actor: String,
}

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Admin>()
            .cloned()
            .ok_or(ApiError::Unauthorized)
    }
}

/// Where a request comes from, as rate-limit key and audit text: see [`client_source`].
#[derive(Debug, Clone)]
pub struct ClientAddr(String);

impl ClientAddr {
    /// The address as rate-limit key and audit text.
    pub fn source(&self) -> String {
        self.0.clone()
    }
}

impl FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0.ip());
        Ok(ClientAddr(client_source(
            &state.config.ui.trusted_proxies,
            peer,
            &parts.headers,
        )))
    }
}

/// The address a request comes from (`unix` for the socket listener): the peer, or, when the
/// peer is one of `trusted` proxies (`[ui] trusted_proxies`), the right-most `X-Forwarded-For`
/// address that is not itself a trusted proxy. Addresses to the left of that one are written by
/// the client and never believed; an unparsable entry stops the walk at the proxy's address.
/// Behind a TLS-terminating proxy, per-address rate limits then count hosts, not the proxy.
pub fn client_source(
    trusted: &[crate::config::ProxySource],
    peer: Option<std::net::IpAddr>,
    headers: &HeaderMap,
) -> String {
    let is_trusted = |ip: Option<std::net::IpAddr>| trusted.iter().any(|t| t.contains(ip));
    let mut source = peer;
    if is_trusted(peer) {
        let forwarded: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        for entry in forwarded.iter().rev() {
            let Ok(ip) = entry.parse::<std::net::IpAddr>() else {
                break;
            };
            source = Some(ip);
            if !is_trusted(source) {
                break;
            }
        }
    }
    source.map_or_else(|| "unix".to_owned(), |ip| ip.to_canonical().to_string())
}

/// The guard on every route: see the module and [`crate::http`] documentation.
pub async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned());
    let access = route.as_deref().map_or(Access::Denied, access_of);
    let outcome = match access {
        Access::Public => Ok(request),
        Access::Admin => authenticate_admin(&state, request),
        Access::Agent => authenticate_agent(&state, request).await,
        Access::Denied => Err(ApiError::Unauthorized),
    };
    match outcome {
        Ok(request) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn authenticate_admin(state: &AppState, mut request: Request) -> Result<Request, ApiError> {
    if state.config.admin_token.is_none() || bearer_token(request.headers()).is_none() {
        return Err(ApiError::Unauthorized);
    }
    if !admin_token_matches(state, request.headers()) {
        tracing::warn!("admin api call with a wrong token");
        return Err(ApiError::Unauthorized);
    }
    request.extensions_mut().insert(Admin {
        actor: "admin-api".to_owned(),
    });
    Ok(request)
}

/// Whether `headers` carry the admin API token (`Authorization: Bearer`): its SHA-256 is
/// compared with the configured one in constant time. The API and the UI both ask this.
pub(crate) fn admin_token_matches(state: &AppState, headers: &HeaderMap) -> bool {
    let (Some(expected), Some(presented)) = (&state.config.admin_token, bearer_token(headers))
    else {
        return false;
    };
    let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
    constant_time_eq(&digest, &expected.0)
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty()).then_some(token.trim())
}

/// How stale `last_seen_at` may get before a request updates it.
const LAST_SEEN_RESOLUTION_SECS: i64 = 60;

async fn authenticate_agent(state: &AppState, request: Request) -> Result<Request, ApiError> {
    let headers = SignedRequestHeaders::from_lookup(|name| {
        request
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
    })
    .map_err(|_| ApiError::Unauthorized)?;
    // The key first: a caller without an active key never gets its body buffered. Its node is
    // read in the same query (one round trip per request); its status is checked only once
    // the signature verified.
    let Some((key, node)) = db::keys::find_active_with_node(&state.db, &headers.key).await? else {
        tracing::info!("signed request with an unknown or revoked key");
        return Err(ApiError::Unauthorized);
    };
    let (mut parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, MAX_AGENT_BODY)
        .await
        .map_err(|_| ApiError::PayloadTooLarge(MAX_AGENT_BODY))?;
    let public: [u8; 32] = STANDARD
        .decode(&key.signing_key)
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("stored signing key is not 32 bytes")))?;
    let path = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path(), |path| path.as_str());
    let now = service::now();
    let skew = state.config.max_clock_skew_secs;
    if let Err(refusal) = verify_request(
        &public,
        parts.method.as_str(),
        path,
        &headers,
        &body,
        now,
        skew,
    ) {
        tracing::info!(node = %key.node, reason = %refusal, "signed request refused");
        return Err(ApiError::Unauthorized);
    }
    if state.nonces.check_request(&headers, now) == NonceCheck::Replay {
        tracing::warn!(node = %key.node, "replayed request nonce refused");
        return Err(ApiError::Unauthorized);
    }
    if node.status != EnrollmentStatus::Approved {
        tracing::info!(node = %node.name, status = crate::metrics::status_name(node.status), "request from a node that is not approved");
        return Err(ApiError::Forbidden);
    }
    // Last-seen is for people ("unreported for 2 intervals"): a write per minute is plenty,
    // and it is bookkeeping, so it skips the fsync.
    if node
        .last_seen_at
        .is_none_or(|seen| now.0 - seen.0 >= LAST_SEEN_RESOLUTION_SECS)
    {
        db::nodes::touch_last_seen(state.db.relaxed(), &node.name, now).await?;
    }
    parts.extensions.insert(AgentRequest { node, key, body });
    Ok(Request::from_parts(parts, Body::empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_source_believes_forwarded_for_only_from_trusted_proxies() {
        use crate::config::ProxySource;
        let trusted = [
            ProxySource::parse("10.0.0.0/8").unwrap(),
            ProxySource::parse("unix").unwrap(),
        ];
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            "203.0.113.9, 198.51.100.4".parse().unwrap(),
        );
        headers.append("x-forwarded-for", "10.1.2.3".parse().unwrap());
        let proxy = Some("10.0.0.1".parse().unwrap());
        let stranger = Some("192.0.2.7".parse().unwrap());
        // From a trusted proxy: the right-most address that is not a proxy; the client's own
        // claim (203.0.113.9) further left is ignored.
        assert_eq!(client_source(&trusted, proxy, &headers), "198.51.100.4");
        assert_eq!(client_source(&trusted, None, &headers), "198.51.100.4");
        // From anyone else, the header is ignored.
        assert_eq!(client_source(&trusted, stranger, &headers), "192.0.2.7");
        assert_eq!(client_source(&[], proxy, &headers), "10.0.0.1");
        // Garbage stops the walk at the last trusted hop; no header: the peer.
        let mut garbage = HeaderMap::new();
        garbage.insert("x-forwarded-for", "1.2.3.4, nonsense".parse().unwrap());
        assert_eq!(client_source(&trusted, proxy, &garbage), "10.0.0.1");
        assert_eq!(
            client_source(&trusted, proxy, &HeaderMap::new()),
            "10.0.0.1"
        );
        assert_eq!(client_source(&trusted, None, &HeaderMap::new()), "unix");
    }

    #[test]
    fn bearer_parsing_and_comparison() {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, "Bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), None);
        assert!(constant_time_eq(&[1; 32], &[1; 32]));
        assert!(!constant_time_eq(&[1; 32], &[2; 32]));
    }
}
