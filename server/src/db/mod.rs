//! The server's SQLite store: one file, WAL mode, schema from `../migrations`.
//!
//! [`Db::open`] creates the file (mode 0600) if needed, checks its integrity, applies the
//! migrations and returns a pool whose every connection runs with
//! `journal_mode=WAL`, `synchronous=FULL` (an acknowledged report or serial survives power loss,
//! THREATS R6), `foreign_keys=ON`, `secure_delete=ON` (deleted rows leave no bytes behind, K2)
//! and a `busy_timeout`, so concurrent writers wait for SQLite's single write lock instead of
//! failing (R19).
//!
//! Queries are one async function each, grouped by table in the submodules. Each takes
//! `db: impl Into<Handle<'_>>`: pass `&db` (a [`Db`]) for a standalone call, or `&mut tx` to make
//! it part of a transaction opened with [`Db::begin_write`] (enroll = node + key + token use +
//! audit entry, all or nothing). Functions that write several statements open their own
//! transaction with `BEGIN IMMEDIATE`, or a savepoint inside the caller's.
//!
//! Must not: store a secret. Catalogs arrive already redacted, bootstrap token secrets only as
//! [`tokens::SecretHash`]; nothing here logs row contents.

pub mod audit;
pub mod catalogs;
pub mod compile_failures;
pub mod keys;
pub mod nodes;
pub mod nonces;
pub mod pending_keys;
pub mod runs;
pub mod state;
pub mod tokens;

pub(crate) mod codec;
mod error;
#[cfg(test)]
mod tests;

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteSynchronous,
};
use sqlx::{ConnectOptions, Connection, Sqlite, Transaction};
use steward_protocol::Timestamp;

pub(crate) use crate::db::error::Context;
pub use crate::db::error::DbError;

/// How long a connection waits for SQLite's write lock before failing with "database is locked".
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections in the pool. SQLite has one writer at a time; the others read concurrently (WAL).
/// Each connection is a thread with its own page cache (and its own malloc arena): a signed
/// request costs one short query, so four are plenty on a small server and keep memory down.
pub const MAX_CONNECTIONS: u32 = 4;

/// Page cache of each connection, in KiB (SQLite's default is 2000).
pub const PAGE_CACHE_KIB: u32 = 1024;

/// WAL pages (4 KiB each) after which a commit checkpoints itself (SQLite's default is 1000).
/// The server checkpoints in the background every second ([`Db::checkpoint_passive`]); this is
/// the safety net for when that falls behind.
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 20_000;

/// Connections of the relaxed pool ([`Db::relaxed`]).
const RELAXED_CONNECTIONS: u32 = 1;

/// Pause between two retention batches, so that writers waiting in SQLite's busy handler get
/// the lock between batches instead of the pruner taking it again at once.
const PRUNE_PAUSE: Duration = Duration::from_millis(20);

/// Deletes the events of the oldest batch of runs received before `?1` (batch size `?2`).
/// Same selection as [`PRUNE_RUNS_SQL`]: run both in one transaction.
pub(crate) const PRUNE_EVENTS_SQL: &str = "DELETE FROM resource_events WHERE run_id IN \
     (SELECT id FROM runs WHERE received_at < ?1 ORDER BY received_at, id LIMIT ?2)";

/// Deletes the oldest batch of runs received before `?1` (batch size `?2`).
pub(crate) const PRUNE_RUNS_SQL: &str = "DELETE FROM runs WHERE id IN \
     (SELECT id FROM runs WHERE received_at < ?1 ORDER BY received_at, id LIMIT ?2)";

/// The store: a pool of connections to one migrated, integrity-checked SQLite file.
///
/// The pools do not ping a connection before handing it out (`test_before_acquire`): a
/// connection to a local file does not go stale, and each ping is a round trip to the
/// connection's worker thread, as much as the query it precedes.
#[derive(Debug, Clone)]
pub struct Db {
    pool: SqlitePool,
    /// Connections with `synchronous=NORMAL`: see [`Db::relaxed`].
    relaxed: SqlitePool,
    path: PathBuf,
}

