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

/// Every tissue in `as u8` order.
pub const ALL_TISSUES: [Tissue; NUM_TISSUES] = [
    Tissue::Air,
    Tissue::Lung,
    Tissue::Fat,
    Tissue::Muscle,
    Tissue::SoftTissue,
    Tissue::Disc,
    Tissue::Csf,
    Tissue::Cord,
    Tissue::CorticalBone,
    Tissue::TrabecularBone,
    Tissue::LyticLesion,
    Tissue::ScleroticLesion,
    Tissue::Inflammation,
    Tissue::Table,
    Tissue::Metal,
];

/// Clean (noise-free, 120 kVp) CT attenuation of one tissue: the value the phantom paints
/// before any scanner appearance is applied.
///
/// `mean` is the nominal tissue value, `sd` the spread of the *clean* voxels (biological
/// heterogeneity: per-patient offsets, slow spatial variation and, for bone, trabecular
/// texture), and `range` the interval that the published values fall into. The HU test of the
/// generator checks that the mean of every tissue's voxels lies inside `range` and that their
/// spread is of the order of `sd`, so the table is also the specification of
/// [`super::clean_hu`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TissueHu {
    /// Nominal mean, HU.
    pub mean: f32,
    /// Nominal standard deviation of the clean voxels, HU.
    pub sd: f32,
    /// Published range `[low, high]` of tissue means, HU.
    pub range: [f32; 2],
}

impl Tissue {
    /// The tissue stored as `value` in a tissue map, or `None`.
    pub fn from_u8(value: u8) -> Option<Self> {
        ALL_TISSUES.get(value as usize).copied()
    }

    /// Clean CT attenuation of this tissue; see [`TissueHu`] and the sources below (also in
    /// `docs/phantom.md`).
    ///
    /// - Air −1000 HU and water 0 HU define the Hounsfield scale (Hounsfield GN, Br J Radiol
    ///   1973;46:1016–1022).
    /// - Lung: healthy parenchyma at inspiration averages about −850 HU, range −900 to −700
    ///   (Gevenois PA et al., Am J Respir Crit Care Med 1996;154:187–192, normal subjects'
    ///   lung density; Kalender WA, *Computed Tomography*, 3rd ed. 2011, HU scale).
    /// - Fat: subcutaneous and visceral adipose tissue −150 to −50 HU, typically −100
    ///   (Yoshizumi T et al., Radiology 1999;211:283–286, the −150..−50 HU fat window).
    /// - Muscle: skeletal muscle of healthy adults 35–55 HU at L3 (Aubrey J et al., Acta
    ///   Physiol 2014;210:489–497; the −29..150 HU muscle window is a segmentation window,
    ///   not the tissue mean).
    /// - Soft tissue (organs, unenhanced blood): 40–60 HU (unenhanced liver 55–65 HU, blood
    ///   40–50 HU; Kalender 2011).
    /// - Intervertebral disc: 50–110 HU on unenhanced CT, denser than the thecal sac and
    ///   than muscle (Haughton VM et al., Radiology 1982;142:103–110, CT of the disc).
    /// - CSF: water-like, 0–15 HU (Kalender 2011).
    /// - Spinal cord: 20–45 HU, slightly denser than CSF (unenhanced CT of the canal; the
    ///   cord is seen only because it is a few tens of HU above CSF).
    /// - Cortical bone: compact bone 800–1900 HU at 120 kVp, typically > 1000 HU (Kalender
    ///   2011; the vertebral shell is thin, so measured values are lower through partial
    ///   volume, which the appearance model adds).
    /// - Trabecular vertebral bone: 100–350 HU in adults, L1 means around 160–230 HU in
    ///   non-osteoporotic adults and < 110 HU in osteoporosis (Pickhardt PJ et al., Ann
    ///   Intern Med 2013;158:588–595). The phantom draws a per-patient mean in 140–280 HU.
    /// - Lytic metastasis: bone replaced by soft-tissue-density tumour, 0–80 HU.
    /// - Sclerotic (osteoblastic) metastasis: untreated blastic metastases average about
    ///   440 HU (range of means ~300–900 HU), below enostoses (~1190 HU); 885 HU separates
    ///   the two (Ulano A et al., AJR 2016;207:362–368).
    /// - Inflammation (phlegmon / oedematous disc and endplates in spondylodiscitis):
    ///   fluid-to-soft-tissue density, 10–60 HU.
    /// - Table: carbon-fibre composite skin of the couch (density ≈ 1.5–1.6 g/cm³,
    ///   low-Z), 150–400 HU; an estimate from density, not a published value.
    /// - Metal: titanium attenuates far beyond the 12-bit CT range and saturates at
    ///   3071 HU (4095 − 1024); clean value 3000 HU, as [`super::domain::METAL_HU`].
    pub fn hu(self) -> TissueHu {
        let t = |mean, sd, lo, hi| TissueHu {
            mean,
            sd,
            range: [lo, hi],
        };
        match self {
            Tissue::Air => t(-1000.0, 0.0, -1000.0, -990.0),
            Tissue::Lung => t(-850.0, 25.0, -900.0, -700.0),
            Tissue::Fat => t(-100.0, 10.0, -150.0, -50.0),
            Tissue::Muscle => t(45.0, 6.0, 35.0, 55.0),
            Tissue::SoftTissue => t(50.0, 6.0, 40.0, 60.0),
            Tissue::Disc => t(80.0, 8.0, 50.0, 110.0),
            Tissue::Csf => t(8.0, 3.0, 0.0, 15.0),
            Tissue::Cord => t(32.0, 4.0, 20.0, 45.0),
            Tissue::CorticalBone => t(1250.0, 120.0, 800.0, 1900.0),
            Tissue::TrabecularBone => t(210.0, 60.0, 100.0, 350.0),
            Tissue::LyticLesion => t(40.0, 12.0, 0.0, 80.0),
            Tissue::ScleroticLesion => t(600.0, 80.0, 300.0, 900.0),
            Tissue::Inflammation => t(32.0, 8.0, 10.0, 60.0),
            Tissue::Table => t(250.0, 10.0, 150.0, 400.0),
            Tissue::Metal => t(3000.0, 0.0, 3000.0, 3071.0),
        }
    }

