//! Facts about the host: hostname, OS, kernel, CPUs, memory, swap, disk, machine-id, uptime,
//! agent version. Each is optional: one that cannot be read is left out, never guessed.
//!
//! Files that describe the managed system (`/etc/hostname`, `/etc/os-release`,
//! `/etc/machine-id`) are read beneath the root; kernel-level ones (`/proc`, `statvfs`) are of
//! the machine the agent runs on.

use std::path::Path;

use steward_protocol::Facts;

/// The agent's version string.
pub const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Gathers the facts of the system at `root`.
pub fn gather(root: &Path) -> Facts {
    let read = |p: &str| std::fs::read_to_string(root.join(p.trim_start_matches('/'))).ok();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let disk = rustix::fs::statvfs(root).ok();
    Facts {
        hostname: read("/etc/hostname")
            .map(|h| h.trim().to_string())
            .filter(|h| !h.is_empty())
            .or_else(|| {
                rustix::system::uname()
                    .nodename()
                    .to_str()
                    .ok()
                    .map(str::to_string)
            }),
        machine_id: read("/etc/machine-id")
            .map(|m| m.trim().to_string())
            .filter(|m| m.len() == 32 && m.bytes().all(|b| b.is_ascii_hexdigit())),
        os: read("/etc/os-release").and_then(|t| os_release_name(&t)),
        kernel: rustix::system::uname()
            .release()
            .to_str()
            .ok()
            .map(str::to_string),
        cpus: std::thread::available_parallelism()
            .ok()
            .and_then(|n| u32::try_from(n.get()).ok()),
        memory_bytes: meminfo_kib(&meminfo, "MemTotal").map(|k| k * 1024),
        swap_bytes: meminfo_kib(&meminfo, "SwapTotal").map(|k| k * 1024),
        disk_total_bytes: disk.as_ref().map(|d| d.f_blocks * d.f_frsize),
        disk_free_bytes: disk.as_ref().map(|d| d.f_bavail * d.f_frsize),
        uptime_secs: std::fs::read_to_string("/proc/uptime")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
            .map(|s| s as u64),
        agent_version: Some(AGENT_VERSION.to_string()),
        extra: Default::default(),
    }
}

fn os_release_name(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

fn meminfo_kib(text: &str, key: &str) -> Option<u64> {
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_roots_identity_files() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/hostname"), "devvm\n").unwrap();
        std::fs::write(
            t.path().join("etc/machine-id"),
            "0123456789abcdef0123456789abcdef\n",
        )
        .unwrap();
        std::fs::write(
            t.path().join("etc/os-release"),
            "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
        )
        .unwrap();
        let f = gather(t.path());
        assert_eq!(f.hostname.as_deref(), Some("devvm"));
        assert_eq!(
            f.machine_id.as_deref(),
            Some("0123456789abcdef0123456789abcdef")
        );
        assert_eq!(f.os.as_deref(), Some("Debian GNU/Linux 12 (bookworm)"));
        assert!(f.memory_bytes.unwrap() > 0);
        assert!(f.disk_total_bytes.unwrap() > 0);
        assert_eq!(f.agent_version.as_deref(), Some(AGENT_VERSION));
    }

    #[test]
    fn a_malformed_machine_id_is_left_out() {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(t.path().join("etc/machine-id"), "uninitialized\n").unwrap();
        assert_eq!(gather(t.path()).machine_id, None);
    }

    #[test]
    fn meminfo_parsing() {
        let t = "MemTotal:       16318852 kB\nSwapTotal:        2097148 kB\n";
        assert_eq!(meminfo_kib(t, "MemTotal"), Some(16318852));
        assert_eq!(meminfo_kib(t, "SwapTotal"), Some(2097148));
        assert_eq!(meminfo_kib(t, "Nope"), None);
    }
}
