//! The inputs of the writers: what an analysis found, who found it, and when and under which
//! identity the output objects are written.
//!
//! The inference engine will produce [`AnalysisFindings`]; until it exists these types are the
//! contract between it and the writers. Everything is in the source series' frame of
//! reference: world positions are LPS millimetres, volumes are on the source voxel grid.

use vertebra_core::Volume;
use vertebra_core::anatomy::{GenantGrade, LesionClass, Vertebra};
use vertebra_core::dicom_series::uid_from_key;

use crate::{Error, Result};

/// What the analysis found in one series.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisFindings {
    /// Vertebra labels on the source grid (see [`crate::SourceSeries::geometry`]): 0
    /// background, 1..=25 the vertebra label ([`Vertebra::label`]).
    pub labels: Volume<u8>,
    /// One entry per vertebra present in `labels`, any order.
    pub vertebrae: Vec<VertebraFinding>,
    /// Detected lesions, in the order they are to be reported.
    pub lesions: Vec<LesionFinding>,
    /// Confidence of the numbering of the whole column in [0, 1] (the ID decoder's score).
    pub numbering_confidence: f64,
}

/// Measurements of one vertebra.
#[derive(Debug, Clone, PartialEq)]
pub struct VertebraFinding {
    /// Which vertebra; its label value marks its voxels in [`AnalysisFindings::labels`].
    pub vertebra: Vertebra,
    /// Identification confidence in [0, 1].
    pub confidence: f64,
    /// Volume of the segmented vertebra in mm³.
    pub volume_mm3: f64,
    /// Centroid of the segmented vertebra, LPS mm.
    pub centroid_lps: [f64; 3],
    /// Mean attenuation of the trabecular core of the body in HU; `None` for non-CT input.
    pub mean_trabecular_hu: Option<f64>,
    /// Vertebral body heights (anterior, middle, posterior) in mm, when the body could be
    /// measured.
    pub heights_mm: Option<BodyHeights>,
    /// Genant semiquantitative grade, when heights were measured.
    pub genant: Option<GenantGrade>,
}

/// Anterior, middle and posterior vertebral body heights and the height-loss ratio derived
/// from them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BodyHeights {
    /// Anterior height, mm.
    pub anterior_mm: f64,
    /// Middle height, mm.
    pub middle_mm: f64,
    /// Posterior height, mm.
    pub posterior_mm: f64,
    /// Largest height loss relative to the expected height, fraction in [0, 1].
    pub height_loss_ratio: f64,
}

/// One detected lesion.
#[derive(Debug, Clone, PartialEq)]
pub struct LesionFinding {
    /// Lesion class.
    pub class: LesionClass,
    /// The vertebra it lies in (for infection/erosion: the one above the disc); `None` when
    /// the post-processing could not assign it to a reported vertebra. The SR then reports it
    /// without a Finding Site, tracked as "unassigned", rather than leaving it out.
    pub vertebra: Option<Vertebra>,
    /// Centre, LPS mm.
    pub centre_lps: [f64; 3],
    /// Extent along the L, P and S axes in mm (an axis-aligned ellipsoid), when known.
    pub size_mm: Option<[f64; 3]>,
    /// Detection score in [0, 1] (the heatmap peak).
    pub score: f64,
}

/// A lesion-class heatmap on the source grid, for the optional FRACTIONAL segmentation.
#[derive(Debug, Clone, PartialEq)]
pub struct LesionHeatmap {
    /// The class whose channel this is.
    pub class: LesionClass,
    /// Probabilities in [0, 1] on the source grid.
    pub probability: Volume<f32>,
}

/// Identification of the algorithm: written as SEG algorithm identification, equipment and SR
/// device observer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlgorithmInfo {
    /// Model bundle name (LO, at most 64 characters), e.g. "vertebraformer-paper".
    pub bundle_name: String,
    /// Model bundle version (LO), e.g. "1.2.0".
    pub bundle_version: String,
    /// Manufacturer of the device (LO): the appliance's maker.
    pub manufacturer: String,
    /// Model name of the device (LO): the appliance product name.
    pub device_model: String,
    /// Serial number of the appliance (LO); used as the Device Serial Number.
    pub device_serial: String,
    /// Software version of the writer (LO), e.g. "vertebrad 0.1.0".
    pub software_version: String,
}

