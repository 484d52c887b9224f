//! The proxy: terminates TLS for AWS host names (SNI on the TLS port, or inside an HTTP CONNECT
//! tunnel for clients that use `HTTPS_PROXY`), reads what each request is ([`crate::analyse`]),
//! forwards it over verified TLS to the real endpoint and records the call for the mapper.
//!
//! Bodies stream through unchanged. The only body ever held in memory is a small form or JSON
//! body (at most [`analyse::MAX_BODY_PEEK`] bytes, by `Content-Length`) whose table, queue or
//! action names tell the operation and resource; it is forwarded as it came and never stored.
//! Non-AWS hosts are refused unless configured as pass-through (tunnelled, not intercepted).

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt as _, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use model::observation::AwsOperation;
use observation_ship::{Observed, Outgoing};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::analyse::{self, RequestParts};
use crate::ca::CertificateAuthority;
use crate::{is_aws_host, strip_port};

type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
type Upstream = Client<hyper_rustls::HttpsConnector<HttpConnector<OverrideResolver>>, Body>;

#[derive(clap::Args, Debug, Clone)]
pub struct ProxyArgs {
    /// Where to accept TLS for AWS host names (the DNS server sends pods here); the SNI picks the host.
    #[arg(long = "tls-listen", env = "AWS_PROXY_TLS_LISTEN", default_value = "0.0.0.0:443")]
    pub tls_listen: SocketAddr,
    /// Where to serve HTTP CONNECT, for clients that set `HTTPS_PROXY`.
    #[arg(long = "connect-listen", env = "AWS_PROXY_CONNECT_LISTEN", default_value = "0.0.0.0:3128")]
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
    /// How long a client may take to finish its TLS handshake or send request headers.
    #[arg(long = "client-timeout-secs", env = "AWS_PROXY_CLIENT_TIMEOUT_SECS", default_value_t = 10)]
    pub client_timeout_secs: u64,
    /// The largest request head accepted (HTTP/1.1 buffer, HTTP/2 header list), in bytes.
    #[arg(long = "max-header-bytes", env = "AWS_PROXY_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,
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
        }
    }
}

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
    /// Requests whose upstream could not be reached (answered 502).
    pub upstream_errors: AtomicU64,
    pub tunnels: AtomicU64,
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
    pub upstream_errors: u64,
    pub tunnels: u64,
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
            upstream_errors: get(&self.upstream_errors),
            tunnels: get(&self.tunnels),
        }
    }
}

struct Shared {
    ca: Arc<CertificateAuthority>,
    upstream: Upstream,
    sink: Outgoing,
    account: Option<String>,
    passthrough: Vec<String>,
    client_timeout: Duration,
    max_header_bytes: usize,
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
    /// Binds both listeners and starts serving. Calls are pushed to `sink` as [`Observed::Aws`].
    pub async fn start(args: &ProxyArgs, ca: Arc<CertificateAuthority>, sink: Outgoing) -> anyhow::Result<Proxy> {
        let connect_to = Arc::new(parse_connect_to(&args.connect_to)?);
        let upstream = upstream_client(args.upstream_ca_file.as_deref(), connect_to)?;
        let stats = Arc::new(ProxyStats::default());
        let shared = Arc::new(Shared {
            ca,
            upstream,
            sink,
            account: args.account_id.clone().filter(|a| !a.trim().is_empty()),
            passthrough: args.passthrough_hosts.iter().map(|h| h.trim().trim_start_matches('.').to_ascii_lowercase()).filter(|h| !h.is_empty()).collect(),
            client_timeout: Duration::from_secs(args.client_timeout_secs.max(1)),
            max_header_bytes: args.max_header_bytes.max(8192),
            stats: stats.clone(),
        });
        let tls = bind(args.tls_listen, "TLS").await?;
        let connect = bind(args.connect_listen, "CONNECT").await?;
        let (tls_addr, connect_addr) = (tls.local_addr()?, connect.local_addr()?);
        let (stop, stopped) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(accept_loop(tls, shared.clone(), stopped.clone(), Mode::Tls));
        tasks.spawn(accept_loop(connect, shared, stopped, Mode::Connect));
        info!(tls = %tls_addr, connect = %connect_addr, "aws-proxy listening");
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

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>, mut stopped: watch::Receiver<bool>, mode: Mode) {
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
        let _ = stream.set_nodelay(true);
        shared.stats.connections.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        tokio::spawn(async move {
            match mode {
                Mode::Tls => intercept(stream, peer.ip(), None, shared).await,
                Mode::Connect => serve_connect(stream, peer.ip(), shared).await,
            }
        });
    }
}

