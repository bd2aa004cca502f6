//! End-to-end tests of the synthetic phantom generator: determinism, anatomy along the
//! column, clean-HU statistics per tissue, lesions where the truth says, hardware, and errors
//! on odd specs. Grids are small (≤ 200² in-plane, coarse spacing) so the suite runs in
//! seconds at opt-level 1.

#![allow(clippy::naive_bytecount)] // test counts; no bytecount dependency for tests

use vertebra_core::anatomy::{GenantGrade, LesionClass, Vertebra};
use vertebra_core::phantom::domain::{self, DomainPreset};
use vertebra_core::phantom::{
    ALL_TISSUES, FractureShape, GroundTruth, LesionKind, LesionPlan, LesionRequest, Phantom,
    PhantomSpec, Tissue, clean_hu, generate, generate_clean, vertebra_range,
};
use vertebra_core::{Error, Volume};

/// The standard CT preset on a coarser grid.
fn ct(px: f64, dz: f64) -> DomainPreset {
    let mut d = domain::preset("ct-standard").expect("preset");
    d.pixel_spacing_mm = px;
    d.slice_spacing_mm = dz;
    d.slice_thickness_mm = dz;
    d
}

fn spec(seed: u64, first: Vertebra, last: Vertebra, n: usize, d: DomainPreset) -> PhantomSpec {
    let mut s = PhantomSpec::new(seed, first, last, d);
    s.in_plane = n;
    s
}

/// Nearest-voxel value of a volume at a world point, `None` outside.
fn at<T: Copy>(v: &Volume<T>, w: [f64; 3]) -> Option<T> {
    let p = v.geometry().world_to_voxel(w);
    let r = |x: f64| x.round();
    if p.iter().any(|x| r(*x) < 0.0) {
        return None;
    }
    v.get(r(p[0]) as usize, r(p[1]) as usize, r(p[2]) as usize)
        .copied()
}

#[test]
fn same_seed_same_phantom_different_seed_different_phantom() {
    let s = spec(11, Vertebra::T12, Vertebra::L3, 96, ct(1.2, 2.0));
    let a = generate(&s).unwrap();
    let b = generate(&s).unwrap();
    assert_eq!(a.ct.data(), b.ct.data(), "CT must be bit-identical");
    assert_eq!(a.labels, b.labels);
    assert_eq!(a.tissue, b.tissue);
    assert_eq!(a.truth(), b.truth());
    let mut s2 = s.clone();
    s2.seed = 12;
    let c = generate(&s2).unwrap();
    assert_ne!(a.labels.data(), c.labels.data());
    assert_ne!(a.ct.data(), c.ct.data());
}

#[test]
fn anatomy_of_a_seed_does_not_depend_on_lesions_or_domain() {
    let s = spec(5, Vertebra::L1, Vertebra::L3, 96, ct(1.2, 2.0));
    let healthy = generate_clean(&s).unwrap();
    let mut with_lesion = s.clone();
    with_lesion.lesions = LesionPlan::Explicit {
        lesions: vec![LesionRequest {
            kind: LesionKind::Lytic,
            vertebra: Vertebra::L2,
        }],
    };
    let sick = generate_clean(&with_lesion).unwrap();
    // A lytic lesion changes tissue, never labels.
    assert_eq!(healthy.labels, sick.labels);
    assert_ne!(healthy.tissue, sick.tissue);
}

fn check_range(p: &Phantom, first: Vertebra, last: Vertebra) {
    let present: Vec<Vertebra> = p.centroids.iter().map(|c| c.vertebra).collect();
    for v in vertebra_range(first, last) {
        if v == Vertebra::L6 && !p.l6_variant {
            continue;
        }
        assert!(
            present.contains(&v),
            "{} missing from {present:?}",
            v.name()
        );
    }
    // Only edge neighbours may show up partially (spinous processes overhang).
    for v in &present {
        let o = v.ordinal() as i64;
        assert!(
            o >= first.ordinal() as i64 - 2 && o <= last.ordinal() as i64 + 2,
            "{} far outside {}..{}",
            v.name(),
            first.name(),
            last.name()
        );
    }
    // Cranio-caudal order: label order = descending z (superior = +z in LPS).
    for w in p.centroids.windows(2) {
        assert!(w[0].vertebra < w[1].vertebra);
        assert!(
            w[0].world[2] > w[1].world[2],
            "{} at z {} is not above {} at z {}",
            w[0].vertebra.name(),
            w[0].world[2],
            w[1].vertebra.name(),
            w[1].world[2]
        );
    }
    // Centroids are measured on the label map.
    for c in &p.centroids {
        let n = p
            .labels
            .data()
            .iter()
            .filter(|&&l| l == c.vertebra.label())
            .count();
        assert_eq!(n, c.voxels);
    }
}

