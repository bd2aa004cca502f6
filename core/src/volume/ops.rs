//! Grid-exact volume operations: crop, pad, fixed-size windows, and the paper's HU
//! normalisation.
//!
//! Nothing here interpolates. Cropping and padding move the grid by whole voxels, so every
//! voxel that survives keeps its exact world (LPS) position: the new origin is the world
//! position of the old voxel that becomes voxel (0, 0, 0), spacing and direction are unchanged.

use super::{Geometry, Volume};
use crate::{Error, Result};
use rayon::prelude::*;

/// Largest number of voxels any operation in this module (or resampling) will allocate:
/// 2³¹ voxels, i.e. 8 GiB of `f32`. A spinal CT at 1 mm is below 10⁸ voxels; anything near this
/// bound comes from a corrupt header or a wrong spacing, and refusing it beats an abort on
/// allocation failure.
pub const MAX_VOXELS: usize = 1 << 31;

/// Lower end of the paper's HU window (air). Values below are clipped to it.
pub const HU_MIN: f32 = -1000.0;

/// Upper end of the paper's HU window (dense cortical bone). Values above are clipped to it;
/// metal and contrast saturate here, which is what the model was trained with.
pub const HU_MAX: f32 = 1000.0;

/// Largest offset (in voxels) of a window start from the grid. Starts beyond ±2³¹ voxels cannot
/// overlap any real grid and would overflow index arithmetic, so they are rejected.
const MAX_START_OFFSET: i64 = 1 << 31;

/// Number of voxels of a grid with `dims`, checked: no zero dimension, no overflow, at most
/// [`MAX_VOXELS`].
pub(crate) fn checked_voxel_count(dims: [usize; 3]) -> Result<usize> {
    if dims.contains(&0) {
        return Err(Error::InvalidArgument(format!(
            "dimensions {dims:?} contain a zero"
        )));
    }
    let n = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&n| n <= MAX_VOXELS)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "dimensions {dims:?} exceed the limit of {MAX_VOXELS} voxels"
            ))
        })?;
    Ok(n)
}

/// Extracts the window of `dims` voxels whose voxel (0, 0, 0) is the source voxel `start`
/// (which may lie outside the grid, as may any part of the window). Source voxels inside the
/// grid are copied, the rest are `fill`.
///
/// This is the primitive behind [`crop`], [`pad`] and [`crop_or_pad_centered`]; its geometry
/// is exact: origin = world position of source voxel `start`, same spacing and direction.
///
/// # Errors
/// [`Error::InvalidArgument`] if `dims` has a zero, exceeds [`MAX_VOXELS`], or `start` is more
/// than 2³¹ voxels away from the grid.
pub fn extract_region<T: Clone + Send + Sync>(
    vol: &Volume<T>,
    start: [i64; 3],
    dims: [usize; 3],
    fill: T,
) -> Result<Volume<T>> {
    let n = checked_voxel_count(dims)?;
    if start.iter().any(|s| s.abs() > MAX_START_OFFSET) {
        return Err(Error::InvalidArgument(format!(
            "window start {start:?} is more than {MAX_START_OFFSET} voxels from the grid"
        )));
    }
    let src = vol.dims();
    let g = vol.geometry();
    let geometry = Geometry {
        origin: g.voxel_to_world([start[0] as f64, start[1] as f64, start[2] as f64]),
        ..*g
    };
    geometry.validate()?;

    // Overlap along x, in output coordinates: [x_lo, x_hi).
    let x_lo = (-start[0]).clamp(0, dims[0] as i64) as usize;
    let x_hi = (src[0] as i64 - start[0]).clamp(0, dims[0] as i64) as usize;
    let src_data = vol.data();
    let slice_len = dims[0] * dims[1];
    let mut out = vec![fill.clone(); n];
    out.par_chunks_mut(slice_len)
        .enumerate()
        .for_each(|(oz, slice)| {
            let z = start[2] + oz as i64;
            if z < 0 || z >= src[2] as i64 {
                return;
            }
            for (oy, row) in slice.chunks_mut(dims[0]).enumerate() {
                let y = start[1] + oy as i64;
                if y < 0 || y >= src[1] as i64 || x_lo >= x_hi {
                    continue;
                }
                let sx = (start[0] + x_lo as i64) as usize;
                let base = src[0] * (y as usize + src[1] * z as usize);
                row[x_lo..x_hi].clone_from_slice(&src_data[base + sx..base + sx + (x_hi - x_lo)]);
            }
        });
    Volume::from_vec(dims, out, geometry)
}

