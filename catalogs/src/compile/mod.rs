//! The compiler: a validated [`Site`] + [`VaultData`] + node + [`State`] + "now" → a
//! [`Catalog`] for that node. Pure: no filesystem, network, clock or randomness; the same inputs
//! give the same bytes.
//!
//! Two steps, because the server compiles many nodes against one site:
//! - [`Compiler::new`] prepares a site once: every file, templated field and expression is
//!   compiled, and static mistakes are reported as `FILE:LINE` errors.
//! - [`Compiler::compile`] builds one node's catalog (the hot path).
//!
//! Resource order is deterministic: the host bundles of the node's class (in order), then a
//! `group` for every supplementary group of the node's present users (sorted; a group a host
//! bundle declares itself is not repeated), then per roster user (roster order) `user:<name>`
//! followed by their tier's bundles; last, users that were managed before but are gone from the
//! node. Every failure names the file and line an admin has to look at.

mod glob;
mod prepare;
mod render;
mod shapes;
mod users;

#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use minijinja::context;
use minijinja::value::Value;
use steward_protocol::{
    Catalog, CatalogError, DocumentType, NodeId, Provenance, Resource, ResourceId, ResourceSpec,
    ServiceSpec, ServiceState, Timestamp, UserEnsure, UserSpec, CATALOG_FORMAT_VERSION,
};

pub use glob::glob_match;
pub use shapes::{check_host_shapes, host_shapes};

use self::prepare::{prepare_bundle, syntax_error, Kind, PreparedBundle};
use self::render::{Emitted, Renderer, Scope};
use self::users::{
    allocate_ports, node_user, removed_user_loc, roster_users_on, tier_value, NodeUser,
};
use crate::model::{
    is_privileged, HostClass, Loc, ManagedUser, Site, SiteError, SiteErrors, State, UserState,
    VaultData,
};
use crate::template::{data_map, RenderContext, Templates, Tracker};

/// The node a catalog is compiled for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    /// Its validated hostname.
    pub name: NodeId,
}

impl NodeInfo {
    /// A node by name.
    pub fn new(name: NodeId) -> Self {
        NodeInfo { name }
    }
}

/// A compiled catalog and what the server keeps from the compile.
#[derive(Debug, Clone)]
pub struct CompiledCatalog {
    /// The catalog, serial 0 (the server sets it), sensitive content still unsealed.
    pub catalog: Catalog,
    /// State to persist for the node: every port allocation (new ones included) and the managed
    /// users with their services.
    pub state: State,
    /// Allocations that are new or changed in this compile (user → port).
    pub new_ports: BTreeMap<String, u16>,
    /// Vault paths read (by `secret()`, `vault()` and the role check).
    pub vault_paths: BTreeSet<String>,
}

/// Why a catalog could not be compiled: every error, as `FILE:LINE: field: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{errors}")]
pub struct CompileError {
    /// Errors in the site (or in its Vault data) that the admin has to fix, sorted.
    pub errors: SiteErrors,
    /// Vault paths templates read that the given Vault data does not hold. A caller that reads
    /// Vault lazily fetches these and compiles again; the errors above say the same for people.
    pub missing_vault_paths: BTreeSet<String>,
}

impl CompileError {
    /// The errors, sorted by file and line.
    pub fn errors(&self) -> &[SiteError] {
        &self.errors.0
    }
}

impl From<SiteErrors> for CompileError {
    fn from(errors: SiteErrors) -> Self {
        CompileError {
            errors,
            missing_vault_paths: BTreeSet::new(),
        }
    }
}

/// A site prepared for compiling: build once per site (the server caches it by site hash),
/// then call [`Compiler::compile`] per node.
pub struct Compiler {
    site: Site,
    templates: Templates,
    bundles: BTreeMap<String, PreparedBundle>,
    /// `site`: the site's `vars`.
    site_vars: Value,
    /// `tier`, per tier name.
    tiers: BTreeMap<String, Value>,
}

