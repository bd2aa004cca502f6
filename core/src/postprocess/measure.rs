//! Measurements per vertebra: volume, centroid, mean HU of the trabecular core, vertebral-body
//! heights and a Genant grade.
//!
//! ## Local frame
//! The cranio-caudal axis of a vertebra is the direction from the centroid of the instance
//! below to the centroid of the instance above (one-sided at the column's ends, world S for a
//! lone instance): it follows lordosis and kyphosis. The antero-posterior axis is world P
//! orthogonalised against it, the left–right axis completes the frame.
//!
//! ## Body heights (Genant's semiquantitative reading, done quantitatively)
//! Voxels of the instance within a mid-sagittal band (`|LR − LR(centroid)| ≤`
//! [`MeasureConfig::band_fraction`] × the instance's LR extent, at least one voxel) are
//! binned along the AP axis in bins of the largest voxel spacing. The **body** is the anterior
//! run of non-empty bins, ended by the first empty stretch of two or more bins (the spinal
//! canal separates the body from the posterior arch in the midline). In each bin the height is
//! the cranio-caudal extent of its voxels (max − min + one voxel). With the body's bins at
//! relative depths `(b + ½)/n`:
//! - anterior height `Ha` = the largest bin height at depth ≤ 20 %,
//! - middle height `Hm` = the median bin height at depth 40–60 %,
//! - posterior height `Hp` = the largest bin height at depth ≥ 80 %.
//!
//! Height losses: wedge `1 − Ha/Hp`, biconcave `1 − Hm/Hp`, crush `1 − Hp/Hp_ref` with
//! `Hp_ref` the mean posterior height of the instances directly above and below (only when
//! both have heights; an end-of-column or lone vertebra gets no crush value; a fractured
//! neighbour lowers the reference and so under-grades a crush — a known limit). The
//! **height loss** is the largest of these (negative values count as 0) and
//! [`GenantGrade::from_height_loss`] grades it: < 20 % normal, 20–25 % mild, 25–40 %
//! moderate, ≥ 40 % severe. Normal endplate concavity makes `Hm` ~1–2 mm smaller than `Hp`;
//! that bias (~5–8 %) is well below grade 1 and is not corrected.
//! Instances that touch the grid border (cut by the field of view) get no heights or grade.
//!
//! ## Mean HU of the body core
//! The instance mask is eroded with a cuboid structuring element of half-size
//! `⌈`[`MeasureConfig::core_erosion_mm`]` / spacing⌉` voxels per axis (default 2 mm: removes
//! the ~1 mm cortical shell and the partial-volume rim), and restricted to voxels whose AP
//! position falls inside the body's run of bins. The mean HU of those voxels is the
//! trabecular density used for opportunistic osteoporosis screening.

use super::instances::Instances;
use crate::anatomy::GenantGrade;
use crate::metrics::check_same_grid;
use crate::{Result, Volume};
use serde::{Deserialize, Serialize};

/// Settings of [`measure_vertebrae`]; [`Default`] gives the documented values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MeasureConfig {
    /// Erosion depth of the HU core, mm.
    pub core_erosion_mm: f64,
    /// Half-width of the mid-sagittal band as a fraction of the instance's LR extent.
    pub band_fraction: f64,
}

impl Default for MeasureConfig {
    fn default() -> Self {
        MeasureConfig {
            core_erosion_mm: 2.0,
            band_fraction: 0.08,
        }
    }
}

/// Vertebral-body heights, mm.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BodyHeights {
    /// Anterior height.
    pub anterior_mm: f64,
    /// Middle height.
    pub middle_mm: f64,
    /// Posterior height.
    pub posterior_mm: f64,
    /// Antero-posterior depth of the body (bins × bin width).
    pub depth_mm: f64,
}

