//! The 348-byte NIfTI-1 header: decoding with validation, and encoding for the writer.

use super::transform::{self, Affine, Qform};
use crate::Geometry;

/// Size of the NIfTI-1 header proper (`sizeof_hdr`).
pub(super) const HEADER_SIZE: usize = 348;

/// Offset of the image data in files we write: the header plus the 4-byte extension flag
/// (all zero: no extensions). The smallest legal `vox_offset` of a single-file NIfTI-1.
pub(super) const DATA_OFFSET: usize = 352;

/// Largest number of voxels we accept: 2³⁰ (a 1024³ grid, 4 GiB as float32; a whole-body CT
/// of 512 × 512 × 3000 is 0.79 · 2³⁰). Anything larger is a corrupt or hostile header, and
/// the cap also bounds what a header can make us allocate.
pub const MAX_VOXELS: u64 = 1 << 30;

/// Byte order of a file, detected from `sizeof_hdr` (348 in the file's own order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endian {
    /// Least significant byte first (what we write, and what nearly everything writes).
    Little,
    /// Most significant byte first.
    Big,
}

/// Voxel datatypes we read. Codes are the NIfTI-1 `datatype` field values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Datatype {
    /// `DT_UINT8` (2).
    U8,
    /// `DT_INT8` (256).
    I8,
    /// `DT_INT16` (4).
    I16,
    /// `DT_UINT16` (512).
    U16,
    /// `DT_INT32` (8).
    I32,
    /// `DT_UINT32` (768).
    U32,
    /// `DT_FLOAT32` (16).
    F32,
    /// `DT_FLOAT64` (64).
    F64,
}

impl Datatype {
    /// The NIfTI-1 `datatype` code.
    pub fn code(self) -> i16 {
        match self {
            Datatype::U8 => 2,
            Datatype::I8 => 256,
            Datatype::I16 => 4,
            Datatype::U16 => 512,
            Datatype::I32 => 8,
            Datatype::U32 => 768,
            Datatype::F32 => 16,
            Datatype::F64 => 64,
        }
    }

    /// Bytes per voxel.
    pub fn size(self) -> usize {
        match self {
            Datatype::U8 | Datatype::I8 => 1,
            Datatype::I16 | Datatype::U16 => 2,
            Datatype::I32 | Datatype::U32 | Datatype::F32 => 4,
            Datatype::F64 => 8,
        }
    }

    /// The datatype with NIfTI-1 code `code`; an error naming the type for codes we do not
    /// read (complex, RGB, 64-bit integers, float128...).
    pub(super) fn from_code(code: i16) -> Result<Self, String> {
        Ok(match code {
            2 => Datatype::U8,
            256 => Datatype::I8,
            4 => Datatype::I16,
            512 => Datatype::U16,
            8 => Datatype::I32,
            768 => Datatype::U32,
            16 => Datatype::F32,
            64 => Datatype::F64,
            other => {
                let name = match other {
                    0 => "unknown (0)",
                    1 => "binary (1)",
                    32 => "complex64 (32)",
                    128 => "rgb24 (128)",
                    1024 => "int64 (1024)",
                    1280 => "uint64 (1280)",
                    1536 => "float128 (1536)",
                    1792 => "complex128 (1792)",
                    2048 => "complex256 (2048)",
                    2304 => "rgba32 (2304)",
                    _ => return Err(format!("datatype code {other} is not a NIfTI-1 datatype")),
                };
                return Err(format!(
                    "datatype {name} is not supported; supported are uint8, int8, int16, \
                     uint16, int32, uint32, float32 and float64"
                ));
            }
        })
    }
}

/// Meaning of a qform or sform (`qform_code`, `sform_code`): which world the transform maps
/// voxels into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XformCode {
    /// 0: transform not set.
    Unknown,
    /// 1: scanner-based anatomical coordinates — what a DICOM series' own geometry gives.
    ScannerAnat,
    /// 2: coordinates aligned to another file or an anatomical truth (registration output).
    AlignedAnat,
    /// 3: Talairach space.
    Talairach,
    /// 4: MNI-152 space.
    Mni152,
    /// 5: another template space (added to the standard in 2019).
    TemplateOther,
}

