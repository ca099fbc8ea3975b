//! The join string: everything a fresh host needs to enroll, in one copy-pasteable line
//! (DESIGN §5, "Enrollment"; THREATS E1, E2).
//!
//! ```text
//! steward:v1:<token id>.<token secret>:<root key fingerprint, 64 hex>:<server url>
//! steward:v1:0a1b2c3d4e5f.00112233445566778899aabbccddeeff:3f…(64 hex)…9c:https://steward.example:8443
//! ```
//!
//! - The **bootstrap token** `<id>.<secret>` lets the host *ask* to enroll; the server keeps
//!   only the secret's hash. The id is 12 and the secret 32 lowercase hex digits (48 and 128
//!   bits), exactly what the server generates.
//! - The **root key fingerprint** (`sha256:` of the root public key, written without the
//!   prefix) pins the server: the agent refuses an enrollment answer whose root key does not
//!   hash to it, so there is no trust on first use (kubeadm's discovery-token-ca-cert-hash).
//! - The **server URL** is `https://` (or `http://` for a loopback address, for tests and a
//!   local proxy) with a lowercase host, an optional port and an optional path; no user info,
//!   query or fragment. It comes last, so its own `:` need no escaping.
//!
//! The format is versioned by its second field; a parser that sees another version refuses it
//! rather than guessing. Nothing in it needs quoting in a shell or YAML (no spaces, `#`, `&`,
//! quotes). Its `Debug` hides the token secret; `Display` writes the whole string (that is its
//! purpose: print it once, paste it into cloud-init).
//!
//! ```
//! use steward_protocol::join::{BootstrapToken, JoinString};
//! use steward_protocol::KeyId;
//!
//! let root = KeyId(format!("sha256:{}", "ab".repeat(32)));
//! let token = BootstrapToken::parse("0a1b2c3d4e5f.00112233445566778899aabbccddeeff").unwrap();
//! let join = JoinString::new("https://steward.example:8443", token, root.clone()).unwrap();
//! let text = join.to_string();
//! assert!(text.starts_with("steward:v1:0a1b2c3d4e5f."));
//! let parsed: JoinString = text.parse().unwrap();
//! assert_eq!(parsed, join);
//! assert_eq!(parsed.root_key_id(), &root);
//! assert!(!format!("{parsed:?}").contains("00112233445566778899aabbccddeeff"));
//! ```

use std::fmt;
use std::str::FromStr;

use crate::ids::KeyId;
use crate::secret::REDACTED;

/// First two fields of every join string this build writes and reads.
pub const JOIN_PREFIX: &str = "steward:v1:";

/// Length of a token id, in lowercase hex digits.
pub const TOKEN_ID_LEN: usize = 12;
/// Length of a token secret, in lowercase hex digits.
pub const TOKEN_SECRET_LEN: usize = 32;
/// Longest server URL accepted, in bytes.
pub const MAX_SERVER_URL_LEN: usize = 512;

/// Why a join string, token or server URL is refused. Messages never quote a token secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// Not `steward:v1:...`, or another version.
    #[error("not a steward join string (expected it to start with {JOIN_PREFIX}); copy it again from `steward-server token create`")]
    Prefix,
    /// A field is missing.
    #[error("join string is incomplete: expected steward:v1:<token>:<root key fingerprint>:<server url>")]
    Incomplete,
    /// The token is not `<12 hex>.<32 hex>`.
    #[error("bootstrap token must be {TOKEN_ID_LEN} lowercase hex digits, a dot, and {TOKEN_SECRET_LEN} lowercase hex digits")]
    Token,
    /// The fingerprint is not 64 lowercase hex digits.
    #[error("root key fingerprint must be 64 lowercase hex digits")]
    Fingerprint,
    /// The server URL is not acceptable; the text says why.
    #[error("invalid server url: {0}")]
    ServerUrl(&'static str),
}

/// A bootstrap token `<id>.<secret>`. The id is public (it names the token in lists and logs);
/// the secret is a credential: `Debug` hides it and only [`BootstrapToken::secret`] reveals it.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

impl BootstrapToken {
    /// Parses `<id>.<secret>` strictly (lowercase hex of the exact lengths).
    pub fn parse(text: &str) -> Result<BootstrapToken, JoinError> {
        let (id, secret) = text.split_once('.').ok_or(JoinError::Token)?;
        if !is_lower_hex(id, TOKEN_ID_LEN) || !is_lower_hex(secret, TOKEN_SECRET_LEN) {
            return Err(JoinError::Token);
        }
        Ok(BootstrapToken {
            id: id.to_owned(),
            secret: secret.to_owned(),
        })
    }

