//! Matching predicted lesions to ground-truth lesions within one case.
//!
//! A lesion is an axis-aligned box in patient space (LPS, mm) with a [`LesionClass`]; a
//! prediction also has a confidence score. The paper: "Hungarian assignment with 3D IoU ≥ 0.3
//! and centre distance ≤ 5 mm". Precisely:
//!
//! 1. A prediction `p` and a ground-truth lesion `g` are a **candidate pair** iff they have the
//!    same class, `IoU(p, g) ≥ min_iou` (0.3) **and** `‖centre(p) − centre(g)‖₂ ≤
//!    max_centre_distance_mm` (5 mm). Both comparisons are inclusive.
//! 2. Among candidate pairs, a one-to-one matching is chosen by the Hungarian algorithm
//!    ([`super::linear_sum_assignment`]) on the cost matrix
//!    `cost(p, g) = 1 − IoU(p, g)` for candidates and `cost = M = min(#pred, #gt) + 1` for
//!    non-candidates, pairs of cost `M` being discarded afterwards. A complete assignment has
//!    `r = min(#pred, #gt)` pairs and candidate costs are ≤ 1, so one with `k + 1` candidate
//!    pairs costs at most `(k + 1) + M (r − k − 1) < M (r − k)`, less than any with `k`: the
//!    matching **maximises the number of matched pairs first, then the total IoU** among
//!    maximum matchings. (Maximising IoU alone could leave a lesion unmatched so that its
//!    neighbour gets a slightly better box, turning a TP into an FN and an FP; no detection
//!    benchmark wants that.) Classes never match each other, so each class
//!    is solved separately, which gives the same optimum.
//! 3. Matched predictions are **true positives**, unmatched predictions **false positives**,
//!    unmatched ground-truth lesions **false negatives**. Scores play no role in matching;
//!    they only rank the predictions for AP and FROC ([`super::detection`]).
//!
//! The optimal number of matches and total IoU are unique; when two matchings tie exactly,
//! which one is reported is unspecified (it is deterministic).

use super::linear_sum_assignment;
use crate::anatomy::LesionClass;
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// An axis-aligned box in patient space.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LesionBox {
    /// Box centre, LPS world coordinates, mm.
    pub centre_mm: [f64; 3],
    /// Full extent along L, P and S in mm (not half-sizes). Finite and > 0.
    pub size_mm: [f64; 3],
}

impl LesionBox {
    /// Checks that the centre is finite and the extents finite and positive.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] naming the offending values.
    pub fn validate(&self) -> Result<()> {
        if self.centre_mm.iter().any(|c| !c.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "lesion centre {:?} is not finite",
                self.centre_mm
            )));
        }
        if self.size_mm.iter().any(|s| !s.is_finite() || *s <= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "lesion size {:?} must be finite and positive along every axis",
                self.size_mm
            )));
        }
        Ok(())
    }

    /// Volume in mm³.
    pub fn volume_mm3(&self) -> f64 {
        self.size_mm[0] * self.size_mm[1] * self.size_mm[2]
    }

    /// Intersection over union of the two boxes' volumes, in [0, 1].
    pub fn iou(&self, other: &LesionBox) -> f64 {
        let mut inter = 1.0;
        for k in 0..3 {
            let lo = (self.centre_mm[k] - self.size_mm[k] / 2.0)
                .max(other.centre_mm[k] - other.size_mm[k] / 2.0);
            let hi = (self.centre_mm[k] + self.size_mm[k] / 2.0)
                .min(other.centre_mm[k] + other.size_mm[k] / 2.0);
            inter *= (hi - lo).max(0.0);
        }
        let union = self.volume_mm3() + other.volume_mm3() - inter;
        if union > 0.0 { inter / union } else { 0.0 }
    }

    /// Euclidean distance between the centres, mm.
    pub fn centre_distance_mm(&self, other: &LesionBox) -> f64 {
        let d: [f64; 3] = std::array::from_fn(|k| self.centre_mm[k] - other.centre_mm[k]);
        (d[0] * d[0] + d[1] * d[1] + d[2] * d[2]).sqrt()
    }
}

/// A lesion predicted by the lesion head.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PredictedLesion {
    /// Lesion class.
    pub class: LesionClass,
    /// Box in patient space.
    pub bbox: LesionBox,
    /// Confidence; higher means more confident. Finite.
    pub score: f64,
}

/// A ground-truth lesion.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TruthLesion {
    /// Lesion class.
    pub class: LesionClass,
    /// Box in patient space.
    pub bbox: LesionBox,
}

/// When a prediction may match a ground-truth lesion. [`Default`] is the paper's protocol.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MatchCriteria {
    /// Minimum 3-D IoU of the boxes (inclusive), in [0, 1]. Paper: 0.3.
    pub min_iou: f64,
    /// Maximum centre distance in mm (inclusive), finite and ≥ 0. Paper: 5 mm.
    pub max_centre_distance_mm: f64,
}

