//! The mapper's edges as a graph to draw: one node per workload, Service or outside target, one
//! link per caller and callee (edges between the same two nodes merged, their ports joined).

use std::collections::{BTreeMap, BTreeSet};

use model::{Edge, PortSpec, Protocol, Target, Traffic, WorkloadRef};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Workload,
    Service,
    Internet,
    Aws,
}

impl Kind {
    pub fn class(self) -> &'static str {
        match self {
            Kind::Workload => "workload",
            Kind::Service => "service",
            Kind::Internet => "internet",
            Kind::Aws => "aws",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: Kind,
    /// Set for workloads and Services: they are drawn inside their namespace's box.
    pub namespace: Option<String>,
    /// The name shown in bold.
    pub title: String,
    /// The line under it: the workload's kind, `Service`, `internet`, `AWS s3`...
    pub subtitle: String,
    /// The full identity, for the SVG's tooltip.
    pub tooltip: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Link {
    pub from: usize,
    pub to: usize,
    /// The ports called (`7070`, `53/UDP`), or `Kafka`; empty when none were seen.
    pub label: String,
    /// The bytes carried, when a node agent measured them (`sent` along the link).
    pub bytes: Option<Traffic>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub links: Vec<Link>,
}

impl Graph {
    /// Each node's links out and links in, as indices into `links`.
    pub fn link_lists(&self) -> (Vec<Vec<usize>>, Vec<Vec<usize>>) {
        let mut out = vec![Vec::new(); self.nodes.len()];
        let mut inc = vec![Vec::new(); self.nodes.len()];
        for (i, l) in self.links.iter().enumerate() {
            out[l.from].push(i);
            inc[l.to].push(i);
        }
        (out, inc)
    }

    /// How many nodes are workloads or Services (inside the cluster).
    pub fn inside(&self) -> usize {
        self.nodes.iter().filter(|n| n.namespace.is_some()).count()
    }
}

#[derive(Default)]
struct Builder {
    ids: BTreeMap<(Kind, String, String), usize>,
    nodes: Vec<Node>,
    kafka: BTreeSet<usize>,
}

impl Builder {
    fn node(
        &mut self,
        kind: Kind,
        namespace: Option<&str>,
        name: &str,
        make: impl FnOnce() -> Node,
    ) -> usize {
        let key = (kind, namespace.unwrap_or_default().to_owned(), name.to_owned());
        *self.ids.entry(key).or_insert_with(|| {
            self.nodes.push(make());
            self.nodes.len() - 1
        })
    }

    fn workload(&mut self, w: &WorkloadRef) -> usize {
        let id = self.node(Kind::Workload, Some(&w.namespace), &w.name, || Node {
            kind: Kind::Workload,
            namespace: Some(w.namespace.clone()),
            title: w.name.clone(),
            subtitle: String::new(),
            tooltip: format!("{} in namespace {}", w.name, w.namespace),
        });
        // The kind may be known from one edge and not another.
        if let (Some(kind), true) = (&w.kind, self.nodes[id].subtitle.is_empty()) {
            self.nodes[id].subtitle = kind.clone();
        }
        id
    }

    fn target(&mut self, target: &Target) -> usize {
        match target {
            Target::Kubernetes(w) => self.workload(w),
            Target::Kafka(w) => {
                let id = self.workload(w);
                self.kafka.insert(id);
                id
            }
            Target::Service(s) => self.node(Kind::Service, Some(&s.namespace), &s.name, || Node {
                kind: Kind::Service,
                namespace: Some(s.namespace.clone()),
                title: s.name.clone(),
                subtitle: "Service".into(),
                tooltip: format!("Service {} in namespace {}", s.name, s.namespace),
            }),
            Target::Internet(i) => self.node(Kind::Internet, None, i.identity(), || {
                let mut tooltip = format!("{} (internet)", i.identity());
                if !i.ips.is_empty() {
                    tooltip.push_str(&format!("\nIPs: {}", i.ips.join(", ")));
                }
                Node {
                    kind: Kind::Internet,
                    namespace: None,
                    title: i.identity().to_owned(),
                    subtitle: "internet".into(),
                    tooltip,
                }
            }),
            Target::Incoming(_) => self.node(Kind::Internet, None, INCOMING, || Node {
                kind: Kind::Internet,
                namespace: None,
                title: "internet".into(),
                subtitle: "incoming".into(),
                tooltip: "clients outside the cluster".into(),
            }),
            Target::Aws(a) => self.node(Kind::Aws, None, &a.arn, || {
                let (service, resource) = aws_parts(&a.arn);
                let subtitle =
                    if service.is_empty() { "AWS".to_owned() } else { format!("AWS {service}") };
                Node {
                    kind: Kind::Aws,
                    namespace: None,
                    title: resource.to_owned(),
                    subtitle,
                    tooltip: a.arn.clone(),
                }
            }),
        }
    }
}

/// The key of the one node that incoming internet traffic comes from (no domain is spelled so).
const INCOMING: &str = "(incoming)";

/// `arn:partition:service:region:account:resource` → (service, resource); anything else is all resource.
fn aws_parts(arn: &str) -> (&str, &str) {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    match parts.as_slice() {
        ["arn", _, service, _, _, resource] if !resource.is_empty() => (service, resource),
        _ => ("", arn),
    }
}

fn port_label(ports: &BTreeSet<PortSpec>, kafka: bool) -> String {
    let ports: Vec<String> = ports
        .iter()
        .map(|p| {
            if p.protocol == Protocol::Tcp {
                p.port.to_string()
            } else {
                format!("{}/{}", p.port, p.protocol.as_str())
            }
        })
        .collect();
    match (ports.is_empty(), kafka) {
        (true, true) => "Kafka".into(),
        _ => ports.join(", "),
    }
}

/// The graph of `edges`, nodes in the order they are first met.
pub fn build(edges: &[Edge]) -> Graph {
    let mut b = Builder::default();
    // Per (from, to): the ports, whether it is Kafka, the bytes.
    type Joined = (BTreeSet<PortSpec>, bool, Option<Traffic>);
    let mut links: BTreeMap<(usize, usize), Joined> = BTreeMap::new();
    for edge in edges {
        let workload = b.workload(&edge.client);
        let other = b.target(&edge.target);
        // Incoming internet traffic goes from the internet to the workload.
        let (from, to) = match edge.target {
            Target::Incoming(_) => (other, workload),
            _ => (workload, other),
        };
        let link = links.entry((from, to)).or_default();
        link.0.extend(edge.ports.iter().copied());
        link.1 |= matches!(edge.target, Target::Kafka(_));
        link.2 = Traffic::sum(link.2, edge.bytes);
    }
    for id in &b.kafka {
        let node = &mut b.nodes[*id];
        node.subtitle = if node.subtitle.is_empty() {
            "Kafka".into()
        } else {
            format!("{} · Kafka", node.subtitle)
        };
    }
    for node in &mut b.nodes {
        if node.subtitle.is_empty() {
            node.subtitle = "workload".into();
        }
    }
    let links = links
        .into_iter()
        .map(|((from, to), (ports, kafka, bytes))| Link {
            from,
            to,
            label: port_label(&ports, kafka),
            bytes,
        })
        .collect();
    Graph { nodes: b.nodes, links }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_arns_split_into_service_and_resource() {
        assert_eq!(aws_parts("arn:aws:s3:::shop-assets"), ("s3", "shop-assets"));
        assert_eq!(aws_parts("arn:aws:sqs:us-east-1:123456789012:orders"), ("sqs", "orders"));
        assert_eq!(aws_parts("not-an-arn"), ("", "not-an-arn"));
    }

    #[test]
    fn ports_read_as_people_write_them() {
        let ports: BTreeSet<PortSpec> =
            ["443/TCP", "53/UDP", "80"].iter().map(|p| p.parse().unwrap()).collect();
        assert_eq!(port_label(&ports, false), "53/UDP, 80, 443");
        assert_eq!(port_label(&BTreeSet::new(), true), "Kafka");
        assert_eq!(port_label(&BTreeSet::new(), false), "");
    }
}
