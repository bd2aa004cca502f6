//! Dice similarity coefficient for binary masks and vertebra label maps.
//!
//! For a prediction `P` and ground truth `G` (sets of voxels),
//! `Dice = 2 |P ∩ G| / (|P| + |G|)`, computed from exact integer voxel counts.
//!
//! Conventions (the paper does not state them):
//!
//! - **Both empty** (`|P| + |G| = 0`): Dice is **1.0**. Predicting nothing where there is
//!   nothing is a perfect answer, and `1.0` is what the VerSe reference code
//!   (`compute_dice(..., empty_score=1.0)`) and MONAI (`ignore_empty=False`) return. The
//!   multi-label mean never sees this case, because it excludes labels absent from both.
//! - **Multi-label maps** (`u8`, 0 = background, 1..=25 = C1..L6): Dice is computed per
//!   vertebra label `l` with `P = {pred == l}`, `G = {truth == l}`. Background is never a
//!   label of its own. The **mean Dice** of a case is the unweighted mean over the labels
//!   present in the prediction *or* the ground truth:
//!   - a label in neither is excluded (it carries no information about this case);
//!   - a label in only one of them has Dice 0 and is included (a missed or hallucinated
//!     vertebra must cost something);
//!   - a case where neither map has any foreground has no mean (`None`).
//! - **Foreground Dice**: the binary Dice of `pred > 0` vs `truth > 0`, i.e. segmentation
//!   quality regardless of identification; both-empty gives 1.0 as above.
//!
//! The paper's reported "Dice" is the mean over cases of the per-case mean Dice; the averaging
//! across cases (and its bootstrap CI) is the caller's, see [`crate::stats`].

use super::{MAX_LABEL, check_labels, check_same_grid};
use crate::{Error, Result, Volume};
use serde::Serialize;

/// Dice of one vertebra label, with the voxel counts it was computed from.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LabelDice {
    /// Label value 1..=25.
    pub label: u8,
    /// `2 overlap / (predicted + truth)`; 0 when the label is in only one of the maps.
    pub dice: f64,
    /// Voxels with this label in the prediction.
    pub predicted_voxels: u64,
    /// Voxels with this label in the ground truth.
    pub truth_voxels: u64,
    /// Voxels with this label in both.
    pub overlap_voxels: u64,
}

/// Dice of a predicted vertebra label map against the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MultiLabelDice {
    /// One entry per label present in the prediction or the ground truth, in label order.
    pub per_label: Vec<LabelDice>,
    /// Unweighted mean of `per_label[..].dice`; `None` when neither map has foreground.
    pub mean: Option<f64>,
    /// Binary Dice of all foreground (`> 0`) voxels; 1.0 when neither map has foreground.
    pub foreground: f64,
}

/// Dice from counts, with the both-empty convention of this module.
fn dice_from_counts(predicted: u64, truth: u64, overlap: u64) -> f64 {
    let sum = predicted + truth;
    if sum == 0 {
        1.0
    } else {
        2.0 * overlap as f64 / sum as f64
    }
}

/// Binary Dice of two masks on the same grid (see the module doc; both empty → 1.0).
///
/// # Errors
///
/// Different dimensions or geometry.
pub fn binary_dice(pred: &Volume<bool>, truth: &Volume<bool>) -> Result<f64> {
    check_same_grid(pred, truth)?;
    binary_dice_slices(pred.data(), truth.data())
}

/// Binary Dice of two masks given as flat slices of the same length, for callers that hold
/// raw buffers (e.g. model outputs) rather than [`Volume`]s.
///
/// # Errors
///
/// Different lengths, or zero voxels (an empty image is a caller bug, not "no
/// foreground").
pub fn binary_dice_slices(pred: &[bool], truth: &[bool]) -> Result<f64> {
    if pred.len() != truth.len() {
        return Err(Error::InvalidArgument(format!(
            "masks have {} and {} voxels",
            pred.len(),
            truth.len()
        )));
    }
    if pred.is_empty() {
        return Err(Error::InvalidArgument("masks have no voxels".into()));
    }
    let (mut p, mut g, mut both) = (0u64, 0u64, 0u64);
    for (&a, &b) in pred.iter().zip(truth) {
        p += u64::from(a);
        g += u64::from(b);
        both += u64::from(a && b);
    }
    Ok(dice_from_counts(p, g, both))
}

