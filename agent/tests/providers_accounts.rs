//! The `group`, `user`, `package`, `exec` and `swap` providers, in process, against disposable
//! Debian roots (`--root`: the root's own shadow-utils, dpkg, apt and tar; never this
//! machine's accounts). Each test checks the real end state in the root's files, then that a
//! second apply changes nothing (no write to `/etc/passwd` and friends), and that noop writes
//! nothing.
//!
//! Every test needs a root and fails (never skips) when the harness cannot make one. The
//! package tests fetch from the Debian mirror.

mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use steward_agent::engine::{self, Context, Outcome, RunLimits};
use steward_agent::host::Host;
use steward_agent::{providers, sessions};
use steward_protocol::{
    ExecSpec, GroupSpec, Mode, PackageSpec, Resource, ResourceEvent, ResourceSpec, ResourceStatus,
    SwapSpec, UserAttribute, UserEnsure, UserSpec,
};
use support::Root;

/// Applies one resource in a fresh context on `root`.
fn apply(root: &Root, noop: bool, spec: &ResourceSpec) -> anyhow::Result<Outcome> {
    let host = Host::new(root.dir()).unwrap();
    let cx = Context::new(&host, noop, None);
    providers::apply(spec, &cx, false)
}

fn changed(outcome: &Outcome) -> &str {
    match outcome {
        Outcome::Changed { message, .. } => message,
        other => panic!("expected a change, got {other:?}"),
    }
}

fn error_text(result: anyhow::Result<Outcome>) -> String {
    match result {
        Ok(outcome) => panic!("expected a failure, got {outcome:?}"),
        Err(e) => format!("{e:#}"),
    }
}