#[test]
fn sub_ranges_and_whole_column() {
    for (seed, first, last) in [
        (1, Vertebra::C1, Vertebra::C7),
        (2, Vertebra::T1, Vertebra::T12),
        (3, Vertebra::L1, Vertebra::L5),
        (4, Vertebra::T6, Vertebra::T6),
    ] {
        let p = generate_clean(&spec(seed, first, last, 96, ct(1.5, 2.5))).unwrap();
        check_range(&p, first, last);
    }
    let whole = generate_clean(&spec(9, Vertebra::C1, Vertebra::L5, 128, ct(1.6, 3.0))).unwrap();
    check_range(&whole, Vertebra::C1, Vertebra::L5);
    // Per-level anatomy: lumbar vertebrae are much bigger than thoracic, thoracic than
    // cervical.
    let vox = |v: Vertebra| {
        whole
            .centroids
            .iter()
            .find(|c| c.vertebra == v)
            .map_or(0, |c| c.voxels)
    };
    assert!(vox(Vertebra::L3) > vox(Vertebra::T6));
    assert!(vox(Vertebra::T6) > vox(Vertebra::C5));
}

#[test]
fn forced_l6_is_label_25_below_l5_with_the_sacrum_below() {
    let p = generate_clean(&spec(21, Vertebra::L4, Vertebra::L6, 96, ct(1.2, 2.0))).unwrap();
    assert!(p.l6_variant);
    check_range(&p, Vertebra::L4, Vertebra::L6);
    let l6 = p
        .centroids
        .iter()
        .find(|c| c.vertebra == Vertebra::L6)
        .unwrap();
    assert_eq!(l6.vertebra.label(), 25);
    // Sacral bone (label 0) below L6.
    let geo = *p.tissue.geometry();
    let [nx, ny, _] = p.tissue.dims();
    let k = geo.world_to_voxel(l6.world)[2].round() as usize;
    let below = (0..k.saturating_sub(12))
        .flat_map(|z| (0..nx * ny).map(move |i| i + z * nx * ny))
        .filter(|&i| p.labels.data()[i] == 0 && p.tissue.data()[i] == Tissue::TrabecularBone as u8)
        .count();
    assert!(below > 100, "no sacrum below L6 ({below} voxels)");
}

#[test]
fn thorax_has_lungs_and_ribs_lumbar_spine_has_none() {
    let d = ct(2.5, 3.0);
    let t = generate_clean(&spec(6, Vertebra::T5, Vertebra::T7, 160, d.clone())).unwrap();
    let l = generate_clean(&spec(6, Vertebra::L3, Vertebra::L4, 160, d)).unwrap();
    let count = |p: &Phantom, f: &dyn Fn(u8, u8) -> bool| {
        p.tissue
            .data()
            .iter()
            .zip(p.labels.data())
            .filter(|(t, l)| f(**t, **l))
            .count()
    };
    let lung = |t: u8, _| t == Tissue::Lung as u8;
    let rib_bone = |t: u8, l: u8| l == 0 && t == Tissue::CorticalBone as u8;
    assert!(count(&t, &lung) > 10_000);
    assert_eq!(count(&l, &lung), 0);
    assert!(count(&t, &rib_bone) > 10 * count(&l, &rib_bone).max(1));
    // Soft tissues of the body are all present in the abdomen.
    for tissue in [Tissue::Fat, Tissue::Muscle, Tissue::SoftTissue, Tissue::Air] {
        assert!(count(&l, &|t, _| t == tissue as u8) > 500, "{tissue:?}");
    }
}

