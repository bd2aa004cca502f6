//! Series → volume: the first step of inference turns a received DICOM series into a
//! [`Volume<f32>`] with patient-space geometry, or says precisely why it cannot.
//!
//! ```text
//! path ─▶ files (recursive; hidden files, DICOMDIR and non-DICOM ignored)
//!      ─▶ header.rs  headers up to Pixel Data, in parallel: UIDs, modality, type, geometry,
//!                    rescale, transfer syntax (classic single-frame or enhanced multi-frame)
//!      ─▶ mod.rs     one series? CT or MR? cross-sectional, no localizer? one matrix size?
//!      ─▶ stack.rs   one orientation and spacing, enough slices, sorted along the normal,
//!                    no duplicates, no tilt, no gaps, regular grid ─▶ Geometry
//!      ─▶ decode.rs  open, decode, rescale, drop — per file, in parallel, straight into the
//!                    preallocated volume buffer
//! ```
//!
//! # What is accepted
//!
//! CT and MR cross-sectional images (CT/MR Image Storage, Enhanced and Legacy Converted
//! Enhanced CT/MR, CT for processing): one directory of single-frame files, or one or more
//! enhanced multi-frame files whose frames are positioned by functional groups. Transfer
//! syntaxes: implicit/explicit VR little endian, explicit big endian, deflated, JPEG baseline
//! and extended 8-bit, JPEG lossless (process 14 and SV1), JPEG 2000 (lossless and lossy),
//! RLE lossless. Anything else (JPEG-LS, 12-bit lossy JPEG, JPEG XL, HTJ2K, video) fails with
//! [`SeriesError::UnsupportedTransferSyntax`] naming the UID and the syntax.
//!
//! # Gantry tilt
//!
//! Tilted acquisitions are **refused, not corrected**: when the line through the slice
//! positions is more than 0.5° off the slice normal (row × column) the loader returns
//! [`SeriesError::GantryTilt`]. Correcting would mean resampling onto a sheared grid that no
//! longer matches the source slices one to one, which the DICOM SEG/SR results must reference;
//! scanners can reconstruct a tilted acquisition without tilt instead.
//!
//! # Memory
//!
//! Headers are read up to Pixel Data only. The output buffer is allocated once; each worker
//! opens one file, decodes its frames into their places in the buffer and drops it, so peak
//! memory is the volume plus one data set (and one decoded frame) per worker thread — a
//! 600-slice 512² study never holds all its data sets at once.
//!
//! # Patient data
//!
//! Nothing in [`LoadedSeries`] or [`SeriesError`] holds or prints patient data: messages name
//! files, attributes, UIDs and numbers only.

mod decode;
mod error;
mod header;
mod stack;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use vertebra_core::Volume;

pub use error::SeriesError;
use header::{CROSS_SECTIONAL_SOP_CLASSES, ImageFile, Scanned};
use stack::Slice;

/// Checks applied while loading a series.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesOptions {
    /// Fewest slices a series may have (default 16): shorter stacks are scouts, partial
    /// transfers or single images, not a spine volume.
    pub min_slices: usize,
    /// A gap between neighbouring slices larger than this factor × the median spacing is
    /// missing slices (default 1.5).
    pub max_gap_factor: f64,
    /// Worker threads for reading and decoding; 0 (the default) uses one per CPU core.
    pub threads: usize,
}

impl Default for SeriesOptions {
    fn default() -> Self {
        SeriesOptions {
            min_slices: 16,
            max_gap_factor: 1.5,
            threads: 0,
        }
    }
}

/// Modality of a loaded series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Modality {
    /// Computed tomography: voxel values are Hounsfield units.
    Ct,
    /// Magnetic resonance: voxel values are the rescaled stored values (arbitrary units).
    Mr,
}

/// Where one slice of the volume comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceSource {
    /// SOP Instance UID of the image holding the slice.
    pub sop_instance_uid: String,
    /// Frame Number (1-based) within a multi-frame image; `None` for single-frame images.
    pub frame_number: Option<u32>,
    /// The file.
    pub file: PathBuf,
}

/// A series loaded as a volume.
///
/// Holds no patient data, and its `Debug` prints the volume's size and geometry, not voxels.
#[derive(Clone, PartialEq)]
pub struct LoadedSeries {
    /// The volume: x along the columns, y along the rows, z along the slice normal, slices in
    /// ascending position along it. CT values are HU; MR values are rescaled stored values.
    pub volume: Volume<f32>,
    /// CT or MR.
    pub modality: Modality,
    /// Study Instance UID (empty if the files carry it empty; a warning says so).
    pub study_instance_uid: String,
    /// Series Instance UID (empty if the files carry it empty; a warning says so).
    pub series_instance_uid: String,
    /// Frame of Reference UID, when the files give one.
    pub frame_of_reference_uid: Option<String>,
    /// One entry per slice, in volume z order: the image (and frame) it was decoded from.
    pub slices: Vec<SliceSource>,
    /// The image files, in the z order of their first slice.
    pub files: Vec<PathBuf>,
    /// Transfer Syntax UIDs met, sorted, each once.
    pub transfer_syntaxes: Vec<String>,
    /// Findings that did not stop loading (ignored files, missing UIDs, near-tolerance
    /// geometry).
    pub warnings: Vec<String>,
}

