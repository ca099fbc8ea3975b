//! Tampering (THREATS C1): every byte of a small signed envelope, every bit of the bytes it
//! signs, and random mutations, are refused; arbitrary input never panics.

use proptest::prelude::*;
use steward_protocol::envelope::{canonical_bytes, CatalogEnvelope};
use steward_protocol::*;

use crate::common::*;

/// What a mutated envelope may do: be refused, or (if some encoding ever allowed a harmless
/// change) verify to exactly the catalog that was signed. Returns whether it was accepted.
fn refused_or_identical(mutated: &[u8], original: &VerifiedCatalog) -> bool {
    match verify(mutated) {
        Err(_) => false,
        Ok(verified) => {
            assert_eq!(
                verified.digest, original.digest,
                "a mutation verified to other signed bytes"
            );
            assert_eq!(verified.catalog, original.catalog);
            true
        }
    }
}

/// Flips every bit (XOR 0x01..=0x40, so the byte stays ASCII and the flip reaches the JSON
/// parser, not just the UTF-8 check; 0x80 is tried too) of every byte of the raw envelope.
///
/// Why each position is meaningful: the envelope is compact JSON (no whitespace to flip), every
/// key is a field name that `deny_unknown_fields` checks, every string is either a key id
/// (compared with the pinned or certified one), or base64 that is decoded strictly (canonical
/// padding, no trailing bits) into bytes covered by a signature or the pin. So a flip either
/// breaks the syntax, renames a field, changes a key id, or changes signed bytes. The only way
/// a flip could survive is to decode to the very same signed bytes (for example a JSON escape
/// spelling the same character), which `refused_or_identical` allows and checks; in practice
/// none does, and the test asserts that too so that any such encoding slack is noticed.
#[test]
fn agent_rejects_catalog_with_one_flipped_byte() {
    let bytes = signed(&small_catalog());
    let original = verify(&bytes).unwrap();
    let mut accepted = Vec::new();
    let mut mutated = bytes.clone();
    for position in 0..bytes.len() {
        for mask in [0x01u8, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40, 0x80] {
            mutated[position] ^= mask;
            if refused_or_identical(&mutated, &original) {
                accepted.push((position, mask));
            }
            mutated[position] ^= mask;
        }
    }
    assert_eq!(
        accepted,
        Vec::<(usize, u8)>::new(),
        "flips that still verified"
    );
}

/// Flips every bit of every byte the signatures cover or the pin protects, after decoding, and
/// re-encodes: the payloads, both signatures and the root key. Each must be refused, with the
/// refusal that names the defence.
#[test]
fn agent_rejects_catalog_with_one_flipped_bit_in_any_signed_or_pinned_bytes() {
    let envelope: CatalogEnvelope = parse_envelope(&signed(&small_catalog()));
    type Field = fn(&mut CatalogEnvelope) -> &mut String;
    let fields: [(&str, Field, Refusal); 5] = [
        (
            "catalog payload",
            |e| &mut e.catalog.payload,
            Refusal::BadSignature,
        ),
        (
            "catalog signature",
            |e| &mut e.catalog.signatures[0].sig,
            Refusal::BadSignature,
        ),
        (
            "certificate payload",
            |e| &mut e.certificate.document.payload,
            Refusal::BadSignature,
        ),
        (
            "certificate signature",
            |e| &mut e.certificate.document.signatures[0].sig,
            Refusal::BadSignature,
        ),
        (
            "root key",
            |e| &mut e.certificate.root_key,
            Refusal::UnknownKey,
        ),
    ];
    for (name, field, expected) in fields {
        let decoded = unb64(field(&mut envelope.clone()));
        for position in 0..decoded.len() {
            for bit in 0..8 {
                let mut flipped = decoded.clone();
                flipped[position] ^= 1 << bit;
                let mut tampered = envelope.clone();
                *field(&mut tampered) = b64(&flipped);
                let refusal = verify(&canonical_bytes(&tampered)).expect_err(name);
                assert_eq!(refusal, expected, "{name} byte {position} bit {bit}");
            }
        }
    }
}

