//! The spool retention sweeper: every `[retention] interval_s` it asks the store which received
//! images may go ([`crate::store::retention::select_for_deletion`]: only images of series whose
//! results were all delivered, by the configured policy and disk pressure), deletes those
//! files — only inside the spool — records that they were deleted, and writes one audit event
//! per sweep that deleted anything (counts and bytes; no UIDs, no patient data).
//!
//! A crash between deleting and recording only repeats an idempotent deletion: a file already
//! gone counts as deleted. A file that cannot be deleted (permissions, I/O error) stays indexed
//! and is tried again at the next sweep; the sweep says so in the log and the audit event.

use std::path::{Component, Path};
use std::time::Duration;

use tokio::sync::watch;

use crate::config::RetentionConfig;
use crate::dicom::spool::disk_use;
use crate::store::retention::select_for_deletion;
use crate::store::{AuditEvent, AuditOutcome, Store};

/// Rows marked deleted per store transaction.
const MARK_CHUNK: usize = 500;

/// What one sweep did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// Files deleted now (or found already gone) and marked deleted in the store.
    pub deleted: usize,
    /// Bytes of those files, as indexed.
    pub bytes: u64,
    /// Of `deleted`, files that were already gone (a repeated sweep after a crash).
    pub already_gone: usize,
    /// Files selected but not deleted (outside the spool, or the deletion failed): kept
    /// indexed and tried again at the next sweep.
    pub failed: usize,
}

/// Runs one sweep over the spool at `spool_dir`.
///
/// # Errors
/// The store's error (nothing is deleted when the selection cannot be read), or an
/// unreadable spool file system.
pub async fn sweep(
    store: &Store,
    cfg: &RetentionConfig,
    spool_dir: &Path,
) -> Result<Sweep, String> {
    let (used, total) = disk_use(spool_dir)
        .ok_or_else(|| format!("cannot read the file system of {}", spool_dir.display()))?;
    let files = store.spool_files().await.map_err(|e| e.to_string())?;
    let policy = cfg.policy(total);
    let selected = select_for_deletion(&files, &policy, store.now_ms(), used);
    let root = spool_dir
        .canonicalize()
        .map_err(|e| format!("spool {}: {e}", spool_dir.display()))?;
    let mut sweep = Sweep::default();
    let mut done = Vec::with_capacity(selected.len());
    for f in selected {
        let path = Path::new(&f.spool_path);
        if !inside(path, spool_dir, &root) {
            tracing::error!(
                instance = f.instance_id,
                "retention: an indexed file lies outside the spool; not deleted"
            );
            sweep.failed += 1;
            continue;
        }
        match tokio::fs::remove_file(path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => sweep.already_gone += 1,
            Err(e) => {
                tracing::warn!(instance = f.instance_id, error = %e, "retention: cannot delete a spooled image");
                sweep.failed += 1;
                continue;
            }
        }
        sweep.deleted += 1;
        sweep.bytes += u64::try_from(f.size_bytes).unwrap_or(0);
        done.push(f.instance_id);
    }
    for chunk in done.chunks(MARK_CHUNK) {
        store
            .mark_spool_deleted(chunk)
            .await
            .map_err(|e| e.to_string())?;
    }
    if sweep.deleted > 0 || sweep.failed > 0 {
        let pressure = policy.high_water_bytes.is_some_and(|h| used > h);
        tracing::info!(
            deleted = sweep.deleted,
            bytes = sweep.bytes,
            already_gone = sweep.already_gone,
            failed = sweep.failed,
            disk_used_percent = 100.0 * used as f64 / total.max(1) as f64,
            pressure,
            "retention: delivered images deleted from the spool"
        );
        let event = AuditEvent {
            actor: "system".into(),
            action: "spool.retention".into(),
            target: Some(format!(
                "{} images, {} bytes deleted{}{}",
                sweep.deleted,
                sweep.bytes,
                if pressure {
                    " (disk above the retention high-water mark)"
                } else {
                    ""
                },
                if sweep.failed > 0 {
                    format!("; {} could not be deleted", sweep.failed)
                } else {
                    String::new()
                }
            )),
            peer_addr: None,
            outcome: if sweep.failed > 0 {
                AuditOutcome::Failure
            } else {
                AuditOutcome::Success
            },
        };
        if let Err(e) = store.append_audit(&event).await {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
    Ok(sweep)
}

/// Whether `path` is a plain path below the spool (as configured or canonical): no `..`, and
/// the spool as its prefix. Indexed paths are built by the spool itself, so this only guards
/// against a tampered database.
fn inside(path: &Path, spool_dir: &Path, canonical_root: &Path) -> bool {
    !path.components().any(|c| matches!(c, Component::ParentDir))
        && (path.starts_with(spool_dir) || path.starts_with(canonical_root))
        && path != spool_dir
        && path != canonical_root
}

/// Sweeps every `cfg.interval_s` until `shutdown` turns true. A failed sweep (store down) is
/// logged and retried at the next interval.
pub async fn run_retention(
    store: Store,
    cfg: RetentionConfig,
    spool_dir: std::path::PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let every = Duration::from_secs(cfg.interval_s.max(1));
    tracing::info!(
        interval_s = cfg.interval_s,
        delete_after_delivery = cfg.delete_after_delivery,
        max_age_days = cfg.max_age_days,
        high_water_percent = cfg.high_water_percent,
        low_water_percent = cfg.low_water_percent,
        "spool retention running"
    );
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => {}
        }
        if *shutdown.borrow() {
            return;
        }
        if let Err(e) = sweep(&store, &cfg, &spool_dir).await {
            tracing::warn!(
                "retention sweep failed, retried in {} s: {e}",
                cfg.interval_s
            );
        }
    }
}
