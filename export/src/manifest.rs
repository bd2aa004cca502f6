//! `manifest.toml`: what a bundle contains and how to run it — the model contract (input
//! convention, label maps, output names, shapes and strides), the RoIAlign between the two
//! graphs, the sha256 of every file, and where the model came from.
//!
//! The manifest is the only file the signature covers; it binds every other file through its
//! hash. A reader checks [`CONTRACT_VERSION`] and [`BUNDLE_FORMAT`] before anything else.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use vertebra_core::contract::{
    ModelContract, TensorSpec, id_class_names, lesion_class_names, seg_label_names,
};

use crate::roi::RoiAlignParams;
use crate::{Error, Result};

/// Version of the bundle layout (file names, manifest sections); bump on incompatible change.
pub const BUNDLE_FORMAT: u32 = 1;

/// Version of the model contract (`vertebra_core::contract`: names, shapes, input convention)
/// this build writes and accepts. Bump whenever the contract changes meaning.
pub const CONTRACT_VERSION: u32 = 1;

/// The main graph's file name.
pub const MAIN_GRAPH: &str = "model.onnx";
/// The identification MLP's file name.
pub const ID_HEAD_GRAPH: &str = "id_head.onnx";
/// The manifest's file name.
pub const MANIFEST: &str = "manifest.toml";
/// The signature's file name.
pub const SIGNATURE: &str = "manifest.sig";

/// Default fraction of overlap between neighbouring sliding windows.
pub const DEFAULT_WINDOW_OVERLAP: f64 = 0.5;

/// The whole manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// [`BUNDLE_FORMAT`] of the writer.
    pub bundle_format: u32,
    /// [`CONTRACT_VERSION`] of the writer.
    pub contract_version: u32,
    /// The graphs and how they were written.
    pub model: ModelSection,
    /// Sliding-window inference settings.
    pub inference: InferenceSection,
    /// The model contract: window, spacing, HU window, patch size, lesion stride, domains,
    /// branches.
    pub contract: ModelContract,
    /// Channel and class names.
    pub labels: LabelSection,
    /// RoIAlign and geometry between the two graphs (identification head only).
    pub identification: Option<IdentificationSection>,
    /// Inputs of the main graph (names, shapes, strides, channel labels).
    pub inputs: Vec<TensorSpec>,
    /// Outputs of the whole model (main graph plus `id_logits` from the ID graph).
    pub outputs: Vec<TensorSpec>,
    /// Where the weights came from.
    pub provenance: Provenance,
    /// sha256 (lowercase hex) of every other file of the bundle, by file name.
    pub files: BTreeMap<String, String>,
}

/// The graphs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSection {
    /// Model name (free text, e.g. the preset and run).
    pub name: String,
    /// Weight and compute precision: `fp32` or `fp16` (inputs and outputs are always f32).
    pub precision: String,
    /// ONNX opset.
    pub opset: i64,
    /// ONNX IR version.
    pub ir_version: i64,
    /// File of the main graph.
    pub main_graph: String,
    /// File of the identification MLP, if any.
    pub id_head_graph: Option<String>,
}

/// Sliding-window settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferenceSection {
    /// Fraction of a window shared with its neighbour along each axis, in `[0, 1)`.
    pub window_overlap: f64,
}

/// Channel and class names in channel order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LabelSection {
    /// `label_logits` channels: background, C1..L5, L6 (channel = label value).
    pub segmentation: Vec<String>,
    /// `id_logits` classes (index i = label i + 1).
    pub identification: Vec<String>,
    /// `lesion_heatmap_logits` channels.
    pub lesion: Vec<String>,
}

/// How `id_head.onnx` is fed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdentificationSection {
    /// Output of the main graph that RoIAlign reads.
    pub features_output: String,
    /// RoIAlign parameters.
    pub roi_align: RoiAlignParams,
    /// Millimetres per input voxel used for the geometry features.
    pub spacing_mm: f64,
    /// Millimetres per unit of the geometry features.
    pub extent_unit_mm: f32,
}

/// Provenance of the weights.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// Git commit of the code that trained/exported (or "unknown").
    pub git_commit: String,
    /// The network configuration, JSON (from the weights' metadata).
    pub model_config: String,
    /// The training configuration file's content, if given.
    pub training_config: Option<String>,
    /// sha256 of the dataset manifest the model was trained on, if given.
    pub dataset_manifest_sha256: Option<String>,
    /// Training seed, if given.
    pub seed: Option<u64>,
    /// sha256 of the safetensors file exported.
    pub weights_sha256: String,
    /// Evaluation metrics (name → value; CI bounds as separate names), if given.
    pub metrics: Option<BTreeMap<String, f64>>,
    /// Creation time, UTC, RFC 3339.
    pub created_utc: String,
}

impl Manifest {
    /// The label section of the current contract.
    pub fn labels() -> LabelSection {
        LabelSection {
            segmentation: seg_label_names(),
            identification: id_class_names(),
            lesion: lesion_class_names(),
        }
    }

    /// Serialises to TOML.
    ///
    /// # Errors
    /// [`Error::Other`] if a value cannot be represented (non-finite metrics).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::Other(format!("cannot write the manifest: {e}")))
    }

    /// Parses TOML.
    ///
    /// # Errors
    /// [`Error::Other`] naming the first problem.
    pub fn from_toml(text: &str) -> Result<Self> {
        toml::from_str(text).map_err(|e| Error::Other(format!("manifest is not valid: {e}")))
    }
}

/// `now` as RFC 3339 UTC with second precision (e.g. `2026-11-28T08:15:00Z`).
pub fn rfc3339_utc(now: std::time::SystemTime) -> String {
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_matches_known_instants() {
        assert_eq!(rfc3339_utc(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // `date -u -d @951782400` = 2000-02-29 00:00:00 (leap day of a century leap year).
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        // `date -u -d @1795767359` = 2026-11-27 08:15:59.
        assert_eq!(
            rfc3339_utc(UNIX_EPOCH + Duration::from_secs(1_795_767_359)),
            "2026-11-27T08:15:59Z"
        );
    }
}
