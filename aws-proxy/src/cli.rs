//! The `aws-proxy` command: one role per process (`proxy`, `webhook`, `dns`) or `all` of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use clap::{Parser, Subcommand};
use observation_ship::{Credentials, Outgoing, Shipper};

use crate::ca::{CaKeeper, CaStore};
use crate::dns::{DnsArgs, DnsServer};
use crate::proxy::{Proxy, ProxyArgs};
use crate::webhook::{Webhook, WebhookArgs};

#[derive(Debug, Parser)]
#[command(
    name = "aws-proxy",
    version,
    about = "AWS visibility for intentmap: which workload calls which AWS service, action and resource"
)]
pub struct Args {
    /// Log format: text or json.
    #[arg(long, env = "LOG_FORMAT", default_value = "text", global = true)]
    pub log_format: String,
    #[command(flatten)]
    pub common: CommonArgs,
    #[command(subcommand)]
    pub role: Role,
}

#[derive(Debug, clap::Args, Clone)]
pub struct CommonArgs {
    /// Keep the CA in this Kubernetes Secret (`namespace/name`), as the chart does; needs get/create on secrets.
    #[arg(long, env = "AWS_PROXY_CA_SECRET", global = true)]
    pub ca_secret: Option<String>,
    /// Keep the CA in this directory (`ca.crt`, `ca.key`); used when no --ca-secret is given.
    #[arg(
        long,
        env = "AWS_PROXY_CA_DIR",
        default_value = "/var/lib/intentmap/aws-proxy",
        global = true
    )]
    pub ca_dir: PathBuf,
    /// DNS names the CA may vouch for besides amazonaws.com and amazonaws.com.cn (its Name
    /// Constraints). The webhook role adds its Service names itself; give them here too when the
    /// proxy and the webhook run as separate processes sharing one CA.
    #[arg(long, env = "AWS_PROXY_CA_PERMITTED_NAMES", value_delimiter = ',', global = true)]
    pub ca_permitted_names: Vec<String>,
    /// How often the stored CA is checked for rotation (and another replica's rotation picked up).
    #[arg(long, env = "AWS_PROXY_CA_CHECK_INTERVAL_SECS", default_value_t = 3600, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub ca_check_interval_secs: u64,
    /// The mapper that receives the recorded calls.
    #[arg(long, env = "MAPPER_URL", default_value = "http://intentmap-mapper:9090", global = true)]
    pub mapper_url: String,
    /// A shared token for the mapper; without it the ServiceAccount token file is sent.
    #[arg(long, env = "OBSERVATION_SHARED_TOKEN", hide_env_values = true, global = true)]
    pub shared_token: Option<String>,
    #[arg(
        long,
        env = "TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token",
        global = true
    )]
    pub token_file: PathBuf,
    /// Seconds between batches to the mapper.
    #[arg(long, env = "SHIP_INTERVAL_SECONDS", default_value_t = 1.0, global = true)]
    pub ship_interval_seconds: f64,
    /// Calls held while the mapper is unreachable; past it the oldest are dropped and counted.
    #[arg(long, env = "BUFFER", default_value_t = 100_000, global = true)]
    pub buffer: usize,
    /// `/healthz` and `/metrics`.
    #[arg(long, env = "AWS_PROXY_HEALTH_LISTEN", default_value = "0.0.0.0:9092", global = true)]
    pub health_listen: SocketAddr,
}

#[derive(Debug, Subcommand)]
pub enum Role {
    /// The TLS-intercepting proxy (SNI on --tls-listen, HTTP CONNECT on --connect-listen).
    Proxy(Box<ProxyArgs>),
    /// The mutating admission webhook that opts labelled pods in.
    Webhook(Box<WebhookArgs>),
    /// The DNS server answering amazonaws.com names with the proxy's address.
    Dns(Box<DnsArgs>),
    /// All three in one process (small installs).
    All(Box<AllArgs>),
}

#[derive(Debug, clap::Args, Clone)]
pub struct AllArgs {
    #[command(flatten)]
    pub proxy: ProxyArgs,
    #[command(flatten)]
    pub webhook: WebhookArgs,
    #[command(flatten)]
    pub dns: DnsArgs,
}

