//! [`VertebraFormerConfig`]: every size of the network in one serialisable struct, the three
//! presets (`paper`, `cpu`, `tiny`), the ablation switches of the paper's Table 6, and the
//! [`ModelContract`] a configuration implies.
//!
//! ## Presets
//! - `paper`: 128³ at 1 mm, P = 8 (4,096 tokens), 12 pre-norm layers with taps at layers 3, 6,
//!   9 (UNETR's), 12 heads. The width d = 720 is the ViT-B layout narrowed so that the whole
//!   network lands on the paper's ~85.6 M parameters (85.56 M; d = 768 gives 96.3 M because
//!   the 4,096 learnable positional embeddings and the decoder and heads add ~11 M to the
//!   85 M of a ViT-B encoder). Its FLOPs cannot match the paper's 342 G: 4,096 tokens cost
//!   580 GFLOPs in the attention matmuls alone (see `docs/benchmarks.md`, [`crate::cost`]).
//! - `cpu`: 64³ at 2 mm (a 128 mm field holding 3–5 vertebrae), P = 8 (512 tokens),
//!   d = 192, 6 layers, 6 heads. A forward + backward step takes 1.55–1.95 s on the loaded
//!   2-core build machine (`docs/benchmarks.md`), ~2,000 steps per hour, so a few hours give
//!   ~10⁴ steps, enough to fit the phantom domains. 96³ costs 6x per step (~300 steps per
//!   hour) and a d = 384, 8-layer encoder 1.3–1.7x for 4x the parameters, which a few thousand
//!   steps cannot fit.
//! - `tiny`: 32³ at 4 mm, d = 32, 4 layers; for tests (a forward takes milliseconds).

use burn::config::Config;
use serde::{Deserialize, Serialize};
use vertebra_core::contract::{Branches, ModelContract};
use vertebra_core::volume::ops::{HU_MAX, HU_MIN};

use crate::Error;

/// All sizes and switches of the VertebraFormer network.
///
/// Spatial triples are `(z, y, x)`, the tensor order `[B, C, Z, Y, X]` of the contract.
/// Decoder channels follow UNETR: `decoder_channels` at full resolution, doubled at each
/// coarser scale (1/2: 2c, 1/4: 4c, 1/8: 8c, 1/16: 16c), so each up-sampling stage halves them.
#[derive(Config, Debug, PartialEq)]
pub struct VertebraFormerConfig {
    /// Input window `(z, y, x)` in voxels; a multiple of `patch_size` and of 16.
    pub window: [usize; 3],
    /// Isotropic input spacing in millimetres (part of the contract, not used by the math).
    pub spacing_mm: f64,
    /// Patch size P: the window is cut into non-overlapping P³ patches (tokens).
    pub patch_size: usize,
    /// Token width d.
    pub d_model: usize,
    /// Number of transformer layers L.
    pub n_layers: usize,
    /// Attention heads; must divide `d_model`.
    pub n_heads: usize,
    /// Hidden width of the feed-forward block.
    pub d_ff: usize,
    /// 1-based layers whose outputs are re-projected to 1/4, 1/8 and 1/16 of the input.
    pub tap_layers: [usize; 3],
    /// Decoder channels at full resolution (c); scale 1/2^k has c·2^k channels.
    pub decoder_channels: usize,
    /// Stride of the lesion outputs: 2, 4 or 8 (the decoder level the head reads).
    pub lesion_stride: usize,
    /// Hidden channels of the lesion head's shared 3×3×3 trunk.
    pub lesion_channels: usize,
    /// Channels of the encoder features after the 1×1×1 reduction before RoIAlign.
    pub roi_channels: usize,
    /// RoIAlign output bins per axis (R; output R³ per box).
    pub roi_output: usize,
    /// Trilinear samples per bin per axis (S; S³ samples averaged per bin).
    pub roi_sampling: usize,
    /// Hidden width of the identification MLP.
    pub id_hidden: usize,
    /// Domain names in prototype order (the contract's domain list).
    pub domains: Vec<String>,
    /// Channels of the reshaped domain embedding seen by the spatial gate (c_e).
    pub domain_channels: usize,
    /// Side of the reshaped domain embedding's grid (s); d_c = c_e · s³. Must divide the token
    /// grid.
    pub gate_grid: usize,
    /// Hidden width of the domain classifier g.
    pub domain_hidden: usize,
    /// Temperature τ of the classifier's cosine logits (also the InfoNCE temperature).
    #[config(default = 0.1)]
    pub domain_temperature: f64,
    /// Dropout after attention and feed-forward blocks (active only with autodiff).
    #[config(default = 0.0)]
    pub dropout: f64,
    /// Epsilon of the layer norms.
    #[config(default = 1e-6)]
    pub layer_norm_eps: f64,
    /// Ablation: the identification branch exists.
    #[config(default = true)]
    pub identification_head: bool,
    /// Ablation: the lesion head exists.
    #[config(default = true)]
    pub lesion_head: bool,
    /// Ablation: the domain classifier, prototypes and dynamic modulation exist.
    #[config(default = true)]
    pub dynamic_modulation: bool,
}

