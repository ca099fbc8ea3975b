//! Sealed values: sensitive content encrypted to one node's X25519 public key.
//!
//! TODO(helper A): implement sealing/opening (crypto_box sealed boxes).

use serde::{Deserialize, Serialize};

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
