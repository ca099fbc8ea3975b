//! Benchmark of the web UI's pages on a large store: `cargo bench -p steward-server --bench ui`.
//!
//! The requirement: with 1,000 nodes and 1,000,000 resource events stored, every page renders
//! in ≤ 100 ms on this machine. A plain `main` (no criterion): it prints figures and a verdict
//! per page and never asserts a time; it fails only when a page does not answer 200 with the
//! content it should have.
//!
//! 1. **Seeding**, through the `steward_server::db` API before the server starts: approved
//!    workstations (`ws-00000`...) with facts, a stored catalog each (compiled from the example
//!    site for that node, redacted as the server stores it; three serials for `ws-00042`, so its
//!    page has a serial diff), a few pending, quarantined and revoked nodes, re-enrollments (key
//!    history) and keys waiting for approval; a run history spread over the last 15 days, in
//!    the order a server receives it (the whole fleet, oldest runs first), each run with 20
//!    events on resources of the example site's devvm (host-wide ones and those of the roster's
//!    people, `emo` and `ancamilea`): mostly unchanged, some changed, some noop runs, some
//!    failed runs with failed and skipped resources, a few "could not run" errors; a few nodes
//!    that flap (the same resources changed in every run), fail in their last runs, are
//!    unreported, or have a current compile failure; bootstrap tokens and an audit log.
//! 2. **The server**: the real `steward-server serve` binary as a child process on the example
//!    site, on the plain HTTP loopback listener, with `[ui] trusted_proxies = ["127.0.0.1/32"]`:
//!    admins are signed in by the forward-auth headers (`X-authentik-username`,
//!    `X-authentik-groups` with `steward-admins`), "managed for me" as a roster person's
//!    `authentik_user` without the admin group; the API by the admin bearer token.
//! 3. **Pages**: each one warm-up request, then `BENCH_REQUESTS` (default 20) sequential ones,
//!    every answer checked (200 and marker strings); p50 / p95 / max and the ratio of the p50 to
//!    the p50 of `GET /healthz`, measured the same way in the same run. The last table has a
//!    verdict per page: `ok` when its p95 is at most 100 ms, else `OVER 100 ms`.
//! 4. **Queries**: once the server has stopped, the UI's query functions
//!    (`steward_server::ui::queries` and the `db` calls the pages make) are called directly on
//!    the same file, with the server's connection settings: where a page's time goes.
//!
//! Sizes: `QUICK=1` for a smoke run (100 nodes × 25 runs × 20 events = 50,000 events); each
//! can be set with `BENCH_NODES`, `BENCH_RUNS_PER_NODE`, `BENCH_REQUESTS`. `BENCH_KEEP=1`
//! keeps the data directory (database, config, server log) and prints where, for a look at
//! query plans with `sqlite3` afterwards.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use steward_catalogs::compile::{Compiler, NodeInfo};
use steward_catalogs::{State, VaultData};
use steward_protocol::envelope::SigningKeyPair;
use steward_protocol::seal::EncryptionKeyPair;
use steward_protocol::{
    Catalog, EnrollmentStatus, Facts, FileContent, KeyId, NodeId, ResourceEvent, ResourceId,
    ResourceSpec, ResourceStatus, RunId, RunReport, RunStatus, Serial, Timestamp, Totals,
};
use steward_server::db::audit::NewAuditEntry;
use steward_server::db::catalogs::CatalogRecord;
use steward_server::db::keys::{self, NewNodeKey};
use steward_server::db::nodes::{self, NewNode};
use steward_server::db::tokens::{self, NewToken, SecretHash};
use steward_server::db::{self, runs, Db};
mod common;
use common::{free_port, mb, now, random_bytes, BoxError, ServerProcess, Workspace};

/// The verdict's threshold.
const LIMIT_MS: f64 = 100.0;
/// Days of run history.
const HISTORY_DAYS: i64 = 15;
/// Reports per `insert_reports` call (one transaction).
const SEED_BATCH: usize = 1_000;
/// The admin group of the forward-auth headers (the default `ui.admin_group`).
const ADMIN_GROUPS: &str = "staff|steward-admins";
/// The admin's SSO name.
const ADMIN_USER: &str = "bench.admin";
/// A roster person's `authentik_user` (emo in `deploy/example-site/roster.yaml`).
const PERSON_SSO: &str = "emil.barzin";
/// The admin API bearer token of this run's server.
const API_TOKEN: &str = "steward-ui-bench-admin-token-0123456789";

/// The resources every seeded run reports, in apply order: ids of the example site's devvm
/// catalog (checked against a real compile at start), host-wide and of both roster people.
const RUN_RESOURCES: [&str; 20] = [
    "package:git",
    "package:zsh",
    "file:/etc/profile.d/00-workstation.sh",
    "git_clone:/srv/config-base",
    "file:/etc/ttyd-user-map",
    "file:/etc/t3-serve/dispatch.json",
    "user:emo",
    "file:/home/emo/.zshrc.d/vault.sh",
    "file:/home/emo/.kube/config",
    "file:/home/emo/.claude.json",
    "git_clone:/home/emo/code",
    "file:/etc/t3-serve/emo.env",
    "service:t3-serve@emo.service",
    "user:ancamilea",
    "file:/home/ancamilea/.kube/config",
    "file:/home/ancamilea/.claude.json",
    "git_clone:/home/ancamilea/code/infra",
    "git_clone:/home/ancamilea/code/tripit",
    "file:/etc/t3-serve/ancamilea.env",
    "service:t3-serve@ancamilea.service",
];

// Roles of approved node `i` (chosen so that each exists in the QUICK fleet of 100 too).
/// Resources changed in every run (not idempotent).
fn is_flapping(i: usize) -> bool {
    i % 200 == 5
}
/// A git clone fails in the last 3 runs.
fn is_failing_git(i: usize) -> bool {
    i % 50 == 17
}
/// A service fails in the last 2 runs.
fn is_failing_service(i: usize) -> bool {
    i % 50 == 31
}
/// No report for 3 days.
fn is_unreported(i: usize) -> bool {
    i % 97 == 13
}
/// The newest run is a noop run.
fn is_noop_last(i: usize) -> bool {
    i % 100 == 61
}
/// The newest run could not run (status error, no events).
fn is_error_last(i: usize) -> bool {
    i % 100 == 7
}
/// A "could not run" in the middle of the history.
fn has_error_mid(i: usize) -> bool {
    i % 100 == 57
}
/// The site does not compile for it.
fn has_compile_failure(i: usize) -> bool {
    i % 250 == 99
}
/// Re-enrolled twice: three keys in its history.
fn is_reenrolled(i: usize) -> bool {
    i % 333 == 3
}
/// A new key waits for an admin.
fn has_pending_key(i: usize) -> bool {
    i % 500 == 77
}
/// The node with three stored catalogs (serial diff) and the sample run.
const DIFF_NODE: usize = 42;
/// Extra nodes beyond the approved ones: pending, quarantined, revoked.
const PENDING_NODES: usize = 5;
const QUARANTINED_NODES: usize = 3;
const REVOKED_NODES: usize = 3;