/// Per-label and mean Dice of a vertebra label map (see the module doc for the conventions).
///
/// # Errors
///
/// Different dimensions or geometry; a label value above 25.
///
/// ```
/// use vertebra_core::{Geometry, Volume, metrics::label_dice};
/// let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
/// let truth = Volume::from_vec([4, 1, 1], vec![0, 1, 1, 2], g).unwrap();
/// let pred = Volume::from_vec([4, 1, 1], vec![0, 1, 2, 2], g).unwrap();
/// let d = label_dice(&pred, &truth).unwrap();
/// // L1: 2·1/(1+2) = 2/3, L2: 2·1/(2+1) = 2/3.
/// assert!((d.mean.unwrap() - 2.0 / 3.0).abs() < 1e-15);
/// assert_eq!(d.foreground, 1.0);
/// ```
pub fn label_dice(pred: &Volume<u8>, truth: &Volume<u8>) -> Result<MultiLabelDice> {
    const N: usize = MAX_LABEL as usize + 1;
    check_same_grid(pred, truth)?;
    check_labels(pred.data(), "prediction")?;
    check_labels(truth.data(), "ground truth")?;

    let mut predicted = [0u64; N];
    let mut truth_counts = [0u64; N];
    let mut overlap = [0u64; N];
    for (&p, &t) in pred.data().iter().zip(truth.data()) {
        predicted[p as usize] += 1;
        truth_counts[t as usize] += 1;
        if p == t {
            overlap[p as usize] += 1;
        }
    }

    let per_label: Vec<LabelDice> = (1..=MAX_LABEL)
        .filter(|&l| predicted[l as usize] + truth_counts[l as usize] > 0)
        .map(|l| {
            let i = l as usize;
            LabelDice {
                label: l,
                dice: dice_from_counts(predicted[i], truth_counts[i], overlap[i]),
                predicted_voxels: predicted[i],
                truth_voxels: truth_counts[i],
                overlap_voxels: overlap[i],
            }
        })
        .collect();
    let mean = (!per_label.is_empty())
        .then(|| per_label.iter().map(|d| d.dice).sum::<f64>() / per_label.len() as f64);

    let n = pred.len() as u64;
    let fg_pred = n - predicted[0];
    let fg_truth = n - truth_counts[0];
    let fg_both = pred
        .data()
        .iter()
        .zip(truth.data())
        .filter(|&(&p, &t)| p > 0 && t > 0)
        .count() as u64;
    Ok(MultiLabelDice {
        per_label,
        mean,
        foreground: dice_from_counts(fg_pred, fg_truth, fg_both),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Geometry;

    fn labels(data: Vec<u8>) -> Volume<u8> {
        let n = data.len();
        Volume::from_vec([n, 1, 1], data, Geometry::axis_aligned([1.0; 3], [0.0; 3])).unwrap()
    }

    #[test]
    fn binary_conventions() {
        assert_eq!(
            binary_dice_slices(&[false, false], &[false, false]).unwrap(),
            1.0
        );
        assert_eq!(
            binary_dice_slices(&[true, false], &[false, false]).unwrap(),
            0.0
        );
        assert_eq!(
            binary_dice_slices(&[true, true], &[true, false]).unwrap(),
            2.0 / 3.0
        );
        assert!(binary_dice_slices(&[], &[]).is_err());
        assert!(binary_dice_slices(&[true], &[true, false]).is_err());
    }

    #[test]
    fn absent_labels_are_excluded_and_one_sided_labels_score_zero() {
        // Label 3 only predicted, label 5 only in truth, label 1 perfect, others absent.
        let d = label_dice(&labels(vec![1, 1, 3, 0, 0]), &labels(vec![1, 1, 0, 5, 0])).unwrap();
        let got: Vec<(u8, f64)> = d.per_label.iter().map(|l| (l.label, l.dice)).collect();
        assert_eq!(got, vec![(1, 1.0), (3, 0.0), (5, 0.0)]);
        assert_eq!(d.mean, Some(1.0 / 3.0));
        // Foreground: pred {0,1,2}, truth {0,1,3} → 2·2/6.
        assert_eq!(d.foreground, 2.0 / 3.0);
    }

    #[test]
    fn no_foreground_anywhere_has_no_mean() {
        let d = label_dice(&labels(vec![0, 0]), &labels(vec![0, 0])).unwrap();
        assert!(d.per_label.is_empty());
        assert_eq!(d.mean, None);
        assert_eq!(d.foreground, 1.0);
    }

    #[test]
    fn bad_input_is_an_error() {
        assert!(label_dice(&labels(vec![0, 1]), &labels(vec![0, 1, 2])).is_err());
        assert!(label_dice(&labels(vec![0, 26]), &labels(vec![0, 1])).is_err());
        assert!(label_dice(&labels(vec![0, 1]), &labels(vec![255, 1])).is_err());
    }
}
