//! Strict parsing of untrusted JSON: the one entry point, [`from_slice`], for every byte string
//! that arrives from the network or a cache (catalog envelopes and payloads, run reports,
//! enrollment requests).
//!
//! It owns the checks that serde's derive cannot do alone: a size limit applied before any
//! parsing, UTF-8 validation, duplicate object keys at any depth (serde's derive catches a
//! repeated struct field, but a `BTreeMap` silently keeps the last of two equal keys, which is
//! the parser differential of THREATS C12), and a nesting limit. Unknown fields are refused by
//! `deny_unknown_fields` on every wire struct, not here.
//!
//! It must not echo large or raw input back: error messages are truncated and control
//! characters are escaped, so a hostile document cannot flood or forge a log line.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::fmt;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
};

/// Deepest nesting of arrays and objects accepted. Steward's deepest wire document (a catalog
/// envelope's payload) nests fewer than ten levels; the limit keeps recursion bounded well below
/// serde_json's own limit of 128.
pub const MAX_DEPTH: usize = 64;

/// Longest error message (in characters) taken from the parser; the rest is cut.
const MAX_MESSAGE_CHARS: usize = 200;

/// Longest duplicate key (in characters) quoted back in [`StrictError::DuplicateKey`].
const MAX_KEY_CHARS: usize = 64;

/// Why untrusted bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictError {
    /// The input is longer than the caller's limit; nothing was parsed.
    #[error("document is {len} bytes, over the limit of {max} bytes")]
    Oversize {
        /// Length of the input.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// An object (at any depth) repeats a key.
    #[error("duplicate object key {key:?}")]
    DuplicateKey {
        /// The repeated key, cut to 64 characters.
        key: String,
    },
    /// Not UTF-8, not JSON, nested too deep, or not the expected shape: serde's message with
    /// line and column, cut to 200 characters with control characters escaped.
    #[error("{0}")]
    Syntax(String),
}

/// Parses untrusted JSON into `T`, refusing (in this order) input over `max_len` bytes, invalid
/// UTF-8, malformed JSON, objects with duplicate keys at any depth, nesting deeper than
/// [`MAX_DEPTH`], trailing data, and anything `T`'s `Deserialize` refuses (unknown fields,
/// wrong types, missing fields).
///
/// ```
/// use std::collections::BTreeMap;
/// use steward_protocol::strict::{from_slice, StrictError};
///
/// let ok: BTreeMap<String, u32> = from_slice(br#"{"a":1,"b":2}"#, 1024).unwrap();
/// assert_eq!(ok.len(), 2);
/// // serde_json alone would keep the last "a"; the strict parser refuses the document.
/// let dup = from_slice::<BTreeMap<String, u32>>(br#"{"a":1,"a":2}"#, 1024);
/// assert_eq!(dup, Err(StrictError::DuplicateKey { key: "a".into() }));
/// assert!(matches!(from_slice::<u32>(b"12345", 4), Err(StrictError::Oversize { len: 5, max: 4 })));
/// ```
pub fn from_slice<T: DeserializeOwned>(bytes: &[u8], max_len: usize) -> Result<T, StrictError> {
    if bytes.len() > max_len {
        return Err(StrictError::Oversize {
            len: bytes.len(),
            max: max_len,
        });
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| StrictError::Syntax(format!("invalid utf-8 at byte {}", e.valid_up_to())))?;
    check_structure(text)?;
    serde_json::from_str(text).map_err(|e| StrictError::Syntax(sanitize(&e.to_string())))
}

/// Like [`from_slice`] but without the generic pre-pass, for the hot path of verification.
///
/// Only for wire types whose every map field is deserialized with [`unique_map`] (so duplicate
/// keys are refused during the typed parse: serde's derive already refuses duplicate struct
/// fields) and whose nesting is bounded by their own shape (unknown fields are refused, and
/// serde_json stops at 128 levels). `Catalog` is such a type; a test injects a duplicate key
/// into every object of a real catalog to keep it so.
pub fn from_slice_typed<T: DeserializeOwned>(
    bytes: &[u8],
    max_len: usize,
) -> Result<T, StrictError> {
    if bytes.len() > max_len {
        return Err(StrictError::Oversize {
            len: bytes.len(),
            max: max_len,
        });
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|e| StrictError::Syntax(format!("invalid utf-8 at byte {}", e.valid_up_to())))?;
    serde_json::from_str(text).map_err(|e| {
        let message = e.to_string();
        match message.strip_prefix(DUPLICATE_MAP_KEY) {
            Some(key) => StrictError::DuplicateKey {
                key: truncate_chars(key.split(" at line").next().unwrap_or(""), MAX_KEY_CHARS),
            },
            None => StrictError::Syntax(sanitize(&message)),
        }
    })
}

