//! Indexing received instances: the study → series → instance hierarchy.
//!
//! A C-STORE is acknowledged only after its instance is spooled and indexed, so indexing is
//! one transaction per call that writes (or confirms) the study, the series and the instance
//! together: a crash leaves either all three or none. Batches go through the same path with
//! one transaction per batch, which is how ingest keeps indexing off its critical path.

use std::fmt;

use super::{Backend, Error, Result, Store};

/// The study an instance belongs to, as read from its DICOM header.
#[derive(Clone, PartialEq, Eq)]
pub struct NewStudy {
    /// Study Instance UID (0020,000D).
    pub study_uid: String,
    /// Patient's Name (0010,0010). PHI: stored for the web console only.
    pub patient_name: Option<String>,
    /// Patient ID (0010,0020). PHI: stored for the web console only.
    pub patient_id: Option<String>,
    /// Study Date (0008,0020) as the DICOM DA string.
    pub study_date: Option<String>,
}

/// Redacts the patient's name and ID so a `{:?}` in a log line cannot leak PHI.
impl fmt::Debug for NewStudy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewStudy")
            .field("study_uid", &self.study_uid)
            .field("patient_name", &redacted(self.patient_name.as_ref()))
            .field("patient_id", &redacted(self.patient_id.as_ref()))
            .field("study_date", &self.study_date)
            .finish()
    }
}

fn redacted(value: Option<&String>) -> &'static str {
    if value.is_some() {
        "<redacted>"
    } else {
        "<none>"
    }
}

/// The series an instance belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewSeries {
    /// Series Instance UID (0020,000E).
    pub series_uid: String,
    /// Modality (0008,0060), e.g. `CT`.
    pub modality: String,
}

/// One received, spooled instance with everything the index keeps about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NewInstance {
    /// Its study.
    pub study: NewStudy,
    /// Its series.
    pub series: NewSeries,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: String,
    /// SOP Class UID (0008,0016).
    pub sop_class_uid: String,
    /// Transfer syntax UID it was received (and spooled) in.
    pub transfer_syntax: String,
    /// Where the spooled file lies.
    pub spool_path: String,
    /// Size of the spooled file in bytes.
    pub size_bytes: u64,
    /// SHA-256 of the spooled file, 64 lowercase hex digits.
    pub sha256: String,
    /// When the instance was received (ms since the Unix epoch).
    pub received_at_ms: i64,
    /// The calling AE title of the association that sent it.
    pub calling_ae: String,
    /// The peer's address (`ip:port`).
    pub peer_addr: String,
}

impl NewInstance {
    fn validate(&self) -> Result<()> {
        let hex = self.sha256.len() == 64
            && self
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex {
            return Err(Error::InvalidArgument(format!(
                "sha256 of instance {} is not 64 lowercase hex digits",
                self.sop_instance_uid
            )));
        }
        for (what, uid) in [
            ("study UID", &self.study.study_uid),
            ("series UID", &self.series.series_uid),
            ("SOP instance UID", &self.sop_instance_uid),
        ] {
            if uid.is_empty() || uid.len() > 64 {
                return Err(Error::InvalidArgument(format!(
                    "{what} `{uid}` is empty or longer than 64 characters"
                )));
            }
        }
        Ok(())
    }
}

/// Row ids of an indexed instance and its parents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstanceIds {
    /// `studies.id`.
    pub study_id: i64,
    /// `series.id`.
    pub series_id: i64,
    /// `instances.id`.
    pub instance_id: i64,
}

/// A stored study, for the web console. Holds PHI; `Debug` redacts it.
#[derive(Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Study {
    /// `studies.id`.
    pub id: i64,
    /// Study Instance UID.
    pub study_uid: String,
    /// Patient's Name (PHI).
    pub patient_name: Option<String>,
    /// Patient ID (PHI).
    pub patient_id: Option<String>,
    /// Study Date.
    pub study_date: Option<String>,
    /// Number of series indexed under it.
    pub series_count: i64,
    /// Number of instances indexed under it.
    pub instance_count: i64,
}

impl fmt::Debug for Study {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Study")
            .field("id", &self.id)
            .field("study_uid", &self.study_uid)
            .field("patient_name", &redacted(self.patient_name.as_ref()))
            .field("patient_id", &redacted(self.patient_id.as_ref()))
            .field("study_date", &self.study_date)
            .field("series_count", &self.series_count)
            .field("instance_count", &self.instance_count)
            .finish()
    }
}

