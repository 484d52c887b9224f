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
use super::changes;
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
    /// Marks each edge `new`, `seen` or `gone` relative to this time (same forms as `since`).
    changed_since: Option<String>,
}

fn parse_since(s: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    parse_time("since", s, now)
}

/// A time given as RFC 3339 or as a window back from `now`; `name` is the parameter, for the error.
pub(crate) fn parse_time(
    name: &str,
    s: &str,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    let bad = || {
        ApiError::BadRequest(format!("{name}={s:?} is neither an RFC 3339 time (2026-11-24T18:00:00Z) nor a window back from now such as 30m, 24h or 7d (at most 100000d)"))
    };
    // By character: the last one may be any code point, not only an ASCII unit.
    let unit = s.chars().next_back().ok_or_else(bad)?;
    let n: i64 = s[..s.len() - unit.len_utf8()].parse().map_err(|_| bad())?;
    let window = match unit {
        's' => Duration::try_seconds(n),
        'm' => Duration::try_minutes(n),
        'h' => Duration::try_hours(n),
        'd' => Duration::try_days(n),
        _ => None,
    }
    .filter(|w| *w >= Duration::zero() && *w <= MAX_WINDOW)
    .ok_or_else(bad)?;
    now.checked_sub_signed(window).ok_or_else(bad)
}

/// The longest window back from now a time parameter takes (about 274 years).
const MAX_WINDOW: Duration = Duration::days(100_000);

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

/// The organisation's merged access graph.
#[utoipa::path(get, path = "/api/v1/access-graph", tag = "graph", operation_id = "access_graph",
    security(("api_token" = ["read"])),
    params(
        ("cluster" = Option<String>, Query, description = "Edges with either end in this cluster"),
        ("namespace" = Option<String>, Query, description = "Edges with either end in this namespace"),
        ("workload" = Option<String>, Query, description = "Edges with either end named so"),
        ("since" = Option<String>, Query, description = "Edges seen at or after this RFC 3339 time (2026-11-24T18:00:00Z) or a window back from now (30m, 24h, 7d)"),
        ("format" = Option<crate::openapi::GraphFormat>, Query, description = "`json` (default) or `dot`"),
        ("changed_since" = Option<String>, Query, description = "Mark each edge new, seen or gone relative to this RFC 3339 time (2026-11-24T18:00:00Z) or a window back from now (30m, 24h, 7d); JSON only"),
    ),
    responses(
        (status = 200, description = "The graph (JSON), or Graphviz DOT with format=dot", content(
            (crate::openapi::AccessGraphBody = "application/json"),
            (String = "text/vnd.graphviz"),
        )),
        (status = 400, description = "A malformed request; the error says what to fix", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such object in this organisation", body = crate::openapi::ErrorBody),
        (status = 422, description = "A well-formed request the server cannot do; the error says why", body = crate::openapi::ErrorBody),
        (status = 401, description = "No token, or an invalid or revoked one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token lacks the scope this needs", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many failed credential checks from this address; retry after Retry-After", body = crate::openapi::ErrorBody),
        (status = 503, description = "Too busy or the database is unreachable; retry later", body = crate::openapi::ErrorBody),
    ))]
