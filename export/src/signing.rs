//! ed25519 keys as files and signatures over the manifest.
//!
//! Key files are small TOML documents so an operator can read them:
//! - secret key (`NAME.key`, mode 0600): `algorithm`, `name`, `role`, `secret_key` (hex seed);
//! - public key (`NAME.pub`): `algorithm`, `name`, `role`, `public_key` (hex).
//!
//! `role` is `release` or `demo`. What matters is the role in the *public* key file that the
//! appliance keeps in its trusted-keys directory: a bundle signed by a `demo` key verifies,
//! but [`crate::bundle::VerifiedBundle::demo`] is set and must be reported loudly.
//!
//! A key's id is the first 16 hex digits of sha256(public key); `manifest.sig` names the key by
//! id, so a verifier picks the key without trying all of them.

use std::path::{Path, PathBuf};

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The only algorithm.
pub const ALGORITHM: &str = "ed25519";

/// What a key is trusted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyRole {
    /// A production signing key.
    Release,
    /// The committed demo key: bundles verify but the appliance warns loudly.
    Demo,
}

#[derive(Serialize, Deserialize)]
struct SecretKeyFile {
    algorithm: String,
    name: String,
    role: KeyRole,
    secret_key: String,
}

#[derive(Serialize, Deserialize)]
struct PublicKeyFile {
    algorithm: String,
    name: String,
    role: KeyRole,
    public_key: String,
}

/// The content of `manifest.sig`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureFile {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// Id of the signing key ([`key_id`]).
    pub key_id: String,
    /// The 64-byte signature over the exact bytes of `manifest.toml`, hex.
    pub signature: String,
}

/// A secret key with its name and role.
#[derive(Debug)]
pub struct SecretKey {
    /// Key name (file stem).
    pub name: String,
    /// Role recorded at key generation.
    pub role: KeyRole,
    key: SigningKey,
}

/// A public key the verifier trusts.
#[derive(Debug, Clone)]
pub struct TrustedKey {
    /// Key name.
    pub name: String,
    /// Role as the trusted-keys directory records it.
    pub role: KeyRole,
    /// Key id ([`key_id`]).
    pub id: String,
    /// The key.
    pub key: VerifyingKey,
}

/// The id of a public key: the first 16 hex digits of its sha256.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..16].to_owned()
}

