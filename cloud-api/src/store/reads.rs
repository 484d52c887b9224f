//! The reads behind the access graph and ClientIntents, bounded: at most `max_edges` rows come
//! back (one more is fetched to know there are more), and every statement of the read is cut off
//! after `statement_timeout`. One transaction, so the clusters, edges and exposures agree.

use std::time::Duration;

use chrono::{DateTime, Utc};
use model::graph::{ClusterEdge, ClusterExposure};
use model::{Edge, ExposedWorkload};
use sqlx::PgConnection;
use tokio::sync::mpsc;
use uuid::Uuid;

use super::edge_row::{edge_from_row, EdgeRow};
use super::{tenant, Store, StoreError};

#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// The most edges one read returns; a read that would return more is refused.
    pub max_edges: usize,
    /// PostgreSQL's `statement_timeout` for each statement of a read.
    pub statement_timeout: Duration,
    /// How long after it was computed a stored aggregated view is still served once edges have
    /// changed (marked `stale`, while a newer one is computed); zero: never.
    pub summary_max_stale: Duration,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self {
            max_edges: 100_000,
            statement_timeout: Duration::from_secs(10),
            summary_max_stale: Duration::from_secs(300),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("more than {limit} edges match")]
    TooManyEdges { limit: usize },
    #[error("the read took longer than {0:?}")]
    Timeout(Duration),
    #[error(transparent)]
    Store(StoreError),
}

impl ReadError {
    pub(super) fn from_sqlx(e: sqlx::Error, timeout: Duration) -> Self {
        // 57014 query_canceled: what statement_timeout raises.
        match e.as_database_error().and_then(|d| d.code()) {
            Some(code) if code == "57014" => ReadError::Timeout(timeout),
            _ => ReadError::Store(e.into()),
        }
    }
}

/// What the access graph is built from.
#[derive(Debug, Default)]
pub struct GraphData {
    pub clusters: Vec<String>,
    pub edges: Vec<ClusterEdge>,
    pub exposures: Vec<ClusterExposure>,
    /// In a paged read, where the next page starts (`None`: this was the last).
    pub next: Option<ClientCursor>,
}

/// A client workload's namespace and name: pages of the graph hold whole clients, in byte order
/// of (namespace, name), so that no edge of the graph (merged per client, target and observing
/// cluster) is split across two pages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCursor {
    pub namespace: String,
    pub name: String,
}

impl ClientCursor {
    fn of(edge: &ClusterEdge) -> Self {
        Self { namespace: edge.edge.client.namespace.clone(), name: edge.edge.client.name.clone() }
    }

    fn is_client_of(&self, edge: &ClusterEdge) -> bool {
        edge.edge.client.namespace == self.namespace && edge.edge.client.name == self.name
    }
}

/// One page of a graph read: the clients after `after`, about `limit` edges of them.
#[derive(Debug, Clone)]
pub struct PageRequest {
    pub after: Option<ClientCursor>,
    /// At most this many edges, unless one client alone has more: then that client's edges
    /// (up to the read's `max_edges`) are the page.
    pub limit: usize,
}

/// Which edges a graph read wants. Each part narrows the read, in SQL; [`AccessGraph::build`]
/// applies the same filter again, so what the database returns may be a superset (an internet
/// target is resolved to another cluster's workload only once the graph is built).
///
/// [`AccessGraph::build`]: model::AccessGraph::build
#[derive(Debug, Clone, Default)]
pub struct GraphSelection {
    /// Edges with either end in this cluster: its id and name.
    pub cluster: Option<(Uuid, String)>,
    /// Edges with either end in this namespace.
    pub namespace: Option<String>,
    /// Edges with either end named so.
    pub workload: Option<String>,
    /// Edges seen at or after this time.
    pub since: Option<DateTime<Utc>>,
}

impl Store {
    /// The org's clusters, its edges seen since `since` and its exposed workloads.
    pub async fn graph(
        &self,
        org: Uuid,
        since: Option<DateTime<Utc>>,
        limits: &ReadLimits,
    ) -> Result<GraphData, ReadError> {
        self.graph_selected(org, &GraphSelection { since, ..Default::default() }, None, limits)
            .await
    }

