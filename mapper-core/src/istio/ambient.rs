//! Istio's ambient mode: no sidecars. ztunnel (a DaemonSet in Istio's namespace, one pod per
//! node) carries every enrolled pod's TCP through mTLS tunnels and counts the connections it
//! opened (`istio_tcp_connections_opened_total`) from both ends: `reporter="source"` on the
//! client's node, `reporter="destination"` on the server's. Waypoint proxies (Envoy, per
//! namespace or service) see the HTTP and count `istio_requests_total` with
//! `reporter="waypoint"`, method and path like sidecars. Both name the two ends by labels
//! (`source_workload`, `destination_workload`, their namespaces and SPIFFE principals); the
//! mapper scrapes no application pod.
//!
//! Labels are the proxy's word, so what they name is checked and then corroborated by the
//! sidecars' rules (see [`super`]):
//!
//! - Both ends must be workloads the index knows in the namespace named, and a SPIFFE
//!   principal, when given, must be of that namespace; else the series is counted
//!   (`istio_unknown_clients`, `istio_unknown_targets`, `istio_foreign_series`) and dropped.
//! - A ztunnel speaks only for the pods on its own node: a `source` series only when the
//!   client has a pod enrolled in ambient mode ([`in_ambient_mesh`]) on that node, a
//!   `destination` series only when the server has. This is what the mapper knows about a
//!   sidecar for free: which pod's word it is.
//! - A server-side count (ztunnel's `destination`, a waypoint's) is believed when the client's
//!   side vouches for it: its node's ztunnel (or its own sidecar) counts calls to the server (or
//!   to the waypoint that reported the call), or a node agent saw the client connect to the
//!   server. A client-side count (ztunnel's `source`) only when the server's side is not
//!   followed (no enrolled pod on a scraped ztunnel's node) and a node agent saw the connection.
//! - Hops through a waypoint (a ztunnel's series from or to the waypoint's own workload) are
//!   left to the waypoint's count, which names the real client and server
//!   (`istio_waypoint_hops`).
//!
//! Counters are windowed as sidecars' are ([`super::windows`]): the first scrape of a proxy is a
//! baseline, unchanged is nothing, a drop is a restart.

use std::sync::Arc;

use super::metrics::{read_counters, SeriesKind, SidecarMetrics};
use super::REQUESTS_METRIC;
use crate::identity::Workload;
use crate::index::{Index, LabelledPod, Name};
use crate::names::is_kubernetes_name;

/// ztunnel's pods carry `app=ztunnel` (in Istio's namespace).
pub const ZTUNNEL_APP_LABEL: (&str, &str) = ("app", "ztunnel");
/// Istio's gateway controller labels the waypoint pods it deploys so.
pub const WAYPOINT_MANAGED_LABEL: (&str, &str) =
    ("gateway.istio.io/managed", "istio.io-mesh-controller");
/// A waypoint pod's Gateway (any value).
pub const WAYPOINT_NAME_LABEL: &str = "istio.io/gateway-name";
/// A pod's or namespace's enrolment: `ambient` (a pod's `none` opts it out).
pub const DATAPLANE_MODE_LABEL: &str = "istio.io/dataplane-mode";
/// ztunnel's count of TCP connections.
pub const TCP_CONNECTIONS_METRIC: &str = "istio_tcp_connections_opened_total";

/// What an ambient proxy is, for whom it may speak.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyRole {
    /// The ztunnel of this node.
    Ztunnel {
        node: Name,
    },
    Waypoint,
}

/// A ztunnel or waypoint pod to scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AmbientProxy {
    pub pod: LabelledPod,
    pub role: ProxyRole,
}

/// One ambient proxy's metrics from one round of scrapes.
#[derive(Debug, Clone)]
pub struct AmbientScrape {
    pub proxy: AmbientProxy,
    /// What its `/stats/prometheus` said ([`read_ambient_metrics`]), or why it could not be had.
    pub metrics: Result<SidecarMetrics, String>,
}

/// Reads `istio_requests_total` and `istio_tcp_connections_opened_total` (and Envoy's uptime,
/// which waypoints have) within the sidecars' limits; other metrics are skipped unparsed.
pub fn read_ambient_metrics(text: &str) -> SidecarMetrics {
    read_counters(
        text,
        &[
            (REQUESTS_METRIC, SeriesKind::Requests),
            (TCP_CONNECTIONS_METRIC, SeriesKind::TcpConnections),
        ],
    )
}

/// The namespace a SPIFFE identity `spiffe://<trust domain>/ns/<ns>/sa/<sa>` names; `None` for
/// anything else (`unknown`, absent).
pub fn spiffe_namespace(principal: &str) -> Option<&str> {
    let path = principal.strip_prefix("spiffe://")?.split_once('/')?.1;
    let mut parts = path.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("ns"), Some(ns), Some("sa"), Some(sa), None)
            if is_kubernetes_name(ns) && !sa.is_empty() =>
        {
            Some(ns)
        }
        _ => None,
    }
}

