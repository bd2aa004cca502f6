//! Rasterisation of the phantom scene onto the acquisition grid, and the measurements taken
//! from the painted maps (label centroids, lesion extents), so that ground truth describes the
//! voxels exactly.
//!
//! Work is split by axial slice with rayon: each slice first gets its soft-tissue background
//! ([`SoftProfile::paint_slice`]), then every primitive whose bounding box crosses the slice is
//! evaluated over the box's rows and columns only, in scene order (later primitives win). The
//! local coordinates of a voxel are updated incrementally along a row, so the inner loop is a
//! few additions plus the shape's distance function. No randomness is involved, so the result
//! does not depend on the number of threads.

use super::body::SoftProfile;
use super::lesions::Probe;
use super::shapes::{LabelWrite, Primitive, V3, add};
use super::spine::Column;
use crate::anatomy::NUM_VERTEBRAE;
use crate::{Geometry, Result};
use rayon::prelude::*;

/// An axis-aligned acquisition grid (voxel axes along L, P, S), as the phantom builds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Grid {
    pub dims: [usize; 3],
    pub origin: V3,
    pub spacing: V3,
}

/// World extent of a grid's voxel centres.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fov {
    pub min: V3,
    pub max: V3,
}

impl Grid {
    /// The volume geometry of this grid.
    pub fn geometry(&self) -> Result<Geometry> {
        let g = Geometry::axis_aligned(self.spacing, self.origin);
        g.validate()?;
        Ok(g)
    }

    /// World extent of the voxel centres.
    pub fn fov(&self) -> Fov {
        let mut max = self.origin;
        for i in 0..3 {
            max[i] += self.spacing[i] * (self.dims[i] - 1) as f64;
        }
        Fov {
            min: self.origin,
            max,
        }
    }

    /// Voxels per slice.
    pub fn plane(&self) -> usize {
        self.dims[0] * self.dims[1]
    }

    /// Index range `[lo, hi]` of voxel centres along `axis` within world `[a, b]`, or `None`.
    fn range(&self, axis: usize, a: f64, b: f64) -> Option<(usize, usize)> {
        let o = self.origin[axis];
        let s = self.spacing[axis];
        let lo = ((a - o) / s).ceil().max(0.0);
        let hi = ((b - o) / s).floor().min((self.dims[axis] - 1) as f64);
        (lo <= hi).then_some((lo as usize, hi as usize))
    }

    fn world(&self, axis: usize, i: usize) -> f64 {
        self.origin[axis] + self.spacing[axis] * i as f64
    }
}

/// Whether a primitive's bounding box meets the FOV (grown by `margin` mm).
pub(crate) fn touches(p: &Primitive, fov: &Fov, margin: f64) -> bool {
    (0..3).all(|i| p.bounds[1][i] >= fov.min[i] - margin && p.bounds[0][i] <= fov.max[i] + margin)
}

/// Paints the scene: returns the tissue map and the label map (x fastest).
pub(crate) fn rasterize(
    grid: &Grid,
    col: &Column,
    soft: &SoftProfile,
    prims: &[Primitive],
) -> (Vec<u8>, Vec<u8>) {
    let plane = grid.plane();
    let n = plane * grid.dims[2];
    let mut tissue = vec![0u8; n];
    let mut labels = vec![0u8; n];
    let xs: Vec<f64> = (0..grid.dims[0]).map(|i| grid.world(0, i)).collect();
    let ys: Vec<f64> = (0..grid.dims[1]).map(|j| grid.world(1, j)).collect();
    tissue
        .par_chunks_mut(plane)
        .zip(labels.par_chunks_mut(plane))
        .enumerate()
        .for_each(|(k, (t, l))| {
            let z = grid.world(2, k);
            soft.paint_slice(col, z, &xs, &ys, t);
            for p in prims {
                if z >= p.bounds[0][2] && z <= p.bounds[1][2] {
                    paint(grid, p, z, t, l);
                }
            }
        });
    (tissue, labels)
}

