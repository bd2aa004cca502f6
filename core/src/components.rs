//! Connected components of binary masks and label maps, with per-component properties.
//!
//! Post-processing turns the network's voxel labels into vertebra instances and lesion
//! candidates: each connected piece becomes one [`Component`] with its size, volume, world
//! centroid and bounding boxes, and stray islands are removed with
//! [`keep_largest_per_label`] or [`remove_small_components`].
//!
//! Labelling is an iterative flood fill with an explicit stack (no recursion: a 512×512×300
//! mask may hold one component of 78 million voxels). Component ids are assigned in scan
//! order, x fastest: the component containing the first foreground voxel of the volume gets
//! id 1, the next new one id 2, and so on. The tests check counts, sizes, ids, centroids and
//! boxes against `scipy.ndimage.label` with the matching structuring element.

use crate::volume::Geometry;
use crate::{Error, Result, Volume};
use serde::{Deserialize, Serialize};

/// Which neighbours of a voxel are connected to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Connectivity {
    /// Voxels sharing a face (6 neighbours); `generate_binary_structure(3, 1)`.
    Face6,
    /// Voxels sharing a face or an edge (18 neighbours); `generate_binary_structure(3, 2)`.
    Edge18,
    /// Voxels sharing a face, an edge or a corner (26 neighbours);
    /// `generate_binary_structure(3, 3)`.
    Vertex26,
}

impl Connectivity {
    /// The neighbour offsets `[dx, dy, dz]`: all non-zero offsets in {−1, 0, 1}³ with at most
    /// 1, 2 or 3 non-zero components.
    pub fn offsets(self) -> Vec<[isize; 3]> {
        let max_nonzero = match self {
            Connectivity::Face6 => 1,
            Connectivity::Edge18 => 2,
            Connectivity::Vertex26 => 3,
        };
        let mut out = Vec::with_capacity(26);
        for dz in -1isize..=1 {
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    let nonzero = [dx, dy, dz].iter().filter(|d| **d != 0).count();
                    if nonzero > 0 && nonzero <= max_nonzero {
                        out.push([dx, dy, dz]);
                    }
                }
            }
        }
        out
    }
}

/// A voxel value that can be labelled: `BACKGROUND` is "no object", every other value is an
/// object label. Implemented for the label-map types of the project.
pub trait LabelValue: Copy + PartialEq + Send + Sync {
    /// The background value (0 / false).
    const BACKGROUND: Self;
    /// The value as a label number (background is 0).
    fn label(self) -> u32;
}

impl LabelValue for bool {
    const BACKGROUND: Self = false;
    fn label(self) -> u32 {
        u32::from(self)
    }
}

impl LabelValue for u8 {
    const BACKGROUND: Self = 0;
    fn label(self) -> u32 {
        u32::from(self)
    }
}

impl LabelValue for u16 {
    const BACKGROUND: Self = 0;
    fn label(self) -> u32 {
        u32::from(self)
    }
}

impl LabelValue for u32 {
    const BACKGROUND: Self = 0;
    fn label(self) -> u32 {
        self
    }
}

/// An axis-aligned box of voxel indices, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoxelBox {
    /// Smallest x, y, z index in the component.
    pub min: [usize; 3],
    /// Largest x, y, z index in the component (inclusive).
    pub max: [usize; 3],
}

/// An axis-aligned box in world (LPS) space, millimetres.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WorldBox {
    /// Minimum L, P, S coordinate.
    pub min: [f64; 3],
    /// Maximum L, P, S coordinate.
    pub max: [f64; 3],
}

/// One connected component and its properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    /// Its id in [`Components::ids`] (1-based, scan order).
    pub id: u32,
    /// The source label: the label-map value for [`label_per_label`], 1 for [`label_binary`].
    pub label: u32,
    /// Number of voxels.
    pub voxel_count: usize,
    /// `voxel_count` × voxel volume, in mm³.
    pub volume_mm3: f64,
    /// Mean voxel index (x, y, z) — the centroid in voxel coordinates.
    pub centroid_voxel: [f64; 3],
    /// The centroid in world (LPS) space, mm.
    pub centroid_world: [f64; 3],
    /// Bounding box of the voxel indices.
    pub bbox_voxels: VoxelBox,
    /// World (LPS) axis-aligned box around the *footprint* of `bbox_voxels` (voxel centres
    /// ± half a voxel), so that a single voxel has its physical size; for oblique grids it is
    /// the box around the eight transformed corners.
    pub bbox_world: WorldBox,
}

/// The result of labelling: a component-id volume (0 = background) and the components.
#[derive(Debug, Clone, PartialEq)]
pub struct Components {
    /// Component id of every voxel, same grid as the input; 0 is background.
    pub ids: Volume<u32>,
    /// The components in id order: `components[i].id == i + 1`.
    pub components: Vec<Component>,
}

