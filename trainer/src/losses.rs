//! The paper's losses as functions on Burn tensors (any backend; differentiable on autodiff).
//!
//! Every function returns a scalar `Tensor<1>` of shape `[1]`.
//!
//! ## Segmentation: `L_seg = [Dice + 0.5·focal](vertebra_logit) + [Dice + 0.5·focal](label_logits)`
//! The paper's `Dice + 0.5 focal (γ 2, α 0.25)` is applied to both segmentation outputs of the
//! contract: the binary vertebra logit (soft Dice over the batch, sigmoid focal loss averaged
//! over voxels with `α` on vertebra voxels and `1 − α` on background) and the 26-class label
//! logits (soft Dice averaged over the classes present in the target, softmax focal loss with
//! class weight `1 − α` for background and `α` for the vertebra classes).
//!
//! ## Identification: `L_id = CE + β·L_cons`
//! `CE` is the cross-entropy of `id_logits` against each box's class. The anatomical-consistency
//! term makes neighbouring vertebrae consecutive: for each box `k` the expected ordinal
//! `E_k = Σ_c c · softmax(id_logits_k)_c`; over every pair `(i, j)` of boxes in the same window
//! whose *true* classes are consecutive (`class_j = class_i + 1`),
//! `L_cons = mean (E_j − E_i − 1)²`. It is zero exactly when the predicted ordinals step by one
//! down the column, it penalises both swaps and skipped levels, and it stays differentiable
//! (an argmax-based rule would not be).
//!
//! ## Detection: `L_det = focal_heatmap + 1.0·(smoothL1(offset) + smoothL1(log_size))`
//! CenterNet's penalty-reduced focal loss on the heatmap logits (α = 2, β = 4, positives where
//! the target is 1), summed and divided by the number of lesion centres (at least 1); smooth-L1
//! (β = 1) on offsets and log-sizes at the centre cells only, divided the same way.
//!
//! ## Domain: InfoNCE
//! With image embeddings `z_b` as anchors and the domain prototypes `e_d` as keys:
//! `L_dom = mean_b −log softmax_d(cos(z_b, e_d) / τ)[d_b]`, the prototype form of InfoNCE (one
//! positive key, the other domains as negatives). With the model's τ it is the cross-entropy of
//! the model's own cosine-prototype classifier, so minimising it trains g(I) and e_d together.

use burn::tensor::activation::{log_sigmoid, log_softmax, sigmoid, softmax};
use burn::tensor::{Device, Tensor, TensorData};

use crate::{Error, Result};

/// Focal γ of the segmentation loss.
pub const FOCAL_GAMMA: i32 = 2;
/// Focal α of the segmentation loss (weight of the foreground).
pub const FOCAL_ALPHA: f64 = 0.25;
/// Weight of the focal term in `L_seg`.
pub const FOCAL_WEIGHT: f64 = 0.5;
/// Weight of the regression terms in `L_det`.
pub const REGRESSION_WEIGHT: f64 = 1.0;
/// Smoothing of the soft Dice ratios (avoids 0/0 on empty targets).
const DICE_EPS: f64 = 1.0;

/// A 1-element tensor holding `v`.
fn scalar(v: f32, device: &Device) -> Tensor<1> {
    Tensor::from_data(TensorData::new(vec![v], [1]), device)
}

/// `1 − (2 Σ p·t + ε) / (Σ p + Σ t + ε)` over all elements.
fn soft_dice<const D: usize>(p: Tensor<D>, t: Tensor<D>) -> Tensor<1> {
    let inter = (p.clone() * t.clone()).sum();
    let denom = p.sum() + t.sum();
    (inter * 2.0 + DICE_EPS).div(denom + DICE_EPS).neg() + 1.0
}

/// Soft Dice loss of a binary logit `[B, 1, Z, Y, X]` against a 0/1 target of the same shape.
pub fn binary_dice_loss(logits: Tensor<5>, target: Tensor<5>) -> Tensor<1> {
    soft_dice(sigmoid(logits), target)
}

