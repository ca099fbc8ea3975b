//! The `user` provider (being built).

use steward_protocol::UserSpec;

use crate::engine::{Context, Outcome};

/// Converges one `user` resource.
pub fn apply(_spec: &UserSpec, _cx: &Context<'_>) -> anyhow::Result<Outcome> {
    anyhow::bail!("the user provider is not built yet")
}
