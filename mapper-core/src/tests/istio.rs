//! Istio sidecar metrics through the mapper, the index fed as the watchers would: windows,
//! the count used once, names checked against the index, and what is believed.

use model::{Edge, HttpResource, ServiceRef, Target, WorkloadRef};

use super::*;
use crate::fixtures::{mk_endpoint_slice, mk_service};
use crate::{read_metrics, LabelledPod, SidecarScrape};

fn mesh() -> Mapper {
    let mut mapper = mapper();
    for (name, ip) in [("web", "10.244.0.5"), ("cart", "10.244.0.6")] {
        let replicaset = format!("{name}-5d9c7b");
        mapper.index.apply_meta("Deployment", &mk_deployment("shop", name));
        mapper.index.apply_meta("ReplicaSet", &mk_replicaset("shop", &replicaset, name));
        let pod = mk_pod("shop", &format!("{replicaset}-x2x9q"), &[ip])
            .owned_by("ReplicaSet", &replicaset)
            .with_istio_sidecar();
        mapper.index.apply(&pod);
    }
    // Outside the mesh: a legacy client and a database behind a Service.
    deploy(&mut mapper.index, "shop", "legacy", &["10.244.0.7"]);
    let db = deploy(&mut mapper.index, "shop", "db", &["10.244.0.8"]);
    mapper.index.apply(&mk_service("shop", "db", &["10.96.0.8"], &[]));
    mapper.index.apply(&mk_endpoint_slice(
        "shop",
        "db",
        "db-1",
        &[("10.244.0.8", Some(db.as_str()))],
    ));
    mapper.index.apply(&mk_service("shop", "search", &["10.96.0.9"], &[]));
    mapper
}

fn requests(
    reporter: &str,
    source: &str,
    destination: &str,
    service: &str,
    method: Option<&str>,
    path: Option<&str>,
    value: u64,
) -> String {
    let mut labels = format!(
        "reporter=\"{reporter}\",source_workload=\"{source}\",source_canonical_service=\"{source}\",source_workload_namespace=\"shop\",\
         source_principal=\"spiffe://cluster.local/ns/shop/sa/{source}\",source_app=\"{source}\",source_version=\"unknown\",source_cluster=\"Kubernetes\",\
         destination_workload=\"{destination}\",destination_workload_namespace=\"shop\",destination_service=\"{service}.shop.svc.cluster.local\",\
         destination_service_name=\"{service}\",destination_service_namespace=\"shop\",destination_cluster=\"Kubernetes\",request_protocol=\"http\",\
         response_code=\"200\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"mutual_tls\""
    );
    if let Some(method) = method {
        labels.push_str(&format!(",request_method=\"{method}\""));
    }
    if let Some(path) = path {
        labels.push_str(&format!(",request_path=\"{path}\""));
    }
    format!("istio_requests_total{{{labels}}} {value}\n")
}

fn scrapes(mapper: &Mapper, metrics: &[(&str, String)]) -> Vec<SidecarScrape> {
    let pods: Vec<LabelledPod> = mapper.index.istio_sidecars();
    pods.into_iter()
        .map(|pod| {
            let text =
                metrics.iter().find(|(w, _)| *w == &*pod.workload.name).map(|(_, t)| t.clone());
            SidecarScrape {
                metrics: text
                    .map(|t| read_metrics(&t))
                    .ok_or_else(|| "connection refused".to_owned()),
                pod,
            }
        })
        .collect()
}

fn http(edges: &[Edge], client: &str, target: &Target) -> Option<(Vec<HttpResource>, u64)> {
    edges
        .iter()
        .find(|e| e.client.name == client && e.target == *target)
        .map(|e| (e.http.clone(), e.connections))
}

fn res(path: &str, methods: &[&str]) -> HttpResource {
    HttpResource { path: path.into(), methods: methods.iter().map(|m| (*m).into()).collect() }
}

