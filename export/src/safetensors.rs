//! A strict reader for the safetensors files `vertebra-model` writes: f32 tensors by name, the
//! metadata block, and bookkeeping of which tensors the graph writer consumed, so that a file
//! with a tensor the exporter does not know (a renamed field, a branch the graph lacks) is
//! refused instead of silently ignored.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Largest header accepted (the paper model's header is ~60 kB).
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// One f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct F32Tensor {
    /// Shape, outermost first.
    pub shape: Vec<usize>,
    /// Values in row-major order.
    pub data: Vec<f32>,
}

/// All tensors and the metadata of one safetensors file.
#[derive(Debug)]
pub struct WeightFile {
    path: PathBuf,
    tensors: BTreeMap<String, F32Tensor>,
    metadata: HashMap<String, String>,
    used: RefCell<BTreeSet<String>>,
}

impl WeightFile {
    /// Reads `path`; every tensor must be F32 with consistent offsets.
    ///
    /// # Errors
    /// [`Error::Weights`] for an unreadable or malformed file or a non-F32 tensor.
    pub fn read(path: &Path) -> Result<Self> {
        let werr = |m: String| Error::Weights {
            path: path.to_path_buf(),
            message: m,
        };
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        if bytes.len() < 8 {
            return Err(werr("shorter than a safetensors header".into()));
        }
        let len = u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes"));
        if len > MAX_HEADER_BYTES || 8 + len as usize > bytes.len() {
            return Err(werr(format!("header length {len} is implausible")));
        }
        let header: serde_json::Map<String, serde_json::Value> =
            serde_json::from_slice(&bytes[8..8 + len as usize])
                .map_err(|e| werr(format!("header is not a JSON object: {e}")))?;
        let data = &bytes[8 + len as usize..];
        let mut tensors = BTreeMap::new();
        let mut metadata = HashMap::new();
        for (name, entry) in header {
            if name == "__metadata__" {
                if let Some(m) = entry.as_object() {
                    for (k, v) in m {
                        if let Some(s) = v.as_str() {
                            metadata.insert(k.clone(), s.to_owned());
                        }
                    }
                }
                continue;
            }
            let dtype = entry.get("dtype").and_then(|d| d.as_str()).unwrap_or("");
            if dtype != "F32" {
                return Err(werr(format!(
                    "tensor {name} has dtype {dtype:?}, expected F32"
                )));
            }
            let shape: Vec<usize> = entry
                .get("shape")
                .and_then(|s| s.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(serde_json::Value::as_u64)
                        .map(|v| v as usize)
                        .collect()
                })
                .ok_or_else(|| werr(format!("tensor {name} has no shape")))?;
            let offsets: Vec<usize> = entry
                .get("data_offsets")
                .and_then(|s| s.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(serde_json::Value::as_u64)
                        .map(|v| v as usize)
                        .collect()
                })
                .unwrap_or_default();
            let count: usize = shape.iter().product();
            let ok = offsets.len() == 2
                && offsets[0] <= offsets[1]
                && offsets[1] <= data.len()
                && offsets[1] - offsets[0] == 4 * count;
            if !ok {
                return Err(werr(format!(
                    "tensor {name}: offsets {offsets:?} do not hold {count} f32 values"
                )));
            }
            let values = data[offsets[0]..offsets[1]]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                .collect();
            tensors.insert(
                name,
                F32Tensor {
                    shape,
                    data: values,
                },
            );
        }
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            metadata,
            used: RefCell::new(BTreeSet::new()),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The metadata block.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.metadata
    }

    /// Whether a tensor called `name` exists (does not mark it used).
    pub fn has(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The tensor `name` with the expected shape, marked as used.
    ///
    /// # Errors
    /// [`Error::Weights`] if it is missing or has another shape.
    pub fn take(&self, name: &str, shape: &[usize]) -> Result<&F32Tensor> {
        let t = self.tensors.get(name).ok_or_else(|| Error::Weights {
            path: self.path.clone(),
            message: format!("tensor {name} is missing"),
        })?;
        if t.shape != shape {
            return Err(Error::Weights {
                path: self.path.clone(),
                message: format!("tensor {name} has shape {:?}, expected {shape:?}", t.shape),
            });
        }
        self.used.borrow_mut().insert(name.to_owned());
        Ok(t)
    }

    /// Checks that every tensor of the file was used.
    ///
    /// # Errors
    /// [`Error::Weights`] listing the tensors the graph did not read.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let unused: Vec<&String> = self.tensors.keys().filter(|k| !used.contains(*k)).collect();
        if unused.is_empty() {
            Ok(())
        } else {
            Err(Error::Weights {
                path: self.path.clone(),
                message: format!("tensors not mirrored by the ONNX graph: {unused:?}"),
            })
        }
    }
}
