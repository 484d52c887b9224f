//! The whole product on one machine: the cloud API (the real binary) on a PostgreSQL, and two
//! simulated clusters, each a stand-in Kubernetes API server holding part of the seeds'
//! `otterize-ecom-demo` shop, with its own `cluster-agent mapper` uploading to the cloud and its
//! own `cluster-agent node` capturing the traffic. As root the pods are network namespaces
//! sending real TCP and DNS; otherwise the same traffic is replayed to the mappers as the node
//! agents would report it.
//!
//! The topology: `us-east` runs frontend, cartservice, checkoutservice and redis-cart;
//! `eu-west` runs payment-gateway (behind a LoadBalancer) and ledger. checkoutservice calls
//! payment-gateway through its load balancer address (a cross-cluster call the cloud resolves),
//! and payment-gateway calls `api.stripe.example`, resolved through DNS (an internet target).
//!
//! Every process a [`Product`] starts runs in one process group and everything it makes is in
//! its ledger (see [`crate::cleanup`]): dropping the product (an error, a panic, a signal the
//! caller turns into a return) stops them all and removes the network namespaces; if the
//! process is killed outright, the group still dies with it and the next start in the same work
//! directory removes the rest.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use mapper_core::fixtures::*;
use model::observation::{DnsAnswer, ObservationBatch, TcpConnection};
use serde_json::Value;
use testkit::kube_api::FakeApiServer;
use testkit::process::{free_port, wait_ready, Running};

use crate::cleanup::Tracker;
use crate::lab::{self, Lab};

/// A workload of the demo shop: one pod with one IP, listening on one port.
pub struct Workload {
    pub cluster: &'static str,
    pub namespace: &'static str,
    pub name: &'static str,
    pub kind: &'static str,
    pub ip: &'static str,
    pub port: u16,
}

pub const WORKLOADS: &[Workload] = &[
    Workload {
        cluster: "us-east",
        namespace: "otterize-ecom-demo",
        name: "frontend",
        kind: "Deployment",
        ip: "10.212.1.10",
        port: 8080,
    },
    Workload {
        cluster: "us-east",
        namespace: "otterize-ecom-demo",
        name: "cartservice",
        kind: "Deployment",
        ip: "10.212.1.11",
        port: 7070,
    },
    Workload {
        cluster: "us-east",
        namespace: "otterize-ecom-demo",
        name: "checkoutservice",
        kind: "Deployment",
        ip: "10.212.1.12",
        port: 5050,
    },
    Workload {
        cluster: "us-east",
        namespace: "otterize-ecom-demo",
        name: "redis-cart",
        kind: "StatefulSet",
        ip: "10.212.1.13",
        port: 6379,
    },
    Workload {
        cluster: "eu-west",
        namespace: "payments",
        name: "payment-gateway",
        kind: "Deployment",
        ip: "10.212.2.10",
        port: 8443,
    },
    Workload {
        cluster: "eu-west",
        namespace: "payments",
        name: "ledger",
        kind: "StatefulSet",
        ip: "10.212.2.11",
        port: 5432,
    },
];
pub const CLUSTERS: &[&str] = &["us-east", "eu-west"];
/// payment-gateway's load balancer address (the pod's own address here, so the call lands).
pub const LOAD_BALANCER_IP: &str = "10.212.2.10";
pub const INTERNET_NAME: &str = "api.stripe.example";
pub const INTERNET_IP: &str = "10.212.9.9";
pub const INTERNET_PORT: u16 = 443;
const DNS_IP: &str = "10.212.9.53";

/// One call of the demo traffic: client workload → a target address (or DNS name) and port.
pub struct Call {
    pub client: &'static str,
    pub target: &'static str,
    pub port: u16,
    /// Resolve `target` through DNS first.
    pub by_name: bool,
}

pub const CALLS: &[Call] = &[
    Call { client: "frontend", target: "10.212.1.11", port: 7070, by_name: false },
    Call { client: "frontend", target: "10.212.1.12", port: 5050, by_name: false },
    Call { client: "cartservice", target: "10.212.1.13", port: 6379, by_name: false },
    Call { client: "checkoutservice", target: LOAD_BALANCER_IP, port: 8443, by_name: false },
    Call { client: "payment-gateway", target: "10.212.2.11", port: 5432, by_name: false },
    Call { client: "payment-gateway", target: INTERNET_NAME, port: INTERNET_PORT, by_name: true },
];

