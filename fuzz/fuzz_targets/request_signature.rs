//! Fuzzes request signature verification (`verify_request`) with arbitrary headers, method,
//! path, body and clock. Properties: no panic; a request signed by the fixed key verifies
//! whenever its fields are well formed, and stops verifying when the body changes.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use steward_protocol::envelope::SigningKeyPair;
use steward_protocol::request::{canonical_request, sign_request, verify_request, RequestRefusal};
use steward_protocol::{KeyId, SignedRequestHeaders, Timestamp};

static AGENT: LazyLock<SigningKeyPair> = LazyLock::new(|| SigningKeyPair::from_bytes([0x44; 32]));

type Input = (
    String,
    String,
    String,
    String,
    String,
    Vec<u8>,
    i64,
    i64,
    u32,
    bool,
);

fuzz_target!(|input: Input| {
    let (method, path, timestamp, nonce, signature, body, ts, now, skew, own_key_id) = input;
    let agent = &*AGENT;
    let public = agent.public_bytes();
    let key = if own_key_id {
        agent.key_id()
    } else {
        KeyId(signature.clone())
    };

    // Arbitrary headers against the fixed key.
    let headers = SignedRequestHeaders {
        key,
        timestamp,
        nonce: nonce.clone(),
        signature,
    };
    let _ = verify_request(
        &public,
        &method,
        &path,
        &headers,
        &body,
        Timestamp(now),
        skew,
    );

    // A genuine signature over arbitrary fields.
    let well_formed = canonical_request(&method, &path, Timestamp(ts), &nonce, &body).is_ok();
    match sign_request(agent, &method, &path, Timestamp(ts), &nonce, &body) {
        Ok(signed) => {
            assert!(well_formed);
            assert_eq!(
                verify_request(&public, &method, &path, &signed, &body, Timestamp(ts), 0),
                Ok(())
            );
            let mut other_body = body.clone();
            other_body.push(0);
            assert_eq!(
                verify_request(
                    &public,
                    &method,
                    &path,
                    &signed,
                    &other_body,
                    Timestamp(ts),
                    0
                ),
                Err(RequestRefusal::BadSignature)
            );
        }
        Err(refusal) => {
            assert!(!well_formed);
            assert!(matches!(refusal, RequestRefusal::Malformed(_)));
        }
    }
});
