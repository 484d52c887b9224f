//! Fixtures of the uploader tests: the real cloud API on a real TCP socket with a fresh
//! database, an uploader in its own task, and reports to feed it.
#![allow(dead_code, unused_imports)]

pub use std::net::SocketAddr;
pub use std::path::{Path, PathBuf};
pub use std::sync::atomic::{AtomicUsize, Ordering};
pub use std::sync::Arc;
pub use std::time::Duration;

pub use chrono::{DateTime, Utc};
pub use cloud_api::tokens::{JwtIssuer, SigningKey};
pub use cloud_api::{AppState, Config};
pub use cluster_agent::mapper::outbox::{Outbox, OutboxLimits, OutboxStats};
pub use cluster_agent::mapper::upload::{
    Backoff, CloudClient, CloudConfig, SendOutcome, UploadStats, Uploader, UploaderConfig,
};
pub use model::{
    AccessGraph, Edge, EdgeReport, ExposedWorkload, PortSpec, Protocol, Target, WorkloadRef,
};
/// Names of the files in a directory ending with a suffix, sorted.
pub use testkit::process::files_ending as files;
pub use testkit::process::TempDir;
pub use tokio::sync::oneshot;
pub use tokio::task::JoinHandle;
pub use uuid::Uuid;

/// Long enough for a slow CI machine; polling returns as soon as the condition holds.
pub const DEADLINE: Duration = Duration::from_secs(15);

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "warn,cluster_agent=info".into());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// A fresh directory for an outbox, removed on drop.
pub fn temp_dir() -> TempDir {
    TempDir::new("upload-test")
}

pub async fn database() -> String {
    let server =
        testkit::pg::server().await.expect("PostgreSQL for tests (run scripts/ensure-postgres.sh)");
    let url = server.fresh_database("upload").await.expect("a fresh test database");
    cloud_api::migrate(&url).await.expect("migrations apply");
    url
}

pub fn issuer(lifetime: Duration) -> JwtIssuer {
    JwtIssuer::new(
        "https://cloud.test".into(),
        "intentmap-ingest".into(),
        lifetime,
        vec![SigningKey::generate()],
    )
    .unwrap()
}

pub async fn cloud_state(database_url: &str, lifetime: Duration) -> AppState {
    cloud_api::state(database_url, issuer(lifetime), Config::default(), 4)
        .await
        .expect("connect to the test database")
}

/// A fresh database, the cloud API serving it on a real socket (its tokens valid for
/// `lifetime`) and one tenant with a cluster; tracing on.
pub async fn serving(lifetime: Duration) -> (String, Cloud, Tenant) {
    init_tracing();
    let db = database().await;
    let cloud = Cloud::serve(cloud_state(&db, lifetime).await, free_addr()).await;
    let tenant = tenant(&cloud.state).await;
    (db, cloud, tenant)
}

/// Like [`serving`], but the cloud is not up yet: its state, the tenant, and the address it
/// will listen on (nothing answers there until [`Cloud::serve`]).
pub async fn not_serving_yet() -> (AppState, Tenant, SocketAddr) {
    init_tracing();
    let db = database().await;
    let state = cloud_state(&db, Duration::from_secs(300)).await;
    let tenant = tenant(&state).await;
    (state, tenant, free_addr())
}

/// An address nothing listens on (for now).
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

pub struct Tenant {
    pub org_id: Uuid,
    pub api_token: String,
    pub client_id: String,
    pub client_secret: String,
}

pub async fn tenant(state: &AppState) -> Tenant {
    let org = state.store.create_org("acme").await.unwrap();
    let cluster = state.store.create_cluster(org.org_id, &"prod".parse().unwrap()).await.unwrap();
    Tenant {
        org_id: org.org_id,
        api_token: org.api_token,
        client_id: cluster.client_id,
        client_secret: cluster.client_secret,
    }
}

/// The cloud API serving on a real TCP socket.
pub struct Cloud {
    pub state: AppState,
    pub addr: SocketAddr,
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<()>,
}

