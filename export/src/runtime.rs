//! A bundle's graphs as `vertebra_core::inference::Network`: `model.onnx` for the dense and
//! lesion outputs, and for identification `model.onnx`'s RoI features → [`crate::roi`]
//! RoIAlign (the same function as the Burn model's) → `id_head.onnx`.
//!
//! The ONNX Runtime library is found by one rule for every caller ([`locate_library`]) and
//! loaded once per process ([`environment`]). The caller builds the sessions (library, execution provider, threads: the
//! appliance's engine, or the trainer's bundle evaluation) and checks them with
//! [`check_sessions`]; [`OrtNetwork`] only runs them.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::session::Session;
use ort::value::Tensor;
use vertebra_core::inference::{IdWindow, Network, WindowOutputs};

use crate::manifest::Manifest;
use crate::roi::{BOX_GEOMETRY, ROI_POOLED, RoiBox, box_geometry, roi_align};
use crate::{Error, Result};

/// Outputs every main graph has.
pub const DENSE_OUTPUTS: [&str; 2] = ["vertebra_logit", "label_logits"];
/// Outputs of a main graph with a lesion head.
pub const LESION_OUTPUTS: [&str; 3] = ["lesion_heatmap_logits", "lesion_offset", "lesion_log_size"];
/// Output of the identification graph.
pub const ID_LOGITS: &str = "id_logits";
/// Input of the main graph.
pub const IMAGE: &str = "image";

/// The sessions of one bundle.
pub struct Sessions {
    /// `model.onnx`.
    pub main: Session,
    /// `id_head.onnx`, if the bundle has an identification head.
    pub id_head: Option<Session>,
}

/// Checks that the sessions have the inputs and outputs the manifest's contract promises.
///
/// # Errors
/// [`Error::Config`] naming the missing input or output.
pub fn check_sessions(sessions: &Sessions, manifest: &Manifest) -> Result<()> {
    let outputs: Vec<&str> = sessions
        .main
        .outputs()
        .iter()
        .map(ort::value::Outlet::name)
        .collect();
    let mut want: Vec<&str> = DENSE_OUTPUTS.to_vec();
    if manifest.contract.branches.lesion {
        want.extend(LESION_OUTPUTS);
    }
    if let Some(id) = &manifest.identification {
        want.push(&id.features_output);
    }
    if let Some(missing) = want.iter().find(|w| !outputs.contains(w)) {
        return Err(Error::Config(format!(
            "the main graph has no output {missing:?} that its contract promises (outputs: \
             {outputs:?})"
        )));
    }
    if !sessions.main.inputs().iter().any(|i| i.name() == IMAGE) {
        return Err(Error::Config(
            "the main graph has no input \"image\"".into(),
        ));
    }
    match (&sessions.id_head, &manifest.identification) {
        (Some(h), Some(_)) => {
            let names: Vec<&str> = h.inputs().iter().map(ort::value::Outlet::name).collect();
            if !names.contains(&ROI_POOLED) || !names.contains(&BOX_GEOMETRY) {
                return Err(Error::Config(format!(
                    "the identification graph's inputs are {names:?}, expected \
                     {ROI_POOLED:?} and {BOX_GEOMETRY:?}"
                )));
            }
        }
        (None, None) => {}
        _ => {
            return Err(Error::Config(
                "the identification graph and the manifest's [identification] section \
                 disagree"
                    .into(),
            ));
        }
    }
    Ok(())
}

/// One session set as a [`Network`], with a callback per window batch (progress).
pub struct OrtNetwork<'a> {
    sessions: &'a mut Sessions,
    manifest: &'a Manifest,
    progress: &'a mut dyn FnMut(usize),
}

impl<'a> OrtNetwork<'a> {
    /// Wraps a session set checked by [`check_sessions`]; `progress` receives the number of
    /// windows of every batch run.
    pub fn new(
        sessions: &'a mut Sessions,
        manifest: &'a Manifest,
        progress: &'a mut dyn FnMut(usize),
    ) -> Self {
        Self {
            sessions,
            manifest,
            progress,
        }
    }
}

