//! Test-time conditions of the domain study (paper Table 9): how the network is run on a test
//! scan when the domain code is right, partly wrong, random, swapped or absent, and the three
//! adaptation baselines that need no domain label (instance normalisation, AdaIN, TENT).
//!
//! ## Domain codes (the `domain_mix` input)
//! The model accepts a convex mix `[B, D]` over its domain list that replaces its classifier's
//! p(d | I) (see `vertebra_model::blocks::domain`). Every code condition here gives a *one-hot*
//! row (a single domain's prototype), per scan:
//! - `correct`: the scan's own domain;
//! - `wrong-P` (P = 10, 20, 30): the paper's "X % of test cases given incorrect domain
//!   identifiers", taken literally: exactly `round(P · N / 100)` of the `N` scans, chosen by a
//!   seeded shuffle, get the code of another domain drawn uniformly from the `D − 1` others;
//!   the rest get the correct code. (Not a soft mix: the paper speaks of misclassified labels.)
//! - `random`: every scan gets a wrong domain drawn uniformly from the `D − 1` others,
//!   independently per scan ("randomly assigned per scan", 100 % error);
//! - `swapped`: every scan of domain `d` gets domain `(d + 1) mod D` (a fixed derangement:
//!   "systematically swapped between domains", 100 % error);
//! - `none`: no code; the model's own classifier decides (`domain_mix = None`).
//!
//! The adaptation baselines (`instance-norm`, `adain`, `tent`) "do not rely on a priori domain
//! knowledge" (paper), so they run with `none` as well.
//!
//! ## Input normalisation baselines (on the raw case, HU, before `prepare`)
//! - **Instance norm**: a per-scan z-score over *all* voxels, mapped to the training set's
//!   statistics: `x' = (x − μ_scan) / σ_scan · σ_train + μ_train` ([`instance_norm`]).
//! - **AdaIN**: the same affine map, but both statistics are measured on the **body region**,
//!   the voxels above [`BODY_THRESHOLD_HU`] (−500 HU: halfway between air at −1000 HU and fat
//!   at about −100 HU, so it keeps every tissue and drops the air around and inside the
//!   patient) ([`adain`]). The map is applied to every voxel, so air moves with it (and is
//!   clipped back to −1000 HU by the normalisation of `prepare`).
//!
//! Targets come from [`training_statistics`] (pooled over the training scans; the study uses
//! the pooled training set, as a deployed model has no domain label). The paper's text
//! describes IN as standardising *feature* channels; the network already has instance norms
//! in every convolutional block, so the test-time baseline acts on the input, as specified for
//! this project.
//!
//! ## TENT (Wang et al., ICLR 2021)
//! [`tent`] minimises the mean voxel entropy `−Σ_c p_c log p_c` of the 26-class segmentation
//! softmax (`label_logits`) over windows of the test scan, updating **only** the affine
//! parameters of the normalisation layers (every `gamma` / `beta` of a `LayerNorm` or
//! `InstanceNorm`, selected by module path with a visitor; [`norm_affine_params`]), with Adam
//! (β 0.9 / 0.999, no weight decay). Defaults: [`TENT_STEPS`] = 10 steps at
//! [`TENT_LR`] = 1e-4, each step on all given windows as one batch. TENT's own settings
//! (Adam 1e-3 over many test batches of 128 images) adapt over a whole test stream; here one
//! scan is adapted alone, and entropy minimisation on a single scan collapses towards
//! "everything is background" if pushed hard, so the step size is the training learning rate
//! and the step count small. The returned model is a new one; the caller's model is not
//! changed. Dropout, if a preset has any, is active during the steps (autodiff mode), as in
//! training.

use std::fmt;
use std::str::FromStr;

use burn::module::{Module, ModuleVisitor, Param, ParamId};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::activation::{log_softmax, softmax};
use burn::tensor::{Device, Tensor, TensorData};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vertebra_core::Volume;
use vertebra_model::{VertebraFormer, VertebraFormerInput};

use crate::dataset::Case;
use crate::{Error, Result};

/// Voxels above this HU are the body region of [`adain`].
pub const BODY_THRESHOLD_HU: f32 = -500.0;
/// Default TENT steps per scan.
pub const TENT_STEPS: usize = 10;
/// Default TENT learning rate (Adam).
pub const TENT_LR: f64 = 1e-4;