#[test]
fn clean_hu_per_tissue_matches_the_published_ranges() {
    let mut d = domain::preset("ct-metal-hardware").unwrap();
    d.pixel_spacing_mm = 2.0;
    d.slice_spacing_mm = 2.0;
    d.slice_thickness_mm = 2.0;
    let mut s = spec(31, Vertebra::T9, Vertebra::L3, 240, d);
    s.lesions = LesionPlan::Explicit {
        lesions: vec![
            LesionRequest {
                kind: LesionKind::Lytic,
                vertebra: Vertebra::T10,
            },
            LesionRequest {
                kind: LesionKind::Sclerotic,
                vertebra: Vertebra::T11,
            },
            LesionRequest {
                kind: LesionKind::Infection,
                vertebra: Vertebra::L1,
            },
        ],
    };
    let p = generate_clean(&s).unwrap();
    // `generate_clean` paints `clean_hu` of the tissue map; recompute to be explicit.
    let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(77);
    let hu = clean_hu(&p.tissue, &mut rng).unwrap();
    for volume in [&p.ct, &hu] {
        for t in ALL_TISSUES {
            let vals: Vec<f64> = p
                .tissue
                .data()
                .iter()
                .zip(volume.data())
                .filter(|(x, _)| **x == t as u8)
                .map(|(_, v)| f64::from(*v))
                .collect();
            assert!(vals.len() >= 20, "{t:?}: only {} voxels", vals.len());
            let n = vals.len() as f64;
            let mean = vals.iter().sum::<f64>() / n;
            let sd = (vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            let h = t.hu();
            assert!(
                mean >= f64::from(h.range[0]) && mean <= f64::from(h.range[1]),
                "{t:?}: mean {mean:.1} outside {:?}",
                h.range
            );
            assert!(
                sd <= 1.5 * f64::from(h.sd) + 1.0,
                "{t:?}: sd {sd:.1} > 1.5 × {}",
                h.sd
            );
            if h.sd > 0.0 {
                assert!(
                    sd >= 0.25 * f64::from(h.sd),
                    "{t:?}: sd {sd:.1} too uniform"
                );
            }
        }
    }
}

/// Height of `v`'s label along its body axis through local (0, `v_off`, ·), in mm.
fn body_height(p: &Phantom, v: Vertebra, v_off: f64) -> f64 {
    let pose = p.vertebrae.iter().find(|q| q.vertebra == v).unwrap();
    let [_, ey, ez] = pose.axes;
    let h = pose.body_size_mm[2];
    let step = 0.1;
    let mut n = 0;
    let mut t = -h;
    while t <= h {
        let w = [
            pose.body_centre[0] + ey[0] * v_off + ez[0] * t,
            pose.body_centre[1] + ey[1] * v_off + ez[1] * t,
            pose.body_centre[2] + ey[2] * v_off + ez[2] * t,
        ];
        if at(&p.labels, w) == Some(v.label()) {
            n += 1;
        }
        t += step;
    }
    f64::from(n) * step
}

#[test]
fn lesions_are_where_the_truth_says() {
    let d = ct(0.8, 0.8);
    let base = spec(41, Vertebra::T12, Vertebra::L5, 128, d);
    let mut s = base.clone();
    let req = |kind, vertebra| LesionRequest { kind, vertebra };
    s.lesions = LesionPlan::Explicit {
        lesions: vec![
            req(LesionKind::Lytic, Vertebra::L2),
            req(LesionKind::Sclerotic, Vertebra::L5),
            req(
                LesionKind::Fracture {
                    grade: 3,
                    shape: FractureShape::Wedge,
                },
                Vertebra::L3,
            ),
            req(
                LesionKind::Fracture {
                    grade: 2,
                    shape: FractureShape::Biconcave,
                },
                Vertebra::L4,
            ),
            req(LesionKind::Infection, Vertebra::T12),
        ],
    };
    let p = generate_clean(&s).unwrap();
    let healthy = generate_clean(&base).unwrap();
    assert_eq!(p.lesions.len(), 5);
    for l in &p.lesions {
        let centre_label = at(&p.labels, l.centre).unwrap();
        let centre_tissue = at(&p.tissue, l.centre).unwrap();
        match l.class {
            LesionClass::InfectionErosion => {
                assert_eq!(l.partner, Some(Vertebra::L1));
                assert_eq!(centre_tissue, Tissue::Inflammation as u8);
                // Both endplates eroded: inflammation voxels inside both vertebrae.
                for v in [Vertebra::T12, Vertebra::L1] {
                    let n = p
                        .tissue
                        .data()
                        .iter()
                        .zip(p.labels.data())
                        .filter(|(t, lab)| **t == Tissue::Inflammation as u8 && **lab == v.label())
                        .count();
                    assert!(n > 50, "{}: {n} eroded voxels", v.name());
                }
            }
            _ => assert_eq!(centre_label, l.vertebra.label(), "{:?}", l.class),
        }
        assert!(l.size_mm.iter().all(|s| *s > 2.0));
    }
    // Lytic darker, sclerotic brighter than the same vertebra's trabecular bone.
    let mean_of = |v: Vertebra, t: Tissue| {
        let vals: Vec<f64> = p
            .tissue
            .data()
            .iter()
            .zip(p.labels.data())
            .zip(p.ct.data())
            .filter(|((tt, l), _)| **tt == t as u8 && **l == v.label())
            .map(|(_, x)| f64::from(*x))
            .collect();
        assert!(!vals.is_empty(), "{} has no {t:?}", v.name());
        vals.iter().sum::<f64>() / vals.len() as f64
    };
    assert!(
        mean_of(Vertebra::L2, Tissue::LyticLesion) + 80.0
            < mean_of(Vertebra::L2, Tissue::TrabecularBone)
    );
    assert!(
        mean_of(Vertebra::L5, Tissue::ScleroticLesion)
            > mean_of(Vertebra::L5, Tissue::TrabecularBone) + 150.0
    );
    // Fractured bodies lose the grade's height: anterior for the wedge, middle for the
    // biconcave fracture; the posterior wall of the wedge keeps its height.
    for (v, v_frac, shape) in [
        (Vertebra::L3, -0.75, FractureShape::Wedge),
        (Vertebra::L4, 0.0, FractureShape::Biconcave),
    ] {
        let truth = p.lesions.iter().find(|l| l.vertebra == v).unwrap();
        assert_eq!(truth.fracture_shape, Some(shape));
        let depth = p
            .vertebrae
            .iter()
            .find(|q| q.vertebra == v)
            .unwrap()
            .body_size_mm[1];
        let off = v_frac * depth / 2.0;
        let ratio = body_height(&p, v, off) / body_height(&healthy, v, off);
        let loss = truth.height_loss.unwrap();
        assert!(
            (1.0 - ratio - loss).abs() < 0.08,
            "{}: measured loss {:.3}, truth {loss:.3}",
            v.name(),
            1.0 - ratio
        );
        let grade = GenantGrade::from_u8(truth.genant_grade.unwrap()).unwrap();
        let (lo, hi) = grade.height_loss_range();
        assert!(loss >= lo && loss < hi);
        assert!(truth.is_target);
    }
    let wedge = Vertebra::L3;
    let depth = p.vertebrae[wedge.ordinal()].body_size_mm[1];
    let post =
        body_height(&p, wedge, 0.8 * depth / 2.0) / body_height(&healthy, wedge, 0.8 * depth / 2.0);
    assert!(
        post > 0.9,
        "posterior wall of a wedge fracture lost height ({post:.2})"
    );
    // Labels elsewhere (an unaffected vertebra) are untouched by the lesions.
    let l5 = Vertebra::L5.label();
    let l5_a = p.labels.data().iter().filter(|&&l| l == l5).count();
    let l5_b = healthy.labels.data().iter().filter(|&&l| l == l5).count();
    assert_eq!(l5_a, l5_b);
}

#[test]
fn grade_one_fractures_are_recorded_but_not_targets_and_truth_round_trips() {
    let mut s = spec(51, Vertebra::L1, Vertebra::L2, 96, ct(1.0, 1.5));
    s.lesions = LesionPlan::Explicit {
        lesions: vec![LesionRequest {
            kind: LesionKind::Fracture {
                grade: 1,
                shape: FractureShape::Crush,
            },
            vertebra: Vertebra::L1,
        }],
    };
    let p = generate_clean(&s).unwrap();
    let truth = p.truth();
    assert_eq!(truth.lesions.len(), 1);
    assert!(!truth.lesions[0].is_target);
    assert_eq!(truth.lesions[0].genant_grade, Some(1));
    let json = serde_json::to_string(&truth).unwrap();
    assert!(json.contains("\"is_target\":false"));
    assert!(json.contains("\"X\":"));
    // serde_json's default float parser may differ in the last ulp: compare with tolerance.
    let back: GroundTruth = serde_json::from_str(&json).unwrap();
    assert_eq!(back.spec, truth.spec);
    assert_eq!(back.lesions.len(), 1);
    assert_eq!(back.lesions[0].class, truth.lesions[0].class);
    assert_eq!(back.centroids.len(), truth.centroids.len());
    for (a, b) in back.centroids.iter().zip(&truth.centroids) {
        assert_eq!((a.label, &a.name, a.voxels), (b.label, &b.name, b.voxels));
        assert!((a.x - b.x).abs() + (a.y - b.y).abs() + (a.z - b.z).abs() < 1e-9);
    }
    assert_eq!(truth.geometry.dims, p.ct.dims());
    assert_eq!(truth.centroids.len(), p.centroids.len());
    // The mask is the union of the labels.
    let mask = p.mask();
    assert!(mask.data().iter().all(|&m| m <= 1));
    assert_eq!(
        mask.data().iter().filter(|&&m| m == 1).count(),
        p.labels.data().iter().filter(|&&l| l > 0).count()
    );
}

#[test]
fn random_lesion_plans_are_placed_on_distinct_imaged_vertebrae() {
    let mut total = 0;
    for seed in 0..6 {
        let mut s = spec(seed, Vertebra::T10, Vertebra::L5, 96, ct(1.4, 2.5));
        s.lesions = LesionPlan::Random { rate: 2.5 };
        let p = generate_clean(&s).unwrap();
        let mut seen = Vec::new();
        for l in &p.lesions {
            assert!(!seen.contains(&l.vertebra));
            seen.push(l.vertebra);
            seen.extend(l.partner);
            assert!(p.centroids.iter().any(|c| c.vertebra == l.vertebra));
        }
        total += p.lesions.len();
    }
    assert!(
        total > 0,
        "a rate of 2.5 per case gave no lesion in 6 cases"
    );
}

#[test]
fn metal_domain_gets_pedicle_screws_inside_the_vertebrae() {
    let mut d = domain::preset("ct-metal-hardware").unwrap();
    d.pixel_spacing_mm = 0.9;
    d.slice_spacing_mm = 1.5;
    d.slice_thickness_mm = 1.5;
    let levels = d.metal.as_ref().unwrap().levels;
    let p = generate(&spec(61, Vertebra::L2, Vertebra::L5, 128, d)).unwrap();
    assert_eq!(p.hardware.len(), 2 * levels);
    let metal = p
        .tissue
        .data()
        .iter()
        .filter(|&&t| t == Tissue::Metal as u8)
        .count();
    assert!(metal > 200, "{metal} metal voxels");
    for s in &p.hardware {
        // Screw tips lie in their vertebra's body.
        let mid = [
            (s.entry[0] + 3.0 * s.tip[0]) / 4.0,
            (s.entry[1] + 3.0 * s.tip[1]) / 4.0,
            (s.entry[2] + 3.0 * s.tip[2]) / 4.0,
        ];
        assert_eq!(at(&p.labels, mid), Some(s.vertebra.label()));
        assert_eq!(at(&p.tissue, mid), Some(Tissue::Metal as u8));
    }
}

#[test]
fn mr_domains_generate_intensities() {
    let mut d = domain::preset("mr-t2-like").unwrap();
    d.pixel_spacing_mm = 1.2;
    let p = generate(&spec(71, Vertebra::L1, Vertebra::L3, 96, d)).unwrap();
    assert_eq!(p.modality, domain::Modality::MrT2Like);
    assert!(p.ct.data().iter().all(|v| *v >= 0.0));
}

#[test]
fn odd_specs_are_errors_not_panics() {
    let d = ct(1.0, 2.0);
    let bad = |s: PhantomSpec| match generate_clean(&s) {
        Err(Error::InvalidArgument(_) | Error::Geometry(_)) => {}
        other => panic!("expected an error, got {:?}", other.map(|p| p.ct.dims())),
    };
    bad(spec(1, Vertebra::L3, Vertebra::L1, 64, d.clone()));
    bad(spec(1, Vertebra::L1, Vertebra::L3, 0, d.clone()));
    let mut s = spec(1, Vertebra::L1, Vertebra::L3, 64, d.clone());
    s.slices = Some(0);
    bad(s.clone());
    s.slices = None;
    s.lesions = LesionPlan::Random { rate: f64::NAN };
    bad(s.clone());
    let one = |kind, vertebra| LesionPlan::Explicit {
        lesions: vec![LesionRequest { kind, vertebra }],
    };
    s.lesions = one(LesionKind::Lytic, Vertebra::C1);
    bad(s.clone());
    s.lesions = one(LesionKind::Lytic, Vertebra::T4);
    bad(s.clone());
    s.lesions = one(
        LesionKind::Fracture {
            grade: 4,
            shape: FractureShape::Wedge,
        },
        Vertebra::L2,
    );
    bad(s.clone());
    s.lesions = one(LesionKind::Infection, Vertebra::L3);
    bad(s.clone());
    let mut huge = spec(1, Vertebra::C1, Vertebra::L5, 2048, d.clone());
    huge.slices = Some(4000);
    bad(huge);
    let mut bad_domain = spec(1, Vertebra::L1, Vertebra::L3, 64, d.clone());
    bad_domain.domain.pixel_spacing_mm = -1.0;
    bad(bad_domain);
    // Tiny but valid grids work.
    let mut tiny = spec(1, Vertebra::L1, Vertebra::L1, 1, d.clone());
    tiny.slices = Some(1);
    assert_eq!(generate_clean(&tiny).unwrap().ct.dims(), [1, 1, 1]);
    let thin = spec(1, Vertebra::C1, Vertebra::L5, 8, d);
    assert!(generate_clean(&thin).is_ok());
}
