//! Catalogs on demand (DESIGN §6): the site, reloaded when its files change; one prepared
//! [`Compiler`] per site hash; Vault data for the paths a node's compile needs; a bounded
//! number of concurrent compiles; serials that move only when the content does; signing,
//! sealing and the redacted copy in the database.
//!
//! # Serials and re-sealing
//!
//! A node's serial is `max(last + 1, now in ms)`, where `last` is the higher of the database's
//! floor and what this process issued (THREATS R7: a database restored from an old backup still
//! issues serials above anything an agent accepted).
//!
//! The serial moves **only when the content changes**. The content identity is an HMAC, keyed
//! with `content.key`, over the canonical bytes of the redacted catalog (serial, times and
//! provenance cleared) followed by every secret value in resource order: a changed Vault value
//! changes the identity, yet neither the value nor a plain hash of it is ever stored (the
//! identity lives in memory only). Provenance is left out so that a site edit that does not
//! touch a node's resources does not move its serial; the envelope then keeps the provenance of
//! the compile that first produced that content.
//!
//! Sealing is randomized, so the same content sealed twice gives other bytes, and an agent
//! refuses the same serial with other bytes (THREATS C3). The signed envelope of the current
//! serial is therefore kept **in memory** and served as is while the content is unchanged. A new
//! serial (freshly sealed, with a new `compiled_at` and `expires_at`) is issued when:
//! - the content changed;
//! - the envelope is lost (server restart): the first request after a restart gets a new serial;
//! - the envelope is past half its lifetime, so agents always hold a catalog far from expiry;
//! - the catalog key certificate was re-issued, or the node's encryption key changed.
//!
//! # Vault path discovery
//!
//! The compiler reports the paths it read ([`steward_catalogs::compile::CompiledCatalog::vault_paths`]).
//! A compile is given the site's roles path plus the paths the node's last successful compile
//! read (for a node seen first, the union of every node's paths for the current site). When a
//! template reads a path that was not fetched, the compile fails and names it in
//! [`steward_catalogs::compile::CompileError::missing_vault_paths`]; the service then fetches those paths and compiles
//! again, at most [`MAX_VAULT_ROUNDS`] times. A path Vault itself does not have is a real
//! failure (THREATS K6): the compile fails for that node, its last good catalog is served.
//!
//! # Failures
//!
//! A compile failure never reaches a host: the last good envelope (in memory) is served, else
//! the request gets 503. The failure is recorded (`db::compile_failures`), counted in metrics
//! and cleared by the next success.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use steward_catalogs::compile::{CompiledCatalog, Compiler, NodeInfo};
use steward_catalogs::loader::{read_site_files, LoadError};
use steward_catalogs::model::HostClass;
use steward_catalogs::site::{parse_site, site_hash};
use steward_catalogs::{State, VaultData};
use steward_protocol::seal::OsRng;
use steward_protocol::{
    canonical_bytes, catalog_digest, seal_catalog_secrets, sign_catalog, Catalog, FileContent,
    NodeId, ResourceSpec, Secret, Serial, Timestamp, REDACTED,
};
use tokio::sync::{watch, Semaphore};
use zeroize::Zeroizing;

use crate::db::{self, Db};
use crate::keys::ServerKeys;
use crate::metrics::Metrics;
use crate::service::vault_source::{error_chain, FetchError, VaultBackend};
use crate::service::waiters::Waiters;

/// Compile rounds when templates read Vault paths that were not fetched yet.
pub const MAX_VAULT_ROUNDS: usize = 8;

/// A signed catalog envelope issued for a node, as served.
#[derive(Debug)]
pub struct Issued {
    /// Its serial.
    pub serial: Serial,
    /// Digest of the signed payload (the ETag).
    pub digest: String,
    /// The envelope bytes.
    pub envelope: Vec<u8>,
    /// When it was compiled.
    pub compiled_at: Timestamp,
    /// When agents stop accepting it.
    pub expires_at: Timestamp,
    content_mac: [u8; 32],
    certificate_generation: u64,
    encryption_key: String,
}

