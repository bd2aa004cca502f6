//! The spinal column of one synthetic patient: per-level morphometry, the 3-D spine curve and
//! each vertebra's local frame.
//!
//! ## Morphometry
//!
//! Vertebral-body width, depth and height come from [`crate::anatomy::typical_body_size_mm`]
//! (Panjabi et al. 1991/1992, Zhou et al. 2000). The posterior-element table
//! [`POSTERIOR`] follows the same cadaveric morphometry (Panjabi MM et al., "Cervical human
//! vertebrae", Spine 1991;16:861–869; "Thoracic human vertebrae", Spine 1991;16:888–901;
//! "Human lumbar vertebrae", Spine 1992;17:299–306): pedicle width and height, transverse
//! pedicle angle, spinal-canal width and depth, transverse-process span and spinous-process
//! length. Disc heights follow Pooni JS et al. (Surg Radiol Anat 1986;8:175–182): about
//! 5 mm cervical, 4–6 mm thoracic, 9–12 mm lumbar. All values are rounded to 0.5 mm and
//! interpolated between the reported levels; they describe a typical adult, and each patient
//! is a scaled, jittered copy.
//!
//! ## Curve
//!
//! The column is laid out along its arc length from the C1 ring (s = 0) down to the last
//! sacral segment. The sagittal tilt of the tangent (degrees from vertical, positive = the
//! column runs posteriorly when going down) is interpolated linearly in s between per-level
//! control values, so the curve is tangent-continuous; an increasing tilt is a lordosis
//! (cervical, lumbar), a decreasing tilt a kyphosis (thoracic, sacral). Nominal values give
//! about 20° cervical lordosis (C2–C7), 40° thoracic kyphosis (T1–T12), 50° lumbar lordosis
//! (L1–S1) and a 40° sacral slope, the middle of the normal adult ranges (e.g. Roussouly P,
//! Pinheiro-Franco JL, Eur Spine J 2011;20 Suppl 5:609–618). Each region's curvature is
//! scaled per patient; a coronal sine wave adds scoliosis in some patients, with axial
//! rotation of the vertebrae coupled to it.

use super::shapes::{Frame, Section, V3, add, cross, normalize, rotate, scale, sub};
use crate::anatomy::{Region, Vertebra, typical_body_size_mm};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// Posterior-element morphometry of one vertebra.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Posterior {
    /// Pedicle width (transverse), mm.
    pub pedicle_w: f64,
    /// Pedicle height, mm.
    pub pedicle_h: f64,
    /// Transverse pedicle angle (convergence towards the front), degrees.
    pub pedicle_angle: f64,
    /// Spinal canal width, mm.
    pub canal_w: f64,
    /// Spinal canal depth (antero-posterior), mm.
    pub canal_d: f64,
    /// Height of the disc below this vertebra, mm (0: none).
    pub disc_below: f64,
    /// Distance of the transverse-process tip from the midline, mm.
    pub tp_half_span: f64,
    /// Spinous-process length from the lamina junction, mm.
    pub sp_len: f64,
    /// Caudal inclination of the spinous process, degrees below horizontal.
    pub sp_incl: f64,
}

const fn post(v: [f64; 9]) -> Posterior {
    Posterior {
        pedicle_w: v[0],
        pedicle_h: v[1],
        pedicle_angle: v[2],
        canal_w: v[3],
        canal_d: v[4],
        disc_below: v[5],
        tp_half_span: v[6],
        sp_len: v[7],
        sp_incl: v[8],
    }
}

