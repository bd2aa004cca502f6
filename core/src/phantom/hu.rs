//! Clean Hounsfield units from a tissue map: what an ideal, noise-free scanner would measure.
//!
//! Each tissue gets its [`Tissue::hu`] mean plus
//! - a per-patient offset (people differ: bone density, muscle quality, fat composition);
//! - a slow spatial drift (lattice 40 mm) for regional differences within a tissue;
//! - texture: trabecular bone a fine 1.2 mm texture (the trabecular network as CT resolves
//!   it), cortical bone and organs a gentler 2.5 mm one.
//!
//! Trabecular bone draws its patient mean from 140–280 HU (osteoporotic to young adult,
//! Pickhardt et al. 2013), so bone density is not a constant a model could key on. Scanner
//! effects (noise, blur, calibration, artefacts) are *not* added here; they belong to the
//! domain's appearance model ([`super::domain::apply_appearance`]).

use super::domain::{CT_MAX_HU, CT_MIN_HU};
use super::noise::{VALUE_NOISE_SD, derive, value_noise};
use super::tissue::{ALL_TISSUES, NUM_TISSUES, Tissue};
use crate::{Error, Result, Volume};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;

/// Per-tissue synthesis parameters of one patient.
#[derive(Debug, Clone, Copy)]
struct TissueSynth {
    mean: f64,
    drift: f64,
    texture: f64,
    texture_cell: f64,
}

/// Paints clean HU for every voxel of `tissue` (values must be [`Tissue`] codes). The
/// randomness (patient offsets, field seeds) is drawn from `rng` before any parallel work, and
/// the spatial fields are pure functions of world position, so the result is identical for a
/// given generator state whatever the thread count or grid.
///
/// # Errors
/// [`Error::InvalidArgument`] if a voxel holds a value that is not a [`Tissue`] code.
pub fn clean_hu(tissue: &Volume<u8>, rng: &mut ChaCha8Rng) -> Result<Volume<f32>> {
    if let Some(bad) = tissue.data().iter().find(|&&t| t as usize >= NUM_TISSUES) {
        return Err(Error::InvalidArgument(format!(
            "clean_hu: tissue value {bad} is not a Tissue (0..{NUM_TISSUES})"
        )));
    }
    let field_seed: u64 = rng.random();
    let mut synth = [TissueSynth {
        mean: 0.0,
        drift: 0.0,
        texture: 0.0,
        texture_cell: 2.5,
    }; NUM_TISSUES];
    for t in ALL_TISSUES {
        let h = t.hu();
        let sd = f64::from(h.sd);
        let offset = Normal::new(0.0, 0.35 * sd.max(1e-9)).map_or(0.0, |d| d.sample(rng));
        let lo = f64::from(h.range[0]);
        let hi = f64::from(h.range[1]);
        let mut mean = (f64::from(h.mean) + offset).clamp(lo + 0.5 * sd, hi - 0.5 * sd);
        let (drift, texture, cell) = match t {
            Tissue::TrabecularBone => {
                mean = rng.random_range(140.0..280.0);
                (0.35 * sd, 0.7 * sd, 1.2)
            }
            Tissue::CorticalBone | Tissue::ScleroticLesion => (0.4 * sd, 0.7 * sd, 1.5),
            Tissue::Air | Tissue::Metal => (0.0, 0.0, 2.5),
            _ => (0.55 * sd, 0.55 * sd, 2.5),
        };
        synth[t as usize] = TissueSynth {
            mean,
            drift,
            texture,
            texture_cell: cell,
        };
    }
    let g = *tissue.geometry();
    let [nx, ny, _] = tissue.dims();
    let step = |axis: usize| {
        let d = g.direction[axis];
        let s = g.spacing[axis];
        [d[0] * s, d[1] * s, d[2] * s]
    };
    let (dx, dy, dz) = (step(0), step(1), step(2));
    let drift_seeds: Vec<u64> = (0..NUM_TISSUES as u64)
        .map(|t| derive(field_seed, t))
        .collect();
    let texture_seeds: Vec<u64> = (0..NUM_TISSUES as u64)
        .map(|t| derive(field_seed, 100 + t))
        .collect();
    let mut out = vec![0.0f32; tissue.len()];
    out.par_chunks_mut(nx * ny)
        .zip(tissue.data().par_chunks(nx * ny))
        .enumerate()
        .for_each(|(k, (o, t))| {
            for j in 0..ny {
                for i in 0..nx {
                    let idx = i + nx * j;
                    let tt = t[idx] as usize;
                    let s = &synth[tt];
                    let mut v = s.mean;
                    if s.drift > 0.0 || s.texture > 0.0 {
                        let (fi, fj, fk) = (i as f64, j as f64, k as f64);
                        let p = [
                            g.origin[0] + dx[0] * fi + dy[0] * fj + dz[0] * fk,
                            g.origin[1] + dx[1] * fi + dy[1] * fj + dz[1] * fk,
                            g.origin[2] + dx[2] * fi + dy[2] * fj + dz[2] * fk,
                        ];
                        v += s.drift * value_noise(drift_seeds[tt], p, 40.0) / VALUE_NOISE_SD;
                        v += s.texture * value_noise(texture_seeds[tt], p, s.texture_cell)
                            / VALUE_NOISE_SD;
                    }
                    o[idx] = (v as f32).clamp(CT_MIN_HU, CT_MAX_HU);
                }
            }
        });
    Volume::from_vec(tissue.dims(), out, g)
}
