//! Identification between the two graphs: the 3-D RoIAlign and the box geometry features, in
//! plain Rust on `f32` slices (no Burn), so the appliance can link it.
//!
//! This is the same function as `vertebra_model::blocks::roi_align::roi_align` and
//! `IdentificationHead::geometry` (tests prove equality to 1e-5 on random features and boxes);
//! its definition is in that module's docs: voxel-edge box coordinates, feature coordinate
//! `u / stride - 0.5`, R bins per axis, S trilinear samples per bin per axis at
//! `f0 + (r + (k + 0.5) / S) · (f1 - f0) / R`, clamped to the grid (edge replication), bin
//! value = mean of its S³ samples. It is written independently of the Burn version (direct
//! trilinear interpolation instead of a gather plan) so that the equality test means something.
//!
//! It lives here until the appliance needs it; it has no dependency on this crate's graph
//! writer and can move to `vertebra-core` unchanged.

use vertebra_core::contract::BOX_ROW_LEN;

use crate::{Error, Result};

/// Input of `id_head.onnx`: RoIAlign output `[boxes, c, R, R, R]`.
pub const ROI_POOLED: &str = "roi_pooled";
/// Input of `id_head.onnx`: box geometry `[boxes, 3]` (extent in units of 100 mm).
pub const BOX_GEOMETRY: &str = "box_geometry";
/// Millimetres per unit of the extent features (vertebra_model's `EXTENT_UNIT_MM`).
pub const EXTENT_UNIT_MM: f32 = 100.0;

/// An instance box in voxel-edge coordinates `(z, y, x)` of the input window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoiBox {
    /// Batch item.
    pub batch: usize,
    /// Lower corner.
    pub min: [f32; 3],
    /// Upper corner (strictly greater than `min`).
    pub max: [f32; 3],
}

impl RoiBox {
    /// A box from a contract `boxes` row `(batch, z0, y0, x0, z1, y1, x1)`.
    ///
    /// # Errors
    /// [`Error::Input`] for a negative or fractional batch index.
    pub fn from_row(row: [f32; BOX_ROW_LEN]) -> Result<Self> {
        let b = row[0];
        if !(b >= 0.0 && b.fract() == 0.0) {
            return Err(Error::Input(format!(
                "box batch index {b} is not a whole number ≥ 0"
            )));
        }
        Ok(Self {
            batch: b as usize,
            min: [row[1], row[2], row[3]],
            max: [row[4], row[5], row[6]],
        })
    }
}

/// RoIAlign parameters (the manifest's `[identification]` section).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoiAlignParams {
    /// Input voxels per feature cell (the patch size).
    pub stride: usize,
    /// Bins per axis (R).
    pub output: usize,
    /// Samples per bin per axis (S).
    pub sampling: usize,
}

