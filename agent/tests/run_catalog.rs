//! `steward-agent run --catalog FILE --trust FP` as a real binary against a sandbox root:
//! exit codes, the durable accepted serial, the spool and `status`, and every verification
//! refusal (nothing applied, persisted serial unchanged).

mod support;

use std::process::{Command, Output};

use steward_protocol::{
    DirectorySpec, GitCloneSpec, Mode, Resource, ResourceSpec, ResourceStatus, RunReport,
    RunStatus, Serial, Timestamp, UserEnsure, UserSpec,
};
use support::{catalog, now, sign, trust, Sandbox};

impl Sandbox {
    /// `run --catalog` with `bytes` as the envelope.
    fn run(&self, bytes: &[u8], extra: &[&str]) -> (Output, Option<RunReport>) {
        let out = self.run_envelope(bytes, extra);
        let report = serde_json::from_slice(&out.stdout).ok();
        (out, report)
    }

    fn accepted_serial(&self) -> Option<u64> {
        let text = std::fs::read_to_string(self.state.join("accepted.json")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["serial"].as_u64()
    }
}

fn marker_dir(path: &str) -> Resource {
    Resource::new(ResourceSpec::Directory(DirectorySpec {
        path: path.into(),
        owner: "0".into(),
        group: "0".into(),
        mode: Mode(0o750),
        replace: Default::default(),
    }))
}

fn serial_now() -> u64 {
    u64::try_from(now()).unwrap() * 1000
}

/// stderr and stdout (the JSON report), for assertion messages.
fn stderr(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    )
}

/// Under noop nothing is created, so what comes after a resource that would change (a clone
/// for an account that does not exist yet) cannot be checked: it would change, it did not fail.
#[test]
fn noop_reports_what_needs_a_would_change_resource_as_would_change_not_failed() {
    let sb = Sandbox::new();
    let user = Resource::new(ResourceSpec::User(UserSpec {
        name: "ada".into(),
        uid: None,
        shell: "/bin/bash".into(),
        home: "/home/ada".into(),
        home_mode: Mode(0o700),
        groups: Vec::new(),
        comment: None,
        lock_at_creation: true,
        ensure: UserEnsure::Present,
        privileged_groups: Vec::new(),
        revoke_groups: Vec::new(),
        enforce: Vec::new(),
        tier: None,
    }));
    let clone = Resource::new(ResourceSpec::GitClone(GitCloneSpec {
        path: "/home/ada/code/notes".into(),
        url: "https://git.example/ada/notes.git".into(),
        user: "ada".into(),
        branch: None,
        config: Default::default(),
        remotes: Default::default(),
        refresh: false,
        migrate_from: None,
    }));
    let bytes = sign(&catalog("devvm", serial_now(), vec![user, clone]));
    let (out, report) = sb.run(&bytes, &["--noop"]);
    let report = report.unwrap_or_else(|| panic!("{}", stderr(&out)));
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert_eq!(report.totals.failed, 0, "{:#?}", report.events);
    let clone = report
        .events
        .iter()
        .find(|e| e.resource.as_str() == "git_clone:/home/ada/code/notes")
        .unwrap();
    assert_eq!(clone.status, ResourceStatus::WouldChange);
    let message = clone.message.as_deref().unwrap_or_default();
    assert!(message.contains("after user:ada"), "{message}");
    assert!(!sb.root.join("home").exists(), "noop wrote nothing");
}

