//! Workloads, targets and the edges between them.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A workload as the team names it: the Deployment, StatefulSet, CronJob... not the pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadRef {
    pub namespace: String,
    pub name: String,
    /// The root controller's kind (`Deployment`, `StatefulSet`, `CronJob`, `Pod`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl WorkloadRef {
    pub fn new(namespace: &str, name: &str, kind: Option<&str>) -> Self {
        Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            kind: kind.map(str::to_owned),
        }
    }
}

impl fmt::Display for WorkloadRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

/// A Kubernetes Service, when the call was made to the Service rather than resolved to pods.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
}

/// A destination outside the cluster, named by the DNS names seen for it and/or its IPs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InternetTarget {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub domains: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<u16>,
}

impl InternetTarget {
    /// The name that identifies this destination: its first DNS name, else its first IP.
    pub fn identity(&self) -> &str {
        self.domains
            .iter()
            .min()
            .or_else(|| self.ips.iter().min())
            .map(String::as_str)
            .unwrap_or("")
    }
}

/// An AWS resource and the IAM actions called on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsTarget {
    pub arn: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
}

/// The HTTP methods the ClientIntents CRD knows, as it spells them.
pub const HTTP_METHODS: [&str; 8] =
    ["GET", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "PATCH", "CONNECT"];

/// The Kafka operations the ClientIntents CRD knows, as it spells them (`consume` is Kafka's
/// Read, `produce` its Write).
pub const KAFKA_OPERATIONS: [&str; 11] = [
    "all",
    "consume",
    "produce",
    "create",
    "alter",
    "delete",
    "describe",
    "ClusterAction",
    "DescribeConfigs",
    "AlterConfigs",
    "IdempotentWrite",
];

/// An HTTP path and the methods called on it (from Istio sidecar metrics). Methods are upper
/// case, as in the ClientIntents CRD (`GET`, `POST`, ...).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpResource {
    pub path: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
}

/// A Kafka topic and the operations performed on it (from the brokers' authorizer logs), in the
/// CRD's names (`consume`, `produce`, `create`, `alter`, `delete`, `describe`, `ClusterAction`,
/// `DescribeConfigs`, `AlterConfigs`, `IdempotentWrite`). `denied` holds the operations the
/// broker refused at least once; they are also in `operations` (the client does call them).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTopic {
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub operations: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied: Vec<String>,
}

/// What a client calls. Serialised externally tagged: `{"kubernetes": {...}}`, `{"internet": {...}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Kubernetes(WorkloadRef),
    Service(ServiceRef),
    Internet(InternetTarget),
    Aws(AwsTarget),
    /// A Kafka broker's workload, called through the Kafka protocol (topics on the edge).
    Kafka(WorkloadRef),
    /// Incoming internet traffic, read the other way round: the addresses outside the cluster
    /// in `ips` (with their DNS names in `domains`, where known) called the edge's `client`, the
    /// workload in the cluster that served them; the edge's `ports` are that workload's ports
    /// they reached. One such edge per workload. It says who the workload's clients are, not
    /// what it calls: ClientIntents leave it out.
    Incoming(InternetTarget),
}

impl Target {
    /// The kind of target as stored and shown: `kubernetes`, `service`, `internet`, `aws`,
    /// `kafka`, `incoming`.
    pub fn type_name(&self) -> &'static str {
        match self {
            Target::Kubernetes(_) => "kubernetes",
            Target::Service(_) => "service",
            Target::Internet(_) => "internet",
            Target::Aws(_) => "aws",
            Target::Kafka(_) => "kafka",
            Target::Incoming(_) => "incoming",
        }
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default,
)]
pub enum Protocol {
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    #[serde(rename = "UDP")]
    Udp,
    #[serde(rename = "SCTP")]
    Sctp,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// How a DNS message travels: one datagram over UDP, or length-prefixed (2 bytes) over TCP,
/// where one segment may hold several messages. The node agent's DNS capture and `aws-proxy`'s
/// DNS server share it. Unlike [`Protocol`] (a Kubernetes port's protocol, with SCTP, in the wire
/// format) it has only what DNS uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
        }
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A destination port and its protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub port: u16,
    #[serde(default)]
    pub protocol: Protocol,
}

