//! The VertebraFormer graph: mirrors `vertebra_model::VertebraFormer::forward` module by module
//! from its [`VertebraFormerConfig`], reading every weight by its stable name (see
//! `vertebra_model::weights`). Each method below names the Burn block it mirrors.
//!
//! Inputs: `image [batch, 1, Z, Y, X]` and the optional `domain_mix [mix_batch, D]` (an
//! initializer of shape `[0, D]` is its default: when the caller does not feed it, an `If`
//! takes the classifier's softmax, exactly like `VertebraFormerInput::domain_mix = None`).
//! Outputs: the contract's tensors in contract order, then [`ROI_FEATURES`] when the network has
//! an identification head.

use onnx_protobuf::ModelProto;
use vertebra_core::contract::{NUM_ID_CLASSES, NUM_LESION_CHANNELS, NUM_SEG_CLASSES, names};
use vertebra_model::VertebraFormerConfig;

use super::builder::{
    DimSpec, Elem, GraphBuilder, attr_float, attr_graph, attr_int, attr_ints, model, value_info,
};
use crate::safetensors::WeightFile;
use crate::{Error, Result};

/// Extra output of the main graph when the network has an identification head: the reduced
/// modulated encoder features `[B, roi_channels, gz, gy, gx]` (stride = patch size) that the
/// RoIAlign reads (`identification.reduce` applied to F_mod). Named by core's contract.
pub const ROI_FEATURES: &str = vertebra_core::contract::names::ROI_FEATURES;

/// Symbolic batch dimension of the image and every per-image output.
pub const BATCH: &str = "batch";

/// Negative slope of the LeakyReLU (vertebra_model's `LEAKY_SLOPE`).
const LEAKY_SLOPE: f32 = 0.01;

/// Floor of the token standard deviation and cosine norms (vertebra_model's domain `EPS`).
const DOMAIN_EPS: f32 = 1e-6;

/// Convolution layouts (vertebra_model's `ConvKind` plus the patch projection).
#[derive(Clone, Copy)]
enum Conv {
    /// 3×3×3, padding 1.
    Same3,
    /// 1×1×1.
    Point,
    /// 2×2×2 stride 2.
    Down2,
    /// P×P×P stride P.
    Patch(usize),
}

impl Conv {
    fn kernel(self) -> usize {
        match self {
            Conv::Same3 => 3,
            Conv::Point => 1,
            Conv::Down2 => 2,
            Conv::Patch(p) => p,
        }
    }

    fn attrs(self) -> Vec<onnx_protobuf::AttributeProto> {
        let k = self.kernel() as i64;
        let (stride, pad) = match self {
            Conv::Same3 => (1, 1),
            Conv::Point => (1, 0),
            Conv::Down2 => (2, 0),
            Conv::Patch(p) => (p as i64, 0),
        };
        vec![
            attr_ints("kernel_shape", &[k, k, k]),
            attr_ints("strides", &[stride; 3]),
            attr_ints("pads", &[pad; 6]),
            attr_ints("dilations", &[1, 1, 1]),
            attr_int("group", 1),
        ]
    }
}

/// Builds the graph from a config and its weights.
struct Writer<'a> {
    g: GraphBuilder,
    w: &'a WeightFile,
    cfg: &'a VertebraFormerConfig,
}

