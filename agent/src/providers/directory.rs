//! The `directory` provider: a real directory with a mode and an owner, through
//! [`Host`](crate::host::Host).
//!
//! - A missing directory is created (`mkdirat` with an explicit mode, mode and owner set
//!   through its descriptor, parent fsynced). Its parent must exist: the engine orders a
//!   parent's directory resource first, and a missing one fails this resource with a message
//!   rather than being created with guessed owner and mode.
//! - `replace: always` (the default): an existing directory's mode and owner are corrected
//!   through a descriptor of it (`corrective`).
//! - `replace: if_absent`: an existing directory is adopted, left entirely as found (a
//!   person's own `~/.claude` stays `0755`): `unchanged` when its mode and owner match the
//!   catalog, else `kept` with what differs. Entries other resources put inside it are theirs
//!   to decide.
//! - A symlink (even to a directory: THREATS F6), regular file or anything else at the path
//!   is never modified: it fails the resource under `replace: always`, and is `kept` (left
//!   as found, with what it is) under `replace: if_absent`.
//! - Under noop nothing is created or changed.

use anyhow::Context as _;
use steward_protocol::{DirectoryReplace, DirectorySpec};

use crate::engine::{Context, Outcome};
use crate::host::DirState;
use crate::providers::file::{attribute_changes, describe, Change, Names};

/// What converging a directory takes. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Already as wanted.
    Unchanged,
    /// Nothing there: create it.
    Create,
    /// A directory whose mode or owner differ.
    Correct(Vec<Change>),
    /// A directory whose mode or owner differ, left as found (`if_absent`), and why.
    Kept(String),
}

/// The plan for `have`, or why the path cannot be managed. Pure.
pub fn plan(spec: &DirectorySpec, uid: u32, gid: u32, have: &DirState) -> Result<Plan, String> {
    match have {
        DirState::Absent => Ok(Plan::Create),
        DirState::Directory(inode) => {
            let changes = attribute_changes(inode, spec.mode, uid, gid);
            Ok(if changes.is_empty() {
                Plan::Unchanged
            } else if spec.replace == DirectoryReplace::IfAbsent {
                Plan::Kept(crate::providers::file::kept_as_found(
                    &changes,
                    crate::providers::file::Names {
                        owner: &spec.owner,
                        group: &spec.group,
                    },
                ))
            } else {
                Plan::Correct(changes)
            })
        }
        DirState::Other(kind) if spec.replace == DirectoryReplace::IfAbsent => Ok(Plan::Kept(
            format!("exists as a {kind}, not a directory; left as found (replace: if_absent)"),
        )),
        DirState::Other(kind) => Err(format!(
            "refusing to manage {}: it is a {kind}, not a directory",
            spec.path
        )),
    }
}

/// Converges one `directory` resource.
pub fn apply(spec: &DirectorySpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    let (uid, gid) = cx.ids_for_path(&spec.path, &spec.owner, &spec.group)?;
    let have = cx.host.observe_dir(&spec.path)?;
    match plan(spec, uid, gid, &have).map_err(anyhow::Error::msg)? {
        Plan::Unchanged => Ok(Outcome::Unchanged),
        Plan::Kept(reason) => Ok(Outcome::Kept(reason)),
        Plan::Create => {
            if !cx.noop {
                cx.host
                    .ensure_dir(&spec.path, spec.mode, uid, gid)
                    .with_context(|| format!("creating directory {}", spec.path))?;
            }
            let verb = if cx.noop { "would create" } else { "created" };
            Ok(Outcome::changed(format!(
                "{verb} (mode {}, owner {}:{})",
                spec.mode, spec.owner, spec.group
            )))
        }
        Plan::Correct(changes) => {
            let names = Names {
                owner: &spec.owner,
                group: &spec.group,
            };
            let (message, diff) = describe(&changes, names, cx.noop);
            if !cx.noop {
                cx.host.set_mode_owner(&spec.path, spec.mode, uid, gid)?;
            }
            Ok(Outcome::Changed {
                message,
                diff,
                corrective: true,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use steward_protocol::Mode;

    use super::*;
    use crate::host::{FileKind, Inode};

    fn spec() -> DirectorySpec {
        DirectorySpec {
            path: "/home/alice/code".into(),
            owner: "alice".into(),
            group: "alice".into(),
            mode: Mode(0o750),
            replace: Default::default(),
        }
    }

    fn dir(mode: u32, uid: u32, gid: u32) -> DirState {
        DirState::Directory(Inode {
            mode: Mode(mode),
            uid,
            gid,
            nlink: 2,
            dev: 1,
            ino: 2,
            size: 4096,
            mtime_sec: 0,
            mtime_nsec: 0,
            ctime_sec: 0,
            ctime_nsec: 0,
        })
    }

    #[test]
    fn plans() {
        let s = spec();
        assert_eq!(plan(&s, 1000, 1000, &DirState::Absent), Ok(Plan::Create));
        assert_eq!(
            plan(&s, 1000, 1000, &dir(0o750, 1000, 1000)),
            Ok(Plan::Unchanged)
        );
        assert_eq!(
            plan(&s, 1000, 1000, &dir(0o777, 0, 1000)),
            Ok(Plan::Correct(vec![
                Change::Mode {
                    from: Mode(0o777),
                    to: Mode(0o750)
                },
                Change::Owner { from: 0, to: 1000 },
            ]))
        );
        let adopt = DirectorySpec {
            replace: DirectoryReplace::IfAbsent,
            ..spec()
        };
        assert_eq!(
            plan(&adopt, 1000, 1000, &DirState::Absent),
            Ok(Plan::Create)
        );
        assert_eq!(
            plan(&adopt, 1000, 1000, &dir(0o750, 1000, 1000)),
            Ok(Plan::Unchanged)
        );
        assert_eq!(
            plan(&adopt, 1000, 1000, &dir(0o755, 1000, 0)),
            Ok(Plan::Kept(
                "exists with mode 0755 (catalog: 0750), group 0 (catalog: alice 1000); left as \
                 found (replace: if_absent)"
                    .into()
            ))
        );
        for kind in [FileKind::Symlink, FileKind::Regular, FileKind::Fifo] {
            let err = plan(&s, 1000, 1000, &DirState::Other(kind)).unwrap_err();
            assert_eq!(
                err,
                format!("refusing to manage /home/alice/code: it is a {kind}, not a directory")
            );
            assert_eq!(
                plan(&adopt, 1000, 1000, &DirState::Other(kind)),
                Ok(Plan::Kept(format!(
                    "exists as a {kind}, not a directory; left as found (replace: if_absent)"
                )))
            );
        }
    }
}
