//! The server's keys (DESIGN §5, "Keys"), kept in the data directory:
//!
//! - `root.key`: the root ed25519 key. Agents pin its fingerprint (join string); it only
//!   certifies the catalog key.
//! - `catalog.key`: the online catalog signing key, certified by the root key in
//!   `catalog.cert.json`, which is re-issued when a third of its lifetime is left.
//! - `content.key`: the HMAC key of catalog content identities (see
//!   [`crate::service::catalog`]), so a Vault value change moves a serial without a plain hash
//!   of a secret ever being stored. The sealing key of deterministic sealing
//!   ([`ServerKeys::sealing_key`]) is derived from it.
//!
//! Key files are 32 random bytes from the operating system, mode 0600, created on first start
//! and refused when group or others can read them. Nothing here prints key material: `Debug`
//! shows fingerprints only.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{bail, Context};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use steward_protocol::envelope::{CatalogKeyCertificate, CertificateEnvelope};
use steward_protocol::{issue_certificate, strict, KeyId, SigningKeyPair, Timestamp};
use zeroize::Zeroizing;

/// Root key file name.
pub const ROOT_KEY_FILE: &str = "root.key";
/// Catalog key file name.
pub const CATALOG_KEY_FILE: &str = "catalog.key";
/// Content HMAC key file name.
pub const CONTENT_KEY_FILE: &str = "content.key";
/// Catalog key certificate file name.
pub const CERTIFICATE_FILE: &str = "catalog.cert.json";

/// The certificate currently in use, with its validity and a generation number that changes at
/// every re-issue (cached envelopes signed under an older certificate are re-signed).
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The root-signed certificate envelope.
    pub envelope: CertificateEnvelope,
    /// Start of validity.
    pub issued_at: Timestamp,
    /// End of validity.
    pub expires_at: Timestamp,
    /// Increases at every re-issue in this process.
    pub generation: u64,
}

/// The server's keys. Cheap to share (`Arc`).
pub struct ServerKeys {
    persist: bool,
    data_dir: PathBuf,
    root: SigningKeyPair,
    catalog: SigningKeyPair,
    content_key: Zeroizing<[u8; 32]>,
    sealing_key: Zeroizing<[u8; 32]>,
    lifetime: Duration,
    certificate: RwLock<Arc<IssuedCertificate>>,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeys")
            .field("root", &self.root.key_id().as_str())
            .field("catalog", &self.catalog.key_id().as_str())
            .field("content_key", &steward_protocol::REDACTED)
            .finish_non_exhaustive()
    }
}

impl ServerKeys {
    /// Loads the keys from `data_dir`, creating the directory (0700) and any missing key
    /// (0600) first, and makes sure a certificate valid for long enough is in place.
    pub fn load_or_create(
        data_dir: &Path,
        certificate_lifetime: Duration,
        now: Timestamp,
    ) -> anyhow::Result<ServerKeys> {
        create_private_dir(data_dir)?;
        let root = SigningKeyPair::from_bytes(*load_or_create_key(&data_dir.join(ROOT_KEY_FILE))?);
        let catalog =
            SigningKeyPair::from_bytes(*load_or_create_key(&data_dir.join(CATALOG_KEY_FILE))?);
        let content_key = load_or_create_key(&data_dir.join(CONTENT_KEY_FILE))?;
        Self::assemble(
            data_dir,
            root,
            catalog,
            content_key,
            certificate_lifetime,
            now,
            true,
        )
    }

