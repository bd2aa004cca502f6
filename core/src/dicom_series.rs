//! Writing phantom volumes as DICOM image series (one single-frame file per z-slice).
//!
//! Phantom studies must reach the appliance the way real studies do: as a series of CT (or MR)
//! Image Storage files that a PACS would send. This module turns a [`Volume<f32>`] into such a
//! series, with geometry that reproduces [`Geometry`] exactly and every Type 1/2 attribute of
//! the modules the IODs require, so that `dciodvfy` accepts the files.
//!
//! # Layout
//!
//! Slice `k` of the volume (voxels `(x, y, k)`) becomes file `IMG{k+1:05}.dcm` with Instance
//! Number `k + 1`. Voxel axis x runs along the columns and y along the rows, so:
//!
//! - Image Orientation (Patient) = `direction[0]` (row direction, column index increases),
//!   then `direction[1]` (column direction, row index increases);
//! - Pixel Spacing = `[spacing[1], spacing[0]]` — DICOM orders it *row spacing first*
//!   (distance between rows, i.e. along y), then column spacing (along x);
//! - Image Position (Patient) = `voxel_to_world(0, 0, k)`;
//! - Slice Location = Image Position projected on the slice normal (row × column).
//!
//! # Pixel encoding
//!
//! - **CT** (CT Image Storage): signed 16-bit, Rescale Slope 1, Rescale Intercept −1024, so
//!   `stored = round(HU) + 1024` and HU survive exactly to the nearest 1 HU (±0.5 HU rounding).
//!   The representable range is [−33792, 31743] HU; values outside are clipped and counted in
//!   [`WrittenSeries::clipped_voxels`] (phantoms never get there, metal peaks at a few thousand
//!   HU, so a non-zero count means the input is not HU). Window: bone, centre 400, width 1800.
//! - **MR-like** (MR Image Storage): unsigned 16-bit, no rescale: `stored = round(intensity)`
//!   clipped to [0, 65535] (counted the same way). The window spans the data range.
//!
//! Non-finite voxel values are an error, never silently written as some number.
//!
//! # UIDs
//!
//! Every UID is `2.25.<decimal of a 128-bit UUID>` (ISO/IEC 9834-8, the UUID-derived root that
//! needs no registered organisation root). The UUID is version 8 ("custom", RFC 9562) whose
//! 122 free bits are the FNV-1a-128 hash of a key string built from the phantom seed, the
//! domain name and the role of the UID, e.g. `vertebra-phantom/v1/study/seed=7/domain=x`.
//! Reruns with the same seed therefore write byte-identical files, while different seeds or
//! domains never share a study. Patient identity depends on the seed only: the same seed in
//! two domains is the same synthetic patient scanned on two scanners (two studies).
//!
//! # Atomicity
//!
//! Each file is written to a hidden temporary name in the output directory and renamed into
//! place, so a reader (e.g. a folder watcher) never sees a partial file. The output directory
//! may hold only files of a previous run of this writer (same naming scheme); they are replaced,
//! and stale slices beyond the new slice count are removed, so a directory never mixes series.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use dicom_core::value::{C, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use dicom_object::meta::FileMetaTableBuilder;
use rayon::prelude::*;

use crate::phantom::domain::{DomainPreset, Modality};
use crate::volume::dot;
use crate::{Error, Geometry, Result, Volume};

/// Rescale Intercept of CT series: stored value 0 is −1024 HU, so air sits near 0 and the
/// signed range leaves room far beyond metal.
pub const CT_RESCALE_INTERCEPT: f64 = -1024.0;

/// Lowest HU a CT series can represent (stored −32768).
pub const CT_MIN_HU: f64 = i16::MIN as f64 + CT_RESCALE_INTERCEPT;

/// Highest HU a CT series can represent (stored 32767).
pub const CT_MAX_HU: f64 = i16::MAX as f64 + CT_RESCALE_INTERCEPT;

/// Manufacturer written into every file; says plainly that the data are synthetic.
pub const MANUFACTURER: &str = "VertebraFormer phantom";

