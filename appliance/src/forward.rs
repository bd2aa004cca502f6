//! The forwarder: works the delivery outbox, sending result objects to their destinations.
//!
//! ```text
//! outbox (store) ──claim_deliveries (lease)──▶ group by destination ──▶ batches of
//!   `batch_size` ──▶ one association per batch (dicom::scu::store_files), at most
//!   `concurrency_per_destination` per destination and `max_associations` in all
//!   ──▶ per object: mark_delivered | fail_delivery (back-off, dead letter after
//!   `max_attempts`)
//! ```
//!
//! Nothing is lost while a destination is down: a delivery leaves the outbox only as
//! `delivered`, or as a dead letter an operator sees (and can retry) in the console. The
//! worker holds no state of its own beyond what is in flight: a crash loses nothing, the
//! leases run out and the deliveries become due again.
//!
//! On shutdown the worker stops claiming and lets the associations in progress finish (each
//! bounded by the SCU's timeouts); their deliveries are recorded before it returns.
//!
//! Logs name deliveries, destinations, SOP Instance UIDs and errors, never patient data.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use crate::config::ForwardConfig;
use crate::dicom::scu::{self, Destination, EchoOutcome, ScuError, ScuOptions};
use crate::store::{ClaimedDelivery, DeliveryState, RetryPolicy, Store, StoredDestination};

