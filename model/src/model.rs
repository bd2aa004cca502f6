//! [`VertebraFormer`]: the whole network, its forward input and output.
//!
//! Data flow (tokens at 1/8 with P = 8; c = `decoder_channels`):
//! ```text
//! image ─ patch_embed.project ─┬─ domain (g: stats → z → cos/τ → p) ─ e* ─┐
//!                              └─ + pos ─ encoder ─ taps t3, t6, t9, last ─┤
//!   last ─ modulation(e*) = F_mod ─ bottleneck (1/16, 16c) ──────────────── + tap_sixteenth(t9)
//!   decoder: F0 ─Up+Conv(tap_eighth(t6))→ 1/8 ─Up+Conv(tap_quarter(t3))→ 1/4
//!               ─Up+Conv(stem.half)→ 1/2 ─Up+Conv(stem.full)→ 1/1 ─ vertebra_logit, label_logits
//!   lesion head on the decoder level of stride s; identification head: RoIAlign on F_mod.
//! ```
//! With `dynamic_modulation` off, F_mod is the last layer's output and the domain branch does
//! not exist (UNETR baseline rows of the ablation).

use burn::module::Module;
use burn::tensor::{Device, Tensor};
use vertebra_core::contract::names;

use crate::blocks::decoder::{SegmentationDecoder, Stem};
use crate::blocks::domain::{DomainClassifier, DomainOutput};
use crate::blocks::encoder::Encoder;
use crate::blocks::identification::IdentificationHead;
use crate::blocks::lesion::{LesionHead, LesionOutput};
use crate::blocks::modulation::DynamicModulation;
use crate::blocks::patch_embed::PatchEmbed;
use crate::blocks::reproject::{Rescale, TapProjection};
use crate::blocks::roi_align::RoiBox;
use crate::blocks::tokens_to_volume;
use crate::config::VertebraFormerConfig;
use crate::{Error, Result};

/// The VertebraFormer network. Field names are the weight-name prefixes (see
/// [`crate::weights`]); absent branches are `None` and have no weights at all.
#[derive(Module, Debug)]
pub struct VertebraFormer {
    /// Patch projection and positional embedding.
    pub patch_embed: PatchEmbed,
    /// Transformer encoder with taps.
    pub encoder: Encoder,
    /// First tap → 1/4 scale, 4c channels.
    pub tap_quarter: TapProjection,
    /// Second tap → 1/8 scale, 8c channels.
    pub tap_eighth: TapProjection,
    /// Third tap → 1/16 scale, 16c channels.
    pub tap_sixteenth: TapProjection,
    /// F_mod → 1/16 scale, 16c channels (the decoder's input).
    pub bottleneck: TapProjection,
    /// Image stem: full- and half-resolution skips.
    pub stem: Stem,
    /// Segmentation decoder and outputs.
    pub decoder: SegmentationDecoder,
    /// Identification head (ablation: + ID branch).
    pub identification: Option<IdentificationHead>,
    /// Lesion head (ablation: + lesion head).
    pub lesion: Option<LesionHead>,
    /// Domain classifier and prototypes (ablation: + dynamic modulation).
    pub domain: Option<DomainClassifier>,
    /// Dynamic modulation (ablation: + dynamic modulation).
    pub modulation: Option<DynamicModulation>,
    /// Input window `(z, y, x)`.
    pub window: [usize; 3],
    /// Token grid `(z, y, x)`.
    pub grid: [usize; 3],
    /// Index into the decoder's stage outputs that the lesion head reads.
    pub lesion_level: usize,
}

/// What one forward pass takes.
#[derive(Debug, Clone)]
pub struct VertebraFormerInput {
    /// Normalised CT windows `[B, 1, Z, Y, X]` (see the contract's input convention).
    pub image: Tensor<5>,
    /// Instance boxes for the identification head (may be empty).
    pub boxes: Vec<RoiBox>,
    /// Optional domain mix `[B, D]` that replaces the classifier's p(d | I).
    pub domain_mix: Option<Tensor<2>>,
}

impl VertebraFormerInput {
    /// An input with an image only.
    pub fn from_image(image: Tensor<5>) -> Self {
        Self {
            image,
            boxes: Vec::new(),
            domain_mix: None,
        }
    }
}