#[test]
fn sidecar_counter_increases_become_http_edges_counted_once() {
    let mut mapper = mesh();
    let cart = Target::Kubernetes(WorkloadRef::new("shop", "cart", Some("Deployment")));
    let db = Target::Kubernetes(WorkloadRef::new("shop", "db", Some("Deployment")));
    let round = |web_to_cart: u64, legacy: u64, to_db: u64, head: u64| {
        let web = requests(
            "source",
            "web",
            "cart",
            "cart",
            Some("GET"),
            Some("/api/cart?id=7"),
            web_to_cart,
        ) + &requests("source", "web", "unknown", "db", None, None, to_db)
            + &requests("source", "web", "unknown", "search", Some("POST"), Some("/q"), to_db)
            + &requests("source", "web", "unknown", "PassthroughCluster", None, None, to_db);
        let cart = requests(
            "destination",
            "web",
            "cart",
            "cart",
            Some("GET"),
            Some("/api/cart?id=7"),
            web_to_cart,
        ) + &requests(
            "destination",
            "unknown",
            "cart",
            "cart",
            Some("GET"),
            Some("/health"),
            legacy,
        ) + &requests(
            "destination",
            "web",
            "cart",
            "cart",
            Some("HEAD"),
            Some("/api/cart"),
            head,
        );
        vec![("web", web), ("cart", cart)]
    };
    mapper.observe_istio(&scrapes(&mapper, &round(10, 3, 2, 1)), ts("2026-01-01T10:00:00Z"));
    assert!(mapper.snapshot().is_empty(), "the first round is a baseline");

    mapper.observe_istio(&scrapes(&mapper, &round(15, 5, 2, 3)), ts("2026-01-01T10:00:30Z"));
    let edges = mapper.snapshot();
    assert_reportable(&edges);
    assert_eq!(
        http(&edges, "web", &cart),
        Some((vec![res("/api/cart", &["GET"])], 7)),
        "5 GETs (once, from cart's side) and 2 HEADs without a path: {edges:#?}"
    );
    assert_eq!(http(&edges, "web", &db), None, "unchanged: no call");
    assert_eq!(edges.len(), 1, "{edges:#?}");

    // web's calls to db (no sidecar there) count from web's side, to the workloads behind the
    // Service; to a Service with no backends, to the Service: a node agent saw web connect to
    // both. cart's sidecar is unreachable: its requests are reported when it answers again, not
    // from web's side.
    let connections = batch(vec![
        tcp("10.244.0.5", "10.96.0.8", 5432, "2026-01-01T09:00:00Z"),
        tcp("10.244.0.5", "10.96.0.9", 80, "2026-01-01T09:00:00Z"),
    ]);
    mapper.observe(&connections, ts("2026-01-01T10:00:45Z"));
    mapper.observe_istio(
        &scrapes(&mapper, &[("web", round(18, 5, 6, 3)[0].1.clone())]),
        ts("2026-01-01T10:01:00Z"),
    );
    let edges = mapper.snapshot();
    assert_eq!(http(&edges, "web", &db), Some((vec![], 1 + 4)), "the connection, then 4 requests");
    let search = Target::Service(ServiceRef { namespace: "shop".into(), name: "search".into() });
    assert_eq!(http(&edges, "web", &search), Some((vec![res("/q", &["POST"])], 1 + 4)));
    assert_eq!(
        http(&edges, "web", &cart).unwrap().1,
        7,
        "cart's unreachable round is not counted from web's side"
    );

    // The cart sidecar restarted: its counters start again from zero.
    mapper.observe_istio(&scrapes(&mapper, &round(2, 0, 6, 0)), ts("2026-01-01T10:01:30Z"));
    let edges = mapper.snapshot();
    assert_eq!(http(&edges, "web", &cart).unwrap().1, 9);
    let stats = mapper.stats();
    assert_eq!(stats.istio_counter_resets, 4, "one series at web, three at cart: {stats:#?}");
    assert_eq!(stats.istio_unknown_clients, 1, "`unknown` (no sidecar) calling cart's /health");
    assert_eq!(stats.istio_unknown_methods, 1);
    assert_eq!(stats.istio_unknown_targets, 1, "PassthroughCluster");
    assert_eq!(stats.istio_scrape_failures, 1);
    assert_eq!(stats.istio_baselines, 2);
    assert!(stats.istio_left_to_destination >= 2);
    assert_eq!(stats.istio_uncorroborated, 0, "web's own sidecar vouches for its calls to cart");
    assert_eq!(stats.http_requests, 9 + 4 + 4);
    let cart_edge = edges.iter().find(|e| e.target == cart).unwrap();
    assert_eq!(cart_edge.last_seen, ts("2026-01-01T10:01:30Z"));
    assert_eq!(cart_edge.first_seen, ts("2026-01-01T10:00:30Z"));
}

