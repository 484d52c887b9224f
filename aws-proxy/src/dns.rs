//! The amazonaws.com DNS server: answers `amazonaws.com`, `amazonaws.com.cn` and every name under
//! them with the proxy's address, and forwards every other query to the cluster's resolvers.
//!
//! Messages are `hickory-proto` types; the UDP and TCP loops are our own rather than
//! `hickory_server::Server`, because that server answers malformed packets itself (they could not
//! be counted) and only sends responses re-encoded from records, whereas forwarding here relays
//! the upstream's bytes unchanged (TTLs, every section, EDNS options) and re-encodes only when a
//! UDP answer has to be cut to the client's size.

use std::{
    collections::HashMap,
    fmt,
    future::Future,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6},
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, PoisonError,
    },
    time::{Duration, Instant},
};

use hickory_proto::{
    op::{emit_message_parts, Edns, Header, Message, MessageType, OpCode, Query, ResponseCode},
    rr::{
        rdata::{A, AAAA, CNAME},
        DNSClass, Name, RData, Record, RecordType,
    },
    serialize::binary::{BinDecodable, BinDecoder, BinEncodable, BinEncoder},
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::timeout,
};
use tracing::{debug, info, warn};

const RESOLV_CONF: &str = "/etc/resolv.conf";
/// The UDP payload size we advertise in our own EDNS answers and queries (DNS flag day 2020).
const OUR_UDP_PAYLOAD: u16 = 1232;
const DNS_HEADER_LEN: usize = 12;
/// UDP queries being answered at once; more are dropped (the client retries).
const MAX_UDP_IN_FLIGHT: usize = 4096;
const MAX_TCP_CONNECTIONS: usize = 1024;
/// Queries answered at once on one TCP connection; the next ones wait to be read.
const MAX_TCP_PIPELINE: usize = 16;
/// How long a TCP client may stay silent, or take to send one message, before we close.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Binding port 0 picks a free UDP port that may be taken for TCP; try a few.
const BIND_ATTEMPTS: usize = 16;

// === Args ===

/// The DNS role: where to listen, what amazonaws.com names resolve to, and where the rest goes.
#[derive(clap::Args, Debug, Clone)]
pub struct DnsArgs {
    /// Where to listen, UDP and TCP.
    #[arg(long = "dns-listen", env = "AWS_PROXY_DNS_LISTEN", default_value = "0.0.0.0:53")]
    pub listen: SocketAddr,

    /// The proxy's address that amazonaws.com names resolve to: IPs (v4 and/or v6) or one DNS
    /// name such as the proxy Service's (repeatable / comma-separated).
    #[arg(
        long = "proxy-address",
        env = "AWS_PROXY_ADDRESS",
        value_delimiter = ',',
        required = true
    )]
    pub proxy_address: Vec<String>,

    /// Upstream resolvers for every other name, `ip` or `ip:port`, tried in order
    /// (default: the `nameserver` lines of /etc/resolv.conf, port 53).
    #[arg(long = "upstream", env = "AWS_PROXY_DNS_UPSTREAM", value_delimiter = ',', value_parser = parse_upstream)]
    pub upstream: Vec<SocketAddr>,

    /// TTL in seconds of the answers for amazonaws.com names.
    #[arg(long = "dns-ttl", env = "AWS_PROXY_DNS_TTL", default_value_t = 30)]
    pub ttl: u32,

    /// Time allowed for one attempt at one upstream, in milliseconds.
    #[arg(long = "upstream-timeout-ms", env = "AWS_PROXY_DNS_UPSTREAM_TIMEOUT_MS", default_value_t = 2000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upstream_timeout_ms: u64,

    /// Time allowed for all upstream attempts of one query, in milliseconds; then the client
    /// gets SERVFAIL.
    #[arg(long = "upstream-deadline-ms", env = "AWS_PROXY_DNS_UPSTREAM_DEADLINE_MS", default_value_t = 5000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub upstream_deadline_ms: u64,
}

/// `10.96.0.10` → `10.96.0.10:53`; `10.96.0.10:5353` and `[fd00::a]:53` as given.
fn parse_upstream(value: &str) -> Result<SocketAddr, String> {
    let value = value.trim();
    value
        .parse::<SocketAddr>()
        .or_else(|_| value.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
        .map_err(|_| {
            format!("{value:?} is not an IP address or IP:port (e.g. 10.96.0.10 or 10.96.0.10:53)")
        })
}

// === Config ===

/// What amazonaws.com names resolve to.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ProxyAddress {
    Ips {
        v4: Vec<Ipv4Addr>,
        v6: Vec<Ipv6Addr>,
    },
    /// A CNAME to this name, followed by its addresses as the upstream resolves them.
    Name(Name),
}

impl fmt::Display for ProxyAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ips { v4, v6 } => {
                let ips: Vec<String> = v4
                    .iter()
                    .map(ToString::to_string)
                    .chain(v6.iter().map(ToString::to_string))
                    .collect();
                f.write_str(&ips.join(","))
            }
            Self::Name(name) => write!(f, "{name}"),
        }
    }
}

