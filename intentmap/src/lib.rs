//! The `intentmap` CLI's library part: the picture `intentmap visualize` draws, so tests can
//! look at it.

pub mod picture;
