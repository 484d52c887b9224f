//! The schema stays distributable by organisation (Citus, see `docs/citus.md`): checked on a
//! real PostgreSQL after every migration.
//!
//! - every table is classified: a tenant table (distributed by its organisation column), a
//!   reference table (copied to every node) or local to the coordinator; a new table must be
//!   added to one of the lists below;
//! - every primary key, unique constraint and unique index of a tenant table leads with the
//!   organisation column;
//! - every foreign key of a tenant table points at a reference table, or at a tenant table with
//!   the organisation column matched to the organisation column;
//! - tenant tables have no triggers, rules or exclusion constraints, and identity columns are
//!   `bigint` (what Citus accepts on distributed tables); row-level security is forced on them;
//! - every store query (`cloud-api/.sqlx/`) that names a tenant table names its organisation
//!   column too, so each is routed to one organisation's shard;
//! - functions that read tenant tables without an organisation (SECURITY DEFINER) are the known
//!   ones.
//!
//! Each exception is listed with its reason; `docs/citus.md` says what happens to it on Citus.

use std::collections::{BTreeMap, BTreeSet};

use sqlx::{Connection, PgConnection};

/// Tenant tables and the column each is distributed by.
const TENANT_TABLES: &[(&str, &str)] = &[
    ("organizations", "id"),
    ("api_tokens", "org_id"),
    ("clusters", "org_id"),
    ("reports", "org_id"),
    ("edges", "org_id"),
    ("exposed_workloads", "org_id"),
    ("audit_log", "org_id"),
    ("graph_summaries", "org_id"),
];

/// Reference tables: small, the same for every organisation, copied to every node.
const REFERENCE_TABLES: &[&str] = &["token_hash_key"];

/// Tables that stay on the coordinator only.
const LOCAL_TABLES: &[(&str, &str)] =
    &[("_sqlx_migrations", "migration bookkeeping, read by `serve` at start-up only")];

/// Unique constraints of tenant tables that do not lead with the organisation column.
const UNIQUE_EXCEPTIONS: &[(&str, &str)] = &[
    (
        "api_tokens_id_key",
        "authentication finds an API token by its id before the organisation is known; \
         on Citus it becomes a lookup in the reference table credential_index (docs/citus.md), \
         and this constraint is dropped",
    ),
    (
        "clusters_id_key",
        "cluster ids are globally unique (UUIDv4) and a JWT names one; on Citus uniqueness \
         moves to credential_index like the client ID's",
    ),
    (
        "clusters_client_id_key",
        "/oauth/token finds a cluster by its client ID before the organisation is known; \
         on Citus that lookup goes through the reference table credential_index",
    ),
];

/// SECURITY DEFINER functions, which read tenant tables before (or without) an organisation.
const CROSS_ORG_FUNCTIONS: &[(&str, &str)] = &[
    ("auth_cluster_client", "finds a cluster by client ID at /oauth/token; one row"),
    ("auth_api_token", "finds an API token by id on every API request; one row"),
    ("retention_orgs", "the pruner's list of organisation ids; no tenant data"),
    (
        "internet_edges_reaching",
        "the keys of the caller's own organisation's internet edges reaching some addresses \
         (it answers nothing for another organisation); distributed by its org argument",
    ),
];

async fn migrated() -> PgConnection {
    let pg =
        testkit::pg::server().await.expect("PostgreSQL (scripts/ensure-postgres.sh installs it)");
    let db = pg.fresh_database("citus_ready").await.expect("a fresh database");
    cloud_api::migrate(&db).await.expect("migrations apply");
    PgConnection::connect(&db).await.expect("connect")
}

fn dist_column(table: &str) -> Option<&'static str> {
    TENANT_TABLES.iter().find(|(t, _)| *t == table).map(|(_, c)| *c)
}

