//! The site: `roster.yaml`, `tiers.yaml`, `site.yaml` and `files/**` → a validated [`Site`].
//!
//! [`parse_site`] is pure (the files come in as a map; [`crate::loader`] reads a directory). It
//! reports **every** error of every file at once, sorted, each as `FILE:LINE: field: message`:
//!
//! ```text
//! roster.yaml:3: users.emo.tier: unknown tier "power"; known tiers: admin, namespace-owner, power-user
//! ```
//!
//! All YAML goes through [`crate::yaml`] (YAML 1.2 core schema: `yes`/`no` are strings;
//! duplicate keys, custom tags, several documents and alias bombs are refused). Unknown keys are
//! errors everywhere. A key that is left out takes the default given below.
//!
//! # `roster.yaml`
//!
//! The people, keyed by `os_user`, in the seeds' format (flow or block style):
//!
//! ```yaml
//! users:
//!   emo:       { authentik_user: emil.barzin, k8s_user: emo, tier: power-user }
//!   ancamilea: { authentik_user: ancaelena98, k8s_user: anca, tier: namespace-owner,
//!                namespaces: [plotting-book], code_layout: workspace, repos: [tripit] }
//!   # gheorghe: { authentik_user: vabbit81, k8s_user: vabbit81, tier: namespace-owner }
//! ```
//!
//! | key | type | rule |
//! | --- | --- | --- |
//! | *(the key)* | os_user | `^[a-z_][a-z0-9_-]{0,31}$`; not a Debian system account (`root`, `daemon`, `nobody`, ...) nor a privileged group name (`sudo`, `docker`, ...) |
//! | `authentik_user` | string, **required** | unique across users (case-insensitive) |
//! | `k8s_user` | string, **required** | the key of the user's entry in Vault `k8s_users` |
//! | `tier` | string, **required** | a tier of `tiers.yaml` |
//! | `namespaces` | list | Kubernetes namespace names; required (non-empty) when the tier has `requires_namespaces` |
//! | `code_layout` | `single` (default) \| `workspace` | |
//! | `repos` | list | names `[A-Za-z0-9._-]+` (not `.`/`..`); only with `code_layout: workspace` |
//! | `state` | `present` (default) \| `offboarded` \| `purged` | |
//! | `hosts` | list | hostname globs (`a-z0-9.-` plus `*` `?`); empty = every host whose class manages users |
//! | `shell` | path | absolute and normal; default `users.shell` of `site.yaml` |
//! | `uid` | integer | not 0, 65534, 65535; below 1000 only if the tier has `allow_low_uid`; unique |
//! | `groups` | list | group names; a privileged group (`sudo`, `root`, `wheel`, `docker`, `adm`) only if the tier lists it in `privileged_groups` |
//! | `port` | integer | inside `site.yaml` `ports` (and only if that exists); unique |
//! | `home` | path | `/home/<os_user>` or below it |
//! | `full_name` | string | no `:` |
//! | `flags` | mapping | names `[A-Za-z_][A-Za-z0-9_]*` → plain values (for templates: `user.flags.ha`) |
//!
//! No roster value may contain a control character (newline, tab, escape; F8). Roster values
//! are **data**: `{{ … }}` in a value is kept literally and never rendered (S4).
//!
//! # `tiers.yaml`
//!
//! ```yaml
//! tiers:
//!   admin:
//!     description: full access
//!     groups: [code-shared]            # added, never removed
//!     privileged_groups: [sudo, docker] # the only way to grant sudo, root, wheel, docker, adm
//!     allow_low_uid: false             # default false
//!     requires_namespaces: false       # default false
//!     bundles: [user-base, admin-kube] # user bundles of site.yaml, in order
//!     vars: { kube_scope: cluster }    # free values for templates (tier.vars.kube_scope)
//! ```
//!
//! Tier names are `^[a-z][a-z0-9_-]{0,63}$`. A privileged group in `groups` must also be in
//! `privileged_groups`; `privileged_groups` takes only privileged groups. Tiers grant both
//! lists.
//!
//! # `site.yaml`
//!
//! ```yaml
//! classes:                   # in order; a host's class is the first whose globs match
//!   workstation: { hosts: ["devvm*"], manage_users: true, bundles: [host-base] }
//! users:                     # defaults for roster accounts
//!   shell: /bin/bash         # default /bin/bash
//!   home_mode: "0700"        # default 0700; quoted or plain octal digits
//!   lock_at_creation: true   # default true
//!   requires: [package:zsh]  # resource ids every account requires; default []
//! ports: { start: 8100, end: 8199 }   # optional; per-user service ports
//! vault: { roles_path: secret/platform, roles_key: k8s_users }   # these are the defaults
//! catalog: { expires_after: 7d }      # 90s, 30m, 12h, 7d; 10m..=90d; default 7d
//! offboarding: { archive_dir: /var/backups/steward/offboarded }  # the default; absolute, not under /home
//! vars: { cluster_url: "https://k8s.example:6443" }              # free values (site.cluster_url)
//! bundles:
//!   host-base:
//!     - package: { name: zsh }
//!     - file: { path: /etc/motd, content: "welcome to {{ node.hostname }}\n" }
//!   user-base:
//!     - file: { path: "{{ user.home }}/.kube/config", template: kubeconfig.yaml.j2, mode: "0600" }
//!       when: "tier.vars.kube_scope"
//!       requires: ["user:{{ user.name }}"]
//!     - git_clone: { path: "{{ user.home }}/code/{{ item }}", url: "https://git.example/{{ item }}" }
//!       for_each: user.repos
//! ```
//!
//! Class, tier and bundle names are `^[a-z][a-z0-9_-]{0,63}$`; `hosts` is required for a class
//! and `manage_users` defaults to false. A bundle is a list of resource templates; each item has
//! **exactly one** resource-type key of [`RESOURCE_SCHEMAS`]
//! (`user` is not allowed: accounts come from the roster) whose value is a mapping of that
//! type's fields, plus optional `when` (string), `for_each` (string) and `requires` (list of
//! resource ids `type:name`). Field types are checked: strings take any non-null scalar as
//! written (`mode: 0644` is the text `0644`), integers must be plain and not negative, booleans
//! plain `true`/`false`, enums one of their words. A `file` takes exactly one of `template`,
//! `source` (a file under `files/`, named literally: `template: kubeconfig.yaml.j2` is
//! `files/kubeconfig.yaml.j2`) or `content`; `replace: if_marked` needs `marker` (and `marker`
//! needs it); `mode` must be octal. Literal paths must be absolute and normal, templated ones
//! free of `..`; a literal `git_clone` url must be `https://`. A literal `requires` id must name
//! a roster user (`user:x`) or something a bundle can declare (a templated name counts as a
//! glob: `{{ user.home }}/.kube/config` may be `/home/emo/.kube/config`, never `/etc/issue`).
//! Tiers and classes may only name existing bundles.
//!
//! # `files/**`
//!
//! Kept as they are in [`Site::files`], keyed relative to `files/`.
//!
//! # Hash
//!
//! [`Site::hash`] is the SHA-256 (hex) over every input file in sorted name order, each framed
//! as `len(name) ‖ name ‖ len(content) ‖ content` with lengths as 8-byte big-endian integers.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::model::{Loc, Roster, Site, SiteError, SiteErrors, RESOURCE_SCHEMAS};
use crate::site::read::{glob_match, is_templated, template_glob, Ctx};
use crate::yaml::{self, Node};

