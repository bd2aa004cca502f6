//! NIfTI-1 reader and writer against nibabel: committed fixtures (written and read by nibabel,
//! see `fixtures/make_nifti_fixtures.py`), round trips through nibabel at test time, and
//! hostile input.

mod common;

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use vertebra_core::nifti::{
    self, AffineSource, Datatype, Endian, NiftiHeader, WriteOptions, XformCode,
};
use vertebra_core::{Error, Geometry, Volume};

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/nifti")
}

fn expected() -> serde_json::Map<String, Value> {
    let text = std::fs::read_to_string(fixture_dir().join("expected.json")).unwrap();
    match serde_json::from_str(&text).unwrap() {
        Value::Object(m) => m,
        other => panic!("expected.json is not an object: {other}"),
    }
}

fn fixture(name: &str) -> PathBuf {
    let e = expected();
    fixture_dir().join(e[name]["file"].as_str().unwrap())
}

fn matrix(v: &Value) -> [[f64; 4]; 4] {
    std::array::from_fn(|r| std::array::from_fn(|c| v[r][c].as_f64().unwrap()))
}

fn assert_affine_close(got: &[[f64; 4]; 4], want: &[[f64; 4]; 4], what: &str) {
    for r in 0..4 {
        for c in 0..4 {
            assert!(
                (got[r][c] - want[r][c]).abs() <= 1e-6,
                "{what}: [{r}][{c}] is {} but nibabel says {}\n got {got:?}\nwant {want:?}",
                got[r][c],
                want[r][c]
            );
        }
    }
}

/// The geometry's affine expressed in RAS, computed here independently of the library's
/// own conversion.
fn ras_of(g: &Geometry) -> [[f64; 4]; 4] {
    let mut a = g.affine_lps();
    for c in 0..4 {
        a[0][c] = -a[0][c];
        a[1][c] = -a[1][c];
    }
    a
}

fn nifti_message(e: Error) -> String {
    match e {
        Error::Nifti(m) => m,
        other => panic!("expected Error::Nifti, got {other:?}"),
    }
}

