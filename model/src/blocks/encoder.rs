//! The transformer encoder: L pre-norm layers (MHSA + FFN, paper Eq. 5) whose intermediate
//! outputs are tapped for the multi-scale skips.
//!
//! Our own layer instead of `burn::nn::transformer`: Burn's pre-norm layer names its norms
//! `norm_2` (before attention) and `norm_1` (before the FFN), which would make the weight names
//! the exporter reads misleading; and we use the fused attention kernel
//! ([`burn::tensor::module::attention`], flash attention on flex) so that 4,096 tokens do not
//! materialise a 12 × 4096² score tensor at inference.

use burn::module::Module;
use burn::nn::{Dropout, DropoutConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::activation::gelu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Device, Tensor};

/// Multi-head self-attention with separate q, k, v, output projections (weights `[d, d]`,
/// stored `[in, out]`). The key projection has no bias: adding a constant to every key shifts
/// all of a query's scores equally, which the softmax cancels, so a key bias never learns.
#[derive(Module, Debug)]
pub struct SelfAttention {
    /// Query projection.
    pub query: Linear,
    /// Key projection.
    pub key: Linear,
    /// Value projection.
    pub value: Linear,
    /// Output projection.
    pub output: Linear,
    /// Number of heads.
    pub n_heads: usize,
}

impl SelfAttention {
    /// Self-attention of width `d` with `n_heads` heads (`d % n_heads == 0`, checked by the
    /// config).
    pub fn new(d: usize, n_heads: usize, device: &Device) -> Self {
        let lin = || LinearConfig::new(d, d).init(device);
        Self {
            query: lin(),
            key: LinearConfig::new(d, d).with_bias(false).init(device),
            value: lin(),
            output: lin(),
            n_heads,
        }
    }

    /// `[B, N, d]` → `[B, N, d]`, softmax(QKᵀ/√d_k)V per head.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let [b, n, d] = x.dims();
        let h = self.n_heads;
        let split = |t: Tensor<3>| t.reshape([b, n, h, d / h]).swap_dims(1, 2);
        let q = split(self.query.forward(x.clone()));
        let k = split(self.key.forward(x.clone()));
        let v = split(self.value.forward(x));
        let ctx = attention(q, k, v, None, None, AttentionModuleOptions::default());
        self.output.forward(ctx.swap_dims(1, 2).reshape([b, n, d]))
    }
}

/// One pre-norm transformer layer: `x + Attn(LN(x))`, then `x + FFN(LN(x))`.
#[derive(Module, Debug)]
pub struct EncoderLayer {
    /// Norm before attention.
    pub norm_attn: LayerNorm,
    /// Multi-head self-attention.
    pub attn: SelfAttention,
    /// Norm before the feed-forward block.
    pub norm_ffn: LayerNorm,
    /// FFN expansion d → d_ff.
    pub ffn_in: Linear,
    /// FFN projection d_ff → d.
    pub ffn_out: Linear,
    /// Residual dropout.
    pub dropout: Dropout,
}

impl EncoderLayer {
    /// A layer of width `d`.
    pub fn new(
        d: usize,
        n_heads: usize,
        d_ff: usize,
        eps: f64,
        dropout: f64,
        device: &Device,
    ) -> Self {
        Self {
            norm_attn: LayerNormConfig::new(d).with_epsilon(eps).init(device),
            attn: SelfAttention::new(d, n_heads, device),
            norm_ffn: LayerNormConfig::new(d).with_epsilon(eps).init(device),
            ffn_in: LinearConfig::new(d, d_ff).init(device),
            ffn_out: LinearConfig::new(d_ff, d).init(device),
            dropout: DropoutConfig::new(dropout).init(),
        }
    }

    /// `[B, N, d]` → `[B, N, d]`.
    pub fn forward(&self, x: Tensor<3>) -> Tensor<3> {
        let a = self.attn.forward(self.norm_attn.forward(x.clone()));
        let x = x + self.dropout.forward(a);
        let f = self
            .ffn_out
            .forward(gelu(self.ffn_in.forward(self.norm_ffn.forward(x.clone()))));
        x + self.dropout.forward(f)
    }
}

