//! Gather-based trilinear 3-D RoIAlign (Burn has no 3-D grid_sample).
//!
//! ## Definition (what the scipy fixtures reproduce)
//! A box is given in voxel-edge coordinates of the *input window* ([`RoiBox`]; voxel `i` spans
//! `[i, i + 1)`). On a feature grid of stride `s` (cell `j` centred at input `(j + 0.5) s`),
//! an input edge coordinate `u` is feature coordinate `u / s - 0.5` (cell centres at integers).
//! The box is split into R bins per axis; each bin is sampled at S points per axis, at
//! `f0 + (r + (k + 0.5) / S) · (f1 - f0) / R`, and the bin's value is the mean of its S³
//! trilinear samples (torchvision's `aligned=True` convention with a fixed sampling ratio).
//! Samples outside the grid are clamped to the nearest edge cell, i.e. the feature map is
//! extended by replication (scipy `map_coordinates(order=1, mode="nearest")`), so a box at the
//! border sees border features rather than zeros that would read as "no bone".
//!
//! ## Implementation
//! The sampling plan (8 corner indices and weights per sample) depends only on the boxes and
//! the grid, so it is computed on the host; the features are then gathered with one `select`
//! over the flattened `[B·Z·Y·X, C]` feature matrix, weighted, and summed. `select` is
//! differentiable in the features, so gradients flow into the encoder; boxes carry no
//! gradient (they come from the segmentation).

use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// An instance box in voxel-edge coordinates `(z, y, x)` of the input window, for batch item
/// `batch`. A box covering voxels `a..=b` along an axis is `[a, b + 1)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RoiBox {
    /// Batch item the box belongs to.
    pub batch: usize,
    /// Lower corner `(z0, y0, x0)`.
    pub min: [f32; 3],
    /// Upper corner `(z1, y1, x1)`, each strictly greater than the lower one.
    pub max: [f32; 3],
}

impl RoiBox {
    /// The box's extent `(z, y, x)` in input voxels.
    pub fn extent(&self) -> [f32; 3] {
        [0, 1, 2].map(|a| self.max[a] - self.min[a])
    }
}

/// Sizes of the RoIAlign output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoiAlignSpec {
    /// Input voxels per feature cell.
    pub stride: usize,
    /// Bins per axis (R).
    pub output: usize,
    /// Samples per bin per axis (S).
    pub sampling: usize,
}

/// Checks boxes against a feature map of `batch` items and `grid` cells at `stride`.
///
/// # Errors
/// [`Error::Input`] for a box with a bad batch index, a non-finite or empty extent, or no
/// overlap with the window.
pub fn check_boxes(boxes: &[RoiBox], batch: usize, grid: [usize; 3], stride: usize) -> Result<()> {
    for (k, bx) in boxes.iter().enumerate() {
        if bx.batch >= batch {
            return Err(Error::Input(format!(
                "box {k} refers to batch item {} of {batch}",
                bx.batch
            )));
        }
        for a in 0..3 {
            let (lo, hi) = (bx.min[a], bx.max[a]);
            let window = (grid[a] * stride) as f32;
            if !(lo.is_finite() && hi.is_finite() && hi > lo && hi > 0.0 && lo < window) {
                return Err(Error::Input(format!(
                    "box {k} {bx:?}: axis {a} [{lo}, {hi}) is empty, not finite or outside the \
                     window [0, {window})"
                )));
            }
        }
    }
    Ok(())
}

