//! Scanner-domain appearance model: presets, determinism, noise, calibration, MR-like
//! contrast, and that appearance never touches anatomy.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vertebra_core::phantom::domain::{
    CT_MAX_HU, CT_MIN_HU, DomainPreset, METAL_HU, MR_MAX_INTENSITY, MetalSpec, Modality,
    apply_appearance, mr_signal, preset, presets,
};
use vertebra_core::phantom::tissue::Tissue;
use vertebra_core::{Geometry, Volume};

fn geometry(spacing: [f64; 3]) -> Geometry {
    Geometry::axis_aligned(spacing, [-100.0, -80.0, 300.0])
}

/// A uniform water-like block (HU 0, soft tissue) on the preset's grid.
fn uniform(p: &DomainPreset, dims: [usize; 3]) -> (Volume<f32>, Volume<u8>) {
    let g = geometry([p.pixel_spacing_mm, p.pixel_spacing_mm, p.slice_spacing_mm]);
    (
        Volume::filled(dims, 0.0f32, g).unwrap(),
        Volume::filled(dims, Tissue::SoftTissue as u8, g).unwrap(),
    )
}

/// A small "patient": air around an elliptic body of fat, muscle, a bone block with trabecular
/// core, a disc and CSF, plus optional metal.
fn patient(p: &DomainPreset, dims: [usize; 3], metal: bool) -> (Volume<f32>, Volume<u8>) {
    let g = geometry([p.pixel_spacing_mm, p.pixel_spacing_mm, p.slice_spacing_mm]);
    let [nx, ny, nz] = dims;
    let mut hu = Volume::filled(dims, -1000.0f32, g).unwrap();
    let mut t = Volume::filled(dims, Tissue::Air as u8, g).unwrap();
    let (cx, cy) = (nx as f64 / 2.0, ny as f64 / 2.0);
    for z in 0..nz {
        for y in 0..ny {
            for x in 0..nx {
                let (dx, dy) = (
                    (x as f64 - cx) / (0.45 * nx as f64),
                    (y as f64 - cy) / (0.4 * ny as f64),
                );
                let r = dx.hypot(dy);
                let (tissue, v) = if r >= 1.0 {
                    (Tissue::Air, -1000.0)
                } else if r > 0.85 {
                    (Tissue::Fat, -100.0)
                } else if r > 0.45 {
                    (Tissue::Muscle, 50.0)
                } else if r > 0.3 {
                    (
                        if z % 8 < 2 {
                            Tissue::Disc
                        } else {
                            Tissue::CorticalBone
                        },
                        if z % 8 < 2 { 80.0 } else { 1200.0 },
                    )
                } else if r > 0.1 {
                    (
                        if z % 8 < 2 {
                            Tissue::Disc
                        } else {
                            Tissue::TrabecularBone
                        },
                        if z % 8 < 2 { 80.0 } else { 250.0 },
                    )
                } else {
                    (Tissue::Csf, 10.0)
                };
                t[[x, y, z]] = tissue as u8;
                hu[[x, y, z]] = v;
            }
        }
    }
    if metal {
        for z in 0..nz {
            for (x0, y0) in [(nx / 2 - 8, ny / 2 + 6), (nx / 2 + 5, ny / 2 + 6)] {
                for y in y0..y0 + 4 {
                    for x in x0..x0 + 4 {
                        t[[x, y, z]] = Tissue::Metal as u8;
                        hu[[x, y, z]] = METAL_HU;
                    }
                }
            }
        }
    }
    (hu, t)
}

fn std_dev(v: &[f64]) -> f64 {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    (v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)).sqrt()
}

/// Interior voxels (8 px from the in-plane border) of a volume.
fn interior(v: &Volume<f32>) -> Vec<f64> {
    let [nx, ny, nz] = v.dims();
    let mut out = Vec::new();
    for z in 0..nz {
        for y in 8..ny - 8 {
            for x in 8..nx - 8 {
                out.push(f64::from(v[[x, y, z]]));
            }
        }
    }
    out
}

#[test]
fn presets_are_valid_unique_and_cover_the_study_domains() {
    let all = presets();
    assert!(all.len() >= 6);
    let mut names: Vec<&str> = all.iter().map(|p| p.name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    assert_eq!(names.len(), all.len(), "duplicate preset names");
    for p in &all {
        p.validate().unwrap();
        assert_eq!(&preset(&p.name).unwrap(), p);
        let json = serde_json::to_string(p).unwrap();
        let back: DomainPreset = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, p);
    }
    for m in [Modality::Ct, Modality::MrT1Like, Modality::MrT2Like] {
        assert!(all.iter().any(|p| p.modality == m), "{m:?} missing");
    }
    assert!(all.iter().any(|p| p.metal.is_some()));
    assert!(all.iter().any(|p| p.slice_thickness_mm >= 3.0));
    assert!(all.iter().any(|p| p.hu_scale != 1.0 || p.hu_offset != 0.0));
    assert!(all.iter().any(|p| p.kernel_sharpness > 0.0));
}

