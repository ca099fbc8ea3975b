//! Pure parts of the Vault client: path grammar, config parsing, lease arithmetic, redaction.
//! The HTTP behaviour is tested against a real OpenBao in `server/tests/vault.rs`.

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use serde_json::json;

use crate::config::parse_duration;
use crate::vault::auth::Lease;
use crate::vault::path::KvPath;
use crate::vault::{VaultAuth, VaultClient, VaultConfig, VaultError};

#[test]
fn kv_paths_split_into_mount_and_rest() {
    let cases = [
        (
            "secret/openclaw",
            "secret",
            "openclaw",
            "secret/data/openclaw",
        ),
        (
            "kv/hosts/dev-1.example",
            "kv",
            "hosts/dev-1.example",
            "kv/data/hosts/dev-1.example",
        ),
        ("a/b_c-D.9", "a", "b_c-D.9", "a/data/b_c-D.9"),
    ];
    for (path, mount, rest, api) in cases {
        let parsed = KvPath::parse(path).unwrap();
        assert_eq!(
            (parsed.mount, parsed.rest, parsed.data_api_path().as_str()),
            (mount, rest, api)
        );
    }
}

#[test]
fn bad_kv_paths_are_refused_with_a_reason() {
    let long = format!("secret/{}", "a".repeat(600));
    let cases = [
        ("", "is empty"),
        ("secret", "must be <mount>/<path>, like secret/platform"),
        (
            "secret/",
            "has an empty segment (leading, trailing or doubled '/')",
        ),
        (
            "/secret/x",
            "has an empty segment (leading, trailing or doubled '/')",
        ),
        (
            "secret//x",
            "has an empty segment (leading, trailing or doubled '/')",
        ),
        ("secret/../sys/seal", "must not have '.' or '..' segments"),
        ("secret/./x", "must not have '.' or '..' segments"),
        ("secret/a b", "contains whitespace or a control character"),
        ("secret/a\nb", "contains whitespace or a control character"),
        (
            "secret/a?b",
            "may hold only letters, digits, '.', '_', '-' and '/'",
        ),
        (
            "secret/a%2e",
            "may hold only letters, digits, '.', '_', '-' and '/'",
        ),
        (
            "secret/é",
            "may hold only letters, digits, '.', '_', '-' and '/'",
        ),
        (long.as_str(), "is longer than 512 bytes"),
    ];
    for (path, expected) in cases {
        match KvPath::parse(path) {
            Err(VaultError::InvalidPath { path: got, reason }) => {
                assert_eq!((got.as_str(), reason), (path, expected), "{path:?}");
            }
            other => panic!("{path:?}: expected InvalidPath, got {other:?}"),
        }
    }
}

#[test]
fn durations_parse_with_units_or_as_seconds() {
    assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
    assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
    for bad in [
        "",
        "30",
        "s",
        "1.5s",
        "-1s",
        "10 days",
        "99999999999999999999h",
    ] {
        assert_eq!(parse_duration(bad), None, "{bad:?}");
    }
}

#[test]
fn config_deserializes_with_defaults() {
    let config: VaultConfig = serde_json::from_value(json!({
        "address": "https://vault.example:8200",
        "auth": { "method": "approle", "role_id": "role-1", "secret_id_file": "/etc/steward/sid" },
    }))
    .unwrap();
    assert_eq!(
        config,
        VaultConfig::new(
            "https://vault.example:8200",
            VaultAuth::AppRole {
                mount: "approle".to_owned(),
                role_id: "role-1".to_owned(),
                secret_id_file: PathBuf::from("/etc/steward/sid"),
            }
        )
    );
    let config: VaultConfig = serde_json::from_value(json!({
        "address": "http://127.0.0.1:8200",
        "auth": { "method": "token", "token_file": "/run/steward/token" },
        "namespace": "team",
        "ca_cert": "/etc/steward/ca.pem",
        "timeout": 3,
        "cache_ttl": "250ms",
    }))
    .unwrap();
    assert_eq!(config.timeout, Duration::from_secs(3));
    assert_eq!(config.cache_ttl, Duration::from_millis(250));
    assert_eq!(config.namespace.as_deref(), Some("team"));
}

