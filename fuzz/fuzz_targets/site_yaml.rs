//! Fuzzes the site's YAML front door: `yaml::parse`, `parse_site` (input as `roster.yaml` next
//! to fixed, valid `tiers.yaml` and `site.yaml`) and `parse_vault_data` (then `check_roles`).
//!
//! Properties: no panic, no runaway time or memory (the limits of `yaml` hold), every error is
//! sorted and points at a line that exists, every parsed user points at a line that exists,
//! and a roster value comes through exactly as written (never rendered).
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use steward_catalogs::site::parse_site;
use steward_catalogs::vault::{check_roles, parse_vault_data};
use steward_catalogs::{yaml, Site, SiteError};

const TIERS: &str = "\
tiers:
  admin: { groups: [code-shared], privileged_groups: [sudo, docker], allow_low_uid: true }
  namespace-owner: { requires_namespaces: true }
  power-user: {}
";

const SITE: &str = "\
classes:
  workstation: { hosts: [\"devvm*\"], manage_users: true, bundles: [host-base] }
ports: { start: 8100, end: 8199 }
bundles:
  host-base:
    - package: { name: zsh }
  user-base:
    - file: { path: \"{{ user.home }}/.kube/config\", template: kubeconfig.yaml.j2, mode: \"0600\" }
";

const ROSTER: &str = "\
users:
  emo:       { authentik_user: emil.barzin, k8s_user: emo, tier: power-user }
  ancamilea: { authentik_user: ancaelena98, k8s_user: anca, tier: namespace-owner,
               namespaces: [plotting-book], code_layout: workspace, repos: [tripit] }
";

fn files(roster: &str) -> BTreeMap<String, String> {
    [
        ("roster.yaml", roster),
        ("tiers.yaml", TIERS),
        ("site.yaml", SITE),
        (
            "files/kubeconfig.yaml.j2",
            "server: {{ site.vars.cluster_url }}\n",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// A valid site to check fuzzed Vault data against.
static FIXED_SITE: LazyLock<Site> =
    LazyLock::new(|| parse_site(&files(ROSTER)).expect("the fixed site is valid"));

/// The number of the last line as YAML counts them (`\n`, `\r\n` and a lone `\r` end a line).
fn lines(text: &str) -> u32 {
    let bytes = text.as_bytes();
    let breaks = bytes
        .iter()
        .enumerate()
        .filter(|(i, b)| **b == b'\n' || (**b == b'\r' && bytes.get(i + 1) != Some(&b'\n')))
        .count();
    u32::try_from(breaks).unwrap_or(u32::MAX).saturating_add(1)
}

fn check_errors(errors: &[SiteError], file: &str, text: &str) {
    assert!(errors.windows(2).all(|w| w[0] <= w[1]), "errors are sorted");
    for e in errors {
        assert!(e.loc.line >= 1, "{e}");
        if e.loc.file == file {
            assert!(e.loc.line <= lines(text), "{e} is past the end");
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);

    if let Ok(node) = yaml::parse(&text) {
        let _ = node.to_json();
    }

    match parse_site(&files(&text)) {
        Ok(site) => {
            for user in &site.roster.users {
                assert_eq!(user.loc.file, "roster.yaml");
                assert!(user.loc.line >= 1 && user.loc.line <= lines(&text));
                // Roster values are data: whatever was accepted is in the text as written
                // (modulo YAML escapes, so only check plain ASCII identifiers).
                if user
                    .tier
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                {
                    assert!(site.tiers.contains_key(&user.tier));
                }
                assert!(!user.name.is_empty() && user.name.len() <= 32);
            }
        }
        Err(errors) => check_errors(&errors.0, "roster.yaml", &text),
    }

    match parse_vault_data("vault-data.yaml", &text) {
        Ok(vault) => {
            let errors = check_roles(&FIXED_SITE, &vault);
            check_errors(&errors, "vault-data.yaml", &text);
        }
        Err(errors) => check_errors(&errors.0, "vault-data.yaml", &text),
    }
});
