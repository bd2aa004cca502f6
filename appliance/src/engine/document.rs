//! The result document: a versioned JSON file per analysis (`result.json`), the engine's
//! contract with everything downstream (store, console, tests). Schema: docs/result-schema.md.
//!
//! Versioning: [`SCHEMA_VERSION`] increases on any change that renames, removes or re-types a
//! field; adding an optional field does not change it. Readers check `schema` and
//! `schema_version` and refuse what they do not know.
//!
//! Identifying data: none. The document names the series by its UIDs only (no patient name,
//! ID or birth date), so it can be logged and attached to tickets.

use serde::{Deserialize, Serialize};
use vertebra_core::inference::{Inference, SpineLocalization};
use vertebra_core::postprocess::{CaseFindings, IdSource};

/// The `schema` field's value.
pub const SCHEMA: &str = "vertebraformer.analysis";
/// The current schema version.
pub const SCHEMA_VERSION: u32 = 1;
/// Said in every document.
pub const DISCLAIMER: &str = "NOT FOR DIAGNOSTIC USE: research software, not clinically \
                              validated";

/// The whole document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResultDocument {
    /// [`SCHEMA`].
    pub schema: String,
    /// [`SCHEMA_VERSION`].
    pub schema_version: u32,
    /// [`DISCLAIMER`].
    pub disclaimer: String,
    /// `vertebrad` version.
    pub software_version: String,
    /// The model that ran.
    pub model: ModelInfo,
    /// What was analysed.
    pub input: InputInfo,
    /// The spine localisation (absent: windows covered the whole volume by configuration).
    pub localization: Option<SpineLocalization>,
    /// Network windows run.
    pub windows: usize,
    /// Where identification probabilities came from: `head` or `votes`.
    pub id_source: IdSource,
    /// False when no anatomical order fitted (labels are then the raw argmax).
    pub order_decoded: bool,
    /// Vertebrae, cranio-caudal.
    pub vertebrae: Vec<VertebraResult>,
    /// Lesions by decreasing score.
    pub lesions: Vec<LesionResult>,
    /// Seconds per stage.
    pub timings_s: Timings,
    /// Output files, relative to the document's directory.
    pub files: OutputFiles,
    /// Things the operator should know (never patient data).
    pub warnings: Vec<String>,
}

/// The model that ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    /// Bundle model name.
    pub name: String,
    /// sha256 of the signed manifest: the bundle's identity.
    pub manifest_sha256: String,
    /// Signing key name and id.
    pub signed_by: String,
    /// Signed with a demo key.
    pub demo: bool,
    /// `fp32` or `fp16`.
    pub precision: String,
    /// The execution provider that ran.
    pub execution_provider: String,
}

/// What was analysed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InputInfo {
    /// `dicom` or `nifti`.
    pub kind: String,
    /// `CT` (the only modality analysed so far).
    pub modality: String,
    /// Study Instance UID (DICOM input).
    pub study_instance_uid: Option<String>,
    /// Series Instance UID (DICOM input).
    pub series_instance_uid: Option<String>,
    /// Instances (DICOM) or 1 (NIfTI).
    pub instances: usize,
    /// Source grid `(x, y, z)`.
    pub dims: [usize; 3],
    /// Source spacing (mm) `(x, y, z)`.
    pub spacing_mm: [f64; 3],
    /// Transfer syntaxes seen (DICOM input).
    pub transfer_syntaxes: Vec<String>,
    /// The prepared (model) grid `(x, y, z)`.
    pub prepared_dims: [usize; 3],
}

/// Body heights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Heights {
    /// Anterior (mm).
    pub anterior_mm: f64,
    /// Middle (mm).
    pub middle_mm: f64,
    /// Posterior (mm).
    pub posterior_mm: f64,
}

/// One vertebra.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertebraResult {
    /// Name after anatomical-order decoding (`C1` … `L5`, `L6`).
    pub name: String,
    /// Label value in the label map (1 = C1 … 25 = L6).
    pub label: u8,
    /// Posterior probability of the name.
    pub confidence: f64,
    /// Most probable name before decoding, and its probability.
    pub raw_name: String,
    /// Probability of `raw_name`.
    pub raw_probability: f64,
    /// Volume (mm³).
    pub volume_mm3: f64,
    /// Centroid in patient coordinates (LPS, mm).
    pub centroid_lps_mm: [f64; 3],
    /// Mean HU of the eroded body core, if it has one.
    pub core_mean_hu: Option<f64>,
    /// Anterior, middle, posterior body heights, if measurable.
    pub heights: Option<Heights>,
    /// Height-loss ratio (largest of wedge, biconcave, crush), if measurable.
    pub height_loss: Option<f64>,
    /// Genant grade 0–3, if measurable.
    pub genant_grade: Option<u8>,
    /// The instance touches the field of view's border (possibly cut).
    pub touches_border: bool,
    /// Mean HU over all of the vertebra's voxels on the source grid (null for NIfTI input
    /// without them, or when resampling left it no voxel).
    pub mean_hu: Option<f64>,
    /// Bounding box on the source grid, voxel indices `[[x0, y0, z0], [x1, y1, z1]]`
    /// (inclusive), if it has voxels there.
    pub bbox_source_voxels: Option<[[usize; 3]; 2]>,
}

