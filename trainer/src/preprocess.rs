//! Preprocessing into model windows and every training target.
//!
//! ## One code path
//! Images go through [`prepare_ct`] exactly as the appliance's input does (orientation to
//! LPS, trilinear resampling to the contract's isotropic spacing with air −1000 HU outside,
//! HU clipped to [−1000, 1000] and scaled to [0, 1]); label maps go through
//! [`prepare_labels`] (same orientation, nearest, outside = 0) onto the same grid; windows
//! are cut with [`crop_or_pad_centered`] (outside the scan = 0.0, i.e. air, and label 0).
//! [`prepare`] does the per-case part once (cacheable); [`window_at`] cuts windows from it.
//!
//! ## Targets (all in the window, tensor order `(z, y, x)`, x fastest)
//! - `labels`: the 26-class label map (0 background, 1..=25 = C1..L6); `mask` = labels > 0.
//! - `instances`: one box per vertebra label with at least `min_instance_voxels` voxels in the
//!   window: the bounding box of that label's voxels in voxel-edge coordinates (voxels `a..=b`
//!   → `[a, b + 1)`), and its identification class `label − 1` (the contract's `id_logits`
//!   order). Boxes come from the label map (all components of one label together, which is
//!   what [`vertebra_core::components::label_per_label`] followed by a per-label union gives):
//!   a vertebra split by a lesion or the window edge is still one instance.
//! - `lesions` (CenterNet, stride `s` = the contract's lesion stride, grid `window / s`): for
//!   every *target* lesion (`is_target`; Genant grade-1 fractures are not targets) whose centre
//!   lies in the window, with centre `u` in input edge coordinates and cell `j = floor(u / s)`:
//!   heatmap channel `class` gets a Gaussian `exp(−Σ_a (k_a − j_a)² / 2σ_a²)` over cells `k`
//!   (peak exactly 1 at `j`, merged by max), `σ_a = max(0.5, extent_a / (6 s))` cells (a
//!   CenterNet-style radius from the lesion extent and the spacing); at `j` the offset target is
//!   `u / s − j` (cells, in [0, 1)) and the size target `ln(extent)` with the extent in input
//!   voxels, and the regression mask is 1. Extents come from the world box (`size_mm`, along
//!   x, y, z) projected on the voxel axes: exact for axis-aligned grids.

use rand::Rng;
use vertebra_core::Volume;
use vertebra_core::anatomy::NUM_LESION_CLASSES;
use vertebra_core::contract::NUM_SEG_CLASSES;
use vertebra_core::inference::{prepare_ct, prepare_labels};
use vertebra_core::phantom::LesionTruth;
use vertebra_core::phantom::domain::Modality;
use vertebra_core::volume::ops::crop_or_pad_centered;
use vertebra_model::VertebraFormerConfig;

use crate::dataset::Case;
use crate::manifest::Annotations;
use crate::{Error, Result};

/// Window geometry and target settings, taken from the model's contract.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WindowSpec {
    /// Window `(z, y, x)` in voxels.
    pub window: [usize; 3],
    /// Isotropic spacing, mm.
    pub spacing_mm: f64,
    /// Lesion output stride.
    pub lesion_stride: usize,
    /// Vertebrae with fewer voxels in the window get no instance box (a sliver at the window
    /// edge carries no identity information and would only teach the head noise).
    pub min_instance_voxels: usize,
}

impl WindowSpec {
    /// The window of a network configuration; `min_instance_voxels` defaults to 1/200 of the
    /// window (a vertebra at 4 mm in a 32³ window has ~300–600 voxels).
    ///
    /// # Errors
    /// An invalid configuration.
    pub fn from_config(config: &VertebraFormerConfig) -> Result<Self> {
        let c = config.contract();
        c.validate()?;
        Ok(WindowSpec {
            window: c.window,
            spacing_mm: c.spacing_mm,
            lesion_stride: c.lesion_stride,
            min_instance_voxels: (c.window.iter().product::<usize>() / 200).max(1),
        })
    }

    /// Voxels in the window.
    pub fn voxels(&self) -> usize {
        self.window.iter().product()
    }

    /// The lesion grid `(z, y, x)`.
    pub fn lesion_grid(&self) -> [usize; 3] {
        self.window.map(|n| n / self.lesion_stride)
    }
}

