//! Agent convergence benchmark (issue 4), in booted Debian roots from `harness/`.
//!
//! Reference workload: N users (N = 5 and 50), each an account in 2 supplementary groups with
//! 3 directories, 3 files (one a 2 KB JSON at 0600) and 2 symlinks; plus 13 host-wide resources.
//! Printed, for each N:
//! - the first run of `steward-agent run --catalog` inside a booted root, next to a plain
//!   shell script doing the same `groupadd`/`useradd`/`install`/`ln` in a second fresh booted
//!   root (ratio; target ≤ 1.5×);
//! - the converged run (no changes): median wall of 10 runs (target ≤ 25 ms for N = 50) next to
//!   a trivial process started the same way, and the agent's peak RSS (VmHWM; target ≤ 15 MB).
//!
//! Wall times are measured inside the root (`date +%s%N` around the command), so the
//! harness's `nsenter` cost is not counted. Run: `cargo bench -p steward-agent --bench converge`.

#[path = "../tests/support/mod.rs"]
mod support;

use steward_protocol::{
    DirectorySpec, FileContent, FileSpec, GroupSpec, Mode, Replace, Resource, ResourceSpec,
    SymlinkReplace, SymlinkSpec, UserEnsure, UserSpec,
};
use support::Root;

const GROUPS: [&str; 2] = ["bench-a", "bench-b"];

fn dir(path: &str, owner: &str, mode: u32) -> Resource {
    Resource::new(ResourceSpec::Directory(DirectorySpec {
        path: path.into(),
        owner: owner.into(),
        group: owner.into(),
        mode: Mode(mode),
        replace: Default::default(),
    }))
}

fn file(path: &str, owner: &str, mode: u32, content: String) -> Resource {
    Resource::new(ResourceSpec::File(FileSpec {
        path: path.into(),
        owner: owner.into(),
        group: owner.into(),
        mode: Mode(mode),
        content: FileContent::Text(content),
        replace: Replace::Always,
        backup: false,
    }))
}

fn link(path: &str, target: &str, owner: &str) -> Resource {
    Resource::new(ResourceSpec::Symlink(SymlinkSpec {
        path: path.into(),
        target: target.into(),
        owner: owner.into(),
        group: owner.into(),
        replace: SymlinkReplace::IfAbsent,
    }))
}

fn json_2k(user: &str) -> String {
    let mut s = format!("{{\"user\":\"{user}\",\"servers\":{{");
    let mut i = 0;
    while s.len() < 2000 {
        s.push_str(&format!(
            "\"s{i}\":{{\"url\":\"https://example.invalid/{user}/{i}\"}},"
        ));
        i += 1;
    }
    s.pop();
    s.push_str("}}\n");
    s
}

/// The catalog's resources and the equivalent shell script.
fn workload(n: usize) -> (Vec<Resource>, String) {
    let mut r = Vec::new();
    let mut sh = String::from("set -e\n");
    // 13 host-wide resources: 2 groups, 3 directories, 6 files, 2 symlinks.
    for g in GROUPS {
        r.push(Resource::new(ResourceSpec::Group(GroupSpec {
            name: g.into(),
            gid: None,
            system: false,
        })));
        sh.push_str(&format!("groupadd {g}\n"));
    }
    for d in ["/srv/bench", "/srv/bench/conf", "/srv/bench/bin"] {
        r.push(dir(d, "root", 0o755));
        sh.push_str(&format!("install -d -m 0755 -o root -g root {d}\n"));
    }
    for i in 0..6 {
        let p = format!("/srv/bench/conf/host-{i}.conf");
        let content = format!("setting_{i} = {i}\n");
        r.push(file(&p, "root", 0o644, content.clone()));
        sh.push_str(&format!(
            "printf '%s' '{content}' > {p}.tmp && chmod 0644 {p}.tmp && mv {p}.tmp {p}\n"
        ));
    }
    for (p, t) in [
        ("/srv/bench/bin/tool", "/usr/bin/env"),
        ("/srv/bench/current", "/srv/bench/conf"),
    ] {
        r.push(link(p, t, "root"));
        sh.push_str(&format!("ln -s {t} {p}\n"));
    }
    for i in 0..n {
        let u = format!("bench{i:02}");
        let home = format!("/home/{u}");
        r.push(Resource::new(ResourceSpec::User(UserSpec {
            name: u.clone(),
            uid: None,
            shell: "/bin/bash".into(),
            home: home.clone(),
            home_mode: Mode(0o700),
            groups: GROUPS.iter().map(|g| g.to_string()).collect(),
            comment: None,
            lock_at_creation: true,
            ensure: UserEnsure::Present,
            privileged_groups: Vec::new(),
            revoke_groups: Vec::new(),
            enforce: Vec::new(),
            tier: None,
        })));
        sh.push_str(&format!(
            "useradd -m -s /bin/bash -G {} {u} && chmod 0700 {home} && passwd -l {u} >/dev/null\n",
            GROUPS.join(",")
        ));
        for d in ["code", ".config", ".config/app"] {
            r.push(dir(&format!("{home}/{d}"), &u, 0o755));
            sh.push_str(&format!("install -d -m 0755 -o {u} -g {u} {home}/{d}\n"));
        }
        let files = [
            (
                format!("{home}/.profile-extra"),
                0o644,
                "export EDITOR=vim\n".to_string(),
            ),
            (
                format!("{home}/.config/app/settings"),
                0o644,
                format!("user={u}\n"),
            ),
            (format!("{home}/.claude.json"), 0o600, json_2k(&u)),
        ];
        for (p, mode, content) in files {
            r.push(file(&p, &u, mode, content.clone()));
            sh.push_str(&format!(
                "cat > {p}.tmp <<'STEWARD_EOF'\n{content}STEWARD_EOF\nchown {u}:{u} {p}.tmp && chmod {mode:o} {p}.tmp && mv {p}.tmp {p}\n"
            ));
        }
        for (p, t) in [
            (
                format!("{home}/.config/app/current"),
                format!("{home}/code"),
            ),
            (format!("{home}/bin"), "/srv/bench/bin".to_string()),
        ] {
            r.push(link(&p, &t, &u));
            sh.push_str(&format!("ln -s {t} {p} && chown -h {u}:{u} {p}\n"));
        }
    }
    (r, sh)
}

