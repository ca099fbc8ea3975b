//! The agent's side of the server API: enrollment (unsigned, token in the body), and signed
//! catalog, wait and report requests (DESIGN §5). Blocking: the agent does one thing at a time.
//!
//! What a server (or a proxy in front of it) answers is not trusted to be well behaved:
//! - every body is read through [`read_capped`], which stops at its limit **while reading**
//!   (an endless body costs the limit, not memory; THREATS C10);
//! - redirects are never followed: a signed request re-sent to another host could be replayed
//!   from there to the real server within the clock skew (THREATS S7). A 3xx is
//!   [`ClientError::Redirected`], naming where it pointed;
//! - a `200` that is not a catalog (an HTML login page of a captive proxy, anything that is not
//!   JSON) is [`ClientError::NotACatalog`], which a run treats like an unreachable server;
//! - with a `ca_file`, only that CA is trusted for TLS, not the compiled-in public roots.

use std::io::Read;
use std::time::Duration;

use anyhow::{bail, Context};
use reqwest::blocking::{Client as Http, Response};
use reqwest::StatusCode;
use serde::Deserialize;
use steward_protocol::envelope::SigningKeyPair;
use steward_protocol::request::{nonce_from_bytes, sign_request};
use steward_protocol::{
    EnrollRequest, EnrollResponse, Facts, Serial, Timestamp, MAX_CATALOG_BYTES, MAX_ENROLL_BYTES,
};

use crate::state::now;

/// What the server said to a catalog request.
#[derive(Debug)]
pub enum CatalogReply {
    /// A (new or unchanged) envelope.
    Envelope(Vec<u8>),
    /// 304: the catalog we hold is current.
    NotModified,
}

/// What a long-poll ended with.
#[derive(Debug, Clone, Deserialize)]
pub struct WaitAnswer {
    /// `serial_changed`, `run_now`, `site_changed` or `timeout`.
    pub reason: String,
    /// The node's current serial.
    #[serde(default)]
    pub serial: Option<Serial>,
}

/// A client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    http: Http,
    base: String,
}

/// Transport errors worth retrying are distinguished from refusals.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached or answered 5xx: try later.
    #[error("server unavailable: {0}")]
    Unavailable(String),
    /// The server is busy (429) and asked to come back after this many seconds.
    #[error("server busy; asked to retry after {retry_after}s")]
    Busy {
        /// `Retry-After`, in seconds.
        retry_after: u64,
    },
    /// The server refused the request (4xx).
    #[error("server refused the request ({status}): {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The server's error text (bounded).
        message: String,
    },
    /// The answer was not what the protocol says.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The server answered a redirect, which is never followed (a signed request must reach
    /// only the server it was signed for).
    #[error(
        "the server answered {status} redirecting to {location}; redirects are not followed \
         (a signed request goes only to the configured server): fix `server` in the agent's \
         configuration or the proxy in front of the server"
    )]
    Redirected {
        /// HTTP status.
        status: u16,
        /// The host (and port) the `Location` header names, or what stood there instead.
        location: String,
    },
    /// Where a catalog was expected, something else came: another content type, or more
    /// than a catalog may be.
    #[error("the server's answer is not a catalog: {0}")]
    NotACatalog(String),
}

/// Largest wait answer, error body or report acknowledgement read from the server.
pub const MAX_SMALL_ANSWER_BYTES: usize = 64 * 1024;
/// How much of an error body is read for its message.
const MAX_ERROR_BODY_BYTES: usize = 4 * 1024;

/// A body read to its end, or the fact that it went beyond `limit` (stopped at `limit + 1`).
enum Capped {
    Complete(Vec<u8>),
    Over,
}

/// Reads `response`'s body, stopping as soon as it goes beyond `limit` bytes (THREATS C10).
fn read_capped(response: Response, limit: usize) -> Result<Capped, ClientError> {
    let mut bytes = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    response
        .take(cap)
        .read_to_end(&mut bytes)
        .map_err(|e| ClientError::Unavailable(format!("reading the answer: {e}")))?;
    if bytes.len() > limit {
        return Ok(Capped::Over);
    }
    Ok(Capped::Complete(bytes))
}

/// [`read_capped`], going beyond `limit` being a protocol error about `what`.
fn read_body(response: Response, limit: usize, what: &str) -> Result<Vec<u8>, ClientError> {
    match read_capped(response, limit)? {
        Capped::Complete(bytes) => Ok(bytes),
        Capped::Over => Err(ClientError::Protocol(format!(
            "the {what} exceeds {limit} bytes; stopped reading"
        ))),
    }
}

