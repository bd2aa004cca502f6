//! Resampling onto another voxel grid: trilinear for images, nearest neighbour for label maps.
//!
//! # Conventions (shared with SimpleITK's `ResampleImageFilter`)
//!
//! - Every output voxel centre is mapped to world (LPS) space through the target
//!   [`Geometry`], then to a continuous source voxel coordinate `c` (integers are voxel
//!   centres).
//! - A sample is *inside* when `-0.5 <= c <= n - 0.5` on every axis (within 10⁻⁶ voxel), i.e.
//!   inside the physical footprint of the source grid; otherwise the output voxel is the
//!   caller's `fill` (e.g. −1000 HU for CT, 0 for labels). Inside the footprint but beyond the
//!   outermost voxel centres the edge value is used (coordinates are clamped to `[0, n - 1]`).
//! - Trilinear: `c` is clamped to `[0, n - 1]`, then interpolated between the two neighbouring
//!   voxel centres on each axis. This equals `scipy.ndimage.map_coordinates(order=1,
//!   mode="nearest")` inside the footprint.
//! - Nearest: index `floor(c + 0.5)` clamped to `[0, n - 1]` (ties round up), equal to
//!   `map_coordinates(order=0, mode="nearest")` inside the footprint. It only ever copies a
//!   source value or `fill`, so a label map never gains a label.
//! - Changing the spacing ([`Grid::with_spacing`]) keeps origin (the centre of the first voxel)
//!   and direction, uses exactly the requested spacing, and sets `dims = round(n * s / t)`
//!   (ties away from zero, at least 1), so the output covers the same physical extent `n * s`
//!   to within half an output voxel. This is SimpleITK's usual recipe and scipy's
//!   `zoom` output shape.
//!
//! The tests compare both kernels against `map_coordinates` fixtures written by
//! `core/tests/fixtures/make_volume_fixtures.py`.

use super::ops::checked_voxel_count;
use super::{Geometry, Volume, dot};
use crate::{Error, Result};
use rayon::prelude::*;

/// The model's input spacing: 1 mm isotropic (paper: "1.0 mm isotropic").
pub const DEFAULT_SPACING_MM: [f64; 3] = [1.0, 1.0, 1.0];

/// Slack on the footprint test, in voxels, so that grids built exactly on a footprint edge do
/// not lose their outermost samples to rounding.
const FOOTPRINT_SLACK: f64 = 1e-6;

/// Below this many voxels of drift across the whole output grid, a cross term of the
/// output→source mapping is treated as zero and the separable fast path is taken.
const SEPARABLE_DRIFT: f64 = 1e-9;

/// A voxel grid without data: dimensions plus geometry. Resampling targets are grids.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grid {
    /// Number of voxels along x, y, z.
    pub dims: [usize; 3],
    /// Placement of the grid in LPS space.
    pub geometry: Geometry,
}

impl Grid {
    /// A validated grid: valid geometry, no zero dimension, at most
    /// [`MAX_VOXELS`](super::MAX_VOXELS) voxels.
    ///
    /// # Errors
    /// [`Error::Geometry`] or [`Error::InvalidArgument`] describing the first problem.
    pub fn new(dims: [usize; 3], geometry: Geometry) -> Result<Self> {
        let g = Grid { dims, geometry };
        g.validate()?;
        Ok(g)
    }

    /// The grid a volume lives on.
    pub fn of<T>(vol: &Volume<T>) -> Self {
        Grid {
            dims: vol.dims(),
            geometry: *vol.geometry(),
        }
    }

    /// Checks the geometry and the dimensions (the fields are public, so resampling checks
    /// again).
    ///
    /// # Errors
    /// As [`Grid::new`].
    pub fn validate(&self) -> Result<()> {
        self.geometry.validate()?;
        checked_voxel_count(self.dims).map(|_| ())
    }