impl LoadedSeries {
    /// SOP Instance UIDs in volume z order (one per slice; repeated for the frames of a
    /// multi-frame image).
    pub fn sop_instance_uids(&self) -> Vec<&str> {
        self.slices
            .iter()
            .map(|s| s.sop_instance_uid.as_str())
            .collect()
    }
}

impl fmt::Debug for LoadedSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LoadedSeries")
            .field("dims", &self.volume.dims())
            .field("geometry", self.volume.geometry())
            .field("modality", &self.modality)
            .field("study_instance_uid", &self.study_instance_uid)
            .field("series_instance_uid", &self.series_instance_uid)
            .field("frame_of_reference_uid", &self.frame_of_reference_uid)
            .field("slices", &self.slices.len())
            .field("files", &self.files.len())
            .field("transfer_syntaxes", &self.transfer_syntaxes)
            .field("warnings", &self.warnings)
            .finish()
    }
}

/// Loads the series at `path` — a directory (searched recursively) or a single (multi-frame)
/// file — as a volume.
///
/// # Errors
///
/// One [`SeriesError`] variant per failure class; see its documentation and
/// `docs/series-loading.md`. The checks run in this order: reading ([`SeriesError::Io`],
/// [`SeriesError::Decode`], [`SeriesError::UnsupportedTransferSyntax`],
/// [`SeriesError::MissingAttribute`], [`SeriesError::InvalidAttribute`]), images found
/// ([`SeriesError::NoImages`]), one series ([`SeriesError::MultipleSeries`]), modality
/// ([`SeriesError::UnsupportedModality`]), cross-sectional ([`SeriesError::Localizer`]),
/// matrix ([`SeriesError::MixedSize`]), then the stack checks of orientation, count,
/// duplicates, tilt, gaps and grid, then decoding.
pub fn load_series(path: &Path, opts: &SeriesOptions) -> Result<LoadedSeries, SeriesError> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .thread_name(|i| format!("series-load-{i}"))
        .build()
        .map_err(|e| SeriesError::io(path, std::io::Error::other(e.to_string())))?;
    pool.install(|| load_in_pool(path, opts))
}

fn load_in_pool(path: &Path, opts: &SeriesOptions) -> Result<LoadedSeries, SeriesError> {
    let meta = std::fs::metadata(path).map_err(|e| SeriesError::io(path, e))?;
    let candidates = if meta.is_dir() {
        let mut found = Vec::new();
        collect_files(path, &mut found)?;
        found.sort();
        found
    } else {
        vec![path.to_owned()]
    };
    let scanned = candidates
        .par_iter()
        .map(|p| header::scan(p))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ignored = 0;
    let mut files: Vec<ImageFile> = Vec::new();
    for s in scanned {
        match s {
            Scanned::Image(f) => files.push(*f),
            Scanned::Ignored => ignored += 1,
        }
    }
    if files.is_empty() {
        return Err(SeriesError::NoImages {
            path: path.to_owned(),
            ignored,
        });
    }
    let mut warnings = Vec::new();
    if ignored > 0 {
        warnings.push(format!(
            "{ignored} file(s) ignored: not DICOM, DICOMDIR or objects without pixel data"
        ));
    }
    check_one_series(&files)?;
    let modality = check_modality(&files)?;
    check_cross_sectional(&files)?;
    check_matrix(&files)?;
    let first = &files[0];
    if first.series_instance_uid.is_empty() {
        warnings.push("Series Instance UID is empty in every file (anonymised data?)".into());
    }
    if first.study_instance_uid.is_empty() {
        warnings.push("Study Instance UID is empty".into());
    }
    let frame_of_reference_uid = first.frame_of_reference_uid.clone();
    if files
        .iter()
        .any(|f| f.frame_of_reference_uid != frame_of_reference_uid)
    {
        warnings.push("the files do not share one Frame of Reference UID".into());
    }

    let slices: Vec<Slice> = files
        .iter()
        .enumerate()
        .flat_map(|(file, f)| (0..f.frames.len()).map(move |frame| Slice { file, frame }))
        .collect();
    let stack = stack::build(&files, slices, opts, &mut warnings)?;

    let dims = [
        usize::from(first.columns),
        usize::from(first.rows),
        stack.slices.len(),
    ];
    let slice_len = dims[0] * dims[1];
    let mut data = vec![0.0_f32; slice_len * dims[2]];
    decode::decode_into(&files, &stack.slices, &mut data, slice_len)?;
    let volume = Volume::from_vec(dims, data, stack.geometry).map_err(|e| {
        SeriesError::InvalidAttribute {
            file: first.path.clone(),
            attribute: "geometry".into(),
            detail: e.to_string(),
        }
    })?;

    let mut seen = vec![false; files.len()];
    let mut ordered_files = Vec::new();
    let mut sources = Vec::with_capacity(stack.slices.len());
    for s in &stack.slices {
        let f = &files[s.file];
        if !std::mem::replace(&mut seen[s.file], true) {
            ordered_files.push(f.path.clone());
        }
        sources.push(SliceSource {
            sop_instance_uid: f.sop_instance_uid.clone(),
            frame_number: f.enhanced.then_some(s.frame as u32 + 1),
            file: f.path.clone(),
        });
    }
    let mut transfer_syntaxes: Vec<String> =
        files.iter().map(|f| f.transfer_syntax.clone()).collect();
    transfer_syntaxes.sort();
    transfer_syntaxes.dedup();
    Ok(LoadedSeries {
        volume,
        modality,
        study_instance_uid: first.study_instance_uid.clone(),
        series_instance_uid: first.series_instance_uid.clone(),
        frame_of_reference_uid,
        slices: sources,
        files: ordered_files,
        transfer_syntaxes,
        warnings,
    })
}

