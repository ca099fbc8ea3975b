//! The `user` provider: accounts through the root's shadow-utils (`useradd`, `usermod`,
//! `gpasswd`, `userdel`, given `--root DIR` under `--root`, which chroots into a full Debian
//! root), never by editing passwd files directly. The account database is read through
//! [`Context::accounts`], the lock state and expiry from the root's `/etc/shadow` through the
//! host layer (nothing of it goes into a message but the expiry day).
//!
//! **Enforced vs creation-only** (DESIGN §4, additive-only; issue 11 "don't break emo"):
//!
//! | attribute | at creation | on an existing account |
//! |---|---|---|
//! | uid, home path | set | checked: a mismatch fails the resource, nothing changed |
//! | shell, comment | set | corrected only when `enforce` lists them; else left as found, reported `kept` |
//! | home mode, password lock | set (`home_mode`, `lock_at_creation`) | never touched |
//! | groups, privileged groups | set | missing ones added; none ever removed... |
//! | `revoke_groups` | — | ...except these, removed when held (the audited way to tighten) |
//!
//! - **present**: a missing account is created with `useradd`: the pinned uid, a per-user
//!   primary group (Debian's `USERGROUPS_ENAB`; an existing group of the user's name becomes
//!   the primary group instead), the supplementary and privileged groups, shell, comment, and
//!   a home populated from the root's `/etc/skel` whose mode is set to `home_mode` (only when
//!   the home was created now); then `usermod --lock` when `lock_at_creation`. An existing
//!   account is never re-locked, never loses a group it was not told to lose, its home is
//!   never moved or re-moded. A differing shell or comment that is not enforced is the
//!   outcome `kept` ("shell /bin/bash kept (catalog: /bin/zsh; not enforced)") when nothing
//!   else changes, and is named in the message of a change otherwise.
//! - **privileged groups** (THREATS S5, defence in depth behind the compiler): `groups` may
//!   not hold a group of [`steward_protocol::PRIVILEGED_GROUPS`] (the resource fails, nothing
//!   changed); those come only from the tier, in `privileged_groups`, and are added like
//!   groups. Privileged groups a present account holds beyond `privileged_groups` (and not
//!   being revoked in this run) are reported as **drift** on the event ("holds privileged
//!   groups docker, sudo beyond what tier namespace-owner grants (revoke with
//!   revoke_groups)"); drift never changes anything.
//! - **revoke_groups**: each listed group the account holds is left with `gpasswd --delete`,
//!   reported as a change ("groups -sudo (revoke_groups)"), not as drift repair. Nothing else
//!   is ever removed. A group both granted and revoked fails the resource.
//! - **locked** (offboarded, reversible): the password is locked (`usermod --lock`) and the
//!   account expired (`usermod --expiredate 1`). The expiry is what stops SSH key logins: with
//!   `UsePAM yes` sshd accepts a key for an account whose password is merely locked. Nothing is
//!   deleted. Before locking, the **account record** ([`record`],
//!   `/var/lib/steward/accounts/<user>.json` beneath the root, 0600 root) is written: whether
//!   Steward locked the password (it was not locked before) and the expiry field as it was.
//! - **back to present**: when an account record exists, exactly what Steward did is
//!   reversed: `usermod --unlock` only if Steward locked the password, the expiry field set
//!   back to what it was (`--expiredate ''` when it was empty), then the record is removed
//!   ("restored user emo after offboarding (password unlocked, expiry cleared)"). The shadow
//!   line is then byte-identical to before the offboarding. Debian's `useradd` leaves the
//!   password `!`; `usermod --lock` leaves a `!`-prefixed field as it is, and `usermod
//!   --unlock` refuses to turn `!` into an empty (passwordless) field (it warns and exits 0),
//!   so an account created with `lock_at_creation` is recorded as "password not locked by
//!   Steward" and never unlocked. A password that was empty before is never restored as empty:
//!   the message says it stays locked. A present account that is expired (or, when the catalog
//!   does not lock at creation, password-locked) with no record was locked by someone else: it
//!   is left as found and reported `kept` with the reason.
//! - **purged**: the account is locked as above (record first), then, if the user has
//!   processes on the root ([`crate::sessions::processes`]): with `terminate_sessions` their
//!   sessions are ended ([`crate::sessions::terminate_user`]: `loginctl terminate-user` when
//!   systemd runs, SIGTERM, 10 s, SIGKILL) and anything left fails the resource; without it
//!   the purge is **deferred** ("purge deferred: emo has 2 processes (zsh, sleep); the site
//!   does not terminate sessions") and nothing is archived. Then the home is archived with the
//!   root's `tar` to `<archive_dir>/<user>-<UTC timestamp>.tar.gz` (written under a temp name,
//!   listed back in full to verify it, fsynced, 0600 root, renamed into place without
//!   replacing anything), `userdel`, the home removed, the record removed. **Archive once**:
//!   the archive's path goes into the record before it is written; a later run (after
//!   `userdel` or the home's removal failed) reuses that archive when it exists and never
//!   writes a second archive of the same home, and finishes the removal of a home whose
//!   account is already gone.
//!
//! Every state: a uid pinned in the catalog that differs from passwd fails the resource before
//! anything is changed (THREATS F11), as does a home in passwd that is not the catalog's.
//!
//! Why the root's `tar` binary and not the `tar` crate: GNU tar walks the tree with
//! `openat`/`O_NOFOLLOW` (the home belongs to the user being removed, who may have left
//! symlink traps), keeps owners, modes, hard links and sparse files, resolves owner names in
//! the root's own passwd (run through `chroot` under `--root`), and is what an administrator
//! restores with; streaming a home of many gigabytes needs no new dependency either.

