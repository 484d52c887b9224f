//! The text format of the `list` command: who calls what, one client at a time.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::edge::{merge_http, merge_kafka, union, Edge, HttpResource, KafkaTopic, Target};
use crate::intents::{calls_by_client, internet_ports};

/// Renders edges as the `list` command prints them:
///
/// ```text
/// frontend in namespace shop calls:
///   - cartservice
///   - redis in namespace shared
///   - api.stripe.com (internet, ports: 443)
///   - arn:aws:s3:::assets (AWS: s3:GetObject, s3:PutObject)
/// ```
///
/// - Clients are sorted by namespace, then name; targets in the same order as in ClientIntents
///   (in-cluster by name, then internet, then AWS; see [`crate::intents`]).
/// - A workload or Service in the client's namespace is its bare name, in another namespace
///   `{name} in namespace {namespace}`. A workload and a Service that read the same are listed once.
/// - An internet destination is its first domain (else first IP) followed by
///   `(internet)` or `(internet, ports: 443, 8443)`; one with no address at all reads `unknown address`.
/// - An AWS resource is its ARN followed by `(AWS: action, ...)`, or `(AWS)` when no action was seen.
/// - Under an in-cluster target, as Otterize's CLI prints them, its Kafka topics, then its HTTP
///   paths (of the workload and the Service of that name together), each sorted:
///
///   ```text
///   frontend in namespace web calls:
///     - cart in namespace shop
///       - Kafka topic: orders, operations: [consume produce]
///       - path /api, methods: [GET,POST]
///   ```
///
///   Operations are space-separated and methods comma-separated, inside `[]`. `operations` lists
///   every operation the client called, as its ClientIntents do; those the broker refused are
///   repeated after it: `operations: [consume describe], denied: [describe]`.
///
/// Incoming internet traffic follows, one workload at a time, sorted the same way:
///
/// ```text
/// frontend in namespace shop is called from outside the cluster by:
///   - 198.51.100.3, 203.0.113.7 (ports: 8080)
/// ```
///
/// No edges at all reads `No connections found.`
pub fn render_list(edges: &[Edge]) -> String {
    render_list_with(edges, ListStyle::Seeds)
}

/// How `list` names in-cluster targets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ListStyle {
    /// As the seeds (and Otterize's CLI docs) print: a target in the client's namespace by its
    /// bare name, any other as `{name} in namespace {namespace}`.
    #[default]
    Seeds,
    /// Every in-cluster target as `{name} in namespace {namespace}`, the client's own namespace
    /// too, as some Otterize CLI versions print.
    Qualified,
}

/// [`render_list`] in the given style.
pub fn render_list_with(edges: &[Edge], style: ListStyle) -> String {
    let clients = calls_by_client(edges);
    let incoming = incoming_by_server(edges);
    if clients.is_empty() && incoming.is_empty() {
        return "No connections found.\n".to_owned();
    }
    let mut out = String::new();
    for c in clients {
        let _ = writeln!(out, "{} in namespace {} calls:", c.client.name, c.client.namespace);
        // In-cluster targets of the same name and namespace (a Kafka broker, a workload, a
        // Service) sort next to each other and are listed once, with what each adds.
        let mut current: Option<(String, Vec<KafkaTopic>, Vec<HttpResource>)> = None;
        for edge in &c.calls {
            let line = describe(&c.client.namespace, edge, style);
            match &mut current {
                Some((previous, kafka, http)) if *previous == line => {
                    *kafka = merge_kafka(kafka, &edge.kafka);
                    *http = merge_http(http, &edge.http);
                }
                _ => {
                    if let Some(done) = current.take() {
                        write_target(&mut out, done);
                    }
                    current =
                        Some((line, merge_kafka(&edge.kafka, &[]), merge_http(&edge.http, &[])));
                }
            }
        }
        if let Some(done) = current {
            write_target(&mut out, done);
        }
    }
    for ((namespace, name), (ips, ports)) in incoming {
        let _ =
            writeln!(out, "{name} in namespace {namespace} is called from outside the cluster by:");
        let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
        if ports.is_empty() {
            let _ = writeln!(out, "  - {}", ips.join(", "));
        } else {
            let _ = writeln!(out, "  - {} (ports: {})", ips.join(", "), ports.join(", "));
        }
    }
    out
}

