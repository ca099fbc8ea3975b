//! What the benchmarks share: the server as a child process (the real `steward-server serve`
//! binary, on the plain HTTP loopback listener, so its memory is read from
//! `/proc/<pid>/status` without the load generator's), and small helpers.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use steward_protocol::Timestamp;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).expect("randomness");
    bytes
}

pub fn now() -> Timestamp {
    Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_secs() as i64,
    )
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// KiB as MiB.
pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// A temporary directory with a copy of the example site (`site/`, its `vault-data.yaml` as the
/// Vault data), an empty private data directory (`data/`) and where the server logs.
pub struct Workspace {
    pub dir: tempfile::TempDir,
    pub site: PathBuf,
    pub vault: PathBuf,
    pub data: PathBuf,
    pub log: PathBuf,
}

impl Workspace {
    pub fn new() -> Result<Workspace, BoxError> {
        use std::os::unix::fs::DirBuilderExt;
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("repo root");
        let dir = tempfile::tempdir()?;
        let site = dir.path().join("site");
        copy_dir(&repo.join("deploy/example-site"), &site)?;
        let data = dir.path().join("data");
        fs::DirBuilder::new().mode(0o700).create(&data)?;
        Ok(Workspace {
            vault: site.join("vault-data.yaml"),
            log: dir.path().join("server.log"),
            site,
            data,
            dir,
        })
    }

    /// `server.toml` in the workspace: the plain listener on `port`, the data directory, the
    /// site and its Vault data file, then `extra` (sections of the bench's own).
    pub fn write_config(&self, port: u16, extra: &str) -> PathBuf {
        let path = self.dir.path().join("server.toml");
        let text = format!(
            "listen = \"127.0.0.1:0\"\nplain_listen = \"127.0.0.1:{port}\"\ndata_dir = {:?}\n\
             site = {:?}\nvault_data_file = {:?}\n{extra}",
            self.data.display().to_string(),
            self.site.display().to_string(),
            self.vault.display().to_string(),
        );
        fs::write(&path, text).expect("writing the config");
        path
    }
}

/// The server child process; dropping it stops it.
pub struct ServerProcess {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub base: String,
}

impl ServerProcess {
    /// Starts `steward-server serve --config CONFIG` (stderr appended to `log`) and waits for
    /// `/healthz` on `port` (a large database's integrity check takes a while).
    pub async fn start(config: &Path, port: u16, log: &Path) -> Result<ServerProcess, BoxError> {
        let log = fs::OpenOptions::new().create(true).append(true).open(log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_steward-server"))
            .arg("serve")
            .arg("--config")
            .arg(config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()?;
        let mut server = ServerProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        };
        let probe = reqwest::Client::builder().no_proxy().build()?;
        let started = Instant::now();
        loop {
            if let Ok(response) = probe.get(format!("{}/healthz", server.base)).send().await {
                if response.status().is_success() {
                    return Ok(server);
                }
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("the server exited during start-up: {status}").into());
            }
            if started.elapsed() > Duration::from_secs(600) {
                server.stop();
                return Err("the server did not answer /healthz within 600 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// VmRSS and VmHWM in KiB.
    pub fn memory(&self) -> (u64, u64) {
        let status =
            fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|kb| kb.parse::<u64>().ok())
                .unwrap_or(0)
        };
        (field("VmRSS:"), field("VmHWM:"))
    }

    /// SIGTERM, then the time until it exited and its exit status (SIGKILL after 60 s).
    pub fn stop(&mut self) -> (Duration, Option<i32>) {
        let started = Instant::now();
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return (started.elapsed(), status.code());
            }
            if started.elapsed() > Duration::from_secs(60) {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return (started.elapsed(), None);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
