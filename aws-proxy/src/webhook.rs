//! The mutating admission webhook that opts labelled pods in to AWS visibility.
//!
//! A pod labelled `network-mapper.otterize.com/aws-visibility: "true"` (Otterize's label) or
//! `intentmap.dev/aws-visibility: "true"` (ours) is patched at `CREATE` so that
//! - the ConfigMap [`DEFAULT_CA_CONFIGMAP`] of its namespace is mounted read-only at
//!   [`CA_MOUNT_PATH`] in every container and init container: `ca.crt` is the proxy's CA and
//!   `bundle.crt` the CA followed by the system roots, so that TLS to hosts that are not
//!   intercepted still verifies;
//! - the usual CA variables (`AWS_CA_BUNDLE`, `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`,
//!   `CURL_CA_BUNDLE` → `bundle.crt`, `NODE_EXTRA_CA_CERTS` → `ca.crt`) are set where the
//!   container does not set them itself in `env` (a value from `envFrom` cannot be seen and is
//!   overridden);
//! - its DNS goes to the aws-proxy DNS server (`dnsPolicy: None`, the cluster's search path and
//!   `ndots:5`, merged with the pod's own `dnsConfig`), except for `hostNetwork` pods and pods
//!   that already list that server;
//! - it carries [`INJECTED_ANNOTATION`]; a pod with it (or with the volume) is left alone, so
//!   the webhook is idempotent.
//!
//! The patch itself comes from [`mutate`], a pure function of the `AdmissionReview`. Around it,
//! [`Webhook`] serves HTTPS (`POST /mutate`, `GET /healthz`) with a certificate from the proxy's
//! own CA, keeps the CA ConfigMap in each namespace it admits a labelled pod in, and can keep
//! the `caBundle` of its `MutatingWebhookConfiguration` (`--patch-webhook-configuration`).
//!
//! The chart sets `failurePolicy: Ignore`, so a pod is never blocked by this webhook. A pod
//! mounting a ConfigMap that does not exist would never start, though; so when the ConfigMap
//! cannot be made right (no RBAC, API server unreachable), the pod is let through **unpatched**
//! and the failure logged: it runs without AWS visibility rather than not at all.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, PodDNSConfig, PodDNSConfigOption};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::ca::CertificateAuthority;

/// Otterize's opt-in label; the value must be `"true"`.
pub const OTTERIZE_LABEL: &str = "network-mapper.otterize.com/aws-visibility";
/// Our own opt-in label; the value must be `"true"`.
pub const LABEL: &str = "intentmap.dev/aws-visibility";
/// Set on patched pods, with the version of the webhook that patched them.
pub const INJECTED_ANNOTATION: &str = "intentmap.dev/aws-visibility-injected";
/// The name of the volume added to pods.
pub const CA_VOLUME: &str = "intentmap-aws-ca";
/// Where the CA ConfigMap is mounted in every container.
pub const CA_MOUNT_PATH: &str = "/etc/intentmap/aws-ca";
/// The default name of the CA ConfigMap kept in each namespace.
pub const DEFAULT_CA_CONFIGMAP: &str = "intentmap-aws-ca";
/// The ConfigMap key holding the proxy's CA certificate.
pub const CA_KEY: &str = "ca.crt";
/// The ConfigMap key holding the CA followed by the system roots.
pub const BUNDLE_KEY: &str = "bundle.crt";
/// The path the API server posts `AdmissionReview`s to.
pub const MUTATE_PATH: &str = "/mutate";

