//! The robustness study's perturbations against hand-computed values: HU scaling, noise
//! statistics on a uniform region, slab-averaged thick slices with their grid and labels,
//! metal hardware with streaks confined to the slices that hold metal.

use vertebra_core::anatomy::Vertebra;
use vertebra_core::phantom::domain::{METAL_HU, Modality};
use vertebra_core::phantom::{self, LesionPlan, PhantomSpec, domain};
use vertebra_core::{Geometry, Volume};
use vertebra_trainer::dataset::Case;
use vertebra_trainer::perturb::{Perturbation, study_conditions};

fn case(image: Volume<f32>, labels: Option<Volume<u8>>) -> Case {
    Case {
        id: "syn".into(),
        patient_id: "P".into(),
        domain: "ct-standard".into(),
        modality: Modality::Ct,
        image,
        labels,
        ids_annotated: true,
        lesions: None,
    }
}

fn stats(v: &[f32]) -> (f64, f64) {
    let n = v.len() as f64;
    let mean = v.iter().map(|&x| f64::from(x)).sum::<f64>() / n;
    let var = v
        .iter()
        .map(|&x| (f64::from(x) - mean).powi(2))
        .sum::<f64>()
        / n;
    (mean, var.sqrt())
}

#[test]
fn the_study_lists_every_condition_once() {
    let names: Vec<String> = study_conditions().iter().map(Perturbation::name).collect();
    assert_eq!(
        names,
        [
            "none",
            "intensity+15",
            "intensity-15",
            "intensity+30",
            "intensity-30",
            "noise-10hu",
            "noise-25hu",
            "noise-50hu",
            "slice-3mm",
            "slice-5mm",
            "metal"
        ]
    );
}

#[test]
fn intensity_scales_hounsfield_units() {
    let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
    let image = Volume::from_vec([4, 1, 1], vec![-1000.0, 0.0, 400.0, 1000.0], g).unwrap();
    let c = case(image, None);
    let up = Perturbation::Intensity { percent: 15 }
        .apply(&c, 0)
        .unwrap();
    assert_eq!(up.image.data(), &[-1150.0, 0.0, 460.0, 1150.0]);
    let down = Perturbation::Intensity { percent: -30 }
        .apply(&c, 0)
        .unwrap();
    assert_eq!(down.image.data(), &[-700.0, 0.0, 280.0, 700.0]);
    assert_eq!(down.image.geometry(), c.image.geometry());
    assert_eq!(Perturbation::None.apply(&c, 0).unwrap(), c);
}

#[test]
fn noise_has_the_stated_sigma_on_a_uniform_region() {
    let g = Geometry::axis_aligned([0.7, 0.7, 1.25], [0.0; 3]);
    let image = Volume::filled([64, 64, 16], 40.0f32, g).unwrap();
    let labels = Volume::filled([64, 64, 16], 3u8, g).unwrap();
    let c = case(image, Some(labels.clone()));
    for sigma in [10u32, 25, 50] {
        let p = Perturbation::Noise { sigma_hu: sigma };
        let out = p.apply(&c, 7).unwrap();
        let (mean, std) = stats(out.image.data());
        // 65,536 voxels: standard error of the mean σ/256, of the std σ/362.
        let s = f64::from(sigma);
        assert!((mean - 40.0).abs() < s * 0.02, "{p}: mean {mean}");
        assert!((std - s).abs() < s * 0.02, "{p}: std {std}");
        assert_eq!(out.labels.as_ref(), Some(&labels));
        assert_eq!(out, p.apply(&c, 7).unwrap(), "same seed, same noise");
        assert_ne!(out.image, p.apply(&c, 8).unwrap().image);
    }
}

/// A 2×1×12 scan at 1 mm with slice z = 10·z HU; labels 0 in slices 0–1, 7 above.
fn stack(spacing_z: f64, nz: usize) -> Case {
    let g = Geometry::axis_aligned([0.5, 0.5, spacing_z], [1.0, 2.0, 3.0]);
    let mut image = Vec::new();
    let mut labels = Vec::new();
    for z in 0..nz {
        for _ in 0..2 {
            image.push(10.0 * z as f32);
            labels.push(if z < 2 { 0u8 } else { 7 });
        }
    }
    case(
        Volume::from_vec([2, 1, nz], image, g).unwrap(),
        Some(Volume::from_vec([2, 1, nz], labels, g).unwrap()),
    )
}

