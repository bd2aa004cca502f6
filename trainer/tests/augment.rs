//! Augmentation: identity, reproducibility, the alignment property over many seeds, cost.

use std::time::Instant;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use vertebra_core::anatomy::{LesionClass, Vertebra};
use vertebra_core::phantom::LesionTruth;
use vertebra_core::{Geometry, Volume};
use vertebra_trainer::augment::{AugmentConfig, RotationMode, augment_window, sample_augmented};
use vertebra_trainer::manifest::Annotations;
use vertebra_trainer::preprocess::{PreparedCase, WindowSpec, window_at};

const SPACING: f64 = 2.0;
const ORIGIN: [f64; 3] = [-50.0, 20.0, 100.0];

/// Cuboids `(label, x range, y range, z range)` (inclusive voxel indices).
/// A labelled cuboid.
type Cuboid = (u8, [usize; 2], [usize; 2], [usize; 2]);

const CUBOIDS: [Cuboid; 4] = [
    (20, [24, 39], [26, 37], [20, 26]),
    (21, [24, 39], [26, 37], [29, 35]),
    (22, [24, 39], [26, 37], [38, 44]),
    // The "lesion": its own label so its warped voxels can be found.
    (23, [40, 45], [28, 33], [30, 34]),
];

fn world(v: [f64; 3]) -> [f64; 3] {
    [0, 1, 2].map(|a| ORIGIN[a] + SPACING * v[a])
}

/// A prepared case of `n³` voxels holding the cuboids (image 0.85 inside, 0 outside), the
/// cuboid centres as centroids (hand-computed: the mean of `a..=b` is `(a + b) / 2`), and one
/// lesion whose box is the last cuboid's voxel-edge box.
fn synthetic(n: usize) -> PreparedCase {
    let g = Geometry::axis_aligned([SPACING; 3], ORIGIN);
    let mut image = Volume::filled([n; 3], 0.0f32, g).unwrap();
    let mut labels = Volume::filled([n; 3], 0u8, g).unwrap();
    let mut centroids = Vec::new();
    for (l, x, y, z) in CUBOIDS {
        for k in z[0]..=z[1] {
            for j in y[0]..=y[1] {
                for i in x[0]..=x[1] {
                    let at = image.index(i, j, k);
                    image.data_mut()[at] = 0.85;
                    labels.data_mut()[at] = l;
                }
            }
        }
        let mid = |r: [usize; 2]| (r[0] + r[1]) as f64 / 2.0;
        centroids.push((l, world([mid(x), mid(y), mid(z)])));
    }
    let (_, x, y, z) = CUBOIDS[3];
    let lesion = LesionTruth {
        class: LesionClass::LyticMetastasis,
        is_target: true,
        vertebra: Vertebra::L3,
        partner: None,
        centre: world([42.5, 30.5, 32.0]),
        size_mm: [x, y, z].map(|r| (r[1] - r[0] + 1) as f64 * SPACING),
        voxels: 6 * 6 * 5,
        genant_grade: None,
        fracture_shape: None,
        height_loss: None,
    };
    PreparedCase {
        id: "syn".into(),
        domain: "ct-standard".into(),
        image,
        labels: Some(labels),
        lesions: Some(vec![lesion]),
        annotations: Annotations {
            masks: true,
            ids: true,
            lesions: true,
        },
        centroids,
    }
}

fn spec(n: usize) -> WindowSpec {
    WindowSpec {
        window: [n; 3],
        spacing_mm: SPACING,
        lesion_stride: 4,
        min_instance_voxels: 1,
    }
}

fn centre() -> [f64; 3] {
    world([31.5, 31.5, 31.5])
}

