//! The ONNX graph writer: from a safetensors file written by `vertebra_model::weights::save`
//! to `model.onnx` (the network, [`network::ROI_FEATURES`] as an extra output when the network
//! identifies vertebrae) and `id_head.onnx` (the identification MLP).
//!
//! Why two graphs: 3-D RoIAlign is not an ONNX operator. The RoIAlign runs in Rust
//! ([`crate::roi`], proven equal to the Burn RoIAlign in tests) between the two graphs, so the
//! trainer (Burn) and the appliance (ort) compute the identical function.

pub mod builder;
pub mod network;

use std::path::Path;

use protobuf::Message;
use vertebra_model::VertebraFormerConfig;
use vertebra_model::weights::{FORMAT_VERSION, META_CONFIG, META_FORMAT};

pub use builder::Elem;

use crate::safetensors::WeightFile;
use crate::{Error, Result};

/// The serialised graphs of one export.
#[derive(Debug, Clone)]
pub struct ExportedGraphs {
    /// The network's configuration (from the weights' metadata).
    pub config: VertebraFormerConfig,
    /// `model.onnx`.
    pub main: Vec<u8>,
    /// `id_head.onnx`, present when the network has an identification head.
    pub id_head: Option<Vec<u8>>,
}

/// Reads the configuration stored in a weights file's metadata.
///
/// # Errors
/// [`Error::Weights`] for a missing/foreign format version or an unreadable config.
pub fn config_of(weights: &WeightFile) -> Result<VertebraFormerConfig> {
    let werr = |m: String| Error::Weights {
        path: weights.path().to_path_buf(),
        message: m,
    };
    match weights.metadata().get(META_FORMAT).map(String::as_str) {
        Some(FORMAT_VERSION) => {}
        other => {
            return Err(werr(format!(
                "weights format version {other:?}, this exporter reads {FORMAT_VERSION:?}"
            )));
        }
    }
    let json = weights
        .metadata()
        .get(META_CONFIG)
        .ok_or_else(|| werr(format!("no {META_CONFIG} metadata")))?;
    serde_json::from_str(json).map_err(|e| werr(format!("bad {META_CONFIG}: {e}")))
}

/// Exports the safetensors file at `path` in `compute` precision (I/O always f32). Every
/// tensor of the file must be consumed by the graphs.
///
/// # Errors
/// See [`config_of`], [`network::main_model`]; [`Error::Weights`] for tensors the graphs do not
/// read.
pub fn export_weights(path: &Path, compute: Elem) -> Result<ExportedGraphs> {
    let weights = WeightFile::read(path)?;
    let config = config_of(&weights)?;
    let main = network::main_model(&config, &weights, compute)?;
    let id_head = if config.identification_head {
        Some(network::id_graph(&config, &weights, compute)?)
    } else {
        None
    };
    weights.check_all_used()?;
    let ser = |m: &onnx_protobuf::ModelProto| {
        m.write_to_bytes()
            .map_err(|e| Error::Other(format!("cannot serialise the ONNX model: {e}")))
    };
    Ok(ExportedGraphs {
        main: ser(&main)?,
        id_head: id_head.as_ref().map(ser).transpose()?,
        config,
    })
}