mod config;

pub(crate) use config::check_clone_url;
pub(crate) use read::{is_linux_name, parse_duration};
mod read;
mod roster;
mod tiers;

#[cfg(test)]
mod tests;

/// The roster file.
pub const ROSTER_FILE: &str = "roster.yaml";
/// The tiers file.
pub const TIERS_FILE: &str = "tiers.yaml";
/// The site configuration file.
pub const SITE_FILE: &str = "site.yaml";
/// Prefix of static files and templates.
pub const FILES_PREFIX: &str = "files/";

/// Parses and validates a whole site. `files` maps paths relative to the site directory
/// (`roster.yaml`, `tiers.yaml`, `site.yaml`, `files/<...>`) to their text.
///
/// Returns every error of every file, sorted by file and line.
pub fn parse_site(files: &BTreeMap<String, String>) -> Result<Site, SiteErrors> {
    let mut errors = Vec::new();
    let mut site_files = BTreeMap::new();
    for (name, text) in files {
        match name.as_str() {
            ROSTER_FILE | TIERS_FILE | SITE_FILE => {}
            other => match other.strip_prefix(FILES_PREFIX) {
                Some(rel) if is_normal_relative_path(rel) => {
                    site_files.insert(rel.to_owned(), text.clone());
                }
                Some(_) => errors.push(SiteError::new(
                    Loc::new(name.clone(), 1),
                    "",
                    "not a normal path under files/; remove empty, \".\" and \"..\" components",
                )),
                None => errors.push(SiteError::new(
                    Loc::new(name.clone(), 1),
                    "",
                    "unexpected file; a site has roster.yaml, tiers.yaml, site.yaml and files/**",
                )),
            },
        }
    }

    let roster_doc = load_yaml(files, ROSTER_FILE, &mut errors);
    let tiers_doc = load_yaml(files, TIERS_FILE, &mut errors);
    let site_doc = load_yaml(files, SITE_FILE, &mut errors);

    let mut refs = Vec::new();
    let tiers = tiers_doc
        .as_ref()
        .map(|doc| tiers::parse(&mut Ctx::new(TIERS_FILE, &mut errors), doc, &mut refs));
    let config = site_doc.as_ref().map(|doc| {
        config::parse(
            &mut Ctx::new(SITE_FILE, &mut errors),
            doc,
            &site_files,
            &mut refs,
        )
    });
    let roster = roster_doc.as_ref().map(|doc| {
        let others = roster::RosterContext {
            tiers: tiers.as_ref(),
            ports: config.as_ref().map(|c| c.ports),
        };
        roster::parse(&mut Ctx::new(ROSTER_FILE, &mut errors), doc, &others)
    });
    check_refs(&mut errors, &refs, config.as_ref(), roster.as_ref());

    errors.sort();
    errors.dedup();
    match (roster, tiers, config) {
        (Some(roster), Some(tiers), Some(config)) if errors.is_empty() => Ok(Site {
            roster,
            tiers,
            config,
            files: site_files,
            hash: site_hash(files),
        }),
        _ => Err(SiteErrors(errors)),
    }
}

