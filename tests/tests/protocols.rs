//! Beyond TCP, end to end through the cloud: the `cluster-agent mapper` binary follows a Kafka
//! broker's authorizer log through the (stand-in) Kubernetes API and scrapes an Istio sidecar's
//! Prometheus endpoint (an HTTP server in the test serving Envoy's text format), uploads to the
//! real `cloud-api` binary, and the access graph JSON and the exported ClientIntents carry the
//! Kafka topics and operations and the HTTP paths and methods, valid against the CRD.

use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use mapper_core::fixtures::*;
use serde_json::Value;
use testkit::kube_api::FakeApiServer;
use tests::{
    binary, free_port, fresh_db, get_text, org_with_cluster, run_ok, send_observations,
    serve_stats, start_cloud, start_mapper_with, until, write_kubeconfig,
};

/// The sidecar of `orders-api`: one `istio_requests_total` series (POST /api/orders from
/// checkout), whose value is read from `count` at each scrape. Returns the scrape counter.
async fn sidecar(ip: &str, port: u16, count: Arc<AtomicU64>) -> Arc<AtomicUsize> {
    serve_stats(ip, port, count, |n| {
        format!(
            "# TYPE istio_requests_total counter\n\
             istio_requests_total{{reporter=\"destination\",source_workload=\"checkout\",source_workload_namespace=\"shop\",source_principal=\"spiffe://cluster.local/ns/shop/sa/checkout\",source_app=\"checkout\",source_canonical_service=\"checkout\",destination_workload=\"orders-api\",destination_workload_namespace=\"shop\",destination_service=\"orders-api.shop.svc.cluster.local\",destination_service_name=\"orders-api\",destination_service_namespace=\"shop\",destination_app=\"orders-api\",request_protocol=\"http\",response_code=\"201\",grpc_response_status=\"\",response_flags=\"-\",connection_security_policy=\"mutual_tls\",request_method=\"POST\",request_path=\"/api/orders\"}} {}\n",
            n
        )
    })
    .await
}

fn deploy(api: &FakeApiServer, name: &str, ip: &str, sidecar: bool) {
    api.apply(&Deployment { metadata: mk_deployment("shop", name), ..Default::default() });
    let rs = format!("{name}-5d8f7c9b4");
    api.apply(&ReplicaSet { metadata: mk_replicaset("shop", &rs, name), ..Default::default() });
    let pod = mk_pod("shop", &format!("{rs}-x1"), &[ip])
        .owned_by("ReplicaSet", &rs)
        .labelled("app", name);
    api.apply::<Pod>(&if sidecar { pod.with_istio_sidecar() } else { pod });
}

