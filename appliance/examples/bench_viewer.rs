//! Result viewer: time to first paint, server-side PNG vs client-side raw slices.
//!
//! ```text
//! cargo run --profile bench-fast -p vertebrad --example bench_viewer [-- IN_PLANE SLICES]
//! ```
//!
//! Builds a phantom (default 512 × 512 × 300, 0.7 × 0.7 × 1.25 mm, T9–L5, lesions), writes it
//! the way the appliance holds it — the source as a DICOM series (one file per slice), the
//! analysis as `labels.nii.gz` + `lesion_heatmap.nii.gz` + `result.json` — and measures what
//! stands between a click on "view" and three painted panes:
//!
//! - **load**: `viewer::load_result` (decode the series through the engine's loader, read the
//!   label map and heatmap, reorient): both approaches pay it once per series (then cached);
//! - **server-side PNG**: `render_slice` of the middle axial, sagittal and coronal slices
//!   (window, overlay, names, square pixels, PNG encoding) and their bytes;
//! - **client-side raw**: `raw_slice(..).to_bytes()` of the same three slices (HU as i16 and
//!   labels, unwindowed, on the voxel grid) and their bytes — the browser would then window,
//!   colour, resample to square pixels and draw them itself.
//!
//! Then scrolling: mean per-slice cost over 20 axial slices for both. Printed as a table.
//! Transfer time on the console's LAN is estimated from the byte counts at 100 Mbit/s and
//! 1 Gbit/s (the browser-side work of the raw approach cannot be measured here; see
//! docs/benchmarks.md).

use std::path::Path;
use std::time::Instant;

use vertebra_core::anatomy::Vertebra;
use vertebra_core::dicom_series::{SeriesMeta, write_ct_series};
use vertebra_core::nifti::{WriteOptions, write_labels};
use vertebra_core::phantom::{self, LesionPlan, PhantomSpec, domain};
use vertebra_core::postprocess::IdSource;
use vertebrad::engine::analyze::{LABEL_MAP_FILE, LESION_HEATMAP_FILE, RESULT_FILE};
use vertebrad::engine::document::{
    DISCLAIMER, InputInfo, LesionResult, ModelInfo, OutputFiles, ResultDocument, SCHEMA,
    SCHEMA_VERSION, Timings, VertebraResult,
};
use vertebrad::series::SeriesOptions;
use vertebrad::viewer::render::{raw_slice, render_slice};
use vertebrad::viewer::{Plane, ViewerInfo, Window, load_result};

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("IN_PLANE and SLICES are numbers"))
        .collect();
    let in_plane = args.first().copied().unwrap_or(512);
    let slices = args.get(1).copied().unwrap_or(300);
    let dir = tempfile::tempdir().expect("temp dir");
    let t = Instant::now();
    let mut spec = PhantomSpec::new(
        3,
        Vertebra::T9,
        Vertebra::L5,
        domain::preset("ct-standard").expect("preset"),
    );
    spec.in_plane = in_plane;
    spec.slices = Some(slices);
    spec.lesions = LesionPlan::Random { rate: 0.5 };
    let p = phantom::generate(&spec).expect("phantom");
    write_ct_series(
        &p.ct,
        &SeriesMeta::from_preset(p.seed, &spec.domain),
        &dir.path().join("series"),
    )
    .expect("DICOM series");
    let result = dir.path().join("result");
    write_result(&result, &p);
    eprintln!(
        "phantom {:?} written as DICOM + result in {:.1} s (not timed below)",
        p.ct.dims(),
        t.elapsed().as_secs_f64()
    );
    drop(p);

    let opts = SeriesOptions::default();
    let t = Instant::now();
    let volume = load_result(&result, &dir.path().join("series"), &opts).expect("load");
    let load_ms = ms(t);
    let t = Instant::now();
    let info = ViewerInfo::of(&volume).to_json();
    let info_ms = ms(t);

    let mut png_ms = Vec::new();
    let mut png_bytes = Vec::new();
    let mut raw_ms = Vec::new();
    let mut raw_bytes = Vec::new();
    for plane in Plane::ALL {
        let k = volume.slices(plane) / 2;
        let t = Instant::now();
        let png = render_slice(&volume, plane, k, Window::BONE, true, false).expect("render");
        png_ms.push(ms(t));
        png_bytes.push(png.len());
        let t = Instant::now();
        let raw = raw_slice(&volume, plane, k).expect("raw").to_bytes();
        raw_ms.push(ms(t));
        raw_bytes.push(raw.len());
    }
    let scroll = 20usize.min(volume.slices(Plane::Axial));
    let start = volume.slices(Plane::Axial) / 2 - scroll / 2;
    let t = Instant::now();
    let mut scroll_png = 0usize;
    for k in start..start + scroll {
        scroll_png += render_slice(&volume, Plane::Axial, k, Window::BONE, true, true)
            .expect("render")
            .len();
    }
    let scroll_png_ms = ms(t) / scroll as f64;
    let t = Instant::now();
    let mut scroll_raw = 0usize;
    for k in start..start + scroll {
        scroll_raw += raw_slice(&volume, Plane::Axial, k)
            .expect("raw")
            .to_bytes()
            .len();
    }
    let scroll_raw_ms = ms(t) / scroll as f64;

    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let total = |v: &[usize]| v.iter().sum::<usize>();
    let wire = |bytes: usize, mbit: f64| bytes as f64 * 8.0 / (mbit * 1e6) * 1000.0;
    let server = load_ms + info_ms + sum(&png_ms);
    let client = load_ms + info_ms + sum(&raw_ms);
    println!("| step | server-side PNG | client-side raw |");
    println!("|---|---|---|");
    println!(
        "| load (series decode + labels + heatmap + reorient) | {load_ms:.0} ms | {load_ms:.0} ms |"
    );
    println!(
        "| info.json ({} bytes) | {info_ms:.1} ms | {info_ms:.1} ms |",
        info.len()
    );
    for (i, plane) in Plane::ALL.iter().enumerate() {
        println!(
            "| first {} slice | {:.1} ms, {} KiB | {:.2} ms, {} KiB |",
            plane.key(),
            png_ms[i],
            png_bytes[i] / 1024,
            raw_ms[i],
            raw_bytes[i] / 1024
        );
    }
    println!(
        "| server time to the three first images | {server:.0} ms | {client:.0} ms (+ browser work) |"
    );
    println!(
        "| three images on the wire, 100 Mbit/s / 1 Gbit/s | {:.0} / {:.1} ms | {:.0} / {:.1} ms |",
        wire(total(&png_bytes), 100.0),
        wire(total(&png_bytes), 1000.0),
        wire(total(&raw_bytes), 100.0),
        wire(total(&raw_bytes), 1000.0)
    );
    println!(
        "| scrolling, per axial slice (overlay + heatmap) | {scroll_png_ms:.1} ms, {} KiB | {scroll_raw_ms:.2} ms, {} KiB |",
        scroll_png / scroll / 1024,
        scroll_raw / scroll / 1024
    );
    println!(
        "| ratio server/client, first three images without load | {:.1}x | 1x |",
        sum(&png_ms) / sum(&raw_ms)
    );
    println!(
        "| ratio server/client, load + first three images | {:.3}x | 1x |",
        server / client
    );
    println!(
        "volume {:?}, {} MiB in the cache",
        volume.dims(),
        volume.bytes() >> 20
    );
}

