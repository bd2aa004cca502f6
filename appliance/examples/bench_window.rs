//! Per-window latency of a model bundle on the product's inference path, and the GEMM ceiling
//! of the same ONNX Runtime, in one process (scripts/bench-window.sh runs it).
//!
//! ```text
//! cargo run -p vertebrad --example bench_window -- --bundle DIR --trusted-keys keys \
//!     --input WINDOW.f32 [--threads 2 (0: all cores)] [--warmup 1] [--runs 5] [--id-runs 3] \
//!     [--matmul GEMM.onnx --matmul-n 2048] [--provider cpu|cuda|tensorrt] \
//!     [--batches 1,2,4] [--compare-cpu] [--tensorrt-cache DIR]
//! ```
//!
//! The bundle is loaded by `Engine::load` (signature, hashes and contract verified; the one
//! execution provider `--provider`, default CPU, with no fallback: a GPU provider that cannot
//! start is an error, never a silent CPU run; `intra_threads` as given) and run through
//! `OrtNetwork` exactly as `vertebrad analyze` runs it:
//! - `forward`: one batch-1 window through `model.onnx`, all dense and lesion outputs copied
//!   out (what every sliding window costs);
//! - `identify`: one instance through the identification path (`model.onnx` for its RoI
//!   features, the Rust RoIAlign, `id_head.onnx`), what `analyze` pays per vertebra instance;
//! - `id_head_only`: the RoIAlign and `id_head.onnx` alone, on features computed once.
//!
//! `--matmul` names a graph with one float32 MatMul `[N, N] x [N, N]` (input `a`); it runs in a
//! session built like the bundle's (same library, environment and thread count), which gives
//! the machine's GEMM FLOP/s through the runtime the product uses.
//!
//! `--batches` times `forward` at each batch size (the window repeated; per-window time and
//! windows/s — a window of the `paper` bundle is the paper's 128³ volume). `--compare-cpu`
//! runs the batch-1 forward once more in a second engine on the CPU provider and reports the
//! largest absolute difference of every output and of the foreground probability (the GPU
//! tolerance check; CPU against CPU gives 0).
//!
//! `--input` is a raw little-endian float32 file of exactly one window (`1 x 1 x wz x wy x wx`).
//! Warm-up runs are excluded. Prints one JSON object: every timed run in seconds, and medians.

use std::path::PathBuf;
use std::time::Instant;

use ort::session::Session;
use ort::value::Tensor;
use vertebra_core::inference::{IdWindow, Network, WindowOutputs};
use vertebra_export::roi::{BOX_GEOMETRY, ROI_POOLED, RoiBox, box_geometry, roi_align};
use vertebra_export::runtime::{IMAGE, OrtNetwork};
use vertebrad::engine::{Engine, EngineConfig, Provider, runtime};

/// Boxed error of this example.
type BoxError = Box<dyn std::error::Error>;

/// Command-line options.
struct Options {
    bundle: PathBuf,
    trusted_keys: PathBuf,
    input: PathBuf,
    threads: usize,
    warmup: usize,
    runs: usize,
    id_runs: usize,
    matmul: Option<PathBuf>,
    matmul_n: usize,
    provider: Provider,
    batches: Vec<usize>,
    compare_cpu: bool,
    tensorrt_cache: Option<PathBuf>,
}