#[test]
fn every_fixture_reads_as_nibabel_reads_it() {
    let expected = expected();
    let mut checked = 0;
    for (name, e) in &expected {
        if e.get("error").is_some() {
            continue;
        }
        let path = fixture_dir().join(e["file"].as_str().unwrap());
        let header = nifti::read_header(&path).unwrap_or_else(|err| panic!("{name}: {err}"));
        let shape: Vec<usize> = e["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        let dims: [usize; 3] = std::array::from_fn(|i| shape.get(i).copied().unwrap_or(1));
        assert!(shape.iter().skip(3).all(|&s| s == 1), "{name}");
        assert_eq!(header.dims, dims, "{name}");
        assert_eq!(
            i64::from(header.datatype.code()),
            e["datatype"].as_i64().unwrap(),
            "{name}"
        );
        let big = e["big_endian"].as_bool().unwrap();
        assert_eq!(
            header.endian,
            if big { Endian::Big } else { Endian::Little },
            "{name}"
        );
        assert_eq!(
            i64::from(header.qform_code.code()),
            e["qform_code"].as_i64().unwrap(),
            "{name}"
        );
        assert_eq!(
            i64::from(header.sform_code.code()),
            e["sform_code"].as_i64().unwrap(),
            "{name}"
        );
        for (i, p) in e["pixdim"].as_array().unwrap().iter().enumerate() {
            assert_eq!(
                header.pixdim[i],
                p.as_f64().unwrap() as f32,
                "{name} pixdim[{i}]"
            );
        }
        assert_eq!(
            header.description,
            e["description"].as_str().unwrap(),
            "{name}"
        );
        let want = matrix(&e["affine"]);
        assert_affine_close(&header.affine_ras, &want, &format!("{name} affine"));
        match (&header.qform_affine_ras, e["qform"].is_null()) {
            (Some(q), false) => assert_affine_close(q, &matrix(&e["qform"]), name),
            (None, true) => {}
            other => panic!("{name}: qform presence differs: {other:?}"),
        }
        match (&header.sform_affine_ras, e["sform"].is_null()) {
            (Some(s), false) => assert_affine_close(s, &matrix(&e["sform"]), name),
            (None, true) => {}
            other => panic!("{name}: sform presence differs: {other:?}"),
        }

        let volume = nifti::read_f32(&path).unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(volume.dims(), dims, "{name}");
        assert_affine_close(
            &ras_of(volume.geometry()),
            &want,
            &format!("{name} geometry"),
        );
        let want_bits: Vec<u32> = e["values_f32_bits"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got_bits: Vec<u32> = volume.data().iter().map(|v| v.to_bits()).collect();
        assert_eq!(
            got_bits, want_bits,
            "{name}: voxel values differ from nibabel's"
        );

        if let Some(labels) = e.get("labels") {
            let want: Vec<u16> = labels
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u16)
                .collect();
            let got = nifti::read_labels::<u16>(&path).unwrap();
            assert_eq!(got.data(), &want[..], "{name}");
            assert_eq!(got.geometry(), volume.geometry(), "{name}");
            if want.iter().all(|&v| v <= 255) {
                let got8 = nifti::read_labels::<u8>(&path).unwrap();
                assert!(
                    got8.data()
                        .iter()
                        .zip(&want)
                        .all(|(&a, &b)| u16::from(a) == b)
                );
            }
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} fixtures checked");
}

#[test]
fn error_fixtures_are_refused_with_a_clear_message() {
    let expected = expected();
    let mut checked = 0;
    for (name, e) in &expected {
        let Some(want) = e.get("error").and_then(Value::as_str) else {
            continue;
        };
        let path = fixture_dir().join(e["file"].as_str().unwrap());
        let message = if name.starts_with("labels_") {
            nifti_message(nifti::read_labels::<u16>(&path).unwrap_err())
        } else {
            nifti_message(nifti::read_f32(&path).unwrap_err())
        };
        assert!(message.contains(want), "{name}: {message:?} lacks {want:?}");
        assert!(
            message.contains(e["file"].as_str().unwrap()),
            "{name}: no file name in {message:?}"
        );
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} error fixtures");
}

#[test]
fn transform_precedence_follows_nibabel() {
    let h = nifti::read_header(fixture("both_differ")).unwrap();
    assert_eq!(h.affine_source, AffineSource::Sform);
    assert_eq!(Some(h.affine_ras), h.sform_affine_ras);
    assert_ne!(h.sform_affine_ras, h.qform_affine_ras);

    let h = nifti::read_header(fixture("qform_qfac_neg")).unwrap();
    assert_eq!(h.affine_source, AffineSource::Qform);
    assert_eq!(h.pixdim[0], -1.0);
    assert_eq!(h.sform_affine_ras, None);
    // qfac = -1 mirrors the third axis: the RAS direction matrix is left-handed.
    let a = h.affine_ras;
    let det = a[0][0] * (a[1][1] * a[2][2] - a[1][2] * a[2][1])
        - a[0][1] * (a[1][0] * a[2][2] - a[1][2] * a[2][0])
        + a[0][2] * (a[1][0] * a[2][1] - a[1][1] * a[2][0]);
    assert!(det < 0.0);

    let h = nifti::read_header(fixture("neither")).unwrap();
    assert_eq!(h.affine_source, AffineSource::PixdimOnly);
    assert_eq!(h.qform_code, XformCode::Unknown);
    assert_eq!(h.sform_code, XformCode::Unknown);

    let h = nifti::read_header(fixture("sform_only")).unwrap();
    assert_eq!(h.affine_source, AffineSource::Sform);
    assert_eq!(h.qform_affine_ras, None);
}

#[test]
fn scaling_and_label_rules() {
    let h = nifti::read_header(fixture("scaled")).unwrap();
    assert_eq!(h.scaling(), Some((0.5, -1024.0)));
    assert_eq!(
        nifti::read_header(fixture("slope_zero")).unwrap().scaling(),
        None
    );

    // A float file of whole numbers is a fine label map; one fractional voxel is not.
    assert!(nifti::read_labels::<u8>(fixture("labels_float_integral")).is_ok());
    assert!(nifti::read_f32(fixture("labels_float_fraction")).is_ok());
    let m = nifti_message(nifti::read_labels::<u8>(fixture("labels_float_fraction")).unwrap_err());
    assert!(m.contains("2.5"), "{m}");

    // 300 fits u16 but not u8: an error, never a wrapped label.
    let m = nifti_message(nifti::read_labels::<u8>(fixture("labels_uint16_300")).unwrap_err());
    assert!(m.contains("300") && m.contains("outside the range"), "{m}");
    let v = nifti::read_labels::<u16>(fixture("labels_uint16_300")).unwrap();
    assert_eq!(v[[4, 3, 2]], 300);
    // Negative values are not u16 labels but are i16 ones.
    assert!(nifti::read_labels::<u16>(fixture("dtype_int8")).is_err());
    let v = nifti::read_labels::<i16>(fixture("dtype_int8")).unwrap();
    assert_eq!(v.data()[0], -128);
    // NaN and infinity are not labels.
    assert!(nifti::read_labels::<i16>(fixture("dtype_float32")).is_err());
}

#[test]
fn gzip_is_detected_by_content_not_name() {
    let dir = tempfile::tempdir().unwrap();
    let gz_named_plain = dir.path().join("really_gzip.nii");
    std::fs::copy(fixture("oblique"), &gz_named_plain).unwrap();
    let plain_named_gz = dir.path().join("really_plain.nii.gz");
    std::fs::copy(fixture("sform_only"), &plain_named_gz).unwrap();
    assert_eq!(
        nifti::read_f32(&gz_named_plain).unwrap(),
        nifti::read_f32(fixture("oblique")).unwrap()
    );
    assert_eq!(
        nifti::read_f32(&plain_named_gz).unwrap(),
        nifti::read_f32(fixture("sform_only")).unwrap()
    );
}

// ---------------------------------------------------------------------------------------
// Writing.

fn oblique_left_handed() -> Geometry {
    let (s, c) = 0.4f64.sin_cos();
    let (s2, c2) = 0.25f64.sin_cos();
    // Rotation about z then x, third axis mirrored.
    let x = [c, s, 0.0];
    let y = [-s * c2, c * c2, s2];
    let z = [s * s2, -c * s2, c2];
    Geometry {
        spacing: [0.78125, 0.8125, 2.5],
        origin: [-187.3, 42.125, 1310.75],
        direction: [x, y, z.map(|v| -v)],
    }
}

fn test_f32_volume() -> Volume<f32> {
    let dims = [7, 6, 5];
    let n = dims.iter().product::<usize>();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut data: Vec<f32> = (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            f32::from_bits((state >> 32) as u32 & 0x7f7f_ffff)
                * if state & 1 == 0 { 1.0 } else { -1.0 }
        })
        .collect();
    data[3] = f32::NAN;
    data[4] = f32::INFINITY;
    data[5] = -0.0;
    Volume::from_vec(dims, data, oblique_left_handed()).unwrap()
}

fn label_volume<L: Copy>(values: &[L]) -> Volume<L> {
    let dims = [4, 3, 2];
    let data = (0..24).map(|i| values[i % values.len()]).collect();
    Volume::from_vec(
        dims,
        data,
        Geometry::axis_aligned([0.5, 0.6, 3.0], [10.0, -20.0, 30.0]),
    )
    .unwrap()
}

fn assert_geometry_close(got: &Geometry, want: &Geometry) {
    let (g, w) = (got.affine_lps(), want.affine_lps());
    for r in 0..3 {
        for c in 0..4 {
            // float32 storage: ~6e-8 relative.
            let tol = 1e-6 * w[r][c].abs().max(1.0);
            assert!(
                (g[r][c] - w[r][c]).abs() <= tol,
                "[{r}][{c}] {} vs {}",
                g[r][c],
                w[r][c]
            );
        }
    }
}

#[test]
fn our_writer_and_reader_round_trip_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let volume = test_f32_volume();
    for name in ["image.nii", "image.nii.gz"] {
        let path = dir.path().join(name);
        nifti::write_f32(&path, &volume, &WriteOptions::default()).unwrap();
        let back = nifti::read_f32(&path).unwrap();
        let bits = |v: &Volume<f32>| v.data().iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&back), bits(&volume), "{name}");
        assert_geometry_close(back.geometry(), volume.geometry());
        // A geometry that came from a file is a fixed point of write + read.
        let again = dir.path().join(format!("again_{name}"));
        nifti::write_f32(&again, &back, &WriteOptions::default()).unwrap();
        let back2 = nifti::read_f32(&again).unwrap();
        assert_eq!(back2.geometry(), back.geometry(), "{name}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            std::fs::read(&again).unwrap(),
            "{name}"
        );
    }

    let u8s = label_volume(&[0u8, 1, 25, 255]);
    let u16s = label_volume(&[0u16, 7, 300, 65535]);
    let i16s = label_volume(&[-32768i16, -1, 0, 24, 32767]);
    for gz in ["", ".gz"] {
        let p = dir.path().join(format!("l8.nii{gz}"));
        nifti::write_labels(&p, &u8s, &WriteOptions::default()).unwrap();
        assert_labels_round_trip(&nifti::read_labels::<u8>(&p).unwrap(), &u8s);
        assert_eq!(nifti::read_header(&p).unwrap().datatype, Datatype::U8);
        let p = dir.path().join(format!("l16.nii{gz}"));
        nifti::write_labels(&p, &u16s, &WriteOptions::default()).unwrap();
        assert_labels_round_trip(&nifti::read_labels::<u16>(&p).unwrap(), &u16s);
        assert_eq!(nifti::read_header(&p).unwrap().datatype, Datatype::U16);
        let p = dir.path().join(format!("li16.nii{gz}"));
        nifti::write_labels(&p, &i16s, &WriteOptions::default()).unwrap();
        assert_labels_round_trip(&nifti::read_labels::<i16>(&p).unwrap(), &i16s);
        assert_eq!(nifti::read_header(&p).unwrap().datatype, Datatype::I16);
    }
}

