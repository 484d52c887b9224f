//! `intentmap visualize`: the PNG really shows every name (rendered with the embedded font, so
//! on any machine), and a 50-workload cluster stays legible. The pictures are saved under
//! `target/visualize-test/` for a person to look at.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;

use intentmap::picture::{self, Raster};
use model::{AwsTarget, Edge, InternetTarget, PortSpec, Protocol, ServiceRef, Target, WorkloadRef};
use resvg::usvg;

fn out_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/visualize-test");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn edge(client: (&str, &str), target: Target, ports: &[u16]) -> Edge {
    let t = "2026-11-24T18:00:00Z".parse().unwrap();
    Edge {
        client: WorkloadRef::new(client.0, client.1, Some("Deployment")),
        target,
        ports: ports.iter().map(|&port| PortSpec { port, protocol: Protocol::Tcp }).collect(),
        first_seen: t,
        last_seen: t,
        connections: 3,
        http: Vec::new(),
        kafka: Vec::new(),
        bytes: None,
    }
}

fn workload(ns: &str, name: &str) -> Target {
    Target::Kubernetes(WorkloadRef::new(ns, name, None))
}

fn internet(domain: &str) -> Target {
    Target::Internet(InternetTarget {
        domains: vec![domain.into()],
        ips: vec!["203.0.113.7".into()],
        ports: vec![443],
    })
}

fn aws(arn: &str) -> Target {
    Target::Aws(AwsTarget { arn: arn.into(), actions: vec!["s3:GetObject".into()] })
}

/// The seeds' shop (and the payment cluster's namespace it calls).
fn shop() -> Vec<Edge> {
    let s = |n| ("shop", n);
    vec![
        edge(s("loadgenerator"), workload("shop", "frontend"), &[8080]),
        edge(s("frontend"), workload("shop", "cartservice"), &[7070]),
        edge(s("frontend"), workload("shop", "productcatalogservice"), &[3550]),
        edge(s("frontend"), workload("shop", "currencyservice"), &[7000]),
        edge(s("frontend"), workload("shop", "recommendationservice"), &[8080]),
        edge(s("frontend"), workload("shop", "shippingservice"), &[50051]),
        edge(s("frontend"), workload("shop", "checkoutservice"), &[5050]),
        edge(s("frontend"), workload("shop", "adservice"), &[9555]),
        edge(s("checkoutservice"), workload("shop", "cartservice"), &[7070]),
        edge(s("checkoutservice"), workload("shop", "productcatalogservice"), &[3550]),
        edge(s("checkoutservice"), workload("shop", "currencyservice"), &[7000]),
        edge(s("checkoutservice"), workload("shop", "shippingservice"), &[50051]),
        edge(s("checkoutservice"), workload("shop", "emailservice"), &[8080]),
        edge(s("checkoutservice"), workload("payments", "payment-gateway"), &[8443]),
        edge(s("recommendationservice"), workload("shop", "productcatalogservice"), &[3550]),
        edge(s("cartservice"), workload("shop", "redis-cart"), &[6379]),
        edge(("payments", "payment-gateway"), workload("payments", "ledger"), &[5432]),
        edge(("payments", "payment-gateway"), internet("api.stripe.example"), &[443]),
        edge(s("frontend"), aws("arn:aws:s3:::shop-assets"), &[443]),
    ]
}

