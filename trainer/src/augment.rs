//! Data augmentation: one sampled spatial transform per training window, applied consistently
//! to the image (trilinear), the label map (nearest), the vertebra centroids and the lesion
//! boxes, followed by intensity jitter and Gaussian noise.
//!
//! ## The transform
//! Work happens in voxel coordinates of the prepared case (isotropic after
//! [`crate::preprocess::prepare`], so a voxel-space rotation is a true rotation). For an output
//! window voxel `p` (index `(x, y, z)`, window centre `c_w = (n − 1) / 2`) the source position is
//!
//! `q(p) = C + t + Rᵀ (p − c_w) / s + d(p)`
//!
//! - `C`: the window centre in source voxels, grid-aligned exactly as
//!   [`crate::preprocess::window_at`] aligns it (`start = floor(c − (n − 1)/2 + ½)`,
//!   `C = start + (n − 1)/2`), so that the identity configuration reproduces `window_at`
//!   voxel for voxel;
//! - `R`: rotation, uniform ±[`AugmentConfig::max_rotation_deg`] about each axis
//!   (`R = R_z R_y R_x`) or about one uniformly random axis ([`RotationMode`]);
//! - `s`: isotropic scale, uniform in `1 ± max_scale` (content appears `s` times larger);
//! - `t`: translation, uniform ±`max_translation_voxels` per axis;
//! - `d`: elastic displacement, Gaussian (σ = `elastic_sigma_voxels`, truncated at ±2σ) per
//!   component at the nodes of a coarse lattice (node spacing ≈ `elastic_spacing_voxels`,
//!   spanning the window), upsampled trilinearly; outside the lattice the edge value
//!   continues. [`AugmentConfig::validate`] requires `4σ (1 + max_scale) / spacing ≤ 0.8`, so
//!   the warp cannot fold and the inverse iteration below contracts.
//!
//! A warped region's centroid is not exactly the warped centroid point: the elastic part
//! weights the region by its local volume change. Measured on cuboid "vertebrae" (see
//! `tests/augment.rs`): ≤ 0.6 voxel without the elastic part, up to ~2 voxels with it.
//!
//! Points (centroids, lesion box samples) go the other way, `p = c_w + s R (q − C − t − d(p))`,
//! solved by fixed-point iteration (contracting because `s |∇d| < 1`). A lesion box is mapped
//! by transforming a 5×5×5 lattice over the box and taking the axis-aligned box of the images;
//! its centre becomes the box centre.
//!
//! ## Random crop and `window_at`
//! Window placement is the random crop: with [`AugmentConfig::random_crop`] on,
//! [`sample_augmented`] draws the window centre with [`crate::preprocess::sample_centre`] (a
//! vertebra centroid jittered by up to a quarter window per axis, or a uniform point), and the
//! translation `t` then shifts the content by up to 10 more voxels. With it off, the window is
//! centred exactly on a random vertebra centroid (or the scan centre). [`augment_window`] takes
//! the centre from the caller.
//!
//! ## Intensity (in normalised units `x = (HU + 1000) / 2000`)
//! Jitter acts on HU about 0 HU: `HU' = a·HU + b`, i.e. `x' = a (x − ½) + ½ + b / 2000`, with
//! `a` uniform in `1 ± intensity_scale` and `b` uniform ±`intensity_shift_hu`; then noise
//! `N(0, (noise_std_hu / 2000)²)` per voxel. Values are not clipped (the network sees what a
//! noisy scanner would give it).
//!
//! ## Reproducibility and cost
//! Every draw comes from the caller's RNG in a fixed order (rotation, scale, translation,
//! elastic, intensity, noise; only enabled parts draw), so a seeded `ChaCha8Rng` gives
//! bit-identical output. The work is one pass over the window (no full-volume resampling):
//! measured in `tests/augment.rs` for the `cpu` preset's 64³ window.

use std::f64::consts::PI;

use rand::Rng;
use serde::{Deserialize, Serialize};
use vertebra_core::phantom::LesionTruth;
use vertebra_core::{Geometry, Volume};

