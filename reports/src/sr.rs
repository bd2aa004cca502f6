//! Comprehensive 3D SR following TID 1500 "Measurement Report" (PS3.16): one TID 1411
//! volumetric measurement group per vertebra (referencing its segment in our SEG) and per
//! lesion (a SCOORD3D volume surface: an ellipsoid where the lesion has a size, else its
//! centre point), a summary and a "not for diagnostic use" statement.
//!
//! Content tree (relationship, value type, concept):
//!
//! ```text
//! CONTAINER Imaging Measurement Report (TID 1500)
//!   HAS CONCEPT MOD  CODE   Language of Content Item and Descendants = en-US
//!   HAS OBS CONTEXT  CODE   Observer Type = Device                        (TID 1002)
//!   HAS OBS CONTEXT  UIDREF Device Observer UID, TEXT name/manufacturer/model/serial (TID 1004)
//!   HAS CONCEPT MOD  CODE   Procedure reported = CT unspecified body region
//!   CONTAINS CONTAINER Image Library > Image Library Group > IMAGE per source slice (TID 1600)
//!   CONTAINS CONTAINER Imaging Measurements
//!     CONTAINS CONTAINER Measurement Group (TID 1411), per vertebra:
//!       tracking identifier + UID, Finding = Vertebra, Referenced Segment (SEG, segment n),
//!       Source series for segmentation, Algorithm Name/Version (TID 4019), Finding Site =
//!       the vertebra, NUM volume / mean
//!       attenuation / heights (topographical modifier) / height-loss ratio / confidence,
//!       CODE Genant grade
//!     CONTAINS CONTAINER Measurement Group (TID 1411), per lesion:
//!       tracking identifier + UID, Finding = the lesion's SNOMED CT concept, Volume Surface
//!       (SCOORD3D ELLIPSOID or POINT) + Source series, Finding Site, NUM score, CODE class
//!   CONTAINS CONTAINER Qualitative Evaluations
//!     CONTAINS TEXT Summary, CONTAINS TEXT Comment = not for diagnostic use
//! ```

use dicom_core::value::PrimitiveValue;
use dicom_core::{DataElement, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::InMemDicomObject;
use vertebra_core::anatomy::{ALL_LESION_CLASSES, Code, VERTEBRA_UNSPECIFIED, Vertebra};
use vertebra_core::dicom_series::{ds, uid_from_key};

use crate::codes;
use crate::dataset::{DataSetExt, common_modules, item, sop_ref};
use crate::model::{
    AlgorithmInfo, AnalysisFindings, InstanceIdentity, LesionFinding, VertebraFinding,
    check_unit_interval,
};
use crate::source::SourceSeries;
use crate::{Error, Result};

/// The statement every report carries until the model is validated on clinical data.
pub const NOT_FOR_DIAGNOSTIC_USE: &str = "NOT FOR DIAGNOSTIC USE. These results were produced \
by an automated research algorithm that has not been validated on clinical data; they must not \
be used for diagnosis or treatment decisions.";

/// What the SR needs to know about the SEG it references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegReference {
    /// SOP Class UID of the SEG.
    pub sop_class_uid: String,
    /// SOP Instance UID of the SEG.
    pub sop_instance_uid: String,
    /// Series Instance UID of the SEG.
    pub series_instance_uid: String,
    /// Per segment: label ("L1"), segment number, tracking UID.
    pub segments: Vec<(String, u16, String)>,
}