/// One test-time condition of the study. Serialised as its name (see [`Self::name`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum TestTimeCondition {
    /// `correct`: the scan's own domain code.
    Correct,
    /// `wrong-P`: exactly `round(P·N/100)` scans get a wrong code.
    Wrong {
        /// Percentage of scans with a wrong code, 0..=100.
        percent: u32,
    },
    /// `random`: a random wrong code per scan.
    Random,
    /// `swapped`: domain `d` → `(d + 1) mod D`.
    Swapped,
    /// `none`: the model's own domain classifier.
    Classifier,
    /// `instance-norm`: whole-scan z-score mapped to the training statistics.
    InstanceNorm,
    /// `adain`: body-region statistics matched to the training body statistics.
    AdaIn,
    /// `tent`: entropy minimisation on the scan's normalisation affine parameters.
    Tent,
}

/// The study's rows in the paper's order: correct, 10/20/30 % wrong, random, swapped, none,
/// IN, AdaIN, TENT.
pub fn study_conditions() -> Vec<TestTimeCondition> {
    use TestTimeCondition as T;
    vec![
        T::Correct,
        T::Wrong { percent: 10 },
        T::Wrong { percent: 20 },
        T::Wrong { percent: 30 },
        T::Random,
        T::Swapped,
        T::Classifier,
        T::InstanceNorm,
        T::AdaIn,
        T::Tent,
    ]
}

impl TestTimeCondition {
    /// The stable name (`correct`, `wrong-10`, `random`, `swapped`, `none`, `instance-norm`,
    /// `adain`, `tent`).
    pub fn name(&self) -> String {
        match self {
            TestTimeCondition::Correct => "correct".into(),
            TestTimeCondition::Wrong { percent } => format!("wrong-{percent}"),
            TestTimeCondition::Random => "random".into(),
            TestTimeCondition::Swapped => "swapped".into(),
            TestTimeCondition::Classifier => "none".into(),
            TestTimeCondition::InstanceNorm => "instance-norm".into(),
            TestTimeCondition::AdaIn => "adain".into(),
            TestTimeCondition::Tent => "tent".into(),
        }
    }
}

impl fmt::Display for TestTimeCondition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl FromStr for TestTimeCondition {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "correct" => TestTimeCondition::Correct,
            "random" => TestTimeCondition::Random,
            "swapped" => TestTimeCondition::Swapped,
            "none" => TestTimeCondition::Classifier,
            "instance-norm" => TestTimeCondition::InstanceNorm,
            "adain" => TestTimeCondition::AdaIn,
            "tent" => TestTimeCondition::Tent,
            _ => match s.strip_prefix("wrong-").map(str::parse::<u32>) {
                Some(Ok(percent)) if percent <= 100 => TestTimeCondition::Wrong { percent },
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown test-time condition {s:?}; expected correct, wrong-<0..=100>, \
                         random, swapped, none, instance-norm, adain or tent"
                    )));
                }
            },
        })
    }
}

impl TryFrom<String> for TestTimeCondition {
    type Error = Error;

    fn try_from(s: String) -> Result<Self> {
        s.parse()
    }
}

impl From<TestTimeCondition> for String {
    fn from(c: TestTimeCondition) -> String {
        c.name()
    }
}

/// The domain code one scan is run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DomainCode {
    /// No code: the model's classifier gives p(d | I).
    Classifier,
    /// The one-hot code of this index into the model's domain list.
    Domain(usize),
}

impl DomainCode {
    /// The `domain_mix` input for `batch` windows of the scan: `None` for the classifier, else
    /// a one-hot `[batch, num_domains]`.
    ///
    /// # Errors
    /// An index outside the domain list.
    pub fn mix(
        &self,
        batch: usize,
        num_domains: usize,
        device: &Device,
    ) -> Result<Option<Tensor<2>>> {
        match *self {
            DomainCode::Classifier => Ok(None),
            DomainCode::Domain(d) if d < num_domains => {
                let mut v = vec![0.0f32; batch * num_domains];
                for row in v.chunks_mut(num_domains) {
                    row[d] = 1.0;
                }
                Ok(Some(Tensor::from_data(
                    TensorData::new(v, [batch, num_domains]),
                    device,
                )))
            }
            DomainCode::Domain(d) => Err(Error::InvalidArgument(format!(
                "domain code {d} outside the model's {num_domains} domains"
            ))),
        }
    }
}

