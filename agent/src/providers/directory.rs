//! The `directory` provider (being built).

use steward_protocol::DirectorySpec;

use crate::engine::{Context, Outcome};

/// Converges one `directory` resource.
pub fn apply(_spec: &DirectorySpec, _cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::bail!("the directory provider is not built yet")
}
