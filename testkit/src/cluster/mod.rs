//! A real single-node Kubernetes cluster for end-to-end tests, built from registries by
//! `scripts/k8s/build.sh` and started here as root with no manual set-up.
//!
//! - [`shared`]: the cluster every test in this process shares, started on first use and torn
//!   down by its watchdog when the process exits (like [`crate::pg::server`]). Tests use their
//!   own namespaces.
//! - [`Cluster::start`]: a cluster of one's own, torn down by [`Cluster::stop`] or on drop.
//!
//! What runs, each a host process logging to `<run dir>/logs/<name>.log`: etcd, kube-apiserver
//! (`--authorization-mode=Node,RBAC`, service-account keys and issuer, certificates from a CA
//! made at start), kube-controller-manager, kube-scheduler, containerd (Debian's, with its own
//! root, state and socket), the kubelet (cgroupfs driver, cgroup v1 allowed), kube-proxy
//! (iptables), and CoreDNS as a Deployment behind the `kube-dns` Service. Pods get addresses
//! from a CNI bridge (Debian's plugins); the images (pause, CoreDNS, a busybox traffic image)
//! are built by the script and imported into containerd, so nothing is pulled.
//!
//! The run directory is `/var/lib/intentmap-test/k8s/c<pid>`. Only one cluster runs on a machine
//! at a time (kube-proxy's iptables chains are machine-wide); a start removes what a killed run
//! left behind, and says so. Everything is removed by `scripts/k8s/cleanup.sh`, which
//! [`Cluster::stop`], drop and the watchdog (a detached process that waits for this process to
//! end) all run.

mod config;
mod manifest;
mod pki;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use tokio::sync::OnceCell;

pub use manifest::{service, Workload};

pub use config::{
    API_SERVICE_IP, BRIDGE, CLUSTER_DOMAIN, DNS_SERVICE_IP, NODE_IP, NODE_IP6, NODE_NAME, POD_CIDR,
    POD_CIDR6, SERVICE_ACCOUNT_ISSUER, SERVICE_CIDR, SERVICE_CIDR6,
};

use crate::process::{free_ports, process_alive, tail};
use config::{Layout, Ports, CNI_NETWORK, NODE_LINK};
use pki::Pki;

/// Where run directories live (one per cluster, `c<pid>`).
pub const BASE_DIR: &str = "/var/lib/intentmap-test/k8s";

/// The Debian packages the node runtime comes from.
const NODE_PACKAGES: &str = "containerd runc containernetworking-plugins iptables";
/// Where Debian's containernetworking-plugins puts the plugins.
const CNI_BIN_DIR: &str = "/usr/lib/cni";
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

static SHARED: OnceCell<Cluster> = OnceCell::const_new();

/// The cluster this process's tests share, started on the first call (about 12 s once built;
/// the first start on a machine builds Kubernetes first, about 18 minutes; progress on stderr)
/// and torn down by its watchdog when the process exits. If starting fails, the error is
/// returned and the next call tries again.
pub async fn shared() -> Result<&'static Cluster> {
    SHARED
        .get_or_try_init(|| async {
            let mut cluster = tokio::task::spawn_blocking(Cluster::start)
                .await
                .context("the cluster's start panicked")??;
            // Statics are never dropped: the watchdog cleans up once the process is gone.
            cluster.stopped = true;
            Ok(cluster)
        })
        .await
}

/// The versions and images of `scripts/k8s/versions.env`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versions {
    pub kubernetes: String,
    pub etcd: String,
    pub coredns: String,
    pub pause_image: String,
    pub traffic_image: String,
    pub coredns_image: String,
}

