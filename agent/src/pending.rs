//! Restarts that wait for a user to go idle (`restart: when_idle` services), kept across runs.
//!
//! When a `when_idle` unit's restart is due (something it subscribes to changed, or an
//! earlier run deferred it) while its user is **active**, the service provider does not
//! restart it: it records `{unit, user, since, reason, max_defer_secs}` here and reports the
//! resource `deferred`. "Active" is [`crate::sessions::activity`]: the user has a logind
//! session of the root that is not closing (`/run/systemd/sessions/*`), or a process whose
//! root is the managed root with a controlling terminal that is not inside a detached
//! tmux/screen/zellij pane (an SSH or ttyd shell, an attached tmux client). A user with no
//! account is idle.
//!
//! **Retry rule.** A record is retried at every run (a pending record makes the restart due
//! even when nothing changed in that run) and, by the daemon, every `idle_check_secs` of its
//! configuration (default 60) while any record exists: as soon as a recorded user is idle
//! or a record's `max_defer_secs` has passed since its first deferral (`since`), the daemon
//! starts a run at once, so the restart happens within about a minute of the user going
//! idle rather than at the next interval. The restart then removes the record; past
//! `max_defer_secs` it happens even though the user is active, reported loudly. A unit that
//! is not running needs no deferral (it is started), and a unit that should be stopped drops
//! its record. After each run [`retain`] drops records of units that are no longer
//! `when_idle` services in the catalog. Under noop nothing here is written.
//!
//! The records live beneath the managed root, in [`PATH`] (one JSON document, written
//! atomically through [`Host`], `0600 root:root`; the directory is created `0700 root:root`
//! when missing).

use serde::{Deserialize, Serialize};
use steward_protocol::{Catalog, Mode, ResourceSpec, Restart};

use crate::host::{FileState, Host};
use crate::sessions::{self, Activity};

/// Where the records are kept, beneath the managed root.
pub const PATH: &str = "/var/lib/steward/pending-restarts.json";
const DIR: &str = "/var/lib/steward";

/// One deferred restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    /// The unit, e.g. `t3-serve@emo.service`.
    pub unit: String,
    /// Whose activity holds it back.
    pub user: String,
    /// First deferral, seconds since the epoch (kept while it stays deferred).
    pub since: i64,
    /// Why it was last deferred (the user's activity, in a few words).
    pub reason: String,
    /// The catalog's bound: after this many seconds since `since` the restart is forced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_defer_secs: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    pending: Vec<Record>,
}

/// Every pending record (none when the file does not exist).
pub fn load(host: &Host) -> anyhow::Result<Vec<Record>> {
    match host.observe_file(PATH)? {
        FileState::Absent => Ok(Vec::new()),
        FileState::Regular(file) => {
            let bytes = file
                .content
                .ok_or_else(|| anyhow::anyhow!("{PATH} is too large"))?;
            let doc: Document = serde_json::from_slice(&bytes)
                .map_err(|e| anyhow::anyhow!("{PATH} is not a pending-restart list: {e}"))?;
            Ok(doc.pending)
        }
        FileState::Other { kind, .. } => {
            anyhow::bail!("{PATH} is a {kind:?}, not a regular file")
        }
    }
}

/// The record of `unit`, if any.
pub fn get(host: &Host, unit: &str) -> anyhow::Result<Option<Record>> {
    Ok(load(host)?.into_iter().find(|r| r.unit == unit))
}

/// Adds or replaces the record of `record.unit`.
pub fn put(host: &Host, record: Record) -> anyhow::Result<()> {
    let mut all = load(host)?;
    all.retain(|r| r.unit != record.unit);
    all.push(record);
    save(host, &all)
}

/// Removes the record of `unit`; whether there was one.
pub fn remove(host: &Host, unit: &str) -> anyhow::Result<bool> {
    let mut all = load(host)?;
    let before = all.len();
    all.retain(|r| r.unit != unit);
    if all.len() == before {
        return Ok(false);
    }
    save(host, &all)?;
    Ok(true)
}

/// Drops the records of units that are not `restart: when_idle` services of `catalog` (gone
/// from the catalog, or now restarted immediately); returns what was dropped. Call after the
/// catalog was applied, never under noop.
pub fn retain(host: &Host, catalog: &Catalog) -> anyhow::Result<Vec<Record>> {
    let all = load(host)?;
    let (kept, dropped): (Vec<Record>, Vec<Record>) = all
        .into_iter()
        .partition(|r| is_when_idle(catalog, &r.unit));
    if !dropped.is_empty() {
        save(host, &kept)?;
    }
    Ok(dropped)
}

fn is_when_idle(catalog: &Catalog, unit: &str) -> bool {
    catalog.resources.iter().any(|r| {
        matches!(&r.spec, ResourceSpec::Service(s)
            if s.name == unit && matches!(s.restart, Restart::WhenIdle { .. }))
    })
}

fn save(host: &Host, records: &[Record]) -> anyhow::Result<()> {
    if let crate::host::DirState::Absent = host.observe_dir(DIR)? {
        host.ensure_dir(DIR, Mode(0o700), 0, 0)?;
    }
    let mut bytes = serde_json::to_vec_pretty(&Document {
        pending: records.to_vec(),
    })?;
    bytes.push(b'\n');
    host.write_file_atomic(PATH, &bytes, Mode(0o600), 0, 0)?;
    Ok(())
}

