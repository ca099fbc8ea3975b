//! `check` compiles what hosts would compile: one catalog per **host shape** of the site, so a
//! site that passes `check` compiles for every host (issue 12.9: a unit name with a newline or a
//! git remote `ext::sh -c id` used to pass `check` and fail only when a host asked).
//!
//! A shape is a hostname that stands for every host that gets the same class and the same
//! roster users: one sample name per hostname glob of every class and of every roster user's
//! `hosts` (`*` and `?` filled with `x`), kept when it is a valid hostname and some class takes
//! it. Ports come from an empty state, as on a new host.
//!
//! Without Vault data, Vault is stood in for: the roles map agrees with the roster and every
//! path a template reads exists; errors that only real Vault data can decide (a missing path
//! or key) are then not reported, everything else is.

use std::collections::BTreeSet;

use steward_protocol::{NodeId, Timestamp};

use super::glob::glob_match;
use super::{Compiler, NodeInfo};
use crate::model::{Site, SiteError, State, VaultData};

/// How many times a compile without Vault data is retried with the paths it found missing.
const MAX_STAND_IN_ROUNDS: usize = 8;

/// One sample hostname per glob of the site, each taken by some class.
pub fn host_shapes(site: &Site) -> Vec<String> {
    let globs = site
        .config
        .classes
        .iter()
        .flat_map(|class| class.hosts.iter())
        .chain(site.roster.users.iter().flat_map(|user| user.hosts.iter()));
    let mut names = BTreeSet::new();
    for glob in globs {
        let name: String = glob
            .chars()
            .map(|c| if c == '*' || c == '?' { 'x' } else { c })
            .collect();
        let taken = site
            .config
            .classes
            .iter()
            .any(|class| class.hosts.iter().any(|g| glob_match(g, &name)));
        if taken && steward_protocol::is_valid_hostname(&name) {
            names.insert(name);
        }
    }
    names.into_iter().collect()
}

/// Every error a compile for any host shape finds, sorted and deduplicated (the same template
/// failing for every shape is one error).
pub fn check_host_shapes(
    compiler: &Compiler,
    vault: Option<&VaultData>,
    now: Timestamp,
) -> Vec<SiteError> {
    let site = &compiler.site;
    let mut errors = Vec::new();
    for name in host_shapes(site) {
        let node = NodeInfo::new(NodeId(name));
        let result = match vault {
            Some(vault) => compiler.compile(vault, &node, &State::default(), now),
            None => compile_with_stand_in(compiler, &node, now),
        };
        if let Err(err) = result {
            errors.extend(
                err.errors
                    .0
                    .into_iter()
                    .filter(|e| vault.is_some() || !only_vault_data_decides(&e.message)),
            );
        }
    }
    errors.sort();
    errors.dedup();
    errors
}

fn compile_with_stand_in(
    compiler: &Compiler,
    node: &NodeInfo,
    now: Timestamp,
) -> Result<super::CompiledCatalog, super::CompileError> {
    let mut vault = crate::vault::roles_agreeing_with_roster(&compiler.site);
    let mut result = compiler.compile(&vault, node, &State::default(), now);
    for _ in 0..MAX_STAND_IN_ROUNDS {
        let missing = match &result {
            Err(err) if !err.missing_vault_paths.is_empty() => err.missing_vault_paths.clone(),
            _ => break,
        };
        for path in missing {
            vault.paths.entry(path).or_default();
        }
        result = compiler.compile(&vault, node, &State::default(), now);
    }
    result
}

/// Errors about Vault contents, which a check without Vault data cannot decide.
fn only_vault_data_decides(message: &str) -> bool {
    message.contains("vault path `") || message.contains("vault key `")
}
