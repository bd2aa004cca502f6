//! Evaluation and inference on constructed cases with hand-computed answers: a perfect
//! prediction (Dice 1, ID 1, AP 1), a shifted one, the Wilcoxon/Holm comparison, the lesion
//! decoding as the exact inverse of the trainer's targets, and sliding-window stitching of a
//! tiny network (one window reproduces the plain forward pass).

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};
use vertebra_core::anatomy::{LesionClass, Vertebra};
use vertebra_core::metrics::{LesionBox, TruthLesion};
use vertebra_core::phantom::LesionTruth;
use vertebra_core::postprocess::{
    DenseOutputs, LesionConfig, LesionMaps, LesionPeak, PostprocessConfig, decode_lesions,
    postprocess,
};
use vertebra_core::stats::BootstrapConfig;
use vertebra_core::{Geometry, Volume};
use vertebra_model::{VertebraFormerConfig, VertebraFormerInput};
use vertebra_trainer::evaluate::{
    aggregate, case_metrics, compare, comparisons_markdown, prepared_case_metrics, truth_lesions,
};
use vertebra_trainer::infer::{InferConfig, infer_case, sliding_window};
use vertebra_trainer::manifest::Annotations;
use vertebra_trainer::preprocess::{PreparedCase, WindowSpec, window_at};

/// Two 12 × 12 × 10 mm boxes on a 1 mm grid of 24 × 24 × 30: L1 at z 15..25, L2 at
/// z 4..14 (a 1 mm disc between), both x, y in `4 + dx .. 16 + dx`.
fn column(dx: usize) -> Volume<u8> {
    let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
    let mut v = Volume::filled([24, 24, 30], 0u8, g).unwrap();
    for (label, z0) in [(Vertebra::L1, 15), (Vertebra::L2, 4)] {
        for z in z0..z0 + 10 {
            for y in 4..16 {
                for x in 4 + dx..16 + dx {
                    let i = v.index(x, y, z);
                    v.data_mut()[i] = label.label();
                }
            }
        }
    }
    v
}

fn perfect_findings(labels: &Volume<u8>) -> vertebra_core::postprocess::CaseFindings {
    let dense = DenseOutputs {
        foreground_prob: labels.map(|&l| f32::from(u8::from(l > 0))),
        label_argmax: labels.clone(),
    };
    // The test vertebrae are 12 × 12 × 10 mm boxes (1.44 cm³): below the default instance
    // minimum of 2.5 cm³, so the minimum is lowered for them.
    let mut config = PostprocessConfig::default();
    config.instances.min_instance_mm3 = 1000.0;
    postprocess(&dense, None, None, &config).unwrap()
}

fn truth_lesion() -> TruthLesion {
    TruthLesion {
        class: LesionClass::LyticMetastasis,
        bbox: LesionBox {
            centre_mm: [10.0, 10.0, 20.0],
            size_mm: [10.0, 10.0, 10.0],
        },
    }
}

fn peak(class: LesionClass, centre: [f64; 3], score: f64) -> LesionPeak {
    LesionPeak {
        class,
        score,
        cell: [0; 3],
        centre_world: centre,
        size_mm: [10.0; 3],
        instance: None,
        instance_distance_mm: 0.0,
    }
}

fn small_bootstrap() -> BootstrapConfig {
    BootstrapConfig {
        n_resamples: 500,
        ..BootstrapConfig::default()
    }
}

