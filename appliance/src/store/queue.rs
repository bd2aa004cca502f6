//! The job queue: durable jobs with leases, heartbeats, retries with back-off, and a dead end.
//!
//! ```text
//! queued ──claim──▶ running ──complete──▶ succeeded
//!   ▲                │  │ └──fail_permanently──▶ failed   (bad input: retrying cannot help)
//!   └──fail (backoff)┘  └──fail / lease expired, no attempts left──▶ dead
//! ```
//!
//! A claim leases the job to one worker until `lease_expires_at_ms`; the worker extends the
//! lease with heartbeats while it works. A worker that crashes stops heartbeating, its lease
//! runs out and the next claim takes the job over (counting another attempt). Every
//! transition is one statement or one transaction guarded by the lease (state, owner and
//! attempt number must still match), so a worker whose lease was taken over gets
//! [`Error::LeaseLost`] instead of overwriting its successor's state. A job that keeps failing
//! or keeps killing its worker (a poison job) ends in `dead` with its last error after
//! `max_attempts`, where an operator can see it.
//!
//! Because a job can run more than once (a worker that stalled past its lease still finishes),
//! its effects must be idempotent: results are upserted per series
//! ([`Store::save_result`](super::Store::save_result)), so a job run twice leaves one result.
//!
//! Error texts stored in `last_error` are shown in the web console and may reach logs: callers
//! must not put patient names or IDs in them.

use std::time::Duration;

use super::{Dialect, Error, Result, Store, duration_ms};

/// The states of a job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum JobState {
    /// Waiting to be claimed (possibly not before `run_after_ms`).
    Queued,
    /// Leased by a worker.
    Running,
    /// Finished successfully.
    Succeeded,
    /// Finished with an error that retrying cannot fix.
    Failed,
    /// Gave up after `max_attempts` attempts.
    Dead,
}

impl JobState {
    /// The value stored in `jobs.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Dead => "dead",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "queued" => JobState::Queued,
            "running" => JobState::Running,
            "succeeded" => JobState::Succeeded,
            "failed" => JobState::Failed,
            "dead" => JobState::Dead,
            other => {
                return Err(Error::Conflict(format!(
                    "unknown job state `{other}` in the store"
                )));
            }
        })
    }
}

/// Exponential back-off between attempts: `base · 2^(attempt−1)`, capped at `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Delay after the first failed attempt.
    pub base: Duration,
    /// Upper bound of any delay.
    pub max: Duration,
}

impl Default for Backoff {
    /// 30 s, doubling, at most 1 h: a transient fault (GPU busy, database fail-over) clears
    /// within a few attempts without hammering the system.
    fn default() -> Self {
        Self {
            base: Duration::from_secs(30),
            max: Duration::from_secs(3600),
        }
    }
}

impl Backoff {
    /// The delay before the next attempt after `attempt` (1-based) failed.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 1_u64 << doublings;
        let base_ms = u64::try_from(self.base.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(base_ms.saturating_mul(factor)).min(self.max)
    }
}

/// A job to enqueue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewJob {
    /// What to do, e.g. `analyze-series`; workers dispatch on it.
    pub kind: String,
    /// The series it works on, if any.
    pub series_id: Option<i64>,
    /// Enqueueing twice with the same key yields one job (e.g. `analyze:<series uid>`).
    pub dedup_key: Option<String>,
    /// Attempts before the job goes to `dead`.
    pub max_attempts: u32,
}

/// A job leased to a worker: the proof of ownership the other queue calls check.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Job {
    /// `jobs.id`.
    pub id: i64,
    /// What to do.
    pub kind: String,
    /// The series it works on, if any.
    pub series_id: Option<i64>,
    /// This attempt's number (1 for the first run).
    pub attempts: i32,
    /// Attempts allowed before `dead`.
    pub max_attempts: i32,
    /// The worker holding the lease.
    pub lease_owner: String,
    /// When the lease runs out unless extended.
    pub lease_expires_at_ms: i64,
}

