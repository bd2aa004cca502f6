//! Post-processing on constructed outputs with hand-computed answers and on phantoms with
//! known ground truth: instance splitting and growth, fragment removal, cuboid body heights and
//! core HU, Genant grades of phantom wedge fractures, and the whole pipeline on a phantom
//! column with a shifted vote.

use vertebra_core::anatomy::{GenantGrade, LesionClass, Vertebra};
use vertebra_core::phantom::{
    FractureShape, LesionKind, LesionPlan, LesionRequest, PhantomSpec, domain, generate_clean,
};
use vertebra_core::postprocess::instances::DEFAULT_MIN_INSTANCE_MM3;
use vertebra_core::postprocess::{
    CaseFindings, DenseOutputs, IdSource, InstanceConfig, LesionMaps, MeasureConfig,
    PostprocessConfig, extract_instances, measure_vertebrae, postprocess,
};
use vertebra_core::{Geometry, Volume};

fn grid(dims: [usize; 3], spacing: f64) -> (Volume<f32>, Volume<u8>) {
    let g = Geometry::axis_aligned([spacing; 3], [0.0; 3]);
    (
        Volume::filled(dims, 0.0f32, g).unwrap(),
        Volume::filled(dims, 0u8, g).unwrap(),
    )
}

/// Sets `prob = 1` and `label` in the box `lo..hi` (x, y, z, exclusive).
fn paint(prob: &mut Volume<f32>, lab: &mut Volume<u8>, lo: [usize; 3], hi: [usize; 3], label: u8) {
    for z in lo[2]..hi[2] {
        for y in lo[1]..hi[1] {
            for x in lo[0]..hi[0] {
                let i = prob.index(x, y, z);
                prob.data_mut()[i] = 1.0;
                lab.data_mut()[i] = label;
            }
        }
    }
}

/// The boxes of these tests are 1.3–1.4 cm³: instances down to 1000 mm³ (the default is
/// 2500 mm³, see the module docs of `instances`).
fn small_boxes() -> InstanceConfig {
    InstanceConfig {
        min_instance_mm3: 1000.0,
        ..InstanceConfig::default()
    }
}

