//! Resampling throughput: a 512×512×300 CT-sized f32 volume at 0.7×0.7×1.25 mm to 1 mm
//! isotropic (the appliance's first preprocessing step), against scipy.ndimage.zoom(order=1)
//! on the same array as the baseline, run by the project venv's Python in the same command.
//!
//! ```text
//! cargo run --profile bench-fast -p vertebra-core --example bench_resample
//! ```
//!
//! The venv is `$VERTEBRA_VENV` (default `$HOME/.cache/vertebra/venv`, provisioned by
//! `scripts/provision-python.sh`); without it the benchmark fails, because a number without
//! its baseline says nothing about this machine. Besides timing `zoom`, the script resamples
//! with `scipy.ndimage.affine_transform(order=1, mode="nearest")` using exactly our grid
//! convention and reports the largest difference from our output, so the benchmark also proves
//! the result at full size.

use rayon::prelude::*;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use vertebra_core::volume::{DEFAULT_SPACING_MM, Grid, resample_image_to_spacing};
use vertebra_core::{Error, Geometry, Result, Volume};

const DIMS: [usize; 3] = [512, 512, 300];
const SPACING: [f64; 3] = [0.7, 0.7, 1.25];
const RUNS: usize = 5;

const SCIPY_SCRIPT: &str = r#"
import json, sys, time
import numpy as np, scipy, scipy.ndimage as ndi
src, ours, nx, ny, nz, sx, sy, sz, mx, my, mz = sys.argv[1:12]
nx, ny, nz, mx, my, mz = map(int, (nx, ny, nz, mx, my, mz))
sx, sy, sz = map(float, (sx, sy, sz))
a = np.fromfile(src, dtype="<f4").reshape((nz, ny, nx))  # x fastest on disk
zoom = (sz / 1.0, sy / 1.0, sx / 1.0)
times = []
for _ in range(2):
    t = time.perf_counter()
    out = ndi.zoom(a, zoom, order=1)
    times.append(time.perf_counter() - t)
assert out.shape == (mz, my, mx), out.shape
# Our convention: output voxel j samples source coordinate j * t / s, edge-clamped.
ref = ndi.affine_transform(a, np.diag([1.0 / z for z in zoom]), order=1, mode="nearest",
                           output_shape=(mz, my, mx), output=np.float64)
b = np.fromfile(ours, dtype="<f4").reshape((mz, my, mx))
diff = np.abs(b.astype(np.float64) - ref)
print(json.dumps({"zoom_s": min(times), "zoom_runs": times, "max_abs_diff": float(diff.max()),
                  "max_abs_ref": float(np.abs(ref).max()), "scipy": scipy.__version__,
                  "numpy": np.__version__}))
"#;

