//! Row-level security is more than one statement thick: the API serves as a login role of its
//! own, whose connections see no tenant row without the org setting, whatever they run
//! (`RESET ROLE` included); row-level security is FORCEd, so a schema owner that is not a
//! superuser is under it too; `serve` refuses any role that could get past it.

use axum::http::StatusCode;
use cloud_api::store::roles;
use sqlx::{Connection, Executor, PgConnection};

use crate::common::*;

const TENANT_TABLES: [&str; 7] = [
    "organizations",
    "api_tokens",
    "clusters",
    "reports",
    "edges",
    "exposed_workloads",
    "audit_log",
];

async fn count(conn: &mut PgConnection, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}")).fetch_one(conn).await.unwrap()
}

/// Two tenants with a cluster, a report and an exposed workload each.
async fn two_tenants(app: &TestApp) {
    for (org, cluster) in [("acme", "prod"), ("globex", "staging")] {
        let (_, _, jwt) = app.tenant(org, cluster).await;
        let exposed = vec![
            serde_json::json!({"namespace": "shop", "name": "frontend", "addresses": ["198.51.100.10"]}),
        ];
        let reply = app
            .post_report(
                &jwt,
                &report(vec![k8s_edge("shop", "frontend", "shop", "cart", 7070, 5)], exposed),
            )
            .await;
        assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    }
}

#[tokio::test]
async fn a_raw_query_on_the_serving_connection_sees_nothing_and_reset_role_gains_nothing() {
    let app = test_app().await;
    two_tenants(&app).await;
    let mut owner = app.owner().await;
    for table in TENANT_TABLES {
        assert!(count(&mut owner, table).await >= 2, "{table} has both tenants' rows");
    }

    // A connection of the pool the API serves from, as an injected statement would use it.
    let mut conn = app.state.store.pool().acquire().await.unwrap();
    let (current, session): (String, String) =
        sqlx::query_as("SELECT current_user::text, session_user::text")
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    assert_eq!(current, session, "no SET ROLE: the login role itself");
    assert!(current.starts_with("intentmap_api_"), "{current}");
    for table in TENANT_TABLES {
        assert_eq!(count(&mut conn, table).await, 0, "{table} without the org setting");
    }
    conn.execute("RESET ROLE").await.unwrap();
    for table in TENANT_TABLES {
        assert_eq!(count(&mut conn, table).await, 0, "{table} after RESET ROLE");
    }
    let hashes: Vec<String> = sqlx::query_scalar(
        "SELECT secret_hash FROM api_tokens UNION ALL SELECT secret_hash FROM clusters",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert!(hashes.is_empty(), "no token hashes: {hashes:?}");
    for escape in [
        "SET ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "SET ROLE intentmap_auth",
        "ALTER TABLE edges DISABLE ROW LEVEL SECURITY",
    ] {
        let err = conn.execute(escape).await.expect_err(escape).to_string();
        assert!(
            err.contains("permission denied") || err.contains("must be owner"),
            "{escape}: {err}"
        );
    }
    let forged = sqlx::query(
        "SELECT set_config('app.org_id', '00000000-0000-0000-0000-000000000000', false)",
    )
    .execute(&mut *conn)
    .await;
    assert!(forged.is_ok());
    assert_eq!(count(&mut conn, "edges").await, 0, "a made-up organisation has nothing");
    conn.execute("RESET app.org_id").await.unwrap();

    // FORCE on every tenant table (and RLS on every table but the key and sqlx's own).
    let unforced: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
         WHERE n.nspname = 'public' AND c.relkind = 'r' AND NOT (c.relrowsecurity AND c.relforcerowsecurity)
         ORDER BY 1",
    )
    .fetch_all(&mut owner)
    .await
    .unwrap();
    assert_eq!(unforced, vec!["_sqlx_migrations", "token_hash_key"]);
}

