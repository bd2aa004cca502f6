//! Overlapping windows over a prepared volume, Gaussian blending, and the identification
//! windows: the sliding-window half of inference that does not depend on how the network runs
//! (Burn in the trainer, ONNX Runtime in the appliance).
//!
//! ## Windows
//! Windows have the contract's size and overlap by a fraction `overlap` (default 0.5): the
//! step is `⌊w (1 − overlap)⌋` rounded down to a multiple of the lesion stride `s` (at least
//! `s`), so every window's lesion grid falls on one global grid of stride `s`.
//!
//! The **padded grid** is the prepared grid padded at its far end to a multiple of `s` (and at
//! least one window). Windows cover a **region** of it ([`WindowPlan::new`]): the whole padded
//! grid, or a box around the spine found by [`super::localize`]; the region starts on the
//! stride grid, is at least one window, and the last window along an axis ends exactly at the
//! region's end. Voxels outside the scan are fed as air (0.0, as the trainer's windows are).
//!
//! ## Blending (nnU-Net)
//! Each window's outputs are weighted by a separable Gaussian with σ = 1/8 of the window per
//! axis, centred on the window (peak 1, floored at 1e-6 so border voxels keep a defined
//! value), summed, and divided by the summed weights. Blended are the **logits** of
//! `vertebra_logit` and the 26 `label_logits` (as nnU-Net v2 does), and at stride `s` the lesion
//! heatmap logits, offsets and log-sizes with the same Gaussian on the cell grid. The
//! foreground probability is the sigmoid of the blended logit, the label the argmax of the
//! blended logits. Voxels no window covered (outside the region) are background: probability
//! 0, label 0, lesion heatmap logit [`UNCOVERED_LOGIT`].
//!
//! Memory: the dense accumulators hold 28 floats per voxel of the **region** only, so a
//! localised region keeps a large field of view cheap.
//!
//! ## Identification windows
//! Each final instance gets one more forward pass on a window centred on its box, clamped to
//! the prepared grid ([`id_window`]), with the instance's box in that window's voxel-edge
//! coordinates (clipped to the window).

use crate::contract::NUM_SEG_CLASSES;
use crate::postprocess::{DenseOutputs, LesionMaps};
use crate::{Error, Result, Volume};

/// Number of lesion classes (heatmap channels).
pub const LESION_CHANNELS: usize = 4;
/// Number of lesion regression channels (offset, log-size).
pub const REGRESSION_CHANNELS: usize = 3;
/// Lesion heatmap logit written where no window looked (sigmoid ≈ 1e-13: never a peak).
pub const UNCOVERED_LOGIT: f32 = -30.0;

/// A box of voxels `[lo, hi)` in volume order `(x, y, z)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VoxelRegion {
    /// First voxel.
    pub lo: [usize; 3],
    /// One past the last voxel.
    pub hi: [usize; 3],
}

impl VoxelRegion {
    /// The whole volume of `dims`.
    pub fn whole(dims: [usize; 3]) -> Self {
        Self {
            lo: [0; 3],
            hi: dims,
        }
    }

    /// Voxels in the box.
    pub fn voxels(&self) -> usize {
        (0..3)
            .map(|a| self.hi[a].saturating_sub(self.lo[a]))
            .product()
    }
}

