//! The apply engine: orders a verified catalog's resources, runs each through its provider and
//! turns the outcomes into run-report events (DESIGN §7).
//!
//! - **Order**: a topological sort of the explicit `requires` edges plus implicit ones (a
//!   group before the users and files that name it; a user before everything it owns, runs as,
//!   or that lies under its home; a directory before everything beneath it; what a service
//!   subscribes to before the service). Ties keep the
//!   compiler's order, so runs are deterministic.
//! - **Failure isolation**: a failed resource skips its dependents (explicit and implicit,
//!   transitively), reported `skipped` with the reason, and nothing else.
//! - **Refresh**: a `service` whose `subscribes` names a resource that changed in this run is
//!   restarted.
//! - **Noop**: providers see [`Context::noop`] and write nothing; a change they would make is
//!   reported `would_change`.
//! - **Adoption**: a `git_clone` reported `kept` (its path is someone's own tree) also keeps
//!   every resource beneath its path: nothing is written into a tree Steward did not make.
//! - **Stop**: between resources the engine checks the stop flag (SIGTERM) and the whole-run
//!   deadline; what is left is reported `skipped`. The resource in progress always finishes.

use std::cell::{Ref, RefCell};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use steward_protocol::{
    Catalog, EncryptionKeyPair, Resource, ResourceEvent, ResourceId, ResourceSpec, ResourceStatus,
    SealedValue, Secret,
};

use crate::accounts::Accounts;
use crate::host::Host;
use crate::providers;

/// What a provider did (or, under noop, would do) to one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Already as wanted; nothing written.
    Unchanged,
    /// Changed (under noop: would change). `message` says what, in a few words; `diff` is a
    /// unified diff or field list, never sensitive content; `corrective` when the resource
    /// existed and had drifted (as opposed to being created or changed by a new catalog).
    Changed {
        /// What changed.
        message: String,
        /// The diff, if one is meaningful.
        diff: Option<String>,
        /// Drift repaired.
        corrective: bool,
    },
    /// Deliberately not done, with the reason (e.g. starting a unit with no running systemd).
    Skipped(String),
    /// Left as found on purpose, with the reason: the object existed before and differs in
    /// what the site does not enforce (reported `kept`; not a change, not a failure).
    Kept(String),
    /// Due, but waiting for a condition (a user going idle), with the reason (reported
    /// `deferred`; retried).
    Deferred(String),
}

impl Outcome {
    /// A change with a message only.
    pub fn changed(message: impl Into<String>) -> Outcome {
        Outcome::Changed {
            message: message.into(),
            diff: None,
            corrective: false,
        }
    }

    /// A drift repair with a message only.
    pub fn corrected(message: impl Into<String>) -> Outcome {
        Outcome::Changed {
            message: message.into(),
            diff: None,
            corrective: true,
        }
    }
}

/// The id a not-yet-created account resolves to under noop (see [`Context::ids`]).
pub const NOT_YET_CREATED: u32 = u32::MAX;

/// Everything a provider may use: the host, the run's mode and the node's key.
pub struct Context<'a> {
    /// All filesystem access goes through here.
    pub host: &'a Host,
    /// Report what would change; write nothing, run no mutating command.
    pub noop: bool,
    /// Whether a running systemd manages this root (false in a chroot, with `--root`, or in
    /// a container without systemd as PID 1): units can be enabled offline but not started.
    pub systemd: bool,
    /// Timeout for each command a provider runs (an `exec` resource has its own).
    pub command_timeout: Duration,
    key: Option<&'a EncryptionKeyPair>,
    accounts: RefCell<Option<Accounts>>,
    /// Per-run state of the package provider (one batched `apt-get install`).
    pub(crate) packages: RefCell<providers::package::Batch>,
    /// Drift noted by the resource being applied (see [`Context::note_drift`]).
    drift: RefCell<Option<String>>,
}

impl std::fmt::Debug for Context<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context")
            .field("root", &self.host.root())
            .field("noop", &self.noop)
            .field("systemd", &self.systemd)
            .finish_non_exhaustive()
    }
}

