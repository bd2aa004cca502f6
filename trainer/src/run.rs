//! The training run: a recipe file in, a run directory out.
//!
//! ## Recipe (`RunConfig`, JSON; `recipes/*.json` in the repository)
//! The model preset (+ ablation and field overrides), the optimisation settings
//! ([`TrainConfig`]), batch size, seeds, the data (phantom sets generated from
//! `vertebra_core::phantom`), validation and checkpoint cadence. Unknown fields are refused.
//!
//! ## Run directory
//! - `recipe.json`: the recipe as resolved (what `resume` reads back);
//! - `model_config.json`: the network configuration;
//! - `metrics.jsonl`: one JSON object per logged step (`"kind":"step"`) and per validation
//!   (`"kind":"validation"`);
//! - `checkpoints/last`, `checkpoints/best`: see [`crate::checkpoint`];
//! - `plots/loss.png`, `plots/validation.png`: curves, redrawn at every validation;
//! - `summary.json`: written when training ends (last step or early stop).
//!
//! ## Determinism
//! The samples of step `s` are a pure function of `(seed, s)`: each batch item draws its case,
//! window centre and augmentation from a ChaCha stream seeded with a hash of `(seed, s, item)`.
//! A resumed run therefore continues with exactly the data an uninterrupted run would see, and
//! no sampler state needs saving. Loading runs ahead in background threads
//! ([`Prefetcher`]) without changing that order. Augmentation (`augmentation` in the recipe)
//! draws from the same per-item stream.
//!
//! ## Validation and early stopping
//! Every `validation.every_steps` steps the network (without autodiff) runs on fixed windows of
//! the validation cases: `windows_per_case` windows centred on vertebra centroids evenly spaced
//! along each column. The mean binary Dice decides the best checkpoint; `patience`
//! validations without an improvement of more than `min_delta` stop the run. Only validations
//! after the curriculum's ramp (every loss term at its final weight) count: before it, the
//! identification and lesion heads are untrained, so an earlier "best" would be a model that
//! cannot identify vertebrae. The full-volume
//! evaluation (sliding windows, post-processing, every metric) is `vertebra-train evaluate`.

use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use burn::module::Module;
use burn::tensor::{Device, Int, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use vertebra_core::anatomy::Vertebra;
use vertebra_core::phantom::{self, LesionPlan, PhantomSpec, domain};
use vertebra_model::blocks::roi_align::RoiBox;
use vertebra_model::{Ablation, Preset, VertebraFormer, VertebraFormerConfig, VertebraFormerInput};

use crate::augment::{AugmentConfig, sample_augmented};
use crate::checkpoint::{self, LoopState, Validation};
use crate::dataset::Case;
use crate::prefetch::Prefetcher;
use crate::preprocess::{PreparedCase, Sample, WindowSpec, prepare, sample_centre, window_at};
use crate::train::{StepReport, TrainConfig, Trainer, make_batch};
use crate::{Error, Result};

/// One phantom set (train, validation or test).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PhantomSet {
    /// Domain preset names.
    pub domains: Vec<String>,
    /// Cases per domain.
    pub cases_per_domain: usize,
    /// Seed of case 0 of the first domain; case `i` of domain `d` gets
    /// `base_seed + d·cases_per_domain + i` (each case a different patient). Sets of one run
    /// must not overlap in seeds (checked).
    pub base_seed: u64,
    /// Imaged ranges `[first, last]`, used in turn by successive cases (varied fields of
    /// view teach identification without the whole column in view).
    pub ranges: Vec<[Vertebra; 2]>,
    /// In-plane matrix of the generated scans.
    pub in_plane: usize,
    /// Lesions per case.
    pub lesions: LesionPlan,
}

