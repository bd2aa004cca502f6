//! What the admin web console (`crate::web`) reads and changes beyond the other modules:
//! login state (lockout, forced password change), user administration, series browsing and
//! deletion, destination editing, dashboard figures, filtered audit queries, persisted
//! settings and the model bundle history.
//!
//! Patient names and IDs are returned only to be shown on authenticated pages; nothing here
//! puts them into an error message.

use super::queue::JobState;
use super::{Dialect, Error, NewDestination, Result, Role, Store, StoredDestination};

/// A user as the console administers it (no password hash).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConsoleUser {
    /// `users.id`.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Role.
    pub role: Role,
    /// Disabled users cannot log in.
    pub disabled: bool,
    /// The user must choose a new password before anything else.
    pub must_change_password: bool,
    /// Consecutive failed logins since the last success.
    pub failed_logins: i32,
    /// Locked out until then (ms since the Unix epoch), if locked.
    pub locked_until_ms: Option<i64>,
    /// When the user was created.
    pub created_at_ms: i64,
}

/// A user with its password hash, for the login check only.
#[derive(Clone)]
pub struct LoginUser {
    /// The user.
    pub user: ConsoleUser,
    /// The PHC password hash.
    pub password_hash: String,
}

/// Leaves the hash out of `Debug`.
impl std::fmt::Debug for LoginUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginUser")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

type ConsoleUserRow = (
    i64,
    String,
    String,
    bool,
    bool,
    i32,
    Option<i64>,
    i64,
    String,
);

const USER_COLUMNS: &str = "id, username, role, disabled, must_change_password, failed_logins,
    locked_until_ms, created_at_ms, password_hash";

fn login_user_from(row: ConsoleUserRow) -> Result<LoginUser> {
    let (id, username, role, disabled, must_change_password, failed_logins, locked, created, hash) =
        row;
    Ok(LoginUser {
        user: ConsoleUser {
            id,
            username,
            role: Role::parse(&role)?,
            disabled,
            must_change_password,
            failed_logins,
            locked_until_ms: locked,
            created_at_ms: created,
        },
        password_hash: hash,
    })
}

/// The filters of the series list; `None` means "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesFilter {
    /// Study date from (DICOM DA, `YYYYMMDD`, inclusive).
    pub date_from: Option<String>,
    /// Study date to (inclusive).
    pub date_to: Option<String>,
    /// Modality (`CT`, `MR`).
    pub modality: Option<String>,
    /// State of the newest job of the series (`queued`, `running`, `succeeded`, …), or `none`
    /// for series without a job.
    pub state: Option<String>,
    /// Calling AE title of a sender of the series.
    pub source_ae: Option<String>,
}

/// One row of the series list.
#[derive(Clone, PartialEq)]
pub struct SeriesRow {
    /// `series.id`: the only series identifier that appears in console URLs.
    pub id: i64,
    /// Study date (DICOM DA) if known.
    pub study_date: Option<String>,
    /// Modality.
    pub modality: String,
    /// Patient name (PHI: shown on authenticated pages only).
    pub patient_name: Option<String>,
    /// Number of instances received.
    pub instances: i64,
    /// A calling AE title the series came from.
    pub source_ae: Option<String>,
    /// First instance received at.
    pub first_received_at_ms: i64,
    /// State of the newest job, if any.
    pub job_state: Option<String>,
    /// Status of the result, if any.
    pub result_status: Option<String>,
}

/// Leaves the patient name out of `Debug`.
impl std::fmt::Debug for SeriesRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesRow")
            .field("id", &self.id)
            .field("modality", &self.modality)
            .field("job_state", &self.job_state)
            .finish_non_exhaustive()
    }
}

type SeriesListRow = (
    i64,
    Option<String>,
    String,
    Option<String>,
    i64,
    Option<String>,
    i64,
    Option<String>,
    Option<String>,
);

/// Everything the per-series page shows apart from the result.
#[derive(Clone, PartialEq)]
pub struct SeriesDetail {
    /// The list row.
    pub row: SeriesRow,
    /// Series Instance UID (shown on the page, never put in a URL).
    pub series_uid: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// Patient ID (PHI: shown on authenticated pages only).
    pub patient_id: Option<String>,
    /// Last instance received at.
    pub last_received_at_ms: i64,
    /// Bytes received.
    pub bytes: i64,
    /// The series' jobs, newest first.
    pub jobs: Vec<JobHistory>,
}