    /// A token from random bytes (the caller draws them): 6 bytes of id, 16 of secret.
    pub fn from_random_bytes(id: [u8; 6], secret: [u8; 16]) -> BootstrapToken {
        BootstrapToken {
            id: hex::encode(id),
            secret: hex::encode(secret),
        }
    }

    /// The public id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret part. Call only to hash it or to write the join string.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `<id>.<secret>`, as sent in an enrollment request body.
    pub fn expose(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BootstrapToken")
            .field("id", &self.id)
            .field("secret", &REDACTED)
            .finish()
    }
}

/// A parsed, validated join string. See the module documentation for the format.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinString {
    server_url: String,
    token: BootstrapToken,
    root_key_id: KeyId,
}

impl JoinString {
    /// Builds a join string, validating the server URL and the fingerprint.
    pub fn new(
        server_url: &str,
        token: BootstrapToken,
        root_key_id: KeyId,
    ) -> Result<JoinString, JoinError> {
        check_server_url(server_url)?;
        let hex = root_key_id
            .as_str()
            .strip_prefix("sha256:")
            .ok_or(JoinError::Fingerprint)?;
        if !is_lower_hex(hex, 64) {
            return Err(JoinError::Fingerprint);
        }
        Ok(JoinString {
            server_url: server_url.to_owned(),
            token,
            root_key_id,
        })
    }

    /// The server's base URL (no trailing slash added or removed).
    pub fn server_url(&self) -> &str {
        &self.server_url
    }

    /// The bootstrap token.
    pub fn token(&self) -> &BootstrapToken {
        &self.token
    }

    /// The pinned root key fingerprint, `sha256:<hex>`.
    pub fn root_key_id(&self) -> &KeyId {
        &self.root_key_id
    }
}

impl FromStr for JoinString {
    type Err = JoinError;

    fn from_str(text: &str) -> Result<JoinString, JoinError> {
        let rest = text.strip_prefix(JOIN_PREFIX).ok_or(JoinError::Prefix)?;
        let mut fields = rest.splitn(3, ':');
        let token = fields.next().ok_or(JoinError::Incomplete)?;
        let fingerprint = fields.next().ok_or(JoinError::Incomplete)?;
        let server_url = fields.next().ok_or(JoinError::Incomplete)?;
        let token = BootstrapToken::parse(token)?;
        if !is_lower_hex(fingerprint, 64) {
            return Err(JoinError::Fingerprint);
        }
        JoinString::new(server_url, token, KeyId(format!("sha256:{fingerprint}")))
    }
}

impl fmt::Display for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fingerprint = self
            .root_key_id
            .as_str()
            .strip_prefix("sha256:")
            .unwrap_or(self.root_key_id.as_str());
        write!(
            f,
            "{JOIN_PREFIX}{}.{}:{fingerprint}:{}",
            self.token.id, self.token.secret, self.server_url
        )
    }
}

impl fmt::Debug for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinString")
            .field("server_url", &self.server_url)
            .field("token", &self.token)
            .field("root_key_id", &self.root_key_id.as_str())
            .finish()
    }
}

