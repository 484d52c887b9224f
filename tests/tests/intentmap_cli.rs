//! The `intentmap` CLI as a user runs it (issue 18, item 13): with only a kubeconfig it finds
//! the chart's mapper Service and a Ready pod behind it and port-forwards through the API
//! server, or says what is missing; `--mapper-url` still wins; `--exclude-services`, `-o`,
//! `--distinct-by-label` and `--as-kubernetes-service` against the real `cluster-agent mapper`
//! binary over a stand-in Kubernetes API server.
//!
//! The stand-in serves no `pods/portforward` (it cannot connect to a pod), so here the CLI's
//! port-forward is seen asked for the right pod and port; the forward itself is exercised on
//! the real cluster.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use mapper_core::fixtures::*;
use serde_json::json;
use testkit::kube_api::FakeApiServer;
use tests::{binary, run_ok, send_observations, write_kubeconfig, Running};

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
    let (dir, _agent, mapper) = mapper_for(&api, "exclude").await;
    observe(
        &mapper,
        &[
            ("10.244.1.10", "10.244.1.11"),
            ("10.244.1.10", "10.244.1.12"),
            ("10.244.1.13", "10.244.1.10"),
            ("10.244.1.13", "10.244.1.11"),
        ],
    )
    .await;
    let run = |args: &[&str]| run_cli(&mapper, args).0;
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

/// A Deployment with one pod: namespace, name, the pod's IP and labels.
type OnePod<'a> = (&'a str, &'a str, &'a str, &'a [(&'a str, &'a str)]);

fn load_workloads(api: &FakeApiServer, workloads: &[OnePod]) {
    let mut namespaces: Vec<&str> = workloads.iter().map(|w| w.0).collect();
    namespaces.sort_unstable();
    namespaces.dedup();
    for ns in namespaces {
        api.apply(&Namespace { metadata: mk_namespace(ns), ..Default::default() });
    }
    for (ns, name, ip, labels) in workloads {
        api.apply(&Deployment { metadata: mk_deployment(ns, name), ..Default::default() });
        api.apply(&ReplicaSet {
            metadata: mk_replicaset(ns, &format!("{name}-7c9d"), name),
            ..Default::default()
        });
        let mut pod = mk_pod(ns, &format!("{name}-7c9d-a1b2c"), &[ip])
            .owned_by("ReplicaSet", &format!("{name}-7c9d"));
        for (key, value) in labels.iter() {
            pod = pod.labelled(key, value);
        }
        api.apply::<Pod>(&pod);
    }
}