/// Why the DNS server could not start; each says what to change.
#[derive(Debug, thiserror::Error)]
pub enum DnsSetupError {
    #[error("--proxy-address is empty: give the proxy's IPs or its Service name (e.g. aws-proxy.<namespace>.svc.cluster.local)")]
    NoProxyAddress,
    #[error("--proxy-address mixes IPs and DNS names ({0}): give either IPs or one DNS name")]
    MixedProxyAddress(String),
    #[error("--proxy-address gives several DNS names ({0}): give one name (a Service name already resolves to all its IPs)")]
    SeveralProxyNames(String),
    #[error("--proxy-address {0:?} is neither an IP address nor a valid DNS name")]
    InvalidProxyName(String),
    #[error(
        "--proxy-address {0:?} is a single label, and no search list applies here: give the fully qualified name, e.g. aws-proxy.<namespace>.svc.cluster.local"
    )]
    UnqualifiedProxyName(String),
    #[error("--proxy-address {0} is under amazonaws.com, which this server answers with the proxy itself: give the proxy Service's name or IPs")]
    ProxyNameIsAws(String),
    #[error("cannot read {path} to find the upstream resolvers ({source}): pass --upstream (or AWS_PROXY_DNS_UPSTREAM), e.g. the cluster DNS 10.96.0.10")]
    ResolvConf { path: String, source: io::Error },
    #[error("no upstream resolver: {0} has no usable `nameserver` line; pass --upstream (or AWS_PROXY_DNS_UPSTREAM), e.g. the cluster DNS 10.96.0.10")]
    NoUpstream(String),
    #[error("upstream {0} is this server's own listen address, so queries would loop: pass the cluster DNS with --upstream")]
    UpstreamIsSelf(SocketAddr),
    #[error("binding {addr} ({protocol}) needs root or CAP_NET_BIND_SERVICE: grant the capability, or listen on a port >= 1024 with --dns-listen")]
    BindPermission { addr: SocketAddr, protocol: Transport },
    #[error("{addr} ({protocol}) is already in use: stop whatever listens there, or choose another --dns-listen")]
    BindInUse { addr: SocketAddr, protocol: Transport },
    #[error("cannot listen on {addr} ({protocol}): {source}; check --dns-listen")]
    Bind { addr: SocketAddr, protocol: Transport, source: io::Error },
}

/// IPs (any mix of v4 and v6) or exactly one DNS name; blanks are ignored.
fn parse_proxy_address(values: &[String]) -> Result<ProxyAddress, DnsSetupError> {
    let values: Vec<&str> =
        values.iter().map(|value| value.trim()).filter(|value| !value.is_empty()).collect();
    let (ips, names): (Vec<&str>, Vec<&str>) =
        values.iter().partition(|value| value.parse::<IpAddr>().is_ok());
    match (ips.is_empty(), names.as_slice()) {
        (true, []) => Err(DnsSetupError::NoProxyAddress),
        (false, []) => {
            let (mut v4, mut v6) = (Vec::new(), Vec::new());
            for ip in ips.iter().filter_map(|ip| ip.parse::<IpAddr>().ok()) {
                match ip {
                    IpAddr::V4(ip) if !v4.contains(&ip) => v4.push(ip),
                    IpAddr::V6(ip) if !v6.contains(&ip) => v6.push(ip),
                    _ => {}
                }
            }
            Ok(ProxyAddress::Ips { v4, v6 })
        }
        (true, [name]) => parse_proxy_name(name).map(ProxyAddress::Name),
        (true, _) => Err(DnsSetupError::SeveralProxyNames(names.join(", "))),
        (false, _) => Err(DnsSetupError::MixedProxyAddress(values.join(", "))),
    }
}

fn parse_proxy_name(value: &str) -> Result<Name, DnsSetupError> {
    let invalid = || DnsSetupError::InvalidProxyName(value.to_owned());
    let trimmed = value.strip_suffix('.').unwrap_or(value);
    let plain_labels = trimmed.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    });
    if trimmed.is_empty() || trimmed.len() > 253 || !plain_labels {
        return Err(invalid());
    }
    if !trimmed.contains('.') {
        return Err(DnsSetupError::UnqualifiedProxyName(value.to_owned()));
    }
    if crate::is_aws_host(trimmed) {
        return Err(DnsSetupError::ProxyNameIsAws(value.to_owned()));
    }
    let mut name = Name::from_ascii(trimmed).map_err(|_| invalid())?;
    name.set_fqdn(true);
    Ok(name)
}

/// The `nameserver` lines of a resolv.conf, port 53. Link-local IPv6 addresses need a numeric
/// zone (`fe80::1%2`); named zones are skipped.
pub(crate) fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next()? != "nameserver" {
                return None;
            }
            let addr = words.next()?;
            match addr.split_once('%') {
                None => addr.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)),
                Some((ip, zone)) => {
                    let (ip, zone) = (ip.parse::<Ipv6Addr>().ok()?, zone.parse::<u32>().ok()?);
                    Some(SocketAddr::V6(SocketAddrV6::new(ip, 53, 0, zone)))
                }
            }
        })
        .collect()
}

fn upstreams_from_resolv_conf(path: &str) -> Result<Vec<SocketAddr>, DnsSetupError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| DnsSetupError::ResolvConf { path: path.to_owned(), source })?;
    let upstreams = parse_resolv_conf(&text);
    if upstreams.is_empty() {
        return Err(DnsSetupError::NoUpstream(path.to_owned()));
    }
    Ok(upstreams)
}

// === Server ===