/// Incoming internet traffic per workload (namespace, name): its clients' addresses and the
/// ports they reached.
fn incoming_by_server(edges: &[Edge]) -> BTreeMap<(String, String), (Vec<String>, Vec<u16>)> {
    let mut by_server: BTreeMap<(String, String), (Vec<String>, Vec<u16>)> = BTreeMap::new();
    for edge in edges {
        if let Target::Incoming(i) = &edge.target {
            let key = (edge.client.namespace.clone(), edge.client.name.clone());
            let (ips, ports) = by_server.entry(key).or_default();
            *ips = union(ips, &i.ips);
            let seen: Vec<u16> = edge.ports.iter().map(|p| p.port).collect();
            *ports = union(ports, &seen);
        }
    }
    by_server
}

fn write_target(
    out: &mut String,
    (line, kafka, http): (String, Vec<KafkaTopic>, Vec<HttpResource>),
) {
    let _ = writeln!(out, "  - {line}");
    for t in kafka {
        let _ = write!(
            out,
            "    - Kafka topic: {}, operations: [{}]",
            t.name,
            union(&t.operations, &t.denied).join(" ")
        );
        if !t.denied.is_empty() {
            let _ = write!(out, ", denied: [{}]", t.denied.join(" "));
        }
        out.push('\n');
    }
    for r in http {
        let _ = writeln!(out, "    - path {}, methods: [{}]", r.path, r.methods.join(","));
    }
}