/// Implementation Class UID of this writer (file meta information), derived like all our UIDs
/// from a fixed key.
pub fn implementation_class_uid() -> String {
    uid_from_key("vertebra-phantom/v1/implementation-class")
}

/// Implementation Version Name (SH, at most 16 characters).
const IMPLEMENTATION_VERSION_NAME: &str = concat!("VFPHANTOM_", env!("CARGO_PKG_VERSION"));

/// Fixed acquisition date and time: phantoms have no real date, and a fixed one keeps reruns
/// byte-identical. 2000-01-01 is obviously not a clinical acquisition date of this product.
const STUDY_DATE: &str = "20000101";
const STUDY_TIME: &str = "120000";

/// Description of the series to write: identity (seed, domain), modality and the acquisition
/// attributes that are not derivable from the volume.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesMeta {
    /// Phantom seed. Patient name/ID and, with `domain`, every UID derive from it.
    pub seed: u64,
    /// Scanner domain preset name; written as Manufacturer's Model Name and part of the UID
    /// key, so the same anatomy written for two domains gives two distinct studies.
    pub domain: String,
    /// CT (HU, CT Image Storage) or MRI-like (intensity, MR Image Storage).
    pub modality: Modality,
    /// Series Number (IS). Also part of the series UID key.
    pub series_number: u32,
    /// Series Description (LO, at most 64 characters).
    pub series_description: String,
    /// Study Description (LO, at most 64 characters).
    pub study_description: String,
    /// Reconstructed slice thickness in mm; `None` writes the slice spacing.
    pub slice_thickness_mm: Option<f64>,
    /// Convolution kernel name written for CT (SH, at most 16 characters).
    pub convolution_kernel: String,
    /// Peak kilovoltage for CT.
    pub kvp: f64,
    /// Main field strength in tesla for MR.
    pub magnetic_field_strength_t: f64,
}

impl SeriesMeta {
    /// Defaults for a phantom of `seed` in `domain`: series 1, 120 kVp, 1.5 T, a standard
    /// kernel, thickness = slice spacing, descriptions that say "phantom".
    pub fn new(seed: u64, domain: impl Into<String>, modality: Modality) -> Self {
        let (series_description, kernel) = match modality {
            Modality::Ct => ("Synthetic spine CT phantom", "STANDARD"),
            Modality::MrT1Like => ("Synthetic spine MR T1-like phantom", ""),
            Modality::MrT2Like => ("Synthetic spine MR T2-like phantom", ""),
        };
        SeriesMeta {
            seed,
            domain: domain.into(),
            modality,
            series_number: 1,
            series_description: series_description.to_owned(),
            study_description: "VertebraFormer synthetic spine phantom".to_owned(),
            slice_thickness_mm: None,
            convolution_kernel: kernel.to_owned(),
            kvp: 120.0,
            magnetic_field_strength_t: 1.5,
        }
    }

    /// Metadata for a phantom of `seed` generated with a domain preset: its name, modality,
    /// slice thickness, and a kernel name that matches the preset's sharpness (BONE for edge
    /// enhancing, SOFT for smoothing, STANDARD otherwise).
    pub fn from_preset(seed: u64, preset: &DomainPreset) -> Self {
        let mut meta = SeriesMeta::new(seed, preset.name.as_str(), preset.modality);
        meta.slice_thickness_mm = Some(preset.slice_thickness_mm);
        if preset.modality == Modality::Ct {
            let kernel = if preset.kernel_sharpness > 0.0 {
                "BONE"
            } else if preset.kernel_sharpness < 0.0 {
                "SOFT"
            } else {
                "STANDARD"
            };
            kernel.clone_into(&mut meta.convolution_kernel);
        }
        meta
    }

    /// Patient's Name: `PHANTOM^<seed>`, unmistakably synthetic.
    pub fn patient_name(&self) -> String {
        format!("PHANTOM^{}", self.seed)
    }

    /// Patient ID: `PHANTOM-<seed>`.
    pub fn patient_id(&self) -> String {
        format!("PHANTOM-{}", self.seed)
    }