mod record;

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};
use rustix::fs::{RenameFlags, CWD};
use steward_protocol::calendar::civil_from_days;
use steward_protocol::{is_privileged, Mode, UserAttribute, UserEnsure, UserSpec};

use crate::command;
use crate::engine::{Context, Outcome};
use crate::host::{DirState, FileKind, FileState, Host};
use crate::providers::exec::{root_command, run_tool};
use record::AccountRecord;

/// Archiving a large home takes longer than an ordinary command.
const ARCHIVE_TIMEOUT: Duration = Duration::from_secs(3600);

/// How long a purge waits for the user's processes to exit after SIGTERM before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(10);

/// A shadow-utils tool (`useradd`, `usermod`, `userdel`, `groupadd`, `gpasswd`), given
/// `--root DIR` under `--root` so it edits the root's account files, never this machine's.
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
    /// grants it).
    groups: BTreeSet<String>,
    /// The password field starts with `!`.
    locked: bool,
    /// The account's expiry date has passed.
    expired: bool,
    /// The shadow expiry field as it is (days since the epoch, or empty).
    expiry: String,
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
    /// The account record, if Steward offboarded this name.
    record: Option<AccountRecord>,
    /// The record's archive exists (a regular file).
    archive_exists: bool,
}

/// What has to happen to the account.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Plan {
    Nothing,
    /// Nothing to do, but something differs and is left as found on purpose: the reason.
    Keep(String),
    /// `useradd`; the home exists already (it is then left as it is). A record left by an
    /// account of that name that is gone is removed.
    Create {
        home_exists: bool,
        forget_record: bool,
    },
    /// Changes to an existing account.
    Update(Update),
    /// `usermod --lock` and/or `--expiredate 1`.
    Lock(LockSteps),
    /// Lock (if needed), archive the home (if there is one), `userdel` (if the account is
    /// still there), remove the home and the record.
    Purge {
        lock: Option<LockSteps>,
        archive: Archive,
        userdel: bool,
    },
}

/// The changes to an existing, present account.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Update {
    /// `(from, to)`, enforced.
    shell: Option<(String, String)>,
    /// `(from, to)`, enforced.
    comment: Option<(String, String)>,
    /// Granted groups (ordinary and privileged) the account is not in.
    add_groups: Vec<String>,
    /// `revoke_groups` the account is in.
    revoke_groups: Vec<String>,
    /// Undo an offboarding (there is a record of this account).
    restore: Option<Restore>,
    /// What differs and is left as found, each with its reason.
    kept: Vec<String>,
}

/// Reversing what Steward did when it offboarded the account.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Restore {
    /// Steward locked the password and it is still locked: `usermod --unlock`.
    unlock: bool,
    /// The expiry field to set back (`None`: it is already what it was).
    expiry: Option<String>,
}

impl Restore {
    fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.unlock {
            parts.push("password unlocked".to_string());
        }
        match self.expiry.as_deref() {
            None => {}
            Some("") => parts.push("expiry cleared".to_string()),
            Some(day) => parts.push(format!("expiry restored to {}", describe_day(day))),
        }
        if parts.is_empty() {
            "nothing left to undo".to_string()
        } else {
            parts.join(", ")
        }
    }
}

/// What happens to the home in a purge.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Archive {
    /// No home to archive or remove.
    NoHome,
    /// Archive it (no earlier archive exists), then remove it.
    Write,
    /// An earlier run archived it there: remove it without archiving again.
    Reuse(String),
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
    let plan = diff(spec, &have).map_err(anyhow::Error::msg)?;
    if let Some(drift) = privileged_drift(spec, &have) {
        cx.note_drift(drift);
    }
    match plan {
        Plan::Nothing => Ok(Outcome::Unchanged),
        Plan::Keep(reason) => Ok(Outcome::Kept(reason)),
        Plan::Create {
            home_exists,
            forget_record,
        } => create(spec, cx, home_exists, forget_record),
        Plan::Update(update) => apply_update(spec, cx, &have, update),
        Plan::Lock(steps) => {
            let message = format!("locked user {} ({})", spec.name, steps.describe());
            if !cx.noop {
                let account = have
                    .account
                    .as_ref()
                    .expect("a lock is planned for an account");
                remember_lock(cx, spec, account, have.record.as_ref(), steps)?;
                lock(spec, cx, steps)?;
            }
            Ok(Outcome::changed(message))
        }
        Plan::Purge {
            lock,
            archive,
            userdel,
        } => {
            let UserEnsure::Purged {
                archive_dir,
                terminate_sessions,
            } = &spec.ensure
            else {
                unreachable!("a purge is only planned for ensure: purged");
            };
            let job = PurgeJob {
                spec,
                archive_dir,
                terminate_sessions: *terminate_sessions,
                lock,
                archive,
                userdel,
                now,
            };
            purge(cx, &have, &job)
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
                granted_groups(spec)
                    .filter(|g| accounts.group(g).is_some_and(|g| g.gid == p.gid))
                    .map(str::to_string),
            );
            Account {
                uid: p.uid,
                home: p.home.clone(),
                shell: p.shell.clone(),
                comment: p.comment.clone(),
                groups,
                locked: false,
                expired: false,
                expiry: String::new(),
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
            let entry = shadow_entry(&String::from_utf8_lossy(&shadow), &spec.name, today);
            (account.locked, account.expired, account.expiry) =
                (entry.locked, entry.expired, entry.expiry);
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
    let record = record::load(cx.host, &spec.name)?;
    let archive_exists = match record.as_ref().and_then(|r| r.archive.as_deref()) {
        Some(archive) => matches!(
            cx.host
                .observe_file_limited(archive, 0)
                .with_context(|| format!("checking the archive {archive}"))?,
            FileState::Regular(_)
        ),
        None => false,
    };
    Ok(Observed {
        account,
        home,
        record,
        archive_exists,
    })
}

/// The groups the catalog grants: ordinary, then privileged.
fn granted_groups(spec: &UserSpec) -> impl Iterator<Item = &str> {
    spec.groups
        .iter()
        .chain(&spec.privileged_groups)
        .map(String::as_str)
}

/// One account's line of the shadow file, as far as locking goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ShadowEntry {
    /// The password field starts with `!`.
    locked: bool,
    /// The expiry day has passed (as of `today`, in days since the epoch).
    expired: bool,
    /// The expiry field as it is.
    expiry: String,
}

