//! Tests of the offline Vault data file and of the roster-vs-Vault role check.

use std::collections::BTreeMap;

use insta::assert_snapshot;
use proptest::prelude::*;
use serde_json::json;

use crate::model::Site;
use crate::site::parse_site;
use crate::vault::{check_roles, parse_vault_data};

const TIERS: &str = "\
tiers:
  admin: {}
  namespace-owner: { requires_namespaces: true }
  power-user: {}
";

fn site_with(roster: &str, site_yaml: &str) -> Site {
    let files: BTreeMap<String, String> = [
        ("roster.yaml", roster),
        ("tiers.yaml", TIERS),
        ("site.yaml", site_yaml),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    parse_site(&files).unwrap_or_else(|e| panic!("{e}"))
}

/// The rendered errors of checking `roster` against `vault` (or `ok`).
fn check(roster: &str, vault: &str) -> String {
    let site = site_with(roster, "");
    let data = parse_vault_data("vault-data.yaml", vault).unwrap_or_else(|e| panic!("{e}"));
    let errors = check_roles(&site, &data);
    if errors.is_empty() {
        return "ok".to_owned();
    }
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

const ROSTER: &str = "\
users:
  emo:       { authentik_user: emil.barzin, k8s_user: emo, tier: power-user }
  ancamilea: { authentik_user: ancaelena98, k8s_user: anca, tier: namespace-owner,
               namespaces: [plotting-book, tripit] }
";

#[test]
fn parses_the_offline_shape() {
    let data = parse_vault_data(
        "vault-data.yaml",
        "\
secret/platform:
  k8s_users:
    emo: { role: power-user }
    anca: { role: namespace-owner, namespaces: [plotting-book] }
secret/openclaw:
  ha_sofia_mcp_url: https://ha.example/mcp
  port: 8123
  enabled: true
secret/empty:
",
    )
    .unwrap();
    assert_eq!(data.paths.len(), 3);
    let platform = &data.paths["secret/platform"];
    assert_eq!(platform.version, 0);
    assert_eq!(
        serde_json::Value::Object(platform.data.clone()),
        json!({"k8s_users": {"emo": {"role": "power-user"}, "anca": {"role": "namespace-owner", "namespaces": ["plotting-book"]}}})
    );
    assert_eq!(data.paths["secret/openclaw"].data["port"], json!(8123));
    assert!(data.paths["secret/empty"].data.is_empty());
    assert!(parse_vault_data("v.yaml", "").unwrap().paths.is_empty());
}

#[test]
fn bad_vault_files_name_file_and_line() {
    let render = |text: &str| {
        parse_vault_data("vault-data.yaml", text)
            .unwrap_err()
            .to_string()
    };
    assert_snapshot!(render("secret/platform: [a, b]\n/abs/path: {}\nsecret/../x: {}\n"), @r#"
    vault-data.yaml:1: secret/platform: expected a mapping of the secret's keys, found a list
    vault-data.yaml:2: /abs/path: not a kv path; write it like secret/platform
    vault-data.yaml:3: secret/../x: not a kv path; write it like secret/platform
    "#);
    assert_snapshot!(render("- a\n"), @"vault-data.yaml:1: expected a mapping of kv path to secret data, found a list");
    assert_snapshot!(render("a: {b: 1}\na: {c: 2}\n"), @r#"vault-data.yaml:2: duplicate key "a" (first defined on line 1); remove one of them"#);
    assert_snapshot!(render("a: {b: .nan}\n"), @"vault-data.yaml:1: a: infinite or nan numbers are not supported; quote the value");
}

#[test]
fn matching_roles_pass() {
    assert_snapshot!(check(ROSTER, "\
secret/platform:
  k8s_users:
    emo: { role: power-user }
    anca: { role: namespace-owner, namespaces: [plotting-book, tripit, other] }
"), @"ok");
}

#[test]
fn role_that_disagrees_with_the_tier() {
    assert_snapshot!(check(ROSTER, "\
secret/platform:
  k8s_users:
    emo: { role: namespace-owner }
    anca: { role: namespace-owner }
"), @r#"roster.yaml:2: users.emo.tier: roster says "power-user" but secret/platform k8s_users.emo.role is "namespace-owner""#);
}

#[test]
fn missing_path_key_or_entry() {
    assert_snapshot!(check(ROSTER, "secret/other: {}\n"), @r#"
    roster.yaml:2: users.emo.k8s_user: vault has no secret at secret/platform; the roles map "k8s_users" is expected there (site.yaml vault.roles_path)
    roster.yaml:3: users.ancamilea.k8s_user: vault has no secret at secret/platform; the roles map "k8s_users" is expected there (site.yaml vault.roles_path)
    "#);
    assert_snapshot!(check(ROSTER, "secret/platform: { other: 1 }\n"), @r#"
    roster.yaml:2: users.emo.k8s_user: secret/platform has no key "k8s_users"; add the roles map there or fix site.yaml vault.roles_key
    roster.yaml:3: users.ancamilea.k8s_user: secret/platform has no key "k8s_users"; add the roles map there or fix site.yaml vault.roles_key
    "#);
    assert_snapshot!(check(ROSTER, "secret/platform: { k8s_users: { emo: { role: power-user } } }\n"), @r#"roster.yaml:3: users.ancamilea.k8s_user: no entry "anca" in secret/platform k8s_users; add it in vault or fix k8s_user"#);
}

#[test]
fn roster_namespaces_must_be_granted_in_vault() {
    assert_snapshot!(check(ROSTER, "\
secret/platform:
  k8s_users:
    emo: { role: power-user }
    anca: { role: namespace-owner, namespaces: [plotting-book] }
"), @r#"roster.yaml:4: users.ancamilea.namespaces: "tripit" not granted by secret/platform k8s_users.anca.namespaces ["plotting-book"]; add in vault or remove here"#);
}

#[test]
fn only_present_users_are_checked() {
    // An offboarded person's cluster access is revoked by removing their k8s_users entry (the
    // reference devvm's stage 2): that must not fail the compile of the hosts they were on.
    let roster = "\
users:
  gone: { authentik_user: g, k8s_user: g, tier: power-user, state: purged }
  away: { authentik_user: a, k8s_user: a, tier: power-user, state: offboarded }
  here: { authentik_user: h, k8s_user: h, tier: power-user }
";
    assert_snapshot!(check(roster, "secret/platform: { k8s_users: {} }\n"), @r#"roster.yaml:4: users.here.k8s_user: no entry "h" in secret/platform k8s_users; add it in vault or fix k8s_user"#);
}

#[test]
fn roles_location_comes_from_site_yaml() {
    let site = site_with(
        "users:\n  emo: { authentik_user: e, k8s_user: emo, tier: power-user }\n",
        "vault: { roles_path: kv/people, roles_key: roles }\n",
    );
    let data = parse_vault_data(
        "v.yaml",
        "kv/people: { roles: { emo: { role: power-user } } }\n",
    )
    .unwrap();
    assert!(check_roles(&site, &data).is_empty());
}

#[test]
fn errors_never_quote_other_vault_values() {
    let canary = "CANARY-5f0c9e";
    let cases = [
        format!("secret/platform: {{ k8s_users: {canary} }}\n"),
        format!("secret/platform: {{ k8s_users: {{ emo: {canary}, anca: [{canary}] }} }}\n"),
        format!("secret/platform: {{ k8s_users: {{ emo: {{ role: {{ token: {canary} }} }}, anca: {{ role: [{canary}] }} }} }}\n"),
        format!("secret/platform: {{ k8s_users: {{ emo: {{ role: power-user, token: {canary} }}, anca: {{ role: namespace-owner, namespaces: {canary} }} }} }}\n"),
        format!("secret/platform: {{ k8s_users: {{ anca: {{ role: namespace-owner, namespaces: [x, {{ s: {canary} }}] }} }} }}\n"),
    ];
    for vault in &cases {
        let out = check(ROSTER, vault);
        assert_ne!(out, "ok", "{vault}");
        assert!(!out.contains(canary), "{vault} leaked into:\n{out}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn parse_vault_data_never_panics(text in ".{0,300}") {
        let _ = parse_vault_data("v.yaml", &text);
    }

    #[test]
    fn check_roles_never_panics_on_vault_like_text(
        text in "secret/platform:\n  k8s_users:\n(    [a-z{}:,\\[\\] -]{0,40}\n){0,5}"
    ) {
        if let Ok(data) = parse_vault_data("v.yaml", &text) {
            let _ = check_roles(&site_with(ROSTER, ""), &data);
        }
    }
}