impl XformCode {
    /// The NIfTI-1 code.
    pub fn code(self) -> i16 {
        match self {
            XformCode::Unknown => 0,
            XformCode::ScannerAnat => 1,
            XformCode::AlignedAnat => 2,
            XformCode::Talairach => 3,
            XformCode::Mni152 => 4,
            XformCode::TemplateOther => 5,
        }
    }

    /// The code's meaning; an error for values outside 0..=5 (a corrupt header: we would not
    /// know whether to trust the transform).
    pub(super) fn from_code(code: i16, field: &str) -> Result<Self, String> {
        Ok(match code {
            0 => XformCode::Unknown,
            1 => XformCode::ScannerAnat,
            2 => XformCode::AlignedAnat,
            3 => XformCode::Talairach,
            4 => XformCode::Mni152,
            5 => XformCode::TemplateOther,
            other => return Err(format!("{field} is {other}; valid codes are 0 to 5")),
        })
    }
}

/// Which of the header's transforms gives the voxel-to-world affine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AffineSource {
    /// The sform (`sform_code > 0`).
    Sform,
    /// The qform (`sform_code == 0`, `qform_code > 0`).
    Qform,
    /// Neither is set: nibabel's legacy pixdim-only affine (x flipped, origin at the grid
    /// centre; see the module docs).
    PixdimOnly,
}

/// What a caller may need from a NIfTI-1 header, decoded and validated.
///
/// Produced only by [`super::read_header`] (and the readers), so the invariants below hold:
/// the image is 3-D, dims multiply to at most [`MAX_VOXELS`], spacing is finite and positive,
/// and `affine_ras` describes an unsheared grid.
#[derive(Debug, Clone, PartialEq)]
pub struct NiftiHeader {
    /// Byte order of the header and data.
    pub endian: Endian,
    /// Grid size (i, j, k); `dim[1..=3]`, with axes beyond `dim[0]` counted as 1.
    pub dims: [usize; 3],
    /// The raw `dim` field, for callers that care about `dim[0]` or trailing singleton axes.
    pub dim: [i16; 8],
    /// Voxel datatype of the stored data.
    pub datatype: Datatype,
    /// The raw `pixdim` field. `pixdim[0]` is qfac (see the module docs); `pixdim[1..=3]`
    /// the voxel spacing the qform uses. With an sform the spacing of the volume comes from the
    /// sform's columns and may differ from these.
    pub pixdim: [f32; 8],
    /// Byte offset of the image data in the (decompressed) file; ≥ 352. Bytes 352 to
    /// `vox_offset` hold extensions, which we skip.
    pub vox_offset: u64,
    /// `scl_slope`: stored values are scaled by `slope * x + inter` unless the slope is 0 or
    /// not finite (then no scaling, as the spec and nibabel say).
    pub scl_slope: f32,
    /// `scl_inter`, the intercept that goes with `scl_slope`.
    pub scl_inter: f32,
    /// `xyzt_units`: spatial units in bits 0..3 (we accept only 0 = unknown and 2 = mm).
    pub xyzt_units: u8,
    /// `intent_code` (1002 = label map); informational only.
    pub intent_code: i16,
    /// `descrip`, up to the first NUL, decoded lossily as UTF-8.
    pub description: String,
    /// `qform_code`.
    pub qform_code: XformCode,
    /// `sform_code`.
    pub sform_code: XformCode,
    /// The qform affine (RAS), present when `qform_code > 0`.
    pub qform_affine_ras: Option<Affine>,
    /// The sform affine (RAS), present when `sform_code > 0`.
    pub sform_affine_ras: Option<Affine>,
    /// The voxel-to-world affine in the file's RAS+ world, chosen exactly as nibabel's
    /// `get_best_affine` does: the sform if `sform_code > 0`, else the qform if
    /// `qform_code > 0`, else the legacy pixdim-only affine. `img.affine` in nibabel.
    pub affine_ras: Affine,
    /// Which transform `affine_ras` came from.
    pub affine_source: AffineSource,
}

