//! Errors of the model crate: bad configurations, bad forward inputs, weight files that do not
//! fit the network.

use std::path::PathBuf;

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong when building, running or loading the network. Each variant
/// carries a message a user can act on; nothing in this crate panics on caller input.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is inconsistent (e.g. a window that is not a multiple of the patch).
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// A forward input does not fit the configuration (shape, box, domain mix).
    #[error("invalid model input: {0}")]
    Input(String),
    /// A weight file could not be written or does not match the network.
    #[error("weights {path}: {message}")]
    Weights {
        /// The weight file.
        path: PathBuf,
        /// What is wrong with it.
        message: String,
    },
    /// A contract check in vertebra-core failed.
    #[error(transparent)]
    Core(#[from] vertebra_core::Error),
}
