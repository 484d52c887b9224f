//! The in-cluster agent: `cluster-agent mapper` (per cluster) and, later, `cluster-agent node`.

pub mod mapper;
pub mod outbox;
pub mod upload;