impl Client {
    /// A client for `base` (`https://host:port`). With `ca_pem` (the `ca_file`), TLS trusts
    /// only the certificates in it; without, the compiled-in public roots. Redirects are never
    /// followed.
    pub fn new(base: &str, ca_pem: Option<&[u8]>, timeout: Duration) -> anyhow::Result<Client> {
        let mut builder = Http::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("steward-agent/", env!("CARGO_PKG_VERSION")))
            .https_only(!is_plain_http_allowed(base))
            .redirect(reqwest::redirect::Policy::none());
        if let Some(pem) = ca_pem {
            let certs =
                reqwest::Certificate::from_pem_bundle(pem).context("parsing the CA file (PEM)")?;
            if certs.is_empty() {
                bail!("the CA file holds no PEM certificate");
            }
            // Pinned: a public CA's certificate for the server's name is not enough.
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        Ok(Client {
            http: builder.build().context("building the HTTP client")?,
            base: base.trim_end_matches('/').to_string(),
        })
    }

    /// `POST /v1/enroll`, signed with `key`, the key it enrolls (proof of possession).
    pub fn enroll(
        &self,
        key: &SigningKeyPair,
        request: &EnrollRequest,
    ) -> Result<EnrollResponse, ClientError> {
        let body = serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let response = self
            .signed(key, "POST", "/v1/enroll", body)?
            .send()
            .map_err(transport)?;
        let bytes = read_body(check(response)?, MAX_ENROLL_BYTES, "enrollment answer")?;
        steward_protocol::strict::from_slice(&bytes, MAX_ENROLL_BYTES)
            .map_err(|e| ClientError::Protocol(format!("enrollment answer: {e}")))
    }

    /// `POST /v1/catalog` with the facts; `etag` is the digest of the catalog we hold.
    pub fn catalog(
        &self,
        key: &SigningKeyPair,
        facts: &Facts,
        etag: Option<&str>,
    ) -> Result<CatalogReply, ClientError> {
        let body = serde_json::to_vec(facts).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let mut request = self.signed(key, "POST", "/v1/catalog", body)?;
        if let Some(tag) = etag {
            request = request.header("if-none-match", format!("\"{tag}\""));
        }
        let response = request.send().map_err(transport)?;
        if response.status() == StatusCode::NOT_MODIFIED {
            return Ok(CatalogReply::NotModified);
        }
        let response = check(response)?;
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned());
        if response
            .content_length()
            .is_some_and(|l| l > MAX_CATALOG_BYTES as u64)
        {
            return Err(ClientError::NotACatalog(format!(
                "its length exceeds {MAX_CATALOG_BYTES} bytes"
            )));
        }
        let bytes = match read_capped(response, MAX_CATALOG_BYTES)? {
            Capped::Complete(bytes) => bytes,
            Capped::Over => {
                return Err(ClientError::NotACatalog(format!(
                    "the body exceeds {MAX_CATALOG_BYTES} bytes; stopped reading"
                )))
            }
        };
        if !is_json(content_type.as_deref()) {
            return Err(ClientError::NotACatalog(format!(
                "{} of {}, where an application/json envelope was expected",
                human_size(bytes.len()),
                content_type.as_deref().map_or_else(
                    || "no content type".to_owned(),
                    |t| format!("`{}`", printable(t, 80))
                ),
            )));
        }
        Ok(CatalogReply::Envelope(bytes))
    }

    /// `GET /v1/wait?serial=N&timeout=S`: returns when the serial moves, an admin asks for a
    /// run, or after `timeout`.
    pub fn wait(
        &self,
        key: &SigningKeyPair,
        serial: Option<Serial>,
        timeout: Duration,
    ) -> Result<WaitAnswer, ClientError> {
        let mut path = format!("/v1/wait?timeout={}", timeout.as_secs());
        if let Some(s) = serial {
            path.push_str(&format!("&serial={}", s.0));
        }
        let response = self
            .signed(key, "GET", &path, Vec::new())?
            .timeout(timeout + Duration::from_secs(30))
            .send()
            .map_err(transport)?;
        let bytes = read_body(check(response)?, MAX_SMALL_ANSWER_BYTES, "wait answer")?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(format!("wait: {e}")))
    }

    /// `POST /v1/reports` with the exact spooled bytes; Ok means the server stored it.
    pub fn report(&self, key: &SigningKeyPair, body: Vec<u8>) -> Result<(), ClientError> {
        let response = self
            .signed(key, "POST", "/v1/reports", body)?
            .send()
            .map_err(transport)?;
        // The acknowledgement is read (bounded) so the connection can be reused.
        read_body(
            check(response)?,
            MAX_SMALL_ANSWER_BYTES,
            "report acknowledgement",
        )
        .map(|_| ())
    }

    fn signed(
        &self,
        key: &SigningKeyPair,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<reqwest::blocking::RequestBuilder, ClientError> {
        let mut nonce = [0u8; 16];
        getrandom::getrandom(&mut nonce).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let headers = sign_request(
            key,
            method,
            path,
            Timestamp(now()),
            &nonce_from_bytes(nonce),
            &body,
        )
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
        let url = format!("{}{}", self.base, path);
        let mut request = match method {
            "GET" => self.http.get(url),
            _ => self
                .http
                .post(url)
                .header("content-type", "application/json")
                .body(body),
        };
        for (name, value) in headers.pairs() {
            request = request.header(name, value);
        }
        Ok(request)
    }
}

