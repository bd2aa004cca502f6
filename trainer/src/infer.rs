//! Sliding-window inference of a [`VertebraFormer`] over a [`PreparedCase`], stitched onto the
//! prepared grid and post-processed by `vertebra_core::postprocess` (the appliance's code path).
//!
//! ## Windows
//! Windows have the contract's size and overlap by [`InferConfig::overlap`] (default 0.5):
//! the step is `⌊w (1 − overlap)⌋` rounded down to a multiple of the lesion stride `s` (at
//! least `s`), so every window's lesion grid falls on one global grid of stride `s`. The
//! stitched grid is the prepared grid padded at its far end to a multiple of `s` (and at least
//! one window); the last window along an axis ends exactly at that padded end. Voxels outside
//! the scan are fed as air (0.0, like the trainer's windows) and cut away after stitching.
//! **Region**: the whole volume for now — an appliance-scale case should first localise the
//! spine (a coarse pass) and restrict the windows to it; memory is 27 floats per voxel of
//! the padded grid for the dense accumulators.
//!
//! ## Blending (nnU-Net)
//! Each window's outputs are weighted by a separable Gaussian with σ = 1/8 of the window per
//! axis, centred on the window (peak 1, floored at 1e-6 so border voxels of the scan keep a
//! defined value), summed, and divided by the summed weights. Blended are the **logits** of
//! `vertebra_logit` and the 26 `label_logits` (as nnU-Net v2 does), and at stride `s` the
//! lesion heatmap logits, offsets and log-sizes with the same Gaussian on the cell grid
//! (offsets are comparable between windows because every window is aligned to the global
//! stride-`s` grid). The foreground probability is the sigmoid of the blended logit, the label
//! argmax that of the blended logits.
//!
//! ## Identification
//! When the network has an identification head and [`InferConfig::use_id_head`] is on, each
//! final instance gets one more forward pass on a window centred on its box (clamped to the
//! padded grid), with the instance's box in that window's voxel-edge coordinates (clipped to
//! the window): the softmax of its `id_logits` is the instance's probability row for the
//! anatomical-order decoding. Otherwise the label votes are used (see
//! `vertebra_core::postprocess::instances::VertebraInstance::vote_probabilities`).

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use vertebra_core::Volume;
use vertebra_core::contract::NUM_SEG_CLASSES;
use vertebra_core::postprocess::{
    CaseFindings, DenseOutputs, LesionMaps, PostprocessConfig, extract_instances, findings, softmax,
};
use vertebra_core::volume::ops::denormalize_hu_volume;
use vertebra_model::blocks::roi_align::RoiBox;
use vertebra_model::{VertebraFormer, VertebraFormerInput};

use crate::preprocess::PreparedCase;
use crate::{Error, Result};

/// Number of lesion regression channels (offset, log-size).
const REG: usize = 3;

/// Settings of [`infer_case`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InferConfig {
    /// Fraction of a window shared with its neighbour, in [0, 1).
    pub overlap: f64,
    /// Windows per forward pass.
    pub batch: usize,
    /// Use the identification head (when the network has one) instead of label votes.
    pub use_id_head: bool,
    /// Post-processing settings.
    pub postprocess: PostprocessConfig,
    /// Domain code fed to the dynamic modulation: an index into the model's domain list
    /// (a one-hot `domain_mix`), or `None` for the model's own domain classifier.
    pub domain_code: Option<usize>,
}

impl Default for InferConfig {
    fn default() -> Self {
        InferConfig {
            overlap: 0.5,
            batch: 2,
            use_id_head: true,
            domain_code: None,
            postprocess: PostprocessConfig::default(),
        }
    }
}

/// The stitched network outputs on the prepared grid.
#[derive(Debug, Clone, PartialEq)]
pub struct StitchedOutputs {
    /// Foreground probability and label argmax.
    pub dense: DenseOutputs,
    /// Lesion maps on the stride-`s` grid over the prepared grid (the padded far end
    /// included), if the network has a lesion head.
    pub lesions: Option<LesionMaps>,
    /// Number of windows evaluated.
    pub windows: usize,
}

