//! `vertebrad serve`: open the store, start the DICOM node, the inference engine with its
//! analysis worker, and the forwarder; run until SIGINT or SIGTERM.
//!
//! The engine is loaded (bundle verified, sessions built) before the worker starts. If it
//! cannot be loaded the node still receives and spools images — a modality pushing a study
//! must not see failures because the model is being replaced — but the error is logged loudly
//! and jobs wait in the queue until a daemon with a working engine takes them.
//!
//! Under systemd (`Type=notify`, see [`crate::systemd`] and `docs/deployment.md`) it reports
//! `READY=1` once the node listens, the store is open and the engine was loaded (or failed
//! to), feeds the watchdog while every part is alive, and reports `STOPPING=1` on SIGTERM.
//!
//! Stop sequence (all steps run together, each bounded, well inside the unit's
//! `TimeoutStopSec=60`): the listeners stop accepting and open associations get
//! [`ASSOCIATION_GRACE`] to finish, then are aborted (A-ABORT); the worker stops claiming
//! and a job in progress gets the worker's `shutdown_grace` (30 s), then is handed back to the
//! queue; the forwarder stops claiming and its batches in flight get [`FORWARD_GRACE`]; then
//! the store is closed and the process exits 0.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::config::Config;
use crate::engine::Engine;
use crate::store::Store;
use crate::worker::{WorkerConfig, run_worker};

use super::RunningNode;

/// How long open associations may continue after SIGTERM before they are aborted.
pub const ASSOCIATION_GRACE: Duration = Duration::from_secs(20);

/// How long the forwarder's batches in flight may continue after SIGTERM; deliveries of a
/// batch cut short are sent again when their lease runs out.
pub const FORWARD_GRACE: Duration = Duration::from_secs(30);

