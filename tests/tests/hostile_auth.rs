//! Issue 14, items 2, 4 and 5, against the real `cloud-api` binary: an unauthenticated flood of
//! token requests, rate limits per address, answers that do not tell ids apart, the serving
//! role under row-level security, API tokens with scopes revoked across replicas, `/metrics` off
//! the API's address, and bounded graph reads.

use std::net::IpAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sqlx::{Connection, Executor, PgConnection};
use tests::{
    admin, binary, fresh_db, get_json, post_report, serving_url, start_cloud, start_cloud_with,
};

/// An organisation with one cluster: `(api token, client id, client secret)`.
fn tenant(db: &str, org: &str) -> (String, String, String) {
    let o = admin(db, &["create-org", org]);
    let c = admin(db, &["create-cluster", "--org", o["org_id"].as_str().unwrap(), "prod"]);
    let s = |v: &Value, k: &str| v[k].as_str().unwrap().to_owned();
    (s(&o, "api_token"), s(&c, "client_id"), s(&c, "client_secret"))
}

/// A client whose connections come from `source` (any 127.0.0.0/8 address reaches the cloud).
fn client_from(source: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(source.parse::<IpAddr>().unwrap())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

async fn token_request(
    http: &reqwest::Client,
    base: &str,
    client_id: &str,
    secret: &str,
) -> (u16, Value) {
    let res = http
        .post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client_id),
            ("client_secret", secret),
        ])
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// `VmRSS` or `VmHWM` of a process, in MiB.
fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with(field))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    line.split_whitespace().nth(1).unwrap().parse::<f64>().unwrap() / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_unknown_clients_keeps_memory_flat_and_a_real_cluster_still_gets_its_token() {
    let db = fresh_db("e2e_flood").await;
    let (_, client_id, secret) = tenant(&db, "acme");
    // Rate limits out of the way: this is about what each check costs and how many run at once.
    let (cloud, base) = start_cloud_with(
        &db,
        &["--auth-rate-per-address", "1000000", "--auth-burst-per-address", "1000000"],
    )
    .await;
    let pid = cloud.0.id();
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5")
        .expect("resetting the peak RSS (VmHWM) of our own child");
    let before = memory_mib(pid, "VmRSS");

    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<u16, usize>::new()));
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut flood = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (base, statuses) = (base.clone(), statuses.clone());
        flood.spawn(async move {
            let http = client_from("127.0.0.1");
            while Instant::now() < deadline {
                let unknown = format!("cl_{}", uuid::Uuid::new_v4().simple());
                let (status, _) = token_request(&http, &base, &unknown, "guess-guess-guess").await;
                *statuses.lock().unwrap().entry(status).or_default() += 1;
            }
        });
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The real cluster, from another address, while the flood runs (it retries a 503 as the
    // mapper does).
    let real = client_from("127.0.0.2");
    let mut answer = (0, Value::Null);
    for _ in 0..5 {
        answer = token_request(&real, &base, &client_id, &secret).await;
        if answer.0 != 503 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer.0, 200, "the real cluster's token request during the flood: {}", answer.1);
    assert!(answer.1["access_token"].is_string());
    while flood.join_next().await.is_some() {}

    let peak = memory_mib(pid, "VmHWM");
    let statuses = statuses.lock().unwrap().clone();
    let total: usize = statuses.values().sum();
    println!("flood: {total} requests {statuses:?}; RSS {before:.1} MiB before, peak {peak:.1} MiB during");
    let checked = statuses.get(&401).copied().unwrap_or(0);
    assert!(
        total >= 640 && checked * 10 >= total * 9,
        "the flood was checked, not throttled: {statuses:?}"
    );
    assert!(
        peak - before <= 64.0,
        "64 clients flooding /oauth/token raised RSS by {:.1} MiB (from {before:.1} to {peak:.1})",
        peak - before
    );
}

