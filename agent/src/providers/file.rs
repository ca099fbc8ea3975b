//! The `file` provider: a regular file's content, mode and owner, written only through
//! [`Host`](crate::host::Host) (fd-relative, no symlink followed, atomic replace).
//!
//! Observe ([`Host::observe_file`](crate::host::Host::observe_file)), then the pure [`scope`]
//! and [`diff`], then apply; under noop nothing is written (nor backed up).
//!
//! - **What may be at the path**: nothing, or a regular file with a single link. A symlink,
//!   FIFO, socket, device, directory or hardlinked file fails the resource with a message and
//!   is never modified (THREATS F1, F2, F4); it is never opened for I/O, so a FIFO cannot block
//!   the run.
//! - **`replace: always`**: content, mode and owner converge.
//! - **`replace: if_absent`**: the file is written only when missing. An existing file is
//!   left entirely as found (content, mode and owner: a person's `~/.claude.json` stays
//!   `0644` if that is how they keep it): `unchanged` when its mode and owner already match
//!   the catalog, else `kept`, with what differs ("exists with mode 0644 (catalog: 0600);
//!   left as found (replace: if_absent)"). Steward adopts what was there; it never clobbers it.
//! - **`replace: if_marked`**: an existing file is replaced only when it contains the marker
//!   (e.g. a "managed by steward" header). One without it has been taken over by its user and
//!   is left entirely alone (content, mode and owner), reported `kept` with the reason: it is
//!   not a failure, and `skipped` is reserved for resources held back by the run. A file too
//!   large to observe ([`MAX_OBSERVED_BYTES`]) counts as unmarked.
//! - **`replace: if_stale`** (one file, several variants Steward may write, say a kubeconfig
//!   per tier): an existing file with Steward's `marker` but without this variant's
//!   `current` text was written for another variant and is replaced (backed up if asked);
//!   one with `current` is this variant, perhaps edited by its person, and is left as found
//!   silently (`unchanged`); one without the marker is not Steward's and is `kept`.
//! - **Replacing**: an existing file is replaced only if it is still the object that was
//!   observed (same inode, size, mtime, ctime) right before the rename
//!   ([`Host::write_file_atomic_expecting`](crate::host::Host::write_file_atomic_expecting)),
//!   so a user's edit made meanwhile (removing the marker, say) fails the resource instead of
//!   being lost silently; the next run decides again.
//! - **`backup`**: before content is replaced, the old content is kept in the agent's bucket
//!   [`BUCKET`] under its SHA-256 (as Puppet's clientbucket:
//!   [`Host::backup_content`](crate::host::Host::backup_content), `0600 root` in a `0700 root`
//!   directory). A failed backup fails the resource and nothing is replaced. Old content of
//!   sensitive files is kept too, but its digest is never reported.
//! - **Sensitive content** (sealed) is opened only when the content is converged (never for
//!   a file a policy leaves as found), compared with the observed content in
//!   memory and dropped (zeroed) when the resource is done, as is the observed old content. A
//!   change is reported as "content changed (sensitive)": never bytes, never a digest.
//! - **Diffs**: a unified diff for text content only, and only when the old content may be
//!   shown: the file is created, or its old version was world-readable. A `0600` file (a
//!   user's config holding a token) never has its old content copied into the server's
//!   reports (THREATS K1); non-UTF-8 or very large content is not diffed either.
//! - `corrective` is set when the file existed and differed (content, mode or owner).

use std::fmt::Write as _;

use anyhow::Context as _;
use steward_protocol::{FileContent, FileSpec, Mode, Replace, Secret};
use zeroize::Zeroize;

use crate::engine::{Context, Outcome};
use crate::host::{FileState, Inode, Overwrite, RegularFile, MAX_OBSERVED_BYTES};

/// The agent's content-addressed store of replaced file content (beneath the root).
pub const BUCKET: &str = "/var/lib/steward/bucket";

/// Content larger than this (either side) is not diffed.
const MAX_DIFF_INPUT: usize = 256 * 1024;

/// A diff longer than this is cut.
const MAX_DIFF_OUTPUT: usize = 64 * 1024;

/// What the replacement policy lets this run converge for what is at the path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Content, mode and owner.
    All,
    /// Nothing is written: `unchanged` when mode and owner match the catalog, else `kept`
    /// with what differs (`if_absent` on an existing file).
    AsFound,
    /// Nothing is written, and nothing is reported: this variant's own file, perhaps edited
    /// by its person (`if_stale` with the `current` text).
    Current,
    /// Nothing is written: `kept`, for this reason (a file without the marker).
    Kept(String),
}

