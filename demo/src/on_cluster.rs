//! The whole product on a real Kubernetes cluster ([`testkit::cluster`]), installed the way
//! users install it: our images (built without Docker, `scripts/images.sh`) imported into the
//! node, the cloud-api chart with PostgreSQL outside the cluster (reached from the pods at the
//! node's address, as a managed database would be), the cluster-agent chart with that
//! cluster's cloud credentials and a persistent outbox, and the seeds' shop as real pods.
//! `intentmap-demo --real-cluster` and `tests/tests/real_cluster_cloud.rs` both run [`install`].
//!
//! Everything here blocks (it waits on the cluster): call it off the async threads.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use testkit::cluster::{service, Cluster, Workload, NODE_IP};
use testkit::process::{spawn, Running, TcpForward};

/// The cloud's namespace and release (also its objects' names: `fullnameOverride`).
pub const CLOUD_NS: &str = "intentmap-cloud";
pub const CLOUD: &str = "intentmap-cloud";
/// The agent's namespace and release (objects `intentmap-mapper`, `intentmap-node`).
pub const AGENT_NS: &str = "intentmap-agent";
pub const AGENT: &str = "intentmap";
/// The StorageClass name of the outbox's PersistentVolume (and the volume's name).
pub const OUTBOX_CLASS: &str = "intentmap-outbox";

/// The seeds' shop (otterize-ecom-demo): its namespace, its services, and who calls whom.
pub const SHOP_NAMESPACE: &str = "otterize-ecom-demo";
pub const SHOP_SERVICES: &[&str] = &[
    "adservice",
    "cartservice",
    "checkoutservice",
    "currencyservice",
    "emailservice",
    "frontend",
    "loadgenerator",
    "paymentservice",
    "productcatalogservice",
    "recommendationservice",
    "redis-cart",
    "shippingservice",
];
pub const SHOP_CALLS: &[(&str, &[&str])] = &[
    ("cartservice", &["redis-cart"]),
    (
        "checkoutservice",
        &[
            "cartservice",
            "currencyservice",
            "emailservice",
            "paymentservice",
            "productcatalogservice",
            "shippingservice",
        ],
    ),
    (
        "frontend",
        &[
            "adservice",
            "cartservice",
            "checkoutservice",
            "currencyservice",
            "productcatalogservice",
            "recommendationservice",
            "shippingservice",
        ],
    ),
    ("loadgenerator", &["frontend"]),
    ("recommendationservice", &["productcatalogservice"]),
];

/// The seeds' shop as real workloads of the traffic image: each service a Deployment
/// (redis-cart a StatefulSet) serving HTTP on 8080 behind a Service of its name, and each client
/// calling its targets by Service name (CoreDNS, kube-proxy) every two seconds.
pub fn shop(image: &str) -> String {
    let mut yaml =
        format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {SHOP_NAMESPACE}\n");
    for name in SHOP_SERVICES {
        let targets = SHOP_CALLS
            .iter()
            .find(|(client, _)| client == name)
            .map(|(_, targets)| targets.join(" "))
            .unwrap_or_default();
        let script = format!(
            r#"mkdir -p /www && hostname > /www/index.html && httpd -p 8080 -h /www
while true; do
  for t in {targets}; do printf "GET / HTTP/1.0\r\n\r\n" | nc -w 2 $t 8080 >/dev/null 2>&1; done
  sleep 2
done"#
        );
        let workload = Workload::deployment(SHOP_NAMESPACE, name, image, &script).port(8080);
        let workload = if *name == "redis-cart" { workload.stateful_set() } else { workload };
        yaml += &workload.yaml();
        yaml += &service(SHOP_NAMESPACE, name, 8080);
    }
    yaml
}

