//! Exact resume: a run interrupted after a checkpoint and resumed logs the same losses as an
//! uninterrupted run with the same recipe (data order and AdamW moments restored).

use std::path::Path;

use vertebra_trainer::checkpoint;
use vertebra_trainer::run::{self, RunConfig, RunOptions};

fn recipe() -> RunConfig {
    RunConfig::load(&run::recipes_dir().join("tiny.json")).unwrap()
}

/// `(step, total loss, lr)` of every step line.
fn step_losses(run_dir: &Path) -> Vec<(u64, f64, f64)> {
    std::fs::read_to_string(run_dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "step")
        .map(|v| {
            (
                v["step"].as_u64().unwrap(),
                v["loss"]["total"].as_f64().unwrap(),
                v["lr"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn opts(max_steps: usize) -> RunOptions {
    RunOptions {
        max_steps: Some(max_steps),
        quiet: true,
        ..RunOptions::default()
    }
}

#[test]
fn resumed_run_continues_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    let split = tmp.path().join("split");
    let r = recipe();
    let o = run::run(&whole, Some(&r), &opts(5)).unwrap();
    assert_eq!(o.steps, 5);
    assert!(!o.finished);

    let o = run::run(&split, Some(&r), &opts(3)).unwrap();
    assert_eq!((o.steps, o.finished), (3, false));
    // A second `train` into the same directory is refused: it must be resumed.
    let e = run::run(&split, Some(&r), &opts(3))
        .unwrap_err()
        .to_string();
    assert!(e.contains("already holds a run"), "{e}");
    let o = run::run(&split, None, &opts(5)).unwrap();
    assert_eq!(o.steps, 5);

    let a = step_losses(&whole);
    let b = step_losses(&split);
    assert_eq!(a.len(), 5, "{a:?}");
    assert_eq!(b.len(), 5, "{b:?}");
    for ((sa, la, lra), (sb, lb, lrb)) in a.iter().zip(&b) {
        assert_eq!(sa, sb);
        assert_eq!(lra, lrb, "learning rate at step {sa}");
        // Same data, same weights, same AdamW moments: the same loss up to float
        // reassociation in parallel reductions.
        assert!(
            (la - lb).abs() <= 1e-5 * la.abs().max(1.0),
            "step {sa}: uninterrupted {la} vs resumed {lb}"
        );
    }
    // The loss after the resume point differs from the loss at it: training did move (so the
    // comparison above is not trivially equal constants).
    assert!((a[3].1 - a[4].1).abs() > 0.0);
}

#[test]
fn resume_without_the_optimizer_state_would_differ() {
    // Guards the test above: restarting AdamW from zero moments changes the next loss, so
    // equality there proves the moments were restored.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let r = recipe();
    run::run(&dir, Some(&r), &opts(3)).unwrap();
    let last = dir.join("checkpoints").join("last");
    let fresh = vertebra_trainer::train::optimizer(&r.train);
    let loaded = checkpoint::load(&last, fresh, &burn::tensor::Device::flex()).unwrap();
    assert_eq!(loaded.state.step, 3);
    // Replace the optimizer file with an empty state, then resume: losses must change.
    let empty = vertebra_trainer::train::optimizer(&r.train);
    empty.save(last.join(checkpoint::OPTIMIZER_FILE)).unwrap();
    let reference = tmp.path().join("reference");
    run::run(&reference, Some(&r), &opts(5)).unwrap();
    run::run(&dir, None, &opts(5)).unwrap();
    let a = step_losses(&reference);
    let b = step_losses(&dir);
    assert!(
        (a[4].1 - b[4].1).abs() > 1e-6,
        "zeroed moments gave the same loss at step 4: {} vs {}",
        a[4].1,
        b[4].1
    );
}

#[test]
fn a_crash_between_the_renames_leaves_the_previous_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    run::run(&dir, Some(&recipe()), &opts(2)).unwrap();
    let ckpt = dir.join("checkpoints");
    // Simulate a kill after `last` was moved aside and before `last.partial` was renamed.
    std::fs::rename(ckpt.join("last"), ckpt.join("last.old")).unwrap();
    assert_eq!(
        checkpoint::locate(&ckpt.join("last")),
        Some(ckpt.join("last.old"))
    );
    let o = run::run(&dir, None, &opts(3)).unwrap();
    assert_eq!(o.steps, 3);
    assert!(ckpt.join("last").join(checkpoint::STATE_FILE).exists());
    assert!(!ckpt.join("last.old").exists());
}

#[test]
fn no_best_checkpoint_before_the_curriculum_ramp_ends() {
    // With the curriculum (4 epochs × 3 steps: ID and lesion terms ramp in until step 6), the
    // validation at step 4 must not make an untrained-head model "best".
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let mut r = recipe();
    r.train.fixed_weights = None;
    let o = run::run(&dir, Some(&r), &opts(4)).unwrap();
    assert_eq!(o.best, None);
    assert!(!dir.join("checkpoints").join("best").exists());
    // After the ramp (validation at step 8) a best checkpoint exists.
    let o = run::run(&dir, None, &opts(8)).unwrap();
    assert_eq!(o.best.map(|b| b.step), Some(8));
    assert!(
        dir.join("checkpoints")
            .join("best")
            .join(checkpoint::STATE_FILE)
            .exists()
    );
}