impl Writer<'_> {
    fn weight(&mut self, name: &str, shape: &[usize]) -> Result<String> {
        let t = self.w.take(name, shape)?;
        Ok(self.g.init_float(name, shape, &t.data))
    }

    /// `burn::nn::Linear` (`[in, out]` weight): MatMul + Add.
    fn linear(&mut self, x: &str, prefix: &str, d_in: usize, d_out: usize) -> Result<String> {
        let w = self.weight(&format!("{prefix}.weight"), &[d_in, d_out])?;
        let y = self.g.node("MatMul", &[x, &w], vec![]);
        let bias = format!("{prefix}.bias");
        if self.w.has(&bias) {
            let b = self.weight(&bias, &[d_out])?;
            Ok(self.g.node("Add", &[&y, &b], vec![]))
        } else {
            Ok(y)
        }
    }

    /// `burn::nn::conv::Conv3d`, bias if the file has one.
    fn conv(
        &mut self,
        x: &str,
        prefix: &str,
        kind: Conv,
        c_in: usize,
        c_out: usize,
    ) -> Result<String> {
        let k = kind.kernel();
        let w = self.weight(&format!("{prefix}.weight"), &[c_out, c_in, k, k, k])?;
        let bias = format!("{prefix}.bias");
        let mut inputs = vec![x.to_owned(), w];
        if self.w.has(&bias) {
            inputs.push(self.weight(&bias, &[c_out])?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.g.node("Conv", &refs, kind.attrs()))
    }

    /// `burn::nn::conv::ConvTranspose3d` 2×2×2 stride 2, bias if the file has one.
    fn conv_transpose(
        &mut self,
        x: &str,
        prefix: &str,
        c_in: usize,
        c_out: usize,
    ) -> Result<String> {
        let w = self.weight(&format!("{prefix}.weight"), &[c_in, c_out, 2, 2, 2])?;
        let bias = format!("{prefix}.bias");
        let mut inputs = vec![x.to_owned(), w];
        if self.w.has(&bias) {
            inputs.push(self.weight(&bias, &[c_out])?);
        }
        let refs: Vec<&str> = inputs.iter().map(String::as_str).collect();
        Ok(self.g.node(
            "ConvTranspose",
            &refs,
            vec![
                attr_ints("kernel_shape", &[2, 2, 2]),
                attr_ints("strides", &[2, 2, 2]),
                attr_ints("pads", &[0; 6]),
                attr_ints("dilations", &[1, 1, 1]),
                attr_int("group", 1),
            ],
        ))
    }

    /// `burn::nn::InstanceNorm` (affine, ε = 1e-5 as Burn's default) + LeakyReLU(0.01): the
    /// tail of `ConvNormAct` and `TapProjection`.
    fn norm_act(&mut self, x: &str, prefix: &str, c: usize) -> Result<String> {
        let gamma = self.weight(&format!("{prefix}.gamma"), &[c])?;
        let beta = self.weight(&format!("{prefix}.beta"), &[c])?;
        let n = self.g.node(
            "InstanceNormalization",
            &[x, &gamma, &beta],
            vec![attr_float("epsilon", 1e-5)],
        );
        Ok(self
            .g
            .node("LeakyRelu", &[&n], vec![attr_float("alpha", LEAKY_SLOPE)]))
    }

    /// `ConvNormAct`: Conv (no bias) → InstanceNorm → LeakyReLU.
    fn conv_norm_act(
        &mut self,
        x: &str,
        prefix: &str,
        kind: Conv,
        c_in: usize,
        c_out: usize,
    ) -> Result<String> {
        let y = self.conv(x, &format!("{prefix}.conv"), kind, c_in, c_out)?;
        self.norm_act(&y, &format!("{prefix}.norm"), c_out)
    }

    /// `burn::nn::LayerNorm` over the last axis.
    fn layer_norm(&mut self, x: &str, prefix: &str, d: usize) -> Result<String> {
        let gamma = self.weight(&format!("{prefix}.gamma"), &[d])?;
        let beta = self.weight(&format!("{prefix}.beta"), &[d])?;
        Ok(self.g.node(
            "LayerNormalization",
            &[x, &gamma, &beta],
            vec![
                attr_int("axis", -1),
                attr_float("epsilon", self.cfg.layer_norm_eps as f32),
            ],
        ))
    }

    /// Burn's exact `gelu`: `x · ½ · (1 + erf(x / √2))` (opset 17 has no Gelu).
    fn gelu(&mut self, x: &str) -> String {
        let inv_sqrt2 = self.g.scalar("inv_sqrt2", std::f32::consts::FRAC_1_SQRT_2);
        let one = self.g.scalar("one", 1.0);
        let half = self.g.scalar("half", 0.5);
        let s = self.g.node("Mul", &[x, &inv_sqrt2], vec![]);
        let e = self.g.node("Erf", &[&s], vec![]);
        let e1 = self.g.node("Add", &[&e, &one], vec![]);
        let xh = self.g.node("Mul", &[x, &half], vec![]);
        self.g.node("Mul", &[&xh, &e1], vec![])
    }

    fn reshape(&mut self, x: &str, shape: &[i64]) -> String {
        let s = self.g.ints("shape", shape);
        self.g.node("Reshape", &[x, &s], vec![])
    }

    fn transpose(&mut self, x: &str, perm: &[i64]) -> String {
        self.g
            .node("Transpose", &[x], vec![attr_ints("perm", perm)])
    }

    /// `SelfAttention::forward`: softmax(QKᵀ/√d_k)V per head, output projection.
    fn attention(&mut self, x: &str, prefix: &str) -> Result<String> {
        let (d, h, n) = (self.cfg.d_model, self.cfg.n_heads, self.cfg.num_tokens());
        let dh = d / h;
        let q = self.linear(x, &format!("{prefix}.query"), d, d)?;
        let k = self.linear(x, &format!("{prefix}.key"), d, d)?;
        let v = self.linear(x, &format!("{prefix}.value"), d, d)?;
        let split = [0, n as i64, h as i64, dh as i64];
        let q = self.reshape(&q, &split);
        let q = self.transpose(&q, &[0, 2, 1, 3]);
        let k = self.reshape(&k, &split);
        let kt = self.transpose(&k, &[0, 2, 3, 1]);
        let v = self.reshape(&v, &split);
        let v = self.transpose(&v, &[0, 2, 1, 3]);
        let scores = self.g.node("MatMul", &[&q, &kt], vec![]);
        let scale = self.g.scalar("attn_scale", 1.0 / (dh as f32).sqrt());
        let scores = self.g.node("Mul", &[&scores, &scale], vec![]);
        let weights = self
            .g
            .node("Softmax", &[&scores], vec![attr_int("axis", -1)]);
        let ctx = self.g.node("MatMul", &[&weights, &v], vec![]);
        let ctx = self.transpose(&ctx, &[0, 2, 1, 3]);
        let ctx = self.reshape(&ctx, &[0, n as i64, d as i64]);
        self.linear(&ctx, &format!("{prefix}.output"), d, d)
    }

    /// `EncoderLayer::forward` (pre-norm; dropout is the identity at inference).
    fn encoder_layer(&mut self, x: &str, i: usize) -> Result<String> {
        let (d, ff) = (self.cfg.d_model, self.cfg.d_ff);
        let p = format!("encoder.layers.{i}");
        let h = self.layer_norm(x, &format!("{p}.norm_attn"), d)?;
        let a = self.attention(&h, &format!("{p}.attn"))?;
        let x = self.g.node("Add", &[x, &a], vec![]);
        let h = self.layer_norm(&x, &format!("{p}.norm_ffn"), d)?;
        let f = self.linear(&h, &format!("{p}.ffn_in"), d, ff)?;
        let f = self.gelu(&f);
        let f = self.linear(&f, &format!("{p}.ffn_out"), ff, d)?;
        Ok(self.g.node("Add", &[&x, &f], vec![]))
    }

    /// `tokens_to_volume`: `[B, N, d]` → `[B, d, gz, gy, gx]`.
    fn tokens_to_volume(&mut self, tokens: &str) -> String {
        let [gz, gy, gx] = self.cfg.token_grid().map(|v| v as i64);
        let t = self.transpose(tokens, &[0, 2, 1]);
        self.reshape(&t, &[0, self.cfg.d_model as i64, gz, gy, gx])
    }

    /// Row-wise `t / max(‖t‖₂, ε)` over axis 1 of a `[R, C]` tensor (the classifier's `unit`).
    fn unit_rows(&mut self, t: &str) -> String {
        let sq = self.g.node(
            "ReduceSumSquare",
            &[t],
            vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)],
        );
        let norm = self.g.node("Sqrt", &[&sq], vec![]);
        let eps = self.g.scalar("cos_eps", DOMAIN_EPS);
        let norm = self.g.node("Max", &[&norm, &eps], vec![]);
        self.g.node("Div", &[t, &norm], vec![])
    }

    /// `DomainClassifier::forward`: (logits, probs, embedding); probs come from `domain_mix`
    /// when the caller feeds it.
    fn domain(&mut self, patches: &str, mix: &str) -> Result<(String, String, String)> {
        let d = self.cfg.d_model;
        let n_dom = self.cfg.domains.len();
        let dc = self.cfg.domain_dim();
        let mean = self.g.node(
            "ReduceMean",
            &[patches],
            vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)],
        );
        let diff = self.g.node("Sub", &[patches, &mean], vec![]);
        let sq = self.g.node("Mul", &[&diff, &diff], vec![]);
        let var = self.g.node(
            "ReduceMean",
            &[&sq],
            vec![attr_ints("axes", &[1]), attr_int("keepdims", 1)],
        );
        let eps = self.g.scalar("std_eps", DOMAIN_EPS);
        let var = self.g.node("Add", &[&var, &eps], vec![]);
        let std = self.g.node("Sqrt", &[&var], vec![]);
        let mean = self.reshape(&mean, &[0, d as i64]);
        let std = self.reshape(&std, &[0, d as i64]);
        let stats = self
            .g
            .node("Concat", &[&mean, &std], vec![attr_int("axis", 1)]);
        let h = self.linear(&stats, "domain.fc1", 2 * d, self.cfg.domain_hidden)?;
        let h = self.gelu(&h);
        let z = self.linear(&h, "domain.fc2", self.cfg.domain_hidden, dc)?;
        let protos = self.weight("domain.prototypes", &[n_dom, dc])?;
        let uz = self.unit_rows(&z);
        let up = self.unit_rows(&protos);
        let upt = self.transpose(&up, &[1, 0]);
        let cos = self.g.node("MatMul", &[&uz, &upt], vec![]);
        let tau = self
            .g
            .scalar("temperature", self.cfg.domain_temperature as f32);
        let logits = self.g.node("Div", &[&cos, &tau], vec![]);
        let softmax = self
            .g
            .node("Softmax", &[&logits], vec![attr_int("axis", 1)]);
        // Size(domain_mix) > 0 ? domain_mix : softmax.
        let size = self.g.node("Size", &[mix], vec![]);
        let zero = self.g.int_scalar("zero", 0);
        let given = self.g.node("Greater", &[&size, &zero], vec![]);
        let compute = self.g.compute.unwrap_or(Elem::F32);
        let branch = |src: &str, out: &str| {
            let mut b = GraphBuilder::new(compute);
            b.node_to("Identity", &[src], vec![], out);
            b.output(value_info(out, compute, None));
            b.into_graph(out)
        };
        let then_g = branch(mix, "mix_given");
        let else_g = branch(&softmax, "mix_softmax");
        let probs = self.g.node(
            "If",
            &[&given],
            vec![
                attr_graph("then_branch", then_g),
                attr_graph("else_branch", else_g),
            ],
        );
        let embedding = self.g.node("MatMul", &[&probs, &protos], vec![]);
        Ok((logits, probs, embedding))
    }

    /// `DynamicModulation::forward`: `F ⊙ a_c ⊙ a_s`.
    fn modulation(&mut self, features: &str, e: &str) -> Result<String> {
        let (d, ce, s) = (
            self.cfg.d_model,
            self.cfg.domain_channels,
            self.cfg.gate_grid,
        );
        let grid = self.cfg.token_grid();
        let n = self.cfg.num_tokens();
        let a_c = self.linear(e, "modulation.channel_fc", ce * s * s * s, d)?;
        let a_c = self.g.node("Sigmoid", &[&a_c], vec![]);
        let a_c = self.reshape(&a_c, &[0, 1, d as i64]);
        let si = s as i64;
        let ev = self.reshape(e, &[0, ce as i64, si, si, si]);
        let coarse = self.conv(&ev, "modulation.spatial_conv", Conv::Same3, ce, 1)?;
        let coarse = self.reshape(&coarse, &[0, si, 1, si, 1, si, 1]);
        let [fz, fy, fx] = grid.map(|g| (g / s) as i64);
        let target = self.g.ints("expand", &[1, si, fz, si, fy, si, fx]);
        let fine = self.g.node("Expand", &[&coarse, &target], vec![]);
        let fine = self.reshape(&fine, &[0, n as i64, 1]);
        let a_s = self.g.node("Sigmoid", &[&fine], vec![]);
        let f = self.g.node("Mul", &[features, &a_c], vec![]);
        Ok(self.g.node("Mul", &[&f, &a_s], vec![]))
    }

    /// `TapProjection::forward`.
    fn tap(&mut self, x: &str, prefix: &str, rescale: Conv, up: bool, c: usize) -> Result<String> {
        let d = self.cfg.d_model;
        let y = if up {
            self.conv_transpose(x, &format!("{prefix}.up"), d, c)?
        } else {
            self.conv(x, &format!("{prefix}.conv"), rescale, d, c)?
        };
        self.norm_act(&y, &format!("{prefix}.norm"), c)
    }

    fn write(&mut self) -> Result<()> {
        let cfg = self.cfg;
        let [z, y, x] = cfg.window;
        let (d, p) = (cfg.d_model, cfg.patch_size);
        let c = cfg.decoder_channels;
        let batch = || DimSpec::Symbol(BATCH.into());
        let fixed = DimSpec::Fixed;
        self.g.input(value_info(
            names::IMAGE,
            Elem::F32,
            Some(&[batch(), fixed(1), fixed(z), fixed(y), fixed(x)]),
        ));
        let compute = self.g.compute.unwrap_or(Elem::F32);
        let cast_in = |w: &mut Self, name: &str| -> String {
            if compute == Elem::F32 {
                name.to_owned()
            } else {
                w.g.node("Cast", &[name], vec![attr_int("to", 10)])
            }
        };
        let image = cast_in(self, names::IMAGE);

        // PatchEmbed: project, tokens in z, y, x raster order, + pos.
        let pv = self.conv(&image, "patch_embed.proj", Conv::Patch(p), 1, d)?;
        let n = cfg.num_tokens();
        let pt = self.reshape(&pv, &[0, d as i64, n as i64]);
        let patches = self.transpose(&pt, &[0, 2, 1]);
        let pos = self.weight("patch_embed.pos", &[1, n, d])?;
        let mut t = self.g.node("Add", &[&patches, &pos], vec![]);

        let domain = if cfg.dynamic_modulation {
            let n_dom = cfg.domains.len();
            self.g.input(value_info(
                names::DOMAIN_MIX,
                Elem::F32,
                Some(&[DimSpec::Symbol("mix_batch".into()), fixed(n_dom)]),
            ));
            self.g.empty_default(names::DOMAIN_MIX, &[0, n_dom]);
            let mix = cast_in(self, names::DOMAIN_MIX);
            Some(self.domain(&patches, &mix)?)
        } else {
            None
        };

        let mut taps = Vec::new();
        for i in 0..cfg.n_layers {
            t = self.encoder_layer(&t, i)?;
            if cfg.tap_layers.contains(&(i + 1)) {
                taps.push(t.clone());
            }
        }
        let last = self.layer_norm(&t, "encoder.norm", d)?;
        let f_mod = match &domain {
            Some((_, _, e)) => {
                let e = e.clone();
                self.modulation(&last, &e)?
            }
            None => last,
        };
        let f_mod = self.tokens_to_volume(&f_mod);
        let [t_q, t_e, t_s] = [0, 1, 2].map(|i| taps[i].clone());
        let b1 = self.tap(&f_mod, "bottleneck", Conv::Down2, false, c << 4)?;
        let vs = self.tokens_to_volume(&t_s);
        let b2 = self.tap(&vs, "tap_sixteenth", Conv::Down2, false, c << 4)?;
        let bottleneck = self.g.node("Add", &[&b1, &b2], vec![]);
        let full = self.conv_norm_act(&image, "stem.full", Conv::Same3, 1, c)?;
        let half = self.conv_norm_act(&full, "stem.half", Conv::Down2, c, 2 * c)?;
        let ve = self.tokens_to_volume(&t_e);
        let skip8 = self.tap(&ve, "tap_eighth", Conv::Point, false, c << 3)?;
        let vq = self.tokens_to_volume(&t_q);
        let skip4 = self.tap(&vq, "tap_quarter", Conv::Point, true, c << 2)?;
        let skips = [skip8, skip4, half, full];
        let mut f = bottleneck;
        let mut stages = Vec::new();
        for (i, skip) in skips.iter().enumerate() {
            let level = 4 - i;
            let (ch, sk) = (c << level, c << (level - 1));
            let pre = format!("decoder.stages.{i}");
            let up = self.conv_transpose(&f, &format!("{pre}.up"), ch, ch / 2)?;
            let s = self.conv_norm_act(skip, &format!("{pre}.skip"), Conv::Same3, sk, ch / 2)?;
            let sum = self.g.node("Add", &[&up, &s], vec![]);
            f = self.conv_norm_act(&sum, &format!("{pre}.refine"), Conv::Same3, ch / 2, ch / 2)?;
            stages.push(f.clone());
        }
        let mut outs: Vec<(String, String)> = Vec::new();
        let v = self.conv(&f, "decoder.vertebra", Conv::Point, c, 1)?;
        outs.push((names::VERTEBRA_LOGIT.into(), v));
        let l = self.conv(&f, "decoder.labels", Conv::Point, c, NUM_SEG_CLASSES)?;
        outs.push((names::LABEL_LOGITS.into(), l));
        if cfg.lesion_head {
            let level = 3 - cfg.lesion_stride.trailing_zeros() as usize;
            let c_in = c * cfg.lesion_stride;
            let h = cfg.lesion_channels;
            let trunk = self.conv_norm_act(&stages[level], "lesion.trunk", Conv::Same3, c_in, h)?;
            for (name, prefix, ch) in [
                (
                    names::LESION_HEATMAP_LOGITS,
                    "lesion.heatmap",
                    NUM_LESION_CHANNELS,
                ),
                (names::LESION_OFFSET, "lesion.offset", 3),
                (names::LESION_LOG_SIZE, "lesion.log_size", 3),
            ] {
                let o = self.conv(&trunk, prefix, Conv::Point, h, ch)?;
                outs.push((name.into(), o));
            }
        }
        if let Some((logits, probs, embedding)) = domain {
            outs.push((names::DOMAIN_LOGITS.into(), logits));
            outs.push((names::DOMAIN_PROBS.into(), probs));
            outs.push((names::DOMAIN_EMBEDDING.into(), embedding));
        }
        if cfg.identification_head {
            let r = self.conv_norm_act(
                &f_mod,
                "identification.reduce",
                Conv::Point,
                d,
                cfg.roi_channels,
            )?;
            outs.push((ROI_FEATURES.into(), r));
        }
        let shapes = output_shapes(cfg);
        for (name, value) in outs {
            let op = if compute == Elem::F32 {
                "Identity"
            } else {
                "Cast"
            };
            let attrs = if compute == Elem::F32 {
                vec![]
            } else {
                vec![attr_int("to", 1)]
            };
            self.g.node_to(op, &[&value], attrs, &name);
            let shape = shapes
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, s)| s.clone())
                .ok_or_else(|| Error::Config(format!("no declared shape for output {name}")))?;
            self.g.output(value_info(&name, Elem::F32, Some(&shape)));
        }
        Ok(())
    }
}

