//! HTTP calls from Istio sidecar metrics: what `istio_requests_total` grew by between two
//! scrapes of a sidecar's `/stats/prometheus`.
//!
//! Counters are totals since the sidecar started, so only their increases are calls seen now:
//!
//! - The first scrape of a pod is a baseline and reports nothing: a path called once yesterday
//!   must not appear as called now. A pod that started after the first round is the exception:
//!   everything it counted happened since then.
//! - A series absent from the previous scrape counts in full (Envoy creates it on its first
//!   request, or recreated it after evicting it).
//! - A value lower than before is a counter reset (the sidecar restarted): the new value is the
//!   increase. So is every value when `envoy_server_uptime` went down.
//! - A pod no longer scraped is forgotten; one whose scrape failed keeps its last values, so the
//!   next successful scrape reports what happened in between.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};

use crate::index::{LabelledPod, Name};
use crate::prometheus::{self, Sample};

/// The label Istio's sidecar injector puts on pods that have a sidecar.
pub const ISTIO_SIDECAR_LABEL: &str = "security.istio.io/tlsMode";
/// The metric read.
pub const REQUESTS_METRIC: &str = "istio_requests_total";
const UPTIME_METRIC: &str = "envoy_server_uptime";
/// HTTP methods the ClientIntents CRD names (the model's list, which reports are checked against).
pub use model::edge::HTTP_METHODS;
/// Longer paths are not recorded (the call still is).
pub const MAX_PATH_LEN: usize = 1024;
/// Series kept per sidecar; more are not followed (and counted).
pub const MAX_SERIES_PER_POD: usize = 20_000;

/// One sidecar's metrics from one round of scrapes.
#[derive(Debug, Clone)]
pub struct SidecarScrape {
    pub pod: LabelledPod,
    /// What its `/stats/prometheus` said ([`read_metrics`]), or why it could not be had.
    pub metrics: Result<SidecarMetrics, String>,
}

/// What the windowing needs from a sidecar's metrics text; read by the watcher, so that the
/// mapper's lock is held only to compare values.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SidecarMetrics {
    pub requests: Vec<RequestSample>,
    /// `envoy_server_uptime`, when the sidecar exposes it.
    pub uptime: Option<f64>,
    pub malformed_lines: u64,
    /// Series past [`MAX_SERIES_PER_POD`], left out.
    pub untracked_series: u64,
}

/// One `istio_requests_total` series and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestSample {
    /// Its identity: every label (see [`Sample::series_key`]).
    pub key: String,
    pub series: RequestSeries,
    pub value: f64,
}

/// Reads `istio_requests_total` and `envoy_server_uptime` out of a sidecar's metrics; other
/// metrics are skipped without being parsed, broken lines of these two are counted.
pub fn read_metrics(text: &str) -> SidecarMetrics {
    let mut metrics = SidecarMetrics::default();
    for line in text.lines().map(str::trim_start) {
        if !(line.starts_with(REQUESTS_METRIC) || line.starts_with(UPTIME_METRIC)) {
            continue;
        }
        match prometheus::parse_line(line) {
            Ok(Some(sample)) if sample.name == REQUESTS_METRIC => {
                if !sample.value.is_finite() || sample.value < 0.0 {
                    metrics.malformed_lines += 1;
                } else if metrics.requests.len() >= MAX_SERIES_PER_POD {
                    metrics.untracked_series += 1;
                } else {
                    metrics.requests.push(RequestSample { key: sample.series_key(), series: RequestSeries::of(&sample), value: sample.value });
                }
            }
            Ok(Some(sample)) if sample.name == UPTIME_METRIC => metrics.uptime = Some(sample.value),
            Ok(_) => {}
            Err(_) => metrics.malformed_lines += 1,
        }
    }
    metrics
}

/// The labels of one `istio_requests_total` series that name the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestSeries {
    pub reporter: String,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub request_method: Option<String>,
    pub request_path: Option<String>,
}

impl RequestSeries {
    fn of(sample: &Sample<'_>) -> Self {
        let label = |name: &str| sample.label(name).unwrap_or_default().to_owned();
        Self {
            reporter: label("reporter"),
            source_workload: label("source_workload"),
            source_workload_namespace: label("source_workload_namespace"),
            destination_workload: label("destination_workload"),
            destination_workload_namespace: label("destination_workload_namespace"),
            destination_service_name: label("destination_service_name"),
            destination_service_namespace: label("destination_service_namespace"),
            request_method: sample.label("request_method").map(str::to_owned),
            request_path: sample.label("request_path").map(str::to_owned),
        }
    }
}

/// Requests one series counted since the previous scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestIncrease {
    pub series: RequestSeries,
    pub requests: u64,
}

/// What one scrape's text held, for the counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeCounts {
    pub malformed_lines: u64,
    pub baseline: bool,
    pub counter_resets: u64,
    pub untracked_series: u64,
}

