//! Spinal anatomy: the vertebra labels, their regions and order, and the lesion classes.
//!
//! C1–C7, T1–T12, L1–L5 are 24 vertebrae, not 25 as the issue text counts. We keep the
//! model's 25 vertebra classes (26 with background) by giving the commonest transitional
//! variant its own class, exactly as VerSe does: label values are the model's class indices,
//! 0 is background, 1..=24 are C1..L5 in cranio-caudal order and 25 is L6 (a sixth lumbar
//! vertebra, lumbarised S1). VerSe's 28 = T13 has no class of its own (rare, and not a
//! position in the standard column); [`Vertebra::from_verse_label`] reports it so readers can
//! exclude those voxels from losses and metrics instead of forcing them into a neighbour.
//!
//! Besides the labels this module holds what reports and DICOM objects need to *name* the
//! anatomy and the findings: SNOMED CT codes ([`Code`], [`Vertebra::snomed`],
//! [`LesionClass::snomed`]), typical adult vertebral-body sizes for the phantom generator
//! ([`typical_body_size_mm`]) and the Genant semiquantitative fracture grades
//! ([`GenantGrade`]).
//!
//! ## Where the codes come from
//!
//! Every code below was checked against the DICOM content-mapping resource (PS3.16) as shipped
//! in pydicom 3.0.2 (`pydicom/sr/_concepts_dict.py` and `pydicom/sr/_cid_dict.py`, generated
//! from PS3.16), unless its comment says otherwise. The CID named next to a code is the DICOM
//! context group that lists it. No code here was invented; where no suitable concept exists
//! (a sixth lumbar vertebra) the substitute is documented.

use std::borrow::Cow;

use crate::{Error, Result};
use serde::{Deserialize, Serialize};

/// A coded concept as DICOM writes it: Coding Scheme Designator (0008,0102), Code Value
/// (0008,0100) and Code Meaning (0008,0104).
///
/// The fields are `Cow` so that the constants below cost nothing while codes read back from
/// JSON (ground truth, manifests) are owned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Code {
    /// Coding scheme designator, e.g. "SCT" for SNOMED CT.
    pub scheme: Cow<'static, str>,
    /// Code value, e.g. "66794005".
    pub value: Cow<'static, str>,
    /// Human-readable code meaning, e.g. "L1 vertebra".
    pub meaning: Cow<'static, str>,
}

impl Code {
    /// A SNOMED CT ("SCT") code.
    pub const fn sct(value: &'static str, meaning: &'static str) -> Self {
        Code {
            scheme: Cow::Borrowed("SCT"),
            value: Cow::Borrowed(value),
            meaning: Cow::Borrowed(meaning),
        }
    }
}

/// Segmentation Property Category for vertebra segments: SCT 91723000 "Anatomical Structure"
/// (DICOM CID 7150 "Segmentation Property Category"; highdicom and pydicom use the same code).
pub const CATEGORY_ANATOMICAL_STRUCTURE: Code = Code::sct("91723000", "Anatomical Structure");

/// Segmentation Property Category for lesion segments: SCT 49755003 "Morphologically Abnormal
/// Structure" (DICOM CID 7150).
pub const CATEGORY_MORPHOLOGICALLY_ABNORMAL_STRUCTURE: Code =
    Code::sct("49755003", "Morphologically Abnormal Structure");

/// Segmentation Property Category for implants: SCT 260787004 "Physical object" (DICOM CID
/// 7150).
pub const CATEGORY_PHYSICAL_OBJECT: Code = Code::sct("260787004", "Physical object");

/// Segmented Property Type for pedicle screws: SCT 68183006 "Bone Screw" (DICOM CID 7151
/// "Segmentation Property Type", CID 7157 "Device Segmentation Type").
pub const BONE_SCREW: Code = Code::sct("68183006", "Bone Screw");

/// SCT 51282000 "Vertebra" (DICOM CID 7151, 7192, 6114). Used for L6, for which SNOMED CT has
/// no concept of its own in any DICOM context group (CID 7602/7603 list C1–L5 only); the
/// segment label "L6" carries the level.
pub const VERTEBRA_UNSPECIFIED: Code = Code::sct("51282000", "Vertebra");

