//! `application/x-www-form-urlencoded` bodies of the UI's forms, parsed by hand (a dozen lines,
//! instead of enabling another axum feature), and the [`Form`] extractor handlers take.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use crate::ui::UiError;

/// Largest form body accepted.
pub const MAX_FORM_BYTES: usize = 16 * 1024;

/// The fields of a submitted form, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FormData(pub Vec<(String, String)>);

impl FormData {
    /// Parses a urlencoded body; `None` when it is not valid UTF-8 after decoding.
    pub fn parse(body: &[u8]) -> Option<FormData> {
        let mut fields = Vec::new();
        for pair in body.split(|b| *b == b'&').filter(|pair| !pair.is_empty()) {
            let (name, value) = match pair.iter().position(|b| *b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &[][..]),
            };
            fields.push((decode(name)?, decode(value)?));
        }
        Some(FormData(fields))
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(field, _)| field == name)
            .map(|(_, value)| value.as_str())
    }

    /// The trimmed value of `name`, `None` when missing or blank.
    pub fn text(&self, name: &str) -> Option<String> {
        self.get(name)
            .map(str::trim)
            .filter(|value| !value.is_empty())
            .map(str::to_owned)
    }

    /// Whether a checkbox `name` was checked.
    pub fn checked(&self, name: &str) -> bool {
        self.get(name).is_some()
    }
}

fn decode(bytes: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b'%' => return None,
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// The form of a UI `POST`, already read and CSRF-checked by the UI guard
/// ([`crate::ui::auth::guard`]); a handler taking it cannot run without that check.
#[derive(Debug, Clone)]
pub struct Form(pub FormData);

impl<S: Send + Sync> FromRequestParts<S> for Form {
    type Rejection = UiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, UiError> {
        parts
            .extensions
            .remove::<FormData>()
            .map(Form)
            .ok_or(UiError::Forbidden)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencoded_fields() {
        let form = FormData::parse(b"csrf=ab%2Fc&next=%2Fui%2Fnodes&x=a+b&flag&empty=").unwrap();
        assert_eq!(form.get("csrf"), Some("ab/c"));
        assert_eq!(form.get("next"), Some("/ui/nodes"));
        assert_eq!(form.get("x"), Some("a b"));
        assert!(form.checked("flag"));
        assert_eq!(form.text("empty"), None);
        assert_eq!(FormData::parse(b"a=%zz"), None);
        assert_eq!(FormData::parse(b"a=%4"), None);
        assert_eq!(FormData::parse(b"a=%ff"), None);
    }
}
