//! One agent run: lock, fetch (or read) the catalog, verify it through the protocol's single
//! function, persist the accepted serial durably, apply, spool the report, send the spool.
//!
//! Where the catalog comes from:
//! - **server**: `POST /v1/catalog` with the facts and the digest we hold as ETag; a 304 or an
//!   unreachable server falls back to the cached envelope, which is re-applied **only while it
//!   is unexpired** (verification refuses an expired one: the run reports "catalog expired" and
//!   changes nothing). An answer that is not a catalog at all counts as unreachable (THREATS
//!   R1): a redirect (never followed), a body over the catalog limit, a `200` of another content
//!   type (a proxy's HTML page), or JSON that is not an envelope. The run's message says what
//!   came instead;
//! - **file**: `run --catalog FILE --trust FINGERPRINT` (offline hosts, image baking, tests).
//!
//! Verification refusals (forged, flipped, rollback, same serial with other content, expired,
//! other node, oversize, unknown format) apply nothing and leave the persisted serial as it was.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use steward_protocol::envelope::{verify_catalog, Refusal, VerifiedCatalog};
use steward_protocol::{
    KeyId, NodeId, ResourceStatus, RunId, RunReport, RunStatus, Timestamp, Totals,
    MAX_CATALOG_BYTES,
};

use crate::client::{CatalogReply, Client, ClientError};
use crate::engine::{self, Context, RunLimits};
use crate::facts;
use crate::host::Host;
use crate::spool::{Spool, SpoolLimits};
use crate::state::{now, Identity, RunSummary, StateDir};

/// Where this run's catalog comes from.
#[derive(Debug)]
pub enum Source<'a> {
    /// The enrolled server.
    Server {
        /// The client.
        client: &'a Client,
        /// Who we are to it.
        identity: &'a Identity,
    },
    /// A local signed envelope.
    File {
        /// The envelope.
        path: PathBuf,
        /// The pinned root fingerprint.
        trust: KeyId,
        /// This node's name.
        node: NodeId,
    },
}

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Report what would change, write nothing.
    pub noop: bool,
    /// The system to converge (`/`, or a mounted image / sandbox).
    pub root: PathBuf,
    /// Whole-run limit.
    pub run_timeout: Duration,
    /// Per-command limit.
    pub command_timeout: Duration,
    /// How long to wait for another run's lock.
    pub lock_wait: Duration,
    /// Spool bounds.
    pub spool: SpoolLimits,
}

/// The result of a run.
#[derive(Debug)]
pub struct RunOutcome {
    /// The report (also spooled, and sent when a server is the source).
    pub report: RunReport,
    /// Whether the report (and any older spooled ones) reached the server.
    pub delivered: bool,
    /// Where the catalog came from: `server`, `cache` or `file`.
    pub catalog_source: &'static str,
}

impl RunOutcome {
    /// Puppet-style exit code: 0 no changes, 2 changes, 4 failures, 6 both, 1 could not run.
    pub fn exit_code(&self) -> u8 {
        if self.report.status == RunStatus::Error {
            1
        } else {
            u8::try_from(self.report.totals.exit_code()).unwrap_or(1)
        }
    }
}

