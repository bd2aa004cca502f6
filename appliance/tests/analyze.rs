//! `vertebrad analyze` driven as an operator would: the committed demo bundle on the real ONNX
//! Runtime library (scripts/provision-onnxruntime.sh), synthetic phantom series written by
//! vertebra-core, every failure class with its exit code.

mod support;

use support::{ort_library, repo};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use vertebra_core::anatomy::Vertebra;
use vertebra_core::dicom_series::{SeriesMeta, write_ct_series};
use vertebra_core::phantom::{self, LesionPlan, PhantomSpec, domain};

fn bundle() -> PathBuf {
    repo().join("models/demo-bundle")
}

fn keys() -> PathBuf {
    repo().join("keys")
}

fn vertebrad(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vertebrad"))
        .args(args)
        .env("ORT_DYLIB_PATH", ort_library())
        .env_remove("VERTEBRA_CONFIG")
        .output()
        .expect("running vertebrad")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A small thoracolumbar phantom (T12–L2, 192² at 0.7 mm) with one lesion, as a DICOM series
/// and as NIfTI, generated once per test binary.
struct Study {
    _dir: tempfile::TempDir,
    dicom: PathBuf,
    nifti: PathBuf,
    dims: [usize; 3],
}

fn study() -> &'static Study {
    static S: OnceLock<Study> = OnceLock::new();
    S.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let mut spec = PhantomSpec::new(
            11,
            Vertebra::T12,
            Vertebra::L2,
            domain::preset("ct-standard").unwrap(),
        );
        spec.in_plane = 192;
        spec.lesions = LesionPlan::Random { rate: 1.0 };
        let p = phantom::generate(&spec).unwrap();
        let dicom = dir.path().join("dicom");
        write_ct_series(
            &p.ct,
            &SeriesMeta::from_preset(p.seed, &spec.domain),
            &dicom,
        )
        .unwrap();
        let nifti = dir.path().join("ct.nii.gz");
        vertebra_core::nifti::write_f32(
            &nifti,
            &p.ct,
            &vertebra_core::nifti::WriteOptions::default(),
        )
        .unwrap();
        Study {
            dims: p.ct.dims(),
            _dir: dir,
            dicom,
            nifti,
        }
    })
}

fn analyze(input: &Path, out: &Path, extra: &[&str]) -> Output {
    let (b, k) = (bundle(), keys());
    let mut args = vec![
        "analyze",
        input.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--bundle",
        b.to_str().unwrap(),
        "--trusted-keys",
        k.to_str().unwrap(),
        "--threads",
        "2",
    ];
    args.extend_from_slice(extra);
    vertebrad(&args)
}

fn document(out: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(out.join("result.json")).unwrap()).unwrap()
}

#[test]
fn a_dicom_series_gives_the_result_document_label_map_seg_and_sr() {
    let s = study();
    let out = tempfile::tempdir().unwrap();
    let o = analyze(&s.dicom, out.path(), &[]);
    let stdout = text(&o.stdout);
    let stderr = text(&o.stderr);
    assert!(o.status.success(), "{stderr}\n{stdout}");
    assert!(stdout.contains("NOT FOR DIAGNOSTIC USE"), "{stdout}");
    assert!(
        stderr.contains("DEMO key"),
        "the demo warning is loud: {stderr}"
    );
    assert!(stderr.contains("execution provider: cpu"), "{stderr}");
    let d = document(out.path());
    assert_eq!(d["schema"], "vertebraformer.analysis");
    assert_eq!(d["schema_version"], 1);
    assert_eq!(d["model"]["demo"], true);
    assert_eq!(d["model"]["execution_provider"], "cpu");
    assert_eq!(d["input"]["kind"], "dicom");
    assert_eq!(d["input"]["dims"], serde_json::json!(s.dims));
    let region = &d["localization"]["region"];
    assert!(
        region.is_object(),
        "the spine is located: {}",
        d["localization"]
    );
    assert!(d["windows"].as_u64().unwrap() >= 1);
    // The label map lies on the source grid and holds exactly the document's labels.
    let labels: vertebra_core::Volume<u8> =
        vertebra_core::nifti::read_labels(out.path().join("labels.nii.gz")).unwrap();
    let src = vertebra_core::nifti::read_f32(&s.nifti).unwrap();
    assert_eq!(labels.dims(), src.dims());
    let (a, b) = (labels.geometry(), src.geometry());
    for k in 0..3 {
        assert!((a.spacing[k] - b.spacing[k]).abs() < 1e-4);
        assert!((a.origin[k] - b.origin[k]).abs() < 1e-3);
    }
    let present: std::collections::BTreeSet<u64> = labels
        .data()
        .iter()
        .filter(|&&l| l > 0)
        .map(|&l| u64::from(l))
        .collect();
    let listed: std::collections::BTreeSet<u64> = d["vertebrae"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["label"].as_u64().unwrap())
        .collect();
    assert!(present.is_subset(&listed), "{present:?} vs {listed:?}");
    if !present.is_empty() {
        assert_eq!(d["files"]["seg"], "seg.dcm");
        assert!(out.path().join("seg.dcm").is_file());
        assert!(out.path().join("sr.dcm").is_file());
    }
    for v in d["vertebrae"].as_array().unwrap() {
        let c = v["confidence"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c));
    }
    let total = d["timings_s"]["total"].as_f64().unwrap();
    assert!(total > 0.0 && total >= d["timings_s"]["windows"].as_f64().unwrap());
    // No patient data in the document.
    let raw = std::fs::read_to_string(out.path().join("result.json")).unwrap();
    assert!(
        !raw.contains("PHANTOM-11"),
        "patient id leaked into result.json"
    );
}