impl Versions {
    /// Reads `scripts/k8s/versions.env` of this workspace.
    pub fn load() -> Result<Self> {
        let path = crate::need::workspace_root().join("scripts/k8s/versions.env");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    fn parse(text: &str) -> Result<Self> {
        let value = |key: &str| -> Result<String> {
            text.lines()
                .filter_map(|line| line.trim().strip_prefix(key)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_owned())
                .next()
                .with_context(|| format!("no {key}= line"))
        };
        Ok(Self {
            kubernetes: value("K8S_VERSION")?,
            etcd: value("ETCD_VERSION")?,
            coredns: value("COREDNS_VERSION")?,
            pause_image: value("PAUSE_IMAGE")?,
            traffic_image: value("TRAFFIC_IMAGE")?,
            coredns_image: value("COREDNS_IMAGE")?,
        })
    }

    /// `target/k8s/<kubernetes version>`, where `scripts/k8s/build.sh` puts binaries and images.
    pub fn build_dir(&self) -> PathBuf {
        crate::need::workspace_root().join("target/k8s").join(&self.kubernetes)
    }
}

/// Runs `scripts/k8s/build.sh` (nice'd; its progress goes to this process's stdout), which
/// builds the binaries and images once and takes seconds when they are there.
pub fn build() -> Result<Versions> {
    let versions = Versions::load()?;
    let script = crate::need::workspace_root().join("scripts/k8s/build.sh");
    let status = Command::new("nice")
        .args(["-n", "10", "bash"])
        .arg(&script)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() {
        bail!("{} failed ({status}); its output above says why", script.display());
    }
    Ok(versions)
}

/// A running cluster. Dropping it (or [`Cluster::stop`]) removes everything it made.
#[derive(Debug)]
pub struct Cluster {
    dir: PathBuf,
    bin: PathBuf,
    kubeconfig: PathBuf,
    api_url: String,
    versions: Versions,
    children: std::sync::Mutex<Vec<(String, Child)>>,
    /// How each component was started, to start it again ([`Cluster::restart_api_server`]).
    commands: std::sync::Mutex<Vec<(String, PathBuf, Vec<String>)>>,
    stopped: bool,
}

impl Cluster {
    /// Builds what is missing ([`build`]), then starts a cluster and waits until its node is
    /// Ready and CoreDNS answers. Needs root. Progress goes to stderr, one line per component
    /// with the time it took.
    pub fn start() -> Result<Self> {
        let started = Instant::now();
        if !crate::need::is_root() {
            bail!("a real cluster needs root (network links, mounts, cgroups, iptables): run as root, as CI does (sudo ./scripts/test.sh)");
        }
        check_node_packages()?;
        let versions = build()?;
        let bin = versions.build_dir().join("bin");
        for program in ["kube", "etcd", "coredns"] {
            if !bin.join(program).exists() {
                bail!(
                    "{} is missing after scripts/k8s/build.sh ran; run it by hand to see why",
                    bin.join(program).display()
                );
            }
        }
        remove_leftovers()?;
        let dir = PathBuf::from(BASE_DIR).join(format!("c{}", std::process::id()));
        std::fs::create_dir_all(dir.join("logs"))
            .with_context(|| format!("creating {}", dir.display()))?;
        // From here on, drop cleans up whatever was made, and so does the watchdog if this
        // process dies first.
        let mut cluster = Self {
            kubeconfig: dir.join("admin.kubeconfig"),
            api_url: String::new(),
            dir,
            bin,
            versions,
            children: Default::default(),
            commands: Default::default(),
            stopped: false,
        };
        for (file, text) in [
            ("intentmap-test-cluster", ""),
            ("bridge", BRIDGE),
            ("node-link", NODE_LINK),
            ("cni-network", CNI_NETWORK),
        ] {
            std::fs::write(cluster.dir.join(file), text)
                .with_context(|| format!("writing {file}"))?;
        }
        std::fs::create_dir_all(cluster.dir.join("pids"))?;
        spawn_watchdog(&cluster.dir)?;
        progress(&format!(
            "starting Kubernetes {} in {}",
            cluster.versions.kubernetes,
            cluster.dir.display()
        ));
        cluster.boot().with_context(|| {
            format!("starting the test cluster (logs in {})", cluster.dir.join("logs").display())
        })?;
        progress(&format!(
            "ready in {:.0} s; KUBECONFIG={}",
            started.elapsed().as_secs_f64(),
            cluster.kubeconfig.display()
        ));
        Ok(cluster)
    }

    /// The admin kubeconfig (user `kubernetes-admin`, group `system:masters`).
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The API server's URL, `https://10.213.0.1:<port>`.
    pub fn api_url(&self) -> &str {
        &self.api_url
    }

    /// The run directory (logs in `logs/`, certificates in `pki/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The versions it runs and the images it has.
    pub fn versions(&self) -> &Versions {
        &self.versions
    }

    /// `kubectl <args>` as the admin; its stdout, or an error with its stderr.
    pub fn kubectl(&self, args: &[&str]) -> Result<String> {
        self.kubectl_with_input(args, None)
    }

