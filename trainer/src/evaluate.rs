//! Evaluation of post-processed predictions against ground truth: per-case metrics through
//! `vertebra_core::metrics`, aggregates with patient-level BCa 95 % CIs through
//! `vertebra_core::stats`, paired comparisons against a named baseline (two-sided Wilcoxon
//! signed-rank, Holm–Bonferroni across metrics), and Markdown + JSON output.
//!
//! ## Per case ([`case_metrics`])
//! The prediction is the label map of the post-processed findings (decoded labels; the raw
//! head/vote labels for the "raw" ID accuracy), on the ground truth's grid.
//! - `dice_binary`: foreground Dice (`pred > 0` vs `truth > 0`);
//! - `dice_mean`: mean per-vertebra Dice over labels in prediction or truth (core's rule);
//! - `id_accuracy_raw` / `id_accuracy`: the paper's ID accuracy before and after
//!   anatomical-order decoding;
//! - `verse_id_rate`: VerSe identification rate from the instances' centroids (decoded
//!   labels) against the truth's label centroids (20 mm);
//! - `instances_per_vertebra`: predicted vertebra instances / ground-truth vertebrae (1 when
//!   the instance separation is right; above 1 = vertebrae split into pieces, below 1 =
//!   neighbours merged) — the diagnostic behind a low ID accuracy with a good binary Dice;
//! - per region (cervical, thoracic, lumbar; L6 counts as lumbar): mean Dice over the truth's
//!   vertebrae of the region, and decoded ID accuracy over them;
//! - lesions: the case's predictions ([`vertebra_core::postprocess::LesionPeak::to_prediction`])
//!   and target truths, for the set-level detection metrics.
//!
//! ## Aggregates ([`aggregate`])
//! Per-case metrics: the mean over cases, with a BCa CI resampling **patients** (cases of a
//! patient move together). A metric undefined in a case (e.g. a region absent from it) is
//! averaged over the cases where it is defined. Lesion metrics are set-level: precision and
//! recall (all predictions), AP per class and macro, pooled Sens@1FP and Sens@4FP, each with
//! a patient-level BCa CI of the set-level statistic recomputed on each replicate; a replicate
//! without any ground-truth lesion of a class counts that class's AP (and the sensitivity) as
//! 0 — a conservative choice that only matters for test sets with very few lesions.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use vertebra_core::Volume;
use vertebra_core::anatomy::{ALL_LESION_CLASSES, LesionClass, Region, Vertebra};
use vertebra_core::metrics::{
    LabeledCentroid, LesionBox, LesionCase, MatchCriteria, PredictedLesion, ScoredDetection,
    TruthLesion, average_precision, evaluate_lesions, froc_sensitivity, identification_accuracy,
    label_centroids, label_dice, match_lesions, verse_identification,
};
use vertebra_core::postprocess::CaseFindings;
use vertebra_core::stats::{
    BootstrapCi, BootstrapConfig, PatientSamples, bootstrap_ci, bootstrap_mean_ci, holm_bonferroni,
    wilcoxon_signed_rank,
};

use crate::preprocess::PreparedCase;
use crate::{Error, Result};
use vertebra_core::phantom::LesionTruth;

/// The three spinal regions in report order.
pub const REGIONS: [Region; 3] = [Region::Cervical, Region::Thoracic, Region::Lumbar];

/// Report name of a region.
pub fn region_name(r: Region) -> &'static str {
    match r {
        Region::Cervical => "cervical",
        Region::Thoracic => "thoracic",
        Region::Lumbar => "lumbar",
    }
}

/// Metrics of one case.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseMetrics {
    /// Case id.
    pub case_id: String,
    /// Patient id (the bootstrap unit; never printed in reports).
    #[serde(skip)]
    pub patient_id: String,
    /// Scalar metrics by name (see the module docs), `None` where undefined.
    pub values: BTreeMap<String, Option<f64>>,
    /// Lesion predictions and truths, when the case has lesion annotations.
    #[serde(skip)]
    pub lesions: Option<LesionCase>,
}

