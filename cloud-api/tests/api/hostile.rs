//! Unauthenticated callers against the real router: rate limits answer 429 with Retry-After,
//! an unknown id and a wrong secret are answered alike, the caller's JWT key id is not echoed,
//! `/metrics` is not on the API's address, and graph reads are bounded in edges and time.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine;
use cloud_api::limits::AuthLimits;
use cloud_api::store::ReadLimits;
use cloud_api::{Config, Protections};
use serde_json::json;
use sqlx::Executor;
use tower::ServiceExt;

use crate::common::*;

fn limits(auth: AuthLimits) -> Protections {
    Protections { auth, ..Default::default() }
}

#[tokio::test]
async fn token_requests_from_one_address_are_rate_limited_with_retry_after() {
    let app = test_app_protected(
        Config::default(),
        limits(AuthLimits {
            per_address_per_second: 0.01,
            per_address_burst: 5,
            ..Default::default()
        }),
    )
    .await;
    let org = app.org("acme").await;
    let creds = app.cluster(&org.api_token, "prod").await;
    let unknown = "grant_type=client_credentials&client_id=cl_unknown&client_secret=guess";
    for _ in 0..4 {
        assert_eq!(app.token_request(unknown).await.status, StatusCode::UNAUTHORIZED);
    }
    app.cluster_token(&creds).await;
    let limited = app
        .token_request(&format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            creds.client_id, creds.client_secret
        ))
        .await;
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS, "{}", limited.text());
    assert_eq!(limited.json()["error"], "slow_down");
    let said = limited.json()["error_description"].as_str().unwrap().to_owned();
    assert!(said.contains("from this address") && said.contains("retry in"), "{said}");
    let retry: u64 = limited.headers[header::RETRY_AFTER].to_str().unwrap().parse().unwrap();
    assert!(retry >= 1, "{retry}");
}

#[tokio::test]
async fn token_requests_beyond_the_concurrency_cap_wait_then_get_503() {
    let app = test_app_protected(
        Config::default(),
        limits(AuthLimits {
            concurrency: 1,
            queue_wait: Duration::from_millis(200),
            ..Default::default()
        }),
    )
    .await;
    let org = app.org("acme").await;
    let creds = app.cluster(&org.api_token, "prod").await;
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        creds.client_id, creds.client_secret
    );
    // The one check allowed in flight gets stuck behind a lock on the clients' table.
    let mut owner = app.owner().await;
    owner.execute("BEGIN").await.unwrap();
    owner.execute("LOCK TABLE clusters IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let stuck = {
        let router = app.router();
        let req = Request::post("/oauth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.clone()))
            .unwrap();
        tokio::spawn(async move { router.oneshot(req).await.unwrap().status() })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let busy = app.token_request(&form).await;
    assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE, "{}", busy.text());
    assert_eq!(busy.json()["error"], "temporarily_unavailable");
    assert_eq!(busy.headers[header::RETRY_AFTER], "1");
    owner.execute("ROLLBACK").await.unwrap();
    assert_eq!(
        stuck.await.unwrap(),
        StatusCode::OK,
        "the waiting check completes once the lock is gone"
    );
    app.cluster_token(&creds).await;
}

#[tokio::test]
async fn a_client_id_with_too_many_failures_is_refused_for_a_while() {
    let app = test_app_protected(
        Config::default(),
        limits(AuthLimits { client_failures_per_minute: 3, ..Default::default() }),
    )
    .await;
    let org = app.org("acme").await;
    let creds = app.cluster(&org.api_token, "prod").await;
    let other = app.cluster(&org.api_token, "staging").await;
    let wrong =
        format!("grant_type=client_credentials&client_id={}&client_secret=guess", creds.client_id);
    for _ in 0..3 {
        assert_eq!(app.token_request(&wrong).await.status, StatusCode::UNAUTHORIZED);
    }
    let refused = app.token_request(&wrong).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text());
    assert!(
        refused.json()["error_description"].as_str().unwrap().contains("client ID"),
        "{}",
        refused.text()
    );
    app.cluster_token(&other).await;
}

