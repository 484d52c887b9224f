//! The mapper against a real Kubernetes cluster (`testkit::cluster`: etcd, the control plane,
//! containerd, the kubelet, kube-proxy and CoreDNS, built from registries): real controllers
//! make the ReplicaSets and pods, real pods get addresses on the CNI bridge and call each other
//! through a Service's name (CoreDNS) and ClusterIP (kube-proxy), and the real
//! `cluster-agent mapper` binary, watching that API server, names both ends of a connection
//! between two pod addresses by their Deployment.

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use testkit::cluster::{Cluster, API_SERVICE_IP, CLUSTER_DOMAIN, NODE_NAME};
use tests::{binary, run_ok, start_mapper};

const NS: &str = "real-cluster";

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

/// Polls `check` until it finds what it looks for (`Ok`); on timeout, panics with what it saw
/// last (`Err`).
fn wait_for(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<String, String>,
) -> String {
    let started = Instant::now();
    loop {
        match check() {
            Ok(found) => return found,
            Err(seen) if started.elapsed() > timeout => {
                panic!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// The addresses of a Deployment's pods (by its `app` label), IPv4 and IPv6, once there are
/// `count` of them running.
fn pod_ips(cluster: &Cluster, app: &str, count: usize) -> Vec<String> {
    let found =
        wait_for(&format!("{count} running pods of {app}"), Duration::from_secs(180), || {
            let ips = cluster
                .kubectl(&[
                    "-n",
                    NS,
                    "get",
                    "pods",
                    "-l",
                    &format!("app={app}"),
                    "--field-selector=status.phase=Running",
                    "-o",
                    "jsonpath={.items[*].status.podIPs[*].ip}",
                ])
                .map_err(|e| e.to_string())?;
            if ips.split_whitespace().count() == 2 * count {
                Ok(ips)
            } else {
                Err(cluster
                    .kubectl(&["-n", NS, "get", "pods", "-o", "wide"])
                    .unwrap_or_else(|e| e.to_string()))
            }
        });
    found.split_whitespace().map(str::to_owned).collect()
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

    let servers = tokio::task::block_in_place(|| pod_ips(cluster, "server", 2));
    let clients = tokio::task::block_in_place(|| pod_ips(cluster, "client", 1));
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
    let status = reqwest::Client::new()
        .post(format!("{mapper}/v1/observations"))
        .bearer_auth("node-secret")
        .json(&json!({"source": NODE_NAME, "tcp": tcp}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
    assert_eq!(
        intentmap(&mapper, &["list"]),
        format!("client in namespace {NS} calls:\n  - server\n"),
        "both ends are named by their Deployment, not the pod"
    );
    // A call to the API server's Service is named as the `kubernetes` Service in `default`.
    let status = reqwest::Client::new()
        .post(format!("{mapper}/v1/observations"))
        .bearer_auth("node-secret")
        .json(&json!({"source": NODE_NAME, "tcp": [{"src_ip": family(&clients, false)[0], "src_port": 40001, "dst_ip": API_SERVICE_IP, "dst_port": 443, "at": now, "count": 1}]}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status.as_u16(), 202);
    let listed = intentmap(&mapper, &["list"]);
    assert!(
        listed.contains("  - kubernetes in namespace default\n") && listed.contains("  - server\n"),
        "the client calls the API server's Service and the server:\n{listed}"
    );

    cluster.kubectl(&["delete", "namespace", NS, "--wait=false"]).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