/// Polls `check` every half second until it finds what it looks for (`Ok`); after `timeout`,
/// fails with what it saw last (`Err`).
pub fn wait_for<T>(
    what: &str,
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> anyhow::Result<T> {
    let started = Instant::now();
    loop {
        match check() {
            Ok(found) => return Ok(found),
            Err(seen) if started.elapsed() > timeout => {
                bail!("timed out after {timeout:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

/// `helm <args>` against the cluster, with its caches in `home` and Helm from
/// `<root>/target/pytools` (scripts/ensure-python-tools.sh installs it); its stdout.
pub fn helm(cluster: &Cluster, root: &Path, home: &Path, args: &[&str]) -> anyhow::Result<String> {
    let program = root.join("target/pytools/bin/helm");
    if !program.exists() {
        bail!("{} is missing; run scripts/ensure-python-tools.sh", program.display());
    }
    let mut cmd = Command::new(&program);
    cmd.args(args).arg("--kubeconfig").arg(cluster.kubeconfig());
    for (var, dir) in
        [("HELM_CACHE_HOME", "cache"), ("HELM_CONFIG_HOME", "config"), ("HELM_DATA_HOME", "data")]
    {
        cmd.env(var, home.join(dir));
    }
    let out = cmd.output().with_context(|| format!("running {}", program.display()))?;
    if !out.status.success() {
        bail!("helm {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `jsonpath` printing each pod's name and Ready condition, one per line.
pub const READINESS: &str = "jsonpath={range .items[*]}{.metadata.name} \
    {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}";

/// Waits until `namespace` holds exactly `count` pods matching `selector` (all pods when
/// empty), every one Ready; their [`READINESS`] lines. On timeout the error shows the logs and
/// descriptions of the pods that are not Ready.
pub fn ready_pods(
    cluster: &Cluster,
    namespace: &str,
    selector: &str,
    count: usize,
    timeout: Duration,
) -> anyhow::Result<String> {
    let what = format!("{count} Ready pods in {namespace} ({selector})");
    wait_for(&what, timeout, || {
        let mut args = vec!["-n", namespace, "get", "pods", "-o", READINESS];
        if !selector.is_empty() {
            args.extend(["-l", selector]);
        }
        let pods = cluster.kubectl(&args).map_err(|e| e.to_string())?;
        let ready = pods.lines().filter(|l| l.ends_with(" True")).count();
        if ready == count && pods.lines().count() == count {
            return Ok(pods);
        }
        let mut seen = pods.clone();
        for pod in pods.lines().filter(|l| !l.ends_with(" True")) {
            let name = pod.split(' ').next().unwrap_or_default();
            for args in [
                vec!["-n", namespace, "logs", name, "--all-containers", "--tail=20"],
                vec!["-n", namespace, "describe", "pod", name],
            ] {
                seen += &cluster.kubectl(&args).unwrap_or_else(|e| e.to_string());
            }
            // An init container that keeps failing holds the pod's other containers back, and
            // `logs --all-containers` then refuses: its own last run's output says why.
            let jsonpath = "jsonpath={.spec.initContainers[*].name}";
            let init = cluster
                .kubectl(&["-n", namespace, "get", "pod", name, "-o", jsonpath])
                .unwrap_or_default();
            for container in init.split_whitespace() {
                let logs = ["-n", namespace, "logs", name, "-c", container, "--tail=20"];
                let previous = [&logs[..], &["--previous"]].concat();
                seen += &format!("\n--- init container {container}, last run:\n");
                seen += &cluster
                    .kubectl(&previous)
                    .or_else(|_| cluster.kubectl(&logs))
                    .unwrap_or_else(|e| e.to_string());
            }
        }
        Err(seen)
    })
}

/// `kubectl port-forward svc/<service> <free port>:<port>` in `namespace`, as people reach a
/// Service; the running forwarder and its `http://127.0.0.1:<port>` URL.
pub fn port_forward(
    cluster: &Cluster,
    namespace: &str,
    service: &str,
    port: u16,
) -> (Running, String) {
    let local = testkit::process::free_port();
    let running = spawn(cluster.kubectl_command().args([
        "port-forward",
        "-n",
        namespace,
        &format!("svc/{service}"),
        &format!("{local}:{port}"),
    ]));
    (running, format!("http://127.0.0.1:{local}"))
}

/// What [`install`] needs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The workspace (charts/, scripts/, target/).
    pub root: PathBuf,
    /// Where the `cloud-api` binary is (for `cloud-api admin`).
    pub bin_dir: PathBuf,
    /// The database's owner URL, on this machine's loopback.
    pub database_url: String,
    /// Helm's caches and the outbox's volume.
    pub home: PathBuf,
    /// The name the cloud knows the cluster by.
    pub cluster_name: String,
    /// `debug` or `release`: which build the images take.
    pub profile: String,
}

/// What [`install`] made: the organisation's API token, and the database's forwarder (the
/// pods reach PostgreSQL through it while this lives).
pub struct Installed {
    pub api_token: String,
    pub cluster_name: String,
    /// The outbox's PersistentVolume directory on the node.
    pub volume: PathBuf,
    _database: TcpForward,
}

fn progress(line: &str) {
    eprintln!("[product] {line}");
}

/// Builds and imports the images, then installs the cloud and the agent with Helm and the
/// seeds' shop; returns once every pod of both releases is Ready.
pub fn install(cluster: &Cluster, options: &Options) -> anyhow::Result<Installed> {
    let started = Instant::now();
    progress("building the cloud-api and cluster-agent images (scripts/images.sh)...");
    let images = Command::new("bash")
        .arg(options.root.join("scripts/images.sh"))
        .args(["--profile", &options.profile, "cloud-api", "cluster-agent"])
        .status()
        .context("running scripts/images.sh")?;
    if !images.success() {
        bail!("scripts/images.sh failed ({images}); see its output above");
    }
    for image in ["cloud-api", "cluster-agent"] {
        cluster.import_image(&options.root.join(format!("target/images/{image}.tar")))?;
    }

    // The database, reached from the pods at the node's address.
    let url = reqwest::Url::parse(&options.database_url).context("the database URL")?;
    let local: SocketAddr = format!("127.0.0.1:{}", url.port().unwrap_or(5432)).parse()?;
    let database = TcpForward::start(format!("{NODE_IP}:0").parse()?, local)?;
    let mut owner = url.clone();
    owner.set_host(Some(NODE_IP)).context("the database URL for the pods")?;
    owner
        .set_port(Some(database.addr().port()))
        .map_err(|()| anyhow::anyhow!("the database URL {url} cannot take a port"))?;
    let owner = owner.to_string();
    let serving = cloud_api::store::roles::dedicated_login_url(&owner)?;

    let org =
        crate::product::admin(&options.bin_dir, &options.database_url, &["create-org", "demo"])?;
    let api_token =
        org["api_token"].as_str().context("create-org printed no api_token")?.to_owned();
    let org_id = org["org_id"].as_str().context("create-org printed no org_id")?;
    let creds = crate::product::admin(
        &options.bin_dir,
        &options.database_url,
        &["create-cluster", "--org", org_id, &options.cluster_name],
    )?;
    let field = |name: &str| -> anyhow::Result<String> {
        Ok(creds[name]
            .as_str()
            .with_context(|| format!("create-cluster printed no {name}"))?
            .to_owned())
    };

    progress("helm install the cloud-api chart...");
    let cloud_chart = options.root.join("charts/cloud-api");
    helm(
        cluster,
        &options.root,
        &options.home,
        &[
            "install",
            CLOUD,
            &cloud_chart.to_string_lossy(),
            "--namespace",
            CLOUD_NS,
            "--create-namespace",
            "--set",
            &format!("fullnameOverride={CLOUD}"),
            "--set",
            "replicaCount=1",
            "--set",
            &format!("database.url={owner}"),
            "--set",
            &format!("database.appUrl={serving}"),
            "--set",
            "logFormat=text",
            "--wait",
            "--timeout",
            "5m",
        ],
    )?;
    ready_pods(cluster, CLOUD_NS, "", 1, Duration::from_secs(180))?;

    // The outbox's volume: a PersistentVolume on the node (no dynamic provisioner here), owned
    // by the mapper's user as a provisioner would make it.
    let volume = options.home.join("outbox-volume");
    std::fs::create_dir_all(&volume).with_context(|| format!("creating {}", volume.display()))?;
    std::os::unix::fs::chown(&volume, Some(65532), Some(65532))
        .with_context(|| format!("giving {} to the mapper's user", volume.display()))?;
    cluster.apply(&format!(
        r#"apiVersion: v1
kind: PersistentVolume
metadata:
  name: {OUTBOX_CLASS}
spec:
  storageClassName: {OUTBOX_CLASS}
  capacity: {{storage: 1Gi}}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  hostPath: {{path: {}, type: Directory}}
"#,
        volume.display()
    ))?;

    // The cloud is plain HTTP inside the cluster (TLS is the Ingress's job), which the mapper
    // refuses unless told.
    progress("helm install the cluster-agent chart with the cluster's credentials...");
    let agent_chart = options.root.join("charts/cluster-agent");
    let address = format!("http://{CLOUD}.{CLOUD_NS}.svc.cluster.local");
    helm(
        cluster,
        &options.root,
        &options.home,
        &[
            "install",
            AGENT,
            &agent_chart.to_string_lossy(),
            "--namespace",
            AGENT_NS,
            "--create-namespace",
            "--set",
            &format!("clusterName={}", options.cluster_name),
            "--set",
            &format!("cloud.address={address}"),
            "--set",
            &format!("cloud.clientId={}", field("client_id")?),
            "--set",
            &format!("cloud.clientSecret={}", field("client_secret")?),
            "--set",
            "cloud.uploadIntervalSeconds=2",
            "--set",
            "mapper.extraArgs={--allow-insecure-cloud-url}",
            "--set",
            "mapper.outbox.persistence.enabled=true",
            "--set",
            &format!("mapper.outbox.persistence.storageClass={OUTBOX_CLASS}"),
            "--set",
            "logFormat=text",
            "--wait",
            "--timeout",
            "5m",
        ],
    )?;
    ready_pods(cluster, AGENT_NS, "", 2, Duration::from_secs(180))?;

    progress("the seeds' shop as real pods...");
    cluster.apply(&shop(&cluster.versions().traffic_image))?;
    progress(&format!("installed in {:.0} s", started.elapsed().as_secs_f64()));
    Ok(Installed {
        api_token,
        cluster_name: options.cluster_name.clone(),
        volume,
        _database: database,
    })
}

/// `helm uninstall` of both releases, then the outbox's claim and volume the chart keeps.
pub fn uninstall(cluster: &Cluster, options: &Options) -> anyhow::Result<()> {
    for (release, namespace) in [(AGENT, AGENT_NS), (CLOUD, CLOUD_NS)] {
        helm(
            cluster,
            &options.root,
            &options.home,
            &["uninstall", release, "--namespace", namespace, "--wait"],
        )?;
    }
    cluster.kubectl(&["-n", AGENT_NS, "delete", "pvc", "--all", "--wait=true"])?;
    cluster.kubectl(&["delete", "pv", OUTBOX_CLASS, "--wait=true"])?;
    Ok(())
}

/// `intentmap-demo --real-cluster`: a cluster of its own with the product installed, the
/// shop's calls in the cloud's graph, and port-forwards to the cloud and the mapper. Dropping
/// it stops the port-forwards, the database's forwarder and the cluster (which removes every
/// pod, mount, link and rule), then its working directory.
pub struct OnCluster {
    _forwards: [Running; 2],
    pub installed: Installed,
    pub cloud_url: String,
    pub mapper_url: String,
    pub cluster: Cluster,
    _home: RemoveOnDrop,
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl OnCluster {
    /// Starts a cluster (building it first if needed), installs the product and waits until
    /// the cloud's graph holds every call of the shop. Call it off the async threads, inside a
    /// Tokio runtime.
    pub fn start(options: Options) -> anyhow::Result<Self> {
        let cluster = Cluster::start()?;
        std::fs::create_dir_all(&options.home)
            .with_context(|| format!("creating {}", options.home.display()))?;
        let home = RemoveOnDrop(options.home.clone());
        let installed = install(&cluster, &options)?;
        let (cloud_forward, cloud_url) = port_forward(&cluster, CLOUD_NS, CLOUD, 80);
        let (mapper_forward, mapper_url) =
            port_forward(&cluster, AGENT_NS, &format!("{AGENT}-mapper"), 9090);
        let calls: usize = SHOP_CALLS.iter().map(|(_, targets)| targets.len()).sum();
        let runtime = tokio::runtime::Handle::current();
        progress("waiting for the shop's calls in the cloud's graph...");
        wait_for("every call of the shop in the cloud's graph", Duration::from_secs(300), || {
            let edges = runtime.block_on(shop_edges(&cloud_url, &installed.api_token))?;
            if edges >= calls {
                Ok(())
            } else {
                Err(format!("{edges} of {calls}"))
            }
        })?;
        Ok(OnCluster {
            _forwards: [cloud_forward, mapper_forward],
            installed,
            cloud_url,
            mapper_url,
            cluster,
            _home: home,
        })
    }

    /// `kubectl <args>` as the cluster's admin.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.cluster.kubectl(args)
    }

    /// `intentmap list -n <the shop>` against the mapper in the cluster.
    pub fn list(&self, bin_dir: &Path) -> anyhow::Result<String> {
        let out = Command::new(bin_dir.join("intentmap"))
            .args(["--mapper-url", &self.mapper_url, "list", "-n", SHOP_NAMESPACE])
            .output()
            .context("running intentmap")?;
        if !out.status.success() {
            bail!("intentmap list failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }
}

/// How many edges between two workloads of the shop the cloud's graph holds.
async fn shop_edges(cloud: &str, token: &str) -> Result<usize, String> {
    let graph: serde_json::Value = reqwest::Client::new()
        .get(format!("{cloud}/api/v1/access-graph?namespace={SHOP_NAMESPACE}"))
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let inside = |end: &serde_json::Value| {
        end.as_str().is_some_and(|e| e.contains(&format!("/{SHOP_NAMESPACE}/")))
    };
    Ok(graph["edges"].as_array().map_or(0, |edges| {
        edges.iter().filter(|e| inside(&e["source"]) && inside(&e["target"])).count()
    }))
}
