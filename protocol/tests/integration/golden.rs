//! Golden vectors: a signed catalog envelope committed as bytes, so the wire format (field names
//! and order, encodings, signing context, key ids) cannot drift silently.
//!
//! Ed25519 signatures are deterministic and the one sealed secret uses a seeded generator, so
//! `sign_catalog` must reproduce the file byte for byte. After an intended format change,
//! regenerate with:
//!
//! ```text
//! STEWARD_BLESS=1 cargo test -p steward-protocol --test integration golden::bless
//! ```
//!
//! and bump `CATALOG_FORMAT_VERSION` if old agents cannot read the new bytes.

use std::path::PathBuf;

use steward_protocol::envelope::canonical_bytes;
use steward_protocol::seal::open;
use steward_protocol::*;

use crate::common::*;

/// The root key fingerprint of the fixed root seed, written out so that a change in key id
/// derivation is caught too.
const GOLDEN_ROOT_KEY_ID: &str =
    "sha256:10ba682c8ad13513971e8b56881aab8bd702bb807796eca81932c735a94d6e6d";

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn envelope_path() -> PathBuf {
    golden_dir().join("catalog-envelope.json")
}

fn payload_path() -> PathBuf {
    golden_dir().join("catalog-payload.json")
}

fn read(path: PathBuf) -> Vec<u8> {
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "reading {}: {e}; bless with STEWARD_BLESS=1",
            path.display()
        )
    })
}

#[test]
fn bless() {
    if std::env::var_os("STEWARD_BLESS").is_some_and(|v| v == "1") {
        let envelope = signed(&full_catalog());
        std::fs::create_dir_all(golden_dir()).unwrap();
        std::fs::write(envelope_path(), &envelope).unwrap();
        // The decoded payload, for reviewers: the envelope itself is base64.
        std::fs::write(payload_path(), canonical_bytes(&full_catalog())).unwrap();
    }
}

#[test]
fn golden_catalog_envelope_still_verifies() {
    let bytes = read(envelope_path());
    assert_eq!(root().key_id().as_str(), GOLDEN_ROOT_KEY_ID);
    let verified = verify_catalog(
        &bytes,
        &KeyId(GOLDEN_ROOT_KEY_ID.into()),
        &node(),
        None,
        NOW,
    )
    .unwrap();
    assert_eq!(verified.catalog, full_catalog());
    assert_eq!(canonical_bytes(&verified.catalog), read(payload_path()));
    let secret = verified
        .catalog
        .resources
        .iter()
        .find_map(|r| match &r.spec {
            ResourceSpec::File(FileSpec {
                content: FileContent::Sealed(sealed),
                ..
            }) => Some(sealed),
            _ => None,
        })
        .unwrap();
    assert_eq!(
        open(secret, &node_encryption_key()).unwrap().expose(),
        "CANARY-golden-kubeconfig"
    );
}

#[test]
fn sign_catalog_reproduces_golden_envelope_byte_for_byte() {
    let golden = read(envelope_path());
    let fresh = signed(&full_catalog());
    assert!(
        fresh == golden,
        "the signed catalog envelope changed; if intended, bless with STEWARD_BLESS=1\nnow:    {}\ngolden: {}",
        String::from_utf8_lossy(&fresh),
        String::from_utf8_lossy(&golden)
    );
}