impl<'a> Context<'a> {
    /// A context for one run.
    pub fn new(host: &'a Host, noop: bool, key: Option<&'a EncryptionKeyPair>) -> Context<'a> {
        Context {
            host,
            noop,
            systemd: host.root() == std::path::Path::new("/")
                && std::path::Path::new("/run/systemd/system").is_dir(),
            command_timeout: Duration::from_secs(300),
            key,
            accounts: RefCell::new(None),
            packages: RefCell::new(providers::package::Batch::default()),
            drift: RefCell::new(None),
        }
    }

    /// Whether the root is not `/` (tools must be given their own `--root` / `--prefix`).
    pub fn in_root(&self) -> bool {
        self.host.root() != std::path::Path::new("/")
    }

    /// The root's users and groups, read once and re-read after [`Context::accounts_changed`].
    pub fn accounts(&self) -> anyhow::Result<Ref<'_, Accounts>> {
        if self.accounts.borrow().is_none() {
            *self.accounts.borrow_mut() = Some(Accounts::load(self.host)?);
        }
        Ok(Ref::map(self.accounts.borrow(), |a| {
            a.as_ref().expect("loaded above")
        }))
    }

    /// Call after changing users or groups, so the next lookup re-reads them.
    pub fn accounts_changed(&self) {
        *self.accounts.borrow_mut() = None;
    }

    /// uid and gid for an `owner` / `group` pair of a resource. Under noop, an account that
    /// does not exist yet (a `user` earlier in the run would create it) resolves to
    /// [`NOT_YET_CREATED`], which matches no real owner, so the resource reports what it would
    /// change instead of failing.
    pub fn ids(&self, owner: &str, group: &str) -> anyhow::Result<(u32, u32)> {
        let accounts = self.accounts()?;
        let missing = |what: &str, name: &str| {
            if self.noop {
                Ok(NOT_YET_CREATED)
            } else {
                Err(anyhow::anyhow!("unknown {what} {name:?}"))
            }
        };
        let uid = accounts
            .uid(owner)
            .map_or_else(|| missing("user", owner), Ok)?;
        let gid = accounts
            .gid(group)
            .map_or_else(|| missing("group", group), Ok)?;
        Ok((uid, gid))
    }

    /// [`Context::ids`] for a resource at `path`, refusing (THREATS F6) when `path` lies in the
    /// owner's home and that home is not a real directory owned by them: a home that is a
    /// symlink (to `/`, say) or that belongs to someone else is not the user's to receive files.
    pub fn ids_for_path(&self, path: &str, owner: &str, group: &str) -> anyhow::Result<(u32, u32)> {
        let ids = self.ids(owner, group)?;
        let home = self
            .accounts()?
            .user(owner)
            .filter(|u| u.uid != 0 && u.home != "/" && is_under(path, &u.home))
            .map(|u| (u.home.clone(), u.uid));
        if let Some((home, uid)) = home {
            match self.host.observe_dir(&home) {
                Ok(crate::host::DirState::Directory(inode)) if inode.uid != uid => anyhow::bail!(
                    "refusing to manage {path}: the home {home} of {owner} is owned by uid {}, not by {owner}",
                    inode.uid
                ),
                Ok(crate::host::DirState::Other(kind)) => anyhow::bail!(
                    "refusing to manage {path}: the home {home} of {owner} is a {kind}, not a directory"
                ),
                Err(crate::host::HostError::SymlinkInPath { .. }) => anyhow::bail!(
                    "refusing to manage {path}: the path to the home {home} of {owner} goes through a symlink"
                ),
                _ => {}
            }
        }
        Ok(ids)
    }

    /// Records drift on the resource being applied: a divergence the site does not ask to
    /// repair (privileged groups beyond the tier, say). It goes into that resource's event,
    /// whatever its status. Never pass sensitive text.
    pub fn note_drift(&self, message: impl Into<String>) {
        let message = message.into();
        let mut slot = self.drift.borrow_mut();
        *slot = Some(match slot.take() {
            Some(before) => format!("{before}; {message}"),
            None => message,
        });
    }

    /// Opens sensitive content sealed to this node. Call only at write time; never log,
    /// diff or store the result.
    pub fn open_sealed(&self, sealed: &SealedValue) -> anyhow::Result<Secret> {
        let key = self
            .key
            .ok_or_else(|| anyhow::anyhow!("sealed content, but this run has no node key"))?;
        steward_protocol::seal::open(sealed, key)
            .map_err(|e| anyhow::anyhow!("cannot open sealed content: {e}"))
    }
}

/// Limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// No new resource is started after this instant.
    pub deadline: Option<Instant>,
}

