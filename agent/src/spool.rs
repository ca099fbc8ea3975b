//! The report spool: every run report is written here (0600, durably) before it is sent, sent
//! oldest first, and removed only on the server's acknowledgement, so a crash or an outage
//! loses nothing (THREATS R13). The spool is bounded by count and bytes; when full, the oldest
//! reports go first and the newest is always kept.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use steward_protocol::RunReport;

use crate::state::write_durably;

/// Bounds of the spool.
#[derive(Debug, Clone, Copy)]
pub struct SpoolLimits {
    /// Most reports kept.
    pub max_reports: usize,
    /// Most bytes kept.
    pub max_bytes: u64,
}

impl Default for SpoolLimits {
    fn default() -> Self {
        SpoolLimits {
            max_reports: 1000,
            max_bytes: 64 * 1024 * 1024,
        }
    }
}

/// A spool directory.
#[derive(Debug, Clone)]
pub struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
}

/// One spooled report.
#[derive(Debug, Clone)]
pub struct Spooled {
    /// Its file.
    pub path: PathBuf,
    /// Its bytes (the exact body to send).
    pub bytes: Vec<u8>,
}

impl Spool {
    /// The spool in `dir` (which exists, 0700).
    pub fn new(dir: impl Into<PathBuf>, limits: SpoolLimits) -> Spool {
        Spool {
            dir: dir.into(),
            limits,
        }
    }

    /// Writes `report` durably, then trims the oldest reports beyond the bounds (never this
    /// one). Returns the dropped count.
    pub fn add(&self, report: &RunReport) -> anyhow::Result<usize> {
        let bytes = serde_json::to_vec(report).context("serializing the report")?;
        // Names sort by spooling time (fixed-width nanoseconds), then run id.
        let spooled_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{spooled_at:020}-{}.json", report.run_id.0);
        write_durably(&self.dir.join(&name), &bytes)?;
        self.trim(&name)
    }

    /// The spooled reports' files, oldest first.
    pub fn list(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut files: Vec<PathBuf> = fs::read_dir(&self.dir)
            .with_context(|| format!("reading {}", self.dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.extension().is_some_and(|e| e == "json")
                    && !p
                        .file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            })
            .collect();
        files.sort();
        Ok(files)
    }

    /// Reads one spooled report.
    pub fn read(&self, path: &Path) -> anyhow::Result<Spooled> {
        Ok(Spooled {
            path: path.to_path_buf(),
            bytes: fs::read(path).with_context(|| format!("reading {}", path.display()))?,
        })
    }

    /// Removes a report the server acknowledged.
    pub fn remove(&self, spooled: &Spooled) -> anyhow::Result<()> {
        fs::remove_file(&spooled.path)
            .with_context(|| format!("removing {}", spooled.path.display()))
    }

    fn trim(&self, newest: &str) -> anyhow::Result<usize> {
        let files = self.list()?;
        let mut sizes: Vec<(PathBuf, u64)> = files
            .into_iter()
            .map(|p| {
                let len = fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                (p, len)
            })
            .collect();
        let mut total: u64 = sizes.iter().map(|(_, l)| l).sum();
        let mut dropped = 0;
        while sizes.len() > 1
            && (sizes.len() > self.limits.max_reports || total > self.limits.max_bytes)
        {
            let (path, len) = sizes.remove(0);
            if path.file_name().is_some_and(|n| n == newest) {
                // The newest sorts first only with a clock jump; keep it and drop the next.
                sizes.push((path, len));
                continue;
            }
            fs::remove_file(&path).with_context(|| format!("trimming {}", path.display()))?;
            total -= len;
            dropped += 1;
        }
        Ok(dropped)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_protocol::{Facts, NodeId, RunId, RunStatus, Timestamp, Totals};

    fn report(n: u8, started: i64) -> RunReport {
        RunReport {
            run_id: RunId::from_random_bytes([n; 16]),
            node: NodeId("devvm".into()),
            catalog_serial: None,
            started_at: Timestamp(started),
            finished_at: Timestamp(started),
            duration_ms: 5,
            noop: false,
            status: RunStatus::Unchanged,
            message: None,
            agent_version: "test".into(),
            facts: Facts::default(),
            events: vec![],
            totals: Totals::default(),
        }
    }

    #[test]
    fn reports_are_listed_in_spooling_order_and_removed_on_ack() {
        let t = tempfile::tempdir().unwrap();
        let spool = Spool::new(t.path(), SpoolLimits::default());
        spool.add(&report(2, 200)).unwrap();
        spool.add(&report(1, 100)).unwrap();
        let files = spool.list().unwrap();
        assert_eq!(files.len(), 2);
        let first = spool.read(&files[0]).unwrap();
        let parsed: RunReport = serde_json::from_slice(&first.bytes).unwrap();
        // Spooling order, not the reports' own clocks (which may jump).
        assert_eq!(parsed.started_at, Timestamp(200));
        spool.remove(&first).unwrap();
        assert_eq!(spool.list().unwrap().len(), 1);
    }

    #[test]
    fn a_full_spool_drops_the_oldest_and_never_the_newest() {
        let t = tempfile::tempdir().unwrap();
        let spool = Spool::new(
            t.path(),
            SpoolLimits {
                max_reports: 3,
                max_bytes: u64::MAX,
            },
        );
        for i in 0..5u8 {
            spool.add(&report(i, 100 + i64::from(i))).unwrap();
        }
        let kept: Vec<i64> = spool
            .list()
            .unwrap()
            .iter()
            .map(|p| {
                let r: RunReport = serde_json::from_slice(&spool.read(p).unwrap().bytes).unwrap();
                r.started_at.0
            })
            .collect();
        assert_eq!(kept, [102, 103, 104]);
        // A byte bound smaller than one report still keeps the newest.
        let tiny = Spool::new(
            t.path(),
            SpoolLimits {
                max_reports: 100,
                max_bytes: 1,
            },
        );
        tiny.add(&report(9, 50)).unwrap();
        let left = tiny.list().unwrap();
        assert_eq!(left.len(), 1);
        let r: RunReport = serde_json::from_slice(&tiny.read(&left[0]).unwrap().bytes).unwrap();
        assert_eq!(r.started_at, Timestamp(50), "the newest report survives");
    }
}
