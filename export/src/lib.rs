//! # vertebra-export
//!
//! The bridge from the trainer to the appliance: ONNX export of a trained VertebraFormer with
//! numeric parity to the Burn forward, and signed model bundles.
//!
//! - [`graph`] (feature `writer`): the ONNX graph writer (opset 17, IR 8), mirroring the network
//!   from its config and reading the safetensors weights by their stable names;
//! - [`roi`]: the 3-D RoIAlign and box geometry between `model.onnx` and `id_head.onnx`, plain
//!   Rust, equal to the Burn RoIAlign;
//! - [`manifest`], [`signing`], [`bundle`]: the bundle layout, its manifest (the model contract
//!   and provenance), ed25519 signatures and [`bundle::verify_bundle`], which the appliance
//!   calls before it runs a bundle;
//! - [`trt_cache`]: the TensorRT engine cache directory keyed by GPU, TensorRT version and
//!   bundle;
//! - [`runtime`] (feature `runtime`): a bundle's graphs run by ONNX Runtime as core's
//!   `Network` — the appliance's inference and the trainer's bundle evaluation;
//! - [`export`] (feature `writer`): weights → bundle directory (and `.tar`);
//! - [`safetensors`] (feature `writer`): a strict f32 safetensors reader.
//!
//! ## What this crate is not for
//! It loads and configures no ONNX Runtime library or session (that is the appliance's engine);
//! with `runtime` it only adapts sessions it is given. The reference forward is
//! `vertebra-model`'s (Burn). Without the default `writer` feature it does not link Burn, so the
//! appliance can depend on it for verification and RoIAlign only.

pub mod bundle;
pub mod error;
#[cfg(feature = "writer")]
pub mod export;
#[cfg(feature = "writer")]
pub mod graph;
pub mod manifest;
pub mod roi;
#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "writer")]
pub mod safetensors;
pub mod signing;
pub mod trt_cache;

pub use error::{Error, Result};