fn read(root: &Root, path: &str) -> String {
    std::fs::read_to_string(root.path(path)).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn line_of(root: &Root, file: &str, name: &str) -> Option<String> {
    read(root, file)
        .lines()
        .find(|l| l.split(':').next() == Some(name))
        .map(str::to_string)
}

/// Identity, mtime and content of the account files: equal before and after means not
/// written at all.
fn account_files(root: &Root) -> Vec<(u64, i64, i64, Vec<u8>)> {
    ["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow"]
        .iter()
        .map(|p| {
            let path = root.path(p);
            let meta = std::fs::metadata(&path).unwrap();
            (
                meta.ino(),
                meta.mtime(),
                meta.mtime_nsec(),
                std::fs::read(&path).unwrap(),
            )
        })
        .collect()
}

fn mode_owner(path: &Path) -> (u32, u32, u32) {
    let meta = std::fs::symlink_metadata(path).unwrap();
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

fn group(name: &str, gid: Option<u32>, system: bool) -> ResourceSpec {
    ResourceSpec::Group(GroupSpec {
        name: name.into(),
        gid,
        system,
    })
}

fn emo(ensure: UserEnsure) -> UserSpec {
    UserSpec {
        name: "emo".into(),
        uid: Some(1500),
        shell: "/bin/bash".into(),
        home: "/home/emo".into(),
        home_mode: Mode(0o700),
        groups: vec!["devs".into()],
        comment: Some("Emo Person".into()),
        lock_at_creation: true,
        ensure,
        privileged_groups: Vec::new(),
        revoke_groups: Vec::new(),
        enforce: Vec::new(),
        tier: None,
    }
}

/// How offboarding specs look: no uid, no groups, no comment.
fn offboarded(ensure: UserEnsure) -> ResourceSpec {
    ResourceSpec::User(UserSpec {
        uid: None,
        groups: Vec::new(),
        comment: None,
        lock_at_creation: false,
        ..emo(ensure)
    })
}

#[test]
fn groups_are_created_with_pinned_gids_and_never_renumbered() {
    let root = Root::fresh();
    let devs = group("devs", Some(2345), false);

    let before = account_files(&root);
    let outcome = apply(&root, true, &devs).unwrap();
    assert_eq!(outcome, Outcome::changed("created group devs (gid 2345)"));
    assert_eq!(account_files(&root), before, "noop wrote the account files");

    let outcome = apply(&root, false, &devs).unwrap();
    assert_eq!(outcome, Outcome::changed("created group devs (gid 2345)"));
    assert_eq!(
        line_of(&root, "/etc/group", "devs").as_deref(),
        Some("devs:x:2345:")
    );
    let svc = group("stewardsvc", None, true);
    let outcome = apply(&root, false, &svc).unwrap();
    assert!(changed(&outcome).starts_with("created system group stewardsvc (gid "));
    let gid: u32 = line_of(&root, "/etc/group", "stewardsvc")
        .unwrap()
        .split(':')
        .nth(2)
        .unwrap()
        .parse()
        .unwrap();
    assert!(gid < 1000, "a system group got gid {gid}");

    let before = account_files(&root);
    assert_eq!(apply(&root, false, &devs).unwrap(), Outcome::Unchanged);
    assert_eq!(apply(&root, false, &svc).unwrap(), Outcome::Unchanged);
    // Unpinned: any gid will do.
    assert_eq!(
        apply(&root, false, &group("devs", None, false)).unwrap(),
        Outcome::Unchanged
    );
    let err = error_text(apply(&root, false, &group("devs", Some(2400), false)));
    assert!(
        err.starts_with("group devs: gid mismatch: /etc/group has 2345, catalog wants 2400"),
        "{err}"
    );
    assert_eq!(
        account_files(&root),
        before,
        "an unchanged group was written"
    );
}

#[test]
fn a_present_user_is_created_from_the_roots_skel_locked_then_left_alone() {
    let root = Root::fresh();
    apply(&root, false, &group("devs", Some(2345), false)).unwrap();
    let spec = ResourceSpec::User(emo(UserEnsure::Present));

    let before = account_files(&root);
    let outcome = apply(&root, true, &spec).unwrap();
    assert_eq!(changed(&outcome), "created user emo (uid 1500)");
    assert_eq!(account_files(&root), before, "noop wrote the account files");
    assert!(!root.path("/home/emo").exists(), "noop made the home");

    let outcome = apply(&root, false, &spec).unwrap();
    let Outcome::Changed {
        message,
        diff,
        corrective,
    } = &outcome
    else {
        panic!("{outcome:?}")
    };
    assert_eq!(message, "created user emo (uid 1500)");
    assert!(!corrective);
    assert!(diff
        .as_deref()
        .unwrap()
        .contains("home: /home/emo (mode 0700, from /etc/skel)"));

    let passwd = line_of(&root, "/etc/passwd", "emo").unwrap();
    assert_eq!(passwd, "emo:x:1500:1500:Emo Person:/home/emo:/bin/bash");
    assert_eq!(
        line_of(&root, "/etc/group", "emo").as_deref(),
        Some("emo:x:1500:"),
        "a per-user primary group"
    );
    assert_eq!(
        line_of(&root, "/etc/group", "devs").as_deref(),
        Some("devs:x:2345:emo")
    );
    let shadow = line_of(&root, "/etc/shadow", "emo").unwrap();
    assert!(shadow.starts_with("emo:!"), "not locked");
    assert_eq!(mode_owner(&root.path("/home/emo")), (0o700, 1500, 1500));
    // The root's skeleton, owned by the user.
    let bashrc = root.path("/home/emo/.bashrc");
    assert_eq!(
        std::fs::read(&bashrc).unwrap(),
        std::fs::read(root.path("/etc/skel/.bashrc")).unwrap()
    );
    assert_eq!(mode_owner(&bashrc).1, 1500);
    // The root's own tools agree.
    assert_eq!(
        root.run_ok(&["id", "emo"]).trim(),
        "uid=1500(emo) gid=1500(emo) groups=1500(emo),2345(devs)"
    );

    let before = account_files(&root);
    assert_eq!(apply(&root, false, &spec).unwrap(), Outcome::Unchanged);
    assert_eq!(apply(&root, true, &spec).unwrap(), Outcome::Unchanged);
    assert_eq!(
        account_files(&root),
        before,
        "an unchanged user was written"
    );
}

#[test]
fn an_existing_accounts_shell_and_comment_are_kept_unless_enforced_and_nothing_is_taken_away() {
    let root = Root::fresh();
    root.run_ok(&["groupadd", "--gid", "2345", "devs"]);
    root.run_ok(&["groupadd", "extra"]);
    root.run_ok(&[
        "useradd",
        "-m",
        "-u",
        "1500",
        "-s",
        "/bin/bash",
        "-c",
        "Old Name",
        "-G",
        "extra",
        "emo",
    ]);
    // Unlocked by an admin since, and the home opened up.
    root.run_ok(&["usermod", "-p", "not-a-real-hash", "emo"]);
    root.run_ok(&["chmod", "0755", "/home/emo"]);
    let zsh = UserSpec {
        shell: "/bin/zsh".into(),
        ..emo(UserEnsure::Present)
    };
    let spec = ResourceSpec::User(zsh.clone());
    let kept = "shell /bin/bash kept (catalog: /bin/zsh; not enforced); comment \"Old Name\" \
                kept (catalog: \"Emo Person\"; not enforced)";

    let before = account_files(&root);
    let noop = apply(&root, true, &spec).unwrap();
    assert_eq!(account_files(&root), before, "noop wrote the account files");

    let outcome = apply(&root, false, &spec).unwrap();
    assert_eq!(outcome, noop, "noop reports exactly what a run does");
    assert_eq!(
        outcome,
        Outcome::Changed {
            message: format!("updated user emo: groups +devs; {kept}"),
            diff: Some("groups: +devs".into()),
            corrective: false,
        }
    );
    assert_eq!(
        line_of(&root, "/etc/passwd", "emo").unwrap(),
        "emo:x:1500:1500:Old Name:/home/emo:/bin/bash",
        "a creation-only attribute was changed"
    );
    assert!(
        line_of(&root, "/etc/group", "extra")
            .unwrap()
            .ends_with(":emo"),
        "lost a group"
    );
    assert_eq!(
        line_of(&root, "/etc/group", "devs").as_deref(),
        Some("devs:x:2345:emo")
    );
    let shadow = line_of(&root, "/etc/shadow", "emo").unwrap();
    assert!(shadow.starts_with("emo:not-a-real-hash:"), "re-locked");
    assert_eq!(
        mode_owner(&root.path("/home/emo")).0,
        0o755,
        "home re-moded"
    );

    // Nothing left to do but what is kept: reported, not written.
    let before = account_files(&root);
    assert_eq!(
        apply(&root, false, &spec).unwrap(),
        Outcome::Kept(kept.into())
    );
    assert_eq!(account_files(&root), before);

    // The site enforces the shell: corrected (drift repair), the comment still kept.
    let enforced = ResourceSpec::User(UserSpec {
        enforce: vec![UserAttribute::Shell],
        ..zsh.clone()
    });
    assert_eq!(
        apply(&root, false, &enforced).unwrap(),
        Outcome::Changed {
            message: "updated user emo: shell; comment \"Old Name\" kept (catalog: \"Emo \
                      Person\"; not enforced)"
                .into(),
            diff: Some("shell: /bin/bash -> /bin/zsh".into()),
            corrective: true,
        }
    );
    let both = ResourceSpec::User(UserSpec {
        enforce: vec![UserAttribute::Shell, UserAttribute::Comment],
        ..zsh
    });
    assert_eq!(
        changed(&apply(&root, false, &both).unwrap()),
        "updated user emo: comment"
    );
    assert_eq!(
        line_of(&root, "/etc/passwd", "emo").unwrap(),
        "emo:x:1500:1500:Emo Person:/home/emo:/bin/zsh"
    );

    let before = account_files(&root);
    assert_eq!(apply(&root, false, &both).unwrap(), Outcome::Unchanged);
    assert_eq!(account_files(&root), before);
}

#[test]
fn a_uid_mismatch_fails_and_changes_nothing() {
    let root = Root::fresh();
    root.run_ok(&["groupadd", "--gid", "2345", "devs"]);
    root.run_ok(&["useradd", "-m", "-u", "1600", "-s", "/bin/sh", "emo"]);
    let before = account_files(&root);
    for spec in [
        ResourceSpec::User(emo(UserEnsure::Present)),
        ResourceSpec::User(emo(UserEnsure::Locked)),
    ] {
        let err = error_text(apply(&root, false, &spec));
        assert!(
            err.starts_with("user emo: uid mismatch: passwd has 1600, catalog wants 1500"),
            "{err}"
        );
    }
    assert_eq!(account_files(&root), before);
}

#[test]
fn a_missing_supplementary_group_fails_creation_with_its_name() {
    let root = Root::fresh();
    let before = account_files(&root);
    let err = error_text(apply(
        &root,
        false,
        &ResourceSpec::User(emo(UserEnsure::Present)),
    ));
    assert!(
        err.contains("supplementary group(s) devs do not exist"),
        "{err}"
    );
    assert_eq!(account_files(&root), before);
}

#[test]
fn an_offboarded_account_is_locked_and_expired_and_nothing_is_deleted() {
    let root = Root::fresh();
    root.run_ok(&["useradd", "-m", "-u", "1500", "-s", "/bin/bash", "emo"]);
    root.run_ok(&["usermod", "-p", "not-a-real-hash", "emo"]);
    root.write("/home/emo/notes.txt", b"keep me\n");
    let spec = offboarded(UserEnsure::Locked);

    let before = account_files(&root);
    let outcome = apply(&root, true, &spec).unwrap();
    assert_eq!(
        outcome,
        Outcome::changed("locked user emo (password locked, account expired)")
    );
    assert_eq!(account_files(&root), before, "noop wrote the account files");

    assert_eq!(apply(&root, false, &spec).unwrap(), outcome);
    let shadow = line_of(&root, "/etc/shadow", "emo").unwrap();
    let fields: Vec<&str> = shadow.split(':').collect();
    assert_eq!(fields[1], "!not-a-real-hash", "password not locked");
    assert_eq!(fields[7], "1", "account not expired");
    assert!(line_of(&root, "/etc/passwd", "emo").is_some());
    assert_eq!(read(&root, "/home/emo/notes.txt"), "keep me\n");

    let before = account_files(&root);
    assert_eq!(apply(&root, false, &spec).unwrap(), Outcome::Unchanged);
    // No account: nothing to do.
    let ghost = ResourceSpec::User(UserSpec {
        name: "ghost".into(),
        home: "/home/ghost".into(),
        ..emo(UserEnsure::Locked)
    });
    assert_eq!(apply(&root, false, &ghost).unwrap(), Outcome::Unchanged);
    assert_eq!(account_files(&root), before);
}

#[test]
fn a_purged_account_has_its_home_archived_and_verified_before_removal() {
    let root = Root::fresh();
    root.run_ok(&["useradd", "-m", "-u", "1500", "-s", "/bin/bash", "emo"]);
    root.run_ok(&[
        "sh",
        "-c",
        "echo hello > /home/emo/notes.txt && chown emo:emo /home/emo/notes.txt \
         && ln -s /etc/shadow /home/emo/trap",
    ]);
    let archive_dir = "/var/backups/steward/offboarded";
    let spec = offboarded(UserEnsure::Purged {
        archive_dir: archive_dir.into(),
        terminate_sessions: true,
    });

    let before = account_files(&root);
    let outcome = apply(&root, true, &spec).unwrap();
    assert!(
        changed(&outcome).starts_with("archived /home/emo to /var/backups/steward/offboarded/emo-")
    );
    assert_eq!(account_files(&root), before, "noop wrote the account files");
    assert!(
        !root.path("/var/backups/steward").exists(),
        "noop made the archive dir"
    );
    assert!(root.path("/home/emo/notes.txt").exists());

    let outcome = apply(&root, false, &spec).unwrap();
    let message = changed(&outcome);
    let entries: Vec<String> = std::fs::read_dir(root.path(archive_dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(entries.len(), 1, "{entries:?}");
    let name = &entries[0];
    let stamp = name
        .strip_prefix("emo-")
        .and_then(|s| s.strip_suffix("Z.tar.gz"))
        .unwrap_or_else(|| panic!("{name}"));
    assert!(
        stamp.len() == 15 && stamp.as_bytes()[8] == b'T',
        "{name} is not emo-YYYYMMDDTHHMMSSZ.tar.gz"
    );
    let archive = format!("{archive_dir}/{name}");
    assert_eq!(
        message,
        format!("archived /home/emo to {archive} and removed user emo")
    );
    assert_eq!(mode_owner(&root.path(&archive)), (0o600, 0, 0));
    assert_eq!(mode_owner(&root.path(archive_dir)), (0o700, 0, 0));
    // The archive holds the home, its symlink as a symlink (never followed).
    let listing = root.run_ok(&["tar", "--list", "--verbose", "--gzip", "--file", &archive]);
    assert!(listing.contains("emo/emo "), "{listing}");
    assert!(listing.contains("emo/notes.txt"), "{listing}");
    assert!(listing.contains("emo/trap -> /etc/shadow"), "{listing}");
    assert_eq!(
        root.run_ok(&[
            "tar",
            "--extract",
            "--gzip",
            "--to-stdout",
            "--file",
            &archive,
            "emo/notes.txt"
        ]),
        "hello\n"
    );
    // The account, its private group and its home are gone.
    assert_eq!(line_of(&root, "/etc/passwd", "emo"), None);
    assert_eq!(line_of(&root, "/etc/shadow", "emo"), None);
    assert_eq!(line_of(&root, "/etc/group", "emo"), None);
    assert!(!root.path("/home/emo").exists());

    let before = account_files(&root);
    assert_eq!(apply(&root, false, &spec).unwrap(), Outcome::Unchanged);
    assert_eq!(account_files(&root), before);
}

#[test]
fn a_purge_refuses_a_home_the_user_does_not_own() {
    let root = Root::fresh();
    root.run_ok(&["useradd", "-M", "-u", "1500", "-d", "/home/emo", "emo"]);
    root.run_ok(&["mkdir", "-p", "/home/emo"]);
    let before = account_files(&root);
    let err = error_text(apply(
        &root,
        false,
        &offboarded(UserEnsure::Purged {
            archive_dir: "/var/backups/steward/offboarded".into(),
            terminate_sessions: true,
        }),
    ));
    assert!(err.contains("is owned by uid 0, not by the user"), "{err}");
    assert_eq!(account_files(&root), before);
    assert!(root.path("/home/emo").is_dir());
}

fn package(name: &str) -> ResourceSpec {
    ResourceSpec::Package(PackageSpec { name: name.into() })
}

fn package_catalog(names: &[&str]) -> steward_protocol::Catalog {
    support::catalog(
        "devvm",
        1,
        names.iter().map(|n| Resource::new(package(n))).collect(),
    )
}

#[test]
fn missing_packages_are_installed_in_one_batch() {
    let root = Root::fresh();
    let names = ["hello", "tree", "tar"];
    let catalog = package_catalog(&names);
    let host = Host::new(root.dir()).unwrap();

    // Noop: one dpkg-query for all three, nothing installed.
    let cx = Context::new(&host, true, None);
    providers::package::plan_batch(&catalog, &cx);
    let outcomes: Vec<Outcome> = names
        .iter()
        .map(|n| providers::apply(&package(n), &cx, false).unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            Outcome::changed("installed hello"),
            Outcome::changed("installed tree"),
            Outcome::Unchanged,
        ]
    );
    let stats = providers::package::stats(&cx);
    assert_eq!((stats.queries, stats.installs), (1, 0), "{stats:?}");
    assert!(!root.run(&["dpkg", "-s", "hello"]).status.success());

    // A run: the first package resource installs both missing ones with one apt-get.
    let cx = Context::new(&host, false, None);
    providers::package::plan_batch(&catalog, &cx);
    let outcomes: Vec<Outcome> = names
        .iter()
        .map(|n| providers::apply(&package(n), &cx, false).unwrap())
        .collect();
    assert_eq!(
        outcomes,
        [
            Outcome::changed("installed hello"),
            Outcome::changed("installed tree"),
            Outcome::Unchanged,
        ]
    );
    let stats = providers::package::stats(&cx);
    // One install (plus one retry only if the root's package lists had gone stale).
    assert_eq!(stats.installs, 1 + stats.updates, "{stats:?}");
    assert_eq!(stats.queries, 2, "observe + confirm: {stats:?}");
    for name in ["hello", "tree"] {
        let status = root.run_ok(&["dpkg", "-s", name]);
        assert!(status.contains("Status: install ok installed"), "{status}");
    }
    assert_eq!(root.run_ok(&["hello"]).trim(), "Hello, world!");

    // Again: all unchanged, no apt-get.
    let cx = Context::new(&host, false, None);
    providers::package::plan_batch(&catalog, &cx);
    for name in names {
        assert_eq!(
            providers::apply(&package(name), &cx, false).unwrap(),
            Outcome::Unchanged
        );
    }
    let stats = providers::package::stats(&cx);
    assert_eq!((stats.queries, stats.installs), (1, 0), "{stats:?}");
}

#[test]
fn a_package_apt_cannot_find_fails_alone_after_one_update() {
    let root = Root::fresh();
    let names = ["steward-no-such-package", "sl"];
    let catalog = package_catalog(&names);
    let host = Host::new(root.dir()).unwrap();
    let cx = Context::new(&host, false, None);
    providers::package::plan_batch(&catalog, &cx);

    let err = error_text(providers::apply(&package(names[0]), &cx, false));
    assert!(
        err.starts_with("package steward-no-such-package: apt-get install"),
        "{err}"
    );
    assert!(
        err.contains("Unable to locate package steward-no-such-package"),
        "{err}"
    );
    // The batch failed, so sl is installed on its own, and the failure stays with the bad name.
    assert_eq!(
        providers::apply(&package("sl"), &cx, false).unwrap(),
        Outcome::changed("installed sl")
    );
    // The batch, its retry after the one update of the run, the bad name alone (no second
    // update), sl alone.
    let stats = providers::package::stats(&cx);
    assert_eq!((stats.installs, stats.updates), (4, 1), "{stats:?}");
    assert!(root
        .run_ok(&["dpkg", "-s", "sl"])
        .contains("Status: install ok installed"));
}

fn exec(name: &str, command: &[&str]) -> ExecSpec {
    ExecSpec {
        name: name.into(),
        command: command.iter().map(|s| s.to_string()).collect(),
        user: None,
        cwd: None,
        creates: None,
        unless: None,
        timeout_secs: 30,
        env: BTreeMap::new(),
    }
}

#[test]
fn exec_runs_as_the_user_with_guards_env_cwd_and_timeout() {
    let root = Root::fresh();
    root.run_ok(&["groupadd", "--gid", "2345", "devs"]);
    root.run_ok(&["useradd", "-m", "-u", "1500", "-G", "devs", "emo"]);

    let mut as_emo = exec(
        "whoami",
        &[
            "sh",
            "-c",
            "id > out.txt; echo \"$HOME $USER $FOO\" >> out.txt; pwd >> out.txt",
        ],
    );
    as_emo.user = Some("emo".into());
    as_emo.cwd = Some("/home/emo".into());
    as_emo.creates = Some("/home/emo/out.txt".into());
    as_emo.env.insert("FOO".into(), "bar".into());
    let spec = ResourceSpec::Exec(as_emo);

    let outcome = apply(&root, true, &spec).unwrap();
    assert_eq!(
        outcome,
        Outcome::changed("ran: /home/emo/out.txt does not exist")
    );
    assert!(
        !root.path("/home/emo/out.txt").exists(),
        "noop ran the command"
    );

    assert_eq!(apply(&root, false, &spec).unwrap(), outcome);
    assert_eq!(
        read(&root, "/home/emo/out.txt"),
        "uid=1500(emo) gid=1500(emo) groups=1500(emo),2345(devs)\n/home/emo emo bar\n/home/emo\n"
    );
    assert_eq!(mode_owner(&root.path("/home/emo/out.txt")).1, 1500);
    assert_eq!(
        apply(&root, false, &spec).unwrap(),
        Outcome::Unchanged,
        "creates"
    );

    // `unless` exits 0: not run; exits 1: run (as root, inside the root).
    let mut guarded = exec("touch", &["touch", "/tmp/ran"]);
    guarded.unless = Some(vec!["test".into(), "-d".into(), "/etc".into()]);
    assert_eq!(
        apply(&root, false, &ResourceSpec::Exec(guarded.clone())).unwrap(),
        Outcome::Unchanged
    );
    assert!(!root.path("/tmp/ran").exists());
    guarded.unless = Some(vec!["false".into()]);
    assert_eq!(
        apply(&root, false, &ResourceSpec::Exec(guarded)).unwrap(),
        Outcome::changed("ran: `unless` exited 1")
    );
    assert_eq!(mode_owner(&root.path("/tmp/ran")).1, 0);

    let failing = exec("fails", &["sh", "-c", "echo one >&2; echo two >&2; exit 3"]);
    let err = error_text(apply(&root, false, &ResourceSpec::Exec(failing)));
    assert!(
        err.starts_with("exec fails: the command failed (exit status: 3)"),
        "{err}"
    );
    assert!(err.ends_with("one; two"), "{err}");

    let mut slow = exec("slow", &["sleep", "30"]);
    slow.timeout_secs = 1;
    let started = std::time::Instant::now();
    let err = error_text(apply(&root, false, &ResourceSpec::Exec(slow)));
    assert!(
        err.contains("did not finish within 1s and was killed"),
        "{err}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(20));

    let mut nobody = exec("nobody", &["true"]);
    nobody.user = Some("ghost".into());
    let err = error_text(apply(&root, false, &ResourceSpec::Exec(nobody)));
    assert!(
        err.contains("user \"ghost\" does not exist in the root"),
        "{err}"
    );
}

#[test]
fn a_swap_file_is_created_formatted_and_listed_in_a_root() {
    let root = Root::fresh();
    let spec = ResourceSpec::Swap(SwapSpec {
        path: "/swapfile".into(),
        size_mib: 16,
    });
    let fstab_before = read(&root, "/etc/fstab");

    assert_eq!(
        apply(&root, true, &spec).unwrap(),
        Outcome::changed("would create and format the swap file; would add it to /etc/fstab")
    );
    assert!(!root.path("/swapfile").exists(), "noop made the file");
    assert_eq!(read(&root, "/etc/fstab"), fstab_before, "noop wrote fstab");

    // Under --root nothing is activated: the fstab line does that at boot.
    assert_eq!(
        apply(&root, false, &spec).unwrap(),
        Outcome::changed("created and formatted the swap file; added to /etc/fstab")
    );
    let swapfile = root.path("/swapfile");
    assert_eq!(std::fs::metadata(&swapfile).unwrap().len(), 16 << 20);
    assert_eq!(mode_owner(&swapfile), (0o600, 0, 0));
    let probe = std::process::Command::new("blkid")
        .args(["--probe", "--match-tag", "TYPE", "--output", "value"])
        .arg(&swapfile)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&probe.stdout).trim(), "swap");
    let fstab = read(&root, "/etc/fstab");
    assert_eq!(fstab, format!("{fstab_before}/swapfile none swap sw 0 0\n"));
    assert!(
        !root.path("/.swapfile.steward-swap").exists(),
        "temp file left behind"
    );

    let fstab_inode = std::fs::metadata(root.path("/etc/fstab")).unwrap().ino();
    assert_eq!(apply(&root, false, &spec).unwrap(), Outcome::Unchanged);
    assert_eq!(
        std::fs::metadata(root.path("/etc/fstab")).unwrap().ino(),
        fstab_inode
    );

    // A loose mode is corrected; another size is reported, never resized.
    std::fs::set_permissions(
        &swapfile,
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    assert_eq!(
        apply(&root, false, &spec).unwrap(),
        Outcome::changed("set mode 0600, owner root")
    );
    assert_eq!(mode_owner(&swapfile).0, 0o600);
    let bigger = ResourceSpec::Swap(SwapSpec {
        path: "/swapfile".into(),
        size_mib: 32,
    });
    assert_eq!(
        apply(&root, false, &bigger).unwrap(),
        Outcome::Skipped(
            "/swapfile is 16 MiB, catalog wants 32 MiB; not resized (swapoff, remove it and \
             rerun to resize)"
                .into()
        )
    );
    assert_eq!(std::fs::metadata(&swapfile).unwrap().len(), 16 << 20);

    // Someone's data is never turned into swap.
    root.write("/data.img", &[7u8; 4096]);
    let data = ResourceSpec::Swap(SwapSpec {
        path: "/data.img".into(),
        size_mib: 1,
    });
    let err = error_text(apply(&root, false, &data));
    assert_eq!(
        err,
        "swap /data.img: /data.img exists and is not a swap area; refusing to overwrite it"
    );
    assert_eq!(std::fs::read(root.path("/data.img")).unwrap(), [7u8; 4096]);
}

/// Applies a one-resource catalog through the engine, as a run does, and returns its event
/// (drift notices only exist there).
fn apply_event(root: &Root, spec: ResourceSpec) -> ResourceEvent {
    let host = Host::new(root.dir()).unwrap();
    let cx = Context::new(&host, false, None);
    let catalog = support::catalog("devvm", 1, vec![Resource::new(spec)]);
    let mut events = engine::apply(
        &catalog,
        &cx,
        RunLimits { deadline: None },
        &AtomicBool::new(false),
    );
    assert_eq!(events.len(), 1);
    events.remove(0)
}

#[test]
fn a_privileged_group_outside_privileged_groups_fails_and_grants_nothing() {
    // THREATS S5: a roster line alone never grants root, even if a compiler let it through.
    let root = Root::fresh();
    root.run_ok(&["groupadd", "--gid", "2345", "devs"]);
    for (groups, named) in [(vec!["devs", "disk"], "disk"), (vec!["sudo"], "sudo")] {
        let spec = ResourceSpec::User(UserSpec {
            groups: groups.iter().map(|g| g.to_string()).collect(),
            ..emo(UserEnsure::Present)
        });
        let before = account_files(&root);
        assert_eq!(
            error_text(apply(&root, false, &spec)),
            format!(
                "user emo: {named} in groups is privileged: a privileged group must come from \
                 the tier's privileged_groups; nothing changed"
            )
        );
        assert_eq!(account_files(&root), before);
        assert!(!root.path("/home/emo").exists());
    }
    // The same group through the tier's grant is added.
    root.run_ok(&[
        "useradd",
        "-m",
        "-u",
        "1500",
        "-G",
        "devs",
        "-s",
        "/bin/bash",
        "-c",
        "Emo Person",
        "emo",
    ]);
    let granted = ResourceSpec::User(UserSpec {
        privileged_groups: vec!["disk".into()],
        ..emo(UserEnsure::Present)
    });
    let before = account_files(&root);
    let err = error_text(apply(
        &root,
        false,
        &ResourceSpec::User(UserSpec {
            groups: vec!["devs".into(), "disk".into()],
            ..emo(UserEnsure::Present)
        }),
    ));
    assert!(err.contains("disk in groups is privileged"), "{err}");
    assert_eq!(
        account_files(&root),
        before,
        "an existing account was changed"
    );
    assert_eq!(
        changed(&apply(&root, false, &granted).unwrap()),
        "updated user emo: groups +disk"
    );
    assert!(line_of(&root, "/etc/group", "disk")
        .unwrap()
        .ends_with(":emo"));
}

#[test]
fn privileged_groups_beyond_the_tier_are_drift_and_revoke_groups_removes_exactly_those() {
    let root = Root::fresh();
    root.run_ok(&["groupadd", "--gid", "2345", "devs"]);
    root.run_ok(&["groupadd", "docker"]);
    root.run_ok(&["groupadd", "extra"]);
    root.run_ok(&[
        "useradd",
        "-m",
        "-u",
        "1500",
        "-G",
        "devs,sudo,docker,extra",
        "-s",
        "/bin/bash",
        "-c",
        "Emo Person",
        "emo",
    ]);
    root.run_ok(&["useradd", "-m", "-u", "1501", "-G", "sudo", "ana"]);
    // Demoted: the tier grants no privileged group any more.
    let demoted = UserSpec {
        tier: Some("namespace-owner".into()),
        ..emo(UserEnsure::Present)
    };

    let before = account_files(&root);
    let event = apply_event(&root, ResourceSpec::User(demoted.clone()));
    assert_eq!(event.status, ResourceStatus::Unchanged, "{event:?}");
    assert_eq!(
        event.drift.as_deref(),
        Some(
            "holds privileged groups docker, sudo beyond what tier namespace-owner grants \
             (revoke with revoke_groups)"
        )
    );
    assert_eq!(account_files(&root), before, "drift changed something");

    // The explicit way to tighten: exactly the listed groups go, and only from emo.
    let revoking = UserSpec {
        revoke_groups: vec!["sudo".into(), "lxd".into()],
        ..demoted
    };
    let event = apply_event(&root, ResourceSpec::User(revoking.clone()));
    assert_eq!(event.status, ResourceStatus::Changed, "{event:?}");
    assert_eq!(
        event.message.as_deref(),
        Some("updated user emo: groups -sudo (revoke_groups)")
    );
    assert!(!event.corrective);
    assert_eq!(
        event.drift.as_deref(),
        Some(
            "holds privileged group docker beyond what tier namespace-owner grants (revoke \
             with revoke_groups)"
        )
    );
    assert_eq!(
        line_of(&root, "/etc/group", "sudo").as_deref(),
        Some("sudo:x:27:ana")
    );
    for g in ["devs", "docker", "extra"] {
        assert!(
            line_of(&root, "/etc/group", g).unwrap().ends_with(":emo"),
            "{g} lost emo"
        );
    }
    assert!(!line_of(&root, "/etc/gshadow", "sudo")
        .unwrap()
        .contains("emo"));
    assert_eq!(
        root.run_ok(&["id", "-nG", "emo"]).trim(),
        "emo devs docker extra"
    );

    let before = account_files(&root);
    let event = apply_event(&root, ResourceSpec::User(revoking));
    assert_eq!(event.status, ResourceStatus::Unchanged, "{event:?}");
    assert_eq!(account_files(&root), before);
    // Granted by the tier: no drift.
    let event = apply_event(
        &root,
        ResourceSpec::User(UserSpec {
            privileged_groups: vec!["docker".into()],
            tier: Some("admin".into()),
            ..emo(UserEnsure::Present)
        }),
    );
    assert_eq!(
        (event.status, event.drift),
        (ResourceStatus::Unchanged, None)
    );
}

/// The account record of `name`, as the agent left it.
fn record_of(root: &Root, name: &str) -> Option<serde_json::Value> {
    let path = root.path(&format!("/var/lib/steward/accounts/{name}.json"));
    std::fs::read(&path)
        .ok()
        .map(|bytes| serde_json::from_slice(&bytes).unwrap())
}

/// Offboards (`locked`) and brings back (`present`) `present`, checking the shadow line comes
/// back byte for byte. Returns the messages of the two changes.
fn offboard_and_return(root: &Root, present: &UserSpec) -> (String, String) {
    let before = line_of(root, "/etc/shadow", "emo").unwrap();
    let outcome = apply(root, false, &offboarded(UserEnsure::Locked)).unwrap();
    let locked = changed(&outcome).to_string();
    let fields: Vec<String> = line_of(root, "/etc/shadow", "emo")
        .unwrap()
        .split(':')
        .map(String::from)
        .collect();
    assert!(fields[1].starts_with('!'), "not locked: {fields:?}");
    assert_eq!(fields[7], "1", "not expired");
    assert!(record_of(root, "emo").is_some(), "no account record");
    let record = root.path("/var/lib/steward/accounts/emo.json");
    assert_eq!(mode_owner(&record), (0o600, 0, 0));
    assert_eq!(mode_owner(record.parent().unwrap()), (0o700, 0, 0));
    // Offboarded again: nothing to do.
    assert_eq!(
        apply(root, false, &offboarded(UserEnsure::Locked)).unwrap(),
        Outcome::Unchanged
    );

    let spec = ResourceSpec::User(present.clone());
    let noop = apply(root, true, &spec).unwrap();
    assert!(record_of(root, "emo").is_some(), "noop removed the record");
    let outcome = apply(root, false, &spec).unwrap();
    assert_eq!(outcome, noop);
    assert_eq!(
        line_of(root, "/etc/shadow", "emo").unwrap(),
        before,
        "the shadow line did not come back byte for byte"
    );
    assert_eq!(record_of(root, "emo"), None, "the record was kept");
    let files = account_files(root);
    assert_eq!(apply(root, false, &spec).unwrap(), Outcome::Unchanged);
    assert_eq!(account_files(root), files);
    (locked, changed(&outcome).to_string())
}

#[test]
fn offboarding_then_present_restores_the_shadow_line_exactly() {
    let root = Root::fresh();
    root.run_ok(&["groupadd", "--gid", "2345", "devs"]);
    let present = emo(UserEnsure::Present);

    // Created by Steward with a locked (`!`) password: Steward only expires it, and never
    // unlocks what it did not lock.
    apply(&root, false, &ResourceSpec::User(present.clone())).unwrap();
    assert!(line_of(&root, "/etc/shadow", "emo")
        .unwrap()
        .starts_with("emo:!:"));
    let (locked, restored) = offboard_and_return(&root, &present);
    assert_eq!(locked, "locked user emo (account expired)");
    assert_eq!(
        restored,
        "restored user emo after offboarding (expiry cleared)"
    );

    // A real password hash and an expiry date of its own.
    root.run_ok(&[
        "usermod",
        "-p",
        "$y$j9T$c2FsdHNhbHQ$0123456789abcdefghijklmnopqrstuvwxyzABCDE",
        "--expiredate",
        "2099-01-01",
        "emo",
    ]);
    let (locked, restored) = offboard_and_return(&root, &present);
    assert_eq!(locked, "locked user emo (password locked, account expired)");
    assert_eq!(
        restored,
        "restored user emo after offboarding (password unlocked, expiry restored to 2099-01-01)"
    );
    root.run_ok(&["usermod", "--expiredate", "", "emo"]);
    let (_, restored) = offboard_and_return(&root, &present);
    assert_eq!(
        restored,
        "restored user emo after offboarding (password unlocked, expiry cleared)"
    );

    // Expired by someone else (no record): left as found.
    root.run_ok(&["usermod", "--expiredate", "1", "emo"]);
    let before = account_files(&root);
    assert_eq!(
        apply(&root, false, &ResourceSpec::User(present)).unwrap(),
        Outcome::Kept(
            "account expired since 1970-01-02 and not by Steward (no offboarding record); left \
             as found"
                .into()
        )
    );
    assert_eq!(account_files(&root), before);
}

/// A process of `uid` started inside the root (chrooted, so its `/proc/PID/root` is the
/// root), reaped by a thread; killed when dropped.
struct Live {
    pid: u32,
    exited: mpsc::Receiver<()>,
}

impl Live {
    fn start(root: &Root, uid: u32) -> Live {
        let mut child = Command::new("chroot")
            .arg(root.dir())
            .args([
                "setpriv",
                &format!("--reuid={uid}"),
                &format!("--regid={uid}"),
                "--clear-groups",
                "sleep",
                "600",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting a process in the root");
        let pid = child.id();
        let (tx, exited) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = child.wait();
            let _ = tx.send(());
        });
        let host = Host::new(root.dir()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !sessions::processes(&host, uid)
            .unwrap()
            .iter()
            .any(|p| p.pid == pid as i32 && p.comm == "sleep")
        {
            assert!(Instant::now() < deadline, "the process never ran as {uid}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Live { pid, exited }
    }

    /// Whether it has exited (waiting up to `limit`).
    fn gone_within(&self, limit: Duration) -> bool {
        self.exited.recv_timeout(limit).is_ok()
    }

    fn kill(&self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.pid.to_string()])
            .stderr(Stdio::null())
            .status();
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.kill();
        let _ = self.exited.recv_timeout(Duration::from_secs(10));
    }
}

fn archives(root: &Root, dir: &str) -> Vec<String> {
    match std::fs::read_dir(root.path(dir)) {
        Ok(entries) => {
            let mut names: Vec<String> = entries
                .map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect();
            names.sort();
            names
        }
        Err(_) => Vec::new(),
    }
}

const ARCHIVE_DIR: &str = "/var/backups/steward/offboarded";

fn purged(terminate_sessions: bool) -> ResourceSpec {
    offboarded(UserEnsure::Purged {
        archive_dir: ARCHIVE_DIR.into(),
        terminate_sessions,
    })
}

#[test]
fn a_purge_ends_the_users_processes_first_then_archives_once() {
    let root = Root::fresh();
    root.run_ok(&["useradd", "-m", "-u", "1500", "-s", "/bin/bash", "emo"]);
    let live = Live::start(&root, 1500);

    let outcome = apply(&root, false, &purged(true)).unwrap();
    let message = changed(&outcome);
    assert!(
        message.starts_with(
            "ended 1 process (sleep); archived /home/emo to /var/backups/steward/offboarded/emo-"
        ),
        "{message}"
    );
    assert!(message.ends_with(" and removed user emo"), "{message}");
    assert!(
        live.gone_within(Duration::from_secs(30)),
        "the process survived"
    );
    assert_eq!(archives(&root, ARCHIVE_DIR).len(), 1);
    assert_eq!(line_of(&root, "/etc/passwd", "emo"), None);
    assert!(!root.path("/home/emo").exists());
    assert_eq!(record_of(&root, "emo"), None);

    let before = account_files(&root);
    assert_eq!(
        apply(&root, false, &purged(true)).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(account_files(&root), before);
    assert_eq!(archives(&root, ARCHIVE_DIR).len(), 1);
}

#[test]
fn a_purge_waits_for_live_processes_when_the_site_does_not_terminate_sessions() {
    let root = Root::fresh();
    root.run_ok(&["useradd", "-m", "-u", "1500", "-s", "/bin/bash", "emo"]);
    root.run_ok(&["usermod", "-p", "not-a-real-hash", "emo"]);
    let live = Live::start(&root, 1500);
    let deferred = Outcome::Deferred(
        "purge deferred: emo has 1 process (sleep); the site does not terminate sessions".into(),
    );

    let before = account_files(&root);
    assert_eq!(apply(&root, true, &purged(false)).unwrap(), deferred);
    assert_eq!(account_files(&root), before, "noop wrote the account files");
    assert_eq!(apply(&root, false, &purged(false)).unwrap(), deferred);
    assert!(!live.gone_within(Duration::ZERO), "the process was ended");
    assert!(archives(&root, ARCHIVE_DIR).is_empty(), "archived anyway");
    assert!(root.path("/home/emo").is_dir());
    // Locked meanwhile: no new logins while the purge waits.
    let shadow = line_of(&root, "/etc/shadow", "emo").unwrap();
    assert!(shadow.starts_with("emo:!not-a-real-hash:"), "{shadow}");
    assert_eq!(apply(&root, false, &purged(false)).unwrap(), deferred);

    live.kill();
    assert!(live.gone_within(Duration::from_secs(30)));
    let outcome = apply(&root, false, &purged(false)).unwrap();
    assert!(
        changed(&outcome).starts_with("archived /home/emo to "),
        "{outcome:?}"
    );
    assert_eq!(archives(&root, ARCHIVE_DIR).len(), 1);
    assert_eq!(line_of(&root, "/etc/passwd", "emo"), None);
    assert!(!root.path("/home/emo").exists());

    let before = account_files(&root);
    assert_eq!(
        apply(&root, false, &purged(false)).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(account_files(&root), before);
    assert_eq!(archives(&root, ARCHIVE_DIR).len(), 1);
}

#[test]
fn a_purge_that_failed_after_archiving_reuses_its_archive() {
    let root = Root::fresh();
    root.run_ok(&["useradd", "-m", "-u", "1500", "-s", "/bin/bash", "emo"]);
    root.run_ok(&["usermod", "--lock", "--expiredate", "1", "emo"]);
    root.write("/home/emo/notes.txt", b"keep me\n");
    // userdel cannot lock /etc/passwd while a live process (pid 1) holds its lock file.
    root.write("/etc/passwd.lock", b"1");

    let err = error_text(apply(&root, false, &purged(true)));
    assert!(err.contains("userdel"), "{err}");
    let first = archives(&root, ARCHIVE_DIR);
    assert_eq!(first.len(), 1, "{first:?}");
    let archive = format!("{ARCHIVE_DIR}/{}", first[0]);
    assert!(
        err.contains(&format!(
            "the home was archived to {archive} and left in place"
        )),
        "{err}"
    );
    assert!(line_of(&root, "/etc/passwd", "emo").is_some());
    assert_eq!(
        record_of(&root, "emo").unwrap()["archive"].as_str(),
        Some(archive.as_str())
    );

    std::fs::remove_file(root.path("/etc/passwd.lock")).unwrap();
    let outcome = apply(&root, false, &purged(true)).unwrap();
    assert_eq!(
        changed(&outcome),
        format!("removed user emo and /home/emo (archived earlier to {archive})")
    );
    assert_eq!(archives(&root, ARCHIVE_DIR), first, "a second archive");
    assert_eq!(line_of(&root, "/etc/passwd", "emo"), None);
    assert!(!root.path("/home/emo").exists());
    assert_eq!(record_of(&root, "emo"), None);
    assert_eq!(
        apply(&root, false, &purged(true)).unwrap(),
        Outcome::Unchanged
    );
}
