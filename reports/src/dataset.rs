//! Small helpers to build data sets: typed element setters, code sequence items, and the
//! modules every output object shares (patient/study copy, equipment, SOP common).

use dicom_core::value::{DataSetSequence, PrimitiveValue};
use dicom_core::{DataElement, Length, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use vertebra_core::anatomy::Code;
use vertebra_core::dicom_series::ds;

use crate::model::{AlgorithmInfo, InstanceIdentity};
use crate::source::SourceSeries;

/// Builder methods on a data set, so that module code reads like the standard's tables.
pub(crate) trait DataSetExt {
    /// A string attribute of any text VR (empty string writes an empty element).
    fn str(&mut self, tag: Tag, vr: VR, value: &str);
    /// A multi-valued string attribute.
    fn strs(&mut self, tag: Tag, vr: VR, values: &[&str]);
    /// A DS attribute from numbers.
    fn ds(&mut self, tag: Tag, values: &[f64]);
    /// A US attribute.
    fn us(&mut self, tag: Tag, values: &[u16]);
    /// A sequence attribute.
    fn seq(&mut self, tag: Tag, items: Vec<InMemDicomObject>);
    /// A one-item code sequence.
    fn code_seq(&mut self, tag: Tag, code: &Code);
}

impl DataSetExt for InMemDicomObject {
    fn str(&mut self, tag: Tag, vr: VR, value: &str) {
        let v = if value.is_empty() {
            PrimitiveValue::Empty
        } else {
            PrimitiveValue::from(value)
        };
        self.put(DataElement::new(tag, vr, v));
    }

    fn strs(&mut self, tag: Tag, vr: VR, values: &[&str]) {
        let v = PrimitiveValue::Strs(values.iter().map(|s| (*s).to_owned()).collect());
        self.put(DataElement::new(tag, vr, v));
    }

    fn ds(&mut self, tag: Tag, values: &[f64]) {
        let v = PrimitiveValue::Strs(values.iter().map(|&x| ds(x)).collect());
        self.put(DataElement::new(tag, VR::DS, v));
    }

    fn us(&mut self, tag: Tag, values: &[u16]) {
        self.put(DataElement::new(
            tag,
            VR::US,
            PrimitiveValue::U16(values.iter().copied().collect()),
        ));
    }

    fn seq(&mut self, tag: Tag, items: Vec<InMemDicomObject>) {
        self.put(DataElement::new(
            tag,
            VR::SQ,
            DataSetSequence::new(items, Length::UNDEFINED),
        ));
    }

    fn code_seq(&mut self, tag: Tag, code: &Code) {
        self.seq(tag, vec![code_item(code)]);
    }
}

/// A code sequence item: Code Value, Coding Scheme Designator, Code Meaning.
pub(crate) fn code_item(code: &Code) -> InMemDicomObject {
    let mut item = InMemDicomObject::new_empty();
    item.str(tags::CODE_VALUE, VR::SH, &code.value);
    item.str(tags::CODING_SCHEME_DESIGNATOR, VR::SH, &code.scheme);
    item.str(tags::CODE_MEANING, VR::LO, &code.meaning);
    item
}

/// An item with one attribute set by `f`.
pub(crate) fn item(f: impl FnOnce(&mut InMemDicomObject)) -> InMemDicomObject {
    let mut obj = InMemDicomObject::new_empty();
    f(&mut obj);
    obj
}

/// Reference to an instance: Referenced SOP Class UID and Referenced SOP Instance UID.
pub(crate) fn sop_ref(class_uid: &str, instance_uid: &str) -> InMemDicomObject {
    item(|i| {
        i.str(tags::REFERENCED_SOP_CLASS_UID, VR::UI, class_uid);
        i.str(tags::REFERENCED_SOP_INSTANCE_UID, VR::UI, instance_uid);
    })
}

/// Modules every output shares: SOP Common, Patient, General Study (copied), the output's
/// series identity, General and Enhanced General Equipment.
pub(crate) fn common_modules(
    obj: &mut InMemDicomObject,
    sop_class_uid: &str,
    modality: &str,
    series_description: &str,
    source: &SourceSeries,
    algorithm: &AlgorithmInfo,
    id: &InstanceIdentity,
) {
    // SOP Common.
    obj.str(tags::SOP_CLASS_UID, VR::UI, sop_class_uid);
    obj.str(tags::SOP_INSTANCE_UID, VR::UI, &id.sop_instance_uid);
    obj.str(tags::INSTANCE_CREATION_DATE, VR::DA, &id.content_date);
    obj.str(tags::INSTANCE_CREATION_TIME, VR::TM, &id.content_time);
    // Patient, General Study, Patient Study: verbatim from the source.
    source.patient_study.write_into(obj);
    obj.str(tags::STUDY_INSTANCE_UID, VR::UI, &source.study_instance_uid);
    // Series.
    obj.str(tags::MODALITY, VR::CS, modality);
    obj.str(tags::SERIES_INSTANCE_UID, VR::UI, &id.series_instance_uid);
    obj.str(tags::SERIES_NUMBER, VR::IS, &id.series_number.to_string());
    obj.str(tags::SERIES_DATE, VR::DA, &id.content_date);
    obj.str(tags::SERIES_TIME, VR::TM, &id.content_time);
    obj.str(tags::SERIES_DESCRIPTION, VR::LO, series_description);
    // General and Enhanced General Equipment.
    obj.str(tags::MANUFACTURER, VR::LO, &algorithm.manufacturer);
    obj.str(
        tags::MANUFACTURER_MODEL_NAME,
        VR::LO,
        &algorithm.device_model,
    );
    obj.str(tags::DEVICE_SERIAL_NUMBER, VR::LO, &algorithm.device_serial);
    obj.strs(
        tags::SOFTWARE_VERSIONS,
        VR::LO,
        &[&algorithm.software_version, &algorithm.bundle_version],
    );
    // Instance identity and content time (General Image / SR Document General).
    obj.str(
        tags::INSTANCE_NUMBER,
        VR::IS,
        &id.instance_number.to_string(),
    );
    obj.str(tags::CONTENT_DATE, VR::DA, &id.content_date);
    obj.str(tags::CONTENT_TIME, VR::TM, &id.content_time);
}
