//! Scanner "domains": named presets that change how a phantom *looks* (noise, resolution,
//! kernel, calibration, artefacts, modality) but never its anatomy.
//!
//! The anatomy generator rasterises a tissue map ([`Tissue`] per voxel) and a clean HU volume
//! on the acquisition grid of a preset (its pixel and slice spacing), then calls
//! [`apply_appearance`], which imitates the acquisition and reconstruction chain of one kind of
//! scanner or protocol:
//!
//! 1. the object: the clean HU image (CT) or per-tissue T1/T2-like intensities (MR,
//!    [`mr_signal`]); metal is at least [`METAL_HU`];
//! 2. CT artefacts of the projection domain: beam-hardening cupping and metal streaks;
//! 3. the slice sensitivity profile along z (thick slices average neighbouring anatomy);
//! 4. the in-plane reconstruction kernel (smooth blur or edge-enhancing sharpening);
//! 5. MR only: a smooth multiplicative coil bias field;
//! 6. CT only: HU calibration error (scale and offset);
//! 7. noise with the preset's standard deviation and grain (Gaussian for CT, Rician for MR),
//!    added after calibration because `noise_sigma` is what one measures in that scanner's
//!    images;
//! 8. clipping to the scanner's value range.
//!
//! Every step works on whole slices or on 1-D lines (separable filters, running-sum box
//! filters), in parallel over slices; there is no 3-D convolution. Randomness comes only from
//! the caller's generator, and each slice draws from its own ChaCha stream, so the result is
//! identical for a seed whatever the thread count. The tissue map is only read: labels and
//! ground truth stay exactly what the generator painted. The presets and the real-world
//! situations they imitate are described in `docs/domains.md`.

use super::tissue::{ALL_TISSUES, NUM_TISSUES, Tissue};
use crate::{Error, Result, Volume};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

/// Imaging modality / contrast of a phantom.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Modality {
    /// CT, values in Hounsfield units.
    Ct,
    /// MRI-like T1-weighted contrast (arbitrary intensity units, not HU).
    MrT1Like,
    /// MRI-like T2-weighted contrast (arbitrary intensity units, not HU).
    MrT2Like,
}

/// Metal hardware to implant (pedicle screws with rods).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetalSpec {
    /// Number of consecutive instrumented levels (two pedicle screws each).
    pub levels: usize,
}

/// Appearance parameters of one scanner/site domain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DomainPreset {
    /// Stable preset name ("siemens-sharp", ...), written into ground truth and manifests.
    pub name: String,
    /// Modality / contrast.
    pub modality: Modality,
    /// In-plane pixel spacing, mm (rows and columns).
    pub pixel_spacing_mm: f64,
    /// Distance between slice centres, mm.
    pub slice_spacing_mm: f64,
    /// Reconstructed slice thickness (slice sensitivity profile FWHM), mm; ≥ slice spacing
    /// gives partial-volume blur along z.
    pub slice_thickness_mm: f64,
    /// Standard deviation of image noise in uniform water, HU (CT) or intensity units (MR).
    pub noise_sigma: f64,
    /// Noise grain: correlation length of the noise texture, mm.
    pub noise_correlation_mm: f64,
    /// Reconstruction kernel: < 0 smooth (blur), 0 standard, > 0 sharp (edge enhancing).
    pub kernel_sharpness: f64,
    /// HU calibration: measured = scale * true + offset.
    pub hu_scale: f64,
    /// HU calibration offset, HU.
    pub hu_offset: f64,
    /// Beam-hardening cupping strength: HU drop at the centre of the body relative to the
    /// periphery, for bone-dense paths.
    pub beam_hardening_hu: f64,
    /// Metal hardware, if this domain's patients are instrumented.
    pub metal: Option<MetalSpec>,
}

/// Lowest value a CT scanner stores (air is −1000 HU; −1024 is the usual 12-bit floor).
pub const CT_MIN_HU: f32 = -1024.0;
/// Highest value a CT scanner with 12-bit storage represents (4095 − 1024). Metal saturates
/// here.
pub const CT_MAX_HU: f32 = 3071.0;
/// HU of a metal implant before clipping: titanium attenuates far beyond the scanner range;
/// after noise and calibration it saturates at [`CT_MAX_HU`].
pub const METAL_HU: f32 = 3000.0;
/// Highest MR-like intensity (12-bit magnitude images).
pub const MR_MAX_INTENSITY: f32 = 4095.0;

/// Peak relative amplitude of the MR bias field: the coil sensitivity varies by about ±20 %
/// across a spine field of view.
pub const MR_BIAS_AMPLITUDE: f64 = 0.2;

/// Amplitude (HU) of the dark band between two metal objects (photon starvation along the
/// rays that cross both).
pub const METAL_DARK_BAND_HU: f32 = 300.0;
/// Amplitude (HU) of the alternating bright/dark radial streaks around each metal object.
pub const METAL_RAY_HU: f32 = 150.0;
/// Bound on the total streak artefact at any voxel, HU.
pub const METAL_STREAK_MAX_HU: f32 = 600.0;

/// Radial streaks drawn per metal object and slice.
const METAL_RAYS_PER_OBJECT: usize = 8;
/// Half-width (Gaussian σ, mm) of the dark band between metal objects.
const METAL_BAND_SIGMA_MM: f64 = 2.0;
/// Half-width (Gaussian σ, mm) of a radial streak.
const METAL_RAY_SIGMA_MM: f64 = 0.7;
/// Decay length (mm) of streaks away from the metal.
const METAL_DECAY_MM: f64 = 50.0;
/// Metal cross-section (mm²) that produces full-strength streaks; a pedicle screw is ~30 mm².
const METAL_FULL_AREA_MM2: f64 = 20.0;

/// Smoothing scale (mm) of the bone-density map that modulates beam hardening.
const BEAM_HARDENING_BONE_RADIUS_MM: f64 = 10.0;
/// Smoothed bone fraction at which beam hardening reaches its full strength.
const BEAM_HARDENING_BONE_SATURATION: f32 = 0.25;

/// Radius (Gaussian σ, mm) of the blur subtracted by the sharp-kernel unsharp mask.
const UNSHARP_SIGMA_MM: f64 = 1.0;

/// FWHM = this × Gaussian σ.
const FWHM_PER_SIGMA: f64 = 2.354_820_045;

