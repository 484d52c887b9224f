//! Reads: the merged access graph and per-cluster ClientIntents, bounded in edges
//! (`--graph-max-edges`) and time (`--read-timeout-seconds`).

use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use model::graph::GraphFilter;
use model::intents::{self, IntentsVersion};
use model::AccessGraph;
use serde::Deserialize;

use super::auth::CanRead;
use super::error::ApiError;
use super::{cluster_of, AppState};
use crate::store::ReadError;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    cluster: Option<String>,
    namespace: Option<String>,
    workload: Option<String>,
    /// RFC 3339 time, or a window back from now such as `15m`, `24h`, `7d`.
    since: Option<String>,
    /// `json` (default) or `dot`.
    format: Option<String>,
}

fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        ApiError::BadRequest(format!("since={s:?} is neither an RFC 3339 time (2026-11-24T18:00:00Z) nor a window such as 30m, 24h or 7d"))
    };
    let (n, unit) = s.split_at(s.len().saturating_sub(1));
    let n: i64 = n.parse().map_err(|_| bad())?;
    let window = match unit {
        "s" => Duration::try_seconds(n),
        "m" => Duration::try_minutes(n),
        "h" => Duration::try_hours(n),
        "d" => Duration::try_days(n),
        _ => None,
    }
    .ok_or_else(bad)?;
    Ok(now - window)
}

fn read_error(e: ReadError, narrow: &str) -> ApiError {
    match e {
        ReadError::TooManyEdges { limit } => {
            ApiError::Unprocessable(format!("more than {limit} edges match, more than one read returns (--graph-max-edges); {narrow}"))
        }
        ReadError::Timeout(t) => ApiError::Unavailable(format!("the read took longer than {} s and was stopped; {narrow}, or retry later", t.as_secs_f64())),
        ReadError::Store(e) => e.into(),
    }
}

fn query<T>(q: Result<Query<T>, axum::extract::rejection::QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(t)| t).map_err(|e| ApiError::BadRequest(e.body_text()))
}

pub async fn access_graph(
    State(state): State<AppState>,
    auth: CanRead,
    q: Result<Query<GraphQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let since = q.since.as_deref().map(|s| parse_since(s, Utc::now())).transpose()?;
    if let Some(name) = &q.cluster {
        cluster_of(&state, auth.org_id, name).await?;
    }
    let data = state
        .store
        .graph(auth.org_id, since, &state.reads)
        .await
        .map_err(|e| read_error(e, "read a shorter window with since= (e.g. since=24h)"))?;
    let filter =
        GraphFilter { cluster: q.cluster, namespace: q.namespace, workload: q.workload, since };
    let graph = AccessGraph::build(&data.clusters, &data.edges, &data.exposures, &filter);
    match q.format.as_deref().unwrap_or("json") {
        "json" => Ok(Json(graph).into_response()),
        "dot" => Ok(([(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")], graph.to_dot())
            .into_response()),
        other => {
            Err(ApiError::BadRequest(format!("format={other:?} is not supported; use json or dot")))
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentsQuery {
    /// `v2beta1` (default) or `v1alpha3`.
    version: Option<String>,
    /// `yaml` (default) or `json`.
    format: Option<String>,
    namespace: Option<String>,
}

pub async fn client_intents(
    State(state): State<AppState>,
    auth: CanRead,
    Path(cluster): Path<String>,
    q: Result<Query<IntentsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let version: IntentsVersion = match &q.version {
        Some(v) => v.parse::<IntentsVersion>().map_err(|e| ApiError::BadRequest(e.to_string()))?,
        None => IntentsVersion::default(),
    };
    let cluster = cluster_of(&state, auth.org_id, &cluster).await?;
    let edges: Vec<model::Edge> = state
        .store
        .cluster_edges(auth.org_id, cluster.id, q.namespace.as_deref(), &state.reads)
        .await
        .map_err(|e| read_error(e, "export one namespace at a time with namespace="))?
        .into_iter()
        .map(|ce| ce.edge)
        .collect();
    let docs = intents::client_intents(&edges, version);
    match q.format.as_deref().unwrap_or("yaml") {
        "yaml" => Ok((
            [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
            intents::to_yaml(&docs),
        )
            .into_response()),
        "json" => {
            Ok(([(header::CONTENT_TYPE, "application/json")], intents::to_json(&docs))
                .into_response())
        }
        other => Err(ApiError::BadRequest(format!(
            "format={other:?} is not supported; use yaml or json"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_times_and_windows() {
        let now: DateTime<Utc> = "2026-11-24T18:00:00Z".parse().unwrap();
        assert_eq!(
            parse_since("2026-11-24T17:00:00Z", now).unwrap(),
            "2026-11-24T17:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_since("90m", now).unwrap(),
            "2026-11-24T16:30:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert_eq!(
            parse_since("7d", now).unwrap(),
            "2026-11-17T18:00:00Z".parse::<DateTime<Utc>>().unwrap()
        );
        assert!(parse_since("yesterday", now).is_err());
        assert!(parse_since("", now).is_err());
    }
}