#[tokio::test]
async fn one_address_is_rate_limited_and_forwarded_for_does_not_get_around_it() {
    let db = fresh_db("e2e_ratelimit").await;
    let (_, client_id, secret) = tenant(&db, "acme");
    let (_cloud, base) = start_cloud(&db).await;
    let flood = client_from("127.0.0.1");
    let mut limited = None;
    for i in 0..400 {
        let res = flood
            .post(format!("{base}/oauth/token"))
            .header("x-forwarded-for", format!("203.0.113.{}", i % 250))
            // A new client ID each time: only the address's budget runs out.
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &format!("cl_{}", uuid::Uuid::new_v4().simple())),
                ("client_secret", "guess"),
            ])
            .send()
            .await
            .unwrap();
        if res.status() == 429 {
            limited = Some(res);
            break;
        }
    }
    let limited = limited.expect(
        "400 requests from one address in a burst are rate-limited (default burst 100, 10/s)",
    );
    let retry_after: u64 = limited.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!(retry_after >= 1);
    let body: Value = limited.json().await.unwrap();
    assert_eq!(body["error"], "slow_down");
    let said = body["error_description"].as_str().unwrap();
    assert!(said.contains("from this address") && said.contains("retry in"), "{body}");
    // Another address is not affected.
    let (status, body) = token_request(&client_from("127.0.0.3"), &base, &client_id, &secret).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn unknown_ids_and_wrong_secrets_are_answered_alike_and_key_ids_are_not_echoed() {
    let db = fresh_db("e2e_oracle").await;
    let (api_token, client_id, _) = tenant(&db, "acme");
    let (_cloud, base) = start_cloud(&db).await;
    let http = reqwest::Client::new();
    let unknown = token_request(&http, &base, "cl_00000000000000000000000000000000", "guess").await;
    let wrong = token_request(&http, &base, &client_id, "guess").await;
    assert_eq!(unknown, wrong);
    assert_eq!(unknown.0, 401);

    let token_id = api_token.strip_prefix("imt_").unwrap().split('_').next().unwrap();
    let get = |token: String| {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let res = http
                .get(format!("{base}/api/v1/clusters"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        }
    };
    let unknown = get(format!("imt_{}_guess", uuid::Uuid::new_v4().simple())).await;
    let wrong = get(format!("imt_{token_id}_guess")).await;
    assert_eq!(unknown, wrong);

    use base64::Engine;
    let b64 = |v: Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let forged = format!(
        "{}.{}.c2ln",
        b64(json!({"alg": "EdDSA", "kid": "kid-from-the-caller"})),
        b64(json!({"sub": "x"}))
    );
    let res = http
        .post(format!("{base}/api/v1/reports"))
        .bearer_auth(forged)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    let text = res.text().await.unwrap();
    assert!(!text.contains("kid-from-the-caller"), "{text}");
}

#[tokio::test]
async fn the_serving_role_sees_no_tenant_row_on_its_own_and_serve_refuses_the_superuser() {
    let db = fresh_db("e2e_rls").await;
    let (api_token, client_id, secret) = tenant(&db, "acme");
    let (_cloud, base) = start_cloud(&db).await;
    let http = reqwest::Client::new();
    let (_, token) = token_request(&http, &base, &client_id, &secret).await;
    let report = json!({"schema_version": 1, "report_id": uuid::Uuid::new_v4(), "generated_at": chrono::Utc::now(),
        "edges": [{"client": {"namespace": "shop", "name": "frontend"}, "target": {"kubernetes": {"namespace": "shop", "name": "cart"}},
                   "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:59:00Z"}]});
    let (status, body) =
        post_report(&http, &base, token["access_token"].as_str().unwrap(), &report).await;
    assert_eq!(status, 202, "{body}");
    let graph = get_json(&http, &format!("{base}/api/v1/access-graph"), &api_token).await;
    assert_eq!(graph["edges"].as_array().unwrap().len(), 1);

    // The binary's own credentials, as a statement injected into its connection would run.
    let mut conn = PgConnection::connect(&serving_url(&db)).await.unwrap();
    for statement in ["SELECT 1", "RESET ROLE"] {
        conn.execute(statement).await.unwrap();
        for table in
            ["edges", "clusters", "api_tokens", "organizations", "reports", "exposed_workloads"]
        {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
                .fetch_one(&mut conn)
                .await
                .unwrap();
            assert_eq!(n, 0, "{table} after {statement}");
        }
    }
    let mut owner = PgConnection::connect(&db).await.unwrap();
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM edges").fetch_one(&mut owner).await.unwrap();
    assert_eq!(n, 1, "the row is there");

    let out = Command::new(binary("cloud-api"))
        .args(["serve", "--listen", "127.0.0.1:0", "--database-url", &db])
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "serve as a superuser must refuse to start");
    assert!(stderr.contains("superuser") && stderr.contains("cloud-api migrate"), "{stderr}");
}

