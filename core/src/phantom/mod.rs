//! Synthetic spinal CT phantoms: deterministic patients with anatomy that varies along the
//! column and between patients, lesions with exact ground truth, and scanner domains.
//!
//! [`generate`] builds one study from a [`PhantomSpec`]:
//!
//! 1. a patient and their column (`spine.rs`): per-level morphometry, a smooth 3-D spine
//!    curve with lordosis/kyphosis/scoliosis, axial rotation, size, the occasional L6;
//! 2. soft tissues (`body.rs`) and bones (`skeleton.rs`) as implicit primitives
//!    (`shapes.rs`);
//! 3. lesions (`lesions.rs`) and, if the domain says so, metal hardware (`hardware.rs`);
//! 4. rasterisation onto the domain's acquisition grid (`rasterize.rs`): a tissue map and the
//!    vertebra label map; centroids and lesion boxes are measured on the painted voxels;
//! 5. clean HU from the tissue map ([`clean_hu`]);
//! 6. **appearance hook**: the domain's scanner model ([`domain::apply_appearance`]).
//!
//! Randomness comes from one seed through separate ChaCha8 streams (anatomy, lesions, HU,
//! appearance), so the same seed gives the same patient whatever the FOV, lesions or domain,
//! and the same seed and spec give bit-identical volumes. Ground truth is described in
//! `docs/phantom.md`.

mod body;
pub mod domain;
mod hardware;
mod hu;
mod lesions;
mod noise;
mod rasterize;
mod shapes;
mod skeleton;
mod spine;
pub mod tissue;

use crate::anatomy::Vertebra;
use crate::{Error, Result, Volume};
use domain::{DomainPreset, Modality};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

pub use crate::anatomy::LesionClass;
pub use hardware::{Screw, Side};
pub use hu::clean_hu;
pub use lesions::{FractureShape, LesionKind, LesionPlan, LesionRequest, MAX_RANDOM_LESIONS};
pub use tissue::{ALL_TISSUES, NUM_TISSUES, Tissue, TissueHu};

/// Format tag written into every ground-truth file.
pub const TRUTH_FORMAT: &str = "vertebra-phantom-truth/1";

/// Largest grid the generator accepts (voxels): 6 bytes per voxel are held at once, so this
/// bounds memory at about 2.4 GB and turns a typo in a size into an error, not an OOM kill.
pub const MAX_VOXELS: usize = 400_000_000;

/// Largest in-plane matrix.
pub const MAX_IN_PLANE: usize = 2048;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhantomSpec {
    /// Seed of everything random.
    pub seed: u64,
    /// Most cranial vertebra of the column range to image.
    pub first: Vertebra,
    /// Most caudal vertebra of the range, inclusive. `L5` images the lumbar spine down to the
    /// sacrum, so a patient with the transitional L6 has it in the field of view too; `L6`
    /// forces the variant.
    pub last: Vertebra,
    /// Scanner domain: grid spacing, appearance, hardware.
    pub domain: DomainPreset,
    /// In-plane matrix (columns = rows), e.g. 512 (DICOM-like) or 128 (training).
    pub in_plane: usize,
    /// Number of slices; `None`: enough to cover the range at the domain's slice spacing.
    pub slices: Option<usize>,
    /// Lesions.
    pub lesions: LesionPlan,
}

impl PhantomSpec {
    /// A healthy-spine spec with 128² slices covering `first..=last`.
    pub fn new(seed: u64, first: Vertebra, last: Vertebra, domain: DomainPreset) -> Self {
        PhantomSpec {
            seed,
            first,
            last,
            domain,
            in_plane: 128,
            slices: None,
            lesions: LesionPlan::None,
        }
    }

    /// Checks the spec without generating anything.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an empty range (`first` caudal to `last`), an in-plane
    /// size of 0 or above [`MAX_IN_PLANE`], zero slices, an invalid domain preset or lesion
    /// plan.
    pub fn validate(&self) -> Result<()> {
        if self.first > self.last {
            return Err(Error::InvalidArgument(format!(
                "phantom range {}..{} is empty: first must be cranial to (or equal) last",
                self.first.name(),
                self.last.name()
            )));
        }
        if self.in_plane == 0 || self.in_plane > MAX_IN_PLANE {
            return Err(Error::InvalidArgument(format!(
                "in_plane = {} must be in 1..={MAX_IN_PLANE}",
                self.in_plane
            )));
        }
        if self.slices == Some(0) {
            return Err(Error::InvalidArgument(
                "slices = 0: a volume needs a slice".into(),
            ));
        }
        self.domain.validate()?;
        self.lesions.validate()
    }
}

