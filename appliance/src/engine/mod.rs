//! The inference engine: a verified model bundle served by ONNX Runtime, and the pipeline from
//! a DICOM series (or NIfTI) to named vertebrae, lesions and measurements.
//!
//! - [`runtime`]: finding and loading the ONNX Runtime library, execution providers;
//! - `vertebra_export::runtime`: the bundle's two graphs as `vertebra_core::inference::Network`
//!   (the Rust RoIAlign between them is `vertebra_export::roi`, equal to the Burn one) — shared
//!   with the trainer's bundle evaluation;
//! - [`analyze`]: series → volume → contract preprocessing → core's inference path →
//!   label map on the source grid, the result document, SEG + SR;
//! - [`document`]: the versioned result JSON (schema in docs/result-schema.md).
//!
//! [`Engine::load`] verifies the bundle (hashes, signature, contract) before any session is
//! built, builds one session set per allowed concurrent inference (default 1) on the first
//! execution provider that works, and hands them out one at a time ([`Engine::checkout`]):
//! concurrency and memory stay bounded, sessions are reused.

pub mod analyze;
pub mod document;
pub mod runtime;

use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};

use ort::ep::ExecutionProvider;
use ort::session::Session;
use vertebra_export::bundle::{VerifiedBundle, verify_bundle};
use vertebra_export::runtime::{Sessions, check_sessions};
use vertebra_export::signing::TrustedKeys;

pub use runtime::Provider;

/// Why the engine or an analysis failed, by class (the CLI's exit codes follow the class).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// Invalid settings.
    #[error("configuration: {0}")]
    Config(String),
    /// The ONNX Runtime library is missing or unusable.
    #[error("ONNX Runtime: {0}")]
    Runtime(String),
    /// The bundle was refused (hashes, signature, contract) or cannot be served.
    #[error("model bundle refused: {0}")]
    Bundle(String),
    /// The input is not something the engine can analyse (with the precise reason).
    #[error("input refused ({class}): {message}")]
    Input {
        /// Short stable name of the failure class.
        class: &'static str,
        /// What is wrong.
        message: String,
    },
    /// Running the network or post-processing failed.
    #[error("inference failed: {0}")]
    Inference(String),
    /// Writing the outputs failed.
    #[error("cannot write outputs: {0}")]
    Output(String),
}

impl EngineError {
    /// Short stable name of the failure class.
    pub fn class(&self) -> &'static str {
        match self {
            EngineError::Config(_) => "config",
            EngineError::Runtime(_) => "runtime",
            EngineError::Bundle(_) => "bundle",
            EngineError::Input { class, .. } => class,
            EngineError::Inference(_) => "inference",
            EngineError::Output(_) => "output",
        }
    }

    /// The process exit code for this failure class: 3 input, 4 bundle, 5 runtime,
    /// 6 inference, 7 output, 2 configuration.
    pub fn exit_code(&self) -> u8 {
        match self {
            EngineError::Config(_) => 2,
            EngineError::Input { .. } => 3,
            EngineError::Bundle(_) => 4,
            EngineError::Runtime(_) => 5,
            EngineError::Inference(_) => 6,
            EngineError::Output(_) => 7,
        }
    }

    /// Whether retrying the same input could succeed (a transient engine condition rather
    /// than a property of the input or the bundle).
    pub fn is_permanent(&self) -> bool {
        matches!(
            self,
            EngineError::Input { .. } | EngineError::Bundle(_) | EngineError::Inference(_)
        )
    }
}

impl From<vertebra_core::Error> for EngineError {
    fn from(e: vertebra_core::Error) -> Self {
        EngineError::Inference(e.to_string())
    }
}

/// Engine settings (`[inference]` in the daemon's configuration).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// The model bundle directory.
    pub bundle: PathBuf,
    /// Directory of trusted public keys (`*.pub`).
    pub trusted_keys: PathBuf,
    /// The ONNX Runtime library; unset: `ORT_DYLIB_PATH`, then the standard locations.
    pub onnxruntime: Option<PathBuf>,
    /// Execution providers in order of preference.
    pub providers: Vec<Provider>,
    /// Threads per inference inside ONNX Runtime (0: ONNX Runtime's default, all cores).
    pub intra_threads: usize,
    /// Concurrent inferences (one session set each).
    pub max_concurrent: usize,
    /// Windows per network run.
    pub batch: usize,
    /// Restrict windows to the located spine.
    pub localize: bool,
    /// TensorRT engine cache directory (under the state directory by default).
    pub tensorrt_cache: Option<PathBuf>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            bundle: PathBuf::from("/usr/share/vertebrad/model"),
            trusted_keys: PathBuf::from("/etc/vertebra/trusted-keys"),
            onnxruntime: None,
            providers: runtime::default_providers(),
            intra_threads: 0,
            max_concurrent: 1,
            batch: 1,
            localize: true,
            tensorrt_cache: None,
        }
    }
}