    /// The org's clusters, its exposed workloads and the edges `selection` may keep, filtered by
    /// the database: the read is bounded by what matches, not by the organisation's size. With
    /// `page`, one page of them and where the next starts.
    pub async fn graph_selected(
        &self,
        org: Uuid,
        selection: &GraphSelection,
        page: Option<&PageRequest>,
        limits: &ReadLimits,
    ) -> Result<GraphData, ReadError> {
        let timeout = limits.statement_timeout;
        let run = async {
            let mut tx = tenant(&self.pool, org).await?;
            set_timeout(&mut tx, timeout).await?;
            let names = ClusterNames::read(&mut tx, org).await?;
            let exposures = exposures(&mut tx, org).await?;
            let keys_where = |keep: &dyn Fn(&ClusterExposure) -> bool| -> Vec<String> {
                exposures.iter().filter(|x| keep(x)).flat_map(exposure_keys).collect()
            };
            let cluster_keys = selection
                .cluster
                .as_ref()
                .map_or_else(Vec::new, |(_, name)| keys_where(&|x| &x.cluster == name));
            let namespace_keys = selection
                .namespace
                .as_ref()
                .map_or_else(Vec::new, |ns| keys_where(&|x| &x.exposed.namespace == ns));
            let workload_keys = selection
                .workload
                .as_ref()
                .map_or_else(Vec::new, |w| keys_where(&|x| &x.exposed.name == w));
            let filter = EdgeFilter {
                cluster: selection.cluster.as_ref().map(|(id, _)| *id),
                cluster_reach: Reaching::find(&mut tx, org, cluster_keys).await?,
                namespace: selection.namespace.as_deref(),
                namespace_reach: Reaching::find(&mut tx, org, namespace_keys).await?,
                workload: selection.workload.as_deref(),
                workload_reach: Reaching::find(&mut tx, org, workload_keys).await?,
                since: selection.since,
                after: page.and_then(|p| p.after.as_ref()),
                ..Default::default()
            };
            let read = match page {
                None => {
                    edges(&mut tx, org, &filter, limits.max_edges).await?.map(|edges| (edges, None))
                }
                Some(page) => {
                    edges_page(&mut tx, org, filter, page.limit, limits.max_edges).await?
                }
            };
            let read = read.map(|(edges, next)| (names.name(edges), next));
            let clusters = names.sorted;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(read.map(|(edges, next)| GraphData {
                clusters,
                edges,
                exposures,
                next,
            }))
        };
        run.await
            .map_err(|e| ReadError::from_sqlx(e, timeout))?
            .ok_or(ReadError::TooManyEdges { limit: limits.max_edges })
    }

    /// One cluster's edges (for its ClientIntents), optionally only of clients in one namespace.
    pub async fn cluster_edges(
        &self,
        org: Uuid,
        cluster: Uuid,
        namespace: Option<&str>,
        limits: &ReadLimits,
    ) -> Result<Vec<ClusterEdge>, ReadError> {
        let timeout = limits.statement_timeout;
        let run = async {
            let mut tx = tenant(&self.pool, org).await?;
            set_timeout(&mut tx, timeout).await?;
            let names = ClusterNames::read(&mut tx, org).await?;
            let edges = edges(
                &mut tx,
                org,
                &EdgeFilter {
                    cluster: Some(cluster),
                    client_namespace: namespace,
                    ..Default::default()
                },
                limits.max_edges,
            )
            .await?;
            let edges = edges.map(|edges| names.name(edges));
            tx.commit().await?;
            Ok::<_, sqlx::Error>(edges)
        };
        run.await
            .map_err(|e| ReadError::from_sqlx(e, timeout))?
            .ok_or(ReadError::TooManyEdges { limit: limits.max_edges })
    }

    /// Whether one cluster's export (optionally of one client namespace) holds at most
    /// `max_edges` edges: counted before a streamed export starts, so that the refusal is a 422
    /// and not a body cut short.
    pub async fn export_size_ok(
        &self,
        org: Uuid,
        cluster: Uuid,
        namespace: Option<&str>,
        limits: &ReadLimits,
    ) -> Result<(), ReadError> {
        let timeout = limits.statement_timeout;
        let limit = i64::try_from(limits.max_edges).unwrap_or(i64::MAX - 1);
        let run = async {
            let mut tx = tenant(&self.pool, org).await?;
            set_timeout(&mut tx, timeout).await?;
            let count = sqlx::query_scalar!(
                r#"SELECT count(*) AS "count!" FROM (
                     SELECT 1 FROM edges e
                     WHERE e.org_id = $1 AND e.cluster_id = $2
                           AND ($3::text IS NULL OR e.client_namespace COLLATE "C" = $3)
                     LIMIT $4) AS matching"#,
                org,
                cluster,
                namespace,
                limit + 1
            )
            .fetch_one(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(count <= limit)
        };
        match run.await {
            Ok(true) => Ok(()),
            Ok(false) => Err(ReadError::TooManyEdges { limit: limits.max_edges }),
            Err(e) => Err(ReadError::from_sqlx(e, timeout)),
        }
    }