/// Posterior elements C1..L5, L6 (index = label − 1): pedicle width, height, angle, canal
/// width, depth, disc below, transverse-process half span, spinous length, inclination.
/// Sources in the module documentation. C1 has no pedicles or spinous process; its row gives
/// the canal and the transverse-process span of the atlas.
pub(crate) const POSTERIOR: [Posterior; 25] = [
    post([0.0, 0.0, 0.0, 26.0, 16.0, 0.0, 38.0, 0.0, 0.0]), // C1
    post([8.0, 9.0, 30.0, 23.0, 16.0, 5.0, 25.0, 25.0, 15.0]),
    post([5.5, 7.0, 45.0, 23.5, 15.0, 5.0, 25.0, 14.0, 15.0]),
    post([5.5, 7.0, 45.0, 24.0, 14.5, 5.5, 26.0, 15.0, 15.0]),
    post([6.0, 7.0, 45.0, 24.5, 14.5, 5.5, 27.0, 16.0, 15.0]),
    post([6.0, 7.0, 42.0, 24.5, 14.5, 5.5, 28.0, 20.0, 15.0]),
    post([6.5, 7.5, 35.0, 24.0, 14.5, 5.0, 33.0, 32.0, 20.0]), // C7
    post([8.0, 9.5, 30.0, 21.5, 15.0, 4.0, 35.0, 35.0, 25.0]), // T1
    post([7.0, 11.0, 22.0, 18.0, 15.0, 4.0, 33.0, 38.0, 35.0]),
    post([5.5, 11.0, 15.0, 16.5, 15.0, 4.0, 32.0, 40.0, 45.0]),
    post([4.5, 11.0, 12.0, 16.0, 15.0, 4.0, 31.0, 40.0, 50.0]),
    post([5.0, 11.0, 10.0, 16.0, 15.0, 4.0, 30.0, 40.0, 55.0]),
    post([5.0, 11.5, 9.0, 16.0, 15.0, 4.5, 30.0, 40.0, 60.0]),
    post([5.5, 12.0, 8.0, 16.0, 15.0, 4.5, 29.0, 40.0, 60.0]),
    post([6.0, 12.5, 7.0, 16.5, 15.0, 5.0, 28.0, 38.0, 55.0]),
    post([6.5, 13.0, 6.0, 17.0, 15.0, 5.0, 27.0, 36.0, 45.0]),
    post([7.0, 14.0, 5.0, 17.5, 15.5, 5.5, 26.0, 34.0, 35.0]),
    post([8.0, 16.0, 3.0, 19.5, 16.0, 6.5, 23.0, 32.0, 25.0]),
    post([8.0, 16.0, 2.0, 22.0, 17.0, 8.0, 20.0, 30.0, 15.0]), // T12
    post([9.0, 15.5, 11.0, 23.0, 18.0, 9.0, 32.0, 30.0, 5.0]), // L1
    post([9.0, 15.0, 12.0, 23.0, 17.5, 10.0, 38.0, 31.0, 5.0]),
    post([10.0, 14.5, 14.0, 24.0, 17.0, 11.0, 45.0, 32.0, 5.0]),
    post([11.0, 14.0, 18.0, 24.0, 17.0, 11.5, 40.0, 31.0, 5.0]),
    post([14.0, 13.5, 28.0, 26.0, 18.0, 11.0, 43.0, 26.0, 10.0]), // L5
    post([13.0, 13.0, 28.0, 26.0, 18.0, 9.0, 40.0, 24.0, 10.0]),  // L6
];

/// Fused sacral segments S1..S5: [width, depth, height] (S1 from Zhou et al. 2000's L5/S1
/// data, tapering caudally).
const SACRAL: [[f64; 3]; 5] = [
    [48.0, 33.0, 28.0],
    [38.0, 26.0, 22.0],
    [30.0, 20.0, 18.0],
    [22.0, 15.0, 14.0],
    [15.0, 11.0, 10.0],
];

/// What a level of the column is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LevelKind {
    /// A labelled vertebra.
    Vertebra(Vertebra),
    /// Fused sacral segment 1..=5 (label 0).
    Sacral(u8),
}

/// One level of the column, fully placed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Level {
    pub kind: LevelKind,
    /// Body centre and local axes (left, posterior, cranial). For C1: the ring centre on the
    /// dens axis.
    pub frame: Frame,
    /// Body cross-section.
    pub section: Section,
    /// Body height (posterior), mm.
    pub height: f64,
    /// Endplate concavity at the centre, mm.
    pub concavity: f64,
    /// Posterior elements (sacral levels reuse L5's canal, scaled).
    pub post: Posterior,
    /// Disc below, mm (0 for C1 and fused levels).
    pub disc_below: f64,
}

impl Level {
    /// The vertebra, for labelled levels.
    pub fn vertebra(&self) -> Option<Vertebra> {
        match self.kind {
            LevelKind::Vertebra(v) => Some(v),
            LevelKind::Sacral(_) => None,
        }
    }