/// Runs the chosen roles until SIGTERM or Ctrl-C.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let common = args.common;
    let (proxy_args, webhook_args, dns_args) = match args.role {
        Role::Proxy(p) => (Some(*p), None, None),
        Role::Webhook(w) => (None, Some(*w), None),
        Role::Dns(d) => (None, None, Some(*d)),
        Role::All(all) => (Some(all.proxy), Some(all.webhook), Some(all.dns)),
    };
    let kube = if proxy_args.is_some() || webhook_args.is_some() {
        kube_client(&common).await?
    } else {
        None
    };
    let (ca, ca_keeper) = if proxy_args.is_some() || webhook_args.is_some() {
        let store = match &common.ca_secret {
            Some(s) => {
                let (namespace, name) = s
                    .split_once('/')
                    .with_context(|| format!("--ca-secret {s:?} is not namespace/name"))?;
                CaStore::Secret { namespace: namespace.to_owned(), name: name.to_owned() }
            }
            None => CaStore::Directory(common.ca_dir.clone()),
        };
        let mut names = common.ca_permitted_names.clone();
        names.extend(webhook_args.iter().flat_map(WebhookArgs::serving_names));
        let keeper = CaKeeper::new(store, kube.clone(), &names);
        let (ca, task) = keeper
            .start(Duration::from_secs(common.ca_check_interval_secs))
            .await
            .context("loading the CA")?;
        (Some(ca), Some(task))
    } else {
        (None, None)
    };

    let outgoing = Outgoing::new(common.buffer);
    let (stop_ship, ship_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut shipper = None;
    let mut proxy = None;
    if let (Some(args), Some(ca)) = (&proxy_args, &ca) {
        proxy = Some(Proxy::start(args, ca.clone(), outgoing.clone()).await?);
        let credentials = match &common.shared_token {
            Some(t) => Credentials::Shared(t.clone()),
            None => Credentials::TokenFile(common.token_file.clone()),
        };
        let ship = Shipper {
            mapper_url: common.mapper_url.clone(),
            credentials,
            source: "aws-proxy".to_owned(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .context("building the HTTP client")?,
            max_batch: 5_000,
        };
        let every = Duration::from_secs_f64(common.ship_interval_seconds.max(0.05));
        let outgoing = outgoing.clone();
        shipper = Some(tokio::spawn(ship.run(outgoing, every, async move {
            let _ = ship_stopped.await;
        })));
    }
    let webhook = match (&webhook_args, &ca) {
        (Some(args), Some(ca)) => Some(Webhook::start(args, ca.clone(), kube.clone()).await?),
        _ => None,
    };
    let dns = match &dns_args {
        Some(args) => Some(DnsServer::start(args).await?),
        None => None,
    };

    let metrics = Arc::new(Metrics {
        proxy: proxy.as_ref().map(Proxy::stats),
        webhook: webhook.as_ref().map(Webhook::stats),
        dns: dns.as_ref().map(DnsServer::stats_handle),
        outgoing: outgoing.clone(),
    });
    let health = tokio::net::TcpListener::bind(common.health_listen).await.with_context(|| {
        format!(
            "binding the health listener on {} (pick another with --health-listen)",
            common.health_listen
        )
    })?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(move || std::future::ready(metrics.render())));
    let health_server = tokio::spawn(async move { axum::serve(health, app).await });

    termination().await;
    if let Some(p) = proxy {
        p.shutdown().await;
    }
    if let Some(w) = webhook {
        w.shutdown().await;
    }
    if let Some(d) = dns {
        d.shutdown().await;
    }
    let _ = stop_ship.send(());
    if let Some(s) = shipper {
        let _ = s.await;
    }
    health_server.abort();
    if let Some(task) = ca_keeper {
        task.abort();
    }
    Ok(())
}

async fn kube_client(common: &CommonArgs) -> anyhow::Result<Option<kube::Client>> {
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some();
    if !in_cluster {
        if common.ca_secret.is_some() {
            anyhow::bail!("--ca-secret needs Kubernetes access (run in a cluster or set KUBECONFIG), or use --ca-dir");
        }
        return Ok(None);
    }
    Ok(Some(
        kube::Client::try_default()
            .await
            .context("connecting to the Kubernetes API (in-cluster config or KUBECONFIG)")?,
    ))
}