const DUPLICATE_MAP_KEY: &str = "duplicate map key: ";

/// `deserialize_with` for every map field of a wire type: a `BTreeMap` that refuses a
/// repeated key instead of keeping the last one (a parser differential, THREATS C12).
pub fn unique_map<'de, D, V>(
    deserializer: D,
) -> Result<std::collections::BTreeMap<String, V>, D::Error>
where
    D: Deserializer<'de>,
    V: serde::Deserialize<'de>,
{
    struct UniqueMap<V>(std::marker::PhantomData<V>);
    impl<'de, V: serde::Deserialize<'de>> Visitor<'de> for UniqueMap<V> {
        type Value = std::collections::BTreeMap<String, V>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a map")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
            let mut out = std::collections::BTreeMap::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format_args!(
                        "{DUPLICATE_MAP_KEY}{}",
                        truncate_chars(&key, MAX_KEY_CHARS)
                    )));
                }
                let value = map.next_value()?;
                out.insert(key, value);
            }
            Ok(out)
        }
    }
    deserializer.deserialize_map(UniqueMap(std::marker::PhantomData))
}

/// The pre-pass: walks the whole document once without building it, checking every object for
/// duplicate keys and the nesting depth, and that nothing follows the document.
fn check_structure(text: &str) -> Result<(), StrictError> {
    let mut problem = None;
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let walked = Walk {
        depth: 0,
        problem: &mut problem,
    }
    .deserialize(&mut deserializer)
    .and_then(|()| deserializer.end());
    match (walked, problem) {
        (Ok(()), _) => Ok(()),
        // The walker records the typed reason before it aborts the parse.
        (Err(_), Some(problem)) => Err(problem),
        (Err(e), None) => Err(StrictError::Syntax(sanitize(&e.to_string()))),
    }
}

/// A seed (and visitor) that accepts any JSON value and records the first structural problem.
struct Walk<'a> {
    depth: usize,
    problem: &'a mut Option<StrictError>,
}

impl Walk<'_> {
    /// Enters an array or object, failing past [`MAX_DEPTH`].
    fn enter<E: de::Error>(&self) -> Result<usize, E> {
        let depth = self.depth + 1;
        if depth > MAX_DEPTH {
            // Reported as a syntax error: serde_json appends the line and column.
            return Err(E::custom(format_args!(
                "nesting deeper than {MAX_DEPTH} levels"
            )));
        }
        Ok(depth)
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }

    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }

    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }

    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        while seq
            .next_element_seed(Walk {
                depth,
                problem: &mut *self.problem,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.enter()?;
        // A BTreeSet keeps the check O(n log n) even for an object with a million keys.
        let mut keys: BTreeSet<Cow<'de, str>> = BTreeSet::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            if keys.contains(&key) {
                *self.problem = Some(StrictError::DuplicateKey {
                    key: truncate_chars(&key, MAX_KEY_CHARS),
                });
                return Err(de::Error::custom("duplicate object key"));
            }
            keys.insert(key);
            map.next_value_seed(Walk {
                depth,
                problem: &mut *self.problem,
            })?;
        }
        Ok(())
    }
}

/// Deserializes an object key, borrowing it from the input when it has no escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// At most `max` characters of `text`, with `…` when cut.
fn truncate_chars(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_owned(),
    }
}