/// Window starts along one axis of length `len` (a multiple of `align`, at least `window`):
/// `0, step, 2 step, …` and finally `len − window`, deduplicated.
pub fn window_starts(len: usize, window: usize, overlap: f64, align: usize) -> Vec<usize> {
    let align = align.max(1);
    let raw = (window as f64 * (1.0 - overlap.clamp(0.0, 0.99))).floor() as usize;
    let step = (raw / align * align).max(align);
    let last = len.saturating_sub(window);
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

/// Copies the window starting at voxel `start_xyz` of `image` (0.0 = air outside) in tensor
/// order `(z, y, x)`.
pub fn cut_window(image: &Volume<f32>, start_xyz: [usize; 3], window_zyx: [usize; 3]) -> Vec<f32> {
    let mut out = vec![0.0f32; window_zyx.iter().product()];
    cut_window_into(image, start_xyz, window_zyx, &mut out);
    out
}

/// [`cut_window`] into a buffer of the window's length (overwritten entirely).
fn cut_window_into(
    image: &Volume<f32>,
    start_xyz: [usize; 3],
    window_zyx: [usize; 3],
    out: &mut [f32],
) {
    let [wz, wy, wx] = window_zyx;
    let [nx, ny, nz] = image.dims();
    let d = image.data();
    out.fill(0.0);
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
            let n = wx.min(nx.saturating_sub(start_xyz[0]));
            out[row..row + n].copy_from_slice(&d[src + start_xyz[0]..src + start_xyz[0] + n]);
        }
    }
}

/// The windows of one case: see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowPlan {
    /// Window `(z, y, x)` in voxels.
    pub window: [usize; 3],
    /// Lesion stride `s`.
    pub stride: usize,
    /// Prepared grid `(z, y, x)`.
    pub dims: [usize; 3],
    /// Padded grid `(z, y, x)`: a multiple of `s`, at least one window.
    pub padded: [usize; 3],
    /// Covered region `(z, y, x)`: first voxel (a multiple of `s`).
    pub region_lo: [usize; 3],
    /// Covered region `(z, y, x)`: size (a multiple of `s`, at least one window).
    pub region_size: [usize; 3],
    /// Window starts `(z, y, x)` on the padded grid.
    pub starts: Vec<[usize; 3]>,
}

impl WindowPlan {
    /// Plans windows of `window` (`(z, y, x)`) with lesion stride `stride` over a prepared
    /// grid of `dims` (`(x, y, z)`), covering `region` (volume order, clipped to the grid; the
    /// whole grid when `None`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an overlap outside [0, 1), a zero window or stride, a
    /// window that is not a multiple of the stride, an empty grid or region.
    pub fn new(
        dims: [usize; 3],
        window: [usize; 3],
        stride: usize,
        overlap: f64,
        region: Option<VoxelRegion>,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&overlap) {
            return Err(Error::InvalidArgument(format!(
                "window overlap {overlap} must be in [0, 1)"
            )));
        }
        if stride == 0 || window.iter().any(|&w| w == 0 || w % stride != 0) {
            return Err(Error::InvalidArgument(format!(
                "window {window:?} must be positive multiples of the lesion stride {stride}"
            )));
        }
        if dims.contains(&0) {
            return Err(Error::InvalidArgument(format!("empty grid {dims:?}")));
        }
        let s = stride;
        let dims_zyx = [dims[2], dims[1], dims[0]];
        let padded: [usize; 3] =
            std::array::from_fn(|a| (dims_zyx[a].div_ceil(s) * s).max(window[a]));
        let region = region.unwrap_or(VoxelRegion::whole(dims));
        let (lo_xyz, hi_xyz) = (region.lo, region.hi.map(|h| h.max(1)));
        let mut region_lo = [0; 3];
        let mut region_size = [0; 3];
        for a in 0..3 {
            let va = 2 - a;
            let lo = lo_xyz[va].min(dims_zyx[a]);
            let hi = hi_xyz[va].min(dims_zyx[a]);
            if hi <= lo {
                return Err(Error::InvalidArgument(format!(
                    "empty region {region:?} on grid {dims:?}"
                )));
            }
            // Aligned to the stride, at least one window, centred on the requested box when a
            // window is larger, and inside the padded grid.
            let lo_aligned = lo / s * s;
            let size = ((hi - lo_aligned).div_ceil(s) * s).max(window[a]);
            let centre = lo.midpoint(hi);
            let want = centre.saturating_sub(size / 2) / s * s;
            let mut start = if size > hi - lo_aligned {
                want
            } else {
                lo_aligned
            };
            if start + size < hi {
                start = (hi - size).div_ceil(s) * s;
            }
            let start = start.min(padded[a] - size.min(padded[a]));
            region_lo[a] = start;
            region_size[a] = size.min(padded[a]);
        }
        let per: [Vec<usize>; 3] = std::array::from_fn(|a| {
            window_starts(region_size[a], window[a], overlap, s)
                .into_iter()
                .map(|x| x + region_lo[a])
                .collect()
        });
        let mut starts = Vec::with_capacity(per.iter().map(Vec::len).product());
        for &z in &per[0] {
            for &y in &per[1] {
                for &x in &per[2] {
                    starts.push([z, y, x]);
                }
            }
        }
        Ok(Self {
            window,
            stride,
            dims: dims_zyx,
            padded,
            region_lo,
            region_size,
            starts,
        })
    }

    /// Voxels per window.
    pub fn window_voxels(&self) -> usize {
        self.window.iter().product()
    }

    /// The lesion grid `(z, y, x)`: the padded grid over the stride.
    pub fn lesion_grid(&self) -> [usize; 3] {
        self.padded.map(|p| p / self.stride)
    }
}