    /// The study, series and frame-of-reference UIDs this series is (or would be) written
    /// with. Lets callers that do not write DICOM (e.g. NIfTI-only datasets) still record the
    /// study UID in manifests.
    pub fn uids(&self) -> SeriesUids {
        let study_key = format!("seed={}/domain={}", self.seed, self.domain);
        SeriesUids {
            study_instance_uid: uid_from_key(&format!("vertebra-phantom/v1/study/{study_key}")),
            series_instance_uid: uid_from_key(&format!(
                "vertebra-phantom/v1/series/{study_key}/series={}",
                self.series_number
            )),
            frame_of_reference_uid: uid_from_key(&format!(
                "vertebra-phantom/v1/frame-of-reference/{study_key}"
            )),
        }
    }

    /// SOP Instance UID of slice `k` (0-based).
    pub fn sop_instance_uid(&self, k: usize) -> String {
        uid_from_key(&format!(
            "vertebra-phantom/v1/instance/seed={}/domain={}/series={}/slice={k}",
            self.seed, self.domain, self.series_number
        ))
    }

    fn validate(&self) -> Result<()> {
        let lengths = [
            ("series_description", &self.series_description, 64),
            ("study_description", &self.study_description, 64),
            ("domain", &self.domain, 64),
            ("convolution_kernel", &self.convolution_kernel, 16),
        ];
        for (name, value, max) in lengths {
            if value.len() > max || !value.chars().all(|c| c.is_ascii() && !c.is_ascii_control()) {
                return Err(Error::InvalidArgument(format!(
                    "{name} {value:?} must be printable ASCII without backslash, at most {max} characters"
                )));
            }
            if value.contains('\\') {
                return Err(Error::InvalidArgument(format!(
                    "{name} {value:?} contains a backslash (the DICOM value separator)"
                )));
            }
        }
        for (name, v) in [
            ("kvp", self.kvp),
            ("magnetic_field_strength_t", self.magnetic_field_strength_t),
            ("slice_thickness_mm", self.slice_thickness_mm.unwrap_or(1.0)),
        ] {
            if !v.is_finite() || v <= 0.0 {
                return Err(Error::InvalidArgument(format!(
                    "{name} is {v}; it must be a finite positive number"
                )));
            }
        }
        Ok(())
    }
}

/// The UIDs shared by every file of a series.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeriesUids {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Frame of Reference UID (shared by everything derived from the same phantom study).
    pub frame_of_reference_uid: String,
}

/// What [`write_ct_series`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct WrittenSeries {
    /// The files, in slice order (Instance Number 1, 2, ...).
    pub files: Vec<PathBuf>,
    /// Study, series and frame-of-reference UIDs.
    pub uids: SeriesUids,
    /// SOP Instance UID of each file, same order as `files`.
    pub sop_instance_uids: Vec<String>,
    /// SOP Class UID of every file (CT or MR Image Storage).
    pub sop_class_uid: String,
    /// Number of voxels whose value fell outside the representable range and was clipped.
    pub clipped_voxels: usize,
}