/// Crops to the voxel box starting at `start` with `size` voxels. The box must lie inside the
/// grid and be non-empty; use [`extract_region`] for windows that may leave it.
///
/// # Errors
/// [`Error::InvalidArgument`] if the box is empty or does not fit inside the grid.
pub fn crop<T: Clone + Send + Sync>(
    vol: &Volume<T>,
    start: [usize; 3],
    size: [usize; 3],
) -> Result<Volume<T>> {
    let dims = vol.dims();
    for i in 0..3 {
        let end = start[i].checked_add(size[i]);
        if size[i] == 0 || end.is_none_or(|e| e > dims[i]) {
            return Err(Error::InvalidArgument(format!(
                "crop box start {start:?} size {size:?} does not fit in a non-empty way into \
                 dimensions {dims:?}"
            )));
        }
    }
    // `fill` is never used: the box lies inside the grid. Any voxel serves as its value.
    let any = vol.data()[0].clone();
    extract_region(
        vol,
        [start[0] as i64, start[1] as i64, start[2] as i64],
        size,
        any,
    )
}

/// Pads by `before[i]` voxels at the low end and `after[i]` at the high end of axis `i` with
/// `fill`. Negative amounts crop instead, so `pad(v, [-2; 3], [-2; 3], _)` removes a two-voxel
/// border. The result must keep at least one voxel per axis.
///
/// # Errors
/// [`Error::InvalidArgument`] if an axis would end up with no voxels, or the result exceeds
/// [`MAX_VOXELS`].
pub fn pad<T: Clone + Send + Sync>(
    vol: &Volume<T>,
    before: [i64; 3],
    after: [i64; 3],
    fill: T,
) -> Result<Volume<T>> {
    let src = vol.dims();
    let mut dims = [0usize; 3];
    for i in 0..3 {
        let d = (src[i] as i128) + before[i] as i128 + after[i] as i128;
        if d < 1 || d > MAX_VOXELS as i128 {
            return Err(Error::InvalidArgument(format!(
                "padding {before:?}/{after:?} of dimensions {src:?} leaves axis {i} with {d} voxels"
            )));
        }
        dims[i] = d as usize;
    }
    let start = [
        before[0].checked_neg(),
        before[1].checked_neg(),
        before[2].checked_neg(),
    ];
    let [Some(s0), Some(s1), Some(s2)] = start else {
        return Err(Error::InvalidArgument(format!(
            "padding {before:?} is out of range"
        )));
    };
    extract_region(vol, [s0, s1, s2], dims, fill)
}

/// Crops and/or pads to exactly `dims` voxels around the world (LPS) point `centre_world`,
/// without interpolation — the fixed-size model windows are cut with this.
///
/// Rule: the window's centre in source voxel coordinates, `start + (dims - 1) / 2`, is the
/// grid-aligned position nearest to the point's voxel coordinate `c`, i.e.
/// `start = floor(c - (dims - 1) / 2 + 0.5)` per axis. The point therefore lies within half a
/// voxel of the window centre (exactly on it when it is a voxel centre and `dims` is odd).
/// Parts of the window outside the grid are `fill` (e.g. [`HU_MIN`] for CT).
///
/// # Errors
/// [`Error::InvalidArgument`] if the point is not finite or absurdly far from the grid, or
/// `dims` is invalid as for [`extract_region`].
pub fn crop_or_pad_centered<T: Clone + Send + Sync>(
    vol: &Volume<T>,
    centre_world: [f64; 3],
    dims: [usize; 3],
    fill: T,
) -> Result<Volume<T>> {
    if centre_world.iter().any(|c| !c.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "window centre {centre_world:?} is not finite"
        )));
    }
    checked_voxel_count(dims)?;
    let c = vol.geometry().world_to_voxel(centre_world);
    let mut start = [0i64; 3];
    for i in 0..3 {
        let s = (c[i] - (dims[i] as f64 - 1.0) / 2.0 + 0.5).floor();
        if !s.is_finite() || s.abs() > MAX_START_OFFSET as f64 {
            return Err(Error::InvalidArgument(format!(
                "window centre {centre_world:?} is more than {MAX_START_OFFSET} voxels from \
                 the grid"
            )));
        }
        start[i] = s as i64;
    }
    extract_region(vol, start, dims, fill)
}