/// What the network gives for a batch of `b` windows, channel-major per window, tensor order:
/// the contract's `vertebra_logit` `[b, 1, w…]`, `label_logits` `[b, 26, w…]`, and with a lesion
/// head `lesion_heatmap_logits` `[b, 4, c…]`, `lesion_offset` and `lesion_log_size`
/// `[b, 3, c…]` (`c = w / s`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WindowOutputs {
    /// `vertebra_logit`.
    pub vertebra_logit: Vec<f32>,
    /// `label_logits`.
    pub label_logits: Vec<f32>,
    /// `(lesion_heatmap_logits, lesion_offset, lesion_log_size)`, if the network has a lesion
    /// head.
    pub lesion: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
}

/// The stitched network outputs on the prepared grid.
#[derive(Debug, Clone, PartialEq)]
pub struct StitchedOutputs {
    /// Foreground probability and label argmax.
    pub dense: DenseOutputs,
    /// Lesion maps on the stride-`s` grid over the padded grid, if the network has a lesion
    /// head.
    pub lesions: Option<LesionMaps>,
    /// Number of windows evaluated.
    pub windows: usize,
    /// The region the windows covered.
    pub region: VoxelRegion,
}

/// Accumulates weighted channels of windows into a grid `(z, y, x)` at an origin.
struct Accumulator {
    origin: [usize; 3],
    grid: [usize; 3],
    channels: usize,
    sum: Vec<f32>,
    weight: Vec<f32>,
}

impl Accumulator {
    fn new(origin: [usize; 3], grid: [usize; 3], channels: usize) -> Self {
        let n: usize = grid.iter().product();
        Accumulator {
            origin,
            grid,
            channels,
            sum: vec![0.0; n * channels],
            weight: vec![0.0; n],
        }
    }

    /// Adds `values` (`[channels, wz, wy, wx]`) of the window at global `start` (z, y, x) with
    /// `weights` (`[wz, wy, wx]`).
    fn add(&mut self, values: &[f32], weights: &[f32], start: [usize; 3], window: [usize; 3]) {
        let [_, gy, gx] = self.grid;
        let n = self.weight.len();
        let wn: usize = window.iter().product();
        let s: [usize; 3] = std::array::from_fn(|a| start[a] - self.origin[a]);
        for z in 0..window[0] {
            for y in 0..window[1] {
                let dst_row = ((s[0] + z) * gy + s[1] + y) * gx + s[2];
                let src_row = (z * window[1] + y) * window[2];
                for x in 0..window[2] {
                    self.weight[dst_row + x] += weights[src_row + x];
                }
                for c in 0..self.channels {
                    let dst = &mut self.sum[c * n + dst_row..c * n + dst_row + window[2]];
                    let src = &values[c * wn + src_row..c * wn + src_row + window[2]];
                    let w = &weights[src_row..src_row + window[2]];
                    for ((d, v), w) in dst.iter_mut().zip(src).zip(w) {
                        *d += w * v;
                    }
                }
            }
        }
    }

