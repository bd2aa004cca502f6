//! Patch embedding: cut the window into non-overlapping P³ patches, project each linearly to d,
//! add a learnable 3-D positional embedding (paper Eq. 4).
//!
//! The projection is a Conv3d with kernel = stride = P. That is exactly `Linear(Flatten(p_i))`
//! (the weight `[d, 1, P, P, P]` is the Linear's `[P³, d]` matrix transposed and reshaped,
//! patch voxels in z, y, x order), written as a convolution because it needs no patch
//! rearrangement and exports to ONNX as one Conv.

use burn::module::{Module, Param};
use burn::nn::Initializer;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::tensor::{Device, Tensor};

/// Standard deviation of the positional embedding's initialisation (ViT's).
const POS_INIT_STD: f64 = 0.02;

/// Linear patch projection + learnable positional embedding.
#[derive(Module, Debug)]
pub struct PatchEmbed {
    /// Patch projection, weight `[d, 1, P, P, P]`, bias `[d]`.
    pub proj: Conv3d,
    /// Positional embedding `[1, N, d]`, one learned vector per token position.
    pub pos: Param<Tensor<3>>,
}

impl PatchEmbed {
    /// A patch embedding for `num_tokens` patches of side `patch` and width `d`.
    pub fn new(patch: usize, d: usize, num_tokens: usize, device: &Device) -> Self {
        Self {
            proj: Conv3dConfig::new([1, d], [patch; 3])
                .with_stride([patch; 3])
                .init(device),
            pos: Initializer::Normal {
                mean: 0.0,
                std: POS_INIT_STD,
            }
            .init([1, num_tokens, d], device),
        }
    }

    /// Patch embeddings without position: `[B, 1, Z, Y, X]` → `[B, N, d]`, tokens in z, y, x
    /// raster order of the patch grid. The domain classifier reads these (image statistics,
    /// not positions).
    pub fn project(&self, image: Tensor<5>) -> Tensor<3> {
        let x = self.proj.forward(image);
        let [b, d, gz, gy, gx] = x.dims();
        x.reshape([b, d, gz * gy * gx]).swap_dims(1, 2)
    }

    /// Adds the positional embedding to projected patches: `[B, N, d]` → `[B, N, d]`.
    pub fn add_position(&self, patches: Tensor<3>) -> Tensor<3> {
        patches + self.pos.val()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::test_util::{device, random};
    use crate::blocks::tokens_to_volume;

    #[test]
    fn shapes_and_token_order() {
        let dev = device();
        let embed = PatchEmbed::new(8, 12, 4 * 2 * 3, &dev);
        let image = random([2, 1, 32, 16, 24], &dev);
        let patches = embed.project(image.clone());
        assert_eq!(patches.dims(), [2, 24, 12]);
        assert_eq!(embed.add_position(patches.clone()).dims(), [2, 24, 12]);
        // Token order round-trips to the conv's own grid layout.
        let direct = embed.proj.forward(image);
        let back = tokens_to_volume(patches, [4, 2, 3]);
        let diff = (direct - back).abs().max().into_scalar::<f32>();
        assert_eq!(diff, 0.0);
    }
}
