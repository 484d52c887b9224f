//! The API's one error type. 4xx say what to do; 5xx are logged and hidden.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    /// The caller's own organisation, but the token's scopes do not allow it.
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    /// 408: the body did not arrive in time.
    #[error("{0}")]
    RequestTimeout(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    Unprocessable(String),
    #[error("{0}")]
    Unavailable(String),
    /// 429 with `Retry-After`.
    #[error("{0}")]
    TooManyRequests(String, std::time::Duration),
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::RequestTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::TooManyRequests(..) => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NameTaken { .. } => ApiError::Conflict(
                "that name is already taken in this organisation; choose another".into(),
            ),
            StoreError::ClusterGone => ApiError::NotFound("the cluster no longer exists".into()),
            // It would fail again on every retry: the sender has to change the report.
            StoreError::Unstorable { code, message } => ApiError::Unprocessable(format!(
                "the database cannot store a value in this report ({message}, SQLSTATE {code}); the report was not applied: fix or drop it, retrying will not help"
            )),
            StoreError::Database(e) => ApiError::Internal(e.into()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = format!("{e:#}"), "request failed");
        }
        let body = Json(serde_json::json!({"error": self.to_string(), "status": status.as_u16()}));
        if status == StatusCode::UNAUTHORIZED {
            return (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response();
        }
        if let ApiError::TooManyRequests(_, retry_after) = &self {
            return (
                status,
                [(header::RETRY_AFTER, retry_after.as_secs().max(1).to_string())],
                body,
            )
                .into_response();
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            return (status, [(header::RETRY_AFTER, "1".to_owned())], body).into_response();
        }
        (status, body).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_errors_keep_their_statuses_and_messages() {
        let cases = [
            (
                StoreError::NameTaken { constraint: Some("clusters_org_id_name_key".into()) },
                StatusCode::CONFLICT,
                "that name is already taken in this organisation; choose another".to_owned(),
            ),
            (
                StoreError::ClusterGone,
                StatusCode::NOT_FOUND,
                "the cluster no longer exists".to_owned(),
            ),
            (
                StoreError::Unstorable { code: "22021".into(), message: "invalid byte".into() },
                StatusCode::UNPROCESSABLE_ENTITY,
                "the database cannot store a value in this report (invalid byte, SQLSTATE 22021); the report was not applied: fix or drop it, retrying will not help".to_owned(),
            ),
            (
                StoreError::Database(sqlx::Error::PoolTimedOut),
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal error".to_owned(),
            ),
        ];
        for (store, status, message) in cases {
            let api = ApiError::from(store);
            assert_eq!((api.status(), api.to_string()), (status, message));
        }
    }
}
