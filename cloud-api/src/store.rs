//! PostgreSQL: every tenant query runs in a transaction that names its organisation, as a login
//! role that row-level security applies to, and filters by `org_id` itself as well.
//!
//! - `credentials`: organisations, clusters and API tokens;
//! - `reads`: the bounded reads behind the access graph and ClientIntents;
//! - `summary`: the aggregated graph, kept between reads;
//! - `audit`: the audit log of changes to clusters, tokens and retention;
//! - `retention`: each organisation's retention and the batched pruning;
//! - `roles`: the serving login role (created by `migrate`, checked by `serve`).
//!
//! Operations fail with [`StoreError`]. The fixed queries are checked against the schema at
//! build time (`sqlx::query!`), from the data in `cloud-api/.sqlx/` (regenerate it with
//! `scripts/sqlx-prepare.sh` after changing a query or a migration).

mod audit;
mod cluster_name;
mod credentials;
mod edge_row;
mod error;
mod reads;
mod retention;
pub mod roles;
mod summary;

pub use audit::{Action, Actor, AuditEntry};
pub use cluster_name::{ClusterName, InvalidClusterName};
pub use credentials::{ApiTokenInfo, NewApiToken, Scopes};
pub use error::StoreError;
pub use reads::{ClientCursor, GraphData, GraphSelection, PageRequest, ReadError, ReadLimits};
pub use retention::{Cursor, Pruned as PrunedBatch, DEFAULT_RETENTION_DAYS, RETENTION_DAYS};
pub use summary::{namespace_id, GraphSummary, SummarySince, KEPT_WINDOWS};

use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use model::edge::{merge_http, merge_kafka, HttpResource, KafkaTopic};
use model::{merge_edges, Edge, EdgeReport, ExposedWorkload, Target};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres, Transaction};
use uuid::Uuid;

use crate::secrets::{HashKey, SecretHasher};

