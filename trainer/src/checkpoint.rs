//! Checkpoints that resume exactly: the network, AdamW's moments and the loop state.
//!
//! A checkpoint is a directory:
//! - `model.safetensors`: the weights with their stable names ([`vertebra_model::weights`]),
//!   loadable on its own by the exporter and the evaluation;
//! - `optimizer.bpk`: Burn's AdamW state (burnpack), keyed by parameter ids;
//! - `param_ids.json`: tensor path → parameter id at save time. Loading the weights builds a
//!   fresh network whose parameters get new ids, so resume gives each parameter its saved id
//!   back before the optimizer state is attached (otherwise Burn would silently restart the
//!   moments from zero);
//! - `state.json`: [`LoopState`] (step, validation history, early-stopping counters).
//!
//! Data order needs no state: the samples of step `s` are a pure function of the run seed and
//! `s` (see [`crate::run`]), so a resumed run draws exactly what the uninterrupted one would.
//!
//! Writes are crash-safe: everything goes into `<name>.partial`, which is fsynced and renamed
//! over `<name>` (the previous checkpoint is moved aside first and removed last), so a kill at
//! any point leaves either the old or the new checkpoint complete.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use burn::module::{Module, ModuleMapper, ModuleVisitor, Param, ParamId};
use burn::optim::ModuleOptimizer;
use burn::tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};
use vertebra_model::{VertebraFormer, VertebraFormerConfig};

use crate::{Error, Result};

/// File names inside a checkpoint directory.
pub const MODEL_FILE: &str = "model.safetensors";
/// AdamW state.
pub const OPTIMIZER_FILE: &str = "optimizer.bpk";
/// Tensor path → parameter id.
pub const PARAM_IDS_FILE: &str = "param_ids.json";
/// Loop state.
pub const STATE_FILE: &str = "state.json";

/// One validation result in the loop's history.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Validation {
    /// Optimiser steps done when it ran.
    pub step: usize,
    /// Mean binary Dice over the validation windows.
    pub dice: f64,
    /// Identification accuracy of the ID head on the ground-truth boxes (NaN before the ID
    /// term is switched on or without an ID head).
    pub id_accuracy: f64,
}

/// Everything of the training loop besides the tensors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoopState {
    /// Optimiser steps done.
    pub step: usize,
    /// Every validation so far.
    pub validations: Vec<Validation>,
    /// Best validation Dice and its step.
    pub best: Option<Validation>,
    /// Validations since the best one (early stopping).
    pub since_best: usize,
    /// Wall-clock seconds of training so far (all sessions).
    pub train_seconds: f64,
    /// Set when training ended (early stop or last step) and why.
    pub finished: Option<String>,
}

impl LoopState {
    /// The state of a new run.
    pub fn new() -> Self {
        LoopState {
            step: 0,
            validations: Vec::new(),
            best: None,
            since_best: 0,
            train_seconds: 0.0,
            finished: None,
        }
    }
}

impl Default for LoopState {
    fn default() -> Self {
        Self::new()
    }
}

/// Collects `path → id` of every float parameter.
struct CollectIds {
    path: Vec<String>,
    ids: BTreeMap<String, u64>,
}

impl ModuleVisitor for CollectIds {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        self.ids.insert(self.path.join("."), param.id.val());
    }
}

/// Gives every float parameter its id from `ids` (by path); records paths it cannot find.
struct RestoreIds<'a> {
    path: Vec<String>,
    ids: &'a BTreeMap<String, u64>,
    missing: Vec<String>,
    restored: usize,
}

impl ModuleMapper for RestoreIds<'_> {
    fn enter_module(&mut self, name: &str, _container_type: &str) {
        self.path.push(name.to_owned());
    }
    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.path.pop();
    }
    fn map_float<const D: usize>(&mut self, mut param: Param<Tensor<D>>) -> Param<Tensor<D>> {
        let path = self.path.join(".");
        match self.ids.get(&path) {
            Some(&id) => {
                param.id = ParamId::from(id);
                self.restored += 1;
            }
            None => self.missing.push(path),
        }
        param
    }
}

/// `path → id` of every float parameter of `model`.
pub fn param_ids(model: &VertebraFormer) -> BTreeMap<String, u64> {
    let mut c = CollectIds {
        path: Vec::new(),
        ids: BTreeMap::new(),
    };
    model.visit(&mut c);
    c.ids
}

fn io(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::Checkpoint(format!("{}: {e}", path.display()))
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(value).map_err(|e| io(path, e))?;
    let mut f = fs::File::create(path).map_err(|e| io(path, e))?;
    f.write_all(&bytes).map_err(|e| io(path, e))?;
    f.sync_all().map_err(|e| io(path, e))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<T> {
    let bytes = fs::read(path).map_err(|e| io(path, e))?;
    serde_json::from_slice(&bytes).map_err(|e| io(path, format!("malformed: {e}")))
}

fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io(dir, e))
}

