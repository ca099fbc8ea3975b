//! Run reports: what an agent did, per resource.

use serde::{Deserialize, Serialize};

use crate::facts::Facts;
use crate::ids::{NodeId, ResourceId, RunId, Serial, Timestamp};

/// Outcome of one resource in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResourceStatus {
    /// Already in the desired state; nothing written.
    Unchanged,
    /// Changed to the desired state.
    Changed,
    /// `--noop`: would have changed.
    WouldChange,
    /// Could not be converged.
    Failed,
    /// Not attempted because something it requires failed (or the run was stopped).
    Skipped,
    /// Left as found on purpose: the object existed before Steward managed it and differs from
    /// the catalog in what the site does not enforce (a `git_clone` path that is someone's own
    /// symlink, a `replace: if_absent` file with the person's own mode). Not a failure, not a
    /// change; `message` says what was kept and why.
    Kept,
    /// A change that is due but waits for a condition, e.g. a `restart: when_idle` unit whose
    /// user has a session open. Persisted by the agent and retried; `message` says since when
    /// and why.
    Deferred,
}

impl ResourceStatus {
    /// Every status, in display order.
    pub const ALL: [ResourceStatus; 7] = [
        ResourceStatus::Unchanged,
        ResourceStatus::Changed,
        ResourceStatus::WouldChange,
        ResourceStatus::Failed,
        ResourceStatus::Skipped,
        ResourceStatus::Kept,
        ResourceStatus::Deferred,
    ];

    /// The wire name (`would_change`, ...), also used in the database and metrics labels.
    pub fn as_str(self) -> &'static str {
        match self {
            ResourceStatus::Unchanged => "unchanged",
            ResourceStatus::Changed => "changed",
            ResourceStatus::WouldChange => "would_change",
            ResourceStatus::Failed => "failed",
            ResourceStatus::Skipped => "skipped",
            ResourceStatus::Kept => "kept",
            ResourceStatus::Deferred => "deferred",
        }
    }
}

impl std::str::FromStr for ResourceStatus {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ResourceStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown resource status {s:?}"))
    }
}

/// One resource's event in a run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourceEvent {
    /// Which resource.
    pub resource: ResourceId,
    /// What happened.
    pub status: ResourceStatus,
    /// Human message (error text, skip reason, what changed). Never sensitive content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Unified diff or field changes; absent for sensitive content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Time spent on this resource.
    pub duration_ms: u64,
    /// The change repaired drift (the resource existed before but had diverged), as opposed to
    /// an intentional change brought by a new catalog.
    #[serde(default)]
    pub corrective: bool,
    /// Divergence the site does not ask to repair, observed and reported only: e.g. an account
    /// holding privileged groups beyond what its tier grants. Never sensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift: Option<String>,
}

/// Overall outcome of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Nothing changed, nothing failed.
    Unchanged,
    /// Something changed, nothing failed.
    Changed,
    /// `--noop` run.
    Noop,
    /// At least one resource failed.
    Failed,
    /// The run could not start (no valid catalog, catalog expired, verification refused).
    Error,
}

/// Counts per status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Totals {
    /// Resources in the catalog.
    pub resources: u32,
    /// Unchanged.
    pub unchanged: u32,
    /// Changed.
    pub changed: u32,
    /// Would change (noop).
    pub would_change: u32,
    /// Failed.
    pub failed: u32,
    /// Skipped.
    pub skipped: u32,
    /// Left as found on purpose (pre-existing state the site does not enforce).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub kept: u32,
    /// Deferred (e.g. a restart waiting for its user to go idle).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deferred: u32,
    /// Events that carry a drift notice (any status).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub drift: u32,
}

