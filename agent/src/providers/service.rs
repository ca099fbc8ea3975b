//! The `service` provider (being built).

use steward_protocol::ServiceSpec;

use crate::engine::{Context, Outcome};

/// Converges one `service` resource; `refresh` restarts it.
pub fn apply(_spec: &ServiceSpec, _cx: &Context<'_>, _refresh: bool) -> anyhow::Result<Outcome> {
    anyhow::bail!("the service provider is not built yet")
}
