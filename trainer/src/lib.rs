//! # vertebra-trainer
//!
//! The training recipe of VertebraFormer (see `shared/paper-notes.md`, "Training"): the
//! dataset manifest, in-memory phantom datasets, preprocessing into model windows with every
//! target, the losses, the curriculum and a training loop on Burn's flex CPU backend.
//!
//! - [`manifest`]: the documented CSV manifest and its validating loader;
//! - [`dataset`]: cases in memory, phantom datasets from `vertebra_core::phantom`;
//! - [`preprocess`]: resampling + HU normalisation (core's code path), windows and targets;
//! - [`losses`]: segmentation, identification, detection and domain losses on Burn tensors;
//! - [`schedule`]: loss-weight curriculum and the cosine learning-rate schedule;
//! - [`train`]: one optimisation step (AdamW, global-norm clipping, curriculum weights);
//! - [`run`]: recipes, the training loop (validation, early stopping, JSONL log, prefetch);
//! - [`checkpoint`]: crash-safe checkpoints and exact resume;
//! - [`readers`], [`cache`]: VerSe/CTSpine1K-style NIfTI + JSON readers, per-case cache;
//! - [`split`]: patient-level stratified splits and the leakage audit;
//! - [`augment`]: label-consistent spatial and intensity augmentation;
//! - [`prefetch`]: bounded background loading in deterministic order;
//! - [`infer`], [`evaluate`]: sliding-window inference, metrics with CIs and comparisons;
//! - [`perturb`]: the robustness study's input perturbations;
//! - [`tta`]: test-time domain-code conditions, IN/AdaIN, TENT, backend selection;
//! - [`studies`]: evaluation of a run and the paper's studies; [`plot`]: PNG figures.

pub mod analyze_eval;
pub mod augment;
pub mod bundle_eval;
pub mod cache;
pub mod checkpoint;
pub mod dataset;
pub mod error;
pub mod evaluate;
pub mod infer;
pub mod losses;
pub mod manifest;
pub mod perturb;
pub mod plot;
pub mod prefetch;
pub mod preprocess;
pub mod readers;
pub mod run;
pub mod schedule;
pub mod split;
pub mod studies;
pub mod train;
pub mod tta;

pub use error::{Error, Result};