    /// Loads existing keys only (offline signing must not invent a new root key), and writes
    /// nothing: a certificate due for renewal is re-issued in memory.
    pub fn load_existing(
        data_dir: &Path,
        certificate_lifetime: Duration,
        now: Timestamp,
    ) -> anyhow::Result<ServerKeys> {
        for name in [ROOT_KEY_FILE, CATALOG_KEY_FILE, CONTENT_KEY_FILE] {
            let path = data_dir.join(name);
            if !path.exists() {
                bail!(
                    "{} does not exist; start the server once (`steward-server serve`) to create \
                     its keys, or pass the right --data-dir",
                    path.display()
                );
            }
        }
        let root = SigningKeyPair::from_bytes(*read_key(&data_dir.join(ROOT_KEY_FILE))?);
        let catalog = SigningKeyPair::from_bytes(*read_key(&data_dir.join(CATALOG_KEY_FILE))?);
        let content_key = read_key(&data_dir.join(CONTENT_KEY_FILE))?;
        Self::assemble(
            data_dir,
            root,
            catalog,
            content_key,
            certificate_lifetime,
            now,
            false,
        )
    }

    fn assemble(
        data_dir: &Path,
        root: SigningKeyPair,
        catalog: SigningKeyPair,
        content_key: Zeroizing<[u8; 32]>,
        lifetime: Duration,
        now: Timestamp,
        persist: bool,
    ) -> anyhow::Result<ServerKeys> {
        let stored = read_certificate(&data_dir.join(CERTIFICATE_FILE), &root, &catalog);
        let keys = ServerKeys {
            persist,
            data_dir: data_dir.to_owned(),
            certificate: RwLock::new(Arc::new(match stored {
                Some(certificate) => certificate,
                None => issue(&root, &catalog, lifetime, now, 0),
            })),
            root,
            catalog,
            sealing_key: derive_sealing_key(&content_key),
            content_key,
            lifetime,
        };
        keys.renew_certificate_if_due(now)?;
        keys.write_certificate()?;
        Ok(keys)
    }

    /// The root key's fingerprint, what agents pin.
    pub fn root_key_id(&self) -> KeyId {
        self.root.key_id()
    }

    /// The root public key, base64 (sent in enrollment answers).
    pub fn root_public_base64(&self) -> String {
        STANDARD.encode(self.root.public_bytes())
    }

    /// The online catalog signing key.
    pub fn catalog_key(&self) -> &SigningKeyPair {
        &self.catalog
    }

    /// The certificate in use.
    pub fn certificate(&self) -> Arc<IssuedCertificate> {
        Arc::clone(
            &self
                .certificate
                .read()
                .unwrap_or_else(PoisonError::into_inner),
        )
    }

    /// Re-issues the catalog key certificate when less than a third of its lifetime is left
    /// (or it is not valid at `now`). Returns whether it did.
    pub fn renew_certificate_if_due(&self, now: Timestamp) -> anyhow::Result<bool> {
        let current = self.certificate();
        let lifetime = i64::try_from(self.lifetime.as_secs()).unwrap_or(i64::MAX);
        let renew_at = current.expires_at.plus_secs(-(lifetime / 3));
        if now < renew_at && now >= current.issued_at.plus_secs(-300) {
            return Ok(false);
        }
        let renewed = issue(
            &self.root,
            &self.catalog,
            self.lifetime,
            now,
            current.generation + 1,
        );
        *self
            .certificate
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Arc::new(renewed);
        self.write_certificate()?;
        tracing::info!(
            catalog_key = %self.catalog.key_id(),
            "issued a new catalog key certificate"
        );
        Ok(true)
    }

    /// A keyed MAC (HMAC-SHA256 with `content.key`) over `parts`, each length-prefixed so no
    /// two sequences of parts collide. Used for catalog content identities and cache keys; it
    /// reveals nothing about the parts without the key.
    pub fn content_mac<'a>(&self, parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.content_key[..])
            .expect("hmac takes keys of any length");
        for part in parts {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        mac.finalize().into_bytes().into()
    }

    /// The key of [`steward_protocol::seal::seal_deterministic`]: the same catalog serial seals
    /// to the same bytes, in this process and after a restart. Derived from `content.key`.
    pub fn sealing_key(&self) -> &[u8; 32] {
        &self.sealing_key
    }

