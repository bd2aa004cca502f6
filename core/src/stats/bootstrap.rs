//! Bootstrap confidence intervals with patient-level resampling.
//!
//! # Definitions
//!
//! The data are per-case values grouped by patient ([`PatientSamples`]); a patient may
//! contribute several cases (studies, vertebrae, lesions...). Cases of one patient are not
//! independent, so the resampling unit is the **patient**: one bootstrap replicate draws
//! `P` patients uniformly *with replacement* from the `P` patients and takes *all* cases of
//! every drawn patient (a patient drawn twice contributes its cases twice). The statistic
//! is then evaluated on the concatenated case values of the replicate, in draw order.
//!
//! The statistic is a closure over **case values** (`&[T]`, the flattened cases of the
//! resampled patients). The default, [`bootstrap_mean_ci`], is the mean of the per-case
//! values, which is what the trainer reports (e.g. mean Dice over cases). To bootstrap a
//! statistic of per-patient aggregates instead (e.g. the mean of per-patient mean Dice),
//! aggregate first and pass one value per patient; patient-level resampling then reduces to
//! the ordinary one-sample bootstrap.
//!
//! With θ̂ the statistic on the original data and θ̂*₁…θ̂*_B the replicates:
//!
//! - **Percentile** interval: the `α` and `1 − α` quantiles of the replicates, with
//!   `α = (1 − confidence_level) / 2`.
//! - **BCa** interval (Efron & Tibshirani 1993, §14.3 and eq. 15.36, as in SciPy):
//!   - bias correction `z₀ = Φ⁻¹(( #{θ̂*_b < θ̂} + #{θ̂*_b ≤ θ̂} ) / 2B)` — SciPy 1.17.1 counts
//!     replicates *tied* with θ̂ as half below (`percentileofscore(kind="mean")`), which is
//!     what this code does too;
//!   - acceleration from the jackknife **over patients**: θ̂₍ᵢ₎ is the statistic with
//!     patient `i` (all its cases) left out, `θ̄ = mean θ̂₍ᵢ₎`, `Uᵢ = (P − 1)(θ̄ − θ̂₍ᵢ₎)`,
//!     `a = Σ Uᵢ³ / P³ / (6 · (Σ Uᵢ² / P²)^{3/2})`;
//!   - adjusted levels `α₁ = Φ(z₀ + (z₀ + z_α) / (1 − a(z₀ + z_α)))` and
//!     `α₂ = Φ(z₀ + (z₀ + z₁₋α) / (1 − a(z₀ + z₁₋α)))`, with `z_α = Φ⁻¹(α)`;
//!   - the interval is the `α₁` and `α₂` quantiles of the replicates.
//! - Quantiles use the "linear" rule (Hyndman & Fan type 7, NumPy's and
//!   `scipy.stats.quantile`'s default): on the sorted replicates `y₀ ≤ … ≤ y_{B−1}`,
//!   `h = p·B + (1 − p)`, `j = ⌊h⌋`, `g = h − j`, result `(1 − g)·y_{j−1} + g·y_j` (indices
//!   clamped to `[0, B − 1]`).
//! - The standard error is the sample standard deviation (denominator `B − 1`) of the
//!   replicates.
//!
//! # Degenerate inputs
//!
//! SciPy warns and returns `NaN` for several of these; we do not return `NaN`:
//!
//! - no patients, a patient without cases, duplicate patient ids, fewer than two patients,
//!   fewer than two resamples, a confidence level outside `(0, 1)`:
//!   [`Error::InvalidArgument`];
//! - a non-finite case value (for [`bootstrap_mean_ci`]) or a statistic that evaluates to a
//!   non-finite value on the data, a replicate or a jackknife sample: `Error::InvalidArgument`
//!   naming where;
//! - every replicate equal to θ̂ (e.g. all case values equal) — to within a relative 1e-12,
//!   because constant data still give replicates that differ in the last bit: the bootstrap
//!   distribution is a point mass, so the interval is `[θ̂, θ̂]` for both methods and the
//!   result is flagged [`BootstrapCi::degenerate`] (SciPy's BCa gives `NaN` or a rounding-noise
//!   interval here, as the acceleration is `0/0` or noise over noise);
//! - BCa when θ̂ lies entirely outside the replicates (`z₀ = ±∞`, typical of `min`/`max`
//!   statistics), when the jackknife values are all equal but the replicates are not
//!   (acceleration `0/0`), or when the adjusted levels are otherwise not finite:
//!   `Error::InvalidArgument` recommending the percentile method.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha20Rng;
use serde::{Deserialize, Serialize};

