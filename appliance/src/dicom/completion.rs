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
//!
//! Restarts: the watch lives in memory, so a daemon that stops during a series' quiet period
//! would forget it. On start the tracker asks the store for series with instances newer than
//! their latest job ([`SeriesTracker::recover`]) and watches them again: every acknowledged
//! instance of a processed class ends up in some job's input across crashes too.

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

    /// Puts back under watch the series that an earlier run of the daemon indexed but never
    /// queued (it stopped during their quiet period; the tracker lives in memory), and
    /// returns how many. Each becomes due once it has been quiet for `stable_after` of its
    /// calling AE, counted from its last instance's receipt time, with the same dedup key the
    /// earlier run would have used. A series already watched (an instance arrived since the
    /// start) keeps its newer state.
    ///
    /// With several daemons on one database, one starting while another receives a series
    /// may queue a job for it early; the other daemon then queues a follow-up job for the
    /// later instances (see the module documentation), so no instance is left out.
    ///
    /// # Errors
    /// The store's error; nothing is changed then.
    pub async fn recover(
        &self,
        store: &Store,
        stable_after: impl Fn(&str) -> Duration,
    ) -> crate::store::Result<usize> {
        let classes: Vec<&str> = crate::dicom::negotiation::PROCESSED_SOP_CLASSES
            .iter()
            .map(|(uid, _)| *uid)
            .collect();
        let series = store.unqueued_series(ANALYZE_SERIES, &classes).await?;
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = series.len();
        for s in series {
            let stable = stable_after(&s.calling_ae);
            let age = Duration::from_millis(
                u64::try_from(now_ms.saturating_sub(s.last_received_at_ms)).unwrap_or(0),
            )
            .min(stable);
            let now = Instant::now();
            open.entry(s.series_uid).or_insert(Tracked {
                series_id: s.series_id,
                last_instance: now.checked_sub(age).unwrap_or(now),
                last_instance_ms: s.last_received_at_ms,
                stable_after: stable,
            });
        }
        Ok(count)
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

    /// First [`SeriesTracker::recover`]s what an earlier run left unqueued (retrying every
    /// `tick` while the store is unavailable), then checks for complete series every `tick`
    /// until `shutdown` resolves.
    pub async fn run(
        &self,
        store: Store,
        max_attempts: u32,
        tick: Duration,
        stable_after: impl Fn(&str) -> Duration,
        mut shutdown: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut recovered = false;
        loop {
            tokio::select! {
                _ = interval.tick() => {}
                _ = shutdown.changed() => return,
            }
            if !recovered {
                match self.recover(&store, &stable_after).await {
                    Ok(n) => {
                        recovered = true;
                        if n > 0 {
                            tracing::info!(
                                series = n,
                                "series received before a restart and not yet queued: \
                                 watching them again"
                            );
                        }
                    }
                    Err(e) => {
                        tracing::warn!(
                            error = %e,
                            "cannot look for series left unqueued by a restart; will retry"
                        );
                        continue;
                    }
                }
            }
            if let Err(e) = self.flush_stable(&store, max_attempts).await {
                tracing::warn!(error = %e, "queueing complete series failed; will retry");
            }
        }
    }
}