    /// Sends one cluster's edges (optionally of one client namespace) to `sink` one client
    /// workload at a time, clients in byte order of (namespace, name): the order
    /// [`model::intents::client_intents`] sorts them in, so rendering each group and
    /// concatenating gives the unstreamed export. At most one client's edges (and the channel's
    /// capacity) are held at once. Past `max_edges` (ingest added edges since
    /// [`Store::export_size_ok`]) the read fails rather than pass the cap. The whole read,
    /// including the time the receiver takes, is cut off after the statement timeout; a dropped
    /// receiver ends it.
    pub async fn export_by_client(
        &self,
        org: Uuid,
        cluster: Uuid,
        namespace: Option<&str>,
        limits: &ReadLimits,
        sink: mpsc::Sender<Vec<Edge>>,
    ) -> Result<(), ReadError> {
        use futures::TryStreamExt;

        let timeout = limits.statement_timeout;
        let limit = i64::try_from(limits.max_edges).unwrap_or(i64::MAX - 1);
        let run = async {
            let mut tx = tenant(&self.pool, org).await?;
            set_timeout(&mut tx, timeout).await?;
            let mut rows = sqlx::query_as!(
                EdgeRow,
                r#"SELECT c.name AS cluster, e.client_namespace, e.client_name, e.client_kind, e.target_type, e.target_namespace, e.target_name,
                          e.target_kind, e.ports, e.domains, e.ips, e.internet_ports, e.actions, e.http, e.kafka, e.first_seen, e.last_seen, e.connections, e.bytes_sent, e.bytes_received
                   FROM edges e JOIN clusters c ON c.org_id = e.org_id AND c.id = e.cluster_id
                   WHERE e.org_id = $1 AND e.cluster_id = $2
                         AND ($3::text IS NULL OR e.client_namespace COLLATE "C" = $3)
                   ORDER BY e.client_namespace COLLATE "C", e.client_name COLLATE "C""#,
                org,
                cluster,
                namespace
            )
            .fetch(&mut *tx);
            let mut group: Vec<Edge> = Vec::new();
            let mut sent = 0i64;
            while let Some(row) = rows.try_next().await? {
                sent += 1;
                if sent > limit {
                    // Ingest added edges since the count: stop rather than pass the cap.
                    return Err(sqlx::Error::Protocol(format!(
                        "the export grew past {limit} edges while it was read"
                    )));
                }
                let edge = edge_from_row(row)?.edge;
                let same = group.first().is_none_or(|g| {
                    g.client.namespace == edge.client.namespace && g.client.name == edge.client.name
                });
                if !same && sink.send(std::mem::take(&mut group)).await.is_err() {
                    return Ok(());
                }
                group.push(edge);
            }
            drop(rows);
            if !group.is_empty() && sink.send(group).await.is_err() {
                return Ok(());
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(())
        };
        run.await.map_err(|e| ReadError::from_sqlx(e, timeout))
    }

    /// The org's exposed workloads (the cross-cluster merge reads them with the graph).
    pub async fn exposures(&self, org: Uuid) -> Result<Vec<ClusterExposure>, StoreError> {
        let mut tx = tenant(&self.pool, org).await?;
        let found = exposures(&mut tx, org).await?;
        tx.commit().await?;
        Ok(found)
    }
}

/// The addresses and hostnames an exposure is reached by, as the graph matches them.
fn exposure_keys(x: &ClusterExposure) -> impl Iterator<Item = String> + '_ {
    x.exposed
        .addresses
        .iter()
        .chain(&x.exposed.hostnames)
        .map(|k| k.trim_end_matches('.').to_owned())
}

pub(super) async fn set_timeout(
    tx: &mut PgConnection,
    timeout: Duration,
) -> Result<(), sqlx::Error> {
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128).to_string();
    sqlx::query_scalar!("SELECT set_config('statement_timeout', $1, true)", ms)
        .fetch_one(&mut *tx)
        .await?;
    // The filters are `($n IS NULL OR ...)`: plan each read for the values it has, so that a
    // namespace read uses the indexes even after PostgreSQL would switch to a generic plan.
    sqlx::query_scalar!("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
        .fetch_one(tx)
        .await
        .map(|_| ())
}

