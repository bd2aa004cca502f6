//! `vertebra-phantom`: writes synthetic spinal CT/MR-like studies with exact ground truth.
//!
//! Thin glue over [`vertebra_core::phantom`] (generation), [`vertebra_core::nifti`] and
//! [`vertebra_core::dicom_series`] (files): it turns command-line options into a
//! [`PhantomSpec`], writes the volumes, ground truth and DICOM series, and for datasets runs the
//! cases in parallel and writes a manifest. Every option is documented in `--help` and in
//! `docs/phantom-cli.md`.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand, ValueEnum};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

use vertebra_core::anatomy::{Region, Vertebra};
use vertebra_core::dicom_series::{SeriesMeta, WrittenSeries, write_ct_series};
use vertebra_core::nifti::{self, WriteOptions, XformCode};
use vertebra_core::phantom::domain::{self, DomainPreset, Modality};
use vertebra_core::phantom::{
    self, FractureShape, LesionKind, LesionPlan, LesionRequest, Phantom, PhantomSpec,
};
use vertebra_core::{Error, Result};

/// Expected number of lesions per case for `--lesions random` (Poisson mean; the generator
/// caps a case at `phantom::MAX_RANDOM_LESIONS`).
const RANDOM_LESION_RATE: f64 = 1.0;

/// RNG stream (of the case seed) that picks the vertebrae and kinds for `--lesions N`. The
/// generator uses streams 0–3; a stream of our own keeps the anatomy independent of N.
const LESION_PICK_STREAM: u64 = 16;

/// Generate synthetic spinal studies (CT or MRI-like) with exact ground truth: vertebra label
/// maps, centroids, lesions. Synthetic data for testing and training; not for diagnostic use.
#[derive(Debug, Parser)]
#[command(name = "vertebra-phantom", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate one study: image (NIfTI and/or DICOM series), labels, mask and truth.json,
    /// then print a ground-truth summary.
    Study(StudyArgs),
    /// Generate N cases for each of several domains (in parallel) and a manifest.csv.
    Dataset(DatasetArgs),
    /// List the scanner domain presets.
    Domains(DomainsArgs),
}

/// Options shared by `study` and `dataset`: what to image and how to write it.
#[derive(Debug, Args)]
struct PhantomArgs {
    /// Spinal region to image: cervical (C1–C7), thoracic (T1–T12), lumbar (L1–L5, with L6
    /// when the patient has one) or whole (C1–L5). Default: lumbar. Conflicts with --from/--to.
    #[arg(long, value_enum, conflicts_with_all = ["from", "to"])]
    region: Option<RegionArg>,
    /// Most cranial vertebra to image (C1 … L5), used with --to.
    #[arg(long, value_parser = parse_vertebra, requires = "to")]
    from: Option<Vertebra>,
    /// Most caudal vertebra to image (C1 … L5; L6 forces a transitional sixth lumbar), used
    /// with --from.
    #[arg(long, value_parser = parse_vertebra, requires = "from")]
    to: Option<Vertebra>,
    /// In-plane matrix: columns = rows (e.g. 512 like a clinical CT, 128 for fast tests).
    #[arg(long, default_value_t = 512)]
    in_plane: usize,
    /// Number of slices; default: enough to cover the region at the domain's slice spacing.
    #[arg(long)]
    slices: Option<usize>,
    /// Lesions: "none"; "random" (Poisson, mean 1 per case, at most 4, any class, Genant
    /// grade 1 fractures included as non-targets); or a number N: exactly N target lesions
    /// (fractures of grade 2–3, lytic, sclerotic, infection) on distinct vertebrae of the
    /// imaged range, drawn from the seed.
    #[arg(long, default_value = "random", value_parser = parse_lesions)]
    lesions: LesionsArg,
    /// What to write the image as: nifti (ct.nii.gz / mr.nii.gz), dicom (a series in dicom/),
    /// or both. Labels, mask and truth.json are always written.
    #[arg(long, value_enum, default_value_t = Format::Nifti)]
    format: Format,
}

