//! Faults of the machine under a real agent run (`steward-agent run --catalog --root`): a
//! target file system that is full (ENOSPC, THREATS R8) or out of inodes, and a read-only
//! mount under a managed path. Each fault fails only the resources it touches, with the
//! kernel's reason in the message; the old file is intact, no temp file is left, every other
//! resource converges (R9) and the run's report is still spooled (R13).
//!
//! The file systems are real: a tiny tmpfs and a read-only bind mount, mounted under the
//! sandbox root by the test (which runs as root, as this project's machines and CI do) and
//! unmounted when it ends.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use steward_protocol::{
    FileContent, FileSpec, Mode, Replace, Resource, ResourceSpec, ResourceStatus, RunReport,
};
use support::{catalog, now, sign, trust};

/// A sandbox root (`root/srv`), the agent's state directory and its config, outside the root.
struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    state: PathBuf,
    work: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let work = dir.path().join("work");
        std::fs::create_dir_all(root.join("srv")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join("agent.toml"), "# defaults\n").unwrap();
        Sandbox {
            _dir: dir,
            root,
            state,
            work,
        }
    }

    /// `path` (absolute in the root) as seen from here.
    fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// `run --catalog` on `resources`; the exit status and the JSON report.
    fn run(&self, resources: Vec<Resource>) -> (Output, RunReport) {
        let serial = u64::try_from(now()).unwrap() * 1000 + self.spooled() as u64;
        let file = self.work.join("catalog.json");
        std::fs::write(&file, sign(&catalog("devvm", serial, resources))).unwrap();
        let out = Command::new(support::agent_binary())
            .arg("--config")
            .arg(self.work.join("agent.toml"))
            .arg("--state-dir")
            .arg(&self.state)
            .args(["run", "--json", "--catalog"])
            .arg(&file)
            .args(["--trust", &trust(), "--node", "devvm", "--root"])
            .arg(&self.root)
            .output()
            .unwrap();
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "no JSON report ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out, report)
    }

    /// How many reports wait in the spool.
    fn spooled(&self) -> usize {
        std::fs::read_dir(self.state.join("spool")).map_or(0, |d| d.count())
    }
}

