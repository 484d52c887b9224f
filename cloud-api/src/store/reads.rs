//! The reads behind the access graph and ClientIntents, bounded: at most `max_edges` rows come
//! back (one more is fetched to know there are more), and every statement of the read is cut off
//! after `statement_timeout`. One transaction, so the clusters, edges and exposures agree.

use std::time::Duration;

use chrono::{DateTime, Utc};
use model::graph::{ClusterEdge, ClusterExposure};
use model::{
    AwsTarget, Edge, ExposedWorkload, InternetTarget, PortSpec, ServiceRef, Target, WorkloadRef,
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::{decode_http, decode_kafka, tenant, Store, StoreError};

#[derive(Debug, Clone)]
pub struct ReadLimits {
    /// The most edges one read returns; a read that would return more is refused.
    pub max_edges: usize,
    /// PostgreSQL's `statement_timeout` for each statement of a read.
    pub statement_timeout: Duration,
}

impl Default for ReadLimits {
    fn default() -> Self {
        Self { max_edges: 100_000, statement_timeout: Duration::from_secs(10) }
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
    fn from_sqlx(e: sqlx::Error, timeout: Duration) -> Self {
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
}

impl Store {
    /// The org's clusters, its edges seen since `since` and its exposed workloads.
    pub async fn graph(
        &self,
        org: Uuid,
        since: Option<DateTime<Utc>>,
        limits: &ReadLimits,
    ) -> Result<GraphData, ReadError> {
        let timeout = limits.statement_timeout;
        let run = async {
            let mut tx = tenant(&self.pool, org).await?;
            set_timeout(&mut tx, timeout).await?;
            let clusters = sqlx::query_scalar!(
                "SELECT name FROM clusters WHERE org_id = $1 ORDER BY name",
                org
            )
            .fetch_all(&mut *tx)
            .await?;
            let edges =
                edges(&mut tx, org, EdgeFilter { since, ..Default::default() }, limits.max_edges)
                    .await?;
            let exposures = exposures(&mut tx, org).await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(edges.map(|edges| GraphData { clusters, edges, exposures }))
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
            let edges = edges(
                &mut tx,
                org,
                EdgeFilter { cluster: Some(cluster), client_namespace: namespace, since: None },
                limits.max_edges,
            )
            .await?;
            tx.commit().await?;
            Ok::<_, sqlx::Error>(edges)
        };
        run.await
            .map_err(|e| ReadError::from_sqlx(e, timeout))?
            .ok_or(ReadError::TooManyEdges { limit: limits.max_edges })
    }

    /// The org's exposed workloads (the cross-cluster merge reads them with the graph).
    pub async fn exposures(&self, org: Uuid) -> Result<Vec<ClusterExposure>, StoreError> {
        let mut tx = tenant(&self.pool, org).await?;
        let found = exposures(&mut tx, org).await?;
        tx.commit().await?;
        Ok(found)
    }
}

async fn set_timeout(tx: &mut PgConnection, timeout: Duration) -> Result<(), sqlx::Error> {
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128).to_string();
    sqlx::query_scalar!("SELECT set_config('statement_timeout', $1, true)", ms)
        .fetch_one(tx)
        .await
        .map(|_| ())
}

#[derive(Default)]
struct EdgeFilter<'a> {
    cluster: Option<Uuid>,
    client_namespace: Option<&'a str>,
    since: Option<DateTime<Utc>>,
}

/// The org's edges that pass `filter`, named by cluster; `None` when there are more than `max`.
async fn edges(
    tx: &mut PgConnection,
    org: Uuid,
    filter: EdgeFilter<'_>,
    max: usize,
) -> Result<Option<Vec<ClusterEdge>>, sqlx::Error> {
    let rows = sqlx::query_as!(
        EdgeRow,
        "SELECT c.name AS cluster, e.client_namespace, e.client_name, e.client_kind, e.target_type, e.target_namespace, e.target_name,
                e.target_kind, e.ports, e.domains, e.ips, e.internet_ports, e.actions, e.http, e.kafka, e.first_seen, e.last_seen, e.connections
         FROM edges e JOIN clusters c ON c.org_id = e.org_id AND c.id = e.cluster_id
         WHERE e.org_id = $1 AND ($2::uuid IS NULL OR e.cluster_id = $2) AND ($3::timestamptz IS NULL OR e.last_seen >= $3)
               AND ($5::text IS NULL OR e.client_namespace = $5)
         LIMIT $4",
        org,
        filter.cluster,
        filter.since,
        i64::try_from(max).unwrap_or(i64::MAX - 1) + 1,
        filter.client_namespace
    )
    .fetch_all(tx)
    .await?;
    if rows.len() > max {
        return Ok(None);
    }
    rows.into_iter().map(edge_from_row).collect::<Result<Vec<_>, _>>().map(Some)
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

/// An edge as stored, named by its cluster.
struct EdgeRow {
    cluster: String,
    client_namespace: String,
    client_name: String,
    client_kind: Option<String>,
    target_type: String,
    target_namespace: String,
    target_name: String,
    target_kind: Option<String>,
    ports: Vec<String>,
    domains: Vec<String>,
    ips: Vec<String>,
    internet_ports: Vec<i32>,
    actions: Vec<String>,
    http: Vec<String>,
    kafka: Vec<String>,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    connections: i64,
}

fn edge_from_row(r: EdgeRow) -> Result<ClusterEdge, sqlx::Error> {
    let decode = |e: String| sqlx::Error::Decode(e.into());
    let ports = r
        .ports
        .iter()
        .map(|p| p.parse::<PortSpec>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(decode)?;
    let (target_namespace, target_name) = (r.target_namespace, r.target_name);
    let target = match r.target_type.as_str() {
        "kubernetes" => Target::Kubernetes(WorkloadRef {
            namespace: target_namespace,
            name: target_name,
            kind: r.target_kind,
        }),
        "service" => Target::Service(ServiceRef { namespace: target_namespace, name: target_name }),
        "internet" => Target::Internet(InternetTarget {
            domains: r.domains,
            ips: r.ips,
            ports: r.internet_ports.into_iter().filter_map(|p| u16::try_from(p).ok()).collect(),
        }),
        "aws" => Target::Aws(AwsTarget { arn: target_name, actions: r.actions }),
        "kafka" => Target::Kafka(WorkloadRef {
            namespace: target_namespace,
            name: target_name,
            kind: r.target_kind,
        }),
        other => return Err(decode(format!("unknown target_type {other:?}"))),
    };
    Ok(ClusterEdge {
        cluster: r.cluster,
        edge: Edge {
            client: WorkloadRef {
                namespace: r.client_namespace,
                name: r.client_name,
                kind: r.client_kind,
            },
            target,
            ports,
            first_seen: r.first_seen,
            last_seen: r.last_seen,
            connections: r.connections.max(0) as u64,
            http: decode_http(&r.http).map_err(decode)?,
            kafka: decode_kafka(&r.kafka).map_err(decode)?,
        },
    })
}
