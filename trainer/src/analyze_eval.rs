//! The appliance's command line, scored: the held-out phantom cases go through
//! `vertebrad analyze` as a separate process, and its outputs (the label map on the source
//! grid and `result.json`) are scored with the trainer's metrics ([`metrics_from_parts`], the
//! same definition [`crate::evaluate`] uses) against the same ground truth.
//!
//! Three steps (scripts/eval-analyze.sh drives them):
//! 1. [`export_cases`] writes each held-out case's CT as `<dir>/<case>.nii.gz` (HU, the
//!    phantom's own grid) and `<dir>/cases.txt` listing them in set order.
//! 2. `vertebrad analyze <dir>/<case>.nii.gz --out <outputs>/<case>` for each (the script).
//! 3. [`score_analyze`] regenerates each case's truth (phantoms are deterministic by seed),
//!    reads `<outputs>/<case>/labels.nii.gz` and `result.json`, and scores them. In the same
//!    process it runs the trainer's path on the same bundle (`crate::preprocess::prepare`, then
//!    `vertebra_core::inference::infer_prepared` with the bundle's graphs, as
//!    `vertebra-train evaluate-bundle` does) and brings that label map onto the source grid
//!    with the same nearest-neighbour resampling `analyze` uses, so both are scored on one
//!    grid: the difference between the two columns is the difference between the code paths.
//!
//! The trainer's own evaluation scores on the prepared (contract) grid; scoring on the source
//! grid differs from it by the resampling alone (thick-slice domains most). The
//! `evaluate-bundle` numbers can be shown as a third, informational column.
//!
//! `id_accuracy_raw` (the ID head's labels before anatomical decoding) is not in the
//! appliance's outputs and is left out of both columns.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use vertebra_core::anatomy::{ALL_LESION_CLASSES, LesionClass};
use vertebra_core::metrics::{LesionBox, PredictedLesion};
use vertebra_core::nifti;

use vertebra_core::inference::infer_prepared;
use vertebra_core::postprocess::CaseFindings;
use vertebra_core::volume::resample::{Grid, resample_nearest};
use vertebra_export::runtime::OrtNetwork;

use crate::bundle_eval::{BundleSource, open_bundle};
use crate::evaluate::{
    CaseIds, CaseMetrics, Evaluation, PredictedParts, ScoredCentroid, aggregate,
    lesion_predictions, metrics_from_parts, scored_centroids, truth_lesions,
};
use crate::preprocess::prepare;
use crate::run::RunConfig;
use crate::studies::{StudyOptions, held_out_set, phantom_case, test_count};
use crate::{Error, Result};

/// The list of exported cases, one id per line, in set order.
pub const CASES_FILE: &str = "cases.txt";

/// Writes the held-out set's CT images as NIfTI for `vertebrad analyze`; returns their paths.
///
/// # Errors
/// An unknown set; phantom generation and write errors.
pub fn export_cases(
    run_dir: &Path,
    set_name: &str,
    out_dir: &Path,
    options: &StudyOptions,
) -> Result<Vec<PathBuf>> {
    let recipe = RunConfig::load(&run_dir.join("recipe.json"))?;
    let set = held_out_set(&recipe, set_name)?;
    fs::create_dir_all(out_dir).map_err(|e| io_err(out_dir, e))?;
    let n = test_count(set, options);
    let mut paths = Vec::with_capacity(n);
    let mut ids = String::new();
    for k in 0..n {
        let case = phantom_case(set, k)?;
        let path = out_dir.join(format!("{}.nii.gz", case.id));
        nifti::write_f32(&path, &case.image, &nifti::WriteOptions::default()).map_err(|e| {
            Error::Case {
                case: case.id.clone(),
                message: format!("writing {}: {e}", path.display()),
            }
        })?;
        options.say(&format!("  {}/{n} {}", k + 1, path.display()));
        let _ = writeln!(ids, "{}", case.id);
        paths.push(path);
    }
    let list = out_dir.join(CASES_FILE);
    fs::write(&list, ids).map_err(|e| io_err(&list, e))?;
    Ok(paths)
}

