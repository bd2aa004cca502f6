//! Identification by anatomical-order decoding of the whole column.
//!
//! Per-instance class probabilities (from the identification head, [`softmax`] of its
//! `id_logits`, or from the label votes, [`super::instances::VertebraInstance::vote_probabilities`])
//! are combined with the one fact every spine obeys: vertebrae follow each other in order.
//!
//! ## Model
//! Instances are taken in cranio-caudal order (see [`cranio_caudal_order`]). A labelling
//! assigns label `c_i` to instance `i`; its score is
//! `Σ_i ln max(p_i(c_i), min_probability) + Σ transitions`, where a transition from `a` to the
//! next instance's `b` is allowed only when
//! - `b` is the next standard vertebra after `a` (C1..L5): score 0;
//! - `b` skips exactly one standard level (`b = a + 2`, both within C1..L5): score
//!   [`DecodeConfig::gap_log_prior`] — a level missed by the segmentation (or a congenital
//!   absence, e.g. 11 thoracic vertebrae); at most [`DecodeConfig::max_gaps`] per column;
//! - `b` is L6 and `a` is L5: score [`DecodeConfig::l6_log_prior`] — the transitional
//!   lumbosacral vertebra (lumbarised S1) of ~5–10 % of people.
//!
//! A column may start at any level (the field of view is arbitrary); starting at L6 (its L5
//! outside the field of view) also pays the L6 prior. The best labelling is found by dynamic
//! programming (Viterbi) over states `(label, gaps used)`.
//!
//! ## Confidence
//! The same scores define a distribution over all allowed labellings (score = log of an
//! unnormalised probability). Each vertebra's `confidence` is the **posterior marginal**
//! probability that its instance carries the decoded label, summed over all allowed
//! labellings (forward–backward in log space). It is near 1 when the whole column agrees and
//! drops where a shift by one level is nearly as good — exactly where a reader should look.

use crate::anatomy::{NUM_STANDARD_VERTEBRAE, NUM_VERTEBRAE, Vertebra};
use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// Ordinal of L6 in the identification classes.
const L6: usize = NUM_VERTEBRAE - 1;

/// Settings of [`decode_column`]; [`Default`] gives the documented values.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecodeConfig {
    /// Log prior of skipping one standard level between neighbouring instances
    /// (default `ln 0.05`).
    pub gap_log_prior: f64,
    /// Log prior of a transitional L6 (default `ln 0.1`).
    pub l6_log_prior: f64,
    /// Maximum number of skipped levels in one column (default 1).
    pub max_gaps: usize,
    /// Probabilities are floored at this value before the logarithm, so that a single
    /// zero cannot veto a labelling the rest of the column supports (default 1e-4).
    pub min_probability: f64,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig {
            gap_log_prior: 0.05f64.ln(),
            l6_log_prior: 0.1f64.ln(),
            max_gaps: 1,
            min_probability: 1e-4,
        }
    }
}

/// The decoded label of one instance.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct DecodedVertebra {
    /// Index of the instance in the input.
    pub index: usize,
    /// Decoded label.
    pub vertebra: Vertebra,
    /// Posterior marginal probability of `vertebra` for this instance (see module docs).
    pub confidence: f64,
    /// The label with the highest input probability (before decoding).
    pub raw_vertebra: Vertebra,
    /// Its input probability.
    pub raw_probability: f64,
}

/// Softmax of one row of logits (numerically stable).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let m = f64::from(logits.iter().copied().fold(f32::NEG_INFINITY, f32::max));
    let e: Vec<f64> = logits.iter().map(|&l| (f64::from(l) - m).exp()).collect();
    let s: f64 = e.iter().sum();
    e.into_iter().map(|v| v / s).collect()
}

