//! The webhook's HTTPS server: TLS with a serving certificate from the proxy's CA (and client
//! certificates when `--client-ca-file` is given), `POST /mutate`, `GET /healthz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use kube::api::Api;
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use super::ca_bundle::keep_ca_bundle;
use super::configmaps::CaConfigMaps;
use super::mutation::{Admission, Decision, MutationConfig, WebhookError};
use super::{WebhookArgs, MUTATE_PATH};
use crate::ca::SharedCa;

/// How long ensuring a ConfigMap may take; the API server waits 10 s for the whole answer.
const CONFIGMAP_TIMEOUT: Duration = Duration::from_secs(5);
/// The serving certificate is issued again this often (the CA's leaves last 7 days).
const CERT_RENEWAL: Duration = Duration::from_secs(24 * 3600);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Webhook::shutdown`] lets open requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// A Pod is at most 1.5 MiB in etcd; the review wraps one.
const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

/// Counters, exported as metrics.
#[derive(Debug, Default)]
pub struct WebhookStats {
    pub reviews: AtomicU64,
    pub patched: AtomicU64,
    /// Labelled pods in namespaces that did not opt in (allowed unpatched, nothing written).
    pub not_opted_in: AtomicU64,
    /// Labelled pods admitted unpatched because the CA ConfigMap could not be written.
    pub configmap_failures: AtomicU64,
    /// TLS handshakes that failed (no or a wrong client certificate, garbage, timeouts).
    pub handshake_failures: AtomicU64,
}

/// A snapshot of [`WebhookStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WebhookStatsSnapshot {
    pub reviews: u64,
    pub patched: u64,
    pub not_opted_in: u64,
    pub configmap_failures: u64,
    pub handshake_failures: u64,
}

impl WebhookStats {
    pub fn snapshot(&self) -> WebhookStatsSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        WebhookStatsSnapshot {
            reviews: get(&self.reviews),
            patched: get(&self.patched),
            not_opted_in: get(&self.not_opted_in),
            configmap_failures: get(&self.configmap_failures),
            handshake_failures: get(&self.handshake_failures),
        }
    }
}