impl EngineConfig {
    /// Checks the settings.
    ///
    /// # Errors
    /// [`EngineError::Config`] naming the bad key.
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.providers.is_empty() {
            return Err(EngineError::Config(
                "inference.providers is empty: list at least \"cpu\"".into(),
            ));
        }
        if self.max_concurrent == 0 || self.max_concurrent > 16 {
            return Err(EngineError::Config(format!(
                "inference.max_concurrent = {} must be in 1..=16",
                self.max_concurrent
            )));
        }
        if self.batch == 0 || self.batch > 64 {
            return Err(EngineError::Config(format!(
                "inference.batch = {} must be in 1..=64",
                self.batch
            )));
        }
        Ok(())
    }
}

/// What the engine requires of a verified bundle beyond its signature and file hashes: a
/// consistent contract, a known precision, and an identification branch that matches its
/// graph and manifest section. Also used by the web console before it installs an upload.
///
/// # Errors
/// [`EngineError::Bundle`] naming the inconsistency.
pub fn check_bundle(bundle: &VerifiedBundle) -> Result<(), EngineError> {
    let m = &bundle.manifest;
    m.contract
        .validate()
        .map_err(|e| EngineError::Bundle(e.to_string()))?;
    if m.model.precision != "fp32" && m.model.precision != "fp16" {
        return Err(EngineError::Bundle(format!(
            "unknown precision {:?}",
            m.model.precision
        )));
    }
    if m.contract.branches.identification != m.model.id_head_graph.is_some()
        || m.contract.branches.identification != m.identification.is_some()
    {
        return Err(EngineError::Bundle(
            "the contract's identification branch, the id_head graph and the \
             [identification] section disagree"
                .into(),
        ));
    }
    Ok(())
}

/// A loaded, verified bundle with its sessions.
pub struct Engine {
    /// The verified bundle.
    pub bundle: VerifiedBundle,
    /// The execution provider that runs.
    pub provider: Provider,
    /// What happened to each provider tried before it (for logs and the console).
    pub provider_log: Vec<String>,
    /// The ONNX Runtime library in use.
    pub library: PathBuf,
    /// The settings.
    pub config: EngineConfig,
    pool: Mutex<Vec<Sessions>>,
    returned: Condvar,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("bundle", &self.bundle.dir)
            .field("provider", &self.provider)
            .field("library", &self.library)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Verifies the bundle and builds the sessions (see the module docs).
    ///
    /// # Errors
    /// [`EngineError::Bundle`] for a refused bundle or a graph that does not match its
    /// contract; [`EngineError::Runtime`] when ONNX Runtime is missing or no provider works;
    /// [`EngineError::Config`] for invalid settings.
    pub fn load(config: &EngineConfig) -> Result<Self, EngineError> {
        config.validate()?;
        let trusted = TrustedKeys::from_dir(&config.trusted_keys).map_err(|e| {
            EngineError::Bundle(format!(
                "cannot read the trusted keys in {}: {e}",
                config.trusted_keys.display()
            ))
        })?;
        let bundle = verify_bundle(&config.bundle, &trusted)
            .map_err(|e| EngineError::Bundle(e.to_string()))?;
        check_bundle(&bundle)?;
        let library = runtime::locate_library(config.onnxruntime.as_deref())?;
        let env = runtime::environment(&library)?;
        let mut provider_log = Vec::new();
        let mut chosen = None;
        for &p in &config.providers {
            match Self::build_sessions(env, &bundle, p, config) {
                Ok(s) => {
                    chosen = Some((p, s));
                    break;
                }
                Err(why) => {
                    tracing::warn!(provider = p.name(), reason = %why, "execution provider not used");
                    provider_log.push(format!("{p}: {why}"));
                }
            }
        }
        let Some((provider, first)) = chosen else {
            return Err(EngineError::Runtime(format!(
                "no configured execution provider works: {}",
                provider_log.join("; ")
            )));
        };
        let mut pool = vec![first];
        for _ in 1..config.max_concurrent {
            pool.push(
                Self::build_sessions(env, &bundle, provider, config)
                    .map_err(EngineError::Runtime)?,
            );
        }
        let engine = Engine {
            bundle,
            provider,
            provider_log,
            library,
            config: config.clone(),
            pool: Mutex::new(pool),
            returned: Condvar::new(),
        };
        tracing::info!(
            bundle = %engine.bundle.manifest.model.name,
            provider = engine.provider.name(),
            sessions = config.max_concurrent,
            "inference engine ready"
        );
        if let Some(w) = engine.bundle.demo_warning() {
            tracing::warn!("{w}");
        }
        Ok(engine)
    }

