//! From observations to edges: who (the client's workload) called what (the resolved target).
//!
//! Node agents' batches (TCP, DNS, AWS) come through [`Mapper::observe`], Kafka brokers'
//! authorizer log lines through [`Mapper::observe_kafka_log`], and Istio sidecars' metrics
//! through [`Mapper::observe_istio`].

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use model::observation::{AwsOperation, DnsAnswer, ObservationBatch, PodHint, TcpConnection};
use model::{Edge, ExposedWorkload, PortSpec, Protocol, WorkloadRef};

use crate::dns_memory::{DnsMemory, DnsMemoryConfig};
use crate::edges::{Detail, EdgeStore, EdgeStoreConfig, Observation, ObservedTarget, Recorded};
use crate::identity::Workload;
use crate::index::{Index, IndexConfig, LabelledPod, ObjectKey};
use crate::istio::{self, IstioWindows, PathRefused, RequestIncrease, SidecarScrape};
use crate::kafka::{self, AuthorizerLine, TopicRefused};
use crate::names::{is_arn, is_dns_name, is_iam_action, is_kubernetes_name, normalize_dns_name};
use crate::resolve::{Resolution, Via};

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
    /// HTTP paths and Kafka topics left off edges that already had the most allowed.
    pub dropped_details: u64,

    /// Kafka topic accesses (authorizer log lines) recorded.
    pub kafka_accesses: u64,
    /// Broker log lines that are not authorizer lines.
    pub kafka_other_lines: u64,
    /// Authorizer lines that could not be read, or named a topic Kafka would not accept.
    pub kafka_malformed_lines: u64,
    /// Authorizer lines with an operation the ClientIntents CRD has no name for.
    pub kafka_unknown_operations: u64,
    /// Authorizer lines about a Group, the Cluster, a TransactionalId...: not topics, skipped.
    pub kafka_non_topic_lines: u64,
    /// Authorizer lines about a topic pattern (`PREFIXED`, the wildcard `*`), not a topic: skipped.
    pub kafka_topic_patterns: u64,
    /// Authorizer lines whose client address names no pod or node at that time.
    pub kafka_unresolved_hosts: u64,
    /// Authorizer lines of a broker pod the index does not know (yet).
    pub kafka_unknown_brokers: u64,

    /// Sidecar metrics scraped, and scrapes that failed.
    pub istio_scrapes: u64,
    pub istio_scrape_failures: u64,
    /// Scrapes taken as a baseline (a pod's first): nothing reported from them.
    pub istio_baselines: u64,
    /// Requests recorded from `istio_requests_total` increases.
    pub http_requests: u64,
    /// Series whose counter went down (a sidecar restart).
    pub istio_counter_resets: u64,
    /// Lines of the metrics text that could not be read.
    pub istio_malformed_lines: u64,
    /// Series past the per-pod limit, not followed.
    pub istio_untracked_series: u64,
    /// Client-side series left to the destination's sidecar, which reports the same requests.
    pub istio_left_to_destination: u64,
    /// Series whose client (`source_workload`) is unknown or not a Kubernetes name.
    pub istio_unknown_clients: u64,
    /// Client-side series whose destination is neither a workload nor a Service the index knows.
    pub istio_unknown_targets: u64,
    /// Series with a `reporter` other than `source` or `destination`.
    pub istio_unknown_reporters: u64,
    /// Series with a method the CRD does not name (`HEAD`...): the call is recorded, without its path.
    pub istio_unknown_methods: u64,
    /// Series with a path that is not one or is too long: the call is recorded, without its path.
    pub istio_unusable_paths: u64,
}

/// The mapper's state. Watchers keep `index` current; node agents and `aws-proxy` feed `observe`.
#[derive(Debug)]
pub struct Mapper {
    pub index: Index,
    dns: DnsMemory,
    edges: EdgeStore,
    istio: IstioWindows,
    stats: MapperStats,
    /// `default/kubernetes`, the name calls to the API server are recorded under.
    api_server: ObjectKey,
}

