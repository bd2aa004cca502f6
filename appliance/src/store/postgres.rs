//! PostgreSQL specifics: pool set-up, the job claim with `FOR UPDATE SKIP LOCKED`, and
//! batched indexing with `UNNEST` arrays (one statement per table for a whole batch, no bind
//! limit, one round trip each: this is what lifts indexing well above ingest rates).

use std::collections::HashMap;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Row, Transaction};

use super::index::{instance_conflict, series_conflict};
use super::{Dialect, Error, InstanceIds, NewInstance, Result, to_i64};

/// Connects a pool. Several daemons may share one server, so each keeps a modest pool.
pub(crate) async fn connect(url: &str) -> Result<PgPool> {
    Ok(PgPoolOptions::new()
        .max_connections(8)
        .acquire_timeout(Duration::from_secs(30))
        .connect(url)
        .await?)
}

/// Leases one job. Runnable: queued and due, or running with an expired lease and attempts
/// left (a crashed worker's job). `SKIP LOCKED` lets concurrent claimers (threads or whole
/// daemons) each take a different row without waiting on one another. `$1` now, `$2` owner,
/// `$3` lease length in ms.
const CLAIM_SQL: &str = "WITH next AS (
        SELECT id FROM jobs
        WHERE (state = 'queued' AND run_after_ms <= $1)
           OR (state = 'running' AND lease_expires_at_ms < $1 AND attempts < max_attempts)
        ORDER BY run_after_ms, id
        LIMIT 1
        FOR UPDATE SKIP LOCKED)
    UPDATE jobs j SET
        state = 'running',
        attempts = j.attempts + 1,
        last_error = CASE WHEN j.state = 'running'
            THEN 'lease of ' || j.lease_owner || ' expired' ELSE j.last_error END,
        lease_owner = $2,
        lease_expires_at_ms = $1 + $3,
        updated_at_ms = $1
    FROM next WHERE j.id = next.id
    RETURNING j.id, j.kind, j.series_id, j.attempts, j.max_attempts, j.lease_owner,
        j.lease_expires_at_ms";

/// Leases due deliveries to enabled destinations (see `outbox.rs`). `SKIP LOCKED`: concurrent
/// forwarders (several daemons) each take different rows without waiting on one another.
const CLAIM_DELIVERIES_SQL: &str = "WITH due AS (
        SELECT d.id FROM deliveries d JOIN destinations t ON t.id = d.destination_id
        WHERE d.state = 'pending' AND d.next_attempt_at_ms <= $1 AND t.enabled
        ORDER BY d.next_attempt_at_ms, d.id
        LIMIT $3
        FOR UPDATE OF d SKIP LOCKED)
    UPDATE deliveries d SET next_attempt_at_ms = $2
    FROM due WHERE d.id = due.id
    RETURNING d.id";

impl Dialect for PgPool {
    type Db = Postgres;

    async fn begin_write(&self) -> Result<Transaction<'static, Postgres>> {
        Ok(self.begin().await?)
    }

    fn claim_sql(&self) -> &'static str {
        CLAIM_SQL
    }

    fn claim_deliveries_sql(&self) -> &'static str {
        CLAIM_DELIVERIES_SQL
    }
}

