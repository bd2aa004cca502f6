//! The split tool and the leakage audit.
//!
//! ## Split (`vertebra-train split`)
//! Patient-level 60/20/20 train/val/test, stratified by domain and pathology severity, seeded.
//! - A patient's **domain key** is the sorted set of the domains of its cases (`a+b` for a
//!   patient scanned on two scanners, as in paired phantom datasets).
//! - A case's **severity** ([`Severity`]) is the larger of a fracture bucket (the highest
//!   Genant grade among its lesions, 0–3) and a count bucket of its target lesions
//!   (0 → 0, 1 → 1, 2–3 → 2, ≥ 4 → 3); a case whose lesions are not annotated has
//!   [`Severity::Unknown`]. A patient takes the highest severity of its cases (unknown only if
//!   every case is unknown).
//! - Per stratum (domain key, severity) the patients are sorted by id, shuffled with a
//!   ChaCha8 stream seeded from the run seed and the stratum name, and cut by the largest
//!   remainder method: train/val/test sizes are `⌊0.6 n⌋`, `⌊0.2 n⌋`, `⌊0.2 n⌋` plus the
//!   leftover patients to the largest fractional parts (ties: train, val, test), so every
//!   split is within one patient of its exact share. All cases of a patient share its split.
//!
//! ## Audit (`vertebra-train audit`)
//! - **Study UID groups**: one study under two patients is an error; one study in two
//!   splits is a leak (also found for patients).
//! - **Near duplicates**: a 512-bit perceptual hash per image: the image is reoriented to LPS
//!   voxel order (no interpolation), the central 50 axial slices (all, if fewer) are cut into
//!   8×8×8 blocks (boundaries `⌊k·n/8⌋`), each bit is "block mean HU > median of the 512
//!   block means". Pairs with Hamming distance < 5 ([`NEAR_DUPLICATE_HAMMING`]) are flagged;
//!   a flagged pair in two different splits is a leak.
//!
//! The report is written as `audit.md` and `audit.json`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use vertebra_core::Volume;
use vertebra_core::phantom::LesionTruth;
use vertebra_core::volume::reorient::reorient_to_lps;

use crate::manifest::{Manifest, Split};
use crate::readers::{read_image, read_lesions};
use crate::{Error, Result};

/// Pairs of images with a Hamming distance below this are near duplicates.
pub const NEAR_DUPLICATE_HAMMING: u32 = 5;

/// Axial slices the hash looks at.
pub const HASH_SLICES: usize = 50;

/// Split fractions train / val / test.
pub const SPLIT_FRACTIONS: [f64; 3] = [0.6, 0.2, 0.2];

/// Pathology severity of a case or patient (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Lesions not annotated.
    Unknown,
    /// No target lesion, no fracture.
    None,
    /// Genant 1 or one lesion.
    Mild,
    /// Genant 2 or two to three lesions.
    Moderate,
    /// Genant 3 or four and more lesions.
    Severe,
}

impl Severity {
    /// The severity of a case's lesions (`None` = not annotated).
    pub fn of(lesions: Option<&[LesionTruth]>) -> Self {
        let Some(ls) = lesions else {
            return Severity::Unknown;
        };
        let grade = ls.iter().filter_map(|l| l.genant_grade).max().unwrap_or(0);
        let count = match ls.iter().filter(|l| l.is_target).count() {
            0 => 0,
            1 => 1,
            2 | 3 => 2,
            _ => 3,
        };
        match grade.max(count) {
            0 => Severity::None,
            1 => Severity::Mild,
            2 => Severity::Moderate,
            _ => Severity::Severe,
        }
    }

    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            Severity::Unknown => "unknown",
            Severity::None => "none",
            Severity::Mild => "mild",
            Severity::Moderate => "moderate",
            Severity::Severe => "severe",
        }
    }
}

/// Split sizes of a stratum of `n` patients (largest remainder; module docs).
pub fn split_sizes(n: usize) -> [usize; 3] {
    let exact = SPLIT_FRACTIONS.map(|f| f * n as f64);
    let mut sizes = exact.map(|e| e.floor() as usize);
    let mut left = n - sizes.iter().sum::<usize>();
    let mut order = [0usize, 1, 2];
    // Stable sort keeps train, val, test order on ties.
    order.sort_by(|&a, &b| {
        let fa = exact[a] - exact[a].floor();
        let fb = exact[b] - exact[b].floor();
        fb.partial_cmp(&fa).unwrap_or(std::cmp::Ordering::Equal)
    });
    for &k in order.iter().cycle() {
        if left == 0 {
            break;
        }
        sizes[k] += 1;
        left -= 1;
    }
    sizes
}