/// Writes `volume` as one DICOM file per z-slice into `out_dir` (created if missing).
///
/// `meta.modality` selects CT Image Storage (values are HU) or MR Image Storage (values are
/// arbitrary intensities); see the module documentation for the encoding, naming and UIDs.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a volume larger than 65535 rows or columns, a non-finite
/// voxel, or unusable metadata; [`Error::Io`] when the directory cannot be created, holds
/// foreign files, or a file cannot be written; [`Error::Dicom`] when encoding fails.
pub fn write_ct_series(
    volume: &Volume<f32>,
    meta: &SeriesMeta,
    out_dir: &Path,
) -> Result<WrittenSeries> {
    meta.validate()?;
    let [nx, ny, nz] = volume.dims();
    let (Ok(columns), Ok(rows)) = (u16::try_from(nx), u16::try_from(ny)) else {
        return Err(Error::InvalidArgument(format!(
            "a slice of {nx} x {ny} voxels exceeds the DICOM limit of 65535 rows/columns"
        )));
    };
    if nz > 99_999 {
        return Err(Error::InvalidArgument(format!(
            "{nz} slices exceed the 99999 this writer's file naming supports"
        )));
    }
    if let Some(i) = volume.data().iter().position(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "voxel {:?} is {}; refusing to write a non-finite value into DICOM",
            volume.coords(i),
            volume.data()[i]
        )));
    }
    let geometry = volume.geometry();
    geometry.validate()?;
    prepare_output_dir(out_dir, nz)?;

    let uids = meta.uids();
    let sop_class_uid = match meta.modality {
        Modality::Ct => uids::CT_IMAGE_STORAGE,
        Modality::MrT1Like | Modality::MrT2Like => uids::MR_IMAGE_STORAGE,
    };
    let window = match meta.modality {
        Modality::Ct => (400.0, 1800.0, "BONE"),
        Modality::MrT1Like | Modality::MrT2Like => {
            let (lo, hi) = volume
                .data()
                .iter()
                .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &v| {
                    (lo.min(v), hi.max(v))
                });
            let (lo, hi) = (
                f64::from(lo).clamp(0.0, 65535.0),
                f64::from(hi).clamp(0.0, 65535.0),
            );
            (f64::midpoint(lo, hi), (hi - lo).max(1.0), "FULL RANGE")
        }
    };
    let common = SeriesCommon {
        meta,
        uids: &uids,
        sop_class_uid,
        geometry,
        rows,
        columns,
        window,
    };
    let slice_len = nx * ny;
    let results: Vec<Result<(PathBuf, String, usize)>> = (0..nz)
        .into_par_iter()
        .map(|k| {
            let values = &volume.data()[k * slice_len..(k + 1) * slice_len];
            let (pixels, clipped) = encode_pixels(values, meta.modality);
            let sop_instance_uid = meta.sop_instance_uid(k);
            let obj = common.slice_object(k, &sop_instance_uid, pixels);
            let path = out_dir.join(slice_file_name(k));
            write_atomically(obj, &path)?;
            Ok((path, sop_instance_uid, clipped))
        })
        .collect();
    let mut files = Vec::with_capacity(nz);
    let mut sop_instance_uids = Vec::with_capacity(nz);
    let mut clipped_voxels = 0;
    for r in results {
        let (path, uid, clipped) = r?;
        files.push(path);
        sop_instance_uids.push(uid);
        clipped_voxels += clipped;
    }
    Ok(WrittenSeries {
        files,
        uids,
        sop_instance_uids,
        sop_class_uid: sop_class_uid.to_owned(),
        clipped_voxels,
    })
}

/// File name of slice `k` (0-based).
fn slice_file_name(k: usize) -> String {
    format!("IMG{:05}.dcm", k + 1)
}

/// Parses a file name of this writer back to the 0-based slice index.
fn parse_slice_file_name(name: &str) -> Option<usize> {
    let digits = name.strip_prefix("IMG")?.strip_suffix(".dcm")?;
    if digits.len() != 5 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse::<usize>().ok()?.checked_sub(1)
}

/// Prefix of in-flight temporary files.
const TEMP_PREFIX: &str = ".IMG-partial-";

/// Creates `dir`, or checks that it holds nothing but a previous run's slices (and leftover
/// temporaries), removing slices with index ≥ `nz` so the directory ends up one series.
fn prepare_output_dir(dir: &Path, nz: usize) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let mut stale = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        match parse_slice_file_name(&name) {
            Some(k) if k >= nz => stale.push(entry.path()),
            Some(_) => {}
            None if name.starts_with(TEMP_PREFIX) => stale.push(entry.path()),
            None => {
                return Err(Error::io(
                    entry.path(),
                    std::io::Error::new(
                        std::io::ErrorKind::AlreadyExists,
                        "the DICOM output directory holds a file this writer did not write; \
                         refusing to mix it into the series (use an empty directory)",
                    ),
                ));
            }
        }
    }
    for path in stale {
        fs::remove_file(&path).map_err(|e| Error::io(&path, e))?;
    }
    Ok(())
}