impl DomainPreset {
    /// Checks that every parameter is physically meaningful, so that a typo in a preset or a
    /// manifest fails here instead of producing silently odd images.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the first offending field.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| {
            Err(Error::InvalidArgument(format!(
                "domain preset {:?}: {what}",
                self.name
            )))
        };
        if self.name.is_empty()
            || !self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return bad("the name must be non-empty lowercase ASCII letters, digits and '-'");
        }
        let positive = [
            ("pixel_spacing_mm", self.pixel_spacing_mm),
            ("slice_spacing_mm", self.slice_spacing_mm),
            ("slice_thickness_mm", self.slice_thickness_mm),
            ("hu_scale", self.hu_scale),
        ];
        for (field, v) in positive {
            if !v.is_finite() || v <= 0.0 {
                return bad(&format!("{field} = {v} must be finite and > 0"));
            }
        }
        let non_negative = [
            ("noise_sigma", self.noise_sigma),
            ("noise_correlation_mm", self.noise_correlation_mm),
            ("beam_hardening_hu", self.beam_hardening_hu),
        ];
        for (field, v) in non_negative {
            if !v.is_finite() || v < 0.0 {
                return bad(&format!("{field} = {v} must be finite and ≥ 0"));
            }
        }
        if !self.hu_offset.is_finite() || self.hu_offset.abs() > 500.0 {
            return bad(&format!(
                "hu_offset = {} must be finite and within ±500 HU",
                self.hu_offset
            ));
        }
        if !self.kernel_sharpness.is_finite() || self.kernel_sharpness.abs() > 3.0 {
            return bad(&format!(
                "kernel_sharpness = {} must be within [-3, 3]",
                self.kernel_sharpness
            ));
        }
        if let Some(m) = &self.metal {
            if !(1..=6).contains(&m.levels) {
                return bad(&format!("metal.levels = {} must be 1..=6", m.levels));
            }
        }
        if self.modality != Modality::Ct {
            // HU calibration, beam hardening and CT metal artefacts have no MR meaning; metal
            // in MR gives susceptibility artefacts, which this model does not imitate.
            if self.hu_scale != 1.0 || self.hu_offset != 0.0 || self.beam_hardening_hu != 0.0 {
                return bad("MR-like presets must have hu_scale 1, hu_offset 0, beam_hardening 0");
            }
            if self.metal.is_some() {
                return bad("MR-like presets cannot carry metal (susceptibility not modelled)");
            }
        }
        Ok(())
    }

    /// The value range of images of this domain: [`CT_MIN_HU`]..=[`CT_MAX_HU`] for CT,
    /// 0..=[`MR_MAX_INTENSITY`] for MR-like contrasts.
    pub fn value_range(&self) -> (f32, f32) {
        match self.modality {
            Modality::Ct => (CT_MIN_HU, CT_MAX_HU),
            Modality::MrT1Like | Modality::MrT2Like => (0.0, MR_MAX_INTENSITY),
        }
    }
}

/// All named presets, in a stable order (the order of the domain list in model contracts).
pub fn presets() -> Vec<DomainPreset> {
    let ct = |name: &str| DomainPreset {
        name: name.to_owned(),
        modality: Modality::Ct,
        pixel_spacing_mm: 0.7,
        slice_spacing_mm: 1.25,
        slice_thickness_mm: 1.25,
        noise_sigma: 12.0,
        noise_correlation_mm: 0.8,
        kernel_sharpness: 0.0,
        hu_scale: 1.0,
        hu_offset: 0.0,
        beam_hardening_hu: 15.0,
        metal: None,
    };
    let mr = |name: &str, modality| DomainPreset {
        name: name.to_owned(),
        modality,
        pixel_spacing_mm: 0.8,
        slice_spacing_mm: 3.3,
        slice_thickness_mm: 3.0,
        noise_sigma: 15.0,
        noise_correlation_mm: 0.0,
        kernel_sharpness: 0.0,
        hu_scale: 1.0,
        hu_offset: 0.0,
        beam_hardening_hu: 0.0,
        metal: None,
    };
    vec![
        ct("ct-standard"),
        DomainPreset {
            pixel_spacing_mm: 0.6,
            slice_spacing_mm: 1.0,
            slice_thickness_mm: 1.0,
            noise_sigma: 35.0,
            noise_correlation_mm: 0.4,
            kernel_sharpness: 1.0,
            beam_hardening_hu: 20.0,
            ..ct("ct-bone-sharp")
        },
        DomainPreset {
            pixel_spacing_mm: 0.9,
            slice_spacing_mm: 3.0,
            slice_thickness_mm: 5.0,
            noise_sigma: 40.0,
            noise_correlation_mm: 1.6,
            kernel_sharpness: -0.5,
            beam_hardening_hu: 25.0,
            ..ct("ct-lowdose-thick")
        },
        DomainPreset {
            pixel_spacing_mm: 0.8,
            slice_spacing_mm: 2.5,
            slice_thickness_mm: 2.5,
            noise_sigma: 20.0,
            noise_correlation_mm: 1.0,
            kernel_sharpness: -0.3,
            hu_scale: 0.94,
            hu_offset: 35.0,
            beam_hardening_hu: 40.0,
            ..ct("ct-legacy-miscalibrated")
        },
        DomainPreset {
            noise_sigma: 15.0,
            beam_hardening_hu: 45.0,
            metal: Some(MetalSpec { levels: 2 }),
            ..ct("ct-metal-hardware")
        },
        mr("mr-t1-like", Modality::MrT1Like),
        DomainPreset {
            noise_sigma: 20.0,
            ..mr("mr-t2-like", Modality::MrT2Like)
        },
    ]
}

/// The preset called `name` (validated).
///
/// # Errors
///
/// [`Error::InvalidArgument`] for an unknown name; the message lists the valid names.
pub fn preset(name: &str) -> Result<DomainPreset> {
    let all = presets();
    let names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    match all.iter().find(|p| p.name == name) {
        Some(p) => {
            p.validate()?;
            Ok(p.clone())
        }
        None => Err(Error::InvalidArgument(format!(
            "unknown domain preset {name:?}; valid presets: {}",
            names.join(", ")
        ))),
    }
}

