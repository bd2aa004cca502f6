//! Conv → InstanceNorm → LeakyReLU, the convolutional unit of the decoder, the stem and the
//! heads (UNETR/nnU-Net style).
//!
//! The convolution has no bias: the instance norm that follows removes any per-channel
//! constant, so a bias would be a parameter that never receives a gradient.

use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{InstanceNorm, InstanceNormConfig, PaddingConfig3d};
use burn::tensor::activation::leaky_relu;
use burn::tensor::{Device, Tensor};

/// Negative slope of the LeakyReLU (nnU-Net's).
pub const LEAKY_SLOPE: f64 = 0.01;

/// Conv3d (no bias) + InstanceNorm (affine) + LeakyReLU(0.01).
#[derive(Module, Debug)]
pub struct ConvNormAct {
    /// The convolution, weight `[out, in, k, k, k]`.
    pub conv: Conv3d,
    /// Per-channel instance normalisation.
    pub norm: InstanceNorm,
}

/// Kernel/stride layouts used in this network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConvKind {
    /// 3×3×3, stride 1, zero padding 1: keeps the size.
    Same3,
    /// 1×1×1: keeps the size.
    Point,
    /// 2×2×2, stride 2: halves the size.
    Down2,
}

impl ConvKind {
    /// Kernel side.
    pub fn kernel(self) -> usize {
        match self {
            ConvKind::Same3 => 3,
            ConvKind::Point => 1,
            ConvKind::Down2 => 2,
        }
    }

    /// Output size for an input of `n` voxels along an axis.
    pub fn out_size(self, n: usize) -> usize {
        match self {
            ConvKind::Same3 | ConvKind::Point => n,
            ConvKind::Down2 => n / 2,
        }
    }

    /// A bias-free Conv3d of this layout.
    pub fn conv(self, channels_in: usize, channels_out: usize, device: &Device) -> Conv3d {
        let k = self.kernel();
        let (stride, padding) = match self {
            ConvKind::Same3 => (1, PaddingConfig3d::Explicit(1, 1, 1)),
            ConvKind::Point => (1, PaddingConfig3d::Valid),
            ConvKind::Down2 => (2, PaddingConfig3d::Valid),
        };
        Conv3dConfig::new([channels_in, channels_out], [k, k, k])
            .with_stride([stride; 3])
            .with_padding(padding)
            .with_bias(false)
            .init(device)
    }
}

impl ConvNormAct {
    /// A block mapping `channels_in` to `channels_out` with the given layout.
    pub fn new(kind: ConvKind, channels_in: usize, channels_out: usize, device: &Device) -> Self {
        Self {
            conv: kind.conv(channels_in, channels_out, device),
            norm: InstanceNormConfig::new(channels_out).init(device),
        }
    }

    /// `[B, in, Z, Y, X]` → `[B, out, Z', Y', X']` (Z' = Z, or Z/2 for [`ConvKind::Down2`]).
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        leaky_relu(self.norm.forward(self.conv.forward(x)), LEAKY_SLOPE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::test_util::{device, random};

    #[test]
    fn shapes() {
        let dev = device();
        let x = random([2, 3, 8, 6, 4], &dev);
        for (kind, dims) in [
            (ConvKind::Same3, [2, 5, 8, 6, 4]),
            (ConvKind::Point, [2, 5, 8, 6, 4]),
            (ConvKind::Down2, [2, 5, 4, 3, 2]),
        ] {
            let block = ConvNormAct::new(kind, 3, 5, &dev);
            assert_eq!(block.forward(x.clone()).dims(), dims);
            assert_eq!(kind.out_size(8), dims[2]);
            assert!(block.conv.bias.is_none());
        }
    }
}
