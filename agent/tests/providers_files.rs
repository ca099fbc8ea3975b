//! The `file`, `directory` and `symlink` providers, in process, against disposable Debian
//! roots (`Root::fresh`): owners resolve through the root's own `/etc/passwd` (a real
//! `useradd -m alice`), and the THREATS F-series attacks are made by a real unprivileged
//! process (`runuser -u alice` inside the root), never by this test running as root.
//!
//! Every check is on the real end state (bytes, mode, owner, inode, mtime through
//! `symlink_metadata` of the root-joined path), and every test fails when the harness cannot
//! make a root.

mod support;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::AtomicBool;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use steward_agent::engine::{self, Context, Outcome, RunLimits};
use steward_agent::host::Host;
use steward_agent::providers;
use steward_protocol::seal::{seal, EncryptionKeyPair, OsRng};
use steward_protocol::{
    DirectoryReplace, DirectorySpec, FileContent, FileSpec, Mode, Replace, Resource, ResourceSpec,
    ResourceStatus, SymlinkReplace, SymlinkSpec,
};
use support::Root;

const CANARY: &[u8] = b"root:$6$canary:19000:0:99999:7:::\n";
const BUCKET: &str = "/var/lib/steward/bucket";

/// A fresh root with user `alice` and a root-owned `0640` `/etc/shadow-canary`.
struct Fixture {
    // Dropped first: its descriptor of the root would keep the overlay busy at unmount.
    host: Host,
    root: Root,
    alice: (u32, u32),
}

impl Fixture {
    fn new() -> Fixture {
        let root = Root::fresh();
        root.run_ok(&["useradd", "-m", "alice"]);
        root.write("/etc/shadow-canary", CANARY);
        fs::set_permissions(
            root.path("/etc/shadow-canary"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let passwd = fs::read_to_string(root.path("/etc/passwd")).unwrap();
        let line = passwd
            .lines()
            .find(|l| l.starts_with("alice:"))
            .expect("alice in the root's passwd");
        let fields: Vec<&str> = line.split(':').collect();
        let alice = (fields[2].parse().unwrap(), fields[3].parse().unwrap());
        assert_ne!(alice.0, 0);
        let host = Host::new(root.dir()).unwrap();
        Fixture { host, root, alice }
    }

    fn apply(&self, spec: &ResourceSpec) -> anyhow::Result<Outcome> {
        providers::apply(spec, &Context::new(&self.host, false, None), false)
    }

    fn noop(&self, spec: &ResourceSpec) -> anyhow::Result<Outcome> {
        providers::apply(spec, &Context::new(&self.host, true, None), false)
    }

    fn apply_keyed(
        &self,
        spec: &ResourceSpec,
        noop: bool,
        key: &EncryptionKeyPair,
    ) -> anyhow::Result<Outcome> {
        providers::apply(spec, &Context::new(&self.host, noop, Some(key)), false)
    }

    /// Runs `script` with `sh -c` as alice inside the root.
    fn as_alice(&self, script: &str) {
        self.root
            .run_ok(&["runuser", "-u", "alice", "--", "sh", "-c", script]);
    }

    fn meta(&self, path: &str) -> fs::Metadata {
        fs::symlink_metadata(self.root.path(path)).unwrap()
    }

    fn exists(&self, path: &str) -> bool {
        fs::symlink_metadata(self.root.path(path)).is_ok()
    }

    fn read(&self, path: &str) -> Vec<u8> {
        fs::read(self.root.path(path)).unwrap()
    }

    /// (mode bits, uid, gid) of `path` itself.
    fn mode_owner(&self, path: &str) -> (u32, u32, u32) {
        let m = self.meta(path);
        (m.mode() & 0o7777, m.uid(), m.gid())
    }

    fn names_in(&self, dir: &str) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(self.root.path(dir))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    fn assert_canary_intact(&self) {
        let m = self.meta("/etc/shadow-canary");
        assert!(m.file_type().is_file());
        assert_eq!(self.read("/etc/shadow-canary"), CANARY);
        assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o640, 0, 0));
    }

    fn assert_no_temp_files(&self, dir: &str) {
        let temps: Vec<String> = self
            .names_in(dir)
            .into_iter()
            .filter(|n| n.contains(".steward-tmp."))
            .collect();
        assert!(temps.is_empty(), "temp files left in {dir}: {temps:?}");
    }
}

