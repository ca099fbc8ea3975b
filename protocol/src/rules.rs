//! What a resource may say: the rules the compiler applies to every resource it emits (with the
//! site's `FILE:LINE`) and [`crate::Catalog::validate`] applies again to every catalog an agent
//! verifies, so a catalog the agent would refuse never leaves the server, and a forged one that
//! slipped past a compiler bug is refused anyway.
//!
//! - **Unit names** are systemd unit names: `[A-Za-z0-9:_.@\-]` (and `\` for escapes), one
//!   known unit suffix, not starting with `-` (systemctl would read an option), no `/`.
//! - **Git names**: a branch passes `git check-ref-format --branch` and does not start with
//!   `-`; remote names are plain words; config keys are `section[.subsection].key`.
//! - **Modes**: a file is never setuid, setgid or world-writable; a directory is never setuid,
//!   may be setgid (shared group directories), and is world-writable only with the sticky bit
//!   (like `/tmp`). A site that needs more writes an `exec` on purpose.

use crate::resource::{Mode, ResourceSpec};

/// A rule a resource breaks: the field and what is wrong, in words for the site's author.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Broken {
    /// The spec field (`name`, `mode`, `branch`, ...).
    pub field: &'static str,
    /// What is wrong.
    pub message: String,
}

fn broken(field: &'static str, message: impl Into<String>) -> Result<(), Broken> {
    Err(Broken {
        field,
        message: message.into(),
    })
}

/// Unit types a `service` resource may manage.
pub const UNIT_SUFFIXES: &[&str] = &[
    ".service",
    ".socket",
    ".timer",
    ".target",
    ".path",
    ".mount",
    ".automount",
    ".swap",
];

/// Checks every rule of this module that applies to `spec`.
pub fn check_spec(spec: &ResourceSpec) -> Result<(), Broken> {
    match spec {
        ResourceSpec::Service(s) => check_unit_name(&s.name),
        ResourceSpec::File(f) => check_file_mode(f.mode),
        ResourceSpec::Directory(d) => check_directory_mode(d.mode),
        ResourceSpec::GitClone(g) => {
            if let Some(branch) = &g.branch {
                check_branch(branch)?;
            }
            for name in g.remotes.keys() {
                check_remote_name(name)?;
            }
            for key in g.config.keys() {
                check_config_key(key)?;
            }
            match &g.migrate_from {
                Some(from) => check_migrate_from(&g.path, from),
                None => Ok(()),
            }
        }
        _ => Ok(()),
    }
}

/// A systemd unit name (see the module doc).
pub fn check_unit_name(name: &str) -> Result<(), Broken> {
    let Some(suffix) = UNIT_SUFFIXES.iter().find(|s| name.ends_with(*s)) else {
        return broken(
            "name",
            format!(
                "{name:?} is not a unit name: it needs a unit type suffix ({})",
                UNIT_SUFFIXES.join(", ")
            ),
        );
    };
    let stem = &name[..name.len() - suffix.len()];
    if stem.is_empty() || name.len() > 255 {
        return broken("name", format!("{name:?} is not a unit name"));
    }
    if name.starts_with('-') {
        return broken(
            "name",
            format!("{name:?} starts with `-`: systemctl would read it as an option"),
        );
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || ":_.@-\\".contains(*c)))
    {
        return broken(
            "name",
            format!(
                "{name:?} contains {c:?}: unit names are letters, digits and `:_.@-\\` (a `/` would leave the unit directory)"
            ),
        );
    }
    let (prefix, instance) = match stem.split_once('@') {
        Some((prefix, instance)) => (prefix, Some(instance)),
        None => (stem, None),
    };
    if prefix.is_empty() || instance.is_some_and(|i| i.contains('@')) {
        return broken(
            "name",
            format!("{name:?} is not a unit name: at most one `@`, after a non-empty prefix"),
        );
    }
    Ok(())
}

/// A branch name git accepts for `--branch` (`git check-ref-format --branch`), not an option.
pub fn check_branch(branch: &str) -> Result<(), Broken> {
    let bad = |why: &str| broken("branch", format!("{branch:?} is not a branch name: {why}"));
    if branch.is_empty() {
        return bad("it is empty");
    }
    if branch.starts_with('-') {
        return bad("it starts with `-` (git would read an option)");
    }
    if branch == "@" || branch.contains("@{") {
        return bad("`@` alone and `@{` are reserved");
    }
    if branch.contains("..") || branch.contains("//") {
        return bad("it contains `..` or `//`");
    }
    if let Some(c) = branch
        .chars()
        .find(|c| c.is_control() || c.is_whitespace() || "~^:?*[\\".contains(*c))
    {
        return bad(&format!("it contains {c:?}"));
    }
    if branch.starts_with('/') || branch.ends_with('/') || branch.ends_with('.') {
        return bad("it starts or ends with `/`, or ends with `.`");
    }
    if branch
        .split('/')
        .any(|part| part.starts_with('.') || part.ends_with(".lock"))
    {
        return bad("a component starts with `.` or ends with `.lock`");
    }
    Ok(())
}