/// A running DNS server. Dropping it stops serving at once; [`DnsServer::shutdown`] lets the
/// queries being answered finish first.
pub struct DnsServer {
    udp_addr: SocketAddr,
    tcp_addr: SocketAddr,
    stats: Arc<DnsStats>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl DnsServer {
    /// Binds UDP and TCP on `args.listen` (port 0: the same free port for both), then serves in
    /// background tasks.
    pub async fn start(args: &DnsArgs) -> anyhow::Result<DnsServer> {
        let proxy = parse_proxy_address(&args.proxy_address)?;
        let upstreams = if args.upstream.is_empty() {
            upstreams_from_resolv_conf(RESOLV_CONF)?
        } else {
            args.upstream.clone()
        };
        if let Some(own) = upstreams.iter().find(|upstream| **upstream == args.listen) {
            return Err(DnsSetupError::UpstreamIsSelf(*own).into());
        }
        let (udp, tcp) = bind(args.listen).await?;
        let (udp_addr, tcp_addr) = (udp.local_addr()?, tcp.local_addr()?);

        let stats = Arc::new(DnsStats::default());
        let upstream = Upstream {
            addrs: upstreams,
            attempt_timeout: Duration::from_millis(args.upstream_timeout_ms),
            deadline: Duration::from_millis(args.upstream_deadline_ms),
        };
        info!(%udp_addr, %tcp_addr, proxy_address = %proxy, upstreams = ?upstream.addrs, ttl = args.ttl, "DNS server listening");
        let responder = Arc::new(Responder {
            proxy,
            upstream,
            ttl: args.ttl,
            target_cache: Mutex::default(),
            stats: stats.clone(),
        });

        let (shutdown, stop) = watch::channel(false);
        let mut tasks = JoinSet::new();
        tasks.spawn(serve_udp(Arc::new(udp), responder.clone(), stop.clone()));
        tasks.spawn(serve_tcp(tcp, responder, stop));
        Ok(DnsServer { udp_addr, tcp_addr, stats, shutdown, tasks })
    }

    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    pub fn stats(&self) -> DnsStatsSnapshot {
        self.stats.snapshot()
    }

    /// The live counters, for a metrics endpoint that outlives this handle's borrow.
    pub fn stats_handle(&self) -> Arc<DnsStats> {
        self.stats.clone()
    }

    /// Stops reading queries, lets those being answered finish (bounded by the upstream
    /// deadline), then closes the sockets.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        info!(udp_addr = %self.udp_addr, tcp_addr = %self.tcp_addr, "DNS server stopped");
    }
}

async fn bind(listen: SocketAddr) -> Result<(UdpSocket, TcpListener), DnsSetupError> {
    for _ in 0..BIND_ATTEMPTS {
        let udp = UdpSocket::bind(listen)
            .await
            .map_err(|error| bind_error(listen, Transport::Udp, error))?;
        let addr = udp.local_addr().map_err(|error| bind_error(listen, Transport::Udp, error))?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(error) if listen.port() == 0 && error.kind() == io::ErrorKind::AddrInUse => {
                debug!(%addr, "free UDP port is taken for TCP, trying another");
            }
            Err(error) => return Err(bind_error(addr, Transport::Tcp, error)),
        }
    }
    Err(DnsSetupError::BindInUse { addr: listen, protocol: Transport::Tcp })
}

fn bind_error(addr: SocketAddr, protocol: Transport, source: io::Error) -> DnsSetupError {
    match source.kind() {
        io::ErrorKind::PermissionDenied => DnsSetupError::BindPermission { addr, protocol },
        io::ErrorKind::AddrInUse => DnsSetupError::BindInUse { addr, protocol },
        _ => DnsSetupError::Bind { addr, protocol, source },
    }
}

