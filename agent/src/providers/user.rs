//! The `user` provider: accounts through the root's shadow-utils (`useradd`, `usermod`,
//! `userdel`, given `--root DIR` under `--root`, which chroots into a full Debian root), never
//! by editing passwd files directly. The account database is read through
//! [`Context::accounts`], the lock state from the root's `/etc/shadow` through the host layer
//! (nothing of it goes into a message).
//!
//! - **present** (additive-only, DESIGN §4): a missing account is created with `useradd`:
//!   the pinned uid, a per-user primary group (Debian's `USERGROUPS_ENAB`; an existing group
//!   of the user's name becomes the primary group instead), the supplementary groups, shell,
//!   comment, and a home populated from the root's `/etc/skel` whose mode is set to
//!   `home_mode` (only when the home was created now); then `usermod --lock` when
//!   `lock_at_creation`. An existing account is never re-locked, never unlocked, never loses
//!   a group, its home is never moved or re-moded: only missing supplementary groups are added
//!   and shell and comment are corrected.
//! - **locked** (offboarded, reversible): the password is locked (`usermod --lock`) and the
//!   account expired (`usermod --expiredate 1`). The expiry is what stops SSH key logins: with
//!   `UsePAM yes` sshd accepts a key for an account whose password is merely locked. Nothing is
//!   deleted; `usermod --unlock --expiredate ''` reverses it.
//! - **purged**: the account is locked as above, its home archived with the root's `tar` to
//!   `<archive_dir>/<user>-<UTC timestamp>.tar.gz` (written under a temp name, listed back in
//!   full to verify it, fsynced, 0600 root, renamed into place without replacing anything),
//!   then `userdel` (which refuses while the user has processes), then the home is removed.
//!
//! Every state: a uid pinned in the catalog that differs from passwd fails the resource before
//! anything is changed (THREATS F11), as does a home in passwd that is not the catalog's.
//!
//! Why the root's `tar` binary and not the `tar` crate: GNU tar walks the tree with
//! `openat`/`O_NOFOLLOW` (the home belongs to the user being removed, who may have left
//! symlink traps), keeps owners, modes, hard links and sparse files, resolves owner names in
//! the root's own passwd (run through `chroot` under `--root`), and is what an administrator
//! restores with; streaming a home of many gigabytes needs no new dependency either.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use rustix::fs::{RenameFlags, CWD};
use steward_protocol::{Mode, UserEnsure, UserSpec};

use crate::command;
use crate::engine::{Context, Outcome};
use crate::host::{DirState, FileKind, FileState};
use crate::providers::exec::{root_command, run_tool};

/// Archiving a large home takes longer than an ordinary command.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(3600);

/// A shadow-utils tool (`useradd`, `usermod`, `userdel`, `groupadd`), given `--root DIR`
/// under `--root` so it edits the root's account files, never this machine's.
pub(crate) fn shadow_tool(cx: &Context<'_>, program: &str) -> Command {
    let mut cmd = command::command(program);
    if cx.in_root() {
        cmd.arg("--root").arg(cx.host.root());
    }
    cmd
}

/// An existing account, as passwd, group and shadow describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Account {
    uid: u32,
    home: String,
    shell: String,
    comment: String,
    /// Groups the account is in (supplementary, plus the primary group when the catalog
    /// names it).
    groups: BTreeSet<String>,
    /// The password field starts with `!`.
    locked: bool,
    /// The account's expiry date has passed.
    expired: bool,
}

/// What is at the catalog's home path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Home {
    Absent,
    Directory { uid: u32 },
    Other(FileKind),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Observed {
    account: Option<Account>,
    home: Home,
}

/// What has to happen to the account.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Nothing,
    /// `useradd`; the home exists already (it is then left as it is).
    Create {
        home_exists: bool,
    },
    /// `usermod`: `(from, to)` for shell and comment; groups to add.
    Update {
        shell: Option<(String, String)>,
        comment: Option<(String, String)>,
        add_groups: Vec<String>,
    },
    /// `usermod --lock` and/or `--expiredate 1`.
    Lock(LockSteps),
    /// Lock (if needed), archive the home (if there is one), `userdel`, remove the home.
    Purge {
        lock: Option<LockSteps>,
        archive_home: bool,
    },
}

/// What locking an account still needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LockSteps {
    /// `usermod --lock`: the password field gets its `!`.
    password: bool,
    /// `usermod --expiredate 1`: no login of any kind, SSH keys included.
    expire: bool,
}