#[test]
fn unknown_preset_error_lists_valid_names() {
    let err = preset("siemens-magic").unwrap_err().to_string();
    for p in presets() {
        assert!(err.contains(&p.name), "{err}");
    }
}

#[test]
fn invalid_presets_are_rejected() {
    let base = preset("ct-standard").unwrap();
    let cases = [
        DomainPreset {
            name: "Bad Name".into(),
            ..base.clone()
        },
        DomainPreset {
            pixel_spacing_mm: 0.0,
            ..base.clone()
        },
        DomainPreset {
            slice_thickness_mm: f64::NAN,
            ..base.clone()
        },
        DomainPreset {
            noise_sigma: -1.0,
            ..base.clone()
        },
        DomainPreset {
            hu_scale: -0.5,
            ..base.clone()
        },
        DomainPreset {
            kernel_sharpness: 10.0,
            ..base.clone()
        },
        DomainPreset {
            metal: Some(MetalSpec { levels: 0 }),
            ..base.clone()
        },
        DomainPreset {
            modality: Modality::MrT1Like,
            ..base.clone()
        },
    ];
    for c in cases {
        assert!(c.validate().is_err(), "{c:?}");
        let (hu, t) = uniform(&base, [8, 8, 2]);
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        assert!(apply_appearance(&hu, &t, &c, &mut rng).is_err());
    }
}

