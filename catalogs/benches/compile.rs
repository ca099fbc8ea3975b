//! Compiler and verification benchmark (`cargo bench -p steward-catalogs --bench compile`).
//!
//! Not a test: it prints figures and ratios, never asserts on time. Machines here are noisy, so
//! every figure is printed next to a baseline measured in the same run: serializing the same
//! catalog to JSON (`serde_json::to_vec`), which the compile and verify paths both contain.
//!
//! Workload: the example site's tiers, bundles and files with a synthetic roster of N users
//! (N = 5, 50, 500; tiers alternate power-user / namespace-owner, half in the workspace
//! layout), and Vault data with a matching `k8s_users` entry for each.
//! Targets (issue 2): compile of 50 users <= 1 ms and linear in users; verification of a
//! 50-user signed catalog <= 0.5 ms.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use steward_catalogs::compile::{Compiler, NodeInfo};
use steward_catalogs::model::PortRange;
use steward_catalogs::{loader, site, vault, State};
use steward_protocol::envelope::{issue_certificate, sign_catalog, verify_catalog, SigningKeyPair};
use steward_protocol::seal::{seal_catalog_secrets, EncryptionKeyPair, OsRng};
use steward_protocol::{NodeId, Serial, Timestamp};

const NOW: Timestamp = Timestamp(1_790_000_000);

/// Mean time per call of `f`, measured over at least `budget` after a warm-up.
fn time_per_call<T>(budget: Duration, mut f: impl FnMut() -> T) -> Duration {
    for _ in 0..3 {
        black_box(f());
    }
    let mut iterations = 0u32;
    let start = Instant::now();
    while start.elapsed() < budget || iterations < 10 {
        black_box(f());
        iterations += 1;
    }
    start.elapsed() / iterations
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn synthetic_site(
    example: &Path,
    users: usize,
) -> (steward_catalogs::Site, steward_catalogs::VaultData) {
    let mut files = loader::read_site_files(example).expect("reading the example site");
    let mut roster = String::from("users:\n");
    let mut roles = String::from("secret/platform:\n  k8s_users:\n");
    for i in 0..users {
        let (tier, extra) = if i % 2 == 0 {
            ("power-user", String::new())
        } else {
            (
                "namespace-owner",
                format!(", namespaces: [ns{i}], code_layout: workspace, repos: [tripit]"),
            )
        };
        let _ = writeln!(
            roster,
            "  user{i}: {{ authentik_user: sso{i}, k8s_user: k{i}, tier: {tier}{extra} }}"
        );
        let namespaces = if i % 2 == 0 {
            String::new()
        } else {
            format!(", namespaces: [ns{i}]")
        };
        let _ = writeln!(roles, "    k{i}: {{ role: {tier}{namespaces} }}");
    }
    files.insert("roster.yaml".into(), roster);
    let mut site =
        site::parse_site(&files).unwrap_or_else(|e| panic!("synthetic site invalid:\n{e}"));
    site.config.ports = Some(PortRange {
        start: 20_000,
        end: 30_000,
    });
    // Keep every non-role secret of the example and replace the role data.
    let example_vault = std::fs::read_to_string(example.join("vault-data.yaml")).unwrap();
    let mut vault_data = vault::parse_vault_data("vault-data.yaml", &example_vault).unwrap();
    let roles = vault::parse_vault_data("roles.yaml", &roles).unwrap();
    vault_data.paths.extend(roles.paths);
    (site, vault_data)
}

fn main() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/example-site");
    let budget = Duration::from_millis(if std::env::var_os("QUICK").is_some() {
        100
    } else {
        1500
    });
    let node = NodeInfo::new(NodeId("devvm".into()));
    println!("steward compile/verify benchmark (budget {budget:?} per figure)\n");
    println!(
        "{:>6} {:>10} {:>12} {:>14} {:>12} {:>10}",
        "users", "resources", "compile µs", "µs per user", "baseline µs", "ratio"
    );
    let mut fifty = None;
    let mut per_user = BTreeMap::new();
    for users in [5usize, 50, 500] {
        let (site, vault_data) = synthetic_site(&example, users);
        let compiler = Compiler::new(&site).unwrap_or_else(|e| panic!("{e}"));
        let compiled = compiler
            .compile(&vault_data, &node, &State::default(), NOW)
            .unwrap_or_else(|e| panic!("{e}"));
        let state = compiled.state.clone();
        let compile = time_per_call(budget, || {
            compiler.compile(&vault_data, &node, &state, NOW).unwrap()
        });
        let baseline = time_per_call(budget, || serde_json::to_vec(&compiled.catalog).unwrap());
        per_user.insert(users, micros(compile) / users as f64);
        println!(
            "{users:>6} {:>10} {:>12.1} {:>14.2} {:>12.1} {:>9.2}x",
            compiled.catalog.resources.len(),
            micros(compile),
            micros(compile) / users as f64,
            micros(baseline),
            compile.as_secs_f64() / baseline.as_secs_f64()
        );
        if users == 50 {
            fifty = Some((compiled.catalog, micros(compile)));
        }
    }
    let growth = per_user[&500] / per_user[&5];
    println!("\nper-user cost at 500 users / at 5 users: {growth:.2} (1.0 = perfectly linear)");

    let (mut catalog, compile_50) = fifty.unwrap();
    let root = SigningKeyPair::from_bytes([1; 32]);
    let catalog_key = SigningKeyPair::from_bytes([2; 32]);
    let node_key = EncryptionKeyPair::from_bytes([3; 32]);
    catalog.serial = Serial(1_790_000_000_000);
    seal_catalog_secrets(&mut catalog, &node_key.public_bytes(), &mut OsRng);
    let certificate = issue_certificate(
        &root,
        &catalog_key.public_bytes(),
        NOW,
        NOW.plus_secs(86_400 * 30),
    );
    let envelope = sign_catalog(&catalog, &catalog_key, &certificate).unwrap();
    let pinned = root.key_id();
    let node_id = NodeId("devvm".into());
    let verify = time_per_call(budget, || {
        verify_catalog(&envelope, &pinned, &node_id, None, NOW).unwrap()
    });
    let baseline = time_per_call(budget, || serde_json::to_vec(&catalog).unwrap());
    println!(
        "\nverify 50-user signed catalog ({} bytes): {:.1} µs; baseline (serialize it) {:.1} µs; ratio {:.2}x",
        envelope.len(),
        micros(verify),
        micros(baseline),
        verify.as_secs_f64() / baseline.as_secs_f64()
    );
    breakdown(&envelope, budget);
    println!("\ntargets: compile 50 users <= 1000 µs (measured {compile_50:.1} µs); verify 50 users <= 500 µs (measured {:.1} µs)", micros(verify));
}