/// The role holding the API's grants: neither superuser nor table owner, so row-level security
/// always applies to it. The serving login role is a member of it (see `roles`).
pub const APP_ROLE: &str = "intentmap_app";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Applies pending migrations as the connecting (owner) user.
pub async fn migrate(database_url: &str) -> Result<(), sqlx::migrate::MigrateError> {
    let mut conn = PgConnection::connect(database_url).await?;
    MIGRATOR.run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    hasher: Arc<SecretHasher>,
    refreshes: summary::Refreshes,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ClusterCredentials {
    pub cluster_id: Uuid,
    #[schema(value_type = String)]
    pub name: ClusterName,
    pub client_id: String,
    pub client_secret: String,
}

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ClusterInfo {
    pub id: Uuid,
    pub name: String,
    pub client_id: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_report_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewOrg {
    pub org_id: Uuid,
    pub name: String,
    pub api_token: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct IngestOutcome {
    /// The report had been applied before; nothing changed.
    pub duplicate: bool,
    /// Distinct edges merged from this report.
    pub edges_merged: usize,
}

impl Store {
    /// Connects as the URL's role (no `SET ROLE`: the serving role is a login role of its own,
    /// so a pooler in transaction mode changes nothing). Secrets are hashed with the database's
    /// key.
    pub async fn connect(database_url: &str, max_connections: u32) -> Result<Self, StoreError> {
        Self::connect_with_keys(database_url, max_connections, Vec::new()).await
    }

    /// [`Store::connect`], hashing secrets with the first of `keys` (verifying with all of them
    /// and the database's key); without keys, with the database's key.
    pub async fn connect_with_keys(
        database_url: &str,
        max_connections: u32,
        keys: Vec<HashKey>,
    ) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(database_url)?.application_name("cloud-api");
        let pool =
            PgPoolOptions::new().max_connections(max_connections).connect_with(options).await?;
        let hasher = credentials::load_hasher(&pool, keys).await?;
        Ok(Self { pool, hasher: Arc::new(hasher), refreshes: Default::default() })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn hasher(&self) -> &SecretHasher {
        &self.hasher
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar!("SELECT 1").fetch_one(&self.pool).await?;
        Ok(())
    }

    /// A transaction in which only `org`'s rows are visible or writable.
    pub async fn tenant(&self, org: Uuid) -> Result<Transaction<'static, Postgres>, StoreError> {
        Ok(tenant(&self.pool, org).await?)
    }

    // === ingest ===

    /// Applies a report exactly once: the report id, the merged edges and the exposed set are
    /// written in one transaction, or nothing is.
    pub async fn ingest(
        &self,
        org: Uuid,
        cluster: Uuid,
        report: &EdgeReport,
    ) -> Result<IngestOutcome, StoreError> {
        let edges = merge_edges(report.edges.iter().cloned());
        let run = async {
            let mut tx = tenant(&self.pool, org).await?;
            let fresh = sqlx::query_scalar!(
                "INSERT INTO reports (org_id, cluster_id, report_id, generated_at, edge_count) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT DO NOTHING RETURNING 1",
                org,
                cluster,
                report.report_id,
                report.generated_at,
                i32::try_from(edges.len()).unwrap_or(i32::MAX),
            )
            .fetch_optional(&mut *tx)
            .await?;
            if fresh.is_none() {
                tx.commit().await?;
                return Ok(IngestOutcome { duplicate: true, edges_merged: 0 });
            }
            upsert_edges(&mut tx, org, cluster, &edges).await?;
            replace_exposed_if_newer(&mut tx, org, cluster, report.generated_at, &report.exposed)
                .await?;
            sqlx::query!(
                "UPDATE clusters SET last_report_at = now(), edges_version = edges_version + 1 WHERE org_id = $1 AND id = $2",
                org,
                cluster
            )
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(IngestOutcome { duplicate: false, edges_merged: edges.len() })
        };
        run.await.map_err(StoreError::storing_report)
    }
}

/// A transaction on `pool` in which only `org`'s rows are visible or writable.
async fn tenant(pool: &PgPool, org: Uuid) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    set_org(&mut tx, org).await?;
    Ok(tx)
}

/// Names the transaction's organisation: row-level security shows and admits its rows only.
async fn set_org(tx: &mut PgConnection, org: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query_scalar!("SELECT set_config('app.org_id', $1, true)", org.to_string())
        .fetch_one(tx)
        .await
        .map(|_| ())
}

// === edge rows ===

/// Column-wise arrays for one `INSERT ... SELECT FROM UNNEST(...)`: one round trip per report.
/// Array-valued columns travel as comma-joined text (report validation keeps commas out of them);
/// `http` and `kafka` entries, whose paths may hold commas, as newline-joined text (validation
/// keeps control characters out of paths, and topic names are `[a-zA-Z0-9._-]`).
#[derive(Default)]
struct EdgeColumns {
    client_namespace: Vec<String>,
    client_name: Vec<String>,
    target_type: Vec<&'static str>,
    target_namespace: Vec<String>,
    target_name: Vec<String>,
    client_kind: Vec<Option<String>>,
    target_kind: Vec<Option<String>>,
    ports: Vec<String>,
    domains: Vec<String>,
    ips: Vec<String>,
    internet_ports: Vec<String>,
    actions: Vec<String>,
    http: Vec<String>,
    kafka: Vec<String>,
    first_seen: Vec<DateTime<Utc>>,
    last_seen: Vec<DateTime<Utc>>,
    connections: Vec<i64>,
    bytes_sent: Vec<Option<i64>>,
    bytes_received: Vec<Option<i64>>,
    edge_key: Vec<Vec<u8>>,
}

/// The stored key of an edge: 16 bytes of SHA-256 over its key columns, NUL-separated (names
/// cannot contain NUL).
pub fn edge_key_hash(key: &model::EdgeKey) -> [u8; 16] {
    let mut h = Sha256::new();
    for part in [
        key.client_namespace.as_str(),
        key.client_name.as_str(),
        key.target_type,
        key.target_namespace.as_str(),
        key.target_name.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    h.finalize()[..16].try_into().expect("SHA-256 is longer than 16 bytes")
}

fn join<T: ToString>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

impl EdgeColumns {
    fn push(&mut self, edge: &Edge) {
        let key = edge.key();
        self.edge_key.push(edge_key_hash(&key).to_vec());
        self.client_namespace.push(key.client_namespace);
        self.client_name.push(key.client_name);
        self.target_type.push(key.target_type);
        self.target_namespace.push(key.target_namespace);
        self.target_name.push(key.target_name);
        self.client_kind.push(edge.client.kind.clone());
        let (target_kind, domains, ips, internet_ports, actions) = match &edge.target {
            Target::Kubernetes(w) | Target::Kafka(w) => {
                (w.kind.clone(), String::new(), String::new(), String::new(), String::new())
            }
            Target::Service(_) => {
                (None, String::new(), String::new(), String::new(), String::new())
            }
            Target::Internet(i) | Target::Incoming(i) => {
                (None, join(&i.domains), join(&i.ips), join(&i.ports), String::new())
            }
            Target::Aws(a) => (None, String::new(), String::new(), String::new(), join(&a.actions)),
        };
        self.target_kind.push(target_kind);
        self.ports.push(join(&edge.ports));
        self.domains.push(domains);
        self.ips.push(ips);
        self.internet_ports.push(internet_ports);
        self.actions.push(actions);
        self.http.push(encode_http(&edge.http).join("\n"));
        self.kafka.push(encode_kafka(&edge.kafka).join("\n"));
        self.first_seen.push(edge.first_seen);
        self.last_seen.push(edge.last_seen);
        self.connections.push(i64::try_from(edge.connections).unwrap_or(i64::MAX));
        let bytes = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.bytes_sent.push(edge.bytes.map(|t| bytes(t.sent)));
        self.bytes_received.push(edge.bytes.map(|t| bytes(t.received)));
    }
}

/// A stored edge keeps at most this many ports, domains, IPs, internet ports and actions (the
/// alphabetically first): the wire format's per-edge limit, so that merging reports cannot grow
/// an edge past what one report may carry.
const STORED_LIST_MAX: i64 = model::limits::MAX_ADDRESSES_PER_LIST as i64;
/// ...and at most this many `METHOD /path` and `topic<TAB>operation` entries.
const STORED_DETAIL_MAX: i64 = 16 * model::limits::MAX_RESOURCES_PER_EDGE as i64;

async fn upsert_edges(
    tx: &mut PgConnection,
    org: Uuid,
    cluster: Uuid,
    edges: &[Edge],
) -> Result<(), sqlx::Error> {
    if edges.is_empty() {
        return Ok(());
    }
    let mut c = EdgeColumns::default();
    for edge in edges {
        c.push(edge);
    }
    sqlx::query!(
        "INSERT INTO edges AS e (org_id, cluster_id, client_namespace, client_name, target_type, target_namespace, target_name,
                                 client_kind, target_kind, ports, domains, ips, internet_ports, actions, http, kafka,
                                 first_seen, last_seen, connections, edge_key, bytes_sent, bytes_received)
         SELECT $1, $2, u.cns, u.cn, u.tt, u.tns, u.tn, u.ck, u.tk,
                string_to_array(u.ports, ','), string_to_array(u.domains, ','), string_to_array(u.ips, ','),
                string_to_array(u.iports, ',')::integer[], string_to_array(u.actions, ','),
                string_to_array(u.http, E'\n'), string_to_array(u.kafka, E'\n'), u.fs, u.ls, u.n, u.k, u.bs, u.br
         FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[],
                     $11::text[], $12::text[], $13::text[], $14::text[], $15::timestamptz[], $16::timestamptz[], $17::int8[], $18::bytea[],
                     $19::text[], $20::text[], $23::int8[], $24::int8[])
              AS u(cns, cn, tt, tns, tn, ck, tk, ports, domains, ips, iports, actions, fs, ls, n, k, http, kafka, bs, br)
         ON CONFLICT (org_id, cluster_id, edge_key) DO UPDATE SET
             client_kind = COALESCE(EXCLUDED.client_kind, e.client_kind),
             target_kind = COALESCE(EXCLUDED.target_kind, e.target_kind),
             -- A re-report mostly carries what is stored already (most edges carry no http or
             -- kafka at all): skip the sort then.
             ports = CASE WHEN EXCLUDED.ports <@ e.ports THEN e.ports
                          ELSE ARRAY(SELECT DISTINCT x FROM unnest(e.ports || EXCLUDED.ports) x ORDER BY 1 LIMIT $21) END,
             domains = CASE WHEN EXCLUDED.domains <@ e.domains THEN e.domains
                            ELSE ARRAY(SELECT DISTINCT x FROM unnest(e.domains || EXCLUDED.domains) x ORDER BY 1 LIMIT $21) END,
             ips = CASE WHEN EXCLUDED.ips <@ e.ips THEN e.ips
                        ELSE ARRAY(SELECT DISTINCT x FROM unnest(e.ips || EXCLUDED.ips) x ORDER BY 1 LIMIT $21) END,
             internet_ports = CASE WHEN EXCLUDED.internet_ports <@ e.internet_ports THEN e.internet_ports
                                   ELSE ARRAY(SELECT DISTINCT x FROM unnest(e.internet_ports || EXCLUDED.internet_ports) x ORDER BY 1 LIMIT $21) END,
             actions = CASE WHEN EXCLUDED.actions <@ e.actions THEN e.actions
                            ELSE ARRAY(SELECT DISTINCT x FROM unnest(e.actions || EXCLUDED.actions) x ORDER BY 1 LIMIT $21) END,
             http = CASE WHEN EXCLUDED.http <@ e.http THEN e.http
                         ELSE ARRAY(SELECT DISTINCT x FROM unnest(e.http || EXCLUDED.http) x ORDER BY 1 LIMIT $22) END,
             kafka = CASE WHEN EXCLUDED.kafka <@ e.kafka THEN e.kafka
                          ELSE ARRAY(SELECT DISTINCT x FROM unnest(e.kafka || EXCLUDED.kafka) x ORDER BY 1 LIMIT $22) END,
             first_seen = LEAST(e.first_seen, EXCLUDED.first_seen),
             last_seen = GREATEST(e.last_seen, EXCLUDED.last_seen),
             -- Saturating: a count near 2^63 stays there rather than failing every later report.
             connections = CASE WHEN e.connections > 9223372036854775807 - EXCLUDED.connections THEN 9223372036854775807
                                ELSE e.connections + EXCLUDED.connections END,
             -- Unmeasured (NULL) plus measured is the measured value; saturating like connections.
             bytes_sent = CASE WHEN EXCLUDED.bytes_sent IS NULL THEN e.bytes_sent
                               WHEN e.bytes_sent IS NULL THEN EXCLUDED.bytes_sent
                               WHEN e.bytes_sent > 9223372036854775807 - EXCLUDED.bytes_sent THEN 9223372036854775807
                               ELSE e.bytes_sent + EXCLUDED.bytes_sent END,
             bytes_received = CASE WHEN EXCLUDED.bytes_received IS NULL THEN e.bytes_received
                                   WHEN e.bytes_received IS NULL THEN EXCLUDED.bytes_received
                                   WHEN e.bytes_received > 9223372036854775807 - EXCLUDED.bytes_received THEN 9223372036854775807
                                   ELSE e.bytes_received + EXCLUDED.bytes_received END",
        org,
        cluster,
        &c.client_namespace,
        &c.client_name,
        &c.target_type as &[&str],
        &c.target_namespace,
        &c.target_name,
        &c.client_kind as &[Option<String>],
        &c.target_kind as &[Option<String>],
        &c.ports,
        &c.domains,
        &c.ips,
        &c.internet_ports,
        &c.actions,
        &c.first_seen,
        &c.last_seen,
        &c.connections,
        &c.edge_key,
        &c.http,
        &c.kafka,
        STORED_LIST_MAX,
        STORED_DETAIL_MAX,
        &c.bytes_sent as &[Option<i64>],
        &c.bytes_received as &[Option<i64>],
    )
    .execute(tx)
    .await?;
    Ok(())
}