/// The result of [`infer_case`].
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// Stitched outputs.
    pub outputs: StitchedOutputs,
    /// Post-processed findings.
    pub findings: CaseFindings,
    /// Identification-head probabilities per instance (cranio-caudal), if the head was used.
    pub id_head_probabilities: Option<Vec<Vec<f64>>>,
}

/// Window starts along one axis of padded length `padded` (a multiple of `align`, at least
/// `window`): `0, step, 2 step, …` and finally `padded − window`, deduplicated.
pub fn window_starts(padded: usize, window: usize, overlap: f64, align: usize) -> Vec<usize> {
    let align = align.max(1);
    let raw = (window as f64 * (1.0 - overlap.clamp(0.0, 0.99))).floor() as usize;
    let step = (raw / align * align).max(align);
    let last = padded.saturating_sub(window);
    let mut v: Vec<usize> = (0..last).step_by(step).collect();
    v.push(last);
    v
}

/// The blending weights of a window `(z, y, x)`, x fastest: a separable Gaussian with
/// σ = n/8 per axis centred at `(n − 1)/2`, peak 1, floored at 1e-6.
pub fn gaussian_weights(window: [usize; 3]) -> Vec<f32> {
    let axis = |n: usize| -> Vec<f64> {
        let c = (n as f64 - 1.0) / 2.0;
        let s = n as f64 / 8.0;
        (0..n)
            .map(|i| (-((i as f64 - c).powi(2)) / (2.0 * s * s)).exp())
            .collect()
    };
    let (gz, gy, gx) = (axis(window[0]), axis(window[1]), axis(window[2]));
    let mut w = Vec::with_capacity(window.iter().product());
    for z in &gz {
        for y in &gy {
            for x in &gx {
                w.push((z * y * x).max(1e-6) as f32);
            }
        }
    }
    w
}

/// Copies the window starting at voxel `(x0, y0, z0)` of `image` (air outside) in tensor
/// order.
fn cut_window(image: &Volume<f32>, start_xyz: [usize; 3], window_zyx: [usize; 3]) -> Vec<f32> {
    let [wz, wy, wx] = window_zyx;
    let [nx, ny, nz] = image.dims();
    let d = image.data();
    let mut out = vec![0.0f32; wz * wy * wx];
    for z in 0..wz {
        let gz = start_xyz[2] + z;
        if gz >= nz {
            break;
        }
        for y in 0..wy {
            let gy = start_xyz[1] + y;
            if gy >= ny {
                break;
            }
            let row = (z * wy + y) * wx;
            let src = gy * nx + gz * nx * ny;
            for x in 0..wx {
                let gx = start_xyz[0] + x;
                if gx >= nx {
                    break;
                }
                out[row + x] = d[src + gx];
            }
        }
    }
    out
}

fn to_vec(t: Tensor<5>) -> Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::InvalidArgument(format!("network output is not f32: {e:?}")))
}