impl SegReference {
    /// Reads the reference information from a SEG built by [`crate::build_seg`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `seg` is not a Segmentation or lacks segment attributes.
    pub fn from_seg(seg: &InMemDicomObject) -> Result<Self> {
        let text = |obj: &InMemDicomObject, tag| -> Result<String> {
            obj.element(tag)
                .ok()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
                .ok_or_else(|| Error::InvalidInput(format!("the SEG lacks {tag}")))
        };
        let sop_class_uid = text(seg, tags::SOP_CLASS_UID)?;
        if sop_class_uid != uids::SEGMENTATION_STORAGE {
            return Err(Error::InvalidInput(format!(
                "the referenced object is {sop_class_uid}, not a Segmentation"
            )));
        }
        let items = seg
            .element(tags::SEGMENT_SEQUENCE)
            .ok()
            .and_then(|e| e.items())
            .ok_or_else(|| Error::InvalidInput("the SEG has no Segment Sequence".into()))?;
        let segments = items
            .iter()
            .map(|i| {
                let number = i
                    .element(tags::SEGMENT_NUMBER)
                    .ok()
                    .and_then(|e| e.to_int::<u16>().ok())
                    .ok_or_else(|| Error::InvalidInput("a segment lacks its number".into()))?;
                Ok((
                    text(i, tags::SEGMENT_LABEL)?,
                    number,
                    text(i, tags::TRACKING_UID)?,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(SegReference {
            sop_class_uid,
            sop_instance_uid: text(seg, tags::SOP_INSTANCE_UID)?,
            series_instance_uid: text(seg, tags::SERIES_INSTANCE_UID)?,
            segments,
        })
    }

    fn segment(&self, v: Vertebra) -> Option<(u16, &str)> {
        self.segments
            .iter()
            .find(|(label, _, _)| label == v.name())
            .map(|(_, n, uid)| (*n, uid.as_str()))
    }
}

/// An earlier SR of the same series that a new one replaces: a re-analysis after late images
/// (or with another bundle) names the report it supersedes in its Predecessor Documents
/// Sequence (0040,A360), so a PACS or reader can tell the newer report from the older one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PredecessorRef {
    /// Study Instance UID of the earlier SR.
    pub study_instance_uid: String,
    /// Series Instance UID of the earlier SR.
    pub series_instance_uid: String,
    /// SOP Class UID of the earlier SR.
    pub sop_class_uid: String,
    /// SOP Instance UID of the earlier SR.
    pub sop_instance_uid: String,
}

impl PredecessorRef {
    /// Reads the reference from an SR (any SR storage class).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidInput`] when `sr` is not an SR document or lacks one of the UIDs.
    pub fn from_sr(sr: &InMemDicomObject) -> Result<Self> {
        let text = |tag| -> Result<String> {
            sr.element(tag)
                .ok()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::InvalidInput(format!("the earlier SR lacks {tag}")))
        };
        let modality = text(tags::MODALITY)?;
        if modality != "SR" {
            return Err(Error::InvalidInput(format!(
                "the earlier object is modality {modality}, not an SR"
            )));
        }
        Ok(Self {
            study_instance_uid: text(tags::STUDY_INSTANCE_UID)?,
            series_instance_uid: text(tags::SERIES_INSTANCE_UID)?,
            sop_class_uid: text(tags::SOP_CLASS_UID)?,
            sop_instance_uid: text(tags::SOP_INSTANCE_UID)?,
        })
    }
}

/// Names `predecessor` in the Predecessor Documents Sequence of `sr` (SR Document General
/// Module; Hierarchical SOP Instance Reference Macro), replacing any earlier entry.
///
/// # Errors
///
/// [`Error::InvalidInput`] when `predecessor` is `sr` itself.
pub fn set_predecessor(sr: &mut InMemDicomObject, predecessor: &PredecessorRef) -> Result<()> {
    let own = sr
        .element(tags::SOP_INSTANCE_UID)
        .ok()
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).to_owned());
    if own.as_deref() == Some(predecessor.sop_instance_uid.as_str()) {
        return Err(Error::InvalidInput(
            "an SR cannot be its own predecessor".into(),
        ));
    }
    sr.seq(
        tags::PREDECESSOR_DOCUMENTS_SEQUENCE,
        vec![item(|study| {
            study.str(
                tags::STUDY_INSTANCE_UID,
                VR::UI,
                &predecessor.study_instance_uid,
            );
            study.seq(
                tags::REFERENCED_SERIES_SEQUENCE,
                vec![item(|s| {
                    s.str(
                        tags::SERIES_INSTANCE_UID,
                        VR::UI,
                        &predecessor.series_instance_uid,
                    );
                    s.seq(
                        tags::REFERENCED_SOP_SEQUENCE,
                        vec![sop_ref(
                            &predecessor.sop_class_uid,
                            &predecessor.sop_instance_uid,
                        )],
                    );
                })],
            );
        })],
    );
    Ok(())
}

