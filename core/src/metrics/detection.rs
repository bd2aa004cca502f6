//! Lesion detection metrics over a test set: precision, recall, average precision (per class,
//! pooled, macro-averaged) and FROC sensitivities at 1 and 4 false positives per image.
//!
//! Every prediction of every case is first labelled TP or FP by [`super::match_lesions`];
//! from then on a detection is just `(score, is TP)`, and the number of positives is the number
//! of ground-truth lesions, including those no prediction matched.
//!
//! # Operating points
//!
//! Thresholds are the distinct prediction scores. At threshold `t` every prediction with
//! `score ≥ t` is kept: `TP(t)`, `FP(t)` count them, `P(t) = TP / (TP + FP)`,
//! `R(t) = TP / #GT`. Predictions with equal scores always enter together (no threshold can
//! separate them), exactly as in scikit-learn's `precision_recall_curve`.
//!
//! # Average precision
//!
//! `AP = Σ_k (R_k − R_{k−1}) · P_k` over the operating points in decreasing threshold order,
//! with `R_0 = 0` — the step-wise area under the PR curve without interpolation, which is
//! scikit-learn's `average_precision_score` definition. The one difference is the recall
//! denominator: scikit-learn only sees scored items, so its recall is relative to the TPs
//! among the predictions, whereas detection recall counts missed ground truth too. Since
//! every `R_k` is scaled by the same factor, `AP = AP_sklearn(TP flags, scores) · TP_total /
//! #GT` exactly; the test fixtures are generated that way. Appending missed lesions with score
//! `−∞` would *not* be equivalent (scikit-learn would add a final operating point that reaches
//! full recall at low precision and credit it with area). Consequences: AP ≤ recall; no
//! predictions and ≥ 1 ground-truth lesion gives AP = 0; no ground-truth lesion gives `None`
//! (undefined, whatever was predicted).
//!
//! **Per-class AP** ranks that class's predictions against that class's ground truth. **Macro
//! AP** is the unweighted mean of per-class AP over the classes with at least one ground-truth
//! lesion in the test set (a class without ground truth has no AP; its predictions still count
//! as FPs in its own summary); `None` if no class has ground truth. **Pooled AP** ranks all
//! predictions of all classes together against all ground truth (matching is class-aware
//! either way). The paper's "lesion AP" is the macro AP.
//!
//! # FROC sensitivities
//!
//! With `N` images (cases), the FROC curve is `(FP(t) / N, R(t))` over the operating points,
//! plus the point `(0, 0)` of a threshold above every score. **Sens@kFP** is the sensitivity
//! of the lowest threshold whose average number of false positives per image is at most `k`
//! (evaluated as `FP(t) ≤ k · N`), i.e. the largest sensitivity actually attainable by one
//! threshold under that FP budget. No interpolation between operating points: a number we
//! report must be reachable by a threshold we could ship. (LUNA16-style linear interpolation
//! gives slightly higher values when the budget falls between two points.) `None` when there
//! is no ground-truth lesion.

use super::lesions::{
    LesionMatching, MatchCriteria, PredictedLesion, TruthLesion, match_lesions, validate_case,
};
use crate::anatomy::{ALL_LESION_CLASSES, LesionClass};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A prediction reduced to what ranking metrics need.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ScoredDetection {
    /// Confidence; must be finite.
    pub score: f64,
    /// Whether matching made it a true positive.
    pub true_positive: bool,
}

/// Cumulative counts at one score threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OperatingPoint {
    /// Predictions with `score ≥ threshold` are kept.
    pub threshold: f64,
    /// Kept true positives.
    pub true_positives: usize,
    /// Kept false positives.
    pub false_positives: usize,
}

/// The operating points at every distinct score, in decreasing threshold order (module doc).
///
/// # Errors
///
/// A non-finite score.
pub fn operating_points(detections: &[ScoredDetection]) -> Result<Vec<OperatingPoint>> {
    if let Some(d) = detections.iter().find(|d| !d.score.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "detection score {} is not finite; it cannot be ranked",
            d.score
        )));
    }
    let mut sorted = detections.to_vec();
    sorted.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut points: Vec<OperatingPoint> = Vec::new();
    let (mut tp, mut fp) = (0, 0);
    for (i, d) in sorted.iter().enumerate() {
        if d.true_positive {
            tp += 1;
        } else {
            fp += 1;
        }
        let last_of_tie = sorted.get(i + 1).is_none_or(|n| n.score != d.score);
        if last_of_tie {
            points.push(OperatingPoint {
                threshold: d.score,
                true_positives: tp,
                false_positives: fp,
            });
        }
    }
    Ok(points)
}