/// Every output of one forward pass, named as in [`vertebra_core::contract::names`].
/// Branches that do not exist give `None`.
#[derive(Debug, Clone)]
pub struct VertebraFormerOutput {
    /// `vertebra_logit` `[B, 1, Z, Y, X]`.
    pub vertebra_logit: Tensor<5>,
    /// `label_logits` `[B, 26, Z, Y, X]`.
    pub label_logits: Tensor<5>,
    /// `id_logits` `[K, 25]`; `None` without the head or without boxes.
    pub id_logits: Option<Tensor<2>>,
    /// `lesion_heatmap_logits` `[B, 4, Z/s, Y/s, X/s]`.
    pub lesion_heatmap_logits: Option<Tensor<5>>,
    /// `lesion_offset` `[B, 3, Z/s, Y/s, X/s]`.
    pub lesion_offset: Option<Tensor<5>>,
    /// `lesion_log_size` `[B, 3, Z/s, Y/s, X/s]`.
    pub lesion_log_size: Option<Tensor<5>>,
    /// `domain_logits` `[B, D]`.
    pub domain_logits: Option<Tensor<2>>,
    /// `domain_probs` `[B, D]`.
    pub domain_probs: Option<Tensor<2>>,
    /// `domain_embedding` e* `[B, d_c]`.
    pub domain_embedding: Option<Tensor<2>>,
    /// Image domain embedding z `[B, d_c]`, the trainer's InfoNCE anchor (not exported).
    pub domain_image_embedding: Option<Tensor<2>>,
}

impl VertebraFormerOutput {
    /// Contract names and shapes of the tensors present, in contract order.
    pub fn shapes(&self) -> Vec<(&'static str, Vec<usize>)> {
        let mut v = vec![
            (names::VERTEBRA_LOGIT, self.vertebra_logit.dims().to_vec()),
            (names::LABEL_LOGITS, self.label_logits.dims().to_vec()),
        ];
        let push2 = |v: &mut Vec<_>, name, t: &Option<Tensor<2>>| {
            if let Some(t) = t {
                v.push((name, t.dims().to_vec()));
            }
        };
        push2(&mut v, names::ID_LOGITS, &self.id_logits);
        for (name, t) in [
            (names::LESION_HEATMAP_LOGITS, &self.lesion_heatmap_logits),
            (names::LESION_OFFSET, &self.lesion_offset),
            (names::LESION_LOG_SIZE, &self.lesion_log_size),
        ] {
            if let Some(t) = t {
                v.push((name, t.dims().to_vec()));
            }
        }
        push2(&mut v, names::DOMAIN_LOGITS, &self.domain_logits);
        push2(&mut v, names::DOMAIN_PROBS, &self.domain_probs);
        push2(&mut v, names::DOMAIN_EMBEDDING, &self.domain_embedding);
        v
    }
}

impl VertebraFormerConfig {
    /// Builds the network with freshly initialised weights on `device`.
    ///
    /// # Errors
    /// [`Error::Config`] if the configuration is inconsistent ([`Self::validate`]).
    pub fn init(&self, device: &Device) -> Result<VertebraFormer> {
        self.validate()?;
        let d = self.d_model;
        let c = self.decoder_channels;
        Ok(VertebraFormer {
            patch_embed: PatchEmbed::new(self.patch_size, d, self.num_tokens(), device),
            encoder: Encoder::new(
                d,
                self.n_layers,
                self.n_heads,
                self.d_ff,
                self.tap_layers,
                self.layer_norm_eps,
                self.dropout,
                device,
            ),
            tap_quarter: TapProjection::new(Rescale::Up2, d, self.channels_at(2), device),
            tap_eighth: TapProjection::new(Rescale::Same, d, self.channels_at(3), device),
            tap_sixteenth: TapProjection::new(Rescale::Down2, d, self.channels_at(4), device),
            bottleneck: TapProjection::new(Rescale::Down2, d, self.channels_at(4), device),
            stem: Stem::new(c, device),
            decoder: SegmentationDecoder::new(c, device),
            identification: self.identification_head.then(|| {
                IdentificationHead::new(
                    d,
                    self.roi_channels,
                    self.roi_output,
                    self.roi_sampling,
                    self.id_hidden,
                    self.patch_size,
                    self.spacing_mm,
                    device,
                )
            }),
            lesion: self
                .lesion_head
                .then(|| LesionHead::new(c * self.lesion_stride, self.lesion_channels, device)),
            domain: self.dynamic_modulation.then(|| {
                DomainClassifier::new(
                    d,
                    self.domain_hidden,
                    self.domain_dim(),
                    self.domains.len(),
                    self.domain_temperature,
                    device,
                )
            }),
            modulation: self
                .dynamic_modulation
                .then(|| DynamicModulation::new(d, self.domain_channels, self.gate_grid, device)),
            window: self.window,
            grid: self.token_grid(),
            // Stage outputs are at 1/8, 1/4, 1/2, 1/1.
            lesion_level: 3 - self.lesion_stride.trailing_zeros() as usize,
        })
    }
}

