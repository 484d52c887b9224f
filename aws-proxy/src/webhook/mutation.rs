//! The patch itself: a pure function of the `AdmissionReview` and the [`MutationConfig`].

use std::collections::BTreeSet;
use std::net::IpAddr;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use k8s_openapi::api::core::v1::{Container, Pod, PodDNSConfig, PodDNSConfigOption};
use serde_json::{json, Value};
use tracing::debug;

use super::{
    BUNDLE_KEY, CA_KEY, CA_MOUNT_PATH, CA_VOLUME, DEFAULT_CA_CONFIGMAP, INJECTED_ANNOTATION, LABEL,
    OTTERIZE_LABEL,
};

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

/// What [`mutate`] needs to know about the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MutationConfig {
    pub dns_server_ip: IpAddr,
    /// The cluster's own DNS, listed after ours so that patched pods still resolve names while
    /// the aws-proxy DNS is down; `None` lists only ours.
    pub fallback_dns_ip: Option<IpAddr>,
    pub cluster_domain: String,
    pub ca_configmap_name: String,
    /// The namespaces whose pods may be patched. A review for a pod of any other namespace is
    /// allowed unpatched, with a warning, and makes the webhook write nothing.
    pub opted_in_namespaces: BTreeSet<String>,
}

impl MutationConfig {
    /// The defaults (`cluster.local`, [`DEFAULT_CA_CONFIGMAP`], no fallback DNS) with the DNS
    /// server's address and the opted-in namespaces.
    pub fn new(dns_server_ip: IpAddr, opted_in_namespaces: &[&str]) -> Self {
        Self {
            dns_server_ip,
            fallback_dns_ip: None,
            cluster_domain: "cluster.local".to_owned(),
            ca_configmap_name: DEFAULT_CA_CONFIGMAP.to_owned(),
            opted_in_namespaces: opted_in_namespaces.iter().map(|ns| ns.to_string()).collect(),
        }
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
/// with a `JSONPatch` for a labelled pod being created in an opted-in namespace that is not
/// patched yet, and a warning for a labelled pod in a namespace that is not opted in. Pure: the
/// CA ConfigMap is assumed to exist (see [`super::Webhook`] for what happens when it cannot be
/// made to).
pub fn mutate(review: &Value, config: &MutationConfig) -> Result<Value, WebhookError> {
    let admission = Admission::parse(review)?;
    let decision = admission.decide(config);
    Ok(admission.response(&decision))
}

/// A pod being created, from a review.
pub(super) struct PodCreation {
    pub pod: Pod,
    pub namespace: String,
}

/// What to do with a review.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Decision {
    /// Patch the pod (the CA ConfigMap must be made right in its namespace first).
    Patch(Vec<Value>),
    /// A labelled pod in a namespace that did not opt in: allowed unpatched, with a warning.
    NotOptedIn(String),
    /// Nothing to do: not a labelled pod being created, or already patched.
    Nothing,
}

/// The parts of an `AdmissionReview` the webhook uses.
pub(super) struct Admission {
    api_version: String,
    pub uid: String,
    /// A dry run (`kubectl apply --dry-run=server`): answered, but nothing is written for it.
    pub dry_run: bool,
    /// Set when the review is about a pod being created; other reviews are allowed unchanged.
    pub creation: Option<PodCreation>,
}

impl Admission {
    pub fn parse(review: &Value) -> Result<Self, WebhookError> {
        let malformed = |message: &str| WebhookError::MalformedReview(message.to_owned());
        if !review.is_object() {
            return Err(malformed("it is not a JSON object"));
        }
        let api_version = match review.get("apiVersion") {
            Some(Value::String(v))
                if matches!(v.as_str(), "admission.k8s.io/v1" | "admission.k8s.io/v1beta1") =>
            {
                v.as_str()
            }
            Some(other) => {
                return Err(WebhookError::MalformedReview(format!(
                    "apiVersion must be admission.k8s.io/v1, not {other}"
                )))
            }
            None => return Err(malformed("apiVersion is missing")),
        };
        if review.get("kind").and_then(Value::as_str) != Some("AdmissionReview") {
            return Err(malformed("kind must be AdmissionReview"));
        }
        let request = review
            .get("request")
            .filter(|r| r.is_object())
            .ok_or_else(|| malformed("it has no request"))?;
        let uid = request
            .get("uid")
            .and_then(Value::as_str)
            .filter(|uid| !uid.is_empty())
            .ok_or_else(|| malformed("request.uid is missing"))?;
        let text = |field: &str| request.get(field).and_then(Value::as_str).unwrap_or_default();
        let kind = request.get("kind").cloned().unwrap_or_default();
        let is_pod = kind.get("group").and_then(Value::as_str).unwrap_or_default().is_empty()
            && kind.get("version").and_then(Value::as_str) == Some("v1")
            && kind.get("kind").and_then(Value::as_str) == Some("Pod");
        let creation = if is_pod && text("operation") == "CREATE" && text("subResource").is_empty()
        {
            let object = request
                .get("object")
                .filter(|o| o.is_object())
                .ok_or_else(|| malformed("request.object is missing"))?;
            let pod: Pod = serde_json::from_value(object.clone()).map_err(|err| {
                WebhookError::MalformedReview(format!("request.object is not a Pod: {err}"))
            })?;
            let namespace = Some(text("namespace"))
                .filter(|ns| !ns.is_empty())
                .map(str::to_owned)
                .or_else(|| pod.metadata.namespace.clone().filter(|ns| !ns.is_empty()))
                .ok_or_else(|| malformed("request.namespace is missing"))?;
            Some(PodCreation { pod, namespace })
        } else {
            None
        };
        let dry_run = request.get("dryRun").and_then(Value::as_bool).unwrap_or(false);
        Ok(Self { api_version: api_version.to_owned(), uid: uid.to_owned(), dry_run, creation })
    }

