//! `vertebrad serve`: open the store, start the DICOM node, run until SIGINT or SIGTERM.

use std::path::Path;

use crate::config::Config;
use crate::store::Store;

use super::RunningNode;

/// Runs the daemon's DICOM node with `cfg` until a termination signal, then stops it
/// gracefully (associations in progress finish).
///
/// `database` defaults to `sqlite://<state dir>/vertebrad.db`; the spool to
/// `<state dir>/spool`.
///
/// # Errors
/// A message for an operator: what could not be opened or bound.
pub async fn run(cfg: Config, state_dir: &Path, database: Option<String>) -> Result<(), String> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VERTEBRA_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    std::fs::create_dir_all(state_dir)
        .map_err(|e| format!("cannot create state dir {}: {e}", state_dir.display()))?;
    let url = database.unwrap_or_else(|| format!("sqlite://{}/vertebrad.db", state_dir.display()));
    let store = Store::open(&url).await.map_err(|e| e.to_string())?;
    let spool_dir = cfg
        .dicom
        .spool_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("spool"));
    let node = RunningNode::start(cfg.dicom, store.clone(), &spool_dir)
        .await
        .map_err(|e| format!("cannot start the DICOM node: {e}"))?;
    // The line tests and operators wait for.
    println!("listening on {}", node.local_addr());
    wait_for_signal().await?;
    node.stop().await;
    store.close().await;
    Ok(())
}

async fn wait_for_signal() -> Result<(), String> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term =
        signal(SignalKind::terminate()).map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.map_err(|e| format!("cannot watch SIGINT: {e}"))?,
    }
    tracing::info!("stopping");
    Ok(())
}
