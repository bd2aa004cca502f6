//! Readers against a phantom dataset in the CLI's layout and hand-written VerSe fixtures.

#[path = "fixtures/phantom_dataset.rs"]
mod phantom_dataset;

use std::path::{Path, PathBuf};

use phantom_dataset::{HEADER, Plan, write_dataset};
use vertebra_core::anatomy::{LesionClass, Vertebra};
use vertebra_core::nifti::{self, WriteOptions};
use vertebra_core::phantom::{LesionKind, LesionPlan, LesionRequest};
use vertebra_core::{Geometry, Volume};
use vertebra_trainer::manifest::Manifest;
use vertebra_trainer::readers::{load_case, load_case_with_centroids};

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

#[test]
fn phantom_dataset_cases_read_back_with_every_annotation() {
    let dir = tempfile::tempdir().unwrap();
    let plans = [Plan {
        id: "ct-standard-0000".into(),
        seed: 7,
        domain: "ct-standard".into(),
        lesions: LesionPlan::Explicit {
            lesions: vec![LesionRequest {
                kind: LesionKind::Lytic,
                vertebra: Vertebra::L2,
            }],
        },
    }];
    let phantoms = write_dataset(dir.path(), &plans, Vertebra::L2, Vertebra::L3);
    let p = &phantoms[0];
    let m = Manifest::load(&dir.path().join("manifest.csv")).unwrap();
    m.check_files().unwrap();
    let loaded = load_case_with_centroids(&m.cases[0]).unwrap();
    let case = &loaded.case;
    assert_eq!(case.id, "ct-standard-0000");
    assert_eq!(case.domain, "ct-standard");
    // NIfTI stores float32 samples exactly and the geometry to float32 precision.
    assert_eq!(case.image.dims(), p.ct.dims());
    assert_eq!(case.image.data(), p.ct.data());
    let (a, b) = (case.image.geometry(), p.ct.geometry());
    for i in 0..3 {
        assert!((a.origin[i] - b.origin[i]).abs() < 1e-3);
        assert!((a.spacing[i] - b.spacing[i]).abs() < 1e-5);
    }
    assert_eq!(case.labels.as_ref().unwrap().data(), p.labels.data());
    assert!(case.ids_annotated);
    let a = case.annotations();
    assert!(a.masks && a.ids && a.lesions);
    let lesions = case.lesions.as_ref().unwrap();
    // serde_json (without `float_roundtrip`) may parse a float one ulp off: compare to 1e-9.
    assert_eq!(lesions.len(), p.lesions.len());
    for (got, want) in lesions.iter().zip(&p.lesions) {
        assert_eq!(
            (got.class, got.vertebra, got.voxels),
            (want.class, want.vertebra, want.voxels)
        );
        for a in 0..3 {
            assert!((got.centre[a] - want.centre[a]).abs() < 1e-9);
            assert!((got.size_mm[a] - want.size_mm[a]).abs() < 1e-9);
        }
    }
    assert_eq!(lesions.len(), 1);
    assert_eq!(lesions[0].class, LesionClass::LyticMetastasis);
    // Centroids: the truth's world LPS positions, vertebra by vertebra.
    let c = loaded.centroids.unwrap();
    assert_eq!(c.len(), p.centroids.len());
    for (got, want) in c.iter().zip(p.truth().centroids) {
        assert_eq!(got.vertebra.label(), want.label);
        for (g, w) in got.position_mm.iter().zip([want.x, want.y, want.z]) {
            assert!((g - w).abs() < 1e-9, "{:?}", got.position_mm);
        }
    }
}

#[test]
fn masks_without_centroids_are_ctspine1k_style() {
    let dir = tempfile::tempdir().unwrap();
    let plans = [Plan {
        id: "a".into(),
        seed: 9,
        domain: "ct-standard".into(),
        lesions: LesionPlan::None,
    }];
    write_dataset(dir.path(), &plans, Vertebra::L2, Vertebra::L2);
    // Drop the centroid and lesion columns.
    let text = std::fs::read_to_string(dir.path().join("manifest.csv")).unwrap();
    let row = text
        .lines()
        .nth(1)
        .unwrap()
        .replace("cases/a/truth.json,cases/a/truth.json,", ",,");
    std::fs::write(dir.path().join("m2.csv"), format!("{HEADER}\n{row}\n")).unwrap();
    let m = Manifest::load(&dir.path().join("m2.csv")).unwrap();
    let case = load_case(&m.cases[0]).unwrap();
    assert!(case.labels.is_some());
    assert!(!case.ids_annotated);
    assert!(case.lesions.is_none());
    let a = case.annotations();
    assert!(a.masks && !a.ids && !a.lesions);
}

/// A 10×12×8 CT in PIR orientation (voxel axes towards posterior, inferior, right), spacing
/// (1, 1, 2) mm, origin (10, 20, 30) LPS, with L1 (VerSe 20) at voxels i 2..=5, j 3..=5,
/// k 1..=3 and sacrum (26) at k = 7.
fn write_verse_case(dir: &Path, extra_label: Option<u16>) -> Geometry {
    let g = Geometry {
        spacing: [1.0, 1.0, 2.0],
        origin: [10.0, 20.0, 30.0],
        direction: [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]],
    };
    let dims = [10, 12, 8];
    let image = Volume::filled(dims, -1000.0f32, g).unwrap();
    let mut labels = Volume::filled(dims, 0u16, g).unwrap();
    for k in 1..=3 {
        for j in 3..=5 {
            for i in 2..=5 {
                let at = labels.index(i, j, k);
                labels.data_mut()[at] = 20;
            }
        }
    }
    let at = labels.index(0, 0, 7);
    labels.data_mut()[at] = 26;
    if let Some(v) = extra_label {
        let at = labels.index(9, 11, 0);
        labels.data_mut()[at] = v;
    }
    let o = WriteOptions::default();
    nifti::write_f32(dir.join("ct.nii.gz"), &image, &o).unwrap();
    nifti::write_labels(dir.join("msk.nii.gz"), &labels, &o).unwrap();
    g
}