/// The domain code of every test scan under `condition` (`case_domains[i]` = domain name of
/// scan `i`, `model_domains` = the model's list). Deterministic for a seed.
///
/// # Errors
/// A scan domain not in the model's list (its correct code is undefined, e.g. the held-out
/// domain of leave-one-domain-out: run that with `none`); fewer than two domains for a wrong
/// code; a percentage above 100.
pub fn assign_domain_codes(
    case_domains: &[String],
    model_domains: &[String],
    condition: TestTimeCondition,
    seed: u64,
) -> Result<Vec<DomainCode>> {
    use TestTimeCondition as T;
    if matches!(
        condition,
        T::Classifier | T::InstanceNorm | T::AdaIn | T::Tent
    ) {
        return Ok(vec![DomainCode::Classifier; case_domains.len()]);
    }
    let d = model_domains.len();
    let correct: Vec<usize> = case_domains
        .iter()
        .map(|c| {
            model_domains.iter().position(|m| m == c).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "domain {c:?} is not one of the model's domains {model_domains:?}: \
                     condition {condition} needs its code"
                ))
            })
        })
        .collect::<Result<_>>()?;
    if d < 2 && condition != T::Correct {
        return Err(Error::InvalidArgument(format!(
            "condition {condition} needs at least two domains, the model has {d}"
        )));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    // A uniformly drawn domain other than `c`.
    let other = |c: usize, rng: &mut ChaCha8Rng| {
        let k = rng.random_range(0..d - 1);
        if k >= c { k + 1 } else { k }
    };
    let codes = match condition {
        T::Correct => correct.into_iter().map(DomainCode::Domain).collect(),
        T::Wrong { percent } => {
            if percent > 100 {
                return Err(Error::InvalidArgument(format!(
                    "wrong-{percent}: at most 100 %"
                )));
            }
            let n = correct.len();
            let k = (f64::from(percent) * n as f64 / 100.0).round() as usize;
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut rng);
            let mut wrong = vec![false; n];
            for &i in &order[..k] {
                wrong[i] = true;
            }
            (0..n)
                .map(|i| {
                    DomainCode::Domain(if wrong[i] {
                        other(correct[i], &mut rng)
                    } else {
                        correct[i]
                    })
                })
                .collect()
        }
        T::Random => correct
            .into_iter()
            .map(|c| DomainCode::Domain(other(c, &mut rng)))
            .collect(),
        T::Swapped => correct
            .into_iter()
            .map(|c| DomainCode::Domain((c + 1) % d))
            .collect(),
        T::Classifier | T::InstanceNorm | T::AdaIn | T::Tent => unreachable!("handled above"),
    };
    Ok(codes)
}

/// Mean and standard deviation of intensities (HU).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct IntensityStats {
    /// Mean, HU.
    pub mean: f64,
    /// Population standard deviation, HU.
    pub std: f64,
}

/// Which voxels statistics are taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StatsRegion {
    /// Every voxel (instance norm).
    Whole,
    /// Voxels above [`BODY_THRESHOLD_HU`] (AdaIN).
    Body,
}

impl StatsRegion {
    fn contains(self, v: f32) -> bool {
        match self {
            StatsRegion::Whole => true,
            StatsRegion::Body => v > BODY_THRESHOLD_HU,
        }
    }
}

/// Running sums in f64.
#[derive(Default)]
struct Moments {
    n: u64,
    sum: f64,
    sum2: f64,
}

impl Moments {
    fn add(&mut self, image: &Volume<f32>, region: StatsRegion) {
        for &v in image.data().iter().filter(|&&v| region.contains(v)) {
            let v = f64::from(v);
            self.n += 1;
            self.sum += v;
            self.sum2 += v * v;
        }
    }

    fn stats(&self) -> Option<IntensityStats> {
        if self.n == 0 {
            return None;
        }
        let n = self.n as f64;
        let mean = self.sum / n;
        let std = (self.sum2 / n - mean * mean).max(0.0).sqrt();
        (std > 0.0).then_some(IntensityStats { mean, std })
    }
}