/// Runs `session` on named f32 inputs and returns the `wanted` outputs as (shape, values).
fn run(
    session: &mut Session,
    inputs: Vec<(&str, Vec<usize>, Vec<f32>)>,
    wanted: &[&str],
) -> Result<Vec<(Vec<usize>, Vec<f32>)>> {
    let mut values: Vec<(String, ort::value::DynValue)> = Vec::with_capacity(inputs.len());
    for (name, shape, data) in inputs {
        let t = Tensor::from_array((shape, data))
            .map_err(|e| Error::Inference(format!("input {name}: {e}")))?;
        values.push((name.to_owned(), t.into_dyn()));
    }
    let outputs = session
        .run(values)
        .map_err(|e| Error::Inference(format!("ONNX Runtime run failed: {e}")))?;
    wanted
        .iter()
        .map(|name| {
            let v = outputs
                .get(name)
                .ok_or_else(|| Error::Inference(format!("the graph gave no output {name:?}")))?;
            let (shape, data) = v
                .try_extract_tensor::<f32>()
                .map_err(|e| Error::Inference(format!("output {name}: {e}")))?;
            Ok((shape.iter().map(|&d| d as usize).collect(), data.to_vec()))
        })
        .collect()
}

impl Network for OrtNetwork<'_> {
    type Error = Error;

    fn window(&self) -> [usize; 3] {
        self.manifest.contract.window
    }

    fn lesion_stride(&self) -> usize {
        if self.manifest.contract.branches.lesion {
            self.manifest.contract.lesion_stride
        } else {
            1
        }
    }

    fn has_id_head(&self) -> bool {
        self.manifest.identification.is_some() && self.sessions.id_head.is_some()
    }

    fn forward(&mut self, windows: &[f32], b: usize) -> Result<WindowOutputs> {
        let [wz, wy, wx] = self.manifest.contract.window;
        let lesion = self.manifest.contract.branches.lesion;
        let mut wanted = DENSE_OUTPUTS.to_vec();
        if lesion {
            wanted.extend(LESION_OUTPUTS);
        }
        let mut out = run(
            &mut self.sessions.main,
            vec![(IMAGE, vec![b, 1, wz, wy, wx], windows.to_vec())],
            &wanted,
        )?
        .into_iter()
        .map(|(_, d)| d);
        let vertebra_logit = out.next().unwrap_or_default();
        let label_logits = out.next().unwrap_or_default();
        let lesion = match (lesion, out.next(), out.next(), out.next()) {
            (true, Some(h), Some(o), Some(l)) => Some((h, o, l)),
            _ => None,
        };
        (self.progress)(b);
        Ok(WindowOutputs {
            vertebra_logit,
            label_logits,
            lesion,
        })
    }

    fn identify(&mut self, window: &[f32], id: &IdWindow) -> Result<Vec<f32>> {
        let section = self
            .manifest
            .identification
            .as_ref()
            .ok_or_else(|| Error::Inference("the bundle has no identification head".into()))?;
        let [wz, wy, wx] = self.manifest.contract.window;
        let mut feats = run(
            &mut self.sessions.main,
            vec![(IMAGE, vec![1, 1, wz, wy, wx], window.to_vec())],
            &[section.features_output.as_str()],
        )?;
        let (shape, features) = feats.pop().expect("one output requested");
        let dims: [usize; 5] = shape.try_into().map_err(|s: Vec<usize>| {
            Error::Inference(format!("RoI features have shape {s:?}, expected 5-D"))
        })?;
        let boxes = [RoiBox {
            batch: 0,
            min: id.min,
            max: id.max,
        }];
        let pooled = roi_align(&features, dims, &boxes, section.roi_align)?;
        let geometry = box_geometry(&boxes, section.spacing_mm);
        let r = section.roi_align.output;
        let head = self
            .sessions
            .id_head
            .as_mut()
            .ok_or_else(|| Error::Inference("no identification session".into()))?;
        let mut logits = run(
            head,
            vec![
                (ROI_POOLED, vec![1, dims[1], r, r, r], pooled),
                (BOX_GEOMETRY, vec![1, geometry.len()], geometry),
            ],
            &[ID_LOGITS],
        )?;
        Ok(logits.pop().expect("one output requested").1)
    }
}