impl NiftiHeader {
    /// The (slope, intercept) to apply to stored values, or `None` when the header says no
    /// scaling (`scl_slope` 0 or not finite) or the scaling is the identity (slope 1,
    /// intercept 0; skipping it keeps values such as -0.0 bit-exact, as nibabel does).
    pub fn scaling(&self) -> Option<(f64, f64)> {
        let off = self.scl_slope == 0.0 || !self.scl_slope.is_finite();
        let identity = self.scl_slope == 1.0 && self.scl_inter == 0.0;
        (!off && !identity).then(|| (f64::from(self.scl_slope), f64::from(self.scl_inter)))
    }

    /// Number of voxels.
    pub fn voxel_count(&self) -> usize {
        self.dims.iter().product()
    }

    /// Bytes of image data the header promises (at most 8 · [`MAX_VOXELS`]).
    pub fn data_bytes(&self) -> u64 {
        self.voxel_count() as u64 * self.datatype.size() as u64
    }

    /// The LPS geometry of `affine_ras`: what [`super::read_f32`] attaches to the volume.
    ///
    /// # Errors
    ///
    /// Never for a header returned by this module (it was checked on reading).
    pub fn geometry(&self) -> crate::Result<Geometry> {
        transform::geometry_from_ras(&self.affine_ras)
    }

    /// Decodes and validates a header. Errors are messages for [`crate::Error::Nifti`].
    pub(super) fn parse(bytes: &[u8; HEADER_SIZE]) -> Result<Self, String> {
        let endian = match (
            i32::from_le_bytes(take(bytes, 0)),
            i32::from_be_bytes(take(bytes, 0)),
        ) {
            (348, _) => Endian::Little,
            (_, 348) => Endian::Big,
            (540, _) | (_, 540) => {
                return Err(
                    "this is a NIfTI-2 file (sizeof_hdr 540); only NIfTI-1 is supported".to_owned(),
                );
            }
            (le, _) => {
                return Err(format!(
                    "sizeof_hdr is {le} (little-endian reading); a NIfTI-1 header has 348"
                ));
            }
        };
        let r = Reader { bytes, endian };
        match &bytes[344..348] {
            b"n+1\0" => {}
            b"ni1\0" => {
                return Err(
                    "this is a two-file NIfTI-1 header (magic \"ni1\", .hdr/.img pair); only \
                     single-file .nii / .nii.gz is supported"
                        .to_owned(),
                );
            }
            other => {
                return Err(format!(
                    "magic is {:?}, expected \"n+1\\0\" (single-file NIfTI-1)",
                    other.escape_ascii().to_string()
                ));
            }
        }
        let dim: [i16; 8] = std::array::from_fn(|i| r.i16(40 + 2 * i));
        let dims = validate_dims(&dim)?;
        let datatype = Datatype::from_code(r.i16(70))?;
        let bitpix = r.i16(72);
        if usize::try_from(bitpix).ok() != Some(8 * datatype.size()) {
            return Err(format!(
                "bitpix is {bitpix} but datatype {datatype:?} has {} bits",
                8 * datatype.size()
            ));
        }
        let pixdim: [f32; 8] = std::array::from_fn(|i| r.f32(76 + 4 * i));
        for i in 1..=3 {
            let p = pixdim[i];
            if !p.is_finite() || p <= 0.0 {
                return Err(format!(
                    "pixdim[{i}] (voxel spacing) is {p}; it must be a finite positive number"
                ));
            }
        }
        let vox_offset = validate_vox_offset(r.f32(108))?;
        let scl_slope = r.f32(112);
        let scl_inter = r.f32(116);
        if scl_slope != 0.0 && scl_slope.is_finite() && !scl_inter.is_finite() {
            return Err(format!(
                "scl_slope is {scl_slope} but scl_inter is {scl_inter}; the intercept must be \
                 finite when scaling is on"
            ));
        }
        let xyzt_units = bytes[123];
        match xyzt_units & 0x07 {
            0 | 2 => {}
            1 => return Err("spatial units are metres; only millimetres are supported".into()),
            3 => return Err("spatial units are microns; only millimetres are supported".into()),
            other => return Err(format!("spatial unit code {other} is not valid")),
        }
        let description = c_string(&bytes[148..228]);
        let qform_code = XformCode::from_code(r.i16(252), "qform_code")?;
        let sform_code = XformCode::from_code(r.i16(254), "sform_code")?;
        let quatern = [r.f32(256), r.f32(260), r.f32(264)];
        let qoffset = [r.f32(268), r.f32(272), r.f32(276)];
        let srow: [[f32; 4]; 3] =
            std::array::from_fn(|row| std::array::from_fn(|c| r.f32(280 + 16 * row + 4 * c)));
        let qform_affine_ras = (qform_code != XformCode::Unknown)
            .then(|| transform::qform_affine(quatern, &pixdim, qoffset))
            .transpose()?;
        let sform_affine_ras =
            (sform_code != XformCode::Unknown).then(|| transform::sform_affine(&srow));
        let (affine_ras, affine_source) = match (sform_affine_ras, qform_affine_ras) {
            (Some(s), _) => (s, AffineSource::Sform),
            (None, Some(q)) => (q, AffineSource::Qform),
            (None, None) => (
                transform::base_affine(&dim, &pixdim),
                AffineSource::PixdimOnly,
            ),
        };
        let header = NiftiHeader {
            endian,
            dims,
            dim,
            datatype,
            pixdim,
            vox_offset,
            scl_slope,
            scl_inter,
            xyzt_units,
            intent_code: r.i16(68),
            description,
            qform_code,
            sform_code,
            qform_affine_ras,
            sform_affine_ras,
            affine_ras,
            affine_source,
        };
        header
            .geometry()
            .map_err(|e| format!("{affine_source:?} transform unusable: {e}"))?;
        Ok(header)
    }
}

