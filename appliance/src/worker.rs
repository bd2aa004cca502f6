//! The analysis worker: claims `analyze-series` jobs from the queue, runs the inference engine
//! on the spooled series, stores the result and queues its SEG and SR for every enabled
//! destination — in that order, so a crash at any point leaves either a job to redo (its
//! lease runs out) or a stored result with its deliveries.
//!
//! ```text
//! claim (lease) ─▶ series_files ─▶ engine::analyze (blocking thread; heartbeats meanwhile)
//!   ├─ ok ─────────▶ save_result ─▶ add_output (seg, sr) ─▶ add_delivery × destinations ─▶ complete
//!   ├─ input refused ─▶ save_result(rejected) ─▶ complete      (a re-run cannot help)
//!   └─ other error ─▶ fail (back-off; dead after max attempts)
//! ```
//!
//! Shutdown: the worker stops claiming; a job in progress gets `shutdown_grace` to finish.
//! If it has not by then, the worker stops waiting for it and hands it back to the queue
//! ([`Store::release`]: runnable at once, the interrupted attempt not counted), so another
//! daemon — or this one after its restart — takes it over without waiting for the lease to
//! run out. The analysis thread cannot be interrupted; the process exits without it, and a
//! re-run rewrites the same outputs.
//!
//! Outputs go to `<results dir>/series-<id>/`. A re-run on the same images writes the same SOP
//! Instance UIDs (derived from the series, the bundle and the set of input images), so the
//! outbox does not duplicate them; a re-analysis after late images (or with another bundle)
//! gets new UIDs and is delivered as a new SEG/SR pair, the superseded pair staying in the
//! outputs. Logs name jobs, series ids and error classes, never patient data.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use crate::dicom::completion::ANALYZE_SERIES;
use crate::engine::analyze::{Analysis, AnalyzeOptions, analyze};
use crate::engine::{Engine, EngineError};
use crate::store::queue::{Backoff, Job};
use crate::store::{
    LesionRecord, NewResult, OutputKind, ResultStatus, Store, Timings, VertebraRecord,
};
use crate::systemd::Heartbeat;

/// Worker settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Lease owner name (host and process).
    pub owner: String,
    /// Job lease; heartbeats extend it every third of it.
    pub lease: Duration,
    /// Idle poll interval.
    pub poll: Duration,
    /// Where analysis outputs are written.
    pub results_dir: PathBuf,
    /// Back-off of failed attempts.
    pub backoff: Backoff,
    /// How long a job in progress may still run after shutdown was asked for before it is
    /// handed back to the queue.
    pub shutdown_grace: Duration,
    /// Beaten from the worker's loop (idle or waiting for a job), for the systemd watchdog.
    pub heartbeat: Heartbeat,
}

impl WorkerConfig {
    /// Defaults under `state_dir`: a 5 min lease, 1 s polls, `results/`, 30 s shutdown
    /// grace.
    pub fn new(state_dir: &Path) -> Self {
        Self {
            owner: format!(
                "{}:{}",
                std::fs::read_to_string("/etc/hostname")
                    .map_or_else(|_| "host".into(), |h| h.trim().to_owned()),
                std::process::id()
            ),
            lease: Duration::from_secs(300),
            poll: Duration::from_secs(1),
            results_dir: state_dir.join("results"),
            backoff: Backoff::default(),
            shutdown_grace: Duration::from_secs(30),
            heartbeat: Heartbeat::new("analysis worker"),
        }
    }

    /// [`WorkerConfig::new`] with the lease and poll interval of the `[worker]` section.
    pub fn from_settings(state_dir: &Path, settings: &crate::config::WorkerSettings) -> Self {
        Self {
            lease: Duration::from_secs(settings.lease_s),
            poll: Duration::from_secs_f64(settings.poll_interval_s),
            ..Self::new(state_dir)
        }
    }
}