impl LockSteps {
    /// What is missing on `account`, or `None` when it is locked and expired already.
    fn missing(account: &Account) -> Option<LockSteps> {
        let steps = LockSteps {
            password: !account.locked,
            expire: !account.expired,
        };
        (steps.password || steps.expire).then_some(steps)
    }

    fn describe(self) -> &'static str {
        match (self.password, self.expire) {
            (true, true) => "password locked, account expired",
            (true, false) => "password locked",
            _ => "account expired",
        }
    }
}

/// Converges one `user` resource.
pub fn apply(spec: &UserSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    converge(spec, cx).with_context(|| format!("user {}", spec.name))
}

fn converge(spec: &UserSpec, cx: &Context<'_>) -> anyhow::Result<Outcome> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .context("the clock is before 1970")?
        .as_secs();
    let have = observe(spec, cx, now / 86_400)?;
    match diff(spec, &have).map_err(anyhow::Error::msg)? {
        Plan::Nothing => Ok(Outcome::Unchanged),
        Plan::Create { home_exists } => create(spec, cx, home_exists),
        Plan::Update {
            shell,
            comment,
            add_groups,
        } => update(spec, cx, shell, comment, add_groups),
        Plan::Lock(steps) => {
            let message = format!("locked user {} ({})", spec.name, steps.describe());
            if !cx.noop {
                lock(spec, cx, steps)?;
            }
            Ok(Outcome::changed(message))
        }
        Plan::Purge { lock, archive_home } => {
            let UserEnsure::Purged { archive_dir, .. } = &spec.ensure else {
                unreachable!("a purge is only planned for ensure: purged");
            };
            purge(spec, cx, archive_dir, lock, archive_home, now)
        }
    }
}

fn observe(spec: &UserSpec, cx: &Context<'_>, today: u64) -> anyhow::Result<Observed> {
    let account = {
        let accounts = cx.accounts().context("reading the root's accounts")?;
        accounts.user(&spec.name).map(|p| {
            let mut groups: BTreeSet<String> = accounts
                .supplementary_groups(&spec.name)
                .into_iter()
                .map(str::to_string)
                .collect();
            groups.extend(
                spec.groups
                    .iter()
                    .filter(|g| accounts.group(g).is_some_and(|g| g.gid == p.gid))
                    .cloned(),
            );
            Account {
                uid: p.uid,
                home: p.home.clone(),
                shell: p.shell.clone(),
                comment: p.comment.clone(),
                groups,
                locked: false,
                expired: false,
            }
        })
    };
    let account = match account {
        Some(mut account) => {
            let shadow = match cx
                .host
                .observe_file("/etc/shadow")
                .context("reading /etc/shadow")?
            {
                FileState::Regular(f) => f.content.unwrap_or_default(),
                _ => Vec::new(),
            };
            (account.locked, account.expired) =
                shadow_flags(&String::from_utf8_lossy(&shadow), &spec.name, today);
            Some(account)
        }
        None => None,
    };
    let home = match cx
        .host
        .observe_dir(&spec.home)
        .with_context(|| format!("checking the home {}", spec.home))?
    {
        DirState::Absent => Home::Absent,
        DirState::Directory(inode) => Home::Directory { uid: inode.uid },
        DirState::Other(kind) => Home::Other(kind),
    };
    Ok(Observed { account, home })
}

/// Lock state of `name` in shadow text: (password locked, account expired as of `today`, in
/// days since the epoch).
fn shadow_flags(shadow: &str, name: &str, today: u64) -> (bool, bool) {
    shadow
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 8 && f[0] == name)
        .map_or((false, false), |f| {
            let expired = f[7].parse::<u64>().is_ok_and(|day| day <= today);
            (f[1].starts_with('!'), expired)
        })
}

