//! Timing and memory measurements behind `vertebra-model bench`: forward latency, a training
//! step's forward + backward (surrogate loss over every output, no optimiser: the optimiser
//! belongs to the trainer and costs a few element-wise passes over the parameters), and the
//! process's peak resident set.

use std::time::Instant;

use burn::tensor::{Device, Distribution, Tensor};
use serde::Serialize;

use crate::Result;
use crate::blocks::roi_align::RoiBox;
use crate::config::VertebraFormerConfig;
use crate::model::{VertebraFormerInput, VertebraFormerOutput};

/// One benchmark result.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    /// Configuration label (preset / ablation).
    pub label: String,
    /// Parameters of the built network.
    pub params: usize,
    /// Median forward latency over the timed runs, seconds (batch 1).
    pub forward_s: f64,
    /// Median forward + backward time, seconds (batch 1), when measured.
    pub train_step_s: Option<f64>,
    /// Peak resident set of the process so far, bytes (`VmHWM`), when readable.
    pub peak_rss_bytes: Option<u64>,
}

/// Boxes for the identification head: `k` slabs stacked along z, centred in y and x.
pub fn column_boxes(window: [usize; 3], k: usize) -> Vec<RoiBox> {
    let [z, y, x] = window.map(|v| v as f32);
    let slab = z / k as f32;
    (0..k)
        .map(|i| RoiBox {
            batch: 0,
            min: [i as f32 * slab, y * 0.3, x * 0.3],
            max: [(i + 1) as f32 * slab, y * 0.7, x * 0.7],
        })
        .collect()
}

/// Sum of the squared means of every output: a loss that reaches every branch.
pub fn surrogate_loss(out: &VertebraFormerOutput) -> Tensor<1> {
    let sq = |t: Tensor<1>| t.powi_scalar(2);
    let mut loss = sq(out.vertebra_logit.clone().mean()) + sq(out.label_logits.clone().mean());
    for t in [
        &out.lesion_heatmap_logits,
        &out.lesion_offset,
        &out.lesion_log_size,
    ]
    .into_iter()
    .flatten()
    {
        loss = loss + sq(t.clone().mean());
    }
    for t in [
        &out.id_logits,
        &out.domain_logits,
        &out.domain_image_embedding,
    ]
    .into_iter()
    .flatten()
    {
        loss = loss + sq(t.clone().mean());
    }
    loss
}

/// Peak resident set size of this process (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `runs` forward passes (after one warm-up) and, if `train`, `runs` forward + backward
/// passes on an autodiff device, on the flex CPU backend.
///
/// # Errors
/// Any configuration or forward error.
pub fn run(
    config: &VertebraFormerConfig,
    label: &str,
    runs: usize,
    train: bool,
) -> Result<BenchReport> {
    use burn::module::Module;
    let runs = runs.max(1);
    let device = Device::flex();
    let model = config.init(&device)?;
    let params = model.num_params();
    let boxes = if config.identification_head {
        column_boxes(config.window, 5)
    } else {
        Vec::new()
    };
    let [z, y, x] = config.window;
    let input = |device: &Device| VertebraFormerInput {
        image: Tensor::random([1, 1, z, y, x], Distribution::Uniform(0.0, 1.0), device),
        boxes: boxes.clone(),
        domain_mix: None,
    };
    let sync = |out: &VertebraFormerOutput| {
        // Reading one value forces the lazy/async backend to finish the whole graph.
        let _ = out.label_logits.clone().sum().into_scalar::<f32>();
    };
    let mut times = Vec::with_capacity(runs);
    for i in 0..=runs {
        let inp = input(&device);
        let t = Instant::now();
        let out = model.forward(inp)?;
        sync(&out);
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let forward_s = median(times);
    let train_step_s = if train {
        let ad = device.autodiff();
        let model = config.init(&ad)?;
        let mut times = Vec::with_capacity(runs);
        for i in 0..=runs {
            let inp = input(&ad);
            let t = Instant::now();
            let out = model.forward(inp)?;
            let grads = surrogate_loss(&out).backward();
            drop(grads);
            if i > 0 {
                times.push(t.elapsed().as_secs_f64());
            }
        }
        Some(median(times))
    } else {
        None
    };
    Ok(BenchReport {
        label: label.to_owned(),
        params,
        forward_s,
        train_step_s,
        peak_rss_bytes: peak_rss_bytes(),
    })
}
