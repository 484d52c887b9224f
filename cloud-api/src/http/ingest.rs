//! `POST /api/v1/reports`: a cluster's EdgeReport, JSON, optionally gzip-encoded.
//!
//! A report is taken on only when its organisation and the server have a free slot ([`gate`]);
//! its body is read, then decompressed and parsed on a blocking thread ([`decode`]), refusing
//! it at the first list past its limit; the merge into the database saturates counts, and a
//! value the database cannot store is a 422 naming the problem, never a 500.

pub mod decode;
pub mod gate;

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use chrono::Utc;
use model::EdgeReport;

pub use self::gate::{IngestArgs, IngestGate, IngestLimits};
use super::auth::ClusterAuth;
use super::error::ApiError;
use super::AppState;
use crate::store::IngestOutcome;

/// What a refused report is told to wait before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How long a report's body may take to arrive: it holds an ingest slot meanwhile, so a sender
/// trickling bytes must not keep it for ever.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(60);

/// Ingests a cluster's `EdgeReport` (`Content-Encoding: gzip` accepted), once per report id.
#[utoipa::path(post, path = "/api/v1/reports", tag = "ingest", operation_id = "ingest_report",
    security(("cluster_jwt" = [])),
    request_body = crate::openapi::EdgeReportBody,
    responses(
        (status = 202, description = "Applied", body = crate::openapi::IngestResult),
        (status = 200, description = "This report id was applied before: nothing changed", body = crate::openapi::IngestResult),
        (status = 400, description = "Not a report; the error says what to fix", body = crate::openapi::ErrorBody),
        (status = 401, description = "No cluster token, or an invalid, expired or revoked one", body = crate::openapi::ErrorBody),
        (status = 403, description = "Not a cluster token", body = crate::openapi::ErrorBody),
        (status = 404, description = "The cluster no longer exists", body = crate::openapi::ErrorBody),
        (status = 408, description = "The body did not arrive in time", body = crate::openapi::ErrorBody),
        (status = 413, description = "Over a size or count limit", body = crate::openapi::ErrorBody),
        (status = 415, description = "Not JSON", body = crate::openapi::ErrorBody),
        (status = 422, description = "A field breaks a rule; the error names it", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many reports in flight or failed credential checks; retry after Retry-After", body = crate::openapi::ErrorBody),
        (status = 503, description = "Busy; retry later", body = crate::openapi::ErrorBody),
    ))]
pub async fn ingest(
    State(state): State<AppState>,
    auth: ClusterAuth,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let started = Instant::now();
    // Before the body is read: a report waiting for a slot costs a socket, not its body.
    let _admitted = state.ingest_gate.admit(auth.org_id).await.map_err(|refusal| {
        let limits = state.ingest_gate.limits();
        match refusal {
            gate::Refusal::OrgBusy(n) => {
                state.metrics.report("throttled");
                ApiError::TooManyRequests(
                    format!("this organisation already has {n} reports being ingested (at most {}); retry later", limits.concurrent_per_org),
                    RETRY_AFTER,
                )
            }
            gate::Refusal::Busy => {
                state.metrics.report("overloaded");
                tracing::warn!(org = %auth.org_id, concurrent = limits.concurrent, "every ingest slot stayed busy; answering 503");
                ApiError::Unavailable("the cloud is busy ingesting other reports; retry later".into())
            }
        }
    })?;
    let report = match receive(&state, &headers, body).await {
        Ok(r) => r,
        Err(e) => {
            state.metrics.report("rejected");
            tracing::warn!(org = %auth.org_id, cluster = %auth.cluster_id, error = %e, "report refused");
            return Err(e);
        }
    };
    if state.config.retention.too_old(report.generated_at, Utc::now()) {
        state.metrics.report("rejected");
        let days = state.config.retention.replay_window.as_secs() / 86_400;
        tracing::warn!(org = %auth.org_id, cluster = %auth.cluster_id, report_id = %report.report_id, generated_at = %report.generated_at, "report older than the replay window refused");
        return Err(ApiError::Unprocessable(format!(
            "generated_at: {} is older than the replay window ({days} days): ids of reports this old are no longer remembered, so it could be applied twice; send a fresh report of the current edges",
            report.generated_at.to_rfc3339()
        )));
    }
    let IngestOutcome { duplicate, edges_merged } = state.store.ingest(auth.org_id, auth.cluster_id, &report).await.map_err(|e| {
        let e = ApiError::from(e);
        if !matches!(e, ApiError::Internal(_)) {
            state.metrics.report("rejected");
            tracing::warn!(org = %auth.org_id, cluster = %auth.cluster_id, report_id = %report.report_id, error = %e, "report refused by the database");
        }
        e
    })?;
    state.metrics.report(if duplicate { "duplicate" } else { "accepted" });
    state.metrics.edges_merged.inc_by(edges_merged as u64);
    state.metrics.ingest_seconds.observe(started.elapsed().as_secs_f64());
    tracing::info!(org = %auth.org_id, cluster = %auth.cluster_id, report_id = %report.report_id, duplicate, edges = edges_merged, "report ingested");
    let status = if duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((
        status,
        Json(
            serde_json::json!({"report_id": report.report_id, "duplicate": duplicate, "edges_merged": edges_merged}),
        ),
    ))
}

async fn receive(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<EdgeReport, ApiError> {
    let limit = state.config.max_body_bytes;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    if !content_type.starts_with("application/json") {
        return Err(ApiError::UnsupportedMediaType(format!(
            "Content-Type {content_type:?} is not accepted; send application/json"
        )));
    }
    let encoding =
        headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let encoding = match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => decode::Encoding::Identity,
        "gzip" | "x-gzip" => decode::Encoding::Gzip,
        other => {
            return Err(ApiError::UnsupportedMediaType(format!(
                "Content-Encoding {other:?} is not accepted; send gzip or no encoding"
            )))
        }
    };
    let too_large = || {
        ApiError::PayloadTooLarge(format!(
            "the report is larger than {limit} bytes; send smaller reports"
        ))
    };
    if headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large());
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit))
        .await
        .map_err(|_| {
            ApiError::RequestTimeout(format!(
                "the report did not arrive within {} s; send it again",
                BODY_TIMEOUT.as_secs()
            ))
        })?;
    let bytes = read.map_err(|e| {
        if is_length_limit(&e) {
            too_large()
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    })?;
    let max_decompressed = state.config.max_decompressed_bytes;
    let now = Utc::now();
    tokio::task::spawn_blocking(move || decode::decode(&bytes, encoding, max_decompressed, now))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("the report's parser stopped: {e}")))?
}

fn is_length_limit(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = err.source();
    }
    false
}
