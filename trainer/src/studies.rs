//! Evaluation of a run and the paper's studies, each one function (and one CLI command) that
//! writes a Markdown report with means, patient-level 95 % BCa CIs and, against a named
//! baseline, two-sided Wilcoxon signed-rank tests with Holm–Bonferroni correction — plus a PNG
//! where the paper has a figure.
//!
//! | study | function | baseline | figure |
//! |---|---|---|---|
//! | evaluation of a checkpoint on the held-out set | [`evaluate_run`] | — | `qualitative.png` (CT, truth, prediction with IDs, lesion heatmap) |
//! | leave-one-domain-out | [`lodo_study`] | the model trained on every domain | `cross_domain.png` (train × test Dice) |
//! | ablation (UNETR → + ID → + lesion → + modulation) | [`ablation_study`] | `unetr-baseline` | — |
//! | test-time: domain codes, IN, AdaIN, TENT | [`test_time_study`] | `correct` code | — |
//! | perturbations by region | [`perturbation_study`] | `none` | — |
//! | efficiency | [`efficiency_study`] | — | — |
//!
//! Every study evaluates through one code path: [`evaluate_case`] prepares a raw case with
//! [`crate::preprocess::prepare`] (core's resampling and HU normalisation, as the appliance),
//! runs [`crate::infer::infer_case`] (sliding windows, post-processing in
//! `vertebra_core::postprocess`) and scores with [`crate::evaluate::case_metrics`] on the
//! prepared grid. Test cases are regenerated from the recipe's `data.test` phantom set (same
//! seeds, so the same synthetic patients every time).
//!
//! The training studies (LODO, ablation) train one model per row with the recipe's settings;
//! `max_steps` shortens each training for a bounded run (the report says so). Numbers from
//! shortened runs or the `tiny` recipe show that the machinery works, not what the method is
//! worth.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::tensor::{Device, Tensor, TensorData};
use serde::Serialize;
use vertebra_core::Volume;
use vertebra_core::phantom;
use vertebra_core::stats::BootstrapConfig;
use vertebra_core::volume::ops::crop_or_pad_centered;
use vertebra_model::{Ablation, VertebraFormer, VertebraFormerConfig};

use crate::dataset::Case;
use crate::evaluate::{
    CaseMetrics, Evaluation, aggregate, compare, comparisons_markdown, prepared_case_metrics,
};
use crate::infer::{InferConfig, Inference, infer_case};
use crate::perturb::{self, Perturbation};
use crate::plot::{self, Heatmap, ImagePanel};
use crate::preprocess::{PreparedCase, prepare};
use crate::run::{self, PhantomSet, RunConfig, RunOptions};
use crate::tta::{self, DomainCode, IntensityStats, StatsRegion, TentConfig, TestTimeCondition};
use crate::{Error, Result};

/// The statement every report carries.
pub const DISCLAIMER: &str = "Synthetic phantom data; research use only — not for diagnostic use.";

/// Per-case metrics compared against a baseline in every study.
pub const COMPARED: [&str; 4] = ["dice_binary", "dice_mean", "id_accuracy", "verse_id_rate"];

/// Settings shared by the studies.
#[derive(Debug, Clone)]
pub struct StudyOptions {
    /// Evaluate at most this many test cases (in set order).
    pub max_cases: Option<usize>,
    /// Inference settings.
    pub infer: InferConfig,
    /// Bootstrap settings of the CIs.
    pub bootstrap: BootstrapConfig,
    /// Family-wise level of the Holm-corrected tests.
    pub alpha: f64,
    /// Seed of random conditions (wrong domain codes, perturbation noise).
    pub seed: u64,
    /// No progress output.
    pub quiet: bool,
}

impl Default for StudyOptions {
    fn default() -> Self {
        StudyOptions {
            max_cases: None,
            infer: InferConfig::default(),
            bootstrap: BootstrapConfig::default(),
            alpha: 0.05,
            seed: 2026,
            quiet: false,
        }
    }
}