/// The pure decision.
fn diff(spec: &UserSpec, have: &Observed) -> Result<Plan, String> {
    let Some(account) = &have.account else {
        return match spec.ensure {
            UserEnsure::Present => match have.home {
                Home::Absent => Ok(Plan::Create { home_exists: false }),
                Home::Directory { .. } => Ok(Plan::Create { home_exists: true }),
                // A symlink there would make a hostile path the account's home (F6).
                Home::Other(kind) => Err(format!(
                    "the home {} is a {kind}, not a directory; the account was not created",
                    spec.home
                )),
            },
            // Nothing to lock or remove.
            UserEnsure::Locked | UserEnsure::Purged { .. } => Ok(Plan::Nothing),
        };
    };
    if let Some(want) = spec.uid {
        if want != account.uid {
            return Err(format!(
                "uid mismatch: passwd has {}, catalog wants {want}; nothing changed",
                account.uid
            ));
        }
    }
    let home_matches = || {
        if account.home == spec.home {
            Ok(())
        } else {
            Err(format!(
                "home mismatch: passwd has {}, catalog wants {}; nothing changed (a home is \
                 never moved)",
                account.home, spec.home
            ))
        }
    };
    match &spec.ensure {
        UserEnsure::Present => {
            home_matches()?;
            let shell =
                (account.shell != spec.shell).then(|| (account.shell.clone(), spec.shell.clone()));
            let comment = spec
                .comment
                .as_ref()
                .filter(|c| **c != account.comment)
                .map(|c| (account.comment.clone(), c.clone()));
            let mut add_groups: Vec<String> = spec
                .groups
                .iter()
                .filter(|g| !account.groups.contains(*g))
                .cloned()
                .collect();
            add_groups.dedup();
            if shell.is_none() && comment.is_none() && add_groups.is_empty() {
                Ok(Plan::Nothing)
            } else {
                Ok(Plan::Update {
                    shell,
                    comment,
                    add_groups,
                })
            }
        }
        UserEnsure::Locked => Ok(LockSteps::missing(account).map_or(Plan::Nothing, Plan::Lock)),
        UserEnsure::Purged { .. } => {
            home_matches()?;
            if Path::new(&spec.home).components().count() < 3 {
                return Err(format!(
                    "refusing to purge: the home {} is not below a directory such as /home",
                    spec.home
                ));
            }
            let archive_home = match have.home {
                Home::Absent => false,
                Home::Directory { uid } if uid == account.uid => true,
                Home::Directory { uid } => {
                    return Err(format!(
                        "refusing to purge: the home {} is owned by uid {uid}, not by the \
                         user (uid {}); nothing changed",
                        spec.home, account.uid
                    ))
                }
                Home::Other(kind) => {
                    return Err(format!(
                        "refusing to purge: the home {} is a {kind}, not a directory; \
                         nothing changed",
                        spec.home
                    ))
                }
            };
            Ok(Plan::Purge {
                lock: LockSteps::missing(account),
                archive_home,
            })
        }
    }
}

fn create(spec: &UserSpec, cx: &Context<'_>, home_exists: bool) -> anyhow::Result<Outcome> {
    let diff = Some(creation_diff(spec, home_exists));
    let outcome = |uid: Option<u32>| Outcome::Changed {
        message: created_message(spec, uid, home_exists),
        diff: diff.clone(),
        corrective: false,
    };
    if cx.noop {
        return Ok(outcome(spec.uid));
    }
    let own_group = {
        let accounts = cx.accounts()?;
        let missing: Vec<&str> = spec
            .groups
            .iter()
            .filter(|g| accounts.group(g).is_none())
            .map(String::as_str)
            .collect();
        anyhow::ensure!(
            missing.is_empty(),
            "supplementary group(s) {} do not exist; the account was not created",
            missing.join(", ")
        );
        accounts.group(&spec.name).is_some()
    };
    let result = run_tool(
        "useradd",
        shadow_tool(cx, "useradd").args(useradd_args(spec, own_group)),
        cx.command_timeout,
    );
    cx.accounts_changed();
    result?;
    if spec.lock_at_creation {
        let result = run_tool(
            "usermod --lock",
            shadow_tool(cx, "usermod").args(["--lock", "--", &spec.name]),
            cx.command_timeout,
        );
        cx.accounts_changed();
        result.context("the account was created but could not be locked")?;
    }
    let (uid, gid) = {
        let accounts = cx.accounts()?;
        let p = accounts
            .user(&spec.name)
            .ok_or_else(|| anyhow!("useradd succeeded but the account is missing"))?;
        (p.uid, p.gid)
    };
    if !home_exists {
        // useradd made the home (with HOME_MODE); make sure of the mode through the fd.
        match cx.host.observe_dir(&spec.home)? {
            DirState::Directory(inode) if inode.mode == spec.home_mode && inode.uid == uid => {}
            DirState::Directory(_) => cx
                .host
                .set_mode_owner(&spec.home, spec.home_mode, uid, gid)
                .context("setting the new home's mode")?,
            other => bail!("useradd did not create the home {}: {other:?}", spec.home),
        }
    }
    Ok(outcome(Some(uid)))
}

