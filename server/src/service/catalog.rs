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
//! A serial is never issued more than [`MAX_SERIAL_LEAD_MS`] (a day) ahead of this server's
//! clock ([`next_serial`]): agents refuse such serials as a fast-forward (THREATS C6), so a
//! floor that far ahead means the clock ran ahead when it was issued and was corrected since.
//! Issuing `last + 1` would strand every host until the clock caught up; instead the compile
//! fails for the node (its last good catalog is served, the failure is shown on the node) with
//! a message naming the recovery: stop the server and run `steward-server serials rebase`,
//! which drops the records of serials no host with a right clock can have accepted
//! ([`crate::db::catalogs::rebase`]). Issuing far ahead of a right clock in the first place is
//! bounded by the request check: a catalog is compiled for a signed agent request whose
//! timestamp is within `requests.max_clock_skew` (at most an hour) of this server's clock.
//!
//! The serial moves **only when the content changes**. The content identity is an HMAC, keyed
//! with `content.key`, over the canonical bytes of the redacted catalog (serial, times and
//! provenance cleared) followed by every secret value in resource order: a changed Vault value
//! changes the identity, yet neither the value nor a plain hash of it is ever stored (the
//! identity lives in memory only). Provenance is left out so that a site edit that does not
//! touch a node's resources does not move its serial; the envelope then keeps the provenance of
//! the compile that first produced that content.
//!
//! Sealing is deterministic ([`steward_protocol::seal::seal_deterministic`]: the ephemeral key
//! is derived from a server secret and the node, serial, resource id and plaintext digest), and
//! so is signing, so a serial always re-issues as the very same bytes. That matters because an
//! agent refuses the same serial with other bytes (THREATS C3). The envelope bytes are therefore
//! only cached ([`crate::service::envelopes`], a bounded LRU): an evicted envelope is rebuilt
//! from a new compile of the same content under the serial's own times and provenance. What is
//! kept per node is small: serial, digest, times, provenance and content identity. A rebuild
//! waits for a compile slot instead of answering 429: the bytes of an issued serial are owed.
//!
//! A new serial (sealed for it, with a new `compiled_at` and `expires_at`) is issued when:
//! - the content changed;
//! - the serial is past half its lifetime, so agents always hold a catalog far from expiry;
//! - the catalog key certificate was re-issued, or the node's encryption key changed.
//!
//! After a restart, the first compile of a node rebuilds its current serial from the database's
//! record (`catalogs`: serial, times, provenance, payload digest): if the rebuilt payload has
//! the recorded digest, the content did not change and the serial is kept; agents holding it
//! get 304. Otherwise (content, key or certificate changed) a new serial is issued.
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
//! A compile failure never reaches a host: the last good serial is served (with 304 to an
//! agent that holds it, or from the envelope cache), else the request gets 503. The failure is
//! recorded (`db::compile_failures`), counted in metrics and cleared by the next success.
//!
//! # Node state
//!
//! The per-node [`State`] (sticky ports, managed users) is read from the database once and
//! then kept in memory next to the node's serial: this service is its only writer.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use steward_catalogs::compile::{CompiledCatalog, Compiler, NodeInfo};
use steward_catalogs::loader::{read_site_files, LoadError};
use steward_catalogs::model::HostClass;
use steward_catalogs::site::{parse_site, site_hash};
use steward_catalogs::{State, VaultData};
use steward_protocol::envelope::MAX_SERIAL_LEAD_MS;
use steward_protocol::seal::seal_catalog_secrets_deterministic;
use steward_protocol::{
    canonical_bytes, catalog_digest, sign_catalog, Catalog, FileContent, NodeId, Provenance,
    ResourceSpec, Secret, Serial, Timestamp, REDACTED,
};
use tokio::sync::{watch, Semaphore};
use zeroize::Zeroizing;

use crate::db::{self, Db};
use crate::keys::{IssuedCertificate, ServerKeys};
use crate::metrics::Metrics;
use crate::service::envelopes::EnvelopeCache;
use crate::service::vault_source::{error_chain, FetchError, VaultBackend};
use crate::service::waiters::Waiters;

/// Compile rounds when templates read Vault paths that were not fetched yet.
pub const MAX_VAULT_ROUNDS: usize = 8;

