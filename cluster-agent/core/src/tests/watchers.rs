//! Kafka authorizer logs and Istio sidecar metrics through the mapper, the index fed as the
//! watchers would.

use model::{Edge, HttpResource, KafkaTopic, ServiceRef, Target, WorkloadRef};

use super::*;
use crate::fixtures::{mk_endpoint_slice, mk_service};
use crate::istio::ISTIO_SIDECAR_LABEL;
use crate::{read_metrics, KafkaBroker, LabelledPod, SidecarScrape};

fn kafka_cluster() -> Mapper {
    let mut mapper = mapper();
    deploy(&mut mapper.index, "shop", "orders", &["10.244.0.5"]);
    deploy(&mut mapper.index, "shop", "billing", &["10.244.0.6"]);
    mapper.index.apply_meta("StatefulSet", &mk_statefulset("kafka", "broker"));
    mapper.index.apply(&mk_pod("kafka", "broker-0", &["10.244.1.10"]).owned_by("StatefulSet", "broker"));
    mapper
}

fn line(decision: &str, operation: &str, host: &str, resource: &str) -> String {
    format!(
        "[2026-01-01 10:00:00,000] INFO Principal = User:CN=client is {decision} Operation = {operation} from host = {host} on resource = {resource} for request = Metadata with resourceRefCount = 1 (kafka.authorizer.logger)"
    )
}

fn broker_pod() -> KafkaBroker {
    KafkaBroker::Pod { namespace: "kafka".into(), name: "broker-0".into() }
}

fn topics(edges: &[Edge], client: &str) -> Vec<KafkaTopic> {
    edges.iter().find(|e| e.client.name == client).unwrap_or_else(|| panic!("no edge from {client}: {edges:#?}")).kafka.clone()
}

fn topic(name: &str, operations: &[&str], denied: &[&str]) -> KafkaTopic {
    KafkaTopic { name: name.into(), operations: operations.iter().map(|o| (*o).into()).collect(), denied: denied.iter().map(|o| (*o).into()).collect() }
}

#[test]
fn authorizer_lines_become_kafka_edges_to_the_broker_workload() {
    let mut mapper = kafka_cluster();
    let lines = [
        line("Allowed", "Write", "10.244.0.5", "Topic:LITERAL:orders"),
        line("Allowed", "Describe", "10.244.0.5", "Topic:LITERAL:orders"),
        line("Denied", "Read", "10.244.0.5", "Topic:LITERAL:payments"),
        line("Allowed", "READ", "10.244.0.6", "Topic:orders"),
        line("Allowed", "Write", "10.244.0.6", "Topic:PREFIXED:orders-"),
        line("Allowed", "Read", "10.244.0.6", "Group:LITERAL:billing group"),
        line("Allowed", "ClusterAction", "10.244.1.10", "Cluster:LITERAL:kafka-cluster"),
        line("Allowed", "CreateTokens", "10.244.0.6", "Topic:LITERAL:orders"),
        line("Allowed", "Read", "203.0.113.9", "Topic:LITERAL:orders"),
        line("Allowed", "Read", "10.244.0.6", &format!("Topic:LITERAL:{}", "x".repeat(250))),
        "[2026-01-01 10:00:00,000] INFO [Controller id=0] Processing automatic preferred replica leader election (kafka.controller.KafkaController)".to_owned(),
        "[2026-01-01 10:00:00,000] INFO Principal = User:CN=client is Allowed Operation (kafka.authorizer.logger)".to_owned(),
    ];
    let at = ts("2026-01-01T10:00:00Z");
    mapper.observe_kafka_log(&broker_pod(), lines.iter().map(|l| (at, l.as_str())), later());

    let edges = mapper.snapshot();
    assert_reportable(&edges);
    assert_eq!(edges.len(), 2, "{edges:#?}");
    for edge in &edges {
        assert_eq!(edge.target, Target::Kafka(WorkloadRef::new("kafka", "broker", Some("StatefulSet"))));
        assert!(edge.ports.is_empty() && edge.http.is_empty());
        assert_eq!(edge.first_seen, at);
    }
    assert_eq!(topics(&edges, "orders"), vec![topic("orders", &["describe", "produce"], &[]), topic("payments", &["consume"], &["consume"])]);
    assert_eq!(topics(&edges, "billing"), vec![topic("orders", &["consume"], &[])]);
    let stats = mapper.stats();
    assert_eq!((stats.kafka_accesses, stats.kafka_non_topic_lines, stats.kafka_unknown_operations, stats.kafka_unresolved_hosts), (4, 2, 1, 1), "{stats:#?}");
    assert_eq!((stats.kafka_malformed_lines, stats.kafka_other_lines), (2, 1), "a 250-character topic and a broken line; one other line");
    assert_eq!(stats.kafka_topic_patterns, 1);
}

