//! `vertebrad`: the appliance daemon's command line. Thin glue: the work lives in the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
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
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vertebrad: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
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
        Command::Migrate { database } => {
            let url = if let Some(url) = database {
                url
            } else {
                std::fs::create_dir_all(&cli.state_dir).map_err(|e| {
                    format!("cannot create state dir {}: {e}", cli.state_dir.display())
                })?;
                format!("sqlite://{}/vertebrad.db", cli.state_dir.display())
            };
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