    /// The label painted for this level's bone (0 for the sacrum).
    pub fn label(&self) -> u8 {
        self.vertebra().map_or(0, Vertebra::label)
    }

    /// Region of a labelled level; the sacrum counts as lumbar for shape purposes.
    pub fn region(&self) -> Region {
        self.vertebra().map_or(Region::Lumbar, Vertebra::region)
    }

    /// World point of local coordinates (u left, v posterior, w cranial).
    pub fn at(&self, l: V3) -> V3 {
        self.frame.world(l)
    }

    /// Local v of the midline posterior body wall (inside the kidney dent).
    pub fn posterior_wall(&self) -> f64 {
        self.section.b * (1.0 - self.section.kidney)
    }

    /// Local v of the canal centre.
    pub fn canal_centre_v(&self) -> f64 {
        self.posterior_wall() + 0.5 + self.post.canal_d / 2.0
    }
}

/// Per-patient anatomical parameters that are not per level.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Patient {
    /// Global skeletal size factor.
    pub size: f64,
    /// Body-habitus factor: outline width and fat thickness (≈0.85 slim … 1.3 obese).
    pub habitus: f64,
    /// Subcutaneous fat thickness scale.
    pub fat: f64,
    /// Visceral fat fraction of the abdominal cavity, 0..1.
    pub visceral_fat: f64,
    /// Whether the transitional L6 exists.
    pub has_l6: bool,
    /// Lateral (x) and antero-posterior (y) jitter of the FOV centre, as fractions of the
    /// allowed range (−1..1).
    pub fov_jitter: [f64; 2],
    /// Extra margin above and below the requested range, mm.
    pub fov_margin: [f64; 2],
    /// Sex-like shape factor for the pelvis (0 narrow … 1 wide).
    pub pelvis_width: f64,
}

/// The placed column of one patient.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Column {
    pub levels: Vec<Level>,
    pub patient: Patient,
}

impl Column {
    /// Index of a vertebra's level, if it exists in this patient (L6 may not).
    pub fn index_of(&self, v: Vertebra) -> Option<usize> {
        self.levels
            .iter()
            .position(|l| l.kind == LevelKind::Vertebra(v))
    }

    /// The level of a vertebra.
    pub fn level(&self, v: Vertebra) -> Option<&Level> {
        self.index_of(v).map(|i| &self.levels[i])
    }

    /// Continuous level coordinate of world height `z`: `i` at level i's centre, linear in
    /// between, extrapolated above the first and below the last level.
    pub fn level_at_z(&self, z: f64) -> f64 {
        let zs: Vec<f64> = self.levels.iter().map(|l| l.frame.origin[2]).collect();
        if z >= zs[0] {
            return -(z - zs[0]) / 20.0;
        }
        for i in 0..zs.len() - 1 {
            if z >= zs[i + 1] {
                let span = zs[i] - zs[i + 1];
                return i as f64 + (zs[i] - z) / span.max(1e-6);
            }
        }
        (zs.len() - 1) as f64 + (zs[zs.len() - 1] - z) / 12.0
    }

    /// Interpolated (world centre, section half-axes a, b) at continuous level `l`.
    pub fn centre_at_level(&self, l: f64) -> (V3, f64, f64) {
        let n = self.levels.len();
        let i = (l.floor().max(0.0) as usize).min(n - 2);
        let t = (l - i as f64).clamp(-3.0, 4.0);
        let (a, b) = (&self.levels[i], &self.levels[i + 1]);
        let c = add(
            a.frame.origin,
            scale(sub(b.frame.origin, a.frame.origin), t),
        );
        let tt = t.clamp(0.0, 1.0);
        let sa = a.section.a + (b.section.a - a.section.a) * tt;
        let sb = a.section.b + (b.section.b - a.section.b) * tt;
        (c, sa, sb)
    }
}

