//! The uploader against the real cloud API, over real HTTP on 127.0.0.1, backed by a real
//! PostgreSQL (one fresh database per test). Results are checked through the org's
//! `GET /api/v1/access-graph`, so "counted exactly once" means what a user would see.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cloud_api::tokens::{JwtIssuer, SigningKey};
use cloud_api::{AppState, Config};
use cluster_agent::outbox::{Outbox, OutboxLimits, OutboxStats};
use cluster_agent::upload::{Backoff, CloudClient, CloudConfig, SendOutcome, UploadStats, Uploader, UploaderConfig};
use model::{AccessGraph, Edge, EdgeReport, ExposedWorkload, PortSpec, Protocol, Target, WorkloadRef};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// Long enough for a slow CI machine; polling returns as soon as the condition holds.
const DEADLINE: Duration = Duration::from_secs(15);

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn,cluster_agent=info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

// === fixtures ===

struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("upload-test-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Names of the files in `dir` ending with `suffix`, sorted.
fn files(dir: &Path, suffix: &str) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).filter(|n| n.ends_with(suffix)).collect();
    names.sort();
    names
}

async fn database() -> String {
    let server = testkit::pg::server().await.expect("PostgreSQL for tests (run scripts/ensure-postgres.sh)");
    let url = server.fresh_database("upload").await.expect("a fresh test database");
    cloud_api::migrate(&url).await.expect("migrations apply");
    url
}

fn issuer(lifetime: Duration) -> JwtIssuer {
    JwtIssuer::new("https://cloud.test".into(), "intentmap-ingest".into(), lifetime, vec![SigningKey::generate()]).unwrap()
}

async fn cloud_state(database_url: &str, lifetime: Duration) -> AppState {
    cloud_api::state(database_url, issuer(lifetime), Config::default(), 4).await.expect("connect to the test database")
}

/// An address nothing listens on (for now).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

struct Tenant {
    org_id: Uuid,
    api_token: String,
    client_id: String,
    client_secret: String,
}

async fn tenant(state: &AppState) -> Tenant {
    let org = state.store.create_org("acme").await.unwrap();
    let cluster = state.store.create_cluster(org.org_id, "prod").await.unwrap();
    Tenant { org_id: org.org_id, api_token: org.api_token, client_id: cluster.client_id, client_secret: cluster.client_secret }
}

/// The cloud API serving on a real TCP socket.
struct Cloud {
    state: AppState,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Cloud {
    async fn serve(state: AppState, addr: SocketAddr) -> Cloud {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap_or_else(|e| panic!("binding {addr}: {e}"));
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let app = cloud_api::app(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await
                .unwrap();
        });
        Cloud { state, addr, stop, task }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops listening and closes every connection.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.task).await.expect("the cloud stops").unwrap();
    }

    async fn graph(&self, api_token: &str) -> AccessGraph {
        let response = reqwest::Client::new().get(format!("{}/api/v1/access-graph", self.url())).bearer_auth(api_token).send().await.unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        response.json().await.unwrap()
    }

    fn tokens_issued(&self) -> u64 {
        self.state.metrics.tokens_issued.get()
    }

    fn refused_jwts(&self) -> u64 {
        self.state.metrics.auth_failures.get_or_create(&cloud_api::metrics::Method { method: "jwt".into() }).get()
    }

    fn reports(&self, outcome: &str) -> u64 {
        self.state.metrics.reports.get_or_create(&cloud_api::metrics::Outcome { outcome: outcome.into() }).get()
    }
}

/// Connections on the graph edge from `client` (any cluster and namespace) to `cart`.
fn connections(graph: &AccessGraph, client: &str) -> u64 {
    graph.edges.iter().filter(|e| e.source.ends_with(&format!("/{client}")) && e.target.ends_with("/cart")).map(|e| e.connections).sum()
}

fn total_connections(graph: &AccessGraph) -> u64 {
    graph.edges.iter().map(|e| e.connections).sum()
}

