//! Sealed values: sensitive content encrypted to one node's X25519 public key (DESIGN §5,
//! "Secrets"), so a TLS-terminating proxy, the server's database and the agent's catalog cache
//! never hold it in clear.
//!
//! It owns the node's [`EncryptionKeyPair`], [`seal`] / [`open`] (libsodium-compatible sealed
//! boxes from `crypto_box`) and [`seal_catalog_secrets`], which the server calls between compile
//! and signing.
//!
//! [`seal_deterministic`] (and [`seal_catalog_secrets_deterministic`]) seal with an ephemeral
//! key derived from a secret sealing key and the value's place (node, serial, resource, the
//! recipient's key and the plaintext's digest) instead of a random one: the same catalog serial
//! then seals to the very same bytes every time, so a server can re-issue a serial it no longer
//! holds in memory (an agent refuses the same serial with other bytes). The sealed box's nonce
//! is derived from the ephemeral and recipient public keys, so it follows. Any other input gives
//! another ephemeral key, so no key or nonce is ever used for two different messages.
//!
//! It must not read ambient randomness: the caller passes the random number generator
//! ([`OsRng`] in the server, a seeded generator in tests) or the sealing key. It must not log,
//! print or `Debug` a secret key or a plaintext.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use crypto_box::{PublicKey, SecretKey};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::catalog::Catalog;
use crate::ids::{NodeId, ResourceId, Serial};
use crate::resource::{FileContent, ResourceSpec};
use crate::secret::{Secret, REDACTED};

/// rand_core 0.6, as used by `crypto_box`, for callers that bring their own generator.
pub use crypto_box::aead::rand_core;
/// The bound [`seal`] puts on its random number generator.
pub use crypto_box::aead::rand_core::CryptoRngCore;
/// The operating system's random number generator, for callers that seal (the server).
pub use crypto_box::aead::OsRng;

/// Ciphertext of a sensitive value, sealed to one node's X25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedValue {
    /// Algorithm tag, [`SEAL_ALGORITHM`].
    pub alg: String,
    /// Base64 (standard, padded) of the sealed box.
    pub ciphertext: String,
}

/// The only sealing algorithm: libsodium-compatible sealed box (X25519, XSalsa20-Poly1305).
pub const SEAL_ALGORITHM: &str = "x25519-xsalsa20poly1305-sealedbox";

/// A node's X25519 key pair for receiving sealed secrets. Its `Debug` shows the public key only;
/// the secret is zeroed on drop.
///
/// ```
/// use steward_protocol::seal::{open, seal, EncryptionKeyPair, OsRng};
/// let node = EncryptionKeyPair::from_bytes([7; 32]);
/// let sealed = seal(&node.public_bytes(), b"hunter2", &mut OsRng);
/// assert_eq!(open(&sealed, &node).unwrap().expose(), "hunter2");
/// assert!(!format!("{node:?}").contains("[7, 7"));
/// ```
#[derive(Clone)]
pub struct EncryptionKeyPair {
    secret: SecretKey,
}

impl EncryptionKeyPair {
    /// The key pair of a 32-byte X25519 secret (from the caller's random source, or read back
    /// from the agent's 0600 key file).
    pub fn from_bytes(mut secret: [u8; 32]) -> Self {
        let pair = EncryptionKeyPair {
            secret: SecretKey::from_bytes(secret),
        };
        secret.zeroize();
        pair
    }

    /// The raw 32-byte public key, as sent at enrollment.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.secret.public_key().to_bytes()
    }
}

impl fmt::Debug for EncryptionKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EncryptionKeyPair")
            .field("public", &STANDARD.encode(self.public_bytes()))
            .field("secret", &REDACTED)
            .finish()
    }
}

/// Why a sealed value could not be opened. Never carries plaintext or key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The `alg` tag is not [`SEAL_ALGORITHM`].
    #[error("unknown sealing algorithm; expected {SEAL_ALGORITHM}")]
    UnknownAlgorithm,
    /// The ciphertext is not standard padded base64.
    #[error("sealed value is not valid base64")]
    Base64,
    /// Authentication failed: sealed to another key, or tampered with.
    #[error(
        "sealed value does not open with this node's key (sealed to another key, or tampered with)"
    )]
    Decrypt,
    /// The plaintext is not UTF-8.
    #[error("sealed value does not hold utf-8 text")]
    NotUtf8,
}