#[test]
fn switched_off_it_is_window_at() {
    let case = synthetic(64);
    let s = spec(40);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let a = augment_window(&case, centre(), &s, &AugmentConfig::none(), &mut rng).unwrap();
    let w = window_at(&case, centre(), &s).unwrap();
    assert_eq!(a.sample.image, w.image);
    assert_eq!(a.sample.labels, w.labels);
    assert_eq!(a.sample.instances, w.instances);
    let (la, lw) = (a.sample.lesions.unwrap(), w.lesions.unwrap());
    assert_eq!(la.count, 1);
    assert_eq!(la.mask, lw.mask);
    for (x, y) in la.heatmap.iter().zip(&lw.heatmap) {
        assert!((x - y).abs() < 1e-5);
    }
    for (x, y) in la.offset.iter().zip(&lw.offset) {
        assert!((x - y).abs() < 1e-5);
    }
    // Window starts at voxel 12 (centre 31.5, 40 voxels): L1's centre (31.5, 31.5, 23) → (19.5, 19.5, 11).
    let c = a.centroids.iter().find(|c| c.0 == 20).unwrap().1;
    for (got, want) in c.iter().zip([19.5, 19.5, 11.0]) {
        assert!((got - want).abs() < 1e-9, "{c:?}");
    }
}

#[test]
fn same_seed_same_output_other_seed_other_output() {
    let case = synthetic(64);
    let s = spec(40);
    let cfg = AugmentConfig::default();
    let run =
        |seed| sample_augmented(&case, &s, &cfg, &mut ChaCha8Rng::seed_from_u64(seed)).unwrap();
    let (a, b, c) = (run(7), run(7), run(8));
    assert_eq!(a, b);
    assert_ne!(a.sample.image, c.sample.image);
}