impl PhantomSet {
    /// Number of cases.
    pub fn len(&self) -> usize {
        self.domains.len() * self.cases_per_domain
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Seeds used (for the overlap check).
    pub fn seeds(&self) -> std::ops::Range<u64> {
        self.base_seed..self.base_seed + self.len() as u64
    }

    /// Case id, seed and spec of case `k` (domain-major order).
    ///
    /// # Errors
    /// Unknown domain or an invalid spec.
    pub fn case_spec(&self, k: usize) -> Result<(String, PhantomSpec)> {
        let d = k / self.cases_per_domain;
        let i = k % self.cases_per_domain;
        let name = &self.domains[d];
        let [first, last] = self.ranges[i % self.ranges.len()];
        let seed = self.base_seed + k as u64;
        let mut spec = PhantomSpec::new(seed, first, last, domain::preset(name)?);
        spec.in_plane = self.in_plane;
        spec.lesions = self.lesions.clone();
        spec.validate()?;
        Ok((format!("{name}-{seed}"), spec))
    }

    /// Generates and prepares every case at `spacing_mm` in parallel (the raw scans are
    /// dropped once prepared), printing progress to stderr under `label`.
    ///
    /// # Errors
    /// An empty set or no ranges; any generator or preprocessing error, with the case id.
    pub fn prepare_all(&self, spacing_mm: f64, label: &str) -> Result<Vec<PreparedCase>> {
        if self.is_empty() || self.ranges.is_empty() {
            return Err(Error::Config(format!(
                "the {label} set needs domains, cases and ranges"
            )));
        }
        let done = std::sync::atomic::AtomicUsize::new(0);
        let n = self.len();
        let t0 = Instant::now();
        let out: Result<Vec<PreparedCase>> = (0..n)
            .into_par_iter()
            .map(|k| {
                let (id, spec) = self.case_spec(k)?;
                let p = phantom::generate(&spec).map_err(|e| Error::Case {
                    case: id.clone(),
                    message: e.to_string(),
                })?;
                let prepared = prepare(&Case::from_phantom(id, p), spacing_mm)?;
                let d = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                eprint!(
                    "\r  {label}: {d}/{n} phantoms prepared ({:.0} s)   ",
                    t0.elapsed().as_secs_f64()
                );
                Ok(prepared)
            })
            .collect();
        eprintln!();
        out
    }
}

/// The data of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// Training cases.
    pub train: PhantomSet,
    /// Validation cases (early stopping, best checkpoint).
    pub val: PhantomSet,
    /// Held-out test cases (only `evaluate` touches them).
    pub test: PhantomSet,
}

/// Validation cadence and early stopping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidationConfig {
    /// Validate every this many steps (and at the last step).
    pub every_steps: usize,
    /// Windows per validation case.
    pub windows_per_case: usize,
    /// Stop after this many validations without improvement (`None`: never stop early).
    pub patience: Option<usize>,
    /// Smallest Dice gain that counts as an improvement.
    pub min_delta: f64,
}

/// A training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    /// Name of the recipe.
    pub name: String,
    /// Model preset (`paper`, `cpu`, `tiny`).
    pub preset: String,
    /// Ablation row (`unetr-baseline`, `plus-id`, `plus-lesion`, `full`); default full.
    #[serde(default)]
    pub ablation: Option<String>,
    /// Fields of the network configuration to override (JSON object, same field names).
    #[serde(default)]
    pub model_overrides: serde_json::Map<String, serde_json::Value>,
    /// Optimisation.
    pub train: TrainConfig,
    /// Windows per optimiser step.
    pub batch_size: usize,
    /// Seed of the network initialisation and of the data order.
    pub seed: u64,
    /// Probability that a window is centred near a vertebra (else anywhere in the scan).
    pub p_vertebra: f64,
    /// Augmentation of training windows (`None`: off). Applied to image, labels, centroids
    /// and lesion boxes alike (`trainer/src/augment.rs`).
    #[serde(default)]
    pub augmentation: Option<AugmentConfig>,
    /// Background threads preparing batches ahead of the step (0: inline).
    pub prefetch_workers: usize,
    /// Batches prepared ahead at most.
    pub prefetch_depth: usize,
    /// Log a step line every this many steps.
    pub log_every_steps: usize,
    /// Save `checkpoints/last` every this many steps.
    pub checkpoint_every_steps: usize,
    /// Validation.
    pub validation: ValidationConfig,
    /// Data.
    pub data: DataConfig,
}

