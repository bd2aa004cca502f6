//! Tissue classes of the phantom. The anatomy generator paints a tissue map (one
//! [`Tissue`] per voxel) alongside the vertebra label map; HU synthesis and the scanner
//! domains (CT appearance, MRI-like contrast) are functions of this map, so anatomy and
//! appearance stay independent.

use serde::{Deserialize, Serialize};

/// What a phantom voxel is made of. `as u8` is the value stored in tissue maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Tissue {
    /// Air outside the patient and in the airway/bowel.
    Air = 0,
    /// Lung parenchyma.
    Lung = 1,
    /// Subcutaneous and visceral fat.
    Fat = 2,
    /// Muscle.
    Muscle = 3,
    /// Other soft tissue / organs (liver, bowel wall, vessels; blood-like).
    SoftTissue = 4,
    /// Intervertebral disc.
    Disc = 5,
    /// Cerebrospinal fluid in the canal.
    Csf = 6,
    /// Spinal cord.
    Cord = 7,
    /// Cortical bone (vertebral shell, ribs, skull base, pelvis cortex).
    CorticalBone = 8,
    /// Trabecular (cancellous) bone.
    TrabecularBone = 9,
    /// Lytic lesion tissue (bone replaced by soft-tissue-density tumour).
    LyticLesion = 10,
    /// Sclerotic lesion (dense new bone).
    ScleroticLesion = 11,
    /// Inflamed / eroded tissue in spondylodiscitis.
    Inflammation = 12,
    /// Patient table (carbon fibre / foam).
    Table = 13,
    /// Metal implant (titanium pedicle screws, rods).
    Metal = 14,
}

/// Number of tissue classes.
pub const NUM_TISSUES: usize = 15;
