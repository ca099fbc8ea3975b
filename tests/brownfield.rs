//! Adopting a lived-in devvm without breaking anyone (issue 11), end to end: the real server on
//! a copy of the example site, the real agent inside a root booted with systemd, and a root
//! that already held people before Steward came:
//!
//! - `emo`, as on the seeds' devvm: bash login shell, in `code-shared` and `docker`, a password
//!   login of his own, `~/code` a symlink into another user's tree, his own `~/.claude` (0755,
//!   with a file of his), `~/.claude.json` and `~/.kube/config` (0644, his bytes);
//! - `viktor`, not in the roster, with a live session (a process on a terminal) all along.
//!
//! The roster adds `gheorghe` (a single-layout clone that later switches to workspace) and
//! `mira` (an admin who is demoted, then purged with a process still running). One booted
//! root and one server are shared by the steps, in order; each step asserts what the issue
//! promises and names itself in every message. The purge runs last because it ends `mira`.
//!
//! A broken promise does not stop the test: each check that fails is recorded and the steps go
//! on, so that one failure lists every step that does not hold yet (a step whose setup cannot
//! work, a run without a report or a missing event, still stops it at once).
//!
//! Sessions are made as a person's terminal is: `script` gives a `sleep` a pseudo-terminal as
//! its controlling terminal (what `agent/src/sessions.rs` counts as active).

#[path = "../agent/tests/support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;
use steward_tests::{example_site_copy, ServerProcess, FIXTURES};
use support::Root;

/// Records a failed check (see the module documentation) and goes on.
macro_rules! check {
    ($b:expr, $cond:expr, $($msg:tt)+) => {
        $b.check($cond, || format!($($msg)+))
    };
}

/// [`check!`] of equality; the message shows both sides.
macro_rules! check_eq {
    ($b:expr, $left:expr, $right:expr, $($msg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        $b.check(left == right, || {
            format!("{}\n  found: {left:?}\n  want:  {right:?}", format!($($msg)+))
        })
    }};
}

/// [`check!`] of inequality.
macro_rules! check_ne {
    ($b:expr, $left:expr, $right:expr, $($msg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        $b.check(left != right, || format!("{} (both {left:?})", format!($($msg)+)))
    }};
}

/// Bound for conditions polled inside the root (a session starting or ending).
const SETTLE: Duration = Duration::from_secs(30);

/// The lived-in state before enrollment (step 0): viktor's tree (an infra clone of his own),
/// emo as the seeds describe him, the groups the seeds' devvm has.
const LIVED_IN: &str = r##"set -e
groupadd code-shared
groupadd docker
useradd -m -s /bin/bash viktor
git clone -q /srv/fixtures/viktor/infra.git /home/viktor/code
chown -R viktor:viktor /home/viktor/code
chmod 0755 /home/viktor
useradd -m -s /bin/bash -G code-shared,docker emo
usermod -p '$6$brownfield$emo-own-password-hash-placeholder' emo
chmod 0755 /home/emo
ln -s /home/viktor/code /home/emo/code
mkdir -m 0755 /home/emo/.claude
printf "# emo's own notes\n" > /home/emo/.claude/CLAUDE.md
printf '{"theme": "emo-dark", "projects": {}}\n' > /home/emo/.claude.json
chmod 0644 /home/emo/.claude.json
mkdir -m 0755 /home/emo/.kube
printf 'apiVersion: v1\nkind: Config\n# emo: his own kubeconfig\n' > /home/emo/.kube/config
chmod 0644 /home/emo/.kube/config
chown -h emo:emo /home/emo/code
chown -R emo:emo /home/emo/.claude /home/emo/.claude.json /home/emo/.kube
"##;

/// What of emo's account and home must survive every run as found.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EmoAsFound {
    passwd: String,
    shadow: String,
    /// `mode owner:group` of his home and of each path he had.
    modes: Vec<(String, String)>,
    /// Bytes of his own files.
    bytes: Vec<(String, Vec<u8>)>,
    code_link: String,
    /// The listing of viktor's tree that `~/code` points into.
    viktor_tree: String,
}

struct Brownfield {
    _dir: tempfile::TempDir,
    site: PathBuf,
    vault: PathBuf,
    server: ServerProcess,
    root: Root,
    /// Failed checks, in order.
    failures: RefCell<Vec<String>>,
}

/// One agent run: exit code and report.
struct Run {
    code: Option<i32>,
    report: Value,
}

impl Run {
    fn events(&self) -> &Vec<Value> {
        self.report["events"].as_array().expect("report events")
    }

