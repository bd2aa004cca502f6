//! Produced objects, destinations and the delivery outbox.
//!
//! A delivery row is written in the same database as the result, so "the result exists" and
//! "it is due for sending" cannot disagree after a crash; the forwarder works the outbox and
//! marks rows delivered. Retention reads the delivery state: spooled images are deleted only
//! after every delivery of the series' outputs succeeded.
//!
//! ```text
//! pending ──claim (lease)──▶ being sent ──mark_delivered──▶ delivered
//!   ▲  ▲                        │  └──fail_delivery, attempts left: due after back-off──┐
//!   │  └────────────────────────┼───────────────────────────────────────────────────────┘
//!   │                           └──fail_delivery, no attempts left──▶ failed (dead letter)
//!   └──────────retry_delivery (operator)──────────────────────────────────┘
//! ```
//!
//! A claim is a lease in the manner of a queue's visibility timeout: it moves the delivery's
//! `next_attempt_at_ms` to the lease's expiry, so no other worker sees it as due until then,
//! and the worker proves its lease by that value (the claim's token). A worker that crashes
//! simply lets the time pass and the delivery becomes due again; a worker whose lease ran out
//! (or whose delivery an operator retried) finds its token gone, and its late report changes
//! nothing. Claims are one statement (`FOR UPDATE SKIP LOCKED` on PostgreSQL, an
//! `UPDATE … RETURNING` inside `BEGIN IMMEDIATE` on SQLite), so concurrent workers never
//! share a delivery. While a delivery is being sent, `next_attempt_at_ms` shows the lease's
//! expiry.
//!
//! Attempts are counted when they end (failed or delivered). A dead-lettered delivery keeps
//! its last error for the console and is written to the audit log; only an operator's
//! [`Store::retry_delivery`] brings it back, with a fresh set of attempts.
//!
//! Error texts stored in `last_error` are shown in the web console and may reach logs: callers
//! must not put patient names or IDs in them.

use std::time::Duration;

use super::queue::Backoff;
use super::{AuditEvent, AuditOutcome, Dialect, Error, OutputKind, Result, Store, duration_ms};

/// A DICOM peer results are sent to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewDestination {
    /// Unique name shown in the console.
    pub name: String,
    /// Called AE title (1..=16 characters).
    pub ae_title: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the association uses TLS.
    pub tls: bool,
    /// Disabled destinations receive nothing.
    pub enabled: bool,
}

