//! Reorientation to the canonical LPS grid, and orientation codes.
//!
//! The model sees volumes whose voxel axes run towards the patient's Left, Posterior and
//! Superior (identity direction in LPS). A scanner may store the same data with axes permuted
//! or flipped (feet-first, prone, sagittal acquisitions, NIfTI RAS...). When the direction
//! cosines are a signed permutation, reorientation is a pure re-ordering of the voxels: no
//! interpolation, and every voxel keeps its exact world position. Oblique directions need
//! resampling, which changes values, so it happens only when the caller asks for it
//! ([`ObliquePolicy::ResampleAxisAligned`]).
//!
//! Orientation codes name, per voxel axis, the direction in which the index *increases*
//! (nibabel's `aff2axcodes` convention): the identity direction is "LPS", NIfTI's usual
//! RAS+ storage is "RAS".

use super::resample::{Grid, resample_linear, resample_nearest};
use super::{Geometry, IDENTITY_DIRECTION, Volume};
use crate::{Error, Result};
use rayon::prelude::*;

/// How far (per direction-cosine component) a direction may be from a signed permutation and
/// still count as axis-aligned: 10⁻³, about 0.06°. Over a 500 mm field of view that is half a
/// millimetre of drift, below a voxel; larger tilts (gantry tilt, oblique MR-style planes)
/// must be resampled.
pub const AXIS_ALIGNED_TOLERANCE: f64 = 1e-3;

/// What to do with a volume whose direction is not within [`AXIS_ALIGNED_TOLERANCE`] of a
/// signed permutation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObliquePolicy {
    /// Return [`Error::Geometry`]: the caller did not agree to interpolation.
    Reject,
    /// Resample onto an identity-direction grid that contains every source voxel centre
    /// (trilinear for images, nearest neighbour for labels). The grid's spacing along each
    /// LPS axis is the spacing of the source axis closest to it, its origin the LPS-minimum
    /// corner of the box around the source voxel centres.
    ResampleAxisAligned,
}

/// The signed permutation closest to a direction matrix.
#[derive(Debug, Clone, Copy)]
struct SignedPermutation {
    /// `world_axis[i]`: the LPS axis voxel axis `i` runs along.
    world_axis: [usize; 3],
    /// `sign[i]`: +1 if voxel axis `i` runs towards +L/+P/+S, −1 if towards R/A/I.
    sign: [f64; 3],
    /// Largest component-wise distance of the direction matrix from this permutation.
    deviation: f64,
}

const PERMUTATIONS: [[usize; 3]; 6] = [
    [0, 1, 2],
    [0, 2, 1],
    [1, 0, 2],
    [1, 2, 0],
    [2, 0, 1],
    [2, 1, 0],
];

fn closest_permutation(g: &Geometry) -> Result<SignedPermutation> {
    g.validate()?;
    let d = &g.direction;
    let score = |p: &[usize; 3]| (0..3).map(|i| d[i][p[i]].abs()).sum::<f64>();
    let mut best = PERMUTATIONS[0];
    for p in &PERMUTATIONS[1..] {
        if score(p) > score(&best) {
            best = *p;
        }
    }
    let sign: [f64; 3] = std::array::from_fn(|i| if d[i][best[i]] < 0.0 { -1.0 } else { 1.0 });
    let mut deviation = 0.0f64;
    for i in 0..3 {
        for k in 0..3 {
            let want = if k == best[i] { sign[i] } else { 0.0 };
            deviation = deviation.max((d[i][k] - want).abs());
        }
    }
    Ok(SignedPermutation {
        world_axis: best,
        sign,
        deviation,
    })
}

/// The three-letter orientation code closest to a geometry's direction, e.g. "LPS", "RAS",
/// "LAI": letter `i` is where voxel axis `i` points (L/R, P/A, S/I). For oblique directions
/// it is the code of the nearest signed permutation (largest summed |cosine|).
///
/// # Errors
/// [`Error::Geometry`] if the geometry is invalid (see [`Geometry::validate`]).
pub fn orientation_code(geometry: &Geometry) -> Result<String> {
    const POS: [char; 3] = ['L', 'P', 'S'];
    const NEG: [char; 3] = ['R', 'A', 'I'];
    let p = closest_permutation(geometry)?;
    Ok((0..3)
        .map(|i| {
            let k = p.world_axis[i];
            if p.sign[i] > 0.0 { POS[k] } else { NEG[k] }
        })
        .collect())
}

