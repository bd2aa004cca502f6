//! Vertebral lesions with ground truth: compression fractures (Genant grades 1–3, wedge,
//! biconcave or crush), lytic and sclerotic metastases, and infection/erosion
//! (spondylodiscitis).
//!
//! Fractures change the body *geometry* (its endplates collapse), so the label map shows the
//! deformity; the space lost is filled by disc. Metastases replace bone tissue inside one
//! vertebra and keep its label (they are in the vertebra). Spondylodiscitis replaces the disc
//! with inflammatory tissue and erodes both adjacent endplates; the eroded bone keeps its
//! vertebra's label.
//!
//! Grades follow Genant et al. (J Bone Miner Res 1993;8:1137–1148): 20–25 % (1), 25–40 % (2),
//! more than 40 % (3) loss of anterior, middle or posterior height. Grades 2 and 3 are
//! > [`LesionClass::Fracture`] targets; grade 1 is painted and recorded with
//! > `is_target = false`, because mild deformities are too often normal shape variants to be a
//! > target (see [`crate::anatomy::GenantGrade::lesion_class`]).

use std::collections::HashMap;

use super::rasterize::Fov;
use super::shapes::{Deformation, Fill, Frame, LabelWrite, Only, Primitive, Shape, norm, sub};
use super::skeleton::{body_primitive, disc_primitive};
use super::spine::{Column, Level, LevelKind};
use super::tissue::Tissue;
use crate::anatomy::{GenantGrade, LesionClass, Region, Vertebra};
use crate::{Error, Result};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Poisson};
use serde::{Deserialize, Serialize};

/// Morphology of a compression fracture: which height is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FractureShape {
    /// Anterior height lost, posterior wall intact (the commonest osteoporotic fracture).
    Wedge,
    /// Middle height lost: both endplates bow in, anterior and posterior walls intact.
    Biconcave,
    /// The whole body collapses (anterior, middle and posterior heights).
    Crush,
}

impl FractureShape {
    /// Which of the anterior/middle/posterior heights the grade refers to.
    pub fn graded_height(self) -> &'static str {
        match self {
            FractureShape::Wedge => "anterior",
            FractureShape::Biconcave => "middle",
            FractureShape::Crush => "anterior, middle and posterior",
        }
    }
}

/// What kind of lesion to create.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LesionKind {
    /// Compression fracture of Genant `grade` 1..=3 with the given morphology.
    Fracture {
        /// Genant grade 1..=3.
        grade: u8,
        /// Morphology.
        shape: FractureShape,
    },
    /// Lytic metastasis in the body.
    Lytic,
    /// Sclerotic metastasis in the body.
    Sclerotic,
    /// Spondylodiscitis of the disc *below* the named vertebra.
    Infection,
}

/// One requested lesion. For [`LesionKind::Infection`] `vertebra` is the upper vertebra of the
/// affected disc; the one below must be a labelled vertebra too.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LesionRequest {
    /// What.
    pub kind: LesionKind,
    /// Where.
    pub vertebra: Vertebra,
}

/// How many and which lesions a phantom gets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "plan", rename_all = "snake_case")]
pub enum LesionPlan {
    /// A healthy spine.
    None,
    /// A Poisson-distributed number of lesions with mean `rate` per case (at most
    /// [`MAX_RANDOM_LESIONS`]), each of a uniformly drawn kind, on distinct vertebrae whose
    /// body lies in the field of view.
    Random {
        /// Expected number of lesions per case, 0..=10.
        rate: f64,
    },
    /// Exactly these lesions (an error if one cannot be placed).
    Explicit {
        /// The lesions.
        lesions: Vec<LesionRequest>,
    },
}

/// Upper bound of lesions per case under [`LesionPlan::Random`].
pub const MAX_RANDOM_LESIONS: usize = 4;