#[test]
fn config_refuses_unknown_keys_and_bad_durations() {
    let unknown = serde_json::from_value::<VaultConfig>(json!({
        "address": "http://127.0.0.1:8200",
        "auth": { "method": "token", "token_file": "/t" },
        "tokn_file": "/t",
    }));
    assert!(unknown.unwrap_err().to_string().contains("tokn_file"));
    let unknown_auth = serde_json::from_value::<VaultConfig>(json!({
        "address": "http://127.0.0.1:8200",
        "auth": { "method": "token", "token": "hvs.inline" },
    }));
    assert!(unknown_auth.is_err());
    let bad_duration = serde_json::from_value::<VaultConfig>(json!({
        "address": "http://127.0.0.1:8200",
        "auth": { "method": "token", "token_file": "/t" },
        "timeout": "soon",
    }));
    assert!(bad_duration
        .unwrap_err()
        .to_string()
        .contains("invalid duration \"soon\""));
}

fn token_file_auth() -> VaultAuth {
    VaultAuth::Token {
        token_file: Some(PathBuf::from("/nonexistent/token")),
        token_env: None,
    }
}

#[test]
fn client_new_validates_the_config() {
    let with_address =
        |address: &str| VaultClient::new(VaultConfig::new(address, token_file_auth()));
    for (address, reason) in [
        ("vault.example:8200", "must start with https:// or http://"),
        (
            "not a url",
            "is not a url; write it like https://vault.example:8200",
        ),
        ("ftp://vault.example", "must start with https:// or http://"),
        (
            "https://user:pw@vault.example",
            "must not hold a user name or password",
        ),
        (
            "https://vault.example/?x=1",
            "must not have a query or fragment",
        ),
    ] {
        match with_address(address) {
            Err(VaultError::InvalidConfig {
                key: "vault.address",
                reason: got,
            }) => {
                assert_eq!(got, reason, "{address}");
            }
            other => panic!("{address}: expected InvalidConfig, got {other:?}"),
        }
    }
    assert!(with_address("https://vault.example:8200/prefix").is_ok());

    let auth_error = |auth| {
        VaultClient::new(VaultConfig::new("http://127.0.0.1:1", auth))
            .unwrap_err()
            .to_string()
    };
    assert_eq!(
        auth_error(VaultAuth::Token {
            token_file: None,
            token_env: None
        }),
        "invalid vault config: `vault.auth` with method = \"token\" needs token_file or token_env"
    );
    assert_eq!(
        auth_error(VaultAuth::Token {
            token_file: Some("/t".into()),
            token_env: Some("T".into())
        }),
        "invalid vault config: `vault.auth` sets both token_file and token_env; keep one"
    );
    assert_eq!(
        auth_error(VaultAuth::AppRole {
            mount: "app role".into(),
            role_id: "r".into(),
            secret_id_file: "/s".into()
        }),
        "invalid vault config: `vault.auth.mount` contains whitespace or a control character"
    );

    let mut config = VaultConfig::new("http://127.0.0.1:1", token_file_auth());
    config.timeout = Duration::ZERO;
    assert!(matches!(
        VaultClient::new(config),
        Err(VaultError::InvalidConfig {
            key: "vault.timeout",
            ..
        })
    ));

    let mut config = VaultConfig::new("http://127.0.0.1:1", token_file_auth());
    config.ca_cert = Some("/nonexistent/ca.pem".into());
    assert_eq!(
        VaultClient::new(config).unwrap_err().to_string(),
        "cannot read the vault ca certificate /nonexistent/ca.pem"
    );
}

