//! The aggregated access graph (`GET /api/v1/access-graph/summary`): computed by GROUP BY over
//! every edge of the organisation, which costs seconds at a million edges, so it is kept.
//!
//! A computed summary is stored (`graph_summaries`) with the edge versions it was computed from,
//! read in the same snapshot: each report bumps its cluster's `edges_version` and pruning bumps
//! the organisation's, in the transaction that writes the edges. A read serves the stored rows
//! while those versions are current (`stale: false`); once edges have changed, it serves them
//! still, marked `stale`, for at most [`ReadLimits::summary_max_stale`] after they were computed,
//! and starts one refresh in the background; older than that, or never computed, the read
//! computes them itself.
//!
//! A window back from the read (`since=1h`) is kept the same way, per window, counting the edges
//! seen in the window that ends at `as_of`: served for at most a twelfth of the window (and at
//! most `summary_max_stale`) after `as_of`, `stale` when edges were written since, and at most
//! [`KEPT_WINDOWS`] windows per organisation (a tenant naming every second of a year keeps 8).
//! A `since=` time (RFC 3339) is computed at each read.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Postgres, Transaction};
use tokio::sync::Semaphore;
use utoipa::ToSchema;
use uuid::Uuid;

use super::edge_row::traffic;
use super::reads::set_timeout;
use super::{set_org, tenant, ReadError, ReadLimits, Store};
use model::Traffic;

/// How many summaries one cloud-api computes in the background at once; a stale read that finds
/// none free serves the stored summary without starting another (the next read will).
const BACKGROUND_REFRESHES: usize = 2;

/// How many windowed summaries one organisation keeps (the most recently computed).
pub const KEPT_WINDOWS: i64 = 8;

/// Which edges a summary counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SummarySince {
    /// Every edge.
    All,
    /// Edges seen at or after this time: computed at each read.
    At(DateTime<Utc>),
    /// Edges seen within this window back from the read: kept per window.
    Window(chrono::Duration),
}

impl SummarySince {
    /// The stored summary's key beside its scope: 0 for the whole history.
    fn window_secs(self) -> i64 {
        match self {
            SummarySince::Window(w) => w.num_seconds().max(1),
            _ => 0,
        }
    }

    /// The time edges are counted from, for a computation starting now.
    fn from(self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            SummarySince::All => None,
            SummarySince::At(t) => Some(t),
            SummarySince::Window(w) => Some(now - w),
        }
    }
}

/// The summaries being refreshed in the background (organisation, scope, window), so that one
/// is computed at a time.
#[derive(Clone)]
pub(super) struct Refreshes {
    running: Arc<Mutex<HashSet<(Uuid, String, i64)>>>,
    slots: Arc<Semaphore>,
}

impl Default for Refreshes {
    fn default() -> Self {
        Self { running: Default::default(), slots: Arc::new(Semaphore::new(BACKGROUND_REFRESHES)) }
    }
}

/// One row of the summary query, as stored: an aggregate edge (`is_edge`) or a node count.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Row {
    is_edge: bool,
    cluster: Option<String>,
    namespace: Option<String>,
    target_kind: Option<String>,
    target_cluster: Option<String>,
    target_namespace: Option<String>,
    count: i64,
    connections: Option<i64>,
    first_seen: Option<DateTime<Utc>>,
    last_seen: Option<DateTime<Utc>>,
    bytes_sent: Option<i64>,
    bytes_received: Option<i64>,
}

/// What one computation read, from one snapshot.
struct Computed {
    as_of: DateTime<Utc>,
    versions: String,
    clusters: Vec<String>,
    rows: Vec<Row>,
}

