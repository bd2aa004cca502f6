//! One optimisation step and a small training loop on any Burn device (flex CPU in tests).
//!
//! - Optimiser: AdamW (β 0.9/0.999, lr 1e-4, weight decay 1e-5) from `burn::optim`.
//! - Gradient clipping at *global* norm 1.0 (PyTorch's `clip_grad_norm_`, what the paper's
//!   recipe means). Burn's own `GradientClippingConfig::Norm` clips each parameter tensor
//!   separately, so the trainer clips the whole gradient itself ([`clip_global_norm`]).
//! - Learning rate: [`crate::schedule::cosine_lr`] per step; loss weights:
//!   [`crate::schedule::curriculum`] at the fractional epoch.
//! - Missing annotations: each loss term is computed only over the batch items that have its
//!   annotation type (outputs are `select`ed along the batch axis), so a masks-only case trains
//!   the segmentation and domain terms only.

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::{AdamWConfig, GradientsParams, ModuleOptimizer};
use burn::tensor::{Device, Int, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use vertebra_core::anatomy::NUM_LESION_CLASSES;
use vertebra_core::contract::NUM_SEG_CLASSES;
use vertebra_model::blocks::roi_align::RoiBox;
use vertebra_model::{VertebraFormer, VertebraFormerConfig, VertebraFormerInput};

use crate::losses;
use crate::preprocess::{Sample, WindowSpec};
use crate::schedule::{LossWeights, cosine_lr, curriculum};
use crate::{Error, Result};

/// Optimisation settings (the paper's recipe by default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// Base learning rate.
    pub lr: f64,
    /// Final learning rate of the cosine schedule.
    pub min_lr: f64,
    /// AdamW decoupled weight decay.
    pub weight_decay: f64,
    /// Global gradient-norm bound (`None`: no clipping).
    pub grad_clip_norm: Option<f64>,
    /// Epochs (the curriculum scales to it).
    pub epochs: usize,
    /// Optimiser steps per epoch.
    pub steps_per_epoch: usize,
    /// β of the anatomical-consistency term of `L_id`.
    pub id_consistency_beta: f64,
    /// τ of InfoNCE.
    pub info_nce_tau: f64,
    /// Fixed loss weights instead of the curriculum (tests, ablations).
    pub fixed_weights: Option<LossWeights>,
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            lr: 1e-4,
            min_lr: 0.0,
            weight_decay: 1e-5,
            grad_clip_norm: Some(1.0),
            epochs: 300,
            steps_per_epoch: 100,
            id_consistency_beta: 0.1,
            info_nce_tau: 0.1,
            fixed_weights: None,
        }
    }
}

impl TrainConfig {
    /// Total optimiser steps.
    pub fn total_steps(&self) -> usize {
        self.epochs * self.steps_per_epoch
    }

    /// Loss weights at `step`.
    pub fn weights(&self, step: usize) -> LossWeights {
        self.fixed_weights.unwrap_or_else(|| {
            curriculum(
                step as f64 / self.steps_per_epoch.max(1) as f64,
                self.epochs as f64,
            )
        })
    }
}

/// A batch on a device, with the targets of every term and which items have them.
#[derive(Debug, Clone)]
pub struct Batch {
    /// `[B, 1, Z, Y, X]`.
    pub image: Tensor<5>,
    /// Items with label maps, their binary mask `[b, 1, …]`, one-hot `[b, 26, …]`, and the
    /// classes present.
    pub seg: Option<(Vec<usize>, Tensor<5>, Tensor<5>, Vec<bool>)>,
    /// Instance boxes (all items with identities).
    pub boxes: Vec<RoiBox>,
    /// Identification class per box.
    pub box_class: Vec<usize>,
    /// Items with lesion annotations and their targets (heatmap, offset, size, mask), and the
    /// number of centres.
    pub lesion: Option<(Vec<usize>, [Tensor<5>; 4], usize)>,
    /// Domain index of every item (into the model's domain list), if the model has one.
    pub domains: Option<Vec<usize>>,
}

