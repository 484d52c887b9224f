//! The `intentmap` CLI as a user runs it (issue 18, item 13): with only a kubeconfig it finds
//! the chart's mapper Service and a Ready pod behind it and port-forwards through the API
//! server, or says what is missing; `--mapper-url` still wins; `--exclude-services` and `-o`
//! against the real `cluster-agent mapper` binary over a stand-in Kubernetes API server.
//!
//! The stand-in serves no `pods/portforward` (it cannot connect to a pod), so here the CLI's
//! port-forward is seen asked for the right pod and port; the forward itself is exercised on
//! the real cluster.

use std::path::Path;
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use mapper_core::fixtures::*;
use serde_json::json;
use testkit::kube_api::FakeApiServer;
use tests::{binary, run_ok, write_kubeconfig};

/// `intentmap ARGS` with exactly this kubeconfig and no mapper URL from the environment.
fn intentmap(kubeconfig: &Path, args: &[&str]) -> Output {
    Command::new(binary("intentmap"))
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .env("HOME", kubeconfig.parent().unwrap())
        .env_remove("INTENTMAP_MAPPER_URL")
        .env_remove("INTENTMAP_MAPPER_NAMESPACE")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .unwrap()
}

fn failure(out: &Output) -> String {
    assert!(
        !out.status.success(),
        "expected a failure, got stdout {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(out.stdout.is_empty(), "nothing on stdout: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The chart's mapper Service (`charts/cluster-agent/templates/mapper.yaml`, release
/// `intentmap` in namespace `intentmap`) and one mapper pod, Ready or not.
fn install_chart_mapper(api: &FakeApiServer, pod_ready: bool) {
    let selector = json!({
        "app.kubernetes.io/name": "cluster-agent",
        "app.kubernetes.io/instance": "intentmap",
        "app.kubernetes.io/component": "mapper",
    });
    let mut labels = selector.clone();
    labels["app.kubernetes.io/part-of"] = json!("intentmap");
    let service: Service = serde_json::from_value(json!({
        "metadata": {"namespace": "intentmap", "name": "intentmap-mapper", "labels": labels},
        "spec": {"selector": selector, "ports": [{"name": "http", "port": 9090, "targetPort": "http"}]},
    }))
    .unwrap();
    api.apply(&service);
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"namespace": "intentmap", "name": "intentmap-mapper-7d9f-x2x4q", "labels": selector},
        "spec": {"containers": [{"name": "mapper", "image": "cluster-agent", "ports": [{"name": "http", "containerPort": 9090}]}]},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": if pod_ready { "True" } else { "False" }}]},
    }))
    .unwrap();
    api.apply(&pod);
}

