//! Mapping between `steward_protocol` / `steward_catalogs` types and SQL values: enums as their
//! wire names (the same words the schema's CHECK constraints list), unsigned numbers as SQLite's
//! signed 64-bit INTEGER.

use steward_catalogs::model::UserState;
use steward_protocol::{EnrollmentStatus, ResourceStatus, RunStatus, Serial, Timestamp};

use crate::db::DbError;

pub(crate) fn enrollment_status_str(status: EnrollmentStatus) -> &'static str {
    match status {
        EnrollmentStatus::Pending => "pending",
        EnrollmentStatus::Approved => "approved",
        EnrollmentStatus::Revoked => "revoked",
        EnrollmentStatus::Quarantined => "quarantined",
    }
}

pub(crate) fn parse_enrollment_status(text: &str) -> Result<EnrollmentStatus, DbError> {
    Ok(match text {
        "pending" => EnrollmentStatus::Pending,
        "approved" => EnrollmentStatus::Approved,
        "revoked" => EnrollmentStatus::Revoked,
        "quarantined" => EnrollmentStatus::Quarantined,
        other => return Err(corrupt("nodes.status", other)),
    })
}

pub(crate) fn run_status_str(status: RunStatus) -> &'static str {
    match status {
        RunStatus::Unchanged => "unchanged",
        RunStatus::Changed => "changed",
        RunStatus::Noop => "noop",
        RunStatus::Failed => "failed",
        RunStatus::Error => "error",
    }
}

pub(crate) fn parse_run_status(text: &str) -> Result<RunStatus, DbError> {
    Ok(match text {
        "unchanged" => RunStatus::Unchanged,
        "changed" => RunStatus::Changed,
        "noop" => RunStatus::Noop,
        "failed" => RunStatus::Failed,
        "error" => RunStatus::Error,
        other => return Err(corrupt("runs.status", other)),
    })
}

pub(crate) fn resource_status_str(status: ResourceStatus) -> &'static str {
    status.as_str()
}

pub(crate) fn parse_resource_status(text: &str) -> Result<ResourceStatus, DbError> {
    text.parse()
        .map_err(|_| corrupt("resource_events.status", text))
}

pub(crate) fn parse_user_state(text: &str) -> Result<UserState, DbError> {
    Ok(match text {
        "present" => UserState::Present,
        "offboarded" => UserState::Offboarded,
        "purged" => UserState::Purged,
        other => return Err(corrupt("managed_users.state", other)),
    })
}

/// An unsigned value as SQLite INTEGER; values above `i64::MAX` are refused, not wrapped.
pub(crate) fn to_i64(value: u64, what: &'static str) -> Result<i64, DbError> {
    i64::try_from(value).map_err(|_| DbError::Invalid {
        what,
        detail: format!("{value} is above {}", i64::MAX),
    })
}

/// A stored INTEGER read back as unsigned.
pub(crate) fn to_u64(value: i64, what: &'static str) -> Result<u64, DbError> {
    u64::try_from(value).map_err(|_| corrupt(what, &value.to_string()))
}

/// A stored INTEGER read back as `u32`.
pub(crate) fn to_u32(value: i64, what: &'static str) -> Result<u32, DbError> {
    u32::try_from(value).map_err(|_| corrupt(what, &value.to_string()))
}

pub(crate) fn serial_to_i64(serial: Serial) -> Result<i64, DbError> {
    to_i64(serial.0, "catalog serial")
}

pub(crate) fn serial_from_i64(value: i64, what: &'static str) -> Result<Serial, DbError> {
    to_u64(value, what).map(Serial)
}

pub(crate) fn timestamp(value: i64) -> Timestamp {
    Timestamp(value)
}

pub(crate) fn optional_timestamp(value: Option<i64>) -> Option<Timestamp> {
    value.map(Timestamp)
}

pub(crate) fn corrupt(what: &'static str, value: &str) -> DbError {
    // Stored values are never secret, but keep the message short if a column is unexpectedly big.
    let shown: String = value.chars().take(80).collect();
    DbError::Corrupt {
        what,
        detail: format!("unexpected value {shown:?}"),
    }
}
