//! `vertebra-train`: command line of the trainer.
//!
//! - `train`: start a run from a recipe (`trainer/recipes/*.json` or a path);
//! - `resume`: continue a run from its last checkpoint (exactly: same data order, optimiser
//!   state);
//! - `check-manifest`: validate a dataset manifest and the files it names.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vertebra_trainer::manifest::Manifest;
use vertebra_trainer::run::{self, RunConfig, RunOptions};
use vertebra_trainer::studies::{self, StudyOptions};

#[derive(Parser)]
#[command(name = "vertebra-train", about = "Train and evaluate VertebraFormer")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Evaluate a run's checkpoint on its recipe's held-out phantom set (report.md with CIs,
    /// evaluation.json, qualitative.png under RUN_DIR/eval-SET-CHECKPOINT).
    Evaluate {
        /// The run directory.
        run_dir: PathBuf,
        #[command(flatten)]
        eval: EvalArgs,
        /// Checkpoint: best or last.
        #[arg(long, default_value = "best")]
        checkpoint: String,
        /// Set: test or val.
        #[arg(long, default_value = "test")]
        set: String,
    },
    /// Evaluate a run's checkpoint (Burn) and a bundle exported from it (ONNX Runtime) on the
    /// same held-out cases through the same inference path; report under
    /// RUN_DIR/eval-SET-CHECKPOINT-bundle. Exits 1 when an aggregate metric differs by more
    /// than --tolerance.
    EvaluateBundle {
        /// The run directory.
        run_dir: PathBuf,
        /// The bundle directory.
        #[arg(long)]
        bundle: PathBuf,
        /// Directory of trusted public keys (*.pub).
        #[arg(long, default_value = "keys")]
        trusted_keys: PathBuf,
        /// The ONNX Runtime library (default: ORT_DYLIB_PATH, then the provisioned cache).
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
        #[command(flatten)]
        eval: EvalArgs,
        /// Checkpoint the bundle was exported from: best or last.
        #[arg(long, default_value = "best")]
        checkpoint: String,
        /// Set: test or val.
        #[arg(long, default_value = "test")]
        set: String,
        /// Largest allowed |bundle − Burn| of an aggregate metric (0.005 = 0.5 points).
        #[arg(long, default_value_t = 0.005)]
        tolerance: f64,
        /// Suffix of the report directory (RUN_DIR/eval-SET-CHECKPOINT-bundle-LABEL), e.g.
        /// fp16 for a half-precision export of the same checkpoint.
        #[arg(long, value_parser = report_label)]
        label: Option<String>,
    },
    /// Write a run's held-out phantom CTs as NIfTI (DIR/<case>.nii.gz and DIR/cases.txt) for
    /// `vertebrad analyze` (scripts/eval-analyze.sh).
    ExportCases {
        /// The run directory.
        run_dir: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        eval: EvalArgs,
        /// Set: test or val.
        #[arg(long, default_value = "test")]
        set: String,
    },
    /// Score `vertebrad analyze` outputs (OUTPUTS/<case>/labels.nii.gz + result.json) of the
    /// cases ExportCases wrote, next to the trainer's path on the same bundle in this process,
    /// both on the source grid; report under RUN_DIR/eval-SET-analyze. Exits 1 when a metric
    /// differs by more than --tolerance.
    ScoreAnalyze {
        /// The run directory.
        run_dir: PathBuf,
        /// Directory holding one output directory per case.
        #[arg(long)]
        outputs: PathBuf,
        /// The bundle `vertebrad analyze` ran.
        #[arg(long)]
        bundle: PathBuf,
        /// Directory of trusted public keys (*.pub).
        #[arg(long, default_value = "keys")]
        trusted_keys: PathBuf,
        /// The ONNX Runtime library (default: ORT_DYLIB_PATH, then the provisioned cache).
        #[arg(long)]
        onnxruntime: Option<PathBuf>,
        /// `comparison.json` of `evaluate-bundle`, shown as an informational column.
        #[arg(long)]
        reference: Option<PathBuf>,
        #[command(flatten)]
        eval: EvalArgs,
        /// Set: test or val.
        #[arg(long, default_value = "test")]
        set: String,
        /// Largest allowed |analyze − trainer path| of an aggregate metric (0.005 = 0.5
        /// points).
        #[arg(long, default_value_t = 0.005)]
        tolerance: f64,
    },
    /// The paper's studies; each writes a Markdown report (and a PNG where the paper has one).
    #[command(subcommand)]
    Study(Study),
    /// Loss and validation curves of a run as PNG (RUN_DIR/plots/).
    Plot {
        /// The run directory.
        run_dir: PathBuf,
    },
    /// Start a training run: prepares the phantom sets, trains with the recipe's schedule,
    /// validates, checkpoints, and writes metrics.jsonl into --out.
    Train {
        /// Recipe: a name shipped in trainer/recipes (cpu, paper, tiny) or a JSON file.
        #[arg(long)]
        recipe: String,
        /// Run directory (created; must not hold a run).
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        limits: Limits,
    },
    /// Continue the run in RUN_DIR from checkpoints/last.
    Resume {
        /// The run directory.
        run_dir: PathBuf,
        #[command(flatten)]
        limits: Limits,
    },
    /// Validate a manifest.csv (columns, ids, splits, leakage) and that every file exists.
    CheckManifest {
        /// The manifest file.
        manifest: PathBuf,
        /// Skip the file-existence check.
        #[arg(long)]
        no_files: bool,
    },
    /// Assign patient-level train/val/test splits (60/20/20, stratified by domain and
    /// pathology severity) and write the manifest with its split column.
    Split {
        /// The input manifest.
        manifest: PathBuf,
        /// Where to write the manifest with splits.
        #[arg(long)]
        out: PathBuf,
        /// Seed of the shuffle.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Leakage audit (study UID groups, near-duplicate images); writes audit.md and
    /// audit.json, fails if anything leaks between splits.
    Audit {
        /// The manifest.
        manifest: PathBuf,
        /// Report directory (created).
        #[arg(long)]
        report: PathBuf,
    },
}