fn useradd_args(spec: &UserSpec, own_group_exists: bool) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    if let Some(uid) = spec.uid {
        args.extend(["--uid".into(), uid.to_string()]);
    }
    // The skeleton is the root's: useradd --root chroots before reading it.
    args.extend([
        "--create-home".into(),
        "--skel".into(),
        "/etc/skel".into(),
        "--key".into(),
        format!("HOME_MODE={}", spec.home_mode),
        "--home-dir".into(),
        spec.home.clone(),
        "--shell".into(),
        spec.shell.clone(),
    ]);
    if let Some(comment) = &spec.comment {
        args.extend(["--comment".into(), comment.clone()]);
    }
    if !spec.groups.is_empty() {
        args.extend(["--groups".into(), spec.groups.join(",")]);
    }
    if own_group_exists {
        // `--user-group` would fail; the existing group of that name becomes the primary one.
        args.extend(["--gid".into(), spec.name.clone()]);
    } else {
        args.push("--user-group".into());
    }
    args.extend(["--".into(), spec.name.clone()]);
    args
}

fn created_message(spec: &UserSpec, uid: Option<u32>, home_exists: bool) -> String {
    let mut message = match uid {
        Some(uid) => format!("created user {} (uid {uid})", spec.name),
        None => format!("created user {}", spec.name),
    };
    if home_exists {
        message.push_str(&format!(
            "; the existing home {} was left as it is",
            spec.home
        ));
    }
    message
}

fn creation_diff(spec: &UserSpec, home_exists: bool) -> String {
    let mut lines = vec![
        format!("shell: {}", spec.shell),
        if home_exists {
            format!("home: {} (existing, untouched)", spec.home)
        } else {
            format!(
                "home: {} (mode {}, from /etc/skel)",
                spec.home, spec.home_mode
            )
        },
    ];
    if !spec.groups.is_empty() {
        lines.push(format!("groups: {}", spec.groups.join(", ")));
    }
    if spec.lock_at_creation {
        lines.push("password: locked".to_string());
    }
    lines.join("\n")
}

fn update(
    spec: &UserSpec,
    cx: &Context<'_>,
    shell: Option<(String, String)>,
    comment: Option<(String, String)>,
    add_groups: Vec<String>,
) -> anyhow::Result<Outcome> {
    let mut what = Vec::new();
    let mut lines = Vec::new();
    let mut args: Vec<String> = Vec::new();
    if let Some((from, to)) = &shell {
        what.push("shell".to_string());
        lines.push(format!("shell: {from} -> {to}"));
        args.extend(["--shell".into(), to.clone()]);
    }
    if let Some((from, to)) = &comment {
        what.push("comment".to_string());
        lines.push(format!("comment: {from:?} -> {to:?}"));
        args.extend(["--comment".into(), to.clone()]);
    }
    if !add_groups.is_empty() {
        what.push(format!("groups +{}", add_groups.join(" +")));
        lines.push(format!("groups: +{}", add_groups.join(", +")));
        args.extend(["--append".into(), "--groups".into(), add_groups.join(",")]);
    }
    args.extend(["--".into(), spec.name.clone()]);
    let outcome = Outcome::Changed {
        message: format!("updated user {}: {}", spec.name, what.join(", ")),
        diff: Some(lines.join("\n")),
        // Shell and comment are drift; a group to add is usually a new catalog.
        corrective: shell.is_some() || comment.is_some(),
    };
    if cx.noop {
        return Ok(outcome);
    }
    {
        let accounts = cx.accounts()?;
        let missing: Vec<&str> = add_groups
            .iter()
            .filter(|g| accounts.group(g).is_none())
            .map(String::as_str)
            .collect();
        anyhow::ensure!(
            missing.is_empty(),
            "supplementary group(s) {} do not exist; nothing changed",
            missing.join(", ")
        );
    }
    let result = run_tool(
        "usermod",
        shadow_tool(cx, "usermod").args(&args),
        cx.command_timeout,
    );
    cx.accounts_changed();
    result?;
    Ok(outcome)
}