fn time(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A report of one call from `client` to `shop/cart`, seen `connections` times.
fn report(client: &str, connections: u64) -> EdgeReport {
    let edge = Edge {
        client: WorkloadRef::new("shop", client, Some("Deployment")),
        target: Target::Kubernetes(WorkloadRef::new("shop", "cart", Some("Deployment"))),
        ports: vec![PortSpec { port: 7070, protocol: Protocol::Tcp }],
        first_seen: time("2026-11-24T17:00:00Z"),
        last_seen: time("2026-11-24T17:30:00Z"),
        connections,
        http: Vec::new(),
        kafka: Vec::new(),
    };
    EdgeReport::new(Uuid::new_v4(), Utc::now(), vec![edge], vec![])
}

fn fast_config() -> UploaderConfig {
    UploaderConfig {
        interval: Duration::from_millis(20),
        backoff: Backoff { base: Duration::from_millis(10), cap: Duration::from_millis(100) },
        exposed_refresh: None,
        shutdown_flush: Duration::ZERO,
    }
}

fn client(url: &str, tenant: &Tenant) -> CloudClient {
    let mut config = CloudConfig::new(url, &tenant.client_id, &tenant.client_secret);
    config.timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(1);
    CloudClient::new(config).unwrap()
}

/// An uploader running in its own task, fed reports through a channel.
struct Running {
    feed: std::sync::mpsc::Sender<EdgeReport>,
    /// Reports the uploader has taken from the feed (and therefore stored).
    taken: Arc<AtomicUsize>,
    stats: Arc<UploadStats>,
    outbox_stats: Arc<OutboxStats>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

fn spawn(outbox: Outbox, client: CloudClient, config: UploaderConfig) -> Running {
    let uploader = Uploader::new(outbox, client, config);
    let stats = uploader.stats();
    let outbox_stats = uploader.outbox_stats();
    let (feed, reports) = std::sync::mpsc::channel::<EdgeReport>();
    let taken = Arc::new(AtomicUsize::new(0));
    let counter = taken.clone();
    let source = move || {
        let report = reports.try_recv().ok()?;
        counter.fetch_add(1, Ordering::SeqCst);
        Some(report)
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(uploader.run(source, async move {
        let _ = stopped.await;
    }));
    Running { feed, taken, stats, outbox_stats, stop, task }
}

impl Running {
    fn give(&self, report: &EdgeReport) {
        self.feed.send(report.clone()).unwrap();
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.task).await.expect("the uploader stops").unwrap();
    }

    /// Like a killed process: no chance to clean up.
    async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + DEADLINE;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// === scenarios ===

#[tokio::test]
async fn reports_arrive_and_are_counted() {
    init_tracing();
    let db = database().await;
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(300)).await, free_addr()).await;
    let tenant = tenant(&cloud.state).await;
    let dir = TempDir::new();
    let up = spawn(Outbox::open(&dir.0).unwrap(), client(&cloud.url(), &tenant), fast_config());

    up.give(&report("frontend", 1));
    up.give(&report("frontend", 2));
    up.give(&report("checkout", 4));
    eventually("three reports are delivered", || up.stats.sent.load(Ordering::SeqCst) == 3).await;

    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(graph.edges.len(), 2, "{graph:?}");
    assert_eq!(connections(&graph, "frontend"), 3);
    assert_eq!(connections(&graph, "checkout"), 4);
    let counts = up.stats.snapshot();
    assert_eq!((counts.duplicates, counts.retries, counts.rejected, counts.pending), (0, 0, 0, 0));
    assert!(files(&dir.0, ".json").is_empty());
    assert_eq!(cloud.tokens_issued(), 1, "the token is reused");
    up.shutdown().await;
    cloud.stop().await;
}

#[tokio::test]
async fn reports_wait_in_the_outbox_while_the_cloud_is_down() {
    init_tracing();
    let db = database().await;
    let state = cloud_state(&db, Duration::from_secs(300)).await;
    let tenant = tenant(&state).await;
    let addr = free_addr();
    let dir = TempDir::new();
    let up = spawn(Outbox::open(&dir.0).unwrap(), client(&format!("http://{addr}"), &tenant), fast_config());

    for n in [1, 2, 4] {
        up.give(&report("frontend", n));
    }
    eventually("the uploader has retried a few times", || up.taken.load(Ordering::SeqCst) == 3 && up.stats.retries.load(Ordering::SeqCst) >= 3).await;
    assert_eq!(files(&dir.0, ".json").len(), 3, "every report is kept on disk");
    assert_eq!(up.stats.sent.load(Ordering::SeqCst), 0);
    assert_eq!(up.stats.pending.load(Ordering::SeqCst), 3);

    let cloud = Cloud::serve(state, addr).await;
    eventually("the outbox drains once the cloud is up", || up.stats.sent.load(Ordering::SeqCst) == 3).await;
    assert!(files(&dir.0, ".json").is_empty());
    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(connections(&graph, "frontend"), 7, "each report counted exactly once");
    assert_eq!(up.stats.duplicates.load(Ordering::SeqCst), 0);
    up.shutdown().await;
    cloud.stop().await;
}

#[tokio::test]
async fn a_restarted_mapper_sends_what_it_left_pending() {
    init_tracing();
    let db = database().await;
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(300)).await, free_addr()).await;
    let addr = cloud.addr;
    let tenant = tenant(&cloud.state).await;
    let dir = TempDir::new();

    let first = spawn(Outbox::open(&dir.0).unwrap(), client(&cloud.url(), &tenant), fast_config());
    first.give(&report("frontend", 1));
    eventually("the first report is delivered", || first.stats.sent.load(Ordering::SeqCst) == 1).await;
    cloud.stop().await;
    let pending = [report("frontend", 2), report("frontend", 4)];
    for r in &pending {
        first.give(r);
    }
    eventually("both reports are stored and tried", || first.taken.load(Ordering::SeqCst) == 3 && first.stats.retries.load(Ordering::SeqCst) >= 1).await;
    first.kill().await;

    let outbox = Outbox::open(&dir.0).unwrap();
    assert_eq!(outbox.pending().unwrap(), pending.to_vec(), "the pending reports survive, in order");
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(300)).await, addr).await;
    let second = spawn(outbox, client(&cloud.url(), &tenant), fast_config());
    eventually("the new uploader delivers them", || second.stats.sent.load(Ordering::SeqCst) == 2).await;
    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(connections(&graph, "frontend"), 7, "nothing lost, nothing doubled");
    assert_eq!(second.stats.duplicates.load(Ordering::SeqCst), 0);
    assert!(files(&dir.0, ".json").is_empty());
    second.shutdown().await;
    cloud.stop().await;
}

