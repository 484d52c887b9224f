//! From observations to edges: who (the client's workload) called what (the resolved target).
//!
//! Node agents' and `aws-proxy`'s batches (TCP, DNS, AWS) come through [`Mapper::observe_as`],
//! bound to what their sender may speak for ([`Reporter`]); Kafka brokers' authorizer log lines
//! through [`Mapper::observe_kafka_log`]; Istio sidecars' metrics through a round of
//! [`Mapper::begin_istio_round`], [`Mapper::observe_sidecar`], [`Mapper::end_istio_round`].

mod incoming;
mod istio;
mod kafka;
mod reporter;
mod stats;

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use model::observation::{AwsOperation, DnsAnswer, ObservationBatch, PodHint, TcpConnection};
use model::{Edge, ExposedWorkload, PortSpec, Protocol, Traffic};

pub use incoming::{MAX_PENDING as MAX_PENDING_INCOMING, SETTLE as INCOMING_SETTLE};
pub use kafka::KafkaBroker;
pub use reporter::Reporter;
pub use stats::MapperStats;

use self::incoming::IncomingQueue;
use self::istio::IstioState;
use self::reporter::Refused;
use self::stats::bump;
use crate::dns_memory::{DnsMemory, DnsMemoryConfig};
use crate::edges::{Detail, EdgeStore, EdgeStoreConfig, Observation, ObservedTarget, Recorded};
use crate::identity::Workload;
use crate::index::{Index, IndexConfig, ObjectKey};
use crate::names::{is_arn, is_dns_name, is_iam_action, normalize_dns_name};
use crate::resolve::Resolution;

#[derive(Debug, Clone)]
pub struct MapperConfig {
    pub index: IndexConfig,
    pub edges: EdgeStoreConfig,
    pub dns: DnsMemoryConfig,
    /// How recent an observed connection between two workloads must be to vouch for an Istio
    /// request counter between them (see [`crate::istio`]). Sidecars keep connections open for
    /// long, so this is hours, not seconds.
    pub istio_connection_window: TimeDelta,
}

impl Default for MapperConfig {
    fn default() -> Self {
        Self {
            index: IndexConfig::default(),
            edges: EdgeStoreConfig::default(),
            dns: DnsMemoryConfig::default(),
            istio_connection_window: TimeDelta::days(1),
        }
    }
}