/// Builds the TID 1500 Comprehensive 3D SR of `findings`, referencing the vertebra segments of
/// `seg` (built from the same findings).
///
/// # Errors
///
/// [`Error::InvalidInput`] when a vertebra has no segment in `seg`, a value is not finite, a
/// confidence or score is outside [0, 1], or a lesion size is not positive.
pub fn build_sr(
    source: &SourceSeries,
    findings: &AnalysisFindings,
    algorithm: &AlgorithmInfo,
    seg: &InMemDicomObject,
    identity: &InstanceIdentity,
) -> Result<InMemDicomObject> {
    algorithm.validate()?;
    identity.validate()?;
    let seg = SegReference::from_seg(seg)?;
    check_unit_interval("numbering confidence", findings.numbering_confidence)?;
    let mut vertebrae: Vec<&VertebraFinding> = findings.vertebrae.iter().collect();
    vertebrae.sort_by_key(|v| v.vertebra);

    let mut obj = InMemDicomObject::new_empty();
    common_modules(
        &mut obj,
        uids::COMPREHENSIVE3_DSR_STORAGE,
        "SR",
        "VertebraFormer measurement report",
        source,
        algorithm,
        identity,
    );
    obj.seq(
        tags::REFERENCED_PERFORMED_PROCEDURE_STEP_SEQUENCE,
        Vec::new(),
    );
    obj.str(tags::COMPLETION_FLAG, VR::CS, "COMPLETE");
    obj.str(tags::VERIFICATION_FLAG, VR::CS, "UNVERIFIED");
    obj.seq(tags::PERFORMED_PROCEDURE_CODE_SEQUENCE, Vec::new());
    obj.seq(
        tags::CODING_SCHEME_IDENTIFICATION_SEQUENCE,
        vec![item(|i| {
            i.str(
                tags::CODING_SCHEME_DESIGNATOR,
                VR::SH,
                codes::PRIVATE_SCHEME,
            );
            i.str(tags::CODING_SCHEME_NAME, VR::ST, codes::PRIVATE_SCHEME_NAME);
            i.str(
                tags::CODING_SCHEME_RESPONSIBLE_ORGANIZATION,
                VR::ST,
                &algorithm.manufacturer,
            );
        })],
    );
    // Evidence: the source slices and the SEG.
    obj.seq(
        tags::CURRENT_REQUESTED_PROCEDURE_EVIDENCE_SEQUENCE,
        vec![item(|study| {
            study.str(tags::STUDY_INSTANCE_UID, VR::UI, &source.study_instance_uid);
            study.seq(
                tags::REFERENCED_SERIES_SEQUENCE,
                vec![
                    item(|s| {
                        s.str(
                            tags::SERIES_INSTANCE_UID,
                            VR::UI,
                            &source.series_instance_uid,
                        );
                        s.seq(
                            tags::REFERENCED_SOP_SEQUENCE,
                            source
                                .images
                                .iter()
                                .map(|i| sop_ref(&i.sop_class_uid, &i.sop_instance_uid))
                                .collect(),
                        );
                    }),
                    item(|s| {
                        s.str(tags::SERIES_INSTANCE_UID, VR::UI, &seg.series_instance_uid);
                        s.seq(
                            tags::REFERENCED_SOP_SEQUENCE,
                            vec![sop_ref(&seg.sop_class_uid, &seg.sop_instance_uid)],
                        );
                    }),
                ],
            );
        })],
    );
    // SR Document Content: the root container.
    obj.str(tags::VALUE_TYPE, VR::CS, "CONTAINER");
    obj.code_seq(
        tags::CONCEPT_NAME_CODE_SEQUENCE,
        &codes::IMAGING_MEASUREMENT_REPORT,
    );
    obj.str(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    obj.seq(
        tags::CONTENT_TEMPLATE_SEQUENCE,
        vec![item(|t| {
            t.str(tags::MAPPING_RESOURCE, VR::CS, "DCMR");
            t.str(tags::TEMPLATE_IDENTIFIER, VR::CS, "1500");
        })],
    );

    let mut root = vec![
        code(
            Rel::ConceptMod,
            &codes::LANGUAGE_OF_CONTENT,
            &codes::ENGLISH_US,
        ),
        code(Rel::ObsContext, &codes::OBSERVER_TYPE, &codes::DEVICE),
        uidref(
            Rel::ObsContext,
            &codes::DEVICE_OBSERVER_UID,
            &algorithm.device_observer_uid(),
        ),
        text(
            Rel::ObsContext,
            &codes::DEVICE_OBSERVER_NAME,
            &algorithm.bundle_name,
        ),
        text(
            Rel::ObsContext,
            &codes::DEVICE_OBSERVER_MANUFACTURER,
            &algorithm.manufacturer,
        ),
        text(
            Rel::ObsContext,
            &codes::DEVICE_OBSERVER_MODEL_NAME,
            &algorithm.device_model,
        ),
        text(
            Rel::ObsContext,
            &codes::DEVICE_OBSERVER_SERIAL_NUMBER,
            &algorithm.device_serial,
        ),
        code(
            Rel::ConceptMod,
            &codes::PROCEDURE_REPORTED,
            &codes::CT_UNSPECIFIED_BODY_REGION,
        ),
    ];
    let library_entries = source
        .images
        .iter()
        .map(|i| {
            let mut e = content(Some(Rel::Contains), "IMAGE", None);
            e.seq(
                tags::REFERENCED_SOP_SEQUENCE,
                vec![sop_ref(&i.sop_class_uid, &i.sop_instance_uid)],
            );
            e
        })
        .collect();
    root.push(container(
        Rel::Contains,
        &codes::IMAGE_LIBRARY,
        vec![container(
            Rel::Contains,
            &codes::IMAGE_LIBRARY_GROUP,
            library_entries,
        )],
    ));
    let mut groups = Vec::new();
    for v in &vertebrae {
        groups.push(vertebra_group(v, &seg, source, algorithm)?);
    }
    for (i, l) in findings.lesions.iter().enumerate() {
        groups.push(lesion_group(i, l, source, algorithm, identity)?);
    }
    root.push(container(
        Rel::Contains,
        &codes::IMAGING_MEASUREMENTS,
        groups,
    ));
    root.push(container(
        Rel::Contains,
        &codes::QUALITATIVE_EVALUATIONS,
        vec![
            text(
                Rel::Contains,
                &codes::SUMMARY,
                &summary(findings, &vertebrae),
            ),
            text(Rel::Contains, &codes::COMMENT, NOT_FOR_DIAGNOSTIC_USE),
        ],
    ));
    obj.seq(tags::CONTENT_SEQUENCE, root);
    Ok(obj)
}

/// The plain-text summary: vertebrae found, numbering confidence, lesions per class.
fn summary(findings: &AnalysisFindings, vertebrae: &[&VertebraFinding]) -> String {
    let range = match (vertebrae.first(), vertebrae.last()) {
        (Some(a), Some(b)) => format!(" ({}-{})", a.vertebra.name(), b.vertebra.name()),
        _ => String::new(),
    };
    let lesions: Vec<String> = ALL_LESION_CLASSES
        .iter()
        .map(|&c| {
            let n = findings.lesions.iter().filter(|l| l.class == c).count();
            format!("{} {n}", codes::lesion_class_code(c).meaning.to_lowercase())
        })
        .collect();
    format!(
        "Vertebrae found: {}{range}. Numbering confidence: {}. Lesions: {}.",
        vertebrae.len(),
        ds((findings.numbering_confidence * 1000.0).round() / 1000.0),
        lesions.join(", ")
    )
}

/// TID 4019 Algorithm Identification: the model bundle that produced a group's values.
fn algorithm_identification(algorithm: &AlgorithmInfo) -> [InMemDicomObject; 2] {
    [
        text(
            Rel::ConceptMod,
            &codes::ALGORITHM_NAME,
            &algorithm.bundle_name,
        ),
        text(
            Rel::ConceptMod,
            &codes::ALGORITHM_VERSION,
            &algorithm.bundle_version,
        ),
    ]
}

fn vertebra_group(
    v: &VertebraFinding,
    seg: &SegReference,
    source: &SourceSeries,
    algorithm: &AlgorithmInfo,
) -> Result<InMemDicomObject> {
    let name = v.vertebra.name();
    let (segment, tracking_uid) = seg.segment(v.vertebra).ok_or_else(|| {
        Error::InvalidInput(format!("the SEG has no segment for vertebra {name}"))
    })?;
    check_unit_interval(&format!("{name} confidence"), v.confidence)?;
    let mut items = vec![
        text(
            Rel::ObsContext,
            &codes::TRACKING_IDENTIFIER,
            &format!("Vertebra {name}"),
        ),
        uidref(Rel::ObsContext, &codes::TRACKING_UID, tracking_uid),
        code(Rel::Contains, &codes::FINDING, &VERTEBRA_UNSPECIFIED),
    ];
    let mut segment_ref = content(
        Some(Rel::Contains),
        "IMAGE",
        Some(&codes::REFERENCED_SEGMENT),
    );
    let mut reference = sop_ref(&seg.sop_class_uid, &seg.sop_instance_uid);
    reference.us(tags::REFERENCED_SEGMENT_NUMBER, &[segment]);
    segment_ref.seq(tags::REFERENCED_SOP_SEQUENCE, vec![reference]);
    items.push(segment_ref);
    items.push(uidref(
        Rel::Contains,
        &codes::SOURCE_SERIES_FOR_SEGMENTATION,
        &source.series_instance_uid,
    ));
    items.extend(algorithm_identification(algorithm));
    items.push(code(
        Rel::ConceptMod,
        &codes::FINDING_SITE,
        &v.vertebra.snomed(),
    ));
    items.push(num(&codes::VOLUME, v.volume_mm3, &codes::UNIT_MM3, name)?);
    if let Some(hu) = v.mean_trabecular_hu {
        items.push(num(&codes::MEAN_ATTENUATION, hu, &codes::UNIT_HU, name)?);
    }
    if let Some(h) = &v.heights_mm {
        for (value, position) in [
            (h.anterior_mm, &codes::ANTERIOR),
            (h.middle_mm, &codes::MIDDLE),
            (h.posterior_mm, &codes::POSTERIOR),
        ] {
            let mut height = num(&codes::HEIGHT, value, &codes::UNIT_MM, name)?;
            height.seq(
                tags::CONTENT_SEQUENCE,
                vec![code(
                    Rel::ConceptMod,
                    &codes::TOPOGRAPHICAL_MODIFIER,
                    position,
                )],
            );
            items.push(height);
        }
        check_unit_interval(&format!("{name} height-loss ratio"), h.height_loss_ratio)?;
        items.push(num(
            &codes::HEIGHT_LOSS_RATIO,
            h.height_loss_ratio,
            &codes::UNIT_RATIO,
            name,
        )?);
    }
    items.push(num(
        &codes::IDENTIFICATION_CONFIDENCE,
        v.confidence,
        &codes::UNIT_NONE,
        name,
    )?);
    if let Some(g) = v.genant {
        items.push(code(
            Rel::Contains,
            &codes::GENANT_GRADE,
            &codes::genant_code(g),
        ));
    }
    Ok(container(Rel::Contains, &codes::MEASUREMENT_GROUP, items))
}

fn lesion_group(
    index: usize,
    l: &LesionFinding,
    source: &SourceSeries,
    algorithm: &AlgorithmInfo,
    identity: &InstanceIdentity,
) -> Result<InMemDicomObject> {
    let what = format!("lesion {}", index + 1);
    check_unit_interval(&format!("{what} score"), l.score)?;
    if l.centre_lps.iter().any(|c| !c.is_finite()) {
        return Err(Error::InvalidInput(format!("{what} centre is not finite")));
    }
    let tracking_uid = uid_from_key(&format!(
        "vertebra-reports/v1/tracking/{}/lesion/{index}",
        identity.sop_instance_uid
    ));
    let (graphic_type, points) = match l.size_mm {
        Some(size) => {
            if size.iter().any(|s| !(s.is_finite() && *s > 0.0)) {
                return Err(Error::InvalidInput(format!(
                    "{what} size {size:?} must be positive"
                )));
            }
            ("ELLIPSOID", ellipsoid_points(l.centre_lps, size))
        }
        None => ("POINT", l.centre_lps.to_vec()),
    };
    let mut surface = content(
        Some(Rel::Contains),
        "SCOORD3D",
        Some(&codes::VOLUME_SURFACE),
    );
    surface.str(
        tags::REFERENCED_FRAME_OF_REFERENCE_UID,
        VR::UI,
        &source.frame_of_reference_uid,
    );
    surface.str(tags::GRAPHIC_TYPE, VR::CS, graphic_type);
    surface.put(DataElement::new(
        tags::GRAPHIC_DATA,
        VR::FL,
        PrimitiveValue::F32(points.iter().map(|&p| p as f32).collect()),
    ));
    let mut items = vec![
        text(
            Rel::ObsContext,
            &codes::TRACKING_IDENTIFIER,
            &format!(
                "Lesion {} ({}, {})",
                index + 1,
                l.class.key(),
                l.vertebra.map_or("unassigned", Vertebra::name)
            ),
        ),
        uidref(Rel::ObsContext, &codes::TRACKING_UID, &tracking_uid),
        code(Rel::Contains, &codes::FINDING, &l.class.snomed()),
        surface,
        uidref(
            Rel::Contains,
            &codes::SOURCE_SERIES_FOR_SEGMENTATION,
            &source.series_instance_uid,
        ),
    ];
    items.extend(algorithm_identification(algorithm));
    // TID 1411's Finding Site is optional: a lesion not assigned to a vertebra has none.
    if let Some(v) = l.vertebra {
        items.push(code(Rel::ConceptMod, &codes::FINDING_SITE, &v.snomed()));
    }
    items.extend([
        num(&codes::LESION_SCORE, l.score, &codes::UNIT_NONE, &what)?,
        code(
            Rel::Contains,
            &codes::LESION_CLASS,
            &codes::lesion_class_code(l.class),
        ),
    ]);
    Ok(container(Rel::Contains, &codes::MEASUREMENT_GROUP, items))
}

/// The six end points of an axis-aligned ellipsoid's axes (PS3.3 C.18.9.1.2: major axis
/// first, then minor, then the third), LPS mm.
fn ellipsoid_points(c: [f64; 3], size: [f64; 3]) -> Vec<f64> {
    let mut axes = [0usize, 1, 2];
    axes.sort_by(|&a, &b| size[b].total_cmp(&size[a]));
    let mut pts = Vec::with_capacity(18);
    for a in axes {
        for sign in [-1.0, 1.0] {
            let mut p = c;
            p[a] += sign * size[a] / 2.0;
            pts.extend_from_slice(&p);
        }
    }
    pts
}

/// Relationship Type of a content item.
#[derive(Clone, Copy)]
enum Rel {
    Contains,
    ConceptMod,
    ObsContext,
}

impl Rel {
    fn as_str(self) -> &'static str {
        match self {
            Rel::Contains => "CONTAINS",
            Rel::ConceptMod => "HAS CONCEPT MOD",
            Rel::ObsContext => "HAS OBS CONTEXT",
        }
    }
}