/// One metric of the analyze outputs next to the trainer's path on the same bundle.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AnalyzeMetric {
    /// Metric name.
    pub name: String,
    /// From `vertebrad analyze` outputs (source grid).
    pub analyze: f64,
    /// The trainer's path on the same bundle, scored on the source grid.
    pub trainer: Option<f64>,
    /// `vertebra-train evaluate-bundle`'s bundle value (prepared grid), when a reference was
    /// given and has the metric. Informational.
    pub evaluate_bundle: Option<f64>,
}

/// The scored outputs.
#[derive(Debug)]
pub struct AnalyzeScore {
    /// The aggregate evaluation of the analyze outputs.
    pub analyze: Evaluation,
    /// The aggregate evaluation of the trainer's path on the same grid.
    pub trainer: Evaluation,
    /// Metric by metric.
    pub metrics: Vec<AnalyzeMetric>,
    /// Where report.md and comparison.json were written.
    pub dir: PathBuf,
}

impl AnalyzeScore {
    /// Largest |analyze − trainer| over the metrics both have.
    pub fn max_abs_difference(&self) -> f64 {
        self.metrics
            .iter()
            .filter_map(|m| m.trainer.map(|b| (m.analyze - b).abs()))
            .fold(0.0, f64::max)
    }
}

/// The parts of `result.json` (docs/result-schema.md) the metrics need.
#[derive(Deserialize)]
struct ResultDoc {
    schema_version: u32,
    vertebrae: Vec<DocVertebra>,
    lesions: Vec<DocLesion>,
}

#[derive(Deserialize)]
struct DocVertebra {
    label: u8,
    confidence: f64,
    centroid_lps_mm: [f64; 3],
}

#[derive(Deserialize)]
struct DocLesion {
    class: String,
    score: f64,
    centre_lps_mm: [f64; 3],
    size_mm: [f64; 3],
}