#[test]
fn a_log_files_broker_is_named_explicitly_and_unknown_broker_pods_are_counted() {
    let mut mapper = kafka_cluster();
    let at = ts("2026-01-01T10:00:00Z");
    let read = line("Allowed", "Read", "10.244.0.5", "Topic:orders");
    let outside = KafkaBroker::Workload(WorkloadRef::new("data", "kafka-vm", None));
    mapper.observe_kafka_log(&outside, [(at, read.as_str())], later());
    let gone = KafkaBroker::Pod { namespace: "kafka".into(), name: "broker-9".into() };
    mapper.observe_kafka_log(&gone, [(at, read.as_str())], later());
    let edges = mapper.snapshot();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].target, Target::Kafka(WorkloadRef::new("data", "kafka-vm", None)));
    assert_eq!(edges[0].client, WorkloadRef::new("shop", "orders", Some("Deployment")));
    assert_eq!(mapper.stats().kafka_unknown_brokers, 1);
}

#[test]
fn the_client_address_is_resolved_at_the_time_of_the_line() {
    let mut mapper = kafka_cluster();
    // 10.244.0.7 was `old-client`'s until 10:00, then `new-client`'s.
    mapper.index.apply(&mk_pod("shop", "old-client", &["10.244.0.7"]).deleting_at("2026-01-01T10:00:00Z"));
    mapper.index.delete(&mk_pod("shop", "old-client", &["10.244.0.7"]).deleting_at("2026-01-01T10:00:00Z"));
    mapper.index.apply(&mk_pod("shop", "new-client", &["10.244.0.7"]).started_at("2026-01-01T10:00:30Z"));
    let read = line("Allowed", "Read", "10.244.0.7", "Topic:LITERAL:orders");
    mapper.observe_kafka_log(&broker_pod(), [(ts("2026-01-01T09:59:00Z"), read.as_str()), (ts("2026-01-01T10:01:00Z"), read.as_str())], later());
    let clients: Vec<String> = mapper.snapshot().iter().map(|e| e.client.name.clone()).collect();
    assert_eq!(clients, vec!["new-client", "old-client"]);
}

// === Istio ===

fn mesh() -> Mapper {
    let mut mapper = mapper();
    for (name, ip) in [("web", "10.244.0.5"), ("cart", "10.244.0.6")] {
        let replicaset = format!("{name}-5d9c7b");
        mapper.index.apply_meta("Deployment", &mk_deployment("shop", name));
        mapper.index.apply_meta("ReplicaSet", &mk_replicaset("shop", &replicaset, name));
        let pod = mk_pod("shop", &format!("{replicaset}-x2x9q"), &[ip]).owned_by("ReplicaSet", &replicaset).labelled(ISTIO_SIDECAR_LABEL, "istio");
        mapper.index.apply(&pod);
    }
    // Outside the mesh: a legacy client and a database behind a Service.
    deploy(&mut mapper.index, "shop", "legacy", &["10.244.0.7"]);
    let db = deploy(&mut mapper.index, "shop", "db", &["10.244.0.8"]);
    mapper.index.apply(&mk_service("shop", "db", &["10.96.0.8"], &[]));
    mapper.index.apply(&mk_endpoint_slice("shop", "db", "db-1", &[("10.244.0.8", Some(db.as_str()))]));
    mapper.index.apply(&mk_service("shop", "search", &["10.96.0.9"], &[]));
    mapper
}

