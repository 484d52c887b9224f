use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine;
use cloud_api::tokens::{JwtIssuer, SigningKey};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn a_cluster_trades_its_credentials_for_a_short_lived_signed_jwt() {
    let app = test_app().await;
    let org = app.org("acme").await;
    let creds = app.cluster(&org.api_token, "prod-eu").await;

    let form = app
        .token_request(&format!(
            "grant_type=client_credentials&client_id={}&client_secret={}",
            creds.client_id, creds.client_secret
        ))
        .await;
    assert_eq!(form.status, StatusCode::OK, "{}", form.text());
    assert_eq!(form.headers[header::CACHE_CONTROL], "no-store");
    let body = form.json();
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 300);
    let jwt = body["access_token"].as_str().unwrap();

    // The token verifies against the published JWKS, pinned to EdDSA, with our claims.
    let jwks = app.call(Method::GET, "/.well-known/jwks.json", None, None).await.json();
    let jwks: jsonwebtoken::jwk::JwkSet = serde_json::from_value(jwks).unwrap();
    let header = jsonwebtoken::decode_header(jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    let jwk = jwks.find(header.kid.as_deref().unwrap()).expect("the token's kid is published");
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::EdDSA);
    validation.set_issuer(&[ISSUER]);
    validation.set_audience(&[AUDIENCE]);
    let claims = jsonwebtoken::decode::<serde_json::Value>(
        jwt,
        &jsonwebtoken::DecodingKey::from_jwk(jwk).unwrap(),
        &validation,
    )
    .unwrap()
    .claims;
    assert_eq!(claims["org"], org.org_id.to_string());
    assert_eq!(claims["cluster"], creds.cluster_id.to_string());
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 300);

    // JSON bodies and HTTP Basic client authentication work too.
    let as_json = app
        .call(
            Method::POST,
            "/oauth/token",
            None,
            Some(json!({"grant_type": "client_credentials", "client_id": creds.client_id, "client_secret": creds.client_secret})),
        )
        .await;
    assert_eq!(as_json.status, StatusCode::OK, "{}", as_json.text());
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{}:{}", creds.client_id, creds.client_secret));
    let req = Request::post("/oauth/token")
        .header(header::AUTHORIZATION, format!("Basic {basic}"))
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("grant_type=client_credentials"))
        .unwrap();
    assert_eq!(app.request(req).await.status, StatusCode::OK);

    // And the token is accepted for ingest.
    let ok = app
        .post_report(
            jwt,
            &report(vec![k8s_edge("shop", "frontend", "shop", "cart", 7070, 1)], vec![]),
        )
        .await;
    assert_eq!(ok.status, StatusCode::ACCEPTED, "{}", ok.text());
}