/// A parser message fit for a log line: cut to [`MAX_MESSAGE_CHARS`], control characters escaped.
fn sanitize(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE_CHARS + 8));
    for (count, c) in message.chars().enumerate() {
        if count == MAX_MESSAGE_CHARS {
            out.push('…');
            break;
        }
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        #[serde(default)]
        labels: BTreeMap<String, String>,
        #[serde(default)]
        items: Vec<BTreeMap<String, u32>>,
    }

    #[test]
    fn refuses_oversize_before_parsing() {
        // Not even JSON: the size check must come first.
        let err = from_slice::<Outer>(&[0xff; 11], 10).unwrap_err();
        assert_eq!(err, StrictError::Oversize { len: 11, max: 10 });
        assert!(from_slice::<u32>(b"7", 1).is_ok());
    }

    #[test]
    fn refuses_invalid_utf8() {
        let err = from_slice::<String>(b"\"ab\xffc\"", 100).unwrap_err();
        assert_eq!(err, StrictError::Syntax("invalid utf-8 at byte 3".into()));
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        let cases: [&[u8]; 4] = [
            br#"{"name":"a","name":"b"}"#,
            br#"{"name":"a","labels":{"x":"1","x":"2"}}"#,
            br#"{"name":"a","items":[{"k":1},{"k":1,"k":2}]}"#,
            // The same key spelled with an escape is still the same key.
            br#"{"name":"a","labels":{"x":"1","\u0078":"2"}}"#,
        ];
        for case in cases {
            let err = from_slice::<Outer>(case, 1000).unwrap_err();
            assert!(matches!(err, StrictError::DuplicateKey { .. }), "{err:?}");
        }
        // Keys of the same name in different objects are fine.
        let ok: Outer = from_slice(br#"{"name":"a","items":[{"k":1},{"k":2}]}"#, 1000).unwrap();
        assert_eq!(ok.items.len(), 2);
    }

    #[test]
    fn duplicate_key_message_is_cut_and_escaped() {
        let key = format!("\n{}", "k".repeat(10_000));
        let doc = format!(r#"{{"{k}":1,"{k}":2}}"#, k = key.replace('\n', "\\n"));
        let err = from_slice::<BTreeMap<String, u32>>(doc.as_bytes(), 1 << 20).unwrap_err();
        let message = err.to_string();
        assert!(message.len() < 200, "{message}");
        assert!(!message.contains('\n'));
    }

    #[test]
    fn refuses_excessive_nesting() {
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let err = from_slice::<serde_json::Value>(deep.as_bytes(), 1 << 20).unwrap_err();
        assert!(
            matches!(&err, StrictError::Syntax(m) if m.contains("nesting deeper than 64")),
            "{err:?}"
        );
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(from_slice::<serde_json::Value>(ok.as_bytes(), 1 << 20).is_ok());
        // Far past serde_json's own limit: still an error, never a stack overflow.
        let very_deep = "{\"a\":".repeat(100_000);
        assert!(from_slice::<serde_json::Value>(very_deep.as_bytes(), 1 << 20).is_err());
    }

    #[test]
    fn refuses_unknown_fields_trailing_data_and_bad_syntax_with_position() {
        let err = from_slice::<Outer>(br#"{"name":"a","evil":1}"#, 100).unwrap_err();
        assert!(
            matches!(&err, StrictError::Syntax(m) if m.contains("unknown field `evil`") && m.contains("line 1")),
            "{err:?}"
        );
        assert!(from_slice::<Outer>(br#"{"name":"a"} {}"#, 100).is_err());
        assert!(from_slice::<Outer>(br#"{"name":"a""#, 100).is_err());
        assert!(from_slice::<Outer>(b"", 100).is_err());
    }

    #[test]
    fn syntax_messages_do_not_echo_large_input() {
        let big = "x".repeat(100_000);
        let doc = format!(r#"{{"name":"a","{big}":1}}"#);
        let err = from_slice::<Outer>(doc.as_bytes(), 1 << 20).unwrap_err();
        assert!(
            err.to_string().chars().count() <= MAX_MESSAGE_CHARS + 1,
            "{err}"
        );
        let doc = "{\"name\":\"a\",\"\u{1b}[31mred\":1}";
        let err = from_slice::<Outer>(doc.as_bytes(), 1 << 20).unwrap_err();
        assert!(!err.to_string().contains('\u{1b}'), "{err}");
    }
}
