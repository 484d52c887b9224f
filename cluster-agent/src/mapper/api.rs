//! The mapper's local API (`:9090`): observations in from node agents and `aws-proxy`; edges
//! out to the `intentmap` CLI; health and metrics.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mapper_core::{EdgeFilter, LabelSelector, ServerSelector};
use model::observation::ObservationBatch;
use serde::Deserialize;

use super::auth::{AuthError, ObservationAuth};
use super::watch::WatchProgress;
use super::SharedMapper;
use crate::upload::UploadStats;

pub struct ApiState {
    pub mapper: SharedMapper,
    pub auth: ObservationAuth,
    pub watches: Arc<WatchProgress>,
    pub upload: Option<Arc<UploadStats>>,
}

/// Largest observation batch accepted.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/observations", post(observations).layer(DefaultBodyLimit::max(MAX_BATCH_BYTES)))
        .route("/v1/edges", get(edges))
        .route("/v1/reset", post(reset))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(state)
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(serde_json::json!({"error": message.into()}))).into_response()
}

async fn observations(State(state): State<Arc<ApiState>>, headers: HeaderMap, body: Bytes) -> Response {
    let authorization = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    match state.auth.check(authorization).await {
        Ok(_) => {}
        Err(AuthError::Unavailable(e)) => {
            tracing::warn!(error = %e, "TokenReview failed");
            return error(StatusCode::SERVICE_UNAVAILABLE, "the token could not be checked right now; retry");
        }
        Err(e) => return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], Json(serde_json::json!({"error": e.to_string()}))).into_response(),
    }
    let batch: ObservationBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("not an observation batch: {e}")),
    };
    let (tcp, dns, aws) = (batch.tcp.len(), batch.dns.len(), batch.aws.len());
    state.mapper.lock().expect("mapper lock poisoned").observe(&batch, chrono::Utc::now());
    tracing::debug!(source = batch.source.as_deref().unwrap_or("-"), tcp, dns, aws, "observations");
    (StatusCode::ACCEPTED, Json(serde_json::json!({"tcp": tcp, "dns": dns, "aws": aws}))).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeQuery {
    /// Comma-separated client namespaces.
    namespaces: Option<String>,
    /// `name.namespace` of a server.
    server: Option<String>,
    /// Comma-separated `key=value` labels; clients whose pods carry one are left out.
    exclude_labels: Option<String>,
}

fn parse_filter(q: EdgeQuery) -> Result<EdgeFilter, String> {
    let list = |s: Option<String>| s.map(|s| s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect::<Vec<_>>()).unwrap_or_default();
    let server = q.server.map(|s| s.parse::<ServerSelector>().map_err(|e| e.to_string())).transpose()?;
    let exclude_labels = list(q.exclude_labels).iter().map(|l| l.parse::<LabelSelector>().map_err(|e| e.to_string())).collect::<Result<_, _>>()?;
    Ok(EdgeFilter { namespaces: list(q.namespaces), server, exclude_labels })
}

async fn edges(State(state): State<Arc<ApiState>>, q: Result<Query<EdgeQuery>, axum::extract::rejection::QueryRejection>) -> Response {
    let filter = match q.map_err(|e| e.body_text()).and_then(|Query(q)| parse_filter(q)) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mapper = state.mapper.lock().expect("mapper lock poisoned");
    let edges = filter.apply(&mapper.snapshot(), &mapper.index);
    drop(mapper);
    Json(edges).into_response()
}

