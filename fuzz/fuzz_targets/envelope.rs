//! Fuzzes `verify_catalog`, the agent's single entry point for downloaded bytes.
//!
//! Every input is tried twice: as a raw envelope (against a fixed pinned root), and as a catalog
//! payload that is correctly signed by the certified key, so the fuzzer also reaches what sits
//! behind the signature (header check, strict parse, node/expiry/serial checks, validation).
//! Properties: no panic, and an accepted catalog survives a canonical round trip.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use steward_protocol::envelope::{
    canonical_bytes, issue_certificate, sign_document, verify_catalog, Accepted, CatalogEnvelope,
    CertificateEnvelope, SigningKeyPair,
};
use steward_protocol::strict;
use steward_protocol::{
    Catalog, DocumentType, KeyId, NodeId, Serial, Timestamp, MAX_CATALOG_BYTES,
};

/// 2026-01-01T00:00:00Z, as in the protocol tests.
const NOW: Timestamp = Timestamp(1_767_225_600);

struct Fixture {
    root_id: KeyId,
    catalog_key: SigningKeyPair,
    certificate: CertificateEnvelope,
    node: NodeId,
    last: Accepted,
}

static FIXTURE: LazyLock<Fixture> = LazyLock::new(|| {
    let root = SigningKeyPair::from_bytes([0x11; 32]);
    let catalog_key = SigningKeyPair::from_bytes([0x22; 32]);
    let certificate = issue_certificate(
        &root,
        &catalog_key.public_bytes(),
        NOW.plus_secs(-86_400),
        NOW.plus_secs(365 * 86_400),
    );
    Fixture {
        root_id: root.key_id(),
        catalog_key,
        certificate,
        node: NodeId("devvm".into()),
        last: Accepted {
            serial: Serial(1_000),
            digest: "sha256:0".into(),
            key_generation: 0,
        },
    }
});

fn check(bytes: &[u8], fixture: &Fixture) {
    for last in [None, Some(&fixture.last)] {
        if let Ok(verified) = verify_catalog(bytes, &fixture.root_id, &fixture.node, last, NOW) {
            let canonical = canonical_bytes(&verified.catalog);
            let again: Catalog = strict::from_slice(&canonical, MAX_CATALOG_BYTES)
                .expect("canonical bytes of an accepted catalog parse");
            assert_eq!(again, verified.catalog);
            assert_eq!(verified.catalog.node, fixture.node);
            assert!(verified.expires_at > NOW);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let fixture = &*FIXTURE;
    check(data, fixture);
    let envelope = CatalogEnvelope {
        catalog: sign_document(&fixture.catalog_key, DocumentType::Catalog, data),
        certificate: fixture.certificate.clone(),
    };
    check(&canonical_bytes(&envelope), fixture);
});
