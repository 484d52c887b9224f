//! The in-cluster agent: `cluster-agent mapper` (per cluster) and `cluster-agent node` (per node).

pub mod mapper;
pub mod node;
pub mod outbox;
pub mod upload;