/// One stratum's outcome, for the summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StratumSummary {
    /// Domain key.
    pub domains: String,
    /// Severity.
    pub severity: Severity,
    /// Patients per split (train, val, test).
    pub patients: [usize; 3],
}

/// Assigns the split of every case of `manifest` in place (module docs); the severity of each
/// case comes from `severity(case index)`.
///
/// # Errors
/// Whatever `severity` returns.
pub fn assign_splits(
    manifest: &mut Manifest,
    seed: u64,
    severity: impl Fn(usize) -> Result<Severity>,
) -> Result<Vec<StratumSummary>> {
    // Patient → (domains, severity).
    let mut patients: BTreeMap<String, (BTreeSet<String>, Severity)> = BTreeMap::new();
    for (i, c) in manifest.cases.iter().enumerate() {
        let s = severity(i)?;
        let e = patients
            .entry(c.patient_id.clone())
            .or_insert_with(|| (BTreeSet::new(), Severity::Unknown));
        e.0.insert(c.domain.clone());
        e.1 = e.1.max(s);
    }
    let mut strata: BTreeMap<(String, Severity), Vec<String>> = BTreeMap::new();
    for (p, (domains, s)) in patients {
        let key = domains.into_iter().collect::<Vec<_>>().join("+");
        strata.entry((key, s)).or_default().push(p);
    }
    let mut assignment: BTreeMap<String, Split> = BTreeMap::new();
    let mut summary = Vec::new();
    for ((domains, sev), mut ps) in strata {
        ps.sort();
        let mut rng =
            ChaCha8Rng::seed_from_u64(seed ^ fnv1a(format!("{domains}/{}", sev.name()).as_bytes()));
        ps.shuffle(&mut rng);
        let sizes = split_sizes(ps.len());
        for (k, p) in ps.into_iter().enumerate() {
            let split = if k < sizes[0] {
                Split::Train
            } else if k < sizes[0] + sizes[1] {
                Split::Val
            } else {
                Split::Test
            };
            assignment.insert(p, split);
        }
        summary.push(StratumSummary {
            domains,
            severity: sev,
            patients: sizes,
        });
    }
    for c in &mut manifest.cases {
        c.split = Some(assignment[&c.patient_id]);
    }
    Ok(summary)
}

/// Severity of manifest case `i`, reading its lesion file (unknown without one).
///
/// # Errors
/// [`Error::Case`] if the lesion file cannot be read.
pub fn case_severity(manifest: &Manifest, i: usize) -> Result<Severity> {
    let c = &manifest.cases[i];
    match &c.lesions {
        None => Ok(Severity::Unknown),
        Some(p) => {
            let ls = read_lesions(p).map_err(|m| Error::Case {
                case: c.id.clone(),
                message: format!("lesions {}: {m}", p.display()),
            })?;
            Ok(Severity::of(Some(&ls)))
        }
    }
}

/// 64-bit FNV-1a (stable across platforms and Rust versions).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A 512-bit block-mean perceptual hash (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHash(pub [u64; 8]);

impl BlockHash {
    /// Hamming distance.
    pub fn distance(&self, other: &BlockHash) -> u32 {
        self.0
            .iter()
            .zip(other.0.iter())
            .map(|(a, b)| (a ^ b).count_ones())
            .sum()
    }

    /// Hex string (128 digits).
    pub fn hex(&self) -> String {
        self.0.iter().fold(String::with_capacity(128), |mut s, w| {
            let _ = write!(s, "{w:016x}");
            s
        })
    }