/// Accumulates weighted channels of one window into a padded grid `(z, y, x)`.
struct Accumulator {
    grid: [usize; 3],
    channels: usize,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Accumulator {
    fn new(grid: [usize; 3], channels: usize) -> Self {
        let n: usize = grid.iter().product();
        Accumulator {
            grid,
            channels,
            sum: vec![0.0; n * channels],
            weight: vec![0.0; n],
        }
    }

    /// Adds `values` (`[channels, wz, wy, wx]`) of the window at `start` (z, y, x) with
    /// `weights` (`[wz, wy, wx]`).
    fn add(&mut self, values: &[f32], weights: &[f32], start: [usize; 3], window: [usize; 3]) {
        let [gz, gy, gx] = self.grid;
        let n = gz * gy * gx;
        let wn: usize = window.iter().product();
        for z in 0..window[0] {
            for y in 0..window[1] {
                let dst_row = ((start[0] + z) * gy + start[1] + y) * gx + start[2];
                let src_row = (z * window[1] + y) * window[2];
                for x in 0..window[2] {
                    let w = weights[src_row + x];
                    self.weight[dst_row + x] += w;
                    for c in 0..self.channels {
                        self.sum[c * n + dst_row + x] += w * values[c * wn + src_row + x];
                    }
                }
            }
        }
    }

    /// The weighted means, channel-major.
    fn finish(mut self) -> Vec<f32> {
        let n = self.weight.len();
        for c in 0..self.channels {
            for i in 0..n {
                let w = self.weight[i];
                self.sum[c * n + i] = if w > 0.0 {
                    self.sum[c * n + i] / w
                } else {
                    0.0
                };
            }
        }
        self.sum
    }
}

/// Runs the network over the case in overlapping windows and stitches the outputs onto the
/// prepared grid (see the module docs).
///
/// # Errors
/// An autodiff `device` (inference runs on a plain device), an overlap outside [0, 1), a
/// network error.
pub fn sliding_window(
    model: &VertebraFormer,
    case: &PreparedCase,
    device: &Device,
    config: &InferConfig,
) -> Result<StitchedOutputs> {
    stitch(&model.valid(), case, device, config)
}

/// [`sliding_window`] with a network already in validation mode.
fn stitch(
    model: &VertebraFormer,
    case: &PreparedCase,
    device: &Device,
    config: &InferConfig,
) -> Result<StitchedOutputs> {
    if device.is_autodiff() {
        return Err(Error::InvalidArgument(
            "inference runs on a plain (non-autodiff) device".into(),
        ));
    }
    if !(0.0..1.0).contains(&config.overlap) {
        return Err(Error::InvalidArgument(format!(
            "window overlap {} must be in [0, 1)",
            config.overlap
        )));
    }
    let window = model.window;
    let s = lesion_stride(model);
    let [nx, ny, nz] = case.image.dims();
    let n_zyx = [nz, ny, nx];
    let padded: [usize; 3] = std::array::from_fn(|a| (n_zyx[a].div_ceil(s) * s).max(window[a]));
    let starts: Vec<[usize; 3]> = {
        let per: [Vec<usize>; 3] =
            std::array::from_fn(|a| window_starts(padded[a], window[a], config.overlap, s));
        let mut v = Vec::new();
        for &z in &per[0] {
            for &y in &per[1] {
                for &x in &per[2] {
                    v.push([z, y, x]);
                }
            }
        }
        v
    };
    let weights = gaussian_weights(window);
    let cell_window = window.map(|w| w / s);
    let cell_weights = gaussian_weights(cell_window);
    let mut dense = Accumulator::new(padded, 1 + NUM_SEG_CLASSES);
    let lesion_grid = padded.map(|p| p / s);
    let mut lesion = model
        .lesion
        .as_ref()
        .map(|_| Accumulator::new(lesion_grid, 4 + 2 * REG));
    let wn: usize = window.iter().product();
    for chunk in starts.chunks(config.batch.max(1)) {
        let b = chunk.len();
        let mut image = Vec::with_capacity(b * wn);
        for st in chunk {
            image.extend(cut_window(&case.image, [st[2], st[1], st[0]], window));
        }
        let t = Tensor::<5>::from_data(
            TensorData::new(image, [b, 1, window[0], window[1], window[2]]),
            device,
        );
        let out = model.forward(VertebraFormerInput {
            image: t,
            boxes: Vec::new(),
            domain_mix: domain_mix(model, config.domain_code, b, device)?,
        })?;
        let fg = to_vec(out.vertebra_logit)?;
        let lab = to_vec(out.label_logits)?;
        let les = match (
            out.lesion_heatmap_logits,
            out.lesion_offset,
            out.lesion_log_size,
        ) {
            (Some(h), Some(o), Some(l)) => Some((to_vec(h)?, to_vec(o)?, to_vec(l)?)),
            _ => None,
        };
        let cn: usize = cell_window.iter().product();
        for (k, st) in chunk.iter().enumerate() {
            let mut v = Vec::with_capacity((1 + NUM_SEG_CLASSES) * wn);
            v.extend_from_slice(&fg[k * wn..(k + 1) * wn]);
            v.extend_from_slice(&lab[k * NUM_SEG_CLASSES * wn..(k + 1) * NUM_SEG_CLASSES * wn]);
            dense.add(&v, &weights, *st, window);
            if let (Some(acc), Some((h, o, l))) = (lesion.as_mut(), les.as_ref()) {
                let mut v = Vec::with_capacity((4 + 2 * REG) * cn);
                v.extend_from_slice(&h[k * 4 * cn..(k + 1) * 4 * cn]);
                v.extend_from_slice(&o[k * REG * cn..(k + 1) * REG * cn]);
                v.extend_from_slice(&l[k * REG * cn..(k + 1) * REG * cn]);
                acc.add(&v, &cell_weights, st.map(|x| x / s), cell_window);
            }
        }
    }
    let blended = dense.finish();
    let pn: usize = padded.iter().product();
    let geometry = *case.image.geometry();
    let mut prob = Vec::with_capacity(nx * ny * nz);
    let mut argmax = Vec::with_capacity(nx * ny * nz);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let i = (z * padded[1] + y) * padded[2] + x;
                let logit = blended[i];
                prob.push(1.0 / (1.0 + (-logit).exp()));
                let mut best = (0u8, f32::NEG_INFINITY);
                for c in 0..NUM_SEG_CLASSES {
                    let v = blended[(1 + c) * pn + i];
                    if v > best.1 {
                        best = (c as u8, v);
                    }
                }
                argmax.push(best.0);
            }
        }
    }
    let dims = [nx, ny, nz];
    let dense = DenseOutputs {
        foreground_prob: Volume::from_vec(dims, prob, geometry)?,
        label_argmax: Volume::from_vec(dims, argmax, geometry)?,
    };
    let lesions = lesion.map(|acc| {
        let cells: usize = lesion_grid.iter().product();
        let v = acc.finish();
        LesionMaps {
            stride: s,
            grid: lesion_grid,
            heatmap_logits: v[..4 * cells].to_vec(),
            offset: v[4 * cells..(4 + REG) * cells].to_vec(),
            log_size: v[(4 + REG) * cells..].to_vec(),
        }
    });
    Ok(StitchedOutputs {
        dense,
        lesions,
        windows: starts.len(),
    })
}