impl StudyOptions {
    /// Prints a progress line unless quiet.
    pub fn say(&self, m: &str) {
        if !self.quiet {
            eprintln!("{m}");
        }
    }
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn write(path: &Path, text: &str) -> Result<()> {
    if let Some(p) = path.parent() {
        fs::create_dir_all(p).map_err(|e| io_err(p, e))?;
    }
    fs::write(path, text).map_err(|e| io_err(path, e))
}

/// The network of a run's checkpoint (`best` or `last`) on the inference device.
///
/// # Errors
/// A missing checkpoint or unreadable weights.
pub fn load_model(run_dir: &Path, which: &str) -> Result<(VertebraFormer, VertebraFormerConfig)> {
    let dir =
        crate::checkpoint::locate(&run_dir.join("checkpoints").join(which)).ok_or_else(|| {
            Error::Checkpoint(format!(
                "{}: no `{which}` checkpoint (train first, or use --checkpoint last)",
                run_dir.display()
            ))
        })?;
    Ok(vertebra_model::weights::load(
        &dir.join(crate::checkpoint::MODEL_FILE),
        &Device::flex(),
    )?)
}

/// Case `k` of a phantom set, generated.
///
/// # Errors
/// Generator errors, with the case id.
pub fn phantom_case(set: &PhantomSet, k: usize) -> Result<Case> {
    let (id, spec) = set.case_spec(k)?;
    let p = phantom::generate(&spec).map_err(|e| Error::Case {
        case: id.clone(),
        message: e.to_string(),
    })?;
    Ok(Case::from_phantom(id, p))
}

/// Up to `n` normalised windows of a prepared scan for TENT, without ground truth: centred
/// in-plane, evenly spaced along z.
///
/// # Errors
/// Crop errors.
pub fn tent_windows(
    case: &PreparedCase,
    window: [usize; 3],
    n: usize,
    device: &Device,
) -> Result<Tensor<5>> {
    let g = case.image.geometry();
    let [nx, ny, nz] = case.image.dims();
    let [wz, wy, wx] = window;
    let n = n.max(1);
    let mut data = Vec::with_capacity(n * wz * wy * wx);
    for j in 0..n {
        let kz = (j as f64 + 0.5) * nz as f64 / n as f64;
        let centre = g.voxel_to_world([nx as f64 / 2.0, ny as f64 / 2.0, kz]);
        let w = crop_or_pad_centered(&case.image, centre, [wx, wy, wz], 0.0f32)?;
        data.extend_from_slice(w.data());
    }
    Ok(Tensor::from_data(
        TensorData::new(data, [n, 1, wz, wy, wx]),
        device,
    ))
}

/// How one case is run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CaseRun {
    /// Domain code fed to the modulation.
    pub code: DomainCode,
    /// TENT before inference.
    pub tent: Option<TentConfig>,
}

impl Default for CaseRun {
    fn default() -> Self {
        CaseRun {
            code: DomainCode::Classifier,
            tent: None,
        }
    }
}

/// The one evaluation path: prepare, (adapt,) infer, score.
///
/// # Errors
/// Preprocessing, inference and metric errors; a case without labels.
pub fn evaluate_case(
    model: &VertebraFormer,
    config: &VertebraFormerConfig,
    case: &Case,
    options: &StudyOptions,
    how: CaseRun,
) -> Result<(CaseMetrics, PreparedCase, Inference)> {
    let device = Device::flex();
    let prepared = prepare(case, config.spacing_mm)?;
    let adapted;
    let model = match how.tent {
        Some(t) => {
            let windows = tent_windows(&prepared, config.window, 4, &device)?;
            adapted = tta::tent(model, &windows, &t)?.0;
            &adapted
        }
        None => model,
    };
    let mut infer = options.infer;
    infer.domain_code = match how.code {
        DomainCode::Classifier => None,
        DomainCode::Domain(d) => Some(d),
    };
    let inference = infer_case(model, &prepared, &device, &infer)?;
    let metrics = prepared_case_metrics(&prepared, &case.patient_id, &inference.findings)?;
    Ok((metrics, prepared, inference))
}

/// The recipe's held-out phantom set named `set_name` (`test` or `val`).
///
/// # Errors
/// [`Error::InvalidArgument`] for another name.
pub fn held_out_set<'a>(recipe: &'a RunConfig, set_name: &str) -> Result<&'a PhantomSet> {
    match set_name {
        "test" => Ok(&recipe.data.test),
        "val" => Ok(&recipe.data.val),
        other => Err(Error::InvalidArgument(format!(
            "--set {other:?}: use test or val"
        ))),
    }
}

/// Number of test cases to use.
pub(crate) fn test_count(set: &PhantomSet, options: &StudyOptions) -> usize {
    options.max_cases.map_or(set.len(), |m| m.min(set.len()))
}

/// Markdown table of several evaluations (rows) over `metrics` (columns): estimate and CI.
pub fn conditions_table(evals: &[Evaluation], metrics: &[&str]) -> String {
    let mut s = String::from("| condition |");
    for m in metrics {
        let _ = write!(s, " {m} |");
    }
    s.push_str("\n|---|");
    for _ in metrics {
        s.push_str("---|");
    }
    s.push('\n');
    for e in evals {
        let _ = write!(s, "| {} |", e.model);
        for m in metrics {
            match e.metric(m) {
                Some(v) => match (v.ci_low, v.ci_high) {
                    (Some(a), Some(b)) => {
                        let _ = write!(s, " {:.3} [{a:.3}, {b:.3}] |", v.estimate);
                    }
                    _ => {
                        let _ = write!(s, " {:.3} |", v.estimate);
                    }
                },
                None => s.push_str(" — |"),
            }
        }
        s.push('\n');
    }
    s
}

