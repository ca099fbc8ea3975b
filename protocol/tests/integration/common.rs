//! Fixtures shared by the integration tests: fixed keys, a fixed clock, small and full catalogs,
//! a deterministic random number generator and helpers to build (mis)signed envelopes.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sha2::{Digest, Sha256};
use steward_protocol::envelope::{
    canonical_bytes, issue_certificate, sign_catalog, sign_document, CatalogEnvelope,
    CertificateEnvelope, SignedDocument, SigningKeyPair,
};
use steward_protocol::seal::rand_core::{CryptoRng, RngCore};
use steward_protocol::seal::{seal_catalog_secrets, EncryptionKeyPair};
use steward_protocol::*;

/// 2026-01-01T00:00:00Z: "now" for every test.
pub const NOW: Timestamp = Timestamp(1_767_225_600);
pub const DAY: i64 = 86_400;

pub fn root() -> SigningKeyPair {
    SigningKeyPair::from_bytes([0x11; 32])
}

pub fn catalog_key() -> SigningKeyPair {
    SigningKeyPair::from_bytes([0x22; 32])
}

pub fn node_encryption_key() -> EncryptionKeyPair {
    EncryptionKeyPair::from_bytes([0x33; 32])
}

pub fn node() -> NodeId {
    NodeId("devvm".into())
}

pub fn certificate() -> CertificateEnvelope {
    issue_certificate(
        &root(),
        &catalog_key().public_bytes(),
        NOW.plus_secs(-DAY),
        NOW.plus_secs(365 * DAY),
    )
}

/// A deterministic stand-in for `OsRng` (SHA-256 in counter mode), so sealed fixtures and the
/// golden vector are reproducible. Never use outside tests.
pub struct TestRng {
    seed: [u8; 32],
    counter: u64,
}

impl TestRng {
    pub fn new(seed: u8) -> Self {
        TestRng {
            seed: [seed; 32],
            counter: 0,
        }
    }
}

impl RngCore for TestRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let block = Sha256::new()
                .chain_update(self.seed)
                .chain_update(self.counter.to_le_bytes())
                .finalize();
            self.counter += 1;
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }

    fn try_fill_bytes(
        &mut self,
        dest: &mut [u8],
    ) -> Result<(), steward_protocol::seal::rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for TestRng {}

pub fn catalog_with(resources: Vec<Resource>) -> Catalog {
    Catalog {
        document_type: DocumentType::Catalog,
        format_version: CATALOG_FORMAT_VERSION,
        node: node(),
        serial: Serial(NOW.0 as u64 * 1000),
        compiled_at: NOW,
        expires_at: NOW.plus_secs(7 * DAY),
        provenance: Provenance {
            site_hash: "0".repeat(64),
            vault_versions: BTreeMap::new(),
        },
        resources,
    }
}

pub fn package(name: &str) -> Resource {
    Resource::new(ResourceSpec::Package(PackageSpec { name: name.into() }))
}

pub fn text_file(path: &str, text: &str) -> Resource {
    Resource::new(ResourceSpec::File(FileSpec {
        path: path.into(),
        owner: "root".into(),
        group: "root".into(),
        mode: Mode(0o644),
        content: FileContent::Text(text.into()),
        replace: Replace::Always,
        backup: false,
    }))
}

pub fn secret_file(path: &str, secret: &str) -> Resource {
    Resource::new(ResourceSpec::File(FileSpec {
        path: path.into(),
        owner: "emo".into(),
        group: "emo".into(),
        mode: Mode(0o600),
        content: FileContent::Secret(Secret::new(secret.into())),
        replace: Replace::Always,
        backup: false,
    }))
}

/// A small catalog (two resources), for the exhaustive byte-flip test.
pub fn small_catalog() -> Catalog {
    let git = package("git");
    let motd = text_file("/etc/motd", "managed by steward\n").requiring(git.id.clone());
    catalog_with(vec![git, motd])
}