/// Computes the per-case metrics (see the module docs). `truth` must be on the findings'
/// grid; `truth_lesions` are the case's target lesions, `None` when it has no lesion
/// annotation.
///
/// # Errors
/// Grid mismatches and invalid labels (core metric errors).
pub fn case_metrics(
    case_id: &str,
    patient_id: &str,
    findings: &CaseFindings,
    truth: &Volume<u8>,
    truth_lesions: Option<&[TruthLesion]>,
) -> Result<CaseMetrics> {
    let pred = findings.label_map();
    let raw = findings.raw_label_map();
    let centroids = scored_centroids(findings);
    let predictions = lesion_predictions(findings);
    metrics_from_parts(
        CaseIds {
            case_id,
            patient_id,
        },
        PredictedParts {
            labels: &pred,
            raw_labels: Some(&raw),
            centroids: &centroids,
            lesions: predictions,
        },
        truth,
        truth_lesions,
    )
}

/// One [`ScoredCentroid`] per vertebra instance of `findings`.
pub fn scored_centroids(findings: &CaseFindings) -> Vec<ScoredCentroid> {
    findings
        .vertebrae
        .iter()
        .map(|v| ScoredCentroid {
            label: v.vertebra.label(),
            confidence: v.confidence,
            position_mm: v.instance.centroid_world,
        })
        .collect()
}

/// The lesion peaks of `findings` as predictions for the lesion metrics.
pub fn lesion_predictions(findings: &CaseFindings) -> Vec<PredictedLesion> {
    findings
        .lesions
        .iter()
        .map(vertebra_core::postprocess::LesionPeak::to_prediction)
        .collect()
}

/// A predicted vertebra centroid with its label and decoding confidence.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredCentroid {
    /// Vertebra label 1..=25.
    pub label: u8,
    /// Confidence of the label (the more confident of two same-label instances counts).
    pub confidence: f64,
    /// Centroid in world coordinates (mm).
    pub position_mm: [f64; 3],
}

/// Which case the metrics are for.
#[derive(Debug, Clone, Copy)]
pub struct CaseIds<'a> {
    /// Case id.
    pub case_id: &'a str,
    /// Patient id (bootstrap unit).
    pub patient_id: &'a str,
}

/// A prediction in plain parts, as the appliance's outputs give it (label map, result
/// document) or as [`CaseFindings`] does.
#[derive(Debug, Clone)]
pub struct PredictedParts<'a> {
    /// Decoded label map on the truth's grid.
    pub labels: &'a Volume<u8>,
    /// Label map with the ID head's raw labels (`id_accuracy_raw`); `None` leaves that
    /// metric undefined.
    pub raw_labels: Option<&'a Volume<u8>>,
    /// One entry per vertebra instance.
    pub centroids: &'a [ScoredCentroid],
    /// Lesion predictions.
    pub lesions: Vec<PredictedLesion>,
}

