//! The trainer's evaluation run through an exported model bundle on ONNX Runtime, paired case
//! by case with the Burn checkpoint it was exported from: the proof that the appliance's
//! inference (same `vertebra_core::inference` path, same `vertebra_export::runtime` network)
//! gives the trainer's numbers.
//!
//! For every held-out case: one preparation (`crate::preprocess::prepare`), then
//! `vertebra_core::inference::infer_prepared` twice — with the Burn network
//! ([`evaluate_case`]) and with the bundle's graphs ([`OrtNetwork`]) — and the same metrics
//! ([`prepared_case_metrics`]). The report lists both aggregates and their difference per
//! metric; [`BundleComparison::max_abs_difference`] is what the CLI checks against the
//! tolerance (0.5 points by default).

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use ort::session::Session;
use vertebra_core::inference::infer_prepared;
use vertebra_export::bundle::{VerifiedBundle, verify_bundle};
use vertebra_export::runtime::{OrtNetwork, Sessions, check_sessions, environment, locate_library};
use vertebra_export::signing::TrustedKeys;

use crate::evaluate::{Evaluation, aggregate, prepared_case_metrics};
use crate::run::RunConfig;
use crate::studies::{
    CaseRun, StudyOptions, evaluate_case, held_out_set, load_model, phantom_case, test_count,
};
use crate::{Error, Result};

/// Where the bundle and ONNX Runtime are.
#[derive(Debug, Clone)]
pub struct BundleSource {
    /// The bundle directory.
    pub bundle: PathBuf,
    /// Trusted public keys.
    pub trusted_keys: PathBuf,
    /// The ONNX Runtime library (`None`: `ORT_DYLIB_PATH`, then the standard locations).
    pub onnxruntime: Option<PathBuf>,
    /// ONNX Runtime intra-op threads (0: its default).
    pub threads: usize,
    /// Suffix of the report directory (`eval-<set>-<checkpoint>-bundle-<label>`), to keep
    /// reports of several bundles of one run apart (e.g. `fp16`). `None`: no suffix.
    pub label: Option<String>,
}

/// One metric under both runtimes.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct PairedMetric {
    /// Metric name.
    pub name: String,
    /// Burn checkpoint's estimate.
    pub burn: f64,
    /// Bundle's estimate.
    pub bundle: f64,
}

/// The result of [`evaluate_bundle`].
#[derive(Debug, Clone)]
pub struct BundleComparison {
    /// The Burn evaluation.
    pub burn: Evaluation,
    /// The bundle evaluation.
    pub bundle: Evaluation,
    /// Every metric both have, by name.
    pub metrics: Vec<PairedMetric>,
    /// The report directory.
    pub dir: PathBuf,
}

impl BundleComparison {
    /// The largest |bundle − burn| over the aggregate metrics (fractions: 0.005 = 0.5 points).
    pub fn max_abs_difference(&self) -> f64 {
        self.metrics
            .iter()
            .map(|m| (m.bundle - m.burn).abs())
            .filter(|d| d.is_finite())
            .fold(0.0, f64::max)
    }
}

fn bundle_err(e: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!("model bundle: {e}"))
}

fn cpu_session(
    env: &ort::environment::Environment,
    file: &Path,
    threads: usize,
) -> Result<Session> {
    let mut b = Session::builder(env).map_err(bundle_err)?;
    if threads > 0 {
        b = b.with_intra_threads(threads).map_err(bundle_err)?;
    }
    b.commit_from_file(file)
        .map_err(|e| bundle_err(format!("{}: {e}", file.display())))
}

/// Verifies the bundle and builds CPU sessions for it.
///
/// # Errors
/// A refused bundle, a missing ONNX Runtime, graphs that do not match the contract.
pub fn open_bundle(src: &BundleSource) -> Result<(VerifiedBundle, Sessions)> {
    let trusted = TrustedKeys::from_dir(&src.trusted_keys).map_err(bundle_err)?;
    let bundle = verify_bundle(&src.bundle, &trusted).map_err(bundle_err)?;
    let env = environment(&locate_library(src.onnxruntime.as_deref()).map_err(bundle_err)?)
        .map_err(bundle_err)?;
    let m = &bundle.manifest;
    let main = cpu_session(env, &bundle.path(&m.model.main_graph), src.threads)?;
    let id_head = match &m.model.id_head_graph {
        Some(f) => Some(cpu_session(env, &bundle.path(f), src.threads)?),
        None => None,
    };
    let sessions = Sessions { main, id_head };
    check_sessions(&sessions, m).map_err(bundle_err)?;
    Ok((bundle, sessions))
}