/// The variables set in every container, and the file each points at.
const CA_ENV: [(&str, &str); 5] = [
    ("AWS_CA_BUNDLE", BUNDLE_KEY),
    ("SSL_CERT_FILE", BUNDLE_KEY),
    ("REQUESTS_CA_BUNDLE", BUNDLE_KEY),
    ("CURL_CA_BUNDLE", BUNDLE_KEY),
    ("NODE_EXTRA_CA_CERTS", CA_KEY),
];
/// Kubernetes accepts at most this many nameservers in `dnsConfig`.
const MAX_NAMESERVERS: usize = 3;
/// How long a namespace's ConfigMap is trusted to be right before it is checked again (someone
/// may have deleted it).
const CONFIGMAP_RECHECK: Duration = Duration::from_secs(600);
/// How long ensuring a ConfigMap may take; the API server waits 10 s for the whole answer.
const CONFIGMAP_TIMEOUT: Duration = Duration::from_secs(5);
/// The serving certificate is issued again this often (the CA's leaves last 7 days).
const CERT_RENEWAL: Duration = Duration::from_secs(24 * 3600);
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long [`Webhook::shutdown`] lets open requests finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Retries of the `caBundle` patch start at this delay and double up to [`CA_BUNDLE_MAX_BACKOFF`].
const CA_BUNDLE_FIRST_BACKOFF: Duration = Duration::from_millis(200);
const CA_BUNDLE_MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Once set, the `caBundle` is checked this often (a `helm upgrade` resets it).
const CA_BUNDLE_RECHECK: Duration = Duration::from_secs(300);
/// A Pod is at most 1.5 MiB in etcd; the review wraps one.
const MAX_REVIEW_BYTES: usize = 8 * 1024 * 1024;

// === Args ===

/// How to run the webhook.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Where to serve HTTPS.
    #[arg(long, env, default_value = "0.0.0.0:8443")]
    pub webhook_listen: SocketAddr,
    /// The Service in front of the webhook; its DNS names are in the serving certificate.
    #[arg(long, env, default_value = "aws-proxy")]
    pub webhook_service: String,
    /// The namespace of that Service.
    #[arg(long, env = "POD_NAMESPACE")]
    pub webhook_namespace: String,
    /// The address of the aws-proxy DNS server that patched pods resolve through.
    #[arg(long, env)]
    pub dns_server_ip: IpAddr,
    /// The cluster's DNS domain.
    #[arg(long, env, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The ConfigMap holding the CA bundle, kept in every namespace with a patched pod.
    #[arg(long, env, default_value = DEFAULT_CA_CONFIGMAP)]
    pub ca_configmap_name: String,
    /// The system roots appended to the CA in `bundle.crt` (skipped with a warning if absent).
    #[arg(long, env, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    pub system_roots: PathBuf,
    /// A MutatingWebhookConfiguration whose webhooks' `caBundle` is set to the CA at start.
    #[arg(long, env)]
    pub patch_webhook_configuration: Option<String>,
}

impl WebhookArgs {
    /// The DNS names of the webhook's Service, as the API server connects to it.
    pub fn serving_names(&self) -> Vec<String> {
        let (service, namespace) = (&self.webhook_service, &self.webhook_namespace);
        vec![format!("{service}.{namespace}.svc"), format!("{service}.{namespace}.svc.{}", self.cluster_domain)]
    }
}

// === Mutation ===

/// What [`mutate`] needs to know about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutationConfig {
    pub dns_server_ip: IpAddr,
    pub cluster_domain: String,
    pub ca_configmap_name: String,
}

impl MutationConfig {
    /// The defaults (`cluster.local`, [`DEFAULT_CA_CONFIGMAP`]) with the DNS server's address.
    pub fn new(dns_server_ip: IpAddr) -> Self {
        Self { dns_server_ip, cluster_domain: "cluster.local".to_owned(), ca_configmap_name: DEFAULT_CA_CONFIGMAP.to_owned() }
    }
}

impl From<&WebhookArgs> for MutationConfig {
    fn from(args: &WebhookArgs) -> Self {
        Self { dns_server_ip: args.dns_server_ip, cluster_domain: args.cluster_domain.clone(), ca_configmap_name: args.ca_configmap_name.clone() }
    }
}

/// Why a request to the webhook cannot be answered.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    /// The body is not an `admission.k8s.io/v1` `AdmissionReview` with a request (400).
    #[error("malformed AdmissionReview: {0}")]
    MalformedReview(String),
}

impl IntoResponse for WebhookError {
    fn into_response(self) -> Response {
        match &self {
            Self::MalformedReview(_) => {
                debug!(error = %self, "refused a request");
                (StatusCode::BAD_REQUEST, self.to_string()).into_response()
            }
        }
    }
}