/// Runs the worker until `shutdown` turns true. A job in progress then gets
/// `config.shutdown_grace` to finish before it is handed back to the queue.
///
/// Store errors (the database restarting, a fail-over) are retried after the poll interval:
/// the first one is logged as an outage, the first success after it as the recovery, so an
/// operator sees one pair of lines per outage instead of one line per poll.
pub async fn run_worker(
    store: Store,
    engine: Arc<Engine>,
    config: WorkerConfig,
    mut shutdown: watch::Receiver<bool>,
) {
    tracing::info!(owner = %config.owner, "analysis worker running");
    let mut outage: Option<std::time::Instant> = None;
    let mut beat = Heartbeat::ticker();
    loop {
        config.heartbeat.beat();
        if *shutdown.borrow() {
            break;
        }
        let claimed = store.claim(&config.owner, config.lease).await;
        if claimed.is_ok()
            && let Some(since) = outage.take()
        {
            tracing::info!(
                seconds = since.elapsed().as_secs_f64(),
                "store available again: the analysis worker resumes"
            );
        }
        match claimed {
            Ok(Some(job)) => {
                if !run_job_until_stopped(&store, &engine, &config, &job, &mut beat, &mut shutdown)
                    .await
                {
                    break;
                }
            }
            Ok(None) => pause(&config, &mut beat, &mut shutdown).await,
            Err(e) => {
                if outage.is_none() {
                    tracing::error!(
                        error = %e,
                        retry_s = config.poll.as_secs_f64(),
                        "store unavailable: the analysis worker cannot claim jobs; retrying"
                    );
                    outage = Some(std::time::Instant::now());
                } else {
                    tracing::debug!(error = %e, "store still unavailable");
                }
                pause(&config, &mut beat, &mut shutdown).await;
            }
        }
    }
    tracing::info!("analysis worker stopped");
}

/// Waits one poll interval (or until shutdown), beating the heartbeat.
async fn pause(
    config: &WorkerConfig,
    beat: &mut tokio::time::Interval,
    shutdown: &mut watch::Receiver<bool>,
) {
    let idle = tokio::time::sleep(config.poll);
    tokio::pin!(idle);
    loop {
        tokio::select! {
            () = &mut idle => break,
            _ = beat.tick() => config.heartbeat.beat(),
            _ = shutdown.changed() => break,
        }
    }
}

/// Runs `job`, beating the heartbeat meanwhile. Returns false when shutdown came and the
/// grace ran out: the job was abandoned and handed back to the queue.
async fn run_job_until_stopped(
    store: &Store,
    engine: &Arc<Engine>,
    config: &WorkerConfig,
    job: &Job,
    beat: &mut tokio::time::Interval,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let work = run_job(store, engine, config, job);
    tokio::pin!(work);
    let give_up = async {
        // An error means the sender is gone: the daemon is stopping all the same.
        let _ = shutdown.wait_for(|stop| *stop).await;
        tracing::info!(
            job = job.id,
            grace_s = config.shutdown_grace.as_secs_f64(),
            "stopping: waiting for the job in progress"
        );
        tokio::time::sleep(config.shutdown_grace).await;
    };
    tokio::pin!(give_up);
    loop {
        tokio::select! {
            () = &mut work => return true,
            _ = beat.tick() => config.heartbeat.beat(),
            () = &mut give_up => break,
        }
    }
    match store.release(job).await {
        Ok(()) => tracing::warn!(
            job = job.id,
            "job not finished within the shutdown grace: handed back to the queue"
        ),
        Err(e) => tracing::warn!(
            job = job.id,
            error = %e,
            "job not finished within the shutdown grace and could not be handed back; it \
             runs again when its lease expires"
        ),
    }
    false
}

/// One job, start to finish (never returns an error: every outcome is recorded).
pub async fn run_job(store: &Store, engine: &Arc<Engine>, config: &WorkerConfig, job: &Job) {
    let outcome = process(store, engine, config, job).await;
    let recorded = match outcome {
        Ok(()) => store.complete(job).await.map(|()| "completed"),
        Err(JobError::Permanent(why)) => {
            tracing::warn!(job = job.id, reason = %why, "job failed permanently");
            store.fail_permanently(job, &why).await.map(|()| "dead")
        }
        Err(JobError::Transient(why)) => {
            tracing::warn!(job = job.id, reason = %why, "job failed; will retry");
            store
                .fail(job, &why, &config.backoff)
                .await
                .map(crate::store::queue::JobState::as_str)
        }
    };
    match recorded {
        Ok(state) => tracing::info!(job = job.id, state, "job finished"),
        Err(e) => tracing::warn!(job = job.id, error = %e, "cannot record the job's outcome"),
    }
}