/// (inode, mtime, ctime) of a path: a second apply that writes nothing keeps all three.
fn stamp(f: &Fixture, path: &str) -> (u64, i64, i64, i64, i64) {
    let m = f.meta(path);
    (
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

fn file(path: &str, content: &str, mode: u32, replace: Replace) -> ResourceSpec {
    ResourceSpec::File(FileSpec {
        path: path.into(),
        owner: "alice".into(),
        group: "alice".into(),
        mode: Mode(mode),
        content: FileContent::Text(content.into()),
        replace,
        backup: false,
    })
}

fn with_backup(spec: ResourceSpec) -> ResourceSpec {
    match spec {
        ResourceSpec::File(f) => ResourceSpec::File(FileSpec { backup: true, ..f }),
        other => other,
    }
}

fn directory(path: &str, mode: u32) -> ResourceSpec {
    ResourceSpec::Directory(DirectorySpec {
        path: path.into(),
        owner: "alice".into(),
        group: "alice".into(),
        mode: Mode(mode),
        replace: Default::default(),
    })
}

fn symlink(path: &str, target: &str, replace: SymlinkReplace) -> ResourceSpec {
    ResourceSpec::Symlink(SymlinkSpec {
        path: path.into(),
        target: target.into(),
        owner: "alice".into(),
        group: "alice".into(),
        replace,
    })
}

/// The parts of a `Changed` outcome (panics on anything else).
#[track_caller]
fn changed(outcome: anyhow::Result<Outcome>) -> (String, Option<String>, bool) {
    match outcome {
        Ok(Outcome::Changed {
            message,
            diff,
            corrective,
        }) => (message, diff, corrective),
        other => panic!("expected a change, got {other:?}"),
    }
}

#[track_caller]
fn unchanged(outcome: anyhow::Result<Outcome>) {
    match outcome {
        Ok(Outcome::Unchanged) => {}
        other => panic!("expected unchanged, got {other:?}"),
    }
}

/// The reason of a `Kept` outcome (panics on anything else).
#[track_caller]
fn kept(outcome: anyhow::Result<Outcome>) -> String {
    match outcome {
        Ok(Outcome::Kept(reason)) => reason,
        other => panic!("expected kept, got {other:?}"),
    }
}

/// The error chain of a failed apply, on one line.
#[track_caller]
fn failed(outcome: anyhow::Result<Outcome>) -> String {
    match outcome {
        Err(e) => format!("{e:#}"),
        Ok(other) => panic!("expected a failure, got {other:?}"),
    }
}

#[test]
fn file_is_created_exactly_and_a_second_apply_writes_nothing() {
    let f = Fixture::new();
    let path = "/home/alice/.gitconfig";
    let spec = file(path, "[user]\n\tname = Alice\n", 0o640, Replace::Always);
    let (message, diff, corrective) = changed(f.apply(&spec));
    assert_eq!(message, "created (mode 0640, owner alice:alice)");
    assert_eq!(
        diff.as_deref(),
        Some("--- /dev/null\n+++ /home/alice/.gitconfig\n@@ -0,0 +1,2 @@\n+[user]\n+\tname = Alice\n")
    );
    assert!(!corrective);
    assert_eq!(f.read(path), b"[user]\n\tname = Alice\n");
    assert_eq!(f.mode_owner(path), (0o640, f.alice.0, f.alice.1));
    assert!(f.meta(path).file_type().is_file());
    assert_eq!(f.meta(path).nlink(), 1);
    f.assert_no_temp_files("/home/alice");

    // R16: converged means no write at all (same inode, mtime and ctime).
    let before = stamp(&f, path);
    let dir_before = stamp(&f, "/home/alice");
    unchanged(f.apply(&spec));
    unchanged(f.apply(&spec));
    assert_eq!(stamp(&f, path), before);
    assert_eq!(stamp(&f, "/home/alice"), dir_before);

    // The same through the engine: an `unchanged` event.
    let catalog = support::catalog("devvm", 1, vec![Resource::new(spec)]);
    let events = engine::apply(
        &catalog,
        &Context::new(&f.host, false, None),
        RunLimits { deadline: None },
        &AtomicBool::new(false),
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].status, ResourceStatus::Unchanged, "{events:?}");
}

#[test]
fn drift_is_corrected_and_stale_temp_files_are_swept() {
    let f = Fixture::new();
    let path = "/home/alice/.bashrc";
    let spec = file(
        path,
        "export EDITOR=vim\nalias ll='ls -l'\n",
        0o644,
        Replace::Always,
    );
    changed(f.apply(&spec));

    // A temp file of an agent killed mid-write an hour ago, and a fresh one of a live process
    // (pid 1, as if being written right now): the next write into the directory removes only
    // the stale one.
    f.as_alice(
        "cd /home/alice && echo partial > ..bashrc.steward-tmp.4242.0.1f2e && \
         touch -d '1 hour ago' ..bashrc.steward-tmp.4242.0.1f2e && \
         echo partial > ..bashrc.steward-tmp.1.1.1f2e",
    );

    // The user changes mode and content; root takes the group.
    f.as_alice("chmod 0666 /home/alice/.bashrc && printf 'export EDITOR=nano\\nalias ll=\"ls -l\"\\n' > /home/alice/.bashrc");
    fs::set_permissions(f.root.path(path), fs::Permissions::from_mode(0o666)).unwrap();
    std::os::unix::fs::chown(f.root.path(path), None, Some(0)).unwrap();
    let (message, diff, corrective) = changed(f.apply(&spec));
    assert!(corrective);
    assert_eq!(
        message,
        "content changed, mode 0666 -> 0644, group 0 -> alice (1000)"
            .replace("1000", &f.alice.1.to_string())
    );
    let diff = diff.unwrap();
    assert!(
        diff.starts_with("--- /home/alice/.bashrc\n+++ /home/alice/.bashrc\n"),
        "{diff}"
    );
    assert!(diff.contains("-export EDITOR=nano\n"), "{diff}");
    assert!(diff.contains("+export EDITOR=vim\n"), "{diff}");
    assert!(diff.contains("+alias ll='ls -l'\n"), "{diff}");
    assert_eq!(f.read(path), b"export EDITOR=vim\nalias ll='ls -l'\n");
    assert_eq!(f.mode_owner(path), (0o644, f.alice.0, f.alice.1));
    let names = f.names_in("/home/alice");
    assert!(
        !names.contains(&"..bashrc.steward-tmp.4242.0.1f2e".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"..bashrc.steward-tmp.1.1.1f2e".to_string()),
        "{names:?}"
    );

    // Mode drift alone is corrected in place (same inode), with a field list.
    let ino = f.meta(path).ino();
    f.as_alice("chmod 0600 /home/alice/.bashrc");
    let (message, diff, corrective) = changed(f.apply(&spec));
    assert_eq!(message, "mode 0600 -> 0644");
    assert_eq!(diff.as_deref(), Some("mode: 0600 -> 0644\n"));
    assert!(corrective);
    assert_eq!(f.meta(path).ino(), ino);
    assert_eq!(f.mode_owner(path), (0o644, f.alice.0, f.alice.1));
    unchanged(f.apply(&spec));
}

#[test]
fn noop_observes_and_diffs_but_writes_nothing() {
    let f = Fixture::new();
    let home_before = f.names_in("/home/alice");
    let home_stamp = stamp(&f, "/home/alice");

    let absent = file("/home/alice/.new", "hello\n", 0o600, Replace::Always);
    let (message, diff, corrective) = changed(f.noop(&absent));
    assert_eq!(message, "would create (mode 0600, owner alice:alice)");
    assert!(diff.unwrap().contains("+hello\n"));
    assert!(!corrective);

    let dir = directory("/home/alice/code", 0o750);
    assert_eq!(
        changed(f.noop(&dir)).0,
        "would create (mode 0750, owner alice:alice)"
    );
    let link = symlink("/home/alice/bin", "/opt/bin", SymlinkReplace::Always);
    assert_eq!(changed(f.noop(&link)).0, "would create -> /opt/bin");
    assert_eq!(f.names_in("/home/alice"), home_before);
    assert_eq!(stamp(&f, "/home/alice"), home_stamp);

    // An existing, drifted file with a backup: reported, not touched, nothing backed up.
    let profile = "/home/alice/.profile";
    let before = (f.read(profile), stamp(&f, profile), f.mode_owner(profile));
    let spec = with_backup(file(
        profile,
        "PATH=$HOME/bin:$PATH\n",
        0o600,
        Replace::Always,
    ));
    let (message, diff, corrective) = changed(f.noop(&spec));
    assert_eq!(message, "content would change, mode 0644 -> 0600");
    assert!(diff.unwrap().contains("+PATH=$HOME/bin:$PATH\n"));
    assert!(corrective);
    assert_eq!(
        (f.read(profile), stamp(&f, profile), f.mode_owner(profile)),
        before
    );
    assert!(!f.exists("/var/lib/steward"), "noop created the bucket");
    assert_eq!(f.names_in("/home/alice"), home_before);

    // Noop through the engine reports would_change.
    let catalog = support::catalog("devvm", 1, vec![Resource::new(absent)]);
    let events = engine::apply(
        &catalog,
        &Context::new(&f.host, true, None),
        RunLimits { deadline: None },
        &AtomicBool::new(false),
    );
    assert_eq!(events[0].status, ResourceStatus::WouldChange, "{events:?}");
    assert!(!f.exists("/home/alice/.new"));
}

#[test]
fn if_absent_leaves_an_existing_file_entirely_as_found() {
    let f = Fixture::new();
    let path = "/home/alice/.claude.json";
    let spec = file(path, "{\"seeded\":true}\n", 0o600, Replace::IfAbsent);
    assert_eq!(
        changed(f.apply(&spec)).0,
        "created (mode 0600, owner alice:alice)"
    );
    assert_eq!(f.read(path), b"{\"seeded\":true}\n");
    assert_eq!(f.mode_owner(path), (0o600, f.alice.0, f.alice.1));

    // Edited content, the catalog's mode and owner: unchanged, nothing written.
    f.as_alice("printf '{\"theirs\":1}\\n' > /home/alice/.claude.json");
    let edited = stamp(&f, path);
    unchanged(f.apply(&spec));
    assert_eq!(f.read(path), b"{\"theirs\":1}\n");
    assert_eq!(stamp(&f, path), edited);

    // The person keeps it 0644 (the brownfield ~/.claude.json): kept, mode and bytes as found,
    // the same inode and ctime (no chmod was even tried); a second apply says the same.
    f.as_alice("chmod 0644 /home/alice/.claude.json");
    let found = (stamp(&f, path), f.mode_owner(path));
    for _ in 0..2 {
        assert_eq!(
            kept(f.apply(&spec)),
            "exists with mode 0644 (catalog: 0600); left as found (replace: if_absent)"
        );
        assert_eq!(f.read(path), b"{\"theirs\":1}\n");
        assert_eq!((stamp(&f, path), f.mode_owner(path)), found);
    }
    // Under noop too.
    assert!(matches!(f.noop(&spec), Ok(Outcome::Kept(_))));
    // Another owner (root's file in alice's home) is left as found as well.
    fs::write(f.root.path("/home/alice/.root-made"), b"r\n").unwrap();
    let spec = file("/home/alice/.root-made", "x\n", 0o644, Replace::IfAbsent);
    let reason = kept(f.apply(&spec));
    assert_eq!(
        reason,
        format!(
            "exists with owner 0 (catalog: alice {}), group 0 (catalog: alice {}); left as \
             found (replace: if_absent)",
            f.alice.0, f.alice.1
        )
    );
    assert_eq!(f.mode_owner("/home/alice/.root-made"), (0o644, 0, 0));
    assert_eq!(f.read("/home/alice/.root-made"), b"r\n");

    // Through the engine: a `kept` event with the reason, not a failure.
    let catalog = support::catalog("devvm", 1, vec![Resource::new(spec)]);
    let events = engine::apply(
        &catalog,
        &Context::new(&f.host, false, None),
        RunLimits { deadline: None },
        &AtomicBool::new(false),
    );
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].status, ResourceStatus::Kept, "{events:?}");
    assert!(
        events[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("left as found (replace: if_absent)")),
        "{events:?}"
    );
}

