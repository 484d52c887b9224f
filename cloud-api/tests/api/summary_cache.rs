//! The aggregated view is kept between reads: served while the edges it was computed from are
//! current, served marked `stale` for a bounded time after a report while a newer one is
//! computed, and never served once its cluster is deleted or the bound has passed.

use std::time::Duration;

use axum::http::{Method, StatusCode};
use cloud_api::store::ReadLimits;
use cloud_api::{Config, Protections};
use serde_json::{json, Value};

use crate::common::*;

/// How many full-graph edges the aggregate edge `source -> target` stands for (0: none).
fn edges_between(summary: &Value, source: &str, target: &str) -> u64 {
    summary["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == source && e["target"] == target)
        .map(|e| e["edges"].as_u64().unwrap())
        .sum()
}

async fn summary(app: &TestApp, token: &str) -> Value {
    let reply = app.get("/api/v1/access-graph/summary", token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    reply.json()
}

/// Posts a report of `edges` and checks it was accepted.
async fn send(app: &TestApp, jwt: &str, edges: Vec<Value>) {
    let reply = app.post_report(jwt, &report(edges, vec![])).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
}

/// Reads the summary until `done` holds (the background refresh has landed), for up to 20 s.
async fn summary_until(app: &TestApp, token: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let s = summary(app, token).await;
        if done(&s) {
            return s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refreshed: {s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_stored_summary_is_served_until_a_report_then_marked_stale_until_refreshed() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "us").await;
    let (_, _, other_jwt) = app.tenant("globex", "us").await;
    send(&app, &jwt, vec![k8s_edge("shop", "frontend", "shop", "cart", 80, 1)]).await;

    let first = summary(&app, &org.api_token).await;
    assert_eq!(first["stale"], false, "{first:#}");
    assert_eq!(edges_between(&first, "us/shop", "us/shop"), 1);
    // Served from what was stored: the same snapshot, not a new one.
    let again = summary(&app, &org.api_token).await;
    assert_eq!(again, first);

    // Another organisation's reports change nothing here.
    send(&app, &other_jwt, vec![k8s_edge("shop", "a", "shop", "b", 80, 1)]).await;
    assert_eq!(summary(&app, &org.api_token).await, first);

    // A report: the stored view is served once more, marked stale, and refreshed behind it.
    send(&app, &jwt, vec![k8s_edge("shop", "checkout", "shop", "cart", 80, 1)]).await;
    let stale = summary(&app, &org.api_token).await;
    assert_eq!(stale["stale"], true, "{stale:#}");
    assert_eq!(stale["as_of"], first["as_of"]);
    assert_eq!(edges_between(&stale, "us/shop", "us/shop"), 1, "what was stored: {stale:#}");
    let fresh = summary_until(&app, &org.api_token, |s| s["stale"] == false).await;
    assert_eq!(edges_between(&fresh, "us/shop", "us/shop"), 2, "{fresh:#}");
    assert!(fresh["as_of"].as_str() > first["as_of"].as_str(), "{fresh:#}");

    // A re-sent report (same id) writes nothing: the view stays current.
    let resent = report(vec![k8s_edge("shop", "frontend", "shop", "cart", 80, 7)], vec![]);
    let first_time = app.post_report(&jwt, &resent).await;
    assert_eq!(first_time.status, StatusCode::ACCEPTED, "{}", first_time.text());
    let after = summary_until(&app, &org.api_token, |s| s["stale"] == false).await;
    let duplicate = app.post_report(&jwt, &resent).await;
    assert_eq!(duplicate.json()["duplicate"], true, "{}", duplicate.text());
    assert_eq!(summary(&app, &org.api_token).await, after, "a duplicate report changed nothing");
}

#[tokio::test]
async fn deleting_a_cluster_or_pruning_its_edges_shows_at_the_next_read() {
    let app = test_app().await;
    let (org, _, us_jwt) = app.tenant("acme", "us").await;
    let eu = app.cluster(&org.api_token, "eu").await;
    let eu_jwt = app.cluster_token(&eu).await;
    let old = json!({
        "client": {"namespace": "ops", "name": "backup", "kind": "CronJob"},
        "target": {"kubernetes": {"namespace": "ops", "name": "store", "kind": "Deployment"}},
        "first_seen": "2026-01-01T00:00:00Z", "last_seen": "2026-01-02T00:00:00Z",
        "connections": 1,
    });
    for (jwt, edges) in [
        (&us_jwt, vec![k8s_edge("shop", "frontend", "shop", "cart", 80, 1), old]),
        (&eu_jwt, vec![k8s_edge("pay", "api", "pay", "db", 5432, 1)]),
    ] {
        send(&app, jwt, edges).await;
    }
    let before = summary(&app, &org.api_token).await;
    assert_eq!(edges_between(&before, "eu/pay", "eu/pay"), 1, "{before:#}");
    assert_eq!(edges_between(&before, "us/ops", "us/ops"), 1, "{before:#}");

    // Deleted: its edges are gone from the very next read, not after a refresh.
    let reply = app
        .call(
            Method::DELETE,
            &format!("/api/v1/clusters/{}", eu.cluster_id),
            Some(&org.api_token),
            None,
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let after = summary(&app, &org.api_token).await;
    assert_eq!(after["stale"], false, "{after:#}");
    assert_eq!(edges_between(&after, "eu/pay", "eu/pay"), 0, "{after:#}");
    assert!(after["clusters"].as_array().unwrap().iter().all(|c| c["name"] != "eu"), "{after:#}");

    // Pruned: the edge last seen in January goes at a 30-day retention, and the view follows.
    let reply = app
        .call(
            Method::PUT,
            "/api/v1/retention",
            Some(&org.api_token),
            Some(json!({"edge_retention_days": 30})),
        )
        .await;
    assert!(reply.status.is_success(), "{}", reply.text());
    let pruned = cloud_api::retention::prune_once(&app.state).await.expect("pruning runs");
    assert_eq!(pruned.edges, 1, "{pruned:?}");
    let stale = summary(&app, &org.api_token).await;
    assert_eq!(stale["stale"], true, "pruning changed the edges: {stale:#}");
    let fresh = summary_until(&app, &org.api_token, |s| s["stale"] == false).await;
    assert_eq!(edges_between(&fresh, "us/ops", "us/ops"), 0, "{fresh:#}");
    assert_eq!(edges_between(&fresh, "us/shop", "us/shop"), 1, "{fresh:#}");
}

#[tokio::test]
async fn past_the_staleness_bound_a_read_computes_the_summary_itself() {
    let reads = ReadLimits { summary_max_stale: Duration::ZERO, ..Default::default() };
    let app =
        test_app_protected(Config::default(), Protections { reads, ..Default::default() }).await;
    let (org, _, jwt) = app.tenant("acme", "us").await;
    for (client, want) in [("frontend", 1), ("checkout", 2), ("invoicer", 3)] {
        send(&app, &jwt, vec![k8s_edge("shop", client, "shop", "cart", 80, 1)]).await;
        let s = summary(&app, &org.api_token).await;
        assert_eq!(s["stale"], false, "{s:#}");
        assert_eq!(edges_between(&s, "us/shop", "us/shop"), want, "{s:#}");
    }
}

/// A call in `ns` from `client` to `target`, last seen `ago` before now.
fn seen_ago(ns: &str, client: &str, target: &str, ago: chrono::Duration) -> Value {
    let last = chrono::Utc::now() - ago;
    json!({
        "client": {"namespace": ns, "name": client, "kind": "Deployment"},
        "target": {"kubernetes": {"namespace": ns, "name": target, "kind": "Deployment"}},
        "ports": [{"port": 80, "protocol": "TCP"}],
        "first_seen": (last - chrono::Duration::hours(1)).to_rfc3339(),
        "last_seen": last.to_rfc3339(),
        "connections": 1,
    })
}

async fn summary_at(app: &TestApp, token: &str, query: &str) -> Value {
    let reply = app.get(&format!("/api/v1/access-graph/summary?{query}"), token).await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {}", reply.text());
    reply.json()
}

/// How many windowed summaries the organisation named `org` keeps, read as the schema owner.
async fn kept_windows(app: &TestApp, org: &str) -> i64 {
    let mut owner: sqlx::PgConnection = sqlx::Connection::connect(&app.database_url).await.unwrap();
    sqlx::query_scalar(
        "SELECT count(*) FROM graph_summaries s JOIN organizations o ON o.id = s.org_id
         WHERE o.name = $1 AND s.window_secs > 0",
    )
    .bind(org)
    .fetch_one(&mut owner)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_window_back_from_now_is_kept_per_window_and_counts_only_what_it_covers() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "us").await;
    let (other, _, other_jwt) = app.tenant("globex", "us").await;
    let minutes = chrono::Duration::minutes;
    send(
        &app,
        &jwt,
        vec![
            seen_ago("shop", "frontend", "cart", minutes(5)),
            seen_ago("ops", "backup", "store", minutes(120)),
        ],
    )
    .await;
    send(&app, &other_jwt, vec![seen_ago("shop", "a", "b", minutes(5))]).await;
    let theirs = summary_at(&app, &other.api_token, "since=1h").await;
    assert_eq!(edges_between(&theirs, "us/shop", "us/shop"), 1, "{theirs:#}");

    // Each window counts what it covers.
    let hour = summary_at(&app, &org.api_token, "since=1h").await;
    assert_eq!(hour["stale"], false, "{hour:#}");
    assert_eq!(edges_between(&hour, "us/shop", "us/shop"), 1, "{hour:#}");
    assert_eq!(edges_between(&hour, "us/ops", "us/ops"), 0, "seen 2 h ago: {hour:#}");
    let day = summary_at(&app, &org.api_token, "since=24h").await;
    assert_eq!(edges_between(&day, "us/ops", "us/ops"), 1, "{day:#}");
    assert_eq!(edges_between(&day, "us/shop", "us/shop"), 1, "{day:#}");

    // Kept: read again, the same snapshot; a time instead of a window is computed each read.
    assert_eq!(summary_at(&app, &org.api_token, "since=1h").await, hour);
    let at = format!("since={}", (chrono::Utc::now() - minutes(60)).format("%Y-%m-%dT%H:%M:%SZ"));
    let first = summary_at(&app, &org.api_token, &at).await;
    tokio::time::sleep(Duration::from_millis(20)).await;
    let second = summary_at(&app, &org.api_token, &at).await;
    assert!(second["as_of"].as_str() > first["as_of"].as_str(), "{first:#} {second:#}");
    assert_eq!(edges_between(&second, "us/shop", "us/shop"), 1, "{second:#}");

    // A report: the kept window is served once more, marked stale, and refreshed behind it.
    send(&app, &jwt, vec![seen_ago("shop", "checkout", "cart", minutes(1))]).await;
    let stale = summary_at(&app, &org.api_token, "since=1h").await;
    assert_eq!(stale["stale"], true, "{stale:#}");
    assert_eq!(stale["as_of"], hour["as_of"]);
    assert_eq!(edges_between(&stale, "us/shop", "us/shop"), 1, "what was kept: {stale:#}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let fresh = loop {
        let s = summary_at(&app, &org.api_token, "since=1h").await;
        if s["stale"] == false {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "never refreshed: {s:#}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(edges_between(&fresh, "us/shop", "us/shop"), 2, "{fresh:#}");

    // A tenant naming many windows keeps the 8 it computed last; another's stay.
    for secs in 0..12 {
        summary_at(&app, &org.api_token, &format!("since={}s", 3600 + secs)).await;
    }
    assert_eq!(kept_windows(&app, "acme").await, cloud_api::store::KEPT_WINDOWS);
    assert_eq!(kept_windows(&app, "globex").await, 1);
}

/// Past a twelfth of its window a kept window is computed again, even with no new report: its
/// end moves with the clock.
#[tokio::test]
async fn a_kept_window_is_computed_again_once_its_end_lags_too_far() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "us").await;
    send(&app, &jwt, vec![seen_ago("shop", "frontend", "cart", chrono::Duration::seconds(30))])
        .await;
    // A 12 s window may lag 1 s.
    let first = summary_at(&app, &org.api_token, "since=60s").await;
    assert_eq!(edges_between(&first, "us/shop", "us/shop"), 1, "{first:#}");
    assert_eq!(summary_at(&app, &org.api_token, "since=60s").await, first, "kept");
    let short = summary_at(&app, &org.api_token, "since=12s").await;
    assert_eq!(edges_between(&short, "us/shop", "us/shop"), 0, "seen 30 s ago: {short:#}");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let later = summary_at(&app, &org.api_token, "since=12s").await;
    assert_eq!(later["stale"], false, "{later:#}");
    assert!(later["as_of"].as_str() > short["as_of"].as_str(), "computed again: {later:#}");
}
