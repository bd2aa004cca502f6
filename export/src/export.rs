//! From a weights file to a bundle directory: export the graphs, write the manifest with the
//! contract and provenance, optionally sign and pack it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use vertebra_core::contract::{Dim, TensorSpec, names};

use crate::bundle::{sha256_file, sign_bundle, write_manifest, write_tar};
use crate::graph::builder::{IR_VERSION, OPSET};
use crate::graph::network::ROI_FEATURES;
use crate::graph::{Elem, export_weights};
use crate::manifest::{
    BUNDLE_FORMAT, CONTRACT_VERSION, DEFAULT_WINDOW_OVERLAP, ID_HEAD_GRAPH, IdentificationSection,
    InferenceSection, MAIN_GRAPH, Manifest, ModelSection, Provenance, rfc3339_utc,
};
use crate::roi::{EXTENT_UNIT_MM, RoiAlignParams};
use crate::signing::SecretKey;
use crate::{Error, Result};

/// What goes into a bundle besides the weights.
#[derive(Debug, Clone)]
pub struct BundleOptions {
    /// Model name for the manifest.
    pub name: String,
    /// Weight/compute precision.
    pub precision: Elem,
    /// Sliding-window overlap in `[0, 1)`.
    pub window_overlap: f64,
    /// Git commit of the code (or "unknown").
    pub git_commit: String,
    /// Training configuration file to embed.
    pub training_config: Option<PathBuf>,
    /// Dataset manifest whose sha256 is recorded.
    pub dataset_manifest: Option<PathBuf>,
    /// Training seed.
    pub seed: Option<u64>,
    /// Evaluation metrics.
    pub metrics: Option<BTreeMap<String, f64>>,
    /// Key to sign with (else the bundle stays unsigned; `vertebra-export sign` later).
    pub key: Option<PathBuf>,
}

impl Default for BundleOptions {
    fn default() -> Self {
        Self {
            name: "vertebraformer".into(),
            precision: Elem::F32,
            window_overlap: DEFAULT_WINDOW_OVERLAP,
            git_commit: "unknown".into(),
            training_config: None,
            dataset_manifest: None,
            seed: None,
            metrics: None,
            key: None,
        }
    }
}

/// Exports `weights` into the new or empty directory `out` and returns the manifest written.
///
/// # Errors
/// Export errors ([`crate::graph::export_weights`]), [`Error::Other`] for a non-empty `out` or
/// a bad overlap, I/O and key errors.
pub fn write_bundle(weights: &Path, out: &Path, opts: &BundleOptions) -> Result<Manifest> {
    if !(0.0..1.0).contains(&opts.window_overlap) {
        return Err(Error::Other(format!(
            "window overlap {} must be in [0, 1)",
            opts.window_overlap
        )));
    }
    if out.exists()
        && std::fs::read_dir(out)
            .map_err(Error::io(out))?
            .next()
            .is_some()
    {
        return Err(Error::Other(format!(
            "{} is not empty; a bundle is written into a new directory",
            out.display()
        )));
    }
    let graphs = export_weights(weights, opts.precision)?;
    let cfg = &graphs.config;
    std::fs::create_dir_all(out).map_err(Error::io(out))?;
    let main = out.join(MAIN_GRAPH);
    std::fs::write(&main, &graphs.main).map_err(Error::io(&main))?;
    let mut files = vec![MAIN_GRAPH];
    if let Some(id) = &graphs.id_head {
        let p = out.join(ID_HEAD_GRAPH);
        std::fs::write(&p, id).map_err(Error::io(&p))?;
        files.push(ID_HEAD_GRAPH);
    }
    let contract = cfg.contract();
    let training_config = opts
        .training_config
        .as_ref()
        .map(|p| std::fs::read_to_string(p).map_err(Error::io(p)))
        .transpose()?;
    let dataset_manifest_sha256 = opts
        .dataset_manifest
        .as_deref()
        .map(sha256_file)
        .transpose()?;
    let mut outputs = contract.outputs();
    let mut inputs = contract.inputs();
    // The boxes are not a graph input: RoIAlign runs in Rust between the two graphs.
    inputs.retain(|t| t.name != names::BOXES);
    if cfg.identification_head {
        let [gz, gy, gx] = cfg.token_grid();
        outputs.push(TensorSpec {
            name: ROI_FEATURES.into(),
            dims: vec![
                Dim::Batch,
                Dim::Fixed(cfg.roi_channels),
                Dim::Fixed(gz),
                Dim::Fixed(gy),
                Dim::Fixed(gx),
            ],
            stride: Some(cfg.patch_size),
            labels: vec![],
            meaning: "reduced modulated encoder features that RoIAlign reads (input of the \
                      identification head, not a model result)"
                .into(),
        });
    }
    let mut manifest = Manifest {
        bundle_format: BUNDLE_FORMAT,
        contract_version: CONTRACT_VERSION,
        model: ModelSection {
            name: opts.name.clone(),
            precision: match opts.precision {
                Elem::F32 => "fp32".into(),
                Elem::F16 => "fp16".into(),
            },
            opset: OPSET,
            ir_version: IR_VERSION,
            main_graph: MAIN_GRAPH.into(),
            id_head_graph: graphs.id_head.as_ref().map(|_| ID_HEAD_GRAPH.into()),
        },
        inference: InferenceSection {
            window_overlap: opts.window_overlap,
        },
        contract,
        labels: Manifest::labels(),
        identification: cfg.identification_head.then(|| IdentificationSection {
            features_output: ROI_FEATURES.into(),
            roi_align: RoiAlignParams {
                stride: cfg.patch_size,
                output: cfg.roi_output,
                sampling: cfg.roi_sampling,
            },
            spacing_mm: cfg.spacing_mm,
            extent_unit_mm: EXTENT_UNIT_MM,
        }),
        inputs,
        outputs,
        provenance: Provenance {
            git_commit: opts.git_commit.clone(),
            model_config: serde_json::to_string(cfg).map_err(|e| Error::Other(e.to_string()))?,
            training_config,
            dataset_manifest_sha256,
            seed: opts.seed,
            weights_sha256: sha256_file(weights)?,
            metrics: opts.metrics.clone(),
            created_utc: rfc3339_utc(std::time::SystemTime::now()),
        },
        files: BTreeMap::new(),
    };
    write_manifest(out, &mut manifest, &files)?;
    if let Some(key) = &opts.key {
        sign_bundle(out, &SecretKey::read(key)?)?;
    }
    Ok(manifest)
}

/// Packs `dir` into `DIR.tar` next to it and returns the tar's path.
///
/// # Errors
/// See [`write_tar`].
pub fn pack(dir: &Path) -> Result<PathBuf> {
    let mut tar = dir.as_os_str().to_owned();
    tar.push(".tar");
    let tar = PathBuf::from(tar);
    write_tar(dir, &tar)?;
    Ok(tar)
}
