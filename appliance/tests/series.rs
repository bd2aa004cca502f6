//! Series → volume loading (`vertebrad::series`) against real parts: series written by
//! `vertebra_core::dicom_series` (an independent writer), transcoded by DCMTK (`dcmconv`,
//! `dcmcjpeg`, `dcmdjpeg`, `dcmcrle`, `dcmcjpls`), edited with dicom-object into each failure
//! class, an Enhanced CT multi-frame file built here, and the real JPEG 2000 CT series of
//! `/work/shared/data/real/` cross-checked against pydicom (+ pylibjpeg-openjpeg).
//!
//! A missing tool fails the test with instructions: nothing is skipped silently.

mod support;

use support::venv_python;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use dicom_core::value::{C, DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject, open_file};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use vertebra_core::dicom_series::{SeriesMeta, WrittenSeries, ds, write_ct_series};
use vertebra_core::phantom::domain::Modality as PhantomModality;
use vertebra_core::{Geometry, Volume};
use vertebrad::series::{LoadedSeries, Modality, SeriesError, SeriesOptions, load_series};

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// A DCMTK tool, or a failure saying how to provision it.
fn dcmtk(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("DCMTK's {tool} is missing: run scripts/provision-system.sh (installs dcmtk)");
}

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Integer-valued random voxels (HU for CT, intensities for MR): exactly representable by the
/// writer's encoding, so a correct loader gives them back exactly.
fn random_volume(
    dims: [usize; 3],
    geometry: Geometry,
    seed: u64,
    range: (i32, i32),
) -> Volume<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let data = (0..dims.iter().product())
        .map(|_| rng.random_range(range.0..=range.1) as f32)
        .collect();
    Volume::from_vec(dims, data, geometry).unwrap()
}

/// Writes a random CT volume as a series into `dir`.
fn write_ct(
    dir: &Path,
    dims: [usize; 3],
    geometry: Geometry,
    seed: u64,
) -> (Volume<f32>, WrittenSeries) {
    let volume = random_volume(dims, geometry, seed, (-1024, 3071));
    let meta = SeriesMeta::new(seed, "series-test", PhantomModality::Ct);
    let written = write_ct_series(&volume, &meta, dir).unwrap();
    (volume, written)
}

/// The small axis-aligned series most failure tests start from: 12 × 10 × 18, 1.5 mm slices.
fn base_series(dir: &Path) -> WrittenSeries {
    let g = Geometry::axis_aligned([0.7, 0.8, 1.5], [-10.0, 20.0, -300.0]);
    write_ct(dir, [12, 10, 18], g, 5).1
}

fn load(dir: &Path) -> Result<LoadedSeries, SeriesError> {
    load_series(dir, &SeriesOptions::default())
}

fn assert_geometry_close(a: &Geometry, b: &Geometry, tol: f64) {
    let pairs = a
        .spacing
        .iter()
        .chain(&a.origin)
        .chain(a.direction.iter().flatten())
        .zip(
            b.spacing
                .iter()
                .chain(&b.origin)
                .chain(b.direction.iter().flatten()),
        );
    for (x, y) in pairs {
        assert!((x - y).abs() <= tol, "geometry differs:\n{a:?}\n{b:?}");
    }
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Rewrites `path` after `edit` changed its data set.
fn edit(path: &Path, f: impl FnOnce(&mut InMemDicomObject)) {
    let mut obj = open_file(path).unwrap();
    f(&mut obj);
    obj.write_to_file(path).unwrap();
}

fn put_ds(obj: &mut InMemDicomObject, tag: Tag, values: &[f64]) {
    obj.put(DataElement::new(
        tag,
        VR::DS,
        PrimitiveValue::Strs(values.iter().map(|&v| ds(v)).collect()),
    ));
}

/// A multi-valued string value.
fn strs(values: &[&str]) -> PrimitiveValue {
    PrimitiveValue::Strs(values.iter().map(|v| (*v).to_owned()).collect())
}

fn position(path: &Path) -> Vec<f64> {
    open_file(path)
        .unwrap()
        .element(tags::IMAGE_POSITION_PATIENT)
        .unwrap()
        .to_multi_float64()
        .unwrap()
}

/// Right-handed rotation (Rodrigues) about `axis` by `angle`: its rows are a right-handed
/// orthonormal direction set.
fn rotation(axis: [f64; 3], angle: f64) -> [[f64; 3]; 3] {
    let n = (axis[0] * axis[0] + axis[1] * axis[1] + axis[2] * axis[2]).sqrt();
    let [x, y, z] = axis.map(|a| a / n);
    let (s, c) = angle.sin_cos();
    let t = 1.0 - c;
    [
        [t * x * x + c, t * x * y - s * z, t * x * z + s * y],
        [t * x * y + s * z, t * y * y + c, t * y * z - s * x],
        [t * x * z - s * y, t * y * z + s * x, t * z * z + c],
    ]
}

// ---------------------------------------------------------------------------------------------
// (1) Round trips of phantom series written by vertebra-core
// ---------------------------------------------------------------------------------------------

/// Writes `volume` as CT, hides the files under shuffled names in a subdirectory next to a
/// non-DICOM file and a DICOMDIR, loads the directory and checks geometry, HU and order.
fn round_trip(volume: &Volume<f32>, seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let written = tmp.path().join("written");
    let meta = SeriesMeta::new(seed, "series-test", PhantomModality::Ct);
    let w = write_ct_series(volume, &meta, &written).unwrap();
    // Names in reverse z order, one directory down: order must come from positions.
    let root = tmp.path().join("study");
    let sub = root.join("sub");
    fs::create_dir_all(&sub).unwrap();
    let n = w.files.len();
    for (k, f) in w.files.iter().enumerate() {
        fs::copy(f, sub.join(format!("slice-{:03}", n - k))).unwrap();
    }
    fs::write(root.join("notes.txt"), "not DICOM").unwrap();
    fs::write(root.join("DICOMDIR"), "ignored by name").unwrap();

    let loaded = load(&root).unwrap();
    assert_eq!(loaded.modality, Modality::Ct);
    assert_eq!(loaded.volume.dims(), volume.dims());
    assert_geometry_close(loaded.volume.geometry(), volume.geometry(), 1e-6);
    let diff = max_abs_diff(loaded.volume.data(), volume.data());
    assert!(diff <= 0.5, "HU differ by up to {diff}");
    assert_eq!(
        loaded.sop_instance_uids(),
        w.sop_instance_uids
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    assert_eq!(loaded.series_instance_uid, w.uids.series_instance_uid);
    assert_eq!(loaded.study_instance_uid, w.uids.study_instance_uid);
    assert_eq!(
        loaded.frame_of_reference_uid.as_deref(),
        Some(w.uids.frame_of_reference_uid.as_str())
    );
    assert_eq!(
        loaded.transfer_syntaxes,
        vec![uids::EXPLICIT_VR_LITTLE_ENDIAN.to_owned()]
    );
    assert_eq!(loaded.files.len(), n);
    assert!(loaded.slices.iter().all(|s| s.frame_number.is_none()));
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.starts_with("1 file(s) ignored")),
        "{:?}",
        loaded.warnings
    );
    // Debug shows sizes, never the voxels.
    let debug = format!("{loaded:?}");
    assert!(debug.len() < 2000 && debug.contains("dims"), "{debug}");
}

