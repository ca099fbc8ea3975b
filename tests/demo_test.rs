//! The README's one-command demo works: `steward-demo --check` (what `bash demo.sh` runs,
//! checking instead of waiting for Ctrl-C) starts OpenBao, the server and an agent, sees the
//! first run report in the admin API and on the node's UI page after signing in with the
//! password it printed, presses "Run now" in the UI and sees that run's report, then stops
//! everything. Afterwards nothing of it may be left: no process, no mount, no root.
//!
//! As root (CI) the agent converges a booted disposable Debian root, as for a newcomer who
//! runs the demo with sudo; `--noop` is the path of a newcomer without root (dry runs against
//! a scratch root). Each demo runs in its own directory on free ports, beside any demo a
//! developer has running.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use steward_tests::{harness, is_root, mounts_under, processes_mentioning, terminate, PidFile};

/// Longer than the demo's own `--check` limit (15 min) plus its shutdown.
const TIMEOUT: Duration = Duration::from_secs(1080);

/// A `steward-demo` process; on drop (also when an assertion failed) it is asked to stop
/// (SIGTERM, as Ctrl-C), killed if it does not, and whatever it left is removed.
struct DemoRun {
    child: Option<Child>,
    dir: PathBuf,
    output: PathBuf,
}

impl DemoRun {
    fn start(parent: &Path, args: &[&str]) -> DemoRun {
        let dir = parent.join("demo");
        let output = parent.join("demo-output.txt");
        let file = std::fs::File::create(&output).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_steward-demo"))
            .args(["--check", "--dir"])
            .arg(&dir)
            .args(args)
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("starting steward-demo");
        DemoRun {
            child: Some(child),
            dir,
            output,
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.output).unwrap_or_default()
    }

    /// Waits for the demo to exit; its exit code (None: killed or timed out).
    fn wait(&mut self, timeout: Duration) -> Option<i32> {
        let child = self.child.as_mut().unwrap();
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// What is left of the demo: processes naming its directory, mounts under it, its root.
    fn leftovers(&self) -> Vec<String> {
        let mut left = processes_mentioning(&self.dir.display().to_string());
        left.extend(
            mounts_under(&self.dir)
                .into_iter()
                .map(|m| format!("mount {}", m.display())),
        );
        for path in [self.dir.join("root"), self.dir.join("root.devvm")] {
            if path.exists() {
                left.push(format!("{} exists", path.display()));
            }
        }
        if self.dir.join("pids").exists() {
            left.push("the pid file was not removed".into());
        }
        left
    }
}

impl Drop for DemoRun {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(120));
        }
        // Whatever a killed demo left.
        PidFile(self.dir.join("pids")).stop_all();
        if self.dir.join("root.devvm").exists() {
            let _ = Command::new("bash")
                .arg(harness("drop-root.sh"))
                .arg(self.dir.join("root"))
                .output();
        }
        if std::thread::panicking() {
            eprintln!("===== steward-demo output =====\n{}", self.output());
            for log in ["server.log", "agent.log"] {
                let text =
                    std::fs::read_to_string(self.dir.join("logs").join(log)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!(
                    "===== {log} (last 60 lines) =====\n{}",
                    lines[lines.len().saturating_sub(60)..].join("\n")
                );
            }
        }
    }
}

fn check_demo(args: &[&str]) -> String {
    let t = tempfile::Builder::new()
        .prefix("steward-demo-test-")
        .tempdir()
        .unwrap();
    let mut demo = DemoRun::start(t.path(), args);
    let code = demo.wait(TIMEOUT);
    let output = demo.output();
    assert_eq!(
        code,
        Some(0),
        "steward-demo --check {args:?} did not succeed:\n{output}"
    );
    for expected in [
        "Web UI     http://127.0.0.1:",
        "admin password: ",
        "check: signed in at",
        "check passed",
        "stopping: OpenBao",
    ] {
        assert!(output.contains(expected), "{expected:?} in:\n{output}");
    }
    let left = demo.leftovers();
    assert!(left.is_empty(), "the demo left: {left:#?}\n{output}");
    output
}

#[test]
fn the_demo_converges_a_booted_root_and_its_reports_reach_the_web_ui() {
    assert!(
        is_root(),
        "the demo's full path needs root (CI runs as root): it boots a disposable root"
    );
    let output = check_demo(&[]);
    assert!(output.contains("booting the sandbox root"), "{output}");
    assert!(
        output.contains("run report from devvm: changed"),
        "{output}"
    );
}

#[test]
fn the_demo_without_root_does_dry_runs_and_its_reports_reach_the_web_ui() {
    let output = check_demo(&["--noop"]);
    assert!(output.contains("dry-run report from devvm"), "{output}");
    assert!(!output.contains("booting the sandbox root"), "{output}");
}