/// 50 workloads in five namespaces, calling across them, the internet and AWS.
fn cluster_of_50() -> Vec<Edge> {
    let mut edges = Vec::new();
    for team in 1..=5 {
        let ns = format!("team-{team}");
        let w = |name: &str| (ns.as_str(), name.to_owned());
        let names: Vec<String> = [
            "gateway",
            "orders-api",
            "billing-worker",
            "inventory",
            "search-indexer",
            "notifications",
            "reports-cron",
            "auth",
            "postgres",
            "redis",
        ]
        .iter()
        .map(|n| format!("{n}-{team}"))
        .collect();
        let edge_to = |from: &str, to: &str, port: u16| {
            let (ns, from) = w(from);
            edge((ns, &from), workload(ns, to), &[port])
        };
        edges.push(edge_to(&names[0], &names[1], 8080));
        edges.push(edge_to(&names[0], &names[7], 9000));
        edges.push(edge_to(&names[0], &names[4], 8080));
        edges.push(edge_to(&names[1], &names[2], 8080));
        edges.push(edge_to(&names[1], &names[3], 8080));
        edges.push(edge_to(&names[1], &names[8], 5432));
        edges.push(edge_to(&names[2], &names[8], 5432));
        edges.push(edge_to(&names[2], &names[5], 8080));
        edges.push(edge_to(&names[3], &names[9], 6379));
        edges.push(edge_to(&names[4], &names[9], 6379));
        edges.push(edge_to(&names[6], &names[8], 5432));
        edges.push(edge_to(&names[5], &names[7], 9000));
        if team > 1 {
            let prev = format!("team-{}", team - 1);
            edges.push(edge(
                (ns.as_str(), &names[1]),
                workload(&prev, &format!("orders-api-{}", team - 1)),
                &[8080],
            ));
        }
        edges.push(edge(
            (ns.as_str(), &names[5]),
            internet(&format!("hooks.partner-{team}.example")),
            &[443],
        ));
        edges.push(edge(
            (ns.as_str(), &names[6]),
            aws(&format!("arn:aws:s3:::team-{team}-reports")),
            &[443],
        ));
    }
    edges.push(edge(("team-1", "billing-worker-1"), internet("api.stripe.example"), &[443]));
    edges
}

/// Every kind of target: Services, Kafka brokers, a workload calling itself, a call back to an
/// earlier column, many internet targets and a few AWS ones.
fn every_kind() -> Vec<Edge> {
    let mut edges = vec![
        edge(("apps", "api"), workload("apps", "api"), &[8080]),
        edge(
            ("apps", "api"),
            Target::Service(ServiceRef { namespace: "apps".into(), name: "legacy-billing".into() }),
            &[80],
        ),
        edge(
            ("apps", "api"),
            Target::Kafka(WorkloadRef::new("data", "kafka", Some("StatefulSet"))),
            &[9092],
        ),
        edge(
            ("apps", "worker"),
            Target::Kafka(WorkloadRef::new("data", "kafka", Some("StatefulSet"))),
            &[9092],
        ),
        edge(("data", "kafka"), workload("data", "zookeeper"), &[2181]),
        edge(("data", "zookeeper"), workload("apps", "worker"), &[9100]),
        edge(("apps", "worker"), workload("data", "postgres"), &[5432]),
        edge(("apps", "worker"), workload("data", "postgres"), &[5433]),
    ];
    for i in 1..=16 {
        edges.push(edge(
            ("apps", if i % 2 == 0 { "api" } else { "worker" }),
            internet(&format!("service-{i}.example.com")),
            &[443],
        ));
    }
    for bucket in ["invoices", "exports", "thumbnails"] {
        edges.push(edge(("apps", "worker"), aws(&format!("arn:aws:s3:::{bucket}")), &[443]));
    }
    edges
}

/// Every `<text>` emptied: the same picture without words.
fn blank_text(svg: &str) -> String {
    let mut out = String::new();
    let pieces: Vec<&str> = svg.split("</text>").collect();
    for (i, piece) in pieces.iter().enumerate() {
        if i + 1 < pieces.len() {
            let open_end = piece.rfind('>').unwrap();
            out.push_str(&piece[..=open_end]);
            out.push_str("</text>");
        } else {
            out.push_str(piece);
        }
    }
    out
}

/// A text as resvg draws it: its content and where its glyphs' ink is, in SVG units.
#[derive(Debug)]
struct Drawn {
    text: String,
    x: f32,
    y: f32,
    right: f32,
    bottom: f32,
}

fn drawn_texts(group: &usvg::Group, out: &mut Vec<Drawn>) {
    for node in group.children() {
        match node {
            usvg::Node::Group(g) => drawn_texts(g, out),
            usvg::Node::Text(t) => {
                let ink = t.flattened().abs_bounding_box();
                let text = t.chunks().iter().map(|c| c.text()).collect();
                out.push(Drawn {
                    text,
                    x: ink.left(),
                    y: ink.top(),
                    right: ink.right(),
                    bottom: ink.bottom(),
                });
            }
            _ => {}
        }
    }
}