#[derive(Debug, Clone)]
struct Scale {
    nodes: usize,
    runs_per_node: usize,
    requests: usize,
}

impl Scale {
    fn from_env() -> Scale {
        let quick = std::env::var("QUICK").is_ok_and(|v| v != "0" && !v.is_empty());
        let (nodes, runs_per_node) = if quick { (100, 25) } else { (1_000, 50) };
        fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
            std::env::var(name)
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(default)
        }
        Scale {
            // Node 99 (compile failure) is the highest role index.
            nodes: env("BENCH_NODES", nodes).max(100),
            runs_per_node: env("BENCH_RUNS_PER_NODE", runs_per_node).max(4),
            requests: env("BENCH_REQUESTS", 20).max(1),
        }
    }
}

/// A deterministic hash of a few numbers (splitmix64), for the seeded history's choices.
fn mix(values: &[u64]) -> u64 {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    for value in values {
        state ^= value.wrapping_add(0x9e37_79b9_7f4a_7c15);
        state = (state ^ (state >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        state = (state ^ (state >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        state ^= state >> 31;
    }
    state
}

fn node_name(i: usize) -> String {
    format!("ws-{i:05}")
}

fn new_key(machine_id: &str) -> NewNodeKey {
    let public = SigningKeyPair::from_bytes(random_bytes()).public_bytes();
    NewNodeKey {
        key_id: KeyId::of_public_key_bytes(&public),
        signing_key: STANDARD.encode(public),
        encryption_key: STANDARD
            .encode(EncryptionKeyPair::from_bytes(random_bytes()).public_bytes()),
        machine_id: Some(machine_id.to_owned()),
    }
}

/// `YYYY-MM-DD` of a day since the epoch.
fn date_of_day(days: i64) -> String {
    steward_server::cli::store::format_time(days * 86_400)[..10].to_owned()
}

// ---------------------------------------------------------------------------------------------
// The history of one node.

/// What kind of run to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unchanged,
    Changed,
    Noop,
    FlappingChange,
    FailedGit,
    FailedService,
    FailedPackage,
    Error,
}

/// The kind of run `k` (0 = newest) of approved node `i`.
fn kind_of(i: usize, k: usize) -> Kind {
    if k == 0 && is_noop_last(i) {
        return Kind::Noop;
    }
    if is_failing_git(i) && k < 3 {
        return Kind::FailedGit;
    }
    if is_failing_service(i) && k < 2 {
        return Kind::FailedService;
    }
    let roll = mix(&[i as u64, k as u64]) % 100;
    if is_flapping(i) {
        return if roll < 3 {
            Kind::Noop
        } else {
            Kind::FlappingChange
        };
    }
    match roll {
        0..=1 => Kind::FailedPackage,
        2..=3 => Kind::Noop,
        4..=13 => Kind::Changed,
        _ => Kind::Unchanged,
    }
}

const GIT_FAILURE: &str = "git fetch origin failed (exit 128): fatal: unable to access \
     'https://forgejo.homelab.example/infra/infra.git/': Could not resolve host: \
     forgejo.homelab.example";
const SERVICE_FAILURE: &str = "systemctl start t3-serve@emo.service failed (exit 1): Job for \
     t3-serve@emo.service failed because the control process exited with error code.\n\
     See \"systemctl status t3-serve@emo.service\" and \"journalctl -xeu t3-serve@emo.service\" \
     for details.";
const PACKAGE_FAILURE: &str = "apt-get install -y git failed (exit 100): E: Could not get lock \
     /var/lib/dpkg/lock-frontend. It is held by process 2318 (unattended-upgr)\n\
     E: Unable to acquire the dpkg frontend lock (/var/lib/dpkg/lock-frontend), is another \
     process using it?";
const ERROR_MESSAGE: &str = "could not run: another run holds /var/lib/steward/run.lock \
     (waited 60 s)";

fn event(resource: &str, status: ResourceStatus, duration_ms: u64) -> ResourceEvent {
    ResourceEvent {
        resource: ResourceId(resource.to_owned()),
        status,
        message: None,
        diff: None,
        duration_ms,
        corrective: false,
        drift: None,
    }
}

/// Run `k` (0 = newest) of approved node `i`, of kind `kind`, started at `started`.
fn report(node: &SeedNode, i: usize, k: usize, kind: Kind, started: Timestamp) -> RunReport {
    let h = mix(&[i as u64, k as u64, 7]);
    let mut events: Vec<ResourceEvent> = if kind == Kind::Error {
        Vec::new()
    } else {
        RUN_RESOURCES
            .iter()
            .enumerate()
            .map(|(seq, id)| {
                event(
                    id,
                    ResourceStatus::Unchanged,
                    mix(&[h, seq as u64]) % 40 + u64::from(id.starts_with("git_clone")) * 400,
                )
            })
            .collect()
    };
    let at = |events: &[ResourceEvent], id: &str| -> usize {
        events
            .iter()
            .position(|e| e.resource.0 == id)
            .expect("a seeded resource")
    };
    match kind {
        Kind::Unchanged | Kind::Error => {}
        Kind::Changed => {
            let n = at(&events, "file:/etc/t3-serve/dispatch.json");
            events[n].status = ResourceStatus::Changed;
            events[n].diff = Some(format!(
                "--- /etc/t3-serve/dispatch.json\n+++ /etc/t3-serve/dispatch.json\n\
                 @@ -1,4 +1,4 @@\n {{\n-  \"ancamilea\": {{ \"port\": {} }},\n\
                 +  \"ancamilea\": {{ \"port\": 3775 }},\n   \"emo\": {{ \"port\": 3774 }}\n",
                3776 + h % 20
            ));
            if h % 2 == 0 {
                let n = at(&events, "file:/home/emo/.kube/config");
                events[n].status = ResourceStatus::Changed;
                events[n].corrective = true;
                events[n].diff = Some(
                    "--- /home/emo/.kube/config\n+++ /home/emo/.kube/config\n@@ -9,3 +9,3 @@\n \
                     users:\n-  - name: emo-edited-by-hand\n+  - name: oidc\n"
                        .to_owned(),
                );
            }
        }
        Kind::Noop => {
            let n = at(&events, "file:/etc/t3-serve/dispatch.json");
            events[n].status = ResourceStatus::WouldChange;
            events[n].diff = Some(
                "@@ -2 +2 @@\n-  \"ancamilea\": { \"port\": 3790 },\n\
                 +  \"ancamilea\": { \"port\": 3775 },\n"
                    .to_owned(),
            );
        }
        Kind::FlappingChange => {
            let n = at(&events, "file:/home/emo/.claude.json");
            events[n].status = ResourceStatus::Changed;
            events[n].corrective = true;
            events[n].diff = Some(format!(
                "--- /home/emo/.claude.json\n+++ /home/emo/.claude.json\n@@ -1,4 +1,3 @@\n {{\n\
                 -  \"numStartups\": {},\n   \"hasCompletedOnboarding\": true,\n",
                40 + k
            ));
            let n = at(&events, "service:t3-serve@emo.service");
            events[n].status = ResourceStatus::Changed;
            events[n].message = Some(
                "restarted: a subscribed resource changed (file:/home/emo/.claude.json)".into(),
            );
        }
        Kind::FailedGit => {
            let n = at(&events, "git_clone:/home/ancamilea/code/infra");
            events[n].status = ResourceStatus::Failed;
            events[n].message = Some(GIT_FAILURE.to_owned());
            events[n].duration_ms = 30_000;
            let n = at(&events, "git_clone:/home/ancamilea/code/tripit");
            events[n].status = ResourceStatus::Skipped;
            events[n].message = Some(
                "skipped: requires git_clone:/home/ancamilea/code/infra, which failed".to_owned(),
            );
        }
        Kind::FailedService => {
            let n = at(&events, "service:t3-serve@emo.service");
            events[n].status = ResourceStatus::Failed;
            events[n].message = Some(SERVICE_FAILURE.to_owned());
        }
        Kind::FailedPackage => {
            let n = at(&events, "package:git");
            events[n].status = ResourceStatus::Failed;
            events[n].message = Some(PACKAGE_FAILURE.to_owned());
            events[n].duration_ms = 60_000;
            let n = at(&events, "git_clone:/srv/config-base");
            events[n].status = ResourceStatus::Skipped;
            events[n].message = Some("skipped: requires package:git, which failed".to_owned());
        }
    }
    let totals = Totals::of(&events);
    let noop = kind == Kind::Noop;
    let status = if kind == Kind::Error {
        RunStatus::Error
    } else if totals.failed > 0 {
        RunStatus::Failed
    } else if noop {
        RunStatus::Noop
    } else if totals.changed > 0 {
        RunStatus::Changed
    } else {
        RunStatus::Unchanged
    };
    let duration_ms = if kind == Kind::Error {
        60_000
    } else {
        events.iter().map(|e| e.duration_ms).sum::<u64>() + 800 + h % 2_000
    };
    RunReport {
        run_id: RunId::from_random_bytes(random_bytes()),
        node: NodeId(node.name.clone()),
        catalog_serial: (kind != Kind::Error).then_some(node.serial),
        started_at: started,
        finished_at: Timestamp(started.0 + (duration_ms / 1000) as i64),
        duration_ms,
        noop,
        status,
        message: (kind == Kind::Error).then(|| ERROR_MESSAGE.to_owned()),
        agent_version: "0.1.0".to_owned(),
        facts: Facts {
            hostname: Some(node.name.clone()),
            machine_id: Some(node.machine_id.clone()),
            ..Facts::default()
        },
        totals,
        events,
    }
}

// ---------------------------------------------------------------------------------------------
// Seeding.

/// What the page list needs to know about the seeded data.
#[derive(Debug, Default)]
struct Seeded {
    runs: u64,
    events: u64,
    /// Serials stored for the diff node, oldest first.
    diff_serials: Vec<u64>,
    /// The newest run of the diff node (20 events).
    sample_run: String,
    /// The newest run of a flapping node.
    flapping_run: String,
    /// The newest run of a failing node.
    failed_run: String,
    /// Cursors half-way down the run list and down the failed runs.
    deep_cursor: String,
    failed_cursor: String,
    /// An audit id half-way down the log.
    audit_mid: i64,
    /// The last approved node by name.
    last_node: String,
    pending_node: String,
    quarantined_node: String,
    token_id: String,
}

/// An approved node, for its run history.
struct SeedNode {
    name: String,
    machine_id: String,
    created_at: Timestamp,
    serial: Serial,
    /// Start of the newest run.
    newest: Timestamp,
}

/// The seeding's clock, actor and audit log (written at the end, in time order).
struct Seeder {
    at: Timestamp,
    admin: String,
    audit: Vec<NewAuditEntry>,
}

impl Seeder {
    fn audit(&mut self, at: Timestamp, actor: &str, action: &str, target: &str, detail: Value) {
        self.audit.push(NewAuditEntry {
            at,
            actor: actor.to_owned(),
            action: action.to_owned(),
            target: Some(target.to_owned()),
            detail: Some(detail),
        });
    }
}

/// The example site's compiler, for each node's stored catalog.
struct ExampleSite {
    compiler: Compiler,
    vault: VaultData,
    at: Timestamp,
}

impl ExampleSite {
    fn load(site: &Path, vault: &Path, at: Timestamp) -> Result<ExampleSite, BoxError> {
        let site = steward_catalogs::loader::load_site_dir(site)
            .map_err(|e| format!("loading the example site: {e:?}"))?;
        let vault = steward_catalogs::loader::load_vault_file(vault)
            .map_err(|e| format!("loading the vault data: {e:?}"))?;
        let compiler =
            Compiler::new(&site).map_err(|e| format!("preparing the compiler: {e:?}"))?;
        Ok(ExampleSite {
            compiler,
            vault,
            at,
        })
    }

    fn compile(&self, name: &str) -> Result<Catalog, BoxError> {
        let node = NodeInfo::new(NodeId(name.to_owned()));
        Ok(self
            .compiler
            .compile(&self.vault, &node, &State::default(), self.at)
            .map_err(|e| format!("compiling for {name}: {e:?}"))?
            .catalog)
    }
}

/// The diff node's three serials (ms): one package added in the newest, two files changed
/// between the oldest and the middle one.
fn diff_versions(newest: Catalog, now_ms: u64) -> Vec<(u64, Catalog)> {
    let mut middle = newest.clone();
    middle.resources.retain(|r| r.id.0 != "package:ripgrep");
    let mut oldest = middle.clone();
    for resource in &mut oldest.resources {
        if let ResourceSpec::File(file) = &mut resource.spec {
            let old = match resource.id.0.as_str() {
                "file:/etc/skel/.tmux.conf" => "set -g history-limit 50000\nset -g mouse off\n",
                "file:/etc/profile.d/00-workstation.sh" => {
                    "export WORKSTATION_CONFIG_BASE=/srv/config-base\n"
                }
                _ => continue,
            };
            file.content = FileContent::Text(old.to_owned());
        }
    }
    vec![
        (now_ms - 10 * 86_400_000, oldest),
        (now_ms - 3 * 86_400_000, middle),
        (now_ms - 3_600_000, newest),
    ]
}

async fn seed(db: &Db, scale: &Scale, site: &Path, vault: &Path) -> Result<Seeded, BoxError> {
    let at = now();
    let mut seeded = Seeded::default();
    let mut seeder = Seeder {
        at,
        admin: format!("sso:{ADMIN_USER}"),
        audit: Vec::new(),
    };
    let site = ExampleSite::load(site, vault, at)?;
    let probe = site.compile(&node_name(0))?;
    for id in RUN_RESOURCES {
        if !probe.resources.iter().any(|r| r.id.0 == id) {
            return Err(format!("the example site has no {id}: update RUN_RESOURCES").into());
        }
    }

    let t = Instant::now();
    let mut fleet = Vec::with_capacity(scale.nodes);
    let mut catalog_bytes = 0;
    for chunk in (0..scale.nodes).collect::<Vec<_>>().chunks(250) {
        let mut tx = db.begin_write().await?;
        for &i in chunk {
            let (node, bytes) =
                seed_approved_node(&mut tx, i, &site, &mut seeder, &mut seeded).await?;
            fleet.push(node);
            catalog_bytes += bytes;
        }
        tx.commit().await?;
    }
    seeded.last_node = node_name(scale.nodes - 1);
    let catalogs = scale.nodes + seeded.diff_serials.len() - 1;
    println!(
        "seeded {} approved nodes (keys, facts, {catalogs} catalogs of {:.1} KB on average) \
         in {:.1} s",
        scale.nodes,
        catalog_bytes as f64 / catalogs as f64 / 1024.0,
        t.elapsed().as_secs_f64()
    );
    seed_held_nodes(db, scale.nodes, &mut seeder, &mut seeded).await?;
    seed_tokens(db, &mut seeder, &mut seeded).await?;
    // Admin logins and run-now requests over the history, then the whole log in time order.
    for n in 0..200i64 {
        let action = if n % 4 == 0 {
            "ui.login"
        } else {
            "node.run_now"
        };
        seeder.audit.push(NewAuditEntry {
            at: Timestamp(at.0 - n * 6 * 3_600 - 77),
            actor: seeder.admin.clone(),
            action: action.to_owned(),
            target: (n % 4 != 0).then(|| node_name((n as usize * 7) % scale.nodes)),
            detail: None,
        });
    }
    seeder.audit.sort_by_key(|entry| entry.at.0);
    let mut tx = db.begin_write().await?;
    for entry in &seeder.audit {
        db::audit::record(&mut *tx, entry).await?;
    }
    tx.commit().await?;

    let t = Instant::now();
    seed_runs(db, scale, &fleet, &mut seeded).await?;
    println!(
        "seeded {} runs with {} resource events over the last {HISTORY_DAYS} days in {:.1} s \
         ({:.0} events/s); {} audit entries",
        seeded.runs,
        seeded.events,
        t.elapsed().as_secs_f64(),
        seeded.events as f64 / t.elapsed().as_secs_f64(),
        seeder.audit.len()
    );
    find_cursors(db, &mut seeded).await?;
    Ok(seeded)
}

/// Approved node `i`: enrollment, keys (re-enrollments, a waiting key), facts, its catalog(s),
/// a compile failure, a run-now request. Returns it and the bytes of catalog stored.
async fn seed_approved_node(
    tx: &mut sqlx::SqliteConnection,
    i: usize,
    site: &ExampleSite,
    seeder: &mut Seeder,
    seeded: &mut Seeded,
) -> Result<(SeedNode, usize), BoxError> {
    let at = seeder.at;
    let name = node_name(i);
    let id = NodeId(name.clone());
    let machine_id = hex::encode(random_bytes::<16>());
    let created_at = Timestamp(at.0 - 40 * 86_400 - (i as i64) * 600);
    let new_node = NewNode {
        name: id.clone(),
        class: Some("workstation".into()),
        machine_id: Some(machine_id.clone()),
    };
    nodes::insert_pending(&mut *tx, &new_node, created_at).await?;
    keys::add(&mut *tx, &id, &new_key(&machine_id), created_at).await?;
    let approved_at = Timestamp(created_at.0 + 1_800);
    nodes::set_status(&mut *tx, &id, EnrollmentStatus::Approved, approved_at).await?;
    let agent = format!("node:{name}");
    let enroll = json!({"status": "pending", "source": "10.20.0.17"});
    seeder.audit(created_at, &agent, "node.enroll", &name, enroll);
    let admin = seeder.admin.clone();
    seeder.audit(approved_at, &admin, "node.approve", &name, json!({}));
    if is_reenrolled(i) {
        for (n, days) in [(1, 20), (2, 6)] {
            let when = Timestamp(at.0 - days * 86_400);
            let token = format!("tpl{n}rebuild");
            let reason = format!("replaced by a re-enrollment with token {token}");
            keys::revoke_all_for_node(&mut *tx, &id, &reason, when).await?;
            keys::add(&mut *tx, &id, &new_key(&machine_id), when).await?;
            let detail = json!({"token_id": token, "status": "approved"});
            seeder.audit(when, &agent, "node.reenroll", &name, detail);
        }
    }
    if has_pending_key(i) {
        let when = Timestamp(at.0 - 3_600);
        let key = new_key("0f0e0d0c0b0a09080706050403020100");
        db::pending_keys::put(&mut *tx, &id, &key, None, when).await?;
        let detail = json!({"status": "pending", "source": "10.20.0.99"});
        seeder.audit(when, &agent, "node.reenroll_requested", &name, detail);
    }
    let facts = Facts {
        hostname: Some(name.clone()),
        machine_id: Some(machine_id.clone()),
        os: Some("Debian GNU/Linux 12 (bookworm)".into()),
        kernel: Some("6.1.0-28-amd64".into()),
        cpus: Some(4 + (i % 3) as u32 * 4),
        memory_bytes: Some(16 << 30),
        swap_bytes: Some(4 << 30),
        disk_total_bytes: Some(200 << 30),
        disk_free_bytes: Some((120 + (i % 50) as u64) << 30),
        uptime_secs: Some(86_400 * (1 + (i % 30) as u64)),
        agent_version: Some("0.1.0".into()),
        extra: [("virtualization".to_owned(), "kvm".to_owned())].into(),
    };
    nodes::set_facts(&mut *tx, &id, &facts).await?;

    let catalog = site.compile(&name)?;
    let site_hash = catalog.provenance.site_hash.clone();
    let now_ms = at.0 as u64 * 1000;
    let versions = if i == DIFF_NODE {
        diff_versions(catalog, now_ms)
    } else {
        vec![(now_ms - 3_600_000 - i as u64, catalog)]
    };
    let (mut serial, mut bytes) = (Serial(0), 0);
    for (number, mut catalog) in versions {
        serial = Serial(number);
        catalog.serial = serial;
        catalog.compiled_at = Timestamp((number / 1000) as i64);
        catalog.expires_at = Timestamp(catalog.compiled_at.0 + 7 * 86_400);
        let json = serde_json::to_string(&steward_server::service::catalog::redacted(&catalog))?;
        bytes += json.len();
        let record = CatalogRecord {
            node: id.clone(),
            serial,
            digest: format!("sha256:{}", hex::encode(Sha256::digest(json.as_bytes()))),
            compiled_at: catalog.compiled_at,
            expires_at: catalog.expires_at,
            site_hash: catalog.provenance.site_hash.clone(),
            redacted_json: json,
        };
        db::catalogs::insert(&mut *tx, &record).await?;
        if i == DIFF_NODE {
            seeded.diff_serials.push(number);
        }
    }
    if has_compile_failure(i) {
        for hours in [30, 2] {
            let when = Timestamp(at.0 - hours * 3_600);
            db::compile_failures::record(&mut *tx, &id, when, COMPILE_ERROR, Some(&site_hash))
                .await?;
        }
    }
    if i == 11 {
        let when = Timestamp(at.0 - 120);
        nodes::request_run_now(&mut *tx, &id, when).await?;
        seeder.audit(when, &admin, "node.run_now", &name, json!({}));
    }
    // The newest run: within the last 25 minutes, or 3 days ago when unreported.
    let offset = (i as i64 * 37) % 1_500 + 60 + if is_unreported(i) { 3 * 86_400 } else { 0 };
    let node = SeedNode {
        name,
        machine_id,
        created_at,
        serial,
        newest: Timestamp(at.0 - offset),
    };
    Ok((node, bytes))
}

const COMPILE_ERROR: &str = "roster.yaml:24: users.ancamilea.tier: namespace-owner does not \
     match the role of k8s_user anca in Vault secret/platform → k8s_users (power-user)\n\
     site.yaml:88: bundles.host-t3-serve: template error: undefined value `user.port`";

/// Nodes after the approved ones: pending (new hosts), quarantined, revoked.
async fn seed_held_nodes(
    db: &Db,
    first: usize,
    seeder: &mut Seeder,
    seeded: &mut Seeded,
) -> Result<(), BoxError> {
    let mut tx = db.begin_write().await?;
    let admin = seeder.admin.clone();
    for j in 0..PENDING_NODES + QUARANTINED_NODES + REVOKED_NODES {
        let name = node_name(first + j);
        let id = NodeId(name.clone());
        let machine_id = hex::encode(random_bytes::<16>());
        let created_at = Timestamp(seeder.at.0 - 3_600 * (j as i64 + 1));
        let new_node = NewNode {
            name: id.clone(),
            class: Some("workstation".into()),
            machine_id: Some(machine_id.clone()),
        };
        nodes::insert_pending(&mut *tx, &new_node, created_at).await?;
        keys::add(&mut *tx, &id, &new_key(&machine_id), created_at).await?;
        let detail = json!({"status": "pending", "source": "10.20.0.40"});
        seeder.audit(
            created_at,
            &format!("node:{name}"),
            "node.enroll",
            &name,
            detail,
        );
        if j < PENDING_NODES {
            seeded.pending_node = name;
        } else if j < PENDING_NODES + QUARANTINED_NODES {
            nodes::set_status(&mut *tx, &id, EnrollmentStatus::Quarantined, created_at).await?;
            let detail = json!({"reason": "the same key was seen with two machine ids"});
            seeder.audit(created_at, "system", "node.quarantine", &name, detail);
            seeded.quarantined_node = name;
        } else {
            let when = Timestamp(created_at.0 + 600);
            let reason = format!("revoked by {admin}: decommissioned");
            keys::revoke_all_for_node(&mut *tx, &id, &reason, when).await?;
            nodes::set_status(&mut *tx, &id, EnrollmentStatus::Revoked, when).await?;
            let detail = json!({"reason": "decommissioned"});
            seeder.audit(when, &admin, "node.revoke", &name, detail);
        }
    }
    tx.commit().await?;
    Ok(())
}

/// Bootstrap tokens: active, expired, revoked.
async fn seed_tokens(db: &Db, seeder: &mut Seeder, seeded: &mut Seeded) -> Result<(), BoxError> {
    let admin = seeder.admin.clone();
    for n in 0..12u32 {
        let token_id = hex::encode(random_bytes::<8>());
        let created = Timestamp(seeder.at.0 - i64::from(n) * 2 * 86_400 - 600);
        let expires_at = if n % 4 == 2 {
            Timestamp(created.0 + 86_400)
        } else {
            Timestamp(seeder.at.0 + 30 * 86_400)
        };
        let token = NewToken {
            token_id: token_id.clone(),
            secret_hash: SecretHash::of_secret(&hex::encode(random_bytes::<32>())),
            description: format!("workstation batch {n} (template clones)"),
            created_by: admin.clone(),
            expires_at,
            uses_allowed: 1 + n * 10,
            hostname_glob: (n % 2 == 0).then(|| "ws-*".to_owned()),
            class: Some("workstation".into()),
            auto_approve: n % 3 == 0,
            may_reenroll: n % 5 == 0,
        };
        tokens::create(db, &token, created).await?;
        let detail = json!({"uses": 1 + n * 10, "ttl": "30d"});
        seeder.audit(created, &admin, "token.create", &token_id, detail);
        if n % 4 == 3 {
            let when = Timestamp(created.0 + 3_600);
            tokens::revoke(db, &token_id, when).await?;
            seeder.audit(when, &admin, "token.revoke", &token_id, json!({}));
        }
        seeded.token_id = token_id;
    }
    Ok(())
}

/// The run history: the whole fleet, oldest runs first, as a server receives it.
async fn seed_runs(
    db: &Db,
    scale: &Scale,
    fleet: &[SeedNode],
    seeded: &mut Seeded,
) -> Result<(), BoxError> {
    let spacing = HISTORY_DAYS * 86_400 / scale.runs_per_node as i64;
    let mut batch: Vec<(RunReport, Timestamp)> = Vec::with_capacity(SEED_BATCH);
    let mut last_seen = vec![Timestamp(0); fleet.len()];
    for k in (0..scale.runs_per_node).rev() {
        for (i, node) in fleet.iter().enumerate() {
            let started = Timestamp(node.newest.0 - k as i64 * spacing);
            if started.0 < node.created_at.0 {
                continue;
            }
            let mut runs = vec![(kind_of(i, k), started)];
            if k == 0 && is_error_last(i) {
                runs.push((Kind::Error, Timestamp(started.0 + 30)));
            }
            if k == scale.runs_per_node / 2 && has_error_mid(i) {
                runs.push((Kind::Error, Timestamp(started.0 + spacing / 2)));
            }
            for (kind, started) in runs {
                let report = report(node, i, k, kind, started);
                if k == 0 && kind != Kind::Error {
                    let run_id = report.run_id.0.clone();
                    if i == DIFF_NODE {
                        seeded.sample_run = run_id;
                    } else if is_flapping(i) && seeded.flapping_run.is_empty() {
                        seeded.flapping_run = run_id;
                    } else if is_failing_git(i) && seeded.failed_run.is_empty() {
                        seeded.failed_run = run_id;
                    }
                }
                let received = Timestamp(report.finished_at.0 + 1);
                last_seen[i] = received;
                seeded.runs += 1;
                seeded.events += report.events.len() as u64;
                batch.push((report, received));
                if batch.len() == SEED_BATCH {
                    insert_batch(db, &mut batch).await?;
                }
            }
        }
    }
    insert_batch(db, &mut batch).await?;
    let mut tx = db.begin_write().await?;
    for (node, seen) in fleet.iter().zip(&last_seen) {
        nodes::touch_last_seen(&mut *tx, &NodeId(node.name.clone()), *seen).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn insert_batch(db: &Db, batch: &mut Vec<(RunReport, Timestamp)>) -> Result<(), BoxError> {
    if batch.is_empty() {
        return Ok(());
    }
    let refs: Vec<(&RunReport, Timestamp)> = batch.iter().map(|(r, t)| (r, *t)).collect();
    for outcome in runs::insert_reports(db, &refs).await? {
        outcome?;
    }
    batch.clear();
    Ok(())
}

/// Cursors for later pages: half-way down the runs, the failed runs and the audit log.
async fn find_cursors(db: &Db, seeded: &mut Seeded) -> Result<(), BoxError> {
    let cursor = |row: (i64, i64)| format!("{}.{}", row.0, row.1);
    let at_offset = "SELECT started_at, id FROM runs WHERE ?1 IS NULL OR status = ?1 \
                     ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?2";
    seeded.deep_cursor = cursor(
        sqlx::query_as(at_offset)
            .bind(None::<&str>)
            .bind((seeded.runs / 2) as i64)
            .fetch_one(db.pool())
            .await?,
    );
    let failed: i64 = sqlx::query_scalar("SELECT count(*) FROM runs WHERE status = 'failed'")
        .fetch_one(db.pool())
        .await?;
    seeded.failed_cursor = cursor(
        sqlx::query_as(at_offset)
            .bind("failed")
            .bind(failed / 2)
            .fetch_one(db.pool())
            .await?,
    );
    let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(db.pool())
        .await?;
    seeded.audit_mid =
        sqlx::query_scalar("SELECT id FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET ?1")
            .bind(entries / 2)
            .fetch_one(db.pool())
            .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Measuring pages.

/// Who asks.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// Nobody (`/healthz`).
    Anonymous,
    /// An admin through forward auth.
    Admin,
    /// A roster person through forward auth, not an admin.
    Person,
    /// The admin API bearer token.
    Api,
}

struct Case {
    label: String,
    path: String,
    who: Who,
    markers: Vec<String>,
}

fn case(label: &str, path: impl Into<String>, who: Who, markers: &[&str]) -> Case {
    Case {
        label: label.to_owned(),
        path: path.into(),
        who,
        markers: markers.iter().map(|m| (*m).to_owned()).collect(),
    }
}

struct Measured {
    label: String,
    path: String,
    p50: f64,
    p95: f64,
    max: f64,
    bytes: usize,
    error: Option<String>,
}

fn request(client: &reqwest::Client, base: &str, case: &Case) -> reqwest::RequestBuilder {
    let request = client.get(format!("{base}{}", case.path));
    match case.who {
        Who::Anonymous => request,
        Who::Admin => request
            .header("X-authentik-username", ADMIN_USER)
            .header("X-authentik-groups", ADMIN_GROUPS),
        Who::Person => request
            .header("X-authentik-username", PERSON_SSO)
            .header("X-authentik-groups", "staff"),
        Who::Api => request.bearer_auth(API_TOKEN),
    }
}

/// One request: its latency and body, or what was wrong with the answer.
async fn fetch(
    client: &reqwest::Client,
    base: &str,
    case: &Case,
) -> Result<(Duration, String), String> {
    let started = Instant::now();
    let response = request(client, base, case)
        .send()
        .await
        .map_err(|e| format!("transport error: {e}"))?;
    let status = response.status();
    let body = response
        .text()
        .await
        .map_err(|e| format!("reading the body: {e}"))?;
    let took = started.elapsed();
    if status != reqwest::StatusCode::OK {
        let head: String = body.chars().take(400).collect();
        return Err(format!("status {status}: {head}"));
    }
    if let Some(missing) = case.markers.iter().find(|m| !body.contains(m.as_str())) {
        return Err(format!(
            "{missing:?} is not in the answer ({} bytes)",
            body.len()
        ));
    }
    Ok((took, body))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index].as_secs_f64() * 1e3
}

/// One warm-up request, then `n` sequential ones.
async fn measure(client: &reqwest::Client, base: &str, case: &Case, n: usize) -> Measured {
    let mut latencies = Vec::with_capacity(n);
    let mut bytes = 0;
    let mut error = None;
    for attempt in 0..=n {
        match fetch(client, base, case).await {
            Ok((took, body)) => {
                bytes = body.len();
                if attempt > 0 {
                    latencies.push(took);
                }
            }
            Err(message) => {
                error = Some(message);
                break;
            }
        }
    }
    latencies.sort_unstable();
    Measured {
        label: case.label.clone(),
        path: case.path.clone(),
        p50: percentile(&latencies, 0.50),
        p95: percentile(&latencies, 0.95),
        max: percentile(&latencies, 1.0),
        bytes,
        error,
    }
}

fn pages(seeded: &Seeded, today: i64) -> Vec<Case> {
    let diff = node_name(DIFF_NODE);
    let flapping = node_name(5);
    let failing = node_name(17);
    let reenrolled = node_name(3);
    let (since, until) = (date_of_day(today - 7), date_of_day(today - 5));
    let serials = &seeded.diff_serials;
    let a = Who::Admin;
    let git = "git_clone:/home/ancamilea/code/infra";
    vec![
        case(
            "overview",
            "/ui/",
            a,
            &["<h1>Overview", "<svg", "Recent failures", "Compile errors"],
        ),
        case(
            "nodes (worst first)",
            "/ui/nodes",
            a,
            &["<h1>Nodes", &failing, &seeded.last_node],
        ),
        case(
            "nodes sort=name",
            "/ui/nodes?sort=name",
            a,
            &["<h1>Nodes", &diff],
        ),
        case(
            "nodes sort=report",
            "/ui/nodes?sort=report",
            a,
            &["<h1>Nodes", &diff],
        ),
        case(
            "nodes status=failed",
            "/ui/nodes?status=failed",
            a,
            &["<h1>Nodes", &failing],
        ),
        case(
            "nodes status=unchanged",
            "/ui/nodes?status=unchanged",
            a,
            &["<h1>Nodes"],
        ),
        case(
            "nodes q=ws-000",
            "/ui/nodes?q=ws-000",
            a,
            &["<h1>Nodes", "ws-00001"],
        ),
        case(
            "node (3 serials, diff)",
            format!("/ui/nodes/{diff}"),
            a,
            &["id=\"diff\"", "package:ripgrep", "Recent runs"],
        ),
        case(
            "node ?from=&to= diff",
            format!("/ui/nodes/{diff}?from={}&to={}", serials[0], serials[2]),
            a,
            &["id=\"diff\"", "file:/etc/skel/.tmux.conf"],
        ),
        case(
            "node (flapping)",
            format!("/ui/nodes/{flapping}"),
            a,
            &["Flapping:", "file:/home/emo/.claude.json"],
        ),
        case(
            "node (failing)",
            format!("/ui/nodes/{failing}"),
            a,
            &["Recent runs", "failed"],
        ),
        case(
            "node (key history)",
            format!("/ui/nodes/{reenrolled}"),
            a,
            &["replaced by a re-enrollment"],
        ),
        case(
            "node (pending)",
            format!("/ui/nodes/{}", seeded.pending_node),
            a,
            &["No runs reported yet"],
        ),
        case("runs", "/ui/runs", a, &["<h1>Runs", "id=\"older\""]),
        case(
            "runs node=",
            format!("/ui/runs?node={diff}"),
            a,
            &["<h1>Runs", &diff],
        ),
        case(
            "runs status=failed",
            "/ui/runs?status=failed",
            a,
            &["<h1>Runs", "failed"],
        ),
        case(
            "runs status=error",
            "/ui/runs?status=error",
            a,
            &["<h1>Runs", "could not run"],
        ),
        case(
            "runs noop=yes",
            "/ui/runs?noop=yes",
            a,
            &["<h1>Runs", "noop"],
        ),
        case(
            "runs since=&until=",
            format!("/ui/runs?since={since}&until={until}"),
            a,
            &["<h1>Runs", "id=\"older\""],
        ),
        case(
            "runs status=changed since=&until=",
            format!("/ui/runs?status=changed&since={since}&until={until}"),
            a,
            &["<h1>Runs", "changed"],
        ),
        case(
            "runs node= status=failed",
            format!("/ui/runs?node={failing}&status=failed"),
            a,
            &["<h1>Runs", &failing],
        ),
        case(
            "runs later page (half-way down)",
            format!("/ui/runs?before={}", seeded.deep_cursor),
            a,
            &["<h1>Runs", "id=\"older\"", "Newest"],
        ),
        case(
            "runs status=failed later page",
            format!("/ui/runs?status=failed&before={}", seeded.failed_cursor),
            a,
            &["<h1>Runs", "Newest"],
        ),
        case(
            "run (20 events)",
            format!("/ui/runs/{}", seeded.sample_run),
            a,
            &[
                "Run on",
                "service:t3-serve@ancamilea.service",
                "Unchanged (",
            ],
        ),
        case(
            "run (failed)",
            format!("/ui/runs/{}", seeded.failed_run),
            a,
            &["Failed and skipped", git, "Could not resolve host"],
        ),
        case(
            "run (flapping, diffs)",
            format!("/ui/runs/{}", seeded.flapping_run),
            a,
            &["Changes", "numStartups", "corrective"],
        ),
        case(
            "failures",
            "/ui/failures",
            a,
            &["<h1>Failures", git, "Flapping resources", &flapping],
        ),
        case(
            "roster",
            "/ui/roster",
            a,
            &["<h1>Roster", "emil.barzin", "ancaelena98", "failing"],
        ),
        case(
            "roster/emo",
            "/ui/roster/emo",
            a,
            &[
                "file:/home/emo/.claude.json",
                "service:t3-serve@emo.service",
            ],
        ),
        case(
            "roster/ancamilea",
            "/ui/roster/ancamilea",
            a,
            &[git, "Could not resolve host"],
        ),
        case(
            "enrollment",
            "/ui/enrollment",
            a,
            &[
                "Waiting for approval",
                &seeded.pending_node,
                &seeded.quarantined_node,
                &seeded.token_id,
            ],
        ),
        case("audit", "/ui/audit", a, &["<h1>Audit log", "Older"]),
        case(
            "audit later page",
            format!("/ui/audit?before={}", seeded.audit_mid),
            a,
            &["<h1>Audit log", "Older"],
        ),
        case(
            "audit target=",
            format!("/ui/audit?target={reenrolled}"),
            a,
            &["node.reenroll"],
        ),
        case(
            "me (emil.barzin, not admin)",
            "/ui/me",
            Who::Person,
            &["Managed for me", "file:/home/emo/.claude.json"],
        ),
        case(
            "api runs",
            "/api/v1/runs",
            Who::Api,
            &["\"runs\"", "\"next\""],
        ),
        case(
            "api runs node= status=",
            format!("/api/v1/runs?node={failing}&status=failed"),
            Who::Api,
            &["\"runs\"", &failing],
        ),
        case(
            "api runs limit=500",
            "/api/v1/runs?limit=500",
            Who::Api,
            &["\"runs\""],
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// The queries behind the pages, called directly (same library, same SQLite, same connection
// settings as the server), for where a page's time goes.

/// p50 and max in ms of `n` calls after one warm-up, and the rows of the last call.
async fn time_query<F, Fut>(label: &str, n: usize, call: F) -> Result<(), BoxError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<usize, BoxError>>,
{
    let mut rows = call().await?;
    let mut latencies = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        rows = call().await?;
        latencies.push(started.elapsed());
    }
    latencies.sort_unstable();
    println!(
        "{label:<58} {:>9.2} {:>9.2} {:>7}",
        percentile(&latencies, 0.5),
        percentile(&latencies, 1.0),
        rows
    );
    Ok(())
}

async fn query_breakdown(db_path: &Path, site: &Path, n: usize) -> Result<(), BoxError> {
    use steward_server::ui::queries;
    let db = Db::open(db_path).await?;
    let at = now();
    let today = at.0.div_euclid(86_400);
    let diff = node_name(DIFF_NODE);
    let flapping = node_name(5);
    println!(
        "\n{:<58} {:>9} {:>9} {:>7}",
        "query (called directly, after the server stopped)", "p50 ms", "max ms", "rows"
    );
    time_query("queries::fleet(all) [overview, nodes]", n, || async {
        Ok(queries::fleet(&db, None).await?.len())
    })
    .await?;
    time_query("queries::fleet(one) [node]", n, || async {
        Ok(queries::fleet(&db, Some(&diff)).await?.len())
    })
    .await?;
    time_query("queries::outcomes_per_day(14 d) [overview]", n, || async {
        Ok(
            queries::outcomes_per_day(&db, Timestamp((today - 13) * 86_400), None)
                .await?
                .len(),
        )
    })
    .await?;
    time_query("queries::recent_failed_runs(10) [overview]", n, || async {
        Ok(queries::recent_failed_runs(&db, 10).await?.len())
    })
    .await?;
    time_query("compile_failures::list_current [overview]", n, || async {
        Ok(db::compile_failures::list_current(&db).await?.len())
    })
    .await?;
    time_query("queries::current_failures [failures]", n, || async {
        Ok(queries::current_failures(&db).await?.len())
    })
    .await?;
    time_query("queries::failure_history(7 d) [failures]", n, || async {
        Ok(
            queries::failure_history(&db, Timestamp(at.0 - 7 * 86_400), 100)
                .await?
                .len(),
        )
    })
    .await?;
    time_query(
        "queries::flapping(3, 30 d, fleet) [failures]",
        n,
        || async {
            Ok(
                queries::flapping(&db, 3, Timestamp(at.0 - 30 * 86_400), None)
                    .await?
                    .len(),
            )
        },
    )
    .await?;
    time_query("queries::flapping(3, 30 d, one node) [node]", n, || async {
        Ok(
            queries::flapping(&db, 3, Timestamp(at.0 - 30 * 86_400), Some(&flapping))
                .await?
                .len(),
        )
    })
    .await?;
    time_query(
        "queries::last_run_events_mentioning(everyone) [roster]",
        n,
        || async {
            Ok(
                queries::last_run_events_mentioning(&db, &["emo", "ancamilea"])
                    .await?
                    .len(),
            )
        },
    )
    .await?;
    time_query(
        "queries::last_run_events_mentioning(one) [person, me]",
        n,
        || async {
            Ok(queries::last_run_events_mentioning(&db, &["emo"])
                .await?
                .len())
        },
    )
    .await?;
    time_query("runs::list(node, 30) [node]", n, || async {
        let filter = runs::RunFilter {
            node: Some(NodeId(diff.clone())),
            ..runs::RunFilter::default()
        };
        Ok(runs::list(&db, &filter, runs::Page::first(30))
            .await?
            .runs
            .len())
    })
    .await?;
    time_query("queries::pending_nodes [enrollment]", n, || async {
        Ok(queries::pending_nodes(&db).await?.len())
    })
    .await?;
    time_query("loader::load_site_dir [roster, person, me]", n, || async {
        let site = site.to_owned();
        tokio::task::spawn_blocking(move || steward_catalogs::loader::load_site_dir(&site))
            .await?
            .map_err(|e| format!("{e:?}"))?;
        Ok(1)
    })
    .await?;
    db.close().await;
    Ok(())
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
    println!("steward-server web UI benchmark: {scale:?}");
    println!(
        "server: child process `steward-server serve`, plain HTTP loopback listener, forward auth \
         from 127.0.0.1; client: this process, sequential requests ({} CPUs shared)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    let workspace = Workspace::new()?;
    let (site, vault, data, log) = (
        &workspace.site,
        &workspace.vault,
        &workspace.data,
        &workspace.log,
    );
    if std::env::var("BENCH_KEEP").is_ok_and(|v| v != "0" && !v.is_empty()) {
        println!("keeping {} (BENCH_KEEP)", workspace.dir.path().display());
    }
    let db_path = data.join("steward.db");

    let t = Instant::now();
    let seeded = {
        let db = Db::open(&db_path).await?;
        let seeded = seed(&db, &scale, site, vault).await?;
        db.checkpoint().await?;
        db.close().await;
        seeded
    };
    let size = |path: &Path| fs::metadata(path).map_or(0, |m| m.len());
    let wal = size(&PathBuf::from(format!("{}-wal", db_path.display())));
    println!(
        "seeding took {:.1} s in all; database file {:.1} MB (WAL {:.1} MB)",
        t.elapsed().as_secs_f64(),
        size(&db_path) as f64 / 1e6,
        wal as f64 / 1e6
    );

    let port = free_port();
    let token_sha256 = hex::encode(Sha256::digest(API_TOKEN.as_bytes()));
    let config = workspace.write_config(
        port,
        &format!(
            "[admin]\ntoken_sha256 = \"{token_sha256}\"\n[ui]\ntrusted_proxies = [\"127.0.0.1/32\"]\n"
        ),
    );
    let t = Instant::now();
    let mut server = ServerProcess::start(&config, port, log).await?;
    let (rss, _) = server.memory();
    println!(
        "server answered /healthz {:.1} s after its start (integrity check and migrations of the \
         seeded file included); VmRSS {:.1} MB",
        t.elapsed().as_secs_f64(),
        mb(rss)
    );
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()?;
    let base = server.base.clone();
    let n = scale.requests;

    let healthz = measure(
        &client,
        &base,
        &case("healthz", "/healthz", Who::Anonymous, &[]),
        n.max(50),
    )
    .await;
    if let Some(error) = &healthz.error {
        return Err(format!("GET /healthz: {error}").into());
    }
    let baseline = healthz.p50.max(1e-3);
    println!(
        "baseline GET /healthz: p50 {:.3} ms, p95 {:.3} ms, max {:.3} ms ({} requests)",
        healthz.p50,
        healthz.p95,
        healthz.max,
        n.max(50)
    );
    println!(
        "\n{:<36} {:>9} {:>9} {:>9} {:>10} {:>8}  path",
        "page", "p50 ms", "p95 ms", "max ms", "×healthz", "KB"
    );
    let today = now().0.div_euclid(86_400);
    let mut results = Vec::new();
    for case in pages(&seeded, today) {
        let measured = measure(&client, &base, &case, n).await;
        match &measured.error {
            None => println!(
                "{:<36} {:>9.2} {:>9.2} {:>9.2} {:>10.0} {:>8.1}  {}",
                measured.label,
                measured.p50,
                measured.p95,
                measured.max,
                measured.p50 / baseline,
                measured.bytes as f64 / 1024.0,
                measured.path
            ),
            Some(error) => println!("{:<36} FAILED: {error}  {}", measured.label, measured.path),
        }
        results.push(measured);
    }
    let (rss, hwm) = server.memory();
    println!(
        "\nserver after the pages: VmRSS {:.1} MB, VmHWM {:.1} MB",
        mb(rss),
        mb(hwm)
    );
    server.stop();
    let log_text = fs::read_to_string(log).unwrap_or_default();
    let errors = log_text
        .lines()
        .filter(|line| line.contains("\"ERROR\"") || line.contains(" ERROR "))
        .count();
    println!(
        "server log: {} lines, {errors} at level ERROR",
        log_text.lines().count()
    );
    query_breakdown(&db_path, site, n).await?;

    let mut summary = String::new();
    let mut over = 0;
    let mut failed = 0;
    for measured in &results {
        let verdict = match &measured.error {
            Some(_) => {
                failed += 1;
                "FAILED (see above)".to_owned()
            }
            None if measured.p95 <= LIMIT_MS => "ok".to_owned(),
            None => {
                over += 1;
                format!("OVER {LIMIT_MS:.0} ms")
            }
        };
        let _ = writeln!(
            summary,
            "{:<36} p50 {:>7.2} ms  p95 {:>7.2} ms  {verdict}",
            measured.label, measured.p50, measured.p95
        );
    }
    println!(
        "\nsummary ({} nodes, {} runs, {} resource events; verdict on the p95 of {n} requests, \
         limit {LIMIT_MS:.0} ms):\n{summary}{} pages ok, {over} over {LIMIT_MS:.0} ms, \
         {failed} failed",
        scale.nodes,
        seeded.runs,
        seeded.events,
        results.len() - over - failed,
    );
    if std::env::var("BENCH_KEEP").is_ok_and(|v| v != "0" && !v.is_empty()) {
        let _ = workspace.dir.keep();
    }
    if failed > 0 {
        return Err(format!("{failed} page(s) did not answer as expected").into());
    }
    Ok(())
}