/// Where verification spends its time: each stage of `verify_catalog` timed on its own.
fn breakdown(envelope: &[u8], budget: Duration) {
    use base64::Engine as _;
    use sha2::Digest as _;
    let parsed: steward_protocol::envelope::CatalogEnvelope =
        serde_json::from_slice(envelope).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(&parsed.catalog.payload)
        .unwrap();
    type Stage<'a> = (&'static str, Box<dyn Fn() + 'a>);
    let stages: [Stage<'_>; 5] = [
        (
            "parse envelope JSON",
            Box::new(|| {
                black_box(
                    steward_protocol::strict::from_slice::<
                        steward_protocol::envelope::CatalogEnvelope,
                    >(envelope, usize::MAX)
                    .unwrap(),
                );
            }),
        ),
        (
            "base64-decode payload",
            Box::new(|| {
                black_box(
                    base64::engine::general_purpose::STANDARD
                        .decode(&parsed.catalog.payload)
                        .unwrap(),
                );
            }),
        ),
        (
            "sha-256 of payload",
            Box::new(|| {
                black_box(sha2::Sha256::digest(&payload));
            }),
        ),
        (
            "strict parse of the catalog",
            Box::new(|| {
                black_box(
                    steward_protocol::strict::from_slice_typed::<steward_protocol::Catalog>(
                        &payload,
                        usize::MAX,
                    )
                    .unwrap(),
                );
            }),
        ),
        (
            "Catalog::validate",
            Box::new({
                let catalog: steward_protocol::Catalog = serde_json::from_slice(&payload).unwrap();
                move || {
                    catalog.validate().unwrap();
                    black_box(&catalog);
                }
            }),
        ),
    ];
    println!("\nverification stages (payload {} bytes):", payload.len());
    for (name, stage) in stages {
        println!(
            "  {name:<30} {:>9.1} µs",
            micros(time_per_call(budget / 3, &*stage))
        );
    }
}
