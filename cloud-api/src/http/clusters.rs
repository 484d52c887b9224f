//! Cluster registration and lifecycle: reading takes an API token with `read`, changing one with `write`.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::auth::{CanRead, CanWrite};
use super::error::ApiError;
use super::{cluster_of, AppState};
use crate::store::{Actor, ClusterCredentials, ClusterInfo, ClusterName};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewCluster {
    name: String,
}

/// Registers a cluster; its client ID and secret are returned once.
#[utoipa::path(post, path = "/api/v1/clusters", tag = "clusters", operation_id = "create_cluster",
    security(("api_token" = ["write"])),
    request_body = crate::openapi::NewClusterBody,
    responses(
        (status = 201, description = "Registered; keep the secret, it is not shown again", body = ClusterCredentials),
        crate::openapi::BadRequest,
        (status = 409, description = "The name is taken", body = crate::openapi::ErrorBody),
        crate::openapi::Unprocessable,
        crate::openapi::TokenRefusals,
    ))]
pub async fn create(
    State(state): State<AppState>,
    auth: CanWrite,
    body: Bytes,
) -> Result<(StatusCode, Json<ClusterCredentials>), ApiError> {
    let req: NewCluster = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("expected {{\"name\": \"<cluster name>\"}}: {e}"))
    })?;
    let name = ClusterName::new(req.name).map_err(|e| ApiError::Unprocessable(e.to_string()))?;
    let creds =
        state.store.create_cluster_by(auth.org_id, &name, Actor::ApiToken(auth.token_id)).await?;
    tracing::info!(org = %auth.org_id, cluster = %creds.cluster_id, name = %creds.name, "cluster created");
    Ok((StatusCode::CREATED, Json(creds)))
}

/// The organisation's clusters.
#[utoipa::path(get, path = "/api/v1/clusters", tag = "clusters", operation_id = "list_clusters",
    security(("api_token" = ["read"])),
    responses(
        (status = 200, description = "The clusters", body = Vec<ClusterInfo>),
        crate::openapi::TokenRefusals,
    ))]
pub async fn list(
    State(state): State<AppState>,
    auth: CanRead,
) -> Result<Json<Vec<ClusterInfo>>, ApiError> {
    Ok(Json(state.store.list_clusters(auth.org_id).await?))
}

/// One cluster.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}", tag = "clusters", operation_id = "show_cluster",
    security(("api_token" = ["read"])),
    params(("cluster" = String, Path, description = "The cluster's id or name", example = "prod")),
    responses(
        (status = 200, description = "The cluster", body = ClusterInfo),
        crate::openapi::BadRequest,
        crate::openapi::NotFound,
        crate::openapi::TokenRefusals,
    ))]
pub async fn show(
    State(state): State<AppState>,
    auth: CanRead,
    Path(cluster): Path<String>,
) -> Result<Json<ClusterInfo>, ApiError> {
    Ok(Json(cluster_of(&state, auth.org_id, &cluster).await?))
}

/// Revokes the cluster's credentials; its tokens stop working at once.
#[utoipa::path(post, path = "/api/v1/clusters/{cluster}/revoke", tag = "clusters", operation_id = "revoke_cluster",
    security(("api_token" = ["write"])),
    params(("cluster" = String, Path, description = "The cluster's id or name")),
    responses(
        (status = 200, description = "Revoked", body = ClusterInfo),
        crate::openapi::BadRequest,
        crate::openapi::NotFound,
        crate::openapi::TokenRefusals,
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    auth: CanWrite,
    Path(cluster): Path<String>,
) -> Result<Json<ClusterInfo>, ApiError> {
    let c = cluster_of(&state, auth.org_id, &cluster).await?;
    state.store.revoke_cluster_by(auth.org_id, c.id, Actor::ApiToken(auth.token_id)).await?;
    tracing::info!(org = %auth.org_id, cluster = %c.id, "cluster credentials revoked");
    Ok(Json(cluster_of(&state, auth.org_id, &cluster).await?))
}

/// Deletes the cluster with all its data.
#[utoipa::path(delete, path = "/api/v1/clusters/{cluster}", tag = "clusters", operation_id = "delete_cluster",
    security(("api_token" = ["write"])),
    params(("cluster" = String, Path, description = "The cluster's id or name")),
    responses(
        (status = 204, description = "Deleted"),
        crate::openapi::BadRequest,
        crate::openapi::NotFound,
        crate::openapi::TokenRefusals,
    ))]
pub async fn delete(
    State(state): State<AppState>,
    auth: CanWrite,
    Path(cluster): Path<String>,
) -> Result<StatusCode, ApiError> {
    let c = cluster_of(&state, auth.org_id, &cluster).await?;
    state.store.delete_cluster_by(auth.org_id, c.id, Actor::ApiToken(auth.token_id)).await?;
    tracing::info!(org = %auth.org_id, cluster = %c.id, "cluster deleted");
    Ok(StatusCode::NO_CONTENT)
}