#[test]
fn thick_slices_are_slab_means_on_a_coarser_grid() {
    let c = stack(1.0, 12);
    let three = Perturbation::SliceThickness { mm: 3 }.apply(&c, 0).unwrap();
    assert_eq!(three.image.dims(), [2, 1, 4]);
    let g = three.image.geometry();
    assert_eq!(g.spacing, [0.5, 0.5, 3.0]);
    // First slab covers slices 0..3 (edges −0.5 … 2.5 mm from slice 0): centre at slice 1.
    assert_eq!(g.origin, [1.0, 2.0, 4.0]);
    // Means of (0, 10, 20), (30, 40, 50), …
    let slabs: Vec<f32> = three.image.data().iter().step_by(2).copied().collect();
    assert_eq!(slabs, [10.0, 40.0, 70.0, 100.0]);
    let labels = three.labels.as_ref().unwrap();
    assert_eq!(labels.geometry(), g);
    assert_eq!(labels.dims(), three.image.dims());
    // Slab 0 = labels (0, 0, 7): majority 0; the rest all 7.
    assert_eq!(labels.data(), &[0, 0, 7, 7, 7, 7, 7, 7]);

    let five = Perturbation::SliceThickness { mm: 5 }.apply(&c, 0).unwrap();
    // 12 mm hold two whole 5 mm slabs: means of slices 0–4 and 5–9.
    assert_eq!(five.image.dims(), [2, 1, 2]);
    assert_eq!(five.image.geometry().spacing[2], 5.0);
    assert_eq!(five.image.geometry().origin[2], 3.0 + 2.0);
    assert_eq!(five.image.data(), &[20.0, 20.0, 70.0, 70.0]);
    // Slab 0 = (0, 0, 7, 7, 7): 7 wins 3:2.
    assert_eq!(five.labels.as_ref().unwrap().data(), &[7, 7, 7, 7]);
}

#[test]
fn thick_slices_weight_partial_overlaps() {
    // 2 mm slices → 5 mm: r = 2.5, four slabs out of ten slices.
    let c = stack(2.0, 10);
    let out = Perturbation::SliceThickness { mm: 5 }.apply(&c, 0).unwrap();
    assert_eq!(out.image.dims(), [2, 1, 4]);
    // Slab 0 = [0, 2.5): (1·0 + 1·10 + ½·20) / 2.5 = 8; slab 1 = [2.5, 5):
    // (½·20 + 30 + 40) / 2.5 = 32.
    let v: Vec<f32> = out.image.data().iter().step_by(2).copied().collect();
    for (got, want) in v.iter().zip([8.0, 32.0, 58.0, 82.0]) {
        assert!((got - want).abs() < 1e-4, "{v:?}");
    }
    // Slab 0: label 0 covers 2 of 2.5 slices.
    assert_eq!(out.labels.as_ref().unwrap().data()[0], 0);
    // Origin: slab centre at input index 0.75 → 3 + 2·0.75 mm.
    assert!((out.image.geometry().origin[2] - 4.5).abs() < 1e-12);
}

#[test]
fn thick_scans_are_left_alone_and_short_ones_refused() {
    let c = stack(5.0, 4);
    assert_eq!(
        Perturbation::SliceThickness { mm: 3 }.apply(&c, 0).unwrap(),
        c
    );
    let short = stack(1.0, 2);
    let e = Perturbation::SliceThickness { mm: 5 }
        .apply(&short, 0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("shorter than one 5 mm slab"), "{e}");
}

/// 64×72×40 at 1 mm: water (0 HU) with two box "vertebrae" of 400 HU, L3 at z 5..=15 and L4
/// at z 20..=30, both x 20..=44 and y 10..=60.
fn two_vertebrae() -> Case {
    let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
    let mut image = Volume::filled([64, 72, 40], 0.0f32, g).unwrap();
    let mut labels = Volume::filled([64, 72, 40], 0u8, g).unwrap();
    for (v, zs) in [(Vertebra::L3, 5..=15), (Vertebra::L4, 20..=30)] {
        for z in zs {
            for y in 10..=60 {
                for x in 20..=44 {
                    let i = image.index(x, y, z);
                    image.data_mut()[i] = 400.0;
                    labels.data_mut()[i] = v.label();
                }
            }
        }
    }
    case(image, Some(labels))
}

