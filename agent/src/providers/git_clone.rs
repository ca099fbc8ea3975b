//! The `git_clone` provider: a git work tree that belongs to a user.
//!
//! Every git command runs **as the user** (uid and primary gid, no supplementary groups,
//! `HOME` = the user's home, `GIT_CONFIG_NOSYSTEM=1`, `GIT_TERMINAL_PROMPT=0`): the work tree,
//! its `.git/config` and the user's `~/.gitconfig` are theirs, so nothing git reads there
//! (filters, fsmonitor, aliases...) can act with the agent's privileges, and everything git
//! writes is owned by them. Each command also gets `-c core.hooksPath=/dev/null` (no hooks),
//! `-c submodule.recurse=false` (plus `--no-recurse-submodules` on clone and fetch), and
//! `-c protocol.allow=never -c protocol.<scheme>.allow=always` so the only transport git may
//! use is the clone URL's own (this also covers git ≥ 2.38's restriction of `file://`, which
//! only concerns submodules anyway).
//!
//! - **URLs**: the clone URL must be `https://` or `file:///` and carry no user info
//!   (credentials are never in argv or `.git/config`; use a credential helper). Extra remotes
//!   are only written to the config, never fetched by the agent, so they may also be
//!   `ssh://` or `user@host:path`, still without a password.
//! - **Never replaces a path, never clones into a work tree**: nothing there → clone; an
//!   empty directory owned by the user (e.g. left by an interrupted clone) → clone into it;
//!   the top of a work tree owned by the user whose `origin` is the catalog URL (after
//!   trivial normalisation: `file://`, a trailing `/` or `.git`) → converge. Anything else
//!   is adopted as found and reported **`kept`** with what it is, never `failed`: a symlink
//!   (a person's `~/code` pointing into another tree), a file, a plain directory, another
//!   repository or a clone of another URL, a directory of another user, and a path whose
//!   parent is a symlink or not a directory. Before cloning, every ancestor of the path up
//!   to `/` is looked at: one holding a `.git` makes the resource `kept` ("would be inside
//!   the work tree ..."), so a layout change never nests clones. Real errors (git failing,
//!   permissions, a missing parent) still fail the resource.
//! - **`migrate_from`** (a layout change, `~/code` → `~/code/infra`): when the path does
//!   not exist and `migrate_from` holds a clean clone of the URL (owned by the user, the top
//!   of its work tree, `origin` the catalog URL, `git status --porcelain` empty, untracked
//!   files included, and no commit on a local branch or `HEAD` that no remote-tracking
//!   branch has), the clone is **moved** to the path instead of cloning anew ("moved the
//!   clone ~/code to ~/code/infra"), then converged as an existing clone. The move is
//!   `renameat(RENAME_NOREPLACE)` beneath the root with no symlink followed, checked
//!   against the observed inode: the clone keeps its inode, objects, `HEAD` and everything
//!   in its tree. When the path lies inside `migrate_from` (it must then be directly inside
//!   it, a catalog rule), `migrate_from` is renamed to the hidden sibling
//!   `.NAME.steward-migrate`, recreated as a plain directory with the clone's owner and
//!   mode, and the clone renamed into the path; a failure on the way puts it back, and a
//!   sibling left by an agent killed mid-move makes the resource `kept` (naming it) until
//!   someone looks.
//!   `migrate_from` that is absent or a plain directory (the new layout's parent) changes
//!   nothing: the path is cloned as usual. Anything else there (uncommitted work, local
//!   commits, another remote, a symlink, another user's) is `kept` with the reason and
//!   nothing is cloned, into it or beside it. Under noop the move is reported, not made.
//! - **Clone**: the parent must exist (the engine orders the user and parent directory
//!   first). The path is created by the agent as a 0755 directory owned by the user (so the
//!   parent need not be writable by them), then `git clone --no-recurse-submodules
//!   [--branch=B] -- URL PATH` runs as the user into it; config keys and extra remotes follow.
//! - **Existing clone**: config keys (`git config --local --replace-all`, corrective when a
//!   different value was there) and extra remotes (`git remote add` / `set-url`). With
//!   `refresh`: fast-forward only, only when `origin` is the catalog URL, the checked-out
//!   branch is the default one (`branch`, else the remote's default) and the tree is clean;
//!   otherwise the clone is left alone and the reason is added to the message when something
//!   else changed (an [`Outcome::Unchanged`] carries no message). The remote is first asked
//!   with `git ls-remote` (read-only, so `--noop` can tell too); only when it has something
//!   new is it fetched.
//! - **"Dubious ownership"** (git's CVE-2022-24765 fix): cloning or fetching a `file://`
//!   repository owned by someone else fails, and `-c safe.directory` does not help because
//!   the serving `upload-pack` only reads protected config (harness/README.md). So when the
//!   source belongs to another uid the provider adds a `safe.directory` entry for it (the
//!   repository's git dir: `PATH` when bare, `PATH/.git` otherwise) to the user's own
//!   `~/.gitconfig`, with `git config --global --add` run as the user, only when absent.
//!
//! Under `--root` (a root other than `/`) git runs as
//! `chroot --userspec=UID:GID --groups=GID ROOT git ...`. Chosen over host git on
//! root-joined paths because then every path git sees or records is the root's own: the
//! `file://` URL in `.git/config`, the `safe.directory` entry, `HOME` and the work tree are
//! right when the root boots, and the root's `/etc/passwd` is the one that counts. Host git
//! would have to be given `ROOT/srv/x.git` URLs that end up in the clone's config. The cost
//! is that git must be installed in the root (a clear error says so), which any root that
//! gets clones has anyway.

use std::os::unix::process::CommandExt;
use std::process::Command;

use anyhow::Context as _;
use steward_protocol::{is_normal_absolute_path, GitCloneSpec, Mode};

use crate::command::{self, Output};
use crate::engine::{Context, Outcome};
use crate::host::{DirState, HostError, Inode};

/// Mode of the clone's top directory when the agent creates it.
const CLONE_DIR_MODE: Mode = Mode(0o755);

