//! The typed site: what the loader produces from `roster.yaml`, `tiers.yaml`, `site.yaml` and
//! `files/**`, and what [`crate::compile`] consumes. Pure data; no I/O.
//!
//! Every item that a later error may need to point at carries a [`Loc`] (file and 1-based line),
//! so errors found at compile time (a tier that disagrees with Vault, a missing Vault key, a
//! rendered path with `..`) still name the file and line where the admin has to look.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;
use steward_protocol::Mode;

/// A place in the site: file name relative to the site root (`roster.yaml`, `files/x.j2`) and
/// 1-based line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Loc {
    /// File, relative to the site directory.
    pub file: String,
    /// 1-based line.
    pub line: u32,
}

impl Loc {
    /// A location.
    pub fn new(file: impl Into<String>, line: u32) -> Self {
        Loc {
            file: file.into(),
            line,
        }
    }
}

impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.line)
    }
}

/// One validation or compile error: `FILE:LINE: field: message`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteError {
    /// Where.
    pub loc: Loc,
    /// Dotted field path, e.g. `users.emo.tier` (empty for syntax errors).
    pub field: String,
    /// Lowercase message, no trailing period; says the fix when known.
    pub message: String,
}

impl SiteError {
    /// An error at `loc` about `field`.
    pub fn new(loc: Loc, field: impl Into<String>, message: impl Into<String>) -> Self {
        SiteError {
            loc,
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for SiteError {
    /// `FILE:LINE: field: message`, always one line: control characters that came from the
    /// site (a unit name with a newline, say) are written as escapes, never raw.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.loc)?;
        if !self.field.is_empty() {
            write_escaped(f, &self.field)?;
            f.write_str(": ")?;
        }
        write_escaped(f, &self.message)
    }
}

/// `text` with every control character escaped (`\n`, `\u{1b}`).
fn write_escaped(f: &mut fmt::Formatter<'_>, text: &str) -> fmt::Result {
    for c in text.chars() {
        if c.is_control() {
            write!(f, "{}", c.escape_default())?;
        } else {
            f.write_fmt(format_args!("{c}"))?;
        }
    }
    Ok(())
}

impl std::error::Error for SiteError {}

/// All errors found in a site, sorted by file and line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SiteErrors(pub Vec<SiteError>);

impl fmt::Display for SiteErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for SiteErrors {}

/// A loaded, validated site.
#[derive(Debug, Clone)]
pub struct Site {
    /// `roster.yaml`.
    pub roster: Roster,
    /// `tiers.yaml`, by tier name.
    pub tiers: BTreeMap<String, Tier>,
    /// `site.yaml`.
    pub config: SiteConfig,
    /// `files/**`: path relative to `files/` (e.g. `kubeconfig.yaml.j2`) → content.
    pub files: BTreeMap<String, String>,
    /// SHA-256 (hex) over every input file (name and bytes), for catalog provenance and caching.
    pub hash: String,
}

/// `roster.yaml`: the people.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    /// Users in file order.
    pub users: Vec<RosterUser>,
}

/// Lifecycle state of a roster user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum UserState {
    /// Provisioned (the default).
    Present,
    /// Reversible cut: account locked, units disabled, dropped from generated maps.
    Offboarded,
    /// Home archived, then the account removed.
    Purged,
}

impl UserState {
    /// Wire/roster name.
    pub fn as_str(self) -> &'static str {
        match self {
            UserState::Present => "present",
            UserState::Offboarded => "offboarded",
            UserState::Purged => "purged",
        }
    }
}

/// Where a user's code lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeLayout {
    /// The infra clone is `~/code` itself (default).
    Single,
    /// `~/code` is a directory of clones: `~/code/infra` plus each of `repos`.
    Workspace,
}

impl CodeLayout {
    /// Roster name.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeLayout::Single => "single",
            CodeLayout::Workspace => "workspace",
        }
    }
}