// The CLI runs while the stand-in API server, in this process, answers it: two threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_only_a_kubeconfig_the_cli_finds_the_mapper_or_says_what_is_missing() {
    let dir = std::env::temp_dir().join(format!("e2e-intentmap-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();

    // No kubeconfig at all.
    let missing = dir.join("no-such-kubeconfig");
    let message = failure(&intentmap(&missing, &["list"]));
    assert!(message.contains("no usable kubeconfig"), "{message}");
    assert!(message.contains("KUBECONFIG"), "{message}");
    assert!(message.contains("--mapper-url"), "{message}");

    // A cluster without the chart.
    let api = FakeApiServer::start().await.unwrap();
    api.register::<Pod>();
    api.register::<Service>();
    let kubeconfig = write_kubeconfig(&dir, &api.url());
    let message = failure(&intentmap(&kubeconfig, &["list"]));
    assert!(message.contains("no mapper Service"), "{message}");
    assert!(message.contains("Is the cluster-agent chart installed? helm install"), "{message}");

    // The chart is installed but its mapper is not ready yet.
    install_chart_mapper(&api, false);
    let message = failure(&intentmap(&kubeconfig, &["export"]));
    assert!(message.contains("intentmap/intentmap-mapper has no Ready pod"), "{message}");
    assert!(message.contains("intentmap-mapper-7d9f-x2x4q: Running, not ready"), "{message}");

    // Ready: the CLI port-forwards to that pod's `http` port through the API server.
    install_chart_mapper(&api, true);
    let portforward = "/api/v1/namespaces/intentmap/pods/intentmap-mapper-7d9f-x2x4q/portforward";
    assert_eq!(api.request_count(portforward), 0);
    let message = failure(&intentmap(&kubeconfig, &["--mapper-namespace", "intentmap", "list"]));
    assert!(
        message.contains("cannot port-forward to the mapper (pod intentmap/intentmap-mapper-7d9f-x2x4q port 9090"),
        "{message}"
    );
    assert!(message.contains("pods/portforward"), "{message}");
    assert_eq!(api.request_count(portforward), 1, "one port-forward to the Ready pod");
    let message = failure(&intentmap(&kubeconfig, &["--mapper-namespace", "elsewhere", "list"]));
    assert!(message.contains("no mapper Service"), "{message}");
    assert!(message.contains("in namespace elsewhere"), "{message}");

    // --mapper-url wins over the kubeconfig: the API server is not asked.
    let services = api.request_count("/api/v1/services");
    let message = failure(&intentmap(&kubeconfig, &["--mapper-url", "http://127.0.0.1:1", "list"]));
    assert!(message.contains("cannot reach the mapper at http://127.0.0.1:1"), "{message}");
    assert_eq!(api.request_count("/api/v1/services"), services);
    assert_eq!(api.request_count(portforward), 1);
    std::fs::remove_dir_all(&dir).ok();
}

/// `shop`: web calls cart and metrics-proxy; `monitoring`'s prometheus calls web and cart.
fn load_cluster(api: &FakeApiServer) {
    for ns in ["shop", "monitoring"] {
        api.apply(&Namespace { metadata: mk_namespace(ns), ..Default::default() });
    }
    for (ns, name, ip) in [
        ("shop", "web", "10.244.1.10"),
        ("shop", "cart", "10.244.1.11"),
        ("shop", "metrics-proxy", "10.244.1.12"),
        ("monitoring", "prometheus", "10.244.1.13"),
    ] {
        api.apply(&Deployment { metadata: mk_deployment(ns, name), ..Default::default() });
        api.apply(&ReplicaSet {
            metadata: mk_replicaset(ns, &format!("{name}-7c9d"), name),
            ..Default::default()
        });
        api.apply::<Pod>(
            &mk_pod(ns, &format!("{name}-7c9d-a1b2c"), &[ip])
                .owned_by("ReplicaSet", &format!("{name}-7c9d")),
        );
    }
}

#[tokio::test]
async fn exclude_services_leaves_workloads_out_as_clients_and_as_targets() {
    let api = FakeApiServer::start().await.unwrap();
    load_cluster(&api);
    let dir = std::env::temp_dir().join(format!("e2e-intentmap-exclude-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_agent, mapper) = tests::start_mapper(&dir, &write_kubeconfig(&dir, &api.url())).await;
    let now = chrono::Utc::now().to_rfc3339();
    let tcp: Vec<_> = [
        ("10.244.1.10", "10.244.1.11"),
        ("10.244.1.10", "10.244.1.12"),
        ("10.244.1.13", "10.244.1.10"),
        ("10.244.1.13", "10.244.1.11"),
    ]
    .iter()
    .map(|(src, dst)| json!({"src_ip": src, "src_port": 40000, "dst_ip": dst, "dst_port": 8080, "at": now, "count": 1}))
    .collect();
    let status = reqwest::Client::new()
        .post(format!("{mapper}/v1/observations"))
        .bearer_auth("node-secret")
        .json(&json!({"source": "node-1", "tcp": tcp}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 202);
    let run = |args: &[&str]| {
        let out =
            run_ok(Command::new(binary("intentmap")).args(["--mapper-url", &mapper]).args(args));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        run(&["list"]),
        "prometheus in namespace monitoring calls:\n  - cart in namespace shop\n  - web in namespace shop\nweb in namespace shop calls:\n  - cart\n  - metrics-proxy\n"
    );
    // By name in any namespace: prometheus goes as a client.
    assert_eq!(
        run(&["list", "--exclude-services", "prometheus"]),
        "web in namespace shop calls:\n  - cart\n  - metrics-proxy\n"
    );
    // As a target, by name.namespace, repeated and comma-separated.
    assert_eq!(
        run(&[
            "list",
            "--exclude-services",
            "cart.shop",
            "--exclude-services",
            "metrics-proxy,nothing"
        ]),
        "prometheus in namespace monitoring calls:\n  - web in namespace shop\n"
    );
    // Another namespace's `cart` is not this one.
    assert!(run(&["list", "--exclude-services", "cart.monitoring"]).contains("  - cart\n"));

    // export: -o FILE gets the documents, standard output nothing.
    let file = dir.join("intents.yaml");
    let printed = run(&[
        "export",
        "--exclude-services",
        "prometheus,metrics-proxy",
        "-o",
        file.to_str().unwrap(),
    ]);
    assert_eq!(printed, "");
    let docs: Vec<serde_json::Value> = std::fs::read_to_string(&file)
        .unwrap()
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    assert_eq!(docs.len(), 1, "{docs:?}");
    assert_eq!(docs[0]["metadata"]["name"], "web");
    assert_eq!(
        docs[0]["spec"]["targets"],
        json!([{"kubernetes": {"name": "cart", "kind": "Deployment"}}])
    );

    // visualize writes SVG or PNG by the file's name, and refuses what it cannot write
    // rather than putting SVG text in a .jpg.
    for (name, magic) in [("map.svg", &b"<svg"[..]), ("map.PNG", &b"\x89PNG"[..])] {
        let path = dir.join(name);
        run(&["visualize", "--exclude-services", "prometheus", "-o", path.to_str().unwrap()]);
        let bytes = std::fs::read(&path).unwrap();
        assert!(bytes.windows(magic.len()).take(200).any(|w| w == magic), "{name}");
    }
    let jpg = dir.join("map.jpg");
    let out = Command::new(binary("intentmap"))
        .args(["--mapper-url", &mapper, "visualize", "-o", jpg.to_str().unwrap()])
        .output()
        .unwrap();
    let message = failure(&out);
    assert!(message.contains("map.png"), "{message}");
    assert!(!jpg.exists());

    // A name that cannot be a workload is refused before the mapper is asked.
    let out = Command::new(binary("intentmap"))
        .args(["--mapper-url", &mapper, "list", "--exclude-services", "Web Server"])
        .output()
        .unwrap();
    let message = failure(&out);
    assert!(message.contains("is not a workload name for --exclude-services"), "{message}");
    std::fs::remove_dir_all(&dir).ok();
}
