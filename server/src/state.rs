//! [`AppState`]: what every handler and background task shares, built once by
//! [`crate::Server::build`].

use std::ops::Deref;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::ServerConfig;
use crate::db::Db;
use crate::keys::ServerKeys;
use crate::metrics::Metrics;
use crate::service::catalog::CatalogService;
use crate::service::enroll::EnrollLimits;
use crate::service::facts::FactsRecorder;
use crate::service::nonces::NonceStore;
use crate::service::reports::ReportWriter;
use crate::service::vault_source::VaultBackend;
use crate::service::waiters::Waiters;

/// Shared server state (cheap to clone).
#[derive(Debug, Clone)]
pub struct AppState(pub Arc<AppInner>);

/// The parts of [`AppState`].
#[derive(Debug)]
pub struct AppInner {
    /// The store.
    pub db: Db,
    /// Root, catalog and content keys.
    pub keys: Arc<ServerKeys>,
    /// The resolved configuration.
    pub config: Arc<ServerConfig>,
    /// Catalog compilation and serials.
    pub catalogs: Arc<CatalogService>,
    /// Long-poll wake-ups.
    pub waiters: Arc<Waiters>,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Enrollment rate limits.
    pub enroll_limits: EnrollLimits,
    /// Replay memory of signed agent requests.
    pub nonces: NonceStore,
    /// Facts writes skipped while they do not change.
    pub facts: FactsRecorder,
    /// The run report writer (group commit).
    pub reports: ReportWriter,
    /// Vault (for readiness).
    pub vault: VaultBackend,
    /// Becomes `true` when the server shuts down (long-polls return).
    pub shutdown: watch::Receiver<bool>,
}

impl Deref for AppState {
    type Target = AppInner;

    fn deref(&self) -> &AppInner {
        &self.0
    }
}