impl Store {
    /// The aggregated graph: namespaces (per cluster) and external target kinds as nodes, with
    /// how many workloads, Services or targets each holds, and one edge per (observing cluster,
    /// client namespace, target namespace or kind) with how many of the full graph's edges it
    /// stands for. Computed by GROUP BY in the database, with the full graph's cross-cluster
    /// resolution (a call to an address another cluster exposes lands in that cluster), and
    /// kept between reads (see the module's documentation).
    pub async fn graph_summary(
        &self,
        org: Uuid,
        cluster: Option<&str>,
        since: SummarySince,
        limits: &ReadLimits,
    ) -> Result<GraphSummary, ReadError> {
        let timeout = limits.statement_timeout;
        if let SummarySince::At(t) = since {
            let computed = compute(&self.pool, org, cluster, Some(t), limits).await?;
            return Ok(assemble(computed.clusters, computed.rows, computed.as_of, false));
        }
        let scope = cluster.unwrap_or_default();
        // How long after `as_of` a stored summary may be served while a newer one is computed;
        // a window's, also how far its end may lag behind the read.
        let max_stale = match since {
            SummarySince::Window(w) => {
                limits.summary_max_stale.min((w / 12).to_std().unwrap_or_default())
            }
            _ => limits.summary_max_stale,
        };
        let run = async {
            let mut tx = tenant(&self.pool, org).await?;
            let stored = sqlx::query!(
                r#"SELECT versions, as_of, body, as_of >= now() - make_interval(secs => $3) AS "recent!"
                   FROM graph_summaries WHERE org_id = $1 AND scope = $2 AND window_secs = $4"#,
                org,
                scope,
                max_stale.as_secs_f64(),
                since.window_secs()
            )
            .fetch_optional(&mut *tx)
            .await?;
            let Some(stored) = stored else {
                tx.commit().await?;
                return Ok(None);
            };
            let current = versions(&mut tx, org).await?;
            let clusters = cluster_names(&mut tx, org, cluster).await?;
            tx.commit().await?;
            let fresh = stored.versions == current;
            // A window's end moves with the clock: past its bound it is computed again even
            // when no edge changed.
            let windowed = matches!(since, SummarySince::Window(_));
            if (!fresh || windowed) && !stored.recent {
                return Ok(None);
            }
            // Unreadable (written by another version) or larger than the limit now: compute.
            let Ok(rows) = serde_json::from_slice::<Vec<Row>>(&stored.body) else {
                return Ok(None);
            };
            if rows.len() > limits.max_edges {
                return Ok(None);
            }
            Ok::<_, sqlx::Error>(Some((clusters, rows, stored.as_of, fresh)))
        };
        match run.await.map_err(|e| ReadError::from_sqlx(e, timeout))? {
            Some((clusters, rows, as_of, fresh)) => {
                if !fresh {
                    self.refresh_in_background(org, cluster, since, limits);
                }
                Ok(assemble(clusters, rows, as_of, !fresh))
            }
            None => {
                let computed = self.refresh_summary(org, cluster, since, limits).await?;
                Ok(assemble(computed.clusters, computed.rows, computed.as_of, false))
            }
        }
    }

    /// Computes the summary and stores it (unless a newer one was stored meanwhile).
    async fn refresh_summary(
        &self,
        org: Uuid,
        cluster: Option<&str>,
        since: SummarySince,
        limits: &ReadLimits,
    ) -> Result<Computed, ReadError> {
        let computed = compute(&self.pool, org, cluster, since.from(Utc::now()), limits).await?;
        let store = async {
            let body =
                serde_json::to_vec(&computed.rows).map_err(|e| sqlx::Error::Encode(e.into()))?;
            let mut tx = tenant(&self.pool, org).await?;
            sqlx::query!(
                "INSERT INTO graph_summaries AS s (org_id, scope, window_secs, versions, as_of, body) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (org_id, scope, window_secs) DO UPDATE SET versions = EXCLUDED.versions, as_of = EXCLUDED.as_of, body = EXCLUDED.body
                 WHERE s.as_of <= EXCLUDED.as_of",
                org,
                cluster.unwrap_or_default(),
                since.window_secs(),
                computed.versions,
                computed.as_of,
                body
            )
            .execute(&mut *tx)
            .await?;
            if since.window_secs() > 0 {
                // The organisation's most recently computed windows stay; older ones go.
                sqlx::query!(
                    "DELETE FROM graph_summaries WHERE org_id = $1 AND window_secs > 0
                       AND (scope, window_secs) NOT IN (
                         SELECT scope, window_secs FROM graph_summaries
                         WHERE org_id = $1 AND window_secs > 0 ORDER BY as_of DESC LIMIT $2)",
                    org,
                    KEPT_WINDOWS
                )
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await
        };
        store.await.map_err(|e| ReadError::from_sqlx(e, limits.statement_timeout))?;
        Ok(computed)
    }

    /// Starts [`Store::refresh_summary`] in the background unless one for the same summary is
    /// running or [`BACKGROUND_REFRESHES`] are.
    fn refresh_in_background(
        &self,
        org: Uuid,
        cluster: Option<&str>,
        since: SummarySince,
        limits: &ReadLimits,
    ) {
        let key = (org, cluster.unwrap_or_default().to_owned(), since.window_secs());
        let Ok(slot) = self.refreshes.slots.clone().try_acquire_owned() else {
            return;
        };
        let Ok(mut running) = self.refreshes.running.lock() else {
            return;
        };
        if !running.insert(key.clone()) {
            return;
        }
        drop(running);
        let (store, cluster, limits) = (self.clone(), cluster.map(str::to_owned), limits.clone());
        tokio::spawn(async move {
            // Removed however the refresh ends.
            let _done = Running { refreshes: store.refreshes.clone(), key, _slot: slot };
            let started = std::time::Instant::now();
            match store.refresh_summary(org, cluster.as_deref(), since, &limits).await {
                Ok(c) => {
                    tracing::debug!(%org, rows = c.rows.len(), elapsed_ms = started.elapsed().as_millis() as u64, "refreshed the aggregated graph")
                }
                Err(e) => {
                    tracing::warn!(%org, error = %e, "refreshing the aggregated graph failed; a later read will compute it")
                }
            }
        });
    }
}

struct Running {
    refreshes: Refreshes,
    key: (Uuid, String, i64),
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(mut running) = self.refreshes.running.lock() {
            running.remove(&self.key);
        }
    }
}

