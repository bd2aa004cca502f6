//! Identification head (paper Eq. 7): RoIAlign over the modulated encoder features for each
//! vertebra instance box → MLP → 25 logits (C1..L5, L6).
//!
//! The d-wide token features are first reduced to `roi_channels` by a 1×1×1 ConvNormAct, so the
//! MLP's input (`roi_channels · R³`) stays small at d = 720. Three geometry features are
//! appended: the box extent `(z, y, x)` in units of 100 mm (vertebral bodies grow from ~15 mm
//! at C3 to ~50 mm at L5, a strong cue that RoIAlign's fixed output size would otherwise
//! normalise away). The box position is not used: inside a sliding window it says nothing
//! about the level.

use burn::module::Module;
use burn::nn::{Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::{Device, Tensor, TensorData};
use vertebra_core::contract::NUM_ID_CLASSES;

use super::conv_block::{ConvKind, ConvNormAct};
use super::roi_align::{RoiAlignSpec, RoiBox, roi_align};
use crate::Result;

/// Number of geometry features appended to the RoI features.
pub const GEOMETRY_FEATURES: usize = 3;

/// Millimetres per unit of the extent features.
const EXTENT_UNIT_MM: f32 = 100.0;

/// RoIAlign + MLP classifier.
#[derive(Module, Debug)]
pub struct IdentificationHead {
    /// 1×1×1 reduction d → roi_channels before RoIAlign.
    pub reduce: ConvNormAct,
    /// MLP layer 1: roi_channels·R³ + 3 → hidden.
    pub fc1: Linear,
    /// MLP layer 2: hidden → 25 logits.
    pub fc2: Linear,
    /// Input voxels per feature cell (the patch size).
    pub stride: usize,
    /// RoIAlign bins per axis.
    pub roi_output: usize,
    /// RoIAlign samples per bin per axis.
    pub roi_sampling: usize,
    /// Input spacing in mm (for the extent features).
    pub spacing_mm: f64,
}

impl IdentificationHead {
    /// A head reading `d`-channel features on a grid of stride `stride`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        d: usize,
        roi_channels: usize,
        roi_output: usize,
        roi_sampling: usize,
        hidden: usize,
        stride: usize,
        spacing_mm: f64,
        device: &Device,
    ) -> Self {
        Self {
            reduce: ConvNormAct::new(ConvKind::Point, d, roi_channels, device),
            fc1: LinearConfig::new(roi_channels * roi_output.pow(3) + GEOMETRY_FEATURES, hidden)
                .init(device),
            fc2: LinearConfig::new(hidden, NUM_ID_CLASSES).init(device),
            stride,
            roi_output,
            roi_sampling,
            spacing_mm,
        }
    }

    /// The RoIAlign parameters of this head.
    pub fn spec(&self) -> RoiAlignSpec {
        RoiAlignSpec {
            stride: self.stride,
            output: self.roi_output,
            sampling: self.roi_sampling,
        }
    }

    /// Geometry features `[K, 3]` of the boxes.
    pub fn geometry(&self, boxes: &[RoiBox], device: &Device) -> Tensor<2> {
        let scale = self.spacing_mm as f32 / EXTENT_UNIT_MM;
        let values: Vec<f32> = boxes
            .iter()
            .flat_map(|b| b.extent().map(|e| e * scale))
            .collect();
        Tensor::from_data(
            TensorData::new(values, [boxes.len(), GEOMETRY_FEATURES]),
            device,
        )
    }

    /// The MLP on RoI features `[K, c, R, R, R]` and geometry `[K, 3]` → logits `[K, 25]`.
    pub fn classify(&self, roi: Tensor<5>, geometry: Tensor<2>) -> Tensor<2> {
        let [k, c, r, _, _] = roi.dims();
        let x = Tensor::cat(vec![roi.reshape([k, c * r * r * r]), geometry], 1);
        self.fc2.forward(gelu(self.fc1.forward(x)))
    }

    /// Features `[B, d, gz, gy, gx]` and boxes → logits `[K, 25]` (`None` without boxes).
    ///
    /// # Errors
    /// [`crate::Error::Input`] for invalid boxes.
    pub fn forward(&self, features: Tensor<5>, boxes: &[RoiBox]) -> Result<Option<Tensor<2>>> {
        let device = features.device();
        let reduced = self.reduce.forward(features);
        Ok(roi_align(reduced, boxes, self.spec())?
            .map(|roi| self.classify(roi, self.geometry(boxes, &device))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::test_util::{device, random};

    #[test]
    fn shapes() {
        let dev = device();
        let head = IdentificationHead::new(16, 4, 2, 2, 8, 8, 1.0, &dev);
        let f = random([2, 16, 4, 4, 4], &dev);
        let boxes = [
            RoiBox {
                batch: 0,
                min: [0.0, 4.0, 8.0],
                max: [20.0, 30.0, 31.0],
            },
            RoiBox {
                batch: 1,
                min: [10.0, 10.0, 10.0],
                max: [12.0, 14.0, 16.0],
            },
            RoiBox {
                batch: 1,
                min: [1.0, 1.0, 1.0],
                max: [32.0, 32.0, 32.0],
            },
        ];
        let logits = head.forward(f.clone(), &boxes).unwrap().unwrap();
        assert_eq!(logits.dims(), [3, NUM_ID_CLASSES]);
        assert!(head.forward(f, &[]).unwrap().is_none());
        let g = head
            .geometry(&boxes[1..2], &dev)
            .into_data()
            .try_to_vec::<f32>()
            .unwrap();
        assert_eq!(g, vec![0.02, 0.04, 0.06]);
    }
}