/// The policy decision for an existing regular file (`None`: nothing there yet). Pure.
pub fn scope(replace: &Replace, existing: Option<&RegularFile>) -> Scope {
    let Some(existing) = existing else {
        return Scope::All;
    };
    let has = |text: &str| {
        existing
            .content
            .as_deref()
            .is_some_and(|content| contains(content, text.as_bytes()))
    };
    let unmarked = |policy: &str, marker: &str| {
        let why = if existing.content.is_none() {
            format!("is too large to look for the marker {marker:?}")
        } else {
            format!("does not carry the marker {marker:?}")
        };
        Scope::Kept(format!(
            "exists and {why}; left as found (replace: {policy})"
        ))
    };
    match replace {
        Replace::Always => Scope::All,
        Replace::IfAbsent => Scope::AsFound,
        Replace::IfMarked { marker } => {
            if has(marker) {
                Scope::All
            } else {
                unmarked("if_marked", marker)
            }
        }
        Replace::IfStale { marker, current } => {
            if has(current) {
                Scope::Current
            } else if has(marker) {
                Scope::All
            } else {
                unmarked("if_stale", marker)
            }
        }
    }
}

/// Why an existing file left as found (`if_absent`) is reported `kept`: its attribute
/// `changes` against the catalog. Pure.
pub fn kept_as_found(changes: &[Change], names: Names<'_>) -> String {
    let parts: Vec<String> = changes
        .iter()
        .filter_map(|change| match change {
            Change::Mode { from, to } => Some(format!("mode {from} (catalog: {to})")),
            Change::Owner { from, to } => {
                Some(format!("owner {from} (catalog: {} {to})", names.owner))
            }
            Change::Group { from, to } => {
                Some(format!("group {from} (catalog: {} {to})", names.group))
            }
            Change::Create { .. } | Change::Content { .. } => None,
        })
        .collect();
    format!(
        "exists with {}; left as found (replace: if_absent)",
        parts.join(", ")
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || haystack.windows(needle.len()).any(|w| w == needle)
}

/// The wanted state, resolved for this run.
#[derive(Debug, Clone, Copy)]
pub struct Want<'a> {
    /// The content, or `None` when the policy leaves the content alone.
    pub content: Option<&'a [u8]>,
    /// The content is sensitive: never shown, never digested in a report.
    pub sensitive: bool,
    /// Permission bits.
    pub mode: Mode,
    /// Owner uid.
    pub uid: u32,
    /// Group gid.
    pub gid: u32,
}

/// One difference between the wanted and the observed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing is there: the file is created (with the wanted content, mode and owner).
    Create {
        /// Unified diff from nothing, for text content.
        diff: Option<String>,
        /// The mode it gets.
        mode: Mode,
    },
    /// The content differs and is replaced.
    Content {
        /// Unified diff, when the content may be shown (see the module doc).
        diff: Option<String>,
        /// Why there is no diff, when there is none.
        hidden: Option<&'static str>,
    },
    /// The permission bits differ.
    Mode {
        /// Observed.
        from: Mode,
        /// Wanted.
        to: Mode,
    },
    /// The owner differs.
    Owner {
        /// Observed uid.
        from: u32,
        /// Wanted uid.
        to: u32,
    },
    /// The group differs.
    Group {
        /// Observed gid.
        from: u32,
        /// Wanted gid.
        to: u32,
    },
}

/// The changes that make `existing` (`None`: nothing at the path) the wanted file. Pure.
/// Content is compared only when `want.content` is set; a file too large to observe differs.
pub fn diff(path: &str, want: &Want<'_>, existing: Option<&RegularFile>) -> Vec<Change> {
    let Some(existing) = existing else {
        let diff = match want.content {
            Some(new) if !want.sensitive => text_diff(path, b"", new, true),
            _ => None,
        };
        return vec![Change::Create {
            diff,
            mode: want.mode,
        }];
    };
    let mut changes = Vec::new();
    if let Some(new) = want.content {
        let old = existing.content.as_deref();
        if old != Some(new) {
            let (diff, hidden) = if want.sensitive {
                (None, Some("sensitive"))
            } else if existing.inode.mode.0 & 0o004 == 0 {
                (None, Some("the previous content is not world-readable"))
            } else {
                match old {
                    None => (None, Some("the previous content is too large to compare")),
                    Some(old) => match text_diff(path, old, new, false) {
                        Some(d) => (Some(d), None),
                        None => (None, Some("binary or large content")),
                    },
                }
            };
            changes.push(Change::Content { diff, hidden });
        }
    }
    changes.extend(attribute_changes(
        &existing.inode,
        want.mode,
        want.uid,
        want.gid,
    ));
    changes
}

