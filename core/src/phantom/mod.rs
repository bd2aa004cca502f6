//! Synthetic spinal CT phantoms (being written).

pub mod domain;
pub mod tissue;
