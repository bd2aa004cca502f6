//! The split tool and the leakage audit.

#[path = "fixtures/phantom_dataset.rs"]
mod phantom_dataset;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use phantom_dataset::{HEADER, Plan, write_dataset};
use vertebra_core::anatomy::{LesionClass, Vertebra};
use vertebra_core::phantom::{LesionPlan, LesionTruth};
use vertebra_trainer::manifest::{Manifest, Split};
use vertebra_trainer::split::{BlockHash, Severity, assign_splits, audit_with_hashes, split_sizes};

#[test]
fn split_sizes_by_largest_remainder() {
    // Exact shares 0.6n / 0.2n / 0.2n, floors first, leftovers to the largest fractions
    // (ties: train, val, test).
    assert_eq!(split_sizes(10), [6, 2, 2]);
    assert_eq!(split_sizes(7), [4, 2, 1]); // 4.2 1.4 1.4
    assert_eq!(split_sizes(3), [2, 1, 0]); // 1.8 0.6 0.6
    assert_eq!(split_sizes(2), [1, 1, 0]); // 1.2 0.4 0.4
    assert_eq!(split_sizes(1), [1, 0, 0]);
    assert_eq!(split_sizes(0), [0, 0, 0]);
    for n in 0..200 {
        let s = split_sizes(n);
        assert_eq!(s.iter().sum::<usize>(), n);
        for (k, f) in [0.6, 0.2, 0.2].iter().enumerate() {
            assert!((s[k] as f64 - f * n as f64).abs() < 1.0, "n {n}: {s:?}");
        }
    }
}

fn lesion(class: LesionClass, target: bool, grade: Option<u8>) -> LesionTruth {
    LesionTruth {
        class,
        is_target: target,
        vertebra: Vertebra::L1,
        partner: None,
        centre: [0.0; 3],
        size_mm: [1.0; 3],
        voxels: 1,
        genant_grade: grade,
        fracture_shape: None,
        height_loss: None,
    }
}

#[test]
fn severity_buckets() {
    use LesionClass::{Fracture, LyticMetastasis};
    assert_eq!(Severity::of(None), Severity::Unknown);
    assert_eq!(Severity::of(Some(&[])), Severity::None);
    // A grade-1 deformity is not a target but makes the case mild.
    assert_eq!(
        Severity::of(Some(&[lesion(Fracture, false, Some(1))])),
        Severity::Mild
    );
    assert_eq!(
        Severity::of(Some(&[lesion(LyticMetastasis, true, None)])),
        Severity::Mild
    );
    let two = [
        lesion(LyticMetastasis, true, None),
        lesion(LyticMetastasis, true, None),
    ];
    assert_eq!(Severity::of(Some(&two)), Severity::Moderate);
    assert_eq!(
        Severity::of(Some(&[lesion(Fracture, true, Some(3))])),
        Severity::Severe
    );
    let four = vec![lesion(LyticMetastasis, true, None); 4];
    assert_eq!(Severity::of(Some(&four)), Severity::Severe);
}

/// Patients `<domain>-<severity>-<k>`, one case each, plus patient `a-none-0` with a second
/// study; severity from the id.
fn stratified_manifest() -> Manifest {
    let mut rows = vec![HEADER.to_owned()];
    let mut add = |domain: &str, sev: &str, n: usize| {
        for k in 0..n {
            let p = format!("{domain}-{sev}-{k}");
            rows.push(format!(
                "{p}-c0,{p},1.{}.{k},{domain},Ct,x.nii,,,,",
                rows.len()
            ));
        }
    };
    add("a", "none", 10);
    add("a", "severe", 7);
    add("b", "mild", 5);
    add("b", "none", 1);
    rows.push("a-none-0-c1,a-none-0,9.9.9,a,Ct,x.nii,,,,".into());
    Manifest::parse(&rows.join("\n"), Path::new("/d"), Path::new("m.csv")).unwrap()
}

fn severity_from_id(m: &Manifest, i: usize) -> Severity {
    match m.cases[i].id.split('-').nth(1).unwrap() {
        "none" => Severity::None,
        "mild" => Severity::Mild,
        "severe" => Severity::Severe,
        _ => unreachable!(),
    }
}

#[test]
fn splits_are_stratified_per_patient_and_seeded() {
    let base = stratified_manifest();
    let run = |seed| {
        let mut m = base.clone();
        let summary = assign_splits(&mut m, seed, |i| Ok(severity_from_id(&base, i))).unwrap();
        (m, summary)
    };
    let (m, summary) = run(42);
    assert_eq!(summary.len(), 4);
    // Per stratum: within one patient of 60/20/20.
    let mut per: BTreeMap<(String, String), BTreeMap<Split, BTreeSet<String>>> = BTreeMap::new();
    for c in &m.cases {
        let mut it = c.patient_id.split('-');
        let key = (it.next().unwrap().to_owned(), it.next().unwrap().to_owned());
        per.entry(key)
            .or_default()
            .entry(c.split.unwrap())
            .or_default()
            .insert(c.patient_id.clone());
    }
    for ((d, s), splits) in &per {
        let n: usize = splits.values().map(BTreeSet::len).sum();
        for (split, f) in [(Split::Train, 0.6), (Split::Val, 0.2), (Split::Test, 0.2)] {
            let got = splits.get(&split).map_or(0, BTreeSet::len) as f64;
            assert!(
                (got - f * n as f64).abs() <= 1.0,
                "{d}/{s} {split}: {got} of {n}"
            );
        }
    }
    // No patient in two splits: the validating loader accepts the written manifest.
    let again = Manifest::parse(
        &m.to_csv(Path::new("/d")),
        Path::new("/d"),
        Path::new("o.csv"),
    )
    .unwrap();
    let p = |m: &Manifest, id: &str| m.cases.iter().find(|c| c.id == id).unwrap().split;
    assert_eq!(p(&again, "a-none-0-c0"), p(&again, "a-none-0-c1"));
    // Same seed, same split; another seed moves someone.
    assert_eq!(run(42).0, m);
    assert_ne!(run(43).0, m);
}