#[derive(Default)]
struct EdgeFilter<'a> {
    cluster: Option<Uuid>,
    /// With `cluster`: the internet edges reaching that cluster's exposures (they end in it).
    cluster_reach: Reaching,
    /// Clients in this namespace only (the ClientIntents export).
    client_namespace: Option<&'a str>,
    /// Either end in this namespace.
    namespace: Option<&'a str>,
    namespace_reach: Reaching,
    /// Either end named so.
    workload: Option<&'a str>,
    workload_reach: Reaching,
    since: Option<DateTime<Utc>>,
    /// Clients after this one only, in byte order of (namespace, name).
    after: Option<&'a ClientCursor>,
    /// Clients up to and including this one only.
    through: Option<&'a ClientCursor>,
}

/// Internet edges that reach some exposures, as primary-key parts: each of them has one of
/// `clusters` and one of `keys` (a superset when several clusters hold such edges).
#[derive(Default)]
struct Reaching {
    clusters: Vec<Uuid>,
    keys: Vec<Vec<u8>>,
}

impl Reaching {
    /// Through `internet_edges_reaching` (see its migration: the index it uses is out of the
    /// serving role's reach under row-level security).
    async fn find(
        tx: &mut PgConnection,
        org: Uuid,
        keys: Vec<String>,
    ) -> Result<Self, sqlx::Error> {
        if keys.is_empty() {
            return Ok(Self::default());
        }
        let rows = sqlx::query!(
            r#"SELECT cluster_id AS "cluster_id!", edge_key AS "edge_key!" FROM internet_edges_reaching($1, $2)"#,
            org,
            &keys
        )
        .fetch_all(tx)
        .await?;
        let mut reaching = Self::default();
        for r in rows {
            if !reaching.clusters.contains(&r.cluster_id) {
                reaching.clusters.push(r.cluster_id);
            }
            reaching.keys.push(r.edge_key);
        }
        Ok(reaching)
    }
}

/// A page of the edges that pass `filter` (whose `after` says where it starts): the clients that
/// come next, whole, about `limit` edges of them, and the last of them when more follow. `None`
/// when one client alone has more than `max` edges.
async fn edges_page(
    tx: &mut PgConnection,
    org: Uuid,
    filter: EdgeFilter<'_>,
    limit: usize,
    max: usize,
) -> Result<Option<(Vec<ClusterEdge>, Option<ClientCursor>)>, sqlx::Error> {
    let limit = limit.clamp(1, max.max(1));
    let mut rows = edges_upto(tx, org, &filter, limit + 1).await?;
    if rows.len() <= limit {
        return Ok(Some((rows, None)));
    }
    // The extra row's client may have edges past this read: keep only the clients before it.
    let cut = ClientCursor::of(&rows[limit]);
    rows.truncate(limit);
    while rows.last().is_some_and(|e| cut.is_client_of(e)) {
        rows.pop();
    }
    if rows.is_empty() {
        // One client has more edges than a page: it is the page, whole.
        let whole = EdgeFilter { through: Some(&cut), ..filter };
        return Ok(edges(tx, org, &whole, max).await?.map(|rows| (rows, Some(cut))));
    }
    let next = rows.last().map(ClientCursor::of);
    Ok(Some((rows, next)))
}

/// The org's edges that pass `filter`, named by cluster; `None` when there are more than `max`.
/// Where `filter` names either end, the rows are a superset of what the graph keeps: every edge
/// whose client or target matches, and every internet edge reaching a matching exposure (that
/// part of the plan drops out, as a constant, when no exposure matches: plans are custom; those
/// edges are found first, by [`Reaching::find`]).
async fn edges(
    tx: &mut PgConnection,
    org: Uuid,
    filter: &EdgeFilter<'_>,
    max: usize,
) -> Result<Option<Vec<ClusterEdge>>, sqlx::Error> {
    let rows = edges_upto(tx, org, filter, max.saturating_add(1)).await?;
    Ok((rows.len() <= max).then_some(rows))
}

/// The org's clusters by id (as text, as [`edges_upto`] reads them), read before the edges.
struct ClusterNames {
    by_id: std::collections::HashMap<String, String>,
    /// Their names, in the database's order.
    sorted: Vec<String>,
}

impl ClusterNames {
    async fn read(tx: &mut PgConnection, org: Uuid) -> Result<Self, sqlx::Error> {
        let rows = sqlx::query!(
            r#"SELECT id::text AS "id!", name FROM clusters WHERE org_id = $1 ORDER BY name"#,
            org
        )
        .fetch_all(tx)
        .await?;
        let sorted = rows.iter().map(|r| r.name.clone()).collect();
        Ok(Self { by_id: rows.into_iter().map(|r| (r.id, r.name)).collect(), sorted })
    }