/// Rounds and clips voxel values to the stored pixel representation; returns the pixel value
/// and the number of clipped voxels.
fn encode_pixels(values: &[f32], modality: Modality) -> (PrimitiveValue, usize) {
    let mut clipped = 0;
    match modality {
        Modality::Ct => {
            let px: Vec<i16> = values
                .iter()
                .map(|&hu| {
                    let s = (f64::from(hu) - CT_RESCALE_INTERCEPT).round();
                    if s < f64::from(i16::MIN) || s > f64::from(i16::MAX) {
                        clipped += 1;
                    }
                    s.clamp(f64::from(i16::MIN), f64::from(i16::MAX)) as i16
                })
                .collect();
            (PrimitiveValue::I16(C::from_vec(px)), clipped)
        }
        Modality::MrT1Like | Modality::MrT2Like => {
            let px: Vec<u16> = values
                .iter()
                .map(|&v| {
                    let s = f64::from(v).round();
                    if !(0.0..=65535.0).contains(&s) {
                        clipped += 1;
                    }
                    s.clamp(0.0, 65535.0) as u16
                })
                .collect();
            (PrimitiveValue::U16(C::from_vec(px)), clipped)
        }
    }
}

/// Writes `obj` to a temporary file next to `path`, flushes it to disk and renames it into
/// place.
fn write_atomically(obj: InMemDicomObject, path: &Path) -> Result<()> {
    let file_obj = obj
        .with_meta(
            FileMetaTableBuilder::new()
                .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                .implementation_class_uid(implementation_class_uid())
                .implementation_version_name(IMPLEMENTATION_VERSION_NAME),
        )
        .map_err(|e| Error::Dicom(format!("{}: file meta information: {e}", path.display())))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!("{TEMP_PREFIX}{}-{name}", std::process::id()));
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let mut buf = std::io::BufWriter::with_capacity(1 << 20, &mut file);
        file_obj
            .write_all(&mut buf)
            .map_err(|e| Error::Dicom(format!("{}: {e}", path.display())))?;
        buf.flush().map_err(|e| Error::io(&tmp, e))?;
        drop(buf);
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
    })();
    if result.is_err() {
        // Best effort: the original error is what the caller needs to see.
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Attributes shared by all slices of a series.
struct SeriesCommon<'a> {
    meta: &'a SeriesMeta,
    uids: &'a SeriesUids,
    sop_class_uid: &'static str,
    geometry: &'a Geometry,
    rows: u16,
    columns: u16,
    /// Window centre, width and explanation.
    window: (f64, f64, &'static str),
}

impl SeriesCommon<'_> {
    /// The complete data set of slice `k`.
    fn slice_object(
        &self,
        k: usize,
        sop_instance_uid: &str,
        pixels: PrimitiveValue,
    ) -> InMemDicomObject {
        let meta = self.meta;
        let g = self.geometry;
        let ipp = g.voxel_to_world([0.0, 0.0, k as f64]);
        let row_dir = g.direction[0];
        let col_dir = g.direction[1];
        let normal = cross(row_dir, col_dir);
        let thickness = meta.slice_thickness_mm.unwrap_or(g.spacing[2]);
        let instance = (k + 1).to_string();
        let is_ct = meta.modality == Modality::Ct;

        let mut obj = InMemDicomObject::new_empty();
        let mut put = |tag: Tag, vr: VR, value: PrimitiveValue| {
            obj.put(DataElement::new(tag, vr, value));
        };
        let image_type = if is_ct {
            strs(&["ORIGINAL", "PRIMARY", "AXIAL"])
        } else {
            strs(&["ORIGINAL", "PRIMARY", "OTHER"])
        };

        // SOP Common.
        put(tags::SOP_CLASS_UID, VR::UI, self.sop_class_uid.into());
        put(tags::SOP_INSTANCE_UID, VR::UI, sop_instance_uid.into());
        put(tags::INSTANCE_CREATION_DATE, VR::DA, STUDY_DATE.into());
        put(tags::INSTANCE_CREATION_TIME, VR::TM, STUDY_TIME.into());
        // Patient.
        put(tags::PATIENT_NAME, VR::PN, meta.patient_name().into());
        put(tags::PATIENT_ID, VR::LO, meta.patient_id().into());
        put(tags::PATIENT_BIRTH_DATE, VR::DA, PrimitiveValue::Empty);
        put(tags::PATIENT_SEX, VR::CS, "O".into());
        put(
            tags::PATIENT_COMMENTS,
            VR::LT,
            "Synthetic phantom generated by vertebra-phantom; not a real patient.".into(),
        );
        // General Study.
        put(
            tags::STUDY_INSTANCE_UID,
            VR::UI,
            self.uids.study_instance_uid.as_str().into(),
        );
        put(tags::STUDY_DATE, VR::DA, STUDY_DATE.into());
        put(tags::STUDY_TIME, VR::TM, STUDY_TIME.into());
        put(
            tags::REFERRING_PHYSICIAN_NAME,
            VR::PN,
            PrimitiveValue::Empty,
        );
        put(tags::STUDY_ID, VR::SH, "PHANTOM".into());
        put(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::Empty);
        put(
            tags::STUDY_DESCRIPTION,
            VR::LO,
            meta.study_description.as_str().into(),
        );
        // General Series.
        put(
            tags::MODALITY,
            VR::CS,
            if is_ct { "CT" } else { "MR" }.into(),
        );
        put(
            tags::SERIES_INSTANCE_UID,
            VR::UI,
            self.uids.series_instance_uid.as_str().into(),
        );
        put(
            tags::SERIES_NUMBER,
            VR::IS,
            meta.series_number.to_string().into(),
        );
        put(tags::SERIES_DATE, VR::DA, STUDY_DATE.into());
        put(tags::SERIES_TIME, VR::TM, STUDY_TIME.into());
        put(
            tags::SERIES_DESCRIPTION,
            VR::LO,
            meta.series_description.as_str().into(),
        );
        put(tags::BODY_PART_EXAMINED, VR::CS, "SPINE".into());
        put(tags::PATIENT_POSITION, VR::CS, "HFS".into());
        // Frame of Reference.
        put(
            tags::FRAME_OF_REFERENCE_UID,
            VR::UI,
            self.uids.frame_of_reference_uid.as_str().into(),
        );
        put(
            tags::POSITION_REFERENCE_INDICATOR,
            VR::LO,
            PrimitiveValue::Empty,
        );
        // General Equipment.
        put(tags::MANUFACTURER, VR::LO, MANUFACTURER.into());
        put(
            tags::MANUFACTURER_MODEL_NAME,
            VR::LO,
            meta.domain.as_str().into(),
        );
        put(
            tags::SOFTWARE_VERSIONS,
            VR::LO,
            concat!("vertebra-core ", env!("CARGO_PKG_VERSION")).into(),
        );
        // General Image.
        put(tags::INSTANCE_NUMBER, VR::IS, instance.as_str().into());
        put(tags::CONTENT_DATE, VR::DA, STUDY_DATE.into());
        put(tags::CONTENT_TIME, VR::TM, STUDY_TIME.into());
        put(tags::ACQUISITION_NUMBER, VR::IS, "1".into());
        put(tags::IMAGE_TYPE, VR::CS, image_type);
        put(tags::BURNED_IN_ANNOTATION, VR::CS, "NO".into());
        // Image Plane.
        put(
            tags::PIXEL_SPACING,
            VR::DS,
            ds_multi(&[g.spacing[1], g.spacing[0]]),
        );
        put(
            tags::IMAGE_ORIENTATION_PATIENT,
            VR::DS,
            ds_multi(&[
                row_dir[0], row_dir[1], row_dir[2], col_dir[0], col_dir[1], col_dir[2],
            ]),
        );
        put(tags::IMAGE_POSITION_PATIENT, VR::DS, ds_multi(&ipp));
        put(tags::SLICE_THICKNESS, VR::DS, ds(thickness).into());
        put(
            tags::SPACING_BETWEEN_SLICES,
            VR::DS,
            ds(g.spacing[2]).into(),
        );
        put(tags::SLICE_LOCATION, VR::DS, ds(dot(ipp, normal)).into());
        // Image Pixel.
        put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16));
        put(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2".into(),
        );
        put(tags::ROWS, VR::US, PrimitiveValue::from(self.rows));
        put(tags::COLUMNS, VR::US, PrimitiveValue::from(self.columns));
        put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16));
        put(tags::BITS_STORED, VR::US, PrimitiveValue::from(16_u16));
        put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15_u16));
        put(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(u16::from(is_ct)),
        );
        // VOI LUT.
        let (centre, width, explanation) = self.window;
        put(tags::WINDOW_CENTER, VR::DS, ds(centre).into());
        put(tags::WINDOW_WIDTH, VR::DS, ds(width).into());
        put(
            tags::WINDOW_CENTER_WIDTH_EXPLANATION,
            VR::LO,
            explanation.into(),
        );
        if is_ct {
            // CT Image.
            put(
                tags::RESCALE_INTERCEPT,
                VR::DS,
                ds(CT_RESCALE_INTERCEPT).into(),
            );
            put(tags::RESCALE_SLOPE, VR::DS, "1".into());
            put(tags::RESCALE_TYPE, VR::LO, "HU".into());
            put(tags::KVP, VR::DS, ds(meta.kvp).into());
            put(
                tags::CONVOLUTION_KERNEL,
                VR::SH,
                meta.convolution_kernel.as_str().into(),
            );
            put(
                tags::RECONSTRUCTION_DIAMETER,
                VR::DS,
                ds(g.spacing[0] * f64::from(self.columns)).into(),
            );
        } else {
            // MR Image: a plain 2-D spin-echo description; the contrast is synthetic.
            let (tr, te) = if meta.modality == Modality::MrT1Like {
                (500.0, 15.0)
            } else {
                (4000.0, 100.0)
            };
            put(tags::SCANNING_SEQUENCE, VR::CS, "SE".into());
            put(tags::SEQUENCE_VARIANT, VR::CS, "NONE".into());
            put(tags::SCAN_OPTIONS, VR::CS, PrimitiveValue::Empty);
            put(tags::MR_ACQUISITION_TYPE, VR::CS, "2D".into());
            put(tags::REPETITION_TIME, VR::DS, ds(tr).into());
            put(tags::ECHO_TIME, VR::DS, ds(te).into());
            put(tags::ECHO_TRAIN_LENGTH, VR::IS, "1".into());
            put(
                tags::MAGNETIC_FIELD_STRENGTH,
                VR::DS,
                ds(meta.magnetic_field_strength_t).into(),
            );
            put(tags::IMAGED_NUCLEUS, VR::SH, "1H".into());
        }
        put(tags::PIXEL_DATA, VR::OW, pixels);
        obj
    }
}