fn content(rel: Option<Rel>, value_type: &str, name: Option<&Code>) -> InMemDicomObject {
    item(|i| {
        if let Some(rel) = rel {
            i.str(tags::RELATIONSHIP_TYPE, VR::CS, rel.as_str());
        }
        i.str(tags::VALUE_TYPE, VR::CS, value_type);
        if let Some(name) = name {
            i.code_seq(tags::CONCEPT_NAME_CODE_SEQUENCE, name);
        }
    })
}

fn container(rel: Rel, name: &Code, children: Vec<InMemDicomObject>) -> InMemDicomObject {
    let mut c = content(Some(rel), "CONTAINER", Some(name));
    c.str(tags::CONTINUITY_OF_CONTENT, VR::CS, "SEPARATE");
    c.seq(tags::CONTENT_SEQUENCE, children);
    c
}

fn code(rel: Rel, name: &Code, value: &Code) -> InMemDicomObject {
    let mut c = content(Some(rel), "CODE", Some(name));
    c.code_seq(tags::CONCEPT_CODE_SEQUENCE, value);
    c
}

fn text(rel: Rel, name: &Code, value: &str) -> InMemDicomObject {
    let mut c = content(Some(rel), "TEXT", Some(name));
    c.str(tags::TEXT_VALUE, VR::UT, value);
    c
}

