//! Post-processing of the model outputs into findings: the one code path shared by the
//! trainer's evaluation and the appliance's inference.
//!
//! Input is the model's output stitched onto one grid (the prepared, resampled volume; see
//! [`crate::contract`] for the tensors) — as [`DenseOutputs`] plus optional [`LesionMaps`] —
//! and output is a [`CaseFindings`]: labelled vertebra instances with confidences and
//! measurements, and lesions assigned to vertebrae.
//!
//! The steps, one module each:
//! 1. [`instances`]: threshold the vertebra probability, split by the label argmax, grow,
//!    drop fragments (physical thresholds);
//! 2. [`identify`]: anatomical-order decoding of the whole column (Viterbi with gaps and L6)
//!    from identification-head or label-vote probabilities, with posterior confidences;
//! 3. [`lesions`]: heatmap peaks, 5 mm NMS, offset/size decoding, assignment to vertebrae;
//! 4. [`measure`]: volume, centroid, core HU, body heights, Genant grade.
//!
//! Identification needs the instances' boxes when it comes from the identification head, so
//! the pipeline has two entry points: [`instances::extract_instances`], then [`findings`] with
//! the head's probabilities — or [`postprocess`], which does both with the label votes.
//!
//! What this module is *not*: it runs no network and resamples nothing; findings are on the
//! grid of the outputs (world coordinates are exact for any grid).

pub mod identify;
pub mod instances;
pub mod lesions;
pub mod measure;

pub use identify::{DecodeConfig, DecodedVertebra, cranio_caudal_order, decode_column, softmax};
pub use instances::{InstanceConfig, Instances, VertebraInstance, extract_instances};
pub use lesions::{LesionConfig, LesionMaps, LesionPeak, assign_to_instances, decode_lesions};
pub use measure::{BodyHeights, MeasureConfig, VertebraMeasurement, measure_vertebrae};

use crate::anatomy::{NUM_VERTEBRAE, Vertebra};
use crate::metrics::check_same_grid;
use crate::{Error, Result, Volume};
use serde::{Deserialize, Serialize};

/// Every post-processing setting; [`Default`] gives the documented values.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
pub struct PostprocessConfig {
    /// Instance extraction.
    pub instances: InstanceConfig,
    /// Anatomical-order decoding.
    pub decode: DecodeConfig,
    /// Lesion peaks.
    pub lesions: LesionConfig,
    /// Measurements.
    pub measure: MeasureConfig,
}

/// The dense segmentation outputs on one grid.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseOutputs {
    /// Vertebra probability (sigmoid of `vertebra_logit`).
    pub foreground_prob: Volume<f32>,
    /// Argmax over the 26 `label_logits` channels (0 background, 1..=25 C1..L6).
    pub label_argmax: Volume<u8>,
}

/// Where the identification probabilities came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IdSource {
    /// The identification head (softmax of `id_logits` per instance box).
    Head,
    /// The label votes of the segmentation ([`VertebraInstance::vote_probabilities`]).
    Votes,
}

/// One identified and measured vertebra.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VertebraFinding {
    /// The instance.
    pub instance: VertebraInstance,
    /// Label after anatomical-order decoding.
    pub vertebra: Vertebra,
    /// Posterior probability of `vertebra` ([`identify`] docs).
    pub confidence: f64,
    /// The most probable label before decoding.
    pub raw_vertebra: Vertebra,
    /// Its probability.
    pub raw_probability: f64,
    /// Measurements.
    pub measurement: VertebraMeasurement,
}

/// Everything found in one case.
#[derive(Debug, Clone, PartialEq)]
pub struct CaseFindings {
    /// The instance-id map and instances (cranio-caudal).
    pub instances: Instances,
    /// One finding per instance, cranio-caudal.
    pub vertebrae: Vec<VertebraFinding>,
    /// Lesions by decreasing score.
    pub lesions: Vec<LesionPeak>,
    /// Source of the identification probabilities.
    pub id_source: IdSource,
    /// False when no anatomical order fits (more instances than levels): labels are then the
    /// raw argmax and confidences the raw probabilities.
    pub order_decoded: bool,
}

impl CaseFindings {
    /// The label map of the decoded labels (0 background) on the outputs' grid.
    pub fn label_map(&self) -> Volume<u8> {
        self.label_map_with(|f| f.vertebra)
    }