/// Runs the forwarder until `shutdown` turns true (or its sender is dropped), then waits for
/// the associations in progress.
///
/// Store errors (database restarting, fail-over) are logged and retried after the poll
/// interval; they do not stop the worker.
///
/// # Errors
/// A message for an operator when the configuration cannot be used (TLS files).
pub async fn run_forwarder(
    store: Store,
    config: ForwardConfig,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let opts = Arc::new(ScuOptions::from_config(&config)?);
    let policy = retry_policy(&config);
    let lease = Duration::from_secs(config.lease_s);
    let poll = Duration::from_secs_f64(config.poll_interval_s);
    let batch = u32::try_from(config.batch_size).unwrap_or(u32::MAX);
    let total = Arc::new(Semaphore::new(config.max_associations));
    let mut per_destination: HashMap<i64, Arc<Semaphore>> = HashMap::new();
    let mut tasks: JoinSet<()> = JoinSet::new();
    let calling_ae: Arc<str> = Arc::from(config.calling_ae_title.as_str());
    tracing::info!(calling_ae = %calling_ae, "forwarder running");
    let mut outage: Option<std::time::Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        while let Some(done) = tasks.try_join_next() {
            if let Err(e) = done {
                tracing::error!(error = %e, "a delivery batch task failed");
            }
        }
        // Claim only what free association slots can take.
        let free = total.available_permits();
        let claimed = if free == 0 {
            Vec::new()
        } else {
            let limit = batch.saturating_mul(u32::try_from(free).unwrap_or(u32::MAX));
            match store.claim_deliveries(lease, limit).await {
                Ok(c) => {
                    if let Some(since) = outage.take() {
                        tracing::info!(
                            seconds = since.elapsed().as_secs_f64(),
                            "store available again: the forwarder resumes"
                        );
                    }
                    c
                }
                Err(e) => {
                    // One line per outage, not one per poll.
                    if outage.is_none() {
                        tracing::error!(
                            error = %e,
                            retry_s = poll.as_secs_f64(),
                            "store unavailable: the forwarder cannot claim deliveries; retrying"
                        );
                        outage = Some(std::time::Instant::now());
                    } else {
                        tracing::debug!(error = %e, "store still unavailable");
                    }
                    Vec::new()
                }
            }
        };
        let idle = claimed.is_empty();
        for (destination, deliveries) in batches(claimed, config.batch_size) {
            let per = per_destination
                .entry(destination.id)
                .or_insert_with(|| Arc::new(Semaphore::new(config.concurrency_per_destination)))
                .clone();
            // A batch holds its overall slot from here, so claimed work never outgrows
            // `max_associations` batches, however slow one destination is.
            let Ok(slot) = total.clone().acquire_owned().await else {
                break;
            };
            let store = store.clone();
            let opts = opts.clone();
            let calling_ae = calling_ae.clone();
            tasks.spawn(async move {
                let _slot = slot;
                let _per = per.acquire_owned().await;
                send_batch(
                    &store,
                    &destination,
                    &deliveries,
                    &calling_ae,
                    &opts,
                    &policy,
                )
                .await;
            });
        }
        if idle || total.available_permits() == 0 {
            tokio::select! {
                _ = shutdown.changed() => {}
                () = tokio::time::sleep(poll) => {}
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
            if shutdown.has_changed().is_err() {
                break;
            }
        }
    }
    tracing::info!(in_flight = tasks.len(), "forwarder stopping");
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// The retry policy `config` describes.
pub fn retry_policy(config: &ForwardConfig) -> RetryPolicy {
    RetryPolicy {
        backoff: config.backoff(),
        jitter: config.jitter,
        max_attempts: config.max_attempts,
    }
}

/// C-ECHO to a stored destination with the forwarder's settings: the console's "test"
/// button.
///
/// # Errors
/// [`ScuError`] as [`scu::echo`] gives it; unusable TLS files as [`ScuError::Connect`].
pub async fn echo_destination(
    destination: &StoredDestination,
    config: &ForwardConfig,
) -> Result<EchoOutcome, ScuError> {
    let dest = scu_destination(destination);
    let opts = ScuOptions::from_config(config).map_err(|reason| ScuError::Connect {
        destination: dest.to_string(),
        reason,
    })?;
    scu::echo(&dest, &config.calling_ae_title, &opts).await
}

fn scu_destination(d: &StoredDestination) -> Destination {
    Destination {
        ae_title: d.ae_title.clone(),
        host: d.host.clone(),
        port: d.port,
        tls: d.tls,
    }
}

/// Groups claimed deliveries by destination (in claim order) and cuts each group into
/// batches of at most `size`, one association each.
fn batches(
    claimed: Vec<ClaimedDelivery>,
    size: usize,
) -> Vec<(StoredDestination, Vec<ClaimedDelivery>)> {
    let mut groups: Vec<(StoredDestination, Vec<ClaimedDelivery>)> = Vec::new();
    for d in claimed {
        match groups
            .iter_mut()
            .find(|(dest, _)| dest.id == d.destination.id)
        {
            Some((_, list)) => list.push(d),
            None => groups.push((d.destination.clone(), vec![d])),
        }
    }
    let size = size.max(1);
    groups
        .into_iter()
        .flat_map(|(dest, list)| {
            list.chunks(size)
                .map(|c| (dest.clone(), c.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Sends one batch over one association and records every delivery's outcome.
async fn send_batch(
    store: &Store,
    destination: &StoredDestination,
    deliveries: &[ClaimedDelivery],
    calling_ae: &str,
    opts: &ScuOptions,
    policy: &RetryPolicy,
) {
    let dest = scu_destination(destination);
    let files: Vec<PathBuf> = deliveries
        .iter()
        .map(|d| PathBuf::from(&d.spool_path))
        .collect();
    let outcomes = scu::store_files(&dest, calling_ae, &files, opts).await;
    for (i, delivery) in deliveries.iter().enumerate() {
        let result = match &outcomes {
            Ok(list) => list[i].result.clone(),
            Err(e) => Err(e.clone()),
        };
        record(store, delivery, result, policy).await;
    }
}

/// Writes one delivery's outcome to the store.
async fn record(
    store: &Store,
    delivery: &ClaimedDelivery,
    result: Result<u16, ScuError>,
    policy: &RetryPolicy,
) {
    let recorded = match &result {
        Ok(status) => {
            tracing::info!(
                delivery = delivery.id,
                sop_instance_uid = %delivery.sop_instance_uid,
                destination = %delivery.destination.name,
                status = format_args!("{status:#06x}"),
                "delivered"
            );
            crate::metrics::global().deliveries(1, 0);
            store.mark_delivered(delivery.id).await.map(|_| ())
        }
        Err(e) => {
            let error = e.to_string();
            crate::metrics::global().deliveries(0, 1);
            match store.fail_delivery(delivery, &error, policy).await {
                Ok(Some(DeliveryState::Failed)) => {
                    tracing::error!(
                        delivery = delivery.id,
                        sop_instance_uid = %delivery.sop_instance_uid,
                        destination = %delivery.destination.name,
                        attempts = delivery.attempts + 1,
                        error = %error,
                        "delivery dead-lettered"
                    );
                    Ok(())
                }
                Ok(Some(_)) => {
                    tracing::warn!(
                        delivery = delivery.id,
                        destination = %delivery.destination.name,
                        attempt = delivery.attempts + 1,
                        error = %error,
                        "delivery failed; will retry"
                    );
                    Ok(())
                }
                Ok(None) => {
                    tracing::warn!(
                        delivery = delivery.id,
                        "delivery lease lost before its failure was recorded"
                    );
                    Ok(())
                }
                Err(e) => Err(e),
            }
        }
    };
    if let Err(e) = recorded {
        // The lease runs out and the delivery is retried: at worst it is sent twice, which a
        // PACS answers by storing the instance once.
        tracing::error!(delivery = delivery.id, error = %e, "cannot record a delivery outcome");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claimed(id: i64, dest: i64) -> ClaimedDelivery {
        ClaimedDelivery {
            id,
            output_id: id,
            sop_instance_uid: format!("1.2.{id}"),
            spool_path: format!("/spool/{id}.dcm"),
            destination: StoredDestination {
                id: dest,
                name: format!("d{dest}"),
                ae_title: "PACS".into(),
                host: "127.0.0.1".into(),
                port: 104,
                tls: false,
                enabled: true,
            },
            attempts: 0,
            lease_expires_at_ms: 0,
        }
    }

    #[test]
    fn deliveries_are_grouped_by_destination_and_cut_into_batches() {
        let list = vec![
            claimed(1, 10),
            claimed(2, 20),
            claimed(3, 10),
            claimed(4, 10),
            claimed(5, 20),
        ];
        let got: Vec<(i64, Vec<i64>)> = batches(list, 2)
            .into_iter()
            .map(|(d, l)| (d.id, l.iter().map(|c| c.id).collect()))
            .collect();
        assert_eq!(got, [(10, vec![1, 3]), (10, vec![4]), (20, vec![2, 5])]);
    }
}
