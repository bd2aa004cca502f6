//! Checks `vertebra_core::stats` against SciPy 1.17.1 / statsmodels reference values stored in
//! `tests/fixtures/stats/*.json` (written by `tests/fixtures/make_stats_fixtures.py`), plus
//! behavioural tests of the seeded, patient-level bootstrap and of degenerate inputs.

use std::path::PathBuf;

use rand::SeedableRng;
use rand_chacha::ChaCha20Rng;
use rand_distr::{Distribution, Normal};
use serde::Deserialize;
use vertebra_core::Error;
use vertebra_core::stats::{
    BootstrapConfig, CiMethod, PatientSamples, WilcoxonMethod, bootstrap_ci,
    bootstrap_ci_from_resamples, bootstrap_mean_ci, holm_bonferroni, normal_cdf, normal_quantile,
    wilcoxon_signed_rank, wilcoxon_signed_rank_differences,
};

#[derive(Deserialize)]
struct Fixture<T> {
    cases: T,
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> T {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/stats")
        .join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate with make_stats_fixtures.py)",
            path.display()
        )
    });
    serde_json::from_str::<Fixture<T>>(&text)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .cases
}

// ---------------------------------------------------------------------------------------
// Bootstrap
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct ScipyIntervals {
    bca: [f64; 2],
    percentile: [f64; 2],
    standard_error: f64,
}

#[derive(Deserialize)]
struct NumpyReference {
    estimate: f64,
    bias_correction: f64,
    acceleration: f64,
    quantile_levels: [f64; 2],
}

#[derive(Deserialize)]
struct BootstrapCase {
    name: String,
    statistic: String,
    confidence_level: f64,
    patients: Vec<Vec<f64>>,
    n_resamples: usize,
    resamples: String,
    scipy: ScipyIntervals,
    numpy_reference: NumpyReference,
}

fn decode_resamples(case: &BootstrapCase) -> Vec<Vec<usize>> {
    let p = case.patients.len();
    let digits: Vec<usize> = case
        .resamples
        .chars()
        .map(|c| c.to_digit(36).expect("base-36 digit") as usize)
        .collect();
    assert_eq!(digits.len(), p * case.n_resamples, "{}", case.name);
    digits.chunks(p).map(<[usize]>::to_vec).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        f64::midpoint(s[n / 2 - 1], s[n / 2])
    }
}

/// BCa and percentile intervals on SciPy's own resamples agree with `scipy.stats.bootstrap`
/// (and, for patient-level resampling, with SciPy bootstrapping patient indices, itself
/// cross-checked against an independent NumPy implementation) to 1e-6; in practice the
/// difference is at rounding level.
#[test]
fn bootstrap_matches_scipy_on_identical_resamples() {
    let cases: Vec<BootstrapCase> = load("bootstrap");
    assert!(cases.len() >= 10);
    let mut max_diff = 0.0_f64;
    for case in &cases {
        let groups = case
            .patients
            .iter()
            .enumerate()
            .map(|(i, g)| (format!("p{i}"), g.clone()));
        let samples = PatientSamples::from_groups(groups).unwrap();
        let resamples = decode_resamples(case);
        let statistic: fn(&[f64]) -> f64 = match case.statistic.as_str() {
            "mean" => mean,
            "median" => median,
            other => panic!("unknown statistic {other}"),
        };
        for (method, expected) in [
            (CiMethod::Bca, case.scipy.bca),
            (CiMethod::Percentile, case.scipy.percentile),
        ] {
            let ci = bootstrap_ci_from_resamples(
                &samples,
                statistic,
                &resamples,
                case.confidence_level,
                method,
            )
            .unwrap_or_else(|e| panic!("{} {method:?}: {e}", case.name));
            let diffs = [
                (ci.low - expected[0]).abs(),
                (ci.high - expected[1]).abs(),
                (ci.standard_error - case.scipy.standard_error).abs(),
                (ci.estimate - case.numpy_reference.estimate).abs(),
            ];
            for d in diffs {
                assert!(
                    d <= 1e-6,
                    "{} {method:?}: {ci:?} vs {expected:?}",
                    case.name
                );
                max_diff = max_diff.max(d);
            }
            assert!(!ci.degenerate);
            assert_eq!(ci.n_resamples, case.n_resamples);
            assert_eq!(ci.n_patients, case.patients.len());
            if method == CiMethod::Bca {
                let r = &case.numpy_reference;
                let z0 = ci.bias_correction.unwrap();
                let a = ci.acceleration.unwrap();
                assert!((z0 - r.bias_correction).abs() <= 1e-9, "{}", case.name);
                assert!((a - r.acceleration).abs() <= 1e-9, "{}", case.name);
                assert!((ci.quantile_levels.0 - r.quantile_levels[0]).abs() <= 1e-9);
                assert!((ci.quantile_levels.1 - r.quantile_levels[1]).abs() <= 1e-9);
            }
        }
    }
    eprintln!("bootstrap: max |ours - scipy| over all fixtures = {max_diff:e}");
}

