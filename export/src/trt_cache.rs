//! Where TensorRT engines and timing caches of a bundle live, so that a restart reuses them and
//! a new GPU, TensorRT or bundle rebuilds them.
//!
//! ort's TensorRT execution provider builds an engine from `model.onnx` on first use (minutes)
//! and can persist it (`trt_engine_cache_path`) with a timing cache (`trt_timing_cache_path`).
//! An engine is only valid for the GPU model, the TensorRT version and the exact graph it was
//! built from, and TensorRT does not check that reliably when it loads a cache. So each
//! combination gets its own directory under the appliance's state directory:
//! `STATE/trt-cache/<gpu>-trt<version>-<bundle[..16]>-<key[..16]>`, where `bundle` is the
//! sha256 of the bundle's signed `manifest.toml` (which binds every graph by hash) and `key` the
//! sha256 of all three canonical fields. The readable prefix is for operators; the key suffix
//! makes collisions of the sanitised prefix harmless.

use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Sub-directory of the appliance's state directory holding all engine caches.
pub const CACHE_ROOT: &str = "trt-cache";

/// Version tag of the key derivation; bump to invalidate every cache.
const KEY_VERSION: &str = "vertebra-trt-cache-v1";

/// The identity of one engine cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineCacheKey {
    /// GPU model as the driver reports it (e.g. `NVIDIA H100 80GB HBM3`), whitespace-normalised.
    pub gpu_model: String,
    /// TensorRT version (e.g. `10.13.3`).
    pub tensorrt_version: String,
    /// sha256 of the bundle's `manifest.toml`, lowercase hex.
    pub bundle_sha256: String,
}

impl EngineCacheKey {
    /// A key from the raw values; whitespace in the GPU model and version is normalised and the
    /// hash lower-cased, so cosmetic differences in how they were read do not rebuild.
    pub fn new(gpu_model: &str, tensorrt_version: &str, bundle_sha256: &str) -> Self {
        let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
        Self {
            gpu_model: norm(gpu_model),
            tensorrt_version: norm(tensorrt_version),
            bundle_sha256: bundle_sha256.trim().to_ascii_lowercase(),
        }
    }

    /// sha256 over the key version and the three fields, NUL-separated, lowercase hex.
    pub fn digest(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            KEY_VERSION,
            &self.gpu_model,
            &self.tensorrt_version,
            &self.bundle_sha256,
        ] {
            h.update(part.as_bytes());
            h.update([0u8]);
        }
        hex::encode(h.finalize())
    }

    /// The directory name of this cache (see the module docs).
    pub fn dir_name(&self) -> String {
        let safe = |s: &str| -> String {
            let mapped: String = s
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '.' {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .collect();
            mapped.trim_matches(['_', '.']).chars().take(40).collect()
        };
        let bundle: String = self.bundle_sha256.chars().take(16).collect();
        format!(
            "{}-trt{}-{bundle}-{}",
            safe(&self.gpu_model),
            safe(&self.tensorrt_version),
            &self.digest()[..16]
        )
    }

    /// The cache directory under the appliance's state directory.
    pub fn dir(&self, state_dir: &Path) -> PathBuf {
        state_dir.join(CACHE_ROOT).join(self.dir_name())
    }
}

/// Cache directories under `state_dir` that belong to another key (another GPU, TensorRT or
/// bundle): candidates for removal once the current engine is built.
///
/// # Errors
/// I/O errors other than a missing cache root.
pub fn stale_caches(state_dir: &Path, current: &EngineCacheKey) -> std::io::Result<Vec<PathBuf>> {
    let root = state_dir.join(CACHE_ROOT);
    let keep = current.dir_name();
    let entries = match std::fs::read_dir(&root) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut stale = Vec::new();
    for entry in entries {
        let entry = entry?;
        if entry.file_type()?.is_dir() && entry.file_name().to_string_lossy() != keep {
            stale.push(entry.path());
        }
    }
    stale.sort();
    Ok(stale)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUNDLE: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn key() -> EngineCacheKey {
        EngineCacheKey::new("NVIDIA H100 80GB HBM3", "10.13.3", BUNDLE)
    }

    #[test]
    fn a_restart_reuses_the_same_directory() {
        let state = Path::new("/var/lib/vertebrad");
        assert_eq!(key().dir(state), key().dir(state));
        // Cosmetic differences in how the values were read do not matter.
        let k2 = EngineCacheKey::new(
            "  NVIDIA  H100 80GB\tHBM3 ",
            "10.13.3\n",
            &BUNDLE.to_uppercase(),
        );
        assert_eq!(k2.dir(state), key().dir(state));
    }

    #[test]
    fn each_field_changes_the_directory() {
        let base = key().dir_name();
        for other in [
            EngineCacheKey::new("NVIDIA H200", "10.13.3", BUNDLE),
            EngineCacheKey::new("NVIDIA H100 80GB HBM3", "10.14.0", BUNDLE),
            EngineCacheKey::new(
                "NVIDIA H100 80GB HBM3",
                "10.13.3",
                &BUNDLE.replace('9', "8"),
            ),
        ] {
            assert_ne!(other.dir_name(), base, "{other:?}");
            assert_ne!(other.digest(), key().digest());
        }
    }

    #[test]
    fn directory_name_is_one_safe_component() {
        let k = EngineCacheKey::new("GPU/../../etc passwd", "10.1", BUNDLE);
        let name = k.dir_name();
        assert!(!name.contains('/') && !name.contains(' '), "{name}");
        assert!(
            name.starts_with("gpu_.._.._etc_passwd-trt10.1-9f86d081884c7d65-"),
            "{name}"
        );
        assert_eq!(
            k.dir(Path::new("/s")).parent(),
            Some(Path::new("/s/trt-cache"))
        );
    }

    #[test]
    fn digest_is_sha256_of_the_nul_separated_fields() {
        // Reference: printf 'vertebra-trt-cache-v1\0a\0b\0c\0' | sha256sum
        let k = EngineCacheKey::new("a", "b", "c");
        assert_eq!(k.digest(), REFERENCE_ABC);
    }

    const REFERENCE_ABC: &str = "b35928e0c3558f2f4191d9281a1864f336d132f3f09c9ef9772c75d9c5117981";

    #[test]
    fn stale_caches_lists_other_keys_only() {
        let dir = tempfile::tempdir().unwrap();
        assert!(stale_caches(dir.path(), &key()).unwrap().is_empty());
        let current = key().dir(dir.path());
        let old = EngineCacheKey::new("NVIDIA A100", "8.6", BUNDLE).dir(dir.path());
        std::fs::create_dir_all(&current).unwrap();
        std::fs::create_dir_all(&old).unwrap();
        assert_eq!(stale_caches(dir.path(), &key()).unwrap(), vec![old]);
    }
}