/// Converges one `git_clone` resource.
pub fn apply(spec: &GitCloneSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    let source = parse_clone_url(&spec.url).map_err(anyhow::Error::msg)?;
    check_spec(spec).map_err(anyhow::Error::msg)?;
    let user = cx
        .accounts()?
        .user(&spec.user)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("unknown user {:?}", spec.user))?;
    let git = Git {
        cx,
        uid: user.uid,
        gid: user.gid,
        home: user.home,
        scheme: source.scheme,
    };
    let path = spec.path.as_str();
    let parent = parent_of(path);
    let parent_look = if parent == "/" {
        Look::Directory(None)
    } else {
        look(cx, parent)?
    };
    let state = match parent_look {
        Look::Directory(_) => observe(cx, &git, path)?,
        Look::Absent if cx.noop => PathState::Absent,
        Look::Absent => {
            anyhow::bail!("cannot clone into {path}: the parent directory {parent} does not exist")
        }
        Look::Foreign(why) => {
            return Ok(Outcome::Kept(format!(
                "not cloned: the parent {parent} {why}; left as found"
            )))
        }
    };
    match state {
        PathState::Absent => {
            if let Some(from) = &spec.migrate_from {
                match migration(cx, &git, spec, from)? {
                    Migration::Nothing => {}
                    Migration::Kept(why) => return Ok(Outcome::Kept(why)),
                    Migration::Move(inode) => {
                        return migrate(spec, cx, &git, &source, from, inode);
                    }
                }
            }
            if let Some(tree) = enclosing_work_tree(cx, parent)? {
                return Ok(Outcome::Kept(inside_work_tree(path, &tree)));
            }
            clone(spec, cx, &git, &source, true)
        }
        PathState::EmptyDir => {
            if let Some(tree) = enclosing_work_tree(cx, parent)? {
                return Ok(Outcome::Kept(inside_work_tree(path, &tree)));
            }
            clone(spec, cx, &git, &source, false)
        }
        PathState::Foreign(why) => Ok(Outcome::Kept(format!(
            "{path} exists and is not a clone of {} ({why}); left as found",
            spec.url
        ))),
        PathState::Clone => match get_config(&git, path, "remote.origin.url")? {
            Some(origin) if same_remote(&origin, &spec.url) && unfinished(&git, path)? => {
                // A clone killed mid-pack (a stalled server, a timeout, SIGKILL): ours, with
                // no commit and no file, so starting again loses nothing.
                if !cx.noop {
                    // As the user, like every command here: the path is theirs to swap for a
                    // symlink, so root must never resolve it.
                    let dot_git = format!("{path}/.git");
                    let mut rm = git.command("rm");
                    rm.args(["-rf", "--", &dot_git]);
                    let out = git.run(&mut rm)?;
                    git.ensure_success("unfinished clone removal (rm -rf .git)", &out)?;
                }
                match clone(spec, cx, &git, &source, false)? {
                    Outcome::Changed {
                        message,
                        diff,
                        corrective: _,
                    } => Ok(Outcome::Changed {
                        message: format!("{message} (an earlier clone had not finished)"),
                        diff,
                        corrective: true,
                    }),
                    other => Ok(other),
                }
            }
            Some(origin) if same_remote(&origin, &spec.url) => converge(spec, cx, &git, &source),
            origin => Ok(Outcome::Kept(format!(
                "{path} {}; left as found",
                other_repository(origin.as_deref(), &spec.url)
            ))),
        },
    }
}

/// Whether the clone at `path` never finished: `HEAD` names no commit and the work tree holds
/// nothing but `.git`. (A repository someone made on purpose has a commit or a file.)
fn unfinished(git: &Git<'_>, path: &str) -> anyhow::Result<bool> {
    let mut head = git.git(
        Some(path),
        &["rev-parse", "--verify", "-q", "HEAD^{commit}"],
    );
    if git.run(&mut head)?.success() {
        return Ok(false);
    }
    let mut find = git.command("find");
    find.args([
        path,
        "-mindepth",
        "1",
        "-maxdepth",
        "1",
        "!",
        "-name",
        ".git",
    ]);
    let other = git.run(&mut find)?;
    Ok(other.success() && other.stdout.trim().is_empty())
}

fn inside_work_tree(path: &str, tree: &str) -> String {
    format!("{path} would be inside the work tree {tree}; not cloned")
}

/// What a work tree whose origin is not the catalog URL is, for a message. Pure.
fn other_repository(origin: Option<&str>, url: &str) -> String {
    match origin {
        Some(origin) => format!("is a clone of {}, not of {url}", redact(origin)),
        None => format!("is a git work tree without an origin remote, not a clone of {url}"),
    }
}

/// Whether two remote URLs name the same repository, after trivial normalisation: a
/// `file://` prefix (git records a local path either way), trailing `/` and `.git`, and the
/// case of an `https://` host. Pure.
pub fn same_remote(a: &str, b: &str) -> bool {
    fn normal(url: &str) -> String {
        let url = url.trim();
        let url = url.strip_prefix("file://").unwrap_or(url);
        let url = url.trim_end_matches('/');
        let url = url
            .strip_suffix(".git")
            .unwrap_or(url)
            .trim_end_matches('/');
        match url.strip_prefix("https://") {
            Some(rest) => {
                let (host, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
                format!("https://{}{tail}", host.to_ascii_lowercase())
            }
            None => url.to_string(),
        }
    }
    normal(a) == normal(b)
}

/// The first directory from `dir` up to `/` that holds a `.git` (of any kind: a work tree's
/// directory, a worktree's or submodule's file, a symlink), if any.
fn enclosing_work_tree(cx: &Context<'_>, dir: &str) -> anyhow::Result<Option<String>> {
    let mut dir = dir;
    loop {
        let dot_git = if dir == "/" {
            "/.git".to_string()
        } else {
            format!("{dir}/.git")
        };
        if !matches!(cx.host.observe_dir(&dot_git)?, DirState::Absent) {
            return Ok(Some(dir.to_string()));
        }
        if dir == "/" {
            return Ok(None);
        }
        dir = parent_of(dir);
    }
}

/// The transport of a clone URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `https://`.
    Https,
    /// `file:///` (a repository on this machine, or in this root).
    File,
}

impl Scheme {
    fn name(self) -> &'static str {
        match self {
            Scheme::Https => "https",
            Scheme::File => "file",
        }
    }
}

/// A checked clone URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloneUrl {
    /// Its transport.
    pub scheme: Scheme,
    /// For `file://`, the repository's path (inside the root).
    pub local_path: Option<String>,
}

/// Checks a clone URL: `https://HOST/...` or `file:///PATH`, no credentials, nothing git
/// could read as an option. The error is the resource's failure message and never repeats
/// what might be a credential.
pub fn parse_clone_url(url: &str) -> Result<CloneUrl, String> {
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "refusing clone URL {}: it contains whitespace or control characters",
            redact(url)
        ));
    }
    if let Some(rest) = url.strip_prefix("https://") {
        let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
        if authority.contains('@') {
            return Err(credentials_refused(url));
        }
        if authority.is_empty() || authority.starts_with(':') {
            return Err(format!("refusing clone URL {url}: no host"));
        }
        return Ok(CloneUrl {
            scheme: Scheme::Https,
            local_path: None,
        });
    }
    if let Some(rest) = url.strip_prefix("file://") {
        if rest.contains('@') && !rest.starts_with('/') {
            return Err(credentials_refused(url));
        }
        let path = rest.strip_suffix('/').unwrap_or(rest);
        if !rest.starts_with('/')
            || path.is_empty()
            || path.contains(['?', '#', '%'])
            || !is_normal_absolute_path(path)
        {
            return Err(format!(
                "refusing clone URL {}: a file URL must be file:///ABSOLUTE/PATH (normalized, \
                 no host, no escapes)",
                redact(url)
            ));
        }
        return Ok(CloneUrl {
            scheme: Scheme::File,
            local_path: Some(path.to_string()),
        });
    }
    Err(format!(
        "refusing clone URL {}: only https:// and file:// URLs may be cloned",
        redact(url)
    ))
}