/// Sigmoid focal loss (mean over elements) with foreground weight `alpha`.
pub fn sigmoid_focal_loss<const D: usize>(
    logits: Tensor<D>,
    target: Tensor<D>,
    alpha: f64,
) -> Tensor<1> {
    let p = sigmoid(logits.clone());
    let log_p = log_sigmoid(logits.clone());
    let log_1mp = log_sigmoid(logits.neg());
    let ce = (target.clone() * log_p + (target.clone().neg() + 1.0) * log_1mp).neg();
    let p_t = p.clone() * target.clone() + (p.neg() + 1.0) * (target.clone().neg() + 1.0);
    let alpha_t = target.clone() * alpha + (target.neg() + 1.0) * (1.0 - alpha);
    (alpha_t * (p_t.neg() + 1.0).powi_scalar(FOCAL_GAMMA) * ce).mean()
}

/// `Dice + 0.5·focal` on the binary vertebra logit.
pub fn binary_segmentation_loss(logits: Tensor<5>, target: Tensor<5>) -> Tensor<1> {
    binary_dice_loss(logits.clone(), target.clone())
        + sigmoid_focal_loss(logits, target, FOCAL_ALPHA) * FOCAL_WEIGHT
}

/// One-hot `[B, C, Z, Y, X]` of label windows (`labels[b]` has `Z·Y·X` values `< classes`) and
/// which classes occur.
///
/// # Errors
/// [`Error::InvalidArgument`] for a label `>= classes` or a window of the wrong size.
pub fn one_hot(
    labels: &[&[u8]],
    classes: usize,
    window: [usize; 3],
    device: &Device,
) -> Result<(Tensor<5>, Vec<bool>)> {
    let n: usize = window.iter().product();
    let mut data = vec![0.0f32; labels.len() * classes * n];
    let mut present = vec![false; classes];
    for (b, l) in labels.iter().enumerate() {
        if l.len() != n {
            return Err(Error::InvalidArgument(format!(
                "label window {b} has {} voxels, expected {n}",
                l.len()
            )));
        }
        for (i, &v) in l.iter().enumerate() {
            let c = v as usize;
            if c >= classes {
                return Err(Error::InvalidArgument(format!(
                    "label {v} >= {classes} classes"
                )));
            }
            present[c] = true;
            data[(b * classes + c) * n + i] = 1.0;
        }
    }
    let [z, y, x] = window;
    let t = Tensor::from_data(
        TensorData::new(data, [labels.len(), classes, z, y, x]),
        device,
    );
    Ok((t, present))
}

/// `Dice + 0.5·focal` on the 26-class label logits `[B, C, Z, Y, X]` against a one-hot target;
/// Dice is averaged over the classes in `present` (at least one must be).
///
/// # Errors
/// [`Error::InvalidArgument`] if `present` has the wrong length or no class.
pub fn multiclass_segmentation_loss(
    logits: Tensor<5>,
    one_hot: Tensor<5>,
    present: &[bool],
) -> Result<Tensor<1>> {
    let [_, c, _, _, _] = logits.dims();
    let k = present.iter().filter(|&&p| p).count();
    if present.len() != c || k == 0 {
        return Err(Error::InvalidArgument(format!(
            "class presence has {} entries ({k} present) for {c} classes",
            present.len()
        )));
    }
    let device = logits.device();
    let p = softmax(logits.clone(), 1);
    // Per-class Dice: sum over batch and space, keep the class axis.
    let inter = (p.clone() * one_hot.clone())
        .sum_dim(0)
        .sum_dim(2)
        .sum_dim(3)
        .sum_dim(4);
    let denom = (p.clone() + one_hot.clone())
        .sum_dim(0)
        .sum_dim(2)
        .sum_dim(3)
        .sum_dim(4);
    let dice = (inter * 2.0 + DICE_EPS).div(denom + DICE_EPS).reshape([c]);
    let w: Vec<f32> = present.iter().map(|&p| if p { 1.0 } else { 0.0 }).collect();
    let w = Tensor::<1>::from_data(TensorData::new(w, [c]), &device);
    let dice_loss = (dice * w).sum().div_scalar(k as f64).neg() + 1.0;
    // Softmax focal: −w_c (1 − p_c)^γ log p_c at the true class.
    let mut cw = vec![FOCAL_ALPHA as f32; c];
    cw[0] = (1.0 - FOCAL_ALPHA) as f32;
    let cw = Tensor::<1>::from_data(TensorData::new(cw, [c]), &device).reshape([1, c, 1, 1, 1]);
    let logp = log_softmax(logits, 1);
    let focal = (one_hot * cw * (p.neg() + 1.0).powi_scalar(FOCAL_GAMMA) * logp)
        .sum_dim(1)
        .neg()
        .mean();
    Ok(dice_loss + focal * FOCAL_WEIGHT)
}