/// What to do about a due restart of a `when_idle` unit: the one rule, used by the service
/// provider and by the daemon's check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// The user is idle: restart now.
    Restart,
    /// The user is active: wait. `since` is the first deferral.
    Defer {
        /// First deferral.
        since: i64,
    },
    /// The user is active, but the restart has waited `max_defer` seconds since `since`:
    /// restart anyway.
    Force {
        /// First deferral.
        since: i64,
        /// The bound that was reached.
        max_defer: u64,
    },
}

/// The pure decision. `pending_since` is the first deferral of an earlier run, if any.
pub fn decide(
    active: bool,
    pending_since: Option<i64>,
    max_defer_secs: Option<u64>,
    now: i64,
) -> Decision {
    if !active {
        return Decision::Restart;
    }
    let since = pending_since.unwrap_or(now);
    match max_defer_secs {
        Some(max) if now.saturating_sub(since) >= i64::try_from(max).unwrap_or(i64::MAX) => {
            Decision::Force {
                since,
                max_defer: max,
            }
        }
        _ => Decision::Defer { since },
    }
}

/// What a user is doing now on `host`'s root; `None` when they have no account there (so
/// nobody can be waited for).
pub fn user_activity(
    host: &Host,
    accounts: &crate::accounts::Accounts,
    user: &str,
) -> anyhow::Result<Option<Activity>> {
    let Some(uid) = accounts.uid(user) else {
        return Ok(None);
    };
    Ok(Some(sessions::activity(host, uid).map_err(|e| {
        anyhow::anyhow!("reading the processes of {user}: {e}")
    })?))
}

/// The records whose restart can happen now (user idle or without an account, or
/// `max_defer_secs` passed), for the daemon's check between runs. Reads only.
pub fn due(host: &Host, now: i64) -> anyhow::Result<Vec<Record>> {
    let records = load(host)?;
    if records.is_empty() {
        return Ok(records);
    }
    let accounts = crate::accounts::Accounts::load(host)?;
    let mut out = Vec::new();
    for record in records {
        let active = user_activity(host, &accounts, &record.user)?.is_some_and(|a| a.is_active());
        if decide(active, Some(record.since), record.max_defer_secs, now)
            != (Decision::Defer {
                since: record.since,
            })
        {
            out.push(record);
        }
    }
    Ok(out)
}

/// `2026-12-08T02:10:00Z` for seconds since the epoch (UTC).
pub fn rfc3339(secs: i64) -> String {
    steward_protocol::calendar::rfc3339(secs)
}

/// A bound in the largest whole unit: `2h`, `90m`, `45s`, `1d`.
pub fn duration(secs: u64) -> String {
    match secs {
        0 => "0s".to_string(),
        s if s % 86_400 == 0 => format!("{}d", s / 86_400),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_restarts_active_defers_and_max_defer_forces() {
        let now = 10_000;
        assert_eq!(decide(false, None, None, now), Decision::Restart);
        assert_eq!(decide(false, Some(1), Some(5), now), Decision::Restart);
        // First deferral: since now; kept from the record afterwards.
        assert_eq!(
            decide(true, None, None, now),
            Decision::Defer { since: now }
        );
        assert_eq!(
            decide(true, Some(9_000), None, now),
            Decision::Defer { since: 9_000 }
        );
        assert_eq!(
            decide(true, Some(9_000), Some(1_001), now),
            Decision::Defer { since: 9_000 }
        );
        assert_eq!(
            decide(true, Some(9_000), Some(1_000), now),
            Decision::Force {
                since: 9_000,
                max_defer: 1_000
            }
        );
        // max_defer 0: never waits.
        assert_eq!(
            decide(true, None, Some(0), now),
            Decision::Force {
                since: now,
                max_defer: 0
            }
        );
        // A huge bound does not overflow.
        assert_eq!(
            decide(true, Some(0), Some(u64::MAX), now),
            Decision::Defer { since: 0 }
        );
    }

    #[test]
    fn times_and_bounds_are_printed_for_people() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_695_800), "2026-12-08T02:10:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(duration(7200), "2h");
        assert_eq!(duration(5400), "90m");
        assert_eq!(duration(45), "45s");
        assert_eq!(duration(86_400), "1d");
        assert_eq!(duration(0), "0s");
    }

    #[test]
    fn records_round_trip_and_unknown_fields_are_refused() {
        let doc = Document {
            pending: vec![Record {
                unit: "t3-serve@emo.service".into(),
                user: "emo".into(),
                since: 5,
                reason: "1 process on a terminal (bash)".into(),
                max_defer_secs: Some(7200),
            }],
        };
        let text = serde_json::to_string(&doc).unwrap();
        let back: Document = serde_json::from_str(&text).unwrap();
        assert_eq!(back.pending, doc.pending);
        assert!(serde_json::from_str::<Document>(r#"{"pending":[],"x":1}"#).is_err());
    }
}
