//! The server's keys (DESIGN §5, "Keys"), kept in the data directory:
//!
//! - `root.key`: the root ed25519 key. Agents pin its fingerprint (join string); it only
//!   certifies the catalog key.
//! - `catalog.key`: the online catalog signing key, certified by the root key in
//!   `catalog.cert.json`, which is re-issued when a third of its lifetime is left.
//!
//! # Catalog key generations
//!
//! Every certificate names the catalog key's generation
//! ([`steward_protocol::envelope::CatalogKeyCertificate::key_generation`], root-signed). A
//! host refuses certificates of a generation below the highest it accepted, so a rotated-away
//! key (perhaps stolen) stops working on a host as soon as the host applied a catalog signed
//! by its successor (THREATS C7). Renewals keep the generation; a new key gets
//! [`next_generation`]: more than the previous one, and at least the current time in
//! seconds, so that a generation stays above every earlier one even when the previous
//! certificate is lost (a data directory restored from an old backup, a deleted
//! `catalog.cert.json`). The stored certificate is the record of the generation: when
//! `catalog.key` no longer matches it (a rotation, or a key replaced by hand), the key is
//! certified at the next generation. A certificate from before generations existed is
//! generation 0 and keeps its bytes.
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
use steward_protocol::envelope::issue_certificate_generation;
use steward_protocol::envelope::{CatalogKeyCertificate, CertificateEnvelope};
use steward_protocol::{strict, KeyId, SigningKeyPair, Timestamp};
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
    /// The catalog key's generation, as certified (see the module docs).
    pub key_generation: u64,
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
        let stored = read_certificate(&data_dir.join(CERTIFICATE_FILE), &root);
        let certificate = match stored {
            Some(stored) if stored.key_id == catalog.key_id() => stored.issued,
            // A new catalog key (rotated, or replaced by hand), or no certificate at all.
            other => {
                let generation = next_generation(other.map(|s| s.issued.key_generation), now);
                tracing::info!(
                    catalog_key = %catalog.key_id(),
                    key_generation = generation,
                    "certifying a new catalog key"
                );
                issue(&root, &catalog, lifetime, now, 0, generation)
            }
        };
        let keys = ServerKeys {
            persist,
            data_dir: data_dir.to_owned(),
            certificate: RwLock::new(Arc::new(certificate)),
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
            current.key_generation,
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
        // `keys rotate-catalog` run while this server runs: the stored certificate is the new
        // key's, at its generation; overwriting it with this (old) key's renewal would make
        // the next start certify the new key at another generation than the audited one.
        if let Some(stored) = read_certificate(&path, &self.root) {
            if stored.key_id != self.catalog.key_id() {
                tracing::warn!(
                    stored_key = %stored.key_id,
                    running_key = %self.catalog.key_id(),
                    "the catalog key was rotated on disk while the server runs; its certificate \
                     is left as it is: restart the server to sign with the new key"
                );
                return Ok(());
            }
        }
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

/// What [`rotate_catalog_key`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    /// The replaced key's fingerprint.
    pub old: KeyId,
    /// The new key's fingerprint.
    pub new: KeyId,
    /// The new key's generation (hosts refuse the old key once they applied a catalog
    /// signed by the new one).
    pub key_generation: u64,
}

/// Replaces `data_dir/catalog.key` with a new random key (atomically, 0600) and certifies it
/// with the root key at the next generation (`catalog.cert.json`, valid for `lifetime` from
/// `now`). The root key and its fingerprint (what agents pin) do not change. A crash between
/// the two writes leaves the new key with the old certificate: the server then certifies the
/// key at the next generation when it starts, as after any key change.
pub fn rotate_catalog_key(
    data_dir: &Path,
    lifetime: Duration,
    now: Timestamp,
) -> anyhow::Result<Rotation> {
    root_key_id(data_dir)?;
    let root = SigningKeyPair::from_bytes(*read_key(&data_dir.join(ROOT_KEY_FILE))?);
    let path = data_dir.join(CATALOG_KEY_FILE);
    let old = SigningKeyPair::from_bytes(*read_key(&path)?).key_id();
    let previous = read_certificate(&data_dir.join(CERTIFICATE_FILE), &root)
        .map(|stored| stored.issued.key_generation);
    let key_generation = next_generation(previous, now);
    let seed = random_key()?;
    let key = SigningKeyPair::from_bytes(*seed);
    write_atomically(&path, &seed[..])?;
    let certificate = issue(&root, &key, lifetime, now, 0, key_generation);
    write_atomically(
        &data_dir.join(CERTIFICATE_FILE),
        &steward_protocol::canonical_bytes(&certificate.envelope),
    )?;
    Ok(Rotation {
        old,
        new: key.key_id(),
        key_generation,
    })
}

/// The generation of a catalog key that replaces one of generation `previous` (`None`: not
/// known): above `previous`, and at least `now` in seconds so that it is above every earlier
/// generation even when `previous` was lost, as long as the clock is right.
pub fn next_generation(previous: Option<u64>, now: Timestamp) -> u64 {
    let clock = u64::try_from(now.0).unwrap_or(0);
    previous.map_or(1, |g| g.saturating_add(1)).max(clock)
}

fn issue(
    root: &SigningKeyPair,
    catalog: &SigningKeyPair,
    lifetime: Duration,
    now: Timestamp,
    generation: u64,
    key_generation: u64,
) -> IssuedCertificate {
    let expires_at = now.plus_secs(i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX));
    IssuedCertificate {
        envelope: issue_certificate_generation(
            root,
            &catalog.public_bytes(),
            now,
            expires_at,
            key_generation,
        ),
        issued_at: now,
        expires_at,
        generation,
        key_generation,
    }
}