/// Copies an analysis output to `<out>/outputs/<kind>-<SOP Instance UID>.dcm` (temp file,
/// fsync, rename, directory fsync) unless that file exists; returns its path. Our derived UIDs
/// are digits and dots, so the name is safe; anything else is refused.
async fn keep_output(out: &Path, kind: &str, uid: &str, src: &Path) -> std::io::Result<PathBuf> {
    if uid.is_empty() || !uid.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(std::io::Error::other(format!(
            "unexpected SOP Instance UID {uid:?}"
        )));
    }
    let dir = out.join("outputs");
    let dest = dir.join(format!("{kind}-{uid}.dcm"));
    if tokio::fs::try_exists(&dest).await? {
        return Ok(dest);
    }
    tokio::fs::create_dir_all(&dir).await?;
    let tmp = dir.join(format!(".{kind}-{uid}.part"));
    tokio::fs::copy(src, &tmp).await?;
    tokio::fs::File::open(&tmp).await?.sync_all().await?;
    tokio::fs::rename(&tmp, &dest).await?;
    tokio::fs::File::open(&dir).await?.sync_all().await?;
    Ok(dest)
}

enum JobError {
    Permanent(String),
    Transient(String),
}

fn transient(e: impl std::fmt::Display) -> JobError {
    JobError::Transient(e.to_string())
}

async fn process(
    store: &Store,
    engine: &Arc<Engine>,
    config: &WorkerConfig,
    job: &Job,
) -> Result<(), JobError> {
    if job.kind != ANALYZE_SERIES {
        return Err(JobError::Permanent(format!(
            "unknown job kind {:?}",
            job.kind
        )));
    }
    let series_id = job
        .series_id
        .ok_or_else(|| JobError::Permanent("analysis job without a series".into()))?;
    let series = store
        .series_files(series_id)
        .await
        .map_err(transient)?
        .ok_or_else(|| JobError::Permanent(format!("series {series_id} is not indexed")))?;
    let dir = series
        .files
        .first()
        .and_then(|f| Path::new(f).parent())
        .map(Path::to_path_buf)
        .ok_or_else(|| {
            JobError::Permanent(format!("series {series_id} has no spooled files left"))
        })?;
    let started = std::time::Instant::now();
    let out = config.results_dir.join(format!("series-{series_id}"));
    let mut opts = AnalyzeOptions::new(engine, &out);
    opts.predecessor_srs = store
        .sr_output_paths(series_id)
        .await
        .map_err(transient)?
        .into_iter()
        .map(PathBuf::from)
        .collect();
    let engine2 = Arc::clone(engine);
    let handle = tokio::task::spawn_blocking(move || analyze(&engine2, &dir, &opts, &mut |_| {}));
    tokio::pin!(handle);
    let mut beat = tokio::time::interval(config.lease / 3);
    beat.tick().await;
    let result = loop {
        tokio::select! {
            r = &mut handle => break r.map_err(|e| JobError::Transient(format!("analysis thread: {e}")))?,
            _ = beat.tick() => {
                if let Err(e) = store.heartbeat(job, config.lease).await {
                    tracing::warn!(job = job.id, error = %e, "heartbeat failed");
                }
            }
        }
    };
    let bundle = &engine.bundle;
    match result {
        Ok(analysis) => {
            let record = result_record(series_id, job.id, engine, &analysis);
            let result_id = store.save_result(&record).await.map_err(transient)?;
            let destinations = store.enabled_destination_ids().await.map_err(transient)?;
            for o in &analysis.dicom_outputs {
                let kind = if o.kind == "seg" {
                    OutputKind::Seg
                } else {
                    OutputKind::Sr
                };
                // The outbox sends an immutable copy named by its UID: a later re-analysis
                // rewrites `seg.dcm`/`sr.dcm`, and an undelivered earlier object must still
                // go out as it was.
                let kept = keep_output(&out, o.kind, &o.sop_instance_uid, &o.path)
                    .await
                    .map_err(|e| {
                        JobError::Transient(format!("keeping the {} output: {e}", o.kind))
                    })?;
                let output = store
                    .add_output(
                        result_id,
                        kind,
                        &o.sop_instance_uid,
                        &kept.to_string_lossy(),
                    )
                    .await
                    .map_err(transient)?;
                for &d in &destinations {
                    store.add_delivery(output, d).await.map_err(transient)?;
                }
            }
            let t = &analysis.document.timings_s;
            let metrics = crate::metrics::global();
            metrics.job_latency.observe(started.elapsed());
            metrics
                .inference_time
                .observe(std::time::Duration::from_secs_f64(
                    (t.localize + t.windows + t.identification).max(0.0),
                ));
            tracing::info!(
                job = job.id,
                series = series_id,
                vertebrae = analysis.document.vertebrae.len(),
                lesions = analysis.document.lesions.len(),
                outputs = analysis.dicom_outputs.len(),
                destinations = destinations.len(),
                seconds = analysis.document.timings_s.total,
                "analysis stored"
            );
            Ok(())
        }
        Err(e @ EngineError::Input { .. }) => {
            tracing::warn!(
                job = job.id,
                series = series_id,
                class = e.class(),
                "series not analysable"
            );
            let record = NewResult {
                series_id,
                job_id: Some(job.id),
                bundle_id: bundle.manifest.model.name.clone(),
                bundle_version: bundle.manifest_sha256[..12].to_owned(),
                status: ResultStatus::Rejected,
                timings: Timings::default(),
                vertebrae: Vec::new(),
                lesions: Vec::new(),
            };
            store.save_result(&record).await.map_err(transient)?;
            Ok(())
        }
        Err(e) if e.is_permanent() => Err(JobError::Permanent(format!("[{}] {e}", e.class()))),
        Err(e) => Err(JobError::Transient(format!("[{}] {e}", e.class()))),
    }
}