fn lock(spec: &UserSpec, cx: &Context<'_>, steps: LockSteps) -> anyhow::Result<()> {
    let mut args = Vec::new();
    if steps.password {
        args.push("--lock");
    }
    if steps.expire {
        args.extend(["--expiredate", "1"]);
    }
    args.extend(["--", &spec.name]);
    let result = run_tool(
        "usermod",
        shadow_tool(cx, "usermod").args(args),
        cx.command_timeout,
    );
    cx.accounts_changed();
    result.map(drop)
}

fn purge(
    spec: &UserSpec,
    cx: &Context<'_>,
    archive_dir: &str,
    lock_first: Option<LockSteps>,
    archive_home: bool,
    now: u64,
) -> anyhow::Result<Outcome> {
    let archive_name = format!("{}-{}.tar.gz", spec.name, utc_stamp(now));
    let archive = join(archive_dir, &archive_name);
    let message = if archive_home {
        format!(
            "archived {} to {archive} and removed user {}",
            spec.home, spec.name
        )
    } else {
        format!("removed user {} (no home to archive)", spec.name)
    };
    if cx.noop {
        return Ok(Outcome::changed(message));
    }
    if let Some(steps) = lock_first {
        // No new logins while the home is archived.
        lock(spec, cx, steps)?;
    }
    if archive_home {
        refuse_mounts_beneath(cx, &spec.home)?;
        ensure_archive_dir(cx, archive_dir)?;
        write_archive(cx, &spec.home, archive_dir, &archive_name)?;
    }
    let result = run_tool(
        "userdel",
        shadow_tool(cx, "userdel").args(["--", &spec.name]),
        cx.command_timeout,
    );
    cx.accounts_changed();
    result.with_context(|| {
        if archive_home {
            format!("the home was archived to {archive} and left in place")
        } else {
            "nothing was removed".to_string()
        }
    })?;
    if archive_home {
        // std's remove_dir_all walks with openat/unlinkat and never follows a symlink; the
        // home itself was checked to be a real directory owned by the user.
        std::fs::remove_dir_all(host_path(cx, &spec.home)).with_context(|| {
            format!(
                "the account was removed and the home archived to {archive}, but removing {} \
                 failed",
                spec.home
            )
        })?;
    }
    Ok(Outcome::changed(message))
}

/// Refuses when anything is mounted at or beneath the home: neither the archive nor the
/// removal may cross into another file system.
fn refuse_mounts_beneath(cx: &Context<'_>, home: &str) -> anyhow::Result<()> {
    let root = std::fs::canonicalize(cx.host.root())
        .with_context(|| format!("resolving the root {}", cx.host.root().display()))?;
    let host_home = root.join(home.trim_start_matches('/'));
    let mountinfo =
        std::fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    let mounts = mounts_beneath(&mountinfo, &host_home);
    if mounts.is_empty() {
        return Ok(());
    }
    let shown: Vec<String> = mounts
        .iter()
        .map(|m| {
            let inside = m.strip_prefix(&root).unwrap_or(m);
            format!("/{}", inside.display())
        })
        .collect();
    bail!(
        "refusing to purge: file systems are mounted at or beneath the home ({}); unmount them \
         first",
        shown.join(", ")
    )
}

/// Mount points in `/proc/self/mountinfo` text at or beneath `dir`.
fn mounts_beneath(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_octal(field)))
        .filter(|mount| mount.starts_with(dir))
        .collect()
}

