//! The `intentmap` CLI's library part: what `intentmap export` writes and the picture
//! `intentmap visualize` draws, so tests can look at them.

pub mod export;
pub mod picture;
