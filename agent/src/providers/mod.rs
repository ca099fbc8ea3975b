//! One provider per resource type. Each is observe → pure diff → apply, through
//! [`Context::host`](crate::engine::Context) for files and [`crate::command`] for tools, and
//! returns an [`Outcome`]; under [`Context::noop`] it observes and diffs but writes nothing.
//! Routine runs are additive-only (DESIGN §4): nothing a user made is removed or replaced
//! unless the resource's policy says so.

pub mod directory;
pub mod exec;
pub mod file;
pub mod git_clone;
pub mod group;
pub mod package;
pub mod service;
pub mod swap;
pub mod symlink;
pub mod user;

use steward_protocol::ResourceSpec;

use crate::engine::{Context, Outcome};

/// Converges one resource. `refresh` is set for a `service` when a resource it subscribes to
/// changed in this run.
pub fn apply(spec: &ResourceSpec, cx: &Context<'_>, refresh: bool) -> anyhow::Result<Outcome> {
    match spec {
        ResourceSpec::Package(s) => package::apply(s, cx),
        ResourceSpec::Group(s) => group::apply(s, cx),
        ResourceSpec::User(s) => user::apply(s, cx),
        ResourceSpec::File(s) => file::apply(s, cx),
        ResourceSpec::Directory(s) => directory::apply(s, cx),
        ResourceSpec::Symlink(s) => symlink::apply(s, cx),
        ResourceSpec::Service(s) => service::apply(s, cx, refresh),
        ResourceSpec::GitClone(s) => git_clone::apply(s, cx),
        ResourceSpec::Swap(s) => swap::apply(s, cx),
        ResourceSpec::Exec(s) => exec::apply(s, cx),
    }
}