#[test]
fn sealed_content_is_never_opened_for_a_file_left_as_found() {
    let f = Fixture::new();
    let key = EncryptionKeyPair::from_bytes([7; 32]);
    let path = "/home/alice/.claude.json";
    f.as_alice("printf '{\"mine\":1}\\n' > /home/alice/.claude.json && chmod 0644 /home/alice/.claude.json");
    let found = (f.read(path), stamp(&f, path), f.mode_owner(path));
    let sealed = |replace: Replace| {
        ResourceSpec::File(FileSpec {
            path: path.into(),
            owner: "alice".into(),
            group: "alice".into(),
            mode: Mode(0o600),
            content: FileContent::Sealed(seal(
                &key.public_bytes(),
                b"{\"api\":\"x\"}\n",
                &mut OsRng,
            )),
            replace,
            backup: false,
        })
    };
    // No key given: opening the sealed content would fail the resource; nothing opens it.
    for replace in [
        Replace::IfAbsent,
        Replace::IfMarked {
            marker: "steward".into(),
        },
        Replace::IfStale {
            marker: "steward".into(),
            current: "tier".into(),
        },
    ] {
        let outcome = f.apply(&sealed(replace.clone()));
        assert!(
            matches!(outcome, Ok(Outcome::Kept(_))),
            "{replace:?}: {outcome:?}"
        );
    }
    // The key is needed as soon as the content would be written.
    assert!(failed(f.apply(&sealed(Replace::Always))).contains(".claude.json"));
    assert_eq!((f.read(path), stamp(&f, path), f.mode_owner(path)), found);
}

