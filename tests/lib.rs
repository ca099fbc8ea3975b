//! Shared helpers for the end-to-end tests: the real `steward-server` and `steward-agent`
//! binaries as processes, on loopback, with their own data directories.
//!
//! The binaries are the ones `cargo test --workspace` builds next to the test executable
//! (`target/<profile>/`); a test fails with a clear message when they are missing.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// A workspace binary (`steward-server`, `steward-agent`).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/e2e-<hash> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        path.display()
    );
    path
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
        let mut server = ServerProcess {
            url,
            config,
            data_dir,
            admin_token,
            log,
            child: None,
        };
        server.restart();
        server
    }

    /// (Re)starts the process and waits until `/healthz` answers.
    pub fn restart(&mut self) {
        self.stop();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(bin("steward-server"))
            .args(["serve", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting steward-server");
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
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(30);
            while child.try_wait().unwrap().is_none() {
                if Instant::now() > deadline {
                    let _ = child.kill();
                }
                std::thread::sleep(Duration::from_millis(20));
            }
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
        let r = self
            .http()
            .get(format!("{}{path}", self.url))
            .bearer_auth(&self.admin_token)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().unwrap()
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
        let config = dir.join("agent.toml");
        let state_dir = dir.join("agent-state");
        std::fs::write(
            &config,
            format!(
                "join = {join:?}\nca_file = {:?}\nstate_dir = {:?}\ninterval_secs = 3600\n\
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
        let log = std::fs::File::create(log).unwrap();
        Command::new(bin("steward-agent"))
            .arg("--config")
            .arg(&self.config)
            .args(["daemon", "--root", self.root.to_str().unwrap()])
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

/// A sandbox root for host `lab-1` with just enough of `/etc` for owner names to resolve.
pub fn sandbox_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::create_dir_all(root.join("srv")).unwrap();
    std::fs::write(root.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
    std::fs::write(root.join("etc/group"), "root:x:0:\n").unwrap();
    std::fs::write(root.join("etc/hostname"), "lab-1\n").unwrap();
    root
}