#[test]
fn config_defaults_and_serde() {
    let c = AugmentConfig::default();
    assert_eq!(
        (c.max_rotation_deg, c.max_scale, c.max_translation_voxels),
        (15.0, 0.10, 10.0)
    );
    let text = serde_json::to_string(&c).unwrap();
    let back: AugmentConfig = serde_json::from_str(&text).unwrap();
    assert_eq!(back, c);
    // Partial configs fill in defaults; unknown keys are refused.
    let p: AugmentConfig = serde_json::from_str(r#"{"elastic": false}"#).unwrap();
    assert!(!p.elastic && p.rotation);
    assert!(serde_json::from_str::<AugmentConfig>(r#"{"elastik": false}"#).is_err());
    let bad = AugmentConfig {
        max_scale: 0.9,
        ..c
    };
    assert!(
        bad.validate()
            .unwrap_err()
            .to_string()
            .contains("max_scale")
    );
    let folding = AugmentConfig {
        elastic_sigma_voxels: 4.0,
        ..c
    };
    assert!(
        folding
            .validate()
            .unwrap_err()
            .to_string()
            .contains("fold-free")
    );
}

/// Voxel centres `(x, y, z)` of `label` in a window label map of `n³`.
fn voxels_of(labels: &[u8], n: usize, label: u8) -> Vec<[f64; 3]> {
    labels
        .iter()
        .enumerate()
        .filter(|(_, v)| **v == label)
        .map(|(i, _)| [(i % n) as f64, ((i / n) % n) as f64, (i / (n * n)) as f64])
        .collect()
}

/// Runs `seeds` augmentations of the synthetic case and checks, for every vertebra not cut by
/// the window, that the centroid of its warped voxels lies within `tolerance` voxels of the
/// transformed centroid, and that the transformed lesion box contains every warped lesion
/// voxel (and is tight). Returns the worst centroid distance.
fn check_alignment(elastic: bool, seeds: std::ops::Range<u64>, tolerance: f64) -> f64 {
    let case = synthetic(64);
    let n = 40;
    let s = spec(n);
    let mut checked_centroids = 0;
    let mut checked_lesions = 0;
    let mut worst = 0.0f64;
    for (seed, mode) in seeds.map(|k| {
        (
            k,
            if k % 2 == 0 {
                RotationMode::PerAxis
            } else {
                RotationMode::RandomAxis
            },
        )
    }) {
        let cfg = AugmentConfig {
            rotation_mode: mode,
            elastic,
            ..AugmentConfig::default()
        };
        let a = augment_window(
            &case,
            centre(),
            &s,
            &cfg,
            &mut ChaCha8Rng::seed_from_u64(seed),
        )
        .unwrap();
        let labels = a.sample.labels.as_ref().unwrap();
        for &(l, c) in &a.centroids {
            let vox = voxels_of(labels, n, l);
            let touches = vox
                .iter()
                .any(|p| p.iter().any(|&v| v == 0.0 || v == (n - 1) as f64));
            if vox.is_empty() || touches {
                continue; // Cut by the window: its centroid moves legitimately.
            }
            let mean = [0, 1, 2].map(|a| vox.iter().map(|p| p[a]).sum::<f64>() / vox.len() as f64);
            let d = (0..3).map(|a| (mean[a] - c[a]).powi(2)).sum::<f64>().sqrt();
            assert!(
                d <= tolerance,
                "seed {seed}: label {l} centroid {mean:?} vs transformed {c:?} ({d:.2} voxels)"
            );
            worst = worst.max(d);
            checked_centroids += 1;
        }
        let lesion = &a.lesions.as_ref().unwrap()[0];
        let lo = a
            .geometry
            .world_to_voxel([0, 1, 2].map(|k| lesion.centre[k] - lesion.size_mm[k] / 2.0));
        let hi = a
            .geometry
            .world_to_voxel([0, 1, 2].map(|k| lesion.centre[k] + lesion.size_mm[k] / 2.0));
        let vox = voxels_of(labels, n, 23);
        if vox.is_empty() {
            continue;
        }
        for p in &vox {
            for k in 0..3 {
                assert!(
                    p[k] >= lo[k] - 0.25 && p[k] <= hi[k] + 0.25,
                    "seed {seed}: lesion voxel {p:?} outside the box {lo:?}..{hi:?}"
                );
            }
        }
        let touches = vox
            .iter()
            .any(|p| p.iter().any(|&v| v == 0.0 || v == (n - 1) as f64));
        if !touches {
            // And the box is tight: no face more than 2 voxels beyond the outermost voxel.
            for k in 0..3 {
                let min = vox.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
                let max = vox.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max);
                assert!(
                    min - lo[k] <= 2.0 && hi[k] - max <= 2.0,
                    "seed {seed}: loose box"
                );
            }
        }
        checked_lesions += 1;
    }
    eprintln!(
        "elastic {elastic}: {checked_centroids} centroids (worst {worst:.2} voxels) and \
         {checked_lesions} lesion boxes checked"
    );
    assert!(
        checked_centroids >= 90,
        "only {checked_centroids} centroids checked"
    );
    assert!(
        checked_lesions >= 30,
        "only {checked_lesions} lesions checked"
    );
    worst
}

#[test]
fn labels_centroids_and_lesion_boxes_stay_aligned_over_many_seeds() {
    // Affine part only (rotation, scale, translation): exact up to the label grid.
    check_alignment(false, 0..40, 1.0);
    // Everything on: the elastic part's volume change moves a region's centroid a little
    // relative to the warped centroid point (module docs of `augment`).
    check_alignment(true, 100..140, 2.0);
}

#[test]
fn cost_of_a_cpu_preset_window() {
    let case = synthetic(96);
    let s = spec(64);
    let cfg = AugmentConfig::default();
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let runs = 5;
    let t = Instant::now();
    for _ in 0..runs {
        sample_augmented(&case, &s, &cfg, &mut rng).unwrap();
    }
    let ms = t.elapsed().as_secs_f64() * 1000.0 / f64::from(runs);
    eprintln!("augmentation of a 64^3 window: {ms:.1} ms per sample (test profile)");
    assert!(ms < 2000.0, "{ms} ms per 64^3 sample");
}