impl Store {
    /// Indexes one instance (study, series and instance in one transaction). Receiving the
    /// same SOP instance again replaces its spool facts and returns the same ids.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the series already belongs to another study or the instance
    /// to another series (nothing is written), [`Error::InvalidArgument`] for a malformed
    /// row, or the driver's error.
    pub async fn index_instance(&self, instance: &NewInstance) -> Result<InstanceIds> {
        let ids = self.index_instances(std::slice::from_ref(instance)).await?;
        ids.into_iter()
            .next()
            .ok_or_else(|| Error::Conflict("indexing returned no row".into()))
    }

    /// Indexes a batch of instances in one transaction: all or nothing. Returns the ids in
    /// input order; a SOP instance listed twice keeps its last copy.
    ///
    /// # Errors
    /// As [`Store::index_instance`]; any error rolls the whole batch back.
    pub async fn index_instances(&self, instances: &[NewInstance]) -> Result<Vec<InstanceIds>> {
        for instance in instances {
            instance.validate()?;
        }
        if instances.is_empty() {
            return Ok(Vec::new());
        }
        let now = self.now_ms();
        match &self.backend {
            Backend::Postgres(pool) => super::postgres::index_batch(pool, instances, now).await,
            Backend::Sqlite(pool) => super::sqlite::index_batch(pool, instances, now).await,
        }
    }

    /// The study with this UID, with its series and instance counts.
    ///
    /// # Errors
    /// The driver's error.
    pub async fn study(&self, study_uid: &str) -> Result<Option<Study>> {
        const SQL: &str = "SELECT s.id, s.study_uid, s.patient_name, s.patient_id, s.study_date,
                (SELECT COUNT(*) FROM series se WHERE se.study_id = s.id) AS series_count,
                (SELECT COUNT(*) FROM instances i JOIN series se ON se.id = i.series_id
                  WHERE se.study_id = s.id) AS instance_count
            FROM studies s WHERE s.study_uid = $1";
        Ok(on_backend!(self, |pool| {
            sqlx::query_as::<_, Study>(SQL)
                .bind(study_uid)
                .fetch_optional(pool)
                .await?
        }))
    }

    /// Number of instances indexed in the series with this UID (`None`: unknown series).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn series_instance_count(&self, series_uid: &str) -> Result<Option<i64>> {
        const SQL: &str = "SELECT (SELECT COUNT(*) FROM instances i WHERE i.series_id = se.id)
            FROM series se WHERE se.series_uid = $1";
        Ok(on_backend!(self, |pool| {
            sqlx::query_scalar::<_, i64>(SQL)
                .bind(series_uid)
                .fetch_optional(pool)
                .await?
        }))
    }
}

/// What an analysis job needs to know about a series: its UIDs, modality and the spooled
/// files still on disk (no PHI).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SeriesFiles {
    /// `series.id`.
    pub series_id: i64,
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// Modality.
    pub modality: String,
    /// Spool paths of its instances whose spool copy was not deleted, by path.
    pub files: Vec<String>,
}

impl Store {
    /// The series with row id `series_id` and its spooled files (`None`: unknown series).
    ///
    /// # Errors
    /// The driver's error.
    pub async fn series_files(&self, series_id: i64) -> Result<Option<SeriesFiles>> {
        const HEAD: &str = "SELECT st.study_uid, se.series_uid, se.modality
            FROM series se JOIN studies st ON st.id = se.study_id WHERE se.id = $1";
        const FILES: &str = "SELECT spool_path FROM instances
            WHERE series_id = $1 AND spool_deleted_at_ms IS NULL ORDER BY spool_path";
        let head: Option<(String, String, String)> = on_backend!(self, |pool| {
            sqlx::query_as(HEAD)
                .bind(series_id)
                .fetch_optional(pool)
                .await?
        });
        let Some((study_uid, series_uid, modality)) = head else {
            return Ok(None);
        };
        let files: Vec<String> = on_backend!(self, |pool| {
            sqlx::query_scalar(FILES)
                .bind(series_id)
                .fetch_all(pool)
                .await?
        });
        Ok(Some(SeriesFiles {
            series_id,
            study_uid,
            series_uid,
            modality,
            files,
        }))
    }
}

/// The error for a series UID that already hangs under another study.
pub(crate) fn series_conflict(series_uid: &str) -> Error {
    Error::Conflict(format!(
        "series {series_uid} is already indexed under another study"
    ))
}

/// The error for a SOP instance UID that already hangs under another series.
pub(crate) fn instance_conflict(sop_uid: &str) -> Error {
    Error::Conflict(format!(
        "SOP instance {sop_uid} is already indexed under another series"
    ))
}
