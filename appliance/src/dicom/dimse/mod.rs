//! Our DIMSE layer: the services built on command sets (PS3.7 §9.3, §E).
//!
//! dicom-rs stops at the upper layer (PDUs); messages are ours. The command-set codec — the
//! bytes a peer sends, decoded with nothing trusted beyond them — lives in the small
//! `vertebra-dicom-wire` crate so that it can be fuzzed without building the whole daemon
//! (see `fuzz/`); it is re-exported here, so the rest of the node names it
//! `dimse::CommandSet`. Each service sits in its own file: [`echo`] (C-ECHO) and [`store`]
//! (C-STORE).

pub mod echo;
pub mod store;

pub use vertebra_dicom_wire::command::{
    CommandError, CommandField, CommandSet, DATA_SET_PRESENT, MAX_COMMAND_BYTES, NO_DATA_SET,
    status,
};