/// Indexes a batch: studies, then series, then instances, each as one `INSERT … SELECT FROM
/// UNNEST(…) ON CONFLICT DO UPDATE … RETURNING`, all in one transaction.
pub(crate) async fn index_batch(
    pool: &PgPool,
    instances: &[NewInstance],
    now_ms: i64,
) -> Result<Vec<InstanceIds>> {
    let mut tx = pool.begin().await?;

    // Studies: one row per UID (the last instance's header wins within the batch).
    let mut studies: Vec<&NewInstance> = Vec::new();
    let mut study_pos: HashMap<&str, usize> = HashMap::new();
    for inst in instances {
        if let Some(&i) = study_pos.get(inst.study.study_uid.as_str()) {
            studies[i] = inst;
        } else {
            study_pos.insert(&inst.study.study_uid, studies.len());
            studies.push(inst);
        }
    }
    let rows = sqlx::query(
        "INSERT INTO studies (study_uid, patient_name, patient_id, study_date, created_at_ms)
         SELECT u, n, p, d, $5 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[])
             AS t(u, n, p, d)
         ON CONFLICT (study_uid) DO UPDATE SET
             patient_name = COALESCE(excluded.patient_name, studies.patient_name),
             patient_id = COALESCE(excluded.patient_id, studies.patient_id),
             study_date = COALESCE(excluded.study_date, studies.study_date)
         RETURNING id, study_uid",
    )
    .bind(
        studies
            .iter()
            .map(|i| i.study.study_uid.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        studies
            .iter()
            .map(|i| i.study.patient_name.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        studies
            .iter()
            .map(|i| i.study.patient_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(
        studies
            .iter()
            .map(|i| i.study.study_date.clone())
            .collect::<Vec<_>>(),
    )
    .bind(now_ms)
    .fetch_all(&mut *tx)
    .await?;
    let study_ids = id_map(&rows, "study_uid")?;

    // Series: first/last received over the batch; an existing series must keep its study.
    let mut series: Vec<SeriesRow<'_>> = Vec::new();
    let mut series_pos: HashMap<&str, usize> = HashMap::new();
    for inst in instances {
        let study_id = id_of(&study_ids, &inst.study.study_uid)?;
        let uid = inst.series.series_uid.as_str();
        if let Some(&i) = series_pos.get(uid) {
            let row = &mut series[i];
            if row.study_id != study_id {
                return Err(series_conflict(uid));
            }
            row.first = row.first.min(inst.received_at_ms);
            row.last = row.last.max(inst.received_at_ms);
        } else {
            series_pos.insert(uid, series.len());
            series.push(SeriesRow {
                study_id,
                uid,
                modality: &inst.series.modality,
                first: inst.received_at_ms,
                last: inst.received_at_ms,
            });
        }
    }
    let rows = sqlx::query(
        "INSERT INTO series (study_id, series_uid, modality, first_received_at_ms,
                             last_received_at_ms)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
         ON CONFLICT (series_uid) DO UPDATE SET
             first_received_at_ms = LEAST(series.first_received_at_ms,
                                          excluded.first_received_at_ms),
             last_received_at_ms = GREATEST(series.last_received_at_ms,
                                            excluded.last_received_at_ms)
         WHERE series.study_id = excluded.study_id
         RETURNING id, series_uid",
    )
    .bind(series.iter().map(|s| s.study_id).collect::<Vec<_>>())
    .bind(series.iter().map(|s| s.uid.to_owned()).collect::<Vec<_>>())
    .bind(
        series
            .iter()
            .map(|s| s.modality.to_owned())
            .collect::<Vec<_>>(),
    )
    .bind(series.iter().map(|s| s.first).collect::<Vec<_>>())
    .bind(series.iter().map(|s| s.last).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let series_ids = id_map(&rows, "series_uid")?;
    if let Some(s) = series.iter().find(|s| !series_ids.contains_key(s.uid)) {
        return Err(series_conflict(s.uid));
    }

    // Instances: the last copy of a repeated SOP instance wins.
    let mut last_copy: HashMap<&str, &NewInstance> = HashMap::new();
    let mut order: Vec<&str> = Vec::new();
    for inst in instances {
        if last_copy.insert(&inst.sop_instance_uid, inst).is_none() {
            order.push(&inst.sop_instance_uid);
        }
    }
    let unique: Vec<&NewInstance> = order.iter().map(|uid| last_copy[uid]).collect();
    let sizes = unique
        .iter()
        .map(|i| to_i64(i.size_bytes, "instance size"))
        .collect::<Result<Vec<_>>>()?;
    let rows = sqlx::query(
        "INSERT INTO instances (series_id, sop_instance_uid, sop_class_uid, transfer_syntax,
                                spool_path, size_bytes, sha256, received_at_ms, calling_ae,
                                peer_addr)
         SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[],
                              $6::bigint[], $7::text[], $8::bigint[], $9::text[], $10::text[])
         ON CONFLICT (sop_instance_uid) DO UPDATE SET
             sop_class_uid = excluded.sop_class_uid,
             transfer_syntax = excluded.transfer_syntax,
             spool_path = excluded.spool_path,
             size_bytes = excluded.size_bytes,
             sha256 = excluded.sha256,
             received_at_ms = excluded.received_at_ms,
             calling_ae = excluded.calling_ae,
             peer_addr = excluded.peer_addr,
             spool_deleted_at_ms = NULL
         WHERE instances.series_id = excluded.series_id
         RETURNING id, sop_instance_uid",
    )
    .bind(
        unique
            .iter()
            .map(|i| id_of(&series_ids, &i.series.series_uid))
            .collect::<Result<Vec<_>>>()?,
    )
    .bind(col(&unique, |i| &i.sop_instance_uid))
    .bind(col(&unique, |i| &i.sop_class_uid))
    .bind(col(&unique, |i| &i.transfer_syntax))
    .bind(col(&unique, |i| &i.spool_path))
    .bind(sizes)
    .bind(col(&unique, |i| &i.sha256))
    .bind(unique.iter().map(|i| i.received_at_ms).collect::<Vec<_>>())
    .bind(col(&unique, |i| &i.calling_ae))
    .bind(col(&unique, |i| &i.peer_addr))
    .fetch_all(&mut *tx)
    .await?;
    let instance_ids = id_map(&rows, "sop_instance_uid")?;
    if let Some(uid) = order.iter().find(|uid| !instance_ids.contains_key(**uid)) {
        return Err(instance_conflict(uid));
    }
    tx.commit().await?;

    instances
        .iter()
        .map(|i| {
            Ok(InstanceIds {
                study_id: id_of(&study_ids, &i.study.study_uid)?,
                series_id: id_of(&series_ids, &i.series.series_uid)?,
                instance_id: id_of(&instance_ids, &i.sop_instance_uid)?,
            })
        })
        .collect()
}

/// One series of a batch, merged over its instances.
struct SeriesRow<'a> {
    study_id: i64,
    uid: &'a str,
    modality: &'a str,
    first: i64,
    last: i64,
}

/// The id `RETURNING` gave for `uid`; a miss means the statement skipped the row (a
/// conflicting hierarchy), reported as such rather than by a panic.
fn id_of(ids: &HashMap<String, i64>, uid: &str) -> Result<i64> {
    ids.get(uid).copied().ok_or_else(|| {
        Error::Conflict(format!(
            "{uid} was not written (it conflicts with stored rows)"
        ))
    })
}

fn col(rows: &[&NewInstance], field: impl Fn(&NewInstance) -> &String) -> Vec<String> {
    rows.iter().map(|r| field(r).clone()).collect()
}

fn id_map(rows: &[sqlx::postgres::PgRow], key: &str) -> Result<HashMap<String, i64>> {
    rows.iter()
        .map(|r| Ok((r.try_get::<String, _>(key)?, r.try_get::<i64, _>("id")?)))
        .collect()
}