/// Measurements of one vertebra instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertebraMeasurement {
    /// Instance id.
    pub instance: u32,
    /// Volume, mm³.
    pub volume_mm3: f64,
    /// Centroid, world LPS, mm.
    pub centroid_world: [f64; 3],
    /// Mean HU of the eroded body core, `None` without an image or core voxels.
    pub core_mean_hu: Option<f64>,
    /// Voxels in the core.
    pub core_voxels: usize,
    /// Body heights, `None` for border instances or when no body was found.
    pub heights: Option<BodyHeights>,
    /// `1 − Ha/Hp`.
    pub wedge_loss: Option<f64>,
    /// `1 − Hm/Hp`.
    pub biconcave_loss: Option<f64>,
    /// `1 − Hp/Hp_ref` (neighbours).
    pub crush_loss: Option<f64>,
    /// The largest loss, clamped to [0, 1].
    pub height_loss: Option<f64>,
    /// Genant grade of `height_loss`.
    pub genant: Option<GenantGrade>,
}

/// Measures every instance. `hu` (optional) is the CT in HU on the instances' grid.
///
/// # Errors
/// [`crate::Error::Geometry`] when `hu` is on another grid.
pub fn measure_vertebrae(
    instances: &Instances,
    hu: Option<&Volume<f32>>,
    config: &MeasureConfig,
) -> Result<Vec<VertebraMeasurement>> {
    if let Some(h) = hu {
        check_same_grid(h, &instances.ids)?;
    }
    let ids = &instances.ids;
    let n = instances.instances.len();
    // Voxel lists per instance.
    let mut voxels: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
    for (i, &id) in ids.data().iter().enumerate() {
        if id != 0 {
            voxels[id as usize].push(i);
        }
    }
    let centroids: Vec<[f64; 3]> = instances
        .instances
        .iter()
        .map(|i| i.centroid_world)
        .collect();
    let mut out: Vec<VertebraMeasurement> = Vec::with_capacity(n);
    for (k, inst) in instances.instances.iter().enumerate() {
        // Instances are cranio-caudal: k − 1 is above, k + 1 below.
        let above = k.checked_sub(1).map(|j| centroids[j]);
        let below = centroids.get(k + 1).copied();
        let si = column_axis(above, inst.centroid_world, below);
        let frame = Frame::new(si);
        let body = body_profile(ids, &voxels[inst.id as usize], inst, &frame, config);
        let heights = if inst.touches_border {
            None
        } else {
            body.as_ref().and_then(|b| b.heights)
        };
        let (core_mean_hu, core_voxels) = match (hu, &body) {
            (Some(h), Some(b)) => core_hu(
                ids,
                h,
                inst.id,
                &voxels[inst.id as usize],
                b,
                &frame,
                config,
            ),
            _ => (None, 0),
        };
        out.push(VertebraMeasurement {
            instance: inst.id,
            volume_mm3: inst.volume_mm3,
            centroid_world: inst.centroid_world,
            core_mean_hu,
            core_voxels,
            heights,
            wedge_loss: heights.map(|h| 1.0 - h.anterior_mm / h.posterior_mm),
            biconcave_loss: heights.map(|h| 1.0 - h.middle_mm / h.posterior_mm),
            crush_loss: None,
            height_loss: None,
            genant: None,
        });
    }
    // Crush against the neighbours' posterior heights, then the grade.
    let hp: Vec<Option<f64>> = out
        .iter()
        .map(|m| m.heights.map(|h| h.posterior_mm))
        .collect();
    for k in 0..out.len() {
        if let (Some(h), Some(Some(a)), Some(Some(b))) = (
            hp[k],
            k.checked_sub(1).map(|j| hp[j]),
            hp.get(k + 1).copied(),
        ) {
            out[k].crush_loss = Some(1.0 - h / f64::midpoint(a, b));
        }
        let m = &mut out[k];
        if m.heights.is_some() {
            let loss = [m.wedge_loss, m.biconcave_loss, m.crush_loss]
                .into_iter()
                .flatten()
                .fold(0.0f64, f64::max)
                .clamp(0.0, 1.0);
            m.height_loss = Some(loss);
            m.genant = GenantGrade::from_height_loss(loss).ok();
        }
    }
    Ok(out)
}