#[tokio::test]
async fn a_report_applied_before_its_ack_was_lost_is_counted_once() {
    init_tracing();
    let db = database().await;
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(300)).await, free_addr()).await;
    let tenant = tenant(&cloud.state).await;
    let dir = TempDir::new();
    let mut outbox = Outbox::open(&dir.0).unwrap();
    let applied = report("frontend", 5);
    outbox.push(&applied).unwrap();
    // The cloud applies it, but the acknowledgement never reaches the outbox.
    let direct = client(&cloud.url(), &tenant);
    assert_eq!(direct.send(&applied).await.unwrap(), SendOutcome::Accepted);
    assert_eq!(direct.send(&applied).await.unwrap(), SendOutcome::AlreadyApplied);
    assert_eq!(outbox.len().unwrap(), 1);

    let later = report("frontend", 1);
    outbox.push(&later).unwrap();
    let up = spawn(outbox, client(&cloud.url(), &tenant), fast_config());
    eventually("the outbox drains", || up.stats.duplicates.load(Ordering::SeqCst) == 1 && up.stats.sent.load(Ordering::SeqCst) == 1).await;
    assert!(files(&dir.0, ".json").is_empty(), "the already-applied report was acknowledged");
    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(connections(&graph, "frontend"), 6, "the replay changed nothing");
    assert_eq!((cloud.reports("accepted"), cloud.reports("duplicate")), (2, 2));
    up.shutdown().await;
    cloud.stop().await;
}

