//! Produced objects, destinations and the delivery outbox.
//!
//! A delivery row is written in the same database as the result, so "the result exists" and
//! "it is due for sending" cannot disagree after a crash; the forwarder works the outbox and
//! marks rows delivered. Retention reads the delivery state: spooled images are deleted only
//! after every delivery of the series' outputs succeeded.

use super::{Dialect, OutputKind, Result, Store};

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