/// The mapper's state. Watchers keep `index` current; node agents and `aws-proxy` feed `observe_as`.
#[derive(Debug)]
pub struct Mapper {
    pub index: Index,
    dns: DnsMemory,
    edges: EdgeStore,
    istio: IstioState,
    incoming: IncomingQueue,
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
            istio: IstioState::new(config.istio_connection_window),
            incoming: IncomingQueue::default(),
            stats: MapperStats::default(),
            api_server: ObjectKey::new("default", "kubernetes"),
        }
    }

    /// A batch from a sender believed about any client (tests, the shared token).
    pub fn observe(&mut self, batch: &ObservationBatch, now: DateTime<Utc>) {
        self.observe_as(batch, Reporter::Anyone, now);
    }

    /// Turns a batch from `reporter` into edges: DNS answers first (so that connections in the
    /// same batch can be named by them), then TCP connections, then AWS operations. Lines about
    /// clients the reporter does not speak for are counted and skipped. Times later than `now`
    /// are taken as `now`.
    pub fn observe_as(
        &mut self,
        batch: &ObservationBatch,
        reporter: Reporter<'_>,
        now: DateTime<Utc>,
    ) {
        bump(&mut self.stats.batches);
        self.settle_incoming(now);
        if reporter == Reporter::AwsCalls {
            stats::add(
                &mut self.stats.unpermitted_observations,
                (batch.dns.len() as u64).saturating_add(batch.tcp.len() as u64),
            );
        } else {
            for answer in &batch.dns {
                self.observe_dns(answer, reporter, now);
            }
            for connection in &batch.tcp {
                self.observe_tcp(connection, reporter, now);
            }
        }
        for operation in &batch.aws {
            self.observe_aws(operation, reporter, now);
        }
    }

    /// Drops edges past their TTL, DNS answers past their time and pod IP leases past their grace.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        self.settle_incoming(now);
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
            istio_refused_claims: self.istio.refused_claims(),
            ..self.stats
        }
    }

    /// The client as `reporter` may name it; counts and returns `None` when it may not, or when
    /// it names no known pod or node.
    fn client_of(
        &mut self,
        reporter: Reporter<'_>,
        hint: Option<&PodHint>,
        src: IpAddr,
        at: DateTime<Utc>,
    ) -> Option<Arc<Workload>> {
        match self.reported_client(reporter, hint, src, at) {
            Ok(Some(client)) => Some(client),
            Ok(None) => {
                bump(&mut self.stats.unknown_clients);
                None
            }
            Err(refused) => {
                self.count_refused(refused);
                None
            }
        }
    }

    fn count_refused(&mut self, refused: Refused) {
        bump(match refused {
            Refused::Foreign => &mut self.stats.foreign_clients,
            Refused::UnknownPod => &mut self.stats.unknown_hinted_pods,
            Refused::Contested => &mut self.stats.contested_addresses,
        });
    }

    fn observe_tcp(
        &mut self,
        connection: &TcpConnection,
        reporter: Reporter<'_>,
        now: DateTime<Utc>,
    ) {
        let at = self.clamp(connection.at, now);
        let client =
            match self.reported_client(reporter, connection.pod.as_ref(), connection.src_ip, at) {
                // The server's side of a call between workloads: the client's side reports it.
                Ok(Some(_)) if connection.accepted => {
                    bump(&mut self.stats.accepted_from_workloads);
                    return;
                }
                Ok(Some(client)) => client,
                Ok(None) => {
                    // A connection accepted from outside the cluster (or from a pod not indexed yet).
                    if !self.hold_incoming(connection, reporter, at) {
                        bump(&mut self.stats.unknown_clients);
                    }
                    return;
                }
                Err(refused) => {
                    self.count_refused(refused);
                    return;
                }
            };
        if !is_destination(connection.dst_ip) {
            bump(&mut self.stats.ignored_destinations);
            return;
        }
        let port = (connection.dst_port != 0)
            .then_some(PortSpec { port: connection.dst_port, protocol: Protocol::Tcp });
        let resolution = self.index.resolve_address(connection.dst_ip, at, port);
        let call = Call {
            client_ip: connection.src_ip,
            port,
            at,
            connections: connection.count,
            detail: Detail::None,
            connection: true,
            bytes: connection.bytes.map(bounded),
        };
        if self.record(&client, &resolution, call) {
            bump(self.stats.tcp_line(connection.count));
        }
    }

    fn observe_dns(&mut self, answer: &DnsAnswer, reporter: Reporter<'_>, now: DateTime<Utc>) {
        let at = self.clamp(answer.at, now);
        let name = normalize_dns_name(&answer.name);
        if name.is_empty() {
            bump(&mut self.stats.invalid_observations);
            return;
        }
        // The answer names things for its client: only the client's node may say what it heard.
        // (A client not known yet may still be told names: its pod may be indexed a moment later.)
        let bound = match self.reported_client(reporter, None, answer.client_ip, at) {
            Ok(client) => client,
            Err(refused) => {
                self.count_refused(refused);
                return;
            }
        };
        // As DNS sniffing does: asking for a Service is calling it (with no port, and no
        // connection counted: a lookup is not a connection).
        if let Some(resolution) = self.index.resolve_name(&name) {
            let Some(client) = bound else {
                bump(&mut self.stats.unknown_clients);
                return;
            };
            let call = Call {
                client_ip: answer.client_ip,
                port: None,
                at,
                connections: 0,
                detail: Detail::None,
                connection: false,
                bytes: None,
            };
            if self.record(&client, &resolution, call) {
                bump(&mut self.stats.dns_cluster_answers);
            }
            return;
        }
        // Name the address by what the client asked for; through an ExternalName Service, by
        // the first name of the CNAME chain outside the cluster.
        let chain =
            std::iter::once(name).chain(answer.cnames.iter().map(|c| normalize_dns_name(c)));
        let Some(reportable) =
            chain.filter(|n| is_dns_name(n)).find(|n| !self.index.is_cluster_name(n))
        else {
            if self.index.is_cluster_name(&answer.name) {
                bump(&mut self.stats.unknown_cluster_names);
            } else {
                bump(&mut self.stats.invalid_observations);
            }
            return;
        };
        let mut remembered = false;
        for address in answer.addresses.iter().filter(|a| is_destination(**a)) {
            self.dns.remember(answer.client_ip, *address, &reportable, at, answer.ttl_seconds);
            remembered = true;
        }
        if remembered {
            bump(&mut self.stats.dns_answers);
        }
    }

    fn observe_aws(
        &mut self,
        operation: &AwsOperation,
        reporter: Reporter<'_>,
        now: DateTime<Utc>,
    ) {
        let at = self.clamp(operation.at, now);
        let Some(client) = self.client_of(reporter, None, operation.client_ip, at) else { return };
        let service = operation.service.trim().to_ascii_lowercase();
        if service.is_empty()
            || !service.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-')
        {
            bump(&mut self.stats.invalid_observations);
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
        let observation = Observation {
            client: &client,
            target,
            port: None,
            at,
            connections: 1,
            detail: Detail::None,
            connection: false,
            bytes: None,
        };
        if self.edges.record(&observation) != Recorded::Refused {
            bump(&mut self.stats.aws_operations);
        }
    }

    fn clamp(&mut self, at: DateTime<Utc>, now: DateTime<Utc>) -> DateTime<Utc> {
        if at > now {
            bump(&mut self.stats.clamped_timestamps);
            now
        } else {
            at
        }
    }

    /// The edge store's targets for what `resolution` found: a Service as the workloads behind
    /// it, or as the Service when nothing backs it; the API server as `kubernetes` in `default`.
    fn for_each_target(
        &mut self,
        resolution: &Resolution,
        mut each: impl FnMut(&mut EdgeStore, ObservedTarget<'_>) -> bool,
    ) -> Option<bool> {
        Some(match resolution {
            Resolution::Workload { workload, .. } => {
                each(&mut self.edges, ObservedTarget::Workload(workload))
            }
            Resolution::Service { backends, .. } if !backends.is_empty() => {
                let mut any = false;
                for backend in backends.iter() {
                    any |= each(&mut self.edges, ObservedTarget::Workload(backend));
                }
                any
            }
            Resolution::Service { service, .. } => each(
                &mut self.edges,
                ObservedTarget::Service { namespace: &service.namespace, name: &service.name },
            ),
            Resolution::ApiServer => each(
                &mut self.edges,
                ObservedTarget::Service {
                    namespace: &self.api_server.namespace,
                    name: &self.api_server.name,
                },
            ),
            Resolution::External(_) | Resolution::Unattributed | Resolution::Contested => {
                return None
            }
        })
    }

    /// Records `client` calling what `resolution` found; whether anything was recorded.
    fn record(&mut self, client: &Workload, resolution: &Resolution, call: Call<'_>) -> bool {
        let Call { client_ip, port, at, connections, detail, connection, bytes } = call;
        let recorded = self.for_each_target(resolution, |edges, target| {
            let observation =
                Observation { client, target, port, at, connections, detail, connection, bytes };
            edges.record(&observation) != Recorded::Refused
        });
        match (recorded, resolution) {
            (Some(recorded), _) => recorded,
            (None, Resolution::External(ip)) => {
                let domains = self.dns.names(client_ip, *ip, at);
                let target = ObservedTarget::Internet { domains, ip: *ip };
                self.edges.record(&Observation {
                    client,
                    target,
                    port,
                    at,
                    connections,
                    detail,
                    connection,
                    bytes,
                }) != Recorded::Refused
            }
            (None, Resolution::Contested) => {
                bump(&mut self.stats.contested_addresses);
                false
            }
            (None, _) => {
                bump(&mut self.stats.unattributed_targets);
                false
            }
        }
    }
}

/// What one observation says beyond its client and target.
#[derive(Debug, Clone, Copy)]
struct Call<'a> {
    client_ip: IpAddr,
    port: Option<PortSpec>,
    at: DateTime<Utc>,
    connections: u64,
    detail: Detail<'a>,
    connection: bool,
    bytes: Option<Traffic>,
}

/// Bytes as a node agent reported them, each direction bounded as the wire format is.
fn bounded(bytes: Traffic) -> Traffic {
    Traffic::default().saturating_add(bytes)
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
