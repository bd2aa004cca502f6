//! The error type of this crate.

use std::path::{Path, PathBuf};

/// What can go wrong while reading a source series or building and writing a report object.
///
/// Messages name attributes, files and counts, never patient-identifying values.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The results or the source series do not fit together or break a documented rule (e.g. a
    /// label volume that is not on the source grid, a vertebra listed twice).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A source file is not a usable image of the series (missing or malformed attribute).
    #[error("{path}: {message}")]
    Source {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// There is nothing to encode: DICOM has no valid Segmentation without frames.
    #[error("nothing to encode: {0}")]
    Empty(String),
    /// dicom-rs refused to build or write an object.
    #[error("DICOM encoding: {0}")]
    Dicom(String),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_owned(),
            source,
        }
    }

    pub(crate) fn source(path: &Path, message: impl Into<String>) -> Self {
        Error::Source {
            path: path.to_owned(),
            message: message.into(),
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