#[test]
fn axial_phantom_round_trips_exactly() {
    let g = Geometry::axis_aligned([0.7, 0.8, 1.5], [-10.5, 20.25, -300.0]);
    round_trip(&random_volume([20, 16, 18], g, 1, (-1024, 3071)), 1);
}

#[test]
fn real_phantom_anatomy_round_trips_exactly() {
    use vertebra_core::anatomy::Vertebra;
    use vertebra_core::phantom::{PhantomSpec, domain::presets, generate};
    let preset = presets()
        .into_iter()
        .find(|p| p.modality == PhantomModality::Ct)
        .expect("a CT domain preset");
    let mut spec = PhantomSpec::new(3, Vertebra::L1, Vertebra::L2, preset);
    spec.in_plane = 48;
    spec.slices = Some(24);
    let phantom = generate(&spec).unwrap();
    // The writer rounds to whole HU; compare against the rounded phantom.
    let rounded: Vec<f32> = phantom.ct.data().iter().map(|v| v.round()).collect();
    let ct = Volume::from_vec(phantom.ct.dims(), rounded, *phantom.ct.geometry()).unwrap();
    round_trip(&ct, 3);
}

#[test]
fn oblique_phantom_round_trips_exactly() {
    let direction = rotation([1.0, 2.0, 3.0], 0.4);
    let g = Geometry {
        spacing: [0.9, 0.6, 2.5],
        origin: [12.3, -45.6, 78.9],
        direction,
    };
    round_trip(&random_volume([14, 18, 17], g, 2, (-1024, 3071)), 2);
}

#[test]
fn sagittal_acquired_phantom_round_trips_exactly() {
    // Rows run anterior → posterior, columns superior → inferior, slices right → left... and
    // the normal row × column points to the patient's right (−x).
    let g = Geometry {
        spacing: [0.5, 0.75, 3.0],
        origin: [40.0, -80.0, 120.0],
        direction: [[0.0, 1.0, 0.0], [0.0, 0.0, -1.0], [-1.0, 0.0, 0.0]],
    };
    round_trip(&random_volume([16, 12, 20], g, 4, (-1024, 3071)), 4);
}

#[test]
fn mr_series_loads_rescaled_intensities() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Geometry::axis_aligned([1.0, 1.0, 4.0], [0.0, 0.0, 0.0]);
    let volume = random_volume([10, 12, 16], g, 6, (0, 4000));
    let meta = SeriesMeta::new(6, "series-test", PhantomModality::MrT2Like);
    write_ct_series(&volume, &meta, tmp.path()).unwrap();
    let loaded = load(tmp.path()).unwrap();
    assert_eq!(loaded.modality, Modality::Mr);
    assert_geometry_close(loaded.volume.geometry(), volume.geometry(), 1e-6);
    assert_eq!(max_abs_diff(loaded.volume.data(), volume.data()), 0.0);
}

#[test]
fn per_slice_rescale_is_applied() {
    // Scanners may change slope/intercept from slice to slice; HU must not change.
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    let before = load(tmp.path()).unwrap();
    edit(&w.files[3], |obj| {
        let px = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_multi_int::<i32>()
            .unwrap();
        // HU = stored − 1024 = 0.5 × stored' − 512 with stored' = 2 × (stored − 512).
        let doubled: Vec<i16> = px.iter().map(|&v| ((v - 512) * 2) as i16).collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::I16(C::from_vec(doubled)),
        ));
        put_ds(obj, tags::RESCALE_SLOPE, &[0.5]);
        put_ds(obj, tags::RESCALE_INTERCEPT, &[-512.0]);
    });
    let after = load(tmp.path()).unwrap();
    assert_eq!(max_abs_diff(before.volume.data(), after.volume.data()), 0.0);
}