impl Issued {
    fn reusable(&self, now: Timestamp, generation: u64, encryption_key: &str) -> bool {
        let half = self.compiled_at.0 + (self.expires_at.0 - self.compiled_at.0) / 2;
        self.certificate_generation == generation
            && self.encryption_key == encryption_key
            && now.0 < half
    }
}

/// What a catalog request gets.
#[derive(Debug)]
pub enum CatalogAnswer {
    /// This envelope (fresh, or the last good one after a failed compile when `stale`).
    Envelope {
        /// The envelope.
        issued: Arc<Issued>,
        /// Served because the compile failed.
        stale: bool,
    },
    /// Every compile slot is busy: come back after this many seconds (429).
    Busy {
        /// Retry-After, in seconds.
        retry_after: u64,
    },
    /// The compile failed and there is no last good catalog (503).
    Unavailable,
}

/// Why a request could not be answered at all (database trouble: 500).
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The database failed.
    #[error(transparent)]
    Db(#[from] db::DbError),
    /// Signing refused the catalog (a compiler bug: the catalog did not validate).
    #[error("signing the catalog failed")]
    Sign(#[from] steward_protocol::SignError),
    /// A blocking task panicked or was cancelled.
    #[error("a compile task did not finish")]
    Task,
}

/// The node-facing inputs of one request.
#[derive(Debug, Clone)]
pub struct NodeRequest {
    /// The node.
    pub node: NodeId,
    /// Its X25519 public key, base64 (from its active key).
    pub encryption_key: String,
    /// Its serial floor in the database.
    pub stored_serial: Option<Serial>,
}

/// A loaded site, or why it could not be loaded.
enum LoadedSite {
    Ready {
        hash: String,
        compiler: Arc<Compiler>,
    },
    Broken {
        hash: Option<String>,
        message: String,
    },
}

struct SiteCache {
    checked_at: Option<Instant>,
    files_hash: Option<String>,
    current: Option<Arc<LoadedSite>>,
}

#[derive(Default)]
struct NodeSlot {
    current: Option<Arc<Issued>>,
    /// Input MAC of the compile that produced (or confirmed) `current`.
    input_mac: Option<[u8; 32]>,
    /// Vault paths the last successful compile read.
    vault_paths: BTreeSet<String>,
    /// The last compile failed (its failure is recorded and must be cleared on success).
    failed: bool,
}

/// The catalog service. One per server.
pub struct CatalogService {
    site_dir: PathBuf,
    check_interval: Duration,
    vault: VaultBackend,
    db: Db,
    keys: Arc<ServerKeys>,
    metrics: Arc<Metrics>,
    waiters: Arc<Waiters>,
    slots: Arc<Semaphore>,
    site: tokio::sync::Mutex<SiteCache>,
    site_generation: watch::Sender<u64>,
    nodes: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<NodeSlot>>>>,
    /// Union of the Vault paths read by any node, per site hash (first guess for new nodes).
    known_paths: Mutex<(String, BTreeSet<String>)>,
}

impl std::fmt::Debug for CatalogService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CatalogService")
            .field("site_dir", &self.site_dir)
            .field("compile_slots", &self.slots.available_permits())
            .finish_non_exhaustive()
    }
}

