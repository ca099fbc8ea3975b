//! Vault data in the offline file shape, and the roster-vs-Vault role check.
//!
//! The file (`vault-data.yaml`, used by `steward-server check`/`compile` without a live Vault)
//! is one mapping of KV path → that secret's data; values become JSON; every version is 0:
//!
//! ```yaml
//! secret/platform:
//!   k8s_users:
//!     emo:  { role: power-user }
//!     anca: { role: namespace-owner, namespaces: [plotting-book] }
//! secret/openclaw:
//!   ha_sofia_mcp_url: https://ha.example/mcp
//! ```
//!
//! [`check_roles`] holds the roster to what Vault says: every user who is `present` or
//! `offboarded` must have an entry in `<roles_path>` `<roles_key>` under their `k8s_user`, whose
//! `role` is their roster tier and whose `namespaces` (when given) include the roster's. Error
//! messages quote only role and namespace text, never any other Vault value.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::model::{
    Loc, RosterUser, Site, SiteError, SiteErrors, UserState, VaultData, VaultSecret,
};
use crate::yaml::{self, NodeValue};

/// Parses the offline Vault data file. `file` names it in errors.
pub fn parse_vault_data(file: &str, text: &str) -> Result<VaultData, SiteErrors> {
    let mut errors = Vec::new();
    let mut paths = BTreeMap::new();
    let err = |line: u32, field: &str, message: String| {
        SiteError::new(Loc::new(file, line), field, message)
    };
    match yaml::parse(text) {
        Err(e) => errors.push(err(e.line, "", e.message)),
        Ok(doc) => match &doc.value {
            _ if doc.is_null() => {}
            NodeValue::Map(entries) => {
                for (key, value) in entries {
                    let path = key.as_scalar().map_or("", |s| s.text.as_str());
                    if !is_kv_path(path) {
                        errors.push(err(
                            key.line,
                            path,
                            "not a kv path; write it like secret/platform".to_owned(),
                        ));
                        continue;
                    }
                    let data = match &value.value {
                        _ if value.is_null() => serde_json::Map::new(),
                        NodeValue::Map(_) => match value.to_json() {
                            Ok(Value::Object(map)) => map,
                            Ok(_) => serde_json::Map::new(),
                            Err(e) => {
                                errors.push(err(e.line, path, e.message));
                                continue;
                            }
                        },
                        _ => {
                            errors.push(err(
                                value.line,
                                path,
                                format!(
                                    "expected a mapping of the secret's keys, found {}",
                                    value.kind_name()
                                ),
                            ));
                            continue;
                        }
                    };
                    paths.insert(path.to_owned(), VaultSecret { data, version: 0 });
                }
            }
            _ => errors.push(err(
                doc.line,
                "",
                format!(
                    "expected a mapping of kv path to secret data, found {}",
                    doc.kind_name()
                ),
            )),
        },
    }
    if errors.is_empty() {
        Ok(VaultData { paths })
    } else {
        errors.sort();
        Err(SiteErrors(errors))
    }
}

/// `secret/platform`: slash-separated, no empty, `.` or `..` components, no spaces.
fn is_kv_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && !c.contains(|ch: char| ch.is_whitespace() || ch.is_control())
        })
}

/// Checks every present roster user against the roles map in Vault; returns the errors sorted
/// (empty when all agree). Offboarded and purged users are not checked: their cluster access is
/// revoked by removing their `k8s_users` entry (the reference devvm's "cluster revoke" stage),
/// which must not hold back the host.
pub fn check_roles(site: &Site, vault: &VaultData) -> Vec<SiteError> {
    check_roles_for(site, vault, |_| true)
}

