//! The mapper against a real Kubernetes cluster (`testkit::cluster`: etcd, the control plane,
//! containerd, the kubelet, kube-proxy and CoreDNS, built from registries): real controllers
//! make the ReplicaSets and pods, real pods get addresses on the CNI bridge and call each other
//! through a Service's name (CoreDNS) and ClusterIP (kube-proxy), and the real
//! `cluster-agent mapper` binary, watching that API server, names both ends of a connection
//! between two pod addresses by their Deployment. And the cluster-agent chart as users install
//! it: `helm install` from our own images (built without Docker), every pod Ready with only
//! what the chart grants, eBPF loaded inside the node agent's container, RBAC as documented, the
//! seeds' shop on real pods mapped exactly as the seeds' README, a chart missing one rule
//! failing visibly, and `helm uninstall` leaving nothing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use testkit::cluster::{Cluster, API_SERVICE_IP, CLUSTER_DOMAIN, NODE_NAME};
use tests::kube::{
    documented_grants, granted, helm, install_clientintents_crd, named_workloads, port_forward,
    ready_pods, shop, workspace, NAMING_NS,
};
use tests::{
    binary, pod_ips, run_ok, seeds_list, send_observations, start_mapper, until, wait_for,
    wait_for_none, SHOP_CALLS, SHOP_NAMESPACE,
};

const NS: &str = "real-cluster";

/// `intentmap list -n namespace` through `mapper`, polled (off the async threads) until `wanted`
/// takes what it prints, which it returns; after `timeout`, fails with what it printed last.
fn listed_until(
    what: &str,
    mapper: &str,
    namespace: &str,
    timeout: Duration,
    wanted: impl Fn(&str) -> bool,
) -> String {
    tokio::task::block_in_place(|| {
        wait_for(what, timeout, || {
            let out = Command::new(binary("intentmap"))
                .args(["--mapper-url", mapper, "list", "-n", namespace])
                .output()
                .map_err(|e| e.to_string())?;
            let listed = String::from_utf8_lossy(&out.stdout).into_owned();
            if wanted(&listed) {
                Ok(listed)
            } else {
                Err(format!("{listed}{}", String::from_utf8_lossy(&out.stderr)))
            }
        })
    })
}

/// Istio present (istiod's Service, selector-less) and a waypoint stand-in in the shop: a pod
/// with a waypoint's labels whose busybox httpd serves `/stats/prometheus` on port 15020, the
/// `istio_requests_total` series of frontend's GET /cart on cartservice as a waypoint's Envoy
/// writes it, its count rising by two every second.
fn waypoint_stand_in(image: &str) -> String {
    let ns = SHOP_NAMESPACE;
    let series = format!(
        "istio_requests_total{{reporter=\"waypoint\",source_workload=\"frontend\",\
         source_workload_namespace=\"{ns}\",source_principal=\"spiffe://cluster.local/ns/{ns}/sa/frontend\",\
         destination_workload=\"cartservice\",destination_workload_namespace=\"{ns}\",\
         destination_principal=\"spiffe://cluster.local/ns/{ns}/sa/cartservice\",\
         destination_service=\"cartservice.{ns}.svc.cluster.local\",destination_service_name=\"cartservice\",\
         destination_service_namespace=\"{ns}\",request_protocol=\"http\",response_code=\"200\",\
         response_flags=\"-\",connection_security_policy=\"mutual_tls\",request_method=\"GET\",\
         request_path=\"/cart\"}} COUNT"
    );
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata: {{name: istio-system}}
---
apiVersion: v1
kind: Service
metadata: {{name: istiod, namespace: istio-system}}
spec:
  ports: [{{port: 15012}}]
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: waypoint-series, namespace: {ns}}}
data:
  series: |
    # TYPE envoy_server_uptime gauge
    envoy_server_uptime 3600
    # TYPE istio_requests_total counter
    {series}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: waypoint, namespace: {ns}}}
spec:
  replicas: 1
  selector:
    matchLabels: {{istio.io/gateway-name: waypoint}}
  template:
    metadata:
      labels: {{istio.io/gateway-name: waypoint, gateway.istio.io/managed: istio.io-mesh-controller}}
    spec:
      terminationGracePeriodSeconds: 1
      volumes: [{{name: series, configMap: {{name: waypoint-series}}}}]
      containers:
      - name: main
        image: {image}
        imagePullPolicy: Never
        volumeMounts: [{{name: series, mountPath: /series}}]
        command:
        - /bin/sh
        - -c
        - |
          mkdir -p /www/stats
          n=0
          while true; do
            n=$((n + 2))
            sed "s/COUNT/$n/" /series/series > /www/stats/next && mv /www/stats/next /www/stats/prometheus
            sleep 1
          done &
          exec httpd -f -p 15020 -h /www
        ports: [{{containerPort: 15020}}]
"#
    )
}