/// Nominal sagittal tilt (degrees) of the labelled levels, see the module documentation.
fn nominal_tilt(v: Vertebra, lumbar_count: usize) -> f64 {
    const CT: [f64; 19] = [
        -5.0, -5.0, -1.0, 3.0, 7.0, 12.0, 18.0, // C1..C7
        22.0, 18.0, 14.0, 10.0, 6.0, 2.0, -1.0, -4.0, -7.0, -10.0, -13.0, -16.0, // T1..T12
    ];
    match v.region() {
        Region::Cervical | Region::Thoracic => CT[v.ordinal()],
        Region::Lumbar => {
            let k = v.ordinal() - Vertebra::L1.ordinal();
            let f = k as f64 / (lumbar_count - 1) as f64;
            interp(
                &[
                    (0.0, -16.0),
                    (0.25, -9.0),
                    (0.5, 0.0),
                    (0.75, 10.0),
                    (1.0, 22.0),
                ],
                f,
            )
        }
    }
}

/// Piecewise-linear interpolation of sorted `(x, y)` control points, clamped at the ends.
pub(crate) fn interp(points: &[(f64, f64)], x: f64) -> f64 {
    if x <= points[0].0 {
        return points[0].1;
    }
    for w in points.windows(2) {
        let ((x0, y0), (x1, y1)) = (w[0], w[1]);
        if x <= x1 {
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0);
        }
    }
    points[points.len() - 1].1
}

fn normal(rng: &mut ChaCha8Rng, mean: f64, sd: f64, lo: f64, hi: f64) -> f64 {
    Normal::new(mean, sd)
        .map_or(mean, |d| d.sample(rng))
        .clamp(lo, hi)
}

/// A level before it is placed on the curve.
struct Draft {
    kind: LevelKind,
    size: [f64; 3],
    post: Posterior,
    disc_below: f64,
    tilt: f64,
    rot_jitter: f64,
}

/// Probability of the transitional L6 when it is not requested explicitly. Lumbosacral
/// transitional vertebrae are common (~10–15 %), a fully lumbarised sixth lumbar vertebra much
/// rarer; we use 4 %.
pub(crate) const L6_PROBABILITY: f64 = 0.04;

