//! The model contract: the one written definition of what goes into the VertebraFormer network
//! and what comes out of it, shared by the Burn model (`vertebra-model`), the ONNX exporter and
//! the appliance.
//!
//! Nothing here computes a tensor. It fixes *names*, *shapes*, *strides*, *label orders* and the
//! *input convention* (spacing, HU window, normalisation, window size, axis order, domain list),
//! so that three programs written at different times cannot disagree about, say, whether label
//! channel 20 is L1 or whether a lesion offset is measured in voxels or grid cells.
//!
//! ## Axis order and coordinates
//! Every spatial tensor is `[batch, channel, z, y, x]` (Burn/ONNX `N, C, D, H, W`). This is the
//! storage order of [`crate::Volume`] (x fastest), so a window's voxel buffer *is* the tensor's
//! buffer, no transpose. Spatial triples in this contract (window size, boxes, offsets, sizes)
//! are therefore ordered `(z, y, x)` as well.
//!
//! Continuous positions use **voxel-edge coordinates** of the input window: voxel `i` covers
//! `[i, i + 1)` and its centre is at `i + 0.5`. A box that covers voxels `a..=b` along an axis
//! is `[a, b + 1)`. An output with stride `s` has cell `j` covering `[j s, (j + 1) s)`.
//!
//! ## Input
//! One CT window, resampled to [`ModelContract::spacing_mm`] isotropic, HU clipped to
//! `[hu_min, hu_max]` and scaled to `[0, 1]` exactly as
//! [`crate::volume::ops::normalize_hu`] does (the paper's window, -1000..1000 HU).
//!
//! ## Outputs (names in [`names`])
//! | name | shape | stride | meaning |
//! |---|---|---|---|
//! | `vertebra_logit` | `[B, 1, Z, Y, X]` | 1 | binary vertebra-vs-background logit |
//! | `label_logits` | `[B, 26, Z, Y, X]` | 1 | background + C1..L5 + L6 logits ([`seg_label_names`]) |
//! | `id_logits` | `[K, 25]` | — | per instance box: C1..L5, L6 logits ([`id_class_names`]) |
//! | `lesion_heatmap_logits` | `[B, 4, Z/s, Y/s, X/s]` | s | lesion-centre logits per class ([`lesion_class_names`]) |
//! | `lesion_offset` | `[B, 3, Z/s, Y/s, X/s]` | s | sub-cell centre offset `(z, y, x)` in cells |
//! | `lesion_log_size` | `[B, 3, Z/s, Y/s, X/s]` | s | `ln` of the lesion extent `(z, y, x)` in input voxels |
//! | `domain_logits` | `[B, n_domains]` | — | domain classifier g(I) logits |
//! | `domain_probs` | `[B, n_domains]` | — | p(d \| I) (or the caller's domain mix) |
//! | `domain_embedding` | `[B, d_c]` | — | e* = Σ p(d \| I) e_d fed to the modulation |
//! | `roi_features` | `[B, C_roi, Z/p, Y/p, X/p]` | p (patch) | exported main graph only, when the network has an ID head: the reduced modulated encoder features the RoIAlign between the two ONNX graphs reads |
//!
//! A lesion found at heatmap cell `j` (per axis) has its centre at `(j + offset) · s` and its
//! extent `exp(log_size)` in input voxels; multiply by `spacing_mm` for millimetres.

use crate::anatomy::{ALL_LESION_CLASSES, ALL_VERTEBRAE, NUM_LESION_CLASSES, NUM_VERTEBRAE};
use crate::volume::ops::{HU_MAX, HU_MIN};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Number of segmentation classes: background + the 25 vertebra classes (C1..L5, L6).
pub const NUM_SEG_CLASSES: usize = NUM_VERTEBRAE + 1;

/// Number of identification classes: the 25 vertebra classes; index `i` is label `i + 1`.
pub const NUM_ID_CLASSES: usize = NUM_VERTEBRAE;

/// Number of lesion heatmap channels, one per [`crate::anatomy::LesionClass`] in index order.
pub const NUM_LESION_CHANNELS: usize = NUM_LESION_CLASSES;

/// The paper's input spacing (1.0 mm isotropic).
pub const PAPER_SPACING_MM: f64 = 1.0;

/// The paper's window (128³ voxels).
pub const PAPER_WINDOW: [usize; 3] = [128, 128, 128];

/// Values per box row in the `boxes` input: `(batch, z0, y0, x0, z1, y1, x1)`.
pub const BOX_ROW_LEN: usize = 7;

