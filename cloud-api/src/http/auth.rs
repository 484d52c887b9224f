//! Who is calling: people and scripts with an org API token, clusters with a JWT.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::tokens::{self, TokenError};

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value =
        parts.headers.get(AUTHORIZATION).ok_or_else(|| ApiError::Unauthorized("missing Authorization header; send `Authorization: Bearer <token>`".into()))?;
    let value = value.to_str().map_err(|_| ApiError::Unauthorized("the Authorization header is not valid text".into()))?;
    let (scheme, token) = value.split_once(' ').ok_or_else(|| ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into()));
    }
    Ok(token.trim())
}

/// A caller holding an organisation's API token.
#[derive(Debug, Clone, Copy)]
pub struct OrgAuth {
    pub org_id: Uuid,
}

impl FromRequestParts<AppState> for OrgAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        let invalid = || {
            state.metrics.auth_failure("api_token");
            ApiError::Unauthorized("invalid or revoked API token; create one with `cloud-api admin create-org` or ask an org admin".into())
        };
        if let Some((org_id, _)) = state.token_cache.get(token) {
            return Ok(OrgAuth { org_id });
        }
        let (token_id, secret) = tokens::parse_api_token(token).ok_or_else(invalid)?;
        let (org_id, hash) = state.store.api_token(token_id).await?.ok_or_else(invalid)?;
        let secret = secret.to_owned();
        let ok = tokio::task::spawn_blocking(move || tokens::verify_secret(&secret, &hash)).await.map_err(|e| ApiError::Internal(e.into()))?;
        if !ok {
            return Err(invalid());
        }
        state.token_cache.insert(token, org_id, token_id);
        Ok(OrgAuth { org_id })
    }
}

/// A cluster agent holding a JWT from `/oauth/token`.
#[derive(Debug, Clone, Copy)]
pub struct ClusterAuth {
    pub org_id: Uuid,
    pub cluster_id: Uuid,
}

impl FromRequestParts<AppState> for ClusterAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if token.starts_with("imt_") {
            state.metrics.auth_failure("jwt");
            return Err(ApiError::Unauthorized("this endpoint takes a cluster access token from POST /oauth/token, not an API token".into()));
        }
        let claims = state.jwt.verify(token).map_err(|e| {
            state.metrics.auth_failure("jwt");
            match e {
                TokenError::Expired => ApiError::Unauthorized(e.to_string()),
                other => ApiError::Unauthorized(format!("{other}; request a new token from /oauth/token")),
            }
        })?;
        if !state.store.cluster_is_active(claims.org, claims.cluster).await? {
            state.metrics.auth_failure("jwt");
            return Err(ApiError::Unauthorized("this cluster's credentials were revoked or the cluster was deleted".into()));
        }
        Ok(ClusterAuth { org_id: claims.org, cluster_id: claims.cluster })
    }
}