/// Answers an `AdmissionReview` request with an `AdmissionReview` response: always allowed,
/// with a `JSONPatch` for a labelled pod being created that is not patched yet. Pure: the CA
/// ConfigMap is assumed to exist (see [`Webhook`] for what happens when it cannot be made to).
pub fn mutate(review: &Value, config: &MutationConfig) -> Result<Value, WebhookError> {
    let admission = Admission::parse(review)?;
    let patch = admission.patch(config);
    Ok(admission.response(&patch))
}

/// A pod being created, from a review.
struct PodCreation {
    pod: Pod,
    namespace: String,
}

/// The parts of an `AdmissionReview` the webhook uses.
struct Admission {
    api_version: String,
    uid: String,
    /// Set when the review is about a pod being created; other reviews are allowed unchanged.
    creation: Option<PodCreation>,
}

impl Admission {
    fn parse(review: &Value) -> Result<Self, WebhookError> {
        let malformed = |message: &str| WebhookError::MalformedReview(message.to_owned());
        if !review.is_object() {
            return Err(malformed("it is not a JSON object"));
        }
        let api_version = match review.get("apiVersion") {
            Some(Value::String(v)) if matches!(v.as_str(), "admission.k8s.io/v1" | "admission.k8s.io/v1beta1") => v.as_str(),
            Some(other) => return Err(WebhookError::MalformedReview(format!("apiVersion must be admission.k8s.io/v1, not {other}"))),
            None => return Err(malformed("apiVersion is missing")),
        };
        if review.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
            return Err(malformed("kind must be AdmissionReview"));
        }
        let request = review.get("request").filter(|r| r.is_object()).ok_or_else(|| malformed("it has no request"))?;
        let uid = request.get("uid").and_then(Value::as_str).filter(|uid| !uid.is_empty()).ok_or_else(|| malformed("request.uid is missing"))?;
        let text = |field: &str| request.get(field).and_then(Value::as_str).unwrap_or_default();
        let kind = request.get("kind").cloned().unwrap_or_default();
        let is_pod = kind.get("group").and_then(Value::as_str).unwrap_or_default().is_empty()
            && kind.get("version").and_then(Value::as_str) == Some("v1")
            && kind.get("kind").and_then(Value::as_str) == Some("Pod");
        let creation = if is_pod && text("operation") == "CREATE" && text("subResource").is_empty() {
            let object = request.get("object").filter(|o| o.is_object()).ok_or_else(|| malformed("request.object is missing"))?;
            let pod: Pod =
                serde_json::from_value(object.clone()).map_err(|err| WebhookError::MalformedReview(format!("request.object is not a Pod: {err}")))?;
            let namespace = Some(text("namespace"))
                .filter(|ns| !ns.is_empty())
                .map(str::to_owned)
                .or_else(|| pod.metadata.namespace.clone().filter(|ns| !ns.is_empty()))
                .ok_or_else(|| malformed("request.namespace is missing"))?;
            Some(PodCreation { pod, namespace })
        } else {
            None
        };
        Ok(Self { api_version: api_version.to_owned(), uid: uid.to_owned(), creation })
    }

    /// The JSON patch for this review; empty when nothing is to change.
    fn patch(&self, config: &MutationConfig) -> Vec<Value> {
        match &self.creation {
            Some(PodCreation { pod, namespace }) if wants_injection(pod) && !is_injected(pod) => pod_patch(pod, namespace, config),
            _ => Vec::new(),
        }
    }

    fn response(&self, patch: &[Value]) -> Value {
        let mut response = json!({"uid": self.uid, "allowed": true});
        if !patch.is_empty() {
            let patch = serde_json::to_vec(patch).expect("JSON values serialize");
            response["patchType"] = "JSONPatch".into();
            response["patch"] = base64::engine::general_purpose::STANDARD.encode(patch).into();
        }
        json!({"apiVersion": self.api_version, "kind": "AdmissionReview", "response": response})
    }

    fn describe(&self) -> String {
        match &self.creation {
            Some(PodCreation { pod, namespace }) => {
                let name = pod.metadata.name.clone().or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*"))).unwrap_or_default();
                format!("pod {namespace}/{name}")
            }
            None => "not a pod creation".to_owned(),
        }
    }
}

