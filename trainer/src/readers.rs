//! Readers: one manifest row ([`ManifestCase`]) → one [`Case`] in memory.
//!
//! ## Images and label maps
//! The image is a NIfTI file read by [`vertebra_core::nifti::read_f32`] (CT in HU; a DICOM
//! series directory is refused: the trainer has no DICOM reader yet). The label map is a NIfTI
//! file in the VerSe convention (CTSpine1K masks use the same values): every value is mapped
//! by [`Vertebra::from_verse_label`] and [`VerseLabel::target_class`]: 0 background, 1–25 =
//! C1–L6 (kept), 26 sacrum and 27 coccyx → background. **28 (T13) is refused**: core says its
//! voxels must be excluded from losses, and the trainer's losses have no ignore mask yet, so
//! mapping them to background or to a neighbour would teach the network a wrong label; the
//! error names the case and asks to leave the case out. Any other value is an error. The
//! label map must be on the image grid (same dimensions; origin, spacing and directions equal
//! to 1e-3 mm / 1e-5, then the image's geometry is used for both).
//!
//! ## Centroid files
//! Three formats, told apart by their content:
//! - **phantom `truth.json`** (`vertebra-phantom`, a JSON object whose `format` starts with
//!   `vertebra-phantom-truth/`): key `centroids`, `label` + `X`/`Y`/`Z` in **world LPS mm**.
//! - **VerSe'20 / restructured VerSe** (`anjany/verse`, `utils/data_utilities.py`,
//!   `load_centroids`): a JSON array whose first entry is `{"direction": ["P","I","R"]}` and
//!   whose other entries are `{"label", "X", "Y", "Z"}`. Coordinates are **continuous voxel
//!   indices** (voxel centres at integers, as `scipy.ndimage.center_of_mass` returns them) of
//!   the image reoriented to the axis codes of `direction`: letter `k` is where index `k`
//!   increases towards (nibabel's axis codes, e.g. `P` = towards posterior). When the codes
//!   equal the image's own orientation (the usual case: the README says "in voxels in the
//!   image space"), X/Y/Z are the image's voxel indices i/j/k. Otherwise each centroid axis is
//!   matched to the image axis with the same or the opposite letter; a flipped axis is mapped
//!   as `n − c`, exactly VerSe's `reorient_centroids_to` (which uses `size − c`, one voxel off
//!   the exact `n − 1 − c`; we keep the dataset authors' rule).
//! - **VerSe'19 challenge** (no `direction` entry): X/Y/Z are **millimetres** in the frame
//!   axis codes `I`, `P`, `L` measured from the image's voxel-0 corner, flipped axes from the
//!   far end at `n · spacing` — the conversion used by Payer et al.'s VerSe'19 code
//!   (`christianpayer/MedicalDataAugmentationTool-VerSe`, `other/preprocess_landmarks.py`:
//!   physical = (Z, Y, size_z·sp_z − X) in the RAI-reoriented image). We found no official
//!   statement of this frame; prefer the restructured release (with `direction`) for real use.
//!
//! Entries with a NaN coordinate are skipped (as VerSe's loader does); labels 26 and 27 are
//! skipped (not targets); 28 (T13) is skipped as a centroid (no class) — its voxels would
//! already have been refused in the label map. Every kept centroid must have voxels in the
//! label map: centroids and labels that disagree are an error, not a silent guess.
//!
//! ## Lesion files
//! Phantom `truth.json`, key `lesions` ([`LesionTruth`], world LPS mm). A present lesion file
//! with no lesions means "annotated and lesion-free".
//!
//! ## Annotation types
//! `ids_annotated` is true exactly when the manifest names a centroid file (VerSe-style data).
//! A label map without centroids (CTSpine1K style) trains the segmentation losses only.
//!
//! Errors are [`Error::Case`] naming the case id and the file; patient ids never appear.

use std::collections::BTreeSet;
use std::path::Path;

use serde::Deserialize;
use vertebra_core::anatomy::{VerseLabel, Vertebra};
use vertebra_core::phantom::{CentroidRecord, LesionTruth, TRUTH_FORMAT};
use vertebra_core::volume::reorient::orientation_code;
use vertebra_core::{Geometry, Volume, nifti};

use crate::dataset::Case;
use crate::manifest::ManifestCase;
use crate::{Error, Result};

/// A vertebra centroid in world coordinates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Centroid {
    /// The vertebra.
    pub vertebra: Vertebra,
    /// World position, LPS mm.
    pub position_mm: [f64; 3],
}