#[test]
fn host_renames_only_the_observed_entry_to_a_free_name_without_following_symlinks() {
    let f = Fixture::new();
    f.as_alice(
        "mkdir -p /home/alice/a/tree /home/alice/b && echo x > /home/alice/a/tree/f \
         && ln -s /etc /home/alice/link && echo y > /home/alice/b/taken",
    );
    let identity = |p: &str| match f.host.observe_dir(p).unwrap() {
        steward_agent::host::DirState::Directory(inode) => inode.identity(),
        other => panic!("{other:?}"),
    };
    let tree = identity("/home/alice/a/tree");
    let ino = f.meta("/home/alice/a/tree").ino();
    // A symlinked destination parent, a taken name, a stale identity: refused, nothing moved.
    let err = f
        .host
        .rename_entry("/home/alice/a/tree", "/home/alice/link/tree", tree)
        .unwrap_err();
    assert!(
        err.to_string().contains("refusing to follow symlink"),
        "{err}"
    );
    assert!(!f.root.path("/etc/tree").exists());
    let err = f
        .host
        .rename_entry("/home/alice/a/tree", "/home/alice/b/taken", tree)
        .unwrap_err();
    assert!(err.to_string().contains("refusing to replace"), "{err}");
    assert_eq!(f.read("/home/alice/b/taken"), b"y\n");
    let stale = identity("/home/alice/b");
    let err = f
        .host
        .rename_entry("/home/alice/a/tree", "/home/alice/b/tree", stale)
        .unwrap_err();
    assert!(err.to_string().contains("changed while"), "{err}");
    assert!(f.exists("/home/alice/a/tree/f"));
    // The observed entry to a free name: moved, same inode and content.
    f.host
        .rename_entry("/home/alice/a/tree", "/home/alice/b/tree", tree)
        .unwrap();
    assert_eq!(f.meta("/home/alice/b/tree").ino(), ino);
    assert_eq!(f.read("/home/alice/b/tree/f"), b"x\n");
    assert!(!f.exists("/home/alice/a/tree"));
    // Only an empty directory is removed.
    assert!(f.host.remove_empty_dir("/home/alice/b/tree").is_err());
    assert!(f.host.remove_empty_dir("/home/alice/link").is_err());
    assert!(f.meta("/home/alice/link").file_type().is_symlink());
    f.host.remove_empty_dir("/home/alice/a").unwrap();
    assert!(!f.exists("/home/alice/a"));
}

#[test]
fn if_stale_replaces_another_variant_keeps_this_one_and_anything_else() {
    let f = Fixture::new();
    let path = "/home/alice/.kube-config";
    let marker = "# written by steward";
    let spec = with_backup(file(
        path,
        &format!("{marker}\n# tier: owner\nuser: owner\n"),
        0o600,
        Replace::IfStale {
            marker: marker.into(),
            current: "# tier: owner".into(),
        },
    ));
    // Another tier's file Steward wrote: replaced, the old one backed up.
    f.as_alice(&format!(
        "printf '{marker}\\n# tier: admin\\nuser: admin\\n' > {path} && chmod 0600 {path}"
    ));
    let (message, _, corrective) = changed(f.apply(&spec));
    assert!(message.starts_with("content changed"), "{message}");
    assert!(message.contains("previous content kept as"), "{message}");
    assert!(corrective);
    assert_eq!(
        f.read(path),
        format!("{marker}\n# tier: owner\nuser: owner\n").as_bytes()
    );
    unchanged(f.apply(&spec));

    // This tier's file, edited by its person (and loosened): left as found, silently.
    f.as_alice(&format!(
        "echo 'context: mine' >> {path} && chmod 0644 {path}"
    ));
    let edited = (f.read(path), stamp(&f, path), f.mode_owner(path));
    unchanged(f.apply(&spec));
    unchanged(f.apply(&spec));
    assert_eq!((f.read(path), stamp(&f, path), f.mode_owner(path)), edited);

    // No marker: the person's own file, kept.
    f.as_alice(&format!("printf 'apiVersion: v1\\n' > {path}"));
    let theirs = (f.read(path), stamp(&f, path), f.mode_owner(path));
    for _ in 0..2 {
        assert_eq!(
            kept(f.apply(&spec)),
            format!(
                "exists and does not carry the marker \"{marker}\"; left as found (replace: \
                 if_stale)"
            )
        );
        assert_eq!((f.read(path), stamp(&f, path), f.mode_owner(path)), theirs);
    }
}

#[test]
fn if_marked_replaces_only_marked_files() {
    let f = Fixture::new();
    let path = "/home/alice/.config-generated";
    let marker = "# managed by steward";
    let spec = file(
        path,
        &format!("{marker}\nport = 8080\n"),
        0o644,
        Replace::IfMarked {
            marker: marker.into(),
        },
    );
    // Absent: created.
    changed(f.apply(&spec));
    assert_eq!(f.read(path), format!("{marker}\nport = 8080\n").as_bytes());

    // The user takes the file over (removes the marker, loosens the mode): left entirely alone.
    f.as_alice("printf 'port = 9999\\n' > /home/alice/.config-generated && chmod 0664 /home/alice/.config-generated");
    let taken = (stamp(&f, path), f.mode_owner(path));
    let reason = kept(f.apply(&spec));
    assert_eq!(
        reason,
        "exists and does not carry the marker \"# managed by steward\"; left as found \
         (replace: if_marked)"
    );
    assert_eq!(f.read(path), b"port = 9999\n");
    assert_eq!((stamp(&f, path), f.mode_owner(path)), taken);

    // Marked again, with other content: replaced.
    f.as_alice(&format!(
        "printf '{marker}\\nport = 1\\n' > /home/alice/.config-generated"
    ));
    let (message, diff, corrective) = changed(f.apply(&spec));
    assert_eq!(message, "content changed, mode 0664 -> 0644");
    assert!(diff.unwrap().contains("-port = 1\n+port = 8080\n"));
    assert!(corrective);
    assert_eq!(f.read(path), format!("{marker}\nport = 8080\n").as_bytes());
    assert_eq!(f.mode_owner(path), (0o644, f.alice.0, f.alice.1));
}