/// Mode, owner and group differences of an existing object. Pure.
pub fn attribute_changes(have: &Inode, mode: Mode, uid: u32, gid: u32) -> Vec<Change> {
    let mut changes = Vec::new();
    if have.mode != mode {
        changes.push(Change::Mode {
            from: have.mode,
            to: mode,
        });
    }
    if have.uid != uid {
        changes.push(Change::Owner {
            from: have.uid,
            to: uid,
        });
    }
    if have.gid != gid {
        changes.push(Change::Group {
            from: have.gid,
            to: gid,
        });
    }
    changes
}

/// A unified diff of two UTF-8 texts (`None` for binary or large ones), cut at
/// [`MAX_DIFF_OUTPUT`].
fn text_diff(path: &str, old: &[u8], new: &[u8], created: bool) -> Option<String> {
    if old.len() > MAX_DIFF_INPUT || new.len() > MAX_DIFF_INPUT {
        return None;
    }
    let old = std::str::from_utf8(old).ok()?;
    let new = std::str::from_utf8(new).ok()?;
    let diff = similar::TextDiff::from_lines(old, new);
    let old_name = if created { "/dev/null" } else { path };
    let mut text = diff
        .unified_diff()
        .context_radius(3)
        .header(old_name, path)
        .to_string();
    if text.len() > MAX_DIFF_OUTPUT {
        let mut cut = MAX_DIFF_OUTPUT;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("\n... diff truncated\n");
    }
    Some(text)
}

/// Names for the wanted owner and group in messages.
#[derive(Debug, Clone, Copy)]
pub struct Names<'a> {
    /// Wanted owner name.
    pub owner: &'a str,
    /// Wanted group name.
    pub group: &'a str,
}

/// The report's message and diff for `changes`: the message lists every change in a few
/// words; the diff is the content's unified diff when there is one, else the list of
/// attribute changes. Never content of a sensitive file. Pure.
pub fn describe(changes: &[Change], names: Names<'_>, noop: bool) -> (String, Option<String>) {
    let mut parts = Vec::new();
    let mut content_diff = None;
    let mut fields = String::new();
    for change in changes {
        match change {
            Change::Create { diff, mode } => {
                let verb = if noop { "would create" } else { "created" };
                parts.push(format!(
                    "{verb} (mode {mode}, owner {}:{})",
                    names.owner, names.group
                ));
                content_diff = diff.clone();
            }
            Change::Content { diff, hidden } => {
                let verb = if noop {
                    "content would change"
                } else {
                    "content changed"
                };
                parts.push(match hidden {
                    Some(why) => format!("{verb} ({why})"),
                    None => verb.to_string(),
                });
                content_diff = diff.clone();
            }
            Change::Mode { from, to } => {
                parts.push(format!("mode {from} -> {to}"));
                let _ = writeln!(fields, "mode: {from} -> {to}");
            }
            Change::Owner { from, to } => {
                parts.push(format!("owner {from} -> {} ({to})", names.owner));
                let _ = writeln!(fields, "owner: {from} -> {} ({to})", names.owner);
            }
            Change::Group { from, to } => {
                parts.push(format!("group {from} -> {} ({to})", names.group));
                let _ = writeln!(fields, "group: {from} -> {} ({to})", names.group);
            }
        }
    }
    let diff = content_diff.or((!fields.is_empty()).then_some(fields));
    (parts.join(", "), diff)
}

/// The observed state, with its content zeroed on drop when the resource is sensitive.
struct Observed {
    state: FileState,
    sensitive: bool,
}

impl Drop for Observed {
    fn drop(&mut self) {
        if let (true, FileState::Regular(file)) = (self.sensitive, &mut self.state) {
            if let Some(content) = &mut file.content {
                content.zeroize();
            }
        }
    }
}

