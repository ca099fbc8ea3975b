//! `steward-agent verify` as a real binary: accepts a catalog signed under the pinned root and
//! refuses everything else, saying why.

use std::path::Path;
use std::process::{Command, Output};

use steward_protocol::envelope::{issue_certificate, sign_catalog, SigningKeyPair};
use steward_protocol::{
    Catalog, DocumentType, NodeId, PackageSpec, Provenance, Resource, ResourceSpec, Serial,
    Timestamp, CATALOG_FORMAT_VERSION,
};

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A catalog for `devvm`, signed by a catalog key certified by root seed 1.
fn signed_envelope() -> (Vec<u8>, String) {
    let root = SigningKeyPair::from_bytes([1; 32]);
    let catalog_key = SigningKeyPair::from_bytes([2; 32]);
    let now = Timestamp(now());
    let certificate = issue_certificate(
        &root,
        &catalog_key.public_bytes(),
        now.plus_secs(-60),
        now.plus_secs(86_400),
    );
    let catalog = Catalog {
        document_type: DocumentType::Catalog,
        format_version: CATALOG_FORMAT_VERSION,
        node: NodeId("devvm".into()),
        serial: Serial(u64::try_from(now.0).unwrap() * 1000),
        compiled_at: now,
        expires_at: now.plus_secs(3600),
        provenance: Provenance::default(),
        resources: vec![Resource::new(ResourceSpec::Package(PackageSpec {
            name: "git".into(),
        }))],
    };
    let bytes = sign_catalog(&catalog, &catalog_key, &certificate).unwrap();
    (bytes, root.key_id().0)
}

fn verify(file: &Path, trust: &str, node: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_steward-agent"))
        .args(["verify", "--catalog"])
        .arg(file)
        .args(["--trust", trust, "--node", node])
        .output()
        .unwrap()
}

#[test]
fn verify_accepts_a_catalog_signed_under_the_pinned_root() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, trust) = signed_envelope();
    let file = dir.path().join("catalog.json");
    std::fs::write(&file, &bytes).unwrap();
    let out = verify(&file, &trust, "devvm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.starts_with("accepted: node devvm, serial "),
        "{stdout}"
    );
    assert!(stdout.contains("1 resources (0 sealed)"), "{stdout}");
}

#[test]
fn verify_refuses_another_root_another_node_and_a_tampered_byte() {
    let dir = tempfile::tempdir().unwrap();
    let (bytes, trust) = signed_envelope();
    let file = dir.path().join("catalog.json");
    std::fs::write(&file, &bytes).unwrap();
    let other_root = SigningKeyPair::from_bytes([9; 32]).key_id().0;
    let mut tampered = bytes.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    let tampered_file = dir.path().join("tampered.json");
    std::fs::write(&tampered_file, &tampered).unwrap();
    let cases = [
        (
            &file,
            other_root.as_str(),
            "devvm",
            "not signed by a trusted key",
        ),
        (
            &file,
            trust.as_str(),
            "ws-01",
            "catalog is for another node",
        ),
        (&tampered_file, trust.as_str(), "devvm", ""),
    ];
    for (path, trust, node, expected) in cases {
        let out = verify(path, trust, node);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{node}: {stderr}");
        assert!(stderr.starts_with("refused: "), "{stderr}");
        assert!(
            stderr.contains(expected),
            "expected {expected:?} in {stderr}"
        );
        assert!(out.stdout.is_empty());
    }
    let out = verify(&file, "not-a-fingerprint", "devvm");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid root fingerprint"));
}