impl fmt::Display for PortSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.port, self.protocol.as_str())
    }
}

impl std::str::FromStr for PortSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (port, proto) = s.split_once('/').unwrap_or((s, "TCP"));
        let port = port.parse::<u16>().map_err(|_| format!("bad port in {s:?}"))?;
        let protocol = Protocol::parse(proto).ok_or_else(|| format!("bad protocol in {s:?}"))?;
        Ok(PortSpec { port, protocol })
    }
}

/// One observed access: a client workload calling a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Edge {
    pub client: WorkloadRef,
    pub target: Target,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Connections (or requests) counted over `first_seen..=last_seen`.
    #[serde(default)]
    pub connections: u64,
    /// HTTP paths and methods called, for `kubernetes` and `service` targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpResource>,
    /// Kafka topics and operations, for `kafka` targets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kafka: Vec<KafkaTopic>,
    /// Bytes carried by the connections of this edge that closed in `first_seen..=last_seen`,
    /// as the kernel counted them; `None` when nobody measured (the /proc fallback, Istio,
    /// Kafka and AWS observations count no bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Traffic>,
}

/// Traffic volume of an edge, from the client's side: `sent` went from the client to the target,
/// `received` came back. Incoming internet traffic ([`Target::Incoming`]) is read the other way
/// round, as its target is: `sent` went from the outside client to the workload. Sums saturate at [`crate::limits::MAX_CONNECTIONS`] (PostgreSQL's
/// `bigint`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Traffic {
    pub sent: u64,
    pub received: u64,
}

impl Traffic {
    /// Both directions added, saturating at the wire format's bound.
    pub fn saturating_add(self, other: Traffic) -> Traffic {
        let cap = crate::limits::MAX_CONNECTIONS;
        Traffic {
            sent: self.sent.saturating_add(other.sent).min(cap),
            received: self.received.saturating_add(other.received).min(cap),
        }
    }

    /// `a + b` where either may be unmeasured: measured wins, both unmeasured stays `None`.
    pub fn sum(a: Option<Traffic>, b: Option<Traffic>) -> Option<Traffic> {
        match (a, b) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        }
    }

    /// For people: `1.2 MiB ↑ / 3.4 MiB ↓`, sent then received, in binary units.
    pub fn label(&self) -> String {
        format!("{} ↑ / {} ↓", human_bytes(self.sent), human_bytes(self.received))
    }
}

/// A byte count for people, in binary units: `512 B`, `1.5 KiB`, `293 KiB`, `8.0 EiB`.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    // One decimal below 10 (`1.5 MiB`), none above (`293 KiB`); rounding up to 1024 of a unit
    // is written as the next one.
    if value < 9.95 {
        format!("{value:.1} {}", UNITS[unit])
    } else if value < 1023.5 || unit + 1 == UNITS.len() {
        format!("{value:.0} {}", UNITS[unit])
    } else {
        format!("1.0 {}", UNITS[unit + 1])
    }
}

/// The target name of every incoming-traffic edge ([`Target::Incoming`]): one per workload.
pub const INCOMING_NAME: &str = "internet";

/// What makes two edges the same edge: the client and the target's identity.
///
/// Target attributes that accumulate (ports, IPs, actions, kinds) are not part of the key.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EdgeKey {
    pub client_namespace: String,
    pub client_name: String,
    pub target_type: &'static str,
    /// Empty for targets outside Kubernetes.
    pub target_namespace: String,
    /// Workload or Service name, the internet target's identity, or the AWS ARN.
    pub target_name: String,
}

impl Edge {
    pub fn key(&self) -> EdgeKey {
        let (target_namespace, target_name) = match &self.target {
            Target::Kubernetes(w) => (w.namespace.clone(), w.name.clone()),
            Target::Service(s) => (s.namespace.clone(), s.name.clone()),
            Target::Internet(i) => (String::new(), i.identity().to_owned()),
            Target::Aws(a) => (String::new(), a.arn.clone()),
            Target::Kafka(w) => (w.namespace.clone(), w.name.clone()),
            Target::Incoming(_) => (String::new(), INCOMING_NAME.to_owned()),
        };
        EdgeKey {
            client_namespace: self.client.namespace.clone(),
            client_name: self.client.name.clone(),
            target_type: self.target.type_name(),
            target_namespace,
            target_name,
        }
    }