impl AlgorithmInfo {
    /// Device Observer UID of the SR: fixed per appliance serial number, so every report of
    /// one device names the same observer.
    pub fn device_observer_uid(&self) -> String {
        uid_from_key(&format!(
            "vertebra-reports/v1/device/{}/{}",
            self.manufacturer, self.device_serial
        ))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (name, value) in [
            ("bundle_name", &self.bundle_name),
            ("bundle_version", &self.bundle_version),
            ("manufacturer", &self.manufacturer),
            ("device_model", &self.device_model),
            ("device_serial", &self.device_serial),
            ("software_version", &self.software_version),
        ] {
            check_lo(name, value, false)?;
        }
        Ok(())
    }
}

/// Identity of one output instance: its series, instance UID and numbers, and its content date
/// and time. The writers never read the clock or invent UIDs, so the same inputs give the same
/// bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceIdentity {
    /// Series Instance UID of the output series.
    pub series_instance_uid: String,
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Series Number (IS).
    pub series_number: u32,
    /// Instance Number (IS).
    pub instance_number: u32,
    /// Content Date, `YYYYMMDD`.
    pub content_date: String,
    /// Content Time, `HHMMSS` (optionally with a fraction).
    pub content_time: String,
}

impl InstanceIdentity {
    /// UIDs derived from `key` (e.g. the job id, unique per analysis) and `role` ("seg",
    /// "fractional-seg", "sr"), in the `2.25.<UUID>` form of
    /// [`vertebra_core::dicom_series::uid_from_key`]. The same key and role always give the
    /// same UIDs, so a retried job re-sends the same instances instead of duplicates.
    pub fn derived(
        key: &str,
        role: &str,
        series_number: u32,
        content_date: &str,
        content_time: &str,
    ) -> Self {
        InstanceIdentity {
            series_instance_uid: uid_from_key(&format!("vertebra-reports/v1/series/{role}/{key}")),
            sop_instance_uid: uid_from_key(&format!("vertebra-reports/v1/instance/{role}/{key}")),
            series_number,
            instance_number: 1,
            content_date: content_date.to_owned(),
            content_time: content_time.to_owned(),
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        check_uid("series_instance_uid", &self.series_instance_uid)?;
        check_uid("sop_instance_uid", &self.sop_instance_uid)?;
        let date_ok =
            self.content_date.len() == 8 && self.content_date.bytes().all(|b| b.is_ascii_digit());
        let (hms, frac) = self
            .content_time
            .split_once('.')
            .unwrap_or((&self.content_time, "0"));
        let time_ok = hms.len() == 6
            && hms.bytes().all(|b| b.is_ascii_digit())
            && (1..=6).contains(&frac.len())
            && frac.bytes().all(|b| b.is_ascii_digit());
        if !date_ok || !time_ok {
            return Err(Error::InvalidInput(format!(
                "content date/time {:?} {:?} must be YYYYMMDD and HHMMSS[.ffffff]",
                self.content_date, self.content_time
            )));
        }
        Ok(())
    }
}

/// Checks a UID: 1..=64 characters of digits and dots, no empty or zero-padded component.
pub(crate) fn check_uid(name: &str, uid: &str) -> Result<()> {
    let ok = !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|c| {
            !c.is_empty()
                && c.bytes().all(|b| b.is_ascii_digit())
                && (c == "0" || !c.starts_with('0'))
        });
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{name} {uid:?} is not a valid DICOM UID"
        )))
    }
}

/// Checks a LO value: printable ASCII without backslash, at most 64 characters, non-empty
/// unless `may_be_empty`.
pub(crate) fn check_lo(name: &str, value: &str, may_be_empty: bool) -> Result<()> {
    if (value.is_empty() && !may_be_empty)
        || value.len() > 64
        || value.contains('\\')
        || !value.chars().all(|c| c.is_ascii() && !c.is_ascii_control())
    {
        return Err(Error::InvalidInput(format!(
            "{name} {value:?} must be 1 to 64 printable ASCII characters without backslash"
        )));
    }
    Ok(())
}

/// Checks that `v` is a finite number in [0, 1].
pub(crate) fn check_unit_interval(name: &str, v: f64) -> Result<()> {
    if v.is_finite() && (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(Error::InvalidInput(format!(
            "{name} = {v} is not in [0, 1]"
        )))
    }
}