#[test]
fn single_file_path_loads_and_threads_option_is_honoured() {
    let tmp = tempfile::tempdir().unwrap();
    base_series(tmp.path());
    let one = load_series(
        tmp.path(),
        &SeriesOptions {
            threads: 1,
            ..SeriesOptions::default()
        },
    )
    .unwrap();
    let many = load_series(
        tmp.path(),
        &SeriesOptions {
            threads: 4,
            ..SeriesOptions::default()
        },
    )
    .unwrap();
    assert_eq!(one, many);
}

// ---------------------------------------------------------------------------------------------
// (2) One test per failure class
// ---------------------------------------------------------------------------------------------

fn expect_err(dir: &Path, class: &str) -> SeriesError {
    match load(dir) {
        Ok(s) => panic!("expected a {class} error, loaded {s:?}"),
        Err(e) => {
            assert_eq!(e.class(), class, "{e}");
            e
        }
    }
}

#[test]
fn duplicate_position_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    let p5 = position(&w.files[5]);
    edit(&w.files[6], |obj| {
        put_ds(obj, tags::IMAGE_POSITION_PATIENT, &p5);
    });
    let e = expect_err(tmp.path(), "duplicate_position");
    let SeriesError::DuplicatePosition { at_mm, .. } = e else {
        unreachable!()
    };
    assert!((at_mm - (-300.0 + 5.0 * 1.5)).abs() < 1e-9, "{at_mm}");
}

#[test]
fn missing_slice_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    fs::remove_file(&w.files[8]).unwrap();
    let e = expect_err(tmp.path(), "missing_slices");
    let SeriesError::MissingSlices {
        gap_mm,
        median_mm,
        ref after,
        ..
    } = e
    else {
        unreachable!()
    };
    assert!(
        (gap_mm - 3.0).abs() < 1e-9 && (median_mm - 1.5).abs() < 1e-9,
        "{e}"
    );
    assert!(after.starts_with("instance 8 "), "{after}");
}

#[test]
fn irregular_spacing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    let mut p = position(&w.files[6]);
    p[2] += 0.45;
    edit(&w.files[6], |obj| {
        put_ds(obj, tags::IMAGE_POSITION_PATIENT, &p);
    });
    let e = expect_err(tmp.path(), "irregular_spacing");
    let SeriesError::IrregularSpacing { deviation_mm, .. } = e else {
        unreachable!()
    };
    assert!((deviation_mm - 0.45).abs() < 1e-6, "{deviation_mm}");
}

#[test]
fn mixed_orientation_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    let a = 10_f64.to_radians();
    edit(&w.files[4], |obj| {
        put_ds(
            obj,
            tags::IMAGE_ORIENTATION_PATIENT,
            &[a.cos(), a.sin(), 0.0, -a.sin(), a.cos(), 0.0],
        );
    });
    let e = expect_err(tmp.path(), "mixed_orientation");
    assert!(e.to_string().contains("IMG00005.dcm"), "{e}");
}

#[test]
fn mixed_size_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    edit(&w.files[9], |obj| {
        obj.put(DataElement::new(
            tags::ROWS,
            VR::US,
            PrimitiveValue::from(8_u16),
        ));
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::I16(C::from_vec(vec![0_i16; 8 * 12])),
        ));
    });
    let e = expect_err(tmp.path(), "mixed_size");
    assert!(e.to_string().contains("8 × 12"), "{e}");
}

#[test]
fn mixed_pixel_spacing_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    edit(&w.files[2], |obj| {
        put_ds(obj, tags::PIXEL_SPACING, &[0.8, 0.75]);
    });
    let e = expect_err(tmp.path(), "mixed_size");
    assert!(e.to_string().contains("Pixel Spacing"), "{e}");
}

#[test]
fn localizer_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    edit(&w.files[0], |obj| {
        obj.put(DataElement::new(
            tags::IMAGE_TYPE,
            VR::CS,
            strs(&["ORIGINAL", "PRIMARY", "LOCALIZER"]),
        ));
    });
    let e = expect_err(tmp.path(), "localizer");
    assert!(e.to_string().contains("LOCALIZER"), "{e}");
}

#[test]
fn non_cross_sectional_sop_class_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    edit(&w.files[0], |obj| {
        obj.put(DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            PrimitiveValue::from(uids::SECONDARY_CAPTURE_IMAGE_STORAGE),
        ));
    });
    let e = expect_err(tmp.path(), "localizer");
    assert!(
        e.to_string()
            .contains(uids::SECONDARY_CAPTURE_IMAGE_STORAGE),
        "{e}"
    );
}

#[test]
fn unsupported_modality_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    for f in &w.files {
        edit(f, |obj| {
            obj.put(DataElement::new(
                tags::MODALITY,
                VR::CS,
                PrimitiveValue::from("US"),
            ));
        });
    }
    let e = expect_err(tmp.path(), "unsupported_modality");
    assert!(e.to_string().contains("\"US\""), "{e}");
}