/// TLS-terminates `io` for an AWS host (from SNI, else `default_host`) and serves HTTP on it.
async fn intercept<IO>(io: IO, client_ip: IpAddr, default_host: Option<String>, shared: Arc<Shared>)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = async {
        let start =
            tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io).await.map_err(|e| format!("reading the ClientHello: {e}"))?;
        let host = start.client_hello().server_name().map(str::to_owned).or(default_host).ok_or("the client sent no SNI")?;
        if !is_aws_host(&host) {
            shared.stats.refused_hosts.fetch_add(1, Ordering::Relaxed);
            return Err(format!("{host} is not an AWS host"));
        }
        let config = shared.ca.server_config(&host).map_err(|e| format!("issuing a certificate for {host}: {e:#}"))?;
        let tls = start.into_stream(config).await.map_err(|e| format!("TLS handshake for {host}: {e}"))?;
        Ok::<_, String>((tls, host))
    };
    let (tls, host) = match tokio::time::timeout(shared.client_timeout, handshake).await {
        Ok(Ok(done)) => done,
        Ok(Err(reason)) => {
            shared.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
            debug!(client = %client_ip, reason, "dropped a connection before TLS was up");
            return;
        }
        Err(_) => {
            shared.stats.handshake_failures.fetch_add(1, Ordering::Relaxed);
            debug!(client = %client_ip, "dropped a client that did not finish its TLS handshake in time");
            return;
        }
    };
    let service_shared = shared.clone();
    let service = hyper::service::service_fn(move |req| {
        let (shared, host) = (service_shared.clone(), host.clone());
        async move { Ok::<_, Infallible>(forward(req, client_ip, &host, &shared).await) }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(shared.client_timeout).max_buf_size(shared.max_header_bytes);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(shared.max_header_bytes as u32);
    if let Err(e) = builder.serve_connection(TokioIo::new(tls), service).await {
        debug!(client = %client_ip, error = %e, "connection ended with an error");
    }
}

/// The CONNECT listener: plain HTTP/1.1 whose only method is CONNECT.
async fn serve_connect(stream: TcpStream, client_ip: IpAddr, shared: Arc<Shared>) {
    let service_shared = shared.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = service_shared.clone();
        async move { Ok::<_, Infallible>(connect(req, client_ip, shared)) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.client_timeout)
        .max_buf_size(shared.max_header_bytes)
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    if let Err(e) = conn.await {
        debug!(client = %client_ip, error = %e, "CONNECT connection ended with an error");
    }
}

fn connect(req: Request<Incoming>, client_ip: IpAddr, shared: Arc<Shared>) -> Response<Body> {
    if req.method() != Method::CONNECT {
        return plain(StatusCode::METHOD_NOT_ALLOWED, "aws-proxy only tunnels HTTPS: use it as HTTPS_PROXY (CONNECT host:443)\n");
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return plain(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n");
    };
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(443);
    if is_aws_host(&host) {
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => intercept(TokioIo::new(upgraded), client_ip, Some(host), shared).await,
                Err(e) => debug!(client = %client_ip, error = %e, "CONNECT upgrade failed"),
            }
        });
        return Response::new(empty());
    }
    if shared.passthrough.iter().any(|suffix| host == *suffix || host.ends_with(&format!(".{suffix}"))) {
        shared.stats.tunnels.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => return debug!(error = %e, "CONNECT upgrade failed"),
            };
            match TcpStream::connect((host.as_str(), port)).await {
                Ok(mut upstream) => {
                    let _ = tokio::io::copy_bidirectional(&mut TokioIo::new(upgraded), &mut upstream).await;
                }
                Err(e) => debug!(host, error = %e, "pass-through tunnel could not connect"),
            }
        });
        return Response::new(empty());
    }
    shared.stats.refused_hosts.fetch_add(1, Ordering::Relaxed);
    debug!(client = %client_ip, host, "refused a CONNECT to a host that is not AWS");
    plain(StatusCode::FORBIDDEN, &format!("aws-proxy forwards only AWS hosts; {host} is not one (add it with --passthrough-host to tunnel it)\n"))
}

