//! Signed documents, TUF style (DESIGN §5, THREATS §0.1–0.2): the catalog envelope, the root
//! key's certificate for the online catalog key, and [`verify_catalog`], the single function an
//! agent uses to turn downloaded bytes into a [`Catalog`] it may apply.
//!
//! It owns the ed25519 key wrapper ([`SigningKeyPair`]), the canonical payload bytes
//! ([`canonical_bytes`]), the per-type signing context ([`signing_message`]), signing
//! ([`issue_certificate`], [`sign_catalog`]) and verification.
//!
//! Rules it keeps:
//! - Signatures cover raw payload bytes, never a re-serialized value; verification happens on
//!   those bytes before they are parsed, and the parse is strict ([`crate::strict`]).
//! - Every signature is over `steward/v1/<type>\0<SHA-256 of the payload>`, so a validly signed
//!   document of one type is never accepted as another (THREATS C9). Signing the digest rather
//!   than the payload itself hashes a large catalog once (SHA-256, hardware-accelerated, and the
//!   same digest that identifies the catalog) instead of twice (ed25519's internal SHA-512 over
//!   the whole payload); it relies on SHA-256's collision resistance, as the digest already does.
//! - Verification is `verify_strict` (no malleable or small-order signatures or keys).
//! - Time and key bounds come from what the agent accepted and its clock: serials only go up
//!   and at most [`MAX_SERIAL_LEAD_MS`] ahead (THREATS C3, C6), `compiled_at` at most
//!   [`MAX_COMPILED_AT_LEAD_SECS`] ahead, and the catalog key's root-signed generation never
//!   below the one accepted, so a rotated-away key is refused from the first new-key catalog on
//!   (THREATS C7).
//!
//! It must not do I/O, read the clock or draw randomness: keys come from caller-supplied seed
//! bytes, "now" and the last accepted serial are arguments, and persisting the new serial is the
//! agent's job.
//!
//! ```
//! use steward_protocol::envelope::{issue_certificate, sign_catalog, verify_catalog, SigningKeyPair};
//! use steward_protocol::{Catalog, DocumentType, NodeId, Provenance, Serial, Timestamp, CATALOG_FORMAT_VERSION};
//!
//! let root = SigningKeyPair::from_bytes([1; 32]);
//! let catalog_key = SigningKeyPair::from_bytes([2; 32]);
//! let now = Timestamp(1_700_000_000);
//! let certificate = issue_certificate(&root, &catalog_key.public_bytes(), now, now.plus_secs(86_400 * 90));
//! let catalog = Catalog {
//!     document_type: DocumentType::Catalog,
//!     format_version: CATALOG_FORMAT_VERSION,
//!     node: NodeId("devvm".into()),
//!     serial: Serial(1_700_000_000_000),
//!     compiled_at: now,
//!     expires_at: now.plus_secs(86_400),
//!     provenance: Provenance::default(),
//!     resources: vec![],
//! };
//! let bytes = sign_catalog(&catalog, &catalog_key, &certificate).unwrap();
//!
//! let verified = verify_catalog(&bytes, &root.key_id(), &NodeId("devvm".into()), None, now).unwrap();
//! assert_eq!(verified.catalog, catalog);
//! // The agent persists `verified.accepted()` and passes it as `last` next time.
//! let again = verify_catalog(&bytes, &root.key_id(), &NodeId("devvm".into()), Some(&verified.accepted()), now);
//! assert!(again.is_ok());
//! ```

use std::collections::BTreeSet;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroize;

use crate::catalog::{Catalog, CatalogError, DocumentType};
use crate::ids::{KeyId, NodeId, Serial, Timestamp};
use crate::secret::REDACTED;
use crate::strict;
use crate::{CATALOG_FORMAT_VERSION, MAX_CATALOG_BYTES};

/// Prefix of every document signing context: `steward/v1/<type>\0<payload>`.
pub const SIGNING_CONTEXT_PREFIX: &[u8] = b"steward/v1/";

