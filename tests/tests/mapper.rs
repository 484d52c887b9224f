//! A cluster as a user meets it: the `cluster-agent mapper` binary watching a (stand-in)
//! Kubernetes API, node observations over HTTP, the `intentmap` CLI's list, export, visualize
//! and reset, and the upload to the real `cloud-api` binary.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use mapper_core::fixtures::*;
use serde_json::{json, Value};
use testkit::kube_api::{FakeApiServer, TokenIdentity};
use tests::{
    binary, free_port, fresh_db, get_json, org_with_cluster, run_ok, seeds_list, send_observations,
    spawn, start_cloud, wait_ready, write_kubeconfig,
};

use tests::{SHOP_CALLS as CALLS, SHOP_NAMESPACE as NS, SHOP_SERVICES as SERVICES};

fn pod_ip(i: usize) -> String {
    format!("10.244.0.{}", 10 + i)
}

fn service_ip(i: usize) -> String {
    format!("10.96.0.{}", 10 + i)
}

/// The seeds' shop: each service a Deployment (redis-cart a StatefulSet) with one pod and a Service.
fn load_shop(api: &FakeApiServer) {
    api.apply(&Namespace { metadata: mk_namespace(NS), ..Default::default() });
    for (i, name) in SERVICES.iter().enumerate() {
        let pod_name = format!("{name}-5d8f7c9b4-x{i}");
        let pod = if *name == "redis-cart" {
            api.apply(&StatefulSet { metadata: mk_statefulset(NS, name), ..Default::default() });
            mk_pod(NS, &format!("{name}-0"), &[&pod_ip(i)]).owned_by("StatefulSet", name)
        } else {
            api.apply(&Deployment { metadata: mk_deployment(NS, name), ..Default::default() });
            api.apply(&ReplicaSet {
                metadata: mk_replicaset(NS, &format!("{name}-5d8f7c9b4"), name),
                ..Default::default()
            });
            mk_pod(NS, &pod_name, &[&pod_ip(i)])
                .owned_by("ReplicaSet", &format!("{name}-5d8f7c9b4"))
        };
        api.apply::<Pod>(
            &pod.labelled("app", name)
                .labelled("tier", if *name == "loadgenerator" { "test" } else { "shop" })
                .on_node("node-1"),
        );
        let mut service: Service = mk_service(NS, name, &[&service_ip(i)], &[("app", name)]);
        if *name == "frontend" {
            service = service.load_balancer(&["198.51.100.10"]);
        }
        api.apply(&service);
    }
}

fn shop_observations() -> Value {
    let index = |n: &str| SERVICES.iter().position(|s| *s == n).expect("a shop service");
    let mut tcp = Vec::new();
    for (client, targets) in CALLS {
        for target in *targets {
            tcp.push(json!({"src_ip": pod_ip(index(client)), "src_port": 40000, "dst_ip": service_ip(index(target)), "dst_port": 8080, "at": "2026-11-24T18:00:00Z", "count": 3}));
        }
    }
    json!({"source": "node-1", "tcp": tcp})
}

fn intentmap(mapper: &str, args: &[&str]) -> String {
    let out = run_ok(Command::new(binary("intentmap")).args(["--mapper-url", mapper]).args(args));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test]