/// The named presets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Preset {
    /// The paper's network at 128³ (~85.6 M parameters).
    Paper,
    /// The largest network that trains on the 2-core CPU in hours (64³ at 2 mm).
    Cpu,
    /// A toy network for tests.
    Tiny,
}

impl Preset {
    /// Every preset, largest first.
    pub const ALL: [Preset; 3] = [Preset::Paper, Preset::Cpu, Preset::Tiny];

    /// The preset's lowercase name.
    pub fn name(self) -> &'static str {
        match self {
            Preset::Paper => "paper",
            Preset::Cpu => "cpu",
            Preset::Tiny => "tiny",
        }
    }

    /// Parses a preset name.
    ///
    /// # Errors
    /// [`Error::Config`] listing the valid names.
    pub fn from_name(name: &str) -> crate::Result<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(name.trim()))
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown preset {name:?}; valid presets: paper, cpu, tiny"
                ))
            })
    }

    /// The full (all branches) configuration of this preset.
    pub fn config(self) -> VertebraFormerConfig {
        match self {
            Preset::Paper => VertebraFormerConfig::paper(),
            Preset::Cpu => VertebraFormerConfig::cpu(),
            Preset::Tiny => VertebraFormerConfig::tiny(),
        }
    }
}

/// The four rows of the paper's ablation (Table 6): each adds one component to the previous.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Ablation {
    /// UNETR baseline: encoder + segmentation decoder only, no modulation.
    UnetrBaseline,
    /// + identification branch.
    PlusId,
    /// + lesion detection head.
    PlusLesion,
    /// + dynamic modulation: the full VertebraFormer.
    Full,
}

impl Ablation {
    /// Every row in the paper's order.
    pub const ALL: [Ablation; 4] = [
        Ablation::UnetrBaseline,
        Ablation::PlusId,
        Ablation::PlusLesion,
        Ablation::Full,
    ];

    /// The row's name as the CLI spells it.
    pub fn name(self) -> &'static str {
        match self {
            Ablation::UnetrBaseline => "unetr-baseline",
            Ablation::PlusId => "plus-id",
            Ablation::PlusLesion => "plus-lesion",
            Ablation::Full => "full",
        }
    }

    /// `config` with this row's branches switched on and the others off.
    pub fn apply(self, config: VertebraFormerConfig) -> VertebraFormerConfig {
        let (id, lesion, modulation) = match self {
            Ablation::UnetrBaseline => (false, false, false),
            Ablation::PlusId => (true, false, false),
            Ablation::PlusLesion => (true, true, false),
            Ablation::Full => (true, true, true),
        };
        config
            .with_identification_head(id)
            .with_lesion_head(lesion)
            .with_dynamic_modulation(modulation)
    }
}

impl VertebraFormerConfig {
    /// The paper preset (see the module docs for the sizing argument).
    pub fn paper() -> Self {
        Self {
            window: [128, 128, 128],
            spacing_mm: 1.0,
            patch_size: 8,
            d_model: 720,
            n_layers: 12,
            n_heads: 12,
            d_ff: 2880,
            tap_layers: [3, 6, 9],
            decoder_channels: 16,
            lesion_stride: 4,
            lesion_channels: 64,
            roi_channels: 64,
            roi_output: 4,
            roi_sampling: 2,
            id_hidden: 480,
            domains: ModelContract::phantom_domains(),
            domain_channels: 4,
            gate_grid: 4,
            domain_hidden: 128,
            ..Self::defaults()
        }
    }