/// Scores `<outputs>/<case>/{labels.nii.gz,result.json}` for the held-out cases (in set
/// order, as [`export_cases`] wrote them) next to the trainer's path on `bundle` (see the
/// module docs), and writes `<run>/eval-<set>-analyze/{report.md,comparison.json}`.
/// `reference` is an `evaluate-bundle` `comparison.json` shown as an informational column.
///
/// # Errors
/// A missing or unreadable output, a label map not on the case's grid, an unknown lesion
/// class or result schema; a refused bundle; the evaluation's errors.
pub fn score_analyze(
    run_dir: &Path,
    set_name: &str,
    outputs: &Path,
    bundle: &BundleSource,
    reference: Option<&Path>,
    options: &StudyOptions,
) -> Result<AnalyzeScore> {
    let recipe = RunConfig::load(&run_dir.join("recipe.json"))?;
    let set = held_out_set(&recipe, set_name)?;
    let (verified, mut sessions) = open_bundle(bundle)?;
    let manifest = &verified.manifest;
    let n = test_count(set, options);
    let (mut analyzed, mut trainer) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for k in 0..n {
        let case = phantom_case(set, k)?;
        let truth = case.labels.as_ref().ok_or_else(|| Error::Case {
            case: case.id.clone(),
            message: "the phantom case has no label map".into(),
        })?;
        let truths = case.lesions.as_deref().map(truth_lesions);
        let ids = CaseIds {
            case_id: &case.id,
            patient_id: &case.patient_id,
        };
        let a = score_outputs(&outputs.join(&case.id), ids, truth, truths.as_deref())?;
        // The trainer's path on the same bundle, then onto the source grid as analyze does.
        let prepared = prepare(&case, manifest.contract.spacing_mm)?;
        let mut progress = |_: usize| {};
        let mut net = OrtNetwork::new(&mut sessions, manifest, &mut progress);
        let inference =
            infer_prepared(&mut net, &prepared.image, &options.infer.core()).map_err(|e| {
                Error::Case {
                    case: case.id.clone(),
                    message: format!("bundle inference: {e}"),
                }
            })?;
        let t = findings_on_grid(
            &inference.findings,
            &case.image,
            ids,
            truth,
            truths.as_deref(),
        )?;
        let get =
            |c: &CaseMetrics, key: &str| c.values.get(key).copied().flatten().unwrap_or(f64::NAN);
        options.say(&format!(
            "  {}/{n} {}: Dice {:.4} / {:.4}, ID {:.3} / {:.3} (analyze / trainer path)",
            k + 1,
            case.id,
            get(&a, "dice_mean"),
            get(&t, "dice_mean"),
            get(&a, "id_accuracy"),
            get(&t, "id_accuracy"),
        ));
        analyzed.push(a);
        trainer.push(t);
    }
    let analyze = aggregate(
        &format!("{} (vertebrad analyze outputs)", manifest.model.name),
        analyzed,
        &options.bootstrap,
    )?;
    let trainer = aggregate(
        &format!("{} (trainer path, source grid)", manifest.model.name),
        trainer,
        &options.bootstrap,
    )?;
    let reference = match reference {
        Some(p) => Some(read_reference(p)?),
        None => None,
    };
    let metrics: Vec<AnalyzeMetric> = analyze
        .summary
        .iter()
        .map(|s| AnalyzeMetric {
            name: s.name.clone(),
            analyze: s.estimate,
            trainer: trainer
                .summary
                .iter()
                .find(|t| t.name == s.name)
                .map(|t| t.estimate),
            evaluate_bundle: reference
                .as_ref()
                .and_then(|r| r.iter().find(|(k, _)| *k == s.name).map(|(_, v)| *v)),
        })
        .collect();
    let dir = run_dir.join(format!("eval-{set_name}-analyze"));
    fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let score = AnalyzeScore {
        analyze,
        trainer,
        metrics,
        dir: dir.clone(),
    };
    let report = dir.join("report.md");
    let md = report_markdown(&score, set_name, n, bundle, &verified.manifest_sha256);
    fs::write(&report, md).map_err(|e| io_err(&report, e))?;
    let json = dir.join("comparison.json");
    let text = serde_json::to_string_pretty(&score.metrics)
        .map_err(|e| Error::InvalidArgument(e.to_string()))?;
    fs::write(&json, text).map_err(|e| io_err(&json, e))?;
    Ok(score)
}