#[test]
fn gantry_tilt_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    // A 5° tilt: each slice shifted along the column direction by spacing × tan 5°.
    let shift = 1.5 * 5_f64.to_radians().tan();
    for (k, f) in w.files.iter().enumerate() {
        let mut p = position(f);
        p[1] += shift * k as f64;
        edit(f, |obj| put_ds(obj, tags::IMAGE_POSITION_PATIENT, &p));
    }
    let e = expect_err(tmp.path(), "gantry_tilt");
    let SeriesError::GantryTilt { degrees } = e else {
        unreachable!()
    };
    assert!((degrees - 5.0).abs() < 1e-3, "{degrees}");
}

#[test]
fn too_few_slices_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.0, 0.0, 0.0]);
    write_ct(tmp.path(), [8, 8, 6], g, 7);
    let e = expect_err(tmp.path(), "too_few_slices");
    assert!(
        matches!(e, SeriesError::TooFewSlices { found: 6, min: 16 }),
        "{e}"
    );
    // The minimum is an option.
    let opts = SeriesOptions {
        min_slices: 6,
        ..SeriesOptions::default()
    };
    assert_eq!(
        load_series(tmp.path(), &opts).unwrap().volume.dims(),
        [8, 8, 6]
    );
}

#[test]
fn two_series_in_one_directory_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    base_series(&tmp.path().join("a"));
    let g = Geometry::axis_aligned([1.0, 1.0, 2.0], [0.0, 0.0, 0.0]);
    let mr = random_volume([8, 8, 16], g, 8, (0, 1000));
    let meta = SeriesMeta::new(8, "series-test", PhantomModality::MrT1Like);
    write_ct_series(&mr, &meta, &tmp.path().join("b")).unwrap();
    let e = expect_err(tmp.path(), "multiple_series");
    let SeriesError::MultipleSeries { count, ref summary } = e else {
        unreachable!()
    };
    assert_eq!(count, 2);
    assert_eq!(summary, "CT 18 image(s), MR 16 image(s)");
    assert!(!e.to_string().contains("PHANTOM"), "patient data in {e}");
}

#[test]
fn no_images_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a.txt"), "hello").unwrap();
    fs::write(tmp.path().join("b.bin"), vec![0_u8; 300]).unwrap();
    let e = expect_err(tmp.path(), "no_images");
    assert!(matches!(e, SeriesError::NoImages { ignored: 2, .. }), "{e}");
}

#[test]
fn missing_attribute_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    edit(&w.files[7], |obj| {
        obj.remove_element(tags::IMAGE_POSITION_PATIENT);
    });
    let e = expect_err(tmp.path(), "missing_attribute");
    assert!(
        e.to_string()
            .contains("Image Position (Patient) (0020,0032)"),
        "{e}"
    );
    assert!(e.to_string().contains("IMG00008.dcm"), "{e}");
}

#[test]
fn damaged_pixel_data_is_a_decode_error() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    let bytes = fs::read(&w.files[3]).unwrap();
    fs::write(&w.files[3], &bytes[..bytes.len() - 100]).unwrap();
    let e = expect_err(tmp.path(), "decode");
    assert!(e.to_string().contains("IMG00004.dcm"), "{e}");
}

#[test]
fn jpeg_ls_is_an_unsupported_transfer_syntax() {
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    let f = &w.files[2];
    // DCMTK reads pixel data lazily: never write over its input.
    let jls = tmp.path().join("jls.tmp");
    run(Command::new(dcmtk("dcmcjpls")).arg(f).arg(&jls));
    fs::rename(&jls, f).unwrap();
    let e = expect_err(tmp.path(), "unsupported_transfer_syntax");
    let msg = e.to_string();
    assert!(
        msg.contains("unsupported transfer syntax 1.2.840.10008.1.2.4.80 (JPEG-LS Lossless"),
        "{msg}"
    );
}

#[test]
fn unknown_transfer_syntax_is_named() {
    // A file whose meta information declares a transfer syntax nobody registered.
    let tmp = tempfile::tempdir().unwrap();
    let w = base_series(tmp.path());
    let f = &w.files[1];
    let bogus = "1.2.3.4.5.6.7.8.9";
    let mut bytes = fs::read(f).unwrap();
    let ts = uids::EXPLICIT_VR_LITTLE_ENDIAN.as_bytes();
    let at = bytes.windows(ts.len()).position(|w| w == ts).unwrap();
    // Same length (19 + padding): "1.2.840.10008.1.2.1" → "1.2.3.4.5.6.7.8.9\0\0".
    let mut patched = bogus.as_bytes().to_vec();
    patched.resize(ts.len(), 0);
    bytes[at..at + ts.len()].copy_from_slice(&patched);
    fs::write(f, bytes).unwrap();
    let e = expect_err(tmp.path(), "unsupported_transfer_syntax");
    assert!(
        e.to_string().contains(&format!(
            "unsupported transfer syntax {bogus} (unknown transfer syntax)"
        )),
        "{e}"
    );
}

// ---------------------------------------------------------------------------------------------
// (3) Transfer syntaxes, transcoded by DCMTK
// ---------------------------------------------------------------------------------------------

/// Transcodes every file of `files` into `out` with `tool args in out`.
fn transcode(files: &[PathBuf], out: &Path, tool: &str, args: &[&str]) {
    fs::create_dir_all(out).unwrap();
    let tool = dcmtk(tool);
    for f in files {
        run(Command::new(&tool)
            .args(args)
            .arg(f)
            .arg(out.join(f.file_name().unwrap())));
    }
}

