//! The proxy: terminates TLS for AWS host names (SNI on the TLS port, or inside an HTTP CONNECT
//! tunnel for clients that use `HTTPS_PROXY`), reads what each request is ([`crate::analyse`]),
//! forwards it over verified TLS to the real endpoint on port 443 and records the call for the
//! mapper.
//!
//! Bodies stream through unchanged. The only body ever held in memory is a small form or JSON
//! body (at most [`crate::analyse::MAX_BODY_PEEK`] bytes, by `Content-Length`) whose table,
//! queue or action names tell the operation and resource; it is forwarded as it came and never
//! stored. Non-AWS hosts are refused unless configured as pass-through (tunnelled, not
//! intercepted).
//!
//! Client connections are bounded: at most `--max-connections` at once (over it a new one is
//! closed at once and counted), a connection with no request in flight for
//! `--idle-timeout-secs` is closed (HTTP/2 with a GOAWAY), HTTP/2 peers that stop answering
//! PINGs are dropped, and a pass-through tunnel that moves no byte for the idle timeout is closed.

mod connection;
mod forward;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use observation_ship::Outgoing;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::ca::SharedCa;

pub use forward::{upstream_authority, AuthorityError};

#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Where to accept TLS for AWS host names (the DNS server sends pods here); the SNI picks the host.
    #[arg(long = "tls-listen", env = "AWS_PROXY_TLS_LISTEN", default_value = "0.0.0.0:443")]
    pub tls_listen: SocketAddr,
    /// Where to serve HTTP CONNECT, for clients that set `HTTPS_PROXY`.
    #[arg(
        long = "connect-listen",
        env = "AWS_PROXY_CONNECT_LISTEN",
        default_value = "0.0.0.0:3128"
    )]
    pub connect_listen: SocketAddr,
    /// The AWS account id to put in ARNs whose account the request does not reveal (else `*`).
    #[arg(long = "account-id", env = "AWS_ACCOUNT_ID")]
    pub account_id: Option<String>,
    /// An extra CA (PEM) to trust for upstream endpoints, besides the public web roots.
    #[arg(long = "upstream-ca-file", env = "AWS_PROXY_UPSTREAM_CA_FILE")]
    pub upstream_ca_file: Option<PathBuf>,
    /// `SUFFIX=HOST:PORT`: connect to this address for hosts ending in SUFFIX (VPC endpoints, tests).
    /// TLS still verifies the original host name.
    #[arg(long = "connect-to", env = "AWS_PROXY_CONNECT_TO", value_delimiter = ',')]
    pub connect_to: Vec<String>,
    /// Host suffixes that CONNECT may tunnel to without interception (nothing else non-AWS is forwarded).
    #[arg(long = "passthrough-host", env = "AWS_PROXY_PASSTHROUGH_HOSTS", value_delimiter = ',')]
    pub passthrough_hosts: Vec<String>,
    /// How long a client may take to finish its TLS handshake or send request headers (an
    /// HTTP/1.1 connection waiting for its next request is closed after this too).
    #[arg(
        long = "client-timeout-secs",
        env = "AWS_PROXY_CLIENT_TIMEOUT_SECS",
        default_value_t = 10
    )]
    pub client_timeout_secs: u64,
    /// The largest request head accepted (HTTP/1.1 buffer, HTTP/2 header list), in bytes.
    #[arg(long = "max-header-bytes", env = "AWS_PROXY_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
    /// A client connection with no request in flight for this long is closed (HTTP/2: GOAWAY);
    /// so is a pass-through tunnel that moves no byte for this long.
    #[arg(long = "idle-timeout-secs", env = "AWS_PROXY_IDLE_TIMEOUT_SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_secs: u64,
    /// HTTP/2 clients are sent a PING this often (0: never)...
    #[arg(
        long = "keep-alive-interval-secs",
        env = "AWS_PROXY_KEEP_ALIVE_INTERVAL_SECS",
        default_value_t = 30
    )]
    pub keep_alive_interval_secs: u64,
    /// ...and dropped when one is not answered within this.
    #[arg(long = "keep-alive-timeout-secs", env = "AWS_PROXY_KEEP_ALIVE_TIMEOUT_SECS", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub keep_alive_timeout_secs: u64,
    /// Client connections open at once (TLS and CONNECT together, tunnels included); past it a
    /// new connection is closed at once and counted.
    #[arg(long = "max-connections", env = "AWS_PROXY_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
}