/// Most signature entries a signed document may list. Only the trusted key's entry is checked,
/// so this only bounds parsing work.
pub const MAX_SIGNATURES: usize = 16;

/// How far ahead of the agent's clock a certificate's `issued_at` may be, for agents whose
/// clock is a little slow (THREATS R14).
pub const CERTIFICATE_CLOCK_LEEWAY_SECS: i64 = 300;

/// How far a catalog serial may run ahead of the agent's clock (in milliseconds, like serials):
/// one day. Serials are `max(last + 1, now in ms)`, so anything further is a fast-forward
/// attack (THREATS C6), e.g. a stolen catalog key signing `u64::MAX - 1`.
pub const MAX_SERIAL_LEAD_MS: u64 = 24 * 60 * 60 * 1000;

/// How far a catalog's `compiled_at` may be ahead of the agent's clock: the same day as
/// [`MAX_SERIAL_LEAD_MS`]. A catalog "compiled" years ahead (with an expiry further still) is
/// a signing clock gone wrong or a stolen key minting long-lived catalogs.
pub const MAX_COMPILED_AT_LEAD_SECS: i64 = (MAX_SERIAL_LEAD_MS / 1000) as i64;

/// An ed25519 key pair: the root key, an online catalog key, or an agent's request key. Its
/// `Debug` shows the key id only; the secret is zeroed on drop.
///
/// ```
/// use steward_protocol::envelope::SigningKeyPair;
/// let key = SigningKeyPair::from_bytes([9; 32]);
/// assert!(key.key_id().as_str().starts_with("sha256:"));
/// assert!(format!("{key:?}").contains("<redacted>"));
/// ```
#[derive(Clone)]
pub struct SigningKeyPair {
    key: SigningKey,
}

impl SigningKeyPair {
    /// The key pair of a 32-byte ed25519 seed (from the caller's random source, or read back
    /// from a 0600 key file). Generation is the caller's business: this crate draws no randomness.
    pub fn from_bytes(mut seed: [u8; 32]) -> Self {
        let pair = SigningKeyPair {
            key: SigningKey::from_bytes(&seed),
        };
        seed.zeroize();
        pair
    }

    /// The raw 32-byte public key.
    pub fn public_bytes(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// The fingerprint of the public key (`sha256:<hex>`), what agents pin and signatures name.
    pub fn key_id(&self) -> KeyId {
        KeyId::of_public_key_bytes(&self.public_bytes())
    }

    /// Signs a document payload of the given type (over [`signing_message`]).
    pub fn sign(&self, document_type: DocumentType, payload: &[u8]) -> Signature {
        let signature = self
            .key
            .sign(&signing_message(document_type, &sha256(payload)));
        Signature {
            keyid: self.key_id(),
            sig: STANDARD.encode(signature.to_bytes()),
        }
    }

    /// Signs arbitrary bytes. Crate-private so that every document signature goes through
    /// [`SigningKeyPair::sign`] and its context; request signing has its own prefix.
    pub(crate) fn sign_raw(&self, message: &[u8]) -> [u8; 64] {
        self.key.sign(message).to_bytes()
    }
}

impl fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("key_id", &self.key_id().as_str())
            .field("secret", &REDACTED)
            .finish()
    }
}

/// One signature of a [`SignedDocument`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// Fingerprint of the signing key.
    pub keyid: KeyId,
    /// Base64 (standard, padded) of the 64-byte ed25519 signature over
    /// [`signing_message`]`(type, SHA-256 of the payload bytes)`.
    pub sig: String,
}

/// A signed payload: the exact bytes that were signed, and their signatures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDocument {
    /// Base64 (standard, padded) of the raw payload bytes (canonical JSON of the document).
    pub payload: String,
    /// Signatures; each key id may appear once.
    pub signatures: Vec<Signature>,
}