/// Paints one primitive into one slice.
fn paint(grid: &Grid, p: &Primitive, z: f64, t: &mut [u8], l: &mut [u8]) {
    let Some((i0, i1)) = grid.range(0, p.bounds[0][0], p.bounds[1][0]) else {
        return;
    };
    let Some((j0, j1)) = grid.range(1, p.bounds[0][1], p.bounds[1][1]) else {
        return;
    };
    let nx = grid.dims[0];
    let ax = p.frame.axes;
    let step = [
        ax[0][0] * grid.spacing[0],
        ax[1][0] * grid.spacing[0],
        ax[2][0] * grid.spacing[0],
    ];
    for j in j0..=j1 {
        let start = [grid.world(0, i0), grid.world(1, j), z];
        let mut loc = p.frame.local(start);
        let row = j * nx;
        for i in i0..=i1 {
            let d = p.shape.dist(loc);
            if d < 0.0 {
                let idx = row + i;
                let allowed = p.only.is_none_or(|o| o.allows(l[idx], t[idx]));
                if allowed {
                    t[idx] = p.tissue_at(d) as u8;
                    if let LabelWrite::Set(v) = p.label {
                        l[idx] = v;
                    }
                }
            }
            loc = add(loc, step);
        }
    }
}

/// Per-label voxel count and world centroid (LPS mm) of labels 1..=25; index = label − 1.
pub(crate) fn label_centroids(grid: &Grid, labels: &[u8]) -> Vec<(usize, V3)> {
    let plane = grid.plane();
    let nx = grid.dims[0];
    let zero = || vec![[0.0f64; 4]; NUM_VERTEBRAE];
    let sums = labels
        .par_chunks(plane)
        .enumerate()
        .fold(zero, |mut acc, (k, slice)| {
            for (idx, &v) in slice.iter().enumerate() {
                if v == 0 || v as usize > NUM_VERTEBRAE {
                    continue;
                }
                let a = &mut acc[v as usize - 1];
                a[0] += 1.0;
                a[1] += (idx % nx) as f64;
                a[2] += (idx / nx) as f64;
                a[3] += k as f64;
            }
            acc
        })
        .reduce(zero, |mut a, b| {
            for (x, y) in a.iter_mut().zip(b) {
                for i in 0..4 {
                    x[i] += y[i];
                }
            }
            a
        });
    sums.iter()
        .map(|s| {
            if s[0] == 0.0 {
                (0, [0.0; 3])
            } else {
                let c = [
                    grid.origin[0] + grid.spacing[0] * s[1] / s[0],
                    grid.origin[1] + grid.spacing[1] * s[2] / s[0],
                    grid.origin[2] + grid.spacing[2] * s[3] / s[0],
                ];
                (s[0] as usize, c)
            }
        })
        .collect()
}

/// Extent of a lesion's voxels: world AABB of the voxels (voxel centres ± half a voxel) and
/// their count; `None` when no voxel matches.
pub(crate) fn probe_extent(
    grid: &Grid,
    probe: &Probe,
    tissue: &[u8],
    labels: &[u8],
) -> Option<([V3; 2], usize)> {
    let b = probe.region.bounds;
    let (i0, i1) = grid.range(0, b[0][0], b[1][0])?;
    let (j0, j1) = grid.range(1, b[0][1], b[1][1])?;
    let (k0, k1) = grid.range(2, b[0][2], b[1][2])?;
    let mut lo = [usize::MAX; 3];
    let mut hi = [0usize; 3];
    let mut count = 0usize;
    for k in k0..=k1 {
        for j in j0..=j1 {
            for i in i0..=i1 {
                let idx = i + grid.dims[0] * (j + grid.dims[1] * k);
                if !probe.only.allows(labels[idx], tissue[idx]) {
                    continue;
                }
                let w = [grid.world(0, i), grid.world(1, j), grid.world(2, k)];
                if !probe.region.contains(w) {
                    continue;
                }
                count += 1;
                for (a, v) in [i, j, k].into_iter().enumerate() {
                    lo[a] = lo[a].min(v);
                    hi[a] = hi[a].max(v);
                }
            }
        }
    }
    if count == 0 {
        return None;
    }
    let mut min = [0.0; 3];
    let mut max = [0.0; 3];
    for a in 0..3 {
        min[a] = grid.world(a, lo[a]) - grid.spacing[a] / 2.0;
        max[a] = grid.world(a, hi[a]) + grid.spacing[a] / 2.0;
    }
    Some(([min, max], count))
}
