//! Per-case cache of [`prepare`]'s output, so that each case is read, resampled and normalised
//! once per spacing rather than once per epoch.
//!
//! ## Layout
//! `<cache dir>/<case id>/`: `image.nii` (float32, normalised), `labels.nii` (uint8, if the
//! case has labels) and `meta.json` (cache version, key, annotations, centroids, lesions, the
//! exact f64 geometry, and a 64-bit FNV-1a checksum of each NIfTI file). Plain `.nii`: the
//! cache is read every epoch and gzip would cost more time than it saves disk.
//!
//! ## Key and validity
//! The key is the FNV-1a hash of [`CACHE_VERSION`], vertebra-core's version, the case id, the
//! spacing (f64 bits) and, for every input file (image, labels, centroids, lesions), its path,
//! size and modification time. An entry is used only if its `meta.json` parses, its version
//! and key equal the expected ones, both checksums match and the volumes read back with the
//! recorded dimensions; anything else (a foreign, stale, truncated or edited entry) is
//! rebuilt from the inputs, never trusted. Volumes get the geometry recorded in `meta.json`
//! (NIfTI stores float32). A miss also returns the entry as read back, so every load of an
//! entry gives identical data (the JSON round trip may move a float by one ulp).
//!
//! ## Atomicity
//! An entry is written into a fresh temporary directory next to it and renamed into place; a
//! crash leaves either the old entry, the new one, or a temporary directory that is ignored.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};
use vertebra_core::phantom::LesionTruth;
use vertebra_core::{Geometry, Volume, nifti};

use crate::manifest::{Annotations, ManifestCase};
use crate::preprocess::{PreparedCase, prepare};
use crate::readers::load_case;
use crate::split::fnv1a;
use crate::{Error, Result};

/// Bump when the prepared representation or [`prepare`] changes meaning.
pub const CACHE_VERSION: u32 = 1;

/// What a lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// A valid entry was used.
    Hit,
    /// No entry existed; one was written.
    Miss,
    /// An entry existed but was not valid (the reason); it was rebuilt.
    Rebuilt(String),
}

#[derive(Serialize, Deserialize)]
struct Meta {
    cache_version: u32,
    key: String,
    id: String,
    domain: String,
    spacing_mm: f64,
    dims: [usize; 3],
    geometry: Geometry,
    annotations: Annotations,
    centroids: Vec<(u8, [f64; 3])>,
    lesions: Option<Vec<LesionTruth>>,
    image_checksum: String,
    labels_checksum: Option<String>,
}

/// A cache directory of prepared cases.
#[derive(Debug, Clone)]
pub struct PreparedCache {
    dir: PathBuf,
}

