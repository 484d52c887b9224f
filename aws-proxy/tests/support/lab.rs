//! The proxy in front of a small HTTPS stand-in for S3, with real sockets and real TLS: what
//! `proxy.rs` and `connections.rs` test against.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use aws_proxy::ca::{server_config_with, CertificateAuthority};
use aws_proxy::proxy::{Proxy, ProxyArgs};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use observation_ship::Outgoing;
use rustls::pki_types::ServerName;
use testkit::process::TempDir;
use tokio::net::{TcpListener, TcpStream};

/// An HTTPS stand-in for S3: `GET /denied/...` answers 403 with an S3 error document; anything
/// else 200 with the request's path and Host echoed. Counts requests.
pub async fn start_upstream(ca: &CertificateAuthority) -> (SocketAddr, Arc<AtomicUsize>) {
    let leaf = ca
        .issue(&[
            "*.s3.us-east-1.amazonaws.com".into(),
            "s3.us-east-1.amazonaws.com".into(),
            "sts.us-east-1.amazonaws.com".into(),
        ])
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config_with(
        leaf.certified_key,
        &[b"http/1.1"],
    )));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = Arc::new(AtomicUsize::new(0));
    let counter = served.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let (acceptor, counter) = (acceptor.clone(), counter.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service = hyper::service::service_fn(
                    move |req: Request<hyper::body::Incoming>| {
                        counter.fetch_add(1, Ordering::SeqCst);
                        async move {
                            let host = req
                                .headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let path = req.uri().path().to_owned();
                            let body = req.into_body().collect().await.unwrap().to_bytes();
                            let response = if path.starts_with("/denied") {
                                Response::builder()
                                .status(403)
                                .header("content-type", "application/xml")
                                .body(Full::new(Bytes::from_static(b"<Error><Code>AccessDenied</Code><Message>Access Denied</Message></Error>")))
                            } else {
                                Response::builder()
                                    .header("x-echo-host", host)
                                    .body(Full::new(Bytes::from(format!("{path} {}", body.len()))))
                            };
                            Ok::<_, std::convert::Infallible>(response.unwrap())
                        }
                    },
                );
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, served)
}

pub struct Lab {
    pub proxy: Proxy,
    pub proxy_ca: Arc<CertificateAuthority>,
    pub outgoing: Outgoing,
    /// Requests the upstream answered.
    pub served: Arc<AtomicUsize>,
    pub upstream: SocketAddr,
    pub _dir: TempDir,
}

/// The proxy in front of the stand-in upstream. `trust_upstream: false` leaves the upstream's CA
/// out of the proxy's trust.
pub async fn lab(name: &str, trust_upstream: bool) -> Lab {
    lab_with(name, trust_upstream, |_| {}).await
}

/// [`lab`] with the proxy's arguments adjusted by `adjust`.
pub async fn lab_with(
    name: &str,
    trust_upstream: bool,
    adjust: impl FnOnce(&mut ProxyArgs),
) -> Lab {
    let dir = TempDir::new(&format!("aws-proxy-test-{name}"));
    let upstream_ca = CertificateAuthority::generate().unwrap();
    let (upstream, served) = start_upstream(&upstream_ca).await;
    let ca_file = dir.path().join("upstream-ca.crt");
    let trusted = if trust_upstream {
        upstream_ca.ca_pem().to_owned()
    } else {
        CertificateAuthority::generate().unwrap().ca_pem().to_owned()
    };
    std::fs::write(&ca_file, trusted).unwrap();
    let mut args = ProxyArgs {
        upstream_ca_file: Some(ca_file),
        connect_to: vec![format!("amazonaws.com={upstream}")],
        passthrough_hosts: vec!["passthrough.test".into()],
        client_timeout_secs: 1,
        max_header_bytes: 16 * 1024,
        ..ProxyArgs::loopback()
    };
    adjust(&mut args);
    let proxy_ca = Arc::new(CertificateAuthority::generate().unwrap());
    let outgoing = Outgoing::new(1000);
    let proxy = Proxy::start(&args, proxy_ca.clone(), outgoing.clone()).await.unwrap();
    Lab { proxy, proxy_ca, outgoing, served, upstream, _dir: dir }
}

pub async fn tls_to(
    addr: SocketAddr,
    host: &str,
    lab: &Lab,
    alpn: &[&[u8]],
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    tokio_rustls::TlsConnector::from(super::client_tls(lab.proxy_ca.ca_pem(), alpn))
        .connect(ServerName::try_from(host.to_owned()).unwrap(), tcp)
        .await
}

/// One HTTP/1.1 request over TLS to the proxy's SNI port: (status, body).
pub async fn get(lab: &Lab, host: &str, request: Request<Empty<Bytes>>) -> (StatusCode, String) {
    let tls = tls_to(lab.proxy.tls_addr(), host, lab, &[b"http/1.1"]).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    (
        status,
        String::from_utf8_lossy(&response.into_body().collect().await.unwrap().to_bytes())
            .into_owned(),
    )
}

pub fn signed_get(host: &str, path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", host)
        .header("x-amz-date", "20261124T120000Z")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAPROXYTEST0000001/20261124/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00ff",
        )
        .body(Empty::new())
        .unwrap()
}

pub async fn recorded(lab: &Lab) -> Vec<model::observation::AwsOperation> {
    // The sink is drained the way the shipper drains it: through a mapper stand-in that keeps batches.
    let received = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = received.clone();
    let app = axum::Router::new().route(
        "/v1/observations",
        axum::routing::post(
            move |axum::Json(batch): axum::Json<model::observation::ObservationBatch>| {
                let keep = keep.clone();
                async move {
                    keep.lock().unwrap().extend(batch.aws);
                    "{}"
                }
            },
        ),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let shipper = observation_ship::Shipper {
        mapper_url: format!("http://{addr}"),
        credentials: observation_ship::Credentials::Shared("t".into()),
        source: "aws-proxy".into(),
        http: reqwest::Client::new(),
        max_batch: 100,
    };
    shipper.flush(&lab.outgoing).await.unwrap();
    server.abort();
    let calls = received.lock().unwrap().clone();
    calls
}
