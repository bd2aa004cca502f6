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