fn assert_labels_round_trip<L: PartialEq + std::fmt::Debug>(got: &Volume<L>, want: &Volume<L>) {
    assert_eq!(got.dims(), want.dims());
    assert_eq!(got.data(), want.data());
    assert_geometry_close(got.geometry(), want.geometry());
}

#[test]
fn written_header_has_the_documented_fields() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("labels.nii");
    let options = WriteOptions {
        description: "phantom 7 ground truth".into(),
        xform_code: XformCode::AlignedAnat,
    };
    nifti::write_labels(&path, &label_volume(&[1u8, 2]), &options).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 352 + 24);
    assert_eq!(&bytes[344..348], b"n+1\0");
    assert_eq!(&bytes[348..352], &[0, 0, 0, 0]);
    let h: NiftiHeader = nifti::read_header(&path).unwrap();
    assert_eq!(h.vox_offset, 352);
    assert_eq!(h.xyzt_units, 2);
    assert_eq!(h.description, "phantom 7 ground truth");
    assert_eq!(h.qform_code, XformCode::AlignedAnat);
    assert_eq!(h.sform_code, XformCode::AlignedAnat);
    assert_eq!(h.intent_code, 1002);
    assert_eq!(h.endian, Endian::Little);
    assert_eq!(h.scl_slope, 1.0);

    let path = dir.path().join("image.nii.gz");
    nifti::write_f32(&path, &test_f32_volume(), &WriteOptions::default()).unwrap();
    assert_eq!(&std::fs::read(&path).unwrap()[..2], &[0x1f, 0x8b]);
    let h = nifti::read_header(&path).unwrap();
    assert_eq!(h.qform_code, XformCode::ScannerAnat);
    assert_eq!(
        h.pixdim[0], -1.0,
        "left-handed grid must be written with qfac = -1"
    );
    assert!(h.description.starts_with("vertebra-core"));
    // The qform (rigid part) agrees with the sform.
    let (q, s) = (h.qform_affine_ras.unwrap(), h.sform_affine_ras.unwrap());
    for r in 0..3 {
        for c in 0..4 {
            assert!(
                (q[r][c] - s[r][c]).abs() < 1e-4 * s[r][c].abs().max(1.0),
                "{q:?} {s:?}"
            );
        }
    }
}