impl LesionPlan {
    /// Checks the plan's own parameters (placement is checked by the generator).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a rate outside 0..=10 or not finite, a fracture grade
    /// outside 1..=3, or a lesion at C1 (which has no body).
    pub fn validate(&self) -> Result<()> {
        match self {
            LesionPlan::None => Ok(()),
            LesionPlan::Random { rate } => {
                if rate.is_finite() && (0.0..=10.0).contains(rate) {
                    Ok(())
                } else {
                    Err(Error::InvalidArgument(format!(
                        "lesion rate {rate} must be a finite number in 0..=10 per case"
                    )))
                }
            }
            LesionPlan::Explicit { lesions } => {
                for r in lesions {
                    if let LesionKind::Fracture { grade, .. } = r.kind {
                        if !(1..=3).contains(&grade) {
                            return Err(Error::InvalidArgument(format!(
                                "fracture grade {grade} at {} must be 1, 2 or 3 (Genant)",
                                r.vertebra.name()
                            )));
                        }
                    }
                    if r.vertebra == Vertebra::C1 {
                        return Err(Error::InvalidArgument(
                            "C1 has no vertebral body; lesions must be at C2 or below".into(),
                        ));
                    }
                }
                Ok(())
            }
        }
    }
}

/// Which voxels belong to a placed lesion: inside `region`, with a tissue in `tissues` and a
/// label in `labels` (bit masks as in [`Only`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Probe {
    pub region: Primitive,
    pub only: Only,
}

/// A lesion placed in one patient.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PlacedLesion {
    pub kind: LesionKind,
    pub vertebra: Vertebra,
    pub partner: Option<Vertebra>,
    pub height_loss: Option<f64>,
    pub prims: Vec<Primitive>,
    pub probe: Probe,
}

impl PlacedLesion {
    /// The lesion-head class.
    pub fn class(&self) -> LesionClass {
        match self.kind {
            LesionKind::Fracture { .. } => LesionClass::Fracture,
            LesionKind::Lytic => LesionClass::LyticMetastasis,
            LesionKind::Sclerotic => LesionClass::ScleroticMetastasis,
            LesionKind::Infection => LesionClass::InfectionErosion,
        }
    }

    /// Whether the lesion head must detect it (grade-1 fractures are recorded, not targets).
    pub fn is_target(&self) -> bool {
        match self.kind {
            LesionKind::Fracture { grade, .. } => GenantGrade::from_u8(grade)
                .and_then(GenantGrade::lesion_class)
                .is_some(),
            _ => true,
        }
    }
}

/// Every lesion of a case and the fracture deformations the skeleton must apply.
pub(crate) struct Placement {
    pub lesions: Vec<PlacedLesion>,
    pub fractures: HashMap<Vertebra, Deformation>,
}

/// Whether `v`'s body lies inside the FOV with a margin, so its lesion is fully imaged.
fn body_in_fov(level: &Level, fov: &Fov) -> bool {
    let b = body_primitive(level, None, 1.0).bounds;
    let margin = [2.0, 2.0, 1.0];
    (0..3).all(|i| b[0][i] >= fov.min[i] - margin[i] && b[1][i] <= fov.max[i] + margin[i])
}

/// Places the plan's lesions. `cortex` is the shell thickness the skeleton uses.
pub(crate) fn place(
    plan: &LesionPlan,
    col: &Column,
    fov: &Fov,
    cortex: f64,
    rng: &mut ChaCha8Rng,
) -> Result<Placement> {
    plan.validate()?;
    let requests: Vec<LesionRequest> = match plan {
        LesionPlan::None => Vec::new(),
        LesionPlan::Explicit { lesions } => lesions.clone(),
        LesionPlan::Random { rate } => random_requests(*rate, col, fov, rng),
    };
    let mut used: Vec<Vertebra> = Vec::new();
    let mut placement = Placement {
        lesions: Vec::new(),
        fractures: HashMap::new(),
    };
    for r in requests {
        let level = col.level(r.vertebra).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "lesion at {}: this patient has no {} (L6 exists only when requested or drawn)",
                r.vertebra.name(),
                r.vertebra.name()
            ))
        })?;
        if !body_in_fov(level, fov) {
            return Err(Error::InvalidArgument(format!(
                "lesion at {}: its vertebral body is not inside the field of view",
                r.vertebra.name()
            )));
        }
        let partner = if r.kind == LesionKind::Infection {
            let i = col.index_of(r.vertebra).unwrap_or(0);
            match col.levels.get(i + 1).map(|l| (l, l.kind)) {
                Some((l, LevelKind::Vertebra(n))) if body_in_fov(l, fov) => Some(n),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "infection below {}: the vertebra below is not a labelled vertebra \
                         inside the field of view",
                        r.vertebra.name()
                    )));
                }
            }
        } else {
            None
        };
        for v in std::iter::once(r.vertebra).chain(partner) {
            if used.contains(&v) {
                return Err(Error::InvalidArgument(format!(
                    "two lesions requested at {}; one lesion per vertebra",
                    v.name()
                )));
            }
            used.push(v);
        }
        let placed = match r.kind {
            LesionKind::Fracture { grade, shape } => {
                let (lo, hi) = match grade {
                    1 => (0.205, 0.245),
                    2 => (0.27, 0.38),
                    _ => (0.42, 0.60),
                };
                let loss = rng.random_range(lo..hi);
                let d = Deformation {
                    loss,
                    kind: shape,
                    upper_share: if shape == FractureShape::Biconcave {
                        0.5
                    } else {
                        0.75
                    },
                };
                placement.fractures.insert(r.vertebra, d);
                let region = body_primitive(level, Some(d), cortex);
                PlacedLesion {
                    kind: r.kind,
                    vertebra: r.vertebra,
                    partner: None,
                    height_loss: Some(loss),
                    prims: Vec::new(),
                    probe: Probe {
                        region,
                        only: Only {
                            labels: Only::label_mask(&[r.vertebra.label()]),
                            tissues: Only::tissue_mask(&[
                                Tissue::CorticalBone,
                                Tissue::TrabecularBone,
                                Tissue::Metal,
                            ]),
                        },
                    },
                }
            }
            LesionKind::Lytic | LesionKind::Sclerotic => {
                let lytic = r.kind == LesionKind::Lytic;
                metastasis(level, r.vertebra, lytic, rng)
            }
            LesionKind::Infection => {
                let lower_v = partner.unwrap_or(r.vertebra);
                let lower = col.level(lower_v).unwrap_or(level);
                infection(level, lower, r.vertebra, lower_v, rng)
            }
        };
        placement.lesions.push(placed);
    }
    Ok(placement)
}

