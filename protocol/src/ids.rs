//! Identifier newtypes that cross the agent/server boundary.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's name: its validated hostname (RFC 1123 labels, lowercase, at most 253 bytes).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub String);

impl NodeId {
    /// The node id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `name` is a valid hostname / node id: RFC 1123 labels of `[a-z0-9-]`, 1 to 63 bytes
/// each, not starting or ending with `-`, separated by `.`, at most 253 bytes in all.
///
/// ```
/// use steward_protocol::is_valid_hostname;
/// assert!(is_valid_hostname("devvm"));
/// assert!(is_valid_hostname("ws-01.lab.example"));
/// assert!(!is_valid_hostname("../../etc"));
/// assert!(!is_valid_hostname("Devvm"));
/// ```
pub fn is_valid_hostname(name: &str) -> bool {
    if name.is_empty() || name.len() > 253 {
        return false;
    }
    name.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    })
}

/// A resource id, `type:name`, e.g. `user:emo` or `file:/etc/ttyd-user-map`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ResourceId(pub String);

impl ResourceId {
    /// Builds `kind:name`.
    pub fn new(kind: &str, name: &str) -> Self {
        ResourceId(format!("{kind}:{name}"))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The resource type part (before the first `:`).
    pub fn kind(&self) -> &str {
        self.0.split_once(':').map_or("", |(k, _)| k)
    }

    /// The name part (after the first `:`).
    pub fn name(&self) -> &str {
        self.0.split_once(':').map_or("", |(_, n)| n)
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A catalog serial. Monotonic per node: `max(last + 1, now in ms)` on the server.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Serial(pub u64);

impl fmt::Display for Serial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A run id chosen by the agent (a UUID in its canonical text form), so resubmission is idempotent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl RunId {
    /// Whether this is a canonical lowercase hyphenated UUID (`8-4-4-4-12` hex digits).
    pub fn is_valid(&self) -> bool {
        let b = self.0.as_bytes();
        b.len() == 36
            && b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
            })
    }

    /// Formats 16 random bytes as a version-4 UUID.
    pub fn from_random_bytes(mut bytes: [u8; 16]) -> Self {
        bytes[6] = (bytes[6] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        let h = hex::encode(bytes);
        RunId(format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        ))
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A key id: the fingerprint of a public key, `sha256:<64 lowercase hex digits>` of its raw bytes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KeyId(pub String);

impl KeyId {
    /// The fingerprint of raw public key bytes.
    pub fn of_public_key_bytes(bytes: &[u8]) -> Self {
        use sha2::Digest;
        KeyId(format!(
            "sha256:{}",
            hex::encode(sha2::Sha256::digest(bytes))
        ))
    }

    /// The key id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Seconds since the Unix epoch (UTC). "Now" is always passed in, never read here.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// This timestamp plus `secs` seconds (saturating).
    pub fn plus_secs(self, secs: i64) -> Self {
        Timestamp(self.0.saturating_add(secs))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_validator_rejects_traversal_and_separators() {
        for bad in [
            "",
            "../../etc",
            "a/b",
            "a\\b",
            "a b",
            "a\nb",
            "-a",
            "a-",
            "a..b",
            ".a",
            "a.",
            "A",
            "dévvm",
            "a_b",
            "a:b",
        ] {
            assert!(!is_valid_hostname(bad), "{bad:?} must be refused");
        }
        assert!(!is_valid_hostname(&"a".repeat(64)));
        assert!(!is_valid_hostname(&["a"; 128].join(".")));
        for good in ["devvm", "ws-01", "a.b.c", "x1", &"a".repeat(63)] {
            assert!(is_valid_hostname(good), "{good:?} must be accepted");
        }
    }

    #[test]
    fn run_id_from_random_bytes_is_a_valid_v4_uuid() {
        let id = RunId::from_random_bytes([0xab; 16]);
        assert!(id.is_valid(), "{id}");
        assert_eq!(&id.0[14..15], "4");
        assert!(!RunId("not-a-uuid".into()).is_valid());
        assert!(!RunId(id.0.to_uppercase()).is_valid());
    }

    #[test]
    fn resource_id_parts() {
        let id = ResourceId::new("file", "/etc/ttyd-user-map");
        assert_eq!(id.as_str(), "file:/etc/ttyd-user-map");
        assert_eq!(id.kind(), "file");
        assert_eq!(id.name(), "/etc/ttyd-user-map");
    }
}