/// Centroid of one vertebra's label voxels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertebraCentroid {
    /// The vertebra.
    pub vertebra: Vertebra,
    /// Mean world position (LPS, mm) of its label voxels.
    pub world: [f64; 3],
    /// Number of label voxels (partial vertebrae at the FOV edge have fewer).
    pub voxels: usize,
}

/// Placement of a vertebra's body, for measurements (fracture heights, orientation).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertebraPose {
    /// The vertebra.
    pub vertebra: Vertebra,
    /// Centre of the undeformed body (world LPS, mm). For C1, the ring centre on the dens axis.
    pub body_centre: [f64; 3],
    /// Body axes in world LPS: patient-left, posterior, cranial (unit vectors).
    pub axes: [[f64; 3]; 3],
    /// Undeformed body width, depth and posterior height, mm.
    pub body_size_mm: [f64; 3],
}

/// Ground truth of one lesion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LesionTruth {
    /// Lesion-head class.
    pub class: LesionClass,
    /// Whether the lesion head must detect it: false only for Genant grade-1 fractures.
    pub is_target: bool,
    /// The affected vertebra (for infection: the one above the disc).
    pub vertebra: Vertebra,
    /// For infection: the vertebra below the disc.
    pub partner: Option<Vertebra>,
    /// Centre of the lesion's axis-aligned box (world LPS, mm).
    pub centre: [f64; 3],
    /// Extents of the axis-aligned box of the lesion voxels along x, y, z (mm).
    pub size_mm: [f64; 3],
    /// Number of lesion voxels (fracture: voxels of the deformed body).
    pub voxels: usize,
    /// Genant grade 1..=3 of a fracture.
    pub genant_grade: Option<u8>,
    /// Fracture morphology.
    pub fracture_shape: Option<FractureShape>,
    /// Height loss of a fracture, fraction of the expected height at the graded position.
    pub height_loss: Option<f64>,
}

/// One generated study.
#[derive(Debug, Clone, PartialEq)]
pub struct Phantom {
    /// The image: HU for CT, intensity for MR-like modalities, after the domain's appearance.
    pub ct: Volume<f32>,
    /// Vertebra labels: 0 background, 1..=25 per [`crate::anatomy::Vertebra`].
    pub labels: Volume<u8>,
    /// Tissue map ([`Tissue`] codes).
    pub tissue: Volume<u8>,
    /// Centroids of the vertebrae with label voxels, cranio-caudal.
    pub centroids: Vec<VertebraCentroid>,
    /// Poses of every vertebra of the patient (also those outside the FOV).
    pub vertebrae: Vec<VertebraPose>,
    /// Lesions, in placement order.
    pub lesions: Vec<LesionTruth>,
    /// Pedicle screws (empty without metal).
    pub hardware: Vec<Screw>,
    /// Domain preset name.
    pub domain: String,
    /// Modality.
    pub modality: Modality,
    /// Seed.
    pub seed: u64,
    /// Whether this patient has the transitional L6.
    pub l6_variant: bool,
    /// The spec it was generated from.
    pub spec: PhantomSpec,
}

/// The voxel grid in ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GeometryRecord {
    /// Grid size x, y, z.
    pub dims: [usize; 3],
    /// Voxel spacing, mm.
    pub spacing: [f64; 3],
    /// World position of voxel (0, 0, 0), LPS mm.
    pub origin: [f64; 3],
    /// Direction cosines of the voxel axes (rows = axes) in LPS.
    pub direction: [[f64; 3]; 3],
    /// Always "LPS".
    pub coordinate_system: String,
}

/// One centroid as VerSe writes it (label and X/Y/Z), here in world LPS millimetres.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CentroidRecord {
    /// Label value 1..=25.
    pub label: u8,
    /// "C1" … "L6".
    pub name: String,
    /// World x (LPS, mm).
    #[serde(rename = "X")]
    pub x: f64,
    /// World y (LPS, mm).
    #[serde(rename = "Y")]
    pub y: f64,
    /// World z (LPS, mm).
    #[serde(rename = "Z")]
    pub z: f64,
    /// Label voxels.
    pub voxels: usize,
}