fn parse() -> Result<Options, BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let opt = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let num = |flag: &str, default: usize| -> Result<usize, BoxError> {
        opt(flag).map_or(Ok(default), |s| {
            s.parse().map_err(|e| format!("{flag} {s:?}: {e}").into())
        })
    };
    let need = |flag: &str| -> Result<PathBuf, BoxError> {
        opt(flag)
            .map(PathBuf::from)
            .ok_or_else(|| format!("{flag} is required (see the example's docs)").into())
    };
    Ok(Options {
        bundle: need("--bundle")?,
        trusted_keys: need("--trusted-keys")?,
        input: need("--input")?,
        threads: num("--threads", 2)?,
        warmup: num("--warmup", 1)?,
        runs: num("--runs", 5)?,
        id_runs: num("--id-runs", 3)?,
        matmul: opt("--matmul").map(PathBuf::from),
        matmul_n: num("--matmul-n", 2048)?,
        provider: Provider::parse(&opt("--provider").unwrap_or_else(|| "cpu".into()))?,
        batches: opt("--batches")
            .unwrap_or_else(|| "1".into())
            .split(',')
            .map(|b| match b.trim().parse::<usize>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("--batches {b:?}: batch sizes are integers >= 1").into()),
            })
            .collect::<Result<_, BoxError>>()?,
        compare_cpu: args.iter().any(|a| a == "--compare-cpu"),
        tensorrt_cache: opt("--tensorrt-cache").map(PathBuf::from),
    })
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Times `f` `warmup + runs` times and returns the timed runs (warm-up excluded).
fn time_runs(
    warmup: usize,
    runs: usize,
    mut f: impl FnMut() -> Result<(), BoxError>,
) -> Result<Vec<f64>, BoxError> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..warmup + runs {
        let t = Instant::now();
        f()?;
        if i >= warmup {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(times)
}

fn stats(times: &[f64]) -> serde_json::Value {
    serde_json::json!({
        "median_s": median(times),
        "min_s": times.iter().copied().fold(f64::INFINITY, f64::min),
        "max_s": times.iter().copied().fold(0.0, f64::max),
        "runs_s": times,
    })
}

fn main() -> Result<(), BoxError> {
    let o = parse()?;
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let config = EngineConfig {
        bundle: o.bundle.clone(),
        trusted_keys: o.trusted_keys.clone(),
        providers: vec![o.provider],
        intra_threads: o.threads,
        max_concurrent: 1,
        batch: 1,
        tensorrt_cache: o.tensorrt_cache.clone(),
        ..EngineConfig::default()
    };
    let t = Instant::now();
    let engine = Engine::load(&config)?;
    let load_s = t.elapsed().as_secs_f64();
    let manifest = &engine.bundle.manifest;
    let [wz, wy, wx] = manifest.contract.window;
    let bytes = std::fs::read(&o.input).map_err(|e| format!("{}: {e}", o.input.display()))?;
    if bytes.len() != 4 * wz * wy * wx {
        return Err(format!(
            "{} holds {} bytes; one {wz}x{wy}x{wx} float32 window of this bundle is {}",
            o.input.display(),
            bytes.len(),
            4 * wz * wy * wx
        )
        .into());
    }
    let window: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    // An instance box over the central half of the window, as a vertebra in an ID window.
    let id_window = IdWindow {
        start_xyz: [0, 0, 0],
        min: [wz, wy, wx].map(|n| (n / 4) as f32),
        max: [wz, wy, wx].map(|n| (3 * n / 4) as f32),
    };

    let (mut report, reference) = engine.checkout(
        |sessions| -> Result<(serde_json::Value, Option<WindowOutputs>), BoxError> {
            // The product's runner; it borrows the sessions until the head is timed alone below.
            let (forward, identify, batches, reference) = {
                let mut on_windows = |_: usize| {};
                let mut net = OrtNetwork::new(sessions, manifest, &mut on_windows);
                let forward = time_runs(o.warmup, o.runs, || {
                    net.forward(&window, 1)?;
                    Ok(())
                })?;
                let mut batches = Vec::new();
                for &b in &o.batches {
                    let input: Vec<f32> = window.repeat(b);
                    let times = time_runs(o.warmup, o.runs, || {
                        net.forward(&input, b)?;
                        Ok(())
                    })?;
                    let m = median(&times);
                    let mut s = stats(&times);
                    s["batch"] = b.into();
                    s["per_window_s"] = (m / b as f64).into();
                    s["windows_per_s"] = (b as f64 / m).into();
                    batches.push(s);
                }
                let reference = if o.compare_cpu {
                    Some(net.forward(&window, 1)?)
                } else {
                    None
                };
                let identify = if net.has_id_head() && o.id_runs > 0 {
                    Some(time_runs(o.warmup, o.id_runs, || {
                        net.identify(&window, &id_window)?;
                        Ok(())
                    })?)
                } else {
                    None
                };
                (forward, identify, batches, reference)
            };
            let head_only = match (&manifest.identification, sessions.id_head.as_mut()) {
                (Some(section), Some(head)) if o.id_runs > 0 => {
                    let input = Tensor::from_array((vec![1usize, 1, wz, wy, wx], window.clone()))?;
                    let out = sessions.main.run(ort::inputs![IMAGE => input])?;
                    let (shape, features) =
                        out[section.features_output.as_str()].try_extract_tensor::<f32>()?;
                    let dims: [usize; 5] = shape
                        .iter()
                        .map(|&d| d as usize)
                        .collect::<Vec<_>>()
                        .try_into()
                        .map_err(|s| format!("RoI features of shape {s:?}, expected 5-D"))?;
                    let features = features.to_vec();
                    drop(out);
                    let boxes = [RoiBox {
                        batch: 0,
                        min: id_window.min,
                        max: id_window.max,
                    }];
                    let r = section.roi_align.output;
                    Some(time_runs(o.warmup, o.id_runs, || {
                        let pooled = roi_align(&features, dims, &boxes, section.roi_align)?;
                        let geometry = box_geometry(&boxes, section.spacing_mm);
                        let g = geometry.len();
                        head.run(ort::inputs![
                        ROI_POOLED => Tensor::from_array((vec![1usize, dims[1], r, r, r], pooled))?,
                        BOX_GEOMETRY => Tensor::from_array((vec![1usize, g], geometry))?,
                    ])?;
                        Ok(())
                    })?)
                }
                _ => None,
            };
            let report = serde_json::json!({
                "forward": stats(&forward),
                "batches": batches,
                "identify": identify.as_deref().map(stats),
                "id_head_only": head_only.as_deref().map(stats),
            });
            Ok((report, reference))
        },
    )?;
    if let Some(r) = &reference {
        report["compare_cpu"] = compare_with_cpu(&config, &window, r)?;
    }

    if let Some(path) = &o.matmul {
        let env = runtime::environment(&engine.library)?;
        let mut session = Session::builder(env)?
            .with_intra_threads(o.threads)?
            .commit_from_file(path)?;
        let n = o.matmul_n;
        // Values in [-1, 1): no denormals, no zeros the kernel could skip.
        let a: Vec<f32> = (0..n * n)
            .map(|i| ((i * 7919) % 2000) as f32 / 1000.0 - 1.0)
            .collect();
        let times = time_runs(o.warmup, o.runs, || {
            let input = Tensor::from_array((vec![n, n], a.clone()))?;
            session.run(ort::inputs!["a" => input])?;
            Ok(())
        })?;
        let mut s = stats(&times);
        s["n"] = n.into();
        s["gflops_per_s"] = (2.0 * (n as f64).powi(3) / median(&times) / 1e9).into();
        report["ort_gemm"] = s;
    }
    report["bundle"] = manifest.model.name.clone().into();
    report["window"] = serde_json::json!([wz, wy, wx]);
    report["spacing_mm"] = manifest.contract.spacing_mm.into();
    report["precision"] = manifest.model.precision.clone().into();
    report["provider"] = engine.provider.name().into();
    report["provider_log"] = engine.provider_log.clone().into();
    report["intra_threads"] = o.threads.into();
    report["library"] = engine.library.display().to_string().into();
    report["load_s"] = load_s.into();
    println!("{report}");
    Ok(())
}

/// The outputs of one window by name.
fn named(o: &WindowOutputs) -> Vec<(&'static str, &[f32])> {
    let mut v = vec![
        ("vertebra_logit", o.vertebra_logit.as_slice()),
        ("label_logits", o.label_logits.as_slice()),
    ];
    if let Some((heat, offset, size)) = &o.lesion {
        v.push(("lesion_heatmap_logits", heat.as_slice()));
        v.push(("lesion_offset", offset.as_slice()));
        v.push(("lesion_log_size", size.as_slice()));
    }
    v
}

/// Largest absolute difference between two outputs of one name.
fn max_abs_diff(name: &str, a: &[f32], b: &[f32]) -> Result<f64, BoxError> {
    if a.len() != b.len() {
        return Err(format!("{name}: {} values against {} on the CPU", a.len(), b.len()).into());
    }
    Ok(a.iter()
        .zip(b)
        .map(|(x, y)| f64::from((x - y).abs()))
        .fold(0.0, f64::max))
}

/// Largest absolute difference of each output of `window` between `tested` (the provider
/// under test) and a fresh engine on the CPU provider, plus the foreground probability.
fn compare_with_cpu(
    config: &EngineConfig,
    window: &[f32],
    tested: &WindowOutputs,
) -> Result<serde_json::Value, BoxError> {
    let cpu = Engine::load(&EngineConfig {
        providers: vec![Provider::Cpu],
        ..config.clone()
    })?;
    let manifest = &cpu.bundle.manifest;
    let on_cpu = cpu.checkout(|sessions| -> Result<WindowOutputs, BoxError> {
        let mut on_windows = |_: usize| {};
        let mut net = OrtNetwork::new(sessions, manifest, &mut on_windows);
        Ok(net.forward(window, 1)?)
    })?;
    let mut out = serde_json::Map::new();
    for ((name, a), (_, b)) in named(tested).into_iter().zip(named(&on_cpu)) {
        out.insert(name.into(), max_abs_diff(name, a, b)?.into());
    }
    let sigmoid = |v: &[f32]| -> Vec<f32> { v.iter().map(|x| 1.0 / (1.0 + (-x).exp())).collect() };
    let p = max_abs_diff(
        "foreground_probability",
        &sigmoid(&tested.vertebra_logit),
        &sigmoid(&on_cpu.vertebra_logit),
    )?;
    out.insert("foreground_probability".into(), p.into());
    Ok(serde_json::json!({ "max_abs_diff": out }))
}