#[tokio::test]
async fn every_table_is_classified() {
    let mut db = migrated().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p') ORDER BY 1",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let known: BTreeSet<&str> = TENANT_TABLES
        .iter()
        .map(|(t, _)| *t)
        .chain(REFERENCE_TABLES.iter().copied())
        .chain(LOCAL_TABLES.iter().map(|(t, _)| *t))
        .collect();
    let found: BTreeSet<&str> = tables.iter().map(String::as_str).collect();
    let unclassified: Vec<_> = found.difference(&known).collect();
    assert!(
        unclassified.is_empty(),
        "tables {unclassified:?} are neither tenant, reference nor local tables: add each to a \
         list in cloud-api/tests/citus_ready.rs and to docs/citus.md"
    );
    let missing: Vec<_> = known.difference(&found).collect();
    assert!(missing.is_empty(), "listed tables {missing:?} no longer exist: update the lists");
    // Every tenant table has its organisation column, NOT NULL.
    for (table, column) in TENANT_TABLES {
        let not_null: Option<bool> = sqlx::query_scalar(
            "SELECT a.attnotnull FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attname = $2 AND NOT a.attisdropped",
        )
        .bind(table)
        .bind(column)
        .fetch_optional(&mut db)
        .await
        .unwrap();
        assert_eq!(not_null, Some(true), "{table}.{column} must exist and be NOT NULL");
    }
}

#[tokio::test]
async fn every_unique_key_of_a_tenant_table_leads_with_the_organisation() {
    let mut db = migrated().await;
    // Every unique index: those of primary keys and unique constraints, and any other.
    let rows: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "SELECT t.relname::text, i.relname::text,
                ARRAY(SELECT a.attname::text FROM unnest(x.indkey::int2[]) WITH ORDINALITY k(attnum, n)
                      LEFT JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k.attnum
                      ORDER BY k.n)
         FROM pg_index x JOIN pg_class t ON t.oid = x.indrelid JOIN pg_class i ON i.oid = x.indexrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = current_schema() AND x.indisunique",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut seen_exceptions = BTreeSet::new();
    let mut bad = Vec::new();
    for (table, index, columns) in &rows {
        let Some(dist) = dist_column(table) else { continue };
        if columns.first().map(String::as_str) == Some(dist) {
            continue;
        }
        if UNIQUE_EXCEPTIONS.iter().any(|(name, _)| name == index) {
            seen_exceptions.insert(index.as_str());
            continue;
        }
        bad.push(format!("{table}: {index} on {columns:?}"));
    }
    assert!(
        bad.is_empty(),
        "unique keys that do not lead with the organisation column (Citus cannot enforce them \
         per shard): {bad:?}; put the organisation column first, or list the key in \
         UNIQUE_EXCEPTIONS with the reason and the plan in docs/citus.md"
    );
    let stale: Vec<_> = UNIQUE_EXCEPTIONS
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !seen_exceptions.contains(n))
        .collect();
    assert!(stale.is_empty(), "exceptions {stale:?} no longer exist: remove them from the list");
    // Every tenant table has a primary key (Citus needs one for ON CONFLICT and logical moves).
    for (table, _) in TENANT_TABLES {
        let has_pk: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM pg_index WHERE indrelid = to_regclass($1) AND indisprimary)",
        )
        .bind(table)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert!(has_pk, "{table} has no primary key");
    }
}

/// A foreign key: its name, table, referenced table, columns and referenced columns.
type ForeignKey = (String, String, String, Vec<String>, Vec<String>);