fn count(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// The running webhook server; see the [module docs](super). Dropping it stops it too.
pub struct Webhook {
    local_addr: SocketAddr,
    stats: Arc<WebhookStats>,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    background: Vec<JoinHandle<()>>,
}

impl Webhook {
    /// Issues the serving certificate for [`WebhookArgs::serving_names`], binds
    /// `--webhook-listen` and serves. With `kube`, keeps the CA ConfigMaps and (with
    /// `--patch-webhook-configuration`) the `caBundle`; without it, the ConfigMaps must be
    /// provided by other means. The cluster's DNS fallback comes from the flag or
    /// /etc/resolv.conf ([`WebhookArgs::fallback_dns_ip`]).
    pub async fn start(
        args: &WebhookArgs,
        ca: impl Into<SharedCa>,
        kube: Option<kube::Client>,
    ) -> anyhow::Result<Webhook> {
        let resolv_conf = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        let fallback = args.fallback_dns_ip(&resolv_conf);
        if fallback.is_none() && !args.no_cluster_dns_fallback {
            warn!("no cluster DNS found for the fallback nameserver (pass --cluster-dns-ip): patched pods resolve only through the aws-proxy DNS");
        }
        Self::start_with(args, args.mutation_config(fallback), ca.into(), kube).await
    }

    /// [`Self::start`] with the mutation settings given.
    pub async fn start_with(
        args: &WebhookArgs,
        config: MutationConfig,
        ca: SharedCa,
        kube: Option<kube::Client>,
    ) -> anyhow::Result<Webhook> {
        if let (Some(name), None) = (&args.patch_webhook_configuration, &kube) {
            anyhow::bail!(
                "--patch-webhook-configuration {name} needs access to the Kubernetes API"
            );
        }
        anyhow::ensure!(
            !config.opted_in_namespaces.is_empty(),
            "--opted-in-namespaces names no namespace: the webhook would patch nothing"
        );
        if kube.is_none() {
            warn!(configmap = %args.ca_configmap_name, "no Kubernetes API access: the CA ConfigMap must be provided in each namespace by other means");
        }
        let names = args.serving_names();
        let certificate = ServingCertificate::issue(ca.clone(), names.clone())
            .context("issuing the webhook's serving certificate")?;
        let builder = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .context("setting up TLS")?;
        let builder = match &args.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => builder.with_client_cert_verifier(client_verifier(path)?),
        };
        let mut tls = builder.with_cert_resolver(Arc::new(certificate));
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let listener = TcpListener::bind(args.webhook_listen)
            .await
            .with_context(|| format!("binding the webhook to {}", args.webhook_listen))?;
        let local_addr = listener.local_addr().context("the webhook's local address")?;
        let configmaps = Arc::new(CaConfigMaps::new(
            kube.clone(),
            &args.ca_configmap_name,
            ca.current().ca_pem(),
            &args.system_roots,
        ));
        let stats = Arc::new(WebhookStats::default());
        let namespaces = config.opted_in_namespaces.clone();
        let app = router(Arc::new(AppState {
            config,
            configmaps: configmaps.clone(),
            stats: stats.clone(),
        }));
        let (shutdown, _) = watch::channel(false);
        let server = tokio::spawn(serve(
            listener,
            TlsAcceptor::from(Arc::new(tls)),
            app,
            stats.clone(),
            shutdown.subscribe(),
        ));
        let mut background =
            vec![tokio::spawn(keep_configmaps(configmaps, namespaces, ca.subscribe()))];
        if let (Some(name), Some(client)) = (&args.patch_webhook_configuration, kube) {
            background.push(tokio::spawn(keep_ca_bundle(
                Api::all(client),
                name.clone(),
                ca.subscribe(),
                shutdown.subscribe(),
            )));
        }
        info!(%local_addr, ?names, client_certificates = args.client_ca_file.is_some(), "admission webhook serving HTTPS");
        Ok(Webhook { local_addr, stats, shutdown, server, background })
    }

    /// The address it listens on (with the actual port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn stats(&self) -> Arc<WebhookStats> {
        self.stats.clone()
    }

    /// Stops accepting, lets open requests finish (for a few seconds at most) and stops.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        if let Err(err) = self.server.await {
            warn!(%err, "the webhook server task failed");
        }
        for task in self.background {
            task.abort();
        }
    }
}

fn client_verifier(
    path: &std::path::Path,
) -> anyhow::Result<Arc<dyn rustls::server::danger::ClientCertVerifier>> {
    use rustls::pki_types::pem::PemObject as _;
    let pem = std::fs::read(path)
        .with_context(|| format!("reading --client-ca-file {}", path.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots
            .add(cert.with_context(|| format!("{} is not PEM", path.display()))?)
            .with_context(|| format!("a certificate in {}", path.display()))?;
    }
    anyhow::ensure!(!roots.is_empty(), "--client-ca-file {} holds no certificate", path.display());
    WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .with_context(|| format!("using {} to verify client certificates", path.display()))
}

/// Brings the opted-in namespaces' ConfigMaps up to date at start and after every rotation.
async fn keep_configmaps(
    configmaps: Arc<CaConfigMaps>,
    namespaces: std::collections::BTreeSet<String>,
    mut ca: watch::Receiver<Arc<crate::ca::CertificateAuthority>>,
) {
    loop {
        let pem = ca.borrow_and_update().ca_pem().to_owned();
        configmaps.set_ca(&pem);
        configmaps.sweep(&namespaces).await;
        if ca.changed().await.is_err() {
            return;
        }
    }
}

struct AppState {
    config: MutationConfig,
    configmaps: Arc<CaConfigMaps>,
    stats: Arc<WebhookStats>,
}

fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(MUTATE_PATH, post(admit))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES))
        .with_state(state)
}