/// SCT 54735007 "Sacrum" (DICOM CID 7151, 7192). VerSe labels it 26; it is not a target.
pub const SACRUM: Code = Code::sct("54735007", "Sacrum");

/// SNOMED CT codes of C1..L5 in label order (DICOM CID 7603 "Vertebra", also CID 7602, 7151
/// and 7192; pydicom 3.0.2 `_concepts_dict.py`, e.g. "C1Vertebra": 14806007). Index = label-1.
const VERTEBRA_CODES: [Code; NUM_STANDARD_VERTEBRAE] = [
    Code::sct("14806007", "C1 vertebra"),
    Code::sct("39976000", "C2 vertebra"),
    Code::sct("113205007", "C3 vertebra"),
    Code::sct("5329002", "C4 vertebra"),
    Code::sct("36978003", "C5 vertebra"),
    Code::sct("36054005", "C6 vertebra"),
    Code::sct("87391001", "C7 vertebra"),
    Code::sct("64864005", "T1 vertebra"),
    Code::sct("53733008", "T2 vertebra"),
    Code::sct("1626008", "T3 vertebra"),
    Code::sct("73071006", "T4 vertebra"),
    Code::sct("56401006", "T5 vertebra"),
    Code::sct("45296009", "T6 vertebra"),
    Code::sct("62487009", "T7 vertebra"),
    Code::sct("11068009", "T8 vertebra"),
    Code::sct("82687006", "T9 vertebra"),
    Code::sct("7610001", "T10 vertebra"),
    Code::sct("12989004", "T11 vertebra"),
    Code::sct("23215003", "T12 vertebra"),
    Code::sct("66794005", "L1 vertebra"),
    Code::sct("14293000", "L2 vertebra"),
    Code::sct("36470004", "L3 vertebra"),
    Code::sct("11994002", "L4 vertebra"),
    Code::sct("49668003", "L5 vertebra"),
];

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
    C1 = 1,
    C2,
    C3,
    C4,
    C5,
    C6,
    C7,
    T1,
    T2,
    T3,
    T4,
    T5,
    T6,
    T7,
    T8,
    T9,
    T10,
    T11,
    T12,
    L1,
    L2,
    L3,
    L4,
    L5,
    L6,
}

/// Number of vertebra classes (excluding background): 24 standard + L6.
pub const NUM_VERTEBRAE: usize = 25;

/// Number of standard vertebrae C1–L5.
pub const NUM_STANDARD_VERTEBRAE: usize = 24;

/// Every vertebra in cranio-caudal order.
pub const ALL_VERTEBRAE: [Vertebra; NUM_VERTEBRAE] = [
    Vertebra::C1,
    Vertebra::C2,
    Vertebra::C3,
    Vertebra::C4,
    Vertebra::C5,
    Vertebra::C6,
    Vertebra::C7,
    Vertebra::T1,
    Vertebra::T2,
    Vertebra::T3,
    Vertebra::T4,
    Vertebra::T5,
    Vertebra::T6,
    Vertebra::T7,
    Vertebra::T8,
    Vertebra::T9,
    Vertebra::T10,
    Vertebra::T11,
    Vertebra::T12,
    Vertebra::L1,
    Vertebra::L2,
    Vertebra::L3,
    Vertebra::L4,
    Vertebra::L5,
    Vertebra::L6,
];

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

    /// SNOMED CT code for DICOM SEG "Segmented Property Type" and SR "Finding Site" (pair it
    /// with [`CATEGORY_ANATOMICAL_STRUCTURE`]). C1..L5 have their own concepts (CID 7603); L6
    /// has none and gets [`VERTEBRA_UNSPECIFIED`] ("Vertebra"), so a reader must take the
    /// level from the segment label.
    ///
    /// ```
    /// use vertebra_core::anatomy::Vertebra;
    /// assert_eq!(Vertebra::L1.snomed().value, "66794005");
    /// ```
    pub fn snomed(self) -> Code {
        match self {
            Vertebra::L6 => VERTEBRA_UNSPECIFIED,
            v => VERTEBRA_CODES[v.ordinal()].clone(),
        }
    }

    /// Typical adult vertebral-body size, see [`typical_body_size_mm`].
    pub fn typical_body_size_mm(self) -> [f64; 3] {
        typical_body_size_mm(self)
    }

    /// Interprets a VerSe mask value (see [`VerseLabel`]). Values 1..=25 are the same in
    /// VerSe and here.
    ///
    /// ```
    /// use vertebra_core::anatomy::{Vertebra, VerseLabel};
    /// assert_eq!(Vertebra::from_verse_label(24), VerseLabel::Vertebra(Vertebra::L5));
    /// assert_eq!(Vertebra::from_verse_label(28), VerseLabel::T13);
    /// ```
    pub fn from_verse_label(value: u8) -> VerseLabel {
        match value {
            0 => VerseLabel::Background,
            26 => VerseLabel::Sacrum,
            27 => VerseLabel::Coccyx,
            28 => VerseLabel::T13,
            v => Self::from_label(v).map_or(VerseLabel::Unknown(v), VerseLabel::Vertebra),
        }
    }
}