/// The shadow entry of `name` in shadow text (all false/empty when there is none).
fn shadow_entry(shadow: &str, name: &str, today: u64) -> ShadowEntry {
    shadow
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 8 && f[0] == name)
        .map_or_else(ShadowEntry::default, |f| ShadowEntry {
            locked: f[1].starts_with('!'),
            expired: f[7].parse::<u64>().is_ok_and(|day| day <= today),
            expiry: f[7].to_string(),
        })
}

/// The pure decision.
fn diff(spec: &UserSpec, have: &Observed) -> Result<Plan, String> {
    check_groups(spec)?;
    let Some(account) = &have.account else {
        return match spec.ensure {
            UserEnsure::Present => {
                let forget_record = have.record.is_some();
                match have.home {
                    Home::Absent => Ok(Plan::Create {
                        home_exists: false,
                        forget_record,
                    }),
                    Home::Directory { .. } => Ok(Plan::Create {
                        home_exists: true,
                        forget_record,
                    }),
                    Home::Other(kind) => Err(format!(
                        "the home {} is a {kind}, not a directory; the account was not created",
                        spec.home
                    )),
                }
            }
            UserEnsure::Locked => Ok(Plan::Nothing),
            UserEnsure::Purged { .. } => finish_purge(spec, have),
        };
    };
    if let Some(uid) = spec.uid {
        if uid != account.uid {
            return Err(format!(
                "uid mismatch: passwd has {}, catalog wants {uid}; nothing changed",
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
    // A record of another uid is about an account of the same name that was deleted since.
    let record = have.record.as_ref().filter(|r| r.uid == account.uid);
    match &spec.ensure {
        UserEnsure::Present => {
            home_matches()?;
            Ok(present(spec, account, record))
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
            let archive = match have.home {
                Home::Absent => Archive::NoHome,
                Home::Directory { uid } if uid == account.uid => {
                    match record.and_then(|r| r.archive.clone()) {
                        Some(path) if have.archive_exists => Archive::Reuse(path),
                        _ => Archive::Write,
                    }
                }
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
                archive,
                userdel: true,
            })
        }
    }
}

/// No privileged group among the ordinary ones (THREATS S5), and no group both granted and
/// revoked.
fn check_groups(spec: &UserSpec) -> Result<(), String> {
    let privileged: Vec<&str> = spec
        .groups
        .iter()
        .map(String::as_str)
        .filter(|g| is_privileged(g))
        .collect();
    if !privileged.is_empty() {
        return Err(format!(
            "{} in groups {} privileged: a privileged group must come from the tier's \
             privileged_groups; nothing changed",
            privileged.join(", "),
            if privileged.len() == 1 { "is" } else { "are" }
        ));
    }
    let both: Vec<&str> = granted_groups(spec)
        .filter(|g| spec.revoke_groups.iter().any(|r| r == g))
        .collect();
    if !both.is_empty() {
        return Err(format!(
            "{} both granted and in revoke_groups; nothing changed",
            both.join(", ")
        ));
    }
    Ok(())
}

/// The plan for an existing account that should be present.
fn present(spec: &UserSpec, account: &Account, record: Option<&AccountRecord>) -> Plan {
    let enforced = |a: UserAttribute| spec.enforce.contains(&a);
    let mut update = Update::default();
    if account.shell != spec.shell {
        if enforced(UserAttribute::Shell) {
            update.shell = Some((account.shell.clone(), spec.shell.clone()));
        } else {
            update.kept.push(format!(
                "shell {} kept (catalog: {}; not enforced)",
                account.shell, spec.shell
            ));
        }
    }
    if let Some(comment) = spec.comment.as_ref().filter(|c| **c != account.comment) {
        if enforced(UserAttribute::Comment) {
            update.comment = Some((account.comment.clone(), comment.clone()));
        } else {
            update.kept.push(format!(
                "comment {:?} kept (catalog: {comment:?}; not enforced)",
                account.comment
            ));
        }
    }
    for group in granted_groups(spec) {
        if !account.groups.contains(group) && !update.add_groups.iter().any(|g| g == group) {
            update.add_groups.push(group.to_string());
        }
    }
    for group in &spec.revoke_groups {
        if account.groups.contains(group) && !update.revoke_groups.contains(group) {
            update.revoke_groups.push(group.clone());
        }
    }
    match record {
        Some(record) => {
            update.restore = Some(Restore {
                unlock: record.password_locked && account.locked,
                expiry: (account.expiry != record.expiry_before)
                    .then(|| record.expiry_before.clone()),
            });
        }
        None => {
            if account.expired {
                update.kept.push(format!(
                    "account expired since {} and not by Steward (no offboarding record); \
                     left as found",
                    describe_day(&account.expiry)
                ));
            } else if account.locked && !spec.lock_at_creation {
                update.kept.push(
                    "password locked, not by Steward (no offboarding record); left as found"
                        .to_string(),
                );
            }
        }
    }
    let changes = update.shell.is_some()
        || update.comment.is_some()
        || !update.add_groups.is_empty()
        || !update.revoke_groups.is_empty()
        || update.restore.is_some();
    match (changes, update.kept.is_empty()) {
        (true, _) => Plan::Update(update),
        (false, true) => Plan::Nothing,
        (false, false) => Plan::Keep(update.kept.join("; ")),
    }
}

/// A purge whose account is already gone: a home left behind by a run whose removal failed is
/// removed now, when it is still the purged account's and its archive exists.
fn finish_purge(spec: &UserSpec, have: &Observed) -> Result<Plan, String> {
    let Some(record) = &have.record else {
        return Ok(Plan::Nothing);
    };
    match (have.home, record.archive.as_ref()) {
        (Home::Absent, _) => Ok(Plan::Purge {
            lock: None,
            archive: Archive::NoHome,
            userdel: false,
        }),
        (Home::Directory { uid }, Some(archive)) if uid == record.uid && have.archive_exists => {
            Ok(Plan::Purge {
                lock: None,
                archive: Archive::Reuse(archive.clone()),
                userdel: false,
            })
        }
        (home, _) => Ok(Plan::Keep(format!(
            "the account is gone but its home {} is still there ({}) with no archive of it; \
             left as found",
            spec.home,
            match home {
                Home::Directory { uid } => format!("owned by uid {uid}"),
                Home::Other(kind) => format!("a {kind}"),
                Home::Absent => "absent".to_string(),
            }
        ))),
    }
}

/// Privileged groups a present account holds beyond its grant (and not revoked in this run).
fn privileged_drift(spec: &UserSpec, have: &Observed) -> Option<String> {
    if spec.ensure != UserEnsure::Present {
        return None;
    }
    let account = have.account.as_ref()?;
    let beyond: Vec<&str> = account
        .groups
        .iter()
        .map(String::as_str)
        .filter(|g| is_privileged(g))
        .filter(|g| !spec.privileged_groups.iter().any(|p| p == g))
        .filter(|g| !spec.revoke_groups.iter().any(|r| r == g))
        .collect();
    if beyond.is_empty() {
        return None;
    }
    let tier = match &spec.tier {
        Some(tier) => format!("tier {tier}"),
        None => "the tier".to_string(),
    };
    Some(format!(
        "holds privileged group{} {} beyond what {tier} grants (revoke with revoke_groups)",
        if beyond.len() == 1 { "" } else { "s" },
        beyond.join(", ")
    ))
}

/// `YYYY-MM-DD` for a shadow day field, or the field itself when it is not a day number.
fn describe_day(field: &str) -> String {
    match field.parse::<i64>() {
        Ok(days) => {
            let (y, m, d) = civil_from_days(days);
            format!("{y:04}-{m:02}-{d:02}")
        }
        Err(_) => format!("{field:?}"),
    }
}

fn create(
    spec: &UserSpec,
    cx: &Context<'_>,
    home_exists: bool,
    forget_record: bool,
) -> anyhow::Result<Outcome> {
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
        let missing: Vec<&str> = granted_groups(spec)
            .filter(|g| accounts.group(g).is_none())
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
    if forget_record {
        // The record was about an account of this name that no longer exists.
        record::remove(cx.host, &spec.name)?;
    }
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
    let groups = all_granted(spec);
    if !groups.is_empty() {
        args.extend(["--groups".into(), groups.join(",")]);
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

/// The granted groups, ordinary then privileged, each once.
fn all_granted(spec: &UserSpec) -> Vec<&str> {
    let mut groups: Vec<&str> = Vec::new();
    for g in granted_groups(spec) {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
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
    let groups = all_granted(spec);
    if !groups.is_empty() {
        lines.push(format!("groups: {}", groups.join(", ")));
    }
    if spec.lock_at_creation {
        lines.push("password: locked".to_string());
    }
    lines.join("\n")
}

/// Message, diff lines and `usermod` arguments of an update (pure).
fn describe_update(name: &str, update: &Update) -> (String, Vec<String>, Vec<String>) {
    let mut what = Vec::new();
    let mut lines = Vec::new();
    let mut args: Vec<String> = Vec::new();
    if let Some((from, to)) = &update.shell {
        what.push("shell".to_string());
        lines.push(format!("shell: {from} -> {to}"));
        args.extend(["--shell".into(), to.clone()]);
    }
    if let Some((from, to)) = &update.comment {
        what.push("comment".to_string());
        lines.push(format!("comment: {from:?} -> {to:?}"));
        args.extend(["--comment".into(), to.clone()]);
    }
    if !update.add_groups.is_empty() {
        what.push(format!("groups +{}", update.add_groups.join(" +")));
        lines.push(format!("groups: +{}", update.add_groups.join(", +")));
        args.extend([
            "--append".into(),
            "--groups".into(),
            update.add_groups.join(","),
        ]);
    }
    if !update.revoke_groups.is_empty() {
        what.push(format!(
            "groups -{} (revoke_groups)",
            update.revoke_groups.join(" -")
        ));
        lines.push(format!(
            "groups: -{} (revoke_groups)",
            update.revoke_groups.join(", -")
        ));
    }
    if let Some(restore) = &update.restore {
        if restore.unlock {
            lines.push("password: unlocked".to_string());
            args.push("--unlock".into());
        }
        if let Some(expiry) = &restore.expiry {
            lines.push(format!(
                "expiry: {}",
                if expiry.is_empty() {
                    "none".to_string()
                } else {
                    describe_day(expiry)
                }
            ));
            args.extend(["--expiredate".into(), expiry.clone()]);
        }
    }
    let mut message = match &update.restore {
        Some(restore) if what.is_empty() => format!(
            "restored user {name} after offboarding ({})",
            restore.describe()
        ),
        Some(restore) => format!(
            "restored user {name} after offboarding ({}); updated {}",
            restore.describe(),
            what.join(", ")
        ),
        None => format!("updated user {name}: {}", what.join(", ")),
    };
    for kept in &update.kept {
        message.push_str("; ");
        message.push_str(kept);
    }
    (message, lines, args)
}

fn apply_update(
    spec: &UserSpec,
    cx: &Context<'_>,
    have: &Observed,
    update: Update,
) -> anyhow::Result<Outcome> {
    let (mut message, lines, mut args) = describe_update(&spec.name, &update);
    // Shell and comment are drift; groups to add or revoke and a return come from the catalog.
    let corrective = update.shell.is_some() || update.comment.is_some();
    let outcome = |message: String| Outcome::Changed {
        message,
        diff: Some(lines.join("\n")),
        corrective,
    };
    if cx.noop {
        return Ok(outcome(message));
    }
    {
        let accounts = cx.accounts()?;
        let missing: Vec<&str> = update
            .add_groups
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
    if !args.is_empty() {
        args.extend(["--".into(), spec.name.clone()]);
        let result = run_tool(
            "usermod",
            shadow_tool(cx, "usermod").args(&args),
            cx.command_timeout,
        );
        cx.accounts_changed();
        result?;
    }
    for group in &update.revoke_groups {
        let result = run_tool(
            "gpasswd --delete",
            shadow_tool(cx, "gpasswd").args(["--delete", &spec.name, "--", group]),
            cx.command_timeout,
        );
        cx.accounts_changed();
        result.with_context(|| format!("removing {} from {group}", spec.name))?;
    }
    if let Some(restore) = &update.restore {
        if restore.unlock && still_locked(cx, &spec.name)? {
            // usermod refuses to unlock into an empty (passwordless) password field.
            message.push_str(
                "; the password stays locked: it was empty before the offboarding (set one \
                 with passwd)",
            );
        }
        if have.record.is_some() {
            record::remove(cx.host, &spec.name)?;
        }
    }
    Ok(outcome(message))
}

/// Whether the password of `name` is locked now.
fn still_locked(cx: &Context<'_>, name: &str) -> anyhow::Result<bool> {
    let shadow = match cx.host.observe_file("/etc/shadow")? {
        FileState::Regular(f) => f.content.unwrap_or_default(),
        _ => Vec::new(),
    };
    Ok(shadow_entry(&String::from_utf8_lossy(&shadow), name, 0).locked)
}

/// What the record says after Steward locks `account` with `steps` (pure): an existing record
/// of the same account keeps what was there before Steward first locked it.
fn record_after_lock(
    account: &Account,
    existing: Option<&AccountRecord>,
    steps: LockSteps,
) -> AccountRecord {
    match existing.filter(|r| r.uid == account.uid) {
        Some(r) => AccountRecord {
            password_locked: r.password_locked || steps.password,
            ..r.clone()
        },
        None => AccountRecord {
            uid: account.uid,
            password_locked: steps.password,
            expiry_before: account.expiry.clone(),
            archive: None,
        },
    }
}

/// Persists the account record before Steward locks the account.
fn remember_lock(
    cx: &Context<'_>,
    spec: &UserSpec,
    account: &Account,
    existing: Option<&AccountRecord>,
    steps: LockSteps,
) -> anyhow::Result<AccountRecord> {
    let record = record_after_lock(account, existing, steps);
    if existing != Some(&record) {
        record::store(cx.host, &spec.name, &record)
            .context("the account was not locked: its record could not be written")?;
    }
    Ok(record)
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

/// Everything a purge needs to know.
struct PurgeJob<'a> {
    spec: &'a UserSpec,
    archive_dir: &'a str,
    terminate_sessions: bool,
    lock: Option<LockSteps>,
    archive: Archive,
    userdel: bool,
    now: u64,
}

/// `n processes (a, b)`: the count and the distinct names, in pid order.
fn describe_processes(procs: &[crate::sessions::Proc]) -> String {
    let mut names: Vec<&str> = Vec::new();
    for p in procs {
        if !names.contains(&p.comm.as_str()) {
            names.push(&p.comm);
        }
    }
    format!(
        "{} process{} ({})",
        procs.len(),
        if procs.len() == 1 { "" } else { "es" },
        names.join(", ")
    )
}

fn purge(cx: &Context<'_>, have: &Observed, job: &PurgeJob<'_>) -> anyhow::Result<Outcome> {
    let spec = job.spec;
    let name = &spec.name;
    let archive = match &job.archive {
        Archive::NoHome => None,
        Archive::Write => Some(join(
            job.archive_dir,
            &format!("{name}-{}.tar.gz", utc_stamp(job.now)),
        )),
        Archive::Reuse(path) => Some(path.clone()),
    };
    let mut message = match (&job.archive, &archive, job.userdel) {
        (Archive::Write, Some(a), true) => {
            format!("archived {} to {a} and removed user {name}", spec.home)
        }
        (Archive::Reuse(_), Some(a), true) => format!(
            "removed user {name} and {} (archived earlier to {a})",
            spec.home
        ),
        (_, _, true) => format!("removed user {name} (no home to archive)"),
        (_, Some(a), false) => format!(
            "removed {} of the removed user {name} (archived earlier to {a})",
            spec.home
        ),
        (_, None, false) => format!("completed the purge of {name} (record removed)"),
    };
    let uid = have.account.as_ref().map(|a| a.uid);
    // Processes are observed under noop too: a deferral is reported as such.
    let procs = match uid {
        Some(uid) if job.userdel => {
            crate::sessions::processes(cx.host, uid).context("listing the user's processes")?
        }
        _ => Vec::new(),
    };
    if !procs.is_empty() && !job.terminate_sessions {
        if !cx.noop {
            // No new logins while the purge waits.
            if let (Some(steps), Some(account)) = (job.lock, &have.account) {
                remember_lock(cx, spec, account, have.record.as_ref(), steps)?;
                lock(spec, cx, steps)?;
            }
        }
        return Ok(Outcome::Deferred(format!(
            "purge deferred: {name} has {}; the site does not terminate sessions",
            describe_processes(&procs)
        )));
    }
    if !procs.is_empty() {
        message = format!("ended {}; {message}", describe_processes(&procs));
    }
    if cx.noop {
        return Ok(Outcome::changed(message));
    }
    // A record of another uid is about an earlier account of that name.
    let existing = have
        .record
        .as_ref()
        .filter(|r| uid.is_none_or(|uid| r.uid == uid));
    let record = match (&have.account, job.lock) {
        (Some(account), Some(steps)) => {
            // No new logins while the home is archived.
            let record = remember_lock(cx, spec, account, existing, steps)?;
            lock(spec, cx, steps)?;
            Some(record)
        }
        _ => existing.cloned(),
    };
    if let (Some(uid), false) = (uid, procs.is_empty()) {
        let left = crate::sessions::terminate_user(cx.host, cx.systemd, name, uid, TERMINATE_GRACE)
            .context("ending the user's sessions")?;
        if !left.is_empty() {
            bail!(
                "{name} still has {} after its sessions were ended (SIGTERM, then SIGKILL); \
                 the account is locked, nothing was archived or removed",
                describe_processes(&left)
            );
        }
    }
    if let (Archive::Write, Some(path)) = (&job.archive, &archive) {
        let account = have
            .account
            .as_ref()
            .expect("an archive is written only while the account exists");
        refuse_mounts_beneath(cx, &spec.home)?;
        ensure_root_dir(cx.host, job.archive_dir)?;
        // Recorded before it is written: if this run dies after the rename, the next one
        // finds the archive and does not write another.
        let mut updated = record.clone().unwrap_or_else(|| AccountRecord {
            uid: account.uid,
            password_locked: false,
            expiry_before: account.expiry.clone(),
            archive: None,
        });
        updated.archive = Some(path.clone());
        record::store(cx.host, name, &updated).context("nothing was archived or removed")?;
        let base = path.rsplit('/').next().unwrap_or(path);
        write_archive(cx, &spec.home, job.archive_dir, base)?;
    }
    if job.userdel {
        let result = run_tool(
            "userdel",
            shadow_tool(cx, "userdel").args(["--", name]),
            cx.command_timeout,
        );
        cx.accounts_changed();
        result.with_context(|| match &archive {
            Some(a) => format!("the home was archived to {a} and left in place"),
            None => "nothing was removed".to_string(),
        })?;
    }
    if let Some(a) = &archive {
        // std's remove_dir_all walks with openat/unlinkat and never follows a symlink; the
        // home itself was checked to be a real directory owned by the user.
        std::fs::remove_dir_all(host_path(cx, &spec.home)).with_context(|| {
            format!(
                "the account was removed and the home archived to {a}, but removing {} failed \
                 (the next run removes it without archiving again)",
                spec.home
            )
        })?;
    }
    record::remove(cx.host, name)?;
    Ok(Outcome::changed(message))
}
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

/// Creates `dir` and any missing parent (0700 root); an existing `dir` must be root's and
/// writable by nobody else, as archives and account records are written into it by path.
fn ensure_root_dir(host: &Host, dir: &str) -> anyhow::Result<()> {
    let mut prefix = String::new();
    for component in dir.split('/').filter(|c| !c.is_empty()) {
        prefix.push('/');
        prefix.push_str(component);
        match host.observe_dir(&prefix)? {
            DirState::Directory(_) => {}
            DirState::Absent => host.ensure_dir(&prefix, Mode(0o700), 0, 0)?,
            DirState::Other(kind) => bail!("{prefix} is a {kind}, not a directory"),
        }
    }
    match host.observe_dir(dir)? {
        DirState::Directory(inode) if archive_dir_is_safe(inode.uid, inode.mode) => Ok(()),
        DirState::Directory(inode) => bail!(
            "{dir} must be owned by root and writable by nobody else (it is uid {}, mode {}); \
             nothing changed",
            inode.uid,
            inode.mode
        ),
        other => bail!("{dir} is not a directory: {other:?}"),
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
            groups: vec!["devs".into(), "shared".into()],
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
            groups: ["devs", "shared", "extra"]
                .into_iter()
                .map(String::from)
                .collect(),
            locked: true,
            expired: false,
            expiry: String::new(),
        }
    }

    fn observed(account: Option<Account>, home: Home) -> Observed {
        Observed {
            account,
            home,
            record: None,
            archive_exists: false,
        }
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
            Ok(Plan::Create {
                home_exists: false,
                forget_record: false
            })
        );
        assert_eq!(
            diff(&s, &observed(None, Home::Directory { uid: 0 })),
            Ok(Plan::Create {
                home_exists: true,
                forget_record: false
            })
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
    fn enforced_shell_and_comment_and_missing_groups_are_an_update() {
        let mut have = account();
        have.shell = "/bin/sh".into();
        have.comment = "Old".into();
        have.groups.remove("shared");
        let mut s = spec(UserEnsure::Present);
        s.enforce = vec![UserAttribute::Shell, UserAttribute::Comment];
        let plan = diff(&s, &observed(Some(have.clone()), Home::Absent));
        assert_eq!(
            plan,
            Ok(Plan::Update(Update {
                shell: Some(("/bin/sh".into(), "/bin/bash".into())),
                comment: Some(("Old".into(), "Emo Person".into())),
                add_groups: vec!["shared".into()],
                ..Update::default()
            }))
        );
        // No comment in the catalog: the existing one stays.
        s.comment = None;
        have.shell = "/bin/bash".into();
        assert_eq!(
            diff(&s, &observed(Some(have), Home::Absent)),
            Ok(Plan::Update(Update {
                add_groups: vec!["shared".into()],
                ..Update::default()
            }))
        );
    }

    #[test]
    fn a_shell_or_comment_not_enforced_is_kept_and_named_beside_a_change() {
        let mut have = account();
        have.shell = "/bin/zsh".into();
        have.comment = "Emo".into();
        let s = spec(UserEnsure::Present);
        assert_eq!(
            diff(&s, &observed(Some(have.clone()), Home::Absent)),
            Ok(Plan::Keep(
                "shell /bin/zsh kept (catalog: /bin/bash; not enforced); comment \"Emo\" kept \
                 (catalog: \"Emo Person\"; not enforced)"
                    .into()
            ))
        );
        let mut only_shell = s.clone();
        only_shell.enforce = vec![UserAttribute::Shell];
        have.groups.remove("devs");
        let Ok(Plan::Update(update)) = diff(&only_shell, &observed(Some(have), Home::Absent))
        else {
            panic!()
        };
        assert_eq!(update.shell, Some(("/bin/zsh".into(), "/bin/bash".into())));
        assert_eq!(update.comment, None);
        let (message, lines, args) = describe_update("emo", &update);
        assert_eq!(
            message,
            "updated user emo: shell, groups +devs; comment \"Emo\" kept (catalog: \"Emo \
             Person\"; not enforced)"
        );
        assert_eq!(lines, ["shell: /bin/zsh -> /bin/bash", "groups: +devs"]);
        assert_eq!(
            args,
            ["--shell", "/bin/bash", "--append", "--groups", "devs"]
        );
    }

    #[test]
    fn a_privileged_group_among_ordinary_groups_fails_in_every_state() {
        for ensure in [UserEnsure::Present, UserEnsure::Locked, purged()] {
            let mut s = spec(ensure);
            s.groups = vec!["devs".into(), "disk".into(), "sudo".into()];
            s.privileged_groups = vec!["sudo".into()];
            for have in [None, Some(account())] {
                assert_eq!(
                    diff(&s, &observed(have, Home::Absent)),
                    Err(
                        "disk, sudo in groups are privileged: a privileged group must come \
                         from the tier's privileged_groups; nothing changed"
                            .into()
                    )
                );
            }
        }
        let mut s = spec(UserEnsure::Present);
        s.groups = vec!["devs".into()];
        s.revoke_groups = vec!["devs".into()];
        assert_eq!(
            diff(&s, &observed(Some(account()), Home::Absent)),
            Err("devs both granted and in revoke_groups; nothing changed".into())
        );
    }

    #[test]
    fn privileged_groups_are_added_and_held_ones_beyond_the_grant_are_drift() {
        let mut s = spec(UserEnsure::Present);
        s.groups = vec!["devs".into()];
        s.privileged_groups = vec!["docker".into(), "sudo".into()];
        s.tier = Some("admin".into());
        let mut have = account();
        have.groups = ["devs", "docker"].into_iter().map(String::from).collect();
        let seen = observed(Some(have.clone()), Home::Absent);
        assert_eq!(
            diff(&s, &seen),
            Ok(Plan::Update(Update {
                add_groups: vec!["sudo".into()],
                ..Update::default()
            }))
        );
        assert_eq!(privileged_drift(&s, &seen), None);
        assert_eq!(
            useradd_args(&s, false)[13..15],
            ["--groups".to_string(), "devs,docker,sudo".to_string()]
        );

        // Demoted: the grant shrank, the groups stay and are reported.
        s.tier = Some("namespace-owner".into());
        s.privileged_groups.clear();
        have.groups.insert("sudo".into());
        have.groups.insert("video".into());
        let seen = observed(Some(have.clone()), Home::Absent);
        assert_eq!(diff(&s, &seen), Ok(Plan::Nothing), "drift changes nothing");
        assert_eq!(
            privileged_drift(&s, &seen).as_deref(),
            Some(
                "holds privileged groups docker, sudo, video beyond what tier namespace-owner \
                 grants (revoke with revoke_groups)"
            )
        );
        // Revoked in this run: not drift; only held groups are revoked.
        s.revoke_groups = vec!["sudo".into(), "video".into(), "lxd".into()];
        s.tier = None;
        let seen = observed(Some(have), Home::Absent);
        assert_eq!(
            privileged_drift(&s, &seen).as_deref(),
            Some("holds privileged group docker beyond what the tier grants (revoke with revoke_groups)")
        );
        let Ok(Plan::Update(update)) = diff(&s, &seen) else {
            panic!()
        };
        assert_eq!(update.revoke_groups, ["sudo", "video"]);
        assert_eq!(
            describe_update("emo", &update).0,
            "updated user emo: groups -sudo -video (revoke_groups)"
        );
        // Offboarded accounts are not reported.
        let mut locked = spec(UserEnsure::Locked);
        locked.privileged_groups.clear();
        assert_eq!(privileged_drift(&locked, &seen), None);
    }

    fn record(password_locked: bool, expiry_before: &str) -> AccountRecord {
        AccountRecord {
            uid: 1001,
            password_locked,
            expiry_before: expiry_before.into(),
            archive: None,
        }
    }

    #[test]
    fn a_return_reverses_exactly_what_the_record_says() {
        let s = spec(UserEnsure::Present);
        let mut have = account();
        have.locked = true;
        have.expired = true;
        have.expiry = "1".into();
        let mut seen = observed(Some(have.clone()), Home::Absent);
        seen.record = Some(record(true, ""));
        let Ok(Plan::Update(update)) = diff(&s, &seen) else {
            panic!()
        };
        assert_eq!(
            update.restore,
            Some(Restore {
                unlock: true,
                expiry: Some(String::new())
            })
        );
        let (message, _, args) = describe_update("emo", &update);
        assert_eq!(
            message,
            "restored user emo after offboarding (password unlocked, expiry cleared)"
        );
        assert_eq!(args, ["--unlock", "--expiredate", ""]);
        // Steward did not lock the password (it was locked at creation): it stays locked;
        // an earlier expiry comes back.
        seen.record = Some(record(false, "21915"));
        let Ok(Plan::Update(update)) = diff(&s, &seen) else {
            panic!()
        };
        assert_eq!(
            describe_update("emo", &update).0,
            "restored user emo after offboarding (expiry restored to 2030-01-01)"
        );
        // A record of another account of that name is not this one's.
        seen.record = Some(AccountRecord {
            uid: 999,
            ..record(true, "")
        });
        assert_eq!(
            diff(&s, &seen),
            Ok(Plan::Keep(
                "account expired since 1970-01-02 and not by Steward (no offboarding record); \
                 left as found"
                    .into()
            ))
        );
        // No record: a lock by someone else is kept.
        seen.record = None;
        have.expired = false;
        have.expiry = String::new();
        let mut unlocked_site = s.clone();
        unlocked_site.lock_at_creation = false;
        assert_eq!(
            diff(&unlocked_site, &observed(Some(have.clone()), Home::Absent)),
            Ok(Plan::Keep(
                "password locked, not by Steward (no offboarding record); left as found".into()
            ))
        );
        assert_eq!(
            diff(&s, &observed(Some(have), Home::Absent)),
            Ok(Plan::Nothing)
        );
    }

    #[test]
    fn the_record_keeps_what_was_there_before_steward_first_locked() {
        let mut have = account();
        have.locked = false;
        have.expiry = "30000".into();
        let both = LockSteps {
            password: true,
            expire: true,
        };
        let first = record_after_lock(&have, None, both);
        assert_eq!(first, record(true, "30000"));
        // Locked again later (someone unlocked it meanwhile): the original expiry stays.
        have.expiry = "1".into();
        let expire_only = LockSteps {
            password: false,
            expire: true,
        };
        let mut with_archive = record(false, "");
        with_archive.archive = Some("/a/emo.tar.gz".into());
        assert_eq!(
            record_after_lock(&have, Some(&with_archive), both),
            AccountRecord {
                password_locked: true,
                ..with_archive.clone()
            }
        );
        assert_eq!(
            record_after_lock(&have, Some(&with_archive), expire_only),
            with_archive
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
    fn purging_archives_only_a_real_home_owned_by_the_user_and_only_once() {
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
                archive: Archive::Write,
                userdel: true,
            })
        );
        assert_eq!(
            diff(&s, &observed(Some(have.clone()), Home::Absent)),
            Ok(Plan::Purge {
                lock: None,
                archive: Archive::NoHome,
                userdel: true,
            })
        );
        // An archive recorded by an earlier run is reused while it exists.
        let mut seen = observed(Some(have.clone()), Home::Directory { uid: 1001 });
        seen.record = Some(AccountRecord {
            archive: Some("/b/emo-1.tar.gz".into()),
            ..record(true, "")
        });
        seen.archive_exists = true;
        assert_eq!(
            diff(&s, &seen),
            Ok(Plan::Purge {
                lock: None,
                archive: Archive::Reuse("/b/emo-1.tar.gz".into()),
                userdel: true,
            })
        );
        seen.archive_exists = false;
        assert!(matches!(
            diff(&s, &seen),
            Ok(Plan::Purge {
                archive: Archive::Write,
                ..
            })
        ));
        // The account is gone but its home is not: removed, with the earlier archive.
        seen.account = None;
        seen.archive_exists = true;
        assert_eq!(
            diff(&s, &seen),
            Ok(Plan::Purge {
                lock: None,
                archive: Archive::Reuse("/b/emo-1.tar.gz".into()),
                userdel: false,
            })
        );
        seen.home = Home::Directory { uid: 0 };
        assert!(matches!(diff(&s, &seen), Ok(Plan::Keep(_))));
        seen.home = Home::Absent;
        assert_eq!(
            diff(&s, &seen),
            Ok(Plan::Purge {
                lock: None,
                archive: Archive::NoHome,
                userdel: false,
            })
        );
        seen.record = None;
        assert_eq!(diff(&s, &seen), Ok(Plan::Nothing));

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
    fn processes_are_described_by_count_and_distinct_names() {
        let p = |pid, comm: &str| crate::sessions::Proc {
            pid,
            ppid: 1,
            comm: comm.into(),
            tty: 0,
        };
        assert_eq!(
            describe_processes(&[p(5, "zsh"), p(6, "sleep"), p(7, "zsh")]),
            "3 processes (zsh, sleep)"
        );
        assert_eq!(describe_processes(&[p(5, "sleep")]), "1 process (sleep)");
    }

    #[test]
    fn shadow_entries_read_the_lock_and_the_expiry() {
        let shadow = "root:*:19000:0:99999:7:::\n\
                      emo:!$y$hash:20000:0:99999:7:::\n\
                      ana:$y$hash:20000:0:99999:7::1:\n\
                      bob:$y$hash:20000:0:99999:7::30000:\n";
        let entry = |name| {
            let e = shadow_entry(shadow, name, 20779);
            (e.locked, e.expired, e.expiry)
        };
        assert_eq!(entry("emo"), (true, false, String::new()));
        assert_eq!(entry("ana"), (false, true, "1".into()));
        assert_eq!(entry("bob"), (false, false, "30000".into()));
        assert_eq!(entry("nobody"), (false, false, String::new()));
        assert_eq!(describe_day("30000"), "2052-02-20");
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
                "devs,shared",
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
