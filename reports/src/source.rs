//! The source series as the writers need it: identity, geometry and the references of every
//! slice, plus the patient and study attributes that every derived object must copy.
//!
//! [`SourceSeries::from_dir`] reads the headers of a directory of single-frame image files
//! (pixel data is never read, so compressed series such as JPEG 2000 work the same).

use std::fmt;
use std::path::{Path, PathBuf};

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_object::mem::InMemElement;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use vertebra_core::Geometry;

use crate::{Error, Result};

/// Patient and study attributes copied verbatim (VR and value) from the source into every
/// output object: Patient, General Study and Patient Study module attributes and the Specific
/// Character Set they are encoded in.
///
/// These are identifying data: `Debug` prints only how many there are, and nothing in this
/// crate formats them into messages.
#[derive(Clone, Default, PartialEq)]
pub struct PatientStudyAttributes(Vec<InMemElement>);

impl fmt::Debug for PatientStudyAttributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PatientStudyAttributes({} attributes, redacted)",
            self.0.len()
        )
    }
}

/// The attributes [`PatientStudyAttributes`] copies; those missing from the source are written
/// empty when the output IOD requires them (Type 2) and left out otherwise.
pub const COPIED_TAGS: [Tag; 17] = [
    tags::SPECIFIC_CHARACTER_SET,
    tags::PATIENT_NAME,
    tags::PATIENT_ID,
    tags::ISSUER_OF_PATIENT_ID,
    tags::PATIENT_BIRTH_DATE,
    tags::PATIENT_SEX,
    tags::PATIENT_AGE,
    tags::PATIENT_SIZE,
    tags::PATIENT_WEIGHT,
    tags::PATIENT_IDENTITY_REMOVED,
    tags::STUDY_DATE,
    tags::STUDY_TIME,
    tags::REFERRING_PHYSICIAN_NAME,
    tags::STUDY_ID,
    tags::ACCESSION_NUMBER,
    tags::STUDY_DESCRIPTION,
    tags::STUDY_INSTANCE_UID,
];

/// The Type 2 attributes among [`COPIED_TAGS`]: written empty when the source lacks them.
pub(crate) const TYPE2_COPIED: [(Tag, dicom_core::VR); 8] = [
    (tags::PATIENT_NAME, dicom_core::VR::PN),
    (tags::PATIENT_ID, dicom_core::VR::LO),
    (tags::PATIENT_BIRTH_DATE, dicom_core::VR::DA),
    (tags::PATIENT_SEX, dicom_core::VR::CS),
    (tags::STUDY_DATE, dicom_core::VR::DA),
    (tags::STUDY_TIME, dicom_core::VR::TM),
    (tags::REFERRING_PHYSICIAN_NAME, dicom_core::VR::PN),
    (tags::STUDY_ID, dicom_core::VR::SH),
];

impl PatientStudyAttributes {
    /// Copies the [`COPIED_TAGS`] present in `obj`.
    pub fn from_object(obj: &InMemDicomObject) -> Self {
        PatientStudyAttributes(
            COPIED_TAGS
                .iter()
                .filter_map(|&t| obj.element_opt(t).ok().flatten().cloned())
                .collect(),
        )
    }

    /// The copied elements.
    pub fn elements(&self) -> &[InMemElement] {
        &self.0
    }

    /// Writes the copied elements into `obj`, and Type 2 attributes the source lacked as empty
    /// elements.
    pub(crate) fn write_into(&self, obj: &mut InMemDicomObject) {
        for (tag, vr) in TYPE2_COPIED {
            obj.put(dicom_core::DataElement::new(
                tag,
                vr,
                dicom_core::PrimitiveValue::Empty,
            ));
        }
        obj.put(dicom_core::DataElement::new(
            tags::ACCESSION_NUMBER,
            dicom_core::VR::SH,
            dicom_core::PrimitiveValue::Empty,
        ));
        for e in &self.0 {
            obj.put(e.clone());
        }
    }
}

