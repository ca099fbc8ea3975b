//! The `symlink` provider (being built).

use steward_protocol::SymlinkSpec;

use crate::engine::{Context, Outcome};

/// Converges one `symlink` resource.
pub fn apply(_spec: &SymlinkSpec, _cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::bail!("the symlink provider is not built yet")
}