impl Db {
    /// Opens (creating it if missing, mode 0600) the database at `path`, checks it with
    /// `PRAGMA integrity_check` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Db, DbError> {
        create_private_file_if_missing(path)?;
        let options = connect_options(path).create_if_missing(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(|source| DbError::Open {
                path: path.to_owned(),
                source,
            })?;
        // Opened lazily: migrations run on `pool` first.
        let relaxed = SqlitePoolOptions::new()
            .max_connections(RELAXED_CONNECTIONS)
            .test_before_acquire(false)
            .connect_lazy_with(connect_options(path).synchronous(SqliteSynchronous::Normal));
        let db = Db {
            pool,
            relaxed,
            path: path.to_owned(),
        };
        let opened = async {
            let mut connection = db.pool.acquire().await.context("checking integrity")?;
            integrity_check(&mut connection, path).await?;
            drop(connection);
            sqlx::migrate!("../migrations")
                .run(&db.pool)
                .await
                .map_err(|source| DbError::Migrate {
                    path: path.to_owned(),
                    source,
                })
        }
        .await;
        match opened {
            Ok(()) => Ok(db),
            Err(error) => {
                db.pool.close().await;
                Err(error)
            }
        }
    }

    /// Connections whose commits do not wait for an fsync (`synchronous=NORMAL` in WAL mode),
    /// for per-request bookkeeping whose loss on power failure is harmless: request nonces
    /// (a nonce lost with the last second before a crash is still bounded by the timestamp
    /// window), last-seen times and facts. Everything durable (serials, catalogs, reports,
    /// tokens, keys, audit) goes through [`Db::pool`] with `synchronous=FULL`. The database
    /// stays consistent either way: WAL commits are atomic, and the next FULL commit syncs
    /// the earlier frames too.
    pub fn relaxed(&self) -> &SqlitePool {
        &self.relaxed
    }

