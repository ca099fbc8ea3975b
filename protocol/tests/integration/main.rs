//! Integration tests of steward-protocol, one binary (it links once).

/// Fixed keys, clock, catalogs and envelope builders.
mod common;
/// Golden vectors of the wire format.
mod golden;
/// Strict parsing: duplicate keys, unknown fields, round trips.
mod parsers;
/// Sealed secrets and redaction.
mod secrets;
/// Byte flips, random mutations and never-panic properties.
mod tampering;
/// `verify_catalog` acceptance and one test per refusal.
mod verify;
