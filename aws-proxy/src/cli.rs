//! The `aws-proxy` command: one role per process (`proxy`, `webhook`, `dns`) or `all` of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::routing::get;
use clap::{Parser, Subcommand};
use observation_ship::Outgoing;
use service_shell::metrics::{Registry, Scrape};
use service_shell::{LogFormat, ShipArgs, ShipProfile};

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
    pub log_format: LogFormat,
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
    // How recorded calls reach the mapper: --mapper-url, --shared-token, --token-file,
    // --ship-interval-seconds, --buffer.
    #[command(flatten)]
    pub ship: ShipArgs<AwsProxyShip>,
    /// `/healthz` and `/metrics`.
    #[arg(long, env = "AWS_PROXY_HEALTH_LISTEN", default_value = "0.0.0.0:9092", global = true)]
    pub health_listen: SocketAddr,
}

/// `aws-proxy`'s words for the shipping flags, which every role accepts.
#[derive(Debug, Clone)]
pub struct AwsProxyShip;

impl ShipProfile for AwsProxyShip {
    const MAPPER_URL_HELP: &'static str = "The mapper that receives the recorded calls";
    const SHARED_TOKEN_HELP: &'static str =
        "A shared token for the mapper; without it the ServiceAccount token file is sent";
    const TOKEN_FILE_HELP: Option<&'static str> = None;
    const TOKEN_FILE: &'static str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
    const BUFFER_HELP: &'static str =
        "Calls held while the mapper is unreachable; past it the oldest are dropped and counted";
    const GLOBAL: bool = true;
    const SHIP_INTERVAL_ORDER: Option<usize> = None;
    const BUFFER_ORDER: Option<usize> = None;
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

    let outgoing = Outgoing::new(common.ship.buffer);
    let (stop_ship, ship_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut shipper = None;
    let mut proxy = None;
    if let (Some(args), Some(ca)) = (&proxy_args, &ca) {
        proxy = Some(Proxy::start(args, ca.clone(), outgoing.clone()).await?);
        let ship = common.ship.shipper("aws-proxy".to_owned())?;
        let every = common.ship.interval();
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

    let metrics = Arc::new(
        Metrics {
            proxy: proxy.as_ref().map(Proxy::stats),
            webhook: webhook.as_ref().map(Webhook::stats),
            dns: dns.as_ref().map(DnsServer::stats_handle),
            outgoing: outgoing.clone(),
        }
        .registry(),
    );
    let health = tokio::net::TcpListener::bind(common.health_listen).await.with_context(|| {
        format!(
            "binding the health listener on {} (pick another with --health-listen)",
            common.health_listen
        )
    })?;
    let app = axum::Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route("/metrics", get(move || std::future::ready(metrics.response())));
    let health_server = tokio::spawn(async move { axum::serve(health, app).await });

    service_shell::shutdown_signal().await;
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
    /// `/metrics`: the counters of the roles that run, read at every scrape.
    fn registry(self) -> Registry {
        let mut registry = Registry::with_prefix("aws_proxy");
        registry.register_scrape(move |m| self.read(m));
        registry
    }

    fn read(&self, m: &mut Scrape<'_>) {
        use std::sync::atomic::Ordering;
        if let Some(stats) = &self.proxy {
            let s = stats.snapshot();
            m.counter("connections", "Client connections accepted.", s.connections);
            m.counter("requests", "Requests forwarded or refused.", s.requests);
            m.counter("recorded_calls", "AWS calls recorded for the mapper.", s.recorded);
            m.counter(
                "unknown_service",
                "Forwarded requests whose service could not be told.",
                s.unknown_service,
            );
            m.counter(
                "handshake_failures",
                "TLS handshakes that failed or timed out.",
                s.handshake_failures,
            );
            m.counter(
                "refused_hosts",
                "Connections or requests for hosts that are not AWS.",
                s.refused_hosts,
            );
            m.counter(
                "upstream_errors",
                "Requests whose AWS endpoint could not be reached.",
                s.upstream_errors,
            );
            m.counter("tunnels", "Pass-through CONNECT tunnels.", s.tunnels);
            m.counter(
                "bad_authorities",
                "Requests refused for a Host with user information or a port other than 443.",
                s.bad_authorities,
            );
            m.counter(
                "refused_connections",
                "Connections closed at once because --max-connections were open.",
                s.refused_connections,
            );
            m.counter(
                "idle_closed",
                "Connections and tunnels closed for being idle.",
                s.idle_closed,
            );
        }
        if let Some(stats) = &self.webhook {
            let s = stats.snapshot();
            m.counter("webhook_reviews", "AdmissionReviews answered.", s.reviews);
            m.counter("webhook_patched", "Pods patched.", s.patched);
            m.counter(
                "webhook_not_opted_in",
                "Labelled pods in namespaces not opted in (admitted unpatched, nothing written).",
                s.not_opted_in,
            );
            m.counter(
                "webhook_configmap_failures",
                "Labelled pods admitted unpatched because the CA ConfigMap could not be written.",
                s.configmap_failures,
            );
            m.counter(
                "webhook_handshake_failures",
                "Webhook TLS handshakes that failed (a missing or wrong client certificate among them).",
                s.handshake_failures,
            );
        }
        if let Some(stats) = &self.dns {
            let s = stats.snapshot();
            m.counter(
                "dns_answered_aws",
                "amazonaws.com queries answered with the proxy's address.",
                s.answered_aws,
            );
            m.counter("dns_forwarded", "Queries answered by an upstream resolver.", s.forwarded);
            m.counter(
                "dns_servfail",
                "SERVFAIL answers made here (no upstream answered in time).",
                s.servfail,
            );
            m.counter("dns_formerr", "Malformed queries answered with FORMERR.", s.formerr);
            m.counter(
                "dns_dropped",
                "Packets dropped (too short, responses, over the in-flight limit).",
                s.dropped,
            );
        }
        let ship = &self.outgoing.stats;
        m.counter(
            "shipped_calls",
            "Calls delivered to the mapper.",
            ship.shipped.load(Ordering::Relaxed),
        );
        m.counter(
            "dropped_calls",
            "Calls dropped because the buffer was full while the mapper was away.",
            ship.dropped.load(Ordering::Relaxed),
        );
        m.counter(
            "failed_sends",
            "Batches the mapper did not take (retried).",
            ship.failed_sends.load(Ordering::Relaxed),
        );
    }
}