#[test]
fn dicom_and_nifti_of_one_study_give_the_same_findings() {
    let s = study();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let oa = analyze(&s.dicom, a.path(), &["--quiet"]);
    assert!(oa.status.success(), "{}", text(&oa.stderr));
    let ob = analyze(&s.nifti, b.path(), &["--quiet"]);
    assert!(ob.status.success(), "{}", text(&ob.stderr));
    let (da, db) = (document(a.path()), document(b.path()));
    assert_eq!(db["input"]["kind"], "nifti");
    assert!(db["files"]["seg"].is_null(), "no SEG without DICOM source");
    let names = |d: &serde_json::Value| -> Vec<String> {
        d["vertebrae"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v["name"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(names(&da), names(&db));
    assert_eq!(
        da["lesions"].as_array().unwrap().len(),
        db["lesions"].as_array().unwrap().len()
    );
    // DICOM stores HU rounded to 1 HU and NIfTI its geometry in float32, so the prepared
    // volumes differ in the last digits: the label maps agree up to boundary voxels.
    let la: vertebra_core::Volume<u8> =
        vertebra_core::nifti::read_labels(a.path().join("labels.nii.gz")).unwrap();
    let lb: vertebra_core::Volume<u8> =
        vertebra_core::nifti::read_labels(b.path().join("labels.nii.gz")).unwrap();
    let (mut both, mut fa, mut fb, mut same) = (0usize, 0usize, 0usize, 0usize);
    for (&x, &y) in la.data().iter().zip(lb.data()) {
        fa += usize::from(x > 0);
        fb += usize::from(y > 0);
        both += usize::from(x > 0 && y > 0);
        same += usize::from(x > 0 && x == y);
    }
    let dice = 2.0 * both as f64 / (fa + fb).max(1) as f64;
    let label_dice = 2.0 * same as f64 / (fa + fb).max(1) as f64;
    eprintln!("foreground Dice {dice:.4}, label Dice {label_dice:.4} ({fa} / {fb} voxels)");
    assert!(dice >= 0.97, "foreground Dice {dice}");
    assert!(label_dice >= 0.95, "label Dice {label_dice}");
}

#[test]
fn failures_exit_with_their_class() {
    let s = study();
    let out = tempfile::tempdir().unwrap();
    // 3: input refused (missing, too few slices).
    let o = analyze(&out.path().join("nope"), &out.path().join("o"), &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("not_found"), "{}", text(&o.stderr));
    let few = out.path().join("few");
    std::fs::create_dir_all(&few).unwrap();
    for f in std::fs::read_dir(&s.dicom).unwrap().take(5) {
        let f = f.unwrap().path();
        std::fs::copy(&f, few.join(f.file_name().unwrap())).unwrap();
    }
    let o = analyze(&few, &out.path().join("o"), &[]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("too_few_slices"),
        "{}",
        text(&o.stderr)
    );
    // 4: a bundle whose manifest was changed after signing.
    let tampered = out.path().join("bundle");
    std::fs::create_dir_all(&tampered).unwrap();
    for f in std::fs::read_dir(bundle()).unwrap() {
        let f = f.unwrap().path();
        if f.is_file() {
            std::fs::copy(&f, tampered.join(f.file_name().unwrap())).unwrap();
        }
    }
    let m = tampered.join("manifest.toml");
    let text_m = std::fs::read_to_string(&m).unwrap();
    std::fs::write(
        &m,
        text_m.replace("window_overlap = 0.5", "window_overlap = 0.25"),
    )
    .unwrap();
    let o = vertebrad(&[
        "analyze",
        s.dicom.to_str().unwrap(),
        "--out",
        out.path().join("o").to_str().unwrap(),
        "--bundle",
        tampered.to_str().unwrap(),
        "--trusted-keys",
        keys().to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o.stderr));
    assert!(text(&o.stderr).contains("signature"), "{}", text(&o.stderr));
    // 5: an ONNX Runtime library that does not exist; the message says how to provision.
    let o = analyze(
        &s.dicom,
        &out.path().join("o"),
        &["--onnxruntime", "/nonexistent/libonnxruntime.so.1.31.1"],
    );
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("provision-onnxruntime.sh"),
        "{}",
        text(&o.stderr)
    );
    // 5: only GPU providers configured on a CPU build: refused, never a silent CPU fallback.
    let o = analyze(
        &s.dicom,
        &out.path().join("o"),
        &["--providers", "tensorrt,cuda"],
    );
    assert_eq!(o.status.code(), Some(5), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("no configured execution provider works"),
        "{}",
        text(&o.stderr)
    );
    // 2: an unknown provider name.
    let o = analyze(&s.dicom, &out.path().join("o"), &["--providers", "tpu"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o.stderr));
    assert!(!out.path().join("o/result.json").exists());
}

#[test]
fn provider_fallback_is_reported() {
    let s = study();
    let out = tempfile::tempdir().unwrap();
    let o = analyze(&s.nifti, out.path(), &["--providers", "cuda,cpu"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let stderr = text(&o.stderr);
    assert!(stderr.contains("provider skipped: cuda"), "{stderr}");
    assert_eq!(document(out.path())["model"]["execution_provider"], "cpu");
}

#[test]
fn whole_volume_windows_cost_more_than_the_located_spine() {
    let s = study();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert!(analyze(&s.nifti, a.path(), &["--quiet"]).status.success());
    assert!(
        analyze(&s.nifti, b.path(), &["--quiet", "--no-localize"])
            .status
            .success()
    );
    let (da, db) = (document(a.path()), document(b.path()));
    assert!(db["localization"].is_null());
    let (wa, wb) = (
        da["windows"].as_u64().unwrap(),
        db["windows"].as_u64().unwrap(),
    );
    assert!(wa <= wb, "located {wa} vs whole {wb}");
}
