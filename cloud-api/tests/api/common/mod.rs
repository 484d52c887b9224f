//! One real PostgreSQL database per test, served as its own login role (as `serve` does); the
//! router driven in-process with `oneshot`.

use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use axum::Router;
use cloud_api::store::{roles, ClusterCredentials, NewOrg, Store};
use cloud_api::tokens::{JwtIssuer, SigningKey};
use cloud_api::{AppState, Config, Protections};
use serde_json::Value;
use tower::ServiceExt;

pub const ISSUER: &str = "https://cloud.test";
pub const AUDIENCE: &str = "intentmap-ingest";

pub struct TestApp {
    pub state: AppState,
    /// The schema owner's URL (a superuser here): for looking behind the API's back.
    pub database_url: String,
    /// The serving login role's URL, which `state` is connected as.
    pub app_url: String,
    pub signing_key_pem: String,
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("expected JSON ({e}), got {:?}", self.text()))
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or_default().to_owned()
    }
}

pub async fn test_app() -> TestApp {
    test_app_with(Config::default()).await
}

pub async fn test_app_with(config: Config) -> TestApp {
    test_app_protected(config, Protections::default()).await
}

/// A fresh database, migrated by its owner, and the app's state connected as a serving login
/// role of its own that `serve`'s check accepts.
pub async fn test_app_protected(config: Config, protections: Protections) -> TestApp {
    let server =
        testkit::pg::server().await.expect("PostgreSQL for tests (run scripts/ensure-postgres.sh)");
    let database_url = server.fresh_database("cloudapi").await.expect("a fresh test database");
    cloud_api::migrate(&database_url).await.expect("migrations apply");
    let app_url = roles::dedicated_login_url(&database_url).unwrap();
    cloud_api::provision_app_login(&database_url, &app_url)
        .await
        .expect("the serving login role is created");
    let key = SigningKey::generate();
    let signing_key_pem = key.to_pem();
    let jwt = JwtIssuer::new(ISSUER.into(), AUDIENCE.into(), Duration::from_secs(300), vec![key])
        .unwrap();
    let store = Store::connect(&app_url, 4)
        .await
        .expect("connect to the test database as the serving role");
    roles::check_serving_role(store.pool()).await.expect("the serving role passes serve's check");
    let state = cloud_api::state_from(store, jwt, config, protections);
    TestApp { state, database_url, app_url, signing_key_pem }
}

impl TestApp {
    /// Another replica: its own state (limits, caches) against the same database and role.
    pub async fn replica(&self) -> TestApp {
        let jwt = JwtIssuer::new(
            ISSUER.into(),
            AUDIENCE.into(),
            Duration::from_secs(300),
            vec![SigningKey::from_pem(&self.signing_key_pem).unwrap()],
        )
        .unwrap();
        let store = Store::connect(&self.app_url, 4).await.expect("connect as the serving role");
        let state =
            cloud_api::state_from(store, jwt, self.state.config.clone(), Protections::default());
        TestApp {
            state,
            database_url: self.database_url.clone(),
            app_url: self.app_url.clone(),
            signing_key_pem: self.signing_key_pem.clone(),
        }
    }

    /// What `/metrics` shows on the `--metrics-listen` address.
    pub async fn metrics(&self) -> String {
        let res = cloud_api::metrics_app(self.state.clone())
            .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        String::from_utf8(axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap().to_vec())
            .unwrap()
    }

    /// A connection as the schema owner.
    pub async fn owner(&self) -> sqlx::PgConnection {
        sqlx::Connection::connect(&self.database_url).await.expect("connect as the owner")
    }

    pub fn router(&self) -> Router {
        cloud_api::app(self.state.clone())
    }

    pub async fn request(&self, req: Request<Body>) -> Reply {
        let res = self.router().oneshot(req).await.expect("the router never fails");
        let status = res.status();
        let headers = res.headers().clone();
        let body = axum::body::to_bytes(res.into_body(), usize::MAX).await.unwrap();
        Reply { status, headers, body }
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        bearer: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(t) = bearer {
            req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => {
                req.header(header::CONTENT_TYPE, "application/json").body(Body::from(v.to_string()))
            }
            None => req.body(Body::empty()),
        };
        self.request(req.unwrap()).await
    }

    pub async fn get(&self, uri: &str, bearer: &str) -> Reply {
        self.call(Method::GET, uri, Some(bearer), None).await
    }

    pub async fn org(&self, name: &str) -> NewOrg {
        self.state.store.create_org(name).await.expect("create org")
    }

    pub async fn cluster(&self, api_token: &str, name: &str) -> ClusterCredentials {
        let reply = self
            .call(
                Method::POST,
                "/api/v1/clusters",
                Some(api_token),
                Some(serde_json::json!({"name": name})),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text());
        serde_json::from_value(reply.json()).expect("cluster credentials")
    }

    pub async fn token_request(&self, form: &str) -> Reply {
        let req = Request::post("/oauth/token")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap();
        self.request(req).await
    }

    pub async fn cluster_token(&self, creds: &ClusterCredentials) -> String {
        let reply = self
            .token_request(&format!(
                "grant_type=client_credentials&client_id={}&client_secret={}",
                creds.client_id, creds.client_secret
            ))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        reply.json()["access_token"].as_str().unwrap().to_owned()
    }

    pub async fn post_report(&self, jwt: &str, report: &Value) -> Reply {
        self.call(Method::POST, "/api/v1/reports", Some(jwt), Some(report.clone())).await
    }

    /// An org with one cluster and a token for it: `(org, cluster credentials, cluster JWT)`.
    pub async fn tenant(&self, org: &str, cluster: &str) -> (NewOrg, ClusterCredentials, String) {
        let org = self.org(org).await;
        let creds = self.cluster(&org.api_token, cluster).await;
        let jwt = self.cluster_token(&creds).await;
        (org, creds, jwt)
    }
}

/// A report in the documented wire format.
pub fn report(edges: Vec<Value>, exposed: Vec<Value>) -> Value {
    serde_json::json!({
        "schema_version": 1,
        "report_id": uuid::Uuid::new_v4(),
        "generated_at": chrono::Utc::now(),
        "edges": edges,
        "exposed": exposed,
    })
}

pub fn k8s_edge(
    ns: &str,
    client: &str,
    target_ns: &str,
    target: &str,
    port: u16,
    connections: u64,
) -> Value {
    serde_json::json!({
        "client": {"namespace": ns, "name": client, "kind": "Deployment"},
        "target": {"kubernetes": {"namespace": target_ns, "name": target, "kind": "Deployment"}},
        "ports": [{"port": port, "protocol": "TCP"}],
        "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:30:00Z",
        "connections": connections,
    })
}

pub fn internet_edge(ns: &str, client: &str, domain: &str, ip: &str, port: u16) -> Value {
    serde_json::json!({
        "client": {"namespace": ns, "name": client, "kind": "Deployment"},
        "target": {"internet": {"domains": [domain], "ips": [ip], "ports": [port]}},
        "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:30:00Z",
        "connections": 1,
    })
}

pub fn aws_edge(ns: &str, client: &str, arn: &str, action: &str) -> Value {
    serde_json::json!({
        "client": {"namespace": ns, "name": client, "kind": "CronJob"},
        "target": {"aws": {"arn": arn, "actions": [action]}},
        "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:30:00Z",
        "connections": 1,
    })
}
