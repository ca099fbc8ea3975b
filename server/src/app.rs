//! Building the server from its resolved configuration ([`Server::build`]) and running it on
//! already bound listeners until a shutdown future completes ([`serve`]).
//!
//! Tests bind `127.0.0.1:0` themselves and pass a oneshot as the shutdown future: no sleeps,
//! no fixed ports. `steward-server serve` binds the configured addresses and passes SIGTERM or
//! SIGINT.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use anyhow::Context;
use hyper::body::Incoming;
use tokio::sync::watch;

use crate::config::{ConnectionSettings, PlainAddr, ProxySource, ServerConfig, VaultSource};
use crate::db::Db;
use crate::http;
use crate::keys::{create_private_dir, ServerKeys};
use crate::metrics::Metrics;
use crate::service::catalog::CatalogService;
use crate::service::enroll::EnrollLimits;
use crate::service::facts::FactsRecorder;
use crate::service::nonces::{self, NonceStore};
use crate::service::reports::ReportWriter;
use crate::service::vault_source::{VaultBackend, VaultFile};
use crate::service::waiters::Waiters;
use crate::service::{self};
use crate::state::{AppInner, AppState};
use crate::tls;
use crate::vault::VaultClient;

/// The database file in the data directory.
pub const DB_FILE: &str = "steward.db";

/// How long in-flight requests may take to finish after a shutdown signal.
const GRACEFUL_SHUTDOWN: Duration = Duration::from_secs(20);
/// How often the certificate renewal check runs.
const CERTIFICATE_CHECK: Duration = Duration::from_secs(3600);
/// How often pending run-now requests (possibly made by the CLI in another process) are
/// looked for, to wake their long-polls.
const RUN_NOW_SWEEP: Duration = Duration::from_secs(5);
/// How often the WAL is copied back into the database file in the background.
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);
/// How often expired web UI sessions and old failed-login records are deleted (they are refused
/// at use anyway; this keeps the tables small).
const SESSION_PRUNE_INTERVAL: Duration = Duration::from_secs(3600);

/// A built server: state, TLS configuration and the shutdown switch.
#[derive(Debug)]
pub struct Server {
    state: AppState,
    tls: Arc<rustls::ServerConfig>,
    shutdown: watch::Sender<bool>,
}

impl Server {
    /// Creates the data directory and keys if needed, the TLS certificate, opens (and migrates)
    /// the database and sets up the Vault client and the catalog service. Sends nothing to
    /// Vault (readiness tells whether it answers).
    pub async fn build(config: ServerConfig) -> anyhow::Result<Server> {
        create_private_dir(&config.data_dir)?;
        let keys = Arc::new(ServerKeys::load_or_create(
            &config.data_dir,
            config.certificate_lifetime,
            service::now(),
        )?);
        let tls = tls::server_config(&config.tls, &config.data_dir)?;
        let db = Db::open(&config.data_dir.join(DB_FILE))
            .await
            .context("opening the database")?;
        let vault = match &config.vault {
            VaultSource::Vault(vault) => VaultBackend::Client(
                VaultClient::new(vault.clone()).context("setting up the vault client")?,
            ),
            VaultSource::File(path) => {
                tracing::warn!(file = %path.display(), "vault data comes from a file: for development only");
                VaultBackend::File(VaultFile::new(path.clone()))
            }
        };
        let nonces = NonceStore::new(config.max_clock_skew_secs);
        nonces
            .load(&db, service::now())
            .await
            .context("loading the request nonces")?;
        let metrics = Arc::new(Metrics::default());
        let waiters = Arc::new(Waiters::default());
        let catalogs = Arc::new(CatalogService::new(
            config.site_dir.clone(),
            config.site_check_interval,
            vault.clone(),
            db.clone(),
            Arc::clone(&keys),
            Arc::clone(&metrics),
            Arc::clone(&waiters),
            config.max_concurrent_compiles,
            config.envelope_cache_entries,
        ));
        let (shutdown, shutdown_rx) = watch::channel(false);
        let state = AppState(Arc::new(AppInner {
            enroll_limits: EnrollLimits::new(&config.enroll),
            nonces,
            facts: FactsRecorder::default(),
            reports: ReportWriter::spawn(db.clone()),
            config: Arc::new(config),
            db,
            keys,
            catalogs,
            waiters,
            metrics,
            vault,
            shutdown: shutdown_rx,
        }));
        Ok(Server {
            state,
            tls,
            shutdown,
        })
    }

    /// The shared state (for tests and the CLI).
    pub fn state(&self) -> &AppState {
        &self.state
    }
}

