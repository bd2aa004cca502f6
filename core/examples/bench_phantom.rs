//! Times phantom generation against a baseline measured in the same run.
//!
//! `cargo run --profile bench-fast -p vertebra-core --example bench_phantom [-- SLICES]`
//!
//! Baseline: allocating the three output volumes of the same grid (f32 image, u8 labels, u8
//! tissue) and writing every voxel once in parallel, i.e. the memory traffic any generator of
//! this size must pay. Reported: the DICOM-demo size (512 × 512 × 300 at 0.7 × 0.7 × 1.25 mm,
//! T8–L5) with and without the scanner appearance, and a training-size phantom (128³ at 1 mm).

use std::time::Instant;

use rayon::prelude::*;
use vertebra_core::anatomy::Vertebra;
use vertebra_core::phantom::{LesionPlan, PhantomSpec, domain, generate, generate_clean};

/// Allocates and fills volumes of `n` voxels the way the generator's outputs are laid out.
fn baseline(n: usize) -> f64 {
    let t = Instant::now();
    let mut img = vec![0.0f32; n];
    let mut lab = vec![0u8; n];
    let mut tis = vec![0u8; n];
    img.par_iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i & 1023) as f32);
    lab.par_iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i & 15) as u8);
    tis.par_iter_mut()
        .enumerate()
        .for_each(|(i, v)| *v = (i & 7) as u8);
    std::hint::black_box((&img, &lab, &tis));
    t.elapsed().as_secs_f64()
}

fn main() -> vertebra_core::Result<()> {
    let slices: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let threads = rayon::current_num_threads();
    let mut demo = PhantomSpec::new(
        7,
        Vertebra::T8,
        Vertebra::L5,
        domain::preset("ct-standard")?,
    );
    demo.in_plane = 512;
    demo.slices = Some(slices);
    demo.lesions = LesionPlan::Random { rate: 1.5 };
    let n = 512 * 512 * slices;

    let base = baseline(n);
    let t = Instant::now();
    let clean = generate_clean(&demo)?;
    let t_clean = t.elapsed().as_secs_f64();
    drop(clean);
    let t = Instant::now();
    let full = generate(&demo)?;
    let t_full = t.elapsed().as_secs_f64();
    drop(full);

    let mut train_domain = domain::preset("ct-standard")?;
    train_domain.pixel_spacing_mm = 1.0;
    train_domain.slice_spacing_mm = 1.0;
    train_domain.slice_thickness_mm = 1.0;
    let mut train = PhantomSpec::new(8, Vertebra::T12, Vertebra::L4, train_domain);
    train.slices = Some(128);
    let t = Instant::now();
    let small = generate(&train)?;
    let t_train = t.elapsed().as_secs_f64();
    let base_small = baseline(small.ct.len());

    println!("threads: {threads}");
    println!(
        "512x512x{slices} ({:.1} Mvoxel): baseline alloc+fill {base:.3} s",
        n as f64 / 1e6
    );
    println!(
        "  anatomy + clean HU: {t_clean:.2} s = {:.0}x baseline ({:.1} ns/voxel)",
        t_clean / base,
        t_clean * 1e9 / n as f64
    );
    println!(
        "  with appearance (ct-standard): {t_full:.2} s = {:.0}x baseline",
        t_full / base
    );
    println!(
        "128x128x128 at 1 mm with appearance: {t_train:.3} s = {:.0}x baseline ({base_small:.4} s)",
        t_train / base_small
    );
    Ok(())
}
