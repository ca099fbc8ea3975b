//! Enrollment and the daemon loop (DESIGN §5, §7).
//!
//! Enrollment: the agent's keys are made on first start (never shipped in an image), the
//! server is asked with the join string's token, and its answer is trusted only if its root
//! key matches the fingerprint pinned in the join string. While the node is pending, the agent
//! asks again with backoff (the same key again is idempotent on the server).
//!
//! Daemon: a run at start, then every interval plus this node's splay, and at once when the
//! long-poll reports a new serial, a site change or an admin's run-now. SIGTERM lets the
//! current resource finish, then the run stops and the daemon exits.
//!
//! Deferred restarts ([`crate::pending`]): while any is recorded, the daemon checks every
//! `idle_check_secs` (default 60), without a run, whether a recorded user is idle now (or has no account), or
//! a record's `max_defer` has passed; if so it starts a run at once, so an idle-gated restart
//! happens within about a minute of its user going idle instead of at the next interval.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use base64::Engine;
use steward_protocol::join::JoinString;
use steward_protocol::{EnrollRequest, EnrollmentStatus};

use crate::client::{check_enrollment, Client, ClientError};
use crate::config::AgentConfig;
use crate::facts;
use crate::run::{self, RunOptions, Source};
use crate::state::{Identity, StateDir};

/// The deferred restarts of `root` that can happen now (see [`crate::pending::due`]), as
/// `unit (user, deferred since T)` words for the log; empty when there are none or they cannot be read (the
/// next run reports that).
pub fn idle_restarts_due(root: &std::path::Path) -> Vec<String> {
    let due = crate::host::Host::new(root)
        .map_err(anyhow::Error::from)
        .and_then(|host| crate::pending::due(&host, crate::state::now()));
    match due {
        Ok(records) => records
            .iter()
            .map(|r| {
                let since = crate::pending::rfc3339(r.since);
                format!("{} ({}, deferred since {since})", r.unit, r.user)
            })
            .collect(),
        Err(e) => {
            eprintln!("steward-agent: checking deferred restarts: {e:#}");
            Vec::new()
        }
    }
}

/// The result of one enrollment request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enrolled {
    /// Approved: catalogs may be fetched.
    Approved,
    /// Waiting for an admin.
    Pending,
}

/// Sends one enrollment request; records the identity when the server's root key matches.
pub fn enroll_once(
    state: &StateDir,
    join: &JoinString,
    config: &AgentConfig,
    root: &std::path::Path,
    hostname: Option<&str>,
) -> anyhow::Result<Enrolled> {
    let client = client_for(config, join.server_url())?;
    let facts = facts::gather(root);
    let hostname = hostname
        .map(str::to_string)
        .or_else(|| facts.hostname.clone())
        .context("cannot tell this host's name; pass --hostname")?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let signing_key = state.signing_key()?;
    let request = EnrollRequest {
        hostname,
        signing_key: b64.encode(signing_key.public_bytes()),
        encryption_key: b64.encode(state.encryption_key()?.public_bytes()),
        facts,
        token: Some(join.token().expose()),
        agent_version: facts::AGENT_VERSION.to_string(),
    };
    let response = client.enroll(&signing_key, &request)?;
    check_enrollment(&response, join.root_key_id())?;
    let approved = response.status == EnrollmentStatus::Approved;
    match response.status {
        EnrollmentStatus::Approved | EnrollmentStatus::Pending => {}
        EnrollmentStatus::Revoked => bail!(
            "the server refused this node ({}); an admin must approve it",
            response.message.as_deref().unwrap_or("revoked")
        ),
        EnrollmentStatus::Quarantined => bail!(
            "the server quarantined this node's key (seen with two machine ids: a cloned \
             identity?); run `steward-agent template-seal` on templates, and ask an admin"
        ),
    }
    state.set_identity(&Identity {
        node: response.node,
        server_url: join.server_url().to_string(),
        root_key_id: join.root_key_id().clone(),
        approved,
    })?;
    Ok(if approved {
        Enrolled::Approved
    } else {
        Enrolled::Pending
    })
}

/// Enrolls, retrying with backoff while the server is unreachable or the node is pending,
/// until approved or `stop`.
pub fn enroll_until_approved(
    state: &StateDir,
    join: &JoinString,
    config: &AgentConfig,
    root: &std::path::Path,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let mut backoff = Duration::from_secs(5);
    loop {
        match enroll_once(state, join, config, root, None) {
            Ok(Enrolled::Approved) => return Ok(()),
            Ok(Enrolled::Pending) => eprintln!(
                "enrollment pending approval; asking again in {}s",
                backoff.as_secs()
            ),
            Err(e) if is_retryable(&e) => {
                eprintln!("enrollment: {e:#}; retrying in {}s", backoff.as_secs())
            }
            Err(e) => return Err(e),
        }
        if sleep_unless_stopped(backoff, stop) {
            bail!("stopped while enrolling");
        }
        backoff = (backoff * 2).min(Duration::from_secs(300));
    }
}

