//! Resampling and connected components against scipy references.
//!
//! The fixtures under `tests/fixtures/volume/` are written by
//! `tests/fixtures/make_volume_fixtures.py` (scipy.ndimage.map_coordinates and
//! scipy.ndimage.label); regenerate them with the project venv after changing a convention.

use serde::Deserialize;
use vertebra_core::Geometry;
use vertebra_core::Volume;
use vertebra_core::components::{Connectivity, label_binary, label_per_label};
use vertebra_core::volume::{
    Grid, resample_image_to_spacing, resample_labels_to_spacing, resample_linear, resample_nearest,
};

const RESAMPLE: &str = include_str!("fixtures/volume/resample.json");
const COMPONENTS: &str = include_str!("fixtures/volume/components.json");

#[derive(Deserialize)]
struct ResampleFixture {
    cases: Vec<ResampleCase>,
}

#[derive(Deserialize)]
struct ResampleCase {
    name: String,
    dims: [usize; 3],
    geometry: Geometry,
    image: Vec<f32>,
    labels: Vec<u8>,
    target_dims: [usize; 3],
    target_geometry: Geometry,
    target_spacing: Option<[f64; 3]>,
    fill_image: f32,
    fill_label: u8,
    linear: Vec<f64>,
    nearest: Vec<u8>,
    inside_count: usize,
}

fn assert_linear_matches(name: &str, got: &Volume<f32>, want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{name}");
    for (i, (&g, &w)) in got.data().iter().zip(want).enumerate() {
        let tol = 1e-5 * w.abs().max(1.0);
        assert!(
            (f64::from(g) - w).abs() <= tol,
            "{name}: voxel {i} ({:?}): {g} vs scipy {w}",
            got.coords(i)
        );
    }
}

#[test]
fn resampling_matches_scipy_map_coordinates() {
    let fixture: ResampleFixture = serde_json::from_str(RESAMPLE).unwrap();
    assert_eq!(fixture.cases.len(), 7);
    for case in &fixture.cases {
        let name = case.name.as_str();
        let image = Volume::from_vec(case.dims, case.image.clone(), case.geometry).unwrap();
        let labels = Volume::from_vec(case.dims, case.labels.clone(), case.geometry).unwrap();
        let target = Grid::new(case.target_dims, case.target_geometry).unwrap();

        let lin = resample_linear(&image, &target, case.fill_image).unwrap();
        assert_eq!(lin.dims(), case.target_dims, "{name}");
        assert_eq!(lin.geometry(), &case.target_geometry, "{name}");
        assert_linear_matches(name, &lin, &case.linear);
        let fills = lin.data().iter().filter(|&&v| v == case.fill_image).count();
        assert_eq!(fills, lin.len() - case.inside_count, "{name}: fill count");

        let near = resample_nearest(&labels, &target, case.fill_label).unwrap();
        assert_eq!(near.data(), case.nearest.as_slice(), "{name}: nearest");

        if let Some(spacing) = case.target_spacing {
            // The spacing rule reproduces the grid the script derived independently.
            assert_eq!(
                Grid::of(&image).with_spacing(spacing).unwrap(),
                target,
                "{name}"
            );
            let lin2 = resample_image_to_spacing(&image, spacing, case.fill_image).unwrap();
            assert_eq!(lin2, lin, "{name}");
            let near2 = resample_labels_to_spacing(&labels, spacing, case.fill_label).unwrap();
            assert_eq!(near2, near, "{name}");
        }
    }
}

#[test]
fn nearest_never_invents_labels() {
    let fixture: ResampleFixture = serde_json::from_str(RESAMPLE).unwrap();
    for case in &fixture.cases {
        let labels = Volume::from_vec(case.dims, case.labels.clone(), case.geometry).unwrap();
        let target = Grid::new(case.target_dims, case.target_geometry).unwrap();
        let near = resample_nearest(&labels, &target, case.fill_label).unwrap();
        for v in near.data() {
            assert!(
                *v == case.fill_label || case.labels.contains(v),
                "{}",
                case.name
            );
        }
    }
}

#[derive(Deserialize)]
struct ComponentsFixture {
    binary: Vec<BinaryCase>,
    label_maps: Vec<LabelMapCase>,
}

