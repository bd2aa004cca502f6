//! NIfTI spatial transforms: qform (quaternion), sform (3×4 matrix) and the legacy pixdim-only
//! affine, all in the file's RAS+ world; their conversion to and from the LPS [`Geometry`] of a
//! [`crate::Volume`].
//!
//! [`flip_ras_lps`] is the only place in the crate where RAS and LPS meet.

use crate::volume::dot;
use crate::{Error, Geometry, Result};

/// A 4×4 affine, row-major: `world = a[r][0] * i + a[r][1] * j + a[r][2] * k + a[r][3]`.
pub type Affine = [[f64; 4]; 4];

/// Largest |cos| allowed between two voxel axes of an sform before it counts as sheared. The
/// same 1e-4 that [`Geometry::validate`] accepts for direction cosines; float32 round-off of a
/// truly orthogonal sform is ~1e-7, so real shears are never mistaken for noise.
pub const SHEAR_TOLERANCE: f64 = 1e-4;

/// Converts an affine between NIfTI's RAS+ world and DICOM's LPS patient space.
///
/// RAS and LPS differ by a rotation of 180° about the superior axis: x and y change sign, z
/// does not. The map is its own inverse, so the same function goes either way. This is the
/// one place in the crate that knows about the two conventions.
pub(super) fn flip_ras_lps(a: &Affine) -> Affine {
    let mut m = *a;
    for c in 0..4 {
        m[0][c] = -m[0][c];
        m[1][c] = -m[1][c];
    }
    m
}

/// The sform affine: the three `srow_*` rows completed with `[0, 0, 0, 1]`.
pub(super) fn sform_affine(srow: &[[f32; 4]; 3]) -> Affine {
    let mut a = identity();
    for r in 0..3 {
        for c in 0..4 {
            a[r][c] = f64::from(srow[r][c]);
        }
    }
    a
}

/// The qfac that `pixdim[0]` encodes.
///
/// The spec says pixdim[0] is -1 or 1. Readers disagree about other values: nibabel resets
/// anything except -1 to 1 on load, nifti_clib takes the sign (so -0.5 means -1). We accept 1
/// and -1, and 0 as 1 (old writers leave it 0 and both readers agree on that), and refuse
/// everything else rather than pick one reader's interpretation of a mirrored image.
pub(super) fn qfac(pixdim0: f32) -> Result<f64, String> {
    if pixdim0 == 1.0 || pixdim0 == 0.0 {
        Ok(1.0)
    } else if pixdim0 == -1.0 {
        Ok(-1.0)
    } else {
        Err(format!(
            "pixdim[0] (qfac) is {pixdim0}; it must be 1 or -1 (or 0, read as 1)"
        ))
    }
}

/// The qform affine, exactly as nibabel's `Nifti1Header.get_qform` computes it.
///
/// The quaternion's real part is not stored: `a = sqrt(1 - b² - c² - d²)`, taken as 0 when
/// `1 - b² - c² - d²` is within 3 float32 epsilons of zero (a 180° rotation) and an error
/// when it is more negative than that. The rotation is scaled by `pixdim[1..=3]`, with the
/// third column multiplied by qfac: qfac = -1 stores a left-handed voxel grid, which a proper
/// rotation alone cannot express.
pub(super) fn qform_affine(
    quatern: [f32; 3],
    pixdim: &[f32; 8],
    qoffset: [f32; 3],
) -> Result<Affine, String> {
    let [b, c, d] = quatern.map(f64::from);
    let w2 = 1.0 - (b * b + c * c + d * d);
    let threshold = 3.0 * f64::from(f32::EPSILON);
    let a = if w2.abs() < threshold {
        0.0
    } else if w2 < 0.0 || !w2.is_finite() {
        return Err(format!(
            "qform quaternion (b, c, d) = ({b}, {c}, {d}) is not a unit quaternion \
             (1 - b² - c² - d² = {w2:e})"
        ));
    } else {
        w2.sqrt()
    };
    let rotation = quaternion_to_matrix([a, b, c, d]);
    let q = qfac(pixdim[0])?;
    let scale = [
        f64::from(pixdim[1]),
        f64::from(pixdim[2]),
        f64::from(pixdim[3]) * q,
    ];
    let mut m = identity();
    for r in 0..3 {
        for col in 0..3 {
            m[r][col] = rotation[r][col] * scale[col];
        }
        m[r][3] = f64::from(qoffset[r]);
    }
    Ok(m)
}

