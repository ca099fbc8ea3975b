//! Run report ingest: one writer task stores the reports of every request, several per
//! transaction (group commit), so a burst of reports costs one fsync per batch rather than one
//! per report.
//!
//! A handler hands its parsed, validated report to [`ReportWriter::store`] and waits for its
//! own answer: the writer answers only after the transaction holding the report committed
//! (`synchronous=FULL`), so a 2xx still means the report is durably stored (THREATS R6). The
//! writer takes whatever is queued when it gets to it (at most [`MAX_BATCH_REPORTS`] reports or
//! [`MAX_BATCH_EVENTS`] events), so a lone report is written at once and waits for no batch to
//! fill ([`crate::db::runs::insert_reports`]). A report that fails (a run id another node
//! reported) costs the others of its batch nothing but time: they are then stored one by one.
//! Inserts stay idempotent by run id.

use std::sync::Arc;

use sqlx::pool::PoolConnection;
use sqlx::Sqlite;
use steward_protocol::{RunReport, Timestamp};
use tokio::sync::{mpsc, oneshot};

use crate::db::runs::{self, InsertOutcome};
use crate::db::{Db, DbError};

/// Reports per transaction, at most.
pub const MAX_BATCH_REPORTS: usize = 32;

/// Events per transaction, at most (a batch holds at least one report, whatever its size).
pub const MAX_BATCH_EVENTS: usize = 16_000;

/// Reports waiting for the writer, at most; further callers wait for room.
const QUEUE: usize = 64;

/// Why a report was not stored.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Storing this report failed (e.g. [`DbError::RunIdConflict`]); the rest of its batch was
    /// stored.
    #[error(transparent)]
    Db(#[from] DbError),
    /// The transaction holding this report and others failed to commit: none of them is
    /// stored.
    #[error("storing a batch of run reports failed")]
    Batch(#[source] Arc<DbError>),
    /// The writer has stopped (the server is shutting down).
    #[error("the report writer has stopped")]
    Stopped,
}

enum Job {
    /// Boxed: a report is large next to the stop signal.
    Store(Box<Pending>),
    Stop(oneshot::Sender<()>),
}

/// The handle of the writer task (cheap to clone).
#[derive(Debug, Clone)]
pub struct ReportWriter {
    jobs: mpsc::Sender<Job>,
}

impl ReportWriter {
    /// Starts the writer task on `db`. It runs until [`ReportWriter::stop`].
    pub fn spawn(db: Db) -> ReportWriter {
        let (jobs, queue) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, queue));
        ReportWriter { jobs }
    }

    /// Stores `report`, received at `received_at`; returns once it is committed.
    pub async fn store(
        &self,
        report: RunReport,
        received_at: Timestamp,
    ) -> Result<InsertOutcome, ReportError> {
        let (done, answer) = oneshot::channel();
        self.jobs
            .send(Job::Store(Box::new(Pending {
                report,
                received_at,
                done,
            })))
            .await
            .map_err(|_| ReportError::Stopped)?;
        answer.await.map_err(|_| ReportError::Stopped)?
    }

    /// Stores every report queued so far, then stops the writer; later calls to
    /// [`ReportWriter::store`] fail with [`ReportError::Stopped`].
    pub async fn stop(&self) {
        let (done, stopped) = oneshot::channel();
        if self.jobs.send(Job::Stop(done)).await.is_ok() {
            let _ = stopped.await;
        }
    }
}

struct Pending {
    report: RunReport,
    received_at: Timestamp,
    done: oneshot::Sender<Result<InsertOutcome, ReportError>>,
}

async fn run(db: Db, mut queue: mpsc::Receiver<Job>) {
    // One connection for every batch: its page cache stays warm, and the pool's other
    // connections do not each grow a cache of report pages.
    let mut connection: Option<PoolConnection<Sqlite>> = None;
    let mut batch: Vec<Pending> = Vec::new();
    while let Some(job) = queue.recv().await {
        let mut stop = None;
        let mut events = 0;
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                Job::Store(pending) => {
                    events += pending.report.events.len();
                    batch.push(*pending);
                }
                Job::Stop(done) => {
                    stop = Some(done);
                    break;
                }
            }
            if batch.len() < MAX_BATCH_REPORTS && events < MAX_BATCH_EVENTS {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            store_batch(&db, &mut connection, &mut batch).await;
        }
        if let Some(done) = stop {
            let _ = done.send(());
            return;
        }
    }
}

/// Inserts every report of `batch` in one transaction and answers each caller.
async fn store_batch(
    db: &Db,
    connection: &mut Option<PoolConnection<Sqlite>>,
    batch: &mut Vec<Pending>,
) {
    let outcome = async {
        if connection.is_none() {
            *connection = Some(db.pool().acquire().await.map_err(|source| DbError::Query {
                context: "acquiring a connection for run reports",
                source,
            })?);
        }
        let Some(held) = connection.as_mut() else {
            unreachable!("the connection was just acquired");
        };
        let reports: Vec<(&RunReport, Timestamp)> = batch
            .iter()
            .map(|pending| (&pending.report, pending.received_at))
            .collect();
        runs::insert_reports(held, &reports).await
    }
    .await;
    match outcome {
        Ok(results) => {
            for (pending, result) in batch.drain(..).zip(results) {
                let _ = pending.done.send(result.map_err(ReportError::from));
            }
        }
        Err(error) => {
            // The connection may be what failed: the next batch takes another one.
            *connection = None;
            let error = Arc::new(error);
            for pending in batch.drain(..) {
                let _ = pending
                    .done
                    .send(Err(ReportError::Batch(Arc::clone(&error))));
            }
        }
    }
}
