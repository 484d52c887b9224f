//! Istio's ambient mode end to end: the `cluster-agent mapper` binary against the stand-in
//! Kubernetes API server, whose cluster runs ztunnel on two nodes and a waypoint proxy, each
//! serving Prometheus text from a real HTTP socket on its pod address; no pod has a sidecar.
//! `intentmap list` shows what ztunnel and the waypoint counted: a TCP call between two nodes
//! and an HTTP call with its path and method, counted once, only what happened after the first
//! scrape; a pod outside Istio's namespace that calls itself ztunnel is never scraped, and a
//! ztunnel answering more than the limit is refused and counted.

use std::collections::BTreeMap;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use mapper_core::fixtures::*;
use testkit::kube_api::FakeApiServer;
use tests::{
    binary, free_port, mapper_metrics, serve_stats, start_mapper_with, until, write_kubeconfig,
};

/// ztunnel's TCP connection counter of `source` calling `destination` (both in `shop`).
fn tcp_series(reporter: &str, source: &str, destination: &str, value: u64) -> String {
    format!(
        "istio_tcp_connections_opened_total{{reporter=\"{reporter}\",source_workload=\"{source}\",source_canonical_service=\"{source}\",\
         source_canonical_revision=\"latest\",source_workload_namespace=\"shop\",source_principal=\"spiffe://cluster.local/ns/shop/sa/{source}\",\
         source_app=\"{source}\",source_version=\"latest\",source_cluster=\"Kubernetes\",destination_service=\"{destination}.shop.svc.cluster.local\",\
         destination_service_namespace=\"shop\",destination_service_name=\"{destination}\",destination_workload=\"{destination}\",\
         destination_canonical_service=\"{destination}\",destination_canonical_revision=\"latest\",destination_workload_namespace=\"shop\",\
         destination_principal=\"spiffe://cluster.local/ns/shop/sa/{destination}\",destination_app=\"{destination}\",destination_version=\"latest\",\
         destination_cluster=\"Kubernetes\",request_protocol=\"tcp\",response_flags=\"-\",connection_security_policy=\"mutual_tls\"}} {value}\n"
    )
}

const TCP_HEADER: &str =
    "# HELP istio_tcp_connections_opened The total number of TCP connections opened.\n\
    # TYPE istio_tcp_connections_opened counter\n\
    istio_build{component=\"ztunnel\",tag=\"1.28.0\"} 1\n";

/// node-a's ztunnel: web's connections to cart, checkout's to the waypoint (client side).
fn ztunnel_a(n: u64) -> String {
    format!(
        "{TCP_HEADER}{}{}",
        tcp_series("source", "web", "cart", 10 + n),
        tcp_series("source", "checkout", "waypoint", 3 + n)
    )
}

/// node-b's ztunnel: web's connections to cart (server side), the waypoint's to orders-api.
fn ztunnel_b(n: u64) -> String {
    format!(
        "{TCP_HEADER}{}{}",
        tcp_series("destination", "web", "cart", 10 + n),
        tcp_series("destination", "waypoint", "orders-api", 3 + n)
    )
}

/// The waypoint: checkout's POST /api/orders to orders-api.
fn waypoint(n: u64) -> String {
    format!(
        "# TYPE envoy_server_uptime gauge\nenvoy_server_uptime 3600\n# TYPE istio_requests_total counter\n\
         istio_requests_total{{reporter=\"waypoint\",source_workload=\"checkout\",source_workload_namespace=\"shop\",\
         source_principal=\"spiffe://cluster.local/ns/shop/sa/checkout\",destination_workload=\"orders-api\",\
         destination_workload_namespace=\"shop\",destination_principal=\"spiffe://cluster.local/ns/shop/sa/orders-api\",\
         destination_service=\"orders-api.shop.svc.cluster.local\",destination_service_name=\"orders-api\",\
         destination_service_namespace=\"shop\",request_protocol=\"http\",response_code=\"201\",response_flags=\"-\",\
         connection_security_policy=\"mutual_tls\",request_method=\"POST\",request_path=\"/api/orders\"}} {}\n",
        20 + 2 * n
    )
}

/// A forger in `shop` labelled `app=ztunnel`: claims checkout called web's /admin.
fn forger(n: u64) -> String {
    format!(
        "istio_requests_total{{reporter=\"destination\",source_workload=\"checkout\",source_workload_namespace=\"shop\",\
         destination_workload=\"web\",destination_workload_namespace=\"shop\",request_method=\"GET\",request_path=\"/admin\"}} {}\n",
        100 + n
    )
}

fn deploy(api: &FakeApiServer, name: &str, ip: &str, node: &str, labels: &[(&str, &str)]) {
    api.apply(&Deployment { metadata: mk_deployment("shop", name), ..Default::default() });
    let rs = format!("{name}-5d8f7c9b4");
    api.apply(&ReplicaSet { metadata: mk_replicaset("shop", &rs, name), ..Default::default() });
    let mut pod = mk_pod("shop", &format!("{rs}-x1"), &[ip])
        .owned_by("ReplicaSet", &rs)
        .labelled("app", name)
        .on_node(node);
    for (k, v) in labels {
        pod = pod.labelled(k, v);
    }
    api.apply::<Pod>(&pod);
}

fn intentmap(mapper: &str, args: &[&str]) -> Output {
    Command::new(binary("intentmap"))
        .args(["--mapper-url", mapper])
        .args(args)
        .output()
        .expect("running intentmap")
}