impl Cloud {
    pub async fn serve(state: AppState, addr: SocketAddr) -> Cloud {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .unwrap_or_else(|e| panic!("binding {addr}: {e}"));
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

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops and serves `database_url` again on the same address with a new state (a new
    /// signing key: tokens the old one issued are refused).
    pub async fn restart(self, database_url: &str, lifetime: Duration) -> Cloud {
        let addr = self.addr;
        self.stop().await;
        Cloud::serve(cloud_state(database_url, lifetime).await, addr).await
    }

    /// Stops listening and closes every connection.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.task).await.expect("the cloud stops").unwrap();
    }

    pub async fn graph(&self, api_token: &str) -> AccessGraph {
        let response = reqwest::Client::new()
            .get(format!("{}/api/v1/access-graph", self.url()))
            .bearer_auth(api_token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        response.json().await.unwrap()
    }

    pub fn tokens_issued(&self) -> u64 {
        self.state.metrics.tokens_issued.get()
    }

    pub fn refused_jwts(&self) -> u64 {
        self.state
            .metrics
            .auth_failures
            .get_or_create(&cloud_api::metrics::Method { method: "jwt".into() })
            .get()
    }

    pub fn reports(&self, outcome: &str) -> u64 {
        self.state
            .metrics
            .reports
            .get_or_create(&cloud_api::metrics::Outcome { outcome: outcome.into() })
            .get()
    }
}

/// Connections on the graph edge from `client` (any cluster and namespace) to `cart`.
pub fn connections(graph: &AccessGraph, client: &str) -> u64 {
    graph
        .edges
        .iter()
        .filter(|e| e.source.ends_with(&format!("/{client}")) && e.target.ends_with("/cart"))
        .map(|e| e.connections)
        .sum()
}

pub fn total_connections(graph: &AccessGraph) -> u64 {
    graph.edges.iter().map(|e| e.connections).sum()
}

pub fn time(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

/// A report of one call from `client` to `shop/cart`, seen `connections` times.
pub fn report(client: &str, connections: u64) -> EdgeReport {
    let edge = Edge {
        client: WorkloadRef::new("shop", client, Some("Deployment")),
        target: Target::Kubernetes(WorkloadRef::new("shop", "cart", Some("Deployment"))),
        ports: vec![PortSpec { port: 7070, protocol: Protocol::Tcp }],
        first_seen: time("2026-11-24T17:00:00Z"),
        last_seen: time("2026-11-24T17:30:00Z"),
        connections,
        http: Vec::new(),
        kafka: Vec::new(),
        bytes: None,
    };
    EdgeReport::new(Uuid::new_v4(), Utc::now(), vec![edge], vec![])
}

pub fn fast_config() -> UploaderConfig {
    UploaderConfig {
        interval: Duration::from_millis(20),
        backoff: Backoff { base: Duration::from_millis(10), cap: Duration::from_millis(100) },
        exposed_refresh: None,
        shutdown_flush: Duration::ZERO,
        set_aside_after: 3,
    }
}

pub fn client(url: &str, tenant: &Tenant) -> CloudClient {
    let mut config = CloudConfig::new(url, &tenant.client_id, &tenant.client_secret);
    config.timeout = Duration::from_secs(5);
    config.connect_timeout = Duration::from_secs(1);
    CloudClient::new(config).unwrap()
}

/// An uploader for `tenant` with a fresh outbox in `dir`, sending to `url` with
/// [`fast_config`].
pub fn uploader(dir: &Path, url: &str, tenant: &Tenant) -> Running {
    uploading(Outbox::open(dir).unwrap(), url, tenant)
}

/// An uploader for `tenant` draining `outbox` to `url` with [`fast_config`].
pub fn uploading(outbox: Outbox, url: &str, tenant: &Tenant) -> Running {
    spawn(outbox, client(url, tenant), fast_config())
}

/// An uploader running in its own task, fed reports through a channel.
pub struct Running {
    pub feed: std::sync::mpsc::Sender<EdgeReport>,
    /// Reports the uploader has taken from the feed (and therefore stored).
    pub taken: Arc<AtomicUsize>,
    pub stats: Arc<UploadStats>,
    pub outbox_stats: Arc<OutboxStats>,
    pub stop: oneshot::Sender<()>,
    pub task: JoinHandle<()>,
}

pub fn spawn(outbox: Outbox, client: CloudClient, config: UploaderConfig) -> Running {
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
    pub fn give(&self, report: &EdgeReport) {
        self.feed.send(report.clone()).unwrap();
    }

    pub async fn shutdown(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(DEADLINE, self.task).await.expect("the uploader stops").unwrap();
    }

    /// Stops the uploader, then the cloud.
    pub async fn shutdown_with(self, cloud: Cloud) {
        self.shutdown().await;
        cloud.stop().await;
    }

    /// Like a killed process: no chance to clean up.
    pub async fn kill(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

/// Polls `condition` until it holds, failing the test after [`DEADLINE`].
pub async fn eventually(what: &str, condition: impl FnMut() -> bool) {
    eventually_within(DEADLINE, what, condition).await
}

/// [`eventually`] with a deadline of its own, for work that is slow in a debug build.
pub async fn eventually_within(limit: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