/// One person: a `users.<os_user>` entry of the roster.
#[derive(Debug, Clone)]
pub struct RosterUser {
    /// The `os_user` key (a valid Linux user name).
    pub name: String,
    /// Line of the key.
    pub loc: Loc,
    /// Line of each field that was given, by field name (for errors found later).
    pub field_lines: BTreeMap<String, u32>,
    /// SSO user name (unique).
    pub authentik_user: String,
    /// Key in Vault `k8s_users`.
    pub k8s_user: String,
    /// Tier name (must exist in `tiers.yaml`).
    pub tier: String,
    /// Kubernetes namespaces (required by tiers with `requires_namespaces`).
    pub namespaces: Vec<String>,
    /// Code layout.
    pub code_layout: CodeLayout,
    /// Extra repositories for the workspace layout.
    pub repos: Vec<String>,
    /// Lifecycle state.
    pub state: UserState,
    /// Hostname globs where this user is managed; empty = every host whose class manages users.
    pub hosts: Vec<String>,
    /// Login shell (absolute); default from `site.yaml` `users.shell`.
    pub shell: Option<String>,
    /// Pinned uid (>= 1000 unless the tier allows lower).
    pub uid: Option<u32>,
    /// Extra supplementary groups (privileged ones only if the tier grants them).
    pub groups: Vec<String>,
    /// Groups removed from the existing account (the explicit way to tighten after a
    /// demotion); never one the user is granted.
    pub revoke_groups: Vec<String>,
    /// Account attributes corrected on an existing account, on top of `site.yaml`
    /// `users.enforce`.
    pub enforce: Vec<steward_protocol::UserAttribute>,
    /// Pinned service port (inside the site's port range, unique).
    pub port: Option<u16>,
    /// Home directory; must be `/home/<name>` or below it. Default `/home/<name>`.
    pub home: Option<String>,
    /// Display name (GECOS).
    pub full_name: Option<String>,
    /// Free-form per-user flags for templates (`user.flags.ha`).
    pub flags: BTreeMap<String, Value>,
}

impl RosterUser {
    /// Location of `field` if it was given, else of the user's key.
    pub fn loc_of(&self, field: &str) -> Loc {
        match self.field_lines.get(field) {
            Some(line) => Loc::new(self.loc.file.clone(), *line),
            None => self.loc.clone(),
        }
    }

    /// The home directory (given or `/home/<name>`).
    pub fn home_dir(&self) -> String {
        self.home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", self.name))
    }
}

/// A tier: the profile a person's RBAC tier gives them (`tiers.yaml`).
#[derive(Debug, Clone)]
pub struct Tier {
    /// Tier name.
    pub name: String,
    /// Line of the key.
    pub loc: Loc,
    /// Human description.
    pub description: Option<String>,
    /// Supplementary groups the tier adds (never removed).
    pub groups: Vec<String>,
    /// Privileged groups (`sudo`, `root`, `wheel`, `docker`, `adm`) this tier explicitly grants.
    pub privileged_groups: Vec<String>,
    /// Whether roster users of this tier may pin a uid below 1000.
    pub allow_low_uid: bool,
    /// Whether users of this tier must list `namespaces`.
    pub requires_namespaces: bool,
    /// Names of user bundles (`site.yaml` `bundles`) every user of this tier gets, in order.
    pub bundles: Vec<String>,
    /// Free-form values for templates (`tier.vars.kube_scope`).
    pub vars: BTreeMap<String, Value>,
}

/// Groups that are never granted unless a tier lists them in `privileged_groups`: the one list,
/// shared with the agent, with how it was chosen in [`steward_protocol::privileged`].
pub use steward_protocol::privileged::{is_privileged, PRIVILEGED_GROUPS};

/// `site.yaml`.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Host classes, in file order; a node's class is the first whose globs match.
    pub classes: Vec<HostClass>,
    /// Defaults for user accounts.
    pub users: UserDefaults,
    /// Range for per-user service ports (sticky allocation), if the site uses ports.
    pub ports: Option<PortRange>,
    /// Where tier/role data lives in Vault.
    pub vault: VaultSettings,
    /// Catalog lifetime.
    pub catalog_expires_after_secs: i64,
    /// Where purged homes are archived.
    pub archive_dir: String,
    /// A purge ends the user's sessions and processes first (default); when false, a purge of
    /// a user who still has processes is deferred.
    pub terminate_sessions: bool,
    /// Free-form values for templates (`site.cluster_url`).
    pub vars: BTreeMap<String, Value>,
    /// Named resource bundles used by classes (host bundles) and tiers (user bundles).
    pub bundles: BTreeMap<String, Bundle>,
}