/// Comparisons of every evaluation against `evals[0]` (the baseline) on `metrics` present in
/// both, as Markdown.
///
/// # Errors
/// Statistics errors.
pub fn comparisons(evals: &[Evaluation], metrics: &[&str], alpha: f64) -> Result<String> {
    let mut rows = Vec::new();
    for e in &evals[1..] {
        let usable: Vec<&str> = metrics
            .iter()
            .copied()
            .filter(|m| {
                e.cases
                    .iter()
                    .any(|c| c.values.get(*m).is_some_and(Option::is_some))
                    && evals[0]
                        .cases
                        .iter()
                        .any(|c| c.values.get(*m).is_some_and(Option::is_some))
            })
            .collect();
        if usable.is_empty() {
            continue;
        }
        rows.extend(compare(&evals[0], e, &usable, alpha)?);
    }
    Ok(comparisons_markdown(&rows))
}

fn header(title: &str, what: &str) -> String {
    format!("# {title}\n\n{DISCLAIMER}\n\n{what}\n\n")
}

/// The qualitative figure of one case: mid-sagittal CT, ground truth, prediction (decoded
/// IDs) and lesion heatmap over CT.
///
/// # Errors
/// Plotting errors.
pub fn qualitative_figure(
    prepared: &PreparedCase,
    inference: &Inference,
    path: &Path,
) -> Result<()> {
    let [nx, ny, nz] = prepared.image.dims();
    let x = nx / 2;
    // Sagittal slice: columns = y (anterior → posterior), rows = z from superior (top) down.
    let slice = |get: &dyn Fn(usize, usize, usize) -> f32| -> Vec<f32> {
        let mut v = Vec::with_capacity(ny * nz);
        for r in 0..nz {
            let z = nz - 1 - r;
            for y in 0..ny {
                v.push(get(x, y, z));
            }
        }
        v
    };
    let hu = vertebra_core::volume::ops::denormalize_hu_volume(&prepared.image)?;
    let ct = slice(&|x, y, z| hu.data()[x + nx * (y + ny * z)]);
    let label_slice = |l: &Volume<u8>| -> Vec<u8> {
        slice(&|x, y, z| f32::from(l.data()[x + nx * (y + ny * z)]))
            .into_iter()
            .map(|v| v as u8)
            .collect()
    };
    let truth = prepared
        .labels
        .as_ref()
        .map_or_else(|| vec![0; ny * nz], label_slice);
    let pred = label_slice(&inference.findings.label_map());
    let heat: Vec<f32> = match &inference.outputs.lesions {
        Some(m) => {
            let s = m.stride;
            let [gz, gy, gx] = m.grid;
            let cells = m.cells();
            slice(&|x, y, z| {
                let (cz, cy, cx) = (
                    (z / s).min(gz - 1),
                    (y / s).min(gy - 1),
                    (x / s).min(gx - 1),
                );
                let i = cx + gx * (cy + gy * cz);
                (0..4)
                    .map(|c| {
                        vertebra_core::postprocess::lesions::sigmoid(
                            m.heatmap_logits[c * cells + i],
                        )
                    })
                    .fold(0.0f64, f64::max) as f32
            })
        }
        None => vec![0.0; ny * nz],
    };
    let panel = |labels: Option<&[u8]>, heat: Option<&[f32]>| {
        plot::image_panel(&ImagePanel {
            width: ny,
            height: nz,
            image: &ct,
            window: (-400.0, 1000.0),
            labels,
            label_alpha: 0.45,
            heat,
            heat_alpha: 0.8,
            scale: 2,
        })
    };
    let row = plot::panel_row(&[
        ("CT".into(), panel(None, None)?),
        ("ground truth".into(), panel(Some(&truth), None)?),
        ("prediction".into(), panel(Some(&pred), None)?),
        ("lesion heatmap".into(), panel(None, Some(&heat))?),
    ]);
    row.save_png(path)
}

/// What [`evaluate_run`] wrote.
#[derive(Debug, Clone)]
pub struct EvalOutput {
    /// The evaluation.
    pub evaluation: Evaluation,
    /// Report directory.
    pub dir: PathBuf,
}