/// The studies.
#[derive(Subcommand)]
enum Study {
    /// Leave-one-domain-out: train without each domain, test on all (cross_domain.png).
    Lodo {
        #[command(flatten)]
        train: StudyTrain,
        #[command(flatten)]
        eval: EvalArgs,
    },
    /// Ablation: UNETR baseline, + ID, + lesion, + modulation.
    Ablation {
        #[command(flatten)]
        train: StudyTrain,
        #[command(flatten)]
        eval: EvalArgs,
    },
    /// Test-time conditions on a trained run: domain codes, IN, AdaIN, TENT.
    TestTime {
        /// The run directory (its best checkpoint).
        run_dir: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        eval: EvalArgs,
        /// TENT Adam steps per scan.
        #[arg(long, default_value_t = vertebra_trainer::tta::TENT_STEPS)]
        tent_steps: usize,
        /// TENT learning rate.
        #[arg(long, default_value_t = vertebra_trainer::tta::TENT_LR)]
        tent_lr: f64,
    },
    /// Perturbations by region on a trained run: intensity, noise, slice thickness, metal.
    Perturb {
        /// The run directory (its best checkpoint).
        run_dir: PathBuf,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        eval: EvalArgs,
    },
    /// Parameters, FLOPs, latency per window and per case (incl. post-processing), memory.
    Efficiency {
        /// Presets (paper, cpu, tiny), repeatable; the first is the ratio baseline.
        #[arg(long, default_values_t = vec!["cpu".to_owned(), "tiny".to_owned()])]
        preset: Vec<String>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// Timed forward passes (median reported).
        #[arg(long, default_value_t = 5)]
        repeats: usize,
    },
}

/// Training settings of a training study.
#[derive(clap::Args)]
struct StudyTrain {
    /// Recipe: a shipped name or a JSON file.
    #[arg(long)]
    recipe: String,
    /// Output directory (runs are kept in OUT/runs and resumed by a rerun).
    #[arg(long)]
    out: PathBuf,
    /// Shorten each row's training to this many steps.
    #[arg(long)]
    max_steps: Option<usize>,
}

/// Evaluation settings.
#[derive(clap::Args)]
struct EvalArgs {
    /// Evaluate at most this many test cases.
    #[arg(long)]
    max_cases: Option<usize>,
    /// Identify by the segmentation's label votes instead of the ID head.
    #[arg(long)]
    votes: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
}

impl EvalArgs {
    fn options(&self) -> StudyOptions {
        let mut o = StudyOptions {
            max_cases: self.max_cases,
            quiet: self.quiet,
            ..StudyOptions::default()
        };
        o.infer.use_id_head = !self.votes;
        o
    }
}

/// Limits of one invocation (a run stopped by them can be resumed).
#[derive(clap::Args)]
struct Limits {
    /// Stop after this many steps in total (checkpointed; resumable).
    #[arg(long)]
    max_steps: Option<usize>,
    /// Stop after this many minutes (checkpointed; resumable).
    #[arg(long)]
    max_minutes: Option<f64>,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// Backend: flex (CPU) or wgpu (GPU; needs a build with `--features wgpu`).
    #[arg(long, default_value = "flex")]
    backend: String,
}

