//! Coded concepts written into the SEG and SR, each with where it comes from.
//!
//! Standard codes were checked against PS3.16 as shipped in pydicom 3.0.2
//! (`pydicom/sr/_concepts_dict.py`, `_cid_dict.py`); the anatomy and lesion codes themselves
//! live in `vertebra_core::anatomy`. Concepts that PS3.16, SNOMED CT and LOINC do not offer
//! (Genant grade, height-loss ratio, the model's confidence and score, the lesion class key)
//! use the private coding scheme [`PRIVATE_SCHEME`], declared in the Coding Scheme
//! Identification Sequence of every SR. `docs/reports.md` lists them all.

use std::borrow::Cow;

use vertebra_core::anatomy::{Code, GenantGrade, LesionClass};

/// Private coding scheme designator ("99" prefix = private, PS3.3 C.12.1.1.2.1 / PS3.16 8.2).
pub const PRIVATE_SCHEME: &str = "99VRTBFRM";

/// Name of the private coding scheme, as written in the Coding Scheme Identification Sequence.
pub const PRIVATE_SCHEME_NAME: &str = "VertebraFormer appliance private codes";

const fn dcm(value: &'static str, meaning: &'static str) -> Code {
    Code {
        scheme: Cow::Borrowed("DCM"),
        value: Cow::Borrowed(value),
        meaning: Cow::Borrowed(meaning),
    }
}

const fn private(value: &'static str, meaning: &'static str) -> Code {
    Code {
        scheme: Cow::Borrowed(PRIVATE_SCHEME),
        value: Cow::Borrowed(value),
        meaning: Cow::Borrowed(meaning),
    }
}

const fn ucum(value: &'static str, meaning: &'static str) -> Code {
    Code {
        scheme: Cow::Borrowed("UCUM"),
        value: Cow::Borrowed(value),
        meaning: Cow::Borrowed(meaning),
    }
}

// --- Segmentation --------------------------------------------------------------------------

/// DCM 113076 "Segmentation" (CID 7203): Derivation Code of every SEG frame.
pub const SEGMENTATION_DERIVATION: Code = dcm("113076", "Segmentation");
/// DCM 121322 "Source image for image processing operation" (CID 7202): purpose of the
/// per-frame source image reference.
pub const SOURCE_IMAGE_FOR_PROCESSING: Code =
    dcm("121322", "Source image for image processing operation");
/// DCM 123110 "Artificial Intelligence" (CID 7162): Algorithm Family of our segments.
pub const ARTIFICIAL_INTELLIGENCE: Code = dcm("123110", "Artificial Intelligence");

// --- SR document structure (TID 1500 and the templates it includes) --------------------------

