//! The bytes of signed catalog envelopes, kept for the nodes that asked last: a bounded
//! least-recently-used cache (`catalog.envelope_cache_entries`).
//!
//! It is only a cache. Sealing is deterministic ([`steward_protocol::seal::seal_deterministic`])
//! and signing is too (ed25519), so an evicted envelope is rebuilt, byte for byte, from a new
//! compile of the same content under the same serial, times and provenance
//! ([`crate::service::catalog`]). An entry is served only for the digest it was stored under,
//! so a stale entry is never mistaken for the current serial's.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use axum::body::Bytes;
use steward_protocol::NodeId;

/// Envelopes kept when the configuration does not say.
pub const DEFAULT_ENTRIES: usize = 256;

/// The cache. One per server.
#[derive(Debug)]
pub struct EnvelopeCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Increases at every use; an entry's last use orders the evictions.
    clock: u64,
    entries: HashMap<NodeId, Entry>,
    /// Last use → node, oldest first.
    by_use: BTreeMap<u64, NodeId>,
}

#[derive(Debug)]
struct Entry {
    used: u64,
    digest: String,
    envelope: Bytes,
}

impl EnvelopeCache {
    /// A cache of at most `capacity` envelopes (at least one).
    pub fn new(capacity: usize) -> EnvelopeCache {
        EnvelopeCache {
            capacity: capacity.max(1),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The envelope of `node` whose payload digest is `digest`, if it is kept.
    pub fn get(&self, node: &NodeId, digest: &str) -> Option<Bytes> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.clock += 1;
        let now = inner.clock;
        let entry = inner.entries.get_mut(node)?;
        if entry.digest != digest {
            return None;
        }
        let previous = std::mem::replace(&mut entry.used, now);
        let envelope = entry.envelope.clone();
        inner.by_use.remove(&previous);
        inner.by_use.insert(now, node.clone());
        Some(envelope)
    }

    /// Keeps `envelope` as `node`'s (replacing what it had), evicting the least recently used
    /// envelopes beyond the capacity.
    pub fn insert(&self, node: &NodeId, digest: &str, envelope: Bytes) {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.clock += 1;
        let now = inner.clock;
        let entry = Entry {
            used: now,
            digest: digest.to_owned(),
            envelope,
        };
        if let Some(previous) = inner.entries.insert(node.clone(), entry) {
            inner.by_use.remove(&previous.used);
        }
        inner.by_use.insert(now, node.clone());
        while inner.entries.len() > self.capacity {
            let Some((_, oldest)) = inner.by_use.pop_first() else {
                break;
            };
            inner.entries.remove(&oldest);
        }
    }

    /// Envelopes kept (for the tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_most_recently_used_and_serves_only_the_stored_digest() {
        let cache = EnvelopeCache::new(2);
        let node = |name: &str| NodeId(name.into());
        cache.insert(&node("a"), "d-a", Bytes::from_static(b"A"));
        cache.insert(&node("b"), "d-b", Bytes::from_static(b"B"));
        assert_eq!(cache.get(&node("a"), "d-a").as_deref(), Some(&b"A"[..]));
        // "b" is now the least recently used.
        cache.insert(&node("c"), "d-c", Bytes::from_static(b"C"));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&node("b"), "d-b"), None);
        assert_eq!(cache.get(&node("c"), "d-c").as_deref(), Some(&b"C"[..]));
        // Another digest (another serial) is not served.
        assert_eq!(cache.get(&node("a"), "d-old"), None);
        cache.insert(&node("a"), "d-a2", Bytes::from_static(b"A2"));
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.get(&node("a"), "d-a"), None);
        assert_eq!(cache.get(&node("a"), "d-a2").as_deref(), Some(&b"A2"[..]));
    }
}
