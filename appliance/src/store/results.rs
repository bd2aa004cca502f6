//! Analysis results per series: the run's metadata, its vertebrae and its lesions.
//!
//! There is at most one result per series (`results.series_id` is unique) and saving is an
//! upsert that replaces the children in the same transaction. That is what makes the job queue
//! safe to run a job twice: the second run overwrites the first, it never adds a second
//! result.

use super::{Dialect, Error, Result, Store, to_i64};

/// How an analysis ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResultStatus {
    /// The model ran and produced findings.
    Succeeded,
    /// The series was not analysable (not a spine CT, failed the input checks).
    Rejected,
    /// The analysis failed.
    Failed,
}

impl ResultStatus {
    /// The stored name (`succeeded`, `rejected`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            ResultStatus::Succeeded => "succeeded",
            ResultStatus::Rejected => "rejected",
            ResultStatus::Failed => "failed",
        }
    }

    fn parse(s: &str) -> Result<Self> {
        match s {
            "succeeded" => Ok(ResultStatus::Succeeded),
            "rejected" => Ok(ResultStatus::Rejected),
            "failed" => Ok(ResultStatus::Failed),
            other => Err(Error::Conflict(format!("unknown result status `{other}`"))),
        }
    }
}

/// Wall-clock time of each stage of an analysis, in milliseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    /// Loading, resampling, normalising.
    pub preprocess_ms: u64,
    /// Running the network.
    pub inference_ms: u64,
    /// Decoding instances, lesion peaks, building outputs.
    pub postprocess_ms: u64,
}

/// One segmented, identified vertebra (coordinates in LPS patient space, mm).
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct VertebraRecord {
    /// Label 1..=25 (C1..L5, L6), as `vertebra_core::anatomy::Vertebra`.
    pub label: i32,
    /// Centroid x.
    pub centroid_x: f64,
    /// Centroid y.
    pub centroid_y: f64,
    /// Centroid z.
    pub centroid_z: f64,
    /// Volume in mm³.
    pub volume_mm3: f64,
    /// Bounding box, voxel indices (inclusive).
    pub bbox_min_x: i32,
    /// Bounding box min y.
    pub bbox_min_y: i32,
    /// Bounding box min z.
    pub bbox_min_z: i32,
    /// Bounding box max x.
    pub bbox_max_x: i32,
    /// Bounding box max y.
    pub bbox_max_y: i32,
    /// Bounding box max z.
    pub bbox_max_z: i32,
    /// Mean attenuation in HU.
    pub mean_hu: f64,
    /// Anterior / posterior height ratio (Genant), when measurable.
    pub anterior_height_ratio: Option<f64>,
    /// Middle / posterior height ratio (Genant), when measurable.
    pub middle_height_ratio: Option<f64>,
    /// Genant grade 0..=3, when graded.
    pub genant_grade: Option<i32>,
    /// Identification confidence in [0, 1].
    pub confidence: f64,
}

/// One detected lesion.
#[derive(Clone, Debug, PartialEq, sqlx::FromRow)]
pub struct LesionRecord {
    /// Lesion class code (as `vertebra_core::anatomy::LesionClass`).
    pub class: String,
    /// Centre x (LPS, mm).
    pub center_x: f64,
    /// Centre y.
    pub center_y: f64,
    /// Centre z.
    pub center_z: f64,
    /// Diameter in mm.
    pub size_mm: f64,
    /// Detection score in [0, 1].
    pub score: f64,
    /// The vertebra it lies in, if assigned.
    pub vertebra_label: Option<i32>,
}

/// A result to save for a series.
#[derive(Clone, Debug, PartialEq)]
pub struct NewResult {
    /// `series.id`.
    pub series_id: i64,
    /// The job that produced it.
    pub job_id: Option<i64>,
    /// Model bundle identifier.
    pub bundle_id: String,
    /// Model bundle version.
    pub bundle_version: String,
    /// How the analysis ended.
    pub status: ResultStatus,
    /// Stage timings.
    pub timings: Timings,
    /// Vertebrae found (one per label).
    pub vertebrae: Vec<VertebraRecord>,
    /// Lesions found.
    pub lesions: Vec<LesionRecord>,
}

/// A result as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredResult {
    /// `results.id`.
    pub id: i64,
    /// Everything that was saved (of the latest save).
    pub result: NewResult,
    /// First save.
    pub created_at_ms: i64,
    /// Latest save.
    pub updated_at_ms: i64,
}

#[derive(sqlx::FromRow)]
struct ResultRow {
    id: i64,
    series_id: i64,
    job_id: Option<i64>,
    bundle_id: String,
    bundle_version: String,
    status: String,
    preprocess_ms: i64,
    inference_ms: i64,
    postprocess_ms: i64,
    created_at_ms: i64,
    updated_at_ms: i64,
}

/// The kinds of DICOM objects an analysis produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputKind {
    /// DICOM Segmentation.
    Seg,
    /// Structured Report (TID 1500).
    Sr,
    /// Secondary-capture key image.
    KeyImage,
}

impl OutputKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            OutputKind::Seg => "seg",
            OutputKind::Sr => "sr",
            OutputKind::KeyImage => "key_image",
        }
    }
}

