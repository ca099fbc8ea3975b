//! The shipped cloud-init user-data (`deploy/cloud-init/user-data.yaml`) under **real
//! cloud-init** (Debian 12's `cloud-init` package, NoCloud datasource) in a disposable root
//! booted with systemd as PID 1, sharing this machine's loopback (as tests/devvm.rs): the file,
//! with only its `REPLACE-...` values filled in and the CA lines uncommented, sets the host
//! name, writes `/etc/steward/agent.toml` (0600 root) and the server's CA, installs the agent
//! package from a path inside the image after checking its SHA-256 (the root does not have
//! the agent beforehand), and starts `steward-agent.service`, which enrolls with an
//! auto-approving token and reports its first run to the real server.
//!
//! The pristine root comes from `harness/make-root.sh` with `DEVVM_EXTRA="cloud-init"` (its own
//! cache entry; other tests keep theirs). Needs root, the harness's Debian packages and
//! `cargo-deb`; a missing one fails the test. Everything is removed on drop.

use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use steward_tests::{
    build_agent_deb, example_site_copy, harness, must, random_hex, RootDir, ServerProcess, FIXTURES,
};

/// The clone's host name: matches the token's `devvm*` glob and the site's `devvm-*` class.
const HOST: &str = "devvm-cloud";
/// Where the package sits inside the image (`STEWARD_AGENT_DEB`).
const DEB_IN_IMAGE: &str = "/opt/steward/steward-agent.deb";

/// The pristine root with cloud-init (`DEVVM_EXTRA` is part of the harness's cache key).
fn pristine_with_cloud_init() -> PathBuf {
    let out = must(
        "harness/make-root.sh with DEVVM_EXTRA=cloud-init",
        Command::new("bash")
            .arg(harness("make-root.sh"))
            .env("DEVVM_EXTRA", "cloud-init")
            .process_group(0),
    );
    PathBuf::from(
        out.lines()
            .last()
            .expect("make-root.sh prints the root")
            .trim(),
    )
}

/// The file's commented-out `write_files` entry for the server's CA ...
const CA_ENTRY_COMMENTED: &str = concat!(
    "  # - path: /etc/steward/server-ca.pem\n",
    "  #   owner: root:root\n",
    "  #   permissions: \"0644\"\n",
    "  #   content: |\n",
    "  #     -----BEGIN CERTIFICATE-----\n",
    "  #     REPLACE\n",
    "  #     -----END CERTIFICATE-----\n",
);
/// ... uncommented; the PEM follows, indented under `content: |`.
const CA_ENTRY: &str = concat!(
    "  - path: /etc/steward/server-ca.pem\n",
    "    owner: root:root\n",
    "    permissions: \"0644\"\n",
    "    content: |\n",
);

/// `deploy/cloud-init/user-data.yaml` with its `REPLACE-...` values filled in and the CA lines
/// uncommented; nothing else changes.
fn user_data(join: &str, deb: &str, sha256: &str, ca_pem: &str) -> String {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/cloud-init/user-data.yaml");
    let mut text = std::fs::read_to_string(&file).unwrap();
    let ca_content: String = ca_pem.lines().map(|l| format!("      {l}\n")).collect();
    let replacements = [
        ("hostname: REPLACE-devvm\n", format!("hostname: {HOST}\n")),
        ("steward:v1:REPLACE-WITH-THE-JOIN-STRING", join.to_string()),
        ("# ca_file = ", "ca_file = ".to_string()),
        (CA_ENTRY_COMMENTED, format!("{CA_ENTRY}{ca_content}")),
        (
            "REPLACE-https://packages.example/steward-agent_0.1.0-1_amd64.deb",
            deb.to_string(),
        ),
        ("REPLACE-64-hex-digits", sha256.to_string()),
    ];
    for (from, to) in replacements {
        assert!(text.contains(from), "user-data.yaml no longer has {from:?}");
        text = text.replacen(from, &to, 1);
    }
    let left: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("REPLACE") && !l.trim_start().starts_with('#'))
        .collect();
    assert!(left.is_empty(), "REPLACE-... values left: {left:?}");
    text
}

