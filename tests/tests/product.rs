//! The whole product on one machine, as the README's demo runs it (`demo::product`): the real
//! cloud API binary on PostgreSQL, two simulated clusters each with its stand-in Kubernetes API,
//! its `cluster-agent mapper` and (as root) its `cluster-agent node` capturing real TCP and DNS
//! between network-namespace pods. The cloud's graph and each cluster's ClientIntents must match
//! the traffic actually sent, including a cross-cluster call and an internet (DNS) target; then
//! the cloud API is stopped for a while and restarted, and nothing is lost or counted twice.

use std::time::Duration;

use demo::product::{Options, Product, Traffic, CALLS};
use serde_json::Value;

fn has_edge(graph: &Value, source: &str, target: &str) -> bool {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["source"] == source && e["target"].as_str().is_some_and(|t| t.contains(target)))
}

/// The graph's calls between workloads and to targets, leaving out incoming internet traffic
/// (eu-west may see us-east's pods as clients from outside its cluster, after its 10 s wait).
fn calls(graph: &Value) -> usize {
    graph["edges"].as_array().unwrap().iter().filter(|e| e["source"] != "incoming/internet").count()
}

fn total(graph: &Value) -> u64 {
    graph["edges"].as_array().unwrap().iter().filter_map(|e| e["connections"].as_u64()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_product_maps_real_traffic_across_two_clusters_and_survives_a_cloud_outage() {
    let pg = testkit::pg::server().await.expect("PostgreSQL");
    let database_url = pg.fresh_database("e2e_product").await.unwrap();
    let bin_dir = tests::binary("cloud-api").parent().unwrap().to_owned();
    let work_dir = std::env::temp_dir().join(format!("e2e-product-{}", uuid::Uuid::new_v4()));
    let traffic = if testkit::need::is_root() { Traffic::Real } else { Traffic::Replayed };
    if traffic == Traffic::Replayed {
        println!("not root: the traffic is replayed to the mappers instead of captured (CI runs as root)");
    }
    let options = Options {
        bin_dir,
        work_dir: work_dir.clone(),
        database_url,
        cloud_port: tests::free_port(),
        traffic,
        upload_interval: 0.5,
    };
    let mut product = Product::start(options).await.unwrap();
    product.send_traffic(3).await.unwrap();
    let graph = product.wait_until_uploaded(Duration::from_secs(60)).await.unwrap();

    // The graph: every call that was made, named by workload, and nothing else between pods.
    let shop = "us-east/otterize-ecom-demo";
    for (source, target) in [
        (format!("{shop}/frontend"), format!("{shop}/cartservice")),
        (format!("{shop}/frontend"), format!("{shop}/checkoutservice")),
        (format!("{shop}/cartservice"), format!("{shop}/redis-cart")),
        (format!("{shop}/checkoutservice"), "eu-west/payments/payment-gateway".to_owned()),
        ("eu-west/payments/payment-gateway".to_owned(), "eu-west/payments/ledger".to_owned()),
        ("eu-west/payments/payment-gateway".to_owned(), "api.stripe.example".to_owned()),
    ] {
        assert!(has_edge(&graph, &source, &target), "no edge {source} -> {target} in {graph:#}");
    }
    assert_eq!(calls(&graph), CALLS.len(), "{graph:#}");
    let cross = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "eu-west/payments/payment-gateway")
        .unwrap();
    assert!(
        cross["via"].as_array().is_some_and(|v| !v.is_empty()),
        "the cross-cluster call went through the load balancer address: {cross}"
    );

    // Each cluster's ClientIntents: what its workloads called.
    let east = product.client_intents("us-east").await.unwrap();
    for expected in
        ["name: frontend", "name: cartservice", "name: checkoutservice", "name: redis-cart"]
    {
        assert!(
            east.contains(expected),
            "{expected} missing from us-east's ClientIntents:\n{east}"
        );
    }
    let west = product.client_intents("eu-west").await.unwrap();
    assert!(
        west.contains("name: payment-gateway")
            && west.contains("name: ledger")
            && west.contains("api.stripe.example"),
        "{west}"
    );
    let crd = testkit::crd::CrdSchemas::clientintents_reference();
    for yaml in [&east, &west] {
        for doc in yaml.split("\n---\n").filter(|d| !d.trim().is_empty()) {
            let doc: Value = serde_yaml::from_str(doc).unwrap();
            crd.validate(&doc)
                .unwrap_or_else(|e| panic!("ClientIntents do not validate: {e:?}\n{doc:#}"));
        }
    }

    // The cloud goes away for a while; traffic goes on; the mappers keep their reports.
    let before = total(&graph);
    product.stop_cloud();
    product.send_traffic(2).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    product.start_cloud().await.unwrap();
    // `wait_until_uploaded` returns once the cloud's count equals the mappers' own: nothing lost.
    let graph = product.wait_until_uploaded(Duration::from_secs(60)).await.unwrap();
    assert!(total(&graph) > before, "the traffic sent during the outage arrived");
    // And it stays equal: no report is applied twice (a duplicate would leave the cloud ahead).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let graph = product
        .wait_until_uploaded(Duration::from_secs(10))
        .await
        .expect("the cloud stays equal to the mappers: nothing counted twice");
    assert_eq!(calls(&graph), CALLS.len(), "{graph:#}");
    drop(product);
    std::fs::remove_dir_all(&work_dir).ok();
}