    /// Imports a Docker-archive image (`scripts/images.sh` writes them to `target/images/`)
    /// into the node's containerd, where pods with `imagePullPolicy: Never` or `IfNotPresent`
    /// find it by its name: there is no registry.
    pub fn import_image(&self, archive: &Path) -> Result<()> {
        self.ctr(&["images", "import", &archive.display().to_string()])
            .map(|_| ())
            .with_context(|| format!("importing {}", archive.display()))
    }

    /// A `kubectl` command as the admin, for what runs alongside a test (`port-forward`).
    pub fn kubectl_command(&self) -> Command {
        let mut cmd = Command::new(self.bin.join("kubectl"));
        cmd.arg("--kubeconfig").arg(&self.kubeconfig).env("PATH", PATH);
        cmd
    }

    /// Stops the API server (SIGKILL, as a crash), keeps it down for `down`, then starts it
    /// again with the same flags and waits until it is ready: every watch breaks meanwhile.
    pub fn restart_api_server(&self, down: Duration) -> Result<()> {
        const NAME: &str = "kube-apiserver";
        {
            let mut children =
                self.children.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let index = children
                .iter()
                .position(|(name, _)| name == NAME)
                .context("the API server is not running")?;
            let (_, mut child) = children.remove(index);
            let _ = child.kill();
            let _ = child.wait();
        }
        std::thread::sleep(down);
        let (program, args) = self
            .commands
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .rev()
            .find(|(name, _, _)| name == NAME)
            .map(|(_, program, args)| (program.clone(), args.clone()))
            .context("the API server's command was not recorded")?;
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.spawn(NAME, &program, &args)?;
        self.wait("kube-apiserver", Duration::from_secs(90), || {
            Ok(self.kubectl(&["get", "--raw", "/readyz"]).is_ok())
        })
    }

    /// `kubectl apply -f -` of `yaml`.
    pub fn apply(&self, yaml: &str) -> Result<String> {
        self.kubectl_with_input(&["apply", "-f", "-"], Some(yaml))
    }