/// Statistics of one image over `region`.
///
/// # Errors
/// An empty region or a constant image (a z-score is undefined).
pub fn intensity_stats(image: &Volume<f32>, region: StatsRegion) -> Result<IntensityStats> {
    let mut m = Moments::default();
    m.add(image, region);
    m.stats().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "no {region:?} voxels with non-zero spread: intensity statistics undefined"
        ))
    })
}

/// Statistics pooled over every voxel of `region` in all `cases` (the training set).
///
/// # Errors
/// No cases, an empty region or constant images.
pub fn training_statistics(cases: &[Case], region: StatsRegion) -> Result<IntensityStats> {
    let mut m = Moments::default();
    for c in cases {
        m.add(&c.image, region);
    }
    m.stats().ok_or_else(|| {
        Error::InvalidArgument(format!(
            "training statistics over {region:?}: no voxels with non-zero spread in {} cases",
            cases.len()
        ))
    })
}

fn match_statistics(case: &Case, region: StatsRegion, target: IntensityStats) -> Result<Case> {
    let s = intensity_stats(&case.image, region).map_err(|e| Error::Case {
        case: case.id.clone(),
        message: e.to_string(),
    })?;
    let a = target.std / s.std;
    let b = target.mean - a * s.mean;
    Ok(Case {
        image: case.image.map(|&v| (a * f64::from(v) + b) as f32),
        ..case.clone()
    })
}

/// Instance normalisation baseline: whole-scan z-score mapped to `target` (module docs).
///
/// # Errors
/// A constant image.
pub fn instance_norm(case: &Case, target: IntensityStats) -> Result<Case> {
    match_statistics(case, StatsRegion::Whole, target)
}

/// AdaIN baseline: body-region mean/std matched to `target` (module docs).
///
/// # Errors
/// No body voxels, or a constant body region.
pub fn adain(case: &Case, target: IntensityStats) -> Result<Case> {
    match_statistics(case, StatsRegion::Body, target)
}

/// A parameter TENT adapts: its module path (`encoder.layers.0.norm_attn.gamma`) and id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NormParam {
    /// Dotted module path, ending in `gamma` or `beta`.
    pub path: String,
    /// Parameter id.
    pub id: ParamId,
}

/// Collects the affine parameters of every `LayerNorm` and `InstanceNorm` by path.
struct NormAffineSelector {
    stack: Vec<(String, String)>,
    found: Vec<NormParam>,
}

impl ModuleVisitor for NormAffineSelector {
    fn enter_module(&mut self, name: &str, container_type: &str) {
        self.stack
            .push((name.to_owned(), container_type.to_owned()));
    }

    fn exit_module(&mut self, _name: &str, _container_type: &str) {
        self.stack.pop();
    }

    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        // The innermost entry is the field holding this parameter and the struct that owns it.
        let Some((field, owner)) = self.stack.last() else {
            return;
        };
        let is_norm = owner == "Struct:LayerNorm" || owner == "Struct:InstanceNorm";
        if is_norm && (field == "gamma" || field == "beta") {
            let path: Vec<&str> = self.stack.iter().map(|(n, _)| n.as_str()).collect();
            self.found.push(NormParam {
                path: path.join("."),
                id: param.id,
            });
        }
    }
}

/// The parameters TENT adapts, in visiting order.
pub fn norm_affine_params<M: Module>(model: &M) -> Vec<NormParam> {
    let mut v = NormAffineSelector {
        stack: Vec::new(),
        found: Vec::new(),
    };
    model.visit(&mut v);
    v.found
}

/// Mean voxel entropy (nats) of the softmax over channel axis 1 of `logits` `[B, C, …]`.
pub fn mean_entropy(logits: Tensor<5>) -> Tensor<1> {
    let logp = log_softmax(logits.clone(), 1);
    let p = softmax(logits, 1);
    (p * logp).sum_dim(1).mean().neg()
}

/// TENT settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TentConfig {
    /// Adam steps on the scan.
    pub steps: usize,
    /// Adam learning rate.
    pub lr: f64,
}

impl Default for TentConfig {
    fn default() -> Self {
        TentConfig {
            steps: TENT_STEPS,
            lr: TENT_LR,
        }
    }
}

/// What a TENT run did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TentReport {
    /// Mean entropy before each step, then after the last (`steps + 1` values).
    pub entropy: Vec<f32>,
    /// Number of parameter tensors adapted.
    pub tensors: usize,
}

