//! Errors of the trainer. Manifest problems carry the manifest path and line so that a user
//! can fix the file without reading code.

use std::path::PathBuf;

/// Trainer error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An error of the domain library (geometry, resampling, phantoms, NIfTI).
    #[error(transparent)]
    Core(#[from] vertebra_core::Error),
    /// An error of the network crate (configuration, forward input).
    #[error(transparent)]
    Model(#[from] vertebra_model::Error),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The dataset manifest is malformed or inconsistent.
    #[error("manifest {path}, line {line}: {message}")]
    Manifest {
        /// The manifest file (or `<memory>` for parsed text).
        path: PathBuf,
        /// 1-based line number (1 = header; 0 = the manifest as a whole).
        line: usize,
        /// What is wrong and, where possible, how to fix it.
        message: String,
    },
    /// A caller passed an argument the trainer cannot use.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A checkpoint cannot be written or read back.
    #[error("checkpoint {0}")]
    Checkpoint(String),
    /// A run configuration (recipe) is invalid.
    #[error("run configuration: {0}")]
    Config(String),
    /// A case cannot be used for training (wrong modality, no annotation the losses need).
    #[error("case {case}: {message}")]
    Case {
        /// Case id.
        case: String,
        /// What is wrong.
        message: String,
    },
}

/// Result with the trainer's [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