    fn kubectl_with_input(&self, args: &[&str], input: Option<&str>) -> Result<String> {
        use std::io::Write as _;
        let mut child = Command::new(self.bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env("PATH", PATH)
            .stdin(if input.is_some() { Stdio::piped() } else { Stdio::null() })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
            stdin.write_all(text.as_bytes()).context("writing to kubectl")?;
        }
        let out = child.wait_with_output().context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Stops every component and removes everything the cluster made (`scripts/k8s/cleanup.sh`).
    pub fn stop(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        progress(&format!("stopping and removing {}", self.dir.display()));
        if let Err(err) = run_cleanup(&self.dir) {
            progress(&format!("{err:#}"));
        }
        for (_, child) in
            self.children.get_mut().unwrap_or_else(|poisoned| poisoned.into_inner()).iter_mut()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    // === start ===

    fn boot(&mut self) -> Result<()> {
        let [etcd_client, etcd_peer, apiserver, controller_manager, scheduler, kubelet, kubelet_healthz, proxy_healthz, proxy_metrics] =
            free_ports()?;
        let ports = Ports {
            etcd_client,
            etcd_peer,
            apiserver,
            controller_manager,
            scheduler,
            kubelet,
            kubelet_healthz,
            proxy_healthz,
            proxy_metrics,
        };
        self.api_url = format!("https://{NODE_IP}:{}", ports.apiserver);
        let layout = Layout { dir: &self.dir };

        let step = Instant::now();
        prepare_host(&self.dir)?;
        let pki = Pki::generate()?;
        pki.write(&self.dir.join("pki"))?;
        let kubeconfigs = [
            ("admin", "kubernetes-admin", &pki.admin),
            ("controller-manager", "system:kube-controller-manager", &pki.controller_manager),
            ("scheduler", "system:kube-scheduler", &pki.scheduler),
            ("kubelet", "kubelet", &pki.kubelet_client),
            ("kube-proxy", "system:kube-proxy", &pki.kube_proxy),
        ];
        for (file, user, pair) in kubeconfigs {
            self.write(
                &format!("{file}.kubeconfig"),
                &config::kubeconfig(&self.api_url, &pki.ca.cert, user, &pair.cert, &pair.key),
            )?;
        }
        done("node link, sysctls, certificates", step);

        let step = Instant::now();
        let etcd_url = format!("http://127.0.0.1:{}", ports.etcd_client);
        let peer_url = format!("http://127.0.0.1:{}", ports.etcd_peer);
        let etcd = self.bin.join("etcd");
        self.spawn(
            "etcd",
            &etcd,
            &[
                "--name=node",
                &format!("--data-dir={}", layout.path("etcd")),
                &format!("--listen-client-urls={etcd_url}"),
                &format!("--advertise-client-urls={etcd_url}"),
                &format!("--listen-peer-urls={peer_url}"),
                &format!("--initial-advertise-peer-urls={peer_url}"),
                &format!("--initial-cluster=node={peer_url}"),
                "--unsafe-no-fsync",
                "--log-level=warn",
            ],
        )?;
        self.wait("etcd", Duration::from_secs(30), || {
            Ok(http_get_ok(ports.etcd_client, "/health"))
        })?;
        done("etcd", step);

        let step = Instant::now();
        let pki_path = |name: &str| layout.path(&format!("pki/{name}"));
        self.spawn_kube(
            "kube-apiserver",
            &[
                &format!("--advertise-address={NODE_IP}"),
                &format!("--bind-address={NODE_IP}"),
                &format!("--secure-port={}", ports.apiserver),
                &format!("--etcd-servers={etcd_url}"),
                &format!("--service-cluster-ip-range={SERVICE_CIDR},{SERVICE_CIDR6}"),
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                &format!("--client-ca-file={}", pki_path("ca.crt")),
                &format!("--tls-cert-file={}", pki_path("apiserver.crt")),
                &format!("--tls-private-key-file={}", pki_path("apiserver.key")),
                &format!(
                    "--kubelet-client-certificate={}",
                    pki_path("apiserver-kubelet-client.crt")
                ),
                &format!("--kubelet-client-key={}", pki_path("apiserver-kubelet-client.key")),
                &format!("--kubelet-certificate-authority={}", pki_path("ca.crt")),
                "--kubelet-preferred-address-types=InternalIP,Hostname",
                &format!("--service-account-issuer={SERVICE_ACCOUNT_ISSUER}"),
                &format!("--service-account-key-file={}", pki_path("sa.pub")),
                &format!("--service-account-signing-key-file={}", pki_path("sa.key")),
                &format!("--cert-dir={}", layout.path("apiserver")),
                "--profiling=false",
                "--v=1",
            ],
        )?;
        self.wait("kube-apiserver", Duration::from_secs(90), || {
            Ok(self.kubectl(&["get", "--raw", "/readyz"]).is_ok())
        })?;
        done("kube-apiserver", step);

        let step = Instant::now();
        let cm_kubeconfig = layout.path("controller-manager.kubeconfig");
        self.spawn_kube(
            "kube-controller-manager",
            &[
                &format!("--kubeconfig={cm_kubeconfig}"),
                &format!("--authentication-kubeconfig={cm_kubeconfig}"),
                &format!("--authorization-kubeconfig={cm_kubeconfig}"),
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", ports.controller_manager),
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                &format!("--service-account-private-key-file={}", pki_path("sa.key")),
                &format!("--root-ca-file={}", pki_path("ca.crt")),
                &format!("--cluster-signing-cert-file={}", pki_path("ca.crt")),
                &format!("--cluster-signing-key-file={}", pki_path("ca.key")),
                &format!("--service-cluster-ip-range={SERVICE_CIDR},{SERVICE_CIDR6}"),
                "--cluster-name=intentmap-test",
                "--profiling=false",
                "--v=1",
            ],
        )?;
        let sched_kubeconfig = layout.path("scheduler.kubeconfig");
        self.spawn_kube(
            "kube-scheduler",
            &[
                &format!("--kubeconfig={sched_kubeconfig}"),
                &format!("--authentication-kubeconfig={sched_kubeconfig}"),
                &format!("--authorization-kubeconfig={sched_kubeconfig}"),
                "--bind-address=127.0.0.1",
                &format!("--secure-port={}", ports.scheduler),
                "--leader-elect=false",
                "--profiling=false",
                "--v=1",
            ],
        )?;
        done("kube-controller-manager, kube-scheduler (started)", step);

        let step = Instant::now();
        self.write("cni/net.d/10-imk8s.conflist", &config::cni_conflist(&layout))?;
        self.write(
            "containerd.toml",
            &config::containerd_toml(&layout, &self.versions.pause_image, CNI_BIN_DIR),
        )?;
        let containerd =
            crate::need::find_command("containerd").context("containerd is not installed")?;
        self.spawn(
            "containerd",
            &containerd,
            &["--config", &layout.path("containerd.toml"), "--log-level", "warn"],
        )?;
        let socket = layout.containerd_socket();
        self.wait("containerd", Duration::from_secs(30), || {
            Ok(Path::new(&socket).exists() && self.ctr(&["version"]).is_ok())
        })?;
        let images = self.versions.build_dir().join("images");
        for image in ["pause", "coredns", "traffic"] {
            let tar = images.join(format!("{image}.tar"));
            self.ctr(&["images", "import", &tar.display().to_string()])
                .with_context(|| format!("importing {}", tar.display()))?;
        }
        done("containerd, images imported", step);

        let step = Instant::now();
        self.write("kubelet.yaml", &config::kubelet_yaml(&layout, &ports))?;
        self.write(
            "resolv.conf",
            "# the test cluster forwards no names: this machine has no outside DNS\n",
        )?;
        self.spawn_kube(
            "kubelet",
            &[
                &format!("--config={}", layout.path("kubelet.yaml")),
                &format!("--kubeconfig={}", layout.path("kubelet.kubeconfig")),
                &format!("--root-dir={}", layout.path("kubelet")),
                &format!("--cert-dir={}", layout.path("kubelet/pki")),
                &format!("--hostname-override={NODE_NAME}"),
                &format!("--node-ip={NODE_IP},{NODE_IP6}"),
                "--v=1",
            ],
        )?;
        self.wait("the node to be Ready", Duration::from_secs(120), || {
            let ready = self.kubectl(&[
                "get",
                "node",
                NODE_NAME,
                "-o",
                r#"jsonpath={.status.conditions[?(@.type=="Ready")].status}"#,
            ]);
            Ok(ready.is_ok_and(|status| status.trim() == "True"))
        })?;
        done("kubelet (node Ready)", step);

        let step = Instant::now();
        self.write("kube-proxy.yaml", &config::kube_proxy_yaml(&layout, &ports))?;
        self.spawn_kube(
            "kube-proxy",
            &[&format!("--config={}", layout.path("kube-proxy.yaml")), "--v=1"],
        )?;
        self.wait("kube-proxy", Duration::from_secs(60), || {
            Ok(http_get_ok(ports.proxy_healthz, "/healthz"))
        })?;
        done("kube-proxy", step);

        let step = Instant::now();
        self.apply(&config::coredns_manifest(&self.versions.coredns_image))
            .context("installing CoreDNS")?;
        self.wait("CoreDNS to be ready", Duration::from_secs(120), || {
            let ready = self.kubectl(&[
                "-n",
                "kube-system",
                "get",
                "deployment",
                "coredns",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ]);
            Ok(ready.is_ok_and(|n| n.trim() == "1"))
        })?;
        // Pods can be created in a namespace once its default ServiceAccount exists.
        self.wait("the default ServiceAccount", Duration::from_secs(60), || {
            Ok(self.kubectl(&["get", "serviceaccount", "default"]).is_ok())
        })?;
        done("CoreDNS", step);
        Ok(())
    }

    fn write(&self, relative: &str, text: &str) -> Result<()> {
        let path = self.dir.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }

    fn ctr(&self, args: &[&str]) -> Result<String> {
        let out = Command::new("ctr")
            .args([
                "--address",
                &Layout { dir: &self.dir }.containerd_socket(),
                "--namespace",
                "k8s.io",
            ])
            .args(args)
            .env("PATH", PATH)
            .stdin(Stdio::null())
            .output()
            .context("running ctr (Debian's containerd package)")?;
        if !out.status.success() {
            bail!(
                "ctr {} failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn spawn_kube(&self, name: &str, args: &[&str]) -> Result<()> {
        let program = self.bin.join(name);
        self.spawn(name, &program, args)
    }

    /// Starts a component with its output in `logs/<name>.log` and its pid in `pids/<name>.pid`
    /// (which cleanup.sh reads).
    fn spawn(&self, name: &str, program: &Path, args: &[&str]) -> Result<()> {
        let log_path = self.dir.join("logs").join(format!("{name}.log"));
        // Appended to: a restarted component keeps its earlier log.
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        self.commands.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).push((
            name.to_owned(),
            program.to_owned(),
            args.iter().map(|a| (*a).to_owned()).collect(),
        ));
        let child = Command::new(program)
            .args(args)
            .env("PATH", format!("{}:{PATH}", self.bin.display()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(&self.dir)
            .spawn()
            .with_context(|| format!("starting {} ({})", name, program.display()))?;
        std::fs::write(self.dir.join("pids").join(format!("{name}.pid")), child.id().to_string())?;
        self.children
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((name.to_owned(), child));
        Ok(())
    }

    /// Polls `ready` every 250 ms until it says yes; fails early, with the end of its log,
    /// when a component has exited.
    fn wait(
        &self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut() -> Result<bool>,
    ) -> Result<()> {
        let started = Instant::now();
        loop {
            if ready()? {
                return Ok(());
            }
            let mut children =
                self.children.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            for (name, child) in children.iter_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    let log = self.dir.join("logs").join(format!("{name}.log"));
                    bail!(
                        "{name} exited ({status}) while waiting for {what}; the end of {}:\n{}",
                        log.display(),
                        tail(&log, 25)
                    );
                }
            }
            if started.elapsed() > timeout {
                let logs: Vec<String> = children
                    .iter()
                    .map(|(name, _)| {
                        format!(
                            "--- {name}:\n{}",
                            tail(&self.dir.join("logs").join(format!("{name}.log")), 8)
                        )
                    })
                    .collect();
                bail!("timed out after {timeout:?} waiting for {what}; the end of each component's log:\n{}", logs.join("\n"));
            }
            drop(children);
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_now();
    }
}

// === the host ===

fn check_node_packages() -> Result<()> {
    let mut missing: Vec<String> = [
        "containerd",
        "containerd-shim-runc-v2",
        "runc",
        "ctr",
        "iptables",
        "iptables-save",
        "iptables-restore",
        "ip",
    ]
    .into_iter()
    .filter(|p| crate::need::find_command(p).is_none())
    .map(str::to_owned)
    .collect();
    missing.extend(
        ["bridge", "host-local", "portmap", "loopback"]
            .into_iter()
            .filter(|p| !Path::new(CNI_BIN_DIR).join(p).exists())
            .map(|p| format!("{CNI_BIN_DIR}/{p}")),
    );
    if !missing.is_empty() {
        bail!("the node runtime is not installed (missing {}): run scripts/setup.sh, or apt-get install {NODE_PACKAGES}", missing.join(", "));
    }
    Ok(())
}

/// The node's own link with [`NODE_IP`] and [`NODE_IP6`] (a bridge with no ports: this kernel
/// has no dummy links), forwarding, and bridged traffic through iptables and ip6tables (so a pod
/// reaches a Service whose endpoint is on the same bridge).
fn prepare_host(dir: &Path) -> Result<()> {
    run("ip", &["link", "add", NODE_LINK, "type", "bridge"])?;
    run("ip", &["addr", "add", &format!("{NODE_IP}/32"), "dev", NODE_LINK])?;
    run("ip", &["-6", "addr", "add", &format!("{NODE_IP6}/128"), "dev", NODE_LINK, "nodad"])?;
    run("ip", &["link", "set", NODE_LINK, "up"])?;
    std::fs::write("/proc/sys/net/ipv4/ip_forward", "1").context("turning on IPv4 forwarding")?;
    // IPv6 forwarding also turns off router advertisements on the host's links: cleanup.sh puts
    // back what it was.
    let forwarding6 = Path::new("/proc/sys/net/ipv6/conf/all/forwarding");
    let before = std::fs::read_to_string(forwarding6)
        .context("reading net.ipv6.conf.all.forwarding (is IPv6 off in this kernel?)")?;
    std::fs::write(dir.join("ipv6-forwarding"), before.trim())
        .context("recording net.ipv6.conf.all.forwarding")?;
    std::fs::write(forwarding6, "1").context("turning on IPv6 forwarding")?;
    for family in ["iptables", "ip6tables"] {
        let bridged = PathBuf::from(format!("/proc/sys/net/bridge/bridge-nf-call-{family}"));
        if !bridged.exists() {
            bail!("{} is missing: this kernel lacks bridge netfilter (br_netfilter), which kube-proxy needs for pods to reach Services", bridged.display());
        }
        std::fs::write(&bridged, "1")
            .with_context(|| format!("turning on bridge-nf-call-{family}"))?;
    }
    Ok(())
}

/// Removes what clusters of processes that are gone left behind, and refuses to start beside a
/// live one.
fn remove_leftovers() -> Result<()> {
    let Ok(entries) = std::fs::read_dir(BASE_DIR) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix('c').and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let dir = entry.path();
        if pid != std::process::id() && process_alive(pid) {
            bail!(
                "another test cluster is running (process {pid}, {}); only one runs on a machine at a time since they share iptables chains: \
                 wait for it to end, or stop that process and run scripts/k8s/cleanup.sh {}",
                dir.display(),
                dir.display()
            );
        }
        // Its watchdog may be at it already; give it a moment, then do it ourselves.
        let deadline = Instant::now() + Duration::from_secs(20);
        while dir.exists() && Instant::now() < deadline && pid != std::process::id() {
            std::thread::sleep(Duration::from_millis(250));
        }
        if dir.exists() {
            progress(&format!("removing what an earlier run left behind: {}", dir.display()));
            run_cleanup(&dir)?;
        }
    }
    // Links left without a run directory (a run directory removed by hand).
    for link in [BRIDGE, NODE_LINK] {
        if Path::new("/sys/class/net").join(link).exists() {
            progress(&format!("removing the leftover link {link}"));
            run("ip", &["link", "del", link])?;
        }
    }
    Ok(())
}

fn run_cleanup(dir: &Path) -> Result<()> {
    let script = crate::need::workspace_root().join("scripts/k8s/cleanup.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg(dir)
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("running {}", script.display()))?;
    if !status.success() || dir.exists() {
        bail!(
            "{} {} did not remove everything ({status}); run it again by hand to see why",
            script.display(),
            dir.display()
        );
    }
    Ok(())
}

/// A detached process that, once this process is gone, runs cleanup.sh on `dir`
/// ([`crate::process::spawn_watchdog`]).
fn spawn_watchdog(dir: &Path) -> Result<()> {
    let cleanup = crate::need::workspace_root().join("scripts/k8s/cleanup.sh");
    crate::process::spawn_watchdog(
        "testkit-k8s-watchdog",
        dir,
        r#"exec bash "$TK_K8S_CLEANUP" "$TK_DIR""#,
        &[("TK_K8S_CLEANUP", cleanup.as_os_str()), ("PATH", PATH.as_ref())],
        "the test cluster",
    )
}

// === small helpers ===

fn run(program: &str, args: &[&str]) -> Result<()> {
    let out = Command::new(program)
        .args(args)
        .env("PATH", PATH)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Whether a plain-HTTP `GET path` on 127.0.0.1:`port` answers 200.
fn http_get_ok(port: u16, path: &str) -> bool {
    use std::io::{Read as _, Write as _};
    let Ok(mut stream) = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
}

/// A line on stderr, written to the file descriptor itself so that the test harness's output
/// capture does not hold it back: a cluster's start is worth seeing while it happens.
fn progress(message: &str) {
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr().lock(), "[cluster] {message}");
}

fn done(what: &str, since: Instant) {
    progress(&format!("{what}: {:.1} s", since.elapsed().as_secs_f64()));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_versions_file() {
        let v = Versions::parse(
            "# comment\nK8S_VERSION=v1.37.2\nETCD_VERSION=v3.7.3\nCOREDNS_VERSION=v1.14.6\nPAUSE_IMAGE=a/p:1\nTRAFFIC_IMAGE=a/t:1\nCOREDNS_IMAGE=a/c:1\n",
        )
        .unwrap();
        assert_eq!(v.kubernetes, "v1.37.2");
        assert_eq!(v.traffic_image, "a/t:1");
        assert!(Versions::parse("K8S_VERSION=v1\n").is_err());
        let ours = Versions::load().unwrap();
        assert!(ours.build_dir().ends_with(format!("target/k8s/{}", ours.kubernetes)));
    }

    #[test]
    fn http_checks_fail_on_a_closed_port() {
        let [a, b] = free_ports().unwrap();
        assert_ne!(a, b);
        assert!(!http_get_ok(a, "/health"));
    }
}