#[test]
fn backup_keeps_the_replaced_content_in_the_root_only_bucket() {
    let f = Fixture::new();
    let path = "/etc/motd";
    fs::write(f.root.path(path), b"old motd\n").unwrap();
    fs::set_permissions(f.root.path(path), fs::Permissions::from_mode(0o644)).unwrap();
    let spec = ResourceSpec::File(FileSpec {
        owner: "root".into(),
        group: "root".into(),
        backup: true,
        ..match file(path, "new motd\n", 0o644, Replace::Always) {
            ResourceSpec::File(f) => f,
            _ => unreachable!(),
        }
    });
    let digest = hex::encode(Sha256::digest(b"old motd\n"));
    let (message, diff, _) = changed(f.apply(&spec));
    assert_eq!(
        message,
        format!("content changed, previous content kept as {BUCKET}/{digest}")
    );
    assert!(diff.unwrap().contains("-old motd\n+new motd\n"));
    assert_eq!(f.read(path), b"new motd\n");
    let kept = format!("{BUCKET}/{digest}");
    assert_eq!(f.read(&kept), b"old motd\n");
    assert_eq!(f.mode_owner(&kept), (0o600, 0, 0));
    assert_eq!(f.mode_owner(BUCKET), (0o700, 0, 0));
    assert_eq!(f.mode_owner("/var/lib/steward"), (0o700, 0, 0));
    f.assert_no_temp_files(BUCKET);
    f.assert_no_temp_files("/etc");

    // Converged: no second backup.
    unchanged(f.apply(&spec));
    assert_eq!(f.names_in(BUCKET), vec![digest.clone()]);

    // A file too large to hold in memory is not replaced when it cannot be backed up.
    let big = vec![b'x'; 16 * 1024 * 1024 + 1];
    fs::write(f.root.path(path), &big).unwrap();
    let err = failed(f.apply(&spec));
    assert!(err.contains("cannot back up /etc/motd"), "{err}");
    assert_eq!(
        fs::metadata(f.root.path(path)).unwrap().len(),
        big.len() as u64
    );
    assert_eq!(f.names_in(BUCKET), vec![digest]);
}

#[test]
fn sealed_content_is_written_in_clear_0600_and_never_reported() {
    let f = Fixture::new();
    let key = EncryptionKeyPair::from_bytes([7; 32]);
    let secret = "token=CANARY-5f1e9c\n";
    let sealed =
        |plain: &str| FileContent::Sealed(seal(&key.public_bytes(), plain.as_bytes(), &mut OsRng));
    let path = "/home/alice/.config-token";
    let spec = |content: FileContent, backup: bool| {
        ResourceSpec::File(FileSpec {
            path: path.into(),
            owner: "alice".into(),
            group: "alice".into(),
            mode: Mode(0o600),
            content,
            replace: Replace::Always,
            backup,
        })
    };
    let first = spec(sealed(secret), false);
    let reported = |outcome: &anyhow::Result<Outcome>| format!("{outcome:?}");

    // Created, through the engine: the event says nothing of the content.
    let catalog = support::catalog("devvm", 1, vec![Resource::new(first.clone())]);
    let events = engine::apply(
        &catalog,
        &Context::new(&f.host, false, Some(&key)),
        RunLimits { deadline: None },
        &AtomicBool::new(false),
    );
    assert_eq!(events[0].status, ResourceStatus::Changed, "{events:?}");
    assert_eq!(
        events[0].message.as_deref(),
        Some("created (mode 0600, owner alice:alice)")
    );
    assert_eq!(events[0].diff, None);
    assert!(!format!("{events:?}").contains("CANARY"), "{events:?}");
    assert_eq!(f.read(path), secret.as_bytes());
    assert_eq!(f.mode_owner(path), (0o600, f.alice.0, f.alice.1));

    // Sealed again (new ciphertext, same plaintext): unchanged, nothing written.
    let before = stamp(&f, path);
    let again = f.apply_keyed(&spec(sealed(secret), false), false, &key);
    assert!(
        matches!(again, Ok(Outcome::Unchanged)),
        "{}",
        reported(&again)
    );
    assert_eq!(stamp(&f, path), before);

    // A new secret with a backup: neither secret nor the old one's digest is reported.
    let rotated = spec(sealed("token=CANARY-rotated\n"), true);
    let noop = f.apply_keyed(&rotated, true, &key);
    assert!(!reported(&noop).contains("CANARY"));
    assert_eq!(changed(noop).0, "content would change (sensitive)");
    assert_eq!(f.read(path), secret.as_bytes());
    let outcome = f.apply_keyed(&rotated, false, &key);
    let text = reported(&outcome);
    let old_digest = hex::encode(Sha256::digest(secret.as_bytes()));
    assert!(!text.contains("CANARY"), "{text}");
    assert!(!text.contains(&old_digest), "{text}");
    let (message, diff, corrective) = changed(outcome);
    assert_eq!(
        message,
        "content changed (sensitive), previous content kept in the bucket"
    );
    assert_eq!(diff, None);
    assert!(corrective);
    assert_eq!(f.read(path), b"token=CANARY-rotated\n");
    assert_eq!(f.mode_owner(path), (0o600, f.alice.0, f.alice.1));
    let kept = format!("{BUCKET}/{old_digest}");
    assert_eq!(f.read(&kept), secret.as_bytes());
    assert_eq!(f.mode_owner(&kept), (0o600, 0, 0));

    // Without the node key: a failure that says why, nothing written, no content.
    let err = failed(f.apply(&spec(sealed("token=CANARY-third\n"), false)));
    assert!(err.contains("no node key"), "{err}");
    assert!(!err.contains("CANARY"), "{err}");
    assert_eq!(f.read(path), b"token=CANARY-rotated\n");
    f.assert_no_temp_files("/home/alice");
}

