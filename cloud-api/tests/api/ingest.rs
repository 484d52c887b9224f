use std::io::Write;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use cloud_api::Config;
use serde_json::{json, Value};

use crate::common::*;

fn edge_of<'a>(graph: &'a Value, source: &str, target: &str) -> &'a Value {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == source && e["target"] == target)
        .unwrap_or_else(|| panic!("no edge {source} -> {target} in {graph}"))
}

#[tokio::test]
async fn replaying_a_report_changes_nothing_and_new_reports_merge() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    let first = report(
        vec![
            k8s_edge("shop", "frontend", "shop", "cart", 7070, 5),
            k8s_edge("shop", "frontend", "shop", "cart", 7070, 2),
        ],
        vec![],
    );
    let reply = app.post_report(&jwt, &first).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    assert_eq!(reply.json()["duplicate"], false);
    assert_eq!(reply.json()["edges_merged"], 1, "duplicates within one report are folded");

    let again = app.post_report(&jwt, &first).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["duplicate"], true);
    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    assert_eq!(edge_of(&graph, "prod/shop/frontend", "prod/shop/cart")["connections"], 7);

    let mut later = k8s_edge("shop", "frontend", "shop", "cart", 8080, 3);
    later["first_seen"] = json!("2026-11-24T16:00:00Z");
    later["last_seen"] = json!("2026-11-24T19:00:00Z");
    assert_eq!(
        app.post_report(&jwt, &report(vec![later], vec![])).await.status,
        StatusCode::ACCEPTED
    );
    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    let e = edge_of(&graph, "prod/shop/frontend", "prod/shop/cart");
    assert_eq!(e["connections"], 10);
    assert_eq!(e["first_seen"], "2026-11-24T16:00:00Z");
    assert_eq!(e["last_seen"], "2026-11-24T19:00:00Z");
    assert_eq!(
        e["ports"],
        json!([{"port": 7070, "protocol": "TCP"}, {"port": 8080, "protocol": "TCP"}])
    );

    let metrics = app.metrics().await;
    assert!(metrics.contains("intentmap_cloud_reports_total{outcome=\"accepted\"} 2"), "{metrics}");
    assert!(
        metrics.contains("intentmap_cloud_reports_total{outcome=\"duplicate\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn traffic_volume_is_summed_saturating_and_returned_on_the_graph_summary_and_dot() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    let mut measured = k8s_edge("shop", "frontend", "shop", "cart", 7070, 1);
    measured["bytes"] = json!({"sent": 1000, "received": 250});
    let unmeasured = k8s_edge("shop", "frontend", "shop", "cart", 7070, 1);
    let mut near_max = k8s_edge("shop", "frontend", "shop", "cart", 9090, 1);
    near_max["bytes"] = json!({"sent": i64::MAX as u64, "received": 5});
    let mut other = k8s_edge("shop", "checkout", "shop", "cart", 7070, 1);
    other["bytes"] = json!(null);
    let post = |edges: Vec<Value>| {
        let body = report(edges, vec![]);
        let app = &app;
        let jwt = &jwt;
        async move {
            let reply = app.post_report(jwt, &body).await;
            assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
        }
    };
    let graph = || async { app.get("/api/v1/access-graph", &org.api_token).await.json() };

    // Unmeasured: no bytes at all (not zero).
    post(vec![unmeasured.clone(), other]).await;
    let g = graph().await;
    let no_bytes = |e: &Value| e.get("bytes").is_none_or(Value::is_null);
    assert!(no_bytes(edge_of(&g, "prod/shop/frontend", "prod/shop/cart")), "{g}");

    // NULL + x = x, then x + x.
    post(vec![measured.clone()]).await;
    post(vec![measured]).await;
    let g = graph().await;
    let e = edge_of(&g, "prod/shop/frontend", "prod/shop/cart");
    assert_eq!(e["bytes"], json!({"sent": 2000, "received": 500}), "{g}");
    assert_eq!(e["connections"], 3);
    assert!(no_bytes(edge_of(&g, "prod/shop/checkout", "prod/shop/cart")), "{g}");

    // Saturating at 2^63-1 rather than failing the report; x + NULL = x.
    post(vec![near_max]).await;
    post(vec![unmeasured]).await;
    let g = graph().await;
    let e = edge_of(&g, "prod/shop/frontend", "prod/shop/cart");
    assert_eq!(e["bytes"], json!({"sent": i64::MAX, "received": 505}), "{g}");
    assert_eq!(e["connections"], 5);
    // A re-report of a port already stored keeps both ports.
    assert_eq!(
        e["ports"],
        json!([{"port": 7070, "protocol": "TCP"}, {"port": 9090, "protocol": "TCP"}]),
        "{g}"
    );

    // The aggregated view sums them per namespace pair (one of its two calls unmeasured); the DOT
    // form labels the call with them.
    let summary = app.get("/api/v1/access-graph/summary", &org.api_token).await.json();
    let agg = summary["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["source"] == "prod/shop" && e["target"] == "prod/shop")
        .unwrap_or_else(|| panic!("no prod/shop -> prod/shop in {summary}"));
    assert_eq!(agg["edges"], 2, "{summary}");
    assert_eq!(agg["bytes"], json!({"sent": i64::MAX, "received": 505}), "{summary}");
    let dot = app.get("/api/v1/access-graph?format=dot", &org.api_token).await;
    assert_eq!(dot.status, StatusCode::OK);
    assert!(dot.text().contains(" ↑ / 505 B ↓"), "{}", dot.text());
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn raw_report(jwt: &str, body: Vec<u8>, encoding: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/api/v1/reports")
        .header(header::AUTHORIZATION, format!("Bearer {jwt}"))
        .header(header::CONTENT_TYPE, "application/json");
    if let Some(enc) = encoding {
        req = req.header(header::CONTENT_ENCODING, enc);
    }
    req.body(Body::from(body)).unwrap()
}

#[tokio::test]
async fn gzip_reports_are_accepted_and_bombs_and_oversized_bodies_are_refused() {
    let app = test_app_with(Config {
        max_body_bytes: 64 * 1024,
        max_decompressed_bytes: 256 * 1024,
        ..Config::default()
    })
    .await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;

    let body =
        report(vec![k8s_edge("shop", "frontend", "shop", "cart", 7070, 1)], vec![]).to_string();
    let ok = app.request(raw_report(&jwt, gzip(body.as_bytes()), Some("gzip"))).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text());

    let many: Vec<Value> = (0..2000)
        .map(|i| k8s_edge("shop", &format!("client-{i}"), "shop", "cart", 7070, 1))
        .collect();
    let big = report(many, vec![]).to_string();
    assert!(big.len() > 256 * 1024);
    let too_big = app.request(raw_report(&jwt, big.clone().into_bytes(), None)).await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", too_big.text());
    assert!(too_big.error().contains("smaller reports"));
    let compressed = gzip(big.as_bytes());
    assert!(compressed.len() < 64 * 1024, "compresses under the wire limit");
    let bomb = app.request(raw_report(&jwt, compressed, Some("gzip"))).await;
    assert_eq!(bomb.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", bomb.text());
    assert!(bomb.error().contains("decompressed"));

    let corrupt =
        app.request(raw_report(&jwt, b"\x1f\x8b\x08\x00garbage".to_vec(), Some("gzip"))).await;
    assert_eq!(corrupt.status, StatusCode::BAD_REQUEST);
    assert!(corrupt.error().contains("gzip"));
    let brotli = app.request(raw_report(&jwt, body.clone().into_bytes(), Some("br"))).await;
    assert_eq!(brotli.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    assert_eq!(graph["edges"].as_array().unwrap().len(), 1, "only the good report landed");
}

#[tokio::test]
async fn malformed_reports_are_refused_with_a_reason_and_write_nothing() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    let good = report(
        vec![
            k8s_edge("shop", "frontend", "shop", "cart", 7070, 1),
            internet_edge("shop", "frontend", "api.stripe.com", "203.0.113.7", 443),
        ],
        vec![],
    );

    let mut unknown_field = good.clone();
    unknown_field["edges"][0]["volume"] = json!(12);
    let mut newer = good.clone();
    newer["schema_version"] = json!(2);
    let mut bad_ip = good.clone();
    bad_ip["edges"][1]["target"]["internet"]["ips"] = json!(["203.0.113.999"]);
    let mut bad_name = good.clone();
    bad_name["edges"][0]["client"]["name"] = json!("Front End");
    let mut no_id = good.clone();
    no_id.as_object_mut().unwrap().remove("report_id");

    for (what, body, status, says) in [
        ("unknown field", unknown_field, StatusCode::BAD_REQUEST, "unknown field `volume`"),
        (
            "newer schema",
            newer,
            StatusCode::UNPROCESSABLE_ENTITY,
            "schema_version 2 is not supported",
        ),
        ("bad IP", bad_ip, StatusCode::UNPROCESSABLE_ENTITY, "edges[1].target.internet.ips"),
        ("bad name", bad_name, StatusCode::UNPROCESSABLE_ENTITY, "edges[0].client.name"),
        ("no report id", no_id, StatusCode::BAD_REQUEST, "report_id"),
    ] {
        let reply = app.post_report(&jwt, &body).await;
        assert_eq!(reply.status, status, "{what}: {}", reply.text());
        assert!(reply.error().contains(says), "{what}: {}", reply.error());
    }
    let cut = good.to_string();
    let truncated =
        app.request(raw_report(&jwt, cut.as_bytes()[..cut.len() / 2].to_vec(), None)).await;
    assert_eq!(truncated.status, StatusCode::BAD_REQUEST);
    let text = Request::post("/api/v1/reports")
        .header(header::AUTHORIZATION, format!("Bearer {jwt}"))
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(cut.clone()))
        .unwrap();
    assert_eq!(app.request(text).await.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);

    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    assert_eq!(graph["edges"].as_array().unwrap().len(), 0, "nothing half-written");
    let metrics = app.metrics().await;
    assert!(metrics.contains("intentmap_cloud_reports_total{outcome=\"rejected\"} 7"), "{metrics}");
    // The same report id, once valid, is still accepted: refusals don't burn ids.
    assert_eq!(app.post_report(&jwt, &good).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn the_newest_report_decides_what_a_cluster_exposes() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "eu").await;
    let exposed = |addr: &str| {
        vec![
            json!({"namespace": "pay", "name": "gateway", "kind": "Deployment", "addresses": [addr], "hostnames": ["pay.example.com"]}),
        ]
    };
    let mut newer = report(vec![], exposed("198.51.100.20"));
    newer["generated_at"] = json!(chrono::Utc::now() - chrono::Duration::hours(1));
    let mut older = report(vec![], exposed("198.51.100.10"));
    older["generated_at"] = json!(chrono::Utc::now() - chrono::Duration::hours(2));
    assert_eq!(app.post_report(&jwt, &newer).await.status, StatusCode::ACCEPTED);
    assert_eq!(
        app.post_report(&jwt, &older).await.status,
        StatusCode::ACCEPTED,
        "a late report is still ingested"
    );

    let us = app.cluster(&org.api_token, "us").await;
    let us_jwt = app.cluster_token(&us).await;
    let calls = vec![
        internet_edge("shop", "frontend", "old.example.net", "198.51.100.10", 443),
        internet_edge("shop", "checkout", "new.example.net", "198.51.100.20", 443),
    ];
    assert_eq!(app.post_report(&us_jwt, &report(calls, vec![])).await.status, StatusCode::ACCEPTED);
    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    edge_of(&graph, "us/shop/checkout", "eu/pay/gateway");
    edge_of(&graph, "us/shop/frontend", "internet/old.example.net");
}
