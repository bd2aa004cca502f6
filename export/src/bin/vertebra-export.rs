//! `vertebra-export`: export a trained VertebraFormer into a signed model bundle, manage
//! signing keys, sign and verify bundles. Thin glue over the `vertebra_export` library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use vertebra_export::bundle::{sign_bundle, unpack_and_verify, verify_bundle};
use vertebra_export::export::{BundleOptions, pack, write_bundle};
use vertebra_export::graph::Elem;
use vertebra_export::manifest::DEFAULT_WINDOW_OVERLAP;
use vertebra_export::signing::{KeyRole, SecretKey, TrustedKeys};
use vertebra_export::{Error, Result};

/// Export VertebraFormer to ONNX bundles; sign and verify them.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum Precision {
    Fp32,
    Fp16,
}

#[derive(Subcommand)]
enum Command {
    /// Export a safetensors checkpoint into a new bundle directory.
    Export {
        /// The weights (written by vertebra-model / the trainer; the config is in its metadata).
        #[arg(long)]
        weights: PathBuf,
        /// The bundle directory to create (must be new or empty).
        #[arg(long)]
        out: PathBuf,
        /// Model name recorded in the manifest.
        #[arg(long, default_value = "vertebraformer")]
        name: String,
        /// Weight and compute precision (inputs and outputs stay f32).
        #[arg(long, value_enum, default_value = "fp32")]
        precision: Precision,
        /// Sliding-window overlap recorded in the manifest.
        #[arg(long, default_value_t = DEFAULT_WINDOW_OVERLAP)]
        window_overlap: f64,
        /// Git commit to record (default: `git rev-parse HEAD` of the current directory).
        #[arg(long)]
        git_commit: Option<String>,
        /// Training configuration file to embed in the manifest.
        #[arg(long)]
        training_config: Option<PathBuf>,
        /// Dataset manifest whose sha256 is recorded.
        #[arg(long)]
        dataset_manifest: Option<PathBuf>,
        /// Training seed to record.
        #[arg(long)]
        seed: Option<u64>,
        /// JSON object of evaluation metrics (name → number) to record.
        #[arg(long)]
        metrics: Option<PathBuf>,
        /// Secret key to sign with.
        #[arg(long)]
        key: Option<PathBuf>,
        /// Also write DIR.tar.
        #[arg(long)]
        tar: bool,
    },
    /// Generate an ed25519 key pair: OUT_DIR/NAME.key (0600) and OUT_DIR/NAME.pub.
    Keygen {
        /// Key name (file stem).
        #[arg(long)]
        name: String,
        /// Directory for the key files.
        #[arg(long)]
        out_dir: PathBuf,
        /// Mark the key as the demo key (bundles verify but are reported loudly).
        #[arg(long)]
        demo: bool,
    },
    /// Sign a bundle directory's manifest.
    Sign {
        /// The bundle directory.
        #[arg(long)]
        bundle: PathBuf,
        /// The secret key file.
        #[arg(long)]
        key: PathBuf,
    },
    /// Verify a bundle directory or .tar against a directory of trusted *.pub keys.
    Verify {
        /// The bundle directory or .tar.
        #[arg(long)]
        bundle: PathBuf,
        /// Directory of trusted public keys.
        #[arg(long)]
        trusted_keys: PathBuf,
    },
}

fn git_head() -> String {
    std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map_or_else(
            || "unknown".into(),
            |o| String::from_utf8_lossy(&o.stdout).trim().to_owned(),
        )
}

fn read_metrics(path: &Path) -> Result<BTreeMap<String, f64>> {
    let text = std::fs::read_to_string(path).map_err(Error::io(path))?;
    serde_json::from_str(&text).map_err(|e| {
        Error::Other(format!(
            "{}: metrics must be a JSON object of numbers: {e}",
            path.display()
        ))
    })
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Export {
            weights,
            out,
            name,
            precision,
            window_overlap,
            git_commit,
            training_config,
            dataset_manifest,
            seed,
            metrics,
            key,
            tar,
        } => {
            let opts = BundleOptions {
                name,
                precision: match precision {
                    Precision::Fp32 => Elem::F32,
                    Precision::Fp16 => Elem::F16,
                },
                window_overlap,
                git_commit: git_commit.unwrap_or_else(git_head),
                training_config,
                dataset_manifest,
                seed,
                metrics: metrics.as_deref().map(read_metrics).transpose()?,
                key: key.clone(),
            };
            let manifest = write_bundle(&weights, &out, &opts)?;
            println!(
                "bundle {} written: {} file(s), {}",
                out.display(),
                manifest.files.len(),
                if key.is_some() {
                    "signed"
                } else {
                    "UNSIGNED (run `vertebra-export sign`)"
                }
            );
            if tar {
                println!("tar {}", pack(&out)?.display());
            }
        }
        Command::Keygen {
            name,
            out_dir,
            demo,
        } => {
            let role = if demo {
                KeyRole::Demo
            } else {
                KeyRole::Release
            };
            let key = SecretKey::generate(&name, role)?;
            std::fs::create_dir_all(&out_dir).map_err(Error::io(&out_dir))?;
            let (s, p) = key.write(&out_dir)?;
            println!(
                "key id {}: secret {}, public {}",
                key.public().id,
                s.display(),
                p.display()
            );
        }
        Command::Sign { bundle, key } => {
            let key = SecretKey::read(&key)?;
            sign_bundle(&bundle, &key)?;
            println!(
                "signed {} with key {} ({})",
                bundle.display(),
                key.name,
                key.public().id
            );
        }
        Command::Verify {
            bundle,
            trusted_keys,
        } => {
            let trusted = TrustedKeys::from_dir(&trusted_keys)?;
            let verified = if bundle.is_dir() {
                verify_bundle(&bundle, &trusted)?
            } else {
                let dest = tempdir_for(&bundle)?;
                let result = unpack_and_verify(&bundle, &dest, &trusted);
                // The unpacked copy was only for checking; nothing may run from it.
                let _ = std::fs::remove_dir_all(&dest);
                result?
            };
            if let Some(w) = verified.demo_warning() {
                eprintln!("{w}");
            }
            println!(
                "OK: {} verified, signed by {} ({}), contract version {}",
                bundle.display(),
                verified.key_name,
                verified.key_id,
                verified.manifest.contract_version
            );
        }
    }
    Ok(())
}

/// A fresh directory next to the tar for unpacking it.
fn tempdir_for(tar: &Path) -> Result<PathBuf> {
    let mut name = tar.as_os_str().to_owned();
    name.push(format!(".verify-{}", std::process::id()));
    let dir = PathBuf::from(name);
    if dir.exists() {
        return Err(Error::Other(format!("{} exists", dir.display())));
    }
    Ok(dir)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vertebra-export: {e}");
            ExitCode::FAILURE
        }
    }
}
