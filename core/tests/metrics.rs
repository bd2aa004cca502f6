//! Checks `vertebra_core::metrics` against reference values from NumPy, SciPy and
//! scikit-learn, committed as JSON by `tests/fixtures/make_metric_fixtures.py` (see its
//! docstring for what each reference is). No Python is needed to run these tests.

use serde_json::Value;
use std::path::PathBuf;
use vertebra_core::anatomy::LesionClass;
use vertebra_core::metrics::{
    DetectionSummary, LabeledCentroid, LesionBox, LesionCase, MatchCriteria, PredictedLesion,
    ScoredDetection, TruthLesion, average_precision, binary_dice, binary_dice_slices,
    evaluate_lesions, froc_sensitivity, identification_accuracy, label_centroids, label_dice,
    linear_sum_assignment, match_lesions, verse_identification,
};
use vertebra_core::{Error, Geometry, Volume};

const TOL: f64 = 1e-9;
const MIN_CASES: usize = 20;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/metrics")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; regenerate with `$VERTEBRA_VENV/bin/python \
             core/tests/fixtures/make_metric_fixtures.py`",
            path.display()
        )
    });
    serde_json::from_str(&text).unwrap()
}

fn cases<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    let list = v[key]
        .as_array()
        .unwrap_or_else(|| panic!("fixture has no array {key}"));
    assert!(list.len() >= MIN_CASES, "{key}: only {} cases", list.len());
    list
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

fn u(v: &Value) -> usize {
    v.as_u64().unwrap_or_else(|| panic!("not an integer: {v}")) as usize
}

fn opt(v: &Value) -> Option<f64> {
    (!v.is_null()).then(|| f(v))
}

fn vec3(v: &Value) -> [f64; 3] {
    let a = v.as_array().unwrap();
    [f(&a[0]), f(&a[1]), f(&a[2])]
}

fn bytes(v: &Value) -> Vec<u8> {
    v.as_array().unwrap().iter().map(|x| u(x) as u8).collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= TOL
}

fn assert_opt(got: Option<f64>, want: &Value, what: &str) {
    match (got, opt(want)) {
        (None, None) => {}
        (Some(g), Some(w)) => assert!(close(g, w), "{what}: {g} vs {w}"),
        (g, w) => panic!("{what}: {g:?} vs {w:?}"),
    }
}

fn dims(v: &Value) -> [usize; 3] {
    let a = v.as_array().unwrap();
    [u(&a[0]), u(&a[1]), u(&a[2])]
}

fn geometry(v: &Value) -> Geometry {
    let d = v["direction"].as_array().unwrap();
    Geometry {
        spacing: vec3(&v["spacing"]),
        origin: vec3(&v["origin"]),
        direction: [vec3(&d[0]), vec3(&d[1]), vec3(&d[2])],
    }
}

fn unit_grid() -> Geometry {
    Geometry::axis_aligned([1.0; 3], [0.0; 3])
}

#[test]
fn label_dice_matches_numpy() {
    let fx = fixture("dice.json");
    for (i, c) in cases(&fx, "label_cases").iter().enumerate() {
        let d = dims(&c["dims"]);
        let pred = Volume::from_vec(d, bytes(&c["pred"]), unit_grid()).unwrap();
        let truth = Volume::from_vec(d, bytes(&c["truth"]), unit_grid()).unwrap();
        let got = label_dice(&pred, &truth).unwrap();
        let want = c["expected"]["per_label"].as_array().unwrap();
        assert_eq!(got.per_label.len(), want.len(), "case {i}");
        for (g, w) in got.per_label.iter().zip(want) {
            let w = w.as_array().unwrap();
            assert_eq!(g.label as usize, u(&w[0]), "case {i}");
            assert!(close(g.dice, f(&w[1])), "case {i} label {}", g.label);
            assert_eq!(
                (g.predicted_voxels, g.truth_voxels, g.overlap_voxels),
                (u(&w[2]) as u64, u(&w[3]) as u64, u(&w[4]) as u64),
                "case {i}"
            );
        }
        assert_opt(got.mean, &c["expected"]["mean"], &format!("case {i} mean"));
        assert!(
            close(got.foreground, f(&c["expected"]["foreground"])),
            "case {i}"
        );
    }
}

#[test]
fn binary_dice_matches_numpy() {
    let fx = fixture("dice.json");
    for (i, c) in cases(&fx, "binary_cases").iter().enumerate() {
        let p: Vec<bool> = bytes(&c["pred"]).iter().map(|&x| x == 1).collect();
        let t: Vec<bool> = bytes(&c["truth"]).iter().map(|&x| x == 1).collect();
        let want = f(&c["dice"]);
        assert!(close(binary_dice_slices(&p, &t).unwrap(), want), "case {i}");
        let n = p.len();
        let pv = Volume::from_vec([n, 1, 1], p, unit_grid()).unwrap();
        let tv = Volume::from_vec([n, 1, 1], t, unit_grid()).unwrap();
        assert!(close(binary_dice(&pv, &tv).unwrap(), want), "case {i}");
    }
}