/// Pairs `(i, j)` of instances of the same batch item with consecutive true classes
/// (`class_j = class_i + 1`): the neighbours the consistency term ties together.
pub fn consecutive_pairs(batch: &[usize], class: &[usize]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for i in 0..class.len() {
        for j in 0..class.len() {
            if batch[i] == batch[j] && class[j] == class[i] + 1 {
                pairs.push((i, j));
            }
        }
    }
    pairs
}

/// `CE + β·L_cons` on `id_logits` `[K, C]` with true classes `class` and neighbour `pairs`
/// (see the module docs).
///
/// # Errors
/// [`Error::InvalidArgument`] for a class count or pair index that does not fit the logits.
pub fn identification_loss(
    logits: Tensor<2>,
    class: &[usize],
    pairs: &[(usize, usize)],
    beta: f64,
) -> Result<Tensor<1>> {
    let [k, c] = logits.dims();
    if class.len() != k || k == 0 || class.iter().any(|&t| t >= c) {
        return Err(Error::InvalidArgument(format!(
            "{} identification targets (max {:?}) for logits {k} x {c}",
            class.len(),
            class.iter().max()
        )));
    }
    if pairs.iter().any(|&(i, j)| i >= k || j >= k) {
        return Err(Error::InvalidArgument(
            "consistency pair index out of range".into(),
        ));
    }
    let device = logits.device();
    let mut oh = vec![0.0f32; k * c];
    for (i, &t) in class.iter().enumerate() {
        oh[i * c + t] = 1.0;
    }
    let oh = Tensor::<2>::from_data(TensorData::new(oh, [k, c]), &device);
    let ce = (log_softmax(logits.clone(), 1) * oh)
        .sum_dim(1)
        .neg()
        .mean();
    if pairs.is_empty() || beta == 0.0 {
        return Ok(ce);
    }
    let ord: Vec<f32> = (0..c).map(|i| i as f32).collect();
    let ord = Tensor::<2>::from_data(TensorData::new(ord, [c, 1]), &device);
    let expected = softmax(logits, 1).matmul(ord); // [K, 1]
    let sel = |idx: Vec<i64>| {
        let n = idx.len();
        let idx = Tensor::<1, burn::tensor::Int>::from_data(TensorData::new(idx, [n]), &device);
        expected.clone().select(0, idx)
    };
    let ei = sel(pairs.iter().map(|&(i, _)| i as i64).collect());
    let ej = sel(pairs.iter().map(|&(_, j)| j as i64).collect());
    let cons = (ej - ei - 1.0).powi_scalar(2).mean();
    Ok(ce + cons * beta)
}

/// CenterNet's penalty-reduced focal loss (α = 2, β = 4) on heatmap logits against a Gaussian
/// target of the same shape, divided by `max(num_centres, 1)`.
pub fn heatmap_focal_loss(logits: Tensor<5>, target: Tensor<5>, num_centres: usize) -> Tensor<1> {
    let p = sigmoid(logits.clone()).clamp(1e-4, 1.0 - 1e-4);
    let log_p = log_sigmoid(logits.clone());
    let log_1mp = log_sigmoid(logits.neg());
    let pos = target.clone().greater_equal_elem(1.0 - 1e-6).float();
    let neg = pos.clone().neg() + 1.0;
    let pos_loss = (p.clone().neg() + 1.0).powi_scalar(2) * log_p * pos;
    let neg_loss = p.powi_scalar(2) * (target.neg() + 1.0).powi_scalar(4) * log_1mp * neg;
    (pos_loss + neg_loss)
        .sum()
        .neg()
        .div_scalar(num_centres.max(1) as f64)
}

/// Smooth-L1 (β = 1) of `pred − target` where `mask` (broadcast over channels) is 1, summed and
/// divided by `max(num_centres, 1)`.
pub fn masked_smooth_l1(
    pred: Tensor<5>,
    target: Tensor<5>,
    mask: Tensor<5>,
    num_centres: usize,
) -> Tensor<1> {
    let d = pred - target;
    let a = d.clone().abs();
    let small = a.clone().lower_elem(1.0);
    let l = (a - 0.5).mask_where(small, d.powi_scalar(2) * 0.5);
    (l * mask).sum().div_scalar(num_centres.max(1) as f64)
}

