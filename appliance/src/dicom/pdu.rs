//! PDU framing on a byte stream: read one PDU with every length checked before memory is
//! committed, write the PDUs we send.
//!
//! The code lives in the small `vertebra-dicom-wire` crate (what a peer's bytes meet first
//! is fuzzed there, see `fuzz/`, without building the whole daemon); this module re-exports
//! it so the association, the SCU and the tests name it `dicom::pdu`.

pub use vertebra_dicom_wire::pdu::{
    Frame, MAX_CONTROL_PDU, MAX_SENT_PDV, PduError, PduReader, Pdv, abort, write_command,
    write_control, write_data,
};