fn is_retryable(e: &anyhow::Error) -> bool {
    matches!(
        e.downcast_ref::<ClientError>(),
        Some(ClientError::Unavailable(_) | ClientError::Busy { .. })
    )
}

/// A client for `url` with the configured CA.
pub fn client_for(config: &AgentConfig, url: &str) -> anyhow::Result<Client> {
    Client::new(
        config.server_url.as_deref().unwrap_or(url),
        config.ca_pem()?.as_deref(),
        Duration::from_secs(60),
    )
}

/// Sleeps `d`, waking early on `stop`; returns whether stopped.
pub fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(200)));
    }
    stop.load(Ordering::Relaxed)
}

/// The daemon: enroll if needed, then run forever (until SIGTERM).
pub fn daemon(
    config: &AgentConfig,
    options: &RunOptions,
    state: &StateDir,
    stop: &Arc<AtomicBool>,
) -> anyhow::Result<()> {
    let identity = match state.identity()? {
        Some(identity) if identity.approved => identity,
        _ => {
            let join: JoinString = config
                .join_text()?
                .context("not enrolled and no join string in the configuration")?
                .parse()
                .context("invalid join string")?;
            enroll_until_approved(state, &join, config, &options.root, stop)?;
            state
                .identity()?
                .context("enrolled but no identity recorded")?
        }
    };
    let client = client_for(config, &identity.server_url)?;
    let interval = Duration::from_secs(config.interval_secs + config.splay_secs(&identity.node.0));
    eprintln!(
        "steward-agent: node {} of {}; {} every {}s (interval {} + splay {})",
        identity.node,
        identity.server_url,
        if options.noop {
            "dry runs (noop)"
        } else {
            "runs"
        },
        interval.as_secs(),
        config.interval_secs,
        config.splay_secs(&identity.node.0)
    );
    let source = Source::Server {
        client: &client,
        identity: &identity,
    };
    // One long-poll at a time runs in the background; its answers arrive on this channel.
    let (wake_tx, wake_rx) = mpsc::channel::<String>();
    let mut poll_running = Arc::new(AtomicBool::new(false));
    // The deferred restarts that started the last early run: if the same ones are still due
    // after it (their restart failed), they wait for the interval instead of a run a minute.
    let mut last_early: Vec<String> = Vec::new();
    let idle_every = Duration::from_secs(config.idle_check_secs.max(1));
    loop {
        match run::run_once(state, &source, options, stop) {
            Ok(outcome) => eprint!("{}", run::human(&outcome)),
            Err(e) => eprintln!("run could not start: {e:#}"),
        }
        if stop.load(Ordering::Relaxed) {
            return Ok(());
        }
        let next = Instant::now() + interval;
        let mut idle_check = Instant::now() + idle_every;
        // Wait for the interval, a wake-up from the long-poll, a deferred restart that can
        // happen now, or SIGTERM.
        loop {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            let now = Instant::now();
            if now >= next {
                break;
            }
            if now >= idle_check {
                idle_check = now + idle_every;
                let due = idle_restarts_due(&options.root);
                if due.is_empty() || due == last_early {
                    last_early = due;
                } else {
                    eprintln!(
                        "steward-agent: deferred restart can happen now: {}; running now",
                        due.join(", ")
                    );
                    last_early = due;
                    break;
                }
            }
            if !poll_running.load(Ordering::Relaxed) {
                poll_running = Arc::new(AtomicBool::new(true));
                let flag = poll_running.clone();
                let tx = wake_tx.clone();
                let client = client.clone();
                let key = state.signing_key()?;
                let serial = state.accepted()?.map(|a| a.serial);
                let timeout = Duration::from_secs(config.wait_secs)
                    .min(next - now)
                    .max(Duration::from_secs(1));
                std::thread::spawn(move || {
                    let answer = client.wait(&key, serial, timeout);
                    let reason = match answer {
                        Ok(a) => a.reason,
                        // Back off a little before the next long-poll after an error. The
                        // poll counts as running until then: clearing the flag first would
                        // start a new poll every 250 ms while the server is unreachable.
                        Err(_) => {
                            std::thread::sleep(Duration::from_secs(10));
                            "error".to_string()
                        }
                    };
                    flag.store(false, Ordering::Relaxed);
                    let _ = tx.send(reason);
                });
            }
            match wake_rx.recv_timeout(Duration::from_millis(250)) {
                Ok(reason)
                    if matches!(
                        reason.as_str(),
                        "serial_changed" | "run_now" | "site_changed"
                    ) =>
                {
                    eprintln!("steward-agent: woken by the server ({reason}); running now");
                    break;
                }
                Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
    }
}