/// Plain `http://` only to loopback (a local proxy or the demo); everything else needs TLS.
fn is_plain_http_allowed(base: &str) -> bool {
    let Some(rest) = base.strip_prefix("http://") else {
        return false;
    };
    let host = rest.split(['/', ':']).next().unwrap_or("");
    matches!(host, "127.0.0.1" | "localhost") || rest.starts_with("[::1]")
}

/// Whether a `Content-Type` is JSON (`application/json`, with or without parameters).
fn is_json(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("application/json"))
    })
}

/// `n bytes`, for messages.
fn human_size(bytes: usize) -> String {
    format!("{bytes} bytes")
}

/// Server-chosen text for a message: control characters dropped, at most `max` characters.
fn printable(text: &str, max: usize) -> String {
    text.chars().filter(|c| !c.is_control()).take(max).collect()
}

/// Where a redirect points: the host (and port) of an absolute `Location`, else its text.
fn redirect_target(response: &Response) -> String {
    let Some(location) = response.headers().get(reqwest::header::LOCATION) else {
        return "nowhere (no Location header)".to_owned();
    };
    let text = String::from_utf8_lossy(location.as_bytes());
    match reqwest::Url::parse(&text) {
        Ok(url) => {
            let host = url.host_str().unwrap_or("?");
            match url.port() {
                Some(port) => format!("host `{}:{port}`", printable(host, 255)),
                None => format!("host `{}`", printable(host, 255)),
            }
        }
        Err(_) => format!("`{}` on the same server", printable(&text, 255)),
    }
}

fn transport(e: reqwest::Error) -> ClientError {
    // reqwest's message never includes request headers or bodies. Its causes say why (a
    // refused certificate, a reset connection), so they are part of the message.
    let mut message = e.to_string();
    let mut cause = std::error::Error::source(&e);
    while let Some(error) = cause {
        let text = error.to_string();
        if !message.contains(&text) {
            message.push_str(&format!(": {text}"));
        }
        cause = error.source();
    }
    ClientError::Unavailable(message)
}

/// Clock differences from this many seconds on are named in a refusal's message.
const CLOCK_NOTE_SECS: i64 = 60;

/// Seconds the server's clock (its `Date` header) is ahead of `host_now`; `None` when the
/// answer has no valid `Date`.
fn clock_offset(response: &Response, host_now: i64) -> Option<i64> {
    let date = response
        .headers()
        .get(reqwest::header::DATE)?
        .to_str()
        .ok()?;
    let server = httpdate::parse_http_date(date).ok()?;
    let server = server.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(i64::try_from(server).ok()? - host_now)
}

fn check(response: Response) -> Result<Response, ClientError> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    if status.is_redirection() {
        return Err(ClientError::Redirected {
            status: status.as_u16(),
            location: redirect_target(&response),
        });
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(30);
        return Err(ClientError::Busy { retry_after });
    }
    // A signed request is refused (401) when the clocks differ by more than the server allows,
    // and the server says no more than "unauthorized": the `Date` of its answer tells.
    let clock_note = (status == StatusCode::UNAUTHORIZED)
        .then(|| clock_offset(&response, now()))
        .flatten()
        .filter(|offset| offset.abs() >= CLOCK_NOTE_SECS)
        .map(|offset| {
            let (amount, direction) = if offset > 0 {
                (offset, "behind")
            } else {
                (-offset, "ahead of")
            };
            format!(
                "; this host's clock is {amount} s {direction} the server's, and signed requests \
                 are refused beyond the server's allowed skew (5 min by default): fix time sync \
                 (timedatectl, chrony)"
            )
        });
    // At most the first few KiB of the body, even when it never ends.
    let body = match read_capped(response, MAX_ERROR_BODY_BYTES) {
        Ok(Capped::Complete(bytes)) => bytes,
        Ok(Capped::Over) | Err(_) => Vec::new(),
    };
    let mut message = printable(&String::from_utf8_lossy(&body), 300);
    message.push_str(clock_note.as_deref().unwrap_or_default());
    if status.is_server_error() {
        Err(ClientError::Unavailable(format!("{status}: {message}")))
    } else {
        Err(ClientError::Refused {
            status: status.as_u16(),
            message,
        })
    }
}

