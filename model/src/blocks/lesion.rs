//! CenterNet-style lesion head (paper Eq. 8): per-class centre heatmap logits, 3-D sub-cell
//! offsets and 3-D log-sizes on the decoder level of stride `lesion_stride` (4 in every
//! preset: 4 mm cells at 1 mm, fine enough for the 5 mm NMS radius, coarse enough that a
//! lesion's Gaussian covers a few cells).
//!
//! A shared 3×3×3 ConvNormAct trunk feeds three 1×1×1 convolutions. The heatmap bias starts at
//! −ln((1 − π)/π) with π = 0.1, CenterNet's prior, so the focal loss does not start from a
//! flood of false positives. Units are in the contract ([`vertebra_core::contract`]).

use burn::module::{Module, Param};
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::tensor::{Device, Tensor};
use vertebra_core::contract::NUM_LESION_CHANNELS;

use super::conv_block::{ConvKind, ConvNormAct};

/// Prior probability of a lesion centre used for the heatmap bias.
pub const HEATMAP_PRIOR: f64 = 0.1;

/// The three lesion outputs, all on the stride-s grid.
#[derive(Debug, Clone)]
pub struct LesionOutput {
    /// Centre heatmap logits `[B, 4, ·, ·, ·]`.
    pub heatmap_logits: Tensor<5>,
    /// Sub-cell offsets `(z, y, x)` `[B, 3, ·, ·, ·]`.
    pub offset: Tensor<5>,
    /// ln(extent in input voxels) `(z, y, x)` `[B, 3, ·, ·, ·]`.
    pub log_size: Tensor<5>,
}

/// Trunk + heatmap/offset/size convolutions.
#[derive(Module, Debug)]
pub struct LesionHead {
    /// Shared 3×3×3 trunk.
    pub trunk: ConvNormAct,
    /// 1×1×1 → 4 heatmap logits.
    pub heatmap: Conv3d,
    /// 1×1×1 → 3 offsets.
    pub offset: Conv3d,
    /// 1×1×1 → 3 log-sizes.
    pub log_size: Conv3d,
}

impl LesionHead {
    /// A head reading `channels_in` decoder channels.
    pub fn new(channels_in: usize, hidden: usize, device: &Device) -> Self {
        let point = |out| Conv3dConfig::new([hidden, out], [1, 1, 1]).init(device);
        let mut heatmap = point(NUM_LESION_CHANNELS);
        let prior_bias = -((1.0 - HEATMAP_PRIOR) / HEATMAP_PRIOR).ln();
        heatmap.bias = Some(Param::from_tensor(
            Tensor::<1>::ones([NUM_LESION_CHANNELS], device).mul_scalar(prior_bias),
        ));
        Self {
            trunk: ConvNormAct::new(ConvKind::Same3, channels_in, hidden, device),
            heatmap,
            offset: point(3),
            log_size: point(3),
        }
    }

    /// Decoder features `[B, c, Z/s, Y/s, X/s]` → the three outputs on the same grid.
    pub fn forward(&self, features: Tensor<5>) -> LesionOutput {
        let t = self.trunk.forward(features);
        LesionOutput {
            heatmap_logits: self.heatmap.forward(t.clone()),
            offset: self.offset.forward(t.clone()),
            log_size: self.log_size.forward(t),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::test_util::{device, random};

    #[test]
    fn shapes_and_prior() {
        let dev = device();
        let head = LesionHead::new(6, 4, &dev);
        let out = head.forward(random([2, 6, 4, 4, 2], &dev));
        assert_eq!(out.heatmap_logits.dims(), [2, 4, 4, 4, 2]);
        assert_eq!(out.offset.dims(), [2, 3, 4, 4, 2]);
        assert_eq!(out.log_size.dims(), [2, 3, 4, 4, 2]);
        let bias = head.heatmap.bias.as_ref().unwrap().val();
        let b = bias.into_data().try_to_vec::<f32>().unwrap();
        assert!(b.iter().all(|v| (v + 2.197_225).abs() < 1e-5), "{b:?}");
    }
}
