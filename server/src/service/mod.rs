//! The server's behaviour behind the HTTP handlers and the admin CLI: catalogs (compile, serial,
//! sign, seal), enrollment policy, admin operations, long-poll wake-ups and rate limits. HTTP
//! handlers and CLI commands are thin layers over these functions.

pub mod admin;
pub mod catalog;
pub mod enroll;
pub mod envelopes;
pub mod facts;
pub mod nonces;
pub mod rate_limit;
pub mod reports;
pub mod vault_source;
pub mod waiters;

use std::time::{SystemTime, UNIX_EPOCH};

use steward_protocol::Timestamp;

/// The wall clock, in seconds. The one place the server reads "now" for timestamps.
pub fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| {
                i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
            }),
    )
}

/// The wall clock, in milliseconds (catalog serials).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX)
        })
}
