//! The result viewer's server side: a series and its analysis as an in-memory
//! [`ViewerVolume`], rendered slice by slice to PNG for the web console, with a JSON
//! description ([`ViewerInfo`]) for the page's tables and sliders.
//!
//! ```text
//! <results>/series-<id>/result.json ─┐
//!   labels.nii.gz, lesion_heatmap.nii.gz ─┼─ load::load_result ─▶ ViewerVolume (LPS display grid,
//! source series (DICOM dir or NIfTI) ─┘                      HU as i16, labels, heatmap)
//!        ViewerCache (LRU, bounded by bytes) ◀──────────────────────┘
//!        ├─ render::render_slice(plane, index, window, overlay, heatmap) ─▶ PNG
//!        └─ info::ViewerInfo::of(volume) ─▶ info.json
//! ```
//!
//! # Display conventions (radiological)
//!
//! Everything is rendered from the **display grid**: the source grid reoriented so that voxel
//! axes run towards patient Left, Posterior and Superior (a permutation of voxels for
//! axis-aligned series, trilinear/nearest resampling for oblique ones). Slice indices in URLs,
//! in [`ViewerInfo`] and in [`render::render_slice`] are indices on that grid:
//!
//! | plane | slice index | image columns → | image rows ↓ | slice 0 |
//! |---|---|---|---|---|
//! | axial | z (towards superior) | patient right → left (patient left on image right) | anterior → posterior | most inferior |
//! | sagittal | x (towards patient left) | anterior → posterior | superior → inferior | patient's right side |
//! | coronal | y (towards posterior) | patient right → left | superior → inferior | most anterior |
//!
//! Pixels are square: each image is resampled to the smaller in-plane voxel spacing (HU and
//! heatmap bilinear, labels nearest), so a 0.7 × 0.7 × 1.25 mm series shows undistorted in the
//! sagittal and coronal planes; the longer side is capped at [`render::MAX_SIDE`] pixels.
//!
//! # Colours
//!
//! Vertebra colours are the DICOM SEG's Recommended Display colours
//! (`vertebra_reports::palette`), blended at the key images' opacity
//! (`vertebra_reports::keyimage::LABEL_ALPHA`); lesion markers use the SEG palette's lesion
//! colours. Names are drawn with the key images' 5 × 7 font (`vertebra_reports::font`). The
//! bone window is the key images' (centre 500 HU, width 2000 HU), the soft-tissue window
//! 40/400 HU. See `docs/viewer.md` for the page, its endpoints and the benchmark.
//!
//! # Patient data
//!
//! A [`ViewerVolume`] holds pixel data, labels and the result document's findings; no names or
//! IDs. Errors name files and numbers only.

pub mod cache;
pub mod info;
pub mod load;
pub mod render;

use std::collections::BTreeMap;

use vertebra_core::volume::{ObliquePolicy, reorient_image_to_lps, reorient_to_lps};
use vertebra_core::{Geometry, Volume};

use crate::engine::document::{LesionResult, VertebraResult};

pub use cache::ViewerCache;
pub use info::ViewerInfo;
pub use load::load_result;
pub use render::{Plane, Window, render_slice};

/// HU given to display voxels outside an oblique source (air).
pub const OUTSIDE_HU: f32 = -1024.0;

/// Largest difference of spacing (relative), direction cosines and origin (mm) tolerated
/// between the image, the label map and the heatmap: they must be on one grid.
const GRID_TOLERANCE: f64 = 1e-3;

/// Why a viewer volume cannot be built or a slice rendered.
#[derive(Debug, thiserror::Error)]
pub enum ViewerError {
    /// A result file is missing or unreadable, or the result document is not one we read.
    #[error("analysis result: {0}")]
    Result(String),
    /// The source series cannot be loaded.
    #[error("source series: {0}")]
    Source(String),
    /// Image, labels and heatmap are not on one grid, or a grid is unusable.
    #[error("grid: {0}")]
    Grid(String),
    /// A request outside the volume (slice index, plane or window name).
    #[error("request: {0}")]
    Request(String),
    /// PNG encoding failed.
    #[error("PNG encoding: {0}")]
    Encode(String),
}

/// A series and its analysis ready for display: HU (as `i16`), the label map and the optional
/// lesion heatmap on one display grid (LPS-oriented, see the module documentation), and the
/// result document's vertebrae and lesions.
#[derive(Clone, PartialEq)]
pub struct ViewerVolume {
    dims: [usize; 3],
    geometry: Geometry,
    hu: Vec<i16>,
    labels: Vec<u8>,
    heatmap: Option<Vec<u8>>,
    vertebrae: Vec<VertebraResult>,
    lesions: Vec<LesionResult>,
    extents: BTreeMap<u8, [[usize; 3]; 2]>,
}