/// A server Deployment of two replicas behind a Service, and a client that calls it by name
/// every second, both running the traffic image (busybox) built by scripts/k8s/build.sh. The
/// server answers with its pod's name. (busybox's `wget -q` crashes in this static build, so the
/// client speaks HTTP through `nc`.)
fn workloads(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Namespace
metadata:
  name: {NS}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: server
  namespace: {NS}
spec:
  replicas: 2
  selector:
    matchLabels: {{app: server}}
  template:
    metadata:
      labels: {{app: server}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: server
        image: {image}
        imagePullPolicy: Never
        command: [/bin/sh, -c, 'mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 8080 -h /www']
        ports: [{{containerPort: 8080}}]
        readinessProbe:
          tcpSocket: {{port: 8080}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: server
  namespace: {NS}
spec:
  selector: {{app: server}}
  ports: [{{port: 8080, targetPort: 8080}}]
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: client
  namespace: {NS}
spec:
  replicas: 1
  selector:
    matchLabels: {{app: client}}
  template:
    metadata:
      labels: {{app: client}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: client
        image: {image}
        imagePullPolicy: Never
        command: [/bin/sh, -c, 'while true; do echo "reply: $(printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 server 8080 | tail -n 1)"; sleep 1; done']
"#
    )
}

fn intentmap(mapper: &str, args: &[&str]) -> String {
    let out = run_ok(Command::new(binary("intentmap")).args(args).args(["--mapper-url", mapper]));
    String::from_utf8(out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    unprivileged,
    ignore = "needs root: a real Kubernetes cluster (network links, mounts, cgroups, iptables)"
)]
async fn the_mapper_names_real_pods_by_their_deployment_and_pods_resolve_services_through_coredns()
{
    testkit::need::root("a real Kubernetes cluster");
    let cluster = testkit::cluster::shared()
        .await
        .unwrap_or_else(|e| panic!("the test cluster did not start: {e:#}"));
    let image = cluster.versions().traffic_image.clone();
    cluster.apply(&workloads(&image)).unwrap();

    let servers = tokio::task::block_in_place(|| pod_ips(cluster, NS, "server", 2));
    let clients = tokio::task::block_in_place(|| pod_ips(cluster, NS, "client", 1));
    let family = |ips: &[String], v6: bool| -> Vec<String> {
        ips.iter().filter(|ip| ip.contains(':') == v6).cloned().collect()
    };
    assert_eq!(
        (family(&servers, false).len(), family(&servers, true).len()),
        (2, 2),
        "each pod has an IPv4 and an IPv6 address: {servers:?}"
    );
    let client_pod = cluster
        .kubectl(&[
            "-n",
            NS,
            "get",
            "pods",
            "-l",
            "app=client",
            "-o",
            "jsonpath={.items[0].metadata.name}",
        ])
        .unwrap();

    // Real traffic: the client reaches a server through the Service's name (CoreDNS) and its
    // ClusterIP (kube-proxy's rules), across the CNI bridge.
    tokio::task::block_in_place(|| {
        wait_for(
            "the client to get an answer from a server through the Service",
            Duration::from_secs(60),
            || {
                let logs = cluster
                    .kubectl(&["-n", NS, "logs", &client_pod, "--tail=5"])
                    .map_err(|e| e.to_string())?;
                if logs.lines().any(|line| line.starts_with("reply: server-")) {
                    Ok(logs)
                } else {
                    Err(format!("the client's log:\n{logs}"))
                }
            },
        )
    });
    // The API server's Service, resolved through CoreDNS from inside a pod.
    let answer = cluster
        .kubectl(&[
            "-n",
            NS,
            "exec",
            &client_pod,
            "--",
            "nslookup",
            &format!("kubernetes.default.svc.{CLUSTER_DOMAIN}"),
        ])
        .unwrap();
    assert!(
        answer.contains(API_SERVICE_IP),
        "CoreDNS should answer the kubernetes Service's ClusterIP {API_SERVICE_IP}:\n{answer}"
    );

    // The real mapper, watching the real API server with the admin kubeconfig.
    let dir =
        std::env::temp_dir().join(format!("e2e-real-cluster-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (_mapper, mapper) = start_mapper(&dir, cluster.kubeconfig()).await;
    assert_eq!(intentmap(&mapper, &["list"]), "No connections found.\n");
    let now = chrono::Utc::now().to_rfc3339();
    // The client's connections to each server pod, over IPv4 and over IPv6.
    let tcp: Vec<_> = [false, true]
        .into_iter()
        .flat_map(|v6| {
            let (client, now) = (family(&clients, v6).remove(0), now.clone());
            family(&servers, v6)
                .into_iter()
                .map(move |server| json!({"src_ip": client, "src_port": 40000, "dst_ip": server, "dst_port": 8080, "at": now, "count": 1}))
        })
        .collect();
    send_observations(&mapper, &json!({"source": NODE_NAME, "tcp": tcp})).await;
    assert_eq!(
        intentmap(&mapper, &["list"]),
        format!("client in namespace {NS} calls:\n  - server\n"),
        "both ends are named by their Deployment, not the pod"
    );
    // A call to the API server's Service is named as the `kubernetes` Service in `default`.
    send_observations(&mapper, &json!({"source": NODE_NAME, "tcp": [{"src_ip": family(&clients, false)[0], "src_port": 40001, "dst_ip": API_SERVICE_IP, "dst_port": 443, "at": now, "count": 1}]})).await;
    let listed = intentmap(&mapper, &["list"]);
    assert!(
        listed.contains("  - kubernetes in namespace default\n") && listed.contains("  - server\n"),
        "the client calls the API server's Service and the server:\n{listed}"
    );

    cluster.kubectl(&["delete", "namespace", NS, "--wait=false"]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

/// The address of the client outside the cluster (on a bridge of its own on the node).
const OUTSIDE_CLIENT: &str = "10.215.0.2";

const RELEASE: &str = "intentmap";
const AGENT_NS: &str = "intentmap-system";

/// `kubectl auth can-i <verb> <resource>` as a ServiceAccount of the release.
fn can_i(cluster: &Cluster, account: &str, verb: &str, resource: &str) -> bool {
    let user = format!("system:serviceaccount:{AGENT_NS}:{account}");
    // `no` is exit status 1; anything else that fails is the test's problem.
    match cluster.kubectl(&["auth", "can-i", verb, resource, "--all-namespaces", "--as", &user]) {
        Ok(answer) => answer.trim() == "yes",
        Err(e) if format!("{e:#}").contains("(exit status: 1)") => false,
        Err(e) => panic!("kubectl auth can-i: {e:#}"),
    }
}

/// The cluster-agent chart as users install it: `helm install` from our own images (built
/// without Docker by scripts/images.sh and imported into the node's containerd), every pod Ready
/// with what the chart grants (RBAC, capabilities); the seeds' shop on real pods, captured by the
/// node agent's eBPF programs and listed exactly as the seeds' README; `helm uninstall` leaving
/// nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    unprivileged,
    ignore = "needs root: a real Kubernetes cluster (network links, mounts, cgroups, iptables)"
)]
async fn helm_installs_the_agent_from_our_images_and_it_maps_the_seeds_shop_on_real_pods() {
    testkit::need::root("a real Kubernetes cluster");
    let root = workspace();
    // The test script has built the debug binaries; users get release builds by default.
    run_ok(Command::new("bash").arg(root.join("scripts/images.sh")).args([
        "--profile",
        "debug",
        "cluster-agent",
    ]));
    let cluster = testkit::cluster::shared()
        .await
        .unwrap_or_else(|e| panic!("the test cluster did not start: {e:#}"));
    cluster.import_image(&root.join("target/images/cluster-agent.tar")).unwrap();
    let home = testkit::process::TempDir::new("e2e-helm");

    let chart = root.join("charts/cluster-agent");
    let chart = chart.to_str().unwrap();
    tokio::task::block_in_place(|| {
        helm(
            cluster,
            home.path(),
            &[
                "install",
                RELEASE,
                chart,
                "--namespace",
                AGENT_NS,
                "--create-namespace",
                "--set",
                "clusterName=real",
                "--set",
                "logFormat=text",
                "--wait",
                "--timeout",
                "5m",
            ],
        )
    });
    let pods = ready_pods(cluster, AGENT_NS, "", 2, Duration::from_secs(120));

    // The node agent's own word on its capture (through the API server's pod proxy).
    let node_pod = pods
        .lines()
        .find(|l| l.starts_with(&format!("{RELEASE}-node-")))
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let health = cluster
        .kubectl(&[
            "get",
            "--raw",
            &format!("/api/v1/namespaces/{AGENT_NS}/pods/{node_pod}:9091/proxy/healthz"),
        ])
        .unwrap();
    let health: serde_json::Value = serde_json::from_str(&health).unwrap();
    assert_eq!(
        health["mode"], "ebpf",
        "the node agent loads eBPF with only the chart's capabilities: {health}"
    );

    // What each ServiceAccount really holds.
    let mapper = format!("{RELEASE}-mapper");
    let node = format!("{RELEASE}-node");
    for resource in [
        "pods",
        "services",
        "endpointslices.discovery.k8s.io",
        "replicasets.apps",
        "deployments.apps",
        "namespaces",
        "nodes",
    ] {
        assert!(can_i(cluster, &mapper, "watch", resource), "the mapper watches {resource}");
    }
    assert!(can_i(cluster, &mapper, "create", "tokenreviews.authentication.k8s.io"));
    for (verb, resource) in [
        ("get", "secrets"),
        ("list", "secrets"),
        ("create", "pods"),
        ("delete", "pods"),
        ("update", "deployments.apps"),
    ] {
        assert!(!can_i(cluster, &mapper, verb, resource), "the mapper must not {verb} {resource}");
    }
    for (verb, resource) in
        [("list", "pods"), ("get", "secrets"), ("create", "tokenreviews.authentication.k8s.io")]
    {
        assert!(
            !can_i(cluster, &node, verb, resource),
            "the node agent must not {verb} {resource}"
        );
    }

    // And nothing more: `kubectl auth can-i --list` of each, beyond what every ServiceAccount
    // may, is the table in charts/cluster-agent/RBAC.md.
    for component in ["mapper", "node"] {
        assert_eq!(
            granted(cluster, AGENT_NS, &format!("{RELEASE}-{component}")),
            documented_grants(RELEASE, component),
            "kubectl auth can-i --list for {RELEASE}-{component} (left) against RBAC.md (right)"
        );
    }

    // The seeds' shop on real pods, captured by the node agent's eBPF programs in its pod and
    // named by the mapper in its pod: `intentmap list`, through `kubectl port-forward` as the
    // chart's NOTES say, prints exactly the seeds' README.
    cluster.apply(&shop(&cluster.versions().traffic_image)).unwrap();
    cluster.apply(&named_workloads(&cluster.versions().traffic_image)).unwrap();
    // The mapper as people reach it: `kubectl port-forward` to its Service, once its
    // Deployment has exactly one pod, Ready (no old one still terminating).
    let forward = || {
        ready_pods(
            cluster,
            AGENT_NS,
            "app.kubernetes.io/component=mapper",
            1,
            Duration::from_secs(120),
        );
        port_forward(cluster, AGENT_NS, &format!("{RELEASE}-mapper"), 9090)
    };
    let expected = seeds_list();
    let seeds_listed = |mapper_url: &str, what: &str| -> String {
        let timeout = Duration::from_secs(240);
        listed_until(what, mapper_url, SHOP_NAMESPACE, timeout, |listed| listed == expected)
    };
    let (forwarding, mut mapper_url) = forward();
    let mut _forwarding = forwarding;
    assert_eq!(seeds_listed(&mapper_url, "the shop's calls in intentmap list"), expected);
    // With only a kubeconfig (no --mapper-url), intentmap finds the chart's mapper Service and
    // port-forwards to its pod through the API server by itself.
    let by_kubeconfig = |namespace: Option<&str>| {
        let mut command = Command::new(binary("intentmap"));
        command
            .args(["list", "-n", SHOP_NAMESPACE])
            .env("KUBECONFIG", cluster.kubeconfig())
            .env_remove("INTENTMAP_MAPPER_URL");
        if let Some(namespace) = namespace {
            command.env("INTENTMAP_MAPPER_NAMESPACE", namespace);
        }
        tokio::task::block_in_place(|| command.output().unwrap())
    };
    // The AWS test of this binary installs a second release for a while (its own mapper
    // Service); while both exist, intentmap rightly asks which one: wait until ours is the only
    // one (that test uninstalls its release at its end).
    let found = tokio::task::block_in_place(|| {
        wait_for("intentmap list with only a kubeconfig", Duration::from_secs(300), || {
            let found = by_kubeconfig(None);
            let (listed, said) = (
                String::from_utf8_lossy(&found.stdout).into_owned(),
                String::from_utf8_lossy(&found.stderr).into_owned(),
            );
            match listed == expected {
                true => Ok(listed),
                false if said.contains("2 mapper Services") => Err(said),
                false => panic!("intentmap list with only a kubeconfig: {listed}{said}"),
            }
        })
    });
    assert_eq!(found, expected);
    let missing = tokio::task::block_in_place(|| by_kubeconfig(Some("default")));
    let said = String::from_utf8_lossy(&missing.stderr);
    assert!(!missing.status.success() && said.contains("helm install"), "{said}");
    // Named by the annotation, the label, the CronJob and the hostNetwork DaemonSet (as a
    // client, and as the server on its node's address), never by pod, ReplicaSet or node.
    let named = format!(
        "billing in namespace {NAMING_NS} calls:\n  - frontend in namespace {SHOP_NAMESPACE}\n\
         host-agent in namespace {NAMING_NS} calls:\n  - frontend in namespace {SHOP_NAMESPACE}\n\
         invoices in namespace {NAMING_NS} calls:\n  - frontend in namespace {SHOP_NAMESPACE}\n\
         nightly-report in namespace {NAMING_NS} calls:\n  - frontend in namespace {SHOP_NAMESPACE}\n\
         node-scraper in namespace {NAMING_NS} calls:\n  - host-agent\n"
    );
    let what = "the named workloads in intentmap list";
    listed_until(what, &mapper_url, NAMING_NS, Duration::from_secs(150), |l| l == named);

    // A rolling update: new ReplicaSets, new pods, new addresses. With the map reset, the new
    // pods' calls are named by their Deployments again.
    run_ok(Command::new(binary("intentmap")).args(["--mapper-url", &mapper_url, "reset"]));
    let rolled = ["deployment/cartservice", "deployment/frontend"];
    cluster
        .kubectl(&[&["-n", SHOP_NAMESPACE, "rollout", "restart"][..], &rolled].concat())
        .unwrap();
    for deployment in rolled {
        cluster
            .kubectl(&["-n", SHOP_NAMESPACE, "rollout", "status", deployment, "--timeout=180s"])
            .unwrap();
    }
    assert_eq!(seeds_listed(&mapper_url, "the shop after a rolling update"), expected);

    // `helm upgrade` with a changed setting replaces the mapper pod; the new one maps the shop
    // again from the traffic that goes on.
    tokio::task::block_in_place(|| {
        helm(
            cluster,
            home.path(),
            &["upgrade", RELEASE, chart, "--namespace", AGENT_NS, "--reuse-values"]
                .into_iter()
                .chain(["--set", "mapper.edgeTTLSeconds=86400", "--wait", "--timeout", "5m"])
                .collect::<Vec<_>>(),
        )
    });
    drop(_forwarding);
    (_forwarding, mapper_url) = forward();
    assert_eq!(seeds_listed(&mapper_url, "the shop after helm upgrade"), expected);

    // Traffic volume (issue 18 item 11): the node agent's eBPF programs count the bytes of each
    // connection as it closes. Every shop call is a short HTTP GET answered with the server
    // pod's name, then closed: bytes both ways on every edge, the request at least 18 bytes
    // and each answer more than a status line.
    let mapper_edges = format!("{mapper_url}/v1/edges");
    let measured = until("bytes on cartservice → redis-cart", Duration::from_secs(90), || {
        let url = mapper_edges.clone();
        async move {
            let edges: serde_json::Value =
                reqwest::get(&url).await.ok()?.error_for_status().ok()?.json().await.ok()?;
            edges.as_array()?.iter().find_map(|e| {
                let to_redis = e["client"]["name"] == "cartservice"
                    && e["target"]["kubernetes"]["name"] == "redis-cart";
                (to_redis && e["bytes"]["received"].as_u64()? > 0).then(|| e.clone())
            })
        }
    })
    .await;
    let connections = measured["connections"].as_u64().unwrap();
    let (sent, received) = (
        measured["bytes"]["sent"].as_u64().unwrap(),
        measured["bytes"]["received"].as_u64().unwrap(),
    );
    assert!(sent >= 18 && received > sent, "{measured}");
    assert!(sent <= 64 * (connections + 2), "one short request a connection: {measured}");

    // The ClientIntents the mapper exports, accepted by the API server's own validation of the
    // published CRD: v1alpha3 checked by a server-side dry run, then v2beta1 applied server-side
    // (and a second apply changes nothing). Without the operator's conversion webhook the two
    // versions cannot be merged into one stored object, so v1alpha3 is checked before any exists.
    install_clientintents_crd(cluster);
    let export = |version: &str| -> PathBuf {
        let file = home.path().join(format!("intents-{version}.yaml"));
        run_ok(
            Command::new(binary("intentmap")).args(["--mapper-url", &mapper_url, "export"]).args([
                "-n",
                SHOP_NAMESPACE,
                "--output-version",
                version,
                "-o",
                file.to_str().unwrap(),
            ]),
        );
        file
    };
    let v2 = export("v2beta1");
    let apply = |file: &Path, extra: &[&str]| {
        let mut args = vec!["apply", "--server-side", "--field-manager=intentmap", "-f"];
        args.push(file.to_str().unwrap());
        args.extend_from_slice(extra);
        cluster
            .kubectl(&args)
            .unwrap_or_else(|e| panic!("the API server refused {}: {e:#}", file.display()))
    };
    // Otterize's CLI flags on real pods (issue 18 item 13). `--distinct-by-label app`: every
    // client told apart by its pods' `app` label, the calls as before.
    let by_label = run_ok(Command::new(binary("intentmap")).args([
        "--mapper-url",
        &mapper_url,
        "list",
        "-n",
        SHOP_NAMESPACE,
        "--distinct-by-label",
        "app",
    ]));
    let labelled: String = expected
        .lines()
        .map(|line| match line.split_once(" in namespace ") {
            Some((client, rest)) if !line.starts_with(' ') => {
                format!("{client} (app={client}) in namespace {rest}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert_eq!(String::from_utf8_lossy(&by_label.stdout), labelled);
    // `--as-kubernetes-service`: every shop workload has a Service of its name in front of it,
    // so every target is that Service, in the form the API server's CRD accepts for both
    // versions (dry runs, while no ClientIntents exists).
    let as_service = |version: &str| -> PathBuf {
        let file = home.path().join(format!("intents-services-{version}.yaml"));
        run_ok(Command::new(binary("intentmap")).args(["--mapper-url", &mapper_url]).args([
            "export",
            "-n",
            SHOP_NAMESPACE,
            "--as-kubernetes-service",
            "--output-version",
            version,
            "-o",
            file.to_str().unwrap(),
        ]));
        file
    };
    let services_v2 = std::fs::read_to_string(as_service("v2beta1")).unwrap();
    let calls: usize = SHOP_CALLS.iter().map(|(_, targets)| targets.len()).sum();
    assert_eq!(services_v2.matches("  - service:\n").count(), calls, "{services_v2}");
    assert!(!services_v2.contains("  - kubernetes:"), "{services_v2}");
    apply(&as_service("v2beta1"), &["--dry-run=server"]);
    let services_v1 = as_service("v1alpha3");
    assert!(std::fs::read_to_string(&services_v1).unwrap().contains("kind: Service"));
    apply(&services_v1, &["--dry-run=server"]);

    // First, while no object exists: a dry run creates against the v1alpha3 schema.
    apply(&export("v1alpha3"), &["--dry-run=server"]);
    apply(&v2, &[]);
    let versions = || {
        cluster
            .kubectl(&[
                "-n",
                SHOP_NAMESPACE,
                "get",
                "clientintents.v2beta1.k8s.otterize.com",
                "-o",
                "jsonpath={range .items[*]}{.metadata.name}={.metadata.resourceVersion} {end}",
            ])
            .unwrap()
    };
    let stored = versions();
    assert_eq!(
        stored.split_whitespace().count(),
        SHOP_CALLS.len(),
        "one ClientIntents per calling workload: {stored}"
    );
    apply(&v2, &[]);
    assert_eq!(versions(), stored, "applying the same export again is a no-op");

    // Incoming internet traffic: a client outside the cluster (a network namespace on a bridge of
    // its own, routed through the node) connects straight to the frontend pod's address. The
    // node agent sees the pod accept it, and `list` shows it on the frontend, not as a client.
    let frontend = tokio::task::block_in_place(|| pod_ips(cluster, SHOP_NAMESPACE, "frontend", 1))
        .into_iter()
        .find(|ip| !ip.contains(':'))
        .expect("the frontend pod's IPv4 address");
    let mut outside = testkit::netns::Bridge::new("e2eout").unwrap();
    let outside_ns = outside.add_pod(&format!("{OUTSIDE_CLIENT}/24")).unwrap();
    testkit::netns::ip(&["addr", "add", "10.215.0.1/24", "dev", "e2eout-br"]);
    testkit::netns::ip(&["-n", &outside_ns, "route", "add", "default", "via", "10.215.0.1"]);
    let _outside_client = tests::spawn(
        Command::new("ip")
            .args(["netns", "exec", &outside_ns, "python3", "-c"])
            .arg("import socket,sys,time\nfor _ in range(30):\n  socket.create_connection((sys.argv[1], 8080), timeout=5); time.sleep(2)")
            .arg(&frontend),
    );
    let incoming = format!(
        "frontend in namespace {SHOP_NAMESPACE} is called from outside the cluster by:\n  - {OUTSIDE_CLIENT} (ports: 8080)\n"
    );
    let what = "the outside client in intentmap list";
    listed_until(what, &mapper_url, SHOP_NAMESPACE, Duration::from_secs(90), |listed| {
        listed.ends_with(&incoming) && listed.starts_with(&expected)
    });
    drop(_outside_client);
    drop(outside);

    // Istio's ambient mode (issue 18 item 12) with the chart's opt-in. ztunnel and waypoints
    // cannot be had on this machine (ztunnel is on no registry it reaches), so a waypoint stand-in
    // — a pod with a waypoint's labels serving, on its own address and port 15020, the counter
    // text a waypoint's Envoy serves, its count rising every second — says frontend GETs /cart
    // on cartservice. The real mapper finds it through the real API server, scrapes it over the
    // pod network, and believes it because the node agent saw frontend connect to cartservice:
    // `list` shows the path on that call and nothing else changes.
    cluster
        .kubectl(&["label", "namespace", SHOP_NAMESPACE, "istio.io/dataplane-mode=ambient"])
        .unwrap();
    cluster.apply(&waypoint_stand_in(&cluster.versions().traffic_image)).unwrap();
    tokio::task::block_in_place(|| {
        ready_pods(
            cluster,
            SHOP_NAMESPACE,
            "istio.io/gateway-name=waypoint",
            1,
            Duration::from_secs(120),
        );
        helm(
            cluster,
            home.path(),
            &["upgrade", RELEASE, chart, "--namespace", AGENT_NS, "--reuse-values"]
                .into_iter()
                .chain(["--set", "istio.enabled=true", "--set", "istio.scrapeIntervalSeconds=2"])
                .chain(["--wait", "--timeout", "5m"])
                .collect::<Vec<_>>(),
        )
    });
    drop(_forwarding);
    (_forwarding, mapper_url) = forward();
    let with_path = expected.replace(
        "  - cartservice\n  - checkoutservice\n",
        "  - cartservice\n    - path /cart, methods: [GET]\n  - checkoutservice\n",
    );
    assert_ne!(with_path, expected, "frontend calls cartservice, then checkoutservice");
    let what = "the waypoint's path in intentmap list";
    listed_until(what, &mapper_url, SHOP_NAMESPACE, Duration::from_secs(120), |l| l == with_path);

    // Node agents authenticate with projected tokens the real API server reviews (TokenReview,
    // audiences, bound pods). Sent straight to the mapper pod's address from the node.
    let mapper_ip = cluster
        .kubectl(&[
            "-n",
            AGENT_NS,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=mapper",
            "-o",
            "jsonpath={.items[0].status.podIP}",
        ])
        .unwrap();
    let curl = testkit::need::command("curl", "curl");
    let send = |token: &str| -> u16 {
        let out = Command::new(&curl)
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["-H", "content-type: application/json", "-d", r#"{"tcp": []}"#])
            .args(["-H", &format!("authorization: Bearer {}", token.trim())])
            .arg(format!("http://{mapper_ip}:9090/v1/observations"))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
    };
    let token = |account: &str, extra: &[&str]| -> String {
        let mut args = vec!["-n", AGENT_NS, "create", "token", account];
        args.extend_from_slice(extra);
        cluster.kubectl(&args).unwrap()
    };
    let node_sa = format!("{RELEASE}-node");
    assert_eq!(
        send(&token("default", &["--audience", "intentmap-mapper"])),
        403,
        "another ServiceAccount's token, made for the mapper, may not send observations"
    );
    assert_eq!(
        send(&token(&node_sa, &[])),
        401,
        "the node agent's token for the API server's audience is no token for the mapper"
    );
    assert_eq!(
        send(&token(&node_sa, &["--audience", "intentmap-mapper"])),
        403,
        "a node agent token bound to no pod names no node"
    );
    // Bound to a pod of this node: accepted while the pod lives, refused once it is gone (a
    // TokenRequest lasts at least ten minutes, so a deleted pod stands in for expiry).
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: token-holder\n  namespace: {AGENT_NS}\n\
             spec:\n  serviceAccountName: {RELEASE}-node\n  automountServiceAccountToken: false\n  \
             terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    \
             image: {}\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n",
            cluster.versions().traffic_image
        ))
        .unwrap();
    let uid = tokio::task::block_in_place(|| {
        wait_for("the token-holder pod on the node", Duration::from_secs(60), || {
            let out = cluster
                .kubectl(&[
                    "-n",
                    AGENT_NS,
                    "get",
                    "pod",
                    "token-holder",
                    "-o",
                    "jsonpath={.metadata.uid} {.spec.nodeName}",
                ])
                .map_err(|e| e.to_string())?;
            match out.split_once(' ') {
                Some((uid, node)) if !node.is_empty() => Ok(uid.to_owned()),
                _ => Err(out),
            }
        })
    });
    let bound = token(
        &node_sa,
        &[
            "--audience",
            "intentmap-mapper",
            "--bound-object-kind",
            "Pod",
            "--bound-object-name",
            "token-holder",
            "--bound-object-uid",
            &uid,
        ],
    );
    assert_eq!(send(&bound), 202, "a node agent token bound to a pod of this node is accepted");
    cluster.kubectl(&["-n", AGENT_NS, "delete", "pod", "token-holder", "--wait=true"]).unwrap();
    tokio::task::block_in_place(|| {
        wait_for("the mapper to refuse the token of a deleted pod", Duration::from_secs(90), || {
            match send(&bound) {
                401 => Ok(String::new()),
                other => Err(format!("status {other}")),
            }
        })
    });
    cluster.kubectl(&["delete", "namespace", SHOP_NAMESPACE, "--wait=false"]).unwrap();
    cluster.kubectl(&["delete", "namespace", NAMING_NS, "--wait=false"]).unwrap();

    tokio::task::block_in_place(|| {
        helm(
            cluster,
            home.path(),
            &["uninstall", RELEASE, "--namespace", AGENT_NS, "--wait", "--timeout", "3m"],
        )
    });
    // The pods go when their controllers' garbage collection and grace period say.
    wait_for_none(
        cluster,
        "helm uninstall to leave nothing of the release in its namespace",
        &[
            "-n",
            AGENT_NS,
            "get",
            "all,serviceaccounts,roles,rolebindings,secrets,configmaps,networkpolicies",
            "-l",
            "app.kubernetes.io/instance=intentmap",
            "-o",
            "name",
        ],
    );
    let cluster_wide = cluster
        .kubectl(&[
            "get",
            "clusterroles,clusterrolebindings,mutatingwebhookconfigurations",
            "-l",
            "app.kubernetes.io/instance=intentmap",
            "-o",
            "name",
        ])
        .unwrap();
    assert_eq!(cluster_wide.trim(), "", "nor cluster-wide");
    cluster.kubectl(&["delete", "namespace", AGENT_NS, "--wait=false"]).unwrap();

    // The checks above can fail: a copy of the chart whose ClusterRole lacks one rule (the
    // EndpointSlices watch) gives a mapper that the API server refuses and that never says ready.
    let broken = home.path().join("cluster-agent");
    run_ok(Command::new("cp").arg("-r").arg(chart).arg(&broken));
    let rbac = broken.join("templates/mapper-rbac.yaml");
    let rule = "  - apiGroups: [discovery.k8s.io]\n    resources: [endpointslices]\n    verbs: [list, watch]\n";
    let text = std::fs::read_to_string(&rbac).unwrap();
    assert!(text.contains(rule), "the chart's mapper ClusterRole has the EndpointSlices rule");
    std::fs::write(&rbac, text.replace(rule, "")).unwrap();
    let broken_ns = "intentmap-broken";
    tokio::task::block_in_place(|| {
        helm(
            cluster,
            home.path(),
            &["install", "broken", broken.to_str().unwrap(), "--namespace", broken_ns]
                .into_iter()
                .chain([
                    "--create-namespace",
                    "--set",
                    "node.ebpf=false",
                    "--set",
                    "logFormat=text",
                ])
                .collect::<Vec<_>>(),
        )
    });
    let refused = tokio::task::block_in_place(|| {
        wait_for(
            "the mapper to be refused its EndpointSlices watch",
            Duration::from_secs(120),
            || {
                let logs = cluster
                    .kubectl(&["-n", broken_ns, "logs", "deployment/broken-mapper", "--tail=50"])
                    .map_err(|e| e.to_string())?;
                if logs.contains("watch failed")
                    && logs.contains("endpointslices")
                    && logs.contains("forbidden")
                {
                    Ok(logs)
                } else {
                    Err(logs)
                }
            },
        )
    });
    let ready = cluster
        .kubectl(&[
            "-n",
            broken_ns,
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/component=mapper",
            "-o",
            "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .unwrap();
    assert_eq!(ready.trim(), "False", "a mapper missing a watch is not ready:\n{refused}");
    tokio::task::block_in_place(|| {
        helm(cluster, home.path(), &["uninstall", "broken", "--namespace", broken_ns, "--wait"])
    });
    cluster.kubectl(&["delete", "namespace", broken_ns, "--wait=false"]).unwrap();
}

/// AWS visibility as users switch it on: the chart's MutatingWebhookConfiguration, called by the
/// real API server over TLS with the CA bundle aws-proxy wrote into it. A labelled pod in an
/// opted-in namespace comes back patched (CA bundle, AWS_CA_BUNDLE, DNS through aws-proxy); an
/// unlabelled one untouched; with aws-proxy down, pods are still created (failurePolicy Ignore).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    unprivileged,
    ignore = "needs root: a real Kubernetes cluster (network links, mounts, cgroups, iptables)"
)]
async fn the_api_server_calls_the_aws_visibility_webhook_and_pods_come_back_patched() {
    testkit::need::root("a real Kubernetes cluster");
    const NS: &str = "intentmap-aws";
    const APPS: &str = "aws-apps";
    // In the lower band of the Service range, which the API server hands out dynamically only
    // when the rest is full: the Services of the tests running beside this one cannot take it.
    const DNS_IP: &str = "10.213.16.12";
    let root = workspace();
    run_ok(Command::new("bash").arg(root.join("scripts/images.sh")).args([
        "--profile",
        "debug",
        "cluster-agent",
        "aws-proxy",
    ]));
    let cluster = testkit::cluster::shared()
        .await
        .unwrap_or_else(|e| panic!("the test cluster did not start: {e:#}"));
    for image in ["cluster-agent", "aws-proxy"] {
        cluster.import_image(&root.join(format!("target/images/{image}.tar"))).unwrap();
    }
    cluster
        .apply(&format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {APPS}\n"))
        .unwrap();
    let home = testkit::process::TempDir::new("e2e-helm-aws");
    let chart = root.join("charts/cluster-agent");
    tokio::task::block_in_place(|| {
        helm(
            cluster,
            home.path(),
            &[
                "install",
                "awsvis",
                chart.to_str().unwrap(),
                "--namespace",
                NS,
                "--create-namespace",
            ]
            .into_iter()
            .chain(["--set", "aws.visibility.enabled=true"])
            .chain(["--set", &format!("aws.visibility.namespaces={{{APPS}}}")])
            .chain(["--set", &format!("aws.dnsClusterIP={DNS_IP}")])
            .chain(["--set", "node.ebpf=false", "--wait", "--timeout", "5m"])
            .collect::<Vec<_>>(),
        )
    });
    assert_eq!(
        granted(cluster, NS, "awsvis-aws-proxy"),
        documented_grants("awsvis", "aws-proxy"),
        "kubectl auth can-i --list for awsvis-aws-proxy (left) against RBAC.md (right)"
    );
    // aws-proxy writes the webhook's caBundle once it runs.
    tokio::task::block_in_place(|| {
        wait_for("aws-proxy to write the webhook's CA bundle", Duration::from_secs(60), || {
            let bundle = cluster
                .kubectl(&[
                    "get",
                    "mutatingwebhookconfiguration",
                    "awsvis-aws-visibility",
                    "-o",
                    "jsonpath={.webhooks[0].clientConfig.caBundle}",
                ])
                .map_err(|e| e.to_string())?;
            if bundle.trim().is_empty() {
                Err("no caBundle yet".into())
            } else {
                Ok(bundle)
            }
        })
    });
    let pod = |name: &str, labelled: bool| {
        let labels =
            if labelled { "\n  labels: {intentmap.dev/aws-visibility: \"true\"}" } else { "" };
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {APPS}{labels}\n\
             spec:\n  terminationGracePeriodSeconds: 0\n  containers:\n  - name: main\n    \
             image: {}\n    imagePullPolicy: Never\n    command: [sleep, '3600']\n",
            cluster.versions().traffic_image
        )
    };
    let read = |name: &str| -> serde_json::Value {
        serde_json::from_str(
            &cluster.kubectl(&["-n", APPS, "get", "pod", name, "-o", "json"]).unwrap(),
        )
        .unwrap()
    };
    let env_names = |pod: &serde_json::Value| -> Vec<String> {
        pod["spec"]["containers"][0]["env"]
            .as_array()
            .map(|env| env.iter().filter_map(|e| e["name"].as_str().map(str::to_owned)).collect())
            .unwrap_or_default()
    };
    // The webhook's certificate may take a moment to be trusted: retry the labelled create.
    let patched = tokio::task::block_in_place(|| {
        wait_for("a labelled pod to come back patched", Duration::from_secs(60), || {
            let _ = cluster.kubectl(&["-n", APPS, "delete", "pod", "patched", "--wait=true"]);
            cluster.apply(&pod("patched", true)).map_err(|e| e.to_string())?;
            let got = read("patched");
            if env_names(&got).iter().any(|n| n == "AWS_CA_BUNDLE") {
                Ok(got.to_string())
            } else {
                Err(got.to_string())
            }
        })
    });
    let patched: serde_json::Value = serde_json::from_str(&patched).unwrap();
    assert_eq!(
        patched["spec"]["dnsConfig"]["nameservers"][0], DNS_IP,
        "the patched pod resolves through aws-proxy: {patched}"
    );
    assert!(
        patched["spec"]["volumes"].as_array().is_some_and(|v| !v.is_empty()),
        "the CA bundle is mounted: {patched}"
    );
    cluster.apply(&pod("plain", false)).unwrap();
    let plain = read("plain");
    assert!(!env_names(&plain).iter().any(|n| n == "AWS_CA_BUNDLE"), "untouched: {plain}");
    assert!(plain["spec"]["dnsConfig"].is_null(), "untouched: {plain}");

    // aws-proxy down: the API server cannot call the webhook, and pods are created anyway.
    cluster.kubectl(&["-n", NS, "scale", "deployment/awsvis-aws-proxy", "--replicas=0"]).unwrap();
    wait_for_none(
        cluster,
        "aws-proxy's pods to be gone",
        &["-n", NS, "get", "pods", "-l", "app.kubernetes.io/component=aws-proxy", "-o", "name"],
    );
    cluster
        .apply(&pod("while-down", true))
        .expect("with the webhook down the pod is still created");
    assert!(!env_names(&read("while-down")).iter().any(|n| n == "AWS_CA_BUNDLE"));

    tokio::task::block_in_place(|| {
        helm(cluster, home.path(), &["uninstall", "awsvis", "--namespace", NS, "--wait"])
    });
    for ns in [NS, APPS] {
        cluster.kubectl(&["delete", "namespace", ns, "--wait=false"]).unwrap();
    }
}
