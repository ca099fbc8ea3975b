//! The catalog's vocabulary: every resource type the agent converges (DESIGN §4).
//!
//! A [`Resource`] is an id (`type:name`), the ids it `requires`, and a typed [`ResourceSpec`].
//! The id must agree with the spec ([`ResourceSpec::id`]); [`crate::catalog::Catalog::validate`]
//! checks that, along with unique ids, known `requires`, absence of cycles and path hygiene.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::ResourceId;
use crate::seal::SealedValue;
use crate::secret::Secret;

/// One resource of a catalog.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resource {
    /// `type:name`; must equal `spec.id()`.
    pub id: ResourceId,
    /// Explicit ordering edges: these resources are applied first, and a failure there skips this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub requires: Vec<ResourceId>,
    /// What to converge.
    pub spec: ResourceSpec,
}

impl Resource {
    /// A resource whose id is derived from its spec.
    pub fn new(spec: ResourceSpec) -> Self {
        Resource {
            id: spec.id(),
            requires: Vec::new(),
            spec,
        }
    }

    /// Adds a `requires` edge (builder style).
    pub fn requiring(mut self, id: ResourceId) -> Self {
        if !self.requires.contains(&id) {
            self.requires.push(id);
        }
        self
    }
}

/// The typed body of a resource, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResourceSpec {
    /// A Debian package (all missing packages are installed in one `apt-get` call).
    Package(PackageSpec),
    /// A group.
    Group(GroupSpec),
    /// A user account.
    User(UserSpec),
    /// A regular file.
    File(FileSpec),
    /// A directory.
    Directory(DirectorySpec),
    /// A symbolic link.
    Symlink(SymlinkSpec),
    /// A systemd unit's enablement and run state.
    Service(ServiceSpec),
    /// A git clone owned by a user.
    GitClone(GitCloneSpec),
    /// A swap file.
    Swap(SwapSpec),
    /// A guarded command (escape hatch).
    Exec(ExecSpec),
}

