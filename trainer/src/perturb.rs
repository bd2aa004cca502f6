//! Input perturbations of the robustness study (paper, "Robustness to input perturbations",
//! Fig. 3): each turns a raw CT [`Case`] (HU, on its own acquisition grid, *before*
//! [`crate::preprocess::prepare`]) into a degraded copy, reproducibly for a seed.
//!
//! ## The perturbations
//! - **Intensity `±p %`** (`intensity+15`, `intensity-30`): `HU' = (1 + p/100) · HU`. The
//!   paper's caption says "linear scaling of HU intensities", so the scale acts on HU itself
//!   (water stays 0 HU, bone and air move away from or towards it), not on attenuation
//!   `HU + 1000` (which would shift water by 150 HU at +15 % and is a calibration error rather
//!   than a contrast change). No clipping here: [`crate::preprocess::prepare`] clips to
//!   [−1000, 1000] HU as for any input.
//! - **Gaussian noise `σ` HU** (`noise-25hu`): independent `N(0, σ²)` per voxel, added to every
//!   voxel (white noise on the acquisition grid; the scanner's own noise is already in the
//!   image). Slice `z` draws from ChaCha8 stream `z` of the seed, so the result does not
//!   depend on the thread count.
//! - **Slice thickness `T` mm** (`slice-3mm`, `slice-5mm`): a thicker reconstruction with
//!   contiguous slices, simulated by slab averaging along the voxel z axis. The input slices are
//!   taken as contiguous (thickness = spacing `s`, slice `i` covers index interval `[i, i+1)`);
//!   output slice `k` covers `[k r, (k+1) r)` with `r = T / s` and is the overlap-weighted mean
//!   of the input slices (the exact integral of the piecewise-constant profile, so `r = 3`
//!   averages three slices and `r = 2.5` weights the third one by ½). There are `⌊nz / r⌋`
//!   output slices (a partial slab at the end is dropped); the output grid has z spacing `T`,
//!   the same in-plane grid and direction, and its first slice centre at index `r/2 − ½` of the
//!   input. Labels go onto the *same* grid: each output voxel takes the label covering the
//!   largest part of its slab (on a tie the one met first walking outwards from the slab
//!   centre), so image and labels stay voxel-aligned. A scan whose spacing is already ≥ `T`
//!   is returned unchanged (it is at least that thick). Lesion annotations are world
//!   coordinates and stay as they are.
//! - **Metal hardware** (`metal`): bilateral pedicle screws with heads and connecting rods in
//!   the [`METAL_LEVELS`] most caudal vertebrae (label ≥ C3) whose label lies entirely inside
//!   the scan, then core's CT metal artefact model. Placement uses only the label map: for a
//!   vertebra with world AP extent `D` (LPS: +y posterior), the body is the anterior 40 % of
//!   that extent, with centroid `b` and depth `d = 0.4 D`. Each screw runs from the entry
//!   `b + (±0.6 d, +1.1 d, 0)` (pedicle–lamina junction) to the tip `b + (±0.2 d, −0.25 d, 0)`
//!   (≈ 16° convergent, ending in the anterior half of the body), with a spherical head of
//!   radius 5.5 mm 7 mm dorsal of the entry along the screw axis; rods (radius 2.75 mm) join
//!   the heads of consecutive instrumented levels on each side. Screw radii follow core's
//!   implant sizes (3.5 / 5.0 / 6.5 mm diameter for cervical / thoracic / lumbar). The voxels
//!   within these capsules become metal; then
//!   [`vertebra_core::phantom::domain::apply_appearance`] runs with a *neutral* CT preset (no
//!   noise, no beam hardening, identity kernel, no calibration error, no slice blur), which
//!   sets metal to at least [`METAL_HU`] and adds core's streaks (dark bands between metal
//!   objects, bright/dark radial rays, bounded by ±600 HU) in every axial slice that contains
//!   metal; slices without metal stay bit-identical. That step clamps the image to the CT range
//!   [−1024, 3071] HU, as a scanner stores it. Labels are kept: the screws lie inside the
//!   vertebrae they instrument, as in core's phantoms.
//!
//! Every perturbation refuses MR-like cases (they are not in HU) and keeps the case's id,
//! patient, domain and annotations.