/// Typical adult vertebral-body size `[width, depth, height]` in mm: width = left–right extent
/// of the upper endplate, depth = its antero-posterior extent, height = posterior body height.
///
/// These are *typical* values (rounded to 0.5 mm) for building plausible phantoms, not
/// reference ranges: individual vertebrae vary by ±10–15 % (sex, stature, age). They follow the
/// cadaveric morphometry of Panjabi et al. (cervical: Spine 1991;16:861–869; thoracic: Spine
/// 1991;16:888–901; lumbar: Spine 1992;17:299–306) and the CT morphometry of Zhou et al. (Eur
/// Spine J 2000;9:242–248). The primary tables were not available when this table was written;
/// the values were transcribed from the published trends and spot-checked against a CT series
/// of 1,000+ adults (L5: superior length 35.7 mm, posterior height 26.3 mm; Int J Spine Surg,
/// "Table 6", ijssurgery.com). See `docs/domains.md`.
///
/// Special cases: C1 has no body — the values describe its anterior arch block, which the
/// phantom draws instead; C2 is its body without the dens; L6 (lumbarised S1) is given the size
/// of L5.
pub fn typical_body_size_mm(v: Vertebra) -> [f64; 3] {
    const SIZES: [[f64; 3]; NUM_VERTEBRAE] = [
        [20.0, 10.0, 10.0], // C1: anterior arch (no body)
        [17.0, 16.0, 23.0], // C2: body without dens
        [16.0, 15.5, 13.0],
        [16.5, 15.5, 13.0],
        [17.5, 16.0, 13.0],
        [19.5, 16.5, 13.0],
        [22.0, 16.5, 14.5], // C7
        [25.0, 16.5, 15.5], // T1
        [25.0, 18.0, 17.0],
        [24.5, 20.0, 17.5],
        [25.0, 22.0, 18.0],
        [26.0, 24.0, 18.5],
        [27.0, 25.5, 19.0],
        [28.5, 27.0, 19.5],
        [30.0, 28.0, 20.5],
        [31.5, 29.0, 21.0],
        [34.0, 30.0, 22.0],
        [37.0, 31.0, 23.0],
        [39.0, 32.0, 24.0], // T12
        [41.0, 33.0, 26.0], // L1
        [43.0, 34.0, 27.0],
        [45.0, 35.0, 27.0],
        [47.0, 35.0, 26.5],
        [49.0, 35.5, 25.5], // L5
        [49.0, 35.5, 25.5], // L6 = L5
    ];
    SIZES[v.ordinal()]
}

/// What a VerSe mask value means. VerSe (github.com/anjany/verse, `utils/data_utilities.py`,
/// `v_dict`) uses 1–7 C1–C7, 8–19 T1–T12, 20–25 L1–L6, 26 sacrum, 27 coccyx, 28 T13.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum VerseLabel {
    /// 0: background.
    Background,
    /// 1..=25: one of our vertebra classes (same values as VerSe).
    Vertebra(Vertebra),
    /// 28: a thirteenth thoracic vertebra. No class of its own: callers exclude these voxels
    /// from losses and metrics rather than forcing them into T12 or L1.
    T13,
    /// 26: sacrum. Not a target (background for training and evaluation).
    Sacrum,
    /// 27: coccyx. Not a target (background for training and evaluation).
    Coccyx,
    /// Any other value: not defined by VerSe; a reader must reject the file.
    Unknown(u8),
}