/// The sampling plan: for every output bin of every box, `S³ · 8` rows of (flat index into
/// `[B·Z·Y·X]`, weight). Weights include the 1/S³ of the bin mean, so summing the weighted rows
/// of a bin gives its value.
pub fn sampling_plan(
    boxes: &[RoiBox],
    grid: [usize; 3],
    spec: RoiAlignSpec,
) -> (Vec<i64>, Vec<f32>) {
    let (r, s) = (spec.output, spec.sampling);
    let per_bin = s * s * s * 8;
    let rows = boxes.len() * r * r * r * per_bin;
    let mut index = Vec::with_capacity(rows);
    let mut weight = Vec::with_capacity(rows);
    let inv = 1.0 / (s * s * s) as f64;
    let stride = spec.stride as f64;
    let cells = grid[0] * grid[1] * grid[2];
    for bx in boxes {
        // Per axis: the R·S sample positions, as (i0, i1, t) with clamping.
        let axis = |a: usize| -> Vec<(usize, usize, f64)> {
            let f0 = f64::from(bx.min[a]) / stride - 0.5;
            let f1 = f64::from(bx.max[a]) / stride - 0.5;
            let bin = (f1 - f0) / r as f64;
            let last = (grid[a] - 1) as f64;
            (0..r * s)
                .map(|q| {
                    let (rb, k) = (q / s, q % s);
                    let p = (f0 + (rb as f64 + (k as f64 + 0.5) / s as f64) * bin).clamp(0.0, last);
                    let i0 = p.floor() as usize;
                    let i1 = (i0 + 1).min(grid[a] - 1);
                    (i0, i1, p - i0 as f64)
                })
                .collect()
        };
        let (pz, py, px) = (axis(0), axis(1), axis(2));
        let base = bx.batch * cells;
        for bz in 0..r {
            for by in 0..r {
                for bxx in 0..r {
                    for kz in 0..s {
                        let (z0, z1, tz) = pz[bz * s + kz];
                        for ky in 0..s {
                            let (y0, y1, ty) = py[by * s + ky];
                            for kx in 0..s {
                                let (x0, x1, tx) = px[bxx * s + kx];
                                for (z, wz) in [(z0, 1.0 - tz), (z1, tz)] {
                                    for (y, wy) in [(y0, 1.0 - ty), (y1, ty)] {
                                        for (x, wx) in [(x0, 1.0 - tx), (x1, tx)] {
                                            let flat = base + (z * grid[1] + y) * grid[2] + x;
                                            index.push(flat as i64);
                                            weight.push((wz * wy * wx * inv) as f32);
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    (index, weight)
}

/// RoIAlign of `features [B, C, Z, Y, X]` over `boxes` → `[K, C, R, R, R]` (bins in z, y, x
/// order). Returns `None` for an empty box list (a zero-sized tensor helps nobody).
///
/// # Errors
/// See [`check_boxes`].
pub fn roi_align(
    features: Tensor<5>,
    boxes: &[RoiBox],
    spec: RoiAlignSpec,
) -> Result<Option<Tensor<5>>> {
    let [b, c, z, y, x] = features.dims();
    let grid = [z, y, x];
    check_boxes(boxes, b, grid, spec.stride)?;
    if boxes.is_empty() {
        return Ok(None);
    }
    let device: Device = features.device();
    let (index, weight) = sampling_plan(boxes, grid, spec);
    let rows = index.len();
    let r = spec.output;
    let per_bin = spec.sampling.pow(3) * 8;
    let bins = boxes.len() * r * r * r;
    let index = Tensor::<1, Int>::from_data(TensorData::new(index, [rows]), &device);
    let weight = Tensor::<2>::from_data(TensorData::new(weight, [rows, 1]), &device);
    let flat = features
        .permute([0, 2, 3, 4, 1])
        .reshape([b * z * y * x, c]);
    let values = flat.select(0, index) * weight;
    let pooled = values.reshape([bins, per_bin, c]).sum_dim(1);
    Ok(Some(
        pooled
            .reshape([boxes.len(), r, r, r, c])
            .permute([0, 4, 1, 2, 3]),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::test_util::{device, random};

    fn spec() -> RoiAlignSpec {
        RoiAlignSpec {
            stride: 2,
            output: 2,
            sampling: 2,
        }
    }

    #[test]
    fn shapes_and_empty_list() {
        let dev = device();
        let f = random([2, 3, 4, 5, 6], &dev);
        let boxes = [
            RoiBox {
                batch: 1,
                min: [0.0, 1.0, 2.0],
                max: [8.0, 9.0, 11.0],
            },
            RoiBox {
                batch: 0,
                min: [2.5, 2.5, 2.5],
                max: [3.0, 4.0, 5.0],
            },
        ];
        let out = roi_align(f.clone(), &boxes, spec()).unwrap().unwrap();
        assert_eq!(out.dims(), [2, 3, 2, 2, 2]);
        assert!(roi_align(f, &[], spec()).unwrap().is_none());
    }

    #[test]
    fn constant_features_give_the_constant_everywhere() {
        // Weights of each bin sum to 1, including clamped samples at the border.
        let dev = device();
        let f = Tensor::<5>::ones([1, 2, 3, 3, 3], &dev).mul_scalar(7.0);
        let boxes = [RoiBox {
            batch: 0,
            min: [-3.0, 0.0, 4.0],
            max: [2.0, 6.0, 9.0],
        }];
        let out = roi_align(f, &boxes, spec()).unwrap().unwrap();
        let v = out.into_data().try_to_vec::<f32>().unwrap();
        assert!(v.iter().all(|x| (x - 7.0).abs() < 1e-5), "{v:?}");
    }

    #[test]
    fn rejects_bad_boxes() {
        let dev = device();
        let f = random([1, 1, 4, 4, 4], &dev);
        let ok = RoiBox {
            batch: 0,
            min: [0.0; 3],
            max: [4.0; 3],
        };
        for bad in [
            RoiBox { batch: 1, ..ok },
            RoiBox {
                max: [4.0, 0.0, 4.0],
                ..ok
            },
            RoiBox {
                min: [8.0, 0.0, 0.0],
                max: [9.0, 4.0, 4.0],
                ..ok
            },
            RoiBox {
                min: [f32::NAN, 0.0, 0.0],
                ..ok
            },
        ] {
            assert!(roi_align(f.clone(), &[bad], spec()).is_err(), "{bad:?}");
        }
    }
}
