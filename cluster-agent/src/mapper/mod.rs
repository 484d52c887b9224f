//! `cluster-agent mapper`: the per-cluster half. Watches the Kubernetes API into an index,
//! turns node agents' observations, Kafka brokers' authorizer logs ([`kafka`]) and Istio
//! sidecars' metrics ([`istio`]) into edges, serves them on its local API and uploads what
//! changed to the cloud through a persistent outbox.

pub mod api;
pub mod auth;
pub mod istio;
pub mod kafka;
pub mod watch;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use clap::Args;
use mapper_core::{EdgeStoreConfig, IndexConfig, Mapper, MapperConfig};
use model::report::MAX_EDGES_PER_REPORT;
use model::{Edge, EdgeReport, ExposedWorkload};

use crate::outbox::Outbox;
use crate::upload::{CloudClient, CloudConfig, ReportSource, Uploader, UploaderConfig};

pub type SharedMapper = Arc<Mutex<Mapper>>;

#[derive(Debug, Clone, Args)]
pub struct MapperArgs {
    /// The local API: observations in, edges out (the `intentmap` CLI talks to it).
    #[arg(long, env = "MAPPER_LISTEN", default_value = "0.0.0.0:9090")]
    pub listen: SocketAddr,
    /// The cluster's DNS domain.
    #[arg(long, env = "CLUSTER_DOMAIN", default_value = "cluster.local")]
    pub cluster_domain: String,
    /// Forget edges not seen for this many seconds.
    #[arg(long, env = "EDGE_TTL_SECONDS", default_value_t = 7 * 24 * 3600)]
    pub edge_ttl_seconds: u64,
    /// At most this many edges are kept; past it new edges are refused and counted
    /// (`intentmap_mapper_dropped_edges_total`).
    #[arg(long, env = "MAX_EDGES", default_value_t = 200_000)]
    pub max_edges: usize,
    /// A token node agents may send instead of their ServiceAccount token (simple set-ups).
    #[arg(long, env = "OBSERVATION_SHARED_TOKEN", hide_env_values = true)]
    pub shared_token: Option<String>,
    /// ServiceAccounts allowed to send observations (`system:serviceaccount:NS:NAME`, comma-separated); empty allows any authenticated one.
    #[arg(long, env = "OBSERVATION_SERVICE_ACCOUNTS", value_delimiter = ',')]
    pub observation_service_accounts: Vec<String>,
    /// The cloud API's base URL; without it nothing is uploaded.
    #[arg(long, env = "CLOUD_URL")]
    pub cloud_url: Option<String>,
    #[arg(long, env = "CLOUD_CLIENT_ID")]
    pub cloud_client_id: Option<String>,
    #[arg(long, env = "CLOUD_CLIENT_SECRET", hide_env_values = true)]
    pub cloud_client_secret: Option<String>,
    /// An extra CA certificate (PEM) to trust for the cloud, besides the public roots.
    #[arg(long, env = "CLOUD_CA_FILE")]
    pub cloud_ca_file: Option<PathBuf>,
    /// Seconds between uploads.
    #[arg(long, env = "UPLOAD_INTERVAL_SECONDS", default_value_t = 5.0)]
    pub upload_interval_seconds: f64,
    /// Where reports wait until the cloud acknowledges them (a volume in Kubernetes).
    #[arg(long, env = "OUTBOX_DIR", default_value = "/var/lib/intentmap/outbox")]
    pub outbox_dir: PathBuf,
    /// Kafka broker pods whose authorizer log to follow (the `kafka.authorizer.logger` at DEBUG,
    /// to stdout): NAMESPACE/POD or NAMESPACE/LABEL-SELECTOR, e.g. `kafka/kafka-0` or
    /// `kafka/app.kubernetes.io/name=kafka`. Repeatable; in the environment, separated by `;`.
    #[arg(long = "kafka-brokers", env = "KAFKA_BROKERS", value_delimiter = ';', value_name = "NAMESPACE/POD|NAMESPACE/SELECTOR")]
    pub kafka_brokers: Vec<kafka::BrokerSelector>,
    /// A Kafka broker log file to follow, for brokers outside the cluster, with the workload the
    /// broker is recorded as: PATH=NAMESPACE/WORKLOAD. Repeatable; in the environment, separated by `;`.
    #[arg(long = "kafka-log-file", env = "KAFKA_LOG_FILES", value_delimiter = ';', value_name = "PATH=NAMESPACE/WORKLOAD")]
    pub kafka_log_files: Vec<kafka::BrokerLogFile>,
    /// Also count what broker logs hold from before the mapper started (by default only lines
    /// logged from then on are read; brokers that start later are always read from their start).
    #[arg(long, env = "KAFKA_READ_FROM_START")]
    pub kafka_read_from_start: bool,
    /// The broker pods' Kafka container (default: the one named `kafka`, else the first).
    #[arg(long, env = "KAFKA_CONTAINER")]
    pub kafka_container: Option<String>,
    /// Seconds between scrapes of the Istio sidecars (pods labelled `security.istio.io/tlsMode`)
    /// for `istio_requests_total`; 0 turns the Istio watcher off.
    #[arg(long, env = "ISTIO_SCRAPE_INTERVAL_SECONDS", default_value_t = 30.0)]
    pub istio_scrape_interval_seconds: f64,
    /// The sidecars' Prometheus port.
    #[arg(long, env = "ISTIO_METRICS_PORT", default_value_t = 15090)]
    pub istio_metrics_port: u16,
    /// The sidecars' Prometheus path.
    #[arg(long, env = "ISTIO_METRICS_PATH", default_value = "/stats/prometheus")]
    pub istio_metrics_path: String,
}

