//! The proxy's cost: small S3 GETs with keep-alive, straight to the emulator versus through the
//! real `aws-proxy` binary (SNI mode), in the same run.
//!
//! Two emulators, each measured direct and proxied: `moto` in server mode (the AWS emulator the
//! tests use; from `target/pytools`: without it the bench stops and names the script that
//! installs it), and an in-process HTTPS server answering
//! S3 `GetObject` with a 1 KiB object, much faster than moto, so that the proxy's own cost is not
//! hidden behind a slow upstream. The proxy runs as its own process (so its RSS is its own) and
//! ships the recorded calls to a sink standing in for the mapper. Everything shares this machine's
//! cores: against the fast stand-in, the proxy's extra TLS termination and origination compete
//! with the client and the server for the same CPU.
//!
//! Phases: latency (one connection, sequential requests: p50/p99 direct vs proxied, the
//! difference is the added latency) and throughput (`BENCH_CONNECTIONS` connections, 16, for
//! `BENCH_SECONDS`, 5, each way). Targets: at most 1 ms added p99, at least 80 % of the direct
//! throughput.
//!
//! `cargo bench -p aws-proxy --bench proxy`

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_proxy::ca::CertificateAuthority;
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Full};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use support::free_port;
use tokio::net::{TcpListener, TcpStream};

#[path = "../tests/support/mod.rs"]
mod support;

