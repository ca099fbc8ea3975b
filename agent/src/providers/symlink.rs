//! The `symlink` provider: a symbolic link to a target, owned (the link itself) by a user,
//! through [`Host`](crate::host::Host): links are created under a temp name, `fchownat`ed
//! through an `O_PATH` descriptor of the link and renamed into place; the target is never
//! followed or checked (it may not exist yet).
//!
//! - `replace: if_absent`: the link is created only when nothing is at the path; any existing
//!   entry is left alone, owner included: the right link is `unchanged`, anything else (a
//!   link to elsewhere, a file, a directory) is `kept`, with what it is.
//! - `replace: always`: an existing symlink with another target is repointed (atomically:
//!   there is always a link at the path), and a link with the right target gets its owner
//!   corrected; both are `corrective`. A regular file, directory or anything else at the
//!   path is never replaced: the resource fails with a message.
//! - Under noop nothing is created or changed.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use anyhow::Context as _;
use steward_protocol::{SymlinkReplace, SymlinkSpec};

use crate::engine::{Context, Outcome};
use crate::host::LinkState;

/// What converging a symlink takes. Pure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Already as wanted.
    Unchanged,
    /// Something else is there and the policy leaves it alone (`if_absent`), and why.
    Kept(String),
    /// Nothing there: create the link.
    Create,
    /// A link to another target: repoint it (and set its owner).
    Repoint {
        /// The current target, as stored.
        from: String,
    },
    /// The right target, another owner: set the owner of the link itself.
    Chown {
        /// Current owner uid and gid.
        from: (u32, u32),
    },
}

/// The plan for `have`, or why the path cannot be managed. Pure.
pub fn plan(spec: &SymlinkSpec, uid: u32, gid: u32, have: &LinkState) -> Result<Plan, String> {
    match (spec.replace, have) {
        (_, LinkState::Absent) => Ok(Plan::Create),
        (SymlinkReplace::IfAbsent, LinkState::Symlink { target, .. }) => {
            Ok(if target.as_os_str() == OsStr::new(&spec.target) {
                Plan::Unchanged
            } else {
                Plan::Kept(format!(
                    "exists as a symlink to {}; left as found (replace: if_absent)",
                    display(target)
                ))
            })
        }
        (SymlinkReplace::IfAbsent, LinkState::Other(kind)) => Ok(Plan::Kept(format!(
            "exists as a {kind}; left as found (replace: if_absent)"
        ))),
        (SymlinkReplace::Always, LinkState::Symlink { target, inode }) => {
            if target.as_os_str() != OsStr::new(&spec.target) {
                Ok(Plan::Repoint {
                    from: display(target),
                })
            } else if (inode.uid, inode.gid) != (uid, gid) {
                Ok(Plan::Chown {
                    from: (inode.uid, inode.gid),
                })
            } else {
                Ok(Plan::Unchanged)
            }
        }
        (SymlinkReplace::Always, LinkState::Other(kind)) => Err(format!(
            "refusing to replace the {kind} at {} with a symlink; remove it to let the agent \
             create the link",
            spec.path
        )),
    }
}

/// A link target for a message: lossy, control characters escaped (the target of an
/// existing link is user data).
fn display(target: &Path) -> String {
    String::from_utf8_lossy(target.as_os_str().as_bytes())
        .escape_debug()
        .to_string()
}

