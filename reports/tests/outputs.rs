//! SEG and SR validated by tools we did not write: dciodvfy (dicom3tools), highdicom (rebuilds
//! the label volume voxel by voxel and reads the SR's measurement groups), DCMTK dsrdump and
//! dcmdump. Source series are written by vertebra-core's CT writer (axial, oblique, sagittal,
//! a phantom) or are the real JPEG 2000 series in /work/shared/data/real.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use dicom_dictionary_std::tags;
use vertebra_core::anatomy::{LesionClass, Vertebra};
use vertebra_core::phantom::{self, PhantomSpec, domain};
use vertebra_core::{Geometry, Volume};
use vertebra_reports::palette::vertebra_rgb;
use vertebra_reports::{
    AnalysisFindings, LesionHeatmap, SourceSeries, build_fractional_seg, build_seg, build_sr,
    write_part10,
};

/// Builds SEG and SR for `findings` on `source`, writes them into `out`, and runs every
/// external check: dciodvfy, highdicom (SEG voxels, SR groups), dsrdump, dcmdump.
fn build_and_check(
    name: &str,
    source_dir: &Path,
    slice_uids: &[String],
    findings: &AnalysisFindings,
    out: &Path,
) {
    let source = SourceSeries::from_dir(source_dir).unwrap();
    let algorithm = algorithm();
    let seg_id = identity("seg", 901);
    let seg = build_seg(&source, findings, &algorithm, &seg_id).unwrap();
    let sr = build_sr(&source, findings, &algorithm, &seg, &identity("sr", 902)).unwrap();
    let seg_path = out.join(format!("{name}-seg.dcm"));
    let sr_path = out.join(format!("{name}-sr.dcm"));
    write_part10(&seg, &seg_path).unwrap();
    write_part10(&sr, &sr_path).unwrap();

    let seg_warnings = dciodvfy_clean(&seg_path, "Segmentation");
    let sr_warnings = dciodvfy_clean(&sr_path, "Comprehensive3DSR");
    eprintln!("{name}: dciodvfy SEG warnings {seg_warnings:#?}\nSR warnings {sr_warnings:#?}");

    // highdicom: segments, codes, colours, per-frame geometry and voxels.
    let labels_raw = out.join(format!("{name}-labels.raw"));
    std::fs::write(&labels_raw, findings.labels.data()).unwrap();
    let mut vertebrae: Vec<Vertebra> = findings.vertebrae.iter().map(|v| v.vertebra).collect();
    vertebrae.sort();
    let segments: Vec<serde_json::Value> = vertebrae
        .iter()
        .map(|v| {
            serde_json::json!({
                "label": v.name(), "value": v.label(), "category": "91723000",
                "type": v.snomed().value, "rgb": vertebra_rgb(*v),
            })
        })
        .collect();
    let spec = serde_json::json!({
        "source_dir": source_dir, "slice_uids": slice_uids, "labels_raw": labels_raw,
        "dims": findings.labels.dims(), "segments": segments,
    });
    let spec_path = out.join(format!("{name}-seg.json"));
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let report = run_python_check("check_seg.py", &[&seg_path, &spec_path]);
    eprintln!("{name}: highdicom SEG check {report}");

    // highdicom: SR measurement groups.
    let mut sorted: Vec<_> = findings.vertebrae.iter().collect();
    sorted.sort_by_key(|v| v.vertebra);
    let vertebra_specs: Vec<serde_json::Value> = sorted
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let h = v.heights_mm.unwrap();
            serde_json::json!({
                "name": v.vertebra.name(), "site": v.vertebra.snomed().value, "segment": i + 1,
                "volume": v.volume_mm3, "hu": v.mean_trabecular_hu.unwrap(),
                "heights": [h.anterior_mm, h.middle_mm, h.posterior_mm],
                "ratio": h.height_loss_ratio, "confidence": v.confidence,
                "genant": v.genant.map(|g| format!("GENANT{}", g as u8)),
            })
        })
        .collect();
    let first = vertebrae[0].snomed().value;
    let spec = serde_json::json!({
        "seg_uid": seg_id.sop_instance_uid,
        "algorithm": [algorithm.bundle_name, algorithm.bundle_version],
        "vertebrae": vertebra_specs,
        "lesions": [
            {"finding": "72704001", "site": first, "graphic_type": "ELLIPSOID",
             // Hand-computed axes of centre (10.5, -20.25, 30), size (8, 12, 5): P, then L, then S.
             "points": [10.5, -26.25, 30.0, 10.5, -14.25, 30.0,
                        6.5, -20.25, 30.0, 14.5, -20.25, 30.0,
                        10.5, -20.25, 27.5, 10.5, -20.25, 32.5],
             "score": 0.87, "class": "FRACTURE"},
            {"finding": "14799000", "site": first, "graphic_type": "POINT",
             "points": [-4.0, 2.5, 31.75], "score": 0.55, "class": "LYTICMET"},
            {"finding": "409774005", "site": null, "graphic_type": "POINT",
             "points": [1.5, 3.0, 29.0], "score": 0.41, "class": "INFECTEROS"},
        ],
    });
    let spec_path = out.join(format!("{name}-sr.json"));
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let report = run_python_check("check_sr.py", &[&sr_path, &spec_path]);
    eprintln!("{name}: highdicom SR check {report}");

    // DCMTK: dsrdump parses the SR; dcmdump shows no private attributes in either object.
    let out_sr = Command::new(dcmtk("dsrdump"))
        .arg(&sr_path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out_sr.stdout);
    assert!(
        out_sr.status.success() && text.contains("Imaging Measurement Report"),
        "dsrdump failed:\n{text}\n{}",
        String::from_utf8_lossy(&out_sr.stderr)
    );
    for path in [&seg_path, &sr_path] {
        let dump = Command::new(dcmtk("dcmdump")).arg(path).output().unwrap();
        assert!(
            dump.status.success(),
            "dcmdump failed on {}",
            path.display()
        );
        let text = String::from_utf8_lossy(&dump.stdout);
        let private: Vec<&str> = text
            .lines()
            .filter(|l| {
                let l = l.trim_start();
                l.starts_with('(') && u16::from_str_radix(&l[1..5], 16).is_ok_and(|g| g % 2 == 1)
            })
            .collect();
        assert!(
            private.is_empty(),
            "private attributes in {}: {private:?}",
            path.display()
        );
    }
}