/// nibabel's `quat2mat`: rotation matrix of the quaternion `(w, x, y, z)`, normalising it.
fn quaternion_to_matrix([w, x, y, z]: [f64; 4]) -> [[f64; 3]; 3] {
    let nq = w * w + x * x + y * y + z * z;
    if nq < f64::EPSILON {
        return [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];
    }
    let s = 2.0 / nq;
    let (xs, ys, zs) = (x * s, y * s, z * s);
    let (wx, wy, wz) = (w * xs, w * ys, w * zs);
    let (xx, xy, xz) = (x * xs, x * ys, x * zs);
    let (yy, yz, zz) = (y * ys, y * zs, z * zs);
    [
        [1.0 - (yy + zz), xy - wz, xz + wy],
        [xy + wz, 1.0 - (xx + zz), yz - wx],
        [xz - wy, yz + wx, 1.0 - (xx + yy)],
    ]
}

/// The legacy (ANALYZE 7.5) affine used when neither qform nor sform is set, exactly as
/// nibabel's `get_base_affine` / `shape_zoom_affine` computes it: axis-aligned with spacing
/// `pixdim`, the x axis flipped (radiological convention: voxel i runs right to left), and the
/// world origin at the centre of the grid. Axes beyond `dim[0]` count as size 1, spacing 1.
///
/// Note this is *not* the NIfTI spec's "method 1" (no flip, origin at voxel 0); we follow
/// nibabel because that is what every Python tool in our pipeline sees.
pub(super) fn base_affine(dim: &[i16; 8], pixdim: &[f32; 8]) -> Affine {
    let ndim = usize::try_from(dim[0]).unwrap_or(0).min(3);
    let mut shape = [1.0; 3];
    let mut zooms = [1.0; 3];
    for i in 0..ndim {
        shape[i] = f64::from(dim[i + 1]);
        zooms[i] = f64::from(pixdim[i + 1]);
    }
    zooms[0] = -zooms[0];
    let mut m = identity();
    for i in 0..3 {
        m[i][i] = zooms[i];
        m[i][3] = -(shape[i] - 1.0) / 2.0 * zooms[i];
    }
    m
}

/// The LPS geometry of a RAS affine: spacing is the length of each voxel-axis column,
/// direction its unit vector, origin the translation.
///
/// Fails if an entry is not finite, a column is (nearly) zero, or two columns are not
/// perpendicular to within [`SHEAR_TOLERANCE`]: a sheared sform cannot be represented by a
/// [`Geometry`], and silently dropping the shear (as qform conversion does) would misplace
/// voxels far from the origin, so we refuse it.
pub(super) fn geometry_from_ras(ras: &Affine) -> Result<Geometry> {
    if ras.iter().flatten().any(|v| !v.is_finite()) {
        return Err(Error::Geometry(format!("affine {ras:?} is not finite")));
    }
    let lps = flip_ras_lps(ras);
    let mut spacing = [0.0; 3];
    let mut direction = [[0.0; 3]; 3];
    for c in 0..3 {
        let column = [lps[0][c], lps[1][c], lps[2][c]];
        let norm = dot(column, column).sqrt();
        if norm.is_nan() || norm <= 1e-12 {
            return Err(Error::Geometry(format!(
                "voxel axis {c} of the affine has zero length; the transform is singular"
            )));
        }
        spacing[c] = norm;
        direction[c] = column.map(|v| v / norm);
    }
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        let cos = dot(direction[i], direction[j]);
        if cos.abs() > SHEAR_TOLERANCE {
            return Err(Error::Geometry(format!(
                "voxel axes {i} and {j} are not perpendicular (cos = {cos:.3e}): the affine has \
                 shear, which a volume geometry cannot represent"
            )));
        }
    }
    let geometry = Geometry {
        spacing,
        origin: [lps[0][3], lps[1][3], lps[2][3]],
        direction,
    };
    geometry.validate()?;
    Ok(geometry)
}

/// The RAS affine of an LPS geometry: what goes into the sform.
pub(super) fn ras_from_geometry(geometry: &Geometry) -> Affine {
    flip_ras_lps(&geometry.affine_lps())
}

/// The qform parameters of a geometry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Qform {
    /// Quaternion (b, c, d); the real part a ≥ 0 is implied.
    pub quatern: [f64; 3],
    /// Translation (RAS, mm).
    pub offset: [f64; 3],
    /// pixdim[0]: 1 for a right-handed voxel grid, -1 for a left-handed one.
    pub qfac: f64,
    /// pixdim[1..=3]: voxel spacing.
    pub spacing: [f64; 3],
}

