//! Sliding-window inference of a [`VertebraFormer`] over a [`PreparedCase`] through core's
//! inference code path (`vertebra_core::inference`: spine localisation, windows, Gaussian
//! blending, identification windows, post-processing) — the path the appliance runs with ONNX
//! Runtime. This module only adapts the Burn network to [`Network`].
//!
//! The domain code (test-time studies) enters as a one-hot `domain_mix` for every window.

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use vertebra_core::inference::{
    IdWindow, InferenceConfig, LocateConfig, Network, WindowOutputs, WindowPlan, infer_prepared,
    stitch,
};
use vertebra_core::postprocess::PostprocessConfig;
use vertebra_model::blocks::roi_align::RoiBox;
use vertebra_model::{VertebraFormer, VertebraFormerInput};

pub use vertebra_core::inference::{Inference, StitchedOutputs};

use crate::preprocess::PreparedCase;
use crate::{Error, Result};

/// Settings of [`infer_case`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InferConfig {
    /// Fraction of a window shared with its neighbour, in [0, 1).
    pub overlap: f64,
    /// Windows per forward pass.
    pub batch: usize,
    /// Restrict the windows to the located spine (`None`: the whole volume).
    pub localize: Option<LocateConfig>,
    /// Use the identification head (when the network has one) instead of label votes.
    pub use_id_head: bool,
    /// Post-processing settings.
    pub postprocess: PostprocessConfig,
    /// Domain code fed to the dynamic modulation: an index into the model's domain list
    /// (a one-hot `domain_mix`), or `None` for the model's own domain classifier.
    pub domain_code: Option<usize>,
}

impl Default for InferConfig {
    fn default() -> Self {
        let c = InferenceConfig::default();
        InferConfig {
            overlap: c.overlap,
            batch: c.batch,
            localize: c.localize,
            use_id_head: c.use_id_head,
            postprocess: c.postprocess,
            domain_code: None,
        }
    }
}

impl InferConfig {
    /// Core's settings.
    pub fn core(&self) -> InferenceConfig {
        InferenceConfig {
            overlap: self.overlap,
            batch: self.batch,
            localize: self.localize,
            use_id_head: self.use_id_head,
            postprocess: self.postprocess,
        }
    }
}

/// A Burn network on a plain device as core's [`Network`].
struct BurnNetwork<'a> {
    model: &'a VertebraFormer,
    device: &'a Device,
    domain_code: Option<usize>,
}

fn to_vec(t: Tensor<5>) -> Result<Vec<f32>> {
    t.into_data()
        .try_to_vec::<f32>()
        .map_err(|e| Error::InvalidArgument(format!("network output is not f32: {e:?}")))
}

impl Network for BurnNetwork<'_> {
    type Error = Error;

    fn window(&self) -> [usize; 3] {
        self.model.window
    }

    fn lesion_stride(&self) -> usize {
        lesion_stride(self.model)
    }

    fn has_id_head(&self) -> bool {
        self.model.identification.is_some()
    }

    fn forward(&mut self, windows: &[f32], b: usize) -> Result<WindowOutputs> {
        let w = self.model.window;
        let t = Tensor::<5>::from_data(
            TensorData::new(windows.to_vec(), [b, 1, w[0], w[1], w[2]]),
            self.device,
        );
        let out = self.model.forward(VertebraFormerInput {
            image: t,
            boxes: Vec::new(),
            domain_mix: domain_mix(self.model, self.domain_code, b, self.device)?,
        })?;
        let lesion = match (
            out.lesion_heatmap_logits,
            out.lesion_offset,
            out.lesion_log_size,
        ) {
            (Some(h), Some(o), Some(l)) => Some((to_vec(h)?, to_vec(o)?, to_vec(l)?)),
            _ => None,
        };
        Ok(WindowOutputs {
            vertebra_logit: to_vec(out.vertebra_logit)?,
            label_logits: to_vec(out.label_logits)?,
            lesion,
        })
    }

    fn identify(&mut self, window: &[f32], id: &IdWindow) -> Result<Vec<f32>> {
        let w = self.model.window;
        let t = Tensor::<5>::from_data(
            TensorData::new(window.to_vec(), [1, 1, w[0], w[1], w[2]]),
            self.device,
        );
        let input = VertebraFormerInput {
            image: t,
            boxes: vec![RoiBox {
                batch: 0,
                min: id.min,
                max: id.max,
            }],
            domain_mix: domain_mix(self.model, self.domain_code, 1, self.device)?,
        };
        let logits = self
            .model
            .forward(input)?
            .id_logits
            .ok_or_else(|| Error::InvalidArgument("the network gave no id_logits".into()))?;
        logits
            .into_data()
            .try_to_vec::<f32>()
            .map_err(|e| Error::InvalidArgument(format!("id_logits are not f32: {e:?}")))
    }
}

