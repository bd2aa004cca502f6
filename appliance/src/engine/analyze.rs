//! One analysis: input → volume → contract preprocessing → core's inference path → outputs.
//!
//! Stages (each timed into the result document):
//! 1. **load**: a DICOM series directory through [`crate::series::load_series`] (decoding and
//!    every validation, one error class each), or a NIfTI image (HU);
//! 2. **preprocess**: `vertebra_core::inference::prepare_for_contract` (LPS, isotropic
//!    spacing, HU window) — the trainer's evaluation calls the same function;
//! 3. **localize / windows / identification / postprocess**: `vertebra_core::inference::
//!    infer_prepared` with the bundle's graphs as the network;
//! 4. **resample_back**: the label map from the model grid onto the source grid (nearest
//!    neighbour in world coordinates), which is what the SEG must reference;
//! 5. **write**: `labels.nii.gz` (source grid), `lesion_heatmap.nii.gz` (source grid, when the
//!    bundle has a lesion head; see [`lesion_heatmap`]), for DICOM input `seg.dcm` and `sr.dcm`
//!    (vertebra-reports), and `result.json` last — its presence means the analysis is
//!    complete (every file is written to a temporary name and renamed).
//!
//! Only CT is analysed: the bundle's contract is an HU window, and core has no MR intensity
//! normalisation yet; an MR series is refused with that reason rather than normalised wrongly.

use std::path::{Path, PathBuf};
use std::time::Instant;

use vertebra_core::anatomy::Vertebra;
use vertebra_core::inference::{InferenceConfig, infer_prepared, prepare_for_contract};
use vertebra_core::postprocess::{LesionMaps, lesions::sigmoid};
use vertebra_core::volume::resample::{Grid, resample_linear, resample_nearest};
use vertebra_core::{Geometry, Volume};
use vertebra_reports::{
    AlgorithmInfo, AnalysisFindings, InstanceIdentity, LesionFinding, PredecessorRef, SourceSeries,
    VertebraFinding, build_seg, build_sr, set_predecessor, write_part10,
};

use super::document::{
    DISCLAIMER, InputInfo, ModelInfo, OutputFiles, ResultDocument, SCHEMA, SCHEMA_VERSION, Timings,
    add_inference_timings, add_source_statistics, findings_sections,
};
use super::{Engine, EngineError};
use crate::series::{LoadedSeries, Modality, SeriesOptions, load_series};
use vertebra_export::runtime::OrtNetwork;

/// Name of the result document in the output directory.
pub const RESULT_FILE: &str = "result.json";
/// Name of the label map.
pub const LABEL_MAP_FILE: &str = "labels.nii.gz";
/// Name of the lesion heatmap (see [`lesion_heatmap`]).
pub const LESION_HEATMAP_FILE: &str = "lesion_heatmap.nii.gz";
/// Name of the DICOM Segmentation.
pub const SEG_FILE: &str = "seg.dcm";
/// Name of the TID 1500 Structured Report.
pub const SR_FILE: &str = "sr.dcm";
/// Series Number of the SEG series.
pub const SEG_SERIES_NUMBER: u32 = 9901;
/// Series Number of the SR series.
pub const SR_SERIES_NUMBER: u32 = 9902;

/// Where an analysis is, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Reading and decoding the input.
    Load,
    /// Preprocessing.
    Preprocess,
    /// Network windows: done of total.
    Windows {
        /// Windows done.
        done: usize,
        /// Windows planned (an estimate before localisation: the whole-volume count).
        total: usize,
    },
    /// Identification, post-processing and writing.
    Finish,
}

/// Settings of one analysis.
#[derive(Debug, Clone)]
pub struct AnalyzeOptions {
    /// Output directory (created; files in it are replaced).
    pub out_dir: PathBuf,
    /// Series loading checks.
    pub series: SeriesOptions,
    /// Write SEG + SR for DICOM input.
    pub dicom_outputs: bool,
    /// Identification of the algorithm in SEG/SR.
    pub algorithm: AlgorithmInfo,
    /// Content date `YYYYMMDD` and time `HHMMSS` of the SEG/SR (the caller's clock).
    pub content_date_time: (String, String),
    /// Earlier SR files of the same series, newest first (the worker passes those it
    /// recorded). The first readable one that is not the new SR itself becomes the new SR's
    /// Predecessor Documents Sequence; an identical retry therefore names the same
    /// predecessor and stays byte-identical.
    pub predecessor_srs: Vec<PathBuf>,
}