/// How long a wait of this test ([`until`]) may take.
const WAIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztunnel_and_waypoint_counts_show_in_intentmap_list() {
    let api = FakeApiServer::start().await.expect("the stand-in API server");
    // Istio (istiod) in istio-system; `shop` enrolled in ambient mode.
    api.apply(&Namespace { metadata: mk_namespace("istio-system"), ..Default::default() });
    api.apply(&mk_service("istio-system", "istiod", &["10.96.0.40"], &[("app", "istiod")]));
    let mut shop = mk_namespace("shop");
    shop.labels =
        Some(BTreeMap::from([("istio.io/dataplane-mode".to_owned(), "ambient".to_owned())]));
    api.apply(&Namespace { metadata: shop, ..Default::default() });
    deploy(&api, "web", "10.244.1.5", "node-a", &[]);
    deploy(&api, "checkout", "10.244.1.6", "node-a", &[]);
    deploy(&api, "cart", "10.244.2.5", "node-b", &[]);
    deploy(&api, "orders-api", "10.244.2.6", "node-b", &[]);
    // The proxies, on loopback addresses this test serves their metrics from.
    deploy(
        &api,
        "waypoint",
        "127.0.0.23",
        "node-b",
        &[
            ("gateway.istio.io/managed", "istio.io-mesh-controller"),
            ("istio.io/gateway-name", "waypoint"),
        ],
    );
    deploy(&api, "impostor", "127.0.0.24", "node-a", &[("app", "ztunnel")]);
    api.apply(&DaemonSet {
        metadata: mk_daemonset("istio-system", "ztunnel"),
        ..Default::default()
    });
    for (pod, ip, node) in [
        ("ztunnel-a1", "127.0.0.21", "node-a"),
        ("ztunnel-b1", "127.0.0.22", "node-b"),
        ("ztunnel-c1", "127.0.0.25", "node-c"),
    ] {
        api.apply::<Pod>(
            &mk_pod("istio-system", pod, &[ip])
                .owned_by("DaemonSet", "ztunnel")
                .labelled("app", "ztunnel")
                .on_node(node),
        );
    }
    let port = free_port();
    let count = Arc::new(AtomicU64::new(0));
    let a = serve_stats("127.0.0.21", port, count.clone(), ztunnel_a).await;
    let b = serve_stats("127.0.0.22", port, count.clone(), ztunnel_b).await;
    let w = serve_stats("127.0.0.23", port, count.clone(), waypoint).await;
    let impostor = serve_stats("127.0.0.24", port, count.clone(), forger).await;
    // node-c's ztunnel answers more than the 4 MiB a scrape may read.
    let huge = serve_stats("127.0.0.25", port, count.clone(), |_| {
        "istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"web\"} 1\n"
            .repeat(80_000)
    })
    .await;

    let dir = std::env::temp_dir().join(format!("e2e-istio-ambient-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let port = port.to_string();
    let flags = [
        "--istio-scrape-interval-seconds",
        "0.3",
        "--istio-ambient-metrics-port",
        &port,
        // Sidecars' port: nothing there (no pod has one).
        "--istio-metrics-port",
        "1",
    ];
    let (_mapper, mapper) =
        start_mapper_with(&dir, &write_kubeconfig(&dir, &api.url()), &flags).await;

    until("every proxy is scraped once", WAIT, || async {
        [&a, &b, &w, &huge].iter().all(|s| s.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    let list = intentmap(&mapper, &["list"]);
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    assert_eq!(
        String::from_utf8_lossy(&list.stdout),
        "No connections found.\n",
        "what the proxies counted before the mapper started is not news"
    );

    // Since then: web opened 4 connections to cart, checkout made 8 requests through the waypoint.
    count.store(4, Ordering::SeqCst);
    let expected = "checkout in namespace shop calls:\n  - orders-api\n    - path /api/orders, methods: [POST]\n\
                    web in namespace shop calls:\n  - cart\n";
    let listed = until("intentmap list shows both calls", WAIT, || async {
        let out = intentmap(&mapper, &["list"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        (out.status.success() && text == expected).then_some(text)
    })
    .await;
    assert_eq!(listed, expected);

    // Counted once each (cart's ztunnel's count, not web's too; the waypoint's requests, not
    // its hops), in later rounds nothing more.
    let scraped = b.load(Ordering::SeqCst);
    until("two more rounds", WAIT, || async {
        (b.load(Ordering::SeqCst) >= scraped + 2).then_some(())
    })
    .await;
    let edges: serde_json::Value = reqwest::Client::new()
        .get(format!("{mapper}/v1/edges"))
        .send()
        .await
        .expect("the mapper's edges")
        .json()
        .await
        .expect("edges as JSON");
    let connections: BTreeMap<String, u64> = edges
        .as_array()
        .expect("a list of edges")
        .iter()
        .map(|e| {
            let client = e["client"]["name"].as_str().unwrap_or_default().to_owned();
            (client, e["connections"].as_u64().unwrap_or_default())
        })
        .collect();
    assert_eq!(connections, BTreeMap::from([("checkout".to_owned(), 8), ("web".to_owned(), 4)]));
    assert_eq!(impostor.load(Ordering::SeqCst), 0, "a pod outside istio-system is no ztunnel");

    let metrics = mapper_metrics(&mapper).await.expect("the mapper's /metrics");
    let metric = |name: &str| metrics.get(&format!("intentmap_mapper_{name}")).copied();
    assert_eq!(metric("istio_ambient_proxies"), Some(4.0), "{metrics:?}");
    assert!(metric("istio_oversized_scrapes_total").unwrap_or(0.0) >= 1.0, "node-c's ztunnel");
    assert_eq!(metric("istio_baselines_total"), Some(3.0));
    assert!(metric("istio_ambient_scrapes_total").unwrap_or(0.0) >= 6.0);
    assert!(metric("istio_waypoint_hops_total").unwrap_or(0.0) >= 2.0, "{metrics:?}");
    assert_eq!(metric("istio_uncorroborated_total"), Some(0.0));
    let _ = std::fs::remove_dir_all(dir);
}
