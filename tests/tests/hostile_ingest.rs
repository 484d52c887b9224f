//! Hostile reports against the real `cloud-api` binary, and a real `cluster-agent mapper`
//! whose outbox holds reports that used to stall its cluster for good.
//!
//! - The review's memory amplification: one edge with 12,000,000 one-letter domains, 86 KiB
//!   gzipped, four at once. Each is refused (413) and the cloud's peak resident memory
//!   (`VmHWM` in /proc) stays within 64 MiB of what it was, while `/healthz` keeps answering.
//! - A count near 2^63, a timestamp in the year -5000, a `generated_at` in 9999: the mapper's
//!   outbox gets past all of them and the cluster's later traffic reaches the cloud.

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use mapper_core::fixtures::*;
use serde_json::{json, Value};
use testkit::kube_api::FakeApiServer;
use testkit::process::files_ending as files;
use tests::{
    cluster_jwt, fresh_db, get_json, org_with_cluster, post_gzip, send_observations, start_cloud,
    start_mapper_with, write_kubeconfig, Org,
};
use uuid::Uuid;

/// How much the cloud's peak resident memory may grow under the attack.
const RSS_BOUND_KIB: u64 = 64 << 10;

/// `VmRSS` and `VmHWM` (peak) of a process, in KiB.
fn memory_kib(pid: u32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/status: {e}"));
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    tests::cloud::gzip(bytes, flate2::Compression::best())
}

fn edge(client: &str, target: Value, connections: u64) -> Value {
    json!({"client": {"namespace": "shop", "name": client}, "target": target,
           "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:30:00Z", "connections": connections})
}

fn report(edges: Vec<Value>, exposed: Vec<Value>) -> Value {
    json!({"schema_version": 1, "report_id": Uuid::new_v4(), "generated_at": chrono::Utc::now(), "edges": edges, "exposed": exposed})
}

#[tokio::test]
async fn four_domain_bombs_at_once_are_refused_within_a_memory_bound() {
    let db = fresh_db("e2e_bomb").await;
    let (cloud_process, cloud) = start_cloud(&db).await;
    let pid = cloud_process.0.id();
    let http = reqwest::Client::new();
    let mut tenants = Vec::new();
    for name in ["acme", "globex", "initech", "umbrella"] {
        let Org { creds, .. } = org_with_cluster(&db, name, "prod");
        tenants.push(cluster_jwt(&http, &cloud, &creds).await);
    }

    // The attack: 12,000,000 one-letter domains on one edge, about 57 MiB of JSON.
    let one = report(vec![edge("frontend", json!({"internet": {"domains": ["x"]}}), 1)], vec![])
        .to_string();
    let domains = format!("[{}\"x\"]", "\"x\",".repeat(12_000_000 - 1));
    let bomb = gzip(one.replacen("[\"x\"]", &domains, 1).as_bytes());
    drop(domains);
    assert!(bomb.len() < 100 << 10, "the bomb is {} bytes gzipped", bomb.len());

    // A normal report first, so that the baseline includes what serving one costs.
    let (status, text) = post_gzip(&http, &cloud, &tenants[0], gzip(one.as_bytes())).await;
    assert_eq!(status, 202, "{text}");
    let (rss_before, peak_before) = memory_kib(pid);

    let health = {
        let (http, cloud) = (http.clone(), cloud.clone());
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let stop = Instant::now() + Duration::from_secs(3);
            while Instant::now() < stop {
                let started = Instant::now();
                let reply = http
                    .get(format!("{cloud}/healthz"))
                    .timeout(Duration::from_secs(10))
                    .send()
                    .await
                    .expect("/healthz answers");
                assert_eq!(reply.status().as_u16(), 200);
                slowest = slowest.max(started.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            slowest
        })
    };
    let attacks: Vec<_> = tenants
        .iter()
        .map(|jwt| {
            let (http, cloud, jwt, bomb) = (http.clone(), cloud.clone(), jwt.clone(), bomb.clone());
            tokio::spawn(async move { post_gzip(&http, &cloud, &jwt, bomb).await })
        })
        .collect();
    for attack in attacks {
        let (status, text) = attack.await.unwrap();
        assert_eq!(status, 413, "{text}");
        assert!(
            text.contains("edges[0].target.internet.domains: more than 1000 domains"),
            "{text}"
        );
    }
    let slowest_health = health.await.unwrap();
    let (rss_after, peak_after) = memory_kib(pid);
    println!("cloud-api memory: RSS {rss_before} KiB -> {rss_after} KiB, peak {peak_before} KiB -> {peak_after} KiB; slowest /healthz {slowest_health:?}");
    assert!(
        peak_after <= rss_before.max(peak_before) + RSS_BOUND_KIB,
        "four bombs raised the cloud's peak memory from {peak_before} KiB (RSS {rss_before} KiB) to {peak_after} KiB, more than {RSS_BOUND_KIB} KiB"
    );
    assert!(
        slowest_health < Duration::from_secs(1),
        "/healthz took {slowest_health:?} during the attack"
    );

    // And the cloud still takes reports.
    let (status, text) = post_gzip(
        &http,
        &cloud,
        &tenants[1],
        gzip(
            report(
                vec![edge(
                    "frontend",
                    json!({"service": {"namespace": "shop", "name": "cart"}}),
                    1,
                )],
                vec![],
            )
            .to_string()
            .as_bytes(),
        ),
    )
    .await;
    assert_eq!(status, 202, "{text}");
}