impl AnalyzeOptions {
    /// Options writing to `out_dir`, with the engine's bundle as the algorithm and the current
    /// UTC time as content date/time.
    pub fn new(engine: &Engine, out_dir: &Path) -> Self {
        let stamp = vertebra_export::manifest::rfc3339_utc(std::time::SystemTime::now());
        let digits: String = stamp.chars().filter(char::is_ascii_digit).collect();
        Self {
            out_dir: out_dir.to_path_buf(),
            series: SeriesOptions::default(),
            dicom_outputs: true,
            algorithm: AlgorithmInfo {
                bundle_name: truncate(&engine.bundle.manifest.model.name, 64),
                bundle_version: engine.bundle.manifest_sha256[..12].to_owned(),
                manufacturer: "VertebraFormer Appliance Project".into(),
                device_model: "VertebraFormer appliance".into(),
                device_serial: hostname(),
                software_version: format!("vertebrad {}", env!("CARGO_PKG_VERSION")),
            },
            content_date_time: (digits[..8].to_owned(), digits[8..14].to_owned()),
            predecessor_srs: Vec::new(),
        }
    }
}

fn truncate(s: &str, n: usize) -> String {
    s.chars().take(n).collect()
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| truncate(s.trim(), 64))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "UNKNOWN".into())
}

/// A DICOM object an analysis wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DicomOutput {
    /// `seg` or `sr`.
    pub kind: &'static str,
    /// Its SOP Instance UID (derived from the series and the bundle: a re-run writes the same).
    pub sop_instance_uid: String,
    /// The file.
    pub path: PathBuf,
}

/// A finished analysis.
#[derive(Debug, Clone)]
pub struct Analysis {
    /// SEG and SR written (empty for NIfTI input or when none could be made).
    pub dicom_outputs: Vec<DicomOutput>,
    /// The result document (also written as `result.json`).
    pub document: ResultDocument,
    /// The label map on the source grid.
    pub label_map: Volume<u8>,
    /// The output directory.
    pub out_dir: PathBuf,
}

impl Analysis {
    /// Absolute path of an output file named in the document.
    pub fn path(&self, file: &str) -> PathBuf {
        self.out_dir.join(file)
    }
}

/// What was loaded.
enum Loaded {
    Dicom(LoadedSeries),
    Nifti(Volume<f32>),
}

impl Loaded {
    fn volume(&self) -> &Volume<f32> {
        match self {
            Loaded::Dicom(s) => &s.volume,
            Loaded::Nifti(v) => v,
        }
    }
}

fn is_nifti(path: &Path) -> bool {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_ascii_lowercase());
    path.is_file()
        && name.is_some_and(|n| {
            std::path::Path::new(&n)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("nii"))
                || n.ends_with(".nii.gz")
        })
}

fn load(input: &Path, opts: &SeriesOptions) -> Result<Loaded, EngineError> {
    if !input.exists() {
        return Err(EngineError::Input {
            class: "not_found",
            message: format!("{} does not exist", input.display()),
        });
    }
    if is_nifti(input) {
        let v = vertebra_core::nifti::read_f32(input).map_err(|e| EngineError::Input {
            class: "nifti",
            message: e.to_string(),
        })?;
        return Ok(Loaded::Nifti(v));
    }
    let s = load_series(input, opts).map_err(|e| EngineError::Input {
        class: e.class(),
        message: e.to_string(),
    })?;
    if s.modality != Modality::Ct {
        return Err(EngineError::Input {
            class: "unsupported_modality",
            message: "MR series are accepted and stored but not analysed: the model bundle's \
                      contract is a CT HU window and there is no validated MR intensity \
                      normalisation yet"
                .into(),
        });
    }
    Ok(Loaded::Dicom(s))
}

