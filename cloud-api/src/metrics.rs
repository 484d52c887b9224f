//! Prometheus metrics, served at `/metrics` on the separate `--metrics-listen` address only:
//! they count across every organisation, so they are no tenant's business.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use service_shell::metrics::Registry;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Method {
    pub method: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub reason: String,
}

pub struct Metrics {
    registry: Registry,
    pub reports: Family<Outcome, Counter>,
    pub edges_merged: Counter,
    pub tokens_issued: Counter,
    pub auth_failures: Family<Method, Counter>,
    pub auth_throttled: Family<Reason, Counter>,
    pub secrets_rehashed: Family<Method, Counter>,
    pub ingest_seconds: Histogram,
    pub retention_edges_pruned: Counter,
    pub retention_reports_pruned: Counter,
    pub retention_runs: Family<Outcome, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("intentmap_cloud");
        let reports = Family::<Outcome, Counter>::default();
        registry.register(
            "reports",
            "Edge reports received, by outcome (accepted, duplicate, rejected)",
            reports.clone(),
        );
        let edges_merged = Counter::default();
        registry.register(
            "edges_merged",
            "Distinct edges merged from accepted reports",
            edges_merged.clone(),
        );
        let tokens_issued = Counter::default();
        registry.register("tokens_issued", "Cluster access tokens issued", tokens_issued.clone());
        let auth_failures = Family::<Method, Counter>::default();
        registry.register("auth_failures", "Refused credentials, by method", auth_failures.clone());
        let auth_throttled = Family::<Reason, Counter>::default();
        registry.register(
            "auth_throttled",
            "Credential checks refused before they ran: rate_limited (429) or busy (503)",
            auth_throttled.clone(),
        );
        let secrets_rehashed = Family::<Method, Counter>::default();
        registry.register(
            "secrets_rehashed",
            "Stored secret hashes replaced by a keyed hash under the current key, by method",
            secrets_rehashed.clone(),
        );
        let ingest_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 16));
        registry.register(
            "ingest_seconds",
            "Time to store one accepted report",
            ingest_seconds.clone(),
        );
        let retention_edges_pruned = Counter::default();
        registry.register(
            "retention_edges_pruned",
            "Edges deleted because they were not seen within their organisation's retention",
            retention_edges_pruned.clone(),
        );
        let retention_reports_pruned = Counter::default();
        registry.register(
            "retention_reports_pruned",
            "Processed report ids deleted after the replay window",
            retention_reports_pruned.clone(),
        );
        let retention_runs = Family::<Outcome, Counter>::default();
        registry.register(
            "retention_runs",
            "Pruning runs, by outcome (ok, failed)",
            retention_runs.clone(),
        );
        Self {
            registry,
            reports,
            edges_merged,
            tokens_issued,
            auth_failures,
            auth_throttled,
            secrets_rehashed,
            ingest_seconds,
            retention_edges_pruned,
            retention_reports_pruned,
            retention_runs,
        }
    }
}

impl Metrics {
    pub fn report(&self, outcome: &str) {
        self.reports.get_or_create(&Outcome { outcome: outcome.into() }).inc();
    }

    pub fn auth_failure(&self, method: &str) {
        self.auth_failures.get_or_create(&Method { method: method.into() }).inc();
    }

    pub fn throttled(&self, refusal: crate::limits::Refusal) {
        let reason = match refusal {
            crate::limits::Refusal::TooMany { .. } => "rate_limited",
            crate::limits::Refusal::Busy => "busy",
        };
        self.auth_throttled.get_or_create(&Reason { reason: reason.into() }).inc();
    }

    pub fn secret_rehashed(&self, method: &str) {
        self.secrets_rehashed.get_or_create(&Method { method: method.into() }).inc();
    }

    pub fn retention_run(&self, outcome: &str) {
        self.retention_runs.get_or_create(&Outcome { outcome: outcome.into() }).inc();
    }

    /// The answer to `GET /metrics` (OpenMetrics text).
    pub fn response(&self) -> axum::response::Response {
        self.registry.response()
    }
}