use std::fmt;
use std::str::FromStr;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vertebra_core::anatomy::{Region, Vertebra};
use vertebra_core::phantom::Tissue;
use vertebra_core::phantom::domain::{DomainPreset, METAL_HU, Modality, apply_appearance};
use vertebra_core::{Geometry, Volume};

use crate::dataset::Case;
use crate::{Error, Result};

/// Instrumented levels of the [`Perturbation::Metal`] condition (core's `ct-metal-hardware`
/// preset instruments two).
pub const METAL_LEVELS: usize = 2;
/// Radius of a screw head, mm.
pub const SCREW_HEAD_RADIUS_MM: f64 = 5.5;
/// Distance from the entry point to the head centre along the screw axis, mm.
pub const SCREW_HEAD_OFFSET_MM: f64 = 7.0;
/// Radius of a connecting rod, mm (5.5 mm rods).
pub const ROD_RADIUS_MM: f64 = 2.75;

/// One perturbation of the robustness study. Serialised as its name (see [`Self::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Perturbation {
    /// The unperturbed case (the study's baseline row), `none`.
    None,
    /// `HU' = (1 + percent/100) · HU`, `intensity+15` / `intensity-30`; |percent| < 100.
    Intensity {
        /// Signed percentage.
        percent: i32,
    },
    /// Additive white Gaussian noise, `noise-25hu`.
    Noise {
        /// Standard deviation, HU.
        sigma_hu: u32,
    },
    /// Thicker contiguous reconstruction, `slice-5mm`.
    SliceThickness {
        /// New slice thickness and spacing, mm.
        mm: u32,
    },
    /// Pedicle screws and rods with streak artefacts, `metal`.
    Metal,
}

/// The conditions of the study, in the order of the paper's figure: baseline, intensity
/// ±15/30 %, noise σ 10/25/50 HU, 3 and 5 mm slices, metal.
pub fn study_conditions() -> Vec<Perturbation> {
    use Perturbation as P;
    vec![
        P::None,
        P::Intensity { percent: 15 },
        P::Intensity { percent: -15 },
        P::Intensity { percent: 30 },
        P::Intensity { percent: -30 },
        P::Noise { sigma_hu: 10 },
        P::Noise { sigma_hu: 25 },
        P::Noise { sigma_hu: 50 },
        P::SliceThickness { mm: 3 },
        P::SliceThickness { mm: 5 },
        P::Metal,
    ]
}

impl Perturbation {
    /// The stable name: `none`, `intensity+15`, `intensity-30`, `noise-25hu`, `slice-5mm`,
    /// `metal`.
    pub fn name(&self) -> String {
        match *self {
            Perturbation::None => "none".into(),
            Perturbation::Intensity { percent } => format!("intensity{percent:+}"),
            Perturbation::Noise { sigma_hu } => format!("noise-{sigma_hu}hu"),
            Perturbation::SliceThickness { mm } => format!("slice-{mm}mm"),
            Perturbation::Metal => "metal".into(),
        }
    }

    /// Checks the parameters (|percent| < 100, σ and thickness > 0).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the condition.
    pub fn validate(&self) -> Result<()> {
        let ok = match *self {
            Perturbation::Intensity { percent } => percent.abs() < 100,
            Perturbation::Noise { sigma_hu } => sigma_hu > 0,
            Perturbation::SliceThickness { mm } => mm > 0,
            Perturbation::None | Perturbation::Metal => true,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "perturbation {}: scale within ±99 %, σ and thickness > 0",
                self.name()
            )))
        }
    }

    /// Applies the perturbation to a CT case; `seed` drives the random ones (noise, streak
    /// directions), the others ignore it.
    ///
    /// # Errors
    /// [`Error::Case`] for an MR-like case, a label map off the image grid, a scan shorter
    /// than one slab, or (metal) no labels / no vertebra from C3 down entirely in the scan;
    /// invalid parameters; core errors.
    pub fn apply(&self, case: &Case, seed: u64) -> Result<Case> {
        self.validate()?;
        let fail = |message: String| Error::Case {
            case: case.id.clone(),
            message,
        };
        if case.modality != Modality::Ct {
            return Err(fail(format!(
                "perturbation {}: modality {:?} is not in HU",
                self.name(),
                case.modality
            )));
        }
        if let Some(l) = &case.labels
            && (l.dims() != case.image.dims() || l.geometry() != case.image.geometry())
        {
            return Err(fail("the label map is not on the image grid".into()));
        }
        match *self {
            Perturbation::None => Ok(case.clone()),
            Perturbation::Intensity { percent } => {
                let a = 1.0 + percent as f32 / 100.0;
                Ok(Case {
                    image: case.image.map(|&v| a * v),
                    ..case.clone()
                })
            }
            Perturbation::Noise { sigma_hu } => Ok(Case {
                image: add_noise(&case.image, f64::from(sigma_hu), seed)?,
                ..case.clone()
            }),
            Perturbation::SliceThickness { mm } => {
                thicken(case, f64::from(mm)).map_err(|e| fail(e.to_string()))
            }
            Perturbation::Metal => add_metal(case, seed).map_err(|e| match e {
                Error::Case { .. } => e,
                other => fail(other.to_string()),
            }),
        }
    }
}