#[test]
fn identification_accuracy_and_centroids_match_numpy() {
    let fx = fixture("identification.json");
    for (i, c) in cases(&fx, "label_cases").iter().enumerate() {
        let d = dims(&c["dims"]);
        let g = geometry(&c["geometry"]);
        let pred = Volume::from_vec(d, bytes(&c["pred"]), g).unwrap();
        let truth = Volume::from_vec(d, bytes(&c["truth"]), g).unwrap();

        let got = identification_accuracy(&pred, &truth).unwrap();
        let want = &c["accuracy"];
        assert_eq!(
            (got.correct, got.total),
            (u(&want["correct"]), u(&want["total"])),
            "case {i}"
        );
        assert_opt(got.accuracy, &want["accuracy"], &format!("case {i}"));
        for (gv, wv) in got
            .per_vertebra
            .iter()
            .zip(want["per_vertebra"].as_array().unwrap())
        {
            assert_eq!(gv.label as usize, u(&wv["label"]), "case {i}");
            assert_eq!(gv.truth_voxels as usize, u(&wv["truth_voxels"]), "case {i}");
            assert_eq!(
                gv.predicted_label.map(usize::from),
                wv["predicted_label"].as_u64().map(|x| x as usize),
                "case {i} label {}",
                gv.label
            );
            assert_eq!(
                gv.largest_overlap_voxels as usize,
                u(&wv["largest_overlap_voxels"])
            );
            assert_eq!(gv.correct, wv["correct"].as_bool().unwrap(), "case {i}");
        }

        for (vol, key) in [(&pred, "pred_centroids"), (&truth, "truth_centroids")] {
            let got = label_centroids(vol).unwrap();
            let want = c[key].as_array().unwrap();
            assert_eq!(got.len(), want.len(), "case {i} {key}");
            for (gc, wc) in got.iter().zip(want) {
                assert_eq!(gc.label as usize, u(&wc[0]), "case {i} {key}");
                let w = vec3(&wc[1]);
                for k in 0..3 {
                    assert!(
                        close(gc.position_mm[k], w[k]),
                        "case {i} {key} {gc:?} vs {w:?}"
                    );
                }
            }
        }
    }
}

fn centroids(v: &Value) -> Vec<LabeledCentroid> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|c| LabeledCentroid {
            label: u(&c[0]) as u8,
            position_mm: vec3(&c[1]),
        })
        .collect()
}

#[test]
fn verse_identification_matches_reference_definition() {
    let fx = fixture("identification.json");
    for (i, c) in cases(&fx, "verse_cases").iter().enumerate() {
        let got = verse_identification(&centroids(&c["pred"]), &centroids(&c["truth"])).unwrap();
        let want = &c["expected"];
        assert_eq!(
            (got.identified, got.total, got.localised),
            (
                u(&want["identified"]),
                u(&want["total"]),
                u(&want["localised"])
            ),
            "case {i}"
        );
        assert_opt(got.id_rate, &want["id_rate"], &format!("case {i} id rate"));
        assert_opt(
            got.mean_localisation_distance_mm,
            &want["mean_localisation_distance_mm"],
            &format!("case {i} d_mean"),
        );
        for (g, w) in got
            .per_vertebra
            .iter()
            .zip(want["per_vertebra"].as_array().unwrap())
        {
            assert_eq!(g.label as usize, u(&w["label"]));
            assert_eq!(
                g.identified,
                w["identified"].as_bool().unwrap(),
                "case {i} {g:?}"
            );
            assert_opt(g.distance_mm, &w["distance_mm"], &format!("case {i} {g:?}"));
            assert_eq!(
                g.nearest_truth_label.map(usize::from),
                w["nearest_truth_label"].as_u64().map(|x| x as usize),
                "case {i}"
            );
        }
    }
}

#[test]
fn assignment_matches_scipy_total_cost() {
    let fx = fixture("assignment.json");
    let mut infeasible = 0;
    for (i, c) in cases(&fx, "cases").iter().enumerate() {
        let (rows, cols) = (u(&c["rows"]), u(&c["cols"]));
        let cost: Vec<f64> = c["cost"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| opt(x).unwrap_or(f64::INFINITY))
            .collect();
        let result = linear_sum_assignment(&cost, rows, cols);
        if !c["expected"]["feasible"].as_bool().unwrap() {
            assert!(matches!(result, Err(Error::InvalidArgument(_))), "case {i}");
            infeasible += 1;
            continue;
        }
        let a = result.unwrap();
        assert_eq!(a.pairs.len(), rows.min(cols), "case {i}");
        assert_eq!(a.pairs.len(), u(&c["expected"]["pairs"]));
        let mut seen_r = vec![false; rows];
        let mut seen_c = vec![false; cols];
        for &(r, col) in &a.pairs {
            assert!(!seen_r[r] && !seen_c[col], "case {i}: index used twice");
            seen_r[r] = true;
            seen_c[col] = true;
            assert!(
                cost[r * cols + col].is_finite(),
                "case {i}: forbidden pair chosen"
            );
        }
        let want = f(&c["expected"]["total_cost"]);
        assert!(
            close(a.total_cost, want),
            "case {i}: {} vs {want}",
            a.total_cost
        );
    }
    assert!(infeasible > 0, "fixture lacks an infeasible matrix");
}