/// One resource of every type, including a secret sealed with a deterministic generator.
pub fn full_catalog() -> Catalog {
    let group = Resource::new(ResourceSpec::Group(GroupSpec {
        name: "k8s-users".into(),
        gid: Some(2000),
        system: false,
    }));
    let user = Resource::new(ResourceSpec::User(UserSpec {
        name: "emo".into(),
        uid: Some(1001),
        shell: "/bin/bash".into(),
        home: "/home/emo".into(),
        home_mode: Mode(0o700),
        groups: vec!["k8s-users".into()],
        comment: Some("Emil".into()),
        lock_at_creation: true,
        ensure: UserEnsure::Present,
        privileged_groups: Vec::new(),
        revoke_groups: Vec::new(),
        enforce: Vec::new(),
        tier: None,
    }))
    .requiring(group.id.clone());
    let purged = Resource::new(ResourceSpec::User(UserSpec {
        name: "bob".into(),
        uid: None,
        shell: "/bin/bash".into(),
        home: "/home/bob".into(),
        home_mode: Mode(0o700),
        groups: vec![],
        comment: None,
        lock_at_creation: false,
        ensure: UserEnsure::Purged {
            archive_dir: "/var/backups/steward".into(),
            terminate_sessions: true,
        },
        privileged_groups: Vec::new(),
        revoke_groups: Vec::new(),
        enforce: Vec::new(),
        tier: None,
    }));
    let code = Resource::new(ResourceSpec::Directory(DirectorySpec {
        path: "/home/emo/code".into(),
        owner: "emo".into(),
        group: "emo".into(),
        mode: Mode(0o755),
        replace: Default::default(),
    }))
    .requiring(user.id.clone());
    let kubeconfig = secret_file("/home/emo/.kube/config", "CANARY-golden-kubeconfig")
        .requiring(user.id.clone());
    let map = Resource::new(ResourceSpec::File(FileSpec {
        path: "/etc/ttyd-user-map".into(),
        owner: "root".into(),
        group: "root".into(),
        mode: Mode(0o644),
        content: FileContent::Text("emo 7681\n".into()),
        replace: Replace::IfMarked {
            marker: "# managed by steward".into(),
        },
        backup: true,
    }));
    let link = Resource::new(ResourceSpec::Symlink(SymlinkSpec {
        path: "/home/emo/workspace".into(),
        target: "/home/emo/code".into(),
        owner: "emo".into(),
        group: "emo".into(),
        replace: SymlinkReplace::IfAbsent,
    }))
    .requiring(code.id.clone());
    let clone = Resource::new(ResourceSpec::GitClone(GitCloneSpec {
        path: "/home/emo/code/tripit".into(),
        url: "https://git.example/tripit.git".into(),
        user: "emo".into(),
        branch: Some("main".into()),
        config: BTreeMap::from([("filter.git-crypt.required".into(), "true".into())]),
        remotes: BTreeMap::from([(
            "upstream".into(),
            "https://git.example/up/tripit.git".into(),
        )]),
        refresh: true,
        migrate_from: None,
    }))
    .requiring(code.id.clone());
    let service = Resource::new(ResourceSpec::Service(ServiceSpec {
        name: "ttyd@emo.service".into(),
        enable: true,
        ensure: ServiceState::Running,
        subscribes: vec![map.id.clone()],
        restart: Default::default(),
    }))
    .requiring(user.id.clone());
    let swap = Resource::new(ResourceSpec::Swap(SwapSpec {
        path: "/swapfile".into(),
        size_mib: 4096,
    }));
    let exec = Resource::new(ResourceSpec::Exec(ExecSpec {
        name: "refresh-cache".into(),
        command: vec!["/usr/bin/true".into(), "--flag".into()],
        user: Some("emo".into()),
        cwd: Some("/home/emo".into()),
        creates: Some("/home/emo/.cache/done".into()),
        unless: Some(vec!["/usr/bin/test".into(), "-e".into(), "/x".into()]),
        timeout_secs: 60,
        env: BTreeMap::from([("LANG".into(), "C.UTF-8".into())]),
    }))
    .requiring(user.id.clone());
    let mut catalog = catalog_with(vec![
        package("git"),
        group,
        user,
        purged,
        code,
        kubeconfig,
        map,
        link,
        clone,
        service,
        swap,
        exec,
    ]);
    catalog.provenance.vault_versions = BTreeMap::from([("secret/platform".into(), 7)]);
    seal_catalog_secrets(
        &mut catalog,
        &node_encryption_key().public_bytes(),
        &mut TestRng::new(0x44),
    );
    catalog
}

/// A correctly signed envelope of `catalog`.
pub fn signed(catalog: &Catalog) -> Vec<u8> {
    sign_catalog(catalog, &catalog_key(), &certificate()).unwrap()
}

/// An envelope of arbitrary payload bytes signed by `key` as a catalog, bypassing
/// `sign_catalog`'s checks: how a buggy or hostile server would sign.
pub fn signed_payload(
    payload: &[u8],
    key: &SigningKeyPair,
    certificate: &CertificateEnvelope,
) -> Vec<u8> {
    wrap(
        sign_document(key, DocumentType::Catalog, payload),
        certificate.clone(),
    )
}

pub fn wrap(catalog: SignedDocument, certificate: CertificateEnvelope) -> Vec<u8> {
    canonical_bytes(&CatalogEnvelope {
        catalog,
        certificate,
    })
}

pub fn verify(bytes: &[u8]) -> Result<VerifiedCatalog, Refusal> {
    verify_catalog(bytes, &root().key_id(), &node(), None, NOW)
}

pub fn parse_envelope(bytes: &[u8]) -> CatalogEnvelope {
    serde_json::from_slice(bytes).unwrap()
}

pub fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

pub fn unb64(text: &str) -> Vec<u8> {
    STANDARD.decode(text).unwrap()
}
