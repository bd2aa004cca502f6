//! `vertebrad`: the appliance daemon's command line. Thin glue: the work lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod analyze;
mod ops;

/// The database URL: given, or the embedded SQLite file in the state directory (created).
fn database_url(state_dir: &std::path::Path, database: Option<String>) -> Result<String, String> {
    if let Some(url) = database {
        return Ok(url);
    }
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot create state dir {}: {e}", state_dir.display()))?;
    Ok(format!("sqlite://{}/vertebrad.db", state_dir.display()))
}
use vertebrad::store::Store;

/// The VertebraFormer appliance daemon.
#[derive(Debug, Parser)]
#[command(name = "vertebrad", version, about)]
struct Cli {
    /// Directory for the daemon's state (the embedded database, the spool).
    #[arg(
        long,
        global = true,
        default_value = "/var/lib/vertebra",
        env = "VERTEBRA_STATE_DIR"
    )]
    state_dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Brings the database schema up to date and prints the applied migrations.
    ///
    /// Refuses a database that a newer vertebrad has migrated.
    Migrate {
        /// Database URL: `postgres://user@host/db` or `sqlite:///path/to/file.db`.
        /// Default: `sqlite://<state dir>/vertebrad.db`.
        #[arg(long, env = "VERTEBRA_DATABASE_URL")]
        database: Option<String>,
    },
    /// Runs the daemon: the DICOM node (Storage SCP) until SIGINT/SIGTERM.
    Serve {
        /// Configuration file (TOML); keys are documented in docs/dicom.md.
        #[arg(long, env = "VERTEBRA_CONFIG")]
        config: Option<PathBuf>,
        /// Database URL, as for `migrate`.
        #[arg(long, env = "VERTEBRA_DATABASE_URL")]
        database: Option<String>,
    },
    /// Analyses one series (a DICOM directory or a NIfTI image in HU) with a model bundle:
    /// named vertebrae, lesions, measurements; writes result.json, labels.nii.gz and, for
    /// DICOM input, seg.dcm + sr.dcm into --out.
    ///
    /// Exit codes: 0 done, 2 usage/configuration, 3 input refused, 4 bundle refused,
    /// 5 ONNX Runtime missing/unusable, 6 inference failed, 7 outputs not written.
    Analyze(AnalyzeArgs),
    /// Sends DICOM files (or every file under directories) to a peer over C-STORE, each in
    /// the transfer syntax it is stored in; one association. Exits 1 unless every file was
    /// stored.
    Send {
        /// The peer: AE_TITLE@HOST:PORT.
        #[arg(long)]
        to: String,
        /// Our (calling) AE title.
        #[arg(long, default_value = "VERTEBRAD")]
        calling_ae: String,
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Result destinations (PACS) in the store: where every new result's SEG and SR go.
    #[command(subcommand)]
    Destination(DestinationCommand),
}

#[derive(Debug, Subcommand)]
enum DestinationCommand {
    /// Adds an enabled destination.
    Add {
        /// Unique name.
        #[arg(long)]
        name: String,
        /// Its AE title.
        #[arg(long)]
        ae_title: String,
        /// Host name or address.
        #[arg(long)]
        host: String,
        /// TCP port.
        #[arg(long)]
        port: u16,
        /// Use DICOM TLS.
        #[arg(long)]
        tls: bool,
        /// Database URL, as for `migrate`.
        #[arg(long, env = "VERTEBRA_DATABASE_URL")]
        database: Option<String>,
    },
}

/// Arguments of `vertebrad analyze`.
#[derive(Debug, clap::Args)]
struct AnalyzeArgs {
    /// A DICOM series directory (or multi-frame file), or a NIfTI image (.nii, .nii.gz) in HU.
    input: PathBuf,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Configuration file; its `[inference]` section gives the defaults below.
    #[arg(long, env = "VERTEBRA_CONFIG")]
    config: Option<PathBuf>,
    /// Model bundle directory.
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Directory of trusted public keys (*.pub).
    #[arg(long)]
    trusted_keys: Option<PathBuf>,
    /// The ONNX Runtime library (libonnxruntime.so.1.31.1).
    #[arg(long)]
    onnxruntime: Option<PathBuf>,
    /// Execution providers in order (comma-separated: tensorrt,cuda,cpu).
    #[arg(long, value_delimiter = ',')]
    providers: Vec<String>,
    /// ONNX Runtime intra-op threads (0: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Run the windows over the whole volume instead of the located spine.
    #[arg(long)]
    no_localize: bool,
    /// Do not write SEG and SR for DICOM input.
    #[arg(long)]
    no_dicom_outputs: bool,
    /// No progress lines on stderr.
    #[arg(long)]
    quiet: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Analyze(args) = &cli.command {
        return analyze::run(args);
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vertebrad: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // An analysis abandoned at shutdown (its job handed back to the queue) runs on a blocking
    // thread that cannot be interrupted: exit without waiting for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("vertebrad: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), String> {
    match cli.command {
        Command::Serve { config, database } => {
            let cfg = vertebrad::config::Config::load(config.as_deref())?;
            vertebrad::dicom::daemon::run(cfg, &cli.state_dir, database).await
        }
        Command::Analyze(_) => unreachable!("handled in main without the async runtime"),
        Command::Send {
            to,
            calling_ae,
            paths,
        } => ops::send(&to, &calling_ae, &paths).await,
        Command::Destination(DestinationCommand::Add {
            name,
            ae_title,
            host,
            port,
            tls,
            database,
        }) => {
            let url = database_url(&cli.state_dir, database)?;
            ops::add_destination(&url, &name, &ae_title, &host, port, tls).await
        }
        Command::Migrate { database } => {
            let url = database_url(&cli.state_dir, database)?;
            let store = Store::connect(&url).await.map_err(|e| e.to_string())?;
            let applied = store.migrate().await.map_err(|e| e.to_string())?;
            for m in &applied {
                println!("{:04} {}", m.version, m.description);
            }
            println!(
                "schema at version {} ({:?})",
                applied.last().map_or(0, |m| m.version),
                store.backend()
            );
            store.close().await;
            Ok(())
        }
    }
}