#[test]
fn lossless_transfer_syntaxes_decode_to_identical_hu() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let g = Geometry::axis_aligned([0.7, 0.8, 1.5], [-10.0, 20.0, -300.0]);
    let (_, w) = write_ct(&src, [24, 20, 16], g, 9);
    let reference = load(&src).unwrap();
    let variants: [(&str, &str, &[&str], &str); 8] = [
        (
            "explicit",
            "dcmconv",
            &["+te"],
            uids::EXPLICIT_VR_LITTLE_ENDIAN,
        ),
        (
            "implicit",
            "dcmconv",
            &["+ti"],
            uids::IMPLICIT_VR_LITTLE_ENDIAN,
        ),
        (
            "big-endian",
            "dcmconv",
            &["+tb"],
            // Retired, yet still sent by old modalities.
            "1.2.840.10008.1.2.2",
        ),
        (
            "deflated",
            "dcmconv",
            &["+td"],
            uids::DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
        ),
        ("rle", "dcmcrle", &[], uids::RLE_LOSSLESS),
        ("jpeg-sv1", "dcmcjpeg", &["+e1"], uids::JPEG_LOSSLESS_SV1),
        (
            "jpeg-lossless-sv6",
            "dcmcjpeg",
            &["+el", "+sv", "6"],
            uids::JPEG_LOSSLESS,
        ),
        (
            "jpeg-lossless-sv2",
            "dcmcjpeg",
            &["+el", "+sv", "2"],
            uids::JPEG_LOSSLESS,
        ),
    ];
    for (name, tool, args, ts) in variants {
        let out = tmp.path().join(name);
        transcode(&w.files, &out, tool, args);
        let loaded = load(&out).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(loaded.transfer_syntaxes, vec![ts.to_owned()], "{name}");
        assert_eq!(
            loaded.volume.geometry(),
            reference.volume.geometry(),
            "{name}"
        );
        let diff = max_abs_diff(loaded.volume.data(), reference.volume.data());
        assert_eq!(diff, 0.0, "{name}: HU differ by up to {diff}");
    }
}

/// Rewrites a CT series as 12-bit unsigned (Bits Stored 12, Pixel Representation 0): the
/// writer's stored values HU + 1024 lie in 0..=4095 for these volumes.
fn to_12_bit(files: &[PathBuf], out: &Path) -> Vec<PathBuf> {
    fs::create_dir_all(out).unwrap();
    files
        .iter()
        .map(|f| {
            let mut obj = open_file(f).unwrap();
            let stored = obj
                .element(tags::PIXEL_DATA)
                .unwrap()
                .to_multi_int::<i32>()
                .unwrap();
            assert!(stored.iter().all(|&s| (0..4096).contains(&s)));
            let px: Vec<u16> = stored.iter().map(|&s| s as u16).collect();
            obj.put(DataElement::new(
                tags::PIXEL_DATA,
                VR::OW,
                PrimitiveValue::U16(C::from_vec(px)),
            ));
            for (tag, v) in [
                (tags::BITS_STORED, 12_u16),
                (tags::HIGH_BIT, 11),
                (tags::PIXEL_REPRESENTATION, 0),
            ] {
                obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
            }
            let path = out.join(f.file_name().unwrap());
            obj.write_to_file(&path).unwrap();
            path
        })
        .collect()
}

#[test]
fn twelve_bit_jpeg_extended_is_an_unsupported_transfer_syntax() {
    // 12-bit unsigned native data loads to the same HU; its 12-bit JPEG Extended encoding
    // (which the pure-Rust JPEG decoder cannot read) is refused up front, by name.
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let w = base_series(&src);
    let reference = load(&src).unwrap();
    let twelve = tmp.path().join("12bit");
    let files = to_12_bit(&w.files, &twelve);
    let native = load(&twelve).unwrap();
    assert_eq!(
        max_abs_diff(native.volume.data(), reference.volume.data()),
        0.0
    );
    let extended = tmp.path().join("extended");
    transcode(&files, &extended, "dcmcjpeg", &["+ee"]);
    let e = expect_err(&extended, "unsupported_transfer_syntax");
    assert!(
        e.to_string()
            .contains("unsupported transfer syntax 1.2.840.10008.1.2.4.51 (JPEG Extended"),
        "{e}"
    );
    assert!(e.to_string().contains("12 bits stored"), "{e}");
}