    /// The grid covering the same physical extent with voxel spacing `spacing` (mm): same
    /// origin and direction, `dims[i] = max(1, round(n[i] * s[i] / spacing[i]))`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a non-finite or non-positive spacing or an output above
    /// [`MAX_VOXELS`](super::MAX_VOXELS); errors of [`Grid::validate`] for `self`.
    pub fn with_spacing(&self, spacing: [f64; 3]) -> Result<Grid> {
        self.validate()?;
        let mut dims = [0usize; 3];
        for i in 0..3 {
            let t = spacing[i];
            if !t.is_finite() || t <= 0.0 {
                return Err(Error::InvalidArgument(format!(
                    "target spacing {t} along axis {i} is not a finite positive number of mm"
                )));
            }
            let m = (self.dims[i] as f64 * self.geometry.spacing[i] / t).round();
            if !m.is_finite() || m > super::MAX_VOXELS as f64 {
                return Err(Error::InvalidArgument(format!(
                    "target spacing {spacing:?} turns dimensions {:?} into more than {} voxels",
                    self.dims,
                    super::MAX_VOXELS
                )));
            }
            dims[i] = (m as usize).max(1);
        }
        Grid::new(
            dims,
            Geometry {
                spacing,
                ..self.geometry
            },
        )
    }
}

/// Trilinear resampling of an image onto `target`; samples outside the source footprint get
/// `fill`. See the module documentation for the exact convention.
///
/// # Errors
/// Errors of [`Grid::validate`] for `target`, or [`Error::Geometry`] if the mapping between
/// the grids is not finite.
pub fn resample_linear(vol: &Volume<f32>, target: &Grid, fill: f32) -> Result<Volume<f32>> {
    let map = Mapping::new(&Grid::of(vol), target)?;
    let src = vol.data();
    let n = vol.dims();
    let slice_len = target.dims[0] * target.dims[1];
    let mut out = vec![fill; checked_voxel_count(target.dims)?];
    if map.separable {
        let tables: [Vec<Option<LinearTap>>; 3] = std::array::from_fn(|a| {
            (0..target.dims[a])
                .map(|t| LinearTap::new(map.axis_coord(a, t), n[a]))
                .collect()
        });
        // Source columns any output voxel reads; rows are blended over this range only.
        let (x_lo, x_hi) = tables[0]
            .iter()
            .flatten()
            .fold((usize::MAX, 0), |(lo, hi), t| (lo.min(t.i0), hi.max(t.i1)));
        out.par_chunks_mut(slice_len)
            .enumerate()
            .for_each(|(k, slice)| {
                let Some(tz) = tables[2][k] else { return };
                if x_lo > x_hi {
                    return;
                }
                // Per output row: blend the four source rows along y and z (contiguous, so it
                // vectorises), then interpolate along x from the blended row.
                let mut blended = vec![0.0f64; x_hi + 1 - x_lo];
                for (j, row) in slice.chunks_mut(target.dims[0]).enumerate() {
                    let Some(ty) = tables[1][j] else { continue };
                    let r = |y: usize, z: usize| &src[n[0] * (y + n[1] * z)..][x_lo..=x_hi];
                    let (r00, r10) = (r(ty.i0, tz.i0), r(ty.i1, tz.i0));
                    let (r01, r11) = (r(ty.i0, tz.i1), r(ty.i1, tz.i1));
                    for ((((b, &a00), &a10), &a01), &a11) in
                        blended.iter_mut().zip(r00).zip(r10).zip(r01).zip(r11)
                    {
                        let lo = lerp(a00 as f64, a10 as f64, ty.w);
                        let hi = lerp(a01 as f64, a11 as f64, ty.w);
                        *b = lerp(lo, hi, tz.w);
                    }
                    for (o, tx) in row.iter_mut().zip(&tables[0]) {
                        if let Some(tx) = tx {
                            *o = lerp(blended[tx.i0 - x_lo], blended[tx.i1 - x_lo], tx.w) as f32;
                        }
                    }
                }
            });
    } else {
        out.par_chunks_mut(slice_len)
            .enumerate()
            .for_each(|(k, slice)| {
                for (j, row) in slice.chunks_mut(target.dims[0]).enumerate() {
                    for (i, o) in row.iter_mut().enumerate() {
                        let c = map.source_coord(i, j, k);
                        let Some(t) = LinearTap::new_3d(c, n) else {
                            continue;
                        };
                        let at =
                            |x: usize, y: usize, z: usize| src[x + n[0] * (y + n[1] * z)] as f64;
                        let [tx, ty, tz] = t;
                        let plane = |z: usize| {
                            let a = lerp(at(tx.i0, ty.i0, z), at(tx.i1, ty.i0, z), tx.w);
                            let b = lerp(at(tx.i0, ty.i1, z), at(tx.i1, ty.i1, z), tx.w);
                            lerp(a, b, ty.w)
                        };
                        *o = lerp(plane(tz.i0), plane(tz.i1), tz.w) as f32;
                    }
                }
            });
    }
    Volume::from_vec(target.dims, out, target.geometry)
}