/// Converges one `file` resource.
pub fn apply(spec: &FileSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    let path = spec.path.as_str();
    let (uid, gid) = cx.ids_for_path(path, &spec.owner, &spec.group)?;
    let sensitive = spec.content.is_sensitive();
    let observed = Observed {
        // A missing parent directory observes as absent (the host's rule): noop reports what
        // would be created, and a real run fails at the write, naming the missing parent.
        state: cx.host.observe_file(path)?,
        sensitive,
    };
    let existing = match &observed.state {
        FileState::Absent => None,
        FileState::Regular(file) if file.is_hardlinked() => anyhow::bail!(
            "refusing to manage {path}: it has {} hard links (it may be another file's \
             name); remove the extra links",
            file.inode.nlink
        ),
        FileState::Regular(file) => Some(file),
        FileState::Other { kind, .. } => anyhow::bail!(
            "refusing to manage {path}: it is a {kind}, not a regular file; remove it to let \
             the agent create the file"
        ),
    };
    let names = Names {
        owner: &spec.owner,
        group: &spec.group,
    };
    match (scope(&spec.replace, existing), existing) {
        (Scope::All, _) => {}
        (Scope::Current, _) => return Ok(Outcome::Unchanged),
        (Scope::Kept(reason), _) => return Ok(Outcome::Kept(reason)),
        (Scope::AsFound, None) => unreachable!("an absent file is always in scope"),
        (Scope::AsFound, Some(file)) => {
            let changes = attribute_changes(&file.inode, spec.mode, uid, gid);
            return Ok(if changes.is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::Kept(kept_as_found(&changes, names))
            });
        }
    }
    // Opened only when the content is converged; zeroed when `opened` drops.
    let opened: Secret;
    let content = match &spec.content {
        FileContent::Text(text) => text.as_bytes(),
        FileContent::Sealed(sealed) => {
            opened = cx
                .open_sealed(sealed)
                .with_context(|| format!("content of {path}"))?;
            opened.expose().as_bytes()
        }
        FileContent::Secret(secret) => secret.expose().as_bytes(),
    };
    let want = Want {
        content: Some(content),
        sensitive,
        mode: spec.mode,
        uid,
        gid,
    };
    let changes = diff(path, &want, existing);
    if changes.is_empty() {
        return Ok(Outcome::Unchanged);
    }
    let (mut message, diff) = describe(&changes, names, cx.noop);
    let outcome = |message| Outcome::Changed {
        message,
        diff,
        corrective: existing.is_some(),
    };
    if cx.noop {
        return Ok(outcome(message));
    }
    let replaces_content = changes.iter().any(|c| matches!(c, Change::Content { .. }));
    match existing {
        None => {
            cx.host
                .write_file_atomic_with(path, content, spec.mode, uid, gid, Overwrite::Never)
                .with_context(|| format!("creating {path}"))?;
        }
        Some(file) if replaces_content => {
            if spec.backup {
                let old = file.content.as_deref().with_context(|| {
                    format!(
                        "cannot back up {path}: it is larger than {MAX_OBSERVED_BYTES} bytes; \
                         nothing was replaced"
                    )
                })?;
                let digest = cx
                    .host
                    .backup_content(BUCKET, old)
                    .with_context(|| format!("backing up {path}; nothing was replaced"))?;
                if sensitive {
                    message.push_str(", previous content kept in the bucket");
                } else {
                    let _ = write!(message, ", previous content kept as {BUCKET}/{digest}");
                }
            }
            cx.host.write_file_atomic_expecting(
                path,
                content,
                spec.mode,
                uid,
                gid,
                Overwrite::RegularOnly,
                Some(file.inode.identity()),
            )?;
        }
        Some(_) => cx.host.set_mode_owner(path, spec.mode, uid, gid)?,
    }
    Ok(outcome(message))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inode(mode: u32, uid: u32, gid: u32) -> Inode {
        Inode {
            mode: Mode(mode),
            uid,
            gid,
            nlink: 1,
            dev: 1,
            ino: 2,
            size: 0,
            mtime_sec: 0,
            mtime_nsec: 0,
            ctime_sec: 0,
            ctime_nsec: 0,
        }
    }

    fn file(content: Option<&[u8]>, mode: u32, uid: u32, gid: u32) -> RegularFile {
        RegularFile {
            content: content.map(<[u8]>::to_vec),
            inode: inode(mode, uid, gid),
        }
    }

    fn want(content: Option<&[u8]>) -> Want<'_> {
        Want {
            content,
            sensitive: false,
            mode: Mode(0o644),
            uid: 1000,
            gid: 1000,
        }
    }

    const NAMES: Names<'static> = Names {
        owner: "alice",
        group: "staff",
    };

    #[test]
    fn policies_decide_what_is_converged() {
        let marked = file(Some(b"# managed by steward\nx=1\n"), 0o644, 0, 0);
        let unmarked = file(Some(b"x=2\n"), 0o644, 0, 0);
        let huge = file(None, 0o644, 0, 0);
        let if_marked = Replace::IfMarked {
            marker: "managed by steward".into(),
        };
        for replace in [Replace::Always, Replace::IfAbsent, if_marked.clone()] {
            assert_eq!(scope(&replace, None), Scope::All, "{replace:?}");
        }
        assert_eq!(scope(&Replace::Always, Some(&unmarked)), Scope::All);
        assert_eq!(scope(&Replace::IfAbsent, Some(&marked)), Scope::AsFound);
        assert_eq!(scope(&if_marked, Some(&marked)), Scope::All);
        assert_eq!(
            scope(&if_marked, Some(&unmarked)),
            Scope::Kept(
                "exists and does not carry the marker \"managed by steward\"; left as found \
                 (replace: if_marked)"
                    .into()
            )
        );
        assert_eq!(
            scope(&if_marked, Some(&huge)),
            Scope::Kept(
                "exists and is too large to look for the marker \"managed by steward\"; left \
                 as found (replace: if_marked)"
                    .into()
            )
        );
        let empty = Replace::IfMarked {
            marker: String::new(),
        };
        assert_eq!(scope(&empty, Some(&unmarked)), Scope::All);
    }

    #[test]
    fn if_stale_replaces_only_another_variant_of_steward_s_file() {
        let if_stale = Replace::IfStale {
            marker: "# steward kubeconfig".into(),
            current: "# tier: admin".into(),
        };
        let other_tier = file(Some(b"# steward kubeconfig\n# tier: owner\n"), 0o600, 0, 0);
        let this_tier = file(
            Some(b"# steward kubeconfig\n# tier: admin\nedit\n"),
            0o644,
            0,
            0,
        );
        let theirs = file(Some(b"apiVersion: v1\n"), 0o644, 0, 0);
        assert_eq!(scope(&if_stale, None), Scope::All);
        assert_eq!(scope(&if_stale, Some(&other_tier)), Scope::All);
        assert_eq!(scope(&if_stale, Some(&this_tier)), Scope::Current);
        assert_eq!(
            scope(&if_stale, Some(&theirs)),
            Scope::Kept(
                "exists and does not carry the marker \"# steward kubeconfig\"; left as found \
                 (replace: if_stale)"
                    .into()
            )
        );
    }

    #[test]
    fn a_file_left_as_found_says_what_differs_from_the_catalog() {
        let have = inode(0o644, 0, 1000);
        let changes = attribute_changes(&have, Mode(0o600), 1000, 1000);
        assert_eq!(
            kept_as_found(&changes, NAMES),
            "exists with mode 0644 (catalog: 0600), owner 0 (catalog: alice 1000); left as \
             found (replace: if_absent)"
        );
        let changes = attribute_changes(&have, Mode(0o600), 0, 1000);
        assert_eq!(
            kept_as_found(&changes, NAMES),
            "exists with mode 0644 (catalog: 0600); left as found (replace: if_absent)"
        );
    }

    #[test]
    fn identical_file_has_no_changes() {
        let have = file(Some(b"same\n"), 0o644, 1000, 1000);
        assert_eq!(diff("/etc/x", &want(Some(b"same\n")), Some(&have)), vec![]);
        // Content not managed (if_absent): only attributes count.
        let other = file(Some(b"theirs\n"), 0o644, 1000, 1000);
        assert_eq!(diff("/etc/x", &want(None), Some(&other)), vec![]);
    }

    #[test]
    fn text_content_change_has_a_unified_diff() {
        let have = file(Some(b"a\nb\nc\n"), 0o644, 1000, 1000);
        let changes = diff("/etc/x", &want(Some(b"a\nB\nc\n")), Some(&have));
        let [Change::Content {
            diff: Some(d),
            hidden: None,
        }] = changes.as_slice()
        else {
            panic!("{changes:?}");
        };
        assert_eq!(
            d,
            "--- /etc/x\n+++ /etc/x\n@@ -1,3 +1,3 @@\n a\n-b\n+B\n c\n"
        );
        let (message, report_diff) = describe(&changes, NAMES, false);
        assert_eq!(message, "content changed");
        assert_eq!(report_diff.as_deref(), Some(d.as_str()));
        assert_eq!(describe(&changes, NAMES, true).0, "content would change");
    }

    #[test]
    fn creation_diffs_from_nothing_and_reports_no_attribute_changes() {
        let changes = diff("/etc/motd", &want(Some(b"hello\n")), None);
        assert_eq!(
            changes,
            vec![Change::Create {
                diff: Some("--- /dev/null\n+++ /etc/motd\n@@ -0,0 +1 @@\n+hello\n".into()),
                mode: Mode(0o644),
            }]
        );
        assert_eq!(
            describe(&changes, NAMES, false).0,
            "created (mode 0644, owner alice:staff)"
        );
        assert_eq!(
            describe(&changes, NAMES, true).0,
            "would create (mode 0644, owner alice:staff)"
        );
    }

    #[test]
    fn attribute_drift_is_listed_as_fields() {
        let have = file(Some(b"same\n"), 0o666, 0, 1000);
        let changes = diff("/etc/x", &want(Some(b"same\n")), Some(&have));
        assert_eq!(
            changes,
            vec![
                Change::Mode {
                    from: Mode(0o666),
                    to: Mode(0o644)
                },
                Change::Owner { from: 0, to: 1000 },
            ]
        );
        let (message, fields) = describe(&changes, NAMES, false);
        assert_eq!(message, "mode 0666 -> 0644, owner 0 -> alice (1000)");
        assert_eq!(
            fields.as_deref(),
            Some("mode: 0666 -> 0644\nowner: 0 -> alice (1000)\n")
        );
        let group = diff(
            "/etc/x",
            &want(Some(b"same\n")),
            Some(&file(Some(b"same\n"), 0o644, 1000, 0)),
        );
        assert_eq!(group, vec![Change::Group { from: 0, to: 1000 }]);
        assert_eq!(describe(&group, NAMES, false).0, "group 0 -> staff (1000)");
    }

    #[test]
    fn sensitive_content_is_never_shown() {
        let secret = b"token=CANARY-1234\n";
        let have = file(Some(b"token=OLD-CANARY\n"), 0o644, 1000, 1000);
        let sensitive = Want {
            sensitive: true,
            ..want(Some(secret))
        };
        for changes in [
            diff("/home/a/.token", &sensitive, Some(&have)),
            diff("/home/a/.token", &sensitive, None),
        ] {
            let (message, d) = describe(&changes, NAMES, false);
            let all = format!("{changes:?} {message} {d:?}");
            assert!(!all.contains("CANARY"), "{all}");
        }
        let changes = diff("/home/a/.token", &sensitive, Some(&have));
        assert_eq!(
            describe(&changes, NAMES, false),
            ("content changed (sensitive)".to_string(), None)
        );
    }

    #[test]
    fn old_content_of_a_private_file_is_not_diffed() {
        let have = file(Some(b"oauth=USER-TOKEN\n"), 0o600, 1000, 1000);
        let changes = diff(
            "/home/a/.cfg",
            &Want {
                mode: Mode(0o600),
                ..want(Some(b"x\n"))
            },
            Some(&have),
        );
        let (message, d) = describe(&changes, NAMES, false);
        assert_eq!(
            message,
            "content changed (the previous content is not world-readable)"
        );
        assert_eq!(d, None);
    }

    #[test]
    fn binary_and_oversized_content_is_not_diffed() {
        let binary = file(Some(&[0xff, 0xfe, 0]), 0o644, 1000, 1000);
        let changes = diff("/x", &want(Some(b"text\n")), Some(&binary));
        assert_eq!(
            changes,
            vec![Change::Content {
                diff: None,
                hidden: Some("binary or large content")
            }]
        );
        let huge = file(None, 0o644, 1000, 1000);
        let changes = diff("/x", &want(Some(b"text\n")), Some(&huge));
        assert!(
            matches!(&changes[..], [Change::Content { diff: None, hidden: Some(h) }] if h.contains("too large")),
            "{changes:?}"
        );
        let long: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        let d = text_diff("/x", b"", long.as_bytes(), true).unwrap();
        assert!(d.len() <= MAX_DIFF_OUTPUT + 30, "{}", d.len());
        assert!(d.ends_with("... diff truncated\n"));
    }
}