/// The lesion stride of a network: the window over the lesion level's size (1 without a
/// lesion head).
fn lesion_stride(model: &VertebraFormer) -> usize {
    // Decoder stages are at 1/8, 1/4, 1/2, 1/1 (see vertebra_model::model).
    1usize << (3 - model.lesion_level.min(3))
}

/// The `domain_mix` input for `batch` windows under `code` (see [`InferConfig::domain_code`]).
fn domain_mix(
    model: &VertebraFormer,
    code: Option<usize>,
    batch: usize,
    device: &Device,
) -> Result<Option<Tensor<2>>> {
    let Some(d) = code else { return Ok(None) };
    let n = model
        .domain
        .as_ref()
        .map(|g| g.prototypes.val().dims()[0])
        .ok_or_else(|| {
            Error::InvalidArgument(
                "a domain code was given but the network has no dynamic modulation".into(),
            )
        })?;
    if d >= n {
        return Err(Error::InvalidArgument(format!(
            "domain code {d} outside the network's {n} domains"
        )));
    }
    let mut v = vec![0.0f32; batch * n];
    for row in v.chunks_mut(n) {
        row[d] = 1.0;
    }
    Ok(Some(Tensor::from_data(
        TensorData::new(v, [batch, n]),
        device,
    )))
}

/// Identification-head probabilities of every instance (see the module docs).
fn id_head_probabilities(
    model: &VertebraFormer,
    case: &PreparedCase,
    instances: &vertebra_core::postprocess::Instances,
    device: &Device,
    domain_code: Option<usize>,
) -> Result<Vec<Vec<f64>>> {
    let window = model.window;
    let [nx, ny, nz] = case.image.dims();
    let n_zyx = [nz, ny, nx];
    let mut out = Vec::with_capacity(instances.instances.len());
    for inst in &instances.instances {
        let (lo, hi) = inst.edge_box_zyx();
        let start: [usize; 3] = std::array::from_fn(|a| {
            let centre = f64::from(lo[a] + hi[a]) / 2.0;
            let s = (centre - window[a] as f64 / 2.0).round().max(0.0) as usize;
            s.min(n_zyx[a].saturating_sub(window[a]))
        });
        let image = cut_window(&case.image, [start[2], start[1], start[0]], window);
        let t = Tensor::<5>::from_data(
            TensorData::new(image, [1, 1, window[0], window[1], window[2]]),
            device,
        );
        let clip = |v: f32, a: usize| (v - start[a] as f32).clamp(0.0, window[a] as f32);
        let b = RoiBox {
            batch: 0,
            min: std::array::from_fn(|a| clip(lo[a], a)),
            max: std::array::from_fn(|a| clip(hi[a], a)),
        };
        let input = VertebraFormerInput {
            image: t,
            boxes: vec![b],
            domain_mix: domain_mix(model, domain_code, 1, device)?,
        };
        let logits = model
            .forward(input)?
            .id_logits
            .ok_or_else(|| Error::InvalidArgument("the network gave no id_logits".into()))?;
        let row = logits
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::InvalidArgument(format!("id_logits are not f32: {e:?}")))?;
        out.push(softmax(&row));
    }
    Ok(out)
}