/// Whose authorizer log a line is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KafkaBroker {
    /// A broker pod: its workload (owner walk) is the target.
    Pod { namespace: String, name: String },
    /// A broker outside the cluster (a log file), named explicitly.
    Workload(WorkloadRef),
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
            istio: IstioWindows::default(),
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
        MapperStats {
            dropped_edges: self.edges.dropped_edges(),
            expired_edges: self.edges.expired_edges(),
            dns_evictions: self.dns.evictions(),
            dropped_details: self.edges.dropped_details(),
            ..self.stats
        }
    }

    /// Turns a broker's authorizer log lines (complete lines, each with the time it was logged)
    /// into Kafka edges: the client named by its address at that time, the broker's workload
    /// the target, the topic and operation (denied or not) on the edge. Lines that do not make
    /// a topic access are counted in [`MapperStats`] and skipped.
    pub fn observe_kafka_log<'l>(&mut self, broker: &KafkaBroker, lines: impl IntoIterator<Item = (DateTime<Utc>, &'l str)>, now: DateTime<Utc>) {
        let broker = match broker {
            KafkaBroker::Pod { namespace, name } => self.index.pod_workload(namespace, name),
            KafkaBroker::Workload(w) => {
                Some(self.index.workload_named(&w.namespace, &w.name).unwrap_or_else(|| Arc::new(Workload::named(&w.namespace, &w.name, w.kind.as_deref()))))
            }
        };
        for (at, line) in lines {
            let entry = match kafka::parse_authorizer_line(line) {
                AuthorizerLine::Entry(entry) => entry,
                AuthorizerLine::Other => {
                    self.stats.kafka_other_lines += 1;
                    continue;
                }
                AuthorizerLine::Malformed(_) => {
                    self.stats.kafka_malformed_lines += 1;
                    continue;
                }
            };
            if entry.resource_type != "Topic" {
                self.stats.kafka_non_topic_lines += 1;
                continue;
            }
            let Some(operation) = kafka::crd_operation(entry.operation) else {
                self.stats.kafka_unknown_operations += 1;
                continue;
            };
            let topic = match kafka::topic_name(&entry) {
                Ok(topic) => topic,
                Err(TopicRefused::Pattern) => {
                    self.stats.kafka_topic_patterns += 1;
                    continue;
                }
                Err(TopicRefused::Illegal) => {
                    self.stats.kafka_malformed_lines += 1;
                    continue;
                }
            };
            let Some(broker) = &broker else {
                self.stats.kafka_unknown_brokers += 1;
                continue;
            };
            let at = self.clamp(at, now);
            let Some(client) = kafka::host_address(entry.host).and_then(|ip| self.client(None, ip, at)) else {
                self.stats.kafka_unresolved_hosts += 1;
                continue;
            };
            let detail = Detail::Kafka { topic, operation, denied: !entry.allowed };
            let observation = Observation { client: &client, target: ObservedTarget::Kafka(broker), port: None, at, connections: 1, detail };
            if self.edges.record(&observation) != Recorded::Refused {
                self.stats.kafka_accesses += 1;
            }
        }
    }

    /// One round of Istio sidecar scrapes: every pod with a sidecar, scraped or not. Turns what
    /// each `istio_requests_total` series grew by since the previous round into HTTP edges,
    /// stamped `now` (see [`crate::istio`] for the windowing).
    ///
    /// A request between two sidecars is counted by both (`reporter="source"` and
    /// `reporter="destination"`). The destination's count is used: it names the target by the
    /// pod that served the call, as the index does. The source's count is used only when the
    /// destination's sidecar is not followed (no sidecar, or never scraped), so each request is
    /// counted once.
    pub fn observe_istio(&mut self, scrapes: &[SidecarScrape], now: DateTime<Utc>) {
        let pods: Vec<&LabelledPod> = scrapes.iter().map(|s| &s.pod).collect();
        self.istio.begin_round(&pods, now);
        let followed: HashSet<(&str, &str)> =
            scrapes.iter().filter(|s| s.metrics.is_ok() || self.istio.follows(&s.pod)).map(|s| (&*s.pod.workload.namespace, &*s.pod.workload.name)).collect();
        for scrape in scrapes {
            let Ok(metrics) = &scrape.metrics else {
                self.stats.istio_scrape_failures += 1;
                continue;
            };
            self.stats.istio_scrapes += 1;
            let (increases, counts) = self.istio.increases(&scrape.pod, metrics);
            self.stats.istio_baselines += u64::from(counts.baseline);
            self.stats.istio_counter_resets += counts.counter_resets;
            self.stats.istio_malformed_lines += counts.malformed_lines;
            self.stats.istio_untracked_series += counts.untracked_series;
            for increase in &increases {
                self.observe_requests(&scrape.pod, increase, &followed, now);
            }
        }
    }

    fn observe_requests(&mut self, pod: &LabelledPod, increase: &RequestIncrease, followed: &HashSet<(&str, &str)>, now: DateTime<Utc>) {
        let series = &increase.series;
        let (client, target) = match series.reporter.as_str() {
            "destination" => {
                let Some(client) = self.named_workload(&series.source_workload_namespace, &series.source_workload) else {
                    self.stats.istio_unknown_clients += 1;
                    return;
                };
                (client, Resolution::Workload { workload: pod.workload.clone(), via: Via::PodIp })
            }
            "source" => {
                let target = match self.named_workload(&series.destination_workload_namespace, &series.destination_workload) {
                    Some(target) if followed.contains(&(&*target.namespace, &*target.name)) => {
                        self.stats.istio_left_to_destination += 1;
                        return;
                    }
                    Some(target) => Some(Resolution::Workload { workload: target, via: Via::PodIp }),
                    None if is_kubernetes_name(&series.destination_service_namespace) && is_kubernetes_name(&series.destination_service_name) => {
                        self.index.resolve_name(&format!("{}.{}.svc", series.destination_service_name, series.destination_service_namespace))
                    }
                    None => None,
                };
                let Some(target) = target.filter(|t| matches!(t, Resolution::Workload { .. } | Resolution::Service { .. } | Resolution::ApiServer)) else {
                    self.stats.istio_unknown_targets += 1;
                    return;
                };
                (pod.workload.clone(), target)
            }
            _ => {
                self.stats.istio_unknown_reporters += 1;
                return;
            }
        };
        let method = istio::request_method(series.request_method.as_deref());
        if method.is_err() {
            self.stats.istio_unknown_methods += 1;
        }
        let path = match istio::request_path(series.request_path.as_deref()) {
            Ok(path) => path,
            Err(PathRefused::NotAPath | PathRefused::TooLong) => {
                self.stats.istio_unusable_paths += 1;
                None
            }
        };
        let detail = match (path, method) {
            // A method the CRD cannot name: the call is recorded, but no path that would allow it.
            (Some(path), Ok(method)) => Detail::Http { path, method },
            _ => Detail::None,
        };
        let unused = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        if self.record(&client, &target, unused, None, now, increase.requests, detail) {
            self.stats.http_requests += increase.requests;
        }
    }

    /// A workload as another system names it, matched against the index where it can be.
    fn named_workload(&self, namespace: &str, name: &str) -> Option<Arc<Workload>> {
        if name == "unknown" || !is_kubernetes_name(namespace) || !is_kubernetes_name(name) {
            return None;
        }
        Some(self.index.workload_named(namespace, name).unwrap_or_else(|| Arc::new(Workload::named(namespace, name, None))))
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
        if self.record(&client, &resolution, connection.src_ip, port, at, connection.count, Detail::None) {
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
            if self.record(&client, &resolution, answer.client_ip, None, at, 0, Detail::None) {
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
        if self.edges.record(&Observation { client: &client, target, port: None, at, connections: 1, detail: Detail::None }) != Recorded::Refused {
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
    #[allow(clippy::too_many_arguments)]
    fn record(
        &mut self,
        client: &Workload,
        resolution: &Resolution,
        client_ip: IpAddr,
        port: Option<PortSpec>,
        at: DateTime<Utc>,
        connections: u64,
        detail: Detail<'_>,
    ) -> bool {
        let record = |edges: &mut EdgeStore, target| edges.record(&Observation { client, target, port, at, connections, detail }) != Recorded::Refused;
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
