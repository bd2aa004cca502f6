//! Lesion peaks from the CenterNet-style lesion outputs.
//!
//! ## Decoding (the inverse of the trainer's targets, `trainer/src/preprocess.rs`)
//! The maps are on a grid of stride `s` over a fine grid with geometry `G` (the grid the model
//! saw: a window, or the whole prepared volume after stitching). Along each axis, cell `j`
//! covers fine voxel-edge coordinates `[j s, (j + 1) s)`. A peak at cell `j` with offset `o`
//! (cells) and log-size `l` decodes to
//! - centre, voxel-edge coordinates `u = (j + o) s`, i.e. continuous voxel index `u − 0.5`
//!   (voxel centres at integers), world `G.voxel_to_world(u − 0.5)`;
//! - extent along voxel axis `a`: `e_a = exp(l_a)` voxels; world size along LPS axis `k`:
//!   `Σ_a |dir_a,k| e_a spacing_a` (exact for axis-aligned grids, where the encoder's
//!   projection `e_a = Σ_k |dir_a,k| size_k / spacing_a` is a permutation).
//!
//! The encoder writes `o = u/s − floor(u/s)` and `l = ln e` at the centre cell, so decoding the
//! encoder's targets returns the annotated centre and size exactly.
//!
//! ## Peaks
//! Per class: `sigmoid(logit) ≥ threshold`, a 3-D local maximum over the 26 neighbours (a cell
//! must beat earlier cells in scan order strictly and later ones or equal, so a plateau yields
//! one peak), then class-wise non-maximum suppression: in decreasing score order, a peak whose
//! decoded world centre lies within [`LesionConfig::nms_radius_mm`] (the paper's 5 mm) of an
//! already kept peak of the same class is dropped.
//!
//! Each kept peak is assigned to the vertebra instance whose voxel contains its centre, else to
//! the instance with the nearest centroid (its distance is reported, so a caller can reject
//! far-away lesions).

use super::instances::Instances;
use crate::anatomy::{LesionClass, NUM_LESION_CLASSES};
use crate::metrics::{LesionBox, PredictedLesion};
use crate::volume::Geometry;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Default heatmap threshold on the sigmoid.
pub const DEFAULT_THRESHOLD: f32 = 0.3;
/// The paper's NMS radius, mm.
pub const DEFAULT_NMS_RADIUS_MM: f64 = 5.0;

/// Settings of [`decode_lesions`]; [`Default`] gives the documented values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LesionConfig {
    /// Minimum sigmoid heatmap value of a peak.
    pub threshold: f32,
    /// Physical NMS radius, mm.
    pub nms_radius_mm: f64,
    /// At most this many peaks per class (highest scores), to bound the cost on a noisy map.
    pub max_per_class: usize,
}

impl Default for LesionConfig {
    fn default() -> Self {
        LesionConfig {
            threshold: DEFAULT_THRESHOLD,
            nms_radius_mm: DEFAULT_NMS_RADIUS_MM,
            max_per_class: 100,
        }
    }
}

/// The lesion outputs of the model on one grid, in the contract's layout: channel-major,
/// then `z, y, x` with x fastest.
#[derive(Debug, Clone, PartialEq)]
pub struct LesionMaps {
    /// Stride in fine voxels.
    pub stride: usize,
    /// Cells `(z, y, x)`.
    pub grid: [usize; 3],
    /// `[4, gz, gy, gx]` heatmap logits.
    pub heatmap_logits: Vec<f32>,
    /// `[3, gz, gy, gx]` centre offsets `(z, y, x)` in cells.
    pub offset: Vec<f32>,
    /// `[3, gz, gy, gx]` ln(extent in fine voxels) `(z, y, x)`.
    pub log_size: Vec<f32>,
}

impl LesionMaps {
    /// Cells per channel.
    pub fn cells(&self) -> usize {
        self.grid.iter().product()
    }

