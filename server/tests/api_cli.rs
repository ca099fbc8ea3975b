//! The admin CLI (`token`, `node`, `keys`, `backup`, `config`, `compile --signed`) run as the real binary
//! against the data directory of a running server.

mod support;

use std::os::unix::fs::PermissionsExt;

use base64::Engine;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use steward_protocol::join::JoinString;
use steward_protocol::NodeId;
use support::server::{example_site, now, Agent, Options, TestServer};

use support::cli::{cli, ok};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_node_and_backup_commands_work_on_the_servers_database() {
    let server = TestServer::start().await;
    let data = server.data_dir.display().to_string();

    let out = ok(&cli(&[
        "token",
        "create",
        "--data-dir",
        &data,
        "--server-url",
        &server.url,
        "--hostname",
        "devvm",
        "--ttl",
        "1h",
    ]));
    let join: JoinString = out.trim().parse().unwrap();
    assert_eq!(
        join.root_key_id(),
        &server.root_key_id(),
        "E1: the pin is the root key"
    );
    assert_eq!(join.server_url(), server.url);
    let listed = ok(&cli(&["token", "list", "--data-dir", &data]));
    assert!(
        listed.contains(join.token().id()) && listed.contains("valid"),
        "{listed}"
    );
    assert!(
        !listed.contains(join.token().secret()),
        "the secret is never shown again"
    );

    let agent = Agent::new("devvm");
    let (_, body) = agent.enroll(&server, Some(&join.token().expose())).await;
    assert_eq!(body["status"], "pending");
    let nodes = ok(&cli(&["node", "list", "--data-dir", &data]));
    assert!(
        nodes.contains("devvm") && nodes.contains("pending"),
        "{nodes}"
    );

    ok(&cli(&["node", "approve", "devvm", "--data-dir", &data]));
    assert_eq!(agent.catalog(&server).await.status(), StatusCode::OK);
    let (_, audit) = server
        .admin(Method::GET, "/api/v1/audit?target=devvm", None)
        .await;
    assert_eq!(audit[0]["action"], "node.approve");
    assert_eq!(audit[0]["actor"], "cli:alice");

    // Run-now from the CLI: the next long-poll returns at once.
    ok(&cli(&["node", "run-now", "devvm", "--data-dir", &data]));
    let response = agent
        .signed(
            &server,
            Method::GET,
            "/v1/wait?serial=1&timeout=30",
            Vec::new(),
            &[],
        )
        .await;
    assert_eq!(response.json::<Value>().await.unwrap()["reason"], "run_now");

    let backup = server.dirs.path().join("backup.db");
    ok(&cli(&[
        "backup",
        &backup.display().to_string(),
        "--data-dir",
        &data,
    ]));
    let mode = std::fs::metadata(&backup).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    ok(&cli(&[
        "node",
        "revoke",
        "devvm",
        "--reason",
        "rebuilt",
        "--data-dir",
        &data,
    ]));
    let status = agent.catalog(&server).await.status();
    assert!(matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ));

    let id = join.token().id().to_owned();
    ok(&cli(&["token", "revoke", &id, "--data-dir", &data]));
    let refused = cli(&["token", "revoke", &id, "--data-dir", &data]);
    assert!(!refused.status.success());
    // A data directory without a database is refused, not created.
    let empty = server.dirs.path().join("empty");
    let refused = cli(&["node", "list", "--data-dir", &empty.display().to_string()]);
    assert!(!refused.status.success());
    assert!(!empty.join("steward.db").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compile_signed_writes_an_envelope_the_agent_accepts() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    let out = server.dirs.path().join("devvm.envelope.json");
    let key = base64::engine::general_purpose::STANDARD.encode(agent.encryption.public_bytes());
    ok(&cli(&[
        "compile",
        "--site",
        &example_site().display().to_string(),
        "--node",
        "devvm",
        "--vault-data",
        &example_site().join("vault-data.yaml").display().to_string(),
        "--signed",
        "--to-key",
        &key,
        "--data-dir",
        &server.data_dir.display().to_string(),
        "--out",
        &out.display().to_string(),
    ]));
    let bytes = std::fs::read(&out).unwrap();
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let verified = steward_protocol::verify_catalog(
        bytes.trim_ascii_end(),
        &server.root_key_id(),
        &NodeId("devvm".into()),
        None,
        now(),
    )
    .unwrap();
    assert!(verified.serial.0 > 1_600_000_000_000, "serial is now in ms");
    let sealed = verified.catalog.resources.iter().any(|r| {
        matches!(&r.spec, steward_protocol::ResourceSpec::File(f)
            if matches!(f.content, steward_protocol::FileContent::Sealed(_)))
    });
    assert!(sealed);
    // Without a data directory holding keys, nothing is signed (no new root key invented).
    let refused = cli(&[
        "compile",
        "--site",
        &example_site().display().to_string(),
        "--node",
        "devvm",
        "--signed",
        "--to-key",
        &key,
        "--data-dir",
        &server.dirs.path().join("nothing").display().to_string(),
    ]);
    assert!(!refused.status.success());
}

#[test]
fn config_example_prints_a_valid_commented_config() {
    let out = ok(&cli(&["config", "example"]));
    assert!(out.contains("# "), "commented");
    steward_server::config::Config::parse(&out)
        .unwrap()
        .resolve()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "plain_listen = \"0.0.0.0:8080\"\nvault_data_file = \"/x\"\n",
    )
    .unwrap();
    let refused = cli(&["config", "check", "--config", &bad.display().to_string()]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("loopback"));
}

/// The catalog key of an envelope (its certificate's `key_id`).
fn catalog_key_of(envelope: &[u8]) -> String {
    let envelope: Value = serde_json::from_slice(envelope).unwrap();
    let payload = base64::engine::general_purpose::STANDARD
        .decode(
            envelope["certificate"]["document"]["payload"]
                .as_str()
                .unwrap(),
        )
        .unwrap();
    let certificate: Value = serde_json::from_slice(&payload).unwrap();
    certificate["key_id"].as_str().unwrap().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotating_the_catalog_key_keeps_agents_trusting_the_server() {
    let dirs = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut server = TestServer::start_in(Options::default(), dirs.clone()).await;
    let data = server.data_dir.display().to_string();
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let before = agent.catalog(&server).await.bytes().await.unwrap();
    let shown = ok(&cli(&["keys", "show", "--data-dir", &data]));
    let old_key = catalog_key_of(&before);
    assert!(shown.contains(&old_key), "{shown}");
    assert!(shown.contains(server.root_key_id().as_str()), "{shown}");
    server.stop().await;

    let rotated = ok(&cli(&["keys", "rotate-catalog", "--data-dir", &data]));
    assert!(rotated.contains(&old_key), "{rotated}");
    let key_mode = std::fs::metadata(server.data_dir.join("catalog.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(key_mode & 0o777, 0o600);

    let restarted = server.start_again().await;
    let after = agent.catalog(&restarted).await.bytes().await.unwrap();
    let new_key = catalog_key_of(&after);
    assert_ne!(new_key, old_key);
    assert!(rotated.contains(&new_key), "{rotated}");
    // The agent's pin (the root key) did not change: the new envelope verifies.
    steward_protocol::verify_catalog(
        &after,
        &server.root_key_id(),
        &NodeId("devvm".into()),
        None,
        now(),
    )
    .unwrap();
    let (_, audit) = restarted.admin(Method::GET, "/api/v1/audit", None).await;
    assert!(audit.to_string().contains("keys.rotate_catalog"), "{audit}");
}