/// Nearest-neighbour resampling onto `target`; samples outside the source footprint get
/// `fill`. Every output value is a source value or `fill`, so label maps keep their label set.
///
/// # Errors
/// As [`resample_linear`].
pub fn resample_nearest<T: Copy + Send + Sync>(
    vol: &Volume<T>,
    target: &Grid,
    fill: T,
) -> Result<Volume<T>> {
    let map = Mapping::new(&Grid::of(vol), target)?;
    let src = vol.data();
    let n = vol.dims();
    let slice_len = target.dims[0] * target.dims[1];
    let mut out = vec![fill; checked_voxel_count(target.dims)?];
    if map.separable {
        let tables: [Vec<Option<usize>>; 3] = std::array::from_fn(|a| {
            (0..target.dims[a])
                .map(|t| nearest_index(map.axis_coord(a, t), n[a]))
                .collect()
        });
        out.par_chunks_mut(slice_len)
            .enumerate()
            .for_each(|(k, slice)| {
                let Some(z) = tables[2][k] else { return };
                for (j, row) in slice.chunks_mut(target.dims[0]).enumerate() {
                    let Some(y) = tables[1][j] else { continue };
                    let r = &src[n[0] * (y + n[1] * z)..][..n[0]];
                    for (o, x) in row.iter_mut().zip(&tables[0]) {
                        if let Some(x) = x {
                            *o = r[*x];
                        }
                    }
                }
            });
    } else {
        out.par_chunks_mut(slice_len)
            .enumerate()
            .for_each(|(k, slice)| {
                for (j, row) in slice.chunks_mut(target.dims[0]).enumerate() {
                    for (i, o) in row.iter_mut().enumerate() {
                        let c = map.source_coord(i, j, k);
                        if let (Some(x), Some(y), Some(z)) = (
                            nearest_index(c[0], n[0]),
                            nearest_index(c[1], n[1]),
                            nearest_index(c[2], n[2]),
                        ) {
                            *o = src[x + n[0] * (y + n[1] * z)];
                        }
                    }
                }
            });
    }
    Volume::from_vec(target.dims, out, target.geometry)
}

/// Trilinear resampling of an image to `spacing` (mm) over the same extent
/// ([`Grid::with_spacing`]); use [`DEFAULT_SPACING_MM`] for the model's input.
///
/// # Errors
/// Errors of [`Grid::with_spacing`] and [`resample_linear`].
pub fn resample_image_to_spacing(
    vol: &Volume<f32>,
    spacing: [f64; 3],
    fill: f32,
) -> Result<Volume<f32>> {
    resample_linear(vol, &Grid::of(vol).with_spacing(spacing)?, fill)
}

/// Nearest-neighbour resampling of a label map to `spacing` (mm) over the same extent
/// ([`Grid::with_spacing`]).
///
/// # Errors
/// Errors of [`Grid::with_spacing`] and [`resample_nearest`].
pub fn resample_labels_to_spacing<T: Copy + Send + Sync>(
    vol: &Volume<T>,
    spacing: [f64; 3],
    fill: T,
) -> Result<Volume<T>> {
    resample_nearest(vol, &Grid::of(vol).with_spacing(spacing)?, fill)
}

#[inline]
fn lerp(a: f64, b: f64, w: f64) -> f64 {
    a + w * (b - a)
}

/// Whether a continuous coordinate lies in the footprint `[-0.5, n - 0.5]` of an axis.
#[inline]
fn in_footprint(c: f64, n: usize) -> bool {
    c >= -0.5 - FOOTPRINT_SLACK && c <= n as f64 - 0.5 + FOOTPRINT_SLACK
}

/// Nearest voxel index of a continuous coordinate, `None` outside the footprint (or NaN).
#[inline]
fn nearest_index(c: f64, n: usize) -> Option<usize> {
    in_footprint(c, n).then(|| ((c + 0.5).floor().max(0.0) as usize).min(n - 1))
}

/// The two voxels and the weight of the upper one for linear interpolation along one axis.
#[derive(Debug, Clone, Copy)]
struct LinearTap {
    i0: usize,
    i1: usize,
    w: f64,
}