/// A lytic or sclerotic metastasis: an ellipsoid inside the body that replaces bone.
fn metastasis(level: &Level, v: Vertebra, lytic: bool, rng: &mut ChaCha8Rng) -> PlacedLesion {
    let (a, b, hh) = (level.section.a, level.section.b, level.height / 2.0);
    let c = [
        rng.random_range(-0.3..0.3) * a,
        rng.random_range(-0.35..0.15) * b,
        rng.random_range(-0.25..0.25) * hh,
    ];
    let (lo, hi, min) = if lytic {
        (0.3, 0.5, 4.0)
    } else {
        (0.22, 0.4, 3.5)
    };
    let r0 = (rng.random_range(lo..hi) * a.min(b)).max(min);
    let r = [
        r0 * rng.random_range(0.85..1.15),
        r0 * rng.random_range(0.85..1.15),
        (r0 * rng.random_range(0.8..1.2))
            .min(0.42 * level.height)
            .max(min * 0.8),
    ];
    let frame = Frame {
        origin: level.at(c),
        axes: level.frame.axes,
    };
    let (tissue, allowed): (Tissue, &[Tissue]) = if lytic {
        (
            Tissue::LyticLesion,
            &[Tissue::CorticalBone, Tissue::TrabecularBone],
        )
    } else {
        (Tissue::ScleroticLesion, &[Tissue::TrabecularBone])
    };
    let only = Only {
        labels: Only::label_mask(&[v.label()]),
        tissues: Only::tissue_mask(allowed),
    };
    let prim = Primitive::new(
        frame,
        Shape::Ellipsoid { r },
        Fill::Solid(tissue),
        LabelWrite::Keep,
    )
    .only(only);
    let probe = Probe {
        region: prim.clone(),
        only: Only {
            labels: only.labels,
            tissues: Only::tissue_mask(&[tissue]),
        },
    };
    PlacedLesion {
        kind: if lytic {
            LesionKind::Lytic
        } else {
            LesionKind::Sclerotic
        },
        vertebra: v,
        partner: None,
        height_loss: None,
        prims: vec![prim],
        probe,
    }
}