#[test]
fn touching_vertebrae_are_split_by_label_and_fragments_dropped() {
    // 1 mm grid. Two 12 × 12 × 10 boxes stacked along z and touching: the binary mask is one
    // component; the label argmax says L1 (upper, larger z) and L2 (lower).
    let (mut p, mut l) = grid([20, 20, 40], 1.0);
    paint(
        &mut p,
        &mut l,
        [4, 4, 20],
        [16, 16, 30],
        Vertebra::L1.label(),
    );
    paint(
        &mut p,
        &mut l,
        [4, 4, 10],
        [16, 16, 20],
        Vertebra::L2.label(),
    );
    // Inside L2, a 2×2×2 speckle voted L3 and a slab of 12×12×1 voted background: both join
    // L2 by growth (the L2 seed keeps 1440 − 8 − 144 = 1288 voxels).
    paint(&mut p, &mut l, [7, 7, 12], [9, 9, 14], Vertebra::L3.label());
    paint(&mut p, &mut l, [4, 4, 10], [16, 16, 11], 0);
    // A separate 3³ = 27 mm³ fragment: below the 1000 mm³ threshold, dropped.
    paint(&mut p, &mut l, [0, 0, 0], [3, 3, 3], Vertebra::T1.label());
    let inst = extract_instances(&p, &l, &small_boxes()).unwrap();
    assert_eq!(inst.instances.len(), 2, "{:?}", inst.instances);
    let (a, b) = (&inst.instances[0], &inst.instances[1]);
    // Cranio-caudal: L1 (z 20..30) first.
    assert_eq!((a.id, a.majority_label), (1, Vertebra::L1.label()));
    assert_eq!((b.id, b.majority_label), (2, Vertebra::L2.label()));
    assert_eq!(a.voxel_count, 1440);
    assert_eq!(b.voxel_count, 1440);
    assert_eq!(b.volume_mm3, 1440.0);
    assert_eq!(a.centroid_world, [9.5, 9.5, 24.5]);
    assert_eq!(b.bbox_voxels.min, [4, 4, 10]);
    assert_eq!(b.bbox_voxels.max, [15, 15, 19]);
    assert_eq!(b.edge_box_zyx(), ([10.0, 4.0, 4.0], [20.0, 16.0, 16.0]));
    assert_eq!(b.label_histogram[Vertebra::L3.label() as usize], 8);
    assert_eq!(b.label_histogram[0], 144);
    assert_eq!(b.label_histogram[Vertebra::L2.label() as usize], 1288);
    assert!(!a.touches_border);
    // Vote probabilities: f = 1288/1296 for L2 → (f + 0.01) / 1.25.
    let v = b.vote_probabilities();
    assert!((v[Vertebra::L2.ordinal()] - (1288.0 / 1296.0 + 0.01) / 1.25).abs() < 1e-12);
    assert!((v.iter().sum::<f64>() - 1.0).abs() < 1e-12);
    // The id map: the speckle and the background slab belong to L2's instance, the fragment
    // to none.
    assert_eq!(inst.ids[[7, 7, 12]], 2);
    assert_eq!(inst.ids[[5, 5, 10]], 2);
    assert_eq!(inst.ids[[0, 0, 0]], 0);
    // With a 20 mm³ threshold the fragment stays and touches the border.
    let small = InstanceConfig {
        min_seed_mm3: 20.0,
        min_instance_mm3: 20.0,
        ..InstanceConfig::default()
    };
    let inst = extract_instances(&p, &l, &small).unwrap();
    assert_eq!(inst.instances.len(), 3);
    assert!(inst.instances[2].touches_border);
    assert_eq!(inst.instances[2].voxel_count, 27);
}

#[test]
fn a_seedless_piece_becomes_one_instance_and_bad_inputs_fail() {
    let (mut p, mut l) = grid([12, 12, 12], 1.0);
    // Foreground whose argmax is background everywhere (11³ = 1331 mm³ ≥ 1000).
    paint(&mut p, &mut l, [0, 0, 0], [11, 11, 11], 0);
    let inst = extract_instances(&p, &l, &small_boxes()).unwrap();
    assert_eq!(inst.instances.len(), 1);
    assert_eq!(inst.instances[0].majority_label, 0);
    let v = inst.instances[0].vote_probabilities();
    assert!(v.iter().all(|&x| (x - 0.04).abs() < 1e-12));
    l.data_mut()[0] = 26;
    let e = extract_instances(&p, &l, &InstanceConfig::default()).unwrap_err();
    assert!(e.to_string().contains("not a segmentation class"), "{e}");
    let (p2, _) = grid([5, 5, 5], 1.0);
    assert!(
        extract_instances(&p2, &grid([12, 12, 12], 1.0).1, &InstanceConfig::default()).is_err()
    );
}