impl PreparedCache {
    /// A cache rooted at `dir` (created on first write).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        PreparedCache { dir: dir.into() }
    }

    /// The entry directory of a case.
    pub fn entry_dir(&self, case_id: &str) -> PathBuf {
        self.dir.join(case_id)
    }

    /// The key of a case at a spacing (module docs).
    ///
    /// # Errors
    /// [`Error::Case`] if an input file's metadata cannot be read.
    pub fn key(mc: &ManifestCase, spacing_mm: f64) -> Result<String> {
        let mut text = format!(
            "v{CACHE_VERSION}|core {}|{}|{:016x}",
            vertebra_core_version(),
            mc.id,
            spacing_mm.to_bits()
        );
        let files = [
            ("image", Some(&mc.image)),
            ("labels", mc.labels.as_ref()),
            ("centroids", mc.centroids.as_ref()),
            ("lesions", mc.lesions.as_ref()),
        ];
        for (name, p) in files {
            let Some(p) = p else {
                let _ = write!(text, "|{name}:-");
                continue;
            };
            let m = std::fs::metadata(p).map_err(|e| Error::Case {
                case: mc.id.clone(),
                message: format!("{name} {}: {e}", p.display()),
            })?;
            let mtime = m
                .modified()
                .ok()
                .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_nanos());
            let _ = write!(text, "|{name}:{}:{}:{mtime}", p.display(), m.len());
        }
        Ok(format!("{:016x}", fnv1a(text.as_bytes())))
    }

    /// The prepared case from the cache, or read + prepared + stored (module docs).
    ///
    /// # Errors
    /// The errors of [`load_case`] and [`prepare`]; [`Error::Io`] / core errors if the entry
    /// cannot be written.
    pub fn load_or_prepare(
        &self,
        mc: &ManifestCase,
        spacing_mm: f64,
    ) -> Result<(PreparedCase, CacheOutcome)> {
        let key = Self::key(mc, spacing_mm)?;
        let dir = self.entry_dir(&mc.id);
        let outcome = if dir.join("meta.json").exists() {
            match read_entry(&dir, &key) {
                Ok(p) => return Ok((p, CacheOutcome::Hit)),
                Err(reason) => CacheOutcome::Rebuilt(reason),
            }
        } else {
            CacheOutcome::Miss
        };
        let prepared = prepare(&load_case(mc)?, spacing_mm)?;
        self.write_entry(&prepared, &key, spacing_mm)?;
        // Serve what a hit would serve (JSON and NIfTI round trips can move a float by an ulp),
        // so that every load of an entry gives identical data.
        let stored = read_entry(&dir, &key).map_err(|m| Error::Case {
            case: mc.id.clone(),
            message: format!(
                "cache entry {} unreadable right after writing: {m}",
                dir.display()
            ),
        })?;
        Ok((stored, outcome))
    }

    fn write_entry(&self, p: &PreparedCase, key: &str, spacing_mm: f64) -> Result<()> {
        let io = |path: &Path, source| Error::Io {
            path: path.to_owned(),
            source,
        };
        std::fs::create_dir_all(&self.dir).map_err(|e| io(&self.dir, e))?;
        let nanos = std::time::SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let tmp = self
            .dir
            .join(format!(".{}.tmp-{}-{nanos}", p.id, std::process::id()));
        std::fs::create_dir_all(&tmp).map_err(|e| io(&tmp, e))?;
        let result = (|| -> Result<()> {
            let opts = nifti::WriteOptions {
                description: format!("vertebra-trainer cache v{CACHE_VERSION}"),
                ..nifti::WriteOptions::default()
            };
            let image = tmp.join("image.nii");
            nifti::write_f32(&image, &p.image, &opts)?;
            let labels_checksum = match &p.labels {
                Some(l) => {
                    let path = tmp.join("labels.nii");
                    nifti::write_labels(&path, l, &opts)?;
                    Some(checksum(&path).map_err(|e| io(&path, e))?)
                }
                None => None,
            };
            let meta = Meta {
                cache_version: CACHE_VERSION,
                key: key.to_owned(),
                id: p.id.clone(),
                domain: p.domain.clone(),
                spacing_mm,
                dims: p.image.dims(),
                geometry: *p.image.geometry(),
                annotations: p.annotations,
                centroids: p.centroids.clone(),
                lesions: p.lesions.clone(),
                image_checksum: checksum(&image).map_err(|e| io(&image, e))?,
                labels_checksum,
            };
            let path = tmp.join("meta.json");
            let text = serde_json::to_string(&meta)
                .map_err(|e| Error::InvalidArgument(format!("cannot serialise cache meta: {e}")))?;
            std::fs::write(&path, text).map_err(|e| io(&path, e))?;
            let dir = self.entry_dir(&p.id);
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| io(&dir, e))?;
            }
            std::fs::rename(&tmp, &dir).map_err(|e| io(&dir, e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }
}

fn vertebra_core_version() -> &'static str {
    // The core crate shares the workspace version with this crate.
    env!("CARGO_PKG_VERSION")
}

fn checksum(path: &Path) -> std::io::Result<String> {
    Ok(format!("{:016x}", fnv1a(&std::fs::read(path)?)))
}

