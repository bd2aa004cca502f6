//! A received object's header: the file meta vertebrad writes in front of the data set a peer
//! sends, and what C-STORE ingest reads back once the last fragment is on disk.
//!
//! The data set bytes are the peer's, untouched (stored as received, in the negotiated
//! transfer syntax); the file meta is ours, built from the command's UIDs. [`InstanceHeader`]
//! first checks every element length against the bytes present ([`crate::lengths`]), then
//! reads the header up to Pixel Data only, so its memory does not depend on the size of the
//! image, and refuses objects whose identifying UIDs are missing or oversized.

use std::io::{Read, Seek, SeekFrom};

use dicom_dictionary_std::tags;
use dicom_object::OpenFileOptions;
use dicom_object::file::ReadPreamble;
use dicom_object::meta::FileMetaTableBuilder;

/// The values of the file meta information (PS3.10 §7.1) of a received object.
#[derive(Clone, Copy, Debug)]
pub struct FileMeta<'a> {
    /// Media Storage SOP Class UID: the command's Affected SOP Class UID.
    pub sop_class_uid: &'a str,
    /// Media Storage SOP Instance UID: the command's Affected SOP Instance UID.
    pub sop_instance_uid: &'a str,
    /// The presentation context's transfer syntax (the data set's encoding).
    pub transfer_syntax: &'a str,
    /// Our Implementation Class UID.
    pub implementation_class_uid: &'a str,
    /// Our Implementation Version Name.
    pub implementation_version_name: &'a str,
    /// The sender's AE title.
    pub source_ae_title: &'a str,
}

/// The 128-byte preamble, "DICM" and the file meta group for `meta`: what goes in front of a
/// received data set to make it a Part 10 file.
///
/// # Errors
/// A message when a value cannot be encoded (e.g. a UID the builder refuses).
pub fn part10_header(meta: &FileMeta<'_>) -> Result<Vec<u8>, String> {
    let table = FileMetaTableBuilder::new()
        .media_storage_sop_class_uid(meta.sop_class_uid)
        .media_storage_sop_instance_uid(meta.sop_instance_uid)
        .transfer_syntax(meta.transfer_syntax)
        .implementation_class_uid(meta.implementation_class_uid)
        .implementation_version_name(meta.implementation_version_name)
        .source_application_entity_title(meta.source_ae_title)
        .build()
        .map_err(|e| e.to_string())?;
    let mut header = vec![0_u8; 128];
    header.extend_from_slice(b"DICM");
    table.write(&mut header).map_err(|e| e.to_string())?;
    Ok(header)
}

/// Longest UID the standard allows (PS3.5 §9.1).
pub const MAX_UID_LEN: usize = 64;

/// What ingest needs from a received object's own header. Text values are trimmed of their
/// padding; empty values are `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceHeader {
    /// Study Instance UID (0020,000D).
    pub study_uid: String,
    /// Series Instance UID (0020,000E).
    pub series_uid: String,
    /// SOP Instance UID (0008,0018).
    pub sop_instance_uid: String,
    /// SOP Class UID (0008,0016); some anonymisers blank it.
    pub sop_class_uid: Option<String>,
    /// Modality (0008,0060).
    pub modality: Option<String>,
    /// Patient's Name (0010,0010), for the console only (never logged).
    pub patient_name: Option<String>,
    /// Patient ID (0010,0020), for the console only (never logged).
    pub patient_id: Option<String>,
    /// Study Date (0008,0020).
    pub study_date: Option<String>,
}