/// Writes a gradient CT on `geometry`, box vertebrae on the same grid, and checks everything.
fn check_synthetic(name: &str, dims: [usize; 3], geometry: &Geometry) {
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("ct");
    let uids = write_source(&series, dims, geometry, 11);
    let findings = findings_for(box_labels(dims, geometry));
    build_and_check(name, &series, &uids, &findings, dir.path());
}

#[test]
fn axial_seg_and_sr_pass_external_validators() {
    let geometry = Geometry::axis_aligned([0.7, 0.9, 2.5], [-20.3, 15.1, -300.25]);
    check_synthetic("axial", [40, 32, 12], &geometry);
}

#[test]
fn oblique_source_series_round_trips_voxel_by_voxel() {
    let (a, b) = (0.3_f64, -0.4_f64);
    let (ca, sa, cb, sb) = (a.cos(), a.sin(), b.cos(), b.sin());
    let r = [
        [ca, -sa * cb, sa * sb],
        [sa, ca * cb, -ca * sb],
        [0.0, sb, cb],
    ];
    let geometry = Geometry {
        spacing: [0.8, 0.65, 1.7],
        origin: [101.25, -37.5, 512.125],
        direction: [
            [r[0][0], r[1][0], r[2][0]],
            [r[0][1], r[1][1], r[2][1]],
            [r[0][2], r[1][2], r[2][2]],
        ],
    };
    check_synthetic("oblique", [36, 30, 12], &geometry);
}

#[test]
fn sagittal_source_series_round_trips_voxel_by_voxel() {
    // Rows run posterior, columns run feet-ward, slices advance to the patient's right.
    let geometry = Geometry {
        spacing: [0.6, 0.75, 2.0],
        origin: [40.0, -80.0, 150.0],
        direction: [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]],
    };
    check_synthetic("sagittal", [30, 44, 9], &geometry);
}