use super::normal::{normal_cdf, normal_quantile};
use crate::error::{Error, Result};

/// Replicates per interval in the paper's protocol.
pub const DEFAULT_N_RESAMPLES: usize = 10_000;

/// Confidence level of the paper's intervals.
pub const DEFAULT_CONFIDENCE_LEVEL: f64 = 0.95;

/// Seed of [`BootstrapConfig::default`]; any fixed value makes reports reproducible.
pub const DEFAULT_SEED: u64 = 20_240_917;

/// How the interval is read off the bootstrap distribution.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CiMethod {
    /// Plain percentile interval: the `α` and `1 − α` quantiles of the replicates.
    Percentile,
    /// Bias-corrected and accelerated interval (the paper's choice).
    Bca,
}

/// Parameters of a seeded bootstrap; [`Default`] is the paper's protocol (95 % BCa, 10,000
/// replicates) with [`DEFAULT_SEED`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapConfig {
    /// Two-sided confidence level, strictly between 0 and 1.
    pub confidence_level: f64,
    /// Number of bootstrap replicates `B` (at least 2, so that a standard error exists).
    pub n_resamples: usize,
    /// Interval method.
    pub method: CiMethod,
    /// Seed of the ChaCha20 generator that draws the patient indices: the same data, statistic
    /// and config always give bit-identical results on every platform.
    pub seed: u64,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        Self {
            confidence_level: DEFAULT_CONFIDENCE_LEVEL,
            n_resamples: DEFAULT_N_RESAMPLES,
            method: CiMethod::Bca,
            seed: DEFAULT_SEED,
        }
    }
}

/// Per-case values grouped by patient: the unit of resampling is the patient.
///
/// Patients keep the order in which they were given (first appearance for
/// [`from_cases`](Self::from_cases)); the seeded resampling indexes patients in that order,
/// so the same input order reproduces the same interval.
///
/// It is deliberately not `Deserialize`: every instance goes through the validating
/// constructors.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PatientSamples<T> {
    patient_ids: Vec<String>,
    cases: Vec<Vec<T>>,
}

impl<T> PatientSamples<T> {
    /// Builds the samples from `(patient id, that patient's case values)` groups.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for a duplicate patient id or a patient with no cases (it
    /// could not contribute to any statistic and would make replicates ill-defined).
    pub fn from_groups<I, S>(groups: I) -> Result<Self>
    where
        I: IntoIterator<Item = (S, Vec<T>)>,
        S: Into<String>,
    {
        let mut patient_ids = Vec::new();
        let mut cases = Vec::new();
        let mut seen = HashMap::new();
        for (id, values) in groups {
            let id = id.into();
            if values.is_empty() {
                return Err(Error::InvalidArgument(format!(
                    "bootstrap: patient '{id}' has no cases"
                )));
            }
            if seen.insert(id.clone(), patient_ids.len()).is_some() {
                return Err(Error::InvalidArgument(format!(
                    "bootstrap: patient '{id}' given twice; merge its cases into one group"
                )));
            }
            patient_ids.push(id);
            cases.push(values);
        }
        Ok(Self { patient_ids, cases })
    }

    /// Builds the samples from `(patient id, case value)` pairs, grouping cases of the same
    /// patient (patients ordered by first appearance, cases in input order).
    pub fn from_cases<I, S>(cases: I) -> Self
    where
        I: IntoIterator<Item = (S, T)>,
        S: Into<String>,
    {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut patient_ids = Vec::new();
        let mut groups: Vec<Vec<T>> = Vec::new();
        for (id, value) in cases {
            let id = id.into();
            let slot = *index.entry(id.clone()).or_insert_with(|| {
                patient_ids.push(id);
                groups.push(Vec::new());
                groups.len() - 1
            });
            groups[slot].push(value);
        }
        Self {
            patient_ids,
            cases: groups,
        }
    }