/// Adapts a copy of `model` to `windows` `[B, 1, Z, Y, X]` (normalised windows of one test
/// scan) by TENT (module docs). The model runs with its classifier's domain mix. The result
/// lives on `windows`' device kind: plain (inference) unless that device is autodiff.
///
/// # Errors
/// Zero steps or a non-positive learning rate, a model without normalisation layers, forward
/// errors, a non-finite entropy.
pub fn tent(
    model: &VertebraFormer,
    windows: &Tensor<5>,
    config: &TentConfig,
) -> Result<(VertebraFormer, TentReport)> {
    if config.steps == 0 || !(config.lr.is_finite() && config.lr > 0.0) {
        return Err(Error::InvalidArgument(format!(
            "TENT needs at least one step and a positive learning rate, got {config:?}"
        )));
    }
    let device = windows.device();
    let ad = device.clone().autodiff();
    let mut adapted = model.clone().fork(&ad).train();
    let ids: Vec<ParamId> = norm_affine_params(&adapted)
        .into_iter()
        .map(|p| p.id)
        .collect();
    if ids.is_empty() {
        return Err(Error::InvalidArgument(
            "TENT: the model has no normalisation affine parameters".into(),
        ));
    }
    let x = Tensor::<5>::from_data(windows.to_data(), &ad);
    let mut optimizer = AdamConfig::new().init();
    let mut entropy = Vec::with_capacity(config.steps + 1);
    let forward = |m: &VertebraFormer| -> Result<Tensor<1>> {
        let out = m.forward(VertebraFormerInput::from_image(x.clone()))?;
        Ok(mean_entropy(out.label_logits))
    };
    for step in 0..config.steps {
        let loss = forward(&adapted)?;
        let h = loss.clone().into_scalar::<f32>();
        if !h.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "TENT step {step}: entropy is not finite"
            )));
        }
        entropy.push(h);
        let mut grads = loss.backward();
        let grads = GradientsParams::from_params(&mut grads, &adapted, &ids);
        adapted = optimizer.step(config.lr, adapted, grads);
    }
    entropy.push(forward(&adapted)?.into_scalar::<f32>());
    let adapted = if device.is_autodiff() {
        adapted
    } else {
        adapted.valid()
    };
    Ok((
        adapted,
        TentReport {
            entropy,
            tensors: ids.len(),
        },
    ))
}

/// The device for a backend name: `flex` (or `cpu`) = Burn's pure-Rust CPU backend; `wgpu` =
/// the best GPU adapter through wgpu (Vulkan on Linux), only in builds with the `wgpu`
/// feature. The device is plain; training adds autodiff itself.
///
/// # Errors
/// An unknown name, or `wgpu` in a build without the feature.
pub fn training_device(kind: &str) -> Result<Device> {
    match kind {
        "flex" | "cpu" => Ok(Device::flex()),
        #[cfg(feature = "wgpu")]
        "wgpu" => Ok(Device::wgpu(burn::tensor::DeviceKind::DefaultDevice)),
        #[cfg(not(feature = "wgpu"))]
        "wgpu" => Err(Error::InvalidArgument(
            "backend wgpu: this build has no GPU backend; rebuild with `--features wgpu`".into(),
        )),
        other => Err(Error::InvalidArgument(format!(
            "unknown backend {other:?}; expected flex (CPU) or wgpu (GPU)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in study_conditions() {
            assert_eq!(c.name().parse::<TestTimeCondition>().unwrap(), c);
            let json = serde_json::to_string(&c).unwrap();
            assert_eq!(serde_json::from_str::<TestTimeCondition>(&json).unwrap(), c);
        }
        assert_eq!(TestTimeCondition::Classifier.name(), "none");
        assert!("wrong-101".parse::<TestTimeCondition>().is_err());
        assert!("wrong".parse::<TestTimeCondition>().is_err());
    }

    #[test]
    fn backends_by_name() {
        assert!(training_device("flex").is_ok());
        assert!(training_device("tpu").is_err());
        #[cfg(not(feature = "wgpu"))]
        assert!(
            training_device("wgpu")
                .unwrap_err()
                .to_string()
                .contains("--features wgpu")
        );
    }
}