/// Evaluates a run's checkpoint on its recipe's test (or validation) set; writes
/// `<run>/eval-<set>-<checkpoint>/{report.md, evaluation.json, qualitative.png}`.
///
/// # Errors
/// Checkpoint, generation, inference and metric errors.
pub fn evaluate_run(
    run_dir: &Path,
    checkpoint: &str,
    set_name: &str,
    options: &StudyOptions,
) -> Result<EvalOutput> {
    let recipe = RunConfig::load(&run_dir.join("recipe.json"))?;
    let set = held_out_set(&recipe, set_name)?;
    let (model, config) = load_model(run_dir, checkpoint)?;
    let n = test_count(set, options);
    let mut cases = Vec::with_capacity(n);
    let dir = run_dir.join(format!("eval-{set_name}-{checkpoint}"));
    fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let t0 = Instant::now();
    for k in 0..n {
        let case = phantom_case(set, k)?;
        let (m, prepared, inference) =
            evaluate_case(&model, &config, &case, options, CaseRun::default())?;
        if k == 0 {
            qualitative_figure(&prepared, &inference, &dir.join("qualitative.png"))?;
        }
        let value = |k: &str| m.values.get(k).copied().flatten().unwrap_or(f64::NAN);
        options.say(&format!(
            "  {}/{n} {}: Dice {:.3}, ID {:.3}, instances per vertebra {:.2} ({:.0} s)",
            k + 1,
            case.id,
            value("dice_mean"),
            value("id_accuracy"),
            value("instances_per_vertebra"),
            t0.elapsed().as_secs_f64()
        ));
        cases.push(m);
    }
    let name = format!("{} ({checkpoint})", recipe.name);
    let evaluation = aggregate(&name, cases, &options.bootstrap)?;
    let mut md = header(
        &format!("Evaluation of {} on the {set_name} set", recipe.name),
        &format!(
            "Checkpoint `{checkpoint}` of `{}`; {n} phantom cases of `data.{set_name}` (seeds \
             from {}); sliding windows with overlap {}, identification {}, anatomical-order \
             decoding in core.",
            run_dir.display(),
            set.base_seed,
            options.infer.overlap,
            if options.infer.use_id_head {
                "by the ID head"
            } else {
                "by label votes"
            }
        ),
    );
    md.push_str(&evaluation.to_markdown());
    md.push_str("\n![qualitative](qualitative.png)\n");
    write(&dir.join("report.md"), &md)?;
    write(&dir.join("evaluation.json"), &evaluation.to_json()?)?;
    Ok(EvalOutput { evaluation, dir })
}

/// Evaluates `model` on cases `0..n` of `set` with a per-case transform of the raw case and a
/// per-case run mode, under the evaluation name `name`.
fn evaluate_condition(
    name: &str,
    model: &VertebraFormer,
    config: &VertebraFormerConfig,
    cases: &[Case],
    options: &StudyOptions,
    transform: &dyn Fn(usize, &Case) -> Result<Case>,
    how: &dyn Fn(usize) -> CaseRun,
) -> Result<Evaluation> {
    let t0 = Instant::now();
    let mut out = Vec::with_capacity(cases.len());
    for (k, case) in cases.iter().enumerate() {
        let c = transform(k, case)?;
        let (m, _, _) = evaluate_case(model, config, &c, options, how(k))?;
        out.push(m);
    }
    options.say(&format!(
        "  {name}: {} cases in {:.0} s",
        cases.len(),
        t0.elapsed().as_secs_f64()
    ));
    aggregate(name, out, &options.bootstrap)
}

/// Generates the first `n` cases of a set.
fn generate(set: &PhantomSet, n: usize) -> Result<Vec<Case>> {
    (0..n).map(|k| phantom_case(set, k)).collect()
}

/// Region metrics of the perturbation table.
pub const REGION_METRICS: [&str; 7] = [
    "dice_mean",
    "dice_mean_cervical",
    "dice_mean_thoracic",
    "dice_mean_lumbar",
    "id_accuracy_cervical",
    "id_accuracy_thoracic",
    "id_accuracy_lumbar",
];

/// The perturbation study on a run's `best` checkpoint: every condition of
/// [`perturb::study_conditions`] applied to the test cases; Dice and ID accuracy by region,
/// compared with the unperturbed cases. Writes `<out>/perturbations.md`.
///
/// # Errors
/// As [`evaluate_run`]; perturbation errors.
pub fn perturbation_study(run_dir: &Path, out: &Path, options: &StudyOptions) -> Result<String> {
    let recipe = RunConfig::load(&run_dir.join("recipe.json"))?;
    let (model, config) = load_model(run_dir, "best")?;
    let cases = generate(&recipe.data.test, test_count(&recipe.data.test, options))?;
    let mut evals = Vec::new();
    for p in perturb::study_conditions() {
        let seed = options.seed;
        let t = move |k: usize, c: &Case| -> Result<Case> {
            match p {
                Perturbation::None => Ok(c.clone()),
                _ => p.apply(c, run::mix_seed(seed, k as u64, 0)),
            }
        };
        evals.push(evaluate_condition(
            &p.name(),
            &model,
            &config,
            &cases,
            options,
            &t,
            &|_| CaseRun::default(),
        )?);
    }
    let mut md = header(
        "Perturbation study",
        &format!(
            "Model: `{}` best checkpoint; {} test phantoms; baseline row `none`. Intensity \
             scales HU, noise is white Gaussian in HU, slice thickness re-reconstructs thicker \
             slabs, metal adds pedicle screws with streaks (`trainer/src/perturb.rs`).",
            run_dir.display(),
            cases.len()
        ),
    );
    md.push_str(&conditions_table(&evals, &REGION_METRICS));
    md.push_str("\n## Against `none` (Wilcoxon signed-rank, Holm over metrics)\n\n");
    md.push_str(&comparisons(&evals, &REGION_METRICS, options.alpha)?);
    write(&out.join("perturbations.md"), &md)?;
    Ok(md)
}