    /// Builds the samples with one case per observation and synthetic patient ids `"0"`,
    /// `"1"`...: the ordinary (case-level) bootstrap, e.g. for per-patient aggregates.
    pub fn one_case_per_patient(values: Vec<T>) -> Self {
        let patient_ids = (0..values.len()).map(|i| i.to_string()).collect();
        let cases = values.into_iter().map(|v| vec![v]).collect();
        Self { patient_ids, cases }
    }

    /// Number of patients `P`.
    pub fn n_patients(&self) -> usize {
        self.cases.len()
    }

    /// Total number of cases over all patients.
    pub fn n_cases(&self) -> usize {
        self.cases.iter().map(Vec::len).sum()
    }

    /// Patient ids in resampling order.
    pub fn patient_ids(&self) -> &[String] {
        &self.patient_ids
    }

    /// The cases of patient number `patient` (in resampling order), `None` if out of range.
    pub fn cases_of(&self, patient: usize) -> Option<&[T]> {
        self.cases.get(patient).map(Vec::as_slice)
    }
}

/// A bootstrap confidence interval and how it was obtained.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BootstrapCi {
    /// The statistic θ̂ on the original data.
    pub estimate: f64,
    /// Lower bound of the interval.
    pub low: f64,
    /// Upper bound of the interval.
    pub high: f64,
    /// Two-sided confidence level requested.
    pub confidence_level: f64,
    /// Interval method.
    pub method: CiMethod,
    /// Quantile levels actually read off the replicates: `(α, 1 − α)` for the percentile
    /// method and for degenerate results, `(α₁, α₂)` for BCa.
    pub quantile_levels: (f64, f64),
    /// BCa bias correction `z₀` (`None` for the percentile method and degenerate results).
    pub bias_correction: Option<f64>,
    /// BCa acceleration `a` (`None` for the percentile method and degenerate results).
    pub acceleration: Option<f64>,
    /// Sample standard deviation (denominator `B − 1`) of the replicates; exactly 0 for
    /// degenerate results (rounding noise is not reported as spread).
    pub standard_error: f64,
    /// Number of replicates `B`.
    pub n_resamples: usize,
    /// Number of patients `P`.
    pub n_patients: usize,
    /// Number of cases over all patients.
    pub n_cases: usize,
    /// Seed of the resampling, `None` when explicit resamples were given.
    pub seed: Option<u64>,
    /// `true` when every replicate equals the estimate up to a relative 1e-12 (no variability
    /// in the data as far as the statistic can see): the interval is then
    /// `[estimate, estimate]`.
    pub degenerate: bool,
}

/// The mean of the per-case values: the statistic [`bootstrap_mean_ci`] uses.
fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// 95 % (or as configured) bootstrap CI of the **mean of per-case values** with patient-level
/// resampling: the protocol the trainer reports for per-case metrics.
///
/// # Errors
/// Non-finite case values, and everything [`bootstrap_ci`] rejects.
pub fn bootstrap_mean_ci(
    samples: &PatientSamples<f64>,
    config: &BootstrapConfig,
) -> Result<BootstrapCi> {
    for (id, cases) in samples.patient_ids.iter().zip(&samples.cases) {
        if let Some(v) = cases.iter().find(|v| !v.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "bootstrap: patient '{id}' has a non-finite case value ({v})"
            )));
        }
    }
    bootstrap_ci(samples, mean, config)
}