/// Indices of `centroids_world` (LPS, mm) in cranio-caudal order: decreasing superior (S)
/// coordinate, ties by index.
pub fn cranio_caudal_order(centroids_world: &[[f64; 3]]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..centroids_world.len()).collect();
    idx.sort_by(|&a, &b| {
        centroids_world[b][2]
            .total_cmp(&centroids_world[a][2])
            .then(a.cmp(&b))
    });
    idx
}

/// Allowed transitions `a → b` with their log prior and whether they use a gap.
fn transition(a: usize, b: usize, config: &DecodeConfig) -> Option<(f64, usize)> {
    let std = NUM_STANDARD_VERTEBRAE;
    if b == L6 {
        return (a == std - 1).then_some((config.l6_log_prior, 0));
    }
    if a < std && b == a + 1 {
        return Some((0.0, 0));
    }
    if a < std && b == a + 2 {
        return Some((config.gap_log_prior, 1));
    }
    None
}

fn log_sum_exp(a: f64, b: f64) -> f64 {
    if a == f64::NEG_INFINITY {
        return b;
    }
    if b == f64::NEG_INFINITY {
        return a;
    }
    let m = a.max(b);
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// Decodes the labels of a column of instances **given in cranio-caudal order**:
/// `probabilities[i]` holds the 25 class probabilities of the `i`-th instance from the top
/// (index `c` = label `c + 1`). Returns one entry per instance, in input order.
///
/// # Errors
/// [`Error::InvalidArgument`] when a row does not have 25 finite non-negative values, or no
/// allowed labelling exists (more instances than the column has levels).
pub fn decode_column(
    probabilities: &[Vec<f64>],
    config: &DecodeConfig,
) -> Result<Vec<DecodedVertebra>> {
    let n = probabilities.len();
    if n == 0 {
        return Ok(Vec::new());
    }
    let k = NUM_VERTEBRAE;
    for (i, row) in probabilities.iter().enumerate() {
        if row.len() != k || row.iter().any(|p| !p.is_finite() || *p < 0.0) {
            return Err(Error::InvalidArgument(format!(
                "identification probabilities of instance {i}: expected {k} finite values >= 0"
            )));
        }
    }
    let floor = config.min_probability.max(f64::MIN_POSITIVE);
    let emit: Vec<Vec<f64>> = probabilities
        .iter()
        .map(|r| r.iter().map(|&p| p.max(floor).ln()).collect())
        .collect();
    let g = config.max_gaps + 1;
    let state = |c: usize, used: usize| c * g + used;
    let ns = k * g;
    let start = |c: usize| if c == L6 { config.l6_log_prior } else { 0.0 };
    let ninf = f64::NEG_INFINITY;
    // Viterbi and forward.
    let mut best = vec![vec![ninf; ns]; n];
    let mut back = vec![vec![usize::MAX; ns]; n];
    let mut fwd = vec![vec![ninf; ns]; n];
    for c in 0..k {
        best[0][state(c, 0)] = start(c) + emit[0][c];
        fwd[0][state(c, 0)] = start(c) + emit[0][c];
    }
    for i in 1..n {
        for a in 0..k {
            for ua in 0..g {
                let (sb, sf) = (best[i - 1][state(a, ua)], fwd[i - 1][state(a, ua)]);
                if sf == ninf {
                    continue;
                }
                for b in (a + 1)..k {
                    let Some((prior, gap)) = transition(a, b, config) else {
                        continue;
                    };
                    let ub = ua + gap;
                    if ub >= g {
                        continue;
                    }
                    let t = state(b, ub);
                    let v = sb + prior + emit[i][b];
                    if v > best[i][t] {
                        best[i][t] = v;
                        back[i][t] = state(a, ua);
                    }
                    fwd[i][t] = log_sum_exp(fwd[i][t], sf + prior + emit[i][b]);
                }
            }
        }
    }
    let (mut s, score) =
        best[n - 1]
            .iter()
            .copied()
            .enumerate()
            .fold(
                (usize::MAX, ninf),
                |acc, (s, v)| if v > acc.1 { (s, v) } else { acc },
            );
    if score == ninf {
        return Err(Error::InvalidArgument(format!(
            "{n} instances cannot be labelled in anatomical order (C1..L5 with at most {} \
             skipped level(s) and L6)",
            config.max_gaps
        )));
    }
    let mut path = vec![0usize; n];
    for i in (0..n).rev() {
        path[i] = s;
        s = back[i][s];
    }
    // Backward.
    let mut bwd = vec![vec![ninf; ns]; n];
    for v in &mut bwd[n - 1] {
        *v = 0.0;
    }
    for i in (0..n - 1).rev() {
        for a in 0..k {
            for ua in 0..g {
                let mut acc = ninf;
                for b in (a + 1)..k {
                    let Some((prior, gap)) = transition(a, b, config) else {
                        continue;
                    };
                    let ub = ua + gap;
                    if ub < g {
                        acc = log_sum_exp(acc, prior + emit[i + 1][b] + bwd[i + 1][state(b, ub)]);
                    }
                }
                bwd[i][state(a, ua)] = acc;
            }
        }
    }
    let log_z = fwd[n - 1].iter().fold(ninf, |a, &b| log_sum_exp(a, b));
    Ok((0..n)
        .map(|i| {
            let c = path[i] / g;
            let post = (0..g).fold(ninf, |a, u| {
                log_sum_exp(a, fwd[i][state(c, u)] + bwd[i][state(c, u)])
            });
            let (raw, raw_p) = probabilities[i].iter().copied().enumerate().fold(
                (0, f64::NEG_INFINITY),
                |acc, (c, p)| if p > acc.1 { (c, p) } else { acc },
            );
            DecodedVertebra {
                index: i,
                vertebra: Vertebra::from_label(c as u8 + 1).unwrap_or(Vertebra::C1),
                confidence: (post - log_z).exp().clamp(0.0, 1.0),
                raw_vertebra: Vertebra::from_label(raw as u8 + 1).unwrap_or(Vertebra::C1),
                raw_probability: raw_p,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Probabilities peaked at `label` with mass `p`, the rest spread uniformly.
    fn peaked(v: Vertebra, p: f64) -> Vec<f64> {
        let rest = (1.0 - p) / (NUM_VERTEBRAE - 1) as f64;
        (0..NUM_VERTEBRAE)
            .map(|c| if c == v.ordinal() { p } else { rest })
            .collect()
    }

    fn labels(d: &[DecodedVertebra]) -> Vec<Vertebra> {
        d.iter().map(|d| d.vertebra).collect()
    }

    fn column(first: Vertebra, n: usize) -> Vec<Vertebra> {
        (0..n)
            .map(|i| Vertebra::from_label(first.label() + i as u8).unwrap())
            .collect()
    }

    #[test]
    fn clean_column_is_kept_with_high_confidence() {
        let truth = column(Vertebra::T10, 6);
        let probs: Vec<_> = truth.iter().map(|&v| peaked(v, 0.8)).collect();
        let d = decode_column(&probs, &DecodeConfig::default()).unwrap();
        assert_eq!(labels(&d), truth);
        for x in &d {
            assert!(x.confidence > 0.99, "{x:?}");
            assert_eq!(x.raw_vertebra, x.vertebra);
        }
    }

    #[test]
    fn a_missing_level_is_a_gap() {
        // C3, C4, C6, C7: C5 was not segmented.
        let truth = [Vertebra::C3, Vertebra::C4, Vertebra::C6, Vertebra::C7];
        let probs: Vec<_> = truth.iter().map(|&v| peaked(v, 0.7)).collect();
        let d = decode_column(&probs, &DecodeConfig::default()).unwrap();
        assert_eq!(labels(&d), truth);
        // Without gaps the best is a shifted column.
        let strict = DecodeConfig {
            max_gaps: 0,
            ..DecodeConfig::default()
        };
        let d = decode_column(&probs, &strict).unwrap();
        assert_ne!(labels(&d), truth);
        for w in d.windows(2) {
            assert_eq!(w[0].vertebra.next(), Some(w[1].vertebra));
        }
    }

    #[test]
    fn transitional_l6_is_decoded_only_with_evidence() {
        let truth = column(Vertebra::L2, 5); // L2..L6
        assert_eq!(truth[4], Vertebra::L6);
        let probs: Vec<_> = truth.iter().map(|&v| peaked(v, 0.6)).collect();
        let d = decode_column(&probs, &DecodeConfig::default()).unwrap();
        assert_eq!(labels(&d), truth);
        // No evidence at the last instance: the four above say L2..L5, and only L6 may
        // follow L5.
        let mut probs2 = probs.clone();
        probs2[4] = vec![1.0 / NUM_VERTEBRAE as f64; NUM_VERTEBRAE];
        let d2 = decode_column(&probs2, &DecodeConfig::default()).unwrap();
        assert_eq!(labels(&d2), truth, "order forces L6 after L5");
        assert!(d2[4].confidence > 0.5);
    }

    #[test]
    fn swapped_neighbours_are_put_in_order() {
        let truth = column(Vertebra::T6, 6);
        let mut probs: Vec<_> = truth.iter().map(|&v| peaked(v, 0.7)).collect();
        // Instances 2 and 3 vote for each other's label (weakly).
        probs.swap(2, 3);
        let d = decode_column(&probs, &DecodeConfig::default()).unwrap();
        assert_eq!(labels(&d), truth);
        assert_eq!(d[2].raw_vertebra, truth[3]);
        assert_eq!(d[3].raw_vertebra, truth[2]);
    }

    #[test]
    fn one_confident_wrong_vote_is_overridden_by_the_column() {
        let truth = column(Vertebra::T11, 7); // T11..L5
        let mut probs: Vec<_> = truth.iter().map(|&v| peaked(v, 0.6)).collect();
        probs[3] = peaked(Vertebra::T4, 0.999);
        let d = decode_column(&probs, &DecodeConfig::default()).unwrap();
        assert_eq!(labels(&d), truth);
        assert_eq!(d[3].raw_vertebra, Vertebra::T4);
        assert!((d[3].raw_probability - 0.999).abs() < 1e-12);
        assert!(d[3].confidence > 0.9, "{:?}", d[3]);
    }

    #[test]
    fn ambiguous_shift_has_low_confidence() {
        // Every instance is equally likely to be its label or one level lower: confidence
        // is about one half.
        let truth = column(Vertebra::T3, 4);
        let probs: Vec<_> = truth
            .iter()
            .map(|&v| {
                let mut p = vec![0.0; NUM_VERTEBRAE];
                p[v.ordinal()] = 0.5;
                p[v.ordinal() + 1] = 0.5;
                p
            })
            .collect();
        let d = decode_column(&probs, &DecodeConfig::default()).unwrap();
        for x in &d {
            assert!((0.3..0.7).contains(&x.confidence), "{x:?}");
        }
    }

    #[test]
    fn too_many_instances_and_bad_rows_are_errors() {
        let probs = vec![vec![1.0 / 25.0; 25]; 27];
        assert!(decode_column(&probs, &DecodeConfig::default()).is_err());
        assert!(decode_column(&[vec![0.5; 3]], &DecodeConfig::default()).is_err());
        assert!(
            decode_column(&[], &DecodeConfig::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn softmax_and_order() {
        let p = softmax(&[0.0, 2.0f32.ln(), 0.0]);
        assert!((p[1] - 0.5).abs() < 1e-7 && (p[0] - 0.25).abs() < 1e-7);
        let order = cranio_caudal_order(&[[0.0, 0.0, -10.0], [0.0, 0.0, 30.0], [0.0, 0.0, 5.0]]);
        assert_eq!(order, vec![1, 2, 0]);
    }
}