impl Store {
    /// Adds a destination and returns its id.
    ///
    /// # Errors
    /// The driver's error (duplicate name, AE title out of range).
    pub async fn add_destination(&self, d: &NewDestination) -> Result<i64> {
        Ok(on_backend!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO destinations (name, ae_title, host, port, tls, enabled)
                 VALUES ($1, $2, $3, $4, $5, $6) RETURNING id",
            )
            .bind(&d.name)
            .bind(&d.ae_title)
            .bind(&d.host)
            .bind(i32::from(d.port))
            .bind(d.tls)
            .bind(d.enabled)
            .fetch_one(pool)
            .await?
        }))
    }

    /// Files of the SRs recorded for `series_id`'s results, newest first (superseded ones
    /// included): the candidates a new SR names as its predecessor.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn sr_output_paths(&self, series_id: i64) -> Result<Vec<String>> {
        Ok(on_backend!(self, |pool| {
            sqlx::query_scalar::<_, String>(
                "SELECT o.spool_path FROM outputs o JOIN results r ON r.id = o.result_id
                 WHERE r.series_id = $1 AND o.kind = 'sr'
                 ORDER BY o.created_at_ms DESC, o.id DESC",
            )
            .bind(series_id)
            .fetch_all(pool)
            .await?
        }))
    }

    /// Records a produced object of result `result_id`; recording the same SOP instance again
    /// returns the same id (a re-run job re-records its outputs).
    ///
    /// # Errors
    /// The driver's error (unknown result).
    pub async fn add_output(
        &self,
        result_id: i64,
        kind: OutputKind,
        sop_instance_uid: &str,
        spool_path: &str,
    ) -> Result<i64> {
        let now = self.now_ms();
        Ok(on_backend!(self, |pool| {
            sqlx::query_scalar::<_, i64>(
                "INSERT INTO outputs (result_id, kind, sop_instance_uid, spool_path,
                                      created_at_ms)
                 VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (sop_instance_uid) DO UPDATE SET spool_path = excluded.spool_path
                 RETURNING id",
            )
            .bind(result_id)
            .bind(kind.as_str())
            .bind(sop_instance_uid)
            .bind(spool_path)
            .bind(now)
            .fetch_one(pool)
            .await?
        }))
    }

    /// Queues output `output_id` for `destination_id` (once: a second call returns the same
    /// delivery).
    ///
    /// # Errors
    /// The driver's error (unknown output or destination).
    pub async fn add_delivery(&self, output_id: i64, destination_id: i64) -> Result<i64> {
        let now = self.now_ms();
        Ok(on_backend!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query(
                "INSERT INTO deliveries (output_id, destination_id, next_attempt_at_ms)
                 VALUES ($1, $2, $3) ON CONFLICT (output_id, destination_id) DO NOTHING",
            )
            .bind(output_id)
            .bind(destination_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let id: i64 = sqlx::query_scalar(
                "SELECT id FROM deliveries WHERE output_id = $1 AND destination_id = $2",
            )
            .bind(output_id)
            .bind(destination_id)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            id
        }))
    }

    /// Marks delivery `delivery_id` as delivered now; returns whether a row changed.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn mark_delivered(&self, delivery_id: i64) -> Result<bool> {
        let now = self.now_ms();
        let done = on_backend!(self, |pool| {
            sqlx::query(
                "UPDATE deliveries SET state = 'delivered', delivered_at_ms = $2,
                     attempts = attempts + 1, last_error = NULL
                 WHERE id = $1 AND state <> 'delivered'",
            )
            .bind(delivery_id)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(done == 1)
    }
}

/// The states of a delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Waiting for its next attempt, or being sent (leased).
    Pending,
    /// The destination acknowledged it.
    Delivered,
    /// Dead letter: it used its attempts; kept with its last error until an operator retries.
    Failed,
}

impl DeliveryState {
    /// The value stored in `deliveries.state`.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "pending" => DeliveryState::Pending,
            "delivered" => DeliveryState::Delivered,
            "failed" => DeliveryState::Failed,
            other => {
                return Err(Error::Conflict(format!(
                    "unknown delivery state `{other}` in the store"
                )));
            }
        })
    }
}

/// A stored destination.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredDestination {
    /// `destinations.id`.
    pub id: i64,
    /// Unique name shown in the console.
    pub name: String,
    /// Called AE title.
    pub ae_title: String,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Whether the association uses TLS.
    pub tls: bool,
    /// Disabled destinations receive nothing.
    pub enabled: bool,
}

/// A delivery leased to a worker, with what it needs to send it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClaimedDelivery {
    /// `deliveries.id`.
    pub id: i64,
    /// The output to send.
    pub output_id: i64,
    /// Its SOP Instance UID.
    pub sop_instance_uid: String,
    /// Where its file is.
    pub spool_path: String,
    /// Where it goes.
    pub destination: StoredDestination,
    /// Attempts that ended before this one.
    pub attempts: i32,
    /// When the lease runs out; also the token that proves it ([`Store::fail_delivery`]).
    pub lease_expires_at_ms: i64,
}

/// How failed deliveries are retried.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RetryPolicy {
    /// Delay after the n-th failed attempt.
    pub backoff: Backoff,
    /// Extra share (0..=1) of each delay, spread over deliveries so that deliveries failing
    /// together (a PACS went down) do not all retry in the same second.
    pub jitter: f64,
    /// Failed attempts after which a delivery is dead-lettered.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The delay before the next attempt of delivery `id` after its `attempt`-th (1-based)
    /// failure: the back-off delay plus a jitter share that is a fixed function of the
    /// delivery and the attempt (reproducible, yet different between deliveries).
    pub fn delay(&self, id: i64, attempt: u32) -> Duration {
        let base = self.backoff.delay(attempt);
        let mut h = (id as u64) ^ (u64::from(attempt) << 40) ^ 0x9E37_79B9_7F4A_7C15;
        h ^= h >> 33;
        h = h.wrapping_mul(0xFF51_AFD7_ED55_8CCD);
        h ^= h >> 33;
        let unit = (h >> 11) as f64 / (1_u64 << 53) as f64;
        base + base.mul_f64(self.jitter.clamp(0.0, 1.0) * unit)
    }
}