/// Seeded bootstrap CI of `statistic` (a function of the flattened case values of a
/// replicate) with patient-level resampling; see the [module docs](self) for definitions.
///
/// Patient indices are drawn with ChaCha20 seeded by `config.seed`, `P` uniform draws per
/// replicate, replicate after replicate. Cost: `B` statistic evaluations on about as many
/// cases as the data, plus `P` jackknife evaluations for BCa.
///
/// # Errors
/// See "Degenerate inputs" in the [module docs](self).
pub fn bootstrap_ci<T, F>(
    samples: &PatientSamples<T>,
    mut statistic: F,
    config: &BootstrapConfig,
) -> Result<BootstrapCi>
where
    T: Clone,
    F: FnMut(&[T]) -> f64,
{
    validate(samples, config.confidence_level, config.n_resamples)?;
    let n = samples.n_patients();
    let n_draw = u32::try_from(n).map_err(|_| {
        Error::InvalidArgument(format!("bootstrap: {n} patients exceed the supported 2^32"))
    })?;
    let mut rng = ChaCha20Rng::seed_from_u64(config.seed);
    let mut indices = vec![0usize; n];
    let mut buffer = Vec::with_capacity(samples.n_cases());
    let mut replicates = Vec::with_capacity(config.n_resamples);
    for b in 0..config.n_resamples {
        for slot in &mut indices {
            *slot = rng.random_range(0..n_draw) as usize;
        }
        replicates.push(evaluate_replicate(
            samples,
            &mut statistic,
            &indices,
            &mut buffer,
            b,
        )?);
    }
    let mut ci = finish(
        samples,
        &mut statistic,
        replicates,
        config.confidence_level,
        config.method,
    )?;
    ci.seed = Some(config.seed);
    Ok(ci)
}

/// Bootstrap CI from **explicit** resamples: `resamples[b]` lists the `P` patient indices
/// (into [`PatientSamples`] order) drawn for replicate `b`.
///
/// This is the seam that lets the definitions be checked against `scipy.stats.bootstrap`
/// with identical resamples; it also serves callers that need several statistics on the
/// same resamples. Everything after the draw is shared with [`bootstrap_ci`].
///
/// # Errors
/// A resample whose length is not `P` or that holds an index `≥ P`, and everything
/// [`bootstrap_ci`] rejects.
pub fn bootstrap_ci_from_resamples<T, F>(
    samples: &PatientSamples<T>,
    mut statistic: F,
    resamples: &[Vec<usize>],
    confidence_level: f64,
    method: CiMethod,
) -> Result<BootstrapCi>
where
    T: Clone,
    F: FnMut(&[T]) -> f64,
{
    validate(samples, confidence_level, resamples.len())?;
    let n = samples.n_patients();
    let mut buffer = Vec::with_capacity(samples.n_cases());
    let mut replicates = Vec::with_capacity(resamples.len());
    for (b, indices) in resamples.iter().enumerate() {
        if indices.len() != n {
            return Err(Error::InvalidArgument(format!(
                "bootstrap: resample {b} has {} patient indices, expected {n}",
                indices.len()
            )));
        }
        if let Some(bad) = indices.iter().find(|&&i| i >= n) {
            return Err(Error::InvalidArgument(format!(
                "bootstrap: resample {b} refers to patient {bad}, but there are only {n}"
            )));
        }
        replicates.push(evaluate_replicate(
            samples,
            &mut statistic,
            indices,
            &mut buffer,
            b,
        )?);
    }
    finish(
        samples,
        &mut statistic,
        replicates,
        confidence_level,
        method,
    )
}

fn validate<T>(
    samples: &PatientSamples<T>,
    confidence_level: f64,
    n_resamples: usize,
) -> Result<()> {
    if samples.n_patients() < 2 {
        return Err(Error::InvalidArgument(format!(
            "bootstrap: need at least 2 patients to resample, got {}",
            samples.n_patients()
        )));
    }
    if !(confidence_level > 0.0 && confidence_level < 1.0) {
        return Err(Error::InvalidArgument(format!(
            "bootstrap: confidence level must lie strictly between 0 and 1, got {confidence_level}"
        )));
    }
    if n_resamples < 2 {
        return Err(Error::InvalidArgument(format!(
            "bootstrap: need at least 2 resamples, got {n_resamples}"
        )));
    }
    Ok(())
}

/// Evaluates the statistic on the cases of the patients in `indices`, in that order.
fn evaluate_replicate<T: Clone, F: FnMut(&[T]) -> f64>(
    samples: &PatientSamples<T>,
    statistic: &mut F,
    indices: &[usize],
    buffer: &mut Vec<T>,
    b: usize,
) -> Result<f64> {
    buffer.clear();
    for &i in indices {
        buffer.extend_from_slice(&samples.cases[i]);
    }
    let value = statistic(buffer);
    if value.is_finite() {
        Ok(value)
    } else {
        Err(Error::InvalidArgument(format!(
            "bootstrap: the statistic is {value} on resample {b}"
        )))
    }
}