/// Applies every resource of `catalog` in dependency order and returns one event per resource,
/// in the order they were applied. `stop` is checked between resources.
pub fn apply(
    catalog: &Catalog,
    cx: &Context<'_>,
    limits: RunLimits,
    stop: &AtomicBool,
) -> Vec<ResourceEvent> {
    let order = Graph::build(&catalog.resources);
    // Every package of the catalog goes into one `apt-get install`.
    providers::package::plan_batch(catalog, cx);
    let mut events = Vec::with_capacity(catalog.resources.len());
    // Why each resource that must not run is held back.
    let mut blocked: HashMap<usize, String> = HashMap::new();
    let mut changed: HashSet<&ResourceId> = HashSet::new();
    // Under noop: the resources that come after one that would change, with its id. What they
    // need (an account, a directory, a unit file) may not exist yet, so a failure to check
    // them is not a failure of the real run.
    let mut after_would_change: HashMap<usize, &ResourceId> = HashMap::new();
    // Clones left as found (someone's own `~/code`, a symlink into another tree): nothing is
    // written beneath them either.
    let mut kept_clones: Vec<(&str, &ResourceId)> = Vec::new();
    for &i in &order.sequence {
        let resource = &catalog.resources[i];
        let started = Instant::now();
        let halt = if stop.load(Ordering::Relaxed) {
            Some("the agent is stopping".to_string())
        } else if limits.deadline.is_some_and(|d| started >= d) {
            Some("the run exceeded its time limit".to_string())
        } else {
            None
        };
        let inside_kept = resource.spec.paths().find_map(|path| {
            kept_clones
                .iter()
                .find(|(clone, _)| is_under(path, clone))
                .map(|(clone, id)| (path, *clone, *id))
        });
        let (status, message, diff, corrective) =
            if let Some(reason) = halt.or_else(|| blocked.get(&i).cloned()) {
                (ResourceStatus::Skipped, Some(reason), None, false)
            } else if let Some((path, clone, id)) = inside_kept {
                let message = format!(
                "{path} lies inside {clone}, which {id} left as found; nothing is written into it"
            );
                (ResourceStatus::Kept, Some(message), None, false)
            } else {
                let refresh = subscribes(&resource.spec)
                    .iter()
                    .any(|id| changed.contains(id));
                match providers::apply(&resource.spec, cx, refresh) {
                    Ok(Outcome::Unchanged) => (ResourceStatus::Unchanged, None, None, false),
                    Ok(Outcome::Changed {
                        message,
                        diff,
                        corrective,
                    }) => {
                        changed.insert(&resource.id);
                        let status = if cx.noop {
                            ResourceStatus::WouldChange
                        } else {
                            ResourceStatus::Changed
                        };
                        (status, Some(message), diff, corrective)
                    }
                    Ok(Outcome::Skipped(reason)) => {
                        (ResourceStatus::Skipped, Some(reason), None, false)
                    }
                    Ok(Outcome::Kept(reason)) => (ResourceStatus::Kept, Some(reason), None, false),
                    Ok(Outcome::Deferred(reason)) => {
                        (ResourceStatus::Deferred, Some(reason), None, false)
                    }
                    Err(error) => match after_would_change.get(&i) {
                        Some(first) if cx.noop => (
                            ResourceStatus::WouldChange,
                            Some(format!(
                                "would be applied after {first}, which would change first; \
                                 cannot be checked before that: {error:#}"
                            )),
                            None,
                            false,
                        ),
                        _ => (
                            ResourceStatus::Failed,
                            Some(format!("{error:#}")),
                            None,
                            false,
                        ),
                    },
                }
            };
        if status == ResourceStatus::Kept {
            if let ResourceSpec::GitClone(clone) = &resource.spec {
                kept_clones.push((&clone.path, &resource.id));
            }
        }
        if status == ResourceStatus::WouldChange {
            let first = after_would_change.get(&i).copied().unwrap_or(&resource.id);
            for &d in &order.dependents[i] {
                after_would_change.entry(d).or_insert(first);
            }
        }
        if status == ResourceStatus::Failed || blocked.contains_key(&i) {
            let reason = if status == ResourceStatus::Failed {
                format!("requires {} which failed", resource.id)
            } else {
                blocked[&i].clone()
            };
            for &d in &order.dependents[i] {
                blocked.entry(d).or_insert_with(|| reason.clone());
            }
        }
        events.push(ResourceEvent {
            resource: resource.id.clone(),
            status,
            message,
            diff,
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            corrective,
            drift: cx.drift.borrow_mut().take(),
        });
    }
    events
}

fn subscribes(spec: &ResourceSpec) -> &[ResourceId] {
    match spec {
        ResourceSpec::Service(s) => &s.subscribes,
        _ => &[],
    }
}

/// The apply order and who depends on whom.
struct Graph {
    /// Indexes into the catalog's resources, in apply order.
    sequence: Vec<usize>,
    /// For each resource, the resources with an edge from it.
    dependents: Vec<Vec<usize>>,
}