#[derive(Debug, Args)]
struct StudyArgs {
    /// Seed of the synthetic patient: the same seed and options give the same files.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Scanner domain preset (see `vertebra-phantom domains`).
    #[arg(long, default_value = "ct-standard")]
    domain: String,
    #[command(flatten)]
    phantom: PhantomArgs,
    /// Output directory (created). Must be empty unless --overwrite.
    #[arg(long)]
    out: PathBuf,
    /// Replace the outputs of a previous run in --out (only files this tool writes).
    #[arg(long)]
    overwrite: bool,
}

#[derive(Debug, Args)]
struct DatasetArgs {
    /// Comma-separated domain presets; default: all presets.
    #[arg(long, value_delimiter = ',')]
    domains: Vec<String>,
    /// Number of cases per domain.
    #[arg(long)]
    cases_per_domain: usize,
    /// Base seed. Case i of the d-th listed domain gets seed base + d * cases + i, or
    /// base + i with --paired.
    #[arg(long, default_value_t = 0)]
    base_seed: u64,
    /// Reuse the same patients (seeds) in every domain: case i is the same anatomy scanned
    /// on each domain's scanner (same patient_id, different study). Split by patient_id!
    #[arg(long)]
    paired: bool,
    #[command(flatten)]
    phantom: PhantomArgs,
    /// Output directory (created): cases/ID/… and manifest.csv. Must be empty unless
    /// --overwrite.
    #[arg(long)]
    out: PathBuf,
    /// Replace a previous dataset in --out (its cases/ and manifest.csv).
    #[arg(long)]
    overwrite: bool,
    /// Cases generated at the same time (each holds its volumes in memory: about 0.75 GB at
    /// 512×512×300). Default: the number of CPUs.
    #[arg(long)]
    jobs: Option<usize>,
}

#[derive(Debug, Args)]
struct DomainsArgs {
    /// Print the full presets as JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum RegionArg {
    Cervical,
    Thoracic,
    Lumbar,
    Whole,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Nifti,
    Dicom,
    Both,
}

impl Format {
    fn nifti(self) -> bool {
        matches!(self, Format::Nifti | Format::Both)
    }
    fn dicom(self) -> bool {
        matches!(self, Format::Dicom | Format::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum LesionsArg {
    None,
    Random,
    Exactly(usize),
}

fn parse_vertebra(s: &str) -> std::result::Result<Vertebra, String> {
    Vertebra::from_name(s).ok_or_else(|| format!("{s:?} is not a vertebra name (C1 … L5, L6)"))
}

fn parse_lesions(s: &str) -> std::result::Result<LesionsArg, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "none" => Ok(LesionsArg::None),
        "random" => Ok(LesionsArg::Random),
        n => n
            .parse()
            .map(LesionsArg::Exactly)
            .map_err(|_| format!("{s:?}: expected none, random or a number of lesions")),
    }
}

impl PhantomArgs {
    /// The imaged range, cranial first.
    fn range(&self) -> (Vertebra, Vertebra) {
        match (self.from, self.to, self.region) {
            (Some(from), Some(to), _) => (from, to),
            (_, _, Some(RegionArg::Cervical)) => (Vertebra::C1, Vertebra::C7),
            (_, _, Some(RegionArg::Thoracic)) => (Vertebra::T1, Vertebra::T12),
            (_, _, Some(RegionArg::Whole)) => (Vertebra::C1, Vertebra::L5),
            _ => (Vertebra::L1, Vertebra::L5),
        }
    }

