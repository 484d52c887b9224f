//! Istio's ambient mode against the reference data in `../shared/reference/otterize/istio/`
//! (read there at run time, never copied): the captured ztunnel scrape with its expected
//! readings, and Otterize's Istio watcher rounds as a waypoint would count them, through the
//! mapper's public functions (`read_ambient_metrics`, `Index::istio_ambient_proxies`,
//! `Mapper::observe_mesh`).

mod otterize_common;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use mapper_core::fixtures::*;
use mapper_core::istio::SeriesKind;
use mapper_core::{read_ambient_metrics, AmbientScrape, Mapper};
use model::observation::{ObservationBatch, TcpConnection};
use model::Target;
use otterize_common::*;
use serde_json::Value;

/// A node agent's report of `src` connecting to `dst`.
fn connection(mapper: &mut Mapper, src: &str, dst: &str, port: u16, when: DateTime<Utc>) {
    let line: TcpConnection = serde_json::from_value(serde_json::json!({
        "src_ip": src, "src_port": 40000, "dst_ip": dst, "dst_port": port, "at": when,
    }))
    .expect("a node agent's TCP line");
    mapper.observe(&ObservationBatch { tcp: vec![line], ..Default::default() }, when);
}

/// A namespace enrolled in ambient mode (`istio.io/dataplane-mode=ambient`).
fn ambient_namespace(mapper: &mut Mapper, name: &str) {
    let mut meta = mk_namespace(name);
    meta.labels =
        Some(BTreeMap::from([("istio.io/dataplane-mode".to_owned(), "ambient".to_owned())]));
    mapper.index.apply_meta("Namespace", &meta);
}

/// A Deployment with one pod on `node`; `extra` labels its pod.
fn workload(
    mapper: &mut Mapper,
    ns: &str,
    name: &str,
    ip: &str,
    node: &str,
    extra: &[(&str, &str)],
) {
    let replicaset = format!("{name}-5d9c7b");
    mapper.index.apply_meta("Deployment", &mk_deployment(ns, name));
    mapper.index.apply_meta("ReplicaSet", &mk_replicaset(ns, &replicaset, name));
    let mut pod = mk_pod(ns, &format!("{replicaset}-x2x9q"), &[ip])
        .owned_by("ReplicaSet", &replicaset)
        .labelled("app", name)
        .on_node(node);
    for (k, v) in extra {
        pod = pod.labelled(k, v);
    }
    mapper.index.apply(&pod);
}

/// ztunnel's DaemonSet pod on `node`.
fn ztunnel(mapper: &mut Mapper, pod: &str, ip: &str, node: &str) {
    mapper.index.apply_meta("DaemonSet", &mk_daemonset("istio-system", "ztunnel"));
    mapper.index.apply(
        &mk_pod("istio-system", pod, &[ip])
            .owned_by("DaemonSet", "ztunnel")
            .labelled("app", "ztunnel")
            .on_node(node),
    );
}

/// A round in which each ambient proxy answers the text given for its pod's name prefix (the
/// others are unreachable).
fn round(mapper: &mut Mapper, texts: &[(&str, String)], when: DateTime<Utc>) {
    let scrapes: Vec<AmbientScrape> = mapper
        .index
        .istio_ambient_proxies("istio-system")
        .into_iter()
        .map(|proxy| AmbientScrape {
            metrics: texts
                .iter()
                .find(|(prefix, _)| proxy.pod.pod.name.starts_with(prefix))
                .map(|(_, text)| read_ambient_metrics(text))
                .ok_or_else(|| "unreachable".to_owned()),
            proxy,
        })
        .collect();
    mapper.observe_mesh(&[], &scrapes, when);
}

/// Every value of a metrics text set to 0.
fn zeroed(text: &str) -> String {
    text.lines()
        .map(|line| match line.rsplit_once(' ') {
            Some((series, _)) if !line.starts_with('#') => format!("{series} 0\n"),
            _ => format!("{line}\n"),
        })
        .collect()
}

