//! `verify_catalog`: acceptance, and one test (at least) per `Refusal` variant, named after the
//! THREATS rows where one exists.

use steward_protocol::envelope::{
    canonical_bytes, issue_certificate, issue_certificate_generation, sign_catalog, sign_document,
    CatalogKeyCertificate, CertificateEnvelope, Signature, SigningKeyPair,
    CERTIFICATE_CLOCK_LEEWAY_SECS, MAX_COMPILED_AT_LEAD_SECS, MAX_SERIAL_LEAD_MS,
};
use steward_protocol::*;

use crate::common::*;

#[test]
fn valid_catalog_round_trips_through_sign_and_verify() {
    let catalog = full_catalog();
    let bytes = signed(&catalog);
    let verified = verify(&bytes).unwrap();
    assert_eq!(verified.catalog, catalog);
    assert_eq!(verified.serial, catalog.serial);
    assert_eq!(verified.expires_at, catalog.expires_at);
    let payload = unb64(&parse_envelope(&bytes).catalog.payload);
    assert_eq!(payload, canonical_bytes(&catalog));
    assert_eq!(verified.digest, catalog_digest(&payload));
}

#[test]
fn agent_aborts_download_over_max_bytes() {
    let huge = vec![b' '; MAX_CATALOG_BYTES + 1];
    assert_eq!(verify(&huge), Err(Refusal::Oversize));
    // Exactly at the limit the size check passes and the (garbage) content is refused on its own merits.
    let at_limit = vec![b' '; MAX_CATALOG_BYTES];
    assert!(matches!(verify(&at_limit), Err(Refusal::Malformed(_))));
}