fn credentials_refused(url: &str) -> String {
    format!(
        "refusing URL {}: it carries user info (credentials never go in a URL, argv or \
         .git/config; use a credential helper)",
        redact(url)
    )
}

/// A URL fit for an error message: anything with an `@` is cut to its scheme.
fn redact(url: &str) -> String {
    if url.contains('@') {
        match url.split_once("://") {
            Some((scheme, _)) if scheme.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                format!("{scheme}://<redacted>")
            }
            _ => "<redacted>".to_string(),
        }
    } else {
        url.to_string()
    }
}

/// Checks an extra remote's URL: a clone URL, or `ssh://[user@]host/...` /
/// `[user@]host:path` (the agent never fetches extra remotes), never with a password, and
/// never an `https://` URL with any user info (tokens are put there).
pub fn check_remote_url(url: &str) -> Result<(), String> {
    if url.starts_with("https://") || url.starts_with("file://") {
        return parse_clone_url(url).map(|_| ());
    }
    if url.chars().any(|c| c.is_control() || c.is_whitespace()) || url.starts_with('-') {
        return Err(format!("refusing remote URL {}", redact(url)));
    }
    let (userinfo, host, rest) = if let Some(rest) = url.strip_prefix("ssh://") {
        let end = rest.find('/').unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        match authority.rsplit_once('@') {
            Some((userinfo, host)) => (Some(userinfo), host, path),
            None => (None, authority, path),
        }
    } else if !url.contains("://") && url.find(':').is_some_and(|c| !url[..c].contains('/')) {
        // scp-like `[user@]host:path`: the user info ends at the first `@` (before any `/`).
        let head = &url[..url.find('/').unwrap_or(url.len())];
        let (userinfo, after) = match head.find('@') {
            Some(at) => (Some(&url[..at]), &url[at + 1..]),
            None => (None, url),
        };
        match after.split_once(':') {
            Some((host, path)) => (userinfo, host, path),
            None => (userinfo, "", ""),
        }
    } else {
        return Err(format!(
            "refusing remote URL {}: only https://, file://, ssh:// and user@host:path URLs",
            redact(url)
        ));
    };
    if userinfo.is_some_and(|u| u.contains(':')) {
        return Err(credentials_refused(url));
    }
    if host.is_empty() || host.starts_with('-') || rest.is_empty() {
        return Err(format!(
            "refusing remote URL {}: no host or path",
            redact(url)
        ));
    }
    Ok(())
}

/// Checks everything but the clone URL: path, branch, config keys and extra remotes.
fn check_spec(spec: &GitCloneSpec) -> Result<(), String> {
    if spec.path == "/" || !is_normal_absolute_path(&spec.path) {
        return Err(format!("invalid clone path {:?}", spec.path));
    }
    if let Some(from) = &spec.migrate_from {
        check_migrate_from(&spec.path, from)?;
    }
    if let Some(branch) = &spec.branch {
        if branch.is_empty()
            || branch.starts_with(['-', '/'])
            || branch.contains("..")
            || branch.chars().any(|c| c.is_control() || c.is_whitespace())
        {
            return Err(format!("invalid branch name {branch:?}"));
        }
    }
    for (key, value) in &spec.config {
        check_config(key, value)?;
    }
    for (name, url) in &spec.remotes {
        if name.is_empty()
            || name.starts_with(['-', '.'])
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        {
            return Err(format!("invalid remote name {name:?}"));
        }
        if name == "origin" {
            return Err(
                "remote \"origin\" is the clone URL itself; set `url`, not `remotes.origin`"
                    .to_string(),
            );
        }
        check_remote_url(url)?;
    }
    Ok(())
}

/// `migrate_from` must be another normalized absolute path, not inside the clone's path,
/// and when the path lies inside it, directly inside it: the protocol's rule, which the
/// compiler applies too. Pure.
pub fn check_migrate_from(path: &str, from: &str) -> Result<(), String> {
    steward_protocol::rules::check_migrate_from(path, from).map_err(|broken| broken.message)
}

/// Whether `path` lies strictly beneath `dir` (both normalized absolute paths). Pure.
fn is_inside(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// A config key must be `section[.subsection].name`, and neither it nor its value may carry
/// credentials (`credential.*`, `http.*.extraHeader`, a URL with user info).
pub fn check_config(key: &str, value: &str) -> Result<(), String> {
    let lower = key.to_ascii_lowercase();
    let (section, rest) = lower.split_once('.').unwrap_or(("", ""));
    let name = rest.rsplit('.').next().unwrap_or("");
    if !section.starts_with(|c: char| c.is_ascii_alphabetic())
        || name.is_empty()
        || !section
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        || !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || key.chars().any(|c| c.is_control())
    {
        return Err(format!("invalid git config key {key:?}"));
    }
    if section == "credential" || name == "extraheader" {
        return Err(format!(
            "refusing git config key {key}: credentials never go in .git/config"
        ));
    }
    if section == "remote" && (name == "url" || name == "pushurl") {
        return Err(format!(
            "git config key {key}: set the clone URL with `url` and others with `remotes`"
        ));
    }
    if carries_credentials(key) || carries_credentials(value) {
        return Err(format!(
            "refusing git config key {}: a URL in it carries user info (credentials never go \
             in .git/config)",
            redact(key)
        ));
    }
    if value.contains('\n') || value.contains('\0') {
        return Err(format!(
            "refusing the value of git config key {key}: control characters"
        ));
    }
    Ok(())
}

/// Whether any URL in `text` has a password, or user info at all in `http(s)://` (where a
/// "user name" is usually a token).
fn carries_credentials(text: &str) -> bool {
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let scheme: String = rest[..at]
            .chars()
            .rev()
            .take_while(char::is_ascii_alphanumeric)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        rest = &rest[at + 3..];
        let end = rest
            .find(|c: char| matches!(c, '/' | '?' | '#') || c.is_whitespace())
            .unwrap_or(rest.len());
        if let Some((userinfo, _)) = rest[..end].rsplit_once('@') {
            let web = scheme.eq_ignore_ascii_case("https") || scheme.eq_ignore_ascii_case("http");
            if web || userinfo.contains(':') {
                return true;
            }
        }
    }
    false
}