/// A delivery as stored, for the console and tests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeliveryRecord {
    /// `deliveries.id`.
    pub id: i64,
    /// The output.
    pub output_id: i64,
    /// Its SOP Instance UID.
    pub sop_instance_uid: String,
    /// The destination's id.
    pub destination_id: i64,
    /// The destination's name.
    pub destination_name: String,
    /// Current state.
    pub state: DeliveryState,
    /// Attempts that ended.
    pub attempts: i32,
    /// When it is due next (while being sent: when its lease runs out).
    pub next_attempt_at_ms: i64,
    /// The latest error (kept after a later success, as history).
    pub last_error: Option<String>,
    /// When the destination acknowledged it.
    pub delivered_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct ClaimRow {
    id: i64,
    output_id: i64,
    sop_instance_uid: String,
    spool_path: String,
    attempts: i32,
    next_attempt_at_ms: i64,
    destination_id: i64,
    name: String,
    ae_title: String,
    host: String,
    port: i32,
    tls: bool,
    enabled: bool,
}

#[derive(sqlx::FromRow)]
struct DeliveryRow {
    id: i64,
    output_id: i64,
    sop_instance_uid: String,
    destination_id: i64,
    name: String,
    state: String,
    attempts: i32,
    next_attempt_at_ms: i64,
    last_error: Option<String>,
    delivered_at_ms: Option<i64>,
}

#[derive(sqlx::FromRow)]
struct DestinationRow {
    id: i64,
    name: String,
    ae_title: String,
    host: String,
    port: i32,
    tls: bool,
    enabled: bool,
}

impl DestinationRow {
    fn into_destination(self) -> Result<StoredDestination> {
        Ok(StoredDestination {
            port: port(self.port)?,
            id: self.id,
            name: self.name,
            ae_title: self.ae_title,
            host: self.host,
            tls: self.tls,
            enabled: self.enabled,
        })
    }
}

fn port(p: i32) -> Result<u16> {
    u16::try_from(p).map_err(|_| Error::Conflict(format!("destination port {p} out of range")))
}

const CLAIMED_SQL: &str = "SELECT d.id, d.output_id, o.sop_instance_uid, o.spool_path,
        d.attempts, d.next_attempt_at_ms, t.id AS destination_id, t.name, t.ae_title, t.host,
        t.port, t.tls, t.enabled
    FROM deliveries d
    JOIN outputs o ON o.id = d.output_id
    JOIN destinations t ON t.id = d.destination_id
    WHERE d.id = $1";

const DELIVERY_SQL: &str = "SELECT d.id, d.output_id, o.sop_instance_uid, d.destination_id,
        t.name, d.state, d.attempts, d.next_attempt_at_ms, d.last_error, d.delivered_at_ms
    FROM deliveries d
    JOIN outputs o ON o.id = d.output_id
    JOIN destinations t ON t.id = d.destination_id";