/// A job as stored, for inspection (web console, tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobRecord {
    /// `jobs.id`.
    pub id: i64,
    /// What to do.
    pub kind: String,
    /// Current state.
    pub state: JobState,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Not claimed before this time.
    pub run_after_ms: i64,
    /// Lease holder while running.
    pub lease_owner: Option<String>,
    /// Lease expiry while running.
    pub lease_expires_at_ms: Option<i64>,
    /// The latest error (kept after a later success, as history).
    pub last_error: Option<String>,
    /// When it reached a final state.
    pub finished_at_ms: Option<i64>,
}

/// A series whose received instances no job covers yet (see [`Store::unqueued_series`]).
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct UnqueuedSeries {
    /// `series.id`.
    pub series_id: i64,
    /// Series Instance UID.
    pub series_uid: String,
    /// When its latest instance was received (ms since the Unix epoch).
    pub last_received_at_ms: i64,
    /// The calling AE title that sent it (the greatest, if several peers did).
    pub calling_ae: String,
}

#[derive(sqlx::FromRow)]
struct JobRow {
    id: i64,
    kind: String,
    state: String,
    attempts: i32,
    max_attempts: i32,
    run_after_ms: i64,
    lease_owner: Option<String>,
    lease_expires_at_ms: Option<i64>,
    last_error: Option<String>,
    finished_at_ms: Option<i64>,
}

/// Marks running jobs whose lease expired on their last allowed attempt as dead: their worker
/// crashed or hung every time, so the job itself is the likely cause.
const BURY_SQL: &str = "UPDATE jobs SET
        state = 'dead',
        last_error = 'lease of ' || lease_owner || ' expired on the last allowed attempt',
        lease_owner = NULL, lease_expires_at_ms = NULL,
        finished_at_ms = $1, updated_at_ms = $1
    WHERE state = 'running' AND lease_expires_at_ms < $1 AND attempts >= max_attempts";

/// The guard every transition of a running job carries: still running, same owner, same
/// attempt (an owner name reused after a takeover cannot match a newer attempt).
const LEASE_GUARD: &str = "id = $1 AND state = 'running' AND lease_owner = $2 AND attempts = $3";