/// Listeners, bound by the caller.
#[derive(Debug, Default)]
pub struct Listeners {
    /// The HTTPS listener.
    pub tls: Option<std::net::TcpListener>,
    /// The plain HTTP listener (loopback or unix socket).
    pub plain: Option<PlainListener>,
}

/// A bound plain HTTP listener.
#[derive(Debug)]
pub enum PlainListener {
    /// Loopback TCP.
    Tcp(tokio::net::TcpListener),
    /// Unix socket.
    Unix(tokio::net::UnixListener),
}

impl Listeners {
    /// Binds the configured addresses (a stale unix socket file is replaced).
    pub async fn bind(config: &ServerConfig) -> anyhow::Result<Listeners> {
        let tls = std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("binding {}", config.listen))?;
        let plain = match &config.plain_listen {
            None => None,
            Some(PlainAddr::Tcp(addr)) => Some(PlainListener::Tcp(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("binding {addr}"))?,
            )),
            Some(PlainAddr::Unix(path)) => {
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|meta| std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()))
                {
                    std::fs::remove_file(path)
                        .with_context(|| format!("removing stale socket {}", path.display()))?;
                }
                let listener = tokio::net::UnixListener::bind(path)
                    .with_context(|| format!("binding {}", path.display()))?;
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
                    .with_context(|| format!("setting the mode of {}", path.display()))?;
                Some(PlainListener::Unix(listener))
            }
        };
        Ok(Listeners {
            tls: Some(tls),
            plain,
        })
    }
}

/// Serves until `shutdown` completes, then stops accepting, lets in-flight requests finish
/// (long-polls return at once) and closes the database.
pub async fn serve(
    server: Server,
    listeners: Listeners,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let Server {
        state,
        tls,
        shutdown: shutdown_switch,
    } = server;
    // The switch stops the listeners: with the `stopper` below, or when a listener fails.
    let router = http::router(state.clone());
    let mut background = spawn_background(&state);

    let gate = Arc::new(ConnectionGate::new(
        state.config.connections.clone(),
        state.config.ui.trusted_proxies.clone(),
    ));
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = listeners.tls {
        listener
            .set_nonblocking(true)
            .context("setting the tls listener non-blocking")?;
        let listener =
            tokio::net::TcpListener::from_std(listener).context("registering the tls listener")?;
        tracing::info!(addr = ?listener.local_addr().ok(), "listening (https)");
        let acceptor = tokio_rustls::TlsAcceptor::from(tls);
        let connections = Connections::new(&router, &gate, &state);
        tasks.spawn(async move {
            connections
                .accept_tcp(listener, Some(acceptor))
                .await
                .context("https listener")
        });
    }
    if let Some(listener) = listeners.plain {
        let connections = Connections::new(&router, &gate, &state);
        match listener {
            PlainListener::Tcp(listener) => {
                tracing::info!(addr = ?listener.local_addr().ok(), "listening (plain http, loopback)");
                tasks.spawn(async move {
                    connections
                        .accept_tcp(listener, None)
                        .await
                        .context("plain http listener")
                });
            }
            PlainListener::Unix(listener) => {
                tracing::info!("listening (plain http, unix socket)");
                tasks.spawn(async move {
                    connections
                        .accept_unix(listener)
                        .await
                        .context("unix socket listener")
                });
            }
        }
    }
    let stopper = tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down");
        let _ = shutdown_switch.send(true);
    });
    let mut result = Ok(());
    while let Some(finished) = tasks.join_next().await {
        let outcome = finished.context("a listener task failed").and_then(|r| r);
        if let Err(error) = outcome {
            tracing::error!(error = format!("{error:#}"), "listener stopped");
            if result.is_ok() {
                result = Err(error);
            }
            // One listener failing stops the others.
            tasks.abort_all();
        }
    }
    stopper.abort();
    background.abort_all();
    // Every request has finished: what they accepted is written before the database closes.
    state.reports.stop().await;
    if let Err(error) = state.nonces.flush(&state.db, service::now()).await {
        tracing::warn!(error = %error, "writing the request nonces failed");
    }
    state.db.close().await;
    result
}