/// The root key's statement that an online catalog key may sign catalogs until `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogKeyCertificate {
    /// Always [`DocumentType::CatalogKeyCertificate`].
    #[serde(rename = "type")]
    pub document_type: DocumentType,
    /// [`CATALOG_FORMAT_VERSION`].
    pub format_version: u32,
    /// Base64 of the certified ed25519 public key.
    pub key: String,
    /// Fingerprint of `key`.
    pub key_id: KeyId,
    /// Start of validity.
    pub issued_at: Timestamp,
    /// End of validity: from this instant on, catalogs signed by `key` are refused.
    pub expires_at: Timestamp,
    /// The catalog key's generation: the same for every certificate of one key, higher for
    /// every key that replaces it (`keys rotate-catalog`). An agent remembers the highest
    /// generation it accepted and refuses certificates of lower ones, so a rotated-away key
    /// stops working on a host as soon as the host applied a catalog signed by its successor
    /// (THREATS C7), not when its certificate expires. Certificates issued before generations
    /// existed have none: generation 0 (and it is then left out of the payload, so their
    /// bytes, and older agents, are unchanged).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub key_generation: u64,
}

fn is_zero(value: &u64) -> bool {
    *value == 0
}

/// A [`CatalogKeyCertificate`] signed by the root key, with the root public key so an agent can
/// check it against the fingerprint it pinned at enrollment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateEnvelope {
    /// Base64 of the root ed25519 public key.
    pub root_key: String,
    /// The certificate, signed by the root key.
    pub document: SignedDocument,
}

/// What an agent downloads: the signed catalog and the certificate of the key that signed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogEnvelope {
    /// The catalog, signed by the certified catalog key.
    pub catalog: SignedDocument,
    /// The root's certificate for the catalog key.
    pub certificate: CertificateEnvelope,
}

/// What the agent remembers (durably) about the last catalog it accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accepted {
    /// Its serial.
    pub serial: Serial,
    /// Its [`catalog_digest`].
    pub digest: String,
    /// The [`CatalogKeyCertificate::key_generation`] of its signing key: certificates of lower
    /// generations are refused from then on. 0 when written by an agent that predates it.
    #[serde(default)]
    pub key_generation: u64,
}

/// A catalog that passed every check of [`verify_catalog`].
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCatalog {
    /// The catalog, validated.
    pub catalog: Catalog,
    /// Its serial.
    pub serial: Serial,
    /// [`catalog_digest`] of the signed payload bytes.
    pub digest: String,
    /// When it expires.
    pub expires_at: Timestamp,
    /// The generation of the catalog key that signed it.
    pub key_generation: u64,
}

impl VerifiedCatalog {
    /// What to persist after applying it, and pass as `last` to the next [`verify_catalog`].
    pub fn accepted(&self) -> Accepted {
        Accepted {
            serial: self.serial,
            digest: self.digest.clone(),
            key_generation: self.key_generation,
        }
    }
}