impl Store {
    /// Adds a job, runnable now. With a `dedup_key` already present, returns the existing
    /// job's id and adds nothing.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for `max_attempts == 0`, or the driver's error.
    pub async fn enqueue(&self, job: &NewJob) -> Result<i64> {
        if job.max_attempts == 0 {
            return Err(Error::InvalidArgument(
                "max_attempts must be at least 1".into(),
            ));
        }
        let max_attempts = i32::try_from(job.max_attempts).unwrap_or(i32::MAX);
        let now = self.now_ms();
        Ok(on_backend!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let id: Option<i64> = sqlx::query_scalar(
                "INSERT INTO jobs (kind, series_id, dedup_key, max_attempts, run_after_ms,
                                   created_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $5, $5)
                 ON CONFLICT (dedup_key) DO NOTHING
                 RETURNING id",
            )
            .bind(&job.kind)
            .bind(job.series_id)
            .bind(&job.dedup_key)
            .bind(max_attempts)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?;
            let id = match id {
                Some(id) => id,
                None => {
                    sqlx::query_scalar("SELECT id FROM jobs WHERE dedup_key = $1")
                        .bind(&job.dedup_key)
                        .fetch_one(&mut *tx)
                        .await?
                }
            };
            tx.commit().await?;
            id
        }))
    }

    /// Leases the next runnable job to `owner` for `lease`, or returns `None` when nothing is
    /// runnable. Runnable: queued and due, or running with an expired lease (taken over, as
    /// another attempt). `owner` must be unique per worker (e.g. `host:pid:n`).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn claim(&self, owner: &str, lease: Duration) -> Result<Option<Job>> {
        let now = self.now_ms();
        let lease_ms = duration_ms(lease);
        Ok(on_backend!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(BURY_SQL).bind(now).execute(&mut *tx).await?;
            let job = sqlx::query_as::<_, Job>(pool.claim_sql())
                .bind(now)
                .bind(owner)
                .bind(lease_ms)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            job
        }))
    }

    /// Extends the lease of `job` to `lease` from now and returns the new expiry.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the job was taken over or finished; the driver's error.
    pub async fn heartbeat(&self, job: &Job, lease: Duration) -> Result<i64> {
        let now = self.now_ms();
        let expires = now.saturating_add(duration_ms(lease));
        let sql = format!(
            "UPDATE jobs SET lease_expires_at_ms = $4, updated_at_ms = $5 WHERE {LEASE_GUARD}"
        );
        self.transition(job, &sql, expires, now).await?;
        Ok(expires)
    }

    /// Marks `job` succeeded.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the job was taken over or finished; the driver's error.
    pub async fn complete(&self, job: &Job) -> Result<()> {
        let sql = format!(
            "UPDATE jobs SET state = 'succeeded', lease_owner = NULL, lease_expires_at_ms = NULL,
                 finished_at_ms = $4, updated_at_ms = $5 WHERE {LEASE_GUARD}"
        );
        let now = self.now_ms();
        self.transition(job, &sql, now, now).await
    }

    /// Records a failed attempt of `job`: back to `queued` after the back-off delay, or `dead`
    /// when it has used its attempts. Returns the new state.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the job was taken over or finished; the driver's error.
    pub async fn fail(&self, job: &Job, error: &str, backoff: &Backoff) -> Result<JobState> {
        let now = self.now_ms();
        if job.attempts >= job.max_attempts {
            let sql = format!(
                "UPDATE jobs SET state = 'dead', last_error = $4, lease_owner = NULL,
                     lease_expires_at_ms = NULL, finished_at_ms = $5, updated_at_ms = $5
                 WHERE {LEASE_GUARD}"
            );
            self.transition_text(job, &sql, error, now).await?;
            Ok(JobState::Dead)
        } else {
            let attempt = u32::try_from(job.attempts).unwrap_or(1);
            let run_after = now.saturating_add(duration_ms(backoff.delay(attempt)));
            let sql = format!(
                "UPDATE jobs SET state = 'queued', last_error = $4, lease_owner = NULL,
                     lease_expires_at_ms = NULL, run_after_ms = $5, updated_at_ms = $6
                 WHERE {LEASE_GUARD}"
            );
            on_backend!(self, |pool| {
                let done = sqlx::query(&sql)
                    .bind(job.id)
                    .bind(&job.lease_owner)
                    .bind(job.attempts)
                    .bind(error)
                    .bind(run_after)
                    .bind(now)
                    .execute(pool)
                    .await?;
                lease_held(job, done.rows_affected())
            })?;
            Ok(JobState::Queued)
        }
    }

    /// Hands `job` back to the queue, runnable at once, without counting the attempt: for a
    /// worker that stops (daemon shutdown) before the job finished. The next claim — by
    /// another daemon, or this one after its restart — takes it at once instead of waiting for
    /// the lease to run out.
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the job was taken over or finished; the driver's error.
    pub async fn release(&self, job: &Job) -> Result<()> {
        let sql = format!(
            "UPDATE jobs SET state = 'queued', attempts = attempts - 1, lease_owner = NULL,
                 lease_expires_at_ms = NULL, run_after_ms = $4, updated_at_ms = $5
             WHERE {LEASE_GUARD}"
        );
        let now = self.now_ms();
        self.transition(job, &sql, now, now).await
    }

    /// Ends `job` as `failed` without retrying: for errors a retry cannot fix (the input is
    /// not a spine CT, the series is malformed).
    ///
    /// # Errors
    /// [`Error::LeaseLost`] when the job was taken over or finished; the driver's error.
    pub async fn fail_permanently(&self, job: &Job, error: &str) -> Result<()> {
        let sql = format!(
            "UPDATE jobs SET state = 'failed', last_error = $4, lease_owner = NULL,
                 lease_expires_at_ms = NULL, finished_at_ms = $5, updated_at_ms = $5
             WHERE {LEASE_GUARD}"
        );
        let now = self.now_ms();
        self.transition_text(job, &sql, error, now).await
    }

    /// The stored state of job `id`.
    ///
    /// # Errors
    /// The driver's error, or [`Error::Conflict`] for a state this binary does not know.
    pub async fn job(&self, id: i64) -> Result<Option<JobRecord>> {
        const SQL: &str = "SELECT id, kind, state, attempts, max_attempts, run_after_ms,
                lease_owner, lease_expires_at_ms, last_error, finished_at_ms
            FROM jobs WHERE id = $1";
        let row = on_backend!(self, |pool| {
            sqlx::query_as::<_, JobRow>(SQL)
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|r| {
            Ok(JobRecord {
                id: r.id,
                kind: r.kind,
                state: JobState::parse(&r.state)?,
                attempts: r.attempts,
                max_attempts: r.max_attempts,
                run_after_ms: r.run_after_ms,
                lease_owner: r.lease_owner,
                lease_expires_at_ms: r.lease_expires_at_ms,
                last_error: r.last_error,
                finished_at_ms: r.finished_at_ms,
            })
        })
        .transpose()
    }

    /// How many jobs are in `state`.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn count_jobs(&self, state: JobState) -> Result<i64> {
        Ok(on_backend!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM jobs WHERE state = $1")
                .bind(state.as_str())
                .fetch_one(pool)
                .await?
        }))
    }

    /// Series with spooled instances of `sop_classes` received after the newest job of `kind`
    /// for them was queued, or with no such job: the series a daemon indexed but did not queue
    /// because it stopped (crash, kill, power loss) during their quiet period. By series id.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn unqueued_series(
        &self,
        kind: &str,
        sop_classes: &[&str],
    ) -> Result<Vec<UnqueuedSeries>> {
        if sop_classes.is_empty() {
            return Ok(Vec::new());
        }
        let classes: Vec<String> = (0..sop_classes.len())
            .map(|i| format!("${}", i + 2))
            .collect();
        let sql = format!(
            "SELECT s.series_id, s.series_uid, s.last_received_at_ms, s.calling_ae FROM (
                 SELECT se.id AS series_id, se.series_uid,
                        MAX(i.received_at_ms) AS last_received_at_ms,
                        MAX(i.calling_ae) AS calling_ae
                 FROM series se JOIN instances i ON i.series_id = se.id
                 WHERE i.spool_deleted_at_ms IS NULL AND i.sop_class_uid IN ({})
                 GROUP BY se.id, se.series_uid) s
             WHERE NOT EXISTS (SELECT 1 FROM jobs j WHERE j.series_id = s.series_id
                 AND j.kind = $1 AND j.created_at_ms >= s.last_received_at_ms)
             ORDER BY s.series_id",
            classes.join(", ")
        );
        Ok(on_backend!(self, |pool| {
            let mut q = sqlx::query_as::<_, UnqueuedSeries>(&sql).bind(kind);
            for class in sop_classes {
                q = q.bind(*class);
            }
            q.fetch_all(pool).await?
        }))
    }

    /// Runs a guarded transition whose extra binds `$4`, `$5` are integers.
    async fn transition(&self, job: &Job, sql: &str, a: i64, b: i64) -> Result<()> {
        on_backend!(self, |pool| {
            let done = sqlx::query(sql)
                .bind(job.id)
                .bind(&job.lease_owner)
                .bind(job.attempts)
                .bind(a)
                .bind(b)
                .execute(pool)
                .await?;
            lease_held(job, done.rows_affected())
        })
    }

    /// Runs a guarded transition binding an error text as `$4` and a time as `$5`.
    async fn transition_text(&self, job: &Job, sql: &str, text: &str, now: i64) -> Result<()> {
        on_backend!(self, |pool| {
            let done = sqlx::query(sql)
                .bind(job.id)
                .bind(&job.lease_owner)
                .bind(job.attempts)
                .bind(text)
                .bind(now)
                .execute(pool)
                .await?;
            lease_held(job, done.rows_affected())
        })
    }
}

fn lease_held(job: &Job, rows: u64) -> Result<()> {
    if rows == 1 {
        Ok(())
    } else {
        Err(Error::LeaseLost {
            job_id: job.id,
            owner: job.lease_owner.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_base_and_caps_at_max() {
        let b = Backoff {
            base: Duration::from_secs(10),
            max: Duration::from_secs(60),
        };
        let delays: Vec<u64> = (1..=6).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 60, 60, 60]);
        assert_eq!(b.delay(0), Duration::from_secs(10));
        assert_eq!(b.delay(u32::MAX), Duration::from_secs(60));
    }

    #[test]
    fn job_states_round_trip_through_their_stored_names() {
        for s in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Dead,
        ] {
            assert_eq!(JobState::parse(s.as_str()).unwrap(), s);
        }
        assert!(JobState::parse("paused").is_err());
    }
}
