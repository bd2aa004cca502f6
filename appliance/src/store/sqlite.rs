//! SQLite specifics: connection pragmas, the single-writer job claim and batched indexing.
//!
//! SQLite allows one writer at a time per database file. Every writing transaction here starts
//! with `BEGIN IMMEDIATE`, which takes the write lock up front and waits (up to
//! `busy_timeout`) for it, so claims and index writes queue up behind each other instead of
//! failing. WAL mode lets readers (the web console) run while a writer commits.

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool, Transaction};

use super::index::{instance_conflict, series_conflict};
use super::{Dialect, InstanceIds, NewInstance, Result, to_i64};

/// How long a writer waits for the write lock before giving up with `SQLITE_BUSY`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens (creating if missing) the database file with the pragmas the store relies on:
/// WAL, a busy timeout, enforced foreign keys, and `synchronous = FULL` so a commit survives a
/// power cut (an acknowledged C-STORE must never be lost).
pub(crate) async fn connect(url: &str) -> Result<SqlitePool> {
    let options = SqliteConnectOptions::from_str(url)?
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(BUSY_TIMEOUT)
        .foreign_keys(true);
    Ok(SqlitePoolOptions::new()
        .max_connections(4)
        .acquire_timeout(BUSY_TIMEOUT)
        .connect_with(options)
        .await?)
}

/// Leases one job; see the PostgreSQL twin for which jobs are runnable. Runs inside a
/// `BEGIN IMMEDIATE` transaction, so no other claimer can pick the same row.
const CLAIM_SQL: &str = "UPDATE jobs SET
        state = 'running',
        attempts = attempts + 1,
        last_error = CASE WHEN state = 'running'
            THEN 'lease of ' || lease_owner || ' expired' ELSE last_error END,
        lease_owner = $2,
        lease_expires_at_ms = $1 + $3,
        updated_at_ms = $1
    WHERE id = (
        SELECT id FROM jobs
        WHERE (state = 'queued' AND run_after_ms <= $1)
           OR (state = 'running' AND lease_expires_at_ms < $1 AND attempts < max_attempts)
        ORDER BY run_after_ms, id
        LIMIT 1)
    RETURNING id, kind, series_id, attempts, max_attempts, lease_owner, lease_expires_at_ms";

/// Leases due deliveries; see the PostgreSQL twin for which are due. Runs inside a
/// `BEGIN IMMEDIATE` transaction, so no other claimer can pick the same rows.
const CLAIM_DELIVERIES_SQL: &str = "UPDATE deliveries SET next_attempt_at_ms = $2
    WHERE id IN (
        SELECT d.id FROM deliveries d JOIN destinations t ON t.id = d.destination_id
        WHERE d.state = 'pending' AND d.next_attempt_at_ms <= $1 AND t.enabled
        ORDER BY d.next_attempt_at_ms, d.id
        LIMIT $3)
    RETURNING id";

impl Dialect for SqlitePool {
    type Db = Sqlite;

    async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        Ok(self.begin_with("BEGIN IMMEDIATE").await?)
    }

    fn claim_sql(&self) -> &'static str {
        CLAIM_SQL
    }

    fn claim_deliveries_sql(&self) -> &'static str {
        CLAIM_DELIVERIES_SQL
    }
}

/// Indexes a batch in one `BEGIN IMMEDIATE` transaction, three prepared (cached) statements
/// per instance: SQLite runs in-process, so per-row statements cost no round trips and the
/// single commit (one fsync) is what batching saves.
pub(crate) async fn index_batch(
    pool: &SqlitePool,
    instances: &[NewInstance],
    now_ms: i64,
) -> Result<Vec<InstanceIds>> {
    let mut tx = pool.begin_write().await?;
    let mut ids = Vec::with_capacity(instances.len());
    for inst in instances {
        let study_id: i64 = sqlx::query_scalar(
            "INSERT INTO studies (study_uid, patient_name, patient_id, study_date, created_at_ms)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (study_uid) DO UPDATE SET
                 patient_name = COALESCE(excluded.patient_name, studies.patient_name),
                 patient_id = COALESCE(excluded.patient_id, studies.patient_id),
                 study_date = COALESCE(excluded.study_date, studies.study_date)
             RETURNING id",
        )
        .bind(&inst.study.study_uid)
        .bind(&inst.study.patient_name)
        .bind(&inst.study.patient_id)
        .bind(&inst.study.study_date)
        .bind(now_ms)
        .fetch_one(&mut *tx)
        .await?;
        let series_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO series (study_id, series_uid, modality, first_received_at_ms,
                                 last_received_at_ms)
             VALUES ($1, $2, $3, $4, $4)
             ON CONFLICT (series_uid) DO UPDATE SET
                 first_received_at_ms = min(series.first_received_at_ms,
                                            excluded.first_received_at_ms),
                 last_received_at_ms = max(series.last_received_at_ms,
                                           excluded.last_received_at_ms)
             WHERE series.study_id = excluded.study_id
             RETURNING id",
        )
        .bind(study_id)
        .bind(&inst.series.series_uid)
        .bind(&inst.series.modality)
        .bind(inst.received_at_ms)
        .fetch_optional(&mut *tx)
        .await?;
        let series_id = series_id.ok_or_else(|| series_conflict(&inst.series.series_uid))?;
        let instance_id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO instances (series_id, sop_instance_uid, sop_class_uid, transfer_syntax,
                                    spool_path, size_bytes, sha256, received_at_ms, calling_ae,
                                    peer_addr)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
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
             RETURNING id",
        )
        .bind(series_id)
        .bind(&inst.sop_instance_uid)
        .bind(&inst.sop_class_uid)
        .bind(&inst.transfer_syntax)
        .bind(&inst.spool_path)
        .bind(to_i64(inst.size_bytes, "instance size")?)
        .bind(&inst.sha256)
        .bind(inst.received_at_ms)
        .bind(&inst.calling_ae)
        .bind(&inst.peer_addr)
        .fetch_optional(&mut *tx)
        .await?;
        let instance_id = instance_id.ok_or_else(|| instance_conflict(&inst.sop_instance_uid))?;
        ids.push(InstanceIds {
            study_id,
            series_id,
            instance_id,
        });
    }
    tx.commit().await?;
    Ok(ids)
}
