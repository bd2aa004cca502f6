//! Analytic cost of a configuration: parameters, multiply-accumulates (MACs), FLOPs, and an
//! estimate of activation memory — without building the network.
//!
//! Conventions (stated because published numbers mix them):
//! - **FLOPs = 2 × MACs** of convolutions, transposed convolutions, linear layers and the two
//!   attention matmuls (QKᵀ and AV). Norms, activations, softmax, gates and additions are not
//!   counted (they are < 1 % here). Tools such as fvcore/thop report MACs as "FLOPs"; we
//!   report both.
//! - The identification head is costed for [`ID_BOXES`] boxes per volume.
//! - Batch size 1, float32 (4 bytes per value).
//! - **Training activations**: the sum of every intermediate tensor a backward pass keeps
//!   (each conv/norm/activation/linear output, the attention scores and probabilities
//!   `2·h·N²` per layer, since autodiff falls back to explicit attention).
//! - **Inference peak**: the largest set of simultaneously live tensors in the forward's
//!   order (inputs, retained skips, the current block's input and output, the outputs
//!   already produced), with flash attention (no N² tensor). Allocator slack and framework
//!   overhead are not included; the benchmark's peak RSS is the measured counterpart.
//!
//! The parameter count is exact: a test compares it with the built network for every preset
//! and ablation.

use serde::Serialize;
use vertebra_core::contract::{NUM_ID_CLASSES, NUM_LESION_CHANNELS, NUM_SEG_CLASSES};

use crate::blocks::identification::GEOMETRY_FEATURES;
use crate::config::VertebraFormerConfig;

/// Boxes per volume assumed for the identification head's cost (a full column).
pub const ID_BOXES: usize = 25;

/// Bytes per value (float32).
const BYTES: u64 = 4;

/// Cost of one block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockCost {
    /// Block name (the weight prefix where there is one).
    pub name: String,
    /// Trainable parameters.
    pub params: u64,
    /// Multiply-accumulates for one volume.
    pub macs: u64,
}

/// Cost of a whole configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModelCost {
    /// Per-block costs in forward order.
    pub blocks: Vec<BlockCost>,
    /// Total trainable parameters.
    pub params: u64,
    /// Total MACs for one volume.
    pub macs: u64,
    /// Total FLOPs (2 × MACs) for one volume.
    pub flops: u64,
    /// MACs of the attention matmuls (QKᵀ, AV) alone. Module-hook counters (thop, some
    /// fvcore setups) miss these functional matmuls; `macs - attention_macs` is what such a
    /// tool reports as "FLOPs".
    pub attention_macs: u64,
    /// Estimated peak live activations of an inference forward, bytes.
    pub inference_peak_bytes: u64,
    /// Estimated activations kept for a training backward, bytes.
    pub training_activation_bytes: u64,
    /// Bytes of the parameters (float32).
    pub param_bytes: u64,
}

/// Accumulates blocks and a live-tensor trace.
#[derive(Default)]
struct Ledger {
    blocks: Vec<BlockCost>,
    /// Tensors retained for backward (values).
    saved: u64,
    /// Currently live tensors (values) and the peak.
    live: u64,
    peak: u64,
}

impl Ledger {
    fn block(&mut self, name: &str, params: u64, macs: u64) {
        self.blocks.push(BlockCost {
            name: name.to_owned(),
            params,
            macs,
        });
    }

    /// A transient step: `inputs` and `outputs` live on top of what is live now.
    fn step(&mut self, transient: u64) {
        self.peak = self.peak.max(self.live + transient);
    }

    fn alloc(&mut self, values: u64) {
        self.live += values;
        self.peak = self.peak.max(self.live);
    }

    fn free(&mut self, values: u64) {
        self.live = self.live.saturating_sub(values);
    }
}

/// Params and MACs of a 3-D conv `cin → cout`, kernel `k`, producing `out_voxels`.
fn conv(cin: u64, cout: u64, k: u64, out_voxels: u64, bias: bool) -> (u64, u64) {
    let w = cin * cout * k * k * k;
    (w + if bias { cout } else { 0 }, w * out_voxels)
}

/// Params and MACs of a 2×2×2 stride-2 transposed conv from `in_voxels`.
fn deconv2(cin: u64, cout: u64, in_voxels: u64) -> (u64, u64) {
    let w = cin * cout * 8;
    (w, w * in_voxels)
}

