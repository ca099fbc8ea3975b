//! Load benchmark of the catalog server: `cargo bench -p steward-server --bench load`.
//!
//! A plain `main` (no criterion); it prints figures and never asserts a time. The server runs
//! as a **child process** (the real `steward-server serve` binary, built by cargo for this
//! bench) with a config file, the example site `deploy/example-site` and its `vault-data.yaml`
//! (`vault_data_file`, as the tests use), so that its RSS is read from `/proc/<pid>/status`
//! without the load generator's memory in it. Requests go to the **plain HTTP loopback
//! listener** (`plain_listen = "127.0.0.1:PORT"`): on a small machine the client's TLS would
//! compete with the server for the same cores; agent requests are signed end to end either way.
//!
//! Nodes are enrolled directly in the database with the `db` API before the server starts
//! (approved, with real ed25519 keys this process signs with); the run history is seeded in bulk
//! the same way. Phases:
//!
//! 1. `/healthz` throughput (the baseline every figure is compared with);
//! 2. signed `POST /v1/catalog`, compile cached, full envelopes (no `If-None-Match`), then the
//!    304 path (`If-None-Match` with the ETag);
//! 3. `POST /v1/reports` with 500 events each;
//! 4. the server's VmRSS / VmHWM with the enrolled nodes (all holding a cached envelope) and the
//!    seeded runs;
//! 5. thundering herd: the server is stopped (SIGTERM) and restarted with more nodes enrolled,
//!    and every node asks for its catalog once within a window, paced, with bounded client
//!    concurrency; 429s carry Retry-After, which the generator honours before retrying.
//!
//! Sizes: `QUICK=1` for a smoke run; each can be set with `BENCH_NODES`, `BENCH_RUNS`,
//! `BENCH_SECS`, `BENCH_HERD_NODES`, `BENCH_HERD_WINDOW_SECS`, `BENCH_HERD_CONCURRENCY`.

use std::collections::BTreeMap;
use std::fs;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use steward_protocol::envelope::SigningKeyPair;
use steward_protocol::request::{nonce_from_bytes, sign_request};
use steward_protocol::seal::EncryptionKeyPair;
use steward_protocol::{
    EnrollmentStatus, Facts, KeyId, NodeId, ResourceEvent, ResourceId, ResourceStatus, RunId,
    RunReport, RunStatus, Timestamp, Totals,
};
use steward_server::db::keys::{self, NewNodeKey};
use steward_server::db::nodes::{self, NewNode};
use steward_server::db::{runs, Db};
use tokio::sync::Semaphore;

mod common;
use common::{free_port, mb, now, random_bytes, BoxError, ServerProcess, Workspace};

const CATALOG_CONCURRENCY: usize = 64;
const REPORT_CONCURRENCY: usize = 8;
const REPORT_EVENTS: usize = 500;
const SEED_EVENTS_PER_RUN: usize = 10;

#[derive(Debug, Clone)]
struct Scale {
    nodes: usize,
    runs: usize,
    secs: f64,
    herd_nodes: usize,
    herd_window_secs: f64,
    herd_concurrency: usize,
}

impl Scale {
    fn from_env() -> Scale {
        let quick = std::env::var("QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let base = if quick {
            Scale {
                nodes: 100,
                runs: 2_000,
                secs: 2.0,
                herd_nodes: 400,
                herd_window_secs: 5.0,
                herd_concurrency: 64,
            }
        } else {
            Scale {
                nodes: 1_000,
                runs: 100_000,
                secs: 10.0,
                herd_nodes: 10_000,
                herd_window_secs: 60.0,
                herd_concurrency: 256,
            }
        };
        fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        }
        let mut scale = Scale {
            nodes: env("BENCH_NODES", base.nodes),
            runs: env("BENCH_RUNS", base.runs),
            secs: env("BENCH_SECS", base.secs),
            herd_nodes: env("BENCH_HERD_NODES", base.herd_nodes),
            herd_window_secs: env("BENCH_HERD_WINDOW_SECS", base.herd_window_secs),
            herd_concurrency: env("BENCH_HERD_CONCURRENCY", base.herd_concurrency),
        };
        scale.nodes = scale.nodes.max(CATALOG_CONCURRENCY);
        scale.herd_nodes = scale.herd_nodes.max(scale.nodes);
        scale
    }
}

