//! `vertebra-model`: parameters, FLOPs and memory of a preset (`info`), and measured latency
//! and peak RSS on the flex CPU backend (`bench`). Thin glue over the library.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use vertebra_model::{Ablation, Preset, VertebraFormerConfig, cost::ID_BOXES};

#[derive(Parser)]
#[command(
    name = "vertebra-model",
    about = "VertebraFormer network: cost and benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print parameters, MACs/FLOPs and memory estimates of a preset.
    Info {
        /// Preset name.
        #[arg(long, value_enum, required_unless_present = "config")]
        preset: Option<Preset>,
        /// A configuration JSON file (as `info --json` prints under "config") instead of a
        /// preset.
        #[arg(long, conflicts_with = "preset")]
        config: Option<PathBuf>,
        /// Ablation row (default: the full model).
        #[arg(long, value_enum, default_value = "full")]
        ablation: Ablation,
        /// Print JSON (config, contract, cost) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Measure forward latency (and optionally a forward + backward step) and peak RSS.
    Bench {
        /// Preset name.
        #[arg(long, value_enum, required_unless_present = "config")]
        preset: Option<Preset>,
        /// A configuration JSON file instead of a preset.
        #[arg(long, conflicts_with = "preset")]
        config: Option<PathBuf>,
        /// Ablation row (default: the full model).
        #[arg(long, value_enum, default_value = "full")]
        ablation: Ablation,
        /// Timed runs after one warm-up.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Also time forward + backward on an autodiff device.
        #[arg(long)]
        train: bool,
    },
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Info {
            preset,
            config,
            ablation,
            json,
        } => resolve(preset, config.as_deref(), ablation)
            .and_then(|(label, config)| info(&label, &config, json)),
        Command::Bench {
            preset,
            config,
            ablation,
            runs,
            train,
        } => resolve(preset, config.as_deref(), ablation).and_then(|(label, config)| {
            vertebra_model::bench::run(&config, &label, runs, train)
                .map_err(|e| e.to_string())
                .and_then(|r| serde_json::to_string(&r).map_err(|e| e.to_string()))
                .map(|s| println!("{s}"))
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vertebra-model: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The configuration to use and its label ("preset/ablation" or "file/ablation").
fn resolve(
    preset: Option<Preset>,
    config: Option<&Path>,
    ablation: Ablation,
) -> Result<(String, VertebraFormerConfig), String> {
    let (name, base) = match (preset, config) {
        (Some(p), _) => (p.name().to_owned(), p.config()),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let c: VertebraFormerConfig = serde_json::from_str(&text)
                .map_err(|e| format!("{} is not a model configuration: {e}", path.display()))?;
            (path.display().to_string(), c)
        }
        (None, None) => return Err("give --preset or --config".into()),
    };
    let config = ablation.apply(base);
    config.validate().map_err(|e| e.to_string())?;
    Ok((format!("{name}/{}", ablation.name()), config))
}

fn info(label: &str, config: &VertebraFormerConfig, json: bool) -> Result<(), String> {
    let cost = config.cost();
    if json {
        let v = serde_json::json!({
            "label": label,
            "config": config,
            "contract": config.contract(),
            "cost": cost,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?
        );
        return Ok(());
    }
    let [z, y, x] = config.window;
    println!(
        "{label}: window {z}x{y}x{x} at {} mm, P={}, {} tokens, d={}, L={}, heads={}",
        config.spacing_mm,
        config.patch_size,
        config.num_tokens(),
        config.d_model,
        config.n_layers,
        config.n_heads
    );
    println!("{:<24} {:>14} {:>12}", "block", "params", "GFLOPs");
    for b in &cost.blocks {
        println!(
            "{:<24} {:>14} {:>12.3}",
            b.name,
            b.params,
            2.0 * b.macs as f64 / 1e9
        );
    }
    println!(
        "total: {:.3} M params ({:.1} MiB f32), {:.1} GMACs = {:.1} GFLOPs per volume \
         (ID head costed for {ID_BOXES} boxes)",
        cost.params as f64 / 1e6,
        cost.param_bytes as f64 / f64::from(1u32 << 20),
        cost.macs as f64 / 1e9,
        cost.flops as f64 / 1e9
    );
    println!(
        "of which attention matmuls: {:.1} GMACs; without them (module-hook counters such as \
         thop): {:.1} GMACs",
        cost.attention_macs as f64 / 1e9,
        (cost.macs - cost.attention_macs) as f64 / 1e9
    );
    println!(
        "activations (f32, batch 1): inference peak ~{:.2} GiB, kept for backward ~{:.2} GiB",
        gib(cost.inference_peak_bytes),
        gib(cost.training_activation_bytes)
    );
    println!("paper (Table 7): 85.6 M params, 342.4 GFLOPs, 13.9 GB memory");
    Ok(())
}
