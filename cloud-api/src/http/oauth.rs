//! `POST /oauth/token` (RFC 6749 client-credentials grant) and the JWKS.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;

use super::AppState;
use crate::tokens;

#[derive(Debug, Default, Deserialize)]
struct TokenRequest {
    grant_type: Option<String>,
    client_id: Option<String>,
    client_secret: Option<String>,
    #[allow(dead_code)]
    scope: Option<String>,
}

/// OAuth errors have their own shape (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let body = Json(serde_json::json!({"error": error, "error_description": description}));
    (status, [(header::CACHE_CONTROL, "no-store")], body).into_response()
}

fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD.decode(b64.trim()).ok()?;
    let (id, secret) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
    Some((id.to_owned(), secret.to_owned()))
}

pub async fn token(State(state): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let parsed: Result<TokenRequest, String> = if content_type.starts_with("application/json") {
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    } else if content_type.starts_with("application/x-www-form-urlencoded") || content_type.is_empty() {
        serde_urlencoded::from_bytes(&body).map_err(|e| e.to_string())
    } else {
        Err(format!("unsupported Content-Type {content_type:?}; send application/x-www-form-urlencoded or application/json"))
    };
    let mut req = match parsed {
        Ok(r) => r,
        Err(e) => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &e),
    };
    if let Some((id, secret)) = basic_credentials(&headers) {
        req.client_id = Some(id);
        req.client_secret = Some(secret);
    }
    match req.grant_type.as_deref() {
        Some("client_credentials") => {}
        Some(other) => {
            return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", &format!("grant_type {other:?} is not supported; use client_credentials"))
        }
        None => return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "grant_type is missing; use grant_type=client_credentials"),
    }
    let (Some(client_id), Some(secret)) = (req.client_id, req.client_secret) else {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "client_id and client_secret are required (in the body or HTTP Basic auth)");
    };
    let invalid = || {
        state.metrics.auth_failure("client_credentials");
        oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client, wrong secret, or revoked cluster; check the cluster's credentials")
    };
    let found = match state.store.cluster_client(&client_id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "client look-up failed");
            return oauth_error(StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable", "the database is unavailable; retry shortly");
        }
    };
    let Some((org, cluster, hash)) = found else {
        // Same work as a real check, so that timing does not tell which client ids exist.
        let _ = tokio::task::spawn_blocking(move || tokens::verify_secret(&secret, tokens::dummy_hash())).await;
        return invalid();
    };
    let ok = tokio::task::spawn_blocking(move || tokens::verify_secret(&secret, &hash)).await.unwrap_or(false);
    if !ok {
        return invalid();
    }
    let (access_token, claims) = state.jwt.issue(org, cluster, chrono::Utc::now().timestamp());
    state.metrics.tokens_issued.inc();
    tracing::info!(org = %org, cluster = %cluster, jti = %claims.jti, "issued cluster access token");
    let body = Json(serde_json::json!({"access_token": access_token, "token_type": "Bearer", "expires_in": claims.exp - claims.iat}));
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(state.jwt.jwks()))
}
