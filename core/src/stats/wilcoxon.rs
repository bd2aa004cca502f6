//! Two-sided Wilcoxon signed-rank test on paired samples.
//!
//! Used to compare a model with the best baseline on the same patients (one paired value
//! per patient, e.g. mean Dice). The definitions are those of `scipy.stats.wilcoxon` 1.17.1
//! with its defaults `zero_method="wilcox"`, `correction=False`, `method="auto"`,
//! `alternative="two-sided"`:
//!
//! - differences `dᵢ = xᵢ − yᵢ`; **zeros are dropped** (Wilcox), leaving `m` non-zero ones;
//! - `|dᵢ|` of the non-zero differences are ranked 1…m, **tied magnitudes get the average
//!   rank** (exact floating-point equality decides ties);
//! - `R⁺` / `R⁻` are the rank sums of the positive / negative differences; the reported
//!   statistic is `min(R⁺, R⁻)`;
//! - the null distribution ("auto" choice, `n` counting zeros too):
//!   - `n > 50`: normal approximation;
//!   - `n ≤ 50`, no ties and no zeros: **exact** distribution of `R⁺` (each of the `2ᵐ` sign
//!     patterns equally likely), `p = min(1, 2·min(P(R⁺ ≤ r), P(R⁺ ≥ r)))`;
//!   - `n ≤ 13` with ties or zeros: the **exact sign-flip permutation** distribution of `R⁺`
//!     over the `2ᵐ` sign patterns of the non-zero differences with their (average) ranks,
//!     same p-value formula (SciPy enumerates `2ⁿ` sign flips, zeros included; flipping a zero
//!     changes nothing, so the proportions are identical);
//!   - otherwise (`14 ≤ n ≤ 50` with ties or zeros): normal approximation;
//! - normal approximation without continuity correction:
//!   `z = (R⁺ − m(m+1)/4) / σ`, `σ² = (m(m+1)(2m+1) − Σ(t³ − t)/2) / 24` over tie groups of
//!   size `t`, `p = 2·Φ(−|z|)`.
//!
//! Degenerate inputs: empty or unequal-length inputs and non-finite values are
//! [`Error::InvalidArgument`] (SciPy returns `NaN` or propagates it). If every difference is
//! zero there is nothing to rank: the result is statistic 0, p-value 1, method
//! [`WilcoxonMethod::NoNonzeroDifferences`] (SciPy gives the same for `n ≤ 13` and `NaN` for
//! larger `n`, where its normal approximation divides 0 by 0).

use serde::{Deserialize, Serialize};

use super::normal::normal_cdf;
use crate::error::{Error, Result};

/// Above this many pairs SciPy's "auto" always uses the normal approximation.
const EXACT_MAX_PAIRS: usize = 50;

/// Up to this many pairs SciPy's "auto" enumerates all sign flips when ties or zeros make
/// the tabulated exact distribution invalid (`2¹³` is below its 9,999 permutation budget).
const PERMUTATION_MAX_PAIRS: usize = 13;

/// Which null distribution produced the p-value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WilcoxonMethod {
    /// Exact distribution of `R⁺` with ranks 1…m (no ties, no zeros, at most 50 pairs).
    Exact,
    /// Exact enumeration of all sign flips with the observed (average) ranks (ties or zeros,
    /// at most 13 pairs).
    ExactPermutation,
    /// Normal approximation without continuity correction, tie-corrected variance.
    Asymptotic,
    /// Every difference is zero: no evidence either way, p-value 1 by convention.
    NoNonzeroDifferences,
}

/// Outcome of a two-sided Wilcoxon signed-rank test.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct WilcoxonResult {
    /// `min(R⁺, R⁻)`, SciPy's two-sided statistic.
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
    /// Rank sum of the positive differences (`x > y`).
    pub rank_sum_positive: f64,
    /// Rank sum of the negative differences (`x < y`).
    pub rank_sum_negative: f64,
    /// Number of pairs given, zeros included.
    pub n_pairs: usize,
    /// Number of zero differences (dropped before ranking).
    pub n_zero: usize,
    /// Whether any non-zero magnitudes are tied.
    pub has_ties: bool,
    /// Null distribution used.
    pub method: WilcoxonMethod,
    /// For [`WilcoxonMethod::Asymptotic`], the signed `z = (R⁺ − E R⁺)/σ` (positive when `x`
    /// tends to exceed `y`; SciPy reports `−|z|`).
    pub z: Option<f64>,
}