    /// The connection pool, for queries outside this module's functions.
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Begins a write transaction with `BEGIN IMMEDIATE`: it takes the write lock up front
    /// (waiting up to [`BUSY_TIMEOUT`]), so a read followed by a write inside it cannot fail with
    /// `SQLITE_BUSY` the way a deferred transaction can under concurrent writers. Keep it short.
    pub async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>, DbError> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("beginning write transaction")
    }

    /// Writes a consistent copy of the live database to `target` with `VACUUM INTO` (no need to
    /// stop writers), then runs `PRAGMA integrity_check` on the copy. `target` must not exist; it
    /// is created with mode 0600. A copy that fails its check is removed.
    pub async fn backup_to(&self, target: &Path) -> Result<(), DbError> {
        let target = std::path::absolute(target).map_err(|source| DbError::Io {
            context: "cannot resolve backup path",
            path: target.to_owned(),
            source,
        })?;
        let Some(target_text) = target.to_str() else {
            return Err(DbError::Invalid {
                what: "backup path",
                detail: format!("{} is not UTF-8", target.display()),
            });
        };
        // `VACUUM INTO` accepts an existing empty file; creating it ourselves sets its mode and
        // refuses to overwrite an older backup.
        create_private_file(&target)?;
        let copied = async {
            sqlx::query("VACUUM INTO ?1")
                .bind(target_text)
                .execute(&self.pool)
                .await
                .context("writing backup with VACUUM INTO")?;
            let mut copy =
                connect_options(&target)
                    .connect()
                    .await
                    .map_err(|source| DbError::Open {
                        path: target.clone(),
                        source,
                    })?;
            let checked = integrity_check(&mut copy, &target).await;
            let closed = copy.close().await.context("closing backup copy");
            checked.and(closed)
        }
        .await;
        if copied.is_err() {
            remove_database_files(&target);
        }
        copied
    }

    /// Deletes one batch: up to `batch_size` runs received before `cutoff` (oldest first) and
    /// their events, in one short write transaction. Returns the number of runs deleted.
    pub async fn prune_runs_batch(
        &self,
        cutoff: Timestamp,
        batch_size: u32,
    ) -> Result<u64, DbError> {
        let mut tx = self.begin_write().await?;
        // Both statements select the same runs: same predicate, same order, same transaction.
        sqlx::query(PRUNE_EVENTS_SQL)
            .bind(cutoff.0)
            .bind(i64::from(batch_size))
            .execute(&mut *tx)
            .await
            .context("pruning resource events")?;
        let deleted = sqlx::query(PRUNE_RUNS_SQL)
            .bind(cutoff.0)
            .bind(i64::from(batch_size))
            .execute(&mut *tx)
            .await
            .context("pruning runs")?
            .rows_affected();
        tx.commit().await.context("committing run pruning")?;
        Ok(deleted)
    }

    /// Retention: deletes every run received before `cutoff`, with its events, in batches of
    /// `batch_size` runs (one transaction each, a short pause between them) so that report
    /// writers are never blocked for long. Returns the number of runs deleted.
    pub async fn prune_runs_older_than(
        &self,
        cutoff: Timestamp,
        batch_size: u32,
    ) -> Result<u64, DbError> {
        let batch_size = batch_size.max(1);
        let mut total = 0;
        loop {
            let deleted = self.prune_runs_batch(cutoff, batch_size).await?;
            total += deleted;
            if deleted < u64::from(batch_size) {
                return Ok(total);
            }
            tokio::time::sleep(PRUNE_PAUSE).await;
        }
    }

    /// Copies the WAL into the main file and truncates the WAL to zero bytes
    /// (`PRAGMA wal_checkpoint(TRUNCATE)`). SQLite checkpoints on its own; this is for tests and
    /// for before a file-level copy.
    pub async fn checkpoint(&self) -> Result<(), DbError> {
        let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
            .fetch_one(&self.pool)
            .await
            .context("checkpointing the WAL")?;
        if busy != 0 {
            return Err(DbError::Query {
                context: "checkpointing the WAL",
                source: sqlx::Error::Protocol("checkpoint blocked by a reader or writer".into()),
            });
        }
        Ok(())
    }

    /// Copies what it can of the WAL into the database file without waiting for readers or
    /// writers (`PRAGMA wal_checkpoint(PASSIVE)`). The server runs it every second, so that the
    /// committing connection rarely reaches [`WAL_AUTOCHECKPOINT_PAGES`] and checkpoints on its
    /// own: a page rewritten by many commits in between is copied once.
    pub async fn checkpoint_passive(&self) -> Result<(), DbError> {
        sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&self.pool)
            .await
            .context("checkpointing the WAL")?;
        Ok(())
    }

    /// Closes every connection (the last one checkpoints and removes the WAL).
    pub async fn close(&self) {
        self.relaxed.close().await;
        self.pool.close().await;
    }
}

/// Where a query function runs: on a pooled connection of a [`Db`], or on a connection the
/// caller holds, typically inside a transaction from [`Db::begin_write`]. Query functions take
/// `impl Into<Handle<'_>>`, so they are called with `&db`, `&mut tx` or `&mut connection`.
///
/// A concrete type rather than sqlx's `impl Acquire`: a future generic over `Acquire` cannot be
/// proven `Send` when given `&mut Transaction` (rustc "implementation of `Acquire` is not general
/// enough"), which would keep transactions out of spawned tasks and axum handlers.
#[derive(Debug)]
pub enum Handle<'a> {
    /// Take a connection from the pool for this one call.
    Pool(&'a SqlitePool),
    /// Use the caller's connection (and its transaction, if one is open).
    Connection(&'a mut SqliteConnection),
}

impl<'a> From<&'a Db> for Handle<'a> {
    fn from(db: &'a Db) -> Handle<'a> {
        Handle::Pool(&db.pool)
    }
}

impl<'a> From<&'a SqlitePool> for Handle<'a> {
    fn from(pool: &'a SqlitePool) -> Handle<'a> {
        Handle::Pool(pool)
    }
}

impl<'a> From<&'a mut SqliteConnection> for Handle<'a> {
    fn from(connection: &'a mut SqliteConnection) -> Handle<'a> {
        Handle::Connection(connection)
    }
}

impl<'a> From<&'a mut PoolConnection<Sqlite>> for Handle<'a> {
    fn from(connection: &'a mut PoolConnection<Sqlite>) -> Handle<'a> {
        Handle::Connection(connection)
    }
}

impl<'a> From<&'a mut Transaction<'_, Sqlite>> for Handle<'a> {
    fn from(transaction: &'a mut Transaction<'_, Sqlite>) -> Handle<'a> {
        Handle::Connection(transaction)
    }
}

