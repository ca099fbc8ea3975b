//! THREATS C7 through the real `steward-agent run --catalog` against a sandbox root: the agent
//! persists the catalog key generation it applied (with the serial, before applying) and from
//! then on refuses a catalog signed by a rotated-away key, even under a certificate that is
//! still valid and with a higher serial. Nothing of the refused catalog is applied.

mod support;

use std::process::Output;

use steward_protocol::envelope::{issue_certificate_generation, sign_catalog, SigningKeyPair};
use steward_protocol::{
    DirectorySpec, Mode, Resource, ResourceSpec, RunReport, RunStatus, Timestamp,
};
use support::{catalog, now, root_key, Sandbox};

/// A catalog signed by the catalog key of `seed`, certified by the trusted root at `generation`.
fn signed_by(seed: u8, generation: u64, serial: u64, resources: Vec<Resource>) -> Vec<u8> {
    let key = SigningKeyPair::from_bytes([seed; 32]);
    let now = Timestamp(now());
    let certificate = issue_certificate_generation(
        &root_key(),
        &key.public_bytes(),
        now.plus_secs(-60),
        now.plus_secs(90 * 86_400),
        generation,
    );
    sign_catalog(&catalog("devvm", serial, resources), &key, &certificate).unwrap()
}

fn marker_dir(path: &str) -> Resource {
    Resource::new(ResourceSpec::Directory(DirectorySpec {
        path: path.into(),
        owner: "0".into(),
        group: "0".into(),
        mode: Mode(0o750),
        replace: Default::default(),
    }))
}

impl Sandbox {
    fn run(&self, bytes: &[u8]) -> (Output, RunReport) {
        let out = self.run_envelope(bytes, &[]);
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        (out, report)
    }

    fn accepted(&self) -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(self.state.join("accepted.json")).unwrap()).unwrap()
    }
}

#[test]
fn c7_after_applying_a_new_key_catalog_the_agent_refuses_the_rotated_away_key() {
    let sb = Sandbox::new();
    let serial = u64::try_from(now()).unwrap() * 1000;
    let (out, report) = sb.run(&signed_by(0x41, 7, serial, vec![]));
    assert_eq!(report.status, RunStatus::Unchanged, "{out:?}");
    assert_eq!(sb.accepted()["key_generation"], 7);

    // The rotation: the new key (generation 8) signs the next serial.
    let (out, report) = sb.run(&signed_by(
        0x42,
        8,
        serial + 1,
        vec![marker_dir("/srv/new")],
    ));
    assert_ne!(report.status, RunStatus::Error, "{out:?}");
    assert!(sb.root.join("srv/new").is_dir());
    assert_eq!(sb.accepted()["key_generation"], 8);

    // The old key, stolen: a higher serial under its still-valid certificate.
    let (out, report) = sb.run(&signed_by(
        0x41,
        7,
        serial + 2,
        vec![marker_dir("/srv/evil")],
    ));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report.status, RunStatus::Error);
    let message = report.message.unwrap_or_default();
    assert!(
        message.contains("key generation 7 is below the accepted generation 8"),
        "{message}"
    );
    assert!(!sb.root.join("srv/evil").exists(), "applied");
    assert_eq!(sb.accepted()["serial"], serial + 1);
    assert_eq!(sb.accepted()["key_generation"], 8);
}