fn ms(s: f64) -> u64 {
    (s * 1000.0).round().max(0.0) as u64
}

/// The store's record of an analysis (one row per label; lesions with their vertebra).
fn result_record(series_id: i64, job_id: i64, engine: &Engine, a: &Analysis) -> NewResult {
    let d = &a.document;
    let t = &d.timings_s;
    let mut vertebrae: Vec<VertebraRecord> = Vec::new();
    for v in &d.vertebrae {
        let (Some(bbox), Some(mean_hu)) = (v.bbox_source_voxels, v.mean_hu) else {
            continue;
        };
        if vertebrae.iter().any(|r| r.label == i32::from(v.label)) {
            continue;
        }
        let ratio = |h: f64| {
            v.heights
                .filter(|x| x.posterior_mm > 0.0)
                .map(|x| h / x.posterior_mm)
        };
        vertebrae.push(VertebraRecord {
            label: i32::from(v.label),
            centroid_x: v.centroid_lps_mm[0],
            centroid_y: v.centroid_lps_mm[1],
            centroid_z: v.centroid_lps_mm[2],
            volume_mm3: v.volume_mm3,
            bbox_min_x: bbox[0][0] as i32,
            bbox_min_y: bbox[0][1] as i32,
            bbox_min_z: bbox[0][2] as i32,
            bbox_max_x: bbox[1][0] as i32,
            bbox_max_y: bbox[1][1] as i32,
            bbox_max_z: bbox[1][2] as i32,
            mean_hu,
            anterior_height_ratio: v.heights.and_then(|h| ratio(h.anterior_mm)),
            middle_height_ratio: v.heights.and_then(|h| ratio(h.middle_mm)),
            genant_grade: v.genant_grade.map(i32::from),
            confidence: v.confidence.clamp(0.0, 1.0),
        });
    }
    let lesions = d
        .lesions
        .iter()
        .map(|l| LesionRecord {
            class: l.class.clone(),
            center_x: l.centre_lps_mm[0],
            center_y: l.centre_lps_mm[1],
            center_z: l.centre_lps_mm[2],
            size_mm: l.size_mm.iter().copied().fold(0.0, f64::max),
            score: l.score.clamp(0.0, 1.0),
            vertebra_label: l.vertebra.as_deref().and_then(|n| {
                d.vertebrae
                    .iter()
                    .find(|v| v.name == n)
                    .map(|v| i32::from(v.label))
            }),
        })
        .collect();
    NewResult {
        series_id,
        job_id: Some(job_id),
        bundle_id: engine.bundle.manifest.model.name.clone(),
        bundle_version: engine.bundle.manifest_sha256[..12].to_owned(),
        status: ResultStatus::Succeeded,
        timings: Timings {
            preprocess_ms: ms(t.load + t.preprocess),
            inference_ms: ms(t.localize + t.windows + t.identification),
            postprocess_ms: ms(t.postprocess + t.resample_back + t.write),
        },
        vertebrae,
        lesions,
    }
}