/// Why an agent refuses a catalog envelope. Messages never quote the envelope.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The envelope is over [`MAX_CATALOG_BYTES`]; nothing was parsed.
    #[error("catalog envelope is over the limit of {MAX_CATALOG_BYTES} bytes")]
    Oversize,
    /// The envelope, the certificate or the catalog does not parse strictly.
    #[error("malformed catalog envelope: {0}")]
    Malformed(String),
    /// The root key is not the pinned one, or the catalog is not signed by the certified key.
    #[error("catalog is not signed by a trusted key (root key not pinned, or catalog key not certified)")]
    UnknownKey,
    /// A signature by the trusted key does not verify.
    #[error("signature does not verify")]
    BadSignature,
    /// The catalog key certificate is expired or not yet valid.
    #[error("catalog key certificate is expired or not yet valid")]
    ExpiredCertificate,
    /// The catalog key's generation is below the one of a catalog already accepted: the key
    /// was rotated away (THREATS C7).
    #[error("catalog key generation {got} is below the accepted generation {accepted} (the key was rotated; refused)")]
    RetiredCatalogKey {
        /// The certificate's generation.
        got: u64,
        /// The highest generation accepted before.
        accepted: u64,
    },
    /// A validly signed document of another type.
    #[error("signed document is not of the expected type")]
    WrongDocumentType,
    /// A format version this build does not understand.
    #[error("unknown format version (this agent understands version {CATALOG_FORMAT_VERSION}); upgrade the agent")]
    UnknownFormatVersion,
    /// The catalog is for another node.
    #[error("catalog is for another node")]
    OtherNode,
    /// The serial is lower than the last applied one (rollback).
    #[error("catalog serial is below the last applied serial (rollback refused)")]
    SerialBelowLast,
    /// The serial equals the last applied one but the content differs.
    #[error("catalog has the last applied serial but different content")]
    SameSerialOtherDigest,
    /// The serial is more than [`MAX_SERIAL_LEAD_MS`] ahead of "now" (fast-forward).
    #[error("catalog serial is more than a day ahead of this host's clock (fast-forward refused)")]
    SerialFromFuture,
    /// `compiled_at` is more than [`MAX_COMPILED_AT_LEAD_SECS`] ahead of "now".
    #[error("catalog was compiled more than a day ahead of this host's clock (refused)")]
    CompiledInFuture,
    /// The catalog has expired.
    #[error("catalog has expired")]
    ExpiredCatalog,
    /// The catalog's resource graph is invalid (cycles, bad paths, ...).
    #[error("catalog failed validation")]
    InvalidCatalog(#[source] CatalogError),
}

/// Why the server refuses to sign a catalog.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// The catalog fails [`Catalog::validate`] or still holds unsealed secrets
    /// ([`Catalog::ensure_sealed`]).
    #[error("refusing to sign an invalid catalog")]
    InvalidCatalog(#[from] CatalogError),
    /// The certificate does not parse or certifies another key than the signing key.
    #[error("the certificate does not certify this catalog key; issue one with issue_certificate")]
    CertificateMismatch,
}

/// The canonical payload bytes of a wire document: compact JSON, struct fields in declaration
/// order, maps sorted (every wire map is a `BTreeMap`). Signing and digests use these bytes,
/// and verification uses the bytes received, never a re-serialization.
///
/// # Panics
///
/// If `T`'s `Serialize` fails, which this crate's wire types never do (no non-string map keys).
pub fn canonical_bytes<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    serde_json::to_vec(value).expect("wire types serialize to JSON")
}

/// The bytes a document signature covers: `steward/v1/` + type name + NUL + the SHA-256 of the
/// payload. Binding the type keeps a signature for one kind of document from validating another
/// (THREATS C9).
///
/// ```
/// use sha2::{Digest, Sha256};
/// use steward_protocol::envelope::signing_message;
/// use steward_protocol::DocumentType;
/// let digest: [u8; 32] = Sha256::digest(b"{}").into();
/// let mut expected = b"steward/v1/catalog\0".to_vec();
/// expected.extend_from_slice(&digest);
/// assert_eq!(signing_message(DocumentType::Catalog, &digest), expected);
/// ```
pub fn signing_message(document_type: DocumentType, payload_digest: &[u8; 32]) -> Vec<u8> {
    let name = document_type.as_str().as_bytes();
    let mut message = Vec::with_capacity(SIGNING_CONTEXT_PREFIX.len() + name.len() + 1 + 32);
    message.extend_from_slice(SIGNING_CONTEXT_PREFIX);
    message.extend_from_slice(name);
    message.push(0);
    message.extend_from_slice(payload_digest);
    message
}

/// SHA-256 of payload bytes.
fn sha256(payload: &[u8]) -> [u8; 32] {
    Sha256::digest(payload).into()
}