async fn reset(State(state): State<Arc<ApiState>>) -> StatusCode {
    state.mapper.lock().expect("mapper lock poisoned").reset();
    tracing::info!("edges reset on request");
    StatusCode::NO_CONTENT
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Response {
    if state.watches.ready() {
        "ready".into_response()
    } else {
        error(StatusCode::SERVICE_UNAVAILABLE, "the Kubernetes watches have not finished their first list yet")
    }
}

async fn metrics(State(state): State<Arc<ApiState>>) -> Response {
    let (stats, edges) = {
        let m = state.mapper.lock().expect("mapper lock poisoned");
        (m.stats(), m.edges().len())
    };
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
        let _ = write!(out, "# HELP intentmap_mapper_{name} {help}\n# TYPE intentmap_mapper_{name} {kind}\nintentmap_mapper_{name} {value}\n");
    };
    metric("edges", "gauge", "Edges currently kept", edges as u64);
    metric("observation_batches_total", "counter", "Observation batches received", stats.batches);
    metric("tcp_connections_total", "counter", "TCP connections recorded as edges", stats.tcp_connections);
    metric("dns_answers_total", "counter", "DNS answers for external names remembered", stats.dns_answers);
    metric("dns_cluster_answers_total", "counter", "DNS answers for in-cluster names recorded as edges", stats.dns_cluster_answers);
    metric("aws_operations_total", "counter", "AWS operations recorded", stats.aws_operations);
    metric("unknown_clients_total", "counter", "Observations whose client is not a known pod or node", stats.unknown_clients);
    metric("unattributed_targets_total", "counter", "Connections to a pod address no pod held at the time", stats.unattributed_targets);
    metric("invalid_observations_total", "counter", "Observations with nothing usable", stats.invalid_observations);
    metric("dropped_edges_total", "counter", "Edges refused because the edge limit was reached (raise --max-edges)", stats.dropped_edges);
    metric("expired_edges_total", "counter", "Edges dropped after their time to live", stats.expired_edges);
    metric("dns_evictions_total", "counter", "DNS answers forgotten early because the DNS memory was full", stats.dns_evictions);
    metric("dropped_details_total", "counter", "HTTP paths and Kafka topics left off edges that had the most allowed", stats.dropped_details);
    metric("kafka_accesses_total", "counter", "Kafka topic accesses recorded from broker authorizer logs", stats.kafka_accesses);
    metric("kafka_other_lines_total", "counter", "Broker log lines that are not authorizer lines", stats.kafka_other_lines);
    metric("kafka_malformed_lines_total", "counter", "Authorizer log lines that could not be read", stats.kafka_malformed_lines);
    metric("kafka_unknown_operations_total", "counter", "Authorizer log lines with an operation ClientIntents cannot name", stats.kafka_unknown_operations);
    metric(
        "kafka_non_topic_lines_total",
        "counter",
        "Authorizer log lines about groups, the cluster or transactional ids (skipped)",
        stats.kafka_non_topic_lines,
    );
    metric("kafka_topic_patterns_total", "counter", "Authorizer log lines about topic patterns rather than topics (skipped)", stats.kafka_topic_patterns);
    metric("kafka_unresolved_hosts_total", "counter", "Authorizer log lines whose client address names no pod or node", stats.kafka_unresolved_hosts);
    metric("kafka_unknown_brokers_total", "counter", "Authorizer log lines of a broker pod the index does not know", stats.kafka_unknown_brokers);
    let kafka = &state.watches.kafka;
    metric("kafka_log_streams", "gauge", "Broker logs followed", kafka.streams.load(Ordering::Relaxed));
    metric("kafka_log_reconnects_total", "counter", "Broker log streams opened again after they ended", kafka.reconnects.load(Ordering::Relaxed));
    metric("kafka_log_cut_lines_total", "counter", "Log lines cut by a disconnection (read again in full)", kafka.cut_lines.load(Ordering::Relaxed));
    metric(
        "kafka_log_replayed_lines_total",
        "counter",
        "Log lines received again after a reconnection, not counted twice",
        kafka.replayed_lines.load(Ordering::Relaxed),
    );
    metric("kafka_log_overlong_lines_total", "counter", "Log lines too long to be authorizer lines (dropped)", kafka.overlong_lines.load(Ordering::Relaxed));
    metric("kafka_log_file_rotations_total", "counter", "Kafka log files replaced at their path", kafka.file_rotations.load(Ordering::Relaxed));
    metric("kafka_log_file_truncations_total", "counter", "Kafka log files truncated in place", kafka.file_truncations.load(Ordering::Relaxed));
    metric("kafka_log_errors_total", "counter", "Failures opening or reading a broker log (retried)", kafka.errors.load(Ordering::Relaxed));
    metric("istio_rounds_total", "counter", "Rounds of Istio sidecar scrapes", state.watches.istio.rounds.load(Ordering::Relaxed));
    metric("istio_sidecars", "gauge", "Istio sidecars in the last round", state.watches.istio.sidecars.load(Ordering::Relaxed));
    metric("istio_scrapes_total", "counter", "Istio sidecar metrics scraped", stats.istio_scrapes);
    metric("istio_scrape_failures_total", "counter", "Istio sidecar scrapes that failed", stats.istio_scrape_failures);
    metric("istio_baselines_total", "counter", "First scrapes of a sidecar, taken as a baseline (nothing reported)", stats.istio_baselines);
    metric("http_requests_total", "counter", "HTTP requests recorded from Istio request counters", stats.http_requests);
    metric("istio_counter_resets_total", "counter", "Istio request counters that went down (sidecar restarts)", stats.istio_counter_resets);
    metric("istio_malformed_lines_total", "counter", "Lines of sidecar metrics that could not be read", stats.istio_malformed_lines);
    metric("istio_untracked_series_total", "counter", "Request series past the per-sidecar limit", stats.istio_untracked_series);
    metric(
        "istio_left_to_destination_total",
        "counter",
        "Client-side series left to the server's sidecar, which counts the same requests",
        stats.istio_left_to_destination,
    );
    metric("istio_unknown_clients_total", "counter", "Request series whose client workload is unknown", stats.istio_unknown_clients);
    metric("istio_unknown_targets_total", "counter", "Client-side request series whose destination the index does not know", stats.istio_unknown_targets);
    metric("istio_unknown_reporters_total", "counter", "Request series from a reporter other than source or destination", stats.istio_unknown_reporters);
    metric(
        "istio_unknown_methods_total",
        "counter",
        "Request series with a method ClientIntents cannot name (recorded without the path)",
        stats.istio_unknown_methods,
    );
    metric("istio_unusable_paths_total", "counter", "Request series whose path is not one or too long (recorded without it)", stats.istio_unusable_paths);
    if let Some(upload) = &state.upload {
        let u = upload.snapshot();
        metric("reports_sent_total", "counter", "Reports the cloud applied", u.sent);
        metric("reports_duplicate_total", "counter", "Reports the cloud had already applied", u.duplicates);
        metric("upload_retries_total", "counter", "Failed uploads that will be retried", u.retries);
        metric("reports_rejected_total", "counter", "Reports the cloud refused (set aside in the outbox)", u.rejected);
        metric("reports_pending", "gauge", "Reports waiting in the outbox", u.pending);
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