/// A mount made by a test, unmounted (lazily, so a failed assertion cannot leave it busy)
/// when dropped.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// `mount ARGS... DIR`, asserting success: a test that silently ran without its file system
/// could never fail.
fn mount(args: &[&str], dir: &Path) -> Mounted {
    std::fs::create_dir_all(dir).unwrap();
    let out = Command::new("mount").args(args).arg(dir).output().unwrap();
    assert!(
        out.status.success(),
        "mount {args:?} {} failed (these tests need root): {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Mounted(dir.to_path_buf())
}

fn file(path: &str, content: &[u8]) -> Resource {
    Resource::new(ResourceSpec::File(FileSpec {
        path: path.into(),
        owner: "0".into(),
        group: "0".into(),
        mode: Mode(0o644),
        content: FileContent::Text(String::from_utf8(content.to_vec()).unwrap()),
        replace: Replace::Always,
        backup: false,
    }))
}

/// The event of resource `id`: its status and message.
#[track_caller]
fn event(report: &RunReport, id: &str) -> (ResourceStatus, String) {
    let e = report
        .events
        .iter()
        .find(|e| e.resource.to_string() == id)
        .unwrap_or_else(|| panic!("no event for {id}: {report:#?}"));
    (e.status, e.message.clone().unwrap_or_default())
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[track_caller]
fn assert_no_temp_files(dir: &Path) {
    let temps: Vec<String> = names_in(dir)
        .into_iter()
        .filter(|n| n.contains(".steward-tmp."))
        .collect();
    assert!(
        temps.is_empty(),
        "temps left in {}: {temps:?}",
        dir.display()
    );
}

/// A resource that does not fit fails and names ENOSPC; the old file stays; the others
/// converge; the report is spooled (on another file system).
#[test]
fn r8_a_full_file_system_fails_only_the_file_that_does_not_fit() {
    let sb = Sandbox::new();
    let small = sb.at("/srv/small");
    let _mounted = mount(
        &["-t", "tmpfs", "-o", "size=64k,mode=0755", "tmpfs"],
        &small,
    );
    std::fs::write(small.join("big"), b"old content\n").unwrap();
    let huge = vec![b'x'; 256 * 1024];
    let spooled = sb.spooled();

    let (out, report) = sb.run(vec![
        file("/srv/small/big", &huge),
        file("/srv/small/fits", b"small enough\n"),
        file("/srv/elsewhere", b"another file system\n"),
    ]);

    assert_eq!(out.status.code(), Some(6), "{report:#?}");
    let (status, message) = event(&report, "file:/srv/small/big");
    assert_eq!(status, ResourceStatus::Failed, "{message}");
    assert!(message.contains("/srv/small/big"), "{message}");
    assert!(
        message.contains("No space left on device"),
        "the kernel's reason is named: {message}"
    );
    assert_eq!(std::fs::read(small.join("big")).unwrap(), b"old content\n");
    assert_no_temp_files(&small);
    for id in ["file:/srv/small/fits", "file:/srv/elsewhere"] {
        assert_eq!(event(&report, id).0, ResourceStatus::Changed, "{id}");
    }
    assert_eq!(
        std::fs::read(small.join("fits")).unwrap(),
        b"small enough\n"
    );
    assert_eq!(sb.spooled(), spooled + 1, "the run's report is spooled");
}

/// With every inode used, the temp file cannot even be created: the resource fails naming
/// ENOSPC, the old file stays, nothing is left behind, and the run goes on.
#[test]
fn r8_inode_exhaustion_fails_the_write_before_anything_is_created() {
    let sb = Sandbox::new();
    let small = sb.at("/srv/small");
    let _mounted = mount(
        &[
            "-t",
            "tmpfs",
            "-o",
            "size=1m,nr_inodes=16,mode=0755",
            "tmpfs",
        ],
        &small,
    );
    std::fs::write(small.join("config"), b"old content\n").unwrap();
    // Use up every inode left.
    let mut filler = 0;
    while std::fs::write(small.join(format!("filler{filler}")), b"").is_ok() {
        filler += 1;
        assert!(filler < 100, "nr_inodes is not enforced");
    }
    let before = names_in(&small);
    let spooled = sb.spooled();

    let (out, report) = sb.run(vec![
        file("/srv/small/config", b"new content\n"),
        file("/srv/elsewhere", b"another file system\n"),
    ]);

    assert_eq!(out.status.code(), Some(6), "{report:#?}");
    let (status, message) = event(&report, "file:/srv/small/config");
    assert_eq!(status, ResourceStatus::Failed, "{message}");
    assert!(message.contains("/srv/small/config"), "{message}");
    assert!(message.contains("No space left on device"), "{message}");
    assert_eq!(
        std::fs::read(small.join("config")).unwrap(),
        b"old content\n"
    );
    assert_eq!(names_in(&small), before, "nothing created or removed");
    assert_eq!(
        event(&report, "file:/srv/elsewhere").0,
        ResourceStatus::Changed
    );
    assert_eq!(sb.spooled(), spooled + 1, "the run's report is spooled");

    // Once an inode is free again, the next run converges.
    std::fs::remove_file(small.join("filler0")).unwrap();
    let (_, report) = sb.run(vec![file("/srv/small/config", b"new content\n")]);
    assert_eq!(
        event(&report, "file:/srv/small/config").0,
        ResourceStatus::Changed
    );
    assert_eq!(
        std::fs::read(small.join("config")).unwrap(),
        b"new content\n"
    );
    assert_no_temp_files(&small);
}

/// A managed path under a read-only bind mount fails naming EROFS; nothing else breaks.
#[test]
fn a_read_only_mount_under_a_managed_path_fails_naming_erofs() {
    let sb = Sandbox::new();
    let ro = sb.at("/srv/ro");
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("config"), b"old content\n").unwrap();
    let _bind = mount(&["--bind", ro.to_str().unwrap()], &ro);
    // The same mount, made read-only (unmounted by the guard above).
    std::mem::forget(mount(&["-o", "remount,bind,ro"], &ro));
    let spooled = sb.spooled();

    let (out, report) = sb.run(vec![
        file("/srv/ro/config", b"new content\n"),
        file("/srv/ro/new", b"new file\n"),
        file("/srv/writable", b"converges\n"),
    ]);

    assert_eq!(out.status.code(), Some(6), "{report:#?}");
    for id in ["file:/srv/ro/config", "file:/srv/ro/new"] {
        let (status, message) = event(&report, id);
        assert_eq!(status, ResourceStatus::Failed, "{id}: {message}");
        assert!(message.contains(&id["file:".len()..]), "{message}");
        assert!(
            message.contains("Read-only file system"),
            "EROFS is named: {message}"
        );
    }
    assert_eq!(std::fs::read(ro.join("config")).unwrap(), b"old content\n");
    assert_eq!(names_in(&ro), vec!["config".to_string()]);
    assert_eq!(
        event(&report, "file:/srv/writable").0,
        ResourceStatus::Changed
    );
    assert_eq!(sb.spooled(), spooled + 1, "the run's report is spooled");
}