/// Checks `dim` and returns the 3-D grid size.
///
/// `dim[0]` must be 1..=7; `dim[1..=dim[0]]` must be ≥ 1; axes 4 and up must have size 1 (a
/// 4-D file with one volume is a 3-D image; a time series or vector image is refused); values
/// beyond `dim[0]` are ignored as the spec says. The voxel count must not exceed
/// [`MAX_VOXELS`].
fn validate_dims(dim: &[i16; 8]) -> Result<[usize; 3], String> {
    let ndim = dim[0];
    if !(1..=7).contains(&ndim) {
        return Err(format!("dim[0] is {ndim}; it must be between 1 and 7"));
    }
    let ndim = ndim as usize;
    for i in 1..=ndim {
        if dim[i] < 1 {
            return Err(format!("dim[{i}] is {}; sizes must be at least 1", dim[i]));
        }
    }
    if let Some(i) = (4..=ndim).find(|&i| dim[i] != 1) {
        return Err(format!(
            "dim[{i}] is {} (dim = {:?}): this is a {ndim}-D image with more than one volume; \
             only 3-D volumes (trailing sizes 1) are supported",
            dim[i],
            &dim[..=ndim]
        ));
    }
    let dims: [usize; 3] = std::array::from_fn(|i| if i < ndim { dim[i + 1] as usize } else { 1 });
    let voxels = dims.iter().map(|&d| d as u64).product::<u64>();
    if voxels > MAX_VOXELS {
        return Err(format!(
            "dims {dims:?} describe {voxels} voxels, more than the {MAX_VOXELS} we accept"
        ));
    }
    Ok(dims)
}

/// Checks `vox_offset`: finite, integral, ≥ 352 (the spec minimum for single files) and below
/// 2³² (a larger offset in a real file is a corrupt header; the data-size check against the
/// file catches the rest).
fn validate_vox_offset(v: f32) -> Result<u64, String> {
    if !v.is_finite() || v.fract() != 0.0 || v < DATA_OFFSET as f32 || v > 4_294_967_296.0 {
        return Err(format!(
            "vox_offset is {v}; it must be a whole number of bytes, at least 352"
        ));
    }
    Ok(v as u64)
}

/// The text of a NUL-padded C string field.
fn c_string(bytes: &[u8]) -> String {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// `N` bytes of `bytes` from `at` (callers use constant offsets inside the header).
fn take<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    std::array::from_fn(|i| bytes[at + i])
}