#[tokio::test]
async fn foreign_keys_stay_within_an_organisation() {
    let mut db = migrated().await;
    let rows: Vec<ForeignKey> = sqlx::query_as(
        "SELECT c.conname::text, t.relname::text, r.relname::text,
                ARRAY(SELECT a.attname::text FROM unnest(c.conkey) WITH ORDINALITY k(attnum, n)
                      JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.attnum ORDER BY k.n),
                ARRAY(SELECT a.attname::text FROM unnest(c.confkey) WITH ORDINALITY k(attnum, n)
                      JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.attnum ORDER BY k.n)
         FROM pg_constraint c JOIN pg_class t ON t.oid = c.conrelid JOIN pg_class r ON r.oid = c.confrelid
         JOIN pg_namespace n ON n.oid = t.relnamespace
         WHERE n.nspname = current_schema() AND c.contype = 'f'",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    assert!(rows.len() >= 4, "expected the schema's foreign keys, found {rows:?}");
    let mut bad = Vec::new();
    for (name, table, target, from, to) in &rows {
        let Some(dist) = dist_column(table) else {
            if !REFERENCE_TABLES.contains(&table.as_str()) || dist_column(target).is_some() {
                bad.push(format!("{name}: {table} -> {target} (from a non-tenant table)"));
            }
            continue;
        };
        if REFERENCE_TABLES.contains(&target.as_str()) {
            continue;
        }
        let Some(target_dist) = dist_column(target) else {
            bad.push(format!("{name}: {table} -> {target}, neither tenant nor reference table"));
            continue;
        };
        let pairs: BTreeMap<&str, &str> =
            from.iter().map(String::as_str).zip(to.iter().map(String::as_str)).collect();
        if pairs.get(dist) != Some(&target_dist) {
            bad.push(format!(
                "{name}: {table}{from:?} -> {target}{to:?} does not match {table}.{dist} to {target}.{target_dist}"
            ));
        }
    }
    assert!(
        bad.is_empty(),
        "foreign keys that could cross organisations (Citus refuses them between distributed \
         tables): {bad:?}; include the organisation column on both sides"
    );
}

#[tokio::test]
async fn tenant_tables_use_only_what_citus_distributes() {
    let mut db = migrated().await;
    for (table, _) in TENANT_TABLES {
        let triggers: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_trigger WHERE tgrelid = to_regclass($1) AND NOT tgisinternal",
        )
        .bind(table)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(triggers, 0, "{table} has triggers; keep logic in cloud-api");
        let rules: i64 =
            sqlx::query_scalar("SELECT count(*) FROM pg_rewrite WHERE ev_class = to_regclass($1)")
                .bind(table)
                .fetch_one(&mut db)
                .await
                .unwrap();
        assert_eq!(rules, 0, "{table} has rewrite rules");
        let exclusions: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_constraint WHERE conrelid = to_regclass($1) AND contype = 'x'",
        )
        .bind(table)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert_eq!(exclusions, 0, "{table} has exclusion constraints");
        let identities: Vec<(String, String)> = sqlx::query_as(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod)
             FROM pg_attribute a WHERE a.attrelid = to_regclass($1) AND a.attidentity <> '' AND NOT a.attisdropped",
        )
        .bind(table)
        .fetch_all(&mut db)
        .await
        .unwrap();
        for (column, ty) in identities {
            assert_eq!(
                ty, "bigint",
                "{table}.{column}: Citus accepts only bigint identity columns"
            );
        }
        let (rls, forced): (bool, bool) = sqlx::query_as(
            "SELECT relrowsecurity, relforcerowsecurity FROM pg_class WHERE oid = to_regclass($1)",
        )
        .bind(table)
        .fetch_one(&mut db)
        .await
        .unwrap();
        assert!(rls && forced, "{table}: row-level security must be enabled and forced");
    }
}

#[tokio::test]
async fn cross_organisation_reads_are_the_listed_functions_only() {
    let mut db = migrated().await;
    let definers: Vec<String> = sqlx::query_scalar(
        "SELECT p.proname::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname = current_schema() AND p.prosecdef ORDER BY 1",
    )
    .fetch_all(&mut db)
    .await
    .unwrap();
    let mut listed: Vec<String> = CROSS_ORG_FUNCTIONS.iter().map(|(f, _)| f.to_string()).collect();
    listed.sort();
    assert_eq!(
        definers, listed,
        "SECURITY DEFINER functions read across organisations (a multi-shard query on Citus): \
         list each in CROSS_ORG_FUNCTIONS with its reason, and in docs/citus.md"
    );
}

/// Word-like tokens of a query, outside string literals.
fn tokens(query: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut in_string = false;
    let mut word = String::new();
    for ch in query.chars().chain(std::iter::once(' ')) {
        if ch == '\'' {
            in_string = !in_string;
        }
        if !in_string && (ch.is_ascii_alphanumeric() || ch == '_') {
            word.push(ch.to_ascii_lowercase());
        } else if !word.is_empty() {
            out.insert(std::mem::take(&mut word));
        }
    }
    out
}

#[test]
fn every_store_query_on_a_tenant_table_names_the_organisation() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".sqlx");
    let mut checked = 0;
    let mut bad = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let query = file["query"].as_str().unwrap_or_default();
        let words = tokens(query);
        let touched: Vec<&str> =
            TENANT_TABLES.iter().map(|(t, _)| *t).filter(|t| words.contains(*t)).collect();
        if touched.is_empty() {
            continue;
        }
        checked += 1;
        // organizations alone is keyed by `id`; everything else by org_id.
        let routed = if touched == ["organizations"] {
            words.contains("id")
        } else {
            words.contains("org_id")
        };
        if !routed {
            bad.push(query.to_owned());
        }
    }
    assert!(checked >= 20, "only {checked} store queries on tenant tables found in {dir:?}");
    assert!(
        bad.is_empty(),
        "queries on tenant tables without the organisation column (on Citus they would fan \
         out to every shard): {bad:#?}"
    );
}
