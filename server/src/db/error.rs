//! [`DbError`]: what the store reports. Messages say what was being done and name the node, run
//! or token id involved; they never carry a secret (token secrets never reach this module, and
//! sqlx errors name constraints, not bound values).

use std::io;
use std::path::PathBuf;

use steward_protocol::{NodeId, RunId, Serial};

/// An error from the SQLite store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The database file could not be created or opened.
    #[error("cannot open database {}", .path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A file operation around the database (creating it, a backup target) failed.
    #[error("{context} {}", .path.display())]
    Io {
        /// What was being done, e.g. "cannot create backup file".
        context: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// `PRAGMA integrity_check` did not answer `ok`.
    #[error(
        "database {} failed its integrity check: {report}; restore it from a backup",
        .path.display()
    )]
    Integrity {
        /// The database file checked.
        path: PathBuf,
        /// The first lines SQLite reported.
        report: String,
    },
    /// Applying the migrations failed (or the file was migrated by a newer server).
    #[error("cannot apply migrations to {}", .path.display())]
    Migrate {
        /// The database file.
        path: PathBuf,
        /// Why.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("{context}")]
    Query {
        /// What was being done, e.g. "inserting run report".
        context: &'static str,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The node, run, token... named does not exist.
    #[error("{what} {key} not found")]
    NotFound {
        /// `node`, `run`, `bootstrap token`...
        what: &'static str,
        /// Its name or id.
        key: String,
    },
    /// A row with that name or id exists already.
    #[error("{what} {key} already exists")]
    AlreadyExists {
        /// `node`, `key`, `bootstrap token`...
        what: &'static str,
        /// Its name or id.
        key: String,
    },
    /// A catalog was stored with a serial not above the node's current one (THREATS R7).
    #[error("catalog serial {serial} for node {node} is not above the current serial {current}")]
    SerialNotIncreasing {
        /// The node.
        node: NodeId,
        /// The serial given.
        serial: Serial,
        /// The serial already stored.
        current: Serial,
    },
    /// A run id was resubmitted by a node other than the one that first reported it.
    #[error("run {run_id} was already reported by node {first_node}, not {node}")]
    RunIdConflict {
        /// The run id.
        run_id: RunId,
        /// Who reported it first.
        first_node: NodeId,
        /// Who reported it now.
        node: NodeId,
    },
    /// A value cannot be stored (out of range for SQLite's INTEGER, malformed id).
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// Which value.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// A stored value does not decode (the database was edited by hand, or a bug wrote it).
    #[error("stored {what} is invalid: {detail}")]
    Corrupt {
        /// Which column.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

impl DbError {
    /// Whether the cause is a UNIQUE or PRIMARY KEY constraint violation.
    pub fn is_unique_violation(&self) -> bool {
        matches!(
            self,
            DbError::Query { source: sqlx::Error::Database(database), .. }
                if database.kind() == sqlx::error::ErrorKind::UniqueViolation
        )
    }
}

/// `.context("doing x")` on sqlx results.
pub(crate) trait Context<T> {
    fn context(self, context: &'static str) -> Result<T, DbError>;
}

impl<T> Context<T> for Result<T, sqlx::Error> {
    fn context(self, context: &'static str) -> Result<T, DbError> {
        self.map_err(|source| DbError::Query { context, source })
    }
}
