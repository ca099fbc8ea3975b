//! Fuzzes the strict parser on RunReport JSON (untrusted bytes from the network).
//! Properties: no panic; whatever parses survives a canonical round trip unchanged, so the
//! strict parser and the canonical serializer agree (no parser differential).
#![no_main]

use libfuzzer_sys::fuzz_target;
use steward_protocol::envelope::canonical_bytes;
use steward_protocol::strict;
use steward_protocol::{RunReport, MAX_REPORT_BYTES};

fuzz_target!(|data: &[u8]| {
    if let Ok(value) = strict::from_slice::<RunReport>(data, MAX_REPORT_BYTES) {
        let bytes = canonical_bytes(&value);
        let again: RunReport =
            strict::from_slice(&bytes, usize::MAX).expect("canonical bytes parse");
        assert_eq!(again, value);
        assert_eq!(canonical_bytes(&again), bytes);
    }
});
