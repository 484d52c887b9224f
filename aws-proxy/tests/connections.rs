//! The proxy's reach, attacked: idle HTTP/2 connections piling up, more connections than the cap,
//! a request in flight that must not be cut by the idle timer, a Host with user information and
//! a Host naming another port (which must never be dialled). Real sockets, real TLS, the proxy in
//! front of the stand-in S3 of `support/lab.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, StreamBody};
use hyper::body::Frame;
use hyper::{Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use support::lab::{get, lab, lab_with, signed_get, tls_to};

mod support;

const HOST: &str = "invoices.s3.us-east-1.amazonaws.com";
/// The client preface and an empty SETTINGS frame (RFC 9113 3.4).
const H2_HELLO: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
const SETTINGS_ACK: &[u8] = b"\x00\x00\x00\x04\x01\x00\x00\x00\x00";

/// Reads until the peer closes (EOF, or the TLS layer's error for a close without close_notify);
/// `false` if it is still open after `wait`.
async fn closed_within<S: tokio::io::AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connections_are_closed_and_the_cap_refuses_the_excess() {
    let lab = lab_with("idle-h2", true, |args| {
        args.idle_timeout_secs = 2;
        args.max_connections = 200;
        args.client_timeout_secs = 10;
    })
    .await;

    // 200 HTTP/2 connections that say hello, take the server's SETTINGS, and then say nothing.
    let mut idle = Vec::new();
    for i in 0..200 {
        let mut tls = tls_to(lab.proxy.tls_addr(), HOST, &lab, &[b"h2"])
            .await
            .unwrap_or_else(|e| panic!("connection {i} is under the cap: {e}"));
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        tls.write_all(H2_HELLO).await.unwrap();
        let mut frame = [0u8; 9];
        tls.read_exact(&mut frame)
            .await
            .unwrap_or_else(|e| panic!("connection {i}: no SETTINGS from the server: {e}"));
        assert_eq!(frame[3], 4, "the server's first frame is SETTINGS: {frame:?}");
        let mut payload =
            vec![
                0u8;
                usize::from(frame[2]) | usize::from(frame[1]) << 8 | usize::from(frame[0]) << 16
            ];
        tls.read_exact(&mut payload).await.unwrap();
        tls.write_all(SETTINGS_ACK).await.unwrap();
        idle.push(tls);
    }
    let opened = Instant::now();
    assert_eq!(lab.proxy.stats().snapshot().connections, 200);

    // The 201st connection is closed before its handshake ends, and counted.
    let excess = tls_to(lab.proxy.tls_addr(), HOST, &lab, &[b"h2"]).await;
    assert!(excess.is_err(), "a connection over --max-connections was served");
    assert_eq!(lab.proxy.stats().snapshot().refused_connections, 1);

    // Past the idle timeout (2 s) the proxy closes every one of them.
    let mut still_open = 0;
    for tls in &mut idle {
        if !closed_within(tls, Duration::from_secs(15).saturating_sub(opened.elapsed())).await {
            still_open += 1;
        }
    }
    assert_eq!(
        still_open, 0,
        "{still_open} of 200 idle HTTP/2 connections still open 15 s after they were opened"
    );
    assert!(
        opened.elapsed() >= Duration::from_millis(1500),
        "closed before the idle timeout: {:?}",
        opened.elapsed()
    );
    assert_eq!(lab.proxy.stats().snapshot().idle_closed, 200);

    // Their permits are back: new connections are served again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match tokio::time::timeout(Duration::from_secs(5), async {
            get(&lab, HOST, signed_get(HOST, "/after")).await
        })
        .await
        {
            Ok((StatusCode::OK, _)) => break,
            other => assert!(
                Instant::now() < deadline,
                "no connection served after the idle ones closed: {other:?}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_request_in_flight_is_not_cut_by_the_idle_timeout() {
    let lab = lab_with("in-flight", true, |args| args.idle_timeout_secs = 1).await;
    let tls = tls_to(lab.proxy.tls_addr(), HOST, &lab, &[b"h2"]).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(connection);
    // An upload whose body trickles in over three idle timeouts.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
    let body = StreamBody::new(Box::pin(tokio_stream_from(rx)));
    let request = Request::put(format!("https://{HOST}/slow/upload.bin"))
        .header("content-length", "3")
        .body(body)
        .unwrap();
    let sending = tokio::spawn(async move {
        for chunk in [b"a", b"b", b"c"] {
            tokio::time::sleep(Duration::from_millis(1000)).await;
            tx.send(Ok(Frame::data(Bytes::from_static(chunk)))).await.unwrap();
        }
    });
    let response = tokio::time::timeout(Duration::from_secs(15), sender.send_request(request))
        .await
        .expect("an answer")
        .expect("the connection stayed up");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        &response.into_body().collect().await.unwrap().to_bytes()[..],
        b"/slow/upload.bin 3",
        "the whole body went through"
    );
    sending.await.unwrap();
    assert_eq!(lab.proxy.stats().snapshot().idle_closed, 0);
}