/// A wedge-shaped body with a posterior arch on a 1 mm grid (+y is posterior):
/// body x 10..30, y 10..40; heights along z: y 10..20 → 16 mm (z 10..26), y 20..30 → 20 mm
/// (z 8..28), y 30..40 → 25 mm (z 5..30); arch x 15..25, y 45..55, z 12..24 behind a 5 mm
/// canal gap (no pedicles: the arch is joined to the body because it lies at the same level).
/// HU: 800 on the mask's 6-neighbourhood surface, 200 inside.
fn wedge_cuboid() -> (Volume<f32>, Volume<u8>, Volume<f32>) {
    let (mut p, mut l) = grid([40, 60, 40], 1.0);
    let label = Vertebra::L1.label();
    paint(&mut p, &mut l, [10, 10, 10], [30, 20, 26], label);
    paint(&mut p, &mut l, [10, 20, 8], [30, 30, 28], label);
    paint(&mut p, &mut l, [10, 30, 5], [30, 40, 30], label);
    paint(&mut p, &mut l, [15, 45, 12], [25, 55, 24], label);
    let mut hu = p.map(|_| -100.0f32);
    for i in 0..p.len() {
        if l.data()[i] == 0 {
            continue;
        }
        let [x, y, z] = p.coords(i);
        let surface = [
            [1, 0, 0],
            [-1, 0, 0],
            [0, 1, 0],
            [0, -1, 0],
            [0, 0, 1],
            [0, 0, -1],
        ]
        .iter()
        .any(|d: &[isize; 3]| {
            let q = [x as isize + d[0], y as isize + d[1], z as isize + d[2]];
            l.get(q[0] as usize, q[1] as usize, q[2] as usize) != Some(&label)
        });
        hu.data_mut()[i] = if surface { 800.0 } else { 200.0 };
    }
    (p, l, hu)
}

#[test]
fn cuboid_heights_losses_grade_and_core_hu_are_hand_computed() {
    let (p, l, hu) = wedge_cuboid();
    let inst = extract_instances(&p, &l, &InstanceConfig::default()).unwrap();
    assert_eq!(inst.instances.len(), 1);
    let m = measure_vertebrae(&inst, Some(&hu), &MeasureConfig::default()).unwrap();
    let m = &m[0];
    let h = m.heights.expect("heights");
    // Body depth 30 bins: anterior = bins at depth <= 20 % (y 10..15) → 16 mm; middle = median
    // of y 22..27 → 20 mm; posterior = y 34..39 → 25 mm.
    assert_eq!(h.depth_mm, 30.0);
    assert_eq!(h.anterior_mm, 16.0);
    assert_eq!(h.middle_mm, 20.0);
    assert_eq!(h.posterior_mm, 25.0);
    assert!((m.wedge_loss.unwrap() - 0.36).abs() < 1e-12);
    assert!((m.biconcave_loss.unwrap() - 0.2).abs() < 1e-12);
    assert_eq!(m.crush_loss, None, "a lone vertebra has no neighbours");
    assert!((m.height_loss.unwrap() - 0.36).abs() < 1e-12);
    assert_eq!(m.genant, Some(GenantGrade::Moderate));
    // 2 mm erosion removes the 1-voxel 800 HU shell entirely; the arch is outside the body.
    assert_eq!(m.core_mean_hu, Some(200.0));
    assert!(m.core_voxels > 1000, "{}", m.core_voxels);
    // Volume: 20·10·16 + 20·10·20 + 20·10·25 + 10·10·12 mm³.
    assert_eq!(m.volume_mm3, (3200 + 4000 + 5000 + 1200) as f64);
}

fn fractured_phantom() -> vertebra_core::phantom::Phantom {
    let mut d = domain::preset("ct-standard").unwrap();
    d.pixel_spacing_mm = 1.0;
    d.slice_spacing_mm = 1.0;
    d.slice_thickness_mm = 1.0;
    let mut s = PhantomSpec::new(21, Vertebra::T12, Vertebra::L4, d);
    s.in_plane = 128;
    let wedge = |grade, v| LesionRequest {
        kind: LesionKind::Fracture {
            grade,
            shape: FractureShape::Wedge,
        },
        vertebra: v,
    };
    s.lesions = LesionPlan::Explicit {
        lesions: vec![wedge(3, Vertebra::L1), wedge(2, Vertebra::L3)],
    };
    generate_clean(&s).unwrap()
}