impl Default for MatchCriteria {
    fn default() -> Self {
        MatchCriteria {
            min_iou: 0.3,
            max_centre_distance_mm: 5.0,
        }
    }
}

impl MatchCriteria {
    /// Checks the ranges documented on the fields.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for a value out of range.
    pub fn validate(&self) -> Result<()> {
        if !(0.0..=1.0).contains(&self.min_iou) {
            return Err(Error::InvalidArgument(format!(
                "minimum IoU {} is outside [0, 1]",
                self.min_iou
            )));
        }
        if !self.max_centre_distance_mm.is_finite() || self.max_centre_distance_mm < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "maximum centre distance {} mm must be finite and non-negative",
                self.max_centre_distance_mm
            )));
        }
        Ok(())
    }
}

/// A matched (true-positive) pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LesionPair {
    /// Index into the predictions.
    pub prediction: usize,
    /// Index into the ground truth.
    pub truth: usize,
    /// IoU of the two boxes.
    pub iou: f64,
    /// Distance between the box centres, mm.
    pub centre_distance_mm: f64,
}

/// The matching of one case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LesionMatching {
    /// True positives, sorted by prediction index.
    pub pairs: Vec<LesionPair>,
    /// Indices of unmatched predictions (false positives), increasing.
    pub false_positives: Vec<usize>,
    /// Indices of unmatched ground-truth lesions (false negatives), increasing.
    pub false_negatives: Vec<usize>,
}

impl LesionMatching {
    /// Number of true positives.
    pub fn true_positive_count(&self) -> usize {
        self.pairs.len()
    }

    /// The ground-truth index matched to prediction `i`, if any.
    pub fn truth_for_prediction(&self, i: usize) -> Option<usize> {
        self.pairs
            .iter()
            .find(|p| p.prediction == i)
            .map(|p| p.truth)
    }
}

/// Validates predictions (boxes, finite scores) and ground truth of one case.
pub(crate) fn validate_case(predictions: &[PredictedLesion], truths: &[TruthLesion]) -> Result<()> {
    for (i, p) in predictions.iter().enumerate() {
        p.bbox
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("prediction {i}: {e}")))?;
        if !p.score.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "prediction {i} has score {}; scores must be finite to be ranked",
                p.score
            )));
        }
    }
    for (i, t) in truths.iter().enumerate() {
        t.bbox
            .validate()
            .map_err(|e| Error::InvalidArgument(format!("ground-truth lesion {i}: {e}")))?;
    }
    Ok(())
}