/// The paper's intensity normalisation of one value: clip to [[`HU_MIN`], [`HU_MAX`]] and
/// scale to [0, 1] as `(hu + 1000) / 2000`. NaN stays NaN (the slice and volume forms reject it).
#[inline]
pub fn normalize_hu(hu: f32) -> f32 {
    (hu.clamp(HU_MIN, HU_MAX) - HU_MIN) / (HU_MAX - HU_MIN)
}

/// Inverse of [`normalize_hu`] on [0, 1]: `x * 2000 - 1000`. Clipped values cannot be
/// recovered: `denormalize_hu(normalize_hu(3000.0))` is 1000.
#[inline]
pub fn denormalize_hu(x: f32) -> f32 {
    x * (HU_MAX - HU_MIN) + HU_MIN
}

/// Applies [`normalize_hu`] in place. Fails, leaving `values` untouched, if any value is not
/// finite: a NaN or infinite HU means a broken rescale upstream, not air or bone.
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first non-finite value.
pub fn normalize_hu_slice(values: &mut [f32]) -> Result<()> {
    check_finite(values, "HU")?;
    values.par_iter_mut().for_each(|v| *v = normalize_hu(*v));
    Ok(())
}

/// Applies [`denormalize_hu`] in place. Fails, leaving `values` untouched, if any value is not
/// finite or lies outside [0, 1] (which [`normalize_hu`] never produces: such input is not a
/// normalised image).
///
/// # Errors
/// [`Error::InvalidArgument`] naming the first offending value.
pub fn denormalize_hu_slice(values: &mut [f32]) -> Result<()> {
    check_finite(values, "normalised intensity")?;
    if let Some((i, v)) = values
        .iter()
        .enumerate()
        .find(|(_, v)| !(0.0..=1.0).contains(*v))
    {
        return Err(Error::InvalidArgument(format!(
            "normalised intensity {v} at index {i} is outside [0, 1]"
        )));
    }
    values.par_iter_mut().for_each(|v| *v = denormalize_hu(*v));
    Ok(())
}

/// A normalised copy of a HU volume (same grid); see [`normalize_hu_slice`].
///
/// # Errors
/// As [`normalize_hu_slice`].
pub fn normalize_hu_volume(vol: &Volume<f32>) -> Result<Volume<f32>> {
    let mut out = vol.clone();
    normalize_hu_slice(out.data_mut())?;
    Ok(out)
}

/// The HU volume of a normalised volume (same grid); see [`denormalize_hu_slice`].
///
/// # Errors
/// As [`denormalize_hu_slice`].
pub fn denormalize_hu_volume(vol: &Volume<f32>) -> Result<Volume<f32>> {
    let mut out = vol.clone();
    denormalize_hu_slice(out.data_mut())?;
    Ok(out)
}