#[derive(Debug, Default)]
struct PodWindow {
    values: HashMap<String, f64>,
    uptime: Option<f64>,
}

/// The last values of every sidecar's series (see the module documentation).
#[derive(Debug, Default)]
pub struct IstioWindows {
    first_round: Option<DateTime<Utc>>,
    pods: HashMap<Name, PodWindow>,
}

impl IstioWindows {
    /// Begins a round at `now` over these pods: forgets the pods not among them.
    pub fn begin_round(&mut self, pods: &[&LabelledPod], now: DateTime<Utc>) {
        self.first_round.get_or_insert(now);
        let keep: HashSet<Name> = pods.iter().map(|p| pod_key(p)).collect();
        self.pods.retain(|key, _| keep.contains(key));
    }

    /// Whether the pod's sidecar has a baseline (its requests will be reported from it).
    pub fn follows(&self, pod: &LabelledPod) -> bool {
        self.pods.contains_key(&pod_key(pod))
    }

    /// The increases in one pod's scrape since its previous one.
    pub fn increases(&mut self, pod: &LabelledPod, metrics: &SidecarMetrics) -> (Vec<RequestIncrease>, ScrapeCounts) {
        let mut counts = ScrapeCounts { malformed_lines: metrics.malformed_lines, untracked_series: metrics.untracked_series, ..ScrapeCounts::default() };
        let first_round = self.first_round;
        let known = self.pods.contains_key(&pod_key(pod));
        let window = self.pods.entry(pod_key(pod)).or_default();
        // A pod seen for the first time counts in full only if it started after the first round.
        counts.baseline = !known && !matches!((pod.started, first_round), (Some(started), Some(first)) if started > first);
        let restarted = matches!((window.uptime, metrics.uptime), (Some(before), Some(now)) if now < before);
        if metrics.uptime.is_some() {
            window.uptime = metrics.uptime;
        }
        let mut values = HashMap::with_capacity(metrics.requests.len());
        let mut increases = Vec::new();
        for sample in &metrics.requests {
            let increase = match window.values.get(&sample.key) {
                _ if counts.baseline => 0.0,
                Some(before) if restarted => {
                    counts.counter_resets += u64::from(*before > 0.0);
                    sample.value
                }
                Some(before) if sample.value < *before => {
                    counts.counter_resets += 1;
                    sample.value
                }
                Some(before) => sample.value - before,
                None => sample.value,
            };
            // Counters are integers; a fraction would be Envoy's rounding of nothing.
            let requests = increase.round() as u64;
            if requests > 0 {
                increases.push(RequestIncrease { series: sample.series.clone(), requests });
            }
            values.insert(sample.key.clone(), sample.value);
        }
        window.values = values;
        (increases, counts)
    }
}

fn pod_key(pod: &LabelledPod) -> Name {
    match &pod.uid {
        Some(uid) => uid.clone(),
        None => format!("{}/{}", pod.pod.namespace, pod.pod.name).into(),
    }
}

