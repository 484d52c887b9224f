//! The text format of the `list` command: who calls what, one client at a time.

use std::fmt::Write as _;

use crate::edge::{Edge, Target};
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
///
/// No edges at all reads `No connections found.`
pub fn render_list(edges: &[Edge]) -> String {
    let clients = calls_by_client(edges);
    if clients.is_empty() {
        return "No connections found.\n".to_owned();
    }
    let mut out = String::new();
    for c in clients {
        let _ = writeln!(out, "{} in namespace {} calls:", c.client.name, c.client.namespace);
        let mut previous: Option<String> = None;
        for edge in &c.calls {
            let line = describe(&c.client.namespace, edge);
            // In-cluster targets of the same name and namespace sort next to each other.
            if previous.as_deref() != Some(line.as_str()) {
                let _ = writeln!(out, "  - {line}");
            }
            previous = Some(line);
        }
    }
    out
}

fn describe(client_namespace: &str, edge: &Edge) -> String {
    let in_cluster = |namespace: &str, name: &str| {
        if namespace == client_namespace {
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
            Target::Internet(InternetTarget { domains: vec!["api.stripe.com".into()], ips: vec!["203.0.113.7".into()], ports: vec![443] }),
        );
        stripe.ports = vec![PortSpec { port: 8443, protocol: Protocol::Tcp }];
        let edges = vec![
            edge("shop", "frontend", Target::Aws(AwsTarget { arn: "arn:aws:s3:::assets".into(), actions: vec!["s3:PutObject".into(), "s3:GetObject".into()] })),
            edge("shop", "frontend", Target::Aws(AwsTarget { arn: "arn:aws:sqs:eu-west-1:123456789012:orders".into(), actions: vec![] })),
            stripe,
            edge("shop", "frontend", Target::Internet(InternetTarget { domains: vec![], ips: vec!["198.51.100.4".into()], ports: vec![] })),
            edge("shop", "frontend", Target::Kubernetes(WorkloadRef::new("shared", "redis", Some("StatefulSet")))),
            edge("shop", "frontend", Target::Service(ServiceRef { namespace: "shop".into(), name: "cartservice".into() })),
            edge("shop", "frontend", Target::Kubernetes(WorkloadRef::new("shop", "cartservice", Some("Deployment")))),
            edge("billing", "invoicer", Target::Service(ServiceRef { namespace: "shop".into(), name: "cartservice".into() })),
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
}