    /// Checks buffer lengths and the stride.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the inconsistent buffer.
    pub fn validate(&self) -> Result<()> {
        let c = self.cells();
        if self.stride == 0 || c == 0 {
            return Err(Error::InvalidArgument(
                "lesion maps: stride and grid must be positive".into(),
            ));
        }
        for (name, len, ch) in [
            ("heatmap", self.heatmap_logits.len(), NUM_LESION_CLASSES),
            ("offset", self.offset.len(), 3),
            ("log_size", self.log_size.len(), 3),
        ] {
            if len != ch * c {
                return Err(Error::InvalidArgument(format!(
                    "lesion maps: {name} has {len} values, expected {ch} x {c}"
                )));
            }
        }
        Ok(())
    }
}

/// One decoded lesion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LesionPeak {
    /// Class (heatmap channel).
    pub class: LesionClass,
    /// Sigmoid heatmap value at the peak.
    pub score: f64,
    /// Peak cell `(z, y, x)`.
    pub cell: [usize; 3],
    /// Decoded centre, world LPS, mm.
    pub centre_world: [f64; 3],
    /// Decoded extent along L, P, S, mm.
    pub size_mm: [f64; 3],
    /// The vertebra instance it belongs to (see module docs), if there is any instance.
    pub instance: Option<u32>,
    /// Distance from the centre to that instance: 0 when inside it, else to its centroid.
    pub instance_distance_mm: f64,
}

impl LesionPeak {
    /// As a prediction for [`crate::metrics::evaluate_lesions`].
    pub fn to_prediction(&self) -> PredictedLesion {
        PredictedLesion {
            class: self.class,
            bbox: LesionBox {
                centre_mm: self.centre_world,
                size_mm: self.size_mm.map(|s| s.max(1e-6)),
            },
            score: self.score,
        }
    }
}

/// The logistic function.
#[inline]
pub fn sigmoid(x: f32) -> f64 {
    1.0 / (1.0 + (-f64::from(x)).exp())
}

/// Decodes cell `cell` (z, y, x) with offset `o` and log-size `l` (both `(z, y, x)`) on a grid
/// of `stride` over `fine` to a world centre and LPS size (see module docs).
pub fn decode_cell(
    fine: &Geometry,
    stride: usize,
    cell: [usize; 3],
    o: [f32; 3],
    l: [f32; 3],
) -> ([f64; 3], [f64; 3]) {
    let s = stride as f64;
    let u_zyx: [f64; 3] = std::array::from_fn(|a| (cell[a] as f64 + f64::from(o[a])) * s);
    let v = [u_zyx[2] - 0.5, u_zyx[1] - 0.5, u_zyx[0] - 0.5];
    let e_xyz = [l[2], l[1], l[0]].map(|x| f64::from(x).exp());
    let size = std::array::from_fn(|k| {
        (0..3)
            .map(|a| fine.direction[a][k].abs() * e_xyz[a] * fine.spacing[a])
            .sum::<f64>()
    });
    (fine.voxel_to_world(v), size)
}