#[test]
fn istio_names_are_checked_against_the_index() {
    let mut mapper = mesh();
    // The index names web's pods by an annotation; Istio by the Deployment.
    let pod = mk_pod("shop", "web-5d9c7b-x2x9q", &["10.244.0.5"])
        .owned_by("ReplicaSet", "web-5d9c7b")
        .with_istio_sidecar()
        .annotated("intents.otterize.com/workload-name", "storefront");
    mapper.index.apply(&pod);
    let round = |n: u64| {
        let cart =
            requests("destination", "web", "cart", "cart", Some("POST"), Some("/api/cart"), n)
                + &requests(
                    "destination",
                    "mobile-bff",
                    "cart",
                    "cart",
                    Some("POST"),
                    Some("/api/cart"),
                    n,
                );
        // Istio names the client side by the Deployment too.
        let web = requests("source", "web", "cart", "cart", Some("POST"), Some("/api/cart"), n);
        vec![("storefront", web), ("cart", cart)]
    };
    mapper.observe_istio(&scrapes(&mapper, &round(1)), ts("2026-01-01T10:00:00Z"));
    mapper.observe_istio(&scrapes(&mapper, &round(2)), ts("2026-01-01T10:00:30Z"));
    let clients: Vec<WorkloadRef> = mapper.snapshot().into_iter().map(|e| e.client).collect();
    assert_eq!(clients, vec![WorkloadRef::new("shop", "storefront", Some("Deployment"))]);
    assert_eq!(
        mapper.stats().istio_uncorroborated,
        1,
        "mobile-bff: no sidecar of its own says so, no node saw it connect"
    );
}

/// The attack: a pod that looks injected serves a made-up server-side series naming `web` as
/// the client of `/admin/export`. Nothing on web's side says so: not recorded, so web's
/// ClientIntents never allow it. Once a node agent sees web connect to it, the server's count
/// is believed (paths and all): the pair is real.
#[test]
fn a_forged_server_side_series_is_not_believed_without_the_clients_word() {
    let mut mapper = mesh();
    deploy(&mut mapper.index, "attacker", "evil-sidecar", &["10.244.0.66"]);
    let evil = mk_pod("attacker", "evil-sidecar-5d9c7b-x2x9q", &["10.244.0.66"])
        .owned_by("ReplicaSet", "evil-sidecar-5d9c7b")
        .with_istio_sidecar();
    mapper.index.apply(&evil);
    let forged = |n: u64| {
        let mut text = requests(
            "destination",
            "web",
            "evil-sidecar",
            "evil-sidecar",
            Some("GET"),
            Some("/admin/export"),
            n,
        );
        text = text.replace(
            "source_workload_namespace=\"shop\",destination_workload=\"evil-sidecar\",destination_workload_namespace=\"shop\"",
            "source_workload_namespace=\"shop\",destination_workload=\"evil-sidecar\",destination_workload_namespace=\"attacker\"",
        );
        // web's real sidecar: calls to cart only.
        let web = requests("source", "web", "cart", "cart", Some("GET"), Some("/api/cart"), n);
        vec![("evil-sidecar", text), ("web", web), ("cart", String::new())]
    };
    let scrapes_of = |mapper: &Mapper, metrics: &[(&str, String)]| -> Vec<SidecarScrape> {
        mapper
            .index
            .istio_sidecars()
            .into_iter()
            .filter_map(|pod| {
                let text = metrics.iter().find(|(w, _)| *w == &*pod.workload.name)?.1.clone();
                Some(SidecarScrape { metrics: Ok(read_metrics(&text)), pod })
            })
            .collect()
    };
    mapper.observe_istio(&scrapes_of(&mapper, &forged(1)), ts("2026-01-01T10:00:00Z"));
    mapper.observe_istio(&scrapes_of(&mapper, &forged(50)), ts("2026-01-01T10:00:30Z"));
    let evil_target =
        Target::Kubernetes(WorkloadRef::new("attacker", "evil-sidecar", Some("Deployment")));
    assert_eq!(http(&mapper.snapshot(), "web", &evil_target), None, "{:#?}", mapper.snapshot());
    assert_eq!(mapper.stats().istio_uncorroborated, 1);

    // A node agent saw web connect to the pod: the pair is real, and the server's word on paths is taken.
    mapper.observe(
        &batch(vec![tcp("10.244.0.5", "10.244.0.66", 8080, "2026-01-01T10:00:40Z")]),
        ts("2026-01-01T10:00:45Z"),
    );
    mapper.observe_istio(&scrapes_of(&mapper, &forged(60)), ts("2026-01-01T10:01:00Z"));
    assert_eq!(
        http(&mapper.snapshot(), "web", &evil_target),
        Some((vec![res("/admin/export", &["GET"])], 1 + 10))
    );
}

