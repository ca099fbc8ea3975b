//! Sealed secrets in catalogs (DESIGN §5 "Secrets", THREATS K1): sealing replaces every
//! plaintext, only the node's key opens it, and no `Debug` of any type shows a secret.

use steward_protocol::envelope::canonical_bytes;
use steward_protocol::seal::{
    open, seal, seal_catalog_secrets, EncryptionKeyPair, OsRng, SealError,
};
use steward_protocol::*;

use crate::common::*;

const CANARY: &str = "CANARY-5f0e9c1a-7d3b-4f6e-9a21-secret-token";

fn sealed_file(resource: &Resource) -> &SealedValue {
    match &resource.spec {
        ResourceSpec::File(FileSpec {
            content: FileContent::Sealed(sealed),
            ..
        }) => sealed,
        other => panic!("not a sealed file: {other:?}"),
    }
}

#[test]
fn catalog_json_after_sealing_does_not_contain_the_plaintext() {
    let mut catalog = catalog_with(vec![
        secret_file("/home/emo/.kube/config", CANARY),
        text_file("/etc/motd", "hi"),
    ]);
    assert!(catalog.ensure_sealed().is_err());
    seal_catalog_secrets(
        &mut catalog,
        &node_encryption_key().public_bytes(),
        &mut OsRng,
    );
    assert_eq!(catalog.ensure_sealed(), Ok(()));

    let payload = canonical_bytes(&catalog);
    let envelope = signed(&catalog);
    for haystack in [&payload, &envelope] {
        let text = String::from_utf8_lossy(haystack);
        assert!(!text.contains(CANARY), "plaintext in {text}");
        assert!(
            !text.contains(&b64(CANARY.as_bytes())[..20]),
            "base64 plaintext in {text}"
        );
    }
    // Text content is untouched.
    assert!(String::from_utf8(payload)
        .unwrap()
        .contains("{\"text\":\"hi\"}"));

    // The agent verifies, then opens with its key at write time.
    let verified = verify(&envelope).unwrap();
    let sealed = sealed_file(&verified.catalog.resources[0]);
    assert_eq!(
        open(sealed, &node_encryption_key()).unwrap().expose(),
        CANARY
    );
}

#[test]
fn sealed_catalog_value_opens_only_with_the_nodes_key() {
    let mut catalog = catalog_with(vec![secret_file("/etc/token", CANARY)]);
    seal_catalog_secrets(
        &mut catalog,
        &node_encryption_key().public_bytes(),
        &mut TestRng::new(1),
    );
    let sealed = sealed_file(&catalog.resources[0]);
    let other_node = EncryptionKeyPair::from_bytes([0x34; 32]);
    assert_eq!(open(sealed, &other_node), Err(SealError::Decrypt));
    assert_eq!(
        open(sealed, &node_encryption_key()).unwrap().expose(),
        CANARY
    );
    // Sealing is randomized: the same secret sealed twice differs (no equality oracle).
    let again = seal(
        &node_encryption_key().public_bytes(),
        CANARY.as_bytes(),
        &mut TestRng::new(2),
    );
    assert_ne!(again.ciphertext, sealed.ciphertext);
}

#[test]
fn unsealed_catalog_serializes_redacted_and_is_never_signed() {
    let catalog = catalog_with(vec![secret_file("/etc/token", CANARY)]);
    let json = String::from_utf8(canonical_bytes(&catalog)).unwrap();
    assert!(!json.contains(CANARY), "{json}");
    assert!(json.contains(REDACTED), "{json}");
    assert!(matches!(
        steward_protocol::sign_catalog(&catalog, &catalog_key(), &certificate()),
        Err(SignError::InvalidCatalog(CatalogError::UnsealedSecret(_)))
    ));
}

#[test]
fn secret_never_appears_in_debug_of_any_type() {
    let unsealed = catalog_with(vec![secret_file("/etc/token", CANARY)]);
    let mut sealed = unsealed.clone();
    seal_catalog_secrets(
        &mut sealed,
        &node_encryption_key().public_bytes(),
        &mut OsRng,
    );
    let verified = verify(&signed(&sealed)).unwrap();
    let opened = open(
        sealed_file(&verified.catalog.resources[0]),
        &node_encryption_key(),
    )
    .unwrap();
    let sign_error =
        steward_protocol::sign_catalog(&unsealed, &catalog_key(), &certificate()).unwrap_err();
    let secret_bytes = [0x5e; 32];
    let signing_key = SigningKeyPair::from_bytes(secret_bytes);
    let encryption_key = EncryptionKeyPair::from_bytes(secret_bytes);

    let renderings = [
        format!("{unsealed:?}"),
        format!("{unsealed:#?}"),
        format!("{:?}", unsealed.resources[0]),
        format!("{:?}", unsealed.resources[0].spec),
        format!("{sealed:?}"),
        format!("{verified:?}"),
        format!("{opened:?}"),
        format!("{opened}"),
        format!("{sign_error:?} {sign_error}"),
        format!("{signing_key:?} {signing_key:#?}"),
        format!("{encryption_key:?} {encryption_key:#?}"),
        serde_json::to_string(&unsealed).unwrap(),
    ];
    for rendering in renderings {
        assert!(!rendering.contains(CANARY), "secret in {rendering}");
        assert!(
            !rendering.contains("94, 94, 94"),
            "key bytes in {rendering}"
        );
        assert!(
            !rendering.contains(&hex::encode(secret_bytes)),
            "key bytes in {rendering}"
        );
        assert!(
            !rendering.contains(&b64(&secret_bytes)),
            "key bytes in {rendering}"
        );
    }
    // The value itself is intact for whoever must write it.
    assert_eq!(opened.expose(), CANARY);
}
