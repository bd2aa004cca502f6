//! `vertebrad serve`: open the store, start the DICOM node, the inference engine with its
//! analysis worker, and the forwarder; run until SIGINT or SIGTERM.
//!
//! The engine is loaded (bundle verified, sessions built) before the worker starts. If it
//! cannot be loaded the node still receives and spools images — a modality pushing a study
//! must not see failures because the model is being replaced — but the error is logged loudly
//! and jobs wait in the queue until a daemon with a working engine takes them.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::Config;
use crate::engine::Engine;
use crate::store::Store;
use crate::worker::{WorkerConfig, run_worker};

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
    // Watch SIGTERM before anything announces readiness: a supervisor may stop us at once.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("cannot watch SIGTERM: {e}"))?;
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
    let (stop, stopped) = watch::channel(false);
    let mut engine_cfg = cfg.inference.clone();
    if engine_cfg.tensorrt_cache.is_none() {
        engine_cfg.tensorrt_cache = Some(state_dir.join("tensorrt-cache"));
    }
    let engine = tokio::task::spawn_blocking(move || Engine::load(&engine_cfg))
        .await
        .map_err(|e| format!("engine loader: {e}"))?;
    let worker = match engine {
        Ok(engine) => {
            let wc = WorkerConfig::from_settings(state_dir, &cfg.worker);
            Some(tokio::spawn(run_worker(
                store.clone(),
                Arc::new(engine),
                wc,
                stopped.clone(),
            )))
        }
        Err(e) => {
            tracing::error!(
                class = e.class(),
                "inference engine not available, series are received and queued but not \
                 analysed: {e}"
            );
            None
        }
    };
    // Unusable [forward] settings (TLS files) are a start-up error, not a silent forwarder.
    crate::dicom::scu::ScuOptions::from_config(&cfg.forward)
        .map_err(|e| format!("cannot start the forwarder: {e}"))?;
    let forwarder = tokio::spawn(crate::forward::run_forwarder(
        store.clone(),
        cfg.forward.clone(),
        stopped.clone(),
    ));
    wait_for_signal(&mut term).await?;
    let _ = stop.send(true);
    node.stop().await;
    if let Some(w) = worker {
        let _ = w.await;
    }
    match forwarder.await {
        Ok(Err(e)) => tracing::warn!("forwarder: {e}"),
        Err(e) => tracing::warn!("forwarder task: {e}"),
        Ok(Ok(())) => {}
    }
    store.close().await;
    Ok(())
}

async fn wait_for_signal(term: &mut tokio::signal::unix::Signal) -> Result<(), String> {
    tokio::select! {
        _ = term.recv() => {}
        r = tokio::signal::ctrl_c() => r.map_err(|e| format!("cannot watch SIGINT: {e}"))?,
    }
    tracing::info!("stopping");
    Ok(())
}
