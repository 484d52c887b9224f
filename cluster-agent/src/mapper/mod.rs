//! `cluster-agent mapper`: the per-cluster half. Watches the Kubernetes API into an index,
//! turns node agents' observations, Kafka brokers' authorizer logs ([`kafka`]) and Istio
//! sidecars' metrics ([`istio`]) into edges, serves them on its local API ([`api`], behind
//! [`auth`]) and uploads what changed to the cloud ([`upload`]) through a persistent
//! [`outbox`]. Its own counters are in [`telemetry`].

pub mod api;
pub mod args;
pub mod auth;
pub mod istio;
pub mod kafka;
mod metrics;
pub mod outbox;
pub mod telemetry;
pub mod upload;
pub mod watch;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context;
pub use args::MapperArgs;
use chrono::{TimeDelta, Utc};
use mapper_core::{EdgeStoreConfig, IndexConfig, Mapper, MapperConfig};
use model::report::MAX_EDGES_PER_REPORT;
use model::{Edge, EdgeReport, ExposedWorkload};

use self::outbox::Outbox;
use self::telemetry::Telemetry;
use self::upload::{CloudClient, CloudConfig, ReportSource, Uploader, UploaderConfig};

/// The mapper's state, shared by the watchers, the local API and the uploader. Clones share it.
#[derive(Clone)]
pub struct SharedMapper(Arc<Mutex<Mapper>>);

impl SharedMapper {
    pub fn new(mapper: Mapper) -> Self {
        Self(Arc::new(Mutex::new(mapper)))
    }

    /// The mapper's state, for as long as the guard lives. A panic while holding it leaves the
    /// state half-changed, so the next locker panics too.
    pub fn lock(&self) -> MutexGuard<'_, Mapper> {
        self.0.lock().expect("mapper lock poisoned")
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
            let mut mapper = self.mapper.lock();
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
        Some(self.mapper.lock().exposed())
    }
}

pub fn new_mapper(args: &MapperArgs) -> SharedMapper {
    let config = MapperConfig {
        index: IndexConfig { cluster_domain: args.cluster_domain.clone(), ..Default::default() },
        edges: EdgeStoreConfig {
            ttl: (args.edge_ttl_seconds > 0).then(|| {
                TimeDelta::seconds(args.edge_ttl_seconds.min(i64::MAX as u64 / 1000) as i64)
            }),
            max_edges: args.max_edges,
            ..EdgeStoreConfig::default()
        },
        istio_connection_window: TimeDelta::seconds(
            args.istio_connection_window_seconds.min(i64::MAX as u64 / 1000) as i64,
        ),
        ..Default::default()
    };
    SharedMapper::new(Mapper::new(config))
}

pub async fn run(args: MapperArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context(
        "connecting to the Kubernetes API (in a pod: its ServiceAccount; elsewhere: KUBECONFIG)",
    )?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    serve(args, client, listener).await
}

/// Runs the mapper against `client`, serving its local API on `listener`, until the process ends.
pub async fn serve(
    args: MapperArgs,
    client: kube::Client,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    let mapper = new_mapper(&args);
    // On SIGTERM the API stops first, then the uploader stores what is left and flushes it.
    let (shutdown, _) = tokio::sync::broadcast::channel::<()>(1);
    let mut uploading = None;
    let telemetry = Arc::new(Telemetry::default());
    watch::spawn_all(client.clone(), mapper.clone(), telemetry.clone());
    let kafka = args.kafka();
    if !kafka.is_empty() {
        kafka::spawn(client.clone(), mapper.clone(), telemetry.clone(), kafka);
    }
    if let Some(istio) = args.istio() {
        tokio::spawn(istio::run(mapper.clone(), telemetry.clone(), istio));
    }

    let upload = match (&args.cloud_url, &args.cloud_client_id, &args.cloud_client_secret) {
        (Some(url), Some(id), Some(secret)) => {
            let mut config = CloudConfig::new(url.clone(), id.clone(), secret.clone());
            config.ca_certificate = args.cloud_ca_file.clone();
            config.allow_insecure_http = args.allow_insecure_cloud_url;
            let cloud = CloudClient::new(config)
                .context("building the cloud client (check --cloud-url and --cloud-ca-file)")?;
            let outbox = Outbox::open(&args.outbox_dir).with_context(|| {
                format!(
                    "opening the outbox at {} (mount a writable volume there)",
                    args.outbox_dir.display()
                )
            })?;
            let uploader = Uploader::new(
                outbox,
                cloud,
                UploaderConfig {
                    interval: Duration::from_secs_f64(args.upload_interval_seconds.max(0.1)),
                    ..Default::default()
                },
            );
            let stats = uploader.stats();
            let mut stop = shutdown.subscribe();
            uploading =
                Some(tokio::spawn(uploader.run(DeltaSource::new(mapper.clone()), async move {
                    let _ = stop.recv().await;
                })));
            Some(stats)
        }
        (None, None, None) => {
            tracing::warn!("no --cloud-url: edges are kept locally and not uploaded");
            None
        }
        _ => anyhow::bail!(
            "uploading needs all of --cloud-url, --cloud-client-id and --cloud-client-secret"
        ),
    };

    let expiring = mapper.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(30));
        loop {
            tick.tick().await;
            expiring.lock().expire(Utc::now());
        }
    });
    // Accepted connections from unknown sources are judged once the index has caught up.
    let settling = mapper.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(2));
        loop {
            tick.tick().await;
            settling.lock().settle_incoming(Utc::now());
        }
    });

    let namespace = args.namespace.clone().unwrap_or_else(|| client.default_namespace().to_owned());
    let auth = auth::ApiAuth::new(args.auth(namespace), Some(client));
    let state = Arc::new(api::ApiState { mapper, auth, telemetry, upload });
    tracing::info!(listen = %listener.local_addr()?, "mapper serving");
    let app = api::router(state).into_make_service_with_connect_info::<SocketAddr>();
    axum::serve(listener, app).with_graceful_shutdown(service_shell::shutdown_signal()).await?;
    let _ = shutdown.send(());
    if let Some(task) = uploading {
        tracing::info!("flushing edges to the cloud before exiting");
        let _ = task.await;
    }
    Ok(())
}
