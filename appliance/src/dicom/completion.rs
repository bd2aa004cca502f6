//! Series completion: DICOM has no "end of series" message, so a series counts as complete
//! once no new instance of it has arrived for a while (per source AE title, from config).
//!
//! Every indexed instance of a processed SOP class calls [`SeriesTracker::note`]. A background
//! task ([`SeriesTracker::run`]) looks for series that went quiet and enqueues one
//! `analyze-series` job each. The job's dedup key is `analyze:<series UID>:<time of its last
//! instance>`: marking the same quiet period twice (a retry after a store error) gives one job,
//! while a later quiet period gives a new key.
//!
//! Late instances: when instances arrive after the series' job was queued, the series is
//! tracked again. When it goes quiet again, a follow-up job is queued unless the earlier job
//! is still waiting in the queue (it has not started, so it will read the late instances
//! anyway). A late slice therefore always ends up in some job's input, never lost.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::store::Store;
use crate::store::queue::{JobState, NewJob};

/// The job kind the tracker enqueues.
pub const ANALYZE_SERIES: &str = "analyze-series";

#[derive(Debug)]
struct Tracked {
    series_id: i64,
    last_instance: Instant,
    last_instance_ms: i64,
    stable_after: Duration,
}

/// Watches series until they are complete.
#[derive(Debug, Default)]
pub struct SeriesTracker {
    /// Series with instances not yet covered by a queued job, by series UID.
    open: Mutex<HashMap<String, Tracked>>,
    /// The latest job queued per series UID.
    queued: Mutex<HashMap<String, i64>>,
}

impl SeriesTracker {
    /// Records that an instance of `series_uid` (row `series_id`) was indexed at
    /// `received_at_ms`; the series is complete after `stable_after` without another one.
    pub fn note(
        &self,
        series_uid: &str,
        series_id: i64,
        received_at_ms: i64,
        stable_after: Duration,
    ) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let entry = open.entry(series_uid.to_owned()).or_insert(Tracked {
            series_id,
            last_instance: Instant::now(),
            last_instance_ms: received_at_ms,
            stable_after,
        });
        entry.last_instance = Instant::now();
        entry.last_instance_ms = entry.last_instance_ms.max(received_at_ms);
        entry.stable_after = stable_after;
    }

    /// Number of series still being received.
    pub fn open_series(&self) -> usize {
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    /// Queues jobs for every series quiet long enough; returns how many were queued.
    ///
    /// # Errors
    /// The store's error; the series stays tracked and is tried again next time.
    pub async fn flush_stable(
        &self,
        store: &Store,
        max_attempts: u32,
    ) -> crate::store::Result<usize> {
        let now = Instant::now();
        let due: Vec<(String, i64, i64)> = {
            let open = self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            open.iter()
                .filter(|(_, t)| now.duration_since(t.last_instance) >= t.stable_after)
                .map(|(uid, t)| (uid.clone(), t.series_id, t.last_instance_ms))
                .collect()
        };
        let mut queued = 0;
        for (uid, series_id, last_ms) in due {
            let previous = self
                .queued
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .get(&uid)
                .copied();
            let still_waiting = match previous {
                Some(id) => store
                    .job(id)
                    .await?
                    .is_some_and(|j| j.state == JobState::Queued),
                None => false,
            };
            if !still_waiting {
                let id = store
                    .enqueue(&NewJob {
                        kind: ANALYZE_SERIES.into(),
                        series_id: Some(series_id),
                        dedup_key: Some(format!("analyze:{uid}:{last_ms}")),
                        max_attempts,
                    })
                    .await?;
                self.queued
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(uid.clone(), id);
                queued += 1;
            }
            let mut open = self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Remove only if nothing arrived while we were talking to the store.
            if open
                .get(&uid)
                .is_some_and(|t| t.last_instance_ms == last_ms)
            {
                open.remove(&uid);
            }
        }
        Ok(queued)
    }

    /// Checks for complete series every `tick` until `shutdown` resolves.
    pub async fn run(
        &self,
        store: Store,
        max_attempts: u32,
        tick: Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            if let Err(e) = self.flush_stable(&store, max_attempts).await {
                tracing::warn!(error = %e, "queueing complete series failed; will retry");
            }
        }
    }
}