#[test]
fn metal_places_screws_and_streaks_only_in_metal_slices() {
    let c = two_vertebrae();
    let out = Perturbation::Metal.apply(&c, 3).unwrap();
    assert_eq!(out.labels, c.labels, "labels are kept");
    assert_eq!(out.image.geometry(), c.image.geometry());
    // L4: AP extent D = 60 − 10 = 50 mm, body = y ≤ 30 → y 10..=30, centroid (32, 20, 25);
    // d = 20 mm. Left screw: entry (32 + 12, 20 + 22, 25) = (44, 42, 25), tip
    // (32 + 4, 20 − 5, 25) = (36, 15, 25); midpoint (40, 28.5, 25).
    let at = |x, y, z| *out.image.get(x, y, z).unwrap();
    for (x, y) in [(40, 28), (40, 29), (36, 15), (44, 42), (24, 28)] {
        assert!(
            at(x, y, 25) >= METAL_HU,
            "({x}, {y}, 25) = {}",
            at(x, y, 25)
        );
    }
    // Far lateral of the screws at the same level: not metal.
    assert!(at(50, 28, 25) < METAL_HU);
    assert!(c.image.data().iter().all(|&v| v < METAL_HU));
    // Hardware spans z 4.5..=30.5 (L3 heads at z 10 ± 5.5, L4 at 25 ± 5.5, rods between);
    // slices well outside are bit-identical, slices with metal carry streaks.
    let plane = 64 * 72;
    let slice = |v: &Volume<f32>, z: usize| v.data()[z * plane..(z + 1) * plane].to_vec();
    for z in (0..=3).chain(32..40) {
        assert_eq!(
            slice(&out.image, z),
            slice(&c.image, z),
            "slice {z} changed"
        );
    }
    for z in [10, 18, 25] {
        let a = slice(&out.image, z);
        let b = slice(&c.image, z);
        let diff: Vec<f32> = a
            .iter()
            .zip(&b)
            .filter(|&(&o, _)| o < METAL_HU)
            .map(|(&o, &i)| o - i)
            .collect();
        let (_, std) = stats(&diff);
        assert!(std > 10.0, "slice {z}: streak std {std}");
        assert!(diff.iter().all(|d| d.abs() <= 600.0 + 1e-3));
        assert!(a.iter().any(|&v| v >= METAL_HU), "slice {z} has no metal");
    }
    assert_eq!(out, Perturbation::Metal.apply(&c, 3).unwrap());
    assert_ne!(out.image, Perturbation::Metal.apply(&c, 4).unwrap().image);
}

#[test]
fn metal_needs_labels_and_a_whole_vertebra() {
    let mut c = two_vertebrae();
    c.labels = None;
    let e = Perturbation::Metal.apply(&c, 0).unwrap_err().to_string();
    assert!(e.contains("has none"), "{e}");
    // A vertebra cut by the scan border is not instrumented.
    let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
    let labels = Volume::filled([8, 8, 8], Vertebra::L1.label(), g).unwrap();
    let c = case(Volume::filled([8, 8, 8], 0.0, g).unwrap(), Some(labels));
    let e = Perturbation::Metal.apply(&c, 0).unwrap_err().to_string();
    assert!(e.contains("nowhere to place"), "{e}");
}

#[test]
fn metal_on_a_phantom_lands_in_the_instrumented_vertebrae() {
    // 0.9 mm pixels × 176 = 158 mm in-plane: whole lumbar vertebrae fit; 3 mm slices keep it
    // small.
    let mut spec = PhantomSpec::new(
        5,
        Vertebra::L2,
        Vertebra::L4,
        domain::preset("ct-lowdose-thick").unwrap(),
    );
    spec.in_plane = 176;
    spec.lesions = LesionPlan::None;
    let c = Case::from_phantom("p".into(), phantom::generate(&spec).unwrap());
    let out = Perturbation::Metal.apply(&c, 1).unwrap();
    let labels = c.labels.as_ref().unwrap();
    let mut per_label = [0usize; 26];
    let mut metal = 0;
    for (i, (&o, &v)) in out.image.data().iter().zip(c.image.data()).enumerate() {
        if o >= METAL_HU && v < METAL_HU {
            metal += 1;
            per_label[labels.data()[i] as usize] += 1;
        }
    }
    assert!(metal > 100, "{metal} metal voxels");
    // Screws go into two consecutive vertebrae (the most caudal ones lying wholly in the
    // scan); heads and rods lie dorsally in soft tissue; no other vertebra is touched.
    let hit: Vec<usize> = (1..26).filter(|&l| per_label[l] > 0).collect();
    eprintln!("metal voxels {metal}, per vertebra label {per_label:?}");
    assert!(
        hit.len() == 2 && hit[1] == hit[0] + 1,
        "metal in vertebrae {hit:?}"
    );
    let inside: usize = hit.iter().map(|&l| per_label[l]).sum();
    assert!(inside as f64 > 0.25 * metal as f64, "{per_label:?}");
    assert!(hit[1] >= usize::from(Vertebra::L3.label()), "{hit:?}");
}

#[test]
fn mr_cases_are_refused() {
    let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
    let mut c = case(Volume::filled([4, 4, 4], 100.0, g).unwrap(), None);
    c.modality = Modality::MrT2Like;
    for p in study_conditions() {
        let e = p.apply(&c, 0).unwrap_err().to_string();
        assert!(e.contains("is not in HU"), "{p}: {e}");
    }
}
