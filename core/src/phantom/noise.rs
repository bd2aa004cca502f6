//! Deterministic 3-D value noise in world millimetres.
//!
//! Used for everything in the phantom that must vary smoothly in space (visceral fat,
//! intermuscular fat, per-tissue HU drift, trabecular texture). It is a pure function of the
//! seed and the world position, so results do not depend on thread count or evaluation order,
//! and the same patient looks the same at any voxel size.

/// SplitMix64 finaliser: a cheap, well-mixing 64-bit hash.
#[inline]
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Lattice value in [−1, 1) for integer cell `(i, j, k)`.
#[inline]
fn lattice(seed: u64, i: i64, j: i64, k: i64) -> f64 {
    let h = mix(seed ^ mix((i as u64) ^ mix((j as u64) ^ mix(k as u64))));
    (h >> 11) as f64 / (1u64 << 52) as f64 - 1.0
}

/// Smooth value noise in [−1, 1] at world point `p` (mm) with lattice spacing `cell` (mm):
/// trilinear interpolation of random lattice values with a smoothstep fade. Its standard
/// deviation over space is about [`VALUE_NOISE_SD`].
#[inline]
pub(crate) fn value_noise(seed: u64, p: [f64; 3], cell: f64) -> f64 {
    let q = [p[0] / cell, p[1] / cell, p[2] / cell];
    let f = [q[0].floor(), q[1].floor(), q[2].floor()];
    let (i, j, k) = (f[0] as i64, f[1] as i64, f[2] as i64);
    let t = [q[0] - f[0], q[1] - f[1], q[2] - f[2]];
    let s = [
        t[0] * t[0] * (3.0 - 2.0 * t[0]),
        t[1] * t[1] * (3.0 - 2.0 * t[1]),
        t[2] * t[2] * (3.0 - 2.0 * t[2]),
    ];
    let l = |a, b, c| lattice(seed, i + a, j + b, k + c);
    let x00 = l(0, 0, 0) + (l(1, 0, 0) - l(0, 0, 0)) * s[0];
    let x10 = l(0, 1, 0) + (l(1, 1, 0) - l(0, 1, 0)) * s[0];
    let x01 = l(0, 0, 1) + (l(1, 0, 1) - l(0, 0, 1)) * s[0];
    let x11 = l(0, 1, 1) + (l(1, 1, 1) - l(0, 1, 1)) * s[0];
    let y0 = x00 + (x10 - x00) * s[1];
    let y1 = x01 + (x11 - x01) * s[1];
    y0 + (y1 - y0) * s[2]
}

/// Approximate spatial standard deviation of [`value_noise`] (measured by the unit test
/// below); dividing by it gives unit-variance noise.
pub(crate) const VALUE_NOISE_SD: f64 = 0.37;

/// A second independent seed derived from `seed` (for octaves and separate fields).
pub(crate) fn derive(seed: u64, k: u64) -> u64 {
    mix(seed ^ mix(k.wrapping_add(0x1234_5678)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn noise_is_deterministic_bounded_and_has_the_stated_sd() {
        let mut sum = 0.0;
        let mut sum2 = 0.0;
        let n = 20_000;
        for i in 0..n {
            // Quasi-random points (additive recurrence) spread over 300 cells per axis.
            let f = i as f64;
            let p = [
                (f * 0.754_877_666).fract() * 900.0,
                (f * 0.569_840_291).fract() * 900.0,
                (f * 0.438_558_366).fract() * 900.0,
            ];
            let v = value_noise(7, p, 3.0);
            assert_eq!(v, value_noise(7, p, 3.0));
            assert!((-1.0..=1.0).contains(&v));
            sum += v;
            sum2 += v * v;
        }
        let mean = sum / n as f64;
        let sd = (sum2 / n as f64 - mean * mean).sqrt();
        assert!(mean.abs() < 0.03, "mean {mean}");
        assert!((sd - VALUE_NOISE_SD).abs() < 0.04, "sd {sd}");
        assert_ne!(value_noise(7, [0.5; 3], 3.0), value_noise(8, [0.5; 3], 3.0));
    }
}