fn check_finite(values: &[f32], what: &str) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(i) => Err(Error::InvalidArgument(format!(
            "{what} value {} at index {i} is not finite",
            values[i]
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique_volume() -> Volume<i32> {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let g = Geometry {
            spacing: [0.7, 0.9, 2.5],
            origin: [-12.0, 30.5, 400.0],
            direction: [[s, s, 0.0], [-s, s, 0.0], [0.0, 0.0, 1.0]],
        };
        let dims = [5, 4, 3];
        let data = (0..60).collect();
        Volume::from_vec(dims, data, g).unwrap()
    }

    fn assert_close(a: [f64; 3], b: [f64; 3]) {
        for i in 0..3 {
            assert!((a[i] - b[i]).abs() < 1e-9, "{a:?} vs {b:?}");
        }
    }

    /// Every output voxel either holds the source voxel at the same world position, or is
    /// fill exactly where no source voxel exists.
    fn assert_geometry_exact(src: &Volume<i32>, out: &Volume<i32>, fill: i32) {
        let [nx, ny, nz] = out.dims();
        for z in 0..nz {
            for y in 0..ny {
                for x in 0..nx {
                    let w = out
                        .geometry()
                        .voxel_to_world([x as f64, y as f64, z as f64]);
                    let v = src.geometry().world_to_voxel(w);
                    let r = v.map(f64::round);
                    for i in 0..3 {
                        assert!((v[i] - r[i]).abs() < 1e-9, "off-grid voxel {v:?}");
                    }
                    let got = out[[x, y, z]];
                    let inside = (0..3).all(|i| r[i] >= 0.0 && (r[i] as usize) < src.dims()[i]);
                    if inside {
                        assert_eq!(got, src[[r[0] as usize, r[1] as usize, r[2] as usize]]);
                    } else {
                        assert_eq!(got, fill);
                    }
                }
            }
        }
    }

    #[test]
    fn crop_keeps_world_positions() {
        let v = oblique_volume();
        let c = crop(&v, [1, 2, 1], [3, 2, 2]).unwrap();
        assert_eq!(c.dims(), [3, 2, 2]);
        assert_eq!(c[[0, 0, 0]], v[[1, 2, 1]]);
        assert_close(
            c.geometry().origin,
            v.geometry().voxel_to_world([1.0, 2.0, 1.0]),
        );
        assert_geometry_exact(&v, &c, -1);
    }

    #[test]
    fn crop_rejects_boxes_outside_or_empty() {
        let v = oblique_volume();
        assert!(crop(&v, [4, 0, 0], [2, 1, 1]).is_err());
        assert!(crop(&v, [0, 0, 0], [5, 4, 0]).is_err());
        assert!(crop(&v, [usize::MAX, 0, 0], [2, 1, 1]).is_err());
        assert!(crop(&v, [0, 0, 0], [5, 4, 3]).is_ok());
    }

    #[test]
    fn pad_then_negative_pad_round_trips() {
        let v = oblique_volume();
        let p = pad(&v, [2, 0, 1], [1, 3, 0], -7).unwrap();
        assert_eq!(p.dims(), [8, 7, 4]);
        assert_geometry_exact(&v, &p, -7);
        assert_eq!(
            p.data().iter().filter(|&&x| x == -7).count(),
            8 * 7 * 4 - 60
        );
        let back = pad(&p, [-2, 0, -1], [-1, -3, 0], 0).unwrap();
        assert_eq!(back.data(), v.data());
        assert_close(back.geometry().origin, v.geometry().origin);
    }

    #[test]
    fn mixed_pad_and_crop() {
        let v = oblique_volume();
        let p = pad(&v, [-1, 2, 0], [1, -2, -1], 99).unwrap();
        assert_eq!(p.dims(), [5, 4, 2]);
        assert_geometry_exact(&v, &p, 99);
    }

    #[test]
    fn pad_rejects_degenerate_results() {
        let v = oblique_volume();
        assert!(pad(&v, [-3, 0, 0], [-2, 0, 0], 0).is_err());
        assert!(pad(&v, [i64::MIN, 0, 0], [0, 0, 0], 0).is_err());
        assert!(pad(&v, [i64::MAX, 0, 0], [i64::MAX, 0, 0], 0).is_err());
        assert!(pad(&v, [1 << 20, 1 << 20, 0], [0, 0, 0], 0).is_err());
    }

    #[test]
    fn region_fully_outside_is_all_fill() {
        let v = oblique_volume();
        let r = extract_region(&v, [100, -50, 2], [2, 2, 2], 5).unwrap();
        assert!(r.data().iter().all(|&x| x == 5));
        assert_geometry_exact(&v, &r, 5);
        assert!(extract_region(&v, [i64::MAX, 0, 0], [1, 1, 1], 0).is_err());
        assert!(extract_region(&v, [0, 0, 0], [0, 1, 1], 0).is_err());
        assert!(extract_region(&v, [0, 0, 0], [usize::MAX, 2, 1], 0).is_err());
    }

    #[test]
    fn centred_window_odd_and_even() {
        let v = oblique_volume();
        // Odd dims: the centre voxel of the window is the source voxel at the point.
        let p = v.geometry().voxel_to_world([2.0, 1.0, 1.0]);
        let w = crop_or_pad_centered(&v, p, [3, 3, 3], -1).unwrap();
        assert_eq!(w[[1, 1, 1]], v[[2, 1, 1]]);
        assert_geometry_exact(&v, &w, -1);
        // Even dims, point off-centre: window centre within half a voxel of the point.
        let p = v.geometry().voxel_to_world([2.3, 0.6, -4.0]);
        let w = crop_or_pad_centered(&v, p, [4, 6, 2], -1).unwrap();
        assert_eq!(w.dims(), [4, 6, 2]);
        assert_geometry_exact(&v, &w, -1);
        let centre = w.geometry().voxel_to_world([1.5, 2.5, 0.5]);
        let d = v.geometry().world_to_voxel(centre);
        let want = [2.3, 0.6, -4.0];
        for i in 0..3 {
            assert!((d[i] - want[i]).abs() <= 0.5 + 1e-9, "{d:?}");
        }
        assert!(crop_or_pad_centered(&v, [f64::NAN, 0.0, 0.0], [2, 2, 2], 0).is_err());
        assert!(crop_or_pad_centered(&v, [1e300, 0.0, 0.0], [2, 2, 2], 0).is_err());
        assert!(crop_or_pad_centered(&v, [0.0; 3], [2, 0, 2], 0).is_err());
    }

    #[test]
    fn hu_normalisation_matches_the_paper() {
        assert_eq!(normalize_hu(-1000.0), 0.0);
        assert_eq!(normalize_hu(1000.0), 1.0);
        assert_eq!(normalize_hu(0.0), 0.5);
        assert_eq!(normalize_hu(-3024.0), 0.0);
        assert_eq!(normalize_hu(3071.0), 1.0);
        assert_eq!(normalize_hu(400.0), 0.7);
        let mut s = vec![-2000.0, -1000.0, -500.0, 0.0, 250.0, 1000.0, 1e6];
        normalize_hu_slice(&mut s).unwrap();
        assert_eq!(s, vec![0.0, 0.0, 0.25, 0.5, 0.625, 1.0, 1.0]);
        denormalize_hu_slice(&mut s).unwrap();
        assert_eq!(
            s,
            vec![-1000.0, -1000.0, -500.0, 0.0, 250.0, 1000.0, 1000.0]
        );
        for hu in -1000..=1000 {
            let back = denormalize_hu(normalize_hu(hu as f32));
            assert!((back - hu as f32).abs() < 1e-3, "{hu} -> {back}");
        }
    }

    #[test]
    fn hu_normalisation_rejects_non_finite_and_leaves_input() {
        let mut s = vec![0.0, f32::NAN, 5.0];
        assert!(normalize_hu_slice(&mut s).is_err());
        assert_eq!(s[0], 0.0);
        assert_eq!(s[2], 5.0);
        let mut s = vec![0.0, f32::INFINITY];
        assert!(normalize_hu_slice(&mut s).is_err());
        let mut s = vec![0.5, 1.5];
        assert!(denormalize_hu_slice(&mut s).is_err());
        assert_eq!(s, vec![0.5, 1.5]);
        let mut s = vec![f32::NAN];
        assert!(denormalize_hu_slice(&mut s).is_err());
    }

    #[test]
    fn hu_volume_forms_keep_the_grid() {
        let g = Geometry::axis_aligned([0.7, 0.7, 3.0], [1.0, 2.0, 3.0]);
        let v = Volume::from_vec([2, 1, 1], vec![-1000.0, 200.0], g).unwrap();
        let n = normalize_hu_volume(&v).unwrap();
        assert_eq!(n.data(), &[0.0, 0.6]);
        assert_eq!(n.geometry(), v.geometry());
        let back = denormalize_hu_volume(&n).unwrap();
        assert!((back.data()[1] - 200.0).abs() < 1e-4);
    }
}
