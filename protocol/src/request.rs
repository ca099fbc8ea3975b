//! Agent request signing (DESIGN §5, "Requests"): every agent request carries its key id, a
//! timestamp, a nonce and an ed25519 signature over method, path, timestamp, nonce and body
//! hash, in four headers. Unlike mTLS this survives a TLS-terminating reverse proxy, and the
//! node's identity comes from the key alone, never from the body or path.
//!
//! It owns the header names, the canonical request bytes ([`canonical_request`]), signing
//! ([`sign_request`]) and stateless verification ([`verify_request`]): key match, clock skew and
//! signature.
//!
//! It must not keep state, read the clock or draw randomness. In particular **replay protection
//! is the server's job**: a valid request can be replayed verbatim within the skew window, so
//! the server must remember every `(key id, nonce)` it accepted for at least
//! `2 * max_skew_secs` (timestamps may be early or late by `max_skew_secs`) and refuse a repeat.
//! The signature binds the nonce, so an attacker cannot change it to dodge that memory. The
//! server must also pass the path and query exactly as it received them; a proxy that rewrites
//! paths breaks every signature (by design).
//!
//! ```
//! use steward_protocol::envelope::SigningKeyPair;
//! use steward_protocol::request::{nonce_from_bytes, sign_request, verify_request};
//! use steward_protocol::Timestamp;
//!
//! let agent = SigningKeyPair::from_bytes([4; 32]);
//! let now = Timestamp(1_700_000_000);
//! let nonce = nonce_from_bytes([0x5a; 16]);
//! let headers = sign_request(&agent, "POST", "/v1/reports", now, &nonce, b"{}").unwrap();
//! // ...sent as headers.pairs(); the server looks the key up by headers.key, then:
//! assert!(verify_request(&agent.public_bytes(), "POST", "/v1/reports", &headers, b"{}", now, 300).is_ok());
//! assert!(verify_request(&agent.public_bytes(), "POST", "/v1/reports", &headers, b"{ }", now, 300).is_err());
//! ```

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::VerifyingKey;
use sha2::{Digest, Sha256};

use crate::envelope::SigningKeyPair;
use crate::ids::{KeyId, Timestamp};

/// Header carrying the signing key's id (`sha256:<hex>`), by which the server finds the node.
pub const HEADER_KEY: &str = "x-steward-key";
/// Header carrying the request time, decimal seconds since the Unix epoch.
pub const HEADER_TIMESTAMP: &str = "x-steward-timestamp";
/// Header carrying the nonce: 16 to 64 lowercase hex digits, fresh for every request.
pub const HEADER_NONCE: &str = "x-steward-nonce";
/// Header carrying the base64 ed25519 signature over [`canonical_request`].
pub const HEADER_SIGNATURE: &str = "x-steward-signature";

/// First line of every canonical request; distinct from the document signing context
/// (`steward/v1/...`), so a request signature can never pass as a document signature.
pub const REQUEST_SIGNING_PREFIX: &str = "STEWARD-REQUEST-V1";

/// Longest path and query accepted, in bytes.
pub const MAX_PATH_LEN: usize = 8 * 1024;

/// Shortest nonce, in hex digits (64 bits).
pub const MIN_NONCE_LEN: usize = 16;
/// Longest nonce, in hex digits.
pub const MAX_NONCE_LEN: usize = 64;

/// The four signature headers of one request, as strings (exactly what travels on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequestHeaders {
    /// [`HEADER_KEY`]: the signing key's id.
    pub key: KeyId,
    /// [`HEADER_TIMESTAMP`]: decimal seconds.
    pub timestamp: String,
    /// [`HEADER_NONCE`]: lowercase hex.
    pub nonce: String,
    /// [`HEADER_SIGNATURE`]: base64 of the 64-byte signature.
    pub signature: String,
}

impl SignedRequestHeaders {
    /// Collects the four headers through `get` (a lookup by lowercase header name, e.g. over
    /// `http::HeaderMap` with values that are not visible ASCII mapped to `None`).
    ///
    /// ```
    /// use steward_protocol::request::{RequestRefusal, SignedRequestHeaders};
    /// let missing = SignedRequestHeaders::from_lookup(|name| (name == "x-steward-key").then_some("sha256:00"));
    /// assert_eq!(missing, Err(RequestRefusal::Malformed("missing x-steward-timestamp header")));
    /// ```
    pub fn from_lookup<'a>(
        mut get: impl FnMut(&'static str) -> Option<&'a str>,
    ) -> Result<Self, RequestRefusal> {
        let key =
            get(HEADER_KEY).ok_or(RequestRefusal::Malformed("missing x-steward-key header"))?;
        let timestamp = get(HEADER_TIMESTAMP).ok_or(RequestRefusal::Malformed(
            "missing x-steward-timestamp header",
        ))?;
        let nonce =
            get(HEADER_NONCE).ok_or(RequestRefusal::Malformed("missing x-steward-nonce header"))?;
        let signature = get(HEADER_SIGNATURE).ok_or(RequestRefusal::Malformed(
            "missing x-steward-signature header",
        ))?;
        Ok(SignedRequestHeaders {
            key: KeyId(key.to_owned()),
            timestamp: timestamp.to_owned(),
            nonce: nonce.to_owned(),
            signature: signature.to_owned(),
        })
    }