impl fmt::Display for Perturbation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for Perturbation {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::InvalidArgument(format!(
                "unknown perturbation {s:?}; expected none, intensity+P / intensity-P, \
                 noise-<σ>hu, slice-<T>mm or metal"
            ))
        };
        let p = match s {
            "none" => Perturbation::None,
            "metal" => Perturbation::Metal,
            _ => {
                if let Some(rest) = s.strip_prefix("intensity") {
                    if !rest.starts_with(['+', '-']) {
                        return Err(bad());
                    }
                    Perturbation::Intensity {
                        percent: rest.parse().map_err(|_| bad())?,
                    }
                } else if let Some(v) = s.strip_prefix("noise-").and_then(|r| r.strip_suffix("hu"))
                {
                    Perturbation::Noise {
                        sigma_hu: v.parse().map_err(|_| bad())?,
                    }
                } else if let Some(v) = s.strip_prefix("slice-").and_then(|r| r.strip_suffix("mm"))
                {
                    Perturbation::SliceThickness {
                        mm: v.parse().map_err(|_| bad())?,
                    }
                } else {
                    return Err(bad());
                }
            }
        };
        p.validate()?;
        Ok(p)
    }
}

impl TryFrom<String> for Perturbation {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<Perturbation> for String {
    fn from(p: Perturbation) -> String {
        p.name()
    }
}

/// One standard normal deviate (Box–Muller; `u1` in (0, 1] keeps the logarithm finite).
fn standard_normal<R: Rng>(rng: &mut R) -> f64 {
    let u1 = 1.0 - rng.random::<f64>();
    let u2 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

fn add_noise(image: &Volume<f32>, sigma: f64, seed: u64) -> Result<Volume<f32>> {
    let [nx, ny, _] = image.dims();
    let mut data = image.data().to_vec();
    data.par_chunks_mut((nx * ny).max(1))
        .enumerate()
        .for_each(|(z, slice)| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(z as u64);
            for v in slice {
                *v += (sigma * standard_normal(&mut rng)) as f32;
            }
        });
    Ok(Volume::from_vec(image.dims(), data, *image.geometry())?)
}

/// Input slices `(index, weight)` of output slab `k` (weights sum to 1).
fn slab_weights(k: usize, r: f64, nz: usize) -> Vec<(usize, f64)> {
    let (a, b) = (k as f64 * r, (k + 1) as f64 * r);
    let first = a.floor() as usize;
    let last = (b.ceil() as usize).min(nz);
    (first..last)
        .filter_map(|i| {
            let w = (b.min(i as f64 + 1.0) - a.max(i as f64)).max(0.0) / r;
            (w > 1e-12).then_some((i, w))
        })
        .collect()
}

fn thicken(case: &Case, thickness: f64) -> Result<Case> {
    let g = *case.image.geometry();
    let s = g.spacing[2];
    if s >= thickness - 1e-9 {
        return Ok(case.clone());
    }
    let [nx, ny, nz] = case.image.dims();
    let r = thickness / s;
    let n_out = (nz as f64 / r + 1e-9).floor() as usize;
    if n_out == 0 {
        return Err(Error::InvalidArgument(format!(
            "the scan is {:.1} mm long in z, shorter than one {thickness} mm slab",
            nz as f64 * s
        )));
    }
    let geometry = Geometry {
        spacing: [g.spacing[0], g.spacing[1], thickness],
        origin: g.voxel_to_world([0.0, 0.0, r / 2.0 - 0.5]),
        direction: g.direction,
    };
    let plane = nx * ny;
    let slabs: Vec<Vec<(usize, f64)>> = (0..n_out).map(|k| slab_weights(k, r, nz)).collect();
    let src = case.image.data();
    let mut image = vec![0.0f32; plane * n_out];
    image
        .par_chunks_mut(plane.max(1))
        .zip(&slabs)
        .for_each(|(out, slab)| {
            for (p, o) in out.iter_mut().enumerate() {
                let v: f64 = slab
                    .iter()
                    .map(|&(i, w)| w * f64::from(src[i * plane + p]))
                    .sum();
                *o = v as f32;
            }
        });
    let labels = match &case.labels {
        Some(l) => {
            let src = l.data();
            let mut out = vec![0u8; plane * n_out];
            out.par_chunks_mut(plane.max(1))
                .enumerate()
                .zip(&slabs)
                .for_each(|((k, out), slab)| {
                    // Walk outwards from the slab centre so that ties go to the nearest slice.
                    let centre = (k as f64 + 0.5) * r;
                    let mut order = slab.clone();
                    order.sort_by(|x, y| {
                        let dx = (x.0 as f64 + 0.5 - centre).abs();
                        let dy = (y.0 as f64 + 0.5 - centre).abs();
                        dx.total_cmp(&dy)
                    });
                    let mut votes: Vec<(u8, f64)> = Vec::with_capacity(order.len());
                    for (p, o) in out.iter_mut().enumerate() {
                        votes.clear();
                        for &(i, w) in &order {
                            let lab = src[i * plane + p];
                            match votes.iter_mut().find(|(v, _)| *v == lab) {
                                Some(e) => e.1 += w,
                                None => votes.push((lab, w)),
                            }
                        }
                        let mut best = votes[0];
                        for &cand in &votes[1..] {
                            if cand.1 > best.1 + 1e-12 {
                                best = cand;
                            }
                        }
                        *o = best.0;
                    }
                });
            Some(Volume::from_vec([nx, ny, n_out], out, geometry)?)
        }
        None => None,
    };
    Ok(Case {
        image: Volume::from_vec([nx, ny, n_out], image, geometry)?,
        labels,
        ..case.clone()
    })
}

/// A solid capsule (segment `a`–`b` thickened by `radius`), world mm.
#[derive(Debug, Clone, Copy)]
struct Capsule {
    a: [f64; 3],
    b: [f64; 3],
    radius: f64,
}

impl Capsule {
    fn contains(&self, p: [f64; 3]) -> bool {
        let ab = [0, 1, 2].map(|i| self.b[i] - self.a[i]);
        let ap = [0, 1, 2].map(|i| p[i] - self.a[i]);
        let len2: f64 = ab.iter().map(|v| v * v).sum();
        let t = if len2 > 0.0 {
            (ap.iter().zip(&ab).map(|(x, y)| x * y).sum::<f64>() / len2).clamp(0.0, 1.0)
        } else {
            0.0
        };
        let d2: f64 = (0..3).map(|i| (ap[i] - t * ab[i]).powi(2)).sum();
        d2 <= self.radius * self.radius
    }
}

/// Screw radius by region (core's implant sizes).
fn screw_radius_mm(v: Vertebra) -> f64 {
    match v.region() {
        Region::Cervical => 1.75,
        Region::Thoracic => 2.5,
        Region::Lumbar => 3.25,
    }
}

/// Per-label world statistics of a label map.
#[derive(Debug, Clone, Copy)]
struct LabelExtent {
    min_y: f64,
    max_y: f64,
    touches_border: bool,
    voxels: usize,
}

/// The hardware of [`Perturbation::Metal`] for a label map (see the module docs).
fn hardware(labels: &Volume<u8>) -> Result<Vec<Capsule>> {
    let g = labels.geometry();
    let [nx, ny, nz] = labels.dims();
    let mut ext: Vec<Option<LabelExtent>> = vec![None; 256];
    for (i, &l) in labels.data().iter().enumerate() {
        if l == 0 {
            continue;
        }
        let [x, y, z] = labels.coords(i);
        let w = g.voxel_to_world([x as f64, y as f64, z as f64]);
        let border = x == 0 || y == 0 || z == 0 || x + 1 == nx || y + 1 == ny || z + 1 == nz;
        let e = ext[l as usize].get_or_insert(LabelExtent {
            min_y: w[1],
            max_y: w[1],
            touches_border: false,
            voxels: 0,
        });
        e.min_y = e.min_y.min(w[1]);
        e.max_y = e.max_y.max(w[1]);
        e.touches_border |= border;
        e.voxels += 1;
    }
    let eligible: Vec<u8> = (Vertebra::C3.label()..=u8::MAX)
        .filter(|&l| {
            Vertebra::from_label(l).is_some()
                && ext[l as usize].is_some_and(|e| !e.touches_border && e.voxels > 0)
        })
        .collect();
    if eligible.is_empty() {
        return Err(Error::InvalidArgument(
            "metal: no vertebra from C3 down lies entirely inside the scan; nowhere to place \
             pedicle screws"
                .into(),
        ));
    }
    let chosen = &eligible[eligible.len().saturating_sub(METAL_LEVELS)..];
    // Body centroid: labelled voxels in the anterior 40 % of the vertebra's AP extent.
    let mut sums = vec![([0.0f64; 3], 0usize); chosen.len()];
    for (i, &l) in labels.data().iter().enumerate() {
        let Some(k) = chosen.iter().position(|&c| c == l) else {
            continue;
        };
        let e = ext[l as usize].expect("chosen labels have extents");
        let [x, y, z] = labels.coords(i);
        let w = g.voxel_to_world([x as f64, y as f64, z as f64]);
        if w[1] <= e.min_y + 0.4 * (e.max_y - e.min_y) {
            for a in 0..3 {
                sums[k].0[a] += w[a];
            }
            sums[k].1 += 1;
        }
    }
    let mut capsules = Vec::new();
    let mut heads: [Vec<[f64; 3]>; 2] = [Vec::new(), Vec::new()];
    for (k, &l) in chosen.iter().enumerate() {
        let e = ext[l as usize].expect("chosen labels have extents");
        let (sum, n) = sums[k];
        let b = sum.map(|v| v / n.max(1) as f64);
        let d = 0.4 * (e.max_y - e.min_y);
        let vertebra = Vertebra::from_label(l).expect("eligible labels are vertebrae");
        for (side, sign) in [(0usize, 1.0f64), (1, -1.0)] {
            let entry = [b[0] + sign * 0.6 * d, b[1] + 1.1 * d, b[2]];
            let tip = [b[0] + sign * 0.2 * d, b[1] - 0.25 * d, b[2]];
            let axis = [0, 1, 2].map(|i| entry[i] - tip[i]);
            let len = axis.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-9);
            let head = [0, 1, 2].map(|i| entry[i] + SCREW_HEAD_OFFSET_MM * axis[i] / len);
            capsules.push(Capsule {
                a: entry,
                b: tip,
                radius: screw_radius_mm(vertebra),
            });
            capsules.push(Capsule {
                a: head,
                b: head,
                radius: SCREW_HEAD_RADIUS_MM,
            });
            heads[side].push(head);
        }
    }
    for side in &heads {
        for w in side.windows(2) {
            capsules.push(Capsule {
                a: w[0],
                b: w[1],
                radius: ROD_RADIUS_MM,
            });
        }
    }
    Ok(capsules)
}