async fn serve_udp(
    socket: Arc<UdpSocket>,
    responder: Arc<Responder>,
    mut stop: watch::Receiver<bool>,
) {
    let in_flight = Arc::new(Semaphore::new(MAX_UDP_IN_FLIGHT));
    let mut queries = JoinSet::new();
    let mut buf = vec![0; usize::from(u16::MAX)];
    loop {
        let (len, src) = tokio::select! {
            received = socket.recv_from(&mut buf) => match received {
                Ok(received) => received,
                Err(error) => {
                    debug!(%error, "UDP receive failed");
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        while queries.try_join_next().is_some() {}
        let Ok(permit) = in_flight.clone().try_acquire_owned() else {
            responder.stats.dropped.fetch_add(1, Ordering::Relaxed);
            debug!(%src, "too many UDP queries in flight, dropping one");
            continue;
        };
        let (packet, socket, responder) = (buf[..len].to_vec(), socket.clone(), responder.clone());
        queries.spawn(async move {
            let _permit = permit;
            if let Some(response) = responder.handle(&packet, src, Transport::Udp).await {
                if let Err(error) = socket.send_to(&response, src).await {
                    debug!(%src, %error, "cannot send UDP response");
                }
            }
        });
    }
    while queries.join_next().await.is_some() {}
}

async fn serve_tcp(
    listener: TcpListener,
    responder: Arc<Responder>,
    mut stop: watch::Receiver<bool>,
) {
    let connections = Arc::new(Semaphore::new(MAX_TCP_CONNECTIONS));
    let mut tasks = JoinSet::new();
    loop {
        let (stream, src) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: give the other connections a moment.
                    debug!(%error, "TCP accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut stop) => break,
        };
        while tasks.try_join_next().is_some() {}
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            responder.stats.dropped.fetch_add(1, Ordering::Relaxed);
            debug!(%src, "too many TCP connections, closing a new one");
            continue;
        };
        tasks.spawn(serve_tcp_connection(stream, src, responder.clone(), stop.clone(), permit));
    }
    while tasks.join_next().await.is_some() {}
}

/// Answers the queries of one connection concurrently (RFC 7766 pipelining), replies in the
/// order they are ready.
async fn serve_tcp_connection(
    stream: TcpStream,
    src: SocketAddr,
    responder: Arc<Responder>,
    mut stop: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (replies, mut to_send) = mpsc::channel::<Vec<u8>>(MAX_TCP_PIPELINE);
    let write = tokio::spawn(async move {
        while let Some(reply) = to_send.recv().await {
            if let Err(error) = write_frame(&mut writer, &reply).await {
                debug!(%src, %error, "cannot send TCP response");
                break;
            }
        }
        let _ = writer.shutdown().await;
    });

    let mut queries = JoinSet::new();
    loop {
        let packet = tokio::select! {
            read = timeout(TCP_IDLE, read_frame(&mut reader)) => match read {
                Ok(Ok(Some(packet))) => packet,
                Ok(Ok(None)) => break,
                Ok(Err(error)) => {
                    debug!(%src, %error, "TCP read failed");
                    break;
                }
                Err(_) => {
                    debug!(%src, idle_secs = TCP_IDLE.as_secs(), "closing idle TCP connection");
                    break;
                }
            },
            () = stopped(&mut stop) => break,
        };
        while queries.len() >= MAX_TCP_PIPELINE && queries.join_next().await.is_some() {}
        while queries.try_join_next().is_some() {}
        let (replies, responder) = (replies.clone(), responder.clone());
        queries.spawn(async move {
            if let Some(reply) = responder.handle(&packet, src, Transport::Tcp).await {
                let _ = replies.send(reply).await;
            }
        });
    }
    while queries.join_next().await.is_some() {}
    drop(replies);
    let _ = write.await;
}

/// Resolves once shutdown is asked for, or the [`DnsServer`] is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// One length-prefixed DNS message; `None` when the peer closed between messages.
async fn read_frame(reader: &mut (impl AsyncRead + Unpin)) -> io::Result<Option<Vec<u8>>> {
    let mut len = [0; 2];
    match reader.read_exact(&mut len).await {
        Ok(_) => {}
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(error) => return Err(error),
    }
    let mut message = vec![0; usize::from(u16::from_be_bytes(len))];
    reader.read_exact(&mut message).await?;
    Ok(Some(message))
}

async fn write_frame(
    writer: &mut (impl tokio::io::AsyncWrite + Unpin),
    message: &[u8],
) -> io::Result<()> {
    let len = u16::try_from(message.len()).map_err(|_| {
        io::Error::new(io::ErrorKind::InvalidInput, "DNS message longer than 65535 bytes")
    })?;
    let mut frame = Vec::with_capacity(message.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(message);
    writer.write_all(&frame).await
}

/// How a query reached us, or how we send one on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        })
    }
}

// === Stats ===

/// The live counters behind [`DnsServer::stats`], shareable with a metrics endpoint.
#[derive(Debug, Default)]
pub struct DnsStats {
    answered_aws: AtomicU64,
    forwarded: AtomicU64,
    servfail: AtomicU64,
    formerr: AtomicU64,
    dropped: AtomicU64,
}

impl DnsStats {
    pub fn snapshot(&self) -> DnsStatsSnapshot {
        DnsStatsSnapshot {
            answered_aws: self.answered_aws.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            servfail: self.servfail.load(Ordering::Relaxed),
            formerr: self.formerr.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// What the server has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStatsSnapshot {
    /// Queries for amazonaws.com names answered here: the proxy's address, or NODATA for other
    /// types.
    pub answered_aws: u64,
    /// Queries answered with an upstream's response, whatever its code (NXDOMAIN, SERVFAIL...).
    pub forwarded: u64,
    /// SERVFAIL made here: no upstream answered within the deadline, or the proxy's DNS name did
    /// not resolve.
    pub servfail: u64,
    /// Malformed queries answered with FORMERR.
    pub formerr: u64,
    /// Packets not answered: shorter than a DNS header, responses rather than queries, or over the
    /// in-flight limits.
    pub dropped: u64,
}

// === Responder ===

/// Answers one query: amazonaws.com names here, everything else through the upstreams.
struct Responder {
    proxy: ProxyAddress,
    upstream: Upstream,
    ttl: u32,
    /// The proxy name's answers (A and AAAA), kept for the upstream's TTL.
    target_cache: Mutex<HashMap<RecordType, CachedAnswer>>,
    stats: Arc<DnsStats>,
}

struct CachedAnswer {
    code: ResponseCode,
    records: Vec<Record>,
    stored: Instant,
    expires: Instant,
}

impl Responder {
    /// The bytes to send back, or `None` to stay silent.
    async fn handle(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let request = match Message::from_vec(packet) {
            Ok(request) => request,
            Err(error) => return self.malformed(packet, src, transport, &error.to_string()),
        };
        if request.metadata.message_type != MessageType::Query {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            debug!(%src, %transport, id = request.metadata.id, "dropping a DNS response sent to the server");
            return None;
        }
        let response = self.respond(&request, packet, src, transport).await?;
        Some(match transport {
            Transport::Udp => fit_udp(response, usize::from(request.max_payload())),
            Transport::Tcp => response,
        })
    }

    async fn respond(
        &self,
        request: &Message,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        if request.metadata.op_code == OpCode::Query {
            if request.queries.len() > 1 {
                self.stats.formerr.fetch_add(1, Ordering::Relaxed);
                debug!(%src, %transport, id = request.metadata.id, questions = request.queries.len(), "answering a query with several questions with FORMERR");
                return encode(&response_to(request, ResponseCode::FormErr));
            }
            if let Some(query) = request
                .queries
                .first()
                .filter(|query| query.query_class() == DNSClass::IN && is_aws_name(query.name()))
            {
                return self.answer_aws(request, query).await;
            }
        }
        self.forward(request, packet, src, transport).await
    }

    async fn answer_aws(&self, request: &Message, query: &Query) -> Option<Vec<u8>> {
        let mut response = response_to(request, ResponseCode::NoError);
        let owner = query.name().clone();
        match (&self.proxy, query.query_type()) {
            (ProxyAddress::Ips { v4, .. }, RecordType::A) => {
                response.answers = v4
                    .iter()
                    .map(|ip| Record::from_rdata(owner.clone(), self.ttl, RData::A(A(*ip))))
                    .collect();
            }
            (ProxyAddress::Ips { v6, .. }, RecordType::AAAA) => {
                response.answers = v6
                    .iter()
                    .map(|ip| Record::from_rdata(owner.clone(), self.ttl, RData::AAAA(AAAA(*ip))))
                    .collect();
            }
            (ProxyAddress::Name(target), record_type @ (RecordType::A | RecordType::AAAA)) => {
                let Some((code, records)) = self.resolve_target(target, record_type).await else {
                    self.stats.servfail.fetch_add(1, Ordering::Relaxed);
                    return encode(&response_to(request, ResponseCode::ServFail));
                };
                response.metadata.response_code = code;
                response.answers = std::iter::once(Record::from_rdata(
                    owner,
                    self.ttl,
                    RData::CNAME(CNAME(target.clone())),
                ))
                .chain(records)
                .collect();
            }
            (ProxyAddress::Name(target), RecordType::CNAME) => {
                response.add_answer(Record::from_rdata(
                    owner,
                    self.ttl,
                    RData::CNAME(CNAME(target.clone())),
                ));
            }
            // NODATA: the name exists, it has no records of this type.
            _ => {}
        }
        self.stats.answered_aws.fetch_add(1, Ordering::Relaxed);
        encode(&response)
    }

    /// The upstream's answer records for the proxy's name (its CNAME chain and addresses) and the
    /// response code, from the cache while their TTL lasts; `None` when the upstream fails.
    async fn resolve_target(
        &self,
        target: &Name,
        record_type: RecordType,
    ) -> Option<(ResponseCode, Vec<Record>)> {
        if let Some(hit) = self.cached_target(record_type) {
            return Some(hit);
        }
        let mut query = Message::query();
        query.metadata.recursion_desired = true;
        query.add_query(Query::query(target.clone(), record_type));
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_UDP_PAYLOAD);
        query.set_edns(edns);
        let reply = self
            .upstream
            .exchange(&query.to_vec().ok()?, query.queries.first(), Transport::Udp)
            .await?;
        let reply = match Message::from_vec(&reply) {
            Ok(reply) => reply,
            Err(error) => {
                debug!(%target, %error, "cannot parse the upstream's answer for the proxy's name");
                return None;
            }
        };
        let code = reply.metadata.response_code;
        if !matches!(code, ResponseCode::NoError | ResponseCode::NXDomain) {
            debug!(%target, %code, "the upstream cannot resolve the proxy's name");
            return None;
        }
        // Negative answers are kept for the SOA's TTL (RFC 2308), or ours when there is none.
        let ttl = match reply.answers.iter().map(|record| record.ttl).min() {
            Some(ttl) => ttl,
            None => reply
                .authorities
                .iter()
                .filter(|record| record.record_type() == RecordType::SOA)
                .map(|record| record.ttl)
                .min()
                .unwrap_or(self.ttl),
        };
        let stored = Instant::now();
        let entry = CachedAnswer {
            code,
            records: reply.answers.clone(),
            stored,
            expires: stored + Duration::from_secs(u64::from(ttl)),
        };
        self.target_cache.lock().unwrap_or_else(PoisonError::into_inner).insert(record_type, entry);
        Some((code, reply.answers))
    }

    fn cached_target(&self, record_type: RecordType) -> Option<(ResponseCode, Vec<Record>)> {
        let cache = self.target_cache.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = cache.get(&record_type)?;
        let now = Instant::now();
        if now >= entry.expires {
            return None;
        }
        let age = u32::try_from(now.duration_since(entry.stored).as_secs()).unwrap_or(u32::MAX);
        let records = entry
            .records
            .iter()
            .map(|record| {
                let mut record = record.clone();
                record.ttl = record.ttl.saturating_sub(age);
                record
            })
            .collect();
        Some((entry.code, records))
    }

    async fn forward(
        &self,
        request: &Message,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        match self.upstream.exchange(packet, request.queries.first(), transport).await {
            Some(mut reply) => {
                self.stats.forwarded.fetch_add(1, Ordering::Relaxed);
                reply[..2].copy_from_slice(&request.metadata.id.to_be_bytes());
                Some(reply)
            }
            None => {
                self.stats.servfail.fetch_add(1, Ordering::Relaxed);
                let query = request.queries.first();
                debug!(%src, %transport, name = ?query.map(|query| query.name().to_string()), query_type = ?query.map(Query::query_type), "no upstream answered, answering SERVFAIL");
                encode(&response_to(request, ResponseCode::ServFail))
            }
        }
    }

    /// FORMERR when the packet has a query header to answer, else silence.
    fn malformed(
        &self,
        packet: &[u8],
        src: SocketAddr,
        transport: Transport,
        error: &str,
    ) -> Option<Vec<u8>> {
        let mut decoder = BinDecoder::new(packet);
        let header = match Header::read(&mut decoder) {
            Ok(header) if header.metadata.message_type == MessageType::Query => header,
            _ => {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                debug!(%src, %transport, len = packet.len(), %error, "dropping a packet that is not a DNS query");
                return None;
            }
        };
        self.stats.formerr.fetch_add(1, Ordering::Relaxed);
        debug!(%src, %transport, id = header.metadata.id, len = packet.len(), %error, "answering a malformed DNS query with FORMERR");
        let mut response =
            Message::error_msg(header.metadata.id, header.metadata.op_code, ResponseCode::FormErr);
        response.metadata.recursion_desired = header.metadata.recursion_desired;
        response.metadata.checking_disabled = header.metadata.checking_disabled;
        response.metadata.recursion_available = true;
        // Echo the question when it is intact, so the client can match the answer.
        if header.counts.queries == 1 {
            if let Ok(query) = Query::read(&mut decoder) {
                response.add_query(query);
            }
        }
        encode(&response)
    }
}

fn is_aws_name(name: &Name) -> bool {
    crate::is_aws_host(&name.to_ascii())
}

/// The start of our own answer: same ID, opcode, question, RD and CD; RA set, AA not.
fn response_to(request: &Message, code: ResponseCode) -> Message {
    let mut response = Message::response(request.metadata.id, request.metadata.op_code);
    response.metadata.recursion_desired = request.metadata.recursion_desired;
    response.metadata.checking_disabled = request.metadata.checking_disabled;
    response.metadata.recursion_available = true;
    response.metadata.response_code = code;
    response.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        let mut edns = Edns::new();
        edns.set_max_payload(OUR_UDP_PAYLOAD);
        response.set_edns(edns);
    }
    response
}

fn encode(message: &Message) -> Option<Vec<u8>> {
    match message.to_vec() {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            warn!(id = message.metadata.id, %error, "cannot encode a DNS response");
            None
        }
    }
}