/// Finds, decodes and suppresses lesion peaks (see module docs); the result is sorted by
/// decreasing score. `instance` is unset; see [`assign_to_instances`].
///
/// # Errors
/// Inconsistent maps ([`LesionMaps::validate`]); a non-finite threshold or radius.
pub fn decode_lesions(
    maps: &LesionMaps,
    fine: &Geometry,
    config: &LesionConfig,
) -> Result<Vec<LesionPeak>> {
    maps.validate()?;
    if !(config.threshold.is_finite() && config.nms_radius_mm.is_finite()) {
        return Err(Error::InvalidArgument(
            "lesion decoding: threshold and NMS radius must be finite".into(),
        ));
    }
    let [gz, gy, gx] = maps.grid;
    let cells = maps.cells();
    let mut out = Vec::new();
    for ch in 0..NUM_LESION_CLASSES {
        let Some(class) = LesionClass::from_index(ch) else {
            continue;
        };
        let h = &maps.heatmap_logits[ch * cells..(ch + 1) * cells];
        let mut peaks = Vec::new();
        for z in 0..gz {
            for y in 0..gy {
                for x in 0..gx {
                    let i = (z * gy + y) * gx + x;
                    let v = h[i];
                    if !v.is_finite() || sigmoid(v) < f64::from(config.threshold) {
                        continue;
                    }
                    if is_local_max(h, [gz, gy, gx], [z, y, x], i) {
                        peaks.push((i, [z, y, x]));
                    }
                }
            }
        }
        peaks.sort_by(|a, b| h[b.0].total_cmp(&h[a.0]).then(a.0.cmp(&b.0)));
        let mut kept: Vec<LesionPeak> = Vec::new();
        for (i, cell) in peaks {
            if kept.len() >= config.max_per_class {
                break;
            }
            let o = [0, 1, 2].map(|a| maps.offset[a * cells + i]);
            let l = [0, 1, 2].map(|a| maps.log_size[a * cells + i]);
            let (centre, size) = decode_cell(fine, maps.stride, cell, o, l);
            if kept
                .iter()
                .any(|k| distance(k.centre_world, centre) <= config.nms_radius_mm)
            {
                continue;
            }
            kept.push(LesionPeak {
                class,
                score: sigmoid(h[i]),
                cell,
                centre_world: centre,
                size_mm: size,
                instance: None,
                instance_distance_mm: f64::INFINITY,
            });
        }
        out.extend(kept);
    }
    out.sort_by(|a, b| b.score.total_cmp(&a.score));
    Ok(out)
}

fn is_local_max(h: &[f32], grid: [usize; 3], p: [usize; 3], i: usize) -> bool {
    let [gz, gy, gx] = grid;
    for dz in -1isize..=1 {
        for dy in -1isize..=1 {
            for dx in -1isize..=1 {
                if dz == 0 && dy == 0 && dx == 0 {
                    continue;
                }
                let (Some(z), Some(y), Some(x)) = (
                    p[0].checked_add_signed(dz),
                    p[1].checked_add_signed(dy),
                    p[2].checked_add_signed(dx),
                ) else {
                    continue;
                };
                if z >= gz || y >= gy || x >= gx {
                    continue;
                }
                let j = (z * gy + y) * gx + x;
                let w = h[j];
                if (j < i && w >= h[i]) || (j > i && w > h[i]) {
                    return false;
                }
            }
        }
    }
    true
}

fn distance(a: [f64; 3], b: [f64; 3]) -> f64 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2) + (a[2] - b[2]).powi(2)).sqrt()
}