/// Spondylodiscitis: the disc becomes inflammatory tissue and both endplates are eroded.
fn infection(
    upper: &Level,
    lower: &Level,
    uv: Vertebra,
    lv: Vertebra,
    rng: &mut ChaCha8Rng,
) -> PlacedLesion {
    let disc = disc_primitive(
        upper,
        lower,
        upper.concavity + 1.0,
        lower.concavity + 1.0,
        Fill::Solid(Tissue::Inflammation),
        LabelWrite::Set(0),
    )
    .only(Only {
        labels: Only::label_mask(&[0]),
        tissues: Only::tissue_mask(&[Tissue::Disc]),
    });
    let top = upper.at([0.0, 0.0, -upper.height / 2.0]);
    let bottom = lower.at([0.0, 0.0, lower.height / 2.0]);
    let gap = norm(sub(top, bottom));
    let depth = rng.random_range(3.0..6.5);
    let a = f64::midpoint(upper.section.a, lower.section.a);
    let b = f64::midpoint(upper.section.b, lower.section.b);
    let frame = Frame {
        origin: disc.frame.origin,
        axes: disc.frame.axes,
    };
    let bone_labels = Only::label_mask(&[uv.label(), lv.label()]);
    let erosion = Primitive::new(
        frame,
        Shape::Ellipsoid {
            r: [
                a * rng.random_range(0.55..0.75),
                b * rng.random_range(0.55..0.75),
                gap / 2.0 + depth,
            ],
        },
        Fill::Solid(Tissue::Inflammation),
        LabelWrite::Keep,
    )
    .only(Only {
        labels: bone_labels,
        tissues: Only::tissue_mask(&[Tissue::CorticalBone, Tissue::TrabecularBone]),
    });
    let region = Primitive::new(
        frame,
        Shape::Ellipsoid {
            r: [a * 1.1, b * 1.1, gap / 2.0 + depth + 1.0],
        },
        Fill::Solid(Tissue::Inflammation),
        LabelWrite::Keep,
    );
    PlacedLesion {
        kind: LesionKind::Infection,
        vertebra: uv,
        partner: Some(lv),
        height_loss: None,
        prims: vec![disc, erosion],
        probe: Probe {
            region,
            only: Only {
                labels: Only::label_mask(&[0, uv.label(), lv.label()]),
                tissues: Only::tissue_mask(&[Tissue::Inflammation]),
            },
        },
    }
}

/// Draws the requests of a random plan: Poisson count, uniform kinds, distinct eligible
/// vertebrae (fractures T1 and below; metastases C2 and below; infection needs the vertebra
/// below too).
fn random_requests(rate: f64, col: &Column, fov: &Fov, rng: &mut ChaCha8Rng) -> Vec<LesionRequest> {
    let n = if rate > 0.0 {
        Poisson::new(rate).map_or(0.0, |p| p.sample(rng)) as usize
    } else {
        0
    }
    .min(MAX_RANDOM_LESIONS);
    let eligible: Vec<(usize, Vertebra)> = col
        .levels
        .iter()
        .enumerate()
        .filter_map(|(i, l)| match l.kind {
            LevelKind::Vertebra(v) if v != Vertebra::C1 && body_in_fov(l, fov) => Some((i, v)),
            _ => None,
        })
        .collect();
    let mut used: Vec<Vertebra> = Vec::new();
    let mut out = Vec::new();
    for _ in 0..n {
        for _attempt in 0..8 {
            let kind = match rng.random_range(0..4) {
                0 => {
                    let grade = match rng.random::<f64>() {
                        x if x < 0.25 => 1,
                        x if x < 0.65 => 2,
                        _ => 3,
                    };
                    let shape = match rng.random::<f64>() {
                        x if x < 0.5 => FractureShape::Wedge,
                        x if x < 0.8 => FractureShape::Biconcave,
                        _ => FractureShape::Crush,
                    };
                    LesionKind::Fracture { grade, shape }
                }
                1 => LesionKind::Lytic,
                2 => LesionKind::Sclerotic,
                _ => LesionKind::Infection,
            };
            let candidates: Vec<Vertebra> = eligible
                .iter()
                .filter(|(i, v)| {
                    if used.contains(v) {
                        return false;
                    }
                    match kind {
                        LesionKind::Fracture { .. } => v.region() != Region::Cervical,
                        LesionKind::Lytic | LesionKind::Sclerotic => true,
                        LesionKind::Infection => eligible
                            .iter()
                            .any(|(j, w)| *j == i + 1 && !used.contains(w)),
                    }
                })
                .map(|(_, v)| *v)
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let v = candidates[rng.random_range(0..candidates.len())];
            used.push(v);
            if kind == LesionKind::Infection {
                if let Some(next) = col
                    .index_of(v)
                    .and_then(|i| col.levels.get(i + 1))
                    .and_then(Level::vertebra)
                {
                    used.push(next);
                }
            }
            out.push(LesionRequest { kind, vertebra: v });
            break;
        }
    }
    out
}