#[test]
fn phantom_wedge_fractures_get_their_genant_grade() {
    let ph = fractured_phantom();
    let dense = DenseOutputs {
        foreground_prob: ph.labels.map(|&l| f32::from(u8::from(l > 0))),
        label_argmax: ph.labels.clone(),
    };
    let f = postprocess(&dense, None, Some(&ph.ct), &PostprocessConfig::default()).unwrap();
    assert_eq!(f.id_source, IdSource::Votes);
    assert!(f.order_decoded);
    for v in &f.vertebrae {
        assert_eq!(v.vertebra, v.raw_vertebra, "perfect votes are kept");
        assert_eq!(v.vertebra.label(), v.instance.majority_label);
    }
    let by = |v: Vertebra| {
        f.vertebrae
            .iter()
            .find(|x| x.vertebra == v)
            .unwrap_or_else(|| panic!("{} not found", v.name()))
    };
    for lesion in &ph.lesions {
        let m = &by(lesion.vertebra).measurement;
        let truth = lesion.height_loss.unwrap();
        let got = m.wedge_loss.expect("wedge loss");
        assert!(
            (got - truth).abs() < 0.06,
            "{}: measured wedge loss {got:.3}, truth {truth:.3}, {m:?}",
            lesion.vertebra.name()
        );
        eprintln!(
            "{}: wedge loss measured {got:.3}, truth {truth:.3}",
            lesion.vertebra.name()
        );
        assert_eq!(
            m.genant.map(|g| g as u8),
            lesion.genant_grade,
            "{}: {m:?} truth {truth:.3}",
            lesion.vertebra.name()
        );
    }
    // Unfractured, fully imaged vertebrae grade 0 and have trabecular core HU.
    for v in [Vertebra::T12, Vertebra::L2, Vertebra::L4] {
        let m = &by(v).measurement;
        assert_eq!(m.genant, Some(GenantGrade::Normal), "{}: {m:?}", v.name());
        let hu = m.core_mean_hu.unwrap();
        assert!((50.0..400.0).contains(&hu), "{}: core {hu} HU", v.name());
    }
}