fn uidref(rel: Rel, name: &Code, value: &str) -> InMemDicomObject {
    let mut c = content(Some(rel), "UIDREF", Some(name));
    c.str(tags::UID, VR::UI, value);
    c
}

fn num(name: &Code, value: f64, unit: &Code, what: &str) -> Result<InMemDicomObject> {
    if !value.is_finite() {
        return Err(Error::InvalidInput(format!(
            "{what}: {} is {value}, not a finite number",
            name.meaning
        )));
    }
    let mut c = content(Some(Rel::Contains), "NUM", Some(name));
    c.seq(
        tags::MEASURED_VALUE_SEQUENCE,
        vec![item(|m| {
            m.ds(tags::NUMERIC_VALUE, &[value]);
            m.code_seq(tags::MEASUREMENT_UNITS_CODE_SEQUENCE, unit);
        })],
    );
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ellipsoid_axes_are_ordered_major_first() {
        let p = ellipsoid_points([0.0, 0.0, 0.0], [4.0, 10.0, 6.0]);
        assert_eq!(p.len(), 18);
        // Major axis along P (y): (0, -5, 0) and (0, 5, 0).
        assert_eq!(&p[0..6], &[0.0, -5.0, 0.0, 0.0, 5.0, 0.0]);
        // Then S (z, 6 mm), then L (x, 4 mm).
        assert_eq!(&p[6..12], &[0.0, 0.0, -3.0, 0.0, 0.0, 3.0]);
        assert_eq!(&p[12..18], &[-2.0, 0.0, 0.0, 2.0, 0.0, 0.0]);
    }

    fn doc(modality: &str, sop: &str) -> InMemDicomObject {
        let mut o = InMemDicomObject::new_empty();
        o.str(tags::MODALITY, VR::CS, modality);
        o.str(tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3");
        o.str(tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4");
        o.str(
            tags::SOP_CLASS_UID,
            VR::UI,
            uids::COMPREHENSIVE3_DSR_STORAGE,
        );
        o.str(tags::SOP_INSTANCE_UID, VR::UI, sop);
        o
    }

    #[test]
    fn the_predecessor_is_referenced_hierarchically_and_never_itself() {
        let old = PredecessorRef::from_sr(&doc("SR", "1.2.3.4.5")).unwrap();
        assert_eq!(old.series_instance_uid, "1.2.3.4");
        assert!(PredecessorRef::from_sr(&doc("SEG", "1.2.3.4.5")).is_err());
        let mut new = doc("SR", "1.2.3.4.6");
        set_predecessor(&mut new, &old).unwrap();
        let study = &new
            .element(tags::PREDECESSOR_DOCUMENTS_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(
            study
                .element(tags::STUDY_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap(),
            "1.2.3"
        );
        let series = &study
            .element(tags::REFERENCED_SERIES_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(
            series
                .element(tags::SERIES_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap(),
            "1.2.3.4"
        );
        let sop = &series
            .element(tags::REFERENCED_SOP_SEQUENCE)
            .unwrap()
            .items()
            .unwrap()[0];
        assert_eq!(
            sop.element(tags::REFERENCED_SOP_INSTANCE_UID)
                .unwrap()
                .to_str()
                .unwrap(),
            "1.2.3.4.5"
        );
        let mut same = doc("SR", "1.2.3.4.5");
        assert!(set_predecessor(&mut same, &old).is_err());
    }
}
