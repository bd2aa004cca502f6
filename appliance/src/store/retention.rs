//! Retention of spooled images: which received files may be deleted, and recording that they
//! were.
//!
//! The rules, in order of precedence:
//! 1. A file whose series is not *delivered* is never selected, whatever the policy or disk
//!    pressure: nothing acknowledged to a modality is lost before its results reached the PACS.
//!    Delivered means: the series has a `succeeded` result computed after every one of its
//!    instances arrived, its outputs have at least one delivery, every delivery is
//!    `delivered`, and no job of the series is queued, running or waiting to retry.
//! 2. Delivered files are selected when the policy deletes after delivery, or when they are
//!    older than `max_age`.
//! 3. While disk use is above the high-water mark, further delivered files are selected, the
//!    earliest delivered first (then the earliest received), until the selection brings use
//!    down to the low-water mark.
//!
//! Results, outputs and the audit log are never touched. Selection is a pure function
//! ([`select_for_deletion`]); the caller deletes the files (treating "already gone" as done)
//! and then calls [`Store::mark_spool_deleted`], so a crash between the two only repeats an
//! idempotent deletion.

use std::time::Duration;

use super::{Result, Store, duration_ms};

/// When spooled images may go.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Delete a series' images as soon as its results are delivered.
    pub delete_after_delivery: bool,
    /// Delete delivered images received longer ago than this.
    pub max_age: Option<Duration>,
    /// Above this many bytes of disk use, delete delivered images, oldest delivery first.
    pub high_water_bytes: Option<u64>,
    /// Stop high-water deletion at this use (defaults to the high-water mark itself).
    pub low_water_bytes: Option<u64>,
}

/// A spooled file still on disk, as the store knows it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct SpoolFile {
    /// `instances.id`.
    pub instance_id: i64,
    /// Where the file lies.
    pub spool_path: String,
    /// Its size in bytes.
    pub size_bytes: i64,
    /// When it was received.
    pub received_at_ms: i64,
    /// When its series' results were delivered (the last delivery); `None`: not delivered.
    pub delivered_at_ms: Option<i64>,
}

/// Picks the files `policy` allows deleting now, given `disk_used_bytes` of the spool's file
/// system. Never returns an undelivered file. The result is ordered: policy picks first, then
/// high-water picks in deletion order.
pub fn select_for_deletion<'a>(
    files: &'a [SpoolFile],
    policy: &RetentionPolicy,
    now_ms: i64,
    disk_used_bytes: u64,
) -> Vec<&'a SpoolFile> {
    let mut delivered: Vec<&SpoolFile> = files
        .iter()
        .filter(|f| f.delivered_at_ms.is_some())
        .collect();
    delivered.sort_by_key(|f| (f.delivered_at_ms, f.received_at_ms, f.instance_id));

    let too_old = |f: &SpoolFile| {
        policy
            .max_age
            .is_some_and(|age| now_ms.saturating_sub(f.received_at_ms) > duration_ms(age))
    };
    let (mut selected, rest): (Vec<&SpoolFile>, Vec<&SpoolFile>) = delivered
        .into_iter()
        .partition(|f| policy.delete_after_delivery || too_old(f));

    if let Some(high) = policy.high_water_bytes {
        let low = policy.low_water_bytes.unwrap_or(high).min(high);
        let freed: u64 = selected.iter().map(|f| size(f)).sum();
        let mut used = disk_used_bytes.saturating_sub(freed);
        if disk_used_bytes > high {
            for f in rest {
                if used <= low {
                    break;
                }
                used = used.saturating_sub(size(f));
                selected.push(f);
            }
        }
    }
    selected
}

fn size(f: &SpoolFile) -> u64 {
    u64::try_from(f.size_bytes).unwrap_or(0)
}

