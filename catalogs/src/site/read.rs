//! Reading typed values out of a [`Node`] tree while collecting `FILE:LINE: field: message`
//! errors, so one pass reports every problem of a file instead of stopping at the first.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::{Loc, SiteError};
use crate::yaml::{Node, NodeValue, Resolved};

/// Where errors of one file go.
pub(crate) struct Ctx<'e> {
    /// File name relative to the site (`roster.yaml`).
    pub(crate) file: &'e str,
    errors: &'e mut Vec<SiteError>,
}

impl<'e> Ctx<'e> {
    pub(crate) fn new(file: &'e str, errors: &'e mut Vec<SiteError>) -> Self {
        Ctx { file, errors }
    }

    /// Records an error at `line` about `field`.
    pub(crate) fn error(&mut self, line: u32, field: &str, message: impl Into<String>) {
        self.errors
            .push(SiteError::new(Loc::new(self.file, line), field, message));
    }

    /// A location in this file.
    pub(crate) fn loc(&self, line: u32) -> Loc {
        Loc::new(self.file, line)
    }
}

/// `path.key`, or `key` at the top.
pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// One entry of a mapping: the key's text and line, and the value.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Entry<'n> {
    pub(crate) key: &'n str,
    pub(crate) line: u32,
    pub(crate) value: &'n Node,
}

/// The entries of a mapping, in file order (null counts as an empty mapping).
pub(crate) fn entries<'n>(
    ctx: &mut Ctx<'_>,
    field: &str,
    node: &'n Node,
) -> Option<Vec<Entry<'n>>> {
    match &node.value {
        NodeValue::Map(pairs) => Some(
            pairs
                .iter()
                .map(|(k, v)| Entry {
                    key: k.as_scalar().map_or("", |s| s.text.as_str()),
                    line: k.line,
                    value: v,
                })
                .collect(),
        ),
        _ if node.is_null() => Some(Vec::new()),
        _ => {
            ctx.error(
                node.line,
                field,
                format!("expected a mapping, found {}", node.kind_name()),
            );
            None
        }
    }
}

/// A mapping whose keys must be among `known`; unknown keys are reported (with a suggestion)
/// and dropped.
pub(crate) struct Fields<'n> {
    entries: Vec<Entry<'n>>,
}

impl<'n> Fields<'n> {
    /// The entry for `key`, if given.
    pub(crate) fn get(&self, key: &str) -> Option<Entry<'n>> {
        self.entries.iter().find(|e| e.key == key).copied()
    }

    /// All known entries, in file order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Entry<'n>> {
        self.entries.iter()
    }
}

/// Reads a mapping with a fixed set of keys.
pub(crate) fn fields<'n>(
    ctx: &mut Ctx<'_>,
    field: &str,
    node: &'n Node,
    known: &[&str],
) -> Option<Fields<'n>> {
    let all = entries(ctx, field, node)?;
    let mut kept = Vec::with_capacity(all.len());
    for entry in all {
        if known.contains(&entry.key) {
            kept.push(entry);
        } else {
            ctx.error(
                entry.line,
                &join(field, entry.key),
                unknown_key_message(entry.key, known),
            );
        }
    }
    Some(Fields { entries: kept })
}

/// `unknown key; did you mean "tier"?` or `unknown key; expected one of: a, b`.
pub(crate) fn unknown_key_message(key: &str, known: &[&str]) -> String {
    match suggest(key, known) {
        Some(close) => format!("unknown key; did you mean {close:?}?"),
        None => format!("unknown key; expected one of: {}", known.join(", ")),
    }
}

/// The closest of `known` to `word`, if it is a plausible typo.
pub(crate) fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(word, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min()
        .map(|(_, k)| k)
}

/// Optimal string alignment distance (Levenshtein plus adjacent transpositions, so `teir` is
/// one edit from `tier`).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    if a.len() > 64 || b.len() > 64 {
        return usize::MAX;
    }
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