/// `L_det`: heatmap focal + 1.0·(smooth-L1 offsets + smooth-L1 log-sizes).
#[allow(clippy::too_many_arguments)]
pub fn detection_loss(
    heat_logits: Tensor<5>,
    offset: Tensor<5>,
    log_size: Tensor<5>,
    heat_target: Tensor<5>,
    offset_target: Tensor<5>,
    size_target: Tensor<5>,
    mask: Tensor<5>,
    num_centres: usize,
) -> Tensor<1> {
    heatmap_focal_loss(heat_logits, heat_target, num_centres)
        + (masked_smooth_l1(offset, offset_target, mask.clone(), num_centres)
            + masked_smooth_l1(log_size, size_target, mask, num_centres))
            * REGRESSION_WEIGHT
}

/// InfoNCE of anchors `[B, d]` against keys `[D, d]` with the positive key index per anchor
/// and temperature `tau` (cosine similarities).
///
/// # Errors
/// [`Error::InvalidArgument`] for a non-positive τ, mismatched widths or a target out of range.
pub fn info_nce(
    anchors: Tensor<2>,
    keys: Tensor<2>,
    targets: &[usize],
    tau: f64,
) -> Result<Tensor<1>> {
    let [b, d] = anchors.dims();
    let [n, dk] = keys.dims();
    if !(tau.is_finite() && tau > 0.0)
        || d != dk
        || targets.len() != b
        || targets.iter().any(|&t| t >= n)
    {
        return Err(Error::InvalidArgument(format!(
            "InfoNCE: tau {tau}, anchors {b} x {d}, keys {n} x {dk}, {} targets",
            targets.len()
        )));
    }
    let norm = |t: Tensor<2>| {
        let l = (t.clone().powi_scalar(2).sum_dim(1) + 1e-12).sqrt();
        t / l
    };
    let logits = norm(anchors).matmul(norm(keys).transpose()).div_scalar(tau);
    let device = logits.device();
    let mut oh = vec![0.0f32; b * n];
    for (i, &t) in targets.iter().enumerate() {
        oh[i * n + t] = 1.0;
    }
    let oh = Tensor::<2>::from_data(TensorData::new(oh, [b, n]), &device);
    Ok((log_softmax(logits, 1) * oh).sum_dim(1).neg().mean())
}