/// Params and MACs of a linear layer applied to `rows` rows.
fn linear(din: u64, dout: u64, rows: u64) -> (u64, u64) {
    (din * dout + dout, din * dout * rows)
}

impl VertebraFormerConfig {
    /// The analytic cost of this configuration (see the module docs for the conventions).
    pub fn cost(&self) -> ModelCost {
        let u = |v: usize| v as u64;
        let [z, y, x] = self.window.map(u);
        let vox = z * y * x;
        let n = u(self.num_tokens());
        let d = u(self.d_model);
        let p = u(self.patch_size);
        let ff = u(self.d_ff);
        let h = u(self.n_heads);
        let c = u(self.decoder_channels);
        let at = |level: u32| vox >> (3 * level); // voxels at scale 1/2^level
        let mut l = Ledger::default();
        let mut attention_macs = 0;

        // Input image stays alive (the caller owns it, the stem reads it last).
        l.alloc(vox);

        // Patch embedding.
        let (pp, pm) = conv(1, d, p, n, true);
        l.block("patch_embed", pp + n * d, pm);
        l.step(2 * n * d);
        l.alloc(n * d);
        l.saved += 2 * n * d;

        // Domain branch.
        let domains = u(self.domains.len());
        let dc = u(self.domain_dim());
        if self.dynamic_modulation {
            let (p1, m1) = linear(2 * d, u(self.domain_hidden), 1);
            let (p2, m2) = linear(u(self.domain_hidden), dc, 1);
            l.block("domain", p1 + p2 + domains * dc, m1 + m2 + 2 * domains * dc);
            l.saved += 2 * n * d;
        }

        // Encoder layers.
        let taps = u(3);
        for i in 0..self.n_layers {
            let layer_params = 4 * d + 4 * d * d + 3 * d + (d * ff + ff) + (ff * d + d);
            let layer_macs = 4 * n * d * d + 2 * n * n * d + 2 * n * d * ff;
            attention_macs += 2 * n * n * d;
            l.block(&format!("encoder.layers.{i}"), layer_params, layer_macs);
            // Inference: x, LN(x), q, k, v, ctx live during attention; x, LN, hidden, GELU
            // during the FFN.
            l.step((5 * n * d).max(n * d + 2 * n * ff));
            if self.tap_layers.contains(&(i + 1)) {
                l.alloc(n * d);
            }
            // Saved: LN out, q, k, v, ctx, out-proj, residual, LN out, ffn_in, GELU,
            // ffn_out, residual; scores and probabilities.
            l.saved += 8 * n * d + 2 * n * ff + 2 * h * n * n;
        }
        l.block("encoder.norm", 2 * d, 0);
        l.saved += n * d;

        // Modulation.
        if self.dynamic_modulation {
            let s3 = u(self.gate_grid.pow(3));
            let ce = u(self.domain_channels);
            let (p1, m1) = linear(dc, d, 1);
            let (p2, m2) = conv(ce, 1, 3, s3, true);
            l.block("modulation", p1 + p2, m1 + m2);
            l.step(2 * n * d);
            l.saved += 3 * n * d;
        }

        // Re-projections; the 1/8 and 1/4 results stay alive until their decoder stage.
        let g16 = n / 8;
        let (pq, mq) = deconv2(d, 4 * c, n);
        l.block("tap_quarter", pq + 8 * c, mq);
        let (pe, me) = conv(d, 8 * c, 1, n, false);
        l.block("tap_eighth", pe + 16 * c, me);
        let (ps, ms) = conv(d, 16 * c, 2, g16, false);
        l.block("tap_sixteenth", ps + 32 * c, ms);
        l.block("bottleneck", ps + 32 * c, ms);
        let quarter = 4 * c * n * 8;
        let eighth = 8 * c * n;
        let sixteenth = 16 * c * g16;
        l.step(quarter);
        l.alloc(quarter + eighth + 2 * sixteenth);
        l.free(taps * n * d);
        l.saved += 3 * (quarter + eighth + 2 * sixteenth);

        // Stem.
        let (p_sf, m_sf) = conv(1, c, 3, vox, false);
        let (p_sh, m_sh) = conv(c, 2 * c, 2, at(1), false);
        l.block("stem", p_sf + 2 * c + p_sh + 4 * c, m_sf + m_sh);
        l.step(2 * c * vox);
        l.alloc(c * vox + 2 * c * at(1));
        l.saved += 3 * (c * vox + 2 * c * at(1));

        // Decoder stages: level 4 → 3 → 2 → 1 → 0.
        let mut prev = 16 * c * at(4);
        let skips = [eighth, quarter, 2 * c * at(1), c * vox];
        for (i, level) in (1..=4u32).rev().enumerate() {
            let cin = c << level;
            let cout = cin / 2;
            let out_vox = at(level - 1);
            let (pu, mu) = deconv2(cin, cout, at(level));
            let (pk, mk) = conv(cout, cout, 3, out_vox, false);
            l.block(
                &format!("decoder.stages.{i}"),
                pu + 2 * (pk + 2 * cout),
                mu + 2 * mk,
            );
            let out = cout * out_vox;
            // Up output, skip conv output (conv/norm/act two at a time), sum, refine.
            l.step(3 * out);
            l.alloc(out);
            l.free(prev + skips[i]);
            l.saved += 8 * out;
            prev = out;
            if self.lesion_head && (8 >> i) == self.lesion_stride {
                let s = u(self.lesion_stride);
                let hid = u(self.lesion_channels);
                let lv = vox / (s * s * s);
                let (pt, mt) = conv(c * s, hid, 3, lv, false);
                let heads = u(NUM_LESION_CHANNELS) + 6;
                let (ph, mh) = conv(hid, heads, 1, lv, false);
                l.block("lesion", pt + 2 * hid + ph + heads, mt + mh);
                l.step(2 * hid * lv);
                l.alloc(heads * lv);
                l.saved += 3 * hid * lv + heads * lv;
            }
        }
        let seg = u(NUM_SEG_CLASSES) + 1;
        let (po, mo) = conv(c, seg, 1, vox, false);
        l.block("decoder.outputs", po + seg, mo);
        l.alloc(seg * vox);
        l.saved += seg * vox;

        // Identification head on F_mod.
        if self.identification_head {
            let rc = u(self.roi_channels);
            let r3 = u(self.roi_output.pow(3));
            let (pr, mr) = conv(d, rc, 1, n, false);
            let (p1, m1) = linear(
                rc * r3 + u(GEOMETRY_FEATURES),
                u(self.id_hidden),
                u(ID_BOXES),
            );
            let (p2, m2) = linear(u(self.id_hidden), u(NUM_ID_CLASSES), u(ID_BOXES));
            l.block("identification", pr + 2 * rc + p1 + p2, mr + m1 + m2);
            l.saved += 3 * rc * n;
        }

        let params: u64 = l.blocks.iter().map(|b| b.params).sum();
        let macs: u64 = l.blocks.iter().map(|b| b.macs).sum();
        ModelCost {
            params,
            macs,
            flops: 2 * macs,
            attention_macs,
            inference_peak_bytes: l.peak * BYTES,
            training_activation_bytes: l.saved * BYTES,
            param_bytes: params * BYTES,
            blocks: l.blocks,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Ablation, Preset};
    use burn::module::Module;

    #[test]
    fn analytic_params_equal_built_params_for_every_preset_and_ablation() {
        let device = burn::tensor::Device::flex();
        for preset in Preset::ALL {
            for row in Ablation::ALL {
                if preset == Preset::Paper && row != Ablation::Full {
                    continue; // one paper build is enough and takes ~1 s
                }
                let config = row.apply(preset.config());
                let model = config.init(&device).unwrap();
                assert_eq!(
                    config.cost().params,
                    model.num_params() as u64,
                    "{} / {}",
                    preset.name(),
                    row.name()
                );
            }
        }
    }

    #[test]
    fn paper_preset_sits_at_the_papers_parameter_count() {
        let cost = VertebraFormerConfig::paper().cost();
        let m = cost.params as f64 / 1e6;
        assert!((m - 85.6).abs() < 0.5, "{m} M");
        // Attention over 4,096 tokens alone: 12 layers x 2·2·N²·d FLOPs.
        let attention = 12.0 * 4.0 * 4096f64.powi(2) * 720.0;
        assert!(cost.flops as f64 > attention);
    }

    #[test]
    fn modulation_costs_under_one_percent_and_heads_under_five() {
        let full = VertebraFormerConfig::paper().cost();
        let base = Ablation::UnetrBaseline
            .apply(VertebraFormerConfig::paper())
            .cost();
        let extra = (full.macs - base.macs) as f64 / base.macs as f64;
        assert!(extra < 0.05, "{extra}");
        let m = full.blocks.iter().find(|b| b.name == "modulation").unwrap();
        assert!((m.macs as f64) < 0.01 * full.macs as f64);
    }
}
