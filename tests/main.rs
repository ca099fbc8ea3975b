//! End-to-end tests: the real `steward-server` and `steward-agent` binaries talking over TLS on
//! loopback, with a real SQLite database and a sandbox root for the agent.

use std::path::Path;

use steward_tests::{sandbox_root, AgentProcess, LabSite, ServerProcess};

/// The lab site without people ([`LabSite`]), its Vault token a fresh canary.
fn lab_site(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, String) {
    let canary = format!("CANARY-{}", steward_tests::random_hex(12));
    let (site, vault) = LabSite {
        roster: "users: {}\n",
        tiers: "tiers: {}\n",
        k8s_users: "{}",
        more_files: "",
        token: &canary,
    }
    .write(dir);
    (site, vault, canary)
}

fn runs_of(server: &ServerProcess, node: &str) -> Vec<serde_json::Value> {
    let v = server.admin_get(&format!("/api/v1/runs?node={node}"));
    v.get("runs")
        .and_then(|r| r.as_array())
        .or_else(|| v.as_array())
        .cloned()
        .unwrap_or_else(|| panic!("unexpected runs answer: {v}"))
}

fn grep_dir(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    for entry in walk(dir) {
        if let Ok(bytes) = std::fs::read(&entry) {
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(entry.display().to_string());
            }
        }
    }
    hits
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn an_agent_enrolls_converges_reports_and_survives_a_server_outage() {
    let t = tempfile::tempdir().unwrap();
    let (site, vault, canary) = lab_site(t.path());
    let mut server = ServerProcess::start(t.path(), &site, &vault);
    let join = server.join_string(&["--auto-approve", "--class", "lab", "--hostname", "lab-*"]);
    let root = sandbox_root(t.path());
    let agent = AgentProcess::new(t.path(), &join, &server, &root);

    // Enrollment pins the root key and is auto-approved by the token and the site's class.
    let out = agent.cmd(&["enroll", "--root", root.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "enroll: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("enrolled and approved"));

    // First run converges and is reported.
    let (code, report, stderr) = agent.run();
    assert_eq!(code, Some(2), "first run: {stderr}\n{report}");
    assert_eq!(report["status"], "changed");
    assert_eq!(
        std::fs::read_to_string(root.join("srv/lab/motd")).unwrap(),
        "managed by steward for lab-1\n"
    );
    let token = root.join("srv/lab/token");
    assert_eq!(std::fs::read_to_string(&token).unwrap(), canary);
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&token).unwrap().permissions());
    assert_eq!(mode & 0o7777, 0o600);
    let runs = runs_of(&server, "lab-1");
    assert_eq!(runs.len(), 1, "{runs:?}");

    // Second run: nothing to do, still reported.
    let (code, report, stderr) = agent.run();
    assert_eq!(code, Some(0), "second run: {stderr}\n{report}");
    assert_eq!(runs_of(&server, "lab-1").len(), 2);

    // Server down: the cached catalog is re-applied, the report is spooled.
    server.stop();
    std::fs::write(root.join("srv/lab/motd"), "drifted\n").unwrap();
    let (code, report, stderr) = agent.run();
    assert_eq!(code, Some(2), "offline run: {stderr}\n{report}");
    assert!(
        report["message"]
            .as_str()
            .unwrap_or_default()
            .contains("applying the cached catalog"),
        "{report}"
    );
    assert_eq!(
        std::fs::read_to_string(root.join("srv/lab/motd")).unwrap(),
        "managed by steward for lab-1\n",
        "drift repaired from the cache"
    );
    let offline_run = report["run_id"].as_str().unwrap().to_string();
    let status = agent.cmd(&["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("no (spooled)"));

    // Back: the next run delivers the spooled report and its own, each exactly once.
    server.restart();
    let (code, _report, stderr) = agent.run();
    assert_eq!(code, Some(0), "run after the outage: {stderr}");
    let runs = runs_of(&server, "lab-1");
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(
        runs.iter().any(|r| r["run_id"] == offline_run.as_str()),
        "the offline run was delivered: {runs:?}"
    );
    assert!(std::fs::read_dir(agent.state_dir.join("spool"))
        .unwrap()
        .next()
        .is_none());

    // The secret is only in its target file: not in the agent's state (cached envelope,
    // spool, summary) nor in the server's data directory or log.
    assert!(grep_dir(&agent.state_dir, &canary).is_empty());
    assert!(grep_dir(&server.data_dir, &canary).is_empty());
    assert!(!server.log_text().contains(&canary));
}

/// Polls `check` every 100 ms until it holds or `secs` pass; returns whether it held.
fn eventually(secs: u64, mut check: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    check()
}

#[test]
fn a_daemon_runs_at_start_on_run_now_and_on_a_site_change_then_stops_on_sigterm() {
    let t = tempfile::tempdir().unwrap();
    let (site, vault, _canary) = lab_site(t.path());
    let server = ServerProcess::start(t.path(), &site, &vault);
    let join = server.join_string(&["--auto-approve", "--class", "lab", "--hostname", "lab-*"]);
    let root = sandbox_root(t.path());
    let agent = AgentProcess::new(t.path(), &join, &server, &root);

    // A fresh host with only a join string enrolls by itself and runs at start.
    let mut daemon = agent.spawn_daemon(&t.path().join("agent.log"));
    let agent_log = || std::fs::read_to_string(t.path().join("agent.log")).unwrap_or_default();
    assert!(
        eventually(60, || runs_of_quiet(&server, "lab-1") >= 1),
        "no first run: {}",
        agent_log()
    );
    assert!(root.join("srv/lab/motd").exists());

    // An admin's run-now wakes it through the long-poll (interval is an hour).
    server.admin_post("/api/v1/nodes/lab-1/run-now");
    assert!(
        eventually(30, || runs_of_quiet(&server, "lab-1") >= 2),
        "run-now did not reach the daemon: {}",
        agent_log()
    );

    // A site change reaches it within seconds too.
    let site_yaml = std::fs::read_to_string(site.join("site.yaml")).unwrap();
    std::fs::write(
        site.join("site.yaml"),
        site_yaml.replace(
            "    - file:\n        path: /srv/lab/motd",
            "    - file: { path: /srv/lab/added, content: \"new\\n\" }\n    - file:\n        path: /srv/lab/motd",
        ),
    )
    .unwrap();
    assert!(
        eventually(30, || root.join("srv/lab/added").exists()),
        "the site change did not reach the daemon: {}",
        agent_log()
    );

    // SIGTERM: it stops promptly and cleanly.
    std::process::Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    let stopped = eventually(10, || daemon.try_wait().unwrap().is_some());
    if !stopped {
        let _ = daemon.kill();
    }
    assert!(
        stopped,
        "the daemon did not stop on SIGTERM: {}",
        agent_log()
    );
    assert!(daemon.wait().unwrap().success());
}

fn runs_of_quiet(server: &ServerProcess, node: &str) -> usize {
    match server.try_admin_get(&format!("/api/v1/runs?node={node}")) {
        Ok(v) => v
            .get("runs")
            .and_then(|r| r.as_array())
            .or_else(|| v.as_array())
            .map_or(0, Vec::len),
        Err(_) => 0,
    }
}

#[test]
fn enrollment_refuses_a_server_whose_root_key_is_not_the_pinned_one() {
    let t = tempfile::tempdir().unwrap();
    let (site, vault, _) = lab_site(t.path());
    let server = ServerProcess::start(t.path(), &site, &vault);
    let join = server.join_string(&["--auto-approve", "--class", "lab", "--hostname", "lab-*"]);
    // Same server and token, another pinned fingerprint (as if the URL led to an impostor).
    let mut parts: Vec<String> = join.split(':').map(str::to_string).collect();
    parts[3] = "ab".repeat(32);
    let forged = parts.join(":");
    let root = sandbox_root(t.path());
    let agent = AgentProcess::new(t.path(), &forged, &server, &root);
    let out = agent.cmd(&["enroll", "--root", root.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("is not the one pinned in the join string"),
        "{stderr}"
    );
    assert!(
        !agent.state_dir.join("identity.json").exists(),
        "nothing trusted"
    );
}

#[test]
fn a_pending_node_waits_with_backoff_and_runs_once_an_admin_approves() {
    let t = tempfile::tempdir().unwrap();
    let (site, vault, _) = lab_site(t.path());
    let server = ServerProcess::start(t.path(), &site, &vault);
    // No --auto-approve: the node must wait for an admin.
    let join = server.join_string(&["--hostname", "lab-*"]);
    let root = sandbox_root(t.path());
    let agent = AgentProcess::new(t.path(), &join, &server, &root);
    let mut daemon = agent.spawn_daemon(&t.path().join("agent.log"));
    let agent_log = || std::fs::read_to_string(t.path().join("agent.log")).unwrap_or_default();
    assert!(
        eventually(30, || agent_log().contains("pending approval")),
        "{}",
        agent_log()
    );
    assert!(
        !root.join("srv/lab").exists(),
        "nothing applied while pending"
    );
    server.admin_post("/api/v1/nodes/lab-1/approve");
    assert!(
        eventually(60, || runs_of_quiet(&server, "lab-1") >= 1),
        "no run after approval: {}",
        agent_log()
    );
    assert!(root.join("srv/lab/motd").exists());
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// The README's root key procedure: a new root key (the old one lost or leaked) is refused by
/// an enrolled host until it enrolls again with a join string that pins the new key; it keeps
/// its own key, its node and its history.
#[test]
fn after_a_root_key_replacement_hosts_re_enroll_with_a_new_join_string() {
    let t = tempfile::tempdir().unwrap();
    let (site, vault, _) = lab_site(t.path());
    let mut server = ServerProcess::start(t.path(), &site, &vault);
    let join = server.join_string(&["--auto-approve", "--class", "lab", "--hostname", "lab-*"]);
    let root = sandbox_root(t.path());
    let agent = AgentProcess::new(t.path(), &join, &server, &root);
    assert!(agent
        .cmd(&["enroll", "--root", root.to_str().unwrap()])
        .status
        .success());
    let (code, _, stderr) = agent.run();
    assert_eq!(code, Some(2), "{stderr}");

    // Stop, move root.key away, start: a new root key is made.
    server.stop();
    std::fs::rename(
        server.data_dir.join("root.key"),
        t.path().join("root.key.old"),
    )
    .unwrap();
    server.restart();
    // The same catalog answers 304: the host keeps applying the one it verified. A new one
    // (a site change) comes signed under the new root, which the host does not trust.
    let (code, _, stderr) = agent.run();
    assert_eq!(code, Some(0), "{stderr}");
    let site_yaml = site.join("site.yaml");
    let text = std::fs::read_to_string(&site_yaml).unwrap();
    std::fs::write(
        &site_yaml,
        text.replace("managed by steward", "managed by Steward"),
    )
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let (code, report, stderr) = agent.run();
    assert_ne!(
        code,
        Some(0),
        "a catalog under the new root is refused: {stderr}"
    );
    assert!(
        format!("{stderr}{report}").contains("not signed by a trusted key"),
        "{code:?} {stderr} {report}"
    );

    let new_join = server.join_string(&["--auto-approve", "--class", "lab", "--hostname", "lab-*"]);
    assert_ne!(new_join, join);
    let out = agent.cmd(&[
        "enroll",
        "--join",
        &new_join,
        "--root",
        root.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "re-enroll: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let (code, report, stderr) = agent.run();
    assert_eq!(code, Some(2), "the new catalog applies: {stderr}\n{report}");
    assert_eq!(
        std::fs::read_to_string(root.join("srv/lab/motd")).unwrap(),
        "managed by Steward for lab-1\n"
    );
    let node = server.admin_get("/api/v1/nodes/lab-1");
    assert_eq!(
        node["keys"].as_array().unwrap().len(),
        1,
        "the same key: {node}"
    );
    assert!(runs_of(&server, "lab-1").len() >= 3, "history kept");
}
