//! One client connection: the TLS handshake for an AWS host, HTTP/1.1 or HTTP/2 on it until it
//! goes idle, and the CONNECT listener's tunnels. Each holds a permit of the connection cap until
//! it ends (a CONNECT connection hands its permit to the tunnel it becomes).

use std::convert::Infallible;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt as _;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use super::forward::{empty, forward, plain, Body, BoxError};
use super::{count, Shared};
use crate::is_aws_host;

type Permit = Arc<OwnedSemaphorePermit>;

/// TLS-terminates `io` for an AWS host (from SNI, else `default_host`) and serves HTTP on it
/// until the client leaves or the connection has had no request in flight for the idle timeout.
pub(super) async fn intercept<IO>(
    io: IO,
    client_ip: IpAddr,
    default_host: Option<String>,
    shared: Arc<Shared>,
    _permit: Permit,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handshake = async {
        let start = tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), io)
            .await
            .map_err(|e| format!("reading the ClientHello: {e}"))?;
        let host = start
            .client_hello()
            .server_name()
            .map(str::to_owned)
            .or(default_host)
            .ok_or("the client sent no SNI")?;
        if !is_aws_host(&host) {
            count(&shared.stats.refused_hosts);
            return Err(format!("{host} is not an AWS host"));
        }
        let config = shared
            .ca
            .current()
            .server_config(&host)
            .map_err(|e| format!("issuing a certificate for {host}: {e}"))?;
        let tls = start
            .into_stream(config)
            .await
            .map_err(|e| format!("TLS handshake for {host}: {e}"))?;
        Ok::<_, String>((tls, host))
    };
    let (tls, host) = match tokio::time::timeout(shared.client_timeout, handshake).await {
        Ok(Ok(done)) => done,
        Ok(Err(reason)) => {
            count(&shared.stats.handshake_failures);
            return debug!(client = %client_ip, reason, "dropped a connection before TLS was up");
        }
        Err(_) => {
            count(&shared.stats.handshake_failures);
            return debug!(client = %client_ip, "dropped a client that did not finish its TLS handshake in time");
        }
    };
    let activity = Activity::new();
    let (service_shared, service_activity) = (shared.clone(), activity.clone());
    let service = hyper::service::service_fn(move |req| {
        let (shared, host, in_flight) =
            (service_shared.clone(), host.clone(), service_activity.begin());
        async move {
            let response = forward(req, client_ip, &host, &shared).await;
            // The request counts as in flight until its response body is sent (or dropped).
            Ok::<_, Infallible>(
                response.map(|body| Tracked { body, _in_flight: in_flight }.boxed()),
            )
        }
    });
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(shared.client_timeout)
        .max_buf_size(shared.max_header_bytes);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(shared.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(shared.keep_alive_interval)
        .keep_alive_timeout(shared.keep_alive_timeout);
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(connection);
    let result = loop {
        let wake = activity.idle_deadline(shared.idle_timeout);
        tokio::select! {
            result = connection.as_mut() => break result,
            () = tokio::time::sleep_until(wake.into()) => {
                if activity.idle_for().is_some_and(|idle| idle >= shared.idle_timeout) {
                    count(&shared.stats.idle_closed);
                    debug!(client = %client_ip, "closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    // A request that raced the GOAWAY may finish; a client that just holds the
                    // connection open is dropped.
                    break loop {
                        match tokio::time::timeout(shared.client_timeout, connection.as_mut()).await {
                            Ok(result) => break result,
                            Err(_) if activity.idle_for().is_some() => break Ok(()),
                            Err(_) => continue,
                        }
                    };
                }
            }
        }
    };
    if let Err(e) = result {
        debug!(client = %client_ip, error = %e, "connection ended with an error");
    }
}

/// The CONNECT listener: plain HTTP/1.1 whose only method is CONNECT.
pub(super) async fn serve_connect(
    stream: TcpStream,
    client_ip: IpAddr,
    shared: Arc<Shared>,
    permit: Permit,
) {
    let service_shared = shared.clone();
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let (shared, permit) = (service_shared.clone(), permit.clone());
        async move { Ok::<_, Infallible>(connect(req, client_ip, shared, permit)) }
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

fn connect(
    req: Request<Incoming>,
    client_ip: IpAddr,
    shared: Arc<Shared>,
    permit: Permit,
) -> Response<Body> {
    if req.method() != Method::CONNECT {
        return plain(
            StatusCode::METHOD_NOT_ALLOWED,
            "aws-proxy only tunnels HTTPS: use it as HTTPS_PROXY (CONNECT host:443)\n",
        );
    }
    let Some(authority) = req.uri().authority().cloned() else {
        return plain(StatusCode::BAD_REQUEST, "CONNECT needs host:port\n");
    };
    if authority.as_str().contains('@') {
        count(&shared.stats.bad_authorities);
        return plain(
            StatusCode::BAD_REQUEST,
            "CONNECT to a host with user information (`@`) is refused\n",
        );
    }
    let host = authority.host().trim_end_matches('.').to_ascii_lowercase();
    let port = authority.port_u16().unwrap_or(443);
    if is_aws_host(&host) {
        // Whatever port the client named, the requests inside go to the endpoint's port 443.
        tokio::spawn(async move {
            match hyper::upgrade::on(req).await {
                Ok(upgraded) => {
                    intercept(TokioIo::new(upgraded), client_ip, Some(host), shared, permit).await
                }
                Err(e) => debug!(client = %client_ip, error = %e, "CONNECT upgrade failed"),
            }
        });
        return Response::new(empty());
    }
    if shared
        .passthrough
        .iter()
        .any(|suffix| host == *suffix || host.ends_with(&format!(".{suffix}")))
    {
        count(&shared.stats.tunnels);
        tokio::spawn(async move {
            let _permit = permit;
            let upgraded = match hyper::upgrade::on(req).await {
                Ok(u) => u,
                Err(e) => return debug!(error = %e, "CONNECT upgrade failed"),
            };
            match TcpStream::connect((host.as_str(), port)).await {
                Ok(upstream) => tunnel(TokioIo::new(upgraded), upstream, &shared).await,
                Err(e) => debug!(host, error = %e, "pass-through tunnel could not connect"),
            }
        });
        return Response::new(empty());
    }
    count(&shared.stats.refused_hosts);
    debug!(client = %client_ip, host, "refused a CONNECT to a host that is not AWS");
    plain(StatusCode::FORBIDDEN, &format!("aws-proxy forwards only AWS hosts; {host} is not one (add it with --passthrough-host to tunnel it)\n"))
}

/// Copies both ways until either side closes or no byte moves for the idle timeout.
async fn tunnel<C: AsyncRead + AsyncWrite + Unpin>(
    client: C,
    upstream: TcpStream,
    shared: &Shared,
) {
    let activity = Activity::new();
    let (mut client, mut upstream) = (
        Stamped { io: client, activity: activity.clone() },
        Stamped { io: upstream, activity: activity.clone() },
    );
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    tokio::pin!(copy);
    loop {
        let wake = activity.idle_deadline(shared.idle_timeout);
        tokio::select! {
            _ = copy.as_mut() => return,
            () = tokio::time::sleep_until(wake.into()) => {
                if activity.idle_for().is_some_and(|idle| idle >= shared.idle_timeout) {
                    count(&shared.stats.idle_closed);
                    return debug!("closing an idle pass-through tunnel");
                }
            }
        }
    }
}

// === Activity ===

/// Requests in flight on a connection, and since when it has had none.
#[derive(Clone)]
struct Activity(Arc<ActivityState>);

struct ActivityState {
    in_flight: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Activity {
    fn new() -> Self {
        Self(Arc::new(ActivityState {
            in_flight: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }))
    }

    fn begin(&self) -> InFlight {
        self.0.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(self.clone())
    }

    /// Marks a moment of activity (a byte through a tunnel).
    fn touch(&self) {
        *self.0.idle_since.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
    }

    /// How long nothing has been in flight; `None` while something is.
    fn idle_for(&self) -> Option<Duration> {
        let since = *self.0.idle_since.lock().unwrap_or_else(PoisonError::into_inner);
        (self.0.in_flight.load(Ordering::SeqCst) == 0).then(|| since.elapsed())
    }

    /// When to look again: when the connection will have been idle for `timeout`, or a whole
    /// `timeout` from now while a request is in flight.
    fn idle_deadline(&self, timeout: Duration) -> Instant {
        let since = *self.0.idle_since.lock().unwrap_or_else(PoisonError::into_inner);
        match self.0.in_flight.load(Ordering::SeqCst) {
            0 => since + timeout,
            _ => Instant::now() + timeout,
        }
    }
}

/// One request in flight; the connection's idle clock restarts when the last one ends.
struct InFlight(Activity);

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut since = self.0 .0.idle_since.lock().unwrap_or_else(PoisonError::into_inner);
        if self.0 .0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            *since = Instant::now();
        }
    }
}

/// A response body that keeps its request in flight until it is sent or dropped.
struct Tracked {
    body: Body,
    _in_flight: InFlight,
}

impl hyper::body::Body for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// A stream that marks activity whenever bytes move through it.
struct Stamped<S> {
    io: S,
    activity: Activity,
}

impl<S: AsyncRead + Unpin> AsyncRead for Stamped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.io).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Stamped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}