    /// Whether this is bone tissue that belongs to a vertebra's label when it lies in one
    /// (cortical, trabecular, and the bone-replacing lesions).
    pub fn is_bone_like(self) -> bool {
        matches!(
            self,
            Tissue::CorticalBone
                | Tissue::TrabecularBone
                | Tissue::LyticLesion
                | Tissue::ScleroticLesion
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_tissues_round_trip_through_u8() {
        for (i, t) in ALL_TISSUES.iter().enumerate() {
            assert_eq!(*t as usize, i);
            assert_eq!(Tissue::from_u8(i as u8), Some(*t));
        }
        assert_eq!(Tissue::from_u8(NUM_TISSUES as u8), None);
    }

    #[test]
    fn hu_table_is_consistent() {
        for t in ALL_TISSUES {
            let h = t.hu();
            assert!(h.range[0] <= h.mean && h.mean <= h.range[1], "{t:?}");
            assert!(h.sd >= 0.0, "{t:?}");
        }
        // The orderings a reader of any CT relies on.
        let m = |t: Tissue| t.hu().mean;
        assert!(m(Tissue::Air) < m(Tissue::Lung));
        assert!(m(Tissue::Lung) < m(Tissue::Fat));
        assert!(m(Tissue::Fat) < m(Tissue::Csf));
        assert!(m(Tissue::Csf) < m(Tissue::Cord));
        assert!(m(Tissue::LyticLesion) < m(Tissue::TrabecularBone));
        assert!(m(Tissue::TrabecularBone) < m(Tissue::ScleroticLesion));
        assert!(m(Tissue::ScleroticLesion) < m(Tissue::CorticalBone));
        assert!(Tissue::CorticalBone.hu().range[0] >= 800.0);
    }
}