/// Stable tensor names. The Burn forward output, the safetensors-backed ONNX graph and the
/// appliance's post-processing all refer to tensors by these strings.
pub mod names {
    /// Input: normalised CT window `[B, 1, Z, Y, X]`.
    pub const IMAGE: &str = "image";
    /// Input to the identification head: `[K, 7]` rows `(batch, z0, y0, x0, z1, y1, x1)` in
    /// voxel-edge coordinates of the window.
    pub const BOXES: &str = "boxes";
    /// Optional input: caller-given domain mix `[B, n_domains]`, overrides the classifier.
    pub const DOMAIN_MIX: &str = "domain_mix";
    /// Binary vertebra logit `[B, 1, Z, Y, X]`.
    pub const VERTEBRA_LOGIT: &str = "vertebra_logit";
    /// 26-class label logits `[B, 26, Z, Y, X]`.
    pub const LABEL_LOGITS: &str = "label_logits";
    /// Identification logits `[K, 25]`.
    pub const ID_LOGITS: &str = "id_logits";
    /// Lesion-centre heatmap logits `[B, 4, Z/s, Y/s, X/s]`.
    pub const LESION_HEATMAP_LOGITS: &str = "lesion_heatmap_logits";
    /// Lesion centre offsets in cells `[B, 3, Z/s, Y/s, X/s]`.
    pub const LESION_OFFSET: &str = "lesion_offset";
    /// Lesion log-extent in input voxels `[B, 3, Z/s, Y/s, X/s]`.
    pub const LESION_LOG_SIZE: &str = "lesion_log_size";
    /// Domain classifier logits `[B, n_domains]`.
    pub const DOMAIN_LOGITS: &str = "domain_logits";
    /// Domain mix actually used `[B, n_domains]`.
    pub const DOMAIN_PROBS: &str = "domain_probs";
    /// Effective domain embedding e* `[B, d_c]`.
    pub const DOMAIN_EMBEDDING: &str = "domain_embedding";
    /// Exported main graph only (networks with an identification head): the reduced modulated
    /// encoder features `[B, roi_channels, Z/p, Y/p, X/p]` (stride = patch size) that the
    /// RoIAlign between the main graph and the identification-head graph reads. The Burn
    /// forward computes them internally and does not output them.
    pub const ROI_FEATURES: &str = "roi_features";
}

/// Segmentation channel names in channel order: "background", "C1" … "L5", "L6".
pub fn seg_label_names() -> Vec<String> {
    std::iter::once("background".to_owned())
        .chain(ALL_VERTEBRAE.iter().map(|v| v.name().to_owned()))
        .collect()
}

/// Identification class names in logit order: "C1" … "L5", "L6" (index `i` = label `i + 1`).
pub fn id_class_names() -> Vec<String> {
    ALL_VERTEBRAE.iter().map(|v| v.name().to_owned()).collect()
}

/// Lesion heatmap channel names in channel order (the [`crate::anatomy::LesionClass`] keys).
pub fn lesion_class_names() -> Vec<String> {
    ALL_LESION_CLASSES
        .iter()
        .map(|c| c.key().to_owned())
        .collect()
}

/// One dimension of a tensor in the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dim {
    /// The batch size, chosen at run time.
    Batch,
    /// The number of instance boxes, chosen at run time.
    Boxes,
    /// A fixed size.
    Fixed(usize),
}

/// Name, shape, stride and channel labels of one input or output tensor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    /// Stable name (one of [`names`]).
    pub name: String,
    /// Shape; spatial tensors are `[B, C, Z, Y, X]`.
    pub dims: Vec<Dim>,
    /// Input voxels per output cell along each spatial axis; `None` for non-spatial tensors.
    pub stride: Option<usize>,
    /// Channel (or class) names in channel order, where channels are named.
    pub labels: Vec<String>,
    /// What the values mean (units, activation still to apply).
    pub meaning: String,
}

/// Which branches a model has; absent branches produce no tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Branches {
    /// Identification head (RoIAlign + MLP → 25 logits).
    pub identification: bool,
    /// CenterNet-style lesion head.
    pub lesion: bool,
    /// Domain classifier, prototypes and dynamic modulation.
    pub modulation: bool,
}

/// The complete model contract of one trained network: what a model bundle's manifest records
/// and what the appliance checks before it runs a bundle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelContract {
    /// Window size `(z, y, x)` in voxels.
    pub window: [usize; 3],
    /// Isotropic input spacing in millimetres.
    pub spacing_mm: f64,
    /// Lower end of the HU window (maps to 0).
    pub hu_min: f32,
    /// Upper end of the HU window (maps to 1).
    pub hu_max: f32,
    /// Patch (token) size of the encoder in voxels; the window must be a multiple of it.
    pub patch_size: usize,
    /// Stride of the lesion outputs in input voxels.
    pub lesion_stride: usize,
    /// Width `d_c` of a domain embedding.
    pub domain_dim: usize,
    /// Domain names in the order of `domain_logits` / `domain_probs` channels.
    pub domains: Vec<String>,
    /// Which branches exist.
    pub branches: Branches,
}