struct Metrics {
    proxy: Option<Arc<crate::proxy::ProxyStats>>,
    webhook: Option<Arc<crate::webhook::WebhookStats>>,
    dns: Option<Arc<crate::dns::DnsStats>>,
    outgoing: Outgoing,
}

impl Metrics {
    fn render(&self) -> String {
        use std::fmt::Write as _;
        use std::sync::atomic::Ordering;
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ =
                writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter\n{name}_total {value}");
        };
        if let Some(stats) = &self.proxy {
            let s = stats.snapshot();
            counter("aws_proxy_connections", "Client connections accepted.", s.connections);
            counter("aws_proxy_requests", "Requests forwarded or refused.", s.requests);
            counter("aws_proxy_recorded_calls", "AWS calls recorded for the mapper.", s.recorded);
            counter(
                "aws_proxy_unknown_service",
                "Forwarded requests whose service could not be told.",
                s.unknown_service,
            );
            counter(
                "aws_proxy_handshake_failures",
                "TLS handshakes that failed or timed out.",
                s.handshake_failures,
            );
            counter(
                "aws_proxy_refused_hosts",
                "Connections or requests for hosts that are not AWS.",
                s.refused_hosts,
            );
            counter(
                "aws_proxy_upstream_errors",
                "Requests whose AWS endpoint could not be reached.",
                s.upstream_errors,
            );
            counter("aws_proxy_tunnels", "Pass-through CONNECT tunnels.", s.tunnels);
            counter(
                "aws_proxy_bad_authorities",
                "Requests refused for a Host with user information or a port other than 443.",
                s.bad_authorities,
            );
            counter(
                "aws_proxy_refused_connections",
                "Connections closed at once because --max-connections were open.",
                s.refused_connections,
            );
            counter(
                "aws_proxy_idle_closed",
                "Connections and tunnels closed for being idle.",
                s.idle_closed,
            );
        }
        if let Some(stats) = &self.webhook {
            let s = stats.snapshot();
            counter("aws_proxy_webhook_reviews", "AdmissionReviews answered.", s.reviews);
            counter("aws_proxy_webhook_patched", "Pods patched.", s.patched);
            counter(
                "aws_proxy_webhook_not_opted_in",
                "Labelled pods in namespaces not opted in (admitted unpatched, nothing written).",
                s.not_opted_in,
            );
            counter(
                "aws_proxy_webhook_configmap_failures",
                "Labelled pods admitted unpatched because the CA ConfigMap could not be written.",
                s.configmap_failures,
            );
            counter(
                "aws_proxy_webhook_handshake_failures",
                "Webhook TLS handshakes that failed (a missing or wrong client certificate among them).",
                s.handshake_failures,
            );
        }
        if let Some(stats) = &self.dns {
            let s = stats.snapshot();
            counter(
                "aws_proxy_dns_answered_aws",
                "amazonaws.com queries answered with the proxy's address.",
                s.answered_aws,
            );
            counter(
                "aws_proxy_dns_forwarded",
                "Queries answered by an upstream resolver.",
                s.forwarded,
            );
            counter(
                "aws_proxy_dns_servfail",
                "SERVFAIL answers made here (no upstream answered in time).",
                s.servfail,
            );
            counter("aws_proxy_dns_formerr", "Malformed queries answered with FORMERR.", s.formerr);
            counter(
                "aws_proxy_dns_dropped",
                "Packets dropped (too short, responses, over the in-flight limit).",
                s.dropped,
            );
        }
        let ship = &self.outgoing.stats;
        counter(
            "aws_proxy_shipped_calls",
            "Calls delivered to the mapper.",
            ship.shipped.load(Ordering::Relaxed),
        );
        counter(
            "aws_proxy_dropped_calls",
            "Calls dropped because the buffer was full while the mapper was away.",
            ship.dropped.load(Ordering::Relaxed),
        );
        counter(
            "aws_proxy_failed_sends",
            "Batches the mapper did not take (retried).",
            ship.failed_sends.load(Ordering::Relaxed),
        );
        out
    }
}

async fn termination() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
    tracing::info!("stopping");
}
