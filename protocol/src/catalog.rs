//! The catalog document: what one node must look like, as signed by the server.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::ids::{NodeId, ResourceId, Serial, Timestamp};
use crate::resource::{FileContent, Resource, ResourceSpec};

/// The document type tag of every signed payload. Signed inside the payload and bound into the
/// signing context, so a validly signed document of one type is never accepted as another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentType {
    /// A node's catalog.
    Catalog,
    /// The root key's certificate for an online catalog key.
    CatalogKeyCertificate,
}

impl DocumentType {
    /// The wire name (`catalog`, `catalog_key_certificate`).
    pub fn as_str(self) -> &'static str {
        match self {
            DocumentType::Catalog => "catalog",
            DocumentType::CatalogKeyCertificate => "catalog_key_certificate",
        }
    }
}

/// Where a catalog's inputs came from, so a report can say which site revision and which Vault
/// versions produced what the node applied.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// SHA-256 (hex) over the site's files.
    pub site_hash: String,
    /// KV v2 metadata version per Vault path that was read.
    #[serde(default, deserialize_with = "crate::strict::unique_map")]
    pub vault_versions: BTreeMap<String, u64>,
}

/// A node's catalog: the signed payload of a catalog envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Catalog {
    /// Always [`DocumentType::Catalog`].
    #[serde(rename = "type")]
    pub document_type: DocumentType,
    /// [`crate::CATALOG_FORMAT_VERSION`] of the server that compiled it.
    pub format_version: u32,
    /// The node this catalog is for; any other node refuses it.
    pub node: NodeId,
    /// Monotonic per node; 0 for an offline compile.
    pub serial: Serial,
    /// When it was compiled.
    pub compiled_at: Timestamp,
    /// After this instant the agent neither applies nor re-applies it.
    pub expires_at: Timestamp,
    /// Input provenance.
    pub provenance: Provenance,
    /// Resources, in the compiler's deterministic order.
    pub resources: Vec<Resource>,
}

/// Why a catalog's resource graph is not acceptable. Every message starts with the resource
/// it is about (`` resource `type:name`: ``) and then says the rule it breaks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// Two resources share an id.
    #[error("resource `{}`: the id is used by another resource too", shown(.0))]
    DuplicateId(ResourceId),
    /// `id` does not match `type:name` of the spec.
    #[error(
        "resource `{}`: the id does not match its spec (`{}`)",
        shown(id),
        shown(expected)
    )]
    IdMismatch {
        /// The declared id.
        id: ResourceId,
        /// What the spec says it should be.
        expected: ResourceId,
    },
    /// A `requires` or `subscribes` edge names no resource of the catalog.
    #[error(
        "resource `{}`: requires `{}`, which is not in the catalog",
        shown(from),
        shown(to)
    )]
    UnknownDependency {
        /// The resource with the edge.
        from: ResourceId,
        /// The missing target.
        to: ResourceId,
    },
    /// The dependency graph has a cycle through this resource.
    #[error("resource `{}`: its dependencies form a cycle through it", shown(.0))]
    Cycle(ResourceId),
    /// A path is relative, not normalized, or contains `..`, NUL or control characters.
    #[error("resource `{}`: path {path:?} must be absolute and normalized (no `..`, `.`, `//` or control characters)", shown(id))]
    BadPath {
        /// The resource.
        id: ResourceId,
        /// The offending path.
        path: String,
    },
    /// A name field holds control characters (newline injection into units, passwd, ...).
    #[error("resource `{}`: {field} contains control characters", shown(id))]
    ControlCharacters {
        /// The resource.
        id: ResourceId,
        /// Which field.
        field: &'static str,
    },
    /// Sensitive content that was never sealed.
    #[error("resource `{}`: sensitive content is not sealed", shown(.0))]
    UnsealedSecret(ResourceId),
    /// A field breaks one of the [`crate::rules`] (unit names, git names, modes).
    #[error("resource `{}`: {field}: {message}", shown(id))]
    Rule {
        /// The resource.
        id: ResourceId,
        /// Which field.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Two resources manage the same path (a file and a directory, say): every run would fail.
    #[error(
        "resource `{}`: manages the path {path:?} that `{}` manages too",
        shown(second),
        shown(first)
    )]
    PathCollision {
        /// The first resource on the path.
        first: ResourceId,
        /// The second.
        second: ResourceId,
        /// The path.
        path: String,
    },
}

