//! Building the server from its resolved configuration ([`Server::build`]) and running it on
//! already bound listeners until a shutdown future completes ([`serve`]).
//!
//! Tests bind `127.0.0.1:0` themselves and pass a oneshot as the shutdown future: no sleeps,
//! no fixed ports. `steward-server serve` binds the configured addresses and passes SIGTERM or
//! SIGINT.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::watch;

use crate::config::{PlainAddr, ServerConfig, VaultSource};
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
    let router = http::router(state.clone());
    let mut background = spawn_background(&state);

    let handle = axum_server::Handle::new();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(listener) = listeners.tls {
        listener
            .set_nonblocking(true)
            .context("setting the tls listener non-blocking")?;
        let addr = listener.local_addr().ok();
        let server = axum_server::from_tcp_rustls(
            listener,
            axum_server::tls_rustls::RustlsConfig::from_config(tls),
        )
        .handle(handle.clone());
        let service = router
            .clone()
            .into_make_service_with_connect_info::<SocketAddr>();
        tracing::info!(addr = ?addr, "listening (https)");
        tasks.spawn(async move { server.serve(service).await.context("https listener") });
    }
    if let Some(listener) = listeners.plain {
        let mut stopping = state.shutdown.clone();
        let stopped = async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        };
        match listener {
            PlainListener::Tcp(listener) => {
                tracing::info!(addr = ?listener.local_addr().ok(), "listening (plain http, loopback)");
                let service = router
                    .clone()
                    .into_make_service_with_connect_info::<SocketAddr>();
                tasks.spawn(async move {
                    axum::serve(listener, service)
                        .with_graceful_shutdown(stopped)
                        .await
                        .context("plain http listener")
                });
            }
            PlainListener::Unix(listener) => {
                tracing::info!("listening (plain http, unix socket)");
                let service = router.clone().into_make_service();
                tasks.spawn(async move {
                    axum::serve(listener, service)
                        .with_graceful_shutdown(stopped)
                        .await
                        .context("unix socket listener")
                });
            }
        }
    }
    let stopper = {
        let handle = handle.clone();
        tokio::spawn(async move {
            shutdown.await;
            tracing::info!("shutting down");
            let _ = shutdown_switch.send(true);
            handle.graceful_shutdown(Some(GRACEFUL_SHUTDOWN));
        })
    };
    let mut result = Ok(());
    while let Some(finished) = tasks.join_next().await {
        let outcome = finished.context("a listener task failed").and_then(|r| r);
        if let Err(error) = outcome {
            tracing::error!(error = format!("{error:#}"), "listener stopped");
            if result.is_ok() {
                result = Err(error);
            }
            // One listener failing stops the others.
            handle.shutdown();
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