/// A serial issued for a node: what identifies its signed envelope (the bytes themselves live
/// in the [`EnvelopeCache`], or are rebuilt).
#[derive(Debug)]
pub struct Issued {
    /// Its serial.
    pub serial: Serial,
    /// Digest of the signed payload (the ETag).
    pub digest: String,
    /// When it was compiled.
    pub compiled_at: Timestamp,
    /// When agents stop accepting it.
    pub expires_at: Timestamp,
    provenance: Provenance,
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
    /// This serial (fresh, or the last good one after a failed compile when `stale`).
    Envelope {
        /// The serial.
        issued: Arc<Issued>,
        /// Its envelope bytes; `None` when the agent holds this serial already (304).
        envelope: Option<Bytes>,
        /// Served because the compile failed.
        stale: bool,
    },
    /// Every compile slot is busy: come back after this many seconds (429).
    Busy {
        /// Retry-After, in seconds.
        retry_after: u64,
    },
    /// The compile failed and there is no last good catalog to serve (503).
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
    /// The node's serial floor is more than a day ahead of this server's clock.
    #[error(transparent)]
    SerialAhead(#[from] SerialAhead),
}

/// The next serial would be more than [`MAX_SERIAL_LEAD_MS`] ahead of this server's clock:
/// every agent would refuse it as a fast-forward.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the catalog serial floor {floor} is {hours} hours ahead of this server's clock (the clock \
     ran ahead when it was issued): hosts would refuse every new serial as a fast-forward; stop \
     the server and run `steward-server serials rebase` (deploy/README.md, clock recovery)"
)]
pub struct SerialAhead {
    /// The highest serial issued for the node.
    pub floor: u64,
    /// How far ahead of the clock it is, in whole hours.
    pub hours: u64,
}

/// The serial after `last` (the node's floor, 0 if none) at `now_ms`: `max(last + 1, now_ms)`
/// (THREATS R7), unless that is more than [`MAX_SERIAL_LEAD_MS`] ahead of `now_ms`.
pub fn next_serial(last: u64, now_ms: u64) -> Result<Serial, SerialAhead> {
    let serial = last.saturating_add(1).max(now_ms);
    if serial - now_ms > MAX_SERIAL_LEAD_MS {
        return Err(SerialAhead {
            floor: last,
            hours: (last - now_ms) / 3_600_000,
        });
    }
    Ok(Serial(serial))
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
    /// Digests of the catalogs the agent holds (`If-None-Match`; `*` for any).
    pub held: Vec<String>,
}

impl NodeRequest {
    /// Whether the agent holds the catalog with this payload digest (it gets 304).
    pub fn holds(&self, digest: &str) -> bool {
        self.held.iter().any(|held| held == digest || held == "*")
    }
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
    /// The node's state as stored (read once, then kept up to date by this service).
    state: Option<State>,
    /// The database's record of the current serial was looked at (after a restart).
    restore_checked: bool,
}

