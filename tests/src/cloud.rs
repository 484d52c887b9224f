//! Setting up the cloud as an operator and a cluster would: a database, an organisation with a
//! cluster (`cloud-api admin`), the cluster's access token (`/oauth/token`), and reports.

use std::io::Write;

use serde_json::Value;

use crate::admin;

/// A fresh database named after `prefix` on the tests' PostgreSQL.
pub async fn fresh_db(prefix: &str) -> String {
    let pg =
        testkit::pg::server().await.expect("PostgreSQL (scripts/ensure-postgres.sh installs it)");
    pg.fresh_database(prefix).await.unwrap_or_else(|e| panic!("a fresh database {prefix}: {e:#}"))
}

/// An organisation (`cloud-api admin create-org`) and one cluster of it (`create-cluster`), as
/// the admin commands printed them.
pub struct Org {
    /// `create-org`'s output: `org_id`, `api_token`.
    pub org: Value,
    pub org_id: String,
    /// The organisation's first API token (scope admin).
    pub api_token: String,
    /// `create-cluster`'s output: `client_id`, `client_secret`.
    pub creds: Value,
}

/// `cloud-api admin create-org <org>`, then `create-cluster --org <its id> <cluster>`.
pub fn org_with_cluster(database_url: &str, org: &str, cluster: &str) -> Org {
    let made = admin(database_url, &["create-org", org]);
    let text = |key: &str| {
        made[key]
            .as_str()
            .unwrap_or_else(|| panic!("create-org printed no {key}: {made}"))
            .to_owned()
    };
    let (org_id, api_token) = (text("org_id"), text("api_token"));
    let creds = admin(database_url, &["create-cluster", "--org", &org_id, cluster]);
    Org { org: made, org_id, api_token, creds }
}

impl Org {
    /// The cluster's client ID and secret, as `create-cluster` printed them.
    pub fn client(&self) -> (&str, &str) {
        let field = |key: &str| {
            self.creds[key]
                .as_str()
                .unwrap_or_else(|| panic!("create-cluster printed no {key}: {}", self.creds))
        };
        (field("client_id"), field("client_secret"))
    }

    /// `cluster-agent mapper`'s flags for uploading to the cloud at `cloud` as this cluster.
    pub fn upload_flags(&self, cloud: &str) -> Vec<String> {
        let (id, secret) = self.client();
        vec![
            "--cloud-url".into(),
            cloud.into(),
            "--cloud-client-id".into(),
            id.into(),
            format!("--cloud-client-secret={secret}"),
        ]
    }
}

/// `POST <base>/oauth/token` with a cluster's client credentials (`creds` as `create-cluster`
/// printed them): the answer, whatever it is.
pub async fn request_cluster_token(
    http: &reqwest::Client,
    base: &str,
    creds: &Value,
) -> reqwest::Response {
    let field = |key: &str| {
        creds[key].as_str().unwrap_or_else(|| panic!("no {key} in the credentials {creds}"))
    };
    http.post(format!("{base}/oauth/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", field("client_id")),
            ("client_secret", field("client_secret")),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {base}/oauth/token: {e}"))
}

/// The cluster's access token (a JWT) from `<base>/oauth/token`; panics with the answer when
/// there is none.
pub async fn cluster_jwt(http: &reqwest::Client, base: &str, creds: &Value) -> String {
    let answer = request_cluster_token(http, base, creds).await;
    let status = answer.status();
    let body: Value = answer.json().await.unwrap_or(Value::Null);
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access token ({status}): {body}"))
        .to_owned()
}

/// `POST <base>/api/v1/reports` of `report` as the cluster of `jwt`: the status and body.
pub async fn post_report(
    http: &reqwest::Client,
    base: &str,
    jwt: &str,
    report: &Value,
) -> (u16, String) {
    let answer = http
        .post(format!("{base}/api/v1/reports"))
        .bearer_auth(jwt)
        .json(report)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {base}/api/v1/reports: {e}"));
    (answer.status().as_u16(), answer.text().await.unwrap_or_default())
}

/// `POST <base>/api/v1/reports` of a gzip-compressed body as the cluster of `jwt`: the status
/// and body.
pub async fn post_gzip(
    http: &reqwest::Client,
    base: &str,
    jwt: &str,
    body: Vec<u8>,
) -> (u16, String) {
    let answer = http
        .post(format!("{base}/api/v1/reports"))
        .bearer_auth(jwt)
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {base}/api/v1/reports: {e}"));
    (answer.status().as_u16(), answer.text().await.unwrap_or_default())
}

/// `bytes` gzip-compressed at `level`.
pub fn gzip(bytes: &[u8], level: flate2::Compression) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), level);
    encoder.write_all(bytes).expect("gzip into memory");
    encoder.finish().expect("gzip into memory")
}

/// `GET <url>` with `token`: the body as text (whatever the status).
pub async fn get_text(http: &reqwest::Client, url: &str, token: &str) -> String {
    http.get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: reading the body: {e}"))
}

/// `GET <url>` with `token`: the body as JSON.
pub async fn get_json(http: &reqwest::Client, url: &str, token: &str) -> Value {
    let text = get_text(http, url, token).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {url} is not JSON ({e}): {text}"))
}