/// A zero loss on `device` (for terms whose weight or annotations are absent).
pub fn zero(device: &Device) -> Tensor<1> {
    scalar(0.0, device)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev() -> Device {
        Device::flex()
    }

    fn t5(v: Vec<f32>, shape: [usize; 5]) -> Tensor<5> {
        Tensor::from_data(TensorData::new(v, shape), &dev())
    }

    fn val(t: Tensor<1>) -> f32 {
        t.into_scalar::<f32>()
    }

    #[test]
    fn dice_and_focal_match_hand_values() {
        // logits 0 → p = 0.5 everywhere; target [1, 0, 1, 0].
        let l = t5(vec![0.0; 4], [1, 1, 1, 1, 4]);
        let t = t5(vec![1.0, 0.0, 1.0, 0.0], [1, 1, 1, 1, 4]);
        // Dice: 1 − (2·1 + 1)/(2 + 2 + 1) = 0.4.
        assert!((val(binary_dice_loss(l.clone(), t.clone())) - 0.4).abs() < 1e-6);
        // Focal: mean of α_t · 0.25 · ln 2 = (0.25 + 0.75)/2 · 0.25 · ln 2.
        let f = 0.5 * 0.25 * std::f32::consts::LN_2;
        assert!((val(sigmoid_focal_loss(l.clone(), t.clone(), 0.25)) - f).abs() < 1e-6);
        assert!((val(binary_segmentation_loss(l, t)) - (0.4 + 0.5 * f)).abs() < 1e-6);
        // Confident and right → near zero.
        let l = t5(vec![20.0, -20.0, 20.0, -20.0], [1, 1, 1, 1, 4]);
        let t = t5(vec![1.0, 0.0, 1.0, 0.0], [1, 1, 1, 1, 4]);
        assert!(val(binary_segmentation_loss(l, t)) < 0.15);
    }

    #[test]
    fn multiclass_loss_prefers_the_right_labels() {
        let labels: Vec<u8> = vec![0, 1, 2, 0];
        let (oh, present) = one_hot(&[&labels], 3, [1, 1, 4], &dev()).unwrap();
        assert_eq!(present, vec![true, true, true]);
        let good = oh.clone() * 20.0 - 10.0;
        let bad = oh.clone().neg() * 20.0 + 10.0;
        let lg = val(multiclass_segmentation_loss(good, oh.clone(), &present).unwrap());
        let lb = val(multiclass_segmentation_loss(bad, oh, &present).unwrap());
        assert!(lg < 0.01 && lb > 1.0, "{lg} {lb}");
        assert!(one_hot(&[&[0u8, 3]], 3, [1, 1, 2], &dev()).is_err());
    }

    #[test]
    fn identification_consistency_penalises_swaps() {
        let c = 5;
        let logits = |a: usize, b: usize| {
            let mut v = vec![-10.0f32; 2 * c];
            v[a] = 10.0;
            v[c + b] = 10.0;
            Tensor::<2>::from_data(TensorData::new(v, [2, c]), &dev())
        };
        let class = [1, 2];
        let pairs = consecutive_pairs(&[0, 0], &class);
        assert_eq!(pairs, vec![(0, 1)]);
        let right = val(identification_loss(logits(1, 2), &class, &pairs, 1.0).unwrap());
        assert!(right < 1e-3, "{right}");
        // Predicting (2, 1): CE ≈ 20 per box, consistency (1 − 2 − 1)² = 4.
        let swapped_ce = val(identification_loss(logits(2, 1), &class, &pairs, 0.0).unwrap());
        let swapped = val(identification_loss(logits(2, 1), &class, &pairs, 1.0).unwrap());
        assert!(
            (swapped - swapped_ce - 4.0).abs() < 1e-3,
            "{swapped} {swapped_ce}"
        );
        // Different batch items are never neighbours.
        assert!(consecutive_pairs(&[0, 1], &class).is_empty());
    }

    #[test]
    fn centernet_terms() {
        // One positive cell (target 1) and one negative with target 0.5.
        let target = t5(vec![1.0, 0.5], [1, 1, 1, 1, 2]);
        let logits = t5(vec![0.0, 0.0], [1, 1, 1, 1, 2]);
        // pos: −(0.5)² ln 0.5; neg: −(0.5)² (0.5)⁴ ln 0.5.
        let ln2 = std::f32::consts::LN_2;
        let want = 0.25 * ln2 + 0.25 * 0.0625 * ln2;
        assert!((val(heatmap_focal_loss(logits, target, 1)) - want).abs() < 1e-6);
        let pred = t5(vec![0.5, 3.0], [1, 1, 1, 1, 2]);
        let tgt = t5(vec![0.0, 0.0], [1, 1, 1, 1, 2]);
        let mask = t5(vec![1.0, 1.0], [1, 1, 1, 1, 2]);
        // 0.5·0.25 + (3 − 0.5) = 2.625.
        assert!((val(masked_smooth_l1(pred.clone(), tgt.clone(), mask, 1)) - 2.625).abs() < 1e-6);
        let mask = t5(vec![1.0, 0.0], [1, 1, 1, 1, 2]);
        assert!((val(masked_smooth_l1(pred, tgt, mask, 1)) - 0.125).abs() < 1e-6);
    }

    #[test]
    fn info_nce_is_low_for_the_own_prototype() {
        let keys =
            Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 0.0, 0.0, 1.0], [2, 2]), &dev());
        let a = Tensor::<2>::from_data(TensorData::new(vec![2.0f32, 0.0], [1, 2]), &dev());
        let right = val(info_nce(a.clone(), keys.clone(), &[0], 0.1).unwrap());
        let wrong = val(info_nce(a.clone(), keys.clone(), &[1], 0.1).unwrap());
        // logits (10, 0): right = ln(1 + e^-10), wrong = 10 + ln(1 + e^-10).
        assert!((right - (1.0f32 + (-10.0f32).exp()).ln()).abs() < 1e-5);
        assert!((wrong - right - 10.0).abs() < 1e-4);
        assert!(info_nce(a, keys, &[2], 0.1).is_err());
    }
}