/// Forwards one request to `tls_host`'s real endpoint and records what it was.
async fn forward(req: Request<Incoming>, client_ip: IpAddr, tls_host: &str, shared: &Shared) -> Response<Body> {
    shared.stats.requests.fetch_add(1, Ordering::Relaxed);
    let (mut parts, body) = req.into_parts();
    let authority = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .unwrap_or_else(|| tls_host.to_owned());
    if !is_aws_host(&authority) {
        shared.stats.refused_hosts.fetch_add(1, Ordering::Relaxed);
        return plain(StatusCode::MISDIRECTED_REQUEST, &format!("aws-proxy forwards only AWS hosts; Host {authority} is not one\n"));
    }
    let path_and_query = parts.uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_else(|| "/".to_owned());
    let peeked = match peek_body(&parts.method, &parts.headers, body, shared.client_timeout).await {
        Ok(peeked) => peeked,
        Err(response) => return response,
    };
    let call = {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query.as_str(), None),
        };
        let view = RequestParts {
            method: &parts.method,
            host: &authority,
            path,
            query,
            headers: &parts.headers,
            body: match &peeked {
                Peeked::Whole(bytes) => Some(bytes.as_ref()),
                Peeked::Stream(_) => None,
            },
        };
        analyse::analyse(&view, shared.account.as_deref())
    };
    record(&call, client_ip, shared);

    let uri = match Uri::builder().scheme("https").authority(strip_default_port(&authority)).path_and_query(path_and_query.as_str()).build() {
        Ok(uri) => uri,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("cannot forward to {authority}{path_and_query}: {e}\n")),
    };
    parts.uri = uri;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.remove(header::EXPECT);
    if parts.version == http::Version::HTTP_2 && !parts.headers.contains_key(header::HOST) {
        if let Ok(value) = HeaderValue::from_str(&authority) {
            parts.headers.insert(header::HOST, value);
        }
    }
    parts.version = http::Version::HTTP_11;
    let body = match peeked {
        Peeked::Whole(bytes) => Full::new(bytes).map_err(|never| match never {}).boxed(),
        Peeked::Stream(incoming) => incoming.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).boxed(),
    };
    match shared.upstream.request(Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>).boxed())
        }
        Err(e) => {
            shared.stats.upstream_errors.fetch_add(1, Ordering::Relaxed);
            // `{:#}` prints the error with its causes, "outer: inner: ...".
            let reason = format!("{:#}", anyhow::Error::new(e));
            warn!(host = %authority, error = %reason, "could not reach the AWS endpoint");
            plain(StatusCode::BAD_GATEWAY, &format!("aws-proxy could not reach {authority}: {reason}\n"))
        }
    }
}

enum Peeked {
    Whole(Bytes),
    Stream(Incoming),
}

/// Reads a small identifying body whole (see the module doc); anything else streams.
async fn peek_body(method: &Method, headers: &HeaderMap, body: Incoming, timeout: Duration) -> Result<Peeked, Response<Body>> {
    let length = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    let small = matches!(length, Some(n) if n <= analyse::MAX_BODY_PEEK);
    if !small || !analyse::wants_body(method, headers) {
        return Ok(Peeked::Stream(body));
    }
    match tokio::time::timeout(timeout, body.collect()).await {
        Ok(Ok(collected)) => Ok(Peeked::Whole(collected.to_bytes())),
        Ok(Err(e)) => Err(plain(StatusCode::BAD_REQUEST, &format!("the request body broke off: {e}\n"))),
        Err(_) => Err(plain(StatusCode::REQUEST_TIMEOUT, "the request body did not arrive in time\n")),
    }
}