use crate::preprocess::{PreparedCase, Sample, WindowSpec, sample_centre, window_at};
use crate::{Error, Result};

/// How rotations are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RotationMode {
    /// Independent uniform angles about x, y and z (`R = R_z R_y R_x`).
    PerAxis,
    /// One uniform angle about a uniformly random unit axis.
    RandomAxis,
}

/// Augmentation settings; every part can be switched off. Defaults follow the paper
/// (rotation ±15°, scale ±10 %, translation ≤ 10 voxels); elastic, noise and intensity
/// magnitudes are ours (the paper names them without values).
// One switch per augmentation is the point of this struct.
#[allow(clippy::struct_excessive_bools)]
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AugmentConfig {
    /// Random rotation.
    pub rotation: bool,
    /// Largest rotation angle, degrees.
    pub max_rotation_deg: f64,
    /// Per-axis angles or one random axis.
    pub rotation_mode: RotationMode,
    /// Random isotropic scaling.
    pub scale: bool,
    /// Largest relative scale change (0.1 = ±10 %).
    pub max_scale: f64,
    /// Random translation.
    pub translation: bool,
    /// Largest translation per axis, voxels.
    pub max_translation_voxels: f64,
    /// Elastic deformation.
    pub elastic: bool,
    /// Standard deviation of the lattice displacements (truncated at ±2σ), voxels.
    pub elastic_sigma_voxels: f64,
    /// Approximate spacing of the displacement lattice, voxels.
    pub elastic_spacing_voxels: f64,
    /// Gaussian noise.
    pub noise: bool,
    /// Noise standard deviation, HU.
    pub noise_std_hu: f64,
    /// Intensity jitter (scale and shift).
    pub intensity: bool,
    /// Largest relative intensity scale change.
    pub intensity_scale: f64,
    /// Largest intensity shift, HU.
    pub intensity_shift_hu: f64,
    /// Random window placement (see the module docs).
    pub random_crop: bool,
    /// Probability that a window is centred on a vertebra (else anywhere in the scan).
    pub p_vertebra_centre: f64,
}

impl Default for AugmentConfig {
    fn default() -> Self {
        AugmentConfig {
            rotation: true,
            max_rotation_deg: 15.0,
            rotation_mode: RotationMode::PerAxis,
            scale: true,
            max_scale: 0.10,
            translation: true,
            max_translation_voxels: 10.0,
            elastic: true,
            elastic_sigma_voxels: 1.5,
            elastic_spacing_voxels: 16.0,
            noise: true,
            noise_std_hu: 20.0,
            intensity: true,
            intensity_scale: 0.10,
            intensity_shift_hu: 50.0,
            random_crop: true,
            p_vertebra_centre: 0.9,
        }
    }
}

impl AugmentConfig {
    /// Every augmentation off: [`augment_window`] then equals [`window_at`].
    pub fn none() -> Self {
        AugmentConfig {
            rotation: false,
            scale: false,
            translation: false,
            elastic: false,
            noise: false,
            intensity: false,
            random_crop: false,
            ..Self::default()
        }
    }

    /// Checks the ranges (non-negative magnitudes, scales below 1, probability in [0, 1]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the field.
    pub fn validate(&self) -> Result<()> {
        let checks = [
            ("max_rotation_deg", self.max_rotation_deg, 0.0, 90.0),
            ("max_scale", self.max_scale, 0.0, 0.5),
            (
                "max_translation_voxels",
                self.max_translation_voxels,
                0.0,
                1e4,
            ),
            ("elastic_sigma_voxels", self.elastic_sigma_voxels, 0.0, 1e3),
            (
                "elastic_spacing_voxels",
                self.elastic_spacing_voxels,
                2.0,
                1e4,
            ),
            ("noise_std_hu", self.noise_std_hu, 0.0, 1e4),
            ("intensity_scale", self.intensity_scale, 0.0, 0.9),
            ("intensity_shift_hu", self.intensity_shift_hu, 0.0, 1e4),
            ("p_vertebra_centre", self.p_vertebra_centre, 0.0, 1.0),
        ];
        for (name, v, lo, hi) in checks {
            if !v.is_finite() || v < lo || v > hi {
                return Err(Error::InvalidArgument(format!(
                    "augmentation {name} = {v} must lie in [{lo}, {hi}]"
                )));
            }
        }
        // Neighbouring nodes differ by at most 4σ: keep the warp invertible (and the inverse
        // iteration contracting) with a margin.
        let steepest =
            4.0 * self.elastic_sigma_voxels * (1.0 + self.max_scale) / self.elastic_spacing_voxels;
        if self.elastic && steepest > 0.8 {
            return Err(Error::InvalidArgument(format!(
                "augmentation elastic_sigma_voxels {} is too large for elastic_spacing_voxels {}: \
                 4σ(1 + max_scale) / spacing = {steepest:.2} must stay below 0.8 (fold-free warp)",
                self.elastic_sigma_voxels, self.elastic_spacing_voxels
            )));
        }
        Ok(())
    }
}