/// The encoder's tapped outputs.
#[derive(Debug, Clone)]
pub struct EncoderOutput {
    /// Outputs of the three tap layers, shallowest first, each `[B, N, d]` (raw residual
    /// stream, as UNETR taps it).
    pub taps: [Tensor<3>; 3],
    /// Output of the last layer after the final layer norm, `[B, N, d]`.
    pub last: Tensor<3>,
}

/// L encoder layers and the final norm.
#[derive(Module, Debug)]
pub struct Encoder {
    /// The layers, `layers.0` first.
    pub layers: Vec<EncoderLayer>,
    /// Final layer norm (pre-norm stacks need one on their output).
    pub norm: LayerNorm,
    /// 1-based tap layers.
    pub tap_layers: [usize; 3],
}

impl Encoder {
    /// An encoder of `n_layers` layers tapping after `tap_layers` (1-based, increasing, below
    /// `n_layers`; checked by the config).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        d: usize,
        n_layers: usize,
        n_heads: usize,
        d_ff: usize,
        tap_layers: [usize; 3],
        eps: f64,
        dropout: f64,
        device: &Device,
    ) -> Self {
        Self {
            layers: (0..n_layers)
                .map(|_| EncoderLayer::new(d, n_heads, d_ff, eps, dropout, device))
                .collect(),
            norm: LayerNormConfig::new(d).with_epsilon(eps).init(device),
            tap_layers,
        }
    }

    /// `[B, N, d]` tokens → the three taps and the normalised last output.
    pub fn forward(&self, tokens: Tensor<3>) -> EncoderOutput {
        let mut x = tokens;
        let mut taps = Vec::with_capacity(3);
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(x);
            if self.tap_layers.contains(&(i + 1)) {
                taps.push(x.clone());
            }
        }
        let [t0, t1, t2]: [Tensor<3>; 3] = taps
            .try_into()
            .expect("the config guarantees three distinct tap layers below n_layers");
        EncoderOutput {
            taps: [t0, t1, t2],
            last: self.norm.forward(x),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::test_util::{device, random};

    #[test]
    fn shapes_and_taps() {
        let dev = device();
        let enc = Encoder::new(16, 4, 2, 32, [1, 2, 3], 1e-6, 0.0, &dev);
        let x = random([2, 8, 16], &dev);
        let out = enc.forward(x.clone());
        for t in &out.taps {
            assert_eq!(t.dims(), [2, 8, 16]);
        }
        assert_eq!(out.last.dims(), [2, 8, 16]);
        // The first tap is exactly layer 1's output.
        let first = enc.layers[0].forward(x);
        let diff = (first - out.taps[0].clone())
            .abs()
            .max()
            .into_scalar::<f32>();
        assert_eq!(diff, 0.0);
    }

    #[test]
    fn fused_attention_matches_explicit_softmax() {
        let dev = device();
        let attn = SelfAttention::new(8, 2, &dev);
        let x = random([1, 5, 8], &dev);
        let fused = attn.forward(x.clone());
        // Reference: explicit softmax(QKᵀ/√d_k)V.
        let split = |t: Tensor<3>| t.reshape([1, 5, 2, 4]).swap_dims(1, 2);
        let q = split(attn.query.forward(x.clone()));
        let k = split(attn.key.forward(x.clone()));
        let v = split(attn.value.forward(x));
        let w = burn::tensor::activation::softmax(q.matmul(k.transpose()).div_scalar(2.0), 3);
        let reference = attn
            .output
            .forward(w.matmul(v).swap_dims(1, 2).reshape([1, 5, 8]));
        let diff = (fused - reference).abs().max().into_scalar::<f32>();
        assert!(diff < 1e-5, "{diff}");
    }
}