    /// Folds a later (or earlier) observation of the same edge into this one.
    pub fn absorb(&mut self, other: &Edge) {
        self.first_seen = self.first_seen.min(other.first_seen);
        self.last_seen = self.last_seen.max(other.last_seen);
        self.connections = self.connections.saturating_add(other.connections);
        self.ports = union(&self.ports, &other.ports);
        if other.client.kind.is_some() {
            self.client.kind.clone_from(&other.client.kind);
        }
        match (&mut self.target, &other.target) {
            (Target::Kubernetes(a), Target::Kubernetes(b)) if b.kind.is_some() => {
                a.kind.clone_from(&b.kind)
            }
            (Target::Internet(a), Target::Internet(b))
            | (Target::Incoming(a), Target::Incoming(b)) => {
                a.domains = union(&a.domains, &b.domains);
                a.ips = union(&a.ips, &b.ips);
                a.ports = union(&a.ports, &b.ports);
            }
            (Target::Aws(a), Target::Aws(b)) => a.actions = union(&a.actions, &b.actions),
            (Target::Kafka(a), Target::Kafka(b)) if b.kind.is_some() => a.kind.clone_from(&b.kind),
            _ => {}
        }
        self.http = merge_http(&self.http, &other.http);
        self.kafka = merge_kafka(&self.kafka, &other.kafka);
        self.bytes = Traffic::sum(self.bytes, other.bytes);
    }
}

/// Paths in order, each with the union of its methods.
pub fn merge_http(a: &[HttpResource], b: &[HttpResource]) -> Vec<HttpResource> {
    let mut paths: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for r in a.iter().chain(b) {
        let methods = paths.entry(r.path.as_str()).or_default();
        *methods = union(methods, &r.methods);
    }
    paths
        .into_iter()
        .map(|(path, methods)| HttpResource { path: path.to_owned(), methods })
        .collect()
}

/// Topics in order, each with the union of its operations and of its denied operations.
pub fn merge_kafka(a: &[KafkaTopic], b: &[KafkaTopic]) -> Vec<KafkaTopic> {
    let mut topics: BTreeMap<&str, (Vec<String>, Vec<String>)> = BTreeMap::new();
    for t in a.iter().chain(b) {
        let (operations, denied) = topics.entry(t.name.as_str()).or_default();
        *operations = union(operations, &t.operations);
        *denied = union(denied, &t.denied);
    }
    topics
        .into_iter()
        .map(|(name, (operations, denied))| KafkaTopic {
            name: name.to_owned(),
            operations,
            denied,
        })
        .collect()
}

/// Sorted union without duplicates.
pub fn union<T: Ord + Clone>(a: &[T], b: &[T]) -> Vec<T> {
    a.iter().chain(b).cloned().collect::<BTreeSet<_>>().into_iter().collect()
}

/// Merges edges with the same [`EdgeKey`], returning them sorted by key.
pub fn merge_edges(edges: impl IntoIterator<Item = Edge>) -> Vec<Edge> {
    let mut merged: BTreeMap<EdgeKey, Edge> = BTreeMap::new();
    for mut edge in edges {
        normalise(&mut edge);
        match merged.entry(edge.key()) {
            std::collections::btree_map::Entry::Occupied(mut e) => e.get_mut().absorb(&edge),
            std::collections::btree_map::Entry::Vacant(v) => {
                v.insert(edge);
            }
        }
    }
    merged.into_values().collect()
}