#[test]
fn appearance_is_deterministic_for_a_seed() {
    for name in ["ct-metal-hardware", "ct-lowdose-thick", "mr-t2-like"] {
        let p = preset(name).unwrap();
        let (hu, t) = patient(&p, [48, 40, 12], p.metal.is_some());
        let run =
            |seed| apply_appearance(&hu, &t, &p, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
        let (a, b, c) = (run(5), run(5), run(6));
        assert_eq!(a.data(), b.data(), "{name}: same seed, different image");
        assert_ne!(a.data(), c.data(), "{name}: different seeds, same image");
    }
}

#[test]
fn anatomy_and_grid_are_unchanged_by_appearance() {
    for p in presets() {
        let (hu, t) = patient(&p, [40, 36, 10], p.metal.is_some());
        let (hu_before, t_before) = (hu.clone(), t.clone());
        let out = apply_appearance(&hu, &t, &p, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        assert_eq!(t, t_before, "{}: tissue map modified", p.name);
        assert_eq!(hu, hu_before, "{}: clean HU modified", p.name);
        assert_eq!(out.dims(), hu.dims());
        assert_eq!(out.geometry(), hu.geometry());
        let (lo, hi) = p.value_range();
        assert!(
            out.data()
                .iter()
                .all(|v| v.is_finite() && (lo..=hi).contains(v)),
            "{}",
            p.name
        );
    }
}

#[test]
fn ct_noise_sigma_is_as_specified_in_uniform_regions() {
    for p in presets().into_iter().filter(|p| p.modality == Modality::Ct) {
        // Beam hardening off so that the region is truly uniform.
        let p = DomainPreset {
            beam_hardening_hu: 0.0,
            ..p
        };
        let (hu, t) = uniform(&p, [96, 96, 6]);
        let out = apply_appearance(&hu, &t, &p, &mut ChaCha8Rng::seed_from_u64(9)).unwrap();
        let v = interior(&out);
        let sd = std_dev(&v);
        assert!(
            (sd / p.noise_sigma - 1.0).abs() < 0.10,
            "{}: σ {sd:.2} vs {}",
            p.name,
            p.noise_sigma
        );
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        assert!((mean - p.hu_offset).abs() < 2.0, "{}: mean {mean}", p.name);
    }
}

/// Autocorrelation of the interior along x at `lag` voxels.
fn autocorrelation_x(v: &Volume<f32>, lag: usize) -> f64 {
    let [nx, ny, nz] = v.dims();
    let (mut acc, mut sq) = (0.0, 0.0);
    for z in 0..nz {
        for y in 8..ny - 8 {
            for x in 8..nx - 8 - lag {
                let (a, b) = (f64::from(v[[x, y, z]]), f64::from(v[[x + lag, y, z]]));
                acc += a * b;
                sq += a * a;
            }
        }
    }
    acc / sq
}

#[test]
fn noise_correlation_length_is_as_specified() {
    let base = DomainPreset {
        name: "test-noise".into(),
        pixel_spacing_mm: 0.5,
        slice_spacing_mm: 1.0,
        slice_thickness_mm: 1.0,
        noise_sigma: 30.0,
        kernel_sharpness: 0.0,
        beam_hardening_hu: 0.0,
        ..preset("ct-standard").unwrap()
    };
    for corr_mm in [1.0, 2.0, 3.0] {
        let p = DomainPreset {
            noise_correlation_mm: corr_mm,
            ..base.clone()
        };
        let (hu, t) = uniform(&p, [128, 128, 4]);
        let out = apply_appearance(&hu, &t, &p, &mut ChaCha8Rng::seed_from_u64(2)).unwrap();
        let lag = (corr_mm / 0.5) as usize;
        let rho = autocorrelation_x(&out, lag);
        assert!(
            (rho - (-1.0f64).exp()).abs() < 0.07,
            "L = {corr_mm} mm: ρ({lag}) = {rho:.3}"
        );
        let sd = std_dev(&interior(&out));
        assert!((sd / 30.0 - 1.0).abs() < 0.10, "L = {corr_mm}: σ {sd}");
    }
    // Coarser grain = stronger correlation at one pixel.
    let rho1 = |corr_mm| {
        let p = DomainPreset {
            noise_correlation_mm: corr_mm,
            ..base.clone()
        };
        let (hu, t) = uniform(&p, [96, 96, 3]);
        autocorrelation_x(
            &apply_appearance(&hu, &t, &p, &mut ChaCha8Rng::seed_from_u64(4)).unwrap(),
            1,
        )
    };
    let (white, fine, coarse) = (rho1(0.0), rho1(1.0), rho1(3.0));
    assert!(
        white.abs() < 0.05 && white < fine && fine < coarse,
        "{white} {fine} {coarse}"
    );
}

#[test]
fn calibration_is_exact_and_clipped_to_the_scanner_range() {
    let p = DomainPreset {
        name: "test-calibration".into(),
        noise_sigma: 0.0,
        kernel_sharpness: 0.0,
        beam_hardening_hu: 0.0,
        hu_scale: 0.9,
        hu_offset: 40.0,
        ..preset("ct-standard").unwrap()
    };
    let g = geometry([p.pixel_spacing_mm, p.pixel_spacing_mm, p.slice_spacing_mm]);
    let values: Vec<f32> = (0..64).map(|i| -1200.0 + 75.0 * i as f32).collect();
    let hu = Volume::from_vec([8, 4, 2], values.clone(), g).unwrap();
    let t = Volume::filled([8, 4, 2], Tissue::SoftTissue as u8, g).unwrap();
    let out = apply_appearance(&hu, &t, &p, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    for (v, o) in values.iter().zip(out.data()) {
        let want = (0.9 * v + 40.0).clamp(CT_MIN_HU, CT_MAX_HU);
        assert!((o - want).abs() < 1e-3, "{v} -> {o}, want {want}");
    }
}

#[test]
fn metal_saturates_and_streaks_stay_bounded() {
    let p = preset("ct-metal-hardware").unwrap();
    let (hu, t) = patient(&p, [64, 56, 4], true);
    let out = apply_appearance(&hu, &t, &p, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    let metal: Vec<f32> = out
        .data()
        .iter()
        .zip(t.data())
        .filter(|&(_, &l)| l == Tissue::Metal as u8)
        .map(|(&v, _)| v)
        .collect();
    assert!(!metal.is_empty());
    // Metal cores stay bright (blurred edges may be lower) and never exceed the scanner max.
    assert!(metal.iter().all(|&v| v <= CT_MAX_HU));
    assert!(metal.iter().copied().fold(f32::MIN, f32::max) >= 2900.0);
    // Without metal the same patient has no streaks: the muscle far from the metal differs by
    // less than the streak bound.
    let (hu0, t0) = patient(&p, [64, 56, 4], false);
    let clean = apply_appearance(&hu0, &t0, &p, &mut ChaCha8Rng::seed_from_u64(3)).unwrap();
    let diff: f32 = out
        .data()
        .iter()
        .zip(clean.data())
        .zip(t.data())
        .filter(|&(_, &l)| l != Tissue::Metal as u8)
        .map(|((a, b), _)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(diff > 50.0, "no visible streaks ({diff})");
}

#[test]
fn mr_mapping_orders_tissues_as_documented() {
    use Tissue::*;
    let t1 = |t| mr_signal(Modality::MrT1Like, t).unwrap();
    let t2 = |t| mr_signal(Modality::MrT2Like, t).unwrap();
    // T1: fat brightest, fatty marrow > muscle > CSF; cortical bone dark.
    assert!(t1(Fat) > t1(TrabecularBone) && t1(TrabecularBone) > t1(Muscle));
    assert!(t1(Muscle) > t1(Csf) && t1(Csf) > t1(CorticalBone));
    // T2: CSF brightest, disc bright, then fat > muscle; cortical bone dark.
    assert!(t2(Csf) > t2(Disc) && t2(Disc) > t2(Fat) && t2(Fat) > t2(Muscle));
    assert!(t2(Muscle) > t2(CorticalBone));
    // Lesions relative to normal marrow.
    assert!(t1(LyticLesion) < t1(TrabecularBone) && t2(LyticLesion) > t2(TrabecularBone));
    assert!(t1(ScleroticLesion) < t1(TrabecularBone) && t2(ScleroticLesion) < t2(TrabecularBone));
    assert!(t1(Inflammation) < t1(TrabecularBone) && t2(Inflammation) > t2(TrabecularBone));
    // Signal voids.
    for t in [Air, Metal] {
        assert_eq!(t1(t), 0.0);
        assert_eq!(t2(t), 0.0);
    }
    assert!(mr_signal(Modality::Ct, Fat).is_err());
}

#[test]
fn mr_images_show_the_documented_contrast() {
    for (name, bright, dark) in [
        ("mr-t1-like", Tissue::Fat, Tissue::Csf),
        ("mr-t2-like", Tissue::Csf, Tissue::Muscle),
    ] {
        let p = preset(name).unwrap();
        let (hu, t) = patient(&p, [64, 56, 8], false);
        let out = apply_appearance(&hu, &t, &p, &mut ChaCha8Rng::seed_from_u64(8)).unwrap();
        let mean_of = |tissue: Tissue| {
            let v: Vec<f64> = out
                .data()
                .iter()
                .zip(t.data())
                .filter(|&(_, &l)| l == tissue as u8)
                .map(|(&v, _)| f64::from(v))
                .collect();
            v.iter().sum::<f64>() / v.len() as f64
        };
        assert!(mean_of(bright) > 1.5 * mean_of(dark), "{name}");
        assert!(
            mean_of(Tissue::Air) < 60.0,
            "{name}: background {}",
            mean_of(Tissue::Air)
        );
        assert!(
            out.data()
                .iter()
                .all(|&v| (0.0..=MR_MAX_INTENSITY).contains(&v))
        );
    }
}

#[test]
fn thick_slices_blur_along_z_only() {
    let p = DomainPreset {
        name: "test-thick".into(),
        noise_sigma: 0.0,
        beam_hardening_hu: 0.0,
        kernel_sharpness: 0.0,
        ..preset("ct-lowdose-thick").unwrap()
    };
    let g = geometry([p.pixel_spacing_mm, p.pixel_spacing_mm, p.slice_spacing_mm]);
    let dims = [6, 6, 9];
    let mut hu = Volume::filled(dims, 0.0f32, g).unwrap();
    for y in 0..6 {
        for x in 0..6 {
            hu[[x, y, 4]] = 1000.0;
        }
    }
    let t = Volume::filled(dims, Tissue::SoftTissue as u8, g).unwrap();
    let out = apply_appearance(&hu, &t, &p, &mut ChaCha8Rng::seed_from_u64(0)).unwrap();
    assert!(out[[3, 3, 4]] < 1000.0 && out[[3, 3, 3]] > 10.0 && out[[3, 3, 5]] > 10.0);
    // Uniform in-plane: every slice stays constant in x and y.
    for z in 0..9 {
        assert!((out[[0, 0, z]] - out[[5, 5, z]]).abs() < 1e-3);
    }
}

/// Cost on a full-size 512×512×300 study. Run with
/// `cargo test -p vertebra-core --profile bench-fast --test domain -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark: 512×512×300 volume, several seconds"]
fn appearance_cost_on_a_full_size_volume() {
    for name in [
        "ct-standard",
        "ct-lowdose-thick",
        "ct-metal-hardware",
        "mr-t2-like",
    ] {
        let p = preset(name).unwrap();
        let (hu, t) = patient(&p, [512, 512, 300], p.metal.is_some());
        let start = std::time::Instant::now();
        let out = apply_appearance(&hu, &t, &p, &mut ChaCha8Rng::seed_from_u64(1)).unwrap();
        let secs = start.elapsed().as_secs_f64();
        println!(
            "{name}: {secs:.2} s for 512x512x300 on {} threads",
            rayon::current_num_threads()
        );
        assert_eq!(out.dims(), [512, 512, 300]);
        assert!(secs < 120.0, "{name} took {secs:.1} s");
    }
}