fn kerr(path: &Path, message: impl Into<String>) -> Error {
    Error::Key {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn decode_hex<const N: usize>(path: &Path, field: &str, text: &str) -> Result<[u8; N]> {
    let bytes =
        hex::decode(text.trim()).map_err(|e| kerr(path, format!("{field} is not hex: {e}")))?;
    bytes
        .try_into()
        .map_err(|_| kerr(path, format!("{field} must be {N} bytes")))
}

impl SecretKey {
    /// A fresh key from the operating system's random source.
    ///
    /// # Errors
    /// [`Error::Other`] if the OS random source fails.
    pub fn generate(name: &str, role: KeyRole) -> Result<Self> {
        use rand::TryRngCore;
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| Error::Other(format!("OS random source failed: {e}")))?;
        Ok(Self {
            name: name.to_owned(),
            role,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The public half.
    pub fn public(&self) -> TrustedKey {
        let key = self.key.verifying_key();
        TrustedKey {
            name: self.name.clone(),
            role: self.role,
            id: key_id(&key),
            key,
        }
    }

    /// Writes `DIR/NAME.key` (mode 0600) and `DIR/NAME.pub`; refuses to overwrite.
    ///
    /// # Errors
    /// [`Error::Key`] if a file exists, [`Error::Io`] if it cannot be written.
    pub fn write(&self, dir: &Path) -> Result<(PathBuf, PathBuf)> {
        let secret = dir.join(format!("{}.key", self.name));
        let public = dir.join(format!("{}.pub", self.name));
        for p in [&secret, &public] {
            if p.exists() {
                return Err(kerr(p, "exists; refusing to overwrite a key"));
            }
        }
        let s = toml::to_string(&SecretKeyFile {
            algorithm: ALGORITHM.into(),
            name: self.name.clone(),
            role: self.role,
            secret_key: hex::encode(self.key.to_bytes()),
        })
        .map_err(|e| Error::Other(e.to_string()))?;
        write_private(&secret, s.as_bytes())?;
        let p = self.public().to_toml();
        std::fs::write(&public, p).map_err(Error::io(&public))?;
        Ok((secret, public))
    }

    /// Reads a secret key file.
    ///
    /// # Errors
    /// [`Error::Key`] for a malformed file, [`Error::Io`] if unreadable.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let f: SecretKeyFile =
            toml::from_str(&text).map_err(|e| kerr(path, format!("not a secret key file: {e}")))?;
        if f.algorithm != ALGORITHM {
            return Err(kerr(
                path,
                format!("algorithm {:?}, expected {ALGORITHM}", f.algorithm),
            ));
        }
        let seed = decode_hex::<32>(path, "secret_key", &f.secret_key)?;
        Ok(Self {
            name: f.name,
            role: f.role,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Signs `message` (the manifest's bytes).
    pub fn sign(&self, message: &[u8]) -> SignatureFile {
        SignatureFile {
            algorithm: ALGORITHM.into(),
            key_id: key_id(&self.key.verifying_key()),
            signature: hex::encode(self.key.sign(message).to_bytes()),
        }
    }
}

#[cfg(unix)]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(Error::io(path))?;
    f.write_all(bytes).map_err(Error::io(path))
}

#[cfg(not(unix))]
fn write_private(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(Error::io(path))
}

impl TrustedKey {
    /// The public key file's text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&PublicKeyFile {
            algorithm: ALGORITHM.into(),
            name: self.name.clone(),
            role: self.role,
            public_key: hex::encode(self.key.as_bytes()),
        })
        .expect("a public key file always serialises")
    }

    /// Reads a public key file.
    ///
    /// # Errors
    /// [`Error::Key`] for a malformed file or an invalid curve point.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
        let f: PublicKeyFile =
            toml::from_str(&text).map_err(|e| kerr(path, format!("not a public key file: {e}")))?;
        if f.algorithm != ALGORITHM {
            return Err(kerr(
                path,
                format!("algorithm {:?}, expected {ALGORITHM}", f.algorithm),
            ));
        }
        let bytes = decode_hex::<32>(path, "public_key", &f.public_key)?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|e| kerr(path, format!("not a valid ed25519 public key: {e}")))?;
        Ok(Self {
            name: f.name,
            role: f.role,
            id: key_id(&key),
            key,
        })
    }

    /// Verifies `sig` over `message` (strict: rejects malleable and small-order forms).
    pub fn verifies(&self, message: &[u8], sig: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(sig))
            .is_ok()
    }
}

/// The public keys a verifier trusts.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    /// The keys.
    pub keys: Vec<TrustedKey>,
}

impl TrustedKeys {
    /// Every `*.pub` file of `dir` (the appliance's trusted-keys directory).
    ///
    /// # Errors
    /// [`Error::Io`] if the directory is unreadable, [`Error::Key`] for a malformed key file
    /// (a broken trust store is an error, not a key to skip).
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(Error::io(dir))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            .collect();
        paths.sort();
        let keys = paths
            .iter()
            .map(|p| TrustedKey::read(p))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self { keys })
    }

    /// The key with this id.
    pub fn find(&self, id: &str) -> Option<&TrustedKey> {
        self.keys.iter().find(|k| k.id == id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_signatures_bind_the_message() {
        let dir = tempfile::tempdir().unwrap();
        let k = SecretKey::generate("release-1", KeyRole::Release).unwrap();
        let (sk, pk) = k.write(dir.path()).unwrap();
        assert!(k.write(dir.path()).is_err(), "overwrote a key");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&sk).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let k2 = SecretKey::read(&sk).unwrap();
        let public = TrustedKey::read(&pk).unwrap();
        assert_eq!(public.id, k.public().id);
        assert_eq!(public.role, KeyRole::Release);
        let sig = k2.sign(b"manifest");
        let bytes: [u8; 64] = hex::decode(&sig.signature).unwrap().try_into().unwrap();
        assert!(public.verifies(b"manifest", &bytes));
        assert!(!public.verifies(b"manifesT", &bytes));
        let trusted = TrustedKeys::from_dir(dir.path()).unwrap();
        assert!(trusted.find(&sig.key_id).is_some());
    }

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032 section 7.1, TEST 1: empty message.
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let k = SecretKey {
            name: "rfc".into(),
            role: KeyRole::Demo,
            key: SigningKey::from_bytes(&seed),
        };
        assert_eq!(
            hex::encode(k.public().key.as_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        assert_eq!(
            k.sign(b"").signature,
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
    }
}
