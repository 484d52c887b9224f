//! Reads: the merged access graph and per-cluster ClientIntents, bounded in edges
//! (`--graph-max-edges`) and time (`--read-timeout-seconds`).

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, Utc};
use model::graph::GraphFilter;
use model::intents::{self, IntentsVersion};
use model::AccessGraph;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::auth::CanRead;
use super::changes;
use super::error::ApiError;
use super::paging::{encode_cursor, page_request, Paged};
use super::{cluster_of, AppState};
use crate::store::{GraphSelection, GraphSummary, ReadError, SummarySince};

/// The longest `namespace=` or `workload=` taken: a Kubernetes name is at most 253 bytes.
const MAX_NAME_BYTES: usize = 253;

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
    /// Read in pages of about this many edges (JSON only); each page says where the next starts.
    limit: Option<usize>,
    /// The `next` of the previous page.
    after: Option<String>,
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

/// A name filter the database can compare: at most [`MAX_NAME_BYTES`], no control characters
/// (PostgreSQL's text cannot hold NUL).
pub(super) fn check_name(param: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > MAX_NAME_BYTES => Err(ApiError::BadRequest(format!(
            "{param}= is longer than {MAX_NAME_BYTES} bytes; no Kubernetes name is"
        ))),
        Some(v) if v.chars().any(char::is_control) => Err(ApiError::BadRequest(format!(
            "{param}= holds a control character; give a Kubernetes name"
        ))),
        _ => Ok(()),
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
        ("limit" = Option<u32>, Query, minimum = 1, description = "Read in pages of about this many edges (a larger limit is cut to --graph-max-edges; JSON only): each page holds whole client workloads, in byte order of (namespace, name), so a page may be larger when one client alone has more edges; `clusters` and `changes` count the page's edges. The answer's `next`, when present, is the `after` of the next page"),
        ("after" = Option<String>, Query, description = "The `next` of the previous page (with the same limit and filters)"),
    ),
    responses(
        (status = 200, description = "The graph (JSON), or Graphviz DOT with format=dot", content(
            (crate::openapi::AccessGraphBody = "application/json"),
            (String = "text/vnd.graphviz"),
        )),
        crate::openapi::BadRequest,
        crate::openapi::NotFound,
        crate::openapi::Unprocessable,
        crate::openapi::TokenRefusals,
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
    check_name("cluster", q.cluster.as_deref())?;
    let cluster = match &q.cluster {
        Some(name) => Some((cluster_of(&state, auth.org_id, name).await?.id, name.clone())),
        None => None,
    };
    check_name("namespace", q.namespace.as_deref())?;
    check_name("workload", q.workload.as_deref())?;
    let page = page_request(q.limit, q.after.as_deref(), state.reads.max_edges)?;
    if page.is_some() && q.format.as_deref().is_some_and(|f| f != "json") {
        return Err(ApiError::BadRequest(
            "limit= pages the JSON form only; drop format= or read the whole graph without limit="
                .into(),
        ));
    }
    let selection = GraphSelection {
        cluster,
        namespace: q.namespace.clone(),
        workload: q.workload.clone(),
        since,
    };
    let data = state
        .store
        .graph_selected(auth.org_id, &selection, page.as_ref(), &state.reads)
        .await
        .map_err(|e| {
            read_error(
                e,
                "read in pages with limit=, or one namespace= or a shorter window with since= (e.g. since=24h)",
            )
        })?;
    let next = data.next.as_ref().map(encode_cursor);
    let filter =
        GraphFilter { cluster: q.cluster, namespace: q.namespace, workload: q.workload, since };
    let graph = AccessGraph::build(&data.clusters, &data.edges, &data.exposures, &filter);
    match (q.format.as_deref().unwrap_or("json"), changed_since) {
        ("json", None) => Ok(Json(Paged { body: graph, next }).into_response()),
        ("json", Some(t)) => {
            let body = changes::mark_graph(&graph, t).map_err(|e| ApiError::Internal(e.into()))?;
            Ok(Json(Paged { body, next }).into_response())
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
pub struct SummaryQuery {
    cluster: Option<String>,
    since: Option<String>,
}

/// The aggregated access graph: namespaces as nodes, aggregate edges between them.
///
/// For the page and for large organisations: one node per namespace of each cluster (with how
/// many workloads and Services of the full graph it holds) and per kind of external target, and
/// one edge per observing cluster, client namespace and target namespace (or external kind)
/// with how many of the full graph's edges it stands for and their connections. Computed in the
/// database. Expanding a namespace is `GET /api/v1/access-graph?namespace=NS` (edges with either
/// end in it), with `cluster=` for one cluster's.
#[utoipa::path(get, path = "/api/v1/access-graph/summary", tag = "graph", operation_id = "access_graph_summary",
    security(("api_token" = ["read"])),
    params(
        ("cluster" = Option<String>, Query, description = "Aggregate edges with either end in this cluster (its id or name)"),
        ("since" = Option<String>, Query, description = "Edges seen at or after this RFC 3339 time (2026-11-24T18:00:00Z; computed at each read) or within a window back from now (30m, 24h, 7d; kept per window like the whole history's, counting the window that ends at `as_of`, served for at most a twelfth of the window and at most --summary-max-stale-seconds after it)"),
    ),
    responses(
        (status = 200, description = "The aggregated graph", body = GraphSummary),
        crate::openapi::BadRequest,
        crate::openapi::NotFound,
        crate::openapi::Unprocessable,
        crate::openapi::TokenRefusals,
    ))]
pub async fn access_graph_summary(
    State(state): State<AppState>,
    auth: CanRead,
    q: Result<Query<SummaryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let now = Utc::now();
    // A window back from now (30m, 24h) is kept per window; a time is computed at each read.
    let since = match q.since.as_deref() {
        None => SummarySince::All,
        Some(s) if DateTime::parse_from_rfc3339(s).is_ok() => {
            SummarySince::At(parse_since(s, now)?)
        }
        Some(s) => SummarySince::Window(now - parse_since(s, now)?),
    };
    check_name("cluster", q.cluster.as_deref())?;
    // By id or name, as everywhere; the aggregate is keyed by the name.
    let cluster = match &q.cluster {
        Some(id_or_name) => Some(cluster_of(&state, auth.org_id, id_or_name).await?.name),
        None => None,
    };
    let summary = state
        .store
        .graph_summary(auth.org_id, cluster.as_deref(), since, &state.reads)
        .await
        .map_err(|e| read_error(e, "read one cluster= or a shorter window with since="))?;
    Ok(Json(summary).into_response())
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
        crate::openapi::BadRequest,
        crate::openapi::NotFound,
        crate::openapi::Unprocessable,
        crate::openapi::TokenRefusals,
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
    check_name("cluster", Some(&cluster))?;
    check_name("namespace", q.namespace.as_deref())?;
    let cluster = cluster_of(&state, auth.org_id, &cluster).await?;
    let Some(since) = diff_since else {
        return export_stream(state, auth.org_id, cluster.id, q.namespace, version, format).await;
    };
    let edges: Vec<model::Edge> = state
        .store
        .cluster_edges(auth.org_id, cluster.id, q.namespace.as_deref(), &state.reads)
        .await
        .map_err(|e| read_error(e, "export one namespace at a time with namespace="))?
        .into_iter()
        .map(|ce| ce.edge)
        .collect();
    let docs = changes::diff_intents(&edges, version, since);
    Ok(match format {
        "json" => Json(changes::diff_json(&docs, since)).into_response(),
        _ => (
            [(header::CONTENT_TYPE, "application/yaml; charset=utf-8")],
            changes::diff_yaml(&docs, since),
        )
            .into_response(),
    })
}

/// Streamed exports at once (each holds a database connection while its client reads); more get
/// 503. Leaves most of the pool (`--database-max-connections`, 16) to everything else.
const EXPORTS_AT_ONCE: usize = 4;
static EXPORT_PERMITS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(EXPORTS_AT_ONCE);

/// Clients' edges read ahead of the one being rendered.
const EXPORT_GROUPS_IN_FLIGHT: usize = 8;
/// Rendered documents waiting for the client to read them.
const EXPORT_CHUNKS_IN_FLIGHT: usize = 8;

/// The export as a streamed body: the size is checked first (422 above `--graph-max-edges`),
/// then the edges come from the database one client workload at a time and each client's
/// document is rendered and sent as it is complete, so memory holds a few clients' edges, not the
/// cluster's. The bytes equal the unstreamed rendering of all edges at once. A read that fails
/// after the first byte (the statement timeout, the database going away) ends the body early:
/// the client sees an incomplete chunked transfer, never a truncated document that looks whole.
async fn export_stream(
    state: AppState,
    org: uuid::Uuid,
    cluster: uuid::Uuid,
    namespace: Option<String>,
    version: IntentsVersion,
    format: &str,
) -> Result<Response, ApiError> {
    let narrow = "export one namespace at a time with namespace=";
    let permit = EXPORT_PERMITS.try_acquire().map_err(|_| {
        ApiError::Unavailable(format!(
            "{EXPORTS_AT_ONCE} ClientIntents exports are being streamed already; retry in a few seconds"
        ))
    })?;
    state
        .store
        .export_size_ok(org, cluster, namespace.as_deref(), &state.reads)
        .await
        .map_err(|e| read_error(e, narrow))?;
    let json = format == "json";
    let (groups_tx, mut groups_rx) = mpsc::channel::<Vec<model::Edge>>(EXPORT_GROUPS_IN_FLIGHT);
    let (bytes_tx, bytes_rx) =
        mpsc::channel::<Result<Bytes, std::io::Error>>(EXPORT_CHUNKS_IN_FLIGHT);
    let store = state.store.clone();
    let limits = state.reads.clone();
    tokio::spawn(async move {
        let read = store.export_by_client(org, cluster, namespace.as_deref(), &limits, groups_tx);
        let render = async move {
            let mut wrote_any = false;
            while let Some(group) = groups_rx.recv().await {
                let docs = intents::client_intents(&group, version);
                if docs.is_empty() {
                    continue;
                }
                let chunk = if json {
                    let mut chunk = String::new();
                    for doc in &docs {
                        chunk.push_str(if wrote_any { ",\n" } else { "[\n" });
                        chunk.push_str(json_array_item(&intents::to_json(std::slice::from_ref(
                            doc,
                        ))));
                        wrote_any = true;
                    }
                    chunk
                } else {
                    wrote_any = true;
                    intents::to_yaml(&docs)
                };
                if bytes_tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                    // The client went away: dropping the receiver of groups ends the read.
                    return (None, wrote_any);
                }
            }
            (Some(bytes_tx), wrote_any)
        };
        let (result, (bytes_tx, wrote_any)) = tokio::join!(read, render);
        // Free before the last chunk: a client that has read the whole body may export again.
        drop(permit);
        let Some(bytes_tx) = bytes_tx else { return };
        let last = match result {
            Ok(()) if json => Ok(Bytes::from_static(if wrote_any { b"\n]\n" } else { b"[]\n" })),
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(error = %e, "a streamed ClientIntents export broke off");
                Err(std::io::Error::other(e.to_string()))
            }
        };
        let _ = bytes_tx.send(last).await;
    });
    let body = Body::from_stream(futures::stream::unfold(bytes_rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    }));
    let content_type = if json { "application/json" } else { "application/yaml; charset=utf-8" };
    Ok(([(header::CONTENT_TYPE, content_type)], body).into_response())
}

/// The one item of a pretty-printed one-element JSON array, as it is indented in a longer one.
fn json_array_item(one: &str) -> &str {
    one.strip_prefix("[\n").and_then(|s| s.strip_suffix("\n]\n")).unwrap_or(one)
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