/// The sampled spatial transform of one window (voxel coordinates, `(x, y, z)` order).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowTransform {
    /// Window size `(x, y, z)`.
    pub dims: [usize; 3],
    /// Window centre in source voxels (`C` in the module docs), grid-aligned.
    pub centre: [f64; 3],
    /// Rotation `R` (row-major).
    pub rotation: [[f64; 3]; 3],
    /// Scale `s`.
    pub scale: f64,
    /// Translation `t`, source voxels.
    pub translation: [f64; 3],
    /// Elastic lattice nodes per axis (`(x, y, z)`; empty displacement = no elastic part).
    pub lattice: [usize; 3],
    /// Lattice displacements `[node][component]`, source voxels, x-fastest node order.
    pub displacement: Vec<[f64; 3]>,
}

impl WindowTransform {
    /// The identity transform of a window with the given centre.
    pub fn identity(dims: [usize; 3], centre: [f64; 3]) -> Self {
        WindowTransform {
            dims,
            centre,
            rotation: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
            scale: 1.0,
            translation: [0.0; 3],
            lattice: [0; 3],
            displacement: Vec::new(),
        }
    }

    fn half(&self) -> [f64; 3] {
        self.dims.map(|n| (n as f64 - 1.0) / 2.0)
    }

    /// Elastic displacement at window position `p` (trilinear over the lattice, clamped).
    pub fn displacement_at(&self, p: [f64; 3]) -> [f64; 3] {
        if self.displacement.is_empty() {
            return [0.0; 3];
        }
        let mut i0 = [0usize; 3];
        let mut f = [0.0f64; 3];
        for a in 0..3 {
            let m = self.lattice[a];
            let step = (self.dims[a] as f64 - 1.0).max(1.0) / (m - 1) as f64;
            let u = (p[a] / step).clamp(0.0, (m - 1) as f64);
            let k = (u.floor() as usize).min(m - 2);
            i0[a] = k;
            f[a] = u - k as f64;
        }
        let [mx, my, _] = self.lattice;
        let mut out = [0.0; 3];
        for dz in 0..2 {
            for dy in 0..2 {
                for dx in 0..2 {
                    let w = (if dx == 1 { f[0] } else { 1.0 - f[0] })
                        * (if dy == 1 { f[1] } else { 1.0 - f[1] })
                        * (if dz == 1 { f[2] } else { 1.0 - f[2] });
                    let node = (i0[0] + dx) + mx * ((i0[1] + dy) + my * (i0[2] + dz));
                    for c in 0..3 {
                        out[c] += w * self.displacement[node][c];
                    }
                }
            }
        }
        out
    }

    /// Source voxel position of window voxel `p` (`q(p)` in the module docs).
    pub fn source_of(&self, p: [f64; 3]) -> [f64; 3] {
        let h = self.half();
        let d = self.displacement_at(p);
        let v = [0, 1, 2].map(|a| (p[a] - h[a]) / self.scale);
        // Rᵀ v.
        [0, 1, 2].map(|i| {
            self.centre[i]
                + self.translation[i]
                + (0..3).map(|k| self.rotation[k][i] * v[k]).sum::<f64>()
                + d[i]
        })
    }

