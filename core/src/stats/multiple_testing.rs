//! Holm–Bonferroni correction for a family of hypothesis tests.
//!
//! The paper compares its model with the best baseline on several metrics; the family-wise
//! error rate of those comparisons is controlled with Holm's step-down procedure. The
//! definition is that of statsmodels' `multipletests(pvals, alpha, method="holm")`:
//!
//! with the `m` p-values sorted ascending, `p₍₁₎ ≤ … ≤ p₍ₘ₎`,
//!
//! - adjusted `p̃₍ᵢ₎ = min(1, max_{j ≤ i} (m − j + 1)·p₍ⱼ₎)` (monotone, capped at 1);
//! - hypotheses `(1) … (k−1)` are rejected, where `k` is the first position with
//!   `p₍ₖ₎ > α / (m − k + 1)` (all are rejected if there is none).
//!
//! Results are returned in the input order. Tied p-values receive identical adjusted values
//! and decisions whatever their order.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Holm–Bonferroni adjusted p-values and decisions, in the order the p-values were given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HolmResult {
    /// Family-wise significance level the decisions refer to.
    pub alpha: f64,
    /// Adjusted p-values (compare each with `alpha`; monotone in the raw p-values, ≤ 1).
    pub adjusted_p_values: Vec<f64>,
    /// `true` where the null hypothesis is rejected at family-wise level `alpha`.
    pub reject: Vec<bool>,
}

/// Applies Holm's step-down procedure to `p_values` at family-wise level `alpha`.
///
/// An empty family gives an empty result.
///
/// # Errors
/// [`Error::InvalidArgument`] if a p-value is not in `[0, 1]` (or is `NaN`), or `alpha` is
/// not strictly between 0 and 1.
pub fn holm_bonferroni(p_values: &[f64], alpha: f64) -> Result<HolmResult> {
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(Error::InvalidArgument(format!(
            "holm: alpha must lie strictly between 0 and 1, got {alpha}"
        )));
    }
    if let Some((i, p)) = p_values
        .iter()
        .enumerate()
        .find(|(_, p)| !(0.0..=1.0).contains(*p))
    {
        return Err(Error::InvalidArgument(format!(
            "holm: p-value {i} is {p}, not in [0, 1]"
        )));
    }
    let m = p_values.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p_values[a].total_cmp(&p_values[b]));

    let mut adjusted_p_values = vec![0.0; m];
    let mut reject = vec![false; m];
    let mut running_max = 0.0_f64;
    let mut still_rejecting = true;
    for (rank, &i) in order.iter().enumerate() {
        let multiplier = (m - rank) as f64;
        let p = p_values[i];
        // statsmodels decides with p > alpha / multiplier (not with the adjusted value).
        still_rejecting = still_rejecting && p <= alpha / multiplier;
        reject[i] = still_rejecting;
        running_max = running_max.max(p * multiplier);
        adjusted_p_values[i] = running_max.min(1.0);
    }
    Ok(HolmResult {
        alpha,
        adjusted_p_values,
        reject,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textbook_example() {
        // m = 4: sorted 0.01, 0.02, 0.03, 0.04 -> 0.04, 0.06, 0.06, 0.06.
        let res = holm_bonferroni(&[0.03, 0.01, 0.04, 0.02], 0.05).unwrap();
        let expect = [0.06, 0.04, 0.06, 0.06];
        for (a, e) in res.adjusted_p_values.iter().zip(expect) {
            assert!((a - e).abs() < 1e-15);
        }
        // 0.01 <= 0.05/4 rejects; 0.02 > 0.05/3 stops.
        assert_eq!(res.reject, vec![false, true, false, false]);
    }

    #[test]
    fn caps_at_one_and_rejects_invalid() {
        let res = holm_bonferroni(&[0.5, 0.9], 0.05).unwrap();
        assert_eq!(res.adjusted_p_values, vec![1.0, 1.0]);
        assert!(holm_bonferroni(&[f64::NAN], 0.05).is_err());
        assert!(holm_bonferroni(&[1.5], 0.05).is_err());
        assert!(holm_bonferroni(&[0.5], 0.0).is_err());
        assert!(holm_bonferroni(&[], 0.05).unwrap().reject.is_empty());
    }
}