    /// The weighted means, channel-major; voxels without weight get `empty[c]`.
    fn finish(mut self, empty: impl Fn(usize) -> f32) -> Vec<f32> {
        let n = self.weight.len();
        for c in 0..self.channels {
            let e = empty(c);
            for i in 0..n {
                let w = self.weight[i];
                self.sum[c * n + i] = if w > 0.0 { self.sum[c * n + i] / w } else { e };
            }
        }
        self.sum
    }
}

fn check_len(what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "network output {what} has {got} values, expected {want}"
        )))
    }
}

/// Runs `forward` over the windows of `plan` in batches of `batch` and stitches the outputs
/// onto the prepared grid of `image` (see the module docs). `forward` receives the windows
/// `[b, 1, wz, wy, wx]` and `b`; it must return [`WindowOutputs`] for exactly `b` windows
/// (lesion maps for every batch or for none).
///
/// # Errors
/// The first error of `forward`; [`Error::InvalidArgument`] (converted) for outputs of the
/// wrong length or a plan made for another grid.
pub fn stitch<E: From<Error>>(
    image: &Volume<f32>,
    plan: &WindowPlan,
    batch: usize,
    mut forward: impl FnMut(&[f32], usize) -> std::result::Result<WindowOutputs, E>,
) -> std::result::Result<StitchedOutputs, E> {
    let [nx, ny, nz] = image.dims();
    if plan.dims != [nz, ny, nx] {
        return Err(Error::InvalidArgument(format!(
            "window plan for grid {:?} used on a volume of {:?}",
            plan.dims,
            image.dims()
        ))
        .into());
    }
    let window = plan.window;
    let s = plan.stride;
    let weights = gaussian_weights(window);
    let cell_window = window.map(|w| w / s);
    let cell_weights = gaussian_weights(cell_window);
    let wn = plan.window_voxels();
    let cn: usize = cell_window.iter().product();
    let mut dense = Accumulator::new(plan.region_lo, plan.region_size, 1 + NUM_SEG_CLASSES);
    let lesion_grid = plan.lesion_grid();
    let mut lesion: Option<Accumulator> = None;
    let mut seen_lesions: Option<bool> = None;
    let mut input = Vec::new();
    for chunk in plan.starts.chunks(batch.max(1)) {
        let b = chunk.len();
        input.resize(b * wn, 0.0);
        for (k, st) in chunk.iter().enumerate() {
            cut_window_into(
                image,
                [st[2], st[1], st[0]],
                window,
                &mut input[k * wn..(k + 1) * wn],
            );
        }
        let out = forward(&input, b)?;
        check_len("vertebra_logit", out.vertebra_logit.len(), b * wn)?;
        check_len(
            "label_logits",
            out.label_logits.len(),
            b * NUM_SEG_CLASSES * wn,
        )?;
        if *seen_lesions.get_or_insert(out.lesion.is_some()) != out.lesion.is_some() {
            return Err(Error::InvalidArgument(
                "lesion outputs present for some windows and not for others".into(),
            )
            .into());
        }
        if let Some((h, o, l)) = &out.lesion {
            check_len("lesion_heatmap_logits", h.len(), b * LESION_CHANNELS * cn)?;
            check_len("lesion_offset", o.len(), b * REGRESSION_CHANNELS * cn)?;
            check_len("lesion_log_size", l.len(), b * REGRESSION_CHANNELS * cn)?;
        }
        let mut v = Vec::with_capacity((1 + NUM_SEG_CLASSES) * wn);
        for (k, st) in chunk.iter().enumerate() {
            v.clear();
            v.extend_from_slice(&out.vertebra_logit[k * wn..(k + 1) * wn]);
            v.extend_from_slice(
                &out.label_logits[k * NUM_SEG_CLASSES * wn..(k + 1) * NUM_SEG_CLASSES * wn],
            );
            dense.add(&v, &weights, *st, window);
            if let Some((h, o, l)) = out.lesion.as_ref() {
                let acc = lesion.get_or_insert_with(|| {
                    Accumulator::new(
                        [0; 3],
                        lesion_grid,
                        LESION_CHANNELS + 2 * REGRESSION_CHANNELS,
                    )
                });
                let (lc, rc) = (LESION_CHANNELS, REGRESSION_CHANNELS);
                let mut v = Vec::with_capacity((lc + 2 * rc) * cn);
                v.extend_from_slice(&h[k * lc * cn..(k + 1) * lc * cn]);
                v.extend_from_slice(&o[k * rc * cn..(k + 1) * rc * cn]);
                v.extend_from_slice(&l[k * rc * cn..(k + 1) * rc * cn]);
                acc.add(&v, &cell_weights, st.map(|x| x / s), cell_window);
            }
        }
    }
    let rs = plan.region_size;
    let ro = plan.region_lo;
    let rn: usize = rs.iter().product();
    let blended = dense.finish(|c| if c == 0 { f32::NEG_INFINITY } else { 0.0 });
    let geometry = *image.geometry();
    let mut prob = vec![0.0f32; nx * ny * nz];
    let mut argmax = vec![0u8; nx * ny * nz];
    for z in ro[0]..(ro[0] + rs[0]).min(nz) {
        for y in ro[1]..(ro[1] + rs[1]).min(ny) {
            for x in ro[2]..(ro[2] + rs[2]).min(nx) {
                let i = ((z - ro[0]) * rs[1] + y - ro[1]) * rs[2] + x - ro[2];
                let o = x + nx * (y + ny * z);
                let logit = blended[i];
                if logit == f32::NEG_INFINITY {
                    continue;
                }
                prob[o] = 1.0 / (1.0 + (-logit).exp());
                let mut best = (0u8, f32::NEG_INFINITY);
                for c in 0..NUM_SEG_CLASSES {
                    let v = blended[(1 + c) * rn + i];
                    if v > best.1 {
                        best = (c as u8, v);
                    }
                }
                argmax[o] = best.0;
            }
        }
    }
    let dims = [nx, ny, nz];
    let dense = DenseOutputs {
        foreground_prob: Volume::from_vec(dims, prob, geometry).map_err(E::from)?,
        label_argmax: Volume::from_vec(dims, argmax, geometry).map_err(E::from)?,
    };
    let lesions = lesion.map(|acc| {
        let cells: usize = lesion_grid.iter().product();
        let v = acc.finish(|c| {
            if c < LESION_CHANNELS {
                UNCOVERED_LOGIT
            } else {
                0.0
            }
        });
        let (lc, rc) = (LESION_CHANNELS, REGRESSION_CHANNELS);
        LesionMaps {
            stride: s,
            grid: lesion_grid,
            heatmap_logits: v[..lc * cells].to_vec(),
            offset: v[lc * cells..(lc + rc) * cells].to_vec(),
            log_size: v[(lc + rc) * cells..].to_vec(),
        }
    });
    let region = VoxelRegion {
        lo: [ro[2], ro[1], ro[0]],
        hi: [
            (ro[2] + rs[2]).min(nx),
            (ro[1] + rs[1]).min(ny),
            (ro[0] + rs[0]).min(nz),
        ],
    };
    Ok(StitchedOutputs {
        dense,
        lesions,
        windows: plan.starts.len(),
        region,
    })
}

