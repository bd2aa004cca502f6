//! What the daemon tells the console about its services: the shared [`ServiceStatus`] that
//! `vertebrad serve` fills as the DICOM node and the engine come up, and the dashboard and
//! `/healthz` read.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

/// Used and total bytes of the spool's file system (shown on the dashboard).
pub use crate::dicom::spool::disk_use;

/// The DICOM listener as started.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DicomStatus {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Our AE title.
    pub ae_title: String,
    /// The DICOM TLS port, if configured.
    pub tls_port: Option<u16>,
}

/// The inference engine as loaded, or why not.
#[derive(Clone, Debug, PartialEq)]
pub enum EngineStatus {
    /// Still being loaded.
    Loading,
    /// Loaded and serving the worker.
    Loaded(Box<LoadedEngine>),
    /// Could not be loaded: series are received and queued but not analysed.
    Unavailable(String),
}

/// A loaded engine, in the words the console shows.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedEngine {
    /// The bundle directory.
    pub bundle_dir: PathBuf,
    /// Model name from the manifest.
    pub model_name: String,
    /// sha256 of the signed manifest.
    pub manifest_sha256: String,
    /// The signing key's name.
    pub key_name: String,
    /// Signed with a demo key.
    pub demo: bool,
    /// The execution provider that runs (`cpu`, `cuda`, `tensorrt`).
    pub provider: String,
    /// Why the providers before it were not used.
    pub provider_log: Vec<String>,
    /// When the bundle was made (manifest provenance).
    pub created_utc: String,
    /// The source revision it was made from.
    pub git_commit: String,
    /// Evaluation metrics recorded in the manifest.
    pub metrics: Vec<(String, f64)>,
    /// The signed manifest's text.
    pub manifest_text: String,
}

impl LoadedEngine {
    /// The console's view of `engine`.
    pub fn from_engine(engine: &crate::engine::Engine) -> Self {
        Self {
            bundle_dir: engine.bundle.dir.clone(),
            model_name: engine.bundle.manifest.model.name.clone(),
            manifest_sha256: engine.bundle.manifest_sha256.clone(),
            key_name: engine.bundle.key_name.clone(),
            demo: engine.bundle.demo,
            provider: engine.provider.name().to_owned(),
            provider_log: engine.provider_log.clone(),
            created_utc: engine.bundle.manifest.provenance.created_utc.clone(),
            git_commit: engine.bundle.manifest.provenance.git_commit.clone(),
            metrics: engine
                .bundle
                .manifest
                .provenance
                .metrics
                .clone()
                .unwrap_or_default()
                .into_iter()
                .collect(),
            manifest_text: std::fs::read_to_string(engine.bundle.path("manifest.toml"))
                .unwrap_or_default(),
        }
    }
}

/// Everything the daemon reports; a snapshot is taken per request.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusSnapshot {
    /// The DICOM listener, once bound.
    pub dicom: Option<DicomStatus>,
    /// The engine.
    pub engine: EngineStatus,
    /// The spool directory (for disk use).
    pub spool_dir: Option<PathBuf>,
    /// The spool's high-water mark, percent of the file system.
    pub spool_high_water_percent: f64,
    /// The GPU, if one is seen (`/proc/driver/nvidia`), by model name.
    pub gpu: Option<String>,
}

/// The shared, updatable status; cheap to clone.
#[derive(Clone, Debug)]
pub struct ServiceStatus(Arc<RwLock<StatusSnapshot>>);

impl Default for ServiceStatus {
    fn default() -> Self {
        Self(Arc::new(RwLock::new(StatusSnapshot {
            dicom: None,
            engine: EngineStatus::Loading,
            spool_dir: None,
            spool_high_water_percent: 100.0,
            gpu: detect_gpu(),
        })))
    }
}

impl ServiceStatus {
    /// A copy of the current status.
    pub fn snapshot(&self) -> StatusSnapshot {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Changes the status.
    pub fn update(&self, f: impl FnOnce(&mut StatusSnapshot)) {
        f(&mut self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner));
    }
}

/// The first NVIDIA GPU's model name from the driver's proc files, if any.
fn detect_gpu() -> Option<String> {
    let dir = std::fs::read_dir("/proc/driver/nvidia/gpus").ok()?;
    for entry in dir.flatten() {
        let Ok(info) = std::fs::read_to_string(entry.path().join("information")) else {
            continue;
        };
        if let Some(model) = info
            .lines()
            .find_map(|l| l.strip_prefix("Model:"))
            .map(str::trim)
        {
            return Some(model.to_owned());
        }
    }
    None
}