/// A host class: hostname globs and what such hosts get.
#[derive(Debug, Clone)]
pub struct HostClass {
    /// Class name.
    pub name: String,
    /// Line of the key.
    pub loc: Loc,
    /// Hostname globs (`*` and `?`).
    pub hosts: Vec<String>,
    /// Whether roster users are managed on such hosts.
    pub manage_users: bool,
    /// Host bundles, in order.
    pub bundles: Vec<String>,
}

/// Defaults for roster accounts.
#[derive(Debug, Clone)]
pub struct UserDefaults {
    /// Default login shell.
    pub shell: String,
    /// Mode of a new home.
    pub home_mode: Mode,
    /// Lock new accounts (`passwd -l`).
    pub lock_at_creation: bool,
    /// Resource ids every user account requires (e.g. `package:zsh`).
    pub requires: Vec<String>,
    /// Attributes corrected on existing accounts of every user (default: none; everything but
    /// groups is then set only when Steward creates the account).
    pub enforce: Vec<steward_protocol::UserAttribute>,
}

/// Inclusive port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub start: u16,
    /// Last port (inclusive).
    pub end: u16,
}

/// Where the compiler finds role data in Vault.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// KV path holding the roles map, e.g. `secret/platform`.
    pub roles_path: String,
    /// Key of the roles map at that path, e.g. `k8s_users`; each entry has `role` and optional
    /// `namespaces`.
    pub roles_key: String,
}

/// A named list of resource templates.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// Bundle name.
    pub name: String,
    /// Line of the key.
    pub loc: Loc,
    /// Resource templates, in order.
    pub resources: Vec<ResourceTemplate>,
}

/// One resource template: `- <type>: { fields }` plus optional `when`, `for_each`, `requires`.
///
/// String fields are minijinja templates rendered with the bundle's context; roster values
/// enter only as context data, so `{{ … }}` inside a roster value stays literal.
#[derive(Debug, Clone)]
pub struct ResourceTemplate {
    /// Line of the list item.
    pub loc: Loc,
    /// Resource type (`file`, `git_clone`, ...), one of [`RESOURCE_SCHEMAS`].
    pub kind: String,
    /// Fields as given (already checked against the kind's schema), with their lines.
    pub fields: BTreeMap<String, (u32, Value)>,
    /// minijinja expression; the resource exists only where it is true.
    pub when: Option<String>,
    /// minijinja expression yielding a list; one resource per element, bound to `item`.
    pub for_each: Option<String>,
    /// Resource ids (templated) this one requires.
    pub requires: Vec<String>,
}

/// Type of a resource-template field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// A templated string.
    Str,
    /// An integer.
    Int,
    /// A boolean.
    Bool,
    /// A list of templated strings.
    StrList,
    /// A map of string to templated string.
    StrMap,
    /// One of the given words.
    Enum(&'static [&'static str]),
}

/// One field of a resource type's template schema.
#[derive(Debug, Clone, Copy)]
pub struct FieldSchema {
    /// Field name.
    pub name: &'static str,
    /// Type.
    pub kind: FieldKind,
    /// Whether the field must be given.
    pub required: bool,
}

const fn field(name: &'static str, kind: FieldKind, required: bool) -> FieldSchema {
    FieldSchema {
        name,
        kind,
        required,
    }
}

use FieldKind::{Bool, Enum, Int, Str, StrList, StrMap};

