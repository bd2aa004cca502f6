//! `vertebrad`, the VertebraFormer appliance daemon, as a library.
//!
//! The daemon receives spinal CT series over DICOM, analyses them and sends the results back.
//! This library holds its parts; `main.rs` only wires them to the command line. So far:
//!
//! - [`store`]: the database (PostgreSQL or embedded SQLite) holding the index of received
//!   images, the job queue, results, the delivery outbox, users and the audit log;
//! - [`dicom`]: the DICOM node — Storage SCP (C-ECHO, C-STORE) with a durable streaming spool,
//!   peer allow-list and limits, DICOM TLS, series completion into the job queue;
//! - [`series`]: series → volume — decode, validate and stack a CT/MR series for inference;
//! - [`config`]: the daemon's typed configuration (`config` crate, `VERTEBRA_…` overrides);
//! - [`web`]: the admin web console over HTTPS, `/healthz` and `/metrics`;
//! - [`metrics`]: the process-wide counters and histograms behind `/metrics`;
//! - [`retention`]: the sweeper deleting delivered images from the spool by the retention
//!   policy;
//! - [`systemd`]: readiness/status notifications and a watchdog fed only while every part is
//!   alive.
//! - [`viewer`]: the result viewer's server side — a series and its analysis rendered slice
//!   by slice to PNG for the web console.
//!
//! It is not a place for domain logic shared with the trainer (that is `vertebra-core`).

pub mod config;
pub mod credentials;
pub mod dicom;
pub mod engine;
pub mod forward;
pub mod metrics;
pub mod retention;
pub mod series;
pub mod store;
pub mod systemd;
pub mod viewer;
pub mod web;
pub mod worker;
