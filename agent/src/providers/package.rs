//! The `package` provider (being built).

use steward_protocol::PackageSpec;

use crate::engine::{Context, Outcome};

/// Per-run state: the one batched install.
#[derive(Debug, Default)]
pub struct Batch {}

/// Converges one `package` resource.
pub fn apply(_spec: &PackageSpec, _cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::bail!("the package provider is not built yet")
}