impl Store {
    /// Saves the result of a series, replacing any earlier one (and its vertebrae and lesions)
    /// in one transaction. Returns `results.id`, stable across re-saves.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for out-of-range timings, the driver's error (e.g. a
    /// constraint: unknown series, a label outside 1..=25, a duplicate label).
    pub async fn save_result(&self, result: &NewResult) -> Result<i64> {
        let now = self.now_ms();
        let t = &result.timings;
        let (pre, inf, post) = (
            to_i64(t.preprocess_ms, "preprocess time")?,
            to_i64(t.inference_ms, "inference time")?,
            to_i64(t.postprocess_ms, "postprocess time")?,
        );
        Ok(on_backend!(self, |pool| {
            let mut tx = pool.begin_write().await?;
            let id: i64 = sqlx::query_scalar(
                "INSERT INTO results (series_id, job_id, bundle_id, bundle_version, status,
                     preprocess_ms, inference_ms, postprocess_ms, created_at_ms, updated_at_ms)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
                 ON CONFLICT (series_id) DO UPDATE SET
                     job_id = excluded.job_id, bundle_id = excluded.bundle_id,
                     bundle_version = excluded.bundle_version, status = excluded.status,
                     preprocess_ms = excluded.preprocess_ms,
                     inference_ms = excluded.inference_ms,
                     postprocess_ms = excluded.postprocess_ms,
                     updated_at_ms = excluded.updated_at_ms
                 RETURNING id",
            )
            .bind(result.series_id)
            .bind(result.job_id)
            .bind(&result.bundle_id)
            .bind(&result.bundle_version)
            .bind(result.status.as_str())
            .bind(pre)
            .bind(inf)
            .bind(post)
            .bind(now)
            .fetch_one(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM vertebrae WHERE result_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM lesions WHERE result_id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            for v in &result.vertebrae {
                sqlx::query(
                    "INSERT INTO vertebrae (result_id, label, centroid_x, centroid_y, centroid_z,
                         volume_mm3, bbox_min_x, bbox_min_y, bbox_min_z, bbox_max_x, bbox_max_y,
                         bbox_max_z, mean_hu, anterior_height_ratio, middle_height_ratio,
                         genant_grade, confidence)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15,
                             $16, $17)",
                )
                .bind(id)
                .bind(v.label)
                .bind(v.centroid_x)
                .bind(v.centroid_y)
                .bind(v.centroid_z)
                .bind(v.volume_mm3)
                .bind(v.bbox_min_x)
                .bind(v.bbox_min_y)
                .bind(v.bbox_min_z)
                .bind(v.bbox_max_x)
                .bind(v.bbox_max_y)
                .bind(v.bbox_max_z)
                .bind(v.mean_hu)
                .bind(v.anterior_height_ratio)
                .bind(v.middle_height_ratio)
                .bind(v.genant_grade)
                .bind(v.confidence)
                .execute(&mut *tx)
                .await?;
            }
            for l in &result.lesions {
                sqlx::query(
                    "INSERT INTO lesions (result_id, class, center_x, center_y, center_z,
                         size_mm, score, vertebra_label)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(id)
                .bind(&l.class)
                .bind(l.center_x)
                .bind(l.center_y)
                .bind(l.center_z)
                .bind(l.size_mm)
                .bind(l.score)
                .bind(l.vertebra_label)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            id
        }))
    }

    /// How the series' analysis ended and when its result was last written (`updated_at_ms`,
    /// the result's version), without reading its vertebrae and lesions: the viewer's check on
    /// every slice request.
    ///
    /// # Errors
    /// The driver's error; an unknown stored status.
    pub async fn result_version(&self, series_id: i64) -> Result<Option<(ResultStatus, i64)>> {
        let row: Option<(String, i64)> = on_backend!(self, |pool| {
            sqlx::query_as("SELECT status, updated_at_ms FROM results WHERE series_id = $1")
                .bind(series_id)
                .fetch_optional(pool)
                .await?
        });
        row.map(|(status, at)| Ok((ResultStatus::parse(&status)?, at)))
            .transpose()
    }

    /// The result of series `series_id`, with its vertebrae (by label) and lesions.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn result_for_series(&self, series_id: i64) -> Result<Option<StoredResult>> {
        let (row, vertebrae, lesions) = on_backend!(self, |pool| {
            let Some(row) = sqlx::query_as::<_, ResultRow>(
                "SELECT id, series_id, job_id, bundle_id, bundle_version, status, preprocess_ms,
                        inference_ms, postprocess_ms, created_at_ms, updated_at_ms
                 FROM results WHERE series_id = $1",
            )
            .bind(series_id)
            .fetch_optional(pool)
            .await?
            else {
                return Ok(None);
            };
            let vertebrae = sqlx::query_as::<_, VertebraRecord>(
                "SELECT label, centroid_x, centroid_y, centroid_z, volume_mm3, bbox_min_x,
                        bbox_min_y, bbox_min_z, bbox_max_x, bbox_max_y, bbox_max_z, mean_hu,
                        anterior_height_ratio, middle_height_ratio, genant_grade, confidence
                 FROM vertebrae WHERE result_id = $1 ORDER BY label",
            )
            .bind(row.id)
            .fetch_all(pool)
            .await?;
            let lesions = sqlx::query_as::<_, LesionRecord>(
                "SELECT class, center_x, center_y, center_z, size_mm, score, vertebra_label
                 FROM lesions WHERE result_id = $1 ORDER BY id",
            )
            .bind(row.id)
            .fetch_all(pool)
            .await?;
            (row, vertebrae, lesions)
        });
        let ms = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(Some(StoredResult {
            id: row.id,
            result: NewResult {
                series_id: row.series_id,
                job_id: row.job_id,
                bundle_id: row.bundle_id,
                bundle_version: row.bundle_version,
                status: ResultStatus::parse(&row.status)?,
                timings: Timings {
                    preprocess_ms: ms(row.preprocess_ms),
                    inference_ms: ms(row.inference_ms),
                    postprocess_ms: ms(row.postprocess_ms),
                },
                vertebrae,
                lesions,
            },
            created_at_ms: row.created_at_ms,
            updated_at_ms: row.updated_at_ms,
        }))
    }
}