fn idx_tensor(idx: &[usize], device: &Device) -> Tensor<1, Int> {
    let v: Vec<i64> = idx.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [idx.len()]), device)
}

/// Stacks samples into a [`Batch`]; `domains` is the model's domain list (empty: no domain
/// loss).
///
/// # Errors
/// An empty batch, a sample of another window size, or a domain not in `domains`.
pub fn make_batch(
    samples: &[Sample],
    spec: &WindowSpec,
    domains: &[String],
    device: &Device,
) -> Result<Batch> {
    let n = spec.voxels();
    let [z, y, x] = spec.window;
    if samples.is_empty() || samples.iter().any(|s| s.image.len() != n) {
        return Err(Error::InvalidArgument(format!(
            "a batch needs at least one sample, each of {n} voxels"
        )));
    }
    let b = samples.len();
    let image: Vec<f32> = samples
        .iter()
        .flat_map(|s| s.image.iter().copied())
        .collect();
    let image = Tensor::from_data(TensorData::new(image, [b, 1, z, y, x]), device);
    let seg_items: Vec<usize> = (0..b).filter(|&i| samples[i].labels.is_some()).collect();
    let seg = if seg_items.is_empty() {
        None
    } else {
        let labels: Vec<&[u8]> = seg_items
            .iter()
            .filter_map(|&i| samples[i].labels.as_deref())
            .collect();
        let (oh, present) = losses::one_hot(&labels, NUM_SEG_CLASSES, spec.window, device)?;
        let mask: Vec<f32> = seg_items
            .iter()
            .flat_map(|&i| samples[i].mask().unwrap_or_default())
            .collect();
        let mask = Tensor::from_data(TensorData::new(mask, [seg_items.len(), 1, z, y, x]), device);
        Some((seg_items, mask, oh, present))
    };
    let mut boxes = Vec::new();
    let mut box_class = Vec::new();
    for (i, s) in samples.iter().enumerate() {
        if s.annotations.ids {
            for inst in &s.instances {
                boxes.push(RoiBox {
                    batch: i,
                    min: inst.min,
                    max: inst.max,
                });
                box_class.push(inst.class);
            }
        }
    }
    let les_items: Vec<usize> = (0..b).filter(|&i| samples[i].lesions.is_some()).collect();
    let lesion = if les_items.is_empty() {
        None
    } else {
        let [gz, gy, gx] = spec.lesion_grid();
        let k = les_items.len();
        let stack = |f: &dyn Fn(&crate::preprocess::LesionTargets) -> &Vec<f32>, c: usize| {
            let v: Vec<f32> = les_items
                .iter()
                .filter_map(|&i| samples[i].lesions.as_ref())
                .flat_map(|t| f(t).iter().copied())
                .collect();
            Tensor::<5>::from_data(TensorData::new(v, [k, c, gz, gy, gx]), device)
        };
        let count = les_items
            .iter()
            .filter_map(|&i| samples[i].lesions.as_ref())
            .map(|t| t.count)
            .sum();
        let t = [
            stack(&|t| &t.heatmap, NUM_LESION_CLASSES),
            stack(&|t| &t.offset, 3),
            stack(&|t| &t.log_size, 3),
            stack(&|t| &t.mask, 1),
        ];
        Some((les_items, t, count))
    };
    let domains = if domains.is_empty() {
        None
    } else {
        let mut v = Vec::with_capacity(b);
        for s in samples {
            let d = domains
                .iter()
                .position(|d| *d == s.domain)
                .ok_or_else(|| Error::Case {
                    case: s.case_id.clone(),
                    message: format!(
                        "domain {:?} is not one of the model's domains {domains:?}",
                        s.domain
                    ),
                })?;
            v.push(d);
        }
        Some(v)
    };
    Ok(Batch {
        image,
        seg,
        boxes,
        box_class,
        lesion,
        domains,
    })
}