/// The test-time study on a run's `best` checkpoint: domain codes (correct, 10/20/30 % wrong,
/// random, swapped, the model's own classifier), instance norm, AdaIN and TENT; compared with
/// the correct code. Writes `<out>/test-time.md`.
///
/// # Errors
/// As [`evaluate_run`]; a model without dynamic modulation (no domain codes to vary).
pub fn test_time_study(
    run_dir: &Path,
    out: &Path,
    options: &StudyOptions,
    tent_config: &TentConfig,
) -> Result<String> {
    let recipe = RunConfig::load(&run_dir.join("recipe.json"))?;
    let (model, config) = load_model(run_dir, "best")?;
    if !config.dynamic_modulation {
        return Err(Error::InvalidArgument(
            "the test-time study needs a model with dynamic modulation (domain codes)".into(),
        ));
    }
    let cases = generate(&recipe.data.test, test_count(&recipe.data.test, options))?;
    let domains: Vec<String> = cases.iter().map(|c| c.domain.clone()).collect();
    // Training intensity statistics for IN / AdaIN: the first training cases.
    let train_n = recipe.data.train.len().min(4);
    let train = generate(&recipe.data.train, train_n)?;
    let whole: IntensityStats = tta::training_statistics(&train, StatsRegion::Whole)?;
    let body: IntensityStats = tta::training_statistics(&train, StatsRegion::Body)?;
    drop(train);
    let mut evals = Vec::new();
    for condition in tta::study_conditions() {
        let codes = tta::assign_domain_codes(&domains, &config.domains, condition, options.seed)?;
        let transform = move |_k: usize, c: &Case| -> Result<Case> {
            match condition {
                TestTimeCondition::InstanceNorm => tta::instance_norm(c, whole),
                TestTimeCondition::AdaIn => tta::adain(c, body),
                _ => Ok(c.clone()),
            }
        };
        let how = |k: usize| CaseRun {
            code: codes[k],
            tent: (condition == TestTimeCondition::Tent).then_some(*tent_config),
        };
        evals.push(evaluate_condition(
            &condition.name(),
            &model,
            &config,
            &cases,
            options,
            &transform,
            &how,
        )?);
    }
    let mut md = header(
        "Test-time study",
        &format!(
            "Model: `{}` best checkpoint; {} test phantoms; baseline row `correct` (each scan's \
             own domain code). `wrong-P`: P % of scans get another domain's code; `random`: a \
             random wrong code; `swapped`: domain d → d+1; `none`: the model's domain \
             classifier; `instance-norm`/`adain`: input statistics matched to the training \
             statistics (whole scan / body); `tent`: {} Adam steps at lr {} on the \
             normalisation affine parameters, entropy of the label softmax on 4 windows of the \
             test scan (`trainer/src/tta.rs`).",
            run_dir.display(),
            cases.len(),
            tent_config.steps,
            tent_config.lr
        ),
    );
    md.push_str(&conditions_table(&evals, &COMPARED));
    md.push_str("\n## Against `correct` (Wilcoxon signed-rank, Holm over metrics)\n\n");
    md.push_str(&comparisons(&evals, &COMPARED, options.alpha)?);
    write(&out.join("test-time.md"), &md)?;
    Ok(md)
}

/// A recipe for one row of a training study: `base` with `name`, limited to `max_steps` in
/// total by shrinking the epochs' step count (the curriculum and schedule scale with it).
fn row_recipe(base: &RunConfig, name: &str, max_steps: Option<usize>) -> RunConfig {
    let mut r = base.clone();
    r.name = format!("{}-{name}", base.name);
    if let Some(m) = max_steps {
        let epochs = r.train.epochs.max(1);
        r.train.steps_per_epoch = (m / epochs).max(1);
        if r.train.total_steps() > m {
            r.train.epochs = m.max(1);
            r.train.steps_per_epoch = 1;
        }
        r.validation.every_steps = r.validation.every_steps.min(r.train.total_steps());
        r.checkpoint_every_steps = r.checkpoint_every_steps.min(r.train.total_steps());
    }
    r
}

/// Trains `recipe` into `dir` (or resumes it there), quietly when asked.
fn train_row(recipe: &RunConfig, dir: &Path, options: &StudyOptions) -> Result<()> {
    let opts = RunOptions {
        quiet: options.quiet,
        ..RunOptions::default()
    };
    if dir.join("recipe.json").exists() {
        run::run(dir, None, &opts)?;
    } else {
        run::run(dir, Some(recipe), &opts)?;
    }
    Ok(())
}

