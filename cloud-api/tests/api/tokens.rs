//! API tokens: listed, created with scopes and revoked over REST; a revoked token stops on every
//! replica at the next request; scopes are enforced; hashes from before keyed hashing upgrade.

use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::common::*;

async fn new_token(app: &TestApp, admin: &str, name: &str, scopes: &[&str]) -> serde_json::Value {
    let reply = app
        .call(
            Method::POST,
            "/api/v1/tokens",
            Some(admin),
            Some(json!({"name": name, "scopes": scopes})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
    reply.json()
}

#[tokio::test]
async fn an_admin_lists_creates_and_revokes_tokens_and_revocation_is_immediate_on_every_replica() {
    let app = test_app().await;
    let other_replica = app.replica().await;
    let org = app.org("acme").await;

    let ci = new_token(&app, &org.api_token, "ci", &["read"]).await;
    let ci_token = ci["token"].as_str().unwrap().to_owned();
    assert!(ci_token.starts_with("imt_"));
    assert_eq!(ci["scopes"], json!(["read"]));
    assert!(ci["revoked_at"].is_null());

    let listed = app.get("/api/v1/tokens", &org.api_token).await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());
    let listed = listed.json();
    let names: Vec<&str> =
        listed.as_array().unwrap().iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, vec!["first token", "ci"]);
    assert!(!listed.to_string().contains(&ci_token[20..]), "listing never shows a secret");
    assert!(listed
        .as_array()
        .unwrap()
        .iter()
        .all(|t| t.get("token").is_none() && t.get("secret_hash").is_none()));

    // Both replicas accept it; one revokes it; the other refuses it at the very next request.
    assert_eq!(other_replica.get("/api/v1/clusters", &ci_token).await.status, StatusCode::OK);
    assert_eq!(app.get("/api/v1/clusters", &ci_token).await.status, StatusCode::OK);
    let id = ci["id"].as_str().unwrap();
    let revoked = app
        .call(Method::POST, &format!("/api/v1/tokens/{id}/revoke"), Some(&org.api_token), None)
        .await;
    assert_eq!(revoked.status, StatusCode::OK, "{}", revoked.text());
    assert!(revoked.json()["revoked_at"].is_string());
    for replica in [&other_replica, &app] {
        let refused = replica.get("/api/v1/clusters", &ci_token).await;
        assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{}", refused.text());
        assert!(refused.error().contains("revoked"), "{}", refused.error());
    }
    let shown = app.get(&format!("/api/v1/tokens/{id}"), &org.api_token).await.json();
    assert!(shown["revoked_at"].is_string());

    // The admin can revoke itself (and `cloud-api admin create-token` is the way back in).
    let first = listed[0]["id"].as_str().unwrap();
    assert_eq!(
        app.call(
            Method::POST,
            &format!("/api/v1/tokens/{first}/revoke"),
            Some(&org.api_token),
            None
        )
        .await
        .status,
        StatusCode::OK
    );
    assert_eq!(app.get("/api/v1/tokens", &org.api_token).await.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn scopes_decide_what_a_token_may_do() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    assert_eq!(
        app.post_report(
            &jwt,
            &report(vec![k8s_edge("shop", "frontend", "shop", "cart", 7070, 1)], vec![])
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );
    let read = new_token(&app, &org.api_token, "dashboards", &["read"]).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let write = new_token(&app, &org.api_token, "terraform", &["write"]).await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    for uri in [
        "/api/v1/access-graph",
        "/api/v1/clusters",
        "/api/v1/clusters/prod",
        "/api/v1/clusters/prod/client-intents",
        "/api/v1/whoami",
    ] {
        for token in [&read, &write, &org.api_token] {
            let reply = app.get(uri, token).await;
            assert_eq!(reply.status, StatusCode::OK, "GET {uri}: {}", reply.text());
        }
    }
    let create = |token: &str, name: &str| {
        let (token, name) = (token.to_owned(), name.to_owned());
        let app = &app;
        async move {
            app.call(Method::POST, "/api/v1/clusters", Some(&token), Some(json!({"name": name})))
                .await
        }
    };
    let refused = create(&read, "staging").await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{}", refused.text());
    assert!(
        refused.error().contains("scope read") && refused.error().contains("needs write"),
        "{}",
        refused.error()
    );
    for (method, uri) in
        [(Method::POST, "/api/v1/clusters/prod/revoke"), (Method::DELETE, "/api/v1/clusters/prod")]
    {
        assert_eq!(
            app.call(method.clone(), uri, Some(&read), None).await.status,
            StatusCode::FORBIDDEN,
            "{method} {uri}"
        );
    }
    assert_eq!(create(&write, "staging").await.status, StatusCode::CREATED);
    for token in [&read, &write] {
        assert_eq!(app.get("/api/v1/tokens", token).await.status, StatusCode::FORBIDDEN);
        let made = app
            .call(
                Method::POST,
                "/api/v1/tokens",
                Some(token),
                Some(json!({"name": "escalate", "scopes": ["admin"]})),
            )
            .await;
        assert_eq!(
            made.status,
            StatusCode::FORBIDDEN,
            "a non-admin token cannot mint an admin one"
        );
    }

    let whoami = app.get("/api/v1/whoami", &read).await.json();
    assert_eq!(whoami["org_name"], "acme");
    assert_eq!(whoami["token"]["name"], "dashboards");
    assert_eq!(whoami["token"]["scopes"], json!(["read"]));

    for (body, says) in [
        (json!({"name": "x", "scopes": ["root"]}), "unknown scope"),
        (json!({"name": "x", "scopes": []}), "at least one scope"),
        (json!({"name": "", "scopes": ["read"]}), "token name"),
    ] {
        let reply =
            app.call(Method::POST, "/api/v1/tokens", Some(&org.api_token), Some(body)).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", reply.text());
        assert!(reply.error().contains(says), "{}", reply.error());
    }
}

#[tokio::test]
async fn another_organisations_tokens_are_not_found() {
    let app = test_app().await;
    let acme = app.org("acme").await;
    let globex = app.org("globex").await;
    let acme_ci = new_token(&app, &acme.api_token, "ci", &["read"]).await;
    let id = acme_ci["id"].as_str().unwrap();
    for (method, uri) in [
        (Method::GET, format!("/api/v1/tokens/{id}")),
        (Method::POST, format!("/api/v1/tokens/{id}/revoke")),
    ] {
        let reply = app.call(method.clone(), &uri, Some(&globex.api_token), None).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method} {uri}: {}", reply.text());
    }
    let listed = app.get("/api/v1/tokens", &globex.api_token).await.json();
    assert_eq!(listed.as_array().unwrap().len(), 1, "globex sees only its own token: {listed}");
    assert_eq!(
        app.get("/api/v1/clusters", acme_ci["token"].as_str().unwrap()).await.status,
        StatusCode::OK,
        "acme's token still works"
    );
    assert_eq!(
        app.get("/api/v1/tokens/not-a-uuid", &acme.api_token).await.status,
        StatusCode::NOT_FOUND
    );
}

/// Hashes stored before keyed hashing (argon2id) verify once and are replaced by keyed hashes.
#[tokio::test]
async fn argon2_hashes_from_before_upgrade_on_first_use() {
    use argon2::password_hash::{PasswordHasher, SaltString};
    let app = test_app().await;
    let org = app.org("acme").await;
    let creds = app.cluster(&org.api_token, "prod").await;
    let argon = |secret: &str| {
        argon2::Argon2::default()
            .hash_password(secret.as_bytes(), &SaltString::generate(&mut rand::rngs::OsRng))
            .unwrap()
            .to_string()
    };
    let (_, token_secret) = cloud_api::tokens::parse_api_token(&org.api_token).unwrap();
    let mut owner = app.owner().await;
    sqlx::query("UPDATE api_tokens SET secret_hash = $1")
        .bind(argon(token_secret))
        .execute(&mut owner)
        .await
        .unwrap();
    sqlx::query("UPDATE clusters SET secret_hash = $1")
        .bind(argon(&creds.client_secret))
        .execute(&mut owner)
        .await
        .unwrap();

    let wrong = app
        .token_request(&format!(
            "grant_type=client_credentials&client_id={}&client_secret=wrong",
            creds.client_id
        ))
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    app.cluster_token(&creds).await;
    assert_eq!(app.get("/api/v1/clusters", &org.api_token).await.status, StatusCode::OK);
    let hashes: Vec<String> = sqlx::query_scalar(
        "SELECT secret_hash FROM api_tokens UNION ALL SELECT secret_hash FROM clusters",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert!(
        hashes.iter().all(|h| h.starts_with("hmac-sha256$")),
        "upgraded on first use: {hashes:?}"
    );
    // And the upgraded hashes verify.
    app.cluster_token(&creds).await;
    assert_eq!(app.get("/api/v1/clusters", &org.api_token).await.status, StatusCode::OK);
}