fn check_device(device: &Device) -> Result<()> {
    if device.is_autodiff() {
        return Err(Error::InvalidArgument(
            "inference runs on a plain (non-autodiff) device".into(),
        ));
    }
    Ok(())
}

/// Runs the network over the whole case in overlapping windows and stitches the outputs onto
/// the prepared grid (no localisation, no post-processing).
///
/// # Errors
/// An autodiff `device` (inference runs on a plain device), an overlap outside [0, 1), a
/// network error.
pub fn sliding_window(
    model: &VertebraFormer,
    case: &PreparedCase,
    device: &Device,
    config: &InferConfig,
) -> Result<StitchedOutputs> {
    check_device(device)?;
    let model = model.valid();
    let mut net = BurnNetwork {
        model: &model,
        device,
        domain_code: config.domain_code,
    };
    let plan = WindowPlan::new(
        case.image.dims(),
        model.window,
        lesion_stride(&model),
        config.overlap,
        None,
    )?;
    stitch(&case.image, &plan, config.batch, |x, b| net.forward(x, b))
}

/// The lesion stride of a network: the window over the lesion level's size (1 without a
/// lesion head).
fn lesion_stride(model: &VertebraFormer) -> usize {
    // Decoder stages are at 1/8, 1/4, 1/2, 1/1 (see vertebra_model::model).
    1usize << (3 - model.lesion_level.min(3))
}

/// The `domain_mix` input for `batch` windows under `code` (see [`InferConfig::domain_code`]).
fn domain_mix(
    model: &VertebraFormer,
    code: Option<usize>,
    batch: usize,
    device: &Device,
) -> Result<Option<Tensor<2>>> {
    let Some(d) = code else { return Ok(None) };
    let n = model
        .domain
        .as_ref()
        .map(|g| g.prototypes.val().dims()[0])
        .ok_or_else(|| {
            Error::InvalidArgument(
                "a domain code was given but the network has no dynamic modulation".into(),
            )
        })?;
    if d >= n {
        return Err(Error::InvalidArgument(format!(
            "domain code {d} outside the network's {n} domains"
        )));
    }
    let mut v = vec![0.0f32; batch * n];
    for row in v.chunks_mut(n) {
        row[d] = 1.0;
    }
    Ok(Some(Tensor::from_data(
        TensorData::new(v, [batch, n]),
        device,
    )))
}

/// Sliding-window inference and post-processing of one case through
/// [`vertebra_core::inference::infer_prepared`].
///
/// # Errors
/// As [`sliding_window`]; post-processing errors.
pub fn infer_case(
    model: &VertebraFormer,
    case: &PreparedCase,
    device: &Device,
    config: &InferConfig,
) -> Result<Inference> {
    check_device(device)?;
    let model = model.valid();
    let mut net = BurnNetwork {
        model: &model,
        device,
        domain_code: config.domain_code,
    };
    infer_prepared(&mut net, &case.image, &config.core())
}