    /// Hashes an image (module docs).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] for an image with fewer than 8 voxels along an axis.
    pub fn of(image: &Volume<f32>) -> Result<Self> {
        let lps;
        let v = match reorient_to_lps(image) {
            Ok(r) => {
                lps = r;
                &lps
            }
            // Oblique: hash the stored voxel order.
            Err(_) => image,
        };
        let [nx, ny, nz] = v.dims();
        if nx < 8 || ny < 8 || nz < 8 {
            return Err(Error::InvalidArgument(format!(
                "image {:?} is too small for an 8x8x8 block hash",
                v.dims()
            )));
        }
        let depth = nz.min(HASH_SLICES);
        let z0 = (nz - depth) / 2;
        let edge = |n: usize, k: usize| k * n / 8;
        let mut sums = [0.0f64; 512];
        let mut counts = [0usize; 512];
        let bx: Vec<usize> = (0..nx)
            .map(|x| (0..8).rfind(|&k| edge(nx, k) <= x).unwrap_or(0))
            .collect();
        let by: Vec<usize> = (0..ny)
            .map(|y| (0..8).rfind(|&k| edge(ny, k) <= y).unwrap_or(0))
            .collect();
        let data = v.data();
        for dz in 0..depth {
            let kz = (0..8).rfind(|&k| edge(depth, k) <= dz).unwrap_or(0);
            let z = z0 + dz;
            for y in 0..ny {
                let row = (z * ny + y) * nx;
                for x in 0..nx {
                    let b = (kz * 8 + by[y]) * 8 + bx[x];
                    sums[b] += f64::from(data[row + x]);
                    counts[b] += 1;
                }
            }
        }
        let means: Vec<f64> = (0..512)
            .map(|b| sums[b] / counts[b].max(1) as f64)
            .collect();
        let mut sorted = means.clone();
        sorted.sort_by(f64::total_cmp);
        let median = f64::midpoint(sorted[255], sorted[256]);
        let mut bits = [0u64; 8];
        for (b, m) in means.iter().enumerate() {
            if *m > median {
                bits[b / 64] |= 1 << (b % 64);
            }
        }
        Ok(BlockHash(bits))
    }
}

/// One flagged pair of images.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NearDuplicate {
    /// First case id.
    pub a: String,
    /// Second case id.
    pub b: String,
    /// Hamming distance of their hashes.
    pub hamming: u32,
    /// Whether the two cases belong to the same patient.
    pub same_patient: bool,
    /// Whether they are in different splits (a leak).
    pub cross_split: bool,
}

/// A key (study or patient) found in more than one split or under more than one patient.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupFinding {
    /// `study` or `patient`.
    pub kind: String,
    /// The study UID (patients are named by their case ids only).
    pub key: String,
    /// The case ids of the group.
    pub cases: Vec<String>,
    /// What is wrong.
    pub problem: String,
}

/// The audit's outcome.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// Cases audited.
    pub cases: usize,
    /// Cases per split name (`unassigned` for none).
    pub split_counts: BTreeMap<String, usize>,
    /// Study and patient findings.
    pub groups: Vec<GroupFinding>,
    /// Near-duplicate pairs.
    pub near_duplicates: Vec<NearDuplicate>,
    /// Hash of every case (hex), by case id.
    pub hashes: BTreeMap<String, String>,
}

impl AuditReport {
    /// Whether anything leaks between splits or a study has two patients.
    pub fn has_leaks(&self) -> bool {
        !self.groups.is_empty() || self.near_duplicates.iter().any(|d| d.cross_split)
    }

    /// The Markdown report.
    pub fn markdown(&self) -> String {
        let mut s = String::from("# Leakage audit\n\n");
        let _ = writeln!(
            s,
            "{} cases; splits: {}.\n",
            self.cases,
            self.split_counts
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        s.push_str("## Study and patient groups\n\n");
        if self.groups.is_empty() {
            s.push_str("No study under two patients, no study or patient in two splits.\n\n");
        } else {
            s.push_str("| kind | key | cases | problem |\n|---|---|---|---|\n");
            for g in &self.groups {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} |",
                    g.kind,
                    g.key,
                    g.cases.join(", "),
                    g.problem
                );
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "## Near duplicates (512-bit block-mean hash, central {HASH_SLICES} slices, Hamming < {NEAR_DUPLICATE_HAMMING})\n"
        );
        if self.near_duplicates.is_empty() {
            s.push_str("None.\n");
        } else {
            s.push_str("| case a | case b | Hamming | same patient | in two splits |\n|---|---|---|---|---|\n");
            for d in &self.near_duplicates {
                let _ = writeln!(
                    s,
                    "| {} | {} | {} | {} | {} |",
                    d.a,
                    d.b,
                    d.hamming,
                    if d.same_patient { "yes" } else { "no" },
                    if d.cross_split { "**LEAK**" } else { "no" }
                );
            }
        }
        s
    }
}