pub async fn access_graph(
    State(state): State<AppState>,
    auth: CanRead,
    q: Result<Query<GraphQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let now = Utc::now();
    let since = q.since.as_deref().map(|s| parse_since(s, now)).transpose()?;
    let changed_since =
        q.changed_since.as_deref().map(|s| parse_time("changed_since", s, now)).transpose()?;
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
    match (q.format.as_deref().unwrap_or("json"), changed_since) {
        ("json", None) => Ok(Json(graph).into_response()),
        ("json", Some(t)) => {
            Ok(Json(changes::mark_graph(&graph, t).map_err(|e| ApiError::Internal(e.into()))?)
                .into_response())
        }
        ("dot", Some(_)) => Err(ApiError::BadRequest(
            "changed_since= marks edges in the JSON form only; drop format=dot or changed_since="
                .into(),
        )),
        ("dot", None) => {
            Ok(([(header::CONTENT_TYPE, "text/vnd.graphviz; charset=utf-8")], graph.to_dot())
                .into_response())
        }
        (other, _) => {
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
    /// Marks each target added or not seen since this time (same forms as `since`).
    diff_since: Option<String>,
}

/// One cluster's ClientIntents: one document per client workload.
#[utoipa::path(get, path = "/api/v1/clusters/{cluster}/client-intents", tag = "graph", operation_id = "client_intents",
    security(("api_token" = ["read"])),
    params(
        ("cluster" = String, Path, description = "The cluster's id or name", example = "prod"),
        ("version" = Option<crate::openapi::IntentsApiVersion>, Query, description = "`v2beta1` (default) or `v1alpha3`"),
        ("format" = Option<crate::openapi::IntentsFormat>, Query, description = "`yaml` (default) or `json`"),
        ("namespace" = Option<String>, Query, description = "Only clients in this namespace"),
        ("diff_since" = Option<String>, Query, description = "Mark each target added or not seen since this RFC 3339 time (2026-11-24T18:00:00Z) or a window back from now (30m, 24h, 7d): YAML comments, or a `changes` list in JSON"),
    ),
    responses(
        (status = 200, description = "Multi-document YAML, or JSON with format=json", content(
            (Value = "application/yaml"),
            (crate::openapi::IntentsJson = "application/json"),
        )),
        (status = 400, description = "A malformed request; the error says what to fix", body = crate::openapi::ErrorBody),
        (status = 404, description = "No such object in this organisation", body = crate::openapi::ErrorBody),
        (status = 422, description = "A well-formed request the server cannot do; the error says why", body = crate::openapi::ErrorBody),
        (status = 401, description = "No token, or an invalid or revoked one", body = crate::openapi::ErrorBody),
        (status = 403, description = "The token lacks the scope this needs", body = crate::openapi::ErrorBody),
        (status = 429, description = "Too many failed credential checks from this address; retry after Retry-After", body = crate::openapi::ErrorBody),
        (status = 503, description = "Too busy or the database is unreachable; retry later", body = crate::openapi::ErrorBody),
    ))]
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
    let diff_since =
        q.diff_since.as_deref().map(|s| parse_time("diff_since", s, Utc::now())).transpose()?;
    let format = q.format.as_deref().unwrap_or("yaml");
    if !matches!(format, "yaml" | "json") {
        return Err(ApiError::BadRequest(format!(
            "format={format:?} is not supported; use yaml or json"
        )));
    }
    let cluster = cluster_of(&state, auth.org_id, &cluster).await?;
    let edges: Vec<model::Edge> = state
        .store
        .cluster_edges(auth.org_id, cluster.id, q.namespace.as_deref(), &state.reads)
        .await
        .map_err(|e| read_error(e, "export one namespace at a time with namespace="))?
        .into_iter()
        .map(|ce| ce.edge)
        .collect();
    if let Some(since) = diff_since {
        let docs = changes::diff_intents(&edges, version, since);
        return Ok(match format {
            "json" => Json(changes::diff_json(&docs, since)).into_response(),
            _ => (
                [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
                changes::diff_yaml(&docs, since),
            )
                .into_response(),
        });
    }
    let docs = intents::client_intents(&edges, version);
    match format {
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
        // Windows reaching before what a time can hold are refused, not a panic.
        assert!(parse_since("100000000d", now).is_err());
        assert!(parse_since("9223372036854775807s", now).is_err());
        assert!(parse_since("-5m", now).is_err());
        // A multi-byte last character (schemathesis found this one panicking).
        assert!(parse_since("\u{80}", now).is_err());
        assert!(parse_since("1€", now).is_err());
        assert!(parse_time("changed_since", "soon", now)
            .is_err_and(|e| e.to_string().starts_with("changed_since=\"soon\"")));
    }
}
