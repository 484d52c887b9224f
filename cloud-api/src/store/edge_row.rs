//! An edge as the reads select it, decoded into the model's [`ClusterEdge`].

use chrono::{DateTime, Utc};
use model::graph::ClusterEdge;
use model::{AwsTarget, Edge, InternetTarget, PortSpec, ServiceRef, Target, Traffic, WorkloadRef};

use super::{decode_http, decode_kafka};

/// An edge as stored, named by its cluster.
pub(super) struct EdgeRow {
    pub(super) cluster: String,
    pub(super) client_namespace: String,
    pub(super) client_name: String,
    pub(super) client_kind: Option<String>,
    pub(super) target_type: String,
    pub(super) target_namespace: String,
    pub(super) target_name: String,
    pub(super) target_kind: Option<String>,
    pub(super) ports: Vec<String>,
    pub(super) domains: Vec<String>,
    pub(super) ips: Vec<String>,
    pub(super) internet_ports: Vec<i32>,
    pub(super) actions: Vec<String>,
    pub(super) http: Vec<String>,
    pub(super) kafka: Vec<String>,
    pub(super) first_seen: DateTime<Utc>,
    pub(super) last_seen: DateTime<Utc>,
    pub(super) connections: i64,
    pub(super) bytes_sent: Option<i64>,
    pub(super) bytes_received: Option<i64>,
}

/// The stored volume columns as the model's [`Traffic`]: `None` when neither was measured.
pub(super) fn traffic(sent: Option<i64>, received: Option<i64>) -> Option<Traffic> {
    let bytes = |n: Option<i64>| n.map_or(0, |n| u64::try_from(n).unwrap_or(0));
    (sent.is_some() || received.is_some())
        .then(|| Traffic { sent: bytes(sent), received: bytes(received) })
}

pub(super) fn edge_from_row(r: EdgeRow) -> Result<ClusterEdge, sqlx::Error> {
    let decode = |e: String| sqlx::Error::Decode(e.into());
    let ports = r
        .ports
        .iter()
        .map(|p| p.parse::<PortSpec>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(decode)?;
    let (target_namespace, target_name) = (r.target_namespace, r.target_name);
    let target = match r.target_type.as_str() {
        "kubernetes" => Target::Kubernetes(WorkloadRef {
            namespace: target_namespace,
            name: target_name,
            kind: r.target_kind,
        }),
        "service" => Target::Service(ServiceRef { namespace: target_namespace, name: target_name }),
        "internet" => Target::Internet(InternetTarget {
            domains: r.domains,
            ips: r.ips,
            ports: r.internet_ports.into_iter().filter_map(|p| u16::try_from(p).ok()).collect(),
        }),
        "incoming" => Target::Incoming(InternetTarget {
            domains: r.domains,
            ips: r.ips,
            ports: r.internet_ports.into_iter().filter_map(|p| u16::try_from(p).ok()).collect(),
        }),
        "aws" => Target::Aws(AwsTarget { arn: target_name, actions: r.actions }),
        "kafka" => Target::Kafka(WorkloadRef {
            namespace: target_namespace,
            name: target_name,
            kind: r.target_kind,
        }),
        other => return Err(decode(format!("unknown target_type {other:?}"))),
    };
    Ok(ClusterEdge {
        cluster: r.cluster,
        edge: Edge {
            client: WorkloadRef {
                namespace: r.client_namespace,
                name: r.client_name,
                kind: r.client_kind,
            },
            target,
            ports,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            connections: r.connections.max(0) as u64,
            http: decode_http(&r.http).map_err(decode)?,
            kafka: decode_kafka(&r.kafka).map_err(decode)?,
            bytes: traffic(r.bytes_sent, r.bytes_received),
        },
    })
}
