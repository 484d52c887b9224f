//! `POST /oauth/token` (RFC 6749 client-credentials grant) and the JWKS.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Deserialize;

use super::auth::Caller;
use super::AppState;
use crate::limits::Refusal;
use crate::secrets::{self, Check, Purpose};

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

/// The most a client ID can be: ours are `cl_` and 32 hex digits.
const MAX_CLIENT_ID: usize = 64;

fn refused(state: &AppState, r: Refusal, what: &str) -> Response {
    state.metrics.throttled(r);
    match r {
        Refusal::TooMany { retry_after } => {
            let mut res = oauth_error(
                StatusCode::TOO_MANY_REQUESTS,
                "slow_down",
                &format!("too many {what}; retry in {} s", retry_after.as_secs()),
            );
            res.headers_mut().insert(header::RETRY_AFTER, retry_after.as_secs().max(1).into());
            res
        }
        Refusal::Busy => {
            let mut res = oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "too many token requests are being checked; retry in a second",
            );
            res.headers_mut().insert(header::RETRY_AFTER, 1.into());
            res
        }
    }
}

/// OAuth2 client-credentials grant for clusters: form or JSON body, or HTTP Basic.
#[utoipa::path(post, path = "/oauth/token", tag = "ingest", operation_id = "oauth_token",
    request_body(content(
        (crate::openapi::TokenRequest = "application/x-www-form-urlencoded"),
        (crate::openapi::TokenRequest = "application/json"),
    )),
    responses(
        (status = 200, description = "A cluster access token", body = crate::openapi::AccessToken),
        (status = 400, description = "A malformed or unsupported request (RFC 6749)", body = crate::openapi::OAuthError),
        (status = 401, description = "Unknown client or wrong secret (RFC 6749 invalid_client)", body = crate::openapi::OAuthError),
        (status = 413, description = "The body is too large", body = crate::openapi::ErrorBody),
        (status = 415, description = "Neither a form nor JSON", body = crate::openapi::OAuthError),
        (status = 429, description = "Too many requests (slow_down); retry after Retry-After", body = crate::openapi::OAuthError),
        (status = 503, description = "Too many checks at once (temporarily_unavailable); retry after Retry-After", body = crate::openapi::OAuthError),
    ))]
pub async fn token(
    State(state): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // Before anything else, so a flood from one address costs a map look-up per request.
    if let Err(r) = state.guard.per_address.take(&caller.0) {
        return refused(&state, r, "token requests from this address");
    }
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let parsed: Result<TokenRequest, String> = if content_type.starts_with("application/json") {
        serde_json::from_slice(&body).map_err(|e| e.to_string())
    } else if content_type.starts_with("application/x-www-form-urlencoded")
        || content_type.is_empty()
    {
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
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                &format!("grant_type {other:?} is not supported; use client_credentials"),
            )
        }
        None => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                "grant_type is missing; use grant_type=client_credentials",
            )
        }
    }
    let (Some(client_id), Some(secret)) = (req.client_id, req.client_secret) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_id and client_secret are required (in the body or HTTP Basic auth)",
        );
    };
    let invalid = |client_id: Option<&String>| {
        state.metrics.auth_failure("client_credentials");
        if let Some(id) = client_id {
            state.guard.client_failures.charge(id);
        }
        oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "unknown client, wrong secret, or revoked cluster; check the cluster's credentials",
        )
    };
    if client_id.len() > MAX_CLIENT_ID || secret.len() > 256 {
        return invalid(None);
    }
    if let Err(r) = state.guard.client_failures.check(&client_id) {
        tracing::warn!(
            client_id,
            "token requests refused: too many failed attempts for this client ID"
        );
        return refused(&state, r, "failed attempts for this client ID");
    }
    let _permit = match state.guard.admit().await {
        Ok(permit) => permit,
        Err(r) => return refused(&state, r, "token requests"),
    };
    let found = match state.store.cluster_client(&client_id).await {
        Ok(found) => found,
        Err(e) => {
            tracing::error!(error = %e, "client look-up failed");
            return oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the database is unavailable; retry shortly",
            );
        }
    };
    // An unknown id costs the same HMAC as a known one with a wrong secret.
    let stale = match state.store.hasher().check(
        Purpose::ClusterSecret,
        &secret,
        found.as_ref().map(|(_, _, h)| h.as_str()),
    ) {
        Check::Matches { stale } => stale,
        Check::Mismatch => return invalid(Some(&client_id)),
        Check::Legacy => {
            let _slow = match state.guard.admit_legacy().await {
                Ok(permit) => permit,
                Err(r) => return refused(&state, r, "token requests"),
            };
            let (secret, hash) =
                (secret.clone(), found.as_ref().map(|(_, _, h)| h.clone()).unwrap_or_default());
            if !tokio::task::spawn_blocking(move || secrets::verify_legacy(&secret, &hash))
                .await
                .unwrap_or(false)
            {
                return invalid(Some(&client_id));
            }
            true
        }
    };
    let Some((org, cluster, hash)) = found else { return invalid(Some(&client_id)) };
    if stale {
        match state.store.rehash_cluster_secret(org, cluster, &hash, &secret).await {
            Ok(()) => state.metrics.secret_rehashed("client_secret"),
            Err(e) => {
                tracing::warn!(error = %e, %cluster, "could not store the client secret's new hash; it stays on the old one")
            }
        }
    }
    let (access_token, claims) = state.jwt.issue(org, cluster, chrono::Utc::now().timestamp());
    state.metrics.tokens_issued.inc();
    tracing::info!(org = %org, cluster = %cluster, jti = %claims.jti, "issued cluster access token");
    let body = Json(
        serde_json::json!({"access_token": access_token, "token_type": "Bearer", "expires_in": claims.exp - claims.iat}),
    );
    ([(header::CACHE_CONTROL, "no-store")], body).into_response()
}

/// The public keys cluster tokens are signed with.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "ingest", operation_id = "jwks",
    responses((status = 200, description = "A JWK set", body = crate::openapi::Jwks)))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "public, max-age=300")], Json(state.jwt.jwks()))
}