/// Runs the daemon's DICOM node with `cfg` until a termination signal, then stops it
/// gracefully (associations in progress finish).
///
/// `database` defaults to `sqlite://<state dir>/vertebrad.db`; the spool to
/// `<state dir>/spool`.
///
/// # Errors
/// A message for an operator: what could not be opened or bound.
pub async fn run(
    mut cfg: Config,
    state_dir: &Path,
    database: Option<String>,
) -> Result<(), String> {
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
    // Settings edited in the web console override the file (they take effect at start).
    let overridden = crate::web::settings::apply_stored(&store, &mut cfg).await?;
    if !overridden.is_empty() {
        tracing::info!(keys = ?overridden, "settings from the web console applied");
    }
    let spool_dir = cfg
        .dicom
        .spool_dir
        .clone()
        .unwrap_or_else(|| state_dir.join("spool"));
    let node = RunningNode::start(cfg.dicom.clone(), store.clone(), &spool_dir)
        .await
        .map_err(|e| format!("cannot start the DICOM node: {e}"))?;
    // The line tests and operators wait for.
    println!("listening on {}", node.local_addr());
    let status = crate::web::ServiceStatus::default();
    status.update(|s| {
        s.dicom = Some(crate::web::DicomStatus {
            addr: node.local_addr(),
            ae_title: cfg.dicom.ae_title.clone(),
            tls_port: node.tls_addr().map(|a| a.port()),
        });
        s.spool_dir = Some(spool_dir.clone());
        s.spool_high_water_percent = cfg.dicom.limits.spool_high_water_percent;
    });
    let console = if cfg.web.enabled {
        let options = crate::web::ConsoleOptions {
            config: cfg.clone(),
            state_dir: state_dir.to_path_buf(),
            status: status.clone(),
            series_links: Vec::new(),
        };
        // Like the engine, a console that cannot start (port taken, unreadable certificate)
        // must not stop the node from receiving images: it is logged loudly instead.
        match crate::web::RunningConsole::start(options, store.clone()).await {
            Ok(console) => {
                // Ignore a closed stdout: whoever started us may read only the first line.
                let _ = writeln!(
                    std::io::stdout(),
                    "web console on https://{}",
                    console.local_addr()
                );
                Some(console)
            }
            Err(e) => {
                tracing::error!("web console not available: {e}");
                None
            }
        }
    } else {
        None
    };
    let notifier = Arc::new(crate::systemd::Notifier::from_env());
    let listening = match node.tls_addr() {
        Some(tls) => format!("DICOM on {} (TLS {tls})", node.local_addr()),
        None => format!("DICOM on {}", node.local_addr()),
    };
    notifier.status(&format!("{listening}; loading the inference engine"));
    let (stop, stopped) = watch::channel(false);
    let mut engine_cfg = cfg.inference.clone();
    if engine_cfg.tensorrt_cache.is_none() {
        engine_cfg.tensorrt_cache = Some(state_dir.join("tensorrt-cache"));
    }
    // A bundle uploaded and activated in the web console replaces the configured one.
    if let Some(dir) = crate::web::pages::model::active_bundle_dir(&store)
        .await
        .map_err(|e| e.to_string())?
    {
        tracing::info!(bundle = %dir.display(), "loading the bundle activated in the web console");
        engine_cfg.bundle = dir;
    }
    let engine = tokio::task::spawn_blocking(move || Engine::load(&engine_cfg))
        .await
        .map_err(|e| format!("engine loader: {e}"))?;
    let mut parts = node.heartbeats().to_vec();
    let engine_status = match &engine {
        Ok(e) => format!(
            "engine loaded (bundle {}, provider {})",
            e.bundle.manifest.model.name, e.provider
        ),
        Err(e) => format!("engine not loaded ({}): receiving only", e.class()),
    };
    let worker = match engine {
        Ok(engine) => {
            status.update(|s| {
                s.engine = crate::web::EngineStatus::Loaded(Box::new(
                    crate::web::LoadedEngine::from_engine(&engine),
                ));
            });
            let wc = WorkerConfig::from_settings(state_dir, &cfg.worker);
            parts.push(wc.heartbeat.clone());
            Some(tokio::spawn(run_worker(
                store.clone(),
                Arc::new(engine),
                wc,
                stopped.clone(),
            )))
        }
        Err(e) => {
            status.update(|s| s.engine = crate::web::EngineStatus::Unavailable(e.to_string()));
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
    let retention = tokio::spawn(crate::retention::run_retention(
        store.clone(),
        cfg.retention.clone(),
        spool_dir.clone(),
        stopped.clone(),
    ));
    let ready_status = format!("{listening}; {engine_status}; store {:?}", store.backend());
    if let Some(interval) = crate::systemd::watchdog_interval() {
        let check = crate::systemd::HealthCheck::new(parts, store.clone(), interval);
        tokio::spawn(crate::systemd::run_watchdog(
            notifier.clone(),
            interval,
            check,
            ready_status.clone(),
            stopped.clone(),
        ));
    }
    notifier.ready(&ready_status);
    wait_for_signal(&mut term).await?;
    notifier.stopping(&format!(
        "stopping: {} association(s) open, finishing jobs in progress",
        node.open_associations()
    ));
    let _ = stop.send(true);
    let worker = async {
        if let Some(w) = worker {
            let _ = w.await;
        }
    };
    let forwarder = async {
        match tokio::time::timeout(FORWARD_GRACE, forwarder).await {
            Ok(Ok(Err(e))) => tracing::warn!("forwarder: {e}"),
            Ok(Err(e)) => tracing::warn!("forwarder task: {e}"),
            Ok(Ok(Ok(()))) => {}
            Err(_) => tracing::warn!(
                "forwarder batches still in flight after the stop grace: their deliveries are \
                 sent again when their lease runs out"
            ),
        }
    };
    let console = async {
        if let Some(c) = console {
            c.stop().await;
        }
    };
    let retention = async {
        if let Err(e) = retention.await {
            tracing::warn!("retention task: {e}");
        }
    };
    tokio::join!(
        node.stop_within(ASSOCIATION_GRACE),
        worker,
        forwarder,
        console,
        retention
    );
    store.close().await;
    tracing::info!("stopped");
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
