//! The `swap` provider (being built).

use steward_protocol::SwapSpec;

use crate::engine::{Context, Outcome};

/// Converges one `swap` resource.
pub fn apply(_spec: &SwapSpec, _cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::bail!("the swap provider is not built yet")
}
