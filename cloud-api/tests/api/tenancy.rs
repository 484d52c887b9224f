//! Both walls between organisations: the API's own filters, and row-level security underneath.

use axum::http::{Method, StatusCode};
use sqlx::{Connection, Executor, PgConnection};

use crate::common::*;

#[tokio::test]
async fn one_organisation_cannot_see_or_touch_anothers_clusters_through_the_api() {
    let app = test_app().await;
    let (acme, acme_cluster, acme_jwt) = app.tenant("acme", "prod").await;
    let (globex, _, globex_jwt) = app.tenant("globex", "staging").await;
    assert_eq!(
        app.post_report(
            &acme_jwt,
            &report(vec![k8s_edge("shop", "frontend", "shop", "cart", 7070, 5)], vec![])
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        app.post_report(
            &globex_jwt,
            &report(vec![k8s_edge("lab", "runner", "lab", "db", 5432, 1)], vec![])
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );

    let g = &globex.api_token;
    let id = acme_cluster.cluster_id;
    for (method, uri) in [
        (Method::GET, format!("/api/v1/clusters/{id}")),
        (Method::GET, "/api/v1/clusters/prod".to_owned()),
        (Method::GET, format!("/api/v1/clusters/{id}/client-intents")),
        (Method::POST, format!("/api/v1/clusters/{id}/revoke")),
        (Method::DELETE, format!("/api/v1/clusters/{id}")),
        (Method::GET, "/api/v1/access-graph?cluster=prod".to_owned()),
    ] {
        let reply = app.call(method.clone(), &uri, Some(g), None).await;
        assert_eq!(
            reply.status,
            StatusCode::NOT_FOUND,
            "{method} {uri} must look like nothing is there: {}",
            reply.text()
        );
    }

    let listed = app.get("/api/v1/clusters", g).await.json();
    assert_eq!(
        listed.as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect::<Vec<_>>(),
        vec!["staging"]
    );
    let graph = app.get("/api/v1/access-graph", g).await.json();
    let text = graph.to_string();
    assert!(
        text.contains("runner") && !text.contains("frontend") && !text.contains("prod"),
        "{text}"
    );

    // acme's cluster is untouched by globex's attempts.
    let still = app.get(&format!("/api/v1/clusters/{id}"), &acme.api_token).await.json();
    assert!(still["revoked_at"].is_null());
    // The same cluster name may exist in two organisations.
    app.cluster(g, "prod").await;
}

async fn count(conn: &mut PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(conn).await.unwrap()
}

async fn as_app_role(url: &str, org: Option<uuid::Uuid>) -> PgConnection {
    let mut conn = PgConnection::connect(url).await.unwrap();
    conn.execute("SET ROLE intentmap_app").await.unwrap();
    if let Some(org) = org {
        sqlx::query("SELECT set_config('app.org_id', $1, false)")
            .bind(org.to_string())
            .execute(&mut conn)
            .await
            .unwrap();
    }
    conn
}

#[tokio::test]
async fn row_level_security_hides_other_tenants_even_from_a_query_without_a_filter() {
    let app = test_app().await;
    let (acme, _, acme_jwt) = app.tenant("acme", "prod").await;
    let (globex, globex_cluster, _) = app.tenant("globex", "staging").await;
    let edges = vec![
        k8s_edge("shop", "frontend", "shop", "cart", 7070, 5),
        k8s_edge("shop", "checkout", "shop", "cart", 7070, 1),
    ];
    assert_eq!(
        app.post_report(&acme_jwt, &report(edges, vec![])).await.status,
        StatusCode::ACCEPTED
    );

    // The API's role is neither superuser nor owner and cannot bypass RLS.
    let mut owner = PgConnection::connect(&app.database_url).await.unwrap();
    let (sup, bypass): (bool, bool) = sqlx::query_as(
        "SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'intentmap_app'",
    )
    .fetch_one(&mut owner)
    .await
    .unwrap();
    assert!(!sup && !bypass);
    let owned: i64 =
        sqlx::query_scalar("SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = 'intentmap_app'").fetch_one(&mut owner).await.unwrap();
    assert_eq!(owned, 0);
    let total: i64 =
        sqlx::query_scalar("SELECT count(*) FROM edges").fetch_one(&mut owner).await.unwrap();
    assert_eq!(total, 2, "the rows exist");

    let mut none = as_app_role(&app.database_url, None).await;
    let mut as_globex = as_app_role(&app.database_url, Some(globex.org_id)).await;
    let mut as_acme = as_app_role(&app.database_url, Some(acme.org_id)).await;
    for table in ["edges", "reports", "clusters", "api_tokens", "organizations"] {
        assert_eq!(count(&mut none, table).await, 0, "{table} with no organisation set");
    }
    assert_eq!(count(&mut as_globex, "edges").await, 0, "globex sees none of acme's edges");
    assert_eq!(count(&mut as_globex, "clusters").await, 1, "globex sees only its own cluster");
    assert_eq!(count(&mut as_globex, "organizations").await, 1);
    assert_eq!(count(&mut as_acme, "edges").await, 2);

    // Writing a row for another organisation is refused, and so is moving one across.
    let insert = sqlx::query(
        "INSERT INTO edges (org_id, cluster_id, client_namespace, client_name, target_type, target_namespace, target_name, first_seen, last_seen)
         VALUES ($1, $2, 'x', 'x', 'kubernetes', 'x', 'x', now(), now())",
    )
    .bind(acme.org_id)
    .bind(globex_cluster.cluster_id)
    .execute(&mut as_globex)
    .await;
    let err = insert.expect_err("RLS must refuse a row for another organisation").to_string();
    assert!(err.contains("row-level security"), "{err}");
    let moved =
        sqlx::query("UPDATE edges SET org_id = $1").bind(globex.org_id).execute(&mut as_acme).await;
    assert!(moved.is_err(), "moving acme's edges to globex must be refused");
    let touched = sqlx::query("DELETE FROM edges").execute(&mut as_globex).await.unwrap();
    assert_eq!(touched.rows_affected(), 0);
    assert_eq!(count(&mut as_acme, "edges").await, 2);
}

/// `internet_edges_reaching` runs past row-level security (its index cannot be used under it):
/// it must answer for the caller's own organisation only, whatever organisation it is asked for.
#[tokio::test]
async fn the_internet_edge_lookup_answers_for_the_callers_organisation_only() {
    let app = test_app().await;
    let (acme, _, acme_jwt) = app.tenant("acme", "prod").await;
    let (globex, _, _) = app.tenant("globex", "staging").await;
    let edges = vec![internet_edge("shop", "checkout", "pay.example.com.", "198.51.100.10", 443)];
    let reply = app.post_report(&acme_jwt, &report(edges, vec![])).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED);
    let reaching = |org: uuid::Uuid| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM internet_edges_reaching($1, ARRAY['pay.example.com', '203.0.113.9'])",
        )
        .bind(org)
    };
    let mut as_acme = as_app_role(&app.database_url, Some(acme.org_id)).await;
    assert_eq!(reaching(acme.org_id).fetch_one(&mut as_acme).await.unwrap(), 1, "its own edge");
    let mut as_globex = as_app_role(&app.database_url, Some(globex.org_id)).await;
    assert_eq!(
        reaching(acme.org_id).fetch_one(&mut as_globex).await.unwrap(),
        0,
        "acme's, asked by globex"
    );
    let mut none = as_app_role(&app.database_url, None).await;
    assert_eq!(reaching(acme.org_id).fetch_one(&mut none).await.unwrap(), 0, "no organisation set");
}