#[test]
fn phantom_column_with_a_wrong_vote_is_decoded_and_a_lesion_assigned() {
    let ph = fractured_phantom();
    // The model votes L4 for all of L2 (not touching the real L4, so still its own
    // instance): the column puts it back.
    let argmax = ph.labels.map(|&l| {
        if l == Vertebra::L2.label() {
            Vertebra::L4.label()
        } else {
            l
        }
    });
    let dense = DenseOutputs {
        foreground_prob: ph.labels.map(|&l| f32::from(u8::from(l > 0))),
        label_argmax: argmax,
    };
    // One lytic-class peak at the L1 centroid: a 4-stride map over the whole grid.
    let dims = ph.labels.dims();
    let s = 4usize;
    let grid = [
        dims[2].div_ceil(s),
        dims[1].div_ceil(s),
        dims[0].div_ceil(s),
    ];
    let cells: usize = grid.iter().product();
    let mut maps = LesionMaps {
        stride: s,
        grid,
        heatmap_logits: vec![-8.0; 4 * cells],
        offset: vec![0.5; 3 * cells],
        log_size: vec![2.0f32.ln(); 3 * cells],
    };
    let c = ph
        .centroids
        .iter()
        .find(|c| c.vertebra == Vertebra::L1)
        .unwrap()
        .world;
    let v = ph.labels.geometry().world_to_voxel(c);
    let cell = [v[2], v[1], v[0]].map(|x| ((x + 0.5) / s as f64).floor() as usize);
    let at = (cell[0] * grid[1] + cell[1]) * grid[2] + cell[2];
    maps.heatmap_logits[LesionClass::LyticMetastasis.index() * cells + at] = 3.0;
    let f = postprocess(&dense, Some(&maps), None, &PostprocessConfig::default()).unwrap();
    let names: Vec<&str> = f.vertebrae.iter().map(|v| v.vertebra.name()).collect();
    // Truth: every vertebra with at least the instance minimum in the field of view (a sliver of the one
    // above is a fragment).
    let voxel_mm3 = ph.labels.geometry().voxel_volume_mm3();
    let truth: Vec<&str> = ph
        .centroids
        .iter()
        .filter(|c| c.voxels as f64 * voxel_mm3 >= DEFAULT_MIN_INSTANCE_MM3)
        .map(|c| c.vertebra.name())
        .collect();
    assert!(truth.len() >= 6, "{truth:?}");
    assert_eq!(names, truth);
    let l2 = f
        .vertebrae
        .iter()
        .find(|v| v.vertebra == Vertebra::L2)
        .unwrap();
    assert_eq!(l2.raw_vertebra, Vertebra::L4);
    // The label map of the decoded labels equals the truth except on the dropped sliver.
    let pred = f.label_map();
    let mut wrong = std::collections::BTreeMap::new();
    for (&p, &t) in pred.data().iter().zip(ph.labels.data()) {
        let kept = Vertebra::from_label(t).is_some_and(|v| truth.contains(&v.name()));
        if p != if kept { t } else { 0 } {
            *wrong.entry((p, t)).or_insert(0usize) += 1;
        }
    }
    // A stray voxel of one label touching its neighbour joins the neighbour by growth, and
    // the sliver of T10 that the field of view keeps — the tip of its spinous process, at
    // T11's level — joins T11 (same-level merge; measured 552 voxels, 0.22 %).
    let labelled = ph.labels.data().iter().filter(|&&t| t > 0).count();
    assert!(
        wrong.values().sum::<usize>() * 1000 <= 3 * labelled,
        "(predicted, truth): voxels {wrong:?} of {labelled}"
    );
    assert_eq!(f.lesions.len(), 1);
    let les = &f.lesions[0];
    assert_eq!(les.class, LesionClass::LyticMetastasis);
    let l1 = f
        .vertebrae
        .iter()
        .find(|v| v.vertebra == Vertebra::L1)
        .unwrap();
    assert_eq!(les.instance, Some(l1.instance.id));
    // Centre = cell centre (offset 0.5): within half a cell diagonal of the centroid.
    let d: f64 = (0..3)
        .map(|k| (les.centre_world[k] - c[k]).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(d <= 2.0 * 3f64.sqrt() + 1e-9, "{d}");
    assert!(les.size_mm.iter().all(|&x| (x - 2.0).abs() < 1e-5));
}

#[test]
fn two_touching_vertebrae_with_one_label_are_split_at_the_disc() {
    let ph = fractured_phantom();
    // The model votes L3 for all of L2: L2 and L3 touch at the facet joints, so the label
    // map makes them one piece; it is twice as tall as the others and is cut at the disc.
    let argmax = ph.labels.map(|&l| {
        if l == Vertebra::L2.label() {
            Vertebra::L3.label()
        } else {
            l
        }
    });
    let dense = DenseOutputs {
        foreground_prob: ph.labels.map(|&l| f32::from(u8::from(l > 0))),
        label_argmax: argmax,
    };
    let f = postprocess(&dense, None, None, &PostprocessConfig::default()).unwrap();
    let voxel_mm3 = ph.labels.geometry().voxel_volume_mm3();
    let truth: Vec<&str> = ph
        .centroids
        .iter()
        .filter(|c| c.voxels as f64 * voxel_mm3 >= DEFAULT_MIN_INSTANCE_MM3)
        .map(|c| c.vertebra.name())
        .collect();
    let names: Vec<&str> = f.vertebrae.iter().map(|v| v.vertebra.name()).collect();
    assert_eq!(names, truth);
    // The cut is a plane through the disc: the articular processes reach across the disc
    // level, so a few per cent of a vertebra (measured 4.6 % of L3) end on the wrong side.
    let pred = f.label_map();
    for v in [Vertebra::L2, Vertebra::L3] {
        let (mut n, mut wrong) = (0usize, 0usize);
        for (&p, &t) in pred.data().iter().zip(ph.labels.data()) {
            if t == v.label() {
                n += 1;
                wrong += usize::from(p != t);
            }
        }
        assert!(
            wrong * 100 <= 6 * n,
            "{}: {wrong} of {n} voxels mislabelled",
            v.name()
        );
    }
}

/// A column imaged at the model's 2 mm grid, every vertebra given one label.
fn column_with_one_label(
    seed: u64,
    from: Vertebra,
    to: Vertebra,
) -> (Vec<Vertebra>, CaseFindings, Volume<u8>) {
    let mut d = domain::preset("ct-standard").unwrap();
    d.pixel_spacing_mm = 2.0;
    d.slice_spacing_mm = 2.0;
    d.slice_thickness_mm = 2.0;
    let mut s = PhantomSpec::new(seed, from, to, d);
    s.in_plane = 96;
    s.lesions = LesionPlan::Explicit { lesions: vec![] };
    let ph = generate_clean(&s).unwrap();
    let dense = DenseOutputs {
        foreground_prob: ph.labels.map(|&l| f32::from(u8::from(l > 0))),
        label_argmax: ph
            .labels
            .map(|&l| if l > 0 { Vertebra::T6.label() } else { 0 }),
    };
    let f = postprocess(&dense, None, None, &PostprocessConfig::default()).unwrap();
    let voxel_mm3 = ph.labels.geometry().voxel_volume_mm3();
    let truth = ph
        .centroids
        .iter()
        .filter(|c| c.voxels as f64 * voxel_mm3 >= DEFAULT_MIN_INSTANCE_MM3)
        .map(|c| c.vertebra)
        .collect();
    (truth, f, ph.labels)
}

#[test]
fn a_column_labelled_as_one_vertebra_is_split_at_its_discs() {
    // What a weakly trained network does: one label over many vertebrae, so the label argmax
    // seeds one instance per column. Before the disc-valley split, the post-processing
    // returned 1–3 instances for such columns and the decoding could not name them.
    // Measured on these seeds (2 mm grid): C3–T4 10 instances for 11 truth vertebrae (C2 and
    // a cut T5 included; 7 kept whole in an instance of their own), T5–T12 9 for 10 (9),
    // T11–L5 8 for 8 (8). Small cervical vertebrae are the hard part.
    for (seed, from, to) in [
        (3, Vertebra::C3, Vertebra::T4),
        (4, Vertebra::T5, Vertebra::T12),
        (5, Vertebra::T11, Vertebra::L5),
    ] {
        let (truth, f, labels) = column_with_one_label(seed, from, to);
        let span = format!("{}–{}", from.name(), to.name());
        let ratio = f.vertebrae.len() as f64 / truth.len() as f64;
        eprintln!(
            "{span}: {} truth vertebrae, {} instances",
            truth.len(),
            f.vertebrae.len()
        );
        assert!(
            (0.8..=1.2).contains(&ratio),
            "{span}: {ratio:.2} instances per vertebra"
        );
        // Most truth vertebrae lie mostly (≥ 80 %) in an instance of their own.
        let mut alone = 0;
        let mut owners = Vec::new();
        for v in &truth {
            let mut per = vec![0usize; f.vertebrae.len() + 1];
            let mut n = 0usize;
            for (&t, &id) in labels.data().iter().zip(f.instances.ids.data()) {
                if t == v.label() {
                    n += 1;
                    per[id as usize] += 1;
                }
            }
            let (id, best) = per.iter().enumerate().skip(1).max_by_key(|p| *p.1).unwrap();
            if best * 100 >= 80 * n {
                alone += 1;
                owners.push(id);
            }
        }
        owners.sort_unstable();
        owners.dedup();
        eprintln!(
            "{span}: {alone} of {} vertebrae ≥ 80 % in one instance, {} distinct instances",
            truth.len(),
            owners.len()
        );
        assert!(
            owners.len() * 10 >= 6 * truth.len(),
            "{span}: only {} vertebrae have an instance of their own",
            owners.len()
        );
    }
}