    /// `(header name, value)` pairs, for the HTTP client.
    pub fn pairs(&self) -> [(&'static str, &str); 4] {
        [
            (HEADER_KEY, self.key.as_str()),
            (HEADER_TIMESTAMP, &self.timestamp),
            (HEADER_NONCE, &self.nonce),
            (HEADER_SIGNATURE, &self.signature),
        ]
    }
}

/// Why a signed request is refused. Messages never quote the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestRefusal {
    /// A header, the method, the path or the nonce is missing or not in its strict form.
    #[error("malformed signed request: {0}")]
    Malformed(&'static str),
    /// The signature does not verify with the node's key.
    #[error("request signature does not verify")]
    BadSignature,
    /// The timestamp is further than the allowed skew from the server's clock.
    #[error("request timestamp is outside the allowed clock skew; check the host's clock")]
    StaleTimestamp,
    /// The key id header does not name the key the server verifies with.
    #[error("request key id does not match the node's key")]
    KeyMismatch,
}

/// A nonce header value from 16 random bytes (the caller draws them).
pub fn nonce_from_bytes(bytes: [u8; 16]) -> String {
    hex::encode(bytes)
}

/// The bytes a request signature covers:
/// `STEWARD-REQUEST-V1\n{METHOD}\n{path and query}\n{timestamp}\n{nonce}\n{hex sha256(body)}`.
///
/// Refuses (as [`RequestRefusal::Malformed`]) a method that is not 1 to 16 uppercase ASCII
/// letters, a path that does not start with `/`, is longer than [`MAX_PATH_LEN`] or holds
/// anything but printable ASCII (so no newline can forge another line), and a nonce that is not
/// 16 to 64 lowercase hex digits.
///
/// ```
/// use steward_protocol::request::canonical_request;
/// use steward_protocol::Timestamp;
/// let bytes = canonical_request("GET", "/v1/catalog?wait=30", Timestamp(1700000000), "00112233445566778899aabbccddeeff", b"").unwrap();
/// assert_eq!(
///     String::from_utf8(bytes).unwrap(),
///     "STEWARD-REQUEST-V1\nGET\n/v1/catalog?wait=30\n1700000000\n00112233445566778899aabbccddeeff\n\
///      e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
/// );
/// assert!(canonical_request("GET", "/v1\nx", Timestamp(0), "00112233445566778899aabbccddeeff", b"").is_err());
/// ```
pub fn canonical_request(
    method: &str,
    path_and_query: &str,
    timestamp: Timestamp,
    nonce: &str,
    body: &[u8],
) -> Result<Vec<u8>, RequestRefusal> {
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(RequestRefusal::Malformed(
            "method must be 1 to 16 uppercase ascii letters",
        ));
    }
    if !path_and_query.starts_with('/')
        || path_and_query.len() > MAX_PATH_LEN
        || !path_and_query.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err(RequestRefusal::Malformed(
            "path must start with '/' and hold only printable ascii, at most 8 KiB",
        ));
    }
    if !is_valid_nonce(nonce) {
        return Err(RequestRefusal::Malformed(
            "nonce must be 16 to 64 lowercase hex digits",
        ));
    }
    let body_hash = hex::encode(Sha256::digest(body));
    Ok(format!(
        "{REQUEST_SIGNING_PREFIX}\n{method}\n{path_and_query}\n{timestamp}\n{nonce}\n{body_hash}"
    )
    .into_bytes())
}

/// Signs a request with the agent's key. `nonce` must be fresh for every request (see
/// [`nonce_from_bytes`]); `timestamp` is the agent's "now".
pub fn sign_request(
    key: &SigningKeyPair,
    method: &str,
    path_and_query: &str,
    timestamp: Timestamp,
    nonce: &str,
    body: &[u8],
) -> Result<SignedRequestHeaders, RequestRefusal> {
    let message = canonical_request(method, path_and_query, timestamp, nonce, body)?;
    Ok(SignedRequestHeaders {
        key: key.key_id(),
        timestamp: timestamp.to_string(),
        nonce: nonce.to_owned(),
        signature: STANDARD.encode(key.sign_raw(&message)),
    })
}

