//! Shared by the integration tests: the ONNX Runtime library, the Python venv, seeded random
//! weights, Burn and ort runners.

#![allow(dead_code)] // not every test binary uses every helper

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use burn::tensor::{Device, Tensor, TensorData};
use ort::session::Session;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vertebra_model::VertebraFormerConfig;

/// Where scripts/provision-onnxruntime.sh puts the library by default.
pub fn default_ort_path() -> PathBuf {
    let cache = std::env::var_os("XDG_CACHE_HOME").map_or_else(
        || Path::new(&std::env::var_os("HOME").expect("HOME is not set")).join(".cache"),
        PathBuf::from,
    );
    cache.join("vertebra/onnxruntime-1.31.1/libonnxruntime.so.1.31.1")
}

/// The process-wide ONNX Runtime environment (ort allows one per process).
pub fn ort_env() -> &'static ort::environment::Environment {
    static ENV: OnceLock<ort::environment::Environment> = OnceLock::new();
    ENV.get_or_init(|| {
        let path = std::env::var_os("ORT_DYLIB_PATH").map_or_else(default_ort_path, PathBuf::from);
        assert!(
            path.is_file(),
            "ONNX Runtime library {} is missing: run scripts/provision-onnxruntime.sh (or set \
             ORT_DYLIB_PATH to a libonnxruntime.so 1.31.x)",
            path.display()
        );
        ort::init_from(&path)
            .unwrap_or_else(|e| panic!("cannot load {}: {e}", path.display()))
            .build()
            .expect("cannot create the ONNX Runtime environment")
    })
}

/// A CPU session over a serialised model.
pub fn session(model: &[u8]) -> Session {
    Session::builder(ort_env())
        .and_then(|mut b| {
            b = b.with_intra_threads(2)?;
            b.commit_from_memory(model)
        })
        .expect("ONNX Runtime rejected the model")
}

/// Runs `session` on named f32 inputs; returns every output as (name, shape, values).
pub fn run(
    session: &mut Session,
    inputs: &[(&str, Vec<usize>, Vec<f32>)],
) -> Vec<(String, Vec<usize>, Vec<f32>)> {
    let values: Vec<(String, ort::value::DynValue)> = inputs
        .iter()
        .map(|(name, shape, data)| {
            let t = ort::value::Tensor::from_array((shape.clone(), data.clone()))
                .expect("input tensor");
            ((*name).to_owned(), t.into_dyn())
        })
        .collect();
    let outputs = session.run(values).expect("ONNX Runtime run failed");
    outputs
        .iter()
        .map(|(name, v)| {
            let (shape, data) = v.try_extract_tensor::<f32>().expect("f32 output");
            (
                name.to_string(),
                shape.iter().map(|&d| d as usize).collect(),
                data.to_vec(),
            )
        })
        .collect()
}

/// The Python interpreter of the reference venv (same rule as core/tests/common).
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("VERTEBRA_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| Path::new(&c).join("vertebra/venv")))
        .unwrap_or_else(|| {
            Path::new(&std::env::var_os("HOME").expect("HOME is not set"))
                .join(".cache/vertebra/venv")
        });
    let py = venv.join("bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/provision-python.sh (or set VERTEBRA_VENV)",
        py.display()
    );
    py
}

/// Writes `cfg` with seeded random weights to `path`. Burn's initialisers draw from a global
/// seeded generator, so initialisation is serialised across test threads; then every norm
/// gain/offset and bias gets seeded noise, so that a swapped gamma/beta or a dropped bias
/// cannot hide behind Burn's 1/0 initial values.
pub fn random_weights(cfg: &VertebraFormerConfig, seed: u64, path: &Path) {
    static INIT: Mutex<()> = Mutex::new(());
    {
        let _guard = INIT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let device = Device::flex();
        device.seed(seed);
        let model = cfg.init(&device).expect("valid config");
        vertebra_model::weights::save(&model, cfg, path).expect("save weights");
    }
    perturb_affine(path, seed);
}

fn perturb_affine(path: &Path, seed: u64) {
    let mut bytes = std::fs::read(path).unwrap();
    let len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + len]).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let mut names: Vec<&String> = header.keys().collect();
    names.sort();
    for name in names {
        let last = name.rsplit('.').next().unwrap_or("");
        if !matches!(last, "gamma" | "beta" | "bias") {
            continue;
        }
        let off = header[name]["data_offsets"].as_array().unwrap();
        let (a, b) = (
            off[0].as_u64().unwrap() as usize,
            off[1].as_u64().unwrap() as usize,
        );
        for chunk in bytes[8 + len + a..8 + len + b].chunks_exact_mut(4) {
            let v = f32::from_le_bytes(chunk.try_into().unwrap()) + rng.random_range(-0.3..0.3f32);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
    }
    std::fs::write(path, bytes).unwrap();
}

/// `n` seeded values in `[0, 1)` (a normalised CT window).
pub fn random_image(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random::<f32>()).collect()
}

/// A Burn tensor from values.
pub fn tensor<const D: usize>(data: Vec<f32>, shape: [usize; D]) -> Tensor<D> {
    Tensor::from_data(TensorData::new(data, shape), &Device::flex())
}

/// A Burn tensor's values.
pub fn values<const D: usize>(t: &Tensor<D>) -> Vec<f32> {
    t.clone()
        .into_data()
        .convert::<f32>()
        .try_to_vec::<f32>()
        .expect("f32 tensor")
}

/// Largest absolute difference; panics on a length mismatch or a non-finite value.
pub fn max_abs_diff(name: &str, a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "{name}: lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| {
            assert!(
                x.is_finite() && y.is_finite(),
                "{name}: non-finite value {x} / {y}"
            );
            (x - y).abs()
        })
        .fold(0.0, f32::max)
}