#[test]
fn invalid_write_requests_fail_without_leaving_files() {
    let dir = tempfile::tempdir().unwrap();
    let v = label_volume(&[1u8]);
    for name in ["x.nii.txt", "x", "x.gz", "x.img"] {
        let err = nifti::write_labels(dir.path().join(name), &v, &WriteOptions::default());
        assert!(
            matches!(err, Err(Error::InvalidArgument(_))),
            "{name}: {err:?}"
        );
    }
    let long = WriteOptions {
        description: "x".repeat(80),
        ..WriteOptions::default()
    };
    assert!(matches!(
        nifti::write_labels(dir.path().join("a.nii"), &v, &long),
        Err(Error::InvalidArgument(_))
    ));
    let unknown = WriteOptions {
        xform_code: XformCode::Unknown,
        ..WriteOptions::default()
    };
    assert!(nifti::write_labels(dir.path().join("a.nii"), &v, &unknown).is_err());
    let wide = Volume::filled(
        [40_000, 1, 1],
        0u8,
        Geometry::axis_aligned([1.0; 3], [0.0; 3]),
    )
    .unwrap();
    assert!(matches!(
        nifti::write_labels(dir.path().join("a.nii"), &wide, &WriteOptions::default()),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);

    // Missing directory: an I/O error naming the target.
    let err = nifti::write_labels(
        dir.path().join("no/such/dir/a.nii"),
        &v,
        &WriteOptions::default(),
    );
    assert!(matches!(err, Err(Error::Io { .. })), "{err:?}");

    // The final rename fails (the target is a non-empty directory): the target is untouched
    // and no temporary file is left behind.
    let target = dir.path().join("busy.nii");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), b"old").unwrap();
    assert!(nifti::write_labels(&target, &v, &WriteOptions::default()).is_err());
    assert_eq!(std::fs::read(target.join("keep")).unwrap(), b"old");
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["busy.nii"]);

    // Overwriting an existing file replaces it completely.
    let path = dir.path().join("over.nii");
    std::fs::write(&path, vec![7u8; 10_000]).unwrap();
    nifti::write_labels(&path, &v, &WriteOptions::default()).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 352 + 24);
}