impl std::fmt::Debug for ViewerVolume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewerVolume")
            .field("dims", &self.dims)
            .field("geometry", &self.geometry)
            .field("heatmap", &self.heatmap.is_some())
            .field("vertebrae", &self.vertebrae.len())
            .field("lesions", &self.lesions.len())
            .finish_non_exhaustive()
    }
}

impl ViewerVolume {
    /// Builds a viewer volume from an image in HU, its label map and optional heatmap (u8,
    /// 255 = probability 1) on the same grid, and the findings of its result document.
    /// Everything is reoriented onto the LPS display grid; HU are rounded and clamped to
    /// `i16`.
    ///
    /// # Errors
    /// [`ViewerError::Grid`] when the volumes are not on one grid or the geometry is invalid.
    pub fn new(
        hu: &Volume<f32>,
        labels: &Volume<u8>,
        heatmap: Option<&Volume<u8>>,
        vertebrae: Vec<VertebraResult>,
        lesions: Vec<LesionResult>,
    ) -> Result<Self, ViewerError> {
        same_grid(hu, labels, "label map")?;
        if let Some(h) = heatmap {
            same_grid(hu, h, "lesion heatmap")?;
        }
        let grid_err = |e: vertebra_core::Error| ViewerError::Grid(e.to_string());
        let oblique = !is_axis_aligned(hu.geometry());
        let policy = ObliquePolicy::ResampleAxisAligned;
        let hu_lps: Volume<i16> = if oblique {
            reorient_image_to_lps(hu, policy, OUTSIDE_HU)
                .map_err(grid_err)?
                .map(|&v| to_i16(v))
        } else {
            reorient_to_lps(&hu.map(|&v| to_i16(v))).map_err(grid_err)?
        };
        let display = |v: &Volume<u8>| {
            vertebra_core::volume::reorient_labels_to_lps(v, policy, 0u8).map_err(grid_err)
        };
        let labels_lps = display(labels)?;
        let heatmap_lps = heatmap.map(display).transpose()?;
        if labels_lps.dims() != hu_lps.dims()
            || heatmap_lps
                .as_ref()
                .is_some_and(|h| h.dims() != hu_lps.dims())
        {
            return Err(ViewerError::Grid(
                "image and labels reoriented onto different grids".into(),
            ));
        }
        let dims = hu_lps.dims();
        let geometry = *hu_lps.geometry();
        let labels = labels_lps.into_data();
        let extents = label_extents(&labels, dims);
        Ok(ViewerVolume {
            dims,
            geometry,
            hu: hu_lps.into_data(),
            labels,
            heatmap: heatmap_lps.map(Volume::into_data),
            vertebrae,
            lesions,
            extents,
        })
    }

    /// Display grid size `(x, y, z)`: towards patient Left, Posterior, Superior.
    pub fn dims(&self) -> [usize; 3] {
        self.dims
    }

    /// Placement of the display grid (LPS, mm).
    pub fn geometry(&self) -> &Geometry {
        &self.geometry
    }

    /// Whether a lesion heatmap was loaded.
    pub fn has_heatmap(&self) -> bool {
        self.heatmap.is_some()
    }

    /// The vertebrae of the result document (cranio-caudal).
    pub fn vertebrae(&self) -> &[VertebraResult] {
        &self.vertebrae
    }

    /// The lesions of the result document (by decreasing score).
    pub fn lesions(&self) -> &[LesionResult] {
        &self.lesions
    }

    /// Inclusive voxel box of a label on the display grid, if it has voxels.
    pub fn label_extent(&self, label: u8) -> Option<[[usize; 3]; 2]> {
        self.extents.get(&label).copied()
    }

    /// Number of slices of a plane.
    pub fn slices(&self, plane: Plane) -> usize {
        self.dims[plane.normal_axis()]
    }

    /// Memory held by the voxel buffers, in bytes (what [`ViewerCache`] counts).
    pub fn bytes(&self) -> usize {
        self.hu.len() * 2 + self.labels.len() + self.heatmap.as_ref().map_or(0, Vec::len)
    }

    /// Continuous display-grid voxel coordinate of an LPS position (mm).
    pub fn voxel_of(&self, lps: [f64; 3]) -> [f64; 3] {
        self.geometry.world_to_voxel(lps)
    }

    /// The slice of `plane` through an LPS position, clamped into the volume.
    pub fn slice_of(&self, plane: Plane, lps: [f64; 3]) -> usize {
        let a = plane.normal_axis();
        let v = self.voxel_of(lps)[a].round();
        v.clamp(0.0, (self.dims[a] - 1) as f64) as usize
    }