#[test]
fn directories_are_created_corrected_and_never_followed() {
    let f = Fixture::new();
    let path = "/home/alice/code";
    let spec = directory(path, 0o750);
    let (message, _, corrective) = changed(f.apply(&spec));
    assert_eq!(message, "created (mode 0750, owner alice:alice)");
    assert!(!corrective);
    assert!(f.meta(path).is_dir());
    assert_eq!(f.mode_owner(path), (0o750, f.alice.0, f.alice.1));
    let before = stamp(&f, path);
    unchanged(f.apply(&spec));
    assert_eq!(stamp(&f, path), before);

    f.as_alice("chmod 0777 /home/alice/code");
    let (message, _, corrective) = changed(f.apply(&spec));
    assert_eq!(message, "mode 0777 -> 0750");
    assert!(corrective);
    assert_eq!(f.mode_owner(path), (0o750, f.alice.0, f.alice.1));

    // The parent must exist (the engine orders parents first).
    let err = failed(f.apply(&directory("/home/alice/missing/sub", 0o700)));
    assert!(
        err.contains("creating directory /home/alice/missing/sub"),
        "{err}"
    );
    assert!(err.contains("/home/alice/missing"), "{err}");
    assert!(!f.exists("/home/alice/missing"));

    // A symlink to a directory (F6) and a regular file are refused, their targets untouched.
    f.as_alice("ln -s ../../etc /home/alice/etc-link && echo x > /home/alice/plain");
    let etc_before = f.mode_owner("/etc");
    let err = failed(f.apply(&directory("/home/alice/etc-link", 0o700)));
    assert!(err.contains("it is a symlink, not a directory"), "{err}");
    let err = failed(f.apply(&directory("/home/alice/plain", 0o700)));
    assert!(
        err.contains("it is a regular file, not a directory"),
        "{err}"
    );
    assert_eq!(f.mode_owner("/etc"), etc_before);
    assert!(f.meta("/home/alice/etc-link").file_type().is_symlink());
    assert_eq!(f.read("/home/alice/plain"), b"x\n");
}

#[test]
fn a_directory_if_absent_is_created_or_left_as_found() {
    let f = Fixture::new();
    let adopt = |path: &str| {
        ResourceSpec::Directory(DirectorySpec {
            path: path.into(),
            owner: "alice".into(),
            group: "alice".into(),
            mode: Mode(0o700),
            replace: DirectoryReplace::IfAbsent,
        })
    };
    let path = "/home/alice/.claude";
    assert_eq!(
        changed(f.apply(&adopt(path))).0,
        "created (mode 0700, owner alice:alice)"
    );
    assert_eq!(f.mode_owner(path), (0o700, f.alice.0, f.alice.1));
    unchanged(f.apply(&adopt(path)));

    // The person's own 0755 ~/.claude: kept as found, nothing touched, every run.
    f.as_alice("chmod 0755 /home/alice/.claude && echo mine > /home/alice/.claude/notes");
    let found = (stamp(&f, path), f.mode_owner(path));
    for _ in 0..2 {
        assert_eq!(
            kept(f.apply(&adopt(path))),
            "exists with mode 0755 (catalog: 0700); left as found (replace: if_absent)"
        );
        assert_eq!((stamp(&f, path), f.mode_owner(path)), found);
    }
    assert!(matches!(f.noop(&adopt(path)), Ok(Outcome::Kept(_))));
    assert_eq!(f.read("/home/alice/.claude/notes"), b"mine\n");
    // `always` still corrects it.
    let (message, _, _) = changed(f.apply(&directory(path, 0o700)));
    assert_eq!(message, "mode 0755 -> 0700");

    // A symlink where the directory would be: kept, the link and its target untouched.
    f.as_alice("ln -s /tmp /home/alice/.kube");
    let tmp = f.mode_owner("/tmp");
    assert_eq!(
        kept(f.apply(&adopt("/home/alice/.kube"))),
        "exists as a symlink, not a directory; left as found (replace: if_absent)"
    );
    assert!(f.meta("/home/alice/.kube").file_type().is_symlink());
    assert_eq!(f.mode_owner("/tmp"), tmp);
}