/// Everything after the replicates: estimate, jackknife, levels, quantiles.
fn finish<T: Clone, F: FnMut(&[T]) -> f64>(
    samples: &PatientSamples<T>,
    statistic: &mut F,
    mut replicates: Vec<f64>,
    confidence_level: f64,
    method: CiMethod,
) -> Result<BootstrapCi> {
    let all: Vec<T> = samples.cases.iter().flatten().cloned().collect();
    let estimate = statistic(&all);
    if !estimate.is_finite() {
        return Err(Error::InvalidArgument(format!(
            "bootstrap: the statistic is {estimate} on the original data"
        )));
    }
    let b = replicates.len();
    let standard_error = sample_std(&replicates);
    replicates.sort_by(f64::total_cmp);

    let alpha = (1.0 - confidence_level) / 2.0;
    let mut ci = BootstrapCi {
        estimate,
        low: estimate,
        high: estimate,
        confidence_level,
        method,
        quantile_levels: (alpha, 1.0 - alpha),
        bias_correction: None,
        acceleration: None,
        standard_error,
        n_resamples: b,
        n_patients: samples.n_patients(),
        n_cases: samples.n_cases(),
        seed: None,
        degenerate: is_point_mass(&replicates, estimate),
    };
    if ci.degenerate {
        ci.standard_error = 0.0;
        return Ok(ci);
    }
    if method == CiMethod::Bca {
        let below = replicates.partition_point(|&v| v < estimate);
        let at_or_below = replicates.partition_point(|&v| v <= estimate);
        let z0 = normal_quantile((below + at_or_below) as f64 / (2 * b) as f64);
        if !z0.is_finite() {
            return Err(Error::InvalidArgument(format!(
                "bootstrap: BCa undefined, the estimate {estimate} lies outside all {b} \
                 replicates (typical of min/max statistics); use the percentile method"
            )));
        }
        let jackknife = jackknife_over_patients(samples, statistic)?;
        let a = acceleration(&jackknife);
        if !a.is_finite() {
            return Err(Error::InvalidArgument(
                "bootstrap: BCa acceleration undefined, every leave-one-patient-out value \
                 is the same while the replicates vary; use the percentile method"
                    .into(),
            ));
        }
        let z_alpha = normal_quantile(alpha);
        let level = |z: f64| {
            let num = z0 + z;
            normal_cdf(z0 + num / (1.0 - a * num))
        };
        let (alpha_1, alpha_2) = (level(z_alpha), level(-z_alpha));
        if !(alpha_1.is_finite() && alpha_2.is_finite()) {
            return Err(Error::InvalidArgument(format!(
                "bootstrap: BCa levels not finite (z0 = {z0}, a = {a}); use the percentile method"
            )));
        }
        ci.quantile_levels = (alpha_1, alpha_2);
        ci.bias_correction = Some(z0);
        ci.acceleration = Some(a);
    }
    ci.low = linear_quantile(&replicates, ci.quantile_levels.0);
    ci.high = linear_quantile(&replicates, ci.quantile_levels.1);
    Ok(ci)
}

/// Relative spread below which the sorted replicates and the estimate count as one value.
///
/// Constant data do not give bit-identical replicates: the mean of `k` copies of 0.9 is
/// `0.9 ± 1 ulp` depending on `k`. A genuine sampling spread of 1e-12 relative is far below
/// anything the evaluation measures, so such a spread is treated as none.
const POINT_MASS_RELATIVE_SPREAD: f64 = 1e-12;

/// Whether the sorted `replicates` and `estimate` all agree to within
/// [`POINT_MASS_RELATIVE_SPREAD`] of their magnitude (exactly, when that magnitude is 0).
fn is_point_mass(sorted: &[f64], estimate: f64) -> bool {
    let (first, last) = (sorted[0], sorted[sorted.len() - 1]);
    let low = first.min(estimate);
    let high = last.max(estimate);
    let scale = low.abs().max(high.abs());
    high - low <= POINT_MASS_RELATIVE_SPREAD * scale
}