// Absent counts are not serialized, so a report without the newer outcomes is byte-for-byte
// what an older server accepts.
fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Totals {
    /// Counts the events' statuses.
    pub fn of(events: &[ResourceEvent]) -> Totals {
        let mut t = Totals {
            resources: u32::try_from(events.len()).unwrap_or(u32::MAX),
            ..Totals::default()
        };
        for e in events {
            *t.slot(e.status) += 1;
            if e.drift.is_some() {
                t.drift += 1;
            }
        }
        t
    }

    /// The count of events with `status`.
    pub fn count(&self, status: ResourceStatus) -> u32 {
        let mut copy = *self;
        *copy.slot(status)
    }

    fn slot(&mut self, status: ResourceStatus) -> &mut u32 {
        match status {
            ResourceStatus::Unchanged => &mut self.unchanged,
            ResourceStatus::Changed => &mut self.changed,
            ResourceStatus::WouldChange => &mut self.would_change,
            ResourceStatus::Failed => &mut self.failed,
            ResourceStatus::Skipped => &mut self.skipped,
            ResourceStatus::Kept => &mut self.kept,
            ResourceStatus::Deferred => &mut self.deferred,
        }
    }

    /// Puppet-style detailed exit code: 0 nothing, 2 changes, 4 failures, 6 both. Kept,
    /// deferred and drift are notices: they do not change the code.
    pub fn exit_code(&self) -> i32 {
        let changes = self.changed > 0 || self.would_change > 0;
        let failures = self.failed > 0;
        i32::from(changes) * 2 + i32::from(failures) * 4
    }
}

/// A run report, sent by the agent (spooled until the server acknowledges it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunReport {
    /// Chosen by the agent; resubmission with the same id is idempotent.
    pub run_id: RunId,
    /// The reporting node; must match the identity of the request's signing key.
    pub node: NodeId,
    /// Serial of the catalog applied (absent when none could be).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catalog_serial: Option<Serial>,
    /// Run start.
    pub started_at: Timestamp,
    /// Run end.
    pub finished_at: Timestamp,
    /// Wall-clock duration in milliseconds.
    pub duration_ms: u64,
    /// Whether this was a `--noop` run.
    pub noop: bool,
    /// Overall outcome.
    pub status: RunStatus,
    /// Run-level message (why it could not run, "catalog expired", clock skew...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Agent version.
    pub agent_version: String,
    /// Facts at run time.
    pub facts: Facts,
    /// Per-resource events, in apply order.
    pub events: Vec<ResourceEvent>,
    /// Counts.
    pub totals: Totals,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(status: ResourceStatus) -> ResourceEvent {
        ResourceEvent {
            resource: ResourceId::new("package", "git"),
            status,
            message: None,
            diff: None,
            duration_ms: 1,
            corrective: false,
            drift: None,
        }
    }

    #[test]
    fn status_names_round_trip_and_match_serde() {
        for status in ResourceStatus::ALL {
            assert_eq!(status.as_str().parse::<ResourceStatus>(), Ok(status));
            assert_eq!(
                serde_json::to_string(&status).unwrap(),
                format!("\"{}\"", status.as_str())
            );
        }
        assert!("bogus".parse::<ResourceStatus>().is_err());
    }

    #[test]
    fn notices_do_not_change_the_exit_code_and_are_not_serialized_when_absent() {
        let mut drifted = event(ResourceStatus::Unchanged);
        drifted.drift = Some("holds sudo beyond its tier".into());
        let events = vec![
            event(ResourceStatus::Kept),
            event(ResourceStatus::Deferred),
            drifted,
        ];
        let t = Totals::of(&events);
        assert_eq!((t.kept, t.deferred, t.drift, t.unchanged), (1, 1, 1, 1));
        assert_eq!(t.exit_code(), 0);
        let plain =
            serde_json::to_string(&Totals::of(&[event(ResourceStatus::Unchanged)])).unwrap();
        assert!(
            !plain.contains("kept") && !plain.contains("drift"),
            "{plain}"
        );
    }

    #[test]
    fn totals_and_detailed_exit_codes() {
        use ResourceStatus::*;
        let cases = [
            (vec![Unchanged], 0),
            (vec![Unchanged, Changed], 2),
            (vec![Failed, Skipped], 4),
            (vec![Changed, Failed], 6),
            (vec![WouldChange], 2),
        ];
        for (statuses, code) in cases {
            let events: Vec<_> = statuses.into_iter().map(event).collect();
            assert_eq!(Totals::of(&events).exit_code(), code, "{events:?}");
        }
    }
}