/// Whether `text` matches `glob`, where `*` is any run of characters (no other wildcards).
pub(crate) fn glob_match(glob: &str, text: &str) -> bool {
    let parts: Vec<&str> = glob.split('*').collect();
    let [first, middle @ .., last] = parts.as_slice() else {
        return glob == text;
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// A template as a glob: every `{{ … }}`, `{% … %}` and `{# … #}` becomes `*`.
pub(crate) fn template_glob(template: &str) -> String {
    let mut out = String::with_capacity(template.len());
    let mut rest = template;
    while let Some(start) = rest.find(['{']) {
        let (before, from) = rest.split_at(start);
        out.push_str(before);
        let close = match from.get(..2) {
            Some("{{") => "}}",
            Some("{%") => "%}",
            Some("{#") => "#}",
            _ => {
                out.push('{');
                rest = &from[1..];
                continue;
            }
        };
        match from[2..].find(close) {
            Some(end) => {
                if !out.ends_with('*') {
                    out.push('*');
                }
                rest = &from[2 + end + 2..];
            }
            None => {
                // Unclosed: anything may follow.
                out.push('*');
                return out;
            }
        }
    }
    out.push_str(rest);
    out
}

/// A string field: any scalar except null, as written (`12` is the text `"12"`).
pub(crate) fn text(ctx: &mut Ctx<'_>, field: &str, node: &Node) -> Option<String> {
    match node.scalar_text() {
        Some(t) => Some(t.to_owned()),
        None => {
            ctx.error(
                node.line,
                field,
                format!("expected a string, found {}", node.kind_name()),
            );
            None
        }
    }
}

/// A boolean field: plain `true` or `false`.
pub(crate) fn boolean(ctx: &mut Ctx<'_>, field: &str, node: &Node) -> Option<bool> {
    match node.resolve() {
        Some(Resolved::Bool(b)) => Some(b),
        Some(Resolved::Str(s)) if matches!(s, "yes" | "no" | "on" | "off" | "y" | "n") => {
            ctx.error(
                node.line,
                field,
                format!("{s:?} is a string in yaml 1.2; write true or false"),
            );
            None
        }
        _ => {
            let hint = if node.as_scalar().is_some_and(|s| s.quoted) {
                "; remove the quotes"
            } else {
                ""
            };
            ctx.error(
                node.line,
                field,
                format!("expected true or false, found {}{hint}", node.kind_name()),
            );
            None
        }
    }
}

/// An integer field: a plain integer.
pub(crate) fn integer(ctx: &mut Ctx<'_>, field: &str, node: &Node) -> Option<i64> {
    match node.resolve() {
        Some(Resolved::Int(i)) => Some(i),
        _ => {
            let hint = if node.as_scalar().is_some_and(|s| s.quoted) {
                "; remove the quotes"
            } else {
                ""
            };
            ctx.error(
                node.line,
                field,
                format!("expected an integer, found {}{hint}", node.kind_name()),
            );
            None
        }
    }
}

/// A list of strings (each a non-null scalar), with each item's line. Null is an empty list.
pub(crate) fn text_list(ctx: &mut Ctx<'_>, field: &str, node: &Node) -> Option<Vec<(u32, String)>> {
    let items = match &node.value {
        NodeValue::Seq(items) => items,
        _ if node.is_null() => return Some(Vec::new()),
        _ => {
            let hint = if node.as_scalar().is_some() {
                "; write it as [item]"
            } else {
                ""
            };
            ctx.error(
                node.line,
                field,
                format!("expected a list, found {}{hint}", node.kind_name()),
            );
            return None;
        }
    };
    let mut out = Vec::with_capacity(items.len());
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match text(ctx, &format!("{field}[{i}]"), item) {
            Some(t) => out.push((item.line, t)),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// A free-form mapping converted to JSON (for `vars`).
pub(crate) fn json_map(
    ctx: &mut Ctx<'_>,
    field: &str,
    node: &Node,
) -> Option<BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    let mut ok = true;
    for entry in entries(ctx, field, node)? {
        match entry.value.to_json() {
            Ok(value) => {
                out.insert(entry.key.to_owned(), value);
            }
            Err(e) => {
                ctx.error(e.line, &join(field, entry.key), e.message);
                ok = false;
            }
        }
    }
    ok.then_some(out)
}

/// Whether `text` would be rendered as a minijinja template (contains `{{`, `{%` or `{#`).
pub(crate) fn is_templated(text: &str) -> bool {
    text.contains("{{") || text.contains("{%") || text.contains("{#")
}

/// `^[a-z_][a-z0-9_-]{0,31}$`: a Linux user or group name that no tool misreads (F7).
pub(crate) fn is_linux_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    match bytes.first() {
        Some(b'a'..=b'z' | b'_') => {}
        _ => return false,
    }
    bytes.len() <= 32
        && bytes[1..]
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// `^[a-z][a-z0-9_-]{0,63}$`: names of tiers, classes and bundles.
pub(crate) fn is_identifier(name: &str) -> bool {
    let bytes = name.as_bytes();
    matches!(bytes.first(), Some(b'a'..=b'z'))
        && bytes.len() <= 64
        && bytes[1..]
            .iter()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-'))
}

/// A hostname glob: lowercase hostname characters plus `*` and `?`.
pub(crate) fn is_host_glob(glob: &str) -> bool {
    !glob.is_empty()
        && glob.len() <= 253
        && glob
            .bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'*' | b'?'))
}

/// Parses a duration such as `90s`, `30m`, `12h` or `7d` into seconds.
pub(crate) fn parse_duration(text: &str) -> Option<i64> {
    let unit = match text.as_bytes().last()? {
        b's' => 1,
        b'm' => 60,
        b'h' => 3600,
        b'd' => 86_400,
        _ => return None,
    };
    let digits = &text[..text.len() - 1];
    if digits.is_empty() || digits.len() > 12 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<i64>().ok()?.checked_mul(unit)
}