/// The real JPEG 2000 Lossless CT series as the source of a SEG and SR.
///
/// The sample was anonymised down to empty Study/Series/SOP Instance UIDs (only the file meta
/// keeps the SOP Instance UID), which no DICOM object can reference. pydicom therefore copies it
/// with those UIDs filled in (SOP Instance UID from the file meta, the others fixed) and the
/// JPEG 2000 pixel data untouched; our reader sees only headers, as in production.
#[test]
fn real_jpeg2000_series_is_a_valid_source() {
    let real = Path::new("/work/shared/data/real/totalsegmentator-example-dicom");
    assert!(
        real.is_dir(),
        "{} is missing (see /work/shared/data/real/README.md)",
        real.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let series = dir.path().join("real");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/repair_real_series.py");
    let python = venv(&["python"]).join("bin/python");
    let out = Command::new(python)
        .arg(script)
        .arg(real)
        .arg(&series)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let uids: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    let source = SourceSeries::from_dir(&series).unwrap();
    assert_eq!(source.dims(), [512, 512, 20]);
    let geometry = source.geometry().unwrap();
    let findings = findings_for(box_labels(source.dims(), &geometry));
    build_and_check("jpeg2000", &series, &uids, &findings, dir.path());
}

/// A phantom from vertebra-core written as a CT series, with its ground-truth labels as the
/// result: the end-to-end path the engine will take.
fn phantom_case(dir: &Path) -> (PathBuf, Vec<String>, AnalysisFindings) {
    let mut spec = PhantomSpec::new(
        7,
        Vertebra::L1,
        Vertebra::L2,
        domain::preset("ct-standard").unwrap(),
    );
    spec.in_plane = 48;
    spec.slices = Some(40);
    let p = phantom::generate(&spec).unwrap();
    let series = dir.join("phantom-ct");
    let meta = vertebra_core::dicom_series::SeriesMeta::from_preset(p.seed, &spec.domain);
    let written = vertebra_core::dicom_series::write_ct_series(&p.ct, &meta, &series).unwrap();
    let mut findings = findings_for(p.labels.clone());
    for (v, c) in findings.vertebrae.iter_mut().zip(&p.centroids) {
        v.centroid_lps = c.world;
        v.volume_mm3 = c.voxels as f64 * p.labels.geometry().voxel_volume_mm3();
    }
    (series, written.sop_instance_uids, findings)
}

#[test]
fn phantom_seg_and_sr_pass_external_validators() {
    let dir = tempfile::tempdir().unwrap();
    let (series, uids, findings) = phantom_case(dir.path());
    assert!(
        findings.vertebrae.len() >= 2,
        "phantom has {} vertebrae",
        findings.vertebrae.len()
    );
    build_and_check("phantom", &series, &uids, &findings, dir.path());
}

/// Golden output: a fixed phantom case gives the same SEG and SR, byte for byte, apart from
/// UIDs and dates/times (normalised before hashing). Set `VERTEBRA_BLESS=1` to accept a
/// deliberate change, and explain it in the commit.
#[test]
fn phantom_outputs_are_byte_stable() {
    let dir = tempfile::tempdir().unwrap();
    let (series, _, findings) = phantom_case(dir.path());
    let source = SourceSeries::from_dir(&series).unwrap();
    let seg = build_seg(&source, &findings, &algorithm(), &identity("seg", 901)).unwrap();
    let sr = build_sr(&source, &findings, &algorithm(), &seg, &identity("sr", 902)).unwrap();
    // Same inputs, same bytes (no clock, no random UIDs).
    let seg_again = build_seg(&source, &findings, &algorithm(), &identity("seg", 901)).unwrap();
    assert_eq!(
        vertebra_reports::to_part10_bytes(&seg).unwrap(),
        vertebra_reports::to_part10_bytes(&seg_again).unwrap()
    );
    let got = format!(
        "seg {:016x}\nsr {:016x}\n",
        golden::normalised_hash(&vertebra_reports::to_part10_bytes(&seg).unwrap()),
        golden::normalised_hash(&vertebra_reports::to_part10_bytes(&sr).unwrap()),
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/phantom-seed7.txt");
    if std::env::var_os("VERTEBRA_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "{} is missing; run with VERTEBRA_BLESS=1 once to create it",
            path.display()
        )
    });
    assert_eq!(
        got, want,
        "SEG/SR output changed for the golden phantom case; if intended, rerun with \
         VERTEBRA_BLESS=1 and justify the change"
    );
}