/// Wall time in ms of `cmd` inside the root, measured in the root.
fn timed(root: &Root, cmd: &str) -> f64 {
    let out = root.run_ok(&[
        "sh",
        "-c",
        &format!("s=$(date +%s%N); {{ {cmd}; }} >/dev/null 2>/tmp/bench.err || code=$?; e=$(date +%s%N); case ${{code:-0}} in 0|2) ;; *) cat /tmp/bench.err >&2; exit 1;; esac; echo $(( (e - s) / 1000 ))"),
    ]);
    out.trim().parse::<f64>().expect("microseconds") / 1000.0
}

/// Time per resource type in the run report at `/root/first.json`.
fn by_kind(root: &Root) -> String {
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.path("/root/first.json")).unwrap())
            .expect("run report");
    let mut kinds: std::collections::BTreeMap<String, (u64, u64)> = Default::default();
    for e in report["events"].as_array().unwrap() {
        let kind = e["resource"].as_str().unwrap().split(':').next().unwrap();
        let slot = kinds.entry(kind.to_string()).or_default();
        slot.0 += 1;
        slot.1 += e["duration_ms"].as_u64().unwrap();
    }
    let parts: Vec<String> = kinds
        .iter()
        .map(|(k, (n, ms))| format!("{k} {n}x {ms} ms"))
        .collect();
    format!(
        "{} (run total {} ms)",
        parts.join(", "),
        report["duration_ms"]
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    for n in [5, 50] {
        let (resources, script) = workload(n);
        let count = resources.len();
        let envelope = support::sign(&support::catalog(
            "devvm",
            support::now() as u64 * 1000,
            resources,
        ));
        let trust = support::trust();
        let run = format!(
            "STEWARD_AGENT_PEAK_RSS=1 /usr/local/bin/steward-agent --config /etc/steward/bench.toml run --catalog /root/catalog.json --trust {trust} --node devvm"
        );

        let agent_root = Root::booted();
        agent_root.install_agent();
        agent_root.write("/root/catalog.json", &envelope);
        agent_root.write("/etc/steward/bench.toml", b"# defaults\n");
        let first = timed(&agent_root, &format!("{run} --json > /root/first.json"));
        let first_kinds = by_kind(&agent_root);
        let converged: Vec<f64> = (0..10).map(|_| timed(&agent_root, &run)).collect();
        timed(&agent_root, &format!("{run} --json > /root/first.json"));
        let converged_kinds = by_kind(&agent_root);
        let trivial: Vec<f64> = (0..10)
            .map(|_| timed(&agent_root, "/usr/local/bin/steward-agent --version"))
            .collect();
        let rss = agent_root.run_ok(&[
            "sh",
            "-c",
            &format!("{run} 2>&1 >/dev/null | sed -n 's/^peak_rss_kb=//p'"),
        ]);
        let check = agent_root.run(&["sh", "-c", &run]);
        assert_eq!(
            check.status.code(),
            Some(0),
            "converged run must change nothing: {}",
            String::from_utf8_lossy(&check.stdout)
        );
        drop(agent_root);

        let shell_root = Root::booted();
        shell_root.write("/root/baseline.sh", script.as_bytes());
        let shell = timed(&shell_root, "sh /root/baseline.sh");
        drop(shell_root);

        let converged_ms = median(converged);
        let trivial_ms = median(trivial);
        let rss_kb: f64 = rss.trim().parse().unwrap_or(f64::NAN);
        println!("N={n} ({count} resources)");
        println!(
            "  first run:     agent {first:8.1} ms | shell script {shell:8.1} ms | ratio {:.2}x (target <= 1.5x)",
            first / shell
        );
        println!("  first run by type:     {first_kinds}");
        println!("  converged run by type: {converged_kinds}");
        println!(
            "  converged run: agent {converged_ms:8.1} ms (median of 10; target <= 25 ms for N=50) | `steward-agent --version` {trivial_ms:6.1} ms | ratio {:.1}x",
            converged_ms / trivial_ms
        );
        println!(
            "  peak RSS:      {:.1} MB (VmHWM of the converged run; target <= 15 MB)",
            rss_kb / 1024.0
        );
    }
}