/// Assigns each peak to the instance containing its centre, else to the nearest instance
/// centroid. Peaks stay unassigned when there is no instance.
pub fn assign_to_instances(peaks: &mut [LesionPeak], instances: &Instances) {
    let ids = &instances.ids;
    let g = ids.geometry();
    for p in peaks.iter_mut() {
        let v = g.world_to_voxel(p.centre_world);
        let r = v.map(f64::round);
        let inside = (0..3).all(|a| r[a] >= 0.0 && (r[a] as usize) < ids.dims()[a]);
        if inside {
            let id = ids[[r[0] as usize, r[1] as usize, r[2] as usize]];
            if id != 0 {
                p.instance = Some(id);
                p.instance_distance_mm = 0.0;
                continue;
            }
        }
        let nearest = instances
            .instances
            .iter()
            .map(|i| (i.id, distance(i.centroid_world, p.centre_world)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((id, d)) = nearest {
            p.instance = Some(id);
            p.instance_distance_mm = d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn maps(grid: [usize; 3]) -> LesionMaps {
        let c: usize = grid.iter().product();
        LesionMaps {
            stride: 4,
            grid,
            heatmap_logits: vec![-10.0; 4 * c],
            offset: vec![0.0; 3 * c],
            log_size: vec![0.0; 3 * c],
        }
    }

    #[test]
    fn plateau_gives_one_peak_and_nms_is_physical() {
        let mut m = maps([4, 4, 4]);
        let at = |z: usize, y: usize, x: usize| (z * 4 + y) * 4 + x;
        // Class 1: a plateau of two equal cells → one peak (the first in scan order).
        m.heatmap_logits[64 + at(1, 1, 1)] = 2.0;
        m.heatmap_logits[64 + at(1, 1, 2)] = 2.0;
        // Class 2: two separated maxima 2 cells apart: at 1 mm spacing and stride 4 their
        // centres are 8 mm apart (kept); at 0.5 mm, 4 mm (the weaker one suppressed).
        m.heatmap_logits[128 + at(0, 0, 0)] = 3.0;
        m.heatmap_logits[128 + at(0, 0, 2)] = 1.0;
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        let p = decode_lesions(&m, &g, &LesionConfig::default()).unwrap();
        let n = |c: LesionClass| p.iter().filter(|x| x.class == c).count();
        assert_eq!(n(LesionClass::LyticMetastasis), 1);
        assert_eq!(n(LesionClass::ScleroticMetastasis), 2);
        assert_eq!(p[0].class, LesionClass::ScleroticMetastasis);
        assert_eq!(
            p.iter()
                .find(|x| x.class == LesionClass::LyticMetastasis)
                .unwrap()
                .cell,
            [1, 1, 1]
        );
        let fine = Geometry::axis_aligned([0.5; 3], [0.0; 3]);
        let p = decode_lesions(&m, &fine, &LesionConfig::default()).unwrap();
        assert_eq!(
            p.iter()
                .filter(|x| x.class == LesionClass::ScleroticMetastasis)
                .count(),
            1
        );
        // Below threshold: sigmoid(-1) = 0.27 < 0.3.
        let mut m2 = maps([2, 2, 2]);
        m2.heatmap_logits[0] = -1.0;
        assert!(
            decode_lesions(&m2, &g, &LesionConfig::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn decoding_inverts_the_documented_encoding() {
        // Encode by hand as trainer/src/preprocess.rs does: a lesion at continuous voxel index
        // (x 6.25, y 7, z 9) on a 2 mm grid → edges (z 9.5, y 7.5, x 6.75) → at stride 4
        // cell (2, 1, 1), offset (0.375, 0.875, 0.6875); size 4 × 6 × 8 mm → extent
        // (z 4, y 3, x 2) voxels.
        let g = Geometry::axis_aligned([2.0; 3], [10.0, 20.0, 30.0]);
        let mut m = maps([4, 4, 4]);
        let at = (2 * 4 + 1) * 4 + 1;
        m.heatmap_logits[at] = 5.0;
        for (a, (o, e)) in [(0.375f32, 4.0f32), (0.875, 3.0), (0.6875, 2.0)]
            .into_iter()
            .enumerate()
        {
            m.offset[a * 64 + at] = o;
            m.log_size[a * 64 + at] = e.ln();
        }
        let p = decode_lesions(&m, &g, &LesionConfig::default()).unwrap();
        assert_eq!(p.len(), 1);
        let want = g.voxel_to_world([6.25, 7.0, 9.0]);
        for k in 0..3 {
            assert!((p[0].centre_world[k] - want[k]).abs() < 1e-5, "{p:?}");
        }
        let size = p[0].size_mm;
        assert!(
            (size[0] - 4.0).abs() < 1e-5
                && (size[1] - 6.0).abs() < 1e-5
                && (size[2] - 8.0).abs() < 1e-5,
            "{size:?}"
        );
        assert_eq!(p[0].class, LesionClass::Fracture);
    }

    #[test]
    fn bad_maps_are_rejected() {
        let mut m = maps([2, 2, 2]);
        m.offset.pop();
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        assert!(decode_lesions(&m, &g, &LesionConfig::default()).is_err());
    }
}
