//! What every intentmap binary (`cloud-api`, `cluster-agent mapper` and `node`, `aws-proxy`)
//! starts with, written once:
//!
//! - [`LogFormat`] and [`init_tracing`]: `--log-format text|json`, `RUST_LOG` filters;
//! - [`shutdown_signal`]: resolves on the first SIGINT or SIGTERM;
//! - [`metrics::Registry`]: one Prometheus registry (`prometheus-client`) and its `GET /metrics`
//!   answer, for metrics kept as they happen and for counters read at scrape time;
//! - [`ShipArgs`]: the five flags of the node agent and `aws-proxy` that say how observations
//!   reach the mapper, flattened into each one's clap `Args`.

pub mod metrics;
mod ship;
mod signal;
mod tracing_setup;

pub use ship::{ShipArgs, ShipProfile};
pub use signal::shutdown_signal;
pub use tracing_setup::{init_tracing, LogFormat};
