//! Resource-level differences between two catalogs of one node, for `steward-server diff` and
//! anything else that shows what a change will do. Pure.
//!
//! Sensitive content is compared (so a changed secret counts as a change) but never shown:
//! the output says only that it changed.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;
use steward_protocol::{Catalog, FileContent, Resource, ResourceId, ResourceSpec};

/// What happened to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Only in the new catalog.
    Added(ResourceId),
    /// Only in the old catalog.
    Removed(ResourceId),
    /// In both, different: one line per changed field (already redacted).
    Changed(ResourceId, Vec<String>),
}

/// The changes from `old` to `new`, in the new catalog's order (removals last).
pub fn diff(old: &Catalog, new: &Catalog) -> Vec<Change> {
    let old_by_id: BTreeMap<&ResourceId, &Resource> =
        old.resources.iter().map(|r| (&r.id, r)).collect();
    let new_ids: BTreeMap<&ResourceId, ()> = new.resources.iter().map(|r| (&r.id, ())).collect();
    let mut changes = Vec::new();
    for resource in &new.resources {
        match old_by_id.get(&resource.id) {
            None => changes.push(Change::Added(resource.id.clone())),
            Some(before) if *before != resource => {
                changes.push(Change::Changed(
                    resource.id.clone(),
                    fields(before, resource),
                ));
            }
            Some(_) => {}
        }
    }
    for resource in &old.resources {
        if !new_ids.contains_key(&resource.id) {
            changes.push(Change::Removed(resource.id.clone()));
        }
    }
    changes
}

/// Field-by-field description of a changed resource.
fn fields(old: &Resource, new: &Resource) -> Vec<String> {
    let mut lines = Vec::new();
    if old.requires != new.requires {
        lines.push(format!(
            "requires: {} → {}",
            compact(&serde_json::to_value(&old.requires).unwrap_or(Value::Null)),
            compact(&serde_json::to_value(&new.requires).unwrap_or(Value::Null))
        ));
    }
    if let (ResourceSpec::File(a), ResourceSpec::File(b)) = (&old.spec, &new.spec) {
        if a.content != b.content {
            match (&a.content, &b.content) {
                (FileContent::Text(x), FileContent::Text(y)) => lines.push(text_diff(x, y)),
                _ => lines.push("content: sensitive content changed (not shown)".to_string()),
            }
        }
    }
    // Secret content serializes as "<redacted>" and sealed content as ciphertext: both are
    // left out here and handled above.
    let as_object = |r: &Resource| match serde_json::to_value(&r.spec) {
        Ok(Value::Object(mut map)) => {
            map.remove("content");
            map
        }
        _ => serde_json::Map::new(),
    };
    let (a, b) = (as_object(old), as_object(new));
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        let (x, y) = (a.get(key), b.get(key));
        if x != y {
            let show = |v: Option<&Value>| v.map_or_else(|| "(unset)".to_string(), compact);
            lines.push(format!("{key}: {} → {}", show(x), show(y)));
        }
    }
    lines
}

fn compact(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

/// The changed middle of two texts (common leading and trailing lines trimmed), as `-`/`+`
/// lines under a `content:` header.
fn text_diff(old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let prefix = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let mut out = format!("content (from line {}):", prefix + 1);
    for line in &a[prefix..a.len() - suffix] {
        let _ = write!(out, "\n  - {line}");
    }
    for line in &b[prefix..b.len() - suffix] {
        let _ = write!(out, "\n  + {line}");
    }
    if a.len() - suffix == prefix && b.len() - suffix == prefix {
        out.push_str("\n  (line endings or final newline changed)");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_protocol::{
        DocumentType, FileSpec, Mode, NodeId, PackageSpec, Provenance, Replace, Secret, Serial,
        Timestamp,
    };

    fn catalog(resources: Vec<Resource>) -> Catalog {
        Catalog {
            document_type: DocumentType::Catalog,
            format_version: steward_protocol::CATALOG_FORMAT_VERSION,
            node: NodeId("devvm".into()),
            serial: Serial(0),
            compiled_at: Timestamp(0),
            expires_at: Timestamp(1),
            provenance: Provenance::default(),
            resources,
        }
    }

    fn file(path: &str, content: FileContent, mode: u32) -> Resource {
        Resource::new(ResourceSpec::File(FileSpec {
            path: path.into(),
            owner: "root".into(),
            group: "root".into(),
            mode: Mode(mode),
            content,
            replace: Replace::Always,
            backup: false,
        }))
    }

    fn package(name: &str) -> Resource {
        Resource::new(ResourceSpec::Package(PackageSpec { name: name.into() }))
    }

    #[test]
    fn added_removed_and_changed_resources_with_a_text_diff() {
        let old = catalog(vec![
            package("git"),
            package("tmux"),
            file(
                "/etc/map",
                FileContent::Text("a=1\nb=2\nc=3\n".into()),
                0o644,
            ),
        ]);
        let new = catalog(vec![
            package("git"),
            file(
                "/etc/map",
                FileContent::Text("a=1\nb=20\nc=3\n".into()),
                0o600,
            ),
            package("zsh"),
        ]);
        let changes = diff(&old, &new);
        assert_eq!(
            changes,
            vec![
                Change::Changed(
                    ResourceId::new("file", "/etc/map"),
                    vec![
                        "content (from line 2):\n  - b=2\n  + b=20".to_string(),
                        "mode: \"0644\" → \"0600\"".to_string()
                    ]
                ),
                Change::Added(ResourceId::new("package", "zsh")),
                Change::Removed(ResourceId::new("package", "tmux")),
            ]
        );
    }

    #[test]
    fn a_changed_secret_counts_but_is_never_shown() {
        let secret = |s: &str| FileContent::Secret(Secret::new(s.to_string()));
        let old = catalog(vec![file(
            "/home/emo/.claude.json",
            secret("OLD-CANARY"),
            0o600,
        )]);
        let same = catalog(vec![file(
            "/home/emo/.claude.json",
            secret("OLD-CANARY"),
            0o600,
        )]);
        let new = catalog(vec![file(
            "/home/emo/.claude.json",
            secret("NEW-CANARY"),
            0o600,
        )]);
        assert!(diff(&old, &same).is_empty());
        let changes = diff(&old, &new);
        let shown = format!("{changes:?}");
        assert_eq!(
            changes,
            vec![Change::Changed(
                ResourceId::new("file", "/home/emo/.claude.json"),
                vec!["content: sensitive content changed (not shown)".to_string()]
            )]
        );
        assert!(!shown.contains("CANARY"), "{shown}");
    }
}