impl std::fmt::Debug for Compiler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compiler")
            .field("site_hash", &self.site.hash)
            .field("bundles", &self.bundles.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

/// Sorts and deduplicates errors; the same template failing the same way for several users
/// is reported once.
fn finish_errors(mut errors: Vec<SiteError>) -> SiteErrors {
    fn without_user(message: &str) -> &str {
        message
            .find(" (for user `")
            .map_or(message, |at| &message[..at])
    }
    errors.sort();
    errors.dedup_by(|a, b| {
        a.loc == b.loc && a.field == b.field && without_user(&a.message) == without_user(&b.message)
    });
    SiteErrors(errors)
}

impl Compiler {
    /// Prepares `site`: registers every file as a template and compiles every templated field
    /// and expression of every bundle. Template syntax errors, bundles that do not exist, and
    /// static mistakes (a literal `template:` naming no file, an invalid literal mode or path)
    /// are reported, all at once.
    pub fn new(site: &Site) -> Result<Compiler, SiteErrors> {
        let mut templates = Templates::new(&site.files);
        let mut errors = Vec::new();
        let bundles: BTreeMap<String, PreparedBundle> = site
            .config
            .bundles
            .iter()
            .map(|(name, bundle)| {
                (
                    name.clone(),
                    prepare_bundle(bundle, &mut templates, &site.files, &mut errors),
                )
            })
            .collect();
        // A `.j2` file is meant to be a template even if no literal `template:` names it.
        for name in site.files.keys().filter(|name| name.ends_with(".j2")) {
            if let Some(err) = templates.file_error(name) {
                errors.push(syntax_error(
                    Loc::new(format!("files/{name}"), err.line),
                    String::new(),
                    err.clone(),
                ));
            }
        }
        for class in &site.config.classes {
            for bundle in class.bundles.iter().filter(|b| !bundles.contains_key(*b)) {
                errors.push(SiteError::new(
                    class.loc.clone(),
                    format!("classes.{}.bundles", class.name),
                    format!("unknown bundle `{bundle}`"),
                ));
            }
        }
        let mut tiers = BTreeMap::new();
        for (name, tier) in &site.tiers {
            for bundle in tier.bundles.iter().filter(|b| !bundles.contains_key(*b)) {
                errors.push(SiteError::new(
                    tier.loc.clone(),
                    format!("tiers.{name}.bundles"),
                    format!("unknown bundle `{bundle}`"),
                ));
            }
            tiers.insert(name.clone(), tier_value(tier));
        }
        if !errors.is_empty() {
            return Err(finish_errors(errors));
        }
        Ok(Compiler {
            site_vars: data_map(&site.config.vars),
            site: site.clone(),
            templates,
            bundles,
            tiers,
        })
    }

    /// The site this compiler was built from.
    pub fn site(&self) -> &Site {
        &self.site
    }

    /// The host class of a node: the first class with a matching host glob.
    pub fn class_of(&self, node: &NodeId) -> Result<&HostClass, SiteErrors> {
        let classes = &self.site.config.classes;
        classes
            .iter()
            .find(|class| class.hosts.iter().any(|glob| glob_match(glob, node.as_str())))
            .ok_or_else(|| {
                let known: Vec<String> = classes
                    .iter()
                    .map(|class| format!("{} ({})", class.name, class.hosts.join(", ")))
                    .collect();
                SiteErrors(vec![SiteError::new(
                    classes.first().map_or_else(|| Loc::new("site.yaml", 1), |class| class.loc.clone()),
                    "classes",
                    format!(
                        "node `{node}` matches no host class{}; add a glob that matches it to a class's `hosts`",
                        if known.is_empty() { String::new() } else { format!(" (classes: {})", known.join("; ")) }
                    ),
                )])
            })
    }

    /// Compiles the catalog of `node`.
    ///
    /// `state` is what the server kept from the node's previous compile (sticky ports, managed
    /// users); the returned [`CompiledCatalog::state`] replaces it. `now` becomes
    /// `compiled_at`, and `expires_at` is `now` plus the site's catalog lifetime.
    pub fn compile(
        &self,
        vault: &VaultData,
        node: &NodeInfo,
        state: &State,
        now: Timestamp,
    ) -> Result<CompiledCatalog, CompileError> {
        let class = self.class_of(&node.name)?;
        let on_node: BTreeSet<&str> = roster_users_on(&self.site, class, node.name.as_str())
            .into_iter()
            .map(|user| user.name.as_str())
            .collect();
        let role_errors = crate::vault::check_roles_for(&self.site, vault, |user| {
            on_node.contains(user.name.as_str())
        });
        if !role_errors.is_empty() {
            return Err(finish_errors(role_errors).into());
        }
        let tracker_value = Tracker::new_value(vault);
        let tracker = Tracker::of(&tracker_value);
        // A message can quote template source and error details, never a value; the values
        // secret() returned are scrubbed anyway, as a second line of defence.
        let fail = |errors: Vec<SiteError>| {
            let mut errors = finish_errors(errors);
            for error in &mut errors.0 {
                error.message = tracker.scrub(&error.message);
            }
            CompileError {
                errors,
                missing_vault_paths: tracker.missing_paths(),
            }
        };
        let mut session = Session {
            compiler: self,
            renderer: Renderer {
                templates: &self.templates,
                files: &self.site.files,
                tracker,
            },
            resources: Vec::new(),
            errors: Vec::new(),
        };
        let outcome = session.run(class, node, state, &tracker_value);
        let Session {
            resources,
            mut errors,
            ..
        } = session;
        let (ports, managed_users) = match outcome {
            Ok(managed) if errors.is_empty() => managed,
            Ok(_) => return Err(fail(errors)),
            Err(more) => {
                errors.extend(more);
                return Err(fail(errors));
            }
        };
        let (resources, locs): (Vec<Resource>, Vec<Cow<'_, Loc>>) =
            resources.into_iter().map(|e| (e.resource, e.loc)).unzip();
        let mut vault_paths = tracker.paths_read();
        let roles_path = &self.site.config.vault.roles_path;
        if vault.paths.contains_key(roles_path) {
            vault_paths.insert(roles_path.clone());
        }
        let catalog = Catalog {
            document_type: DocumentType::Catalog,
            format_version: CATALOG_FORMAT_VERSION,
            node: node.name.clone(),
            serial: Default::default(),
            compiled_at: now,
            expires_at: now.plus_secs(self.site.config.catalog_expires_after_secs),
            provenance: Provenance {
                site_hash: self.site.hash.clone(),
                vault_versions: vault_paths
                    .iter()
                    .filter_map(|path| vault.paths.get(path).map(|s| (path.clone(), s.version)))
                    .collect(),
            },
            resources,
        };
        // The graph check is the hot path's only full pass; when it fails, a slower pass
        // finds every duplicate and dangling edge with the templates that produced them.
        if let Err(err) = catalog.validate() {
            let mut errors = diagnose(&catalog.resources, &locs, &self.site);
            if errors.is_empty() {
                errors.push(catalog_error(&err, &catalog.resources, &locs));
            }
            return Err(fail(errors));
        }
        let new_ports = ports
            .iter()
            .filter(|(user, port)| state.ports.get(*user) != Some(port))
            .map(|(user, port)| (user.clone(), *port))
            .collect();
        Ok(CompiledCatalog {
            catalog,
            state: State {
                ports,
                managed_users,
            },
            new_ports,
            vault_paths,
        })
    }
}

/// Prepares `site` and compiles the catalog of `node` (see [`Compiler::compile`]).
pub fn compile(
    site: &Site,
    vault: &VaultData,
    node: &NodeInfo,
    state: &State,
    now: Timestamp,
) -> Result<CompiledCatalog, CompileError> {
    Compiler::new(site)?.compile(vault, node, state, now)
}

/// A catalog graph error, placed at the template of the resource it names.
fn catalog_error(err: &CatalogError, resources: &[Resource], locs: &[Cow<'_, Loc>]) -> SiteError {
    let id = match err {
        CatalogError::DuplicateId(id)
        | CatalogError::Cycle(id)
        | CatalogError::UnsealedSecret(id)
        | CatalogError::IdMismatch { id, .. }
        | CatalogError::BadPath { id, .. }
        | CatalogError::ControlCharacters { id, .. }
        | CatalogError::Rule { id, .. }
        | CatalogError::PathCollision { second: id, .. }
        | CatalogError::UnknownDependency { from: id, .. } => id,
    };
    let loc = resources.iter().position(|r| &r.id == id).map_or_else(
        || Loc::new("site.yaml", 1),
        |i| locs[i].clone().into_owned(),
    );
    SiteError::new(loc, "", err.to_string())
}

/// Every duplicate id (naming both templates) and every `requires`/`subscribes` edge to a
/// resource the catalog does not have.
fn diagnose(resources: &[Resource], locs: &[Cow<'_, Loc>], site: &Site) -> Vec<SiteError> {
    let mut errors = Vec::new();
    let mut first: HashMap<&ResourceId, usize> = HashMap::new();
    let mut on_path: HashMap<&str, usize> = HashMap::new();
    for (i, resource) in resources.iter().enumerate() {
        if let Some(path) = steward_protocol::catalog::managed_path(&resource.spec) {
            match on_path.get(path) {
                Some(&j) if resources[j].id != resource.id => errors.push(SiteError::new(
                    locs[i].clone().into_owned(),
                    "path",
                    format!(
                        "`{}` manages the path {path} that `{}` ({}) manages too; every run would fail",
                        resource.id, resources[j].id, locs[j]
                    ),
                )),
                Some(_) => {}
                None => {
                    on_path.insert(path, i);
                }
            }
        }
        if let Some(&j) = first.get(&resource.id) {
            errors.push(SiteError::new(
                locs[i].clone().into_owned(),
                "",
                format!(
                    "duplicate resource id `{}` (also produced by {})",
                    resource.id, locs[j]
                ),
            ));
        } else {
            first.insert(&resource.id, i);
        }
    }
    for (resource, loc) in resources.iter().zip(locs) {
        let subscribes = match &resource.spec {
            ResourceSpec::Service(service) => service.subscribes.as_slice(),
            _ => &[],
        };
        let edges = resource
            .requires
            .iter()
            .map(|id| ("requires", id))
            .chain(subscribes.iter().map(|id| ("subscribes", id)));
        for (edge, id) in edges {
            if first.contains_key(id) {
                continue;
            }
            let from_site_defaults = matches!(resource.spec, ResourceSpec::User(_))
                && site.config.users.requires.iter().any(|r| r == id.as_str());
            errors.push(if from_site_defaults {
                SiteError::new(
                    Loc::new("site.yaml", 1),
                    "users.requires",
                    format!("`{id}` is not a resource of this node's catalog"),
                )
            } else {
                SiteError::new(
                    loc.clone().into_owned(),
                    edge,
                    format!("`{}` {edge} unknown resource `{id}`", resource.id),
                )
            });
        }
    }
    errors
}

/// One compile in progress.
struct Session<'c> {
    compiler: &'c Compiler,
    renderer: Renderer<'c>,
    resources: Vec<Emitted<'c>>,
    errors: Vec<SiteError>,
}

/// Ports and managed users for the returned state.
type Managed = (BTreeMap<String, u16>, BTreeMap<String, ManagedUser>);

impl<'c> Session<'c> {
    fn emit(&mut self, emitted: Emitted<'c>) {
        self.resources.push(emitted);
    }

    /// Renders the bundles `names` in `scope`; with `only` set, only templates of that kind.
    fn render_bundles(
        &mut self,
        names: &[String],
        scope: &Scope<'_>,
        only: Option<Kind>,
    ) -> Vec<Emitted<'c>> {
        let mut out = Vec::new();
        for name in names {
            let Some(bundle) = self.compiler.bundles.get(name) else {
                continue;
            };
            for template in &bundle.resources {
                if only.is_some_and(|kind| kind != template.kind) {
                    continue;
                }
                if let Err(err) = self.renderer.render(template, scope, &mut out) {
                    self.errors.push(err);
                }
            }
        }
        out
    }

    fn run(
        &mut self,
        class: &HostClass,
        node: &NodeInfo,
        state: &State,
        tracker: &Value,
    ) -> Result<Managed, Vec<SiteError>> {
        let site = &self.compiler.site;
        let on_node = roster_users_on(site, class, node.name.as_str());
        let on_node_names: BTreeSet<&str> = on_node.iter().map(|u| u.name.as_str()).collect();
        // Managed before, gone from this node now (removed from the roster, or its hosts no
        // longer match): cut off like an offboarded user, unless already purged.
        let removed: Vec<(&str, &ManagedUser)> = state
            .managed_users
            .iter()
            .filter(|(name, managed)| {
                !on_node_names.contains(name.as_str()) && managed.state != UserState::Purged
            })
            .map(|(name, managed)| (name.as_str(), managed))
            .collect();
        let removed_names: Vec<&str> = removed.iter().map(|(name, _)| *name).collect();
        let ports = allocate_ports(site.config.ports, &on_node, &removed_names, state)?;
        let mut users = Vec::with_capacity(on_node.len());
        let mut errors = Vec::new();
        for user in &on_node {
            match node_user(site, user, ports.get(&user.name).copied()) {
                Ok(resolved) => users.push(resolved),
                Err(err) => errors.push(err),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let present: Vec<Value> = users
            .iter()
            .filter(|u| u.roster.state == UserState::Present)
            .map(|u| u.value.clone())
            .collect();
        let host = context! { name => node.name.as_str(), class => class.name.as_str() };
        let base_context = RenderContext {
            site: self.compiler.site_vars.clone(),
            host,
            users: Value::from(present),
            tracker: tracker.clone(),
            user: None,
            tier: None,
            item: None,
        };
        let base = base_context.clone().into_value();

        let host_resources = self.render_bundles(
            &class.bundles,
            &Scope {
                ctx: &base,
                user: None,
                home: None,
            },
            None,
        );
        // A group the host bundles declare (say, with a fixed gid) is not repeated.
        let declared_groups: BTreeSet<String> = host_resources
            .iter()
            .filter_map(|e| match &e.resource.spec {
                ResourceSpec::Group(group) => Some(group.name.clone()),
                _ => None,
            })
            .collect();
        self.resources.extend(host_resources);

        let mut groups: BTreeSet<&str> = BTreeSet::new();
        for user in users
            .iter()
            .filter(|u| u.roster.state == UserState::Present)
        {
            groups.extend(user.groups.iter().map(String::as_str));
        }
        for group in groups {
            let spec = ResourceSpec::Group(steward_protocol::GroupSpec {
                name: group.to_string(),
                gid: None,
                system: false,
            });
            if !declared_groups.contains(group) {
                let loc = users
                    .iter()
                    .find(|u| u.groups.iter().any(|g| g == group))
                    .map_or_else(removed_user_loc, |u| u.roster.loc_of("groups"));
                self.emit(Emitted {
                    resource: Resource::new(spec),
                    loc: Cow::Owned(loc),
                });
            }
        }

        let mut managed_users = BTreeMap::new();
        for user in &users {
            let services = self.user_resources(user, &base_context, state);
            managed_users.insert(
                user.roster.name.clone(),
                ManagedUser {
                    state: user.roster.state,
                    services,
                },
            );
        }
        for (name, managed) in &removed {
            let services = self.cut_off(
                name,
                &managed.services,
                UserState::Offboarded,
                None,
                Cow::Owned(removed_user_loc()),
            );
            managed_users.insert(
                name.to_string(),
                ManagedUser {
                    state: UserState::Offboarded,
                    services,
                },
            );
        }
        // Users purged before and gone from the node stay recorded, so a purge is never redone.
        for (name, managed) in &state.managed_users {
            managed_users
                .entry(name.clone())
                .or_insert_with(|| managed.clone());
        }
        Ok((ports, managed_users))
    }

    /// Emits a roster user's resources; returns the service units managed for them.
    fn user_resources(
        &mut self,
        user: &NodeUser<'c>,
        base: &RenderContext,
        state: &State,
    ) -> Vec<String> {
        let roster = user.roster;
        let ctx = RenderContext {
            user: Some(user.value.clone()),
            tier: self.compiler.tiers.get(&roster.tier).cloned(),
            ..base.clone()
        }
        .into_value();
        let user_id = ResourceId::new("user", &roster.name);
        let scope = Scope {
            ctx: &ctx,
            user: Some((&roster.name, &user_id)),
            home: Some(&user.home),
        };
        if roster.state != UserState::Present {
            let rendered = self.render_bundles(&user.tier.bundles, &scope, Some(Kind::Service));
            let mut services: Vec<String> = rendered
                .iter()
                .map(|e| e.resource.spec.name().to_string())
                .collect();
            if let Some(previous) = state.managed_users.get(&roster.name) {
                for service in &previous.services {
                    if !services.contains(service) {
                        services.push(service.clone());
                    }
                }
            }
            return self.cut_off(
                &roster.name,
                &services,
                roster.state,
                Some(user),
                Cow::Borrowed(&roster.loc),
            );
        }
        let site = &self.compiler.site;
        let mut account = Resource::new(ResourceSpec::User(UserSpec {
            name: roster.name.clone(),
            uid: roster.uid,
            shell: user.shell.clone(),
            home: user.home.clone(),
            home_mode: site.config.users.home_mode,
            // Privileged groups travel apart, so the agent can refuse one in `groups` and
            // report those held beyond the tier as drift.
            groups: user
                .groups
                .iter()
                .filter(|g| !is_privileged(g))
                .cloned()
                .collect(),
            comment: roster.full_name.clone(),
            lock_at_creation: site.config.users.lock_at_creation,
            ensure: UserEnsure::Present,
            privileged_groups: user
                .groups
                .iter()
                .filter(|g| is_privileged(g))
                .cloned()
                .collect(),
            revoke_groups: roster.revoke_groups.clone(),
            enforce: {
                let mut enforce = site.config.users.enforce.clone();
                enforce.extend(&roster.enforce);
                enforce.sort();
                enforce.dedup();
                enforce
            },
            tier: Some(roster.tier.clone()),
        }));
        for group in &user.groups {
            account = account.requiring(ResourceId::new("group", group));
        }
        for id in &site.config.users.requires {
            account = account.requiring(ResourceId(id.clone()));
        }
        self.emit(Emitted {
            resource: account,
            loc: Cow::Borrowed(&roster.loc),
        });
        let rendered = self.render_bundles(&user.tier.bundles, &scope, None);
        let services = rendered
            .iter()
            .filter(|e| matches!(e.resource.spec, ResourceSpec::Service(_)))
            .map(|e| e.resource.spec.name().to_string())
            .collect();
        self.resources.extend(rendered);
        services
    }

    /// Offboarding and purging: every service stopped and disabled, then the account locked
    /// (offboarded) or archived and removed (purged, after the services stopped). Nothing else
    /// is emitted for the user, and nothing is deleted unless purged.
    fn cut_off(
        &mut self,
        name: &str,
        services: &[String],
        lifecycle: UserState,
        user: Option<&NodeUser<'_>>,
        loc: Cow<'c, Loc>,
    ) -> Vec<String> {
        let site = &self.compiler.site;
        let mut ids = Vec::new();
        for service in services {
            let resource = Resource::new(ResourceSpec::Service(ServiceSpec {
                name: service.clone(),
                enable: false,
                ensure: ServiceState::Stopped,
                subscribes: Vec::new(),
                restart: Default::default(),
            }));
            ids.push(resource.id.clone());
            self.emit(Emitted {
                resource,
                loc: loc.clone(),
            });
        }
        let (ensure, requires) = match lifecycle {
            UserState::Purged => (
                UserEnsure::Purged {
                    archive_dir: site.config.archive_dir.clone(),
                    terminate_sessions: site.config.terminate_sessions,
                },
                ids,
            ),
            _ => (UserEnsure::Locked, Vec::new()),
        };
        let spec = UserSpec {
            name: name.to_string(),
            uid: None,
            shell: user.map_or_else(|| site.config.users.shell.clone(), |u| u.shell.clone()),
            home: user.map_or_else(|| format!("/home/{name}"), |u| u.home.clone()),
            home_mode: site.config.users.home_mode,
            groups: Vec::new(),
            comment: None,
            lock_at_creation: false,
            ensure,
            privileged_groups: Vec::new(),
            revoke_groups: Vec::new(),
            enforce: Vec::new(),
            tier: None,
        };
        let mut account = Resource::new(ResourceSpec::User(spec));
        account.requires = requires;
        self.emit(Emitted {
            resource: account,
            loc,
        });
        services.to_vec()
    }
}
