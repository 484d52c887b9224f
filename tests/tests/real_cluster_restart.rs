//! Watch reality on a real cluster: the API server crashes and comes back while the real
//! `cluster-agent mapper` watches it. Every watch breaks; the mapper must resume (re-listing
//! where the API server no longer has its place), keep what it knew, and name pods created
//! after the outage. Its own test binary, so the outage hits no other test's cluster.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use testkit::cluster::{Cluster, Workload, NODE_NAME};
use tests::{binary, pod_ips, run_ok, send_observations, start_mapper, wait_for};

const NS: &str = "restart";

fn deployment(name: &str, image: &str, command: &str) -> String {
    Workload::deployment(NS, name, image, command).yaml()
}

/// The IPv4 address of the running pod of Deployment `app`.
fn pod_ip(cluster: &Cluster, app: &str) -> String {
    let ips = pod_ips(cluster, NS, app, 1);
    ips.into_iter().find(|ip| !ip.contains(':')).expect("an IPv4 pod address")
}

fn list(mapper: &str) -> String {
    let out = run_ok(Command::new(binary("intentmap")).args(["--mapper-url", mapper, "list"]));
    String::from_utf8(out.stdout).unwrap()
}

/// `/readyz`'s status and body.
async fn readyz(mapper: &str) -> (u16, String) {
    match reqwest::get(format!("{mapper}/readyz")).await {
        Ok(response) => (response.status().as_u16(), response.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

async fn observe(mapper: &str, client: &str, server: &str) {
    let batch = json!({"source": NODE_NAME, "tcp": [{"src_ip": client, "src_port": 40000,
        "dst_ip": server, "dst_port": 8080, "at": chrono::Utc::now().to_rfc3339(), "count": 1}]});
    send_observations(mapper, &batch).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    unprivileged,
    ignore = "needs root: a real Kubernetes cluster (network links, mounts, cgroups, iptables)"
)]
async fn the_mapper_survives_an_api_server_crash_and_names_pods_made_after_it() {
    testkit::need::root("a real Kubernetes cluster");
    let cluster = testkit::cluster::shared()
        .await
        .unwrap_or_else(|e| panic!("the test cluster did not start: {e:#}"));
    let image = cluster.versions().traffic_image.clone();
    let sleeper = "exec sleep 3600";
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NS}\n{}{}",
            deployment("server", &image, sleeper),
            deployment("client", &image, sleeper)
        ))
        .unwrap();
    let (server, client) =
        tokio::task::block_in_place(|| (pod_ip(cluster, "server"), pod_ip(cluster, "client")));

    let dir = testkit::process::TempDir::new("e2e-restart");
    let (_mapper, mapper) = start_mapper(dir.path(), cluster.kubeconfig()).await;
    observe(&mapper, &client, &server).await;
    let before = format!("client in namespace {NS} calls:\n  - server\n");
    assert_eq!(list(&mapper), before);

    assert_eq!(readyz(&mapper).await.0, 200, "ready before the outage");

    // The crash: every watch of the mapper breaks for ten seconds; /readyz says so meanwhile.
    let polling = Arc::new(AtomicBool::new(true));
    let poller = tokio::spawn({
        let (polling, mapper) = (polling.clone(), mapper.clone());
        async move {
            let mut refusals = Vec::new();
            while polling.load(Ordering::SeqCst) {
                let (status, body) = readyz(&mapper).await;
                if status != 200 {
                    refusals.push((status, body));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            refusals
        }
    });
    tokio::task::block_in_place(|| cluster.restart_api_server(Duration::from_secs(10)))
        .unwrap_or_else(|e| panic!("restarting the API server: {e:#}"));
    assert_eq!(list(&mapper), before, "what the mapper knew survives the outage, once");
    let mut ready_again = false;
    for _ in 0..600 {
        if readyz(&mapper).await.0 == 200 {
            ready_again = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    polling.store(false, Ordering::SeqCst);
    let refusals = poller.await.unwrap();
    assert!(ready_again, "/readyz is 200 again within 2 minutes of the API server's return");
    let (status, body) = refusals.first().expect("/readyz refused while the watches were broken");
    assert_eq!(*status, 503, "{body}");
    assert!(body.contains("Kubernetes watches are broken"), "{body}");

    // A pod made after the outage is named: the watches resumed.
    cluster.apply(&deployment("late", &image, sleeper)).unwrap();
    let late = tokio::task::block_in_place(|| pod_ip(cluster, "late"));
    let after = format!(
        "client in namespace {NS} calls:\n  - server\nlate in namespace {NS} calls:\n  - server\n"
    );
    let listed = tokio::task::block_in_place(|| {
        wait_for("the pod made after the outage to be named", Duration::from_secs(120), || {
            let rt = tokio::runtime::Handle::current();
            rt.block_on(observe(&mapper, &late, &server));
            let listed = list(&mapper);
            if listed == after {
                Ok(listed)
            } else {
                Err(listed)
            }
        })
    });
    assert_eq!(listed, after);
    cluster.kubectl(&["delete", "namespace", NS, "--wait=false"]).unwrap();
}
