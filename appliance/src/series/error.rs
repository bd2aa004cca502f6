//! Why a series could not become a volume: one variant per failure class, each message saying
//! precisely what is wrong and where, and never quoting patient data (file paths, UIDs,
//! attribute names and numbers only).

use std::path::PathBuf;

/// A series that cannot be loaded, by failure class.
///
/// [`SeriesError::class`] gives a short stable machine name per variant for exit codes and
/// the audit log; the `Display` text is for people and may change.
#[derive(Debug, thiserror::Error)]
pub enum SeriesError {
    /// A file or directory could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },

    /// Nothing under the path is a DICOM image: no file parsed as DICOM with Rows/Columns.
    #[error(
        "{}: no DICOM image found ({ignored} file(s) ignored: not DICOM, DICOMDIR or \
         objects without pixel data)",
        path.display()
    )]
    NoImages {
        /// The directory or file given.
        path: PathBuf,
        /// Files looked at and ignored.
        ignored: usize,
    },

    /// The directory holds images of more than one series.
    #[error(
        "the directory holds {count} series ({summary}); give the loader one series per \
         directory"
    )]
    MultipleSeries {
        /// Number of distinct Series Instance UIDs.
        count: usize,
        /// Image count and modality of each series, e.g. `"CT 120 images, MR 24 images"`.
        summary: String,
    },

    /// Modality (0008,0060) is neither CT nor MR.
    #[error("modality {0:?} is not supported: only CT and MR series can be analysed")]
    UnsupportedModality(String),

    /// A localizer (scout) or an object that is not a cross-sectional CT/MR image.
    #[error("{}: not a cross-sectional image series: {reason}", file.display())]
    Localizer {
        /// The first offending file.
        file: PathBuf,
        /// What marks it: the Image/Frame Type value or the SOP Class.
        reason: String,
    },

    /// Slices do not share one Image Orientation (Patient).
    #[error(
        "mixed orientations: {} has Image Orientation (Patient) {found:?} but the first slice \
         has {expected:?} (difference above 1e-4)",
        file.display()
    )]
    MixedOrientation {
        /// The deviating file.
        file: PathBuf,
        /// Its orientation (row cosines, then column cosines).
        found: [f64; 6],
        /// The first slice's orientation.
        expected: [f64; 6],
    },

    /// Slices do not share one matrix (Rows × Columns) or Pixel Spacing.
    #[error("mixed sizes: {}: {detail}", file.display())]
    MixedSize {
        /// The deviating file.
        file: PathBuf,
        /// Which attribute differs, with both values.
        detail: String,
    },

    /// Two slices at the same position along the slice normal.
    #[error(
        "two slices at the same position {at_mm:.3} mm along the slice normal ({} and {}); \
         the series holds repeated or overlapping acquisitions",
        first.display(),
        second.display()
    )]
    DuplicatePosition {
        /// Position along the normal, mm.
        at_mm: f64,
        /// The file of one slice.
        first: PathBuf,
        /// The file of the other.
        second: PathBuf,
    },

    /// A gap larger than `max_gap_factor` × the median slice spacing.
    #[error(
        "missing slices: a gap of {gap_mm:.3} mm after {after} (median spacing \
         {median_mm:.3} mm, at most {max_factor} × median allowed)"
    )]
    MissingSlices {
        /// The gap, mm.
        gap_mm: f64,
        /// Median spacing of the series, mm.
        median_mm: f64,
        /// The allowed factor (`SeriesOptions::max_gap_factor`).
        max_factor: f64,
        /// The slice before the gap: `instance <Instance Number> (<file>)` or `frame <n>`.
        after: String,
    },

    /// Slices evenly spaced on average but not on a regular grid (no gap large enough for
    /// [`SeriesError::MissingSlices`], yet a volume of uniform spacing would misplace them).
    #[error(
        "irregular slice spacing: a slice lies {deviation_mm:.3} mm from the regular grid of \
         spacing {spacing_mm:.3} mm (more than 10 % of the spacing)"
    )]
    IrregularSpacing {
        /// Largest distance of a slice from its place on the regular grid, mm.
        deviation_mm: f64,
        /// Mean spacing, mm.
        spacing_mm: f64,
    },

    /// The slices are stacked along a line that is not perpendicular to them (tilted gantry).
    /// Refused, never corrected: see the module documentation.
    #[error(
        "gantry tilt: slices are stacked {degrees:.2}° off their normal (more than 0.5°); \
         tilted acquisitions are refused, reconstruct the series without tilt"
    )]
    GantryTilt {
        /// Angle between the slice normal and the line through the slice positions.
        degrees: f64,
    },

    /// Fewer slices than `SeriesOptions::min_slices`.
    #[error("too few slices: {found} found, at least {min} needed for a volume")]
    TooFewSlices {
        /// Slices in the series.
        found: usize,
        /// The minimum.
        min: usize,
    },

    /// A transfer syntax whose pixel data this build cannot decode.
    #[error("{}: unsupported transfer syntax {uid} ({name})", file.display())]
    UnsupportedTransferSyntax {
        /// The file.
        file: PathBuf,
        /// Transfer Syntax UID.
        uid: String,
        /// Its name, or "unknown transfer syntax".
        name: String,
    },

    /// A file that is DICOM but could not be parsed or whose pixel data could not be decoded.
    #[error("{}: {reason}", file.display())]
    Decode {
        /// The file.
        file: PathBuf,
        /// What failed.
        reason: String,
    },

    /// A required attribute is absent or empty.
    #[error("{}: {attribute} is missing or empty", file.display())]
    MissingAttribute {
        /// The file.
        file: PathBuf,
        /// Attribute name and tag, e.g. `"Image Position (Patient) (0020,0032)"`.
        attribute: String,
    },

    /// A required attribute has a value the loader cannot use.
    #[error("{}: {attribute}: {detail}", file.display())]
    InvalidAttribute {
        /// The file.
        file: PathBuf,
        /// Attribute name and tag.
        attribute: String,
        /// What is wrong with the value.
        detail: String,
    },
}

impl SeriesError {
    /// A short, stable machine name of the failure class (for exit codes and the audit log).
    pub fn class(&self) -> &'static str {
        match self {
            SeriesError::Io { .. } => "io",
            SeriesError::NoImages { .. } => "no_images",
            SeriesError::MultipleSeries { .. } => "multiple_series",
            SeriesError::UnsupportedModality(_) => "unsupported_modality",
            SeriesError::Localizer { .. } => "localizer",
            SeriesError::MixedOrientation { .. } => "mixed_orientation",
            SeriesError::MixedSize { .. } => "mixed_size",
            SeriesError::DuplicatePosition { .. } => "duplicate_position",
            SeriesError::MissingSlices { .. } => "missing_slices",
            SeriesError::IrregularSpacing { .. } => "irregular_spacing",
            SeriesError::GantryTilt { .. } => "gantry_tilt",
            SeriesError::TooFewSlices { .. } => "too_few_slices",
            SeriesError::UnsupportedTransferSyntax { .. } => "unsupported_transfer_syntax",
            SeriesError::Decode { .. } => "decode",
            SeriesError::MissingAttribute { .. } => "missing_attribute",
            SeriesError::InvalidAttribute { .. } => "invalid_attribute",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        SeriesError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn decode(file: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        SeriesError::Decode {
            file: file.into(),
            reason: reason.into(),
        }
    }
}

/// An error and its sources, `outer: inner: …` (dicom-rs errors print only the outermost
/// message, e.g. "Could not decode pixel data", and keep the reason in the source).
pub(crate) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
