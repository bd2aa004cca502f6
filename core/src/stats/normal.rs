//! The standard normal distribution: CDF and quantile function.
//!
//! Both match SciPy's `scipy.special.ndtr` / `ndtri` to a few units in the last place, which
//! is what lets the BCa interval and the asymptotic Wilcoxon p-value agree with SciPy far
//! below the tolerances the evaluation needs. The error function comes from `libm`, the
//! Rust port of musl's (fdlibm-derived) `erf`/`erfc`, accurate to about one ulp.

use std::f64::consts::{FRAC_1_SQRT_2, PI};

/// Standard normal CDF Φ(x) = P(Z ≤ x).
///
/// Computed like Cephes' `ndtr` (which SciPy uses): `0.5 + 0.5·erf(x/√2)` near zero and
/// `0.5·erfc(|x|/√2)` (reflected for positive `x`) elsewhere, so the lower tail keeps full
/// *relative* precision down to Φ(x) ≈ 1e-308. `NaN` in gives `NaN` out; ±∞ gives 1 or 0.
pub fn normal_cdf(x: f64) -> f64 {
    let t = x * FRAC_1_SQRT_2;
    let z = t.abs();
    if z < FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(t)
    } else {
        let y = 0.5 * libm::erfc(z);
        if t > 0.0 { 1.0 - y } else { y }
    }
}

/// Standard normal quantile Φ⁻¹(p), the inverse of [`normal_cdf`].
///
/// Returns `-∞` for `p == 0`, `+∞` for `p == 1` and `NaN` for `p` outside `[0, 1]` or `NaN`,
/// exactly like SciPy's `ndtri` — callers that need a finite value must check (the bootstrap
/// code does, and turns an infinite value into an error).
///
/// Method: for the lower half `q = min(p, 1 - p)` (`1 - p` is exact for `p ≥ 0.5`), start
/// from the Abramowitz & Stegun 26.2.23 rational approximation (|error| < 4.5e-4) and
/// polish with Halley steps on `Φ(x) - q`, whose lower tail [`normal_cdf`] evaluates with
/// full relative precision; three steps reach machine precision. Below `q ≈ 1e-300` the
/// density underflows, the polishing stops, and the result keeps the initial approximation's
/// accuracy (no caller in this crate comes near that).
pub fn normal_quantile(p: f64) -> f64 {
    if p.is_nan() || !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    if p == 0.5 {
        return 0.0;
    }
    if p > 0.5 {
        -lower_quantile(1.0 - p)
    } else {
        lower_quantile(p)
    }
}

/// Φ⁻¹(q) for `0 < q ≤ 0.5` (the result is ≤ 0).
fn lower_quantile(q: f64) -> f64 {
    const C: [f64; 3] = [2.515_517, 0.802_853, 0.010_328];
    const D: [f64; 3] = [1.432_788, 0.189_269, 0.001_308];
    let t = (-2.0 * q.ln()).sqrt();
    let mut x = -(t
        - (C[0] + C[1] * t + C[2] * t * t) / (1.0 + D[0] * t + D[1] * t * t + D[2] * t * t * t));
    for _ in 0..8 {
        let density = (-0.5 * x * x).exp() / (2.0 * PI).sqrt();
        if density == 0.0 || !density.is_finite() {
            break;
        }
        let f = normal_cdf(x) - q;
        // Halley's method for f(x) = Φ(x) - q, with f' = φ(x) and f'' = -x·φ(x).
        let step = f / (density + 0.5 * x * f);
        x -= step;
        if step.abs() <= 1e-16 * x.abs().max(1e-300) {
            break;
        }
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cdf_and_quantile_are_inverse_and_symmetric() {
        for &p in &[
            1e-12, 1e-6, 0.001, 0.025, 0.1, 0.125, 0.3, 0.5, 0.7, 0.975, 0.999_999,
        ] {
            let x = normal_quantile(p);
            // Relative conditioning of Φ at x is about max(1, x²): allow that many ulps.
            let tolerance = 4.0 * f64::EPSILON * p * (x * x).max(1.0);
            assert!((normal_cdf(x) - p).abs() <= tolerance, "p={p}");
            // Symmetry is exact where 1 - p is representable without rounding.
            if p != 0.5 && 1.0 - (1.0 - p) == p {
                assert_eq!(normal_quantile(1.0 - p), -x, "p={p}");
            }
        }
        assert_eq!(normal_quantile(0.5), 0.0);
    }

    #[test]
    fn quantile_edges_follow_scipy_conventions() {
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(-0.1).is_nan());
        assert!(normal_quantile(1.5).is_nan());
        assert!(normal_quantile(f64::NAN).is_nan());
        assert_eq!(normal_cdf(f64::NEG_INFINITY), 0.0);
        assert_eq!(normal_cdf(f64::INFINITY), 1.0);
        assert!(normal_cdf(f64::NAN).is_nan());
    }

    #[test]
    fn well_known_values() {
        // 1.959963984540054 is the textbook 97.5 % point (to all printed digits).
        assert!((normal_quantile(0.975) - 1.959_963_984_540_054).abs() < 1e-14);
        assert!((normal_cdf(1.0) - 0.841_344_746_068_542_9).abs() < 1e-15);
    }
}
