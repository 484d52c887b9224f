//! The in-cluster agent: `cluster-agent mapper` (per cluster) and `cluster-agent node` (per node).
//!
//! Both roles stop on the first SIGINT or SIGTERM (`service_shell::shutdown_signal`): they stop
//! serving, flush what they hold and exit.

pub mod mapper;
pub mod node;
