//! # vertebra-model
//!
//! The VertebraFormer network (Tang et al., see `shared/paper-notes.md`) in Burn 0.22.1: a 3-D
//! ViT encoder over P³ patches with UNETR-style multi-scale taps, a domain classifier with
//! learnable prototypes driving a dynamic modulation of the encoder output, a four-stage
//! segmentation decoder (binary + 26-class logits), a RoIAlign identification head (25
//! vertebra classes) and a CenterNet lesion head (4 classes).
//!
//! - [`config`]: [`VertebraFormerConfig`] (serde + Burn `Config`), presets `paper` / `cpu` /
//!   `tiny`, the ablation rows of the paper's Table 6;
//! - [`blocks`]: one module per block, each with its shape test;
//! - [`model`]: [`VertebraFormer`], its [`VertebraFormerInput`] and [`VertebraFormerOutput`]
//!   (tensors named as in [`vertebra_core::contract`]);
//! - [`weights`]: safetensors save/load with stable names and the config in the metadata;
//! - [`cost`]: analytic parameters, MACs/FLOPs and activation-memory estimates;
//! - [`mod@bench`]: forward/step timing and peak RSS, behind `vertebra-model bench`.
//!
//! ## Backend
//! Burn 0.22 removed the `B: Backend` type parameter: tensors are `Tensor<D>` and the backend
//! is chosen at run time by the [`burn::tensor::Device`] (`Device::flex()` for the pure-Rust
//! CPU backend used in tests, `.autodiff()` for training, a GPU device where one is built
//! in). Every module here is therefore backend-generic without a type parameter.
//!
//! ## What this crate is not for
//! No losses, no training loop, no optimiser, no data loading, no augmentation: those belong
//! to the trainer, which consumes [`VertebraFormerOutput`]. No pre- or post-processing either
//! (HU normalisation, sliding windows, instance extraction, lesion NMS, anatomical-order
//! decoding): those live in `vertebra-core` so the trainer and the appliance share one code
//! path. No ONNX: the exporter reads the safetensors this crate writes. The appliance never
//! links this crate.

pub mod bench;
pub mod blocks;
pub mod config;
pub mod cost;
pub mod error;
pub mod model;
pub mod weights;

pub use config::{Ablation, Preset, VertebraFormerConfig};
pub use cost::ModelCost;
pub use error::{Error, Result};
pub use model::{VertebraFormer, VertebraFormerInput, VertebraFormerOutput};