/// Optional FRACTIONAL SEG of lesion heatmaps: dciodvfy and highdicom read it back exactly.
#[test]
fn fractional_lesion_seg_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let geometry = Geometry::axis_aligned([0.8, 0.8, 2.0], [0.0, 0.0, 0.0]);
    let dims = [24, 20, 8];
    let series = dir.path().join("ct");
    let uids = write_source(&series, dims, &geometry, 12);
    let source = SourceSeries::from_dir(&series).unwrap();
    let blob = |cx: f64, cz: f64| -> Volume<f32> {
        let data = (0..dims[0] * dims[1] * dims[2])
            .map(|i| {
                let (x, y, z) = (
                    i % dims[0],
                    (i / dims[0]) % dims[1],
                    i / (dims[0] * dims[1]),
                );
                let d2 = (x as f64 - cx).powi(2)
                    + (y as f64 - 10.0).powi(2)
                    + 4.0 * (z as f64 - cz).powi(2);
                let p = (-d2 / 12.0).exp();
                if p < 0.01 { 0.0 } else { p as f32 }
            })
            .collect();
        Volume::from_vec(dims, data, geometry).unwrap()
    };
    let heatmaps = vec![
        LesionHeatmap {
            class: LesionClass::ScleroticMetastasis,
            probability: blob(16.0, 5.0),
        },
        LesionHeatmap {
            class: LesionClass::Fracture,
            probability: blob(6.0, 2.0),
        },
    ];
    let seg =
        build_fractional_seg(&source, &heatmaps, &algorithm(), &identity("frac", 903)).unwrap();
    let path = dir.path().join("frac.dcm");
    write_part10(&seg, &path).unwrap();
    let warnings = dciodvfy_clean(&path, "Segmentation");
    eprintln!("fractional SEG warnings {warnings:#?}");
    // Expected quantised values, segment order = class order (fracture first).
    let mut raw = Vec::new();
    for h in [&heatmaps[1], &heatmaps[0]] {
        raw.extend(
            h.probability
                .data()
                .iter()
                .map(|&p| (f64::from(p) * 255.0).round() as u8),
        );
    }
    let raw_path = dir.path().join("frac.raw");
    std::fs::write(&raw_path, raw).unwrap();
    let spec = serde_json::json!({
        "source_dir": series, "slice_uids": uids, "labels_raw": raw_path, "dims": dims,
        "fractional": true,
        "segments": [
            {"label": "Vertebral compression fracture", "category": "49755003", "type": "72704001", "rgb": [255, 0, 255]},
            {"label": "Sclerotic metastasis", "category": "49755003", "type": "14799000", "rgb": [0, 255, 255]},
        ],
    });
    let spec_path = dir.path().join("frac.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    eprintln!("{}", run_python_check("check_seg.py", &[&path, &spec_path]));
}

/// The failure modes behind flipped and out-of-plane SEGs are refused, not written.
#[test]
fn label_volumes_off_the_source_grid_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let geometry = Geometry::axis_aligned([0.7, 0.9, 2.5], [-20.3, 15.1, -300.25]);
    let dims = [20, 16, 6];
    write_source(dir.path(), dims, &geometry, 13);
    let source = SourceSeries::from_dir(dir.path()).unwrap();
    let good = findings_for(box_labels(dims, &geometry));
    build_seg(&source, &good, &algorithm(), &identity("seg", 1)).unwrap();
    let expect_err = |g: Geometry, d: [usize; 3], what: &str, needle: &str| {
        let mut f = good.clone();
        f.labels = Volume::from_vec(d, good.labels.data().to_vec(), g).unwrap();
        let err = rejection(
            build_seg(&source, &f, &algorithm(), &identity("seg", 1)),
            what,
        );
        assert!(err.contains(needle), "{what}: {err}");
    };
    // x flipped (as after an LPS -> RAS mix-up): mirrored display.
    let mut g = geometry;
    g.direction[0] = [-1.0, 0.0, 0.0];
    g.origin[0] += 0.7 * 19.0;
    expect_err(g, dims, "x flipped", "flipped");
    // z flipped (slices in reverse order): wrong slice per frame.
    let mut g = geometry;
    g.direction[2] = [0.0, 0.0, -1.0];
    g.origin[2] += 2.5 * 5.0;
    expect_err(g, dims, "z flipped", "flipped");
    // Axes swapped (a transposed/reoriented volume): frames out of plane.
    let mut g = geometry;
    g.direction = [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]];
    expect_err(g, dims, "transposed", "not on the source grid");
    // Shifted by half a slice.
    let mut g = geometry;
    g.origin[2] += 1.25;
    expect_err(g, dims, "shifted", "shifted");
    // Cropped.
    let mut f = good.clone();
    f.labels = Volume::from_vec(
        [20, 16, 5],
        good.labels.data()[..20 * 16 * 5].to_vec(),
        geometry,
    )
    .unwrap();
    assert!(build_seg(&source, &f, &algorithm(), &identity("seg", 1)).is_err());
    // A label without a finding, a finding without voxels.
    let mut f = good.clone();
    f.vertebrae.remove(0);
    let err = rejection(
        build_seg(&source, &f, &algorithm(), &identity("seg", 1)),
        "unlisted",
    );
    assert!(err.contains("no vertebra finding"), "{err}");
    let mut f = good.clone();
    let mut extra = f.vertebrae[0].clone();
    extra.vertebra = Vertebra::C3;
    f.vertebrae.push(extra);
    let err = rejection(
        build_seg(&source, &f, &algorithm(), &identity("seg", 1)),
        "no voxels",
    );
    assert!(err.contains("no voxels"), "{err}");
    // Nothing found: no SEG.
    let mut f = good.clone();
    f.labels = Volume::from_vec(dims, vec![0; 20 * 16 * 6], geometry).unwrap();
    f.vertebrae.clear();
    assert!(matches!(
        build_seg(&source, &f, &algorithm(), &identity("seg", 1)),
        Err(vertebra_reports::Error::Empty(_))
    ));
}

