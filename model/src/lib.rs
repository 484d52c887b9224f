//! The shared vocabulary of the traffic mapper.
//!
//! Everything here is plain data and pure functions: the node agent, the mapper, the cloud and
//! the CLI all speak these types, and none of them needs a runtime to test them.

pub mod edge;
pub mod graph;
pub mod intents;
pub mod limits;
pub mod list;
pub mod observation;
pub mod report;

pub use edge::{
    human_bytes, merge_edges, AwsTarget, Edge, EdgeKey, HttpResource, InternetTarget, KafkaTopic,
    PortSpec, Protocol, ServiceRef, Target, Traffic, Transport, WorkloadRef,
};
pub use graph::{AccessGraph, ClusterSummary, GraphEdge, GraphNode, NodeKind};
pub use graph::{ClusterEdge, ClusterExposure, GraphFilter};
pub use intents::{
    client_intents, intents_name, to_json, to_yaml, IntentsVersion, UnknownIntentsVersion,
    INTENTS_API_GROUP, INTENTS_KIND,
};
pub use list::{render_list, render_list_with, ListStyle};
pub use report::{EdgeReport, ExposedWorkload, ReportError, SCHEMA_VERSION};