/// Leaves patient data out of `Debug`.
impl std::fmt::Debug for SeriesDetail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SeriesDetail")
            .field("row", &self.row)
            .field("jobs", &self.jobs)
            .finish_non_exhaustive()
    }
}

/// One job of a series.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobHistory {
    /// `jobs.id`.
    pub id: i64,
    /// Kind.
    pub kind: String,
    /// State.
    pub state: String,
    /// Attempts made.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Created at.
    pub created_at_ms: i64,
    /// Last change at.
    pub updated_at_ms: i64,
    /// Finished at.
    pub finished_at_ms: Option<i64>,
    /// Last error.
    pub last_error: Option<String>,
}

type JobRow = (
    i64,
    String,
    String,
    i32,
    i32,
    i64,
    i64,
    Option<i64>,
    Option<String>,
);

/// What deleting a series removed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeletedSeries {
    /// Spool files (received instances and generated outputs) to remove from disk.
    pub files: Vec<String>,
    /// Whether the study went with it (it had no other series).
    pub study_deleted: bool,
}

/// A finished analysis job, for throughput and turnaround plots.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FinishedJob {
    /// When it finished.
    pub finished_at_ms: i64,
    /// When the last instance of its series arrived.
    pub last_received_at_ms: i64,
}

/// The filters of the audit log viewer; `None` means "any".
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuditFilter {
    /// Exact actor.
    pub actor: Option<String>,
    /// Action prefix (`login` matches `login` and `login.locked`).
    pub action: Option<String>,
    /// Outcome (`success`, `failure`, `denied`).
    pub outcome: Option<String>,
    /// From (ms, inclusive).
    pub from_ms: Option<i64>,
    /// To (ms, exclusive).
    pub to_ms: Option<i64>,
}

/// A persisted console setting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredSetting {
    /// Its key, e.g. `dicom.completion.stable_after_s`.
    pub key: String,
    /// Its value as text (validated by the console before it is stored).
    pub value: String,
    /// When it was last changed.
    pub updated_at_ms: i64,
    /// By whom.
    pub updated_by: String,
}

/// A model bundle installed through the console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstalledBundle {
    /// `model_bundles.id`.
    pub id: i64,
    /// The unpacked, verified bundle directory.
    pub dir: String,
    /// Model name from the manifest.
    pub name: String,
    /// Model version from the manifest.
    pub version: String,
    /// sha256 of the signed manifest.
    pub manifest_sha256: String,
    /// The key that signed it.
    pub key_name: String,
    /// Signed with a demo key.
    pub demo: bool,
    /// Installed at.
    pub installed_at_ms: i64,
    /// By whom.
    pub installed_by: String,
    /// The one the engine loads at the next start.
    pub active: bool,
}

type BundleRow = (
    i64,
    String,
    String,
    String,
    String,
    String,
    bool,
    i64,
    String,
    bool,
);

fn bundle_from(r: BundleRow) -> InstalledBundle {
    InstalledBundle {
        id: r.0,
        dir: r.1,
        name: r.2,
        version: r.3,
        manifest_sha256: r.4,
        key_name: r.5,
        demo: r.6,
        installed_at_ms: r.7,
        installed_by: r.8,
        active: r.9,
    }
}

const BUNDLE_COLUMNS: &str = "id, dir, name, version, manifest_sha256, key_name, demo,
    installed_at_ms, installed_by, active";

/// The newest job's state of series `s`, as an SQL expression.
const NEWEST_JOB_STATE: &str =
    "(SELECT j.state FROM jobs j WHERE j.series_id = s.id ORDER BY j.id DESC LIMIT 1)";

impl Store {
    /// The store's "now" (ms since the Unix epoch): the console compares lock and session
    /// times with the same clock the store writes them with.
    pub fn now(&self) -> i64 {
        self.now_ms()
    }

