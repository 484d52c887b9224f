//! `cluster-agent node`: the per-node half.

pub mod agent;
pub mod attribution;
pub mod capture;
pub mod dns;
pub mod ebpf;
pub mod events;
pub mod proc_scan;
pub mod ship;