fn workload(name: &str) -> &'static Workload {
    WORKLOADS.iter().find(|w| w.name == name).expect("a demo workload")
}

/// How the traffic is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Network namespaces, real TCP and DNS, captured by the node agents (root).
    Real,
    /// The same observations POSTed to the mappers (no root needed).
    Replayed,
}

pub struct Options {
    /// Where the binaries are (`cloud-api`, `cluster-agent`).
    pub bin_dir: PathBuf,
    /// Working files: outboxes, kubeconfigs, the ledger of what the run made.
    pub work_dir: PathBuf,
    pub database_url: String,
    pub cloud_port: u16,
    pub traffic: Traffic,
    /// Seconds between the mappers' uploads.
    pub upload_interval: f64,
}

pub struct ClusterRun {
    pub name: &'static str,
    pub api: FakeApiServer,
    pub mapper_url: String,
    _mapper: Running,
    _node: Option<Running>,
}

pub struct Product {
    pub options: Options,
    pub cloud_url: String,
    pub api_token: String,
    pub clusters: Vec<ClusterRun>,
    cloud: Option<Running>,
    lab: Option<Lab>,
    pods: Vec<(&'static str, String)>,
    http: reqwest::Client,
    /// Last: dropped after everything above, it removes what is left and the ledger.
    tracker: Arc<Tracker>,
}

impl Drop for Product {
    /// Stops every process first (the fields' own drops then only reap them and remove the
    /// network, which needs the processes in it gone).
    fn drop(&mut self) {
        self.tracker.stop_processes();
    }
}

fn spawn(tracker: &Tracker, cmd: &mut Command, what: &str) -> anyhow::Result<Running> {
    Ok(Running(
        tracker
            .spawn(cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::inherit()), what)?,
    ))
}

