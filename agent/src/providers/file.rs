//! The `file` provider (being built).

use steward_protocol::FileSpec;

use crate::engine::{Context, Outcome};

/// Converges one `file` resource.
pub fn apply(_spec: &FileSpec, _cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::bail!("the file provider is not built yet")
}
