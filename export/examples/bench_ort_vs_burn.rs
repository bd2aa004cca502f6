//! ONNX Runtime (CPU) latency of an exported graph vs the Burn flex forward of the same
//! weights, in one run, and the max abs error of the FP16 variant against Burn.
//!
//! ```text
//! scripts/provision-onnxruntime.sh
//! CARGO_TARGET_DIR=... cargo run --profile bench-fast -p vertebra-export \
//!     --example bench_ort_vs_burn -- cpu [--weights W] [--iters 5] [--threads 2] [--profile PREFIX]
//! ```
//! Without `--weights` the preset gets seeded random weights (latency does not depend on the
//! values). Prints median seconds per batch-1 forward and the ratio Burn / ort.

use std::path::PathBuf;
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use ort::session::Session;
use vertebra_core::contract::names;
use vertebra_export::graph::{Elem, export_weights};
use vertebra_model::{Preset, VertebraFormerInput, weights};

/// Named outputs of one run.
type Outputs = Vec<(String, Vec<f32>)>;
/// Boxed error of this example.
type BoxError = Box<dyn std::error::Error>;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Sums ONNX Runtime's profile (Chrome trace JSON) by operator type and prints the top ten.
fn print_profile(path: &str) -> Result<(), BoxError> {
    let events: Vec<serde_json::Value> = serde_json::from_str(&std::fs::read_to_string(path)?)?;
    let mut by_op: std::collections::BTreeMap<String, f64> = std::collections::BTreeMap::new();
    for e in &events {
        if e["cat"] == "Node"
            && e["name"]
                .as_str()
                .is_some_and(|n| n.ends_with("_kernel_time"))
        {
            let op = e["args"]["op_name"].as_str().unwrap_or("?").to_owned();
            *by_op.entry(op).or_default() += e["dur"].as_f64().unwrap_or(0.0) / 1e6;
        }
    }
    let total: f64 = by_op.values().sum();
    let mut v: Vec<(String, f64)> = by_op.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!("ort profile {path}: {total:.3} s in kernels over all runs");
    for (op, t) in v.iter().take(10) {
        println!("  {op:<24} {t:>8.3} s  {:>5.1} %", 100.0 * t / total);
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let preset = Preset::from_name(args.first().map_or("cpu", String::as_str))?;
    let opt = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let iters: usize = opt("--iters").map_or(Ok(5), |s| s.parse())?;
    let threads: usize = opt("--threads").map_or(Ok(2), |s| s.parse())?;
    let profile = opt("--profile");
    let dir = tempfile::tempdir()?;
    let path = if let Some(w) = opt("--weights") {
        PathBuf::from(w)
    } else {
        let p = dir.path().join("w.safetensors");
        let device = Device::flex();
        device.seed(1);
        let cfg = preset.config();
        weights::save(&cfg.init(&device)?, &cfg, &p)?;
        p
    };
    let lib = std::env::var_os("ORT_DYLIB_PATH").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/vertebra/onnxruntime-1.31.1/libonnxruntime.so.1.31.1")
        },
        PathBuf::from,
    );
    let env = ort::init_from(&lib)?.build()?;
    let t0 = Instant::now();
    let graphs = export_weights(&path, Elem::F32)?;
    let export_s = t0.elapsed().as_secs_f64();
    let cfg = graphs.config.clone();
    let [z, y, x] = cfg.window;
    let image: Vec<f32> = (0..z * y * x)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let ort_run = |model: &[u8]| -> Result<(f64, Outputs), BoxError> {
        let mut builder = Session::builder(&env)?.with_intra_threads(threads)?;
        if let Some(prefix) = &profile {
            builder = builder.with_profiling(prefix)?;
        }
        let mut s: Session = builder.commit_from_memory(model)?;
        let mut times = Vec::new();
        let mut last = Vec::new();
        for _ in 0..=iters {
            let input = ort::value::Tensor::from_array((vec![1usize, 1, z, y, x], image.clone()))?;
            let t = Instant::now();
            let out = s.run(ort::inputs![names::IMAGE => input])?;
            times.push(t.elapsed().as_secs_f64());
            last = out
                .iter()
                .map(|(n, v)| {
                    let (_, d) = v.try_extract_tensor::<f32>().expect("f32 output");
                    (n.to_string(), d.to_vec())
                })
                .collect();
        }
        times.remove(0); // warm-up
        if profile.is_some() {
            print_profile(&s.end_profiling()?)?;
        }
        Ok((median(times), last))
    };
    let (ort_s, ort_out) = ort_run(&graphs.main)?;
    let (model, _) = weights::load(&path, &Device::flex())?;
    let mut burn_times = Vec::new();
    let mut burn_out = None;
    for _ in 0..=iters.min(3) {
        let img = Tensor::<5>::from_data(
            TensorData::new(image.clone(), [1, 1, z, y, x]),
            &Device::flex(),
        );
        let t = Instant::now();
        let o = model.forward(VertebraFormerInput::from_image(img))?;
        let _ = o.label_logits.clone().into_data();
        burn_times.push(t.elapsed().as_secs_f64());
        burn_out = Some(o);
    }
    burn_times.remove(0);
    let burn_s = median(burn_times);
    println!(
        "preset {} window {z}x{y}x{x}, {threads} threads: export {export_s:.2} s; ort {ort_s:.4} s; burn flex {burn_s:.4} s; burn/ort {:.2}x",
        preset.name(),
        burn_s / ort_s
    );
    let burn_out = burn_out.expect("at least one Burn run");
    let reference = |name: &str| -> Option<Vec<f32>> {
        let o = &burn_out;
        let t5 = match name {
            n if n == names::VERTEBRA_LOGIT => Some(&o.vertebra_logit),
            n if n == names::LABEL_LOGITS => Some(&o.label_logits),
            n if n == names::LESION_HEATMAP_LOGITS => o.lesion_heatmap_logits.as_ref(),
            n if n == names::LESION_OFFSET => o.lesion_offset.as_ref(),
            n if n == names::LESION_LOG_SIZE => o.lesion_log_size.as_ref(),
            _ => None,
        };
        let t2 = match name {
            n if n == names::DOMAIN_LOGITS => o.domain_logits.as_ref(),
            n if n == names::DOMAIN_PROBS => o.domain_probs.as_ref(),
            n if n == names::DOMAIN_EMBEDDING => o.domain_embedding.as_ref(),
            _ => None,
        };
        t5.map(|t| t.clone().into_data().try_to_vec::<f32>().expect("f32"))
            .or_else(|| t2.map(|t| t.clone().into_data().try_to_vec::<f32>().expect("f32")))
    };
    let report = |label: &str, outs: &[(String, Vec<f32>)]| {
        for (name, v) in outs {
            if let Some(r) = reference(name) {
                let e = r
                    .iter()
                    .zip(v)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                let scale = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                println!(
                    "  {label} {name}: max abs error vs Burn {e:.3e} (max |value| {scale:.3e})"
                );
            }
        }
    };
    report("fp32", &ort_out);
    match export_weights(&path, Elem::F16) {
        Ok(g16) => match ort_run(&g16.main) {
            Ok((s16, out16)) => {
                println!("fp16 graph: ort {s16:.4} s");
                report("fp16", &out16);
            }
            Err(e) => println!("fp16 graph does not run on this ONNX Runtime CPU build: {e}"),
        },
        Err(e) => println!("fp16 export failed: {e}"),
    }
    Ok(())
}