#[tokio::test]
async fn bad_client_credentials_get_oauth_errors() {
    let app = test_app().await;
    let org = app.org("acme").await;
    let creds = app.cluster(&org.api_token, "prod").await;
    let cases = [
        (
            format!(
                "grant_type=client_credentials&client_id={}&client_secret=wrong",
                creds.client_id
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            format!(
                "grant_type=client_credentials&client_id=cl_unknown&client_secret={}",
                creds.client_secret
            ),
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        ),
        (
            format!("client_id={}&client_secret={}", creds.client_id, creds.client_secret),
            StatusCode::BAD_REQUEST,
            "invalid_request",
        ),
        (
            format!(
                "grant_type=password&client_id={}&client_secret={}",
                creds.client_id, creds.client_secret
            ),
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        ),
        ("grant_type=client_credentials".to_owned(), StatusCode::BAD_REQUEST, "invalid_request"),
    ];
    for (form, status, error) in cases {
        let reply = app.token_request(&form).await;
        assert_eq!(reply.status, status, "{form}: {}", reply.text());
        assert_eq!(reply.json()["error"], error, "{form}");
        assert!(!reply.json()["error_description"].as_str().unwrap().is_empty());
    }
    let xml = Request::post("/oauth/token")
        .header(header::CONTENT_TYPE, "text/xml")
        .body(Body::from("<x/>"))
        .unwrap();
    assert_eq!(app.request(xml).await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn every_kind_of_wrong_token_is_refused_at_ingest() {
    let app = test_app().await;
    let (org, creds, good) = app.tenant("acme", "prod").await;
    let body = report(vec![k8s_edge("shop", "frontend", "shop", "cart", 7070, 1)], vec![]);
    let now = chrono::Utc::now().timestamp();

    let expired = app.state.jwt.issue(org.org_id, creds.cluster_id, now - 3600).0;
    let same_key = |aud: &str, iss: &str| {
        JwtIssuer::new(
            iss.into(),
            aud.into(),
            Duration::from_secs(300),
            vec![SigningKey::from_pem(&app.signing_key_pem).unwrap()],
        )
        .unwrap()
    };
    let wrong_audience =
        same_key("someone-else", ISSUER).issue(org.org_id, creds.cluster_id, now).0;
    let wrong_issuer =
        same_key(AUDIENCE, "https://evil.test").issue(org.org_id, creds.cluster_id, now).0;
    let foreign_key = JwtIssuer::new(
        ISSUER.into(),
        AUDIENCE.into(),
        Duration::from_secs(300),
        vec![SigningKey::generate()],
    )
    .unwrap()
    .issue(org.org_id, creds.cluster_id, now)
    .0;
    let claims = good.split('.').nth(1).unwrap();
    let alg_none = format!(
        "{}.{claims}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#)
    );
    let mut flipped = good.clone();
    let last = flipped.pop().unwrap();
    flipped.push(if last == 'A' { 'B' } else { 'A' });

    for (what, token) in [
        ("expired", expired.as_str()),
        ("wrong audience", &wrong_audience),
        ("wrong issuer", &wrong_issuer),
        ("signed by another key", &foreign_key),
        ("alg none", &alg_none),
        ("tampered signature", &flipped),
        ("garbage", "not-a-jwt"),
        ("an API token", &org.api_token),
    ] {
        let reply = app.post_report(token, &body).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}: {}", reply.text());
        assert_eq!(reply.headers[header::WWW_AUTHENTICATE], "Bearer", "{what}");
        assert!(!reply.error().is_empty(), "{what}");
    }
    let no_header = app.call(Method::POST, "/api/v1/reports", None, Some(body.clone())).await;
    assert_eq!(no_header.status, StatusCode::UNAUTHORIZED);
    assert!(no_header.error().contains("Authorization"), "{}", no_header.error());
    let basic = Request::post("/api/v1/reports")
        .header(header::AUTHORIZATION, "Basic Zm9vOmJhcg==")
        .body(Body::from(body.to_string()))
        .unwrap();
    assert_eq!(app.request(basic).await.status, StatusCode::UNAUTHORIZED);

    // Nothing got in.
    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    assert_eq!(graph["edges"].as_array().unwrap().len(), 0);
    // The good token still works.
    assert_eq!(app.post_report(&good, &body).await.status, StatusCode::ACCEPTED);
}

#[tokio::test]
async fn revoking_or_deleting_a_cluster_stops_its_tokens_and_its_secret() {
    let app = test_app().await;
    let org = app.org("acme").await;
    let a = app.cluster(&org.api_token, "a").await;
    let b = app.cluster(&org.api_token, "b").await;
    let (jwt_a, jwt_b) = (app.cluster_token(&a).await, app.cluster_token(&b).await);
    let body = || report(vec![k8s_edge("shop", "frontend", "shop", "cart", 7070, 1)], vec![]);

    let revoked = app
        .call(
            Method::POST,
            &format!("/api/v1/clusters/{}/revoke", a.cluster_id),
            Some(&org.api_token),
            None,
        )
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    assert!(revoked.json()["revoked_at"].is_string());
    let refused = app.post_report(&jwt_a, &body()).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);
    assert!(refused.error().contains("revoked"), "{}", refused.error());
    let form = format!(
        "grant_type=client_credentials&client_id={}&client_secret={}",
        a.client_id, a.client_secret
    );
    assert_eq!(app.token_request(&form).await.status, StatusCode::UNAUTHORIZED);

    assert_eq!(app.post_report(&jwt_b, &body()).await.status, StatusCode::ACCEPTED);
    let deleted = app.call(Method::DELETE, "/api/v1/clusters/b", Some(&org.api_token), None).await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    let mut conn: sqlx::PgConnection = sqlx::Connection::connect(&app.database_url).await.unwrap();
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM edges WHERE cluster_id = $1")
        .bind(b.cluster_id)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0, "deleting a cluster deletes its edges");
    assert_eq!(app.post_report(&jwt_b, &body()).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.get("/api/v1/clusters/b", &org.api_token).await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn api_tokens_are_checked_and_stored_only_as_hashes() {
    let app = test_app().await;
    let org = app.org("acme").await;
    let creds = app.cluster(&org.api_token, "prod").await;
    let (id, _) = cloud_api::tokens::parse_api_token(&org.api_token).unwrap();
    let forged = cloud_api::tokens::format_api_token(id, "guessed-secret");
    let jwt = app.cluster_token(&creds).await;
    for (what, token) in [
        ("wrong secret", forged.as_str()),
        ("garbage", "imt_garbage"),
        ("a cluster JWT", jwt.as_str()),
    ] {
        let reply = app.get("/api/v1/clusters", token).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{what}");
    }
    assert_eq!(app.get("/api/v1/clusters", &org.api_token).await.status, StatusCode::OK);

    // The database holds keyed hashes (HMAC-SHA256 under the server's key), never the token or
    // the client secret.
    let mut conn = app.owner().await;
    let hashes: Vec<String> = sqlx::query_scalar(
        "SELECT secret_hash FROM api_tokens UNION ALL SELECT secret_hash FROM clusters",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    assert_eq!(hashes.len(), 2);
    for h in hashes {
        assert!(
            h.starts_with(&format!("hmac-sha256${}$", app.state.store.hasher().primary_kid())),
            "{h}"
        );
        assert!(!h.contains(&creds.client_secret) && !org.api_token.contains(&h));
    }
}