impl Store {
    /// Every instance whose spooled file has not been deleted, with its series' delivery time.
    ///
    /// A series counts as delivered only while nothing of it awaits analysis: every instance
    /// (deleted or not) arrived before its latest succeeded result, and no job of it is queued,
    /// running or waiting to retry. So a late instance or a requeue protects the whole series
    /// until the new result is delivered — the re-analysis needs every image.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn spool_files(&self) -> Result<Vec<SpoolFile>> {
        const SQL: &str = "SELECT i.id AS instance_id, i.spool_path, i.size_bytes,
                i.received_at_ms,
                CASE WHEN m.last_received_ms <= d.result_at_ms
                          AND NOT EXISTS (
                              SELECT 1 FROM jobs j WHERE j.series_id = i.series_id
                              AND j.state IN ('queued', 'running', 'failed'))
                     THEN d.delivered_at_ms END
                    AS delivered_at_ms
            FROM instances i
            JOIN (
                SELECT series_id, MAX(received_at_ms) AS last_received_ms
                FROM instances GROUP BY series_id
            ) m ON m.series_id = i.series_id
            LEFT JOIN (
                SELECT r.series_id, MAX(r.updated_at_ms) AS result_at_ms,
                       MAX(dl.delivered_at_ms) AS delivered_at_ms
                FROM results r
                JOIN outputs o ON o.result_id = r.id
                JOIN deliveries dl ON dl.output_id = o.id
                WHERE r.status = 'succeeded'
                GROUP BY r.series_id
                HAVING SUM(CASE WHEN dl.state = 'delivered' THEN 0 ELSE 1 END) = 0
            ) d ON d.series_id = i.series_id
            WHERE i.spool_deleted_at_ms IS NULL
            ORDER BY i.id";
        Ok(on_backend!(self, |pool| {
            sqlx::query_as::<_, SpoolFile>(SQL).fetch_all(pool).await?
        }))
    }

    /// Records that the spooled files of these instances were deleted (now). Returns how many
    /// rows changed; instances already marked are left alone.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn mark_spool_deleted(&self, instance_ids: &[i64]) -> Result<u64> {
        let now = self.now_ms();
        let mut changed = 0;
        on_backend!(self, |pool| {
            let mut tx = super::Dialect::begin_write(pool).await?;
            for id in instance_ids {
                changed += sqlx::query(
                    "UPDATE instances SET spool_deleted_at_ms = $2
                     WHERE id = $1 AND spool_deleted_at_ms IS NULL",
                )
                .bind(id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            tx.commit().await?;
        });
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(id: i64, size: i64, received: i64, delivered: Option<i64>) -> SpoolFile {
        SpoolFile {
            instance_id: id,
            spool_path: format!("/spool/{id}.dcm"),
            size_bytes: size,
            received_at_ms: received,
            delivered_at_ms: delivered,
        }
    }

    fn ids(v: &[&SpoolFile]) -> Vec<i64> {
        v.iter().map(|f| f.instance_id).collect()
    }

    #[test]
    fn undelivered_files_are_never_selected_even_under_disk_pressure() {
        let files = [file(1, 100, 0, None), file(2, 100, 10, None)];
        let policy = RetentionPolicy {
            delete_after_delivery: true,
            max_age: Some(Duration::from_millis(1)),
            high_water_bytes: Some(0),
            low_water_bytes: Some(0),
        };
        assert!(select_for_deletion(&files, &policy, 1_000_000, u64::MAX).is_empty());
    }

    #[test]
    fn after_delivery_selects_exactly_the_delivered_files() {
        let files = [
            file(1, 1, 0, Some(5)),
            file(2, 1, 0, None),
            file(3, 1, 0, Some(4)),
        ];
        let policy = RetentionPolicy {
            delete_after_delivery: true,
            ..RetentionPolicy::default()
        };
        assert_eq!(ids(&select_for_deletion(&files, &policy, 10, 0)), [3, 1]);
        assert!(select_for_deletion(&files, &RetentionPolicy::default(), 10, 0).is_empty());
    }

    #[test]
    fn max_age_selects_delivered_files_strictly_older_than_the_age() {
        let day = 86_400_000;
        let now = 10 * day;
        let files = [
            file(1, 1, now - 3 * day - 1, Some(now - day)),
            file(2, 1, now - 3 * day, Some(now - day)),
            file(3, 1, now - 5 * day, None),
        ];
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_millis(3 * day as u64)),
            ..RetentionPolicy::default()
        };
        assert_eq!(ids(&select_for_deletion(&files, &policy, now, 0)), [1]);
    }

    #[test]
    fn high_water_deletes_oldest_delivered_first_down_to_low_water() {
        let files = [
            file(1, 40, 1, Some(300)),
            file(2, 40, 2, Some(100)),
            file(3, 40, 3, None),
            file(4, 40, 4, Some(200)),
            file(5, 40, 5, Some(200)),
        ];
        let policy = RetentionPolicy {
            high_water_bytes: Some(150),
            low_water_bytes: Some(100),
            ..RetentionPolicy::default()
        };
        // 200 used: delete until <= 100, i.e. three 40-byte files, by delivery time then
        // receipt; file 3 is undelivered and skipped.
        assert_eq!(
            ids(&select_for_deletion(&files, &policy, 0, 200)),
            [2, 4, 5]
        );
        // Below the high-water mark nothing goes.
        assert!(select_for_deletion(&files, &policy, 0, 150).is_empty());
        // More pressure than deliverable data: everything delivered, still never file 3.
        assert_eq!(
            ids(&select_for_deletion(&files, &policy, 0, 10_000)),
            [2, 4, 5, 1]
        );
    }

    #[test]
    fn policy_picks_count_towards_the_high_water_target() {
        let day = 86_400_000;
        let files = [file(1, 60, 0, Some(1)), file(2, 60, day, Some(day + 1))];
        let policy = RetentionPolicy {
            max_age: Some(Duration::from_millis(day as u64 / 2)),
            high_water_bytes: Some(100),
            ..RetentionPolicy::default()
        };
        // File 1 is too old; deleting it brings 120 bytes to 60 <= 100, so file 2 stays.
        assert_eq!(ids(&select_for_deletion(&files, &policy, day, 120)), [1]);
    }
}
