//! Trust over time, end to end with the real `steward-server` binary's admin commands: a
//! rotated-away catalog key stops working on hosts (THREATS C7), and the fleet recovers from a
//! server clock that ran ahead without ever accepting a replayed catalog (THREATS C6, R7).

mod support;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::StatusCode;
use steward_protocol::envelope::{sign_catalog, CatalogEnvelope, SigningKeyPair};
use steward_protocol::{strict, verify_catalog, Catalog, NodeId, Refusal, Serial};
use steward_server::db;
use support::server::{now, Agent, Options, TestServer};

use support::cli::{cli, ok};

/// THREATS C7: after `keys rotate-catalog`, a host that applied a catalog signed by the new
/// key refuses the old key, although the old certificate is still within its validity: a
/// thief holding the old key (and the certificate it captured before the rotation) signs a
/// catalog with a serial above the host's, and it is refused for its key generation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_away_catalog_key_is_refused_once_the_new_key_was_applied() {
    let dirs = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut server = TestServer::start_in(Options::default(), dirs.clone()).await;
    let data = server.data_dir.display().to_string();
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let node = NodeId("devvm".into());
    let root = server.root_key_id();
    let before = agent.catalog(&server).await.bytes().await.unwrap();
    let accepted_old = verify_catalog(&before, &root, &node, None, now())
        .unwrap()
        .accepted();
    // What the thief holds: the old catalog key, and the certificate every envelope carries.
    let stolen_key: [u8; 32] = std::fs::read(server.data_dir.join("catalog.key"))
        .unwrap()
        .try_into()
        .unwrap();
    let stolen_key = SigningKeyPair::from_bytes(stolen_key);
    let old_envelope: CatalogEnvelope = strict::from_slice(&before, before.len()).unwrap();
    server.stop().await;

    let rotated = ok(&cli(&["keys", "rotate-catalog", "--data-dir", &data]));
    assert!(rotated.contains("generation"), "{rotated}");
    let restarted = server.start_again().await;
    let after = agent.catalog(&restarted).await.bytes().await.unwrap();
    let applied = verify_catalog(&after, &root, &node, Some(&accepted_old), now()).unwrap();
    assert!(
        applied.key_generation > accepted_old.key_generation,
        "{} after {}",
        applied.key_generation,
        accepted_old.key_generation
    );
    let accepted_new = applied.accepted();
    let shown = ok(&cli(&["keys", "show", "--data-dir", &data]));
    assert!(
        shown.contains(&format!("generation:   {}", accepted_new.key_generation)),
        "{shown}"
    );

    // The captured envelope itself: an older serial, and an older key.
    assert!(verify_catalog(&before, &root, &node, Some(&accepted_new), now()).is_err());
    // The thief's catalog: the captured content, a serial above the host's, the old key and
    // the old certificate.
    let payload = STANDARD.decode(&old_envelope.catalog.payload).unwrap();
    let mut catalog: Catalog = strict::from_slice(&payload, payload.len()).unwrap();
    catalog.serial = Serial(accepted_new.serial.0 + 1);
    let forged = sign_catalog(&catalog, &stolen_key, &old_envelope.certificate).unwrap();
    // It would pass on a host that never applied a new-key catalog (the certificate is valid)...
    assert!(verify_catalog(&forged, &root, &node, Some(&accepted_old), now()).is_ok());
    // ...and is refused by this one.
    assert_eq!(
        verify_catalog(&forged, &root, &node, Some(&accepted_new), now()),
        Err(Refusal::RetiredCatalogKey {
            got: accepted_old.key_generation,
            accepted: accepted_new.key_generation,
        })
    );
}

