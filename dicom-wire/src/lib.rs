//! The DICOM bytes vertebrad reads from peers it does not trust, decoded with every length
//! checked against the bytes actually there.
//!
//! - [`pdu`]: PDU framing on a byte stream (association PDUs through dicom-ul's codec,
//!   P-DATA-TF split into PDVs in place) and the PDUs we write.
//! - [`command`]: DIMSE command sets, decoded and encoded.
//! - [`ingest`]: the Part 10 header vertebrad puts in front of a received data set, and what
//!   C-STORE ingest reads back from it (UIDs, modality, the patient/study fields the console
//!   shows).
//! - [`lengths`]: every element length checked against the bytes present before dicom-rs
//!   (which allocates what a length claims) reads a received file.
//!
//! This crate is *not* the DICOM node: association decisions, limits, the spool, durability
//! and the store live in vertebrad's `dicom` module, which uses this crate. It exists as its
//! own crate so that the fuzz targets in `fuzz/` can build exactly the code a peer's bytes
//! meet first — with coverage instrumentation — without compiling the daemon's database, web
//! and inference dependencies.

pub mod command;
pub mod ingest;
pub mod lengths;
pub mod pdu;

/// Transfer syntaxes we accept, in our order of preference: compressed lossless first (fewer
/// bytes on the wire, and what the modality holds is kept bit for bit), then uncompressed, then
/// lossy (only ever chosen when the sender offers nothing better for that object). Objects are
/// stored as received; decoding happens at processing time.
pub const TRANSFER_SYNTAXES: &[(&str, &str)] = &[
    (
        "1.2.840.10008.1.2.4.90",
        "JPEG 2000 Image Compression (Lossless Only)",
    ),
    (
        "1.2.840.10008.1.2.4.80",
        "JPEG-LS Lossless Image Compression",
    ),
    (
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, First-Order Prediction (SV1)",
    ),
    ("1.2.840.10008.1.2.5", "RLE Lossless"),
    (
        "1.2.840.10008.1.2.1.99",
        "Deflated Explicit VR Little Endian",
    ),
    ("1.2.840.10008.1.2.1", "Explicit VR Little Endian"),
    ("1.2.840.10008.1.2", "Implicit VR Little Endian"),
    ("1.2.840.10008.1.2.4.91", "JPEG 2000 Image Compression"),
    (
        "1.2.840.10008.1.2.4.81",
        "JPEG-LS Lossy (Near-Lossless) Image Compression",
    ),
    ("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)"),
];

/// The accepted transfer syntax UIDs in UID order, indexed modulo their number: a stable
/// pick for the `dataset` fuzz target and its regression tests, whose first input byte
/// chooses the presentation context's transfer syntax (0 Implicit VR LE, 1 Explicit VR LE,
/// 2 Deflated, 9 RLE Lossless).
pub fn transfer_syntax_by_index(i: u8) -> &'static str {
    let mut uids: Vec<&'static str> = TRANSFER_SYNTAXES.iter().map(|t| t.0).collect();
    uids.sort_unstable();
    uids[usize::from(i) % uids.len()]
}
