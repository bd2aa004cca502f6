//! The segmentation decoder (paper Eq. 6): four up-sampling stages
//! `F(l+1) = Refine(Up(F(l)) + Conv(Skip(l)))` from 1/16 to full resolution, channels halved at
//! each stage, and the hybrid output: a binary vertebra logit and 26 label logits.
//!
//! `Up` is a 2×2×2 stride-2 transposed convolution (c → c/2), `Conv(Skip)` a 3×3×3
//! ConvNormAct on the skip, and `Refine` a 3×3×3 ConvNormAct after the sum (the paper's sum is
//! linear; one non-linear conv per stage is what UNETR's decoder blocks do and what makes the
//! stage more than a linear up-sampler). The skips are, coarse to fine: the 1/8 and 1/4
//! encoder taps, then a convolutional stem on the image at 1/2 and full resolution (UNETR's
//! `encoder1`; a transformer tap carries no voxel-level detail at those scales).

use burn::module::Module;
use burn::nn::conv::{Conv3d, Conv3dConfig, ConvTranspose3d, ConvTranspose3dConfig};
use burn::tensor::{Device, Tensor};
use vertebra_core::contract::NUM_SEG_CLASSES;

use super::conv_block::{ConvKind, ConvNormAct};

/// One up-sampling stage: `c` channels at scale 2^-(l) → `c/2` at 2^-(l-1).
#[derive(Module, Debug)]
pub struct UpStage {
    /// Transposed convolution c → c/2, weight `[c, c/2, 2, 2, 2]`.
    pub up: ConvTranspose3d,
    /// Conv(Skip): skip channels → c/2.
    pub skip: ConvNormAct,
    /// Refinement after the sum.
    pub refine: ConvNormAct,
}

impl UpStage {
    /// A stage from `c` channels, with a skip of `skip_channels`.
    pub fn new(c: usize, skip_channels: usize, device: &Device) -> Self {
        Self {
            up: ConvTranspose3dConfig::new([c, c / 2], [2, 2, 2])
                .with_stride([2, 2, 2])
                .with_bias(false)
                .init(device),
            skip: ConvNormAct::new(ConvKind::Same3, skip_channels, c / 2, device),
            refine: ConvNormAct::new(ConvKind::Same3, c / 2, c / 2, device),
        }
    }

    /// `f [B, c, n, n, n]`, `skip [B, s, 2n, 2n, 2n]` → `[B, c/2, 2n, 2n, 2n]`.
    pub fn forward(&self, f: Tensor<5>, skip: Tensor<5>) -> Tensor<5> {
        self.refine
            .forward(self.up.forward(f) + self.skip.forward(skip))
    }
}

/// Convolutional stem on the image: the full- and half-resolution skips.
#[derive(Module, Debug)]
pub struct Stem {
    /// 3×3×3, 1 → c at full resolution.
    pub full: ConvNormAct,
    /// 2×2×2 stride 2, c → 2c at 1/2.
    pub half: ConvNormAct,
}

impl Stem {
    /// A stem with `c` full-resolution channels.
    pub fn new(c: usize, device: &Device) -> Self {
        Self {
            full: ConvNormAct::new(ConvKind::Same3, 1, c, device),
            half: ConvNormAct::new(ConvKind::Down2, c, 2 * c, device),
        }
    }

    /// `[B, 1, Z, Y, X]` → (`[B, c, Z, Y, X]`, `[B, 2c, Z/2, Y/2, X/2]`).
    pub fn forward(&self, image: Tensor<5>) -> (Tensor<5>, Tensor<5>) {
        let full = self.full.forward(image);
        let half = self.half.forward(full.clone());
        (full, half)
    }
}

/// Decoder features at every level, finest last (what the heads read).
#[derive(Debug, Clone)]
pub struct DecoderLevels {
    /// Outputs of the four stages: scales 1/8, 1/4, 1/2, 1/1.
    pub stages: [Tensor<5>; 4],
}

/// Four stages and the two segmentation outputs.
#[derive(Module, Debug)]
pub struct SegmentationDecoder {
    /// Stages 1/16→1/8, 1/8→1/4, 1/4→1/2, 1/2→1/1.
    pub stages: Vec<UpStage>,
    /// 1×1×1, c → 1: binary vertebra logit.
    pub vertebra: Conv3d,
    /// 1×1×1, c → 26: label logits.
    pub labels: Conv3d,
}

impl SegmentationDecoder {
    /// A decoder with `c` channels at full resolution (16c at the 1/16 input).
    pub fn new(c: usize, device: &Device) -> Self {
        Self {
            stages: (1..=4)
                .rev()
                .map(|level| UpStage::new(c << level, c << (level - 1), device))
                .collect(),
            vertebra: Conv3dConfig::new([c, 1], [1, 1, 1]).init(device),
            labels: Conv3dConfig::new([c, NUM_SEG_CLASSES], [1, 1, 1]).init(device),
        }
    }

    /// Bottleneck `[B, 16c, Z/16, ·, ·]` and skips (1/8, 1/4, 1/2, 1/1; channels 8c, 4c, 2c, c)
    /// → the stage outputs.
    pub fn levels(&self, bottleneck: Tensor<5>, skips: [Tensor<5>; 4]) -> DecoderLevels {
        let mut f = bottleneck;
        let mut out = Vec::with_capacity(4);
        for (stage, skip) in self.stages.iter().zip(skips) {
            f = stage.forward(f, skip);
            out.push(f.clone());
        }
        let [a, b, c, d]: [Tensor<5>; 4] =
            out.try_into().expect("the decoder always has four stages");
        DecoderLevels {
            stages: [a, b, c, d],
        }
    }

    /// Full-resolution features `[B, c, Z, Y, X]` → (vertebra logit `[B, 1, ·]`, label logits
    /// `[B, 26, ·]`).
    pub fn outputs(&self, full: Tensor<5>) -> (Tensor<5>, Tensor<5>) {
        (
            self.vertebra.forward(full.clone()),
            self.labels.forward(full),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::blocks::test_util::{device, random};

    #[test]
    fn shapes() {
        let dev = device();
        let c = 2;
        let dec = SegmentationDecoder::new(c, &dev);
        let stem = Stem::new(c, &dev);
        let image = random([1, 1, 32, 32, 16], &dev);
        let (full, half) = stem.forward(image);
        assert_eq!(full.dims(), [1, 2, 32, 32, 16]);
        assert_eq!(half.dims(), [1, 4, 16, 16, 8]);
        let levels = dec.levels(
            random([1, 32, 2, 2, 1], &dev),
            [
                random([1, 16, 4, 4, 2], &dev),
                random([1, 8, 8, 8, 4], &dev),
                half,
                full,
            ],
        );
        let dims: Vec<[usize; 5]> = levels.stages.iter().map(Tensor::dims).collect();
        assert_eq!(
            dims,
            [
                [1, 16, 4, 4, 2],
                [1, 8, 8, 8, 4],
                [1, 4, 16, 16, 8],
                [1, 2, 32, 32, 16]
            ]
        );
        let (v, l) = dec.outputs(levels.stages[3].clone());
        assert_eq!(v.dims(), [1, 1, 32, 32, 16]);
        assert_eq!(l.dims(), [1, NUM_SEG_CLASSES, 32, 32, 16]);
    }
}