/// Template schema of every resource type that may appear in a bundle. (`user` resources come
/// from the roster, not from bundles.) `when`, `for_each` and `requires` are allowed on all.
///
/// Defaults applied by the compiler: `owner`/`group` are the user in a user bundle and `root`
/// in a host bundle; file mode `0644`, directory mode `0755`; file `replace: always`;
/// directory `replace: always`, except in a user bundle for a directory inside the user's
/// home, where an existing directory is the person's and the default is `if_absent`;
/// service `restart: immediately` (`when_idle` takes its `user` from the unit instance,
/// `name@user.service`, unless given);
/// symlink `replace: if_absent`; service `enable: true`, `ensure: running`; git_clone `user` is
/// the bundle's user (root in a host bundle); exec `timeout_secs: 300`.
/// A file takes exactly one of `template` (a file under `files/`, rendered), `source` (a file
/// under `files/`, verbatim) or `content` (inline, rendered). `replace: if_marked` needs `marker`.
pub const RESOURCE_SCHEMAS: &[(&str, &[FieldSchema])] = &[
    ("package", &[field("name", Str, true)]),
    (
        "group",
        &[
            field("name", Str, true),
            field("gid", Int, false),
            field("system", Bool, false),
        ],
    ),
    (
        "file",
        &[
            field("path", Str, true),
            field("owner", Str, false),
            field("group", Str, false),
            field("mode", Str, false),
            field("template", Str, false),
            field("source", Str, false),
            field("content", Str, false),
            field(
                "replace",
                Enum(&["always", "if_absent", "if_marked", "if_stale"]),
                false,
            ),
            field("marker", Str, false),
            field("current", Str, false),
            field("backup", Bool, false),
            field("sensitive", Bool, false),
        ],
    ),
    (
        "directory",
        &[
            field("path", Str, true),
            field("owner", Str, false),
            field("group", Str, false),
            field("mode", Str, false),
            field("replace", Enum(&["always", "if_absent"]), false),
        ],
    ),
    (
        "symlink",
        &[
            field("path", Str, true),
            field("target", Str, true),
            field("owner", Str, false),
            field("group", Str, false),
            field("replace", Enum(&["if_absent", "always"]), false),
        ],
    ),
    (
        "service",
        &[
            field("name", Str, true),
            field("enable", Bool, false),
            field("ensure", Enum(&["running", "stopped"]), false),
            field("subscribes", StrList, false),
            field("restart", Enum(&["immediately", "when_idle"]), false),
            field("user", Str, false),
            field("max_defer", Str, false),
        ],
    ),
    (
        "git_clone",
        &[
            field("path", Str, true),
            field("url", Str, true),
            field("user", Str, false),
            field("branch", Str, false),
            field("config", StrMap, false),
            field("remotes", StrMap, false),
            field("refresh", Bool, false),
            field("migrate_from", Str, false),
        ],
    ),
    (
        "swap",
        &[field("path", Str, true), field("size_mib", Int, true)],
    ),
    (
        "exec",
        &[
            field("name", Str, true),
            field("command", StrList, true),
            field("user", Str, false),
            field("cwd", Str, false),
            field("creates", Str, false),
            field("unless", StrList, false),
            field("timeout_secs", Int, false),
            field("env", StrMap, false),
        ],
    ),
];

/// The schema of a resource type, if it may appear in a bundle.
pub fn resource_schema(kind: &str) -> Option<&'static [FieldSchema]> {
    RESOURCE_SCHEMAS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, s)| *s)
}

/// Vault data given to the compiler: KV path → (data, version). The same shape as the
/// `vault-data.yaml` file used offline: `{ "secret/platform": { "k8s_users": {...} } }`.
///
/// Its `Debug` shows paths, keys and versions, never values: they are secrets.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct VaultData {
    /// Data per KV path (path as written in the site, e.g. `secret/openclaw`).
    pub paths: BTreeMap<String, VaultSecret>,
}

/// One KV v2 secret. `Debug` prints its keys and version only.
#[derive(Clone, Default, PartialEq)]
pub struct VaultSecret {
    /// Its data map.
    pub data: serde_json::Map<String, Value>,
    /// KV v2 metadata version (0 when read from a file).
    pub version: u64,
}

impl fmt::Debug for VaultSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultSecret")
            .field("keys", &self.data.keys().collect::<Vec<_>>())
            .field("version", &self.version)
            .finish()
    }
}

/// What the server remembers for a node between compiles, passed into [`crate::compile`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    /// Sticky port allocations: user → port.
    pub ports: BTreeMap<String, u16>,
    /// Users managed on this node before, with what is needed to offboard them.
    pub managed_users: BTreeMap<String, ManagedUser>,
}

/// A user the node has managed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedUser {
    /// Last known lifecycle state.
    pub state: UserState,
    /// Service units that were managed for this user (disabled on offboarding).
    pub services: Vec<String>,
}