fn texts(svg: &str) -> Vec<Drawn> {
    let tree = picture::tree(svg).unwrap();
    let mut out = Vec::new();
    drawn_texts(tree.root(), &mut out);
    out
}

/// The colour at a pixel (the pictures are opaque, so premultiplied is plain) and its lightness.
fn pixel(r: &Raster, x: u32, y: u32) -> Option<([u8; 3], f32)> {
    if x >= r.pixmap.width() || y >= r.pixmap.height() {
        return None;
    }
    let i = 4 * (y as usize * r.pixmap.width() as usize + x as usize);
    let p = &r.pixmap.data()[i..i + 3];
    Some(([p[0], p[1], p[2]], 0.299 * p[0] as f32 + 0.587 * p[1] as f32 + 0.114 * p[2] as f32))
}

/// Pixels inside `d` that differ between the two pictures, and pixels of `with` that are dark.
fn compare(with: &Raster, without: &Raster, d: &Drawn) -> (usize, usize) {
    let s = with.scale;
    let (mut differ, mut dark) = (0, 0);
    for y in (d.y * s).floor() as u32..(d.bottom * s).ceil() as u32 {
        for x in (d.x * s).floor() as u32..(d.right * s).ceil() as u32 {
            let (Some((a, l)), Some((b, _))) = (pixel(with, x, y), pixel(without, x, y)) else {
                continue;
            };
            differ += usize::from(a != b);
            dark += usize::from(l < 120.0);
        }
    }
    (differ, dark)
}

/// Keeps the picture for a person to look at (encoding a big PNG takes seconds in a debug build).
fn save(name: &str, svg: &str, raster: Option<&Raster>) {
    std::fs::write(out_dir().join(format!("{name}.svg")), svg).unwrap();
    if let Some(raster) = raster {
        raster.pixmap.save_png(out_dir().join(format!("{name}.png"))).unwrap();
    }
}

fn names(edges: &[Edge]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for e in edges {
        names.push(e.client.name.clone());
        names.push(format!("namespace {}", e.client.namespace));
        names.push(match &e.target {
            Target::Kubernetes(w) | Target::Kafka(w) => w.name.clone(),
            Target::Service(s) => s.name.clone(),
            Target::Internet(i) => i.identity().to_owned(),
            Target::Aws(a) => a.arn.rsplit(':').next().unwrap().to_owned(),
            Target::Incoming(_) => "internet".to_owned(),
        });
    }
    names.sort();
    names.dedup();
    names
}

/// Renders `edges` with and without text and checks every label shows in the PNG.
fn check_labels_show(
    name: &str,
    edges: &[Edge],
    save_blank_png: bool,
) -> (String, Vec<Drawn>, Raster) {
    let svg = picture::render_svg(edges, "mapper http://localhost:9090");
    for n in names(edges) {
        assert!(svg.contains(&format!(">{n}</text>")), "{n} is not written in the SVG");
    }
    let drawn = texts(&svg);
    for n in names(edges) {
        assert!(drawn.iter().any(|d| d.text == n && d.right > d.x), "{n} is not drawn: {drawn:?}");
    }
    let with = picture::rasterise(&svg).unwrap();
    let blank = blank_text(&svg);
    let without = picture::rasterise(&blank).unwrap();
    save(name, &svg, Some(&with));
    save(&format!("{name}-without-text"), &blank, save_blank_png.then_some(&without));
    assert_eq!(
        (with.pixmap.width(), with.pixmap.height()),
        (without.pixmap.width(), without.pixmap.height())
    );
    for d in &drawn {
        let (differ, dark) = compare(&with, &without, d);
        assert!(differ >= 12, "{:?}: only {differ} pixels show it", d.text);
        // The AWS badge is orange on dark; everything else is dark on light.
        if d.text != "AWS" {
            assert!(dark >= 8, "{:?}: only {dark} dark pixels in its box", d.text);
        }
    }
    (svg, drawn, with)
}

