//! `GET /metrics`: the mapper's counters, read from its state at every scrape.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::response::Response;
use service_shell::metrics::{Registry, Scrape};

use super::api::ApiState;

pub async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let mut registry = Registry::with_prefix("intentmap_mapper");
    registry.register_scrape(move |m| read(&state, m));
    registry.response()
}

/// Every metric, in the order they are exposed; counters are sampled as `{name}_total`.
fn read(state: &ApiState, m: &mut Scrape<'_>) {
    let (stats, edges) = {
        let mapper = state.mapper.lock();
        (mapper.stats(), mapper.edges().len())
    };
    m.gauge("edges", "Edges currently kept", edges as u64);
    m.counter("observation_batches", "Observation batches received", stats.batches);
    m.counter("tcp_connections", "TCP connections recorded as edges", stats.tcp_connections);
    m.counter(
        "tcp_closes",
        "TCP connection closes whose bytes were added to edges",
        stats.tcp_closes,
    );
    m.counter("dns_answers", "DNS answers for external names remembered", stats.dns_answers);
    m.counter(
        "dns_cluster_answers",
        "DNS answers for in-cluster names recorded as edges",
        stats.dns_cluster_answers,
    );
    m.counter("aws_operations", "AWS operations recorded", stats.aws_operations);
    m.counter(
        "unknown_clients",
        "Observations whose client is not a known pod or node",
        stats.unknown_clients,
    );
    m.counter(
        "unattributed_targets",
        "Connections to a pod address no pod held at the time",
        stats.unattributed_targets,
    );
    m.counter(
        "contested_addresses",
        "Observations whose client or target address two running pods held at the time (named as neither)",
        stats.contested_addresses,
    );
    m.counter(
        "unknown_hinted_pods",
        "Connections whose node named a pod the mapper does not know, from an address that was not that pod's (refused)",
        stats.unknown_hinted_pods,
    );
    m.counter(
        "invalid_observations",
        "Observations with nothing usable",
        stats.invalid_observations,
    );
    m.counter("foreign_clients",
        "Observations a node agent sent about a client on another node (refused; that node reports them)",
        stats.foreign_clients,
    );
    m.counter(
        "unpermitted_observations",
        "Observation lines of a kind the sender may not send (refused)",
        stats.unpermitted_observations,
    );
    m.counter(
        "dropped_edges",
        "Edges refused because the edge limit was reached (raise --max-edges)",
        stats.dropped_edges,
    );
    m.counter("expired_edges", "Edges dropped after their time to live", stats.expired_edges);
    m.counter(
        "dns_evictions",
        "DNS answers forgotten early because the DNS memory was full",
        stats.dns_evictions,
    );
    m.counter(
        "dropped_details",
        "HTTP paths and Kafka topics left off edges that had the most allowed",
        stats.dropped_details,
    );
    m.counter(
        "incoming_connections",
        "Accepted connections from outside the cluster recorded as incoming internet traffic",
        stats.incoming_connections,
    );
    m.counter(
        "accepted_from_workloads",
        "Server-side reports of calls between workloads, left to the client's side",
        stats.accepted_from_workloads,
    );
    m.counter(
        "incoming_dropped",
        "Accepted connections from unknown sources dropped: too many waited to be judged",
        stats.incoming_dropped,
    );
    m.counter(
        "kafka_accesses",
        "Kafka topic accesses recorded from broker authorizer logs",
        stats.kafka_accesses,
    );
    m.counter(
        "kafka_other_lines",
        "Broker log lines that are not authorizer lines",
        stats.kafka_other_lines,
    );
    m.counter(
        "kafka_malformed_lines",
        "Authorizer log lines that could not be read",
        stats.kafka_malformed_lines,
    );
    m.counter(
        "kafka_unknown_operations",
        "Authorizer log lines with an operation ClientIntents cannot name",
        stats.kafka_unknown_operations,
    );
    m.counter(
        "kafka_non_topic_lines",
        "Authorizer log lines about groups, the cluster or transactional ids (skipped)",
        stats.kafka_non_topic_lines,
    );
    m.counter(
        "kafka_topic_patterns",
        "Authorizer log lines about topic patterns rather than topics (skipped)",
        stats.kafka_topic_patterns,
    );
    m.counter(
        "kafka_unresolved_hosts",
        "Authorizer log lines whose client address names no pod or node",
        stats.kafka_unresolved_hosts,
    );
    m.counter(
        "kafka_unknown_brokers",
        "Authorizer log lines of a broker pod the index does not know",
        stats.kafka_unknown_brokers,
    );
    let kafka = &state.telemetry.kafka;
    m.gauge("kafka_log_streams", "Broker logs followed", kafka.streams.load(Ordering::Relaxed));
    m.counter(
        "kafka_log_reconnects",
        "Broker log streams opened again after they ended",
        kafka.reconnects.load(Ordering::Relaxed),
    );
    m.counter(
        "kafka_log_cut_lines",
        "Log lines cut by a disconnection (read again in full)",
        kafka.cut_lines.load(Ordering::Relaxed),
    );
    m.counter(
        "kafka_log_replayed_lines",
        "Log lines received again after a reconnection, not counted twice",
        kafka.replayed_lines.load(Ordering::Relaxed),
    );
    m.counter(
        "kafka_log_overlong_lines",
        "Log lines too long to be authorizer lines (dropped)",
        kafka.overlong_lines.load(Ordering::Relaxed),
    );
    m.counter(
        "kafka_log_file_rotations",
        "Kafka log files replaced at their path",
        kafka.file_rotations.load(Ordering::Relaxed),
    );
    m.counter(
        "kafka_log_file_truncations",
        "Kafka log files truncated in place",
        kafka.file_truncations.load(Ordering::Relaxed),
    );
    m.counter(
        "kafka_log_errors",
        "Failures opening or reading a broker log (retried)",
        kafka.errors.load(Ordering::Relaxed),
    );
    let istio = &state.telemetry.istio;
    m.counter(
        "istio_rounds",
        "Rounds of Istio sidecar scrapes",
        istio.rounds.load(Ordering::Relaxed),
    );
    m.gauge("istio_control_plane",
        "Whether istiod was found in its namespace at the last round (1) or not (0: nothing scraped)",
        istio.control_plane.load(Ordering::Relaxed),
    );
    m.gauge(
        "istio_sidecars",
        "Istio sidecars in the last round",
        istio.sidecars.load(Ordering::Relaxed),
    );
    m.counter("istio_scrapes", "Istio sidecar metrics scraped", stats.istio_scrapes);
    m.counter(
        "istio_scrape_failures",
        "Istio sidecar scrapes that failed",
        stats.istio_scrape_failures,
    );
    m.counter(
        "istio_baselines",
        "First scrapes of a sidecar, taken as a baseline (nothing reported)",
        stats.istio_baselines,
    );
    m.counter(
        "http_requests",
        "HTTP requests recorded from Istio request counters",
        stats.http_requests,
    );
    m.counter(
        "istio_counter_resets",
        "Istio request counters that went down (sidecar restarts)",
        stats.istio_counter_resets,
    );
    m.counter(
        "istio_malformed_lines",
        "Lines of sidecar metrics that could not be read",
        stats.istio_malformed_lines,
    );
    m.counter(
        "istio_untracked_series",
        "Request series past the per-sidecar or overall limit",
        stats.istio_untracked_series,
    );
    m.counter(
        "istio_oversized_scrapes",
        "Sidecar answers larger than the limit (refused)",
        istio.oversized.load(Ordering::Relaxed),
    );
    m.counter("istio_uncorroborated",
        "Request counter increases that neither the client's sidecar nor an observed connection vouched for (not recorded)",
        stats.istio_uncorroborated,
    );
    m.counter(
        "istio_dropped_increases",
        "Request counter increases past a round's limit (not recorded)",
        stats.istio_dropped_increases,
    );
    m.counter(
        "istio_refused_claims",
        "Client-side claims not kept for want of room",
        stats.istio_refused_claims,
    );
    m.counter(
        "istio_left_to_destination",
        "Client-side series left to the server's sidecar, which counts the same requests",
        stats.istio_left_to_destination,
    );
    m.counter(
        "istio_unknown_clients",
        "Request series whose client workload is unknown",
        stats.istio_unknown_clients,
    );
    m.counter(
        "istio_unknown_targets",
        "Client-side request series whose destination the index does not know",
        stats.istio_unknown_targets,
    );
    m.counter(
        "istio_unknown_reporters",
        "Request series from a reporter other than source or destination",
        stats.istio_unknown_reporters,
    );
    m.counter(
        "istio_unknown_methods",
        "Request series with a method ClientIntents cannot name (recorded without the path)",
        stats.istio_unknown_methods,
    );
    m.counter(
        "istio_unusable_paths",
        "Request series whose path is not one or too long (recorded without it)",
        stats.istio_unusable_paths,
    );
    m.gauge(
        "istio_ambient_proxies",
        "Istio ambient proxies (ztunnel, waypoints) in the last round",
        istio.ambient_proxies.load(Ordering::Relaxed),
    );
    m.counter(
        "istio_ambient_scrapes",
        "Istio ambient proxies' (ztunnel, waypoints) metrics scraped",
        stats.istio_ambient_scrapes,
    );
    m.counter(
        "istio_foreign_series",
        "ztunnel series about a pod not enrolled on its own node, or whose principal names another namespace (not recorded)",
        stats.istio_foreign_series,
    );
    m.counter(
        "istio_waypoint_hops",
        "ztunnel series of a hop to or from a waypoint, left to the waypoint's count",
        stats.istio_waypoint_hops,
    );
    if let Some(upload) = &state.upload {
        let u = upload.snapshot();
        m.counter("reports_sent", "Reports the cloud applied", u.sent);
        m.counter("reports_duplicate", "Reports the cloud had already applied", u.duplicates);
        m.counter("upload_retries", "Failed uploads that will be retried", u.retries);
        m.counter(
            "reports_rejected",
            "Reports the cloud refused (set aside in the outbox)",
            u.rejected,
        );
        m.counter("reports_failed", "Reports the cloud kept failing on while later ones went through (set aside as *.failed)", u.failed);
        m.counter(
            "upload_trimmed_entries",
            "List entries left off edges longer than a report may carry",
            u.trimmed_entries,
        );
        m.counter(
            "upload_dropped_edges",
            "Edges left out of reports because the cloud would refuse them",
            u.dropped_edges,
        );
        m.gauge("reports_pending", "Reports waiting in the outbox", u.pending);
    }
}