/// What is at the clone's path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathState {
    Absent,
    /// An empty directory owned by the user: cloning into it replaces nothing.
    EmptyDir,
    /// The top of a git work tree owned by the user.
    Clone,
    /// Anything else, with what it is.
    Foreign(String),
}

fn observe(cx: &Context<'_>, git: &Git<'_>, path: &str) -> anyhow::Result<PathState> {
    match cx.host.observe_dir(path)? {
        DirState::Absent => Ok(PathState::Absent),
        DirState::Other(kind) => Ok(PathState::Foreign(format!("it is a {kind}"))),
        DirState::Directory(inode) if inode.uid != git.uid => Ok(PathState::Foreign(format!(
            "a directory owned by uid {}, not the clone's user (uid {})",
            inode.uid, git.uid
        ))),
        DirState::Directory(_) => {
            // Discovery may not climb above the path: a clone inside the user's dotfiles
            // repository is still not a clone at this path.
            let mut cmd = git.git(Some(path), &["rev-parse", "--show-toplevel"]);
            cmd.env("GIT_CEILING_DIRECTORIES", parent_of(path));
            let out = git.run(&mut cmd)?;
            if out.success() && out.stdout.trim_end_matches('\n') == path {
                return Ok(PathState::Clone);
            }
            let mut find = git.command("find");
            find.args([path, "-maxdepth", "0", "-empty"]);
            let empty = git.run(&mut find)?;
            if empty.success() && empty.stdout.trim_end_matches('\n') == path {
                Ok(PathState::EmptyDir)
            } else {
                Ok(PathState::Foreign(
                    "a directory that is not the top of a git work tree".to_string(),
                ))
            }
        }
    }
}

/// What is at a path the clone needs to be a directory (its parent, `migrate_from`).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Look {
    Absent,
    /// A directory (`None`: `/`, never observed).
    Directory(Option<Inode>),
    /// Something that is left as found, with what it is ("is a symlink").
    Foreign(String),
}

