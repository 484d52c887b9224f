//! Cluster registration and lifecycle: reading takes an API token with `read`, changing one with `write`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::auth::{CanRead, CanWrite};
use super::error::ApiError;
use super::{cluster_of, AppState};
use crate::store::{ClusterCredentials, ClusterInfo};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCluster {
    name: String,
}

/// Cluster names are DNS labels: they appear in node ids, URLs and file names.
pub fn check_cluster_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if ok {
        Ok(())
    } else {
        Err(format!("cluster name {name:?} must be 1-63 lowercase letters, digits or '-', not starting or ending with '-'"))
    }
}

pub async fn create(
    State(state): State<AppState>,
    auth: CanWrite,
    body: Bytes,
) -> Result<(StatusCode, Json<ClusterCredentials>), ApiError> {
    let req: NewCluster = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("expected {{\"name\": \"<cluster name>\"}}: {e}"))
    })?;
    check_cluster_name(&req.name).map_err(ApiError::Unprocessable)?;
    let creds = state.store.create_cluster(auth.org_id, &req.name).await?;
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