/// Converges one `symlink` resource.
pub fn apply(spec: &SymlinkSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    let (uid, gid) = cx.ids_for_path(&spec.path, &spec.owner, &spec.group)?;
    let have = cx.host.read_link(&spec.path)?;
    let plan = plan(spec, uid, gid, &have).map_err(anyhow::Error::msg)?;
    let would = |done: &str, pending: &str| if cx.noop { pending } else { done }.to_string();
    let outcome = match &plan {
        Plan::Unchanged => return Ok(Outcome::Unchanged),
        Plan::Kept(reason) => return Ok(Outcome::Kept(reason.clone())),
        Plan::Create => Outcome::changed(format!(
            "{} -> {}",
            would("created", "would create"),
            spec.target
        )),
        Plan::Repoint { from } => Outcome::Changed {
            message: format!(
                "{} from {from} to {}",
                would("repointed", "would repoint"),
                spec.target
            ),
            diff: Some(format!("target: {from} -> {}\n", spec.target)),
            corrective: true,
        },
        Plan::Chown { from } => Outcome::Changed {
            message: format!(
                "owner {}:{} -> {}:{} ({uid}:{gid})",
                from.0, from.1, spec.owner, spec.group
            ),
            diff: None,
            corrective: true,
        },
    };
    if cx.noop {
        return Ok(outcome);
    }
    match plan {
        Plan::Unchanged | Plan::Kept(_) => {}
        Plan::Create | Plan::Repoint { .. } => {
            cx.host
                .create_symlink_atomic(&spec.path, &spec.target, uid, gid)
                .with_context(|| format!("creating symlink {}", spec.path))?;
        }
        Plan::Chown { .. } => cx.host.set_link_owner(&spec.path, uid, gid)?,
    }
    Ok(outcome)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use steward_protocol::Mode;

    use super::*;
    use crate::host::{FileKind, Inode};

    fn spec(replace: SymlinkReplace) -> SymlinkSpec {
        SymlinkSpec {
            path: "/home/alice/.local/bin/tool".into(),
            target: "/opt/tool/bin/tool".into(),
            owner: "alice".into(),
            group: "alice".into(),
            replace,
        }
    }

    fn link(target: &str, uid: u32) -> LinkState {
        LinkState::Symlink {
            target: PathBuf::from(target),
            inode: Inode {
                mode: Mode(0o777),
                uid,
                gid: uid,
                nlink: 1,
                dev: 1,
                ino: 2,
                size: target.len() as u64,
                mtime_sec: 0,
                mtime_nsec: 0,
                ctime_sec: 0,
                ctime_nsec: 0,
            },
        }
    }

    #[test]
    fn if_absent_creates_or_leaves_anything_alone() {
        let s = spec(SymlinkReplace::IfAbsent);
        assert_eq!(plan(&s, 1000, 1000, &LinkState::Absent), Ok(Plan::Create));
        // The right target, whoever owns the link: nothing to say.
        assert_eq!(
            plan(&s, 1000, 1000, &link("/opt/tool/bin/tool", 0)),
            Ok(Plan::Unchanged)
        );
        for (have, why) in [
            (link("/elsewhere\n", 0), "a symlink to /elsewhere\\n"),
            (LinkState::Other(FileKind::Regular), "a regular file"),
            (LinkState::Other(FileKind::Directory), "a directory"),
        ] {
            assert_eq!(
                plan(&s, 1000, 1000, &have),
                Ok(Plan::Kept(format!(
                    "exists as {why}; left as found (replace: if_absent)"
                ))),
                "{have:?}"
            );
        }
    }

    #[test]
    fn always_repoints_links_and_fixes_their_owner_but_never_replaces_other_things() {
        let s = spec(SymlinkReplace::Always);
        assert_eq!(plan(&s, 1000, 1000, &LinkState::Absent), Ok(Plan::Create));
        assert_eq!(
            plan(&s, 1000, 1000, &link("/opt/tool/bin/tool", 1000)),
            Ok(Plan::Unchanged)
        );
        assert_eq!(
            plan(&s, 1000, 1000, &link("/old\nx", 1000)),
            Ok(Plan::Repoint {
                from: "/old\\nx".into()
            })
        );
        assert_eq!(
            plan(&s, 1000, 1000, &link("/opt/tool/bin/tool", 0)),
            Ok(Plan::Chown { from: (0, 0) })
        );
        for kind in [FileKind::Regular, FileKind::Directory, FileKind::Fifo] {
            let err = plan(&s, 1000, 1000, &LinkState::Other(kind)).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "refusing to replace the {kind} at /home/alice/.local/bin/tool"
                )),
                "{err}"
            );
        }
    }
}
