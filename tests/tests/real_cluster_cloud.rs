//! The whole product on a real cluster, as users install it: the cloud-api chart (PostgreSQL
//! outside the cluster, reached from the pods at the node's address, as a managed database
//! would be), the cluster-agent chart with the cluster's cloud credentials and a persistent
//! outbox, the seeds' shop on real pods, and the cloud's access graph and ClientIntents of it.
//! Then the outbox across the mapper pod's deletion: with the cloud down, reports wait on the
//! outbox's volume; the pod is deleted; its successor finds them there and delivers them once
//! the cloud is back. Its own test binary (and so its own cluster).

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use demo::on_cluster::{install, uninstall, Options, AGENT, AGENT_NS, CLOUD, CLOUD_NS};
use serde_json::Value;
use testkit::cluster::{Cluster, Workload};
use tests::kube::{
    install_clientintents_crd, named_workloads, port_forward, ready_pods, workspace, NAMING_NS,
};
use tests::{binary, get_text, wait_for, wait_for_none, SHOP_CALLS, SHOP_NAMESPACE};

const CLUSTER: &str = "real";

/// The edges from the workloads of `namespace` in the cloud's graph, as `client -> server`
/// (`server` as `namespace/name` when in another namespace).
async fn cloud_edges(
    cloud: &str,
    token: &str,
    namespace: &str,
) -> Result<BTreeSet<String>, String> {
    let graph: Value = reqwest::Client::new()
        .get(format!("{cloud}/api/v1/access-graph"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let prefix = format!("{CLUSTER}/{namespace}/");
    let edges = graph["edges"].as_array().ok_or_else(|| graph.to_string())?;
    Ok(edges
        .iter()
        .filter_map(|e| {
            let source = e["source"].as_str()?.strip_prefix(&prefix)?;
            let target = e["target"].as_str()?.strip_prefix(&format!("{CLUSTER}/"))?;
            let target = target.strip_prefix(&format!("{namespace}/")).unwrap_or(target);
            Some(format!("{source} -> {target}"))
        })
        .collect())
}

/// Waits until the cloud's graph of `namespace` satisfies `done`; the edges then.
fn wait_for_cloud(
    what: &str,
    cloud: &str,
    token: &str,
    namespace: &str,
    done: impl Fn(&BTreeSet<String>) -> bool,
) -> BTreeSet<String> {
    let rt = tokio::runtime::Handle::current();
    let found = tokio::task::block_in_place(|| {
        wait_for(what, Duration::from_secs(240), || {
            let edges = rt.block_on(cloud_edges(cloud, token, namespace))?;
            let text = edges.iter().cloned().collect::<Vec<_>>().join("\n");
            if done(&edges) {
                Ok(text)
            } else {
                Err(text)
            }
        })
    });
    found.lines().map(str::to_owned).collect()
}

/// `intentmap_mapper_reports_pending` on the mapper's /metrics (through its port-forward, which
/// may not be up yet: then the error).
async fn pending_reports(mapper: &str) -> Result<u64, String> {
    let metrics = tests::mapper_metrics(mapper).await?;
    let pending = metrics.get("intentmap_mapper_reports_pending");
    pending
        .map(|v| *v as u64)
        .ok_or_else(|| format!("no intentmap_mapper_reports_pending in {metrics:?}"))
}

fn scale_cloud(cluster: &Cluster, replicas: usize) {
    cluster
        .kubectl(&[
            "-n",
            CLOUD_NS,
            "scale",
            &format!("deployment/{CLOUD}"),
            &format!("--replicas={replicas}"),
        ])
        .unwrap();
    if replicas == 0 {
        wait_for_none(
            cluster,
            "the cloud's pods to be gone",
            &["-n", CLOUD_NS, "get", "pods", "-o", "name"],
        );
    } else {
        ready_pods(cluster, CLOUD_NS, "", replicas, Duration::from_secs(180));
    }
}

/// A Deployment `name` in the shop calling the frontend every second.
fn caller(name: &str, image: &str) -> String {
    let script = r#"while true; do printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 frontend 8080 >/dev/null 2>&1; sleep 1; done"#;
    Workload::deployment(SHOP_NAMESPACE, name, image, script).yaml()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    unprivileged,
    ignore = "needs root: a real Kubernetes cluster (network links, mounts, cgroups, iptables)"
)]
async fn helm_installs_the_cloud_and_the_agent_the_graph_shows_the_shop_and_the_outbox_outlives_the_mapper_pod(
) {
    testkit::need::root("a real Kubernetes cluster");
    let cluster = testkit::cluster::shared()
        .await
        .unwrap_or_else(|e| panic!("the test cluster did not start: {e:#}"));
    let home = testkit::process::TempDir::new("e2e-helm-cloud");
    let pg =
        testkit::pg::server().await.expect("PostgreSQL (scripts/ensure-postgres.sh installs it)");
    // The test script has built the debug binaries; users get release builds by default.
    let options = Options {
        root: workspace(),
        bin_dir: binary("cloud-api").parent().unwrap().to_owned(),
        database_url: pg.fresh_database("e2e_real_cloud").await.unwrap(),
        home: home.path().to_owned(),
        cluster_name: CLUSTER.into(),
        profile: "debug".into(),
    };
    // As `intentmap-demo --real-cluster` does: both charts and the shop.
    let installed = tokio::task::block_in_place(|| install(cluster, &options))
        .unwrap_or_else(|e| panic!("installing the product: {e:#}"));
    let token = installed.api_token.clone();
    let image = cluster.versions().traffic_image.clone();
    let expected: BTreeSet<String> = SHOP_CALLS
        .iter()
        .flat_map(|(client, targets)| targets.iter().map(move |t| format!("{client} -> {t}")))
        .collect();
    let (_cloud_forward, cloud) = port_forward(cluster, CLOUD_NS, CLOUD, 80);
    let edges = wait_for_cloud(
        "the cloud's graph to show the shop's calls",
        &cloud,
        &token,
        SHOP_NAMESPACE,
        |edges| *edges == expected,
    );
    assert_eq!(edges, expected);

    // Workloads named by Otterize's annotation and label, by their CronJob, and a hostNetwork
    // DaemonSet (as client, and as server on its node's address): named so in the cloud too.
    cluster.apply(&named_workloads(&image)).unwrap();
    let frontend = format!("{SHOP_NAMESPACE}/frontend");
    let named: BTreeSet<String> = ["billing", "host-agent", "invoices", "nightly-report"]
        .iter()
        .map(|client| format!("{client} -> {frontend}"))
        .chain(["node-scraper -> host-agent".to_owned()])
        .collect();
    let edges = wait_for_cloud(
        "the named workloads in the cloud's graph",
        &cloud,
        &token,
        NAMING_NS,
        |edges| *edges == named,
    );
    assert_eq!(edges, named);

    // The cloud's ClientIntents of this cluster, accepted by the API server's validation of the
    // published CRD (a server-side dry run of every document).
    install_clientintents_crd(cluster);
    for version in ["v2beta1", "v1alpha3"] {
        let url = format!(
            "{cloud}/api/v1/clusters/{CLUSTER}/client-intents?version={version}&namespace={SHOP_NAMESPACE}"
        );
        let yaml = get_text(&reqwest::Client::new(), &url, &token).await;
        assert_eq!(
            yaml.matches("kind: ClientIntents").count(),
            SHOP_CALLS.len(),
            "one ClientIntents per calling workload:\n{yaml}"
        );
        let file = home.path().join(format!("cloud-{version}.yaml"));
        std::fs::write(&file, &yaml).unwrap();
        cluster
            .kubectl(&[
                "apply",
                "--server-side",
                "--dry-run=server",
                "--field-manager=intentmap",
                "-f",
                file.to_str().unwrap(),
            ])
            .unwrap_or_else(|e| panic!("the API server refused the cloud's {version}: {e:#}"));
    }

    // The cloud goes down. A short-lived client calls the frontend; its edge reaches the
    // mapper, which keeps the report in its outbox, unsent.
    scale_cloud(cluster, 0);
    cluster.apply(&caller("outage-caller", &image)).unwrap();
    let (mapper_forward, mapper) =
        port_forward(cluster, AGENT_NS, &format!("{AGENT}-mapper"), 9090);
    let rt = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        wait_for("the outage caller's edge in the mapper", Duration::from_secs(180), || {
            let out = Command::new(tests::binary("intentmap"))
                .args(["--mapper-url", &mapper, "list", "-n", SHOP_NAMESPACE])
                .output()
                .map_err(|e| e.to_string())?;
            let listed = String::from_utf8_lossy(&out.stdout).into_owned();
            let pending = rt.block_on(pending_reports(&mapper))?;
            if listed.contains("outage-caller in namespace") && pending > 0 {
                Ok(listed)
            } else {
                Err(format!("{pending} reports pending; {listed}"))
            }
        })
    });
    // Reports are made every two seconds: wait for one made after the edge was listed.
    tokio::time::sleep(Duration::from_secs(5)).await;
    cluster.kubectl(&["-n", SHOP_NAMESPACE, "delete", "deployment", "outage-caller"]).unwrap();
    wait_for_none(
        cluster,
        "the outage caller's pods to be gone",
        &["-n", SHOP_NAMESPACE, "get", "pods", "-l", "app=outage-caller", "-o", "name"],
    );
    drop(mapper_forward);

    // The mapper pod is deleted; its successor mounts the same volume and finds the reports.
    cluster
        .kubectl(&["-n", AGENT_NS, "delete", "pod", "-l", "app.kubernetes.io/component=mapper"])
        .unwrap();
    ready_pods(
        cluster,
        AGENT_NS,
        "app.kubernetes.io/component=mapper",
        1,
        Duration::from_secs(180),
    );
    let (_mapper_forward, mapper) =
        port_forward(cluster, AGENT_NS, &format!("{AGENT}-mapper"), 9090);
    let pending = tokio::task::block_in_place(|| {
        wait_for("the new mapper pod to find the outbox", Duration::from_secs(60), || {
            rt.block_on(pending_reports(&mapper)).map(|n| n.to_string())
        })
    });
    assert_ne!(pending, "0", "the reports made before the deletion wait in the new pod's outbox");

    // The cloud comes back: the outage caller's call, seen only by the deleted pod, arrives.
    scale_cloud(cluster, 1);
    let (_cloud_forward, cloud) = port_forward(cluster, CLOUD_NS, CLOUD, 80);
    let with_outage: BTreeSet<String> =
        expected.iter().cloned().chain(["outage-caller -> frontend".to_owned()]).collect();
    let edges = wait_for_cloud(
        "the outage caller's call in the cloud's graph",
        &cloud,
        &token,
        SHOP_NAMESPACE,
        |edges| edges.contains("outage-caller -> frontend"),
    );
    assert_eq!(edges, with_outage);
    tokio::task::block_in_place(|| {
        wait_for("the outbox to drain", Duration::from_secs(120), || {
            match rt.block_on(pending_reports(&mapper))? {
                0 => Ok(String::new()),
                n => Err(format!("{n} reports pending")),
            }
        })
    });

    // `helm uninstall` of both; the kept outbox claim and the volume are removed by hand, as
    // the chart's NOTES say.
    tokio::task::block_in_place(|| uninstall(cluster, &options)).unwrap();
    for namespace in [SHOP_NAMESPACE, NAMING_NS] {
        cluster.kubectl(&["delete", "namespace", namespace, "--wait=false"]).unwrap();
    }
    drop(installed);
}
