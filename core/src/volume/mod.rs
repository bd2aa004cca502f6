//! Volumes with patient-space geometry.
//!
//! A [`Volume<T>`] is a dense 3-D grid stored x-fastest (`index = x + nx * (y + ny * z)`)
//! together with a [`Geometry`] that places every voxel in DICOM patient space (LPS: +x
//! towards the patient's Left, +y Posterior, +z Superior, millimetres). NIfTI files are RAS;
//! the conversion happens in [`crate::nifti`] and nowhere else.
//!
//! Voxel coordinates are continuous: integer coordinates are voxel *centres*, as in DICOM
//! (Image Position is the centre of the first voxel) and NIfTI.

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

pub mod ops;
pub mod reorient;
pub mod resample;

pub use ops::{
    HU_MAX, HU_MIN, MAX_VOXELS, crop, crop_or_pad_centered, denormalize_hu, denormalize_hu_slice,
    denormalize_hu_volume, extract_region, normalize_hu, normalize_hu_slice, normalize_hu_volume,
    pad,
};
pub use reorient::{
    AXIS_ALIGNED_TOLERANCE, ObliquePolicy, orientation_code, reorient_image_to_lps,
    reorient_labels_to_lps, reorient_to_lps,
};
pub use resample::{
    DEFAULT_SPACING_MM, Grid, resample_image_to_spacing, resample_labels_to_spacing,
    resample_linear, resample_nearest,
};

/// Placement of a voxel grid in patient space (LPS, millimetres).
///
/// `world = origin + Σ_i direction[i] * spacing[i] * voxel[i]`, where `direction[i]` is the
/// unit vector (in LPS) along which voxel axis `i` advances.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Geometry {
    /// Distance between voxel centres along each voxel axis, in mm. Finite and > 0.
    pub spacing: [f64; 3],
    /// World (LPS) position of the centre of voxel (0, 0, 0), in mm.
    pub origin: [f64; 3],
    /// Direction cosines: `direction[i]` is the LPS unit vector of voxel axis `i`.
    pub direction: [[f64; 3]; 3],
}

/// The identity direction matrix: voxel axes along L, P, S.
pub const IDENTITY_DIRECTION: [[f64; 3]; 3] = [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]];

impl Geometry {
    /// Axis-aligned geometry (voxel axes along L, P, S) with the given spacing and origin.
    pub fn axis_aligned(spacing: [f64; 3], origin: [f64; 3]) -> Self {
        Geometry {
            spacing,
            origin,
            direction: IDENTITY_DIRECTION,
        }
    }

    /// Checks that spacing is finite and positive, the origin finite, and the direction
    /// matrix orthonormal (to 1e-4, what scanners write).
    ///
    /// # Errors
    /// [`Error::Geometry`] naming the first violated condition.
    pub fn validate(&self) -> Result<()> {
        for (i, s) in self.spacing.iter().enumerate() {
            if !s.is_finite() || *s <= 0.0 {
                return Err(Error::Geometry(format!(
                    "spacing along axis {i} is {s}; it must be a finite positive number of mm"
                )));
            }
        }
        if self.origin.iter().any(|o| !o.is_finite()) {
            return Err(Error::Geometry(format!(
                "origin {:?} is not finite",
                self.origin
            )));
        }
        for i in 0..3 {
            for j in 0..3 {
                let d = dot(self.direction[i], self.direction[j]);
                let want = if i == j { 1.0 } else { 0.0 };
                if !d.is_finite() || (d - want).abs() > 1e-4 {
                    return Err(Error::Geometry(format!(
                        "direction cosines {:?} are not orthonormal",
                        self.direction
                    )));
                }
            }
        }
        Ok(())
    }

    /// World (LPS, mm) position of a continuous voxel coordinate.
    pub fn voxel_to_world(&self, v: [f64; 3]) -> [f64; 3] {
        let mut w = self.origin;
        for i in 0..3 {
            for k in 0..3 {
                w[k] += self.direction[i][k] * self.spacing[i] * v[i];
            }
        }
        w
    }