impl LinearTap {
    /// `None` outside the footprint; otherwise the clamped taps.
    #[inline]
    fn new(c: f64, n: usize) -> Option<Self> {
        if !in_footprint(c, n) {
            return None;
        }
        if n == 1 {
            return Some(LinearTap {
                i0: 0,
                i1: 0,
                w: 0.0,
            });
        }
        let c = c.clamp(0.0, (n - 1) as f64);
        let i0 = (c.floor() as usize).min(n - 2);
        Some(LinearTap {
            i0,
            i1: i0 + 1,
            w: c - i0 as f64,
        })
    }

    #[inline]
    fn new_3d(c: [f64; 3], n: [usize; 3]) -> Option<[Self; 3]> {
        Some([
            Self::new(c[0], n[0])?,
            Self::new(c[1], n[1])?,
            Self::new(c[2], n[2])?,
        ])
    }
}

/// The affine map from target voxel coordinates to source voxel coordinates:
/// `c = c0 + m · v`.
struct Mapping {
    m: [[f64; 3]; 3],
    c0: [f64; 3],
    /// `m` is diagonal to within [`SEPARABLE_DRIFT`] over the target grid.
    separable: bool,
}

impl Mapping {
    fn new(source: &Grid, target: &Grid) -> Result<Self> {
        source.validate()?;
        target.validate()?;
        let (s, t) = (&source.geometry, &target.geometry);
        let mut m = [[0.0; 3]; 3];
        for a in 0..3 {
            for b in 0..3 {
                m[a][b] = dot(s.direction[a], t.direction[b]) * t.spacing[b] / s.spacing[a];
            }
        }
        let c0 = s.world_to_voxel(t.origin);
        if m.iter().flatten().chain(&c0).any(|x| !x.is_finite()) {
            return Err(Error::Geometry(format!(
                "the mapping from target grid {target:?} to the source grid is not finite"
            )));
        }
        let separable = (0..3).all(|a| {
            (0..3).all(|b| a == b || m[a][b].abs() * target.dims[b] as f64 <= SEPARABLE_DRIFT)
        });
        Ok(Mapping { m, c0, separable })
    }

    #[inline]
    fn source_coord(&self, i: usize, j: usize, k: usize) -> [f64; 3] {
        let v = [i as f64, j as f64, k as f64];
        std::array::from_fn(|a| {
            self.c0[a] + self.m[a][0] * v[0] + self.m[a][1] * v[1] + self.m[a][2] * v[2]
        })
    }

    /// Source coordinate along axis `a` of target index `t` along the same axis (separable
    /// case only: the cross terms are negligible).
    #[inline]
    fn axis_coord(&self, a: usize, t: usize) -> f64 {
        self.c0[a] + self.m[a][a] * t as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volume::reorient::reorient_to_lps;

    fn ramp_volume(dims: [usize; 3], g: Geometry) -> Volume<f32> {
        let n = dims.iter().product::<usize>();
        // Deterministic, non-linear values so interpolation errors show.
        let data = (0..n).map(|i| ((i * 7919) % 1013) as f32 - 500.0).collect();
        Volume::from_vec(dims, data, g).unwrap()
    }

    #[test]
    fn resampling_onto_the_own_grid_is_the_identity() {
        let g = Geometry::axis_aligned([0.7, 0.7, 1.25], [-3.0, 4.0, 5.0]);
        let v = ramp_volume([9, 8, 7], g);
        assert_eq!(resample_linear(&v, &Grid::of(&v), -1000.0).unwrap(), v);
        assert_eq!(resample_nearest(&v, &Grid::of(&v), -1000.0).unwrap(), v);
    }

    #[test]
    fn separable_and_general_kernels_agree() {
        let g = Geometry::axis_aligned([0.7, 0.9, 2.5], [-3.0, 4.0, 5.0]);
        let v = ramp_volume([10, 9, 6], g);
        let target = Grid::new(
            [13, 9, 11],
            Geometry::axis_aligned([0.55, 1.05, 1.3], [-3.9, 3.1, 3.7]),
        )
        .unwrap();
        // The same grid with its voxel axes stored as (z, x, -y): a non-separable mapping.
        let d = target.dims;
        let s = target.geometry.spacing;
        let permuted = Grid::new(
            [d[2], d[0], d[1]],
            Geometry {
                spacing: [s[2], s[0], s[1]],
                origin: target
                    .geometry
                    .voxel_to_world([0.0, (d[1] - 1) as f64, 0.0]),
                direction: [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, -1.0, 0.0]],
            },
        )
        .unwrap();
        assert!(Mapping::new(&Grid::of(&v), &target).unwrap().separable);
        assert!(!Mapping::new(&Grid::of(&v), &permuted).unwrap().separable);
        let a = resample_linear(&v, &target, -1000.0).unwrap();
        let b = reorient_to_lps(&resample_linear(&v, &permuted, -1000.0).unwrap()).unwrap();
        assert_eq!(a.dims(), b.dims());
        for (x, y) in a.data().iter().zip(b.data()) {
            assert!((x - y).abs() <= 1e-4 * x.abs().max(1.0), "{x} vs {y}");
        }
        assert!(a.data().contains(&-1000.0));
        let a = resample_nearest(&v, &target, -1.0).unwrap();
        let b = reorient_to_lps(&resample_nearest(&v, &permuted, -1.0).unwrap()).unwrap();
        assert_eq!(a.data(), b.data());
    }