#[test]
fn audit_flags_study_groups_without_reading_images() {
    let mut m = stratified_manifest();
    // Bypass the loader's checks: the audit must find these on its own.
    m.cases[0].split = Some(Split::Train);
    for c in &mut m.cases[1..] {
        c.split = Some(Split::Test);
    }
    m.cases[1].study_uid = m.cases[0].study_uid.clone();
    let hashes: Vec<BlockHash> = (0..m.cases.len())
        .map(|i| BlockHash([i as u64 * 0x0101_0101_0101_0101; 8]))
        .collect();
    let r = audit_with_hashes(&m, &hashes);
    let problems: Vec<&str> = r.groups.iter().map(|g| g.problem.as_str()).collect();
    assert!(
        problems
            .iter()
            .any(|p| p.starts_with("one study under 2 patients")),
        "{problems:?}"
    );
    assert!(
        problems.contains(&"study in two splits (leak)"),
        "{problems:?}"
    );
    assert!(r.has_leaks());
    // No patient id in the report.
    assert!(!r.markdown().contains("a-none-1,"));
}

#[test]
fn cli_split_and_audit_on_a_phantom_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let plans: Vec<Plan> = [(1u64, "a"), (2, "c"), (3, "d"), (4, "e"), (5, "f")]
        .into_iter()
        .map(|(seed, id)| Plan {
            id: id.into(),
            seed,
            domain: "ct-standard".into(),
            lesions: LesionPlan::None,
        })
        .collect();
    write_dataset(dir.path(), &plans, Vertebra::L1, Vertebra::L3);
    // Case b: the image of case a under another id, patient and study.
    let manifest = dir.path().join("manifest.csv");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let row_a = text.lines().nth(1).unwrap();
    let f: Vec<&str> = row_a.split(',').collect();
    let row_b = format!("b,COPY-1,1.2.826.0.1.99,{},{},{},,,,", f[3], f[4], f[5]);
    std::fs::write(&manifest, format!("{}\n{row_b}\n", text.trim_end())).unwrap();

    let exe = env!("CARGO_BIN_EXE_vertebra-train");
    let out = dir.path().join("split.csv");
    let st = Command::new(exe)
        .args([
            "split",
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--seed",
            "3",
        ])
        .output()
        .unwrap();
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    let m = Manifest::load(&out).unwrap();
    m.check_files().unwrap();
    assert!(m.cases.iter().all(|c| c.split.is_some()));

    let report = dir.path().join("report");
    let st = Command::new(exe)
        .args([
            "audit",
            out.to_str().unwrap(),
            "--report",
            report.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("audit.json")).unwrap()).unwrap();
    let pairs = json["near_duplicates"].as_array().unwrap();
    let names: Vec<(String, String, u64)> = pairs
        .iter()
        .map(|p| {
            (
                p["a"].as_str().unwrap().to_owned(),
                p["b"].as_str().unwrap().to_owned(),
                p["hamming"].as_u64().unwrap(),
            )
        })
        .collect();
    let hashes: Vec<(String, Vec<u8>)> = json["hashes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().bytes().collect()))
        .collect();
    let hamming = |a: &[u8], b: &[u8]| -> u32 {
        let nib = |c: u8| (c as char).to_digit(16).unwrap();
        a.iter()
            .zip(b)
            .map(|(x, y)| (nib(*x) ^ nib(*y)).count_ones())
            .sum()
    };
    let mut min_other = u32::MAX;
    for (i, (ka, ha)) in hashes.iter().enumerate() {
        for (kb, hb) in &hashes[i + 1..] {
            if !(ka == "a" && kb == "b") {
                min_other = min_other.min(hamming(ha, hb));
            }
        }
    }
    eprintln!("smallest Hamming distance between different phantom seeds: {min_other}");
    assert!(min_other >= 5);
    // Exactly the copy is flagged (distance 0); other seeds are not near duplicates.
    assert_eq!(names, vec![("a".to_owned(), "b".to_owned(), 0)], "{json}");
    let md = std::fs::read_to_string(report.join("audit.md")).unwrap();
    assert!(md.contains("| a | b | 0 |"), "{md}");
    // A leak (a and b in two splits) fails the command; same split passes.
    let cross = pairs[0]["cross_split"].as_bool().unwrap();
    assert_eq!(
        st.status.success(),
        !cross,
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
}