/// SHA-256 (hex) over every file, in name order, each framed by its lengths.
pub fn site_hash(files: &BTreeMap<String, String>) -> String {
    let mut hasher = Sha256::new();
    for (name, text) in files {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update((text.len() as u64).to_be_bytes());
        hasher.update(text.as_bytes());
    }
    hex::encode(hasher.finalize())
}

/// `a/b.j2`: relative, no empty, `.` or `..` components, no control characters or backslashes.
fn is_normal_relative_path(path: &str) -> bool {
    !path.is_empty()
        && !path.chars().any(|c| c.is_control() || c == '\\')
        && path
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

fn load_yaml(
    files: &BTreeMap<String, String>,
    name: &str,
    errors: &mut Vec<SiteError>,
) -> Option<Node> {
    let Some(text) = files.get(name) else {
        errors.push(SiteError::new(
            Loc::new(name, 1),
            "",
            format!("file is missing; create {name} in the site directory"),
        ));
        return None;
    };
    match yaml::parse(text) {
        Ok(node) => Some(node),
        Err(e) => {
            errors.push(SiteError::new(Loc::new(name, e.line), "", e.message));
            None
        }
    }
}

/// A name in one file that must exist in another, checked once all files are read.
#[derive(Debug, Clone)]
pub(crate) struct Ref {
    loc: Loc,
    field: String,
    target: RefTarget,
}

#[derive(Debug, Clone)]
enum RefTarget {
    /// A bundle of `site.yaml`.
    Bundle(String),
    /// A resource id (`type:name`).
    Require(String),
}

impl Ref {
    pub(crate) fn bundle(file: &str, line: u32, field: String, name: &str) -> Self {
        Ref {
            loc: Loc::new(file, line),
            field,
            target: RefTarget::Bundle(name.to_owned()),
        }
    }

    pub(crate) fn require(file: &str, line: u32, field: String, id: &str) -> Self {
        Ref {
            loc: Loc::new(file, line),
            field,
            target: RefTarget::Require(id.to_owned()),
        }
    }
}

/// Checks bundle names and resource ids; skipped for a file that could not be read.
fn check_refs(
    errors: &mut Vec<SiteError>,
    refs: &[Ref],
    config: Option<&crate::model::SiteConfig>,
    roster: Option<&Roster>,
) {
    let Some(config) = config else {
        return;
    };
    for r in refs {
        let message = match &r.target {
            RefTarget::Bundle(name) => {
                if config.bundles.contains_key(name) {
                    continue;
                }
                if config.bundles.is_empty() {
                    format!("unknown bundle {name:?}; site.yaml defines no bundles")
                } else {
                    let known: Vec<&str> = config.bundles.keys().map(String::as_str).collect();
                    format!(
                        "unknown bundle {name:?}; known bundles: {}",
                        known.join(", ")
                    )
                }
            }
            RefTarget::Require(id) => match check_require(id, config, roster) {
                None => continue,
                Some(message) => message,
            },
        };
        errors.push(SiteError::new(r.loc.clone(), r.field.clone(), message));
    }
}

/// Why `id` references nothing, if it does.
fn check_require(
    id: &str,
    config: &crate::model::SiteConfig,
    roster: Option<&Roster>,
) -> Option<String> {
    let Some((kind, name)) = id.split_once(':') else {
        if is_templated(id) {
            return None;
        }
        return Some(format!(
            "{id:?} is not a resource id; write <type>:<name>, e.g. package:zsh"
        ));
    };
    if is_templated(kind) {
        return None;
    }
    let kinds: Vec<&str> = RESOURCE_SCHEMAS.iter().map(|(k, _)| *k).collect();
    if kind != "user" && !kinds.contains(&kind) {
        return Some(format!(
            "unknown resource type {kind:?} in {id:?}; expected user or one of: {}",
            kinds.join(", ")
        ));
    }
    if name.is_empty() {
        return Some(format!("{id:?} has an empty name"));
    }
    if is_templated(name) {
        return None;
    }
    if kind == "user" {
        return match roster {
            Some(roster) if !roster.users.iter().any(|u| u.name == name) => Some(format!(
                "no roster user {name:?}; add them to roster.yaml or fix the id"
            )),
            _ => None,
        };
    }
    let identity = config::identity_field(kind);
    let declared = config
        .bundles
        .values()
        .flat_map(|b| b.resources.iter())
        .filter(|t| t.kind == kind)
        .filter_map(|t| t.fields.get(identity).and_then(|(_, v)| v.as_str()))
        .any(|value| glob_match(&template_glob(value), name));
    (!declared).then(|| {
        format!("requires {id:?}, but no bundle declares {kind} {name:?}; add it to a bundle or fix the id")
    })
}
