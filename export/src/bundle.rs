//! Model bundles: a directory holding `manifest.toml`, `manifest.sig` and the files the
//! manifest lists with their sha256 (`model.onnx`, `id_head.onnx`), and its `.tar` for
//! transport.
//!
//! [`verify_bundle`] is what the appliance calls before it loads a bundle. It checks, in this
//! order, and refuses with a reason naming the failed check:
//! 1. the signature file names a key in the trusted set (else "unknown key");
//! 2. the signature verifies over the exact bytes of `manifest.toml` (else "signature does not
//!    verify": the manifest was modified or the signature belongs to another manifest);
//! 3. only then is the (now authenticated) manifest parsed: bundle format and contract version
//!    must be this build's (else "contract version mismatch");
//! 4. every listed file exists with its sha256 (else "sha256 mismatch"), and the directory holds
//!    no file the manifest does not list;
//! 5. the contract is internally consistent.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::manifest::{BUNDLE_FORMAT, CONTRACT_VERSION, MANIFEST, Manifest, SIGNATURE};
use crate::signing::{KeyRole, SecretKey, SignatureFile, TrustedKeys};
use crate::{Error, Result};

/// Largest manifest or signature file read (a manifest is a few kB).
const MAX_SMALL_FILE: u64 = 1 << 20;

/// A bundle that passed [`verify_bundle`].
#[derive(Debug, Clone)]
pub struct VerifiedBundle {
    /// The bundle directory.
    pub dir: PathBuf,
    /// The authenticated manifest.
    pub manifest: Manifest,
    /// Name of the key that signed it.
    pub key_name: String,
    /// Id of that key.
    pub key_id: String,
    /// sha256 of the signed `manifest.toml` (lowercase hex): the bundle's identity, e.g. for
    /// [`crate::trt_cache::EngineCacheKey`].
    pub manifest_sha256: String,
    /// Signed with a demo key: the bundle may run, but the operator must be told loudly (logs
    /// and console) that this is not a released model.
    pub demo: bool,
}

impl VerifiedBundle {
    /// The warning to show when [`Self::demo`] is set.
    pub fn demo_warning(&self) -> Option<String> {
        self.demo.then(|| {
            format!(
                "WARNING: model bundle {} is signed with the DEMO key {:?} ({}): it is a \
                 demonstration model, not a released one, and must not be used for patient care",
                self.dir.display(),
                self.key_name,
                self.key_id
            )
        })
    }

    /// Path of a file of the bundle.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }
}

/// sha256 of a file, lowercase hex.
///
/// # Errors
/// [`Error::Io`] if unreadable.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(Error::io(path))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

fn read_small(path: &Path) -> Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(Error::io(path))?;
    let mut bytes = Vec::new();
    f.take(MAX_SMALL_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(Error::io(path))?;
    Ok(bytes)
}

/// A bundle file name: one plain component, no separators, not hidden.
fn plain_name(name: &str) -> bool {
    !name.is_empty() && !name.starts_with('.') && !name.contains(['/', '\\', '\0'])
}

/// Writes the bundle directory `dir`: copies nothing, but records the sha256 of each of
/// `files` (already in `dir`) in `manifest.files` and writes `manifest.toml`.
///
/// # Errors
/// [`Error::Io`] for unreadable files, [`Error::Other`] for a bad file name.
pub fn write_manifest(dir: &Path, manifest: &mut Manifest, files: &[&str]) -> Result<()> {
    let mut hashes = BTreeMap::new();
    for f in files {
        if !plain_name(f) || *f == MANIFEST || *f == SIGNATURE {
            return Err(Error::Other(format!("{f:?} cannot be a bundle file")));
        }
        hashes.insert((*f).to_owned(), sha256_file(&dir.join(f))?);
    }
    manifest.files = hashes;
    let path = dir.join(MANIFEST);
    std::fs::write(&path, manifest.to_toml()?).map_err(Error::io(&path))
}

/// Signs `dir/manifest.toml` with `key`, writing `dir/manifest.sig`.
///
/// # Errors
/// [`Error::Io`] if the manifest is unreadable or the signature cannot be written.
pub fn sign_bundle(dir: &Path, key: &SecretKey) -> Result<()> {
    let manifest = read_small(&dir.join(MANIFEST))?;
    let sig = key.sign(&manifest);
    let text = toml::to_string(&sig).map_err(|e| Error::Other(e.to_string()))?;
    let path = dir.join(SIGNATURE);
    std::fs::write(&path, text).map_err(Error::io(&path))
}

