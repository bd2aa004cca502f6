//! `vertebrad`, the VertebraFormer appliance daemon, as a library.
//!
//! The daemon receives spinal CT series over DICOM, analyses them and sends the results back.
//! This library holds its parts; `main.rs` only wires them to the command line. So far:
//!
//! - [`store`]: the database (PostgreSQL or embedded SQLite) holding the index of received
//!   images, the job queue, results, the delivery outbox, users and the audit log.
//!
//! It is not a place for domain logic shared with the trainer (that is `vertebra-core`).

pub mod store;
