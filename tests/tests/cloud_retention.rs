//! Retention and the audit log through the real `cloud-api` binary and a real PostgreSQL.
//!
//! Two organisations report edges; the test ages some of them (and a report id) directly in the
//! database as the schema owner, an admin of one organisation shortens its retention over the
//! API, and the background pruner deletes exactly that organisation's old edges, keeps its
//! recent ones and the other organisation's, forgets report ids past the replay window, and
//! counts it all in `/metrics`. Every change to clusters, tokens and retention shows in that
//! organisation's audit log, newest first and paged; the other organisation never sees it, and a
//! `read` token gets 403.

use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use serde_json::{json, Value};
use sqlx::{Connection, PgConnection};
use tests::{admin, cluster_jwt, free_port, fresh_db, start_cloud_with};

struct Api {
    http: reqwest::Client,
    base: String,
}

impl Api {
    async fn send(&self, req: reqwest::RequestBuilder) -> (u16, Value) {
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        let text = res.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        (status, body)
    }

    async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.send(self.http.get(format!("{}{path}", self.base)).bearer_auth(token)).await
    }

    async fn ok(&self, path: &str, token: &str) -> Value {
        let (status, body) = self.get(path, token).await;
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    }

    async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.send(self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(&body))
            .await
    }

    async fn put(&self, path: &str, token: &str, body: &str) -> (u16, Value) {
        self.send(
            self.http
                .put(format!("{}{path}", self.base))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_owned()),
        )
        .await
    }

    async fn jwt(&self, creds: &Value) -> String {
        cluster_jwt(&self.http, &self.base, creds).await
    }

    async fn report(
        &self,
        jwt: &str,
        generated_at: chrono::DateTime<Utc>,
        targets: &[&str],
    ) -> u16 {
        let now = Utc::now();
        let edges: Vec<Value> = targets
            .iter()
            .map(|t| {
                json!({"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"},
                       "target": {"kubernetes": {"namespace": "shop", "name": t, "kind": "Deployment"}},
                       "first_seen": now, "last_seen": now, "connections": 1})
            })
            .collect();
        let report = json!({"schema_version": 1, "report_id": uuid::Uuid::new_v4(),
            "generated_at": generated_at, "edges": edges});
        self.post("/api/v1/reports", jwt, report).await.0
    }

    async fn graph(&self, token: &str) -> String {
        self.ok("/api/v1/access-graph", token).await.to_string()
    }
}

/// A connection to `url` naming one organisation as the API's transactions do: row-level
/// security then applies to the serving role (and to an owner that is no superuser; the
/// statements here filter by org_id as well, since the test's owner may be a superuser).
async fn as_org(url: &str, org: &str) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    sqlx::query("SELECT set_config('app.org_id', $1, false)")
        .bind(org)
        .execute(&mut conn)
        .await
        .unwrap();
    conn
}

/// Runs one statement binding an organisation's id; how many rows it changed.
async fn age(conn: &mut PgConnection, sql: &str, org: String) -> u64 {
    sqlx::query(sql).bind(org).execute(conn).await.unwrap().rows_affected()
}

async fn metric(http: &reqwest::Client, url: &str, name: &str) -> f64 {
    let text = http.get(url).send().await.unwrap().text().await.unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{text}"))
}

