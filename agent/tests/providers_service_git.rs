//! The `service` and `git_clone` providers against disposable Debian roots.
//!
//! - In-process against `Root::fresh()` (an unbooted overlay root, so `Context::in_root()` is
//!   true and no systemd is running): offline enablement through `systemctl --root`, and git
//!   run as the user through `chroot --userspec`.
//! - Through the agent binary (`steward-agent run --catalog ...`) inside `Root::booted()`,
//!   where systemd is PID 1: start, no restart without a reason, restart on refresh, stop;
//!   and a clone made with the plain uid/gid drop (root `/`).

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use steward_agent::engine::{Context, Outcome};
use steward_agent::host::Host;
use steward_agent::providers;
use steward_protocol::{
    Catalog, FileContent, FileSpec, GitCloneSpec, Mode, Replace, Resource, ResourceId,
    ResourceSpec, ServiceSpec, ServiceState,
};
use support::Root;

const UNIT: &str = "[Unit]\nDescription=steward test unit\n\n[Service]\n\
                    ExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n";
const TEMPLATE: &str = "[Unit]\nDescription=steward test unit for %i\n\n[Service]\n\
                        ExecStart=/bin/sleep infinity\n\n[Install]\nWantedBy=multi-user.target\n";

/// Applies one resource in-process to an unbooted root.
fn apply(root: &Root, spec: &ResourceSpec, noop: bool, refresh: bool) -> anyhow::Result<Outcome> {
    let host = Host::new(root.dir()).unwrap();
    let cx = Context::new(&host, noop, None);
    assert!(cx.in_root() && !cx.systemd);
    providers::apply(spec, &cx, refresh)
}

fn service(name: &str, enable: bool, ensure: ServiceState) -> ResourceSpec {
    ResourceSpec::Service(ServiceSpec {
        name: name.into(),
        enable,
        ensure,
        subscribes: vec![],
        restart: Default::default(),
    })
}