/// Multi-valued string value.
fn strs(values: &[&str]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|s| (*s).to_owned()).collect())
}

/// Multi-valued decimal string value.
fn ds_multi(values: &[f64]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|&v| ds(v)).collect())
}

/// Formats a finite number as a DICOM Decimal String: at most 16 characters, with as many
/// significant digits as fit (≈ 1e-10 mm for patient coordinates below 10 m).
pub fn ds(v: f64) -> String {
    debug_assert!(v.is_finite());
    if v.abs() < 1e-13 {
        return "0".to_owned();
    }
    for precision in (0..=15).rev() {
        let s = format!("{v:.precision$}");
        let s = if s.contains('.') {
            s.trim_end_matches('0').trim_end_matches('.').to_owned()
        } else {
            s
        };
        if s.len() <= 16 {
            return if s == "-0" { "0".to_owned() } else { s };
        }
    }
    // Magnitudes beyond 1e16 (never geometry): exponent notation.
    for precision in (0..=10).rev() {
        let s = format!("{v:.precision$e}");
        if s.len() <= 16 {
            return s;
        }
    }
    format!("{v:.0e}")
}

/// Cross product.
fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// `2.25.<UUIDv8>` UID from a key: FNV-1a-128 of the key, with the RFC 9562 version (8) and
/// variant (0b10) bits set. At most 44 characters, below the 64 allowed.
pub fn uid_from_key(key: &str) -> String {
    const FNV_OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const FNV_PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut h = FNV_OFFSET;
    for b in key.bytes() {
        h ^= u128::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    // FNV's low bits mix poorly for short keys; a final xor-shift-multiply spreads every
    // input bit over the whole word before bits are overwritten.
    h ^= h >> 67;
    h = h.wrapping_mul(FNV_PRIME);
    h ^= h >> 59;
    let version_mask: u128 = 0xf << 76;
    let variant_mask: u128 = 0b11 << 62;
    h = (h & !version_mask) | (0x8 << 76);
    h = (h & !variant_mask) | (0b10 << 62);
    format!("2.25.{h}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ds_fits_sixteen_characters_and_keeps_precision() {
        for v in [
            0.0,
            -0.0,
            1.0,
            -1024.0,
            std::f64::consts::FRAC_1_SQRT_2,
            -std::f64::consts::FRAC_1_SQRT_2,
            -123.456_789_012_345_67,
            98_765.432_101_234,
            1e-20,
            -3.0e-9,
            1.5e20,
        ] {
            let s = ds(v);
            assert!(s.len() <= 16, "{s}");
            let back: f64 = s.parse().unwrap();
            let tol = if v.abs() < 1e-13 {
                1e-13
            } else {
                v.abs() * 1e-11 + 1e-12
            };
            assert!((back - v).abs() <= tol.max(1e-10), "{v} -> {s}");
        }
        assert_eq!(ds(-0.0), "0");
        assert_eq!(ds(2.5), "2.5");
        assert_eq!(ds(-1024.0), "-1024");
    }

    #[test]
    fn uids_are_valid_deterministic_and_distinct() {
        let a = SeriesMeta::new(7, "siemens-sharp", Modality::Ct);
        let b = SeriesMeta::new(8, "siemens-sharp", Modality::Ct);
        let c = SeriesMeta::new(7, "ge-soft", Modality::Ct);
        assert_eq!(a.uids(), a.clone().uids());
        let mut all = Vec::new();
        for m in [&a, &b, &c] {
            let u = m.uids();
            all.extend([
                u.study_instance_uid,
                u.series_instance_uid,
                u.frame_of_reference_uid,
            ]);
            all.extend((0..50).map(|k| m.sop_instance_uid(k)));
        }
        all.push(implementation_class_uid());
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), n, "UID collision");
        for uid in &all {
            assert!(uid.len() <= 64, "{uid}");
            let rest = uid.strip_prefix("2.25.").expect("UUID root");
            assert!(rest.bytes().all(|b| b.is_ascii_digit()), "{uid}");
            assert!(!rest.starts_with('0'), "leading zero in {uid}");
            let v: u128 = rest.parse().unwrap();
            assert_eq!((v >> 76) & 0xf, 8, "UUID version");
            assert_eq!((v >> 62) & 0b11, 0b10, "UUID variant");
        }
    }

    #[test]
    fn preset_metadata_follows_the_preset() {
        for preset in crate::phantom::domain::presets() {
            let meta = SeriesMeta::from_preset(3, &preset);
            assert_eq!(meta.modality, preset.modality);
            assert_eq!(meta.slice_thickness_mm, Some(preset.slice_thickness_mm));
            assert_eq!(meta.domain, preset.name);
            meta.validate().unwrap();
        }
    }

    #[test]
    fn pixel_encoding_rounds_and_counts_clipping() {
        let (px, clipped) =
            encode_pixels(&[-1024.0, 0.4, 1000.6, -40_000.0, 40_000.0], Modality::Ct);
        assert_eq!(clipped, 2);
        assert_eq!(
            px,
            PrimitiveValue::I16(C::from_vec(vec![0, 1024, 2025, i16::MIN, i16::MAX]))
        );
        let (px, clipped) = encode_pixels(&[-3.0, 12.5, 70_000.0], Modality::MrT2Like);
        assert_eq!(clipped, 2);
        assert_eq!(px, PrimitiveValue::U16(C::from_vec(vec![0, 13, 65535])));
    }

    #[test]
    fn slice_file_names_round_trip() {
        for k in [0, 1, 41, 99_998] {
            assert_eq!(parse_slice_file_name(&slice_file_name(k)), Some(k));
        }
        assert_eq!(parse_slice_file_name("IMG00000.dcm"), None);
        assert_eq!(parse_slice_file_name("IMG1.dcm"), None);
        assert_eq!(parse_slice_file_name("notes.txt"), None);
    }
}