/// Marks every voxel inside one of `capsules` in `mask`.
fn rasterise(capsules: &[Capsule], g: &Geometry, dims: [usize; 3], mask: &mut [bool]) {
    let [nx, ny, nz] = dims;
    for c in capsules {
        let lo = [0, 1, 2].map(|i| c.a[i].min(c.b[i]) - c.radius);
        let hi = [0, 1, 2].map(|i| c.a[i].max(c.b[i]) + c.radius);
        let mut vlo = [f64::INFINITY; 3];
        let mut vhi = [f64::NEG_INFINITY; 3];
        for corner in 0..8 {
            let p = [0, 1, 2].map(|i| if (corner >> i) & 1 == 0 { lo[i] } else { hi[i] });
            let v = g.world_to_voxel(p);
            for i in 0..3 {
                vlo[i] = vlo[i].min(v[i]);
                vhi[i] = vhi[i].max(v[i]);
            }
        }
        let range = |i: usize, n: usize| {
            let a = vlo[i].floor().max(0.0) as usize;
            let b = (vhi[i].ceil().max(-1.0) + 1.0).min(n as f64) as usize;
            a..b
        };
        for z in range(2, nz) {
            for y in range(1, ny) {
                for x in range(0, nx) {
                    if c.contains(g.voxel_to_world([x as f64, y as f64, z as f64])) {
                        mask[x + nx * (y + ny * z)] = true;
                    }
                }
            }
        }
    }
}

