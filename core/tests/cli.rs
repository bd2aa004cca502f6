//! End-to-end tests of the `vertebra-phantom` binary: small studies and datasets, their files,
//! the printed summary, reproducibility and the error paths (exit codes and messages).
#![cfg(feature = "dicom")]

use std::path::Path;
use std::process::{Command, Output};

use dicom_dictionary_std::tags;
use vertebra_core::nifti;
use vertebra_core::phantom::GroundTruth;
use vertebra_core::phantom::domain;

fn phantom_cli(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_vertebra-phantom"))
        .args(args)
        .output()
        .expect("cannot run vertebra-phantom")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn assert_success(o: &Output) {
    assert!(
        o.status.success(),
        "vertebra-phantom failed ({}):\n{}\n{}",
        o.status,
        stdout(o),
        stderr(o)
    );
}

/// Runs and expects failure with exit code `code` and `needle` in stderr.
fn assert_fails(args: &[&str], code: i32, needle: &str) {
    let o = phantom_cli(args);
    assert_eq!(o.status.code(), Some(code), "{args:?}: {}", stderr(&o));
    assert!(
        stderr(&o).contains(needle),
        "{args:?}: stderr lacks {needle:?}:\n{}",
        stderr(&o)
    );
}

fn read_truth(path: &Path) -> GroundTruth {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn out_arg(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

#[test]
fn help_documents_every_subcommand_and_option() {
    let top = phantom_cli(&["--help"]);
    assert_success(&top);
    for sub in ["study", "dataset", "domains"] {
        assert!(stdout(&top).contains(sub), "top-level help lacks {sub}");
    }
    let study = phantom_cli(&["study", "--help"]);
    assert_success(&study);
    for opt in [
        "--seed",
        "--region",
        "--from",
        "--to",
        "--domain",
        "--in-plane",
        "--lesions",
        "--out",
        "--format",
        "--overwrite",
    ] {
        assert!(stdout(&study).contains(opt), "study --help lacks {opt}");
    }
    let dataset = phantom_cli(&["dataset", "--help"]);
    assert_success(&dataset);
    for opt in [
        "--domains",
        "--cases-per-domain",
        "--base-seed",
        "--paired",
        "--jobs",
    ] {
        assert!(stdout(&dataset).contains(opt), "dataset --help lacks {opt}");
    }
}

#[test]
fn domains_lists_every_preset() {
    let o = phantom_cli(&["domains"]);
    assert_success(&o);
    let presets = domain::presets();
    for p in &presets {
        assert!(stdout(&o).contains(&p.name), "table lacks {}", p.name);
    }
    let json = phantom_cli(&["domains", "--json"]);
    assert_success(&json);
    let listed: Vec<domain::DomainPreset> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(listed, presets);
}

#[test]
fn study_writes_consistent_files_and_summary() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("study");
    let o = phantom_cli(&[
        "study",
        "--seed",
        "11",
        "--from",
        "T12",
        "--to",
        "L3",
        "--in-plane",
        "128",
        "--lesions",
        "2",
        "--format",
        "both",
        "--out",
        out_arg(&out),
    ]);
    assert_success(&o);
    let summary = stdout(&o);
    let truth = read_truth(&out.join("truth.json"));
    assert_eq!(truth.seed, 11);
    assert_eq!(truth.domain, "ct-standard");
    assert_eq!(truth.lesions.len(), 2, "--lesions 2 gives exactly two");
    assert!(truth.lesions.iter().all(|l| l.is_target));
    for name in ["L1", "L2"] {
        assert!(truth.vertebrae.iter().any(|v| v == name), "{name} missing");
    }
    // The summary reports what the truth says.
    assert!(summary.contains(&truth.vertebrae.join(" ")), "{summary}");
    for l in &truth.lesions {
        assert!(summary.contains(l.class.key()), "{summary}");
        assert!(summary.contains(l.vertebra.name()), "{summary}");
    }
    assert!(summary.contains("ct-standard") && summary.contains("PHANTOM-11"));

    // Volumes agree with each other and with the truth.
    let ct = nifti::read_f32(out.join("ct.nii.gz")).unwrap();
    let labels = nifti::read_labels::<u8>(out.join("labels.nii.gz")).unwrap();
    let mask = nifti::read_labels::<u8>(out.join("mask.nii.gz")).unwrap();
    assert_eq!(ct.dims(), truth.geometry.dims);
    assert_eq!(labels.dims(), ct.dims());
    for (l, m) in labels.data().iter().zip(mask.data()) {
        assert_eq!(*m, u8::from(*l > 0));
    }
    for c in &truth.centroids {
        assert!(
            labels.data().contains(&c.label),
            "centroid of absent {}",
            c.name
        );
    }
    for i in 0..3 {
        assert!((ct.geometry().spacing[i] - truth.geometry.spacing[i]).abs() < 1e-5);
    }

    // The DICOM series: one file per slice, the image's HU, UIDs in the summary.
    let dicom: Vec<_> = std::fs::read_dir(out.join("dicom"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(dicom.len(), ct.dims()[2]);
    let first = dicom_object::open_file(out.join("dicom/IMG00001.dcm")).unwrap();
    let uid = first
        .element(tags::STUDY_INSTANCE_UID)
        .unwrap()
        .to_str()
        .unwrap();
    assert!(summary.contains(uid.as_ref()), "{summary}");
    let name = first.element(tags::PATIENT_NAME).unwrap().to_str().unwrap();
    assert_eq!(name, "PHANTOM^11");
    let px = first.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
    let nx = ct.dims()[0];
    for (i, pair) in px.chunks_exact(2).enumerate().step_by(97) {
        let hu = f64::from(i16::from_le_bytes([pair[0], pair[1]])) - 1024.0;
        let want = f64::from(ct[[i % nx, i / nx, 0]]);
        assert!((hu - want).abs() <= 0.5, "pixel {i}: {hu} vs {want}");
    }
}

#[test]
fn studies_are_reproducible_and_output_directories_protected() {
    let dir = tempfile::tempdir().unwrap();
    let run = |out: &Path, extra: &[&str]| {
        let mut args = vec![
            "study",
            "--seed",
            "5",
            "--region",
            "lumbar",
            "--domain",
            "mr-t2-like",
            "--in-plane",
            "96",
            "--lesions",
            "none",
            "--format",
            "dicom",
            "--out",
            out_arg(out),
        ];
        args.extend_from_slice(extra);
        phantom_cli(&args)
    };
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    assert_success(&run(&a, &[]));
    assert_success(&run(&b, &[]));
    assert_eq!(
        std::fs::read(a.join("truth.json")).unwrap(),
        std::fs::read(b.join("truth.json")).unwrap()
    );
    let names: Vec<_> = std::fs::read_dir(a.join("dicom"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(!names.is_empty());
    for n in &names {
        assert_eq!(
            std::fs::read(a.join("dicom").join(n)).unwrap(),
            std::fs::read(b.join("dicom").join(n)).unwrap(),
            "{n:?} differs between identical runs"
        );
    }
    assert!(
        !a.join("mr.nii.gz").exists(),
        "--format dicom writes no NIfTI image"
    );
    let obj = dicom_object::open_file(a.join("dicom").join(&names[0])).unwrap();
    assert_eq!(obj.element(tags::MODALITY).unwrap().to_str().unwrap(), "MR");

    // A second run into the same directory is refused, then allowed with --overwrite.
    assert_fails(
        &[
            "study",
            "--in-plane",
            "64",
            "--lesions",
            "none",
            "--out",
            out_arg(&a),
        ],
        1,
        "--overwrite",
    );
    assert_success(&run(&a, &["--overwrite"]));
    // --overwrite never deletes files it did not write.
    std::fs::write(a.join("notes.txt"), b"mine").unwrap();
    let o = run(&a, &["--overwrite"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(a.join("notes.txt").exists());
}

#[test]
fn bad_options_fail_with_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x");
    let o = out_arg(&out);
    assert_fails(
        &["study", "--domain", "nope", "--out", o],
        1,
        "valid presets: ct-standard",
    );
    assert_fails(&["study", "--from", "L1", "--out", o], 2, "--to");
    assert_fails(
        &[
            "study", "--region", "lumbar", "--from", "L1", "--to", "L2", "--out", o,
        ],
        2,
        "cannot be used with",
    );
    assert_fails(
        &["study", "--from", "X9", "--to", "L2", "--out", o],
        2,
        "X9",
    );
    assert_fails(
        &["study", "--from", "L4", "--to", "L1", "--out", o],
        1,
        "is empty",
    );
    assert_fails(
        &[
            "study",
            "--from",
            "L1",
            "--to",
            "L2",
            "--lesions",
            "9",
            "--out",
            o,
        ],
        1,
        "cannot place 9 lesions",
    );
    assert_fails(
        &["study", "--lesions", "some", "--out", o],
        2,
        "none, random",
    );
    assert_fails(&["study", "--in-plane", "0", "--out", o], 1, "in_plane");
    assert!(
        !out.exists(),
        "nothing is written when the options are wrong"
    );
    // --out is a file.
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    assert_fails(
        &["study", "--in-plane", "64", "--out", out_arg(&file)],
        1,
        "not a directory",
    );
    assert_fails(
        &[
            "dataset",
            "--cases-per-domain",
            "1",
            "--from",
            "L1",
            "--to",
            "L2",
            "--lesions",
            "4",
            "--out",
            o,
        ],
        1,
        "cannot place 4 lesions",
    );
    assert!(
        !out.exists(),
        "a dataset is checked before anything is written"
    );
    assert_fails(
        &["dataset", "--cases-per-domain", "0", "--out", o],
        1,
        "at least 1",
    );
    assert_fails(
        &[
            "dataset",
            "--cases-per-domain",
            "1",
            "--domains",
            "ct-standard,ct-standard",
            "--out",
            o,
        ],
        1,
        "listed twice",
    );
}

/// Parses manifest.csv (no quoted fields are expected in it) into header and rows.
fn read_manifest(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap()
        .split(',')
        .map(str::to_owned)
        .collect();
    let rows = lines
        .map(|l| l.split(',').map(str::to_owned).collect::<Vec<_>>())
        .collect();
    (header, rows)
}

#[test]
fn dataset_writes_cases_manifest_and_progress() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("ds");
    let o = phantom_cli(&[
        "dataset",
        "--domains",
        "ct-standard,mr-t1-like",
        "--cases-per-domain",
        "2",
        "--base-seed",
        "100",
        "--from",
        "L1",
        "--to",
        "L3",
        "--in-plane",
        "64",
        "--lesions",
        "none",
        "--jobs",
        "2",
        "--out",
        out_arg(&out),
    ]);
    assert_success(&o);
    let progress = stderr(&o);
    assert!(progress.contains("case 4/4"), "{progress}");
    assert!(progress.contains("ETA"), "{progress}");

    let (header, rows) = read_manifest(&out.join("manifest.csv"));
    assert_eq!(
        header,
        [
            "id",
            "patient_id",
            "study_uid",
            "domain",
            "modality",
            "image",
            "labels",
            "centroids",
            "lesions",
            "split"
        ]
    );
    assert_eq!(rows.len(), 4);
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut seeds = Vec::new();
    for row in &rows {
        assert_eq!(row.len(), header.len());
        assert_eq!(row[col("split")], "", "split is left to the trainer");
        for file in ["image", "labels", "centroids", "lesions"] {
            let p = out.join(&row[col(file)]);
            assert!(p.is_file(), "{} is missing", p.display());
        }
        let truth = read_truth(&out.join(&row[col("centroids")]));
        assert_eq!(truth.domain, row[col("domain")]);
        assert_eq!(row[col("patient_id")], format!("PHANTOM-{}", truth.seed));
        assert!(row[col("study_uid")].starts_with("2.25."));
        assert!(row[col("id")].starts_with(&truth.domain));
        seeds.push(truth.seed);
    }
    seeds.sort_unstable();
    assert_eq!(
        seeds,
        [100, 101, 102, 103],
        "unpaired cases are distinct patients"
    );
    assert!(rows.iter().any(|r| r[col("modality")] == "MrT1Like"));
    assert!(rows.iter().any(|r| r[col("image")].ends_with("mr.nii.gz")));

    // --paired: the same patients in both domains, as different studies.
    let paired = dir.path().join("paired");
    let o = phantom_cli(&[
        "dataset",
        "--domains",
        "ct-standard,ct-bone-sharp",
        "--cases-per-domain",
        "2",
        "--paired",
        "--from",
        "L2",
        "--to",
        "L3",
        "--in-plane",
        "64",
        "--lesions",
        "none",
        "--format",
        "dicom",
        "--out",
        out_arg(&paired),
    ]);
    assert_success(&o);
    let (header, rows) = read_manifest(&paired.join("manifest.csv"));
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    let mut patients: Vec<&str> = rows.iter().map(|r| r[col("patient_id")].as_str()).collect();
    patients.sort_unstable();
    assert_eq!(
        patients,
        ["PHANTOM-0", "PHANTOM-0", "PHANTOM-1", "PHANTOM-1"]
    );
    let mut studies: Vec<&str> = rows.iter().map(|r| r[col("study_uid")].as_str()).collect();
    studies.sort_unstable();
    studies.dedup();
    assert_eq!(studies.len(), 4, "one study per case");
    for row in &rows {
        assert!(out_dir_is_series(&paired.join(&row[col("image")])));
    }
}

/// Whether `dir` holds a DICOM series written by this tool.
fn out_dir_is_series(dir: &Path) -> bool {
    dir.is_dir() && dir.join("IMG00001.dcm").is_file()
}
