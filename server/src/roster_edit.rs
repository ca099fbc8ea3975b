//! Appending a person to `roster.yaml` as text, so the file keeps its comments, ordering and
//! formatting (a YAML round-trip through a parser would drop them).
//!
//! The caller validates the *resulting* site before anything is written; this module only
//! renders one flow-style entry and splices it into the `users:` block.

use std::fmt::Write as _;

/// A new roster entry, as the wizard collected it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NewUser {
    /// The `os_user` key.
    pub os_user: String,
    /// SSO user name.
    pub authentik_user: String,
    /// Key in Vault `k8s_users`.
    pub k8s_user: String,
    /// Tier name.
    pub tier: String,
    /// Kubernetes namespaces.
    pub namespaces: Vec<String>,
    /// `single` (default, omitted) or `workspace`.
    pub code_layout: Option<String>,
    /// Extra repositories (workspace layout).
    pub repos: Vec<String>,
}

/// Why the roster text could not be edited.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// There is no top-level `users:` key.
    #[error("roster has no top-level `users:` mapping; add a line `users:` first")]
    NoUsersKey,
    /// The `users:` value is written in a way we cannot append to as text.
    #[error("`users:` on line {line} is not a block mapping (flow style `{{...}}` with entries); append the entry by hand")]
    UnsupportedUsersStyle {
        /// 1-based line of `users:`.
        line: usize,
    },
    /// The user already has an entry.
    #[error("user {0:?} is already in the roster (line {1})")]
    Duplicate(String, usize),
}

/// Renders `name: { k: v, ... }` for one user (no indentation, no newline).
pub fn render_entry(user: &NewUser) -> String {
    let mut fields: Vec<(&str, String)> = vec![
        ("authentik_user", scalar(&user.authentik_user)),
        ("k8s_user", scalar(&user.k8s_user)),
        ("tier", scalar(&user.tier)),
    ];
    if !user.namespaces.is_empty() {
        fields.push(("namespaces", list(&user.namespaces)));
    }
    if let Some(layout) = &user.code_layout {
        fields.push(("code_layout", scalar(layout)));
    }
    if !user.repos.is_empty() {
        fields.push(("repos", list(&user.repos)));
    }
    let mut out = format!("{}: {{ ", scalar(&user.os_user));
    for (i, (key, value)) in fields.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        let _ = write!(out, "{key}: {value}");
    }
    out.push_str(" }");
    out
}

fn list(items: &[String]) -> String {
    let inner: Vec<String> = items.iter().map(|s| scalar(s)).collect();
    format!("[{}]", inner.join(", "))
}

