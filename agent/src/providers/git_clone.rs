//! The `git_clone` provider (being built).

use steward_protocol::GitCloneSpec;

use crate::engine::{Context, Outcome};

/// Converges one `git_clone` resource.
pub fn apply(_spec: &GitCloneSpec, _cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::bail!("the git_clone provider is not built yet")
}