/// A case with its centroids (which [`Case`] does not carry: window centres and the
/// identification targets come from the label map).
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedCase {
    /// The case.
    pub case: Case,
    /// Centroids from the centroid file, if the manifest names one.
    pub centroids: Option<Vec<Centroid>>,
}

/// Reads a manifest case into memory (image, labels, lesions; see the module docs).
///
/// # Errors
/// [`Error::Case`] naming the case and the file for anything unreadable or inconsistent.
pub fn load_case(mc: &ManifestCase) -> Result<Case> {
    load_case_with_centroids(mc).map(|l| l.case)
}

/// As [`load_case`], also returning the centroids of the centroid file.
///
/// # Errors
/// As [`load_case`].
pub fn load_case_with_centroids(mc: &ManifestCase) -> Result<LoadedCase> {
    let fail = |what: &str, path: &Path, message: String| Error::Case {
        case: mc.id.clone(),
        message: format!("{what} {}: {message}", path.display()),
    };
    let image = read_image(&mc.image).map_err(|m| fail("image", &mc.image, m))?;
    let labels = match &mc.labels {
        Some(p) => Some(
            read_verse_labels(p, image.geometry(), image.dims())
                .map_err(|m| fail("labels", p, m))?,
        ),
        None => None,
    };
    let centroids = match &mc.centroids {
        Some(p) => {
            let c = read_centroids(p, image.geometry(), image.dims())
                .map_err(|m| fail("centroids", p, m))?;
            if let Some(l) = &labels {
                let present: BTreeSet<u8> = l.data().iter().copied().filter(|&v| v > 0).collect();
                if let Some(missing) = c.iter().find(|c| !present.contains(&c.vertebra.label())) {
                    return Err(fail(
                        "centroids",
                        p,
                        format!(
                            "centroid of {} has no voxels in the label map: centroids and \
                             labels disagree (wrong file pair?)",
                            missing.vertebra.name()
                        ),
                    ));
                }
            }
            Some(c)
        }
        None => None,
    };
    let lesions = match &mc.lesions {
        Some(p) => Some(read_lesions(p).map_err(|m| fail("lesions", p, m))?),
        None => None,
    };
    Ok(LoadedCase {
        case: Case {
            id: mc.id.clone(),
            patient_id: mc.patient_id.clone(),
            domain: mc.domain.clone(),
            modality: mc.modality,
            image,
            labels,
            ids_annotated: mc.centroids.is_some(),
            lesions,
        },
        centroids,
    })
}

/// Reads the image (NIfTI; HU for CT). The message of the error does not name the file (the
/// caller adds it).
///
/// # Errors
/// A directory (DICOM series: not supported yet) or any NIfTI error.
pub fn read_image(path: &Path) -> std::result::Result<Volume<f32>, String> {
    if path.is_dir() {
        return Err(
            "is a directory (a DICOM series?): the trainer reads NIfTI images only; \
                    convert the series with the appliance's importer or dcm2niix"
                .into(),
        );
    }
    let v = nifti::read_f32(path).map_err(|e| e.to_string())?;
    if let Some(i) = v.data().iter().position(|x| !x.is_finite()) {
        return Err(format!("voxel {i} is not finite"));
    }
    Ok(v)
}

/// Reads a VerSe / CTSpine1K label map and maps it to the trainer's classes (module docs),
/// checking that it lies on the image grid.
///
/// # Errors
/// NIfTI errors, values VerSe does not define, T13 voxels, another grid than the image's.
pub fn read_verse_labels(
    path: &Path,
    image_geometry: &Geometry,
    image_dims: [usize; 3],
) -> std::result::Result<Volume<u8>, String> {
    let raw = nifti::read_labels::<u16>(path).map_err(|e| e.to_string())?;
    if raw.dims() != image_dims {
        return Err(format!(
            "dimensions {:?} differ from the image's {image_dims:?}",
            raw.dims()
        ));
    }
    if !geometry_close(raw.geometry(), image_geometry) {
        return Err(format!(
            "geometry {:?} differs from the image's {image_geometry:?}: the label map must be on \
             the image grid",
            raw.geometry()
        ));
    }
    let mut t13 = 0usize;
    let mut out = Vec::with_capacity(raw.len());
    for (i, &v) in raw.data().iter().enumerate() {
        let class = match u8::try_from(v) {
            Ok(b) => Vertebra::from_verse_label(b)
                .target_class()
                .map_err(|e| format!("voxel {i}: {e}"))?,
            Err(_) => {
                return Err(format!(
                    "voxel {i}: mask value {v} is not a VerSe label (0 background, 1-25 C1-L6, \
                     26 sacrum, 27 coccyx, 28 T13)"
                ));
            }
        };
        if class.is_none() {
            t13 += 1;
        }
        out.push(class.unwrap_or(0));
    }
    if t13 > 0 {
        return Err(format!(
            "{t13} voxels carry VerSe label 28 (T13), which has no class; its voxels must be \
             excluded from the losses and the trainer has no ignore mask yet: leave this case \
             out of the manifest"
        ));
    }
    Volume::from_vec(image_dims, out, *image_geometry).map_err(|e| e.to_string())
}