#[test]
fn a_signed_catalog_is_applied_with_detailed_exit_codes_and_a_spooled_report() {
    let sb = Sandbox::new();
    let serial = serial_now();
    let bytes = sign(&catalog("devvm", serial, vec![marker_dir("/srv/app")]));

    // Noop first: would change, writes nothing, exit 2.
    let (out, report) = sb.run(&bytes, &["--noop"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report = report.expect("json report");
    assert_eq!(report.status, RunStatus::Noop);
    assert_eq!(report.totals.would_change, 1);
    assert!(!sb.root.join("srv/app").exists(), "noop wrote nothing");

    // Real run: changed, exit 2.
    let (out, report) = sb.run(&bytes, &[]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let report = report.unwrap();
    assert_eq!(report.status, RunStatus::Changed);
    assert_eq!(report.catalog_serial, Some(Serial(serial)));
    let meta = std::fs::metadata(sb.root.join("srv/app")).unwrap();
    assert!(meta.is_dir());
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o7777,
        0o750
    );
    assert_eq!(sb.accepted_serial(), Some(serial));

    // Again: converged, exit 0.
    let (out, report) = sb.run(&bytes, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report.unwrap().status, RunStatus::Unchanged);

    // Three reports wait in the spool (no server), each 0600.
    let spooled: Vec<_> = std::fs::read_dir(sb.state.join("spool"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(spooled.len(), 3);
    for p in &spooled {
        let mode =
            std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions());
        assert_eq!(mode & 0o777, 0o600, "{}", p.display());
    }

    // `status` tells the last run.
    let out = sb.agent(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(text.contains("last run: unchanged"), "{text}");
    assert!(text.contains(&format!("serial:   {serial}")), "{text}");
    assert!(text.contains("no (spooled)"), "{text}");
}

#[test]
fn a_failed_resource_skips_its_dependents_and_exits_4() {
    let sb = Sandbox::new();
    // The parent does not exist and is not managed: the directory fails, its child is skipped,
    // an unrelated resource still converges.
    let resources = vec![
        marker_dir("/missing/parent"),
        marker_dir("/missing/parent/child"),
        marker_dir("/srv/other"),
    ];
    let bytes = sign(&catalog("devvm", serial_now(), resources));
    let (out, report) = sb.run(&bytes, &[]);
    let report = report.unwrap();
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(report.status, RunStatus::Failed);
    let by_id = |id: &str| event(&report, id);
    assert_eq!(
        by_id("directory:/missing/parent").status,
        steward_protocol::ResourceStatus::Failed
    );
    let child = by_id("directory:/missing/parent/child");
    assert_eq!(child.status, steward_protocol::ResourceStatus::Skipped);
    assert_eq!(
        child.message.as_deref(),
        Some("requires directory:/missing/parent which failed")
    );
    assert_eq!(
        by_id("directory:/srv/other").status,
        steward_protocol::ResourceStatus::Changed
    );
}

/// The event of resource `id` in `report`.
#[track_caller]
fn event(report: &RunReport, id: &str) -> steward_protocol::ResourceEvent {
    report
        .events
        .iter()
        .find(|e| e.resource.as_str() == id)
        .unwrap_or_else(|| panic!("no event for {id}"))
        .clone()
}

#[test]
fn every_refused_catalog_applies_nothing_and_keeps_the_persisted_serial() {
    let sb = Sandbox::new();
    let serial = serial_now();
    let good = sign(&catalog("devvm", serial, vec![]));
    let (out, _) = sb.run(&good, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(sb.accepted_serial(), Some(serial));

    let evil = vec![marker_dir("/srv/evil")];
    let newer = |resources: Vec<Resource>| catalog("devvm", serial + 1000, resources);
    let mut flipped = sign(&newer(evil.clone()));
    let at = flipped.len() / 3;
    flipped[at] ^= 0x20;
    let mut expired = newer(evil.clone());
    expired.compiled_at = Timestamp(now() - 7200);
    expired.expires_at = Timestamp(now() - 60);
    let mut unknown_format = newer(evil.clone());
    unknown_format.format_version += 1;
    let mut oversize = sign(&newer(evil.clone()));
    oversize.resize(steward_protocol::MAX_CATALOG_BYTES + 1, b' ');
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "forged",
            support::sign_with_root(&newer(evil.clone()), 9),
            "not signed by a trusted key",
        ),
        ("flipped byte", flipped, "catalog refused"),
        (
            "rollback",
            sign(&catalog("devvm", serial - 1, evil.clone())),
            "rollback",
        ),
        (
            "same serial, other content",
            sign(&catalog("devvm", serial, evil.clone())),
            "different content",
        ),
        ("expired", sign(&expired), "expired"),
        (
            "other node",
            sign(&catalog("ws-01", serial + 1000, evil.clone())),
            "another node",
        ),
        ("unknown format", sign(&unknown_format), "unknown format"),
        ("oversize", oversize, "larger than"),
    ];
    for (name, bytes, expected) in cases {
        let (out, report) = sb.run(&bytes, &[]);
        assert_eq!(out.status.code(), Some(1), "{name}: {}", stderr(&out));
        let report = report.unwrap_or_else(|| panic!("{name}: no report"));
        assert_eq!(report.status, RunStatus::Error, "{name}");
        assert!(report.events.is_empty(), "{name}");
        let message = report.message.unwrap_or_default();
        assert!(message.contains(expected), "{name}: {message}");
        assert!(!sb.root.join("srv/evil").exists(), "{name}: applied");
        assert_eq!(sb.accepted_serial(), Some(serial), "{name}: serial moved");
    }
}

#[test]
fn a_second_run_waits_for_the_lock_then_gives_up_with_exit_1() {
    let sb = Sandbox::new();
    let state = steward_agent::state::StateDir::open(&sb.state).unwrap();
    let _held = state.lock(std::time::Duration::ZERO).unwrap();
    std::fs::write(sb.work.join("agent.toml"), "lock_wait_secs = 1\n").unwrap();
    let bytes = sign(&catalog("devvm", serial_now(), vec![]));
    let file = sb.work.join("catalog.json");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new(support::agent_binary())
        .arg("--config")
        .arg(sb.work.join("agent.toml"))
        .arg("--state-dir")
        .arg(&sb.state)
        .args([
            "run",
            "--catalog",
            file.to_str().unwrap(),
            "--trust",
            &trust(),
        ])
        .args(["--node", "devvm", "--root"])
        .arg(&sb.root)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("another run holds"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn f10_k4_modes_are_exact_under_umask_000_and_the_state_is_private() {
    let sb = Sandbox::new();
    let bytes = sign(&catalog(
        "devvm",
        serial_now(),
        vec![marker_dir("/srv/app")],
    ));
    let file = sb.work.join("catalog.json");
    std::fs::write(&file, bytes).unwrap();
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "umask 000; exec {} --config {} --state-dir {} run --catalog {} --trust {} --node devvm --root {}",
            support::agent_binary().display(),
            sb.work.join("agent.toml").display(),
            sb.state.display(),
            file.display(),
            trust(),
            sb.root.display()
        ))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let mode = |p: &std::path::Path| {
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(p).unwrap().permissions())
            & 0o7777
    };
    assert_eq!(mode(&sb.root.join("srv/app")), 0o750);
    // K4: the state directory and everything in it are root-only.
    for dir in ["", "keys", "spool"] {
        assert_eq!(mode(&sb.state.join(dir)), 0o700, "{dir}");
    }
    for f in [
        "accepted.json",
        "last_run_summary.json",
        "keys/signing.key",
        "keys/encryption.key",
        "run.lock",
    ] {
        assert_eq!(mode(&sb.state.join(f)), 0o600, "{f}");
    }
}

#[test]
fn r11_a_lock_held_by_a_killed_process_is_released_by_the_kernel() {
    let sb = Sandbox::new();
    std::fs::create_dir_all(&sb.state).unwrap();
    // A process holding the run lock (as a crashed run would), killed with SIGKILL.
    // `--no-fork`: flock execs `sleep` itself, so the killed process is the lock holder.
    let mut holder = Command::new("flock")
        .arg("--no-fork")
        .arg(sb.state.join("run.lock"))
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    let state = steward_agent::state::StateDir::open(&sb.state).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while state.lock(std::time::Duration::ZERO).is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "flock never took the lock"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    holder.kill().unwrap();
    holder.wait().unwrap();
    let bytes = sign(&catalog("devvm", serial_now(), vec![]));
    let (out, report) = sb.run(&bytes, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report.unwrap().status, RunStatus::Unchanged);
}

#[test]
fn r12_a_run_past_its_time_limit_starts_nothing_more_and_says_why() {
    let sb = Sandbox::new();
    std::fs::write(sb.work.join("agent.toml"), "run_timeout_secs = 0\n").unwrap();
    let bytes = sign(&catalog(
        "devvm",
        serial_now(),
        vec![marker_dir("/srv/a"), marker_dir("/srv/b")],
    ));
    let (out, report) = sb.run(&bytes, &[]);
    let report = report.unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(report.totals.skipped, 2);
    for e in &report.events {
        assert_eq!(
            e.message.as_deref(),
            Some("the run exceeded its time limit"),
            "{e:?}"
        );
    }
    assert!(!sb.root.join("srv/a").exists());
}

#[test]
fn sigterm_lets_the_current_resource_finish_and_skips_the_rest() {
    // A Debian root, so the exec resource has a real `sleep` to run (through chroot).
    let root = support::Root::fresh();
    let sb = Sandbox::new();
    let exec = Resource::new(ResourceSpec::Exec(steward_protocol::ExecSpec {
        name: "slow".into(),
        command: vec![
            "/bin/sh".into(),
            "-c".into(),
            "touch /tmp/started && sleep 2".into(),
        ],
        user: None,
        cwd: None,
        creates: None,
        unless: None,
        timeout_secs: 60,
        env: Default::default(),
    }));
    let after = marker_dir("/srv/after").requiring(exec.id.clone());
    let bytes = sign(&catalog("devvm", serial_now(), vec![exec, after]));
    let file = sb.work.join("catalog.json");
    std::fs::write(&file, bytes).unwrap();
    let child = Command::new(support::agent_binary())
        .arg("--config")
        .arg(sb.work.join("agent.toml"))
        .arg("--state-dir")
        .arg(&sb.state)
        .args(["run", "--json", "--catalog", file.to_str().unwrap()])
        .args(["--trust", &trust(), "--node", "devvm", "--root"])
        .arg(root.dir())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // SIGTERM once the exec is running (its first act is to touch a file).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !root.path("/tmp/started").exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the exec never started"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report: RunReport = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("no report: {}", stderr(&out)));
    let status = |id: &str| event(&report, id);
    assert_eq!(
        status("exec:slow").status,
        steward_protocol::ResourceStatus::Changed,
        "the resource in progress finished"
    );
    let skipped = status("directory:/srv/after");
    assert_eq!(skipped.status, steward_protocol::ResourceStatus::Skipped);
    assert_eq!(skipped.message.as_deref(), Some("the agent is stopping"));
    assert!(!root.path("/srv/after").exists());
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

#[test]
fn template_seal_removes_identity_keys_cache_spool_and_the_machine_id() {
    let sb = Sandbox::new();
    let bytes = sign(&catalog("devvm", serial_now(), vec![]));
    let (out, _) = sb.run(&bytes, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    std::fs::create_dir_all(sb.root.join("etc")).unwrap();
    std::fs::write(
        sb.root.join("etc/machine-id"),
        "0123456789abcdef0123456789abcdef\n",
    )
    .unwrap();
    let keys_before = sb.agent(&["keys"]);
    assert!(sb.state.join("keys/signing.key").exists());
    assert!(std::fs::read_dir(sb.state.join("spool"))
        .unwrap()
        .next()
        .is_some());

    let out = sb.agent(&["template-seal", "--root", sb.root.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    for gone in [
        "keys/signing.key",
        "keys/encryption.key",
        "accepted.json",
        "last_run_summary.json",
    ] {
        assert!(
            !sb.state.join(gone).exists(),
            "{gone} survived template-seal"
        );
    }
    assert!(std::fs::read_dir(sb.state.join("spool"))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(std::fs::read(sb.root.join("etc/machine-id")).unwrap(), b"");
    // A clone makes a new identity.
    let keys_after = sb.agent(&["keys"]);
    assert_ne!(keys_before.stdout, keys_after.stdout);
}