/// The loss terms of one step (unweighted) and the weighted total.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct LossTerms {
    /// `L_seg`.
    pub seg: f32,
    /// `L_id`.
    pub id: f32,
    /// `L_det`.
    pub det: f32,
    /// `L_domain`.
    pub domain: f32,
    /// Weighted total.
    pub total: f32,
}

/// Forward pass and weighted loss of a batch.
///
/// # Errors
/// Forward or loss errors (shape mismatches).
pub fn compute_loss(
    model: &VertebraFormer,
    batch: &Batch,
    w: LossWeights,
    cfg: &TrainConfig,
) -> Result<(Tensor<1>, LossTerms)> {
    let device = batch.image.device();
    let use_boxes = model.identification.is_some() && w.id > 0.0 && !batch.boxes.is_empty();
    let out = model.forward(VertebraFormerInput {
        image: batch.image.clone(),
        boxes: if use_boxes {
            batch.boxes.clone()
        } else {
            Vec::new()
        },
        domain_mix: None,
    })?;
    let mut total = losses::zero(&device);
    let mut terms = LossTerms::default();
    let read = |t: &Tensor<1>| t.clone().into_scalar::<f32>();
    if let Some((items, mask, oh, present)) = &batch.seg {
        let idx = idx_tensor(items, &device);
        let l = losses::binary_segmentation_loss(
            out.vertebra_logit.clone().select(0, idx.clone()),
            mask.clone(),
        ) + losses::multiclass_segmentation_loss(
            out.label_logits.clone().select(0, idx),
            oh.clone(),
            present,
        )?;
        terms.seg = read(&l);
        total = total + l * w.seg;
    }
    if let (true, Some(logits)) = (use_boxes, &out.id_logits) {
        let batch_of: Vec<usize> = batch.boxes.iter().map(|b| b.batch).collect();
        let pairs = losses::consecutive_pairs(&batch_of, &batch.box_class);
        let l = losses::identification_loss(
            logits.clone(),
            &batch.box_class,
            &pairs,
            cfg.id_consistency_beta,
        )?;
        terms.id = read(&l);
        total = total + l * w.id;
    }
    if let (true, Some((items, t, count)), Some(h), Some(o), Some(s)) = (
        w.det > 0.0,
        &batch.lesion,
        &out.lesion_heatmap_logits,
        &out.lesion_offset,
        &out.lesion_log_size,
    ) {
        let idx = idx_tensor(items, &device);
        let [th, to, ts, tm] = t.clone();
        let l = losses::detection_loss(
            h.clone().select(0, idx.clone()),
            o.clone().select(0, idx.clone()),
            s.clone().select(0, idx),
            th,
            to,
            ts,
            tm,
            *count,
        );
        terms.det = read(&l);
        total = total + l * w.det;
    }
    if let (true, Some(d), Some(z), Some(g)) = (
        w.domain > 0.0,
        &batch.domains,
        &out.domain_image_embedding,
        &model.domain,
    ) {
        let l = losses::info_nce(z.clone(), g.prototypes.val(), d, cfg.info_nce_tau)?;
        terms.domain = read(&l);
        total = total + l * w.domain;
    }
    terms.total = read(&total);
    Ok((total, terms))
}

struct NormSq<'a> {
    grads: &'a GradientsParams,
    sum: f64,
}

impl ModuleVisitor for NormSq<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.get::<D>(param.id) {
            self.sum += f64::from(g.powi_scalar(2).sum().into_scalar::<f32>());
        }
    }
}

struct Scale<'a> {
    grads: &'a mut GradientsParams,
    factor: f64,
}

impl ModuleVisitor for Scale<'_> {
    fn visit_float<const D: usize>(&mut self, param: &Param<Tensor<D>>) {
        if let Some(g) = self.grads.remove::<D>(param.id) {
            self.grads
                .register::<D>(param.id, g.mul_scalar(self.factor));
        }
    }
}