/// Whether two grids are the same to NIfTI's float32 precision.
fn geometry_close(a: &Geometry, b: &Geometry) -> bool {
    (0..3).all(|i| {
        (a.spacing[i] - b.spacing[i]).abs() <= 1e-3
            && (a.origin[i] - b.origin[i]).abs() <= 1e-3
            && (0..3).all(|k| (a.direction[i][k] - b.direction[i][k]).abs() <= 1e-5)
    })
}

/// The phantom ground truth, only the keys the readers use (unknown keys are ignored so that
/// additions to the format do not break training).
#[derive(Deserialize)]
struct PhantomTruth {
    format: String,
    #[serde(default)]
    centroids: Option<Vec<CentroidRecord>>,
    #[serde(default)]
    lesions: Option<Vec<LesionTruth>>,
}

fn read_json(path: &Path) -> std::result::Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    serde_json::from_str(&text).map_err(|e| format!("not valid JSON: {e}"))
}

fn phantom_truth(v: serde_json::Value) -> std::result::Result<PhantomTruth, String> {
    let t: PhantomTruth =
        serde_json::from_value(v).map_err(|e| format!("not a phantom truth.json: {e}"))?;
    let family = TRUTH_FORMAT.split('/').next().unwrap_or(TRUTH_FORMAT);
    if t.format != TRUTH_FORMAT {
        return Err(if t.format.starts_with(family) {
            format!(
                "truth format {:?}: this trainer reads {TRUTH_FORMAT}",
                t.format
            )
        } else {
            format!(
                "format {:?} is not a phantom truth ({TRUTH_FORMAT})",
                t.format
            )
        });
    }
    Ok(t)
}

/// Reads a centroid file (phantom truth, VerSe'20 or VerSe'19; module docs) into world
/// coordinates, using the image grid for voxel-based formats.
///
/// # Errors
/// Unreadable JSON, an unknown layout, bad direction codes, labels VerSe does not define.
pub fn read_centroids(
    path: &Path,
    image_geometry: &Geometry,
    image_dims: [usize; 3],
) -> std::result::Result<Vec<Centroid>, String> {
    parse_centroids(&read_json(path)?, image_geometry, image_dims)
}

/// [`read_centroids`] on parsed JSON.
///
/// # Errors
/// As [`read_centroids`].
pub fn parse_centroids(
    json: &serde_json::Value,
    image_geometry: &Geometry,
    image_dims: [usize; 3],
) -> std::result::Result<Vec<Centroid>, String> {
    match json {
        serde_json::Value::Object(_) => {
            let t = phantom_truth(json.clone())?;
            let records = t
                .centroids
                .ok_or("the phantom truth has no \"centroids\" key")?;
            records
                .iter()
                .filter_map(|r| {
                    class_of(f64::from(r.label))
                        .transpose()
                        .map(|v| v.map(|vertebra| (vertebra, [r.x, r.y, r.z])))
                })
                .map(|r| {
                    let (vertebra, p) = r?;
                    if p.iter().any(|c| !c.is_finite()) {
                        return Err(format!("centroid of {} is not finite", vertebra.name()));
                    }
                    Ok(Centroid {
                        vertebra,
                        position_mm: p,
                    })
                })
                .collect()
        }
        serde_json::Value::Array(entries) => {
            parse_verse_centroids(entries, image_geometry, image_dims)
        }
        _ => Err("expected a phantom truth object or a VerSe centroid array".into()),
    }
}

/// The class of a VerSe centroid label: `Ok(None)` to skip (26, 27, 28), an error for an
/// undefined value.
fn class_of(label: f64) -> std::result::Result<Option<Vertebra>, String> {
    if label.fract() != 0.0 || !(0.0..=255.0).contains(&label) {
        return Err(format!("label {label} is not a VerSe label"));
    }
    match Vertebra::from_verse_label(label as u8) {
        VerseLabel::Vertebra(v) => Ok(Some(v)),
        VerseLabel::Sacrum | VerseLabel::Coccyx | VerseLabel::T13 => Ok(None),
        VerseLabel::Background | VerseLabel::Unknown(_) => Err(format!(
            "centroid label {label} is not a VerSe vertebra label (1-25, 26-28)"
        )),
    }
}