/// Writes the analysis files for the phantom's ground truth as `vertebrad analyze` would.
fn write_result(dir: &Path, p: &phantom::Phantom) {
    std::fs::create_dir_all(dir).expect("result dir");
    write_labels(
        dir.join(LABEL_MAP_FILE),
        &p.labels,
        &WriteOptions::default(),
    )
    .expect("labels");
    let g = *p.ct.geometry();
    let heat = p.labels.map(|_| 0u8);
    let mut heat = heat;
    for l in &p.lesions {
        let lo = g.world_to_voxel(std::array::from_fn(|a| l.centre[a] - l.size_mm[a] / 2.0));
        let hi = g.world_to_voxel(std::array::from_fn(|a| l.centre[a] + l.size_mm[a] / 2.0));
        let dims = heat.dims();
        let range = |a: usize| {
            let (a0, a1) = (
                lo[a].min(hi[a]).floor().max(0.0) as usize,
                hi[a].max(lo[a]).ceil() as usize,
            );
            a0..(a1 + 1).min(dims[a])
        };
        for z in range(2) {
            for y in range(1) {
                for x in range(0) {
                    let i = heat.index(x, y, z);
                    heat.data_mut()[i] = 230;
                }
            }
        }
    }
    write_labels(
        dir.join(LESION_HEATMAP_FILE),
        &heat,
        &WriteOptions::default(),
    )
    .expect("heatmap");
    let document = ResultDocument {
        schema: SCHEMA.into(),
        schema_version: SCHEMA_VERSION,
        disclaimer: DISCLAIMER.into(),
        software_version: env!("CARGO_PKG_VERSION").into(),
        model: ModelInfo {
            name: "phantom truth".into(),
            manifest_sha256: String::new(),
            signed_by: String::new(),
            demo: true,
            precision: "fp32".into(),
            execution_provider: "cpu".into(),
        },
        input: InputInfo {
            kind: "dicom".into(),
            modality: "CT".into(),
            study_instance_uid: None,
            series_instance_uid: None,
            instances: p.ct.dims()[2],
            dims: p.ct.dims(),
            spacing_mm: g.spacing,
            transfer_syntaxes: Vec::new(),
            prepared_dims: p.ct.dims(),
        },
        localization: None,
        windows: 0,
        id_source: IdSource::Head,
        order_decoded: true,
        vertebrae: p
            .centroids
            .iter()
            .map(|c| VertebraResult {
                name: c.vertebra.name().into(),
                label: c.vertebra.label(),
                confidence: 1.0,
                raw_name: c.vertebra.name().into(),
                raw_probability: 1.0,
                volume_mm3: c.voxels as f64 * g.voxel_volume_mm3(),
                centroid_lps_mm: c.world,
                core_mean_hu: None,
                heights: None,
                height_loss: None,
                genant_grade: None,
                touches_border: false,
                mean_hu: None,
                bbox_source_voxels: None,
            })
            .collect(),
        lesions: p
            .lesions
            .iter()
            .map(|l| LesionResult {
                class: l.class.key().into(),
                score: 1.0,
                centre_lps_mm: l.centre,
                size_mm: l.size_mm,
                vertebra: Some(l.vertebra.name().into()),
                vertebra_distance_mm: 0.0,
            })
            .collect(),
        timings_s: Timings::default(),
        files: OutputFiles {
            label_map: LABEL_MAP_FILE.into(),
            lesion_heatmap: Some(LESION_HEATMAP_FILE.into()),
            seg: None,
            sr: None,
        },
        warnings: Vec::new(),
    };
    std::fs::write(
        dir.join(RESULT_FILE),
        serde_json::to_vec(&document).expect("document"),
    )
    .expect("result.json");
}
