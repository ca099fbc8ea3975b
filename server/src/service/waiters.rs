//! Wake-ups for `GET /v1/wait` long-polls: one `tokio::sync::watch` channel per node, bumped
//! when the node gets a new serial or an admin asks it to run now. Waiting costs nothing while
//! nothing happens: no database polling per waiter.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use steward_protocol::NodeId;
use tokio::sync::watch;

/// Per-node wake-up channels.
#[derive(Debug, Default)]
pub struct Waiters {
    channels: Mutex<HashMap<NodeId, watch::Sender<u64>>>,
}

impl Waiters {
    /// A receiver that sees every later [`Waiters::notify`] for `node`.
    pub fn subscribe(&self, node: &NodeId) -> watch::Receiver<u64> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        channels
            .entry(node.clone())
            .or_insert_with(|| watch::channel(0).0)
            .subscribe()
    }

    /// Wakes whoever waits for `node` (nobody, often: then it only counts).
    pub fn notify(&self, node: &NodeId) {
        let channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(sender) = channels.get(node) {
            sender.send_modify(|generation| *generation = generation.wrapping_add(1));
        }
    }
}