/// The error of a build that must fail; never prints the object (it holds patient data).
fn rejection<T>(r: vertebra_reports::Result<T>, what: &str) -> String {
    match r {
        Ok(_) => panic!("{what}: the writer accepted an invalid input"),
        Err(e) => e.to_string(),
    }
}

/// Patient/study attributes are copied from the source, verbatim; the SEG's frames reference
/// only instances of the source series.
#[test]
fn patient_and_study_attributes_are_copied() {
    let dir = tempfile::tempdir().unwrap();
    let geometry = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.0, 0.0, 0.0]);
    let dims = [16, 16, 6];
    write_source(dir.path(), dims, &geometry, 14);
    let source = SourceSeries::from_dir(dir.path()).unwrap();
    assert!(
        !format!("{source:?}").contains("PHANTOM^14"),
        "Debug must not print the patient name"
    );
    let findings = findings_for(box_labels(dims, &geometry));
    let seg = build_seg(&source, &findings, &algorithm(), &identity("seg", 1)).unwrap();
    let sr = build_sr(&source, &findings, &algorithm(), &seg, &identity("sr", 2)).unwrap();
    for obj in [&seg, &sr] {
        let s = |t| obj.element(t).unwrap().to_str().unwrap().trim().to_owned();
        assert_eq!(s(tags::PATIENT_NAME), "PHANTOM^14");
        assert_eq!(s(tags::PATIENT_ID), "PHANTOM-14");
        assert_eq!(s(tags::STUDY_INSTANCE_UID), source.study_instance_uid);
        assert_eq!(s(tags::STUDY_DATE), "20000101");
        assert_ne!(s(tags::SERIES_INSTANCE_UID), source.series_instance_uid);
    }
}

mod golden {
    //! Normalisation for the golden test: UIDs (except standard ones) become their order of
    //! appearance, dates and times a placeholder; everything else is hashed as read.

    use dicom_core::VR;
    use dicom_core::value::Value;
    use dicom_object::InMemDicomObject;
    use std::collections::HashMap;
    use std::fmt::Write;

    /// FNV-1a 64 of the normalised dump of a Part-10 byte stream.
    pub fn normalised_hash(bytes: &[u8]) -> u64 {
        let obj = dicom_object::OpenFileOptions::new()
            .from_reader(std::io::Cursor::new(&bytes[128..]))
            .unwrap();
        let mut uids = HashMap::new();
        let mut out = String::new();
        dump(&obj, &mut uids, &mut out, 0);
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in out.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    }

    fn dump(
        obj: &InMemDicomObject,
        uids: &mut HashMap<String, usize>,
        out: &mut String,
        depth: usize,
    ) {
        for e in obj {
            let tag = e.header().tag;
            let vr = e.header().vr;
            let _ = write!(out, "{depth} {tag} {vr:?} ");
            match e.value() {
                Value::Sequence(seq) => {
                    out.push_str("SQ\n");
                    for item in seq.items() {
                        dump(item, uids, out, depth + 1);
                    }
                }
                Value::Primitive(_) | Value::PixelSequence(_) => {
                    let text = e
                        .to_str()
                        .map(std::borrow::Cow::into_owned)
                        .unwrap_or_default();
                    let shown = match vr {
                        VR::UI if !text.starts_with("1.2.840.10008.") && !text.is_empty() => {
                            let n = uids.len();
                            format!("UID#{}", *uids.entry(text).or_insert(n))
                        }
                        VR::DA | VR::TM | VR::DT => "<datetime>".to_owned(),
                        VR::OB | VR::OW => format!("{:?}", e.to_bytes().unwrap_or_default()),
                        _ => text,
                    };
                    out.push_str(&shown);
                    out.push('\n');
                }
            }
        }
    }
}