impl Limits {
    fn options(&self) -> RunOptions {
        RunOptions {
            max_steps: self.max_steps,
            max_minutes: self.max_minutes,
            quiet: self.quiet,
            backend: Some(self.backend.clone()),
        }
    }
}

/// A recipe by name (trainer/recipes/NAME.json) or path.
fn load_recipe(recipe: &str) -> vertebra_trainer::Result<RunConfig> {
    let path = PathBuf::from(recipe);
    if path.exists() {
        return RunConfig::load(&path);
    }
    let shipped = run::recipes_dir().join(format!("{recipe}.json"));
    if shipped.exists() {
        return RunConfig::load(&shipped);
    }
    Err(vertebra_trainer::Error::Config(format!(
        "no recipe {recipe:?}: not a file, and not one of the shipped recipes in {}",
        run::recipes_dir().display()
    )))
}

fn run_study(study: Study) -> vertebra_trainer::Result<()> {
    let md = match study {
        Study::Lodo { train, eval } => studies::lodo_study(
            &load_recipe(&train.recipe)?,
            &train.out,
            train.max_steps,
            &eval.options(),
        )?,
        Study::Ablation { train, eval } => studies::ablation_study(
            &load_recipe(&train.recipe)?,
            &train.out,
            train.max_steps,
            &eval.options(),
        )?,
        Study::TestTime {
            run_dir,
            out,
            eval,
            tent_steps,
            tent_lr,
        } => studies::test_time_study(
            &run_dir,
            &out,
            &eval.options(),
            &vertebra_trainer::tta::TentConfig {
                steps: tent_steps,
                lr: tent_lr,
            },
        )?,
        Study::Perturb { run_dir, out, eval } => {
            studies::perturbation_study(&run_dir, &out, &eval.options())?
        }
        Study::Efficiency {
            preset,
            out,
            repeats,
        } => {
            // The whole-case latency uses test case 0 of the first preset's recipe.
            let recipe = load_recipe(&preset[0])?;
            let case = studies::phantom_case(&recipe.data.test, 0)?;
            let presets = preset
                .iter()
                .map(|p| Ok((p.clone(), vertebra_model::Preset::from_name(p)?.config())))
                .collect::<vertebra_trainer::Result<Vec<_>>>()?;
            let rows = studies::efficiency_study(
                &presets,
                &case,
                repeats,
                &out,
                &StudyOptions::default(),
            )?;
            serde_json::to_string_pretty(&rows)
                .map_err(|e| vertebra_trainer::Error::Config(e.to_string()))?
        }
    };
    println!("{md}");
    Ok(())
}

fn print_outcome(o: &run::RunOutcome) {
    println!(
        "{} after {} steps; best validation: {}",
        if o.finished { "finished" } else { "paused" },
        o.steps,
        o.best.map_or_else(
            || "none yet".to_owned(),
            |b| format!(
                "Dice {:.4}, ID accuracy {:.4} at step {}",
                b.dice, b.id_accuracy, b.step
            )
        )
    );
}