/// Runs once. Errors are only for what prevents even a report (lock held, state unreadable);
/// everything else ends up in the report with status `error`.
pub fn run_once(
    state: &StateDir,
    source: &Source<'_>,
    options: &RunOptions,
    stop: &AtomicBool,
) -> anyhow::Result<RunOutcome> {
    let _lock = state.lock(options.lock_wait)?;
    let started = Instant::now();
    let started_at = Timestamp(now());
    let mut run_id = [0u8; 16];
    getrandom::getrandom(&mut run_id).map_err(|e| anyhow::anyhow!("drawing a run id: {e}"))?;
    let run_id = RunId::from_random_bytes(run_id);
    let facts = facts::gather(&options.root);
    let node = match source {
        Source::Server { identity, .. } => identity.node.clone(),
        Source::File { node, .. } => node.clone(),
    };
    let signing = state.signing_key()?;

    let (fetched, mut catalog_source, mut message) = fetch(state, source, &facts, &signing);
    let trust = match source {
        Source::Server { identity, .. } => &identity.root_key_id,
        Source::File { trust, .. } => trust,
    };
    let verified = fetched.and_then(|(mut bytes, mut from_server)| {
        let last = state.accepted()?;
        let verify =
            |bytes: &[u8]| verify_catalog(bytes, trust, &node, last.as_ref(), Timestamp(now()));
        let mut outcome = verify(&bytes);
        // A fresh answer that is not even an envelope is garbage from whatever answered, not
        // a catalog: like an unreachable server, the cached one is used.
        if let (true, Err(refusal @ Refusal::Malformed(_))) = (from_server, &outcome) {
            let why = format!("the server's answer is not a catalog ({refusal})");
            message = Some(format!("{why}; applying the cached catalog"));
            catalog_source = "cache";
            (bytes, from_server) =
                cached_envelope(state).map_err(|e| anyhow::anyhow!("{why}, and {e:#}"))?;
            outcome = verify(&bytes);
        }
        let verified = outcome.map_err(|refusal| refused(&refusal))?;
        // Durably, before anything is applied: a crash mid-run must not let an older catalog
        // be accepted next time.
        if last.as_ref() != Some(&verified.accepted()) {
            state.set_accepted(&verified.accepted())?;
        }
        if from_server {
            state.set_cached_envelope(&bytes)?;
        }
        Ok(verified)
    });

    let (events, serial, status) = match verified {
        Ok(verified) => {
            let events = apply(&verified, state, options, stop)?;
            let totals = Totals::of(&events);
            let status = if totals.failed > 0 {
                RunStatus::Failed
            } else if options.noop {
                RunStatus::Noop
            } else if totals.changed > 0 {
                RunStatus::Changed
            } else {
                RunStatus::Unchanged
            };
            (events, Some(verified.serial), status)
        }
        Err(error) => {
            message = Some(format!("{error:#}"));
            (Vec::new(), None, RunStatus::Error)
        }
    };
    let totals = Totals::of(&events);
    let report = RunReport {
        run_id,
        node,
        catalog_serial: serial,
        started_at,
        finished_at: Timestamp(now()),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        noop: options.noop,
        status,
        message,
        agent_version: facts::AGENT_VERSION.to_string(),
        facts,
        events,
        totals,
    };
    let spool = Spool::new(state.spool_dir(), options.spool);
    spool.add(&report)?;
    let delivered = match source {
        Source::Server { client, .. } => flush_spool(&spool, client, &signing).is_ok(),
        Source::File { .. } => false,
    };
    state.set_summary(&summary(&report, delivered))?;
    Ok(RunOutcome {
        report,
        delivered,
        catalog_source,
    })
}

type Fetched = anyhow::Result<(Vec<u8>, bool)>;

/// A refusal with its causes: "catalog failed validation: resource `…`: path … must be …".
pub fn refusal_text(refusal: &Refusal) -> String {
    let mut text = refusal.to_string();
    let mut cause = std::error::Error::source(refusal);
    while let Some(error) = cause {
        text.push_str(&format!(": {error}"));
        cause = error.source();
    }
    text
}

fn refused(refusal: &Refusal) -> anyhow::Error {
    anyhow::anyhow!("catalog refused: {}", refusal_text(refusal))
}

/// The cached envelope (not fresh from the server).
fn cached_envelope(state: &StateDir) -> Fetched {
    state
        .cached_envelope()?
        .map(|b| (b, false))
        .ok_or_else(|| anyhow::anyhow!("no cached catalog to fall back on"))
}

/// The envelope to verify, whether it came fresh from the server, and a run message.
fn fetch(
    state: &StateDir,
    source: &Source<'_>,
    facts: &steward_protocol::Facts,
    signing: &steward_protocol::envelope::SigningKeyPair,
) -> (Fetched, &'static str, Option<String>) {
    match source {
        Source::File { path, .. } => (read_envelope(path).map(|b| (b, false)), "file", None),
        Source::Server { client, .. } => {
            let etag = state.accepted().ok().flatten().map(|a| a.digest);
            let cached = || cached_envelope(state);
            match catalog_honouring_retry_after(client, signing, facts, etag.as_deref()) {
                Ok(CatalogReply::Envelope(bytes)) => (Ok((bytes, true)), "server", None),
                Ok(CatalogReply::NotModified) => (cached(), "server", None),
                Err(
                    e @ (ClientError::Unavailable(_)
                    | ClientError::Busy { .. }
                    | ClientError::Redirected { .. }
                    | ClientError::NotACatalog(_)),
                ) => {
                    let why = e.to_string();
                    let msg = format!("server unavailable ({why}); applying the cached catalog");
                    let fallback = cached()
                        .map_err(|e| anyhow::anyhow!("server unavailable ({why}), and {e:#}"));
                    (fallback, "cache", Some(msg))
                }
                Err(e) => (Err(e.into()), "server", None),
            }
        }
    }
}

/// Most a run waits in total for a busy server (429) before using its cached catalog.
const MAX_BUSY_WAIT: Duration = Duration::from_secs(120);