/// Parses a server's enrollment answer into "go on" or a reason to stop.
pub fn check_enrollment(
    response: &EnrollResponse,
    pinned: &steward_protocol::KeyId,
) -> anyhow::Result<()> {
    if &response.root_key_id != pinned {
        bail!(
            "the server's root key {} is not the one pinned in the join string ({}); refusing to trust it",
            response.root_key_id,
            pinned
        );
    }
    let derived = base64_decode_32(&response.root_key)
        .map(|k| steward_protocol::KeyId::of_public_key_bytes(&k));
    if derived.as_ref() != Some(pinned) {
        bail!("the server's root key does not match its own fingerprint; refusing to trust it");
    }
    Ok(())
}

fn base64_decode_32(text: &str) -> Option<[u8; 32]> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// A one-shot HTTP server on loopback answering `response` to the first request.
    fn answer_once(response: impl Into<String>) -> String {
        let response = response.into();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            stream.write_all(response.as_bytes()).unwrap();
        });
        url
    }

    #[test]
    fn a_busy_server_s_retry_after_is_passed_on() {
        let url = answer_once(
            "HTTP/1.1 429 Too Many Requests\r\nRetry-After: 7\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        );
        let client = Client::new(&url, None, Duration::from_secs(10)).unwrap();
        let key = SigningKeyPair::from_bytes([3; 32]);
        let err = client.catalog(&key, &Facts::default(), None).unwrap_err();
        assert!(matches!(err, ClientError::Busy { retry_after: 7 }), "{err}");
    }

    #[test]
    fn a_refusal_carries_the_status_and_a_bounded_control_free_message() {
        let url = answer_once(
            "HTTP/1.1 403 Forbidden\r\nContent-Length: 11\r\nConnection: close\r\n\r\nno\x1b[31m way",
        );
        let client = Client::new(&url, None, Duration::from_secs(10)).unwrap();
        let key = SigningKeyPair::from_bytes([3; 32]);
        match client.catalog(&key, &Facts::default(), None).unwrap_err() {
            ClientError::Refused { status, message } => {
                assert_eq!(status, 403);
                assert_eq!(message, "no[31m way");
            }
            other => panic!("{other}"),
        }
    }

    /// A 401 answered with `Date` `offset` seconds from now.
    fn refusal_with_server_clock(offset: i64) -> String {
        let host_now = std::time::SystemTime::now();
        let shift = Duration::from_secs(offset.unsigned_abs());
        let server_now = if offset >= 0 {
            host_now + shift
        } else {
            host_now - shift
        };
        let url = answer_once(format!(
            "HTTP/1.1 401 Unauthorized\r\nDate: {}\r\nContent-Length: 12\r\n\
             Connection: close\r\n\r\nunauthorized",
            httpdate::fmt_http_date(server_now)
        ));
        let client = Client::new(&url, None, Duration::from_secs(10)).unwrap();
        let key = SigningKeyPair::from_bytes([3; 32]);
        client
            .catalog(&key, &Facts::default(), None)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn a_refusal_names_clock_skew_when_the_server_s_date_says_so() {
        let behind = refusal_with_server_clock(3_600);
        assert!(behind.contains("(401)"), "{behind}");
        assert!(
            behind.contains("clock is 3600 s behind the server's")
                || behind.contains("clock is 3599 s behind the server's"),
            "{behind}"
        );
        let ahead = refusal_with_server_clock(-900);
        assert!(ahead.contains("s ahead of the server's"), "{ahead}");
        let in_sync = refusal_with_server_clock(0);
        assert!(!in_sync.contains("clock"), "{in_sync}");
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(is_plain_http_allowed("http://127.0.0.1:8080"));
        assert!(is_plain_http_allowed("http://localhost:8080/"));
        assert!(is_plain_http_allowed("http://[::1]:8080"));
        assert!(!is_plain_http_allowed("http://steward.example:8080"));
        assert!(!is_plain_http_allowed("http://127.0.0.1.evil.example"));
        assert!(!is_plain_http_allowed("https://steward.example"));
    }
}
