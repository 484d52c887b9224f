//! The mapper's local API (`:9090`): observations in from node agents and `aws-proxy`; edges
//! out to the `intentmap` CLI; health and metrics. Who may do what is [`super::auth`]'s; every
//! request is authenticated from its headers before any of its body is read.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mapper_core::{EdgeFilter, LabelSelector, Reporter, ServerSelector};
use model::observation::ObservationBatch;
use serde::Deserialize;

use super::auth::{ApiAuth, AuthError, Observer, PeopleVerb};
use super::telemetry::Telemetry;
use super::upload::UploadStats;
use super::SharedMapper;

pub struct ApiState {
    pub mapper: SharedMapper,
    pub auth: ApiAuth,
    /// Every counter of the watchers (`/readyz`, `/metrics`).
    pub telemetry: Arc<Telemetry>,
    pub upload: Option<Arc<UploadStats>>,
}

/// Largest observation batch accepted.
pub const MAX_BATCH_BYTES: usize = 8 << 20;

pub fn router(state: Arc<ApiState>) -> Router {
    Router::new()
        .route("/v1/observations", post(observations))
        .route("/v1/edges", get(edges))
        .route("/v1/reset", post(reset))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(super::metrics::metrics))
        .with_state(state)
}

/// Every refusal of the local API: 4xx with a message a caller can act on, or 503 to retry.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("an observation batch is at most {MAX_BATCH_BYTES} bytes; send smaller batches")]
    TooLarge,
    #[error("{0}")]
    BadRequest(String),
    #[error("the mapper does not know pod {uid} of {user} (yet); retry")]
    UnknownPod { user: String, uid: String },
    #[error("not ready: {0}")]
    NotReady(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Auth(e) => return e.clone().into_response(),
            ApiError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::UnknownPod { .. } | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        (status, Json(serde_json::json!({"error": self.to_string()}))).into_response()
    }
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// The peer, when the server was started with connection info (`serve` does).
fn peer(request: &Parts) -> Option<SocketAddr> {
    request.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0)
}

/// Which node (if any) an observer's lines are bound to, resolved through the index for
/// tokens that name only their pod (Kubernetes before 1.30).
/// The node a node agent's lines are bound to: the one its token names, else (Kubernetes
/// before 1.30) the node of the pod its token is bound to, as the index knows it.
fn reporter_node(state: &ApiState, observer: &Observer) -> Result<Option<String>, ApiError> {
    let Observer::Node { user, node, pod_uid } = observer else { return Ok(None) };
    if let Some(node) = node {
        return Ok(Some(node.clone()));
    }
    let uid = pod_uid.clone().unwrap_or_default();
    match state.mapper.lock().index.pod_node_by_uid(&uid) {
        Some(node) => Ok(Some(node.to_string())),
        None => {
            tracing::info!(%user, pod_uid = %uid, "a node agent's pod is not in the index (yet)");
            Err(ApiError::UnknownPod { user: user.clone(), uid })
        }
    }
}

async fn read_body(body: Body, headers: &HeaderMap) -> Result<axum::body::Bytes, ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BATCH_BYTES as u64) {
        return Err(ApiError::TooLarge);
    }
    axum::body::to_bytes(body, MAX_BATCH_BYTES).await.map_err(|_| ApiError::TooLarge)
}