fn is_enabled_offline(root: &Root, unit: &str) -> String {
    let out = std::process::Command::new("systemctl")
        .arg("--root")
        .arg(root.dir())
        .args(["is-enabled", unit])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wants_link(root: &Root, unit: &str) -> Option<std::path::PathBuf> {
    std::fs::read_link(root.path(&format!(
        "/etc/systemd/system/multi-user.target.wants/{unit}"
    )))
    .ok()
}

fn expect_skipped(outcome: Outcome) -> String {
    match outcome {
        Outcome::Skipped(reason) => reason,
        other => panic!("expected Skipped, got {other:?}"),
    }
}

fn expect_changed(outcome: Outcome) -> (String, bool) {
    match outcome {
        Outcome::Changed {
            message,
            corrective,
            ..
        } => (message, corrective),
        other => panic!("expected Changed, got {other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// service, offline (no running systemd)

#[test]
fn service_is_enabled_offline_and_the_start_is_skipped() {
    let root = Root::fresh();
    root.write("/etc/systemd/system/demo.service", UNIT.as_bytes());
    let spec = service("demo.service", true, ServiceState::Running);

    // Noop: says what it would do, writes nothing.
    let (message, _) = expect_changed(apply(&root, &spec, true, false).unwrap());
    assert!(message.starts_with("would be enabled"), "{message}");
    assert!(message.contains("no running systemd"), "{message}");
    assert_eq!(wants_link(&root, "demo.service"), None);

    let reason = expect_skipped(apply(&root, &spec, false, false).unwrap());
    assert!(reason.starts_with("no running systemd: "), "{reason}");
    assert!(
        reason.contains("enabled") && reason.contains("not started"),
        "{reason}"
    );
    assert_eq!(
        wants_link(&root, "demo.service").unwrap(),
        Path::new("/etc/systemd/system/demo.service")
    );
    assert_eq!(is_enabled_offline(&root, "demo.service"), "enabled");

    // Nothing left that can be done: unchanged, also on a refresh.
    assert_eq!(
        apply(&root, &spec, false, false).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        apply(&root, &spec, false, true).unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn template_instances_are_enabled_offline() {
    let root = Root::fresh();
    root.write("/etc/systemd/system/demo@.service", TEMPLATE.as_bytes());
    let spec = service("demo@alice.service", true, ServiceState::Running);
    let reason = expect_skipped(apply(&root, &spec, false, false).unwrap());
    assert!(reason.contains("enabled"), "{reason}");
    assert_eq!(
        wants_link(&root, "demo@alice.service").unwrap(),
        Path::new("/etc/systemd/system/demo@.service")
    );
    assert_eq!(is_enabled_offline(&root, "demo@alice.service"), "enabled");
    // Another instance is not enabled by this one.
    assert_eq!(is_enabled_offline(&root, "demo@bob.service"), "disabled");
    assert_eq!(
        apply(&root, &spec, false, false).unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn offboarding_disables_offline() {
    let root = Root::fresh();
    root.write("/etc/systemd/system/demo@.service", TEMPLATE.as_bytes());
    let on = service("demo@alice.service", true, ServiceState::Running);
    expect_skipped(apply(&root, &on, false, false).unwrap());

    let off = service("demo@alice.service", false, ServiceState::Stopped);
    let (message, _) = expect_changed(apply(&root, &off, true, false).unwrap());
    assert_eq!(message, "would be disabled");
    assert!(wants_link(&root, "demo@alice.service").is_some());

    let (message, _) = expect_changed(apply(&root, &off, false, false).unwrap());
    assert_eq!(message, "disabled");
    assert_eq!(wants_link(&root, "demo@alice.service"), None);
    assert_eq!(is_enabled_offline(&root, "demo@alice.service"), "disabled");
    assert_eq!(
        apply(&root, &off, false, false).unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn a_missing_unit_fails_clearly_and_static_units_need_no_enabling() {
    let root = Root::fresh();
    let err = apply(
        &root,
        &service("nope.service", true, ServiceState::Running),
        false,
        false,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("unit nope.service not found"),
        "{err:#}"
    );
    let err = apply(
        &root,
        &service("nope@x.service", false, ServiceState::Stopped),
        false,
        false,
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("not found"), "{err:#}");

    root.write(
        "/etc/systemd/system/plain.service",
        b"[Service]\nExecStart=/bin/sleep infinity\n",
    );
    let spec = service("plain.service", true, ServiceState::Running);
    assert_eq!(
        apply(&root, &spec, false, false).unwrap(),
        Outcome::Unchanged
    );

    let err = apply(
        &root,
        &service("--root=/tmp", true, ServiceState::Running),
        false,
        false,
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("invalid unit name"), "{err:#}");
}

#[test]
fn a_masked_unit_is_left_alone() {
    let root = Root::fresh();
    // The vendor's unit in /lib, masked by the administrator in /etc.
    root.write("/lib/systemd/system/demo.service", UNIT.as_bytes());
    std::os::unix::fs::symlink("/dev/null", root.path("/etc/systemd/system/demo.service")).unwrap();
    assert_eq!(is_enabled_offline(&root, "demo.service"), "masked");
    let err = apply(
        &root,
        &service("demo.service", true, ServiceState::Running),
        false,
        false,
    )
    .unwrap_err();
    assert!(format!("{err:#}").contains("masked; left alone"), "{err:#}");
    assert_eq!(wants_link(&root, "demo.service"), None);
    // Offboarding a masked unit has nothing to do.
    let off = service("demo.service", false, ServiceState::Stopped);
    assert_eq!(
        apply(&root, &off, false, false).unwrap(),
        Outcome::Unchanged
    );
}

// ---------------------------------------------------------------------------------------------
// git_clone, in-process (git chrooted into the root as the user)

const FIXTURE: &str = "file:///srv/fixture.git";
const CLONE: &str = "/home/alice/fixture";

/// A root with user `alice` and a root-owned bare repository `/srv/fixture.git` holding one
/// commit on `master` (pushed from the root-owned work tree `/srv/seed`).
fn git_root() -> (Root, u32) {
    let root = Root::fresh();
    root.run_ok(&["useradd", "-m", "-s", "/bin/bash", "alice"]);
    root.run_ok(&[
        "sh",
        "-c",
        "set -e; git init -q --bare /srv/fixture.git; git init -q /srv/seed; cd /srv/seed; \
         echo one > README; git add README; \
         git -c user.name=t -c user.email=t@example.com commit -qm one; \
         git push -q /srv/fixture.git HEAD:refs/heads/master",
    ]);
    let uid = root.run_ok(&["id", "-u", "alice"]).trim().parse().unwrap();
    (root, uid)
}

/// Adds a commit to the fixture's `master`; returns its id.
fn push_commit(root: &Root, line: &str) -> String {
    root.run_ok(&[
        "sh",
        "-c",
        &format!(
            "set -e; cd /srv/seed; echo {line} >> README; \
             git -c user.name=t -c user.email=t@example.com commit -qam {line}; \
             git push -q /srv/fixture.git HEAD:refs/heads/master; git rev-parse HEAD"
        ),
    ])
    .trim()
    .to_string()
}

/// A command run as alice inside the root (with her HOME, as the agent does).
fn as_alice(root: &Root, args: &[&str]) -> String {
    let mut full = vec!["runuser", "-u", "alice", "--", "env", "HOME=/home/alice"];
    full.extend_from_slice(args);
    root.run_ok(&full)
}

fn clone_head(root: &Root) -> String {
    as_alice(root, &["git", "-C", CLONE, "rev-parse", "HEAD"])
        .trim()
        .to_string()
}

fn clone_spec(refresh: bool) -> GitCloneSpec {
    GitCloneSpec {
        path: CLONE.into(),
        url: FIXTURE.into(),
        user: "alice".into(),
        branch: None,
        config: [("filter.git-crypt.required".to_string(), "true".to_string())].into(),
        remotes: [(
            "forgejo".to_string(),
            "https://forgejo.example/team/fixture.git".to_string(),
        )]
        .into(),
        refresh,
        migrate_from: None,
    }
}

fn git(spec: &GitCloneSpec) -> ResourceSpec {
    ResourceSpec::GitClone(spec.clone())
}

/// Every entry under `dir` (and `dir` itself) is owned by `uid`.
fn assert_owned_by(dir: &Path, uid: u32) {
    let meta = std::fs::symlink_metadata(dir).unwrap();
    assert_eq!(meta.uid(), uid, "{}", dir.display());
    if meta.is_dir() {
        for entry in std::fs::read_dir(dir).unwrap() {
            assert_owned_by(&entry.unwrap().path(), uid);
        }
    }
}

#[test]
fn clones_as_the_user_with_config_and_remotes_then_is_unchanged() {
    let (root, uid) = git_root();
    let spec = clone_spec(false);

    let (message, _) = expect_changed(apply(&root, &git(&spec), true, false).unwrap());
    assert!(message.starts_with("would: "), "{message}");
    assert!(
        message.contains("cloned file:///srv/fixture.git as alice"),
        "{message}"
    );
    assert!(!root.path(CLONE).exists());
    assert!(!root.path("/home/alice/.gitconfig").exists());

    let (message, corrective) = expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    assert!(
        message.contains("cloned file:///srv/fixture.git as alice"),
        "{message}"
    );
    assert!(
        message.contains("safe.directory /srv/fixture.git"),
        "{message}"
    );
    assert!(!corrective);

    assert_eq!(
        std::fs::read_to_string(root.path("/home/alice/fixture/README")).unwrap(),
        "one\n"
    );
    assert_owned_by(&root.path(CLONE), uid);
    let mode = |p: &str| std::fs::metadata(root.path(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("/home/alice/fixture/README"), 0o644);
    assert_eq!(mode("/home/alice/fixture"), 0o755);
    let config = std::fs::read_to_string(root.path("/home/alice/fixture/.git/config")).unwrap();
    assert!(config.contains("url = file:///srv/fixture.git"), "{config}");
    assert!(config.contains("[remote \"forgejo\"]"), "{config}");
    assert!(
        config.contains("url = https://forgejo.example/team/fixture.git"),
        "{config}"
    );
    assert!(config.contains("[filter \"git-crypt\"]"), "{config}");
    assert!(config.contains("required = true"), "{config}");
    assert!(!config.contains('@'), "no credentials: {config}");
    assert!(!config.contains("hooksPath"), "{config}");
    // The trust entry is alice's own, in her own file.
    let gitconfig = root.path("/home/alice/.gitconfig");
    assert_eq!(std::fs::metadata(&gitconfig).unwrap().uid(), uid);
    let text = std::fs::read_to_string(&gitconfig).unwrap();
    assert!(text.contains("directory = /srv/fixture.git"), "{text}");

    assert_eq!(
        apply(&root, &git(&spec), false, false).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        apply(&root, &git(&spec), true, false).unwrap(),
        Outcome::Unchanged
    );

    // Drift, made by alice: a config value and a remote URL; corrected, nothing else.
    as_alice(
        &root,
        &[
            "git",
            "-C",
            CLONE,
            "config",
            "filter.git-crypt.required",
            "false",
        ],
    );
    as_alice(
        &root,
        &[
            "git",
            "-C",
            CLONE,
            "remote",
            "set-url",
            "forgejo",
            "https://elsewhere.example/x.git",
        ],
    );
    let (message, corrective) = expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    assert_eq!(
        message,
        "corrected config filter.git-crypt.required; corrected remote forgejo"
    );
    assert!(corrective);
    let config = std::fs::read_to_string(root.path("/home/alice/fixture/.git/config")).unwrap();
    assert!(config.contains("required = true") && !config.contains("elsewhere"));
    assert_owned_by(&root.path(CLONE), uid);
    assert_eq!(
        apply(&root, &git(&spec), false, false).unwrap(),
        Outcome::Unchanged
    );
    // The trust entry was added once.
    let text = std::fs::read_to_string(&gitconfig).unwrap();
    assert_eq!(text.matches("/srv/fixture.git").count(), 1, "{text}");
}

fn expect_kept(outcome: Outcome) -> String {
    match outcome {
        Outcome::Kept(reason) => reason,
        other => panic!("expected Kept, got {other:?}"),
    }
}

/// What a kept path must still be: (inode, mtime, ctime, mode, uid) of the path itself,
/// and a listing of everything beneath it with content digests.
fn snapshot(root: &Root, path: &str) -> (u64, i64, i64, u32, u32, String) {
    let meta = std::fs::symlink_metadata(root.path(path)).unwrap();
    let listing = root.run_ok(&[
        "sh",
        "-c",
        &format!(
            "cd {path} 2>/dev/null && find . -path ./.git/index -prune -o -printf '%p %m %U\\n' \
             -type f -exec sha256sum {{}} + | sort || true"
        ),
    ]);
    if meta.is_dir() {
        assert!(listing.starts_with(". "), "{path}: {listing}");
    }
    (
        meta.ino(),
        meta.mtime(),
        meta.ctime(),
        meta.mode() & 0o7777,
        meta.uid(),
        listing,
    )
}

/// Applies `spec` twice (and once under noop): each time `kept` with the same reason, and
/// `watched` exactly as before. Returns the reason.
#[track_caller]
fn kept_twice(root: &Root, spec: &GitCloneSpec, watched: &[&str]) -> String {
    let before: Vec<_> = watched.iter().map(|p| snapshot(root, p)).collect();
    let reason = expect_kept(apply(root, &git(spec), false, false).unwrap());
    assert_eq!(
        expect_kept(apply(root, &git(spec), false, false).unwrap()),
        reason
    );
    assert_eq!(
        expect_kept(apply(root, &git(spec), true, false).unwrap()),
        reason
    );
    let after: Vec<_> = watched.iter().map(|p| snapshot(root, p)).collect();
    assert_eq!(before, after, "{reason}");
    reason
}

#[test]
fn an_existing_path_that_is_not_that_clone_is_kept_as_found() {
    let (root, uid) = git_root();
    // alice's own directory with a file in it.
    as_alice(
        &root,
        &[
            "sh",
            "-c",
            "mkdir /home/alice/fixture && echo mine > /home/alice/fixture/todo",
        ],
    );
    let reason = kept_twice(&root, &clone_spec(false), &[CLONE]);
    assert_eq!(
        reason,
        "/home/alice/fixture exists and is not a clone of file:///srv/fixture.git (a directory \
         that is not the top of a git work tree); left as found"
    );
    assert!(!root.path("/home/alice/fixture/.git").exists());
    assert_owned_by(&root.path(CLONE), uid);

    // A regular file, a directory of another user, a symlink into another user's tree.
    as_alice(&root, &["sh", "-c", "echo x > /home/alice/file"]);
    let mut spec = clone_spec(false);
    spec.path = "/home/alice/file".into();
    let reason = kept_twice(&root, &spec, &["/home/alice/file"]);
    assert!(
        reason.ends_with("(it is a regular file); left as found"),
        "{reason}"
    );
    root.run_ok(&["mkdir", "/home/alice/rootdir"]);
    spec.path = "/home/alice/rootdir".into();
    let reason = kept_twice(&root, &spec, &["/home/alice/rootdir"]);
    assert!(reason.contains("owned by uid 0"), "{reason}");
    as_alice(&root, &["ln", "-s", "/srv/seed", "/home/alice/code"]);
    spec.path = "/home/alice/code".into();
    let reason = kept_twice(&root, &spec, &["/home/alice/code", "/srv/seed"]);
    assert_eq!(
        reason,
        "/home/alice/code exists and is not a clone of file:///srv/fixture.git (it is a \
         symlink); left as found"
    );
    // Beneath that symlink (the workspace layout's ~/code/infra): kept, nothing followed.
    spec.path = "/home/alice/code/infra".into();
    let reason = kept_twice(&root, &spec, &["/home/alice/code", "/srv/seed"]);
    assert_eq!(
        reason,
        "not cloned: the parent /home/alice/code is a symlink; left as found"
    );
    assert!(!root.path("/srv/seed/infra").exists());

    // Another repository: alice's own without origin, and a clone of another URL.
    as_alice(&root, &["git", "init", "-q", "/home/alice/own"]);
    spec.path = "/home/alice/own".into();
    let reason = kept_twice(&root, &spec, &["/home/alice/own"]);
    assert_eq!(
        reason,
        "/home/alice/own is a git work tree without an origin remote, not a clone of \
         file:///srv/fixture.git; left as found"
    );
    root.run_ok(&[
        "sh",
        "-c",
        "git clone -q --bare /srv/fixture.git /srv/other.git && chown -R alice: /srv/other.git",
    ]);
    as_alice(
        &root,
        &[
            "git",
            "clone",
            "-q",
            "file:///srv/other.git",
            "/home/alice/other",
        ],
    );
    spec.path = "/home/alice/other".into();
    let reason = kept_twice(&root, &spec, &["/home/alice/other"]);
    assert_eq!(
        reason,
        "/home/alice/other is a clone of file:///srv/other.git, not of \
         file:///srv/fixture.git; left as found"
    );
    let config = std::fs::read_to_string(root.path("/home/alice/other/.git/config")).unwrap();
    assert!(
        !config.contains("forgejo") && !config.contains("git-crypt"),
        "{config}"
    );

    // An empty directory of alice's (an interrupted clone) is cloned into.
    as_alice(&root, &["mkdir", "/home/alice/empty"]);
    spec.path = "/home/alice/empty".into();
    expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    assert!(root.path("/home/alice/empty/README").is_file());
    assert_owned_by(&root.path("/home/alice/empty"), uid);

    // A missing parent still fails (the engine orders the directory resource first).
    spec.path = "/home/alice/no/such/dir".into();
    let text = format!("{:#}", apply(&root, &git(&spec), false, false).unwrap_err());
    assert!(
        text.contains("parent directory /home/alice/no/such does not exist"),
        "{text}"
    );
}

#[test]
fn never_clones_inside_a_work_tree() {
    let (root, _) = git_root();
    expect_changed(apply(&root, &git(&clone_spec(false)), false, false).unwrap());
    let mut spec = clone_spec(false);
    spec.path = format!("{CLONE}/nested");
    let reason = kept_twice(&root, &spec, &[CLONE]);
    assert_eq!(
        reason,
        "/home/alice/fixture/nested would be inside the work tree /home/alice/fixture; not \
         cloned"
    );
    assert!(!root.path("/home/alice/fixture/nested").exists());
    // Also an empty directory there, and deeper down.
    as_alice(&root, &["mkdir", "-p", "/home/alice/fixture/a/b"]);
    spec.path = format!("{CLONE}/a/b");
    let reason = expect_kept(apply(&root, &git(&spec), false, false).unwrap());
    assert!(reason.ends_with("inside the work tree /home/alice/fixture; not cloned"));
    assert_eq!(
        std::fs::read_dir(root.path("/home/alice/fixture/a/b"))
            .unwrap()
            .count(),
        0
    );
}

/// alice's clone of the fixture at `~/code`, made by the provider (the `single` layout),
/// and the spec of the `workspace` layout's `~/code/infra` migrating from it.
fn single_layout(root: &Root) -> GitCloneSpec {
    let mut single = clone_spec(false);
    single.path = "/home/alice/code".into();
    expect_changed(apply(root, &git(&single), false, false).unwrap());
    let mut infra = single;
    infra.path = "/home/alice/code/infra".into();
    infra.migrate_from = Some("/home/alice/code".into());
    infra
}

fn git_in(root: &Root, dir: &str, args: &[&str]) -> String {
    let mut full = vec!["git", "-C", dir];
    full.extend_from_slice(args);
    as_alice(root, &full).trim().to_string()
}

#[test]
fn a_clean_clone_moves_into_the_workspace_layout() {
    let (root, uid) = git_root();
    let spec = single_layout(&root);
    as_alice(&root, &["chmod", "0750", "/home/alice/code"]);
    let head = git_in(&root, "/home/alice/code", &["rev-parse", "HEAD"]);
    let objects = git_in(
        &root,
        "/home/alice/code",
        &["cat-file", "--batch-all-objects", "--batch-check"],
    );
    let inode = std::fs::metadata(root.path("/home/alice/code"))
        .unwrap()
        .ino();
    assert!(!objects.is_empty());

    // Noop: would move, nothing moved.
    let (message, _) = expect_changed(apply(&root, &git(&spec), true, false).unwrap());
    assert_eq!(
        message,
        "would: moved the clone /home/alice/code to /home/alice/code/infra"
    );
    assert!(root.path("/home/alice/code/.git").is_dir());
    assert!(!root.path("/home/alice/code/infra").exists());

    let (message, corrective) = expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    assert_eq!(
        message,
        "moved the clone /home/alice/code to /home/alice/code/infra"
    );
    assert!(!corrective);
    // The same clone (inode, HEAD, objects), ~/code now a plain directory of alice's with
    // the old mode, holding only the clone: no nesting, no temp sibling.
    let infra = "/home/alice/code/infra";
    assert_eq!(std::fs::metadata(root.path(infra)).unwrap().ino(), inode);
    assert_eq!(git_in(&root, infra, &["rev-parse", "HEAD"]), head);
    assert_eq!(
        git_in(
            &root,
            infra,
            &["cat-file", "--batch-all-objects", "--batch-check"]
        ),
        objects
    );
    assert_eq!(git_in(&root, infra, &["status", "--porcelain"]), "");
    assert_eq!(
        git_in(&root, infra, &["rev-parse", "--show-toplevel"]),
        infra
    );
    let code = std::fs::symlink_metadata(root.path("/home/alice/code")).unwrap();
    assert!(code.is_dir());
    assert_ne!(code.ino(), inode);
    assert_eq!((code.mode() & 0o7777, code.uid()), (0o750, uid));
    let names: Vec<_> = std::fs::read_dir(root.path("/home/alice/code"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(names, ["infra"]);
    let home: Vec<_> = std::fs::read_dir(root.path("/home/alice"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("steward"))
        .collect();
    assert!(home.is_empty(), "{home:?}");
    assert_owned_by(&root.path(infra), uid);

    // Converged: a second apply (and noop) is unchanged.
    assert_eq!(
        apply(&root, &git(&spec), false, false).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(
        apply(&root, &git(&spec), true, false).unwrap(),
        Outcome::Unchanged
    );
    // A sibling clone of the new layout is no longer inside a work tree.
    let mut sibling = clone_spec(false);
    sibling.path = "/home/alice/code/tripit".into();
    expect_changed(apply(&root, &git(&sibling), false, false).unwrap());
    assert!(root.path("/home/alice/code/tripit/README").is_file());
}

#[test]
fn a_clean_clone_elsewhere_is_renamed_into_place() {
    let (root, uid) = git_root();
    let mut old = clone_spec(false);
    old.path = "/home/alice/src".into();
    expect_changed(apply(&root, &git(&old), false, false).unwrap());
    let inode = std::fs::metadata(root.path("/home/alice/src"))
        .unwrap()
        .ino();
    as_alice(&root, &["mkdir", "/home/alice/code"]);
    let mut spec = clone_spec(false);
    spec.path = "/home/alice/code/fixture".into();
    spec.migrate_from = Some("/home/alice/src".into());
    let (message, _) = expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    assert_eq!(
        message,
        "moved the clone /home/alice/src to /home/alice/code/fixture"
    );
    assert!(!root.path("/home/alice/src").exists());
    let moved = std::fs::metadata(root.path("/home/alice/code/fixture")).unwrap();
    assert_eq!((moved.ino(), moved.uid()), (inode, uid));
    assert_eq!(
        git_in(
            &root,
            "/home/alice/code/fixture",
            &["status", "--porcelain"]
        ),
        ""
    );
    assert_eq!(
        apply(&root, &git(&spec), false, false).unwrap(),
        Outcome::Unchanged
    );
}

#[test]
fn a_clone_with_work_in_it_is_kept_and_nothing_is_cloned_into_it() {
    let (root, _) = git_root();
    let spec = single_layout(&root);
    let code = "/home/alice/code";
    let not_moved = "; not moved to /home/alice/code/infra, and nothing cloned";

    // Untracked work.
    as_alice(&root, &["sh", "-c", "echo draft > /home/alice/code/notes"]);
    let reason = kept_twice(&root, &spec, &[code]);
    assert_eq!(
        reason,
        format!("{code} has uncommitted or untracked changes{not_moved}")
    );
    assert!(!root.path("/home/alice/code/infra").exists());

    // Committed, not pushed.
    git_in(&root, code, &["add", "notes"]);
    git_in(
        &root,
        code,
        &[
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@example.com",
            "commit",
            "-qm",
            "notes",
        ],
    );
    let reason = kept_twice(&root, &spec, &[code]);
    assert_eq!(
        reason,
        format!("{code} has commits that are on no remote-tracking branch{not_moved}")
    );
    // The same on another local branch, HEAD back on master.
    git_in(&root, code, &["branch", "-q", "wip"]);
    git_in(&root, code, &["reset", "-q", "--hard", "origin/master"]);
    let reason = kept_twice(&root, &spec, &[code]);
    assert!(reason.contains("no remote-tracking branch"), "{reason}");
    git_in(&root, code, &["branch", "-q", "-D", "wip"]);

    // Another remote.
    git_in(
        &root,
        code,
        &[
            "remote",
            "set-url",
            "origin",
            "https://forgejo.example/other.git",
        ],
    );
    let reason = kept_twice(&root, &spec, &[code]);
    assert_eq!(
        reason,
        format!(
            "{code} is a clone of https://forgejo.example/other.git, not of \
             file:///srv/fixture.git{not_moved}"
        )
    );
    assert!(!root.path("/home/alice/code/infra").exists());

    // Clean again, but an interrupted move left its hidden sibling: kept, nothing moved.
    git_in(&root, code, &["remote", "set-url", "origin", FIXTURE]);
    as_alice(&root, &["mkdir", "/home/alice/.code.steward-migrate"]);
    let reason = kept_twice(&root, &spec, &[code, "/home/alice/.code.steward-migrate"]);
    assert!(
        reason.starts_with(
            "/home/alice/.code.steward-migrate is left from an interrupted move of \
             /home/alice/code; nothing moved or cloned"
        ),
        "{reason}"
    );
    as_alice(&root, &["rmdir", "/home/alice/.code.steward-migrate"]);
    // Then it moves.
    let (message, _) = expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    assert_eq!(
        message,
        "moved the clone /home/alice/code to /home/alice/code/infra"
    );
}

#[test]
fn without_migrate_from_the_new_layout_never_nests_into_the_old_clone() {
    let (root, _) = git_root();
    let mut spec = single_layout(&root);
    spec.migrate_from = None;
    let reason = kept_twice(&root, &spec, &["/home/alice/code"]);
    assert_eq!(
        reason,
        "/home/alice/code/infra would be inside the work tree /home/alice/code; not cloned"
    );
    assert!(!root.path("/home/alice/code/infra").exists());
    // A symlink at migrate_from (a ~/code pointing elsewhere) is kept the same way.
    let mut elsewhere = clone_spec(false);
    as_alice(&root, &["ln", "-s", "/srv/seed", "/home/alice/src"]);
    elsewhere.path = "/home/alice/infra".into();
    elsewhere.migrate_from = Some("/home/alice/src".into());
    let reason = kept_twice(&root, &elsewhere, &["/home/alice/src", "/srv/seed"]);
    assert_eq!(
        reason,
        "/home/alice/src is a symlink; not moved to /home/alice/infra, and nothing cloned"
    );
    assert!(!root.path("/home/alice/infra").exists());
}

#[test]
fn refresh_fast_forwards_the_default_branch() {
    let (root, uid) = git_root();
    let spec = clone_spec(true);
    expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    let first = clone_head(&root);
    assert_eq!(
        apply(&root, &git(&spec), false, false).unwrap(),
        Outcome::Unchanged
    );

    let second = push_commit(&root, "two");
    // Noop asks the remote (read-only) and says what it would do.
    let (message, _) = expect_changed(apply(&root, &git(&spec), true, false).unwrap());
    assert!(
        message.starts_with(&format!("would: fast-forwarded master {}", &first[..12])),
        "{message}"
    );
    assert_eq!(clone_head(&root), first);

    let (message, corrective) = expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    assert_eq!(
        message,
        format!("fast-forwarded master {}..{}", &first[..12], &second[..12])
    );
    assert!(!corrective);
    assert_eq!(clone_head(&root), second);
    assert_eq!(
        std::fs::read_to_string(root.path("/home/alice/fixture/README")).unwrap(),
        "one\ntwo\n"
    );
    assert_owned_by(&root.path(CLONE), uid);
    assert_eq!(
        apply(&root, &git(&spec), false, false).unwrap(),
        Outcome::Unchanged
    );

    // Local commits ahead of origin are not a reason to do anything.
    as_alice(
        &root,
        &[
            "git",
            "-C",
            CLONE,
            "-c",
            "user.name=a",
            "-c",
            "user.email=a@example.com",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "local",
        ],
    );
    assert_eq!(
        apply(&root, &git(&spec), false, false).unwrap(),
        Outcome::Unchanged
    );
    // Diverged: left alone (fast-forward only).
    let ahead = clone_head(&root);
    push_commit(&root, "three");
    assert_eq!(
        apply(&root, &git(&spec), false, false).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(clone_head(&root), ahead);
}

#[test]
fn refresh_leaves_a_dirty_tree_or_another_branch_alone() {
    let (root, _) = git_root();
    let mut spec = clone_spec(true);
    expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    let first = clone_head(&root);

    as_alice(
        &root,
        &["sh", "-c", "echo wip >> /home/alice/fixture/README"],
    );
    push_commit(&root, "two");
    assert_eq!(
        apply(&root, &git(&spec), false, false).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(clone_head(&root), first);
    assert_eq!(
        std::fs::read_to_string(root.path("/home/alice/fixture/README")).unwrap(),
        "one\nwip\n"
    );
    // When something else changes, the reason is in the message.
    spec.config
        .insert("core.autocrlf".to_string(), "input".to_string());
    let (message, _) = expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    assert_eq!(
        message,
        "set config core.autocrlf; not refreshed: the work tree has uncommitted or untracked \
         changes"
    );
    assert_eq!(clone_head(&root), first);

    // Clean, but on another branch.
    as_alice(
        &root,
        &[
            "sh",
            "-c",
            "cd /home/alice/fixture && git checkout -q -- README && git checkout -q -b feature",
        ],
    );
    assert_eq!(
        apply(&root, &git(&spec), false, false).unwrap(),
        Outcome::Unchanged
    );
    assert_eq!(clone_head(&root), first);
    // Back on the default branch it catches up.
    as_alice(&root, &["git", "-C", CLONE, "checkout", "-q", "master"]);
    let (message, _) = expect_changed(apply(&root, &git(&spec), false, false).unwrap());
    assert!(message.starts_with("fast-forwarded master"), "{message}");
}

#[test]
fn urls_other_than_https_and_file_or_with_credentials_are_refused() {
    let (root, _) = git_root();
    for (url, why) in [
        (
            "ssh://git@forgejo.example/team/x.git",
            "only https:// and file://",
        ),
        (
            "https://user:pw@forgejo.example/team/x.git",
            "carries user info",
        ),
        (
            "git@forgejo.example:team/x.git",
            "only https:// and file://",
        ),
    ] {
        let mut spec = clone_spec(false);
        spec.url = url.into();
        let text = format!("{:#}", apply(&root, &git(&spec), false, false).unwrap_err());
        assert!(text.contains(why), "{url}: {text}");
        assert!(!text.contains("pw"), "{text}");
        assert!(!root.path(CLONE).exists());
    }
    let mut spec = clone_spec(false);
    spec.remotes.insert(
        "forgejo".into(),
        "https://tok:en@forgejo.example/x.git".into(),
    );
    let text = format!("{:#}", apply(&root, &git(&spec), false, false).unwrap_err());
    assert!(
        text.contains("carries user info") && !text.contains("tok"),
        "{text}"
    );
    assert!(!root.path(CLONE).exists());
}

// ---------------------------------------------------------------------------------------------
// Through the agent in a booted root (systemd as PID 1)

const NODE: &str = "node1.test";

/// Runs `steward-agent run --catalog` on `catalog` inside the root; returns the report.
fn agent_run(root: &Root, catalog: &Catalog) -> serde_json::Value {
    agent_run_with(root, catalog, &[])
}

fn agent_run_with(root: &Root, catalog: &Catalog, extra: &[&str]) -> serde_json::Value {
    root.run_catalog(catalog, NODE, extra)
}

/// `(status, message)` of resource `id` in a report.
fn event(report: &serde_json::Value, id: &str) -> (String, String) {
    let events = report["events"].as_array().expect("events in the report");
    let e = events
        .iter()
        .find(|e| e["resource"] == id)
        .unwrap_or_else(|| panic!("no event for {id}: {report:#}"));
    (
        e["status"].as_str().unwrap_or_default().to_string(),
        e["message"].as_str().unwrap_or_default().to_string(),
    )
}

fn changed_count(report: &serde_json::Value) -> u64 {
    report["totals"]["changed"]
        .as_u64()
        .expect("totals.changed")
}

fn unit_show(root: &Root, property: &str, unit: &str) -> String {
    root.run_ok(&["systemctl", "show", "-p", property, "--value", unit])
        .trim()
        .to_string()
}

fn is_active(root: &Root, unit: &str) -> String {
    String::from_utf8_lossy(&root.run(&["systemctl", "is-active", unit]).stdout)
        .trim()
        .to_string()
}

fn service_resource(name: &str, enable: bool, ensure: ServiceState) -> Resource {
    Resource::new(service(name, enable, ensure))
}

#[test]
fn booted_service_starts_once_and_offboarding_stops_it() {
    let root = Root::booted();
    root.install_agent();
    root.write("/etc/systemd/system/demo.service", UNIT.as_bytes());
    root.write("/etc/systemd/system/demo@.service", TEMPLATE.as_bytes());
    let resources = || {
        vec![
            service_resource("demo.service", true, ServiceState::Running),
            service_resource("demo@alice.service", true, ServiceState::Running),
        ]
    };

    // Noop: would change, nothing done.
    let report = agent_run_with(&root, &support::catalog(NODE, 1, resources()), &["--noop"]);
    for unit in ["demo.service", "demo@alice.service"] {
        let (status, message) = event(&report, &format!("service:{unit}"));
        assert_eq!(status, "would_change", "{unit}: {message}");
        assert_eq!(message, "would be enabled, started", "{unit}");
        assert_eq!(is_active(&root, unit), "inactive");
        assert_eq!(unit_show(&root, "UnitFileState", unit), "disabled");
    }

    let report = agent_run(&root, &support::catalog(NODE, 2, resources()));
    for unit in ["demo.service", "demo@alice.service"] {
        let (status, message) = event(&report, &format!("service:{unit}"));
        assert_eq!(status, "changed", "{unit}: {message}");
        assert_eq!(message, "enabled, started", "{unit}");
        assert_eq!(is_active(&root, unit), "active");
        assert_eq!(unit_show(&root, "UnitFileState", unit), "enabled");
    }
    let pid = unit_show(&root, "MainPID", "demo.service");
    assert_ne!(pid, "0");

    // Second run: nothing to do, and no restart.
    let report = agent_run(&root, &support::catalog(NODE, 3, resources()));
    assert_eq!(changed_count(&report), 0, "{report:#}");
    assert_eq!(event(&report, "service:demo.service").0, "unchanged");
    assert_eq!(unit_show(&root, "MainPID", "demo.service"), pid);

    // Stopped by hand: started again (drift).
    root.run_ok(&["systemctl", "stop", "demo.service"]);
    let report = agent_run(&root, &support::catalog(NODE, 4, resources()));
    assert_eq!(event(&report, "service:demo.service").1, "started");
    assert_eq!(is_active(&root, "demo.service"), "active");

    // Offboarding.
    let off = vec![
        service_resource("demo.service", false, ServiceState::Stopped),
        service_resource("demo@alice.service", false, ServiceState::Stopped),
    ];
    let report = agent_run(&root, &support::catalog(NODE, 5, off.clone()));
    for unit in ["demo.service", "demo@alice.service"] {
        let (status, message) = event(&report, &format!("service:{unit}"));
        assert_eq!(
            (status.as_str(), message.as_str()),
            ("changed", "disabled, stopped")
        );
        assert_eq!(is_active(&root, unit), "inactive");
        assert_eq!(unit_show(&root, "UnitFileState", unit), "disabled");
    }
    let report = agent_run(&root, &support::catalog(NODE, 6, off));
    assert_eq!(changed_count(&report), 0, "{report:#}");
}

/// Needs the `file` provider (built concurrently by another engineer).
#[test]
fn booted_service_restarts_when_a_subscribed_file_changes() {
    let root = Root::booted();
    root.install_agent();
    root.write(
        "/etc/systemd/system/demo.service",
        b"[Service]\nEnvironmentFile=/etc/demo.env\nExecStart=/bin/sleep infinity\n\n\
          [Install]\nWantedBy=multi-user.target\n",
    );
    root.run_ok(&["mkdir", "/etc/systemd/system/demo.service.d"]);
    let file = |path: &str, content: &str| {
        Resource::new(ResourceSpec::File(FileSpec {
            path: path.into(),
            owner: "root".into(),
            group: "root".into(),
            mode: Mode(0o644),
            content: FileContent::Text(content.into()),
            replace: Replace::Always,
            backup: false,
        }))
    };
    // An environment file (read at start) and a drop-in (needs a daemon-reload).
    let resources = |env: &str, drop_in: &str| {
        let files = [
            file("/etc/demo.env", env),
            file(
                "/etc/systemd/system/demo.service.d/steward.conf",
                &format!("[Service]\nEnvironment=DROPIN={drop_in}\n"),
            ),
        ];
        let ids: Vec<ResourceId> = files.iter().map(|f| f.id.clone()).collect();
        let mut svc = Resource::new(ResourceSpec::Service(ServiceSpec {
            name: "demo.service".into(),
            enable: true,
            ensure: ServiceState::Running,
            subscribes: ids.clone(),
            restart: Default::default(),
        }));
        // `requires` too: the engine orders by `requires` only.
        for id in ids {
            svc = svc.requiring(id);
        }
        let mut all = files.to_vec();
        all.push(svc);
        all
    };

    let report = agent_run(&root, &support::catalog(NODE, 1, resources("A=1\n", "1")));
    assert_eq!(
        event(&report, "file:/etc/demo.env").0,
        "changed",
        "{report:#}"
    );
    // Not running yet: a refresh just starts it.
    assert_eq!(
        event(&report, "service:demo.service").1,
        "enabled, started",
        "{report:#}"
    );
    let pid = unit_show(&root, "MainPID", "demo.service");
    assert_eq!(unit_show(&root, "Environment", "demo.service"), "DROPIN=1");

    let report = agent_run(&root, &support::catalog(NODE, 2, resources("A=1\n", "1")));
    assert_eq!(changed_count(&report), 0, "{report:#}");
    assert_eq!(unit_show(&root, "MainPID", "demo.service"), pid);

    let restarted = (
        "changed".to_string(),
        "restarted (subscribed resource changed)".to_string(),
    );
    let report = agent_run(&root, &support::catalog(NODE, 3, resources("A=2\n", "1")));
    assert_eq!(
        event(&report, "service:demo.service"),
        restarted,
        "{report:#}"
    );
    let new_pid = unit_show(&root, "MainPID", "demo.service");
    assert_ne!(new_pid, pid);
    assert_ne!(new_pid, "0");
    assert_eq!(is_active(&root, "demo.service"), "active");

    // A changed drop-in: reloaded, then restarted with the new setting.
    let report = agent_run(&root, &support::catalog(NODE, 4, resources("A=2\n", "2")));
    assert_eq!(
        event(&report, "service:demo.service"),
        restarted,
        "{report:#}"
    );
    assert_eq!(unit_show(&root, "Environment", "demo.service"), "DROPIN=2");
    assert_eq!(unit_show(&root, "NeedDaemonReload", "demo.service"), "no");
    assert_ne!(unit_show(&root, "MainPID", "demo.service"), new_pid);
}

#[test]
fn booted_clone_as_the_user_with_the_uid_drop() {
    let root = Root::booted();
    root.install_agent();
    root.run_ok(&["useradd", "-m", "alice"]);
    root.run_ok(&[
        "sh",
        "-c",
        "set -e; git init -q --bare /srv/fixture.git; git init -q /srv/seed; cd /srv/seed; \
         echo one > README; git add README; \
         git -c user.name=t -c user.email=t@example.com commit -qm one; \
         git push -q /srv/fixture.git HEAD:refs/heads/master",
    ]);
    let uid: u32 = root.run_ok(&["id", "-u", "alice"]).trim().parse().unwrap();
    let resources = || vec![Resource::new(git(&clone_spec(true)))];

    let report = agent_run(&root, &support::catalog(NODE, 1, resources()));
    let (status, message) = event(&report, "git_clone:/home/alice/fixture");
    assert_eq!(status, "changed", "{message}");
    assert!(
        message.contains("cloned file:///srv/fixture.git as alice"),
        "{message}"
    );
    assert_owned_by(&root.path(CLONE), uid);
    // The agent runs with umask 077; the clone gets the usual 022 (as alice would).
    let mode = |p: &str| std::fs::metadata(root.path(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("/home/alice/fixture/README"), 0o644);
    assert_eq!(mode("/home/alice/fixture/.git"), 0o755);
    assert_eq!(mode("/home/alice/fixture"), 0o755);
    assert_eq!(
        std::fs::metadata(root.path("/home/alice/.gitconfig"))
            .unwrap()
            .uid(),
        uid
    );

    let report = agent_run(&root, &support::catalog(NODE, 2, resources()));
    assert_eq!(changed_count(&report), 0, "{report:#}");
}

/// The agent chrooted into an unbooted root with `/` as its root (an image being built): plain
/// `systemctl enable` works offline, the start is skipped, git runs with the uid drop.
#[test]
fn chrooted_agent_enables_offline_and_clones() {
    let (root, uid) = git_root();
    root.install_agent();
    root.write("/etc/systemd/system/demo.service", UNIT.as_bytes());
    let resources = || {
        vec![
            service_resource("demo.service", true, ServiceState::Running),
            Resource::new(git(&clone_spec(false))),
        ]
    };
    let report = agent_run(&root, &support::catalog(NODE, 1, resources()));
    let (status, message) = event(&report, "service:demo.service");
    assert_eq!(status, "skipped", "{report:#}");
    assert_eq!(message, "no running systemd: enabled; not started");
    assert_eq!(is_enabled_offline(&root, "demo.service"), "enabled");
    assert_eq!(event(&report, "git_clone:/home/alice/fixture").0, "changed");
    assert_owned_by(&root.path(CLONE), uid);

    let report = agent_run(&root, &support::catalog(NODE, 2, resources()));
    assert_eq!(event(&report, "service:demo.service").0, "unchanged");
    assert_eq!(changed_count(&report), 0, "{report:#}");
}

#[test]
fn chrooted_agent_reports_a_symlinked_code_dir_as_kept_and_exits_clean() {
    let (root, _) = git_root();
    root.install_agent();
    // The brownfield ~/code: a symlink into another user's tree.
    as_alice(&root, &["ln", "-s", "/srv/seed", "/home/alice/code"]);
    let mut single = clone_spec(false);
    single.path = "/home/alice/code".into();
    let mut infra = clone_spec(false);
    infra.path = "/home/alice/code/infra".into();
    infra.migrate_from = Some("/home/alice/code".into());
    let catalog = support::catalog(
        NODE,
        1,
        vec![Resource::new(git(&single)), Resource::new(git(&infra))],
    );
    root.write("/root/catalog.signed", &support::sign(&catalog));
    let trust = support::trust();
    let out = root.run(&[
        "/usr/local/bin/steward-agent",
        "run",
        "--catalog",
        "/root/catalog.signed",
        "--trust",
        &trust,
        "--node",
        NODE,
        "--json",
    ]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    let (status, message) = event(&report, "git_clone:/home/alice/code");
    assert_eq!(status, "kept", "{report:#}");
    assert!(
        message.contains("(it is a symlink); left as found"),
        "{message}"
    );
    let (status, message) = event(&report, "git_clone:/home/alice/code/infra");
    assert_eq!(status, "kept", "{report:#}");
    assert_eq!(
        message,
        "not cloned: the parent /home/alice/code is a symlink; left as found"
    );
    assert_eq!(report["totals"]["kept"], 2, "{report:#}");
    assert_eq!(report["totals"]["failed"], 0, "{report:#}");
    assert!(!root.path("/srv/seed/infra").exists());
    assert_eq!(
        std::fs::read_link(root.path("/home/alice/code")).unwrap(),
        Path::new("/srv/seed")
    );
}
