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
}

impl Totals {
    /// Counts the events' statuses.
    pub fn of(events: &[ResourceEvent]) -> Totals {
        let mut t = Totals {
            resources: u32::try_from(events.len()).unwrap_or(u32::MAX),
            ..Totals::default()
        };
        for e in events {
            let slot = match e.status {
                ResourceStatus::Unchanged => &mut t.unchanged,
                ResourceStatus::Changed => &mut t.changed,
                ResourceStatus::WouldChange => &mut t.would_change,
                ResourceStatus::Failed => &mut t.failed,
                ResourceStatus::Skipped => &mut t.skipped,
            };
            *slot += 1;
        }
        t
    }

    /// Puppet-style detailed exit code: 0 nothing, 2 changes, 4 failures, 6 both.
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
        }
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