/// Sliding-window inference and post-processing of one case (see the module docs). The
/// core density uses the prepared image mapped back to HU (clipped to the HU window).
///
/// # Errors
/// As [`sliding_window`]; post-processing errors.
pub fn infer_case(
    model: &VertebraFormer,
    case: &PreparedCase,
    device: &Device,
    config: &InferConfig,
) -> Result<Inference> {
    let model = model.valid();
    let outputs = stitch(&model, case, device, config)?;
    let instances = extract_instances(
        &outputs.dense.foreground_prob,
        &outputs.dense.label_argmax,
        &config.postprocess.instances,
    )?;
    let id = if config.use_id_head && model.identification.is_some() {
        Some(id_head_probabilities(
            &model,
            case,
            &instances,
            device,
            config.domain_code,
        )?)
    } else {
        None
    };
    let hu = denormalize_hu_volume(&case.image)?;
    let findings = findings(
        instances,
        id.as_deref(),
        outputs.lesions.as_ref(),
        Some(&hu),
        &config.postprocess,
    )?;
    Ok(Inference {
        outputs,
        findings,
        id_head_probabilities: id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_starts_cover_the_padded_axis_on_the_stride_grid() {
        // 32-voxel windows, overlap 0.5 → step 16; padded 80 → 0, 16, 32, 48.
        assert_eq!(window_starts(80, 32, 0.5, 4), vec![0, 16, 32, 48]);
        // Step 0.4 · 32 = 12.8 → 12 → multiple of 8: 8; last = 44 − 32 = 12.
        assert_eq!(window_starts(44, 32, 0.6, 8), vec![0, 8, 12]);
        assert_eq!(window_starts(32, 32, 0.5, 4), vec![0]);
    }

    #[test]
    fn gaussian_is_nnunet_like() {
        let w = gaussian_weights([8, 8, 8]);
        assert_eq!(w.len(), 512);
        // Centre (3.5) is not a voxel: the four central voxels per axis are exp(-0.25/2/1).
        let c = (-0.125f64).exp().powi(3) as f32;
        let idx = |z: usize, y: usize, x: usize| (z * 8 + y) * 8 + x;
        assert!((w[idx(3, 4, 3)] - c).abs() < 1e-6);
        // Corner: d = 3.5 per axis, σ = 1 → exp(-6.125) per axis.
        let corner = (-6.125f64 * 3.0).exp().max(1e-6) as f32;
        assert!((w[idx(0, 0, 0)] - corner).abs() < 1e-9);
        assert!(w.iter().all(|&v| v > 0.0 && v <= 1.0));
    }

    #[test]
    fn blending_is_the_weighted_mean() {
        // Two windows of 2 voxels along x on a 3-voxel row overlap at x = 1.
        let mut acc = Accumulator::new([1, 1, 3], 1);
        acc.add(&[1.0, 1.0], &[1.0, 3.0], [0, 0, 0], [1, 1, 2]);
        acc.add(&[5.0, 5.0], &[1.0, 1.0], [0, 0, 1], [1, 1, 2]);
        let v = acc.finish();
        assert_eq!(v, vec![1.0, (3.0 + 5.0) / 4.0, 5.0]);
    }

    #[test]
    fn windows_outside_the_scan_are_air() {
        let g = vertebra_core::Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let img = Volume::from_vec([4, 3, 2], data, g).unwrap();
        // Window (z 2, y 2, x 2) at x 3, y 2, z 1: only voxel (3, 2, 1) = 3 + 4·2 + 12 = 23.
        let w = cut_window(&img, [3, 2, 1], [2, 2, 2]);
        assert_eq!(w, vec![23.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }
}
