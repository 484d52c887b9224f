//! Hostile reports against the real router and database: lists past their limits, counts that
//! would overflow, impossible dates, values the database cannot store, and more reports at
//! once than the cloud takes. Each is a clear 4xx (or 429/503 with Retry-After), never a 500,
//! and the cluster's later reports still land.

use std::io::Write;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, Request, StatusCode};
use cloud_api::http::ingest::IngestLimits;
use cloud_api::Config;
use serde_json::{json, Value};
use tower::ServiceExt;

use crate::common::*;

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn gzip_request(jwt: &str, body: Vec<u8>) -> Request<Body> {
    Request::post("/api/v1/reports")
        .header(header::AUTHORIZATION, format!("Bearer {jwt}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CONTENT_ENCODING, "gzip")
        .body(Body::from(body))
        .unwrap()
}

fn edge_to(graph: &Value, source: &str, target: &str) -> Value {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source && e["target"] == target)
        .cloned()
        .unwrap_or(Value::Null)
}

#[tokio::test]
async fn a_report_with_millions_of_domains_is_refused_with_the_limit() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    // The review's attack, smaller (tests/tests/hostile_ingest.rs sends it whole to the binary):
    // one edge with 2,000,000 one-letter domains, 8 MB of JSON, a few KiB gzipped.
    let mut report =
        report(vec![internet_edge("shop", "frontend", "x", "192.0.2.1", 443)], vec![]).to_string();
    let domains = format!("[{}\"x\"]", "\"x\",".repeat(2_000_000 - 1));
    report = report.replacen("[\"x\"]", &domains, 1);
    let body = gzip(report.as_bytes());
    assert!(body.len() < 64 << 10, "{} bytes gzipped", body.len());

    let reply = app.request(gzip_request(&jwt, body)).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", reply.text());
    assert_eq!(reply.error(), "edges[0].target.internet.domains: more than 1000 domains; at most 1000 are accepted (see the EdgeReport limits in README.md)");
    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    assert_eq!(graph["edges"].as_array().unwrap().len(), 0, "nothing was written");
}

#[tokio::test]
async fn counts_saturate_instead_of_failing_every_later_report() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    let huge = k8s_edge("shop", "frontend", "shop", "cart", 7070, u64::MAX - 5);
    assert_eq!(
        app.post_report(&jwt, &report(vec![huge.clone()], vec![])).await.status,
        StatusCode::ACCEPTED
    );
    for _ in 0..2 {
        let reply = app
            .post_report(
                &jwt,
                &report(vec![k8s_edge("shop", "frontend", "shop", "cart", 7070, 1)], vec![]),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    }
    let reply = app.post_report(&jwt, &report(vec![huge], vec![])).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    assert_eq!(
        edge_to(&graph, "prod/shop/frontend", "prod/shop/cart")["connections"],
        json!(i64::MAX)
    );
}

#[tokio::test]
async fn impossible_dates_are_refused_naming_the_field_and_do_not_freeze_the_exposed_set() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "eu").await;
    let exposed =
        |addr: &str| vec![json!({"namespace": "pay", "name": "gateway", "addresses": [addr]})];

    let mut ancient = report(vec![k8s_edge("shop", "frontend", "shop", "cart", 7070, 1)], vec![]);
    ancient["edges"][0]["first_seen"] = json!("-5000-01-01T00:00:00Z");
    let reply = app.post_report(&jwt, &ancient).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text());
    assert!(
        reply
            .error()
            .starts_with("edges[0].first_seen: -5000-01-01T00:00:00+00:00 is before 2000-01-01"),
        "{}",
        reply.error()
    );

    let mut future = report(vec![], exposed("198.51.100.99"));
    future["generated_at"] = json!("9999-12-31T00:00:00Z");
    let reply = app.post_report(&jwt, &future).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text());
    assert!(
        reply
            .error()
            .starts_with("generated_at: 9999-12-31T00:00:00+00:00 is more than a day ahead"),
        "{}",
        reply.error()
    );

    // A set dated far ahead before timestamps were bounded does not outrank today's reports.
    let mut conn = app.owner().await;
    sqlx::query("UPDATE clusters SET exposed_as_of = '9999-12-31T00:00:00Z'")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        app.post_report(&jwt, &report(vec![], exposed("198.51.100.20"))).await.status,
        StatusCode::ACCEPTED
    );
    let exposures = app.state.store.exposures(org.org_id).await.unwrap();
    assert_eq!(exposures.len(), 1);
    assert_eq!(exposures[0].exposed.addresses, vec!["198.51.100.20"]);
}

