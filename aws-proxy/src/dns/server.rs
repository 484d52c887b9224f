//! The UDP and TCP loops: bind, receive, hand each query to the [`Responder`], send the answer.

use std::{
    io,
    net::SocketAddr,
    sync::{atomic::Ordering, Arc, Mutex},
    time::Duration,
};

use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
    sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore},
    task::JoinSet,
    time::timeout,
};
use tracing::{debug, info};

use super::{
    config::{parse_proxy_address, upstreams_from_resolv_conf, DnsArgs, DnsSetupError},
    responder::Responder,
    stats::{DnsStats, DnsStatsSnapshot},
    upstream::Upstream,
    Transport,
};

const RESOLV_CONF: &str = "/etc/resolv.conf";
/// UDP queries being answered at once; more are dropped (the client retries).
const MAX_UDP_IN_FLIGHT: usize = 4096;
const MAX_TCP_CONNECTIONS: usize = 1024;
/// Queries answered at once on one TCP connection; the next ones wait to be read.
const MAX_TCP_PIPELINE: usize = 16;
/// How long a TCP client may stay silent, or take to send one message, before we close.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Binding port 0 picks a free UDP port that may be taken for TCP; try a few.
const BIND_ATTEMPTS: usize = 16;

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
pub(super) async fn read_frame(
    reader: &mut (impl AsyncRead + Unpin),
) -> io::Result<Option<Vec<u8>>> {
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

pub(super) async fn write_frame(
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