/// Looks at `path` as a directory without following symlinks; a symlink or non-directory
/// in the way is [`Look::Foreign`], not an error (it is someone's pre-existing layout).
fn look(cx: &Context<'_>, path: &str) -> anyhow::Result<Look> {
    if path == "/" {
        return Ok(Look::Directory(None));
    }
    match cx.host.observe_dir(path) {
        Ok(DirState::Directory(inode)) => Ok(Look::Directory(Some(inode))),
        Ok(DirState::Absent) => Ok(Look::Absent),
        Ok(DirState::Other(kind)) => Ok(Look::Foreign(format!("is a {kind}"))),
        Err(HostError::SymlinkInPath { path }) => Ok(Look::Foreign(format!(
            "lies beneath the symlink {}",
            path.display()
        ))),
        Err(HostError::NotDirectory { path, kind }) => Ok(Look::Foreign(format!(
            "lies beneath {}, a {kind}",
            path.display()
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Whether `parent` is a directory (for noop's note on a clone that would be made).
fn parent_exists(cx: &Context<'_>, parent: &str) -> anyhow::Result<bool> {
    Ok(parent == "/" || matches!(look(cx, parent)?, Look::Directory(_)))
}

fn parent_of(path: &str) -> &str {
    match path.rfind('/') {
        Some(0) | None => "/",
        Some(cut) => &path[..cut],
    }
}

/// What was done (or, under noop, would be).
#[derive(Debug, Default)]
struct Changes {
    done: Vec<String>,
    diff: Vec<String>,
    corrective: bool,
    notes: Vec<String>,
}

impl Changes {
    fn outcome(self, noop: bool) -> Outcome {
        if self.done.is_empty() {
            return Outcome::Unchanged;
        }
        let mut message = self.done.join("; ");
        if noop {
            message = format!("would: {message}");
        }
        for note in &self.notes {
            message.push_str("; ");
            message.push_str(note);
        }
        Outcome::Changed {
            message,
            diff: (!self.diff.is_empty()).then(|| self.diff.join("\n")),
            corrective: self.corrective,
        }
    }
}

fn clone(
    spec: &GitCloneSpec,
    cx: &Context<'_>,
    git: &Git<'_>,
    source: &CloneUrl,
    create_dir: bool,
) -> anyhow::Result<Outcome> {
    let path = spec.path.as_str();
    let parent = parent_of(path);
    let mut changes = Changes::default();
    ensure_safe_directory(cx, git, source, &mut changes)?;
    changes.done.push(match &spec.branch {
        Some(branch) => format!("cloned {} (branch {branch}) as {}", spec.url, spec.user),
        None => format!("cloned {} as {}", spec.url, spec.user),
    });
    for (key, value) in &spec.config {
        changes.diff.push(format!("config {key} = {value}"));
    }
    for (name, url) in &spec.remotes {
        changes.diff.push(format!("remote {name} = {url}"));
    }
    if cx.noop {
        if !parent_exists(cx, parent)? {
            changes
                .notes
                .push(format!("the parent directory {parent} does not exist yet"));
        }
        return Ok(changes.outcome(true));
    }
    if create_dir {
        cx.host.ensure_dir(path, CLONE_DIR_MODE, git.uid, git.gid)?;
    }
    let mut args = vec!["clone", "--no-recurse-submodules", "--quiet"];
    let branch_arg;
    if let Some(branch) = &spec.branch {
        branch_arg = format!("--branch={branch}");
        args.push(&branch_arg);
    }
    args.extend(["--", spec.url.as_str(), path]);
    git.checked("clone", &mut git.git(None, &args))?;
    for (key, value) in &spec.config {
        set_config(git, path, key, value)?;
    }
    for (name, url) in &spec.remotes {
        git.checked(
            "remote add",
            &mut git.git(Some(path), &["remote", "add", "--", name, url]),
        )?;
    }
    if !spec.config.is_empty() || !spec.remotes.is_empty() {
        let mut what = Vec::new();
        if !spec.config.is_empty() {
            what.push(format!("{} config key(s)", spec.config.len()));
        }
        if !spec.remotes.is_empty() {
            what.push(format!(
                "remote(s) {}",
                spec.remotes.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        changes.done.push(format!("set {}", what.join(" and ")));
    }
    Ok(changes.outcome(false))
}

/// What `migrate_from` holds, for a clone whose path does not exist yet.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Migration {
    /// Nothing to move (absent, or a plain directory): clone as usual.
    Nothing,
    /// A clean clone of the URL, observed as this inode: move it.
    Move(Inode),
    /// Something to leave as found, and why: nothing is cloned.
    Kept(String),
}

/// Decides the migration from `from` (see the module docs); reads only.
fn migration(
    cx: &Context<'_>,
    git: &Git<'_>,
    spec: &GitCloneSpec,
    from: &str,
) -> anyhow::Result<Migration> {
    let path = spec.path.as_str();
    let kept = |why: String| {
        Ok(Migration::Kept(format!(
            "{from} {why}; not moved to {path}, and nothing cloned"
        )))
    };
    let temp = migration_temp(from);
    if look(cx, &temp)? != Look::Absent {
        return Ok(Migration::Kept(format!(
            "{temp} is left from an interrupted move of {from}; nothing moved or cloned (move \
             it back to {from} or to {path}, or remove it)"
        )));
    }
    let inode = match look(cx, from)? {
        Look::Absent => return Ok(Migration::Nothing),
        Look::Foreign(why) => return kept(why),
        // `check_migrate_from` refuses `/`.
        Look::Directory(None) => return Ok(Migration::Nothing),
        Look::Directory(Some(inode)) => inode,
    };
    if inode.uid != git.uid {
        return kept(format!(
            "is a directory owned by uid {}, not the clone's user (uid {})",
            inode.uid, git.uid
        ));
    }
    let mut top = git.git(Some(from), &["rev-parse", "--show-toplevel"]);
    top.env("GIT_CEILING_DIRECTORIES", parent_of(from));
    let top = git.run(&mut top)?;
    if !top.success() || top.stdout.trim_end_matches('\n') != from {
        // A plain directory: the new layout's parent. Cloning goes on (never into a work
        // tree: the caller looks at the ancestors next).
        return Ok(Migration::Nothing);
    }
    let origin = get_config(git, from, "remote.origin.url")?;
    if !origin
        .as_deref()
        .is_some_and(|origin| same_remote(origin, &spec.url))
    {
        return kept(other_repository(origin.as_deref(), &spec.url));
    }
    let status = git.checked(
        "status",
        &mut git.git(
            Some(from),
            &["--no-optional-locks", "status", "--porcelain"],
        ),
    )?;
    if !status.trim().is_empty() {
        return kept("has uncommitted or untracked changes".to_string());
    }
    let head = git.run(&mut git.git(Some(from), &["rev-parse", "--verify", "--quiet", "HEAD"]))?;
    let mut args = vec!["rev-list", "--max-count=1"];
    if head.success() {
        args.push("HEAD");
    }
    args.extend(["--branches", "--not", "--remotes"]);
    let local = git.checked("rev-list", &mut git.git(Some(from), &args))?;
    if !local.trim().is_empty() {
        return kept("has commits that are on no remote-tracking branch".to_string());
    }
    Ok(Migration::Move(inode))
}

/// The hidden sibling `migrate_from` is renamed to while its replacement directory is made.
fn migration_temp(from: &str) -> String {
    let parent = parent_of(from);
    let name = &from[from.rfind('/').map_or(0, |i| i + 1)..];
    if parent == "/" {
        format!("/.{name}.steward-migrate")
    } else {
        format!("{parent}/.{name}.steward-migrate")
    }
}

/// Moves the clean clone at `from` (observed as `inode`) to the path, then converges it.
fn migrate(
    spec: &GitCloneSpec,
    cx: &Context<'_>,
    git: &Git<'_>,
    source: &CloneUrl,
    from: &str,
    inode: Inode,
) -> anyhow::Result<Outcome> {
    let path = spec.path.as_str();
    let moved = format!("moved the clone {from} to {path}");
    if cx.noop {
        return Ok(Outcome::changed(format!("would: {moved}")));
    }
    if is_inside(path, from) {
        let temp = migration_temp(from);
        cx.host
            .rename_entry(from, &temp, inode.identity())
            .with_context(|| format!("moving {from} aside to {temp}; nothing was moved"))?;
        let rest = (|| -> anyhow::Result<()> {
            cx.host
                .ensure_dir(from, inode.mode, inode.uid, inode.gid)
                .with_context(|| format!("recreating {from}"))?;
            let DirState::Directory(aside) = cx.host.observe_dir(&temp)? else {
                anyhow::bail!("{temp} changed while the clone was moved");
            };
            anyhow::ensure!(
                (aside.dev, aside.ino) == (inode.dev, inode.ino),
                "{temp} changed while the clone was moved"
            );
            cx.host
                .rename_entry(&temp, path, aside.identity())
                .with_context(|| format!("moving {temp} to {path}"))?;
            Ok(())
        })();
        if let Err(error) = rest {
            // Put it back as it was; if that fails too, say where the clone is.
            let back = (|| -> Result<(), HostError> {
                if let DirState::Directory(_) = cx.host.observe_dir(from)? {
                    cx.host.remove_empty_dir(from)?;
                }
                if let DirState::Directory(aside) = cx.host.observe_dir(&temp)? {
                    cx.host.rename_entry(&temp, from, aside.identity())?;
                }
                Ok(())
            })();
            return Err(match back {
                Ok(()) => error.context(format!("{from} was put back")),
                Err(_) => error.context(format!("the clone is left at {temp}")),
            });
        }
    } else {
        cx.host
            .rename_entry(from, path, inode.identity())
            .with_context(|| format!("moving the clone {from} to {path}"))?;
    }
    Ok(match converge(spec, cx, git, source)? {
        Outcome::Changed {
            message,
            diff,
            corrective,
        } => Outcome::Changed {
            message: format!("{moved}; {message}"),
            diff,
            corrective,
        },
        _ => Outcome::changed(moved),
    })
}

fn converge(
    spec: &GitCloneSpec,
    cx: &Context<'_>,
    git: &Git<'_>,
    source: &CloneUrl,
) -> anyhow::Result<Outcome> {
    let path = spec.path.as_str();
    let mut changes = Changes::default();
    for (key, value) in &spec.config {
        let current = get_config(git, path, key)?;
        if current.as_deref() == Some(value.as_str()) {
            continue;
        }
        // Values found in the user's repository are not repeated in the report.
        let (verb, was) = match current {
            Some(_) => ("corrected", "a different value"),
            None => ("set", "unset"),
        };
        changes.corrective |= verb == "corrected";
        changes.done.push(format!("{verb} config {key}"));
        changes
            .diff
            .push(format!("config {key} = {value} (was {was})"));
        if !cx.noop {
            set_config(git, path, key, value)?;
        }
    }
    for (name, url) in &spec.remotes {
        let current = get_config(git, path, &format!("remote.{name}.url"))?;
        match current {
            Some(c) if c == *url => continue,
            Some(c) => {
                changes.corrective = true;
                changes.done.push(format!("corrected remote {name}"));
                changes
                    .diff
                    .push(format!("remote {name} = {url} (was {})", redact(&c)));
                if !cx.noop {
                    git.checked(
                        "remote set-url",
                        &mut git.git(Some(path), &["remote", "set-url", "--", name, url]),
                    )?;
                }
            }
            None => {
                changes.done.push(format!("added remote {name}"));
                changes.diff.push(format!("remote {name} = {url}"));
                if !cx.noop {
                    git.checked(
                        "remote add",
                        &mut git.git(Some(path), &["remote", "add", "--", name, url]),
                    )?;
                }
            }
        }
    }
    if spec.refresh {
        match refresh(spec, cx, git, source, &mut changes)? {
            Refresh::UpToDate => {}
            Refresh::Forwarded { branch, from, to } => {
                changes.done.push(format!(
                    "fast-forwarded {branch} {}..{}",
                    short(from.as_deref()),
                    short(Some(&to))
                ));
            }
            Refresh::Held(why) => changes.notes.push(format!("not refreshed: {why}")),
        }
    }
    Ok(changes.outcome(cx.noop))
}

/// The result of a refresh attempt.
#[derive(Debug)]
enum Refresh {
    UpToDate,
    /// Fast-forwarded (under noop: would be) from `from` (`None`: an unborn branch) to `to`.
    Forwarded {
        branch: String,
        from: Option<String>,
        to: String,
    },
    /// Left alone, and why.
    Held(String),
}

fn refresh(
    spec: &GitCloneSpec,
    cx: &Context<'_>,
    git: &Git<'_>,
    source: &CloneUrl,
    changes: &mut Changes,
) -> anyhow::Result<Refresh> {
    let path = spec.path.as_str();
    let origin = get_config(git, path, "remote.origin.url")?;
    if !origin.is_some_and(|origin| same_remote(&origin, &spec.url)) {
        return Ok(Refresh::Held("origin is not the catalog's URL".to_string()));
    }
    let head_ref =
        git.run(&mut git.git(Some(path), &["symbolic-ref", "--quiet", "--short", "HEAD"]))?;
    if !head_ref.success() {
        return Ok(Refresh::Held("HEAD is detached".to_string()));
    }
    let current = head_ref.stdout.trim().to_string();
    let status = git.checked(
        "status",
        &mut git.git(
            Some(path),
            &["--no-optional-locks", "status", "--porcelain"],
        ),
    )?;
    // The safe.directory entry is needed from here on (the remote is asked).
    let missing_trust = ensure_safe_directory(cx, git, source, changes)?;
    if missing_trust && cx.noop {
        return Ok(Refresh::Held(
            "the remote cannot be asked before safe.directory is added".to_string(),
        ));
    }
    let default = match &spec.branch {
        Some(b) => b.clone(),
        None => match default_branch(git, path)? {
            Some(b) => b,
            None => {
                return Ok(Refresh::Held(
                    "the remote's default branch is unknown".to_string(),
                ))
            }
        },
    };
    if current != default {
        return Ok(Refresh::Held(format!(
            "on branch {current}, not the default branch {default}"
        )));
    }
    if !status.trim().is_empty() {
        return Ok(Refresh::Held(
            "the work tree has uncommitted or untracked changes".to_string(),
        ));
    }
    let wanted = format!("refs/heads/{default}");
    let listed =
        git.run(&mut git.git(Some(path), &["ls-remote", "--exit-code", "origin", &wanted]))?;
    if listed.code() == Some(2) {
        return Ok(Refresh::Held(format!("origin has no branch {default}")));
    }
    git.ensure_success("ls-remote", &listed)?;
    let Some(remote) = listed.stdout.lines().find_map(|l| {
        l.split_once('\t')
            .filter(|(_, r)| *r == wanted)
            .map(|(h, _)| h.to_string())
    }) else {
        return Ok(Refresh::Held(format!("origin has no branch {default}")));
    };
    let head = git.run(&mut git.git(Some(path), &["rev-parse", "--verify", "--quiet", "HEAD"]))?;
    let head = head.success().then(|| head.stdout.trim().to_string());
    if let Some(head) = &head {
        if *head == remote || is_ancestor(git, path, &remote, head)? {
            return Ok(Refresh::UpToDate);
        }
    }
    if cx.noop {
        return Ok(Refresh::Forwarded {
            branch: default,
            from: head,
            to: remote,
        });
    }
    git.checked(
        "fetch",
        &mut git.git(
            Some(path),
            &["fetch", "--quiet", "--no-recurse-submodules", "origin"],
        ),
    )?;
    if let Some(head) = &head {
        if !is_ancestor(git, path, head, &remote)? {
            return Ok(Refresh::Held(format!(
                "{default} has diverged from origin (fast-forward only)"
            )));
        }
    }
    git.checked(
        "merge --ff-only",
        &mut git.git(Some(path), &["merge", "--quiet", "--ff-only", &remote]),
    )?;
    Ok(Refresh::Forwarded {
        branch: default,
        from: head,
        to: remote,
    })
}

/// The remote's default branch: `origin/HEAD` as recorded at clone time, else asked.
fn default_branch(git: &Git<'_>, path: &str) -> anyhow::Result<Option<String>> {
    let local = git.run(&mut git.git(
        Some(path),
        &[
            "symbolic-ref",
            "--quiet",
            "--short",
            "refs/remotes/origin/HEAD",
        ],
    ))?;
    if local.success() {
        if let Some(b) = local.stdout.trim().strip_prefix("origin/") {
            return Ok(Some(b.to_string()));
        }
    }
    // A clone of an empty repository has no origin/HEAD.
    let asked = git.run(&mut git.git(Some(path), &["ls-remote", "--symref", "origin", "HEAD"]))?;
    Ok(asked.stdout.lines().find_map(|line| {
        let (target, name) = line.strip_prefix("ref: ")?.split_once('\t')?;
        (name == "HEAD")
            .then(|| target.strip_prefix("refs/heads/"))
            .flatten()
            .map(str::to_string)
    }))
}

/// Whether commit `a` is an ancestor of (or equal to) `b`; false when `a` is not known here.
fn is_ancestor(git: &Git<'_>, path: &str, a: &str, b: &str) -> anyhow::Result<bool> {
    let known =
        git.run(&mut git.git(Some(path), &["cat-file", "-e", &format!("{a}^{{commit}}")]))?;
    if !known.success() {
        return Ok(false);
    }
    let out = git.run(&mut git.git(Some(path), &["merge-base", "--is-ancestor", a, b]))?;
    match out.code() {
        Some(0) => Ok(true),
        Some(1) => Ok(false),
        _ => {
            git.ensure_success("merge-base", &out)?;
            Ok(false)
        }
    }
}

fn short(commit: Option<&str>) -> &str {
    match commit {
        Some(c) => &c[..c.len().min(12)],
        None => "(unborn)",
    }
}

/// `git config --local --get KEY` in the clone; `None` when unset.
fn get_config(git: &Git<'_>, path: &str, key: &str) -> anyhow::Result<Option<String>> {
    let out = git.run(&mut git.git(Some(path), &["config", "--local", "--get", "--", key]))?;
    match out.code() {
        Some(0) => Ok(Some(
            out.stdout
                .strip_suffix('\n')
                .unwrap_or(&out.stdout)
                .to_string(),
        )),
        Some(1) => Ok(None),
        _ => {
            git.ensure_success("config --get", &out)?;
            Ok(None)
        }
    }
}

fn set_config(git: &Git<'_>, path: &str, key: &str, value: &str) -> anyhow::Result<()> {
    git.checked(
        "config",
        &mut git.git(
            Some(path),
            &["config", "--local", "--replace-all", "--", key, value],
        ),
    )?;
    Ok(())
}

/// For a `file://` source owned by another uid, makes sure the user's `~/.gitconfig` trusts
/// it (see the module docs). Returns whether an entry was missing (and, unless noop, added).
fn ensure_safe_directory(
    cx: &Context<'_>,
    git: &Git<'_>,
    source: &CloneUrl,
    changes: &mut Changes,
) -> anyhow::Result<bool> {
    let Some(repo) = &source.local_path else {
        return Ok(false);
    };
    // git checks the owner of the git dir: the repository itself when bare, else its `.git`.
    let dot_git = format!("{repo}/.git");
    let git_dir = match cx.host.observe_dir(&dot_git) {
        Ok(DirState::Directory(_)) => dot_git,
        _ => repo.clone(),
    };
    match cx.host.observe_dir(&git_dir) {
        Ok(DirState::Directory(inode)) if inode.uid != git.uid => {}
        // Ours, absent or odd: git reports what is wrong better than a guess here.
        _ => return Ok(false),
    }
    let listed =
        git.run(&mut git.git(None, &["config", "--global", "--get-all", "safe.directory"]))?;
    if listed.code() != Some(1) {
        git.ensure_success("config --global --get-all safe.directory", &listed)?;
    }
    if listed
        .stdout
        .lines()
        .any(|entry| entry == git_dir || entry == "*")
    {
        return Ok(false);
    }
    changes.done.push(format!(
        "added safe.directory {git_dir} to the user's ~/.gitconfig (the repository belongs to \
         another user)"
    ));
    if !cx.noop {
        git.checked(
            "config --global --add safe.directory",
            &mut git.git(
                None,
                &["config", "--global", "--add", "safe.directory", &git_dir],
            ),
        )?;
    }
    Ok(true)
}

/// Runs programs as the clone's user (see the module docs).
struct Git<'a> {
    cx: &'a Context<'a>,
    uid: u32,
    gid: u32,
    home: String,
    scheme: Scheme,
}

impl Git<'_> {
    /// `program` as the user: chrooted into the root under `--root`, else with the uid and
    /// gid dropped (std's `Command::uid` also clears the supplementary groups when started as
    /// root). [`command::run`] gives it umask 022, so the clone looks like one the user made.
    fn command(&self, program: &str) -> Command {
        let mut cmd = if self.cx.in_root() {
            let mut cmd = command::command("chroot");
            cmd.arg(format!("--userspec={}:{}", self.uid, self.gid))
                .arg(format!("--groups={}", self.gid))
                .arg(self.cx.host.root())
                .arg(program);
            cmd
        } else {
            let mut cmd = command::command(program);
            cmd.uid(self.uid).gid(self.gid).current_dir("/");
            cmd
        };
        cmd.env("HOME", &self.home)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_TERMINAL_PROMPT", "0");
        cmd
    }

    /// `git [-C DIR] -c ... ARGS`.
    fn git(&self, dir: Option<&str>, args: &[&str]) -> Command {
        let mut cmd = self.command("git");
        if let Some(dir) = dir {
            cmd.args(["-C", dir]);
        }
        cmd.args([
            "-c",
            "core.hooksPath=/dev/null",
            "-c",
            "submodule.recurse=false",
            "-c",
            "protocol.allow=never",
            "-c",
        ])
        .arg(format!("protocol.{}.allow=always", self.scheme.name()))
        .args(args);
        cmd
    }

    fn run(&self, cmd: &mut Command) -> anyhow::Result<Output> {
        let out = command::run(cmd, self.cx.command_timeout)
            .map_err(|e| anyhow::anyhow!("running git as uid {}: {e}", self.uid))?;
        if self.cx.in_root() && matches!(out.code(), Some(126 | 127)) {
            anyhow::bail!(
                "cannot run git in {}: {} (git must be installed in the root)",
                self.cx.host.root().display(),
                command::tail(&out.stderr, 2)
            );
        }
        Ok(out)
    }

    fn ensure_success(&self, what: &str, out: &Output) -> anyhow::Result<()> {
        anyhow::ensure!(
            out.success(),
            "git {what} failed ({}): {}",
            out.status,
            command::tail(&out.stderr, 5)
        );
        Ok(())
    }

    /// Runs it; a non-zero exit fails the resource with git's last words. Returns stdout.
    fn checked(&self, what: &str, cmd: &mut Command) -> anyhow::Result<String> {
        let out = self.run(cmd)?;
        self.ensure_success(what, &out)?;
        Ok(out.stdout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_urls_are_https_or_file_without_credentials() {
        assert_eq!(
            parse_clone_url("https://forgejo.example/team/repo.git").unwrap(),
            CloneUrl {
                scheme: Scheme::Https,
                local_path: None
            }
        );
        assert_eq!(
            parse_clone_url("file:///srv/fixture.git/").unwrap(),
            CloneUrl {
                scheme: Scheme::File,
                local_path: Some("/srv/fixture.git".into())
            }
        );
        for (bad, why) in [
            (
                "ssh://git@forgejo.example/x.git",
                "only https:// and file://",
            ),
            ("git@forgejo.example:x.git", "only https:// and file://"),
            ("http://forgejo.example/x.git", "only https:// and file://"),
            ("/srv/fixture.git", "only https:// and file://"),
            ("ext::sh -c evil", "whitespace"),
            ("https://user:pw@forgejo.example/x", "user info"),
            ("https://token@forgejo.example/x", "user info"),
            ("https:///x", "no host"),
            ("file://otherhost/srv/x.git", "file:///ABSOLUTE"),
            ("file:///srv/../etc/x", "file:///ABSOLUTE"),
            ("file:///srv/x%2e.git", "file:///ABSOLUTE"),
            ("file:///", "file:///ABSOLUTE"),
            ("https://forgejo.example/x\n", "control"),
        ] {
            let err = parse_clone_url(bad).unwrap_err();
            assert!(err.contains(why), "{bad:?}: {err}");
            assert!(!err.contains("pw@") && !err.contains("token@"), "{err}");
        }
    }

    #[test]
    fn remote_urls_may_be_ssh_but_never_carry_passwords() {
        for good in [
            "https://forgejo.example/team/x.git",
            "ssh://git@forgejo.example:2222/team/x.git",
            "git@forgejo.example:team/x.git",
            "forgejo.example:team/x.git",
            "file:///srv/x.git",
        ] {
            assert!(check_remote_url(good).is_ok(), "{good}");
        }
        for bad in [
            "https://user:pw@forgejo.example/x.git",
            "https://token@forgejo.example/x.git",
            "ssh://git:pw@forgejo.example/x.git",
            "git:pw@forgejo.example:x.git",
            "ext::sh -c x",
            "-uevil:x",
            "ftp://forgejo.example/x.git",
            "./relative/path",
            "ssh://",
        ] {
            let err = check_remote_url(bad).expect_err(bad);
            assert!(!err.contains("pw"), "{err}");
        }
    }

    #[test]
    fn config_keys_are_checked_and_credentials_refused() {
        assert!(check_config("filter.git-crypt.required", "true").is_ok());
        assert!(check_config("filter.git-crypt.smudge", "\"git-crypt\" smudge").is_ok());
        assert!(check_config("url.https://forgejo.example/.insteadOf", "fj:").is_ok());
        assert!(check_config("core.autocrlf", "input").is_ok());
        assert!(check_config("url.ssh://git@forgejo.example/.insteadOf", "fj:").is_ok());
        assert!(check_config("url.git@forgejo.example:.pushInsteadOf", "fj:").is_ok());
        for (key, value) in [
            ("nodot", "x"),
            ("-c.x", "x"),
            ("core.", "x"),
            ("core.9x", "x"),
            ("credential.helper", "store"),
            ("http.https://h/.extraHeader", "Authorization: Bearer x"),
            ("http.extraheader", "x"),
            ("remote.origin.url", "https://h/x"),
            ("url.https://u:p@h/.insteadOf", "x"),
            ("x.y", "https://u:p@h/x"),
            ("x.y", "see https://token@h/x"),
            ("url.ssh://git:pw@h/.insteadOf", "x"),
            ("x.y", "a\nb"),
        ] {
            assert!(check_config(key, value).is_err(), "{key} = {value}");
        }
    }

    #[test]
    fn spec_checks_cover_branch_path_and_remote_names() {
        let base = GitCloneSpec {
            path: "/home/alice/src/x".into(),
            url: "https://forgejo.example/x.git".into(),
            user: "alice".into(),
            branch: Some("main".into()),
            config: Default::default(),
            remotes: [(
                "forgejo".to_string(),
                "git@forgejo.example:x.git".to_string(),
            )]
            .into(),
            refresh: true,
            migrate_from: None,
        };
        assert!(check_spec(&base).is_ok());
        let with = |f: &dyn Fn(&mut GitCloneSpec)| {
            let mut s = base.clone();
            f(&mut s);
            check_spec(&s)
        };
        assert!(with(&|s| s.branch = Some("--upload-pack=evil".into())).is_err());
        assert!(with(&|s| s.branch = Some("a..b".into())).is_err());
        assert!(with(&|s| s.path = "/home/alice/../x".into()).is_err());
        assert!(with(&|s| s.path = "/".into()).is_err());
        assert!(with(&|s| {
            s.remotes
                .insert("origin".into(), "https://forgejo.example/y.git".into());
        })
        .is_err());
        assert!(with(&|s| {
            s.remotes
                .insert("-x".into(), "https://forgejo.example/y.git".into());
        })
        .is_err());
    }

    #[test]
    fn remotes_compare_after_trivial_normalisation() {
        for (a, b) in [
            ("file:///srv/fixture.git", "/srv/fixture.git"),
            ("file:///srv/fixture.git", "file:///srv/fixture.git/"),
            ("file:///srv/fixture.git", "file:///srv/fixture"),
            (
                "https://Forgejo.Example/team/x.git",
                "https://forgejo.example/team/x",
            ),
            (
                "https://forgejo.example/team/x/",
                "https://forgejo.example/team/x.git",
            ),
        ] {
            assert!(same_remote(a, b), "{a} {b}");
        }
        for (a, b) in [
            (
                "https://forgejo.example/team/x.git",
                "https://forgejo.example/team/y.git",
            ),
            (
                "https://forgejo.example/Team/x",
                "https://forgejo.example/team/x",
            ),
            ("file:///srv/fixture.git", "file:///srv/other.git"),
            ("https://forgejo.example/x", "ssh://forgejo.example/x"),
        ] {
            assert!(!same_remote(a, b), "{a} {b}");
        }
        assert_eq!(
            other_repository(Some("https://u:p@h/x"), "https://h/y"),
            "is a clone of https://<redacted>, not of https://h/y"
        );
        assert_eq!(
            other_repository(None, "https://h/y"),
            "is a git work tree without an origin remote, not a clone of https://h/y"
        );
    }

    #[test]
    fn migrate_from_is_elsewhere_or_the_direct_parent() {
        assert!(check_migrate_from("/home/a/code/infra", "/home/a/code").is_ok());
        assert!(check_migrate_from("/home/a/code/infra", "/home/a/src/infra").is_ok());
        for (path, from) in [
            ("/home/a/code/infra", "/home/a/code/infra"),
            ("/home/a/code", "/home/a/code/infra"),
            ("/home/a/code/x/infra", "/home/a/code"),
            ("/home/a/code/infra", "/"),
            ("/home/a/code/infra", "/home/a/../code"),
        ] {
            assert!(check_migrate_from(path, from).is_err(), "{path} {from}");
        }
        assert!(is_inside("/home/a/code/infra", "/home/a/code"));
        assert!(!is_inside("/home/a/codex", "/home/a/code"));
        assert!(!is_inside("/home/a/code", "/home/a/code"));
        assert_eq!(
            migration_temp("/home/a/code"),
            "/home/a/.code.steward-migrate"
        );
        assert_eq!(migration_temp("/code"), "/.code.steward-migrate");
    }

    #[test]
    fn redaction_and_paths() {
        assert_eq!(redact("https://u:p@h/x"), "https://<redacted>");
        assert_eq!(redact("u:p@h:x"), "<redacted>");
        assert_eq!(redact("https://h/x"), "https://h/x");
        assert_eq!(parent_of("/home/alice/x"), "/home/alice");
        assert_eq!(parent_of("/x"), "/");
        assert_eq!(short(Some("0123456789abcdef")), "0123456789ab");
        assert_eq!(short(None), "(unborn)");
    }

    #[test]
    fn unchanged_carries_no_notes_and_noop_says_would() {
        let mut c = Changes::default();
        c.notes.push("not refreshed: dirty".into());
        assert_eq!(c.outcome(false), Outcome::Unchanged);
        let c = Changes {
            done: vec!["added remote forgejo".into()],
            diff: vec!["remote forgejo = x".into()],
            corrective: false,
            notes: vec!["not refreshed: dirty".into()],
        };
        assert_eq!(
            c.outcome(true),
            Outcome::Changed {
                message: "would: added remote forgejo; not refreshed: dirty".into(),
                diff: Some("remote forgejo = x".into()),
                corrective: false
            }
        );
    }
}
