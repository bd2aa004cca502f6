//! Scanner "domains": named presets that change how a phantom *looks* (noise, resolution,
//! kernel, calibration, artefacts, modality) but never its anatomy.
//!
//! (Contract fixed by the lead; the domain engineer fills in presets and the appearance model.)

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