/// Verifies a signed request against the node's public key (which the server looked up by
/// `headers.key`). Checks, in order: the key id matches `public`, the timestamp is in canonical
/// decimal form and within `max_skew_secs` of `now` either way, method/path/nonce are well
/// formed, and the signature verifies (`verify_strict`).
///
/// It does not check replays: the server must refuse a `(key id, nonce)` it has seen in the last
/// `2 * max_skew_secs` (see the module docs).
pub fn verify_request(
    public: &[u8; 32],
    method: &str,
    path_and_query: &str,
    headers: &SignedRequestHeaders,
    body: &[u8],
    now: Timestamp,
    max_skew_secs: u32,
) -> Result<(), RequestRefusal> {
    if headers.key != KeyId::of_public_key_bytes(public) {
        return Err(RequestRefusal::KeyMismatch);
    }
    let timestamp = parse_timestamp(&headers.timestamp).ok_or(RequestRefusal::Malformed(
        "timestamp must be decimal seconds",
    ))?;
    if now.0.abs_diff(timestamp.0) > u64::from(max_skew_secs) {
        return Err(RequestRefusal::StaleTimestamp);
    }
    let message = canonical_request(method, path_and_query, timestamp, &headers.nonce, body)?;
    let signature = STANDARD
        .decode(&headers.signature)
        .ok()
        .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
        .map(|bytes| ed25519_dalek::Signature::from_bytes(&bytes))
        .ok_or(RequestRefusal::Malformed(
            "signature must be 64 bytes of base64",
        ))?;
    let key = VerifyingKey::from_bytes(public).map_err(|_| RequestRefusal::BadSignature)?;
    key.verify_strict(&message, &signature)
        .map_err(|_| RequestRefusal::BadSignature)
}