// ---------------------------------------------------------------------------------------
// Round trip through nibabel.

fn venv_python() -> PathBuf {
    common::venv_python()
}

const NIBABEL_DUMP: &str = r#"
import json, sys
import nibabel as nib
import numpy as np
out = {}
for path in sys.argv[1:]:
    img = nib.load(path)
    h = img.header
    raw = np.asanyarray(img.dataobj).ravel(order="F")
    data = raw.view(np.uint32).tolist() if raw.dtype == np.float32 else raw.tolist()
    out[path] = {
        "affine": img.affine.tolist(),
        "qform": h.get_qform().tolist(),
        "shape": list(img.shape),
        "dtype": str(raw.dtype),
        "data": data,
        "codes": [int(h["qform_code"]), int(h["sform_code"])],
        "descrip": h["descrip"].item().decode(),
        "xyzt_units": int(h["xyzt_units"]),
        "vox_offset": int(img.dataobj.offset),
        "magic": h["magic"].item().decode(),
    }
print(json.dumps(out))
"#;

#[test]
fn nibabel_reads_what_we_write() {
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let image = test_f32_volume();
    let labels8 = label_volume(&[0u8, 1, 25, 255]);
    let labels16 = label_volume(&[0u16, 7, 300, 65535]);
    let labels_i16 = label_volume(&[-32768i16, -1, 0, 24, 32767]);
    let mut files: Vec<(PathBuf, &str, Geometry, Vec<i64>)> = Vec::new();
    for gz in ["", ".gz"] {
        let p = dir.path().join(format!("image.nii{gz}"));
        nifti::write_f32(&p, &image, &WriteOptions::default()).unwrap();
        let bits = image
            .data()
            .iter()
            .map(|v| i64::from(v.to_bits()))
            .collect();
        files.push((p, "float32", *image.geometry(), bits));
        let p = dir.path().join(format!("l8.nii{gz}"));
        nifti::write_labels(&p, &labels8, &WriteOptions::default()).unwrap();
        files.push((
            p,
            "uint8",
            *labels8.geometry(),
            labels8.data().iter().map(|&v| v.into()).collect(),
        ));
        let p = dir.path().join(format!("l16.nii{gz}"));
        nifti::write_labels(&p, &labels16, &WriteOptions::default()).unwrap();
        files.push((
            p,
            "uint16",
            *labels16.geometry(),
            labels16.data().iter().map(|&v| v.into()).collect(),
        ));
        let p = dir.path().join(format!("li16.nii{gz}"));
        nifti::write_labels(&p, &labels_i16, &WriteOptions::default()).unwrap();
        files.push((
            p,
            "int16",
            *labels_i16.geometry(),
            labels_i16.data().iter().map(|&v| v.into()).collect(),
        ));
    }
    let output = Command::new(&python)
        .arg("-c")
        .arg(NIBABEL_DUMP)
        .args(files.iter().map(|f| &f.0))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "nibabel failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let dump: Value = serde_json::from_slice(&output.stdout).unwrap();
    for (path, dtype, geometry, data) in &files {
        let e = &dump[path.to_str().unwrap()];
        let what = path.display().to_string();
        assert_eq!(e["dtype"], *dtype, "{what}");
        let got: Vec<i64> = e["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(&got, data, "{what}: nibabel sees different voxel values");
        let dims = nifti::read_header(path).unwrap().dims;
        assert_eq!(e["shape"], serde_json::json!(dims), "{what}");
        let affine = matrix(&e["affine"]);
        // nibabel's affine is exactly what our reader reports for the same file...
        let ours = nifti::read_header(path).unwrap().affine_ras;
        assert_affine_close(&affine, &ours, &what);
        // ...and the written geometry up to float32 storage.
        for r in 0..4 {
            for c in 0..4 {
                let want = ras_of(geometry)[r][c];
                assert!(
                    (affine[r][c] - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "{what}: [{r}][{c}] nibabel {} vs written {want}",
                    affine[r][c]
                );
            }
        }
        // nibabel's reading of our qform agrees with the sform.
        let q = matrix(&e["qform"]);
        for r in 0..3 {
            for c in 0..4 {
                assert!(
                    (q[r][c] - affine[r][c]).abs() < 1e-4 * affine[r][c].abs().max(1.0),
                    "{what}"
                );
            }
        }
        assert_eq!(e["codes"], serde_json::json!([1, 1]), "{what}");
        assert_eq!(e["xyzt_units"], 2, "{what}");
        assert_eq!(e["vox_offset"], 352, "{what}");
        assert_eq!(e["magic"], "n+1", "{what}");
        assert!(
            e["descrip"].as_str().unwrap().starts_with("vertebra-core"),
            "{what}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Hostile input.

/// A valid little-endian file (header + 60 int16 voxels) to corrupt.
fn valid_bytes() -> Vec<u8> {
    std::fs::read(fixture("sform_only")).unwrap()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn put_i16(b: &mut [u8], at: usize, v: i16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_f32(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes `bytes` to a file (plain and gzip) and checks that reading fails with a NIfTI error
/// whose message contains `want`.
fn assert_refused(bytes: &[u8], want: &str) {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [("bad.nii", bytes.to_vec()), ("bad.nii.gz", gzip(bytes))] {
        let path = dir.path().join(name);
        std::fs::write(&path, &content).unwrap();
        let message = nifti_message(nifti::read_f32(&path).unwrap_err());
        assert!(message.contains(want), "{name}: {message:?} lacks {want:?}");
        let message = nifti_message(nifti::read_labels::<u8>(&path).unwrap_err());
        assert!(message.contains(want), "{name}: {message:?} lacks {want:?}");
    }
}

#[test]
fn truncated_header_and_bad_identification() {
    let b = valid_bytes();
    assert_refused(&[], "truncated header");
    assert_refused(&b[..200], "truncated header");
    assert_refused(&b[..347], "truncated header");

    let mut bad = b.clone();
    bad[0..4].copy_from_slice(&349i32.to_le_bytes());
    assert_refused(&bad, "sizeof_hdr");
    bad[0..4].copy_from_slice(&540i32.to_le_bytes());
    assert_refused(&bad, "NIfTI-2");

    let mut bad = b.clone();
    bad[344..348].copy_from_slice(b"xyz\0");
    assert_refused(&bad, "magic");
    bad[344..348].copy_from_slice(b"ni1\0");
    assert_refused(&bad, "two-file");
}

#[test]
fn bad_dims_are_refused_before_allocating() {
    let b = valid_bytes();
    for dim0 in [0, 8, -1, i16::MAX] {
        let mut bad = b.clone();
        put_i16(&mut bad, 40, dim0);
        assert_refused(&bad, "dim[0]");
    }
    for (axis, value) in [(1, 0), (2, -5), (3, i16::MIN)] {
        let mut bad = b.clone();
        put_i16(&mut bad, 40 + 2 * axis, value);
        assert_refused(&bad, &format!("dim[{axis}]"));
    }
    // 32767³ voxels: over the cap, refused from the header alone.
    let mut bad = b.clone();
    for axis in 1..=3 {
        put_i16(&mut bad, 40 + 2 * axis, i16::MAX);
    }
    assert_refused(&bad, "more than");
    // Seven axes of 32767 would overflow any product; axes past 3 must be 1.
    let mut bad = b.clone();
    put_i16(&mut bad, 40, 7);
    for axis in 1..=7 {
        put_i16(&mut bad, 40 + 2 * axis, i16::MAX);
    }
    assert_refused(&bad, "only 3-D volumes");
    // Within the cap but far beyond what the file (or a gzip of it) can hold.
    let mut bad = b.clone();
    for (axis, value) in [(1, 1000), (2, 1000), (3, 500)] {
        put_i16(&mut bad, 40 + 2 * axis, value);
    }
    assert_refused(&bad, "impossible dims");
}

#[test]
fn bad_spacing_datatype_and_fields_are_refused() {
    let b = valid_bytes();
    for axis in 1..=3 {
        for value in [f32::NAN, 0.0, -1.0, f32::INFINITY] {
            let mut bad = b.clone();
            put_f32(&mut bad, 76 + 4 * axis, value);
            assert_refused(&bad, &format!("pixdim[{axis}]"));
        }
    }
    for (code, name) in [
        (32, "complex64"),
        (128, "rgb24"),
        (1024, "int64"),
        (0, "unknown"),
        (77, "77"),
    ] {
        let mut bad = b.clone();
        put_i16(&mut bad, 70, code);
        assert_refused(&bad, name);
    }
    let mut bad = b.clone();
    put_i16(&mut bad, 72, 8); // bitpix of an int16 file
    assert_refused(&bad, "bitpix");
    for v in [0.0, 351.0, 352.5, f32::NAN, 1e20] {
        let mut bad = b.clone();
        put_f32(&mut bad, 108, v);
        assert_refused(&bad, "vox_offset");
    }
    let mut bad = b.clone();
    put_f32(&mut bad, 112, 2.0);
    put_f32(&mut bad, 116, f32::NAN);
    assert_refused(&bad, "scl_inter");
    let mut bad = b.clone();
    bad[123] = 1; // metres
    assert_refused(&bad, "metres");
    let mut bad = b.clone();
    put_i16(&mut bad, 254, 9);
    assert_refused(&bad, "sform_code");
    // A qform that is set must be valid even though the sform wins.
    let mut bad = b.clone();
    put_i16(&mut bad, 252, 1);
    put_f32(&mut bad, 76, 0.5);
    assert_refused(&bad, "qfac");
    let mut bad = b.clone();
    put_i16(&mut bad, 252, 1);
    put_f32(&mut bad, 76, 1.0);
    put_f32(&mut bad, 256, 0.9);
    put_f32(&mut bad, 260, 0.9);
    assert_refused(&bad, "unit quaternion");
    // An all-zero sform is singular.
    let mut bad = b.clone();
    bad[280..328].fill(0);
    assert_refused(&bad, "singular");
}

#[test]
fn truncated_data_and_corrupt_gzip_are_refused() {
    let b = valid_bytes();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.nii");

    // Plain file cut inside the data: the size check names it.
    std::fs::write(&path, &b[..b.len() - 1]).unwrap();
    let m = nifti_message(nifti::read_f32(&path).unwrap_err());
    assert!(m.contains("truncated data"), "{m}");

    // A complete gzip stream whose content stops early.
    let path = dir.path().join("t.nii.gz");
    std::fs::write(&path, gzip(&b[..b.len() - 10])).unwrap();
    let m = nifti_message(nifti::read_f32(&path).unwrap_err());
    assert!(m.contains("truncated data"), "{m}");

    // A gzip stream cut short, garbage after the gzip magic, a flipped byte inside the
    // deflate data, and a wrong CRC in the trailer.
    let good = gzip(&b);
    let mut cases = vec![
        good[..good.len() / 2].to_vec(),
        [&[0x1f, 0x8b][..], &[0x55; 100][..]].concat(),
    ];
    let mut flipped = good.clone();
    flipped[20] ^= 0xff;
    cases.push(flipped);
    let mut bad_crc = good.clone();
    let n = bad_crc.len();
    bad_crc[n - 8] ^= 0x01;
    cases.push(bad_crc);
    for (i, bytes) in cases.iter().enumerate() {
        std::fs::write(&path, bytes).unwrap();
        let m = nifti_message(nifti::read_f32(&path).unwrap_err());
        assert!(
            m.contains("gzip") || m.contains("truncated"),
            "case {i}: {m}"
        );
    }
    // The intact stream reads.
    std::fs::write(&path, &good).unwrap();
    assert!(nifti::read_f32(&path).is_ok());

    // A missing file is an I/O error.
    assert!(matches!(
        nifti::read_f32(dir.path().join("missing.nii")),
        Err(Error::Io { .. })
    ));
}

#[test]
fn no_single_corrupted_header_field_causes_a_panic() {
    // Every header byte set to a handful of hostile values, in both byte orders' files:
    // reading must return (Ok or Err), never panic or allocate absurdly.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.nii");
    for source in [
        valid_bytes(),
        std::fs::read(fixture("big_endian_int16")).unwrap(),
    ] {
        for at in 0..352 {
            for value in [0x00, 0x7f, 0x80, 0xff] {
                let mut bytes = source.clone();
                bytes[at] = value;
                std::fs::write(&path, &bytes).unwrap();
                if let Ok(v) = nifti::read_f32(&path) {
                    assert!(v.geometry().validate().is_ok());
                }
            }
        }
    }
}