impl VerseLabel {
    /// The class to train and evaluate on: `Ok(Some(0))` background (also sacrum and coccyx),
    /// `Ok(Some(1..=25))` a vertebra, `Ok(None)` exclude the voxel (T13), and an error for a
    /// value VerSe does not define — a mask with such values is corrupt or from another
    /// convention, and guessing would silently mislabel vertebrae.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] for [`VerseLabel::Unknown`].
    pub fn target_class(self) -> Result<Option<u8>> {
        match self {
            VerseLabel::Background | VerseLabel::Sacrum | VerseLabel::Coccyx => Ok(Some(0)),
            VerseLabel::Vertebra(v) => Ok(Some(v.label())),
            VerseLabel::T13 => Ok(None),
            VerseLabel::Unknown(x) => Err(Error::InvalidArgument(format!(
                "mask value {x} is not a VerSe label (0 background, 1-25 C1-L6, 26 sacrum, \
                 27 coccyx, 28 T13)"
            ))),
        }
    }
}

/// Genant semiquantitative vertebral fracture grade (Genant HK, Wu CY, van Kuijk C, Nevitt MC.
/// Vertebral fracture assessment using a semiquantitative technique. J Bone Miner Res
/// 1993;8:1137–1148), from the loss of anterior, middle or posterior height relative to the
/// expected height. `as u8` is the grade 0..=3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[repr(u8)]
pub enum GenantGrade {
    /// Grade 0: normal, < 20 % height loss.
    Normal = 0,
    /// Grade 1: mild deformity, 20–25 % height loss.
    Mild = 1,
    /// Grade 2: moderate, 25–40 % height loss.
    Moderate = 2,
    /// Grade 3: severe, > 40 % height loss.
    Severe = 3,
}

impl GenantGrade {
    /// The grade for 0..=3, or `None`.
    pub fn from_u8(grade: u8) -> Option<Self> {
        match grade {
            0 => Some(GenantGrade::Normal),
            1 => Some(GenantGrade::Mild),
            2 => Some(GenantGrade::Moderate),
            3 => Some(GenantGrade::Severe),
            _ => None,
        }
    }

    /// Height-loss range `[low, high)` as fractions of the expected height (grade 3 includes
    /// 1.0).
    pub fn height_loss_range(self) -> (f64, f64) {
        match self {
            GenantGrade::Normal => (0.0, 0.20),
            GenantGrade::Mild => (0.20, 0.25),
            GenantGrade::Moderate => (0.25, 0.40),
            GenantGrade::Severe => (0.40, 1.0),
        }
    }

    /// The grade of a height loss given as a fraction in [0, 1]; an error for anything else
    /// (negative, > 1 or not finite), which would mean a measurement bug.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidArgument`] when `fraction` is not a finite number in [0, 1].
    pub fn from_height_loss(fraction: f64) -> Result<Self> {
        if !fraction.is_finite() || !(0.0..=1.0).contains(&fraction) {
            return Err(Error::InvalidArgument(format!(
                "height loss {fraction} is not a fraction in [0, 1]"
            )));
        }
        Ok(if fraction < 0.20 {
            GenantGrade::Normal
        } else if fraction < 0.25 {
            GenantGrade::Mild
        } else if fraction < 0.40 {
            GenantGrade::Moderate
        } else {
            GenantGrade::Severe
        })
    }