/// [`case_metrics`] from plain parts: the single place the per-case metrics are defined,
/// shared by the trainer's evaluation and the scoring of `vertebrad analyze` outputs.
///
/// # Errors
/// Grid mismatches and invalid labels (core metric errors).
pub fn metrics_from_parts(
    ids: CaseIds<'_>,
    pred: PredictedParts<'_>,
    truth: &Volume<u8>,
    truth_lesions: Option<&[TruthLesion]>,
) -> Result<CaseMetrics> {
    let dice = label_dice(pred.labels, truth)?;
    let id = identification_accuracy(pred.labels, truth)?;
    let id_raw = match pred.raw_labels {
        Some(raw) => identification_accuracy(raw, truth)?.accuracy,
        None => None,
    };
    // One centroid per label, as the VerSe protocol expects: when the anatomical order could
    // not be decoded two instances can carry one label; the more confident one counts.
    let mut best: BTreeMap<u8, (f64, [f64; 3])> = BTreeMap::new();
    for v in pred.centroids {
        let e = best
            .entry(v.label)
            .or_insert((f64::NEG_INFINITY, v.position_mm));
        if v.confidence > e.0 {
            *e = (v.confidence, v.position_mm);
        }
    }
    let pred_centroids: Vec<LabeledCentroid> = best
        .into_iter()
        .map(|(label, (_, position_mm))| LabeledCentroid { label, position_mm })
        .collect();
    let truth_centroids = label_centroids(truth)?;
    let verse = verse_identification(&pred_centroids, &truth_centroids)?;
    let mut values = BTreeMap::new();
    values.insert(
        "instances_per_vertebra".to_owned(),
        (!truth_centroids.is_empty())
            .then(|| pred.centroids.len() as f64 / truth_centroids.len() as f64),
    );
    values.insert("dice_binary".to_owned(), Some(dice.foreground));
    values.insert("dice_mean".to_owned(), dice.mean);
    values.insert("id_accuracy_raw".to_owned(), id_raw);
    values.insert("id_accuracy".to_owned(), id.accuracy);
    values.insert("verse_id_rate".to_owned(), verse.id_rate);
    let region_of = |l: u8| Vertebra::from_label(l).map(Vertebra::region);
    for r in REGIONS {
        let d: Vec<f64> = dice
            .per_label
            .iter()
            .filter(|d| d.truth_voxels > 0 && region_of(d.label) == Some(r))
            .map(|d| d.dice)
            .collect();
        let ids: Vec<bool> = id
            .per_vertebra
            .iter()
            .filter(|v| region_of(v.label) == Some(r))
            .map(|v| v.correct)
            .collect();
        let mean = |v: &[f64]| (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        values.insert(format!("dice_mean_{}", region_name(r)), mean(&d));
        let acc: Vec<f64> = ids.iter().map(|&c| f64::from(u8::from(c))).collect();
        values.insert(format!("id_accuracy_{}", region_name(r)), mean(&acc));
    }
    let lesions = truth_lesions.map(|t| LesionCase {
        predictions: pred.lesions,
        truths: t.to_vec(),
    });
    Ok(CaseMetrics {
        case_id: ids.case_id.to_owned(),
        patient_id: ids.patient_id.to_owned(),
        values,
        lesions,
    })
}

/// The lesion-head targets of a case as truths for matching: lesions with `is_target` (Genant
/// grade-1 fractures are not targets), as world boxes.
pub fn truth_lesions(lesions: &[LesionTruth]) -> Vec<TruthLesion> {
    lesions
        .iter()
        .filter(|l| l.is_target)
        .map(|l| TruthLesion {
            class: l.class,
            bbox: LesionBox {
                centre_mm: l.centre,
                size_mm: l.size_mm,
            },
        })
        .collect()
}

/// [`case_metrics`] of a prepared case (labels on the findings' grid, the prepared grid),
/// with its target lesions when it has lesion annotations.
///
/// # Errors
/// A case without a label map; as [`case_metrics`].
pub fn prepared_case_metrics(
    case: &PreparedCase,
    patient_id: &str,
    findings: &CaseFindings,
) -> Result<CaseMetrics> {
    let labels = case.labels.as_ref().ok_or_else(|| Error::Case {
        case: case.id.clone(),
        message: "evaluation needs a label map".into(),
    })?;
    let lesions = case
        .lesions
        .as_deref()
        .filter(|_| case.annotations.lesions)
        .map(truth_lesions);
    case_metrics(&case.id, patient_id, findings, labels, lesions.as_deref())
}

/// One aggregated metric.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSummary {
    /// Metric name.
    pub name: String,
    /// Point estimate.
    pub estimate: f64,
    /// BCa CI lower end (`None` when fewer than two patients have the metric).
    pub ci_low: Option<f64>,
    /// BCa CI upper end.
    pub ci_high: Option<f64>,
    /// Cases with the metric defined.
    pub n_cases: usize,
    /// Patients with the metric defined.
    pub n_patients: usize,
}