#[tokio::test]
async fn failed_api_tokens_use_up_the_address_budget() {
    let app = test_app_protected(
        Config::default(),
        limits(AuthLimits {
            per_address_per_second: 0.01,
            per_address_burst: 3,
            ..Default::default()
        }),
    )
    .await;
    let org = app.org("acme").await;
    for _ in 0..3 {
        assert_eq!(
            app.get("/api/v1/clusters", "imt_00000000000000000000000000000000_guess").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let refused = app.get("/api/v1/clusters", &org.api_token).await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS, "{}", refused.text());
    assert!(refused.error().contains("retry in"), "{}", refused.error());
    assert!(refused.headers.contains_key(header::RETRY_AFTER));
}

/// What a caller can observe (status, body, headers) is the same for an id that does not exist
/// and an id that does with a wrong secret; the timing is compared in `benches/auth.rs`.
#[tokio::test]
async fn unknown_ids_and_wrong_secrets_are_answered_alike() {
    let app = test_app().await;
    let org = app.org("acme").await;
    let creds = app.cluster(&org.api_token, "prod").await;
    let unknown = app.token_request("grant_type=client_credentials&client_id=cl_00000000000000000000000000000000&client_secret=guess").await;
    let wrong = app
        .token_request(&format!(
            "grant_type=client_credentials&client_id={}&client_secret=guess",
            creds.client_id
        ))
        .await;
    assert_eq!((unknown.status, unknown.body.clone()), (wrong.status, wrong.body.clone()));
    let (id, _) = cloud_api::tokens::parse_api_token(&org.api_token).unwrap();
    let unknown = app
        .get(
            "/api/v1/clusters",
            &cloud_api::tokens::format_api_token(uuid::Uuid::new_v4(), "guess"),
        )
        .await;
    let wrong =
        app.get("/api/v1/clusters", &cloud_api::tokens::format_api_token(id, "guess")).await;
    assert_eq!((unknown.status, unknown.body.clone()), (wrong.status, wrong.body.clone()));
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_jwt_key_id_is_not_echoed() {
    let app = test_app().await;
    let b64 = |v: serde_json::Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    };
    let kid = "<img src=x onerror=alert(1)>";
    let forged =
        format!("{}.{}.c2ln", b64(json!({"alg": "EdDSA", "kid": kid})), b64(json!({"sub": "x"})));
    let reply = app.post_report(&forged, &report(vec![], vec![])).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(!reply.text().contains("img") && !reply.text().contains("onerror"), "{}", reply.text());
    assert!(
        reply.error().contains("not signed by any of this service's keys"),
        "{}",
        reply.error()
    );
}

#[tokio::test]
async fn metrics_are_served_only_on_their_own_address() {
    let app = test_app().await;
    let on_api = app.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(on_api.status, StatusCode::NOT_FOUND, "{}", on_api.text());
    let text = app.metrics().await;
    assert!(text.contains("intentmap_cloud_tokens_issued_total"), "{text}");
}

#[tokio::test]
async fn graph_reads_are_bounded_in_edges_and_time() {
    let reads = ReadLimits {
        max_edges: 3,
        statement_timeout: Duration::from_millis(300),
        ..Default::default()
    };
    let app =
        test_app_protected(Config::default(), Protections { reads, ..Default::default() }).await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    let edges = |ns: &str, n: usize| {
        (0..n)
            .map(|i| k8s_edge(ns, &format!("client-{i}"), "shop", "cart", 7070, 1))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        app.post_report(&jwt, &report(edges("shop", 2), vec![])).await.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(app.get("/api/v1/access-graph", &org.api_token).await.status, StatusCode::OK);
    assert_eq!(
        app.post_report(&jwt, &report(edges("ops", 2), vec![])).await.status,
        StatusCode::ACCEPTED
    );

    let refused = app.get("/api/v1/access-graph", &org.api_token).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", refused.text());
    assert!(
        refused.error().contains("more than 3 edges") && refused.error().contains("since="),
        "{}",
        refused.error()
    );
    let intents = app.get("/api/v1/clusters/prod/client-intents", &org.api_token).await;
    assert_eq!(intents.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", intents.text());
    assert!(intents.error().contains("namespace="), "{}", intents.error());
    let one_namespace =
        app.get("/api/v1/clusters/prod/client-intents?namespace=ops", &org.api_token).await;
    assert_eq!(one_namespace.status, StatusCode::OK, "{}", one_namespace.text());
    assert!(
        one_namespace.text().contains("client-1")
            && !one_namespace.text().contains("namespace: shop"),
        "{}",
        one_namespace.text()
    );

    // A read stuck behind a lock is cut off by the statement timeout.
    let mut owner = app.owner().await;
    owner.execute("BEGIN").await.unwrap();
    owner.execute("LOCK TABLE edges IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let stuck = app.get("/api/v1/access-graph?since=2026-01-01T00:00:00Z", &org.api_token).await;
    assert_eq!(stuck.status, StatusCode::SERVICE_UNAVAILABLE, "{}", stuck.text());
    assert!(stuck.error().contains("took longer than 0.3 s"), "{}", stuck.error());
    owner.execute("ROLLBACK").await.unwrap();
    assert_eq!(
        app.get("/api/v1/clusters/prod/client-intents?namespace=shop", &org.api_token).await.status,
        StatusCode::OK
    );
}
