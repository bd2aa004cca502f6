//! Weights on disk: safetensors with stable, documented tensor names, and the configuration in
//! the file's metadata so a file is self-describing.
//!
//! ## Names
//! A tensor's name is its field path in [`crate::VertebraFormer`], joined by dots, e.g.
//! `patch_embed.proj.weight`, `patch_embed.pos`, `encoder.layers.0.attn.query.weight`,
//! `encoder.layers.0.ffn_in.bias`, `encoder.norm.gamma`, `tap_quarter.up.weight`,
//! `decoder.stages.3.refine.conv.weight`, `decoder.labels.bias`,
//! `identification.fc1.weight`, `lesion.heatmap.bias`, `domain.prototypes`,
//! `modulation.spatial_conv.weight`. Absent branches have no tensors. [`tensor_names`] lists
//! them for a configuration; a test pins a sample of them so a rename cannot slip through.
//!
//! ## Layouts (what the ONNX exporter must know)
//! - Linear weights are `[in, out]` (Burn's layout, transposed from PyTorch): `y = x W + b`,
//!   i.e. a MatMul without transpose.
//! - Conv3d weights are `[out, in, kz, ky, kx]`; ConvTranspose3d weights are
//!   `[in, out, kz, ky, kx]` (both as ONNX expects).
//! - Layer/instance norms store `gamma` and `beta`.
//!
//! ## Metadata
//! `vertebra_config` holds the [`VertebraFormerConfig`] as JSON, `vertebra_contract` the
//! [`vertebra_core::contract::ModelContract`] as JSON, `vertebra_format` the format version
//! [`FORMAT_VERSION`].

use std::collections::HashMap;
use std::path::Path;

use burn::store::{ModuleSnapshot, SafetensorsStore};
use burn::tensor::Device;

use crate::config::VertebraFormerConfig;
use crate::model::VertebraFormer;
use crate::{Error, Result};

/// Version of this file layout; bump when a name or layout changes.
pub const FORMAT_VERSION: &str = "1";

/// Metadata key of the configuration JSON.
pub const META_CONFIG: &str = "vertebra_config";
/// Metadata key of the contract JSON.
pub const META_CONTRACT: &str = "vertebra_contract";
/// Metadata key of the format version.
pub const META_FORMAT: &str = "vertebra_format";

/// Largest safetensors header we accept (the paper model's header is ~60 kB).
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// Names of every tensor of `model`, sorted.
pub fn tensor_names(model: &VertebraFormer) -> Vec<String> {
    let mut names: Vec<String> = model
        .collect(None, None, true)
        .into_iter()
        .map(|t| t.name.clone())
        .collect();
    names.sort();
    names
}

/// Writes `model` (built from `config`) to `path` as safetensors with the metadata above.
///
/// # Errors
/// [`Error::Weights`] if the file cannot be written.
pub fn save(model: &VertebraFormer, config: &VertebraFormerConfig, path: &Path) -> Result<()> {
    let werr = |m: String| Error::Weights {
        path: path.to_path_buf(),
        message: m,
    };
    let config_json = serde_json::to_string(config).map_err(|e| werr(e.to_string()))?;
    let contract_json =
        serde_json::to_string(&config.contract()).map_err(|e| werr(e.to_string()))?;
    let mut store = SafetensorsStore::from_file(path)
        .skip_enum_variants(true)
        .metadata(META_FORMAT, FORMAT_VERSION)
        .metadata(META_CONFIG, config_json)
        .metadata(META_CONTRACT, contract_json)
        .overwrite(true);
    model
        .save_into(&mut store)
        .map_err(|e| werr(format!("cannot write: {e}")))
}

/// Reads the metadata block of a safetensors file.
///
/// # Errors
/// [`Error::Weights`] if the file is unreadable or its header is malformed.
pub fn read_metadata(path: &Path) -> Result<HashMap<String, String>> {
    use std::io::Read;
    let werr = |m: String| Error::Weights {
        path: path.to_path_buf(),
        message: m,
    };
    let mut file = std::fs::File::open(path).map_err(|e| werr(format!("cannot open: {e}")))?;
    let mut len = [0u8; 8];
    file.read_exact(&mut len)
        .map_err(|e| werr(format!("not a safetensors file: {e}")))?;
    let len = u64::from_le_bytes(len);
    if len > MAX_HEADER_BYTES {
        return Err(werr(format!("header of {len} bytes is implausibly large")));
    }
    let mut header = vec![0u8; len as usize];
    file.read_exact(&mut header)
        .map_err(|e| werr(format!("truncated header: {e}")))?;
    let header: serde_json::Value =
        serde_json::from_slice(&header).map_err(|e| werr(format!("header is not JSON: {e}")))?;
    let meta = header
        .get("__metadata__")
        .and_then(|m| m.as_object())
        .ok_or_else(|| werr("no __metadata__ block".into()))?;
    Ok(meta
        .iter()
        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_owned())))
        .collect())
}

/// Loads a network from `path`: the configuration comes from the file's metadata, every
/// tensor of that network must be present with the right shape, and no other tensor may be
/// there.
///
/// # Errors
/// [`Error::Weights`] for an unreadable file, a missing/foreign format version or config,
/// missing, surplus or misshapen tensors; [`Error::Config`] for an invalid stored config.
pub fn load(path: &Path, device: &Device) -> Result<(VertebraFormer, VertebraFormerConfig)> {
    let werr = |m: String| Error::Weights {
        path: path.to_path_buf(),
        message: m,
    };
    let meta = read_metadata(path)?;
    match meta.get(META_FORMAT).map(String::as_str) {
        Some(FORMAT_VERSION) => {}
        other => {
            return Err(werr(format!(
                "format version {other:?}, this build reads {FORMAT_VERSION:?}"
            )));
        }
    }
    let config: VertebraFormerConfig = serde_json::from_str(
        meta.get(META_CONFIG)
            .ok_or_else(|| werr(format!("no {META_CONFIG} metadata")))?,
    )
    .map_err(|e| werr(format!("bad {META_CONFIG}: {e}")))?;
    let mut model = config.init(device)?;
    let mut store = SafetensorsStore::from_file(path).skip_enum_variants(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| werr(format!("cannot load: {e}")))?;
    if !result.errors.is_empty() || !result.missing.is_empty() || !result.unused.is_empty() {
        return Err(werr(format!(
            "does not match the network: {} errors {:?}, missing {:?}, surplus {:?}",
            result.errors.len(),
            result
                .errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
            result.unused
        )));
    }
    Ok((model, config))
}