fn run(cli: Cli) -> vertebra_trainer::Result<()> {
    match cli.command {
        Command::Train {
            recipe,
            out,
            limits,
        } => {
            let recipe = load_recipe(&recipe)?;
            let o = run::run(&out, Some(&recipe), &limits.options())?;
            print_outcome(&o);
            Ok(())
        }
        Command::Evaluate {
            run_dir,
            eval,
            checkpoint,
            set,
        } => {
            let o = studies::evaluate_run(&run_dir, &checkpoint, &set, &eval.options())?;
            println!("{}", o.evaluation.to_markdown());
            println!("report: {}", o.dir.join("report.md").display());
            Ok(())
        }
        Command::EvaluateBundle {
            run_dir,
            bundle,
            trusted_keys,
            onnxruntime,
            eval,
            checkpoint,
            set,
            tolerance,
            label,
        } => {
            let src = vertebra_trainer::bundle_eval::BundleSource {
                bundle,
                trusted_keys,
                onnxruntime,
                threads: 0,
                label,
            };
            let c = vertebra_trainer::bundle_eval::evaluate_bundle(
                &run_dir,
                &checkpoint,
                &set,
                &src,
                &eval.options(),
            )?;
            println!("| metric | Burn | bundle | difference |\n|---|---|---|---|");
            for p in &c.metrics {
                println!(
                    "| {} | {:.4} | {:.4} | {:+.4} |",
                    p.name,
                    p.burn,
                    p.bundle,
                    p.bundle - p.burn
                );
            }
            println!("report: {}", c.dir.join("report.md").display());
            let worst = c.max_abs_difference();
            if worst > tolerance {
                return Err(vertebra_trainer::Error::InvalidArgument(format!(
                    "bundle and checkpoint differ by {worst:.4} > tolerance {tolerance}"
                )));
            }
            println!("largest difference {worst:.4} ≤ tolerance {tolerance}");
            Ok(())
        }
        Command::ExportCases {
            run_dir,
            out,
            eval,
            set,
        } => {
            let paths = vertebra_trainer::analyze_eval::export_cases(
                &run_dir,
                &set,
                &out,
                &eval.options(),
            )?;
            println!("{} cases in {}", paths.len(), out.display());
            Ok(())
        }
        Command::ScoreAnalyze {
            run_dir,
            outputs,
            bundle,
            trusted_keys,
            onnxruntime,
            reference,
            eval,
            set,
            tolerance,
        } => {
            let src = vertebra_trainer::bundle_eval::BundleSource {
                bundle,
                trusted_keys,
                onnxruntime,
                threads: 0,
                label: None,
            };
            let s = vertebra_trainer::analyze_eval::score_analyze(
                &run_dir,
                &set,
                &outputs,
                &src,
                reference.as_deref(),
                &eval.options(),
            )?;
            let cell = |v: Option<f64>| v.map_or("—".to_owned(), |v| format!("{v:.4}"));
            println!(
                "| metric | analyze | trainer path | difference | evaluate-bundle |\n\
                 |---|---|---|---|---|"
            );
            for m in &s.metrics {
                println!(
                    "| {} | {:.4} | {} | {} | {} |",
                    m.name,
                    m.analyze,
                    cell(m.trainer),
                    m.trainer
                        .map_or("—".to_owned(), |t| format!("{:+.4}", m.analyze - t)),
                    cell(m.evaluate_bundle)
                );
            }
            println!("report: {}", s.dir.join("report.md").display());
            let worst = s.max_abs_difference();
            if worst > tolerance {
                return Err(vertebra_trainer::Error::InvalidArgument(format!(
                    "analyze outputs and the trainer's path differ by {worst:.4} > tolerance \
                     {tolerance}"
                )));
            }
            println!("largest difference {worst:.4} ≤ tolerance {tolerance}");
            Ok(())
        }
        Command::Study(study) => run_study(study),
        Command::Plot { run_dir } => {
            for p in studies::plot_run(&run_dir)? {
                println!("{}", p.display());
            }
            Ok(())
        }
        Command::Resume { run_dir, limits } => {
            let o = run::run(&run_dir, None, &limits.options())?;
            print_outcome(&o);
            Ok(())
        }
        Command::CheckManifest { manifest, no_files } => {
            let m = Manifest::load(&manifest)?;
            if !no_files {
                m.check_files()?;
            }
            println!("{}: {} cases", manifest.display(), m.cases.len());
            for (split, n) in m.split_counts() {
                println!("  {:<10} {n}", split.map_or("unassigned", |s| s.name()));
            }
            Ok(())
        }
        Command::Split {
            manifest,
            out,
            seed,
        } => split_cmd(&manifest, &out, seed),
        Command::Audit { manifest, report } => audit_cmd(&manifest, &report),
    }
}

/// `split`: assign and write splits, print the strata.
fn split_cmd(manifest: &Path, out: &Path, seed: u64) -> vertebra_trainer::Result<()> {
    let strata = vertebra_trainer::split::split_manifest_file(manifest, out, seed)?;
    println!("{}: splits assigned (seed {seed})", out.display());
    for s in strata {
        let [tr, va, te] = s.patients;
        println!(
            "  {:<30} {:<9} patients train {tr} val {va} test {te}",
            s.domains,
            s.severity.name()
        );
    }
    Ok(())
}

/// `audit`: write the report; an error if anything leaks.
fn audit_cmd(manifest: &Path, report: &Path) -> vertebra_trainer::Result<()> {
    let r = vertebra_trainer::split::audit_manifest_file(manifest, report)?;
    println!(
        "{} cases: {} group findings, {} near-duplicate pairs; report in {}",
        r.cases,
        r.groups.len(),
        r.near_duplicates.len(),
        report.display()
    );
    if r.has_leaks() {
        return Err(vertebra_trainer::Error::InvalidArgument(format!(
            "leakage found, see {}",
            report.join("audit.md").display()
        )));
    }
    Ok(())
}

/// A report label: letters, digits, `-` and `_` only (it becomes part of a directory name).
fn report_label(s: &str) -> Result<String, String> {
    if !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(s.to_owned())
    } else {
        Err(format!(
            "{s:?}: use 1–32 letters, digits, '-' or '_' (it names a directory)"
        ))
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vertebra-train: {e}");
            ExitCode::FAILURE
        }
    }
}