impl RunConfig {
    /// Reads a recipe file.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Config`] (with serde's line and column).
    pub fn load(path: &Path) -> Result<Self> {
        let text = fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let c: RunConfig = serde_json::from_str(&text)
            .map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        c.validate()?;
        Ok(c)
    }

    /// Checks the recipe's own consistency.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first problem.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        if self.batch_size == 0 || self.train.epochs == 0 || self.train.steps_per_epoch == 0 {
            return bad("batch_size, train.epochs and train.steps_per_epoch must be > 0".into());
        }
        if self.log_every_steps == 0
            || self.checkpoint_every_steps == 0
            || self.validation.every_steps == 0
            || self.validation.windows_per_case == 0
        {
            return bad(
                "log/checkpoint/validation intervals and windows_per_case must be > 0".into(),
            );
        }
        if let Some(a) = &self.augmentation {
            a.validate()?;
        }
        if !(0.0..=1.0).contains(&self.p_vertebra) {
            return bad(format!("p_vertebra {} is not in 0..=1", self.p_vertebra));
        }
        let sets = [
            ("train", &self.data.train),
            ("val", &self.data.val),
            ("test", &self.data.test),
        ];
        for (i, (a, sa)) in sets.iter().enumerate() {
            if sa.is_empty() || sa.ranges.is_empty() {
                return bad(format!("data.{a}: needs domains, cases and ranges"));
            }
            for (b, sb) in &sets[i + 1..] {
                let (ra, rb) = (sa.seeds(), sb.seeds());
                if ra.start < rb.end && rb.start < ra.end {
                    return bad(format!(
                        "data.{a} seeds {ra:?} overlap data.{b} seeds {rb:?}: the same phantom \
                         patient would be in two splits"
                    ));
                }
            }
        }
        self.model_config().map(|_| ())
    }

    /// The network configuration: preset, ablation, then overrides.
    ///
    /// # Errors
    /// Unknown preset/ablation, an override that is not a field or has the wrong type, or an
    /// invalid resulting configuration.
    pub fn model_config(&self) -> Result<VertebraFormerConfig> {
        let mut config = Preset::from_name(&self.preset)?.config();
        if let Some(a) = &self.ablation {
            let row = Ablation::ALL
                .into_iter()
                .find(|r| r.name() == a)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "unknown ablation {a:?}; valid: unetr-baseline, plus-id, plus-lesion, full"
                    ))
                })?;
            config = row.apply(config);
        }
        if !self.model_overrides.is_empty() {
            let mut v = serde_json::to_value(&config).map_err(|e| Error::Config(e.to_string()))?;
            let obj = v
                .as_object_mut()
                .ok_or_else(|| Error::Config("network configuration is not an object".into()))?;
            for (k, val) in &self.model_overrides {
                if !obj.contains_key(k) {
                    return Err(Error::Config(format!(
                        "model_overrides.{k} is not a field of the network configuration"
                    )));
                }
                obj.insert(k.clone(), val.clone());
            }
            config = serde_json::from_value(v)
                .map_err(|e| Error::Config(format!("model_overrides: {e}")))?;
        }
        config.validate()?;
        Ok(config)
    }
}