fn add_metal(case: &Case, seed: u64) -> Result<Case> {
    let labels = case.labels.as_ref().ok_or_else(|| Error::Case {
        case: case.id.clone(),
        message: "metal: screws are placed from the vertebra labels, and this case has none".into(),
    })?;
    let capsules = hardware(labels)?;
    let g = *case.image.geometry();
    let mut mask = vec![false; case.image.len()];
    rasterise(&capsules, &g, case.image.dims(), &mut mask);
    let tissue = Volume::from_vec(
        case.image.dims(),
        mask.iter()
            .map(|&m| {
                if m {
                    Tissue::Metal as u8
                } else {
                    Tissue::SoftTissue as u8
                }
            })
            .collect(),
        g,
    )?;
    let neutral = DomainPreset {
        name: "perturbation-metal".into(),
        modality: Modality::Ct,
        pixel_spacing_mm: g.spacing[0],
        slice_spacing_mm: g.spacing[2],
        slice_thickness_mm: g.spacing[2],
        noise_sigma: 0.0,
        noise_correlation_mm: 0.0,
        kernel_sharpness: 0.0,
        hu_scale: 1.0,
        hu_offset: 0.0,
        beam_hardening_hu: 0.0,
        metal: None,
    };
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let image = apply_appearance(&case.image, &tissue, &neutral, &mut rng)?;
    debug_assert!(
        image
            .data()
            .iter()
            .zip(&mask)
            .all(|(&v, &m)| !m || v >= METAL_HU)
    );
    Ok(Case {
        image,
        ..case.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for p in study_conditions() {
            assert_eq!(p.name().parse::<Perturbation>().unwrap(), p);
            let json = serde_json::to_string(&p).unwrap();
            assert_eq!(serde_json::from_str::<Perturbation>(&json).unwrap(), p);
        }
        assert_eq!(
            serde_json::to_string(&Perturbation::Intensity { percent: 15 }).unwrap(),
            "\"intensity+15\""
        );
        assert_eq!(Perturbation::Noise { sigma_hu: 25 }.name(), "noise-25hu");
        assert_eq!(Perturbation::SliceThickness { mm: 5 }.name(), "slice-5mm");
        for bad in [
            "intensity15",
            "intensity+100",
            "noise-0hu",
            "slice-mm",
            "blur",
            "",
        ] {
            assert!(bad.parse::<Perturbation>().is_err(), "{bad}");
        }
    }

    #[test]
    fn slab_weights_are_overlaps() {
        assert_eq!(
            slab_weights(1, 3.0, 12),
            vec![(3, 1.0 / 3.0), (4, 1.0 / 3.0), (5, 1.0 / 3.0)]
        );
        // r = 2.5: slab 1 is [2.5, 5): half of slice 2, slices 3 and 4.
        assert_eq!(slab_weights(1, 2.5, 10), vec![(2, 0.2), (3, 0.4), (4, 0.4)]);
    }

    #[test]
    fn capsules_contain_their_segment_and_radius() {
        let c = Capsule {
            a: [0.0; 3],
            b: [10.0, 0.0, 0.0],
            radius: 2.0,
        };
        assert!(c.contains([5.0, 1.9, 0.0]));
        assert!(!c.contains([5.0, 2.1, 0.0]));
        assert!(c.contains([11.9, 0.0, 0.0]));
        assert!(!c.contains([12.1, 0.0, 0.0]));
    }
}
