//! API tokens: who am I (any token), and listing, creating and revoking the org's tokens (an
//! `admin` token). A revoked token is refused by the very next request on every replica: every
//! request checks the token in the database.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use uuid::Uuid;

use super::auth::{CanAdmin, CanRead};
use super::error::ApiError;
use super::AppState;
use crate::store::{Actor, ApiTokenInfo, NewApiToken};
use crate::tokens::Scope;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
    scopes: Vec<String>,
}

/// A token name: 1-200 characters, none of them control characters.
pub fn check_token_name(name: &str) -> Result<(), String> {
    if name.trim().is_empty() || name.chars().count() > 200 || name.chars().any(char::is_control) {
        return Err(format!(
            "token name {name:?} must be 1-200 characters without control characters"
        ));
    }
    Ok(())
}

/// Scopes from their names, each at most once.
pub fn parse_scopes(names: &[String]) -> Result<Vec<Scope>, String> {
    let mut scopes = Vec::new();
    for name in names {
        let scope = Scope::parse(name)
            .ok_or_else(|| format!("unknown scope {name:?}; scopes are read, write and admin"))?;
        if !scopes.contains(&scope) {
            scopes.push(scope);
        }
    }
    if scopes.is_empty() {
        return Err("give at least one scope: read, write or admin".into());
    }
    scopes.sort();
    Ok(scopes)
}

fn token_of(id: &str) -> Result<Uuid, ApiError> {
    Uuid::try_parse(id).map_err(|_| not_found(id))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no API token {id:?} in this organisation; GET /api/v1/tokens lists them"
    ))
}

/// The caller's organisation and token: what the web page shows before it signs in with a link.
#[utoipa::path(get, path = "/api/v1/whoami", tag = "tokens", operation_id = "whoami",
    security(("api_token" = ["read"])),
    responses(
        (status = 200, description = "The token's organisation and the token", body = crate::openapi::WhoAmI),
        crate::openapi::NotFound,
        crate::openapi::TokenRefusals,
    ))]
pub async fn whoami(
    State(state): State<AppState>,
    auth: CanRead,
) -> Result<Json<serde_json::Value>, ApiError> {
    let org_name =
        state.store.org_name(auth.org_id).await?.ok_or_else(|| {
            ApiError::NotFound("this token's organisation no longer exists".into())
        })?;
    let token = state
        .store
        .find_api_token(auth.org_id, auth.token_id)
        .await?
        .ok_or_else(|| not_found(&auth.token_id.to_string()))?;
    Ok(Json(serde_json::json!({"org_id": auth.org_id, "org_name": org_name, "token": token})))
}

/// The organisation's API tokens, never their secrets.
#[utoipa::path(get, path = "/api/v1/tokens", tag = "tokens", operation_id = "list_tokens",
    security(("api_token" = ["admin"])),
    responses(
        (status = 200, description = "The tokens", body = Vec<ApiTokenInfo>),
        crate::openapi::TokenRefusals,
    ))]
pub async fn list(
    State(state): State<AppState>,
    auth: CanAdmin,
) -> Result<Json<Vec<ApiTokenInfo>>, ApiError> {
    Ok(Json(state.store.list_api_tokens(auth.org_id).await?))
}

/// A new API token, returned once in `token`.
#[utoipa::path(post, path = "/api/v1/tokens", tag = "tokens", operation_id = "create_token",
    security(("api_token" = ["admin"])),
    request_body = crate::openapi::NewTokenBody,
    responses(
        (status = 201, description = "Created; keep `token`, it is not shown again", body = NewApiToken),
        crate::openapi::BadRequest,
        crate::openapi::Unprocessable,
        crate::openapi::TokenRefusals,
    ))]
pub async fn create(
    State(state): State<AppState>,
    auth: CanAdmin,
    body: Bytes,
) -> Result<(StatusCode, Json<NewApiToken>), ApiError> {
    let req: NewToken = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!(
            "expected {{\"name\": \"<token name>\", \"scopes\": [\"read\"]}}: {e}"
        ))
    })?;
    check_token_name(&req.name).map_err(ApiError::Unprocessable)?;
    let scopes = parse_scopes(&req.scopes).map_err(ApiError::Unprocessable)?;
    let token = state
        .store
        .create_api_token_by(auth.org_id, &req.name, &scopes, Actor::ApiToken(auth.token_id))
        .await?;
    tracing::info!(org = %auth.org_id, token = %token.info.id, by = %auth.token_id, scopes = ?req.scopes, "API token created");
    Ok((StatusCode::CREATED, Json(token)))
}

/// One API token.
#[utoipa::path(get, path = "/api/v1/tokens/{token}", tag = "tokens", operation_id = "show_token",
    security(("api_token" = ["admin"])),
    params(("token" = String, Path, description = "The API token's id")),
    responses(
        (status = 200, description = "The token", body = ApiTokenInfo),
        crate::openapi::BadRequest,
        crate::openapi::NotFound,
        crate::openapi::TokenRefusals,
    ))]
pub async fn show(
    State(state): State<AppState>,
    auth: CanAdmin,
    Path(id): Path<String>,
) -> Result<Json<ApiTokenInfo>, ApiError> {
    let token = token_of(&id)?;
    Ok(Json(state.store.find_api_token(auth.org_id, token).await?.ok_or_else(|| not_found(&id))?))
}

/// Revokes an API token: refused from its next request on, on every replica.
#[utoipa::path(post, path = "/api/v1/tokens/{token}/revoke", tag = "tokens", operation_id = "revoke_token",
    security(("api_token" = ["admin"])),
    params(("token" = String, Path, description = "The API token's id")),
    responses(
        (status = 200, description = "Revoked", body = ApiTokenInfo),
        crate::openapi::BadRequest,
        crate::openapi::NotFound,
        crate::openapi::TokenRefusals,
    ))]
pub async fn revoke(
    State(state): State<AppState>,
    auth: CanAdmin,
    Path(id): Path<String>,
) -> Result<Json<ApiTokenInfo>, ApiError> {
    let token = token_of(&id)?;
    let revoked = state
        .store
        .revoke_api_token_by(auth.org_id, token, Actor::ApiToken(auth.token_id))
        .await?
        .ok_or_else(|| not_found(&id))?;
    tracing::info!(org = %auth.org_id, token = %token, by = %auth.token_id, "API token revoked");
    Ok(Json(revoked))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_names_are_checked() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            parse_scopes(&names(&["write", "read", "write"])).unwrap(),
            vec![Scope::Read, Scope::Write]
        );
        assert!(parse_scopes(&names(&["root"])).unwrap_err().contains("read, write and admin"));
        assert!(parse_scopes(&[]).is_err());
        assert!(check_token_name("ci deploys").is_ok());
        assert!(check_token_name(" ").is_err());
        assert!(check_token_name("a\nb").is_err());
        assert!(check_token_name(&"x".repeat(201)).is_err());
    }
}