impl Graph {
    /// Explicit plus implicit edges; if the implicit ones would close a cycle (a catalog that
    /// orders things against the grain), only the explicit ones, which verification proved
    /// acyclic.
    fn build(resources: &[Resource]) -> Graph {
        let ids: HashMap<&ResourceId, usize> = resources
            .iter()
            .enumerate()
            .map(|(i, r)| (&r.id, i))
            .collect();
        let explicit = explicit_edges(resources, &ids);
        let mut all = explicit.clone();
        for (i, deps) in implicit_edges(resources, &ids).into_iter().enumerate() {
            all[i].extend(deps);
        }
        topological(resources.len(), &all).unwrap_or_else(|| {
            topological(resources.len(), &explicit)
                .expect("verified catalogs have acyclic requires")
        })
    }
}

/// For each resource, the set of resources it must come after.
type Prerequisites = Vec<BTreeSet<usize>>;

/// `ids`: each resource's index by id.
fn explicit_edges(resources: &[Resource], ids: &HashMap<&ResourceId, usize>) -> Prerequisites {
    resources
        .iter()
        .map(|r| {
            r.requires
                .iter()
                .filter_map(|id| ids.get(id).copied())
                .collect()
        })
        .collect()
}

fn implicit_edges(resources: &[Resource], ids: &HashMap<&ResourceId, usize>) -> Prerequisites {
    let mut groups: HashMap<&str, usize> = HashMap::new();
    let mut users: HashMap<&str, usize> = HashMap::new();
    let mut homes: Vec<(&str, usize)> = Vec::new();
    let mut dirs: HashMap<&str, usize> = HashMap::new();
    for (i, r) in resources.iter().enumerate() {
        match &r.spec {
            ResourceSpec::Group(g) => {
                groups.insert(&g.name, i);
            }
            ResourceSpec::User(u) => {
                users.insert(&u.name, i);
                homes.push((&u.home, i));
            }
            ResourceSpec::Directory(d) => {
                dirs.insert(&d.path, i);
            }
            _ => {}
        }
    }
    resources
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let mut before = BTreeSet::new();
            let (owners, group_names): (Vec<&str>, Vec<&str>) = match &r.spec {
                ResourceSpec::User(u) => (vec![], u.groups.iter().map(String::as_str).collect()),
                ResourceSpec::File(f) => (vec![f.owner.as_str()], vec![f.group.as_str()]),
                ResourceSpec::Directory(d) => (vec![d.owner.as_str()], vec![d.group.as_str()]),
                ResourceSpec::Symlink(s) => (vec![s.owner.as_str()], vec![s.group.as_str()]),
                ResourceSpec::GitClone(g) => (vec![g.user.as_str()], vec![]),
                ResourceSpec::Exec(e) => (e.user.as_deref().into_iter().collect(), vec![]),
                _ => (vec![], vec![]),
            };
            // A service comes after what it subscribes to, so a change there can restart it.
            before.extend(subscribes(&r.spec).iter().filter_map(|id| ids.get(id)));
            before.extend(owners.iter().filter_map(|o| users.get(o)));
            before.extend(group_names.iter().filter_map(|g| groups.get(g)));
            for path in r.spec.paths() {
                // Every ancestor directory resource, and the user whose home holds the path.
                let mut p = path;
                while let Some(cut) = p.rfind('/') {
                    p = &p[..cut];
                    if let Some(&d) = dirs.get(if p.is_empty() { "/" } else { p }) {
                        before.insert(d);
                    }
                    if p.is_empty() {
                        break;
                    }
                }
                if !matches!(r.spec, ResourceSpec::User(_)) {
                    for &(home, u) in &homes {
                        if path == home || is_under(path, home) {
                            before.insert(u);
                        }
                    }
                }
            }
            before.remove(&i);
            before
        })
        .collect()
}

fn is_under(path: &str, dir: &str) -> bool {
    path.strip_prefix(dir)
        .is_some_and(|rest| rest.starts_with('/'))
}