/// The path as recorded: without query or fragment, starting with `/`, at most [`MAX_PATH_LEN`]
/// long; `None` when there is no usable path (absent, `unknown`, not a path).
pub fn request_path(raw: Option<&str>) -> Result<Option<&str>, PathRefused> {
    let Some(raw) = raw.map(str::trim).filter(|p| !p.is_empty() && *p != "unknown") else { return Ok(None) };
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
    let Some(raw) = raw.map(str::trim).filter(|m| !m.is_empty() && *m != "unknown") else { return Ok(None) };
    HTTP_METHODS.iter().find(|m| m.eq_ignore_ascii_case(raw)).copied().map(Some).ok_or(UnknownMethod)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::identity::Workload;
    use crate::index::ObjectKey;

    fn pod(uid: &str, started: &str) -> LabelledPod {
        LabelledPod {
            pod: ObjectKey::new("shop", uid),
            uid: Some(uid.into()),
            ip: "10.244.0.5".parse().unwrap(),
            started: Some(started.parse().unwrap()),
            workload: Arc::new(Workload::named("shop", "cart", Some("Deployment"))),
        }
    }

    fn text(series: &[(&str, f64)]) -> SidecarMetrics {
        let text: String = series
            .iter()
            .map(|(path, value)| {
                format!("istio_requests_total{{reporter=\"destination\",source_workload=\"web\",request_path=\"{path}\",response_code=\"200\"}} {value}\n")
            })
            .collect();
        read_metrics(&text)
    }

    fn with_uptime(uptime: u64, mut metrics: SidecarMetrics) -> SidecarMetrics {
        metrics.uptime = Some(uptime as f64);
        metrics
    }

    fn paths(increases: &[RequestIncrease]) -> Vec<(String, u64)> {
        increases.iter().map(|i| (i.series.request_path.clone().unwrap(), i.requests)).collect()
    }

    #[test]
    fn the_first_scrape_is_a_baseline_then_increases_count() {
        let now: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        let cart = pod("cart-1", "2025-12-01T00:00:00Z");
        let mut windows = IstioWindows::default();
        windows.begin_round(&[&cart], now);
        let (found, counts) = windows.increases(&cart, &text(&[("/old", 7.0)]));
        assert!(found.is_empty() && counts.baseline, "yesterday's calls are not today's");

        let (found, counts) = windows.increases(&cart, &text(&[("/old", 7.0), ("/new", 2.0)]));
        assert_eq!(paths(&found), vec![("/new".to_owned(), 2)], "an unchanged counter is no call; a new series counts in full");
        assert!(!counts.baseline);

        let (found, counts) = windows.increases(&cart, &text(&[("/old", 3.0), ("/new", 5.0)]));
        assert_eq!(paths(&found), vec![("/old".to_owned(), 3), ("/new".to_owned(), 3)], "a reset counts its new value");
        assert_eq!(counts.counter_resets, 1);
    }

    #[test]
    fn a_restart_seen_in_the_uptime_counts_every_series_in_full() {
        let now: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        let cart = pod("cart-1", "2025-12-01T00:00:00Z");
        let mut windows = IstioWindows::default();
        windows.begin_round(&[&cart], now);
        windows.increases(&cart, &with_uptime(500, text(&[("/a", 4.0)])));
        // Restarted and already past its old value: only the uptime tells.
        let (found, counts) = windows.increases(&cart, &with_uptime(20, text(&[("/a", 6.0)])));
        assert_eq!(paths(&found), vec![("/a".to_owned(), 6)]);
        assert_eq!(counts.counter_resets, 1);
    }

    #[test]
    fn new_pods_count_in_full_and_gone_pods_are_forgotten() {
        let first: DateTime<Utc> = "2026-01-01T10:00:00Z".parse().unwrap();
        let old = pod("cart-1", "2025-12-01T00:00:00Z");
        let mut windows = IstioWindows::default();
        windows.begin_round(&[&old], first);
        windows.increases(&old, &text(&[("/a", 4.0)]));

        let young = pod("cart-2", "2026-01-01T10:00:30Z");
        windows.begin_round(&[&young], "2026-01-01T10:01:00Z".parse().unwrap());
        let (found, counts) = windows.increases(&young, &text(&[("/a", 2.0)]));
        assert_eq!(paths(&found), vec![("/a".to_owned(), 2)], "started after the first round: all of it is new");
        assert!(!counts.baseline);

        windows.begin_round(&[&old], "2026-01-01T10:02:00Z".parse().unwrap());
        let (found, counts) = windows.increases(&old, &text(&[("/a", 9.0)]));
        assert!(found.is_empty() && counts.baseline, "forgotten while not scraped, so a baseline again");
    }

    #[test]
    fn only_the_request_counter_and_the_uptime_are_read() {
        let text = "# TYPE envoy_server_uptime gauge\nenvoy_server_uptime 4193\nenvoy_cluster_upstream_cx_total{cluster_name=\"x\"} 9\n\
            istio_requests_total{reporter=\"source\",request_method=\"GET\"} 3\nistio_requests_total{reporter=\"source\" 3\n\
            istio_requests_total{reporter=\"destination\"} NaN\nistio_request_duration_milliseconds_bucket{le=\"+Inf\"} 3\nbroken{ line\n";
        let metrics = read_metrics(text);
        assert_eq!(metrics.uptime, Some(4193.0));
        assert_eq!(metrics.requests.len(), 1);
        assert_eq!(metrics.requests[0].series.reporter, "source");
        assert_eq!(metrics.requests[0].series.request_method.as_deref(), Some("GET"));
        assert_eq!(metrics.requests[0].series.request_path, None);
        assert_eq!(metrics.malformed_lines, 2, "only broken lines of the metrics read count");
    }

    #[test]
    fn paths_and_methods_are_cleaned_or_refused() {
        assert_eq!(request_path(Some("/api/items?id=4#top")), Ok(Some("/api/items")));
        assert_eq!(request_path(None), Ok(None));
        assert_eq!(request_path(Some("unknown")), Ok(None));
        assert_eq!(request_path(Some("example.com:443")), Err(PathRefused::NotAPath));
        assert_eq!(request_path(Some(&format!("/{}", "a".repeat(MAX_PATH_LEN)))), Err(PathRefused::TooLong));
        assert_eq!(request_method(Some("get")), Ok(Some("GET")));
        assert_eq!(request_method(Some("PATCH")), Ok(Some("PATCH")));
        assert_eq!(request_method(None), Ok(None));
        assert_eq!(request_method(Some("HEAD")), Err(UnknownMethod));
    }
}
