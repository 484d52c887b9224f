//! `GET /metrics`: the mapper's counters in Prometheus' text format.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::api::ApiState;
use super::LockMapper;

pub async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let (stats, edges) = {
        let m = state.mapper.lock();
        (m.stats(), m.edges().len())
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(out, "# HELP intentmap_mapper_{name} {help}\n# TYPE intentmap_mapper_{name} {kind}\nintentmap_mapper_{name} {value}\n");
    };
    metric("edges", "gauge", "Edges currently kept", edges as u64);
    metric("observation_batches_total", "counter", "Observation batches received", stats.batches);
    metric(
        "tcp_connections_total",
        "counter",
        "TCP connections recorded as edges",
        stats.tcp_connections,
    );
    metric(
        "dns_answers_total",
        "counter",
        "DNS answers for external names remembered",
        stats.dns_answers,
    );
    metric(
        "dns_cluster_answers_total",
        "counter",
        "DNS answers for in-cluster names recorded as edges",
        stats.dns_cluster_answers,
    );
    metric("aws_operations_total", "counter", "AWS operations recorded", stats.aws_operations);
    metric(
        "unknown_clients_total",
        "counter",
        "Observations whose client is not a known pod or node",
        stats.unknown_clients,
    );
    metric(
        "unattributed_targets_total",
        "counter",
        "Connections to a pod address no pod held at the time",
        stats.unattributed_targets,
    );
    metric(
        "invalid_observations_total",
        "counter",
        "Observations with nothing usable",
        stats.invalid_observations,
    );
    metric(
        "foreign_clients_total",
        "counter",
        "Observations a node agent sent about a client on another node (refused; that node reports them)",
        stats.foreign_clients,
    );
    metric(
        "unpermitted_observations_total",
        "counter",
        "Observation lines of a kind the sender may not send (refused)",
        stats.unpermitted_observations,
    );
    metric(
        "dropped_edges_total",
        "counter",
        "Edges refused because the edge limit was reached (raise --max-edges)",
        stats.dropped_edges,
    );
    metric(
        "expired_edges_total",
        "counter",
        "Edges dropped after their time to live",
        stats.expired_edges,
    );
    metric(
        "dns_evictions_total",
        "counter",
        "DNS answers forgotten early because the DNS memory was full",
        stats.dns_evictions,
    );
    metric(
        "dropped_details_total",
        "counter",
        "HTTP paths and Kafka topics left off edges that had the most allowed",
        stats.dropped_details,
    );
    metric(
        "kafka_accesses_total",
        "counter",
        "Kafka topic accesses recorded from broker authorizer logs",
        stats.kafka_accesses,
    );
    metric(
        "kafka_other_lines_total",
        "counter",
        "Broker log lines that are not authorizer lines",
        stats.kafka_other_lines,
    );
    metric(
        "kafka_malformed_lines_total",
        "counter",
        "Authorizer log lines that could not be read",
        stats.kafka_malformed_lines,
    );
    metric(
        "kafka_unknown_operations_total",
        "counter",
        "Authorizer log lines with an operation ClientIntents cannot name",
        stats.kafka_unknown_operations,
    );
    metric(
        "kafka_non_topic_lines_total",
        "counter",
        "Authorizer log lines about groups, the cluster or transactional ids (skipped)",
        stats.kafka_non_topic_lines,
    );
    metric(
        "kafka_topic_patterns_total",
        "counter",
        "Authorizer log lines about topic patterns rather than topics (skipped)",
        stats.kafka_topic_patterns,
    );
    metric(
        "kafka_unresolved_hosts_total",
        "counter",
        "Authorizer log lines whose client address names no pod or node",
        stats.kafka_unresolved_hosts,
    );
    metric(
        "kafka_unknown_brokers_total",
        "counter",
        "Authorizer log lines of a broker pod the index does not know",
        stats.kafka_unknown_brokers,
    );
    let kafka = &state.watches.kafka;
    metric(
        "kafka_log_streams",
        "gauge",
        "Broker logs followed",
        kafka.streams.load(Ordering::Relaxed),
    );
    metric(
        "kafka_log_reconnects_total",
        "counter",
        "Broker log streams opened again after they ended",
        kafka.reconnects.load(Ordering::Relaxed),
    );
    metric(
        "kafka_log_cut_lines_total",
        "counter",
        "Log lines cut by a disconnection (read again in full)",
        kafka.cut_lines.load(Ordering::Relaxed),
    );
    metric(
        "kafka_log_replayed_lines_total",
        "counter",
        "Log lines received again after a reconnection, not counted twice",
        kafka.replayed_lines.load(Ordering::Relaxed),
    );
    metric(
        "kafka_log_overlong_lines_total",
        "counter",
        "Log lines too long to be authorizer lines (dropped)",
        kafka.overlong_lines.load(Ordering::Relaxed),
    );
    metric(
        "kafka_log_file_rotations_total",
        "counter",
        "Kafka log files replaced at their path",
        kafka.file_rotations.load(Ordering::Relaxed),
    );
    metric(
        "kafka_log_file_truncations_total",
        "counter",
        "Kafka log files truncated in place",
        kafka.file_truncations.load(Ordering::Relaxed),
    );
    metric(
        "kafka_log_errors_total",
        "counter",
        "Failures opening or reading a broker log (retried)",
        kafka.errors.load(Ordering::Relaxed),
    );
    let istio = &state.watches.istio;
    metric(
        "istio_rounds_total",
        "counter",
        "Rounds of Istio sidecar scrapes",
        istio.rounds.load(Ordering::Relaxed),
    );
    metric(
        "istio_control_plane",
        "gauge",
        "Whether istiod was found in its namespace at the last round (1) or not (0: nothing scraped)",
        istio.control_plane.load(Ordering::Relaxed),
    );
    metric(
        "istio_sidecars",
        "gauge",
        "Istio sidecars in the last round",
        istio.sidecars.load(Ordering::Relaxed),
    );
    metric("istio_scrapes_total", "counter", "Istio sidecar metrics scraped", stats.istio_scrapes);
    metric(
        "istio_scrape_failures_total",
        "counter",
        "Istio sidecar scrapes that failed",
        stats.istio_scrape_failures,
    );
    metric(
        "istio_baselines_total",
        "counter",
        "First scrapes of a sidecar, taken as a baseline (nothing reported)",
        stats.istio_baselines,
    );
    metric(
        "http_requests_total",
        "counter",
        "HTTP requests recorded from Istio request counters",
        stats.http_requests,
    );
    metric(
        "istio_counter_resets_total",
        "counter",
        "Istio request counters that went down (sidecar restarts)",
        stats.istio_counter_resets,
    );
    metric(
        "istio_malformed_lines_total",
        "counter",
        "Lines of sidecar metrics that could not be read",
        stats.istio_malformed_lines,
    );
    metric(
        "istio_untracked_series_total",
        "counter",
        "Request series past the per-sidecar or overall limit",
        stats.istio_untracked_series,
    );
    metric(
        "istio_oversized_scrapes_total",
        "counter",
        "Sidecar answers larger than the limit (refused)",
        istio.oversized.load(Ordering::Relaxed),
    );
    metric(
        "istio_uncorroborated_total",
        "counter",
        "Request counter increases that neither the client's sidecar nor an observed connection vouched for (not recorded)",
        stats.istio_uncorroborated,
    );
    metric(
        "istio_dropped_increases_total",
        "counter",
        "Request counter increases past a round's limit (not recorded)",
        stats.istio_dropped_increases,
    );
    metric(
        "istio_refused_claims_total",
        "counter",
        "Client-side claims not kept for want of room",
        stats.istio_refused_claims,
    );
    metric(
        "istio_left_to_destination_total",
        "counter",
        "Client-side series left to the server's sidecar, which counts the same requests",
        stats.istio_left_to_destination,
    );
    metric(
        "istio_unknown_clients_total",
        "counter",
        "Request series whose client workload is unknown",
        stats.istio_unknown_clients,
    );
    metric(
        "istio_unknown_targets_total",
        "counter",
        "Client-side request series whose destination the index does not know",
        stats.istio_unknown_targets,
    );
    metric(
        "istio_unknown_reporters_total",
        "counter",
        "Request series from a reporter other than source or destination",
        stats.istio_unknown_reporters,
    );
    metric(
        "istio_unknown_methods_total",
        "counter",
        "Request series with a method ClientIntents cannot name (recorded without the path)",
        stats.istio_unknown_methods,
    );
    metric(
        "istio_unusable_paths_total",
        "counter",
        "Request series whose path is not one or too long (recorded without it)",
        stats.istio_unusable_paths,
    );
    if let Some(upload) = &state.upload {
        let u = upload.snapshot();
        metric("reports_sent_total", "counter", "Reports the cloud applied", u.sent);
        metric(
            "reports_duplicate_total",
            "counter",
            "Reports the cloud had already applied",
            u.duplicates,
        );
        metric("upload_retries_total", "counter", "Failed uploads that will be retried", u.retries);
        metric(
            "reports_rejected_total",
            "counter",
            "Reports the cloud refused (set aside in the outbox)",
            u.rejected,
        );
        metric("reports_failed_total", "counter", "Reports the cloud kept failing on while later ones went through (set aside as *.failed)", u.failed);
        metric(
            "upload_trimmed_entries_total",
            "counter",
            "List entries left off edges longer than a report may carry",
            u.trimmed_entries,
        );
        metric(
            "upload_dropped_edges_total",
            "counter",
            "Edges left out of reports because the cloud would refuse them",
            u.dropped_edges,
        );
        metric("reports_pending", "gauge", "Reports waiting in the outbox", u.pending);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
