//! Key images (Secondary Capture, mid-sagittal reformat) checked by tools we did not write:
//! dciodvfy for the IOD, pydicom for pixels and attributes. Expected sizes and pixel positions
//! are computed by hand from the layout rules in `docs/reports.md` for one axis-aligned axial
//! source.

mod common;

use common::*;
use vertebra_core::anatomy::{LesionClass, Vertebra};
use vertebra_core::dicom_series::{SeriesMeta, write_ct_series};
use vertebra_core::phantom::domain::Modality;
use vertebra_core::{Geometry, Volume};
use vertebra_reports::keyimage::build_key_images;
use vertebra_reports::palette::{lesion_rgb, vertebra_rgb};
use vertebra_reports::{
    AnalysisFindings, LesionFinding, SourceSeries, VertebraFinding, to_part10_bytes, write_part10,
};

const DIMS: [usize; 3] = [40, 36, 30];
const SPACING: [f64; 3] = [0.8, 0.9, 1.5];
const ORIGIN: [f64; 3] = [-16.0, -20.0, 100.0];

/// Top (high z, superior) to bottom: C7 (blue), T1 (green), L1 (orange) — three hues far apart.
const STACK: [(Vertebra, std::ops::RangeInclusive<usize>); 3] = [
    (Vertebra::L1, 2..=10),
    (Vertebra::T1, 11..=19),
    (Vertebra::C7, 20..=28),
];

fn geometry() -> Geometry {
    Geometry::axis_aligned(SPACING, ORIGIN)
}

/// CT: 200 HU soft tissue, 1000 HU in the vertebra boxes x 14..=26, y 10..=24.
fn scene() -> (Volume<f32>, Volume<u8>) {
    let [nx, ny, nz] = DIMS;
    let mut hu = vec![200.0f32; nx * ny * nz];
    let mut labels = vec![0u8; nx * ny * nz];
    for (v, zs) in &STACK {
        for z in zs.clone() {
            for y in 10..=24 {
                for x in 14..=26 {
                    let i = (z * ny + y) * nx + x;
                    hu[i] = 1000.0;
                    labels[i] = v.label();
                }
            }
        }
    }
    (
        Volume::from_vec(DIMS, hu, geometry()).unwrap(),
        Volume::from_vec(DIMS, labels, geometry()).unwrap(),
    )
}

/// Findings with hand-computed box-centre centroids (voxel x 20, y 17, z = middle of the
/// range) and one fracture at L 0, P −1.6, S 122.54.
fn findings(labels: Volume<u8>) -> AnalysisFindings {
    let vertebrae = STACK
        .iter()
        .map(|(v, zs)| {
            let z = (zs.start() + zs.end()) as f64 / 2.0;
            VertebraFinding {
                vertebra: *v,
                confidence: 0.9,
                volume_mm3: 1000.0,
                centroid_lps: [-16.0 + 20.0 * 0.8, -20.0 + 17.0 * 0.9, 100.0 + z * 1.5],
                mean_trabecular_hu: None,
                heights_mm: None,
                genant: None,
            }
        })
        .collect();
    AnalysisFindings {
        labels,
        vertebrae,
        lesions: vec![LesionFinding {
            class: LesionClass::Fracture,
            vertebra: Some(Vertebra::T1),
            centre_lps: [0.0, -1.6, 122.54],
            size_mm: None,
            score: 0.9,
        }],
        numbering_confidence: 0.9,
    }
}

/// HSV hue in degrees.
fn hue(c: [u8; 3]) -> f64 {
    let [r, g, b] = c.map(f64::from);
    let max = r.max(g).max(b);
    let d = max - r.min(g).min(b);
    assert!(d > 0.0, "{c:?} is grey, it has no hue");
    let h = if max == r {
        ((g - b) / d).rem_euclid(6.0)
    } else if max == g {
        (b - r) / d + 2.0
    } else {
        (r - g) / d + 4.0
    };
    60.0 * h
}