/// Checks that the detections cannot have found more lesions than exist.
fn check_tp_count(detections: &[ScoredDetection], num_truths: usize) -> Result<()> {
    let tp = detections.iter().filter(|d| d.true_positive).count();
    if tp > num_truths {
        return Err(Error::InvalidArgument(format!(
            "{tp} true positives but only {num_truths} ground-truth lesions"
        )));
    }
    Ok(())
}

/// Average precision of `detections` against `num_truths` ground-truth lesions (module doc);
/// `None` when `num_truths == 0`.
///
/// # Errors
///
/// A non-finite score; more true positives than ground-truth lesions.
///
/// ```
/// use vertebra_core::metrics::{ScoredDetection, average_precision};
/// let d = |score, true_positive| ScoredDetection { score, true_positive };
/// // Ranked TP, FP, TP against 4 lesions: 0.25·1 + 0.25·(2/3).
/// let ap = average_precision(&[d(0.9, true), d(0.8, false), d(0.7, true)], 4).unwrap();
/// assert!((ap.unwrap() - (0.25 + 0.25 * 2.0 / 3.0)).abs() < 1e-15);
/// ```
pub fn average_precision(detections: &[ScoredDetection], num_truths: usize) -> Result<Option<f64>> {
    let points = operating_points(detections)?;
    check_tp_count(detections, num_truths)?;
    if num_truths == 0 {
        return Ok(None);
    }
    let n = num_truths as f64;
    let mut ap = 0.0;
    let mut prev_recall = 0.0;
    for p in &points {
        let recall = p.true_positives as f64 / n;
        let precision = p.true_positives as f64 / (p.true_positives + p.false_positives) as f64;
        ap += (recall - prev_recall) * precision;
        prev_recall = recall;
    }
    Ok(Some(ap))
}

/// Sensitivity at `max_fp_per_image` average false positives per image on the FROC curve of
/// `num_images` images (module doc); `None` when `num_truths == 0`.
///
/// # Errors
///
/// A non-finite score; more true positives than ground-truth lesions; no images; a
/// negative or non-finite FP budget.
pub fn froc_sensitivity(
    detections: &[ScoredDetection],
    num_truths: usize,
    num_images: usize,
    max_fp_per_image: f64,
) -> Result<Option<f64>> {
    let points = operating_points(detections)?;
    check_tp_count(detections, num_truths)?;
    if num_images == 0 {
        return Err(Error::InvalidArgument(
            "FROC needs at least one image to count false positives per image".into(),
        ));
    }
    if !max_fp_per_image.is_finite() || max_fp_per_image < 0.0 {
        return Err(Error::InvalidArgument(format!(
            "false positives per image {max_fp_per_image} must be finite and non-negative"
        )));
    }
    if num_truths == 0 {
        return Ok(None);
    }
    let budget = max_fp_per_image * num_images as f64;
    // FP and TP grow as the threshold falls, so the last point within budget is the best.
    let tp = points
        .iter()
        .take_while(|p| p.false_positives as f64 <= budget)
        .last()
        .map_or(0, |p| p.true_positives);
    Ok(Some(tp as f64 / num_truths as f64))
}

/// Predictions and ground truth of one case (image).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct LesionCase {
    /// The lesion head's predictions.
    pub predictions: Vec<PredictedLesion>,
    /// The ground-truth lesions.
    pub truths: Vec<TruthLesion>,
}

/// Detection metrics of one set of detections (one class, or all classes pooled).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DetectionSummary {
    /// Ground-truth lesions.
    pub num_truths: usize,
    /// Predictions.
    pub num_predictions: usize,
    /// Matched predictions.
    pub true_positives: usize,
    /// Unmatched predictions.
    pub false_positives: usize,
    /// Unmatched ground-truth lesions.
    pub false_negatives: usize,
    /// `TP / (TP + FP)` over all predictions (no score threshold); `None` without predictions.
    pub precision: Option<f64>,
    /// `TP / #GT` over all predictions; `None` without ground truth.
    pub recall: Option<f64>,
    /// Average precision (module doc); `None` without ground truth.
    pub average_precision: Option<f64>,
    /// Sens@1FP per image (module doc); `None` without ground truth.
    pub sensitivity_at_1_fp: Option<f64>,
    /// Sens@4FP per image (module doc); `None` without ground truth.
    pub sensitivity_at_4_fp: Option<f64>,
}