impl ResourceSpec {
    /// The resource type name as used in ids (`user`, `git_clone`, ...).
    pub fn kind(&self) -> &'static str {
        match self {
            ResourceSpec::Package(_) => "package",
            ResourceSpec::Group(_) => "group",
            ResourceSpec::User(_) => "user",
            ResourceSpec::File(_) => "file",
            ResourceSpec::Directory(_) => "directory",
            ResourceSpec::Symlink(_) => "symlink",
            ResourceSpec::Service(_) => "service",
            ResourceSpec::GitClone(_) => "git_clone",
            ResourceSpec::Swap(_) => "swap",
            ResourceSpec::Exec(_) => "exec",
        }
    }

    /// The name part of the id: a package/group/user/unit/exec name, or a path.
    pub fn name(&self) -> &str {
        match self {
            ResourceSpec::Package(s) => &s.name,
            ResourceSpec::Group(s) => &s.name,
            ResourceSpec::User(s) => &s.name,
            ResourceSpec::File(s) => &s.path,
            ResourceSpec::Directory(s) => &s.path,
            ResourceSpec::Symlink(s) => &s.path,
            ResourceSpec::Service(s) => &s.name,
            ResourceSpec::GitClone(s) => &s.path,
            ResourceSpec::Swap(s) => &s.path,
            ResourceSpec::Exec(s) => &s.name,
        }
    }

    /// `kind:name`.
    pub fn id(&self) -> ResourceId {
        ResourceId::new(self.kind(), self.name())
    }

    /// Calls `visit(field, text)` for every text field other than file content: names,
    /// owners, groups, shells, URLs, commands, config keys and values, stopping at the first
    /// `Err`. None of them may hold control characters (a newline in a unit name, a passwd
    /// field or a git config value is an injection). A visitor, not a `Vec`, because catalog
    /// validation runs on every compile and every verification.
    pub fn visit_text_fields<E>(
        &self,
        mut visit: impl FnMut(&'static str, &str) -> Result<(), E>,
    ) -> Result<(), E> {
        visit("name", self.name())?;
        match self {
            ResourceSpec::Package(_) | ResourceSpec::Group(_) | ResourceSpec::Swap(_) => {}
            ResourceSpec::User(s) => {
                visit("shell", &s.shell)?;
                visit("home", &s.home)?;
                for g in s.groups.iter().chain(&s.privileged_groups) {
                    visit("groups", g)?;
                }
                for g in &s.revoke_groups {
                    visit("revoke_groups", g)?;
                }
                if let Some(t) = &s.tier {
                    visit("tier", t)?;
                }
                if let Some(c) = &s.comment {
                    visit("comment", c)?;
                }
            }
            ResourceSpec::File(s) => {
                visit("owner", &s.owner)?;
                visit("group", &s.group)?;
                match &s.replace {
                    Replace::IfMarked { marker } => visit("marker", marker)?,
                    Replace::IfStale { marker, current } => {
                        visit("marker", marker)?;
                        visit("current", current)?;
                    }
                    Replace::Always | Replace::IfAbsent => {}
                }
            }
            ResourceSpec::Directory(s) => {
                visit("owner", &s.owner)?;
                visit("group", &s.group)?;
            }
            ResourceSpec::Symlink(s) => {
                visit("target", &s.target)?;
                visit("owner", &s.owner)?;
                visit("group", &s.group)?;
            }
            ResourceSpec::Service(s) => {
                for r in &s.subscribes {
                    visit("subscribes", r.as_str())?;
                }
                if let Restart::WhenIdle { user, .. } = &s.restart {
                    visit("user", user)?;
                }
            }
            ResourceSpec::GitClone(s) => {
                visit("url", &s.url)?;
                visit("user", &s.user)?;
                if let Some(b) = &s.branch {
                    visit("branch", b)?;
                }
                for (k, v) in s.config.iter().chain(&s.remotes) {
                    visit("config", k)?;
                    visit("config", v)?;
                }
            }
            ResourceSpec::Exec(s) => {
                for a in &s.command {
                    visit("command", a)?;
                }
                for a in s.unless.iter().flatten() {
                    visit("unless", a)?;
                }
                if let Some(u) = &s.user {
                    visit("user", u)?;
                }
                for (k, v) in &s.env {
                    visit("env", k)?;
                    visit("env", v)?;
                }
            }
        }
        Ok(())
    }

    /// Whether `id` is this spec's `kind:name`, without building the id string.
    pub fn has_id(&self, id: &ResourceId) -> bool {
        id.as_str()
            .split_once(':')
            .is_some_and(|(kind, name)| kind == self.kind() && name == self.name())
    }

    /// Filesystem paths this resource manages or reads (for path validation and implicit
    /// edges): at most two, without allocating.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        let pair: [Option<&str>; 2] = match self {
            ResourceSpec::File(s) => [Some(&s.path), None],
            ResourceSpec::Directory(s) => [Some(&s.path), None],
            ResourceSpec::Symlink(s) => [Some(&s.path), None],
            ResourceSpec::GitClone(s) => [Some(&s.path), s.migrate_from.as_deref()],
            ResourceSpec::Swap(s) => [Some(&s.path), None],
            ResourceSpec::User(s) => [
                Some(&s.home),
                match &s.ensure {
                    UserEnsure::Purged { archive_dir, .. } => Some(archive_dir.as_str()),
                    _ => None,
                },
            ],
            ResourceSpec::Exec(s) => [s.cwd.as_deref(), s.creates.as_deref()],
            _ => [None, None],
        };
        pair.into_iter().flatten()
    }
}

/// A file mode (permission bits), written as an octal string such as `"0600"` on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(pub u32);

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Mode {
    /// Parses `"0600"` / `"600"` / `"0o600"`; at most `0o7777`.
    pub fn parse(text: &str) -> Option<Mode> {
        let digits = text.strip_prefix("0o").unwrap_or(text);
        if digits.is_empty()
            || digits.len() > 5
            || !digits.bytes().all(|b| (b'0'..=b'7').contains(&b))
        {
            return None;
        }
        let value = u32::from_str_radix(digits, 8).ok()?;
        (value <= 0o7777).then_some(Mode(value))
    }
}

impl Serialize for Mode {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mode {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Mode::parse(&text).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "invalid mode {text:?}: expected octal such as \"0644\""
            ))
        })
    }
}

/// A Debian package that must be installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackageSpec {
    /// Package name.
    pub name: String,
}

/// A group that must exist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupSpec {
    /// Group name.
    pub name: String,
    /// Fixed gid, if the site pins one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    /// Create as a system group.
    #[serde(default)]
    pub system: bool,
}

/// What the agent does with an account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", deny_unknown_fields)]
pub enum UserEnsure {
    /// The account exists (created locked when `lock_at_creation`); additive-only.
    Present,
    /// Offboarded: the account is locked; nothing is deleted (reversible).
    Locked,
    /// Purged: the home is archived as a tarball into `archive_dir`, then the account is removed.
    Purged {
        /// Directory that receives `<user>-<timestamp>.tar.gz`.
        archive_dir: String,
        /// The user's sessions and processes are ended first (`loginctl terminate-user`, a
        /// bounded wait, then SIGKILL of what is left). When false, a purge of a user who still
        /// has processes is deferred instead.
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        terminate_sessions: bool,
    },
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

fn is_default<T: Default + PartialEq>(value: &T) -> bool {
    *value == T::default()
}

/// An account attribute that Steward sets at creation and, on an existing account, only when the
/// site enforces it (`enforce: [shell]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserAttribute {
    /// The login shell.
    Shell,
    /// The GECOS comment (full name).
    Comment,
}