/// The ONNX Runtime version the product is built and tested against.
pub const ORT_VERSION: &str = "1.31.1";

/// File name of the library in the wheel and in the provisioned cache.
pub const LIBRARY_FILE: &str = "libonnxruntime.so.1.31.1";

/// Where the library is looked for after the configured path and `ORT_DYLIB_PATH`.
pub fn standard_locations() -> Vec<PathBuf> {
    let mut v = Vec::new();
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")));
    if let Some(c) = cache {
        v.push(c.join(format!("vertebra/onnxruntime-{ORT_VERSION}/{LIBRARY_FILE}")));
    }
    for dir in [
        "/usr/lib/vertebrad",
        "/usr/local/lib",
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib",
    ] {
        v.push(Path::new(dir).join(LIBRARY_FILE));
        v.push(Path::new(dir).join("libonnxruntime.so"));
    }
    v
}

fn provision_hint() -> String {
    format!(
        "provision it with `bash scripts/provision-onnxruntime.sh` (ONNX Runtime {ORT_VERSION} \
         from its pinned PyPI wheel; GPU hosts: the onnxruntime-gpu=={ORT_VERSION} wheel's \
         library), then set `[inference] onnxruntime = \"/path/to/{LIBRARY_FILE}\"` or \
         ORT_DYLIB_PATH, or install it as /usr/lib/vertebrad/{LIBRARY_FILE}"
    )
}

/// Finds the library (see the module docs).
///
/// # Errors
/// [`Error::Runtime`] naming the missing file and how to provision it.
pub fn locate_library(configured: Option<&Path>) -> Result<PathBuf> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(Error::Runtime(format!(
                "the configured ONNX Runtime library {} does not exist: {}",
                p.display(),
                provision_hint()
            )))
        };
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|p| !p.is_empty()) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Runtime(format!(
                "ORT_DYLIB_PATH={} does not exist: {}",
                p.display(),
                provision_hint()
            )))
        };
    }
    let tried = standard_locations();
    tried.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Error::Runtime(format!(
            "no ONNX Runtime library found (looked in {}): {}",
            tried
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            provision_hint()
        ))
    })
}

static ENVIRONMENT: OnceLock<(PathBuf, Environment)> = OnceLock::new();

/// Loads the library at `path` and creates the process-wide environment (once; ONNX Runtime
/// allows one per process). A later call with another path is refused.
///
/// # Errors
/// [`Error::Runtime`] if the library cannot be loaded or is another version, or the
/// environment was made from another library.
pub fn environment(path: &Path) -> Result<&'static Environment> {
    if let Some((p, env)) = ENVIRONMENT.get() {
        return if p == path {
            Ok(env)
        } else {
            Err(Error::Runtime(format!(
                "ONNX Runtime is already loaded from {} in this process; cannot load {}",
                p.display(),
                path.display()
            )))
        };
    }
    let env = ort::init_from(path)
        .map_err(|e| {
            Error::Runtime(format!(
                "cannot load the ONNX Runtime library {}: {e}; {}",
                path.display(),
                provision_hint()
            ))
        })?
        .with_name("vertebrad")
        .build()
        .map_err(|e| {
            Error::Runtime(format!(
                "cannot create the ONNX Runtime environment from {}: {e}",
                path.display()
            ))
        })?;
    let _ = ENVIRONMENT.set((path.to_path_buf(), env));
    let (p, env) = ENVIRONMENT.get().expect("set above");
    if p != path {
        return Err(Error::Runtime(format!(
            "ONNX Runtime was loaded concurrently from {}",
            p.display()
        )));
    }
    Ok(env)
}