    /// Names each edge's cluster. An edge of a cluster created after the names were read is
    /// left out, as that cluster is left out of the read's list of clusters.
    fn name(&self, edges: Vec<ClusterEdge>) -> Vec<ClusterEdge> {
        edges
            .into_iter()
            .filter_map(|mut e| {
                e.cluster = self.by_id.get(&e.cluster)?.clone();
                Some(e)
            })
            .collect()
    }
}

/// At most `take` of the org's edges that pass `filter`, in byte order of their clients'
/// (namespace, name) (a page's order; `edges_by_client` gives it without sorting when the
/// filter matches much of the organisation), each with its cluster's id as `cluster`: no join,
/// so that the planner sees one table and its order (see [`ClusterNames`]).
async fn edges_upto(
    tx: &mut PgConnection,
    org: Uuid,
    filter: &EdgeFilter<'_>,
    take: usize,
) -> Result<Vec<ClusterEdge>, sqlx::Error> {
    let (after_ns, after_name) = filter.after.map(|c| (&c.namespace, &c.name)).unzip();
    let (through_ns, through_name) = filter.through.map(|c| (&c.namespace, &c.name)).unzip();
    let rows = sqlx::query_as!(
        EdgeRow,
        r#"SELECT e.cluster_id::text AS "cluster!", e.client_namespace, e.client_name, e.client_kind, e.target_type, e.target_namespace, e.target_name,
                e.target_kind, e.ports, e.domains, e.ips, e.internet_ports, e.actions, e.http, e.kafka, e.first_seen, e.last_seen, e.connections, e.bytes_sent, e.bytes_received
         FROM edges e
         WHERE e.org_id = $1 AND ($3::timestamptz IS NULL OR e.last_seen >= $3)
               AND ($2::uuid IS NULL OR e.cluster_id = $2
                    OR (cardinality($6::bytea[]) > 0 AND e.target_type = 'internet'
                        AND e.cluster_id = ANY($11::uuid[]) AND e.edge_key = ANY($6::bytea[])))
               AND ($5::text IS NULL OR e.client_namespace COLLATE "C" = $5)
               AND ($7::text IS NULL OR e.client_namespace COLLATE "C" = $7 OR e.target_namespace = $7
                    OR (cardinality($8::bytea[]) > 0 AND e.target_type = 'internet'
                        AND e.cluster_id = ANY($12::uuid[]) AND e.edge_key = ANY($8::bytea[])))
               AND ($9::text IS NULL OR e.client_name COLLATE "C" = $9 OR e.target_name = $9
                    OR (cardinality($10::bytea[]) > 0 AND e.target_type = 'internet'
                        AND e.cluster_id = ANY($13::uuid[]) AND e.edge_key = ANY($10::bytea[])))
               AND ($14::text IS NULL
                    OR (e.client_namespace COLLATE "C", e.client_name COLLATE "C") > ($14::text, $15::text))
               AND ($16::text IS NULL
                    OR (e.client_namespace COLLATE "C", e.client_name COLLATE "C") <= ($16::text, $17::text))
         ORDER BY e.client_namespace COLLATE "C", e.client_name COLLATE "C"
         LIMIT $4"#,
        org,
        filter.cluster,
        filter.since,
        i64::try_from(take).unwrap_or(i64::MAX),
        filter.client_namespace,
        &filter.cluster_reach.keys,
        filter.namespace,
        &filter.namespace_reach.keys,
        filter.workload,
        &filter.workload_reach.keys,
        &filter.cluster_reach.clusters,
        &filter.namespace_reach.clusters,
        &filter.workload_reach.clusters,
        after_ns,
        after_name,
        through_ns,
        through_name,
    )
    .fetch_all(tx)
    .await?;
    rows.into_iter().map(edge_from_row).collect()
}

async fn exposures(tx: &mut PgConnection, org: Uuid) -> Result<Vec<ClusterExposure>, sqlx::Error> {
    let rows = sqlx::query!(
        "SELECT c.name AS cluster, x.namespace, x.name, x.kind, x.addresses, x.hostnames
         FROM exposed_workloads x JOIN clusters c ON c.org_id = x.org_id AND c.id = x.cluster_id
         WHERE x.org_id = $1 ORDER BY c.name, x.namespace, x.name",
        org
    )
    .fetch_all(tx)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ClusterExposure {
            cluster: r.cluster,
            exposed: ExposedWorkload {
                namespace: r.namespace,
                name: r.name,
                kind: r.kind,
                addresses: r.addresses,
                hostnames: r.hostnames,
            },
        })
        .collect())
}