#[derive(Deserialize)]
struct BinaryCase {
    dims: [usize; 3],
    mask: Vec<u8>,
    #[serde(rename = "6")]
    c6: Labelled,
    #[serde(rename = "18")]
    c18: Labelled,
    #[serde(rename = "26")]
    c26: Labelled,
}

#[derive(Deserialize)]
struct LabelMapCase {
    dims: [usize; 3],
    labels: Vec<u16>,
    #[serde(rename = "6")]
    c6: Labelled,
    #[serde(rename = "18")]
    c18: Labelled,
    #[serde(rename = "26")]
    c26: Labelled,
}

#[derive(Deserialize)]
struct Labelled {
    ids: Vec<u32>,
    #[serde(default)]
    components: Vec<ScipyComponent>,
}

#[derive(Deserialize)]
struct ScipyComponent {
    size: usize,
    centroid: [f64; 3],
    min: [usize; 3],
    max: [usize; 3],
}

fn unit_geometry() -> Geometry {
    Geometry::axis_aligned([0.8, 0.8, 2.0], [-5.0, 7.0, 100.0])
}

#[test]
fn binary_components_match_scipy_label() {
    let fixture: ComponentsFixture = serde_json::from_str(COMPONENTS).unwrap();
    assert_eq!(fixture.binary.len(), 20);
    let mut total = 0;
    for (n, case) in fixture.binary.iter().enumerate() {
        let mask = Volume::from_vec(case.dims, case.mask.clone(), unit_geometry()).unwrap();
        let as_bool = mask.map(|&v| v != 0);
        for (conn, want) in [
            (Connectivity::Face6, &case.c6),
            (Connectivity::Edge18, &case.c18),
            (Connectivity::Vertex26, &case.c26),
        ] {
            let cc = label_binary(&mask, conn).unwrap();
            // Scan-order ids equal scipy's ids canonicalised by scan order.
            assert_eq!(cc.ids.data(), want.ids.as_slice(), "case {n} {conn:?}");
            assert_eq!(
                cc.components.len(),
                want.components.len(),
                "case {n} {conn:?}"
            );
            let mut sizes: Vec<_> = cc.components.iter().map(|c| c.voxel_count).collect();
            let mut want_sizes: Vec<_> = want.components.iter().map(|c| c.size).collect();
            sizes.sort_unstable();
            want_sizes.sort_unstable();
            assert_eq!(sizes, want_sizes, "case {n} {conn:?}");
            for (c, w) in cc.components.iter().zip(&want.components) {
                assert_eq!(c.label, 1);
                assert_eq!(c.voxel_count, w.size, "case {n} {conn:?} id {}", c.id);
                assert_eq!(c.bbox_voxels.min, w.min, "case {n} {conn:?} id {}", c.id);
                assert_eq!(c.bbox_voxels.max, w.max, "case {n} {conn:?} id {}", c.id);
                for a in 0..3 {
                    assert!((c.centroid_voxel[a] - w.centroid[a]).abs() < 1e-9);
                }
                assert!((c.volume_mm3 - w.size as f64 * 1.28).abs() < 1e-9);
            }
            total += cc.components.len();
            assert_eq!(label_binary(&as_bool, conn).unwrap(), cc);
        }
    }
    // The random masks are not trivial: many components overall.
    assert!(total > 1000, "{total}");
}

#[test]
fn per_label_components_match_scipy_label_per_value() {
    let fixture: ComponentsFixture = serde_json::from_str(COMPONENTS).unwrap();
    assert_eq!(fixture.label_maps.len(), 6);
    for (n, case) in fixture.label_maps.iter().enumerate() {
        let labels = Volume::from_vec(case.dims, case.labels.clone(), unit_geometry()).unwrap();
        for (conn, want) in [
            (Connectivity::Face6, &case.c6),
            (Connectivity::Edge18, &case.c18),
            (Connectivity::Vertex26, &case.c26),
        ] {
            let cc = label_per_label(&labels, conn).unwrap();
            assert_eq!(cc.ids.data(), want.ids.as_slice(), "case {n} {conn:?}");
            for c in &cc.components {
                let members: Vec<usize> = (0..cc.ids.len())
                    .filter(|&i| cc.ids.data()[i] == c.id)
                    .collect();
                assert_eq!(members.len(), c.voxel_count);
                assert!(
                    members
                        .iter()
                        .all(|&i| u32::from(case.labels[i]) == c.label)
                );
            }
        }
    }
}
