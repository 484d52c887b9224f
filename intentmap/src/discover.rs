//! Finding the mapper with nothing but a kubeconfig, as Otterize's CLI does: the `cluster-agent`
//! chart's mapper Service by its labels (in any namespace, or one), then a Ready pod behind it
//! and the pod's port the Service sends to. [`crate::forward`] then port-forwards to that pod
//! through the API server.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{Pod, Service, ServicePort};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};

/// The labels the `cluster-agent` chart puts on the mapper's Service (`_helpers.tpl`:
/// `intentmap.labels` with component `mapper`), whatever the release is called.
pub const MAPPER_SERVICE_SELECTOR: &str =
    "app.kubernetes.io/part-of=intentmap,app.kubernetes.io/component=mapper";

/// What to run when the chart is missing.
pub const INSTALL_HINT: &str = "Is the cluster-agent chart installed? helm install intentmap ./charts/cluster-agent --namespace intentmap --create-namespace (or pass --mapper-url / INTENTMAP_MAPPER_URL)";

/// At most this many mapper Services or pods are looked at (a label selector keeps it small
/// anyway; this bounds what a strange cluster can make the CLI hold).
const MAX_LISTED: u32 = 500;

/// The mapper pod to talk to and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapperPod {
    pub namespace: String,
    /// The Service it was found behind.
    pub service: String,
    pub pod: String,
    /// The pod's port the Service's `http` port sends to.
    pub port: u16,
}

impl fmt::Display for MapperPod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pod {}/{} port {} (Service {}, port-forwarded through the API server)",
            self.namespace, self.pod, self.port, self.service
        )
    }
}

/// Why no mapper pod was found; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error("{0:?} is not a namespace name (lower-case letters, digits and '-', at most 63): pass --mapper-namespace NAMESPACE, e.g. --mapper-namespace intentmap")]
    BadNamespace(String),
    #[error("no mapper Service (labels {MAPPER_SERVICE_SELECTOR}) {where_}.\n{INSTALL_HINT}")]
    NoService { where_: String },
    #[error("{count} mapper Services {where_}: {names}.\nPick one with --mapper-namespace NAMESPACE (or --mapper-url).")]
    SeveralServices { count: usize, where_: String, names: String },
    #[error("the mapper Service {namespace}/{service} {why}.\nReinstall or upgrade the cluster-agent chart, or pass --mapper-url.")]
    BadService { namespace: String, service: String, why: String },
    #[error("the mapper Service {namespace}/{service} has no Ready pod ({seen}).\nIs the cluster-agent chart installed and its mapper running? kubectl -n {namespace} get pods -l app.kubernetes.io/component=mapper; kubectl -n {namespace} describe pods -l app.kubernetes.io/component=mapper")]
    NotReady { namespace: String, service: String, seen: String },
    #[error("{what}: {source}\n{hint}")]
    Api {
        what: String,
        hint: &'static str,
        #[source]
        source: kube::Error,
    },
}

fn api_error(what: String, source: kube::Error) -> DiscoveryError {
    let hint = match &source {
        kube::Error::Api(status) if status.code == 403 => "Your kubeconfig's user may not do this: ask for `list` on services and pods and `create` on pods/portforward in the mapper's namespace, pass --mapper-namespace NAMESPACE to look in one namespace only, or pass --mapper-url.",
        kube::Error::Api(status) if status.code == 401 => "The API server did not accept your kubeconfig's credentials: log in again (kubectl get pods should work), or pass --mapper-url.",
        _ => "Is the cluster reachable with your kubeconfig (kubectl get pods)? Or pass --mapper-url.",
    };
    DiscoveryError::Api { what, hint, source }
}

