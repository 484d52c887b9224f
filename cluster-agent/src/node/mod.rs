//! `cluster-agent node`: the per-node half.

pub mod agent;
pub mod attribution;
pub mod capture;
pub mod dns;
pub mod ebpf;
pub mod events;
pub mod proc_scan;
/// Shipping to the mapper lives in its own crate, shared with `aws-proxy`.
pub use observation_ship as ship;
