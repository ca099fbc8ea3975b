//! Strict parsing of every untrusted document (THREATS C12 and §4): duplicate keys, unknown
//! fields, round trips, and the same refusals through a validly signed envelope.

use std::collections::BTreeMap;

use steward_protocol::envelope::canonical_bytes;
use steward_protocol::strict::{from_slice, StrictError};
use steward_protocol::*;

use crate::common::*;

fn catalog_json() -> String {
    String::from_utf8(canonical_bytes(&full_catalog())).unwrap()
}

fn report() -> RunReport {
    let events = vec![ResourceEvent {
        resource: ResourceId::new("package", "git"),
        status: ResourceStatus::Changed,
        message: Some("installed".into()),
        diff: None,
        duration_ms: 1200,
        corrective: false,
        drift: None,
    }];
    RunReport {
        run_id: RunId::from_random_bytes([7; 16]),
        node: node(),
        catalog_serial: Some(Serial(42)),
        started_at: NOW,
        finished_at: NOW.plus_secs(2),
        duration_ms: 2000,
        noop: false,
        status: RunStatus::Changed,
        message: None,
        agent_version: "0.1.0".into(),
        facts: Facts {
            hostname: Some("devvm".into()),
            extra: BTreeMap::from([("rack".into(), "a1".into())]),
            ..Facts::default()
        },
        totals: Totals::of(&events),
        events,
    }
}

fn enroll() -> EnrollRequest {
    EnrollRequest {
        hostname: "devvm".into(),
        signing_key: b64(&catalog_key().public_bytes()),
        encryption_key: b64(&node_encryption_key().public_bytes()),
        facts: Facts {
            machine_id: Some("0123456789abcdef0123456789abcdef".into()),
            ..Facts::default()
        },
        token: Some("abc.def".into()),
        agent_version: "0.1.0".into(),
    }
}

#[test]
fn catalog_parser_rejects_duplicate_keys() {
    let json = catalog_json();
    // The signer saw "0644", a lenient applier would see "0666" (THREATS C12's example).
    let field = json.replacen(
        "\"mode\":\"0644\"",
        "\"mode\":\"0644\",\"mode\":\"0666\"",
        1,
    );
    // Inside a map (BTreeMap keeps the last value silently without the pre-pass).
    let map = json.replacen(
        "\"vault_versions\":{",
        "\"vault_versions\":{\"secret/platform\":1,",
        1,
    );
    // At the top level.
    let top = json.replacen("{", "{\"serial\":1,", 1);
    // The tag of an internally tagged enum.
    let tag = json.replacen(
        "{\"type\":\"package\"",
        "{\"type\":\"exec\",\"type\":\"package\"",
        1,
    );
    for (name, doc) in [("field", field), ("map", map), ("top", top), ("tag", tag)] {
        assert_ne!(doc, json, "{name}: fixture did not change");
        let err = from_slice::<Catalog>(doc.as_bytes(), MAX_CATALOG_BYTES).unwrap_err();
        assert!(
            matches!(err, StrictError::DuplicateKey { .. }),
            "{name}: {err:?}"
        );
        // And through a validly signed envelope: verified bytes, still refused by the parser.
        let refusal = verify(&signed_payload(
            doc.as_bytes(),
            &catalog_key(),
            &certificate(),
        ))
        .unwrap_err();
        assert!(
            matches!(&refusal, Refusal::Malformed(m) if m.contains("duplicate")),
            "{name}: {refusal:?}"
        );
    }
    // serde_json alone takes the map's last value: the reason for the pre-pass.
    let lenient: BTreeMap<String, u32> = serde_json::from_str(r#"{"a":1,"a":2}"#).unwrap();
    assert_eq!(lenient["a"], 2);
}

#[test]
fn catalog_parser_rejects_unknown_fields() {
    let json = catalog_json();
    let cases = [
        ("top", json.replacen("{", "{\"debug\":true,", 1)),
        (
            "provenance",
            json.replacen("\"site_hash\"", "\"extra\":1,\"site_hash\"", 1),
        ),
        (
            "resource",
            json.replacen("{\"id\":", "{\"unless_root\":1,\"id\":", 1),
        ),
        (
            "spec",
            json.replacen(
                "{\"type\":\"package\"",
                "{\"type\":\"package\",\"version\":\"1\"",
                1,
            ),
        ),
        (
            "sealed",
            json.replacen("{\"alg\":", "{\"key\":\"x\",\"alg\":", 1),
        ),
        (
            "unsealed secret",
            json.replacen("{\"text\":", "{\"secret\":", 1),
        ),
        (
            "unknown resource type",
            json.replacen("\"type\":\"swap\"", "\"type\":\"kernel_module\"", 1),
        ),
    ];
    for (name, doc) in cases {
        assert_ne!(doc, json, "{name}: fixture did not change");
        let err = from_slice::<Catalog>(doc.as_bytes(), MAX_CATALOG_BYTES).unwrap_err();
        assert!(matches!(err, StrictError::Syntax(_)), "{name}: {err:?}");
        let refusal = verify(&signed_payload(
            doc.as_bytes(),
            &catalog_key(),
            &certificate(),
        ))
        .unwrap_err();
        assert!(
            matches!(refusal, Refusal::Malformed(_)),
            "{name}: {refusal:?}"
        );
    }
}

#[test]
fn signed_payload_with_invalid_utf8_or_deep_nesting_is_refused() {
    let json = catalog_json();
    let mut bytes = json.into_bytes();
    let position = bytes.windows(5).position(|w| w == b"devvm").unwrap();
    bytes[position] = 0xff;
    let refusal = verify(&signed_payload(&bytes, &catalog_key(), &certificate())).unwrap_err();
    assert!(matches!(refusal, Refusal::Malformed(_)), "{refusal:?}");

    let deep = format!(
        r#"{{"type":"catalog","format_version":1,"x":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let refusal = verify(&signed_payload(
        deep.as_bytes(),
        &catalog_key(),
        &certificate(),
    ))
    .unwrap_err();
    assert!(matches!(refusal, Refusal::Malformed(_)), "{refusal:?}");
}