/// A remote name: letters, digits, `.`, `_`, `-`, starting with a letter or digit.
pub fn check_remote_name(name: &str) -> Result<(), Broken> {
    let ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        && !name.ends_with(".lock");
    if ok {
        Ok(())
    } else {
        broken(
            "remotes",
            format!("{name:?} is not a remote name (letters, digits, `.`, `_` and `-`, starting with a letter or digit)"),
        )
    }
}

/// A git config key: `section.key` or `section.subsection.key`; section and key are
/// alphanumeric and `-`, starting with a letter; the subsection has no control characters.
pub fn check_config_key(key: &str) -> Result<(), Broken> {
    let word = |w: &str| {
        w.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && w.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    let ok = match (key.split_once('.'), key.rsplit_once('.')) {
        (Some((section, _)), Some((middle, name))) => {
            let subsection = middle.strip_prefix(section).unwrap_or("");
            word(section) && word(name) && !subsection.chars().any(char::is_control)
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        broken(
            "config",
            format!("{key:?} is not a git config key (section.key or section.subsection.key)"),
        )
    }
}

/// `migrate_from` of a clone at `path`: another directory, not inside the clone's path, and
/// when the path lies inside it, directly inside it (the one directory the move recreates is
/// the path's parent).
pub fn check_migrate_from(path: &str, from: &str) -> Result<(), Broken> {
    let inside = |p: &str, dir: &str| {
        p.strip_prefix(dir)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    if from == "/" || !crate::is_normal_absolute_path(from) {
        return broken(
            "migrate_from",
            format!("invalid migrate_from path {from:?}"),
        );
    }
    if from == path || inside(from, path) {
        return broken(
            "migrate_from",
            format!("migrate_from {from} must not be the clone's path {path} or inside it"),
        );
    }
    let parent = path
        .rsplit_once('/')
        .map_or("/", |(p, _)| if p.is_empty() { "/" } else { p });
    if inside(path, from) && parent != from {
        return broken(
            "migrate_from",
            format!(
                "the clone's path {path} lies inside migrate_from {from} but not directly; only {from}/NAME can be migrated into"
            ),
        );
    }
    Ok(())
}

/// A regular file's mode: no setuid, setgid or sticky bit, not world-writable.
pub fn check_file_mode(mode: Mode) -> Result<(), Broken> {
    if mode.0 & 0o7000 != 0 {
        return broken(
            "mode",
            format!(
                "mode {mode} sets setuid, setgid or sticky bits, which a managed file may not have"
            ),
        );
    }
    if mode.0 & 0o002 != 0 {
        return broken(
            "mode",
            format!("mode {mode} makes the file world-writable: anyone could change what Steward manages"),
        );
    }
    Ok(())
}

/// A directory's mode: never setuid; setgid allowed; world-writable only with the sticky bit.
pub fn check_directory_mode(mode: Mode) -> Result<(), Broken> {
    if mode.0 & 0o4000 != 0 {
        return broken(
            "mode",
            format!("mode {mode} sets the setuid bit, which means nothing good on a directory"),
        );
    }
    if mode.0 & 0o002 != 0 && mode.0 & 0o1000 == 0 {
        return broken(
            "mode",
            format!("mode {mode} makes the directory world-writable without the sticky bit (use \"1777\" for a shared scratch directory)"),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_names() {
        for ok in [
            "t3-serve@emo.service",
            "nginx.service",
            "backup.timer",
            "x@a\\x2db.service",
        ] {
            assert_eq!(check_unit_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "../x.service",
            "a/b.service",
            "--help.service",
            "x",
            ".service",
            "a@b@c.service",
            "@x.service",
            "a b.service",
            "t3\n.service",
        ] {
            assert!(check_unit_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn branches() {
        for ok in ["master", "release/1.2", "feature-x_y"] {
            assert_eq!(check_branch(ok), Ok(()), "{ok}");
        }
        for bad in [
            "--help", "-x", "", "a..b", "a b", "x~1", "a:b", "a/", "/a", "a.lock", ".hidden", "@",
            "a@{b", "x.", "a//b", "a\\b",
        ] {
            assert!(check_branch(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn remotes_and_config_keys() {
        assert_eq!(check_remote_name("forgejo"), Ok(()));
        assert!(check_remote_name("--upload-pack=x").is_err());
        assert!(check_remote_name("a/b").is_err());
        for ok in [
            "filter.git-crypt.smudge",
            "branch.master.remote",
            "core.hooksPath",
            "url.https://x/.insteadOf",
        ] {
            assert_eq!(check_config_key(ok), Ok(()), "{ok}");
        }
        for bad in ["core", ".x", "x.", "1a.b", "a.b\nc.d", "-a.b"] {
            assert!(check_config_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn modes() {
        for ok in [0o644, 0o600, 0o755, 0o640] {
            assert_eq!(check_file_mode(Mode(ok)), Ok(()), "{ok:o}");
        }
        for bad in [0o4777, 0o4755, 0o2755, 0o1644, 0o666, 0o777] {
            assert!(check_file_mode(Mode(bad)).is_err(), "{bad:o}");
        }
        for ok in [0o755, 0o2775, 0o1777, 0o700, 0o3777] {
            assert_eq!(check_directory_mode(Mode(ok)), Ok(()), "{ok:o}");
        }
        for bad in [0o4755, 0o777, 0o2777] {
            assert!(check_directory_mode(Mode(bad)).is_err(), "{bad:o}");
        }
    }
}