/// Rewrites a CT series as 8-bit (stored = HU/16 + 64, slope 16, intercept −1024): JPEG
/// baseline only carries 8-bit samples.
fn to_8_bit(files: &[PathBuf], out: &Path) {
    fs::create_dir_all(out).unwrap();
    for f in files {
        let mut obj = open_file(f).unwrap();
        let stored = obj
            .element(tags::PIXEL_DATA)
            .unwrap()
            .to_multi_int::<i32>()
            .unwrap();
        let px: Vec<u8> = stored
            .iter()
            .map(|&s| ((s + 8) / 16).clamp(0, 255) as u8)
            .collect();
        obj.put(DataElement::new(
            tags::PIXEL_DATA,
            VR::OB,
            PrimitiveValue::U8(C::from_vec(px)),
        ));
        for (tag, v) in [
            (tags::BITS_ALLOCATED, 8_u16),
            (tags::BITS_STORED, 8),
            (tags::HIGH_BIT, 7),
            (tags::PIXEL_REPRESENTATION, 0),
        ] {
            obj.put(DataElement::new(tag, VR::US, PrimitiveValue::from(v)));
        }
        put_ds(&mut obj, tags::RESCALE_SLOPE, &[16.0]);
        put_ds(&mut obj, tags::RESCALE_INTERCEPT, &[-1024.0]);
        obj.write_to_file(out.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn jpeg_baseline_decodes_like_dcmtk() {
    // Lossy: the loader must agree with DCMTK's decoder of the same stream (to one stored
    // step, IDCT rounding) and stay close to the 8-bit original. A smooth volume, as JPEG
    // is meant for; random noise would make the lossy error meaningless.
    let tmp = tempfile::tempdir().unwrap();
    let dims = [32, 24, 16];
    let g = Geometry::axis_aligned([0.7, 0.8, 1.5], [0.0, 0.0, 0.0]);
    let data = (0..dims.iter().product::<usize>())
        .map(|i| {
            let (x, y, z) = (
                i % dims[0],
                (i / dims[0]) % dims[1],
                i / (dims[0] * dims[1]),
            );
            (200.0 * ((x as f32) * 0.3).sin() + 150.0 * ((y as f32) * 0.2).cos() + 20.0 * z as f32)
                .round()
        })
        .collect();
    let volume = Volume::from_vec(dims, data, g).unwrap();
    let w = write_ct_series(
        &volume,
        &SeriesMeta::new(10, "series-test", PhantomModality::Ct),
        &tmp.path().join("src"),
    )
    .unwrap();
    let eight = tmp.path().join("8bit");
    to_8_bit(&w.files, &eight);
    let eight_files: Vec<PathBuf> = w
        .files
        .iter()
        .map(|f| eight.join(f.file_name().unwrap()))
        .collect();
    let baseline = tmp.path().join("baseline");
    transcode(&eight_files, &baseline, "dcmcjpeg", &["+eb", "+q", "95"]);
    let baseline_files: Vec<PathBuf> = w
        .files
        .iter()
        .map(|f| baseline.join(f.file_name().unwrap()))
        .collect();
    let dcmtk_decoded = tmp.path().join("dcmdjpeg");
    transcode(&baseline_files, &dcmtk_decoded, "dcmdjpeg", &[]);

    let original = load(&eight).unwrap();
    let ours = load(&baseline).unwrap();
    let theirs = load(&dcmtk_decoded).unwrap();
    assert_eq!(
        ours.transfer_syntaxes,
        vec![uids::JPEG_BASELINE8_BIT.to_owned()]
    );
    let vs_dcmtk = max_abs_diff(ours.volume.data(), theirs.volume.data());
    assert!(
        vs_dcmtk <= 16.0,
        "our JPEG baseline decode differs from DCMTK's by {vs_dcmtk} HU"
    );
    let vs_original = max_abs_diff(ours.volume.data(), original.volume.data());
    eprintln!(
        "JPEG baseline: max |ours − dcmdjpeg| = {vs_dcmtk} HU, max |ours − 8-bit original| = \
         {vs_original} HU (one stored step = 16 HU)"
    );
    assert!(vs_original <= 16.0 * 4.0, "lossy error {vs_original} HU");
}

// ---------------------------------------------------------------------------------------------
// (4) The real JPEG 2000 series against pydicom
// ---------------------------------------------------------------------------------------------

const REAL_SERIES: &str = "/work/shared/data/real/totalsegmentator-example-dicom";

/// pydicom (+ pylibjpeg-openjpeg) decodes the series, sorts it along the slice normal and
/// applies the rescale; writes float32 (z, y, x) to `raw` and prints one line: shape (z y x),
/// first position (3), slice spacing, Pixel Spacing (2), transfer syntax UID.
const PYDICOM_DUMP: &str = r#"
import sys, glob, os
import numpy as np
import pydicom
src, raw = sys.argv[1], sys.argv[2]
ds = [pydicom.dcmread(p) for p in sorted(glob.glob(os.path.join(src, "*")))]
o = np.array(ds[0].ImageOrientationPatient, dtype=float)
n = np.cross(o[:3], o[3:])
ds.sort(key=lambda d: float(np.dot(np.array(d.ImagePositionPatient, dtype=float), n)))
vol = np.stack([d.pixel_array.astype(np.float64) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in ds]).astype(np.float32)
vol.tofile(raw)
first = [float(v) for v in ds[0].ImagePositionPatient]
last = [float(v) for v in ds[-1].ImagePositionPatient]
spacing_z = float(np.dot(np.subtract(last, first), n)) / (len(ds) - 1)
print(*vol.shape, *[repr(v) for v in first], repr(spacing_z),
      *[repr(float(v)) for v in ds[0].PixelSpacing], ds[0].file_meta.TransferSyntaxUID)
"#;

#[test]
fn real_jpeg2000_ct_matches_pydicom() {
    let src = Path::new(REAL_SERIES);
    assert!(
        src.is_dir(),
        "{REAL_SERIES} is missing (the shared real-data folder)"
    );
    let opts = SeriesOptions {
        min_slices: 16,
        ..SeriesOptions::default()
    };
    let loaded = load_series(src, &opts).unwrap();
    assert_eq!(
        loaded.transfer_syntaxes,
        vec![uids::JPEG2000_LOSSLESS.to_owned()]
    );
    assert_eq!(loaded.modality, Modality::Ct);

    let tmp = tempfile::tempdir().unwrap();
    let raw = tmp.path().join("hu.f32");
    let out = Command::new(venv_python())
        .args(["-c", PYDICOM_DUMP])
        .arg(src)
        .arg(&raw)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pydicom could not decode the JPEG 2000 series (run scripts/provision-python.sh: it \
         installs pylibjpeg and pylibjpeg-openjpeg): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = stdout.split_whitespace().collect();
    assert_eq!(fields.len(), 10, "unexpected pydicom output: {stdout}");
    let num = |i: usize| -> f64 { fields[i].parse().unwrap() };
    let shape = [num(0) as usize, num(1) as usize, num(2) as usize];
    let (origin, spacing_z, pixel_spacing, ts) = (
        [num(3), num(4), num(5)],
        num(6),
        [num(7), num(8)],
        fields[9],
    );
    let bytes = fs::read(&raw).unwrap();
    let reference: Vec<f32> = bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();

    let [nx, ny, nz] = loaded.volume.dims();
    assert_eq!([nz, ny, nx], shape);
    let diff = max_abs_diff(loaded.volume.data(), &reference);
    eprintln!(
        "real JPEG 2000 CT ({nx}×{ny}×{nz}, {ts}): max |HU(vertebrad) − HU(pydicom)| = {diff}"
    );
    assert_eq!(diff, 0.0, "JPEG 2000 Lossless must decode exactly");
    let g = loaded.volume.geometry();
    for i in 0..3 {
        assert!((g.origin[i] - origin[i]).abs() < 1e-9);
    }
    assert!((g.spacing[2] - spacing_z).abs() < 1e-9);
    assert_eq!([g.spacing[1], g.spacing[0]], pixel_spacing);
    // The sample's Study/Series Instance UIDs are empty (anonymised): loaded, with warnings.
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("Series Instance UID is empty"))
    );
    // Values are plausible CT: air below −900 HU somewhere, bone above 300 HU somewhere.
    let (lo, hi) = loaded
        .volume
        .data()
        .iter()
        .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
    assert!(lo <= -900.0 && hi >= 300.0, "HU range {lo}..{hi}");
}

// ---------------------------------------------------------------------------------------------
// (5) Enhanced CT (multi-frame, functional groups)
// ---------------------------------------------------------------------------------------------

fn seq(tag: Tag, items: Vec<InMemDicomObject>) -> DataElement<InMemDicomObject> {
    DataElement::new(tag, VR::SQ, DataSetSequence::from(items))
}

fn item(elements: Vec<DataElement<InMemDicomObject>>) -> InMemDicomObject {
    InMemDicomObject::from_element_iter(elements)
}

fn ds_elem(tag: Tag, values: &[f64]) -> DataElement<InMemDicomObject> {
    DataElement::new(
        tag,
        VR::DS,
        PrimitiveValue::Strs(values.iter().map(|&v| ds(v)).collect()),
    )
}

/// Writes `volume` (HU) as one Enhanced CT Image file with frames in `order` (a permutation
/// of the slices: frame i holds slice order[i]). With `per_frame_rescale`, each frame carries
/// its own Pixel Value Transformation with a frame-specific intercept; otherwise it is shared.
fn write_enhanced_ct(volume: &Volume<f32>, order: &[usize], per_frame_rescale: bool, path: &Path) {
    let [nx, ny, _] = volume.dims();
    let g = volume.geometry();
    let orientation = [g.direction[0], g.direction[1]].concat();
    let sop_instance_uid = "2.25.123456789012345678901234567890";
    let mut shared = vec![
        seq(
            tags::PIXEL_MEASURES_SEQUENCE,
            vec![item(vec![
                ds_elem(tags::PIXEL_SPACING, &[g.spacing[1], g.spacing[0]]),
                ds_elem(tags::SLICE_THICKNESS, &[g.spacing[2]]),
            ])],
        ),
        seq(
            tags::PLANE_ORIENTATION_SEQUENCE,
            vec![item(vec![ds_elem(
                tags::IMAGE_ORIENTATION_PATIENT,
                &orientation,
            )])],
        ),
        seq(
            tags::CT_IMAGE_FRAME_TYPE_SEQUENCE,
            vec![item(vec![DataElement::new(
                tags::FRAME_TYPE,
                VR::CS,
                strs(&["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]),
            )])],
        ),
    ];
    if !per_frame_rescale {
        shared.push(seq(
            tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
            vec![item(vec![
                ds_elem(tags::RESCALE_INTERCEPT, &[-1024.0]),
                ds_elem(tags::RESCALE_SLOPE, &[1.0]),
                DataElement::new(tags::RESCALE_TYPE, VR::LO, PrimitiveValue::from("HU")),
            ])],
        ));
    }
    let slice_len = nx * ny;
    let mut pixels: Vec<i16> = Vec::with_capacity(slice_len * order.len());
    let mut per_frame = Vec::new();
    for (i, &k) in order.iter().enumerate() {
        let intercept = if per_frame_rescale {
            -1024.0 - i as f64
        } else {
            -1024.0
        };
        let slice = &volume.data()[k * slice_len..(k + 1) * slice_len];
        pixels.extend(slice.iter().map(|&hu| (f64::from(hu) - intercept) as i16));
        let mut groups = vec![
            seq(
                tags::FRAME_CONTENT_SEQUENCE,
                vec![item(vec![DataElement::new(
                    tags::IN_STACK_POSITION_NUMBER,
                    VR::UL,
                    PrimitiveValue::from(k as u32 + 1),
                )])],
            ),
            seq(
                tags::PLANE_POSITION_SEQUENCE,
                vec![item(vec![ds_elem(
                    tags::IMAGE_POSITION_PATIENT,
                    &g.voxel_to_world([0.0, 0.0, k as f64]),
                )])],
            ),
        ];
        if per_frame_rescale {
            groups.push(seq(
                tags::PIXEL_VALUE_TRANSFORMATION_SEQUENCE,
                vec![item(vec![
                    ds_elem(tags::RESCALE_INTERCEPT, &[intercept]),
                    ds_elem(tags::RESCALE_SLOPE, &[1.0]),
                    DataElement::new(tags::RESCALE_TYPE, VR::LO, PrimitiveValue::from("HU")),
                ])],
            ));
        }
        per_frame.push(item(groups));
    }
    let s = |v: &str| PrimitiveValue::from(v);
    let obj = InMemDicomObject::from_element_iter([
        DataElement::new(
            tags::IMAGE_TYPE,
            VR::CS,
            strs(&["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]),
        ),
        DataElement::new(
            tags::SOP_CLASS_UID,
            VR::UI,
            s(uids::ENHANCED_CT_IMAGE_STORAGE),
        ),
        DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, s(sop_instance_uid)),
        DataElement::new(tags::MODALITY, VR::CS, s("CT")),
        DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, s("2.25.1")),
        DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, s("2.25.2")),
        DataElement::new(tags::FRAME_OF_REFERENCE_UID, VR::UI, s("2.25.3")),
        DataElement::new(tags::INSTANCE_NUMBER, VR::IS, s("1")),
        DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1_u16)),
        DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, s("MONOCHROME2")),
        DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, s(&order.len().to_string())),
        DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(ny as u16)),
        DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(nx as u16)),
        DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16_u16)),
        DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(16_u16)),
        DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15_u16)),
        DataElement::new(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(1_u16),
        ),
        seq(tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE, vec![item(shared)]),
        seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, per_frame),
        DataElement::new(
            tags::PIXEL_DATA,
            VR::OW,
            PrimitiveValue::I16(C::from_vec(pixels)),
        ),
    ]);
    obj.with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
        .unwrap()
        .write_to_file(path)
        .unwrap();
}