/// Whether the pod carries one of the opt-in labels set to `"true"`.
pub fn wants_injection(pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    [OTTERIZE_LABEL, LABEL].iter().any(|label| labels.and_then(|l| l.get(*label)).is_some_and(|v| v == "true"))
}

/// Whether the pod was already patched (by this or an earlier version of the webhook).
pub fn is_injected(pod: &Pod) -> bool {
    let annotated = pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(INJECTED_ANNOTATION));
    let has_volume = pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).is_some_and(|v| v.iter().any(|v| v.name == CA_VOLUME));
    annotated || has_volume
}

fn pod_patch(pod: &Pod, namespace: &str, config: &MutationConfig) -> Vec<Value> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let mut patch = Vec::new();
    let volume = json!({"name": CA_VOLUME, "configMap": {"name": config.ca_configmap_name}});
    add_items(&mut patch, "/spec/volumes", spec.volumes.is_some(), vec![volume]);
    let init_containers = spec.init_containers.as_deref().unwrap_or_default();
    for (field, containers) in [("containers", spec.containers.as_slice()), ("initContainers", init_containers)] {
        for (i, container) in containers.iter().enumerate() {
            container_patch(&mut patch, &format!("/spec/{field}/{i}"), container);
        }
    }
    let nameserver = config.dns_server_ip.to_string();
    let lists_ours = spec.dns_policy.as_deref() == Some("None")
        && spec.dns_config.as_ref().and_then(|c| c.nameservers.as_ref()).is_some_and(|servers| servers.contains(&nameserver));
    if spec.host_network != Some(true) && !lists_ours {
        let dns_config = dns_config(spec.dns_config.as_ref(), &nameserver, namespace, &config.cluster_domain);
        patch.push(json!({"op": "add", "path": "/spec/dnsPolicy", "value": "None"}));
        patch.push(json!({"op": "add", "path": "/spec/dnsConfig", "value": serde_json::to_value(dns_config).expect("a PodDNSConfig serializes")}));
    }
    let version = env!("CARGO_PKG_VERSION");
    match pod.metadata.annotations {
        Some(_) => patch.push(json!({"op": "add", "path": format!("/metadata/annotations/{}", escape_pointer(INJECTED_ANNOTATION)), "value": version})),
        None => patch.push(json!({"op": "add", "path": "/metadata/annotations", "value": {INJECTED_ANNOTATION: version}})),
    }
    patch
}

fn container_patch(patch: &mut Vec<Value>, path: &str, container: &Container) {
    let mounts = container.volume_mounts.as_deref().unwrap_or_default();
    if !mounts.iter().any(|m| m.name == CA_VOLUME || m.mount_path == CA_MOUNT_PATH) {
        let mount = json!({"name": CA_VOLUME, "mountPath": CA_MOUNT_PATH, "readOnly": true});
        add_items(patch, &format!("{path}/volumeMounts"), container.volume_mounts.is_some(), vec![mount]);
    }
    let env = container.env.as_deref().unwrap_or_default();
    let missing = CA_ENV
        .iter()
        .filter(|(name, _)| !env.iter().any(|var| var.name == *name))
        .map(|(name, file)| json!({"name": name, "value": format!("{CA_MOUNT_PATH}/{file}")}))
        .collect();
    add_items(patch, &format!("{path}/env"), container.env.is_some(), missing);
}

/// Appends `items` to the array at `path`, or creates it when the pod has none (`add` to
/// `.../-` fails on an absent array).
fn add_items(patch: &mut Vec<Value>, path: &str, exists: bool, items: Vec<Value>) {
    if items.is_empty() {
        return;
    }
    if exists {
        patch.extend(items.into_iter().map(|item| json!({"op": "add", "path": format!("{path}/-"), "value": item})));
    } else {
        patch.push(json!({"op": "add", "path": path, "value": items}));
    }
}

