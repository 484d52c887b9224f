//! Cluster registration and lifecycle: reading takes an API token with `read`, changing one with `write`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::auth::{CanRead, CanWrite};
use super::error::ApiError;
use super::{cluster_of, AppState};
use crate::store::{ClusterCredentials, ClusterInfo, ClusterName};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCluster {
    name: String,
}

pub async fn create(
    State(state): State<AppState>,
    auth: CanWrite,
    body: Bytes,
) -> Result<(StatusCode, Json<ClusterCredentials>), ApiError> {
    let req: NewCluster = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("expected {{\"name\": \"<cluster name>\"}}: {e}"))
    })?;
    let name = ClusterName::new(req.name).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let creds = state.store.create_cluster(auth.org_id, &name).await?;
    tracing::info!(org = %auth.org_id, cluster = %creds.cluster_id, name = %creds.name, "cluster created");
    Ok((StatusCode::CREATED, Json(creds)))
}

pub async fn list(
    State(state): State<AppState>,
    auth: CanRead,
) -> Result<Json<Vec<ClusterInfo>>, ApiError> {
    Ok(Json(state.store.list_clusters(auth.org_id).await?))
}

pub async fn show(
    State(state): State<AppState>,
    auth: CanRead,
    Path(cluster): Path<String>,
) -> Result<Json<ClusterInfo>, ApiError> {
    Ok(Json(cluster_of(&state, auth.org_id, &cluster).await?))
}

pub async fn revoke(
    State(state): State<AppState>,
    auth: CanWrite,
    Path(cluster): Path<String>,
) -> Result<Json<ClusterInfo>, ApiError> {
    let c = cluster_of(&state, auth.org_id, &cluster).await?;
    state.store.revoke_cluster(auth.org_id, c.id).await?;
    tracing::info!(org = %auth.org_id, cluster = %c.id, "cluster credentials revoked");
    Ok(Json(cluster_of(&state, auth.org_id, &cluster).await?))
}

pub async fn delete(
    State(state): State<AppState>,
    auth: CanWrite,
    Path(cluster): Path<String>,
) -> Result<StatusCode, ApiError> {
    let c = cluster_of(&state, auth.org_id, &cluster).await?;
    state.store.delete_cluster(auth.org_id, c.id).await?;
    tracing::info!(org = %auth.org_id, cluster = %c.id, "cluster deleted");
    Ok(StatusCode::NO_CONTENT)
}