    fn write_certificate(&self) -> anyhow::Result<()> {
        if !self.persist {
            return Ok(());
        }
        let certificate = self.certificate();
        let path = self.data_dir.join(CERTIFICATE_FILE);
        let bytes = steward_protocol::canonical_bytes(&certificate.envelope);
        write_atomically(&path, &bytes)
    }
}

/// HMAC-SHA256 of a fixed label under `content.key`: a key of its own for sealing, so that no
/// value is ever both a content identity and a sealing seed.
fn derive_sealing_key(content_key: &[u8; 32]) -> Zeroizing<[u8; 32]> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(content_key).expect("hmac takes keys of any length");
    mac.update(b"steward/v1/sealing-key");
    Zeroizing::new(mac.finalize().into_bytes().into())
}

/// The root key's fingerprint, read from `data_dir/root.key` alone (for join strings made by
/// the CLI, which must not touch the other keys).
pub fn root_key_id(data_dir: &Path) -> anyhow::Result<KeyId> {
    let path = data_dir.join(ROOT_KEY_FILE);
    if !path.exists() {
        bail!(
            "{} does not exist; start the server once (`steward-server serve`) to create its \
             keys, or pass the right --data-dir",
            path.display()
        );
    }
    Ok(SigningKeyPair::from_bytes(*read_key(&path)?).key_id())
}

/// Replaces `data_dir/catalog.key` with a new random key (atomically, 0600) and deletes the
/// stored certificate, so that the server certifies the new key with the root key at its next
/// start. The root key and its fingerprint (what agents pin) do not change. Returns the old and
/// the new catalog key fingerprints.
pub fn rotate_catalog_key(data_dir: &Path) -> anyhow::Result<(KeyId, KeyId)> {
    root_key_id(data_dir)?;
    let path = data_dir.join(CATALOG_KEY_FILE);
    let old = SigningKeyPair::from_bytes(*read_key(&path)?).key_id();
    let key = random_key()?;
    let new = SigningKeyPair::from_bytes(*key).key_id();
    write_atomically(&path, &key[..])?;
    let certificate = data_dir.join(CERTIFICATE_FILE);
    match fs::remove_file(&certificate) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("removing {}", certificate.display()))
        }
    }
    Ok((old, new))
}

fn issue(
    root: &SigningKeyPair,
    catalog: &SigningKeyPair,
    lifetime: Duration,
    now: Timestamp,
    generation: u64,
) -> IssuedCertificate {
    let expires_at = now.plus_secs(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
    IssuedCertificate {
        envelope: issue_certificate(root, &catalog.public_bytes(), now, expires_at),
        issued_at: now,
        expires_at,
        generation,
    }
}

/// Reads back a stored certificate; `None` when missing, unreadable or not for these keys.
fn read_certificate(
    path: &Path,
    root: &SigningKeyPair,
    catalog: &SigningKeyPair,
) -> Option<IssuedCertificate> {
    let bytes = fs::read(path).ok()?;
    let envelope: CertificateEnvelope = strict::from_slice(&bytes, 64 * 1024).ok()?;
    if envelope.root_key != STANDARD.encode(root.public_bytes()) {
        return None;
    }
    let payload = STANDARD.decode(&envelope.document.payload).ok()?;
    let certificate: CatalogKeyCertificate = strict::from_slice(&payload, 64 * 1024).ok()?;
    if certificate.key_id != catalog.key_id() {
        return None;
    }
    // Only trust a certificate we could have signed: compare with a fresh signature over the
    // same payload (ed25519 is deterministic).
    let resigned = steward_protocol::envelope::sign_document(
        root,
        steward_protocol::DocumentType::CatalogKeyCertificate,
        &payload,
    );
    if resigned != envelope.document {
        return None;
    }
    Some(IssuedCertificate {
        issued_at: certificate.issued_at,
        expires_at: certificate.expires_at,
        envelope,
        generation: 0,
    })
}

/// Creates `dir` (and parents) with mode 0700 when missing; warns when an existing one is
/// open to group or others.
pub fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating data directory {}", dir.display()))?;
    }
    let mode = fs::metadata(dir)
        .with_context(|| format!("reading data directory {}", dir.display()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            dir = %dir.display(),
            mode = format!("{:o}", mode & 0o777),
            "data directory is open to group or others; chmod 700 it"
        );
    }
    Ok(())
}