fn write_err(path: &Path) -> impl FnOnce(std::io::Error) -> EngineError + '_ {
    move |e| EngineError::Output(format!("{}: {e}", path.display()))
}

/// Writes `bytes` to `dir/name` through a temporary file and a rename.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), EngineError> {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).map_err(write_err(&tmp))?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path).map_err(write_err(&path))
}

/// Analyses `input` (a DICOM series directory or a NIfTI file) with `engine` (see the module
/// docs); `progress` is called as stages start and windows finish.
///
/// # Errors
/// [`EngineError::Input`] with the loader's failure class, [`EngineError::Inference`],
/// [`EngineError::Output`].
pub fn analyze(
    engine: &Engine,
    input: &Path,
    opts: &AnalyzeOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Analysis, EngineError> {
    let started = Instant::now();
    let mut timings = Timings::default();
    let mut warnings = Vec::new();
    progress(Progress::Load);
    let t = Instant::now();
    let loaded = load(input, &opts.series)?;
    timings.load = t.elapsed().as_secs_f64();
    if let Loaded::Dicom(s) = &loaded {
        warnings.extend(s.warnings.iter().cloned());
    }
    let source = loaded.volume();
    let manifest = &engine.bundle.manifest;
    progress(Progress::Preprocess);
    let t = Instant::now();
    let prepared = prepare_for_contract(source, &manifest.contract)?;
    timings.preprocess = t.elapsed().as_secs_f64();
    let config = InferenceConfig {
        overlap: manifest.inference.window_overlap,
        batch: engine.config.batch,
        localize: engine
            .config
            .localize
            .then(vertebra_core::inference::LocateConfig::default),
        ..InferenceConfig::default()
    };
    let whole = vertebra_core::inference::WindowPlan::new(
        prepared.dims(),
        manifest.contract.window,
        manifest.contract.lesion_stride,
        config.overlap,
        None,
    )?
    .starts
    .len();
    let mut done = 0usize;
    let mut on_windows = |b: usize| {
        done += b;
        progress(Progress::Windows {
            done,
            total: whole.max(done),
        });
    };
    let inference = engine
        .checkout(|sessions| {
            let mut net = OrtNetwork::new(sessions, manifest, &mut on_windows);
            infer_prepared(&mut net, &prepared, &config)
        })
        .map_err(|e| EngineError::Inference(e.to_string()))?;
    progress(Progress::Finish);
    add_inference_timings(&mut timings, &inference);
    if let Some(l) = &inference.localization
        && l.region.is_none()
    {
        warnings.push(l.note.clone());
    }
    let t = Instant::now();
    let label_map = resample_nearest(&inference.findings.label_map(), &Grid::of(source), 0u8)?;
    let heatmap = match &inference.outputs.lesions {
        Some(maps) => Some(lesion_heatmap(
            maps,
            prepared.geometry(),
            &Grid::of(source),
        )?),
        None => None,
    };
    timings.resample_back = t.elapsed().as_secs_f64();

    let t = Instant::now();
    std::fs::create_dir_all(&opts.out_dir).map_err(write_err(&opts.out_dir))?;
    let _ = std::fs::remove_file(opts.out_dir.join(RESULT_FILE));
    let _ = std::fs::remove_file(opts.out_dir.join(LESION_HEATMAP_FILE));
    let tmp_labels = opts.out_dir.join(format!(".{LABEL_MAP_FILE}.tmp.nii.gz"));
    vertebra_core::nifti::write_labels(
        &tmp_labels,
        &label_map,
        &vertebra_core::nifti::WriteOptions {
            description: "vertebra labels; NOT FOR DIAGNOSTIC USE".into(),
            ..Default::default()
        },
    )
    .map_err(|e| EngineError::Output(e.to_string()))?;
    let labels_path = opts.out_dir.join(LABEL_MAP_FILE);
    std::fs::rename(&tmp_labels, &labels_path).map_err(write_err(&labels_path))?;
    if let Some(heatmap) = &heatmap {
        let tmp = opts
            .out_dir
            .join(format!(".{LESION_HEATMAP_FILE}.tmp.nii.gz"));
        vertebra_core::nifti::write_labels(
            &tmp,
            heatmap,
            &vertebra_core::nifti::WriteOptions {
                description: "lesion heatmap 0-255; NOT FOR DIAGNOSTIC USE".into(),
                ..Default::default()
            },
        )
        .map_err(|e| EngineError::Output(e.to_string()))?;
        let path = opts.out_dir.join(LESION_HEATMAP_FILE);
        std::fs::rename(&tmp, &path).map_err(write_err(&path))?;
    }
    let (mut vertebrae, lesions) = findings_sections(&inference.findings);
    add_source_statistics(&mut vertebrae, &label_map, source);
    let mut files = OutputFiles {
        label_map: LABEL_MAP_FILE.into(),
        lesion_heatmap: heatmap.as_ref().map(|_| LESION_HEATMAP_FILE.into()),
        seg: None,
        sr: None,
    };
    let mut dicom_outputs = Vec::new();
    if let (Loaded::Dicom(series), true) = (&loaded, opts.dicom_outputs) {
        match write_dicom_outputs(series, &inference.findings, &label_map, engine, opts) {
            Ok(written) => {
                dicom_outputs = written;
                files.seg = Some(SEG_FILE.into());
                files.sr = Some(SR_FILE.into());
            }
            Err(DicomOutputs::Empty) => warnings.push(
                "no vertebra found: no SEG or SR written (a SEG needs at least one segment)".into(),
            ),
            Err(DicomOutputs::Unreferenceable(why)) => warnings.push(format!(
                "no SEG or SR written: the source series cannot be referenced ({why})"
            )),
            Err(DicomOutputs::Failed(e)) => return Err(e),
        }
    }
    let input_info = match &loaded {
        Loaded::Dicom(s) => InputInfo {
            kind: "dicom".into(),
            modality: "CT".into(),
            study_instance_uid: Some(s.study_instance_uid.clone()),
            series_instance_uid: Some(s.series_instance_uid.clone()),
            instances: s.files.len(),
            dims: s.volume.dims(),
            spacing_mm: s.volume.geometry().spacing,
            transfer_syntaxes: s.transfer_syntaxes.clone(),
            prepared_dims: prepared.dims(),
        },
        Loaded::Nifti(v) => InputInfo {
            kind: "nifti".into(),
            modality: "CT".into(),
            study_instance_uid: None,
            series_instance_uid: None,
            instances: 1,
            dims: v.dims(),
            spacing_mm: v.geometry().spacing,
            transfer_syntaxes: Vec::new(),
            prepared_dims: prepared.dims(),
        },
    };
    if let Some(w) = engine.bundle.demo_warning() {
        warnings.push(w);
    }
    let mut document = ResultDocument {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        disclaimer: DISCLAIMER.into(),
        software_version: env!("CARGO_PKG_VERSION").into(),
        model: ModelInfo {
            name: manifest.model.name.clone(),
            manifest_sha256: engine.bundle.manifest_sha256.clone(),
            signed_by: format!("{} ({})", engine.bundle.key_name, engine.bundle.key_id),
            demo: engine.bundle.demo,
            precision: manifest.model.precision.clone(),
            execution_provider: engine.provider.name().into(),
        },
        input: input_info,
        localization: inference.localization.clone(),
        windows: inference.outputs.windows,
        id_source: inference.findings.id_source,
        order_decoded: inference.findings.order_decoded,
        vertebrae,
        lesions,
        timings_s: timings,
        files,
        warnings,
    };
    document.timings_s.write = t.elapsed().as_secs_f64();
    document.timings_s.total = started.elapsed().as_secs_f64();
    let json = serde_json::to_vec_pretty(&document)
        .map_err(|e| EngineError::Output(format!("result document: {e}")))?;
    write_atomic(&opts.out_dir, RESULT_FILE, &json)?;
    Ok(Analysis {
        dicom_outputs,
        document,
        label_map,
        out_dir: opts.out_dir.clone(),
    })
}

/// Source slices resampled per pass in [`lesion_heatmap`]: bounds the float buffer to a slab.
const HEATMAP_SLAB: usize = 32;

/// The lesion heatmap on the `source` grid: per voxel `round(255 · p)`, `p` the highest
/// lesion-class probability (sigmoid of `lesion_heatmap_logits`) trilinearly interpolated
/// from the stride-`s` lesion grid, whose cell `j` covers the voxel edges `[j s, (j + 1) s)`
/// of the `prepared` grid (`vertebra_core::postprocess::lesions`), so its centre is prepared
/// voxel `(j + ½) s − ½`. Outside the lesion grid: 0. Resampled in slabs of
/// [`HEATMAP_SLAB`] slices so the float buffer stays small on large series.
fn lesion_heatmap(
    maps: &LesionMaps,
    prepared: &Geometry,
    source: &Grid,
) -> Result<Volume<u8>, EngineError> {
    maps.validate()?;
    let cells = maps.cells();
    let mut peak = vec![0f32; cells];
    for channel in maps.heatmap_logits.chunks_exact(cells) {
        for (p, &logit) in peak.iter_mut().zip(channel) {
            *p = p.max(sigmoid(logit) as f32);
        }
    }
    let s = maps.stride as f64;
    let centre = 0.5 * s - 0.5;
    let coarse = Volume::from_vec(
        [maps.grid[2], maps.grid[1], maps.grid[0]],
        peak,
        Geometry {
            spacing: prepared.spacing.map(|x| x * s),
            origin: prepared.voxel_to_world([centre; 3]),
            direction: prepared.direction,
        },
    )?;
    let [nx, ny, nz] = source.dims;
    let mut out = Vec::with_capacity(nx * ny * nz);
    for z0 in (0..nz).step_by(HEATMAP_SLAB) {
        let slab = Grid::new(
            [nx, ny, HEATMAP_SLAB.min(nz - z0)],
            Geometry {
                origin: source.geometry.voxel_to_world([0.0, 0.0, z0 as f64]),
                ..source.geometry
            },
        )?;
        let part = resample_linear(&coarse, &slab, 0.0)?;
        out.extend(
            part.data()
                .iter()
                .map(|&p| (p * 255.0).round().clamp(0.0, 255.0) as u8),
        );
    }
    Ok(Volume::from_vec(source.dims, out, source.geometry)?)
}

enum DicomOutputs {
    /// No vertebra: a SEG needs a segment.
    Empty,
    /// The source cannot be referenced (e.g. an anonymised series without Study/Series
    /// Instance UIDs): results stay valid, DICOM outputs cannot be made.
    Unreferenceable(String),
    Failed(EngineError),
}

/// SEG + SR for a DICOM input (see vertebra-reports).
fn write_dicom_outputs(
    series: &LoadedSeries,
    findings: &vertebra_core::postprocess::CaseFindings,
    label_map: &Volume<u8>,
    engine: &Engine,
    opts: &AnalyzeOptions,
) -> Result<Vec<DicomOutput>, DicomOutputs> {
    let fail = |m: String| DicomOutputs::Failed(EngineError::Output(m));
    let present: std::collections::BTreeSet<u8> = label_map
        .data()
        .iter()
        .copied()
        .filter(|&l| l > 0)
        .collect();
    let mut vertebrae: Vec<VertebraFinding> = Vec::new();
    for f in &findings.vertebrae {
        if !present.contains(&f.vertebra.label())
            || vertebrae.iter().any(|v| v.vertebra == f.vertebra)
        {
            continue;
        }
        let m = &f.measurement;
        vertebrae.push(VertebraFinding {
            vertebra: f.vertebra,
            confidence: f.confidence.clamp(0.0, 1.0),
            volume_mm3: m.volume_mm3,
            centroid_lps: m.centroid_world,
            mean_trabecular_hu: m.core_mean_hu,
            heights_mm: m.heights.map(|h| vertebra_reports::BodyHeights {
                anterior_mm: h.anterior_mm,
                middle_mm: h.middle_mm,
                posterior_mm: h.posterior_mm,
                height_loss_ratio: m.height_loss.unwrap_or(0.0).clamp(0.0, 1.0),
            }),
            genant: m.genant,
        });
    }
    if vertebrae.is_empty() {
        return Err(DicomOutputs::Empty);
    }
    let vertebra_of = |id: u32| -> Option<Vertebra> {
        findings
            .vertebrae
            .iter()
            .find(|f| f.instance.id == id)
            .map(|f| f.vertebra)
            .filter(|v| vertebrae.iter().any(|x| x.vertebra == *v))
    };
    // Every lesion is reported; one that lies in no reported vertebra goes into the SR without
    // a Finding Site (docs/reports.md).
    let lesions: Vec<LesionFinding> = findings
        .lesions
        .iter()
        .map(|l| LesionFinding {
            class: l.class,
            vertebra: l.instance.and_then(vertebra_of),
            centre_lps: l.centre_world,
            size_mm: Some(l.size_mm).filter(|s| s.iter().all(|&v| v > 0.0)),
            score: l.score.clamp(0.0, 1.0),
        })
        .collect();
    let numbering_confidence = vertebrae
        .iter()
        .map(|v| v.confidence)
        .fold(1.0f64, f64::min);
    let analysis = AnalysisFindings {
        labels: label_map.clone(),
        vertebrae,
        lesions,
        numbering_confidence,
    };
    let source = SourceSeries::from_files(&series.files)
        .map_err(|e| DicomOutputs::Unreferenceable(e.to_string()))?;
    // The SEG/SR UIDs are a function of the series, the bundle and the exact set of input
    // images: a retried job on the same images writes byte-identical objects under the same
    // UIDs (delivered once), while a re-analysis after late images gets new UIDs, so the PACS
    // receives the new result instead of keeping the old one under a UID already delivered.
    let key = format!(
        "vertebrad/analysis/{}/{}/{}",
        series.series_instance_uid,
        engine.bundle.manifest_sha256,
        input_set_digest(&series.slices)
    );
    let (date, time) = &opts.content_date_time;
    let seg_id = InstanceIdentity::derived(&key, "seg", SEG_SERIES_NUMBER, date, time);
    let sr_id = InstanceIdentity::derived(&key, "sr", SR_SERIES_NUMBER, date, time);
    let seg = build_seg(&source, &analysis, &opts.algorithm, &seg_id)
        .map_err(|e| fail(format!("SEG: {e}")))?;
    let mut sr = build_sr(&source, &analysis, &opts.algorithm, &seg, &sr_id)
        .map_err(|e| fail(format!("SR: {e}")))?;
    if let Some(p) = predecessor(&opts.predecessor_srs, &sr_id.sop_instance_uid) {
        set_predecessor(&mut sr, &p).map_err(|e| fail(format!("SR: {e}")))?;
    }
    let (seg_path, sr_path) = (opts.out_dir.join(SEG_FILE), opts.out_dir.join(SR_FILE));
    write_part10(&seg, &seg_path).map_err(|e| fail(format!("SEG: {e}")))?;
    write_part10(&sr, &sr_path).map_err(|e| fail(format!("SR: {e}")))?;
    Ok(vec![
        DicomOutput {
            kind: "seg",
            sop_instance_uid: seg_id.sop_instance_uid,
            path: seg_path,
        },
        DicomOutput {
            kind: "sr",
            sop_instance_uid: sr_id.sop_instance_uid,
            path: sr_path,
        },
    ])
}

/// The first of `candidates` (earlier SR files, newest first) that can be read and is not
/// the SR being written (`own_uid`: an identical retry re-derives the same UID).
fn predecessor(candidates: &[PathBuf], own_uid: &str) -> Option<PredecessorRef> {
    candidates.iter().find_map(|path| {
        let read = dicom_object::OpenFileOptions::new()
            .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
            .open_file(path)
            .map_err(|e| e.to_string())
            .and_then(|obj| PredecessorRef::from_sr(&obj).map_err(|e| e.to_string()));
        match read {
            Ok(p) if p.sop_instance_uid == own_uid => None,
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(file = %path.display(), "an earlier SR of the series is unreadable, not named as predecessor: {e}");
                None
            }
        }
    })
}

