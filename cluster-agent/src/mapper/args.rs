//! `cluster-agent mapper`'s flags (every one also an environment variable).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::auth::AuthConfig;
use super::{istio, kafka};

/// The audience node agents', `aws-proxy`'s and people's tokens must be made for.
pub const DEFAULT_TOKEN_AUDIENCE: &str = "intentmap-mapper";

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
    /// Not for production: a token anyone may send observations with, believed about every pod
    /// of the cluster (tests and the local demo, which have no API server to review tokens).
    #[arg(long, env = "OBSERVATION_SHARED_TOKEN", hide_env_values = true)]
    pub shared_token: Option<String>,
    /// The node agents' ServiceAccounts (`system:serviceaccount:NS:NAME`, comma-separated): they
    /// send observations with a projected token, bound to the node it names.
    #[arg(long, env = "NODE_SERVICE_ACCOUNTS", value_delimiter = ',')]
    pub node_service_accounts: Vec<String>,
    /// aws-proxy's ServiceAccounts (`system:serviceaccount:NS:NAME`, comma-separated): they send
    /// AWS calls (of any pod), and nothing else.
    #[arg(long, env = "AWS_SERVICE_ACCOUNTS", value_delimiter = ',')]
    pub aws_service_accounts: Vec<String>,
    /// The audience tokens sent to the mapper must be made for (projected ServiceAccount tokens,
    /// `kubectl create token --audience`); checked in every TokenReview.
    #[arg(long, env = "TOKEN_AUDIENCE", default_value = DEFAULT_TOKEN_AUDIENCE)]
    pub token_audience: String,
    /// The namespace people's access to the edges is checked in (`get`/`delete` on
    /// `edges.intentmap.dev`): the mapper's own; default, the client's (in a pod, its namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub namespace: Option<String>,
    /// Whether connections from the pod's own loopback, which is where `kubectl port-forward`
    /// arrives (the API server checks `create pods/portforward`), may read and reset the edges
    /// without a token. Keep the mapper's pod out of service meshes: their proxies connect from
    /// the loopback too.
    #[arg(long, env = "LOOPBACK_ACCESS", default_value_t = true, action = clap::ArgAction::Set)]
    pub loopback_access: bool,
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
    /// Allow a plain `http://` --cloud-url to another machine: the client secret and the edges
    /// then cross the network unencrypted. `http://` to this machine's loopback is always allowed.
    #[arg(long, env = "ALLOW_INSECURE_CLOUD_URL")]
    pub allow_insecure_cloud_url: bool,
    /// Seconds between uploads.
    #[arg(long, env = "UPLOAD_INTERVAL_SECONDS", default_value_t = 5.0)]
    pub upload_interval_seconds: f64,
    /// Where reports wait until the cloud acknowledges them (a volume in Kubernetes).
    #[arg(long, env = "OUTBOX_DIR", default_value = "/var/lib/intentmap/outbox")]
    pub outbox_dir: PathBuf,
    /// Kafka broker pods whose authorizer log to follow (the `kafka.authorizer.logger` at DEBUG,
    /// to stdout): NAMESPACE/POD or NAMESPACE/LABEL-SELECTOR, e.g. `kafka/kafka-0` or
    /// `kafka/app.kubernetes.io/name=kafka`. Repeatable; in the environment, separated by `;`.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        value_delimiter = ';',
        value_name = "NAMESPACE/POD|NAMESPACE/SELECTOR"
    )]
    pub kafka_brokers: Vec<kafka::BrokerSelector>,
    /// A Kafka broker log file to follow, for brokers outside the cluster, with the workload the
    /// broker is recorded as: PATH=NAMESPACE/WORKLOAD. Repeatable; in the environment, separated by `;`.
    #[arg(
        long = "kafka-log-file",
        env = "KAFKA_LOG_FILES",
        value_delimiter = ';',
        value_name = "PATH=NAMESPACE/WORKLOAD"
    )]
    pub kafka_log_files: Vec<kafka::BrokerLogFile>,
    /// Also count what broker logs hold from before the mapper started (by default only lines
    /// logged from then on are read; brokers that start later are always read from their start).
    #[arg(long, env = "KAFKA_READ_FROM_START")]
    pub kafka_read_from_start: bool,
    /// The broker pods' Kafka container (default: the one named `kafka`, else the first).
    #[arg(long, env = "KAFKA_CONTAINER")]
    pub kafka_container: Option<String>,
    /// Seconds between scrapes of the Istio sidecars (pods Istio's injector injected) for
    /// `istio_requests_total`; 0 (the default) leaves Istio alone.
    #[arg(long, env = "ISTIO_SCRAPE_INTERVAL_SECONDS", default_value_t = 0.0)]
    pub istio_scrape_interval_seconds: f64,
    /// The sidecars' Prometheus port.
    #[arg(long, env = "ISTIO_METRICS_PORT", default_value_t = 15090)]
    pub istio_metrics_port: u16,
    /// The sidecars' Prometheus path.
    #[arg(long, env = "ISTIO_METRICS_PATH", default_value = "/stats/prometheus")]
    pub istio_metrics_path: String,
    /// The ambient proxies' (ztunnel, waypoints) Prometheus port.
    #[arg(long, env = "ISTIO_AMBIENT_METRICS_PORT", default_value_t = 15020)]
    pub istio_ambient_metrics_port: u16,
    /// The ambient proxies' Prometheus path.
    #[arg(long, env = "ISTIO_AMBIENT_METRICS_PATH", default_value = "/stats/prometheus")]
    pub istio_ambient_metrics_path: String,
    /// Where istiod runs: sidecars are scraped only while its Service (`istiod`, `istiod-<rev>`) is there.
    #[arg(long, env = "ISTIO_NAMESPACE", default_value = "istio-system")]
    pub istio_namespace: String,
    /// How recent a connection a node agent saw must be to vouch for a sidecar's request
    /// counts between two workloads (sidecars keep their connections open for hours).
    #[arg(long, env = "ISTIO_CONNECTION_WINDOW_SECONDS", default_value_t = 24 * 3600)]
    pub istio_connection_window_seconds: u64,
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
            namespace: self.istio_namespace.clone(),
            ambient_port: self.istio_ambient_metrics_port,
            ambient_path: self.istio_ambient_metrics_path.clone(),
            ..istio::IstioConfig::default()
        })
    }

    /// Who may use the local API; `namespace` is the mapper's.
    pub fn auth(&self, namespace: String) -> AuthConfig {
        AuthConfig {
            shared_token: self.shared_token.clone(),
            audience: self.token_audience.clone(),
            node_accounts: self.node_service_accounts.clone(),
            aws_accounts: self.aws_service_accounts.clone(),
            namespace,
            trust_loopback: self.loopback_access,
        }
    }
}