    /// The event of `resource` (e.g. `git_clone:/home/emo/code`).
    fn event(&self, step: &str, resource: &str) -> &Value {
        self.events()
            .iter()
            .find(|e| e["resource"] == resource)
            .unwrap_or_else(|| panic!("{step}: no event for {resource} in the run report"))
    }

    fn status(&self, step: &str, resource: &str) -> String {
        self.event(step, resource)["status"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// Events whose status is not in `allowed`, as `resource: status (message)`.
    fn others(&self, allowed: &[&str]) -> Vec<String> {
        self.events()
            .iter()
            .filter(|e| !allowed.iter().any(|a| e["status"] == *a))
            .map(|e| {
                format!(
                    "{}: {} ({})",
                    e["resource"].as_str().unwrap_or_default(),
                    e["status"].as_str().unwrap_or_default(),
                    e["message"].as_str().unwrap_or_default()
                )
            })
            .collect()
    }
}

impl Brownfield {
    /// Step 0: the server on a test copy of the example site (plus gheorghe and mira), a booted
    /// root with the fixtures, the lived-in people, viktor's live session, the agent enrolled.
    fn start() -> Brownfield {
        let dir = tempfile::tempdir().unwrap();
        let site = example_site_copy(dir.path());
        let vault = dir.path().join("vault-data.yaml");
        std::fs::copy(site.join("vault-data.yaml"), &vault).unwrap();
        let server = ServerProcess::start(dir.path(), &site, &vault);
        let root = Root::booted();
        let b = Brownfield {
            _dir: dir,
            site,
            vault,
            server,
            root,
            failures: RefCell::new(Vec::new()),
        };
        b.edit_site(
            "roster.yaml",
            "  # gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner, namespaces: [vabbit81] }\n",
            "  gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner, namespaces: [vabbit81] }\n  \
             mira:      { authentik_user: mira.s, k8s_user: mira, tier: admin }\n",
        );
        b.edit_vault(
            "    vabbit81: { role: namespace-owner, namespaces: [vabbit81] }\n",
            "    vabbit81: { role: namespace-owner, namespaces: [vabbit81] }\n    \
             mira:     { role: admin }\n",
        );

        b.root.install_agent();
        b.sh(FIXTURES);
        b.sh(LIVED_IN);
        b.start_session("viktor", "3601");
        let join = b.server.join_string(&[
            "--auto-approve",
            "--class",
            "workstation",
            "--hostname",
            "devvm",
        ]);
        let ca = std::fs::read(b.server.data_dir.join("tls.crt")).unwrap();
        b.root.write("/etc/steward/server-ca.pem", &ca);
        b.root.write(
            "/etc/steward/agent.toml",
            format!(
                "join = {join:?}\nca_file = \"/etc/steward/server-ca.pem\"\nsplay_limit_secs = 0\n"
            )
            .as_bytes(),
        );
        let out = b.root.run(&["/usr/local/bin/steward-agent", "enroll"]);
        assert!(
            out.status.success(),
            "enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        b
    }

    /// Records `message()` when `ok` is false (and prints it at once).
    fn check(&self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            let message = message();
            eprintln!("FAILED CHECK: {message}");
            self.failures.borrow_mut().push(message);
        }
    }

    /// Prints how `step` went (its failed checks were printed as they happened).
    fn done(&self, step: &str, failed_before: usize) {
        let failed = self.failures.borrow().len() - failed_before;
        if failed == 0 {
            eprintln!("{step}: holds");
        } else {
            eprintln!("{step}: {failed} failed checks");
        }
    }

    /// How many checks failed so far.
    fn failed(&self) -> usize {
        self.failures.borrow().len()
    }

    /// Fails the test with every failed check.
    fn finish(&self) {
        let failures = self.failures.borrow();
        assert!(
            failures.is_empty(),
            "{} failed checks:\n- {}",
            failures.len(),
            failures.join("\n- ")
        );
    }

    fn sh(&self, script: &str) -> String {
        self.root.run_ok(&["sh", "-c", script])
    }

    /// Whether a shell condition holds inside the root.
    fn holds(&self, script: &str) -> bool {
        self.root.run(&["sh", "-c", script]).status.success()
    }

    /// Polls `script` (a shell condition inside the root) until it holds, at most [`SETTLE`].
    fn wait_for(&self, what: &str, script: &str) {
        let deadline = Instant::now() + SETTLE;
        while !self.holds(script) {
            assert!(
                Instant::now() < deadline,
                "{what}: not within {SETTLE:?} ({script})"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A live session of `user`: `sleep <marker>` with a pseudo-terminal as its controlling
    /// terminal, in its own session, outliving the command that starts it.
    fn start_session(&self, user: &str, marker: &str) {
        self.sh(&format!(
            "(runuser -u {user} -- setsid script -qfc 'sleep {marker}' /dev/null \
             </dev/null >/dev/null 2>&1 &)"
        ));
        self.wait_for(
            &format!("{user}'s session (sleep {marker} on a terminal)"),
            &format!("ps -o tty= -p \"$(pgrep -u {user} -f '^sleep {marker}$')\" | grep -q pts/"),
        );
    }

    /// Whether `user`'s session `sleep <marker>` still runs.
    fn session_alive(&self, user: &str, marker: &str) -> bool {
        self.holds(&format!("pgrep -u {user} -f '^sleep {marker}$' >/dev/null"))
    }

    /// Ends `user`'s session: its `sleep` by pid; `script` and the shell follow. Waits until
    /// no process of `user` holds a terminal.
    fn end_session(&self, user: &str, marker: &str) {
        self.sh(&format!("kill $(pgrep -u {user} -f '^sleep {marker}$')"));
        self.wait_for(
            &format!("{user}'s session to end"),
            &format!("! ps -o tty= -u {user} | grep -q pts/"),
        );
    }

    fn edit(path: &Path, from: &str, to: &str) {
        let text = std::fs::read_to_string(path).unwrap();
        assert!(
            text.contains(from),
            "{} no longer has {from:?}",
            path.display()
        );
        std::fs::write(path, text.replacen(from, to, 1)).unwrap();
    }

    fn edit_site(&self, file: &str, from: &str, to: &str) {
        Brownfield::edit(&self.site.join(file), from, to);
    }

    fn edit_vault(&self, from: &str, to: &str) {
        Brownfield::edit(&self.vault, from, to);
    }

    /// A roster user's line: `name:` padded as in the file, up to the closing brace.
    fn roster_line(&self, user: &str) -> String {
        let text = std::fs::read_to_string(self.site.join("roster.yaml")).unwrap();
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{user}:")))
            .unwrap_or_else(|| panic!("roster.yaml has no line for {user}"))
            .to_string()
    }

    /// Replaces `user`'s roster fields after the first `{` with `fields`.
    fn set_roster(&self, user: &str, fields: &str) {
        let line = self.roster_line(user);
        let (head, _) = line.split_once('{').unwrap();
        assert!(
            line.trim_end().ends_with('}'),
            "{user}'s roster entry is one line: {line}"
        );
        self.edit_site("roster.yaml", &line, &format!("{head}{{ {fields} }}"));
    }

    /// One `steward-agent run --json` in the root; asserts the host is not failed: exit code
    /// 0 or 2, no failed event.
    fn run(&self, step: &str) -> Run {
        let out = self
            .root
            .run(&["/usr/local/bin/steward-agent", "run", "--json"]);
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            panic!(
                "{step}: no run report ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let run = Run {
            code: out.status.code(),
            report,
        };
        // The server stored the report (kept, deferred and drift included).
        let run_id = run.report["run_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let stored = self.server.try_admin_get("/api/v1/runs?node=devvm");
        self.check(
            stored
                .as_ref()
                .is_ok_and(|runs| runs.to_string().contains(&run_id)),
            || format!("{step}: the server has not stored run {run_id}: {stored:?}"),
        );
        // One line per run for the log: what was left as found, deferred or drifting.
        let notices: Vec<String> = run
            .events()
            .iter()
            .filter(|e| e["status"] == "kept" || e["status"] == "deferred" || !e["drift"].is_null())
            .map(|e| {
                format!(
                    "{} {}",
                    e["status"].as_str().unwrap_or_default(),
                    e["resource"].as_str().unwrap_or_default()
                )
            })
            .collect();
        eprintln!(
            "  {step}: exit {:?}, totals {}, notices {notices:?}",
            run.code, run.report["totals"]
        );
        let failed: Vec<String> = run
            .others(&["unchanged", "changed", "skipped", "kept", "deferred"])
            .into_iter()
            .collect();
        check!(
            self,
            failed.is_empty(),
            "{step}: failed resources: {failed:#?}"
        );
        check!(
            self,
            matches!(run.code, Some(0 | 2)),
            "{step}: exit code {:?} (0 or 2 expected): {:#}",
            run.code,
            run.report["totals"]
        );
        run
    }

    /// A web UI page (as the admin), lowercased; empty (and a failed check) when the server
    /// does not serve it.
    fn page(&self, path: &str) -> String {
        match self
            .server
            .admin_request(path)
            .and_then(|r| r.text().map_err(|e| e.to_string()))
        {
            Ok(text) => text.to_lowercase(),
            Err(e) => {
                self.check(false, || format!("the web UI: {e}"));
                String::new()
            }
        }
    }

    fn stat(&self, path: &str) -> String {
        self.root
            .run_ok(&["stat", "-c", "%a %U:%G", path])
            .trim()
            .to_string()
    }

    fn groups(&self, user: &str) -> BTreeSet<String> {
        self.root
            .run_ok(&["id", "-nG", user])
            .split_whitespace()
            .map(str::to_string)
            .collect()
    }

    fn shadow(&self, user: &str) -> String {
        self.root
            .run_ok(&["getent", "shadow", user])
            .trim()
            .to_string()
    }

    fn invocation(&self, unit: &str) -> String {
        let id = self
            .root
            .run_ok(&["systemctl", "show", "-p", "InvocationID", "--value", unit])
            .trim()
            .to_string();
        assert!(!id.is_empty(), "{unit} has no InvocationID (not running)");
        id
    }

    fn unit_state(&self, unit: &str) -> (String, String) {
        let enabled = self.root.run(&["systemctl", "is-enabled", unit]);
        let active = self.root.run(&["systemctl", "is-active", unit]);
        (
            String::from_utf8_lossy(&enabled.stdout).trim().to_string(),
            String::from_utf8_lossy(&active.stdout).trim().to_string(),
        )
    }

    fn read(&self, path: &str) -> String {
        std::fs::read_to_string(self.root.path(path)).unwrap_or_default()
    }

    fn git(&self, repo: &str, args: &[&str]) -> String {
        let mut full = vec!["git", "-c", "safe.directory=*", "-C", repo];
        full.extend_from_slice(args);
        self.root.run_ok(&full).trim().to_string()
    }

    fn emo_as_found(&self) -> EmoAsFound {
        let paths = [
            "/home/emo",
            "/home/emo/.claude",
            "/home/emo/.claude/CLAUDE.md",
            "/home/emo/.claude.json",
            "/home/emo/.kube",
            "/home/emo/.kube/config",
        ];
        EmoAsFound {
            passwd: self.root.run_ok(&["getent", "passwd", "emo"]),
            shadow: self.shadow("emo"),
            modes: paths
                .iter()
                .map(|p| (p.to_string(), self.stat(p)))
                .collect(),
            bytes: [
                "/home/emo/.claude/CLAUDE.md",
                "/home/emo/.claude.json",
                "/home/emo/.kube/config",
            ]
            .iter()
            .map(|p| (p.to_string(), std::fs::read(self.root.path(p)).unwrap()))
            .collect(),
            code_link: self
                .root
                .run_ok(&["readlink", "/home/emo/code"])
                .trim()
                .to_string(),
            viktor_tree: self
                .sh("cd /home/viktor/code && find . -path ./.git -prune -o -print | sort"),
        }
    }

    /// emo as found before enrollment: everything but his groups, which may only grow.
    fn assert_emo_as_found(&self, step: &str, before: &EmoAsFound, groups: &BTreeSet<String>) {
        let now = self.emo_as_found();
        check_eq!(
            self,
            now.passwd,
            before.passwd,
            "{step}: emo's passwd entry (login shell bash) changed"
        );
        check_eq!(
            self,
            now.shadow,
            before.shadow,
            "{step}: emo's shadow entry (his password login) changed"
        );
        check_eq!(self,
            now.modes, before.modes,
            "{step}: modes/owners of emo's home, ~/.claude, ~/.claude.json, ~/.kube, ~/.kube/config changed"
        );
        for ((path, now), (_, was)) in now.bytes.iter().zip(&before.bytes) {
            check!(
                self,
                now == was,
                "{step}: the bytes of emo's {path} changed"
            );
        }
        check_eq!(
            self,
            now.code_link,
            before.code_link,
            "{step}: emo's ~/code is no longer the symlink into viktor's tree"
        );
        check_eq!(
            self,
            now.viktor_tree,
            before.viktor_tree,
            "{step}: something was written into viktor's tree through emo's ~/code symlink"
        );
        let current = self.groups("emo");
        let missing: Vec<&String> = groups.difference(&current).collect();
        check!(
            self,
            missing.is_empty(),
            "{step}: emo lost groups {missing:?} (groups are only ever added)"
        );
    }
}

#[test]
fn a_lived_in_devvm_is_adopted_without_breaking_anyone() {
    let b = Brownfield::start();
    let emo_before = b.emo_as_found();
    let emo_groups = b.groups("emo");
    check!(
        b,
        emo_groups.contains("code-shared") && emo_groups.contains("docker"),
        "step 0: emo's groups {emo_groups:?}"
    );
    assert!(
        emo_before.passwd.trim_end().ends_with(":/bin/bash"),
        "step 0: emo's shell is bash: {}",
        emo_before.passwd
    );

    // Step 1: the first run adopts emo as found; the host is not failed.
    let mut start = b.failed();
    let first = b.run("step 1 (first run)");
    b.assert_emo_as_found("step 1 (first run)", &emo_before, &emo_groups);
    let clone = first.event("step 1", "git_clone:/home/emo/code");
    check_eq!(
        b,
        clone["status"],
        "kept",
        "step 1: emo's ~/code (a symlink into viktor's tree) is kept: {clone:#}"
    );
    check!(
        b,
        clone["message"].as_str().is_some_and(|m| !m.is_empty()),
        "step 1: the kept event says why: {clone:#}"
    );
    // What Steward left as found says so: `kept`, with the reason.
    for resource in [
        "user:emo",
        "directory:/home/emo/.claude",
        "file:/home/emo/.claude.json",
        "directory:/home/emo/.kube",
        "file:/home/emo/.kube/config",
    ] {
        let event = first.event("step 1", resource);
        check_eq!(
            b,
            event["status"],
            "kept",
            "step 1: emo's pre-existing {resource} is reported kept: {event:#}"
        );
    }
    let run_page = b.page(&format!(
        "/ui/runs/{}",
        first.report["run_id"].as_str().unwrap_or_default()
    ));
    let notices = section(&run_page, "id=\"notices\"", "</section>");
    check!(
        b,
        notices.contains("kept") && notices.contains("git_clone:/home/emo/code"),
        "step 1: the run page's notices show the kept git_clone:/home/emo/code"
    );
    let user = first.event("step 1", "user:emo");
    check!(
        b,
        user["message"]
            .as_str()
            .is_some_and(|m| m.contains("shell")),
        "step 1: user:emo's kept message names the shell left as found: {user:#}"
    );
    check!(
        b,
        user["drift"].as_str().is_some_and(|d| d.contains("docker")),
        "step 1: user:emo's drift names docker (beyond the power-user tier): {user:#}"
    );
    check!(
        b,
        b.session_alive("viktor", "3601"),
        "step 1: viktor's session survives"
    );
    // The roster's new people were created as the site says.
    for user in ["ancamilea", "gheorghe", "mira"] {
        let passwd = b.root.run_ok(&["getent", "passwd", user]);
        check!(
            b,
            passwd.trim_end().ends_with(":/bin/zsh"),
            "step 1: {user} created with zsh: {passwd}"
        );
        check!(
            b,
            b.shadow(user).split(':').nth(1).unwrap().starts_with('!'),
            "step 1: {user} created locked"
        );
    }
    let mira_groups = b.groups("mira");
    check!(
        b,
        mira_groups.contains("sudo") && mira_groups.contains("docker"),
        "step 1: mira (admin) holds the admin tier's privileged groups: {mira_groups:?}"
    );
    check!(
        b,
        b.read("/home/mira/.kube/config").contains("cluster-admin"),
        "step 1: mira's kubeconfig is the admin tier's"
    );
    b.done("step 1 (first run adopted emo as found)", start);
    start = b.failed();

    // Step 2: nothing left to change.
    let second = b.run("step 2 (second run)");
    // The harness's container may not enable swap (swapon: Invalid argument): that skip is
    // the root's, not the site's.
    let changed: Vec<String> = second
        .others(&["unchanged", "kept"])
        .into_iter()
        .filter(|e| !e.starts_with("swap:/swapfile: skipped"))
        .collect();
    check!(
        b,
        changed.is_empty(),
        "step 2: the second run changed or skipped: {changed:#?}"
    );
    check_eq!(b, second.code, Some(0), "step 2: exit code");
    b.assert_emo_as_found("step 2 (second run)", &emo_before, &emo_groups);
    b.done("step 2 (second run changed nothing)", start);
    start = b.failed();

    // Step 8 (no run needed): a zsh login of a user Steward created sees the workstation
    // environment.
    let env = b.root.run_ok(&[
        "runuser",
        "-l",
        "ancamilea",
        "-c",
        "echo \"$WORKSTATION_CONFIG_BASE\"",
    ]);
    check_eq!(
        b,
        env.trim(),
        "/srv/config-base",
        "step 8: WORKSTATION_CONFIG_BASE in ancamilea's zsh login shell"
    );
    b.done("step 8 (zsh login sees the workstation environment)", start);

    idle_gated_restart(&b);
    offboard_and_back(&b, &emo_before, &emo_groups);
    workspace_switch(&b);
    demotion(&b);
    purge_with_a_live_process(&b);

    check!(
        b,
        b.session_alive("viktor", "3601"),
        "end: viktor's session (not in the roster) was never touched"
    );
    b.assert_emo_as_found("end", &emo_before, &emo_groups);
    b.finish();
}

/// Step 3: a changed unit file restarts an idle user's `t3-serve@` at once; emo's waits while
/// he has a session (deferred, persisted across runs) and happens exactly once after it ends.
fn idle_gated_restart(b: &Brownfield) {
    let start = b.failed();
    let emo_unit = "t3-serve@emo.service";
    let anca_unit = "t3-serve@ancamilea.service";
    b.start_session("emo", "3602");
    let emo_id = b.invocation(emo_unit);
    let anca_id = b.invocation(anca_unit);
    b.edit_site(
        "files/t3-serve@.service",
        "[Service]\n",
        "[Service]\n# brownfield: a one-line comment\n",
    );

    let run = b.run("step 3a (unit file changed, emo in a session)");
    check_eq!(
        b,
        run.status("step 3a", "file:/etc/systemd/system/t3-serve@.service"),
        "changed",
        "step 3a: the unit file is written"
    );
    let event = run.event("step 3a", &format!("service:{emo_unit}"));
    check_eq!(
        b,
        event["status"],
        "deferred",
        "step 3a: emo's restart waits for him to be idle: {event:#}"
    );
    check!(
        b,
        event["message"].as_str().is_some_and(|m| !m.is_empty()),
        "step 3a: the deferred event says why: {event:#}"
    );
    check_eq!(
        b,
        b.invocation(emo_unit),
        emo_id,
        "step 3a: t3-serve@emo restarted under a live session"
    );
    check_ne!(
        b,
        b.invocation(anca_unit),
        anca_id,
        "step 3a: idle ancamilea's t3-serve@ restarts at once"
    );
    let node_page = b.page("/ui/nodes/devvm");
    check!(
        b,
        section(&node_page, "id=\"notices-deferred\"", "</table>")
            .contains("service:t3-serve@emo.service"),
        "step 3a: the node page lists emo's restart among the deferred notices"
    );

    let run = b.run("step 3b (emo still in a session)");
    check_eq!(
        b,
        run.status("step 3b", &format!("service:{emo_unit}")),
        "deferred",
        "step 3b: the pending restart is remembered across runs"
    );
    check_eq!(
        b,
        b.invocation(emo_unit),
        emo_id,
        "step 3b: t3-serve@emo restarted under a live session"
    );

    b.end_session("emo", "3602");
    let run = b.run("step 3c (emo idle)");
    check_eq!(
        b,
        run.status("step 3c", &format!("service:{emo_unit}")),
        "changed",
        "step 3c: the pending restart happens once emo is idle"
    );
    let restarted = b.invocation(emo_unit);
    check_ne!(
        b,
        restarted,
        emo_id,
        "step 3c: t3-serve@emo was not restarted"
    );
    let run = b.run("step 3d (after the restart)");
    check_eq!(
        b,
        run.status("step 3d", &format!("service:{emo_unit}")),
        "unchanged",
        "step 3d: nothing pending any more"
    );
    check_eq!(
        b,
        b.invocation(emo_unit),
        restarted,
        "step 3d: t3-serve@emo restarted a second time"
    );
    b.done(
        "step 3 (restart deferred under a session, done exactly once after)",
        start,
    );
}

/// Step 4: emo offboarded (locked, expired, unit off, out of the maps), his Vault entry
/// removed meanwhile (the host compiles), then back to present with the entry: exactly as
/// before.
fn offboard_and_back(b: &Brownfield, emo_before: &EmoAsFound, emo_groups: &BTreeSet<String>) {
    let start = b.failed();
    let unit = "t3-serve@emo.service";
    let present_line = b.roster_line("emo");
    let shadow_before = b.shadow("emo");
    b.set_roster(
        "emo",
        "authentik_user: emil.barzin, k8s_user: emo, tier: power-user, state: offboarded",
    );
    b.run("step 4a (emo offboarded)");
    let shadow = b.shadow("emo");
    let fields: Vec<&str> = shadow.split(':').collect();
    check!(
        b,
        fields[1].starts_with('!'),
        "step 4a: emo's account is locked"
    );
    check!(
        b,
        !fields[7].is_empty(),
        "step 4a: emo's account is expired (shadow expiry set)"
    );
    let (enabled, active) = b.unit_state(unit);
    check!(
        b,
        enabled != "enabled" && active != "active",
        "step 4a: {unit} stopped and disabled: {enabled}/{active}"
    );
    check!(
        b,
        !b.read("/etc/ttyd-user-map").contains("emil.barzin"),
        "step 4a: emo gone from /etc/ttyd-user-map"
    );
    check!(
        b,
        !b.read("/etc/t3-serve/dispatch.json")
            .contains("emil.barzin"),
        "step 4a: emo gone from dispatch.json"
    );

    let entry = "    emo:      { role: power-user }\n";
    b.edit_vault(entry, "");
    b.run("step 4b (emo's k8s_users entry removed while offboarded)");
    let node = b.server.admin_get("/api/v1/nodes/devvm");
    check!(
        b,
        node["compile_failure"].is_null(),
        "step 4b: the compile failed for the host: {:#}",
        node["compile_failure"]
    );

    b.edit_vault("    anca:", &format!("{entry}    anca:"));
    let line = b.roster_line("emo");
    b.edit_site("roster.yaml", &line, &present_line);
    b.run("step 4c (emo present again)");
    check_eq!(
        b,
        b.shadow("emo"),
        shadow_before,
        "step 4c: emo's shadow line is not what it was before offboarding"
    );
    check_eq!(
        b,
        b.unit_state(unit),
        ("enabled".to_string(), "active".to_string()),
        "step 4c: {unit} enabled and active again"
    );
    check!(
        b,
        b.read("/etc/ttyd-user-map").contains("emil.barzin=emo"),
        "step 4c: emo back in /etc/ttyd-user-map"
    );
    check!(
        b,
        b.read("/etc/t3-serve/dispatch.json")
            .contains("emil.barzin"),
        "step 4c: emo back in dispatch.json"
    );
    b.assert_emo_as_found("step 4c", emo_before, emo_groups);
    b.done("step 4 (offboarded and back restores emo exactly)", start);
}

/// Step 6: gheorghe's `~/code` (a clean single-layout clone) becomes `~/code/infra` when he
/// switches to the workspace layout; his repos are cloned beside it, nothing nested.
fn workspace_switch(b: &Brownfield) {
    let start = b.failed();
    let home = "/home/gheorghe";
    let head = b.git(&format!("{home}/code"), &["rev-parse", "HEAD"]);
    b.set_roster(
        "gheorghe",
        "authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner, namespaces: [vabbit81], \
         code_layout: workspace, repos: [tripit]",
    );
    b.run("step 6 (gheorghe single -> workspace)");
    check!(
        b,
        !b.root.path(&format!("{home}/code/.git")).exists(),
        "step 6: ~/code is still a clone (it should be the workspace directory)"
    );
    check_eq!(
        b,
        b.git(&format!("{home}/code/infra"), &["rev-parse", "HEAD"]),
        head,
        "step 6: ~/code/infra is the moved clone (same HEAD)"
    );
    check_eq!(
        b,
        b.git(
            &format!("{home}/code/infra"),
            &["config", "remote.forgejo.url"]
        ),
        "https://forgejo.homelab.example/viktor/infra.git",
        "step 6: ~/code/infra keeps its forgejo remote"
    );
    for nested in ["code/code", "code/infra/infra", "code/infra/tripit"] {
        check!(
            b,
            !b.root.path(&format!("{home}/{nested}")).exists(),
            "step 6: ~/{nested} exists (a clone nested in a work tree)"
        );
    }
    check!(
        b,
        b.root
            .path(&format!("{home}/code/tripit/README.md"))
            .exists(),
        "step 6: ~/code/tripit cloned beside ~/code/infra"
    );
    let status = b.git(&format!("{home}/code/infra"), &["status", "--porcelain"]);
    check!(
        b,
        status.is_empty(),
        "step 6: the moved clone is clean: {status}"
    );
    b.done(
        "step 6 (workspace switch moved the clone, nothing nested)",
        start,
    );
}

/// Step 7: mira demoted admin → namespace-owner: the run reports her privileged groups as
/// drift and keeps them; `revoke_groups` removes exactly those.
fn demotion(b: &Brownfield) {
    let start = b.failed();
    b.set_roster(
        "mira",
        "authentik_user: mira.s, k8s_user: mira, tier: namespace-owner, namespaces: [mira]",
    );
    b.edit_vault(
        "    mira:     { role: admin }\n",
        "    mira:     { role: namespace-owner, namespaces: [mira] }\n",
    );
    let run = b.run("step 7a (mira demoted)");
    let event = run.event("step 7a", "user:mira");
    let drift = event["drift"].as_str().unwrap_or_default();
    check!(
        b,
        drift.contains("sudo") && drift.contains("docker"),
        "step 7a: the user event's drift names sudo and docker: {event:#}"
    );
    check!(
        b,
        run.report["totals"]["drift"].as_u64() >= Some(1),
        "step 7a: the totals count the drift: {:#}",
        run.report["totals"]
    );
    for (page, id, end) in [
        ("/ui/nodes/devvm", "id=\"notices-drift\"", "</table>"),
        ("/ui/roster/mira", "id=\"person-notices\"", "</section>"),
    ] {
        let text = b.page(page);
        let notices = section(&text, id, end);
        check!(
            b,
            notices.contains("user:mira") && notices.contains("sudo"),
            "step 7a: {page} shows mira's drift (sudo, docker beyond her tier) in its notices"
        );
    }
    let groups = b.groups("mira");
    check!(
        b,
        groups.contains("sudo") && groups.contains("docker"),
        "step 7a: a demotion alone removes no group (additive-only): {groups:?}"
    );
    check!(
        b,
        !b.read("/home/mira/.kube/config").contains("cluster-admin"),
        "step 7a: mira's kubeconfig still says cluster-admin after the demotion"
    );

    b.set_roster(
        "mira",
        "authentik_user: mira.s, k8s_user: mira, tier: namespace-owner, namespaces: [mira], \
         revoke_groups: [sudo, docker]",
    );
    let run = b.run("step 7b (revoke_groups: [sudo, docker])");
    let groups = b.groups("mira");
    check!(
        b,
        !groups.contains("sudo") && !groups.contains("docker"),
        "step 7b: revoke_groups removes sudo and docker: {groups:?}"
    );
    check!(
        b,
        groups.contains("code-shared"),
        "step 7b: revoke_groups removes only what it lists: {groups:?}"
    );
    let event = run.event("step 7b", "user:mira");
    check!(
        b,
        event["drift"].is_null(),
        "step 7b: no drift left: {event:#}"
    );
    b.done(
        "step 7 (demotion reported as drift, revoke_groups tightened)",
        start,
    );
}

/// Step 5: mira purged while a process of hers runs: one archive, no account, no process;
/// a second run writes no second archive.
fn purge_with_a_live_process(b: &Brownfield) {
    let start = b.failed();
    let archives = "/var/backups/steward/offboarded";
    let uid = b.root.run_ok(&["id", "-u", "mira"]).trim().to_string();
    b.start_session("mira", "3605");
    b.set_roster(
        "mira",
        "authentik_user: mira.s, k8s_user: mira, tier: namespace-owner, namespaces: [mira], \
         state: purged",
    );
    let list = || {
        b.sh(&format!(
            "find {archives} -mindepth 1 2>/dev/null | sort || true"
        ))
        .lines()
        .map(str::to_string)
        .collect::<Vec<_>>()
    };
    b.run("step 5a (mira purged with a live process)");
    let first = list();
    check_eq!(
        b,
        first.len(),
        1,
        "step 5a: one archive of mira's home: {first:?}"
    );
    check!(
        b,
        !b.root.run(&["getent", "passwd", "mira"]).status.success(),
        "step 5a: mira's account still exists"
    );
    check!(
        b,
        !b.holds(&format!("pgrep -u {uid} >/dev/null")),
        "step 5a: a process of mira's (uid {uid}) still runs"
    );
    b.run("step 5b (run after the purge)");
    check_eq!(
        b,
        list(),
        first,
        "step 5b: a second run wrote another archive"
    );
    b.done("step 5 (purge ended mira's process, archived once)", start);
}

/// The part of `html` from the element marked `start` (an attribute such as `id="notices"`)
/// to the first `end` after it; empty when the element is not there, so a check on it fails.
fn section<'a>(html: &'a str, start: &str, end: &str) -> &'a str {
    let Some(from) = html.find(start) else {
        return "";
    };
    let rest = &html[from..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}