/// SHA-256 (hex, first 32 digits) of the sorted `SOP Instance UID#frame` list of the slices
/// analysed: the identity of an analysis' input set.
fn input_set_digest(slices: &[crate::series::SliceSource]) -> String {
    use sha2::{Digest, Sha256};
    let mut ids: Vec<String> = slices
        .iter()
        .map(|s| format!("{}#{}", s.sop_instance_uid, s.frame_number.unwrap_or(0)))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    let mut h = Sha256::new();
    for id in &ids {
        h.update(id.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())[..32].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_input_set_digest_names_the_set_not_its_order() {
        let slice = |uid: &str, frame: Option<u32>| crate::series::SliceSource {
            sop_instance_uid: uid.into(),
            frame_number: frame,
            file: std::path::PathBuf::from(format!("/spool/{uid}")),
        };
        let a = [slice("1.2.3", None), slice("1.2.4", None)];
        let b = [slice("1.2.4", None), slice("1.2.3", None)];
        let late = [
            slice("1.2.3", None),
            slice("1.2.4", None),
            slice("1.2.5", None),
        ];
        let frames = [slice("1.2.3", Some(1)), slice("1.2.3", Some(2))];
        assert_eq!(
            input_set_digest(&a),
            input_set_digest(&b),
            "order does not matter"
        );
        assert_eq!(input_set_digest(&a).len(), 32);
        assert_ne!(
            input_set_digest(&a),
            input_set_digest(&late),
            "a late image changes it"
        );
        assert_ne!(
            input_set_digest(&frames),
            input_set_digest(&[slice("1.2.3", Some(1))])
        );
    }

    #[test]
    fn the_lesion_heatmap_lands_on_the_source_grid_at_the_cell_centres() {
        // Prepared grid 16³ at 1 mm, stride 4: a 4³ lesion grid; cell (z 1, y 2, x 2) hot in
        // channel 2 (logit +4: p = 0.982), everything else −20.
        let prepared = Geometry::axis_aligned([1.0; 3], [10.0, 20.0, 30.0]);
        let (s, g) = (4usize, [4usize, 4, 4]);
        let cells = 64;
        let mut logits = vec![-20.0f32; 4 * cells];
        let hot = 16 + 2 * 4 + 2; // z 1, y 2, x 2
        logits[2 * cells + hot] = 4.0;
        let maps = LesionMaps {
            stride: s,
            grid: g,
            heatmap_logits: logits,
            offset: vec![0.0; 3 * cells],
            log_size: vec![0.0; 3 * cells],
        };
        // Source grid: 0.5 mm voxels over the same box, 40 slices so that slabs split it.
        let source = Grid::new(
            [32, 32, 40],
            Geometry::axis_aligned([0.5; 3], [10.0, 20.0, 30.0]),
        )
        .unwrap();
        let heat = lesion_heatmap(&maps, &prepared, &source).unwrap();
        assert_eq!(heat.dims(), [32, 32, 40]);
        // The hot cell's centre: prepared voxel (j + ½) s − ½ = (9.5, 9.5, 5.5) → world
        // (19.5, 29.5, 35.5) → source voxel (w − o) / 0.5 = (19, 19, 11), where the
        // interpolated value is the cell's own.
        let (max_i, &max) = heat
            .data()
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| **v)
            .unwrap();
        let c = heat.coords(max_i);
        assert_eq!(max, (255.0 * sigmoid(4.0)).round() as u8);
        assert_eq!(c, [19, 19, 11]);
        // Far from it: background (sigmoid(−20) rounds to 0).
        assert_eq!(heat.data()[heat.index(0, 0, 39)], 0);
    }
}