impl VertebraFormer {
    /// One forward pass over every branch the network has.
    ///
    /// # Errors
    /// [`Error::Input`] if the image is not `[B, 1, window]`, a box is invalid, boxes are given
    /// to a network without identification head, or a domain mix is given to one without
    /// modulation or is not convex.
    pub fn forward(&self, input: VertebraFormerInput) -> Result<VertebraFormerOutput> {
        let VertebraFormerInput {
            image,
            boxes,
            domain_mix,
        } = input;
        let [b, ch, z, y, x] = image.dims();
        if ch != 1 || [z, y, x] != self.window || b == 0 {
            return Err(Error::Input(format!(
                "image has shape {:?}, expected [B >= 1, 1, {}, {}, {}]",
                image.dims(),
                self.window[0],
                self.window[1],
                self.window[2]
            )));
        }
        if self.identification.is_none() && !boxes.is_empty() {
            return Err(Error::Input(
                "boxes given, but this network has no identification head".into(),
            ));
        }
        let patches = self.patch_embed.project(image.clone());
        let domain: Option<DomainOutput> = match (&self.domain, domain_mix) {
            (Some(g), mix) => Some(g.forward(patches.clone(), mix)?),
            (None, Some(_)) => {
                return Err(Error::Input(
                    "domain mix given, but this network has no dynamic modulation".into(),
                ));
            }
            (None, None) => None,
        };
        let enc = self.encoder.forward(self.patch_embed.add_position(patches));
        let f_mod = match (&self.modulation, &domain) {
            (Some(m), Some(dom)) => m.forward(enc.last, dom.embedding.clone(), self.grid),
            _ => enc.last,
        };
        let vol = |t: Tensor<3>| tokens_to_volume(t, self.grid);
        let f_mod = vol(f_mod);
        let [t_quarter, t_eighth, t_sixteenth] = enc.taps;
        let bottleneck =
            self.bottleneck.forward(f_mod.clone()) + self.tap_sixteenth.forward(vol(t_sixteenth));
        let (full, half) = self.stem.forward(image);
        let levels = self.decoder.levels(
            bottleneck,
            [
                self.tap_eighth.forward(vol(t_eighth)),
                self.tap_quarter.forward(vol(t_quarter)),
                half,
                full,
            ],
        );
        let lesion: Option<LesionOutput> = self
            .lesion
            .as_ref()
            .map(|h| h.forward(levels.stages[self.lesion_level].clone()));
        let id_logits = match &self.identification {
            Some(h) => h.forward(f_mod, &boxes)?,
            None => None,
        };
        let [_, _, _, finest] = levels.stages;
        let (vertebra_logit, label_logits) = self.decoder.outputs(finest);
        let (heat, offset, size) = match lesion {
            Some(l) => (Some(l.heatmap_logits), Some(l.offset), Some(l.log_size)),
            None => (None, None, None),
        };
        let (dl, dp, de, dz) = match domain {
            Some(d) => (
                Some(d.logits),
                Some(d.probs),
                Some(d.embedding),
                Some(d.image_embedding),
            ),
            None => (None, None, None, None),
        };
        Ok(VertebraFormerOutput {
            vertebra_logit,
            label_logits,
            id_logits,
            lesion_heatmap_logits: heat,
            lesion_offset: offset,
            lesion_log_size: size,
            domain_logits: dl,
            domain_probs: dp,
            domain_embedding: de,
            domain_image_embedding: dz,
        })
    }
}