/// Whether a principal label agrees with the namespace a series names: absent, `unknown` or
/// not SPIFFE say nothing; a SPIFFE identity must be of that namespace.
pub fn principal_agrees(principal: Option<&str>, namespace: &str) -> bool {
    match principal.map(str::trim) {
        Some(p) if p.starts_with("spiffe://") => spiffe_namespace(p) == Some(namespace),
        _ => true,
    }
}

/// A workload a proxy names by label, only if the index knows it in that namespace.
pub fn indexed_workload(index: &Index, namespace: &str, name: &str) -> Option<Arc<Workload>> {
    if name == "unknown" || !is_kubernetes_name(namespace) || !is_kubernetes_name(name) {
        return None;
    }
    index.workload_named(namespace, name)
}

impl Index {
    /// The ambient proxies to scrape, sorted: the ztunnel pods (`app=ztunnel`, in
    /// `istio_namespace`, placed on a node) and the waypoint pods (labelled by Istio's gateway
    /// controller, or with `istio.io/gateway-name`), running with an address of their own.
    pub fn istio_ambient_proxies(&self, istio_namespace: &str) -> Vec<AmbientProxy> {
        let (app, ztunnel) = ZTUNNEL_APP_LABEL;
        let (managed, mesh_controller) = WAYPOINT_MANAGED_LABEL;
        self.running_pods_where(|pod| {
            !pod.istio_sidecar
                && (pod.labels.get(app) == Some(ztunnel)
                    || pod.labels.get(managed) == Some(mesh_controller)
                    || pod.labels.get(WAYPOINT_NAME_LABEL).is_some())
        })
        .into_iter()
        .filter_map(|pod| {
            let record = self.pods.get(&pod.pod.namespace, &pod.pod.name)?;
            let role = if record.labels.get(app) == Some(ztunnel) {
                if *pod.pod.namespace != *istio_namespace {
                    return None;
                }
                ProxyRole::Ztunnel { node: record.node.clone()? }
            } else {
                ProxyRole::Waypoint
            };
            Some(AmbientProxy { pod, role })
        })
        .collect()
    }

    /// Whether `workload` has a live pod enrolled in ambient mode ([`in_ambient_mesh`]) on a
    /// node `on_node` accepts.
    pub fn ambient_pod_on(&self, workload: &Workload, on_node: impl Fn(&str) -> bool) -> bool {
        let namespace_mode =
            self.namespaces.get(&workload.namespace).and_then(|l| l.get(DATAPLANE_MODE_LABEL));
        self.pods.in_namespace(&workload.namespace).any(|(_, pod)| {
            pod.workload.name == workload.name
                && pod.end == crate::index::LeaseEnd::Open
                && !pod.host_network
                && !pod.istio_sidecar
                && in_ambient_mesh(pod.labels.get(DATAPLANE_MODE_LABEL), namespace_mode)
                && pod.node.as_deref().is_some_and(&on_node)
        })
    }

    /// Whether `workload` is a waypoint's (has a waypoint pod).
    pub fn is_waypoint_workload(&self, workload: &Workload) -> bool {
        let (managed, mesh_controller) = WAYPOINT_MANAGED_LABEL;
        self.pods.in_namespace(&workload.namespace).any(|(_, pod)| {
            pod.workload.name == workload.name
                && (pod.labels.get(managed) == Some(mesh_controller)
                    || pod.labels.get(WAYPOINT_NAME_LABEL).is_some())
        })
    }
}