/// Escapes a key for a JSON pointer (RFC 6901): `~` → `~0`, `/` → `~1`.
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The pod's DNS configuration with our nameserver first, the cluster's search path (as
/// `ClusterFirst` would give) and `ndots:5`, keeping what the pod set itself: its nameservers
/// after ours (up to the limit of three), its searches after ours, its options (an `ndots` of
/// its own wins).
fn dns_config(existing: Option<&PodDNSConfig>, nameserver: &str, namespace: &str, cluster_domain: &str) -> PodDNSConfig {
    let existing = existing.cloned().unwrap_or_default();
    let mut nameservers = vec![nameserver.to_owned()];
    for server in existing.nameservers.unwrap_or_default() {
        if !nameservers.contains(&server) && nameservers.len() < MAX_NAMESERVERS {
            nameservers.push(server);
        }
    }
    let mut searches = vec![format!("{namespace}.svc.{cluster_domain}"), format!("svc.{cluster_domain}"), cluster_domain.to_owned()];
    for search in existing.searches.unwrap_or_default() {
        if !searches.contains(&search) {
            searches.push(search);
        }
    }
    let mut options = vec![PodDNSConfigOption { name: Some("ndots".to_owned()), value: Some("5".to_owned()) }];
    for option in existing.options.unwrap_or_default() {
        match options.iter_mut().find(|o| o.name == option.name) {
            Some(ours) => *ours = option,
            None => options.push(option),
        }
    }
    PodDNSConfig { nameservers: Some(nameservers), searches: Some(searches), options: Some(options) }
}

// === CA ConfigMaps ===

/// Keeps the CA ConfigMap right in each namespace a labelled pod is admitted in.
struct CaConfigMaps {
    /// `None`: no API access, the ConfigMaps are someone else's job.
    client: Option<kube::Client>,
    name: String,
    data: BTreeMap<String, String>,
    /// Namespaces whose ConfigMap was found or made right, and when.
    ensured: Mutex<HashMap<String, Instant>>,
}

impl CaConfigMaps {
    fn new(client: Option<kube::Client>, name: &str, ca_pem: &str, system_roots: &Path) -> Self {
        let ca_pem = format!("{}\n", ca_pem.trim_end());
        let roots = match std::fs::read_to_string(system_roots) {
            Ok(roots) => roots,
            Err(err) => {
                warn!(path = %system_roots.display(), %err, "no system roots: {BUNDLE_KEY} will hold only the proxy's CA, and TLS to hosts the proxy does not intercept will fail in patched pods");
                String::new()
            }
        };
        let data = [(CA_KEY.to_owned(), ca_pem.clone()), (BUNDLE_KEY.to_owned(), ca_pem + &roots)].into_iter().collect();
        Self { client, name: name.to_owned(), data, ensured: Mutex::default() }
    }

    /// Makes sure the ConfigMap exists with the right data in `namespace`; cached, so most
    /// calls make no API request.
    async fn ensure(&self, namespace: &str) -> Result<(), kube::Error> {
        let Some(client) = &self.client else {
            return Ok(());
        };
        let fresh = self.ensured.lock().unwrap_or_else(PoisonError::into_inner).get(namespace).is_some_and(|at| at.elapsed() < CONFIGMAP_RECHECK);
        if fresh {
            return Ok(());
        }
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
        let pp = PostParams { field_manager: Some("aws-proxy".to_owned()), ..PostParams::default() };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let written = match api.get_opt(&self.name).await? {
                Some(existing) if existing.data.as_ref() == Some(&self.data) => Ok("up to date"),
                Some(mut existing) => {
                    existing.data = Some(self.data.clone());
                    api.replace(&self.name, &pp, &existing).await.map(|_| "replaced")
                }
                None => {
                    let labels = [("app.kubernetes.io/managed-by".to_owned(), "intentmap-aws-proxy".to_owned())].into_iter().collect();
                    let metadata =
                        ObjectMeta { name: Some(self.name.clone()), namespace: Some(namespace.to_owned()), labels: Some(labels), ..ObjectMeta::default() };
                    let configmap = ConfigMap { metadata, data: Some(self.data.clone()), ..ConfigMap::default() };
                    api.create(&pp, &configmap).await.map(|_| "created")
                }
            };
            match written {
                Ok(what) => {
                    info!(configmap = %format!("{namespace}/{}", self.name), "CA ConfigMap {what}");
                    self.ensured.lock().unwrap_or_else(PoisonError::into_inner).insert(namespace.to_owned(), Instant::now());
                    return Ok(());
                }
                // Someone else wrote it in between (another replica): look again.
                Err(kube::Error::Api(status)) if status.code == 409 && attempts < 3 => continue,
                Err(err) => return Err(err),
            }
        }
    }
}