#[test]
fn symlinks_are_created_repointed_or_left_alone_per_policy() {
    let f = Fixture::new();
    let path = "/home/alice/tool";
    let always = symlink(path, "/opt/tool/v2", SymlinkReplace::Always);
    let (message, _, corrective) = changed(f.apply(&always));
    assert_eq!(message, "created -> /opt/tool/v2");
    assert!(!corrective);
    assert_eq!(
        fs::read_link(f.root.path(path)).unwrap(),
        PathBuf::from("/opt/tool/v2")
    );
    // The owner of the link itself.
    assert_eq!((f.meta(path).uid(), f.meta(path).gid()), f.alice);
    let before = stamp(&f, path);
    unchanged(f.apply(&always));
    assert_eq!(stamp(&f, path), before);

    // Repointed by `always`, left alone by `if_absent`.
    f.as_alice("ln -sfn /opt/tool/v1 /home/alice/tool");
    let before = stamp(&f, path);
    assert_eq!(
        kept(f.apply(&symlink(path, "/opt/tool/v2", SymlinkReplace::IfAbsent))),
        "exists as a symlink to /opt/tool/v1; left as found (replace: if_absent)"
    );
    assert_eq!(stamp(&f, path), before);
    assert_eq!(
        fs::read_link(f.root.path(path)).unwrap(),
        PathBuf::from("/opt/tool/v1")
    );
    let (message, diff, corrective) = changed(f.apply(&always));
    assert_eq!(message, "repointed from /opt/tool/v1 to /opt/tool/v2");
    assert_eq!(
        diff.as_deref(),
        Some("target: /opt/tool/v1 -> /opt/tool/v2\n")
    );
    assert!(corrective);
    assert_eq!(
        fs::read_link(f.root.path(path)).unwrap(),
        PathBuf::from("/opt/tool/v2")
    );
    assert_eq!((f.meta(path).uid(), f.meta(path).gid()), f.alice);

    // The right target with another owner: the link's owner is corrected.
    std::os::unix::fs::lchown(f.root.path(path), Some(0), Some(0)).unwrap();
    let (message, _, corrective) = changed(f.apply(&always));
    assert!(message.starts_with("owner 0:0 -> alice:alice"), "{message}");
    assert!(corrective);
    assert_eq!((f.meta(path).uid(), f.meta(path).gid()), f.alice);

    // A regular file or a directory is never replaced by `always`; `if_absent` leaves them.
    f.as_alice("echo mine > /home/alice/notes && mkdir /home/alice/proj");
    for p in ["/home/alice/notes", "/home/alice/proj"] {
        let err = failed(f.apply(&symlink(p, "/opt/x", SymlinkReplace::Always)));
        assert!(err.contains("refusing to replace the"), "{err}");
        let reason = kept(f.apply(&symlink(p, "/opt/x", SymlinkReplace::IfAbsent)));
        assert!(
            reason.ends_with("; left as found (replace: if_absent)"),
            "{reason}"
        );
    }
    assert_eq!(f.read("/home/alice/notes"), b"mine\n");
    assert!(f.meta("/home/alice/proj").is_dir());
    f.assert_no_temp_files("/home/alice");
}

#[test]
fn f1_symlink_target_and_symlinked_parent_are_refused_and_the_canary_is_intact() {
    let f = Fixture::new();
    // Relative targets, so that following them (beneath the root) would reach the canary.
    f.as_alice("ln -s ../../etc/shadow-canary /home/alice/.claude.json && ln -s ../../etc /home/alice/.config");
    let etc_before = f.names_in("/etc");
    for replace in [
        Replace::Always,
        Replace::IfAbsent,
        Replace::IfMarked {
            marker: String::new(),
        },
    ] {
        let spec = file(
            "/home/alice/.claude.json",
            "{\"owned\":true}\n",
            0o666,
            replace,
        );
        let err = failed(f.apply(&spec));
        assert_eq!(
            err,
            "refusing to manage /home/alice/.claude.json: it is a symlink, not a regular file; \
             remove it to let the agent create the file"
        );
        refused_under_noop_too(&f, &spec);
    }
    for spec in [
        file(
            "/home/alice/.config/shadow-canary",
            "owned\n",
            0o666,
            Replace::Always,
        ),
        directory("/home/alice/.config/sub", 0o777),
        symlink("/home/alice/.config/l", "/x", SymlinkReplace::Always),
    ] {
        let err = failed(f.apply(&spec));
        assert!(
            err.contains("refusing to follow symlink /home/alice/.config"),
            "{err}"
        );
        assert!(!err.contains(&*f.root.dir().to_string_lossy()), "{err}");
    }
    f.assert_canary_intact();
    assert_eq!(f.names_in("/etc"), etc_before, "nothing created in /etc");
    assert!(f.meta("/home/alice/.claude.json").file_type().is_symlink());
    assert_eq!(f.meta("/home/alice/.claude.json").uid(), f.alice.0);
}

/// Under noop a refused target is refused too (never reported as a would-be write).
fn refused_under_noop_too(f: &Fixture, spec: &ResourceSpec) {
    let err = failed(f.noop(spec));
    assert!(err.contains("refusing"), "{err}");
}

#[test]
fn f2_hardlinked_target_is_refused_and_the_canary_is_intact() {
    let f = Fixture::new();
    // fs.protected_hardlinks stops alice from making this link herself; root makes it, as a
    // user could where the sysctl is off.
    f.as_alice("mkdir -m 0700 /home/alice/.ssh");
    f.root.run_ok(&[
        "ln",
        "/etc/shadow-canary",
        "/home/alice/.ssh/authorized_keys",
    ]);
    let path = "/home/alice/.ssh/authorized_keys";
    for replace in [Replace::Always, Replace::IfAbsent] {
        let err = failed(f.apply(&file(path, "ssh-ed25519 AAAA alice\n", 0o600, replace)));
        assert!(err.contains("it has 2 hard links"), "{err}");
    }
    f.assert_canary_intact();
    assert_eq!(f.meta("/etc/shadow-canary").nlink(), 2);
    f.assert_no_temp_files("/home/alice/.ssh");
}

/// An attacker process running as alice inside the root; stopped (and waited for) on drop.
struct Attacker {
    child: Option<Child>,
    stop: PathBuf,
}

impl Attacker {
    fn spawn(f: &Fixture, argv: &[&str]) -> Attacker {
        let stop = f.root.path("/tmp/stop-attacker");
        let child = Command::new("bash")
            .arg(support::harness().join("run-in-root.sh"))
            .arg(f.root.dir())
            .args(["runuser", "-u", "alice", "--"])
            .args(argv)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting the attacker");
        Attacker {
            child: Some(child),
            stop,
        }
    }

