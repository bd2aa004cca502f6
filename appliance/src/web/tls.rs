//! The console's HTTPS certificate: the configured one, or a self-signed one generated into
//! the state directory on first start.
//!
//! The rustls server configuration itself is the DICOM node's ([`crate::dicom::tls::acceptor`]:
//! ring provider, TLS 1.2 and 1.3 only), so both listeners follow the same rules.

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use sha2::{Digest, Sha256};
use tokio_rustls::TlsAcceptor;

use super::WebConfig;
use crate::config::TlsConfig;

/// The directory (under the state directory) holding a generated certificate.
pub const GENERATED_DIR: &str = "web-tls";

/// The acceptor and the SHA-256 fingerprint (colon-separated hex) of the certificate served.
#[derive(Clone)]
pub struct ConsoleTls {
    /// The TLS acceptor.
    pub acceptor: TlsAcceptor,
    /// SHA-256 of the leaf certificate (DER), `AB:CD:…`: compare with what the browser shows.
    pub fingerprint: String,
    /// The certificate file served.
    pub certificate: PathBuf,
    /// Whether it was generated (self-signed) rather than configured.
    pub generated: bool,
}

/// Loads the configured certificate, or generates (first start) / reuses a self-signed one in
/// `<state_dir>/web-tls/`.
///
/// # Errors
/// A message naming the file that cannot be read or written.
pub fn load(cfg: &WebConfig, state_dir: &Path) -> Result<ConsoleTls, String> {
    let (certificate, private_key, generated) =
        if let (Some(c), Some(k)) = (&cfg.certificate, &cfg.private_key) {
            (c.clone(), k.clone(), false)
        } else {
            let (c, k) = ensure_self_signed(cfg, &state_dir.join(GENERATED_DIR))?;
            (c, k, true)
        };
    let acceptor = crate::dicom::tls::acceptor(&TlsConfig {
        port: 0,
        certificate: certificate.clone(),
        private_key,
        client_ca: None,
    })?;
    let leaf = CertificateDer::pem_file_iter(&certificate)
        .map_err(|e| format!("web certificate {}: {e}", certificate.display()))?
        .next()
        .ok_or_else(|| {
            format!(
                "web certificate {} holds no certificate",
                certificate.display()
            )
        })?
        .map_err(|e| format!("web certificate {}: {e}", certificate.display()))?;
    Ok(ConsoleTls {
        acceptor,
        fingerprint: fingerprint(&leaf),
        certificate,
        generated,
    })
}

/// `AB:CD:…` SHA-256 of a DER certificate.
pub fn fingerprint(der: &[u8]) -> String {
    Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The generated certificate and key paths, creating them when absent.
fn ensure_self_signed(cfg: &WebConfig, dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    if let Ok(host) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_owned());
        }
    }
    if !cfg.bind.is_unspecified() {
        names.push(cfg.bind.to_string());
    }
    names.extend(cfg.certificate_names.iter().cloned());
    names.dedup();
    let certified = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate the web console certificate: {e}"))?;
    // The key first, created 0600 so it is never readable by others even briefly.
    write_new(
        &key_path,
        certified.signing_key.serialize_pem().as_bytes(),
        0o600,
    )?;
    write_new(&cert_path, certified.cert.pem().as_bytes(), 0o644)?;
    Ok((cert_path, key_path))
}

/// Writes a new file with `mode` (replacing a stale partial one) and syncs it.
fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