#[test]
fn seeded_bootstrap_is_deterministic_and_seed_sensitive() {
    let samples = PatientSamples::from_cases((0..40).map(|i| {
        let patient = format!("p{}", i % 13);
        (patient, f64::from(i).sin() * 0.1 + 0.8)
    }));
    let config = BootstrapConfig {
        n_resamples: 2000,
        ..BootstrapConfig::default()
    };
    let a = bootstrap_mean_ci(&samples, &config).unwrap();
    let b = bootstrap_mean_ci(&samples, &config).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.seed, Some(config.seed));
    assert!(a.low < a.estimate && a.estimate < a.high, "{a:?}");
    let c = bootstrap_mean_ci(&samples, &BootstrapConfig { seed: 1, ..config }).unwrap();
    assert_ne!((a.low, a.high), (c.low, c.high));
    // The result is serialisable (it goes into evaluation reports).
    let json = serde_json::to_string(&a).unwrap();
    let back: vertebra_core::stats::BootstrapCi = serde_json::from_str(&json).unwrap();
    assert_eq!(back.method, CiMethod::Bca);
    assert_eq!(back.n_patients, 13);
}

#[test]
fn defaults_follow_the_paper() {
    let config = BootstrapConfig::default();
    assert_eq!(config.n_resamples, 10_000);
    assert_eq!(config.confidence_level, 0.95);
    assert_eq!(config.method, CiMethod::Bca);
    let samples = PatientSamples::one_case_per_patient((0..25).map(|i| f64::from(i % 7)).collect());
    let ci = bootstrap_mean_ci(&samples, &config).unwrap();
    assert_eq!(ci.n_resamples, 10_000);
}

/// Cases of one patient are correlated; resampling patients must widen the interval relative
/// to pretending every case is independent.
#[test]
fn patient_level_resampling_widens_clustered_intervals() {
    let mut rng = ChaCha20Rng::seed_from_u64(5);
    let between = Normal::new(0.0, 0.1).unwrap();
    let within = Normal::new(0.0, 0.01).unwrap();
    let mut cases = Vec::new();
    for p in 0..12 {
        let centre = 0.8 + between.sample(&mut rng);
        for _ in 0..8 {
            cases.push((format!("patient-{p}"), centre + within.sample(&mut rng)));
        }
    }
    let config = BootstrapConfig {
        n_resamples: 3000,
        ..BootstrapConfig::default()
    };
    let by_patient =
        bootstrap_mean_ci(&PatientSamples::from_cases(cases.clone()), &config).unwrap();
    let by_case = bootstrap_mean_ci(
        &PatientSamples::one_case_per_patient(cases.iter().map(|c| c.1).collect()),
        &config,
    )
    .unwrap();
    assert_eq!(by_patient.n_patients, 12);
    assert_eq!(by_patient.n_cases, 96);
    let width = |c: &vertebra_core::stats::BootstrapCi| c.high - c.low;
    assert!(
        width(&by_patient) > 2.0 * width(&by_case),
        "{by_patient:?} {by_case:?}"
    );
}

/// Frequentist sanity of the whole seeded pipeline: the 95 % BCa interval of the mean of
/// normal data covers the true mean in roughly 95 % of repetitions.
#[test]
fn bca_coverage_is_close_to_nominal() {
    let mut rng = ChaCha20Rng::seed_from_u64(99);
    let dist = Normal::new(0.7, 0.15).unwrap();
    let reps = 300;
    let mut covered = 0;
    for r in 0..reps {
        let values: Vec<f64> = (0..25).map(|_| dist.sample(&mut rng)).collect();
        let config = BootstrapConfig {
            n_resamples: 1000,
            seed: r,
            ..BootstrapConfig::default()
        };
        let ci = bootstrap_mean_ci(&PatientSamples::one_case_per_patient(values), &config).unwrap();
        if ci.low <= 0.7 && 0.7 <= ci.high {
            covered += 1;
        }
    }
    let coverage = f64::from(covered) / reps as f64;
    assert!((0.89..=0.985).contains(&coverage), "coverage {coverage}");
}