/// Site reloads and Vault watching (so long-polls notice changes without agent traffic),
/// certificate renewal, the
/// run-now sweep, writing accepted request nonces, WAL checkpoints (so that the connection that
/// commits, usually the report writer, does not copy the WAL back itself) and pruning expired
/// UI sessions.
fn spawn_background(state: &AppState) -> tokio::task::JoinSet<()> {
    let mut tasks = tokio::task::JoinSet::new();
    let site_state = state.clone();
    tasks.spawn(async move {
        // At least every 50 ms: a zero interval (re-read on every request) still needs a
        // period for this loop.
        let period = site_state
            .config
            .site_check_interval
            .max(Duration::from_millis(50));
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            site_state.catalogs.refresh_site().await;
        }
    });
    let vault_state = state.clone();
    tasks.spawn(async move {
        let period = vault_state
            .vault
            .watch_interval(vault_state.config.site_check_interval);
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            vault_state.catalogs.refresh_vault().await;
        }
    });
    let cert_state = state.clone();
    tasks.spawn(async move {
        let mut interval = tokio::time::interval(CERTIFICATE_CHECK);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if let Err(error) = cert_state.keys.renew_certificate_if_due(service::now()) {
                tracing::error!(
                    error = format!("{error:#}"),
                    "renewing the catalog key certificate failed"
                );
            }
        }
    });
    let sweep_state = state.clone();
    tasks.spawn(async move {
        let mut interval = tokio::time::interval(RUN_NOW_SWEEP);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            match crate::db::nodes::with_run_now_pending(&sweep_state.db).await {
                Ok(nodes) => nodes
                    .iter()
                    .for_each(|node| sweep_state.waiters.notify(node)),
                Err(error) => tracing::warn!(error = %error, "run-now sweep failed"),
            }
        }
    });
    let nonce_state = state.clone();
    tasks.spawn(async move {
        let mut interval = tokio::time::interval(nonces::FLUSH_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            let now = service::now();
            nonce_state.nonces.sweep(now);
            if let Err(error) = nonce_state.nonces.flush(&nonce_state.db, now).await {
                tracing::warn!(error = %error, "writing the request nonces failed; retrying");
            }
        }
    });
    let checkpoint_db = state.db.clone();
    tasks.spawn(async move {
        let mut interval = tokio::time::interval(CHECKPOINT_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            if let Err(error) = checkpoint_db.checkpoint_passive().await {
                tracing::warn!(error = %error, "checkpointing the WAL failed");
            }
        }
    });
    let session_state = state.clone();
    tasks.spawn(async move {
        let mut interval = tokio::time::interval(SESSION_PRUNE_INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            interval.tick().await;
            let settings = &session_state.config.ui;
            if let Err(error) =
                crate::ui::session::prune(&session_state.db, settings, service::now()).await
            {
                tracing::warn!(error = %error, "pruning expired ui sessions failed");
            }
        }
    });
    crate::retention::spawn(&mut tasks, state);
    tasks
}

/// Open connections, counted in total and per peer address (THREATS S6): a connection over a
/// cap is closed as soon as it is accepted, before any TLS or HTTP work. Trusted proxies
/// (`[ui] trusted_proxies`) count only in the total: behind one, every host shares its address.
#[derive(Debug)]
struct ConnectionGate {
    settings: ConnectionSettings,
    trusted_proxies: Vec<ProxySource>,
    open: Mutex<GateCounts>,
}

#[derive(Debug, Default)]
struct GateCounts {
    total: usize,
    per_address: HashMap<IpAddr, usize>,
}

/// The address a peer is counted under for `max_connections_per_address`: an IPv4 address
/// itself, an IPv6 address by its /64, since one host or home gets a whole /64 and could
/// otherwise open the total cap's worth of connections from as many addresses.
fn counted_as(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(std::net::Ipv6Addr::from(prefix))
        }
    }
}

/// Why a connection was closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GateRefusal {
    Total,
    PerAddress,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
struct GatePermit {
    gate: Arc<ConnectionGate>,
    address: Option<IpAddr>,
}

impl ConnectionGate {
    fn new(settings: ConnectionSettings, trusted_proxies: Vec<ProxySource>) -> ConnectionGate {
        ConnectionGate {
            settings,
            trusted_proxies,
            open: Mutex::new(GateCounts::default()),
        }
    }

    /// Admits a connection from `peer` (`None`: the unix socket) or says which cap it hits.
    fn admit(self: &Arc<Self>, peer: Option<IpAddr>) -> Result<GatePermit, GateRefusal> {
        let address = peer
            .map(|ip| ip.to_canonical())
            .filter(|ip| !self.trusted_proxies.iter().any(|t| t.contains(Some(*ip))));
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if open.total >= self.settings.max_connections {
            return Err(GateRefusal::Total);
        }
        if let Some(ip) = address.map(counted_as) {
            let count = open.per_address.entry(ip).or_default();
            if *count >= self.settings.max_connections_per_address {
                return Err(GateRefusal::PerAddress);
            }
            *count += 1;
        }
        open.total += 1;
        Ok(GatePermit {
            gate: Arc::clone(self),
            address: address.map(counted_as),
        })
    }
}