/// A stored certificate signed by this root key, and the key it certifies.
struct StoredCertificate {
    key_id: KeyId,
    issued: IssuedCertificate,
}

/// Reads back a stored certificate; `None` when missing, unreadable or not signed by `root`.
/// It may certify another catalog key than the current one (after a rotation).
fn read_certificate(path: &Path, root: &SigningKeyPair) -> Option<StoredCertificate> {
    let bytes = fs::read(path).ok()?;
    let envelope: CertificateEnvelope = strict::from_slice(&bytes, 64 * 1024).ok()?;
    if envelope.root_key != STANDARD.encode(root.public_bytes()) {
        return None;
    }
    let payload = STANDARD.decode(&envelope.document.payload).ok()?;
    let certificate: CatalogKeyCertificate = strict::from_slice(&payload, 64 * 1024).ok()?;
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
    Some(StoredCertificate {
        key_id: certificate.key_id,
        issued: IssuedCertificate {
            issued_at: certificate.issued_at,
            expires_at: certificate.expires_at,
            envelope,
            generation: 0,
            key_generation: certificate.key_generation,
        },
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

    /// THREATS C7: every new catalog key is certified at a higher generation, renewals keep
    /// it, and a lost certificate or a key replaced by hand still moves it up.
    #[test]
    fn catalog_key_generations_only_increase() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let now = Timestamp(1_700_000_000);
        let lifetime = Duration::from_secs(90 * 86_400);
        let first = ServerKeys::load_or_create(&data, lifetime, now).unwrap();
        let g1 = first.certificate().key_generation;
        assert_eq!(g1, 1_700_000_000, "a first key: the clock");
        assert!(first
            .renew_certificate_if_due(now.plus_secs(61 * 86_400))
            .unwrap());
        assert_eq!(first.certificate().key_generation, g1, "renewal keeps it");

        // A rotation with the clock behind the previous generation still moves it up.
        let rotation = rotate_catalog_key(&data, lifetime, now.plus_secs(-3600)).unwrap();
        assert_eq!(rotation.key_generation, g1 + 1);
        let rotated = ServerKeys::load_or_create(&data, lifetime, now).unwrap();
        assert_eq!(rotated.catalog_key().key_id(), rotation.new);
        assert_eq!(rotated.certificate().key_generation, g1 + 1);

        // A key replaced by hand (or a crash between the two writes of a rotation).
        let mut key = [0u8; 32];
        getrandom::getrandom(&mut key).unwrap();
        write_atomically(&data.join(CATALOG_KEY_FILE), &key).unwrap();
        let replaced = ServerKeys::load_or_create(&data, lifetime, now).unwrap();
        assert_eq!(replaced.certificate().key_generation, g1 + 2);

        // The certificate lost: the clock (later than every earlier generation) decides.
        fs::remove_file(data.join(CERTIFICATE_FILE)).unwrap();
        rotate_catalog_key(&data, lifetime, now.plus_secs(86_400)).unwrap();
        let restored = ServerKeys::load_existing(&data, lifetime, now.plus_secs(86_400)).unwrap();
        assert_eq!(restored.certificate().key_generation, 1_700_086_400);
    }

    /// A rotation made on disk while a server runs is not undone by that server's renewal.
    #[test]
    fn a_running_servers_renewal_never_overwrites_a_rotated_keys_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let now = Timestamp(1_700_000_000);
        let lifetime = Duration::from_secs(90 * 86_400);
        let running = ServerKeys::load_or_create(&data, lifetime, now).unwrap();
        let rotation = rotate_catalog_key(&data, lifetime, now.plus_secs(60)).unwrap();
        assert!(running
            .renew_certificate_if_due(now.plus_secs(61 * 86_400))
            .unwrap());
        let restarted =
            ServerKeys::load_or_create(&data, lifetime, now.plus_secs(61 * 86_400)).unwrap();
        assert_eq!(restarted.catalog_key().key_id(), rotation.new);
        assert_eq!(
            restarted.certificate().key_generation,
            rotation.key_generation,
            "the audited generation"
        );
    }

    /// A data directory from before generations: its certificate is kept byte for byte
    /// (generation 0, which older agents parse), until the next rotation.
    #[test]
    fn a_certificate_from_before_generations_is_kept_as_generation_zero() {
        let dir = tempfile::tempdir().unwrap();
        let now = Timestamp(1_700_000_000);
        let lifetime = Duration::from_secs(90 * 86_400);
        let keys = ServerKeys::load_or_create(dir.path(), lifetime, now).unwrap();
        let legacy = steward_protocol::issue_certificate(
            &keys.root,
            &keys.catalog.public_bytes(),
            now,
            now.plus_secs(90 * 86_400),
        );
        let bytes = steward_protocol::canonical_bytes(&legacy);
        fs::write(dir.path().join(CERTIFICATE_FILE), &bytes).unwrap();
        let upgraded = ServerKeys::load_or_create(dir.path(), lifetime, now.plus_secs(10)).unwrap();
        assert_eq!(upgraded.certificate().envelope, legacy);
        assert_eq!(upgraded.certificate().key_generation, 0);
        assert_eq!(fs::read(dir.path().join(CERTIFICATE_FILE)).unwrap(), bytes);
        let rotation = rotate_catalog_key(dir.path(), lifetime, now.plus_secs(20)).unwrap();
        assert_eq!(rotation.key_generation, 1_700_000_020);
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
