//! The people side of a compile: which roster users a node has, their sticky ports, and the
//! values templates see (`user`, `users`, `tier`).

use std::collections::{BTreeMap, BTreeSet};

use minijinja::value::Value;
use serde::Serialize;

use super::glob::glob_match;
use crate::model::{
    HostClass, Loc, PortRange, RosterUser, Site, SiteError, State, Tier, UserState,
};
use crate::template::data_map;

/// Roster users managed on a node of `class` named `node`, in roster order: on a class that
/// manages users, those whose `hosts` globs match (no globs = every such node).
pub(super) fn roster_users_on<'s>(
    site: &'s Site,
    class: &HostClass,
    node: &str,
) -> Vec<&'s RosterUser> {
    if !class.manage_users {
        return Vec::new();
    }
    site.roster
        .users
        .iter()
        .filter(|user| {
            user.hosts.is_empty() || user.hosts.iter().any(|glob| glob_match(glob, node))
        })
        .collect()
}

/// Sticky port allocation.
///
/// Every user on the node except purged ones keeps a pinned roster `port`, else the port of
/// the previous state (when still inside the range and not taken by a pin); `removed` users
/// (managed before, now gone from the node, not purged) keep theirs too. Then each present user
/// without a port gets the lowest free port of the range, in roster order. Purged users and
/// ports outside the range are dropped, so they become free.
pub(super) fn allocate_ports(
    range: Option<PortRange>,
    on_node: &[&RosterUser],
    removed: &[&str],
    state: &State,
) -> Result<BTreeMap<String, u16>, Vec<SiteError>> {
    let in_range = |port: u16| range.is_none_or(|r| (r.start..=r.end).contains(&port));
    let mut ports = BTreeMap::new();
    let mut taken = BTreeSet::new();
    let mut errors = Vec::new();
    let kept: Vec<&RosterUser> = on_node
        .iter()
        .copied()
        .filter(|user| user.state != UserState::Purged)
        .collect();
    for user in &kept {
        if let Some(port) = user.port {
            if !taken.insert(port) {
                errors.push(SiteError::new(
                    user.loc_of("port"),
                    format!("users.{}.port", user.name),
                    format!("port {port} is pinned by another user"),
                ));
            }
            ports.insert(user.name.clone(), port);
        }
    }
    let sticky = kept
        .iter()
        .filter(|user| user.port.is_none())
        .map(|user| user.name.as_str())
        .chain(removed.iter().copied());
    for name in sticky {
        if let Some(&port) = state.ports.get(name) {
            if in_range(port) && taken.insert(port) {
                ports.insert(name.to_string(), port);
            }
        }
    }
    if let Some(range) = range {
        let mut next = range.start;
        for user in kept.iter().filter(|user| user.state == UserState::Present) {
            if ports.contains_key(&user.name) {
                continue;
            }
            while taken.contains(&next) && next < range.end {
                next += 1;
            }
            if taken.contains(&next) || next > range.end {
                errors.push(SiteError::new(
                    user.loc.clone(),
                    format!("users.{}", user.name),
                    format!(
                        "no free port left in the port range {}-{} (site.yaml `ports`); widen the range or purge users",
                        range.start, range.end
                    ),
                ));
                continue;
            }
            taken.insert(next);
            ports.insert(user.name.clone(), next);
        }
    }
    if errors.is_empty() {
        Ok(ports)
    } else {
        Err(errors)
    }
}

/// A roster user on this node, resolved.
#[derive(Debug)]
pub(super) struct NodeUser<'s> {
    pub roster: &'s RosterUser,
    pub tier: &'s Tier,
    /// What the tier grants (`groups` and `privileged_groups`) and the roster's extra groups,
    /// sorted and deduplicated.
    pub groups: Vec<String>,
    pub shell: String,
    pub home: String,
    /// What templates see as `user` (and in `users`).
    pub value: Value,
}

#[derive(Serialize)]
struct UserView<'a> {
    name: &'a str,
    authentik_user: &'a str,
    k8s_user: &'a str,
    tier: &'a str,
    namespaces: &'a [String],
    code_layout: &'static str,
    repos: &'a [String],
    state: &'static str,
    shell: &'a str,
    uid: Option<u32>,
    groups: &'a [String],
    home: &'a str,
    port: Option<u16>,
    full_name: Option<&'a str>,
    flags: &'a BTreeMap<String, serde_json::Value>,
}

/// What templates see as `tier`: `name`, `description`, `groups` (every group the tier
/// grants, privileged ones included), `privileged_groups` (that subset) and `vars`.
pub(super) fn tier_value(tier: &Tier) -> Value {
    let mut groups: Vec<&str> = tier
        .groups
        .iter()
        .chain(&tier.privileged_groups)
        .map(String::as_str)
        .collect();
    groups.sort_unstable();
    groups.dedup();
    Value::from_iter([
        ("name", Value::from(tier.name.as_str())),
        ("description", Value::from(tier.description.clone())),
        ("groups", Value::from_serialize(&groups)),
        (
            "privileged_groups",
            Value::from_serialize(&tier.privileged_groups),
        ),
        ("vars", data_map(&tier.vars)),
    ])
}

/// Resolves a roster user (whose tier the site validated).
pub(super) fn node_user<'s>(
    site: &'s Site,
    user: &'s RosterUser,
    port: Option<u16>,
) -> Result<NodeUser<'s>, SiteError> {
    let tier = site.tiers.get(&user.tier).ok_or_else(|| {
        SiteError::new(
            user.loc_of("tier"),
            format!("users.{}.tier", user.name),
            format!("unknown tier `{}`", user.tier),
        )
    })?;
    let mut groups: Vec<String> = tier
        .groups
        .iter()
        .chain(&tier.privileged_groups)
        .chain(&user.groups)
        .cloned()
        .collect();
    groups.sort();
    groups.dedup();
    let shell = user
        .shell
        .clone()
        .unwrap_or_else(|| site.config.users.shell.clone());
    let home = user.home_dir();
    if !steward_protocol::is_normal_absolute_path(&home) {
        return Err(SiteError::new(
            user.loc_of("home"),
            format!("users.{}.home", user.name),
            super::prepare::path_message(&home),
        ));
    }
    let value = Value::from_serialize(UserView {
        name: &user.name,
        authentik_user: &user.authentik_user,
        k8s_user: &user.k8s_user,
        tier: &user.tier,
        namespaces: &user.namespaces,
        code_layout: user.code_layout.as_str(),
        repos: &user.repos,
        state: user.state.as_str(),
        shell: &shell,
        uid: user.uid,
        groups: &groups,
        home: &home,
        port,
        full_name: user.full_name.as_deref(),
        flags: &user.flags,
    });
    Ok(NodeUser {
        roster: user,
        tier,
        groups,
        shell,
        home,
        value,
    })
}

/// The location used for resources of users who are no longer in the roster.
pub(super) fn removed_user_loc() -> Loc {
    Loc::new("roster.yaml", 1)
}