/// Relative MR-like signal of a tissue (0..1000; 1000 = CSF on T2) for an MR-like modality, or
/// an error for CT.
///
/// The *order* of the values follows standard spin-echo appearances: fat and fatty adult marrow
/// are bright on T1, water (CSF, healthy nucleus pulposus, oedema) bright on T2, cortical bone,
/// air and metal dark on both, muscle intermediate. Lytic metastases replace marrow fat (T1
/// hypointense to marrow, T2 hyperintense); sclerotic metastases are dark on both; infection
/// (spondylodiscitis) is T1 hypointense and T2 hyperintense in disc and endplates. Sources are
/// listed in `docs/domains.md`; the magnitudes are our choice, only their ordering is claimed.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for [`Modality::Ct`].
pub fn mr_signal(modality: Modality, tissue: Tissue) -> Result<f32> {
    // Indexed by `Tissue as u8`:
    // Air, Lung, Fat, Muscle, SoftTissue, Disc, Csf, Cord, Cortical, Trabecular, Lytic,
    // Sclerotic, Inflammation, Table, Metal.
    const T1: [f32; NUM_TISSUES] = [
        0.0, 30.0, 900.0, 350.0, 400.0, 300.0, 120.0, 450.0, 30.0, 650.0, 250.0, 80.0, 200.0, 0.0,
        0.0,
    ];
    const T2: [f32; NUM_TISSUES] = [
        0.0, 30.0, 600.0, 250.0, 350.0, 750.0, 1000.0, 400.0, 30.0, 450.0, 800.0, 80.0, 850.0, 0.0,
        0.0,
    ];
    let table = match modality {
        Modality::MrT1Like => &T1,
        Modality::MrT2Like => &T2,
        Modality::Ct => {
            return Err(Error::InvalidArgument(
                "mr_signal: CT has no MR-like signal table".into(),
            ));
        }
    };
    Ok(table[tissue as usize])
}

/// Turns a clean phantom into an image of the `preset`'s scanner domain.
///
/// `clean_hu` and `tissue` must share dimensions and geometry (the acquisition grid; its
/// spacing is used for every mm-to-voxel conversion). For CT the result is in HU within
/// [`CT_MIN_HU`]..=[`CT_MAX_HU`]; for MR-like presets the HU are replaced by per-tissue
/// intensities ([`mr_signal`]) in 0..=[`MR_MAX_INTENSITY`]. Deterministic for a given `rng`
/// state.
///
/// # Errors
///
/// [`Error::InvalidArgument`] for an invalid preset, volumes of different sizes, tissue values
/// outside [`Tissue`] or non-finite HU; [`Error::Geometry`] for different geometries.
pub fn apply_appearance(
    clean_hu: &Volume<f32>,
    tissue: &Volume<u8>,
    preset: &DomainPreset,
    rng: &mut ChaCha8Rng,
) -> Result<Volume<f32>> {
    preset.validate()?;
    if clean_hu.dims() != tissue.dims() {
        return Err(Error::InvalidArgument(format!(
            "apply_appearance: HU volume {:?} and tissue map {:?} differ in size",
            clean_hu.dims(),
            tissue.dims()
        )));
    }
    if clean_hu.geometry() != tissue.geometry() {
        return Err(Error::Geometry(
            "apply_appearance: HU volume and tissue map have different geometries".into(),
        ));
    }
    if let Some(bad) = tissue.data().iter().find(|&&t| t as usize >= NUM_TISSUES) {
        return Err(Error::InvalidArgument(format!(
            "apply_appearance: tissue value {bad} is not a Tissue (0..{NUM_TISSUES})"
        )));
    }
    if clean_hu.data().iter().any(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(
            "apply_appearance: the clean HU volume contains NaN or infinite values".into(),
        ));
    }
    let grid = Grid::of(clean_hu);
    let labels = tissue.data();

    // Draw every random quantity from the caller's generator in a fixed order, before any
    // parallel work: one stream seed per step, plus the bias field.
    let streak_seed: u64 = rng.random();
    let noise_seed: u64 = rng.random();
    let bias = match preset.modality {
        Modality::Ct => None,
        Modality::MrT1Like | Modality::MrT2Like => Some(BiasField::random(grid, rng)),
    };

    // 1. The object.
    let metal = Tissue::Metal as u8;
    let mut img: Vec<f32> = match preset.modality {
        Modality::Ct => clean_hu
            .data()
            .iter()
            .zip(labels)
            .map(|(&v, &t)| if t == metal { v.max(METAL_HU) } else { v })
            .collect(),
        Modality::MrT1Like | Modality::MrT2Like => {
            let mut table = [0.0f32; NUM_TISSUES];
            for (i, t) in ALL_TISSUES.iter().enumerate() {
                table[i] = mr_signal(preset.modality, *t)?;
            }
            labels.iter().map(|&t| table[t as usize]).collect()
        }
    };

    // 2. CT artefacts that arise in the projections.
    if preset.modality == Modality::Ct {
        if preset.beam_hardening_hu > 0.0 {
            beam_hardening(&mut img, labels, grid, preset.beam_hardening_hu as f32);
        }
        if labels.contains(&metal) {
            metal_streaks(&mut img, labels, grid, streak_seed);
        }
    }

    // 3. Slice sensitivity profile.
    if let Some(k) = ssp_kernel(preset.slice_thickness_mm, grid.spacing[2]) {
        img = convolve_z(&img, grid, &k);
    }

    // 4.–8. In-plane steps, slice by slice.
    let recon = ReconKernel::new(preset.kernel_sharpness, grid);
    let noise = NoiseFilter::new(preset.noise_sigma, preset.noise_correlation_mm, grid);
    let (lo, hi) = preset.value_range();
    let (scale, offset) = (preset.hu_scale as f32, preset.hu_offset as f32);
    let plane = grid.plane();
    img.par_chunks_mut(plane).enumerate().for_each_init(
        || SliceScratch::new(plane),
        |scratch, (z, slice)| {
            recon.apply(slice, grid, scratch);
            let mut srng = ChaCha8Rng::seed_from_u64(noise_seed);
            srng.set_stream(z as u64);
            match &bias {
                None => {
                    calibrate(slice, scale, offset);
                    noise.add_gaussian(slice, grid, &mut srng, scratch);
                }
                Some(b) => {
                    b.apply(slice, grid, z);
                    noise.apply_rician(slice, grid, &mut srng, scratch);
                }
            }
            for v in slice.iter_mut() {
                *v = v.clamp(lo, hi);
            }
        },
    );
    Volume::from_vec(clean_hu.dims(), img, *clean_hu.geometry())
}

/// Grid size and spacing (mm) of the volume being processed.
#[derive(Debug, Clone, Copy)]
struct Grid {
    dims: [usize; 3],
    spacing: [f64; 3],
}

impl Grid {
    fn of<T>(v: &Volume<T>) -> Self {
        Grid {
            dims: v.dims(),
            spacing: v.geometry().spacing,
        }
    }

    fn plane(&self) -> usize {
        self.dims[0] * self.dims[1]
    }
}