impl CatalogService {
    /// A service over `site_dir`, compiling at most `max_compiles` catalogs at once.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        site_dir: PathBuf,
        check_interval: Duration,
        vault: VaultBackend,
        db: Db,
        keys: Arc<ServerKeys>,
        metrics: Arc<Metrics>,
        waiters: Arc<Waiters>,
        max_compiles: usize,
    ) -> CatalogService {
        CatalogService {
            site_dir,
            check_interval,
            vault,
            db,
            keys,
            metrics,
            waiters,
            slots: Arc::new(Semaphore::new(max_compiles.max(1))),
            site: tokio::sync::Mutex::new(SiteCache {
                checked_at: None,
                files_hash: None,
                current: None,
            }),
            site_generation: watch::channel(0).0,
            nodes: Mutex::new(HashMap::new()),
            known_paths: Mutex::new((String::new(), BTreeSet::new())),
        }
    }

    /// A receiver bumped whenever the site's files change.
    pub fn subscribe_site(&self) -> watch::Receiver<u64> {
        self.site_generation.subscribe()
    }

    /// The serial this process last issued for `node`, if any.
    pub async fn current_serial(&self, node: &NodeId) -> Option<Serial> {
        let slot = self.slot(node);
        let slot = slot.lock().await;
        slot.current.as_ref().map(|issued| issued.serial)
    }

    /// The host class `node` falls in under the current site (`None` when the site is broken
    /// or no class matches).
    pub async fn class_of(&self, node: &NodeId) -> Option<HostClass> {
        match &*self.site().await {
            LoadedSite::Ready { compiler, .. } => compiler.class_of(node).ok().cloned(),
            LoadedSite::Broken { .. } => None,
        }
    }

    /// Re-reads the site if the check interval has passed (the background task calls this so
    /// that `/v1/wait` notices site changes without agent traffic).
    pub async fn refresh_site(&self) {
        self.site().await;
    }

    /// The current site, re-read at most once per check interval; parsed and prepared again
    /// only when the files' hash changed.
    async fn site(&self) -> Arc<LoadedSite> {
        let mut cache = self.site.lock().await;
        let due = cache
            .checked_at
            .is_none_or(|at| at.elapsed() >= self.check_interval);
        if let (false, Some(current)) = (due, &cache.current) {
            return Arc::clone(current);
        }
        cache.checked_at = Some(Instant::now());
        let dir = self.site_dir.clone();
        let read = tokio::task::spawn_blocking(move || read_site_files(&dir)).await;
        let files = match read {
            Ok(Ok(files)) => files,
            Ok(Err(error)) => {
                let message = load_error_message(&error);
                return self.replace_site(
                    &mut cache,
                    None,
                    LoadedSite::Broken {
                        hash: None,
                        message,
                    },
                );
            }
            Err(_) => {
                let message = "reading the site failed".to_owned();
                return self.replace_site(
                    &mut cache,
                    None,
                    LoadedSite::Broken {
                        hash: None,
                        message,
                    },
                );
            }
        };
        let hash = site_hash(&files);
        if let (Some(previous), Some(current)) = (&cache.files_hash, &cache.current) {
            if *previous == hash {
                return Arc::clone(current);
            }
        }
        let prepared = tokio::task::spawn_blocking(move || {
            let site = parse_site(&files)?;
            let compiler = Compiler::new(&site)?;
            Ok::<_, steward_catalogs::SiteErrors>((site.hash.clone(), compiler))
        })
        .await;
        let loaded = match prepared {
            Ok(Ok((site_hash, compiler))) => {
                tracing::info!(site.hash = %site_hash, "site loaded");
                LoadedSite::Ready {
                    hash: site_hash,
                    compiler: Arc::new(compiler),
                }
            }
            Ok(Err(errors)) => {
                tracing::warn!(site.hash = %hash, errors = errors.0.len(), "site has errors; last good catalogs keep being served");
                LoadedSite::Broken {
                    hash: Some(hash.clone()),
                    message: errors.to_string(),
                }
            }
            Err(_) => LoadedSite::Broken {
                hash: Some(hash.clone()),
                message: "preparing the site failed".to_owned(),
            },
        };
        self.replace_site(&mut cache, Some(hash), loaded)
    }

    fn replace_site(
        &self,
        cache: &mut SiteCache,
        files_hash: Option<String>,
        loaded: LoadedSite,
    ) -> Arc<LoadedSite> {
        let changed = files_hash.is_none() || cache.files_hash != files_hash;
        cache.files_hash = files_hash;
        let loaded = Arc::new(loaded);
        cache.current = Some(Arc::clone(&loaded));
        if changed {
            self.site_generation
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
        loaded
    }

    fn slot(&self, node: &NodeId) -> Arc<tokio::sync::Mutex<NodeSlot>> {
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(nodes.entry(node.clone()).or_default())
    }

    /// The catalog for `request.node` at `now`: compiled if its inputs changed, a new serial
    /// only if its content changed (see the module documentation).
    pub async fn catalog_for(
        &self,
        request: &NodeRequest,
        now: Timestamp,
    ) -> Result<CatalogAnswer, CatalogError> {
        let site = self.site().await;
        let slot = self.slot(&request.node);
        let mut slot = slot.lock().await;
        let (site_hash, compiler) = match &*site {
            LoadedSite::Ready { hash, compiler } => (hash.clone(), Arc::clone(compiler)),
            LoadedSite::Broken { hash, message } => {
                let message = format!("the site does not load:\n{message}");
                return self
                    .fail(&mut slot, &request.node, &message, hash.as_deref(), now)
                    .await;
            }
        };
        let state = db::state::load(&self.db, &request.node).await?;
        let certificate_generation = self.keys.certificate().generation;

        let mut paths = slot.vault_paths.clone();
        if paths.is_empty() {
            let known = self
                .known_paths
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if known.0 == site_hash {
                paths.clone_from(&known.1);
            }
        }
        paths.insert(compiler.site().config.vault.roles_path.clone());
        let mut absent = BTreeSet::new();
        let mut permit = None;
        let mut round = 0;
        let (compiled, vault) = loop {
            round += 1;
            let vault = match self.fetch_vault(&paths, &mut absent).await {
                Ok(vault) => vault,
                Err(message) => {
                    return self
                        .fail(&mut slot, &request.node, &message, Some(&site_hash), now)
                        .await;
                }
            };
            let input_mac = self.input_mac(&site_hash, request, &state, &vault);
            if let (Some(current), Some(mac)) = (&slot.current, slot.input_mac) {
                if mac == input_mac
                    && current.reusable(now, certificate_generation, &request.encryption_key)
                {
                    Metrics::inc(&self.metrics.catalog_cache_hits);
                    let issued = Arc::clone(current);
                    if slot.failed {
                        db::compile_failures::clear(&self.db, &request.node, now).await?;
                        slot.failed = false;
                    }
                    return Ok(CatalogAnswer::Envelope {
                        issued,
                        stale: false,
                    });
                }
            }
            if permit.is_none() {
                match Arc::clone(&self.slots).try_acquire_owned() {
                    Ok(acquired) => permit = Some(acquired),
                    Err(_) => {
                        Metrics::inc(&self.metrics.compile_rejected);
                        return Ok(CatalogAnswer::Busy {
                            retry_after: retry_after_secs(),
                        });
                    }
                }
            }
            Metrics::inc(&self.metrics.catalog_cache_misses);
            let started = Instant::now();
            let result = {
                let compiler = Arc::clone(&compiler);
                let vault = vault.clone();
                let node = NodeInfo::new(request.node.clone());
                let state = state.clone();
                tokio::task::spawn_blocking(move || compiler.compile(&vault, &node, &state, now))
                    .await
                    .map_err(|_| CatalogError::Task)?
            };
            self.metrics.record_compile(started.elapsed());
            match result {
                Ok(compiled) => break (compiled, vault),
                Err(error) => {
                    let missing: BTreeSet<String> = error
                        .missing_vault_paths
                        .iter()
                        .filter(|path| !paths.contains(*path))
                        .cloned()
                        .collect();
                    if missing.is_empty() || round >= MAX_VAULT_ROUNDS {
                        let message = error.to_string();
                        return self
                            .fail(&mut slot, &request.node, &message, Some(&site_hash), now)
                            .await;
                    }
                    tracing::debug!(node = %request.node, paths = missing.len(), "fetching more vault paths");
                    paths.extend(missing);
                }
            }
        };
        drop(permit);
        // The inputs the next request will present when nothing changes: the state this compile
        // saves, and the Vault data of the paths it read (the next request fetches those).
        let next_paths: BTreeSet<&String> = compiled
            .vault_paths
            .iter()
            .chain([&compiler.site().config.vault.roles_path])
            .collect();
        let mut next_vault = vault;
        next_vault.paths.retain(|path, _| next_paths.contains(path));
        let input_mac = self.input_mac(&site_hash, request, &compiled.state, &next_vault);
        drop(next_vault);

        slot.vault_paths.clone_from(&compiled.vault_paths);
        {
            let mut known = self
                .known_paths
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if known.0 != site_hash {
                *known = (site_hash.clone(), BTreeSet::new());
            }
            known.1.extend(compiled.vault_paths.iter().cloned());
        }
        if compiled.state != state {
            db::state::save(&self.db, &request.node, &compiled.state).await?;
        }
        let content_mac = self.content_mac(&compiled.catalog);
        if let Some(current) = &slot.current {
            if current.content_mac == content_mac
                && current.reusable(now, certificate_generation, &request.encryption_key)
            {
                let current = Arc::clone(current);
                slot.input_mac = Some(input_mac);
                slot.failed = false;
                db::compile_failures::clear(&self.db, &request.node, now).await?;
                return Ok(CatalogAnswer::Envelope {
                    issued: current,
                    stale: false,
                });
            }
        }
        let issued = self
            .issue(&slot, request, compiled, content_mac, &site_hash)
            .await?;
        slot.current = Some(Arc::clone(&issued));
        slot.input_mac = Some(input_mac);
        slot.failed = false;
        db::compile_failures::clear(&self.db, &request.node, now).await?;
        Metrics::inc(&self.metrics.serials_issued);
        self.waiters.notify(&request.node);
        tracing::info!(node = %request.node, catalog.serial = %issued.serial, "issued a new catalog serial");
        Ok(CatalogAnswer::Envelope {
            issued,
            stale: false,
        })
    }

    /// Reads `paths` minus those Vault said it does not have; a path found missing is added to
    /// `absent` and the read retried (the compile then reports it, if it needs it).
    async fn fetch_vault(
        &self,
        paths: &BTreeSet<String>,
        absent: &mut BTreeSet<String>,
    ) -> Result<VaultData, String> {
        loop {
            let wanted: BTreeSet<String> = paths.difference(absent).cloned().collect();
            match self.vault.read_many(&wanted).await {
                Ok(data) => return Ok(data),
                Err(FetchError::NotFound(path)) if wanted.contains(&path) => {
                    absent.insert(path);
                }
                Err(error) => {
                    tracing::warn!(error = %error, "reading vault failed");
                    return Err(format!("reading vault failed: {}", error_chain(&error)));
                }
            }
        }
    }

    /// Signs and seals a new serial and stores its redacted copy.
    async fn issue(
        &self,
        slot: &NodeSlot,
        request: &NodeRequest,
        compiled: CompiledCatalog,
        content_mac: [u8; 32],
        site_hash: &str,
    ) -> Result<Arc<Issued>, CatalogError> {
        // The floor: what the database holds (it may be newer than this process's memory after
        // another instance ran, and it is durable), and what this process issued.
        let stored = db::nodes::get_by_name(&self.db, &request.node)
            .await?
            .and_then(|node| node.catalog_serial)
            .max(request.stored_serial);
        let last = stored
            .max(slot.current.as_ref().map(|issued| issued.serial))
            .map_or(0, |serial| serial.0);
        let serial = Serial(last.saturating_add(1).max(super::now_ms()));
        let mut catalog = compiled.catalog;
        catalog.serial = serial;
        let redacted_json =
            serde_json::to_string(&redacted(&catalog)).map_err(|_| CatalogError::Task)?;
        let recipient = decode_key(&request.encryption_key).ok_or(CatalogError::Task)?;
        seal_catalog_secrets(&mut catalog, &recipient, &mut OsRng);
        let certificate = self.keys.certificate();
        let envelope = sign_catalog(&catalog, self.keys.catalog_key(), &certificate.envelope)?;
        let digest = catalog_digest(&canonical_bytes(&catalog));
        db::catalogs::insert(
            &self.db,
            &db::catalogs::CatalogRecord {
                node: request.node.clone(),
                serial,
                digest: digest.clone(),
                compiled_at: catalog.compiled_at,
                expires_at: catalog.expires_at,
                site_hash: site_hash.to_owned(),
                redacted_json,
            },
        )
        .await?;
        Ok(Arc::new(Issued {
            serial,
            digest,
            envelope,
            compiled_at: catalog.compiled_at,
            expires_at: catalog.expires_at,
            content_mac,
            certificate_generation: certificate.generation,
            encryption_key: request.encryption_key.clone(),
        }))
    }

    /// Records a failed compile and answers with the last good envelope, or 503.
    async fn fail(
        &self,
        slot: &mut NodeSlot,
        node: &NodeId,
        message: &str,
        site_hash: Option<&str>,
        now: Timestamp,
    ) -> Result<CatalogAnswer, CatalogError> {
        Metrics::inc(&self.metrics.compile_failures);
        slot.failed = true;
        tracing::warn!(node = %node, "catalog compile failed; last good catalog kept");
        db::compile_failures::record(&self.db, node, now, message, site_hash).await?;
        match &slot.current {
            Some(issued) if now < issued.expires_at => {
                Metrics::inc(&self.metrics.stale_served);
                Ok(CatalogAnswer::Envelope {
                    issued: Arc::clone(issued),
                    stale: true,
                })
            }
            _ => Ok(CatalogAnswer::Unavailable),
        }
    }

    fn input_mac(
        &self,
        site_hash: &str,
        request: &NodeRequest,
        state: &State,
        vault: &VaultData,
    ) -> [u8; 32] {
        let mut vault_bytes = Zeroizing::new(Vec::new());
        for (path, secret) in &vault.paths {
            vault_bytes.extend_from_slice(path.as_bytes());
            vault_bytes.push(0);
            vault_bytes.extend_from_slice(&secret.version.to_be_bytes());
            if let Ok(data) = serde_json::to_vec(&secret.data) {
                let data = Zeroizing::new(data);
                vault_bytes.extend_from_slice(&(data.len() as u64).to_be_bytes());
                vault_bytes.extend_from_slice(&data);
            }
        }
        let mut state_bytes = Vec::new();
        for (user, port) in &state.ports {
            state_bytes.extend_from_slice(format!("port {user} {port}\n").as_bytes());
        }
        for (user, managed) in &state.managed_users {
            state_bytes.extend_from_slice(
                format!(
                    "user {user} {} {}\n",
                    managed.state.as_str(),
                    managed.services.join(",")
                )
                .as_bytes(),
            );
        }
        self.keys.content_mac([
            b"input/v1".as_slice(),
            site_hash.as_bytes(),
            request.node.as_str().as_bytes(),
            &state_bytes,
            &vault_bytes,
        ])
    }

    /// The content identity: HMAC over the redacted catalog with serial and times zeroed, then
    /// every secret value in resource order.
    fn content_mac(&self, catalog: &Catalog) -> [u8; 32] {
        let mut neutral = redacted(catalog);
        neutral.serial = Serial(0);
        neutral.compiled_at = Timestamp(0);
        neutral.expires_at = Timestamp(0);
        // Provenance is left out: a site edit that does not change this node's resources (or a
        // Vault write that keeps its values) does not move its serial. The envelope served
        // keeps the provenance of the serial's first compile.
        neutral.provenance = Default::default();
        let redacted_bytes = canonical_bytes(&neutral);
        let secrets: Vec<&[u8]> = catalog
            .resources
            .iter()
            .filter_map(|resource| match &resource.spec {
                ResourceSpec::File(file) => match &file.content {
                    FileContent::Secret(secret) => Some(secret.expose().as_bytes()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        self.keys.content_mac(
            [b"content/v1".as_slice(), &redacted_bytes]
                .into_iter()
                .chain(secrets),
        )
    }
}

/// The catalog with every sensitive value (unsealed or sealed) replaced by `<redacted>`: the
/// only form that reaches the database.
pub fn redacted(catalog: &Catalog) -> Catalog {
    let mut copy = catalog.clone();
    for resource in &mut copy.resources {
        if let ResourceSpec::File(file) = &mut resource.spec {
            if file.content.is_sensitive() {
                file.content = FileContent::Secret(Secret::new(REDACTED.to_owned()));
            }
        }
    }
    copy
}

fn load_error_message(error: &LoadError) -> String {
    match error {
        LoadError::Site(errors) => errors.to_string(),
        other => error_chain(other),
    }
}

fn decode_key(base64_key: &str) -> Option<[u8; 32]> {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    STANDARD.decode(base64_key).ok()?.try_into().ok()
}

/// Retry-After for a busy server: 2 to 9 seconds, spread so that refused agents do not come
/// back together.
fn retry_after_secs() -> u64 {
    let mut byte = [0u8; 1];
    let _ = getrandom::getrandom(&mut byte);
    2 + u64::from(byte[0] % 8)
}
