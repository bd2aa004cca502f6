//! The study commands run end to end on the `tiny` recipe (a few training steps: the numbers
//! mean nothing, the plumbing must hold): reports have every row, CIs and comparisons, figures
//! are PNGs of the right size, and every study scores through the one evaluation path.

use std::path::Path;

use vertebra_trainer::run::{self, RunConfig, RunOptions};
use vertebra_trainer::studies::{self, StudyOptions};

fn recipe() -> RunConfig {
    RunConfig::load(&run::recipes_dir().join("tiny.json")).unwrap()
}

fn options() -> StudyOptions {
    let mut o = StudyOptions {
        max_cases: Some(2),
        quiet: true,
        ..StudyOptions::default()
    };
    o.bootstrap.n_resamples = 200;
    o
}

/// The tiny recipe with a test set that has room for pedicle screws (the metal perturbation
/// needs a vertebra wholly inside the scan, transverse processes included).
fn eval_recipe() -> RunConfig {
    let mut r = recipe();
    r.data.test.in_plane = 192;
    r.data.test.ranges = vec![[
        vertebra_core::anatomy::Vertebra::T12,
        vertebra_core::anatomy::Vertebra::L4,
    ]];
    r
}

fn train(dir: &Path, steps: usize) {
    run::run(
        dir,
        Some(&eval_recipe()),
        &RunOptions {
            max_steps: Some(steps),
            quiet: true,
            ..RunOptions::default()
        },
    )
    .unwrap();
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
    let w = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let h = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    (w, h)
}

#[test]
fn evaluation_and_inference_studies_share_one_path() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    // Validation at step 4 writes the best checkpoint.
    train(&dir, 4);
    let opts = options();
    let e = studies::evaluate_run(&dir, "best", "test", &opts).unwrap();
    let report = std::fs::read_to_string(e.dir.join("report.md")).unwrap();
    assert!(report.contains("not for diagnostic use"), "{report}");
    for m in ["dice_binary", "dice_mean", "id_accuracy_raw", "id_accuracy"] {
        assert!(e.evaluation.metric(m).is_some(), "{m} missing");
        assert!(report.contains(m), "{m} missing in the report");
    }
    // The recipe's test set has one case: the figure is 4 panels of the sagittal slice.
    let (w, h) = png_size(&e.dir.join("qualitative.png"));
    assert!(w > 4 * 2 * 10 && h > 2 * 10, "{w}x{h}");

    let plots = studies::plot_run(&dir).unwrap();
    assert_eq!(plots.len(), 2);
    for p in plots {
        assert_eq!(png_size(&p), (900, 500));
    }

    // The perturbation study identifies by label votes here (an untrained network finds many
    // fragments, and the ID head costs one forward pass each); its unperturbed row must equal
    // the evaluation by the same path.
    let mut votes = opts.clone();
    votes.infer.use_id_head = false;
    let e = studies::evaluate_run(&dir, "best", "test", &votes).unwrap();
    let out = tmp.path().join("studies");
    let md = studies::perturbation_study(&dir, &out, &votes).unwrap();
    for row in [
        "| none |",
        "| intensity+15 |",
        "| noise-50hu |",
        "| slice-5mm |",
        "| metal |",
    ] {
        assert!(md.contains(row), "{row} missing:\n{md}");
    }
    assert!(md.contains("p (Holm)"), "{md}");
    // The unperturbed row is the evaluation above: same path, same numbers.
    let dice = e.evaluation.metric("dice_mean").unwrap().estimate;
    let none_row = md.lines().find(|l| l.starts_with("| none |")).unwrap();
    assert!(
        none_row.contains(&format!("{dice:.3}")),
        "evaluate gave {dice:.3}, the study's baseline row: {none_row}"
    );
}

#[test]
fn test_time_study_has_every_condition() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    train(&dir, 4);
    let mut opts = options();
    opts.infer.use_id_head = false;
    let out = tmp.path().join("studies");
    let md = studies::test_time_study(
        &dir,
        &out,
        &opts,
        &vertebra_trainer::tta::TentConfig { steps: 2, lr: 1e-3 },
    )
    .unwrap();
    for row in [
        "| correct |",
        "| wrong-10 |",
        "| wrong-30 |",
        "| random |",
        "| swapped |",
        "| none |",
        "| instance-norm |",
        "| adain |",
        "| tent |",
    ] {
        assert!(md.contains(row), "{row} missing:\n{md}");
    }
    assert!(out.join("test-time.md").exists());
}

#[test]
fn training_studies_train_every_row() {
    let tmp = tempfile::tempdir().unwrap();
    let mut r = recipe();
    // Two training domains so that leave-one-domain-out has something to leave out.
    r.data.train.domains = vec!["ct-standard".into(), "ct-bone-sharp".into()];
    r.data.train.cases_per_domain = 1;
    r.data.test.domains = r.data.train.domains.clone();
    r.data.val.domains = r.data.train.domains.clone();
    r.validate().unwrap();
    let opts = options();
    let out = tmp.path().join("lodo");
    let md = studies::lodo_study(&r, &out, Some(2), &opts).unwrap();
    for row in [
        "| all |",
        "| without-ct-standard |",
        "| without-ct-bone-sharp |",
    ] {
        assert!(md.contains(row), "{row} missing:\n{md}");
    }
    assert!(md.contains("shortened to 2 steps"), "{md}");
    let (w, h) = png_size(&out.join("cross_domain.png"));
    assert!(w > 2 * 72 && h > 3 * 72, "{w}x{h}");
    // The held-out row really trained without the domain.
    let held: RunConfig =
        RunConfig::load(&out.join("runs/without-ct-standard/recipe.json")).unwrap();
    assert_eq!(held.data.train.domains, vec!["ct-bone-sharp".to_owned()]);

    let out = tmp.path().join("ablation");
    let md = studies::ablation_study(&r, &out, Some(2), &opts).unwrap();
    for row in [
        "| unetr-baseline |",
        "| plus-id |",
        "| plus-lesion |",
        "| full |",
    ] {
        assert!(md.contains(row), "{row} missing:\n{md}");
    }
    let base: RunConfig = RunConfig::load(&out.join("runs/unetr-baseline/recipe.json")).unwrap();
    let cfg = base.model_config().unwrap();
    assert!(!cfg.identification_head && !cfg.lesion_head && !cfg.dynamic_modulation);
}

#[test]
fn efficiency_reports_cost_and_ratios() {
    let tmp = tempfile::tempdir().unwrap();
    let r = recipe();
    let case = studies::phantom_case(&r.data.test, 0).unwrap();
    let tiny = r.model_config().unwrap();
    let mut no_lesion = tiny.clone();
    no_lesion.lesion_head = false;
    let rows = studies::efficiency_study(
        &[
            ("tiny".into(), tiny.clone()),
            ("tiny-no-lesion".into(), no_lesion.clone()),
        ],
        &case,
        2,
        tmp.path(),
        &options(),
    )
    .unwrap();
    assert_eq!(rows.len(), 2);
    // Parameters and FLOPs are the analytic cost of each configuration.
    assert_eq!(rows[0].params as u64, tiny.cost().params);
    assert_eq!(rows[1].params as u64, no_lesion.cost().params);
    assert!(rows[1].params < rows[0].params);
    assert!(rows[0].window_forward_s > 0.0 && rows[0].case_latency_s >= rows[0].postprocess_s);
    let md = std::fs::read_to_string(tmp.path().join("efficiency.md")).unwrap();
    assert!(md.contains("| tiny | ") && md.contains("| 1.00 |"), "{md}");
}