#[tokio::test]
async fn a_value_the_database_cannot_store_is_a_422_not_a_500() {
    let app = test_app().await;
    let (org, creds, _) = app.tenant("acme", "prod").await;
    // Past validation (built in code): PostgreSQL text cannot hold NUL, SQLSTATE 22021.
    let mut report: model::EdgeReport = serde_json::from_value(report(
        vec![aws_edge("shop", "invoicer", "arn:aws:s3:::ok", "s3:GetObject")],
        vec![],
    ))
    .unwrap();
    let model::Target::Aws(aws) = &mut report.edges[0].target else { panic!("an aws edge") };
    aws.arn = "arn:aws:s3:::in\0voices".into();
    let err = app
        .state
        .store
        .ingest(org.org_id, creds.cluster_id, &report)
        .await
        .expect_err("PostgreSQL refuses NUL in text");
    let answer = cloud_api::http::error::ApiError::from(err);
    assert!(
        matches!(&answer, cloud_api::http::error::ApiError::Unprocessable(m) if m.contains("SQLSTATE 22021")),
        "{answer:?}"
    );
}

/// A request whose body never ends until `finish` is sent: it holds its ingest slot meanwhile.
fn held_request(
    jwt: &str,
) -> (Request<Body>, tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let (finish, rx) = tokio::sync::mpsc::channel(1);
    let body = Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    }));
    let req = Request::post("/api/v1/reports")
        .header(header::AUTHORIZATION, format!("Bearer {jwt}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(body)
        .unwrap();
    (req, finish)
}

#[tokio::test]
async fn reports_in_flight_are_capped_per_organisation_and_in_all() {
    let limits = IngestLimits {
        concurrent: 2,
        concurrent_per_org: 1,
        queue_wait: Duration::from_millis(200),
    };
    let app = test_app_with(Config { ingest: limits, ..Config::default() }).await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    let (_, _, other_jwt) = app.tenant("globex", "prod").await;
    let (_, _, third_jwt) = app.tenant("initech", "prod").await;

    let (held, finish) = held_request(&jwt);
    let router = app.router();
    let in_flight = tokio::spawn(async move { router.oneshot(held).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;

    let body = report(vec![k8s_edge("shop", "frontend", "shop", "cart", 7070, 1)], vec![]);
    let second = app.post_report(&jwt, &body).await;
    assert_eq!(second.status, StatusCode::TOO_MANY_REQUESTS, "{}", second.text());
    assert_eq!(second.headers[header::RETRY_AFTER], "2");
    assert!(
        second.error().contains("this organisation already has 1 reports being ingested"),
        "{}",
        second.error()
    );

    let (other_held, other_finish) = held_request(&other_jwt);
    let router = app.router();
    let other_in_flight = tokio::spawn(async move { router.oneshot(other_held).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = std::time::Instant::now();
    let third = app.post_report(&third_jwt, &body).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE, "{}", third.text());
    assert!(started.elapsed() >= Duration::from_millis(200), "it waited for a slot first");
    assert!(third.headers.contains_key(header::RETRY_AFTER));

    // The held reports finish; then the organisation's next report goes through.
    for (finish, task) in [(finish, in_flight), (other_finish, other_in_flight)] {
        finish.send(Ok(Bytes::from(body.to_string()))).await.unwrap();
        drop(finish);
        assert_eq!(task.await.unwrap().status(), StatusCode::ACCEPTED);
    }
    assert_eq!(
        app.post_report(&jwt, &body).await.status,
        StatusCode::OK,
        "the same report again: a duplicate"
    );
    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    assert_eq!(edge_to(&graph, "prod/shop/frontend", "prod/shop/cart")["connections"], 1);
}

#[tokio::test]
async fn merged_edges_keep_at_most_a_reports_worth_of_each_list() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    for batch in 0..2 {
        let mut edge = aws_edge("shop", "invoicer", "arn:aws:s3:::invoices", "s3:GetObject");
        edge["target"]["aws"]["actions"] =
            (0..600).map(|i| json!(format!("s3:Action{:04}", batch * 600 + i))).collect();
        let reply = app.post_report(&jwt, &report(vec![edge], vec![])).await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    }
    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    let actions = edge_to(&graph, "prod/shop/invoicer", "aws/arn:aws:s3:::invoices")["actions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(actions.len(), 1000, "{graph}");
    assert_eq!(
        (actions[0].as_str(), actions[999].as_str()),
        (Some("s3:Action0000"), Some("s3:Action0999")),
        "the alphabetically first are kept"
    );
}