/// Two-sided Wilcoxon signed-rank test of paired samples `x` and `y` (differences `x − y`).
///
/// # Errors
/// [`Error::InvalidArgument`] if the lengths differ, the samples are empty, or a value or
/// difference is not finite.
pub fn wilcoxon_signed_rank(x: &[f64], y: &[f64]) -> Result<WilcoxonResult> {
    if x.len() != y.len() {
        return Err(Error::InvalidArgument(format!(
            "wilcoxon: paired samples differ in length ({} vs {})",
            x.len(),
            y.len()
        )));
    }
    if let Some(v) = x.iter().chain(y).find(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "wilcoxon: non-finite value {v} in the paired samples"
        )));
    }
    let d: Vec<f64> = x.iter().zip(y).map(|(a, b)| a - b).collect();
    wilcoxon_signed_rank_differences(&d)
}

/// Two-sided Wilcoxon signed-rank test of paired differences `d` (one-sample form).
///
/// # Errors
/// [`Error::InvalidArgument`] if `d` is empty or holds a non-finite value.
pub fn wilcoxon_signed_rank_differences(d: &[f64]) -> Result<WilcoxonResult> {
    if d.is_empty() {
        return Err(Error::InvalidArgument(
            "wilcoxon: no paired values to test".into(),
        ));
    }
    if let Some(v) = d.iter().find(|v| !v.is_finite()) {
        return Err(Error::InvalidArgument(format!(
            "wilcoxon: non-finite difference {v}"
        )));
    }
    let n_pairs = d.len();
    let nonzero: Vec<f64> = d.iter().copied().filter(|&v| v != 0.0).collect();
    let n_zero = n_pairs - nonzero.len();
    let ranked = rank_magnitudes(&nonzero);

    let mut result = WilcoxonResult {
        statistic: 0.0,
        p_value: 1.0,
        rank_sum_positive: 0.0,
        rank_sum_negative: 0.0,
        n_pairs,
        n_zero,
        has_ties: ranked.tie_sizes.iter().any(|&t| t > 1),
        method: WilcoxonMethod::NoNonzeroDifferences,
        z: None,
    };
    if nonzero.is_empty() {
        return Ok(result);
    }
    for (&v, &r) in nonzero.iter().zip(&ranked.ranks) {
        if v > 0.0 {
            result.rank_sum_positive += r;
        } else {
            result.rank_sum_negative += r;
        }
    }
    result.statistic = result.rank_sum_positive.min(result.rank_sum_negative);

    result.method = if n_pairs > EXACT_MAX_PAIRS {
        WilcoxonMethod::Asymptotic
    } else if !result.has_ties && n_zero == 0 {
        WilcoxonMethod::Exact
    } else if n_pairs <= PERMUTATION_MAX_PAIRS {
        WilcoxonMethod::ExactPermutation
    } else {
        WilcoxonMethod::Asymptotic
    };

    match result.method {
        WilcoxonMethod::Exact | WilcoxonMethod::ExactPermutation => {
            // Average ranks are multiples of 1/2: doubled they are integers, and the sign-flip
            // distribution of 2·R⁺ is a subset-sum count. Without ties this is exactly the
            // classical table of R⁺ (ranks 1…m doubled).
            let doubled: Vec<usize> = ranked.ranks.iter().map(|&r| (2.0 * r) as usize).collect();
            let observed = (2.0 * result.rank_sum_positive) as usize;
            result.p_value = sign_flip_p_value(&doubled, observed);
        }
        WilcoxonMethod::Asymptotic => {
            let m = nonzero.len() as f64;
            let mean = m * (m + 1.0) * 0.25;
            let tie_correction: f64 = ranked
                .tie_sizes
                .iter()
                .map(|&t| {
                    let t = t as f64;
                    t * t * t - t
                })
                .sum();
            let sigma = ((m * (m + 1.0) * (2.0 * m + 1.0) - tie_correction / 2.0) / 24.0).sqrt();
            let z = (result.rank_sum_positive - mean) / sigma;
            result.z = Some(z);
            result.p_value = 2.0 * normal_cdf(-z.abs());
        }
        WilcoxonMethod::NoNonzeroDifferences => {}
    }
    Ok(result)
}

