//! The HTTP API against a real server: TLS on `127.0.0.1:0`, a real SQLite file, the example
//! site (Vault data from its `vault-data.yaml`; `api_vault.rs` uses a real OpenBao), and agents
//! simulated with the real protocol functions.

mod support;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use steward_protocol::join::JoinString;
use steward_protocol::{NodeId, Refusal};
use steward_server::http::{access_of, route_table, Access, PUBLIC_ROUTES};
use support::server::{token_of, Agent, Options, TestServer};

/// Rows of every table that holds state (nonces and last-seen times are authentication
/// bookkeeping and left out), for "this changed nothing" checks.
async fn state_snapshot(server: &TestServer) -> Vec<String> {
    let queries = [
        "SELECT name, status, class, approved_at, catalog_serial, catalog_digest, run_now_requested_at FROM nodes ORDER BY name",
        "SELECT key_id, revoked_at, revoke_reason FROM node_keys ORDER BY id",
        "SELECT key_id FROM pending_keys ORDER BY key_id",
        "SELECT token_id, uses_done, revoked_at FROM bootstrap_tokens ORDER BY token_id",
        "SELECT node_id, serial, digest FROM catalogs ORDER BY id",
        "SELECT node_id, occurrences, resolved_at FROM compile_failures ORDER BY id",
        "SELECT uuid FROM runs ORDER BY id",
        "SELECT id, action FROM audit_log ORDER BY id",
        "SELECT node_id, os_user, port FROM port_allocations ORDER BY node_id, os_user",
    ];
    let mut rows = Vec::new();
    for query in queries {
        let found: Vec<sqlx::sqlite::SqliteRow> = sqlx::query(query)
            .fetch_all(server.state.db.pool())
            .await
            .unwrap();
        for row in found {
            use sqlx::{Column, Row, TypeInfo, ValueRef};
            let mut text = String::from(query);
            for (i, column) in row.columns().iter().enumerate() {
                let raw = row.try_get_raw(i).unwrap();
                let value = if raw.is_null() {
                    "NULL".to_owned()
                } else if raw.type_info().name() == "INTEGER" {
                    row.get::<i64, _>(i).to_string()
                } else {
                    row.get::<String, _>(i)
                };
                text.push_str(&format!(" {}={value}", column.name()));
            }
            rows.push(text);
        }
    }
    rows
}

fn concrete(path: &str) -> String {
    path.replace("{name}", "devvm")
        .replace("{token_id}", "0a1b2c3d4e5f")
        .replace("{run_id}", "00000000-0000-4000-8000-000000000000")
}

