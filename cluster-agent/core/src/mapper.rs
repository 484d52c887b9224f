//! From observations to edges: who (the client's workload) called what (the resolved target).

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use model::observation::{AwsOperation, DnsAnswer, ObservationBatch, PodHint, TcpConnection};
use model::{Edge, ExposedWorkload, PortSpec, Protocol};

use crate::dns_memory::{DnsMemory, DnsMemoryConfig};
use crate::edges::{EdgeStore, EdgeStoreConfig, Observation, ObservedTarget, Recorded};
use crate::identity::Workload;
use crate::index::{Index, IndexConfig, ObjectKey};
use crate::names::{is_arn, is_dns_name, is_iam_action, normalize_dns_name};
use crate::resolve::Resolution;

#[derive(Debug, Clone, Default)]
pub struct MapperConfig {
    pub index: IndexConfig,
    pub edges: EdgeStoreConfig,
    pub dns: DnsMemoryConfig,
}

/// Counters for metrics. Every observation that does not become an edge is counted somewhere.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MapperStats {
    pub batches: u64,
    /// TCP connection lines that were recorded as edges.
    pub tcp_connections: u64,
    /// Answers for names outside the cluster, remembered to name later connections.
    pub dns_answers: u64,
    /// Answers for Services and pods, recorded as edges.
    pub dns_cluster_answers: u64,
    pub aws_operations: u64,
    /// Observations whose client is not a known pod, hostNetwork pod or node.
    pub unknown_clients: u64,
    /// Connections to a pod address that no pod held at the time.
    pub unattributed_targets: u64,
    /// Connections to loopback, unspecified, multicast or broadcast addresses.
    pub ignored_destinations: u64,
    /// Observations with nothing usable (a DNS answer without a usable name, an AWS service that is not one).
    pub invalid_observations: u64,
    /// DNS answers for names in the cluster's domain that the index does not know.
    pub unknown_cluster_names: u64,
    /// Observations stamped later than `now`, recorded at `now`.
    pub clamped_timestamps: u64,
    /// Edges refused because the edge store was full.
    pub dropped_edges: u64,
    pub expired_edges: u64,
    /// DNS answers forgotten early because the DNS memory was full.
    pub dns_evictions: u64,
}

/// The mapper's state. Watchers keep `index` current; node agents and `aws-proxy` feed `observe`.
#[derive(Debug)]
pub struct Mapper {
    pub index: Index,
    dns: DnsMemory,
    edges: EdgeStore,
    stats: MapperStats,
    /// `default/kubernetes`, the name calls to the API server are recorded under.
    api_server: ObjectKey,
}

impl Default for Mapper {
    fn default() -> Self {
        Self::new(MapperConfig::default())
    }
}

impl Mapper {
    pub fn new(config: MapperConfig) -> Self {
        Self {
            index: Index::new(config.index),
            dns: DnsMemory::new(config.dns),
            edges: EdgeStore::new(config.edges),
            stats: MapperStats::default(),
            api_server: ObjectKey::new("default", "kubernetes"),
        }
    }

    /// Turns a batch into edges: DNS answers first (so that connections in the same batch can be
    /// named by them), then TCP connections, then AWS operations. Times later than `now` are
    /// taken as `now`.
    pub fn observe(&mut self, batch: &ObservationBatch, now: DateTime<Utc>) {
        self.stats.batches += 1;
        for answer in &batch.dns {
            self.observe_dns(answer, now);
        }
        for connection in &batch.tcp {
            self.observe_tcp(connection, now);
        }
        for operation in &batch.aws {
            self.observe_aws(operation, now);
        }
    }

