//! Dynamic modulation (paper Eq. 9–11): gate encoder features by the effective domain
//! embedding, per channel and per position.
//!
//! - Channel gate: `a_c = sigmoid(FC(e))`, one weight per feature channel.
//! - Spatial gate: `a_s = sigmoid(Conv(reshape(e)))`. **Our reading of `reshape(e_d)`:** the
//!   domain embedding of width d_c = c_e · s³ is reshaped into a small volume of c_e channels on
//!   an s³ grid (channel-major, then z, y, x); a 3×3×3 convolution (c_e → 1, padding 1) turns it
//!   into an s³ map of gate logits, which is broadcast to the token grid by nearest-neighbour
//!   up-sampling (each coarse cell covers a (g/s)³ block of tokens). The gate is thus a coarse,
//!   domain-specific spatial prior over the window (e.g. a field-of-view or coil-shading
//!   pattern of a site), which is all a function of e_d alone can express; it costs s³ values
//!   and exports as Reshape/Conv/Expand.
//! - `F_mod = F ⊙ (a_c ⊗ 1_N) ⊙ broadcast(a_s)`.

use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig};
use burn::nn::{Linear, LinearConfig, PaddingConfig3d};
use burn::tensor::activation::sigmoid;
use burn::tensor::{Device, Tensor};

/// Channel and spatial gates driven by a domain embedding.
#[derive(Module, Debug)]
pub struct DynamicModulation {
    /// FC_c: d_c → d, the channel gate.
    pub channel_fc: Linear,
    /// Conv_s: c_e → 1, 3×3×3 on the reshaped embedding, the spatial gate.
    pub spatial_conv: Conv3d,
    /// Channels c_e of the reshaped embedding.
    pub domain_channels: usize,
    /// Grid side s of the reshaped embedding.
    pub gate_grid: usize,
}

impl DynamicModulation {
    /// Gates for `d` feature channels from embeddings of `c_e · s³` values.
    pub fn new(d: usize, domain_channels: usize, gate_grid: usize, device: &Device) -> Self {
        Self {
            channel_fc: LinearConfig::new(domain_channels * gate_grid.pow(3), d).init(device),
            spatial_conv: Conv3dConfig::new([domain_channels, 1], [3, 3, 3])
                .with_padding(PaddingConfig3d::Explicit(1, 1, 1))
                .init(device),
            domain_channels,
            gate_grid,
        }
    }

    /// Channel gate `[B, d]` in (0, 1).
    pub fn channel_gate(&self, e: Tensor<2>) -> Tensor<2> {
        sigmoid(self.channel_fc.forward(e))
    }

    /// Spatial gate on the token grid, `[B, N]` in (0, 1), tokens in z, y, x raster order.
    /// `grid` must be a multiple of the gate grid (checked by the config).
    pub fn spatial_gate(&self, e: Tensor<2>, grid: [usize; 3]) -> Tensor<2> {
        let [b, _] = e.dims();
        let s = self.gate_grid;
        let coarse = self
            .spatial_conv
            .forward(e.reshape([b, self.domain_channels, s, s, s]));
        let [fz, fy, fx] = grid.map(|g| g / s);
        let fine = coarse
            .reshape([b, s, 1, s, 1, s, 1])
            .expand([b, s, fz, s, fy, s, fx])
            .reshape([b, grid[0] * grid[1] * grid[2]]);
        sigmoid(fine)
    }

    /// `F [B, N, d]`, `e [B, d_c]` → `F ⊙ a_c ⊙ a_s`, `[B, N, d]`.
    pub fn forward(&self, features: Tensor<3>, e: Tensor<2>, grid: [usize; 3]) -> Tensor<3> {
        let [b, n, d] = features.dims();
        let a_c = self.channel_gate(e.clone()).reshape([b, 1, d]);
        let a_s = self.spatial_gate(e, grid).reshape([b, n, 1]);
        features * a_c * a_s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::test_util::{device, random};

    #[test]
    fn shapes_and_gate_layout() {
        let dev = device();
        let m = DynamicModulation::new(6, 3, 2, &dev);
        let e = random([2, 24], &dev);
        let f = random([2, 4 * 4 * 2, 6], &dev);
        assert_eq!(
            m.forward(f.clone(), e.clone(), [4, 4, 2]).dims(),
            [2, 32, 6]
        );
        assert_eq!(m.channel_gate(e.clone()).dims(), [2, 6]);
        let gate = m.spatial_gate(e, [4, 4, 2]);
        assert_eq!(gate.dims(), [2, 32]);
        // Nearest up-sampling: tokens (z=0,y=0,x=0) and (z=1,y=1,x=0) share coarse cell 0;
        // token (z=2, y=0, x=0) lies in another coarse cell along z.
        let g = gate.into_data().try_to_vec::<f32>().unwrap();
        let at = |z: usize, y: usize, x: usize| g[(z * 4 + y) * 2 + x];
        assert_eq!(at(0, 0, 0), at(1, 1, 0));
        assert_ne!(at(0, 0, 0), at(2, 0, 0));
        assert!(g.iter().all(|v| *v > 0.0 && *v < 1.0));
    }
}