/// [`check_roles`] for the users `include` selects. The compiler checks only the users
/// managed on the node it compiles, so one person's role mismatch holds back the hosts that
/// person is on, not the whole fleet; `steward-server check` still checks everyone.
pub fn check_roles_for(
    site: &Site,
    vault: &VaultData,
    include: impl Fn(&RosterUser) -> bool,
) -> Vec<SiteError> {
    let roles_path = &site.config.vault.roles_path;
    let roles_key = &site.config.vault.roles_key;
    let mut errors = Vec::new();
    for user in &site.roster.users {
        if user.state != UserState::Present || !include(user) {
            continue;
        }
        let path = format!("users.{}", user.name);
        let k8s = &user.k8s_user;
        let mut at = |field: &str, message: String| {
            errors.push(SiteError::new(
                user.loc_of(field),
                format!("{path}.{field}"),
                message,
            ));
        };
        let Some(secret) = vault.paths.get(roles_path) else {
            at(
                "k8s_user",
                format!("vault has no secret at {roles_path}; the roles map {roles_key:?} is expected there (site.yaml vault.roles_path)"),
            );
            continue;
        };
        let Some(roles) = secret.data.get(roles_key) else {
            at(
                "k8s_user",
                format!("{roles_path} has no key {roles_key:?}; add the roles map there or fix site.yaml vault.roles_key"),
            );
            continue;
        };
        let Some(roles) = roles.as_object() else {
            at(
                "k8s_user",
                format!("{roles_path} {roles_key} is not a mapping of k8s user to role"),
            );
            continue;
        };
        let Some(entry) = roles.get(k8s) else {
            at(
                "k8s_user",
                format!(
                    "no entry {k8s:?} in {roles_path} {roles_key}; add it in vault or fix k8s_user"
                ),
            );
            continue;
        };
        let Some(entry) = entry.as_object() else {
            at(
                "k8s_user",
                format!("{roles_path} {roles_key}.{k8s} is not a mapping with a role"),
            );
            continue;
        };
        match entry.get("role") {
            Some(Value::String(role)) if *role == user.tier => {}
            Some(Value::String(role)) => at(
                "tier",
                format!(
                    "roster says {:?} but {roles_path} {roles_key}.{k8s}.role is {role:?}",
                    user.tier
                ),
            ),
            _ => at(
                "tier",
                format!(
                    "{roles_path} {roles_key}.{k8s} has no role (a string); add role: {}",
                    user.tier
                ),
            ),
        }
        let Some(granted) = entry.get("namespaces") else {
            continue;
        };
        let granted: Option<Vec<&str>> = granted
            .as_array()
            .and_then(|items| items.iter().map(Value::as_str).collect());
        let Some(granted) = granted else {
            at(
                "namespaces",
                format!("{roles_path} {roles_key}.{k8s}.namespaces is not a list of strings"),
            );
            continue;
        };
        let missing: Vec<String> = user
            .namespaces
            .iter()
            .filter(|ns| !granted.contains(&ns.as_str()))
            .map(|ns| format!("{ns:?}"))
            .collect();
        if !missing.is_empty() {
            let granted: Vec<String> = granted.iter().map(|ns| format!("{ns:?}")).collect();
            at(
                "namespaces",
                format!(
                    "{} not granted by {roles_path} {roles_key}.{k8s}.namespaces [{}]; add in vault or remove here",
                    missing.join(", "),
                    granted.join(", ")
                ),
            );
        }
    }
    errors.sort();
    errors
}

#[cfg(test)]
mod tests;

/// Vault data whose roles map agrees with the roster (role = tier, namespaces granted), at
/// the site's roles path: what `check` stands in for Vault with, and what tests start from.
pub fn roles_agreeing_with_roster(site: &Site) -> VaultData {
    let roles: serde_json::Map<String, serde_json::Value> = site
        .roster
        .users
        .iter()
        .map(|u| {
            let role = serde_json::json!({ "role": u.tier, "namespaces": u.namespaces });
            (u.k8s_user.clone(), role)
        })
        .collect();
    let mut data = serde_json::Map::new();
    data.insert(site.config.vault.roles_key.clone(), roles.into());
    let mut vault = VaultData::default();
    vault.paths.insert(
        site.config.vault.roles_path.clone(),
        VaultSecret { data, version: 0 },
    );
    vault
}