    fn hu(&self) -> &[i16] {
        &self.hu
    }

    fn labels(&self) -> &[u8] {
        &self.labels
    }

    fn heatmap(&self) -> Option<&[u8]> {
        self.heatmap.as_deref()
    }
}

/// Whether every voxel axis runs along one LPS axis (within the reorientation's tolerance),
/// so that reorienting is a permutation of voxels.
fn is_axis_aligned(g: &Geometry) -> bool {
    let tol = vertebra_core::volume::AXIS_ALIGNED_TOLERANCE;
    g.direction.iter().all(|row| {
        let big = row.iter().filter(|c| c.abs() >= 1.0 - tol).count();
        let small = row.iter().filter(|c| c.abs() <= tol).count();
        big == 1 && small == 2
    })
}

fn to_i16(v: f32) -> i16 {
    if v.is_nan() {
        OUTSIDE_HU as i16
    } else {
        v.round().clamp(f32::from(i16::MIN), f32::from(i16::MAX)) as i16
    }
}

/// Checks that `other` lies on `hu`'s grid.
fn same_grid<T, U>(hu: &Volume<T>, other: &Volume<U>, what: &str) -> Result<(), ViewerError> {
    let (a, b) = (hu.geometry(), other.geometry());
    let ok = hu.dims() == other.dims()
        && a.spacing
            .iter()
            .zip(b.spacing)
            .all(|(x, y)| (x - y).abs() <= GRID_TOLERANCE * x.abs())
        && a.direction
            .iter()
            .flatten()
            .zip(b.direction.iter().flatten())
            .all(|(x, y)| (x - y).abs() <= GRID_TOLERANCE)
        && a.origin
            .iter()
            .zip(b.origin)
            .all(|(x, y)| (x - y).abs() <= 0.01);
    if ok {
        Ok(())
    } else {
        Err(ViewerError::Grid(format!(
            "the {what} ({:?}) is not on the image's grid ({:?}): it must be the source grid",
            other.dims(),
            hu.dims()
        )))
    }
}

/// Inclusive voxel box of every non-zero label.
fn label_extents(labels: &[u8], dims: [usize; 3]) -> BTreeMap<u8, [[usize; 3]; 2]> {
    let [nx, ny, _] = dims;
    let mut lo = [[usize::MAX; 3]; 256];
    let mut hi = [[0usize; 3]; 256];
    let mut seen = [false; 256];
    for (z, plane) in labels.chunks_exact(nx * ny).enumerate() {
        for (y, row) in plane.chunks_exact(nx).enumerate() {
            for (x, &l) in row.iter().enumerate() {
                if l == 0 {
                    continue;
                }
                let k = l as usize;
                seen[k] = true;
                for (a, c) in [x, y, z].into_iter().enumerate() {
                    lo[k][a] = lo[k][a].min(c);
                    hi[k][a] = hi[k][a].max(c);
                }
            }
        }
    }
    (1..256)
        .filter(|&k| seen[k])
        .map(|k| (k as u8, [lo[k], hi[k]]))
        .collect()
}

#[cfg(test)]
pub(crate) mod test_support {
    //! A small phantom with its findings, shared by the viewer's unit tests.

    use std::sync::OnceLock;

    use vertebra_core::anatomy::Vertebra;
    use vertebra_core::phantom::{
        self, LesionKind, LesionPlan, LesionRequest, Phantom, PhantomSpec, domain,
    };

    use super::ViewerVolume;
    use crate::engine::document::{LesionResult, VertebraResult};