/// Declared shapes of every output of the main graph: the contract's (with the batch symbol)
/// plus [`ROI_FEATURES`].
pub fn output_shapes(cfg: &VertebraFormerConfig) -> Vec<(String, Vec<DimSpec>)> {
    use vertebra_core::contract::Dim;
    let mut v: Vec<(String, Vec<DimSpec>)> = cfg
        .contract()
        .outputs()
        .into_iter()
        .filter(|t| t.name != names::ID_LOGITS)
        .map(|t| {
            let dims = t
                .dims
                .iter()
                .map(|d| match d {
                    Dim::Batch => DimSpec::Symbol(BATCH.into()),
                    Dim::Boxes => DimSpec::Symbol("boxes".into()),
                    Dim::Fixed(n) => DimSpec::Fixed(*n),
                })
                .collect();
            (t.name, dims)
        })
        .collect();
    if cfg.identification_head {
        let [gz, gy, gx] = cfg.token_grid();
        v.push((
            ROI_FEATURES.into(),
            vec![
                DimSpec::Symbol(BATCH.into()),
                DimSpec::Fixed(cfg.roi_channels),
                DimSpec::Fixed(gz),
                DimSpec::Fixed(gy),
                DimSpec::Fixed(gx),
            ],
        ));
    }
    v
}