/// Matches the predictions of one case to its ground truth (see the module doc).
///
/// # Errors
///
/// Invalid criteria, a non-finite centre or score, a non-positive size.
pub fn match_lesions(
    predictions: &[PredictedLesion],
    truths: &[TruthLesion],
    criteria: &MatchCriteria,
) -> Result<LesionMatching> {
    criteria.validate()?;
    validate_case(predictions, truths)?;

    let mut pairs = Vec::new();
    for class in crate::anatomy::ALL_LESION_CLASSES {
        let pi: Vec<usize> = (0..predictions.len())
            .filter(|&i| predictions[i].class == class)
            .collect();
        let ti: Vec<usize> = (0..truths.len())
            .filter(|&j| truths[j].class == class)
            .collect();
        if pi.is_empty() || ti.is_empty() {
            continue;
        }
        let (rows, cols) = (pi.len(), ti.len());
        let forbidden = rows.min(cols) as f64 + 1.0;
        let mut cost = vec![forbidden; rows * cols];
        let mut candidate = vec![None; rows * cols];
        for (r, &i) in pi.iter().enumerate() {
            for (c, &j) in ti.iter().enumerate() {
                let (a, b) = (&predictions[i].bbox, &truths[j].bbox);
                let iou = a.iou(b);
                let dist = a.centre_distance_mm(b);
                if iou >= criteria.min_iou && dist <= criteria.max_centre_distance_mm {
                    cost[r * cols + c] = 1.0 - iou;
                    candidate[r * cols + c] = Some((iou, dist));
                }
            }
        }
        let assignment = linear_sum_assignment(&cost, rows, cols)?;
        for (r, c) in assignment.pairs {
            if let Some((iou, centre_distance_mm)) = candidate[r * cols + c] {
                pairs.push(LesionPair {
                    prediction: pi[r],
                    truth: ti[c],
                    iou,
                    centre_distance_mm,
                });
            }
        }
    }
    pairs.sort_by_key(|p| p.prediction);

    let mut pred_matched = vec![false; predictions.len()];
    let mut truth_matched = vec![false; truths.len()];
    for p in &pairs {
        pred_matched[p.prediction] = true;
        truth_matched[p.truth] = true;
    }
    let unmatched = |m: &[bool]| (0..m.len()).filter(|&i| !m[i]).collect::<Vec<_>>();
    Ok(LesionMatching {
        false_positives: unmatched(&pred_matched),
        false_negatives: unmatched(&truth_matched),
        pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use LesionClass::{Fracture, LyticMetastasis};

    fn bx(c: [f64; 3], s: f64) -> LesionBox {
        LesionBox {
            centre_mm: c,
            size_mm: [s; 3],
        }
    }
    fn pred(class: LesionClass, c: [f64; 3], s: f64) -> PredictedLesion {
        PredictedLesion {
            class,
            bbox: bx(c, s),
            score: 0.5,
        }
    }
    fn gt(class: LesionClass, c: [f64; 3], s: f64) -> TruthLesion {
        TruthLesion {
            class,
            bbox: bx(c, s),
        }
    }

    #[test]
    fn iou_of_boxes() {
        let a = bx([0.0; 3], 2.0);
        assert_eq!(a.iou(&a), 1.0);
        // Shifted by 1 along x: intersection 1·2·2 = 4, union 8 + 8 − 4 = 12.
        assert!((a.iou(&bx([1.0, 0.0, 0.0], 2.0)) - 1.0 / 3.0).abs() < 1e-15);
        assert_eq!(a.iou(&bx([2.0, 0.0, 0.0], 2.0)), 0.0);
        // Nested: 1 / 8.
        assert_eq!(a.iou(&bx([0.0; 3], 1.0)), 0.125);
    }

    #[test]
    fn gates_are_class_iou_and_distance() {
        let truths = [gt(Fracture, [0.0; 3], 10.0)];
        let c = MatchCriteria::default();
        // Same box, other class.
        let m = match_lesions(&[pred(LyticMetastasis, [0.0; 3], 10.0)], &truths, &c).unwrap();
        assert_eq!(
            (
                m.pairs.len(),
                m.false_positives.len(),
                m.false_negatives.len()
            ),
            (0, 1, 1)
        );
        // Big box: IoU 1/8 < 0.3 although the centres coincide.
        let m = match_lesions(&[pred(Fracture, [0.0; 3], 20.0)], &truths, &c).unwrap();
        assert!(m.pairs.is_empty());
        // Centre 6 mm away: IoU 0.25 and distance > 5 mm.
        let m = match_lesions(&[pred(Fracture, [6.0, 0.0, 0.0], 10.0)], &truths, &c).unwrap();
        assert!(m.pairs.is_empty());
        // Large boxes 5.5 mm apart: IoU high but distance > 5 mm.
        let big = [gt(Fracture, [0.0; 3], 40.0)];
        let m = match_lesions(&[pred(Fracture, [5.5, 0.0, 0.0], 40.0)], &big, &c).unwrap();
        assert!(m.pairs.is_empty());
        let m = match_lesions(&[pred(Fracture, [5.0, 0.0, 0.0], 40.0)], &big, &c).unwrap();
        assert_eq!(m.pairs.len(), 1);
        assert_eq!(m.pairs[0].centre_distance_mm, 5.0);
    }

    #[test]
    fn maximises_matches_before_iou() {
        // Prediction 0 fits GT 0 best (IoU 9.5/10.5 ≈ 0.905) but also GT 1 (5.2/14.8 ≈ 0.351);
        // prediction 1 fits only GT 0 (≈ 0.351). Maximising total IoU alone would match 0–0
        // (0.905 > 0.703) and leave one FP and one FN; we match 0–1 and 1–0.
        let truths = [
            gt(Fracture, [0.0; 3], 10.0),
            gt(Fracture, [5.3, 0.0, 0.0], 10.0),
        ];
        let preds = [
            pred(Fracture, [0.5, 0.0, 0.0], 10.0),
            pred(Fracture, [-4.8, 0.0, 0.0], 10.0),
        ];
        let m = match_lesions(&preds, &truths, &MatchCriteria::default()).unwrap();
        let got: Vec<(usize, usize)> = m.pairs.iter().map(|p| (p.prediction, p.truth)).collect();
        assert_eq!(got, vec![(0, 1), (1, 0)]);
        assert!(m.false_positives.is_empty() && m.false_negatives.is_empty());
        assert_eq!(m.truth_for_prediction(1), Some(0));
    }

    #[test]
    fn invalid_input_is_an_error() {
        let c = MatchCriteria::default();
        let mut p = pred(Fracture, [0.0; 3], 1.0);
        p.score = f64::NAN;
        assert!(match_lesions(&[p], &[], &c).is_err());
        let mut p = pred(Fracture, [0.0; 3], 1.0);
        p.bbox.size_mm[1] = 0.0;
        assert!(match_lesions(&[p], &[], &c).is_err());
        let mut t = gt(Fracture, [0.0; 3], 1.0);
        t.bbox.centre_mm[2] = f64::INFINITY;
        assert!(match_lesions(&[], &[t], &c).is_err());
        let bad = MatchCriteria { min_iou: 1.5, ..c };
        assert!(match_lesions(&[], &[], &bad).is_err());
        let m = match_lesions(&[], &[], &c).unwrap();
        assert!(m.pairs.is_empty() && m.false_positives.is_empty());
    }
}