fn detections(c: &Value) -> Vec<ScoredDetection> {
    let scores = c["scores"].as_array().unwrap();
    let tps = c["true_positive"].as_array().unwrap();
    scores
        .iter()
        .zip(tps)
        .map(|(s, t)| ScoredDetection {
            score: f(s),
            true_positive: t.as_bool().unwrap(),
        })
        .collect()
}

#[test]
fn average_precision_matches_sklearn_and_froc_matches_numpy() {
    let fx = fixture("detection.json");
    for (i, c) in cases(&fx, "cases").iter().enumerate() {
        let dets = detections(c);
        let (truths, images) = (u(&c["num_truths"]), u(&c["num_images"]));
        assert_opt(
            average_precision(&dets, truths).unwrap(),
            &c["average_precision"],
            &format!("case {i} AP"),
        );
        for point in c["froc"].as_array().unwrap() {
            let budget = f(&point[0]);
            assert_opt(
                froc_sensitivity(&dets, truths, images, budget).unwrap(),
                &point[1],
                &format!("case {i} Sens@{budget}FP"),
            );
        }
        // The ranking must not depend on the input order.
        let mut reversed = dets.clone();
        reversed.reverse();
        assert_eq!(
            average_precision(&reversed, truths).unwrap(),
            average_precision(&dets, truths).unwrap()
        );
    }
}

fn lesion_box(v: &Value) -> LesionBox {
    LesionBox {
        centre_mm: vec3(&v["centre_mm"]),
        size_mm: vec3(&v["size_mm"]),
    }
}

fn class(v: &Value) -> LesionClass {
    LesionClass::from_index(u(v)).unwrap()
}

fn lesion_case(v: &Value) -> LesionCase {
    LesionCase {
        predictions: v["predictions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| PredictedLesion {
                class: class(&p["class"]),
                bbox: lesion_box(p),
                score: f(&p["score"]),
            })
            .collect(),
        truths: v["truths"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| TruthLesion {
                class: class(&t["class"]),
                bbox: lesion_box(t),
            })
            .collect(),
    }
}

fn indices(v: &Value) -> Vec<usize> {
    v.as_array().unwrap().iter().map(u).collect()
}

#[test]
fn lesion_matching_matches_scipy() {
    let fx = fixture("lesions.json");
    let mut matched = 0;
    for (i, m) in cases(&fx, "matchings").iter().enumerate() {
        let case = lesion_case(&m["case"]);
        let got =
            match_lesions(&case.predictions, &case.truths, &MatchCriteria::default()).unwrap();
        // Random real-valued boxes: the optimum is unique, so the pairs must coincide.
        let want = m["pairs"].as_array().unwrap();
        assert_eq!(got.pairs.len(), want.len(), "case {i}");
        for (g, w) in got.pairs.iter().zip(want) {
            assert_eq!((g.prediction, g.truth), (u(&w[0]), u(&w[1])), "case {i}");
            assert!(
                close(g.iou, f(&w[2])) && close(g.centre_distance_mm, f(&w[3])),
                "case {i}"
            );
            assert!(g.iou >= 0.3 && g.centre_distance_mm <= 5.0);
        }
        let total_iou: f64 = got.pairs.iter().map(|p| p.iou).sum();
        assert!(close(total_iou, f(&m["total_iou"])), "case {i}");
        assert_eq!(
            got.false_positives,
            indices(&m["false_positives"]),
            "case {i}"
        );
        assert_eq!(
            got.false_negatives,
            indices(&m["false_negatives"]),
            "case {i}"
        );
        matched += got.pairs.len();
    }
    assert!(matched > 0);
}