#[test]
fn perfect_prediction_scores_one_everywhere() {
    let truth = column(0);
    let mut cases = Vec::new();
    for (i, patient) in ["p1", "p1", "p2", "p3"].iter().enumerate() {
        let mut f = perfect_findings(&truth);
        f.lesions = vec![peak(LesionClass::LyticMetastasis, [10.0, 10.0, 20.0], 0.9)];
        let m = case_metrics(
            &format!("c{i}"),
            patient,
            &f,
            &truth,
            Some(&[truth_lesion()]),
        )
        .unwrap();
        for k in [
            "dice_binary",
            "dice_mean",
            "id_accuracy",
            "id_accuracy_raw",
            "verse_id_rate",
            "instances_per_vertebra",
        ] {
            assert_eq!(m.values[k], Some(1.0), "{k}");
        }
        assert_eq!(m.values["dice_mean_lumbar"], Some(1.0));
        assert_eq!(m.values["id_accuracy_lumbar"], Some(1.0));
        assert_eq!(m.values["dice_mean_cervical"], None);
        cases.push(m);
    }
    let e = aggregate("perfect", cases, &small_bootstrap()).unwrap();
    for k in [
        "dice_mean",
        "id_accuracy",
        "lesion_ap_macro",
        "lesion_ap_lytic_metastasis",
        "lesion_precision",
        "lesion_recall",
        "lesion_sens_at_1fp",
    ] {
        let m = e.metric(k).unwrap_or_else(|| panic!("{k} missing"));
        assert_eq!(m.estimate, 1.0, "{k}");
        assert_eq!((m.ci_low, m.ci_high), (Some(1.0), Some(1.0)), "{k}");
        assert_eq!(m.n_patients, 3, "{k}");
    }
    assert!(
        e.metric("lesion_ap_fracture").is_none(),
        "no fracture truth: no AP"
    );
    let md = e.to_markdown();
    assert!(
        md.contains("| dice_mean | 1.0000 | [1.0000, 1.0000] | 4 | 3 |"),
        "{md}"
    );
    let json = e.to_json().unwrap();
    assert!(
        json.contains("\"dice_mean\"") && !json.contains("p1"),
        "no patient ids in JSON"
    );
}

#[test]
fn shifted_prediction_has_hand_computed_scores() {
    let truth = column(0);
    // Shifted by 1 mm along x: per vertebra overlap 11·12·10 of 1440 → Dice 2·1320/2880.
    let mut f = perfect_findings(&column(1));
    // Lesion: a false positive scored above the true one (3 mm off: IoU 700/1300 ≥ 0.3, 3 mm
    // ≤ 5 mm), and a fracture false positive.
    f.lesions = vec![
        peak(LesionClass::LyticMetastasis, [60.0, 60.0, 60.0], 0.95),
        peak(LesionClass::LyticMetastasis, [13.0, 10.0, 20.0], 0.8),
        peak(LesionClass::Fracture, [10.0, 10.0, 5.0], 0.5),
    ];
    let m = case_metrics("c0", "p0", &f, &truth, Some(&[truth_lesion()])).unwrap();
    let d = 2640.0 / 2880.0;
    assert!((m.values["dice_mean"].unwrap() - d).abs() < 1e-12);
    assert!((m.values["dice_binary"].unwrap() - d).abs() < 1e-12);
    assert_eq!(m.values["id_accuracy"], Some(1.0));
    // Centroids move by 1 mm: within 20 mm.
    assert_eq!(m.values["verse_id_rate"], Some(1.0));
    let e = aggregate("shifted", vec![m], &small_bootstrap()).unwrap();
    let get = |k: &str| e.metric(k).unwrap().estimate;
    // Lytic ranking: FP (0.95) then TP (0.8): AP = (1 − 0)·(1/2) = 0.5; one class with truth.
    assert!((get("lesion_ap_lytic_metastasis") - 0.5).abs() < 1e-12);
    assert!((get("lesion_ap_macro") - 0.5).abs() < 1e-12);
    // Pooled: 1 TP of 3 predictions; recall 1.
    assert!((get("lesion_precision") - 1.0 / 3.0).abs() < 1e-12);
    assert!((get("lesion_recall") - 1.0).abs() < 1e-12);
    // One image: at ≤ 1 FP the threshold 0.8 (1 FP) reaches the TP; at ≤ 4 FP all.
    assert_eq!(get("lesion_sens_at_1fp"), 1.0);
    assert_eq!(get("lesion_sens_at_4fp"), 1.0);
    assert!(
        e.metric("dice_mean").unwrap().ci_low.is_none(),
        "one patient: no CI"
    );
    // A wrong decoded label: relabel instance 1 (L1) as T12 → ID 1/2, region thoracic absent
    // in truth → undefined.
    let mut g = perfect_findings(&truth);
    g.vertebrae[0].vertebra = Vertebra::T12;
    let m = case_metrics("c1", "p1", &g, &truth, None).unwrap();
    assert_eq!(m.values["id_accuracy"], Some(0.5));
    assert_eq!(m.values["id_accuracy_raw"], Some(1.0));
    assert_eq!(m.values["id_accuracy_thoracic"], None);
    // L1 labelled T12: Dice of L1 0, of L2 1, of T12 (predicted only) 0 → mean 1/3.
    assert!((m.values["dice_mean"].unwrap() - 1.0 / 3.0).abs() < 1e-12);
}

