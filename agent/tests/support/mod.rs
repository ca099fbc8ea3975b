//! Shared test support: disposable Debian roots from the repository's `harness/` (real
//! `useradd`, `systemctl`, `git`, `apt` inside them, never this machine's accounts) and signed
//! test catalogs.
//!
//! A test that needs a root fails (never skips) when the harness cannot build one.

#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};

use steward_protocol::envelope::{issue_certificate, sign_catalog, SigningKeyPair};
use steward_protocol::{
    Catalog, DocumentType, NodeId, Provenance, Resource, Serial, Timestamp, CATALOG_FORMAT_VERSION,
};

/// The repository's `harness/` directory.
pub fn harness() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../harness")
}

/// The agent binary under test: cargo's for the agent's own tests, else the one
/// `cargo test --workspace` built next to the test executable (the e2e crate).
pub fn agent_binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_steward-agent") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().expect("test executable");
            let path = exe
                .parent()
                .and_then(Path::parent)
                .expect("target dir")
                .join("steward-agent");
            assert!(
                path.exists(),
                "{} is missing: run `cargo test --workspace`",
                path.display()
            );
            path
        }
    }
}

fn script(name: &str, args: &[&str]) -> Output {
    let out = Command::new("bash")
        .arg(harness().join(name))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running harness/{name}: {e}"));
    assert!(
        out.status.success(),
        "harness/{name} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A disposable copy of the pristine Debian root (an overlay; dropped with the value).
pub struct Root {
    dir: PathBuf,
    _parent: tempfile::TempDir,
    booted: bool,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

impl Root {
    /// A fresh, unbooted root (chroot use: `run`, or the agent's `--root`).
    pub fn fresh() -> Root {
        let parent = tempfile::Builder::new()
            .prefix("steward-root-")
            .tempdir()
            .expect("temp dir");
        let dir = parent
            .path()
            .join(format!("root{}", COUNTER.fetch_add(1, Ordering::Relaxed)));
        script("fresh-root.sh", &[dir.to_str().unwrap()]);
        Root {
            dir,
            _parent: parent,
            booted: false,
        }
    }

    /// A fresh root booted with systemd as PID 1.
    pub fn booted() -> Root {
        let mut root = Root::fresh();
        script("boot-root.sh", &[root.dir.to_str().unwrap(), "start"]);
        root.booted = true;
        root
    }

    /// The root directory as seen from this machine.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `path` (absolute inside the root) as seen from this machine.
    pub fn path(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }

    /// Runs a command inside the root: through the booted systemd when booted, else chrooted.
    pub fn run(&self, args: &[&str]) -> Output {
        let dir = self.dir.to_str().unwrap();
        let mut full = vec![dir];
        if self.booted {
            full.push("exec");
        }
        full.extend_from_slice(args);
        let name = if self.booted {
            "boot-root.sh"
        } else {
            "run-in-root.sh"
        };
        Command::new("bash")
            .arg(harness().join(name))
            .args(&full)
            .output()
            .expect("running a command in the root")
    }

    /// `steward-agent run --catalog` on `catalog` (signed here, trusted by pin) inside the root
    /// as `node`, with `extra` arguments; returns the JSON report.
    pub fn run_catalog(&self, catalog: &Catalog, node: &str, extra: &[&str]) -> serde_json::Value {
        self.write("/root/catalog.signed", &sign(catalog));
        let trust = trust();
        let mut args = vec![
            "/usr/local/bin/steward-agent",
            "run",
            "--catalog",
            "/root/catalog.signed",
            "--trust",
            &trust,
            "--node",
            node,
            "--json",
        ];
        args.extend_from_slice(extra);
        let out = self.run(&args);
        let stdout = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "agent run ({}) printed no JSON report ({e}): {stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
    }

    /// [`Root::run`], asserting success; returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?} in the root failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Copies the agent binary to `/usr/local/bin/steward-agent` in the root.
    pub fn install_agent(&self) {
        let target = self.path("/usr/local/bin/steward-agent");
        std::fs::copy(agent_binary(), &target).expect("copying the agent into the root");
    }

    /// Writes `bytes` at `path` inside the root (as root, mode 0600).
    pub fn write(&self, path: &str, bytes: &[u8]) {
        use std::os::unix::fs::PermissionsExt;
        let p = self.path(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        // drop-root.sh stops a booted root, unmounts the overlay and deletes it.
        let _ = Command::new("bash")
            .arg(harness().join("drop-root.sh"))
            .arg(&self.dir)
            .output();
    }
}

/// The test root key (seed 1); its fingerprint is what `--trust` pins.
pub fn root_key() -> SigningKeyPair {
    SigningKeyPair::from_bytes([1; 32])
}

/// `sha256:<hex>` of the test root key.
pub fn trust() -> String {
    root_key().key_id().0
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A catalog for `node` holding `resources`, serial `serial`, valid for a day.
pub fn catalog(node: &str, serial: u64, resources: Vec<Resource>) -> Catalog {
    let now = Timestamp(now());
    Catalog {
        document_type: DocumentType::Catalog,
        format_version: CATALOG_FORMAT_VERSION,
        node: NodeId(node.to_string()),
        serial: Serial(serial),
        compiled_at: now,
        expires_at: now.plus_secs(86_400),
        provenance: Provenance::default(),
        resources,
    }
}

/// `catalog` signed by a catalog key certified by [`root_key`].
pub fn sign(catalog: &Catalog) -> Vec<u8> {
    sign_with_root(catalog, 1)
}

/// `catalog` signed by a catalog key certified by the root key of seed `root_seed` (1 is the
/// trusted [`root_key`]; anything else is a forger's).
pub fn sign_with_root(catalog: &Catalog, root_seed: u8) -> Vec<u8> {
    let root = SigningKeyPair::from_bytes([root_seed; 32]);
    let catalog_key = SigningKeyPair::from_bytes([2; 32]);
    let now = Timestamp(now());
    let certificate = issue_certificate(
        &root,
        &catalog_key.public_bytes(),
        now.plus_secs(-60),
        now.plus_secs(86_400),
    );
    sign_catalog(catalog, &catalog_key, &certificate).expect("signing the test catalog")
}

/// A sandbox for `steward-agent run --catalog --root`: a root (with `srv/`), the agent's state
/// directory and its config, outside the root. Test files add their own helpers in `impl`
/// blocks of their own.
pub struct Sandbox {
    _dir: tempfile::TempDir,
    /// The root the agent converges.
    pub root: PathBuf,
    /// The agent's state directory.
    pub state: PathBuf,
    /// The config and the catalog files.
    pub work: PathBuf,
}

impl Sandbox {
    /// A new, empty sandbox with a default config.
    pub fn new() -> Sandbox {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let state = dir.path().join("state");
        let work = dir.path().join("work");
        std::fs::create_dir_all(root.join("srv")).unwrap();
        std::fs::create_dir_all(&work).unwrap();
        std::fs::write(work.join("agent.toml"), "# defaults\n").unwrap();
        Sandbox {
            _dir: dir,
            root,
            state,
            work,
        }
    }

    /// `path` (absolute in the root) as seen from here.
    pub fn at(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// `steward-agent ARGS` with this sandbox's config and state directory.
    pub fn agent(&self, args: &[&str]) -> Output {
        Command::new(agent_binary())
            .arg("--config")
            .arg(self.work.join("agent.toml"))
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .output()
            .unwrap()
    }

    /// `run --json --catalog` on `bytes` as the envelope, trusted by pin, as node `devvm`,
    /// beneath the root, with `extra` arguments.
    pub fn run_envelope(&self, bytes: &[u8], extra: &[&str]) -> Output {
        let file = self.work.join("catalog.json");
        std::fs::write(&file, bytes).unwrap();
        let trust = trust();
        let mut args = vec![
            "run",
            "--json",
            "--catalog",
            file.to_str().unwrap(),
            "--trust",
            &trust,
            "--node",
            "devvm",
            "--root",
            self.root.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        self.agent(&args)
    }
}