#[tokio::test]
async fn an_expired_token_is_replaced() {
    init_tracing();
    let db = database().await;
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(1)).await, free_addr()).await;
    let tenant = tenant(&cloud.state).await;

    // The client keeps a token until shortly before expires_in, then fetches another.
    let direct = client(&cloud.url(), &tenant);
    let token = direct.token().await.unwrap();
    assert_eq!(direct.token().await.unwrap(), token, "cached");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_ne!(direct.token().await.unwrap(), token, "replaced once expired");

    let dir = TempDir::new();
    let up = spawn(Outbox::open(&dir.0).unwrap(), client(&cloud.url(), &tenant), fast_config());
    up.give(&report("frontend", 1));
    eventually("the first report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 1).await;
    let issued = cloud.tokens_issued();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    up.give(&report("frontend", 2));
    eventually("the second report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 2).await;
    assert_eq!(cloud.tokens_issued(), issued + 1, "a new token was fetched for the second report");
    assert_eq!(up.stats.retries.load(Ordering::SeqCst), 0, "no failed attempt");
    assert_eq!(connections(&cloud.graph(&tenant.api_token).await, "frontend"), 3);
    up.shutdown().await;
    cloud.stop().await;
}

#[tokio::test]
async fn a_refused_token_is_replaced_and_the_report_sent_again() {
    init_tracing();
    let db = database().await;
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(300)).await, free_addr()).await;
    let tenant = tenant(&cloud.state).await;
    let dir = TempDir::new();
    let up = spawn(Outbox::open(&dir.0).unwrap(), client(&cloud.url(), &tenant), fast_config());
    up.give(&report("frontend", 1));
    eventually("the first report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 1).await;

    // The cloud restarts with a new signing key: the cached token (valid for minutes) is refused with 401.
    let addr = cloud.addr;
    cloud.stop().await;
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(300)).await, addr).await;
    up.give(&report("frontend", 2));
    eventually("the second report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 2).await;
    assert_eq!(cloud.refused_jwts(), 1, "the old token was refused once");
    assert_eq!(cloud.tokens_issued(), 1, "one new token from the restarted cloud");
    assert_eq!(connections(&cloud.graph(&tenant.api_token).await, "frontend"), 3);
    up.shutdown().await;
    cloud.stop().await;
}

#[tokio::test]
async fn a_rejected_report_is_set_aside_and_the_queue_moves_on() {
    init_tracing();
    let db = database().await;
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(300)).await, free_addr()).await;
    let tenant = tenant(&cloud.state).await;
    let dir = TempDir::new();
    let mut outbox = Outbox::open(&dir.0).unwrap();
    let bad = report("Front End", 1);
    let good = report("frontend", 2);
    outbox.push(&bad).unwrap();
    outbox.push(&good).unwrap();

    let up = spawn(outbox, client(&cloud.url(), &tenant), fast_config());
    eventually("the good report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 1).await;
    assert_eq!(up.stats.rejected.load(Ordering::SeqCst), 1);
    assert_eq!(up.stats.retries.load(Ordering::SeqCst), 0, "a rejection is not retried");
    let rejected = files(&dir.0, ".rejected");
    assert_eq!(rejected.len(), 1);
    assert!(rejected[0].contains(&bad.report_id.to_string()), "{rejected:?}");
    assert!(files(&dir.0, ".json").is_empty());
    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(graph.edges.len(), 1);
    assert_eq!(connections(&graph, "frontend"), 2);
    up.shutdown().await;
    cloud.stop().await;
}