    #[test]
    fn spacing_rule_covers_the_extent() {
        let g = Geometry::axis_aligned([0.7, 0.7, 1.25], [0.0; 3]);
        let grid = Grid::new([512, 512, 300], g).unwrap();
        let one = grid.with_spacing(DEFAULT_SPACING_MM).unwrap();
        assert_eq!(one.dims, [358, 358, 375]);
        assert_eq!(one.geometry.origin, g.origin);
        assert_eq!(one.geometry.spacing, [1.0; 3]);
        // Very coarse spacing still leaves one voxel.
        assert_eq!(grid.with_spacing([1e4; 3]).unwrap().dims, [1, 1, 1]);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        let v = ramp_volume([4, 4, 4], g);
        let grid = Grid::of(&v);
        for bad in [
            [0.0, 1.0, 1.0],
            [-1.0, 1.0, 1.0],
            [f64::NAN, 1.0, 1.0],
            [f64::INFINITY, 1.0, 1.0],
            [1e-300, 1.0, 1.0],
            [1e-4, 1e-4, 1e-4],
        ] {
            assert!(grid.with_spacing(bad).is_err(), "{bad:?}");
            assert!(resample_image_to_spacing(&v, bad, 0.0).is_err());
            assert!(resample_labels_to_spacing(&v, bad, 0.0).is_err());
        }
        let mut target = grid;
        target.dims = [0, 4, 4];
        assert!(resample_linear(&v, &target, 0.0).is_err());
        target.dims = [usize::MAX, 2, 1];
        assert!(resample_nearest(&v, &target, 0.0).is_err());
        target = grid;
        target.geometry.spacing[1] = 0.0;
        assert!(resample_linear(&v, &target, 0.0).is_err());
        target = grid;
        target.geometry.origin[2] = f64::NAN;
        assert!(resample_nearest(&v, &target, 0.0).is_err());
        target = grid;
        target.geometry.direction[0] = [0.0, 1.0, 0.0];
        assert!(resample_linear(&v, &target, 0.0).is_err());
        assert!(Grid::new([2, 2, 2], target.geometry).is_err());
        // Valid grids whose mapping overflows.
        let tiny = Volume::from_vec(
            [1, 1, 1],
            vec![1.0f32],
            Geometry::axis_aligned([1e-300; 3], [0.0; 3]),
        )
        .unwrap();
        let huge = Grid::new([2, 1, 1], Geometry::axis_aligned([1e300; 3], [0.0; 3])).unwrap();
        assert!(matches!(
            resample_linear(&tiny, &huge, 0.0),
            Err(Error::Geometry(_))
        ));
    }

    #[test]
    fn nan_coordinates_never_index() {
        assert_eq!(nearest_index(f64::NAN, 3), None);
        assert!(LinearTap::new(f64::NAN, 3).is_none());
        assert_eq!(nearest_index(2.5, 3), Some(2));
        assert_eq!(nearest_index(2.6, 3), None);
        assert_eq!(nearest_index(-0.5, 3), Some(0));
        let t = LinearTap::new(2.4, 3).unwrap();
        assert_eq!((t.i0, t.i1, t.w), (1, 2, 1.0));
    }
}