#[tokio::test]
async fn tokens_are_scoped_and_revoked_on_every_replica_at_once() {
    let db = fresh_db("e2e_tokens").await;
    let (admin_token, _, _) = tenant(&db, "acme");
    let (_a, replica_a) = start_cloud(&db).await;
    let (_b, replica_b) = start_cloud(&db).await;
    let http = reqwest::Client::new();
    let made: Value = http
        .post(format!("{replica_a}/api/v1/tokens"))
        .bearer_auth(&admin_token)
        .json(&json!({"name": "dashboards", "scopes": ["read"]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let read = made["token"].as_str().expect("a new token").to_owned();
    let status = |method: reqwest::Method, url: String, token: String| {
        let http = http.clone();
        async move {
            http.request(method, url)
                .bearer_auth(token)
                .json(&json!({"name": "staging"}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(
        status(reqwest::Method::GET, format!("{replica_b}/api/v1/access-graph"), read.clone())
            .await,
        200
    );
    assert_eq!(
        status(reqwest::Method::POST, format!("{replica_b}/api/v1/clusters"), read.clone()).await,
        403,
        "read cannot register clusters"
    );
    assert_eq!(
        status(reqwest::Method::GET, format!("{replica_b}/api/v1/tokens"), read.clone()).await,
        403,
        "read cannot list tokens"
    );
    let id = made["id"].as_str().unwrap();
    assert_eq!(
        status(
            reqwest::Method::POST,
            format!("{replica_a}/api/v1/tokens/{id}/revoke"),
            admin_token.clone()
        )
        .await,
        200
    );
    assert_eq!(
        status(reqwest::Method::GET, format!("{replica_b}/api/v1/access-graph"), read.clone())
            .await,
        401,
        "revoked on A, refused by B at once"
    );
    assert_eq!(
        status(reqwest::Method::GET, format!("{replica_a}/metrics"), admin_token.clone()).await,
        404,
        "no metrics on the API's address"
    );
}

#[tokio::test]
async fn a_graph_read_larger_than_the_limit_is_refused_with_what_to_do() {
    let db = fresh_db("e2e_graphlimit").await;
    let (api_token, client_id, secret) = tenant(&db, "acme");
    let (_cloud, base) =
        start_cloud_with(&db, &["--graph-max-edges", "2", "--read-timeout-seconds", "5"]).await;
    let http = reqwest::Client::new();
    let (_, token) = token_request(&http, &base, &client_id, &secret).await;
    let edge = |name: &str| {
        json!({"client": {"namespace": "shop", "name": name}, "target": {"kubernetes": {"namespace": "shop", "name": "cart"}},
        "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:59:00Z"})
    };
    let report = json!({"schema_version": 1, "report_id": uuid::Uuid::new_v4(), "generated_at": chrono::Utc::now(), "edges": [edge("a"), edge("b"), edge("c")]});
    let (status, body) =
        post_report(&http, &base, token["access_token"].as_str().unwrap(), &report).await;
    assert_eq!(status, 202, "{body}");
    let res = http
        .get(format!("{base}/api/v1/access-graph"))
        .bearer_auth(&api_token)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let body: Value = res.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("more than 2 edges"), "{body}");
}