impl ProxyArgs {
    /// Defaults with both listeners on loopback, ephemeral ports (tests, benchmarks).
    pub fn loopback() -> Self {
        Self {
            tls_listen: "127.0.0.1:0".parse().expect("a socket address"),
            connect_listen: "127.0.0.1:0".parse().expect("a socket address"),
            account_id: None,
            upstream_ca_file: None,
            connect_to: Vec::new(),
            passthrough_hosts: Vec::new(),
            client_timeout_secs: 10,
            max_header_bytes: 64 * 1024,
            idle_timeout_secs: 60,
            keep_alive_interval_secs: 30,
            keep_alive_timeout_secs: 20,
            max_connections: 4096,
        }
    }
}

// === Stats ===

/// Counters, exported as metrics.
#[derive(Debug, Default)]
pub struct ProxyStats {
    pub connections: AtomicU64,
    pub requests: AtomicU64,
    /// Calls recorded for the mapper.
    pub recorded: AtomicU64,
    /// Forwarded requests whose service could not be told.
    pub unknown_service: AtomicU64,
    /// TLS handshakes that failed or timed out (garbage, clients that stall, unknown CA).
    pub handshake_failures: AtomicU64,
    /// Connections or requests refused because the host is not AWS (nor pass-through).
    pub refused_hosts: AtomicU64,
    /// Requests refused because their Host carries user information or a port other than 443.
    pub bad_authorities: AtomicU64,
    /// Requests whose upstream could not be reached (answered 502).
    pub upstream_errors: AtomicU64,
    pub tunnels: AtomicU64,
    /// Connections closed at once because `--max-connections` were open.
    pub refused_connections: AtomicU64,
    /// Connections and tunnels closed for being idle.
    pub idle_closed: AtomicU64,
}

/// A snapshot of [`ProxyStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStatsSnapshot {
    pub connections: u64,
    pub requests: u64,
    pub recorded: u64,
    pub unknown_service: u64,
    pub handshake_failures: u64,
    pub refused_hosts: u64,
    pub bad_authorities: u64,
    pub upstream_errors: u64,
    pub tunnels: u64,
    pub refused_connections: u64,
    pub idle_closed: u64,
}