/// Verifies the bundle in `dir` against `trusted` (see the module docs for the checks).
///
/// # Errors
/// [`Error::Refused`] with the reason, [`Error::Io`] if the directory is unreadable.
pub fn verify_bundle(dir: &Path, trusted: &TrustedKeys) -> Result<VerifiedBundle> {
    let refuse = |reason: String| Error::Refused {
        dir: dir.to_path_buf(),
        reason,
    };
    let manifest_bytes = read_small(&dir.join(MANIFEST))
        .map_err(|e| refuse(format!("cannot read {MANIFEST}: {e}")))?;
    let sig_bytes = read_small(&dir.join(SIGNATURE))
        .map_err(|e| refuse(format!("unsigned: cannot read {SIGNATURE}: {e}")))?;
    if manifest_bytes.len() as u64 > MAX_SMALL_FILE || sig_bytes.len() as u64 > MAX_SMALL_FILE {
        return Err(refuse(
            "manifest or signature file is implausibly large".into(),
        ));
    }
    let sig: SignatureFile = std::str::from_utf8(&sig_bytes)
        .ok()
        .and_then(|s| toml::from_str(s).ok())
        .ok_or_else(|| refuse(format!("{SIGNATURE} is malformed")))?;
    let key = trusted.find(&sig.key_id).ok_or_else(|| {
        refuse(format!(
            "signed by unknown key {} (trusted: {})",
            sig.key_id,
            if trusted.keys.is_empty() {
                "none".to_owned()
            } else {
                trusted
                    .keys
                    .iter()
                    .map(|k| format!("{} {}", k.name, k.id))
                    .collect::<Vec<_>>()
                    .join(", ")
            }
        ))
    })?;
    let raw: [u8; 64] = hex::decode(sig.signature.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| refuse(format!("{SIGNATURE} does not hold a 64-byte signature")))?;
    if !key.verifies(&manifest_bytes, &raw) {
        return Err(refuse(format!(
            "signature does not verify with key {} ({}): {MANIFEST} was modified or the \
             signature belongs to another manifest",
            key.name, key.id
        )));
    }
    let text = std::str::from_utf8(&manifest_bytes)
        .map_err(|_| refuse(format!("{MANIFEST} is not UTF-8")))?;
    // Versions first, from a loose parse, so an old or new manifest gets the version message
    // rather than a parse error about a field it lacks.
    let loose: toml::Table =
        toml::from_str(text).map_err(|e| refuse(format!("{MANIFEST} is not TOML: {e}")))?;
    let version = |k: &str| loose.get(k).and_then(toml::Value::as_integer);
    if version("contract_version") != Some(i64::from(CONTRACT_VERSION)) {
        return Err(refuse(format!(
            "contract version mismatch: bundle has {:?}, this build supports {CONTRACT_VERSION}",
            version("contract_version")
        )));
    }
    if version("bundle_format") != Some(i64::from(BUNDLE_FORMAT)) {
        return Err(refuse(format!(
            "bundle format mismatch: bundle has {:?}, this build reads {BUNDLE_FORMAT}",
            version("bundle_format")
        )));
    }
    let manifest = Manifest::from_toml(text).map_err(|e| refuse(e.to_string()))?;
    for (name, want) in &manifest.files {
        if !plain_name(name) {
            return Err(refuse(format!(
                "manifest lists an unsafe file name {name:?}"
            )));
        }
        let got = sha256_file(&dir.join(name)).map_err(|e| refuse(format!("{name}: {e}")))?;
        if &got != want {
            return Err(refuse(format!(
                "{name}: sha256 mismatch (file modified or corrupted): manifest {want}, file {got}"
            )));
        }
    }
    for entry in std::fs::read_dir(dir).map_err(Error::io(dir))? {
        let name = entry.map_err(Error::io(dir))?.file_name();
        let name = name.to_string_lossy();
        if name != MANIFEST && name != SIGNATURE && !manifest.files.contains_key(name.as_ref()) {
            return Err(refuse(format!(
                "unexpected file {name:?} not covered by the manifest"
            )));
        }
    }
    for needed in std::iter::once(&manifest.model.main_graph).chain(&manifest.model.id_head_graph) {
        if !manifest.files.contains_key(needed) {
            return Err(refuse(format!(
                "graph {needed} is not among the hashed files"
            )));
        }
    }
    manifest
        .contract
        .validate()
        .map_err(|e| refuse(format!("inconsistent contract: {e}")))?;
    Ok(VerifiedBundle {
        dir: dir.to_path_buf(),
        key_name: key.name.clone(),
        key_id: key.id.clone(),
        demo: key.role == KeyRole::Demo,
        manifest_sha256: hex::encode(Sha256::digest(&manifest_bytes)),
        manifest,
    })
}

/// Packs the bundle directory into a deterministic tar (sorted names, mtime 0, mode 0644,
/// owner 0): the same bundle always gives the same bytes.
///
/// # Errors
/// [`Error::Io`] for unreadable files or an unwritable output.
pub fn write_tar(dir: &Path, out: &Path) -> Result<()> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(Error::io(dir))?
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let file = std::fs::File::create(out).map_err(Error::io(out))?;
    let mut tar = tar::Builder::new(file);
    for name in names {
        let path = dir.join(&name);
        let data = std::fs::read(&path).map_err(Error::io(&path))?;
        let mut h = tar::Header::new_ustar();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, &name, data.as_slice())
            .map_err(Error::io(out))?;
    }
    tar.into_inner()
        .and_then(|mut f| std::io::Write::flush(&mut f))
        .map_err(Error::io(out))
}

/// Unpacks a bundle tar into the empty or new directory `dest`, accepting only regular files
/// with plain names (no paths, links or devices), then verifies it.
///
/// # Errors
/// [`Error::Refused`] for an unsafe archive or a failed verification.
pub fn unpack_and_verify(
    tar_path: &Path,
    dest: &Path,
    trusted: &TrustedKeys,
) -> Result<VerifiedBundle> {
    let refuse = |reason: String| Error::Refused {
        dir: tar_path.to_path_buf(),
        reason,
    };
    std::fs::create_dir_all(dest).map_err(Error::io(dest))?;
    let file = std::fs::File::open(tar_path).map_err(Error::io(tar_path))?;
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().map_err(Error::io(tar_path))? {
        let mut entry = entry.map_err(Error::io(tar_path))?;
        let name = entry
            .path()
            .map_err(Error::io(tar_path))?
            .to_string_lossy()
            .into_owned();
        if entry.header().entry_type() != tar::EntryType::Regular || !plain_name(&name) {
            return Err(refuse(format!(
                "archive entry {name:?} is not a plain file"
            )));
        }
        let target = dest.join(&name);
        if target.exists() {
            return Err(refuse(format!("archive entry {name:?} appears twice")));
        }
        let mut out = std::fs::File::create(&target).map_err(Error::io(&target))?;
        std::io::copy(&mut entry, &mut out).map_err(Error::io(&target))?;
    }
    verify_bundle(dest, trusted)
}