/// Aggregated results of one model on one test set.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Evaluation {
    /// Model (or configuration) name.
    pub model: String,
    /// Per-case metrics.
    pub cases: Vec<CaseMetrics>,
    /// Aggregates, per-case metrics first (sorted by name), then lesion metrics.
    pub summary: Vec<MetricSummary>,
}

/// Lesion detections of one case reduced for resampling: per class the scored detections
/// and the number of truths.
#[derive(Debug, Clone)]
struct LesionScores {
    detections: Vec<(LesionClass, ScoredDetection)>,
    truths: [usize; 4],
}

fn ci_summary(
    name: &str,
    ci: Option<&BootstrapCi>,
    estimate: f64,
    n_cases: usize,
    n_patients: usize,
) -> MetricSummary {
    MetricSummary {
        name: name.to_owned(),
        estimate,
        ci_low: ci.map(|c| c.low),
        ci_high: ci.map(|c| c.high),
        n_cases,
        n_patients,
    }
}

/// Aggregates per-case metrics (see the module docs).
///
/// # Errors
/// No cases; bootstrap and lesion-metric errors.
pub fn aggregate(
    model: &str,
    cases: Vec<CaseMetrics>,
    bootstrap: &BootstrapConfig,
) -> Result<Evaluation> {
    if cases.is_empty() {
        return Err(Error::InvalidArgument(
            "evaluation needs at least one case".into(),
        ));
    }
    let names: std::collections::BTreeSet<&String> =
        cases.iter().flat_map(|c| c.values.keys()).collect();
    let mut summary = Vec::new();
    for name in names {
        let pairs: Vec<(&str, f64)> = cases
            .iter()
            .filter_map(|c| {
                c.values
                    .get(name)
                    .copied()
                    .flatten()
                    .map(|v| (c.patient_id.as_str(), v))
            })
            .collect();
        if pairs.is_empty() {
            continue;
        }
        let est = pairs.iter().map(|p| p.1).sum::<f64>() / pairs.len() as f64;
        let samples = PatientSamples::from_cases(pairs.iter().copied());
        let np = samples.n_patients();
        let ci = if np >= 2 {
            Some(bootstrap_mean_ci(&samples, bootstrap)?)
        } else {
            None
        };
        summary.push(ci_summary(name, ci.as_ref(), est, pairs.len(), np));
    }
    let lesion_cases: Vec<(&str, &LesionCase)> = cases
        .iter()
        .filter_map(|c| c.lesions.as_ref().map(|l| (c.patient_id.as_str(), l)))
        .collect();
    if !lesion_cases.is_empty() {
        summary.extend(lesion_summary(&lesion_cases, bootstrap)?);
    }
    Ok(Evaluation {
        model: model.to_owned(),
        cases,
        summary,
    })
}