/// Evaluates a run's checkpoint (Burn) and a bundle exported from it (ONNX Runtime) on the
/// same held-out cases; writes `<run>/eval-<set>-<checkpoint>-bundle[-<label>]/{report.md,
/// comparison.json}`.
///
/// # Errors
/// As [`open_bundle`]; a bundle whose contract is not the checkpoint's (window, spacing);
/// the evaluation's errors.
pub fn evaluate_bundle(
    run_dir: &Path,
    checkpoint: &str,
    set_name: &str,
    src: &BundleSource,
    options: &StudyOptions,
) -> Result<BundleComparison> {
    let recipe = RunConfig::load(&run_dir.join("recipe.json"))?;
    let set = held_out_set(&recipe, set_name)?;
    let (model, config) = load_model(run_dir, checkpoint)?;
    let (bundle, mut sessions) = open_bundle(src)?;
    let m = &bundle.manifest;
    if m.contract.window != config.window || m.contract.spacing_mm != config.spacing_mm {
        return Err(bundle_err(format!(
            "contract window {:?} at {} mm is not the checkpoint's {:?} at {} mm",
            m.contract.window, m.contract.spacing_mm, config.window, config.spacing_mm
        )));
    }
    let n = test_count(set, options);
    let (mut burn_cases, mut ort_cases) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let t0 = Instant::now();
    for k in 0..n {
        let case = phantom_case(set, k)?;
        // One preparation per case: the Burn evaluation's prepared case feeds the bundle too.
        let (burn_m, prepared, _) =
            evaluate_case(&model, &config, &case, options, CaseRun::default())?;
        let mut progress = |_: usize| {};
        let mut net = OrtNetwork::new(&mut sessions, m, &mut progress);
        let inference =
            infer_prepared(&mut net, &prepared.image, &options.infer.core()).map_err(bundle_err)?;
        let ort_m = prepared_case_metrics(&prepared, &case.patient_id, &inference.findings)?;
        let get = |c: &crate::evaluate::CaseMetrics, k: &str| {
            c.values.get(k).copied().flatten().unwrap_or(f64::NAN)
        };
        options.say(&format!(
            "  {}/{n} {}: Dice {:.4} / {:.4}, ID {:.3} / {:.3} (Burn / bundle; {:.0} s)",
            k + 1,
            case.id,
            get(&burn_m, "dice_mean"),
            get(&ort_m, "dice_mean"),
            get(&burn_m, "id_accuracy"),
            get(&ort_m, "id_accuracy"),
            t0.elapsed().as_secs_f64()
        ));
        burn_cases.push(burn_m);
        ort_cases.push(ort_m);
    }
    let burn = aggregate(
        &format!("{} ({checkpoint}, Burn)", recipe.name),
        burn_cases,
        &options.bootstrap,
    )?;
    let ort = aggregate(
        &format!("{} (bundle, ONNX Runtime)", m.model.name),
        ort_cases,
        &options.bootstrap,
    )?;
    let metrics: Vec<PairedMetric> = burn
        .summary
        .iter()
        .filter_map(|b| {
            ort.summary
                .iter()
                .find(|o| o.name == b.name)
                .map(|o| PairedMetric {
                    name: b.name.clone(),
                    burn: b.estimate,
                    bundle: o.estimate,
                })
        })
        .collect();
    let dir = run_dir.join(match &src.label {
        Some(l) => format!("eval-{set_name}-{checkpoint}-bundle-{l}"),
        None => format!("eval-{set_name}-{checkpoint}-bundle"),
    });
    fs::create_dir_all(&dir).map_err(|e| Error::Io {
        path: dir.clone(),
        source: e,
    })?;
    let comparison = BundleComparison {
        burn,
        bundle: ort,
        metrics,
        dir: dir.clone(),
    };
    let mut md = format!(
        "# Bundle vs checkpoint on the {set_name} set\n\n{}\n\nCheckpoint `{checkpoint}` of \
         `{}` (Burn, flex CPU) and bundle `{}` (manifest sha256 `{}`, ONNX Runtime CPU) on the \
         same {n} phantom cases of `data.{set_name}`, through the same preparation, spine \
         localisation, windows, post-processing and metrics.\n\n| metric | Burn | bundle | \
         difference |\n|---|---|---|---|\n",
        crate::studies::DISCLAIMER,
        run_dir.display(),
        src.bundle.display(),
        bundle.manifest_sha256,
    );
    for p in &comparison.metrics {
        let _ = writeln!(
            md,
            "| {} | {:.4} | {:.4} | {:+.4} |",
            p.name,
            p.burn,
            p.bundle,
            p.bundle - p.burn
        );
    }
    let _ = writeln!(
        md,
        "\nLargest absolute difference: {:.4} ({:.2} points).",
        comparison.max_abs_difference(),
        100.0 * comparison.max_abs_difference()
    );
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        fs::write(&p, text).map_err(|e| Error::Io { path: p, source: e })
    };
    write("report.md", &md)?;
    write(
        "comparison.json",
        &serde_json::to_string_pretty(&comparison.metrics)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?,
    )?;
    Ok(comparison)
}