    fn build_session(
        env: &ort::environment::Environment,
        file: &Path,
        provider: Provider,
        config: &EngineConfig,
        cache_key: &str,
    ) -> Result<Session, String> {
        let mut b = Session::builder(env).map_err(|e| e.to_string())?;
        if config.intra_threads > 0 {
            b = b
                .with_intra_threads(config.intra_threads)
                .map_err(|e| e.to_string())?;
        }
        match provider {
            Provider::Cpu => {}
            Provider::Cuda => {
                if !ort::ep::CUDA::is_available().unwrap_or(false) {
                    return Err("not available in this ONNX Runtime library (CPU build, or \
                                the CUDA libraries are missing)"
                        .into());
                }
                b = b
                    .with_execution_providers([ort::ep::CUDA::default().build().error_on_failure()])
                    .map_err(|e| e.to_string())?;
            }
            Provider::TensorRt => {
                if !ort::ep::TensorRT::is_available().unwrap_or(false) {
                    return Err("not available in this ONNX Runtime library (CPU build, or \
                                the TensorRT libraries are missing)"
                        .into());
                }
                let dir = config
                    .tensorrt_cache
                    .clone()
                    .unwrap_or_else(|| PathBuf::from("/var/lib/vertebra/tensorrt-cache"))
                    .join(cache_key);
                std::fs::create_dir_all(&dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let ep = ort::ep::TensorRT::default()
                    .with_engine_cache(true)
                    .with_engine_cache_path(dir.display())
                    .with_timing_cache(true)
                    .with_timing_cache_path(dir.display())
                    .build()
                    .error_on_failure();
                b = b
                    .with_execution_providers([ep])
                    .map_err(|e| e.to_string())?;
            }
        }
        b.commit_from_file(file)
            .map_err(|e| format!("{}: {e}", file.display()))
    }

    fn build_sessions(
        env: &ort::environment::Environment,
        bundle: &VerifiedBundle,
        provider: Provider,
        config: &EngineConfig,
    ) -> Result<Sessions, String> {
        let m = &bundle.manifest;
        let key = vertebra_export::trt_cache::EngineCacheKey::new(
            &gpu_model(),
            "ort-1.31.1",
            &bundle.manifest_sha256,
        )
        .dir_name();
        let main = Self::build_session(
            env,
            &bundle.path(&m.model.main_graph),
            provider,
            config,
            &key,
        )?;
        let id_head = match &m.model.id_head_graph {
            Some(f) => Some(Self::build_session(
                env,
                &bundle.path(f),
                provider,
                config,
                &key,
            )?),
            None => None,
        };
        let sessions = Sessions { main, id_head };
        check_sessions(&sessions, m).map_err(|e| e.to_string())?;
        Ok(sessions)
    }

    /// Runs `f` with one session set, waiting while all are in use.
    pub fn checkout<R>(&self, f: impl FnOnce(&mut Sessions) -> R) -> R {
        let sessions = {
            let mut pool = self
                .pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loop {
                if let Some(s) = pool.pop() {
                    break s;
                }
                pool = self
                    .returned
                    .wait(pool)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
            }
        };
        let mut guard = Return {
            engine: self,
            sessions: Some(sessions),
        };
        f(guard.sessions.as_mut().expect("set above"))
    }
}

/// Returns a checked-out session set to the pool on drop, even if the user panics, so a
/// panic cannot shrink the pool.
struct Return<'a> {
    engine: &'a Engine,
    sessions: Option<Sessions>,
}
impl Drop for Return<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.sessions.take() {
            self.engine
                .pool
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(s);
            self.engine.returned.notify_one();
        }
    }
}

/// The first NVIDIA GPU's model name (from the driver's /proc entry), or "no-gpu".
fn gpu_model() -> String {
    let Ok(dirs) = std::fs::read_dir("/proc/driver/nvidia/gpus") else {
        return "no-gpu".into();
    };
    for d in dirs.flatten() {
        if let Ok(text) = std::fs::read_to_string(d.path().join("information"))
            && let Some(line) = text.lines().find(|l| l.starts_with("Model:"))
        {
            return line.trim_start_matches("Model:").trim().to_owned();
        }
    }
    "no-gpu".into()
}