/// Signs `payload` as a document of `document_type` with one key.
pub fn sign_document(
    key: &SigningKeyPair,
    document_type: DocumentType,
    payload: &[u8],
) -> SignedDocument {
    SignedDocument {
        payload: STANDARD.encode(payload),
        signatures: vec![key.sign(document_type, payload)],
    }
}

/// The digest of a catalog's signed payload bytes: `sha256:<hex>`.
pub fn catalog_digest(payload_bytes: &[u8]) -> String {
    digest_text(&sha256(payload_bytes))
}

fn digest_text(digest: &[u8; 32]) -> String {
    format!("sha256:{}", hex::encode(digest))
}

/// Has the root key certify `catalog_public` (an online catalog key) from `issued_at` until
/// `expires_at`.
pub fn issue_certificate(
    root: &SigningKeyPair,
    catalog_public: &[u8; 32],
    issued_at: Timestamp,
    expires_at: Timestamp,
) -> CertificateEnvelope {
    issue_certificate_generation(root, catalog_public, issued_at, expires_at, 0)
}

/// [`issue_certificate`] for a key of generation `key_generation` (see
/// [`CatalogKeyCertificate::key_generation`]).
pub fn issue_certificate_generation(
    root: &SigningKeyPair,
    catalog_public: &[u8; 32],
    issued_at: Timestamp,
    expires_at: Timestamp,
    key_generation: u64,
) -> CertificateEnvelope {
    let certificate = CatalogKeyCertificate {
        document_type: DocumentType::CatalogKeyCertificate,
        format_version: CATALOG_FORMAT_VERSION,
        key: STANDARD.encode(catalog_public),
        key_id: KeyId::of_public_key_bytes(catalog_public),
        issued_at,
        expires_at,
        key_generation,
    };
    CertificateEnvelope {
        root_key: STANDARD.encode(root.public_bytes()),
        document: sign_document(
            root,
            DocumentType::CatalogKeyCertificate,
            &canonical_bytes(&certificate),
        ),
    }
}

/// Signs a catalog with the online catalog key and wraps it with the key's certificate. Returns
/// the envelope's JSON bytes, exactly what is stored and served.
///
/// Refuses a catalog that fails [`Catalog::validate`] or [`Catalog::ensure_sealed`] (an unsealed
/// secret is never signed, stored or served), and a certificate for another key.
pub fn sign_catalog(
    catalog: &Catalog,
    catalog_key: &SigningKeyPair,
    certificate: &CertificateEnvelope,
) -> Result<Vec<u8>, SignError> {
    catalog.validate()?;
    catalog.ensure_sealed()?;
    let certified = STANDARD
        .decode(&certificate.document.payload)
        .ok()
        .and_then(|payload| {
            strict::from_slice::<CatalogKeyCertificate>(&payload, MAX_CATALOG_BYTES).ok()
        })
        .ok_or(SignError::CertificateMismatch)?;
    if certified.key_id != catalog_key.key_id() {
        return Err(SignError::CertificateMismatch);
    }
    let payload = canonical_bytes(catalog);
    let envelope = CatalogEnvelope {
        catalog: sign_document(catalog_key, DocumentType::Catalog, &payload),
        certificate: certificate.clone(),
    };
    Ok(canonical_bytes(&envelope))
}