// === Upstream ===

/// The resolvers everything but amazonaws.com goes to.
struct Upstream {
    addrs: Vec<SocketAddr>,
    attempt_timeout: Duration,
    deadline: Duration,
}

impl Upstream {
    /// Sends `query` (its bytes as they are, under a fresh ID) to each upstream in turn until
    /// one answers, and returns that answer's bytes (still under the fresh ID). A UDP answer with
    /// TC is asked again over TCP. SERVFAIL, REFUSED and NOTIMP move on to the next upstream but
    /// are returned when no other does better. `None` when nothing answered within the deadline.
    async fn exchange(
        &self,
        query: &[u8],
        question: Option<&Query>,
        transport: Transport,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + self.deadline;
        let mut query = query.to_vec();
        let mut fallback = None;
        for (index, &upstream) in self.addrs.iter().enumerate() {
            let id = random_id();
            query[..2].copy_from_slice(&id.to_be_bytes());
            let Some(reply) =
                self.attempt(upstream, &query, id, question, transport, deadline).await
            else {
                continue;
            };
            let code = response_code(&reply);
            if matches!(code, ResponseCode::ServFail | ResponseCode::Refused | ResponseCode::NotImp)
                && index + 1 < self.addrs.len()
            {
                debug!(%upstream, %code, "upstream declined, trying the next one");
                fallback = Some(reply);
                continue;
            }
            return Some(reply);
        }
        fallback
    }

