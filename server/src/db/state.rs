//! `port_allocations` and `managed_users`: the per-node [`State`] the compiler needs back on
//! the next compile (sticky ports, users to offboard). [`save`] replaces the node's whole state
//! in one transaction, so a compile never sees half of an old state and half of a new one.

use std::collections::BTreeMap;

use sqlx::Connection;
use steward_catalogs::model::{ManagedUser, State};
use steward_protocol::NodeId;

use crate::db::codec::parse_user_state;
use crate::db::error::Context;
use crate::db::{begin_immediate, nodes, DbError, Handle};

/// The node's state; empty if nothing was saved yet. [`DbError::NotFound`] for an unknown node.
pub async fn load(db: impl Into<Handle<'_>>, node: &NodeId) -> Result<State, DbError> {
    let mut connection = db.into().connection().await?;
    // One snapshot for both tables.
    let mut tx = Connection::begin(&mut *connection)
        .await
        .context("loading node state")?;
    let node_id = nodes::id_of(&mut tx, node).await?;
    let ports: Vec<(String, i64)> =
        sqlx::query_as("SELECT os_user, port FROM port_allocations WHERE node_id = ?1")
            .bind(node_id)
            .fetch_all(&mut *tx)
            .await
            .context("loading port allocations")?;
    let users: Vec<(String, String, String)> =
        sqlx::query_as("SELECT os_user, state, services FROM managed_users WHERE node_id = ?1")
            .bind(node_id)
            .fetch_all(&mut *tx)
            .await
            .context("loading managed users")?;
    tx.commit().await.context("loading node state")?;

    let mut state = State::default();
    for (user, port) in ports {
        let port = u16::try_from(port).map_err(|_| DbError::Corrupt {
            what: "port_allocations.port",
            detail: format!("{port} is not a port"),
        })?;
        state.ports.insert(user, port);
    }
    let mut managed_users = BTreeMap::new();
    for (user, user_state, services) in users {
        let services: Vec<String> =
            serde_json::from_str(&services).map_err(|error| DbError::Corrupt {
                what: "managed_users.services",
                detail: error.to_string(),
            })?;
        managed_users.insert(
            user,
            ManagedUser {
                state: parse_user_state(&user_state)?,
                services,
            },
        );
    }
    state.managed_users = managed_users;
    Ok(state)
}

/// Replaces the node's state with `state`, in one transaction.
pub async fn save(db: impl Into<Handle<'_>>, node: &NodeId, state: &State) -> Result<(), DbError> {
    let mut connection = db.into().connection().await?;
    let mut tx = begin_immediate(&mut connection).await?;
    let node_id = nodes::id_of(&mut tx, node).await?;
    sqlx::query("DELETE FROM port_allocations WHERE node_id = ?1")
        .bind(node_id)
        .execute(&mut *tx)
        .await
        .context("clearing port allocations")?;
    sqlx::query("DELETE FROM managed_users WHERE node_id = ?1")
        .bind(node_id)
        .execute(&mut *tx)
        .await
        .context("clearing managed users")?;
    for (user, port) in &state.ports {
        sqlx::query("INSERT INTO port_allocations (node_id, os_user, port) VALUES (?1, ?2, ?3)")
            .bind(node_id)
            .bind(user)
            .bind(i64::from(*port))
            .execute(&mut *tx)
            .await
            .context("saving port allocation")?;
    }
    for (user, managed) in &state.managed_users {
        let services =
            serde_json::to_string(&managed.services).map_err(|error| DbError::Invalid {
                what: "managed user services",
                detail: error.to_string(),
            })?;
        sqlx::query(
            "INSERT INTO managed_users (node_id, os_user, state, services) \
             VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(node_id)
        .bind(user)
        .bind(managed.state.as_str())
        .bind(services)
        .execute(&mut *tx)
        .await
        .context("saving managed user")?;
    }
    tx.commit().await.context("committing node state")
}