impl ProxyStats {
    pub fn snapshot(&self) -> ProxyStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ProxyStatsSnapshot {
            connections: get(&self.connections),
            requests: get(&self.requests),
            recorded: get(&self.recorded),
            unknown_service: get(&self.unknown_service),
            handshake_failures: get(&self.handshake_failures),
            refused_hosts: get(&self.refused_hosts),
            bad_authorities: get(&self.bad_authorities),
            upstream_errors: get(&self.upstream_errors),
            tunnels: get(&self.tunnels),
            refused_connections: get(&self.refused_connections),
            idle_closed: get(&self.idle_closed),
        }
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

// === Proxy ===

/// What every connection shares.
struct Shared {
    ca: SharedCa,
    upstream: upstream::Upstream,
    sink: Outgoing,
    account: Option<String>,
    passthrough: Vec<String>,
    client_timeout: Duration,
    max_header_bytes: usize,
    idle_timeout: Duration,
    keep_alive_interval: Option<Duration>,
    keep_alive_timeout: Duration,
    stats: Arc<ProxyStats>,
}

/// A running proxy.
pub struct Proxy {
    tls_addr: SocketAddr,
    connect_addr: SocketAddr,
    stats: Arc<ProxyStats>,
    stop: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Proxy {
    /// Binds both listeners and starts serving. Calls are pushed to `sink` as
    /// [`observation_ship::Observed::Aws`]. `ca` is the CA to issue leaves from (a
    /// [`SharedCa`] follows rotation).
    pub async fn start(
        args: &ProxyArgs,
        ca: impl Into<SharedCa>,
        sink: Outgoing,
    ) -> anyhow::Result<Proxy> {
        let connect_to = Arc::new(upstream::parse_connect_to(&args.connect_to)?);
        let upstream = upstream::client(args.upstream_ca_file.as_deref(), connect_to)?;
        let stats = Arc::new(ProxyStats::default());
        let shared = Arc::new(Shared {
            ca: ca.into(),
            upstream,
            sink,
            account: args.account_id.clone().filter(|a| !a.trim().is_empty()),
            passthrough: args
                .passthrough_hosts
                .iter()
                .map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase())
                .filter(|h| !h.is_empty())
                .collect(),
            client_timeout: Duration::from_secs(args.client_timeout_secs.max(1)),
            max_header_bytes: args.max_header_bytes.max(8192),
            idle_timeout: Duration::from_secs(args.idle_timeout_secs.max(1)),
            keep_alive_interval: (args.keep_alive_interval_secs > 0)
                .then(|| Duration::from_secs(args.keep_alive_interval_secs)),
            keep_alive_timeout: Duration::from_secs(args.keep_alive_timeout_secs.max(1)),
            stats: stats.clone(),
        });
        let tls = bind(args.tls_listen, "TLS").await?;
        let connect = bind(args.connect_listen, "CONNECT").await?;
        let (tls_addr, connect_addr) = (tls.local_addr()?, connect.local_addr()?);
        let (stop, stopped) = watch::channel(false);
        let permits = Arc::new(Semaphore::new(
            usize::try_from(args.max_connections)
                .unwrap_or(usize::MAX)
                .clamp(1, Semaphore::MAX_PERMITS),
        ));
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(tls, shared.clone(), permits.clone(), stopped.clone(), Mode::Tls));
        tasks.spawn(accept_loop(connect, shared, permits, stopped, Mode::Connect));
        info!(tls = %tls_addr, connect = %connect_addr, max_connections = args.max_connections, "aws-proxy listening");
        Ok(Proxy { tls_addr, connect_addr, stats, stop, tasks })
    }

    pub fn tls_addr(&self) -> SocketAddr {
        self.tls_addr
    }

    pub fn connect_addr(&self) -> SocketAddr {
        self.connect_addr
    }

    pub fn stats(&self) -> Arc<ProxyStats> {
        self.stats.clone()
    }

    /// Stops accepting; connections in flight finish on their own.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.tasks.join_next().await.is_some() {}
    }
}

async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.with_context(|| {
        format!("binding the {what} listener on {addr} (ports below 1024 need root or CAP_NET_BIND_SERVICE; pick another with the listen flags)")
    })
}

#[derive(Clone, Copy)]
enum Mode {
    Tls,
    Connect,
}

async fn accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    mut stopped: watch::Receiver<bool>,
    mode: Mode,
) {
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    warn!(error = %e, "accept failed; retrying");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => return,
        };
        // Over the cap the connection is closed at once: the client fails fast (and may try
        // another replica) instead of waiting in the listen queue.
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            count(&shared.stats.refused_connections);
            debug!(client = %peer, "closed a connection: --max-connections are open");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        count(&shared.stats.connections);
        let shared = shared.clone();
        let permit = Arc::new(permit);
        tokio::spawn(async move {
            match mode {
                Mode::Tls => connection::intercept(stream, peer.ip(), None, shared, permit).await,
                Mode::Connect => connection::serve_connect(stream, peer.ip(), shared, permit).await,
            }
        });
    }
}
