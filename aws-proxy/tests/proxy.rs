//! The proxy's failure modes with real sockets and real TLS: garbage on the TLS port, a client
//! that never finishes its handshake, a huge header, a request with no signature, non-AWS hosts
//! (SNI, CONNECT and Host), an upstream whose certificate is not trusted, an upstream that is
//! down, upstream errors passed back unchanged, HTTP/2 from the client, and a CA kept in a
//! Kubernetes Secret (testkit's stand-in API server).
//!
//! The upstream here is a small HTTPS server in the test that answers like S3 (a success or an
//! S3-style XML error); the real SDK against a real emulator is in `sdk.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use aws_proxy::ca::{CaStore, CertificateAuthority};
use aws_proxy::proxy::{Proxy, ProxyArgs};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use observation_ship::Outgoing;
use testkit::process::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use support::lab::{get, lab, recorded, signed_get, tls_to, Lab};

mod support;

#[tokio::test]
async fn a_signed_request_is_forwarded_and_recorded_without_the_key() {
    let lab = lab("signed", true).await;
    let (status, body) = get(
        &lab,
        "invoices.s3.us-east-1.amazonaws.com",
        signed_get("invoices.s3.us-east-1.amazonaws.com", "/2026/a.pdf"),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "/2026/a.pdf 0"));
    let calls = recorded(&lab).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].client_ip.to_string(), "127.0.0.1");
    assert_eq!((calls[0].service.as_str(), calls[0].action.as_str()), ("s3", "s3:GetObject"));
    assert_eq!(calls[0].resource.as_deref(), Some("arn:aws:s3:::invoices/2026/a.pdf"));
    assert!(!format!("{calls:?}").contains("AKIAPROXYTEST"), "the access key id is never recorded");
}

#[tokio::test]
async fn a_request_with_no_signature_is_still_forwarded_and_recorded_as_far_as_known() {
    let lab = lab("anonymous", true).await;
    let request = Request::get("/public/logo.png")
        .header("host", "assets.s3.us-east-1.amazonaws.com")
        .body(Empty::new())
        .unwrap();
    let (status, _) = get(&lab, "assets.s3.us-east-1.amazonaws.com", request).await;
    assert_eq!(status, StatusCode::OK);
    let calls = recorded(&lab).await;
    assert_eq!(calls.len(), 1);
    assert_eq!(
        (calls[0].service.as_str(), calls[0].resource.as_deref()),
        ("s3", Some("arn:aws:s3:::assets/public/logo.png"))
    );
}

#[tokio::test]
async fn the_upstreams_own_error_reaches_the_client_unchanged() {
    let lab = lab("upstream-error", true).await;
    let (status, body) = get(
        &lab,
        "invoices.s3.us-east-1.amazonaws.com",
        signed_get("invoices.s3.us-east-1.amazonaws.com", "/denied/x"),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(body.contains("<Code>AccessDenied</Code>"), "{body}");
}

#[tokio::test]
async fn an_upstream_with_an_untrusted_certificate_is_never_sent_the_request() {
    let lab = lab("untrusted", false).await;
    let (status, body) = get(
        &lab,
        "invoices.s3.us-east-1.amazonaws.com",
        signed_get("invoices.s3.us-east-1.amazonaws.com", "/a"),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains("could not reach"), "{body}");
    assert_eq!(lab.served.load(Ordering::SeqCst), 0);
    assert_eq!(lab.proxy.stats().snapshot().upstream_errors, 1);
}

#[tokio::test]
async fn an_upstream_that_is_down_gives_502_in_bounded_time() {
    let dir = TempDir::new("aws-proxy-test-down");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let args =
        ProxyArgs { connect_to: vec![format!("amazonaws.com={closed}")], ..ProxyArgs::loopback() };
    let proxy_ca = Arc::new(CertificateAuthority::generate().unwrap());
    let outgoing = Outgoing::new(10);
    let proxy = Proxy::start(&args, proxy_ca.clone(), outgoing.clone()).await.unwrap();
    let lab =
        Lab { proxy, proxy_ca, outgoing, served: Arc::default(), upstream: closed, _dir: dir };
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(20),
        get(&lab, "sts.us-east-1.amazonaws.com", signed_get("sts.us-east-1.amazonaws.com", "/")),
    )
    .await
    .expect("an answer, not a hang");
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
}