/// A YAML scalar: plain when unambiguous, otherwise double-quoted with escapes.
fn scalar(value: &str) -> String {
    let plain_chars = value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@' | b'/'));
    let ambiguous = value.is_empty()
        || value.starts_with(['-', '.', '@'])
        || value.parse::<f64>().is_ok()
        || matches!(
            value.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "~" | "y" | "n"
        );
    if plain_chars && !ambiguous {
        return value.to_string();
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Returns `roster` with `user` appended as the last entry of the top-level `users:` block.
/// Comments, blank lines and everything else stay byte-for-byte as they were.
pub fn append_user(roster: &str, user: &NewUser) -> Result<String, EditError> {
    let lines: Vec<&str> = roster.split_inclusive('\n').collect();
    let is_top_level_key = |line: &str| {
        let first = line.chars().next();
        matches!(first, Some(c) if !c.is_whitespace() && c != '#')
    };
    let users_at = lines
        .iter()
        .position(|l| {
            let t = l.trim_end();
            t == "users:" || t.starts_with("users:") && is_top_level_key(l)
        })
        .ok_or(EditError::NoUsersKey)?;
    let after_key = lines[users_at].trim_end()["users:".len()..].trim();
    let after_key = after_key.split(" #").next().unwrap_or("").trim();
    let empty_flow = after_key == "{}";
    if !after_key.is_empty() && !after_key.starts_with('#') && !empty_flow {
        return Err(EditError::UnsupportedUsersStyle { line: users_at + 1 });
    }
    // The block runs until the next top-level key (or the end of the file).
    let block_end = lines[users_at + 1..]
        .iter()
        .position(|l| is_top_level_key(l))
        .map_or(lines.len(), |p| users_at + 1 + p);
    let mut indent = None;
    let mut last_content = users_at;
    for (i, line) in lines.iter().enumerate().take(block_end).skip(users_at + 1) {
        let trimmed = line.trim_start();
        if trimmed.trim().is_empty() {
            continue;
        }
        if trimmed.starts_with('#') {
            // An indented comment belongs to the block (e.g. a commented-out user); one in
            // column 0 introduces whatever follows.
            if line.len() != trimmed.len() {
                last_content = i;
            }
            continue;
        }
        last_content = i;
        let width = line.len() - trimmed.len();
        if indent.is_none() {
            indent = Some(&line[..width]);
        }
        if width == indent.map_or(0, str::len) {
            let key = trimmed
                .split(':')
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches('"');
            if key == user.os_user {
                return Err(EditError::Duplicate(user.os_user.clone(), i + 1));
            }
        }
    }
    let indent = indent.unwrap_or("  ");
    let entry = format!("{indent}{}\n", render_entry(user));
    let mut out = String::with_capacity(roster.len() + entry.len() + 8);
    for (i, line) in lines.iter().enumerate() {
        if i == users_at && empty_flow {
            out.push_str("users:\n");
        } else {
            out.push_str(line);
        }
        if i == last_content {
            if !line.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(&entry);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn anca() -> NewUser {
        NewUser {
            os_user: "ancamilea".into(),
            authentik_user: "ancaelena98".into(),
            k8s_user: "anca".into(),
            tier: "namespace-owner".into(),
            namespaces: vec!["plotting-book".into()],
            code_layout: Some("workspace".into()),
            repos: vec!["tripit".into()],
        }
    }

    #[test]
    fn renders_the_seeds_flow_style() {
        assert_eq!(
            render_entry(&anca()),
            "ancamilea: { authentik_user: ancaelena98, k8s_user: anca, tier: namespace-owner, \
             namespaces: [plotting-book], code_layout: workspace, repos: [tripit] }"
        );
    }

    #[test]
    fn quotes_ambiguous_and_special_values() {
        let mut user = anca();
        user.authentik_user = "yes".into();
        user.k8s_user = "a b: {{ x }}".into();
        user.namespaces = vec!["123".into()];
        let entry = render_entry(&user);
        assert!(entry.contains(r#"authentik_user: "yes""#), "{entry}");
        assert!(entry.contains(r#"k8s_user: "a b: {{ x }}""#), "{entry}");
        assert!(entry.contains(r#"namespaces: ["123"]"#), "{entry}");
    }

    #[test]
    fn appends_after_the_last_entry_keeping_comments_and_following_keys() {
        let roster = "# people\nusers:\n  emo: { authentik_user: emil.barzin, k8s_user: emo, tier: power-user }  # net-new\n  # gheorghe: { commented }\n\n# trailing comment\nextra: 1\n";
        let out = append_user(roster, &anca()).unwrap();
        assert_eq!(
            out,
            "# people\nusers:\n  emo: { authentik_user: emil.barzin, k8s_user: emo, tier: power-user }  # net-new\n  # gheorghe: { commented }\n  ancamilea: { authentik_user: ancaelena98, k8s_user: anca, tier: namespace-owner, namespaces: [plotting-book], code_layout: workspace, repos: [tripit] }\n\n# trailing comment\nextra: 1\n"
        );
    }

    #[test]
    fn keeps_the_files_indentation_and_handles_a_missing_final_newline() {
        let roster = "users:\n    emo: { authentik_user: e, k8s_user: emo, tier: power-user }";
        let out = append_user(roster, &anca()).unwrap();
        assert!(out.starts_with("users:\n    emo: { authentik_user: e, k8s_user: emo, tier: power-user }\n    ancamilea: {"), "{out}");
        assert!(out.ends_with("}\n"));
    }

    #[test]
    fn empty_users_mapping_becomes_a_block() {
        assert_eq!(
            append_user("users: {}\n", &anca()).unwrap(),
            format!("users:\n  {}\n", render_entry(&anca()))
        );
        assert_eq!(
            append_user("users:\n", &anca()).unwrap(),
            format!("users:\n  {}\n", render_entry(&anca()))
        );
    }

    #[test]
    fn refuses_duplicates_and_unsupported_shapes() {
        let roster = "users:\n  ancamilea: { authentik_user: x, k8s_user: y, tier: z }\n";
        assert_eq!(
            append_user(roster, &anca()),
            Err(EditError::Duplicate("ancamilea".into(), 2))
        );
        assert_eq!(
            append_user("people: {}\n", &anca()),
            Err(EditError::NoUsersKey)
        );
        assert_eq!(
            append_user("users: { a: {} }\n", &anca()),
            Err(EditError::UnsupportedUsersStyle { line: 1 })
        );
    }
}
