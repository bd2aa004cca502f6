//! `vertebrad analyze`: one series through the engine, with progress and a readable summary.

use std::io::Write;
use std::process::ExitCode;

use vertebrad::engine::analyze::{AnalyzeOptions, Progress, analyze};
use vertebrad::engine::document::ResultDocument;
use vertebrad::engine::{Engine, EngineConfig, EngineError, Provider};

use crate::AnalyzeArgs;

/// Runs the command; failures print their class and reason and exit with the class's code.
pub fn run(args: &AnalyzeArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vertebrad analyze: {} [{}]", e, e.class());
            ExitCode::from(e.exit_code())
        }
    }
}

fn engine_config(args: &AnalyzeArgs) -> Result<EngineConfig, EngineError> {
    let mut c = match &args.config {
        Some(p) => {
            vertebrad::config::Config::load(Some(p))
                .map_err(EngineError::Config)?
                .inference
        }
        None => EngineConfig::default(),
    };
    if let Some(b) = &args.bundle {
        c.bundle.clone_from(b);
    }
    if let Some(k) = &args.trusted_keys {
        c.trusted_keys.clone_from(k);
    }
    if args.onnxruntime.is_some() {
        c.onnxruntime.clone_from(&args.onnxruntime);
    }
    if !args.providers.is_empty() {
        c.providers = args
            .providers
            .iter()
            .map(|p| Provider::parse(p))
            .collect::<Result<_, _>>()?;
    }
    if let Some(t) = args.threads {
        c.intra_threads = t;
    }
    if args.no_localize {
        c.localize = false;
    }
    if c.tensorrt_cache.is_none() {
        c.tensorrt_cache = Some(args.out.join(".tensorrt-cache"));
    }
    c.validate()?;
    Ok(c)
}

fn run_inner(args: &AnalyzeArgs) -> Result<(), EngineError> {
    let config = engine_config(args)?;
    let quiet = args.quiet;
    let say = |m: &str| {
        if !quiet {
            eprintln!("[analyze] {m}");
        }
    };
    say(&format!("verifying bundle {}", config.bundle.display()));
    let engine = Engine::load(&config)?;
    if let Some(w) = engine.bundle.demo_warning() {
        eprintln!("{w}");
    }
    for why in &engine.provider_log {
        say(&format!("provider skipped: {why}"));
    }
    say(&format!(
        "model {} on ONNX Runtime ({}), execution provider: {}",
        engine.bundle.manifest.model.name,
        engine.library.display(),
        engine.provider
    ));
    let mut opts = AnalyzeOptions::new(&engine, &args.out);
    opts.dicom_outputs = !args.no_dicom_outputs;
    let mut last_pct = usize::MAX;
    let mut progress = |p: Progress| match p {
        Progress::Load => say(&format!("loading {}", args.input.display())),
        Progress::Preprocess => say("preprocessing to the model grid"),
        Progress::Windows { done, total } => {
            let pct = done * 100 / total.max(1);
            if !quiet && pct / 10 != last_pct / 10 {
                last_pct = pct;
                eprint!("\r[analyze] network windows: {done} ({pct} % of the whole-volume plan)");
                let _ = std::io::stderr().flush();
            }
        }
        Progress::Finish => {
            if !quiet {
                eprintln!();
            }
            say("identification, post-processing, writing outputs");
        }
    };
    let analysis = analyze(&engine, &args.input, &opts, &mut progress)?;
    print_summary(&analysis.document, &analysis.out_dir);
    Ok(())
}

fn print_summary(d: &ResultDocument, out: &std::path::Path) {
    println!("{}", d.disclaimer);
    println!(
        "input: {} {} {:?} voxels at {:.2}×{:.2}×{:.2} mm ({} instance(s))",
        d.input.kind,
        d.input.modality,
        d.input.dims,
        d.input.spacing_mm[0],
        d.input.spacing_mm[1],
        d.input.spacing_mm[2],
        d.input.instances
    );
    if let Some(l) = &d.localization {
        println!("spine localisation: {}", l.note);
    }
    println!(
        "model: {} ({}, {}), provider {}, {} windows, identification by {:?}{}",
        d.model.name,
        d.model.precision,
        if d.model.demo {
            "DEMO key"
        } else {
            "release key"
        },
        d.model.execution_provider,
        d.windows,
        d.id_source,
        if d.order_decoded {
            ""
        } else {
            " (no anatomical order fitted: raw labels)"
        }
    );
    println!("vertebrae ({}):", d.vertebrae.len());
    for v in &d.vertebrae {
        let heights = v.heights.map_or_else(
            || "heights n/a".to_owned(),
            |h| {
                format!(
                    "heights A/M/P {:.1}/{:.1}/{:.1} mm",
                    h.anterior_mm, h.middle_mm, h.posterior_mm
                )
            },
        );
        println!(
            "  {:<4} confidence {:.2}  volume {:>8.0} mm3  core {:>6}  {}  Genant {}",
            v.name,
            v.confidence,
            v.volume_mm3,
            v.core_mean_hu
                .map_or_else(|| "n/a".into(), |h| format!("{h:.0} HU")),
            heights,
            v.genant_grade
                .map_or_else(|| "n/a".into(), |g| g.to_string())
        );
    }
    println!("lesions ({}):", d.lesions.len());
    for l in &d.lesions {
        println!(
            "  {:<21} score {:.2} at LPS ({:.1}, {:.1}, {:.1}) mm in {}",
            l.class,
            l.score,
            l.centre_lps_mm[0],
            l.centre_lps_mm[1],
            l.centre_lps_mm[2],
            l.vertebra.as_deref().unwrap_or("no vertebra")
        );
    }
    let t = &d.timings_s;
    println!(
        "timings (s): load {:.2}, preprocess {:.2}, localize {:.2}, windows {:.2}, \
         identification {:.2}, postprocess {:.2}, resample back {:.2}, write {:.2}; total {:.2}",
        t.load,
        t.preprocess,
        t.localize,
        t.windows,
        t.identification,
        t.postprocess,
        t.resample_back,
        t.write,
        t.total
    );
    for w in &d.warnings {
        println!("warning: {w}");
    }
    println!("outputs in {}:", out.display());
    println!("  result.json, {}", d.files.label_map);
    if let (Some(seg), Some(sr)) = (&d.files.seg, &d.files.sr) {
        println!("  {seg}, {sr}");
    }
}
