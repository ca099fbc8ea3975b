//! `/etc/steward/agent.toml`: where the server is, how to join it, how often to run.
//!
//! ```toml
//! # Written by cloud-init on a template clone.
//! join = "steward:v1:<token>:<root fingerprint>:https://steward.example:8443"
//! # server_url = "https://steward.example:8443"   # defaults to the join string's
//! # ca_file = "/etc/steward/server-ca.pem"         # the only CAs trusted for the server's TLS
//! interval_secs = 1800
//! splay_limit_secs = 600
//! # idle_check_secs = 60   # while a restart waits for its user to go idle, check this often
//! state_dir = "/var/lib/steward"
//! ```

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Deserialize;

use crate::state::DEFAULT_STATE_DIR;

/// Default configuration file.
pub const DEFAULT_CONFIG: &str = "/etc/steward/agent.toml";

/// The agent's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    /// Join string (`steward:v1:...`) used to enroll; it also pins the root key.
    pub join: Option<String>,
    /// A file holding the join string instead (kept out of world-readable config).
    pub join_file: Option<PathBuf>,
    /// Server base URL (defaults to the one in the join string).
    pub server_url: Option<String>,
    /// PEM file with the CA certificates to trust for the server's TLS certificate. When set,
    /// only these are trusted (not the compiled-in public roots): TLS trust is pinned.
    pub ca_file: Option<PathBuf>,
    /// Seconds between runs.
    pub interval_secs: u64,
    /// Upper bound of the per-node splay added to every interval.
    pub splay_limit_secs: u64,
    /// State directory.
    pub state_dir: PathBuf,
    /// A run stops starting new resources after this many seconds.
    pub run_timeout_secs: u64,
    /// Timeout of each tool a provider runs.
    pub command_timeout_secs: u64,
    /// How long a run waits for another run's lock before giving up.
    pub lock_wait_secs: u64,
    /// Longest single long-poll request.
    pub wait_secs: u64,
    /// Most reports kept in the spool.
    pub spool_max_reports: usize,
    /// Most bytes kept in the spool.
    pub spool_max_bytes: u64,
    /// While a restart is deferred until its user is idle, the daemon checks this often
    /// (without a run) whether it can happen now.
    pub idle_check_secs: u64,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            join: None,
            join_file: None,
            server_url: None,
            ca_file: None,
            interval_secs: 1800,
            splay_limit_secs: 600,
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            run_timeout_secs: 3600,
            command_timeout_secs: 600,
            lock_wait_secs: 60,
            wait_secs: 300,
            spool_max_reports: 1000,
            spool_max_bytes: 64 * 1024 * 1024,
            idle_check_secs: 60,
        }
    }
}

impl AgentConfig {
    /// Reads `path`; a missing file at the default location means all defaults.
    pub fn load(path: &Path, explicit: bool) -> anyhow::Result<AgentConfig> {
        match std::fs::read_to_string(path) {
            Ok(text) => toml::from_str(&text).with_context(|| format!("in {}", path.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                Ok(AgentConfig::default())
            }
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// The join string, from `join` or `join_file`.
    pub fn join_text(&self) -> anyhow::Result<Option<String>> {
        if let Some(j) = &self.join {
            return Ok(Some(j.trim().to_string()));
        }
        match &self.join_file {
            Some(p) => std::fs::read_to_string(p)
                .map(|t| Some(t.trim().to_string()))
                .with_context(|| format!("reading the join file {}", p.display())),
            None => Ok(None),
        }
    }

    /// The CA file's bytes, if configured.
    pub fn ca_pem(&self) -> anyhow::Result<Option<Vec<u8>>> {
        self.ca_file
            .as_ref()
            .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
            .transpose()
    }

    /// This node's splay: a fixed fraction of the limit derived from the node name, so a fleet
    /// spreads out and each host keeps its own slot.
    pub fn splay_secs(&self, node: &str) -> u64 {
        use sha2::{Digest, Sha256};
        if self.splay_limit_secs == 0 {
            return 0;
        }
        let digest = Sha256::digest(node.as_bytes());
        let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
        n % (self.splay_limit_secs + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_config_and_refuses_unknown_keys() {
        let c: AgentConfig =
            toml::from_str("join = \"steward:v1:x\"\ninterval_secs = 60\n").unwrap();
        assert_eq!(c.interval_secs, 60);
        assert_eq!(c.splay_limit_secs, 600);
        let err = toml::from_str::<AgentConfig>("intervall = 60\n").unwrap_err();
        assert!(err.to_string().contains("intervall"), "{err}");
    }

    #[test]
    fn splay_is_deterministic_bounded_and_spread() {
        let c = AgentConfig::default();
        assert_eq!(c.splay_secs("devvm"), c.splay_secs("devvm"));
        let values: std::collections::BTreeSet<u64> =
            (0..50).map(|i| c.splay_secs(&format!("host{i}"))).collect();
        assert!(values.iter().all(|&v| v <= 600));
        assert!(values.len() > 40, "splay spreads hosts: {values:?}");
        let none = AgentConfig {
            splay_limit_secs: 0,
            ..AgentConfig::default()
        };
        assert_eq!(none.splay_secs("devvm"), 0);
    }
}