impl UserAttribute {
    /// Every attribute, for error messages and docs.
    pub const ALL: [UserAttribute; 2] = [UserAttribute::Shell, UserAttribute::Comment];

    /// The name used in sites and catalogs.
    pub fn as_str(self) -> &'static str {
        match self {
            UserAttribute::Shell => "shell",
            UserAttribute::Comment => "comment",
        }
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserSpec {
    /// Login name.
    pub name: String,
    /// Expected uid: assigned at creation; a mismatch with passwd fails the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Login shell.
    pub shell: String,
    /// Home directory (always `/home/<name>` for roster users).
    pub home: String,
    /// Mode of the home directory, applied only at creation.
    pub home_mode: Mode,
    /// Supplementary groups: added, never removed. Never a privileged group
    /// ([`crate::privileged`]): those travel in `privileged_groups`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// Privileged groups the user's tier grants explicitly: added like `groups`. Any other
    /// privileged group the account holds is reported as drift, never removed silently.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub privileged_groups: Vec<String>,
    /// Groups removed from the account if it holds them: the site's explicit, audited way to
    /// tighten (roster `revoke_groups`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub revoke_groups: Vec<String>,
    /// Attributes corrected on an existing account; every other attribute is set only when
    /// the account is created.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub enforce: Vec<UserAttribute>,
    /// The user's tier, for messages (drift names it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tier: Option<String>,
    /// GECOS comment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    /// Lock the password at creation (`passwd -l`); an existing account is never re-locked.
    #[serde(default)]
    pub lock_at_creation: bool,
    /// Present, locked (offboarded) or purged.
    pub ensure: UserEnsure,
}

/// The content of a managed file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum FileContent {
    /// Plain text, may be shown in diffs and reports.
    Text(String),
    /// Sensitive content sealed to the node's X25519 key; opened only at write time.
    Sealed(SealedValue),
    /// Sensitive content before sealing. Exists only in the server's memory between compile
    /// and sealing: it serializes as `"<redacted>"` and is never accepted from the wire.
    #[serde(skip_deserializing)]
    Secret(Secret),
}

impl FileContent {
    /// Whether this content is sensitive (sealed or not yet sealed).
    pub fn is_sensitive(&self) -> bool {
        !matches!(self, FileContent::Text(_))
    }
}

/// When an existing file may be replaced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Replace {
    /// Always converge content.
    Always,
    /// Write only when the file does not exist; an existing file is left alone.
    IfAbsent,
    /// Replace only an existing file that contains `marker` (e.g. a generated-file header).
    IfMarked {
        /// Text whose presence marks the file as ours.
        marker: String,
    },
    /// Replace only an existing file that carries Steward's `marker` but not `current`: a file
    /// Steward wrote for another variant (say, another tier's kubeconfig). A file with `current`
    /// (the person's edits of this variant's file) or without `marker` is left as found.
    IfStale {
        /// Text present in every variant Steward writes.
        marker: String,
        /// Text present only in this variant.
        current: String,
    },
}

/// A regular file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSpec {
    /// Absolute, normalized path.
    pub path: String,
    /// Owner name (resolved per run).
    pub owner: String,
    /// Group name (resolved per run).
    pub group: String,
    /// Permission bits, enforced on existing files too (except `replace: if_absent`, which
    /// leaves an existing file entirely as found).
    pub mode: Mode,
    /// What the file holds.
    pub content: FileContent,
    /// Replacement policy.
    pub replace: Replace,
    /// Keep a copy of the previous content before replacing it.
    #[serde(default)]
    pub backup: bool,
}

/// Whether an existing directory's mode and owner are converged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DirectoryReplace {
    /// Mode and owner are enforced on an existing directory.
    #[default]
    Always,
    /// Created with mode and owner when absent; an existing directory is left as found
    /// (reported `kept` when it differs).
    IfAbsent,
}

/// A directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectorySpec {
    /// Absolute, normalized path.
    pub path: String,
    /// Owner name.
    pub owner: String,
    /// Group name.
    pub group: String,
    /// Permission bits.
    pub mode: Mode,
    /// What happens to an existing directory.
    #[serde(default, skip_serializing_if = "is_default")]
    pub replace: DirectoryReplace,
}

/// When an existing path may be replaced by the link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SymlinkReplace {
    /// Create only if nothing exists at the path.
    IfAbsent,
    /// Repoint an existing link (never replaces a regular file or directory).
    Always,
}