    /// The label map of the raw (undecoded) labels.
    pub fn raw_label_map(&self) -> Volume<u8> {
        self.label_map_with(|f| f.raw_vertebra)
    }

    fn label_map_with(&self, pick: impl Fn(&VertebraFinding) -> Vertebra) -> Volume<u8> {
        let mut lut = vec![0u8; self.vertebrae.len() + 1];
        for f in &self.vertebrae {
            lut[f.instance.id as usize] = pick(f).label();
        }
        self.instances.ids.map(|&id| lut[id as usize])
    }
}

/// Identifies, measures and attaches lesions to `instances`.
///
/// `id_probabilities[i]` are the 25 class probabilities of `instances.instances[i]` from the
/// identification head; `None` uses the label votes. `hu` (optional) is the CT in HU on the
/// same grid, for the core density.
///
/// # Errors
/// A probability row count that does not match the instances; the errors of the steps.
pub fn findings(
    instances: Instances,
    id_probabilities: Option<&[Vec<f64>]>,
    lesion_maps: Option<&LesionMaps>,
    hu: Option<&Volume<f32>>,
    config: &PostprocessConfig,
) -> Result<CaseFindings> {
    let (probs, id_source) = match id_probabilities {
        Some(p) => {
            if p.len() != instances.instances.len() {
                return Err(Error::InvalidArgument(format!(
                    "{} identification rows for {} instances",
                    p.len(),
                    instances.instances.len()
                )));
            }
            (p.to_vec(), IdSource::Head)
        }
        None => (
            instances
                .instances
                .iter()
                .map(VertebraInstance::vote_probabilities)
                .collect(),
            IdSource::Votes,
        ),
    };
    // Instances are numbered cranio-caudally already.
    let (decoded, order_decoded) = match decode_column(&probs, &config.decode) {
        Ok(d) => (d, true),
        Err(_) if probs.iter().all(|r| r.len() == NUM_VERTEBRAE) => (raw_labels(&probs), false),
        Err(e) => return Err(e),
    };
    let measurements = measure_vertebrae(&instances, hu, &config.measure)?;
    let vertebrae = instances
        .instances
        .iter()
        .zip(decoded)
        .zip(measurements)
        .map(|((inst, d), m)| VertebraFinding {
            instance: inst.clone(),
            vertebra: d.vertebra,
            confidence: d.confidence,
            raw_vertebra: d.raw_vertebra,
            raw_probability: d.raw_probability,
            measurement: m,
        })
        .collect();
    let mut lesions = match lesion_maps {
        Some(m) => decode_lesions(m, instances.ids.geometry(), &config.lesions)?,
        None => Vec::new(),
    };
    assign_to_instances(&mut lesions, &instances);
    Ok(CaseFindings {
        instances,
        vertebrae,
        lesions,
        id_source,
        order_decoded,
    })
}

/// The raw argmax labelling (no order), confidence = the raw probability.
fn raw_labels(probs: &[Vec<f64>]) -> Vec<DecodedVertebra> {
    probs
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let (c, p) = r
                .iter()
                .copied()
                .enumerate()
                .fold(
                    (0, f64::NEG_INFINITY),
                    |a, (c, p)| if p > a.1 { (c, p) } else { a },
                );
            let v = Vertebra::from_label(c as u8 + 1).unwrap_or(Vertebra::C1);
            DecodedVertebra {
                index: i,
                vertebra: v,
                confidence: p,
                raw_vertebra: v,
                raw_probability: p,
            }
        })
        .collect()
}

/// The whole post-processing with label-vote identification: instances, decoding, lesions,
/// measurements.
///
/// # Errors
/// As [`extract_instances`] and [`findings`]; the lesion maps' fine grid is `dense`'s grid.
pub fn postprocess(
    dense: &DenseOutputs,
    lesion_maps: Option<&LesionMaps>,
    hu: Option<&Volume<f32>>,
    config: &PostprocessConfig,
) -> Result<CaseFindings> {
    if let Some(h) = hu {
        check_same_grid(h, &dense.foreground_prob)?;
    }
    let instances = extract_instances(
        &dense.foreground_prob,
        &dense.label_argmax,
        &config.instances,
    )?;
    findings(instances, None, lesion_maps, hu, config)
}