/// Re-orders the voxels so that the voxel axes run +L, +P, +S, without interpolation.
///
/// The result's direction is the source direction with rows permuted and negated: exactly the
/// identity when the source cosines are exact signed unit vectors (what axial CT writes), and
/// otherwise within [`AXIS_ALIGNED_TOLERANCE`] of it — kept unrounded so that no voxel moves.
/// Fails with [`Error::Geometry`] for oblique directions; see [`reorient_image_to_lps`] and
/// [`reorient_labels_to_lps`] to resample those.
///
/// # Errors
/// [`Error::Geometry`] for an oblique direction (beyond [`AXIS_ALIGNED_TOLERANCE`]).
pub fn reorient_to_lps<T: Clone + Send + Sync>(vol: &Volume<T>) -> Result<Volume<T>> {
    let p = closest_permutation(vol.geometry())?;
    if p.deviation > AXIS_ALIGNED_TOLERANCE {
        return Err(oblique_error(vol.geometry(), p.deviation));
    }
    permute(vol, &p)
}

/// [`reorient_to_lps`] for images, with trilinear resampling of oblique volumes when `policy`
/// allows it (`fill`, e.g. −1000 HU, outside the source).
///
/// # Errors
/// [`Error::Geometry`] for an oblique direction under [`ObliquePolicy::Reject`], or when the
/// axis-aligned grid around an oblique volume would be too large.
pub fn reorient_image_to_lps(
    vol: &Volume<f32>,
    policy: ObliquePolicy,
    fill: f32,
) -> Result<Volume<f32>> {
    match oblique_target(vol, policy)? {
        None => reorient_to_lps(vol),
        Some(grid) => resample_linear(vol, &grid, fill),
    }
}

/// [`reorient_to_lps`] for label maps, with nearest-neighbour resampling of oblique volumes
/// when `policy` allows it (`fill`, normally 0, outside the source).
///
/// # Errors
/// As [`reorient_image_to_lps`].
pub fn reorient_labels_to_lps<T: Copy + Send + Sync>(
    vol: &Volume<T>,
    policy: ObliquePolicy,
    fill: T,
) -> Result<Volume<T>> {
    match oblique_target(vol, policy)? {
        None => reorient_to_lps(vol),
        Some(grid) => resample_nearest(vol, &grid, fill),
    }
}

fn oblique_error(g: &Geometry, deviation: f64) -> Error {
    Error::Geometry(format!(
        "direction {:?} is oblique (off a signed permutation by {deviation:.2e} > \
         {AXIS_ALIGNED_TOLERANCE:e}); it cannot be reoriented without resampling",
        g.direction
    ))
}

/// `None` when the volume is axis-aligned (pure permutation), else the resampling grid or the
/// policy's refusal.
fn oblique_target<T>(vol: &Volume<T>, policy: ObliquePolicy) -> Result<Option<Grid>> {
    let g = vol.geometry();
    let p = closest_permutation(g)?;
    if p.deviation <= AXIS_ALIGNED_TOLERANCE {
        return Ok(None);
    }
    if policy == ObliquePolicy::Reject {
        return Err(oblique_error(g, p.deviation));
    }
    let n = vol.dims();
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for corner in 0..8 {
        let v: [f64; 3] = std::array::from_fn(|i| {
            if corner >> i & 1 == 1 {
                (n[i] - 1) as f64
            } else {
                0.0
            }
        });
        let w = g.voxel_to_world(v);
        for k in 0..3 {
            lo[k] = lo[k].min(w[k]);
            hi[k] = hi[k].max(w[k]);
        }
    }
    let mut spacing = [0.0; 3];
    for i in 0..3 {
        spacing[p.world_axis[i]] = g.spacing[i];
    }
    let mut dims = [0usize; 3];
    for k in 0..3 {
        // Enough voxels that the last centre reaches `hi`; the slack absorbs rounding so an
        // exact multiple does not gain a voxel.
        let steps = ((hi[k] - lo[k]) / spacing[k] - 1e-9).ceil().max(0.0);
        if steps >= super::MAX_VOXELS as f64 {
            return Err(Error::Geometry(format!(
                "the axis-aligned grid around {n:?} voxels of {g:?} is too large"
            )));
        }
        dims[k] = steps as usize + 1;
    }
    Grid::new(
        dims,
        Geometry {
            spacing,
            origin: lo,
            direction: IDENTITY_DIRECTION,
        },
    )
    .map(Some)
}