/// Reads header fields in the file's byte order.
struct Reader<'a> {
    bytes: &'a [u8; HEADER_SIZE],
    endian: Endian,
}

impl Reader<'_> {
    fn i16(&self, at: usize) -> i16 {
        let b = take(self.bytes, at);
        match self.endian {
            Endian::Little => i16::from_le_bytes(b),
            Endian::Big => i16::from_be_bytes(b),
        }
    }

    fn f32(&self, at: usize) -> f32 {
        let b = take(self.bytes, at);
        match self.endian {
            Endian::Little => f32::from_le_bytes(b),
            Endian::Big => f32::from_be_bytes(b),
        }
    }
}

/// What the writer puts in a header besides the grid.
pub(super) struct HeaderSpec<'a> {
    /// Grid size.
    pub dims: [usize; 3],
    /// Stored datatype code and bits per voxel.
    pub datatype_code: i16,
    /// Bits per voxel.
    pub bitpix: i16,
    /// Voxel placement.
    pub geometry: &'a Geometry,
    /// Code written to both `qform_code` and `sform_code`.
    pub xform_code: XformCode,
    /// `intent_code` (0 = none, 1002 = label map).
    pub intent_code: i16,
    /// `descrip`, at most 79 bytes (checked by the caller).
    pub description: &'a str,
}

/// Encodes a little-endian NIfTI-1 header followed by an empty extension flag: the first
/// [`DATA_OFFSET`] bytes of a file we write. Both qform and sform describe `geometry`; the
/// sform exactly (up to float32), the qform as its nearest rigid transform.
pub(super) fn encode(spec: &HeaderSpec<'_>) -> [u8; DATA_OFFSET] {
    let mut h = [0u8; DATA_OFFSET];
    let mut put = |at: usize, b: &[u8]| h[at..at + b.len()].copy_from_slice(b);
    put(0, &(HEADER_SIZE as i32).to_le_bytes());
    put(38, b"r"); // `regular`: ANALYZE legacy, nibabel and FSL write 'r'.
    let dim: [i16; 8] = [
        3,
        spec.dims[0] as i16,
        spec.dims[1] as i16,
        spec.dims[2] as i16,
        1,
        1,
        1,
        1,
    ];
    for (i, d) in dim.iter().enumerate() {
        put(40 + 2 * i, &d.to_le_bytes());
    }
    put(68, &spec.intent_code.to_le_bytes());
    put(70, &spec.datatype_code.to_le_bytes());
    put(72, &spec.bitpix.to_le_bytes());
    let Qform {
        quatern,
        offset,
        qfac,
        spacing,
    } = transform::qform_from_geometry(spec.geometry);
    let pixdim = [
        qfac as f32,
        spacing[0] as f32,
        spacing[1] as f32,
        spacing[2] as f32,
        0.0,
        0.0,
        0.0,
        0.0,
    ];
    for (i, p) in pixdim.iter().enumerate() {
        put(76 + 4 * i, &p.to_le_bytes());
    }
    put(108, &(DATA_OFFSET as f32).to_le_bytes());
    put(112, &1.0f32.to_le_bytes()); // scl_slope 1, scl_inter 0: stored values are exact.
    put(116, &0.0f32.to_le_bytes());
    put(123, &[2]); // xyzt_units: NIFTI_UNITS_MM, no time unit.
    put(148, spec.description.as_bytes());
    put(252, &spec.xform_code.code().to_le_bytes());
    put(254, &spec.xform_code.code().to_le_bytes());
    for i in 0..3 {
        put(256 + 4 * i, &(quatern[i] as f32).to_le_bytes());
        put(268 + 4 * i, &(offset[i] as f32).to_le_bytes());
    }
    let ras = transform::ras_from_geometry(spec.geometry);
    for row in 0..3 {
        for c in 0..4 {
            put(280 + 16 * row + 4 * c, &(ras[row][c] as f32).to_le_bytes());
        }
    }
    put(344, b"n+1\0");
    h
}