#[test]
fn the_shop_png_shows_every_name() {
    let (_, drawn, png) = check_labels_show("shop", &shop(), true);
    assert!(drawn.len() > 40, "{drawn:?}");
    assert!(png.scale >= 2.0, "the shop is drawn at twice its size: {}", png.scale);
}

#[test]
fn every_kind_of_target_reads() {
    let (svg, drawn, _) = check_labels_show("kinds", &every_kind(), false);
    for text in ["Service", "StatefulSet · Kafka", "9092", "5432, 5433", "Internet", "AWS s3"] {
        assert!(drawn.iter().any(|d| d.text == text), "{text} is not drawn: {drawn:?}");
    }
    assert!(
        svg.contains("stroke-dasharray=\"2 3\""),
        "the call back to an earlier column is dashed"
    );
}

#[test]
fn a_50_workload_cluster_stays_legible() {
    let edges = cluster_of_50();
    assert_eq!(
        names(&edges)
            .iter()
            .filter(|n| !n.contains('.') && !n.starts_with("team-") && !n.starts_with("namespace"))
            .count(),
        50
    );
    let (svg, drawn, raster) = check_labels_show("cluster-50", &edges, false);
    // No text covers another.
    for (i, a) in drawn.iter().enumerate() {
        for b in &drawn[i + 1..] {
            let apart = a.right <= b.x || b.right <= a.x || a.bottom <= b.y || b.bottom <= a.y;
            assert!(apart, "{a:?} overlaps {b:?}");
        }
    }
    // A reasonable size, and no large empty stretch: every 150-unit square band across and
    // down the picture has ink (text, boxes' borders or links) in it.
    let tree = picture::tree(&svg).unwrap();
    let (w, h) = (tree.size().width(), tree.size().height());
    assert!(w <= 3200.0 && h <= 3200.0 && w * h <= 6.0e6, "{w}×{h}");
    assert!(w / h < 3.0 && h / w < 3.0, "{w}×{h}");
    let s = raster.scale;
    let cell = 150.0;
    let (cols, rows) = ((w / cell).floor() as u32, (h / cell).floor() as u32);
    let mut empty = Vec::new();
    for cy in 0..rows {
        for cx in 0..cols {
            let inked = (0..(cell * s) as u32).step_by(2).any(|dy| {
                (0..(cell * s) as u32).step_by(2).any(|dx| {
                    pixel(
                        &raster,
                        (cx as f32 * cell * s) as u32 + dx,
                        (cy as f32 * cell * s) as u32 + dy,
                    )
                    .is_some_and(|(_, l)| l < 200.0)
                })
            });
            if !inked {
                empty.push((cx, cy));
            }
        }
    }
    assert!(
        empty.len() * 10 <= (cols * rows) as usize,
        "{} of {} squares are empty: {empty:?}",
        empty.len(),
        cols * rows
    );
}

/// A stand-in mapper that answers `GET /v1/edges` with `edges`, once per connection.
fn fake_mapper(edges: &[Edge]) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let body = serde_json::to_string(edges).unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(4) {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let head = format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
            stream.write_all(head.as_bytes()).and_then(|_| stream.write_all(body.as_bytes())).ok();
        }
    });
    url
}

#[test]
fn the_cli_writes_the_labelled_png() {
    let edges = shop();
    let url = fake_mapper(&edges);
    let out = out_dir().join("cli-shop.png");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_intentmap"))
        .args(["--mapper-url", &url, "visualize", "-o", out.to_str().unwrap()])
        .env_remove("INTENTMAP_MAPPER_URL")
        .status()
        .unwrap();
    assert!(status.success());
    let written = resvg::tiny_skia::Pixmap::load_png(&out).unwrap();
    let expected =
        picture::rasterise(&picture::render_svg(&edges, &format!("mapper {url}"))).unwrap();
    assert_eq!(
        (written.width(), written.height()),
        (expected.pixmap.width(), expected.pixmap.height())
    );
    assert!(written.data() == expected.pixmap.data(), "the CLI's PNG is not the labelled picture");
}