/// `client.catalog`, coming back after `Retry-After` while the server is busy (R15: after a
/// restart or a template rollout every host asks at once), within [`MAX_BUSY_WAIT`] in total.
fn catalog_honouring_retry_after(
    client: &Client,
    signing: &steward_protocol::envelope::SigningKeyPair,
    facts: &steward_protocol::Facts,
    etag: Option<&str>,
) -> Result<CatalogReply, ClientError> {
    let mut waited = Duration::ZERO;
    loop {
        match client.catalog(signing, facts, etag) {
            Err(ClientError::Busy { retry_after }) => {
                let pause = Duration::from_secs(retry_after.max(1));
                if waited + pause > MAX_BUSY_WAIT {
                    return Err(ClientError::Busy { retry_after });
                }
                std::thread::sleep(pause);
                waited += pause;
            }
            other => return other,
        }
    }
}

fn read_envelope(path: &Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    anyhow::ensure!(
        meta.len() <= MAX_CATALOG_BYTES as u64,
        "catalog refused: {} is larger than {MAX_CATALOG_BYTES} bytes",
        path.display()
    );
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn apply(
    verified: &VerifiedCatalog,
    state: &StateDir,
    options: &RunOptions,
    stop: &AtomicBool,
) -> anyhow::Result<Vec<steward_protocol::ResourceEvent>> {
    let host = Host::new(&options.root)
        .with_context(|| format!("opening the root {}", options.root.display()))?;
    let key = state.encryption_key()?;
    let mut cx = Context::new(&host, options.noop, Some(&key));
    cx.command_timeout = options.command_timeout;
    let limits = RunLimits {
        deadline: Some(Instant::now() + options.run_timeout),
    };
    let events = engine::apply(&verified.catalog, &cx, limits, stop);
    if !options.noop {
        // A deferred restart of a unit that is no longer `when_idle` must not linger.
        if let Err(e) = crate::pending::retain(&host, &verified.catalog) {
            eprintln!("warning: deferred restarts: {e:#}");
        }
    }
    Ok(events)
}

/// Sends spooled reports oldest first; stops at the first one the server cannot take now.
/// A report the server refuses as invalid (4xx) is dropped, so one bad report cannot block the
/// queue forever.
pub fn flush_spool(
    spool: &Spool,
    client: &Client,
    signing: &steward_protocol::envelope::SigningKeyPair,
) -> anyhow::Result<()> {
    for path in spool.list()? {
        let spooled = spool.read(&path)?;
        match client.report(signing, spooled.bytes.clone()) {
            Ok(()) => spool.remove(&spooled)?,
            Err(ClientError::Refused { status, message }) if status == 400 || status == 413 => {
                warn_dropped(&path, status, &message);
                spool.remove(&spooled)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn warn_dropped(path: &Path, status: u16, message: &str) {
    eprintln!(
        "warning: the server refused spooled report {} ({status}: {message}); dropped",
        path.display()
    );
}

fn summary(report: &RunReport, reported: bool) -> RunSummary {
    RunSummary {
        run_id: report.run_id.0.clone(),
        started_at: report.started_at,
        duration_ms: report.duration_ms,
        serial: report.catalog_serial,
        status: report.status,
        totals: report.totals,
        message: report.message.clone(),
        failures: report
            .events
            .iter()
            .filter(|e| e.status == ResourceStatus::Failed)
            .map(|e| format!("{}: {}", e.resource, e.message.as_deref().unwrap_or("")))
            .collect(),
        reported,
    }
}

/// Human output: one line per changed, failed or skipped resource, then a summary.
pub fn human(outcome: &RunOutcome) -> String {
    let r = &outcome.report;
    let mut out = String::new();
    for e in &r.events {
        let word = match e.status {
            ResourceStatus::Unchanged => continue,
            ResourceStatus::Changed => "changed",
            ResourceStatus::WouldChange => "would change",
            ResourceStatus::Failed => "FAILED",
            ResourceStatus::Skipped => "skipped",
            ResourceStatus::Kept => "kept",
            ResourceStatus::Deferred => "deferred",
        };
        out.push_str(&format!(
            "{word:>12}  {}{}\n",
            e.resource,
            e.message
                .as_deref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        ));
    }
    if let Some(m) = &r.message {
        out.push_str(&format!("{m}\n"));
    }
    let t = &r.totals;
    out.push_str(&format!(
        "run {} {}: serial {}, {} resources: {} changed, {} would change, {} failed, {} skipped, {} unchanged in {} ms (catalog from {}{})\n",
        r.run_id.0,
        serde_json::to_value(r.status).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        r.catalog_serial.map_or("-".to_string(), |s| s.to_string()),
        t.resources,
        t.changed,
        t.would_change,
        t.failed,
        t.skipped,
        t.unchanged,
        r.duration_ms,
        outcome.catalog_source,
        if outcome.delivered { ", reported" } else { "" },
    ));
    out
}