impl<'a> Handle<'a> {
    /// The connection to run statements on.
    pub(crate) async fn connection(self) -> Result<HeldConnection<'a>, DbError> {
        Ok(match self {
            Handle::Pool(pool) => {
                HeldConnection::Pooled(pool.acquire().await.context("acquiring a connection")?)
            }
            Handle::Connection(connection) => HeldConnection::Borrowed(connection),
        })
    }
}

/// A connection taken from the pool for one call, or borrowed from the caller.
pub(crate) enum HeldConnection<'a> {
    Pooled(PoolConnection<Sqlite>),
    Borrowed(&'a mut SqliteConnection),
}

impl Deref for HeldConnection<'_> {
    type Target = SqliteConnection;

    fn deref(&self) -> &SqliteConnection {
        match self {
            HeldConnection::Pooled(connection) => connection,
            HeldConnection::Borrowed(connection) => connection,
        }
    }
}

impl DerefMut for HeldConnection<'_> {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        match self {
            HeldConnection::Pooled(connection) => connection,
            HeldConnection::Borrowed(connection) => connection,
        }
    }
}

/// Options every connection is opened with.
///
/// `temp_store=MEMORY` keeps statement journals in memory: every multi-row insert inside a
/// transaction (a report's events) would otherwise copy the pages it touches again to a
/// temporary file. `cache_size` is [`PAGE_CACHE_KIB`] per connection: the operating system's
/// page cache holds the file anyway, and each connection's cache is memory of the server.
/// `wal_autocheckpoint` is raised to [`WAL_AUTOCHECKPOINT_PAGES`] because the server
/// checkpoints in the background ([`Db::checkpoint_passive`]).
fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .busy_timeout(BUSY_TIMEOUT)
        .pragma("secure_delete", "ON")
        .pragma("temp_store", "MEMORY")
        .pragma("cache_size", format!("-{PAGE_CACHE_KIB}"))
        .pragma("wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES.to_string())
}

/// Begins a write transaction on `connection`: `BEGIN IMMEDIATE`, or a savepoint when the
/// connection is already inside a transaction (the caller's [`Db::begin_write`]).
pub(crate) async fn begin_immediate(
    connection: &mut SqliteConnection,
) -> Result<Transaction<'_, Sqlite>, DbError> {
    if connection.is_in_transaction() {
        Connection::begin(connection)
            .await
            .context("beginning savepoint")
    } else {
        connection
            .begin_with("BEGIN IMMEDIATE")
            .await
            .context("beginning write transaction")
    }
}

/// Runs `PRAGMA integrity_check`; anything but a single `ok` is an error.
async fn integrity_check(connection: &mut SqliteConnection, path: &Path) -> Result<(), DbError> {
    let lines: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_all(&mut *connection)
        .await
        .context("running integrity check")?;
    if lines.len() == 1 && lines[0] == "ok" {
        return Ok(());
    }
    let mut report: Vec<&str> = lines.iter().take(5).map(String::as_str).collect();
    if lines.len() > 5 {
        report.push("...");
    }
    Err(DbError::Integrity {
        path: path.to_owned(),
        report: report.join("; "),
    })
}

fn create_private_file_if_missing(path: &Path) -> Result<(), DbError> {
    match create_private_file(path) {
        Err(DbError::Io { source, .. }) if source.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(())
        }
        other => other,
    }
}

/// Creates an empty file readable by the owner only. SQLite gives the `-wal` and `-shm` files
/// the main file's mode, so they are private too.
fn create_private_file(path: &Path) -> Result<(), DbError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map(drop).map_err(|source| DbError::Io {
        context: "cannot create database file",
        path: path.to_owned(),
        source,
    })
}

/// Best-effort removal of a database file and its `-wal` / `-shm` companions.
fn remove_database_files(path: &Path) {
    for suffix in ["", "-wal", "-shm"] {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(name));
    }
}