/// A symbolic link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymlinkSpec {
    /// Absolute, normalized path of the link.
    pub path: String,
    /// Link target (absolute).
    pub target: String,
    /// Owner of the link itself.
    pub owner: String,
    /// Group of the link itself.
    pub group: String,
    /// Replacement policy.
    pub replace: SymlinkReplace,
}

/// Desired run state of a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceState {
    /// Started (restarted when a subscribed resource changed).
    Running,
    /// Stopped.
    Stopped,
}

/// When a refresh (a subscribed resource changed) restarts a running unit.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "when", rename_all = "snake_case", deny_unknown_fields)]
pub enum Restart {
    /// In the run that changed what the unit subscribes to.
    #[default]
    Immediately,
    /// Only while `user` is idle (no login session, no process with a controlling terminal);
    /// otherwise the restart is deferred, persisted by the agent and retried.
    WhenIdle {
        /// Whose activity gates the restart (for `name@user.service`, the instance).
        user: String,
        /// After this many seconds of deferral the restart happens anyway (reported loudly).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_defer_secs: Option<u64>,
    },
}

/// A systemd unit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Full unit name, e.g. `t3-serve@emo.service`.
    pub name: String,
    /// Enabled at boot.
    pub enable: bool,
    /// Run state.
    pub ensure: ServiceState,
    /// Restart when any of these resources changed in this run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subscribes: Vec<ResourceId>,
    /// When that restart may happen.
    #[serde(default, skip_serializing_if = "is_default")]
    pub restart: Restart,
}

/// A git clone owned by a user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GitCloneSpec {
    /// Absolute path of the work tree; an existing path is never replaced.
    pub path: String,
    /// `https://` or `file://` URL, no credentials.
    pub url: String,
    /// The user the clone runs as and belongs to.
    pub user: String,
    /// Branch to check out (default: the remote's default branch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
    /// `git config` keys ensured in the clone (e.g. git-crypt filters).
    #[serde(
        default,
        deserialize_with = "crate::strict::unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub config: BTreeMap<String, String>,
    /// Extra remotes (name → URL) ensured in the clone.
    #[serde(
        default,
        deserialize_with = "crate::strict::unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub remotes: BTreeMap<String, String>,
    /// Fast-forward refresh when on the default branch with a clean tree.
    #[serde(default)]
    pub refresh: bool,
    /// When `path` does not exist and this path holds a clean clone of `url`, the clone is
    /// moved to `path` instead of cloning anew (a layout change such as `~/code` →
    /// `~/code/infra`; `path` may lie inside it). Anything else there is kept and reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migrate_from: Option<String>,
}

/// A swap file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwapSpec {
    /// Absolute path of the swap file.
    pub path: String,
    /// Size in MiB.
    pub size_mib: u64,
}

/// A guarded command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecSpec {
    /// Label used in the id.
    pub name: String,
    /// argv (no shell).
    pub command: Vec<String>,
    /// Run as this user (default root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Skip when this path exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creates: Option<String>,
    /// Skip when this argv exits 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unless: Option<Vec<String>>,
    /// Kill after this many seconds.
    pub timeout_secs: u32,
    /// Extra environment.
    #[serde(
        default,
        deserialize_with = "crate::strict::unique_map",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub env: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_round_trips_as_octal_text() {
        let m = Mode::parse("0600").unwrap();
        assert_eq!(m.0, 0o600);
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"0600\"");
        assert_eq!(Mode::parse("755"), Some(Mode(0o755)));
        for bad in ["", "0800", "99999", "rw-", "0o17777", "-1"] {
            assert_eq!(Mode::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn resource_spec_rejects_unknown_fields_inside_a_tagged_variant() {
        let ok = r#"{"id":"package:git","spec":{"type":"package","name":"git"}}"#;
        let r: Resource = serde_json::from_str(ok).unwrap();
        assert_eq!(r.spec.id(), r.id);
        let bad = r#"{"id":"package:git","spec":{"type":"package","name":"git","evil":1}}"#;
        assert!(serde_json::from_str::<Resource>(bad).is_err());
        let bad_outer = r#"{"id":"package:git","spec":{"type":"package","name":"git"},"x":1}"#;
        assert!(serde_json::from_str::<Resource>(bad_outer).is_err());
    }

    #[test]
    fn unsealed_secret_content_is_never_accepted_from_the_wire() {
        let wire = r#"{"secret":"hunter2"}"#;
        assert!(serde_json::from_str::<FileContent>(wire).is_err());
        let text: FileContent = serde_json::from_str(r#"{"text":"hi"}"#).unwrap();
        assert_eq!(text, FileContent::Text("hi".into()));
    }
}
