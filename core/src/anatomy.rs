//! Spinal anatomy: the vertebra labels, their regions and order, and the lesion classes.
//!
//! C1–C7, T1–T12, L1–L5 are 24 vertebrae, not 25 as the issue text counts. We keep the
//! model's 25 vertebra classes (26 with background) by giving the commonest transitional
//! variant its own class, exactly as VerSe does: label values are the model's class indices,
//! 0 is background, 1..=24 are C1..L5 in cranio-caudal order and 25 is L6 (a sixth lumbar
//! vertebra, lumbarised S1). VerSe's 28 = T13 has no class of its own (rare, and not a
//! position in the standard column); [`Vertebra::from_verse_label`] reports it so readers can
//! exclude those voxels from losses and metrics instead of forcing them into a neighbour.

use serde::{Deserialize, Serialize};

/// Spinal region of a vertebra.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Region {
    /// C1–C7.
    Cervical,
    /// T1–T12.
    Thoracic,
    /// L1–L5.
    Lumbar,
}

/// One of the 24 standard vertebrae or the transitional L6, cranio-caudal order. `as u8`
/// gives the label value (C1 = 1 … L5 = 24, L6 = 25).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum Vertebra {
    C1 = 1, C2, C3, C4, C5, C6, C7,
    T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12,
    L1, L2, L3, L4, L5, L6,
}

/// Number of vertebra classes (excluding background): 24 standard + L6.
pub const NUM_VERTEBRAE: usize = 25;

/// Number of standard vertebrae C1–L5.
pub const NUM_STANDARD_VERTEBRAE: usize = 24;

/// Every vertebra in cranio-caudal order.
pub const ALL_VERTEBRAE: [Vertebra; NUM_VERTEBRAE] = {
    use Vertebra::*;
    [
        C1, C2, C3, C4, C5, C6, C7, T1, T2, T3, T4, T5, T6, T7, T8, T9, T10, T11, T12, L1, L2, L3,
        L4, L5, L6,
    ]
};

impl Vertebra {
    /// The label value 1..=25.
    ///
    /// ```
    /// use vertebra_core::anatomy::Vertebra;
    /// assert_eq!(Vertebra::L5.label(), 24);
    /// assert_eq!(Vertebra::L6.label(), 25);
    /// ```
    pub fn label(self) -> u8 {
        self as u8
    }

    /// The vertebra with label value 1..=25, or `None`.
    pub fn from_label(label: u8) -> Option<Self> {
        (1..=NUM_VERTEBRAE as u8)
            .contains(&label)
            .then(|| ALL_VERTEBRAE[label as usize - 1])
    }

    /// Name as used in reports and DICOM segment labels ("C1" … "L5", "L6").
    pub fn name(self) -> &'static str {
        const NAMES: [&str; NUM_VERTEBRAE] = [
            "C1", "C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2", "T3", "T4", "T5", "T6", "T7",
            "T8", "T9", "T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "L6",
        ];
        NAMES[self as usize - 1]
    }

    /// Parses "C1" … "L6" (case-insensitive).
    pub fn from_name(name: &str) -> Option<Self> {
        ALL_VERTEBRAE
            .iter()
            .copied()
            .find(|v| v.name().eq_ignore_ascii_case(name.trim()))
    }

    /// Spinal region.
    pub fn region(self) -> Region {
        match self as u8 {
            1..=7 => Region::Cervical,
            8..=19 => Region::Thoracic,
            _ => Region::Lumbar,
        }
    }

    /// Position in the column, 0 (C1) … 23 (L5), 24 (L6).
    pub fn ordinal(self) -> usize {
        self as usize - 1
    }

    /// The next vertebra caudally (C1 → C2, T12 → L1, L5 → L6), `None` after L6.
    pub fn next(self) -> Option<Self> {
        Self::from_label(self as u8 + 1)
    }

    /// The previous vertebra cranially, `None` before C1.
    pub fn prev(self) -> Option<Self> {
        Self::from_label((self as u8).wrapping_sub(1))
    }
}

/// Vertebral lesion classes detected by the lesion head, in output-channel order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum LesionClass {
    /// Vertebral compression fracture, Genant grade 2 (moderate, 25–40 % height loss) or 3
    /// (severe, > 40 %). Grade 1 deformities are present in phantoms but are not a target.
    Fracture = 0,
    /// Lytic (hypodense, bone-destroying) metastasis.
    LyticMetastasis = 1,
    /// Sclerotic (hyperdense, bone-forming) metastasis.
    ScleroticMetastasis = 2,
    /// Infection / erosion (spondylodiscitis): endplate destruction across a disc.
    InfectionErosion = 3,
}

/// Number of lesion classes (lesion-head heatmap channels).
pub const NUM_LESION_CLASSES: usize = 4;

/// Every lesion class in channel order.
pub const ALL_LESION_CLASSES: [LesionClass; NUM_LESION_CLASSES] = [
    LesionClass::Fracture,
    LesionClass::LyticMetastasis,
    LesionClass::ScleroticMetastasis,
    LesionClass::InfectionErosion,
];

impl LesionClass {
    /// Channel index 0..4.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The class for channel `i`, or `None`.
    pub fn from_index(i: usize) -> Option<Self> {
        ALL_LESION_CLASSES.get(i).copied()
    }

    /// Stable machine name ("fracture", "lytic_metastasis", ...), used in JSON and manifests.
    pub fn key(self) -> &'static str {
        match self {
            LesionClass::Fracture => "fracture",
            LesionClass::LyticMetastasis => "lytic_metastasis",
            LesionClass::ScleroticMetastasis => "sclerotic_metastasis",
            LesionClass::InfectionErosion => "infection_erosion",
        }
    }
}