/// Metrics of one case's `vertebrad analyze` output directory.
fn score_outputs(
    dir: &Path,
    ids: CaseIds<'_>,
    truth: &vertebra_core::Volume<u8>,
    truths: Option<&[vertebra_core::metrics::TruthLesion]>,
) -> Result<CaseMetrics> {
    let case_err = |message: String| Error::Case {
        case: ids.case_id.to_owned(),
        message,
    };
    let labels_path = dir.join("labels.nii.gz");
    let labels: vertebra_core::Volume<u8> = nifti::read_labels(&labels_path)
        .map_err(|e| case_err(format!("reading {}: {e}", labels_path.display())))?;
    // NIfTI keeps geometry in float32: the grids must agree within core's tolerance.
    vertebra_core::metrics::check_same_grid(&labels, truth).map_err(|e| {
        case_err(format!(
            "{} is not on the case's grid: {e}",
            labels_path.display()
        ))
    })?;
    let doc_path = dir.join("result.json");
    let text = fs::read_to_string(&doc_path).map_err(|e| io_err(&doc_path, e))?;
    let doc: ResultDoc = serde_json::from_str(&text)
        .map_err(|e| case_err(format!("{}: {e}", doc_path.display())))?;
    if doc.schema_version != 1 {
        return Err(case_err(format!(
            "{}: result schema version {} (this scorer reads version 1)",
            doc_path.display(),
            doc.schema_version
        )));
    }
    let centroids: Vec<ScoredCentroid> = doc
        .vertebrae
        .iter()
        .map(|v| ScoredCentroid {
            label: v.label,
            confidence: v.confidence,
            position_mm: v.centroid_lps_mm,
        })
        .collect();
    let lesions = doc
        .lesions
        .iter()
        .map(|l| {
            let class = lesion_class(&l.class)
                .ok_or_else(|| case_err(format!("unknown lesion class {:?}", l.class)))?;
            Ok(PredictedLesion {
                class,
                bbox: LesionBox {
                    centre_mm: l.centre_lps_mm,
                    size_mm: l.size_mm.map(|s| s.max(1e-6)),
                },
                score: l.score,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    metrics_from_parts(
        ids,
        PredictedParts {
            labels: &labels,
            raw_labels: None,
            centroids: &centroids,
            lesions,
        },
        truth,
        truths,
    )
}

/// Metrics of in-process findings with their label map brought onto `source`'s grid by
/// nearest neighbour (what `vertebrad analyze` writes), without the raw-ID metric (which the
/// appliance's outputs do not have).
fn findings_on_grid(
    findings: &CaseFindings,
    source: &vertebra_core::Volume<f32>,
    ids: CaseIds<'_>,
    truth: &vertebra_core::Volume<u8>,
    truths: Option<&[vertebra_core::metrics::TruthLesion]>,
) -> Result<CaseMetrics> {
    let labels = resample_nearest(&findings.label_map(), &Grid::of(source), 0u8)?;
    let centroids = scored_centroids(findings);
    metrics_from_parts(
        ids,
        PredictedParts {
            labels: &labels,
            raw_labels: None,
            centroids: &centroids,
            lesions: lesion_predictions(findings),
        },
        truth,
        truths,
    )
}

/// The report: the table of metrics, analyze vs the trainer's path.
fn report_markdown(
    score: &AnalyzeScore,
    set_name: &str,
    n: usize,
    bundle: &BundleSource,
    manifest_sha256: &str,
) -> String {
    let mut md = format!(
        "# `vertebrad analyze` vs the trainer's path on the {set_name} set\n\n{}\n\nThe {n} \
         held-out phantom cases of `data.{set_name}`, written as NIfTI and run through \
         `vertebrad analyze` (a separate process), against the trainer's path in one process \
         (`prepare` → `infer_prepared` on the bundle's graphs → nearest-neighbour onto the \
         source grid). Bundle `{}` (manifest sha256 `{manifest_sha256}`). Both columns are \
         scored with the trainer's metrics on the source grid; `evaluate-bundle` is the \
         bundle's evaluation on the prepared grid (informational: it differs by the \
         resampling).\n\n| metric | analyze | trainer path | difference | evaluate-bundle \
         (prepared grid) |\n|---|---|---|---|---|\n",
        crate::studies::DISCLAIMER,
        bundle.bundle.display(),
    );
    let cell = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.4}"));
    for m in &score.metrics {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {} | {} | {} |",
            m.name,
            m.analyze,
            cell(m.trainer),
            m.trainer
                .map_or("—".to_owned(), |t| format!("{:+.4}", m.analyze - t)),
            cell(m.evaluate_bundle),
        );
    }
    let _ = writeln!(
        md,
        "\nLargest absolute difference, analyze vs trainer path: {:.4} ({:.2} points).",
        score.max_abs_difference(),
        100.0 * score.max_abs_difference()
    );
    md
}

/// `(name, bundle value)` pairs from an `evaluate-bundle` `comparison.json`.
fn read_reference(path: &Path) -> Result<Vec<(String, f64)>> {
    #[derive(Deserialize)]
    struct Row {
        name: String,
        bundle: f64,
    }
    let text = fs::read_to_string(path).map_err(|e| io_err(path, e))?;
    let rows: Vec<Row> = serde_json::from_str(&text).map_err(|e| {
        Error::InvalidArgument(format!(
            "{}: not an evaluate-bundle comparison.json: {e}",
            path.display()
        ))
    })?;
    Ok(rows.into_iter().map(|r| (r.name, r.bundle)).collect())
}

/// The class with machine name `key` ([`LesionClass::key`]).
fn lesion_class(key: &str) -> Option<LesionClass> {
    ALL_LESION_CLASSES.into_iter().find(|c| c.key() == key)
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use vertebra_core::anatomy::Vertebra;
    use vertebra_core::metrics::identification::label_centroids;
    use vertebra_core::phantom::{self, LesionPlan, PhantomSpec, domain};

    /// Writes an analyze-style output directory holding `labels` and a result document with
    /// one vertebra per label present (at its true centroid) and no lesions.
    fn write_outputs(dir: &Path, labels: &vertebra_core::Volume<u8>) {
        fs::create_dir_all(dir).unwrap();
        nifti::write_labels(
            dir.join("labels.nii.gz"),
            labels,
            &nifti::WriteOptions::default(),
        )
        .unwrap();
        let vertebrae: Vec<serde_json::Value> = label_centroids(labels)
            .unwrap()
            .into_iter()
            .map(|c| {
                serde_json::json!({
                    "label": c.label, "confidence": 0.9, "centroid_lps_mm": c.position_mm
                })
            })
            .collect();
        let doc = serde_json::json!({
            "schema_version": 1, "vertebrae": vertebrae, "lesions": []
        });
        fs::write(dir.join("result.json"), doc.to_string()).unwrap();
    }

    #[test]
    fn outputs_equal_to_the_truth_score_perfectly_and_a_shifted_grid_is_refused() {
        let mut spec = PhantomSpec::new(
            7,
            Vertebra::L1,
            Vertebra::L3,
            domain::preset("ct-standard").unwrap(),
        );
        spec.in_plane = 96;
        spec.lesions = LesionPlan::None;
        let p = phantom::generate(&spec).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let ids = CaseIds {
            case_id: "c",
            patient_id: "p",
        };
        write_outputs(&tmp.path().join("ok"), &p.labels);
        let m = score_outputs(&tmp.path().join("ok"), ids, &p.labels, Some(&[])).unwrap();
        for key in ["dice_binary", "dice_mean", "id_accuracy", "verse_id_rate"] {
            let v = m.values[key].unwrap();
            assert!((v - 1.0).abs() < 1e-12, "{key} = {v}");
        }
        assert_eq!(m.values["id_accuracy_raw"], None);
        assert!(m.lesions.as_ref().unwrap().predictions.is_empty());

        // One label map moved by a voxel: not the case's grid, refused by name.
        let mut g = *p.labels.geometry();
        g.origin[2] += g.spacing[2];
        let shifted =
            vertebra_core::Volume::from_vec(p.labels.dims(), p.labels.data().to_vec(), g).unwrap();
        write_outputs(&tmp.path().join("shifted"), &shifted);
        let e = score_outputs(&tmp.path().join("shifted"), ids, &p.labels, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not on the case's grid"), "{e}");

        // An unknown lesion class is an error, not a silently dropped finding.
        let bad = tmp.path().join("bad");
        write_outputs(&bad, &p.labels);
        let doc = serde_json::json!({"schema_version": 1, "vertebrae": [], "lesions": [
            {"class": "tumour", "score": 0.5, "centre_lps_mm": [0, 0, 0], "size_mm": [1, 1, 1]}
        ]});
        fs::write(bad.join("result.json"), doc.to_string()).unwrap();
        let e = score_outputs(&bad, ids, &p.labels, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown lesion class"), "{e}");
    }

    #[test]
    fn lesion_class_keys_round_trip() {
        for c in ALL_LESION_CLASSES {
            assert_eq!(lesion_class(c.key()), Some(c));
        }
        assert_eq!(lesion_class("fractured"), None);
    }

    #[test]
    fn reference_reads_evaluate_bundle_comparison() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("comparison.json");
        fs::write(
            &p,
            r#"[{"name":"dice_mean","burn":0.5,"bundle":0.25},{"name":"ap","burn":0,"bundle":0}]"#,
        )
        .unwrap();
        let r = read_reference(&p).unwrap();
        assert_eq!(r, vec![("dice_mean".into(), 0.25), ("ap".into(), 0.0)]);
        fs::write(&p, r#"{"dice_mean": 1}"#).unwrap();
        let e = read_reference(&p).unwrap_err().to_string();
        assert!(e.contains("not an evaluate-bundle comparison.json"), "{e}");
    }
}