    /// Window position of source voxel `q` (inverse of [`Self::source_of`]).
    pub fn window_of(&self, q: [f64; 3]) -> [f64; 3] {
        let h = self.half();
        let affine = |d: [f64; 3]| -> [f64; 3] {
            let u = [0, 1, 2].map(|a| q[a] - self.centre[a] - self.translation[a] - d[a]);
            [0, 1, 2].map(|i| {
                h[i] + self.scale * (0..3).map(|k| self.rotation[i][k] * u[k]).sum::<f64>()
            })
        };
        let mut p = affine([0.0; 3]);
        if !self.displacement.is_empty() {
            for _ in 0..30 {
                let next = affine(self.displacement_at(p));
                let delta = (0..3).map(|a| (next[a] - p[a]).abs()).fold(0.0, f64::max);
                p = next;
                if delta < 1e-9 {
                    break;
                }
            }
        }
        p
    }
}

/// A window after augmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct AugmentedSample {
    /// Image, labels and every target, as [`window_at`] computes them on the warped window.
    pub sample: Sample,
    /// Geometry of the window grid (the prepared case's axes, origin at the window's first
    /// voxel before the warp).
    pub geometry: Geometry,
    /// Transformed vertebra centroids: label and window voxel position `(x, y, z)`.
    pub centroids: Vec<(u8, [f64; 3])>,
    /// Transformed lesions (world coordinates of [`Self::geometry`]), if annotated.
    pub lesions: Option<Vec<LesionTruth>>,
    /// The transform used.
    pub transform: WindowTransform,
}

fn uniform<R: Rng>(rng: &mut R, max: f64) -> f64 {
    if max > 0.0 {
        rng.random_range(-max..=max)
    } else {
        0.0
    }
}

/// A standard normal value (Box–Muller; the second value is discarded for simplicity).
fn gaussian<R: Rng>(rng: &mut R) -> f64 {
    let u1: f64 = 1.0 - rng.random::<f64>();
    let u2: f64 = rng.random::<f64>();
    (-2.0 * u1.ln()).sqrt() * (2.0 * PI * u2).cos()
}