/// The `.prom` file's blocks (`# --- block X: ...` up to the next), by letter.
fn blocks(text: &str) -> BTreeMap<String, String> {
    let mut blocks = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# --- block ") {
            let letter = rest.split(':').next().unwrap_or_default().trim().to_owned();
            blocks.insert(letter.clone(), String::new());
            current = Some(letter);
        } else if let Some(body) = current.as_ref().and_then(|c| blocks.get_mut(c)) {
            body.push_str(line);
            body.push('\n');
        }
    }
    blocks
}

#[test]
fn the_captured_ambient_scrape_reads_and_maps_as_expected() {
    let text = fixture_text("istio/captured-sidecar-scrapes.prom");
    let expected = fixture_json("istio/captured-sidecar-scrapes.expected.json");
    let series = expected["series"].as_array().expect("series");

    // Every series reads as expected by the ambient reader too; the empty label set is skipped.
    let metrics = read_ambient_metrics(&text);
    assert_reads_as_expected(&metrics, &expected);
    for read in &metrics.requests {
        assert_eq!(read.series.kind, SeriesKind::Requests, "{read:?}");
    }

    // Block C is ztunnel's (`:15020`, ambient): tier-1-app-a (node-a) calls tier-2-app-b
    // (node-b), both enrolled. Blocks A and B, served by the same ztunnel, name no in-mesh
    // pair: an external host and callers from outside the mesh.
    let blocks = blocks(&text);
    assert!(blocks["C"].contains("spiffe://"), "block C is the ambient one");
    let ztunnel_text = format!("{}{}{}", blocks["A"], blocks["B"], blocks["C"]);
    let world = |server_ztunnel_answers: bool| {
        let mut mapper = Mapper::default();
        ambient_namespace(&mut mapper, "ns-5");
        mapper.index.apply_meta("Namespace", &mk_namespace("default"));
        mapper.index.apply_meta("Namespace", &mk_namespace("istio-system"));
        workload(&mut mapper, "ns-5", "tier-1-app-a", "10.244.1.12", "node-a", &[]);
        workload(&mut mapper, "ns-5", "tier-2-app-b", "10.244.2.13", "node-b", &[]);
        workload(&mut mapper, "default", "sleep", "10.244.1.10", "node-a", &[]);
        workload(&mut mapper, "default", "my-nginx", "10.244.1.11", "node-a", &[]);
        mapper.index.apply(&mk_service(
            "ns-5",
            "tier-2-app-b",
            &["10.96.5.2"],
            &[("app", "tier-2-app-b")],
        ));
        ztunnel(&mut mapper, "ztunnel-a", "10.244.1.2", "node-a");
        ztunnel(&mut mapper, "ztunnel-b", "10.244.2.2", "node-b");
        let texts = |body: &str| {
            let mut texts = vec![("ztunnel-a", body.to_owned())];
            if server_ztunnel_answers {
                texts.push(("ztunnel-b", String::new()));
            }
            texts
        };
        round(&mut mapper, &texts(&zeroed(&ztunnel_text)), at(60));
        // A node agent saw tier-1-app-a connect to tier-2-app-b's Service.
        connection(&mut mapper, "10.244.1.12", "10.96.5.2", 80, at(70));
        round(&mut mapper, &texts(&ztunnel_text), at(90));
        mapper
    };

    // The server's ztunnel is not followed: the client side's count stands, vouched for by the
    // node agent's connection.
    let mapper = world(false);
    let edges = mapper.snapshot();
    let want = &series[3]["edge"];
    let ambient: Vec<_> = edges.iter().filter(|e| e.client.namespace == "ns-5").collect();
    assert_eq!(edges.len(), 1, "{edges:#?}");
    assert_eq!(
        format!("{}.{}", ambient[0].client.name, ambient[0].client.namespace),
        str_of(&want["client"])
    );
    assert!(
        matches!(&ambient[0].target, Target::Kubernetes(w) if format!("{}.{}", w.name, w.namespace) == str_of(&want["server"])),
        "{:?}",
        ambient[0].target
    );
    assert_eq!(want["http_paths"], serde_json::json!([]));
    assert!(ambient[0].http.is_empty());
    assert_eq!(ambient[0].connections, 1 + 376_752, "the node agent's connection and the series");
    let stats = mapper.stats();
    for (i, s) in series.iter().enumerate().take(3) {
        assert!(s["edge"].is_null(), "series {i} maps to no edge");
    }
    assert_eq!(stats.istio_unknown_targets, 1, "block A: www.wikipedia.org, no workload");
    assert_eq!(stats.istio_unknown_clients, 2, "block B: two series from outside the mesh");

    // The server's ztunnel is followed: it counts the same connections from its side, so the
    // client side's count is left to it (and it reported none).
    let mapper = world(true);
    assert_eq!(mapper.snapshot().iter().map(|e| e.connections).sum::<u64>(), 1);
    assert_eq!(mapper.stats().istio_left_to_destination, 1);
}