    /// Continuous voxel coordinate of a world (LPS, mm) position. Exact inverse of
    /// [`Geometry::voxel_to_world`] for orthonormal directions.
    pub fn world_to_voxel(&self, w: [f64; 3]) -> [f64; 3] {
        let d = [
            w[0] - self.origin[0],
            w[1] - self.origin[1],
            w[2] - self.origin[2],
        ];
        let mut v = [0.0; 3];
        for i in 0..3 {
            v[i] = dot(self.direction[i], d) / self.spacing[i];
        }
        v
    }

    /// The 4×4 affine (row-major) mapping voxel coordinates to LPS world coordinates.
    pub fn affine_lps(&self) -> [[f64; 4]; 4] {
        let mut a = [[0.0; 4]; 4];
        for r in 0..3 {
            for c in 0..3 {
                a[r][c] = self.direction[c][r] * self.spacing[c];
            }
            a[r][3] = self.origin[r];
        }
        a[3][3] = 1.0;
        a
    }

    /// Volume of one voxel in mm³.
    pub fn voxel_volume_mm3(&self) -> f64 {
        self.spacing[0] * self.spacing[1] * self.spacing[2]
    }
}

/// Dot product of two 3-vectors.
pub(crate) fn dot(a: [f64; 3], b: [f64; 3]) -> f64 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// A dense 3-D grid of `T` with patient-space geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume<T> {
    dims: [usize; 3],
    data: Vec<T>,
    geometry: Geometry,
}

impl<T> Volume<T> {
    /// Wraps `data` (x fastest) as a volume. Fails if `data.len()` is not the product of
    /// `dims`, a dimension is zero, or the geometry is invalid.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for sizes, [`Error::Geometry`] for the geometry.
    pub fn from_vec(dims: [usize; 3], data: Vec<T>, geometry: Geometry) -> Result<Self> {
        let n = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| Error::InvalidArgument(format!("dimensions {dims:?} overflow")))?;
        if dims.contains(&0) {
            return Err(Error::InvalidArgument(format!(
                "dimensions {dims:?} contain a zero"
            )));
        }
        if data.len() != n {
            return Err(Error::InvalidArgument(format!(
                "{} values do not fill dimensions {dims:?} ({n} voxels)",
                data.len()
            )));
        }
        geometry.validate()?;
        Ok(Volume {
            dims,
            data,
            geometry,
        })
    }

    /// Grid size along x, y, z.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// Number of voxels.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Always false: a volume has at least one voxel.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// The geometry.
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Replaces the geometry (validated).
    ///
    /// # Errors
    /// [`Error::Geometry`] when `geometry` is invalid; `self` is then unchanged.
    pub fn set_geometry(&mut self, geometry: Geometry) -> Result<()> {
        geometry.validate()?;
        self.geometry = geometry;
        Ok(())
    }

    /// The voxel values, x fastest.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// Mutable voxel values, x fastest.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// Consumes the volume, returning its values.
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// Linear index of voxel (x, y, z). Panics in debug builds when out of bounds.
    #[inline]
    pub fn index(&self, x: usize, y: usize, z: usize) -> usize {
        debug_assert!(x < self.dims[0] && y < self.dims[1] && z < self.dims[2]);
        x + self.dims[0] * (y + self.dims[1] * z)
    }

    /// Voxel (x, y, z) for a linear index.
    #[inline]
    pub fn coords(&self, i: usize) -> [usize; 3] {
        let x = i % self.dims[0];
        let yz = i / self.dims[0];
        [x, yz % self.dims[1], yz / self.dims[1]]
    }

    /// The value at (x, y, z), or `None` outside the grid.
    pub fn get(&self, x: usize, y: usize, z: usize) -> Option<&T> {
        (x < self.dims[0] && y < self.dims[1] && z < self.dims[2])
            .then(|| &self.data[self.index(x, y, z)])
    }

    /// A new volume with the same grid and geometry and values `f(v)`.
    pub fn map<U>(&self, f: impl Fn(&T) -> U) -> Volume<U> {
        Volume {
            dims: self.dims,
            data: self.data.iter().map(f).collect(),
            geometry: self.geometry,
        }
    }
}