/// A simulated host: its keys and identity.
struct SimNode {
    name: String,
    signing: SigningKeyPair,
    encryption_public: String,
    machine_id: String,
    facts_body: Vec<u8>,
}

impl SimNode {
    fn new(index: usize) -> SimNode {
        let name = format!("ws-{index:05}");
        let machine_id = hex::encode(random_bytes::<16>());
        let facts = Facts {
            hostname: Some(name.clone()),
            machine_id: Some(machine_id.clone()),
            ..Facts::default()
        };
        SimNode {
            facts_body: serde_json::to_vec(&facts).expect("facts serialize"),
            name,
            signing: SigningKeyPair::from_bytes(random_bytes()),
            encryption_public: STANDARD
                .encode(EncryptionKeyPair::from_bytes(random_bytes()).public_bytes()),
            machine_id,
        }
    }

    fn facts(&self) -> Facts {
        Facts {
            hostname: Some(self.name.clone()),
            machine_id: Some(self.machine_id.clone()),
            ..Facts::default()
        }
    }

    fn signed(
        &self,
        client: &reqwest::Client,
        base: &str,
        method: reqwest::Method,
        path: &str,
        body: Vec<u8>,
    ) -> reqwest::RequestBuilder {
        let headers = sign_request(
            &self.signing,
            method.as_str(),
            path,
            now(),
            &nonce_from_bytes(random_bytes()),
            &body,
        )
        .expect("signing");
        let mut request = client.request(method, format!("{base}{path}")).body(body);
        for (name, value) in headers.pairs() {
            request = request.header(name, value);
        }
        request
    }

    fn catalog(&self, client: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        self.signed(
            client,
            base,
            reqwest::Method::POST,
            "/v1/catalog",
            self.facts_body.clone(),
        )
    }