fn record(call: &analyse::AwsCall, client_ip: IpAddr, shared: &Shared) {
    let Some(service) = call.service.clone() else {
        shared.stats.unknown_service.fetch_add(1, Ordering::Relaxed);
        return;
    };
    shared.sink.push(Observed::Aws(AwsOperation {
        client_ip,
        service,
        action: call.action.clone().unwrap_or_default(),
        resource: call.resource.clone(),
        region: call.region.clone(),
        at: chrono::Utc::now(),
    }));
    shared.stats.recorded.fetch_add(1, Ordering::Relaxed);
}

fn strip_default_port(authority: &str) -> &str {
    authority.strip_suffix(":443").unwrap_or(authority)
}

/// Removes the hop-by-hop headers (RFC 9110 §7.6.1), including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|n| n.trim().to_ascii_lowercase())
        .filter(|n| !n.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in ["connection", "proxy-connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"] {
        headers.remove(name);
    }
}

fn plain(status: StatusCode, text: &str) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

fn empty() -> Body {
    Full::new(Bytes::new()).map_err(|never| match never {}).boxed()
}

fn parse_connect_to(entries: &[String]) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    entries
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|entry| {
            let (suffix, addr) = entry.split_once('=').with_context(|| format!("--connect-to {entry:?} is not SUFFIX=HOST:PORT"))?;
            let addr = addr.trim().parse().with_context(|| format!("--connect-to {entry:?}: {addr:?} is not an IP:PORT"))?;
            Ok((suffix.trim().trim_start_matches('.').to_ascii_lowercase(), addr))
        })
        .collect()
}

/// Resolves upstream names: `--connect-to` overrides first, the system resolver otherwise.
#[derive(Clone)]
struct OverrideResolver {
    overrides: Arc<Vec<(String, SocketAddr)>>,
}

impl tower::Service<Name> for OverrideResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let chosen = self.overrides.iter().find(|(suffix, _)| host == *suffix || host.ends_with(&format!(".{suffix}"))).map(|(_, addr)| *addr);
        Box::pin(async move {
            if let Some(addr) = chosen {
                return Ok(vec![addr].into_iter());
            }
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((strip_port(&host), 0)).await?.collect();
            Ok(addrs.into_iter())
        })
    }
}

fn upstream_client(extra_ca: Option<&std::path::Path>, overrides: Arc<Vec<(String, SocketAddr)>>) -> anyhow::Result<Upstream> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path).with_context(|| format!("reading the upstream CA {}", path.display()))?;
        let mut added = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots.add(cert.with_context(|| format!("{} is not PEM", path.display()))?).with_context(|| format!("a certificate in {}", path.display()))?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "{} holds no certificate", path.display());
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(OverrideResolver { overrides });
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(tls).https_only().enable_http1().enable_http2().wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(60)).timer(TokioTimer::new()).build(https))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Custom"));
        headers.insert("x-custom", HeaderValue::from_static("1"));
        headers.insert("x-amz-date", HeaderValue::from_static("20260101T000000Z"));
        headers.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        strip_hop_by_hop(&mut headers);
        assert_eq!(headers.len(), 1);
        assert!(headers.contains_key("x-amz-date"));
    }

    #[test]
    fn connect_to_entries() {
        let parsed = parse_connect_to(&["amazonaws.com=127.0.0.1:4566".into(), ".s3.amazonaws.com = 127.0.0.1:9000".into()]).unwrap();
        assert_eq!(parsed[1], ("s3.amazonaws.com".to_owned(), "127.0.0.1:9000".parse().unwrap()));
        assert!(parse_connect_to(&["nonsense".into()]).is_err());
    }
}