impl ModelContract {
    /// The domain list of the synthetic phantom generator, in its stable order.
    pub fn phantom_domains() -> Vec<String> {
        crate::phantom::domain::presets()
            .into_iter()
            .map(|p| p.name)
            .collect()
    }

    /// Checks the internal consistency of the contract.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the first inconsistent field.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("model contract: {m}")));
        if self.patch_size == 0 || self.lesion_stride == 0 {
            return bad("patch size and lesion stride must be positive".into());
        }
        for (axis, &n) in ["z", "y", "x"].iter().zip(&self.window) {
            if n == 0 || n % self.patch_size != 0 || n % self.lesion_stride != 0 {
                return bad(format!(
                    "window {axis} = {n} is not a positive multiple of the patch size {} and the \
                     lesion stride {}",
                    self.patch_size, self.lesion_stride
                ));
            }
        }
        if !(self.spacing_mm.is_finite() && self.spacing_mm > 0.0) {
            return bad(format!("spacing {} mm is not positive", self.spacing_mm));
        }
        if !(self.hu_min.is_finite() && self.hu_max.is_finite() && self.hu_min < self.hu_max) {
            return bad(format!(
                "HU window [{}, {}] is empty",
                self.hu_min, self.hu_max
            ));
        }
        if self.branches.modulation {
            if self.domains.is_empty() || self.domain_dim == 0 {
                return bad("modulation needs at least one domain and a domain width".into());
            }
            let mut seen = std::collections::HashSet::new();
            if let Some(d) = self.domains.iter().find(|d| !seen.insert(d.as_str())) {
                return bad(format!("domain {d:?} is listed twice"));
            }
        }
        Ok(())
    }

    /// The paper's HU window, as [`crate::volume::ops`] applies it.
    pub fn paper_hu_window() -> (f32, f32) {
        (HU_MIN, HU_MAX)
    }

    /// The input tensors, in graph order.
    pub fn inputs(&self) -> Vec<TensorSpec> {
        let [z, y, x] = self.window;
        let mut v = vec![TensorSpec {
            name: names::IMAGE.into(),
            dims: vec![
                Dim::Batch,
                Dim::Fixed(1),
                Dim::Fixed(z),
                Dim::Fixed(y),
                Dim::Fixed(x),
            ],
            stride: Some(1),
            labels: vec![],
            meaning: format!(
                "CT at {} mm isotropic, HU clipped to [{}, {}] and scaled to [0, 1]",
                self.spacing_mm, self.hu_min, self.hu_max
            ),
        }];
        if self.branches.identification {
            v.push(TensorSpec {
                name: names::BOXES.into(),
                dims: vec![Dim::Boxes, Dim::Fixed(BOX_ROW_LEN)],
                stride: None,
                labels: ["batch", "z0", "y0", "x0", "z1", "y1", "x1"]
                    .map(String::from)
                    .to_vec(),
                meaning: "instance boxes in voxel-edge coordinates of the window".into(),
            });
        }
        if self.branches.modulation {
            v.push(TensorSpec {
                name: names::DOMAIN_MIX.into(),
                dims: vec![Dim::Batch, Dim::Fixed(self.domains.len())],
                stride: None,
                labels: self.domains.clone(),
                meaning: "optional: convex domain weights that replace p(d|I)".into(),
            });
        }
        v
    }

    /// The output tensors of the branches that exist, in graph order.
    pub fn outputs(&self) -> Vec<TensorSpec> {
        let [z, y, x] = self.window;
        let s = self.lesion_stride;
        let spatial = |c: usize, div: usize| {
            vec![
                Dim::Batch,
                Dim::Fixed(c),
                Dim::Fixed(z / div),
                Dim::Fixed(y / div),
                Dim::Fixed(x / div),
            ]
        };
        let axes = || ["z", "y", "x"].map(String::from).to_vec();
        let mut v = vec![
            TensorSpec {
                name: names::VERTEBRA_LOGIT.into(),
                dims: spatial(1, 1),
                stride: Some(1),
                labels: vec!["vertebra".into()],
                meaning: "logit; sigmoid > 0.5 is vertebra".into(),
            },
            TensorSpec {
                name: names::LABEL_LOGITS.into(),
                dims: spatial(NUM_SEG_CLASSES, 1),
                stride: Some(1),
                labels: seg_label_names(),
                meaning: "logits; softmax over channels, channel = label value".into(),
            },
        ];
        if self.branches.identification {
            v.push(TensorSpec {
                name: names::ID_LOGITS.into(),
                dims: vec![Dim::Boxes, Dim::Fixed(NUM_ID_CLASSES)],
                stride: None,
                labels: id_class_names(),
                meaning: "logits per box; index i is label i + 1".into(),
            });
        }
        if self.branches.lesion {
            v.push(TensorSpec {
                name: names::LESION_HEATMAP_LOGITS.into(),
                dims: spatial(NUM_LESION_CHANNELS, s),
                stride: Some(s),
                labels: lesion_class_names(),
                meaning: "logits; sigmoid is the centre heatmap".into(),
            });
            v.push(TensorSpec {
                name: names::LESION_OFFSET.into(),
                dims: spatial(3, s),
                stride: Some(s),
                labels: axes(),
                meaning: "centre = (cell + offset) * stride, in cells".into(),
            });
            v.push(TensorSpec {
                name: names::LESION_LOG_SIZE.into(),
                dims: spatial(3, s),
                stride: Some(s),
                labels: axes(),
                meaning: "ln(extent in input voxels)".into(),
            });
        }
        if self.branches.modulation {
            let d = self.domains.len();
            v.push(TensorSpec {
                name: names::DOMAIN_LOGITS.into(),
                dims: vec![Dim::Batch, Dim::Fixed(d)],
                stride: None,
                labels: self.domains.clone(),
                meaning: "domain classifier logits".into(),
            });
            v.push(TensorSpec {
                name: names::DOMAIN_PROBS.into(),
                dims: vec![Dim::Batch, Dim::Fixed(d)],
                stride: None,
                labels: self.domains.clone(),
                meaning: "domain mix used (softmax of the logits, or the caller's)".into(),
            });
            v.push(TensorSpec {
                name: names::DOMAIN_EMBEDDING.into(),
                dims: vec![Dim::Batch, Dim::Fixed(self.domain_dim)],
                stride: None,
                labels: vec![],
                meaning: "effective domain embedding e*".into(),
            });
        }
        v
    }

    /// The spec of the output called `name`, if this contract has it.
    pub fn output(&self, name: &str) -> Option<TensorSpec> {
        self.outputs().into_iter().find(|t| t.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anatomy::{LesionClass, Vertebra};

    fn contract() -> ModelContract {
        ModelContract {
            window: PAPER_WINDOW,
            spacing_mm: PAPER_SPACING_MM,
            hu_min: HU_MIN,
            hu_max: HU_MAX,
            patch_size: 8,
            lesion_stride: 4,
            domain_dim: 64,
            domains: ModelContract::phantom_domains(),
            branches: Branches {
                identification: true,
                lesion: true,
                modulation: true,
            },
        }
    }

    #[test]
    fn label_orders_follow_anatomy() {
        let seg = seg_label_names();
        assert_eq!(seg.len(), 26);
        assert_eq!(seg[0], "background");
        assert_eq!(seg[Vertebra::L1.label() as usize], "L1");
        assert_eq!(seg[25], "L6");
        let id = id_class_names();
        assert_eq!(id.len(), NUM_ID_CLASSES);
        assert_eq!(id[Vertebra::C1.ordinal()], "C1");
        assert_eq!(
            lesion_class_names()[LesionClass::ScleroticMetastasis.index()],
            "sclerotic_metastasis"
        );
    }

    #[test]
    fn output_shapes_follow_window_and_stride() {
        let c = contract();
        c.validate().unwrap();
        let heat = c.output(names::LESION_HEATMAP_LOGITS).unwrap();
        assert_eq!(
            heat.dims,
            vec![
                Dim::Batch,
                Dim::Fixed(4),
                Dim::Fixed(32),
                Dim::Fixed(32),
                Dim::Fixed(32)
            ]
        );
        assert_eq!(heat.stride, Some(4));
        let labels = c.output(names::LABEL_LOGITS).unwrap();
        assert_eq!(labels.dims[1], Dim::Fixed(26));
        assert_eq!(c.outputs().len(), 9);
        assert_eq!(c.inputs().len(), 3);
    }

    #[test]
    fn switched_off_branches_have_no_tensors() {
        let mut c = contract();
        c.branches = Branches {
            identification: false,
            lesion: false,
            modulation: false,
        };
        let names: Vec<String> = c.outputs().into_iter().map(|t| t.name).collect();
        assert_eq!(names, [names::VERTEBRA_LOGIT, names::LABEL_LOGITS]);
        assert_eq!(c.inputs().len(), 1);
    }

    #[test]
    fn validation_rejects_inconsistent_contracts() {
        let mut c = contract();
        c.window = [128, 128, 100];
        assert!(c.validate().is_err());
        let mut c = contract();
        c.domains.push(c.domains[0].clone());
        assert!(c.validate().is_err());
        let mut c = contract();
        c.hu_max = c.hu_min;
        assert!(c.validate().is_err());
    }

    #[test]
    fn contract_round_trips_through_json() {
        let c = contract();
        let s = serde_json::to_string(&c).unwrap();
        let back: ModelContract = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
    }
}
