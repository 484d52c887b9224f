//! The audit log (`GET /api/v1/audit`, an `admin` token) and the organisation's retention
//! (`GET /api/v1/retention` with `read`, `PUT` with `admin`).

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::auth::{CanAdmin, CanRead};
use super::error::ApiError;
use super::AppState;
use crate::store::{Actor, AuditEntry, RETENTION_DAYS};

/// The most entries one page returns.
pub const MAX_AUDIT_PAGE: i64 = 500;
const DEFAULT_AUDIT_PAGE: i64 = 100;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    limit: Option<i64>,
    before: Option<i64>,
}

/// A page of the audit log, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AuditPage {
    pub entries: Vec<AuditEntry>,
    /// Pass as `before=` for the next (older) page; `null` on the last page.
    pub next_before: Option<i64>,
}

/// The organisation's retention.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Retention {
    /// Edges not seen for this many days are deleted (1-3650; 90 unless changed).
    pub edge_retention_days: i32,
    /// Reports generated longer ago than this are refused; their ids are forgotten after it
    /// (a server setting, the same for every organisation).
    pub report_replay_window_days: u64,
}

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetentionUpdate {
    /// 1-3650.
    pub edge_retention_days: i32,
}

/// The organisation's audit log, newest first: who (which API token, or the admin CLI)
/// created, revoked or deleted clusters and tokens or changed retention, and when.
#[utoipa::path(get, path = "/api/v1/audit", tag = "audit", operation_id = "audit_log",
    security(("api_token" = ["admin"])),
    params(
        ("limit" = Option<i64>, Query, description = "Entries per page, 1-500 (default 100)", minimum = 1, maximum = 500),
        ("before" = Option<i64>, Query, description = "Only entries older than this id (the previous page's next_before)", minimum = 1),
    ),
    responses(
        (status = 200, description = "A page of entries, newest first", body = AuditPage),
        crate::openapi::BadRequest,
        crate::openapi::TokenRefusals,
    ))]
pub async fn list(
    State(state): State<AppState>,
    auth: CanAdmin,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
    let q = q.map(|Query(q)| q).map_err(|e| {
        ApiError::BadRequest(format!(
            "{}; parameters are limit=1-500 and before=<id>",
            e.body_text()
        ))
    })?;
    let limit = q.limit.unwrap_or(DEFAULT_AUDIT_PAGE);
    if !(1..=MAX_AUDIT_PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit={limit}: give 1-{MAX_AUDIT_PAGE}, and page on with before=<next_before>"
        )));
    }
    if q.before.is_some_and(|b| b < 1) {
        return Err(ApiError::BadRequest(
            "before must be a positive entry id (a page's next_before)".into(),
        ));
    }
    // One more than asked says whether an older page exists.
    let mut entries = state.store.audit_log(auth.org_id, q.before, limit + 1).await?;
    let more = entries.len() as i64 > limit;
    entries.truncate(limit as usize);
    let next_before = if more { entries.last().map(|e| e.id) } else { None };
    Ok(Json(AuditPage { entries, next_before }))
}

async fn current(state: &AppState, org: uuid::Uuid) -> Result<Retention, ApiError> {
    let days =
        state.store.retention_days(org).await?.ok_or_else(|| {
            ApiError::NotFound("this token's organisation no longer exists".into())
        })?;
    Ok(Retention {
        edge_retention_days: days,
        report_replay_window_days: state.config.retention.replay_window.as_secs() / 86_400,
    })
}

/// How long the organisation's data is kept.
#[utoipa::path(get, path = "/api/v1/retention", tag = "audit", operation_id = "retention",
    security(("api_token" = ["read"])),
    responses(
        (status = 200, description = "The retention", body = Retention),
        crate::openapi::NotFound,
        crate::openapi::TokenRefusals,
    ))]
pub async fn retention(
    State(state): State<AppState>,
    auth: CanRead,
) -> Result<Json<Retention>, ApiError> {
    Ok(Json(current(&state, auth.org_id).await?))
}

/// Sets how many days edges are kept after they were last seen; older ones are deleted by the
/// next pruning run. Recorded in the audit log.
#[utoipa::path(put, path = "/api/v1/retention", tag = "audit", operation_id = "set_retention",
    security(("api_token" = ["admin"])),
    request_body = RetentionUpdate,
    responses(
        (status = 200, description = "The retention now", body = Retention),
        crate::openapi::BadRequest,
        crate::openapi::NotFound,
        crate::openapi::Unprocessable,
        crate::openapi::TokenRefusals,
    ))]
pub async fn set_retention(
    State(state): State<AppState>,
    auth: CanAdmin,
    body: Bytes,
) -> Result<Json<Retention>, ApiError> {
    let req: RetentionUpdate = serde_json::from_slice(&body).map_err(|e| {
        ApiError::BadRequest(format!("expected {{\"edge_retention_days\": <1-3650>}}: {e}"))
    })?;
    if !RETENTION_DAYS.contains(&req.edge_retention_days) {
        return Err(ApiError::Unprocessable(format!(
            "edge_retention_days {} is out of range: give {}-{} days",
            req.edge_retention_days,
            RETENTION_DAYS.start(),
            RETENTION_DAYS.end()
        )));
    }
    let before = state
        .store
        .set_retention_days(auth.org_id, req.edge_retention_days, Actor::ApiToken(auth.token_id))
        .await?
        .ok_or_else(|| ApiError::NotFound("this token's organisation no longer exists".into()))?;
    tracing::info!(org = %auth.org_id, by = %auth.token_id, from = before, to = req.edge_retention_days, "retention changed");
    Ok(Json(current(&state, auth.org_id).await?))
}
