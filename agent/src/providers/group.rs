//! The `group` provider (being built).

use steward_protocol::GroupSpec;

use crate::engine::{Context, Outcome};

/// Converges one `group` resource.
pub fn apply(_spec: &GroupSpec, _cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::bail!("the group provider is not built yet")
}