    /// T12–L2 at 128² in-plane (0.7 mm) and 1.25 mm slices, a lytic lesion in L1 and a
    /// sclerotic one in T12.
    pub fn phantom() -> &'static Phantom {
        static P: OnceLock<Phantom> = OnceLock::new();
        P.get_or_init(|| {
            let mut spec = PhantomSpec::new(
                5,
                Vertebra::T12,
                Vertebra::L2,
                domain::preset("ct-standard").unwrap(),
            );
            spec.in_plane = 128;
            spec.lesions = LesionPlan::Explicit {
                lesions: vec![
                    LesionRequest {
                        kind: LesionKind::Lytic,
                        vertebra: Vertebra::L1,
                    },
                    LesionRequest {
                        kind: LesionKind::Sclerotic,
                        vertebra: Vertebra::T12,
                    },
                ],
            };
            phantom::generate(&spec).unwrap()
        })
    }

    /// The phantom's truth as result-document rows.
    pub fn findings(p: &Phantom) -> (Vec<VertebraResult>, Vec<LesionResult>) {
        let vertebrae = p
            .centroids
            .iter()
            .map(|c| VertebraResult {
                name: c.vertebra.name().into(),
                label: c.vertebra.label(),
                confidence: 0.99,
                raw_name: c.vertebra.name().into(),
                raw_probability: 0.99,
                volume_mm3: c.voxels as f64 * p.labels.geometry().voxel_volume_mm3(),
                centroid_lps_mm: c.world,
                core_mean_hu: Some(180.0),
                heights: None,
                height_loss: None,
                genant_grade: Some(0),
                touches_border: false,
                mean_hu: Some(250.0),
                bbox_source_voxels: None,
            })
            .collect();
        let lesions = p
            .lesions
            .iter()
            .map(|l| LesionResult {
                class: l.class.key().into(),
                score: 0.9,
                centre_lps_mm: l.centre,
                size_mm: l.size_mm,
                vertebra: Some(l.vertebra.name().into()),
                vertebra_distance_mm: 0.0,
            })
            .collect();
        (vertebrae, lesions)
    }

    /// The phantom as a viewer volume, with a heatmap of 255 inside lesion boxes.
    pub fn volume() -> &'static ViewerVolume {
        static V: OnceLock<ViewerVolume> = OnceLock::new();
        V.get_or_init(|| {
            let p = phantom();
            let (v, l) = findings(p);
            let g = *p.ct.geometry();
            let mut heat = p.labels.map(|_| 0u8);
            let dims = heat.dims();
            for lesion in &p.lesions {
                for z in 0..dims[2] {
                    for y in 0..dims[1] {
                        for x in 0..dims[0] {
                            let w = g.voxel_to_world([x as f64, y as f64, z as f64]);
                            if (0..3)
                                .all(|a| (w[a] - lesion.centre[a]).abs() <= lesion.size_mm[a] / 2.0)
                            {
                                let i = heat.index(x, y, z);
                                heat.data_mut()[i] = 255;
                            }
                        }
                    }
                }
            }
            ViewerVolume::new(&p.ct, &p.labels, Some(&heat), v, l).unwrap()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vertebra_core::Geometry;

    #[test]
    fn a_volume_in_ras_order_is_shown_on_the_lps_grid() {
        // 4 × 3 × 2 grid whose x runs towards patient right and y towards anterior (RAS-like
        // in-plane): the display grid flips both.
        let g = Geometry {
            spacing: [1.0, 2.0, 3.0],
            origin: [10.0, 20.0, 30.0],
            direction: [[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, 1.0]],
        };
        let hu = Volume::from_vec([4, 3, 2], (0..24).map(|i| i as f32).collect(), g).unwrap();
        let labels = hu.map(|&v| u8::from(v == 3.0));
        let vol = ViewerVolume::new(&hu, &labels, None, Vec::new(), Vec::new()).unwrap();
        assert_eq!(vol.dims(), [4, 3, 2]);
        assert_eq!(
            vol.geometry().direction,
            vertebra_core::volume::IDENTITY_DIRECTION
        );
        // Source voxel (3, 0, 0) (value 3) is the right-most (x runs to the right) and the
        // most posterior: on the display grid it is x = 0 and, y being flipped, y = 2.
        let i = 2 * 4;
        assert_eq!(vol.hu()[i], 3);
        assert_eq!(vol.labels()[i], 1);
        assert_eq!(vol.label_extent(1), Some([[0, 2, 0], [0, 2, 0]]));
        assert_eq!(vol.bytes(), 24 * 3);
    }

    #[test]
    fn volumes_off_the_image_grid_are_refused() {
        let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
        let hu = Volume::filled([4, 4, 4], 0.0f32, g).unwrap();
        let shifted =
            Volume::filled([4, 4, 4], 0u8, Geometry::axis_aligned([1.0; 3], [5.0; 3])).unwrap();
        let err = ViewerVolume::new(&hu, &shifted, None, Vec::new(), Vec::new()).unwrap_err();
        assert!(matches!(err, ViewerError::Grid(_)), "{err}");
        let small = Volume::filled([4, 4, 3], 0u8, g).unwrap();
        assert!(ViewerVolume::new(&hu, &hu.map(|_| 0u8), Some(&small), vec![], vec![]).is_err());
    }

    #[test]
    fn hu_are_rounded_and_clamped_to_i16() {
        assert_eq!(to_i16(1.6), 2);
        assert_eq!(to_i16(-1e9), i16::MIN);
        assert_eq!(to_i16(1e9), i16::MAX);
        assert_eq!(to_i16(f32::NAN), -1024);
    }
}
