//! Preprocessing to the model contract: the one code path of the trainer's evaluation and the
//! appliance's inference.
//!
//! 1. **Orientation**: voxel axes re-ordered to run +L, +P, +S ([`reorient_image_to_lps`]): exact
//!    (no interpolation) for axis-aligned series, whatever their acquisition plane; oblique
//!    series are resampled trilinearly onto an axis-aligned grid (air outside). The phantoms
//!    the models are trained on are LPS already, so this step is the identity for them.
//! 2. **Spacing**: trilinear resampling to the contract's isotropic spacing over the same
//!    extent ([`resample_image_to_spacing`], air −1000 HU outside).
//! 3. **Intensity**: HU clipped to the contract's window and scaled to [0, 1]
//!    ([`normalize_hu_volume`]); the contract's window must be the paper's ([−1000, 1000] HU),
//!    which is what core implements — another window is refused rather than silently ignored.
//!
//! Label maps take the same orientation and spacing steps with nearest-neighbour sampling.

use crate::contract::ModelContract;
use crate::volume::ops::{HU_MAX, HU_MIN, normalize_hu_volume};
use crate::volume::reorient::{ObliquePolicy, reorient_image_to_lps, reorient_labels_to_lps};
use crate::volume::resample::{resample_image_to_spacing, resample_labels_to_spacing};
use crate::{Error, Result, Volume};

/// Prepares a CT image in HU for a network of isotropic input spacing `spacing_mm` (see the
/// module docs).
///
/// # Errors
/// Geometry and resampling errors of core.
pub fn prepare_ct(image_hu: &Volume<f32>, spacing_mm: f64) -> Result<Volume<f32>> {
    let lps = reorient_image_to_lps(image_hu, ObliquePolicy::ResampleAxisAligned, HU_MIN)?;
    normalize_hu_volume(&resample_image_to_spacing(&lps, [spacing_mm; 3], HU_MIN)?)
}

/// Prepares a label map onto the grid [`prepare_ct`] gives for the image it belongs to.
///
/// # Errors
/// Geometry and resampling errors of core.
pub fn prepare_labels(labels: &Volume<u8>, spacing_mm: f64) -> Result<Volume<u8>> {
    let lps = reorient_labels_to_lps(labels, ObliquePolicy::ResampleAxisAligned, 0)?;
    resample_labels_to_spacing(&lps, [spacing_mm; 3], 0)
}

/// [`prepare_ct`] with a contract's spacing, after checking its HU window is core's.
///
/// # Errors
/// [`Error::InvalidArgument`] for another HU window; errors of [`prepare_ct`].
pub fn prepare_for_contract(
    image_hu: &Volume<f32>,
    contract: &ModelContract,
) -> Result<Volume<f32>> {
    if (contract.hu_min, contract.hu_max) != (HU_MIN, HU_MAX) {
        return Err(Error::InvalidArgument(format!(
            "the model contract's HU window [{}, {}] is not the one core implements \
             [{HU_MIN}, {HU_MAX}]",
            contract.hu_min, contract.hu_max
        )));
    }
    prepare_ct(image_hu, contract.spacing_mm)
}