impl Components {
    /// The component with id `id` (1-based), if any.
    pub fn get(&self, id: u32) -> Option<&Component> {
        (id as usize)
            .checked_sub(1)
            .and_then(|i| self.components.get(i))
    }
}

/// Labels the connected components of a binary mask: every non-background voxel is
/// foreground, regardless of its value; every component gets label 1.
///
/// # Errors
/// [`Error::InvalidArgument`] if the volume has more than `u32::MAX` voxels (ids are `u32`).
pub fn label_binary<T: LabelValue>(
    mask: &Volume<T>,
    connectivity: Connectivity,
) -> Result<Components> {
    let data = mask.data();
    label_by_class(mask, connectivity, |i| u32::from(data[i] != T::BACKGROUND))
}

/// Labels the connected components of each label separately: two neighbouring voxels belong
/// to the same component only if they carry the same non-background label. Each component
/// records its label.
///
/// # Errors
/// [`Error::InvalidArgument`] if the volume has more than `u32::MAX` voxels (ids are `u32`).
pub fn label_per_label<T: LabelValue>(
    labels: &Volume<T>,
    connectivity: Connectivity,
) -> Result<Components> {
    let data = labels.data();
    label_by_class(labels, connectivity, |i| data[i].label())
}

/// For every label, keeps only its largest connected component (by voxel count; on a tie the
/// one first in scan order) and sets the other components of that label to background.
///
/// # Errors
/// As [`label_per_label`].
pub fn keep_largest_per_label<T: LabelValue>(
    labels: &Volume<T>,
    connectivity: Connectivity,
) -> Result<Volume<T>> {
    let cc = label_per_label(labels, connectivity)?;
    let mut largest = std::collections::BTreeMap::<u32, &Component>::new();
    for c in &cc.components {
        let best = largest.entry(c.label).or_insert(c);
        if c.voxel_count > best.voxel_count {
            *best = c;
        }
    }
    let mut keep = vec![false; cc.components.len() + 1];
    for c in largest.values() {
        keep[c.id as usize] = true;
    }
    Ok(clear_where(labels, &cc.ids, &keep))
}

/// Sets every connected component (per label) with fewer than `min_voxels` voxels to
/// background. `min_voxels` of 0 or 1 changes nothing. Convert a size in mm³ with
/// [`Geometry::voxel_volume_mm3`].
///
/// # Errors
/// As [`label_per_label`].
pub fn remove_small_components<T: LabelValue>(
    labels: &Volume<T>,
    connectivity: Connectivity,
    min_voxels: usize,
) -> Result<Volume<T>> {
    let cc = label_per_label(labels, connectivity)?;
    let mut keep = vec![false; cc.components.len() + 1];
    for c in &cc.components {
        keep[c.id as usize] = c.voxel_count >= min_voxels;
    }
    Ok(clear_where(labels, &cc.ids, &keep))
}

/// A copy of `labels` with every voxel whose component is not kept set to background.
fn clear_where<T: LabelValue>(labels: &Volume<T>, ids: &Volume<u32>, keep: &[bool]) -> Volume<T> {
    let mut out = labels.clone();
    for (v, &id) in out.data_mut().iter_mut().zip(ids.data()) {
        if id != 0 && !keep[id as usize] {
            *v = T::BACKGROUND;
        }
    }
    out
}

/// Running sums of one component while it is flooded.
struct Accumulator {
    count: u64,
    sum: [u64; 3],
    min: [usize; 3],
    max: [usize; 3],
}

impl Accumulator {
    fn new() -> Self {
        Accumulator {
            count: 0,
            sum: [0; 3],
            min: [usize::MAX; 3],
            max: [0; 3],
        }
    }

    #[inline]
    fn add(&mut self, p: [usize; 3]) {
        self.count += 1;
        for a in 0..3 {
            self.sum[a] += p[a] as u64;
            self.min[a] = self.min[a].min(p[a]);
            self.max[a] = self.max[a].max(p[a]);
        }
    }

    fn finish(&self, id: u32, label: u32, g: &Geometry) -> Component {
        let centroid_voxel: [f64; 3] =
            std::array::from_fn(|a| self.sum[a] as f64 / self.count as f64);
        let mut lo = [f64::INFINITY; 3];
        let mut hi = [f64::NEG_INFINITY; 3];
        for corner in 0..8 {
            let v: [f64; 3] = std::array::from_fn(|a| {
                if corner >> a & 1 == 1 {
                    self.max[a] as f64 + 0.5
                } else {
                    self.min[a] as f64 - 0.5
                }
            });
            let w = g.voxel_to_world(v);
            for k in 0..3 {
                lo[k] = lo[k].min(w[k]);
                hi[k] = hi[k].max(w[k]);
            }
        }
        Component {
            id,
            label,
            voxel_count: self.count as usize,
            volume_mm3: self.count as f64 * g.voxel_volume_mm3(),
            centroid_voxel,
            centroid_world: g.voxel_to_world(centroid_voxel),
            bbox_voxels: VoxelBox {
                min: self.min,
                max: self.max,
            },
            bbox_world: WorldBox { min: lo, max: hi },
        }
    }
}