    /// How many console users exist (first-run setup is offered only while none does).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn user_count(&self) -> Result<i64> {
        Ok(on_backend!(self, |pool| {
            sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM users")
                .fetch_one(pool)
                .await?
        }))
    }

    /// Creates the first admin if and only if no user exists yet, atomically; returns its id,
    /// or `None` when a user already exists (a second setup attempt).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn create_first_admin(
        &self,
        username: &str,
        password_hash: &str,
    ) -> Result<Option<i64>> {
        let now = self.now_ms();
        Ok(on_backend!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let existing: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM users")
                .fetch_one(&mut *tx)
                .await?;
            if existing > 0 {
                tx.rollback().await?;
                None
            } else {
                let id: i64 = sqlx::query_scalar(
                    "INSERT INTO users (username, password_hash, role, created_at_ms,
                                        must_change_password)
                     VALUES ($1, $2, 'admin', $3, TRUE) RETURNING id",
                )
                .bind(username)
                .bind(password_hash)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
                tx.commit().await?;
                Some(id)
            }
        }))
    }

    /// The user with this login name with its hash and login state.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn login_user(&self, username: &str) -> Result<Option<LoginUser>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE username = $1");
        let row: Option<ConsoleUserRow> = on_backend!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(username)
                .fetch_optional(pool)
                .await?
        });
        row.map(login_user_from).transpose()
    }

    /// The user with this id with its hash and login state.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn login_user_by_id(&self, id: i64) -> Result<Option<LoginUser>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1");
        let row: Option<ConsoleUserRow> = on_backend!(self, |pool| {
            sqlx::query_as(&sql).bind(id).fetch_optional(pool).await?
        });
        row.map(login_user_from).transpose()
    }

    /// All users, by name.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn list_users(&self) -> Result<Vec<ConsoleUser>> {
        let sql = format!("SELECT {USER_COLUMNS} FROM users ORDER BY username");
        let rows: Vec<ConsoleUserRow> =
            on_backend!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await?);
        rows.into_iter()
            .map(|r| login_user_from(r).map(|l| l.user))
            .collect()
    }

    /// Counts a failed login of `user_id`; at `threshold` consecutive failures the account is
    /// locked until `now + lock_ms` (and the counter restarts). Returns the lock expiry when
    /// this failure locked it.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn record_login_failure(
        &self,
        user_id: i64,
        threshold: u32,
        lock_ms: i64,
    ) -> Result<Option<i64>> {
        let until = self.now_ms().saturating_add(lock_ms);
        let locked: Option<Option<i64>> = on_backend!(self, |pool| {
            sqlx::query_scalar(
                "UPDATE users SET
                     locked_until_ms = CASE WHEN failed_logins + 1 >= $2 THEN $3
                                            ELSE locked_until_ms END,
                     failed_logins = CASE WHEN failed_logins + 1 >= $2 THEN 0
                                          ELSE failed_logins + 1 END
                 WHERE id = $1
                 RETURNING CASE WHEN locked_until_ms = $3 THEN locked_until_ms END",
            )
            .bind(user_id)
            .bind(i64::from(threshold))
            .bind(until)
            .fetch_optional(pool)
            .await?
        });
        Ok(locked.flatten())
    }

    /// Clears the failure counter and any lock after a successful login.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn record_login_success(&self, user_id: i64) -> Result<()> {
        on_backend!(self, |pool| {
            sqlx::query("UPDATE users SET failed_logins = 0, locked_until_ms = NULL WHERE id = $1")
                .bind(user_id)
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// Sets a user's password hash and whether it must be changed at the next login; clears
    /// any lock. Returns whether the user exists.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn set_password(
        &self,
        user_id: i64,
        password_hash: &str,
        must_change: bool,
    ) -> Result<bool> {
        let changed = on_backend!(self, |pool| {
            sqlx::query(
                "UPDATE users SET password_hash = $2, must_change_password = $3,
                     failed_logins = 0, locked_until_ms = NULL
                 WHERE id = $1",
            )
            .bind(user_id)
            .bind(password_hash)
            .bind(must_change)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Changes a user's role; returns whether the user exists.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn set_role(&self, user_id: i64, role: Role) -> Result<bool> {
        let changed = on_backend!(self, |pool| {
            sqlx::query("UPDATE users SET role = $2 WHERE id = $1")
                .bind(user_id)
                .bind(role.as_str())
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Ends every session of a user (disabled, password reset, role change); returns how many.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn end_user_sessions(&self, user_id: i64) -> Result<u64> {
        Ok(on_backend!(self, |pool| {
            sqlx::query("DELETE FROM sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(pool)
                .await?
                .rows_affected()
        }))
    }

    /// The user of a live session with its login state (the console's per-request check).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn session_console_user(&self, token_hash: &str) -> Result<Option<ConsoleUser>> {
        let now = self.now_ms();
        let row: Option<ConsoleUserRow> = on_backend!(self, |pool| {
            sqlx::query_as(
                "SELECT u.id, u.username, u.role, u.disabled, u.must_change_password,
                        u.failed_logins, u.locked_until_ms, u.created_at_ms, ''
                 FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = $1 AND s.expires_at_ms > $2 AND NOT u.disabled",
            )
            .bind(token_hash)
            .bind(now)
            .fetch_optional(pool)
            .await?
        });
        row.map(|r| login_user_from(r).map(|l| l.user)).transpose()
    }

    /// One page of the series list, newest first, and whether there is a next page.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn list_series(
        &self,
        filter: &SeriesFilter,
        limit: u32,
        offset: u32,
    ) -> Result<(Vec<SeriesRow>, bool)> {
        let state_clause = match filter.state.as_deref() {
            Some("none") => format!("AND {NEWEST_JOB_STATE} IS NULL AND $5 IS NULL"),
            _ => format!("AND ($5 IS NULL OR {NEWEST_JOB_STATE} = $5)"),
        };
        let state = filter.state.as_deref().filter(|s| *s != "none");
        let sql = format!(
            "SELECT s.id, st.study_date, s.modality, st.patient_name,
                (SELECT COUNT(*) FROM instances i WHERE i.series_id = s.id),
                (SELECT MIN(i.calling_ae) FROM instances i WHERE i.series_id = s.id),
                s.first_received_at_ms, {NEWEST_JOB_STATE},
                (SELECT r.status FROM results r WHERE r.series_id = s.id)
             FROM series s JOIN studies st ON st.id = s.study_id
             WHERE ($1 IS NULL OR st.study_date >= $1)
               AND ($2 IS NULL OR st.study_date <= $2)
               AND ($3 IS NULL OR s.modality = $3)
               AND ($4 IS NULL OR EXISTS (SELECT 1 FROM instances i
                                          WHERE i.series_id = s.id AND i.calling_ae = $4))
               {state_clause}
             ORDER BY s.id DESC LIMIT $6 OFFSET $7"
        );
        let rows: Vec<SeriesListRow> = on_backend!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(filter.date_from.as_deref())
                .bind(filter.date_to.as_deref())
                .bind(filter.modality.as_deref())
                .bind(filter.source_ae.as_deref())
                .bind(state)
                .bind(i64::from(limit) + 1)
                .bind(i64::from(offset))
                .fetch_all(pool)
                .await?
        });
        let more = rows.len() > limit as usize;
        let rows = rows
            .into_iter()
            .take(limit as usize)
            .map(series_row_from)
            .collect();
        Ok((rows, more))
    }

    /// The per-series page's data; `None` for an unknown id.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn series_detail(&self, series_id: i64) -> Result<Option<SeriesDetail>> {
        type Row = (
            i64,
            Option<String>,
            String,
            Option<String>,
            i64,
            Option<String>,
            i64,
            Option<String>,
            Option<String>,
            String,
            String,
            Option<String>,
            i64,
            i64,
        );
        let sql = format!(
            "SELECT s.id, st.study_date, s.modality, st.patient_name,
                (SELECT COUNT(*) FROM instances i WHERE i.series_id = s.id),
                (SELECT MIN(i.calling_ae) FROM instances i WHERE i.series_id = s.id),
                s.first_received_at_ms, {NEWEST_JOB_STATE},
                (SELECT r.status FROM results r WHERE r.series_id = s.id),
                s.series_uid, st.study_uid, st.patient_id, s.last_received_at_ms,
                CAST((SELECT COALESCE(SUM(i.size_bytes), 0) FROM instances i
                      WHERE i.series_id = s.id) AS BIGINT)
             FROM series s JOIN studies st ON st.id = s.study_id WHERE s.id = $1"
        );
        let row: Option<Row> = on_backend!(self, |pool| {
            sqlx::query_as(&sql)
                .bind(series_id)
                .fetch_optional(pool)
                .await?
        });
        let Some(r) = row else { return Ok(None) };
        let jobs: Vec<JobRow> = on_backend!(self, |pool| {
            sqlx::query_as(
                "SELECT id, kind, state, attempts, max_attempts, created_at_ms, updated_at_ms,
                        finished_at_ms, last_error
                 FROM jobs WHERE series_id = $1 ORDER BY id DESC",
            )
            .bind(series_id)
            .fetch_all(pool)
            .await?
        });
        Ok(Some(SeriesDetail {
            row: series_row_from((r.0, r.1, r.2, r.3, r.4, r.5, r.6, r.7, r.8)),
            series_uid: r.9,
            study_uid: r.10,
            patient_id: r.11,
            last_received_at_ms: r.12,
            bytes: r.13,
            jobs: jobs
                .into_iter()
                .map(|j| JobHistory {
                    id: j.0,
                    kind: j.1,
                    state: j.2,
                    attempts: j.3,
                    max_attempts: j.4,
                    created_at_ms: j.5,
                    updated_at_ms: j.6,
                    finished_at_ms: j.7,
                    last_error: j.8,
                })
                .collect(),
        }))
    }

    /// Deletes a series with its instances, jobs, result, outputs and deliveries (and its
    /// study when no other series is left), in one transaction. Returns the spool files to
    /// remove, or `None` for an unknown series.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn delete_series(&self, series_id: i64) -> Result<Option<DeletedSeries>> {
        Ok(on_backend!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let study: Option<i64> =
                sqlx::query_scalar("SELECT study_id FROM series WHERE id = $1")
                    .bind(series_id)
                    .fetch_optional(&mut *tx)
                    .await?;
            match study {
                None => {
                    tx.rollback().await?;
                    None
                }
                Some(study_id) => {
                    let mut files: Vec<String> = sqlx::query_scalar(
                        "SELECT spool_path FROM instances
                         WHERE series_id = $1 AND spool_deleted_at_ms IS NULL",
                    )
                    .bind(series_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    let outputs: Vec<String> = sqlx::query_scalar(
                        "SELECT o.spool_path FROM outputs o JOIN results r ON r.id = o.result_id
                         WHERE r.series_id = $1",
                    )
                    .bind(series_id)
                    .fetch_all(&mut *tx)
                    .await?;
                    files.extend(outputs);
                    for sql in [
                        "DELETE FROM deliveries WHERE output_id IN (SELECT o.id FROM outputs o
                             JOIN results r ON r.id = o.result_id WHERE r.series_id = $1)",
                        "DELETE FROM outputs WHERE result_id IN
                             (SELECT id FROM results WHERE series_id = $1)",
                        "DELETE FROM vertebrae WHERE result_id IN
                             (SELECT id FROM results WHERE series_id = $1)",
                        "DELETE FROM lesions WHERE result_id IN
                             (SELECT id FROM results WHERE series_id = $1)",
                        "DELETE FROM results WHERE series_id = $1",
                        "DELETE FROM jobs WHERE series_id = $1",
                        "DELETE FROM instances WHERE series_id = $1",
                        "DELETE FROM series WHERE id = $1",
                    ] {
                        sqlx::query(sql).bind(series_id).execute(&mut *tx).await?;
                    }
                    let study_deleted = sqlx::query(
                        "DELETE FROM studies WHERE id = $1
                         AND NOT EXISTS (SELECT 1 FROM series WHERE study_id = $1)",
                    )
                    .bind(study_id)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1;
                    tx.commit().await?;
                    Some(DeletedSeries {
                        files,
                        study_deleted,
                    })
                }
            }
        }))
    }

    /// Every destination, by name.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn list_destinations(&self) -> Result<Vec<StoredDestination>> {
        type Row = (i64, String, String, String, i32, bool, bool);
        let rows: Vec<Row> = on_backend!(self, |pool| {
            sqlx::query_as(
                "SELECT id, name, ae_title, host, port, tls, enabled FROM destinations
                 ORDER BY name",
            )
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, name, ae_title, host, port, tls, enabled)| {
                Ok(StoredDestination {
                    id,
                    name,
                    ae_title,
                    host,
                    port: u16::try_from(port).map_err(|_| {
                        Error::Conflict(format!("destination port {port} out of range"))
                    })?,
                    tls,
                    enabled,
                })
            })
            .collect()
    }

    /// Replaces a destination's settings; returns whether it exists.
    ///
    /// # Errors
    /// The driver's error (a duplicate name).
    pub async fn update_destination(&self, id: i64, d: &NewDestination) -> Result<bool> {
        let changed = on_backend!(self, |pool| {
            sqlx::query(
                "UPDATE destinations SET name = $2, ae_title = $3, host = $4, port = $5,
                     tls = $6, enabled = $7
                 WHERE id = $1",
            )
            .bind(id)
            .bind(&d.name)
            .bind(&d.ae_title)
            .bind(&d.host)
            .bind(i32::from(d.port))
            .bind(d.tls)
            .bind(d.enabled)
            .execute(pool)
            .await?
            .rows_affected()
        });
        Ok(changed == 1)
    }

    /// Enables or disables a destination; returns whether it exists.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn set_destination_enabled(&self, id: i64, enabled: bool) -> Result<bool> {
        let changed = on_backend!(self, |pool| {
            sqlx::query("UPDATE destinations SET enabled = $2 WHERE id = $1")
                .bind(id)
                .bind(enabled)
                .execute(pool)
                .await?
                .rows_affected()
        });
        Ok(changed == 1)
    }

    /// The number of jobs in each state, in [`JobState`] order.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn job_counts(&self) -> Result<Vec<(JobState, i64)>> {
        let mut out = Vec::new();
        for state in [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Dead,
        ] {
            out.push((state, self.count_jobs(state).await?));
        }
        Ok(out)
    }

    /// The number of deliveries in each state (`pending`, `delivered`, `failed`).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn delivery_counts(&self) -> Result<Vec<(String, i64)>> {
        Ok(on_backend!(self, |pool| {
            sqlx::query_as("SELECT state, COUNT(*) FROM deliveries GROUP BY state ORDER BY state")
                .fetch_all(pool)
                .await?
        }))
    }

    /// Analysis jobs that succeeded since `since_ms`, oldest first.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn finished_jobs_since(&self, since_ms: i64) -> Result<Vec<FinishedJob>> {
        let rows: Vec<(i64, i64)> = on_backend!(self, |pool| {
            sqlx::query_as(
                "SELECT j.finished_at_ms, s.last_received_at_ms
                 FROM jobs j JOIN series s ON s.id = j.series_id
                 WHERE j.state = 'succeeded' AND j.finished_at_ms >= $1
                 ORDER BY j.finished_at_ms",
            )
            .bind(since_ms)
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(finished_at_ms, last_received_at_ms)| FinishedJob {
                finished_at_ms,
                last_received_at_ms,
            })
            .collect())
    }

    /// Audit events matching `filter`, newest first.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn query_audit(
        &self,
        filter: &AuditFilter,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<super::StoredAuditEvent>> {
        type Row = (
            i64,
            i64,
            String,
            String,
            Option<String>,
            Option<String>,
            String,
        );
        let action_prefix = filter.action.as_ref().map(|a| {
            let escaped = a
                .replace('\\', "\\\\")
                .replace('%', "\\%")
                .replace('_', "\\_");
            format!("{escaped}%")
        });
        let rows: Vec<Row> = on_backend!(self, |pool| {
            sqlx::query_as(
                "SELECT id, at_ms, actor, action, target, peer_addr, outcome
                 FROM audit_events
                 WHERE ($1 IS NULL OR actor = $1)
                   AND ($2 IS NULL OR action LIKE $2 ESCAPE '\\')
                   AND ($3 IS NULL OR outcome = $3)
                   AND ($4 IS NULL OR at_ms >= $4)
                   AND ($5 IS NULL OR at_ms < $5)
                 ORDER BY id DESC LIMIT $6 OFFSET $7",
            )
            .bind(filter.actor.as_deref())
            .bind(action_prefix.as_deref())
            .bind(filter.outcome.as_deref())
            .bind(filter.from_ms)
            .bind(filter.to_ms)
            .bind(i64::from(limit))
            .bind(i64::from(offset))
            .fetch_all(pool)
            .await?
        });
        rows.into_iter()
            .map(|(id, at_ms, actor, action, target, peer_addr, outcome)| {
                Ok(super::StoredAuditEvent {
                    id,
                    at_ms,
                    event: super::AuditEvent {
                        actor,
                        action,
                        target,
                        peer_addr,
                        outcome: super::AuditOutcome::parse(&outcome)?,
                    },
                })
            })
            .collect()
    }

    /// Every persisted setting, by key.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn settings(&self) -> Result<Vec<StoredSetting>> {
        let rows: Vec<(String, String, i64, String)> = on_backend!(self, |pool| {
            sqlx::query_as(
                "SELECT key, value, updated_at_ms, updated_by FROM settings ORDER BY key",
            )
            .fetch_all(pool)
            .await?
        });
        Ok(rows
            .into_iter()
            .map(|(key, value, updated_at_ms, updated_by)| StoredSetting {
                key,
                value,
                updated_at_ms,
                updated_by,
            })
            .collect())
    }

    /// Stores a setting (insert or replace).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn put_setting(&self, key: &str, value: &str, by: &str) -> Result<()> {
        let now = self.now_ms();
        on_backend!(self, |pool| {
            sqlx::query(
                "INSERT INTO settings (key, value, updated_at_ms, updated_by)
                 VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value,
                     updated_at_ms = excluded.updated_at_ms, updated_by = excluded.updated_by",
            )
            .bind(key)
            .bind(value)
            .bind(now)
            .bind(by)
            .execute(pool)
            .await?;
        });
        Ok(())
    }

    /// Records a verified bundle and makes it the active one; returns its id.
    ///
    /// # Errors
    /// The driver's error (the same directory twice).
    pub async fn add_bundle(&self, b: &InstalledBundle) -> Result<i64> {
        let now = self.now_ms();
        Ok(on_backend!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            sqlx::query("UPDATE model_bundles SET active = FALSE WHERE active")
                .execute(&mut *tx)
                .await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO model_bundles (dir, name, version, manifest_sha256, key_name, demo,
                                            installed_at_ms, installed_by, active)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, TRUE) RETURNING id",
            )
            .bind(&b.dir)
            .bind(&b.name)
            .bind(&b.version)
            .bind(&b.manifest_sha256)
            .bind(&b.key_name)
            .bind(b.demo)
            .bind(now)
            .bind(&b.installed_by)
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            id
        }))
    }

    /// Makes bundle `id` the active one; returns whether it exists.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn activate_bundle(&self, id: i64) -> Result<bool> {
        Ok(on_backend!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let exists: Option<i64> =
                sqlx::query_scalar("SELECT id FROM model_bundles WHERE id = $1")
                    .bind(id)
                    .fetch_optional(&mut *tx)
                    .await?;
            if exists.is_some() {
                sqlx::query("UPDATE model_bundles SET active = FALSE WHERE active")
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("UPDATE model_bundles SET active = TRUE WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                true
            } else {
                tx.rollback().await?;
                false
            }
        }))
    }

    /// Makes no uploaded bundle active: the engine loads the configuration's bundle.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn deactivate_bundles(&self) -> Result<()> {
        on_backend!(self, |pool| {
            sqlx::query("UPDATE model_bundles SET active = FALSE WHERE active")
                .execute(pool)
                .await?;
        });
        Ok(())
    }

    /// The bundle history, newest first.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn list_bundles(&self) -> Result<Vec<InstalledBundle>> {
        let sql = format!("SELECT {BUNDLE_COLUMNS} FROM model_bundles ORDER BY id DESC");
        let rows: Vec<BundleRow> =
            on_backend!(self, |pool| sqlx::query_as(&sql).fetch_all(pool).await?);
        Ok(rows.into_iter().map(bundle_from).collect())
    }

    /// The active console-installed bundle, if any.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn active_bundle(&self) -> Result<Option<InstalledBundle>> {
        let sql = format!("SELECT {BUNDLE_COLUMNS} FROM model_bundles WHERE active");
        let row: Option<BundleRow> = on_backend!(self, |pool| sqlx::query_as(&sql)
            .fetch_optional(pool)
            .await?);
        Ok(row.map(bundle_from))
    }
}

fn series_row_from(r: SeriesListRow) -> SeriesRow {
    SeriesRow {
        id: r.0,
        study_date: r.1,
        modality: r.2,
        patient_name: r.3,
        instances: r.4,
        source_ae: r.5,
        first_received_at_ms: r.6,
        job_state: r.7,
        result_status: r.8,
    }
}
