//! DICOM TLS: the rustls server configuration for the TLS port (PS3.15 Annex B, BCP 195).
//!
//! TLS 1.2 and 1.3 only, ring's default cipher suites (all ECDHE with AEAD, which BCP 195
//! asks for), certificates and keys from PEM files (systemd credentials work: they are files),
//! and optional client-certificate authentication against a configured CA. After the
//! handshake the stream is served by exactly the same association code as the plain port.

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// Builds the acceptor for `cfg`.
///
/// # Errors
/// A message naming the file that cannot be read or the certificate/key that is unusable.
pub fn acceptor(cfg: &TlsConfig) -> Result<TlsAcceptor, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cfg.certificate)
        .and_then(Iterator::collect)
        .map_err(|e| format!("TLS certificate {}: {e}", cfg.certificate.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate {} holds no certificate",
            cfg.certificate.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(&cfg.private_key)
        .map_err(|e| format!("TLS private key {}: {e}", cfg.private_key.display()))?;
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS protocol versions: {e}"))?;
    let builder = match &cfg.client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .map_err(|e| format!("TLS client CA {}: {e}", ca.display()))?
            {
                let cert = cert.map_err(|e| format!("TLS client CA {}: {e}", ca.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("TLS client CA {}: {e}", ca.display()))?;
            }
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