    /// The lesion class this grade is a target of: grades 2 and 3 are [`LesionClass::Fracture`];
    /// grade 1 deformities are too often non-fracture shape variants to be a target, grade 0 is
    /// normal.
    pub fn lesion_class(self) -> Option<LesionClass> {
        matches!(self, GenantGrade::Moderate | GenantGrade::Severe).then_some(LesionClass::Fracture)
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

    /// SNOMED CT code for DICOM SEG "Segmented Property Type" and SR finding codes (pair it
    /// with [`CATEGORY_MORPHOLOGICALLY_ABNORMAL_STRUCTURE`] and the vertebra's
    /// [`Vertebra::snomed`] as finding site):
    ///
    /// - fracture: SCT 72704001 "Fracture" (morphologic abnormality). DICOM's lesion context
    ///   groups (CID 7159/7194) have no fracture concept; 72704001 is the SNOMED CT morphology
    ///   every "Fracture of …" disorder is defined with (SNOMED CT editorial guide, repository
    ///   SNOMED-Documents/snomed-editorial-guide; also used as `$sct#72704001 "Fracture
    ///   (morphologic abnormality)"` in HL7 FHIR examples). Not in pydicom's tables.
    /// - lytic and sclerotic metastasis: SCT 14799000 "Neoplasm, Secondary" (CID 7159 "Lesion
    ///   Segmentation Type", CID 7194); the two differ by [`LesionClass::density_modifier`].
    /// - infection / erosion: SCT 409774005 "Inflammation" (CID 7159, CID 7194).
    pub fn snomed(self) -> Code {
        match self {
            LesionClass::Fracture => Code::sct("72704001", "Fracture"),
            LesionClass::LyticMetastasis | LesionClass::ScleroticMetastasis => {
                Code::sct("14799000", "Neoplasm, Secondary")
            }
            LesionClass::InfectionErosion => Code::sct("409774005", "Inflammation"),
        }
    }

    /// Optional "Segmented Property Type Modifier" that separates the two metastasis classes,
    /// which share one property type: SCT 129746008 "Low density (not containing fat) lesion"
    /// for lytic and SCT 129744006 "High density lesion" for sclerotic (DICOM CID 6008
    /// "Density Modifier"; defined for breast imaging, the only density modifiers in PS3.16).
    /// `None` for the other classes.
    pub fn density_modifier(self) -> Option<Code> {
        match self {
            LesionClass::LyticMetastasis => Some(Code::sct(
                "129746008",
                "Low density (not containing fat) lesion",
            )),
            LesionClass::ScleroticMetastasis => Some(Code::sct("129744006", "High density lesion")),
            LesionClass::Fracture | LesionClass::InfectionErosion => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_round_trip_and_order() {
        for (i, v) in ALL_VERTEBRAE.iter().enumerate() {
            assert_eq!(v.label() as usize, i + 1);
            assert_eq!(Vertebra::from_label(v.label()), Some(*v));
            assert_eq!(Vertebra::from_name(v.name()), Some(*v));
        }
        assert_eq!(Vertebra::from_label(0), None);
        assert_eq!(Vertebra::from_label(26), None);
        assert_eq!(Vertebra::T12.next(), Some(Vertebra::L1));
        assert_eq!(Vertebra::C1.prev(), None);
    }

    #[test]
    fn snomed_codes_are_distinct_and_named_after_their_vertebra() {
        let mut seen = std::collections::HashSet::new();
        for v in &ALL_VERTEBRAE[..NUM_STANDARD_VERTEBRAE] {
            let c = v.snomed();
            assert_eq!(c.scheme, "SCT");
            assert_eq!(c.meaning, format!("{} vertebra", v.name()));
            assert!(c.value.bytes().all(|b| b.is_ascii_digit()), "{c:?}");
            assert!(seen.insert(c.value.clone()), "duplicate code {c:?}");
        }
        assert_eq!(Vertebra::C1.snomed().value, "14806007");
        assert_eq!(Vertebra::T1.snomed().value, "64864005");
        assert_eq!(Vertebra::L5.snomed().value, "49668003");
        assert_eq!(Vertebra::L6.snomed(), VERTEBRA_UNSPECIFIED);
    }

    #[test]
    fn code_serde_round_trip() {
        let c = Vertebra::T7.snomed();
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(
            json,
            r#"{"scheme":"SCT","value":"62487009","meaning":"T7 vertebra"}"#
        );
        let back: Code = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn lesion_codes() {
        assert_eq!(LesionClass::Fracture.snomed().value, "72704001");
        assert_eq!(
            LesionClass::LyticMetastasis.snomed(),
            LesionClass::ScleroticMetastasis.snomed()
        );
        assert_ne!(
            LesionClass::LyticMetastasis.density_modifier(),
            LesionClass::ScleroticMetastasis.density_modifier()
        );
        assert_eq!(LesionClass::InfectionErosion.snomed().value, "409774005");
        assert!(LesionClass::Fracture.density_modifier().is_none());
    }

    #[test]
    fn verse_labels() {
        assert_eq!(Vertebra::from_verse_label(0), VerseLabel::Background);
        assert_eq!(
            Vertebra::from_verse_label(1),
            VerseLabel::Vertebra(Vertebra::C1)
        );
        assert_eq!(
            Vertebra::from_verse_label(19),
            VerseLabel::Vertebra(Vertebra::T12)
        );
        assert_eq!(
            Vertebra::from_verse_label(25),
            VerseLabel::Vertebra(Vertebra::L6)
        );
        assert_eq!(Vertebra::from_verse_label(26), VerseLabel::Sacrum);
        assert_eq!(Vertebra::from_verse_label(27), VerseLabel::Coccyx);
        assert_eq!(Vertebra::from_verse_label(28), VerseLabel::T13);
        assert_eq!(Vertebra::from_verse_label(29), VerseLabel::Unknown(29));
        assert_eq!(Vertebra::from_verse_label(255), VerseLabel::Unknown(255));

        assert_eq!(VerseLabel::Sacrum.target_class().unwrap(), Some(0));
        assert_eq!(VerseLabel::T13.target_class().unwrap(), None);
        assert_eq!(
            Vertebra::from_verse_label(20).target_class().unwrap(),
            Some(20)
        );
        assert!(VerseLabel::Unknown(40).target_class().is_err());
    }

    #[test]
    fn genant_grades() {
        let cases = [
            (0.0, GenantGrade::Normal),
            (0.199, GenantGrade::Normal),
            (0.20, GenantGrade::Mild),
            (0.249, GenantGrade::Mild),
            (0.25, GenantGrade::Moderate),
            (0.399, GenantGrade::Moderate),
            (0.40, GenantGrade::Severe),
            (1.0, GenantGrade::Severe),
        ];
        for (loss, grade) in cases {
            assert_eq!(
                GenantGrade::from_height_loss(loss).unwrap(),
                grade,
                "{loss}"
            );
            let (lo, hi) = grade.height_loss_range();
            assert!(loss >= lo && (loss < hi || (hi == 1.0 && loss <= hi)));
        }
        assert!(GenantGrade::from_height_loss(-0.1).is_err());
        assert!(GenantGrade::from_height_loss(1.5).is_err());
        assert!(GenantGrade::from_height_loss(f64::NAN).is_err());
        for g in 0..=3u8 {
            assert_eq!(GenantGrade::from_u8(g).unwrap() as u8, g);
        }
        assert_eq!(GenantGrade::from_u8(4), None);
        assert_eq!(GenantGrade::Mild.lesion_class(), None);
        assert_eq!(
            GenantGrade::Moderate.lesion_class(),
            Some(LesionClass::Fracture)
        );
        assert_eq!(
            GenantGrade::Severe.lesion_class(),
            Some(LesionClass::Fracture)
        );
    }

    #[test]
    fn body_sizes_are_plausible_and_grow_caudally() {
        for v in ALL_VERTEBRAE {
            let s = typical_body_size_mm(v);
            assert!(s.iter().all(|x| (8.0..=60.0).contains(x)), "{v:?} {s:?}");
        }
        // Width and depth grow from C3 to L5 (endplate area carries increasing load).
        for w in ALL_VERTEBRAE[2..NUM_STANDARD_VERTEBRAE].windows(2) {
            let (a, b) = (typical_body_size_mm(w[0]), typical_body_size_mm(w[1]));
            assert!(a[0] * a[1] <= b[0] * b[1], "{:?} -> {:?}", w[0], w[1]);
        }
        assert_eq!(
            Vertebra::L6.typical_body_size_mm(),
            Vertebra::L5.typical_body_size_mm()
        );
    }
}