/// The identification window of one instance: where to cut it and the instance's box in it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IdWindow {
    /// Window start `(x, y, z)` on the prepared grid (for [`cut_window`]).
    pub start_xyz: [usize; 3],
    /// Box lower corner `(z, y, x)`, voxel-edge coordinates in the window.
    pub min: [f32; 3],
    /// Box upper corner `(z, y, x)`.
    pub max: [f32; 3],
}

/// The window centred on an instance box `(lo, hi)` (voxel-edge, `(z, y, x)`), clamped to a
/// prepared grid `dims` (`(x, y, z)`), and the box in it (clipped to the window).
pub fn id_window(lo: [f32; 3], hi: [f32; 3], dims: [usize; 3], window: [usize; 3]) -> IdWindow {
    let n_zyx = [dims[2], dims[1], dims[0]];
    let start: [usize; 3] = std::array::from_fn(|a| {
        let centre = f64::from(lo[a] + hi[a]) / 2.0;
        let s = (centre - window[a] as f64 / 2.0).round().max(0.0) as usize;
        s.min(n_zyx[a].saturating_sub(window[a]))
    });
    let clip = |v: f32, a: usize| (v - start[a] as f32).clamp(0.0, window[a] as f32);
    IdWindow {
        start_xyz: [start[2], start[1], start[0]],
        min: std::array::from_fn(|a| clip(lo[a], a)),
        max: std::array::from_fn(|a| clip(hi[a], a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;

    #[test]
    fn window_starts_cover_the_axis_on_the_stride_grid() {
        // 32-voxel windows, overlap 0.5 → step 16; 80 → 0, 16, 32, 48.
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
        let mut acc = Accumulator::new([0; 3], [1, 1, 3], 1);
        acc.add(&[1.0, 1.0], &[1.0, 3.0], [0, 0, 0], [1, 1, 2]);
        acc.add(&[5.0, 5.0], &[1.0, 1.0], [0, 0, 1], [1, 1, 2]);
        let v = acc.finish(|_| -1.0);
        assert_eq!(v, vec![1.0, (3.0 + 5.0) / 4.0, 5.0]);
        // An accumulator at an origin takes global starts; uncovered voxels get `empty`.
        let mut acc = Accumulator::new([0, 0, 4], [1, 1, 3], 1);
        acc.add(&[2.0], &[1.0], [0, 0, 5], [1, 1, 1]);
        assert_eq!(acc.finish(|_| -1.0), vec![-1.0, 2.0, -1.0]);
    }

    #[test]
    fn windows_outside_the_scan_are_air() {
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        let data: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let img = Volume::from_vec([4, 3, 2], data, g).unwrap();
        // Window (z 2, y 2, x 2) at x 3, y 2, z 1: only voxel (3, 2, 1) = 3 + 4·2 + 12 = 23.
        let w = cut_window(&img, [3, 2, 1], [2, 2, 2]);
        assert_eq!(w, vec![23.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    }

    #[test]
    fn whole_volume_plan_is_the_padded_grid() {
        // x 70, y 40, z 20 with 32³ windows, stride 4: padded (z 32, y 40, x 72).
        let p = WindowPlan::new([70, 40, 20], [32; 3], 4, 0.5, None).unwrap();
        assert_eq!(p.padded, [32, 40, 72]);
        assert_eq!(p.region_lo, [0; 3]);
        assert_eq!(p.region_size, p.padded);
        // z: [0]; y: 0, 8 (40 − 32); x: 0, 16, 32, 40.
        assert_eq!(p.starts.len(), 2 * 4);
        assert_eq!(p.lesion_grid(), [8, 10, 18]);
    }

    #[test]
    fn a_region_restricts_windows_and_stays_on_the_stride_grid() {
        let dims = [200, 200, 100];
        let whole = WindowPlan::new(dims, [32; 3], 4, 0.5, None).unwrap();
        let r = VoxelRegion {
            lo: [90, 101, 0],
            hi: [110, 150, 100],
        };
        let p = WindowPlan::new(dims, [32; 3], 4, 0.5, Some(r)).unwrap();
        assert!(
            p.starts.len() < whole.starts.len() / 10,
            "{}",
            p.starts.len()
        );
        for a in 0..3 {
            assert_eq!(p.region_lo[a] % 4, 0);
            assert_eq!(p.region_size[a] % 4, 0);
            assert!(p.region_size[a] >= 32);
            assert!(p.region_lo[a] + p.region_size[a] <= p.padded[a]);
        }
        // Every requested voxel is covered by some window.
        let covers = |v: [usize; 3]| {
            p.starts
                .iter()
                .any(|s| (0..3).all(|a| v[a] >= s[a] && v[a] < s[a] + 32))
        };
        for (z, y, x) in [(0, 101, 90), (99, 149, 109), (50, 120, 100)] {
            assert!(covers([z, y, x]), "({z}, {y}, {x})");
        }
        // x: the 20-voxel box is widened to one window centred on it: 100 − 16 = 84.
        assert_eq!(p.region_lo[2], 84);
    }

    #[test]
    fn stitching_identity_logits_reproduces_the_input_inside_the_region() {
        // A network whose vertebra logit is the input and whose label logits favour class 1
        // where the input is positive: stitched probability = sigmoid(input) inside the region
        // and 0 outside.
        let g = Geometry::axis_aligned([2.0; 3], [0.0; 3]);
        let dims = [40, 24, 16];
        let n: usize = dims.iter().product();
        let data: Vec<f32> = (0..n).map(|i| ((i % 7) as f32) - 3.0).collect();
        let img = Volume::from_vec(dims, data, g).unwrap();
        let region = VoxelRegion {
            lo: [20, 0, 0],
            hi: [40, 24, 16],
        };
        let plan = WindowPlan::new(dims, [8; 3], 4, 0.5, Some(region)).unwrap();
        let wn = 512;
        let out = stitch::<Error>(&img, &plan, 3, |x, b| {
            let mut labels = vec![0.0; b * NUM_SEG_CLASSES * wn];
            for k in 0..b {
                for i in 0..wn {
                    labels[(k * NUM_SEG_CLASSES + 1) * wn + i] = x[k * wn + i];
                }
            }
            Ok(WindowOutputs {
                vertebra_logit: x.to_vec(),
                label_logits: labels,
                lesion: None,
            })
        })
        .unwrap();
        assert_eq!(out.windows, plan.starts.len());
        let p = out.dense.foreground_prob.data();
        let l = out.dense.label_argmax.data();
        for z in 0..16 {
            for y in 0..24 {
                for x in 0..40 {
                    let i = img.index(x, y, z);
                    let inside = x >= out.region.lo[0];
                    let v = img.data()[i];
                    if inside {
                        let want = 1.0 / (1.0 + (-v).exp());
                        assert!((p[i] - want).abs() < 1e-5, "({x},{y},{z})");
                        assert_eq!(l[i], u8::from(v > 0.0));
                    } else {
                        assert_eq!((p[i], l[i]), (0.0, 0));
                    }
                }
            }
        }
        assert!(out.region.lo[0] <= 20 && out.region.lo[0] > 0);
    }

    #[test]
    fn id_window_centres_and_clips() {
        // Box z 10..20 on a 100-slice grid with 32-voxel windows: start round(15 − 16) = 0
        // (clamped), box unchanged; x box 90..100 on 100 voxels: start 68, box 22..32.
        let w = id_window(
            [10.0, 40.0, 90.0],
            [20.0, 60.0, 100.0],
            [100, 100, 100],
            [32; 3],
        );
        assert_eq!(w.start_xyz, [68, 34, 0]);
        assert_eq!(w.min, [10.0, 6.0, 22.0]);
        assert_eq!(w.max, [20.0, 26.0, 32.0]);
    }
}