/// Verifies a downloaded catalog envelope and returns the catalog only if it may be applied.
///
/// - `pinned_root`: the root key fingerprint pinned at enrollment (from the join string).
/// - `node`: this node's id.
/// - `last`: what was accepted last time (durably persisted by the agent), if anything.
/// - `now`: one instant for the whole run (THREATS R14), never read here.
///
/// Checks, in order, each with its own [`Refusal`]: size; strict parse of the envelope; root
/// key fingerprint equals `pinned_root`; the root's signature on the certificate; the
/// certificate's type, format version and validity window; its key generation not below
/// `last`'s (a rotated-away key); the catalog signature by exactly the certified key; only
/// then the payload: its type and format version (leniently, for a typed refusal), a strict
/// parse, node, expiry, `compiled_at` at most [`MAX_COMPILED_AT_LEAD_SECS`] ahead, serial
/// (rollback, same serial with other content, fast-forward beyond [`MAX_SERIAL_LEAD_MS`]) and
/// [`Catalog::validate`].
///
/// A catalog whose serial and digest equal `last` is accepted again (re-apply).
pub fn verify_catalog(
    envelope_bytes: &[u8],
    pinned_root: &KeyId,
    node: &NodeId,
    last: Option<&Accepted>,
    now: Timestamp,
) -> Result<VerifiedCatalog, Refusal> {
    if envelope_bytes.len() > MAX_CATALOG_BYTES {
        return Err(Refusal::Oversize);
    }
    let envelope: CatalogEnvelope = strict::from_slice(envelope_bytes, MAX_CATALOG_BYTES)
        .map_err(|e| malformed("envelope", e))?;
    let (catalog_key_id, catalog_key, key_generation) =
        verify_certificate(&envelope.certificate, pinned_root, now)?;
    if let Some(last) = last {
        if key_generation < last.key_generation {
            return Err(Refusal::RetiredCatalogKey {
                got: key_generation,
                accepted: last.key_generation,
            });
        }
    }
    let (payload, payload_digest) = verify_document(
        &envelope.catalog,
        DocumentType::Catalog,
        &catalog_key_id,
        &catalog_key,
    )?;

    // The bytes are authentic; now read them. The strict typed parse comes first (it is the
    // common case, and one pass over a large payload); only when it fails is the header read
    // leniently, to tell another document type or format version from a malformed catalog.
    let catalog: Catalog = match strict::from_slice_typed(&payload, MAX_CATALOG_BYTES) {
        Ok(catalog) => catalog,
        Err(error) => {
            check_header(&payload, DocumentType::Catalog, "catalog")?;
            return Err(malformed("catalog", error));
        }
    };
    if catalog.document_type != DocumentType::Catalog {
        return Err(Refusal::WrongDocumentType);
    }
    if catalog.format_version != CATALOG_FORMAT_VERSION {
        return Err(Refusal::UnknownFormatVersion);
    }
    if catalog.node != *node {
        return Err(Refusal::OtherNode);
    }
    if now >= catalog.expires_at {
        return Err(Refusal::ExpiredCatalog);
    }
    if catalog.compiled_at > now.plus_secs(MAX_COMPILED_AT_LEAD_SECS) {
        return Err(Refusal::CompiledInFuture);
    }
    let digest = digest_text(&payload_digest);
    if let Some(last) = last {
        if catalog.serial < last.serial {
            return Err(Refusal::SerialBelowLast);
        }
        if catalog.serial == last.serial && digest != last.digest {
            return Err(Refusal::SameSerialOtherDigest);
        }
    }
    let serial_ceiling = i128::from(now.0) * 1000 + i128::from(MAX_SERIAL_LEAD_MS);
    if i128::from(catalog.serial.0) > serial_ceiling {
        return Err(Refusal::SerialFromFuture);
    }
    catalog.validate().map_err(Refusal::InvalidCatalog)?;
    Ok(VerifiedCatalog {
        serial: catalog.serial,
        expires_at: catalog.expires_at,
        key_generation,
        digest,
        catalog,
    })
}

