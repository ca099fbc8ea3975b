//! The example site (the seeds' devvm) converges a booted Debian root end to end: the real
//! server on the example site, the agent inside a root booted with systemd as PID 1 (sharing
//! this machine's loopback), enrollment with a join string, two runs.
//!
//! The test copy of the site ([`example_site_copy`]) changes only what cannot work offline
//! here; [`FIXTURES`] makes the git repositories it points to and a stand-in `t3` binary.

#[path = "../agent/tests/support/mod.rs"]
mod support;

use std::path::Path;

use steward_tests::{example_site_copy, ServerProcess, FIXTURES};
use support::Root;

fn patched_site(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let site = example_site_copy(dir);
    let vault = dir.join("vault-data.yaml");
    std::fs::copy(site.join("vault-data.yaml"), &vault).unwrap();
    (site, vault)
}

#[test]
fn the_example_site_converges_a_booted_devvm_and_a_second_run_changes_nothing() {
    let t = tempfile::tempdir().unwrap();
    let (site, vault) = patched_site(t.path());
    let server = ServerProcess::start(t.path(), &site, &vault);
    let join = server.join_string(&[
        "--auto-approve",
        "--class",
        "workstation",
        "--hostname",
        "devvm",
    ]);

    let root = Root::booted();
    root.install_agent();
    root.run_ok(&["sh", "-c", FIXTURES]);
    // The agent's config inside the root: the server's CA, its join string.
    let ca = std::fs::read(server.data_dir.join("tls.crt")).unwrap();
    root.write("/etc/steward/server-ca.pem", &ca);
    root.write(
        "/etc/steward/agent.toml",
        format!(
            "join = {join:?}\nca_file = \"/etc/steward/server-ca.pem\"\nsplay_limit_secs = 0\n"
        )
        .as_bytes(),
    );

    let agent = |args: &[&str]| {
        let mut full = vec!["/usr/local/bin/steward-agent"];
        full.extend_from_slice(args);
        root.run(&full)
    };
    let out = agent(&["enroll"]);
    assert!(
        out.status.success(),
        "enroll: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let first = agent(&["run", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&first.stdout)
        .unwrap_or_else(|_| panic!("no report: {}", String::from_utf8_lossy(&first.stderr)));
    let failures: Vec<&serde_json::Value> = report["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] == "failed")
        .collect();
    assert!(failures.is_empty(), "failed resources: {failures:#?}");
    assert_eq!(first.status.code(), Some(2), "{report}");

    // The seeds' acceptance checks.
    for user in ["emo", "ancamilea"] {
        let shadow = root.run_ok(&["getent", "shadow", user]);
        assert!(
            shadow.split(':').nth(1).unwrap().starts_with('!'),
            "{user} locked: {shadow}"
        );
        let stat = root.run_ok(&["stat", "-c", "%a %U", &format!("/home/{user}")]);
        assert_eq!(stat.trim(), format!("700 {user}"));
        let groups = root.run_ok(&["id", "-nG", user]);
        for privileged in ["sudo", "docker", "adm"] {
            assert!(
                !groups.split_whitespace().any(|g| g == privileged),
                "{user}: {groups}"
            );
        }
        for link in ["skills", "rules", "agents", "commands"] {
            let target = root.run_ok(&["readlink", &format!("/home/{user}/.claude/{link}")]);
            assert_eq!(target.trim(), format!("/srv/config-base/claude/{link}"));
        }
        let kube = root.run_ok(&["stat", "-c", "%a %U", &format!("/home/{user}/.kube/config")]);
        assert_eq!(kube.trim(), format!("600 {user}"));
        let claude_json =
            root.run_ok(&["stat", "-c", "%a %U", &format!("/home/{user}/.claude.json")]);
        assert_eq!(claude_json.trim(), format!("600 {user}"));
        let content =
            std::fs::read_to_string(root.path(&format!("/home/{user}/.claude.json"))).unwrap();
        assert!(
            content.contains("PLACEHOLDER-memory-api-key-3f8d27"),
            "Vault value in ~/.claude.json"
        );
    }
    // emo's single layout: ~/code is the infra clone with the forgejo remote; the encrypted
    // file stays ciphertext (git-crypt filters are `cat` in the locked clone).
    let remote = root.run_ok(&[
        "git",
        "-c",
        "safe.directory=*",
        "-C",
        "/home/emo/code",
        "config",
        "remote.forgejo.url",
    ]);
    assert_eq!(
        remote.trim(),
        "https://forgejo.homelab.example/viktor/infra.git"
    );
    let enc = std::fs::read(root.path("/home/emo/code/secret.enc")).unwrap();
    assert!(enc.starts_with(b"\0GITCRYPT\0"));
    assert!(root.path("/home/ancamilea/code/infra/README.md").exists());
    assert!(root.path("/home/ancamilea/code/tripit/README.md").exists());
    let enabled = root.run_ok(&["systemctl", "is-enabled", "t3-serve@emo.service"]);
    assert_eq!(enabled.trim(), "enabled");
    let active = root.run_ok(&["systemctl", "is-active", "t3-serve@emo.service"]);
    assert_eq!(active.trim(), "active");
    let map = std::fs::read_to_string(root.path("/etc/ttyd-user-map")).unwrap();
    assert!(
        map.contains("emil.barzin") && map.contains("ancaelena98"),
        "{map}"
    );
    let dispatch = std::fs::read_to_string(root.path("/etc/t3-serve/dispatch.json")).unwrap();
    assert!(
        dispatch.contains("3774") || dispatch.contains("3775"),
        "{dispatch}"
    );

    // The run is in the server's database.
    let runs = server.admin_get("/api/v1/runs?node=devvm");
    assert!(runs
        .to_string()
        .contains(report["run_id"].as_str().unwrap()));

    // Second run: nothing to change.
    let second = agent(&["run", "--json"]);
    let report2: serde_json::Value = serde_json::from_slice(&second.stdout).unwrap();
    let changed: Vec<&serde_json::Value> = report2["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["status"] != "unchanged" && e["status"] != "skipped")
        .collect();
    assert!(changed.is_empty(), "second run changed: {changed:#?}");
    assert_eq!(second.status.code(), Some(0), "{report2}");
}