/// What to look at when something did not happen.
fn diagnostics(root: &RootDir, server: &ServerProcess) -> String {
    let run = |args: &[&str]| {
        let out = root.exec(args);
        format!(
            "$ {}\n{}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    };
    let read = |path: &str| std::fs::read_to_string(root.path(path)).unwrap_or_default();
    let log = read("/var/log/cloud-init.log");
    let problems: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARNING") || l.contains("ERROR") || l.contains("FAIL"))
        .collect();
    let server_log = server.log_text();
    let server_tail: Vec<&str> = server_log.lines().rev().take(40).collect();
    [
        run(&["cloud-init", "status", "--long"]),
        run(&[
            "systemctl",
            "status",
            "--no-pager",
            "cloud-init.target",
            "cloud-final.service",
        ]),
        run(&["systemctl", "status", "--no-pager", "steward-agent.service"]),
        run(&[
            "journalctl",
            "-u",
            "steward-agent",
            "--no-pager",
            "-n",
            "80",
        ]),
        format!(
            "--- /var/log/cloud-init-output.log\n{}",
            read("/var/log/cloud-init-output.log")
        ),
        format!("--- cloud-init.log warnings\n{}", problems.join("\n")),
        format!(
            "--- server log (tail)\n{}",
            server_tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        ),
    ]
    .join("\n")
}

#[test]
fn the_shipped_user_data_under_real_cloud_init_installs_enrolls_and_reports() {
    let started = Instant::now();
    let step = |what: &str| eprintln!("[{:>6.1}s] {what}", started.elapsed().as_secs_f64());
    let t = tempfile::tempdir().unwrap();
    let site = example_site_copy(t.path());
    let vault = t.path().join("vault-data.yaml");
    std::fs::copy(site.join("vault-data.yaml"), &vault).unwrap();
    let server = ServerProcess::start(t.path(), &site, &vault);
    let join = server.join_string(&[
        "--reenroll",
        "--auto-approve",
        "--class",
        "workstation",
        "--hostname",
        "devvm*",
        "--uses",
        "2",
        "--ttl",
        "1h",
    ]);
    let ca_pem = std::fs::read_to_string(server.data_dir.join("tls.crt")).unwrap();
    step("server up");

    let deb = build_agent_deb(&t.path().join("debs"));
    let deb_bytes = std::fs::read(&deb).unwrap();
    let sha256 = hex::encode(Sha256::digest(&deb_bytes));
    step("agent package built");

    let pristine = pristine_with_cloud_init();
    step("pristine root with cloud-init ready");
    let root = RootDir::fresh(&t.path().join("root"), &[], Some(&pristine));
    assert!(
        !root.path("/usr/bin/steward-agent").exists(),
        "the root must not have the agent beforehand"
    );
    root.write(DEB_IN_IMAGE, &deb_bytes, 0o644);
    // The site's git repositories, so the first run has what it clones.
    root.chroot_ok(&["sh", "-c", FIXTURES]);
    // The NoCloud seed: the shipped user-data, filled in.
    root.write(
        "/var/lib/cloud/seed/nocloud/user-data",
        user_data(&join, DEB_IN_IMAGE, &sha256, &ca_pem).as_bytes(),
        0o600,
    );
    root.write(
        "/var/lib/cloud/seed/nocloud/meta-data",
        format!(
            "instance-id: iid-steward-{}\nlocal-hostname: {HOST}\n",
            random_hex(4)
        )
        .as_bytes(),
        0o644,
    );
    // The root shares this machine's network namespace: cloud-init must not configure the
    // network. The minimal root has no `locales` package (a cloud image has), so cloud-init's
    // default locale (en_US.UTF-8) cannot be set there; C.UTF-8 needs none.
    root.write(
        "/etc/cloud/cloud.cfg.d/99-steward-test.cfg",
        b"network: {config: disabled}\ndatasource_list: [ NoCloud, None ]\nlocale: C.UTF-8\n",
        0o644,
    );
    // Booted under another name: cloud-init sets the real one.
    root.boot("template", "");
    step("root booted");

    let wait = root.exec(&["timeout", "180", "cloud-init", "status", "--wait", "--long"]);
    let status = String::from_utf8_lossy(&wait.stdout).into_owned();
    step("cloud-init finished");
    assert!(
        status.contains("status: done"),
        "cloud-init did not finish cleanly:\n{status}\n{}",
        diagnostics(&root, &server)
    );
    // The filled-in file is valid cloud-config (cloud-init only warns about schema errors).
    let schema = root.exec(&["cloud-init", "schema", "--system", "--annotate"]);
    assert!(
        schema.status.success(),
        "the user-data is not valid cloud-config:\n{}{}",
        String::from_utf8_lossy(&schema.stdout),
        String::from_utf8_lossy(&schema.stderr)
    );
    let log = std::fs::read_to_string(root.path("/var/log/cloud-init.log")).unwrap_or_default();
    assert!(
        !log.contains("Invalid cloud-config"),
        "the merged configuration has schema errors:\n{}",
        diagnostics(&root, &server)
    );
    // cloud-init ran in its four stages (the generator enabled it in the container).
    for unit in [
        "cloud-init-local.service",
        "cloud-init.service",
        "cloud-config.service",
        "cloud-final.service",
    ] {
        let out = root.exec(&[
            "systemctl",
            "show",
            "-p",
            "ActiveState",
            "-p",
            "Result",
            unit,
        ]);
        let mut state: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        state.sort();
        assert_eq!(
            state,
            ["ActiveState=active", "Result=success"],
            "{unit}:\n{}",
            diagnostics(&root, &server)
        );
    }
    let failed = root.exec(&[
        "systemctl",
        "list-units",
        "--failed",
        "--plain",
        "--no-legend",
    ]);
    step(&format!(
        "failed units in the root: [{}]",
        String::from_utf8_lossy(&failed.stdout).trim()
    ));

    // The host name.
    let hostname = String::from_utf8_lossy(&root.exec(&["hostname"]).stdout)
        .trim()
        .to_string();
    assert_eq!(hostname, HOST, "{}", diagnostics(&root, &server));
    assert_eq!(
        std::fs::read_to_string(root.path("/etc/hostname"))
            .unwrap()
            .trim(),
        HOST
    );

    // agent.toml: 0600 root, the join string, the CA.
    let config_path = root.path("/etc/steward/agent.toml");
    let meta = std::fs::metadata(&config_path).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600, "agent.toml mode");
    assert_eq!((meta.uid(), meta.gid()), (0, 0), "agent.toml owner");
    let config = std::fs::read_to_string(&config_path).unwrap();
    assert!(config.contains(&format!("join = \"{join}\"")), "{config}");
    assert!(
        config.contains("\nca_file = \"/etc/steward/server-ca.pem\""),
        "{config}"
    );
    assert_eq!(
        std::fs::read_to_string(root.path("/etc/steward/server-ca.pem")).unwrap(),
        ca_pem
    );

    // The package: installed by the runcmd after the SHA-256 check, the copy removed.
    let output =
        std::fs::read_to_string(root.path("/var/log/cloud-init-output.log")).unwrap_or_default();
    assert!(
        output.contains("/root/steward-agent.deb: OK"),
        "sha256sum --check ran:\n{}",
        diagnostics(&root, &server)
    );
    let dpkg = root.exec(&["dpkg-query", "-W", "-f=${Status}", "steward-agent"]);
    assert_eq!(
        String::from_utf8_lossy(&dpkg.stdout),
        "install ok installed",
        "{}",
        diagnostics(&root, &server)
    );
    assert!(!root.path("/root/steward-agent.deb").exists());

    // The unit, enabled and active.
    for (verb, want) in [("is-enabled", "enabled"), ("is-active", "active")] {
        let out = root.exec(&["systemctl", verb, "steward-agent.service"]);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            want,
            "steward-agent.service {verb}:\n{}",
            diagnostics(&root, &server)
        );
    }

    // The host enrolls by itself and its first run report reaches the server.
    let path = format!("/api/v1/runs?node={HOST}");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let runs = server.try_admin_get(&path).ok();
        if runs.is_some_and(|r| r["runs"].as_array().is_some_and(|a| !a.is_empty())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no run of {HOST} reached the server within 240 s:\n{}",
            diagnostics(&root, &server)
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let runs = server.admin_get(&path);
    let run = &runs["runs"][0];
    step(&format!(
        "first run reported: {} {}",
        run["status"], run["totals"]
    ));
    assert_eq!(run["node"], HOST, "{runs:#}");
    let node = server.admin_get(&format!("/api/v1/nodes/{HOST}"));
    assert_eq!(node["node"]["status"], "approved", "{node:#}");
    assert_eq!(node["node"]["class"], "workstation", "{node:#}");
    let identity: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.path("/var/lib/steward/identity.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(identity["node"], HOST, "{identity}");
    assert_eq!(identity["approved"], true, "{identity}");
}