    async fn attempt(
        &self,
        upstream: SocketAddr,
        query: &[u8],
        id: u16,
        question: Option<&Query>,
        transport: Transport,
        deadline: Instant,
    ) -> Option<Vec<u8>> {
        let reply = self
            .bounded(
                upstream,
                transport,
                deadline,
                exchange_once(upstream, query, id, question, transport),
            )
            .await?;
        if transport == Transport::Udp && is_truncated(&reply) {
            debug!(%upstream, "upstream UDP answer is truncated, asking again over TCP");
            // The truncated answer still tells the client to retry over TCP itself.
            let full = self
                .bounded(
                    upstream,
                    Transport::Tcp,
                    deadline,
                    exchange_once(upstream, query, id, question, Transport::Tcp),
                )
                .await;
            return full.or(Some(reply));
        }
        Some(reply)
    }

    /// Runs one exchange within the per-attempt timeout and what is left of the deadline.
    async fn bounded(
        &self,
        upstream: SocketAddr,
        transport: Transport,
        deadline: Instant,
        exchange: impl Future<Output = io::Result<Vec<u8>>>,
    ) -> Option<Vec<u8>> {
        let limit = self.attempt_timeout.min(deadline.saturating_duration_since(Instant::now()));
        if limit.is_zero() {
            return None;
        }
        match timeout(limit, exchange).await {
            Ok(Ok(reply)) => Some(reply),
            Ok(Err(error)) => {
                debug!(%upstream, %transport, %error, "upstream exchange failed");
                None
            }
            Err(_) => {
                debug!(%upstream, %transport, timeout_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX), "upstream did not answer in time");
                None
            }
        }
    }
}

async fn exchange_once(
    upstream: SocketAddr,
    query: &[u8],
    id: u16,
    question: Option<&Query>,
    transport: Transport,
) -> io::Result<Vec<u8>> {
    match transport {
        Transport::Udp => {
            let local: SocketAddr = match upstream {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let socket = UdpSocket::bind(local).await?;
            socket.connect(upstream).await?;
            socket.send(query).await?;
            let mut buf = vec![0; usize::from(u16::MAX)];
            loop {
                let len = socket.recv(&mut buf).await?;
                if is_reply_to(&buf[..len], id, question) {
                    buf.truncate(len);
                    return Ok(buf);
                }
                debug!(%upstream, len, "ignoring a UDP packet that does not answer our query");
            }
        }
        Transport::Tcp => {
            let mut stream = TcpStream::connect(upstream).await?;
            stream.set_nodelay(true)?;
            write_frame(&mut stream, query).await?;
            let reply = read_frame(&mut stream).await?.ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "upstream closed the connection without answering",
                )
            })?;
            if !is_reply_to(&reply, id, question) {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "upstream TCP answer does not match the query",
                ));
            }
            Ok(reply)
        }
    }
}