#[tokio::test]
async fn serve_refuses_a_role_that_could_get_past_row_level_security() {
    let app = test_app().await;
    let owner_pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
    let err = roles::check_serving_role(&owner_pool)
        .await
        .expect_err("a superuser is refused")
        .to_string();
    assert!(err.contains("is a superuser") && err.contains("cloud-api migrate"), "{err}");

    // A login role that may SET ROLE to a superuser.
    let sneaky = roles::login_url(
        &app.database_url,
        &format!("sneaky_{}", uuid::Uuid::new_v4().simple()),
        "pw",
    )
    .unwrap();
    let role = cloud_api::provision_app_login(&app.database_url, &sneaky).await.unwrap();
    let mut owner = app.owner().await;
    owner.execute(format!("GRANT postgres TO {role}").as_str()).await.unwrap();
    let pool = sqlx::PgPool::connect(&sneaky).await.unwrap();
    let err = roles::check_serving_role(&pool)
        .await
        .expect_err("membership in a superuser is refused")
        .to_string();
    assert!(
        err.contains("\"postgres\", which the serving role") && err.contains("is a superuser"),
        "{err}"
    );

    // The schema owner as the serving URL is refused before anything is created.
    let err = cloud_api::provision_app_login(&app.database_url, &app.database_url)
        .await
        .expect_err("owner as server")
        .to_string();
    assert!(
        format!("{err:#}").contains("schema owner") || err.contains("serving login role"),
        "{err:#}"
    );
    assert!(
        !roles::may_migrate(&app.app_url).await.unwrap(),
        "admin with the serving URL does not try to migrate"
    );
    assert!(roles::may_migrate(&app.database_url).await.unwrap());
}

/// The production case: the schema owner is an ordinary role with CREATEROLE, not a superuser.
/// FORCE puts it under row-level security too, and authentication still works through the
/// functions owned by intentmap_auth.
#[tokio::test]
async fn a_schema_owner_that_is_not_a_superuser_is_under_row_level_security_too() {
    let server = testkit::pg::server().await.unwrap();
    let id = uuid::Uuid::new_v4().simple().to_string();
    let (owner_role, database) = (format!("owner_{id}"), format!("owned_{id}"));
    let mut admin = PgConnection::connect(server.admin_url()).await.unwrap();
    admin
        .execute(format!("CREATE ROLE {owner_role} LOGIN CREATEROLE PASSWORD 'owner-pw'").as_str())
        .await
        .unwrap();
    admin.execute(format!("CREATE DATABASE {database} OWNER {owner_role}").as_str()).await.unwrap();
    let superuser_url = server.url_for(&database);
    let owner_url = roles::login_url(&superuser_url, &owner_role, "owner-pw").unwrap();

    cloud_api::migrate(&owner_url).await.expect("a CREATEROLE owner can migrate");
    let app_url = roles::dedicated_login_url(&owner_url).unwrap();
    cloud_api::provision_app_login(&owner_url, &app_url)
        .await
        .expect("and create the serving role");
    let store = cloud_api::store::Store::connect(&app_url, 2).await.unwrap();
    roles::check_serving_role(store.pool()).await.expect("the serving role is safe");
    let key = cloud_api::tokens::SigningKey::generate();
    let jwt = cloud_api::tokens::JwtIssuer::new(
        ISSUER.into(),
        AUDIENCE.into(),
        std::time::Duration::from_secs(300),
        vec![key],
    )
    .unwrap();
    let state = cloud_api::state_from(store, jwt, Default::default(), Default::default());
    let app =
        TestApp { state, database_url: owner_url.clone(), app_url, signing_key_pem: String::new() };
    two_tenants(&app).await;

    let mut superuser = PgConnection::connect(&superuser_url).await.unwrap();
    let mut owner = PgConnection::connect(&owner_url).await.unwrap();
    for table in TENANT_TABLES {
        assert!(count(&mut superuser, table).await >= 2, "{table} has rows");
        assert_eq!(
            count(&mut owner, table).await,
            0,
            "{table}: the owner without the org setting sees nothing"
        );
    }
    let org: uuid::Uuid = sqlx::query_scalar("SELECT id FROM organizations WHERE name = 'acme'")
        .fetch_one(&mut superuser)
        .await
        .unwrap();
    sqlx::query("SELECT set_config('app.org_id', $1, false)")
        .bind(org.to_string())
        .execute(&mut owner)
        .await
        .unwrap();
    assert_eq!(count(&mut owner, "edges").await, 1, "and with it, that organisation's rows only");
    let functions: Vec<String> =
        sqlx::query_scalar("SELECT pg_get_userbyid(proowner)::text FROM pg_proc WHERE proname IN ('auth_cluster_client', 'auth_api_token')")
            .fetch_all(&mut superuser)
            .await
            .unwrap();
    assert_eq!(functions, vec!["intentmap_auth", "intentmap_auth"]);
    let can_create: bool =
        sqlx::query_scalar("SELECT has_schema_privilege('intentmap_auth', 'public', 'CREATE')")
            .fetch_one(&mut superuser)
            .await
            .unwrap();
    assert!(!can_create, "intentmap_auth had CREATE only while the functions changed hands");
}