fn assert_summary(got: &DetectionSummary, want: &Value, what: &str) {
    let counts = |s: &DetectionSummary| {
        [
            s.num_truths,
            s.num_predictions,
            s.true_positives,
            s.false_positives,
            s.false_negatives,
        ]
    };
    let want_counts = [
        "num_truths",
        "num_predictions",
        "true_positives",
        "false_positives",
        "false_negatives",
    ]
    .map(|k| u(&want[k]));
    assert_eq!(counts(got), want_counts, "{what}");
    assert_opt(
        got.precision,
        &want["precision"],
        &format!("{what} precision"),
    );
    assert_opt(got.recall, &want["recall"], &format!("{what} recall"));
    assert_opt(
        got.average_precision,
        &want["average_precision"],
        &format!("{what} AP"),
    );
    assert_opt(
        got.sensitivity_at_1_fp,
        &want["sensitivity_at_1_fp"],
        &format!("{what} S@1"),
    );
    assert_opt(
        got.sensitivity_at_4_fp,
        &want["sensitivity_at_4_fp"],
        &format!("{what} S@4"),
    );
}

#[test]
fn lesion_evaluation_matches_sklearn() {
    let fx = fixture("lesions.json");
    for (i, e) in cases(&fx, "evaluations").iter().enumerate() {
        let test_set: Vec<LesionCase> = e["cases"]
            .as_array()
            .unwrap()
            .iter()
            .map(lesion_case)
            .collect();
        let got = evaluate_lesions(&test_set, &MatchCriteria::default()).unwrap();
        assert_eq!(got.num_images, test_set.len());
        assert_eq!(got.per_case.len(), test_set.len());
        assert_summary(&got.pooled, &e["pooled"], &format!("evaluation {i} pooled"));
        for (k, (g, w)) in got
            .per_class
            .iter()
            .zip(e["per_class"].as_array().unwrap())
            .enumerate()
        {
            assert_eq!(g.class.index(), k);
            assert_summary(&g.summary, w, &format!("evaluation {i} class {k}"));
        }
        assert_opt(
            got.macro_average_precision,
            &e["macro_average_precision"],
            &format!("evaluation {i} macro AP"),
        );
    }
}

#[test]
fn results_serialise_with_null_for_undefined_values() {
    let fx = fixture("lesions.json");
    let test_set: Vec<LesionCase> = fx["evaluations"][0]["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(lesion_case)
        .collect();
    let json =
        serde_json::to_value(evaluate_lesions(&test_set, &MatchCriteria::default()).unwrap())
            .unwrap();
    assert_eq!(json["criteria"]["min_iou"], 0.3);
    assert_eq!(json["per_class"].as_array().unwrap().len(), 4);
    assert!(
        json["per_class"][0]["class"].is_string() && json["per_class"][0]["num_truths"].is_u64()
    );

    let empty = evaluate_lesions(&[LesionCase::default()], &MatchCriteria::default()).unwrap();
    let json = serde_json::to_value(&empty).unwrap();
    assert!(json["macro_average_precision"].is_null());
    assert!(json["pooled"]["recall"].is_null());

    let g = unit_grid();
    let zeros = Volume::filled([2, 2, 2], 0u8, g).unwrap();
    let json = serde_json::to_value(label_dice(&zeros, &zeros).unwrap()).unwrap();
    assert!(json["mean"].is_null());
    assert_eq!(json["foreground"], 1.0);
}

#[test]
fn bad_input_is_an_error_not_a_panic() {
    let g = unit_grid();
    let a = Volume::filled([4, 4, 4], 1u8, g).unwrap();
    let b = Volume::filled([4, 4, 5], 1u8, g).unwrap();
    assert!(matches!(label_dice(&a, &b), Err(Error::Geometry(_))));
    assert!(matches!(
        identification_accuracy(&a, &b),
        Err(Error::Geometry(_))
    ));
    let moved = Volume::filled(
        [4, 4, 4],
        1u8,
        Geometry::axis_aligned([1.0; 3], [0.0, 0.0, 2.0]),
    )
    .unwrap();
    assert!(matches!(label_dice(&a, &moved), Err(Error::Geometry(_))));
    let ma = Volume::filled([4, 4, 4], true, g).unwrap();
    let mb = Volume::filled([4, 5, 4], true, g).unwrap();
    assert!(binary_dice(&ma, &mb).is_err());

    let nan = [ScoredDetection {
        score: f64::NAN,
        true_positive: true,
    }];
    assert!(average_precision(&nan, 1).is_err());
    assert!(froc_sensitivity(&nan, 1, 1, 1.0).is_err());
    assert!(evaluate_lesions(&[], &MatchCriteria::default()).is_err());
    assert!(linear_sum_assignment(&[f64::NAN], 1, 1).is_err());

    // Empty but valid inputs have documented values.
    assert_eq!(average_precision(&[], 0).unwrap(), None);
    assert_eq!(average_precision(&[], 5).unwrap(), Some(0.0));
    let none = verse_identification(&[], &[]).unwrap();
    assert_eq!(none.id_rate, None);
    let m = match_lesions(&[], &[], &MatchCriteria::default()).unwrap();
    assert!(m.pairs.is_empty() && m.false_negatives.is_empty());
}
