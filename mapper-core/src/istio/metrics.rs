//! Reading a sidecar's `/stats/prometheus` text: `istio_requests_total` and
//! `envoy_server_uptime`, within limits (what the text says is the pod's word, and its size is
//! the pod's choice).

use std::hash::RandomState;
use std::sync::OnceLock;

use crate::prometheus::{self, Sample};

use super::REQUESTS_METRIC;

const UPTIME_METRIC: &str = "envoy_server_uptime";
/// `istio_requests_total` series kept per sidecar; more are not followed (and counted).
pub const MAX_SERIES_PER_POD: usize = 5_000;
/// Longer lines of the two metrics read are counted as malformed without being parsed (a real
/// one, with every label and a 1 KiB path, is about 3 KiB).
pub const MAX_LINE_BYTES: usize = 16 << 10;

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
    /// Its identity: a keyed hash of every label (see [`Sample::series_hash`]).
    pub key: u64,
    pub series: RequestSeries,
    pub value: f64,
}

/// The process's key for series hashes.
fn series_hasher() -> &'static RandomState {
    static STATE: OnceLock<RandomState> = OnceLock::new();
    STATE.get_or_init(RandomState::new)
}

/// Reads `istio_requests_total` and `envoy_server_uptime` out of a sidecar's metrics; other
/// metrics are skipped without being parsed, broken or overlong lines of these two are counted.
pub fn read_metrics(text: &str) -> SidecarMetrics {
    read_counters(text, &[(REQUESTS_METRIC, SeriesKind::Requests)])
}

/// Reads the counters `counters` names (each as its kind of series, within
/// [`MAX_SERIES_PER_POD`] in all) and `envoy_server_uptime`; other metrics are skipped without
/// being parsed, broken or overlong lines of these are counted.
pub(crate) fn read_counters(text: &str, counters: &[(&str, SeriesKind)]) -> SidecarMetrics {
    let mut metrics = SidecarMetrics::default();
    for line in text.lines().map(str::trim_start) {
        if !(line.starts_with(UPTIME_METRIC) || counters.iter().any(|(m, _)| line.starts_with(m))) {
            continue;
        }
        if line.len() > MAX_LINE_BYTES {
            metrics.malformed_lines = metrics.malformed_lines.saturating_add(1);
            continue;
        }
        let sample = match prometheus::parse_line(line) {
            Ok(Some(sample)) => sample,
            Ok(None) => continue,
            Err(_) => {
                metrics.malformed_lines = metrics.malformed_lines.saturating_add(1);
                continue;
            }
        };
        if sample.name == UPTIME_METRIC {
            metrics.uptime = Some(sample.value);
            continue;
        }
        let Some(kind) = counters.iter().find(|(m, _)| *m == sample.name).map(|(_, k)| *k) else {
            continue;
        };
        if !sample.value.is_finite() || sample.value < 0.0 {
            metrics.malformed_lines = metrics.malformed_lines.saturating_add(1);
        } else if metrics.requests.len() >= MAX_SERIES_PER_POD {
            metrics.untracked_series = metrics.untracked_series.saturating_add(1);
        } else {
            metrics.requests.push(RequestSample {
                key: sample.series_hash(series_hasher()),
                series: RequestSeries::of(&sample, kind),
                value: sample.value,
            });
        }
    }
    metrics
}

/// What a series counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum SeriesKind {
    /// `istio_requests_total`: HTTP (or gRPC) requests.
    #[default]
    Requests,
    /// `istio_tcp_connections_opened_total`: TCP connections (ztunnel's count).
    TcpConnections,
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
    /// The SPIFFE identities of the two ends (`spiffe://<trust domain>/ns/<ns>/sa/<sa>`), when
    /// the proxy knew them.
    pub source_principal: Option<String>,
    pub destination_principal: Option<String>,
    /// Which counter the series is.
    pub kind: SeriesKind,
}

impl RequestSeries {
    fn of(sample: &Sample<'_>, kind: SeriesKind) -> Self {
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
            source_principal: sample.label("source_principal").map(str::to_owned),
            destination_principal: sample.label("destination_principal").map(str::to_owned),
            kind,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn series_and_lines_past_the_limits_are_counted_not_kept() {
        let mut text: String = (0..MAX_SERIES_PER_POD + 7)
            .map(|i| {
                format!(
                    "istio_requests_total{{reporter=\"destination\",request_path=\"/p{i}\"}} 1\n"
                )
            })
            .collect();
        text.push_str(&format!(
            "istio_requests_total{{reporter=\"destination\",request_path=\"/{}\"}} 1\n",
            "x".repeat(MAX_LINE_BYTES)
        ));
        let metrics = read_metrics(&text);
        assert_eq!(metrics.requests.len(), MAX_SERIES_PER_POD);
        assert_eq!(metrics.untracked_series, 7);
        assert_eq!(metrics.malformed_lines, 1, "the overlong line");
    }
}