/// Writes the main graph of the network `cfg` with the weights of `weights`, in `compute`
/// precision (inputs and outputs stay f32). Every tensor of the identification MLP is left
/// for [`id_graph`]; call [`WeightFile::check_all_used`] after both.
///
/// # Errors
/// [`Error::Weights`] for a missing or misshapen tensor, [`Error::Config`] for a config the
/// network cannot have.
pub fn main_model(
    cfg: &VertebraFormerConfig,
    weights: &WeightFile,
    compute: Elem,
) -> Result<ModelProto> {
    cfg.validate()
        .map_err(|e| Error::Config(format!("invalid VertebraFormer config: {e}")))?;
    let mut w = Writer {
        g: GraphBuilder::new(compute),
        w: weights,
        cfg,
    };
    w.write()?;
    Ok(model(
        w.g.into_graph("vertebraformer"),
        "VertebraFormer main graph (vertebra-export); outputs named as vertebra_core::contract",
    ))
}

/// Number of input features of the identification MLP: `roi_channels · R³ + 3`.
pub fn id_input_features(cfg: &VertebraFormerConfig) -> usize {
    cfg.roi_channels * cfg.roi_output.pow(3) + 3
}

/// The identification MLP as its own graph: inputs `roi_pooled [boxes, c, R, R, R]` and
/// `box_geometry [boxes, 3]`, output `id_logits [boxes, 25]`.
pub(crate) fn id_graph(
    cfg: &VertebraFormerConfig,
    weights: &WeightFile,
    compute: Elem,
) -> Result<ModelProto> {
    let mut w = Writer {
        g: GraphBuilder::new(compute),
        w: weights,
        cfg,
    };
    let (c, r) = (cfg.roi_channels, cfg.roi_output);
    let k = || DimSpec::Symbol("boxes".into());
    let fixed = DimSpec::Fixed;
    w.g.input(value_info(
        crate::roi::ROI_POOLED,
        Elem::F32,
        Some(&[k(), fixed(c), fixed(r), fixed(r), fixed(r)]),
    ));
    w.g.input(value_info(
        crate::roi::BOX_GEOMETRY,
        Elem::F32,
        Some(&[k(), fixed(3)]),
    ));
    let cast = |w: &mut Writer<'_>, name: &str| -> String {
        if compute == Elem::F32 {
            name.to_owned()
        } else {
            w.g.node("Cast", &[name], vec![attr_int("to", 10)])
        }
    };
    let pooled = cast(&mut w, crate::roi::ROI_POOLED);
    let geom = cast(&mut w, crate::roi::BOX_GEOMETRY);
    let flat = w.reshape(&pooled, &[0, (c * r * r * r) as i64]);
    let x =
        w.g.node("Concat", &[&flat, &geom], vec![attr_int("axis", 1)]);
    let h = w.linear(
        &x,
        "identification.fc1",
        id_input_features(cfg),
        cfg.id_hidden,
    )?;
    let h = w.gelu(&h);
    let logits = w.linear(&h, "identification.fc2", cfg.id_hidden, NUM_ID_CLASSES)?;
    if compute == Elem::F32 {
        w.g.node_to("Identity", &[&logits], vec![], names::ID_LOGITS);
    } else {
        w.g.node_to(
            "Cast",
            &[&logits],
            vec![attr_int("to", 1)],
            names::ID_LOGITS,
        );
    }
    w.g.output(value_info(
        names::ID_LOGITS,
        Elem::F32,
        Some(&[k(), fixed(NUM_ID_CLASSES)]),
    ));
    Ok(model(
        w.g.into_graph("vertebraformer_id_head"),
        "VertebraFormer identification MLP (vertebra-export): RoIAlign output + box geometry -> id_logits",
    ))
}