async fn the_mapper_names_the_shop_like_the_seeds_and_the_cli_lists_exports_draws_and_resets_it() {
    let api = FakeApiServer::start().await.unwrap();
    load_shop(&api);
    // node-1's agent: a projected token made for the mapper, naming its node.
    let node_token = TokenIdentity::projected(
        "intentmap",
        "intentmap-node",
        "intentmap-mapper",
        ("intentmap-node-x7k2p", "uid-agent-1"),
        Some("node-1"),
    );
    api.set_token_identity("node-sa-token", node_token);
    api.set_token_review("other-sa-token", Some(("system:serviceaccount:default:default", vec![])));
    let dir = std::env::temp_dir().join(format!("e2e-mapper-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mapper = format!("http://127.0.0.1:{port}");
    let _agent = spawn(
        Command::new(binary("cluster-agent"))
            .args(["mapper", "--listen", &format!("127.0.0.1:{port}"), "--outbox-dir"])
            .arg(dir.join("outbox"))
            .args(["--node-service-accounts", "system:serviceaccount:intentmap:intentmap-node"])
            .env("KUBECONFIG", write_kubeconfig(&dir, &api.url()))
            .env("RUST_LOG", "warn"),
    );
    wait_ready(&format!("{mapper}/readyz"), Duration::from_secs(30)).await;

    let http = reqwest::Client::new();
    let post = |token: &'static str| {
        let http = http.clone();
        let url = format!("{mapper}/v1/observations");
        async move {
            http.post(url)
                .bearer_auth(token)
                .json(&shop_observations())
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(post("bogus").await, 401, "an unknown token is refused");
    assert_eq!(
        post("other-sa-token").await,
        403,
        "a ServiceAccount that is not a node agent's is refused"
    );
    assert_eq!(intentmap(&mapper, &["list"]), "No connections found.\n");
    assert_eq!(post("node-sa-token").await, 202);
    assert_eq!(post("node-sa-token").await, 202);
    assert_eq!(
        api.request_count("/apis/authentication.k8s.io/v1/tokenreviews"),
        3,
        "the node's token is reviewed once, then cached"
    );

    let listed = intentmap(&mapper, &["list"]);
    assert_eq!(listed, seeds_list(), "the list output is exactly the seeds'");
    assert!(
        listed.starts_with("cartservice in namespace otterize-ecom-demo calls:\n  - redis-cart\n"),
        "{listed}"
    );
    // `--server` selects the clients that call it, with all their calls (issue 18, item 1):
    // the seeds' blocks of checkoutservice and frontend, whole.
    let blocks_of = |clients: &[&str]| -> String {
        listed
            .split_inclusive('\n')
            .fold((String::new(), false), |(mut out, keep), line| {
                let keep = if line.starts_with(' ') {
                    keep
                } else {
                    clients.iter().any(|c| line.starts_with(&format!("{c} in namespace ")))
                };
                if keep {
                    out.push_str(line);
                }
                (out, keep)
            })
            .0
    };
    let clients_of_cart = blocks_of(&["checkoutservice", "frontend"]);
    assert!(clients_of_cart.contains("  - cartservice\n"), "{clients_of_cart}");
    assert_eq!(
        intentmap(&mapper, &["list", "--server", &format!("cartservice.{NS}")]),
        clients_of_cart
    );
    assert!(
        !intentmap(&mapper, &["list", "--exclude-labels", "tier=test"]).contains("loadgenerator")
    );
    assert_eq!(intentmap(&mapper, &["list", "-n", "elsewhere"]), "No connections found.\n");

    // Export: one file per client, each a ClientIntents that validates against the CRD.
    let out = dir.join("intents");
    intentmap(&mapper, &["export", "--output-type", "dir", "-o", out.to_str().unwrap()]);
    let mut files: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    assert!(files.contains(&format!("frontend.{NS}.yaml")), "{files:?}");
    let schemas = testkit::crd::CrdSchemas::clientintents_reference();
    for version in ["v2beta1", "v1alpha3"] {
        let yaml = intentmap(&mapper, &["export", "--output-version", version]);
        for doc in yaml.split("---\n").filter(|d| !d.trim().is_empty()) {
            let doc: Value = serde_yaml::from_str(doc).unwrap();
            assert_eq!(doc["apiVersion"], format!("k8s.otterize.com/{version}"));
            schemas.validate(&doc).unwrap_or_else(|e| panic!("{e:?}\n{doc}"));
        }
    }
    let json: Value = serde_json::from_str(&intentmap(
        &mapper,
        &["export", "--format", "json", "-n", NS, "--server", &format!("redis-cart.{NS}")],
    ))
    .unwrap();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["spec"]["workload"]["name"], "cartservice");

    // Visualize: an SVG and a PNG, drawn without any external program.
    let svg = dir.join("shop.svg");
    let png = dir.join("shop.png");
    intentmap(&mapper, &["visualize", "-o", svg.to_str().unwrap()]);
    intentmap(&mapper, &["visualize", "-o", png.to_str().unwrap()]);
    let svg_text = std::fs::read_to_string(&svg).unwrap();
    assert!(svg_text.contains("<svg") && svg_text.contains("productcatalogservice"));
    assert_eq!(&std::fs::read(&png).unwrap()[..4], b"\x89PNG");

    intentmap(&mapper, &["reset"]);
    assert_eq!(intentmap(&mapper, &["list"]), "No connections found.\n");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn the_mapper_uploads_to_the_cloud_and_a_restart_loses_nothing() {
    // The cloud, as the cloud-api binary.
    let db = fresh_db("e2e_upload").await;
    let org = org_with_cluster(&db, "acme", "prod");
    let (_cloud, cloud) = start_cloud(&db).await;

    let api = FakeApiServer::start().await.unwrap();
    load_shop(&api);
    let dir = std::env::temp_dir().join(format!("e2e-upload-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    let mapper = format!("http://127.0.0.1:{port}");
    let start_mapper = |interval: &str| {
        spawn(
            Command::new(binary("cluster-agent"))
                .args([
                    "mapper",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                    "--shared-token",
                    "node-secret",
                    "--upload-interval-seconds",
                    interval,
                    "--outbox-dir",
                ])
                .arg(dir.join("outbox"))
                .args(org.upload_flags(&cloud))
                .env("KUBECONFIG", write_kubeconfig(&dir, &api.url()))
                .env("RUST_LOG", "warn"),
        )
    };
    // Uploads once a minute: nothing would reach the cloud before the stop below but for the flush.
    let mut agent = start_mapper("60");
    wait_ready(&format!("{mapper}/readyz"), Duration::from_secs(30)).await;
    let http = reqwest::Client::new();
    let observe = || async {
        send_observations(&mapper, &shop_observations()).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    observe().await;
    // A rolling update: SIGTERM, and the mapper flushes what it has before it exits.
    run_ok(Command::new("kill").args(["-TERM", &agent.0.id().to_string()]));
    let status = agent.0.wait().unwrap();
    assert!(status.success(), "the mapper exits cleanly on SIGTERM: {status}");

    let api_token = org.api_token.clone();
    let graph_url = format!("{cloud}/api/v1/access-graph?cluster=prod");
    let graph = || get_json(&http, &graph_url, &api_token);
    let connections = |g: &Value| {
        g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["connections"].as_u64().unwrap())
            .sum::<u64>()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while connections(&graph().await) < 16 * 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the mapper's edges did not reach the cloud: {}",
            graph().await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let g = graph().await;
    assert_eq!(g["edges"].as_array().unwrap().len(), 16);
    assert!(g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .any(|e| e["source"] == "prod/otterize-ecom-demo/frontend"
            && e["target"] == "prod/otterize-ecom-demo/cartservice"));

    // The restarted mapper goes on: new traffic is counted once more, never twice.
    let _agent = start_mapper("0.2");
    wait_ready(&format!("{mapper}/readyz"), Duration::from_secs(30)).await;
    observe().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while connections(&graph().await) < 2 * 16 * 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the restarted mapper's edges did not reach the cloud"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(connections(&graph().await), 2 * 16 * 3, "nothing counted twice");

    std::fs::remove_dir_all(&dir).ok();
}

/// The seeds: "If an otterize/service-name label is present, that name is used." A pod of
/// Deployment `web-v2` labelled `otterize/service-name: storefront` is listed as `storefront`,
/// and relabelling the running pod renames its later calls.
#[tokio::test]
async fn the_otterize_service_name_label_names_the_workload_in_list() {
    let api = FakeApiServer::start().await.unwrap();
    api.apply(&Namespace { metadata: mk_namespace("shop"), ..Default::default() });
    for (name, ip) in [("web-v2", "10.244.1.10"), ("cart", "10.244.1.11")] {
        api.apply(&Deployment { metadata: mk_deployment("shop", name), ..Default::default() });
        api.apply(&ReplicaSet {
            metadata: mk_replicaset("shop", &format!("{name}-7c9d"), name),
            ..Default::default()
        });
        let pod = mk_pod("shop", &format!("{name}-7c9d-a1b2c"), &[ip])
            .owned_by("ReplicaSet", &format!("{name}-7c9d"));
        api.apply::<Pod>(&if name == "web-v2" {
            pod.labelled("otterize/service-name", "storefront")
        } else {
            pod
        });
    }
    let dir = std::env::temp_dir().join(format!("e2e-mapper-label-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_agent, mapper) = tests::start_mapper(&dir, &write_kubeconfig(&dir, &api.url())).await;
    let http = reqwest::Client::new();
    let call = |at: String| {
        let http = http.clone();
        let url = format!("{mapper}/v1/observations");
        let tcp = json!([{"src_ip": "10.244.1.10", "src_port": 40000, "dst_ip": "10.244.1.11", "dst_port": 7070, "at": at, "count": 1}]);
        async move {
            http.post(url)
                .bearer_auth("node-secret")
                .json(&json!({"source": "node-1", "tcp": tcp}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(call(chrono::Utc::now().to_rfc3339()).await, 202);
    assert_eq!(intentmap(&mapper, &["list"]), "storefront in namespace shop calls:\n  - cart\n");

    // Relabelled: calls after the change carry the new name; the old edge stays as it was seen.
    let pod = mk_pod("shop", "web-v2-7c9d-a1b2c", &["10.244.1.10"])
        .owned_by("ReplicaSet", "web-v2-7c9d")
        .labelled("otterize/service-name", "shopfront");
    api.apply::<Pod>(&pod);
    let started = std::time::Instant::now();
    loop {
        assert_eq!(call(chrono::Utc::now().to_rfc3339()).await, 202);
        let listed = intentmap(&mapper, &["list"]);
        if listed.contains("shopfront in namespace shop calls:\n  - cart\n") {
            assert!(listed.contains("storefront in namespace shop calls:\n  - cart\n"), "{listed}");
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the relabelled pod is never listed as shopfront: {listed}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}
