//! The `intentmap` CLI's library part: what `intentmap export` writes and the picture
//! `intentmap visualize` draws, how it finds and reaches the mapper, and the filters it applies
//! itself, so tests can look at them.

pub mod cloud;
pub mod discover;
pub mod export;
pub mod filters;
pub mod forward;
pub mod picture;
pub mod shape;