#[test]
fn generic_case_values_support_pooled_ratios() {
    // Lesion recall pooled over cases: (true positives, ground-truth lesions) per case.
    let samples = PatientSamples::from_cases([
        ("a", (3.0, 4.0)),
        ("a", (1.0, 1.0)),
        ("b", (0.0, 2.0)),
        ("c", (2.0, 2.0)),
        ("d", (5.0, 6.0)),
        ("e", (1.0, 3.0)),
    ]);
    let recall = |cases: &[(f64, f64)]| {
        let (tp, gt) = cases
            .iter()
            .fold((0.0, 0.0), |acc, c| (acc.0 + c.0, acc.1 + c.1));
        tp / gt
    };
    let config = BootstrapConfig {
        n_resamples: 2000,
        ..BootstrapConfig::default()
    };
    let ci = bootstrap_ci(&samples, recall, &config).unwrap();
    assert!((ci.estimate - 12.0 / 18.0).abs() < 1e-15);
    assert!(ci.low < ci.estimate && ci.estimate < ci.high);
}

fn is_invalid_argument<T: std::fmt::Debug>(r: &vertebra_core::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidArgument(_)))
}

#[test]
fn bootstrap_degenerate_inputs() {
    let config = BootstrapConfig {
        n_resamples: 500,
        ..BootstrapConfig::default()
    };
    // All values equal: point-mass bootstrap distribution, flagged, never NaN.
    for method in [CiMethod::Bca, CiMethod::Percentile] {
        let same = PatientSamples::from_cases((0..10).map(|i| (format!("p{}", i % 4), 0.9)));
        let ci = bootstrap_mean_ci(&same, &BootstrapConfig { method, ..config }).unwrap();
        assert!(ci.degenerate);
        // The mean of ten copies of 0.9 is 0.9 up to rounding; the interval is exactly it.
        assert!((ci.estimate - 0.9).abs() <= 2.0 * f64::EPSILON);
        assert_eq!((ci.low, ci.high), (ci.estimate, ci.estimate));
        assert_eq!((ci.bias_correction, ci.acceleration), (None, None));
        assert_eq!(ci.standard_error, 0.0);
        assert!(serde_json::to_string(&ci).is_ok());
    }
    // All values exactly zero (e.g. Dice of a structure never found): bit-exact point mass.
    let zeros = PatientSamples::one_case_per_patient(vec![0.0; 6]);
    let ci = bootstrap_mean_ci(&zeros, &config).unwrap();
    assert!(ci.degenerate);
    assert_eq!(
        (ci.low, ci.estimate, ci.high, ci.standard_error),
        (0.0, 0.0, 0.0, 0.0)
    );
    // One patient (even with several cases) cannot be resampled.
    let one = PatientSamples::from_cases([("p", 0.5), ("p", 0.7)]);
    assert!(is_invalid_argument(&bootstrap_mean_ci(&one, &config)));
    // No patients.
    let none = PatientSamples::<f64>::from_cases(Vec::<(String, f64)>::new());
    assert!(is_invalid_argument(&bootstrap_mean_ci(&none, &config)));
    // NaN or infinite case values.
    let nan = PatientSamples::one_case_per_patient(vec![0.1, f64::NAN, 0.3]);
    assert!(is_invalid_argument(&bootstrap_mean_ci(&nan, &config)));
    let inf = PatientSamples::one_case_per_patient(vec![0.1, f64::INFINITY, 0.3]);
    assert!(is_invalid_argument(&bootstrap_mean_ci(&inf, &config)));
    // A statistic that goes non-finite on some resample.
    let ok = PatientSamples::one_case_per_patient(vec![0.0, 1.0, 2.0, 3.0]);
    let fragile = |v: &[f64]| 1.0 / (v.iter().sum::<f64>() - 6.0);
    assert!(is_invalid_argument(&bootstrap_ci(&ok, fragile, &config)));
    // Bad parameters.
    for bad in [0.0, 1.0, -0.5, f64::NAN] {
        let c = BootstrapConfig {
            confidence_level: bad,
            ..config
        };
        assert!(is_invalid_argument(&bootstrap_mean_ci(&ok, &c)));
    }
    let c = BootstrapConfig {
        n_resamples: 1,
        ..config
    };
    assert!(is_invalid_argument(&bootstrap_mean_ci(&ok, &c)));
    // Group construction errors.
    assert!(is_invalid_argument(&PatientSamples::from_groups([
        ("a", vec![1.0]),
        ("a", vec![2.0])
    ])));
    assert!(is_invalid_argument(&PatientSamples::from_groups([(
        "a",
        Vec::<f64>::new()
    )])));
    // Explicit resamples that do not fit the data.
    assert!(is_invalid_argument(&bootstrap_ci_from_resamples(
        &ok,
        mean,
        &[vec![0, 1, 2, 3], vec![0, 1, 2]],
        0.95,
        CiMethod::Bca
    )));
    assert!(is_invalid_argument(&bootstrap_ci_from_resamples(
        &ok,
        mean,
        &[vec![0, 1, 2, 3], vec![0, 1, 2, 4]],
        0.95,
        CiMethod::Bca
    )));
}