/// How long a wait of this test ([`until`]) may take.
const WAIT: Duration = Duration::from_secs(40);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_topics_and_http_paths_reach_the_cloud_graph_and_client_intents() {
    // The cloud.
    let db = fresh_db("e2e_protocols").await;
    let org = org_with_cluster(&db, "acme", "prod");
    let (_cloud, cloud) = start_cloud(&db).await;

    // The cluster: checkout (127.0.0.3) calls orders-api (127.0.0.2, with a sidecar) over HTTP
    // and the Kafka broker kafka-0 (infra, StatefulSet) over the Kafka protocol.
    let api = FakeApiServer::start().await.unwrap();
    // Istio is installed (istiod in istio-system): the mapper scrapes injected sidecars.
    api.apply(&Namespace { metadata: mk_namespace("istio-system"), ..Default::default() });
    api.apply(&mk_service("istio-system", "istiod", &["10.96.0.40"], &[("app", "istiod")]));
    deploy(&api, "orders-api", "127.0.0.2", true);
    api.apply(&mk_service("shop", "orders-api", &["10.96.0.12"], &[("app", "orders-api")]));
    deploy(&api, "checkout", "127.0.0.3", false);
    api.apply(&StatefulSet { metadata: mk_statefulset("infra", "kafka"), ..Default::default() });
    api.apply::<Pod>(
        &mk_pod("infra", "kafka-0", &["10.244.9.9"])
            .owned_by("StatefulSet", "kafka")
            .labelled("app", "kafka"),
    );
    let metrics_port = free_port();
    let count = Arc::new(AtomicU64::new(40));
    let scrapes = sidecar("127.0.0.2", metrics_port, count.clone()).await;

    let dir = std::env::temp_dir().join(format!("e2e-protocols-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let metrics_port = metrics_port.to_string();
    let upload = org.upload_flags(&cloud);
    let flags: Vec<&str> = ["--upload-interval-seconds", "0.5"]
        .into_iter()
        .chain(upload.iter().map(String::as_str))
        .chain([
            "--kafka-brokers",
            "infra/app=kafka",
            "--istio-scrape-interval-seconds",
            "1",
            "--istio-metrics-port",
            &metrics_port,
        ])
        .collect();
    let (_mapper, mapper) =
        start_mapper_with(&dir, &write_kubeconfig(&dir, &api.url()), &flags).await;

    // Kafka: the broker logs what it authorised, once the mapper follows its log.
    until("the mapper follows the broker's log", WAIT, || async {
        (api.log_streams("infra", "kafka-0") > 0).then_some(())
    })
    .await;
    let now = chrono::Utc::now();
    for (verdict, operation) in
        [("Allowed", "Write"), ("Allowed", "Read"), ("Denied", "Describe"), ("Allowed", "Write")]
    {
        api.append_log("infra", "kafka-0", now, &format!(
            "[2026-11-24 21:00:00,000] INFO Principal = User:CN=checkout is {verdict} Operation = {operation} from host = 127.0.0.3 on resource = Topic:LITERAL:orders for request = Produce with resourceRefCount = 1 (kafka.authorizer.logger)"
        ));
    }
    api.append_log(
        "infra",
        "kafka-0",
        now,
        "[2026-11-24 21:00:01,000] INFO some unrelated broker line (kafka.server.KafkaServer)",
    );
    // Istio: a node agent saw checkout (no sidecar of its own) connect to orders-api's Service, which
    // vouches for orders-api's count of checkout's requests; after the first scrape (a
    // baseline), 7 more requests.
    let http = reqwest::Client::new();
    let connection = serde_json::json!({"tcp": [{"src_ip": "127.0.0.3", "src_port": 40000, "dst_ip": "10.96.0.12", "dst_port": 8080, "at": chrono::Utc::now()}]});
    send_observations(&mapper, &connection).await;
    until("the sidecar is scraped", WAIT, || async {
        (scrapes.load(Ordering::SeqCst) > 0).then_some(())
    })
    .await;
    count.fetch_add(7, Ordering::SeqCst);

    let token = org.api_token.clone();
    let graph = until("the cloud's graph has the Kafka topic and the HTTP path", WAIT, || async {
        let g: Value = http
            .get(format!("{cloud}/api/v1/access-graph"))
            .bearer_auth(&token)
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        let text = g.to_string();
        (text.contains("\"orders\"") && text.contains("/api/orders")).then_some(g)
    })
    .await;
    let edges = graph["edges"].as_array().unwrap();
    let kafka = edges
        .iter()
        .find(|e| e["target"] == "prod/infra/kafka")
        .unwrap_or_else(|| panic!("{graph:#}"));
    assert_eq!(kafka["source"], "prod/shop/checkout");
    assert_eq!(
        kafka["kafka"],
        serde_json::json!([{"name": "orders", "operations": ["consume", "describe", "produce"], "denied": ["describe"]}]),
        "{kafka}"
    );
    let web = edges
        .iter()
        .find(|e| e["target"] == "prod/shop/orders-api")
        .unwrap_or_else(|| panic!("{graph:#}"));
    assert_eq!(web["source"], "prod/shop/checkout");
    assert_eq!(
        web["http"],
        serde_json::json!([{"path": "/api/orders", "methods": ["POST"]}]),
        "{web}"
    );
    assert_eq!(
        web["connections"],
        1 + 7,
        "the connection, and only the requests since the baseline scrape"
    );

    for version in ["v2beta1", "v1alpha3"] {
        let url = format!("{cloud}/api/v1/clusters/prod/client-intents?version={version}");
        let yaml = get_text(&http, &url, &token).await;
        assert!(
            yaml.contains("name: orders")
                && yaml.contains("/api/orders")
                && yaml.contains("produce"),
            "{yaml}"
        );
        let crd = testkit::crd::CrdSchemas::clientintents_reference();
        for doc in yaml.split("\n---\n").filter(|d| !d.trim().is_empty()) {
            let doc: Value = serde_yaml::from_str(doc).unwrap();
            crd.validate(&doc).unwrap_or_else(|e| {
                panic!("{version} ClientIntents do not validate: {e:?}\n{yaml}")
            });
        }
    }
    let listed = run_ok(Command::new(binary("intentmap")).args(["--mapper-url", &mapper, "list"]));
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains(
            "    - Kafka topic: orders, operations: [consume describe produce], denied: [describe]"
        ),
        "{listed}"
    );
    assert!(listed.contains("    - path /api/orders, methods: [POST]"), "{listed}");
    std::fs::remove_dir_all(&dir).ok();
}