/// Per-thread scratch buffers, one slice each.
struct SliceScratch {
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl SliceScratch {
    fn new(plane: usize) -> Self {
        SliceScratch {
            a: vec![0.0; plane],
            b: vec![0.0; plane],
            c: vec![0.0; plane],
        }
    }
}

/// Normalised (unit-sum) sampled Gaussian with standard deviation `sigma_vox` voxels, radius
/// ⌈3σ⌉. `None` when σ is so small that the kernel would be the identity.
fn gaussian_kernel(sigma_vox: f64) -> Option<Vec<f32>> {
    if sigma_vox.is_nan() || sigma_vox < 0.2 {
        return None;
    }
    let r = (3.0 * sigma_vox).ceil() as isize;
    let w: Vec<f64> = (-r..=r)
        .map(|i| (-(i * i) as f64 / (2.0 * sigma_vox * sigma_vox)).exp())
        .collect();
    let sum: f64 = w.iter().sum();
    Some(w.iter().map(|x| (x / sum) as f32).collect())
}

/// Clamps `i` (which may be negative) to `0..n`.
#[inline]
fn clamp_index(i: isize, n: usize) -> usize {
    i.clamp(0, n as isize - 1) as usize
}

/// Convolves each row (x direction) of an `nx`×`ny` slice, replicating edge values.
fn convolve_rows(src: &[f32], dst: &mut [f32], nx: usize, k: &[f32]) {
    let r = (k.len() / 2) as isize;
    for (row, out) in src.chunks_exact(nx).zip(dst.chunks_exact_mut(nx)) {
        for (x, o) in out.iter_mut().enumerate() {
            let mut acc = 0.0;
            for (i, &w) in k.iter().enumerate() {
                acc += w * row[clamp_index(x as isize + i as isize - r, nx)];
            }
            *o = acc;
        }
    }
}

/// Convolves each column (y direction) of an `nx`×`ny` slice, replicating edge values. Works
/// on whole rows so the inner loop is contiguous.
fn convolve_cols(src: &[f32], dst: &mut [f32], nx: usize, ny: usize, k: &[f32]) {
    let r = (k.len() / 2) as isize;
    for (y, out) in dst.chunks_exact_mut(nx).enumerate() {
        out.fill(0.0);
        for (i, &w) in k.iter().enumerate() {
            let yi = clamp_index(y as isize + i as isize - r, ny);
            for (o, s) in out.iter_mut().zip(&src[yi * nx..(yi + 1) * nx]) {
                *o += w * s;
            }
        }
    }
}

/// Separable in-plane blur of `slice` in place (`tmp` is scratch of the same size).
fn blur_slice(slice: &mut [f32], tmp: &mut [f32], grid: Grid, kx: &[f32], ky: &[f32]) {
    convolve_rows(slice, tmp, grid.dims[0], kx);
    convolve_cols(tmp, slice, grid.dims[0], grid.dims[1], ky);
}

/// Slice-sensitivity-profile kernel along z, or `None` when no blur is needed.
///
/// The generator samples the anatomy at slice centres. When the reconstructed thickness `t`
/// exceeds the spacing `s` (overlapping thick slices), each slice is replaced by a Gaussian
/// average along z with FWHM = t, the usual model of a spiral CT slice sensitivity profile.
/// Contiguous or gapped slices (t ≤ s) are left as sampled: their profile stays within one
/// slice of the grid.
fn ssp_kernel(thickness_mm: f64, spacing_z_mm: f64) -> Option<Vec<f32>> {
    if thickness_mm <= spacing_z_mm {
        return None;
    }
    gaussian_kernel(thickness_mm / FWHM_PER_SIGMA / spacing_z_mm)
}

/// Convolves along z (slice direction), replicating the end slices; parallel over output
/// slices, each a weighted sum of whole input slices.
fn convolve_z(src: &[f32], grid: Grid, k: &[f32]) -> Vec<f32> {
    let plane = grid.plane();
    let nz = grid.dims[2];
    let r = (k.len() / 2) as isize;
    let mut out = vec![0.0f32; src.len()];
    out.par_chunks_mut(plane).enumerate().for_each(|(z, o)| {
        for (i, &w) in k.iter().enumerate() {
            let zi = clamp_index(z as isize + i as isize - r, nz);
            for (a, b) in o.iter_mut().zip(&src[zi * plane..(zi + 1) * plane]) {
                *a += w * b;
            }
        }
    });
    out
}

/// In-plane reconstruction kernel.
///
/// - sharpness < 0 (smooth, e.g. soft-tissue kernels): Gaussian blur with σ = |sharpness| mm;
/// - sharpness > 0 (sharp, e.g. bone kernels): unsharp mask `I + k (I − G₁ₘₘ * I)` with
///   amount k = sharpness, which steepens edges and overshoots at them as sharp kernels do;
/// - 0: identity.
enum ReconKernel {
    Identity,
    Smooth {
        kx: Vec<f32>,
        ky: Vec<f32>,
    },
    Sharp {
        kx: Vec<f32>,
        ky: Vec<f32>,
        amount: f32,
    },
}

impl ReconKernel {
    fn new(sharpness: f64, grid: Grid) -> Self {
        let kernels = |sigma_mm: f64| {
            gaussian_kernel(sigma_mm / grid.spacing[0])
                .zip(gaussian_kernel(sigma_mm / grid.spacing[1]))
        };
        if sharpness < 0.0 {
            match kernels(-sharpness) {
                Some((kx, ky)) => ReconKernel::Smooth { kx, ky },
                None => ReconKernel::Identity,
            }
        } else if sharpness > 0.0 {
            match kernels(UNSHARP_SIGMA_MM) {
                Some((kx, ky)) => ReconKernel::Sharp {
                    kx,
                    ky,
                    amount: sharpness as f32,
                },
                None => ReconKernel::Identity,
            }
        } else {
            ReconKernel::Identity
        }
    }

    fn apply(&self, slice: &mut [f32], grid: Grid, s: &mut SliceScratch) {
        match self {
            ReconKernel::Identity => {}
            ReconKernel::Smooth { kx, ky } => blur_slice(slice, &mut s.a, grid, kx, ky),
            ReconKernel::Sharp { kx, ky, amount } => {
                s.b.copy_from_slice(slice);
                blur_slice(&mut s.b, &mut s.a, grid, kx, ky);
                for (v, blurred) in slice.iter_mut().zip(&s.b) {
                    *v += amount * (*v - blurred);
                }
            }
        }
    }
}

/// Correlated noise: white Gaussian noise filtered by a Gaussian of σ_f = L/2 (L = requested
/// correlation length), so that the noise autocorrelation exp(−d²/(4σ_f²)) falls to 1/e at
/// distance L, then rescaled by the filter's exact noise gain so that its standard deviation
/// is the requested σ. L below ~0.4 voxel gives white noise.
struct NoiseFilter {
    sigma: f32,
    kernels: Option<(Vec<f32>, Vec<f32>)>,
    gain: f32,
}

impl NoiseFilter {
    fn new(sigma: f64, correlation_mm: f64, grid: Grid) -> Self {
        let sigma_f = correlation_mm / 2.0;
        let kernels = gaussian_kernel(sigma_f / grid.spacing[0])
            .zip(gaussian_kernel(sigma_f / grid.spacing[1]));
        let gain = kernels.as_ref().map_or(1.0, |(kx, ky)| {
            let sq = |k: &[f32]| k.iter().map(|w| w * w).sum::<f32>();
            (sq(kx) * sq(ky)).sqrt()
        });
        NoiseFilter {
            sigma: sigma as f32,
            kernels,
            gain,
        }
    }