// === caBundle of the webhook configuration ===

/// Keeps each webhook of the `MutatingWebhookConfiguration` `name` trusting `ca_pem`: retries
/// with backoff until the configuration exists, then checks again now and then.
async fn keep_ca_bundle(api: Api<MutatingWebhookConfiguration>, name: String, ca_pem: String, mut shutdown: watch::Receiver<bool>) {
    let mut backoff = CA_BUNDLE_FIRST_BACKOFF;
    let mut failures = 0u32;
    loop {
        let delay = match set_ca_bundle(&api, &name, &ca_pem).await {
            Ok(0) => {
                debug!(configuration = %name, "the caBundle is up to date");
                CA_BUNDLE_RECHECK
            }
            Ok(patched) => {
                info!(configuration = %name, webhooks = patched, "set the caBundle of the MutatingWebhookConfiguration to the proxy's CA");
                (failures, backoff) = (0, CA_BUNDLE_FIRST_BACKOFF);
                CA_BUNDLE_RECHECK
            }
            Err(err) => {
                failures += 1;
                let missing = matches!(&err, kube::Error::Api(status) if status.code == 404);
                let what = if missing { "it does not exist (yet)" } else { "the API request failed" };
                warn!(configuration = %name, attempt = failures, retry_in = ?backoff, error = %err, "cannot set the caBundle of the MutatingWebhookConfiguration: {what}; until it is set the API server cannot call the webhook and pods are admitted unpatched");
                let delay = backoff;
                backoff = (backoff * 2).min(CA_BUNDLE_MAX_BACKOFF);
                delay
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            () = stopped(&mut shutdown) => return,
        }
    }
}

/// Patches the `caBundle` of the webhooks that lack `ca_pem`; returns how many it patched.
async fn set_ca_bundle(api: &Api<MutatingWebhookConfiguration>, name: &str, ca_pem: &str) -> Result<usize, kube::Error> {
    let configuration = api.get(name).await?;
    let encoded = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    let mut operations = Vec::new();
    for (i, webhook) in configuration.webhooks.iter().flatten().enumerate() {
        if webhook.client_config.ca_bundle.as_ref().is_some_and(|bundle| bundle.0 == ca_pem.as_bytes()) {
            continue;
        }
        // The test guards against the list changing between the GET and the PATCH.
        operations.push(json!({"op": "test", "path": format!("/webhooks/{i}/name"), "value": webhook.name}));
        operations.push(json!({"op": "add", "path": format!("/webhooks/{i}/clientConfig/caBundle"), "value": encoded}));
    }
    if operations.is_empty() {
        return Ok(0);
    }
    let patched = operations.len() / 2;
    let patch = Patch::<()>::Json(serde_json::from_value(Value::Array(operations)).map_err(kube::Error::SerdeError)?);
    api.patch(name, &PatchParams::default(), &patch).await?;
    Ok(patched)
}

// === HTTPS server ===

/// The running webhook server; see the [module docs](self). Dropping it stops it too.
pub struct Webhook {
    local_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<()>,
    ca_bundle: Option<JoinHandle<()>>,
}

impl Webhook {
    /// Issues the serving certificate for [`WebhookArgs::serving_names`], binds
    /// `--webhook-listen` and serves. With `kube`, keeps the CA ConfigMaps and (with
    /// `--patch-webhook-configuration`) the `caBundle`; without it, the ConfigMaps must be
    /// provided by other means.
    pub async fn start(args: &WebhookArgs, ca: Arc<CertificateAuthority>, kube: Option<kube::Client>) -> anyhow::Result<Webhook> {
        if let (Some(name), None) = (&args.patch_webhook_configuration, &kube) {
            anyhow::bail!("--patch-webhook-configuration {name} needs access to the Kubernetes API");
        }
        if kube.is_none() {
            warn!(configmap = %args.ca_configmap_name, "no Kubernetes API access: the CA ConfigMap must be provided in each namespace by other means");
        }
        let names = args.serving_names();
        let certificate = ServingCertificate::issue(ca.clone(), names.clone()).context("issuing the webhook's serving certificate")?;
        let mut tls = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .context("setting up TLS")?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(certificate));
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];

        let listener = TcpListener::bind(args.webhook_listen).await.with_context(|| format!("binding the webhook to {}", args.webhook_listen))?;
        let local_addr = listener.local_addr().context("the webhook's local address")?;
        let configmaps = CaConfigMaps::new(kube.clone(), &args.ca_configmap_name, ca.ca_pem(), &args.system_roots);
        let app = router(Arc::new(AppState { config: MutationConfig::from(args), configmaps }));
        let (shutdown, _) = watch::channel(false);
        let server = tokio::spawn(serve(listener, TlsAcceptor::from(Arc::new(tls)), app, shutdown.subscribe()));
        let ca_bundle = match (&args.patch_webhook_configuration, kube) {
            (Some(name), Some(client)) => Some(tokio::spawn(keep_ca_bundle(Api::all(client), name.clone(), ca.ca_pem().to_owned(), shutdown.subscribe()))),
            _ => None,
        };
        info!(%local_addr, ?names, "admission webhook serving HTTPS");
        Ok(Webhook { local_addr, shutdown, server, ca_bundle })
    }

    /// The address it listens on (with the actual port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, lets open requests finish (for a few seconds at most) and stops.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        if let Err(err) = self.server.await {
            warn!(%err, "the webhook server task failed");
        }
        if let Some(task) = self.ca_bundle {
            task.abort();
        }
    }
}