/// Mixes `(seed, a, b)` into one 64-bit seed (SplitMix64 finaliser).
pub fn mix_seed(seed: u64, a: u64, b: u64) -> u64 {
    let mut z =
        seed ^ a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The windows of step `step`: a pure function of the arguments (see the module docs).
///
/// # Errors
/// Window-cutting errors, with the case id.
pub fn step_samples(
    cases: &[PreparedCase],
    spec: &WindowSpec,
    seed: u64,
    step: usize,
    batch_size: usize,
    p_vertebra: f64,
    augmentation: Option<&AugmentConfig>,
) -> Result<Vec<Sample>> {
    (0..batch_size)
        .map(|item| {
            let mut rng = ChaCha8Rng::seed_from_u64(mix_seed(seed, step as u64, item as u64));
            let case = &cases[rng.random_range(0..cases.len())];
            if let Some(a) = augmentation {
                Ok(sample_augmented(case, spec, a, &mut rng)?.sample)
            } else {
                let centre = sample_centre(case, spec, p_vertebra, &mut rng);
                window_at(case, centre, spec)
            }
        })
        .collect()
}

/// Fixed validation windows: `per_case` centroids evenly spaced along each column.
///
/// # Errors
/// Window-cutting errors.
pub fn validation_samples(
    cases: &[PreparedCase],
    spec: &WindowSpec,
    per_case: usize,
) -> Result<Vec<Sample>> {
    let mut out = Vec::new();
    for c in cases {
        let n = c.centroids.len();
        if n == 0 {
            continue;
        }
        let k = per_case.min(n);
        for j in 0..k {
            // Evenly spaced indices, ends included.
            let idx = if k == 1 { n / 2 } else { j * (n - 1) / (k - 1) };
            out.push(window_at(c, c.centroids[idx].1, spec)?);
        }
    }
    Ok(out)
}

/// Validation metrics of `model` on `samples` (no autodiff).
///
/// # Errors
/// Forward errors.
pub fn validate(
    model: &VertebraFormer,
    samples: &[Sample],
    spec: &WindowSpec,
    domains: &[String],
    device: &Device,
    batch_size: usize,
) -> Result<(f64, f64)> {
    let model = model.valid();
    let inner = device.clone().inner();
    let mut dice_sum = 0.0;
    let mut dice_n = 0usize;
    let (mut id_ok, mut id_n) = (0usize, 0usize);
    for chunk in samples.chunks(batch_size.max(1)) {
        let batch = make_batch(chunk, spec, domains, &inner)?;
        let out = model.forward(VertebraFormerInput {
            image: batch.image.clone(),
            boxes: if model.identification.is_some() {
                batch.boxes.clone()
            } else {
                Vec::<RoiBox>::new()
            },
            domain_mix: None,
        })?;
        let pred: Vec<f32> = out
            .vertebra_logit
            .clone()
            .into_data()
            .try_into_vec::<f32>()
            .map_err(|e| Error::InvalidArgument(format!("{e:?}")))?;
        let n = spec.voxels();
        for (i, s) in chunk.iter().enumerate() {
            let Some(mask) = s.mask() else { continue };
            let p = &pred[i * n..(i + 1) * n];
            let (mut inter, mut ps, mut gs) = (0.0f64, 0.0f64, 0.0f64);
            for (&l, &g) in p.iter().zip(&mask) {
                let pb = f64::from(u8::from(l > 0.0));
                inter += pb * f64::from(g);
                ps += pb;
                gs += f64::from(g);
            }
            if ps + gs > 0.0 {
                dice_sum += 2.0 * inter / (ps + gs);
                dice_n += 1;
            }
        }
        if let Some(logits) = out.id_logits
            && !batch.boxes.is_empty()
        {
            let arg: Tensor<2, Int> = logits.argmax(1);
            let arg: Vec<i64> = arg
                .into_data()
                .convert::<i64>()
                .try_into_vec::<i64>()
                .map_err(|e| Error::InvalidArgument(format!("{e:?}")))?;
            for (a, &c) in arg.iter().zip(&batch.box_class) {
                id_n += 1;
                id_ok += usize::from(*a as usize == c);
            }
        }
    }
    let dice = if dice_n == 0 {
        f64::NAN
    } else {
        dice_sum / dice_n as f64
    };
    let id = if id_n == 0 {
        f64::NAN
    } else {
        id_ok as f64 / id_n as f64
    };
    Ok((dice, id))
}

/// Touches every float parameter, which makes Burn run its (lazy) initialiser.
struct Materialize;

impl burn::module::ModuleVisitor for Materialize {
    fn visit_float<const D: usize>(&mut self, param: &burn::module::Param<Tensor<D>>) {
        let _ = param.val();
    }
}

/// Serialises seeding + initialisation of networks (see [`run`]).
static INIT_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Options of one invocation (not part of the recipe).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Stop (after a checkpoint) once this many steps are done in total.
    pub max_steps: Option<usize>,
    /// Stop (after a checkpoint) after this many minutes of this invocation.
    pub max_minutes: Option<f64>,
    /// Print nothing but errors.
    pub quiet: bool,
    /// Backend: `flex` (CPU, default) or `wgpu` (builds with the `wgpu` feature).
    pub backend: Option<String>,
}

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOutcome {
    /// Steps done in total.
    pub steps: usize,
    /// Whether the run is finished (else it can be resumed).
    pub finished: bool,
    /// Why it stopped.
    pub reason: String,
    /// Best validation.
    pub best: Option<Validation>,
}