/// A sidecar's word about a server without a sidecar is its word only: believed once a node
/// agent saw the connection (within the window), not before and not long after.
#[test]
fn a_clients_count_to_a_server_without_a_sidecar_needs_an_observed_connection() {
    let mut mapper = Mapper::new(crate::MapperConfig {
        istio_connection_window: chrono::TimeDelta::hours(1),
        ..Default::default()
    });
    for (name, ip) in [("web", "10.244.0.5"), ("cart", "10.244.0.6")] {
        let replicaset = format!("{name}-5d9c7b");
        mapper.index.apply_meta("Deployment", &mk_deployment("shop", name));
        mapper.index.apply_meta("ReplicaSet", &mk_replicaset("shop", &replicaset, name));
        mapper.index.apply(
            &mk_pod("shop", &format!("{replicaset}-x2x9q"), &[ip])
                .owned_by("ReplicaSet", &replicaset)
                .with_istio_sidecar(),
        );
    }
    let db = deploy(&mut mapper.index, "shop", "db", &["10.244.0.8"]);
    mapper.index.apply(&mk_service("shop", "db", &["10.96.0.8"], &[]));
    mapper.index.apply(&mk_endpoint_slice(
        "shop",
        "db",
        "db-1",
        &[("10.244.0.8", Some(db.as_str()))],
    ));
    let round = |n: u64| {
        vec![
            ("web", requests("source", "web", "unknown", "db", None, None, n)),
            ("cart", String::new()),
        ]
    };
    let to_db = Target::Kubernetes(WorkloadRef::new("shop", "db", Some("Deployment")));

    mapper.observe(
        &batch(vec![tcp("10.244.0.5", "10.96.0.8", 5432, "2026-01-01T07:00:00Z")]),
        ts("2026-01-01T07:00:01Z"),
    );
    mapper.observe_istio(&scrapes(&mapper, &round(1)), ts("2026-01-01T10:00:00Z"));
    mapper.observe_istio(&scrapes(&mapper, &round(5)), ts("2026-01-01T10:00:30Z"));
    assert_eq!(
        http(&mapper.snapshot(), "web", &to_db),
        Some((vec![], 1)),
        "the connection three hours ago vouches for nothing now"
    );
    mapper.observe(
        &batch(vec![tcp("10.244.0.5", "10.96.0.8", 5432, "2026-01-01T09:30:00Z")]),
        ts("2026-01-01T10:00:40Z"),
    );
    mapper.observe_istio(&scrapes(&mapper, &round(8)), ts("2026-01-01T10:01:00Z"));
    assert_eq!(http(&mapper.snapshot(), "web", &to_db), Some((vec![], 2 + 3)));
    assert_eq!(mapper.stats().istio_uncorroborated, 1);
}