/// Whether a pod is in the ambient mesh, from its own and its namespace's
/// `istio.io/dataplane-mode` label: its own wins (`none` opts out), else its namespace's.
pub fn in_ambient_mesh(pod_mode: Option<&str>, namespace_mode: Option<&str>) -> bool {
    match pod_mode {
        Some(mode) => mode == "ambient",
        None => namespace_mode == Some("ambient"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn spiffe_identities_name_their_namespace() {
        assert_eq!(
            spiffe_namespace("spiffe://cluster.local/ns/ns-5/sa/tier-1-app-a"),
            Some("ns-5")
        );
        assert_eq!(spiffe_namespace("spiffe://td/ns/shop/sa/web/extra"), None);
        assert_eq!(spiffe_namespace("spiffe://td/ns/Shop/sa/web"), None);
        assert_eq!(spiffe_namespace("unknown"), None);
        assert!(principal_agrees(Some("unknown"), "shop"));
        assert!(principal_agrees(None, "shop"));
        assert!(principal_agrees(Some("spiffe://cluster.local/ns/shop/sa/web"), "shop"));
        assert!(!principal_agrees(Some("spiffe://cluster.local/ns/bank/sa/web"), "shop"));
        assert!(!principal_agrees(Some("spiffe://cluster.local/garbage"), "shop"));
    }

    #[test]
    fn enrolment_by_pod_label_then_namespace_label() {
        assert!(in_ambient_mesh(None, Some("ambient")));
        assert!(in_ambient_mesh(Some("ambient"), None));
        assert!(!in_ambient_mesh(Some("none"), Some("ambient")), "a pod may opt out");
        assert!(!in_ambient_mesh(None, None));
    }

    #[test]
    fn ztunnels_only_in_istios_namespace_and_waypoints_anywhere() {
        let mut index = Index::default();
        index.apply(
            &mk_pod("istio-system", "ztunnel-a", &["10.244.1.2"])
                .labelled("app", "ztunnel")
                .on_node("node-a"),
        );
        index.apply(
            &mk_pod("shop", "ztunnel-fake", &["10.244.1.3"])
                .labelled("app", "ztunnel")
                .on_node("node-a"),
        );
        index.apply(
            &mk_pod("shop", "waypoint-7d9f-x", &["10.244.1.4"])
                .labelled("gateway.istio.io/managed", "istio.io-mesh-controller")
                .labelled("istio.io/gateway-name", "waypoint"),
        );
        index.apply(&mk_pod("shop", "web-1", &["10.244.1.5"]).labelled("app", "web"));
        let proxies = index.istio_ambient_proxies("istio-system");
        let found: Vec<(&str, &ProxyRole)> =
            proxies.iter().map(|p| (&*p.pod.pod.name, &p.role)).collect();
        assert_eq!(
            found,
            vec![
                ("ztunnel-a", &ProxyRole::Ztunnel { node: "node-a".into() }),
                ("waypoint-7d9f-x", &ProxyRole::Waypoint)
            ]
        );
    }

    #[test]
    fn ambient_answers_are_bounded_as_sidecars_are() {
        use crate::istio::{MAX_LINE_BYTES, MAX_SERIES_PER_POD};
        let mut text: String = (0..MAX_SERIES_PER_POD + 9)
            .map(|i| {
                format!("istio_tcp_connections_opened_total{{reporter=\"source\",source_workload=\"w{i}\"}} 1\n")
            })
            .collect();
        text.push_str(&format!(
            "istio_requests_total{{reporter=\"waypoint\",source_workload=\"{}\"}} 1\n",
            "x".repeat(MAX_LINE_BYTES)
        ));
        text.push_str("istio_tcp_connections_opened_total{reporter=\"source\"} -4\n");
        text.push_str("istio_tcp_connections_opened_total{reporter=\"source\"} NaN\n");
        let metrics = read_ambient_metrics(&text);
        assert_eq!(metrics.requests.len(), MAX_SERIES_PER_POD);
        assert_eq!(metrics.untracked_series, 9);
        assert_eq!(metrics.malformed_lines, 3, "the overlong line, a negative count, NaN");

        // A label too long for a Kubernetes name names no workload.
        let index = Index::default();
        assert!(indexed_workload(&index, "shop", &"a".repeat(300)).is_none());
        assert!(indexed_workload(&index, "shop", "unknown").is_none());
    }

    #[test]
    fn ambient_metrics_read_tcp_connections_and_requests() {
        let text = "# TYPE istio_tcp_connections_opened counter\n\
            istio_tcp_connections_opened_total{reporter=\"source\",source_workload=\"web\",source_principal=\"spiffe://cluster.local/ns/shop/sa/web\"} 12\n\
            istio_tcp_connections_closed_total{reporter=\"source\"} 11\n\
            istio_tcp_sent_bytes_total{reporter=\"source\"} 4096\n\
            istio_requests_total{reporter=\"waypoint\",request_method=\"GET\",request_path=\"/cart\"} 3\n\
            istio_tcp_connections_opened_total{reporter=\"source\" 2\n";
        let metrics = read_ambient_metrics(text);
        assert_eq!(metrics.requests.len(), 2);
        assert_eq!(metrics.requests[0].series.kind, SeriesKind::TcpConnections);
        assert_eq!(
            metrics.requests[0].series.source_principal.as_deref(),
            Some("spiffe://cluster.local/ns/shop/sa/web")
        );
        assert_eq!(metrics.requests[0].value, 12.0);
        assert_eq!(metrics.requests[1].series.kind, SeriesKind::Requests);
        assert_eq!(metrics.malformed_lines, 1);
        assert_eq!(
            crate::istio::read_metrics(text).requests.len(),
            1,
            "sidecars are read for requests only, as before"
        );
    }
}