fn requests(reporter: &str, source: &str, destination: &str, service: &str, method: Option<&str>, path: Option<&str>, value: u64) -> String {
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
    let pods: Vec<LabelledPod> = mapper.index.pods_labelled(ISTIO_SIDECAR_LABEL);
    assert_eq!(pods.len(), 2);
    pods.into_iter()
        .map(|pod| {
            let text = metrics.iter().find(|(w, _)| *w == &*pod.workload.name).map(|(_, t)| t.clone());
            SidecarScrape { metrics: text.map(|t| read_metrics(&t)).ok_or_else(|| "connection refused".to_owned()), pod }
        })
        .collect()
}

fn http(edges: &[Edge], client: &str, target: &Target) -> Option<(Vec<HttpResource>, u64)> {
    edges.iter().find(|e| e.client.name == client && e.target == *target).map(|e| (e.http.clone(), e.connections))
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
        let web = requests("source", "web", "cart", "cart", Some("GET"), Some("/api/cart?id=7"), web_to_cart)
            + &requests("source", "web", "unknown", "db", None, None, to_db)
            + &requests("source", "web", "unknown", "search", Some("POST"), Some("/q"), to_db)
            + &requests("source", "web", "unknown", "PassthroughCluster", None, None, to_db);
        let cart = requests("destination", "web", "cart", "cart", Some("GET"), Some("/api/cart?id=7"), web_to_cart)
            + &requests("destination", "unknown", "cart", "cart", Some("GET"), Some("/health"), legacy)
            + &requests("destination", "web", "cart", "cart", Some("HEAD"), Some("/api/cart"), head);
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
    // Service; to a Service with no backends, to the Service. cart's sidecar is unreachable:
    // its requests are reported when it answers again, not from web's side.
    mapper.observe_istio(&scrapes(&mapper, &[("web", round(18, 5, 6, 3)[0].1.clone())]), ts("2026-01-01T10:01:00Z"));
    let edges = mapper.snapshot();
    assert_eq!(http(&edges, "web", &db), Some((vec![], 4)));
    let search = Target::Service(ServiceRef { namespace: "shop".into(), name: "search".into() });
    assert_eq!(http(&edges, "web", &search), Some((vec![res("/q", &["POST"])], 4)));
    assert_eq!(http(&edges, "web", &cart).unwrap().1, 7, "cart's unreachable round is not counted from web's side");

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
        .labelled(ISTIO_SIDECAR_LABEL, "istio")
        .annotated("intents.otterize.com/workload-name", "storefront");
    mapper.index.apply(&pod);
    let round = |n: u64| {
        let cart = requests("destination", "web", "cart", "cart", Some("POST"), Some("/api/cart"), n)
            + &requests("destination", "mobile-bff", "cart", "cart", Some("POST"), Some("/api/cart"), n);
        vec![("storefront", String::new()), ("cart", cart)]
    };
    mapper.observe_istio(&scrapes(&mapper, &round(1)), ts("2026-01-01T10:00:00Z"));
    mapper.observe_istio(&scrapes(&mapper, &round(2)), ts("2026-01-01T10:00:30Z"));
    let clients: Vec<WorkloadRef> = mapper.snapshot().into_iter().map(|e| e.client).collect();
    assert_eq!(clients, vec![WorkloadRef::new("shop", "mobile-bff", None), WorkloadRef::new("shop", "storefront", Some("Deployment"))]);
}
