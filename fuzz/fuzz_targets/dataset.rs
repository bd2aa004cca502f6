//! Fuzz target: the data set of a received object, as vertebrad handles it after the last
//! fragment — our Part 10 header in front of the peer's bytes, read back by C-STORE ingest
//! (`InstanceHeader::read`: length check, then the header) — and, for what ingest accepts,
//! as the series loader later opens the same spooled file: the header up to Pixel Data, the
//! attributes it interprets (values, sequences of the enhanced multi-frame functional
//! groups), and the whole object. With libFuzzer's RSS limit this also catches a parse that
//! allocates far more than the input's size.
//!
//! The first input byte picks the presentation context's transfer syntax among those the
//! node negotiates (`transfer_syntax_by_index`, so deflated data sets are fuzzed too); the
//! rest is the data set.

#![no_main]

use dicom_dictionary_std::tags;
use dicom_object::file::ReadPreamble;
use dicom_object::{InMemDicomObject, OpenFileOptions};
use libfuzzer_sys::fuzz_target;
use vertebra_dicom_wire::ingest::{FileMeta, InstanceHeader, part10_header};
use vertebra_dicom_wire::transfer_syntax_by_index;

/// Attributes the series loader interprets (appliance/src/series/header.rs).
const LOADER_TAGS: [dicom_object::Tag; 22] = [
    tags::SOP_CLASS_UID,
    tags::MODALITY,
    tags::ROWS,
    tags::COLUMNS,
    tags::BITS_ALLOCATED,
    tags::BITS_STORED,
    tags::HIGH_BIT,
    tags::PIXEL_REPRESENTATION,
    tags::SAMPLES_PER_PIXEL,
    tags::PHOTOMETRIC_INTERPRETATION,
    tags::NUMBER_OF_FRAMES,
    tags::IMAGE_POSITION_PATIENT,
    tags::IMAGE_ORIENTATION_PATIENT,
    tags::PIXEL_SPACING,
    tags::SLICE_THICKNESS,
    tags::RESCALE_INTERCEPT,
    tags::RESCALE_SLOPE,
    tags::INSTANCE_NUMBER,
    tags::SERIES_INSTANCE_UID,
    tags::STUDY_INSTANCE_UID,
    tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE,
    tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE,
];

fuzz_target!(|data: &[u8]| {
    let Some((&pick, data_set)) = data.split_first() else {
        return;
    };
    let meta = FileMeta {
        sop_class_uid: "1.2.840.10008.5.1.4.1.1.2",
        sop_instance_uid: "2.25.1",
        transfer_syntax: transfer_syntax_by_index(pick),
        implementation_class_uid: "2.25.302275441386437935402418135592834436146",
        implementation_version_name: "VERTEBRAD_010",
        source_ae_title: "FUZZ",
    };
    let mut file = part10_header(&meta).expect("our own file meta encodes");
    file.extend_from_slice(data_set);

    let Ok(h) = InstanceHeader::read(std::io::Cursor::new(&file[..])) else {
        // Ingest quarantines it: the loader never sees it.
        return;
    };
    assert!(!h.study_uid.is_empty() && h.study_uid.len() <= 64);
    assert!(!h.series_uid.is_empty() && h.series_uid.len() <= 64);
    assert!(!h.sop_instance_uid.is_empty() && h.sop_instance_uid.len() <= 64);
    if let Ok(obj) = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .read_until(tags::PIXEL_DATA)
        .from_reader(&file[..])
    {
        interpret(&obj, 0);
    }
    if let Ok(obj) = OpenFileOptions::new()
        .read_preamble(ReadPreamble::Always)
        .from_reader(&file[..])
    {
        if let Ok(Some(pixels)) = obj.element_opt(tags::PIXEL_DATA) {
            let _ = pixels.fragments().map(<[_]>::len);
            let _ = pixels.to_bytes().map(|b| b.len());
        }
    }
});

/// Reads the loader's attributes the ways the loader does, descending into functional-group
/// sequence items (depth-limited like real objects are).
fn interpret(obj: &InMemDicomObject, depth: u32) {
    for tag in LOADER_TAGS {
        let Ok(Some(e)) = obj.element_opt(tag) else {
            continue;
        };
        let _ = e.to_str();
        let _ = e.to_int::<u16>();
        let _ = e.to_int::<i64>();
        let _ = e.to_float64();
        let _ = e.to_multi_float64();
        if depth < 3 {
            if let Some(items) = e.items() {
                for item in items.iter().take(64) {
                    interpret(item, depth + 1);
                }
            }
        }
    }
}
