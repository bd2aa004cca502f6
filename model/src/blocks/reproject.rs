//! UNETR-style re-projection of encoder tokens to a feature volume at one of the decoder's
//! scales.
//!
//! With P = 8 the tokens sit at 1/8 of the input. The paper's three scales are one resampling
//! step away: 1/4 by a 2×2×2 transposed convolution, 1/8 by a 1×1×1 convolution, 1/16 by a
//! 2×2×2 stride-2 convolution; each is followed by InstanceNorm + LeakyReLU. (UNETR stacks
//! several deconvolutions because its P = 16 puts the tokens further from the skips' scales.)

use burn::module::Module;
use burn::nn::conv::{Conv3d, ConvTranspose3d, ConvTranspose3dConfig};
use burn::nn::{InstanceNorm, InstanceNormConfig};
use burn::tensor::activation::leaky_relu;
use burn::tensor::{Device, Tensor};

use super::conv_block::{ConvKind, LEAKY_SLOPE};

/// Where a re-projection takes the token grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rescale {
    /// 2× finer (tokens at 1/8 → 1/4).
    Up2,
    /// Same grid (1/8).
    Same,
    /// 2× coarser (1/8 → 1/16).
    Down2,
}

impl Rescale {
    /// Output size along an axis of `n` tokens.
    pub fn out_size(self, n: usize) -> usize {
        match self {
            Rescale::Up2 => n * 2,
            Rescale::Same => n,
            Rescale::Down2 => n / 2,
        }
    }
}

/// Token volume `[B, d, g, g, g]` → `[B, c, g', g', g']` at another scale.
#[derive(Module, Debug)]
pub struct TapProjection {
    /// Transposed convolution (present for [`Rescale::Up2`]), weight `[d, c, 2, 2, 2]`.
    pub up: Option<ConvTranspose3d>,
    /// Convolution (present for [`Rescale::Same`] and [`Rescale::Down2`]).
    pub conv: Option<Conv3d>,
    /// Instance norm after the resampling.
    pub norm: InstanceNorm,
}

impl TapProjection {
    /// A projection from `d` token channels to `c` channels.
    pub fn new(rescale: Rescale, d: usize, c: usize, device: &Device) -> Self {
        let (up, conv) = match rescale {
            Rescale::Up2 => (
                Some(
                    ConvTranspose3dConfig::new([d, c], [2, 2, 2])
                        .with_stride([2, 2, 2])
                        .with_bias(false)
                        .init(device),
                ),
                None,
            ),
            Rescale::Same => (None, Some(ConvKind::Point.conv(d, c, device))),
            Rescale::Down2 => (None, Some(ConvKind::Down2.conv(d, c, device))),
        };
        Self {
            up,
            conv,
            norm: InstanceNormConfig::new(c).init(device),
        }
    }

    /// `[B, d, gz, gy, gx]` → `[B, c, ·, ·, ·]`.
    pub fn forward(&self, x: Tensor<5>) -> Tensor<5> {
        let x = match (&self.up, &self.conv) {
            (Some(up), _) => up.forward(x),
            (None, Some(conv)) => conv.forward(x),
            (None, None) => x,
        };
        leaky_relu(self.norm.forward(x), LEAKY_SLOPE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::test_util::{device, random};

    #[test]
    fn shapes() {
        let dev = device();
        let x = random([2, 12, 4, 4, 2], &dev);
        for (r, dims) in [
            (Rescale::Up2, [2, 6, 8, 8, 4]),
            (Rescale::Same, [2, 6, 4, 4, 2]),
            (Rescale::Down2, [2, 6, 2, 2, 1]),
        ] {
            assert_eq!(
                TapProjection::new(r, 12, 6, &dev).forward(x.clone()).dims(),
                dims
            );
            assert_eq!(r.out_size(4), dims[2]);
        }
    }
}