#[test]
fn bca_rejects_statistics_outside_their_bootstrap_distribution() {
    // The minimum of a resample is never below the sample minimum: z0 = -inf for BCa
    // whenever no replicate equals it (here: resamples that all miss the minimum).
    let samples = PatientSamples::one_case_per_patient(vec![0.0, 1.0, 2.0]);
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let resamples = vec![vec![1, 2, 2], vec![1, 1, 2], vec![2, 2, 1]];
    assert!(is_invalid_argument(&bootstrap_ci_from_resamples(
        &samples,
        min,
        &resamples,
        0.95,
        CiMethod::Bca
    )));
    // The percentile method is defined there.
    let ci =
        bootstrap_ci_from_resamples(&samples, min, &resamples, 0.95, CiMethod::Percentile).unwrap();
    assert_eq!((ci.low, ci.high), (1.0, 1.0));
}

// ---------------------------------------------------------------------------------------
// Wilcoxon
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct WilcoxonCase {
    name: String,
    x: Vec<f64>,
    y: Vec<f64>,
    method: WilcoxonMethod,
    n_zero: usize,
    has_ties: bool,
    statistic: f64,
    pvalue: f64,
}

#[test]
fn wilcoxon_matches_scipy() {
    let cases: Vec<WilcoxonCase> = load("wilcoxon");
    assert!(cases.len() >= 20);
    let (mut max_stat, mut max_p, mut max_rel) = (0.0_f64, 0.0_f64, 0.0_f64);
    for case in &cases {
        let res = wilcoxon_signed_rank(&case.x, &case.y).unwrap();
        assert_eq!(res.method, case.method, "{}", case.name);
        assert_eq!(res.n_zero, case.n_zero, "{}", case.name);
        assert_eq!(res.has_ties, case.has_ties, "{}", case.name);
        assert_eq!(res.n_pairs, case.x.len());
        let ds = (res.statistic - case.statistic).abs();
        let dp = (res.p_value - case.pvalue).abs();
        let rel = dp / case.pvalue;
        assert!(
            ds <= 1e-9,
            "{}: statistic {} vs {}",
            case.name,
            res.statistic,
            case.statistic
        );
        assert!(
            dp <= 1e-9,
            "{}: p {} vs {}",
            case.name,
            res.p_value,
            case.pvalue
        );
        assert!(
            rel <= 1e-9,
            "{}: p {} vs {} (relative)",
            case.name,
            res.p_value,
            case.pvalue
        );
        assert_eq!(res.z.is_some(), res.method == WilcoxonMethod::Asymptotic);
        max_stat = max_stat.max(ds);
        max_p = max_p.max(dp);
        max_rel = max_rel.max(rel);
    }
    for m in [
        WilcoxonMethod::Exact,
        WilcoxonMethod::ExactPermutation,
        WilcoxonMethod::Asymptotic,
    ] {
        assert!(cases.iter().filter(|c| c.method == m).count() >= 5, "{m:?}");
    }
    eprintln!(
        "wilcoxon: max |dstat| = {max_stat:e}, max |dp| = {max_p:e}, max rel dp = {max_rel:e}"
    );
}

#[test]
fn wilcoxon_is_antisymmetric_in_its_arguments() {
    let x = [0.81, 0.77, 0.92, 0.85, 0.66, 0.9, 0.79, 0.88];
    let y = [0.8, 0.7, 0.9, 0.86, 0.6, 0.85, 0.75, 0.8];
    let xy = wilcoxon_signed_rank(&x, &y).unwrap();
    let yx = wilcoxon_signed_rank(&y, &x).unwrap();
    assert_eq!(xy.p_value, yx.p_value);
    assert_eq!(xy.statistic, yx.statistic);
    assert_eq!(xy.rank_sum_positive, yx.rank_sum_negative);
}