/// Flood-fills the components of voxels with equal non-zero `class(i)`.
fn label_by_class<T>(
    vol: &Volume<T>,
    connectivity: Connectivity,
    class: impl Fn(usize) -> u32,
) -> Result<Components> {
    let n = vol.dims();
    let len = vol.len();
    if u32::try_from(len).is_err() {
        return Err(Error::InvalidArgument(format!(
            "a volume of {len} voxels has too many voxels for u32 component ids"
        )));
    }
    let offsets = connectivity.offsets();
    let stride = [1isize, n[0] as isize, (n[0] * n[1]) as isize];
    let linear: Vec<isize> = offsets
        .iter()
        .map(|o| o[0] * stride[0] + o[1] * stride[1] + o[2] * stride[2])
        .collect();
    let mut ids = vec![0u32; len];
    let mut components = Vec::new();
    let mut stack: Vec<usize> = Vec::new();
    for seed in 0..len {
        let c = class(seed);
        if c == 0 || ids[seed] != 0 {
            continue;
        }
        let id = components.len() as u32 + 1;
        let mut acc = Accumulator::new();
        ids[seed] = id;
        stack.push(seed);
        while let Some(p) = stack.pop() {
            let x = p % n[0];
            let y = (p / n[0]) % n[1];
            let z = p / (n[0] * n[1]);
            acc.add([x, y, z]);
            let interior = x > 0 && x + 1 < n[0] && y > 0 && y + 1 < n[1] && z > 0 && z + 1 < n[2];
            if interior {
                for &d in &linear {
                    let q = (p as isize + d) as usize;
                    if ids[q] == 0 && class(q) == c {
                        ids[q] = id;
                        stack.push(q);
                    }
                }
            } else {
                for (o, &d) in offsets.iter().zip(&linear) {
                    let inside =
                        [x, y, z].iter().zip(o).zip(&n).all(|((&v, &dv), &nv)| {
                            v.checked_add_signed(dv).is_some_and(|w| w < nv)
                        });
                    if !inside {
                        continue;
                    }
                    let q = (p as isize + d) as usize;
                    if ids[q] == 0 && class(q) == c {
                        ids[q] = id;
                        stack.push(q);
                    }
                }
            }
        }
        components.push(acc.finish(id, c, vol.geometry()));
    }
    Ok(Components {
        ids: Volume::from_vec(n, ids, *vol.geometry())?,
        components,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mask(dims: [usize; 3], on: &[[usize; 3]], g: Geometry) -> Volume<u8> {
        let mut v = Volume::filled(dims, 0u8, g).unwrap();
        for p in on {
            v[*p] = 1;
        }
        v
    }

    #[test]
    fn neighbour_counts() {
        assert_eq!(Connectivity::Face6.offsets().len(), 6);
        assert_eq!(Connectivity::Edge18.offsets().len(), 18);
        assert_eq!(Connectivity::Vertex26.offsets().len(), 26);
    }

    #[test]
    fn diagonal_voxels_depend_on_connectivity() {
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        // Edge neighbours (1,1,0) and corner neighbour (2,2,1).
        let m = mask([4, 4, 3], &[[0, 0, 0], [1, 1, 0], [2, 2, 1]], g);
        let count = |c| label_binary(&m, c).unwrap().components.len();
        assert_eq!(count(Connectivity::Face6), 3);
        assert_eq!(count(Connectivity::Edge18), 2);
        assert_eq!(count(Connectivity::Vertex26), 1);
    }

    #[test]
    fn properties_in_world_space() {
        let s = std::f64::consts::FRAC_1_SQRT_2;
        let g = Geometry {
            spacing: [0.5, 2.0, 3.0],
            origin: [10.0, -20.0, 30.0],
            direction: [[s, s, 0.0], [-s, s, 0.0], [0.0, 0.0, 1.0]],
        };
        let m = mask([5, 4, 3], &[[1, 2, 0], [2, 2, 0], [3, 2, 0], [3, 2, 1]], g);
        let cc = label_binary(&m, Connectivity::Face6).unwrap();
        assert_eq!(cc.components.len(), 1);
        let c = &cc.components[0];
        assert_eq!((c.id, c.label, c.voxel_count), (1, 1, 4));
        assert!((c.volume_mm3 - 4.0 * 3.0).abs() < 1e-12);
        assert_eq!(c.centroid_voxel, [2.25, 2.0, 0.25]);
        // By hand: origin + 0.5*2.25*(s,s,0) + 2*2*(-s,s,0) + 3*0.25*(0,0,1).
        let want = [
            10.0 + 1.125 * s - 4.0 * s,
            -20.0 + 1.125 * s + 4.0 * s,
            30.75,
        ];
        for k in 0..3 {
            assert!((c.centroid_world[k] - want[k]).abs() < 1e-12);
        }
        assert_eq!(
            c.bbox_voxels,
            VoxelBox {
                min: [1, 2, 0],
                max: [3, 2, 1]
            }
        );
        // Footprint along S: z from -0.5 to 1.5 voxels of 3 mm.
        assert!((c.bbox_world.min[2] - 28.5).abs() < 1e-12);
        assert!((c.bbox_world.max[2] - 34.5).abs() < 1e-12);
        // Every voxel centre lies inside the world box.
        for p in [[1, 2, 0], [3, 2, 1]] {
            let w = g.voxel_to_world(p.map(|v: usize| v as f64));
            for k in 0..3 {
                assert!(w[k] > c.bbox_world.min[k] && w[k] < c.bbox_world.max[k]);
            }
        }
        assert_eq!(cc.ids[[3, 2, 1]], 1);
        assert_eq!(cc.ids[[0, 0, 0]], 0);
        assert_eq!(cc.get(1), Some(c));
        assert_eq!(cc.get(0), None);
        assert_eq!(cc.get(2), None);
    }

    #[test]
    fn per_label_separates_touching_labels() {
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        let mut v = Volume::filled([6, 1, 1], 0u16, g).unwrap();
        v.data_mut().copy_from_slice(&[3, 3, 5, 5, 0, 3]);
        let cc = label_per_label(&v, Connectivity::Vertex26).unwrap();
        let summary: Vec<_> = cc
            .components
            .iter()
            .map(|c| (c.id, c.label, c.voxel_count))
            .collect();
        assert_eq!(summary, vec![(1, 3, 2), (2, 5, 2), (3, 3, 1)]);
        assert_eq!(cc.ids.data(), &[1, 1, 2, 2, 0, 3]);
        let b = label_binary(&v, Connectivity::Vertex26).unwrap();
        assert_eq!(b.ids.data(), &[1, 1, 1, 1, 0, 2]);
    }

    #[test]
    fn keep_largest_and_remove_small() {
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        let mut v = Volume::filled([9, 1, 1], 0u8, g).unwrap();
        v.data_mut().copy_from_slice(&[1, 0, 1, 1, 0, 2, 0, 2, 2]);
        let k = keep_largest_per_label(&v, Connectivity::Face6).unwrap();
        assert_eq!(k.data(), &[0, 0, 1, 1, 0, 0, 0, 2, 2]);
        let r = remove_small_components(&v, Connectivity::Face6, 2).unwrap();
        assert_eq!(r.data(), &[0, 0, 1, 1, 0, 0, 0, 2, 2]);
        let r = remove_small_components(&v, Connectivity::Face6, 3).unwrap();
        assert!(r.data().iter().all(|&x| x == 0));
        assert_eq!(
            remove_small_components(&v, Connectivity::Face6, 0).unwrap(),
            v
        );
        // Ties keep the first component in scan order.
        v.data_mut().copy_from_slice(&[4, 4, 0, 4, 4, 0, 0, 0, 0]);
        let k = keep_largest_per_label(&v, Connectivity::Face6).unwrap();
        assert_eq!(k.data(), &[4, 4, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn one_large_component_needs_no_recursion() {
        // One component of two million voxels: a recursive fill would overflow the stack.
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        let v = Volume::filled([200, 200, 50], true, g).unwrap();
        let cc = label_binary(&v, Connectivity::Face6).unwrap();
        assert_eq!(cc.components.len(), 1);
        assert_eq!(cc.components[0].voxel_count, 2_000_000);
        assert_eq!(cc.components[0].centroid_voxel, [99.5, 99.5, 24.5]);
    }

    #[test]
    fn empty_and_full_masks() {
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        let v = Volume::filled([3, 3, 3], 0u32, g).unwrap();
        let cc = label_per_label(&v, Connectivity::Edge18).unwrap();
        assert!(cc.components.is_empty());
        assert!(cc.ids.data().iter().all(|&i| i == 0));
        let v = Volume::filled([1, 1, 1], 7u32, g).unwrap();
        let cc = label_per_label(&v, Connectivity::Face6).unwrap();
        assert_eq!(cc.components[0].label, 7);
        assert_eq!(cc.components[0].bbox_world.min, [-0.5; 3]);
        assert_eq!(cc.components[0].bbox_world.max, [0.5; 3]);
    }
}
