//! The agent's state directory (default `/var/lib/steward`, 0700; every file 0600):
//!
//! | file | what |
//! |---|---|
//! | `keys/signing.key` | ed25519 seed for request signing (created on first start) |
//! | `keys/encryption.key` | X25519 secret for sealed values (created on first start) |
//! | `identity.json` | node name, server URL and pinned root fingerprint after enrollment |
//! | `accepted.json` | serial, digest and catalog key generation of the last accepted catalog (written durably *before* applying; the generation retires rotated-away catalog keys, THREATS C7) |
//! | `catalog.envelope` | the last verified envelope, secrets still sealed |
//! | `last_run_summary.json` | what `status` prints |
//! | `spool/` | reports not yet acknowledged by the server |
//! | `run.lock` | flock: one run at a time |
//!
//! Every write is temp file + fsync + rename + directory fsync, so a crash leaves the old or the
//! new file, never half of one (THREATS R5). The agent's own files are not on a path any user
//! controls, so plain `std::fs` is used here; [`crate::host::Host`] is for catalog paths.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use steward_protocol::envelope::{Accepted, SigningKeyPair};
use steward_protocol::{EncryptionKeyPair, KeyId, NodeId, RunStatus, Serial, Timestamp, Totals};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Default state directory.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/steward";

/// Who this agent is, once enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The node name the server assigned.
    pub node: NodeId,
    /// The server's base URL.
    pub server_url: String,
    /// The pinned root key fingerprint.
    pub root_key_id: KeyId,
    /// Whether the server has approved this node (false while pending).
    pub approved: bool,
}

/// The last run, for `steward-agent status` (like Puppet's `last_run_summary.yaml`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSummary {
    /// The run's id.
    pub run_id: String,
    /// When it started.
    pub started_at: Timestamp,
    /// How long it took.
    pub duration_ms: u64,
    /// The catalog serial applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<Serial>,
    /// Overall outcome.
    pub status: RunStatus,
    /// Counts.
    pub totals: Totals,
    /// Why it could not run, or the catalog source ("server", "cache", "file").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `type:name: message` of each failed resource.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failures: Vec<String>,
    /// Whether the report reached the server (else it waits in the spool).
    pub reported: bool,
}