/// Average ranks of `|v|` (1-based, in input order) and the sizes of the tie groups.
struct RankedMagnitudes {
    ranks: Vec<f64>,
    tie_sizes: Vec<usize>,
}

fn rank_magnitudes(values: &[f64]) -> RankedMagnitudes {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].abs().total_cmp(&values[b].abs()));
    let mut ranks = vec![0.0; values.len()];
    let mut tie_sizes = Vec::new();
    let mut start = 0;
    while start < order.len() {
        let magnitude = values[order[start]].abs();
        let mut end = start + 1;
        while end < order.len() && values[order[end]].abs() == magnitude {
            end += 1;
        }
        // Positions start..end hold ordinal ranks start+1 ..= end; their average:
        let rank = (start + 1) as f64 + (end - start - 1) as f64 / 2.0;
        for &i in &order[start..end] {
            ranks[i] = rank;
        }
        tie_sizes.push(end - start);
        start = end;
    }
    RankedMagnitudes { ranks, tie_sizes }
}

/// Two-sided p-value of the observed (doubled) positive rank sum under equally likely sign
/// flips of items with (doubled) ranks `doubled`: `min(1, 2·min(P(S ≤ s), P(S ≥ s)))`.
///
/// Counts are exact integers (`2ᵐ ≤ 2⁵⁰` here), so the p-value is the correctly rounded
/// ratio.
fn sign_flip_p_value(doubled: &[usize], observed: usize) -> f64 {
    let total: usize = doubled.iter().sum();
    // counts[s] = number of sign patterns whose doubled positive rank sum is s.
    let mut counts = vec![0u64; total + 1];
    counts[0] = 1;
    let mut reach = 0;
    for &r in doubled {
        for s in (0..=reach).rev() {
            let c = counts[s];
            if c != 0 {
                counts[s + r] += c;
            }
        }
        reach += r;
    }
    let at_most: u64 = counts[..=observed.min(total)].iter().sum();
    let at_least: u64 = counts[observed.min(total)..].iter().sum();
    let patterns = (doubled.len() as f64).exp2();
    let p = 2.0 * (at_most.min(at_least) as f64 / patterns);
    p.min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_average_over_ties() {
        let r = rank_magnitudes(&[3.0, -1.0, 1.0, 2.0, -2.0, 2.0]);
        assert_eq!(r.ranks, vec![6.0, 1.5, 1.5, 4.0, 4.0, 4.0]);
        assert_eq!(r.tie_sizes, vec![2, 3, 1]);
    }

    #[test]
    fn exact_distribution_small_case_by_hand() {
        // n = 3: R+ takes 0,1,2,3,3,4,5,6 over the 8 sign patterns; P(R+ <= 0) = 1/8.
        assert_eq!(sign_flip_p_value(&[2, 4, 6], 0), 0.25);
        // Observed 3 (doubled 6): P(<=3) = 5/8, P(>=3) = 5/8 -> p = min(1, 1.25) = 1.
        assert_eq!(sign_flip_p_value(&[2, 4, 6], 6), 1.0);
    }

    #[test]
    fn all_positive_small_sample() {
        let res = wilcoxon_signed_rank_differences(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!(res.method, WilcoxonMethod::Exact);
        assert_eq!(res.statistic, 0.0);
        assert_eq!(res.rank_sum_positive, 15.0);
        // Only the all-positive pattern reaches 15: p = 2 / 32.
        assert_eq!(res.p_value, 0.0625);
    }
}
