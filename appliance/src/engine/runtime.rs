//! The ONNX Runtime library: where it is, loading it once per process, and the execution
//! providers.
//!
//! ## Finding the library (`ort` with `load-dynamic`)
//! In order: the configured path (`[inference] onnxruntime`), then `ORT_DYLIB_PATH`, then the
//! standard locations [`standard_locations`] (what `scripts/provision-onnxruntime.sh` installs
//! into the cache, the appliance image's `/usr/lib/vertebrad/`, the system library
//! directories). A configured or `ORT_DYLIB_PATH` path that does not exist is an error, not a
//! reason to look elsewhere: the operator asked for that file. When nothing is found, the
//! error says exactly how to provision it.
//!
//! ## Execution providers
//! Providers are tried in the configured order (default TensorRT → CUDA → CPU). A provider
//! that ONNX Runtime does not list as available, or whose session fails to build, is logged
//! with the reason and the next one is tried; the one whose session builds is the one that runs
//! and is reported (ort would otherwise fall back to CPU silently). CPU always works.

use std::path::{Path, PathBuf};

use ort::environment::Environment;
use vertebra_export::runtime as rt;

use super::EngineError;

pub use vertebra_export::runtime::{LIBRARY_FILE, ORT_VERSION, standard_locations};

/// An execution provider, in the names the configuration uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// NVIDIA TensorRT (engine cache in the state directory).
    TensorRt,
    /// NVIDIA CUDA.
    Cuda,
    /// ONNX Runtime's CPU provider.
    Cpu,
}

impl Provider {
    /// The configuration name.
    pub fn name(self) -> &'static str {
        match self {
            Provider::TensorRt => "tensorrt",
            Provider::Cuda => "cuda",
            Provider::Cpu => "cpu",
        }
    }

    /// Parses a configuration name.
    ///
    /// # Errors
    /// [`EngineError::Config`] for an unknown name.
    pub fn parse(s: &str) -> Result<Self, EngineError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "tensorrt" | "trt" => Ok(Provider::TensorRt),
            "cuda" => Ok(Provider::Cuda),
            "cpu" => Ok(Provider::Cpu),
            other => Err(EngineError::Config(format!(
                "unknown execution provider {other:?} (tensorrt, cuda, cpu)"
            ))),
        }
    }
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The default order: TensorRT, CUDA, CPU.
pub fn default_providers() -> Vec<Provider> {
    vec![Provider::TensorRt, Provider::Cuda, Provider::Cpu]
}

/// Finds the library (see the module docs).
///
/// # Errors
/// [`EngineError::Runtime`] naming the missing file and how to provision it.
pub fn locate_library(configured: Option<&Path>) -> Result<PathBuf, EngineError> {
    rt::locate_library(configured).map_err(|e| EngineError::Runtime(e.to_string()))
}

/// Loads the library once per process (see `vertebra_export::runtime::environment`).
///
/// # Errors
/// [`EngineError::Runtime`] if it cannot be loaded or another library is loaded already.
pub fn environment(path: &Path) -> Result<&'static Environment, EngineError> {
    rt::environment(path).map_err(|e| EngineError::Runtime(e.to_string()))
}
