//! Synthetic spinal CT phantoms (being written).

pub mod tissue;