/// Undoes the kernel's `\ooo` escapes (spaces, tabs, newlines, backslashes) in `/proc` files.
pub(crate) fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(&[b'\\', a, b, c]) = bytes.get(i..i + 4) {
            let octal = |d: u8| (b'0'..=b'7').contains(&d);
            if (b'0'..=b'3').contains(&a) && octal(b) && octal(c) {
                out.push((a - b'0') * 64 + (b - b'0') * 8 + (c - b'0'));
                i += 4;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates the archive directory and any missing parent (0700 root); an existing archive
/// directory must be root's and writable by nobody else, as archives are written into it by
/// path.
fn ensure_archive_dir(cx: &Context<'_>, dir: &str) -> anyhow::Result<()> {
    let mut prefix = String::new();
    for component in dir.split('/').filter(|c| !c.is_empty()) {
        prefix.push('/');
        prefix.push_str(component);
        match cx.host.observe_dir(&prefix)? {
            DirState::Directory(_) => {}
            DirState::Absent => cx.host.ensure_dir(&prefix, Mode(0o700), 0, 0)?,
            DirState::Other(kind) => bail!("{prefix} is a {kind}, not a directory"),
        }
    }
    match cx.host.observe_dir(dir)? {
        DirState::Directory(inode) if archive_dir_is_safe(inode.uid, inode.mode) => Ok(()),
        DirState::Directory(inode) => bail!(
            "the archive directory {dir} must be owned by root and writable by nobody else \
             (it is uid {}, mode {}); nothing changed",
            inode.uid,
            inode.mode
        ),
        other => bail!("the archive directory {dir} is not a directory: {other:?}"),
    }
}

fn archive_dir_is_safe(uid: u32, mode: Mode) -> bool {
    uid == 0 && mode.0 & 0o022 == 0
}

/// Archives `home` as `archive_dir/name`: tar to a temp name, list it back, 0600 root, fsync,
/// rename without replacing, fsync the directory. On failure the temp file is removed.
fn write_archive(
    cx: &Context<'_>,
    home: &str,
    archive_dir: &str,
    name: &str,
) -> anyhow::Result<()> {
    let (parent, base) = home
        .rsplit_once('/')
        .map(|(p, b)| (if p.is_empty() { "/" } else { p }, b))
        .ok_or_else(|| anyhow!("{home} is not an absolute path"))?;
    let temp = join(archive_dir, &format!(".{name}.steward-tmp"));
    let target = join(archive_dir, name);
    let result = (|| -> anyhow::Result<()> {
        // tar exits 1 when a file changed while it was read: an archive that may be
        // inconsistent is not good enough to delete the home after.
        run_tool(
            "tar --create",
            root_command(cx, "tar").args([
                "--create",
                "--gzip",
                "--sparse",
                "--one-file-system",
                &format!("--file={temp}"),
                &format!("--directory={parent}"),
                "--",
                base,
            ]),
            ARCHIVE_TIMEOUT.max(cx.command_timeout),
        )
        .context("archiving the home")?;
        let listing = run_tool(
            "tar --list",
            root_command(cx, "tar").args(["--list", "--gzip", &format!("--file={temp}")]),
            ARCHIVE_TIMEOUT.max(cx.command_timeout),
        )
        .context("verifying the archive")?;
        anyhow::ensure!(
            listing.stdout.lines().next() == Some(&format!("{base}/")),
            "verifying the archive: it does not start with the home directory"
        );
        cx.host.set_mode_owner(&temp, Mode(0o600), 0, 0)?;
        File::open(host_path(cx, &temp))
            .and_then(|f| f.sync_all())
            .context("syncing the archive")?;
        rustix::fs::renameat_with(
            CWD,
            host_path(cx, &temp),
            CWD,
            host_path(cx, &target),
            RenameFlags::NOREPLACE,
        )
        .with_context(|| format!("renaming the archive to {target}"))?;
        File::open(host_path(cx, archive_dir))
            .and_then(|d| d.sync_all())
            .context("syncing the archive directory")?;
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(host_path(cx, &temp));
    }
    result.with_context(|| format!("nothing was removed; archive {target} not written"))
}

/// `dir/name` for an absolute `dir`.
fn join(dir: &str, name: &str) -> String {
    format!("{}/{name}", dir.trim_end_matches('/'))
}

/// `path` (absolute in the root) on this machine. Only for the root-owned archive directory
/// and the removal of a checked home; everything else goes through the host layer.
fn host_path(cx: &Context<'_>, path: &str) -> PathBuf {
    cx.host.root().join(path.trim_start_matches('/'))
}

/// `YYYYMMDDTHHMMSSZ` for `secs` since the epoch.
fn utc_stamp(secs: u64) -> String {
    let days = i64::try_from(secs / 86_400).unwrap_or(i64::MAX / 2);
    let rest = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Proleptic Gregorian date of a day number (days since 1970-01-01), after Howard Hinnant's
/// `civil_from_days`.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month as u32, day as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(ensure: UserEnsure) -> UserSpec {
        UserSpec {
            name: "emo".into(),
            uid: Some(1001),
            shell: "/bin/bash".into(),
            home: "/home/emo".into(),
            home_mode: Mode(0o700),
            groups: vec!["devs".into(), "docker".into()],
            comment: Some("Emo Person".into()),
            lock_at_creation: true,
            ensure,
            privileged_groups: Vec::new(),
            revoke_groups: Vec::new(),
            enforce: Vec::new(),
            tier: None,
        }
    }

    fn account() -> Account {
        Account {
            uid: 1001,
            home: "/home/emo".into(),
            shell: "/bin/bash".into(),
            comment: "Emo Person".into(),
            groups: ["devs", "docker", "extra"]
                .into_iter()
                .map(String::from)
                .collect(),
            locked: true,
            expired: false,
        }
    }

    fn observed(account: Option<Account>, home: Home) -> Observed {
        Observed { account, home }
    }

    fn purged() -> UserEnsure {
        UserEnsure::Purged {
            archive_dir: "/var/backups/steward/offboarded".into(),
            terminate_sessions: true,
        }
    }

    #[test]
    fn a_missing_account_is_created_only_when_present() {
        let s = spec(UserEnsure::Present);
        assert_eq!(
            diff(&s, &observed(None, Home::Absent)),
            Ok(Plan::Create { home_exists: false })
        );
        assert_eq!(
            diff(&s, &observed(None, Home::Directory { uid: 0 })),
            Ok(Plan::Create { home_exists: true })
        );
        assert_eq!(
            diff(&spec(UserEnsure::Locked), &observed(None, Home::Absent)),
            Ok(Plan::Nothing)
        );
        assert_eq!(
            diff(&spec(purged()), &observed(None, Home::Absent)),
            Ok(Plan::Nothing)
        );
        let err = diff(&s, &observed(None, Home::Other(FileKind::Symlink))).unwrap_err();
        assert_eq!(
            err,
            "the home /home/emo is a symlink, not a directory; the account was not created"
        );
    }

    #[test]
    fn an_account_as_wanted_is_left_alone_and_extra_groups_and_locks_are_kept() {
        let mut have = account();
        assert_eq!(
            diff(
                &spec(UserEnsure::Present),
                &observed(Some(have.clone()), Home::Directory { uid: 1001 })
            ),
            Ok(Plan::Nothing)
        );
        // Unlocked since creation: never re-locked.
        have.locked = false;
        assert_eq!(
            diff(
                &spec(UserEnsure::Present),
                &observed(Some(have), Home::Absent)
            ),
            Ok(Plan::Nothing)
        );
    }

    #[test]
    fn drift_in_shell_comment_and_missing_groups_is_an_update() {
        let mut have = account();
        have.shell = "/bin/sh".into();
        have.comment = "Old".into();
        have.groups.remove("docker");
        let plan = diff(
            &spec(UserEnsure::Present),
            &observed(Some(have.clone()), Home::Absent),
        );
        assert_eq!(
            plan,
            Ok(Plan::Update {
                shell: Some(("/bin/sh".into(), "/bin/bash".into())),
                comment: Some(("Old".into(), "Emo Person".into())),
                add_groups: vec!["docker".into()],
            })
        );
        // No comment in the catalog: the existing one stays.
        let mut s = spec(UserEnsure::Present);
        s.comment = None;
        have.shell = "/bin/bash".into();
        assert_eq!(
            diff(&s, &observed(Some(have), Home::Absent)),
            Ok(Plan::Update {
                shell: None,
                comment: None,
                add_groups: vec!["docker".into()],
            })
        );
    }

    #[test]
    fn a_uid_mismatch_fails_in_every_state() {
        let mut have = account();
        have.uid = 1002;
        for ensure in [UserEnsure::Present, UserEnsure::Locked, purged()] {
            let err = diff(
                &spec(ensure),
                &observed(Some(have.clone()), Home::Directory { uid: 1002 }),
            )
            .unwrap_err();
            assert_eq!(
                err,
                "uid mismatch: passwd has 1002, catalog wants 1001; nothing changed"
            );
        }
        // No uid in the catalog (offboarding): no check.
        let mut s = spec(UserEnsure::Locked);
        s.uid = None;
        assert_eq!(
            diff(&s, &observed(Some(have), Home::Absent)),
            Ok(Plan::Lock(LockSteps {
                password: false,
                expire: true
            }))
        );
    }

    #[test]
    fn a_home_elsewhere_fails_instead_of_being_moved() {
        let mut have = account();
        have.home = "/srv/emo".into();
        let err = diff(
            &spec(UserEnsure::Present),
            &observed(Some(have), Home::Absent),
        )
        .unwrap_err();
        assert!(
            err.starts_with("home mismatch: passwd has /srv/emo"),
            "{err}"
        );
    }

    #[test]
    fn locking_does_only_what_is_missing() {
        let mut have = account();
        have.locked = false;
        let s = spec(UserEnsure::Locked);
        assert_eq!(
            diff(&s, &observed(Some(have.clone()), Home::Absent)),
            Ok(Plan::Lock(LockSteps {
                password: true,
                expire: true
            }))
        );
        have.locked = true;
        have.expired = true;
        assert_eq!(
            diff(&s, &observed(Some(have), Home::Absent)),
            Ok(Plan::Nothing)
        );
    }

    #[test]
    fn purging_archives_only_a_real_home_owned_by_the_user() {
        let s = spec(purged());
        let mut have = account();
        have.expired = true;
        assert_eq!(
            diff(
                &s,
                &observed(Some(have.clone()), Home::Directory { uid: 1001 })
            ),
            Ok(Plan::Purge {
                lock: None,
                archive_home: true
            })
        );
        assert_eq!(
            diff(&s, &observed(Some(have.clone()), Home::Absent)),
            Ok(Plan::Purge {
                lock: None,
                archive_home: false
            })
        );
        let err = diff(
            &s,
            &observed(Some(have.clone()), Home::Directory { uid: 0 }),
        )
        .unwrap_err();
        assert!(err.contains("owned by uid 0"), "{err}");
        let err = diff(
            &s,
            &observed(Some(have.clone()), Home::Other(FileKind::Symlink)),
        )
        .unwrap_err();
        assert!(err.contains("is a symlink"), "{err}");
        have.home = "/emo".into();
        let mut shallow = spec(purged());
        shallow.home = "/emo".into();
        let err = diff(&shallow, &observed(Some(have), Home::Absent)).unwrap_err();
        assert!(err.contains("not below a directory"), "{err}");
    }

    #[test]
    fn shadow_flags_read_the_lock_and_the_expiry() {
        let shadow = "root:*:19000:0:99999:7:::\n\
                      emo:!$y$hash:20000:0:99999:7:::\n\
                      ana:$y$hash:20000:0:99999:7::1:\n\
                      bob:$y$hash:20000:0:99999:7::30000:\n";
        assert_eq!(shadow_flags(shadow, "emo", 20779), (true, false));
        assert_eq!(shadow_flags(shadow, "ana", 20779), (false, true));
        assert_eq!(shadow_flags(shadow, "bob", 20779), (false, false));
        assert_eq!(shadow_flags(shadow, "nobody", 20779), (false, false));
    }

    #[test]
    fn useradd_arguments() {
        let s = spec(UserEnsure::Present);
        assert_eq!(
            useradd_args(&s, false),
            [
                "--uid",
                "1001",
                "--create-home",
                "--skel",
                "/etc/skel",
                "--key",
                "HOME_MODE=0700",
                "--home-dir",
                "/home/emo",
                "--shell",
                "/bin/bash",
                "--comment",
                "Emo Person",
                "--groups",
                "devs,docker",
                "--user-group",
                "--",
                "emo",
            ]
        );
        let args = useradd_args(&s, true);
        assert_eq!(&args[args.len() - 4..], ["--gid", "emo", "--", "emo"]);
    }

    #[test]
    fn mounts_beneath_a_home_are_found_with_escapes() {
        let mountinfo = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                         40 22 0:40 / /home/emo/my\\040mnt rw - tmpfs tmpfs rw\n\
                         41 22 0:41 / /home/emo2 rw - tmpfs tmpfs rw\n";
        assert_eq!(
            mounts_beneath(mountinfo, Path::new("/home/emo")),
            [PathBuf::from("/home/emo/my mnt")]
        );
        assert!(mounts_beneath(mountinfo, Path::new("/home/ana")).is_empty());
    }

    #[test]
    fn archive_names_use_a_utc_timestamp() {
        assert_eq!(utc_stamp(0), "19700101T000000Z");
        assert_eq!(utc_stamp(1_700_000_000), "20231114T221320Z");
        assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
        assert_eq!(
            join("/var/backups/x/", "a.tar.gz"),
            "/var/backups/x/a.tar.gz"
        );
    }

    #[test]
    fn only_a_root_owned_archive_dir_closed_to_others_is_used() {
        assert!(archive_dir_is_safe(0, Mode(0o700)));
        assert!(archive_dir_is_safe(0, Mode(0o755)));
        assert!(!archive_dir_is_safe(0, Mode(0o1777)));
        assert!(!archive_dir_is_safe(1000, Mode(0o700)));
    }
}