/// Finds the mapper's Service (in `namespace`, else in any namespace) and a Ready pod behind it.
pub async fn find_mapper(
    client: &kube::Client,
    namespace: Option<&str>,
) -> Result<MapperPod, DiscoveryError> {
    if let Some(ns) = namespace {
        let valid = !ns.is_empty()
            && ns.len() <= 63
            && ns.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !ns.starts_with('-')
            && !ns.ends_with('-');
        if !valid {
            return Err(DiscoveryError::BadNamespace(ns.to_owned()));
        }
    }
    let where_ = match namespace {
        Some(ns) => format!("in namespace {ns}"),
        None => "in any namespace".to_owned(),
    };
    let services: Api<Service> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let params = ListParams::default().labels(MAPPER_SERVICE_SELECTOR).limit(MAX_LISTED);
    let listed = services
        .list(&params)
        .await
        .map_err(|e| api_error(format!("listing the mapper Services {where_}"), e))?;
    let mut found: Vec<Service> = listed.items;
    found.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    let service = match found.len() {
        0 => return Err(DiscoveryError::NoService { where_ }),
        1 => found.remove(0),
        count => {
            let names = found
                .iter()
                .map(|s| {
                    format!(
                        "{}/{}",
                        s.metadata.namespace.as_deref().unwrap_or("?"),
                        s.metadata.name.as_deref().unwrap_or("?")
                    )
                })
                .collect::<Vec<_>>()
                .join(", ");
            return Err(DiscoveryError::SeveralServices { count, where_, names });
        }
    };
    let ns = service.metadata.namespace.clone().unwrap_or_else(|| "default".to_owned());
    let name = service.metadata.name.clone().unwrap_or_default();
    let bad = |why: &str| DiscoveryError::BadService {
        namespace: ns.clone(),
        service: name.clone(),
        why: why.to_owned(),
    };
    let spec = service.spec.as_ref().ok_or_else(|| bad("has no spec"))?;
    let selector = spec
        .selector
        .as_ref()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("selects no pods (no spec.selector)"))?;
    let port =
        http_port(spec.ports.as_deref().unwrap_or_default()).ok_or_else(|| bad("has no port"))?;

    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let params = ListParams::default().labels(&selector_string(selector)).limit(MAX_LISTED);
    let listed = pods
        .list(&params)
        .await
        .map_err(|e| api_error(format!("listing the pods behind the Service {ns}/{name}"), e))?;
    let mut candidates = listed.items;
    candidates.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    let seen = if candidates.is_empty() {
        "no pod matches its selector".to_owned()
    } else {
        candidates.iter().map(describe_pod).collect::<Vec<_>>().join(", ")
    };
    for pod in candidates.iter().filter(|p| is_ready(p)) {
        if let Some(container_port) = pod_port(pod, port) {
            return Ok(MapperPod {
                namespace: ns,
                service: name,
                pod: pod.metadata.name.clone().unwrap_or_default(),
                port: container_port,
            });
        }
    }
    Err(DiscoveryError::NotReady { namespace: ns, service: name, seen })
}

/// The Service's port named `http` (the chart's), else its first.
fn http_port(ports: &[ServicePort]) -> Option<&ServicePort> {
    ports.iter().find(|p| p.name.as_deref() == Some("http")).or_else(|| ports.first())
}

/// `k1=v1,k2=v2` in key order.
fn selector_string(selector: &BTreeMap<String, String>) -> String {
    selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Running, not being deleted, and its `Ready` condition true.
pub fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    pod.metadata.deletion_timestamp.is_none()
        && status.phase.as_deref() == Some("Running")
        && status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True")
}

fn describe_pod(pod: &Pod) -> String {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("Unknown");
    if pod.metadata.deletion_timestamp.is_some() {
        format!("{name}: terminating")
    } else if is_ready(pod) {
        format!("{name}: ready, but has no port the Service sends to")
    } else {
        format!("{name}: {phase}, not ready")
    }
}

/// The pod's port that `port` (a Service port) sends to: its `targetPort` as a number, or the
/// container port of that name; the Service port itself when it has no `targetPort`.
fn pod_port(pod: &Pod, port: &ServicePort) -> Option<u16> {
    let number = |n: i32| u16::try_from(n).ok().filter(|n| *n != 0);
    match &port.target_port {
        None => number(port.port),
        Some(IntOrString::Int(n)) => number(*n),
        Some(IntOrString::String(wanted)) => match wanted.parse::<i32>() {
            Ok(n) => number(n),
            Err(_) => pod
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| p.name.as_deref() == Some(wanted.as_str()))
                .and_then(|p| number(p.container_port)),
        },
    }
}