/// Kahn's algorithm, smallest index first among the ready ones; `None` on a cycle.
fn topological(n: usize, before: &Prerequisites) -> Option<Graph> {
    let mut dependents = vec![Vec::new(); n];
    let mut waiting: Vec<usize> = before.iter().map(BTreeSet::len).collect();
    for (i, deps) in before.iter().enumerate() {
        for &d in deps {
            dependents[d].push(i);
        }
    }
    let mut ready: BTreeSet<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
    let mut sequence = Vec::with_capacity(n);
    while let Some(i) = ready.pop_first() {
        sequence.push(i);
        for &d in &dependents[i] {
            waiting[d] -= 1;
            if waiting[d] == 0 {
                ready.insert(d);
            }
        }
    }
    (sequence.len() == n).then_some(Graph {
        sequence,
        dependents,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use steward_protocol::{
        DirectorySpec, FileContent, FileSpec, GroupSpec, Mode, Replace, ServiceSpec, ServiceState,
        UserEnsure, UserSpec,
    };

    fn file(path: &str, owner: &str) -> Resource {
        Resource::new(ResourceSpec::File(FileSpec {
            path: path.into(),
            owner: owner.into(),
            group: owner.into(),
            mode: Mode(0o644),
            content: FileContent::Text(String::new()),
            replace: Replace::Always,
            backup: false,
        }))
    }

    fn dir(path: &str) -> Resource {
        Resource::new(ResourceSpec::Directory(DirectorySpec {
            path: path.into(),
            owner: "root".into(),
            group: "root".into(),
            mode: Mode(0o755),
            replace: Default::default(),
        }))
    }

    fn user(name: &str, groups: &[&str]) -> Resource {
        Resource::new(ResourceSpec::User(UserSpec {
            name: name.into(),
            uid: None,
            shell: "/bin/bash".into(),
            home: format!("/home/{name}"),
            home_mode: Mode(0o700),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            comment: None,
            lock_at_creation: true,
            ensure: UserEnsure::Present,
            privileged_groups: Vec::new(),
            revoke_groups: Vec::new(),
            enforce: Vec::new(),
            tier: None,
        }))
    }

    fn group(name: &str) -> Resource {
        Resource::new(ResourceSpec::Group(GroupSpec {
            name: name.into(),
            gid: None,
            system: false,
        }))
    }

    fn service(name: &str, subscribes: &[&Resource]) -> Resource {
        Resource::new(ResourceSpec::Service(ServiceSpec {
            name: name.into(),
            enable: true,
            ensure: ServiceState::Running,
            subscribes: subscribes.iter().map(|r| r.id.clone()).collect(),
            restart: Default::default(),
        }))
    }

    fn order(resources: &[Resource]) -> Vec<&str> {
        Graph::build(resources)
            .sequence
            .iter()
            .map(|&i| resources[i].id.as_str())
            .collect()
    }

    #[test]
    fn implicit_edges_put_groups_users_parents_and_subscriptions_first() {
        let unit_file = file("/etc/systemd/system/t3.service", "root");
        let resources = vec![
            service("t3.service", &[&unit_file]),
            file("/home/emo/.config/app/x.json", "emo"),
            dir("/home/emo/.config/app"),
            dir("/home/emo/.config"),
            user("emo", &["devs"]),
            group("devs"),
            unit_file.clone(),
        ];
        let seq = order(&resources);
        let pos = |id: &str| seq.iter().position(|s| *s == id).unwrap();
        assert!(pos("group:devs") < pos("user:emo"));
        assert!(pos("user:emo") < pos("directory:/home/emo/.config"));
        assert!(pos("directory:/home/emo/.config") < pos("directory:/home/emo/.config/app"));
        assert!(pos("directory:/home/emo/.config/app") < pos("file:/home/emo/.config/app/x.json"));
        assert!(pos("file:/etc/systemd/system/t3.service") < pos("service:t3.service"));
    }

    #[test]
    fn ties_keep_the_catalog_order_and_explicit_edges_win_over_a_contrary_implicit_one() {
        let a = dir("/srv/a");
        let b = dir("/srv/b");
        assert_eq!(
            order(&[a.clone(), b.clone()]),
            ["directory:/srv/a", "directory:/srv/b"]
        );
        // The parent explicitly requires its child: the implicit parent-first edge would close a
        // cycle, so only the explicit edges are used.
        let child = dir("/srv/p/c");
        let parent = dir("/srv/p").requiring(child.id.clone());
        assert_eq!(
            order(&[parent, child]),
            ["directory:/srv/p/c", "directory:/srv/p"]
        );
    }

    #[test]
    fn dependents_are_transitive_through_implicit_edges() {
        let resources = vec![
            user("emo", &[]),
            dir("/home/emo/code"),
            file("/home/emo/code/x", "emo"),
        ];
        let graph = Graph::build(&resources);
        // user:emo → directory → file.
        assert!(graph.dependents[0].contains(&1));
        assert!(graph.dependents[1].contains(&2));
    }
}