    pub fn decide(&self, config: &MutationConfig) -> Decision {
        match &self.creation {
            Some(PodCreation { pod, namespace }) if wants_injection(pod) && !is_injected(pod) => {
                if config.opted_in_namespaces.contains(namespace) {
                    Decision::Patch(pod_patch(pod, namespace, config))
                } else {
                    Decision::NotOptedIn(namespace.clone())
                }
            }
            _ => Decision::Nothing,
        }
    }

    pub fn response(&self, decision: &Decision) -> Value {
        let mut response = json!({"uid": self.uid, "allowed": true});
        match decision {
            Decision::Patch(patch) if !patch.is_empty() => {
                let patch = serde_json::to_vec(patch).expect("JSON values serialize");
                response["patchType"] = "JSONPatch".into();
                response["patch"] = base64::engine::general_purpose::STANDARD.encode(patch).into();
            }
            Decision::NotOptedIn(namespace) => {
                response["warnings"] = json!([format!(
                    "aws-proxy: namespace {namespace} is not opted in to AWS visibility (the chart's aws.visibility.namespaces); the pod runs without it"
                )]);
            }
            _ => {}
        }
        json!({"apiVersion": self.api_version, "kind": "AdmissionReview", "response": response})
    }

    pub fn describe(&self) -> String {
        match &self.creation {
            Some(PodCreation { pod, namespace }) => {
                let name = pod
                    .metadata
                    .name
                    .clone()
                    .or_else(|| pod.metadata.generate_name.as_ref().map(|g| format!("{g}*")))
                    .unwrap_or_default();
                format!("pod {namespace}/{name}")
            }
            None => "not a pod creation".to_owned(),
        }
    }
}

/// Whether the pod carries one of the opt-in labels set to `"true"`.
pub fn wants_injection(pod: &Pod) -> bool {
    let labels = pod.metadata.labels.as_ref();
    [OTTERIZE_LABEL, LABEL]
        .iter()
        .any(|label| labels.and_then(|l| l.get(*label)).is_some_and(|v| v == "true"))
}

/// Whether the pod was already patched (by this or an earlier version of the webhook).
pub fn is_injected(pod: &Pod) -> bool {
    let annotated =
        pod.metadata.annotations.as_ref().is_some_and(|a| a.contains_key(INJECTED_ANNOTATION));
    let has_volume = pod
        .spec
        .as_ref()
        .and_then(|s| s.volumes.as_ref())
        .is_some_and(|v| v.iter().any(|v| v.name == CA_VOLUME));
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
    for (field, containers) in
        [("containers", spec.containers.as_slice()), ("initContainers", init_containers)]
    {
        for (i, container) in containers.iter().enumerate() {
            container_patch(&mut patch, &format!("/spec/{field}/{i}"), container);
        }
    }
    let nameserver = config.dns_server_ip.to_string();
    let lists_ours = spec.dns_policy.as_deref() == Some("None")
        && spec
            .dns_config
            .as_ref()
            .and_then(|c| c.nameservers.as_ref())
            .is_some_and(|servers| servers.contains(&nameserver));
    if spec.host_network != Some(true) && !lists_ours {
        let fallback = config.fallback_dns_ip.map(|ip| ip.to_string());
        let dns_config = dns_config(
            spec.dns_config.as_ref(),
            &nameserver,
            fallback.as_deref(),
            namespace,
            &config.cluster_domain,
        );
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
        add_items(
            patch,
            &format!("{path}/volumeMounts"),
            container.volume_mounts.is_some(),
            vec![mount],
        );
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
        patch.extend(
            items
                .into_iter()
                .map(|item| json!({"op": "add", "path": format!("{path}/-"), "value": item})),
        );
    } else {
        patch.push(json!({"op": "add", "path": path, "value": items}));
    }
}

/// Escapes a key for a JSON pointer (RFC 6901): `~` → `~0`, `/` → `~1`.
fn escape_pointer(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The pod's DNS configuration with our nameserver first, the cluster's DNS second (the
/// fallback, when given), the cluster's search path (as `ClusterFirst` would give) and
/// `ndots:5`, keeping what the pod set itself: its nameservers after ours (up to the limit of
/// three), its searches after ours, its options (an `ndots` of its own wins).
fn dns_config(
    existing: Option<&PodDNSConfig>,
    nameserver: &str,
    fallback: Option<&str>,
    namespace: &str,
    cluster_domain: &str,
) -> PodDNSConfig {
    let existing = existing.cloned().unwrap_or_default();
    let mut nameservers = vec![nameserver.to_owned()];
    for server in
        fallback.map(str::to_owned).into_iter().chain(existing.nameservers.unwrap_or_default())
    {
        if !nameservers.contains(&server) && nameservers.len() < MAX_NAMESERVERS {
            nameservers.push(server);
        }
    }
    let mut searches = vec![
        format!("{namespace}.svc.{cluster_domain}"),
        format!("svc.{cluster_domain}"),
        cluster_domain.to_owned(),
    ];
    for search in existing.searches.unwrap_or_default() {
        if !searches.contains(&search) {
            searches.push(search);
        }
    }
    let mut options =
        vec![PodDNSConfigOption { name: Some("ndots".to_owned()), value: Some("5".to_owned()) }];
    for option in existing.options.unwrap_or_default() {
        match options.iter_mut().find(|o| o.name == option.name) {
            Some(ours) => *ours = option,
            None => options.push(option),
        }
    }
    PodDNSConfig {
        nameservers: Some(nameservers),
        searches: Some(searches),
        options: Some(options),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_keys_are_escaped() {
        assert_eq!(
            escape_pointer("intentmap.dev/aws-visibility-injected"),
            "intentmap.dev~1aws-visibility-injected"
        );
        assert_eq!(escape_pointer("a~b/c"), "a~0b~1c");
    }

    #[test]
    fn dns_config_merges_with_the_pods_own() {
        let theirs = PodDNSConfig {
            nameservers: Some(vec![
                "1.1.1.1".into(),
                "10.0.0.53".into(),
                "8.8.8.8".into(),
                "9.9.9.9".into(),
            ]),
            searches: Some(vec!["corp.example".into(), "svc.cluster.local".into()]),
            options: Some(vec![
                PodDNSConfigOption { name: Some("ndots".into()), value: Some("2".into()) },
                PodDNSConfigOption { name: Some("edns0".into()), value: None },
            ]),
        };
        let merged = dns_config(Some(&theirs), "10.0.0.53", None, "shop", "cluster.local");
        assert_eq!(
            merged.nameservers.unwrap(),
            ["10.0.0.53", "1.1.1.1", "8.8.8.8"],
            "ours first, at most three"
        );
        assert_eq!(
            merged.searches.unwrap(),
            ["shop.svc.cluster.local", "svc.cluster.local", "cluster.local", "corp.example"]
        );
        let options: Vec<_> =
            merged.options.unwrap().into_iter().map(|o| (o.name.unwrap(), o.value)).collect();
        assert_eq!(
            options,
            [("ndots".to_owned(), Some("2".to_owned())), ("edns0".to_owned(), None)],
            "their ndots wins"
        );

        let with_fallback =
            dns_config(Some(&theirs), "10.0.0.53", Some("10.96.0.10"), "shop", "cluster.local");
        assert_eq!(
            with_fallback.nameservers.unwrap(),
            ["10.0.0.53", "10.96.0.10", "1.1.1.1"],
            "the cluster DNS second"
        );

        let fresh = dns_config(None, "10.0.0.53", None, "shop", "k8s.internal");
        assert_eq!(
            fresh.searches.unwrap(),
            ["shop.svc.k8s.internal", "svc.k8s.internal", "k8s.internal"]
        );
        assert_eq!(fresh.options.unwrap()[0].value.as_deref(), Some("5"));
    }
}