/// DCM 126000 "Imaging Measurement Report" (CID 7021): document title of TID 1500.
pub const IMAGING_MEASUREMENT_REPORT: Code = dcm("126000", "Imaging Measurement Report");
/// DCM 121049 "Language of Content Item and Descendants" (TID 1204).
pub const LANGUAGE_OF_CONTENT: Code = dcm("121049", "Language of Content Item and Descendants");
/// RFC5646 "en-US" (CID 5000 Languages).
pub const ENGLISH_US: Code = Code {
    scheme: Cow::Borrowed("RFC5646"),
    value: Cow::Borrowed("en-US"),
    meaning: Cow::Borrowed("English (United States)"),
};
/// DCM 121005 "Observer Type" (TID 1002).
pub const OBSERVER_TYPE: Code = dcm("121005", "Observer Type");
/// DCM 121007 "Device" (CID 270).
pub const DEVICE: Code = dcm("121007", "Device");
/// DCM 121012 "Device Observer UID" (TID 1004).
pub const DEVICE_OBSERVER_UID: Code = dcm("121012", "Device Observer UID");
/// DCM 121013 "Device Observer Name" (TID 1004).
pub const DEVICE_OBSERVER_NAME: Code = dcm("121013", "Device Observer Name");
/// DCM 121014 "Device Observer Manufacturer" (TID 1004).
pub const DEVICE_OBSERVER_MANUFACTURER: Code = dcm("121014", "Device Observer Manufacturer");
/// DCM 121015 "Device Observer Model Name" (TID 1004).
pub const DEVICE_OBSERVER_MODEL_NAME: Code = dcm("121015", "Device Observer Model Name");
/// DCM 121016 "Device Observer Serial Number" (TID 1004).
pub const DEVICE_OBSERVER_SERIAL_NUMBER: Code = dcm("121016", "Device Observer Serial Number");
/// DCM 121058 "Procedure reported" (TID 1500 row 4).
pub const PROCEDURE_REPORTED: Code = dcm("121058", "Procedure reported");
/// LN 25045-6 "CT unspecified body region" (CID 100 Quantitative Diagnostic Imaging
/// Procedures; the CID lists no spine-specific CT procedure).
pub const CT_UNSPECIFIED_BODY_REGION: Code = Code {
    scheme: Cow::Borrowed("LN"),
    value: Cow::Borrowed("25045-6"),
    meaning: Cow::Borrowed("CT unspecified body region"),
};
/// DCM 111028 "Image Library" (TID 1600).
pub const IMAGE_LIBRARY: Code = dcm("111028", "Image Library");
/// DCM 126200 "Image Library Group" (TID 1600).
pub const IMAGE_LIBRARY_GROUP: Code = dcm("126200", "Image Library Group");
/// DCM 126010 "Imaging Measurements" (TID 1500 row 6).
pub const IMAGING_MEASUREMENTS: Code = dcm("126010", "Imaging Measurements");
/// DCM 125007 "Measurement Group" (TID 1411).
pub const MEASUREMENT_GROUP: Code = dcm("125007", "Measurement Group");
/// DCM 112039 "Tracking Identifier" (TID 1411).
pub const TRACKING_IDENTIFIER: Code = dcm("112039", "Tracking Identifier");
/// DCM 112040 "Tracking Unique Identifier" (TID 1411).
pub const TRACKING_UID: Code = dcm("112040", "Tracking Unique Identifier");
/// DCM 121071 "Finding" (TID 1411).
pub const FINDING: Code = dcm("121071", "Finding");
/// DCM 121191 "Referenced Segment" (TID 1411).
pub const REFERENCED_SEGMENT: Code = dcm("121191", "Referenced Segment");
/// DCM 121232 "Source series for segmentation" (TID 1411).
pub const SOURCE_SERIES_FOR_SEGMENTATION: Code = dcm("121232", "Source series for segmentation");
/// DCM 121231 "Volume Surface" (TID 1411).
pub const VOLUME_SURFACE: Code = dcm("121231", "Volume Surface");
/// DCM 111001 "Algorithm Name" (TID 4019 Algorithm Identification).
pub const ALGORITHM_NAME: Code = dcm("111001", "Algorithm Name");
/// DCM 111003 "Algorithm Version" (TID 4019 Algorithm Identification).
pub const ALGORITHM_VERSION: Code = dcm("111003", "Algorithm Version");
/// SCT 363698007 "Finding Site" (TID 1411, CID 9000 modifier).
pub const FINDING_SITE: Code = Code::sct("363698007", "Finding Site");
/// UMLS C0034375 "Qualitative Evaluations" (TID 1500 row 12).
pub const QUALITATIVE_EVALUATIONS: Code = Code {
    scheme: Cow::Borrowed("UMLS"),
    value: Cow::Borrowed("C0034375"),
    meaning: Cow::Borrowed("Qualitative Evaluations"),
};
/// DCM 121111 "Summary": the plain-text summary of the analysis.
pub const SUMMARY: Code = dcm("121111", "Summary");
/// DCM 121106 "Comment" (CID 12101): carries the "not for diagnostic use" statement.
pub const COMMENT: Code = dcm("121106", "Comment");

// --- Measurements ------------------------------------------------------------------------

/// SCT 118565006 "Volume" (CID 7469 Generic Intensity and Size Measurements).
pub const VOLUME: Code = Code::sct("118565006", "Volume");
/// DCM 112181 "Mean Attenuation Coefficient" (CID 6141): mean trabecular HU.
pub const MEAN_ATTENUATION: Code = dcm("112181", "Mean Attenuation Coefficient");
/// DCM 121207 "Height" (CID 7469): vertebral body height, qualified by
/// [`TOPOGRAPHICAL_MODIFIER`].
pub const HEIGHT: Code = dcm("121207", "Height");
/// SCT 106233006 "Topographical modifier" (TID 300 row 3 concept modifier).
pub const TOPOGRAPHICAL_MODIFIER: Code = Code::sct("106233006", "Topographical modifier");
/// SCT 255549009 "Anterior" (CID 2 Anatomic Modifier).
pub const ANTERIOR: Code = Code::sct("255549009", "Anterior");
/// NCIt C25569 "Middle" (CID 211/212; SNOMED CT has no "middle" in the DICOM modifier CIDs).
pub const MIDDLE: Code = Code {
    scheme: Cow::Borrowed("NCIt"),
    value: Cow::Borrowed("C25569"),
    meaning: Cow::Borrowed("Middle"),
};
/// SCT 255551008 "Posterior" (CID 2 Anatomic Modifier).
pub const POSTERIOR: Code = Code::sct("255551008", "Posterior");
/// Private: the largest loss of anterior, middle or posterior height relative to the expected
/// height (the quantity the Genant grade is read from). No standard concept exists.
pub const HEIGHT_LOSS_RATIO: Code = private("HLR", "Vertebral body height loss ratio");
/// Private: Genant semiquantitative grade (Genant et al., J Bone Miner Res 1993). No standard
/// concept for the grading or its grades exists in PS3.16, SNOMED CT or LOINC.
pub const GENANT_GRADE: Code = private("GENANT", "Genant semiquantitative grade");
/// Private: confidence of the vertebra's identification (its level), in [0, 1].
pub const IDENTIFICATION_CONFIDENCE: Code = private("IDCONF", "Vertebra identification confidence");
/// Private: lesion detection score (heatmap peak), in [0, 1].
pub const LESION_SCORE: Code = private("LESSCORE", "Lesion detection score");
/// Private: the lesion-head class, machine-readable (the standard finding code cannot tell
/// lytic from sclerotic metastases).
pub const LESION_CLASS: Code = private("LESCLASS", "Lesion class");