/// One slice of the source series.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceImage {
    /// SOP Class UID (e.g. CT Image Storage).
    pub sop_class_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Image Position (Patient): LPS mm of the centre of the first pixel.
    pub position: [f64; 3],
}

/// A single-frame image series with one orientation and one matrix size.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceSeries {
    /// Study Instance UID.
    pub study_instance_uid: String,
    /// Series Instance UID.
    pub series_instance_uid: String,
    /// Frame of Reference UID.
    pub frame_of_reference_uid: String,
    /// Modality (CS), e.g. "CT".
    pub modality: String,
    /// Image Orientation (Patient): row direction then column direction (LPS unit vectors).
    pub orientation: [f64; 6],
    /// Pixel Spacing as DICOM orders it: row spacing (between rows), then column spacing, mm.
    pub pixel_spacing: [f64; 2],
    /// Slice Thickness in mm, when the source gives it.
    pub slice_thickness: Option<f64>,
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub columns: u16,
    /// The slices, sorted by position along the slice normal (row × column), ascending.
    pub images: Vec<SourceImage>,
    /// Patient and study attributes to copy into derived objects.
    pub patient_study: PatientStudyAttributes,
}

/// Largest allowed difference between direction cosines of two slices of one series (what
/// scanners write; the same tolerance as `Geometry::validate`).
const ORIENTATION_TOLERANCE: f64 = 1e-4;

/// Largest allowed deviation of a slice spacing from the mean spacing, mm.
const SPACING_TOLERANCE_MM: f64 = 0.01;