#[derive(Serialize)]
struct StepLine<'a> {
    kind: &'static str,
    #[serde(flatten)]
    report: &'a StepReport,
    epoch: f64,
    samples_per_s: f64,
    elapsed_s: f64,
}

#[derive(Serialize)]
struct ValidationLine {
    kind: &'static str,
    step: usize,
    dice: f64,
    id_accuracy: f64,
    best: bool,
}

fn io_err(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Keeps only the lines of `metrics.jsonl` logged before `step` (a resumed run rewrites what
/// the crashed one logged after its checkpoint).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    if !path.exists() {
        return Ok(());
    }
    let f = fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut keep = String::new();
    for line in std::io::BufReader::new(f).lines() {
        let line = line.map_err(|e| io_err(path, e))?;
        let s = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("step").and_then(serde_json::Value::as_u64));
        // Validation lines carry the steps done; step lines the 0-based step index.
        let kind = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v.get("kind").and_then(|k| k.as_str().map(str::to_owned)));
        match (s, kind.as_deref()) {
            (Some(s), Some("validation")) if (s as usize) <= step => keep.push_str(&line),
            (Some(s), Some("step")) if (s as usize) < step => keep.push_str(&line),
            _ => continue,
        }
        keep.push('\n');
    }
    fs::write(path, keep).map_err(|e| io_err(path, e))
}

fn fmt_duration(s: f64) -> String {
    if !s.is_finite() {
        return "?".into();
    }
    let s = s.max(0.0) as u64;
    format!("{}h{:02}m{:02}s", s / 3600, (s / 60) % 60, s % 60)
}