/// Checks a server URL: `https://host[:port][/path]`, or `http://` with a loopback host
/// (`localhost`, `127.x.x.x`, `[::1]`). The host is lowercase letters, digits, `-` and `.` (or a
/// bracketed IPv6 literal); the port is 1 to 65535; the path is printable ASCII without `?`,
/// `#`, `%` or quotes. No user info, no query, no fragment, at most [`MAX_SERVER_URL_LEN`] bytes.
///
/// ```
/// use steward_protocol::join::check_server_url;
/// assert!(check_server_url("https://steward.example:8443").is_ok());
/// assert!(check_server_url("http://127.0.0.1:8080").is_ok());
/// assert!(check_server_url("http://steward.example").is_err());
/// assert!(check_server_url("https://user@steward.example").is_err());
/// ```
pub fn check_server_url(url: &str) -> Result<(), JoinError> {
    if url.len() > MAX_SERVER_URL_LEN {
        return Err(JoinError::ServerUrl("longer than 512 bytes"));
    }
    let (plain, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else {
        return Err(JoinError::ServerUrl("must start with https://"));
    };
    let (authority, path) = match rest.find('/') {
        Some(at) => rest.split_at(at),
        None => (rest, ""),
    };
    let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
        let (host, after) = bracketed
            .split_once(']')
            .ok_or(JoinError::ServerUrl("unclosed ipv6 bracket"))?;
        if host.is_empty() || !host.bytes().all(|b| b.is_ascii_hexdigit() || b == b':') {
            return Err(JoinError::ServerUrl("invalid ipv6 address"));
        }
        let port = match after {
            "" => None,
            _ => Some(after.strip_prefix(':').ok_or(JoinError::ServerUrl(
                "unexpected text after the ipv6 address",
            ))?),
        };
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let is_ipv6 = authority.starts_with('[');
    if !is_ipv6
        && (host.is_empty()
            || host.len() > 253
            || host.starts_with(['.', '-'])
            || host.ends_with(['.', '-'])
            || !host
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.'))
    {
        return Err(JoinError::ServerUrl(
            "host must be a lowercase name or address, without user info",
        ));
    }
    if let Some(port) = port {
        let valid = !port.is_empty()
            && port.len() <= 5
            && port.bytes().all(|b| b.is_ascii_digit())
            && !port.starts_with('0')
            && port.parse::<u32>().is_ok_and(|p| (1..=65535).contains(&p));
        if !valid {
            return Err(JoinError::ServerUrl("port must be 1 to 65535"));
        }
    }
    if !path
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%' | b'"' | b'\'' | b'\\'))
    {
        return Err(JoinError::ServerUrl(
            "path must be printable ascii without a query or fragment",
        ));
    }
    if plain {
        let loopback = host == "localhost"
            || host == "::1"
            || (host.starts_with("127.")
                && host.split('.').count() == 4
                && host
                    .split('.')
                    .all(|octet| octet.parse::<u8>().is_ok_and(|_| !octet.is_empty())));
        if !loopback {
            return Err(JoinError::ServerUrl(
                "plain http is only allowed to a loopback address; use https://",
            ));
        }
    }
    Ok(())
}

fn is_lower_hex(text: &str, len: usize) -> bool {
    text.len() == len
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "0a1b2c3d4e5f.00112233445566778899aabbccddeeff";

    fn root() -> KeyId {
        KeyId(format!("sha256:{}", "ab".repeat(32)))
    }

    #[test]
    fn join_string_round_trips_and_debug_hides_the_secret() {
        let join = JoinString::new(
            "https://steward.example:8443/base",
            BootstrapToken::parse(TOKEN).unwrap(),
            root(),
        )
        .unwrap();
        let text = join.to_string();
        assert_eq!(
            text,
            format!(
                "steward:v1:{TOKEN}:{}:https://steward.example:8443/base",
                "ab".repeat(32)
            )
        );
        assert_eq!(text.parse::<JoinString>().unwrap(), join);
        let debug = format!("{join:?}");
        assert!(
            !debug.contains("00112233445566778899aabbccddeeff"),
            "{debug}"
        );
        assert!(
            debug.contains("0a1b2c3d4e5f") && debug.contains(REDACTED),
            "{debug}"
        );
    }

    #[test]
    fn malformed_join_strings_are_refused() {
        let key = "ab".repeat(32);
        let cases = [
            (String::new(), JoinError::Prefix),
            (
                format!("steward:v2:{TOKEN}:{key}:https://a"),
                JoinError::Prefix,
            ),
            (format!("steward:v1:{TOKEN}"), JoinError::Incomplete),
            (format!("steward:v1:{TOKEN}:{key}"), JoinError::Incomplete),
            (
                format!("steward:v1:0A1B2C3D4E5F.00112233445566778899aabbccddeeff:{key}:https://a"),
                JoinError::Token,
            ),
            (
                format!("steward:v1:0a1b2c3d4e5f.0011:{key}:https://a"),
                JoinError::Token,
            ),
            (
                format!("steward:v1:{TOKEN}:{}:https://a", "ab".repeat(31)),
                JoinError::Fingerprint,
            ),
            (
                format!("steward:v1:{TOKEN}:{}:https://a", "AB".repeat(32)),
                JoinError::Fingerprint,
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(text.parse::<JoinString>(), Err(expected), "{text:?}");
        }
    }

    #[test]
    fn server_url_validation_table() {
        for good in [
            "https://steward.example",
            "https://steward.example:8443",
            "https://10.0.0.5:8443/steward",
            "https://[fd00::1]:8443",
            "http://127.0.0.1:41234",
            "http://localhost:8080",
            "http://[::1]:8080",
        ] {
            assert_eq!(check_server_url(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "steward.example",
            "ftp://steward.example",
            "https://",
            "https://Steward.example",
            "https://user:pw@steward.example",
            "https://steward.example:0",
            "https://steward.example:65536",
            "https://steward.example:",
            "https://steward.example/a?b=c",
            "https://steward.example/#x",
            "https://steward.example/a b",
            "https://steward .example",
            "http://steward.example",
            "http://10.0.0.1:80",
            "http://127.0.0.1.evil.example",
            "https://[zz::1]",
        ] {
            assert!(check_server_url(bad).is_err(), "{bad:?} must be refused");
        }
    }

    #[test]
    fn token_from_random_bytes_parses_back() {
        let token = BootstrapToken::from_random_bytes([0xab; 6], [0xcd; 16]);
        assert_eq!(BootstrapToken::parse(&token.expose()).unwrap(), token);
        assert_eq!(token.id(), "abababababab");
    }
}