/// A case resampled and normalised once; windows are cut from it.
#[derive(Debug, Clone, PartialEq)]
pub struct PreparedCase {
    /// Case id.
    pub id: String,
    /// Domain name.
    pub domain: String,
    /// Normalised image at the contract spacing.
    pub image: Volume<f32>,
    /// Labels on the same grid.
    pub labels: Option<Volume<u8>>,
    /// Lesion annotations (world coordinates).
    pub lesions: Option<Vec<LesionTruth>>,
    /// Annotation types.
    pub annotations: Annotations,
    /// World centroid of every vertebra label present (window centres are drawn around them).
    pub centroids: Vec<(u8, [f64; 3])>,
}

/// Resamples and normalises a case through core's code path.
///
/// # Errors
/// [`Error::Case`] for an MR-like case (core has no MR intensity normalisation yet, and HU
/// clipping would destroy an MR image), labels on another grid than the image; core errors.
pub fn prepare(case: &Case, spacing_mm: f64) -> Result<PreparedCase> {
    if case.modality != Modality::Ct {
        return Err(Error::Case {
            case: case.id.clone(),
            message: format!(
                "modality {:?}: only CT has the paper's HU normalisation in vertebra-core; \
                 MR-like cases need an intensity normalisation there first",
                case.modality
            ),
        });
    }
    if let Some(l) = &case.labels
        && (l.dims() != case.image.dims() || l.geometry() != case.image.geometry())
    {
        return Err(Error::Case {
            case: case.id.clone(),
            message: "the label map is not on the image grid".into(),
        });
    }
    let image = prepare_ct(&case.image, spacing_mm)?;
    let labels = match &case.labels {
        Some(l) => Some(prepare_labels(l, spacing_mm)?),
        None => None,
    };
    let centroids = match &labels {
        Some(l) => vertebra_core::metrics::identification::label_centroids(l)?
            .into_iter()
            .map(|c| (c.label, c.position_mm))
            .collect(),
        None => Vec::new(),
    };
    Ok(PreparedCase {
        id: case.id.clone(),
        domain: case.domain.clone(),
        image,
        labels,
        lesions: case.lesions.clone(),
        annotations: case.annotations(),
        centroids,
    })
}

/// One vertebra instance in a window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstanceTarget {
    /// Lower box corner `(z, y, x)`, voxel-edge coordinates.
    pub min: [f32; 3],
    /// Upper box corner `(z, y, x)` (exclusive edge).
    pub max: [f32; 3],
    /// Identification class `label − 1` (0 = C1 … 24 = L6).
    pub class: usize,
    /// Voxels of the label in the window.
    pub voxels: usize,
}

/// CenterNet targets of one window (see the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct LesionTargets {
    /// `[4, gz, gy, gx]` Gaussian heatmap.
    pub heatmap: Vec<f32>,
    /// `[3, gz, gy, gx]` offsets in cells, valid where `mask` is 1.
    pub offset: Vec<f32>,
    /// `[3, gz, gy, gx]` ln(extent in input voxels), valid where `mask` is 1.
    pub log_size: Vec<f32>,
    /// `[gz, gy, gx]` 1 at lesion centre cells.
    pub mask: Vec<f32>,
    /// Number of lesion centres in the window.
    pub count: usize,
}

/// A model window with its targets.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Case id.
    pub case_id: String,
    /// Domain name.
    pub domain: String,
    /// Normalised image `[Z·Y·X]` (tensor order).
    pub image: Vec<f32>,
    /// Label map `[Z·Y·X]`, if annotated.
    pub labels: Option<Vec<u8>>,
    /// Instance boxes (empty without identity annotations).
    pub instances: Vec<InstanceTarget>,
    /// Lesion targets, if annotated.
    pub lesions: Option<LesionTargets>,
    /// Annotation types of the case.
    pub annotations: Annotations,
}

impl Sample {
    /// Binary vertebra mask `[Z·Y·X]` as 0/1 floats, if annotated.
    pub fn mask(&self) -> Option<Vec<f32>> {
        self.labels
            .as_ref()
            .map(|l| l.iter().map(|&v| f32::from(u8::from(v > 0))).collect())
    }
}

/// Cuts the window centred at `centre_world` (LPS mm) and computes its targets.
///
/// # Errors
/// A label value above 25 (not a vertebra label map); core errors for the crop.
pub fn window_at(case: &PreparedCase, centre_world: [f64; 3], spec: &WindowSpec) -> Result<Sample> {
    let [wz, wy, wx] = spec.window;
    let dims = [wx, wy, wz];
    let image = crop_or_pad_centered(&case.image, centre_world, dims, 0.0f32)?;
    let geometry = *image.geometry();
    let labels = match &case.labels {
        Some(l) => Some(crop_or_pad_centered(l, centre_world, dims, 0u8)?),
        None => None,
    };
    if let Some(l) = &labels
        && let Some(bad) = l.data().iter().find(|&&v| v as usize >= NUM_SEG_CLASSES)
    {
        return Err(Error::Case {
            case: case.id.clone(),
            message: format!("label value {bad} is not a vertebra label (0..=25)"),
        });
    }
    let instances = match (&labels, case.annotations.ids) {
        (Some(l), true) => instance_targets(l, spec.min_instance_voxels),
        _ => Vec::new(),
    };
    let lesions = case
        .lesions
        .as_ref()
        .map(|ls| lesion_targets(ls, &geometry, spec));
    Ok(Sample {
        case_id: case.id.clone(),
        domain: case.domain.clone(),
        image: image.into_data(),
        labels: labels.map(Volume::into_data),
        instances,
        lesions,
        annotations: case.annotations,
    })
}