/// Checks the certificate chain up to the pinned root and returns the certified catalog key
/// and its generation.
fn verify_certificate(
    envelope: &CertificateEnvelope,
    pinned_root: &KeyId,
    now: Timestamp,
) -> Result<(KeyId, VerifyingKey, u64), Refusal> {
    let root_bytes = decode_public_key(&envelope.root_key)
        .ok_or_else(|| Refusal::Malformed("root key is not 32 bytes of base64".into()))?;
    let root_id = KeyId::of_public_key_bytes(&root_bytes);
    if root_id != *pinned_root {
        return Err(Refusal::UnknownKey);
    }
    // The pinned key itself is unusable (not a curve point): nothing it "signed" can verify.
    let root = VerifyingKey::from_bytes(&root_bytes).map_err(|_| Refusal::BadSignature)?;
    let (payload, _) = verify_document(
        &envelope.document,
        DocumentType::CatalogKeyCertificate,
        &root_id,
        &root,
    )?;

    check_header(&payload, DocumentType::CatalogKeyCertificate, "certificate")?;
    let certificate: CatalogKeyCertificate =
        strict::from_slice(&payload, MAX_CATALOG_BYTES).map_err(|e| malformed("certificate", e))?;
    let key_bytes = decode_public_key(&certificate.key)
        .ok_or_else(|| Refusal::Malformed("certified key is not 32 bytes of base64".into()))?;
    if KeyId::of_public_key_bytes(&key_bytes) != certificate.key_id {
        return Err(Refusal::Malformed(
            "certificate key id does not match its key".into(),
        ));
    }
    if now.plus_secs(CERTIFICATE_CLOCK_LEEWAY_SECS) < certificate.issued_at
        || now >= certificate.expires_at
    {
        return Err(Refusal::ExpiredCertificate);
    }
    let key = VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| Refusal::Malformed("certified key is not an ed25519 public key".into()))?;
    Ok((certificate.key_id, key, certificate.key_generation))
}

/// Checks that `document` carries exactly one valid signature by `key_id` over its payload in
/// the context of `document_type`, and returns the payload bytes and their SHA-256. Entries by other keys are
/// ignored (they are not trusted, and they sign nothing else); a key id listed twice is refused
/// so that no key is ever counted twice (THREATS C8).
fn verify_document(
    document: &SignedDocument,
    document_type: DocumentType,
    key_id: &KeyId,
    key: &VerifyingKey,
) -> Result<(Vec<u8>, [u8; 32]), Refusal> {
    if document.signatures.len() > MAX_SIGNATURES {
        return Err(Refusal::Malformed(format!(
            "more than {MAX_SIGNATURES} signatures"
        )));
    }
    let mut seen = BTreeSet::new();
    if !document.signatures.iter().all(|s| seen.insert(&s.keyid)) {
        return Err(Refusal::Malformed("a key id signs twice".into()));
    }
    let signature = document
        .signatures
        .iter()
        .find(|s| s.keyid == *key_id)
        .ok_or(Refusal::UnknownKey)?;
    let signature = STANDARD
        .decode(&signature.sig)
        .ok()
        .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
        .map(|bytes| ed25519_dalek::Signature::from_bytes(&bytes))
        .ok_or(Refusal::BadSignature)?;
    let payload = STANDARD
        .decode(&document.payload)
        .map_err(|_| Refusal::Malformed("payload is not base64".into()))?;
    let digest = sha256(&payload);
    key.verify_strict(&signing_message(document_type, &digest), &signature)
        .map_err(|_| Refusal::BadSignature)?;
    Ok((payload, digest))
}

/// The fields every signed payload starts with, read leniently (unknown fields allowed) so that
/// a document of another type or format gets a typed refusal rather than a parse error.
#[derive(Deserialize)]
struct Header {
    #[serde(rename = "type")]
    document_type: String,
    format_version: u64,
}

fn check_header(payload: &[u8], expected: DocumentType, what: &str) -> Result<(), Refusal> {
    let header: Header =
        strict::from_slice(payload, MAX_CATALOG_BYTES).map_err(|e| malformed(what, e))?;
    if header.document_type != expected.as_str() {
        return Err(Refusal::WrongDocumentType);
    }
    if header.format_version != u64::from(CATALOG_FORMAT_VERSION) {
        return Err(Refusal::UnknownFormatVersion);
    }
    Ok(())
}

fn malformed(what: &str, error: strict::StrictError) -> Refusal {
    match error {
        strict::StrictError::Oversize { .. } => Refusal::Oversize,
        other => Refusal::Malformed(format!("{what}: {other}")),
    }
}