/// UCUM mm3 "cubic millimeter" (CID 7181).
pub const UNIT_MM3: Code = ucum("mm3", "cubic millimeter");
/// UCUM [hnsf'U] "Hounsfield unit" (CID 7181).
pub const UNIT_HU: Code = ucum("[hnsf'U]", "Hounsfield unit");
/// UCUM mm "millimeter" (CID 7181; pydicom's meaning is "mm").
pub const UNIT_MM: Code = ucum("mm", "millimeter");
/// UCUM {ratio} "ratio" (CID 7181).
pub const UNIT_RATIO: Code = ucum("{ratio}", "ratio");
/// UCUM 1 "no units" (CID 7181): confidences and scores.
pub const UNIT_NONE: Code = ucum("1", "no units");

/// Private code of a Genant grade value.
pub fn genant_code(grade: GenantGrade) -> Code {
    match grade {
        GenantGrade::Normal => private("GENANT0", "Genant grade 0 (normal)"),
        GenantGrade::Mild => private("GENANT1", "Genant grade 1 (mild)"),
        GenantGrade::Moderate => private("GENANT2", "Genant grade 2 (moderate)"),
        GenantGrade::Severe => private("GENANT3", "Genant grade 3 (severe)"),
    }
}

/// Private code of a lesion class value. Code Value is SH (at most 16 characters), so the
/// values are short forms: [`LesionClass::key`] would not fit for `sclerotic_metastasis` and
/// `infection_erosion` (dciodvfy: "Length invalid for this VR").
pub fn lesion_class_code(class: LesionClass) -> Code {
    let (value, meaning) = match class {
        LesionClass::Fracture => ("FRACTURE", "Vertebral compression fracture"),
        LesionClass::LyticMetastasis => ("LYTICMET", "Lytic metastasis"),
        LesionClass::ScleroticMetastasis => ("SCLEROMET", "Sclerotic metastasis"),
        LesionClass::InfectionErosion => ("INFECTEROS", "Infection/erosion"),
    };
    private(value, meaning)
}

#[cfg(test)]
mod tests {
    use vertebra_core::anatomy::ALL_LESION_CLASSES;

    use super::*;

    /// Code Value is SH: at most 16 characters (PS3.5 table 6.2-1). The lesion-class keys once
    /// used as values did not fit, and dciodvfy refused every SR with such a lesion.
    #[test]
    fn private_code_values_fit_short_string() {
        let mut codes: Vec<Code> = ALL_LESION_CLASSES
            .iter()
            .map(|&c| lesion_class_code(c))
            .collect();
        for g in [
            GenantGrade::Normal,
            GenantGrade::Mild,
            GenantGrade::Moderate,
            GenantGrade::Severe,
        ] {
            codes.push(genant_code(g));
        }
        codes.extend([
            HEIGHT_LOSS_RATIO,
            GENANT_GRADE,
            IDENTIFICATION_CONFIDENCE,
            LESION_SCORE,
            LESION_CLASS,
        ]);
        for c in &codes {
            assert!(c.value.len() <= 16, "{} is longer than 16", c.value);
        }
        let mut values: Vec<&str> = codes.iter().map(|c| c.value.as_ref()).collect();
        values.sort_unstable();
        values.dedup();
        assert_eq!(values.len(), codes.len(), "private code values are unique");
    }
}