/// Trains (or resumes) the run in `run_dir`.
///
/// A new run needs `recipe`; `run_dir` must then not hold a run yet. Without `recipe` the run
/// in `run_dir` is resumed from `checkpoints/last`.
///
/// # Errors
/// Recipe, data, training (divergence) and checkpoint errors.
#[allow(clippy::too_many_lines)]
pub fn run(run_dir: &Path, recipe: Option<&RunConfig>, options: &RunOptions) -> Result<RunOutcome> {
    let recipe_path = run_dir.join("recipe.json");
    let last_dir = run_dir.join("checkpoints").join("last");
    let best_dir = run_dir.join("checkpoints").join("best");
    let metrics_path = run_dir.join("metrics.jsonl");
    let device =
        crate::tta::training_device(options.backend.as_deref().unwrap_or("flex"))?.autodiff();
    let say = |m: String| {
        if !options.quiet {
            eprintln!("{m}");
        }
    };

    let (config, mut trainer, mut state) = if let Some(recipe) = recipe {
        recipe.validate()?;
        if recipe_path.exists() {
            return Err(Error::Config(format!(
                "{} already holds a run; resume it with `vertebra-train resume {}` or choose \
                 another --out",
                run_dir.display(),
                run_dir.display()
            )));
        }
        fs::create_dir_all(run_dir).map_err(|e| io_err(run_dir, e))?;
        let model_config = recipe.model_config()?;
        fs::write(
            &recipe_path,
            serde_json::to_vec_pretty(recipe).map_err(|e| Error::Config(e.to_string()))?,
        )
        .map_err(|e| io_err(&recipe_path, e))?;
        let mc_path = run_dir.join("model_config.json");
        fs::write(
            &mc_path,
            serde_json::to_vec_pretty(&model_config).map_err(|e| Error::Config(e.to_string()))?,
        )
        .map_err(|e| io_err(&mc_path, e))?;
        // Burn's RNG is process-global: hold a lock from seeding to the end of initialisation
        // so that concurrent runs in one process (tests, studies) cannot interleave draws.
        let trainer = {
            let _guard = INIT_LOCK
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            device.seed(recipe.seed);
            let t = Trainer::new(&model_config, recipe.train.clone(), &device)?;
            // Burn initialises parameters lazily, on first use: force it under the lock.
            t.model.visit(&mut Materialize);
            t
        };
        (recipe.clone(), trainer, LoopState::new())
    } else {
        let config = RunConfig::load(&recipe_path)?;
        let loaded = checkpoint::load(&last_dir, crate::train::optimizer(&config.train), &device)?;
        if loaded.config != config.model_config()? {
            return Err(Error::Checkpoint(format!(
                "{}: the checkpoint's network differs from the recipe's",
                last_dir.display()
            )));
        }
        let trainer = Trainer {
            model: loaded.model,
            optimizer: loaded.optimizer,
            config: config.train.clone(),
            step: loaded.state.step,
        };
        say(format!(
            "vertebra-train: resuming {} at step {}",
            run_dir.display(),
            loaded.state.step
        ));
        (config, trainer, loaded.state)
    };
    if let Some(why) = &state.finished {
        return Ok(RunOutcome {
            steps: state.step,
            finished: true,
            reason: format!("already finished: {why}"),
            best: state.best,
        });
    }
    truncate_metrics(&metrics_path, state.step)?;
    let model_config = config.model_config()?;
    let spec = WindowSpec::from_config(&model_config)?;
    let spacing = model_config.spacing_mm;

    say(format!(
        "vertebra-train: {} — preparing {} train and {} validation phantoms at {spacing} mm",
        config.name,
        config.data.train.len(),
        config.data.val.len()
    ));
    let train_cases = std::sync::Arc::new(config.data.train.prepare_all(spacing, "train")?);
    let val_cases = config.data.val.prepare_all(spacing, "val")?;
    let val_samples = validation_samples(&val_cases, &spec, config.validation.windows_per_case)?;
    drop(val_cases);

    let total = config.train.total_steps();
    let stop_at = options.max_steps.map_or(total, |m| m.min(total));
    let make = {
        let cases = train_cases.clone();
        let (seed, bs, p) = (config.seed, config.batch_size, config.p_vertebra);
        let aug = config.augmentation;
        move |step: usize| step_samples(&cases, &spec, seed, step, bs, p, aug.as_ref())
    };
    let first = state.step;
    let mut loader = if config.prefetch_workers > 0 {
        let make = make.clone();
        Some(Prefetcher::new(
            stop_at - first,
            config.prefetch_workers,
            config.prefetch_depth.max(1),
            move |i| make(first + i),
        )?)
    } else {
        None
    };
    let mut log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .map_err(|e| io_err(&metrics_path, e))?;
    let t_start = Instant::now();
    let seconds_before = state.train_seconds;
    let mut window_t = Instant::now();
    let mut window_steps = 0usize;
    let mut reason = String::new();
    let mut finished = false;
    let domains = model_config.domains.clone();
    let inner = device.clone().inner();

    while state.step < stop_at {
        let samples = match &mut loader {
            Some(l) => l.next().ok_or_else(|| {
                Error::InvalidArgument(format!("loader ended before step {}", state.step))
            })??,
            None => make(state.step)?,
        };
        let batch = make_batch(&samples, &spec, &domains, &device)?;
        let report = trainer.step(&batch)?;
        state.step = trainer.step;
        window_steps += 1;
        if report.step % config.log_every_steps == 0 || state.step == stop_at {
            let dt = window_t.elapsed().as_secs_f64();
            let sps = (window_steps * config.batch_size) as f64 / dt.max(1e-9);
            let line = StepLine {
                kind: "step",
                report: &report,
                epoch: report.step as f64 / config.train.steps_per_epoch as f64,
                samples_per_s: sps,
                elapsed_s: seconds_before + t_start.elapsed().as_secs_f64(),
            };
            let mut text =
                serde_json::to_string(&line).map_err(|e| Error::Config(e.to_string()))?;
            text.push('\n');
            log.write_all(text.as_bytes())
                .map_err(|e| io_err(&metrics_path, e))?;
            let eta = (stop_at - state.step) as f64 * config.batch_size as f64 / sps;
            let l = report.loss;
            say(format!(
                "step {}/{total} epoch {:.2} lr {:.2e} loss {:.4} (seg {:.4} id {:.4} det {:.4} \
                 dom {:.4}) |g| {:.3} {sps:.2} win/s ETA {}",
                state.step,
                line.epoch,
                report.lr,
                l.total,
                l.seg,
                l.id,
                l.det,
                l.domain,
                report.grad_norm,
                fmt_duration(eta)
            ));
            window_t = Instant::now();
            window_steps = 0;
        }
        let validate_now = state.step % config.validation.every_steps == 0 || state.step == total;
        if validate_now {
            let (dice, id) = validate(
                &trainer.model,
                &val_samples,
                &spec,
                &domains,
                &inner,
                config.batch_size,
            )?;
            let v = Validation {
                step: state.step,
                dice,
                id_accuracy: id,
            };
            state.validations.push(v);
            // Until the curriculum has switched every loss term fully on, the heads it ramps in
            // are untrained: such a checkpoint must not become "best", and early stopping does
            // not count those validations.
            let eligible = trainer.config.fixed_weights.is_some()
                || trainer.config.weights(state.step) == crate::schedule::curriculum(1.0, 1.0);
            let improved = eligible
                && state
                    .best
                    .is_none_or(|b| dice > b.dice + config.validation.min_delta);
            let mut text = serde_json::to_string(&ValidationLine {
                kind: "validation",
                step: state.step,
                dice,
                id_accuracy: id,
                best: improved,
            })
            .map_err(|e| Error::Config(e.to_string()))?;
            text.push('\n');
            log.write_all(text.as_bytes())
                .map_err(|e| io_err(&metrics_path, e))?;
            say(format!(
                "validation at step {}: Dice {dice:.4}, ID accuracy (GT boxes) {id:.4}{}",
                state.step,
                if improved { " — best so far" } else { "" }
            ));
            // Curves as PNG next to the log (a plotting failure must not stop training).
            log.flush().map_err(|e| io_err(&metrics_path, e))?;
            if let Err(e) = crate::studies::plot_run(run_dir) {
                say(format!("warning: plots not written: {e}"));
            }
            if improved {
                state.best = Some(v);
                state.since_best = 0;
                state.train_seconds = seconds_before + t_start.elapsed().as_secs_f64();
                checkpoint::save(
                    &best_dir,
                    &trainer.model,
                    &model_config,
                    &trainer.optimizer,
                    &state,
                )?;
            } else if eligible {
                state.since_best += 1;
            }
            if let Some(p) = config.validation.patience
                && state.since_best >= p
            {
                reason = format!(
                    "early stop: {p} validations without a Dice gain over {}",
                    config.validation.min_delta
                );
                finished = true;
            }
        }
        if state.step == total {
            reason = format!("finished all {total} steps");
            finished = true;
        }
        let out_of_time = options
            .max_minutes
            .is_some_and(|m| t_start.elapsed().as_secs_f64() >= m * 60.0);
        if out_of_time && !finished {
            reason = format!(
                "stopped after --max-minutes at step {}; resume to continue",
                state.step
            );
        }
        if finished
            || out_of_time
            || state.step == stop_at
            || state.step % config.checkpoint_every_steps == 0
        {
            state.train_seconds = seconds_before + t_start.elapsed().as_secs_f64();
            if finished {
                state.finished = Some(reason.clone());
            }
            checkpoint::save(
                &last_dir,
                &trainer.model,
                &model_config,
                &trainer.optimizer,
                &state,
            )?;
        }
        if finished || out_of_time {
            break;
        }
    }
    drop(loader);
    log.sync_all().map_err(|e| io_err(&metrics_path, e))?;
    if reason.is_empty() {
        reason = format!(
            "stopped at step {} (--max-steps); resume to continue",
            state.step
        );
    }
    let outcome = RunOutcome {
        steps: state.step,
        finished,
        reason,
        best: state.best,
    };
    if finished {
        let summary = run_dir.join("summary.json");
        let body = serde_json::json!({
            "recipe": config.name,
            "steps": state.step,
            "train_seconds": state.train_seconds,
            "reason": outcome.reason,
            "best": state.best,
            "validations": state.validations,
        });
        fs::write(
            &summary,
            serde_json::to_vec_pretty(&body).map_err(|e| Error::Config(e.to_string()))?,
        )
        .map_err(|e| io_err(&summary, e))?;
    }
    say(format!("vertebra-train: {}", outcome.reason));
    Ok(outcome)
}