impl DetectionSummary {
    /// Computes the summary of `detections` against `num_truths` lesions in `num_images`
    /// images.
    ///
    /// # Errors
    ///
    /// As [`average_precision`] and [`froc_sensitivity`].
    pub fn compute(
        detections: &[ScoredDetection],
        num_truths: usize,
        num_images: usize,
    ) -> Result<Self> {
        let tp = detections.iter().filter(|d| d.true_positive).count();
        let fp = detections.len() - tp;
        Ok(DetectionSummary {
            num_truths,
            num_predictions: detections.len(),
            true_positives: tp,
            false_positives: fp,
            false_negatives: num_truths.saturating_sub(tp),
            precision: (!detections.is_empty()).then(|| tp as f64 / detections.len() as f64),
            recall: (num_truths > 0).then(|| tp as f64 / num_truths as f64),
            average_precision: average_precision(detections, num_truths)?,
            sensitivity_at_1_fp: froc_sensitivity(detections, num_truths, num_images, 1.0)?,
            sensitivity_at_4_fp: froc_sensitivity(detections, num_truths, num_images, 4.0)?,
        })
    }
}

/// [`DetectionSummary`] of one lesion class.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ClassDetectionSummary {
    /// The class.
    pub class: LesionClass,
    /// Its metrics.
    #[serde(flatten)]
    pub summary: DetectionSummary,
}

/// Lesion detection results of a test set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LesionEvaluation {
    /// Number of cases (images), the FROC denominator.
    pub num_images: usize,
    /// The matching criteria used.
    pub criteria: MatchCriteria,
    /// The matching of each case, in input order (indices refer to that case's lists).
    pub per_case: Vec<LesionMatching>,
    /// All classes ranked together.
    pub pooled: DetectionSummary,
    /// One entry per lesion class, in channel order.
    pub per_class: Vec<ClassDetectionSummary>,
    /// Mean per-class AP over the classes with ground truth; the paper's "lesion AP".
    pub macro_average_precision: Option<f64>,
}