    /// The CPU preset (see the module docs for the measured step times behind it).
    pub fn cpu() -> Self {
        Self {
            window: [64, 64, 64],
            spacing_mm: 2.0,
            patch_size: 8,
            d_model: 192,
            n_layers: 6,
            n_heads: 6,
            d_ff: 768,
            tap_layers: [2, 3, 5],
            decoder_channels: 8,
            lesion_stride: 4,
            lesion_channels: 32,
            roi_channels: 32,
            roi_output: 4,
            roi_sampling: 2,
            id_hidden: 128,
            domains: ModelContract::phantom_domains(),
            domain_channels: 16,
            gate_grid: 2,
            domain_hidden: 64,
            ..Self::defaults()
        }
    }

    /// The test preset.
    pub fn tiny() -> Self {
        Self {
            window: [32, 32, 32],
            spacing_mm: 4.0,
            patch_size: 8,
            d_model: 32,
            n_layers: 4,
            n_heads: 2,
            d_ff: 64,
            tap_layers: [1, 2, 3],
            decoder_channels: 2,
            lesion_stride: 4,
            lesion_channels: 8,
            roi_channels: 8,
            roi_output: 2,
            roi_sampling: 2,
            id_hidden: 16,
            domains: ModelContract::phantom_domains(),
            domain_channels: 4,
            gate_grid: 2,
            domain_hidden: 16,
            ..Self::defaults()
        }
    }

    /// The `#[config(default)]` values with placeholder sizes, as the base of the presets.
    fn defaults() -> Self {
        Self::new(
            [16, 16, 16],
            1.0,
            8,
            8,
            2,
            1,
            8,
            [1, 1, 1],
            1,
            4,
            1,
            1,
            1,
            1,
            1,
            Vec::new(),
            1,
            1,
            1,
        )
    }

    /// Token grid `(z, y, x)` = window / P.
    pub fn token_grid(&self) -> [usize; 3] {
        self.window.map(|n| n / self.patch_size.max(1))
    }

    /// Number of tokens N.
    pub fn num_tokens(&self) -> usize {
        self.token_grid().iter().product()
    }

    /// Width d_c of a domain embedding: c_e · s³.
    pub fn domain_dim(&self) -> usize {
        self.domain_channels * self.gate_grid.pow(3)
    }

    /// Decoder channels at scale 1/2^level (level 0 = full resolution).
    pub fn channels_at(&self, level: u32) -> usize {
        self.decoder_channels << level
    }

    /// Which branches exist.
    pub fn branches(&self) -> Branches {
        Branches {
            identification: self.identification_head,
            lesion: self.lesion_head,
            modulation: self.dynamic_modulation,
        }
    }