/// Unit vector from the centroid below to the centroid above (see module docs).
fn column_axis(above: Option<[f64; 3]>, at: [f64; 3], below: Option<[f64; 3]>) -> [f64; 3] {
    let (hi, lo) = match (above, below) {
        (Some(a), Some(b)) => (a, b),
        (Some(a), None) => (a, at),
        (None, Some(b)) => (at, b),
        (None, None) => return [0.0, 0.0, 1.0],
    };
    let d = [hi[0] - lo[0], hi[1] - lo[1], hi[2] - lo[2]];
    let n = norm(d);
    if n < 1e-9 || d[2] <= 0.0 {
        [0.0, 0.0, 1.0]
    } else {
        d.map(|v| v / n)
    }
}

fn norm(v: [f64; 3]) -> f64 {
    (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt()
}

fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// The local frame: left–right, antero-posterior (+ posterior), cranio-caudal (+ cranial).
struct Frame {
    lr: [f64; 3],
    ap: [f64; 3],
    si: [f64; 3],
}

impl Frame {
    fn new(si: [f64; 3]) -> Self {
        let p = [0.0, 1.0, 0.0];
        let d = dot(p, si);
        let mut ap = [p[0] - d * si[0], p[1] - d * si[1], p[2] - d * si[2]];
        let n = norm(ap);
        ap = ap.map(|v| v / n);
        let lr = [
            ap[1] * si[2] - ap[2] * si[1],
            ap[2] * si[0] - ap[0] * si[2],
            ap[0] * si[1] - ap[1] * si[0],
        ];
        Frame { lr, ap, si }
    }
}

/// The body's AP range and heights.
struct Body {
    ap_lo: f64,
    ap_hi: f64,
    heights: Option<BodyHeights>,
}

fn body_profile(
    ids: &Volume<u32>,
    voxels: &[usize],
    inst: &super::instances::VertebraInstance,
    f: &Frame,
    config: &MeasureConfig,
) -> Option<Body> {
    let g = ids.geometry();
    let world = |i: usize| {
        let c = ids.coords(i);
        g.voxel_to_world([c[0] as f64, c[1] as f64, c[2] as f64])
    };
    let c0 = inst.centroid_world;
    let rel = |w: [f64; 3]| [w[0] - c0[0], w[1] - c0[1], w[2] - c0[2]];
    let (mut lr_min, mut lr_max) = (f64::INFINITY, f64::NEG_INFINITY);
    for &i in voxels {
        let l = dot(rel(world(i)), f.lr);
        lr_min = lr_min.min(l);
        lr_max = lr_max.max(l);
    }
    let bin = g.spacing.iter().copied().fold(0.0, f64::max);
    // Voxel extent along the cranio-caudal axis.
    let vox_si: f64 = (0..3)
        .map(|a| {
            let d = g.direction[a];
            (dot(d, f.si)).abs() * g.spacing[a]
        })
        .sum();
    let half = (config.band_fraction * (lr_max - lr_min)).max(bin / 2.0);
    let band: Vec<(f64, f64)> = voxels
        .iter()
        .filter_map(|&i| {
            let r = rel(world(i));
            (dot(r, f.lr).abs() <= half).then(|| (dot(r, f.ap), dot(r, f.si)))
        })
        .collect();
    let ap_min = band.iter().map(|b| b.0).fold(f64::INFINITY, f64::min);
    if !ap_min.is_finite() {
        return None;
    }
    let nbins = band
        .iter()
        .map(|b| ((b.0 - ap_min) / bin).round() as usize)
        .max()?
        + 1;
    let mut lo = vec![f64::INFINITY; nbins];
    let mut hi = vec![f64::NEG_INFINITY; nbins];
    for &(ap, si) in &band {
        let b = ((ap - ap_min) / bin).round() as usize;
        lo[b] = lo[b].min(si);
        hi[b] = hi[b].max(si);
    }
    // Anterior run: ends at the first empty stretch of >= 2 bins.
    let mut end = 0;
    let mut b = 0;
    while b < nbins {
        if lo[b].is_finite() {
            end = b + 1;
            b += 1;
        } else if b + 1 < nbins && !lo[b + 1].is_finite() {
            break;
        } else {
            b += 1;
        }
    }
    let n = end;
    let ap_lo = ap_min - bin / 2.0;
    let ap_hi = ap_min + (n as f64 - 0.5) * bin;
    let heights_at = |from: f64, to: f64| -> Vec<f64> {
        (0..n)
            .filter(|&b| {
                let d = (b as f64 + 0.5) / n as f64;
                d >= from - 1e-9 && d <= to + 1e-9 && lo[b].is_finite()
            })
            .map(|b| hi[b] - lo[b] + vox_si)
            .collect()
    };
    let max = |v: Vec<f64>| v.into_iter().reduce(f64::max);
    let median = |mut v: Vec<f64>| {
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let m = v.len() / 2;
        Some(if v.len() % 2 == 1 {
            v[m]
        } else {
            f64::midpoint(v[m - 1], v[m])
        })
    };
    let heights = match (
        max(heights_at(0.0, 0.2)),
        median(heights_at(0.4, 0.6)),
        max(heights_at(0.8, 1.0)),
    ) {
        (Some(a), Some(m), Some(p)) if n >= 3 && p > 0.0 => Some(BodyHeights {
            anterior_mm: a,
            middle_mm: m,
            posterior_mm: p,
            depth_mm: n as f64 * bin,
        }),
        _ => None,
    };
    Some(Body {
        ap_lo: ap_lo + c0_ap(c0, f),
        ap_hi: ap_hi + c0_ap(c0, f),
        heights,
    })
}

/// AP coordinate of the centroid itself (body ranges are stored absolute along the AP axis).
fn c0_ap(c0: [f64; 3], f: &Frame) -> f64 {
    dot(c0, f.ap)
}

fn core_hu(
    ids: &Volume<u32>,
    hu: &Volume<f32>,
    id: u32,
    voxels: &[usize],
    body: &Body,
    f: &Frame,
    config: &MeasureConfig,
) -> (Option<f64>, usize) {
    let g = ids.geometry();
    let dims = ids.dims();
    let k = g
        .spacing
        .map(|s| (config.core_erosion_mm / s - 1e-9).ceil().max(0.0) as usize);
    let inside = |x: isize, y: isize, z: isize| {
        x >= 0
            && y >= 0
            && z >= 0
            && (x as usize) < dims[0]
            && (y as usize) < dims[1]
            && (z as usize) < dims[2]
            && ids[[x as usize, y as usize, z as usize]] == id
    };
    let (mut sum, mut count) = (0.0f64, 0usize);
    for &i in voxels {
        let c = ids.coords(i);
        let w = g.voxel_to_world([c[0] as f64, c[1] as f64, c[2] as f64]);
        let ap = dot(w, f.ap);
        if ap < body.ap_lo || ap > body.ap_hi {
            continue;
        }
        let (x, y, z) = (c[0] as isize, c[1] as isize, c[2] as isize);
        let (kx, ky, kz) = (k[0] as isize, k[1] as isize, k[2] as isize);
        let mut ok = true;
        'outer: for dz in -kz..=kz {
            for dy in -ky..=ky {
                for dx in -kx..=kx {
                    if !inside(x + dx, y + dy, z + dz) {
                        ok = false;
                        break 'outer;
                    }
                }
            }
        }
        if ok {
            sum += f64::from(hu.data()[i]);
            count += 1;
        }
    }
    ((count > 0).then(|| sum / count as f64), count)
}