/// Axis letter → (world axis in LPS, +1 if the letter is the LPS positive direction).
fn axis_letter(c: char) -> Option<(usize, f64)> {
    match c.to_ascii_uppercase() {
        'L' => Some((0, 1.0)),
        'R' => Some((0, -1.0)),
        'P' => Some((1, 1.0)),
        'A' => Some((1, -1.0)),
        'S' => Some((2, 1.0)),
        'I' => Some((2, -1.0)),
        _ => None,
    }
}

fn parse_verse_centroids(
    entries: &[serde_json::Value],
    g: &Geometry,
    dims: [usize; 3],
) -> std::result::Result<Vec<Centroid>, String> {
    // VerSe'19 challenge files have no direction entry: IPL millimetres (module docs).
    let mut codes = ['I', 'P', 'L'];
    let mut millimetres = true;
    let mut points = Vec::new();
    for (n, e) in entries.iter().enumerate() {
        let obj = e
            .as_object()
            .ok_or_else(|| format!("entry {n} is not an object"))?;
        if let Some(d) = obj.get("direction") {
            if n != 0 {
                return Err(format!("entry {n}: \"direction\" must be the first entry"));
            }
            let letters: Vec<char> = d
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().and_then(|s| s.chars().next()))
                        .collect()
                })
                .unwrap_or_default();
            if letters.len() != 3 || letters.iter().any(|&c| axis_letter(c).is_none()) {
                return Err(format!(
                    "direction {d} is not three axis codes (L/R, A/P, S/I)"
                ));
            }
            codes = [letters[0], letters[1], letters[2]];
            millimetres = false;
            continue;
        }
        let num = |k: &str| -> std::result::Result<f64, String> {
            match obj.get(k) {
                Some(serde_json::Value::Number(x)) => x
                    .as_f64()
                    .ok_or_else(|| format!("entry {n}: {k} is not a number")),
                // VerSe writes NaN as a string or null in a few files: skipped below.
                Some(serde_json::Value::Null | serde_json::Value::String(_)) => Ok(f64::NAN),
                _ => Err(format!("entry {n}: missing {k}")),
            }
        };
        let label = num("label")?;
        let p = [num("X")?, num("Y")?, num("Z")?];
        if p.iter().any(|c| c.is_nan()) {
            continue;
        }
        if let Some(v) = class_of(label).map_err(|m| format!("entry {n}: {m}"))? {
            points.push((v, p));
        }
    }
    // Which image voxel axis each centroid axis runs along, and in which sense.
    let image_code: Vec<char> = orientation_code(g)
        .map_err(|e| e.to_string())?
        .chars()
        .collect();
    let image_axes: Vec<(usize, f64)> = image_code.iter().filter_map(|&c| axis_letter(c)).collect();
    let mut map = [(0usize, 1.0f64); 3];
    let mut used = [false; 3];
    for (k, &c) in codes.iter().enumerate() {
        let (world, sign) = axis_letter(c).expect("checked above");
        let a = image_axes
            .iter()
            .position(|&(w, _)| w == world)
            .ok_or_else(|| format!("axis code {c} matches no image axis"))?;
        if used[a] {
            return Err(format!(
                "direction {codes:?} names one anatomical axis twice"
            ));
        }
        used[a] = true;
        map[k] = (a, sign * image_axes[a].1);
    }
    Ok(points
        .into_iter()
        .map(|(vertebra, p)| {
            let mut idx = [0.0; 3];
            for k in 0..3 {
                let (a, same) = map[k];
                let c = if millimetres {
                    p[k] / g.spacing[a]
                } else {
                    p[k]
                };
                idx[a] = if same > 0.0 { c } else { dims[a] as f64 - c };
            }
            Centroid {
                vertebra,
                position_mm: g.voxel_to_world(idx),
            }
        })
        .collect())
}

/// Reads the lesions of a phantom `truth.json`.
///
/// # Errors
/// Unreadable JSON, another format, no `lesions` key.
pub fn read_lesions(path: &Path) -> std::result::Result<Vec<LesionTruth>, String> {
    let json = read_json(path)?;
    if !json.is_object() {
        return Err(
            "lesion files are phantom truth.json objects (key \"lesions\"); no other lesion \
             format is supported yet"
                .into(),
        );
    }
    phantom_truth(json)?
        .lesions
        .ok_or_else(|| "the phantom truth has no \"lesions\" key".into())
}