fn normalise(edge: &mut Edge) {
    edge.ports = union(&edge.ports, &[]);
    edge.http = merge_http(&edge.http, &[]);
    edge.kafka = merge_kafka(&edge.kafka, &[]);
    match &mut edge.target {
        Target::Internet(i) | Target::Incoming(i) => {
            i.domains = union(&i.domains, &[]);
            i.ips = union(&i.ips, &[]);
            i.ports = union(&i.ports, &[]);
        }
        Target::Aws(a) => a.actions = union(&a.actions, &[]),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn byte_counts_read_in_binary_units() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (1536, "1.5 KiB"),
            (300_000, "293 KiB"),
            (1_048_064, "1.0 MiB"),
            (2_000_000, "1.9 MiB"),
            (5 << 30, "5.0 GiB"),
            (u64::MAX, "16 EiB"),
        ];
        for (n, text) in cases {
            assert_eq!(human_bytes(n), text, "{n}");
        }
        assert_eq!(
            Traffic { sent: 1_258_292, received: 3_565_158 }.label(),
            "1.2 MiB ↑ / 3.4 MiB ↓"
        );
    }

    #[test]
    fn transports_print_lowercase() {
        assert_eq!(Transport::Udp.to_string(), "udp");
        assert_eq!(Transport::Tcp.to_string(), "tcp");
    }

    fn edge(client: &str, target: Target, port: u16, first: &str, last: &str, n: u64) -> Edge {
        Edge {
            client: WorkloadRef::new("shop", client, Some("Deployment")),
            target,
            ports: vec![PortSpec { port, protocol: Protocol::Tcp }],
            first_seen: t(first),
            last_seen: t(last),
            connections: n,
            http: Vec::new(),
            kafka: Vec::new(),
            bytes: None,
        }
    }

    #[test]
    fn merging_the_same_edge_widens_its_window_and_adds_counts() {
        let cart = Target::Kubernetes(WorkloadRef::new("shop", "cart", Some("Deployment")));
        let merged = merge_edges([
            edge("frontend", cart.clone(), 7070, "2026-01-01T10:00:00Z", "2026-01-01T10:05:00Z", 3),
            edge("frontend", cart.clone(), 8080, "2026-01-01T09:00:00Z", "2026-01-01T09:30:00Z", 4),
            edge("checkout", cart, 7070, "2026-01-01T10:00:00Z", "2026-01-01T10:00:00Z", 1),
        ]);
        assert_eq!(merged.len(), 2, "two distinct clients");
        let front = merged.iter().find(|e| e.client.name == "frontend").unwrap();
        assert_eq!(front.connections, 7);
        assert_eq!(front.first_seen, t("2026-01-01T09:00:00Z"));
        assert_eq!(front.last_seen, t("2026-01-01T10:05:00Z"));
        assert_eq!(front.ports.iter().map(|p| p.port).collect::<Vec<_>>(), vec![7070, 8080]);
    }

    #[test]
    fn internet_targets_are_one_destination_per_name_and_accumulate_ips() {
        let a = Target::Internet(InternetTarget {
            domains: vec!["api.stripe.com".into()],
            ips: vec!["203.0.113.7".into()],
            ports: vec![443],
        });
        let b = Target::Internet(InternetTarget {
            domains: vec!["api.stripe.com".into()],
            ips: vec!["203.0.113.8".into()],
            ports: vec![443],
        });
        let merged = merge_edges([
            edge("frontend", a, 443, "2026-01-01T10:00:00Z", "2026-01-01T10:00:00Z", 1),
            edge("frontend", b, 443, "2026-01-01T11:00:00Z", "2026-01-01T11:00:00Z", 1),
        ]);
        assert_eq!(merged.len(), 1);
        let Target::Internet(i) = &merged[0].target else { panic!("internet target expected") };
        assert_eq!(i.ips, vec!["203.0.113.7", "203.0.113.8"]);
        assert_eq!(i.ports, vec![443]);
    }

    #[test]
    fn port_specs_round_trip_through_text() {
        let p: PortSpec = "5432/TCP".parse().unwrap();
        assert_eq!(p, PortSpec { port: 5432, protocol: Protocol::Tcp });
        assert_eq!(p.to_string().parse::<PortSpec>().unwrap(), p);
        assert!("70000/TCP".parse::<PortSpec>().is_err());
        assert!("53/ICMP".parse::<PortSpec>().is_err());
    }
}