fn permute<T: Clone + Send + Sync>(vol: &Volume<T>, p: &SignedPermutation) -> Result<Volume<T>> {
    let n = vol.dims();
    let g = vol.geometry();
    let stride = [1isize, n[0] as isize, (n[0] * n[1]) as isize];
    let mut out_dims = [0usize; 3];
    let mut step = [0isize; 3];
    let mut base = 0isize;
    let mut corner = [0.0f64; 3];
    let mut geometry = *g;
    for i in 0..3 {
        let k = p.world_axis[i];
        out_dims[k] = n[i];
        geometry.spacing[k] = g.spacing[i];
        // `+ 0.0` turns the −0.0 of a negated zero cosine into +0.0.
        geometry.direction[k] = g.direction[i].map(|c| p.sign[i] * c + 0.0);
        if p.sign[i] < 0.0 {
            step[k] = -stride[i];
            base += (n[i] as isize - 1) * stride[i];
            corner[i] = (n[i] - 1) as f64;
        } else {
            step[k] = stride[i];
        }
    }
    geometry.origin = g.voxel_to_world(corner);
    let src = vol.data();
    let slice_len = out_dims[0] * out_dims[1];
    let data: Vec<T> = (0..out_dims[2])
        .into_par_iter()
        .flat_map_iter(|z| {
            (0..slice_len).map(move |xy| {
                let (x, y) = (xy % out_dims[0], xy / out_dims[0]);
                let idx = base + x as isize * step[0] + y as isize * step[1] + z as isize * step[2];
                src[idx as usize].clone()
            })
        })
        .collect();
    Volume::from_vec(out_dims, data, geometry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn volume_with(direction: [[f64; 3]; 3]) -> Volume<u32> {
        let g = Geometry {
            spacing: [0.7, 0.8, 2.5],
            origin: [-12.0, 30.5, 400.0],
            direction,
        };
        let dims = [4, 3, 5];
        Volume::from_vec(dims, (0..60).collect(), g).unwrap()
    }

    /// Every source voxel appears in the output at the same world position.
    fn assert_same_world_positions(src: &Volume<u32>, out: &Volume<u32>, tol: f64) {
        assert_eq!(out.len(), src.len());
        for idx in 0..out.len() {
            let [x, y, z] = out.coords(idx);
            let w = out
                .geometry()
                .voxel_to_world([x as f64, y as f64, z as f64]);
            let v = src.geometry().world_to_voxel(w);
            let r = v.map(f64::round);
            for i in 0..3 {
                assert!((v[i] - r[i]).abs() < tol, "{v:?}");
            }
            assert_eq!(
                out.data()[idx],
                src[[r[0] as usize, r[1] as usize, r[2] as usize]]
            );
        }
    }

    fn assert_identity(d: [[f64; 3]; 3], tol: f64) {
        for i in 0..3 {
            for k in 0..3 {
                let want = if i == k { 1.0 } else { 0.0 };
                assert!((d[i][k] - want).abs() <= tol, "{d:?}");
            }
        }
    }

    #[test]
    fn codes_follow_the_axcodes_convention() {
        let code = |d| orientation_code(volume_with(d).geometry()).unwrap();
        assert_eq!(code(IDENTITY_DIRECTION), "LPS");
        assert_eq!(
            code([[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]]),
            "RAS"
        );
        assert_eq!(
            code([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]]),
            "LAI"
        );
        // Sagittal: voxel x runs A, y runs I, z runs L.
        assert_eq!(
            code([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]),
            "AIL"
        );
        // 20° about S is still closest to LPS.
        let (s, c) = 20f64.to_radians().sin_cos();
        assert_eq!(code([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]), "LPS");
    }

    #[test]
    fn every_signed_permutation_reorients_exactly() {
        for p in PERMUTATIONS {
            for flips in 0..8 {
                let mut d = [[0.0; 3]; 3];
                for i in 0..3 {
                    d[i][p[i]] = if flips >> i & 1 == 1 { -1.0 } else { 1.0 };
                }
                let v = volume_with(d);
                let r = reorient_to_lps(&v).unwrap();
                assert_eq!(r.geometry().direction, IDENTITY_DIRECTION, "{d:?}");
                assert_eq!(orientation_code(r.geometry()).unwrap(), "LPS");
                assert_same_world_positions(&v, &r, 1e-9);
                for i in 0..3 {
                    assert_eq!(r.dims()[p[i]], v.dims()[i]);
                    assert_eq!(r.geometry().spacing[p[i]], v.geometry().spacing[i]);
                }
            }
        }
    }

    #[test]
    fn lps_input_is_unchanged() {
        let v = volume_with(IDENTITY_DIRECTION);
        assert_eq!(reorient_to_lps(&v).unwrap(), v);
    }

    #[test]
    fn near_axis_aligned_keeps_exact_positions() {
        let (s, c) = 5e-4f64.sin_cos();
        // RAS-like with a tiny tilt about S.
        let v = volume_with([[-c, -s, 0.0], [s, -c, 0.0], [0.0, 0.0, 1.0]]);
        let r = reorient_to_lps(&v).unwrap();
        assert_same_world_positions(&v, &r, 1e-9);
        assert_identity(r.geometry().direction, AXIS_ALIGNED_TOLERANCE);
        let r2 = reorient_labels_to_lps(&v, ObliquePolicy::Reject, 0).unwrap();
        assert_eq!(r, r2);
    }

    #[test]
    fn oblique_is_rejected_unless_resampling_is_allowed() {
        let (s, c) = 0.1f64.sin_cos();
        let v = volume_with([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]]);
        assert!(matches!(reorient_to_lps(&v), Err(Error::Geometry(_))));
        assert!(reorient_labels_to_lps(&v, ObliquePolicy::Reject, 0).is_err());
        let labels = reorient_labels_to_lps(&v, ObliquePolicy::ResampleAxisAligned, 999).unwrap();
        assert_eq!(labels.geometry().direction, IDENTITY_DIRECTION);
        // Nearest neighbour never invents values.
        assert!(labels.data().iter().all(|&x| x < 60 || x == 999));
        assert!(labels.data().contains(&999));
    }

    #[test]
    fn oblique_image_resampling_reproduces_a_linear_field() {
        let (s, c) = 0.3f64.sin_cos();
        let g = Geometry {
            spacing: [0.9, 1.1, 2.0],
            origin: [5.0, -3.0, 12.0],
            direction: [[c, 0.0, -s], [0.0, 1.0, 0.0], [s, 0.0, c]],
        };
        let field = |w: [f64; 3]| 3.0 * w[0] - 2.0 * w[1] + 0.5 * w[2] + 7.0;
        let dims = [9, 7, 6];
        let mut v = Volume::filled(dims, 0.0f32, g).unwrap();
        for idx in 0..v.len() {
            let [x, y, z] = v.coords(idx);
            v.data_mut()[idx] = field(g.voxel_to_world([x as f64, y as f64, z as f64])) as f32;
        }
        let r = reorient_image_to_lps(&v, ObliquePolicy::ResampleAxisAligned, -1000.0).unwrap();
        assert_eq!(r.geometry().direction, IDENTITY_DIRECTION);
        assert_eq!(r.geometry().spacing, [0.9, 1.1, 2.0]);
        let mut checked = 0;
        for idx in 0..r.len() {
            let [x, y, z] = r.coords(idx);
            let w = r.geometry().voxel_to_world([x as f64, y as f64, z as f64]);
            let sv = g.world_to_voxel(w);
            let inner = (0..3).all(|i| sv[i] >= 0.0 && sv[i] <= (dims[i] - 1) as f64);
            let outside = (0..3).any(|i| sv[i] < -0.5 || sv[i] > dims[i] as f64 - 0.5);
            if inner {
                assert!((r.data()[idx] as f64 - field(w)).abs() < 1e-3);
                checked += 1;
            } else if outside {
                assert_eq!(r.data()[idx], -1000.0);
            }
        }
        assert!(checked > 100, "only {checked} interior samples");
        // Every source voxel centre lies inside the new grid.
        for idx in 0..v.len() {
            let [x, y, z] = v.coords(idx);
            let rv = r
                .geometry()
                .world_to_voxel(g.voxel_to_world([x as f64, y as f64, z as f64]));
            for i in 0..3 {
                assert!(rv[i] > -1e-6 && rv[i] < r.dims()[i] as f64 - 1.0 + 1e-6);
            }
        }
    }

    #[test]
    fn invalid_geometry_is_an_error() {
        let mut g = *volume_with(IDENTITY_DIRECTION).geometry();
        g.direction[1] = [1.0, 0.0, 0.0];
        assert!(orientation_code(&g).is_err());
        g.direction = IDENTITY_DIRECTION;
        g.spacing[2] = 0.0;
        assert!(orientation_code(&g).is_err());
    }
}