#[test]
fn wire_documents_round_trip_through_the_strict_parser() {
    let catalog = full_catalog();
    assert_eq!(
        from_slice::<Catalog>(&canonical_bytes(&catalog), MAX_CATALOG_BYTES).unwrap(),
        catalog
    );
    let report = report();
    assert_eq!(
        from_slice::<RunReport>(&canonical_bytes(&report), MAX_REPORT_BYTES).unwrap(),
        report
    );
    let enroll = enroll();
    assert_eq!(
        from_slice::<EnrollRequest>(&canonical_bytes(&enroll), MAX_ENROLL_BYTES).unwrap(),
        enroll
    );
    // Canonical bytes are stable: serialize, parse, serialize gives the same bytes.
    let again = from_slice::<Catalog>(&canonical_bytes(&catalog), MAX_CATALOG_BYTES).unwrap();
    assert_eq!(canonical_bytes(&again), canonical_bytes(&catalog));
}

#[test]
fn report_and_enroll_parsers_reject_duplicate_keys_unknown_fields_and_oversize() {
    let report = String::from_utf8(canonical_bytes(&report())).unwrap();
    let enroll = String::from_utf8(canonical_bytes(&enroll())).unwrap();
    let report_dup = report.replacen("\"extra\":{", "\"extra\":{\"rack\":\"b2\",", 1);
    let report_unknown = report.replacen("{", "{\"host\":\"other\",", 1);
    let enroll_dup = enroll.replacen("{", "{\"hostname\":\"evil\",", 1);
    let enroll_unknown = enroll.replacen("{", "{\"approved\":true,", 1);
    assert!(matches!(
        from_slice::<RunReport>(report_dup.as_bytes(), MAX_REPORT_BYTES),
        Err(StrictError::DuplicateKey { .. })
    ));
    assert!(matches!(
        from_slice::<RunReport>(report_unknown.as_bytes(), MAX_REPORT_BYTES),
        Err(StrictError::Syntax(_))
    ));
    assert!(matches!(
        from_slice::<EnrollRequest>(enroll_dup.as_bytes(), MAX_ENROLL_BYTES),
        Err(StrictError::DuplicateKey { .. })
    ));
    assert!(matches!(
        from_slice::<EnrollRequest>(enroll_unknown.as_bytes(), MAX_ENROLL_BYTES),
        Err(StrictError::Syntax(_))
    ));
    let big = vec![b' '; MAX_ENROLL_BYTES + 1];
    assert_eq!(
        from_slice::<EnrollRequest>(&big, MAX_ENROLL_BYTES),
        Err(StrictError::Oversize {
            len: MAX_ENROLL_BYTES + 1,
            max: MAX_ENROLL_BYTES
        })
    );
}

