//! NIfTI-1 reading and writing: single-file `.nii` and `.nii.gz`, 3-D volumes.
//!
//! # What is read
//!
//! - Plain or gzip-compressed files; compression is detected from the first two bytes
//!   (1f 8b), not the extension. Multi-member gzip streams are read whole and their CRC is
//!   checked.
//! - Either byte order, detected from `sizeof_hdr` (348). NIfTI-2 and two-file (`ni1`,
//!   .hdr/.img) headers are refused with an error saying so.
//! - Datatypes uint8, int8, int16, uint16, int32, uint32, float32, float64. Others (complex,
//!   RGB, 64-bit integers, float128) are refused.
//! - 3-D images: `dim[0]` from 1 to 7, where every axis past the third has size 1 (so a 4-D
//!   file holding one volume is accepted, a time series is not). Fewer than three axes read as
//!   a volume with trailing size 1.
//! - Extensions between byte 352 and `vox_offset` are skipped.
//!
//! # Scaling
//!
//! `scl_slope` / `scl_inter` are applied (`slope * stored + inter`) by [`read_f32`] and
//! [`read_labels`]. Per the spec a slope of 0 means "no scaling"; like nibabel we also treat a
//! non-finite slope that way, and skip the identity (1, 0) so stored values stay bit-exact. A
//! valid slope with a non-finite intercept is an error.
//!
//! # Geometry: qform, sform, pixdim and RAS versus LPS
//!
//! A NIfTI header can place voxels in the world three ways. We choose between them exactly as
//! nibabel's `Nifti1Header.get_best_affine` does, so our geometry is nibabel's `img.affine`:
//!
//! 1. **sform** if `sform_code > 0`: a general 3×4 matrix (`srow_x/y/z`).
//! 2. else **qform** if `qform_code > 0`: a rotation stored as a unit quaternion (b, c, d; the
//!    real part a = √(1 − b² − c² − d²) is implied and non-negative), voxel sizes
//!    `pixdim[1..=3]`, an offset, and **qfac** = `pixdim[0]`. A rotation cannot mirror, so a
//!    left-handed voxel grid (common: radiological storage order) sets qfac = −1, which negates
//!    the third voxel axis. qfac other than ±1 is ambiguous between readers (nibabel treats it
//!    as 1, nifti_clib by its sign); we accept 0 as 1 and refuse the rest.
//! 3. else the **legacy** ANALYZE affine from `pixdim` alone: nibabel's `get_base_affine`
//!    (x flipped, origin at the grid centre) — not the spec's "method 1".
//!
//! A transform whose code is set must be valid even if the other one wins (a qform with a
//! non-unit quaternion or bad qfac is refused even next to a good sform): a corrupt field is a
//! corrupt file.
//!
//! The NIfTI world is **RAS+** (+x towards the patient's Right, +y Anterior, +z Superior);
//! [`Volume`]s live in DICOM's **LPS+** (+x Left, +y Posterior, +z Superior). The two differ
//! by negating x and y, done in exactly one place, `transform::flip_ras_lps`.
//! [`NiftiHeader::affine_ras`] keeps the file's RAS affine for callers that need it.
//!
//! An sform may be any affine, including shear. A [`crate::Geometry`] (spacing + orthonormal
//! directions) cannot represent shear, so a sform whose voxel axes are not perpendicular to
//! within [`SHEAR_TOLERANCE`] is **an error**, not silently straightened. With an
//! sform, spacing is the length of its columns; `pixdim` then only feeds the qform.
//!
//! # What is written
//!
//! [`write_f32`] and [`write_labels`] write little-endian NIfTI-1 with magic `n+1`,
//! `vox_offset` 352 (no extensions), `xyzt_units` = millimetres, `scl_slope` 1 / `scl_inter`
//! 0, and the volume's geometry as **both** sform (exact up to float32) and qform (its rigid
//! part, with qfac = −1 for left-handed grids), both with [`WriteOptions::xform_code`]
//! (default [`XformCode::ScannerAnat`]: our geometry comes from the DICOM series, i.e. scanner
//! coordinates; use [`XformCode::AlignedAnat`] for registered or synthetic data). Files ending
//! `.nii.gz` are gzip-compressed (level 1: fast), `.nii` plain; other names are refused. Writes
//! are atomic (temporary file in the same directory, fsync, rename).
//!
//! NIfTI stores transforms as float32, so a geometry survives a round trip to ~1e-7 relative;
//! a geometry read from a file survives writing and reading again bit for bit.
//!
//! # Hostile input
//!
//! No header can make the reader panic or allocate more than the file can back: dims are
//! capped at [`MAX_VOXELS`] voxels, the data size is checked against the file size (or, for
//! gzip, against the most a deflate stream of that size can expand to, ~1032:1) before any
//! allocation, and compressed data is buffered as it arrives rather than preallocated.