#[tokio::test]
async fn non_aws_hosts_are_refused_by_sni_connect_and_host() {
    let lab = lab("non-aws", true).await;
    // SNI for another host: no certificate, the handshake fails.
    assert!(tls_to(lab.proxy.tls_addr(), "example.com", &lab, &[b"http/1.1"]).await.is_err());
    // CONNECT to another host: 403.
    let mut tcp = TcpStream::connect(lab.proxy.connect_addr()).await.unwrap();
    tcp.write_all(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
        .await
        .unwrap();
    let mut reply = vec![0u8; 512];
    let n = tcp.read(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 403"), "{reply}");
    assert!(reply.contains("--passthrough-host"), "the refusal says how to allow it: {reply}");
    // An AWS SNI but another Host header: 421, never forwarded.
    let request =
        Request::get("/").header("host", "internal.corp.example").body(Empty::new()).unwrap();
    let (status, _) = get(&lab, "s3.us-east-1.amazonaws.com", request).await;
    assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);
    assert_eq!(lab.served.load(Ordering::SeqCst), 0);
    // A plain HTTP request to the CONNECT port: told to use CONNECT.
    let mut tcp = TcpStream::connect(lab.proxy.connect_addr()).await.unwrap();
    tcp.write_all(b"GET http://s3.amazonaws.com/ HTTP/1.1\r\nHost: s3.amazonaws.com\r\n\r\n")
        .await
        .unwrap();
    let mut reply = vec![0u8; 512];
    let n = tcp.read(&mut reply).await.unwrap();
    let reply = String::from_utf8_lossy(&reply[..n]);
    assert!(reply.starts_with("HTTP/1.1 405") && reply.contains("HTTPS_PROXY"), "{reply}");
}

#[tokio::test]
async fn garbage_and_stalled_handshakes_are_dropped_and_the_proxy_keeps_serving() {
    let lab = lab("garbage", true).await;
    let mut garbage = TcpStream::connect(lab.proxy.tls_addr()).await.unwrap();
    garbage
        .write_all(b"GET / HTTP/1.1\r\nHost: s3.amazonaws.com\r\n\r\n\x00\xff\x16\x03garbage")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let mut answer = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), garbage.read_to_end(&mut answer))
        .await
        .expect("the proxy closes a garbage connection");
    assert!(
        closed.is_err() || answer.is_empty() || answer[0] == 0x15,
        "at most a TLS alert, then a close: {answer:?}"
    );

    // A client that opens TCP and says nothing: closed after the client timeout (1 s here).
    let mut stalled = TcpStream::connect(lab.proxy.tls_addr()).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), stalled.read(&mut buf))
        .await
        .expect("the proxy drops a stalled handshake");
    assert!(matches!(closed, Ok(0) | Err(_)));
    assert!(lab.proxy.stats().snapshot().handshake_failures >= 2);

    let (status, _) = get(
        &lab,
        "invoices.s3.us-east-1.amazonaws.com",
        signed_get("invoices.s3.us-east-1.amazonaws.com", "/ok"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "still serving");
}

#[tokio::test]
async fn a_huge_header_is_refused_and_nothing_is_forwarded() {
    let lab = lab("huge-header", true).await;
    let request = Request::get("/x")
        .header("host", "invoices.s3.us-east-1.amazonaws.com")
        .header("x-amz-meta-blob", "a".repeat(64 * 1024))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let tls =
        tls_to(lab.proxy.tls_addr(), "invoices.s3.us-east-1.amazonaws.com", &lab, &[b"http/1.1"])
            .await
            .unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    match sender.send_request(request).await {
        Ok(response) => assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
        Err(e) => assert!(e.is_closed() || e.is_incomplete_message() || e.is_canceled(), "{e}"),
    }
    assert_eq!(lab.served.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn http2_clients_are_served() {
    let lab = lab("h2", true).await;
    let tls = tls_to(lab.proxy.tls_addr(), "invoices.s3.us-east-1.amazonaws.com", &lab, &[b"h2"])
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        TokioIo::new(tls),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = Request::put("https://invoices.s3.us-east-1.amazonaws.com/up/b.txt")
        .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIAPROXYTEST0000001/20261124/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00")
        .header("content-length", "5")
        .body(Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-echo-host"], "invoices.s3.us-east-1.amazonaws.com");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"/up/b.txt 5", "the body went through whole");
    let calls = recorded(&lab).await;
    assert_eq!(calls[0].action, "s3:PutObject");
}

#[tokio::test]
async fn the_ca_kept_in_a_secret_is_created_once_and_shared() {
    let api = testkit::kube_api::FakeApiServer::start().await.unwrap();
    api.register::<k8s_openapi::api::core::v1::Secret>();
    let store = CaStore::Secret { namespace: "intentmap".into(), name: "aws-proxy-ca".into() };
    let (a, b) = tokio::join!(
        CertificateAuthority::load_or_create(&store, Some(api.client())),
        CertificateAuthority::load_or_create(&store, Some(api.client()))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.ca_pem(), b.ca_pem(), "two replicas starting together end up with one CA");
    let again = CertificateAuthority::load_or_create(&store, Some(api.client())).await.unwrap();
    assert_eq!(again.ca_pem(), a.ca_pem(), "a restart keeps the CA");
    let secret: k8s_openapi::api::core::v1::Secret = api.get("intentmap", "aws-proxy-ca").unwrap();
    assert_eq!(String::from_utf8(secret.data.unwrap()["ca.crt"].0.clone()).unwrap(), a.ca_pem());
}