impl Store {
    /// The destination with id `id`.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn destination(&self, id: i64) -> Result<Option<StoredDestination>> {
        let row = on_backend!(self, |pool| {
            sqlx::query_as::<_, DestinationRow>(
                "SELECT id, name, ae_title, host, port, tls, enabled
                 FROM destinations WHERE id = $1",
            )
            .bind(id)
            .fetch_optional(pool)
            .await?
        });
        row.map(DestinationRow::into_destination).transpose()
    }

    /// Leases up to `limit` due deliveries to enabled destinations for `lease`, oldest due
    /// first, and returns them with their output and destination. Due: pending, and its next
    /// attempt (or the lease of a worker that vanished) has come.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn claim_deliveries(
        &self,
        lease: Duration,
        limit: u32,
    ) -> Result<Vec<ClaimedDelivery>> {
        let now = self.now_ms();
        let until = now.saturating_add(duration_ms(lease).max(1));
        let rows: Vec<ClaimRow> = on_backend!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let ids: Vec<i64> = sqlx::query_scalar(pool.claim_deliveries_sql())
                .bind(now)
                .bind(until)
                .bind(i64::from(limit))
                .fetch_all(&mut *tx)
                .await?;
            let mut rows = Vec::with_capacity(ids.len());
            for id in ids {
                rows.push(
                    sqlx::query_as::<_, ClaimRow>(CLAIMED_SQL)
                        .bind(id)
                        .fetch_one(&mut *tx)
                        .await?,
                );
            }
            tx.commit().await?;
            rows
        });
        let mut claimed: Vec<ClaimedDelivery> = rows
            .into_iter()
            .map(|r| {
                Ok(ClaimedDelivery {
                    id: r.id,
                    output_id: r.output_id,
                    sop_instance_uid: r.sop_instance_uid,
                    spool_path: r.spool_path,
                    attempts: r.attempts,
                    lease_expires_at_ms: r.next_attempt_at_ms,
                    destination: StoredDestination {
                        id: r.destination_id,
                        name: r.name,
                        ae_title: r.ae_title,
                        host: r.host,
                        port: port(r.port)?,
                        tls: r.tls,
                        enabled: r.enabled,
                    },
                })
            })
            .collect::<Result<_>>()?;
        claimed.sort_by_key(|c| c.id);
        Ok(claimed)
    }

    /// Records a failed attempt of `claim` with `error`: due again after the policy's delay,
    /// or dead-lettered (`failed`, audited) when it has used its attempts. Returns the new
    /// state, or `None` when the lease was no longer held (it ran out and another worker
    /// took the delivery over, or an operator retried it): nothing is changed then.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn fail_delivery(
        &self,
        claim: &ClaimedDelivery,
        error: &str,
        policy: &RetryPolicy,
    ) -> Result<Option<DeliveryState>> {
        let now = self.now_ms();
        let attempt = claim.attempts.saturating_add(1);
        let attempt_u = u32::try_from(attempt).unwrap_or(u32::MAX);
        let dead = attempt_u >= policy.max_attempts;
        let (state, next) = if dead {
            (DeliveryState::Failed, now)
        } else {
            let delay = policy.delay(claim.id, attempt_u);
            (
                DeliveryState::Pending,
                now.saturating_add(duration_ms(delay)),
            )
        };
        let changed = on_backend!(self, |pool| {
            sqlx::query(
                "UPDATE deliveries SET state = $3, attempts = $4, last_error = $5,
                     next_attempt_at_ms = $6
                 WHERE id = $1 AND state = 'pending' AND next_attempt_at_ms = $2",
            )
            .bind(claim.id)
            .bind(claim.lease_expires_at_ms)
            .bind(state.as_str())
            .bind(attempt)
            .bind(error)
            .bind(next)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if changed != 1 {
            return Ok(None);
        }
        if dead {
            self.append_audit(&AuditEvent {
                actor: "forwarder".into(),
                action: "delivery.dead_letter".into(),
                target: Some(format!(
                    "delivery {} ({}) to {}",
                    claim.id, claim.sop_instance_uid, claim.destination.name
                )),
                peer_addr: Some(format!(
                    "{}:{}",
                    claim.destination.host, claim.destination.port
                )),
                outcome: AuditOutcome::Failure,
            })
            .await?;
        }
        Ok(Some(state))
    }

    /// Makes delivery `id` due now: a dead-lettered one comes back with a fresh set of
    /// attempts (its last error kept), a pending one skips its back-off. Audited as done by
    /// `actor`. Returns whether a delivery changed (false: unknown or already delivered).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn retry_delivery(&self, id: i64, actor: &str) -> Result<bool> {
        let now = self.now_ms();
        let changed = on_backend!(self, |pool| {
            sqlx::query(
                "UPDATE deliveries SET next_attempt_at_ms = $2,
                     attempts = CASE WHEN state = 'failed' THEN 0 ELSE attempts END,
                     state = 'pending'
                 WHERE id = $1 AND state <> 'delivered'",
            )
            .bind(id)
            .bind(now)
            .execute(pool)
            .await?
            .rows_affected()
        });
        if changed == 1 {
            self.append_audit(&AuditEvent {
                actor: actor.to_owned(),
                action: "delivery.retry".into(),
                target: Some(format!("delivery {id}")),
                peer_addr: None,
                outcome: AuditOutcome::Success,
            })
            .await?;
        }
        Ok(changed == 1)
    }

    /// The delivery `id`, if it exists.
    ///
    /// # Errors
    /// The driver's error, or [`Error::Conflict`] for a state this binary does not know.
    pub async fn delivery(&self, id: i64) -> Result<Option<DeliveryRecord>> {
        let sql = format!("{DELIVERY_SQL} WHERE d.id = $1");
        let row = on_backend!(self, |pool| {
            sqlx::query_as::<_, DeliveryRow>(&sql)
                .bind(id)
                .fetch_optional(pool)
                .await?
        });
        row.map(DeliveryRow::into_record).transpose()
    }

    /// Up to `limit` deliveries in `state` (all states when `None`), newest first.
    ///
    /// # Errors
    /// The driver's error, or [`Error::Conflict`] for a state this binary does not know.
    pub async fn list_deliveries(
        &self,
        state: Option<DeliveryState>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>> {
        let sql = format!(
            "{DELIVERY_SQL} WHERE ($1 IS NULL OR d.state = $1) ORDER BY d.id DESC LIMIT $2"
        );
        let rows = on_backend!(self, |pool| {
            sqlx::query_as::<_, DeliveryRow>(&sql)
                .bind(state.map(DeliveryState::as_str))
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await?
        });
        rows.into_iter().map(DeliveryRow::into_record).collect()
    }
}

impl DeliveryRow {
    fn into_record(self) -> Result<DeliveryRecord> {
        Ok(DeliveryRecord {
            state: DeliveryState::parse(&self.state)?,
            id: self.id,
            output_id: self.output_id,
            sop_instance_uid: self.sop_instance_uid,
            destination_id: self.destination_id,
            destination_name: self.name,
            attempts: self.attempts,
            next_attempt_at_ms: self.next_attempt_at_ms,
            last_error: self.last_error,
            delivered_at_ms: self.delivered_at_ms,
        })
    }
}

impl Store {
    /// Ids of the enabled destinations, in id order: where a new result's outputs go.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn enabled_destination_ids(&self) -> Result<Vec<i64>> {
        Ok(on_backend!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT id FROM destinations WHERE enabled ORDER BY id")
                .fetch_all(pool)
                .await?
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_states_round_trip_through_their_stored_names() {
        for s in [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Failed,
        ] {
            assert_eq!(DeliveryState::parse(s.as_str()).unwrap(), s);
        }
        assert!(DeliveryState::parse("lost").is_err());
    }

    #[test]
    fn retry_delays_back_off_with_bounded_jitter_that_differs_between_deliveries() {
        let policy = RetryPolicy {
            backoff: Backoff {
                base: Duration::from_secs(10),
                max: Duration::from_secs(100),
            },
            jitter: 0.5,
            max_attempts: 5,
        };
        for attempt in 1..=6 {
            let base = policy.backoff.delay(attempt);
            for id in 1..50 {
                let d = policy.delay(id, attempt);
                assert!(d >= base && d <= base.mul_f64(1.5), "{d:?} for {base:?}");
                assert_eq!(d, policy.delay(id, attempt), "reproducible");
            }
        }
        let spread: std::collections::HashSet<Duration> =
            (1..50).map(|id| policy.delay(id, 1)).collect();
        assert!(
            spread.len() > 40,
            "jitter spreads deliveries: {}",
            spread.len()
        );
        let exact = RetryPolicy {
            jitter: 0.0,
            ..policy
        };
        assert_eq!(exact.delay(7, 3), Duration::from_secs(40));
    }
}