    /// Checks every size constraint the modules rely on, so that `init` and `forward` never
    /// meet an impossible shape.
    ///
    /// # Errors
    /// [`Error::Config`] naming the first violated constraint.
    pub fn validate(&self) -> crate::Result<()> {
        let bad = |m: String| Err(Error::Config(m));
        let positive = [
            ("patch_size", self.patch_size),
            ("d_model", self.d_model),
            ("n_layers", self.n_layers),
            ("n_heads", self.n_heads),
            ("d_ff", self.d_ff),
            ("decoder_channels", self.decoder_channels),
            ("lesion_channels", self.lesion_channels),
            ("roi_channels", self.roi_channels),
            ("roi_output", self.roi_output),
            ("roi_sampling", self.roi_sampling),
            ("id_hidden", self.id_hidden),
            ("domain_channels", self.domain_channels),
            ("gate_grid", self.gate_grid),
            ("domain_hidden", self.domain_hidden),
        ];
        if let Some((name, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return bad(format!("{name} must be positive"));
        }
        // The 1/16 scale is the decoder's deepest level, the 1/4 scale comes from the token
        // grid by one 2x up-sampling: P = 8 is the only patch size for which the paper's
        // scales {1/4, 1/8, 1/16} are one step from the tokens.
        if self.patch_size != 8 {
            return bad(format!(
                "patch_size {} unsupported: the 1/4, 1/8, 1/16 taps assume P = 8",
                self.patch_size
            ));
        }
        for (axis, &n) in ["z", "y", "x"].iter().zip(&self.window) {
            if n == 0 || n % 16 != 0 {
                return bad(format!(
                    "window {axis} = {n} must be a positive multiple of 16"
                ));
            }
        }
        if self.d_model % self.n_heads != 0 {
            return bad(format!(
                "d_model {} is not divisible by n_heads {}",
                self.d_model, self.n_heads
            ));
        }
        let [a, b, c] = self.tap_layers;
        if !(1 <= a && a < b && b < c && c < self.n_layers) {
            return bad(format!(
                "tap_layers {:?} must be increasing, >= 1 and below n_layers {}",
                self.tap_layers, self.n_layers
            ));
        }
        if ![2, 4, 8].contains(&self.lesion_stride) {
            return bad(format!(
                "lesion_stride {} must be 2, 4 or 8 (a decoder level)",
                self.lesion_stride
            ));
        }
        if self.dynamic_modulation {
            if self.domains.is_empty() {
                return bad("dynamic modulation needs at least one domain".into());
            }
            if let Some(n) = self.token_grid().iter().find(|&&g| g % self.gate_grid != 0) {
                return bad(format!(
                    "gate_grid {} does not divide the token grid side {n}",
                    self.gate_grid
                ));
            }
            if !(self.domain_temperature.is_finite() && self.domain_temperature > 0.0) {
                return bad("domain_temperature must be positive".into());
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} must be in [0, 1)", self.dropout));
        }
        if !(self.spacing_mm.is_finite() && self.spacing_mm > 0.0) {
            return bad(format!("spacing {} mm must be positive", self.spacing_mm));
        }
        self.contract().validate()?;
        Ok(())
    }

    /// The model contract this configuration implies (input convention, output names and
    /// shapes, domain list).
    pub fn contract(&self) -> ModelContract {
        ModelContract {
            window: self.window,
            spacing_mm: self.spacing_mm,
            hu_min: HU_MIN,
            hu_max: HU_MAX,
            patch_size: self.patch_size,
            lesion_stride: self.lesion_stride,
            domain_dim: self.domain_dim(),
            domains: if self.dynamic_modulation {
                self.domains.clone()
            } else {
                Vec::new()
            },
            branches: self.branches(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_valid_and_ordered_by_size() {
        for p in Preset::ALL {
            p.config().validate().unwrap();
            assert_eq!(Preset::from_name(p.name()).unwrap(), p);
        }
        assert_eq!(VertebraFormerConfig::paper().num_tokens(), 4096);
        assert!(Preset::from_name("huge").is_err());
    }

    #[test]
    fn ablation_rows_switch_branches() {
        let base = Ablation::UnetrBaseline.apply(VertebraFormerConfig::tiny());
        assert_eq!(
            base.branches(),
            Branches {
                identification: false,
                lesion: false,
                modulation: false
            }
        );
        base.validate().unwrap();
        let lesion = Ablation::PlusLesion.apply(VertebraFormerConfig::tiny());
        assert!(lesion.identification_head && lesion.lesion_head && !lesion.dynamic_modulation);
        assert!(base.contract().domains.is_empty());
    }

    #[test]
    fn validation_names_the_broken_constraint() {
        let tiny = VertebraFormerConfig::tiny;
        let err = |c: VertebraFormerConfig| c.validate().unwrap_err().to_string();
        assert!(
            err(VertebraFormerConfig {
                window: [32, 32, 40],
                ..tiny()
            })
            .contains("multiple of 16")
        );
        assert!(
            err(VertebraFormerConfig {
                n_heads: 3,
                ..tiny()
            })
            .contains("n_heads")
        );
        assert!(
            err(VertebraFormerConfig {
                tap_layers: [1, 1, 2],
                ..tiny()
            })
            .contains("tap_layers")
        );
        assert!(
            err(VertebraFormerConfig {
                gate_grid: 3,
                ..tiny()
            })
            .contains("gate_grid")
        );
        assert!(
            err(VertebraFormerConfig {
                lesion_stride: 16,
                ..tiny()
            })
            .contains("lesion_stride")
        );
        assert!(
            err(VertebraFormerConfig {
                patch_size: 16,
                ..tiny()
            })
            .contains("patch_size")
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        let c = VertebraFormerConfig::cpu();
        let json = serde_json::to_string(&c).unwrap();
        let back: VertebraFormerConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }
}