fn decode_public_key(text: &str) -> Option<[u8; 32]> {
    STANDARD.decode(text).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signing_context_binds_the_document_type() {
        let key = SigningKeyPair::from_bytes([5; 32]);
        let public = VerifyingKey::from_bytes(&key.public_bytes()).unwrap();
        let document = sign_document(&key, DocumentType::CatalogKeyCertificate, b"{}");
        assert!(verify_document(
            &document,
            DocumentType::CatalogKeyCertificate,
            &key.key_id(),
            &public
        )
        .is_ok());
        assert_eq!(
            verify_document(&document, DocumentType::Catalog, &key.key_id(), &public),
            Err(Refusal::BadSignature)
        );
        let message = signing_message(DocumentType::CatalogKeyCertificate, &[7; 32]);
        assert!(message.starts_with(b"steward/v1/catalog_key_certificate\0"));
        assert!(message.ends_with(&[7; 32]));
    }

    #[test]
    fn threshold_counts_each_key_once() {
        let key = SigningKeyPair::from_bytes([5; 32]);
        let public = VerifyingKey::from_bytes(&key.public_bytes()).unwrap();
        let mut document = sign_document(&key, DocumentType::Catalog, b"{}");
        document.signatures.push(document.signatures[0].clone());
        assert!(matches!(
            verify_document(&document, DocumentType::Catalog, &key.key_id(), &public),
            Err(Refusal::Malformed(_))
        ));
    }

    #[test]
    fn signatures_by_other_keys_are_ignored_but_never_suffice() {
        let key = SigningKeyPair::from_bytes([5; 32]);
        let other = SigningKeyPair::from_bytes([6; 32]);
        let public = VerifyingKey::from_bytes(&key.public_bytes()).unwrap();
        let mut document = sign_document(&other, DocumentType::Catalog, b"{}");
        assert_eq!(
            verify_document(&document, DocumentType::Catalog, &key.key_id(), &public),
            Err(Refusal::UnknownKey)
        );
        document
            .signatures
            .push(key.sign(DocumentType::Catalog, b"{}"));
        assert_eq!(
            verify_document(&document, DocumentType::Catalog, &key.key_id(), &public),
            Ok((b"{}".to_vec(), sha256(b"{}")))
        );
        // A signature by the other key presented under the trusted key id does not verify.
        let mut forged = sign_document(&other, DocumentType::Catalog, b"{}");
        forged.signatures[0].keyid = key.key_id();
        assert_eq!(
            verify_document(&forged, DocumentType::Catalog, &key.key_id(), &public),
            Err(Refusal::BadSignature)
        );
    }

    #[test]
    fn signing_key_pair_debug_redacts_the_seed() {
        let key = SigningKeyPair::from_bytes([0x42; 32]);
        let debug = format!("{key:?}");
        assert!(
            debug.contains(REDACTED) && debug.contains(key.key_id().as_str()),
            "{debug}"
        );
        assert!(!debug.contains("66, 66"), "{debug}");
        assert!(!debug.contains(&hex::encode([0x42; 32])), "{debug}");
        assert!(!debug.contains(&STANDARD.encode([0x42; 32])), "{debug}");
    }

    #[test]
    fn ed25519_is_deterministic_and_key_ids_are_fingerprints() {
        let key = SigningKeyPair::from_bytes([3; 32]);
        assert_eq!(
            key.sign(DocumentType::Catalog, b"a"),
            key.sign(DocumentType::Catalog, b"a")
        );
        assert_eq!(
            key.key_id(),
            KeyId::of_public_key_bytes(&key.public_bytes())
        );
        assert_eq!(key.key_id().as_str().len(), "sha256:".len() + 64);
    }

    #[test]
    fn catalog_digest_is_sha256_hex() {
        assert_eq!(
            catalog_digest(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
