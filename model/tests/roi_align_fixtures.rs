//! RoIAlign numerics against scipy: `fixtures/roi_align.json`, written by
//! `fixtures/make_roi_fixtures.py` with `scipy.ndimage.map_coordinates(order=1, mode="nearest")`,
//! including boxes beyond the low and high borders of the window.

use burn::tensor::{Device, Tensor, TensorData};
use serde::Deserialize;
use vertebra_model::blocks::roi_align::{RoiAlignSpec, RoiBox, roi_align};

#[derive(Deserialize)]
struct Fixture {
    features_shape: [usize; 5],
    features: Vec<f32>,
    stride: usize,
    output: usize,
    sampling: usize,
    boxes: Vec<RoiBox>,
    expected_shape: [usize; 5],
    expected: Vec<f64>,
}

#[test]
fn roi_align_matches_scipy_map_coordinates() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/roi_align.json"
    ))
    .expect("fixture missing: run tests/fixtures/make_roi_fixtures.py");
    let fx: Fixture = serde_json::from_str(&text).unwrap();
    let device = Device::flex();
    let features = Tensor::<5>::from_data(
        TensorData::new(fx.features.clone(), fx.features_shape),
        &device,
    );
    let spec = RoiAlignSpec {
        stride: fx.stride,
        output: fx.output,
        sampling: fx.sampling,
    };
    let out = roi_align(features, &fx.boxes, spec).unwrap().unwrap();
    assert_eq!(out.dims(), fx.expected_shape);
    let got = out.into_data().try_to_vec::<f32>().unwrap();
    let mut worst = 0.0f64;
    for (g, e) in got.iter().zip(&fx.expected) {
        worst = worst.max((f64::from(*g) - e).abs());
    }
    assert!(worst < 1e-5, "max |burn - scipy| = {worst}");
    // The border boxes are part of the fixture and not trivially constant.
    let per_box = got.len() / fx.boxes.len();
    let border = &got[2 * per_box..3 * per_box];
    assert!(border.iter().any(|v| (v - border[0]).abs() > 1e-3));
}
