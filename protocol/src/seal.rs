//! Sealed values: sensitive content encrypted to one node's X25519 public key (DESIGN §5,
//! "Secrets"), so a TLS-terminating proxy, the server's database and the agent's catalog cache
//! never hold it in clear.
//!
//! It owns the node's [`EncryptionKeyPair`], [`seal`] / [`open`] (libsodium-compatible sealed
//! boxes from `crypto_box`) and [`seal_catalog_secrets`], which the server calls between compile
//! and signing.
//!
//! It must not read ambient randomness: the caller passes the random number generator
//! ([`OsRng`] in the server, a seeded generator in tests). It must not log, print or `Debug` a
//! secret key or a plaintext.

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use crypto_box::{PublicKey, SecretKey};
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::catalog::Catalog;
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
    for resource in &mut catalog.resources {
        if let ResourceSpec::File(file) = &mut resource.spec {
            if let FileContent::Secret(secret) = &file.content {
                let sealed = seal(recipient, secret.expose().as_bytes(), rng);
                // Dropping the Secret zeroes its buffer.
                file.content = FileContent::Sealed(sealed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