/// RoIAlign of `features` (`[B, C, Z, Y, X]`, row-major, `dims` its shape) over `boxes` →
/// `[K, C, R, R, R]` row-major.
///
/// # Errors
/// [`Error::Input`] for a feature buffer that does not match `dims`, or a box with a bad batch
/// index, a non-finite or empty extent, or no overlap with the window (the checks of
/// `vertebra_model::blocks::roi_align::check_boxes`).
pub fn roi_align(
    features: &[f32],
    dims: [usize; 5],
    boxes: &[RoiBox],
    params: RoiAlignParams,
) -> Result<Vec<f32>> {
    let [b, c, gz, gy, gx] = dims;
    if features.len() != dims.iter().product::<usize>() {
        return Err(Error::Input(format!(
            "features have {} values, shape {dims:?} needs {}",
            features.len(),
            dims.iter().product::<usize>()
        )));
    }
    let grid = [gz, gy, gx];
    for (k, bx) in boxes.iter().enumerate() {
        if bx.batch >= b {
            return Err(Error::Input(format!(
                "box {k} refers to batch item {} of {b}",
                bx.batch
            )));
        }
        for a in 0..3 {
            let (lo, hi) = (bx.min[a], bx.max[a]);
            let window = (grid[a] * params.stride) as f32;
            if !(lo.is_finite() && hi.is_finite() && hi > lo && hi > 0.0 && lo < window) {
                return Err(Error::Input(format!(
                    "box {k}: axis {a} [{lo}, {hi}) is empty, not finite or outside the window \
                     [0, {window})"
                )));
            }
        }
    }
    let (r, s) = (params.output, params.sampling);
    let cells = gz * gy * gx;
    let mut out = vec![0.0f32; boxes.len() * c * r * r * r];
    for (k, bx) in boxes.iter().enumerate() {
        // Per axis and bin: the S sample positions as (lower cell, upper cell, weight of upper).
        let samples = |a: usize| -> Vec<Vec<(usize, usize, f64)>> {
            let f0 = f64::from(bx.min[a]) / params.stride as f64 - 0.5;
            let f1 = f64::from(bx.max[a]) / params.stride as f64 - 0.5;
            let bin = (f1 - f0) / r as f64;
            let last = grid[a] - 1;
            (0..r)
                .map(|rb| {
                    (0..s)
                        .map(|q| {
                            let p = f0 + (rb as f64 + (q as f64 + 0.5) / s as f64) * bin;
                            let p = p.clamp(0.0, last as f64);
                            let lo = p.floor() as usize;
                            (lo, (lo + 1).min(last), p - lo as f64)
                        })
                        .collect()
                })
                .collect()
        };
        let (sz, sy, sx) = (samples(0), samples(1), samples(2));
        let norm = 1.0 / (s * s * s) as f64;
        for ch in 0..c {
            let base = (bx.batch * c + ch) * cells;
            let at =
                |z: usize, y: usize, x: usize| f64::from(features[base + (z * gy + y) * gx + x]);
            for (bz, pz) in sz.iter().enumerate() {
                for (by, py) in sy.iter().enumerate() {
                    for (bxx, px) in sx.iter().enumerate() {
                        let mut acc = 0.0;
                        for &(z0, z1, tz) in pz {
                            for &(y0, y1, ty) in py {
                                for &(x0, x1, tx) in px {
                                    let lerp = |a: f64, b: f64, t: f64| a + (b - a) * t;
                                    let plane = |z| {
                                        lerp(
                                            lerp(at(z, y0, x0), at(z, y0, x1), tx),
                                            lerp(at(z, y1, x0), at(z, y1, x1), tx),
                                            ty,
                                        )
                                    };
                                    acc += lerp(plane(z0), plane(z1), tz);
                                }
                            }
                        }
                        let o = (((k * c + ch) * r + bz) * r + by) * r + bxx;
                        out[o] = (acc * norm) as f32;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Geometry features `[K, 3]` row-major: each box's extent `(z, y, x)` in input voxels times
/// `spacing_mm / 100`.
pub fn box_geometry(boxes: &[RoiBox], spacing_mm: f64) -> Vec<f32> {
    let scale = spacing_mm as f32 / EXTENT_UNIT_MM;
    boxes
        .iter()
        .flat_map(|b| [0, 1, 2].map(|a| (b.max[a] - b.min[a]) * scale))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: RoiAlignParams = RoiAlignParams {
        stride: 2,
        output: 2,
        sampling: 2,
    };

    #[test]
    fn linear_field_is_sampled_at_bin_centres() {
        // f(z, y, x) = x on a 4³ grid of stride 2: a box [0, 8) along x covers feature
        // coordinates -0.5..3.5; bin 0 samples at -0.5 + 0.5 and -0.5 + 1.5 → 0 and 1, mean
        // 0.5; bin 1 at 2 and 3 (clamped to 3 only above 3) → 2.5.
        let g = 4;
        let f: Vec<f32> = (0..g * g * g).map(|i| (i % g) as f32).collect();
        let bx = RoiBox {
            batch: 0,
            min: [0.0; 3],
            max: [8.0; 3],
        };
        let out = roi_align(&f, [1, 1, g, g, g], &[bx], P).unwrap();
        assert_eq!(out.len(), 8);
        for (i, v) in out.iter().enumerate() {
            let want = if i % 2 == 0 { 0.5 } else { 2.5 };
            assert!((v - want).abs() < 1e-6, "bin {i}: {v} != {want}");
        }
    }

    #[test]
    fn rejects_bad_boxes_and_buffers() {
        let f = vec![0.0; 64];
        let ok = RoiBox {
            batch: 0,
            min: [0.0; 3],
            max: [4.0; 3],
        };
        assert!(roi_align(&f, [1, 1, 4, 4, 4], &[ok], P).is_ok());
        assert!(roi_align(&f[1..], [1, 1, 4, 4, 4], &[ok], P).is_err());
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
        ] {
            assert!(
                roi_align(&f, [1, 1, 4, 4, 4], &[bad], P).is_err(),
                "{bad:?}"
            );
        }
        assert!(RoiBox::from_row([0.5, 0.0, 0.0, 0.0, 1.0, 1.0, 1.0]).is_err());
    }

    #[test]
    fn geometry_is_extent_in_decimetres() {
        let bx = RoiBox {
            batch: 0,
            min: [10.0, 10.0, 10.0],
            max: [12.0, 14.0, 16.0],
        };
        assert_eq!(box_geometry(&[bx], 1.0), vec![0.02, 0.04, 0.06]);
    }
}