/// Qform parameters of a geometry, following nifti_clib's `nifti_mat44_to_quatern`: the RAS
/// direction matrix is made exactly orthogonal (polar decomposition, so a direction matrix that
/// is orthonormal only to 1e-4 still gives a valid quaternion), its third column is negated
/// when the determinant is negative (qfac = -1), and the rotation is converted to a quaternion
/// with a non-negative real part.
pub(super) fn qform_from_geometry(geometry: &Geometry) -> Qform {
    let ras = ras_from_geometry(geometry);
    let mut r = [[0.0; 3]; 3];
    for row in 0..3 {
        for col in 0..3 {
            r[row][col] = ras[row][col] / geometry.spacing[col];
        }
    }
    let mut r = nearest_orthogonal(r);
    let qfac = if det3(&r) < 0.0 {
        for row in &mut r {
            row[2] = -row[2];
        }
        -1.0
    } else {
        1.0
    };
    Qform {
        quatern: matrix_to_quaternion(&r),
        offset: [ras[0][3], ras[1][3], ras[2][3]],
        qfac,
        spacing: geometry.spacing,
    }
}

/// The orthogonal matrix nearest to `m` (the orthogonal factor of its polar decomposition),
/// by the Newton iteration `X ← (X + X⁻ᵀ) / 2`, which converges quadratically from a nearly
/// orthogonal start.
fn nearest_orthogonal(mut m: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    for _ in 0..32 {
        let d = det3(&m);
        if d == 0.0 || !d.is_finite() {
            break;
        }
        // X⁻ᵀ = cofactor(X) / det(X).
        let mut next = [[0.0; 3]; 3];
        let mut change: f64 = 0.0;
        for r in 0..3 {
            for c in 0..3 {
                let (r1, r2) = ((r + 1) % 3, (r + 2) % 3);
                let (c1, c2) = ((c + 1) % 3, (c + 2) % 3);
                let cofactor = m[r1][c1] * m[r2][c2] - m[r1][c2] * m[r2][c1];
                next[r][c] = 0.5 * (m[r][c] + cofactor / d);
                change = change.max((next[r][c] - m[r][c]).abs());
            }
        }
        m = next;
        if change < 1e-15 {
            break;
        }
    }
    m
}

/// Determinant of a 3×3 matrix.
fn det3(m: &[[f64; 3]; 3]) -> f64 {
    m[0][0] * (m[1][1] * m[2][2] - m[1][2] * m[2][1])
        - m[0][1] * (m[1][0] * m[2][2] - m[1][2] * m[2][0])
        + m[0][2] * (m[1][0] * m[2][1] - m[1][1] * m[2][0])
}

/// Quaternion (b, c, d) of a proper rotation matrix, with the real part made non-negative
/// (readers reconstruct it as `+sqrt(1 - b² - c² - d²)`). nifti_clib's algorithm: pick the
/// numerically largest component first.
fn matrix_to_quaternion(r: &[[f64; 3]; 3]) -> [f64; 3] {
    let trace = r[0][0] + r[1][1] + r[2][2] + 1.0;
    let (a, b, c, d) = if trace > 0.5 {
        let a = 0.5 * trace.sqrt();
        (
            a,
            0.25 * (r[2][1] - r[1][2]) / a,
            0.25 * (r[0][2] - r[2][0]) / a,
            0.25 * (r[1][0] - r[0][1]) / a,
        )
    } else {
        let xd = 1.0 + r[0][0] - (r[1][1] + r[2][2]);
        let yd = 1.0 + r[1][1] - (r[0][0] + r[2][2]);
        let zd = 1.0 + r[2][2] - (r[0][0] + r[1][1]);
        if xd > 1.0 {
            let b = 0.5 * xd.sqrt();
            (
                0.25 * (r[2][1] - r[1][2]) / b,
                b,
                0.25 * (r[0][1] + r[1][0]) / b,
                0.25 * (r[0][2] + r[2][0]) / b,
            )
        } else if yd > 1.0 {
            let c = 0.5 * yd.sqrt();
            (
                0.25 * (r[0][2] - r[2][0]) / c,
                0.25 * (r[0][1] + r[1][0]) / c,
                c,
                0.25 * (r[1][2] + r[2][1]) / c,
            )
        } else {
            let d = 0.5 * zd.sqrt();
            (
                0.25 * (r[1][0] - r[0][1]) / d,
                0.25 * (r[0][2] + r[2][0]) / d,
                0.25 * (r[1][2] + r[2][1]) / d,
                d,
            )
        }
    };
    if a < 0.0 { [-b, -c, -d] } else { [b, c, d] }
}