#[test]
fn debug_redacts_the_role_id() {
    let auth = VaultAuth::AppRole {
        mount: "approle".into(),
        role_id: "ROLE-ID-CANARY".into(),
        secret_id_file: "/etc/steward/sid".into(),
    };
    let config = VaultConfig::new("http://127.0.0.1:8200", auth);
    let client = VaultClient::new(config.clone()).unwrap();
    for rendered in [
        format!("{config:?}"),
        format!("{client:?}"),
        format!("{client:#?}"),
    ] {
        assert!(!rendered.contains("ROLE-ID-CANARY"), "{rendered}");
        assert!(rendered.contains("/etc/steward/sid"), "{rendered}");
    }
}

#[test]
fn lease_renews_at_two_thirds_and_detects_the_max_ttl_cap() {
    let now = Instant::now();
    let wall = SystemTime::UNIX_EPOCH;
    let ttl = Duration::from_secs(30);
    let lease = Lease::starting(now, wall, ttl, ttl, true);
    assert!(!lease.is_due(now + Duration::from_secs(19)));
    assert!(lease.is_due(now + Duration::from_secs(20)));
    assert_eq!(lease.expires_at(), Some(wall + ttl));

    let full = Lease::renewed(now, wall, ttl, ttl, true);
    assert!(matches!(full, Lease::Expiring { capped: false, .. }));
    let capped = Lease::renewed(now, wall, Duration::from_secs(12), ttl, true);
    assert!(matches!(capped, Lease::Expiring { capped: true, .. }));
    let exhausted = Lease::renewed(now, wall, Duration::ZERO, ttl, true);
    assert!(
        exhausted.is_due(now),
        "a zero grant must not look like a non-expiring token"
    );

    assert_eq!(
        Lease::starting(now, wall, Duration::ZERO, Duration::ZERO, false),
        Lease::Never
    );
    assert!(!Lease::Never.is_due(now + Duration::from_secs(1 << 30)));
    assert_eq!(Lease::Never.expires_at(), None);
}

#[test]
fn errors_read_as_sentences_with_the_fix() {
    let forbidden = VaultError::Forbidden {
        path: "secret/openclaw".into(),
    };
    assert_eq!(
        forbidden.to_string(),
        "vault denied reading secret/openclaw; the server's policy needs `read` on secret/data/openclaw"
    );
    let invalid = VaultError::InvalidPath {
        path: "secret/../x".into(),
        reason: "must not have '.' or '..' segments",
    };
    assert_eq!(
        invalid.to_string(),
        "invalid vault path \"secret/../x\": must not have '.' or '..' segments"
    );
}

/// A body that does not parse says why in general terms, never quoting it (K1): a proxy or a
/// corrupted store can put a secret next to the bytes that break the parse.
#[test]
fn malformed_bodies_name_the_reason_and_never_the_content() {
    let canary = "canary-0123456789abcdef";
    let mut not_utf8 = format!("{{\"data\":{{\"data\":{{\"k\":\"{canary}").into_bytes();
    not_utf8.extend_from_slice(b"\xff\"},\"metadata\":{\"version\":1}}}");
    for (body, reason) in [
        (not_utf8, "the body is not valid UTF-8"),
        (
            format!("<html>{canary}</html>").into_bytes(),
            "the body is not JSON",
        ),
        (
            format!("{{\"data\":{{\"data\":\"{canary}\"}}}}").into_bytes(),
            "the body is not the JSON vault sends",
        ),
    ] {
        let reply = super::Reply {
            status: reqwest::StatusCode::OK,
            body: zeroize::Zeroizing::new(body),
        };
        let error = reply
            .parse::<super::wire::KvRead>("secret/a")
            .err()
            .unwrap();
        assert!(
            matches!(&error, VaultError::Malformed { path, status: 200, reason: got }
                if path == "secret/a" && *got == reason),
            "{error:?}"
        );
        let text = format!("{error} {error:?}");
        assert!(text.contains(reason) && !text.contains(canary), "{text}");
    }
}
