//! TLS for the HTTPS listener (rustls, ring provider): the configured certificate and key, or
//! a self-signed certificate generated once into the data directory (`tls.crt`, `tls.key`
//! 0600) for `localhost`, `127.0.0.1` and the configured names.
//!
//! Agents do not depend on the TLS certificate for integrity (catalogs are signed and pinned
//! to the root key), but it keeps request metadata and sealed payloads off the wire in clear.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsSource;
use crate::keys::write_atomically;

/// Generated certificate file name (in the data directory).
pub const SELF_SIGNED_CERT_FILE: &str = "tls.crt";
/// Generated key file name (in the data directory).
pub const SELF_SIGNED_KEY_FILE: &str = "tls.key";

/// The certificate and key files to use, generating the self-signed pair when needed.
pub fn certificate_files(
    source: &TlsSource,
    data_dir: &Path,
) -> anyhow::Result<(PathBuf, PathBuf)> {
    match source {
        TlsSource::Files { cert, key } => Ok((cert.clone(), key.clone())),
        TlsSource::SelfSigned { names } => {
            let cert = data_dir.join(SELF_SIGNED_CERT_FILE);
            let key = data_dir.join(SELF_SIGNED_KEY_FILE);
            if !cert.exists() || !key.exists() {
                let mut all = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
                for name in names {
                    if !all.contains(name) {
                        all.push(name.clone());
                    }
                }
                let generated = rcgen::generate_simple_self_signed(all)
                    .context("generating a self-signed tls certificate")?;
                write_atomically(&key, generated.key_pair.serialize_pem().as_bytes())?;
                write_atomically(&cert, generated.cert.pem().as_bytes())?;
                tracing::info!(cert = %cert.display(), "generated a self-signed tls certificate");
            }
            Ok((cert, key))
        }
    }
}

/// The rustls server configuration (HTTP/1.1 only, as the server speaks).
pub fn server_config(
    source: &TlsSource,
    data_dir: &Path,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert_path, key_path) = certificate_files(source, data_dir)?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("reading tls certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing tls certificate {}", cert_path.display()))?;
    if chain.is_empty() {
        bail!("{} holds no PEM certificate", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("reading tls key {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("setting up tls protocol versions")?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .with_context(|| {
            format!(
                "the tls key {} does not match the certificate {}",
                key_path.display(),
                cert_path.display()
            )
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
