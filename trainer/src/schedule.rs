//! The loss-weight curriculum and the learning-rate schedule.
//!
//! ## Curriculum (paper, 300 epochs)
//! Epochs 0–100: segmentation (+ domain) only; 100–150: the identification and lesion weights
//! ramp linearly from 0 to 0.5; 150–300: all constant (1.0 / 0.5 / 0.5 / 0.1). With `E`
//! configured epochs the breakpoints scale to `E/3` and `E/2`. The epoch may be fractional
//! (`step / steps_per_epoch`), so the ramp is smooth within an epoch.
//!
//! ## Learning rate
//! Cosine annealing from the base rate at step 0 to `min_lr` at the last step, no warm-up
//! (the paper names none).

use serde::{Deserialize, Serialize};

/// Weight of the segmentation loss.
pub const SEG_WEIGHT: f64 = 1.0;
/// Final weight of the identification loss.
pub const ID_WEIGHT: f64 = 0.5;
/// Final weight of the detection loss.
pub const DET_WEIGHT: f64 = 0.5;
/// Weight of the domain (InfoNCE) loss.
pub const DOMAIN_WEIGHT: f64 = 0.1;

/// Weights of the four loss terms at one point of training.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LossWeights {
    /// `L_seg`.
    pub seg: f64,
    /// `L_id`.
    pub id: f64,
    /// `L_det`.
    pub det: f64,
    /// `L_domain`.
    pub domain: f64,
}

/// The curriculum weights at (fractional) `epoch` of `total_epochs` (see the module docs).
/// A non-positive or non-finite total gives the final weights (no curriculum).
pub fn curriculum(epoch: f64, total_epochs: f64) -> LossWeights {
    let ramp = if total_epochs.is_finite() && total_epochs > 0.0 {
        let start = total_epochs / 3.0;
        let end = total_epochs / 2.0;
        ((epoch - start) / (end - start)).clamp(0.0, 1.0)
    } else {
        1.0
    };
    LossWeights {
        seg: SEG_WEIGHT,
        id: ID_WEIGHT * ramp,
        det: DET_WEIGHT * ramp,
        domain: DOMAIN_WEIGHT,
    }
}

/// Cosine-annealed learning rate at `step` of `total_steps` (steps past the end stay at
/// `min_lr`).
pub fn cosine_lr(step: usize, total_steps: usize, base_lr: f64, min_lr: f64) -> f64 {
    if total_steps <= 1 {
        return base_lr;
    }
    let t = (step as f64 / (total_steps - 1) as f64).min(1.0);
    min_lr + 0.5 * (base_lr - min_lr) * (1.0 + (std::f64::consts::PI * t).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curriculum_follows_the_paper_at_300_epochs() {
        let w = |e: f64| curriculum(e, 300.0);
        assert_eq!(
            w(0.0),
            LossWeights {
                seg: 1.0,
                id: 0.0,
                det: 0.0,
                domain: 0.1
            }
        );
        assert_eq!(w(99.9).id, 0.0);
        assert_eq!(w(100.0).det, 0.0);
        assert!((w(125.0).id - 0.25).abs() < 1e-12);
        assert!((w(112.5).det - 0.125).abs() < 1e-12);
        assert_eq!(
            w(150.0),
            LossWeights {
                seg: 1.0,
                id: 0.5,
                det: 0.5,
                domain: 0.1
            }
        );
        assert_eq!(w(299.0).id, 0.5);
    }

    #[test]
    fn curriculum_scales_with_the_epoch_count() {
        // 30 epochs: ramp from 10 to 15.
        assert_eq!(curriculum(9.0, 30.0).id, 0.0);
        assert!((curriculum(12.5, 30.0).det - 0.25).abs() < 1e-12);
        assert_eq!(curriculum(15.0, 30.0).id, 0.5);
        // No curriculum without a positive total.
        assert_eq!(curriculum(0.0, 0.0).id, 0.5);
        // Monotone non-decreasing.
        let mut last = 0.0;
        for i in 0..=600 {
            let v = curriculum(f64::from(i) * 0.5, 300.0).id;
            assert!(v >= last);
            last = v;
        }
    }

    #[test]
    fn cosine_schedule_ends_at_the_floor() {
        assert_eq!(cosine_lr(0, 101, 1e-4, 0.0), 1e-4);
        assert!((cosine_lr(50, 101, 1e-4, 0.0) - 5e-5).abs() < 1e-12);
        assert!(cosine_lr(100, 101, 1e-4, 1e-6) - 1e-6 < 1e-15);
        assert!(cosine_lr(500, 101, 1e-4, 1e-6) - 1e-6 < 1e-15);
        assert!(cosine_lr(10, 101, 1e-4, 0.0) > cosine_lr(11, 101, 1e-4, 0.0));
    }
}