impl InstanceHeader {
    /// Reads the header (everything before Pixel Data) of a Part 10 file as vertebrad spools
    /// it: preamble, file meta, data set — after [`crate::lengths::check_part10`] passed on
    /// the whole file.
    ///
    /// # Errors
    /// A reason fit for a DIMSE Error Comment when a length lies, the bytes do not parse, or
    /// the Study, Series or SOP Instance UID is missing or longer than [`MAX_UID_LEN`].
    pub fn read<R: Read + Seek>(mut part10: R) -> Result<Self, &'static str> {
        crate::lengths::check_part10(&mut part10)?;
        part10
            .seek(SeekFrom::Start(0))
            .map_err(|_| "file cannot be read")?;
        let obj = OpenFileOptions::new()
            .read_preamble(ReadPreamble::Always)
            .read_until(tags::PIXEL_DATA)
            .from_reader(part10)
            .map_err(|_| "data set cannot be parsed")?;
        let get = |tag| {
            obj.element_opt(tag)
                .ok()
                .flatten()
                .and_then(|e| e.to_str().ok())
                .map(|s| s.trim_end_matches(['\0', ' ']).to_owned())
                .filter(|s| !s.is_empty())
        };
        let study_uid = get(tags::STUDY_INSTANCE_UID).ok_or("no Study Instance UID")?;
        let series_uid = get(tags::SERIES_INSTANCE_UID).ok_or("no Series Instance UID")?;
        let sop_instance_uid = get(tags::SOP_INSTANCE_UID).ok_or("no SOP Instance UID")?;
        for uid in [&study_uid, &series_uid, &sop_instance_uid] {
            if uid.len() > MAX_UID_LEN {
                return Err("UID longer than 64 characters");
            }
        }
        Ok(Self {
            study_uid,
            series_uid,
            sop_instance_uid,
            sop_class_uid: get(tags::SOP_CLASS_UID),
            modality: get(tags::MODALITY),
            patient_name: get(tags::PATIENT_NAME),
            patient_id: get(tags::PATIENT_ID),
            study_date: get(tags::STUDY_DATE),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
    const EXPLICIT_LE: &str = "1.2.840.10008.1.2.1";

    fn meta(instance: &str) -> FileMeta<'_> {
        FileMeta {
            sop_class_uid: CT,
            sop_instance_uid: instance,
            transfer_syntax: EXPLICIT_LE,
            implementation_class_uid: "1.2.3.4",
            implementation_version_name: "TEST",
            source_ae_title: "CT1",
        }
    }

    /// Explicit VR LE element with a short (2-byte) length.
    fn element(out: &mut Vec<u8>, group: u16, elem: u16, vr: [u8; 2], value: &[u8]) {
        out.extend_from_slice(&group.to_le_bytes());
        out.extend_from_slice(&elem.to_le_bytes());
        out.extend_from_slice(&vr);
        out.extend_from_slice(&(value.len() as u16).to_le_bytes());
        out.extend_from_slice(value);
    }

    fn data_set(study: &[u8], series: &[u8], instance: &[u8]) -> Vec<u8> {
        let mut ds = Vec::new();
        element(
            &mut ds,
            0x0008,
            0x0016,
            *b"UI",
            b"1.2.840.10008.5.1.4.1.1.2\0",
        );
        element(&mut ds, 0x0008, 0x0018, *b"UI", instance);
        element(&mut ds, 0x0008, 0x0060, *b"CS", b"CT");
        element(&mut ds, 0x0010, 0x0010, *b"PN", b"DOE^JANE");
        element(&mut ds, 0x0020, 0x000D, *b"UI", study);
        element(&mut ds, 0x0020, 0x000E, *b"UI", series);
        ds
    }

    #[test]
    fn reads_the_uids_back_from_a_spooled_object() {
        let mut file = part10_header(&meta("1.2.3.4.5")).unwrap();
        assert_eq!(&file[128..132], b"DICM");
        file.extend(data_set(b"1.2.3\0", b"1.2.3.4\0", b"1.2.3.4.5\0"));
        let h = InstanceHeader::read(std::io::Cursor::new(&file[..])).unwrap();
        assert_eq!(
            h,
            InstanceHeader {
                study_uid: "1.2.3".into(),
                series_uid: "1.2.3.4".into(),
                sop_instance_uid: "1.2.3.4.5".into(),
                sop_class_uid: Some(CT.into()),
                modality: Some("CT".into()),
                patient_name: Some("DOE^JANE".into()),
                patient_id: None,
                study_date: None,
            }
        );
    }

    #[test]
    fn refuses_missing_and_oversized_uids_and_garbage() {
        let head = part10_header(&meta("1.2.3.4.5")).unwrap();
        let mut no_study = head.clone();
        no_study.extend(data_set(b"", b"1.2.3.4\0", b"1.2.3.4.5\0"));
        assert_eq!(
            InstanceHeader::read(std::io::Cursor::new(&no_study[..])),
            Err("no Study Instance UID")
        );
        let mut long = head.clone();
        let uid = vec![b'1'; 66];
        long.extend(data_set(b"1.2.3\0", &uid, b"1.2.3.4.5\0"));
        assert_eq!(
            InstanceHeader::read(std::io::Cursor::new(&long[..])),
            Err("UID longer than 64 characters")
        );
        let mut garbage = head;
        garbage.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        assert!(InstanceHeader::read(std::io::Cursor::new(&garbage[..])).is_err());
    }
}
