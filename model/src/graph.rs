//! The access graph: every cluster of an organisation merged into one picture.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::edge::{
    merge_http, merge_kafka, union, Edge, HttpResource, KafkaTopic, PortSpec, Target, Traffic,
};
use crate::report::ExposedWorkload;

/// An edge as stored by the cloud: which cluster observed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterEdge {
    pub cluster: String,
    pub edge: Edge,
}

/// A workload that a cluster exposes to the outside.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterExposure {
    pub cluster: String,
    pub exposed: ExposedWorkload,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphFilter {
    /// Keep edges with either end in this cluster.
    pub cluster: Option<String>,
    /// Keep edges with either end in this namespace.
    pub namespace: Option<String>,
    /// Keep edges with either end named so.
    pub workload: Option<String>,
    /// Keep edges seen at or after this time.
    pub since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeKind {
    Workload,
    Service,
    Internet,
    Aws,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterSummary {
    pub name: String,
    pub edges: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphNode {
    pub id: String,
    pub kind: NodeKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    /// The Kubernetes kind of a workload (`Deployment`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_kind: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GraphEdge {
    pub source: String,
    pub target: String,
    /// The cluster whose agent observed the call.
    pub observed_in: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<PortSpec>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub connections: u64,
    /// For AWS targets: the IAM actions called.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actions: Vec<String>,
    /// When the target was resolved across clusters: the addresses or hostnames that matched.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    /// For incoming internet traffic (from the `internet` node to a workload): the addresses
    /// outside the cluster that called it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_ips: Vec<String>,
    /// HTTP paths and methods called on a workload or Service.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpResource>,
    /// Kafka topics and operations, when the target is a Kafka broker's workload; `denied` lists
    /// the operations the broker refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kafka: Vec<KafkaTopic>,
    /// Bytes the client sent and received over the calls' closed connections (see
    /// [`crate::edge::Traffic`]); absent when not measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<Traffic>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessGraph {
    pub clusters: Vec<ClusterSummary>,
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

/// The id of the node every cluster's incoming internet traffic comes from.
pub const INCOMING_NODE_ID: &str = "incoming/internet";

/// The source of incoming internet traffic: one node for the whole organisation.
fn incoming_node() -> GraphNode {
    GraphNode {
        id: INCOMING_NODE_ID.to_owned(),
        kind: NodeKind::Internet,
        cluster: None,
        namespace: None,
        name: "internet (incoming)".to_owned(),
        workload_kind: None,
    }
}

fn workload_id(cluster: &str, namespace: &str, name: &str) -> String {
    format!("{cluster}/{namespace}/{name}")
}

impl AccessGraph {
    /// Builds the organisation's graph. A call to an internet address or hostname that another
    /// (or the same) cluster exposes is drawn to that cluster's workload instead.
    pub fn build(
        clusters: &[String],
        edges: &[ClusterEdge],
        exposures: &[ClusterExposure],
        filter: &GraphFilter,
    ) -> Self {
        let mut exposed_by: HashMap<&str, Vec<&ClusterExposure>> = HashMap::new();
        for e in exposures {
            for key in e.exposed.addresses.iter().chain(&e.exposed.hostnames) {
                exposed_by.entry(key.trim_end_matches('.')).or_default().push(e);
            }
        }

        let mut nodes: BTreeMap<String, GraphNode> = BTreeMap::new();
        let mut merged: BTreeMap<(String, String, String), GraphEdge> = BTreeMap::new();
        for ce in edges {
            let edge = &ce.edge;
            if filter.since.is_some_and(|since| edge.last_seen < since) {
                continue;
            }
            let workload = GraphNode {
                id: workload_id(&ce.cluster, &edge.client.namespace, &edge.client.name),
                kind: NodeKind::Workload,
                cluster: Some(ce.cluster.clone()),
                namespace: Some(edge.client.namespace.clone()),
                name: edge.client.name.clone(),
                workload_kind: edge.client.kind.clone(),
            };
            // Incoming internet traffic is drawn the way it went: from the internet to the workload.
            let (client, target, via, actions, client_ips) = match &edge.target {
                Target::Incoming(i) => (incoming_node(), workload, vec![], vec![], i.ips.clone()),
                other => {
                    let (target, via, actions) = target_node(&ce.cluster, other, &exposed_by);
                    (workload, target, via, actions, vec![])
                }
            };
            if !filter_keeps(filter, &client, &target) {
                continue;
            }
            let key = (client.id.clone(), target.id.clone(), ce.cluster.clone());
            let ports = match &edge.target {
                Target::Internet(i) if edge.ports.is_empty() => i
                    .ports
                    .iter()
                    .map(|&port| PortSpec { port, protocol: Default::default() })
                    .collect(),
                _ => edge.ports.clone(),
            };
            match merged.get_mut(&key) {
                Some(g) => {
                    g.first_seen = g.first_seen.min(edge.first_seen);
                    g.last_seen = g.last_seen.max(edge.last_seen);
                    g.connections = g.connections.saturating_add(edge.connections);
                    g.ports = union(&g.ports, &ports);
                    g.actions = union(&g.actions, &actions);
                    g.via = union(&g.via, &via);
                    g.client_ips = union(&g.client_ips, &client_ips);
                    g.http = merge_http(&g.http, &edge.http);
                    g.kafka = merge_kafka(&g.kafka, &edge.kafka);
                    g.bytes = Traffic::sum(g.bytes, edge.bytes);
                }
                None => {
                    merged.insert(
                        key,
                        GraphEdge {
                            source: client.id.clone(),
                            target: target.id.clone(),
                            observed_in: ce.cluster.clone(),
                            ports,
                            first_seen: edge.first_seen,
                            last_seen: edge.last_seen,
                            connections: edge.connections,
                            actions,
                            via,
                            client_ips: union(&client_ips, &[]),
                            http: merge_http(&edge.http, &[]),
                            kafka: merge_kafka(&edge.kafka, &[]),
                            bytes: edge.bytes,
                        },
                    );
                }
            }
            merge_node(&mut nodes, client);
            merge_node(&mut nodes, target);
        }

        let edges: Vec<GraphEdge> = merged.into_values().collect();
        let clusters = clusters
            .iter()
            .filter(|c| filter.cluster.as_ref().is_none_or(|f| f == *c))
            .map(|name| ClusterSummary {
                name: name.clone(),
                edges: edges.iter().filter(|e| &e.observed_in == name).count(),
            })
            .collect();
        AccessGraph { clusters, nodes: nodes.into_values().collect(), edges }
    }

    /// Graphviz DOT: one box per cluster, one per namespace inside it, external targets outside.
    pub fn to_dot(&self) -> String {
        let mut out = String::from("digraph access_graph {\n  rankdir=LR;\n  node [shape=box, style=rounded, fontname=\"Helvetica\"];\n");
        let mut grouped: BTreeMap<(&str, &str), Vec<&GraphNode>> = BTreeMap::new();
        let mut outside = Vec::new();
        for node in &self.nodes {
            match (&node.cluster, &node.namespace) {
                (Some(c), Some(ns)) => {
                    grouped.entry((c.as_str(), ns.as_str())).or_default().push(node)
                }
                _ => outside.push(node),
            }
        }
        let clusters: BTreeSet<&str> = grouped.keys().map(|(c, _)| *c).collect();
        for (ci, cluster) in clusters.iter().enumerate() {
            let _ = writeln!(
                out,
                "  subgraph cluster_{ci} {{\n    label={};\n    style=bold;",
                quote(&format!("cluster {cluster}"))
            );
            for (ni, ((_, ns), members)) in
                grouped.iter().filter(|((c, _), _)| c == cluster).enumerate()
            {
                let _ = writeln!(
                    out,
                    "    subgraph cluster_{ci}_{ni} {{\n      label={};\n      style=dashed;",
                    quote(&format!("namespace {ns}"))
                );
                for node in members {
                    let _ = writeln!(
                        out,
                        "      {} [label={}];",
                        quote(&node.id),
                        quote(&node_label(node))
                    );
                }
                out.push_str("    }\n");
            }
            out.push_str("  }\n");
        }
        for node in outside {
            let shape = if node.kind == NodeKind::Aws { "component" } else { "ellipse" };
            let _ = writeln!(
                out,
                "  {} [label={}, shape={shape}];",
                quote(&node.id),
                quote(&node_label(node))
            );
        }
        for edge in &self.edges {
            let _ = writeln!(
                out,
                "  {} -> {} [label={}];",
                quote(&edge.source),
                quote(&edge.target),
                quote(&edge_label(edge))
            );
        }
        out.push_str("}\n");
        out
    }
}

/// Topics and paths shown on one edge of the DOT drawing; the JSON has them all.
const DOT_LABEL_ITEMS: usize = 3;

/// Ports and actions on the first line, then one line per Kafka topic and per HTTP path, a few
/// of each: `topic orders: consume produce (denied: describe)`, `GET,POST /api`.
fn edge_label(edge: &GraphEdge) -> String {
    let mut first: Vec<String> = edge.ports.iter().map(|p| p.to_string()).collect();
    first.extend(edge.actions.iter().cloned());
    let mut lines = vec![first.join(", ")];
    if !edge.client_ips.is_empty() {
        let mut from: Vec<&str> =
            edge.client_ips.iter().take(DOT_LABEL_ITEMS).map(String::as_str).collect();
        let more = edge.client_ips.len().saturating_sub(DOT_LABEL_ITEMS);
        let more = format!("+{more} more");
        if edge.client_ips.len() > DOT_LABEL_ITEMS {
            from.push(&more);
        }
        lines.push(format!("from {}", from.join(", ")));
    }
    for t in edge.kafka.iter().take(DOT_LABEL_ITEMS) {
        let mut line = format!("topic {}", t.name);
        if !t.operations.is_empty() {
            let _ = write!(line, ": {}", t.operations.join(" "));
        }
        if !t.denied.is_empty() {
            let _ = write!(line, " (denied: {})", t.denied.join(" "));
        }
        lines.push(line);
    }
    if edge.kafka.len() > DOT_LABEL_ITEMS {
        lines.push(format!("+{} more topics", edge.kafka.len() - DOT_LABEL_ITEMS));
    }
    for r in edge.http.iter().take(DOT_LABEL_ITEMS) {
        lines.push(if r.methods.is_empty() {
            r.path.clone()
        } else {
            format!("{} {}", r.methods.join(","), r.path)
        });
    }
    if edge.http.len() > DOT_LABEL_ITEMS {
        lines.push(format!("+{} more paths", edge.http.len() - DOT_LABEL_ITEMS));
    }
    // The volume, when a node agent measured it (`sent` along the arrow).
    if let Some(bytes) = edge.bytes {
        lines.push(bytes.label());
    }
    if lines.len() > 1 && lines[0].is_empty() {
        lines.remove(0);
    }
    lines.join("\n")
}

fn node_label(node: &GraphNode) -> String {
    match &node.workload_kind {
        Some(kind) => format!("{}\n({kind})", node.name),
        None => node.name.clone(),
    }
}

/// A DOT ID in double quotes, with quotes, backslashes and newlines escaped.
fn quote(s: &str) -> String {
    let mut q = String::with_capacity(s.len() + 2);
    q.push('"');
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fn merge_node(nodes: &mut BTreeMap<String, GraphNode>, node: GraphNode) {
    match nodes.get_mut(&node.id) {
        Some(existing) => {
            if existing.workload_kind.is_none() {
                existing.workload_kind = node.workload_kind;
            }
        }
        None => {
            nodes.insert(node.id.clone(), node);
        }
    }
}

fn filter_keeps(filter: &GraphFilter, a: &GraphNode, b: &GraphNode) -> bool {
    let either = |f: &dyn Fn(&GraphNode) -> bool| f(a) || f(b);
    filter.cluster.as_ref().is_none_or(|c| either(&|n| n.cluster.as_ref() == Some(c)))
        && filter.namespace.as_ref().is_none_or(|ns| either(&|n| n.namespace.as_ref() == Some(ns)))
        && filter.workload.as_ref().is_none_or(|w| either(&|n| &n.name == w))
}

/// The node a target is drawn as, the exposure keys that moved it across clusters, and its actions.
fn target_node(
    cluster: &str,
    target: &Target,
    exposed_by: &HashMap<&str, Vec<&ClusterExposure>>,
) -> (GraphNode, Vec<String>, Vec<String>) {
    match target {
        Target::Kubernetes(w) | Target::Kafka(w) => (
            GraphNode {
                id: workload_id(cluster, &w.namespace, &w.name),
                kind: NodeKind::Workload,
                cluster: Some(cluster.to_owned()),
                namespace: Some(w.namespace.clone()),
                name: w.name.clone(),
                workload_kind: w.kind.clone(),
            },
            vec![],
            vec![],
        ),
        Target::Service(s) => (
            GraphNode {
                id: format!("{cluster}/{}/service/{}", s.namespace, s.name),
                kind: NodeKind::Service,
                cluster: Some(cluster.to_owned()),
                namespace: Some(s.namespace.clone()),
                name: s.name.clone(),
                workload_kind: Some("Service".into()),
            },
            vec![],
            vec![],
        ),
        Target::Internet(i) => {
            let keys: Vec<&String> = i.domains.iter().chain(&i.ips).collect();
            let hit = keys
                .iter()
                .find_map(|k| exposed_by.get(k.trim_end_matches('.')).and_then(|v| v.first()));
            match hit {
                Some(exp) => {
                    let via: Vec<String> = keys
                        .iter()
                        .filter(|k| {
                            exposed_by
                                .get(k.trim_end_matches('.'))
                                .is_some_and(|v| v.iter().any(|e| std::ptr::eq(*e, *exp)))
                        })
                        .map(|k| (*k).clone())
                        .collect();
                    let via = union(&via, &[]);
                    let w = &exp.exposed;
                    (
                        GraphNode {
                            id: workload_id(&exp.cluster, &w.namespace, &w.name),
                            kind: NodeKind::Workload,
                            cluster: Some(exp.cluster.clone()),
                            namespace: Some(w.namespace.clone()),
                            name: w.name.clone(),
                            workload_kind: w.kind.clone(),
                        },
                        via,
                        vec![],
                    )
                }
                None => {
                    let name = i.identity().to_owned();
                    (
                        GraphNode {
                            id: format!("internet/{name}"),
                            kind: NodeKind::Internet,
                            cluster: None,
                            namespace: None,
                            name,
                            workload_kind: None,
                        },
                        vec![],
                        vec![],
                    )
                }
            }
        }
        Target::Aws(a) => (
            GraphNode {
                id: format!("aws/{}", a.arn),
                kind: NodeKind::Aws,
                cluster: None,
                namespace: None,
                name: a.arn.clone(),
                workload_kind: None,
            },
            vec![],
            a.actions.clone(),
        ),
        // `build` draws incoming traffic from this node to the workload, not through here.
        Target::Incoming(_) => (incoming_node(), vec![], vec![]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{InternetTarget, Protocol, WorkloadRef};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn edge(cluster: &str, client: &str, target: Target, last: &str) -> ClusterEdge {
        ClusterEdge {
            cluster: cluster.into(),
            edge: Edge {
                client: WorkloadRef::new("shop", client, Some("Deployment")),
                target,
                ports: vec![PortSpec { port: 443, protocol: Protocol::Tcp }],
                first_seen: t("2026-11-01T00:00:00Z"),
                last_seen: t(last),
                connections: 2,
                http: Vec::new(),
                kafka: Vec::new(),
                bytes: None,
            },
        }
    }

    fn internet(domain: &str, ip: &str) -> Target {
        Target::Internet(InternetTarget {
            domains: vec![domain.into()],
            ips: vec![ip.into()],
            ports: vec![443],
        })
    }

    #[test]
    fn incoming_internet_traffic_is_drawn_from_the_internet_to_the_workload() {
        let from = |ips: &[&str]| {
            Target::Incoming(InternetTarget {
                domains: vec![],
                ips: ips.iter().map(|s| (*s).to_owned()).collect(),
                ports: vec![],
            })
        };
        let edges = vec![
            edge("us", "frontend", from(&["203.0.113.7"]), "2026-11-02T00:00:00Z"),
            edge("us", "frontend", from(&["198.51.100.3"]), "2026-11-03T00:00:00Z"),
            edge("eu", "gateway", from(&["203.0.113.7"]), "2026-11-03T00:00:00Z"),
        ];
        let graph =
            AccessGraph::build(&["eu".into(), "us".into()], &edges, &[], &GraphFilter::default());
        let incoming: Vec<_> =
            graph.edges.iter().filter(|e| e.source == INCOMING_NODE_ID).collect();
        assert_eq!(incoming.len(), 2, "{:?}", graph.edges);
        let frontend = incoming.iter().find(|e| e.target == "us/shop/frontend").unwrap();
        assert_eq!(frontend.client_ips, ["198.51.100.3", "203.0.113.7"]);
        assert_eq!(frontend.connections, 4);
        let node = graph.nodes.iter().find(|n| n.id == INCOMING_NODE_ID).unwrap();
        assert_eq!(node.kind, NodeKind::Internet);
        // The namespace filter keeps a workload's incoming traffic.
        let filter = GraphFilter { namespace: Some("shop".into()), ..Default::default() };
        let filtered = AccessGraph::build(&["us".into()], &edges, &[], &filter);
        assert_eq!(filtered.edges.len(), 2);
        let dot = graph.to_dot();
        assert!(
            dot.contains("\"incoming/internet\" -> \"us/shop/frontend\" [label=\"443/TCP\\nfrom 198.51.100.3, 203.0.113.7\"]"),
            "{dot}"
        );
    }

    #[test]
    fn a_call_to_an_address_another_cluster_exposes_lands_on_its_workload() {
        let exposures = vec![ClusterExposure {
            cluster: "eu".into(),
            exposed: ExposedWorkload {
                namespace: "pay".into(),
                name: "gateway".into(),
                kind: Some("Deployment".into()),
                addresses: vec!["198.51.100.10".into()],
                hostnames: vec!["pay.example.com".into()],
            },
        }];
        let edges = vec![
            edge(
                "us",
                "frontend",
                internet("pay.example.com", "198.51.100.10"),
                "2026-11-02T00:00:00Z",
            ),
            edge(
                "us",
                "frontend",
                internet("api.stripe.com", "203.0.113.7"),
                "2026-11-02T00:00:00Z",
            ),
        ];
        let g = AccessGraph::build(
            &["eu".into(), "us".into()],
            &edges,
            &exposures,
            &GraphFilter::default(),
        );
        let targets: Vec<&str> = g.edges.iter().map(|e| e.target.as_str()).collect();
        assert_eq!(targets, vec!["eu/pay/gateway", "internet/api.stripe.com"]);
        assert_eq!(g.edges[0].via, vec!["198.51.100.10", "pay.example.com"]);
        let gw = g.nodes.iter().find(|n| n.id == "eu/pay/gateway").unwrap();
        assert_eq!(gw.cluster.as_deref(), Some("eu"));

        let only_eu = AccessGraph::build(
            &["eu".into(), "us".into()],
            &edges,
            &exposures,
            &GraphFilter { cluster: Some("eu".into()), ..Default::default() },
        );
        assert_eq!(only_eu.edges.len(), 1, "the cross-cluster call touches eu");
        assert_eq!(only_eu.clusters.len(), 1);
    }

    #[test]
    fn filters_by_time_and_workload() {
        let cart = Target::Kubernetes(WorkloadRef::new("shop", "cart", None));
        let edges = vec![
            edge("us", "frontend", cart.clone(), "2026-11-02T00:00:00Z"),
            edge("us", "checkout", cart, "2026-11-20T00:00:00Z"),
        ];
        let recent = AccessGraph::build(
            &["us".into()],
            &edges,
            &[],
            &GraphFilter { since: Some(t("2026-11-10T00:00:00Z")), ..Default::default() },
        );
        assert_eq!(recent.edges.len(), 1);
        assert_eq!(recent.edges[0].source, "us/shop/checkout");
        let front = AccessGraph::build(
            &["us".into()],
            &edges,
            &[],
            &GraphFilter { workload: Some("frontend".into()), ..Default::default() },
        );
        assert_eq!(front.edges.len(), 1);
        assert_eq!(front.nodes.len(), 2);
    }

    #[test]
    fn dot_groups_clusters_and_namespaces_and_escapes_names() {
        let edges = vec![edge(
            "us",
            "frontend",
            internet("api.stripe.com", "203.0.113.7"),
            "2026-11-02T00:00:00Z",
        )];
        let dot = AccessGraph::build(&["us".into()], &edges, &[], &GraphFilter::default()).to_dot();
        assert!(dot.starts_with("digraph access_graph {"));
        assert!(dot.contains("label=\"cluster us\""));
        assert!(dot.contains("label=\"namespace shop\""));
        assert!(dot
            .contains("\"us/shop/frontend\" -> \"internet/api.stripe.com\" [label=\"443/TCP\"];"));
        assert_eq!(quote("a\"b\\c\nd"), "\"a\\\"b\\\\c\\nd\"");
    }
    fn topic(name: &str, operations: &[&str], denied: &[&str]) -> KafkaTopic {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        KafkaTopic { name: name.into(), operations: strings(operations), denied: strings(denied) }
    }

    fn path(path: &str, methods: &[&str]) -> HttpResource {
        HttpResource { path: path.into(), methods: methods.iter().map(|s| s.to_string()).collect() }
    }

    #[test]
    fn a_kafka_target_is_the_broker_workload_and_edges_carry_topics_and_paths() {
        let broker = WorkloadRef::new("infra", "kafka", Some("StatefulSet"));
        let mut tcp =
            edge("us", "checkout", Target::Kubernetes(broker.clone()), "2026-11-02T00:00:00Z");
        tcp.edge.ports = vec![PortSpec { port: 9092, protocol: Protocol::Tcp }];
        let mut kafka =
            edge("us", "checkout", Target::Kafka(broker.clone()), "2026-11-03T00:00:00Z");
        kafka.edge.ports = vec![PortSpec { port: 9092, protocol: Protocol::Tcp }];
        kafka.edge.kafka = vec![topic("orders", &["describe", "produce"], &["describe"])];
        let mut kafka_again = edge("us", "checkout", Target::Kafka(broker), "2026-11-04T00:00:00Z");
        kafka_again.edge.kafka =
            vec![topic("orders", &["consume"], &[]), topic("audit", &["produce"], &[])];
        let mut cart = edge(
            "us",
            "checkout",
            Target::Kubernetes(WorkloadRef::new("shop", "cart", None)),
            "2026-11-02T00:00:00Z",
        );
        cart.edge.http = vec![path("/api/cart", &["POST", "GET"]), path("/healthz", &[])];
        let g = AccessGraph::build(
            &["us".into()],
            &[tcp, kafka, kafka_again, cart],
            &[],
            &GraphFilter::default(),
        );

        assert_eq!(
            g.nodes.iter().filter(|n| n.id == "us/infra/kafka").count(),
            1,
            "one node for the broker: {:?}",
            g.nodes
        );
        let broker = g.nodes.iter().find(|n| n.id == "us/infra/kafka").unwrap();
        assert_eq!(
            (broker.kind, broker.workload_kind.as_deref()),
            (NodeKind::Workload, Some("StatefulSet"))
        );
        assert_eq!(
            g.edges.len(),
            2,
            "plain TCP and Kafka calls to the broker are one edge of the graph"
        );
        let to_broker = g.edges.iter().find(|e| e.target == "us/infra/kafka").unwrap();
        assert_eq!(to_broker.connections, 6);
        assert_eq!(
            to_broker.kafka,
            vec![
                topic("audit", &["produce"], &[]),
                topic("orders", &["consume", "describe", "produce"], &["describe"])
            ]
        );
        let json = serde_json::to_value(to_broker).unwrap();
        assert_eq!(
            json["kafka"][1],
            serde_json::json!({"name": "orders", "operations": ["consume", "describe", "produce"], "denied": ["describe"]})
        );
        assert!(json.get("http").is_none());
        let to_cart = g.edges.iter().find(|e| e.target == "us/shop/cart").unwrap();
        assert_eq!(to_cart.http, vec![path("/api/cart", &["GET", "POST"]), path("/healthz", &[])]);

        let dot = g.to_dot();
        assert!(
            dot.contains("\"us/shop/checkout\" -> \"us/infra/kafka\" [label=\"443/TCP, 9092/TCP\\ntopic audit: produce\\ntopic orders: consume describe produce (denied: describe)\"];"),
            "{dot}"
        );
        assert!(dot.contains("\"us/shop/checkout\" -> \"us/shop/cart\" [label=\"443/TCP\\nGET,POST /api/cart\\n/healthz\"];"), "{dot}");
    }

    #[test]
    fn dot_labels_show_the_measured_volume() {
        let mut measured = edge(
            "us",
            "frontend",
            Target::Kubernetes(WorkloadRef::new("shop", "cart", None)),
            "2026-11-24T10:00:00Z",
        );
        measured.edge.bytes = Some(Traffic { sent: 300_000, received: 2_000_000 });
        let unmeasured = edge(
            "us",
            "frontend",
            Target::Kubernetes(WorkloadRef::new("shop", "ledger", None)),
            "2026-11-24T10:00:00Z",
        );
        let graph = AccessGraph::build(
            &["us".into()],
            &[measured.clone(), measured, unmeasured],
            &[],
            &GraphFilter::default(),
        );
        let dot = graph.to_dot();
        assert!(
            dot.contains("\"us/shop/frontend\" -> \"us/shop/cart\" [label=\"443/TCP\\n586 KiB ↑ / 3.8 MiB ↓\"];"),
            "two reports of one edge add up: {dot}"
        );
        assert!(
            dot.contains("\"us/shop/frontend\" -> \"us/shop/ledger\" [label=\"443/TCP\"];"),
            "{dot}"
        );
        let json = serde_json::to_value(&graph).unwrap();
        assert_eq!(
            json["edges"][0]["bytes"],
            serde_json::json!({"sent": 600_000, "received": 4_000_000})
        );
        assert!(json["edges"][1].get("bytes").is_none(), "unmeasured: absent, not zero");
    }

    #[test]
    fn dot_labels_show_a_few_topics_and_paths() {
        let mut e = edge(
            "us",
            "checkout",
            Target::Kubernetes(WorkloadRef::new("shop", "cart", None)),
            "2026-11-02T00:00:00Z",
        );
        e.edge.ports.clear();
        e.edge.http = (0..5).map(|i| path(&format!("/p{i}"), &["GET"])).collect();
        let dot = AccessGraph::build(&["us".into()], &[e], &[], &GraphFilter::default()).to_dot();
        assert!(dot.contains("[label=\"GET /p0\\nGET /p1\\nGET /p2\\n+2 more paths\"];"), "{dot}");
    }
}
