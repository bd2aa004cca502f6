//! The paper's evaluation metrics, defined precisely (the paper is not).
//!
//! | metric | where | definition in one line |
//! |---|---|---|
//! | Dice per vertebra, mean Dice | [`dice`] | `2·#(P∩G) / (#P + #G)` per label 1..=25; mean over labels present in P or G |
//! | ID accuracy (paper) | [`identification`] | GT vertebrae whose largest-overlap predicted label is their own / all GT vertebrae |
//! | VerSe identification rate, localisation distance | [`identification`] | VerSe 2019/2020 challenge `id.rate` (20 mm, nearest landmark) and `d_mean` |
//! | linear assignment | [`assignment`] | scipy's `linear_sum_assignment` (Crouse's JV variant) |
//! | lesion matching | [`lesions`] | same class, box IoU ≥ 0.3, centres ≤ 5 mm, Hungarian maximising matches then IoU |
//! | precision, recall, AP, macro AP, Sens@1FP/4FP | [`detection`] | scikit-learn `average_precision_score` with recall over *all* GT lesions; FROC at a real threshold |
//!
//! Every function validates its input and returns [`crate::Error`] for inconsistent input
//! (different grids, NaN scores, label values outside 0..=25, ...). Quantities that are
//! mathematically undefined for valid input (a mean over nothing, a recall without ground
//! truth) are `None` — serialised as JSON `null` — never a made-up number, so that aggregation
//! across cases cannot silently include them.
//!
//! Results are plain structs deriving `serde::Serialize`; the trainer writes them to JSON as
//! they are. Confidence intervals and significance tests live in [`crate::stats`].

pub mod assignment;
pub mod detection;
pub mod dice;
pub mod identification;
pub mod lesions;

pub use assignment::{Assignment, linear_sum_assignment};
pub use detection::{
    ClassDetectionSummary, DetectionSummary, LesionCase, LesionEvaluation, OperatingPoint,
    ScoredDetection, average_precision, evaluate_lesions, froc_sensitivity, operating_points,
};
pub use dice::{LabelDice, MultiLabelDice, binary_dice, binary_dice_slices, label_dice};
pub use identification::{
    IdentificationAccuracy, LabeledCentroid, VERSE_ID_DISTANCE_MM, VerseIdentification,
    VerseVertebraOutcome, VertebraIdentification, identification_accuracy, label_centroids,
    verse_identification,
};
pub use lesions::{
    LesionBox, LesionMatching, LesionPair, MatchCriteria, PredictedLesion, TruthLesion,
    match_lesions,
};

use crate::{Error, Result, Volume};

/// Largest label value in a vertebra label map (L6 = 25); 0 is background.
pub const MAX_LABEL: u8 = crate::anatomy::NUM_VERTEBRAE as u8;

/// Tolerance in mm when comparing the spacing and origin of two grids. Files store geometry in
/// `float32` (NIfTI) or decimal strings (DICOM), so the same grid written by two tools differs
/// by ~1e-5 mm; a real grid mismatch is at least a fraction of a voxel.
pub const GRID_TOLERANCE_MM: f64 = 1e-3;

/// Tolerance on direction cosines when comparing two grids (the same as
/// [`crate::Geometry::validate`] allows for orthonormality).
pub const DIRECTION_TOLERANCE: f64 = 1e-4;

/// Fails unless `a` and `b` have the same dimensions and the same geometry (within
/// [`GRID_TOLERANCE_MM`] / [`DIRECTION_TOLERANCE`]). A voxel-wise comparison of volumes on
/// different grids would be meaningless, and resampling is the caller's decision.
///
/// # Errors
///
/// [`Error::Geometry`] describing the mismatch.
pub fn check_same_grid<T, U>(a: &Volume<T>, b: &Volume<U>) -> Result<()> {
    if a.dims() != b.dims() {
        return Err(Error::Geometry(format!(
            "prediction has dimensions {:?} but ground truth has {:?}; resample one onto the \
             other's grid first",
            a.dims(),
            b.dims()
        )));
    }
    let (ga, gb) = (a.geometry(), b.geometry());
    let close =
        |x: &[f64; 3], y: &[f64; 3], tol: f64| x.iter().zip(y).all(|(p, q)| (p - q).abs() <= tol);
    let same = close(&ga.spacing, &gb.spacing, GRID_TOLERANCE_MM)
        && close(&ga.origin, &gb.origin, GRID_TOLERANCE_MM)
        && (0..3).all(|i| close(&ga.direction[i], &gb.direction[i], DIRECTION_TOLERANCE));
    if !same {
        return Err(Error::Geometry(format!(
            "prediction and ground truth have the same dimensions but different geometry \
             ({ga:?} vs {gb:?})"
        )));
    }
    Ok(())
}

/// Fails if a label value exceeds [`MAX_LABEL`]; `what` names the volume in the message.
pub(crate) fn check_labels(labels: &[u8], what: &str) -> Result<()> {
    if let Some(&bad) = labels.iter().find(|&&l| l > MAX_LABEL) {
        return Err(Error::InvalidArgument(format!(
            "{what} contains label {bad}; vertebra label maps use 0 (background) and 1..={MAX_LABEL}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;

    fn vol(dims: [usize; 3], g: Geometry) -> Volume<u8> {
        Volume::filled(dims, 0, g).unwrap()
    }

    #[test]
    fn grids_must_match() {
        let g = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.0, 0.0, 0.0]);
        let a = vol([2, 3, 4], g);
        assert!(check_same_grid(&a, &vol([2, 3, 4], g)).is_ok());
        let nearly = Geometry::axis_aligned([1.0, 1.0, 2.0 + 1e-5], [1e-5, 0.0, 0.0]);
        assert!(check_same_grid(&a, &vol([2, 3, 4], nearly)).is_ok());
        assert!(check_same_grid(&a, &vol([3, 2, 4], g)).is_err());
        let shifted = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.5, 0.0, 0.0]);
        assert!(check_same_grid(&a, &vol([2, 3, 4], shifted)).is_err());
        let mut flipped = g;
        flipped.direction[0] = [-1.0, 0.0, 0.0];
        assert!(check_same_grid(&a, &vol([2, 3, 4], flipped)).is_err());
    }

    #[test]
    fn labels_above_l6_are_rejected() {
        assert!(check_labels(&[0, 1, 25], "x").is_ok());
        let err = check_labels(&[0, 28], "ground truth").unwrap_err();
        assert!(err.to_string().contains("label 28"), "{err}");
    }
}