/// Renders `value` as JSON, repeating the first entry of the `target`-th object (in document
/// order) so that object has a duplicate key. Returns `None` when there is no such object.
fn with_duplicated_key(value: &serde_json::Value, target: usize) -> Option<String> {
    fn render(v: &serde_json::Value, target: usize, seen: &mut usize, out: &mut String) {
        match v {
            serde_json::Value::Object(map) => {
                let this = *seen;
                *seen += 1;
                out.push('{');
                let mut entries: Vec<(&String, &serde_json::Value)> = map.iter().collect();
                if this == target {
                    if let Some(first) = entries.first().copied() {
                        entries.push(first);
                    }
                }
                for (i, (k, val)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&serde_json::to_string(k).unwrap());
                    out.push(':');
                    render(val, target, seen, out);
                }
                out.push('}');
            }
            serde_json::Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    render(item, target, seen, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut seen = 0;
    let mut out = String::new();
    render(value, target, &mut seen, &mut out);
    (target < seen).then_some(out)
}

/// The verification hot path parses catalogs with `from_slice_typed`, which has no generic
/// duplicate-key pre-pass: duplicates must be refused by the types themselves (derive for
/// struct fields, `strict::unique_map` for every map). Duplicate a key in every object of a
/// catalog that uses every resource type and every map field, one object at a time.
#[test]
fn typed_catalog_parse_refuses_a_duplicate_key_in_every_object() {
    let payload = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/golden/catalog-payload.json"
    ))
    .unwrap();
    let value: serde_json::Value = serde_json::from_str(&payload).unwrap();
    let clean: Catalog =
        steward_protocol::strict::from_slice_typed(payload.as_bytes(), MAX_CATALOG_BYTES).unwrap();
    assert!(
        clean.resources.len() >= 10,
        "the golden catalog should use every resource type"
    );
    let mut objects = 0;
    while let Some(text) = with_duplicated_key(&value, objects) {
        let parsed = steward_protocol::strict::from_slice_typed::<Catalog>(
            text.as_bytes(),
            MAX_CATALOG_BYTES,
        );
        assert!(
            parsed.is_err(),
            "object {objects} accepted a duplicate key:\n{text}"
        );
        // The generic parser agrees.
        assert!(matches!(
            from_slice::<Catalog>(text.as_bytes(), MAX_CATALOG_BYTES),
            Err(StrictError::DuplicateKey { .. })
        ));
        objects += 1;
    }
    assert!(objects > 30, "only {objects} objects were tried");
}

#[test]
fn duplicate_map_keys_are_reported_as_duplicate_keys_on_the_typed_path() {
    let mut value: serde_json::Value = serde_json::from_str(&catalog_json()).unwrap();
    // Find a git_clone resource's config and write it with a repeated key by hand.
    let resources = value["resources"].as_array_mut().unwrap();
    let clone = resources
        .iter_mut()
        .find(|r| r["spec"]["type"] == "git_clone")
        .expect("the test catalog has a git_clone");
    clone["spec"]["config"] = serde_json::json!({"filter.git-crypt.smudge": "cat"});
    let rendered = serde_json::to_string(&value).unwrap().replacen(
        r#""filter.git-crypt.smudge":"cat""#,
        r#""filter.git-crypt.smudge":"cat","filter.git-crypt.smudge":"/tmp/evil""#,
        1,
    );
    assert_eq!(
        steward_protocol::strict::from_slice_typed::<Catalog>(
            rendered.as_bytes(),
            MAX_CATALOG_BYTES
        ),
        Err(StrictError::DuplicateKey {
            key: "filter.git-crypt.smudge".into()
        })
    );
}