/// Draws a window centre: with probability `p_vertebra` a random vertebra centroid, jittered
/// uniformly by up to a quarter window per axis; otherwise a uniform point of the scan.
pub fn sample_centre<R: Rng>(
    case: &PreparedCase,
    spec: &WindowSpec,
    p_vertebra: f64,
    rng: &mut R,
) -> [f64; 3] {
    let g = case.image.geometry();
    if !case.centroids.is_empty() && rng.random_bool(p_vertebra.clamp(0.0, 1.0)) {
        let (_, c) = case.centroids[rng.random_range(0..case.centroids.len())];
        let jitter = spec.window.map(|n| n as f64 * spec.spacing_mm / 4.0);
        // Window (z, y, x) order → world axes are LPS; jitter is isotropic in magnitude.
        let j = [jitter[2], jitter[1], jitter[0]];
        return [0, 1, 2].map(|a| c[a] + rng.random_range(-j[a]..=j[a]));
    }
    let d = case.image.dims();
    let v = [0, 1, 2].map(|a| rng.random_range(0.0..d[a].max(1) as f64) - 0.5);
    g.voxel_to_world(v)
}

fn instance_targets(labels: &Volume<u8>, min_voxels: usize) -> Vec<InstanceTarget> {
    let [nx, ny, _] = labels.dims();
    let mut lo = [[usize::MAX; 3]; NUM_SEG_CLASSES];
    let mut hi = [[0usize; 3]; NUM_SEG_CLASSES];
    let mut count = [0usize; NUM_SEG_CLASSES];
    for (i, &l) in labels.data().iter().enumerate() {
        if l == 0 {
            continue;
        }
        let l = l as usize;
        let v = [i % nx, (i / nx) % ny, i / (nx * ny)];
        count[l] += 1;
        for a in 0..3 {
            lo[l][a] = lo[l][a].min(v[a]);
            hi[l][a] = hi[l][a].max(v[a]);
        }
    }
    (1..NUM_SEG_CLASSES)
        .filter(|&l| count[l] >= min_voxels.max(1))
        .map(|l| InstanceTarget {
            // (x, y, z) indices → (z, y, x) edges.
            min: [lo[l][2] as f32, lo[l][1] as f32, lo[l][0] as f32],
            max: [
                (hi[l][2] + 1) as f32,
                (hi[l][1] + 1) as f32,
                (hi[l][0] + 1) as f32,
            ],
            class: l - 1,
            voxels: count[l],
        })
        .collect()
}