/// Where the recipes shipped with the repository are.
pub fn recipes_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("recipes")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> RunConfig {
        RunConfig::load(&recipes_dir().join("tiny.json")).unwrap()
    }

    #[test]
    fn shipped_recipes_load() {
        for name in ["paper", "cpu", "tiny"] {
            let r = RunConfig::load(&recipes_dir().join(format!("{name}.json"))).unwrap();
            assert_eq!(r.name, name);
            assert!(r.model_config().unwrap().spacing_mm > 0.0);
        }
        // The paper recipe is the paper's optimisation (lr 1e-4, wd 1e-5, clip 1.0).
        let p = RunConfig::load(&recipes_dir().join("paper.json")).unwrap();
        assert_eq!(
            (p.train.lr, p.train.weight_decay, p.train.grad_clip_norm),
            (1e-4, 1e-5, Some(1.0))
        );
        assert_eq!(tiny().model_config().unwrap().decoder_channels, 8);
    }

    #[test]
    fn inconsistent_recipes_are_refused() {
        let mut r = tiny();
        r.data.val.base_seed = r.data.train.base_seed + 1;
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("overlap") && e.contains("data.train"), "{e}");

        let mut r = tiny();
        r.model_overrides
            .insert("decoder_chanels".into(), serde_json::json!(4));
        let e = r.validate().unwrap_err().to_string();
        assert!(e.contains("decoder_chanels"), "{e}");

        let mut r = tiny();
        r.ablation = Some("plus-everything".into());
        assert!(r.validate().unwrap_err().to_string().contains("ablation"));

        let mut r = tiny();
        r.batch_size = 0;
        assert!(r.validate().is_err());

        let e = serde_json::from_str::<RunConfig>(r#"{"name":"x","bogus":1}"#).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
    }

    #[test]
    fn step_samples_depend_only_on_seed_and_step() {
        let r = tiny();
        let config = r.model_config().unwrap();
        let spec = WindowSpec::from_config(&config).unwrap();
        let cases = r.data.train.prepare_all(config.spacing_mm, "test").unwrap();
        let a = step_samples(&cases, &spec, 1, 5, 2, 1.0, None).unwrap();
        let b = step_samples(&cases, &spec, 1, 5, 2, 1.0, None).unwrap();
        let c = step_samples(&cases, &spec, 1, 6, 2, 1.0, None).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let aug = AugmentConfig::default();
        let a1 = step_samples(&cases, &spec, 1, 5, 2, 1.0, Some(&aug)).unwrap();
        let a2 = step_samples(&cases, &spec, 1, 5, 2, 1.0, Some(&aug)).unwrap();
        assert_eq!(a1, a2, "augmented steps are reproducible");
        assert_ne!(a1, a, "augmentation changes the windows");
        // The prefetcher delivers the same batches in step order with any worker count.
        let shared = std::sync::Arc::new(cases);
        for workers in [1, 3] {
            let cs = shared.clone();
            let sp = spec;
            let mut p = Prefetcher::new(4, workers, 1, move |i| {
                step_samples(&cs, &sp, 1, 4 + i, 2, 1.0, None)
            })
            .unwrap();
            p.next().unwrap().unwrap();
            assert_eq!(p.next().unwrap().unwrap(), a, "workers {workers}");
            assert_eq!(p.next().unwrap().unwrap(), c, "workers {workers}");
            // Dropped mid-run: workers are joined, not leaked.
        }
    }

    #[test]
    fn mixed_seeds_differ() {
        assert_ne!(mix_seed(1, 0, 0), mix_seed(1, 1, 0));
        assert_ne!(mix_seed(1, 0, 1), mix_seed(1, 1, 0));
        assert_ne!(mix_seed(1, 2, 3), mix_seed(2, 2, 3));
    }
}
