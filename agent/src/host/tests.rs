//! Tests of the safe filesystem layer. They run as root (chown to arbitrary uids) inside temp
//! directories only, under `/dev/shm` when it exists so that fsync is cheap. Owners are bare
//! numbers (4242, 4243): no account is created. Each scenario runs against both resolvers
//! (`openat2` and the `openat` walk).

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use super::*;

const UID: u32 = 4242;
const GID: u32 = 4243;
const CANARY: &[u8] = b"root:$6$canary:19000:0:99999:7:::\n";

/// A temp dir holding `root/` (the host root, with `root/home/u`) and `etc/canary` (a
/// root-owned 0640 file outside the root, standing in for `/etc/shadow`).
struct Sandbox {
    _tmp: tempfile::TempDir,
    base: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let tmp = if Path::new("/dev/shm").is_dir() {
            tempfile::tempdir_in("/dev/shm").unwrap()
        } else {
            tempfile::tempdir().unwrap()
        };
        let base = tmp.path().to_path_buf();
        fs::create_dir_all(base.join("root/home/u")).unwrap();
        fs::create_dir_all(base.join("etc")).unwrap();
        fs::write(base.join("etc/canary"), CANARY).unwrap();
        fs::set_permissions(base.join("etc/canary"), fs::Permissions::from_mode(0o640)).unwrap();
        Sandbox { _tmp: tmp, base }
    }

    fn root(&self) -> PathBuf {
        self.base.join("root")
    }

    /// The root-joined path of a catalog path.
    fn at(&self, catalog_path: &str) -> PathBuf {
        self.root().join(catalog_path.trim_start_matches('/'))
    }

    fn etc(&self) -> PathBuf {
        self.base.join("etc")
    }

    fn canary(&self) -> PathBuf {
        self.base.join("etc/canary")
    }

    /// Both resolvers over the same root.
    fn hosts(&self) -> [Host; 2] {
        [
            Host::new(self.root()).unwrap(),
            Host::new(self.root()).unwrap().without_openat2(),
        ]
    }

    fn assert_canary_intact(&self) {
        let meta = fs::symlink_metadata(self.canary()).unwrap();
        assert!(meta.is_file());
        assert_eq!(fs::read(self.canary()).unwrap(), CANARY);
        assert_eq!(meta.mode() & 0o7777, 0o640);
        assert_eq!((meta.uid(), meta.gid()), (0, 0));
        let entries = names_in(&self.etc());
        assert_eq!(
            entries,
            vec!["canary".to_string()],
            "nothing may be created in etc/"
        );
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn assert_no_temp_files(dir: &Path) {
    let temps: Vec<String> = names_in(dir)
        .into_iter()
        .filter(|n| n.contains(".steward-tmp."))
        .collect();
    assert!(
        temps.is_empty(),
        "temp files left in {}: {temps:?}",
        dir.display()
    );
}

fn mode_owner(path: &Path) -> (u32, u32, u32) {
    let meta = fs::symlink_metadata(path).unwrap();
    (meta.mode() & 0o7777, meta.uid(), meta.gid())
}

#[test]
fn atomic_write_creates_and_replaces_with_exact_mode_and_owner() {
    let sb = Sandbox::new();
    for (i, host) in sb.hosts().iter().enumerate() {
        let path = format!("/home/u/.gitconfig{i}");
        let real = sb.at(&path);
        assert_eq!(host.observe_file(&path).unwrap(), FileState::Absent);

        host.write_file_atomic(&path, b"first\n", Mode(0o640), UID, GID)
            .unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"first\n");
        assert_eq!(mode_owner(&real), (0o640, UID, GID));
        let first_ino = fs::metadata(&real).unwrap().ino();

        // Mode 0777 would be clamped by any umask: exact bits prove the explicit fchmod (F10).
        host.write_file_atomic(&path, b"second\n", Mode(0o777), UID + 1, GID + 1)
            .unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"second\n");
        assert_eq!(mode_owner(&real), (0o777, UID + 1, GID + 1));
        assert_ne!(
            fs::metadata(&real).unwrap().ino(),
            first_ino,
            "replaced by rename"
        );

        match host.observe_file(&path).unwrap() {
            FileState::Regular(f) => {
                assert_eq!(f.content.as_deref(), Some(&b"second\n"[..]));
                assert_eq!(
                    (f.inode.mode, f.inode.uid, f.inode.gid),
                    (Mode(0o777), UID + 1, GID + 1)
                );
                assert_eq!(f.inode.nlink, 1);
                assert!(!f.is_hardlinked());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_no_temp_files(&sb.at("/home/u"));
    }
}

#[test]
fn overwrite_never_creates_but_does_not_replace() {
    let sb = Sandbox::new();
    let host = Host::new(sb.root()).unwrap();
    host.write_file_atomic_with("/home/u/new", b"a", Mode(0o600), UID, GID, Overwrite::Never)
        .unwrap();
    let err = host
        .write_file_atomic_with("/home/u/new", b"b", Mode(0o600), UID, GID, Overwrite::Never)
        .unwrap_err();
    assert!(
        matches!(
            err,
            HostError::Exists {
                kind: FileKind::Regular,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(fs::read(sb.at("/home/u/new")).unwrap(), b"a");
    assert_no_temp_files(&sb.at("/home/u"));
}

#[test]
fn drifted_mode_and_owner_are_corrected_through_the_fd() {
    let sb = Sandbox::new();
    for (i, host) in sb.hosts().iter().enumerate() {
        let file = format!("/home/u/drifted{i}");
        fs::write(sb.at(&file), b"keep").unwrap();
        fs::set_permissions(sb.at(&file), fs::Permissions::from_mode(0o666)).unwrap();
        host.set_mode_owner(&file, Mode(0o600), UID, GID).unwrap();
        assert_eq!(mode_owner(&sb.at(&file)), (0o600, UID, GID));
        assert_eq!(fs::read(sb.at(&file)).unwrap(), b"keep");

        // Directories: created with exact mode/owner, an existing one corrected.
        let dir = format!("/home/u/dir{i}");
        host.ensure_dir(&dir, Mode(0o777), UID, GID).unwrap();
        assert!(fs::symlink_metadata(sb.at(&dir)).unwrap().is_dir());
        assert_eq!(mode_owner(&sb.at(&dir)), (0o777, UID, GID));
        fs::set_permissions(sb.at(&dir), fs::Permissions::from_mode(0o755)).unwrap();
        host.ensure_dir(&dir, Mode(0o700), UID + 1, GID + 1)
            .unwrap();
        assert_eq!(mode_owner(&sb.at(&dir)), (0o700, UID + 1, GID + 1));
        assert!(
            matches!(host.observe_dir(&dir).unwrap(), DirState::Directory(i) if i.uid == UID + 1)
        );
        host.set_mode_owner(&dir, Mode(0o750), UID, GID).unwrap();
        assert_eq!(mode_owner(&sb.at(&dir)), (0o750, UID, GID));

        // ensure_dir on a regular file is refused.
        let err = host.ensure_dir(&file, Mode(0o700), UID, GID).unwrap_err();
        assert!(
            matches!(
                err,
                HostError::NotDirectory {
                    kind: FileKind::Regular,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(host
            .set_mode_owner("/home/u/missing", Mode(0o600), UID, GID)
            .is_err());
    }
}

#[test]
fn f1_symlink_at_the_target_is_refused_and_canary_unchanged() {
    let sb = Sandbox::new();
    symlink(sb.canary(), sb.at("/home/u/.claude.json")).unwrap();
    for host in sb.hosts() {
        let path = "/home/u/.claude.json";
        let err = host
            .write_file_atomic(path, b"{\"owned\":true}", Mode(0o600), UID, GID)
            .unwrap_err();
        assert!(
            matches!(
                err,
                HostError::NotRegular {
                    kind: FileKind::Symlink,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = host
            .set_mode_owner(path, Mode(0o666), UID, GID)
            .unwrap_err();
        assert!(
            matches!(
                err,
                HostError::NotRegular {
                    kind: FileKind::Symlink,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(matches!(
            host.observe_file(path).unwrap(),
            FileState::Other {
                kind: FileKind::Symlink,
                ..
            }
        ));
        let err = host
            .create_symlink_atomic("/home/u/.claude.json/x", "/t", UID, GID)
            .unwrap_err();
        assert!(matches!(err, HostError::SymlinkInPath { .. }), "{err:?}");
        sb.assert_canary_intact();
        assert!(fs::symlink_metadata(sb.at(path))
            .unwrap()
            .file_type()
            .is_symlink());
    }
    assert_no_temp_files(&sb.at("/home/u"));
}

#[test]
fn f1_symlinked_parent_is_refused_and_canary_unchanged() {
    let sb = Sandbox::new();
    symlink(sb.etc(), sb.at("/home/u/.config")).unwrap();
    for host in sb.hosts() {
        let path = "/home/u/.config/canary";
        let refused = |r: Result<(), HostError>| {
            let err = r.unwrap_err();
            match &err {
                HostError::SymlinkInPath { path } => assert_eq!(path, Path::new("/home/u/.config")),
                other => panic!("unexpected {other:?}"),
            }
            // The message names the catalog path, not the root-joined one.
            let message = err.to_string();
            assert!(message.contains("/home/u/.config"), "{message}");
            assert!(!message.contains(&*sb.base.to_string_lossy()), "{message}");
        };
        refused(host.write_file_atomic(path, b"owned", Mode(0o666), UID, GID));
        refused(host.set_mode_owner(path, Mode(0o666), UID, GID));
        refused(host.ensure_dir("/home/u/.config/sub", Mode(0o777), UID, GID));
        refused(host.create_symlink_atomic("/home/u/.config/l", "/x", UID, GID));
        refused(host.observe_file(path).map(drop));
        refused(host.read_link(path).map(drop));
        sb.assert_canary_intact();
    }
}

#[test]
fn f2_hardlinked_target_is_refused_and_canary_unchanged() {
    let sb = Sandbox::new();
    fs::create_dir(sb.at("/home/u/.ssh")).unwrap();
    let path = "/home/u/.ssh/authorized_keys";
    fs::hard_link(sb.canary(), sb.at(path)).unwrap();
    for host in sb.hosts() {
        let err = host
            .write_file_atomic(path, b"ssh-ed25519 AAAA", Mode(0o600), UID, GID)
            .unwrap_err();
        assert!(
            matches!(err, HostError::Hardlinked { nlink: 2, .. }),
            "{err:?}"
        );
        let err = host
            .set_mode_owner(path, Mode(0o600), UID, GID)
            .unwrap_err();
        assert!(matches!(err, HostError::Hardlinked { .. }), "{err:?}");
        match host.observe_file(path).unwrap() {
            FileState::Regular(f) => assert!(f.is_hardlinked()),
            other => panic!("unexpected {other:?}"),
        }
        sb.assert_canary_intact();
    }
    // Explicitly allowed: the entry is replaced by rename; the other inode is not touched.
    let host = Host::new(sb.root()).unwrap();
    host.write_file_atomic_with(
        path,
        b"ssh-ed25519 AAAA",
        Mode(0o600),
        UID,
        GID,
        Overwrite::AnyNonDirectory,
    )
    .unwrap();
    assert_eq!(fs::read(sb.at(path)).unwrap(), b"ssh-ed25519 AAAA");
    assert_eq!(mode_owner(&sb.at(path)), (0o600, UID, GID));
    sb.assert_canary_intact();
    assert_eq!(fs::metadata(sb.canary()).unwrap().nlink(), 1);
}

/// Runs `f` on another thread and fails (instead of hanging) if it takes more than 5 s.
fn within_deadline<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("operation blocked on a special file")
}

#[test]
fn f4_fifo_socket_and_device_targets_are_reported_without_blocking() {
    let sb = Sandbox::new();
    let fifo = sb.at("/home/u/fifo");
    rustix::fs::mknodat(
        CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o666),
        0,
    )
    .unwrap();
    let fifo_before = mode_owner(&fifo);
    let _socket = std::os::unix::net::UnixListener::bind(sb.at("/home/u/sock")).unwrap();
    let device = rustix::fs::mknodat(
        CWD,
        sb.at("/home/u/null"),
        rustix::fs::FileType::CharacterDevice,
        rustix::fs::Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .is_ok();

    let root = sb.root();
    let results = within_deadline(move || {
        let mut out = Vec::new();
        for host in [
            Host::new(&root).unwrap(),
            Host::new(&root).unwrap().without_openat2(),
        ] {
            for (path, kind) in [
                ("/home/u/fifo", FileKind::Fifo),
                ("/home/u/sock", FileKind::Socket),
                ("/home/u/null", FileKind::CharDevice),
            ] {
                if kind == FileKind::CharDevice && !device {
                    continue;
                }
                let observed = host.observe_file(path).unwrap();
                let write = host.write_file_atomic(path, b"x", Mode(0o600), UID, GID);
                let chmod = host.set_mode_owner(path, Mode(0o600), UID, GID);
                out.push((kind, observed, write, chmod));
            }
        }
        out
    });
    assert!(!results.is_empty());
    for (kind, observed, write, chmod) in results {
        assert!(
            matches!(observed, FileState::Other { kind: k, .. } if k == kind),
            "{observed:?}"
        );
        assert!(
            matches!(write, Err(HostError::NotRegular { kind: k, .. }) if k == kind),
            "{write:?}"
        );
        assert!(
            matches!(chmod, Err(HostError::NotRegular { kind: k, .. }) if k == kind),
            "{chmod:?}"
        );
    }
    assert_eq!(mode_owner(&fifo), fifo_before);
    assert_no_temp_files(&sb.at("/home/u"));
}

#[test]
fn f3_racing_symlink_swapper_never_redirects_writes() {
    let sb = Sandbox::new();
    let cfg = sb.at("/home/u/.config");
    let alt = sb.at("/home/u/.config-alt");
    let gone = sb.at("/home/u/.config-gone");
    symlink(sb.etc(), &alt).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let attacker = {
        let (stop, etc, cfg, alt, gone) = (
            stop.clone(),
            sb.etc(),
            cfg.clone(),
            alt.clone(),
            gone.clone(),
        );
        thread::spawn(move || {
            let mut rounds = 0u64;
            while !stop.load(Ordering::Relaxed) {
                rounds += 1;
                let _ = fs::create_dir(&cfg);
                thread::yield_now();
                // Atomically swap the real directory with a symlink to etc/, and back.
                let _ = rustix::fs::renameat_with(CWD, &cfg, CWD, &alt, RenameFlags::EXCHANGE);
                thread::yield_now();
                let _ = rustix::fs::renameat_with(CWD, &cfg, CWD, &alt, RenameFlags::EXCHANGE);
                // mkdir / rmdir / symlink, with the directory moved away first.
                let _ = fs::rename(&cfg, &gone);
                let _ = fs::remove_dir_all(&gone);
                let _ = symlink(&etc, &cfg);
                thread::yield_now();
                let _ = fs::remove_file(&cfg);
            }
            rounds
        })
    };
    let hosts = sb.hosts();
    let (mut ok, mut refused) = (0, 0);
    let mut kinds = std::collections::BTreeMap::<String, u32>::new();
    for i in 0..1000 {
        let host = &hosts[i % 2];
        match host.write_file_atomic(
            "/home/u/.config/canary",
            format!("write {i}").as_bytes(),
            Mode(0o644),
            UID,
            GID,
        ) {
            Ok(()) => ok += 1,
            Err(
                e @ (HostError::SymlinkInPath { .. }
                | HostError::NotDirectory { .. }
                | HostError::Raced { .. }
                | HostError::Io { .. }),
            ) => {
                refused += 1;
                let key = match &e {
                    HostError::Io { op, source, .. } => format!("io {op}: {:?}", source.kind()),
                    other => format!("{other:?}")
                        .split_whitespace()
                        .next()
                        .unwrap()
                        .to_string(),
                };
                *kinds.entry(key).or_insert(0) += 1;
            }
            Err(other) => panic!("unexpected error {other:?}"),
        }
        if i % 50 == 0 {
            sb.assert_canary_intact();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = attacker.join().unwrap();
    eprintln!("racing swapper: {ok} writes landed, {refused} refused, {rounds} attacker rounds; {kinds:?}");
    assert_eq!(ok + refused, 1000);
    sb.assert_canary_intact();
    assert!(fs::symlink_metadata(&alt).unwrap().file_type().is_symlink() || alt.is_dir());
}

#[test]
fn r5_failure_at_every_step_leaves_old_file_and_no_temp_files() {
    let sb = Sandbox::new();
    let host = Host::new(sb.root()).unwrap();
    let path = "/home/u/.bashrc";
    fs::write(sb.at(path), b"old").unwrap();
    fs::set_permissions(sb.at(path), fs::Permissions::from_mode(0o644)).unwrap();
    for (step, op) in [
        (Step::Write, Op::Write),
        (Step::Chown, Op::Chown),
        (Step::Chmod, Op::Chmod),
        (Step::Fsync, Op::Fsync),
        (Step::Rename, Op::Rename),
    ] {
        for target in [path, "/home/u/absent"] {
            let err = host
                .write_atomic_inner(
                    target,
                    b"new content",
                    Mode(0o600),
                    (UID, GID),
                    Overwrite::RegularOnly,
                    None,
                    Some(step),
                )
                .unwrap_err();
            match &err {
                HostError::Io {
                    op: got, source, ..
                } => {
                    assert_eq!(*got, op);
                    assert_eq!(source.raw_os_error(), Some(28));
                }
                other => panic!("unexpected {other:?}"),
            }
            assert!(err.to_string().contains(target), "{err}");
        }
        assert_eq!(fs::read(sb.at(path)).unwrap(), b"old");
        assert_eq!(mode_owner(&sb.at(path)), (0o644, 0, 0));
        assert_eq!(names_in(&sb.at("/home/u")), vec![".bashrc".to_string()]);
    }
}

#[test]
fn r5_vanished_directory_fails_with_a_typed_error_and_leaves_nothing() {
    let sb = Sandbox::new();
    for host in sb.hosts() {
        fs::create_dir(sb.at("/home/u/d")).unwrap();
        // The directory is resolved, then removed before the write (as a racing user would).
        let p = host.parent("/home/u/d/f").unwrap();
        fs::remove_dir(sb.at("/home/u/d")).unwrap();
        let err = create_temp(&p, |name| {
            rustix::fs::openat(
                &p.dir,
                name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
                rustix::fs::Mode::from_raw_mode(0o600),
            )
        })
        .unwrap_err();
        assert!(
            matches!(err, HostError::Io { op: Op::Create, .. }),
            "{err:?}"
        );
        // And through the public API: a missing parent is a typed error naming the path.
        let err = host
            .write_file_atomic("/home/u/d/f", b"x", Mode(0o600), UID, GID)
            .unwrap_err();
        match &err {
            HostError::Io {
                op: Op::Open,
                path,
                source,
            } => {
                assert_eq!(path, Path::new("/home/u/d"));
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(names_in(&sb.at("/home/u")), Vec::<String>::new());
    }
}

/// Unmounts the tmpfs before the temp dir is removed.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn r8_enospc_on_a_tiny_tmpfs_leaves_target_intact() {
    let sb = Sandbox::new();
    let home = sb.at("/home/u");
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"])
        .arg(&home)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    // This project's machines and CI run as root; a test that silently passed without its
    // tmpfs could never fail, so not being able to mount one is a failure.
    assert!(
        mounted,
        "cannot mount a tmpfs at {} (R8 needs root to mount a tiny file system)",
        home.display()
    );
    let _guard = Mounted(home.clone());
    let host = Host::new(sb.root()).unwrap();
    let path = "/home/u/.bashrc";
    host.write_file_atomic(path, b"old", Mode(0o644), UID, GID)
        .unwrap();
    let big = vec![b'x'; 256 * 1024];
    let err = host
        .write_file_atomic(path, &big, Mode(0o644), UID, GID)
        .unwrap_err();
    match &err {
        HostError::Io {
            op: Op::Write,
            source,
            ..
        } => assert_eq!(source.raw_os_error(), Some(28)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(fs::read(sb.at(path)).unwrap(), b"old");
    assert_eq!(names_in(&home), vec![".bashrc".to_string()]);
}

#[test]
fn symlinks_are_created_repointed_and_never_replace_files_or_dirs() {
    let sb = Sandbox::new();
    for (i, host) in sb.hosts().iter().enumerate() {
        let link = format!("/home/u/link{i}");
        assert_eq!(host.read_link(&link).unwrap(), LinkState::Absent);
        host.create_symlink_atomic(&link, "/opt/tool/a", UID, GID)
            .unwrap();
        match host.read_link(&link).unwrap() {
            LinkState::Symlink { target, inode } => {
                assert_eq!(target, Path::new("/opt/tool/a"));
                assert_eq!((inode.uid, inode.gid), (UID, GID));
            }
            other => panic!("unexpected {other:?}"),
        }
        host.create_symlink_atomic(&link, "/opt/tool/b", UID, GID)
            .unwrap();
        assert_eq!(
            fs::read_link(sb.at(&link)).unwrap(),
            Path::new("/opt/tool/b")
        );

        let file = format!("/home/u/file{i}");
        fs::write(sb.at(&file), b"mine").unwrap();
        let err = host
            .create_symlink_atomic(&file, "/x", UID, GID)
            .unwrap_err();
        assert!(
            matches!(
                err,
                HostError::Exists {
                    kind: FileKind::Regular,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(fs::read(sb.at(&file)).unwrap(), b"mine");
        assert_eq!(
            host.read_link(&file).unwrap(),
            LinkState::Other(FileKind::Regular)
        );

        let dir = format!("/home/u/dir{i}");
        fs::create_dir(sb.at(&dir)).unwrap();
        let err = host
            .create_symlink_atomic(&dir, "/x", UID, GID)
            .unwrap_err();
        assert!(
            matches!(
                err,
                HostError::Exists {
                    kind: FileKind::Directory,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(fs::symlink_metadata(sb.at(&dir)).unwrap().is_dir());
    }
    assert_no_temp_files(&sb.at("/home/u"));
}

#[test]
fn invalid_paths_and_non_directory_parents_are_refused() {
    let sb = Sandbox::new();
    fs::write(sb.at("/home/u/plain"), b"").unwrap();
    for host in sb.hosts() {
        for bad in [
            "/",
            "",
            "relative",
            "/home/u/../../etc/x",
            "/home//u",
            "/home/u/",
            "/home/./u",
        ] {
            let err = host.observe_file(bad).unwrap_err();
            assert!(
                matches!(err, HostError::InvalidPath { .. }),
                "{bad:?}: {err:?}"
            );
        }
        let err = host.observe_file("/home/u/plain/x").unwrap_err();
        assert!(
            matches!(
                err,
                HostError::NotDirectory {
                    kind: FileKind::Regular,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(
            host.observe_file("/home/u/missing").unwrap(),
            FileState::Absent
        );
        assert_eq!(
            host.observe_dir("/home/u/missing").unwrap(),
            DirState::Absent
        );
        assert_eq!(
            host.observe_dir("/home/u/plain").unwrap(),
            DirState::Other(FileKind::Regular)
        );
    }
}

#[test]
fn observed_content_is_bounded() {
    let sb = Sandbox::new();
    fs::write(sb.at("/home/u/ten"), b"0123456789").unwrap();
    let host = Host::new(sb.root()).unwrap();
    match host.observe_file_limited("/home/u/ten", 4).unwrap() {
        FileState::Regular(f) => {
            assert_eq!(f.content, None);
            assert_eq!(f.inode.size, 10);
        }
        other => panic!("unexpected {other:?}"),
    }
    match host.observe_file_limited("/home/u/ten", 10).unwrap() {
        FileState::Regular(f) => assert_eq!(f.content.as_deref(), Some(&b"0123456789"[..])),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn f6_symlinked_home_is_reported_and_never_modified() {
    let sb = Sandbox::new();
    symlink(sb.etc(), sb.at("/home/v")).unwrap();
    let etc_before = mode_owner(&sb.etc());
    for host in sb.hosts() {
        assert_eq!(
            host.observe_dir("/home/v").unwrap(),
            DirState::Other(FileKind::Symlink)
        );
        let err = host
            .ensure_dir("/home/v", Mode(0o700), UID, GID)
            .unwrap_err();
        assert!(
            matches!(
                err,
                HostError::NotDirectory {
                    kind: FileKind::Symlink,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = host
            .set_mode_owner("/home/v", Mode(0o700), UID, GID)
            .unwrap_err();
        assert!(
            matches!(
                err,
                HostError::NotRegular {
                    kind: FileKind::Symlink,
                    ..
                }
            ),
            "{err:?}"
        );
        let err = host
            .write_file_atomic("/home/v/canary", b"x", Mode(0o600), UID, GID)
            .unwrap_err();
        assert!(matches!(err, HostError::SymlinkInPath { .. }), "{err:?}");
    }
    assert_eq!(mode_owner(&sb.etc()), etc_before);
    sb.assert_canary_intact();
}

/// Sets the mtime (and atime) of `path` itself, not following a symlink.
fn set_mtime(path: &Path, secs_ago: i64) {
    let then = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - secs_ago;
    let ts = rustix::fs::Timestamps {
        last_access: rustix::fs::Timespec {
            tv_sec: then,
            tv_nsec: 0,
        },
        last_modification: rustix::fs::Timespec {
            tv_sec: then,
            tv_nsec: 0,
        },
    };
    rustix::fs::utimensat(CWD, path, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn identity_of(host: &Host, path: &str) -> Identity {
    match host.observe_file(path).unwrap() {
        FileState::Regular(f) => f.inode.identity(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn expected_identity_refuses_an_entry_changed_since_it_was_observed() {
    let sb = Sandbox::new();
    for (i, host) in sb.hosts().iter().enumerate() {
        let path = format!("/home/u/marked{i}");
        let real = sb.at(&path);
        let write = |expected| {
            host.write_file_atomic_expecting(
                &path,
                b"ours\n",
                Mode(0o644),
                UID,
                GID,
                Overwrite::RegularOnly,
                Some(expected),
            )
        };
        // Each way a user can change the entry in between: an in-place edit of the same size,
        // a chmod, a replacement by rename, a removal.
        let edits: [(&str, &dyn Fn()); 4] = [
            ("in-place edit", &|| fs::write(&real, b"theirs\n").unwrap()),
            ("chmod", &|| {
                fs::set_permissions(&real, fs::Permissions::from_mode(0o600)).unwrap()
            }),
            ("rename over", &|| {
                fs::write(sb.at("/home/u/other"), b"mine!!\n").unwrap();
                fs::rename(sb.at("/home/u/other"), &real).unwrap();
            }),
            ("removal", &|| fs::remove_file(&real).unwrap()),
        ];
        for (what, edit) in edits {
            fs::write(&real, b"mine!!\n").unwrap();
            fs::set_permissions(&real, fs::Permissions::from_mode(0o644)).unwrap();
            let observed = identity_of(host, &path);
            // Timestamps have a clock-tick granularity: let one pass, as a real user would.
            thread::sleep(Duration::from_millis(20));
            edit();
            let before = fs::read(&real).ok();
            let err = write(observed).unwrap_err();
            assert!(matches!(err, HostError::Raced { .. }), "{what}: {err:?}");
            assert!(err.to_string().contains(&path), "{err}");
            assert_eq!(fs::read(&real).ok(), before, "{what}: nothing was modified");
            assert_no_temp_files(&sb.at("/home/u"));
        }
        // Unchanged since observed: replaced.
        fs::write(&real, b"mine!!\n").unwrap();
        let observed = identity_of(host, &path);
        write(observed).unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"ours\n");
        assert_eq!(mode_owner(&real), (0o644, UID, GID));
        // And `None` checks nothing, as write_file_atomic_with.
        fs::write(&real, b"edited\n").unwrap();
        host.write_file_atomic_expecting(
            &path,
            b"again\n",
            Mode(0o644),
            UID,
            GID,
            Overwrite::RegularOnly,
            None,
        )
        .unwrap();
        assert_eq!(fs::read(&real).unwrap(), b"again\n");
    }
}

#[test]
fn temp_names_we_make_are_the_names_we_sweep() {
    let sb = Sandbox::new();
    let host = Host::new(sb.root()).unwrap();
    let long = "x".repeat(250);
    for name in [
        ".bashrc",
        "config.json",
        "a.steward-tmp.1.2.3",
        long.as_str(),
        "é",
    ] {
        let path = format!("/home/u/{name}");
        let p = host.parent(&path).unwrap();
        let (temp, ()) = create_temp(&p, |_| Ok(())).unwrap();
        assert!(is_temp_name(&temp), "{temp}");
        assert!(temp.len() <= 255, "{temp}");
    }
    for (name, ours) in [
        (".bashrc.steward-tmp.123.0.1f2e", true),
        ("..bashrc.steward-tmp.9.17.abc", true),
        ("bashrc.steward-tmp.123.0.1f2e", false),
        (".steward-tmp.123.0.1f", false),
        (".x.steward-tmp.123.0.1F", false),
        (".x.steward-tmp.123.0", false),
        (".x.steward-tmp.123.0.1f.2", false),
        (".x.steward-tmp.12a.0.1f", false),
        (".x.steward-tmp..0.1f", false),
        (".x.steward-tmp.1.2.", false),
        (".x.steward-tmp.1.2.3~", false),
        (".bashrc", false),
    ] {
        assert_eq!(is_temp_name(name), ours, "{name}");
    }
}

/// The pid of a process that has exited (and been reaped).
fn dead_pid() -> u32 {
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn r5_stale_temp_files_of_a_killed_agent_are_swept_by_the_next_write() {
    let sb = Sandbox::new();
    let home = sb.at("/home/u");
    let stale_root = home.join(".bashrc.steward-tmp.4711.0.1a2b");
    let stale_owner = home.join(".profile.steward-tmp.4711.1.1a2b");
    let stale_link = home.join(".link.steward-tmp.4711.2.1a2b");
    let stale_other_owner = home.join(".a.steward-tmp.4711.3.1a2b");
    let stale_hardlinked = home.join(".b.steward-tmp.4711.4.1a2b");
    let stale_dir = home.join(".c.steward-tmp.4711.5.1a2b");
    let stale_not_ours = home.join(".d.steward-tmp.4711.6.notours");
    // Young: ours (another thread may be writing it), a live process's (pid 1), and a dead
    // process's (a killed agent's: stale at once, whatever its age).
    let fresh = home.join(format!(".e.steward-tmp.{}.7.1a2b", std::process::id()));
    let fresh_live = home.join(".f.steward-tmp.1.8.1a2b");
    let fresh_dead = home.join(format!(".g.steward-tmp.{}.9.1a2b", dead_pid()));
    for f in [
        &stale_root,
        &stale_owner,
        &stale_other_owner,
        &stale_hardlinked,
        &stale_not_ours,
        &fresh,
        &fresh_live,
        &fresh_dead,
    ] {
        fs::write(f, b"partial").unwrap();
    }
    std::os::unix::fs::chown(&stale_owner, Some(UID), Some(GID)).unwrap();
    std::os::unix::fs::chown(&stale_other_owner, Some(UID + 7), Some(GID)).unwrap();
    fs::hard_link(&stale_hardlinked, home.join("keep-hardlink")).unwrap();
    symlink(sb.canary(), &stale_link).unwrap();
    fs::create_dir(&stale_dir).unwrap();
    for f in [
        &stale_root,
        &stale_owner,
        &stale_link,
        &stale_other_owner,
        &stale_hardlinked,
        &stale_dir,
        &stale_not_ours,
    ] {
        set_mtime(f, 3600);
    }
    let host = Host::new(sb.root())
        .unwrap()
        .with_stale_temp_age(Duration::from_secs(600));
    host.write_file_atomic("/home/u/target", b"new", Mode(0o644), UID, GID)
        .unwrap();
    let mut expected: Vec<String> = [
        &stale_other_owner,
        &stale_hardlinked,
        &stale_dir,
        &stale_not_ours,
        &fresh,
        &fresh_live,
    ]
    .iter()
    .map(|p| p.file_name().unwrap().to_str().unwrap().to_string())
    .chain(["keep-hardlink".to_string(), "target".to_string()])
    .collect();
    expected.sort();
    assert_eq!(names_in(&home), expected);
    sb.assert_canary_intact();

    // A symlink write sweeps too; with the default age nothing young is touched.
    let host = Host::new(sb.root()).unwrap();
    set_mtime(&fresh, 3600);
    host.create_symlink_atomic("/home/u/l", "/t", UID, GID)
        .unwrap();
    assert!(!fresh.exists(), "an hour-old temp of ours is stale");
    assert!(stale_dir.is_dir());
}

#[test]
fn backups_land_in_a_root_only_content_addressed_bucket() {
    let sb = Sandbox::new();
    fs::create_dir_all(sb.at("/var/lib")).unwrap();
    let bucket = "/var/lib/steward/bucket";
    for host in sb.hosts() {
        let digest = host.backup_content(bucket, b"old secret\n").unwrap();
        assert_eq!(
            digest,
            hex::encode(Sha256::digest(b"old secret\n")),
            "named by the sha-256 of the content"
        );
        let kept = sb.at(&format!("{bucket}/{digest}"));
        assert_eq!(fs::read(&kept).unwrap(), b"old secret\n");
        assert_eq!(mode_owner(&kept), (0o600, 0, 0));
        assert_eq!(mode_owner(&sb.at(bucket)), (0o700, 0, 0));
        assert_eq!(mode_owner(&sb.at("/var/lib/steward")), (0o700, 0, 0));
        let ino = fs::metadata(&kept).unwrap().ino();

        // The same content again: nothing written.
        assert_eq!(
            host.backup_content(bucket, b"old secret\n").unwrap(),
            digest
        );
        assert_eq!(fs::metadata(&kept).unwrap().ino(), ino);

        // A loosened bucket is tightened; a tampered copy is rewritten.
        fs::set_permissions(sb.at(bucket), fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(&kept, b"tampered").unwrap();
        assert_eq!(
            host.backup_content(bucket, b"old secret\n").unwrap(),
            digest
        );
        assert_eq!(mode_owner(&sb.at(bucket)), (0o700, 0, 0));
        assert_eq!(fs::read(&kept).unwrap(), b"old secret\n");
        assert_eq!(mode_owner(&kept), (0o600, 0, 0));
        assert_no_temp_files(&sb.at(bucket));
        fs::remove_dir_all(sb.at("/var/lib/steward")).unwrap();
    }
    // A symlinked state directory is refused, and nothing lands behind it.
    symlink(sb.etc(), sb.at("/var/lib/steward")).unwrap();
    for host in sb.hosts() {
        let err = host.backup_content(bucket, b"x").unwrap_err();
        assert!(
            matches!(
                err,
                HostError::NotDirectory {
                    kind: FileKind::Symlink,
                    ..
                }
            ),
            "{err:?}"
        );
        sb.assert_canary_intact();
    }
    let host = Host::new(sb.root()).unwrap();
    for bad in ["/", "var/lib", "/var/../etc"] {
        assert!(matches!(
            host.backup_content(bad, b"x"),
            Err(HostError::InvalidPath { .. })
        ));
    }
}

#[test]
fn link_owner_is_set_on_the_link_never_its_target() {
    let sb = Sandbox::new();
    symlink(sb.canary(), sb.at("/home/u/link")).unwrap();
    fs::write(sb.at("/home/u/file"), b"").unwrap();
    for host in sb.hosts() {
        host.set_link_owner("/home/u/link", UID, GID).unwrap();
        assert_eq!(mode_owner(&sb.at("/home/u/link")).1, UID);
        sb.assert_canary_intact();
        let err = host.set_link_owner("/home/u/file", UID, GID).unwrap_err();
        assert!(matches!(err, HostError::Raced { .. }), "{err:?}");
        assert_eq!(mode_owner(&sb.at("/home/u/file")), (0o644, 0, 0));
    }
}

/// Names the [`Step`] before which a writer started by
/// [`r5_sigkill_at_every_step_leaves_old_or_new_and_the_next_run_removes_the_temp`]
/// SIGKILLs itself (read only by this test build).
const KILL_AT_ENV: &str = "STEWARD_TEST_HOST_KILL_AT";

/// `<root>\n<catalog path>\n<file|link>` for [`child_writer_for_sigkill_tests`].
const CHILD_ENV: &str = "STEWARD_TEST_HOST_CHILD_WRITE";

/// The fail-point of the write path: called by `inject` before each [`Step`], in test builds
/// only. A real SIGKILL: no unwinding, no destructor, no cleanup runs.
pub(super) fn kill_if_asked(step: Step) {
    if std::env::var(KILL_AT_ENV).is_ok_and(|at| at == format!("{step:?}")) {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // The signal is process-directed: make sure this thread does nothing more meanwhile.
        loop {
            thread::park();
        }
    }
}

/// Not a test of its own: the writer process the SIGKILL test starts (this test binary, run
/// with [`CHILD_ENV`] and [`KILL_AT_ENV`] set). Without them it has nothing to do.
#[test]
fn child_writer_for_sigkill_tests() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let [root, path, kind]: [&str; 3] = spec.split('\n').collect::<Vec<_>>().try_into().unwrap();
    let host = Host::new(root).unwrap();
    match kind {
        "file" => host
            .write_file_atomic(path, b"new content\n", Mode(0o640), UID, GID)
            .unwrap(),
        _ => host.create_symlink_atomic(path, "/new", UID, GID).unwrap(),
    }
}

/// Runs [`child_writer_for_sigkill_tests`] in a new process that kills itself before `step`.
fn write_in_a_child_killed_at(
    root: &Path,
    path: &str,
    kind: &str,
    step: Step,
) -> std::process::ExitStatus {
    std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "host::tests::child_writer_for_sigkill_tests",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, format!("{}\n{path}\n{kind}", root.display()))
        .env(KILL_AT_ENV, format!("{step:?}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap()
}

fn temps_in(dir: &Path) -> Vec<String> {
    names_in(dir)
        .into_iter()
        .filter(|n| n.contains(".steward-tmp."))
        .collect()
}

#[test]
fn r5_sigkill_at_every_step_leaves_old_or_new_and_the_next_run_removes_the_temp() {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::new();
    let home = sb.at("/home/u");
    // The home is its user's: a temp killed after its fchown is the user's, and still ours.
    std::os::unix::fs::chown(&home, Some(UID), Some(GID)).unwrap();
    let path = "/home/u/.bashrc";
    let real = sb.at(path);
    let steps = [
        Step::Write,
        Step::Chown,
        Step::Chmod,
        Step::Fsync,
        Step::Rename,
        Step::DirFsync,
    ];
    for step in steps {
        for existing in [true, false] {
            let what = format!("killed before {step:?}, target existing: {existing}");
            for name in names_in(&home) {
                fs::remove_file(home.join(name)).unwrap();
            }
            if existing {
                fs::write(&real, b"old content\n").unwrap();
                fs::set_permissions(&real, fs::Permissions::from_mode(0o644)).unwrap();
            }

            let status = write_in_a_child_killed_at(&sb.root(), path, "file", step);
            assert_eq!(status.signal(), Some(9), "{what}: {status:?}");

            // Old or new, never anything in between (R5).
            let renamed = step == Step::DirFsync;
            let now = fs::read(&real).ok();
            if renamed {
                assert_eq!(now.as_deref(), Some(&b"new content\n"[..]), "{what}");
                assert_eq!(mode_owner(&real), (0o640, UID, GID), "{what}");
            } else if existing {
                assert_eq!(now.as_deref(), Some(&b"old content\n"[..]), "{what}");
                assert_eq!(mode_owner(&real), (0o644, 0, 0), "{what}");
            } else {
                assert_eq!(now, None, "{what}");
            }
            let left = temps_in(&home);
            assert_eq!(left.len(), usize::from(!renamed), "{what}: {left:?}");

            // The next run removes what the killed one left, at once: through the sweep a run
            // makes for a file it manages (a converged file is never written again), or
            // through its next write into the directory.
            let host = Host::new(sb.root()).unwrap();
            if existing {
                assert_eq!(host.remove_stale_temps(path), left.len(), "{what}");
                assert_eq!(
                    fs::read(&real).ok(),
                    now,
                    "{what}: the sweep touches no target"
                );
            } else {
                host.write_file_atomic(path, b"next run\n", Mode(0o600), UID, GID)
                    .unwrap();
                assert_eq!(fs::read(&real).unwrap(), b"next run\n", "{what}");
            }
            assert_eq!(temps_in(&home), Vec::<String>::new(), "{what}");
        }
    }
    sb.assert_canary_intact();
}

#[test]
fn r5_run_sweep_spares_live_writers_and_what_is_not_ours() {
    let sb = Sandbox::new();
    let home = sb.at("/home/u");
    let host = Host::new(sb.root()).unwrap();
    host.write_file_atomic("/home/u/f", b"x", Mode(0o644), UID, GID)
        .unwrap();
    let dead = dead_pid();
    let kept = [
        // A live agent's (pid 1 stands in for it), and one of this process (another thread).
        ".f.steward-tmp.1.0.1a".to_string(),
        format!(".f.steward-tmp.{}.0.1a", std::process::id()),
        // Dead writer, but not ours to remove: another user's, not our name pattern, a
        // directory, hardlinked.
        format!(".g.steward-tmp.{dead}.0.1a"),
        format!(".h.steward-tmp.{dead}.0.1X"),
        format!(".i.steward-tmp.{dead}.0.1a"),
        format!(".j.steward-tmp.{dead}.0.1a"),
    ];
    for name in &kept[..4] {
        fs::write(home.join(name), b"partial").unwrap();
    }
    std::os::unix::fs::chown(home.join(&kept[2]), Some(UID + 1), None).unwrap();
    fs::create_dir(home.join(&kept[4])).unwrap();
    fs::write(home.join(&kept[5]), b"partial").unwrap();
    fs::hard_link(home.join(&kept[5]), home.join("other-link")).unwrap();
    // Removed: a dead writer's, owned by root or by the target's owner, file or symlink
    // (never followed: the canary behind it stays).
    let removed = [
        format!(".f.steward-tmp.{dead}.1.1a"),
        format!(".f.steward-tmp.{dead}.2.1a"),
        format!(".f.steward-tmp.{dead}.3.1a"),
    ];
    fs::write(home.join(&removed[0]), b"partial").unwrap();
    fs::write(home.join(&removed[1]), b"partial").unwrap();
    std::os::unix::fs::chown(home.join(&removed[1]), Some(UID), Some(GID)).unwrap();
    symlink(sb.canary(), home.join(&removed[2])).unwrap();

    assert_eq!(host.remove_stale_temps("/home/u/f"), removed.len());
    let mut expected: Vec<String> = kept.to_vec();
    expected.extend(["f".to_string(), "other-link".to_string()]);
    expected.sort();
    assert_eq!(names_in(&home), expected);
    assert_eq!(fs::read(home.join("f")).unwrap(), b"x");
    sb.assert_canary_intact();
    // A directory that does not exist has nothing to sweep.
    assert_eq!(host.remove_stale_temps("/home/nobody/f"), 0);
}

#[test]
fn r5_sigkill_at_every_step_of_a_symlink_write_leaves_old_or_new_and_no_temp() {
    use std::os::unix::process::ExitStatusExt;
    let sb = Sandbox::new();
    let home = sb.at("/home/u");
    std::os::unix::fs::chown(&home, Some(UID), Some(GID)).unwrap();
    let path = "/home/u/link";
    let real = sb.at(path);
    for step in [Step::Chown, Step::Rename, Step::DirFsync] {
        for existing in [true, false] {
            let what = format!("killed before {step:?}, link existing: {existing}");
            for name in names_in(&home) {
                fs::remove_file(home.join(name)).unwrap();
            }
            if existing {
                symlink("/old", &real).unwrap();
            }

            let status = write_in_a_child_killed_at(&sb.root(), path, "link", step);
            assert_eq!(status.signal(), Some(9), "{what}: {status:?}");

            let renamed = step == Step::DirFsync;
            let now = fs::read_link(&real).ok();
            let expected = match (renamed, existing) {
                (true, _) => Some(PathBuf::from("/new")),
                (false, true) => Some(PathBuf::from("/old")),
                (false, false) => None,
            };
            assert_eq!(now, expected, "{what}");
            let left = temps_in(&home);
            assert_eq!(left.len(), usize::from(!renamed), "{what}: {left:?}");

            let host = Host::new(sb.root()).unwrap();
            assert_eq!(host.remove_stale_temps(path), left.len(), "{what}");
            assert_eq!(fs::read_link(&real).ok(), now, "{what}");
            assert_eq!(temps_in(&home), Vec::<String>::new(), "{what}");
        }
    }
    sb.assert_canary_intact();
}