fn lesion_targets(
    lesions: &[LesionTruth],
    window: &vertebra_core::Geometry,
    spec: &WindowSpec,
) -> LesionTargets {
    let s = spec.lesion_stride as f64;
    let [gz, gy, gx] = spec.lesion_grid();
    let cells = gz * gy * gx;
    let mut t = LesionTargets {
        heatmap: vec![0.0; NUM_LESION_CLASSES * cells],
        offset: vec![0.0; 3 * cells],
        log_size: vec![0.0; 3 * cells],
        mask: vec![0.0; cells],
        count: 0,
    };
    let grid = [gz, gy, gx];
    for lesion in lesions.iter().filter(|l| l.is_target) {
        let c = window.world_to_voxel(lesion.centre);
        // Continuous voxel index (x, y, z), centres at integers → edge coordinates (z, y, x).
        let u = [c[2] + 0.5, c[1] + 0.5, c[0] + 0.5];
        let extent_xyz: [f64; 3] = [0, 1, 2].map(|i| {
            (0..3)
                .map(|j| window.direction[i][j].abs() * lesion.size_mm[j])
                .sum::<f64>()
                / window.spacing[i]
        });
        let extent = [extent_xyz[2], extent_xyz[1], extent_xyz[0]].map(|e| e.max(1e-3));
        let cell = [0, 1, 2].map(|a| (u[a] / s).floor());
        if (0..3).any(|a| cell[a] < 0.0 || cell[a] >= grid[a] as f64) {
            continue;
        }
        let j = cell.map(|v| v as usize);
        let sigma = extent.map(|e| (e / (6.0 * s)).max(0.5));
        let ch = lesion.class.index();
        let reach = sigma.map(|v| (3.0 * v).ceil() as usize);
        let range = |a: usize| j[a].saturating_sub(reach[a])..(j[a] + reach[a] + 1).min(grid[a]);
        for kz in range(0) {
            for ky in range(1) {
                for kx in range(2) {
                    let d = [kz, ky, kx];
                    let e: f64 = (0..3)
                        .map(|a| {
                            let dd = d[a] as f64 - j[a] as f64;
                            dd * dd / (2.0 * sigma[a] * sigma[a])
                        })
                        .sum();
                    let idx = ch * cells + (kz * gy + ky) * gx + kx;
                    t.heatmap[idx] = t.heatmap[idx].max((-e).exp() as f32);
                }
            }
        }
        let at = (j[0] * gy + j[1]) * gx + j[2];
        for a in 0..3 {
            t.offset[a * cells + at] = (u[a] / s - cell[a]) as f32;
            t.log_size[a * cells + at] = extent[a].ln() as f32;
        }
        t.mask[at] = 1.0;
        t.count += 1;
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use vertebra_core::Geometry;
    use vertebra_core::anatomy::{LesionClass, Vertebra};

    fn spec() -> WindowSpec {
        WindowSpec {
            window: [16, 16, 16],
            spacing_mm: 2.0,
            lesion_stride: 4,
            min_instance_voxels: 1,
        }
    }

    /// A 20³ CT at 2 mm: air with a bone cube labelled L1 at voxels x 4..=7, y 5..=9, z 6..=11.
    fn synthetic_case() -> Case {
        let g = Geometry::axis_aligned([2.0; 3], [10.0, 20.0, 30.0]);
        let mut image = Volume::filled([20, 20, 20], -1000.0f32, g).unwrap();
        let mut labels = Volume::filled([20, 20, 20], 0u8, g).unwrap();
        for z in 6..=11 {
            for y in 5..=9 {
                for x in 4..=7 {
                    let i = image.index(x, y, z);
                    image.data_mut()[i] = 700.0;
                    labels.data_mut()[i] = Vertebra::L1.label();
                }
            }
        }
        let lesion = LesionTruth {
            class: LesionClass::LyticMetastasis,
            is_target: true,
            vertebra: Vertebra::L1,
            partner: None,
            // Voxel (6.25, 7, 9) of the case grid, 4 × 6 × 8 mm.
            centre: g.voxel_to_world([6.25, 7.0, 9.0]),
            size_mm: [4.0, 6.0, 8.0],
            voxels: 10,
            genant_grade: None,
            fracture_shape: None,
            height_loss: None,
        };
        let non_target = LesionTruth {
            is_target: false,
            class: LesionClass::Fracture,
            ..lesion.clone()
        };
        Case {
            id: "syn".into(),
            patient_id: "P".into(),
            domain: "ct-standard".into(),
            modality: Modality::Ct,
            image,
            labels: Some(labels),
            ids_annotated: true,
            lesions: Some(vec![lesion, non_target]),
        }
    }

    #[test]
    fn window_targets_are_in_window_edge_coordinates() {
        let case = prepare(&synthetic_case(), 2.0).unwrap();
        // Same spacing: resampling is the identity.
        assert_eq!(case.image.dims(), [20, 20, 20]);
        // Window of 16 centred on world voxel (10, 10, 10) - 0.5 → starts at voxel (2, 2, 2).
        let centre = case.image.geometry().voxel_to_world([9.5, 9.5, 9.5]);
        let s = window_at(&case, centre, &spec()).unwrap();
        assert_eq!(s.image.len(), 16 * 16 * 16);
        // Voxel (x 2, y 3, z 4) of the window = case voxel (4, 5, 6): bone → (700+1000)/2000.
        let idx = |x: usize, y: usize, z: usize| x + 16 * (y + 16 * z);
        assert!((s.image[idx(2, 3, 4)] - 0.85).abs() < 1e-6);
        assert_eq!(s.image[idx(0, 0, 0)], 0.0);
        let mask = s.mask().unwrap();
        assert_eq!(mask.iter().sum::<f32>(), (4 * 5 * 6) as f32);
        assert_eq!(s.instances.len(), 1);
        let b = s.instances[0];
        assert_eq!(b.class, Vertebra::L1.ordinal());
        // z 6..=11 → 4..=9 → [4, 10); y 5..=9 → [3, 8); x 4..=7 → [2, 6).
        assert_eq!(b.min, [4.0, 3.0, 2.0]);
        assert_eq!(b.max, [10.0, 8.0, 6.0]);
        assert_eq!(b.voxels, 120);
        let l = s.lesions.as_ref().unwrap();
        assert_eq!(l.count, 1, "the non-target lesion gets no peak");
        // Lesion at case voxel (6.25, 7, 9) → window (4.25, 5, 7) → edges (z 7.5, y 5.5, x 4.75)
        // → cells (1.875, 1.375, 1.1875) at stride 4 → cell (1, 1, 1).
        let g = 4;
        let at = (g + 1) * g + 1;
        let cells = g * g * g;
        let ch = LesionClass::LyticMetastasis.index();
        assert_eq!(l.heatmap[ch * cells + at], 1.0);
        assert_eq!(l.mask[at], 1.0);
        assert_eq!(l.mask.iter().sum::<f32>(), 1.0);
        let off: Vec<f32> = (0..3).map(|a| l.offset[a * cells + at]).collect();
        assert!(
            (off[0] - 0.875).abs() < 1e-5
                && (off[1] - 0.375).abs() < 1e-5
                && (off[2] - 0.1875).abs() < 1e-5,
            "{off:?}"
        );
        // Extent (z, y, x) = (8, 6, 4) mm / 2 mm = (4, 3, 2) voxels.
        let size: Vec<f32> = (0..3).map(|a| l.log_size[a * cells + at].exp()).collect();
        assert!(
            (size[0] - 4.0).abs() < 1e-4
                && (size[1] - 3.0).abs() < 1e-4
                && (size[2] - 2.0).abs() < 1e-4,
            "{size:?}"
        );
        // Gaussian: σ = 0.5 cells on every axis here, so a neighbour cell has exp(-2).
        let nb = ch * cells + (g + 1) * g + 2;
        assert!((l.heatmap[nb] - (-2.0f32).exp()).abs() < 1e-6);
        // Other channels stay empty.
        assert_eq!(l.heatmap[..cells].iter().sum::<f32>(), 0.0);
    }

    #[test]
    fn windows_outside_the_scan_are_air_without_targets() {
        let case = prepare(&synthetic_case(), 2.0).unwrap();
        let far = case.image.geometry().voxel_to_world([200.0, 0.0, 0.0]);
        let s = window_at(&case, far, &spec()).unwrap();
        assert!(s.image.iter().all(|&v| v == 0.0));
        assert!(s.instances.is_empty());
        assert_eq!(s.lesions.unwrap().count, 0);
    }

    #[test]
    fn resampling_keeps_labels_on_the_image_grid() {
        let case = prepare(&synthetic_case(), 4.0).unwrap();
        assert_eq!(case.image.dims(), [10, 10, 10]);
        assert_eq!(case.labels.as_ref().unwrap().dims(), [10, 10, 10]);
        assert_eq!(case.centroids.len(), 1);
        assert!(case.image.data().iter().all(|v| (0.0..=1.0).contains(v)));
    }

    #[test]
    fn mr_cases_are_refused_loudly() {
        let mut c = synthetic_case();
        c.modality = Modality::MrT1Like;
        let e = prepare(&c, 2.0).unwrap_err().to_string();
        assert!(
            e.contains("only CT has the paper's HU normalisation"),
            "{e}"
        );
    }

    #[test]
    fn phantom_windows_have_masks_and_boxes() {
        use crate::dataset::PhantomDatasetSpec;
        use rand::SeedableRng;
        let cases = PhantomDatasetSpec {
            domains: vec!["ct-standard".into()],
            cases_per_domain: 1,
            base_seed: 3,
            paired: false,
            first: Vertebra::L2,
            last: Vertebra::L3,
            in_plane: 64,
            lesions: vertebra_core::phantom::LesionPlan::None,
        }
        .generate()
        .unwrap();
        let spec = WindowSpec::from_config(&VertebraFormerConfig::tiny()).unwrap();
        let p = prepare(&cases[0], spec.spacing_mm).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let c = sample_centre(&p, &spec, 1.0, &mut rng);
        let s = window_at(&p, c, &spec).unwrap();
        let m = s.mask().unwrap();
        assert!(m.iter().sum::<f32>() > 50.0);
        assert!(!s.instances.is_empty());
        for b in &s.instances {
            for a in 0..3 {
                assert!(
                    b.min[a] >= 0.0 && b.max[a] <= spec.window[a] as f32 && b.min[a] < b.max[a]
                );
            }
        }
    }
}