/// Matches every case and computes the detection metrics of the whole test set.
///
/// # Errors
///
/// No cases; invalid criteria, boxes or scores (see [`match_lesions`]); the message
/// names the offending case.
pub fn evaluate_lesions(
    cases: &[LesionCase],
    criteria: &MatchCriteria,
) -> Result<LesionEvaluation> {
    if cases.is_empty() {
        return Err(Error::InvalidArgument(
            "lesion evaluation needs at least one case".into(),
        ));
    }
    criteria.validate()?;
    let mut per_case = Vec::with_capacity(cases.len());
    let mut pooled = Vec::new();
    let mut by_class = vec![Vec::new(); ALL_LESION_CLASSES.len()];
    let mut truths_by_class = vec![0usize; ALL_LESION_CLASSES.len()];
    for (ci, case) in cases.iter().enumerate() {
        validate_case(&case.predictions, &case.truths)
            .map_err(|e| Error::InvalidArgument(format!("case {ci}: {e}")))?;
        let m = match_lesions(&case.predictions, &case.truths, criteria)?;
        for (i, p) in case.predictions.iter().enumerate() {
            let d = ScoredDetection {
                score: p.score,
                true_positive: m.truth_for_prediction(i).is_some(),
            };
            pooled.push(d);
            by_class[p.class.index()].push(d);
        }
        for t in &case.truths {
            truths_by_class[t.class.index()] += 1;
        }
        per_case.push(m);
    }

    let n = cases.len();
    let per_class = ALL_LESION_CLASSES
        .iter()
        .map(|&class| {
            Ok(ClassDetectionSummary {
                class,
                summary: DetectionSummary::compute(
                    &by_class[class.index()],
                    truths_by_class[class.index()],
                    n,
                )?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let aps: Vec<f64> = per_class
        .iter()
        .filter_map(|c| c.summary.average_precision)
        .collect();
    Ok(LesionEvaluation {
        num_images: n,
        criteria: *criteria,
        per_case,
        pooled: DetectionSummary::compute(&pooled, truths_by_class.iter().sum(), n)?,
        per_class,
        macro_average_precision: (!aps.is_empty())
            .then(|| aps.iter().sum::<f64>() / aps.len() as f64),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(score: f64, true_positive: bool) -> ScoredDetection {
        ScoredDetection {
            score,
            true_positive,
        }
    }

    #[test]
    fn tied_scores_enter_together() {
        let pts = operating_points(&[d(0.5, true), d(0.9, false), d(0.5, false)]).unwrap();
        let got: Vec<(f64, usize, usize)> = pts
            .iter()
            .map(|p| (p.threshold, p.true_positives, p.false_positives))
            .collect();
        assert_eq!(got, vec![(0.9, 0, 1), (0.5, 1, 2)]);
        // A TP tied with an FP at the top: one point at P = 1/2, R = 1.
        assert_eq!(
            average_precision(&[d(1.0, true), d(1.0, false)], 1).unwrap(),
            Some(0.5)
        );
    }

    #[test]
    fn ap_edge_cases() {
        assert_eq!(average_precision(&[], 3).unwrap(), Some(0.0));
        assert_eq!(average_precision(&[d(0.3, false)], 0).unwrap(), None);
        assert_eq!(average_precision(&[d(0.3, true)], 2).unwrap(), Some(0.5));
        assert!(average_precision(&[d(0.3, true), d(0.2, true)], 1).is_err());
        assert!(average_precision(&[d(f64::NAN, true)], 1).is_err());
        assert!(average_precision(&[d(f64::INFINITY, true)], 1).is_err());
    }

    #[test]
    fn froc_takes_the_last_threshold_within_budget() {
        // 2 images, 4 lesions. Ranked: TP, FP, FP, TP, FP, TP.
        let dets = [
            d(0.9, true),
            d(0.8, false),
            d(0.7, false),
            d(0.6, true),
            d(0.5, false),
            d(0.4, true),
        ];
        let s = |k| froc_sensitivity(&dets, 4, 2, k).unwrap().unwrap();
        // Budget 0 FP: only the first TP.
        assert_eq!(s(0.0), 0.25);
        // 1 FP/image = 2 FPs: down to 0.6 (2 TP).
        assert_eq!(s(1.0), 0.5);
        // 1.4 FP/image = 2.8 FPs: still 2 FPs allowed, no interpolation.
        assert_eq!(s(1.4), 0.5);
        assert_eq!(s(4.0), 0.75);
        // An FP at the very top: zero budget leaves nothing.
        assert_eq!(
            froc_sensitivity(&[d(1.0, false)], 1, 1, 0.0).unwrap(),
            Some(0.0)
        );
        assert_eq!(froc_sensitivity(&[d(0.5, false)], 0, 2, 1.0).unwrap(), None);
        assert!(froc_sensitivity(&dets, 2, 2, 1.0).is_err());
        assert!(froc_sensitivity(&dets, 4, 0, 1.0).is_err());
        assert!(froc_sensitivity(&dets, 4, 2, -1.0).is_err());
        assert!(froc_sensitivity(&dets, 4, 2, f64::NAN).is_err());
    }

    #[test]
    fn evaluation_needs_cases_and_names_the_bad_one() {
        assert!(evaluate_lesions(&[], &MatchCriteria::default()).is_err());
        let mut bad = LesionCase::default();
        bad.predictions.push(PredictedLesion {
            class: LesionClass::Fracture,
            bbox: super::super::LesionBox {
                centre_mm: [0.0; 3],
                size_mm: [1.0; 3],
            },
            score: f64::NAN,
        });
        let err =
            evaluate_lesions(&[LesionCase::default(), bad], &MatchCriteria::default()).unwrap_err();
        assert!(err.to_string().contains("case 1"), "{err}");
    }

    #[test]
    fn empty_cases_have_undefined_rates() {
        let e = evaluate_lesions(&[LesionCase::default()], &MatchCriteria::default()).unwrap();
        assert_eq!(e.pooled.precision, None);
        assert_eq!(e.pooled.recall, None);
        assert_eq!(e.macro_average_precision, None);
        assert_eq!(e.per_class.len(), 4);
    }
}