/// Scales all gradients of `module` so that their global L2 norm is at most `max_norm`;
/// returns the norm before clipping.
pub fn clip_global_norm<M: Module>(module: &M, grads: &mut GradientsParams, max_norm: f64) -> f64 {
    let mut v = NormSq { grads, sum: 0.0 };
    module.visit(&mut v);
    let norm = v.sum.sqrt();
    if norm.is_finite() && norm > max_norm && norm > 0.0 {
        let mut s = Scale {
            grads,
            factor: max_norm / norm,
        };
        module.visit(&mut s);
    }
    norm
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct StepReport {
    /// Step index (0-based).
    pub step: usize,
    /// Learning rate used.
    pub lr: f64,
    /// Loss weights used.
    pub weights: LossWeights,
    /// Loss terms before the update.
    pub loss: LossTerms,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
}

/// A fresh AdamW with the settings of `config` (decoupled weight decay).
pub fn optimizer(config: &TrainConfig) -> ModuleOptimizer {
    AdamWConfig::new()
        .with_weight_decay(config.weight_decay as f32)
        .init()
}

/// A model with its optimiser state and step counter.
pub struct Trainer {
    /// The network (on an autodiff device).
    pub model: VertebraFormer,
    /// AdamW state.
    pub optimizer: ModuleOptimizer,
    /// Settings.
    pub config: TrainConfig,
    /// Steps taken.
    pub step: usize,
}

impl Trainer {
    /// A freshly initialised network on `device` (made autodiff if it is not).
    ///
    /// # Errors
    /// An invalid network configuration.
    pub fn new(
        model_config: &VertebraFormerConfig,
        config: TrainConfig,
        device: &Device,
    ) -> Result<Self> {
        let device = if device.is_autodiff() {
            device.clone()
        } else {
            device.clone().autodiff()
        };
        let model = model_config.init(&device)?;
        let optimizer = optimizer(&config);
        Ok(Trainer {
            model,
            optimizer,
            config,
            step: 0,
        })
    }

    /// One optimisation step on `batch`.
    ///
    /// # Errors
    /// Forward or loss errors; a non-finite loss (training diverged: stop rather than write
    /// NaN weights).
    pub fn step(&mut self, batch: &Batch) -> Result<StepReport> {
        let weights = self.config.weights(self.step);
        let lr = cosine_lr(
            self.step,
            self.config.total_steps(),
            self.config.lr,
            self.config.min_lr,
        );
        let (loss, terms) = compute_loss(&self.model, batch, weights, &self.config)?;
        if !terms.total.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "step {}: loss is not finite ({terms:?}); training diverged",
                self.step
            )));
        }
        let mut grads = GradientsParams::from_grads(loss.backward(), &self.model);
        let grad_norm = match self.config.grad_clip_norm {
            Some(m) => clip_global_norm(&self.model, &mut grads, m),
            None => f64::NAN,
        };
        self.model = self.optimizer.step(lr, self.model.clone(), grads);
        let report = StepReport {
            step: self.step,
            lr,
            weights,
            loss: terms,
            grad_norm,
        };
        self.step += 1;
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Annotations;
    use crate::preprocess::{InstanceTarget, LesionTargets};
    use crate::schedule::curriculum;

    fn spec() -> WindowSpec {
        WindowSpec::from_config(&VertebraFormerConfig::tiny()).unwrap()
    }

    /// A 32³ window with an L1 cube; `full`: ids and (empty) lesion annotations too.
    fn sample(full: bool, domain: &str) -> Sample {
        let spec = spec();
        let [z, y, x] = spec.window;
        let mut labels = vec![0u8; z * y * x];
        let mut image = vec![0.0f32; z * y * x];
        for k in 10..20 {
            for j in 12..18 {
                for i in 8..16 {
                    labels[i + x * (j + y * k)] = 20;
                    image[i + x * (j + y * k)] = 0.85;
                }
            }
        }
        let [gz, gy, gx] = spec.lesion_grid();
        let cells = gz * gy * gx;
        Sample {
            case_id: "c".into(),
            domain: domain.into(),
            image,
            labels: Some(labels),
            instances: if full {
                vec![InstanceTarget {
                    min: [10.0, 12.0, 8.0],
                    max: [20.0, 18.0, 16.0],
                    class: 19,
                    voxels: 480,
                }]
            } else {
                Vec::new()
            },
            lesions: full.then(|| LesionTargets {
                heatmap: vec![0.0; NUM_LESION_CLASSES * cells],
                offset: vec![0.0; 3 * cells],
                log_size: vec![0.0; 3 * cells],
                mask: vec![0.0; cells],
                count: 0,
            }),
            annotations: Annotations {
                masks: true,
                ids: full,
                lesions: full,
            },
        }
    }

    #[test]
    fn cases_feed_only_the_losses_they_have() {
        let device = Device::flex().autodiff();
        let config = VertebraFormerConfig::tiny();
        let spec = spec();
        let d = &config.domains;
        let mixed = make_batch(
            &[sample(true, &d[0]), sample(false, &d[1])],
            &spec,
            d,
            &device,
        )
        .unwrap();
        assert_eq!(mixed.seg.as_ref().unwrap().0, vec![0, 1]);
        assert_eq!(mixed.boxes.len(), 1);
        assert_eq!(mixed.lesion.as_ref().unwrap().0, vec![0]);
        assert_eq!(mixed.domains, Some(vec![0, 1]));
        let model = config.init(&device).unwrap();
        let w = curriculum(1.0, 1.0);
        let cfg = TrainConfig::default();
        let (_, t) = compute_loss(&model, &mixed, w, &cfg).unwrap();
        assert!(
            t.seg > 0.0 && t.id > 0.0 && t.det > 0.0 && t.domain > 0.0,
            "{t:?}"
        );
        let masks_only = make_batch(&[sample(false, &d[0])], &spec, d, &device).unwrap();
        let (_, t) = compute_loss(&model, &masks_only, w, &cfg).unwrap();
        assert!(t.seg > 0.0 && t.domain > 0.0, "{t:?}");
        assert_eq!((t.id, t.det), (0.0, 0.0));
        // Before the curriculum ramp, ID and detection are off even where annotated.
        let (_, t) = compute_loss(&model, &mixed, curriculum(0.0, 300.0), &cfg).unwrap();
        assert_eq!((t.id, t.det), (0.0, 0.0));
        let e = make_batch(&[sample(true, "elsewhere")], &spec, d, &device).unwrap_err();
        assert!(
            e.to_string().contains("not one of the model's domains"),
            "{e}"
        );
    }

    #[test]
    fn global_norm_clipping_bounds_the_whole_gradient() {
        use burn::nn::LinearConfig;
        let device = Device::flex().autodiff();
        let lin = LinearConfig::new(3, 2).init(&device);
        let x = Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2.0, 3.0], [1, 3]), &device);
        let loss = lin.forward(x).sum() * 100.0;
        let mut grads = GradientsParams::from_grads(loss.backward(), &lin);
        // d/dW = 100·x per output column, d/db = 100: norm = 100·sqrt(2·14 + 2).
        let before = clip_global_norm(&lin, &mut grads, 1.0);
        assert!((before - 100.0 * 30f64.sqrt()).abs() < 1e-2, "{before}");
        let after = clip_global_norm(&lin, &mut grads, 1.0);
        assert!((after - 1.0).abs() < 1e-5, "{after}");
        // Below the bound nothing changes.
        assert!((clip_global_norm(&lin, &mut grads, 10.0) - 1.0).abs() < 1e-5);
    }
}