#[test]
fn comparison_uses_wilcoxon_and_holm() {
    let truth = column(0);
    let make = |name: &str, shifts: &[usize]| {
        let cases = shifts
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let f = perfect_findings(&column(s));
                case_metrics(&format!("c{i}"), &format!("p{i}"), &f, &truth, None).unwrap()
            })
            .collect();
        aggregate(name, cases, &small_bootstrap()).unwrap()
    };
    // Baseline shifted 1..=6 mm (different Dice per case), model perfect: six positive
    // differences, all distinct → exact two-sided p = 2/2⁶ = 0.03125. ID accuracy is 1 in
    // both (no differences) → p = 1. Holm: 0.0625 and 1.
    let base = make("baseline", &[1, 2, 3, 4, 5, 6]);
    let model = make("model", &[0, 0, 0, 0, 0, 0]);
    let rows = compare(&base, &model, &["dice_mean", "id_accuracy"], 0.05).unwrap();
    assert!((rows[0].p_value - 0.03125).abs() < 1e-12, "{rows:?}");
    assert!((rows[0].p_adjusted - 0.0625).abs() < 1e-12);
    assert!(!rows[0].significant);
    assert!(rows[0].mean_difference > 0.0);
    assert_eq!(rows[1].p_value, 1.0);
    assert_eq!(rows[1].p_adjusted, 1.0);
    let md = comparisons_markdown(&rows);
    assert!(md.contains("| dice_mean | model | baseline |"), "{md}");
    assert!(compare(&base, &model, &["nope"], 0.05).is_err());
}

#[test]
fn lesion_targets_decode_to_their_annotations() {
    // A 16³ case at 2 mm whose window is the whole volume, so the window's grid is the case's.
    let g = Geometry::axis_aligned([2.0; 3], [10.0, 20.0, 30.0]);
    let image = Volume::filled([16, 16, 16], 0.5f32, g).unwrap();
    let lesion = |class, v: [f64; 3], size_mm| LesionTruth {
        class,
        is_target: true,
        vertebra: Vertebra::L1,
        partner: None,
        centre: g.voxel_to_world(v),
        size_mm,
        voxels: 10,
        genant_grade: None,
        fracture_shape: None,
        height_loss: None,
    };
    let truths = vec![
        lesion(
            LesionClass::LyticMetastasis,
            [6.25, 7.0, 9.0],
            [4.0, 6.0, 8.0],
        ),
        lesion(LesionClass::Fracture, [2.6, 12.3, 3.9], [10.0, 3.0, 5.5]),
    ];
    let case = PreparedCase {
        id: "c".into(),
        domain: "ct-standard".into(),
        image,
        labels: None,
        lesions: Some(truths.clone()),
        annotations: Annotations {
            masks: false,
            ids: false,
            lesions: true,
        },
        centroids: Vec::new(),
    };
    let spec = WindowSpec {
        window: [16, 16, 16],
        spacing_mm: 2.0,
        lesion_stride: 4,
        min_instance_voxels: 1,
    };
    let centre = g.voxel_to_world([7.5, 7.5, 7.5]);
    let s = window_at(&case, centre, &spec).unwrap();
    let t = s.lesions.unwrap();
    assert_eq!(t.count, 2);
    // Heatmap values → logits (the peak of 1 → a large logit).
    let logit = |h: f32| {
        if h >= 1.0 {
            20.0
        } else if h <= 0.0 {
            -20.0
        } else {
            (h / (1.0 - h)).ln()
        }
    };
    let maps = LesionMaps {
        stride: 4,
        grid: [4, 4, 4],
        heatmap_logits: t.heatmap.iter().map(|&h| logit(h)).collect(),
        offset: t.offset.clone(),
        log_size: t.log_size.clone(),
    };
    let config = LesionConfig {
        threshold: 0.99,
        ..LesionConfig::default()
    };
    let peaks = decode_lesions(&maps, &g, &config).unwrap();
    assert_eq!(peaks.len(), 2, "{peaks:?}");
    for truth in &truths {
        let p = peaks.iter().find(|p| p.class == truth.class).unwrap();
        for k in 0..3 {
            assert!(
                (p.centre_world[k] - truth.centre[k]).abs() < 1e-4,
                "{:?}: centre {:?} vs {:?}",
                truth.class,
                p.centre_world,
                truth.centre
            );
            assert!(
                (p.size_mm[k] - truth.size_mm[k]).abs() < 1e-4,
                "{:?}: size {:?} vs {:?}",
                truth.class,
                p.size_mm,
                truth.size_mm
            );
        }
    }
}