    /// Drops edges past their TTL, DNS answers past their time and pod IP leases past their grace.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        self.edges.expire(now);
        self.dns.expire(now);
        self.index.prune(now);
    }

    /// Every current edge, sorted.
    pub fn snapshot(&self) -> Vec<Edge> {
        self.edges.snapshot()
    }

    /// The edges changed since the last call, counting only new connections (see [`EdgeStore::take_delta`]).
    pub fn take_delta(&mut self) -> Vec<Edge> {
        self.edges.take_delta()
    }

    /// Forgets every edge (the `reset` command). What the index and the DNS memory know stays.
    pub fn reset(&mut self) {
        self.edges.reset();
    }

    pub fn exposed(&self) -> Vec<ExposedWorkload> {
        self.index.exposed()
    }

    pub fn edges(&self) -> &EdgeStore {
        &self.edges
    }

    pub fn dns(&self) -> &DnsMemory {
        &self.dns
    }

    pub fn stats(&self) -> MapperStats {
        MapperStats { dropped_edges: self.edges.dropped_edges(), expired_edges: self.edges.expired_edges(), dns_evictions: self.dns.evictions(), ..self.stats }
    }

    fn observe_tcp(&mut self, connection: &TcpConnection, now: DateTime<Utc>) {
        let at = self.clamp(connection.at, now);
        let Some(client) = self.client(connection.pod.as_ref(), connection.src_ip, at) else {
            self.stats.unknown_clients += 1;
            return;
        };
        if !is_destination(connection.dst_ip) {
            self.stats.ignored_destinations += 1;
            return;
        }
        let port = (connection.dst_port != 0).then_some(PortSpec { port: connection.dst_port, protocol: Protocol::Tcp });
        let resolution = self.index.resolve_address(connection.dst_ip, at, port);
        if self.record(&client, &resolution, connection.src_ip, port, at, connection.count) {
            self.stats.tcp_connections += 1;
        }
    }

    fn observe_dns(&mut self, answer: &DnsAnswer, now: DateTime<Utc>) {
        let at = self.clamp(answer.at, now);
        let name = normalize_dns_name(&answer.name);
        if name.is_empty() {
            self.stats.invalid_observations += 1;
            return;
        }
        // As DNS sniffing does: asking for a Service is calling it (with no port, and no
        // connection counted: a lookup is not a connection).
        if let Some(resolution) = self.index.resolve_name(&name) {
            let Some(client) = self.client(None, answer.client_ip, at) else {
                self.stats.unknown_clients += 1;
                return;
            };
            if self.record(&client, &resolution, answer.client_ip, None, at, 0) {
                self.stats.dns_cluster_answers += 1;
            }
            return;
        }
        // Name the address by what the client asked for; through an ExternalName Service, by
        // the first name of the CNAME chain outside the cluster.
        let chain = std::iter::once(name).chain(answer.cnames.iter().map(|c| normalize_dns_name(c)));
        let Some(reportable) = chain.filter(|n| is_dns_name(n)).find(|n| !self.index.is_cluster_name(n)) else {
            if self.index.is_cluster_name(&answer.name) {
                self.stats.unknown_cluster_names += 1;
            } else {
                self.stats.invalid_observations += 1;
            }
            return;
        };
        let mut remembered = false;
        for address in answer.addresses.iter().filter(|a| is_destination(**a)) {
            self.dns.remember(answer.client_ip, *address, &reportable, at, answer.ttl_seconds);
            remembered = true;
        }
        if remembered {
            self.stats.dns_answers += 1;
        }
    }

    fn observe_aws(&mut self, operation: &AwsOperation, now: DateTime<Utc>) {
        let at = self.clamp(operation.at, now);
        let Some(client) = self.client(None, operation.client_ip, at) else {
            self.stats.unknown_clients += 1;
            return;
        };
        let service = operation.service.trim().to_ascii_lowercase();
        if service.is_empty() || !service.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-') {
            self.stats.invalid_observations += 1;
            return;
        }
        let region = operation
            .region
            .as_deref()
            .map(|r| r.trim().to_ascii_lowercase())
            .filter(|r| r.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-'))
            .unwrap_or_default();
        let arn = match operation.resource.as_deref().map(str::trim).filter(|r| is_arn(r)) {
            Some(resource) => resource.to_owned(),
            None => format!("arn:{}:{service}:{region}::*", aws_partition(&region)),
        };
        let action = operation.action.trim();
        let action = if is_iam_action(action) {
            Some(action.to_owned())
        } else {
            Some(format!("{service}:{action}")).filter(|a| !action.is_empty() && is_iam_action(a))
        };
        let target = ObservedTarget::Aws { arn: &arn, action: action.as_deref() };
        if self.edges.record(&Observation { client: &client, target, port: None, at, connections: 1 }) != Recorded::Refused {
            self.stats.aws_operations += 1;
        }
    }

    fn clamp(&mut self, at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        if at > now {
            self.stats.clamped_timestamps += 1;
            now
        } else {
            at
        }
    }

    /// The client's workload: the pod the node named, if the index knows it, else the source
    /// address's pod, hostNetwork pod or node at that time.
    fn client(&self, hint: Option<&PodHint>, src: IpAddr, at: DateTime<Utc>) -> Option<Arc<Workload>> {
        if let Some(hint) = hint {
            if let Some(workload) = hint.uid.as_deref().and_then(|uid| self.index.pod_workload_by_uid(uid)) {
                return Some(workload);
            }
            if let (Some(namespace), Some(name)) = (hint.namespace.as_deref(), hint.name.as_deref()) {
                if let Some(workload) = self.index.pod_workload(namespace, name) {
                    return Some(workload);
                }
            }
        }
        self.index.resolve_address(src, at, None).client().cloned()
    }

    /// Records `client` calling what `resolution` found; whether anything was recorded.
    ///
    /// A Service is recorded as the workloads behind it, or as the Service when nothing backs it;
    /// the API server as the `kubernetes` Service in `default`.
    fn record(&mut self, client: &Workload, resolution: &Resolution, client_ip: IpAddr, port: Option<PortSpec>, at: DateTime<Utc>, connections: u64) -> bool {
        let record = |edges: &mut EdgeStore, target| edges.record(&Observation { client, target, port, at, connections }) != Recorded::Refused;
        match resolution {
            Resolution::Workload { workload, .. } => record(&mut self.edges, ObservedTarget::Workload(workload)),
            Resolution::Service { backends, .. } if !backends.is_empty() => {
                let mut any = false;
                for backend in backends.iter() {
                    any |= record(&mut self.edges, ObservedTarget::Workload(backend));
                }
                any
            }
            Resolution::Service { service, .. } => record(&mut self.edges, ObservedTarget::Service { namespace: &service.namespace, name: &service.name }),
            Resolution::ApiServer => record(&mut self.edges, ObservedTarget::Service { namespace: &self.api_server.namespace, name: &self.api_server.name }),
            Resolution::External(ip) => {
                let domains = self.dns.names(client_ip, *ip, at);
                record(&mut self.edges, ObservedTarget::Internet { domains, ip: *ip })
            }
            Resolution::Unattributed => {
                self.stats.unattributed_targets += 1;
                false
            }
        }
    }
}

/// Whether an address can be a connection's destination worth naming.
fn is_destination(ip: IpAddr) -> bool {
    let ip = ip.to_canonical();
    let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || broadcast)
}

fn aws_partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else {
        "aws"
    }
}