fn rot_x(a: f64) -> [[f64; 3]; 3] {
    let (s, c) = a.sin_cos();
    [[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]]
}
fn rot_y(a: f64) -> [[f64; 3]; 3] {
    let (s, c) = a.sin_cos();
    [[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]]
}
fn rot_z(a: f64) -> [[f64; 3]; 3] {
    let (s, c) = a.sin_cos();
    [[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]
}
fn matmul(a: [[f64; 3]; 3], b: [[f64; 3]; 3]) -> [[f64; 3]; 3] {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

/// Rodrigues' rotation about unit axis `u` by `a` radians.
fn rot_axis(u: [f64; 3], a: f64) -> [[f64; 3]; 3] {
    let (s, c) = a.sin_cos();
    let t = 1.0 - c;
    let [x, y, z] = u;
    [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
}

/// Draws the spatial transform of a window centred (grid-aligned) at `centre` source voxels.
pub fn sample_transform<R: Rng>(
    config: &AugmentConfig,
    dims: [usize; 3],
    centre: [f64; 3],
    rng: &mut R,
) -> WindowTransform {
    let mut t = WindowTransform::identity(dims, centre);
    if config.rotation {
        let max = config.max_rotation_deg.to_radians();
        t.rotation = match config.rotation_mode {
            RotationMode::PerAxis => {
                let (ax, ay, az) = (uniform(rng, max), uniform(rng, max), uniform(rng, max));
                matmul(rot_z(az), matmul(rot_y(ay), rot_x(ax)))
            }
            RotationMode::RandomAxis => {
                let mut u = [gaussian(rng), gaussian(rng), gaussian(rng)];
                let n = u.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-12);
                u = u.map(|v| v / n);
                rot_axis(u, uniform(rng, max))
            }
        };
    }
    if config.scale {
        t.scale = 1.0 + uniform(rng, config.max_scale);
    }
    if config.translation {
        t.translation = [0, 1, 2].map(|_| uniform(rng, config.max_translation_voxels));
    }
    if config.elastic && config.elastic_sigma_voxels > 0.0 {
        t.lattice = dims.map(|n| {
            (((n as f64 - 1.0) / config.elastic_spacing_voxels).round() as usize + 1).max(2)
        });
        let nodes: usize = t.lattice.iter().product();
        t.displacement = (0..nodes)
            .map(|_| {
                [0, 1, 2].map(|_| gaussian(rng).clamp(-2.0, 2.0) * config.elastic_sigma_voxels)
            })
            .collect();
    }
    t
}

/// Trilinear sample of `data` (dims `d`) at continuous voxel `q`; `fill` outside the grid
/// (a voxel centre is inside; positions between the outermost centres and half a voxel
/// beyond blend with `fill`, as for a crop of a padded volume).
fn trilinear(data: &[f32], d: [usize; 3], q: [f64; 3], fill: f32) -> f32 {
    let f = q.map(f64::floor);
    let i0 = f.map(|v| v as i64);
    let w = [q[0] - f[0], q[1] - f[1], q[2] - f[2]];
    let at = |x: i64, y: i64, z: i64| -> f32 {
        if x < 0 || y < 0 || z < 0 || x >= d[0] as i64 || y >= d[1] as i64 || z >= d[2] as i64 {
            fill
        } else {
            data[x as usize + d[0] * (y as usize + d[1] * z as usize)]
        }
    };
    let mut out = 0.0f64;
    for dz in 0..2 {
        let wz = if dz == 1 { w[2] } else { 1.0 - w[2] };
        if wz == 0.0 {
            continue;
        }
        for dy in 0..2 {
            let wy = if dy == 1 { w[1] } else { 1.0 - w[1] };
            if wy == 0.0 {
                continue;
            }
            for dx in 0..2 {
                let wx = if dx == 1 { w[0] } else { 1.0 - w[0] };
                if wx == 0.0 {
                    continue;
                }
                out += wx * wy * wz * f64::from(at(i0[0] + dx, i0[1] + dy, i0[2] + dz));
            }
        }
    }
    out as f32
}

/// Nearest-neighbour sample (round half up), `0` outside.
fn nearest(data: &[u8], d: [usize; 3], q: [f64; 3]) -> u8 {
    let i = q.map(|v| (v + 0.5).floor() as i64);
    if (0..3).any(|a| i[a] < 0 || i[a] >= d[a] as i64) {
        0
    } else {
        data[i[0] as usize + d[0] * (i[1] as usize + d[1] * i[2] as usize)]
    }
}

/// Maps a lesion's world box through the inverse warp (module docs).
fn transform_lesion(
    l: &LesionTruth,
    src: &Geometry,
    window: &Geometry,
    t: &WindowTransform,
) -> LesionTruth {
    const K: usize = 5;
    let mut lo = [f64::INFINITY; 3];
    let mut hi = [f64::NEG_INFINITY; 3];
    for i in 0..K {
        for j in 0..K {
            for k in 0..K {
                let f = [i, j, k].map(|v| v as f64 / (K - 1) as f64 - 0.5);
                let w = [0, 1, 2].map(|a| l.centre[a] + f[a] * l.size_mm[a]);
                let p = t.window_of(src.world_to_voxel(w));
                let pw = window.voxel_to_world(p);
                for a in 0..3 {
                    lo[a] = lo[a].min(pw[a]);
                    hi[a] = hi[a].max(pw[a]);
                }
            }
        }
    }
    LesionTruth {
        centre: [0, 1, 2].map(|a| f64::midpoint(lo[a], hi[a])),
        size_mm: [0, 1, 2].map(|a| hi[a] - lo[a]),
        ..l.clone()
    }
}

/// Cuts and augments the window centred at `centre_world` (see the module docs).
///
/// # Errors
/// An invalid configuration; the errors of [`window_at`].
pub fn augment_window<R: Rng>(
    case: &PreparedCase,
    centre_world: [f64; 3],
    spec: &WindowSpec,
    config: &AugmentConfig,
    rng: &mut R,
) -> Result<AugmentedSample> {
    config.validate()?;
    if centre_world.iter().any(|c| !c.is_finite()) {
        return Err(Error::Case {
            case: case.id.clone(),
            message: format!("window centre {centre_world:?} is not finite"),
        });
    }
    let [wz, wy, wx] = spec.window;
    let dims = [wx, wy, wz];
    let g = *case.image.geometry();
    let c = g.world_to_voxel(centre_world);
    let start = [0, 1, 2].map(|a| (c[a] - (dims[a] as f64 - 1.0) / 2.0 + 0.5).floor());
    let centre = [0, 1, 2].map(|a| start[a] + (dims[a] as f64 - 1.0) / 2.0);
    let wg = Geometry {
        origin: g.voxel_to_world(start),
        ..g
    };
    let t = sample_transform(config, dims, centre, rng);

    let sd = case.image.dims();
    let n: usize = dims.iter().product();
    let mut image = vec![0.0f32; n];
    let mut labels = case.labels.as_ref().map(|_| vec![0u8; n]);
    let src_labels = case.labels.as_ref().map(Volume::data);
    let src = case.image.data();
    let mut i = 0;
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                let q = t.source_of([x as f64, y as f64, z as f64]);
                image[i] = trilinear(src, sd, q, 0.0);
                if let (Some(out), Some(l)) = (labels.as_mut(), src_labels) {
                    out[i] = nearest(l, sd, q);
                }
                i += 1;
            }
        }
    }
    if config.intensity {
        let a = 1.0 + uniform(rng, config.intensity_scale);
        let b = uniform(rng, config.intensity_shift_hu) / 2000.0;
        for v in &mut image {
            *v = (a * (f64::from(*v) - 0.5) + 0.5 + b) as f32;
        }
    }
    if config.noise && config.noise_std_hu > 0.0 {
        let sigma = config.noise_std_hu / 2000.0;
        for v in &mut image {
            *v += (gaussian(rng) * sigma) as f32;
        }
    }
    let to_window = |w: [f64; 3]| t.window_of(g.world_to_voxel(w));
    let centroids: Vec<(u8, [f64; 3])> = case
        .centroids
        .iter()
        .map(|&(l, w)| (l, to_window(w)))
        .collect();
    let lesions = case.lesions.as_ref().map(|ls| {
        ls.iter()
            .map(|l| transform_lesion(l, &g, &wg, &t))
            .collect::<Vec<_>>()
    });
    let warped = PreparedCase {
        id: case.id.clone(),
        domain: case.domain.clone(),
        image: Volume::from_vec(dims, image, wg)?,
        labels: match labels {
            Some(l) => Some(Volume::from_vec(dims, l, wg)?),
            None => None,
        },
        lesions: lesions.clone(),
        annotations: case.annotations,
        centroids: centroids
            .iter()
            .map(|&(l, p)| (l, wg.voxel_to_world(p)))
            .collect(),
    };
    let centre_w = wg.voxel_to_world(dims.map(|n| (n as f64 - 1.0) / 2.0));
    let sample = window_at(&warped, centre_w, spec)?;
    Ok(AugmentedSample {
        sample,
        geometry: wg,
        centroids,
        lesions,
        transform: t,
    })
}

/// Draws a window position (the random crop, module docs) and augments that window.
///
/// # Errors
/// As [`augment_window`].
pub fn sample_augmented<R: Rng>(
    case: &PreparedCase,
    spec: &WindowSpec,
    config: &AugmentConfig,
    rng: &mut R,
) -> Result<AugmentedSample> {
    config.validate()?;
    let centre = if config.random_crop {
        sample_centre(case, spec, config.p_vertebra_centre, rng)
    } else if !case.centroids.is_empty() && rng.random_bool(config.p_vertebra_centre) {
        case.centroids[rng.random_range(0..case.centroids.len())].1
    } else {
        let d = case.image.dims();
        case.image
            .geometry()
            .voxel_to_world(d.map(|n| (n as f64 - 1.0) / 2.0))
    };
    augment_window(case, centre, spec, config, rng)
}