#[test]
fn truncated_or_extended_envelopes_are_refused() {
    let bytes = signed(&small_catalog());
    for len in 0..bytes.len() {
        assert!(verify(&bytes[..len]).is_err(), "prefix of {len} bytes");
    }
    for suffix in [&b" "[..], b"\n", b"{}", b"\0"] {
        let mut extended = bytes.clone();
        extended.extend_from_slice(suffix);
        // Trailing whitespace is JSON-insignificant and leaves the signed bytes unchanged.
        let original = verify(&bytes).unwrap();
        refused_or_identical(&extended, &original);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tampered_envelopes_are_refused(
        edits in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4)
    ) {
        let bytes = signed(&small_catalog());
        let original = verify(&bytes).unwrap();
        let mut mutated = bytes.clone();
        for (index, mask) in edits {
            mutated[index.index(bytes.len())] ^= mask;
        }
        if mutated != bytes {
            refused_or_identical(&mutated, &original);
        }
    }

    #[test]
    fn spliced_envelopes_are_refused(
        start in any::<prop::sample::Index>(),
        len in 0usize..64,
        insert in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let bytes = signed(&small_catalog());
        let original = verify(&bytes).unwrap();
        let start = start.index(bytes.len());
        let end = (start + len).min(bytes.len());
        let mut mutated = bytes[..start].to_vec();
        mutated.extend_from_slice(&insert);
        mutated.extend_from_slice(&bytes[end..]);
        refused_or_identical(&mutated, &original);
    }

    #[test]
    fn sign_then_verify_round_trips(
        serial_offset in 0u64..1_000_000,
        names in prop::collection::btree_set("[a-z][a-z0-9-]{0,20}", 0..8),
        text in any::<String>(),
    ) {
        let mut resources: Vec<Resource> = names.iter().map(|n| package(n)).collect();
        resources.push(text_file("/etc/motd", &text));
        let mut catalog = catalog_with(resources);
        catalog.serial = Serial(catalog.serial.0 - serial_offset);
        let verified = verify(&signed(&catalog)).unwrap();
        prop_assert_eq!(verified.catalog, catalog);
    }

    #[test]
    fn verify_catalog_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = verify(&bytes);
    }

    #[test]
    fn verify_catalog_never_panics_on_json_like_text(text in r#"[\[\]{}":,0-9a-z_ \\]{0,300}"#) {
        let _ = verify(text.as_bytes());
    }

    #[test]
    fn strict_parsers_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = strict::from_slice::<Catalog>(&bytes, MAX_CATALOG_BYTES);
        let _ = strict::from_slice::<RunReport>(&bytes, MAX_REPORT_BYTES);
        let _ = strict::from_slice::<EnrollRequest>(&bytes, MAX_ENROLL_BYTES);
    }

    #[test]
    fn strict_parsers_never_panic_on_json_like_text(text in r#"[\[\]{}":,0-9a-z_ \\]{0,300}"#) {
        let _ = strict::from_slice::<Catalog>(text.as_bytes(), MAX_CATALOG_BYTES);
        let _ = strict::from_slice::<RunReport>(text.as_bytes(), MAX_REPORT_BYTES);
        let _ = strict::from_slice::<EnrollRequest>(text.as_bytes(), MAX_ENROLL_BYTES);
    }

    #[test]
    fn verify_request_never_panics(
        public in any::<[u8; 32]>(),
        method in any::<String>(),
        path in any::<String>(),
        key in any::<String>(),
        timestamp in any::<String>(),
        nonce in any::<String>(),
        signature in any::<String>(),
        body in prop::collection::vec(any::<u8>(), 0..64),
        now in any::<i64>(),
        skew in any::<u32>(),
    ) {
        let headers = SignedRequestHeaders { key: KeyId(key), timestamp, nonce, signature };
        let _ = verify_request(&public, &method, &path, &headers, &body, Timestamp(now), skew);
        let _ = steward_protocol::request::canonical_request(&method, &path, Timestamp(now), &headers.nonce, &body);
    }

    #[test]
    fn signed_requests_verify_and_tampered_ones_do_not(
        seed in any::<[u8; 32]>(),
        path in "/[!-~]{0,100}",
        body in prop::collection::vec(any::<u8>(), 0..256),
        nonce in any::<[u8; 16]>(),
        flip in any::<prop::sample::Index>(),
    ) {
        let key = SigningKeyPair::from_bytes(seed);
        let nonce = steward_protocol::request::nonce_from_bytes(nonce);
        let headers = sign_request(&key, "POST", &path, NOW, &nonce, &body).unwrap();
        prop_assert_eq!(verify_request(&key.public_bytes(), "POST", &path, &headers, &body, NOW, 60), Ok(()));
        let mut tampered = body.clone();
        if tampered.is_empty() {
            tampered.push(0);
        } else {
            let i = flip.index(tampered.len());
            tampered[i] ^= 1;
        }
        prop_assert_eq!(
            verify_request(&key.public_bytes(), "POST", &path, &headers, &tampered, NOW, 60),
            Err(RequestRefusal::BadSignature)
        );
    }
}
