//! Replay protection for signed agent requests (DESIGN §5, "Requests"): every `(key id, nonce)`
//! accepted is remembered until a request carrying it could no longer pass the timestamp check,
//! and a repeat within that time is a replay.
//!
//! The memory is in this process, so a request costs no database write. A request stamped `t` is
//! accepted while `|t - now| <= skew`, so its nonce is kept until `t + skew` (at most `2 * skew`
//! after it was seen), rounded up to the end of a [`SLOT_SECS`] slot: nonces are kept in one
//! set per slot, and a slot's set is dropped whole once it is over (no per-entry expiry to
//! store or scan). The sets hold a keyed 64-bit hash of the pair (the hash key is random per
//! process), not the strings, about 14 bytes a nonce: a collision can only refuse a request,
//! never let a replay through, and with a window's worth of entries it is vanishingly rare.
//!
//! Accepted nonces are also queued and written to `request_nonces` in batches by a background
//! task ([`NonceStore::flush`], every [`FLUSH_INTERVAL`] and at shutdown); [`NonceStore::load`]
//! reads them back at start, so a restart still refuses a replay within the window. A crash
//! loses at most the last interval's nonces, and only requests still within the skew window
//! could be replayed with them: the same trade-off as the `synchronous=NORMAL` writes the
//! database makes for bookkeeping ([`crate::db::Db::relaxed`]).

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashSet};
use std::hash::BuildHasher;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use steward_protocol::{KeyId, SignedRequestHeaders, Timestamp};

use crate::db::nonces::{self, NonceRecord};
use crate::db::{Db, DbError};

/// How often accepted nonces are written to the database.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Width of the expiry slots, in seconds: a nonce is refused up to this much longer than needed
/// (the timestamp check refuses such a request anyway).
pub const SLOT_SECS: i64 = 30;

/// Nonces waiting to be written, at most. Beyond that (the database has been failing for a
/// while) new ones are not queued: replays stay refused in memory, only a restart would forget
/// them.
const MAX_PENDING: usize = 200_000;

/// Why a nonce was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NonceCheck {
    /// First seen: accept the request.
    Fresh,
    /// Seen before within the window: a replay.
    Replay,
}

/// The replay memory. One per server, shared by the authentication middleware and the flush
/// task.
#[derive(Debug)]
pub struct NonceStore {
    skew_secs: i64,
    hasher: RandomState,
    inner: Mutex<Inner>,
    /// One flush at a time (the background task's and the one at shutdown).
    flushing: tokio::sync::Mutex<()>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Last second of a slot → hashes of the `(key id, nonce)` pairs to refuse until then.
    slots: BTreeMap<i64, HashSet<u64, IdentityHash>>,
    /// Accepted since the last flush.
    pending: Vec<NonceRecord>,
}

impl Inner {
    fn seen(&self, hash: u64, now: Timestamp) -> bool {
        self.slots
            .range(now.0..)
            .any(|(_, set)| set.contains(&hash))
    }

    fn insert(&mut self, hash: u64, refuse_until: i64) {
        let slot_end = refuse_until.div_euclid(SLOT_SECS) * SLOT_SECS + SLOT_SECS - 1;
        self.slots.entry(slot_end).or_default().insert(hash);
    }
}

impl NonceStore {
    /// An empty store for a skew window of `skew_secs` either way.
    pub fn new(skew_secs: u32) -> NonceStore {
        NonceStore {
            skew_secs: i64::from(skew_secs),
            hasher: RandomState::new(),
            inner: Mutex::new(Inner::default()),
            flushing: tokio::sync::Mutex::new(()),
        }
    }

    /// [`NonceStore::check_and_record`] of a signed request whose signature and timestamp
    /// [`steward_protocol::verify_request`] has accepted: its key, nonce and timestamp.
    pub fn check_request(&self, headers: &SignedRequestHeaders, now: Timestamp) -> NonceCheck {
        // Verified, so the timestamp parses and is within the skew of now.
        let request_time = headers.timestamp.parse().map_or(now, Timestamp);
        self.check_and_record(&headers.key, &headers.nonce, request_time, now)
    }

    /// Records `nonce` of a request by `key_id`, stamped `request_time` (already checked to be
    /// within the skew of `now`). [`NonceCheck::Replay`] if it was accepted before and could
    /// still pass the timestamp check.
    pub fn check_and_record(
        &self,
        key_id: &KeyId,
        nonce: &str,
        request_time: Timestamp,
        now: Timestamp,
    ) -> NonceCheck {
        let hash = self.hash(key_id, nonce);
        // The request passes the timestamp check until `request_time + skew`; never less than
        // now, whatever the caller passed.
        let refuse_until = request_time.0.saturating_add(self.skew_secs).max(now.0);
        let mut inner = self.lock();
        if inner.seen(hash, now) {
            return NonceCheck::Replay;
        }
        inner.insert(hash, refuse_until);
        if inner.pending.len() < MAX_PENDING {
            inner.pending.push(NonceRecord {
                key_id: key_id.clone(),
                nonce: nonce.to_owned(),
                seen_at: now,
            });
        }
        NonceCheck::Fresh
    }