/// A read-only transaction with one snapshot for all its statements, in which only `org`'s rows
/// are visible.
async fn snapshot(pool: &PgPool, org: Uuid) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    set_org(&mut tx, org).await?;
    Ok(tx)
}

/// The organisation's and each cluster's `edges_version`: what a stored summary was computed
/// from, and is compared with.
async fn versions(tx: &mut PgConnection, org: Uuid) -> Result<String, sqlx::Error> {
    sqlx::query_scalar!(
        r#"SELECT (SELECT edges_version FROM organizations WHERE id = $1)::text || ';'
                  || COALESCE((SELECT string_agg(id::text || ':' || edges_version::text, ',' ORDER BY id)
                               FROM clusters WHERE org_id = $1), '') AS "versions!""#,
        org
    )
    .fetch_one(tx)
    .await
}

async fn cluster_names(
    tx: &mut PgConnection,
    org: Uuid,
    cluster: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar!(
        "SELECT name FROM clusters WHERE org_id = $1 AND ($2::text IS NULL OR name = $2) ORDER BY name",
        org,
        cluster
    )
    .fetch_all(tx)
    .await
}

/// The summary's rows, from one snapshot; [`ReadError::TooManyEdges`] past the limit.
async fn compute(
    pool: &PgPool,
    org: Uuid,
    cluster: Option<&str>,
    since: Option<DateTime<Utc>>,
    limits: &ReadLimits,
) -> Result<Computed, ReadError> {
    let timeout = limits.statement_timeout;
    let limit = i64::try_from(limits.max_edges).unwrap_or(i64::MAX - 1);
    let run = async {
        let mut tx = snapshot(pool, org).await?;
        set_timeout(&mut tx, timeout).await?;
        // now(): the transaction's start, at or before its snapshot.
        let as_of = sqlx::query_scalar!(r#"SELECT now() AS "now!""#).fetch_one(&mut *tx).await?;
        let versions = versions(&mut tx, org).await?;
        let clusters = cluster_names(&mut tx, org, cluster).await?;
        let rows = sqlx::query_as!(
            Row,
            r#"WITH keys AS (
                     SELECT DISTINCT ON (k.key) k.key, c.name AS cluster, x.namespace, x.name
                     FROM exposed_workloads x JOIN clusters c ON c.org_id = x.org_id AND c.id = x.cluster_id,
                          LATERAL (SELECT rtrim(a, '.') AS key FROM unnest(x.addresses || x.hostnames) AS a) AS k
                     WHERE x.org_id = $1
                     ORDER BY k.key, c.name, x.namespace, x.name
                   ), resolved AS (
                     SELECT c.name AS cluster, e.client_namespace AS cns, e.client_name AS cname,
                            CASE WHEN hit.name IS NOT NULL OR e.target_type IN ('kubernetes', 'kafka') THEN 'workload'
                                 ELSE e.target_type END AS tkind,
                            CASE WHEN hit.name IS NOT NULL THEN hit.cluster
                                 WHEN e.target_type IN ('kubernetes', 'kafka', 'service') THEN c.name END AS tcluster,
                            CASE WHEN hit.name IS NOT NULL THEN hit.namespace
                                 WHEN e.target_type IN ('kubernetes', 'kafka', 'service') THEN e.target_namespace END AS tns,
                            COALESCE(hit.name, e.target_name) AS tname,
                            e.connections, e.first_seen, e.last_seen, e.bytes_sent, e.bytes_received
                     FROM edges e JOIN clusters c ON c.org_id = e.org_id AND c.id = e.cluster_id
                     LEFT JOIN LATERAL (
                         SELECT keys.cluster, keys.namespace, keys.name
                         FROM unnest(e.domains || e.ips) WITH ORDINALITY AS u(key, at)
                         JOIN keys ON keys.key = rtrim(u.key, '.')
                         WHERE e.target_type = 'internet'
                         ORDER BY u.at LIMIT 1
                     ) AS hit ON true
                     WHERE e.org_id = $1 AND ($2::timestamptz IS NULL OR e.last_seen >= $2)
                   ), merged AS (
                     -- Volumes saturate with CASE, not LEAST: LEAST ignores NULL, and a sum of
                     -- nothing measured must stay NULL.
                     SELECT cluster, cns, cname, tkind, tcluster, tns, tname,
                            LEAST(sum(connections), 9223372036854775807)::bigint AS connections,
                            min(first_seen) AS first_seen, max(last_seen) AS last_seen,
                            (CASE WHEN sum(bytes_sent) > 9223372036854775807 THEN 9223372036854775807 ELSE sum(bytes_sent) END)::bigint AS bytes_sent,
                            (CASE WHEN sum(bytes_received) > 9223372036854775807 THEN 9223372036854775807 ELSE sum(bytes_received) END)::bigint AS bytes_received
                     FROM resolved
                     WHERE $3::text IS NULL OR cluster = $3 OR tcluster = $3
                     GROUP BY cluster, cns, cname, tkind, tcluster, tns, tname
                   ), ends AS (
                     SELECT cluster, cns AS ns, 'workload' AS kind, cname AS name FROM merged
                     UNION ALL SELECT tcluster, tns, tkind, tname FROM merged
                   )
                   SELECT * FROM (
                     SELECT true AS "is_edge!", cluster, cns AS namespace,
                            CASE WHEN tcluster IS NULL THEN tkind END AS target_kind,
                            tcluster AS target_cluster, tns AS target_namespace,
                            count(*) AS "count!", LEAST(sum(connections), 9223372036854775807)::bigint AS connections,
                            min(first_seen) AS first_seen, max(last_seen) AS last_seen,
                            (CASE WHEN sum(bytes_sent) > 9223372036854775807 THEN 9223372036854775807 ELSE sum(bytes_sent) END)::bigint AS bytes_sent,
                            (CASE WHEN sum(bytes_received) > 9223372036854775807 THEN 9223372036854775807 ELSE sum(bytes_received) END)::bigint AS bytes_received
                     FROM merged
                     GROUP BY cluster, cns, CASE WHEN tcluster IS NULL THEN tkind END, tcluster, tns
                     UNION ALL
                     SELECT false, cluster, ns, kind, NULL, NULL, count(DISTINCT name), NULL, NULL, NULL, NULL, NULL
                     FROM ends GROUP BY cluster, ns, kind
                   ) AS summary
                   ORDER BY 1, 2, 3, 4, 5, 6
                   LIMIT $4"#,
            org,
            since,
            cluster,
            limit + 1
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        if rows.len() as i64 > limit {
            return Ok(None);
        }
        Ok::<_, sqlx::Error>(Some(Computed { as_of, versions, clusters, rows }))
    };
    run.await
        .map_err(|e| ReadError::from_sqlx(e, timeout))?
        .ok_or(ReadError::TooManyEdges { limit: limits.max_edges })
}

/// The summary from its rows: node counts per namespace and external kind, edges with their ids.
fn assemble(
    clusters: Vec<String>,
    rows: Vec<Row>,
    as_of: DateTime<Utc>,
    stale: bool,
) -> GraphSummary {
    let mut summary = GraphSummary {
        as_of,
        stale,
        clusters: clusters.into_iter().map(|name| SummaryCluster { name, edges: 0 }).collect(),
        namespaces: Vec::new(),
        external: Vec::new(),
        edges: Vec::new(),
    };
    let count = |n: i64| u64::try_from(n).unwrap_or(0);
    let mut namespaces: BTreeMap<(String, String), NamespaceNode> = Default::default();
    for r in rows {
        if r.is_edge {
            let (Some(observed_in), Some(namespace)) = (r.cluster, r.namespace) else {
                continue;
            };
            let target = match (r.target_cluster, r.target_namespace, r.target_kind) {
                (Some(c), Some(ns), _) => namespace_id(&c, &ns),
                (_, _, Some(kind)) => kind,
                _ => continue,
            };
            if let Some(c) = summary.clusters.iter_mut().find(|c| c.name == observed_in) {
                c.edges += count(r.count);
            }
            let mut source = namespace_id(&observed_in, &namespace);
            let mut target = target;
            // Incoming internet traffic goes from the outside to the namespace.
            if target == "incoming" {
                std::mem::swap(&mut source, &mut target);
            }
            summary.edges.push(SummaryEdge {
                source,
                target,
                observed_in,
                edges: count(r.count),
                connections: r.connections.map_or(0, count),
                first_seen: r.first_seen,
                last_seen: r.last_seen,
                bytes: traffic(r.bytes_sent, r.bytes_received),
            });
        } else {
            let kind = r.target_kind.unwrap_or_default();
            match (r.cluster, r.namespace) {
                (Some(cluster), Some(namespace)) => {
                    let node = namespaces
                        .entry((cluster.clone(), namespace.clone()))
                        .or_insert_with(|| NamespaceNode {
                            id: namespace_id(&cluster, &namespace),
                            cluster,
                            namespace,
                            workloads: 0,
                            services: 0,
                        });
                    match kind.as_str() {
                        "service" => node.services += count(r.count),
                        _ => node.workloads += count(r.count),
                    }
                }
                _ => summary.external.push(ExternalNode {
                    id: kind.clone(),
                    kind,
                    targets: count(r.count),
                }),
            }
        }
    }
    summary.namespaces = namespaces.into_values().collect();
    summary
}

/// A namespace node's id in the aggregated graph: `cluster/namespace`.
pub fn namespace_id(cluster: &str, namespace: &str) -> String {
    format!("{cluster}/{namespace}")
}

/// The aggregated access graph (`GET /api/v1/access-graph/summary`).
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphSummary {
    /// When the database snapshot this summary was computed from was taken.
    pub as_of: DateTime<Utc>,
    /// `true` when edges were written after `as_of`: this is the stored summary, served while a
    /// newer one is computed (for at most `--summary-max-stale-seconds` after `as_of`).
    pub stale: bool,
    /// The organisation's clusters (only the one asked for with `cluster=`), each with how many
    /// of the full graph's edges it observed.
    pub clusters: Vec<SummaryCluster>,
    /// Every namespace that an edge touches, per cluster.
    pub namespaces: Vec<NamespaceNode>,
    /// Targets outside the clusters, one node per kind (`internet`, `aws`, ...), and
    /// `incoming`, the clients outside the clusters whose edges go from it to a namespace.
    pub external: Vec<ExternalNode>,
    /// Aggregate edges: from a client namespace to a target namespace or external kind.
    pub edges: Vec<SummaryEdge>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryCluster {
    pub name: String,
    /// Edges of the full graph observed in this cluster.
    pub edges: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NamespaceNode {
    /// `cluster/namespace`.
    pub id: String,
    pub cluster: String,
    pub namespace: String,
    /// Workload nodes of the full graph in this namespace.
    pub workloads: u64,
    /// Service nodes of the full graph in this namespace.
    pub services: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExternalNode {
    /// The kind itself: `internet`, `aws`.
    pub id: String,
    pub kind: String,
    /// Distinct targets of this kind in the full graph.
    pub targets: u64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SummaryEdge {
    /// The client namespace's id (`cluster/namespace`).
    pub source: String,
    /// The target namespace's id, or an external kind's id.
    pub target: String,
    /// The cluster whose agent observed these calls.
    pub observed_in: String,
    /// How many edges of the full graph this one stands for.
    pub edges: u64,
    /// Their connections, summed.
    pub connections: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<DateTime<Utc>>,
    /// Their measured traffic volume, summed (absent when none of them was measured).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::openapi::TrafficBody>)]
    pub bytes: Option<Traffic>,
}
