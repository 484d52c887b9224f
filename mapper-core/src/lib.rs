//! The cluster mapper's pure core: no runtime, no I/O.
//!
//! - [`Index`]: the inventory watchers keep current (`apply` / `delete` / `reset`), with
//!   workload [`identity`] and address and name resolution ([`resolve`]).
//! - [`Mapper`]: turns `model::observation` batches (bound to what their [`Reporter`] may
//!   speak for), Kafka authorizer log lines ([`kafka`]) and Istio sidecar metrics ([`istio`],
//!   [`prometheus`], believed only when corroborated) into edges, kept by the [`EdgeStore`]
//!   (TTL, limit, deltas for upload).
//! - [`EdgeFilter`]: the CLI's filters. [`fixtures`]: builders for tests, here and elsewhere.

pub mod dns_memory;
pub mod edges;
pub mod exposed;
pub mod filter;
pub mod fixtures;
pub mod identity;
pub mod index;
pub mod istio;
pub mod kafka;
pub mod mapper;
mod names;
pub mod prometheus;
pub mod resolve;

#[cfg(test)]
mod tests;

pub use dns_memory::{DnsMemory, DnsMemoryConfig};
pub use edges::{Detail, EdgeStore, EdgeStoreConfig, Observation, ObservedTarget, Recorded};
pub use filter::{EdgeFilter, FilterError, LabelSelector, ServerSelector};
pub use identity::{
    NameSource, Workload, NODE_KIND, NODE_NAMESPACE, POD_KIND, WORKLOAD_NAME_SOURCES,
};
pub use index::{Index, IndexConfig, IndexStats, Indexed, LabelledPod, Name, ObjectKey};
pub use istio::{
    read_ambient_metrics, read_metrics, AmbientProxy, AmbientScrape, SidecarMetrics, SidecarScrape,
    ISTIO_SIDECAR_LABEL,
};
pub use kafka::{LineSplitter, LogCursor, StreamStart};
pub use mapper::{
    KafkaBroker, Mapper, MapperConfig, MapperStats, Reporter, INCOMING_SETTLE, MAX_PENDING_INCOMING,
};
pub use resolve::{Resolution, Via, CLOCK_TOLERANCE};