    /// Fills `out` with one noise field of standard deviation σ (uses `tmp` as scratch).
    fn field(&self, out: &mut [f32], tmp: &mut [f32], grid: Grid, rng: &mut ChaCha8Rng) {
        for v in out.iter_mut() {
            *v = rng.sample(StandardNormal);
        }
        if let Some((kx, ky)) = &self.kernels {
            blur_slice(out, tmp, grid, kx, ky);
        }
        let k = self.sigma / self.gain;
        for v in out.iter_mut() {
            *v *= k;
        }
    }

    /// Adds Gaussian noise (CT).
    fn add_gaussian(
        &self,
        slice: &mut [f32],
        grid: Grid,
        rng: &mut ChaCha8Rng,
        s: &mut SliceScratch,
    ) {
        if self.sigma <= 0.0 {
            return;
        }
        self.field(&mut s.b, &mut s.a, grid, rng);
        for (v, n) in slice.iter_mut().zip(&s.b) {
            *v += n;
        }
    }

    /// Rician noise of a magnitude image (MR): |I + n₁ + i n₂| with independent real and
    /// imaginary noise of standard deviation σ. Gaussian-like in bright tissue, Rayleigh
    /// (positive bias) in the dark background, as in real magnitude images.
    fn apply_rician(
        &self,
        slice: &mut [f32],
        grid: Grid,
        rng: &mut ChaCha8Rng,
        s: &mut SliceScratch,
    ) {
        if self.sigma <= 0.0 {
            return;
        }
        self.field(&mut s.b, &mut s.a, grid, rng);
        self.field(&mut s.c, &mut s.a, grid, rng);
        for ((v, re), im) in slice.iter_mut().zip(&s.b).zip(&s.c) {
            *v = (*v + re).hypot(*im);
        }
    }
}

/// HU calibration error of the scanner: `measured = scale * true + offset`.
fn calibrate(slice: &mut [f32], scale: f32, offset: f32) {
    if scale == 1.0 && offset == 0.0 {
        return;
    }
    for v in slice.iter_mut() {
        *v = scale * *v + offset;
    }
}

/// Smooth multiplicative MR coil-sensitivity field, separable: B(x,y,z) = Bx(x)·By(y)·Bz(z),
/// each factor exp(a/3 · f(t)) with f a random low-frequency cosine mixture in [−1, 1] and
/// a = [`MR_BIAS_AMPLITUDE`]. Separable so that applying it costs two multiplications per voxel.
struct BiasField {
    factors: [Vec<f32>; 3],
}

impl BiasField {
    fn random(grid: Grid, rng: &mut ChaCha8Rng) -> Self {
        let mut axis = |n: usize| -> Vec<f32> {
            // Two cosines of 0.5 and 1 cycles over the axis with random phase and weight.
            let (p1, p2): (f64, f64) = (
                rng.random::<f64>() * std::f64::consts::TAU,
                rng.random::<f64>() * std::f64::consts::TAU,
            );
            let w: f64 = rng.random::<f64>();
            (0..n)
                .map(|i| {
                    let t = if n > 1 {
                        i as f64 / (n - 1) as f64
                    } else {
                        0.5
                    };
                    let f = w * (std::f64::consts::PI * t + p1).cos()
                        + (1.0 - w) * (std::f64::consts::TAU * t + p2).cos();
                    (MR_BIAS_AMPLITUDE / 3.0 * f).exp() as f32
                })
                .collect()
        };
        BiasField {
            factors: [axis(grid.dims[0]), axis(grid.dims[1]), axis(grid.dims[2])],
        }
    }