/// Evaluates a trained row on `cases` under the model's own domain classifier.
fn evaluate_row(
    name: &str,
    dir: &Path,
    cases: &[Case],
    options: &StudyOptions,
) -> Result<Evaluation> {
    let (model, config) = load_model(dir, "best")?;
    evaluate_condition(
        name,
        &model,
        &config,
        cases,
        options,
        &|_, c| Ok(c.clone()),
        &|_| CaseRun::default(),
    )
}

/// The ablation study: the recipe trained four times (UNETR baseline, + ID, + lesion, +
/// modulation = full), each evaluated on the test set, compared with the baseline. Writes
/// `<out>/ablation.md`; the runs live in `<out>/runs/<row>` (a rerun resumes them).
///
/// # Errors
/// Training and evaluation errors.
pub fn ablation_study(
    recipe: &RunConfig,
    out: &Path,
    max_steps: Option<usize>,
    options: &StudyOptions,
) -> Result<String> {
    let cases = generate(&recipe.data.test, test_count(&recipe.data.test, options))?;
    let mut evals = Vec::new();
    for row in Ablation::ALL {
        let mut r = row_recipe(recipe, row.name(), max_steps);
        r.ablation = Some(row.name().to_owned());
        let dir = out.join("runs").join(row.name());
        options.say(&format!("ablation row {}: training", row.name()));
        train_row(&r, &dir, options)?;
        evals.push(evaluate_row(row.name(), &dir, &cases, options)?);
    }
    let mut md = header(
        "Ablation study",
        &format!(
            "Recipe `{}`{}; {} test phantoms; baseline row `unetr-baseline`. Rows add the \
             identification branch, the lesion head, then dynamic modulation (the full model).",
            recipe.name,
            max_steps.map_or(String::new(), |m| format!(
                ", each row shortened to {m} steps"
            )),
            cases.len()
        ),
    );
    let metrics = [
        "dice_binary",
        "dice_mean",
        "id_accuracy_raw",
        "id_accuracy",
        "verse_id_rate",
    ];
    md.push_str(&conditions_table(&evals, &metrics));
    md.push_str("\n## Against `unetr-baseline` (Wilcoxon signed-rank, Holm over metrics)\n\n");
    md.push_str(&comparisons(&evals, &metrics, options.alpha)?);
    write(&out.join("ablation.md"), &md)?;
    Ok(md)
}

/// Leave-one-domain-out: for every training domain, the recipe trained without it; each
/// model (and one trained on every domain) evaluated on the test cases of every domain.
/// Writes `<out>/lodo.md` and `<out>/cross_domain.png` (rows: held-out domain of the
/// training, columns: test domain, cells: mean Dice). Compared with the all-domain model on
/// the held-out domain's cases.
///
/// Domains a recipe cannot train on (MR-like phantoms need an MR normalisation in core that
/// does not exist yet) are refused by preprocessing with that message.
///
/// # Errors
/// Training and evaluation errors.
pub fn lodo_study(
    recipe: &RunConfig,
    out: &Path,
    max_steps: Option<usize>,
    options: &StudyOptions,
) -> Result<String> {
    let domains = recipe.data.train.domains.clone();
    if domains.len() < 2 {
        return Err(Error::InvalidArgument(
            "leave-one-domain-out needs at least two training domains".into(),
        ));
    }
    // Test cases per domain (same count per domain).
    let per_domain = recipe.data.test.cases_per_domain;
    let take = options
        .max_cases
        .map_or(per_domain, |m| (m / domains.len()).clamp(1, per_domain));
    let mut test_by_domain: Vec<Vec<Case>> = Vec::new();
    for (d, _) in domains.iter().enumerate() {
        let mut v = Vec::new();
        for i in 0..take {
            v.push(phantom_case(&recipe.data.test, d * per_domain + i)?);
        }
        test_by_domain.push(v);
    }
    let mut rows: Vec<(String, Vec<Evaluation>)> = Vec::new();
    let mut all_rows = vec![("all".to_owned(), None)];
    all_rows.extend(
        domains
            .iter()
            .map(|d| (format!("without-{d}"), Some(d.clone()))),
    );
    for (name, held_out) in &all_rows {
        let mut r = row_recipe(recipe, name, max_steps);
        if let Some(h) = held_out {
            r.data.train.domains.retain(|d| d != h);
            r.data.val.domains.retain(|d| d != h);
            if r.data.val.domains.is_empty() {
                return Err(Error::Config(format!(
                    "leave-one-domain-out without {h}: no validation domain is left (the \
                     held-out domain must not steer early stopping); give data.val at least \
                     two domains"
                )));
            }
        }
        let dir = out.join("runs").join(name);
        options.say(&format!("LODO row {name}: training"));
        train_row(&r, &dir, options)?;
        let mut evals = Vec::new();
        for (d, cases) in domains.iter().zip(&test_by_domain) {
            evals.push(evaluate_row(
                &format!("{name} on {d}"),
                &dir,
                cases,
                options,
            )?);
        }
        rows.push((name.clone(), evals));
    }
    let values: Vec<Vec<Option<f64>>> = rows
        .iter()
        .map(|(_, evals)| {
            evals
                .iter()
                .map(|e| e.metric("dice_mean").map(|m| m.estimate))
                .collect()
        })
        .collect();
    let (canvas, _) = plot::heatmap(
        &Heatmap {
            title: "mean Dice: training (rows) x test domain (columns)".into(),
            row_labels: rows.iter().map(|(n, _)| n.clone()).collect(),
            col_labels: domains.clone(),
            values: values.clone(),
            vmin: 0.0,
            vmax: 1.0,
        },
        72,
    )?;
    fs::create_dir_all(out).map_err(|e| io_err(out, e))?;
    canvas.save_png(&out.join("cross_domain.png"))?;
    let mut md = header(
        "Leave-one-domain-out",
        &format!(
            "Recipe `{}`{}; {take} test phantoms per domain. Row `all` trains on every domain; \
             `without-D` trains without domain D (train and validation). Cells: mean \
             per-vertebra Dice with 95 % CI.",
            recipe.name,
            max_steps.map_or(String::new(), |m| format!(
                ", each row shortened to {m} steps"
            ))
        ),
    );
    md.push_str("| training | ");
    md.push_str(&domains.join(" | "));
    md.push_str(" |\n|---|");
    md.push_str(&"---|".repeat(domains.len()));
    md.push('\n');
    for (name, evals) in &rows {
        let _ = write!(md, "| {name} |");
        for e in evals {
            match e.metric("dice_mean") {
                Some(m) => match (m.ci_low, m.ci_high) {
                    (Some(a), Some(b)) => {
                        let _ = write!(md, " {:.3} [{a:.3}, {b:.3}] |", m.estimate);
                    }
                    _ => {
                        let _ = write!(md, " {:.3} |", m.estimate);
                    }
                },
                None => md.push_str(" — |"),
            }
        }
        md.push('\n');
    }
    md.push_str(
        "\n![cross-domain](cross_domain.png)\n\n## Held-out domain vs the all-domain model\n\n",
    );
    for (d, _) in domains.iter().enumerate() {
        let base = &rows[0].1[d];
        let held = &rows[d + 1].1[d];
        md.push_str(&comparisons(
            &[base.clone(), held.clone()],
            &COMPARED,
            options.alpha,
        )?);
        md.push('\n');
    }
    write(&out.join("lodo.md"), &md)?;
    Ok(md)
}