/// hickory-proto draws query IDs from a CSPRNG; borrowing it saves a `rand` dependency.
fn random_id() -> u16 {
    Message::query().metadata.id
}

/// A response with our ID and, when we asked one, the same question (any case).
fn is_reply_to(reply: &[u8], id: u16, question: Option<&Query>) -> bool {
    let mut decoder = BinDecoder::new(reply);
    let Ok(header) = Header::read(&mut decoder) else {
        return false;
    };
    if header.metadata.id != id || header.metadata.message_type != MessageType::Response {
        return false;
    }
    let Some(question) = question else {
        return true;
    };
    header.counts.queries == 1
        && Query::read(&mut decoder).is_ok_and(|echoed| {
            echoed.name() == question.name()
                && echoed.query_type() == question.query_type()
                && echoed.query_class() == question.query_class()
        })
}

fn is_truncated(reply: &[u8]) -> bool {
    reply.get(2).is_some_and(|flags| flags & 0x02 != 0)
}

fn response_code(reply: &[u8]) -> ResponseCode {
    ResponseCode::from_low(reply.get(3).map_or(0, |flags| flags & 0x0f))
}

// === Truncation ===

/// `response` as is when it fits the client's UDP size, else with TC set and cut to fit: the
/// records that fit and the OPT record are kept, so the client can use what it got or retry
/// over TCP.
fn fit_udp(response: Vec<u8>, limit: usize) -> Vec<u8> {
    if response.len() <= limit {
        return response;
    }
    Message::from_vec(&response)
        .ok()
        .and_then(|message| truncate(&message, limit))
        .unwrap_or_else(|| header_and_question(&response))
}

fn truncate(message: &Message, limit: usize) -> Option<Vec<u8>> {
    let opt = match &message.edns {
        Some(edns) => {
            let mut edns = edns.clone();
            edns.set_rcode_high(message.metadata.response_code.high());
            edns.to_bytes().ok()?
        }
        None => Vec::new(),
    };
    let budget = u16::try_from(limit.checked_sub(opt.len())?).unwrap_or(u16::MAX);
    let mut metadata = message.metadata;
    metadata.truncation = true;
    let mut bytes = Vec::with_capacity(limit);
    let (header, end) = {
        let mut encoder = BinEncoder::new(&mut bytes);
        encoder.set_max_size(budget);
        let header = emit_message_parts(
            &metadata,
            &mut message.queries.iter(),
            &mut message.answers.iter(),
            &mut message.authorities.iter(),
            &mut message.additionals.iter(),
            None,
            None,
            &mut encoder,
        )
        .ok()?;
        (header, encoder.offset())
    };
    // A record that did not fit is rolled back by moving the offset only: drop its bytes.
    bytes.truncate(end);
    if !opt.is_empty() {
        bytes.extend_from_slice(&opt);
        let additionals = header.counts.additionals.checked_add(1)?;
        bytes[10..12].copy_from_slice(&additionals.to_be_bytes());
    }
    Some(bytes)
}