fn is_valid_nonce(nonce: &str) -> bool {
    (MIN_NONCE_LEN..=MAX_NONCE_LEN).contains(&nonce.len())
        && nonce
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Parses a timestamp header, accepting only the canonical decimal form (no sign on positive
/// values, no leading zeros, no spaces), so one timestamp has one spelling.
fn parse_timestamp(text: &str) -> Option<Timestamp> {
    if text.len() > 20 {
        return None;
    }
    let value: i64 = text.parse().ok()?;
    (value.to_string() == text).then_some(Timestamp(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "00112233445566778899aabbccddeeff";
    const NOW: Timestamp = Timestamp(1_700_000_000);

    fn agent() -> SigningKeyPair {
        SigningKeyPair::from_bytes([4; 32])
    }

    fn signed(body: &[u8]) -> SignedRequestHeaders {
        sign_request(&agent(), "POST", "/v1/reports?x=1", NOW, NONCE, body).unwrap()
    }

    fn verify(
        headers: &SignedRequestHeaders,
        method: &str,
        path: &str,
        body: &[u8],
        now: Timestamp,
    ) -> Result<(), RequestRefusal> {
        verify_request(
            &agent().public_bytes(),
            method,
            path,
            headers,
            body,
            now,
            300,
        )
    }

    #[test]
    fn signed_request_round_trips() {
        let headers = signed(b"{\"a\":1}");
        let pairs = headers.pairs();
        let parsed = SignedRequestHeaders::from_lookup(|name| {
            pairs.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
        });
        assert_eq!(parsed.as_ref(), Ok(&headers));
        assert_eq!(
            verify(&headers, "POST", "/v1/reports?x=1", b"{\"a\":1}", NOW),
            Ok(())
        );
        let names: Vec<_> = headers.pairs().iter().map(|(name, _)| *name).collect();
        assert_eq!(
            names,
            [
                "x-steward-key",
                "x-steward-timestamp",
                "x-steward-nonce",
                "x-steward-signature"
            ]
        );
    }

    #[test]
    fn any_change_to_method_path_body_nonce_or_timestamp_is_a_bad_signature() {
        let headers = signed(b"body");
        assert_eq!(
            verify(&headers, "PUT", "/v1/reports?x=1", b"body", NOW),
            Err(RequestRefusal::BadSignature)
        );
        assert_eq!(
            verify(&headers, "POST", "/v1/reports?x=2", b"body", NOW),
            Err(RequestRefusal::BadSignature)
        );
        assert_eq!(
            verify(&headers, "POST", "/v1/reports?x=1", b"bodY", NOW),
            Err(RequestRefusal::BadSignature)
        );
        let mut other_nonce = headers.clone();
        other_nonce.nonce = "ffffffffffffffffffffffffffffffff".into();
        assert_eq!(
            verify(&other_nonce, "POST", "/v1/reports?x=1", b"body", NOW),
            Err(RequestRefusal::BadSignature)
        );
        let mut other_time = headers.clone();
        other_time.timestamp = (NOW.0 + 1).to_string();
        assert_eq!(
            verify(&other_time, "POST", "/v1/reports?x=1", b"body", NOW),
            Err(RequestRefusal::BadSignature)
        );
    }

    #[test]
    fn stale_or_future_timestamps_are_refused() {
        let headers = signed(b"");
        assert_eq!(
            verify(&headers, "POST", "/v1/reports?x=1", b"", NOW.plus_secs(300)),
            Ok(())
        );
        assert_eq!(
            verify(
                &headers,
                "POST",
                "/v1/reports?x=1",
                b"",
                NOW.plus_secs(-300)
            ),
            Ok(())
        );
        assert_eq!(
            verify(&headers, "POST", "/v1/reports?x=1", b"", NOW.plus_secs(301)),
            Err(RequestRefusal::StaleTimestamp)
        );
        assert_eq!(
            verify(
                &headers,
                "POST",
                "/v1/reports?x=1",
                b"",
                NOW.plus_secs(-301)
            ),
            Err(RequestRefusal::StaleTimestamp)
        );
        assert_eq!(
            verify(
                &headers,
                "POST",
                "/v1/reports?x=1",
                b"",
                Timestamp(i64::MIN)
            ),
            Err(RequestRefusal::StaleTimestamp)
        );
    }

    #[test]
    fn request_signed_by_another_key_is_refused() {
        let other = SigningKeyPair::from_bytes([5; 32]);
        let headers = sign_request(&other, "POST", "/v1/reports?x=1", NOW, NONCE, b"").unwrap();
        assert_eq!(
            verify(&headers, "POST", "/v1/reports?x=1", b"", NOW),
            Err(RequestRefusal::KeyMismatch)
        );
        // Claiming the right key id does not help.
        let mut claimed = headers;
        claimed.key = agent().key_id();
        assert_eq!(
            verify(&claimed, "POST", "/v1/reports?x=1", b"", NOW),
            Err(RequestRefusal::BadSignature)
        );
    }

    #[test]
    fn malformed_fields_are_refused() {
        let headers = signed(b"");
        for method in ["", "get", "PO ST", "POST\n", "ABCDEFGHIJKLMNOPQ"] {
            assert!(
                matches!(
                    verify(&headers, method, "/v1/reports?x=1", b"", NOW),
                    Err(RequestRefusal::Malformed(_))
                ),
                "{method:?}"
            );
        }
        for path in [
            "",
            "v1/reports",
            "/v1/reports\nx-evil: 1",
            "/v1/a b",
            "/v1/\u{7f}",
            "/v1/é",
            &format!("/{}", "a".repeat(MAX_PATH_LEN)),
        ] {
            assert!(
                matches!(
                    verify(&headers, "POST", path, b"", NOW),
                    Err(RequestRefusal::Malformed(_))
                ),
                "{path:?}"
            );
        }
        for nonce in [
            "",
            "0011",
            "00112233445566778899AABBCCDDEEFF",
            "00112233445566778899aabbccddeefg",
            &"a".repeat(65),
            "00112233445566778899aabbccddee\nf",
        ] {
            let mut bad = headers.clone();
            bad.nonce = nonce.to_string();
            assert!(
                matches!(
                    verify(&bad, "POST", "/v1/reports?x=1", b"", NOW),
                    Err(RequestRefusal::Malformed(_))
                ),
                "{nonce:?}"
            );
        }
        for timestamp in [
            "",
            "+1700000000",
            "01700000000",
            " 1700000000",
            "1.7e9",
            "99999999999999999999999",
            "-0",
        ] {
            let mut bad = headers.clone();
            bad.timestamp = timestamp.to_string();
            assert!(
                matches!(
                    verify(&bad, "POST", "/v1/reports?x=1", b"", NOW),
                    Err(RequestRefusal::Malformed(_))
                ),
                "{timestamp:?}"
            );
        }
        for signature in ["", "not base64!", &STANDARD.encode([0u8; 63])] {
            let mut bad = headers.clone();
            bad.signature = signature.to_string();
            assert!(
                matches!(
                    verify(&bad, "POST", "/v1/reports?x=1", b"", NOW),
                    Err(RequestRefusal::Malformed(_))
                ),
                "{signature:?}"
            );
        }
        assert!(sign_request(&agent(), "POST", "/x\r\n", NOW, NONCE, b"").is_err());
    }

    #[test]
    fn request_signature_never_verifies_as_a_document_signature() {
        // Different prefixes: a canonical request never starts with the document context.
        let message = canonical_request("GET", "/", NOW, NONCE, b"").unwrap();
        assert!(!message.starts_with(crate::envelope::SIGNING_CONTEXT_PREFIX));
    }
}