fn verse_manifest(dir: &Path, centroids: &Path) -> Manifest {
    let text = format!(
        "{HEADER}\nverse-a,P1,1.2.3,verse,Ct,ct.nii.gz,msk.nii.gz,{},,\n",
        centroids.display()
    );
    Manifest::parse(&text, dir, Path::new("m.csv")).unwrap()
}

#[test]
fn verse_centroids_in_every_documented_frame() {
    let dir = tempfile::tempdir().unwrap();
    write_verse_case(dir.path(), None);
    // Hand computation: voxel (3.5, 4, 2) of the PIR grid is
    // origin + 3.5·1·(0,1,0) + 4·1·(0,0,−1) + 2·2·(−1,0,0) = (6, 23.5, 26) LPS.
    let want = [6.0, 23.5, 26.0];
    for name in [
        "verse20_pir_ctd.json", // same frame as the image: X/Y/Z = i/j/k
        "verse20_asl_ctd.json", // every axis flipped: i = 10 − 6.5, j = 12 − 8, k = 8 − 6
        "verse20_irp_ctd.json", // permuted: j = X, k = Y, i = Z
        "verse19_ctd.json",     // IPL mm: j = 4/1, i = 3.5/1, k = 8 − 12/2
    ] {
        let m = verse_manifest(dir.path(), &fixture(name));
        let loaded = load_case_with_centroids(&m.cases[0]).unwrap();
        let c = loaded.centroids.unwrap();
        // Sacrum and T13 entries are skipped, the NaN entry too: only L1 remains.
        assert_eq!(c.len(), 1, "{name}");
        assert_eq!(c[0].vertebra, Vertebra::L1, "{name}");
        for a in 0..3 {
            assert!(
                (c[0].position_mm[a] - want[a]).abs() < 1e-9,
                "{name}: {:?} != {want:?}",
                c[0].position_mm
            );
        }
        let case = loaded.case;
        assert!(case.ids_annotated);
        let l = case.labels.unwrap();
        // Sacrum became background; L1 kept its 4·3·3 voxels.
        let count =
            |f: &dyn Fn(u8) -> bool| l.data().iter().map(|&v| usize::from(f(v))).sum::<usize>();
        assert_eq!(count(&|v| v == 20), 36);
        assert_eq!(count(&|v| v != 0 && v != 20), 0);
        assert_eq!(*l.get(0, 0, 7).unwrap(), 0);
    }
}

#[test]
fn verse_errors_name_the_case_and_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_verse_case(dir.path(), Some(28));
    let m = verse_manifest(dir.path(), &fixture("verse20_pir_ctd.json"));
    let e = load_case(&m.cases[0]).unwrap_err().to_string();
    assert!(
        e.starts_with("case verse-a: labels ") && e.contains("msk.nii.gz") && e.contains("T13"),
        "{e}"
    );
    assert!(!e.contains("P1"), "patient id in a message: {e}");

    write_verse_case(dir.path(), Some(40));
    let e = load_case(&m.cases[0]).unwrap_err().to_string();
    assert!(e.contains("mask value 40 is not a VerSe label"), "{e}");

    write_verse_case(dir.path(), None);
    let m = verse_manifest(dir.path(), &fixture("verse_bad_label_ctd.json"));
    let e = load_case(&m.cases[0]).unwrap_err().to_string();
    assert!(
        e.starts_with("case verse-a: centroids ") && e.contains("label 31"),
        "{e}"
    );

    // A centroid whose vertebra has no voxels: the files disagree.
    let wrong = dir.path().join("l2.json");
    std::fs::write(
        &wrong,
        r#"[{"direction":["P","I","R"]},{"label":21,"X":1,"Y":1,"Z":1}]"#,
    )
    .unwrap();
    let m = verse_manifest(dir.path(), &wrong);
    let e = load_case(&m.cases[0]).unwrap_err().to_string();
    assert!(e.contains("centroid of L2 has no voxels"), "{e}");

    // Labels on another grid.
    let g = Geometry::axis_aligned([1.0; 3], [0.0; 3]);
    let other = Volume::filled([10, 12, 8], 0u8, g).unwrap();
    nifti::write_labels(
        dir.path().join("msk.nii.gz"),
        &other,
        &WriteOptions::default(),
    )
    .unwrap();
    let m = verse_manifest(dir.path(), &fixture("verse20_pir_ctd.json"));
    let e = load_case(&m.cases[0]).unwrap_err().to_string();
    assert!(e.contains("must be on the image grid"), "{e}");

    // A missing image.
    std::fs::remove_file(dir.path().join("ct.nii.gz")).unwrap();
    let e = load_case(&m.cases[0]).unwrap_err().to_string();
    assert!(
        e.starts_with("case verse-a: image ") && e.contains("ct.nii.gz"),
        "{e}"
    );
}