#[tokio::test]
async fn a_corrupt_file_in_the_outbox_is_skipped() {
    init_tracing();
    let db = database().await;
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(300)).await, free_addr()).await;
    let tenant = tenant(&cloud.state).await;
    let dir = TempDir::new();
    // Older than anything the outbox will write, so it is first in line.
    let corrupt = format!("{:020}-{}.json", 1, Uuid::new_v4());
    std::fs::write(dir.0.join(&corrupt), b"{\"schema_version\": 1, \"report_id\": \"6f1d").unwrap();
    let mut outbox = Outbox::open(&dir.0).unwrap();
    outbox.push(&report("frontend", 3)).unwrap();

    let up = spawn(outbox, client(&cloud.url(), &tenant), fast_config());
    eventually("the good report is delivered", || up.stats.sent.load(Ordering::SeqCst) == 1).await;
    assert_eq!(files(&dir.0, ".corrupt"), vec![format!("{corrupt}.corrupt")]);
    assert_eq!(up.outbox_stats.corrupt.load(Ordering::SeqCst), 1);
    assert!(files(&dir.0, ".json").is_empty());
    assert_eq!(connections(&cloud.graph(&tenant.api_token).await, "frontend"), 3);
    up.shutdown().await;
    cloud.stop().await;
}

#[tokio::test]
async fn a_full_outbox_merges_its_oldest_reports_without_losing_or_doubling() {
    init_tracing();
    let db = database().await;
    let state = cloud_state(&db, Duration::from_secs(300)).await;
    let tenant = tenant(&state).await;
    let addr = free_addr();
    let dir = TempDir::new();
    let outbox = Outbox::open_with(&dir.0, OutboxLimits { max_reports: 3, ..OutboxLimits::default() }).unwrap();
    let up = spawn(outbox, client(&format!("http://{addr}"), &tenant), fast_config());

    for n in 1..=8u64 {
        up.give(&report(if n % 2 == 0 { "frontend" } else { "checkout" }, n));
    }
    eventually("all eight reports are stored", || up.taken.load(Ordering::SeqCst) == 8).await;
    assert!(files(&dir.0, ".json").len() <= 3, "{:?}", files(&dir.0, ".json"));
    assert!(up.outbox_stats.compactions.load(Ordering::SeqCst) > 0);
    assert_eq!(up.outbox_stats.dropped.load(Ordering::SeqCst), 0);

    let cloud = Cloud::serve(state, addr).await;
    eventually("the outbox drains", || files(&dir.0, ".json").is_empty() && up.stats.pending.load(Ordering::SeqCst) == 0).await;
    let graph = cloud.graph(&tenant.api_token).await;
    assert_eq!(connections(&graph, "frontend"), 2 + 4 + 6 + 8);
    assert_eq!(connections(&graph, "checkout"), 1 + 3 + 5 + 7);
    assert_eq!(total_connections(&graph), 36);
    up.shutdown().await;
    cloud.stop().await;
}

#[tokio::test]
async fn the_exposed_set_is_sent_again_when_nothing_changes() {
    init_tracing();
    let db = database().await;
    let cloud = Cloud::serve(cloud_state(&db, Duration::from_secs(300)).await, free_addr()).await;
    let tenant = tenant(&cloud.state).await;
    let dir = TempDir::new();
    let config = UploaderConfig { exposed_refresh: Some(Duration::from_millis(100)), ..fast_config() };
    let up = spawn(Outbox::open(&dir.0).unwrap(), client(&cloud.url(), &tenant), config);
    let mut first = report("frontend", 1);
    first.exposed = vec![ExposedWorkload {
        namespace: "shop".into(),
        name: "frontend".into(),
        kind: Some("Deployment".into()),
        addresses: vec!["198.51.100.10".into()],
        hostnames: vec!["shop.example.com".into()],
    }];
    up.give(&first);
    eventually("the exposed set is re-sent without new edges", || up.stats.sent.load(Ordering::SeqCst) >= 3).await;
    let exposures = cloud.state.store.exposures(tenant.org_id).await.unwrap();
    assert_eq!(exposures.len(), 1);
    assert_eq!(exposures[0].exposed, first.exposed[0]);
    assert_eq!(connections(&cloud.graph(&tenant.api_token).await, "frontend"), 1, "refreshes carry no edges");
    up.shutdown().await;
    cloud.stop().await;
}