    /// Waits (at most 10 s) until the attacker's script has started.
    fn wait_until_running(&self, f: &Fixture) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f.exists("/tmp/attacker-running") {
            assert!(Instant::now() < deadline, "the attacker did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Stops the attacker and returns what it printed.
    fn stop(&mut self) -> String {
        fs::write(&self.stop, b"").unwrap();
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        while child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "the attacker did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = fs::write(&self.stop, b"");
            if let Some(mut child) = self.child.take() {
                let _ = child.wait();
            }
        }
    }
}

/// alice's swapper (perl, from Debian's essential `perl-base`: raw system calls in a tight
/// loop, no fork per step): `~/.config` turns between a real directory, nothing, a symlink to
/// `/etc` (relative, so that following it beneath the root reaches the canary's directory)
/// and back, with renames that swap a populated directory for the symlink in one step, until
/// `/tmp/stop-attacker` appears (or 120 s have passed). Prints its round count.
const SWAPPER: &str = r#"
    chdir "/home/alice" or die "chdir: $!";
    sub wipe { my $d = shift; if (opendir my $h, $d) { unlink "$d/$_" for grep { !/^\.\.?$/ } readdir $h; closedir $h } rmdir $d }
    sub pause { select undef, undef, undef, 0.0005 }
    open my $started, ">", "/tmp/attacker-running" or die; close $started;
    my ($n, $end) = (0, time + 120);
    while (!-e "/tmp/stop-attacker" && time < $end) {
        mkdir ".config"; pause(); rename ".config", ".config-gone"; wipe(".config-gone");
        symlink "../../etc", ".config"; pause(); unlink ".config";
        mkdir ".config"; symlink "../../etc", ".config-alt"; pause();
        rename ".config", ".config-gone"; rename ".config-alt", ".config"; pause();
        unlink ".config"; wipe(".config-gone"); wipe(".config");
        $n++;
    }
    print "$n\n";
"#;

#[test]
fn f3_racing_symlink_swapper_never_redirects_provider_writes() {
    let f = Fixture::new();
    let etc_before = f.names_in("/etc");
    let mut attacker = Attacker::spawn(&f, &["perl", "-e", SWAPPER]);
    attacker.wait_until_running(&f);
    let cx = Context::new(&f.host, false, None);
    let (mut landed, mut refused) = (0, 0);
    let mut reasons = std::collections::BTreeSet::new();
    for i in 0..500 {
        let spec = file(
            "/home/alice/.config/shadow-canary",
            &format!("write {i}\n"),
            0o644,
            Replace::Always,
        );
        match providers::apply(&spec, &cx, false) {
            Ok(_) => landed += 1,
            Err(e) => {
                refused += 1;
                // Every refusal names the contested directory (or the file in it).
                let reason = format!("{e:#}");
                assert!(reason.contains("/home/alice/.config"), "{reason}");
                reasons.insert(reason);
            }
        }
        if i % 50 == 0 {
            f.assert_canary_intact();
        }
        // Directory operations on the overlay root take about a millisecond each: spread the
        // writes over a few hundred of the attacker's rounds rather than a handful.
        std::thread::sleep(Duration::from_millis(4));
    }
    let rounds: u64 = attacker
        .stop()
        .trim()
        .parse()
        .expect("the attacker's round count");
    eprintln!(
        "racing swapper: {landed} writes landed, {refused} refused, {rounds} attacker rounds; \
         {reasons:#?}"
    );
    assert_eq!(landed + refused, 500);
    // Both sides of the race happened (else the attacker never interfered, or no write was
    // ever attempted into a real directory).
    assert!(
        rounds > 0 && landed > 0 && refused > 0,
        "the race did not happen"
    );
    f.assert_canary_intact();
    assert_eq!(f.names_in("/etc"), etc_before, "nothing created in /etc");
}

#[test]
fn f4_fifo_target_is_refused_without_blocking() {
    let f = Fixture::new();
    f.as_alice("mkfifo -m 0644 /home/alice/.claude.json");
    let dir = f.root.dir().to_path_buf();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let host = Host::new(&dir).unwrap();
        let cx = Context::new(&host, false, None);
        let mut out = Vec::new();
        for replace in [Replace::Always, Replace::IfAbsent] {
            let spec = file("/home/alice/.claude.json", "{}\n", 0o600, replace);
            out.push(
                providers::apply(&spec, &cx, false)
                    .map(|o| format!("{o:?}"))
                    .map_err(|e| format!("{e:#}")),
            );
        }
        let _ = tx.send(out);
    });
    let results = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the provider blocked on a FIFO");
    for result in results {
        let err = result.unwrap_err();
        assert!(err.contains("it is a fifo, not a regular file"), "{err}");
    }
    let m = f.meta("/home/alice/.claude.json");
    assert!(m.file_type().is_fifo());
    assert_eq!((m.mode() & 0o7777, m.uid()), (0o644, f.alice.0));
}

#[test]
fn f6_a_home_that_is_a_symlink_or_owned_by_someone_else_receives_nothing() {
    let f = Fixture::new();
    let home = f.root.path("/home/alice");
    let specs = [
        file("/home/alice/.managed", "x\n", 0o644, Replace::Always),
        directory("/home/alice/.config", 0o755),
        symlink(
            "/home/alice/.link",
            "/etc/hostname",
            SymlinkReplace::IfAbsent,
        ),
    ];

    // The home belongs to root: nothing of alice's is managed in it.
    fs::remove_dir_all(&home).unwrap();
    fs::create_dir(&home).unwrap();
    for spec in &specs {
        let message = failed(f.apply(spec));
        assert!(
            message.contains("is owned by uid 0, not by alice"),
            "{message}"
        );
    }
    assert_eq!(fs::read_dir(&home).unwrap().count(), 0, "nothing written");

    // The home is a symlink to /: refused, nothing lands in the real /.
    fs::remove_dir(&home).unwrap();
    std::os::unix::fs::symlink("/", &home).unwrap();
    for spec in &specs {
        let message = failed(f.apply(spec));
        assert!(message.contains("refusing to manage"), "{message}");
        assert!(message.contains("/home/alice"), "{message}");
    }
    for name in [".managed", ".config", ".link"] {
        assert!(
            fs::symlink_metadata(f.root.path(&format!("/{name}"))).is_err(),
            "{name} written through the symlinked home"
        );
    }

    // A real home owned by alice works.
    fs::remove_file(&home).unwrap();
    fs::create_dir(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(f.alice.0), Some(f.alice.1)).unwrap();
    for spec in &specs {
        changed(f.apply(spec));
    }
}