/// The path a resource converges an object at (files, directories, links, clones, swap files):
/// two resources on one path would fight every run.
pub fn managed_path(spec: &ResourceSpec) -> Option<&str> {
    match spec {
        ResourceSpec::File(s) => Some(&s.path),
        ResourceSpec::Directory(s) => Some(&s.path),
        ResourceSpec::Symlink(s) => Some(&s.path),
        ResourceSpec::GitClone(s) => Some(&s.path),
        ResourceSpec::Swap(s) => Some(&s.path),
        _ => None,
    }
}

/// A resource id for a message: control characters escaped (`\n`, `\u{1b}`), so a hostile
/// name cannot break or forge lines of the output that shows it.
fn shown(id: &ResourceId) -> String {
    id.as_str()
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// Whether `path` is absolute and normalized: starts with `/`, no empty, `.` or `..`
/// components, no trailing slash (except `/` itself), no NUL or control characters.
///
/// ```
/// use steward_protocol::is_normal_absolute_path;
/// assert!(is_normal_absolute_path("/home/emo/.kube/config"));
/// assert!(!is_normal_absolute_path("/home/alice/../../etc/cron.d/x"));
/// assert!(!is_normal_absolute_path("relative/path"));
/// ```
pub fn is_normal_absolute_path(path: &str) -> bool {
    if path == "/" {
        return true;
    }
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    !path.chars().any(char::is_control)
        && rest
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

impl Catalog {
    /// Checks the resource graph: ids agree with specs and are unique, every edge names a
    /// resource of this catalog, no cycles, every path is absolute and normalized, no control
    /// characters in names. The agent calls this on every verified catalog before planning.
    pub fn validate(&self) -> Result<(), CatalogError> {
        let mut index: HashMap<&str, usize> = HashMap::with_capacity(self.resources.len());
        let mut paths: HashMap<&str, &ResourceId> = HashMap::new();
        for (i, resource) in self.resources.iter().enumerate() {
            if !resource.spec.has_id(&resource.id) {
                return Err(CatalogError::IdMismatch {
                    id: resource.id.clone(),
                    expected: resource.spec.id(),
                });
            }
            if index.insert(resource.id.as_str(), i).is_some() {
                return Err(CatalogError::DuplicateId(resource.id.clone()));
            }
            resource.spec.visit_text_fields(|field, text| {
                if text.chars().any(char::is_control) {
                    return Err(CatalogError::ControlCharacters {
                        id: resource.id.clone(),
                        field,
                    });
                }
                Ok(())
            })?;
            for path in resource.spec.paths() {
                if !is_normal_absolute_path(path) {
                    return Err(CatalogError::BadPath {
                        id: resource.id.clone(),
                        path: path.to_string(),
                    });
                }
            }
            if let ResourceSpec::Symlink(link) = &resource.spec {
                if !is_normal_absolute_path(&link.target) {
                    return Err(CatalogError::BadPath {
                        id: resource.id.clone(),
                        path: link.target.clone(),
                    });
                }
            }
            crate::rules::check_spec(&resource.spec).map_err(|broken| CatalogError::Rule {
                id: resource.id.clone(),
                field: broken.field,
                message: broken.message,
            })?;
            if let Some(path) = managed_path(&resource.spec) {
                if let Some(first) = paths.insert(path, &resource.id) {
                    return Err(CatalogError::PathCollision {
                        first: first.clone(),
                        second: resource.id.clone(),
                        path: path.to_string(),
                    });
                }
            }
        }
        // Edges as one flat list with per-resource offsets (no Vec per resource).
        let mut offsets = Vec::with_capacity(self.resources.len() + 1);
        let mut targets = Vec::with_capacity(self.resources.len() * 2);
        for resource in &self.resources {
            offsets.push(targets.len());
            let subscribes = match &resource.spec {
                ResourceSpec::Service(s) => s.subscribes.as_slice(),
                _ => &[],
            };
            for to in resource.requires.iter().chain(subscribes) {
                let target = index.get(to.as_str()).copied().ok_or_else(|| {
                    CatalogError::UnknownDependency {
                        from: resource.id.clone(),
                        to: to.clone(),
                    }
                })?;
                targets.push(target);
            }
        }
        offsets.push(targets.len());
        let edges = |node: usize| &targets[offsets[node]..offsets[node + 1]];
        // Iterative three-colour DFS, so a deep chain cannot overflow the stack.
        let mut colour = vec![0u8; self.resources.len()];
        for start in 0..self.resources.len() {
            if colour[start] != 0 {
                continue;
            }
            let mut stack = vec![(start, 0usize)];
            colour[start] = 1;
            while let Some((node, next)) = stack.last_mut() {
                if let Some(&to) = edges(*node).get(*next) {
                    *next += 1;
                    match colour[to] {
                        0 => {
                            colour[to] = 1;
                            stack.push((to, 0));
                        }
                        1 => return Err(CatalogError::Cycle(self.resources[to].id.clone())),
                        _ => {}
                    }
                } else {
                    colour[*node] = 2;
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    /// Fails when any sensitive content is still unsealed ([`FileContent::Secret`]).
    pub fn ensure_sealed(&self) -> Result<(), CatalogError> {
        for resource in &self.resources {
            if let ResourceSpec::File(file) = &resource.spec {
                if matches!(file.content, FileContent::Secret(_)) {
                    return Err(CatalogError::UnsealedSecret(resource.id.clone()));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{PackageSpec, ResourceSpec};

    fn package(name: &str) -> Resource {
        Resource::new(ResourceSpec::Package(PackageSpec { name: name.into() }))
    }

    fn catalog(resources: Vec<Resource>) -> Catalog {
        Catalog {
            document_type: DocumentType::Catalog,
            format_version: crate::CATALOG_FORMAT_VERSION,
            node: NodeId("devvm".into()),
            serial: Serial(1),
            compiled_at: Timestamp(0),
            expires_at: Timestamp(100),
            provenance: Provenance::default(),
            resources,
        }
    }

    #[test]
    fn validate_accepts_a_dag_and_refuses_cycles() {
        let a = package("a");
        let b = package("b").requiring(a.id.clone());
        assert_eq!(catalog(vec![a.clone(), b.clone()]).validate(), Ok(()));
        let a_cyclic = package("a").requiring(b.id.clone());
        assert!(matches!(
            catalog(vec![a_cyclic, b]).validate(),
            Err(CatalogError::Cycle(_))
        ));
    }

    #[test]
    fn validate_refuses_unknown_edges_duplicates_and_mismatched_ids() {
        let a = package("a").requiring(ResourceId::new("package", "zz"));
        assert!(matches!(
            catalog(vec![a]).validate(),
            Err(CatalogError::UnknownDependency { .. })
        ));
        assert!(matches!(
            catalog(vec![package("a"), package("a")]).validate(),
            Err(CatalogError::DuplicateId(_))
        ));
        let mut wrong = package("a");
        wrong.id = ResourceId::new("package", "b");
        assert!(matches!(
            catalog(vec![wrong]).validate(),
            Err(CatalogError::IdMismatch { .. })
        ));
    }

    /// Every refusal names the resource it is about and the rule it breaks (THREATS F5, F8:
    /// an operator reading the agent's "catalog failed validation" must see which one and why).
    #[test]
    fn validation_errors_name_the_resource_and_the_rule() {
        let message =
            |resources: Vec<Resource>| catalog(resources).validate().unwrap_err().to_string();
        let dir = Resource::new(ResourceSpec::Directory(crate::DirectorySpec {
            path: "/srv/../etc/cron.d".into(),
            owner: "root".into(),
            group: "root".into(),
            mode: crate::Mode(0o755),
            replace: Default::default(),
        }));
        assert_eq!(
            message(vec![dir]),
            "resource `directory:/srv/../etc/cron.d`: path \"/srv/../etc/cron.d\" must be \
             absolute and normalized (no `..`, `.`, `//` or control characters)"
        );
        assert_eq!(
            message(vec![
                package("a").requiring(ResourceId::new("package", "zz"))
            ]),
            "resource `package:a`: requires `package:zz`, which is not in the catalog"
        );
        assert_eq!(
            message(vec![package("a"), package("a")]),
            "resource `package:a`: the id is used by another resource too"
        );
        let mut wrong = package("a");
        wrong.id = ResourceId::new("package", "b");
        assert_eq!(
            message(vec![wrong]),
            "resource `package:b`: the id does not match its spec (`package:a`)"
        );
        let a = package("a").requiring(ResourceId::new("package", "b"));
        let b = package("b").requiring(ResourceId::new("package", "a"));
        assert!(message(vec![a, b]).starts_with("resource `package:"));
        assert_eq!(
            message(vec![package("evil\nExecStart=/bin/sh")]),
            "resource `package:evil\\nExecStart=/bin/sh`: name contains control characters"
        );
    }

    #[test]
    fn catalog_path_validator_table() {
        for bad in [
            "",
            "relative",
            "/a/../b",
            "/a/./b",
            "/a//b",
            "/a/",
            "/home/alice/../../etc/cron.d/x",
            "/a\nb",
            "/a\0b",
            "..",
            "/..",
        ] {
            assert!(!is_normal_absolute_path(bad), "{bad:?} must be refused");
        }
        for good in [
            "/",
            "/etc/ttyd-user-map",
            "/home/emo/.claude.json",
            "/a/..b/c..",
        ] {
            assert!(is_normal_absolute_path(good), "{good:?} must be accepted");
        }
    }

    #[test]
    fn validate_applies_the_resource_rules_and_refuses_two_resources_on_one_path() {
        use crate::resource::{DirectorySpec, FileContent, FileSpec, Mode, Replace};
        use crate::resource::{ServiceSpec, ServiceState};
        let service = Resource::new(ResourceSpec::Service(ServiceSpec {
            name: "../x.service".into(),
            enable: true,
            ensure: ServiceState::Running,
            subscribes: vec![],
            restart: Default::default(),
        }));
        assert!(matches!(
            catalog(vec![service]).validate(),
            Err(CatalogError::Rule { field: "name", .. })
        ));
        let file = |mode| {
            Resource::new(ResourceSpec::File(FileSpec {
                path: "/etc/x".into(),
                owner: "root".into(),
                group: "root".into(),
                mode: Mode(mode),
                content: FileContent::Text(String::new()),
                replace: Replace::Always,
                backup: false,
            }))
        };
        assert!(matches!(
            catalog(vec![file(0o4777)]).validate(),
            Err(CatalogError::Rule { field: "mode", .. })
        ));
        let dir = Resource::new(ResourceSpec::Directory(DirectorySpec {
            path: "/etc/x".into(),
            owner: "root".into(),
            group: "root".into(),
            mode: Mode(0o755),
            replace: Default::default(),
        }));
        let err = catalog(vec![file(0o644), dir]).validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "resource `directory:/etc/x`: manages the path \"/etc/x\" that `file:/etc/x` manages too"
        );
    }

    #[test]
    fn unit_renderer_rejects_newline_and_control_chars() {
        use crate::resource::{ExecSpec, ServiceSpec, ServiceState};
        let service = Resource::new(ResourceSpec::Service(ServiceSpec {
            name: "t3-serve@emo.service\nExecStartPre=/bin/evil".into(),
            enable: true,
            ensure: ServiceState::Running,
            subscribes: vec![],
            restart: Default::default(),
        }));
        assert!(matches!(
            catalog(vec![service]).validate(),
            Err(CatalogError::ControlCharacters { field: "name", .. })
        ));
        let exec = Resource::new(ResourceSpec::Exec(ExecSpec {
            name: "x".into(),
            command: vec!["/bin/true".into()],
            user: None,
            cwd: None,
            creates: None,
            unless: None,
            timeout_secs: 1,
            env: [("A".to_string(), "b\rc".to_string())]
                .into_iter()
                .collect(),
        }));
        assert!(matches!(
            catalog(vec![exec]).validate(),
            Err(CatalogError::ControlCharacters { field: "env", .. })
        ));
    }

    #[test]
    fn deep_dependency_chain_does_not_overflow_the_stack() {
        let mut resources = vec![package("p0")];
        for i in 1..50_000 {
            let prev = resources[i - 1].id.clone();
            resources.push(package(&format!("p{i}")).requiring(prev));
        }
        assert_eq!(catalog(resources).validate(), Ok(()));
    }
}