fn lesion_summary(
    cases: &[(&str, &LesionCase)],
    bootstrap: &BootstrapConfig,
) -> Result<Vec<MetricSummary>> {
    let criteria = MatchCriteria::default();
    let all: Vec<LesionCase> = cases.iter().map(|c| c.1.clone()).collect();
    let eval = evaluate_lesions(&all, &criteria)?;
    let mut scored = Vec::with_capacity(cases.len());
    for (_, c) in cases {
        let m = match_lesions(&c.predictions, &c.truths, &criteria)?;
        let mut truths = [0usize; 4];
        for t in &c.truths {
            truths[t.class.index()] += 1;
        }
        scored.push(LesionScores {
            detections: c
                .predictions
                .iter()
                .enumerate()
                .map(|(i, p): (usize, &PredictedLesion)| {
                    (
                        p.class,
                        ScoredDetection {
                            score: p.score,
                            true_positive: m.truth_for_prediction(i).is_some(),
                        },
                    )
                })
                .collect(),
            truths,
        });
    }
    let samples = PatientSamples::from_cases(cases.iter().map(|c| c.0).zip(scored.iter().cloned()));
    let np = samples.n_patients();
    let n = cases.len();
    let mut out = Vec::new();
    let mut push =
        |name: &str, estimate: Option<f64>, stat: &dyn Fn(&[LesionScores]) -> f64| -> Result<()> {
            let Some(estimate) = estimate else {
                return Ok(());
            };
            let ci = if np >= 2 {
                Some(bootstrap_ci(&samples, stat, bootstrap)?)
            } else {
                None
            };
            out.push(ci_summary(name, ci.as_ref(), estimate, n, np));
            Ok(())
        };
    let class_ap = |s: &[LesionScores], c: LesionClass| -> Option<f64> {
        let d: Vec<ScoredDetection> = s
            .iter()
            .flat_map(|x| x.detections.iter().filter(|d| d.0 == c).map(|d| d.1))
            .collect();
        let t: usize = s.iter().map(|x| x.truths[c.index()]).sum();
        average_precision(&d, t).ok().flatten()
    };
    let present: Vec<LesionClass> = ALL_LESION_CLASSES
        .iter()
        .copied()
        .filter(|c| eval.per_class[c.index()].summary.num_truths > 0)
        .collect();
    push("lesion_precision", eval.pooled.precision, &|s| {
        let d: Vec<&ScoredDetection> = s
            .iter()
            .flat_map(|x| x.detections.iter().map(|d| &d.1))
            .collect();
        if d.is_empty() {
            0.0
        } else {
            d.iter().filter(|d| d.true_positive).count() as f64 / d.len() as f64
        }
    })?;
    push("lesion_recall", eval.pooled.recall, &|s| {
        let t: usize = s.iter().map(|x| x.truths.iter().sum::<usize>()).sum();
        let tp = s
            .iter()
            .flat_map(|x| x.detections.iter())
            .filter(|d| d.1.true_positive)
            .count();
        if t == 0 { 0.0 } else { tp as f64 / t as f64 }
    })?;
    for c in &present {
        let c = *c;
        push(
            &format!("lesion_ap_{}", c.key()),
            eval.per_class[c.index()].summary.average_precision,
            &move |s| class_ap(s, c).unwrap_or(0.0),
        )?;
    }
    let present2 = present.clone();
    push("lesion_ap_macro", eval.macro_average_precision, &move |s| {
        let v: Vec<f64> = present2
            .iter()
            .map(|&c| class_ap(s, c).unwrap_or(0.0))
            .collect();
        v.iter().sum::<f64>() / v.len().max(1) as f64
    })?;
    for (k, name) in [(1.0, "lesion_sens_at_1fp"), (4.0, "lesion_sens_at_4fp")] {
        let est = if k == 1.0 {
            eval.pooled.sensitivity_at_1_fp
        } else {
            eval.pooled.sensitivity_at_4_fp
        };
        push(name, est, &move |s| {
            let d: Vec<ScoredDetection> = s
                .iter()
                .flat_map(|x| x.detections.iter().map(|d| d.1))
                .collect();
            let t: usize = s.iter().map(|x| x.truths.iter().sum::<usize>()).sum();
            froc_sensitivity(&d, t, s.len(), k)
                .ok()
                .flatten()
                .unwrap_or(0.0)
        })?;
    }
    Ok(out)
}

/// A paired comparison of one metric against the baseline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// Metric name.
    pub metric: String,
    /// Baseline model name.
    pub baseline: String,
    /// Compared model name.
    pub model: String,
    /// Mean of the paired differences `model − baseline`.
    pub mean_difference: f64,
    /// Pairs (cases defined in both).
    pub n_pairs: usize,
    /// Two-sided Wilcoxon signed-rank p-value.
    pub p_value: f64,
    /// Holm–Bonferroni adjusted p-value (across the compared metrics).
    pub p_adjusted: f64,
    /// Rejected at `alpha` after adjustment.
    pub significant: bool,
}