    fn apply(&self, slice: &mut [f32], grid: Grid, z: usize) {
        let bz = self.factors[2][z];
        for (row, by) in slice.chunks_exact_mut(grid.dims[0]).zip(&self.factors[1]) {
            let k = bz * by;
            for (v, bx) in row.iter_mut().zip(&self.factors[0]) {
                *v *= k * bx;
            }
        }
    }
}

/// True for tissue outside the patient (air, the table).
fn is_outside_body(t: u8) -> bool {
    t == Tissue::Air as u8 || t == Tissue::Table as u8
}

/// Bone weight of a tissue for beam hardening: dense bone and metal 1, trabecular bone 0.5.
fn bone_weight(t: u8) -> f32 {
    if t == Tissue::CorticalBone as u8
        || t == Tissue::ScleroticLesion as u8
        || t == Tissue::Metal as u8
    {
        1.0
    } else if t == Tissue::TrabecularBone as u8 {
        0.5
    } else {
        0.0
    }
}

/// Running-sum box blur of radius `r` along rows then columns (edge-replicating), in place.
/// O(1) per pixel whatever the radius, which keeps the 10 mm smoothing of the bone map cheap.
fn box_blur_slice(slice: &mut [f32], tmp: &mut [f32], nx: usize, ny: usize, rx: usize, ry: usize) {
    fn line(src: &[f32], dst: &mut [f32], n: usize, stride: usize, r: usize) {
        let norm = 1.0 / (2 * r + 1) as f32;
        let at = |i: isize| src[clamp_index(i, n) * stride];
        let mut acc: f32 = (-(r as isize)..=r as isize).map(at).sum();
        for i in 0..n {
            dst[i * stride] = acc * norm;
            acc += at(i as isize + r as isize + 1) - at(i as isize - r as isize);
        }
    }
    for (s, d) in slice.chunks_exact(nx).zip(tmp.chunks_exact_mut(nx)) {
        line(s, d, nx, 1, rx);
    }
    for x in 0..nx {
        line(&tmp[x..], &mut slice[x..], ny, nx, ry);
    }
}

/// Beam-hardening cupping, slice by slice: a smooth parabolic HU depression inside the body,
/// `−strength · (1 − (r/R)²) · (½ + ½ b)`, where r is the distance from the body centroid, R
/// the radius of a disc with the body's area and b ∈ [0, 1] the local bone density (smoothed
/// bone map). Rays through the body centre cross the most tissue and those through dense bone
/// the most hardening material, so the depression is deepest there. Voxels outside the body
/// are unchanged.
fn beam_hardening(img: &mut [f32], labels: &[u8], grid: Grid, strength: f32) {
    let [nx, ny, _] = grid.dims;
    let [sx, sy, _] = grid.spacing;
    let plane = grid.plane();
    let rx = (BEAM_HARDENING_BONE_RADIUS_MM / sx).round().max(1.0) as usize;
    let ry = (BEAM_HARDENING_BONE_RADIUS_MM / sy).round().max(1.0) as usize;
    img.par_chunks_mut(plane)
        .zip(labels.par_chunks(plane))
        .for_each_init(
            || (vec![0.0f32; plane], vec![0.0f32; plane]),
            |(bone, tmp), (slice, tis)| {
                let (mut n, mut cx, mut cy) = (0usize, 0.0f64, 0.0f64);
                for (i, &t) in tis.iter().enumerate() {
                    if !is_outside_body(t) {
                        n += 1;
                        cx += (i % nx) as f64;
                        cy += (i / nx) as f64;
                    }
                }
                if n == 0 {
                    return;
                }
                let (cx, cy) = (cx / n as f64, cy / n as f64);
                let r2_body = n as f64 * sx * sy / std::f64::consts::PI;
                for (b, &t) in bone.iter_mut().zip(tis) {
                    *b = bone_weight(t);
                }
                box_blur_slice(bone, tmp, nx, ny, rx, ry);
                box_blur_slice(bone, tmp, nx, ny, rx, ry);
                for (i, (v, &t)) in slice.iter_mut().zip(tis).enumerate() {
                    if is_outside_body(t) {
                        continue;
                    }
                    let dx = ((i % nx) as f64 - cx) * sx;
                    let dy = ((i / nx) as f64 - cy) * sy;
                    let cup = (1.0 - (dx * dx + dy * dy) / r2_body).max(0.0) as f32;
                    let b = (bone[i] / BEAM_HARDENING_BONE_SATURATION).min(1.0);
                    *v -= strength * cup * (0.5 + 0.5 * b);
                }
            },
        );
}

/// One connected metal object in a slice: centroid (mm, slice coordinates) and area (mm²).
#[derive(Debug, Clone, Copy)]
struct MetalObject {
    cx: f64,
    cy: f64,
    area_mm2: f64,
}

/// 8-connected metal objects of one slice.
fn metal_objects(tis: &[u8], nx: usize, ny: usize, sx: f64, sy: f64) -> Vec<MetalObject> {
    let metal = Tissue::Metal as u8;
    let mut seen = vec![false; tis.len()];
    let mut objects = Vec::new();
    let mut stack = Vec::new();
    for start in 0..tis.len() {
        if tis[start] != metal || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        let (mut n, mut sum_x, mut sum_y) = (0usize, 0.0f64, 0.0f64);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % nx, i / nx);
            n += 1;
            sum_x += x as f64;
            sum_y += y as f64;
            for dy in -1isize..=1 {
                for dx in -1isize..=1 {
                    let (xx, yy) = (x as isize + dx, y as isize + dy);
                    if xx < 0 || yy < 0 || xx >= nx as isize || yy >= ny as isize {
                        continue;
                    }
                    let j = yy as usize * nx + xx as usize;
                    if tis[j] == metal && !seen[j] {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        objects.push(MetalObject {
            cx: sum_x / n as f64 * sx,
            cy: sum_y / n as f64 * sy,
            area_mm2: n as f64 * sx * sy,
        });
    }
    objects
}

/// One straight streak in a slice (mm, slice coordinates): full amplitude on the segment from
/// `origin` along `direction` for `length` mm, Gaussian of width `sigma` across it, decaying
/// exponentially beyond the segment in both directions.
struct StreakLine {
    origin: [f64; 2],
    direction: [f64; 2],
    length: f64,
    amplitude: f64,
    sigma: f64,
}

/// Metal streak artefacts, slice by slice, from the `Tissue::Metal` voxels:
///
/// - between every pair of metal objects a dark band (photon starvation on the rays that cross
///   both), −[`METAL_DARK_BAND_HU`] on the connecting line, Gaussian across it, decaying beyond
///   the objects;
/// - around every object [`METAL_RAYS_PER_OBJECT`] thin radial streaks of random direction and
///   alternating sign, ±[`METAL_RAY_HU`], decaying away from the metal.
///
/// Amplitudes scale with the object's cross-section (full at ~20 mm²), the total is bounded by
/// ±[`METAL_STREAK_MAX_HU`], and the metal voxels themselves are left at their value. Slices
/// without metal are unchanged.
fn metal_streaks(img: &mut [f32], labels: &[u8], grid: Grid, seed: u64) {
    let [nx, ny, _] = grid.dims;
    let [sx, sy, _] = grid.spacing;
    let plane = grid.plane();
    let metal = Tissue::Metal as u8;
    img.par_chunks_mut(plane)
        .zip(labels.par_chunks(plane))
        .enumerate()
        .for_each(|(z, (slice, tis))| {
            if !tis.contains(&metal) {
                return;
            }
            let objects = metal_objects(tis, nx, ny, sx, sy);
            let strength = |o: &MetalObject| (o.area_mm2 / METAL_FULL_AREA_MM2).min(1.0);
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            rng.set_stream(z as u64);
            let mut lines: Vec<StreakLine> = Vec::new();
            for (i, a) in objects.iter().enumerate() {
                for b in &objects[i + 1..] {
                    let (dx, dy) = (b.cx - a.cx, b.cy - a.cy);
                    let len = dx.hypot(dy);
                    if len > 0.0 {
                        let amp = -f64::from(METAL_DARK_BAND_HU) * strength(a).min(strength(b));
                        lines.push(StreakLine {
                            origin: [a.cx, a.cy],
                            direction: [dx / len, dy / len],
                            length: len,
                            amplitude: amp,
                            sigma: METAL_BAND_SIGMA_MM,
                        });
                    }
                }
                for k in 0..METAL_RAYS_PER_OBJECT {
                    let theta: f64 = rng.random::<f64>() * std::f64::consts::PI;
                    let sign = if k % 2 == 0 { 1.0 } else { -1.0 };
                    let amp = sign
                        * f64::from(METAL_RAY_HU)
                        * (0.5 + 0.5 * rng.random::<f64>())
                        * strength(a);
                    lines.push(StreakLine {
                        origin: [a.cx, a.cy],
                        direction: [theta.cos(), theta.sin()],
                        length: 0.0,
                        amplitude: amp,
                        sigma: METAL_RAY_SIGMA_MM,
                    });
                }
            }
            let max = f64::from(METAL_STREAK_MAX_HU);
            for (i, (v, &t)) in slice.iter_mut().zip(tis).enumerate() {
                if t == metal {
                    continue;
                }
                let (px, py) = ((i % nx) as f64 * sx, (i / nx) as f64 * sy);
                let mut s = 0.0f64;
                for line in &lines {
                    let (p0, u, len, sigma) =
                        (line.origin, line.direction, line.length, line.sigma);
                    let (qx, qy) = (px - p0[0], py - p0[1]);
                    let along = qx * u[0] + qy * u[1];
                    let across = qx * u[1] - qy * u[0];
                    // Beyond 4 σ a streak contributes < 0.1 HU; skipping keeps the cost
                    // proportional to the streak area, not to pixels × streaks.
                    if across.abs() > 4.0 * sigma {
                        continue;
                    }
                    let beyond = if along < 0.0 {
                        -along
                    } else if along > len {
                        along - len
                    } else {
                        0.0
                    };
                    s += line.amplitude
                        * (-across * across / (2.0 * sigma * sigma)).exp()
                        * (-beyond / METAL_DECAY_MM).exp();
                }
                *v += s.clamp(-max, max) as f32;
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;

    fn grid(nx: usize, ny: usize, nz: usize, s: [f64; 3]) -> Grid {
        Grid {
            dims: [nx, ny, nz],
            spacing: s,
        }
    }

    #[test]
    fn gaussian_kernel_is_normalised_and_symmetric() {
        assert!(gaussian_kernel(0.1).is_none());
        let k = gaussian_kernel(1.5).unwrap();
        assert_eq!(k.len(), 2 * 5 + 1);
        assert!((k.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        for i in 0..k.len() / 2 {
            assert_eq!(k[i], k[k.len() - 1 - i]);
        }
        // Variance of the sampled kernel ≈ σ².
        let var: f32 = k
            .iter()
            .enumerate()
            .map(|(i, w)| w * (i as f32 - 5.0).powi(2))
            .sum();
        assert!((var - 2.25).abs() < 0.05, "{var}");
    }

    #[test]
    fn ssp_blurs_only_when_thicker_than_spacing() {
        assert!(ssp_kernel(1.25, 1.25).is_none());
        assert!(ssp_kernel(3.0, 3.3).is_none());
        // t = 5, s = 3: FWHM 5 mm = 1.67 slices, σ = 0.708 slices.
        let k = ssp_kernel(5.0, 3.0).unwrap();
        let c = k.len() / 2;
        let var: f32 = k
            .iter()
            .enumerate()
            .map(|(i, w)| w * (i as f32 - c as f32).powi(2))
            .sum();
        let want = (5.0 / FWHM_PER_SIGMA / 3.0).powi(2) as f32;
        assert!((var - want).abs() < 0.02, "{var} vs {want}");
        // A single bright slice spreads over its neighbours and keeps its integral.
        let g = grid(2, 2, 9, [1.0, 1.0, 3.0]);
        let mut src = vec![0.0f32; 36];
        src[4 * 4..5 * 4].fill(100.0);
        let out = convolve_z(&src, g, &k);
        assert!(out[4 * 4] < 100.0 && out[3 * 4] > 0.0 && out[5 * 4] > 0.0);
        let total: f32 = out.iter().sum();
        assert!((total - 400.0).abs() < 1e-3);
    }

    fn step_slice(nx: usize, ny: usize) -> Vec<f32> {
        (0..nx * ny)
            .map(|i| if i % nx < nx / 2 { 0.0 } else { 1000.0 })
            .collect()
    }

    #[test]
    fn smooth_kernel_blurs_and_sharp_kernel_overshoots() {
        let (nx, ny) = (40, 8);
        let g = grid(nx, ny, 1, [0.5, 0.5, 1.0]);
        let mut scratch = SliceScratch::new(nx * ny);
        let row = |s: &[f32], x: usize| s[4 * nx + x];

        let mut smooth = step_slice(nx, ny);
        ReconKernel::new(-1.0, g).apply(&mut smooth, g, &mut scratch);
        // The edge is spread over several pixels, values stay within the original range.
        assert!(row(&smooth, nx / 2 - 2) > 10.0 && row(&smooth, nx / 2 + 1) < 990.0);
        assert!(smooth.iter().all(|&v| (-1e-3..=1000.001).contains(&v)));

        let mut sharp = step_slice(nx, ny);
        ReconKernel::new(1.0, g).apply(&mut sharp, g, &mut scratch);
        let max = sharp.iter().copied().fold(f32::MIN, f32::max);
        let min = sharp.iter().copied().fold(f32::MAX, f32::min);
        assert!(max > 1050.0 && min < -50.0, "no overshoot: {min} {max}");
        // Far from the edge the image is unchanged.
        assert!((row(&sharp, 0)).abs() < 1e-3 && (row(&sharp, nx - 1) - 1000.0).abs() < 1e-3);

        let mut ident = step_slice(nx, ny);
        ReconKernel::new(0.0, g).apply(&mut ident, g, &mut scratch);
        assert_eq!(ident, step_slice(nx, ny));
    }

    fn sample_std(v: &[f32]) -> f64 {
        let n = v.len() as f64;
        let m = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
        (v.iter().map(|&x| (f64::from(x) - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
    }

    #[test]
    fn noise_field_has_requested_sigma_and_correlation() {
        let (nx, ny) = (256, 256);
        let g = grid(nx, ny, 1, [0.5, 0.5, 1.0]);
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut s = SliceScratch::new(nx * ny);
        for (sigma, corr_mm) in [(10.0, 0.0), (25.0, 2.0)] {
            let f = NoiseFilter::new(sigma, corr_mm, g);
            let mut out = vec![0.0; nx * ny];
            f.field(&mut out, &mut s.a, g, &mut rng);
            let sd = sample_std(&out);
            assert!((sd / sigma - 1.0).abs() < 0.05, "σ {sd} vs {sigma}");
            // Autocorrelation at lag = L along x is ≈ 1/e; white noise is uncorrelated at 1 px.
            let lag = if corr_mm > 0.0 {
                (corr_mm / 0.5) as usize
            } else {
                1
            };
            let mut acc = 0.0f64;
            let mut cnt = 0.0f64;
            for y in 0..ny {
                for x in 0..nx - lag {
                    acc += f64::from(out[y * nx + x]) * f64::from(out[y * nx + x + lag]);
                    cnt += 1.0;
                }
            }
            let rho = acc / cnt / (sd * sd);
            let want = if corr_mm > 0.0 { (-1.0f64).exp() } else { 0.0 };
            assert!((rho - want).abs() < 0.06, "ρ({lag}) = {rho}, want {want}");
        }
    }

    #[test]
    fn rician_noise_is_positive_in_background() {
        let (nx, ny) = (64, 64);
        let g = grid(nx, ny, 1, [1.0, 1.0, 1.0]);
        let f = NoiseFilter::new(20.0, 0.0, g);
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut s = SliceScratch::new(nx * ny);
        let mut slice = vec![0.0f32; nx * ny];
        f.apply_rician(&mut slice, g, &mut rng, &mut s);
        assert!(slice.iter().all(|&v| v >= 0.0));
        // Rayleigh mean σ√(π/2) ≈ 25.
        let mean = slice.iter().sum::<f32>() / slice.len() as f32;
        assert!((mean - 25.07).abs() < 2.0, "{mean}");
    }

    #[test]
    fn calibration_is_linear() {
        let mut s = vec![-1000.0, 0.0, 1000.0];
        calibrate(&mut s, 0.9, 20.0);
        assert_eq!(s, vec![-880.0, 20.0, 920.0]);
    }

    #[test]
    fn bias_field_is_smooth_and_bounded() {
        let g = grid(64, 48, 10, [1.0, 1.0, 1.0]);
        let b = BiasField::random(g, &mut ChaCha8Rng::seed_from_u64(3));
        let lim = (MR_BIAS_AMPLITUDE).exp() as f32 + 1e-4;
        for f in &b.factors {
            for w in f.windows(2) {
                assert!((w[1] / w[0] - 1.0).abs() < 0.05);
            }
            assert!(f.iter().all(|&v| v > 1.0 / lim && v < lim));
        }
        let mut slice = vec![100.0f32; 64 * 48];
        b.apply(&mut slice, g, 4);
        assert_eq!(
            slice[0],
            100.0 * b.factors[0][0] * b.factors[1][0] * b.factors[2][4]
        );
    }

    #[test]
    fn box_blur_keeps_constants_and_mean() {
        let (nx, ny) = (30, 20);
        let mut s = vec![2.0f32; nx * ny];
        let mut tmp = vec![0.0; nx * ny];
        box_blur_slice(&mut s, &mut tmp, nx, ny, 4, 3);
        assert!(s.iter().all(|&v| (v - 2.0).abs() < 1e-5));
        let mut d = vec![0.0f32; nx * ny];
        d[10 * nx + 15] = 63.0;
        box_blur_slice(&mut d, &mut tmp, nx, ny, 4, 3);
        assert!((d[10 * nx + 15] - 1.0).abs() < 1e-5);
        assert!((d[13 * nx + 19] - 1.0).abs() < 1e-5);
        assert_eq!(d[14 * nx + 15], 0.0);
    }

    /// A water disc of radius 40 px in an 100×100 slice.
    fn disc_slice(n: usize) -> (Vec<f32>, Vec<u8>) {
        let mut hu = vec![-1000.0f32; n * n];
        let mut t = vec![Tissue::Air as u8; n * n];
        for y in 0..n {
            for x in 0..n {
                let (dx, dy) = (x as f64 - 49.5, y as f64 - 49.5);
                if dx.hypot(dy) < 40.0 {
                    hu[y * n + x] = 0.0;
                    t[y * n + x] = Tissue::SoftTissue as u8;
                }
            }
        }
        (hu, t)
    }

    #[test]
    fn beam_hardening_cups_the_body_more_behind_bone() {
        let n = 100;
        let g = grid(n, n, 1, [1.0, 1.0, 1.0]);
        let (mut hu, t) = disc_slice(n);
        beam_hardening(&mut hu, &t, g, 40.0);
        let at = |v: &[f32], x: usize, y: usize| v[y * n + x];
        assert_eq!(at(&hu, 2, 2), -1000.0, "air must be unchanged");
        // Deepest at the centre (≈ −20 without bone), shallower towards the edge.
        assert!((at(&hu, 50, 50) + 20.0).abs() < 1.0, "{}", at(&hu, 50, 50));
        assert!(at(&hu, 50, 50) < at(&hu, 70, 50) && at(&hu, 70, 50) < at(&hu, 85, 50));
        assert!(at(&hu, 88, 50) > -3.0);

        let (mut hu2, mut t2) = disc_slice(n);
        for y in 40..60 {
            for x in 40..60 {
                t2[y * n + x] = Tissue::CorticalBone as u8;
            }
        }
        for v in &mut hu2 {
            *v = v.max(0.0);
        }
        let before = at(&hu2, 50, 50);
        beam_hardening(&mut hu2, &t2, g, 40.0);
        assert!(before - at(&hu2, 50, 50) > 35.0, "{}", at(&hu2, 50, 50));
    }

    #[test]
    fn metal_streaks_darken_between_screws_and_are_bounded() {
        let n = 120;
        let g = grid(n, n, 2, [0.5, 0.5, 1.0]);
        let (mut hu, mut t) = (
            vec![0.0f32; 2 * n * n],
            vec![Tissue::SoftTissue as u8; 2 * n * n],
        );
        // Two 8×8 px (16 mm²) screws in slice 0, none in slice 1.
        for (x0, y0) in [(30, 56), (82, 56)] {
            for y in y0..y0 + 8 {
                for x in x0..x0 + 8 {
                    t[y * n + x] = Tissue::Metal as u8;
                    hu[y * n + x] = METAL_HU;
                }
            }
        }
        let objects = metal_objects(&t[..n * n], n, n, 0.5, 0.5);
        assert_eq!(objects.len(), 2);
        metal_streaks(&mut hu, &t, g, 11);
        let mid = hu[60 * n + 60];
        assert!(mid < -150.0, "dark band between screws: {mid}");
        assert!(
            hu.iter()
                .all(|v| (-METAL_STREAK_MAX_HU..=METAL_HU).contains(v))
        );
        assert!(
            hu[n * n..].iter().all(|&v| v == 0.0),
            "slice without metal changed"
        );
        assert_eq!(hu[60 * n + 34], METAL_HU, "metal itself unchanged");
    }

    #[test]
    fn apply_rejects_mismatched_inputs() {
        let geo = Geometry::axis_aligned([1.0, 1.0, 1.0], [0.0; 3]);
        let hu = Volume::filled([4, 4, 2], 0.0f32, geo).unwrap();
        let t = Volume::filled([4, 4, 3], 0u8, geo).unwrap();
        let p = preset("ct-standard").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(apply_appearance(&hu, &t, &p, &mut rng).is_err());
        let bad_t = Volume::filled([4, 4, 2], 99u8, geo).unwrap();
        assert!(apply_appearance(&hu, &bad_t, &p, &mut rng).is_err());
        let mut nan = hu.clone();
        nan.data_mut()[3] = f32::NAN;
        let t2 = Volume::filled([4, 4, 2], 0u8, geo).unwrap();
        assert!(apply_appearance(&nan, &t2, &p, &mut rng).is_err());
    }
}