#[test]
fn wilcoxon_degenerate_inputs() {
    assert!(is_invalid_argument(&wilcoxon_signed_rank(&[], &[])));
    assert!(is_invalid_argument(&wilcoxon_signed_rank(
        &[1.0, 2.0],
        &[1.0]
    )));
    assert!(is_invalid_argument(&wilcoxon_signed_rank(
        &[1.0, f64::NAN],
        &[0.0, 0.0]
    )));
    assert!(is_invalid_argument(&wilcoxon_signed_rank(
        &[f64::MAX],
        &[-f64::MAX]
    )));
    assert!(is_invalid_argument(&wilcoxon_signed_rank_differences(&[
        f64::INFINITY
    ])));
    // All differences zero, also beyond the 13 pairs where SciPy would return NaN.
    for n in [3, 20, 60] {
        let res = wilcoxon_signed_rank_differences(&vec![0.0; n]).unwrap();
        assert_eq!(res.method, WilcoxonMethod::NoNonzeroDifferences);
        assert_eq!((res.statistic, res.p_value, res.n_zero), (0.0, 1.0, n));
        assert!(serde_json::to_string(&res).is_ok());
    }
}

// ---------------------------------------------------------------------------------------
// Holm–Bonferroni
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct HolmCase {
    p_values: Vec<f64>,
    alpha: f64,
    adjusted: Vec<f64>,
    reject: Vec<bool>,
}

#[test]
fn holm_matches_statsmodels_definition() {
    let cases: Vec<HolmCase> = load("holm");
    assert!(cases.len() >= 10);
    for case in &cases {
        let res = holm_bonferroni(&case.p_values, case.alpha).unwrap();
        assert_eq!(res.reject, case.reject, "{:?}", case.p_values);
        for (a, e) in res.adjusted_p_values.iter().zip(&case.adjusted) {
            assert!((a - e).abs() <= 1e-15, "{:?}: {a} vs {e}", case.p_values);
        }
        // Monotone in the raw p-values and capped at 1.
        let mut order: Vec<usize> = (0..case.p_values.len()).collect();
        order.sort_by(|&i, &j| case.p_values[i].total_cmp(&case.p_values[j]));
        for w in order.windows(2) {
            assert!(res.adjusted_p_values[w[0]] <= res.adjusted_p_values[w[1]]);
        }
        assert!(
            res.adjusted_p_values
                .iter()
                .all(|&p| (0.0..=1.0).contains(&p))
        );
    }
}

// ---------------------------------------------------------------------------------------
// Normal distribution
// ---------------------------------------------------------------------------------------

#[derive(Deserialize)]
struct NormalCases {
    /// `[x, scipy.special.ndtr(x), Φ(x) from a 120-digit evaluation]`.
    cdf: Vec<[f64; 3]>,
    /// `[p, scipy.special.ndtri(p)]`.
    quantile: Vec<[f64; 2]>,
}

#[test]
fn normal_functions_match_scipy_special() {
    let cases: NormalCases = load("normal");
    let (mut worst_truth, mut worst_scipy) = (0.0_f64, 0.0_f64);
    for [x, scipy, truth] in &cases.cdf {
        let got = normal_cdf(*x);
        let rel_truth = (got - truth).abs() / truth.abs();
        let rel_scipy = (got - scipy).abs() / scipy.abs();
        // Φ(x) evaluated through erfc(x/√2) inherits the rounding of x/√2 amplified by the
        // relative condition number ≈ x² (SciPy too): that bounds what any double code gets.
        let conditioning = 4.0 * f64::EPSILON * (x * x).max(1.0);
        assert!(
            rel_truth <= conditioning,
            "ndtr({x}): {got} vs exact {truth}"
        );
        assert!(
            rel_scipy <= 2.0 * conditioning,
            "ndtr({x}): {got} vs scipy {scipy}"
        );
        worst_truth = worst_truth.max(rel_truth);
        worst_scipy = worst_scipy.max(rel_scipy);
    }
    let mut worst_quantile = 0.0_f64;
    for [p, expected] in &cases.quantile {
        let got = normal_quantile(*p);
        let err = (got - expected).abs() / expected.abs().max(1.0);
        assert!(err <= 1e-14, "ndtri({p}): {got} vs {expected}");
        worst_quantile = worst_quantile.max(err);
    }
    eprintln!(
        "normal: worst relative cdf error vs truth {worst_truth:e}, vs scipy {worst_scipy:e}; \
         quantile vs scipy {worst_quantile:e}"
    );
}