/// An open state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens `dir`, creating it 0700 (and correcting its mode) when needed.
    pub fn open(dir: impl Into<PathBuf>) -> anyhow::Result<StateDir> {
        let dir = dir.into();
        for d in [dir.clone(), dir.join("keys"), dir.join("spool")] {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&d)
                .with_context(|| format!("creating state directory {}", d.display()))?;
            fs::set_permissions(&d, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("setting the mode of {}", d.display()))?;
        }
        Ok(StateDir { dir })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The spool directory.
    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    /// The request-signing key, created on first use.
    pub fn signing_key(&self) -> anyhow::Result<SigningKeyPair> {
        Ok(SigningKeyPair::from_bytes(
            self.key_bytes("keys/signing.key")?,
        ))
    }

    /// The sealed-value key, created on first use.
    pub fn encryption_key(&self) -> anyhow::Result<EncryptionKeyPair> {
        Ok(EncryptionKeyPair::from_bytes(
            self.key_bytes("keys/encryption.key")?,
        ))
    }

    /// Whether this host already has keys (a template must not: see `template-seal`).
    pub fn has_keys(&self) -> bool {
        self.dir.join("keys/signing.key").exists() || self.dir.join("keys/encryption.key").exists()
    }

    fn key_bytes(&self, name: &str) -> anyhow::Result<[u8; 32]> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => <[u8; 32]>::try_from(bytes.as_slice()).map_err(|_| {
                anyhow::anyhow!(
                    "{} is not a 32-byte key; remove it to make a new identity",
                    path.display()
                )
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                getrandom::getrandom(&mut bytes)
                    .map_err(|e| anyhow::anyhow!("drawing a new key: {e}"))?;
                write_durably(&path, &bytes)?;
                Ok(bytes)
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The enrollment identity, if enrolled.
    pub fn identity(&self) -> anyhow::Result<Option<Identity>> {
        self.read_json("identity.json")
    }

    /// Records the enrollment identity.
    pub fn set_identity(&self, identity: &Identity) -> anyhow::Result<()> {
        self.write_json("identity.json", identity)
    }

    /// The last accepted catalog's serial and digest.
    pub fn accepted(&self) -> anyhow::Result<Option<Accepted>> {
        self.read_json("accepted.json")
    }

    /// Persists the accepted serial and digest durably (before anything is applied).
    pub fn set_accepted(&self, accepted: &Accepted) -> anyhow::Result<()> {
        self.write_json("accepted.json", accepted)
    }

    /// The cached envelope of the last verified catalog.
    pub fn cached_envelope(&self) -> anyhow::Result<Option<Vec<u8>>> {
        let path = self.dir.join("catalog.envelope");
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Caches a verified envelope (secrets stay sealed in it).
    pub fn set_cached_envelope(&self, bytes: &[u8]) -> anyhow::Result<()> {
        write_durably(&self.dir.join("catalog.envelope"), bytes)
    }

    /// The last run's summary.
    pub fn summary(&self) -> anyhow::Result<Option<RunSummary>> {
        self.read_json("last_run_summary.json")
    }

    /// Records the last run's summary.
    pub fn set_summary(&self, summary: &RunSummary) -> anyhow::Result<()> {
        self.write_json("last_run_summary.json", summary)
    }

    /// Removes the identity, keys, accepted serial, cached catalog, spool and summary: what
    /// `template-seal` does so no clone shares them.
    pub fn wipe(&self) -> anyhow::Result<()> {
        for name in [
            "identity.json",
            "accepted.json",
            "catalog.envelope",
            "last_run_summary.json",
            "keys/signing.key",
            "keys/encryption.key",
        ] {
            remove_if_present(&self.dir.join(name))?;
        }
        for entry in fs::read_dir(self.spool_dir()).context("reading the spool")? {
            remove_if_present(&entry?.path())?;
        }
        sync_dir(&self.dir)
    }

    /// Takes the run lock, waiting up to `wait` for a run in progress to finish.
    pub fn lock(&self, wait: Duration) -> anyhow::Result<RunLock> {
        let path = self.dir.join("run.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let deadline = Instant::now() + wait;
        loop {
            match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => return Ok(RunLock { _file: file }),
                Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
                    if Instant::now() >= deadline {
                        bail!(
                            "another run holds {} (waited {}s)",
                            path.display(),
                            wait.as_secs()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err(e) => return Err(io::Error::from(e)).context("locking the run lock"),
            }
        }
    }

    fn read_json<T: DeserializeOwned>(&self, name: &str) -> anyhow::Result<Option<T>> {
        let path = self.dir.join(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .with_context(|| format!("parsing {}", path.display())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    fn write_json<T: Serialize>(&self, name: &str, value: &T) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(value).context("serializing state")?;
        write_durably(&self.dir.join(name), &bytes)
    }
}

/// Holds the run lock until dropped.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
}

/// Writes `bytes` to `path` (0600) through a temp file, fsync, rename and directory fsync.
pub fn write_durably(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().context("state file has no directory")?;
    let name = path.file_name().context("state file has no name")?;
    let temp = dir.join(format!(
        ".{}.tmp.{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        sync_dir(dir).map_err(io::Error::other)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result.with_context(|| format!("writing {}", path.display()))
}

fn sync_dir(dir: &Path) -> anyhow::Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))
}

fn remove_if_present(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_once_0600_and_read_back() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(t.path().join("state")).unwrap();
        assert!(!state.has_keys());
        let a = state.signing_key().unwrap().public_bytes();
        let b = state.signing_key().unwrap().public_bytes();
        assert_eq!(a, b);
        let e = state.encryption_key().unwrap().public_bytes();
        assert_eq!(e, state.encryption_key().unwrap().public_bytes());
        for f in ["keys/signing.key", "keys/encryption.key"] {
            let mode = fs::metadata(state.path().join(f))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{f}");
        }
        let mode = fs::metadata(state.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        state.wipe().unwrap();
        assert!(!state.has_keys());
        assert_ne!(state.signing_key().unwrap().public_bytes(), a);
    }

    #[test]
    fn the_run_lock_is_exclusive_and_waits_a_bound() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(t.path()).unwrap();
        let held = state.lock(Duration::ZERO).unwrap();
        let err = state.lock(Duration::from_millis(150)).unwrap_err();
        assert!(err.to_string().contains("another run holds"), "{err}");
        drop(held);
        state.lock(Duration::ZERO).unwrap();
    }

    #[test]
    fn accepted_round_trips() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(t.path()).unwrap();
        assert_eq!(state.accepted().unwrap(), None);
        let a = Accepted {
            serial: Serial(7),
            digest: "sha256:ab".into(),
            key_generation: 3,
        };
        state.set_accepted(&a).unwrap();
        assert_eq!(state.accepted().unwrap(), Some(a));
    }

    /// THREATS C7 across an upgrade: an `accepted.json` written before key generations reads
    /// as generation 0 (every certificate still accepted), and the generation is written back.
    #[test]
    fn accepted_from_before_key_generations_reads_as_generation_zero() {
        let t = tempfile::tempdir().unwrap();
        let state = StateDir::open(t.path()).unwrap();
        fs::write(
            t.path().join("accepted.json"),
            r#"{"serial": 7, "digest": "sha256:ab"}"#,
        )
        .unwrap();
        let old = state.accepted().unwrap().unwrap();
        assert_eq!((old.serial, old.key_generation), (Serial(7), 0));
        let newer = Accepted {
            key_generation: 1_767_225_600,
            ..old
        };
        state.set_accepted(&newer).unwrap();
        let text = fs::read_to_string(t.path().join("accepted.json")).unwrap();
        assert!(text.contains("\"key_generation\": 1767225600"), "{text}");
        assert_eq!(state.accepted().unwrap(), Some(newer));
    }
}