async fn replace_exposed_if_newer(
    tx: &mut PgConnection,
    org: Uuid,
    cluster: Uuid,
    generated_at: DateTime<Utc>,
    exposed: &[ExposedWorkload],
) -> Result<(), sqlx::Error> {
    // A set dated more than a day ahead (stored before timestamps were bounded) is stale, not newest.
    let newer = sqlx::query_scalar!(
        "UPDATE clusters SET exposed_as_of = $3 WHERE org_id = $1 AND id = $2 AND (exposed_as_of IS NULL OR exposed_as_of <= $3 OR exposed_as_of > now() + interval '1 day') RETURNING 1",
        org,
        cluster,
        generated_at
    )
    .fetch_optional(&mut *tx)
    .await?;
    if newer.is_none() {
        return Ok(());
    }
    sqlx::query!(
        "DELETE FROM exposed_workloads WHERE org_id = $1 AND cluster_id = $2",
        org,
        cluster
    )
    .execute(&mut *tx)
    .await?;
    let merged = ExposedWorkload::merge_all(exposed);
    if merged.is_empty() {
        return Ok(());
    }
    let (mut ns, mut name, mut kind, mut addrs, mut hosts) =
        (vec![], vec![], vec![], vec![], vec![]);
    for x in merged {
        ns.push(x.namespace);
        name.push(x.name);
        kind.push(x.kind);
        addrs.push(x.addresses.join(","));
        hosts.push(x.hostnames.join(","));
    }
    sqlx::query!(
        "INSERT INTO exposed_workloads (org_id, cluster_id, namespace, name, kind, addresses, hostnames)
         SELECT $1, $2, u.ns, u.name, u.kind, string_to_array(u.a, ','), string_to_array(u.h, ',')
         FROM UNNEST($3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) AS u(ns, name, kind, a, h)",
        org,
        cluster,
        &ns,
        &name,
        &kind as &[Option<String>],
        &addrs,
        &hosts
    )
    .execute(&mut *tx)
    .await?;
    Ok(())
}