/// Seals `plaintext` to `recipient_public` (a node's X25519 public key) with a fresh ephemeral
/// key drawn from `rng`.
///
/// # Panics
///
/// Never in practice: `crypto_box` reports an error only for plaintexts too large to address.
pub fn seal(
    recipient_public: &[u8; 32],
    plaintext: &[u8],
    rng: &mut impl CryptoRngCore,
) -> SealedValue {
    let recipient = PublicKey::from_bytes(*recipient_public);
    let ciphertext = recipient
        .seal(rng, plaintext)
        .expect("sealing into a Vec cannot fail");
    SealedValue {
        alg: SEAL_ALGORITHM.to_owned(),
        ciphertext: STANDARD.encode(ciphertext),
    }
}

/// Opens a sealed value with the node's key pair. Checks the algorithm tag, the base64, the
/// authentication tag and that the plaintext is UTF-8; the plaintext buffer is zeroed on every
/// failure path and owned by the returned [`Secret`] otherwise.
pub fn open(sealed: &SealedValue, key: &EncryptionKeyPair) -> Result<Secret, SealError> {
    if sealed.alg != SEAL_ALGORITHM {
        return Err(SealError::UnknownAlgorithm);
    }
    let ciphertext = STANDARD
        .decode(&sealed.ciphertext)
        .map_err(|_| SealError::Base64)?;
    let plaintext = key
        .secret
        .unseal(&ciphertext)
        .map_err(|_| SealError::Decrypt)?;
    match String::from_utf8(plaintext) {
        Ok(text) => Ok(Secret::new(text)),
        Err(e) => {
            e.into_bytes().zeroize();
            Err(SealError::NotUtf8)
        }
    }
}

/// Replaces every [`FileContent::Secret`] of `catalog` by a [`FileContent::Sealed`] value sealed
/// to `recipient` (the node's X25519 public key). Afterwards [`Catalog::ensure_sealed`] passes
/// and the catalog may be signed and stored.
pub fn seal_catalog_secrets(
    catalog: &mut Catalog,
    recipient: &[u8; 32],
    rng: &mut impl CryptoRngCore,
) {
    seal_secrets_with(catalog, |_, plaintext| seal(recipient, plaintext, rng));
}

/// Replaces every [`FileContent::Secret`] of `catalog` by what `seal` makes of its resource id
/// and plaintext.
fn seal_secrets_with(
    catalog: &mut Catalog,
    mut seal: impl FnMut(&ResourceId, &[u8]) -> SealedValue,
) {
    for resource in &mut catalog.resources {
        if let ResourceSpec::File(file) = &mut resource.spec {
            if let FileContent::Secret(secret) = &file.content {
                let sealed = seal(&resource.id, secret.expose().as_bytes());
                // Dropping the Secret zeroes its buffer.
                file.content = FileContent::Sealed(sealed);
            }
        }
    }
}

/// Domain separation of the ephemeral keys [`seal_deterministic`] derives.
const DETERMINISTIC_SEAL_CONTEXT: &[u8] = b"steward/v1/seal\0";

/// Seals `plaintext` to `recipient_public` like [`seal`], but with the ephemeral key derived
/// by HMAC-SHA256 keyed with `sealing_key` (a server secret) over the node, the catalog serial,
/// the resource id, the recipient's public key and the SHA-256 of the plaintext. The same inputs
/// give the same bytes; anything else gives an unrelated ephemeral key. Without `sealing_key`
/// the ephemeral key is as unpredictable as a random one, so the box is as confidential.
///
/// ```
/// use steward_protocol::seal::{open, seal_deterministic, EncryptionKeyPair};
/// use steward_protocol::{NodeId, ResourceId, Serial};
/// let node = EncryptionKeyPair::from_bytes([7; 32]);
/// let (id, resource) = (NodeId("devvm".into()), ResourceId::new("file", "/etc/token"));
/// let seal = |serial| {
///     seal_deterministic(&[9; 32], &node.public_bytes(), &id, Serial(serial), &resource, b"hunter2")
/// };
/// assert_eq!(seal(1), seal(1));
/// assert_ne!(seal(1), seal(2));
/// assert_eq!(open(&seal(1), &node).unwrap().expose(), "hunter2");
/// ```
///
/// # Panics
///
/// Never in practice: `crypto_box` reports an error only for plaintexts too large to address.
pub fn seal_deterministic(
    sealing_key: &[u8; 32],
    recipient_public: &[u8; 32],
    node: &NodeId,
    serial: Serial,
    resource: &ResourceId,
    plaintext: &[u8],
) -> SealedValue {
    let plaintext_digest: [u8; 32] = Sha256::digest(plaintext).into();
    let node = node.as_str().as_bytes();
    let resource = resource.as_str().as_bytes();
    let seed = Zeroizing::new(hmac_sha256(
        sealing_key,
        &[
            DETERMINISTIC_SEAL_CONTEXT,
            &(node.len() as u64).to_be_bytes(),
            node,
            &serial.0.to_be_bytes(),
            &(resource.len() as u64).to_be_bytes(),
            resource,
            recipient_public,
            &plaintext_digest,
        ],
    ));
    seal(
        recipient_public,
        plaintext,
        &mut DerivedRng {
            seed,
            counter: 0,
            block: Zeroizing::new([0; 32]),
            used: 32,
        },
    )
}