const PYDICOM_CHECK: &str = r#"
import json, sys
import pydicom
sc = pydicom.dcmread(sys.argv[1])
src = pydicom.dcmread(sys.argv[2])
px = sc.pixel_array
points = json.loads(sys.argv[3])
attrs = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID",
         "StudyDate", "StudyTime", "StudyID", "AccessionNumber", "ReferringPhysicianName"]
print(json.dumps({
    "shape": list(px.shape),
    "photometric": sc.PhotometricInterpretation, "planar": int(sc.PlanarConfiguration),
    "burned_in": sc.BurnedInAnnotation, "sop_class": sc.SOPClassUID,
    "series_uid": sc.SeriesInstanceUID, "series_number": int(sc.SeriesNumber),
    "source_refs": [i.ReferencedSOPInstanceUID for i in sc.SourceImageSequence],
    "referenced_series": sc.ReferencedSeriesSequence[0].SeriesInstanceUID,
    "pixels": [[int(v) for v in px[r, c]] for c, r in points],
    "sc_attrs": [str(sc.get(a, "<absent>")) for a in attrs],
    "src_attrs": [str(src.get(a, "<absent>")) for a in attrs],
}))
"#;

#[test]
fn sagittal_key_image_validates_and_shows_labels_in_place() {
    let tmp = tempfile::tempdir().unwrap();
    let src_dir = tmp.path().join("src");
    std::fs::create_dir(&src_dir).unwrap();
    let (ct, labels) = scene();
    let meta = SeriesMeta::new(7, "keyimage-test", Modality::Ct);
    let slice_uids = write_ct_series(&ct, &meta, &src_dir)
        .unwrap()
        .sop_instance_uids;
    let source = SourceSeries::from_dir(&src_dir).unwrap();
    let findings = findings(labels);
    let id = identity("key-images", 903);
    let images = build_key_images(&source, &ct, &findings, &algorithm(), &id).unwrap();
    assert_eq!(images.len(), 1);
    let path = tmp.path().join("key.dcm");
    write_part10(&images[0], &path).unwrap();

    // Deterministic: the same inputs give the same bytes.
    let again = build_key_images(&source, &ct, &findings, &algorithm(), &id).unwrap();
    assert_eq!(
        to_part10_bytes(&images[0]).unwrap(),
        to_part10_bytes(&again[0]).unwrap()
    );

    let warnings = dciodvfy_clean(&path, "SCImage");
    eprintln!("dciodvfy SC warnings {warnings:#?}");

    // Hand-computed layout: P extent 35 * 0.9 = 31.5 mm, S extent 29 * 1.5 = 43.5 mm; smallest
    // spacing 0.8 gives round(43.5 / 0.8) + 1 = 55 < 256 pixels, so d = 0.8 / ceil(256 / 55)
    // = 0.16 mm: columns round(31.5 / 0.16) + 1 = 198, rows round(43.5 / 0.16) + 1 = 273, font
    // scale 1, banner 9 rows. Column = (P + 20) / 0.16, row = (143.5 − S) / 0.16 + 9.
    //   C7 centroid P −4.7, S 136.0 → (95.6, 55.9) → (96, 56)
    //   T1 centroid S 122.5 → row 140.25 → 140;  L1 centroid S 109.0 → row 224.6 → 225
    //   fracture P −1.6, S 122.54 → (115, 140)
    //   background (5, 270): P −19.2 (voxel y 0.9), S 101.74 (voxel z 1.2): soft tissue only
    //   banner: 'N' of "NOT" has its left column at x 1, rows 1..=7; (0, 0) is black
    //   T1's name: leftmost T1 pixel in its rows is column 54 (voxel y 54 * 0.16 / 0.9 = 9.6
    //   rounds to 10), so "T1" (11 px) starts at 54 − 2 − 11 = 41, rows 137..=143; 'T' has
    //   its top row full: (41..=45, 137).
    let points = [
        (96, 56),
        (96, 140),
        (96, 225),
        (115, 140),
        (5, 270),
        (1, 1),
        (0, 0),
        (43, 137),
        (43, 143),
    ];
    let points_json = serde_json::to_string(&points).unwrap();
    let src_file = src_dir.join(
        std::fs::read_dir(&src_dir)
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .file_name(),
    );
    let out = run_python_inline(
        PYDICOM_CHECK,
        &[
            path.to_str().unwrap(),
            src_file.to_str().unwrap(),
            &points_json,
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["shape"], serde_json::json!([282, 198, 3]), "{out}");
    assert_eq!(v["photometric"], "RGB");
    assert_eq!(v["planar"], 0);
    assert_eq!(v["burned_in"], "YES");
    assert_eq!(v["sop_class"], "1.2.840.10008.5.1.4.1.1.7");
    assert_eq!(v["series_uid"], id.series_instance_uid.as_str());
    assert_eq!(v["series_number"], 903);
    assert_eq!(v["referenced_series"], source.series_instance_uid.as_str());
    // An axial source: the sagittal plane crosses every slice.
    let mut refs: Vec<String> = serde_json::from_value(v["source_refs"].clone()).unwrap();
    let mut expected_refs = slice_uids.clone();
    refs.sort();
    expected_refs.sort();
    assert_eq!(refs, expected_refs);
    assert_eq!(
        v["sc_attrs"], v["src_attrs"],
        "patient/study attributes differ"
    );

    let px: Vec<[u8; 3]> = serde_json::from_value(v["pixels"].clone()).unwrap();
    // Vertebra centroids: the vertebra's hue (grey + colour keeps the hue; ±6° for rounding),
    // in cranio-caudal order from the top.
    for (i, vertebra) in [Vertebra::C7, Vertebra::T1, Vertebra::L1]
        .iter()
        .enumerate()
    {
        let want = hue(vertebra_rgb(*vertebra));
        let got = hue(px[i]);
        let diff = (got - want).abs().min(360.0 - (got - want).abs());
        assert!(
            diff < 6.0,
            "{} centroid pixel {:?} has hue {got:.1}, palette {want:.1}",
            vertebra.name(),
            px[i]
        );
        // Bone (1000 HU → grey 191) under the colour, not soft tissue (89).
        let bright = px[i].iter().map(|&c| u32::from(c)).sum::<u32>();
        assert!(bright > 3 * 120, "{:?} is not bone under the label", px[i]);
    }
    assert_eq!(px[3], lesion_rgb(LesionClass::Fracture), "fracture marker");
    // 200 HU in the bone window (centre 500, width 2000): (200 + 500) / 2000 * 255 = 89.25.
    assert_eq!(px[4], [89, 89, 89], "background pixel");
    assert_eq!(px[5], [255, 255, 255], "banner text");
    assert_eq!(px[6], [0, 0, 0], "banner background");
    assert_eq!(px[7], vertebra_rgb(Vertebra::T1), "T1 name, top bar of 'T'");
    // Bottom row of 'T' is only its stem at column 2: (43, 143) is the stem.
    assert_eq!(px[8], vertebra_rgb(Vertebra::T1), "T1 name, stem of 'T'");
}

#[test]
fn ct_off_the_source_grid_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let (ct, labels) = scene();
    let meta = SeriesMeta::new(8, "keyimage-test", Modality::Ct);
    write_ct_series(&ct, &meta, tmp.path()).unwrap();
    let source = SourceSeries::from_dir(tmp.path()).unwrap();
    let shifted = Geometry::axis_aligned(SPACING, [ORIGIN[0] + 1.0, ORIGIN[1], ORIGIN[2]]);
    let moved = Volume::from_vec(DIMS, ct.data().to_vec(), shifted).unwrap();
    let err = build_key_images(
        &source,
        &moved,
        &findings(labels),
        &algorithm(),
        &identity("key-images", 903),
    )
    .unwrap_err();
    assert!(err.to_string().contains("CT volume"), "{err}");
}
