//! A tiny VertebraFormer overfits one phantom window on the flex CPU backend, every head at
//! once, within a bounded number of AdamW steps (all loss terms at their final weights,
//! global-norm clipping at 1.0): binary Dice of the thresholded vertebra logit > 0.9, every
//! instance box identified correctly (argmax of `id_logits`), and the lytic-lesion heatmap's
//! maximum at the lesion's centre cell (with a positive logit).
//!
//! Deviations from the paper's recipe, both for a bounded test: the `tiny` preset with 8
//! decoder channels instead of 2 (measured: with 2, lr 1e-2 and the segmentation loss alone,
//! Dice was 0.55 after 200 steps; with 8 it passes 0.9 after ~50 steps), and lr 1e-2 instead
//! of 1e-4 (one window, no generalisation asked).

use std::time::Instant;

use burn::tensor::Device;
use vertebra_core::anatomy::Vertebra;
use vertebra_core::metrics::dice::binary_dice_slices;
use vertebra_core::phantom::{LesionKind, LesionPlan, LesionRequest};
use vertebra_model::{VertebraFormerConfig, VertebraFormerInput};
use vertebra_trainer::dataset::PhantomDatasetSpec;
use vertebra_trainer::preprocess::{WindowSpec, prepare, window_at};
use vertebra_trainer::schedule::curriculum;
use vertebra_trainer::train::{TrainConfig, Trainer, make_batch};

/// Upper bound on optimisation steps (each takes ~0.1 s with the tiny preset).
const MAX_STEPS: usize = 150;
/// Steps between Dice evaluations.
const EVAL_EVERY: usize = 10;

#[test]
fn tiny_model_overfits_one_phantom_window() {
    let started = Instant::now();
    let cases = PhantomDatasetSpec {
        domains: vec!["ct-standard".into()],
        cases_per_domain: 1,
        base_seed: 7,
        paired: false,
        first: Vertebra::L2,
        last: Vertebra::L3,
        in_plane: 112,
        lesions: LesionPlan::Explicit {
            lesions: vec![LesionRequest {
                kind: LesionKind::Lytic,
                vertebra: Vertebra::L2,
            }],
        },
    }
    .generate()
    .unwrap();
    let config = VertebraFormerConfig {
        decoder_channels: 8,
        ..VertebraFormerConfig::tiny()
    };
    let spec = WindowSpec::from_config(&config).unwrap();
    let case = prepare(&cases[0], spec.spacing_mm).unwrap();
    let (_, centre) = *case
        .centroids
        .iter()
        .find(|(l, _)| *l == Vertebra::L2.label())
        .expect("L2 is in the phantom");
    let sample = window_at(&case, centre, &spec).unwrap();
    let truth: Vec<bool> = sample
        .labels
        .as_ref()
        .unwrap()
        .iter()
        .map(|&l| l > 0)
        .collect();
    assert!(
        truth.iter().filter(|&&t| t).count() > 100,
        "the window holds a vertebra"
    );
    assert!(!sample.instances.is_empty());
    let lesion = sample.lesions.as_ref().unwrap();
    assert_eq!(lesion.count, 1, "the lytic lesion of L2 is in the window");
    let cells = lesion.mask.len();
    let centre_cell = lesion.mask.iter().position(|&m| m == 1.0).unwrap();
    let lytic = vertebra_core::anatomy::LesionClass::LyticMetastasis.index();
    let classes: Vec<usize> = sample.instances.iter().map(|i| i.class).collect();

    let device = Device::flex().autodiff();
    device.seed(42);
    let train = TrainConfig {
        lr: 1e-2,
        min_lr: 1e-3,
        epochs: 1,
        steps_per_epoch: MAX_STEPS,
        fixed_weights: Some(curriculum(1.0, 1.0)),
        ..TrainConfig::default()
    };
    let mut trainer = Trainer::new(&config, train, &device).unwrap();
    let batch = make_batch(
        std::slice::from_ref(&sample),
        &spec,
        &config.domains,
        &device,
    )
    .unwrap();
    let mut best = 0.0;
    let mut id_ok = false;
    let mut peak_ok = false;
    let mut first_loss = None;
    let mut last = None;
    for step in 0..MAX_STEPS {
        let r = trainer.step(&batch).unwrap();
        first_loss.get_or_insert(r.loss);
        last = Some(r);
        if (step + 1) % EVAL_EVERY == 0 {
            let out = trainer
                .model
                .forward(VertebraFormerInput {
                    image: batch.image.clone(),
                    boxes: batch.boxes.clone(),
                    domain_mix: None,
                })
                .unwrap();
            let ids: Vec<i64> = out
                .id_logits
                .clone()
                .unwrap()
                .argmax(1)
                .into_data()
                .iter::<i64>()
                .collect();
            id_ok = ids.iter().zip(&classes).all(|(&p, &c)| p as usize == c);
            let heat: Vec<f32> = out
                .lesion_heatmap_logits
                .clone()
                .unwrap()
                .into_data()
                .try_to_vec::<f32>()
                .unwrap();
            let channel = &heat[lytic * cells..(lytic + 1) * cells];
            let argmax = (0..cells)
                .max_by(|&a, &b| channel[a].total_cmp(&channel[b]))
                .unwrap();
            peak_ok = argmax == centre_cell && channel[argmax] > 0.0;
            let logits: Vec<f32> = out.vertebra_logit.into_data().try_to_vec::<f32>().unwrap();
            let pred: Vec<bool> = logits.iter().map(|&v| v > 0.0).collect();
            best = binary_dice_slices(&pred, &truth).unwrap();
            eprintln!(
                "step {} loss {:?} dice {best:.3} ids {id_ok} peak {peak_ok}",
                step + 1,
                r.loss
            );
            if best > 0.9 && id_ok && peak_ok {
                break;
            }
        }
    }
    let first = first_loss.unwrap();
    let last = last.unwrap();
    eprintln!(
        "overfit: dice {best:.3} after {} steps in {:.1} s; loss {:?} -> {:?}",
        trainer.step,
        started.elapsed().as_secs_f64(),
        first,
        last.loss
    );
    assert!(best > 0.9, "binary Dice {best} after {MAX_STEPS} steps");
    assert!(id_ok, "identification head: some box has the wrong class");
    assert!(
        peak_ok,
        "lesion head: the lytic heatmap peak is not at the lesion's cell"
    );
    // Every present term was trained (and none diverged).
    assert!(
        first.id > 0.0 && first.domain > 0.0 && first.det > 0.0,
        "{first:?}"
    );
    assert!(last.loss.seg < first.seg);
}
