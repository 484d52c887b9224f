//! HTTP calls from Istio sidecar metrics: what `istio_requests_total` grew by between two
//! scrapes of a sidecar's `/stats/prometheus`.
//!
//! A sidecar's metrics are the pod's own word, and a pod can serve anything on port 15090. So:
//!
//! - Only pods Istio's injector injected are scraped ([`is_injected`]: the `istio-proxy`
//!   container, the injector's `sidecar.istio.io/status` annotation and the
//!   `security.istio.io/tlsMode` label), and only while istiod runs in its namespace
//!   ([`crate::Index::istio_control_plane`]). Both can be forged by whoever creates pods; they
//!   keep honest clusters from being scraped by mistake, not attackers out.
//! - What a sidecar says is bounded ([`metrics`]: lines, series per pod, series in all) and
//!   costs memory only for the series it is allowed.
//! - A series is believed only when the other side vouches for it ([`corroboration`]): a
//!   server's count of calls from a client, when the client's own sidecar also counts calls to
//!   that server (to that path), or a node agent saw the client connect to the server; a
//!   client's count of calls to a server without a sidecar, when a node agent saw the client
//!   connect to it. Others are counted (`istio_uncorroborated_total`) and dropped.
//!
//! Counters are totals since the sidecar started, so only their increases are calls seen now
//! ([`windows`]): the first scrape of a pod is a baseline, a counter that went down is a reset.
//!
//! Ambient mode (no sidecars; ztunnel per node and waypoint proxies) is read by the same rules
//! ([`ambient`]).

pub mod ambient;
pub mod corroboration;
pub mod metrics;
pub mod windows;

use k8s_openapi::api::core::v1::Pod;

pub use ambient::{read_ambient_metrics, AmbientProxy, AmbientScrape, ProxyRole};
pub use corroboration::Claims;
pub use metrics::{
    read_metrics, RequestSample, RequestSeries, SeriesKind, SidecarMetrics, MAX_LINE_BYTES,
    MAX_SERIES_PER_POD,
};
pub use windows::{IstioWindows, RequestIncrease, ScrapeCounts, MAX_TRACKED_SERIES};

use crate::index::LabelledPod;

/// The label Istio's sidecar injector puts on pods that have a sidecar.
pub const ISTIO_SIDECAR_LABEL: &str = "security.istio.io/tlsMode";
/// The annotation the injector writes on every pod it injects (what it added, as JSON).
pub const ISTIO_STATUS_ANNOTATION: &str = "sidecar.istio.io/status";
/// The injected proxy's container (an init container with `restartPolicy: Always` when Istio
/// runs it as a native sidecar).
pub const ISTIO_PROXY_CONTAINER: &str = "istio-proxy";
/// The metric read.
pub const REQUESTS_METRIC: &str = "istio_requests_total";
/// HTTP methods the ClientIntents CRD names (the model's list, which reports are checked against).
pub use model::edge::HTTP_METHODS;
/// Longer paths are not recorded (the call still is).
pub const MAX_PATH_LEN: usize = 1024;

/// One sidecar's metrics from one round of scrapes.
#[derive(Debug, Clone)]
pub struct SidecarScrape {
    pub pod: LabelledPod,
    /// What its `/stats/prometheus` said ([`read_metrics`]), or why it could not be had.
    pub metrics: Result<SidecarMetrics, String>,
}

/// Whether Istio's injector injected this pod: an `istio-proxy` container (or native-sidecar
/// init container), the `sidecar.istio.io/status` annotation and the `tlsMode` label.
pub fn is_injected(pod: &Pod) -> bool {
    let meta = &pod.metadata;
    let annotated =
        meta.annotations.as_ref().is_some_and(|a| a.contains_key(ISTIO_STATUS_ANNOTATION));
    let labelled = meta.labels.as_ref().is_some_and(|l| l.contains_key(ISTIO_SIDECAR_LABEL));
    let proxy = pod.spec.as_ref().is_some_and(|spec| {
        spec.containers.iter().any(|c| c.name == ISTIO_PROXY_CONTAINER)
            || spec.init_containers.iter().flatten().any(|c| {
                c.name == ISTIO_PROXY_CONTAINER && c.restart_policy.as_deref() == Some("Always")
            })
    });
    annotated && labelled && proxy
}

