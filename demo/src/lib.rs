//! The local demo and the whole product on one machine (used by `intentmap-demo` and the
//! end-to-end tests).

pub mod cleanup;
pub mod lab;
pub mod on_cluster;
pub mod product;