/// THREATS C6 and R7, clock recovery: serials issued while the server's clock ran 30 days
/// ahead stay the node's floor after the clock is corrected. The server refuses to issue
/// `floor + 1` (every host would refuse it as a fast-forward) and says why; `serials rebase`
/// (server stopped) drops what no host can have applied; new serials follow the clock again
/// and are accepted, while the catalog the host applied before stays refused as a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_recovers_from_a_server_clock_that_ran_ahead() {
    let dirs = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut server = TestServer::start_in(Options::default(), dirs.clone()).await;
    let data = server.data_dir.display().to_string();
    let agent = Agent::new("devvm");
    server.enroll_approved(&agent).await;
    let node = NodeId("devvm".into());
    let root = server.root_key_id();
    let first = agent.catalog(&server).await.bytes().await.unwrap();
    let applied = verify_catalog(&first, &root, &node, None, now())
        .unwrap()
        .accepted();
    // Another host whose own clock ran ahead with the server's, and applied a serial then.
    let fast = Agent::new("ws-01");
    server.enroll_approved(&fast).await;
    let fast_node = NodeId("ws-01".into());
    assert_eq!(fast.catalog(&server).await.status(), StatusCode::OK);

    // What the server recorded while its clock ran 30 days ahead.
    let ahead = Serial(applied.serial.0 + 30 * 86_400_000);
    let latest = db::catalogs::latest(&server.state.db, &node)
        .await
        .unwrap()
        .unwrap();
    db::catalogs::insert(
        &server.state.db,
        &db::catalogs::CatalogRecord {
            serial: ahead,
            ..latest
        },
    )
    .await
    .unwrap();
    let fast_latest = db::catalogs::latest(&server.state.db, &fast_node)
        .await
        .unwrap()
        .unwrap();
    let fast_ahead = Serial(fast_latest.serial.0 + 30 * 86_400_000);
    db::catalogs::insert(
        &server.state.db,
        &db::catalogs::CatalogRecord {
            serial: fast_ahead,
            ..fast_latest
        },
    )
    .await
    .unwrap();
    let reported = fast
        .send_report(&server, &fast.report(Some(fast_ahead)))
        .await;
    assert!(reported.status().is_success(), "{}", reported.status());

    // New content (a rotated secret): the server refuses to issue a serial above the floor,
    // records why, and keeps serving the last good catalog.
    let vault = std::fs::read_to_string(&server.vault_file).unwrap();
    let rotated = vault.replace(
        "PLACEHOLDER-memory-api-key-3f8d27",
        "PLACEHOLDER-memory-api-key-rotated",
    );
    assert_ne!(vault, rotated);
    std::fs::write(&server.vault_file, rotated).unwrap();
    let mut failure = None;
    for _ in 0..100 {
        let response = agent.catalog(&server).await;
        assert_eq!(response.status(), StatusCode::OK);
        let stale = response.headers().contains_key("x-steward-stale");
        let bytes = response.bytes().await.unwrap();
        // Whatever it serves, the host accepts it: never a serial it would refuse.
        let served = verify_catalog(&bytes, &root, &node, Some(&applied), now()).unwrap();
        assert_eq!(served.serial, applied.serial);
        if stale {
            failure = db::compile_failures::current(&server.state.db, &node)
                .await
                .unwrap();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let failure = failure.expect("the vault change reached a compile");
    assert!(
        failure.message.contains("steward-server serials rebase"),
        "{}",
        failure.message
    );
    server.stop().await;

    let dry = ok(&cli(&[
        "serials",
        "rebase",
        "--dry-run",
        "--data-dir",
        &data,
    ]));
    assert!(dry.contains("devvm") && dry.contains("dry run"), "{dry}");
    let done = ok(&cli(&["serials", "rebase", "--data-dir", &data]));
    assert!(
        done.contains(&format!("devvm: serial {ahead} -> {}", applied.serial)),
        "{done}"
    );
    assert!(
        done.contains(&format!("ws-01: reported applying serial {fast_ahead}")),
        "{done}"
    );
    assert!(!done.contains("devvm: reported"), "{done}");
    let again = ok(&cli(&["serials", "rebase", "--data-dir", &data]));
    assert!(again.contains("nothing to do"), "{again}");

    let restarted = server.start_again().await;
    let next = agent.catalog(&restarted).await.bytes().await.unwrap();
    let recovered = verify_catalog(&next, &root, &node, Some(&applied), now()).unwrap();
    assert!(recovered.serial > applied.serial && recovered.serial < ahead);
    // The catalog applied before the rebase is still a replay for the host.
    assert_eq!(
        verify_catalog(&first, &root, &node, Some(&recovered.accepted()), now()),
        Err(Refusal::SerialBelowLast)
    );
    let (_, audit) = restarted
        .admin(reqwest::Method::GET, "/api/v1/audit", None)
        .await;
    assert!(audit.to_string().contains("serials.rebase"), "{audit}");
}