pub(crate) fn admin(bin: &Path, db: &str, args: &[&str]) -> anyhow::Result<Value> {
    let out = Command::new(bin.join("cloud-api"))
        .arg("admin")
        .args(args)
        .args(["--output", "json", "--database-url", db])
        .output()?;
    if !out.status.success() {
        bail!("cloud-api admin {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(serde_json::from_slice(&out.stdout)?)
}

/// The cluster's part of the shop in its stand-in API server.
fn load_cluster(api: &FakeApiServer, cluster: &str) {
    for w in WORKLOADS.iter().filter(|w| w.cluster == cluster) {
        api.apply(&Namespace { metadata: mk_namespace(w.namespace), ..Default::default() });
        let pod = if w.kind == "StatefulSet" {
            api.apply(&StatefulSet {
                metadata: mk_statefulset(w.namespace, w.name),
                ..Default::default()
            });
            mk_pod(w.namespace, &format!("{}-0", w.name), &[w.ip]).owned_by("StatefulSet", w.name)
        } else {
            let rs = format!("{}-6c9f8d7b5", w.name);
            api.apply(&Deployment {
                metadata: mk_deployment(w.namespace, w.name),
                ..Default::default()
            });
            api.apply(&ReplicaSet {
                metadata: mk_replicaset(w.namespace, &rs, w.name),
                ..Default::default()
            });
            mk_pod(w.namespace, &format!("{rs}-x2x9q"), &[w.ip]).owned_by("ReplicaSet", &rs)
        };
        api.apply::<Pod>(&pod.labelled("app", w.name));
        let service = mk_service(w.namespace, w.name, &[], &[("app", w.name)]);
        let service = if w.ip == LOAD_BALANCER_IP {
            service.load_balancer(&[LOAD_BALANCER_IP])
        } else {
            service
        };
        api.apply::<Service>(&service);
    }
}

impl Product {
    /// Starts everything; returns once the cloud, the mappers and the node agents are ready.
    pub async fn start(options: Options) -> anyhow::Result<Product> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
        std::fs::create_dir_all(&options.work_dir)
            .with_context(|| format!("creating {}", options.work_dir.display()))?;
        let tracker = Arc::new(Tracker::start(&options.work_dir)?);
        let org = admin(&options.bin_dir, &options.database_url, &["create-org", "demo"])?;
        let org_id = org["org_id"].as_str().context("create-org printed no org_id")?.to_owned();
        let api_token =
            org["api_token"].as_str().context("create-org printed no api_token")?.to_owned();
        let cloud_url = format!("http://127.0.0.1:{}", options.cloud_port);
        let mut product = Product {
            options,
            cloud_url,
            api_token,
            clusters: Vec::new(),
            cloud: None,
            lab: None,
            pods: Vec::new(),
            http: http.clone(),
            tracker,
        };
        product.start_cloud().await?;

        if product.options.traffic == Traffic::Real {
            product.build_lab()?;
        }
        for name in CLUSTERS {
            let creds = admin(
                &product.options.bin_dir,
                &product.options.database_url,
                &["create-cluster", "--org", &org_id, name],
            )?;
            let api = FakeApiServer::start().await?;
            load_cluster(&api, name);
            let dir = product.options.work_dir.join(name);
            std::fs::create_dir_all(&dir)?;
            let kubeconfig = dir.join("kubeconfig");
            std::fs::write(&kubeconfig, kubeconfig_yaml(&api.url()))?;
            let port = free_port();
            let mapper_url = format!("http://127.0.0.1:{port}");
            let mapper = spawn(
                &product.tracker,
                Command::new(product.options.bin_dir.join("cluster-agent"))
                    .args([
                        "mapper",
                        "--listen",
                        &format!("127.0.0.1:{port}"),
                        "--shared-token",
                        "node-secret",
                        "--outbox-dir",
                    ])
                    .arg(dir.join("outbox"))
                    .args([
                        "--upload-interval-seconds",
                        &product.options.upload_interval.to_string(),
                        "--cloud-url",
                        &product.cloud_url,
                    ])
                    .args(["--cloud-client-id", creds["client_id"].as_str().unwrap_or_default()])
                    .args([&format!(
                        "--cloud-client-secret={}",
                        creds["client_secret"].as_str().unwrap_or_default()
                    )])
                    .env("KUBECONFIG", &kubeconfig)
                    .env("RUST_LOG", "warn"),
                &format!("cluster-agent mapper ({name})"),
            )?;
            wait_ready(&http, &format!("{mapper_url}/readyz"), Duration::from_secs(30)).await?;
            let node = if product.options.traffic == Traffic::Real {
                let health = free_port();
                let node = spawn(
                    &product.tracker,
                    Command::new(product.options.bin_dir.join("cluster-agent"))
                        .args([
                            "node",
                            "--mapper-url",
                            &mapper_url,
                            "--shared-token",
                            "node-secret",
                            "--node-name",
                            &format!("{name}-node-1"),
                        ])
                        .args([
                            "--ship-interval-seconds",
                            "0.3",
                            "--scan-interval-seconds",
                            "0.5",
                            "--listen",
                            &format!("127.0.0.1:{health}"),
                        ])
                        .env("RUST_LOG", "warn"),
                    &format!("cluster-agent node ({name})"),
                )?;
                wait_ready(
                    &http,
                    &format!("http://127.0.0.1:{health}/healthz"),
                    Duration::from_secs(60),
                )
                .await?;
                Some(node)
            } else {
                None
            };
            product.clusters.push(ClusterRun {
                name,
                api,
                mapper_url,
                _mapper: mapper,
                _node: node,
            });
        }
        Ok(product)
    }

    /// Starts (or restarts) the cloud API binary, with a signing key kept across restarts (as
    /// the chart's Secret keeps it), so the clusters' tokens stay valid.
    pub async fn start_cloud(&mut self) -> anyhow::Result<()> {
        let key = self.options.work_dir.join("jwt-signing-key.pem");
        if !key.exists() {
            let out = Command::new(self.options.bin_dir.join("cloud-api"))
                .args(["admin", "generate-jwt-key"])
                .output()?;
            if !out.status.success() {
                bail!(
                    "cloud-api admin generate-jwt-key failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::fs::write(&key, &out.stdout)
                .with_context(|| format!("writing {}", key.display()))?;
        }
        let cloud = spawn(
            &self.tracker,
            Command::new(self.options.bin_dir.join("cloud-api"))
                .args(["serve", "--listen", &format!("127.0.0.1:{}", self.options.cloud_port)])
                // Serves as a login role of its own (row-level security applies to it); the
                // owner's URL only migrates and sets that role up.
                .args([
                    "--database-url",
                    &cloud_api::store::roles::dedicated_login_url(&self.options.database_url)?,
                ])
                .args(["--migrate-database-url", &self.options.database_url])
                .arg("--jwt-key-files")
                .arg(&key)
                .env("RUST_LOG", "warn"),
            "cloud-api",
        )?;
        self.cloud = Some(cloud);
        wait_ready(&self.http, &format!("{}/readyz", self.cloud_url), Duration::from_secs(30)).await
    }

    /// Stops the cloud API (the mappers keep their reports in their outboxes meanwhile).
    pub fn stop_cloud(&mut self) {
        self.cloud = None;
    }

    fn build_lab(&mut self) -> anyhow::Result<()> {
        // Named after this process (so two demos never share names), and which lab of it.
        static LABS: AtomicU32 = AtomicU32::new(0);
        let tag = match LABS.fetch_add(1, Ordering::Relaxed) {
            0 => format!("im{}", std::process::id()),
            n => format!("im{}n{n}", std::process::id()),
        };
        let mut lab = Lab::new(&tag, self.tracker.clone())?;
        for w in WORKLOADS {
            let ns = lab.add_pod(w.ip)?;
            lab.run(&ns, "python3", &["-c", lab::PY_SERVER, w.ip, &w.port.to_string()])?;
            self.pods.push((w.name, ns));
        }
        let internet = lab.add_pod(INTERNET_IP)?;
        lab.run(
            &internet,
            "python3",
            &["-c", lab::PY_SERVER, INTERNET_IP, &INTERNET_PORT.to_string()],
        )?;
        let dns = lab.add_pod(DNS_IP)?;
        lab.run(
            &dns,
            "dnsmasq",
            &[
                "--no-daemon",
                "--port=53",
                &format!("--listen-address={DNS_IP}"),
                "--bind-interfaces",
                "--no-resolv",
                "--no-hosts",
                &format!("--address=/{INTERNET_NAME}/{INTERNET_IP}"),
            ],
        )?;
        self.lab = Some(lab);
        std::thread::sleep(Duration::from_millis(500));
        Ok(())
    }

    /// One round of the demo traffic: `per_call` connections for each call.
    pub async fn send_traffic(&mut self, per_call: u32) -> anyhow::Result<()> {
        match self.options.traffic {
            Traffic::Real => {
                let mut runs = Vec::new();
                for call in CALLS {
                    let ns = &self
                        .pods
                        .iter()
                        .find(|(name, _)| *name == call.client)
                        .expect("a pod per workload")
                        .1;
                    let mut cmd = Command::new("ip");
                    cmd.args(["netns", "exec", ns, "python3", "-c"]);
                    if call.by_name {
                        cmd.args([
                            lab::PY_RESOLVE_AND_CONNECT,
                            DNS_IP,
                            call.target,
                            &call.port.to_string(),
                            &per_call.to_string(),
                        ]);
                    } else {
                        cmd.args([
                            lab::PY_CLIENT,
                            call.target,
                            &call.port.to_string(),
                            &per_call.to_string(),
                        ]);
                    }
                    self.tracker.adopt(
                        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()),
                    );
                    // Killed if this is cancelled (the caller stopping on a signal).
                    runs.push(tokio::process::Command::from(cmd).kill_on_drop(true).spawn()?);
                }
                for run in runs {
                    let out = run.wait_with_output().await?;
                    if !out.status.success() {
                        bail!("a demo client failed: {}", String::from_utf8_lossy(&out.stderr));
                    }
                }
            }
            Traffic::Replayed => {
                for cluster in &self.clusters {
                    let batch = replayed_batch(cluster.name, per_call);
                    let reply = self
                        .http
                        .post(format!("{}/v1/observations", cluster.mapper_url))
                        .bearer_auth("node-secret")
                        .json(&batch)
                        .send()
                        .await?;
                    if !reply.status().is_success() {
                        bail!(
                            "the {} mapper refused the observations: {}",
                            cluster.name,
                            reply.text().await.unwrap_or_default()
                        );
                    }
                }
            }
        }
        Ok(())
    }

    /// The cloud's access graph (all clusters).
    pub async fn graph(&self) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/api/v1/access-graph", self.cloud_url))
            .bearer_auth(&self.api_token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// A cluster's ClientIntents as YAML, from the cloud.
    pub async fn client_intents(&self, cluster: &str) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/api/v1/clusters/{cluster}/client-intents", self.cloud_url))
            .bearer_auth(&self.api_token)
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?)
    }

    /// A mapper's own edges.
    pub async fn mapper_edges(&self, cluster: &str) -> anyhow::Result<Vec<model::Edge>> {
        let run = self.clusters.iter().find(|c| c.name == cluster).context("no such cluster")?;
        Ok(self
            .http
            .get(format!("{}/v1/edges", run.mapper_url))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// Waits until the cloud's graph has every expected edge and, per edge, the connections
    /// the mappers counted (everything uploaded).
    pub async fn wait_until_uploaded(&self, timeout: Duration) -> anyhow::Result<Value> {
        let started = Instant::now();
        loop {
            let graph = self.graph().await.ok();
            if let Some(graph) = &graph {
                if self.uploaded(graph).await.unwrap_or(false) {
                    return Ok(graph.clone());
                }
            }
            if started.elapsed() > timeout {
                bail!(
                    "the cloud did not receive all edges within {timeout:?}; last graph: {}",
                    graph.unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    async fn uploaded(&self, graph: &Value) -> anyhow::Result<bool> {
        let edges = graph["edges"].as_array().context("graph without edges")?;
        if edges.len() < CALLS.len() {
            return Ok(false);
        }
        let cloud_total: u64 = edges.iter().filter_map(|e| e["connections"].as_u64()).sum();
        let mut mapper_total = 0;
        for cluster in CLUSTERS {
            mapper_total +=
                self.mapper_edges(cluster).await?.iter().map(|e| e.connections).sum::<u64>();
        }
        Ok(mapper_total > 0 && cloud_total == mapper_total)
    }
}

fn kubeconfig_yaml(server: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: demo\n  cluster:\n    server: {server}\ncontexts:\n- name: demo\n  context:\n    cluster: demo\n    user: demo\ncurrent-context: demo\nusers:\n- name: demo\n  user: {{}}\n"
    )
}

/// What a cluster's node agent reports for one round of the demo traffic.
fn replayed_batch(cluster: &str, per_call: u32) -> ObservationBatch {
    let now = chrono::Utc::now();
    let mut batch =
        ObservationBatch { source: Some(format!("{cluster}-replay")), ..Default::default() };
    for (i, call) in CALLS.iter().enumerate() {
        let client = workload(call.client);
        if client.cluster != cluster {
            continue;
        }
        let src_ip: IpAddr = client.ip.parse().expect("an IP");
        let dst_ip: IpAddr = if call.by_name {
            batch.dns.push(DnsAnswer {
                client_ip: src_ip,
                name: call.target.to_owned(),
                cnames: Vec::new(),
                addresses: vec![INTERNET_IP.parse().expect("an IP")],
                ttl_seconds: 300,
                at: now,
            });
            INTERNET_IP.parse().expect("an IP")
        } else {
            call.target.parse().expect("an IP")
        };
        batch.tcp.push(TcpConnection {
            src_ip,
            src_port: 40_000 + i as u16,
            dst_ip,
            dst_port: call.port,
            at: now,
            count: u64::from(per_call),
            pid: None,
            netns: None,
            pod: None,
            accepted: false,
            bytes: None,
        });
    }
    batch
}
