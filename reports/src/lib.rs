//! DICOM outputs of an analysis: a binary Segmentation (one segment per vertebra), a
//! Comprehensive 3D SR following TID 1500 (measurements per vertebra and per lesion) and,
//! optionally, key images (a Secondary Capture of the mid-sagittal reformat with labels, names
//! and lesions burned in, for PACS that do not display SEG), built as pure functions from
//! results and the source series' headers. No networking here.
//!
//! What this crate is *not*: it does not run inference, read pixel data, read the clock or
//! send anything. Sending is the forwarder's job; the engine hands us
//! [`AnalysisFindings`] on the source grid and an [`InstanceIdentity`] per output.
//!
//! ```text
//! SourceSeries::from_dir ──┐
//! AnalysisFindings ────────┼─> build_seg ─> SEG ──┐
//! AlgorithmInfo ───────────┘                      ├─> build_sr ─> SR
//!                                                 └─> write_part10
//! ```
//!
//! `docs/reports.md` documents the IODs, every code and its source, the palette and the
//! `dciodvfy` warnings that remain.

pub mod codes;
mod dataset;
mod error;
pub mod font;
pub mod keyimage;
pub mod model;
pub mod palette;
pub mod seg;
pub mod source;
pub mod sr;
pub mod write;

pub use error::{Error, Result};
pub use keyimage::build_key_images;
pub use model::{
    AlgorithmInfo, AnalysisFindings, BodyHeights, InstanceIdentity, LesionFinding, LesionHeatmap,
    VertebraFinding,
};
pub use seg::{build_fractional_seg, build_seg};
pub use source::{PatientStudyAttributes, SourceImage, SourceSeries};
pub use sr::{PredecessorRef, SegReference, build_sr, set_predecessor};
pub use write::{to_part10_bytes, write_part10};