mod file;
mod header;
mod samples;
mod transform;

pub use header::{AffineSource, Datatype, Endian, MAX_VOXELS, NiftiHeader, XformCode};
pub use transform::{Affine, SHEAR_TOLERANCE};

use crate::{Error, Result, Volume};
use header::HeaderSpec;
use samples::sealed::Sample;
use std::path::Path;

/// Integer types a label map can be read as and written from: `u8`, `u16` and `i16`
/// (sealed; the set matches the datatypes the writer stores).
pub trait LabelValue: Sample {}
impl LabelValue for u8 {}
impl LabelValue for u16 {}
impl LabelValue for i16 {}

/// `intent_code` NIFTI_INTENT_LABEL: values are indices into a label table.
const INTENT_LABEL: i16 = 1002;

/// Longest description that fits `descrip` with its terminating NUL.
pub const MAX_DESCRIPTION_BYTES: usize = 79;

/// Header fields the writer takes from the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOptions {
    /// Written to `descrip`; at most [`MAX_DESCRIPTION_BYTES`] bytes of UTF-8.
    pub description: String,
    /// Written to both `qform_code` and `sform_code`; must not be [`XformCode::Unknown`]
    /// (that would tell readers to ignore the geometry).
    pub xform_code: XformCode,
}

impl Default for WriteOptions {
    fn default() -> Self {
        WriteOptions {
            description: concat!("vertebra-core ", env!("CARGO_PKG_VERSION")).to_owned(),
            xform_code: XformCode::ScannerAnat,
        }
    }
}

/// Reads and validates the header of a `.nii` / `.nii.gz` file without reading the image.
/// For plain files this includes the check that the file is long enough for the data.
///
/// # Errors
///
/// [`Error::Io`] if the file cannot be read; [`Error::Nifti`] for anything the module docs
/// list as refused (bad magic, unsupported datatype, 4-D data, unusable transforms...).
pub fn read_header(path: impl AsRef<Path>) -> Result<NiftiHeader> {
    file::read_header(path.as_ref())
}

/// Reads an image as float32, with `scl_slope` / `scl_inter` applied.
///
/// Every supported datatype converts exactly except int32/uint32/float64 values that float32
/// cannot hold exactly (rounded to nearest); a finite value that overflows float32 is an
/// error. NaN and infinities stored as floats are passed through.
///
/// # Errors
///
/// As [`read_header`], plus [`Error::Nifti`] for truncated data, corrupt gzip and float32
/// overflow.
pub fn read_f32(path: impl AsRef<Path>) -> Result<Volume<f32>> {
    let path = path.as_ref();
    let (header, raw) = file::read_raw(path)?;
    let scaling = header.scaling();
    let data = samples::decode(&raw, header.datatype, header.endian, |i, v| {
        let y = scale(v, scaling);
        let out = y as f32;
        if y.is_finite() && !out.is_finite() {
            return Err(format!(
                "voxel {i} has value {y}, beyond the range of float32"
            ));
        }
        Ok(out)
    })
    .map_err(|m| file::nifti_error(path, m))?;
    into_volume(path, &header, data)
}