/// The 4×4 identity.
fn identity() -> Affine {
    let mut a = [[0.0; 4]; 4];
    for i in 0..4 {
        a[i][i] = 1.0;
    }
    a
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rotation(axis: [f64; 3], angle: f64) -> [[f64; 3]; 3] {
        let n = dot(axis, axis).sqrt();
        let (x, y, z) = (axis[0] / n, axis[1] / n, axis[2] / n);
        let (s, c) = angle.sin_cos();
        let t = 1.0 - c;
        [
            [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
            [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
            [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
        ]
    }

    fn geometry_with(r: [[f64; 3]; 3], flip_k: bool) -> Geometry {
        let mut direction = [[0.0; 3]; 3];
        for axis in 0..3 {
            for k in 0..3 {
                direction[axis][k] = r[k][axis];
            }
        }
        if flip_k {
            direction[2] = direction[2].map(|v| -v);
        }
        Geometry {
            spacing: [0.7, 1.3, 2.5],
            origin: [-12.5, 40.0, 301.25],
            direction,
        }
    }

    #[test]
    fn ras_lps_flip_is_an_involution_that_negates_x_and_y() {
        let g = Geometry::axis_aligned([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]);
        let ras = ras_from_geometry(&g);
        assert_eq!(ras[0], [-1.0, 0.0, 0.0, -10.0]);
        assert_eq!(ras[1], [0.0, -2.0, 0.0, -20.0]);
        assert_eq!(ras[2], [0.0, 0.0, 3.0, 30.0]);
        assert_eq!(flip_ras_lps(&ras), g.affine_lps());
    }

    #[test]
    fn qform_round_trips_through_quaternions_of_many_rotations() {
        // Includes the 180° rotations where the real part is 0 and the else-branches of
        // matrix_to_quaternion are taken.
        let cases = [
            ([1.0, 0.0, 0.0], 0.0),
            ([1.0, 0.0, 0.0], std::f64::consts::PI),
            ([0.0, 1.0, 0.0], std::f64::consts::PI),
            ([0.0, 0.0, 1.0], std::f64::consts::PI),
            ([1.0, 2.0, -0.5], 2.9),
            ([0.3, -0.2, 0.9], 0.4),
            ([-1.0, 1.0, 1.0], 1.7),
        ];
        for (axis, angle) in cases {
            for flip_k in [false, true] {
                let g = geometry_with(rotation(axis, angle), flip_k);
                let q = qform_from_geometry(&g);
                assert_eq!(q.qfac, if flip_k { -1.0 } else { 1.0 });
                // Evaluate in f64 (no float32 storage) to test the algebra exactly.
                let [b, c, d] = q.quatern;
                let w = (1.0 - (b * b + c * c + d * d)).max(0.0).sqrt();
                let r = quaternion_to_matrix([w, b, c, d]);
                let want = ras_from_geometry(&g);
                for row in 0..3 {
                    for col in 0..3 {
                        let mut v = r[row][col] * q.spacing[col];
                        if col == 2 {
                            v *= q.qfac;
                        }
                        assert!(
                            (v - want[row][col]).abs() < 1e-9,
                            "axis {axis:?} angle {angle} flip {flip_k}: {v} vs {}",
                            want[row][col]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn shear_and_singular_affines_are_refused() {
        let mut a = ras_from_geometry(&Geometry::axis_aligned([1.0; 3], [0.0; 3]));
        a[0][1] = 0.2;
        let err = geometry_from_ras(&a).unwrap_err().to_string();
        assert!(err.contains("shear"), "{err}");
        let mut a = ras_from_geometry(&Geometry::axis_aligned([1.0; 3], [0.0; 3]));
        a[2][2] = 0.0;
        assert!(
            geometry_from_ras(&a)
                .unwrap_err()
                .to_string()
                .contains("singular")
        );
        a[2][2] = f64::NAN;
        assert!(geometry_from_ras(&a).is_err());
    }

    #[test]
    fn qfac_accepts_only_unambiguous_values() {
        assert_eq!(qfac(1.0), Ok(1.0));
        assert_eq!(qfac(0.0), Ok(1.0));
        assert_eq!(qfac(-1.0), Ok(-1.0));
        assert!(qfac(-0.5).is_err());
        assert!(qfac(f32::NAN).is_err());
    }

    #[test]
    fn non_unit_quaternion_is_refused() {
        let pixdim = [1.0; 8];
        assert!(qform_affine([0.9, 0.9, 0.0], &pixdim, [0.0; 3]).is_err());
        assert!(qform_affine([f32::NAN, 0.0, 0.0], &pixdim, [0.0; 3]).is_err());
        // Exactly 180° about x: w² = 0 within threshold.
        let m = qform_affine([1.0, 0.0, 0.0], &pixdim, [0.0; 3]).unwrap();
        assert_eq!(m[1][1], -1.0);
        assert_eq!(m[2][2], -1.0);
    }
}