async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn old_edges_and_report_ids_are_pruned_per_organisation_and_every_change_is_audited() {
    let db = fresh_db("e2e_retention").await;
    let acme = admin(&db, &["create-org", "acme"]);
    let acme_id = acme["org_id"].as_str().unwrap().to_owned();
    let acme_admin = acme["api_token"].as_str().unwrap().to_owned();
    let globex = admin(&db, &["create-org", "globex"]);
    let globex_id = globex["org_id"].as_str().unwrap().to_owned();
    let globex_admin = globex["api_token"].as_str().unwrap().to_owned();
    let globex_cluster = admin(&db, &["create-cluster", "--org", &globex_id, "eu"]);

    let metrics_port = free_port();
    let metrics = format!("http://127.0.0.1:{metrics_port}/metrics");
    let (_cloud, base) = start_cloud_with(
        &db,
        &[
            "--retention-interval-seconds",
            "0.5",
            "--retention-batch",
            "2",
            "--report-replay-window-days",
            "30",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics_port}"),
        ],
    )
    .await;
    let api = Api { http: reqwest::Client::new(), base };
    let acme_admin_id =
        api.ok("/api/v1/whoami", &acme_admin).await["token"]["id"].as_str().unwrap().to_owned();

    // Changes by acme's admin token: a cluster, a read token, a token revoked.
    let (status, prod) = api.post("/api/v1/clusters", &acme_admin, json!({"name": "prod"})).await;
    assert_eq!(status, 201, "{prod}");
    let (status, staging) =
        api.post("/api/v1/clusters", &acme_admin, json!({"name": "staging"})).await;
    assert_eq!(status, 201, "{staging}");
    let (status, reader) = api
        .post("/api/v1/tokens", &acme_admin, json!({"name": "dashboards", "scopes": ["read"]}))
        .await;
    assert_eq!(status, 201, "{reader}");
    let reader_token = reader["token"].as_str().unwrap().to_owned();
    let (status, ci) =
        api.post("/api/v1/tokens", &acme_admin, json!({"name": "ci", "scopes": ["write"]})).await;
    assert_eq!(status, 201, "{ci}");
    let ci_id = ci["id"].as_str().unwrap().to_owned();
    let (status, _) =
        api.post(&format!("/api/v1/tokens/{ci_id}/revoke"), &acme_admin, json!({})).await;
    assert_eq!(status, 200);

    // Edges: seven for acme (so that pruning takes several batches of two), one for globex.
    let acme_jwt = api.jwt(&prod).await;
    let globex_jwt = api.jwt(&globex_cluster).await;
    let old: Vec<String> = (0..5).map(|i| format!("ancient-{i}")).collect();
    let old_refs: Vec<&str> = old.iter().map(String::as_str).collect();
    assert_eq!(api.report(&acme_jwt, Utc::now(), &old_refs).await, 202);
    assert_eq!(api.report(&acme_jwt, Utc::now(), &["fresh-api", "week-old-db"]).await, 202);
    assert_eq!(api.report(&globex_jwt, Utc::now(), &["globex-ancient"]).await, 202);

    // A report from before the replay window is refused, saying why and what to do.
    let (status, body) = api
        .post(
            "/api/v1/reports",
            &acme_jwt,
            json!({"schema_version": 1, "report_id": uuid::Uuid::new_v4(),
                   "generated_at": Utc::now() - TimeDelta::days(31), "edges": []}),
        )
        .await;
    assert_eq!(status, 422, "{body}");
    assert!(body.to_string().contains("replay window"), "{body}");

    // Time passes (written as the owner): acme's ancient edges were last seen 40 days ago,
    // week-old-db 6 days ago; globex's edge 40 days ago; one of acme's report ids is 40 days old.
    let mut owner = as_org(&db, &acme_id).await;
    let aged = age(
        &mut owner,
        "UPDATE edges SET first_seen = now() - interval '50 days', last_seen = now() - interval '40 days'
         WHERE org_id = $1::uuid AND target_name LIKE 'ancient-%'",
        acme_id.clone(),
    )
    .await;
    assert_eq!(aged, 5);
    let aged = age(
        &mut owner,
        "UPDATE edges SET last_seen = now() - interval '6 days'
         WHERE org_id = $1::uuid AND target_name = 'week-old-db'",
        acme_id.clone(),
    )
    .await;
    assert_eq!(aged, 1);
    let aged = age(
        &mut owner,
        "UPDATE reports SET generated_at = now() - interval '40 days'
         WHERE org_id = $1::uuid
           AND report_id = (SELECT report_id FROM reports WHERE org_id = $1::uuid ORDER BY received_at LIMIT 1)",
        acme_id.clone(),
    )
    .await;
    assert_eq!(aged, 1);
    let aged = age(
        &mut owner,
        "UPDATE edges SET last_seen = now() - interval '40 days' WHERE org_id = $1::uuid",
        globex_id.clone(),
    )
    .await;
    assert_eq!(aged, 1);

    // The default 90 days keeps everything.
    assert_eq!(
        api.ok("/api/v1/retention", &reader_token).await,
        json!({"edge_retention_days": 90, "report_replay_window_days": 30})
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let graph = api.graph(&acme_admin).await;
    assert!(graph.contains("ancient-4") && graph.contains("week-old-db"), "{graph}");
    let reports_left = || async {
        let mut c = as_org(&db, &acme_id).await;
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM reports WHERE org_id = $1::uuid")
            .bind(&acme_id)
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    // ...but the report id past the replay window (plus a day's margin) is forgotten.
    eventually("the 40-day-old report id is pruned", || async { reports_left().await == 1 }).await;

    // Retention is an admin's to change, within bounds.
    let (status, body) =
        api.put("/api/v1/retention", &reader_token, r#"{"edge_retention_days": 7}"#).await;
    assert_eq!(status, 403, "{body}");
    for bad in [r#"{"edge_retention_days": 0}"#, r#"{"edge_retention_days": 3651}"#] {
        let (status, body) = api.put("/api/v1/retention", &acme_admin, bad).await;
        assert_eq!(status, 422, "{bad}: {body}");
        assert!(body["error"].as_str().unwrap().contains("1-3650"), "{body}");
    }
    for bad in [
        r#"{"days": 7}"#,
        r#"{"edge_retention_days": "7"}"#,
        "not json",
        r#"{"edge_retention_days": 99999999999}"#,
    ] {
        let (status, body) = api.put("/api/v1/retention", &acme_admin, bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, body) =
        api.put("/api/v1/retention", &acme_admin, r#"{"edge_retention_days": 7}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["edge_retention_days"], 7);

    // The pruner deletes acme's edges not seen for 7 days, in batches, and nothing else.
    eventually("acme's old edges are pruned", || async {
        !api.graph(&acme_admin).await.contains("ancient-")
    })
    .await;
    let graph = api.graph(&acme_admin).await;
    assert!(graph.contains("fresh-api") && graph.contains("week-old-db"), "{graph}");
    assert!(api.graph(&globex_admin).await.contains("globex-ancient"));
    assert!(
        metric(&api.http, &metrics, "intentmap_cloud_retention_edges_pruned_total").await >= 5.0
    );
    assert!(
        metric(&api.http, &metrics, "intentmap_cloud_retention_reports_pruned_total").await >= 1.0
    );

    // Cluster lifecycle, for the log.
    let staging_id = staging["cluster_id"].as_str().unwrap().to_owned();
    let prod_id = prod["cluster_id"].as_str().unwrap().to_owned();
    let (status, _) =
        api.post(&format!("/api/v1/clusters/{prod_id}/revoke"), &acme_admin, json!({})).await;
    assert_eq!(status, 200);
    let res = api
        .http
        .delete(format!("{}/api/v1/clusters/{staging_id}", api.base))
        .bearer_auth(&acme_admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 204);

    // acme's audit log: every change, newest first, by acme's admin token.
    let log = api.ok("/api/v1/audit", &acme_admin).await;
    let entries = log["entries"].as_array().unwrap();
    let actions: Vec<&str> = entries.iter().map(|e| e["action"].as_str().unwrap()).collect();
    assert_eq!(
        actions,
        [
            "cluster.delete",
            "cluster.revoke",
            "retention.update",
            "token.revoke",
            "token.create",
            "token.create",
            "cluster.create",
            "cluster.create"
        ],
        "{log}"
    );
    assert!(log["next_before"].is_null(), "{log}");
    for e in entries {
        assert_eq!(e["actor"], "api_token", "{e}");
        assert_eq!(e["actor_token_id"], acme_admin_id.as_str(), "{e}");
    }
    assert_eq!(entries[0]["target_id"], staging_id.as_str());
    assert_eq!(entries[0]["details"]["name"], "staging");
    assert_eq!(entries[1]["target_id"], prod_id.as_str());
    assert_eq!(entries[2]["details"]["edge_retention_days"], json!({"from": 90, "to": 7}));
    assert_eq!(entries[3]["target_id"], ci_id.as_str());
    assert_eq!(entries[4]["details"], json!({"name": "ci", "scopes": ["write"]}));
    let ids: Vec<i64> = entries.iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "not newest first: {ids:?}");

    // Paged: three at a time, then on from next_before.
    let page = api.ok("/api/v1/audit?limit=3", &acme_admin).await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 3);
    assert_eq!(page["next_before"], ids[2]);
    let next = api.ok(&format!("/api/v1/audit?limit=3&before={}", ids[2]), &acme_admin).await;
    let next_ids: Vec<i64> =
        next["entries"].as_array().unwrap().iter().map(|e| e["id"].as_i64().unwrap()).collect();
    assert_eq!(next_ids, ids[3..6]);
    for bad in
        ["limit=0", "limit=501", "limit=-1", "limit=many", "before=0", "before=x", "sort=asc"]
    {
        let (status, body) = api.get(&format!("/api/v1/audit?{bad}"), &acme_admin).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // A read token may not read the log; globex sees only its own (the admin CLI's cluster).
    let (status, body) = api.get("/api/v1/audit", &reader_token).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("admin"), "{body}");
    let theirs = api.ok("/api/v1/audit", &globex_admin).await;
    let theirs = theirs["entries"].as_array().unwrap();
    assert_eq!(theirs.len(), 1, "{theirs:?}");
    assert_eq!(theirs[0]["action"], "cluster.create");
    assert_eq!(theirs[0]["actor"], "admin_cli");
    assert!(theirs[0]["actor_token_id"].is_null());
    assert_eq!(theirs[0]["target_id"], globex_cluster["cluster_id"]);
    // Row-level security holds in the database too: the serving role, naming globex, finds
    // none of acme's entries.
    let mut serving_globex = as_org(&tests::serving_url(&db), &globex_id).await;
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log")
        .fetch_one(&mut serving_globex)
        .await
        .unwrap();
    assert_eq!(visible, 1);
    // And the serving role may not rewrite history.
    let mut serving = PgConnection::connect(&tests::serving_url(&db)).await.unwrap();
    let err = sqlx::query("DELETE FROM audit_log").execute(&mut serving).await.unwrap_err();
    assert!(err.to_string().contains("permission denied"), "{err}");
}