/// Reads a label map as `L` (`u8`, `u16` or `i16`), with scaling applied.
///
/// Every value must be an integer in `L`'s range: a float file holding 2.5 or NaN, or a uint16
/// file holding 300 read as `u8`, is an error naming the first offending voxel, never a
/// silently rounded or wrapped label.
///
/// # Errors
///
/// As [`read_f32`], plus [`Error::Nifti`] for non-integral or out-of-range values.
pub fn read_labels<L: LabelValue>(path: impl AsRef<Path>) -> Result<Volume<L>> {
    let path = path.as_ref();
    let (header, raw) = file::read_raw(path)?;
    let scaling = header.scaling();
    let data = samples::decode(&raw, header.datatype, header.endian, |i, v| {
        let y = scale(v, scaling);
        if !y.is_finite() || y.fract() != 0.0 {
            return Err(format!(
                "voxel {i} has value {y}, which is not an integer label"
            ));
        }
        if y < L::MIN || y > L::MAX {
            return Err(format!(
                "voxel {i} has label {y}, outside the range {}..={} of the requested type",
                L::MIN,
                L::MAX
            ));
        }
        Ok(L::from_integral(y))
    })
    .map_err(|m| file::nifti_error(path, m))?;
    into_volume(path, &header, data)
}

/// Writes a float32 image (datatype float32). See the module docs for the header written.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for a name not ending in `.nii`/`.nii.gz`, an axis longer than
/// 32767, a description too long or [`XformCode::Unknown`]; [`Error::Geometry`] for an
/// invalid geometry; [`Error::Io`] if writing fails (the target is then left untouched).
pub fn write_f32(
    path: impl AsRef<Path>,
    volume: &Volume<f32>,
    options: &WriteOptions,
) -> Result<()> {
    write(path.as_ref(), volume, options, 0)
}

/// Writes a label map in its own integer type (uint8, uint16 or int16), with `intent_code`
/// NIFTI_INTENT_LABEL.
///
/// # Errors
///
/// As [`write_f32`].
pub fn write_labels<L: LabelValue>(
    path: impl AsRef<Path>,
    volume: &Volume<L>,
    options: &WriteOptions,
) -> Result<()> {
    write(path.as_ref(), volume, options, INTENT_LABEL)
}

/// `slope * v + inter`, or `v` unscaled.
fn scale(v: f64, scaling: Option<(f64, f64)>) -> f64 {
    match scaling {
        Some((slope, inter)) => v * slope + inter,
        None => v,
    }
}

/// Wraps decoded values with the header's geometry.
fn into_volume<T>(path: &Path, header: &NiftiHeader, data: Vec<T>) -> Result<Volume<T>> {
    let geometry = header.geometry().map_err(|e| file::nifti_error(path, e))?;
    Volume::from_vec(header.dims, data, geometry)
}

/// Validates the request, encodes the header and streams the data out atomically.
fn write<T: Sample>(
    path: &Path,
    volume: &Volume<T>,
    options: &WriteOptions,
    intent_code: i16,
) -> Result<()> {
    let gzip = file::gzip_from_extension(path)?;
    if options.xform_code == XformCode::Unknown {
        return Err(Error::InvalidArgument(
            "xform_code must not be Unknown: readers would ignore the geometry".to_owned(),
        ));
    }
    if options.description.len() > MAX_DESCRIPTION_BYTES || options.description.contains('\0') {
        return Err(Error::InvalidArgument(format!(
            "description {:?} must be at most {MAX_DESCRIPTION_BYTES} bytes without NUL",
            options.description
        )));
    }
    let dims = volume.dims();
    if dims.iter().any(|&d| d > i16::MAX as usize) {
        return Err(Error::InvalidArgument(format!(
            "dimensions {dims:?} exceed NIfTI-1's limit of {} per axis",
            i16::MAX
        )));
    }
    volume.geometry().validate()?;
    let size = T::DATATYPE.size();
    let header = header::encode(&HeaderSpec {
        dims,
        datatype_code: T::DATATYPE.code(),
        bitpix: (8 * size) as i16,
        geometry: volume.geometry(),
        xform_code: options.xform_code,
        intent_code,
        description: &options.description,
    });
    file::write_atomic(path, gzip, &header, |out| {
        let mut buffer = Vec::with_capacity(1 << 16);
        for chunk in volume.data().chunks((1 << 16) / size) {
            buffer.clear();
            for &v in chunk {
                v.put_le(&mut buffer);
            }
            out.write_all(&buffer)?;
        }
        Ok(())
    })
}