/// Draws a patient and lays out the column. `force_l6` makes the L6 variant present (the
/// caller asked for L6 explicitly). Uses only `rng`, so the anatomy of a seed does not depend
/// on the requested range, domain or lesions.
pub(crate) fn build_column(rng: &mut ChaCha8Rng, force_l6: bool) -> Column {
    let l6_draw = rng.random::<f64>() < L6_PROBABILITY;
    let patient = Patient {
        size: normal(rng, 1.0, 0.06, 0.85, 1.15),
        habitus: normal(rng, 1.0, 0.12, 0.8, 1.35),
        fat: normal(rng, 1.0, 0.35, 0.4, 2.0),
        visceral_fat: rng.random_range(0.15..0.6),
        has_l6: force_l6 || l6_draw,
        fov_jitter: [rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)],
        fov_margin: [rng.random_range(3.0..15.0), rng.random_range(3.0..15.0)],
        pelvis_width: rng.random(),
    };
    let kc = normal(rng, 1.0, 0.35, 0.2, 1.8);
    let kt = normal(rng, 1.0, 0.3, 0.4, 1.8);
    let kl = normal(rng, 1.0, 0.25, 0.4, 1.6);
    let tilt0 = normal(rng, 0.0, 3.0, -8.0, 8.0);
    let disc_scale = normal(rng, 1.0, 0.12, 0.7, 1.3);
    let rot0 = normal(rng, 0.0, 2.0, -6.0, 6.0).to_radians();
    let scoliosis = rng.random::<f64>() < 0.2;
    let scol_amp_deg: f64 = if scoliosis {
        rng.random_range(4.0..12.0)
    } else {
        rng.random_range(0.0..2.0)
    };
    let scol_amp = scol_amp_deg.to_radians();
    let scol_len = rng.random_range(300.0..500.0);
    let scol_phase = rng.random_range(0.0..std::f64::consts::TAU);
    let degenerate_disc = if rng.random::<f64>() < 0.2 {
        Some(rng.random_range(0..2usize))
    } else {
        None
    };

    // Labelled vertebrae present in this patient, then S1..S5.
    let mut kinds: Vec<LevelKind> = crate::anatomy::ALL_VERTEBRAE
        .iter()
        .filter(|v| **v != Vertebra::L6 || patient.has_l6)
        .map(|v| LevelKind::Vertebra(*v))
        .collect();
    kinds.extend((1..=5).map(LevelKind::Sacral));
    let lumbar_count = if patient.has_l6 { 6 } else { 5 };
    let last_lumbar = if patient.has_l6 {
        Vertebra::L6
    } else {
        Vertebra::L5
    };

    let mut drafts = Vec::with_capacity(kinds.len());
    for (i, kind) in kinds.iter().enumerate() {
        let jit = [
            normal(rng, 1.0, 0.025, 0.93, 1.07),
            normal(rng, 1.0, 0.025, 0.93, 1.07),
            normal(rng, 1.0, 0.025, 0.93, 1.07),
        ];
        let disc_jit = normal(rng, 1.0, 0.08, 0.8, 1.2);
        let rot_jitter = normal(rng, 0.0, 1.2, -3.0, 3.0).to_radians();
        let (size, mut post, tilt) = match kind {
            LevelKind::Vertebra(v) => {
                let base = typical_body_size_mm(*v);
                let tilt = nominal_tilt(*v, lumbar_count)
                    * match v.region() {
                        Region::Cervical => kc,
                        Region::Thoracic => kt,
                        Region::Lumbar => kl,
                    };
                (base, POSTERIOR[v.ordinal()], tilt)
            }
            LevelKind::Sacral(k) => {
                let k = *k as usize - 1;
                let mut p = POSTERIOR[Vertebra::L5.ordinal()];
                let shrink = 1.0 - 0.15 * k as f64;
                p.canal_w *= shrink;
                p.canal_d *= shrink * 0.7;
                p.disc_below = 0.0;
                let tilt = [40.0, 38.0, 30.0, 15.0, 0.0][k] * (0.6 + 0.4 * kl);
                (SACRAL[k], p, tilt)
            }
        };
        let s = patient.size;
        let size = [
            size[0] * s * jit[0],
            size[1] * s * jit[1],
            size[2] * s * jit[2],
        ];
        for x in [
            &mut post.pedicle_w,
            &mut post.pedicle_h,
            &mut post.canal_w,
            &mut post.canal_d,
            &mut post.tp_half_span,
            &mut post.sp_len,
        ] {
            *x *= s;
        }
        let mut disc_below = post.disc_below * disc_scale * disc_jit * s;
        if *kind == LevelKind::Vertebra(last_lumbar) {
            // The lumbosacral disc.
            disc_below = POSTERIOR[Vertebra::L5.ordinal()].disc_below * disc_scale * disc_jit * s;
        }
        if let Some(k) = degenerate_disc {
            // A narrowed (degenerated) disc at one of the two lowest lumbar levels.
            let lumbar_idx = kinds
                .iter()
                .position(|k| *k == LevelKind::Vertebra(last_lumbar))
                .unwrap_or(0);
            if i + k == lumbar_idx {
                disc_below *= 0.5;
            }
        }
        drafts.push(Draft {
            kind: *kind,
            size,
            post,
            disc_below,
            tilt: tilt + tilt0,
            rot_jitter,
        });
    }

    // Arc-length position of each level centre. C1's ring sits 9 mm above C2's body, around
    // the dens (the lateral atlanto-axial joints lie just above the C2 endplate).
    let mut s_pos = vec![0.0; drafts.len()];
    for i in 1..drafts.len() {
        let gap = if i == 1 {
            9.0 * patient.size
        } else {
            drafts[i - 1].size[2] / 2.0 + drafts[i - 1].disc_below
        };
        s_pos[i] = s_pos[i - 1] + gap + drafts[i].size[2] / 2.0;
    }
    let tilt_ctrl: Vec<(f64, f64)> = s_pos
        .iter()
        .zip(&drafts)
        .map(|(s, d)| (*s, d.tilt.to_radians()))
        .collect();
    let coronal = |s: f64| scol_amp * (std::f64::consts::TAU * s / scol_len + scol_phase).sin();
    let caudal_dir = |s: f64| -> V3 {
        let th = interp(&tilt_ctrl, s);
        let ph = coronal(s);
        normalize([ph.sin(), th.sin(), -(th.cos() * ph.cos())])
    };

    // Integrate the curve from C1 (at the world origin) downwards.
    let ds = 0.25;
    let mut p = [0.0, 0.0, 0.0];
    let mut s = 0.0;
    let mut levels = Vec::with_capacity(drafts.len());
    for (i, d) in drafts.iter().enumerate() {
        while s + ds <= s_pos[i] {
            p = add(p, scale(caudal_dir(s + ds / 2.0), ds));
            s += ds;
        }
        let rest = s_pos[i] - s;
        let centre = add(p, scale(caudal_dir(s), rest));
        let ez = scale(caudal_dir(s_pos[i]), -1.0);
        let post_ref = [0.0, 1.0, 0.0];
        let ey0 = normalize(sub(post_ref, scale(ez, super::shapes::dot(post_ref, ez))));
        let ex0 = cross(ey0, ez);
        let psi = rot0 + 0.8 * coronal(s_pos[i]) + d.rot_jitter;
        let frame = Frame {
            origin: centre,
            axes: [rotate(ex0, ez, psi), rotate(ey0, ez, psi), ez],
        };
        let region = match d.kind {
            LevelKind::Vertebra(v) => v.region(),
            LevelKind::Sacral(_) => Region::Lumbar,
        };
        let thoracic_heart = match d.kind {
            LevelKind::Vertebra(v) if v.region() == Region::Thoracic => {
                let k = (v.ordinal() - Vertebra::T1.ordinal()) as f64;
                interp(&[(0.0, 0.08), (4.0, 0.3), (8.0, 0.3), (11.0, 0.12)], k)
            }
            _ => 0.0,
        };
        let (p_exp, kidney, concavity) = match region {
            Region::Cervical => (2.2, 0.02, 0.5),
            Region::Thoracic => (2.1, 0.06, 0.8),
            Region::Lumbar => (2.6, 0.16, 1.2),
        };
        let kidney = if matches!(d.kind, LevelKind::Sacral(_)) {
            0.08
        } else {
            kidney
        };
        levels.push(Level {
            kind: d.kind,
            frame,
            section: Section {
                a: d.size[0] / 2.0,
                b: d.size[1] / 2.0,
                p: p_exp,
                kidney,
                heart: thoracic_heart,
            },
            height: d.size[2],
            concavity,
            post: d.post,
            disc_below: d.disc_below,
        });
    }
    Column { levels, patient }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn column_runs_downwards_with_lordosis_and_kyphosis() {
        for seed in 0..20 {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            let col = build_column(&mut rng, false);
            for w in col.levels.windows(2) {
                assert!(w[1].frame.origin[2] < w[0].frame.origin[2], "seed {seed}");
            }
            // Thoracic kyphosis: T7 lies posterior to the T1–T12 chord.
            let y = |v| col.level(v).unwrap().frame.origin[1];
            let z = |v| col.level(v).unwrap().frame.origin[2];
            let chord = |a: Vertebra, b: Vertebra, m: Vertebra| {
                let t = (z(m) - z(a)) / (z(b) - z(a));
                y(a) + t * (y(b) - y(a))
            };
            assert!(y(Vertebra::T7) > chord(Vertebra::T1, Vertebra::T12, Vertebra::T7));
            // Lumbar lordosis: L3 lies anterior to the L1–L5 chord.
            assert!(y(Vertebra::L3) < chord(Vertebra::L1, Vertebra::L5, Vertebra::L3));
            // Frames are orthonormal and right-handed.
            for l in &col.levels {
                let [x, yy, zz] = l.frame.axes;
                assert!((super::super::shapes::norm(cross(x, yy)) - 1.0).abs() < 1e-9);
                assert!(super::super::shapes::dot(cross(x, yy), zz) > 0.999);
            }
        }
    }

    #[test]
    fn l6_only_when_drawn_or_forced() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let col = build_column(&mut rng, true);
        assert!(col.index_of(Vertebra::L6).is_some());
        assert_eq!(col.levels.len(), 25 + 5);
        let with = (0..200)
            .filter(|s| {
                let mut rng = ChaCha8Rng::seed_from_u64(*s);
                build_column(&mut rng, false).patient.has_l6
            })
            .count();
        assert!(with < 30, "L6 in {with} of 200 patients");
    }

    #[test]
    fn level_at_z_inverts_level_heights() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let col = build_column(&mut rng, false);
        for (i, l) in col.levels.iter().enumerate() {
            assert!((col.level_at_z(l.frame.origin[2]) - i as f64).abs() < 1e-9);
        }
    }
}