fn main() -> Result<()> {
    let python = venv_python()?;
    let threads = rayon::current_num_threads();
    println!(
        "bench_resample: {DIMS:?} f32 at {SPACING:?} mm -> {DEFAULT_SPACING_MM:?} mm, \
         {threads} rayon threads"
    );

    let vol = synthetic_ct()?;
    let target = Grid::of(&vol).with_spacing(DEFAULT_SPACING_MM)?;
    let out_voxels = target.dims.iter().product::<usize>();
    println!(
        "output grid {:?} = {out_voxels} voxels (input {} voxels)",
        target.dims,
        vol.len()
    );

    // Warm-up (page faults of the first allocation), then timed runs.
    let mut out = resample_image_to_spacing(&vol, DEFAULT_SPACING_MM, -1000.0)?;
    let mut times = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let t = Instant::now();
        out = resample_image_to_spacing(&vol, DEFAULT_SPACING_MM, -1000.0)?;
        times.push(t.elapsed().as_secs_f64());
    }
    let ours = median(&mut times);
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot build a 1-thread pool: {e}")))?
        .install(|| -> Result<f64> {
            let t = Instant::now();
            resample_image_to_spacing(&vol, DEFAULT_SPACING_MM, -1000.0)?;
            Ok(t.elapsed().as_secs_f64())
        })?;

    let dir = tempfile::tempdir().map_err(|e| Error::io(std::env::temp_dir(), e))?;
    let src_path = dir.path().join("source.f32");
    let out_path = dir.path().join("ours.f32");
    write_f32(&src_path, vol.data())?;
    write_f32(&out_path, out.data())?;
    let mut args: Vec<String> = vec![
        "-c".into(),
        SCIPY_SCRIPT.into(),
        src_path.display().to_string(),
        out_path.display().to_string(),
    ];
    args.extend(DIMS.iter().map(ToString::to_string));
    args.extend(SPACING.iter().map(ToString::to_string));
    args.extend(target.dims.iter().map(ToString::to_string));
    let run = Command::new(&python)
        .args(&args)
        .output()
        .map_err(|e| Error::io(&python, e))?;
    if !run.status.success() {
        return Err(Error::InvalidArgument(format!(
            "the scipy baseline failed ({}): {}",
            run.status,
            String::from_utf8_lossy(&run.stderr)
        )));
    }
    let report: serde_json::Value = serde_json::from_slice(&run.stdout)?;
    let zoom_s = report["zoom_s"]
        .as_f64()
        .ok_or_else(|| Error::InvalidArgument(format!("bad baseline report {report}")))?;
    let max_diff = report["max_abs_diff"].as_f64().unwrap_or(f64::NAN);

    let rate = |s: f64| out_voxels as f64 / s / 1e6;
    println!(
        "vertebra-core resample_image_to_spacing: median {ours:.3} s of {RUNS} runs \
         = {:.1} Mvoxel/s (output voxels)",
        rate(ours)
    );
    println!(
        "vertebra-core on 1 rayon thread:         {single:.3} s = {:.1} Mvoxel/s",
        rate(single)
    );
    println!(
        "scipy {} ndimage.zoom(order=1):        best {zoom_s:.3} s of 2 runs = {:.1} Mvoxel/s",
        report["scipy"].as_str().unwrap_or("?"),
        rate(zoom_s)
    );
    println!(
        "speed-up vs scipy zoom: {:.1}x ({threads} threads), {:.1}x (1 thread)",
        zoom_s / ours,
        zoom_s / single
    );
    println!(
        "agreement with scipy affine_transform(order=1, mode=nearest) on our grid: \
         max |diff| = {max_diff:.3e} HU (values up to {:.0})",
        report["max_abs_ref"].as_f64().unwrap_or(f64::NAN)
    );
    if max_diff.is_nan() || max_diff > 1e-3 {
        return Err(Error::InvalidArgument(format!(
            "resampled volume differs from scipy by {max_diff}"
        )));
    }
    Ok(())
}

/// The venv's Python, or an error saying how to provision it.
fn venv_python() -> Result<PathBuf> {
    let venv = std::env::var_os("VERTEBRA_VENV")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/vertebra/venv")))
        .ok_or_else(|| Error::InvalidArgument("neither VERTEBRA_VENV nor HOME is set".into()))?;
    let python = venv.join("bin/python");
    if python.is_file() {
        Ok(python)
    } else {
        Err(Error::InvalidArgument(format!(
            "{} not found: the scipy baseline needs the project venv; run \
             scripts/provision-python.sh or set VERTEBRA_VENV",
            python.display()
        )))
    }
}

/// A deterministic CT-like volume: smooth structures in the HU range plus hashed noise.
fn synthetic_ct() -> Result<Volume<f32>> {
    let [nx, ny, _] = DIMS;
    let n = DIMS.iter().product::<usize>();
    let data: Vec<f32> = (0..n)
        .into_par_iter()
        .map(|i| {
            let (x, y, z) = (i % nx, (i / nx) % ny, i / (nx * ny));
            let smooth = 400.0 * (x as f32 * 0.05).sin() * (y as f32 * 0.07).cos()
                + 300.0 * (z as f32 * 0.11).sin();
            let noise = ((i.wrapping_mul(2_654_435_761) >> 7) % 101) as f32 - 50.0;
            smooth + noise
        })
        .collect();
    Volume::from_vec(DIMS, data, Geometry::axis_aligned(SPACING, [0.0; 3]))
}

fn write_f32(path: &Path, values: &[f32]) -> Result<()> {
    let file = std::fs::File::create(path).map_err(|e| Error::io(path, e))?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    for chunk in values.chunks(1 << 16) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        w.write_all(&bytes).map_err(|e| Error::io(path, e))?;
    }
    w.flush().map_err(|e| Error::io(path, e))
}

fn median(times: &mut [f64]) -> f64 {
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}