/// Otterize's Envoy stat name as a waypoint's Prometheus line (`reporter="waypoint"`): the tags
/// its watcher reads, workload names lowercased (Kubernetes names are).
fn as_waypoint_line(stat: &Value) -> String {
    let name = str_of(&stat["name"]);
    let tag = |t: &str| {
        name.split(&format!(".{t}."))
            .nth(1)
            .map(|rest| rest.split('.').next().unwrap_or("").to_owned())
    };
    let mut labels = vec!["reporter=\"waypoint\"".to_owned()];
    for t in [
        "source_workload",
        "source_workload_namespace",
        "destination_workload",
        "destination_workload_namespace",
        "request_method",
    ] {
        let value = tag(t).unwrap_or_else(|| panic!("{t} in {name}"));
        labels.push(format!("{t}=\"{}\"", value.to_lowercase()));
    }
    let path = name.split(".request_path.").nth(1).expect("a request path");
    labels.push(format!("request_path=\"{path}\""));
    format!("istio_requests_total{{{}}} {}\n", labels.join(","), stat["value"])
}

#[test]
fn otterizes_watcher_rounds_through_a_waypoint_follow_the_same_deltas() {
    // TestIgnoreOldMetrics, the clients' calls counted by a waypoint instead of their
    // sidecars. DIFFERENCE (as for sidecars): the first scrape is a baseline, not calls made
    // now; then an unchanged counter is no call and one that went down is a restart.
    let cases = fixture_json("istio/otterize-istio-watcher-cases.json");
    let case = &cases["cases"][0];
    assert_eq!(case["id"], "TestIgnoreOldMetrics");
    let ns = "test-ns";
    let mut mapper = Mapper::default();
    ambient_namespace(&mut mapper, ns);
    for (i, client) in ["clienta", "clientb", "clientc"].into_iter().enumerate() {
        workload(&mut mapper, ns, client, &format!("10.244.1.{}", i + 1), "node-a", &[]);
    }
    workload(&mut mapper, ns, "server", "10.244.2.9", "node-b", &[]);
    workload(
        &mut mapper,
        ns,
        "waypoint",
        "10.244.2.8",
        "node-b",
        &[("istio.io/gateway-name", "waypoint")],
    );
    mapper.index.apply(&mk_service(ns, "nginx-service", &["10.96.1.9"], &[("app", "server")]));
    for i in 1..=3 {
        connection(&mut mapper, &format!("10.244.1.{i}"), "10.96.1.9", 80, at(10));
    }
    let waypoint_text = |stats: &Value| -> String {
        stats.as_array().expect("stats").iter().map(as_waypoint_line).collect()
    };
    let rounds = case["rounds"].as_array().expect("rounds");
    round(&mut mapper, &[("waypoint", waypoint_text(&rounds[0]["stats"]))], at(60));
    assert!(http_edges(&mapper).is_empty(), "a baseline");
    round(&mut mapper, &[("waypoint", waypoint_text(&rounds[1]["stats"]))], at(90));
    assert_eq!(http_edges(&mapper), expected_http(&rounds[1]), "{}", rounds[1]["note"]);
    let stats = mapper.stats();
    assert_eq!(stats.istio_counter_resets, 1, "clienta's 5 -> 1");
    assert_eq!(stats.istio_uncorroborated, 0, "{stats:#?}");
}