impl MapperArgs {
    pub fn kafka(&self) -> kafka::KafkaConfig {
        kafka::KafkaConfig {
            brokers: self.kafka_brokers.clone(),
            files: self.kafka_log_files.clone(),
            read_from_start: self.kafka_read_from_start,
            container: self.kafka_container.clone(),
        }
    }

    /// `None` when the Istio watcher is off.
    pub fn istio(&self) -> Option<istio::IstioConfig> {
        let interval = self.istio_scrape_interval_seconds;
        (interval > 0.0 && interval.is_finite()).then(|| istio::IstioConfig {
            interval: Duration::from_secs_f64(interval.max(0.1)),
            port: self.istio_metrics_port,
            path: self.istio_metrics_path.clone(),
            ..istio::IstioConfig::default()
        })
    }
}

/// Hands the uploader what changed since the last report, at most one report's worth at a time.
pub struct DeltaSource {
    mapper: SharedMapper,
    backlog: VecDeque<Edge>,
}

impl DeltaSource {
    pub fn new(mapper: SharedMapper) -> Self {
        Self { mapper, backlog: VecDeque::new() }
    }
}

impl ReportSource for DeltaSource {
    fn next_report(&mut self) -> Option<EdgeReport> {
        let exposed = {
            let mut mapper = self.mapper.lock().expect("mapper lock poisoned");
            self.backlog.extend(mapper.take_delta());
            mapper.exposed()
        };
        if self.backlog.is_empty() {
            return None;
        }
        let take = self.backlog.len().min(MAX_EDGES_PER_REPORT);
        let edges: Vec<Edge> = self.backlog.drain(..take).collect();
        Some(EdgeReport::new(uuid::Uuid::new_v4(), Utc::now(), edges, exposed))
    }

    fn exposed(&mut self) -> Option<Vec<ExposedWorkload>> {
        Some(self.mapper.lock().expect("mapper lock poisoned").exposed())
    }
}

pub fn new_mapper(args: &MapperArgs) -> SharedMapper {
    let config = MapperConfig {
        index: IndexConfig { cluster_domain: args.cluster_domain.clone(), ..Default::default() },
        edges: EdgeStoreConfig {
            ttl: (args.edge_ttl_seconds > 0).then(|| TimeDelta::seconds(args.edge_ttl_seconds.min(i64::MAX as u64 / 1000) as i64)),
            max_edges: args.max_edges,
            ..EdgeStoreConfig::default()
        },
        ..Default::default()
    };
    Arc::new(Mutex::new(Mapper::new(config)))
}

pub async fn run(args: MapperArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API (in a pod: its ServiceAccount; elsewhere: KUBECONFIG)")?;
    let listener = tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
    serve(args, client, listener).await
}

/// Runs the mapper against `client`, serving its local API on `listener`, until the process ends.
pub async fn serve(args: MapperArgs, client: kube::Client, listener: tokio::net::TcpListener) -> anyhow::Result<()> {
    let mapper = new_mapper(&args);
    // On SIGTERM the API stops first, then the uploader stores what is left and flushes it.
    let (shutdown, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut uploading = None;
    let watches = Arc::new(watch::WatchProgress::default());
    watch::spawn_all(client.clone(), mapper.clone(), watches.clone());
    let kafka = args.kafka();
    if !kafka.is_empty() {
        kafka::spawn(client.clone(), mapper.clone(), watches.clone(), kafka);
    }
    if let Some(istio) = args.istio() {
        tokio::spawn(istio::run(mapper.clone(), watches.clone(), istio));
    }

    let upload = match (&args.cloud_url, &args.cloud_client_id, &args.cloud_client_secret) {
        (Some(url), Some(id), Some(secret)) => {
            let mut config = CloudConfig::new(url.clone(), id.clone(), secret.clone());
            config.ca_certificate = args.cloud_ca_file.clone();
            let cloud = CloudClient::new(config).context("building the cloud client (check --cloud-ca-file)")?;
            let outbox = Outbox::open(&args.outbox_dir)
                .with_context(|| format!("opening the outbox at {} (mount a writable volume there)", args.outbox_dir.display()))?;
            let uploader =
                Uploader::new(outbox, cloud, UploaderConfig { interval: Duration::from_secs_f64(args.upload_interval_seconds.max(0.1)), ..Default::default() });
            let stats = uploader.stats();
            let mut stop = shutdown.subscribe();
            uploading = Some(tokio::spawn(uploader.run(DeltaSource::new(mapper.clone()), async move {
                let _ = stop.recv().await;
            })));
            Some(stats)
        }
        (None, None, None) => {
            tracing::warn!("no --cloud-url: edges are kept locally and not uploaded");
            None
        }
        _ => anyhow::bail!("uploading needs all of --cloud-url, --cloud-client-id and --cloud-client-secret"),
    };

    let expiring = mapper.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            expiring.lock().expect("mapper lock poisoned").expire(Utc::now());
        }
    });

    let auth = auth::ObservationAuth::new(args.shared_token.clone(), Some(client), args.observation_service_accounts.clone());
    let state = Arc::new(api::ApiState { mapper, auth, watches, upload });
    tracing::info!(listen = %listener.local_addr()?, "mapper serving");
    axum::serve(listener, api::router(state)).with_graceful_shutdown(termination()).await?;
    let _ = shutdown.send(());
    if let Some(task) = uploading {
        tracing::info!("flushing edges to the cloud before exiting");
        let _ = task.await;
    }
    Ok(())
}

pub(crate) async fn termination() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("stopping");
}