    fn report(&self, events: usize, received_hint: Timestamp) -> RunReport {
        let events: Vec<ResourceEvent> = (0..events)
            .map(|i| ResourceEvent {
                resource: ResourceId::new("file", &format!("/etc/steward/bench/{i}")),
                status: if i % 50 == 0 {
                    ResourceStatus::Changed
                } else {
                    ResourceStatus::Unchanged
                },
                message: None,
                diff: (i % 50 == 0).then(|| format!("-old {i}\n+new {i}")),
                duration_ms: (i % 7) as u64,
                corrective: false,
                drift: None,
            })
            .collect();
        RunReport {
            run_id: RunId::from_random_bytes(random_bytes()),
            node: NodeId(self.name.clone()),
            catalog_serial: None,
            started_at: received_hint,
            finished_at: received_hint,
            duration_ms: 1_000,
            noop: false,
            status: RunStatus::Changed,
            message: None,
            agent_version: "0.1.0-bench".to_owned(),
            facts: self.facts(),
            totals: Totals::of(&events),
            events,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeding through the db API (the server is stopped meanwhile).

async fn seed_nodes(db: &Db, nodes: &[SimNode]) -> Result<(), BoxError> {
    let at = now();
    for chunk in nodes.chunks(2_000) {
        let mut tx = db.begin_write().await?;
        for node in chunk {
            let id = NodeId(node.name.clone());
            nodes::insert_pending(
                &mut *tx,
                &NewNode {
                    name: id.clone(),
                    class: Some("workstation".into()),
                    machine_id: Some(node.machine_id.clone()),
                },
                at,
            )
            .await?;
            let public = node.signing.public_bytes();
            keys::add(
                &mut *tx,
                &id,
                &NewNodeKey {
                    key_id: KeyId::of_public_key_bytes(&public),
                    signing_key: STANDARD.encode(public),
                    encryption_key: node.encryption_public.clone(),
                    machine_id: Some(node.machine_id.clone()),
                },
                at,
            )
            .await?;
            nodes::set_status(&mut *tx, &id, EnrollmentStatus::Approved, at).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

async fn seed_runs(db: &Db, nodes: &[SimNode], count: usize) -> Result<(), BoxError> {
    let at = now();
    let mut done = 0;
    while done < count {
        let batch = (count - done).min(5_000);
        let mut tx = db.begin_write().await?;
        for i in done..done + batch {
            let node = &nodes[i % nodes.len()];
            // Spread over the last ~60 days, like a real history.
            let started = Timestamp(at.0 - (i as i64 % 5_000) * 1_000);
            let report = node.report(SEED_EVENTS_PER_RUN, started);
            runs::insert_report(&mut *tx, &report, started).await?;
        }
        tx.commit().await?;
        done += batch;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Load generation.

#[derive(Default)]
struct Stats {
    latencies: Vec<Duration>,
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    elapsed: Duration,
}

impl Stats {
    fn merge(&mut self, other: Stats) {
        self.latencies.extend(other.latencies);
        for (status, count) in other.statuses {
            *self.statuses.entry(status).or_default() += count;
        }
        self.errors += other.errors;
    }

    fn ok(&self) -> u64 {
        self.statuses
            .iter()
            .filter(|(status, _)| (200..400).contains(*status))
            .map(|(_, count)| count)
            .sum()
    }

    fn rate(&self) -> f64 {
        self.ok() as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&mut self, p: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        self.latencies.sort_unstable();
        let index = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[index]
    }

    fn line(&mut self, what: &str) -> String {
        let p50 = self.percentile(0.50);
        let p99 = self.percentile(0.99);
        format!(
            "{what}: {:.0} req/s ({} ok in {:.1} s), p50 {:.2} ms, p99 {:.2} ms, statuses {:?}, transport errors {}",
            self.rate(),
            self.ok(),
            self.elapsed.as_secs_f64(),
            p50.as_secs_f64() * 1e3,
            p99.as_secs_f64() * 1e3,
            self.statuses,
            self.errors,
        )
    }
}

/// `concurrency` workers, each sending the request `make(worker)` builds, back to back, until
/// `duration` has passed.
async fn closed_loop<F>(concurrency: usize, duration: Duration, make: F) -> Stats
where
    F: Fn(usize) -> reqwest::RequestBuilder + Send + Sync + 'static,
{
    let make = Arc::new(make);
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..concurrency {
        let make = Arc::clone(&make);
        tasks.spawn(async move {
            let mut stats = Stats::default();
            while Instant::now() < deadline {
                let sent = Instant::now();
                match make(worker).send().await {
                    Ok(response) => {
                        let status = response.status().as_u16();
                        let _ = response.bytes().await;
                        stats.latencies.push(sent.elapsed());
                        *stats.statuses.entry(status).or_default() += 1;
                    }
                    Err(_) => stats.errors += 1,
                }
            }
            stats
        });
    }
    let mut total = Stats::default();
    while let Some(stats) = tasks.join_next().await {
        total.merge(stats.expect("worker"));
    }
    total.elapsed = started.elapsed();
    total
}

fn retry_after(response: &reqwest::Response) -> Option<u64> {
    response
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Fetches every node's catalog once (retrying 429s after Retry-After); returns the ETags.
async fn warm_up(
    client: &reqwest::Client,
    base: &str,
    nodes: &Arc<Vec<SimNode>>,
    concurrency: usize,
) -> Result<Vec<String>, BoxError> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (client, base, nodes, next) = (
            client.clone(),
            base.to_owned(),
            Arc::clone(nodes),
            Arc::clone(&next),
        );
        tasks.spawn(async move {
            let mut etags = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(node) = nodes.get(index) else {
                    return Ok::<_, String>(etags);
                };
                loop {
                    let response = node
                        .catalog(&client, &base)
                        .send()
                        .await
                        .map_err(|e| e.to_string())?;
                    match response.status().as_u16() {
                        200 => {
                            let etag = response
                                .headers()
                                .get(reqwest::header::ETAG)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or_default()
                                .to_owned();
                            let size = response.bytes().await.map_or(0, |b| b.len());
                            etags.push((index, etag, size));
                            break;
                        }
                        429 => {
                            let wait = retry_after(&response).unwrap_or(1);
                            tokio::time::sleep(Duration::from_secs(wait)).await;
                        }
                        status => return Err(format!("warm-up of {}: {status}", node.name)),
                    }
                }
            }
        });
    }
    let mut etags = vec![String::new(); nodes.len()];
    let mut bytes = 0;
    while let Some(done) = tasks.join_next().await {
        for (index, etag, size) in done?? {
            etags[index] = etag;
            bytes += size;
        }
    }
    println!(
        "catalog envelope: {:.1} KB on average",
        bytes as f64 / nodes.len().max(1) as f64 / 1024.0
    );
    Ok(etags)
}

#[derive(Default, Debug)]
struct HerdCounts {
    statuses: BTreeMap<u16, u64>,
    retry_after_missing: u64,
    transport_errors: u64,
    completed: u64,
    dropped: u64,
    max_attempts: u64,
    latencies: Vec<Duration>,
}

/// Every node asks for its catalog once, node `i` at `i * window / n`, through at most
/// `concurrency` requests in flight; 429 → wait Retry-After, retry; 5xx or a transport error →
/// wait a second, retry (up to 20 attempts: a node still without its catalog is "dropped").
async fn herd(
    client: &reqwest::Client,
    base: &str,
    nodes: &Arc<Vec<SimNode>>,
    etags: &Arc<Vec<String>>,
    window: Duration,
    concurrency: usize,
) -> (HerdCounts, Duration) {
    const MAX_ATTEMPTS: u64 = 20;
    let gate = Arc::new(Semaphore::new(concurrency));
    let started = tokio::time::Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let n = nodes.len() as f64;
    for index in 0..nodes.len() {
        let at = started + window.mul_f64(index as f64 / n);
        let (client, base, nodes, etags, gate) = (
            client.clone(),
            base.to_owned(),
            Arc::clone(nodes),
            Arc::clone(etags),
            Arc::clone(&gate),
        );
        tasks.spawn(async move {
            tokio::time::sleep_until(at).await;
            let node = &nodes[index];
            let mut counts = HerdCounts::default();
            let first = Instant::now();
            for attempt in 1..=MAX_ATTEMPTS {
                counts.max_attempts = attempt;
                let wait = {
                    let _permit = gate.acquire().await.expect("gate");
                    let mut request = node.catalog(&client, &base);
                    if let Some(etag) = etags.get(index).filter(|e| !e.is_empty()) {
                        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
                    }
                    match request.send().await {
                        Ok(response) => {
                            let status = response.status().as_u16();
                            *counts.statuses.entry(status).or_default() += 1;
                            let after = retry_after(&response);
                            let _ = response.bytes().await;
                            match status {
                                200 | 304 => {
                                    counts.completed = 1;
                                    counts.latencies.push(first.elapsed());
                                    return counts;
                                }
                                429 => {
                                    if after.is_none() {
                                        counts.retry_after_missing += 1;
                                    }
                                    Duration::from_secs(after.unwrap_or(1))
                                }
                                _ => Duration::from_secs(1),
                            }
                        }
                        Err(_) => {
                            counts.transport_errors += 1;
                            Duration::from_secs(1)
                        }
                    }
                };
                tokio::time::sleep(wait).await;
            }
            counts.dropped = 1;
            counts
        });
    }
    let mut total = HerdCounts::default();
    while let Some(done) = tasks.join_next().await {
        let counts = done.expect("herd task");
        for (status, count) in counts.statuses {
            *total.statuses.entry(status).or_default() += count;
        }
        total.retry_after_missing += counts.retry_after_missing;
        total.transport_errors += counts.transport_errors;
        total.completed += counts.completed;
        total.dropped += counts.dropped;
        total.max_attempts = total.max_attempts.max(counts.max_attempts);
        total.latencies.extend(counts.latencies);
    }
    (total, started.elapsed())
}

// ---------------------------------------------------------------------------------------------

fn main() -> Result<(), BoxError> {
    // `cargo bench` passes `--bench`; any other argument is a filter we do not support.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run())
}

async fn run() -> Result<(), BoxError> {
    let scale = Scale::from_env();
    println!("steward-server load benchmark: {scale:?}");
    println!(
        "server: child process `steward-server serve`, plain HTTP loopback listener; \
         client: this process, same machine ({} CPUs shared)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let workspace = Workspace::new()?;
    let (data, log) = (&workspace.data, &workspace.log);

    let herd_nodes: Arc<Vec<SimNode>> = Arc::new((0..scale.herd_nodes).map(SimNode::new).collect());
    let nodes: Arc<Vec<SimNode>> = Arc::new(
        (0..scale.nodes)
            .map(|i| SimNode {
                name: herd_nodes[i].name.clone(),
                signing: herd_nodes[i].signing.clone(),
                encryption_public: herd_nodes[i].encryption_public.clone(),
                machine_id: herd_nodes[i].machine_id.clone(),
                facts_body: herd_nodes[i].facts_body.clone(),
            })
            .collect(),
    );

    // Seed nodes and runs.
    {
        let db = Db::open(&data.join("steward.db")).await?;
        let t = Instant::now();
        seed_nodes(&db, &nodes).await?;
        println!(
            "seeded {} approved nodes in {:.1} s",
            nodes.len(),
            t.elapsed().as_secs_f64()
        );
        let t = Instant::now();
        seed_runs(&db, &nodes, scale.runs).await?;
        println!(
            "seeded {} runs ({SEED_EVENTS_PER_RUN} events each) in {:.1} s",
            scale.runs,
            t.elapsed().as_secs_f64()
        );
        db.close().await;
    }
    let db_size = fs::metadata(data.join("steward.db")).map_or(0, |m| m.len());
    println!("database file: {:.1} MB", db_size as f64 / 1e6);

    let port = free_port();
    let config = workspace.write_config(port, "[enroll]\nper_address_per_minute = 100000\n");
    let mut server = ServerProcess::start(&config, port, log).await?;
    let base = server.base.clone();
    let (rss, hwm) = server.memory();
    println!(
        "server started: VmRSS {:.1} MB, VmHWM {:.1} MB",
        mb(rss),
        mb(hwm)
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(512)
        .timeout(Duration::from_secs(60))
        .build()?;
    let duration = Duration::from_secs_f64(scale.secs);

    // Warm-up: every node's catalog compiled and cached once.
    let t = Instant::now();
    let etags = Arc::new(warm_up(&client, &base, &nodes, 2).await?);
    println!(
        "warm-up: {} first compiles in {:.1} s ({:.0}/s)",
        nodes.len(),
        t.elapsed().as_secs_f64(),
        nodes.len() as f64 / t.elapsed().as_secs_f64()
    );

    // 1. /healthz baseline.
    let healthz = {
        let (client, base) = (client.clone(), base.clone());
        closed_loop(CATALOG_CONCURRENCY, duration, move |_| {
            client.get(format!("{base}/healthz"))
        })
        .await
    };
    let mut healthz = healthz;
    println!("{}", healthz.line("GET /healthz (64 concurrent)"));
    let baseline = healthz.rate();

    // 2. Catalogs, cached, full envelopes; then the 304 path.
    let mut full = {
        let (client, base, nodes) = (client.clone(), base.clone(), Arc::clone(&nodes));
        closed_loop(CATALOG_CONCURRENCY, duration, move |worker| {
            nodes[worker].catalog(&client, &base)
        })
        .await
    };
    println!(
        "{}; ratio to /healthz {:.3}",
        full.line("POST /v1/catalog 200 full envelope (64 nodes concurrent)"),
        full.rate() / baseline
    );
    let mut not_modified = {
        let (client, base, nodes, etags) = (
            client.clone(),
            base.clone(),
            Arc::clone(&nodes),
            Arc::clone(&etags),
        );
        closed_loop(CATALOG_CONCURRENCY, duration, move |worker| {
            nodes[worker]
                .catalog(&client, &base)
                .header(reqwest::header::IF_NONE_MATCH, etags[worker].as_str())
        })
        .await
    };
    println!(
        "{}; ratio to /healthz {:.3}",
        not_modified.line("POST /v1/catalog 304 If-None-Match (64 nodes concurrent)"),
        not_modified.rate() / baseline
    );
    // For the diagnosis: a signed request that does authentication (key lookup, signature,
    // nonce and last-seen writes) and almost nothing else: a long-poll that returns at once.
    let mut auth_only = {
        let (client, base, nodes) = (client.clone(), base.clone(), Arc::clone(&nodes));
        closed_loop(CATALOG_CONCURRENCY, duration, move |worker| {
            nodes[worker].signed(
                &client,
                &base,
                reqwest::Method::GET,
                "/v1/wait?serial=1&timeout=0",
                Vec::new(),
            )
        })
        .await
    };
    println!(
        "{}; ratio to /healthz {:.3}",
        auth_only.line("GET /v1/wait?timeout=0 signed, returns at once (64 nodes concurrent)"),
        auth_only.rate() / baseline
    );
    let (rss, hwm) = server.memory();
    println!(
        "after catalogs: VmRSS {:.1} MB, VmHWM {:.1} MB ({} nodes with a cached envelope, {} runs stored)",
        mb(rss),
        mb(hwm),
        nodes.len(),
        scale.runs
    );

    // 3. Reports with 500 events.
    let report_bodies: Arc<Vec<Vec<u8>>> = Arc::new(
        (0..REPORT_CONCURRENCY)
            .map(|i| serde_json::to_vec(&nodes[i].report(REPORT_EVENTS, now())).expect("json"))
            .collect(),
    );
    println!(
        "report body: {} bytes, {REPORT_EVENTS} events",
        report_bodies[0].len()
    );
    let mut reports = {
        let (client, base, nodes) = (client.clone(), base.clone(), Arc::clone(&nodes));
        closed_loop(REPORT_CONCURRENCY, duration, move |worker| {
            // A fresh run id each time, so each report is stored (not a duplicate).
            let report = nodes[worker].report(REPORT_EVENTS, now());
            let body = serde_json::to_vec(&report).expect("json");
            nodes[worker].signed(&client, &base, reqwest::Method::POST, "/v1/reports", body)
        })
        .await
    };
    println!(
        "{}; ratio to /healthz {:.3}",
        reports.line("POST /v1/reports, 500 events (8 concurrent)"),
        reports.rate() / baseline
    );
    let (rss, hwm) = server.memory();
    println!(
        "after reports: VmRSS {:.1} MB, VmHWM {:.1} MB",
        mb(rss),
        mb(hwm)
    );

    // 4. Thundering herd after a restart.
    let (took, code) = server.stop();
    println!(
        "SIGTERM: server exited in {:.2} s with status {code:?}",
        took.as_secs_f64()
    );
    {
        let db = Db::open(&data.join("steward.db")).await?;
        let t = Instant::now();
        seed_nodes(&db, &herd_nodes[nodes.len()..]).await?;
        println!(
            "seeded {} more nodes ({} in all) in {:.1} s",
            herd_nodes.len() - nodes.len(),
            herd_nodes.len(),
            t.elapsed().as_secs_f64()
        );
        db.close().await;
    }
    let mut server = ServerProcess::start(&config, port, log).await?;
    let mut herd_etags = etags.to_vec();
    herd_etags.resize(herd_nodes.len(), String::new());
    let window = Duration::from_secs_f64(scale.herd_window_secs);
    let (mut counts, took) = herd(
        &client,
        &server.base,
        &herd_nodes,
        &Arc::new(herd_etags),
        window,
        scale.herd_concurrency,
    )
    .await;
    counts.latencies.sort_unstable();
    let pick = |p: f64| {
        counts
            .latencies
            .get(((counts.latencies.len().max(1) - 1) as f64 * p) as usize)
            .map_or(0.0, Duration::as_secs_f64)
    };
    let server_errors: u64 = counts
        .statuses
        .iter()
        .filter(|(s, _)| **s >= 500)
        .map(|(_, c)| c)
        .sum();
    println!(
        "thundering herd: {} nodes paced over {:.0} s, client concurrency {}: all answered after {:.1} s; \
         statuses {:?} (200 {}, 304 {}, 429 {}, 5xx {server_errors}); 429 without Retry-After {}; \
         transport errors {}; completed {}, dropped {}; most attempts by one node {}; \
         time to catalog per node p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        herd_nodes.len(),
        window.as_secs_f64(),
        scale.herd_concurrency,
        took.as_secs_f64(),
        counts.statuses,
        counts.statuses.get(&200).copied().unwrap_or(0),
        counts.statuses.get(&304).copied().unwrap_or(0),
        counts.statuses.get(&429).copied().unwrap_or(0),
        counts.retry_after_missing,
        counts.transport_errors,
        counts.completed,
        counts.dropped,
        counts.max_attempts,
        pick(0.5),
        pick(0.99),
        pick(1.0),
    );
    let (rss, hwm) = server.memory();
    println!(
        "after the herd: VmRSS {:.1} MB, VmHWM {:.1} MB ({} nodes with a cached envelope)",
        mb(rss),
        mb(hwm),
        herd_nodes.len()
    );
    let (took, code) = server.stop();
    println!(
        "SIGTERM: server exited in {:.2} s with status {code:?}",
        took.as_secs_f64()
    );
    let log_lines = fs::read_to_string(log).map_or(0, |text| text.lines().count());
    println!("server log: {log_lines} lines (info level, JSON, to a file)");
    Ok(())
}