    /// Forgets the nonces that no request could carry any more at `now` (whole slots).
    pub fn sweep(&self, now: Timestamp) {
        let mut inner = self.lock();
        let current = inner.slots.split_off(&now.0);
        inner.slots = current;
    }

    /// Nonces held in memory (for the tests).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().slots.values().map(HashSet::len).sum()
    }

    /// Writes the nonces accepted since the last flush to the database, in one transaction,
    /// and prunes the rows older than the window. On failure they stay queued for the next try.
    ///
    /// Cancellation-safe: the nonces leave the queue only once their transaction committed, so
    /// a flush cut short (the background task aborted at shutdown) loses nothing.
    pub async fn flush(&self, db: &Db, now: Timestamp) -> Result<(), DbError> {
        let _one_at_a_time = self.flushing.lock().await;
        let batch = self.lock().pending.clone();
        if batch.is_empty() {
            return Ok(());
        }
        let prune_before = now.plus_secs(-2 * self.skew_secs);
        nonces::record_batch(db.relaxed(), &batch, prune_before).await?;
        // Only flushes remove from the queue, one at a time, and new nonces are appended: the
        // first `batch.len()` are the ones just written.
        let mut inner = self.lock();
        let written = batch.len().min(inner.pending.len());
        inner.pending.drain(..written);
        Ok(())
    }

    /// Reads the nonces the database holds for the window before `now` (at start-up). Their
    /// request times are not stored, so each is kept for the longest a request could have
    /// been fresh: `2 * skew` after it was seen.
    pub async fn load(&self, db: &Db, now: Timestamp) -> Result<usize, DbError> {
        let records = nonces::load_since(db, now.plus_secs(-2 * self.skew_secs)).await?;
        let count = records.len();
        let hashed: Vec<(u64, i64)> = records
            .iter()
            .map(|record| {
                (
                    self.hash(&record.key_id, &record.nonce),
                    record.seen_at.0.saturating_add(2 * self.skew_secs),
                )
            })
            .collect();
        let mut inner = self.lock();
        for (hash, until) in hashed {
            inner.insert(hash, until);
        }
        Ok(count)
    }

    fn hash(&self, key_id: &KeyId, nonce: &str) -> u64 {
        self.hasher.hash_one((key_id.as_str(), nonce))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The map's keys are already keyed hashes: hashing them again would only cost time.
#[derive(Debug, Default, Clone, Copy)]
struct IdentityHash;

impl BuildHasher for IdentityHash {
    type Hasher = IdentityHasher;

    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

#[derive(Debug, Default)]
struct IdentityHasher(u64);

impl std::hash::Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*byte);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_800_000_000;

    #[test]
    fn a_nonce_is_accepted_once_per_key_until_no_request_could_carry_it() {
        let store = NonceStore::new(300);
        let key = KeyId::of_public_key_bytes(b"agent");
        let other_key = KeyId::of_public_key_bytes(b"other agent");
        let at = |secs: i64| Timestamp(T0 + secs);

        assert_eq!(
            store.check_and_record(&key, "n-1", at(0), at(0)),
            NonceCheck::Fresh
        );
        assert_eq!(
            store.check_and_record(&key, "n-1", at(0), at(1)),
            NonceCheck::Replay
        );
        assert_eq!(
            store.check_and_record(&other_key, "n-1", at(0), at(1)),
            NonceCheck::Fresh
        );
        // Stamped 300 s ahead (the most the skew allows): refused until 600 s from now.
        assert_eq!(
            store.check_and_record(&key, "n-2", at(300), at(0)),
            NonceCheck::Fresh
        );
        store.sweep(at(600));
        assert_eq!(
            store.check_and_record(&key, "n-2", at(300), at(600)),
            NonceCheck::Replay
        );
        assert_eq!(store.len(), 1);
        // Once its whole slot is over, the entry goes.
        store.sweep(at(600 + SLOT_SECS));
        assert_eq!(store.len(), 0);
        assert_eq!(store.lock().pending.len(), 3);
    }

    #[tokio::test]
    async fn flushed_nonces_are_refused_by_the_next_process() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("steward.db")).await.unwrap();
        let key = KeyId::of_public_key_bytes(b"agent");
        let now = Timestamp(T0);
        let store = NonceStore::new(300);
        assert_eq!(
            store.check_and_record(&key, "n-1", now, now),
            NonceCheck::Fresh
        );
        store.flush(&db, now).await.unwrap();
        assert!(store.lock().pending.is_empty());
        // Nothing new: nothing written.
        store.flush(&db, now).await.unwrap();

        let restarted = NonceStore::new(300);
        assert_eq!(restarted.load(&db, now.plus_secs(60)).await.unwrap(), 1);
        assert_eq!(
            restarted.check_and_record(&key, "n-1", now, now.plus_secs(60)),
            NonceCheck::Replay
        );
        assert_eq!(
            restarted.check_and_record(&key, "n-2", now, now.plus_secs(60)),
            NonceCheck::Fresh
        );
        db.close().await;
    }
}
