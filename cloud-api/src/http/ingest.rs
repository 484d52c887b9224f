//! `POST /api/v1/reports`: a cluster's EdgeReport, JSON, optionally gzip-encoded.

use std::io::Read;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use model::{EdgeReport, ReportError};

use super::auth::ClusterAuth;
use super::error::ApiError;
use super::AppState;
use crate::store::IngestOutcome;

pub async fn ingest(
    State(state): State<AppState>,
    auth: ClusterAuth,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let started = Instant::now();
    let result = receive(&state, &headers, body).await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            state.metrics.report("rejected");
            tracing::warn!(org = %auth.org_id, cluster = %auth.cluster_id, error = %e, "report refused");
            return Err(e);
        }
    };
    let IngestOutcome { duplicate, edges_merged } = state.store.ingest(auth.org_id, auth.cluster_id, &report).await?;
    state.metrics.report(if duplicate { "duplicate" } else { "accepted" });
    state.metrics.edges_merged.inc_by(edges_merged as u64);
    state.metrics.ingest_seconds.observe(started.elapsed().as_secs_f64());
    tracing::info!(org = %auth.org_id, cluster = %auth.cluster_id, report_id = %report.report_id, duplicate, edges = edges_merged, "report ingested");
    let status = if duplicate { StatusCode::OK } else { StatusCode::ACCEPTED };
    Ok((status, Json(serde_json::json!({"report_id": report.report_id, "duplicate": duplicate, "edges_merged": edges_merged}))))
}

async fn receive(state: &AppState, headers: &HeaderMap, body: Body) -> Result<EdgeReport, ApiError> {
    let limit = state.config.max_body_bytes;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("application/json");
    if !content_type.starts_with("application/json") {
        return Err(ApiError::UnsupportedMediaType(format!("Content-Type {content_type:?} is not accepted; send application/json")));
    }
    let too_large = || ApiError::PayloadTooLarge(format!("the report is larger than {limit} bytes; send smaller reports"));
    if headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok()).is_some_and(|n| n > limit) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|e| {
        if is_length_limit(&e) {
            too_large()
        } else {
            ApiError::BadRequest(format!("could not read the request body: {e}"))
        }
    })?;
    let encoding = headers.get(header::CONTENT_ENCODING).and_then(|v| v.to_str().ok()).unwrap_or("identity");
    let json = match encoding.trim().to_ascii_lowercase().as_str() {
        "identity" | "" => bytes,
        "gzip" | "x-gzip" => gunzip(&bytes, state.config.max_decompressed_bytes)?,
        other => return Err(ApiError::UnsupportedMediaType(format!("Content-Encoding {other:?} is not accepted; send gzip or no encoding"))),
    };
    EdgeReport::from_json(&json).map_err(|e| match e {
        ReportError::Malformed(_) => ApiError::BadRequest(e.to_string()),
        _ => ApiError::Unprocessable(e.to_string()),
    })
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

/// Decompresses at most `limit` bytes, so a small bomb cannot become a large allocation.
fn gunzip(bytes: &[u8], limit: usize) -> Result<Bytes, ApiError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| ApiError::BadRequest(format!("the body is not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::PayloadTooLarge(format!("the report is larger than {limit} bytes once decompressed; send smaller reports")));
    }
    Ok(out.into())
}