// === http and kafka entries ===
// One text entry per (path, method) and per (topic, operation), so that the array union that
// merges ports and actions merges these too. The format is in the migration that added them.

const DENIED: &str = "denied";

/// `GET /api` per method, or `/api` alone for a path without methods.
pub fn encode_http(http: &[HttpResource]) -> Vec<String> {
    let mut out = Vec::new();
    for r in http {
        if r.methods.is_empty() {
            out.push(r.path.clone());
        }
        out.extend(r.methods.iter().map(|m| format!("{m} {}", r.path)));
    }
    out
}

pub fn decode_http(entries: &[String]) -> Result<Vec<HttpResource>, String> {
    let resources = entries
        .iter()
        .map(|entry| {
            if entry.starts_with('/') {
                return Ok(HttpResource { path: entry.clone(), methods: vec![] });
            }
            match entry.split_once(' ') {
                Some((method, path)) if path.starts_with('/') => {
                    Ok(HttpResource { path: path.to_owned(), methods: vec![method.to_owned()] })
                }
                _ => Err(format!(
                    "stored HTTP entry {entry:?} is neither \"METHOD /path\" nor \"/path\""
                )),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(merge_http(&resources, &[]))
}

/// `topic\toperation` per operation, `topic\toperation\tdenied` for one the broker refused, or
/// `topic` alone for a topic without operations.
pub fn encode_kafka(kafka: &[KafkaTopic]) -> Vec<String> {
    let mut out = Vec::new();
    for t in kafka {
        if t.operations.is_empty() && t.denied.is_empty() {
            out.push(t.name.clone());
        }
        for op in model::edge::union(&t.operations, &t.denied) {
            out.push(if t.denied.contains(&op) {
                format!("{}\t{op}\t{DENIED}", t.name)
            } else {
                format!("{}\t{op}", t.name)
            });
        }
    }
    out
}

pub fn decode_kafka(entries: &[String]) -> Result<Vec<KafkaTopic>, String> {
    let topics = entries
        .iter()
        .map(|entry| {
            let mut parts = entry.split('\t');
            let name = parts.next().unwrap_or_default().to_owned();
            let topic = match (parts.next(), parts.next(), parts.next()) {
                (None, _, _) => KafkaTopic { name, operations: vec![], denied: vec![] },
                (Some(op), None, _) => KafkaTopic { name, operations: vec![op.to_owned()], denied: vec![] },
                (Some(op), Some(DENIED), None) => KafkaTopic { name, operations: vec![op.to_owned()], denied: vec![op.to_owned()] },
                _ => return Err(format!("stored Kafka entry {entry:?} is not \"topic\", \"topic<TAB>operation\" or \"topic<TAB>operation<TAB>denied\"")),
            };
            Ok(topic)
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(merge_kafka(&topics, &[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn http_entries_round_trip_and_union_like_the_model_merges() {
        let a = vec![
            HttpResource { path: "/api cart,x".into(), methods: strings(&["GET", "POST"]) },
            HttpResource { path: "/healthz".into(), methods: vec![] },
        ];
        let b = vec![
            HttpResource { path: "/api cart,x".into(), methods: strings(&["GET", "PUT"]) },
            HttpResource { path: "/healthz".into(), methods: strings(&["GET"]) },
        ];
        assert_eq!(encode_http(&a), strings(&["GET /api cart,x", "POST /api cart,x", "/healthz"]));
        assert_eq!(decode_http(&encode_http(&a)).unwrap(), a);
        // What the database's DISTINCT union of both rows decodes to is what the model merges.
        let mut stored = encode_http(&a);
        stored.extend(encode_http(&b));
        stored.sort();
        stored.dedup();
        assert_eq!(decode_http(&stored).unwrap(), merge_http(&a, &b));
        assert!(decode_http(&strings(&["GET"])).is_err());
        assert_eq!(decode_http(&[]).unwrap(), vec![]);
    }

    #[test]
    fn kafka_entries_round_trip_and_keep_denied_operations() {
        let a = vec![
            KafkaTopic {
                name: "orders".into(),
                operations: strings(&["describe", "produce"]),
                denied: strings(&["describe"]),
            },
            KafkaTopic { name: "empty".into(), operations: vec![], denied: vec![] },
        ];
        let b = vec![KafkaTopic {
            name: "orders".into(),
            operations: strings(&["consume", "describe"]),
            denied: vec![],
        }];
        assert_eq!(
            encode_kafka(&a),
            strings(&["orders\tdescribe\tdenied", "orders\tproduce", "empty"])
        );
        assert_eq!(decode_kafka(&encode_kafka(&a)).unwrap(), merge_kafka(&a, &[]));
        let mut stored = encode_kafka(&a);
        stored.extend(encode_kafka(&b));
        stored.sort();
        stored.dedup();
        assert_eq!(decode_kafka(&stored).unwrap(), merge_kafka(&a, &b));
        assert!(decode_kafka(&strings(&["orders\tconsume\tallowed"])).is_err());
    }
}