#[test]
fn one_window_stitching_reproduces_the_forward_pass_and_inference_runs() {
    let config = VertebraFormerConfig::tiny();
    let device = Device::flex();
    let model = config.init(&device).unwrap();
    let [wz, wy, wx] = config.window;
    // A case exactly one window large: one window, Gaussian weights cancel.
    let g = Geometry::axis_aligned([config.spacing_mm; 3], [0.0; 3]);
    let data: Vec<f32> = (0..wx * wy * wz)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    let image = Volume::from_vec([wx, wy, wz], data.clone(), g).unwrap();
    let case = PreparedCase {
        id: "c".into(),
        domain: "ct-standard".into(),
        image,
        labels: None,
        lesions: None,
        annotations: Annotations {
            masks: false,
            ids: false,
            lesions: false,
        },
        centroids: Vec::new(),
    };
    let ic = InferConfig::default();
    let st = sliding_window(&model, &case, &device, &ic).unwrap();
    assert_eq!(st.windows, 1);
    let t = Tensor::<5>::from_data(TensorData::new(data, [1, 1, wz, wy, wx]), &device);
    let out = model
        .valid()
        .forward(VertebraFormerInput::from_image(t))
        .unwrap();
    let logit = out.vertebra_logit.into_data().try_to_vec::<f32>().unwrap();
    for (i, (&p, &l)) in st
        .dense
        .foreground_prob
        .data()
        .iter()
        .zip(&logit)
        .enumerate()
    {
        let want = 1.0 / (1.0 + (-l).exp());
        assert!((p - want).abs() < 1e-5, "voxel {i}: {p} vs {want}");
    }
    // A case 1.5 windows long along x: windows at x 0 and 16 (overlap 0.5 of 32, stride
    // aligned); the outputs cover the case grid.
    let big = Volume::filled([wx + wx / 2, wy, wz], 0.3f32, g).unwrap();
    let case = PreparedCase { image: big, ..case };
    let inf = infer_case(&model, &case, &device, &ic).unwrap();
    assert_eq!(inf.outputs.windows, 2);
    assert_eq!(
        inf.outputs.dense.foreground_prob.dims(),
        [wx + wx / 2, wy, wz]
    );
    assert!(
        inf.outputs
            .dense
            .foreground_prob
            .data()
            .iter()
            .all(|p| (0.0..=1.0).contains(p))
    );
    let l = inf
        .outputs
        .lesions
        .as_ref()
        .expect("tiny has a lesion head");
    assert_eq!(
        l.grid,
        [wz / l.stride, wy / l.stride, (wx + wx / 2) / l.stride]
    );
    assert!(
        sliding_window(&model, &case, &device.clone().autodiff(), &ic).is_err(),
        "autodiff devices are refused"
    );
    // The untrained network's findings evaluate end to end against a label map.
    assert!(
        prepared_case_metrics(&case, "p", &inf.findings).is_err(),
        "no labels"
    );
    let labels = Volume::filled([wx + wx / 2, wy, wz], 0u8, g).unwrap();
    let case = PreparedCase {
        labels: Some(labels),
        ..case
    };
    let m = prepared_case_metrics(&case, "p", &inf.findings).unwrap();
    assert!(m.values["dice_binary"].is_some());
}

#[test]
fn only_target_lesions_are_truths() {
    let l = |is_target, class| LesionTruth {
        class,
        is_target,
        vertebra: Vertebra::L1,
        partner: None,
        centre: [1.0, 2.0, 3.0],
        size_mm: [4.0, 5.0, 6.0],
        voxels: 10,
        genant_grade: None,
        fracture_shape: None,
        height_loss: None,
    };
    let t = truth_lesions(&[
        l(false, LesionClass::Fracture),
        l(true, LesionClass::ScleroticMetastasis),
    ]);
    assert_eq!(t.len(), 1);
    assert_eq!(t[0].class, LesionClass::ScleroticMetastasis);
    assert_eq!(t[0].bbox.centre_mm, [1.0, 2.0, 3.0]);
    assert_eq!(t[0].bbox.size_mm, [4.0, 5.0, 6.0]);
}