const HOST: &str = "invoices.s3.us-east-1.amazonaws.com";
const OBJECT: usize = 1024;
const LATENCY_REQUESTS: usize = 5_000;
const TARGET_ADDED_P99_MS: f64 = 1.0;
const TARGET_THROUGHPUT_RATIO: f64 = 0.8;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The stand-in S3: answers every request with a 1 KiB object.
async fn start_emulator(ca: &CertificateAuthority) -> SocketAddr {
    let leaf = ca.issue(&["*.s3.us-east-1.amazonaws.com".to_owned()]).unwrap();
    let config = Arc::new(aws_proxy::ca::server_config_with(leaf.certified_key, &[b"http/1.1"]));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let object = Bytes::from(vec![b'x'; OBJECT]);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let _ = stream.set_nodelay(true);
            let (acceptor, object) = (acceptor.clone(), object.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let service =
                    hyper::service::service_fn(move |_req: Request<hyper::body::Incoming>| {
                        let object = object.clone();
                        async move {
                            let mut response = Response::new(Full::new(object));
                            response
                                .headers_mut()
                                .insert("etag", "\"0123456789abcdef\"".parse().unwrap());
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    addr
}

/// Creates the bucket and the 100 objects the GETs read, straight at `addr`.
async fn seed_objects(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) {
    for (n, path) in std::iter::once("/".to_owned())
        .chain((0..100).map(|n| format!("/2026/11/inv-{n}.pdf")))
        .enumerate()
    {
        let body = if n == 0 { Bytes::new() } else { Bytes::from(vec![b'x'; OBJECT]) };
        let request = Request::put(path)
            .header("host", HOST)
            .header("content-length", body.len())
            .header("authorization", "AWS4-HMAC-SHA256 Credential=AKIABENCHMARK0000001/20261124/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00")
            .body(Full::new(body))
            .unwrap();
        let mut sender = connect::<Full<Bytes>>(addr, tls.clone()).await;
        let response = sender.send_request(request).await.unwrap();
        assert!(response.status().is_success(), "seeding moto: {}", response.status());
        let _ = response.into_body().collect().await;
    }
}

/// The mapper's stand-in: takes observation batches and counts the calls in them.
async fn start_sink(received: Arc<AtomicU64>) -> SocketAddr {
    let app = axum::Router::new().route(
        "/v1/observations",
        axum::routing::post(move |body: axum::body::Bytes| {
            let received = received.clone();
            async move {
                let batch: model::observation::ObservationBatch =
                    serde_json::from_slice(&body).unwrap();
                received.fetch_add(batch.aws.len() as u64, Ordering::Relaxed);
                "{}"
            }
        }),
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

struct ProxyProcess {
    child: std::process::Child,
    tls: SocketAddr,
    ca_file: PathBuf,
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProxyProcess {
    /// `(VmRSS, VmHWM)` in MiB.
    fn rss_mib(&self) -> (f64, f64) {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find(|l| l.starts_with(name))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
                .unwrap_or(0.0)
                / 1024.0
        };
        (field("VmRSS:"), field("VmHWM:"))
    }
}

fn start_proxy(
    dir: &Path,
    emulator: SocketAddr,
    emulator_ca: &Path,
    sink: SocketAddr,
) -> ProxyProcess {
    std::fs::create_dir_all(dir).unwrap();
    let tls: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_aws-proxy"))
        .arg("proxy")
        .args(["--ca-dir", dir.join("proxy-ca").to_str().unwrap()])
        .args(["--tls-listen", &tls.to_string()])
        .args(["--connect-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--health-listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--upstream-ca-file", emulator_ca.to_str().unwrap()])
        .args(["--connect-to", &format!("amazonaws.com={emulator}")])
        .args(["--mapper-url", &format!("http://{sink}")])
        .args(["--shared-token", "bench"])
        .env("RUST_LOG", "warn")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .env_remove("KUBECONFIG")
        .spawn()
        .expect("starting aws-proxy");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(tls).is_err() {
        assert!(Instant::now() < deadline, "aws-proxy did not listen on {tls}");
        std::thread::sleep(Duration::from_millis(20));
    }
    ProxyProcess { child, tls, ca_file: dir.join("proxy-ca/ca.crt") }
}

fn client_config(ca_pem_file: &Path) -> Arc<rustls::ClientConfig> {
    support::client_tls(&std::fs::read_to_string(ca_pem_file).unwrap(), &[b"http/1.1"])
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// One keep-alive HTTP/1.1 connection to `addr`, TLS for `HOST`.
async fn connect<B>(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
) -> hyper::client::conn::http1::SendRequest<B>
where
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let tcp = TcpStream::connect(addr).await.unwrap();
    tcp.set_nodelay(true).unwrap();
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(ServerName::try_from(HOST).unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// A GetObject as an SDK signs it (the signature is not checked by the stand-in).
/// A client's connection that it keeps alive as long as the server does (moto closes every
/// connection after one response; then the next request opens a new one, as an SDK would).
struct Conn {
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    sender: Option<Sender>,
    /// New TLS connections opened, the first included.
    opened: usize,
}

impl Conn {
    async fn open(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Conn {
        let mut conn = Conn { addr, tls, sender: None, opened: 0 };
        conn.reconnect().await;
        conn
    }

    async fn reconnect(&mut self) {
        self.sender = Some(connect(self.addr, self.tls.clone()).await);
        self.opened += 1;
    }

    /// A GetObject as an SDK signs it (the signature is not checked by either emulator).
    async fn get_object(&mut self, n: usize) {
        let usable = match self.sender.as_mut() {
            Some(sender) => sender.ready().await.is_ok(),
            None => false,
        };
        if !usable {
            self.reconnect().await;
        }
        let request = Request::get(format!("/2026/11/inv-{}.pdf", n % 100))
            .header("host", HOST)
            .header("x-amz-date", "20261124T120000Z")
            .header("x-amz-content-sha256", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
            .header(
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKIABENCHMARK0000001/20261124/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000",
            )
            .body(Empty::new())
            .unwrap();
        let response =
            self.sender.as_mut().expect("connected").send_request(request).await.unwrap();
        assert!(response.status().is_success(), "{}", response.status());
        let closing = response
            .headers()
            .get("connection")
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body.len(), OBJECT);
        if closing {
            self.sender = None;
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize].as_secs_f64() * 1000.0
}

/// Sequential requests on one kept-alive connection: (p50, p99) in ms and the TLS connections opened.
async fn latency(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    requests: usize,
) -> (f64, f64, usize) {
    let mut conn = Conn::open(addr, tls).await;
    for n in 0..200 {
        conn.get_object(n).await;
    }
    let mut samples = Vec::with_capacity(requests);
    for n in 0..requests {
        let start = Instant::now();
        conn.get_object(n).await;
        samples.push(start.elapsed());
    }
    samples.sort();
    (percentile(&samples, 0.5), percentile(&samples, 0.99), conn.opened)
}

/// `connections` keep-alive connections for `seconds`: requests/s.
async fn throughput(
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    connections: usize,
    seconds: f64,
) -> f64 {
    let done = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs_f64(seconds);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (tls, done) = (tls.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = Conn::open(addr, tls).await;
            let mut n = 0;
            while Instant::now() < until {
                conn.get_object(n).await;
                n += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Latency and throughput, direct to `upstream` and through the proxy, printed.
async fn compare(
    label: &str,
    upstream: SocketAddr,
    direct_tls: Arc<rustls::ClientConfig>,
    proxy: SocketAddr,
    proxy_tls: Arc<rustls::ClientConfig>,
) {
    let connections: usize = env_or("BENCH_CONNECTIONS", 16);
    let seconds: f64 = env_or("BENCH_SECONDS", 5.0);
    let requests: usize = env_or("BENCH_LATENCY_REQUESTS", LATENCY_REQUESTS);
    println!("\n== {label}: small S3 GETs ({OBJECT} B objects, keep-alive), direct vs through aws-proxy (SNI) ==");
    let (direct_p50, direct_p99, direct_opened) =
        latency(upstream, direct_tls.clone(), requests).await;
    let (proxy_p50, proxy_p99, proxy_opened) = latency(proxy, proxy_tls.clone(), requests).await;
    println!("latency, 1 client, {requests} sequential requests:");
    println!("  direct  p50 {direct_p50:.3} ms  p99 {direct_p99:.3} ms   ({direct_opened} TLS connections opened by the client)");
    println!("  proxied p50 {proxy_p50:.3} ms  p99 {proxy_p99:.3} ms   ({proxy_opened} TLS connections opened by the client)");
    let (added_p50, added_p99) = (proxy_p50 - direct_p50, proxy_p99 - direct_p99);
    println!(
        "  added   p50 {added_p50:.3} ms  p99 {added_p99:.3} ms   (target p99 <= {TARGET_ADDED_P99_MS} ms: {})",
        if added_p99 <= TARGET_ADDED_P99_MS { "met" } else { "NOT met" }
    );
    let direct_rps = throughput(upstream, direct_tls, connections, seconds).await;
    let proxy_rps = throughput(proxy, proxy_tls, connections, seconds).await;
    let ratio = proxy_rps / direct_rps;
    println!("throughput, {connections} connections, {seconds} s each:");
    println!("  direct  {direct_rps:.0} requests/s");
    println!("  proxied {proxy_rps:.0} requests/s");
    println!(
        "  ratio   {ratio:.2}   (target >= {TARGET_THROUGHPUT_RATIO}: {})",
        if ratio >= TARGET_THROUGHPUT_RATIO { "met" } else { "NOT met" }
    );
}

#[tokio::main]
async fn main() {
    let dir = std::env::temp_dir().join(format!("aws-proxy-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let emulator_ca = CertificateAuthority::generate().unwrap();
    let emulator_ca_file = dir.join("emulator-ca.crt");
    std::fs::write(&emulator_ca_file, emulator_ca.ca_pem()).unwrap();
    let direct_tls = client_config(&emulator_ca_file);
    let received = Arc::new(AtomicU64::new(0));
    let sink = start_sink(received.clone()).await;

    match support::start_moto(&dir, &["*.s3.us-east-1.amazonaws.com"]) {
        Ok(moto) => {
            let moto_tls = client_config(&moto.ca_file);
            seed_objects(moto.addr, moto_tls.clone()).await;
            let proxy = start_proxy(&dir.join("moto"), moto.addr, &moto.ca_file, sink);
            let proxy_tls = client_config(&proxy.ca_file);
            compare("moto (the tests' AWS emulator)", moto.addr, moto_tls, proxy.tls, proxy_tls)
                .await;
            let (_, peak) = proxy.rss_mib();
            println!("aws-proxy peak RSS: {peak:.1} MiB");
        }
        Err(reason) => panic!(
            "moto is needed for the first comparison ({reason}): run scripts/ensure-python-tools.sh"
        ),
    }

    let stand_in = start_emulator(&emulator_ca).await;
    let proxy = start_proxy(&dir.join("stand-in"), stand_in, &emulator_ca_file, sink);
    let proxy_tls = client_config(&proxy.ca_file);
    let (idle_rss, _) = proxy.rss_mib();
    compare("in-process S3 stand-in (fast upstream)", stand_in, direct_tls, proxy.tls, proxy_tls)
        .await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    let (rss, peak) = proxy.rss_mib();
    println!(
        "aws-proxy RSS: {idle_rss:.1} MiB idle, {rss:.1} MiB after the run, {peak:.1} MiB peak"
    );
    println!(
        "calls recorded and shipped to the mapper stand-in (both runs): {}",
        received.load(Ordering::Relaxed)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