/// [`seal_catalog_secrets`] with [`seal_deterministic`]: every secret of `catalog` sealed for
/// the catalog's node and serial (set them first) under its resource id.
pub fn seal_catalog_secrets_deterministic(
    catalog: &mut Catalog,
    recipient: &[u8; 32],
    sealing_key: &[u8; 32],
) {
    let (node, serial) = (catalog.node.clone(), catalog.serial);
    seal_secrets_with(catalog, |id, plaintext| {
        seal_deterministic(sealing_key, recipient, &node, serial, id, plaintext)
    });
}

/// HMAC-SHA256 of the concatenated `parts` under `key`.
fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> [u8; 32] {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("hmac takes keys of any length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().into()
}

/// The "random" source of [`seal_deterministic`]: HMAC-SHA256 of a counter under the derived
/// seed, 32 bytes per block (the sealed box draws one block, its ephemeral secret key).
struct DerivedRng {
    seed: Zeroizing<[u8; 32]>,
    counter: u64,
    block: Zeroizing<[u8; 32]>,
    used: usize,
}

impl rand_core::RngCore for DerivedRng {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0; 4];
        self.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            if self.used == self.block.len() {
                *self.block = hmac_sha256(self.seed.as_slice(), &[&self.counter.to_be_bytes()]);
                self.counter += 1;
                self.used = 0;
            }
            *byte = self.block[self.used];
            self.used += 1;
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl rand_core::CryptoRng for DerivedRng {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        // Test case 2: a key shorter than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                b"Jefe",
                &[b"what do ya want ", b"for nothing?"]
            )),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block.
        assert_eq!(
            hex::encode(hmac_sha256(
                &[0xaa; 131],
                &[b"Test Using Larger Than Block-Size Key - Hash Key First"]
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn deterministic_sealing_repeats_bytes_only_for_the_same_inputs_and_opens() {
        let node_key = EncryptionKeyPair::from_bytes([1; 32]);
        let other_key = EncryptionKeyPair::from_bytes([2; 32]);
        let devvm = NodeId("devvm".into());
        let token = ResourceId::new("file", "/etc/token");
        let sealing_key = [3; 32];
        let sealed = |sealing_key: &[u8; 32],
                      recipient: &EncryptionKeyPair,
                      node: &NodeId,
                      serial: u64,
                      resource: &ResourceId,
                      plaintext: &str| {
            seal_deterministic(
                sealing_key,
                &recipient.public_bytes(),
                node,
                Serial(serial),
                resource,
                plaintext.as_bytes(),
            )
        };
        let first = sealed(&sealing_key, &node_key, &devvm, 7, &token, "s3cret");
        assert_eq!(first.alg, SEAL_ALGORITHM);
        assert_eq!(
            first,
            sealed(&sealing_key, &node_key, &devvm, 7, &token, "s3cret")
        );
        assert_eq!(open(&first, &node_key).unwrap().expose(), "s3cret");
        assert_eq!(open(&first, &other_key), Err(SealError::Decrypt));
        // Every input moves the bytes, the ephemeral public key (the first 32 bytes) included.
        let ephemeral =
            |value: &SealedValue| STANDARD.decode(&value.ciphertext).unwrap()[..32].to_vec();
        let others = [
            sealed(&sealing_key, &node_key, &devvm, 8, &token, "s3cret"),
            sealed(&[4; 32], &node_key, &devvm, 7, &token, "s3cret"),
            sealed(&sealing_key, &other_key, &devvm, 7, &token, "s3cret"),
            sealed(
                &sealing_key,
                &node_key,
                &NodeId("ws-01".into()),
                7,
                &token,
                "s3cret",
            ),
            sealed(
                &sealing_key,
                &node_key,
                &devvm,
                7,
                &ResourceId::new("file", "/etc/other"),
                "s3cret",
            ),
            sealed(&sealing_key, &node_key, &devvm, 7, &token, "s3cret!"),
        ];
        for other in &others {
            assert_ne!(other.ciphertext, first.ciphertext);
            assert_ne!(ephemeral(other), ephemeral(&first));
        }
        assert_eq!(open(&others[0], &node_key).unwrap().expose(), "s3cret");
    }

    #[test]
    fn catalog_secrets_seal_to_the_same_bytes_for_the_same_serial() {
        use crate::catalog::{DocumentType, Provenance};
        use crate::ids::Timestamp;
        use crate::resource::{FileSpec, Mode, Replace, Resource};

        let node_key = EncryptionKeyPair::from_bytes([5; 32]);
        let catalog = |serial: u64| {
            let mut catalog = Catalog {
                document_type: DocumentType::Catalog,
                format_version: crate::CATALOG_FORMAT_VERSION,
                node: NodeId("devvm".into()),
                serial: Serial(serial),
                compiled_at: Timestamp(1_700_000_000),
                expires_at: Timestamp(1_700_086_400),
                provenance: Provenance::default(),
                resources: vec![Resource::new(ResourceSpec::File(FileSpec {
                    path: "/etc/token".into(),
                    owner: "root".into(),
                    group: "root".into(),
                    mode: Mode(0o600),
                    content: FileContent::Secret(Secret::new("s3cret".into())),
                    replace: Replace::Always,
                    backup: false,
                }))],
            };
            seal_catalog_secrets_deterministic(&mut catalog, &node_key.public_bytes(), &[6; 32]);
            catalog
        };
        assert_eq!(catalog(1), catalog(1));
        assert_ne!(catalog(1).resources, catalog(2).resources);
        let ResourceSpec::File(file) = &catalog(1).resources[0].spec else {
            panic!("a file resource");
        };
        let FileContent::Sealed(sealed) = &file.content else {
            panic!("sealed content");
        };
        assert_eq!(open(sealed, &node_key).unwrap().expose(), "s3cret");
    }

    #[test]
    fn sealed_value_opens_only_with_the_right_key() {
        let node = EncryptionKeyPair::from_bytes([1; 32]);
        let other = EncryptionKeyPair::from_bytes([2; 32]);
        let sealed = seal(&node.public_bytes(), "tøken".as_bytes(), &mut OsRng);
        assert_eq!(sealed.alg, SEAL_ALGORITHM);
        assert_eq!(open(&sealed, &node).unwrap().expose(), "tøken");
        assert_eq!(open(&sealed, &other), Err(SealError::Decrypt));
    }

    #[test]
    fn sealing_twice_gives_different_ciphertexts() {
        let node = EncryptionKeyPair::from_bytes([1; 32]);
        let a = seal(&node.public_bytes(), b"same", &mut OsRng);
        let b = seal(&node.public_bytes(), b"same", &mut OsRng);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn open_refuses_tampering_wrong_algorithm_bad_base64_and_binary_plaintext() {
        let node = EncryptionKeyPair::from_bytes([1; 32]);
        let sealed = seal(&node.public_bytes(), b"secret", &mut OsRng);

        let mut wrong_alg = sealed.clone();
        wrong_alg.alg = "none".into();
        assert_eq!(open(&wrong_alg, &node), Err(SealError::UnknownAlgorithm));

        let mut bad_b64 = sealed.clone();
        bad_b64.ciphertext.push('!');
        assert_eq!(open(&bad_b64, &node), Err(SealError::Base64));

        let mut raw = STANDARD.decode(&sealed.ciphertext).unwrap();
        for i in 0..raw.len() {
            raw[i] ^= 0x01;
            let tampered = SealedValue {
                alg: SEAL_ALGORITHM.into(),
                ciphertext: STANDARD.encode(&raw),
            };
            assert_eq!(open(&tampered, &node), Err(SealError::Decrypt), "byte {i}");
            raw[i] ^= 0x01;
        }
        let short = SealedValue {
            alg: SEAL_ALGORITHM.into(),
            ciphertext: STANDARD.encode([0u8; 32]),
        };
        assert_eq!(open(&short, &node), Err(SealError::Decrypt));

        let binary = seal(&node.public_bytes(), &[0xff, 0xfe], &mut OsRng);
        assert_eq!(open(&binary, &node), Err(SealError::NotUtf8));
    }

    #[test]
    fn key_pair_debug_redacts_the_secret() {
        let node = EncryptionKeyPair::from_bytes([0xab; 32]);
        let debug = format!("{node:?}");
        assert!(debug.contains(REDACTED), "{debug}");
        assert!(!debug.contains("171, 171"), "{debug}");
        assert!(
            !debug.contains("ab, ab") && !debug.contains("abab"),
            "{debug}"
        );
        assert!(!debug.contains(&STANDARD.encode([0xab; 32])), "{debug}");
    }
}