/// A fresh directory (`e2e-intentmap-<what>-…`) with a mapper in it watching `api`: the
/// directory, the mapper's process and its URL.
async fn mapper_for(api: &FakeApiServer, what: &str) -> (PathBuf, Running, String) {
    let dir = std::env::temp_dir().join(format!("e2e-intentmap-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let (agent, mapper) = tests::start_mapper(&dir, &write_kubeconfig(&dir, &api.url())).await;
    (dir, agent, mapper)
}

/// Node-agent observations of these (source IP, destination IP) connections, now.
async fn observe(mapper: &str, pairs: &[(&str, &str)]) {
    let now = chrono::Utc::now().to_rfc3339();
    let tcp: Vec<_> = pairs
        .iter()
        .map(|(src, dst)| json!({"src_ip": src, "src_port": 40000, "dst_ip": dst, "dst_port": 8080, "at": now, "count": 1}))
        .collect();
    send_observations(mapper, &json!({"source": "node-1", "tcp": tcp})).await;
}

/// `intentmap --mapper-url MAPPER ARGS`: its standard output and standard error.
fn run_cli(mapper: &str, args: &[&str]) -> (String, String) {
    let out = run_ok(Command::new(binary("intentmap")).args(["--mapper-url", mapper]).args(args));
    (String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

fn yaml_docs(text: &str) -> Vec<serde_json::Value> {
    text.split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect()
}

#[tokio::test]
async fn distinct_by_label_tells_apart_workloads_of_one_name_by_their_pods_label() {
    // `api` runs in three namespaces: stable in eu and us, a canary in staging; each calls its
    // namespace's db. eu's web (no track label) calls eu's api.
    let api = FakeApiServer::start().await.unwrap();
    load_workloads(
        &api,
        &[
            ("eu", "api", "10.244.2.10", &[("track", "stable")]),
            ("us", "api", "10.244.2.11", &[("track", "stable")]),
            ("staging", "api", "10.244.2.12", &[("track", "canary")]),
            ("eu", "db", "10.244.2.20", &[]),
            ("us", "db", "10.244.2.21", &[]),
            ("staging", "db", "10.244.2.22", &[]),
            ("eu", "web", "10.244.2.30", &[("app", "web")]),
        ],
    );
    let (dir, _agent, mapper) = mapper_for(&api, "distinct").await;
    observe(
        &mapper,
        &[
            ("10.244.2.10", "10.244.2.20"),
            ("10.244.2.11", "10.244.2.21"),
            ("10.244.2.12", "10.244.2.22"),
            ("10.244.2.30", "10.244.2.10"),
        ],
    )
    .await;

    // Without the flag: one entry per namespace.
    let (plain, _) = run_cli(&mapper, &["list"]);
    assert_eq!(
        plain,
        "api in namespace eu calls:\n  - db\nweb in namespace eu calls:\n  - api\napi in namespace staging calls:\n  - db\napi in namespace us calls:\n  - db\n"
    );
    // With it: by name and track, eu's and us's stable api one entry.
    let (list, _) = run_cli(&mapper, &["list", "--distinct-by-label", "track"]);
    assert_eq!(
        list,
        "\
api (track=stable) in namespaces eu, us calls:
  - db
web (no track label) in namespace eu calls:
  - api
api (track=canary) in namespace staging calls:
  - db
"
    );

    // export: the canary and the stable api are two documents, named apart, labelled with
    // the value, for the same workload name.
    let (yaml, _) = run_cli(&mapper, &["export", "--distinct-by-label", "track"]);
    assert_eq!(
        yaml,
        "\
---
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
  labels:
    track: stable
  name: api-stable
  namespace: eu
spec:
  targets:
  - kubernetes:
      kind: Deployment
      name: db
  workload:
    kind: Deployment
    name: api
---
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
  name: web
  namespace: eu
spec:
  targets:
  - kubernetes:
      kind: Deployment
      name: api
  workload:
    kind: Deployment
    name: web
---
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
  labels:
    track: canary
  name: api-canary
  namespace: staging
spec:
  targets:
  - kubernetes:
      kind: Deployment
      name: db
  workload:
    kind: Deployment
    name: api
"
    );
    let (json_text, _) =
        run_cli(&mapper, &["export", "--distinct-by-label", "track", "--format", "json"]);
    let docs: Vec<serde_json::Value> = serde_json::from_str(&json_text).unwrap();
    let mut from_yaml = yaml_docs(&yaml);
    for doc in &mut from_yaml {
        doc["metadata"]["creationTimestamp"] = serde_json::Value::Null;
        doc["status"] = json!({"upToDate": false, "observedGeneration": 0});
    }
    assert_eq!(docs, from_yaml, "JSON carries the same documents");
    // One file per document with --output-type dir: names do not collide.
    let out_dir = dir.join("intents");
    run_cli(
        &mapper,
        &[
            "export",
            "--distinct-by-label",
            "track",
            "-o",
            out_dir.to_str().unwrap(),
            "--output-type",
            "dir",
        ],
    );
    let mut files: Vec<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files, ["api-canary.staging.yaml", "api-stable.eu.yaml", "web.eu.yaml"]);

    // A label no pod carries: every client is `(no KEY label)`, still one per namespace.
    let (list, _) = run_cli(&mapper, &["list", "-n", "eu", "--distinct-by-label", "tier"]);
    assert_eq!(
        list,
        "api (no tier label) in namespace eu calls:\n  - db\nweb (no tier label) in namespace eu calls:\n  - api\n"
    );

    // What cannot be a label key is refused, by the CLI and by the mapper.
    let out = Command::new(binary("intentmap"))
        .args(["--mapper-url", &mapper, "list", "--distinct-by-label", "track name"])
        .output()
        .unwrap();
    let message = failure(&out);
    assert!(message.contains("is not a label key for --distinct-by-label"), "{message}");
    let reply = reqwest::get(format!("{mapper}/v1/edges?label_values=-track")).await.unwrap();
    assert_eq!(reply.status(), 400);
    assert!(reply.text().await.unwrap().contains("is not a label key"));
    let reply =
        reqwest::get(format!("{mapper}/v1/edges?label_values={}", "a".repeat(400))).await.unwrap();
    assert_eq!(reply.status(), 400);
    // Without the new parameters the answer is the list of edges it always was.
    let reply: serde_json::Value =
        reqwest::get(format!("{mapper}/v1/edges")).await.unwrap().json().await.unwrap();
    assert_eq!(reply.as_array().map(Vec::len), Some(4));

    // Mid-rollout, staging's api has pods of two tracks: the mapper keeps calls per workload,
    // so each track is an entry with all of them, and a note says so.
    api.apply::<Pod>(
        &mk_pod("staging", "api-7c9d-d3e4f", &["10.244.2.13"])
            .owned_by("ReplicaSet", "api-7c9d")
            .labelled("track", "canary-2"),
    );
    let expected = "\
api (track=canary) in namespace staging calls:
  - db
api (track=canary-2) in namespace staging calls:
  - db
";
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let (list, notes) = loop {
        let (list, notes) =
            run_cli(&mapper, &["list", "-n", "staging", "--distinct-by-label", "track"]);
        if list == expected || std::time::Instant::now() > deadline {
            break (list, notes);
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    };
    assert_eq!(list, expected);
    assert!(
        notes.contains("api in namespace staging has pods with track=canary, track=canary-2: the mapper keeps calls per workload, not per pod"),
        "{notes}"
    );
    let (yaml, _) = run_cli(&mapper, &["export", "-n", "staging", "--distinct-by-label", "track"]);
    let names: Vec<serde_json::Value> =
        yaml_docs(&yaml).iter().map(|d| d["metadata"]["name"].clone()).collect();
    assert_eq!(names, [json!("api-canary"), json!("api-canary-2")]);
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn as_kubernetes_service_names_targets_by_the_service_in_front_of_them() {
    // shop's web calls cart through its Service `carts`, infra's redis through
    // `redis-master`, and worker's pod directly (worker has no Service).
    let api = FakeApiServer::start().await.unwrap();
    load_workloads(
        &api,
        &[
            ("shop", "web", "10.244.3.10", &[("app", "web")]),
            ("shop", "cart", "10.244.3.11", &[("app", "cart")]),
            ("shop", "worker", "10.244.3.12", &[("app", "worker")]),
            ("infra", "redis", "10.244.3.13", &[("app", "redis")]),
        ],
    );
    api.apply(&mk_service("shop", "carts", &["10.96.3.1"], &[("app", "cart")]));
    api.apply(&mk_service("infra", "redis-master", &["10.96.3.2"], &[("app", "redis")]));
    let (dir, _agent, mapper) = mapper_for(&api, "services").await;
    observe(
        &mapper,
        &[
            ("10.244.3.10", "10.96.3.1"),
            ("10.244.3.10", "10.96.3.2"),
            ("10.244.3.10", "10.244.3.12"),
        ],
    )
    .await;

    let (plain, _) = run_cli(&mapper, &["list"]);
    assert_eq!(
        plain,
        "web in namespace shop calls:\n  - cart\n  - redis in namespace infra\n  - worker\n"
    );
    let (list, notes) = run_cli(&mapper, &["list", "--as-kubernetes-service"]);
    assert_eq!(
        list,
        "web in namespace shop calls:\n  - carts\n  - redis-master in namespace infra\n  - worker\n"
    );
    assert!(
        notes.contains(
            "worker in namespace shop has no Service in front of it: its callers name the workload"
        ),
        "{notes}"
    );
    assert!(!notes.contains("cart"), "{notes}");

    let (yaml, _) = run_cli(&mapper, &["export", "--as-kubernetes-service"]);
    assert_eq!(
        yaml,
        "\
---
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
  name: web
  namespace: shop
spec:
  targets:
  - service:
      name: carts
  - service:
      name: redis-master.infra
  - kubernetes:
      kind: Deployment
      name: worker
  workload:
    kind: Deployment
    name: web
"
    );
    let (json_text, _) = run_cli(
        &mapper,
        &["export", "--as-kubernetes-service", "--output-version", "v1alpha3", "--format", "json"],
    );
    let docs: serde_json::Value = serde_json::from_str(&json_text).unwrap();
    assert_eq!(
        docs[0]["spec"]["calls"],
        json!([
            {"name": "carts", "kind": "Service"},
            {"name": "redis-master.infra", "kind": "Service"},
            {"name": "worker", "kind": "Deployment"}
        ])
    );
    // --exclude-services also takes the Services' names.
    let (list, _) =
        run_cli(&mapper, &["list", "--as-kubernetes-service", "--exclude-services", "carts"]);
    assert_eq!(
        list,
        "web in namespace shop calls:\n  - redis-master in namespace infra\n  - worker\n"
    );
    // Both flags at once, and visualize draws the Services.
    let (list, _) =
        run_cli(&mapper, &["list", "--as-kubernetes-service", "--distinct-by-label", "app"]);
    assert_eq!(
        list,
        "web (app=web) in namespace shop calls:\n  - carts\n  - redis-master in namespace infra\n  - worker\n"
    );
    let svg = dir.join("map.svg");
    run_cli(&mapper, &["visualize", "--as-kubernetes-service", "-o", svg.to_str().unwrap()]);
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.contains("redis-master") && svg.contains("carts"), "the Services are drawn");
    std::fs::remove_dir_all(&dir).ok();
}