#[tokio::test]
async fn every_route_in_router_requires_auth_except_public_allowlist() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let table = route_table();
    // The allowlist names real routes, and every route has an access rule.
    for public in PUBLIC_ROUTES {
        assert!(
            table.iter().any(|r| r.path == *public),
            "{public} is not a route"
        );
    }
    let paths: BTreeSet<_> = table.iter().map(|r| (r.method, r.path)).collect();
    assert_eq!(paths.len(), table.len(), "a route is declared twice");

    let before = state_snapshot(&server).await;
    for route in &table {
        let method = Method::from_bytes(route.method.as_bytes()).unwrap();
        let path = concrete(route.path);
        let response = server.anonymous(method.clone(), &path, None).await;
        let status = response.status();
        match access_of(route.path) {
            Access::Public => assert!(
                !matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                "public {} {} answered {status}",
                route.method,
                route.path
            ),
            access => {
                assert_ne!(access, Access::Denied, "{} has no access rule", route.path);
                assert!(
                    matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
                    "anonymous {} {} answered {status}",
                    route.method,
                    route.path
                );
            }
        }
        // A wrong admin token and a forged agent signature do not help either.
        if access_of(route.path) != Access::Public {
            let response = server
                .client
                .request(method.clone(), format!("{}{path}", server.url))
                .bearer_auth("not-the-token")
                .header("x-steward-key", agent.signing.key_id().as_str())
                .header("x-steward-timestamp", "1")
                .header("x-steward-nonce", "00112233445566778899aabbccddeeff")
                .header("x-steward-signature", "AAAA")
                .send()
                .await
                .unwrap();
            assert!(
                matches!(
                    response.status(),
                    StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
                ),
                "{} {} with bad credentials answered {}",
                route.method,
                route.path,
                response.status()
            );
        }
    }
    // No GET route changes state, even with credentials (W2 for GET): admin GETs with the
    // token; the agent's only GET is the long-poll, called with a short timeout.
    for route in table.iter().filter(|r| r.method == "GET") {
        let path = concrete(route.path);
        match access_of(route.path) {
            Access::Admin => {
                let (status, _) = server.admin(Method::GET, &path, None).await;
                assert!(
                    status.is_success() || status == StatusCode::NOT_FOUND,
                    "{path}: {status}"
                );
            }
            Access::Agent => {
                let response = agent
                    .signed(
                        &server,
                        Method::GET,
                        &format!("{path}?timeout=0"),
                        Vec::new(),
                        &[],
                    )
                    .await;
                assert_eq!(response.status(), StatusCode::OK, "{path}");
            }
            _ => {
                let response = server.anonymous(Method::GET, &path, None).await;
                assert!(
                    response.status().is_success(),
                    "{path}: {}",
                    response.status()
                );
            }
        }
    }
    assert_eq!(
        state_snapshot(&server).await,
        before,
        "a GET route changed state"
    );
    // An unknown route is simply not found.
    let response = server
        .anonymous(Method::GET, "/v1/nothing-here", None)
        .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn enroll_approve_signed_catalog_and_report_round_trip() {
    let server = TestServer::start().await;
    let join = server
        .token(json!({ "description": "devvm", "hostname_glob": "devvm", "uses": 1 }))
        .await;
    let parsed: JoinString = join.parse().unwrap();
    let agent = Agent::new("devvm");

    // Without auto-approve the node waits for an admin.
    let (status, body) = agent.enroll(&server, Some(&parsed.token().expose())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
    // E1 (server side): the enrollment answer's root key hashes to the join string's pin.
    assert_eq!(body["root_key_id"], parsed.root_key_id().as_str());
    let root_key = base64_decode(body["root_key"].as_str().unwrap());
    assert_eq!(
        steward_protocol::KeyId::of_public_key_bytes(&root_key),
        *parsed.root_key_id()
    );
    // Pending: signed requests are refused.
    assert_eq!(agent.catalog(&server).await.status(), StatusCode::FORBIDDEN);

    let (status, body) = server
        .admin(Method::POST, "/api/v1/nodes/devvm/approve", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // Asking again with the same key is idempotent and shows the new status.
    let (_, body) = agent.enroll(&server, None).await;
    assert_eq!(body["status"], "approved", "{body}");

    let verified = agent.fetch_verified(&server, None).await.unwrap();
    assert_eq!(verified.catalog.node, NodeId("devvm".into()));
    // The secrets are sealed to the agent's key and open with it.
    let sealed: Vec<_> = verified
        .catalog
        .resources
        .iter()
        .filter_map(|r| match &r.spec {
            steward_protocol::ResourceSpec::File(file) => match &file.content {
                steward_protocol::FileContent::Sealed(sealed) => Some(sealed.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect();
    assert!(!sealed.is_empty(), "the example site's devvm has secrets");
    for value in &sealed {
        steward_protocol::seal::open(value, &agent.encryption).unwrap();
    }

    let report = agent.report(Some(verified.serial));
    let response = agent.send_report(&server, &report).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["outcome"], "stored");
    // Resubmission is idempotent.
    let response = agent.send_report(&server, &report).await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["outcome"], "duplicate");

    let (status, runs) = server
        .admin(Method::GET, "/api/v1/runs?node=devvm", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(runs["runs"][0]["run_id"], report.run_id.0.as_str());
    let (status, run) = server
        .admin(
            Method::GET,
            &format!("/api/v1/runs/{}", report.run_id),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(run["events"][0]["resource"], "package:git");
    let (status, node) = server.admin(Method::GET, "/api/v1/nodes/devvm", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(node["node"]["status"], "approved");
    assert_eq!(node["node"]["catalog_serial"], verified.serial.0);
    assert_eq!(node["facts"]["machine_id"], agent.machine_id.as_str());
    let (_, audit) = server
        .admin(Method::GET, "/api/v1/audit?target=devvm", None)
        .await;
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["node.approve", "node.enroll"]);
}

fn base64_decode(text: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .unwrap()
}

#[tokio::test]
async fn report_for_other_host_is_rejected() {
    let server = TestServer::start().await;
    let a = Agent::new("devvm");
    let b = Agent::new("ws-01");
    server.enroll_approved(&a).await;
    server.enroll_approved(&b).await;
    let mut report = a.report(None);
    report.node = NodeId("ws-01".into());
    let response = a.send_report(&server, &report).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let (_, runs) = server.admin(Method::GET, "/api/v1/runs", None).await;
    assert_eq!(runs["runs"], json!([]));
    // Invalid run ids and totals that do not match the events are refused too.
    let mut bad_id = a.report(None);
    bad_id.run_id = steward_protocol::RunId("not-a-uuid".into());
    assert_eq!(
        a.send_report(&server, &bad_id).await.status(),
        StatusCode::BAD_REQUEST
    );
    let mut bad_totals = a.report(None);
    bad_totals.totals.changed = 7;
    assert_eq!(
        a.send_report(&server, &bad_totals).await.status(),
        StatusCode::BAD_REQUEST
    );
}

#[tokio::test]
async fn server_returns_only_the_signing_keys_own_catalog() {
    // C5: identity comes from the key; there is no way to name another node.
    let server = TestServer::start().await;
    let a = Agent::new("devvm");
    let b = Agent::new("ws-01");
    server.enroll_approved(&a).await;
    server.enroll_approved(&b).await;
    let response = a.catalog(&server).await;
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.bytes().await.unwrap();
    // B's agent refuses A's catalog; A's accepts it.
    let for_b = steward_protocol::verify_catalog(
        &bytes,
        &server.root_key_id(),
        &NodeId("ws-01".into()),
        None,
        support::server::now(),
    );
    assert_eq!(for_b.unwrap_err(), Refusal::OtherNode);
    // A request signed by A but with B's key id claimed does not verify.
    let body = serde_json::to_vec(&a.facts()).unwrap();
    let mut headers = a.sign("POST", "/v1/catalog", &body);
    for (name, value) in &mut headers {
        if *name == "x-steward-key" {
            *value = b.signing.key_id().0.clone();
        }
    }
    let mut request = server
        .client
        .post(format!("{}/v1/catalog", server.url))
        .body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    assert_eq!(
        request.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn hostname_validator_rejects_traversal_and_separators_at_enrollment() {
    let server = TestServer::start().await;
    let token = server.auto_token("*", 100).await;
    for hostname in [
        "../../etc",
        "a/b",
        "..",
        "DEVVM",
        "devvm\n",
        "dev vm",
        "dev_vm",
        "-devvm",
        "devvm.",
        "",
        &"a".repeat(64),
        "dévvm",
        "devvm%2f..",
    ] {
        let agent = Agent::new(hostname);
        let (status, body) = agent.enroll(&server, Some(&token)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{hostname:?}: {body}");
    }
    let (_, nodes) = server.admin(Method::GET, "/api/v1/nodes", None).await;
    assert_eq!(nodes, json!([]), "nothing stored");
    let (_, tokens) = server.admin(Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(tokens[0]["uses_done"], 0, "no use spent");
    // Malformed keys, unknown fields and oversized bodies are refused as well.
    let agent = Agent::new("devvm");
    let mut request = serde_json::to_value(agent.enroll_request(Some(&token))).unwrap();
    request["signing_key"] = json!("AAAA");
    let response = server
        .anonymous(Method::POST, "/v1/enroll", Some(request))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let mut request = serde_json::to_value(agent.enroll_request(Some(&token))).unwrap();
    request["is_admin"] = json!(true);
    let response = server
        .anonymous(Method::POST, "/v1/enroll", Some(request))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let huge = "x".repeat(steward_protocol::MAX_ENROLL_BYTES + 1);
    let response = server
        .client
        .post(format!("{}/v1/enroll", server.url))
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn enroll_with_valid_token_but_unlisted_hostname_stays_pending() {
    let server = TestServer::start().await;
    // Auto-approve, any hostname, but `rogue` is in none of the site's host classes.
    let token = server.auto_token("*", 5).await;
    let (status, body) = Agent::new("rogue").enroll(&server, Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
    // A listed hostname with the same token is approved.
    let (_, body) = Agent::new("ws-07").enroll(&server, Some(&token)).await;
    assert_eq!(body["status"], "approved");
    // A token bound to a class approves only hosts of that class.
    let join = server
        .token(json!({ "auto_approve": true, "class": "build-server", "uses": 2 }))
        .await;
    let (_, body) = Agent::new("ws-08")
        .enroll(&server, Some(&token_of(&join)))
        .await;
    assert_eq!(body["status"], "pending");
}

#[tokio::test]
async fn expired_revoked_or_mismatched_bootstrap_token_is_refused_without_spending_a_use() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    // Expired: created with the shortest ttl, then made to expire in the database.
    let join = server
        .token(json!({ "ttl": "1h", "auto_approve": true }))
        .await;
    let token = token_of(&join);
    sqlx::query("UPDATE bootstrap_tokens SET expires_at = 1")
        .execute(server.state.db.pool())
        .await
        .unwrap();
    let (status, _) = agent.enroll(&server, Some(&token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Wrong secret.
    let join = server
        .token(json!({ "auto_approve": true, "hostname_glob": "devvm" }))
        .await;
    let token = token_of(&join);
    let (id, _) = token.split_once('.').unwrap();
    let forged = format!("{id}.{}", "0".repeat(32));
    assert_eq!(
        agent.enroll(&server, Some(&forged)).await.0,
        StatusCode::FORBIDDEN
    );
    // A hostname outside the token's glob does not spend the token's only use...
    let (status, _) = Agent::new("ws-01").enroll(&server, Some(&token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // ...so the right host can still use it.
    let (status, body) = agent.enroll(&server, Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "approved");
    // Spent now.
    let (status, _) = Agent::new("devvm-2").enroll(&server, Some(&token)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Revoked.
    let join = server
        .token(json!({ "auto_approve": true, "uses": 3 }))
        .await;
    let id = join.parse::<JoinString>().unwrap().token().id().to_owned();
    let (status, _) = server
        .admin(Method::POST, &format!("/api/v1/tokens/{id}/revoke"), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        Agent::new("ws-02")
            .enroll(&server, Some(&token_of(&join)))
            .await
            .0,
        StatusCode::FORBIDDEN
    );
    // No token at all is refused by default.
    assert_eq!(
        Agent::new("ws-03").enroll(&server, None).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn enroll_rate_limited_per_token() {
    let server = TestServer::start_with(Options {
        extra_toml: "[enroll]\nper_token_per_minute = 3\nper_address_per_minute = 1000\n".into(),
        ..Options::default()
    })
    .await;
    let token = server.auto_token("*", 100).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let (status, _) = Agent::new(&format!("ws-{i}"))
            .enroll(&server, Some(&token))
            .await;
        statuses.push(status);
    }
    assert_eq!(&statuses[..3], [StatusCode::OK; 3]);
    assert_eq!(statuses[3], StatusCode::TOO_MANY_REQUESTS);
    let agent = Agent::new("ws-9");
    let body = serde_json::to_vec(&agent.enroll_request(Some(&token))).unwrap();
    let response = post_enroll(&server, &body, &agent.sign("POST", "/v1/enroll", &body)).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(response.headers().contains_key("retry-after"));
}

#[tokio::test]
async fn enroll_rate_limited_per_address() {
    let server = TestServer::start_with(Options {
        extra_toml: "[enroll]\nper_address_per_minute = 2\n".into(),
        ..Options::default()
    })
    .await;
    let statuses: Vec<StatusCode> = {
        let mut out = Vec::new();
        for i in 0..3 {
            out.push(
                Agent::new(&format!("ws-{i}"))
                    .enroll(
                        &server,
                        Some("0a1b2c3d4e5f.00112233445566778899aabbccddeeff"),
                    )
                    .await
                    .0,
            );
        }
        out
    };
    assert_eq!(
        statuses,
        [
            StatusCode::FORBIDDEN,
            StatusCode::FORBIDDEN,
            StatusCode::TOO_MANY_REQUESTS
        ]
    );
}

/// A signed enrollment (with a token that does not exist) said to be forwarded for `host`.
async fn enroll_from(server: &TestServer, host: &str) -> StatusCode {
    let agent = Agent::new("ws-1");
    let body = serde_json::to_vec(
        &agent.enroll_request(Some("0a1b2c3d4e5f.00112233445566778899aabbccddeeff")),
    )
    .unwrap();
    let mut headers = agent.sign("POST", "/v1/enroll", &body);
    headers.push(("x-forwarded-for", host.to_owned()));
    post_enroll(server, &body, &headers).await.status()
}

/// Behind a trusted TLS-terminating proxy, per-address limits count the hosts the proxy names
/// in `X-Forwarded-For`; the same header from anyone else changes nothing.
#[tokio::test]
async fn enroll_rate_limit_counts_hosts_behind_a_trusted_proxy() {
    for (trusted, expected) in [
        (
            "[ui]\ntrusted_proxies = [\"127.0.0.1/32\"]\n",
            StatusCode::FORBIDDEN,
        ),
        ("", StatusCode::TOO_MANY_REQUESTS),
    ] {
        let server = TestServer::start_with(Options {
            extra_toml: format!("[enroll]\nper_address_per_minute = 1\n{trusted}"),
            ..Options::default()
        })
        .await;
        assert_eq!(
            enroll_from(&server, "198.51.100.1").await,
            StatusCode::FORBIDDEN
        );
        // Another host behind the proxy: its own budget only when the proxy is trusted.
        assert_eq!(
            enroll_from(&server, "198.51.100.2").await,
            expected,
            "{trusted}"
        );
    }
}

#[tokio::test]
async fn enroll_for_already_enrolled_hostname_with_new_key_is_denied_until_an_admin_approves() {
    let server = TestServer::start().await;
    let original = Agent::new("devvm");
    server.enroll_approved(&original).await;
    let first = original.fetch_verified(&server, None).await.unwrap();

    // Same hostname, new key, a valid auto-approving token without re-enroll.
    let impostor = Agent::new("devvm");
    let token = server.auto_token("devvm", 1).await;
    let (status, body) = impostor.enroll(&server, Some(&token)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "pending");
    assert_eq!(
        impostor.catalog(&server).await.status(),
        StatusCode::UNAUTHORIZED
    );
    // The old key still works, and the node is still approved.
    let again = original
        .fetch_verified(&server, Some(&first.accepted()))
        .await
        .unwrap();
    assert_eq!(again.serial, first.serial);
    let (_, node) = server.admin(Method::GET, "/api/v1/nodes/devvm", None).await;
    assert_eq!(node["node"]["status"], "approved");
    assert_eq!(
        node["pending_key"]["key_id"],
        impostor.signing.key_id().as_str()
    );
    // The admin approves the new key: the old one is revoked (kept in the history).
    let (status, body) = server
        .admin(Method::POST, "/api/v1/nodes/devvm/approve", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["replaced_key"], true);
    assert_eq!(
        original.catalog(&server).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let fresh = impostor.fetch_verified(&server, None).await.unwrap();
    assert!(
        fresh.serial > first.serial,
        "new key, new sealing, new serial"
    );
    let (_, node) = server.admin(Method::GET, "/api/v1/nodes/devvm", None).await;
    let keys = node["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    assert!(keys[1]["revoke_reason"]
        .as_str()
        .unwrap()
        .contains("approved by admin-api"));
}

#[tokio::test]
async fn reenroll_token_replaces_the_key_and_keeps_the_history() {
    let server = TestServer::start().await;
    let original = Agent::new("ws-05");
    server.enroll_approved(&original).await;
    let rebuilt = Agent::new("ws-05");
    let join = server
        .token(json!({ "auto_approve": true, "may_reenroll": true, "hostname_glob": "ws-*", "uses": 10 }))
        .await;
    let (status, body) = rebuilt.enroll(&server, Some(&token_of(&join))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "approved");
    assert_eq!(
        original.catalog(&server).await.status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(rebuilt.catalog(&server).await.status(), StatusCode::OK);
    let (_, node) = server.admin(Method::GET, "/api/v1/nodes/ws-05", None).await;
    assert_eq!(node["keys"].as_array().unwrap().len(), 2);
    let (_, audit) = server
        .admin(Method::GET, "/api/v1/audit?target=ws-05", None)
        .await;
    assert_eq!(audit[0]["action"], "node.reenroll");
}

#[tokio::test]
async fn server_quarantines_key_seen_with_two_machine_ids() {
    let server = TestServer::start().await;
    let original = Agent::new("devvm");
    server.enroll_approved(&original).await;
    assert_eq!(original.catalog(&server).await.status(), StatusCode::OK);
    let clone = original.clone_on_another_machine();
    let (status, body) = clone.enroll(&server, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "quarantined");
    // Every request of that key is refused now, from either machine.
    assert_eq!(
        original.catalog(&server).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(clone.catalog(&server).await.status(), StatusCode::FORBIDDEN);

    // The same detection on signed requests: facts with another machine id.
    let other = Agent::new("ws-01");
    server.enroll_approved(&other).await;
    let cloned = other.clone_on_another_machine();
    assert_eq!(
        cloned.catalog(&server).await.status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(other.catalog(&server).await.status(), StatusCode::FORBIDDEN);
    let (_, node) = server.admin(Method::GET, "/api/v1/nodes/ws-01", None).await;
    assert_eq!(node["node"]["status"], "quarantined");
}

/// `POST /v1/enroll` of exactly `body` with `headers`.
async fn post_enroll(
    server: &TestServer,
    body: &[u8],
    headers: &[(&'static str, String)],
) -> reqwest::Response {
    let mut request = server
        .client
        .post(format!("{}/v1/enroll", server.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    request.send().await.unwrap()
}

/// THREATS E4 must not become a way to lock a host out: enrolling a host's public key (which is
/// no secret) with another machine id needs its private key.
#[tokio::test]
async fn enrollment_needs_proof_of_possession_of_the_key() {
    let server = TestServer::start().await;
    let victim = Agent::new("devvm");
    server.enroll_approved(&victim).await;
    // The victim's public keys with another machine id, as a cloned host would send them.
    let body = serde_json::to_vec(&victim.clone_on_another_machine().enroll_request(None)).unwrap();
    // Unsigned, and signed by another key: refused, with nothing said.
    let unsigned = post_enroll(&server, &body, &[]).await;
    assert_eq!(unsigned.status(), StatusCode::UNAUTHORIZED);
    let attacker = Agent::new("devvm");
    let forged = post_enroll(&server, &body, &attacker.sign("POST", "/v1/enroll", &body)).await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    assert!(!forged.text().await.unwrap().contains("machine"));
    assert_eq!(victim.catalog(&server).await.status(), StatusCode::OK);

    // The victim's own signed enrollment replayed: refused the second time.
    let own = serde_json::to_vec(&victim.enroll_request(None)).unwrap();
    let headers = victim.sign("POST", "/v1/enroll", &own);
    assert_eq!(
        post_enroll(&server, &own, &headers).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        post_enroll(&server, &own, &headers).await.status(),
        StatusCode::UNAUTHORIZED
    );
    let (_, node) = server.admin(Method::GET, "/api/v1/nodes/devvm", None).await;
    assert_eq!(node["node"]["status"], "approved");
}

#[tokio::test]
async fn revoked_host_gets_403_on_next_request_without_server_restart() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    assert_eq!(agent.catalog(&server).await.status(), StatusCode::OK);
    let (status, _) = server
        .admin(
            Method::POST,
            "/api/v1/nodes/devvm/revoke",
            Some(json!({ "reason": "decommissioned" })),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let status = agent.catalog(&server).await.status();
    assert!(
        matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN),
        "{status}"
    );
    let report = agent.report(None);
    let status = agent.send_report(&server, &report).await.status();
    assert!(matches!(
        status,
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN
    ));
    // The revoked key cannot enroll again.
    let token = server.auto_token("devvm", 1).await;
    assert_eq!(
        agent.enroll(&server, Some(&token)).await.0,
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn replayed_nonce_and_stale_timestamp_are_refused() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let body = serde_json::to_vec(&agent.facts()).unwrap();
    let headers = agent.sign("POST", "/v1/catalog", &body);
    let send = || {
        let mut request = server
            .client
            .post(format!("{}/v1/catalog", server.url))
            .body(body.clone());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        request.send()
    };
    assert_eq!(send().await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "replay"
    );
    let mut late = Agent::new("ws-01");
    server.enroll_approved(&late).await;
    late.clock_offset = -301;
    assert_eq!(
        late.catalog(&server).await.status(),
        StatusCode::UNAUTHORIZED
    );
    late.clock_offset = 301;
    assert_eq!(
        late.catalog(&server).await.status(),
        StatusCode::UNAUTHORIZED
    );
    late.clock_offset = 250;
    assert_eq!(late.catalog(&server).await.status(), StatusCode::OK);
    // A body changed after signing does not verify.
    let headers = agent.sign("POST", "/v1/catalog", &body);
    let mut request = server
        .client
        .post(format!("{}/v1/catalog", server.url))
        .body(b"{}".to_vec());
    for (name, value) in &headers {
        request = request.header(*name, value);
    }
    assert_eq!(
        request.send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn replay_after_restart_is_refused() {
    let dirs = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut server = TestServer::start_in(Options::default(), dirs.clone()).await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let body = serde_json::to_vec(&agent.facts()).unwrap();
    let headers = agent.sign("POST", "/v1/catalog", &body);
    let send = |server: &TestServer| {
        let mut request = server
            .client
            .post(format!("{}/v1/catalog", server.url))
            .body(body.clone());
        for (name, value) in &headers {
            request = request.header(*name, value);
        }
        request.send()
    };
    assert_eq!(send(&server).await.unwrap().status(), StatusCode::OK);
    server.stop().await;

    let server = server.start_again().await;
    assert_eq!(
        send(&server).await.unwrap().status(),
        StatusCode::UNAUTHORIZED,
        "a replay within the skew window is refused after a restart"
    );
    // A fresh request of the same agent still passes.
    assert_eq!(agent.catalog(&server).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn catalog_etag_answers_304_and_serial_moves_only_when_content_changes() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let first = agent.catalog(&server).await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let serial: u64 = first.headers()["x-steward-serial"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let first_bytes = first.bytes().await.unwrap();

    // Unchanged: the same serial and the very same bytes (not re-sealed).
    let second = agent.catalog(&server).await;
    assert_eq!(
        second.headers()["x-steward-serial"].to_str().unwrap(),
        serial.to_string()
    );
    assert_eq!(second.bytes().await.unwrap(), first_bytes);
    let not_modified = agent.catalog_if_none_match(&server, &etag).await;
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);

    // A roster change that affects devvm moves the serial.
    let roster = server.site_file("roster.yaml");
    let changed = roster.replace(
        "emo:       { authentik_user: emil.barzin, k8s_user: emo, tier: power-user }",
        "emo:       { authentik_user: emil.barzin, k8s_user: emo, tier: power-user, full_name: Emil B }",
    );
    assert_ne!(roster, changed, "the example roster changed shape");
    server.write_site_file("roster.yaml", &changed);
    let third = agent.catalog(&server).await;
    let third_serial: u64 = third.headers()["x-steward-serial"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(third_serial > serial);
    let not_modified = agent.catalog_if_none_match(&server, &etag).await;
    assert_eq!(
        not_modified.status(),
        StatusCode::OK,
        "old etag no longer matches"
    );
    // A change to a comment only (site hash changes, content does not) keeps the serial.
    server.write_site_file("roster.yaml", &format!("{changed}\n# a comment\n"));
    let fourth = agent.catalog(&server).await;
    assert_eq!(
        fourth.headers()["x-steward-serial"].to_str().unwrap(),
        third_serial.to_string()
    );
}

#[tokio::test]
async fn a_restart_keeps_the_serial_and_its_bytes_while_nothing_changed() {
    let dirs = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut server = TestServer::start_in(Options::default(), dirs.clone()).await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let first = agent.catalog(&server).await;
    assert_eq!(first.status(), StatusCode::OK);
    let etag = first.headers()["etag"].to_str().unwrap().to_owned();
    let serial = first.headers()["x-steward-serial"]
        .to_str()
        .unwrap()
        .to_owned();
    // devvm's catalog holds sealed secrets (see the round trip test): sealing is deterministic.
    let first_bytes = first.bytes().await.unwrap();
    server.stop().await;

    let server = server.start_again().await;
    let not_modified = agent.catalog_if_none_match(&server, &etag).await;
    assert_eq!(not_modified.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(not_modified.headers()["x-steward-serial"], serial.as_str());
    let again = agent.catalog(&server).await;
    assert_eq!(again.headers()["x-steward-serial"], serial.as_str());
    assert_eq!(again.bytes().await.unwrap(), first_bytes);
}

#[tokio::test]
async fn an_evicted_envelope_is_rebuilt_under_its_serial_with_the_same_bytes() {
    let server = TestServer::start_with(Options {
        extra_toml: "envelope_cache_entries = 1\n[enroll]\nper_address_per_minute = 1000\n"
            .to_owned(),
        ..Options::default()
    })
    .await;
    let devvm = Agent::new("devvm");
    let other = Agent::new("ws-01");
    server.enroll_approved(&devvm).await;
    server.enroll_approved(&other).await;
    let first = devvm.catalog(&server).await;
    let serial = first.headers()["x-steward-serial"]
        .to_str()
        .unwrap()
        .to_owned();
    let first_bytes = first.bytes().await.unwrap();
    // The other node's envelope takes the only place.
    assert_eq!(other.catalog(&server).await.status(), StatusCode::OK);
    let again = devvm.catalog(&server).await;
    assert_eq!(again.headers()["x-steward-serial"], serial.as_str());
    assert_eq!(again.bytes().await.unwrap(), first_bytes);
    let metrics = server
        .anonymous(Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("steward_catalog_envelope_rebuilds_total 1\n"),
        "{metrics}"
    );
    assert!(
        metrics.contains("steward_catalog_serials_issued_total 2\n"),
        "{metrics}"
    );
}

#[tokio::test]
async fn invalid_roster_push_does_not_change_any_served_catalog() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let good = agent.catalog(&server).await;
    let good_serial = good.headers()["x-steward-serial"]
        .to_str()
        .unwrap()
        .to_owned();
    let good_bytes = good.bytes().await.unwrap();

    let newcomer = Agent::new("ws-01");
    server.enroll_approved(&newcomer).await;
    let roster = server.site_file("roster.yaml");
    server.write_site_file(
        "roster.yaml",
        &roster.replace("tier: power-user", "tier: no-such-tier"),
    );
    let served = agent.catalog(&server).await;
    assert_eq!(served.status(), StatusCode::OK);
    assert_eq!(
        served.headers()["x-steward-serial"].to_str().unwrap(),
        good_serial
    );
    assert_eq!(served.headers()["x-steward-stale"], "1");
    assert_eq!(served.bytes().await.unwrap(), good_bytes);
    // A host that never had a catalog gets 503, not an empty catalog.
    assert_eq!(
        newcomer.catalog(&server).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    let (_, failures) = server
        .admin(Method::GET, "/api/v1/compile-failures", None)
        .await;
    let failures = failures.as_array().unwrap();
    assert_eq!(failures.len(), 2);
    assert!(failures
        .iter()
        .all(|f| f["message"].as_str().unwrap().contains("roster.yaml")));
    let metrics = server
        .anonymous(Method::GET, "/metrics", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("steward_compile_failures_total 2"),
        "{metrics}"
    );

    // Fixed: the failure clears.
    server.write_site_file("roster.yaml", &roster);
    assert_eq!(agent.catalog(&server).await.status(), StatusCode::OK);
    assert_eq!(newcomer.catalog(&server).await.status(), StatusCode::OK);
    let (_, failures) = server
        .admin(Method::GET, "/api/v1/compile-failures", None)
        .await;
    assert_eq!(failures, json!([]));
}

#[tokio::test]
async fn run_now_wakes_the_long_poll_within_a_second() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let serial: u64 = agent.catalog(&server).await.headers()["x-steward-serial"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let path = format!("/v1/wait?serial={serial}&timeout=30");
    let headers = agent.sign("GET", &path, b"");
    let mut request = server.client.get(format!("{}{path}", server.url));
    for (name, value) in headers {
        request = request.header(name, value);
    }
    let waiting = tokio::spawn(request.send());
    // Give the long-poll a moment to be parked, then ask for a run.
    tokio::task::yield_now().await;
    let asked = Instant::now();
    let (status, _) = server
        .admin(Method::POST, "/api/v1/nodes/devvm/run-now", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let response = waiting.await.unwrap().unwrap();
    assert!(
        asked.elapsed() < Duration::from_secs(1),
        "{:?}",
        asked.elapsed()
    );
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "run_now");
    // Delivered: the request is cleared, the next wait times out instead.
    let response = agent
        .signed(
            &server,
            Method::GET,
            &format!("/v1/wait?serial={serial}&timeout=0"),
            Vec::new(),
            &[],
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "timeout");
    // A stale serial returns at once.
    let response = agent
        .signed(
            &server,
            Method::GET,
            "/v1/wait?serial=1&timeout=30",
            Vec::new(),
            &[],
        )
        .await;
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["reason"], "serial_changed");
    assert_eq!(body["serial"], serial);
}

/// A site change while the host was applying its catalog (not waiting) is not lost: its next
/// wait returns at once, although the serial did not move (compiles are lazy).
#[tokio::test]
async fn a_site_change_between_two_waits_is_not_lost() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let first = agent.catalog(&server).await;
    let serial = first.headers()["x-steward-serial"]
        .to_str()
        .unwrap()
        .to_owned();
    let parked = format!("/v1/wait?serial={serial}&timeout=30");
    let short = format!("/v1/wait?serial={serial}&timeout=1");
    // The host is "applying" now; the site changes meanwhile (a comment: same catalog).
    let roster = server.site_dir.join("roster.yaml");
    let mut text = std::fs::read_to_string(&roster).unwrap();
    text.push_str("\n# edited while devvm was applying its catalog\n");
    std::fs::write(&roster, text).unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let body: Value = agent
        .signed(&server, Method::GET, &parked, Vec::new(), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["reason"], "site_changed", "{body}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // Once it has asked again (same serial: nothing to apply), it waits as usual.
    let again = agent.catalog(&server).await;
    assert_eq!(
        again.headers()["x-steward-serial"].to_str().unwrap(),
        serial
    );
    let body: Value = agent
        .signed(&server, Method::GET, &short, Vec::new(), &[])
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["reason"], "timeout", "{body}");
}

/// A secret rotated in Vault reaches hosts through the long-poll, not at their next scheduled
/// run: the server watches the paths its catalogs read.
#[tokio::test]
async fn a_vault_change_wakes_long_polls_and_moves_the_serial() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let serial_of = |response: &reqwest::Response| -> u64 {
        response.headers()["x-steward-serial"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let first = agent.catalog(&server).await;
    assert_eq!(first.status(), StatusCode::OK);
    let serial = serial_of(&first);
    // The watch learns the paths from that compile and takes its baseline (every 50 ms here).
    tokio::time::sleep(Duration::from_millis(500)).await;

    let path = format!("/v1/wait?serial={serial}&timeout=30");
    let mut request = server.client.get(format!("{}{path}", server.url));
    for (name, value) in agent.sign("GET", &path, b"") {
        request = request.header(name, value);
    }
    let waiting = tokio::spawn(request.send());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let vault = std::fs::read_to_string(&server.vault_file).unwrap();
    let rotated = vault.replace(
        "PLACEHOLDER-memory-api-key-3f8d27",
        "PLACEHOLDER-memory-api-key-rotated",
    );
    assert_ne!(vault, rotated);
    std::fs::write(&server.vault_file, rotated).unwrap();
    let changed = Instant::now();
    let body: Value = waiting.await.unwrap().unwrap().json().await.unwrap();
    assert_eq!(body["reason"], "site_changed", "{body}");
    assert!(
        changed.elapsed() < Duration::from_secs(5),
        "{:?}",
        changed.elapsed()
    );
    let next = agent.catalog(&server).await;
    assert_eq!(next.status(), StatusCode::OK);
    assert!(
        serial_of(&next) > serial,
        "the rotated secret is in a new serial"
    );
}

#[tokio::test]
async fn catalogs_after_restore_from_yesterdays_backup_are_accepted() {
    let dirs = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut server = TestServer::start_in(Options::default(), dirs.clone()).await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let first = agent.fetch_verified(&server, None).await.unwrap();
    let backup = dirs.path().join("yesterday.db");
    server.state.db.backup_to(&backup).await.unwrap();
    // Later: a roster change the agent applies.
    let roster = server.site_file("roster.yaml");
    server.write_site_file(
        "roster.yaml",
        &roster.replace(
            "k8s_user: emo, tier: power-user",
            "k8s_user: emo, tier: power-user, full_name: E",
        ),
    );
    let applied = agent
        .fetch_verified(&server, Some(&first.accepted()))
        .await
        .unwrap();
    assert!(applied.serial > first.serial);
    server.stop().await;

    // Disaster: the database is restored from the older backup.
    let db_path = server.data_dir.join("steward.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db_path.display()));
    }
    std::fs::copy(&backup, &db_path).unwrap();
    let server = server.start_again().await;
    let after = agent
        .fetch_verified(&server, Some(&applied.accepted()))
        .await
        .expect("the agent accepts the catalog of the restored server");
    assert!(after.serial > applied.serial);
}

#[tokio::test]
async fn concurrent_report_writes_and_reads_never_answer_5xx() {
    let server = std::sync::Arc::new(TestServer::start().await);
    let mut agents = Vec::new();
    for i in 0..4 {
        let agent = Agent::new(&format!("ws-{i}"));
        server.enroll_approved(&agent).await;
        agents.push(std::sync::Arc::new(agent));
    }
    let mut tasks = tokio::task::JoinSet::new();
    for agent in &agents {
        for _ in 0..10 {
            let agent = std::sync::Arc::clone(agent);
            let server = std::sync::Arc::clone(&server);
            tasks.spawn(async move {
                let report = agent.report(None);
                agent.send_report(&server, &report).await.status()
            });
        }
    }
    for _ in 0..20 {
        let server = std::sync::Arc::clone(&server);
        tasks.spawn(async move {
            server
                .admin(Method::GET, "/api/v1/runs?limit=5", None)
                .await
                .0
        });
    }
    while let Some(status) = tasks.join_next().await {
        let status = status.unwrap();
        assert!(status.is_success(), "{status}");
    }
    let (_, page) = server
        .admin(Method::GET, "/api/v1/runs?limit=1000", None)
        .await;
    assert_eq!(page["runs"].as_array().unwrap().len(), 40);
    // Keyset pagination walks every run once.
    let mut seen = BTreeSet::new();
    let mut path = "/api/v1/runs?limit=7".to_owned();
    loop {
        let (_, page) = server.admin(Method::GET, &path, None).await;
        for run in page["runs"].as_array().unwrap() {
            assert!(seen.insert(run["run_id"].as_str().unwrap().to_owned()));
        }
        match page["next"].as_str() {
            Some(next) => path = format!("/api/v1/runs?limit=7&before={next}"),
            None => break,
        }
    }
    assert_eq!(seen.len(), 40);
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = TestServer::start().await;
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    assert_eq!(agent.catalog(&server).await.status(), StatusCode::OK);
    assert_eq!(agent.catalog(&server).await.status(), StatusCode::OK);
    assert_eq!(
        server
            .anonymous(Method::GET, "/healthz", None)
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        server
            .anonymous(Method::GET, "/readyz", None)
            .await
            .status(),
        StatusCode::OK
    );
    let metrics = server.anonymous(Method::GET, "/metrics", None).await;
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = metrics.text().await.unwrap();
    for expected in [
        "steward_http_requests_total{route=\"/v1/catalog\",method=\"POST\",status=\"200\"} 2",
        "steward_compile_duration_seconds_count ",
        "steward_catalog_cache_hits_total 1",
        "steward_nodes{status=\"approved\"} 1",
        "steward_reports_received_total 0",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert!(!text.contains("devvm"), "metrics never name a node");
    // Vault file gone: not ready, with a generic body.
    std::fs::remove_file(&server.vault_file).unwrap();
    let response = server.anonymous(Method::GET, "/readyz", None).await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({ "error": "service unavailable" })
    );
}
