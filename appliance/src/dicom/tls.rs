//! DICOM TLS: the rustls configurations of the TLS port (server) and of the forwarder
//! (client) (PS3.15 Annex B, BCP 195).
//!
//! TLS 1.2 and 1.3 only, ring's default cipher suites (all ECDHE with AEAD, which BCP 195
//! asks for), certificates and keys from PEM files (systemd credentials work: they are files).
//! The server optionally authenticates clients against a configured CA; the client always
//! verifies the destination's certificate against its configured CAs and may present its own.
//! After the handshake the stream is served by exactly the same association code as a plain
//! connection.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::{ForwardTlsConfig, TlsConfig};

/// Builds the acceptor for `cfg`.
///
/// # Errors
/// A message naming the file that cannot be read or the certificate/key that is unusable.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs = read_certs(&cfg.certificate, "TLS certificate")?;
    let key = read_key(&cfg.private_key, "TLS private key")?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let roots = read_roots(ca, "TLS client CA")?;
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| format!("TLS client verification: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate/key pair: {e}"))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// Builds the client configuration the forwarder uses towards TLS destinations.
///
/// # Errors
/// A message naming the file that cannot be read or the certificate/key that is unusable.
pub fn client_config(cfg: &ForwardTlsConfig) -> Result<Arc<rustls::ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = read_roots(&cfg.ca_certificates, "forward.tls.ca_certificates")?;
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS protocol versions: {e}"))?
        .with_root_certificates(roots);
    let config = match (&cfg.certificate, &cfg.private_key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(
                read_certs(cert, "forward.tls.certificate")?,
                read_key(key, "forward.tls.private_key")?,
            )
            .map_err(|e| format!("forward TLS client certificate/key pair: {e}"))?,
        (None, None) => builder.with_no_client_auth(),
        _ => {
            return Err("forward.tls.certificate and forward.tls.private_key go together".into());
        }
    };
    Ok(Arc::new(config))
}

/// The certificates of a PEM file; an error when it holds none.
fn read_certs(path: &Path, what: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(Iterator::collect)
        .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{what} {} holds no certificate", path.display()));
    }
    Ok(certs)
}

/// The first private key of a PEM file.
fn read_key(path: &Path, what: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{what} {}: {e}", path.display()))
}

/// The CA certificates of a PEM file as a trust store.
fn read_roots(path: &Path, what: &str) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in read_certs(path, what)? {
        roots
            .add(cert)
            .map_err(|e| format!("{what} {}: {e}", path.display()))?;
    }
    Ok(roots)
}