/// One look of the Vault watch: the paths read, and the MAC of their data (`None`: reading
/// failed).
type VaultLook = (BTreeSet<String>, Option<[u8; 32]>);

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
    envelopes: EnvelopeCache,
    site: tokio::sync::Mutex<SiteCache>,
    site_generation: watch::Sender<u64>,
    nodes: Mutex<HashMap<NodeId, Arc<tokio::sync::Mutex<NodeSlot>>>>,
    /// Union of the Vault paths read by any node, per site hash (first guess for new nodes).
    known_paths: Mutex<(String, BTreeSet<String>)>,
    /// What [`CatalogService::refresh_vault`] saw last: the paths it read and the MAC of their
    /// data (`None` when reading failed); `None` before its first look.
    vault_seen: Mutex<Option<VaultLook>>,
    /// The site generation each node's last catalog answer reflected.
    answered: Mutex<HashMap<NodeId, u64>>,
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
    /// A service over `site_dir`, compiling at most `max_compiles` catalogs at once and keeping
    /// at most `envelope_cache_entries` envelopes.
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
        envelope_cache_entries: usize,
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
            envelopes: EnvelopeCache::new(envelope_cache_entries),
            site: tokio::sync::Mutex::new(SiteCache {
                checked_at: None,
                files_hash: None,
                current: None,
            }),
            site_generation: watch::channel(0).0,
            nodes: Mutex::new(HashMap::new()),
            known_paths: Mutex::new((String::new(), BTreeSet::new())),
            vault_seen: Mutex::new(None),
            answered: Mutex::new(HashMap::new()),
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
    /// only if its content changed (see the module documentation). An answer (also the last
    /// good catalog after a failed compile) records the site generation it reflects, for
    /// [`CatalogService::behind_site`].
    pub async fn catalog_for(
        &self,
        request: &NodeRequest,
        now: Timestamp,
    ) -> Result<CatalogAnswer, CatalogError> {
        let generation = *self.site_generation.borrow();
        let answer = self.answer(request, now).await?;
        self.answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(request.node.clone(), generation);
        Ok(answer)
    }

    /// Whether the site or the Vault data changed since `node` was last given a catalog by this
    /// process (`false` when it was not given one since the start). A host that was busy
    /// applying its catalog when the change happened was not waiting, so `/v1/wait` asks this
    /// before it parks: the serial alone does not tell, because compiles are lazy.
    pub fn behind_site(&self, node: &NodeId) -> bool {
        let current = *self.site_generation.borrow();
        self.answered
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(node)
            .is_some_and(|seen| *seen != current)
    }

    async fn answer(
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
                    .fail(&mut slot, request, &message, hash.as_deref(), now)
                    .await;
            }
        };
        let state = match &slot.state {
            Some(state) => state.clone(),
            None => {
                let state = db::state::load(&self.db, &request.node).await?;
                slot.state = Some(state.clone());
                state
            }
        };
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
        let mut rebuild = false;
        let mut round = 0;
        let (compiled, vault) = loop {
            round += 1;
            let vault = match self.fetch_vault(&paths, &mut absent).await {
                Ok(vault) => vault,
                Err(message) => {
                    return self
                        .fail(&mut slot, request, &message, Some(&site_hash), now)
                        .await;
                }
            };
            let input_mac = self.input_mac(&site_hash, request, &state, &vault);
            if let (Some(current), Some(mac)) = (&slot.current, slot.input_mac) {
                if mac == input_mac
                    && current.reusable(now, certificate_generation, &request.encryption_key)
                {
                    let issued = Arc::clone(current);
                    let held = request.holds(&issued.digest);
                    let envelope = if held {
                        None
                    } else {
                        self.envelopes.get(&request.node, &issued.digest)
                    };
                    // Without the bytes (evicted), the compile below rebuilds them.
                    rebuild = envelope.is_none() && !held;
                    if !rebuild {
                        Metrics::inc(&self.metrics.catalog_cache_hits);
                        if slot.failed {
                            db::compile_failures::clear(&self.db, &request.node, now).await?;
                            slot.failed = false;
                        }
                        return Ok(CatalogAnswer::Envelope {
                            issued,
                            envelope,
                            stale: false,
                        });
                    }
                }
            }
            if permit.is_none() {
                match Arc::clone(&self.slots).try_acquire_owned() {
                    Ok(acquired) => permit = Some(acquired),
                    // The bytes of a serial already issued are owed: wait for a slot rather
                    // than send the agent away (the rebuild costs what a compile costs).
                    Err(_) if rebuild => {
                        permit = Some(
                            Arc::clone(&self.slots)
                                .acquire_owned()
                                .await
                                .map_err(|_| CatalogError::Task)?,
                        );
                    }
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
                            .fail(&mut slot, request, &message, Some(&site_hash), now)
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
            known
                .1
                .insert(compiler.site().config.vault.roles_path.clone());
        }
        if compiled.state != state {
            db::state::save(&self.db, &request.node, &compiled.state).await?;
            slot.state = Some(compiled.state.clone());
        }
        let content_mac = self.content_mac(&compiled.catalog);
        let recipient = decode_key(&request.encryption_key).ok_or(CatalogError::Task)?;
        let certificate = self.keys.certificate();
        if slot.current.is_none() && !slot.restore_checked {
            slot.restore_checked = true;
            if let Some((restored, envelope)) = self
                .restore(
                    request,
                    &compiled.catalog,
                    content_mac,
                    &recipient,
                    &certificate,
                    now,
                )
                .await?
            {
                self.envelopes
                    .insert(&request.node, &restored.digest, envelope);
                tracing::info!(node = %request.node, catalog.serial = %restored.serial, "kept the catalog serial from before the restart");
                slot.current = Some(restored);
            }
        }
        if let Some(current) = slot.current.clone() {
            if current.content_mac == content_mac
                && current.reusable(now, certificate.generation, &request.encryption_key)
            {
                let envelope = if request.holds(&current.digest) {
                    Some(None)
                } else if let Some(envelope) = self.envelopes.get(&request.node, &current.digest) {
                    Some(Some(envelope))
                } else {
                    // Evicted: the same serial, times and provenance give the same bytes.
                    Metrics::inc(&self.metrics.envelope_rebuilds);
                    let (envelope, digest) =
                        self.build_envelope(&compiled.catalog, &current, &recipient, &certificate)?;
                    if digest == current.digest {
                        self.envelopes
                            .insert(&request.node, &current.digest, envelope.clone());
                        Some(Some(envelope))
                    } else {
                        tracing::warn!(node = %request.node, catalog.serial = %current.serial, "a rebuilt envelope differs from its serial's; issuing a new serial");
                        None
                    }
                };
                if let Some(envelope) = envelope {
                    slot.input_mac = Some(input_mac);
                    slot.failed = false;
                    db::compile_failures::clear(&self.db, &request.node, now).await?;
                    return Ok(CatalogAnswer::Envelope {
                        issued: current,
                        envelope,
                        stale: false,
                    });
                }
            }
        }
        let issued = self
            .issue(
                &slot,
                request,
                compiled,
                content_mac,
                &recipient,
                &certificate,
                &site_hash,
            )
            .await;
        let (issued, envelope) = match issued {
            Err(CatalogError::SerialAhead(ahead)) => {
                tracing::error!(node = %request.node, error = %ahead, "refusing to issue a serial hosts would refuse");
                let message = ahead.to_string();
                return self
                    .fail(&mut slot, request, &message, Some(&site_hash), now)
                    .await;
            }
            other => other?,
        };
        self.envelopes
            .insert(&request.node, &issued.digest, envelope.clone());
        slot.current = Some(Arc::clone(&issued));
        slot.input_mac = Some(input_mac);
        slot.failed = false;
        db::compile_failures::clear(&self.db, &request.node, now).await?;
        Metrics::inc(&self.metrics.serials_issued);
        self.waiters.notify(&request.node);
        tracing::info!(node = %request.node, catalog.serial = %issued.serial, "issued a new catalog serial");
        let envelope = (!request.holds(&issued.digest)).then_some(envelope);
        Ok(CatalogAnswer::Envelope {
            issued,
            envelope,
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

    /// Seals and signs a new serial and stores its redacted copy.
    #[allow(clippy::too_many_arguments)]
    async fn issue(
        &self,
        slot: &NodeSlot,
        request: &NodeRequest,
        compiled: CompiledCatalog,
        content_mac: [u8; 32],
        recipient: &[u8; 32],
        certificate: &IssuedCertificate,
        site_hash: &str,
    ) -> Result<(Arc<Issued>, Bytes), CatalogError> {
        // The floor: what the database holds (it may be newer than this process's memory after
        // another instance ran, and it is durable), and what this process issued.
        let stored = db::nodes::get_by_name(&self.db, &request.node)
            .await?
            .and_then(|node| node.catalog_serial)
            .max(request.stored_serial);
        let last = stored
            .max(slot.current.as_ref().map(|issued| issued.serial))
            .map_or(0, |serial| serial.0);
        let serial = next_serial(last, super::now_ms())?;
        let mut catalog = compiled.catalog;
        catalog.serial = serial;
        let redacted_json =
            serde_json::to_string(&redacted(&catalog)).map_err(|_| CatalogError::Task)?;
        let mut issued = Issued {
            serial,
            digest: String::new(),
            compiled_at: catalog.compiled_at,
            expires_at: catalog.expires_at,
            provenance: catalog.provenance.clone(),
            content_mac,
            certificate_generation: certificate.generation,
            encryption_key: request.encryption_key.clone(),
        };
        let (envelope, digest) = self.build_envelope(&catalog, &issued, recipient, certificate)?;
        issued.digest = digest;
        db::catalogs::insert(
            &self.db,
            &db::catalogs::CatalogRecord {
                node: request.node.clone(),
                serial,
                digest: issued.digest.clone(),
                compiled_at: issued.compiled_at,
                expires_at: issued.expires_at,
                site_hash: site_hash.to_owned(),
                redacted_json,
            },
        )
        .await?;
        Ok((Arc::new(issued), envelope))
    }

    /// The signed envelope of `catalog` (as compiled, secrets unsealed) under `issued`'s serial,
    /// times and provenance, and its payload digest. Deterministic: the same content gives the
    /// same bytes.
    fn build_envelope(
        &self,
        catalog: &Catalog,
        issued: &Issued,
        recipient: &[u8; 32],
        certificate: &IssuedCertificate,
    ) -> Result<(Bytes, String), CatalogError> {
        let mut catalog = catalog.clone();
        catalog.serial = issued.serial;
        catalog.compiled_at = issued.compiled_at;
        catalog.expires_at = issued.expires_at;
        catalog.provenance = issued.provenance.clone();
        seal_catalog_secrets_deterministic(&mut catalog, recipient, self.keys.sealing_key());
        let mut envelope = sign_catalog(&catalog, self.keys.catalog_key(), &certificate.envelope)?;
        // Kept in the envelope cache: without the serializer's spare capacity.
        envelope.shrink_to_fit();
        let digest = catalog_digest(&canonical_bytes(&catalog));
        Ok((Bytes::from(envelope), digest))
    }

    /// After a restart: the node's current serial as the database recorded it, if `catalog`
    /// (this compile) rebuilds it exactly (same payload digest) and it could still be served.
    async fn restore(
        &self,
        request: &NodeRequest,
        catalog: &Catalog,
        content_mac: [u8; 32],
        recipient: &[u8; 32],
        certificate: &IssuedCertificate,
        now: Timestamp,
    ) -> Result<Option<(Arc<Issued>, Bytes)>, CatalogError> {
        let Some(stored_serial) = request.stored_serial else {
            return Ok(None);
        };
        let Some(record) = db::catalogs::latest(&self.db, &request.node).await? else {
            return Ok(None);
        };
        // The envelope served then carried the certificate of its time: a newer one means the
        // agents should get a new serial signed under it.
        if record.serial != stored_serial || certificate.issued_at > record.compiled_at {
            return Ok(None);
        }
        let Some(provenance) = provenance_of(&record.redacted_json) else {
            return Ok(None);
        };
        let issued = Issued {
            serial: record.serial,
            digest: record.digest,
            compiled_at: record.compiled_at,
            expires_at: record.expires_at,
            provenance,
            content_mac,
            certificate_generation: certificate.generation,
            encryption_key: request.encryption_key.clone(),
        };
        if !issued.reusable(now, certificate.generation, &request.encryption_key) {
            return Ok(None);
        }
        let (envelope, digest) = self.build_envelope(catalog, &issued, recipient, certificate)?;
        if digest != issued.digest {
            return Ok(None);
        }
        Ok(Some((Arc::new(issued), envelope)))
    }

    /// Records a failed compile and answers with the last good serial (304 to an agent that
    /// holds it, its envelope if still cached), or 503.
    async fn fail(
        &self,
        slot: &mut NodeSlot,
        request: &NodeRequest,
        message: &str,
        site_hash: Option<&str>,
        now: Timestamp,
    ) -> Result<CatalogAnswer, CatalogError> {
        let node = &request.node;
        Metrics::inc(&self.metrics.compile_failures);
        slot.failed = true;
        tracing::warn!(node = %node, "catalog compile failed; last good catalog kept");
        db::compile_failures::record(&self.db, node, now, message, site_hash).await?;
        let Some(issued) = slot
            .current
            .as_ref()
            .filter(|issued| now < issued.expires_at)
        else {
            return Ok(CatalogAnswer::Unavailable);
        };
        let held = request.holds(&issued.digest);
        let envelope = if held {
            None
        } else {
            self.envelopes.get(node, &issued.digest)
        };
        if !held && envelope.is_none() {
            return Ok(CatalogAnswer::Unavailable);
        }
        Metrics::inc(&self.metrics.stale_served);
        Ok(CatalogAnswer::Envelope {
            issued: Arc::clone(issued),
            envelope,
            stale: true,
        })
    }

    fn input_mac(
        &self,
        site_hash: &str,
        request: &NodeRequest,
        state: &State,
        vault: &VaultData,
    ) -> [u8; 32] {
        let vault_bytes = vault_bytes(vault);
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

    /// Reads the Vault paths the site's catalogs use (as learnt from their compiles) and, when
    /// their data differs from the last look, or Vault answers again after failing, bumps the
    /// site generation like a site change: long-polls return `site_changed`, hosts ask for
    /// their catalog, and the serial moves where the content did. So a secret rotated in Vault
    /// reaches hosts within a watch period, not at their next scheduled run. Only a keyed MAC
    /// of the data is kept. The first look sets the baseline and wakes nobody.
    pub async fn refresh_vault(&self) {
        let paths = {
            let known = self
                .known_paths
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            known.1.clone()
        };
        if paths.is_empty() {
            return;
        }
        let seen = match self.vault.read_many(&paths).await {
            Ok(data) => Some(
                self.keys
                    .content_mac([b"vault-watch/v1".as_slice(), &vault_bytes(&data)]),
            ),
            Err(error) => {
                tracing::debug!(error = %error, "vault watch: reading failed");
                None
            }
        };
        let changed = {
            let mut last = self
                .vault_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Other paths (a site change, a node reading a new one) set a new baseline.
            let changed = last
                .as_ref()
                .is_some_and(|(last_paths, last_seen)| *last_paths == paths && *last_seen != seen);
            *last = Some((paths.clone(), seen));
            changed
        };
        if changed && seen.is_some() {
            tracing::info!(paths = paths.len(), "vault data changed; waking long-polls");
            self.site_generation
                .send_modify(|generation| *generation = generation.wrapping_add(1));
        }
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

/// The provenance of a stored redacted catalog.
fn provenance_of(redacted_json: &str) -> Option<Provenance> {
    let mut catalog: serde_json::Value = serde_json::from_str(redacted_json).ok()?;
    serde_json::from_value(catalog.get_mut("provenance")?.take()).ok()
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

/// Vault data as bytes for a MAC: path, version and data of each path, length-prefixed. Wiped
/// when dropped (it holds secret values).
fn vault_bytes(vault: &VaultData) -> Zeroizing<Vec<u8>> {
    let mut bytes = Zeroizing::new(Vec::new());
    for (path, secret) in &vault.paths {
        bytes.extend_from_slice(path.as_bytes());
        bytes.push(0);
        bytes.extend_from_slice(&secret.version.to_be_bytes());
        if let Ok(data) = serde_json::to_vec(&secret.data) {
            let data = Zeroizing::new(data);
            bytes.extend_from_slice(&(data.len() as u64).to_be_bytes());
            bytes.extend_from_slice(&data);
        }
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW_MS: u64 = 1_767_225_600_000;

    /// THREATS R7 and C6: serials follow the clock and never go down, but the server never
    /// issues one that agents would refuse as a fast-forward.
    #[test]
    fn next_serial_follows_the_clock_and_refuses_a_floor_far_ahead_of_it() {
        assert_eq!(next_serial(0, NOW_MS), Ok(Serial(NOW_MS)));
        assert_eq!(next_serial(NOW_MS - 5, NOW_MS), Ok(Serial(NOW_MS)));
        // A floor a little ahead (a restored database, a clock a little slow): last + 1.
        assert_eq!(next_serial(NOW_MS + 5, NOW_MS), Ok(Serial(NOW_MS + 6)));
        let edge = NOW_MS + MAX_SERIAL_LEAD_MS - 1;
        assert_eq!(next_serial(edge, NOW_MS), Ok(Serial(edge + 1)));
        // Issued while the clock ran 30 days ahead, then the clock was corrected.
        let ahead = NOW_MS + 30 * 86_400_000;
        let refused = next_serial(ahead, NOW_MS).unwrap_err();
        assert_eq!(refused.hours, 720);
        assert!(
            refused
                .to_string()
                .contains("steward-server serials rebase"),
            "{refused}"
        );
        assert!(next_serial(u64::MAX, NOW_MS).is_err());
        assert!(next_serial(NOW_MS + MAX_SERIAL_LEAD_MS, NOW_MS).is_err());
    }
}