/// A report file as the outbox writes them, sorting before anything the mapper writes.
fn seed(outbox: &Path, seq: u64, report: &Value) {
    std::fs::create_dir_all(outbox).unwrap();
    let id = report["report_id"].as_str().unwrap();
    std::fs::write(outbox.join(format!("{seq:020}-{id}.json")), report.to_string()).unwrap();
}

/// Namespace `shop`: Deployments `frontend` (pod 10.244.0.10) and `checkout` (pod 10.244.0.11,
/// Service 10.96.0.11).
fn load_shop(api: &FakeApiServer) {
    api.apply(&Namespace { metadata: mk_namespace("shop"), ..Default::default() });
    for (name, i) in [("frontend", 10), ("checkout", 11)] {
        api.apply(&Deployment { metadata: mk_deployment("shop", name), ..Default::default() });
        api.apply(&ReplicaSet {
            metadata: mk_replicaset("shop", &format!("{name}-7d9f"), name),
            ..Default::default()
        });
        api.apply::<Pod>(
            &mk_pod("shop", &format!("{name}-7d9f-x{i}"), &[&format!("10.244.0.{i}")])
                .owned_by("ReplicaSet", &format!("{name}-7d9f"))
                .labelled("app", name),
        );
        api.apply::<Service>(&mk_service(
            "shop",
            name,
            &[&format!("10.96.0.{i}")],
            &[("app", name)],
        ));
    }
}

#[tokio::test]
async fn reports_that_used_to_stall_a_cluster_are_handled_and_it_keeps_uploading() {
    let db = fresh_db("e2e_stall").await;
    let (_cloud_process, cloud) = start_cloud(&db).await;
    let org = org_with_cluster(&db, "acme", "prod");
    let api_token = org.api_token.clone();
    let api = FakeApiServer::start().await.unwrap();
    load_shop(&api);
    let dir = std::env::temp_dir().join(format!("e2e-stall-{}", Uuid::new_v4()));
    let outbox = dir.join("outbox");

    // What the outbox held when the cloud answered 500 to it for ever, oldest first.
    let cart = json!({"kubernetes": {"namespace": "shop", "name": "cart"}});
    seed(&outbox, 1, &report(vec![edge("frontend", cart.clone(), u64::MAX - 1)], vec![]));
    let mut ancient = report(vec![edge("frontend", cart.clone(), 1)], vec![]);
    ancient["edges"][0]["first_seen"] = json!("-5000-01-01T00:00:00Z");
    seed(&outbox, 2, &ancient);
    let gateway =
        |addr: &str| json!({"namespace": "shop", "name": "frontend", "addresses": [addr]});
    let mut far_future = report(vec![], vec![gateway("198.51.100.99")]);
    far_future["generated_at"] = json!("9999-01-01T00:00:00Z");
    seed(&outbox, 3, &far_future);
    // The next count used to overflow PostgreSQL's bigint: "bigint out of range", a 500.
    seed(&outbox, 4, &report(vec![edge("frontend", cart, 5)], vec![gateway("198.51.100.20")]));

    let kubeconfig = write_kubeconfig(&dir, &api.url());
    let upload = org.upload_flags(&cloud);
    let flags: Vec<&str> =
        upload.iter().map(String::as_str).chain(["--upload-interval-seconds", "0.2"]).collect();
    let (_mapper_process, mapper) = start_mapper_with(&dir, &kubeconfig, &flags).await;

    let http = reqwest::Client::new();
    let graph_url = format!("{cloud}/api/v1/access-graph");
    let graph = || get_json(&http, &graph_url, &api_token);
    let connections = |g: &Value, target: &str| {
        g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == "prod/shop/frontend" && e["target"] == target)
            .map(|e| e["connections"].clone())
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !files(&outbox, ".json").is_empty() {
        assert!(Instant::now() < deadline, "the outbox is stuck: {:?}", files(&outbox, ""));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rejected = files(&outbox, ".rejected");
    assert_eq!(rejected.len(), 2, "the two impossible dates are set aside: {rejected:?}");
    assert!(
        rejected[0].contains(ancient["report_id"].as_str().unwrap())
            && rejected[1].contains(far_future["report_id"].as_str().unwrap()),
        "{rejected:?}"
    );
    let g = graph().await;
    assert_eq!(
        connections(&g, "prod/shop/cart"),
        Some(json!(i64::MAX)),
        "the count saturates: {g}"
    );
    // The newest real report decides the exposed set; the one dated 9999 never counted.
    let mut owner: sqlx::PgConnection = sqlx::Connection::connect(&db).await.unwrap();
    let exposed: Vec<Vec<String>> = sqlx::query_scalar("SELECT addresses FROM exposed_workloads")
        .fetch_all(&mut owner)
        .await
        .unwrap();
    assert_eq!(exposed, vec![vec!["198.51.100.20".to_owned()]]);

    // The cluster keeps uploading: new traffic reaches the cloud.
    let batch = json!({"source": "node-1", "tcp": [{"src_ip": "10.244.0.10", "src_port": 40000, "dst_ip": "10.96.0.11", "dst_port": 8080, "at": chrono::Utc::now(), "count": 3}]});
    send_observations(&mapper, &batch).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let g = graph().await;
        if connections(&g, "prod/shop/checkout") == Some(json!(3)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the cluster's new traffic did not reach the cloud: {g}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    std::fs::remove_dir_all(&dir).ok();
}