#[test]
fn enhanced_ct_multiframe_loads_from_functional_groups() {
    let tmp = tempfile::tempdir().unwrap();
    let direction = rotation([0.3, -1.0, 0.2], 0.25);
    let g = Geometry {
        spacing: [0.75, 0.6, 1.25],
        origin: [-30.0, 15.0, 400.0],
        direction,
    };
    let volume = random_volume([20, 14, 18], g, 11, (-1024, 3071));
    // Frames stored out of z order: the loader must sort by position.
    let mut order: Vec<usize> = (0..18).collect();
    order.reverse();
    order.swap(3, 11);
    for per_frame_rescale in [false, true] {
        let file = tmp.path().join(format!("enhanced-{per_frame_rescale}.dcm"));
        write_enhanced_ct(&volume, &order, per_frame_rescale, &file);
        let loaded = load(&file).unwrap();
        assert_eq!(loaded.volume.dims(), volume.dims());
        assert_geometry_close(loaded.volume.geometry(), volume.geometry(), 1e-6);
        assert_eq!(max_abs_diff(loaded.volume.data(), volume.data()), 0.0);
        // Slice k of the volume is frame (position of k in `order`) + 1.
        for (k, s) in loaded.slices.iter().enumerate() {
            let frame = order.iter().position(|&o| o == k).unwrap() as u32 + 1;
            assert_eq!(s.frame_number, Some(frame));
        }
        assert_eq!(loaded.files, vec![file.clone()]);

        // The same file JPEG-lossless compressed by DCMTK: encapsulated frames in parallel.
        let jpeg_dir = tmp.path().join(format!("jpeg-{per_frame_rescale}"));
        transcode(std::slice::from_ref(&file), &jpeg_dir, "dcmcjpeg", &["+e1"]);
        let compressed = load(&jpeg_dir).unwrap();
        assert_eq!(
            compressed.transfer_syntaxes,
            vec![uids::JPEG_LOSSLESS_SV1.to_owned()]
        );
        assert_eq!(max_abs_diff(compressed.volume.data(), volume.data()), 0.0);
        fs::remove_file(&file).unwrap();
    }
}

#[test]
fn enhanced_ct_localizer_frame_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let g = Geometry::axis_aligned([1.0, 1.0, 1.0], [0.0, 0.0, 0.0]);
    let volume = random_volume([8, 8, 16], g, 12, (-1000, 1000));
    let file = tmp.path().join("enhanced.dcm");
    write_enhanced_ct(&volume, &(0..16).collect::<Vec<_>>(), false, &file);
    edit(&file, |obj| {
        let mut items = obj
            .element(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()
            .to_vec();
        items[4].put(seq(
            tags::CT_IMAGE_FRAME_TYPE_SEQUENCE,
            vec![item(vec![DataElement::new(
                tags::FRAME_TYPE,
                VR::CS,
                strs(&["ORIGINAL", "PRIMARY", "LOCALIZER", "NONE"]),
            )])],
        ));
        obj.put(seq(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE, items));
    });
    let e = load(&file).unwrap_err();
    assert_eq!(e.class(), "localizer", "{e}");
    assert!(e.to_string().contains("frame 5"), "{e}");
}