/// 32 bytes from the operating system's randomness, wiped when dropped.
fn random_key() -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::getrandom(&mut key[..])
        .map_err(|error| anyhow::anyhow!("drawing random bytes for a key: {error}"))?;
    Ok(key)
}

fn load_or_create_key(path: &Path) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    if path.exists() {
        return read_key(path);
    }
    let key = random_key()?;
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating key file {}", path.display()))?;
    file.write_all(&key[..])
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing key file {}", path.display()))?;
    tracing::info!(path = %path.display(), "created a new key");
    Ok(key)
}

fn read_key(path: &Path) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    let mut file =
        fs::File::open(path).with_context(|| format!("opening key file {}", path.display()))?;
    let metadata = file
        .metadata()
        .with_context(|| format!("reading key file {}", path.display()))?;
    if metadata.permissions().mode() & 0o077 != 0 {
        bail!(
            "key file {} is readable by group or others; chmod 600 it",
            path.display()
        );
    }
    if metadata.len() != 32 {
        bail!(
            "key file {} is not 32 bytes; restore it from a backup",
            path.display()
        );
    }
    let mut key = Zeroizing::new([0u8; 32]);
    file.read_exact(&mut key[..])
        .with_context(|| format!("reading key file {}", path.display()))?;
    Ok(key)
}

/// Writes `bytes` to `path` through a 0600 temporary file in the same directory, fsync and
/// rename.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::Builder::new()
        .prefix(".steward-")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .with_context(|| format!("creating a temporary file in {}", dir.display()))?;
    temp.write_all(bytes)
        .and_then(|()| temp.as_file().sync_all())
        .with_context(|| format!("writing {}", path.display()))?;
    temp.persist(path)
        .with_context(|| format!("replacing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_created_0600_once_and_reloaded_with_the_same_ids() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let now = Timestamp(1_700_000_000);
        let lifetime = Duration::from_secs(90 * 86_400);
        let first = ServerKeys::load_or_create(&data, lifetime, now).unwrap();
        for name in [ROOT_KEY_FILE, CATALOG_KEY_FILE, CONTENT_KEY_FILE] {
            let meta = fs::metadata(data.join(name)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{name}");
            assert_eq!(meta.len(), 32);
        }
        assert_eq!(
            fs::metadata(&data).unwrap().permissions().mode() & 0o777,
            0o700
        );
        let again = ServerKeys::load_or_create(&data, lifetime, now.plus_secs(10)).unwrap();
        assert_eq!(first.root_key_id(), again.root_key_id());
        assert_eq!(
            first.content_mac([&b"x"[..]]),
            again.content_mac([&b"x"[..]])
        );
        // The stored certificate is reused while it is fresh...
        assert_eq!(first.certificate().envelope, again.certificate().envelope);
        // ...and re-issued when a third of its lifetime is left.
        let late = now.plus_secs(61 * 86_400);
        assert!(again.renew_certificate_if_due(late).unwrap());
        assert_eq!(again.certificate().issued_at, late);
        assert!(!format!("{again:?}").contains(&hex::encode(&again.content_key[..])));
    }

    #[test]
    fn a_key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, [7u8; 32]).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_key(&path).is_err());
    }

    #[test]
    fn content_mac_separates_parts() {
        let dir = tempfile::tempdir().unwrap();
        let keys = ServerKeys::load_or_create(
            dir.path(),
            Duration::from_secs(90 * 86_400),
            Timestamp(1_700_000_000),
        )
        .unwrap();
        assert_ne!(
            keys.content_mac([&b"ab"[..], &b"c"[..]]),
            keys.content_mac([&b"a"[..], &b"bc"[..]])
        );
    }
}
