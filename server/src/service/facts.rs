//! Storing a node's facts without a write per request: every catalog request and report carries
//! the host's facts, and they rarely change. [`FactsRecorder::store`] writes them when they
//! differ from the last write of this process, and volatile facts (uptime, free disk space),
//! which differ at every request, at most once per [`VOLATILE_RESOLUTION_SECS`], like
//! `last_seen_at`. After a restart, the first request of each node writes once.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};

use steward_protocol::{Facts, NodeId, Timestamp};

use crate::db::{self, Db, DbError};

/// How stale volatile facts (uptime, free disk space) may get before a request rewrites them.
pub const VOLATILE_RESOLUTION_SECS: i64 = 60;

/// What this process last wrote for each node.
#[derive(Debug, Default)]
pub struct FactsRecorder {
    hasher: RandomState,
    written: Mutex<HashMap<NodeId, Written>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    /// Hash of the facts without the volatile ones.
    stable: u64,
    /// Hash of the volatile facts (free disk, uptime).
    volatile: u64,
    at: i64,
}

impl FactsRecorder {
    /// Stores `facts` as `node`'s latest (through the relaxed pool: bookkeeping) unless they
    /// are what was last stored, or differ only in volatile facts stored less than
    /// [`VOLATILE_RESOLUTION_SECS`] ago.
    pub async fn store(
        &self,
        db: &Db,
        node: &NodeId,
        facts: &Facts,
        now: Timestamp,
    ) -> Result<(), DbError> {
        let (stable, volatile) = self.hashes(facts);
        let due = match self.lock().get(node) {
            None => true,
            Some(last) => {
                last.stable != stable
                    || (last.volatile != volatile && now.0 - last.at >= VOLATILE_RESOLUTION_SECS)
            }
        };
        if !due {
            return Ok(());
        }
        db::nodes::set_facts(db.relaxed(), node, facts).await?;
        self.lock().insert(
            node.clone(),
            Written {
                stable,
                volatile,
                at: now.0,
            },
        );
        Ok(())
    }

    /// Hashes of the facts without the volatile ones, and of the volatile ones. The pattern names
    /// every field, so a new fact does not compile until it is sorted in here.
    fn hashes(&self, facts: &Facts) -> (u64, u64) {
        let Facts {
            hostname,
            machine_id,
            os,
            kernel,
            cpus,
            memory_bytes,
            swap_bytes,
            disk_total_bytes,
            disk_free_bytes,
            uptime_secs,
            agent_version,
            extra,
        } = facts;
        let stable = (
            hostname,
            machine_id,
            os,
            kernel,
            cpus,
            memory_bytes,
            swap_bytes,
            disk_total_bytes,
            agent_version,
            extra,
        );
        (
            self.hasher.hash_one(stable),
            self.hasher.hash_one((disk_free_bytes, uptime_secs)),
        )
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<NodeId, Written>> {
        self.written.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use steward_protocol::EnrollmentStatus;

    use super::*;
    use crate::db::nodes::{self, NewNode};

    const T0: i64 = 1_800_000_000;

    #[tokio::test]
    async fn facts_are_written_when_they_change_and_volatile_ones_once_a_minute() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("steward.db")).await.unwrap();
        let node = NodeId("devvm".into());
        nodes::insert_pending(
            &db,
            &NewNode {
                name: node.clone(),
                class: None,
                machine_id: None,
            },
            Timestamp(T0),
        )
        .await
        .unwrap();
        nodes::set_status(&db, &node, EnrollmentStatus::Approved, Timestamp(T0))
            .await
            .unwrap();
        let recorder = FactsRecorder::default();
        let stored = || async { nodes::get_facts(&db, &node).await.unwrap().unwrap() };
        let mut facts = Facts {
            os: Some("Debian 13".into()),
            uptime_secs: Some(10),
            ..Facts::default()
        };
        recorder
            .store(&db, &node, &facts, Timestamp(T0))
            .await
            .unwrap();
        assert_eq!(stored().await, facts);

        // Only a volatile fact moved, within the minute: not written.
        let first = facts.clone();
        facts.uptime_secs = Some(40);
        recorder
            .store(&db, &node, &facts, Timestamp(T0 + 30))
            .await
            .unwrap();
        assert_eq!(stored().await, first);
        // Another fact moved: written at once, volatile ones with it.
        facts.os = Some("Debian 14".into());
        recorder
            .store(&db, &node, &facts, Timestamp(T0 + 31))
            .await
            .unwrap();
        assert_eq!(stored().await, facts);
        // A minute after the last write, volatile changes are written too.
        facts.uptime_secs = Some(100);
        recorder
            .store(&db, &node, &facts, Timestamp(T0 + 91))
            .await
            .unwrap();
        assert_eq!(stored().await, facts);
        db.close().await;
    }
}
