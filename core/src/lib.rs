//! # vertebra-core
//!
//! The dependency-light domain library of the VertebraFormer appliance. Everything that the
//! trainer (validation) and the appliance (inference) must compute *identically* lives here, so
//! there is exactly one code path for it:
//!
//! - [`anatomy`]: the 25 vertebra labels C1–L5, regions, typical sizes, SNOMED CT codes, and
//!   the lesion classes;
//! - [`volume`]: [`Volume`] with patient-space (LPS) geometry, voxel↔world transforms,
//!   reorientation, crop/pad, resampling and the paper's HU normalisation;
//! - [`nifti`]: NIfTI-1 reading and writing (plain and gzip) with qform/sform handling;
//! - [`components`]: connected components and per-instance properties;
//! - [`metrics`] and [`stats`]: Dice, identification accuracy, lesion matching, AP, FROC,
//!   BCa bootstrap confidence intervals, Wilcoxon signed-rank with Holm–Bonferroni;
//! - [`phantom`]: deterministic synthetic spinal CT studies with ground truth, scanner domains
//!   and lesions — the training, test and demo data until a site plugs in real datasets;
//! - [`postprocess`]: model outputs → vertebra instances, anatomical-order identification,
//!   lesion peaks, measurements and Genant grades (shared by trainer and appliance).
//!
//! What this crate is *not* for: it has no network code, no database, no deep-learning
//! framework and no ONNX Runtime. The DICOM dependency (feature `dicom`, on by default) is used
//! only to write phantom studies as CT series.

pub mod anatomy;
pub mod components;
pub mod contract;
pub mod error;
pub mod inference;
pub mod metrics;
pub mod nifti;
pub mod phantom;
pub mod postprocess;
pub mod stats;
pub mod volume;

#[cfg(feature = "dicom")]
pub mod dicom_series;

pub use error::{Error, Result};
pub use volume::{Geometry, Volume};