    /// The generator spec of one case.
    fn spec(&self, seed: u64, preset: DomainPreset) -> Result<PhantomSpec> {
        let (first, last) = self.range();
        let mut spec = PhantomSpec::new(seed, first, last, preset);
        spec.in_plane = self.in_plane;
        spec.slices = self.slices;
        spec.lesions = match self.lesions {
            LesionsArg::None => LesionPlan::None,
            LesionsArg::Random => LesionPlan::Random {
                rate: RANDOM_LESION_RATE,
            },
            LesionsArg::Exactly(n) => LesionPlan::Explicit {
                lesions: pick_lesions(seed, first, last, n)?,
            },
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Exactly `n` target lesions on distinct vertebrae of `first..=last` (C1 excluded: no body),
/// kinds drawn uniformly; fractures are thoracolumbar (grade 2–3, any shape); an infection
/// takes its vertebra and the one below.
fn pick_lesions(
    seed: u64,
    first: Vertebra,
    last: Vertebra,
    n: usize,
) -> Result<Vec<LesionRequest>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(LESION_PICK_STREAM);
    let range: Vec<Vertebra> = (first.label()..=last.label())
        .filter_map(Vertebra::from_label)
        .filter(|&v| v != Vertebra::C1)
        .collect();
    let mut used: Vec<Vertebra> = Vec::new();
    let mut out = Vec::with_capacity(n);
    'lesion: for _ in 0..n {
        // Kinds in random order; the first that still fits somewhere wins.
        let mut kinds = [0_u8, 1, 2, 3];
        for i in (1..kinds.len()).rev() {
            kinds.swap(i, rng.random_range(0..=i));
        }
        for kind in kinds {
            let candidates: Vec<Vertebra> = range
                .iter()
                .copied()
                .filter(|v| !used.contains(v))
                .filter(|&v| match kind {
                    0 => v.region() != Region::Cervical,
                    3 => v
                        .next()
                        .is_some_and(|w| range.contains(&w) && !used.contains(&w)),
                    _ => true,
                })
                .collect();
            if candidates.is_empty() {
                continue;
            }
            let vertebra = candidates[rng.random_range(0..candidates.len())];
            let kind = match kind {
                0 => LesionKind::Fracture {
                    grade: rng.random_range(2..=3),
                    shape: [
                        FractureShape::Wedge,
                        FractureShape::Biconcave,
                        FractureShape::Crush,
                    ][rng.random_range(0..3)],
                },
                1 => LesionKind::Lytic,
                2 => LesionKind::Sclerotic,
                _ => LesionKind::Infection,
            };
            used.push(vertebra);
            if kind == LesionKind::Infection {
                used.extend(vertebra.next());
            }
            out.push(LesionRequest { kind, vertebra });
            continue 'lesion;
        }
        return Err(Error::InvalidArgument(format!(
            "cannot place {n} lesions on distinct vertebrae of {}–{} (one lesion per vertebra, \
             an infection takes two); image a longer range or ask for fewer",
            first.name(),
            last.name()
        )));
    }
    Ok(out)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Study(args) => run_study(&args),
        Command::Dataset(args) => run_dataset(&args),
        Command::Domains(args) => run_domains(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vertebra-phantom: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Files of one written case, paths as written (absolute or relative to the working
/// directory, like `--out`).
#[derive(Debug)]
struct CaseFiles {
    image_nifti: Option<PathBuf>,
    dicom: Option<(PathBuf, WrittenSeries)>,
    labels: PathBuf,
    mask: PathBuf,
    truth: PathBuf,
    study_uid: String,
    patient_id: String,
}

/// Names this tool writes in a case directory (for --overwrite).
const CASE_OUTPUTS: [&str; 6] = [
    "ct.nii.gz",
    "mr.nii.gz",
    "labels.nii.gz",
    "mask.nii.gz",
    "truth.json",
    "dicom",
];

fn image_file_name(modality: Modality) -> &'static str {
    match modality {
        Modality::Ct => "ct.nii.gz",
        Modality::MrT1Like | Modality::MrT2Like => "mr.nii.gz",
    }
}

/// Generates and writes one case into `dir` (created).
fn write_case(spec: &PhantomSpec, format: Format, dir: &Path) -> Result<(Phantom, CaseFiles)> {
    let phantom = phantom::generate(spec)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let options = WriteOptions {
        description: format!(
            "vertebra-phantom seed {} {} (synthetic)",
            phantom.seed, phantom.domain
        ),
        // Synthetic data: the grid is the phantom's own frame, not a scanner's.
        xform_code: XformCode::AlignedAnat,
    };
    let series_meta = SeriesMeta::from_preset(phantom.seed, &spec.domain);
    let image_nifti = if format.nifti() {
        let path = dir.join(image_file_name(phantom.modality));
        nifti::write_f32(&path, &phantom.ct, &options)?;
        Some(path)
    } else {
        None
    };
    let labels = dir.join("labels.nii.gz");
    nifti::write_labels(&labels, &phantom.labels, &options)?;
    let mask = dir.join("mask.nii.gz");
    nifti::write_labels(&mask, &phantom.mask(), &options)?;
    let truth = dir.join("truth.json");
    write_file_atomically(&truth, &serde_json::to_vec_pretty(&phantom.truth())?)?;
    let dicom = if format.dicom() {
        let series_dir = dir.join("dicom");
        let written = write_ct_series(&phantom.ct, &series_meta, &series_dir)?;
        if written.clipped_voxels > 0 {
            return Err(Error::InvalidArgument(format!(
                "{} voxels of the generated image fell outside the DICOM pixel range; \
                 the phantom values are not {}",
                written.clipped_voxels,
                if phantom.modality == Modality::Ct {
                    "HU"
                } else {
                    "0..65535 intensities"
                }
            )));
        }
        Some((series_dir, written))
    } else {
        None
    };
    let files = CaseFiles {
        image_nifti,
        dicom,
        labels,
        mask,
        truth,
        study_uid: series_meta.uids().study_instance_uid,
        patient_id: series_meta.patient_id(),
    };
    Ok((phantom, files))
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_file_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let name = path
        .file_name()
        .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
    let tmp = path.with_file_name(format!(".{name}.partial-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        Error::io(path, e)
    })
}

/// Creates `dir`, or checks that it is empty; with `overwrite`, removes the listed entries of
/// a previous run first and then requires the rest to be empty.
fn prepare_out_dir(dir: &Path, overwrite: bool, ours: &[&str]) -> Result<()> {
    if dir.exists() && !dir.is_dir() {
        return Err(Error::InvalidArgument(format!(
            "--out {} exists and is not a directory",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    if overwrite {
        for name in ours {
            let p = dir.join(name);
            let removed = if p.is_dir() {
                std::fs::remove_dir_all(&p)
            } else if p.exists() {
                std::fs::remove_file(&p)
            } else {
                Ok(())
            };
            removed.map_err(|e| Error::io(&p, e))?;
        }
    }
    let mut entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    if let Some(entry) = entries.next() {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        return Err(Error::InvalidArgument(format!(
            "--out {} is not empty (it holds {}){}",
            dir.display(),
            entry.file_name().to_string_lossy(),
            if overwrite {
                "; --overwrite only replaces this tool's own outputs"
            } else {
                "; choose an empty directory or pass --overwrite to replace a previous run"
            }
        )));
    }
    Ok(())
}

fn run_study(args: &StudyArgs) -> Result<()> {
    let preset = domain::preset(&args.domain)?;
    let spec = args.phantom.spec(args.seed, preset)?;
    prepare_out_dir(&args.out, args.overwrite, &CASE_OUTPUTS)?;
    let started = Instant::now();
    let (phantom, files) = write_case(&spec, args.phantom.format, &args.out)?;
    print!("{}", study_summary(&phantom, &files, started.elapsed()));
    Ok(())
}

/// The human-readable ground-truth summary printed by `study`.
fn study_summary(p: &Phantom, files: &CaseFiles, elapsed: Duration) -> String {
    let mut s = String::new();
    let g = p.ct.geometry();
    let [nx, ny, nz] = p.ct.dims();
    let _ = writeln!(
        s,
        "Synthetic phantom study (not for diagnostic use), generated in {:.1} s",
        elapsed.as_secs_f64()
    );
    let _ = writeln!(s, "  seed        {} (patient {})", p.seed, files.patient_id);
    let _ = writeln!(s, "  domain      {} ({:?})", p.domain, p.modality);
    let _ = writeln!(
        s,
        "  grid        {nx} x {ny} x {nz} voxels, spacing {:.3} x {:.3} x {:.3} mm",
        g.spacing[0], g.spacing[1], g.spacing[2]
    );
    let names: Vec<&str> = p.centroids.iter().map(|c| c.vertebra.name()).collect();
    let _ = writeln!(
        s,
        "  vertebrae   {} present: {}{}",
        names.len(),
        names.join(" "),
        if p.l6_variant {
            " (transitional L6 variant)"
        } else {
            ""
        }
    );
    if p.lesions.is_empty() {
        let _ = writeln!(s, "  lesions     none");
    } else {
        let _ = writeln!(s, "  lesions     {}", p.lesions.len());
        for (i, l) in p.lesions.iter().enumerate() {
            let at = match l.partner {
                Some(below) => format!("{}/{} disc", l.vertebra.name(), below.name()),
                None => l.vertebra.name().to_owned(),
            };
            let mut detail = String::new();
            if let Some(grade) = l.genant_grade {
                let _ = write!(detail, ", Genant grade {grade}");
            }
            if let Some(shape) = l.fracture_shape {
                let _ = write!(detail, ", {}", format!("{shape:?}").to_lowercase());
            }
            if let Some(loss) = l.height_loss {
                let _ = write!(detail, ", height loss {:.0} %", loss * 100.0);
            }
            let _ = writeln!(
                s,
                "    {}. {} at {at}{detail}{}, box {:.1} x {:.1} x {:.1} mm at ({:.1}, {:.1}, {:.1}) LPS",
                i + 1,
                l.class.key(),
                if l.is_target { "" } else { " (not a target)" },
                l.size_mm[0],
                l.size_mm[1],
                l.size_mm[2],
                l.centre[0],
                l.centre[1],
                l.centre[2],
            );
        }
    }
    if !p.hardware.is_empty() {
        let mut levels: Vec<&str> = p.hardware.iter().map(|h| h.vertebra.name()).collect();
        levels.dedup();
        let _ = writeln!(
            s,
            "  hardware    {} pedicle screws at {}",
            p.hardware.len(),
            levels.join(" ")
        );
    }
    let _ = writeln!(s, "  files");
    if let Some(image) = &files.image_nifti {
        let _ = writeln!(s, "    image     {}", image.display());
    }
    if let Some((dir, series)) = &files.dicom {
        let _ = writeln!(
            s,
            "    dicom     {} ({} files, study UID {})",
            dir.display(),
            series.files.len(),
            series.uids.study_instance_uid
        );
    }
    let _ = writeln!(s, "    labels    {}", files.labels.display());
    let _ = writeln!(s, "    mask      {}", files.mask.display());
    let _ = writeln!(s, "    truth     {}", files.truth.display());
    s
}

/// One case of a dataset.
#[derive(Debug, Clone)]
struct CasePlan {
    id: String,
    seed: u64,
    preset: DomainPreset,
}

fn plan_dataset(args: &DatasetArgs) -> Result<Vec<CasePlan>> {
    if args.cases_per_domain == 0 {
        return Err(Error::InvalidArgument(
            "--cases-per-domain must be at least 1".into(),
        ));
    }
    let names: Vec<String> = if args.domains.is_empty() {
        domain::presets().into_iter().map(|p| p.name).collect()
    } else {
        args.domains.iter().map(|d| d.trim().to_owned()).collect()
    };
    let mut plans = Vec::new();
    for (d, name) in names.iter().enumerate() {
        if names[..d].contains(name) {
            return Err(Error::InvalidArgument(format!(
                "domain {name} is listed twice in --domains"
            )));
        }
        let preset = domain::preset(name)?;
        for i in 0..args.cases_per_domain {
            let offset = if args.paired {
                i as u64
            } else {
                (d * args.cases_per_domain + i) as u64
            };
            let seed = args.base_seed.checked_add(offset).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "--base-seed {} + {offset} overflows a 64-bit seed",
                    args.base_seed
                ))
            })?;
            plans.push(CasePlan {
                id: format!("{name}-{i:04}"),
                seed,
                preset: preset.clone(),
            });
        }
    }
    Ok(plans)
}

/// Manifest columns, in order.
const MANIFEST_HEADER: &str =
    "id,patient_id,study_uid,domain,modality,image,labels,centroids,lesions,split";

fn run_dataset(args: &DatasetArgs) -> Result<()> {
    let plans = plan_dataset(args)?;
    // Check every spec before writing anything, so a bad option fails in a second.
    let specs: Vec<PhantomSpec> = plans
        .iter()
        .map(|p| args.phantom.spec(p.seed, p.preset.clone()))
        .collect::<Result<_>>()?;
    prepare_out_dir(&args.out, args.overwrite, &["cases", "manifest.csv"])?;
    let jobs = match args.jobs {
        Some(0) => return Err(Error::InvalidArgument("--jobs must be at least 1".into())),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, std::num::NonZero::get),
    };
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .build()
        .map_err(|e| Error::InvalidArgument(format!("cannot start {jobs} worker threads: {e}")))?;
    let total = plans.len();
    let done = AtomicUsize::new(0);
    let stderr = Mutex::new(());
    let started = Instant::now();
    eprintln!(
        "vertebra-phantom: {total} cases ({} domains x {}), {jobs} at a time, into {}",
        total / args.cases_per_domain,
        args.cases_per_domain,
        args.out.display()
    );
    let rows: Vec<String> = pool.install(|| {
        plans
            .par_iter()
            .zip(specs.par_iter())
            .map(|(plan, spec)| {
                let rel = PathBuf::from("cases").join(&plan.id);
                let (phantom, files) = write_case(spec, args.phantom.format, &args.out.join(&rel))
                    .inspect_err(|_| {
                        eprintln!("vertebra-phantom: case {} (seed {}) failed", plan.id, plan.seed);
                    })?;
                let k = done.fetch_add(1, Ordering::SeqCst) + 1;
                let elapsed = started.elapsed().as_secs_f64();
                let eta = elapsed / k as f64 * (total - k) as f64;
                {
                    let _guard = stderr.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    eprintln!(
                        "  case {k}/{total} {} (seed {}, {} lesions) done; elapsed {elapsed:.1} s, ETA {eta:.1} s",
                        plan.id,
                        plan.seed,
                        phantom.lesions.len()
                    );
                }
                Ok(manifest_row(plan, &phantom, &files, &rel))
            })
            .collect::<Result<Vec<String>>>()
    })?;
    let mut csv = String::from(MANIFEST_HEADER);
    csv.push('\n');
    for row in rows {
        csv.push_str(&row);
        csv.push('\n');
    }
    let manifest = args.out.join("manifest.csv");
    write_file_atomically(&manifest, csv.trim_end().as_bytes())?;
    eprintln!(
        "vertebra-phantom: {total} cases in {:.1} s; manifest {}",
        started.elapsed().as_secs_f64(),
        manifest.display()
    );
    Ok(())
}

/// One manifest line; paths are relative to the manifest's directory.
fn manifest_row(plan: &CasePlan, phantom: &Phantom, files: &CaseFiles, rel: &Path) -> String {
    let image = if files.image_nifti.is_some() {
        rel.join(image_file_name(phantom.modality))
    } else {
        rel.join("dicom")
    };
    let truth = rel.join("truth.json");
    let modality = serde_json::to_value(phantom.modality)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let fields = [
        plan.id.clone(),
        files.patient_id.clone(),
        files.study_uid.clone(),
        plan.preset.name.clone(),
        modality,
        path_field(&image),
        path_field(&rel.join("labels.nii.gz")),
        path_field(&truth),
        path_field(&truth),
        String::new(),
    ];
    fields
        .iter()
        .map(|f| csv_field(f))
        .collect::<Vec<_>>()
        .join(",")
}

/// A relative path with `/` separators.
fn path_field(p: &Path) -> String {
    p.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// RFC 4180 quoting where needed.
fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

fn run_domains(args: &DomainsArgs) -> Result<()> {
    let presets = domain::presets();
    let mut out = String::new();
    if args.json {
        out = serde_json::to_string_pretty(&presets)?;
        out.push('\n');
    } else {
        let _ = writeln!(
            out,
            "{:<26} {:<9} {:>8} {:>8} {:>9} {:>7} {:>7}  metal",
            "name", "modality", "pixel", "slice", "thickness", "noise", "kernel"
        );
        for p in &presets {
            let _ = writeln!(
                out,
                "{:<26} {:<9} {:>5.2} mm {:>5.2} mm {:>6.2} mm {:>7.1} {:>7.1}  {}",
                p.name,
                format!("{:?}", p.modality),
                p.pixel_spacing_mm,
                p.slice_spacing_mm,
                p.slice_thickness_mm,
                p.noise_sigma,
                p.kernel_sharpness,
                p.metal
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |m| format!("{} levels", m.levels))
            );
        }
    }
    std::io::stdout()
        .write_all(out.as_bytes())
        .map_err(|e| Error::io("<stdout>", e))
}