struct AppState {
    config: MutationConfig,
    configmaps: CaConfigMaps,
}

fn router(state: Arc<AppState>) -> Router {
    Router::new().route(MUTATE_PATH, post(admit)).route("/healthz", get(|| async { "ok" })).layer(DefaultBodyLimit::max(MAX_REVIEW_BYTES)).with_state(state)
}

async fn admit(State(state): State<Arc<AppState>>, body: Bytes) -> Result<Json<Value>, WebhookError> {
    let review: Value = serde_json::from_slice(&body).map_err(|err| WebhookError::MalformedReview(format!("the body is not JSON: {err}")))?;
    let admission = Admission::parse(&review)?;
    let mut patch = admission.patch(&state.config);
    if let (false, Some(creation)) = (patch.is_empty(), &admission.creation) {
        let ensured = tokio::time::timeout(CONFIGMAP_TIMEOUT, state.configmaps.ensure(&creation.namespace)).await;
        let failure = match ensured {
            Ok(Ok(())) => None,
            Ok(Err(err)) => Some(err.to_string()),
            Err(_) => Some(format!("no answer from the Kubernetes API within {CONFIGMAP_TIMEOUT:?}")),
        };
        if let Some(error) = failure {
            warn!(
                uid = %admission.uid,
                configmap = %format!("{}/{}", creation.namespace, state.configmaps.name),
                %error,
                "cannot write the CA ConfigMap (RBAC needs get, create and update on configmaps); admitting {} without AWS visibility",
                admission.describe(),
            );
            patch.clear();
        }
    }
    debug!(uid = %admission.uid, operations = patch.len(), "admitted {}", admission.describe());
    Ok(Json(admission.response(&patch)))
}

async fn serve(listener: TcpListener, tls: TlsAcceptor, app: Router, shutdown: watch::Receiver<bool>) {
    let mut stop = shutdown.clone();
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => {
                    connections.spawn(serve_connection(tcp, tls.clone(), app.clone(), shutdown.clone()));
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
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!("webhook connections still open after {SHUTDOWN_GRACE:?}; closing them");
    }
    connections.shutdown().await;
}