impl<T: Clone> Volume<T> {
    /// A volume filled with `value`.
    ///
    /// # Errors
    /// As [`Volume::from_vec`].
    pub fn filled(dims: [usize; 3], value: T, geometry: Geometry) -> Result<Self> {
        let n = dims.iter().product();
        Self::from_vec(dims, vec![value; n], geometry)
    }

    /// A volume with the same grid and geometry as `self`, filled with `value`.
    pub fn like<U: Clone>(&self, value: U) -> Volume<U> {
        Volume {
            dims: self.dims,
            data: vec![value; self.data.len()],
            geometry: self.geometry,
        }
    }
}

impl<T> std::ops::Index<[usize; 3]> for Volume<T> {
    type Output = T;
    fn index(&self, [x, y, z]: [usize; 3]) -> &T {
        &self.data[Volume::index(self, x, y, z)]
    }
}

impl<T> std::ops::IndexMut<[usize; 3]> for Volume<T> {
    fn index_mut(&mut self, [x, y, z]: [usize; 3]) -> &mut T {
        let i = Volume::index(self, x, y, z);
        &mut self.data[i]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oblique() -> Geometry {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        Geometry {
            spacing: [0.7, 0.8, 2.5],
            origin: [-120.0, 30.5, 400.0],
            direction: [[s, s, 0.0], [-s, s, 0.0], [0.0, 0.0, 1.0]],
        }
    }

    #[test]
    fn voxel_world_round_trip_oblique() {
        let g = oblique();
        let v = [3.25, -7.5, 11.0];
        let back = g.world_to_voxel(g.voxel_to_world(v));
        for i in 0..3 {
            assert!((back[i] - v[i]).abs() < 1e-9);
        }
    }

    #[test]
    fn affine_matches_voxel_to_world() {
        let g = oblique();
        let a = g.affine_lps();
        let v = [1.0, 2.0, 3.0];
        let w = g.voxel_to_world(v);
        for r in 0..3 {
            let x = a[r][0] * v[0] + a[r][1] * v[1] + a[r][2] * v[2] + a[r][3];
            assert!((x - w[r]).abs() < 1e-12);
        }
    }

    #[test]
    fn invalid_geometry_is_an_error_not_a_panic() {
        let mut g = Geometry::axis_aligned([1.0, f64::NAN, 1.0], [0.0; 3]);
        assert!(matches!(g.validate(), Err(Error::Geometry(_))));
        g.spacing = [1.0, -1.0, 1.0];
        assert!(g.validate().is_err());
        g.spacing = [1.0; 3];
        g.direction[0] = [2.0, 0.0, 0.0];
        assert!(g.validate().is_err());
        assert!(
            Volume::from_vec(
                [2, 2, 2],
                vec![0u8; 7],
                Geometry::axis_aligned([1.0; 3], [0.0; 3])
            )
            .is_err()
        );
        assert!(
            Volume::<u8>::from_vec(
                [0, 2, 2],
                vec![],
                Geometry::axis_aligned([1.0; 3], [0.0; 3])
            )
            .is_err()
        );
    }

    #[test]
    fn index_and_coords_agree() {
        let v = Volume::filled([3, 4, 5], 0u8, Geometry::axis_aligned([1.0; 3], [0.0; 3])).unwrap();
        for i in 0..v.len() {
            let [x, y, z] = v.coords(i);
            assert_eq!(v.index(x, y, z), i);
        }
    }
}