/// The path as recorded: without query or fragment, starting with `/`, at most [`MAX_PATH_LEN`]
/// long; `None` when there is no usable path (absent, `unknown`, not a path).
pub fn request_path(raw: Option<&str>) -> Result<Option<&str>, PathRefused> {
    let Some(raw) = raw.map(str::trim).filter(|p| !p.is_empty() && *p != "unknown") else {
        return Ok(None);
    };
    let path = raw.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with('/') || path.chars().any(char::is_control) {
        return Err(PathRefused::NotAPath);
    }
    if path.len() > MAX_PATH_LEN {
        return Err(PathRefused::TooLong);
    }
    Ok(Some(path))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathRefused {
    NotAPath,
    TooLong,
}

/// A method the ClientIntents CRD has no name for (`HEAD`, WebDAV's...).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownMethod;

/// The method in the CRD's spelling.
pub fn request_method(raw: Option<&str>) -> Result<Option<&'static str>, UnknownMethod> {
    let Some(raw) = raw.map(str::trim).filter(|m| !m.is_empty() && *m != "unknown") else {
        return Ok(None);
    };
    HTTP_METHODS
        .iter()
        .find(|m| m.eq_ignore_ascii_case(raw))
        .copied()
        .map(Some)
        .ok_or(UnknownMethod)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::*;

    #[test]
    fn paths_and_methods_are_cleaned_or_refused() {
        assert_eq!(request_path(Some("/api/items?id=4#top")), Ok(Some("/api/items")));
        assert_eq!(request_path(None), Ok(None));
        assert_eq!(request_path(Some("unknown")), Ok(None));
        assert_eq!(request_path(Some("example.com:443")), Err(PathRefused::NotAPath));
        assert_eq!(
            request_path(Some(&format!("/{}", "a".repeat(MAX_PATH_LEN)))),
            Err(PathRefused::TooLong)
        );
        assert_eq!(request_method(Some("get")), Ok(Some("GET")));
        assert_eq!(request_method(Some("PATCH")), Ok(Some("PATCH")));
        assert_eq!(request_method(None), Ok(None));
        assert_eq!(request_method(Some("HEAD")), Err(UnknownMethod));
    }

    #[test]
    fn injected_means_container_annotation_and_label() {
        let pod = || mk_pod("shop", "cart-1", &["10.244.0.5"]);
        assert!(is_injected(&pod().with_istio_sidecar()));
        assert!(!is_injected(&pod().labelled(ISTIO_SIDECAR_LABEL, "istio")), "the label alone");
        assert!(
            !is_injected(
                &pod()
                    .labelled(ISTIO_SIDECAR_LABEL, "istio")
                    .annotated(ISTIO_STATUS_ANNOTATION, "{}")
            ),
            "no proxy container"
        );

        // Istio's native sidecar: an init container that keeps running.
        let mut native =
            pod().labelled(ISTIO_SIDECAR_LABEL, "istio").annotated(ISTIO_STATUS_ANNOTATION, "{}");
        let spec = native.spec.get_or_insert_with(Default::default);
        let mut init = k8s_openapi::api::core::v1::Container {
            name: ISTIO_PROXY_CONTAINER.to_owned(),
            ..Default::default()
        };
        spec.init_containers = Some(vec![init.clone()]);
        assert!(!is_injected(&native), "an init container that exits is no sidecar");
        init.restart_policy = Some("Always".to_owned());
        native.spec.get_or_insert_with(Default::default).init_containers = Some(vec![init]);
        assert!(is_injected(&native));
    }
}