async fn admit(
    State(state): State<Arc<AppState>>,
    body: Bytes,
) -> Result<Json<Value>, WebhookError> {
    let review: Value = serde_json::from_slice(&body)
        .map_err(|err| WebhookError::MalformedReview(format!("the body is not JSON: {err}")))?;
    let admission = Admission::parse(&review)?;
    count(&state.stats.reviews);
    let mut decision = admission.decide(&state.config);
    match (&decision, &admission.creation) {
        (Decision::Patch(patch), Some(creation)) if !patch.is_empty() && !admission.dry_run => {
            let ensured = tokio::time::timeout(
                CONFIGMAP_TIMEOUT,
                state.configmaps.ensure(&creation.namespace, true),
            )
            .await;
            let failure = match ensured {
                Ok(Ok(())) => None,
                Ok(Err(err)) => Some(err.to_string()),
                Err(_) => {
                    Some(format!("no answer from the Kubernetes API within {CONFIGMAP_TIMEOUT:?}"))
                }
            };
            match failure {
                None => count(&state.stats.patched),
                Some(error) => {
                    count(&state.stats.configmap_failures);
                    warn!(
                        uid = %admission.uid,
                        configmap = %format!("{}/{}", creation.namespace, state.configmaps.name),
                        %error,
                        "cannot write the CA ConfigMap (RBAC needs get, create and update on it in the namespace); admitting {} without AWS visibility",
                        admission.describe(),
                    );
                    decision = Decision::Nothing;
                }
            }
        }
        (Decision::NotOptedIn(namespace), _) => {
            count(&state.stats.not_opted_in);
            warn!(uid = %admission.uid, namespace, "a labelled pod in a namespace that is not opted in: admitting {} without AWS visibility", admission.describe());
        }
        _ => {}
    }
    debug!(uid = %admission.uid, ?decision, "admitted {}", admission.describe());
    Ok(Json(admission.response(&decision)))
}

async fn serve(
    listener: TcpListener,
    tls: TlsAcceptor,
    app: Router,
    stats: Arc<WebhookStats>,
    shutdown: watch::Receiver<bool>,
) {
    let mut stop = shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(serve_connection(tcp, tls.clone(), app.clone(), stats.clone(), shutdown.clone()));
                }
                Err(err) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    warn!(%err, "accepting a webhook connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            () = stopped(&mut stop) => break,
        }
    }
    drop(listener);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        warn!("webhook connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    connections.shutdown().await;
}

async fn serve_connection(
    tcp: TcpStream,
    tls: TlsAcceptor,
    app: Router,
    stats: Arc<WebhookStats>,
    mut shutdown: watch::Receiver<bool>,
) {
    let peer = tcp.peer_addr().ok();
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => {
            count(&stats.handshake_failures);
            return debug!(?peer, %err, "TLS handshake with a webhook client failed");
        }
        Err(_) => {
            count(&stats.handshake_failures);
            return debug!(?peer, "TLS handshake with a webhook client timed out");
        }
    };
    let builder = auto::Builder::new(TokioExecutor::new());
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopped(&mut shutdown) => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(err) = result {
        debug!(%err, "webhook connection ended with an error");
    }
}

/// Resolves once shutdown is asked for (or the [`Webhook`] is dropped).
pub(super) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    drop(shutdown.wait_for(|&stop| stop).await);
}

/// The serving certificate, issued again every [`CERT_RENEWAL`] and whenever the CA rotates.
#[derive(Debug)]
struct ServingCertificate {
    ca: SharedCa,
    names: Vec<String>,
    /// When it was issued, by which signing CA (PEM), and the key.
    current: Mutex<(Instant, String, Arc<CertifiedKey>)>,
}

impl ServingCertificate {
    fn issue(ca: SharedCa, names: Vec<String>) -> Result<Self, crate::ca::CaError> {
        let authority = ca.current();
        let issued = authority.issue(&names)?;
        let current = Mutex::new((
            Instant::now(),
            authority.signing_ca_pem().to_owned(),
            issued.certified_key,
        ));
        Ok(Self { ca, names, current })
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        let authority = self.ca.current();
        if current.0.elapsed() >= CERT_RENEWAL || current.1 != authority.signing_ca_pem() {
            match authority.issue(&self.names) {
                Ok(issued) => {
                    *current = (
                        Instant::now(),
                        authority.signing_ca_pem().to_owned(),
                        issued.certified_key,
                    )
                }
                Err(err) => {
                    warn!(error = %err, "renewing the webhook's serving certificate failed; serving the current one")
                }
            }
        }
        Some(current.2.clone())
    }
}
