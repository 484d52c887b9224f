//! `visualize`: the edges drawn as a picture (SVG, and PNG rasterised from it), with no
//! external program: `layout-rs` places and draws, `resvg` rasterises.

use std::collections::BTreeMap;

use layout::backends::svg::SVGWriter;
use layout::core::base::Orientation;
use layout::core::color::Color;
use layout::core::geometry::Point;
use layout::core::style::StyleAttr;
use layout::std_shapes::shapes::{Arrow, Element, ShapeKind};
use layout::topo::layout::VisualGraph;
use model::{Edge, Target};

/// How a node is labelled: workloads as `name\nnamespace`, others by what names them.
fn target_label(target: &Target) -> (String, &'static str) {
    match target {
        Target::Kubernetes(w) | Target::Kafka(w) => (format!("{}\n{}", w.name, w.namespace), "white"),
        Target::Service(s) => (format!("{}\n{} (service)", s.name, s.namespace), "white"),
        Target::Internet(i) => (format!("{}\n(internet)", i.identity()), "lightyellow"),
        Target::Aws(a) => (format!("{}\n(AWS)", a.arn), "lightblue"),
    }
}

/// The SVG text of the graph, left to right, one box per workload or external target.
pub fn render_svg(edges: &[Edge]) -> String {
    let mut graph = VisualGraph::new(Orientation::LeftToRight);
    let mut nodes = BTreeMap::new();
    let mut node = |graph: &mut VisualGraph, label: String, fill: &str| {
        *nodes.entry(label.clone()).or_insert_with(|| {
            let look = StyleAttr::new(Color::fast("black"), 1, Some(Color::fast(fill)), 6, 13);
            let width = label.lines().map(str::len).max().unwrap_or(4) as f64 * 8.0 + 24.0;
            let height = label.lines().count() as f64 * 18.0 + 16.0;
            graph.add_node(Element::create(ShapeKind::new_box(&label), look, Orientation::LeftToRight, Point::new(width, height)))
        })
    };
    for edge in edges {
        let client = node(&mut graph, format!("{}\n{}", edge.client.name, edge.client.namespace), "white");
        let (label, fill) = target_label(&edge.target);
        let target = node(&mut graph, label, fill);
        let ports: Vec<String> = edge.ports.iter().map(|p| p.to_string()).collect();
        graph.add_edge(Arrow::simple(&ports.join(", ")), client, target);
    }
    if edges.is_empty() {
        let look = StyleAttr::simple();
        graph.add_node(Element::create(ShapeKind::new_box("No connections found."), look, Orientation::LeftToRight, Point::new(220.0, 40.0)));
    }
    let mut svg = SVGWriter::new();
    graph.do_it(false, false, false, &mut svg);
    svg.finalize()
}

/// Rasterises SVG to PNG with the system's fonts.
pub fn svg_to_png(svg: &str) -> anyhow::Result<Vec<u8>> {
    use resvg::{tiny_skia, usvg};
    let mut options = usvg::Options::default();
    options.fontdb_mut().load_system_fonts();
    let tree = usvg::Tree::from_str(svg, &options)?;
    let size = tree.size().to_int_size();
    let mut pixmap = tiny_skia::Pixmap::new(size.width(), size.height()).ok_or_else(|| anyhow::anyhow!("the picture has no area"))?;
    pixmap.fill(tiny_skia::Color::WHITE);
    resvg::render(&tree, tiny_skia::Transform::default(), &mut pixmap.as_mut());
    Ok(pixmap.encode_png()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{InternetTarget, PortSpec, Protocol, WorkloadRef};

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
        }
    }

    #[test]
    fn the_picture_names_every_workload_and_target_once() {
        let cart = Target::Kubernetes(WorkloadRef::new("shop", "cartservice", None));
        let edges = vec![
            edge("frontend", cart.clone()),
            edge("checkout", cart),
            edge("frontend", Target::Internet(InternetTarget { domains: vec!["api.stripe.com".into()], ips: vec![], ports: vec![443] })),
        ];
        let svg = render_svg(&edges);
        assert!(svg.starts_with("<svg") || svg.contains("<svg"), "{svg}");
        for name in ["frontend", "checkout", "cartservice", "api.stripe.com"] {
            assert_eq!(svg.matches(&format!(">{name}<")).count(), 1, "{name} once in\n{svg}");
        }
        let png = svg_to_png(&svg).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        assert!(png.len() > 1000);
    }

    #[test]
    fn an_empty_graph_says_so() {
        assert!(render_svg(&[]).contains("No connections found."));
    }
}