impl Drop for GatePermit {
    fn drop(&mut self) {
        let mut open = self
            .gate
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.total -= 1;
        if let Some(ip) = self.address {
            if let Some(count) = open.per_address.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    open.per_address.remove(&ip);
                }
            }
        }
    }
}

/// One listener's connections: admission through the gate, the TLS handshake (bounded),
/// HTTP/1.1 with the header-read timeout (which also closes idle keep-alives) and request
/// bodies that may not stall, and the graceful stop.
#[derive(Clone)]
struct Connections {
    router: axum::Router,
    gate: Arc<ConnectionGate>,
    stop: watch::Receiver<bool>,
}

impl std::fmt::Debug for Connections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connections").finish_non_exhaustive()
    }
}

/// After this many accept errors in a row (e.g. out of file descriptors), each further one
/// waits a little before trying again, so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

impl Connections {
    fn new(router: &axum::Router, gate: &Arc<ConnectionGate>, state: &AppState) -> Connections {
        Connections {
            router: router.clone(),
            gate: Arc::clone(gate),
            stop: state.shutdown.clone(),
        }
    }

    fn settings(&self) -> &ConnectionSettings {
        &self.gate.settings
    }

    async fn accept_tcp(
        self,
        listener: tokio::net::TcpListener,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> anyhow::Result<()> {
        let mut stop = self.stop.clone();
        let mut open = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = stopped(&mut stop) => break,
                Some(_) = open.join_next(), if !open.is_empty() => continue,
                accepted = listener.accept() => accepted,
            };
            let (stream, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    tracing::warn!(error = %error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Some(permit) = self.admit(Some(peer.ip())) else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let this = self.clone();
            let tls = tls.clone();
            open.spawn(async move {
                let _permit = permit;
                match tls {
                    None => this.serve_http(stream, Some(peer)).await,
                    Some(acceptor) => {
                        let handshake = tokio::time::timeout(
                            this.settings().tls_handshake_timeout,
                            acceptor.accept(stream),
                        );
                        match handshake.await {
                            Ok(Ok(stream)) => this.serve_http(stream, Some(peer)).await,
                            Ok(Err(error)) => {
                                tracing::debug!(error = %error, "tls handshake failed");
                            }
                            Err(_) => tracing::debug!("tls handshake timed out"),
                        }
                    }
                }
            });
        }
        drain(open).await;
        Ok(())
    }

    async fn accept_unix(self, listener: tokio::net::UnixListener) -> anyhow::Result<()> {
        let mut stop = self.stop.clone();
        let mut open = tokio::task::JoinSet::new();
        loop {
            let accepted = tokio::select! {
                () = stopped(&mut stop) => break,
                Some(_) = open.join_next(), if !open.is_empty() => continue,
                accepted = listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(error = %error, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let Some(permit) = self.admit(None) else {
                continue;
            };
            let this = self.clone();
            open.spawn(async move {
                let _permit = permit;
                this.serve_http(stream, None).await;
            });
        }
        drain(open).await;
        Ok(())
    }

    fn admit(&self, peer: Option<IpAddr>) -> Option<GatePermit> {
        match self.gate.admit(peer) {
            Ok(permit) => Some(permit),
            Err(refusal) => {
                let (cap, limit) = match refusal {
                    GateRefusal::Total => ("max_connections", self.settings().max_connections),
                    GateRefusal::PerAddress => (
                        "max_connections_per_address",
                        self.settings().max_connections_per_address,
                    ),
                };
                // Warn: many hosts behind one NAT address hit the per-address cap (each agent
                // holds a long-poll); raise it or list the NAT as a trusted proxy.
                tracing::warn!(peer = ?peer, cap, limit, "connection closed: over the cap");
                None
            }
        }
    }

    /// HTTP/1.1 on one connection until the client or the server ends it.
    async fn serve_http<I>(&self, io: I, peer: Option<SocketAddr>)
    where
        I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let router = self.router.clone();
        let body_idle = self.settings().body_idle_timeout;
        let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut request =
                request.map(|body| axum::body::Body::new(StallGuard::new(body, body_idle)));
            if let Some(peer) = peer {
                request
                    .extensions_mut()
                    .insert(axum::extract::ConnectInfo(peer));
            }
            tower::ServiceExt::oneshot(router.clone(), request)
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(self.settings().header_read_timeout)
            .keep_alive(true);
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(io), service);
        tokio::pin!(connection);
        let mut stop = self.stop.clone();
        let outcome = tokio::select! {
            outcome = connection.as_mut() => outcome,
            () = stopped(&mut stop) => {
                connection.as_mut().graceful_shutdown();
                connection.await
            }
        };
        if let Err(error) = outcome {
            tracing::debug!(error = %error, "connection ended with an error");
        }
    }
}

/// Completes when the server is told to stop (or the switch is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// After a stop: lets open connections finish their requests (they were told to stop after
/// them), for at most [`GRACEFUL_SHUTDOWN`], then cuts the rest.
async fn drain(mut open: tokio::task::JoinSet<()>) {
    let finished = tokio::time::timeout(GRACEFUL_SHUTDOWN, async {
        while open.join_next().await.is_some() {}
    });
    if finished.await.is_err() {
        tracing::warn!(
            connections = open.len(),
            "connections still open after the grace period: closing them"
        );
        open.abort_all();
    }
}

/// A request body that fails when the client stops sending it for `idle` (THREATS S6: a
/// partial body and then nothing). The clock starts when the handler first reads.
#[derive(Debug)]
struct StallGuard {
    inner: Incoming,
    idle: Duration,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Never reset: a body that trickles a byte just inside every idle period still ends.
    total: Option<Pin<Box<tokio::time::Sleep>>>,
}

/// A whole request body may take this many idle timeouts (120 s with the default 30 s).
const BODY_TOTAL_IDLE_PERIODS: u32 = 4;

impl StallGuard {
    fn new(inner: Incoming, idle: Duration) -> StallGuard {
        StallGuard {
            inner,
            idle,
            deadline: None,
            total: None,
        }
    }
}

impl http_body::Body for StallGuard {
    type Data = axum::body::Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.get_mut();
        let idle = this.idle;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        let total = this
            .total
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle * BODY_TOTAL_IDLE_PERIODS)));
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                deadline.as_mut().reset(tokio::time::Instant::now() + idle);
                Poll::Ready(frame.map(|frame| frame.map_err(Into::into)))
            }
            Poll::Pending => {
                if deadline.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(format!(
                        "the request body stalled for {} s",
                        idle.as_secs()
                    )
                    .into())));
                }
                if total.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Some(Err(format!(
                        "the request body took longer than {} s in all",
                        (idle * BODY_TOTAL_IDLE_PERIODS).as_secs()
                    )
                    .into())));
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(total: usize, per_address: usize, trusted: &[&str]) -> Arc<ConnectionGate> {
        Arc::new(ConnectionGate::new(
            ConnectionSettings {
                max_connections: total,
                max_connections_per_address: per_address,
                ..ConnectionSettings::default()
            },
            trusted
                .iter()
                .map(|t| ProxySource::parse(t).unwrap())
                .collect(),
        ))
    }

    /// THREATS S6: caps per address and in total; a closed connection frees its place; a
    /// trusted proxy counts only in the total; IPv4-mapped IPv6 is the same address.
    #[test]
    fn the_connection_gate_caps_per_address_and_in_total() {
        let gate = gate(4, 2, &["10.0.0.0/8"]);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let a_mapped: IpAddr = "::ffff:192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let proxy: IpAddr = "10.0.0.1".parse().unwrap();
        let first = gate.admit(Some(a)).unwrap();
        let _second = gate.admit(Some(a_mapped)).unwrap();
        assert_eq!(gate.admit(Some(a)).unwrap_err(), GateRefusal::PerAddress);
        drop(first);
        let _again = gate.admit(Some(a)).unwrap();
        let _proxied = gate.admit(Some(proxy)).unwrap();
        let _unix = gate.admit(None).unwrap();
        assert_eq!(gate.admit(Some(b)).unwrap_err(), GateRefusal::Total);
        assert_eq!(gate.admit(Some(proxy)).unwrap_err(), GateRefusal::Total);
        drop(_unix);
        let _b = gate.admit(Some(b)).unwrap();
        let open = gate.open.lock().unwrap();
        assert_eq!(open.total, 4);
        assert_eq!(open.per_address.get(&a), Some(&2));
        assert!(!open.per_address.contains_key(&proxy));
    }

    /// IPv6 peers are counted by their /64: one host's many addresses share one cap.
    #[test]
    fn ipv6_peers_share_the_per_address_cap_of_their_64() {
        let gate = gate(10, 2, &[]);
        let one: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let two: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        let _a = gate.admit(Some(one)).unwrap();
        let _b = gate.admit(Some(two)).unwrap();
        let held: IpAddr = "2001:db8:1:2:abcd::1".parse().unwrap();
        assert_eq!(gate.admit(Some(held)).unwrap_err(), GateRefusal::PerAddress);
        let _c = gate.admit(Some(other)).unwrap();
    }
}