/// One efficiency measurement.
#[derive(Debug, Clone, Serialize)]
pub struct Efficiency {
    /// Preset name.
    pub preset: String,
    /// Parameters.
    pub params: usize,
    /// Analytic FLOPs of one window's forward, 10⁹.
    pub gflops: f64,
    /// Median forward latency of one window, s.
    pub window_forward_s: f64,
    /// Windows per second (1 / latency).
    pub windows_per_s: f64,
    /// Whole-case latency: sliding windows + post-processing of one test phantom, s.
    pub case_latency_s: f64,
    /// Post-processing share of it, s.
    pub postprocess_s: f64,
    /// Peak resident set of the process after the measurements, bytes.
    pub peak_rss_bytes: Option<u64>,
}

/// Resets the process's peak-RSS counter (`VmHWM`) so that the next reading is the peak of
/// what follows (Linux `clear_refs` 5); a no-op where unsupported.
fn reset_peak_rss() {
    let _ = fs::write("/proc/self/clear_refs", "5");
}

/// Measures one network configuration (see [`efficiency_study`]).
fn measure_efficiency(
    name: &str,
    config: &VertebraFormerConfig,
    case: &Case,
    repeats: usize,
    options: &StudyOptions,
) -> Result<Efficiency> {
    reset_peak_rss();
    let device = Device::flex();
    let model = config.init(&device)?;
    let cost = config.cost();
    let [wz, wy, wx] = config.window;
    let x = Tensor::<5>::zeros([1, 1, wz, wy, wx], &device);
    let mut times = Vec::new();
    for i in 0..=repeats.max(1) {
        let t = Instant::now();
        let o = model.forward(vertebra_model::VertebraFormerInput::from_image(x.clone()))?;
        let _ = o.vertebra_logit.into_data();
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let prepared = prepare(case, config.spacing_mm)?;
    let t = Instant::now();
    let inference = infer_case(&model, &prepared, &device, &options.infer)?;
    let case_latency = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let _ = vertebra_core::postprocess::postprocess(
        &inference.outputs.dense,
        inference.outputs.lesions.as_ref(),
        Some(&vertebra_core::volume::ops::denormalize_hu_volume(
            &prepared.image,
        )?),
        &options.infer.postprocess,
    )?;
    let post = t.elapsed().as_secs_f64();
    Ok(Efficiency {
        preset: name.to_owned(),
        params: cost.params as usize,
        gflops: cost.flops as f64 / 1e9,
        window_forward_s: median,
        windows_per_s: 1.0 / median,
        case_latency_s: case_latency,
        postprocess_s: post,
        peak_rss_bytes: vertebra_model::bench::peak_rss_bytes(),
    })
}

/// The efficiency study: for each `(name, configuration)` (randomly initialised; speed does
/// not depend on the weights), parameters, analytic FLOPs, median forward latency of one
/// window over `repeats` runs and windows/s, whole-case latency including post-processing on
/// `case` (sliding windows on the preset's grid), the post-processing share, and the peak
/// resident memory of that preset's measurement. The first preset is the baseline of the
/// latency ratios (machines are shared: compare within one run). Writes `<out>/efficiency.md`
/// and `.json`.
///
/// # Errors
/// No preset; model and inference errors.
pub fn efficiency_study(
    presets: &[(String, VertebraFormerConfig)],
    case: &Case,
    repeats: usize,
    out: &Path,
    options: &StudyOptions,
) -> Result<Vec<Efficiency>> {
    if presets.is_empty() {
        return Err(Error::InvalidArgument(
            "efficiency needs at least one preset".into(),
        ));
    }
    let mut rows = Vec::new();
    for (name, config) in presets {
        options.say(&format!("efficiency: {name}"));
        rows.push(measure_efficiency(name, config, case, repeats, options)?);
    }
    let mut md = header(
        "Efficiency",
        &format!(
            "Burn flex backend, this machine; one window per forward; whole case `{}` through \
             sliding windows (overlap {}) + post-processing; median of {} forward runs. The \
             ratio columns compare with the first row measured in the same run.",
            case.id,
            options.infer.overlap,
            repeats.max(1)
        ),
    );
    md.push_str(
        "| preset | params | GFLOPs/window | forward/window (s) | × first | windows/s | case incl. post-processing (s) | × first | post-processing (s) | peak RSS (MiB) |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    let (f0, c0) = (rows[0].window_forward_s, rows[0].case_latency_s);
    for e in &rows {
        let _ = writeln!(
            md,
            "| {} | {} | {:.3} | {:.3} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {} |",
            e.preset,
            e.params,
            e.gflops,
            e.window_forward_s,
            e.window_forward_s / f0,
            e.windows_per_s,
            e.case_latency_s,
            e.case_latency_s / c0,
            e.postprocess_s,
            e.peak_rss_bytes
                .map_or("—".into(), |b| format!("{:.0}", b as f64 / 1_048_576.0))
        );
    }
    write(&out.join("efficiency.md"), &md)?;
    write(
        &out.join("efficiency.json"),
        &serde_json::to_string_pretty(&rows).map_err(|e| Error::Config(e.to_string()))?,
    )?;
    Ok(rows)
}

/// Loss and validation curves of a run as PNGs (`<run>/plots/{loss,validation}.png`) from its
/// `metrics.jsonl`.
///
/// # Errors
/// A missing or malformed metrics file; plotting errors.
pub fn plot_run(run_dir: &Path) -> Result<Vec<PathBuf>> {
    let path = run_dir.join("metrics.jsonl");
    let text = fs::read_to_string(&path).map_err(|e| io_err(&path, e))?;
    let mut series: Vec<plot::Series> = ["total", "seg", "id", "det", "domain"]
        .iter()
        .map(|n| plot::Series {
            name: (*n).to_owned(),
            points: Vec::new(),
        })
        .collect();
    let mut dice = plot::Series {
        name: "val Dice".into(),
        points: Vec::new(),
    };
    let mut id = plot::Series {
        name: "val ID acc (GT boxes)".into(),
        points: Vec::new(),
    };
    for (i, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line)
            .map_err(|e| Error::Config(format!("{} line {}: {e}", path.display(), i + 1)))?;
        let step = v["step"].as_f64().unwrap_or(f64::NAN);
        match v["kind"].as_str() {
            Some("step") => {
                for s in &mut series {
                    let y = v["loss"][&s.name].as_f64().unwrap_or(f64::NAN);
                    s.points.push((step, y));
                }
            }
            Some("validation") => {
                dice.points
                    .push((step, v["dice"].as_f64().unwrap_or(f64::NAN)));
                id.points
                    .push((step, v["id_accuracy"].as_f64().unwrap_or(f64::NAN)));
            }
            _ => {}
        }
    }
    let dir = run_dir.join("plots");
    fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let loss = dir.join("loss.png");
    plot::line_plot(
        &plot::LinePlot {
            title: "training loss terms (unweighted) and weighted total".into(),
            x_label: "step".into(),
            y_label: "loss".into(),
            series,
        },
        900,
        500,
    )?
    .0
    .save_png(&loss)?;
    let val = dir.join("validation.png");
    plot::line_plot(
        &plot::LinePlot {
            title: "validation windows".into(),
            x_label: "step".into(),
            y_label: "metric".into(),
            series: vec![dice, id],
        },
        900,
        500,
    )?
    .0
    .save_png(&val)?;
    Ok(vec![loss, val])
}