/// The statistic with each patient (all of its cases) left out in turn.
fn jackknife_over_patients<T: Clone, F: FnMut(&[T]) -> f64>(
    samples: &PatientSamples<T>,
    statistic: &mut F,
) -> Result<Vec<f64>> {
    let mut buffer = Vec::with_capacity(samples.n_cases());
    (0..samples.n_patients())
        .map(|left_out| {
            buffer.clear();
            for (i, cases) in samples.cases.iter().enumerate() {
                if i != left_out {
                    buffer.extend_from_slice(cases);
                }
            }
            let value = statistic(&buffer);
            if value.is_finite() {
                Ok(value)
            } else {
                Err(Error::InvalidArgument(format!(
                    "bootstrap: the statistic is {value} with patient '{}' left out",
                    samples.patient_ids[left_out]
                )))
            }
        })
        .collect()
}

/// BCa acceleration from jackknife values, SciPy's formula (`NaN` when they are all equal).
fn acceleration(jackknife: &[f64]) -> f64 {
    let n = jackknife.len() as f64;
    let dot = jackknife.iter().sum::<f64>() / n;
    let (mut cubes, mut squares) = (0.0, 0.0);
    for &theta in jackknife {
        let u = (n - 1.0) * (dot - theta);
        cubes += u * u * u;
        squares += u * u;
    }
    let num = cubes / (n * n * n);
    let den = squares / (n * n);
    1.0 / 6.0 * num / den.powf(1.5)
}

/// Hyndman & Fan type-7 ("linear") quantile of sorted, non-empty `sorted` at `p ∈ [0, 1]`,
/// written exactly as `scipy.stats.quantile(method="linear")` computes it.
fn linear_quantile(sorted: &[f64], p: f64) -> f64 {
    let n = sorted.len() as f64;
    let h = p * n + (1.0 - p);
    let upper = h.floor();
    let mut g = h - upper;
    let lower = upper - 1.0;
    if lower < 0.0 {
        g = 0.0;
    }
    let last = n - 1.0;
    let j = lower.clamp(0.0, last) as usize;
    let jp1 = upper.clamp(0.0, last) as usize;
    (1.0 - g) * sorted[j] + g * sorted[jp1]
}

/// Sample standard deviation with denominator `len − 1` (`len ≥ 2`).
fn sample_std(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let m = values.iter().sum::<f64>() / n;
    let ss: f64 = values.iter().map(|v| (v - m) * (v - m)).sum();
    (ss / (n - 1.0)).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_quantile_matches_numpy_rule() {
        let y = [1.0, 2.0, 4.0, 8.0];
        // numpy.quantile([1, 2, 4, 8], [0, 0.25, 0.5, 0.9, 1]) = [1, 1.75, 3, 6.8, 8]
        let expect = [(0.0, 1.0), (0.25, 1.75), (0.5, 3.0), (0.9, 6.8), (1.0, 8.0)];
        for (p, q) in expect {
            assert!((linear_quantile(&y, p) - q).abs() < 1e-12, "p={p}");
        }
    }

    #[test]
    fn acceleration_is_zero_for_symmetric_jackknife() {
        assert_eq!(acceleration(&[1.0, 2.0, 3.0]), 0.0);
        assert!(acceleration(&[2.0, 2.0, 2.0]).is_nan());
        // Skewed: one outlying leave-one-out value gives a non-zero acceleration.
        assert!(acceleration(&[1.0, 1.0, 5.0]) != 0.0);
    }

    #[test]
    fn from_cases_groups_by_first_appearance() {
        let s = PatientSamples::from_cases([("b", 1.0), ("a", 2.0), ("b", 3.0)]);
        assert_eq!(s.patient_ids(), ["b", "a"]);
        assert_eq!(s.cases_of(0), Some(&[1.0, 3.0][..]));
        assert_eq!(s.cases_of(1), Some(&[2.0][..]));
        assert_eq!(s.cases_of(2), None);
        assert_eq!(s.n_cases(), 3);
    }
}