async fn serve_connection(tcp: TcpStream, tls: TlsAcceptor, app: Router, mut shutdown: watch::Receiver<bool>) {
    let stream = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, tls.accept(tcp)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(err)) => return debug!(%err, "TLS handshake with a webhook client failed"),
        Err(_) => return debug!("TLS handshake with a webhook client timed out"),
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
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns is not `Send`; drop it here.
    drop(shutdown.wait_for(|&stop| stop).await);
}

/// The serving certificate, issued again every [`CERT_RENEWAL`] while the CA stays the same.
#[derive(Debug)]
struct ServingCertificate {
    ca: Arc<CertificateAuthority>,
    names: Vec<String>,
    current: Mutex<(Instant, Arc<CertifiedKey>)>,
}

impl ServingCertificate {
    fn issue(ca: Arc<CertificateAuthority>, names: Vec<String>) -> anyhow::Result<Self> {
        let issued = ca.issue(&names)?;
        Ok(Self { ca, names, current: Mutex::new((Instant::now(), issued.certified_key)) })
    }
}

impl ResolvesServerCert for ServingCertificate {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let mut current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.0.elapsed() >= CERT_RENEWAL {
            match self.ca.issue(&self.names) {
                Ok(issued) => *current = (Instant::now(), issued.certified_key),
                Err(err) => warn!(error = %err, "renewing the webhook's serving certificate failed; serving the current one"),
            }
        }
        Some(current.1.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_have_defaults_for_all_but_the_namespace_and_the_dns_server() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            webhook: WebhookArgs,
        }
        let cli = <Cli as clap::Parser>::try_parse_from(["aws-proxy", "--webhook-namespace", "intentmap", "--dns-server-ip", "10.96.0.53"]).unwrap();
        let args = cli.webhook;
        assert_eq!(args.webhook_listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(args.serving_names(), ["aws-proxy.intentmap.svc", "aws-proxy.intentmap.svc.cluster.local"]);
        assert_eq!(MutationConfig::from(&args), MutationConfig::new("10.96.0.53".parse().unwrap()));
        assert_eq!(args.system_roots, Path::new("/etc/ssl/certs/ca-certificates.crt"));
        assert_eq!(args.patch_webhook_configuration, None);
        assert!(<Cli as clap::Parser>::try_parse_from(["aws-proxy", "--webhook-namespace", "intentmap"]).is_err(), "the DNS server is required");
    }

    #[test]
    fn pointer_keys_are_escaped() {
        assert_eq!(escape_pointer("intentmap.dev/aws-visibility-injected"), "intentmap.dev~1aws-visibility-injected");
        assert_eq!(escape_pointer("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn dns_config_merges_with_the_pods_own() {
        let theirs = PodDNSConfig {
            nameservers: Some(vec!["1.1.1.1".into(), "10.0.0.53".into(), "8.8.8.8".into(), "9.9.9.9".into()]),
            searches: Some(vec!["corp.example".into(), "svc.cluster.local".into()]),
            options: Some(vec![
                PodDNSConfigOption { name: Some("ndots".into()), value: Some("2".into()) },
                PodDNSConfigOption { name: Some("edns0".into()), value: None },
            ]),
        };
        let merged = dns_config(Some(&theirs), "10.0.0.53", "shop", "cluster.local");
        assert_eq!(merged.nameservers.unwrap(), ["10.0.0.53", "1.1.1.1", "8.8.8.8"], "ours first, at most three");
        assert_eq!(merged.searches.unwrap(), ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]);
        let options: Vec<_> = merged.options.unwrap().into_iter().map(|o| (o.name.unwrap(), o.value)).collect();
        assert_eq!(options, [("ndots".to_owned(), Some("2".to_owned())), ("edns0".to_owned(), None)], "their ndots wins");

        let fresh = dns_config(None, "10.0.0.53", "shop", "k8s.internal");
        assert_eq!(fresh.searches.unwrap(), ["shop.svc.k8s.internal", "svc.k8s.internal", "k8s.internal"]);
        assert_eq!(fresh.options.unwrap()[0].value.as_deref(), Some("5"));
    }
}