/// One lesion.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LesionResult {
    /// Class key (`fracture`, `lytic_metastasis`, `sclerotic_metastasis`,
    /// `infection_erosion`).
    pub class: String,
    /// Peak score (probability).
    pub score: f64,
    /// Centre in patient coordinates (LPS, mm).
    pub centre_lps_mm: [f64; 3],
    /// Extent (mm) along the prepared grid's axes.
    pub size_mm: [f64; 3],
    /// The vertebra it was assigned to, if any.
    pub vertebra: Option<String>,
    /// Distance to that vertebra (mm; 0 inside it).
    pub vertebra_distance_mm: f64,
}

/// Seconds per stage.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct Timings {
    /// Reading and decoding the input.
    pub load: f64,
    /// Orientation, resampling, normalisation.
    pub preprocess: f64,
    /// Spine localisation.
    pub localize: f64,
    /// Network windows and blending.
    pub windows: f64,
    /// Identification-head passes.
    pub identification: f64,
    /// Instances, decoding, lesions, measurements.
    pub postprocess: f64,
    /// Label map back to the source grid.
    pub resample_back: f64,
    /// NIfTI, SEG, SR and this document.
    pub write: f64,
    /// Everything.
    pub total: f64,
}

/// Output files.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct OutputFiles {
    /// Label map on the source grid (NIfTI, gzip).
    pub label_map: String,
    /// Lesion heatmap on the source grid (NIfTI, gzip, u8: 255 × the highest lesion-class
    /// probability), when the bundle has a lesion head. Absent in documents written before it
    /// existed.
    #[serde(default)]
    pub lesion_heatmap: Option<String>,
    /// DICOM Segmentation (DICOM input).
    pub seg: Option<String>,
    /// DICOM Comprehensive 3D SR, TID 1500 (DICOM input).
    pub sr: Option<String>,
}

/// The vertebra and lesion sections of a document from an inference.
pub fn findings_sections(findings: &CaseFindings) -> (Vec<VertebraResult>, Vec<LesionResult>) {
    let vertebrae = findings
        .vertebrae
        .iter()
        .map(|f| {
            let m = &f.measurement;
            VertebraResult {
                name: f.vertebra.name().to_owned(),
                label: f.vertebra.label(),
                confidence: f.confidence,
                raw_name: f.raw_vertebra.name().to_owned(),
                raw_probability: f.raw_probability,
                volume_mm3: m.volume_mm3,
                centroid_lps_mm: m.centroid_world,
                core_mean_hu: m.core_mean_hu,
                heights: m.heights.map(|h| Heights {
                    anterior_mm: h.anterior_mm,
                    middle_mm: h.middle_mm,
                    posterior_mm: h.posterior_mm,
                }),
                height_loss: m.height_loss,
                genant_grade: m.genant.map(|g| g as u8),
                touches_border: f.instance.touches_border,
                mean_hu: None,
                bbox_source_voxels: None,
            }
        })
        .collect();
    let name_of = |id: u32| {
        findings
            .vertebrae
            .iter()
            .find(|f| f.instance.id == id)
            .map(|f| f.vertebra.name().to_owned())
    };
    let lesions = findings
        .lesions
        .iter()
        .map(|l| LesionResult {
            class: l.class.key().to_owned(),
            score: l.score,
            centre_lps_mm: l.centre_world,
            size_mm: l.size_mm,
            vertebra: l.instance.and_then(name_of),
            vertebra_distance_mm: l.instance_distance_mm,
        })
        .collect();
    (vertebrae, lesions)
}

/// Copies the inference's stage timings into `t`.
pub fn add_inference_timings(t: &mut Timings, inference: &Inference) {
    t.localize = inference.timings.localize_s;
    t.windows = inference.timings.windows_s;
    t.identification = inference.timings.identification_s;
    t.postprocess = inference.timings.postprocess_s;
}

/// Fills [`VertebraResult::mean_hu`] and [`VertebraResult::bbox_source_voxels`] from the
/// label map on the source grid and the source image (HU).
pub fn add_source_statistics(
    vertebrae: &mut [VertebraResult],
    labels: &vertebra_core::Volume<u8>,
    hu: &vertebra_core::Volume<f32>,
) {
    let [nx, ny, _] = labels.dims();
    let mut sum = [0.0f64; 256];
    let mut count = [0usize; 256];
    let mut lo = [[usize::MAX; 3]; 256];
    let mut hi = [[0usize; 3]; 256];
    for (i, (&l, &v)) in labels.data().iter().zip(hu.data()).enumerate() {
        if l == 0 {
            continue;
        }
        let k = l as usize;
        let c = [i % nx, (i / nx) % ny, i / (nx * ny)];
        sum[k] += f64::from(v);
        count[k] += 1;
        for a in 0..3 {
            lo[k][a] = lo[k][a].min(c[a]);
            hi[k][a] = hi[k][a].max(c[a]);
        }
    }
    for v in vertebrae {
        let k = v.label as usize;
        if count[k] > 0 {
            v.mean_hu = Some(sum[k] / count[k] as f64);
            v.bbox_source_voxels = Some([lo[k], hi[k]]);
        }
    }
}