/// An mpsc receiver as a `Stream`, for `StreamBody`.
fn tokio_stream_from<T: Send + 'static>(
    rx: tokio::sync::mpsc::Receiver<T>,
) -> impl futures::Stream<Item = T> {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

#[tokio::test]
async fn a_host_with_user_information_is_refused_and_nothing_is_forwarded() {
    let lab = lab("userinfo", true).await;
    for host in [
        format!("evil.example@{HOST}"),
        format!("{HOST}@evil.example"),
        format!("user:secret@{HOST}:443"),
    ] {
        let (status, body) = get(&lab, HOST, signed_get(&host, "/a.pdf")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "Host {host}: {body}");
        assert!(body.contains("user information"), "{body}");
    }
    // The same in a CONNECT target.
    let mut tcp = TcpStream::connect(lab.proxy.connect_addr()).await.unwrap();
    tcp.write_all(
        format!("CONNECT evil.example@{HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = vec![0u8; 512];
    let n = tcp.read(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 400"), "{reply}");
    assert_eq!(lab.served.load(Ordering::SeqCst), 0, "nothing reached the upstream");
    assert_eq!(lab.proxy.stats().snapshot().bad_authorities, 4);
}

/// A listener on a port a Host might name; counts who connects.
async fn bait() -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let dialled = Arc::new(AtomicUsize::new(0));
    let counter = dialled.clone();
    tokio::spawn(async move {
        while let Ok((_stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    });
    (port, dialled)
}

#[tokio::test]
async fn the_upstream_port_is_always_443() {
    let lab = lab("port", true).await;
    let (port, dialled) = bait().await;

    // A Host naming another port is refused; that port is never dialled.
    let (status, body) = get(&lab, HOST, signed_get(&format!("{HOST}:{port}"), "/a.pdf")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.contains("port 443 only"), "{body}");
    let (status, _) = get(&lab, HOST, signed_get(&format!("{HOST}:8080"), "/a.pdf")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // `:443` is the endpoint's own port: served.
    let (status, body) = get(&lab, HOST, signed_get(&format!("{HOST}:443"), "/b.pdf")).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "/b.pdf 0"));

    // A CONNECT naming another port is intercepted as usual: the requests inside go to 443.
    let mut tcp = TcpStream::connect(lab.proxy.connect_addr()).await.unwrap();
    tcp.write_all(
        format!("CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut reply = vec![0u8; 256];
    let n = tcp.read(&mut reply).await.unwrap();
    assert!(reply[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&reply[..n]));
    let tls = tokio_rustls::TlsConnector::from(support::client_tls(
        lab.proxy_ca.ca_pem(),
        &[b"http/1.1"],
    ))
    .connect(rustls::pki_types::ServerName::try_from(HOST).unwrap(), tcp)
    .await
    .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let request = Request::get("/c.pdf").header("host", HOST).body(Empty::<Bytes>::new()).unwrap();
    assert_eq!(sender.send_request(request).await.unwrap().status(), StatusCode::OK);

    assert_eq!(dialled.load(Ordering::SeqCst), 0, "the proxy dialled the port a client named");
    assert_eq!(lab.served.load(Ordering::SeqCst), 2);
}