/// Audits a manifest whose image hashes are given (`hashes[i]` of case `i`).
pub fn audit_with_hashes(manifest: &Manifest, hashes: &[BlockHash]) -> AuditReport {
    let cases = &manifest.cases;
    let mut groups = Vec::new();
    let mut by_study: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut by_patient: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in cases.iter().enumerate() {
        by_study.entry(&c.study_uid).or_default().push(i);
        by_patient.entry(&c.patient_id).or_default().push(i);
    }
    let ids = |v: &Vec<usize>| v.iter().map(|&i| cases[i].id.clone()).collect::<Vec<_>>();
    let splits = |v: &Vec<usize>| v.iter().map(|&i| cases[i].split).collect::<BTreeSet<_>>();
    for (study, v) in &by_study {
        let patients: BTreeSet<&str> = v.iter().map(|&i| cases[i].patient_id.as_str()).collect();
        if patients.len() > 1 {
            groups.push(GroupFinding {
                kind: "study".into(),
                key: (*study).to_owned(),
                cases: ids(v),
                problem: format!(
                    "one study under {} patients (error in the data)",
                    patients.len()
                ),
            });
        }
        if splits(v).len() > 1 {
            groups.push(GroupFinding {
                kind: "study".into(),
                key: (*study).to_owned(),
                cases: ids(v),
                problem: "study in two splits (leak)".into(),
            });
        }
    }
    for v in by_patient.values() {
        if splits(v).len() > 1 {
            groups.push(GroupFinding {
                kind: "patient".into(),
                key: String::new(),
                cases: ids(v),
                problem: "patient in two splits (leak)".into(),
            });
        }
    }
    let mut near_duplicates = Vec::new();
    for i in 0..cases.len() {
        for j in i + 1..cases.len() {
            let d = hashes[i].distance(&hashes[j]);
            if d < NEAR_DUPLICATE_HAMMING {
                near_duplicates.push(NearDuplicate {
                    a: cases[i].id.clone(),
                    b: cases[j].id.clone(),
                    hamming: d,
                    same_patient: cases[i].patient_id == cases[j].patient_id,
                    cross_split: cases[i].split != cases[j].split,
                });
            }
        }
    }
    let mut split_counts = BTreeMap::new();
    for (s, n) in manifest.split_counts() {
        split_counts.insert(s.map_or("unassigned", Split::name).to_owned(), n);
    }
    AuditReport {
        cases: cases.len(),
        split_counts,
        groups,
        near_duplicates,
        hashes: cases
            .iter()
            .zip(hashes)
            .map(|(c, h)| (c.id.clone(), h.hex()))
            .collect(),
    }
}

/// Reads every image, hashes it and audits the manifest.
///
/// # Errors
/// [`Error::Case`] naming the case for an unreadable or too small image.
pub fn audit(manifest: &Manifest) -> Result<AuditReport> {
    let hashes = manifest
        .cases
        .iter()
        .map(|c| {
            let fail = |m: String| Error::Case {
                case: c.id.clone(),
                message: format!("image {}: {m}", c.image.display()),
            };
            let img = read_image(&c.image).map_err(fail)?;
            BlockHash::of(&img).map_err(|e| fail(e.to_string()))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(audit_with_hashes(manifest, &hashes))
}

/// Writes `audit.md` and `audit.json` into `dir` (created).
///
/// # Errors
/// [`Error::Io`] if the directory or a file cannot be written.
pub fn write_report(report: &AuditReport, dir: &Path) -> Result<()> {
    let io = |path: &Path, source| Error::Io {
        path: path.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let md = dir.join("audit.md");
    std::fs::write(&md, report.markdown()).map_err(|e| io(&md, e))?;
    let json = dir.join("audit.json");
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| Error::InvalidArgument(format!("cannot serialise the audit: {e}")))?;
    std::fs::write(&json, text).map_err(|e| io(&json, e))?;
    Ok(())
}

/// `vertebra-train split`: loads `input`, assigns splits (module docs), writes the manifest to
/// `out` atomically (paths relative to `out`'s directory where they lie under it).
///
/// # Errors
/// Manifest, lesion-file and I/O errors.
pub fn split_manifest_file(input: &Path, out: &Path, seed: u64) -> Result<Vec<StratumSummary>> {
    let mut m = Manifest::load(input)?;
    let snapshot = m.clone();
    let summary = assign_splits(&mut m, seed, |i| case_severity(&snapshot, i))?;
    let base = out.parent().unwrap_or_else(|| Path::new(""));
    let text = m.to_csv(base);
    // Re-validate what we are about to write (leakage checks of the loader).
    Manifest::parse(&text, base, out)?;
    let tmp = out.with_extension("csv.tmp");
    std::fs::write(&tmp, text).map_err(|source| Error::Io {
        path: tmp.clone(),
        source,
    })?;
    std::fs::rename(&tmp, out).map_err(|source| Error::Io {
        path: out.to_owned(),
        source,
    })?;
    Ok(summary)
}

/// `vertebra-train audit`: loads the manifest, audits it and writes the report into
/// `report_dir`.
///
/// # Errors
/// Manifest, image and I/O errors.
pub fn audit_manifest_file(manifest: &Path, report_dir: &Path) -> Result<AuditReport> {
    let m = Manifest::load(manifest)?;
    let report = audit(&m)?;
    write_report(&report, report_dir)?;
    Ok(report)
}