/// The last resort for an answer too big to parse and cut: its header with TC set and its
/// question, no records.
fn header_and_question(response: &[u8]) -> Vec<u8> {
    if response.len() < DNS_HEADER_LEN {
        return response.to_vec();
    }
    let mut decoder = BinDecoder::new(response);
    let end = match Header::read(&mut decoder) {
        Ok(header) if header.counts.queries == 1 && Query::read(&mut decoder).is_ok() => {
            decoder.index()
        }
        _ => DNS_HEADER_LEN,
    };
    let mut bytes = response[..end].to_vec();
    bytes[2] |= 0x02;
    let questions: u16 = if end > DNS_HEADER_LEN { 1 } else { 0 };
    bytes[4..6].copy_from_slice(&questions.to_be_bytes());
    bytes[6..12].fill(0);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(values: &[&str]) -> Vec<String> {
        values.iter().map(|value| value.to_string()).collect()
    }

    #[test]
    fn proxy_address_ips_or_one_name() {
        assert_eq!(
            parse_proxy_address(&strings(&["10.0.0.1", " fd00::1 ", "10.0.0.2", "10.0.0.1", ""]))
                .unwrap(),
            ProxyAddress::Ips {
                v4: vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)],
                v6: vec!["fd00::1".parse().unwrap()]
            }
        );
        let ProxyAddress::Name(name) =
            parse_proxy_address(&strings(&["aws-proxy.intentmap.svc.cluster.local"])).unwrap()
        else {
            panic!("a DNS name should give ProxyAddress::Name");
        };
        assert_eq!(name.to_ascii(), "aws-proxy.intentmap.svc.cluster.local.");
        assert!(name.is_fqdn());

        for (values, expected) in [
            (&[][..], "--proxy-address is empty"),
            (&["", " "][..], "--proxy-address is empty"),
            (&["10.0.0.1", "proxy.svc"][..], "mixes IPs and DNS names"),
            (&["a.svc", "b.svc"][..], "several DNS names"),
            (&["[fd00::1]"][..], "neither an IP address nor a valid DNS name"),
            (&["10.0.0.1:443"][..], "neither an IP address nor a valid DNS name"),
            (&["a..b"][..], "neither an IP address nor a valid DNS name"),
            (&["proxy.amazonaws.com"][..], "is under amazonaws.com"),
            (&["aws-proxy"][..], "give the fully qualified name"),
        ] {
            let error = parse_proxy_address(&strings(values)).unwrap_err().to_string();
            assert!(error.contains(expected), "{values:?}: {error}");
        }
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# generated\nsearch default.svc.cluster.local svc.cluster.local\nnameserver 10.96.0.10\nnameserver   fd00::a \n\
                    options ndots:5\nnameserver fe80::1%2\nnameserver fe80::2%eth0\nnameserver bogus\n;nameserver 1.1.1.1\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![
                "10.96.0.10:53".parse().unwrap(),
                "[fd00::a]:53".parse().unwrap(),
                SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 53, 0, 2)),
            ]
        );
        assert!(parse_resolv_conf("search cluster.local\n").is_empty());
    }

    #[test]
    fn upstream_port_defaults_to_53() {
        assert_eq!(parse_upstream("10.96.0.10").unwrap(), "10.96.0.10:53".parse().unwrap());
        assert_eq!(parse_upstream(" 10.96.0.10:5353").unwrap(), "10.96.0.10:5353".parse().unwrap());
        assert_eq!(parse_upstream("fd00::a").unwrap(), "[fd00::a]:53".parse().unwrap());
        assert!(parse_upstream("kube-dns").unwrap_err().contains("not an IP address"));
    }

    fn big_response(records: u8, edns: bool) -> Message {
        let mut request = Message::query();
        request.add_query(Query::query(Name::from_ascii("big.test.").unwrap(), RecordType::A));
        if edns {
            request.set_edns(Edns::new());
        }
        let mut response = response_to(&request, ResponseCode::NoError);
        for i in 0..records {
            response.add_answer(Record::from_rdata(
                Name::from_ascii("big.test.").unwrap(),
                60,
                RData::A(A(Ipv4Addr::new(10, 0, 0, i))),
            ));
        }
        response
    }

    #[test]
    fn fit_udp_cuts_to_the_limit_and_keeps_opt() {
        for edns in [false, true] {
            let full = big_response(100, edns).to_vec().unwrap();
            assert!(full.len() > 1232);
            assert_eq!(fit_udp(full.clone(), 4096), full, "fits: unchanged");
            for limit in [512, 1232] {
                let cut = fit_udp(full.clone(), limit);
                assert!(cut.len() <= limit, "{} > {limit}", cut.len());
                let message = Message::from_vec(&cut).unwrap();
                assert!(message.metadata.truncation);
                assert!(
                    !message.answers.is_empty() && message.answers.len() < 100,
                    "{}",
                    message.answers.len()
                );
                assert_eq!(message.queries.len(), 1);
                assert_eq!(message.edns.is_some(), edns);
                assert_eq!(
                    message.to_vec().unwrap().len(),
                    cut.len(),
                    "nothing after the last record"
                );
            }
        }
    }

    #[test]
    fn header_and_question_is_the_last_resort() {
        let full = big_response(100, false).to_vec().unwrap();
        let cut = header_and_question(&full);
        let message = Message::from_vec(&cut).unwrap();
        assert!(message.metadata.truncation);
        assert_eq!(message.queries.len(), 1);
        assert!(message.answers.is_empty());
        assert_eq!(header_and_question(&full[..5]), full[..5].to_vec());
    }

    #[test]
    fn replies_match_id_and_question() {
        let response = big_response(1, false);
        let bytes = response.to_vec().unwrap();
        let id = response.metadata.id;
        let question = response.queries[0].clone();
        assert!(is_reply_to(&bytes, id, Some(&question)));
        assert!(is_reply_to(&bytes, id, None));
        assert!(!is_reply_to(&bytes, id.wrapping_add(1), Some(&question)));
        let other = Query::query(Name::from_ascii("BIG.test.").unwrap(), RecordType::AAAA);
        assert!(!is_reply_to(&bytes, id, Some(&other)));
        let same_in_other_case =
            Query::query(Name::from_ascii("BIG.TEST.").unwrap(), RecordType::A);
        assert!(is_reply_to(&bytes, id, Some(&same_in_other_case)));
        assert!(!is_reply_to(&bytes[..11], id, None));
    }

    /// Mutated and cut queries never panic the parsing and FORMERR paths.
    #[tokio::test]
    async fn mangled_queries_do_not_panic() {
        let responder = Responder {
            proxy: ProxyAddress::Ips { v4: vec![Ipv4Addr::new(10, 0, 0, 1)], v6: vec![] },
            // No upstreams: forwards fail at once with SERVFAIL.
            upstream: Upstream {
                addrs: vec![],
                attempt_timeout: Duration::from_millis(1),
                deadline: Duration::from_millis(1),
            },
            ttl: 30,
            target_cache: Mutex::default(),
            stats: Arc::new(DnsStats::default()),
        };
        let mut query = Message::query();
        query
            .add_query(Query::query(Name::from_ascii("s3.amazonaws.com.").unwrap(), RecordType::A));
        query.set_edns(Edns::new());
        let query = query.to_vec().unwrap();
        let src: SocketAddr = "127.0.0.1:5300".parse().unwrap();
        let mut seed: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for len in 0..query.len() {
            let _ = responder.handle(&query[..len], src, Transport::Udp).await;
        }
        for _ in 0..5000 {
            let mut packet = query.clone();
            for _ in 0..(next() % 4 + 1) {
                let at = (next() % packet.len() as u64) as usize;
                packet[at] = next() as u8;
            }
            let _ = responder.handle(&packet, src, Transport::Udp).await;
        }
    }
}