/// Writes a checkpoint to `dir` (replacing one that is there) crash-safely.
///
/// # Errors
/// [`Error::Checkpoint`] when a file cannot be written.
pub fn save(
    dir: &Path,
    model: &VertebraFormer,
    config: &VertebraFormerConfig,
    optimizer: &ModuleOptimizer,
    state: &LoopState,
) -> Result<()> {
    let name = dir
        .file_name()
        .ok_or_else(|| Error::Checkpoint(format!("{}: not a directory name", dir.display())))?
        .to_string_lossy()
        .into_owned();
    let parent = dir.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(parent).map_err(|e| io(parent, e))?;
    let partial = parent.join(format!("{name}.partial"));
    let old = parent.join(format!("{name}.old"));
    if partial.exists() {
        fs::remove_dir_all(&partial).map_err(|e| io(&partial, e))?;
    }
    fs::create_dir_all(&partial).map_err(|e| io(&partial, e))?;
    vertebra_model::weights::save(model, config, &partial.join(MODEL_FILE))?;
    let opt_path = partial.join(OPTIMIZER_FILE);
    optimizer.save(&opt_path).map_err(|e| io(&opt_path, e))?;
    write_json(&partial.join(PARAM_IDS_FILE), &param_ids(model))?;
    write_json(&partial.join(STATE_FILE), state)?;
    for f in [MODEL_FILE, OPTIMIZER_FILE] {
        let p = partial.join(f);
        fs::File::open(&p)
            .and_then(|h| h.sync_all())
            .map_err(|e| io(&p, e))?;
    }
    sync_dir(&partial)?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    if dir.exists() {
        fs::rename(dir, &old).map_err(|e| io(dir, e))?;
    }
    fs::rename(&partial, dir).map_err(|e| io(dir, e))?;
    sync_dir(parent)?;
    if old.exists() {
        fs::remove_dir_all(&old).map_err(|e| io(&old, e))?;
    }
    Ok(())
}

/// A checkpoint loaded for resuming.
pub struct Loaded {
    /// The network with its saved parameter ids.
    pub model: VertebraFormer,
    /// Its configuration (from the weights' metadata).
    pub config: VertebraFormerConfig,
    /// AdamW with the saved moments.
    pub optimizer: ModuleOptimizer,
    /// Loop state.
    pub state: LoopState,
}

/// Where a checkpoint directory is, if a crash left only the moved-aside previous one.
///
/// A kill between the two renames of [`save`] leaves `<name>.old` complete and no `<name>`;
/// that checkpoint is then the one to resume from.
pub fn locate(dir: &Path) -> Option<PathBuf> {
    if dir.join(STATE_FILE).exists() {
        return Some(dir.to_path_buf());
    }
    let name = dir.file_name()?.to_string_lossy().into_owned();
    let old = dir.with_file_name(format!("{name}.old"));
    old.join(STATE_FILE).exists().then_some(old)
}

/// Loads a checkpoint onto `device` (made autodiff), restoring parameter ids so that
/// `optimizer` (a fresh AdamW with the run's settings) receives its saved moments.
///
/// # Errors
/// [`Error::Checkpoint`] for a missing or malformed file, or a weights file whose tensors do
/// not match the saved ids (a checkpoint from another network).
pub fn load(dir: &Path, optimizer: ModuleOptimizer, device: &Device) -> Result<Loaded> {
    let dir = locate(dir).ok_or_else(|| {
        Error::Checkpoint(format!(
            "{}: no checkpoint here (no {STATE_FILE})",
            dir.display()
        ))
    })?;
    let device = if device.is_autodiff() {
        device.clone()
    } else {
        device.clone().autodiff()
    };
    let (model, config) = vertebra_model::weights::load(&dir.join(MODEL_FILE), &device)?;
    let ids: BTreeMap<String, u64> = read_json(&dir.join(PARAM_IDS_FILE))?;
    let mut restore = RestoreIds {
        path: Vec::new(),
        ids: &ids,
        missing: Vec::new(),
        restored: 0,
    };
    let model = model.map(&mut restore);
    if !restore.missing.is_empty() || restore.restored != ids.len() {
        return Err(Error::Checkpoint(format!(
            "{}: parameter ids do not match the network ({} restored of {}, missing {:?})",
            dir.display(),
            restore.restored,
            ids.len(),
            restore.missing
        )));
    }
    let opt_path = dir.join(OPTIMIZER_FILE);
    let optimizer = optimizer.load(&opt_path).map_err(|e| io(&opt_path, e))?;
    let state = read_json(&dir.join(STATE_FILE))?;
    Ok(Loaded {
        model,
        config,
        optimizer,
        state,
    })
}