impl SourceSeries {
    /// Reads the headers of every file in `dir` (not recursive; hidden files ignored).
    ///
    /// # Errors
    ///
    /// [`Error::Io`] if the directory cannot be listed, [`Error::Source`] for a file that is not
    /// DICOM or lacks an attribute, and [`Error::InvalidInput`] when the files are not one
    /// single-frame series of one orientation and matrix.
    pub fn from_dir(dir: &Path) -> Result<Self> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| Error::io(dir, e))?
            .map(|e| e.map(|e| e.path()).map_err(|err| Error::io(dir, err)))
            .collect::<Result<_>>()?;
        files.retain(|p| {
            p.is_file()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        });
        files.sort();
        Self::from_files(&files)
    }

    /// Reads the headers of `files` (one slice each).
    ///
    /// # Errors
    ///
    /// As [`SourceSeries::from_dir`].
    pub fn from_files(files: &[PathBuf]) -> Result<Self> {
        let Some(first_path) = files.first() else {
            return Err(Error::InvalidInput("the source series has no files".into()));
        };
        let mut series: Option<SourceSeries> = None;
        for path in files {
            let obj = OpenFileOptions::new()
                .read_until(tags::PIXEL_DATA)
                .open_file(path)
                .map_err(|e| Error::source(path, format!("not a readable DICOM file: {e}")))?;
            let header = SliceHeader::read(&obj, path)?;
            match &mut series {
                None => {
                    series = Some(SourceSeries {
                        study_instance_uid: header.study_uid.clone(),
                        series_instance_uid: header.series_uid.clone(),
                        frame_of_reference_uid: header.for_uid.clone(),
                        modality: header.modality.clone(),
                        orientation: header.orientation,
                        pixel_spacing: header.pixel_spacing,
                        slice_thickness: header.slice_thickness,
                        rows: header.rows,
                        columns: header.columns,
                        images: vec![header.image],
                        patient_study: PatientStudyAttributes::from_object(&obj),
                    });
                }
                Some(s) => {
                    s.check_same_series(&header, path)?;
                    s.images.push(header.image);
                }
            }
        }
        let mut series = series.ok_or_else(|| Error::source(first_path, "no slices"))?;
        series.sort_and_check()?;
        Ok(series)
    }

    fn check_same_series(&self, h: &SliceHeader, path: &Path) -> Result<()> {
        let mismatch = |what: &str| {
            Err(Error::InvalidInput(format!(
                "{}: {what} differs from the first file; the directory must hold one series \
                 of one orientation and matrix size",
                path.display()
            )))
        };
        if h.series_uid != self.series_instance_uid || h.study_uid != self.study_instance_uid {
            return mismatch("Study/Series Instance UID");
        }
        if h.for_uid != self.frame_of_reference_uid {
            return mismatch("Frame of Reference UID");
        }
        if (h.rows, h.columns) != (self.rows, self.columns) {
            return mismatch("Rows/Columns");
        }
        if h.orientation
            .iter()
            .zip(&self.orientation)
            .any(|(a, b)| (a - b).abs() > ORIENTATION_TOLERANCE)
        {
            return mismatch("Image Orientation (Patient)");
        }
        if h.pixel_spacing
            .iter()
            .zip(&self.pixel_spacing)
            .any(|(a, b)| (a - b).abs() > 1e-6 * a.abs().max(1.0))
        {
            return mismatch("Pixel Spacing");
        }
        Ok(())
    }

    /// Sorts slices along the normal and checks that they form one regular stack.
    fn sort_and_check(&mut self) -> Result<()> {
        let normal = self.normal();
        self.images
            .sort_by(|a, b| dot(a.position, normal).total_cmp(&dot(b.position, normal)));
        for w in self.images.windows(2) {
            if w[0].sop_instance_uid == w[1].sop_instance_uid {
                return Err(Error::InvalidInput(
                    "two files carry the same SOP Instance UID".into(),
                ));
            }
        }
        self.geometry().map(|_| ())
    }

    /// Unit normal of the slices: row direction × column direction.
    pub fn normal(&self) -> [f64; 3] {
        let o = self.orientation;
        cross([o[0], o[1], o[2]], [o[3], o[4], o[5]])
    }

    /// The voxel grid of the series: x along the columns (row direction), y along the rows
    /// (column direction), z = slice index in [`SourceSeries::images`] order. A label volume or
    /// heatmap handed to the writers must have exactly this grid.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when slices are not evenly spaced along the normal (gaps,
    /// duplicates), do not lie on one line perpendicular to the slices (a tilted gantry), or the
    /// geometry is degenerate.
    pub fn geometry(&self) -> Result<Geometry> {
        let o = self.orientation;
        let normal = self.normal();
        let first = self.images[0].position;
        let n = self.images.len();
        let spacing_z = if n > 1 {
            dot(sub(self.images[n - 1].position, first), normal) / (n - 1) as f64
        } else {
            self.slice_thickness.unwrap_or(1.0)
        };
        if !(spacing_z.is_finite() && spacing_z > 0.0) {
            return Err(Error::InvalidInput(format!(
                "slice spacing {spacing_z} mm: slices are duplicated or not a stack"
            )));
        }
        for (k, img) in self.images.iter().enumerate() {
            let expected = add(first, scale(normal, spacing_z * k as f64));
            let off = norm(sub(img.position, expected));
            if off > SPACING_TOLERANCE_MM {
                return Err(Error::InvalidInput(format!(
                    "slice {k} lies {off:.3} mm from a regular stack of spacing {spacing_z:.4} mm \
                     perpendicular to the slices (gap, uneven spacing or gantry tilt)"
                )));
            }
        }
        let geometry = Geometry {
            spacing: [self.pixel_spacing[1], self.pixel_spacing[0], spacing_z],
            origin: first,
            direction: [[o[0], o[1], o[2]], [o[3], o[4], o[5]], normal],
        };
        geometry
            .validate()
            .map_err(|e| Error::InvalidInput(format!("source geometry: {e}")))?;
        Ok(geometry)
    }

    /// Dimensions `[columns, rows, slices]` of [`SourceSeries::geometry`]'s grid.
    pub fn dims(&self) -> [usize; 3] {
        [
            usize::from(self.columns),
            usize::from(self.rows),
            self.images.len(),
        ]
    }
}

