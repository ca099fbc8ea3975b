//! The `exec` provider (being built).

use steward_protocol::ExecSpec;

use crate::engine::{Context, Outcome};

/// Converges one `exec` resource.
pub fn apply(_spec: &ExecSpec, _cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::bail!("the exec provider is not built yet")
}
