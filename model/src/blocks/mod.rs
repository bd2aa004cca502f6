//! The network's building blocks, one small module each, in data-flow order.
//!
//! Every block documents its input and output shapes and has a shape test next to it. Names of
//! the fields are the names of the weights in the safetensors file (see [`crate::weights`]):
//! renaming a field breaks every exported model, so don't.

pub mod conv_block;
pub mod decoder;
pub mod domain;
pub mod encoder;
pub mod identification;
pub mod lesion;
pub mod modulation;
pub mod patch_embed;
pub mod reproject;
pub mod roi_align;

use burn::tensor::Tensor;

/// Tokens `[B, N, d]` → feature volume `[B, d, gz, gy, gx]` (token `n` is at
/// `n = (z · gy + y) · gx + x`, the order [`patch_embed::PatchEmbed`] produces).
pub fn tokens_to_volume(tokens: Tensor<3>, grid: [usize; 3]) -> Tensor<5> {
    let [b, _, d] = tokens.dims();
    tokens
        .swap_dims(1, 2)
        .reshape([b, d, grid[0], grid[1], grid[2]])
}

#[cfg(test)]
pub(crate) mod test_util {
    use burn::tensor::{Device, Distribution, Tensor};

    /// The flex CPU device all tests run on.
    pub fn device() -> Device {
        Device::flex()
    }

    /// A seeded random tensor.
    pub fn random<const D: usize>(shape: [usize; D], device: &Device) -> Tensor<D> {
        Tensor::random(shape, Distribution::Normal(0.0, 1.0), device)
    }
}
