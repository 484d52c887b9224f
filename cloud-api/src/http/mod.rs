//! Routes. `app(state)` is the whole HTTP surface; tests drive it without a socket.

pub mod api_tokens;
pub mod audit;
pub mod auth;
pub mod changes;
pub mod clusters;
pub mod error;
pub mod graph;
pub mod ingest;
pub mod oauth;
mod paging;
pub mod web;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::routing::{get, post};
use axum::Router;
use tower_http::trace::TraceLayer;
use uuid::Uuid;

use self::error::ApiError;
use crate::limits::AuthGuard;
use crate::metrics::Metrics;
use crate::store::{ClusterInfo, ReadLimits, Store};
use crate::tokens::JwtIssuer;

#[derive(Debug, Clone)]
pub struct Config {
    /// Largest request body accepted, as sent (compressed or not).
    pub max_body_bytes: usize,
    /// Largest report accepted once decompressed.
    pub max_decompressed_bytes: usize,
    /// Reports worked on at once, in all and per organisation.
    pub ingest: ingest::IngestLimits,
    /// Retention pruning and the report replay window.
    pub retention: crate::retention::RetentionConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 << 20,
            max_decompressed_bytes: 64 << 20,
            ingest: Default::default(),
            retention: Default::default(),
        }
    }
}

pub struct Shared {
    pub store: Store,
    pub jwt: JwtIssuer,
    pub metrics: Metrics,
    pub config: Config,
    /// Rate limits and concurrency caps on credential checks.
    pub guard: AuthGuard,
    /// Bounds on graph and ClientIntents reads.
    pub reads: ReadLimits,
    /// Caps on reports being ingested at once.
    pub ingest_gate: ingest::IngestGate,
}

pub type AppState = Arc<Shared>;

pub fn app(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(crate::openapi::healthz))
        .route("/api/v1/openapi.json", get(crate::openapi::openapi_json))
        .route("/readyz", get(readyz))
        .route("/.well-known/jwks.json", get(oauth::jwks))
        .route("/oauth/token", post(oauth::token))
        .route("/api/v1/reports", post(ingest::ingest).layer(DefaultBodyLimit::disable()))
        .route("/api/v1/clusters", post(clusters::create).get(clusters::list))
        .route("/api/v1/clusters/{cluster}", get(clusters::show).delete(clusters::delete))
        .route("/api/v1/clusters/{cluster}/revoke", post(clusters::revoke))
        .route("/api/v1/clusters/{cluster}/client-intents", get(graph::client_intents))
        .route("/api/v1/access-graph", get(graph::access_graph))
        .route("/api/v1/access-graph/summary", get(graph::access_graph_summary))
        .route("/api/v1/whoami", get(api_tokens::whoami))
        .route("/api/v1/tokens", get(api_tokens::list).post(api_tokens::create))
        .route("/api/v1/tokens/{token}", get(api_tokens::show))
        .route("/api/v1/tokens/{token}/revoke", post(api_tokens::revoke))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/retention", get(audit::retention).put(audit::set_retention))
        .merge(web::routes())
        .fallback(|| async {
            ApiError::NotFound("no such endpoint; see the API section of README.md".into())
        })
        .layer(DefaultBodyLimit::max(1 << 20))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Readiness: the database answers.
#[utoipa::path(get, path = "/readyz", tag = "meta", operation_id = "readyz",
    responses(
        (status = 200, description = "Ready", body = String, content_type = "text/plain"),
        (status = 503, description = "The database is unreachable", body = crate::openapi::ErrorBody),
    ))]
async fn readyz(State(state): State<AppState>) -> Result<&'static str, ApiError> {
    state.store.ping().await.map_err(|e| {
        tracing::warn!(error = %e, "database unreachable");
        ApiError::Unavailable("the database is unreachable".into())
    })?;
    Ok("ready")
}

/// `/metrics` alone, for the `--metrics-listen` address: the counters span every organisation.
pub fn metrics_app(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::NotFound("this address serves /metrics only".into()) })
        .with_state(state)
}

async fn metrics(State(state): State<AppState>) -> axum::response::Response {
    state.metrics.response()
}

/// The caller's cluster by id or name; another organisation's cluster is "not found", never "forbidden".
pub(crate) async fn cluster_of(
    state: &AppState,
    org: Uuid,
    id_or_name: &str,
) -> Result<ClusterInfo, ApiError> {
    state.store.find_cluster(org, id_or_name).await?.ok_or_else(|| {
        ApiError::NotFound(format!(
            "no cluster {id_or_name:?} in this organisation; GET /api/v1/clusters lists them"
        ))
    })
}