/// Reads and validates an entry; the error is the reason it is not used.
fn read_entry(dir: &Path, key: &str) -> std::result::Result<PreparedCase, String> {
    let text = std::fs::read_to_string(dir.join("meta.json")).map_err(|e| e.to_string())?;
    let meta: Meta = serde_json::from_str(&text).map_err(|e| format!("meta.json: {e}"))?;
    if meta.cache_version != CACHE_VERSION {
        return Err(format!(
            "cache version {} (want {CACHE_VERSION})",
            meta.cache_version
        ));
    }
    if meta.key != key {
        return Err("inputs or spacing changed (key differs)".into());
    }
    let image_path = dir.join("image.nii");
    if checksum(&image_path).map_err(|e| e.to_string())? != meta.image_checksum {
        return Err("image.nii checksum differs".into());
    }
    let mut image: Volume<f32> = nifti::read_f32(&image_path).map_err(|e| e.to_string())?;
    if image.dims() != meta.dims {
        return Err("image dimensions differ from meta.json".into());
    }
    image
        .set_geometry(meta.geometry)
        .map_err(|e| e.to_string())?;
    let labels = match &meta.labels_checksum {
        Some(sum) => {
            let path = dir.join("labels.nii");
            if &checksum(&path).map_err(|e| e.to_string())? != sum {
                return Err("labels.nii checksum differs".into());
            }
            let mut l: Volume<u8> = nifti::read_labels(&path).map_err(|e| e.to_string())?;
            if l.dims() != meta.dims {
                return Err("label dimensions differ from meta.json".into());
            }
            l.set_geometry(meta.geometry).map_err(|e| e.to_string())?;
            Some(l)
        }
        None => None,
    };
    Ok(PreparedCase {
        id: meta.id,
        domain: meta.domain,
        image,
        labels,
        lesions: meta.lesions,
        annotations: meta.annotations,
        centroids: meta.centroids,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;

    /// A 12³ CT at 1 mm with an L1 cube, written as NIfTI, and its manifest.
    fn write_case(dir: &Path) -> Manifest {
        let g = Geometry::axis_aligned([1.0; 3], [5.0, -3.0, 40.0]);
        let mut image = Volume::filled([12; 3], -1000.0f32, g).unwrap();
        let mut labels = Volume::filled([12; 3], 0u8, g).unwrap();
        for z in 3..9 {
            for y in 4..8 {
                for x in 2..10 {
                    let i = image.index(x, y, z);
                    image.data_mut()[i] = 600.0;
                    labels.data_mut()[i] = 20;
                }
            }
        }
        let o = nifti::WriteOptions::default();
        nifti::write_f32(dir.join("ct.nii.gz"), &image, &o).unwrap();
        nifti::write_labels(dir.join("labels.nii.gz"), &labels, &o).unwrap();
        let text = "id,patient_id,study_uid,domain,modality,image,labels,centroids,lesions,split\n\
                    c1,P,1.2,ct-standard,Ct,ct.nii.gz,labels.nii.gz,,,\n";
        Manifest::parse(text, dir, Path::new("m.csv")).unwrap()
    }

    #[test]
    fn second_load_is_a_hit_and_equal() {
        let data = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let m = write_case(data.path());
        let cache = PreparedCache::new(cache_dir.path());
        let (a, o1) = cache.load_or_prepare(&m.cases[0], 2.0).unwrap();
        assert_eq!(o1, CacheOutcome::Miss);
        let (b, o2) = cache.load_or_prepare(&m.cases[0], 2.0).unwrap();
        assert_eq!(o2, CacheOutcome::Hit);
        assert_eq!(a, b);
        // 12 voxels at 1 mm → 6 at 2 mm; (600 + 1000) / 2000 inside the cube.
        assert_eq!(b.image.dims(), [6, 6, 6]);
        assert!(b.image.data().iter().any(|&v| (v - 0.8).abs() < 1e-6));
        assert_eq!(b.centroids.len(), 1);
        // Nothing but the entry is left behind (no temporary directories).
        let names: Vec<_> = std::fs::read_dir(cache_dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("c1")]);
    }

    #[test]
    fn spacing_inputs_and_corruption_invalidate() {
        let data = tempfile::tempdir().unwrap();
        let cache_dir = tempfile::tempdir().unwrap();
        let m = write_case(data.path());
        let cache = PreparedCache::new(cache_dir.path());
        cache.load_or_prepare(&m.cases[0], 2.0).unwrap();
        // Another spacing: rebuilt (one entry per case, keyed by spacing).
        let (p, o) = cache.load_or_prepare(&m.cases[0], 3.0).unwrap();
        assert!(
            matches!(o, CacheOutcome::Rebuilt(ref r) if r.contains("key")),
            "{o:?}"
        );
        assert_eq!(p.image.dims(), [4, 4, 4]);
        assert_eq!(
            cache.load_or_prepare(&m.cases[0], 3.0).unwrap().1,
            CacheOutcome::Hit
        );
        // A changed input (new size and mtime): rebuilt.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let g = Geometry::axis_aligned([1.0; 3], [5.0, -3.0, 40.0]);
        let bigger = Volume::filled([14, 12, 12], -1000.0f32, g).unwrap();
        nifti::write_f32(
            data.path().join("ct.nii.gz"),
            &bigger,
            &nifti::WriteOptions::default(),
        )
        .unwrap();
        // (The labels no longer match the image: that is the reader's error, after the miss.)
        let e = cache
            .load_or_prepare(&m.cases[0], 3.0)
            .unwrap_err()
            .to_string();
        assert!(e.contains("case c1: labels"), "{e}");
        write_case(data.path());
        let (_, o) = cache.load_or_prepare(&m.cases[0], 3.0).unwrap();
        assert!(matches!(o, CacheOutcome::Rebuilt(_)), "{o:?}");
        // A corrupted entry: rebuilt, not trusted.
        let img = cache.entry_dir("c1").join("image.nii");
        let mut bytes = std::fs::read(&img).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&img, bytes).unwrap();
        let (p, o) = cache.load_or_prepare(&m.cases[0], 3.0).unwrap();
        assert!(
            matches!(o, CacheOutcome::Rebuilt(ref r) if r.contains("checksum")),
            "{o:?}"
        );
        assert!(p.image.data().iter().all(|v| v.is_finite()));
        // A foreign meta.json: rebuilt.
        std::fs::write(cache.entry_dir("c1").join("meta.json"), "{\"hello\": 1}").unwrap();
        let (_, o) = cache.load_or_prepare(&m.cases[0], 3.0).unwrap();
        assert!(
            matches!(o, CacheOutcome::Rebuilt(ref r) if r.contains("meta.json")),
            "{o:?}"
        );
        assert_eq!(
            cache.load_or_prepare(&m.cases[0], 3.0).unwrap().1,
            CacheOutcome::Hit
        );
    }
}
