//! `visualize`: the mapper's edges drawn as a picture, with no external program. A pure
//! function from edges to SVG text (our own layered layout, in the web page's style: namespaces
//! as labelled boxes inside the cluster's box, internet and AWS targets in their own boxes,
//! ports on the links), then `resvg` turns the SVG into PNG with an embedded font.

mod graph;
mod layers;
mod layout;
mod png;
mod route;
mod svg;
mod text;

use model::Edge;

pub use png::{rasterise, svg_to_png, tree, Raster};

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The SVG text of the graph of `edges`. `source` says where they came from (the caption ends
/// with it), e.g. `mapper http://localhost:9090`.
pub fn render_svg(edges: &[Edge], source: &str) -> String {
    let graph = graph::build(edges);
    if graph.nodes.is_empty() {
        let (width, height) = (420.0, 110.0);
        let mut out = svg::open(width, height);
        svg::caption(&mut out, source, width);
        out.push_str("<text x=\"20\" y=\"76\" font-size=\"14\" fill=\"#64748b\">No connections found.</text>\n</svg>\n");
        return out;
    }
    let inside = graph.inside();
    let caption = format!(
        "{}, {}, {} · {source}",
        plural(inside, "workload", "workloads"),
        plural(graph.nodes.len() - inside, "outside target", "outside targets"),
        plural(graph.links.len(), "call", "calls")
    );
    svg::draw(&graph, &layout::layout(&graph), &caption)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{AwsTarget, InternetTarget, PortSpec, Protocol, ServiceRef, Target, WorkloadRef};

    fn edge(client: &str, target: Target) -> Edge {
        let t = "2026-11-24T18:00:00Z".parse().unwrap();
        Edge {
            client: WorkloadRef::new("shop", client, Some("Deployment")),
            target,
            ports: vec![PortSpec { port: 7070, protocol: Protocol::Tcp }],
            first_seen: t,
            last_seen: t,
            connections: 1,
            http: Vec::new(),
            kafka: Vec::new(),
            bytes: None,
        }
    }

    #[test]
    fn the_picture_names_every_workload_and_target_once() {
        let cart = Target::Kubernetes(WorkloadRef::new("shop", "cartservice", None));
        let edges = vec![
            edge("frontend", cart.clone()),
            edge("checkout", cart),
            edge(
                "frontend",
                Target::Internet(InternetTarget {
                    domains: vec!["api.stripe.com".into()],
                    ips: vec![],
                    ports: vec![443],
                }),
            ),
            edge(
                "checkout",
                Target::Aws(AwsTarget { arn: "arn:aws:s3:::receipts".into(), actions: vec![] }),
            ),
        ];
        let svg = render_svg(&edges, "test");
        assert!(svg.starts_with("<svg"), "{svg}");
        for name in [
            "frontend",
            "checkout",
            "cartservice",
            "api.stripe.com",
            "receipts",
            "namespace shop",
            "Internet",
            "AWS s3",
        ] {
            assert_eq!(svg.matches(&format!(">{name}<")).count(), 1, "{name} once in\n{svg}");
        }
        assert!(svg.contains(">7070</text>"), "ports on the links: {svg}");
        assert!(svg.contains("3 workloads, 2 outside targets, 4 calls · test"), "{svg}");
    }

    #[test]
    fn odd_graphs_still_draw() {
        let long = "a-workload-whose-name-is-as-long-as-kubernetes-allows-it-to-be-x";
        let mut edges = vec![
            edge("frontend", Target::Kubernetes(WorkloadRef::new("shop", "frontend", None))),
            edge(
                "frontend",
                Target::Service(ServiceRef { namespace: "shop".into(), name: "legacy".into() }),
            ),
            edge("frontend", Target::Kafka(WorkloadRef::new("shop", "kafka", Some("StatefulSet")))),
            edge("frontend", Target::Kubernetes(WorkloadRef::new("shop", "kafka", None))),
            edge(long, Target::Kubernetes(WorkloadRef::new("shop", "frontend", None))),
            edge("kafka", Target::Kubernetes(WorkloadRef::new("shop", long, None))),
        ];
        for i in 0..30 {
            let domain = format!("api-{i}.example");
            edges.push(edge(
                "frontend",
                Target::Internet(InternetTarget {
                    domains: vec![domain],
                    ips: vec![],
                    ports: vec![443],
                }),
            ));
        }
        let svg = render_svg(&edges, "test");
        for text in [
            ">legacy<",
            ">Service<",
            ">StatefulSet · Kafka<",
            ">api-29.example<",
            ">a-workload-whose-name-is",
            "…</text>",
            long,
        ] {
            assert!(svg.contains(text), "{text} in\n{svg}");
        }
        let png = svg_to_png(&svg).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    }

    #[test]
    fn measured_links_are_wider_and_tell_their_volume() {
        let cart = Target::Kubernetes(WorkloadRef::new("shop", "cartservice", None));
        let ledger = Target::Kubernetes(WorkloadRef::new("shop", "ledger", None));
        let mut measured = edge("frontend", cart);
        measured.bytes = Some(model::Traffic { sent: 300_000, received: 2_000_000 });
        let svg = render_svg(&[measured.clone(), measured, edge("frontend", ledger)], "test");
        assert!(svg.contains("<title>586 KiB ↑ / 3.8 MiB ↓</title></path>"), "{svg}");
        assert_eq!(svg.matches("</path>").count(), 1, "the unmeasured link has none: {svg}");
        assert!(svg.contains("stroke-width=\"3.7\""), "{svg}");
        assert!(svg_to_png(&svg).is_ok());
    }

    #[test]
    fn an_empty_graph_says_so() {
        let svg = render_svg(&[], "mapper http://localhost:9090");
        assert!(
            svg.contains("No connections found.") && svg.contains("mapper http://localhost:9090"),
            "{svg}"
        );
        assert!(svg_to_png(&svg).is_ok());
    }
}