async fn observations(
    State(state): State<Arc<ApiState>>,
    request: Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let observer = state.auth.observer(authorization(&parts.headers)).await?;
    let node = reporter_node(&state, &observer)?;
    let body = read_body(body, &parts.headers).await?;
    let batch: ObservationBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("not an observation batch: {e}")))?;
    let reporter = match (&observer, &node) {
        (Observer::Shared, _) => Reporter::Anyone,
        (Observer::Node { .. }, Some(node)) => Reporter::Node(node),
        (Observer::Node { user, .. }, None) => return Err(AuthError::Unbound(user.clone()).into()),
        (Observer::Aws { .. }, _) => Reporter::AwsCalls,
    };
    let (tcp, dns, aws) = (batch.tcp.len(), batch.dns.len(), batch.aws.len());
    let refused = {
        let mut mapper = state.mapper.lock();
        let before = mapper.stats();
        mapper.observe_as(&batch, reporter, chrono::Utc::now());
        let after = mapper.stats();
        after.foreign_clients.saturating_sub(before.foreign_clients).saturating_add(
            after.unpermitted_observations.saturating_sub(before.unpermitted_observations),
        )
    };
    if refused > 0 {
        tracing::debug!(
            ?observer,
            refused,
            "observations about clients the sender does not speak for were refused"
        );
    }
    tracing::debug!(source = batch.source.as_deref().unwrap_or("-"), tcp, dns, aws, "observations");
    Ok((
        StatusCode::ACCEPTED,
        Json(serde_json::json!({"tcp": tcp, "dns": dns, "aws": aws, "refused": refused})),
    )
        .into_response())
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
    /// A label key (`intentmap --distinct-by-label`): the answer becomes `{"edges": [...],
    /// "workloads": [...]}`, each client workload with the values of this label on its pods.
    label_values: Option<String>,
    /// `true` (`intentmap --as-kubernetes-service`): the answer becomes `{"edges", "workloads"}`,
    /// each in-cluster target workload with the Services in front of it.
    services: Option<bool>,
}

fn parse_filter(q: EdgeQuery) -> Result<EdgeFilter, String> {
    let list = |s: Option<String>| {
        s.map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .unwrap_or_default()
    };
    let server =
        q.server.map(|s| s.parse::<ServerSelector>().map_err(|e| e.to_string())).transpose()?;
    let exclude_labels = list(q.exclude_labels)
        .iter()
        .map(|l| l.parse::<LabelSelector>().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    Ok(EdgeFilter { namespaces: list(q.namespaces), server, exclude_labels })
}

async fn person(state: &ApiState, request: &Parts, verb: PeopleVerb) -> Result<String, AuthError> {
    state.auth.person(peer(request), authorization(&request.headers), verb).await
}

async fn edges(State(state): State<Arc<ApiState>>, request: Request) -> Result<Response, ApiError> {
    let (request, _) = request.into_parts();
    person(&state, &request, PeopleVerb::Read).await?;
    let Query(mut query) = Query::<EdgeQuery>::try_from_uri(&request.uri)
        .map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (label, services) = (query.label_values.take(), query.services.take().unwrap_or(false));
    if let Some(key) = label.as_deref().filter(|k| !mapper_core::filter::is_label_key(k)) {
        return Err(ApiError::BadRequest(format!(
            "label_values={:?} is not a label key: give [prefix/]name, e.g. app.kubernetes.io/version",
            key.chars().take(80).collect::<String>()
        )));
    }
    let filter = parse_filter(query).map_err(ApiError::BadRequest)?;
    let mapper = state.mapper.lock();
    let edges = filter.apply(&mapper.snapshot(), &mapper.index);
    let facts = (label.is_some() || services).then(|| {
        mapper_core::filter::workload_facts(&edges, &mapper.index, label.as_deref(), services)
    });
    drop(mapper);
    let Some(facts) = facts else { return Ok(Json(edges).into_response()) };
    let workloads: Vec<serde_json::Value> = facts
        .into_iter()
        .map(|f| {
            serde_json::json!({"namespace": f.namespace, "name": f.name, "label_values": f.label_values,
                "more_label_values": f.more_label_values, "services": f.services})
        })
        .collect();
    Ok(Json(serde_json::json!({"edges": edges, "workloads": workloads})).into_response())
}

async fn reset(
    State(state): State<Arc<ApiState>>,
    request: Request,
) -> Result<StatusCode, ApiError> {
    let (request, _) = request.into_parts();
    let who = person(&state, &request, PeopleVerb::Reset).await?;
    state.mapper.lock().reset();
    tracing::info!(%who, "edges reset on request");
    Ok(StatusCode::NO_CONTENT)
}

async fn readyz(State(state): State<Arc<ApiState>>) -> Result<&'static str, ApiError> {
    match state.telemetry.not_ready() {
        None => Ok("ready"),
        Some(why) => Err(ApiError::NotReady(why)),
    }
}
