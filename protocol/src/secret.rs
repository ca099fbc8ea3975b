//! [`Secret`]: a sensitive string whose `Debug`, `Display` and `Serialize` redact.

use std::fmt;

use serde::{Serialize, Serializer};
use zeroize::Zeroizing;

/// What every redacted rendering of a secret prints.
pub const REDACTED: &str = "<redacted>";

/// A sensitive value. It can be read only through [`Secret::expose`]; every other rendering
/// prints [`REDACTED`]. It deliberately does not implement `Deserialize`: secrets never arrive
/// unsealed over the wire. The buffer is zeroed on drop.
///
/// ```
/// use steward_protocol::Secret;
/// let s = Secret::new("hunter2".to_string());
/// assert_eq!(format!("{s} {s:?}"), "<redacted> Secret(<redacted>)");
/// assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
/// assert_eq!(s.expose(), "hunter2");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a sensitive string.
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The clear value. Call only where the value is used (sealing, writing the target file).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secret({REDACTED})")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(REDACTED)
    }
}
