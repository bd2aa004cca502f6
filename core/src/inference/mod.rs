//! Inference orchestration that does not depend on how the network runs: preprocessing to
//! the contract ([`prepare`]), coarse spine localisation ([`localize`]), overlapping windows
//! with Gaussian blending and identification windows ([`window`]), then core's
//! post-processing. The trainer (Burn) and the appliance (ONNX Runtime) implement
//! [`Network`] and call [`infer_prepared`]: one code path, so the appliance's findings are the
//! trainer's evaluation's findings for the same weights.

pub mod localize;
pub mod prepare;
pub mod window;

use std::time::Instant;

pub use localize::{LocateConfig, SpineLocalization, locate_spine};
pub use prepare::{prepare_ct, prepare_for_contract, prepare_labels};
pub use window::{
    IdWindow, StitchedOutputs, VoxelRegion, WindowOutputs, WindowPlan, cut_window,
    gaussian_weights, id_window, stitch, window_starts,
};

use crate::postprocess::{CaseFindings, PostprocessConfig, extract_instances, findings, softmax};
use crate::volume::ops::denormalize_hu_volume;
use crate::{Error, Volume};

/// A network as the sliding window needs it.
pub trait Network {
    /// The runner's error type.
    type Error: From<Error>;

    /// Window `(z, y, x)` in voxels.
    fn window(&self) -> [usize; 3];

    /// Lesion stride (1 without a lesion head).
    fn lesion_stride(&self) -> usize;

    /// Whether the network has an identification head.
    fn has_id_head(&self) -> bool;

    /// Dense outputs of `b` windows `[b, 1, wz, wy, wx]` (see [`WindowOutputs`]).
    ///
    /// # Errors
    /// The runner's.
    fn forward(&mut self, windows: &[f32], b: usize) -> Result<WindowOutputs, Self::Error>;

    /// Identification logits (25) of one instance box in one window `[1, 1, wz, wy, wx]`.
    ///
    /// # Errors
    /// The runner's.
    fn identify(&mut self, window: &[f32], id: &IdWindow) -> Result<Vec<f32>, Self::Error>;
}

/// Settings of [`infer_prepared`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct InferenceConfig {
    /// Fraction of a window shared with its neighbour, in [0, 1).
    pub overlap: f64,
    /// Windows per forward pass.
    pub batch: usize,
    /// Restrict windows to the located spine (`None`: the whole volume).
    pub localize: Option<LocateConfig>,
    /// Use the identification head (when the network has one) instead of label votes.
    pub use_id_head: bool,
    /// Post-processing settings.
    pub postprocess: PostprocessConfig,
}

impl Default for InferenceConfig {
    fn default() -> Self {
        Self {
            overlap: 0.5,
            batch: 2,
            localize: Some(LocateConfig::default()),
            use_id_head: true,
            postprocess: PostprocessConfig::default(),
        }
    }
}

/// Seconds spent per stage of [`infer_prepared`].
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize, serde::Deserialize)]
pub struct InferenceTimings {
    /// Spine localisation.
    pub localize_s: f64,
    /// Sliding-window network passes and blending.
    pub windows_s: f64,
    /// Identification-head passes.
    pub identification_s: f64,
    /// Instances, decoding, lesions, measurements.
    pub postprocess_s: f64,
}

/// The result of [`infer_prepared`].
#[derive(Debug, Clone, PartialEq)]
pub struct Inference {
    /// Stitched outputs.
    pub outputs: StitchedOutputs,
    /// Post-processed findings.
    pub findings: CaseFindings,
    /// Identification-head probabilities per instance (cranio-caudal), if the head was used.
    pub id_head_probabilities: Option<Vec<Vec<f64>>>,
    /// The spine localisation, if it ran.
    pub localization: Option<SpineLocalization>,
    /// Time per stage.
    pub timings: InferenceTimings,
}

/// Sliding-window inference and post-processing of one prepared image (normalised, on the
/// contract's grid; see [`prepare`]). The core density of the measurements uses the image
/// mapped back to HU (clipped to the HU window).
///
/// # Errors
/// The network's errors; core errors (converted).
pub fn infer_prepared<N: Network>(
    net: &mut N,
    image: &Volume<f32>,
    config: &InferenceConfig,
) -> Result<Inference, N::Error> {
    let t0 = Instant::now();
    let localization = match &config.localize {
        Some(c) => Some(locate_spine(image, c)?),
        None => None,
    };
    let region = localization.as_ref().and_then(|l| l.region);
    let plan = WindowPlan::new(
        image.dims(),
        net.window(),
        net.lesion_stride(),
        config.overlap,
        region,
    )?;
    let t1 = Instant::now();
    let outputs = stitch(image, &plan, config.batch, |x, b| net.forward(x, b))?;
    let t2 = Instant::now();
    let instances = extract_instances(
        &outputs.dense.foreground_prob,
        &outputs.dense.label_argmax,
        &config.postprocess.instances,
    )?;
    let id = if config.use_id_head && net.has_id_head() {
        let window = net.window();
        let mut rows = Vec::with_capacity(instances.instances.len());
        for inst in &instances.instances {
            let (lo, hi) = inst.edge_box_zyx();
            let w = id_window(lo, hi, image.dims(), window);
            let cut = cut_window(image, w.start_xyz, window);
            rows.push(softmax(&net.identify(&cut, &w)?));
        }
        Some(rows)
    } else {
        None
    };
    let t3 = Instant::now();
    let hu = denormalize_hu_volume(image)?;
    let findings = findings(
        instances,
        id.as_deref(),
        outputs.lesions.as_ref(),
        Some(&hu),
        &config.postprocess,
    )?;
    let t4 = Instant::now();
    Ok(Inference {
        outputs,
        findings,
        id_head_probabilities: id,
        localization,
        timings: InferenceTimings {
            localize_s: (t1 - t0).as_secs_f64(),
            windows_s: (t2 - t1).as_secs_f64(),
            identification_s: (t3 - t2).as_secs_f64(),
            postprocess_s: (t4 - t3).as_secs_f64(),
        },
    })
}