fn describe(client_namespace: &str, edge: &Edge, style: ListStyle) -> String {
    let in_cluster = |namespace: &str, name: &str| {
        if namespace == client_namespace && style == ListStyle::Seeds {
            name.to_owned()
        } else {
            format!("{name} in namespace {namespace}")
        }
    };
    match &edge.target {
        Target::Kubernetes(w) => in_cluster(&w.namespace, &w.name),
        Target::Service(s) => in_cluster(&s.namespace, &s.name),
        Target::Kafka(w) => in_cluster(&w.namespace, &w.name),
        Target::Internet(i) => {
            let name = match i.identity() {
                "" => "unknown address",
                name => name,
            };
            let ports = internet_ports(edge, i);
            if ports.is_empty() {
                format!("{name} (internet)")
            } else {
                let ports: Vec<String> = ports.iter().map(u16::to_string).collect();
                format!("{name} (internet, ports: {})", ports.join(", "))
            }
        }
        Target::Incoming(i) => format!("incoming from {} (internet)", i.ips.join(", ")),
        Target::Aws(a) if a.actions.is_empty() => format!("{} (AWS)", a.arn),
        Target::Aws(a) => format!("{} (AWS: {})", a.arn, a.actions.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{AwsTarget, InternetTarget, PortSpec, Protocol, ServiceRef, WorkloadRef};

    const NS: &str = "otterize-ecom-demo";

    fn edge(client_ns: &str, client: &str, target: Target) -> Edge {
        Edge {
            client: WorkloadRef::new(client_ns, client, Some("Deployment")),
            target,
            ports: vec![],
            first_seen: "2026-01-01T10:00:00Z".parse().unwrap(),
            last_seen: "2026-01-01T10:00:00Z".parse().unwrap(),
            connections: 1,
            http: Vec::new(),
            kafka: Vec::new(),
            bytes: None,
        }
    }

    fn calls(client: &str, server: &str) -> Edge {
        edge(NS, client, Target::Kubernetes(WorkloadRef::new(NS, server, Some("Deployment"))))
    }

    /// The `otterize network-mapper list` example in the network mapper's README.
    const ECOM_DEMO: &str = "\
cartservice in namespace otterize-ecom-demo calls:
  - redis-cart
checkoutservice in namespace otterize-ecom-demo calls:
  - cartservice
  - currencyservice
  - emailservice
  - paymentservice
  - productcatalogservice
  - shippingservice
frontend in namespace otterize-ecom-demo calls:
  - adservice
  - cartservice
  - checkoutservice
  - currencyservice
  - productcatalogservice
  - recommendationservice
  - shippingservice
loadgenerator in namespace otterize-ecom-demo calls:
  - frontend
recommendationservice in namespace otterize-ecom-demo calls:
  - productcatalogservice
";

    fn ecom_demo() -> Vec<Edge> {
        // Deliberately out of order, with a repeated observation.
        vec![
            calls("recommendationservice", "productcatalogservice"),
            calls("frontend", "shippingservice"),
            calls("frontend", "adservice"),
            calls("loadgenerator", "frontend"),
            calls("checkoutservice", "shippingservice"),
            calls("frontend", "recommendationservice"),
            calls("checkoutservice", "paymentservice"),
            calls("frontend", "cartservice"),
            calls("checkoutservice", "emailservice"),
            calls("frontend", "checkoutservice"),
            calls("checkoutservice", "currencyservice"),
            calls("frontend", "currencyservice"),
            calls("cartservice", "redis-cart"),
            calls("checkoutservice", "cartservice"),
            calls("frontend", "productcatalogservice"),
            calls("checkoutservice", "productcatalogservice"),
            calls("frontend", "cartservice"),
        ]
    }

    #[test]
    fn reproduces_the_readme_example() {
        assert_eq!(render_list(&ecom_demo()), ECOM_DEMO);
        let mut reversed = ecom_demo();
        reversed.reverse();
        assert_eq!(render_list(&reversed), ECOM_DEMO);
    }

    #[test]
    fn no_edges() {
        assert_eq!(render_list(&[]), "No connections found.\n");
    }

    #[test]
    fn other_namespaces_services_internet_and_aws() {
        let mut stripe = edge(
            "shop",
            "frontend",
            Target::Internet(InternetTarget {
                domains: vec!["api.stripe.com".into()],
                ips: vec!["203.0.113.7".into()],
                ports: vec![443],
            }),
        );
        stripe.ports = vec![PortSpec { port: 8443, protocol: Protocol::Tcp }];
        let edges = vec![
            edge(
                "shop",
                "frontend",
                Target::Aws(AwsTarget {
                    arn: "arn:aws:s3:::assets".into(),
                    actions: vec!["s3:PutObject".into(), "s3:GetObject".into()],
                }),
            ),
            edge(
                "shop",
                "frontend",
                Target::Aws(AwsTarget {
                    arn: "arn:aws:sqs:eu-west-1:123456789012:orders".into(),
                    actions: vec![],
                }),
            ),
            stripe,
            edge(
                "shop",
                "frontend",
                Target::Internet(InternetTarget {
                    domains: vec![],
                    ips: vec!["198.51.100.4".into()],
                    ports: vec![],
                }),
            ),
            edge(
                "shop",
                "frontend",
                Target::Kubernetes(WorkloadRef::new("shared", "redis", Some("StatefulSet"))),
            ),
            edge(
                "shop",
                "frontend",
                Target::Service(ServiceRef {
                    namespace: "shop".into(),
                    name: "cartservice".into(),
                }),
            ),
            edge(
                "shop",
                "frontend",
                Target::Kubernetes(WorkloadRef::new("shop", "cartservice", Some("Deployment"))),
            ),
            edge(
                "billing",
                "invoicer",
                Target::Service(ServiceRef {
                    namespace: "shop".into(),
                    name: "cartservice".into(),
                }),
            ),
        ];
        let expected = "\
invoicer in namespace billing calls:
  - cartservice in namespace shop
frontend in namespace shop calls:
  - cartservice
  - redis in namespace shared
  - 198.51.100.4 (internet)
  - api.stripe.com (internet, ports: 443, 8443)
  - arn:aws:s3:::assets (AWS: s3:GetObject, s3:PutObject)
  - arn:aws:sqs:eu-west-1:123456789012:orders (AWS)
";
        assert_eq!(render_list(&edges), expected);
    }

    fn with_http(mut e: Edge, http: &[(&str, &[&str])]) -> Edge {
        e.http = http
            .iter()
            .map(|(path, methods)| HttpResource {
                path: path.to_string(),
                methods: methods.iter().map(|m| m.to_string()).collect(),
            })
            .collect();
        e
    }

    fn with_kafka(mut e: Edge, topics: &[(&str, &[&str], &[&str])]) -> Edge {
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect();
        e.kafka = topics
            .iter()
            .map(|(name, ops, denied)| KafkaTopic {
                name: name.to_string(),
                operations: strings(ops),
                denied: strings(denied),
            })
            .collect();
        e
    }

    #[test]
    fn kafka_topics_and_http_paths_as_otterize_prints_them() {
        // The issue's example: cart is both a Kafka broker and an HTTP server.
        let cart = WorkloadRef::new("shop", "cart", Some("Deployment"));
        let edges = vec![
            with_http(
                edge("web", "frontend", Target::Kubernetes(cart.clone())),
                &[("/api", &["POST", "GET"])],
            ),
            with_kafka(
                edge("web", "frontend", Target::Kafka(cart)),
                &[("orders", &["produce", "consume"], &[])],
            ),
        ];
        let expected = "\
frontend in namespace web calls:
  - cart in namespace shop
    - Kafka topic: orders, operations: [consume produce]
    - path /api, methods: [GET,POST]
";
        assert_eq!(render_list(&edges), expected);
        let mut reversed = edges;
        reversed.reverse();
        assert_eq!(render_list(&reversed), expected);
    }

    #[test]
    fn denied_operations_paths_of_a_workload_and_its_service_and_topics_merge() {
        let broker = Target::Kafka(WorkloadRef::new("infra", "kafka", Some("StatefulSet")));
        let edges = vec![
            with_kafka(
                edge("shop", "checkout", broker.clone()),
                &[
                    ("orders", &["produce", "describe"], &["describe"]),
                    ("audit", &["produce"], &[]),
                ],
            ),
            with_kafka(edge("shop", "checkout", broker.clone()), &[("orders", &["consume"], &[])]),
            // Plain TCP to the broker adds nothing under it.
            edge(
                "shop",
                "checkout",
                Target::Kubernetes(WorkloadRef::new("infra", "kafka", Some("StatefulSet"))),
            ),
            with_http(
                edge(
                    "shop",
                    "checkout",
                    Target::Kubernetes(WorkloadRef::new("shop", "cart", None)),
                ),
                &[("/api/cart", &["GET"]), ("/healthz", &[])],
            ),
            with_http(
                edge(
                    "shop",
                    "checkout",
                    Target::Service(ServiceRef { namespace: "shop".into(), name: "cart".into() }),
                ),
                &[("/api/cart", &["DELETE"])],
            ),
            edge("shop", "checkout", Target::Kubernetes(WorkloadRef::new("shop", "payment", None))),
            with_kafka(edge("shop", "emailer", broker), &[("emails", &["consume"], &["consume"])]),
        ];
        let expected = "\
checkout in namespace shop calls:
  - cart
    - path /api/cart, methods: [DELETE,GET]
    - path /healthz, methods: []
  - kafka in namespace infra
    - Kafka topic: audit, operations: [produce]
    - Kafka topic: orders, operations: [consume describe produce], denied: [describe]
  - payment
emailer in namespace shop calls:
  - kafka in namespace infra
    - Kafka topic: emails, operations: [consume], denied: [consume]
";
        assert_eq!(render_list(&edges), expected);
    }

    #[test]
    fn the_qualified_style_names_the_namespace_of_every_in_cluster_target() {
        let edges = vec![
            edge("shop", "web", Target::Kubernetes(WorkloadRef::new("shop", "cart", None))),
            edge("shop", "web", Target::Kubernetes(WorkloadRef::new("infra", "redis", None))),
        ];
        assert_eq!(
            render_list(&edges),
            "web in namespace shop calls:\n  - cart\n  - redis in namespace infra\n"
        );
        assert_eq!(render_list_with(&edges, ListStyle::Seeds), render_list(&edges));
        assert_eq!(
            render_list_with(&edges, ListStyle::Qualified),
            "web in namespace shop calls:\n  - cart in namespace shop\n  - redis in namespace infra\n"
        );
    }
}