/// Compares `model` against `baseline` on the per-case `metrics`, pairing cases by id;
/// Holm–Bonferroni over the metrics at level `alpha`.
///
/// # Errors
/// A metric with fewer than one pair; Wilcoxon and Holm errors.
pub fn compare(
    baseline: &Evaluation,
    model: &Evaluation,
    metrics: &[&str],
    alpha: f64,
) -> Result<Vec<Comparison>> {
    let by_id: BTreeMap<&str, &CaseMetrics> = baseline
        .cases
        .iter()
        .map(|c| (c.case_id.as_str(), c))
        .collect();
    let mut rows = Vec::new();
    let mut ps = Vec::new();
    for &m in metrics {
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for c in &model.cases {
            let a = c.values.get(m).copied().flatten();
            let b = by_id
                .get(c.case_id.as_str())
                .and_then(|b| b.values.get(m).copied().flatten());
            if let (Some(a), Some(b)) = (a, b) {
                x.push(a);
                y.push(b);
            }
        }
        if x.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "comparison of {m}: no case has it in both {} and {}",
                model.model, baseline.model
            )));
        }
        let w = wilcoxon_signed_rank(&x, &y)?;
        let md = x.iter().zip(&y).map(|(a, b)| a - b).sum::<f64>() / x.len() as f64;
        ps.push(w.p_value);
        rows.push(Comparison {
            metric: m.to_owned(),
            baseline: baseline.model.clone(),
            model: model.model.clone(),
            mean_difference: md,
            n_pairs: x.len(),
            p_value: w.p_value,
            p_adjusted: f64::NAN,
            significant: false,
        });
    }
    let holm = holm_bonferroni(&ps, alpha)?;
    for (r, (p, rej)) in rows
        .iter_mut()
        .zip(holm.adjusted_p_values.iter().zip(&holm.reject))
    {
        r.p_adjusted = *p;
        r.significant = *rej;
    }
    Ok(rows)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "—".to_owned(), |v| format!("{v:.4}"))
}

impl Evaluation {
    /// A Markdown table: metric, estimate, 95 % CI, cases, patients.
    pub fn to_markdown(&self) -> String {
        let mut s = format!(
            "### {}\n\n| metric | estimate | 95 % CI (BCa, patient-level) | cases | patients |\n|---|---:|---|---:|---:|\n",
            self.model
        );
        for m in &self.summary {
            let ci = match (m.ci_low, m.ci_high) {
                (Some(a), Some(b)) => format!("[{a:.4}, {b:.4}]"),
                _ => "—".to_owned(),
            };
            // Writing to a String cannot fail.
            let _ = writeln!(
                s,
                "| {} | {:.4} | {} | {} | {} |",
                m.name, m.estimate, ci, m.n_cases, m.n_patients
            );
        }
        s
    }

    /// Pretty JSON of the whole evaluation (per-case values included; no patient ids).
    ///
    /// # Errors
    /// Serialisation failure (not expected for these types).
    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self)
            .map_err(|e| Error::InvalidArgument(format!("evaluation JSON: {e}")))
    }

    /// The summary of metric `name`, if present.
    pub fn metric(&self, name: &str) -> Option<&MetricSummary> {
        self.summary.iter().find(|m| m.name == name)
    }
}

/// A Markdown table of comparisons.
pub fn comparisons_markdown(rows: &[Comparison]) -> String {
    let mut s = String::from(
        "| metric | model | baseline | mean diff | pairs | p (Wilcoxon) | p (Holm) | significant |\n|---|---|---|---:|---:|---:|---:|---|\n",
    );
    for r in rows {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {:+.4} | {} | {} | {} | {} |",
            r.metric,
            r.model,
            r.baseline,
            r.mean_difference,
            r.n_pairs,
            fmt_opt(Some(r.p_value)),
            fmt_opt(Some(r.p_adjusted)),
            if r.significant { "yes" } else { "no" }
        );
    }
    s
}
