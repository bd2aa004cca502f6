//! The crate's error type. Every fallible public function returns [`Result`]; input from
//! files or callers never panics, it produces one of these with enough context to act on.

use std::path::PathBuf;

/// Errors produced by vertebra-core.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on `path` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A NIfTI file is malformed or uses a feature we do not support.
    #[error("invalid NIfTI file: {0}")]
    Nifti(String),
    /// Volume geometry is unusable (zero, negative or non-finite spacing, singular direction
    /// matrix, mismatched dimensions...).
    #[error("invalid geometry: {0}")]
    Geometry(String),
    /// A caller passed arguments that cannot be honoured (sizes that do not match, empty
    /// inputs where values are required, out-of-range parameters...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// JSON (de)serialisation of ground truth or manifests failed.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing a DICOM object failed.
    #[error("DICOM: {0}")]
    Dicom(String),
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}

/// Shorthand for results with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
