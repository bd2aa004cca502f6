//! The crate's error type: every failure names what to fix.

use std::path::PathBuf;

/// Errors of the exporter and of bundle verification.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A weights file that cannot be read or does not match the network.
    #[error("weights {path}: {message}")]
    Weights {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A configuration the exporter cannot mirror.
    #[error("configuration: {0}")]
    Config(String),
    /// Invalid input to a computation (boxes, shapes).
    #[error("invalid input: {0}")]
    Input(String),
    /// A file system operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A bundle that must not be run; the message is the reason shown to the operator.
    #[error("bundle {dir} refused: {reason}")]
    Refused {
        /// The bundle directory.
        dir: PathBuf,
        /// Why it was refused.
        reason: String,
    },
    /// A key file that cannot be used.
    #[error("key {path}: {message}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// The ONNX Runtime library is missing or cannot be loaded.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// Running a graph or post-processing its outputs failed.
    #[error("inference: {0}")]
    Inference(String),
    /// Anything else (manifest encoding, graph serialisation).
    #[error("{0}")]
    Other(String),
}

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}

impl From<vertebra_core::Error> for Error {
    fn from(e: vertebra_core::Error) -> Self {
        Error::Inference(e.to_string())
    }
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