/// Everything a trainer or evaluator needs besides the volumes; serialised as the phantom's
/// JSON ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// [`TRUTH_FORMAT`].
    pub format: String,
    /// Seed.
    pub seed: u64,
    /// Domain preset name.
    pub domain: String,
    /// Modality.
    pub modality: Modality,
    /// The generating spec (with the full domain preset).
    pub spec: PhantomSpec,
    /// Voxel grid.
    pub geometry: GeometryRecord,
    /// Whether the patient has the transitional L6.
    pub l6_variant: bool,
    /// Names of the vertebrae with label voxels, cranio-caudal.
    pub vertebrae: Vec<String>,
    /// Centroids, VerSe style but in world LPS mm.
    pub centroids: Vec<CentroidRecord>,
    /// Lesions.
    pub lesions: Vec<LesionTruth>,
    /// Pedicle screws.
    pub hardware: Vec<Screw>,
    /// How to read this file.
    pub notes: Vec<String>,
}

/// The reading notes written into every ground truth.
fn truth_notes() -> Vec<String> {
    [
        "Coordinates are world LPS millimetres (DICOM patient space); voxel = inverse of \
         geometry (origin + direction * spacing * index).",
        "centroids: mean world position of each vertebra's label voxels (VerSe label + X/Y/Z, \
         but in LPS mm rather than voxel indices).",
        "lesions: centre and size_mm are the axis-aligned box of the lesion voxels.",
        "Genant grade-1 fractures (20-25 % height loss) are painted and listed with \
         is_target = false: they are not LesionClass::Fracture targets; grades 2 and 3 are.",
        "infection_erosion: vertebra is above and partner below the affected disc; the box \
         centre lies in the former disc space (label 0).",
        "Lesion and metal voxels inside a vertebra keep that vertebra's label. Ribs, sternum, \
         skull, mandible, sacrum and pelvis are label 0.",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

impl Phantom {
    /// Binary vertebra mask (1 where any vertebra label, else 0).
    pub fn mask(&self) -> Volume<u8> {
        self.labels.map(|&l| u8::from(l > 0))
    }

    /// The ground truth for the JSON file.
    pub fn truth(&self) -> GroundTruth {
        let g = self.ct.geometry();
        GroundTruth {
            format: TRUTH_FORMAT.to_owned(),
            seed: self.seed,
            domain: self.domain.clone(),
            modality: self.modality,
            spec: self.spec.clone(),
            geometry: GeometryRecord {
                dims: self.ct.dims(),
                spacing: g.spacing,
                origin: g.origin,
                direction: g.direction,
                coordinate_system: "LPS".to_owned(),
            },
            l6_variant: self.l6_variant,
            vertebrae: self
                .centroids
                .iter()
                .map(|c| c.vertebra.name().to_owned())
                .collect(),
            centroids: self
                .centroids
                .iter()
                .map(|c| CentroidRecord {
                    label: c.vertebra.label(),
                    name: c.vertebra.name().to_owned(),
                    x: c.world[0],
                    y: c.world[1],
                    z: c.world[2],
                    voxels: c.voxels,
                })
                .collect(),
            lesions: self.lesions.clone(),
            hardware: self.hardware.clone(),
            notes: truth_notes(),
        }
    }
}

/// RNG streams of one seed.
const STREAM_ANATOMY: u64 = 0;
const STREAM_LESIONS: u64 = 1;
const STREAM_HU: u64 = 2;
const STREAM_APPEARANCE: u64 = 3;

fn stream(seed: u64, s: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(s);
    rng
}

/// Generates a phantom with the domain's appearance applied.
///
/// # Errors
/// Everything [`PhantomSpec::validate`] rejects; a grid above [`MAX_VOXELS`]; a lesion that
/// cannot be placed (its vertebra outside the field of view or absent, two lesions on one
/// vertebra, infection without a labelled vertebra below) or that has no voxel on the grid.
pub fn generate(spec: &PhantomSpec) -> Result<Phantom> {
    build(spec, true)
}

/// Generates a phantom whose `ct` is the clean HU volume (no scanner appearance): for tests
/// of the anatomy and HU model, and as the input of custom appearance pipelines.
///
/// # Errors
/// As [`generate`].
pub fn generate_clean(spec: &PhantomSpec) -> Result<Phantom> {
    build(spec, false)
}

fn build(spec: &PhantomSpec, appearance: bool) -> Result<Phantom> {
    spec.validate()?;
    let force_l6 = spec.last == Vertebra::L6;
    let mut anat = stream(spec.seed, STREAM_ANATOMY);
    let col = spine::build_column(&mut anat, force_l6);
    let soft = body::SoftProfile::new(&col, &mut anat);
    let grid = plan_grid(spec, &col)?;
    let fov = grid.fov();
    let px = grid.spacing[0].max(grid.spacing[1]).max(grid.spacing[2]);
    let cortex = (0.55 * px).max(1.0);

    let mut lrng = stream(spec.seed, STREAM_LESIONS);
    let placement = lesions::place(&spec.lesions, &col, &fov, cortex, &mut lrng)?;
    let (metal, hardware) = match &spec.domain.metal {
        Some(m) => hardware::instrument(&col, &fov, m.levels),
        None => (Vec::new(), Vec::new()),
    };

    let opts = skeleton::SkeletonOptions {
        fractures: &placement.fractures,
        cortex,
    };
    let mut prims = skeleton::skeleton(&col, &opts);
    prims.extend(soft.gas.iter().cloned());
    for l in &placement.lesions {
        prims.extend(l.prims.iter().cloned());
    }
    prims.extend(metal);
    prims.retain(|p| rasterize::touches(p, &fov, 1.0));

    let (tissue, labels) = rasterize::rasterize(&grid, &col, &soft, &prims);
    let geometry = grid.geometry()?;
    let centroids: Vec<VertebraCentroid> = rasterize::label_centroids(&grid, &labels)
        .into_iter()
        .enumerate()
        .filter(|(_, (n, _))| *n > 0)
        .filter_map(|(i, (n, c))| {
            Vertebra::from_label(i as u8 + 1).map(|vertebra| VertebraCentroid {
                vertebra,
                world: c,
                voxels: n,
            })
        })
        .collect();
    let mut lesion_truth = Vec::with_capacity(placement.lesions.len());
    for l in &placement.lesions {
        let Some(([min, max], voxels)) = rasterize::probe_extent(&grid, &l.probe, &tissue, &labels)
        else {
            return Err(Error::InvalidArgument(format!(
                "{} lesion at {} has no voxels on this grid (too coarse or outside the FOV)",
                l.class().key(),
                l.vertebra.name()
            )));
        };
        let (grade, shape) = match l.kind {
            LesionKind::Fracture { grade, shape } => (Some(grade), Some(shape)),
            _ => (None, None),
        };
        lesion_truth.push(LesionTruth {
            class: l.class(),
            is_target: l.is_target(),
            vertebra: l.vertebra,
            partner: l.partner,
            centre: [
                f64::midpoint(min[0], max[0]),
                f64::midpoint(min[1], max[1]),
                f64::midpoint(min[2], max[2]),
            ],
            size_mm: [max[0] - min[0], max[1] - min[1], max[2] - min[2]],
            voxels,
            genant_grade: grade,
            fracture_shape: shape,
            height_loss: l.height_loss,
        });
    }
    let vertebrae = col
        .levels
        .iter()
        .filter_map(|l| {
            l.vertebra().map(|v| VertebraPose {
                vertebra: v,
                body_centre: l.frame.origin,
                axes: l.frame.axes,
                body_size_mm: [2.0 * l.section.a, 2.0 * l.section.b, l.height],
            })
        })
        .collect();

    let tissue = Volume::from_vec(grid.dims, tissue, geometry)?;
    let labels = Volume::from_vec(grid.dims, labels, geometry)?;
    let mut hu_rng = stream(spec.seed, STREAM_HU);
    let clean = clean_hu(&tissue, &mut hu_rng)?;
    // Appearance hook: the scanner domain turns clean HU into this domain's image.
    let ct = if appearance {
        let mut arng = stream(spec.seed, STREAM_APPEARANCE);
        domain::apply_appearance(&clean, &tissue, &spec.domain, &mut arng)?
    } else {
        clean
    };
    Ok(Phantom {
        ct,
        labels,
        tissue,
        centroids,
        vertebrae,
        lesions: lesion_truth,
        hardware,
        domain: spec.domain.name.clone(),
        modality: spec.domain.modality,
        seed: spec.seed,
        l6_variant: col.patient.has_l6,
        spec: spec.clone(),
    })
}

/// Chooses the acquisition grid: the domain's spacing, `in_plane` columns and rows centred on
/// the imaged part of the body (on the spine for small matrices, on the body for large ones,
/// jittered per patient), and slices covering the requested range plus a random margin.
fn plan_grid(spec: &PhantomSpec, col: &spine::Column) -> Result<rasterize::Grid> {
    let px = spec.domain.pixel_spacing_mm;
    let dz = spec.domain.slice_spacing_mm;
    let last = if spec.last == Vertebra::L5 && col.patient.has_l6 {
        Vertebra::L6
    } else {
        spec.last
    };
    let missing = |v: Vertebra| {
        Error::InvalidArgument(format!(
            "vertebra {} does not exist in this patient",
            v.name()
        ))
    };
    let i0 = col
        .index_of(spec.first)
        .ok_or_else(|| missing(spec.first))?;
    let i1 = col.index_of(last).ok_or_else(|| missing(last))?;
    let s = col.patient.size;
    let top_of = |i: usize| {
        let l = &col.levels[i];
        if l.vertebra() == Some(Vertebra::C1) {
            l.frame.origin[2] + 9.0 * s + 15.0
        } else {
            let above = if i > 0 {
                col.levels[i - 1].disc_below
            } else {
                0.0
            };
            skeleton::body_primitive(l, None, 1.0).bounds[1][2] + above / 2.0
        }
    };
    let bottom_of = |i: usize| {
        let l = &col.levels[i];
        skeleton::body_primitive(l, None, 1.0).bounds[0][2] - l.disc_below / 2.0
    };
    let z_top = top_of(i0) + col.patient.fov_margin[0];
    let z_bottom = bottom_of(i1) - col.patient.fov_margin[1];
    let nz = spec
        .slices
        .unwrap_or(((z_top - z_bottom) / dz).ceil() as usize + 1);
    let n = spec.in_plane;
    n.checked_mul(n)
        .and_then(|p| p.checked_mul(nz))
        .filter(|&t| t <= MAX_VOXELS)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "phantom of {n}x{n}x{nz} voxels exceeds the limit of {MAX_VOXELS}"
            ))
        })?;
    let range = &col.levels[i0..=i1];
    let m = range.len() as f64;
    let x_spine = range.iter().map(|l| l.frame.origin[0]).sum::<f64>() / m;
    let y_spine = range
        .iter()
        .map(|l| l.frame.origin[1] + f64::midpoint(l.post.canal_d, l.post.sp_len * 0.7))
        .sum::<f64>()
        / m;
    let y_body = range
        .iter()
        .map(|l| body::SoftProfile::outline_centre_y(col, l.frame.origin[2]))
        .sum::<f64>()
        / m;
    let max_a = range.iter().map(|l| l.section.a).fold(0.0, f64::max);
    let extent = (n - 1) as f64 * px;
    let t = ((extent - 120.0) / 200.0).clamp(0.0, 1.0);
    let jx = col.patient.fov_jitter[0] * (0.1 * extent).min((extent / 2.0 - max_a - 10.0).max(0.0));
    let jy = col.patient.fov_jitter[1] * (0.08 * extent).min((extent / 2.0 - 60.0).max(0.0));
    let cx = x_spine + jx;
    let cy = y_spine + t * (y_body - y_spine) + jy;
    let cz = f64::midpoint(z_top, z_bottom);
    let origin = [
        cx - extent / 2.0,
        cy - extent / 2.0,
        cz - (nz - 1) as f64 * dz / 2.0,
    ];
    let grid = rasterize::Grid {
        dims: [n, n, nz],
        origin,
        spacing: [px, px, dz],
    };
    grid.geometry()?;
    Ok(grid)
}

/// Vertebrae of `first..=last` in cranio-caudal order.
pub fn vertebra_range(first: Vertebra, last: Vertebra) -> Vec<Vertebra> {
    crate::anatomy::ALL_VERTEBRAE
        .iter()
        .copied()
        .filter(|v| *v >= first && *v <= last)
        .collect()
}