/// All regular files under `dir`, recursively, except hidden ones (names starting with a
/// dot: temporaries of writers such as the spool) and DICOMDIR.
fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), SeriesError> {
    for entry in std::fs::read_dir(dir).map_err(|e| SeriesError::io(dir, e))? {
        let entry = entry.map_err(|e| SeriesError::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') || name.eq_ignore_ascii_case("DICOMDIR") {
            continue;
        }
        let path = entry.path();
        let kind = entry.file_type().map_err(|e| SeriesError::io(&path, e))?;
        if kind.is_dir() {
            collect_files(&path, out)?;
        } else if kind.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// Fails when the images belong to more than one Series Instance UID.
fn check_one_series(files: &[ImageFile]) -> Result<(), SeriesError> {
    let mut series: BTreeMap<&str, (&str, usize)> = BTreeMap::new();
    for f in files {
        series
            .entry(f.series_instance_uid.as_str())
            .or_insert((f.modality.as_str(), 0))
            .1 += 1;
    }
    if series.len() > 1 {
        let mut parts: Vec<String> = series
            .values()
            .map(|(modality, n)| format!("{modality} {n} image(s)"))
            .collect();
        parts.sort();
        return Err(SeriesError::MultipleSeries {
            count: series.len(),
            summary: parts.join(", "),
        });
    }
    Ok(())
}

/// CT or MR, the same in every file.
fn check_modality(files: &[ImageFile]) -> Result<Modality, SeriesError> {
    for f in files {
        if f.modality != "CT" && f.modality != "MR" {
            return Err(SeriesError::UnsupportedModality(f.modality.clone()));
        }
    }
    if let Some(other) = files.iter().find(|f| f.modality != files[0].modality) {
        return Err(SeriesError::UnsupportedModality(format!(
            "{} and {} mixed in one series",
            files[0].modality, other.modality
        )));
    }
    Ok(if files[0].modality == "CT" {
        Modality::Ct
    } else {
        Modality::Mr
    })
}

/// Every file a cross-sectional CT/MR image, none a localizer.
fn check_cross_sectional(files: &[ImageFile]) -> Result<(), SeriesError> {
    let localizer = |v: &[String]| v.iter().any(|t| t == "LOCALIZER" || t == "SCOUT");
    for f in files {
        if !CROSS_SECTIONAL_SOP_CLASSES.contains(&f.sop_class_uid.as_str()) {
            return Err(SeriesError::Localizer {
                file: f.path.clone(),
                reason: format!(
                    "SOP Class {} is not a CT or MR cross-sectional image",
                    f.sop_class_uid
                ),
            });
        }
        if localizer(&f.image_type) {
            return Err(SeriesError::Localizer {
                file: f.path.clone(),
                reason: format!(
                    "Image Type is {} (a localizer/scout)",
                    f.image_type.join("\\")
                ),
            });
        }
        if let Some((i, h)) = f
            .frames
            .iter()
            .enumerate()
            .find(|(_, h)| localizer(&h.frame_type))
        {
            return Err(SeriesError::Localizer {
                file: f.path.clone(),
                reason: format!(
                    "Frame Type of frame {} is {} (a localizer/scout)",
                    i + 1,
                    h.frame_type.join("\\")
                ),
            });
        }
    }
    Ok(())
}

/// One matrix size (Rows × Columns) in every file.
fn check_matrix(files: &[ImageFile]) -> Result<(), SeriesError> {
    let first = &files[0];
    if let Some(f) = files
        .iter()
        .find(|f| (f.rows, f.columns) != (first.rows, first.columns))
    {
        return Err(SeriesError::MixedSize {
            file: f.path.clone(),
            detail: format!(
                "Rows × Columns {} × {} differs from {} × {} of {}",
                f.rows,
                f.columns,
                first.rows,
                first.columns,
                first.path.display()
            ),
        });
    }
    Ok(())
}