#[test]
fn malformed_envelope_is_refused() {
    for bad in [
        &b""[..],
        b"null",
        b"[]",
        b"{}",
        b"{\"catalog\":1}",
        b"\xff\xfe",
        b"{\"catalog\":{\"payload\":\"\",\"signatures\":[]}}",
    ] {
        assert!(
            matches!(verify(bad), Err(Refusal::Malformed(_))),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
    }
    // Payload that is not base64, under a signature by the certified key.
    let mut envelope = parse_envelope(&signed(&small_catalog()));
    envelope.catalog.payload = "!!!!".into();
    assert!(matches!(
        verify(&canonical_bytes(&envelope)),
        Err(Refusal::Malformed(_))
    ));
}

#[test]
fn catalog_envelope_rejects_unknown_fields_and_duplicate_keys() {
    let bytes = signed(&small_catalog());
    let text = String::from_utf8(bytes).unwrap();
    let extra = text.replacen('{', "{\"evil\":1,", 1);
    assert!(
        matches!(verify(extra.as_bytes()), Err(Refusal::Malformed(m)) if m.contains("unknown field"))
    );
    let dup = text.replacen('{', "{\"catalog\":{},", 1);
    assert!(
        matches!(verify(dup.as_bytes()), Err(Refusal::Malformed(m)) if m.contains("duplicate"))
    );
}

#[test]
fn agent_rejects_catalog_signed_by_unknown_key() {
    let catalog = small_catalog();
    // A MITM with its own root: the root key does not match the pin.
    let mitm_root = SigningKeyPair::from_bytes([0x99; 32]);
    let mitm_catalog_key = SigningKeyPair::from_bytes([0x98; 32]);
    let mitm_cert = issue_certificate(
        &mitm_root,
        &mitm_catalog_key.public_bytes(),
        NOW.plus_secs(-DAY),
        NOW.plus_secs(DAY),
    );
    let forged = signed_payload(&canonical_bytes(&catalog), &mitm_catalog_key, &mitm_cert);
    assert_eq!(verify(&forged), Err(Refusal::UnknownKey));

    // The genuine certificate, but the catalog signed by an uncertified key.
    let uncertified = signed_payload(
        &canonical_bytes(&catalog),
        &mitm_catalog_key,
        &certificate(),
    );
    assert_eq!(verify(&uncertified), Err(Refusal::UnknownKey));

    // The root key itself signing the catalog is not enough either: only the certified key signs catalogs.
    let by_root = signed_payload(&canonical_bytes(&catalog), &root(), &certificate());
    assert_eq!(verify(&by_root), Err(Refusal::UnknownKey));

    // A certificate whose signature names another key id than the root's.
    let mut envelope = parse_envelope(&signed(&catalog));
    envelope.certificate.document.signatures[0].keyid = mitm_root.key_id();
    assert_eq!(
        verify(&canonical_bytes(&envelope)),
        Err(Refusal::UnknownKey)
    );
}

#[test]
fn agent_rejects_catalog_with_bad_signature() {
    let catalog = small_catalog();
    let mut envelope = parse_envelope(&signed(&catalog));
    // A valid signature by the right key, over other bytes.
    let other = sign_document(&catalog_key(), DocumentType::Catalog, b"{}");
    envelope.catalog.signatures = other.signatures;
    assert_eq!(
        verify(&canonical_bytes(&envelope)),
        Err(Refusal::BadSignature)
    );

    // The certificate's signature replaced by the root's signature of another certificate.
    let mut envelope = parse_envelope(&signed(&catalog));
    let other_cert = issue_certificate(
        &root(),
        &catalog_key().public_bytes(),
        NOW.plus_secs(-2 * DAY),
        NOW.plus_secs(DAY),
    );
    envelope.certificate.document.signatures = other_cert.document.signatures;
    assert_eq!(
        verify(&canonical_bytes(&envelope)),
        Err(Refusal::BadSignature)
    );

    // Not a signature at all.
    let mut envelope = parse_envelope(&signed(&catalog));
    envelope.catalog.signatures[0].sig = b64(&[0; 63]);
    assert_eq!(
        verify(&canonical_bytes(&envelope)),
        Err(Refusal::BadSignature)
    );
}

#[test]
fn threshold_counts_each_key_once_in_an_envelope() {
    let mut envelope = parse_envelope(&signed(&small_catalog()));
    let duplicate: Signature = envelope.catalog.signatures[0].clone();
    envelope.catalog.signatures.push(duplicate);
    assert!(matches!(
        verify(&canonical_bytes(&envelope)),
        Err(Refusal::Malformed(_))
    ));
}

#[test]
fn agent_rejects_catalog_under_expired_certificate() {
    let catalog = small_catalog();
    let expired = issue_certificate(
        &root(),
        &catalog_key().public_bytes(),
        NOW.plus_secs(-30 * DAY),
        NOW,
    );
    let bytes = steward_protocol::sign_catalog(&catalog, &catalog_key(), &expired).unwrap();
    assert_eq!(verify(&bytes), Err(Refusal::ExpiredCertificate));

    let not_yet = issue_certificate(
        &root(),
        &catalog_key().public_bytes(),
        NOW.plus_secs(CERTIFICATE_CLOCK_LEEWAY_SECS + 1),
        NOW.plus_secs(30 * DAY),
    );
    let bytes = steward_protocol::sign_catalog(&catalog, &catalog_key(), &not_yet).unwrap();
    assert_eq!(verify(&bytes), Err(Refusal::ExpiredCertificate));

    // Within the leeway for a slightly slow agent clock: accepted.
    let fresh = issue_certificate(
        &root(),
        &catalog_key().public_bytes(),
        NOW.plus_secs(CERTIFICATE_CLOCK_LEEWAY_SECS),
        NOW.plus_secs(DAY),
    );
    let bytes = steward_protocol::sign_catalog(&catalog, &catalog_key(), &fresh).unwrap();
    assert!(verify(&bytes).is_ok());
}

#[test]
fn agent_rejects_validly_signed_non_catalog_document() {
    // The catalog key signs (in the catalog context) a payload whose type is a certificate.
    let certificate_payload = unb64(&certificate().document.payload);
    let confused = signed_payload(&certificate_payload, &catalog_key(), &certificate());
    assert_eq!(verify(&confused), Err(Refusal::WrongDocumentType));

    // A root-signed certificate presented as the catalog: its signature is in the certificate
    // context and by the root key, so it never verifies as a catalog.
    let mut envelope = parse_envelope(&signed(&small_catalog()));
    envelope.catalog = certificate().document;
    assert_eq!(
        verify(&canonical_bytes(&envelope)),
        Err(Refusal::UnknownKey)
    );

    // The root signs a catalog in the certificate context (a hostile "certificate").
    let mut envelope = parse_envelope(&signed(&small_catalog()));
    envelope.certificate.document = sign_document(
        &root(),
        DocumentType::CatalogKeyCertificate,
        &canonical_bytes(&small_catalog()),
    );
    assert_eq!(
        verify(&canonical_bytes(&envelope)),
        Err(Refusal::WrongDocumentType)
    );

    // A type this build has never heard of.
    let mut value = serde_json::to_value(small_catalog()).unwrap();
    value["type"] = "revocation_list".into();
    let unknown = signed_payload(
        &serde_json::to_vec(&value).unwrap(),
        &catalog_key(),
        &certificate(),
    );
    assert_eq!(verify(&unknown), Err(Refusal::WrongDocumentType));
}

#[test]
fn agent_rejects_unknown_format_version() {
    let mut catalog = small_catalog();
    catalog.format_version = CATALOG_FORMAT_VERSION + 1;
    let bytes = signed_payload(&canonical_bytes(&catalog), &catalog_key(), &certificate());
    assert_eq!(verify(&bytes), Err(Refusal::UnknownFormatVersion));

    // A future format may change everything but the header: still a typed refusal, not a parse error.
    let future = br#"{"type":"catalog","format_version":99,"resources":{"new":"shape"}}"#;
    assert_eq!(
        verify(&signed_payload(future, &catalog_key(), &certificate())),
        Err(Refusal::UnknownFormatVersion)
    );
    let huge = br#"{"type":"catalog","format_version":18446744073709551615}"#;
    assert_eq!(
        verify(&signed_payload(huge, &catalog_key(), &certificate())),
        Err(Refusal::UnknownFormatVersion)
    );

    // A certificate of an unknown format.
    let cert = CatalogKeyCertificate {
        document_type: DocumentType::CatalogKeyCertificate,
        format_version: 2,
        key: b64(&catalog_key().public_bytes()),
        key_id: catalog_key().key_id(),
        issued_at: NOW.plus_secs(-DAY),
        expires_at: NOW.plus_secs(DAY),
        key_generation: 0,
    };
    let mut envelope = parse_envelope(&signed(&small_catalog()));
    envelope.certificate.document = sign_document(
        &root(),
        DocumentType::CatalogKeyCertificate,
        &canonical_bytes(&cert),
    );
    assert_eq!(
        verify(&canonical_bytes(&envelope)),
        Err(Refusal::UnknownFormatVersion)
    );
}

#[test]
fn malformed_certificate_is_refused() {
    let base = CatalogKeyCertificate {
        document_type: DocumentType::CatalogKeyCertificate,
        format_version: CATALOG_FORMAT_VERSION,
        key: b64(&catalog_key().public_bytes()),
        key_id: catalog_key().key_id(),
        issued_at: NOW.plus_secs(-DAY),
        expires_at: NOW.plus_secs(DAY),
        key_generation: 0,
    };
    let mut wrong_id = base.clone();
    wrong_id.key_id = root().key_id();
    let mut short_key = base.clone();
    short_key.key = b64(&[1; 31]);
    for cert in [wrong_id, short_key] {
        let mut envelope = parse_envelope(&signed(&small_catalog()));
        envelope.certificate.document = sign_document(
            &root(),
            DocumentType::CatalogKeyCertificate,
            &canonical_bytes(&cert),
        );
        assert!(
            matches!(
                verify(&canonical_bytes(&envelope)),
                Err(Refusal::Malformed(_))
            ),
            "{cert:?}"
        );
    }
    let mut envelope = parse_envelope(&signed(&small_catalog()));
    envelope.certificate.root_key = "AAAA".into();
    assert!(matches!(
        verify(&canonical_bytes(&envelope)),
        Err(Refusal::Malformed(_))
    ));
}

#[test]
fn agent_rejects_catalog_for_other_host_id() {
    let bytes = signed(&small_catalog());
    assert_eq!(
        verify_catalog(
            &bytes,
            &root().key_id(),
            &NodeId("other-host".into()),
            None,
            NOW
        ),
        Err(Refusal::OtherNode)
    );
}

#[test]
fn agent_rejects_validly_signed_catalog_with_serial_lower_than_last_applied() {
    let catalog = small_catalog();
    let bytes = signed(&catalog);
    let last = Accepted {
        serial: Serial(catalog.serial.0 + 1),
        digest: "sha256:whatever".into(),
        key_generation: 0,
    };
    assert_eq!(
        verify_catalog(&bytes, &root().key_id(), &node(), Some(&last), NOW),
        Err(Refusal::SerialBelowLast)
    );
}

#[test]
fn agent_rejects_same_serial_different_digest() {
    let first = small_catalog();
    let accepted = verify(&signed(&first)).unwrap().accepted();
    let mut second = small_catalog();
    second.resources.push(package("vim"));
    assert_eq!(second.serial, first.serial);
    assert_eq!(
        verify_catalog(
            &signed(&second),
            &root().key_id(),
            &node(),
            Some(&accepted),
            NOW
        ),
        Err(Refusal::SameSerialOtherDigest)
    );
}

#[test]
fn same_serial_same_digest_is_reapplied_and_higher_serials_are_accepted() {
    let catalog = small_catalog();
    let bytes = signed(&catalog);
    let accepted = verify(&bytes).unwrap().accepted();
    assert!(verify_catalog(&bytes, &root().key_id(), &node(), Some(&accepted), NOW).is_ok());
    let mut next = small_catalog();
    next.serial = Serial(catalog.serial.0 + 1);
    next.resources.push(package("vim"));
    let verified = verify_catalog(
        &signed(&next),
        &root().key_id(),
        &node(),
        Some(&accepted),
        NOW,
    )
    .unwrap();
    assert_eq!(verified.serial, next.serial);
}

#[test]
fn agent_rejects_serial_overflow_u64_max() {
    for serial in [u64::MAX, u64::MAX - 1] {
        let mut catalog = small_catalog();
        catalog.serial = Serial(serial);
        assert_eq!(
            verify(&signed(&catalog)),
            Err(Refusal::SerialFromFuture),
            "{serial}"
        );
    }
}

#[test]
fn serial_more_than_a_day_ahead_of_now_is_refused() {
    let now_ms = NOW.0 as u64 * 1000;
    let mut catalog = small_catalog();
    catalog.serial = Serial(now_ms + MAX_SERIAL_LEAD_MS);
    assert!(verify(&signed(&catalog)).is_ok());
    catalog.serial = Serial(now_ms + MAX_SERIAL_LEAD_MS + 1);
    assert_eq!(verify(&signed(&catalog)), Err(Refusal::SerialFromFuture));
}

/// THREATS C6/R14 for `compiled_at`: a catalog "compiled" years ahead (and expiring later
/// still) is refused like a serial from the future, with the same one-day allowance.
#[test]
fn compiled_at_more_than_a_day_ahead_of_now_is_refused() {
    let mut catalog = small_catalog();
    catalog.compiled_at = NOW.plus_secs(MAX_COMPILED_AT_LEAD_SECS);
    assert!(verify(&signed(&catalog)).is_ok());
    catalog.compiled_at = NOW.plus_secs(MAX_COMPILED_AT_LEAD_SECS + 1);
    assert_eq!(verify(&signed(&catalog)), Err(Refusal::CompiledInFuture));
    // The red team's case: compiled in ten years, expiring in eleven, under a sane serial.
    catalog.compiled_at = NOW.plus_secs(10 * 365 * DAY);
    catalog.expires_at = NOW.plus_secs(11 * 365 * DAY);
    assert_eq!(verify(&signed(&catalog)), Err(Refusal::CompiledInFuture));
}

/// A catalog key certified at `generation`, valid around [`NOW`].
fn generation_certificate(key: &SigningKeyPair, generation: u64) -> CertificateEnvelope {
    issue_certificate_generation(
        &root(),
        &key.public_bytes(),
        NOW.plus_secs(-DAY),
        NOW.plus_secs(90 * DAY),
        generation,
    )
}

/// THREATS C7: once a host accepted a catalog signed by the rotated-in key (generation 2), a
/// catalog signed by the rotated-away key (generation 1) under its still-valid certificate is
/// refused, even with a higher serial: a stolen old key stops working at rotation.
#[test]
fn agent_rejects_catalog_key_of_an_older_generation_after_rotation() {
    let old_key = SigningKeyPair::from_bytes([0x51; 32]);
    let new_key = SigningKeyPair::from_bytes([0x52; 32]);
    let old_certificate = generation_certificate(&old_key, 1);
    let new_certificate = generation_certificate(&new_key, 2);
    let mut catalog = small_catalog();
    let before = sign_catalog(&catalog, &old_key, &old_certificate).unwrap();
    let accepted_old = verify(&before).unwrap().accepted();
    assert_eq!(accepted_old.key_generation, 1);

    catalog.serial = Serial(catalog.serial.0 + 1);
    let rotated = sign_catalog(&catalog, &new_key, &new_certificate).unwrap();
    let accepted = verify_catalog(
        &rotated,
        &root().key_id(),
        &node(),
        Some(&accepted_old),
        NOW,
    )
    .unwrap()
    .accepted();
    assert_eq!(accepted.key_generation, 2);

    // The thief signs a newer serial with the old key and its unexpired certificate.
    catalog.serial = Serial(catalog.serial.0 + 1);
    let stolen = sign_catalog(&catalog, &old_key, &old_certificate).unwrap();
    assert!(
        verify(&stolen).is_ok(),
        "valid for a host that never saw the new key"
    );
    assert_eq!(
        verify_catalog(&stolen, &root().key_id(), &node(), Some(&accepted), NOW),
        Err(Refusal::RetiredCatalogKey {
            got: 1,
            accepted: 2
        })
    );
    // The accepted envelope itself is still re-applied, and its key keeps signing.
    assert!(verify_catalog(&rotated, &root().key_id(), &node(), Some(&accepted), NOW).is_ok());
    let next = sign_catalog(&catalog, &new_key, &new_certificate).unwrap();
    assert!(verify_catalog(&next, &root().key_id(), &node(), Some(&accepted), NOW).is_ok());
}

/// Generations are upgrade-safe: a certificate of generation 0 (issued before generations
/// existed) has the very bytes it had then, and an `accepted.json` written before them reads
/// as generation 0, which accepts every certificate.
#[test]
fn certificates_and_accepted_state_without_a_generation_are_generation_zero() {
    let legacy = issue_certificate(
        &root(),
        &catalog_key().public_bytes(),
        NOW,
        NOW.plus_secs(DAY),
    );
    let payload = String::from_utf8(unb64(&legacy.document.payload)).unwrap();
    assert!(!payload.contains("key_generation"), "{payload}");
    assert_eq!(
        legacy,
        issue_certificate_generation(
            &root(),
            &catalog_key().public_bytes(),
            NOW,
            NOW.plus_secs(DAY),
            0
        )
    );
    let old_state: Accepted = serde_json::from_str(r#"{"serial":7,"digest":"sha256:ab"}"#).unwrap();
    assert_eq!(old_state.key_generation, 0);
    let mut catalog = small_catalog();
    catalog.serial = Serial(catalog.serial.0 + 7);
    let key = SigningKeyPair::from_bytes([0x53; 32]);
    let bytes = sign_catalog(&catalog, &key, &generation_certificate(&key, 5)).unwrap();
    let last = Accepted {
        serial: Serial(7),
        ..old_state
    };
    assert_eq!(
        verify_catalog(&bytes, &root().key_id(), &node(), Some(&last), NOW)
            .unwrap()
            .key_generation,
        5
    );
}

#[test]
fn agent_rejects_expired_catalog() {
    let mut catalog = small_catalog();
    catalog.expires_at = NOW;
    assert_eq!(verify(&signed(&catalog)), Err(Refusal::ExpiredCatalog));
    catalog.expires_at = NOW.plus_secs(1);
    assert!(verify(&signed(&catalog)).is_ok());
    // The same bytes expire with time (time injected, never slept).
    let bytes = signed(&catalog);
    assert_eq!(
        verify_catalog(&bytes, &root().key_id(), &node(), None, NOW.plus_secs(1)),
        Err(Refusal::ExpiredCatalog)
    );
}

#[test]
fn agent_rejects_signed_catalog_that_fails_validation() {
    let a = package("a").requiring(ResourceId::new("package", "b"));
    let b = package("b").requiring(a.id.clone());
    let cyclic = catalog_with(vec![a, b]);
    let bytes = signed_payload(&canonical_bytes(&cyclic), &catalog_key(), &certificate());
    assert!(matches!(
        verify(&bytes),
        Err(Refusal::InvalidCatalog(CatalogError::Cycle(_)))
    ));

    let traversal = catalog_with(vec![text_file(
        "/home/alice/../../etc/cron.d/x",
        "* * * * * root sh",
    )]);
    let bytes = signed_payload(&canonical_bytes(&traversal), &catalog_key(), &certificate());
    assert!(matches!(
        verify(&bytes),
        Err(Refusal::InvalidCatalog(CatalogError::BadPath { .. }))
    ));
}

#[test]
fn sign_catalog_refuses_invalid_unsealed_or_miscertified_catalogs() {
    let unsealed = catalog_with(vec![secret_file("/etc/token", "CANARY-unsealed")]);
    assert_eq!(
        steward_protocol::sign_catalog(&unsealed, &catalog_key(), &certificate()),
        Err(SignError::InvalidCatalog(CatalogError::UnsealedSecret(
            ResourceId::new("file", "/etc/token")
        )))
    );
    let invalid = catalog_with(vec![
        package("a").requiring(ResourceId::new("package", "zz"))
    ]);
    assert!(matches!(
        steward_protocol::sign_catalog(&invalid, &catalog_key(), &certificate()),
        Err(SignError::InvalidCatalog(
            CatalogError::UnknownDependency { .. }
        ))
    ));
    let other_key = SigningKeyPair::from_bytes([0x77; 32]);
    assert_eq!(
        steward_protocol::sign_catalog(&small_catalog(), &other_key, &certificate()),
        Err(SignError::CertificateMismatch)
    );
}

#[test]
fn refusal_messages_are_lowercase_and_never_quote_the_envelope() {
    let bytes = signed(&small_catalog());
    let text = String::from_utf8(bytes.clone()).unwrap();
    let mut refusals = vec![
        Refusal::Oversize,
        Refusal::UnknownKey,
        Refusal::BadSignature,
        Refusal::ExpiredCertificate,
        Refusal::WrongDocumentType,
        Refusal::UnknownFormatVersion,
        Refusal::OtherNode,
        Refusal::SerialBelowLast,
        Refusal::SameSerialOtherDigest,
        Refusal::SerialFromFuture,
        Refusal::CompiledInFuture,
        Refusal::RetiredCatalogKey {
            got: 1,
            accepted: 2,
        },
        Refusal::ExpiredCatalog,
        Refusal::InvalidCatalog(CatalogError::Cycle(ResourceId::new("package", "a"))),
    ];
    refusals.push(verify(text.replacen("\"", "\"\u{1b}[31m", 1).as_bytes()).unwrap_err());
    refusals.push(verify(&text.as_bytes()[..text.len() / 2]).unwrap_err());
    for refusal in refusals {
        let message = refusal.to_string();
        assert!(message.starts_with(|c: char| c.is_lowercase()), "{message}");
        assert!(!message.ends_with('.'), "{message}");
        assert!(message.len() < 300, "{message}");
        assert!(!message.contains('\u{1b}'), "{message}");
        assert!(
            !message.contains(&parse_envelope(&bytes).catalog.payload[..40]),
            "{message}"
        );
    }
}