/// What one file contributes.
struct SliceHeader {
    study_uid: String,
    series_uid: String,
    for_uid: String,
    modality: String,
    orientation: [f64; 6],
    pixel_spacing: [f64; 2],
    slice_thickness: Option<f64>,
    rows: u16,
    columns: u16,
    image: SourceImage,
}

impl SliceHeader {
    fn read(obj: &InMemDicomObject, path: &Path) -> Result<Self> {
        let text = |tag: Tag, name: &str| -> Result<String> {
            let s = obj
                .element(tag)
                .ok()
                .and_then(|e| {
                    e.to_str()
                        .ok()
                        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
                })
                .unwrap_or_default();
            if s.is_empty() {
                Err(Error::source(path, format!("{name} is missing or empty")))
            } else {
                Ok(s)
            }
        };
        let floats = |tag: Tag, name: &str, n: usize| -> Result<Vec<f64>> {
            let v = obj
                .element(tag)
                .ok()
                .and_then(|e| e.to_multi_float64().ok())
                .ok_or_else(|| Error::source(path, format!("{name} is missing or not numeric")))?;
            if v.len() != n || v.iter().any(|x| !x.is_finite()) {
                return Err(Error::source(
                    path,
                    format!("{name} must have {n} finite values, has {}", v.len()),
                ));
            }
            Ok(v)
        };
        let uint = |tag: Tag, name: &str| -> Result<u16> {
            obj.element(tag)
                .ok()
                .and_then(|e| e.to_int::<u16>().ok())
                .ok_or_else(|| Error::source(path, format!("{name} is missing or not a number")))
        };
        let frames = obj
            .element(tags::NUMBER_OF_FRAMES)
            .ok()
            .and_then(|e| e.to_int::<u32>().ok())
            .unwrap_or(1);
        if frames != 1 {
            return Err(Error::source(
                path,
                format!("{frames} frames: only single-frame image series are supported"),
            ));
        }
        let o = floats(
            tags::IMAGE_ORIENTATION_PATIENT,
            "Image Orientation (Patient)",
            6,
        )?;
        let p = floats(tags::IMAGE_POSITION_PATIENT, "Image Position (Patient)", 3)?;
        let s = floats(tags::PIXEL_SPACING, "Pixel Spacing", 2)?;
        let slice_thickness = obj
            .element(tags::SLICE_THICKNESS)
            .ok()
            .and_then(|e| e.to_float64().ok())
            .filter(|t| t.is_finite() && *t > 0.0);
        let uid = |tag: Tag, name: &str| -> Result<String> {
            let u = text(tag, name)?;
            crate::model::check_uid(name, &u).map_err(|e| Error::source(path, e.to_string()))?;
            Ok(u)
        };
        Ok(SliceHeader {
            study_uid: uid(tags::STUDY_INSTANCE_UID, "Study Instance UID")?,
            series_uid: uid(tags::SERIES_INSTANCE_UID, "Series Instance UID")?,
            for_uid: uid(tags::FRAME_OF_REFERENCE_UID, "Frame of Reference UID")?,
            modality: text(tags::MODALITY, "Modality")?,
            orientation: [o[0], o[1], o[2], o[3], o[4], o[5]],
            pixel_spacing: [s[0], s[1]],
            slice_thickness,
            rows: uint(tags::ROWS, "Rows")?,
            columns: uint(tags::COLUMNS, "Columns")?,
            image: SourceImage {
                sop_class_uid: uid(tags::SOP_CLASS_UID, "SOP Class UID")?,
                sop_instance_uid: uid(tags::SOP_INSTANCE_UID, "SOP Instance UID")?,
                position: [p[0], p[1], p[2]],
            },
        })
    }
}

pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

pub(crate) fn cross(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

pub(crate) fn sub(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

fn add(a: [f64; 3], b: [f64; 3]) -> [f64; 3] {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

fn scale(a: [f64; 3], s: f64) -> [f64; 3] {
    [a[0] * s, a[1] * s, a[2] * s]
}

pub(crate) fn norm(a: [f64; 3]) -> f64 {
    dot(a, a).sqrt()
}
