//! The API's OpenAPI 3.1 document, generated from the handlers' `#[utoipa::path]` attributes and
//! the types they return. Served at `GET /api/v1/openapi.json`; the copy committed at
//! `cloud-api/openapi.json` must equal [`json`] (a test compares them: after changing the API,
//! `cargo run -p cloud-api -- openapi > cloud-api/openapi.json`).
//!
//! Types of the shared `model` crate (the access graph, the report) are described here by
//! schema-only mirrors of their JSON; the schemathesis test (`tests/tests/openapi.rs`) checks the
//! live server's answers against them.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::http;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "intentmap cloud API",
        description = "The multi-tenant cloud of intentmap: clusters upload edge reports, people read the merged access graph and ClientIntents. People and scripts send an org API token (`Authorization: Bearer imt_...`); clusters send a JWT from `POST /oauth/token`. Errors are JSON `{\"error\": \"...\", \"status\": N}` saying what to do.",
        license(name = "Apache-2.0")
    ),
    paths(
        http::oauth::token,
        http::oauth::jwks,
        http::ingest::ingest,
        http::clusters::create,
        http::clusters::list,
        http::clusters::show,
        http::clusters::delete,
        http::clusters::revoke,
        http::graph::client_intents,
        http::graph::access_graph,
        http::graph::access_graph_summary,
        http::api_tokens::whoami,
        http::api_tokens::list,
        http::api_tokens::create,
        http::api_tokens::show,
        http::api_tokens::revoke,
        http::audit::list,
        http::audit::retention,
        http::audit::set_retention,
        healthz,
        http::readyz,
        openapi_json,
    ),
    components(schemas(GraphFormat, IntentsFormat, IntentsApiVersion, ErrorBody)),
    modifiers(&Security),
    tags(
        (name = "clusters", description = "Registering clusters and their credentials"),
        (name = "graph", description = "The merged access graph and ClientIntents"),
        (name = "tokens", description = "The organisation's API tokens"),
        (name = "audit", description = "The audit log and retention"),
        (name = "ingest", description = "What cluster agents call"),
        (name = "meta", description = "Health and this document"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "api_token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An organisation API token (imt_...), with the scope the operation names",
                    ))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "cluster_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A cluster's access token from POST /oauth/token"))
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON with a final newline: what is served and committed.
pub fn json() -> String {
    match ApiDoc::openapi().to_pretty_json() {
        Ok(mut s) => {
            s.push('\n');
            s
        }
        // Serialising plain structs of strings and maps does not fail; say so if it ever does.
        Err(e) => format!("{{\"error\": \"the OpenAPI document did not serialise: {e}\"}}\n"),
    }
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "meta", operation_id = "healthz",
    responses((status = 200, description = "The process runs", body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// This document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", operation_id = "openapi",
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
pub async fn openapi_json() -> impl axum::response::IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], json())
}

// === query parameters with a fixed set of values ===

/// The access graph's `format`.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum GraphFormat {
    Json,
    Dot,
}

/// ClientIntents' `format`.
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntentsFormat {
    Yaml,
    Json,
}

/// ClientIntents' `version` (of `k8s.otterize.com`).
#[derive(ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum IntentsApiVersion {
    V2beta1,
    V1alpha3,
}

// === refusals several operations share, each written once ===
//
// A handler lists its own success rows and then these types, e.g.
// `responses((status = 200, ...), BadRequest, NotFound, TokenRefusals)`. The document orders a
// path's responses by status, so where they are listed does not change it. `IntoResponses` types
// register no schemas: `ErrorBody` is named in `components` above for them.

/// What any call with an org API token can be refused with.
#[derive(utoipa::IntoResponses)]
pub enum TokenRefusals {
    #[response(status = 401, description = "No token, or an invalid or revoked one")]
    Unauthorized(ErrorBody),
    #[response(status = 403, description = "The token lacks the scope this needs")]
    Forbidden(ErrorBody),
    #[response(
        status = 429,
        description = "Too many failed credential checks from this address; retry after Retry-After"
    )]
    TooManyFailures(ErrorBody),
    #[response(status = 503, description = "Too busy or the database is unreachable; retry later")]
    Unavailable(ErrorBody),
}

/// 400 of an operation with a body, path or query to validate.
#[derive(utoipa::IntoResponses)]
#[response(status = 400, description = "A malformed request; the error says what to fix")]
pub struct BadRequest(pub ErrorBody);

/// 404 of an operation that names an object of the organisation.
#[derive(utoipa::IntoResponses)]
#[response(status = 404, description = "No such object in this organisation")]
pub struct NotFound(pub ErrorBody);

/// 422 of an operation whose well-formed input can still be refused.
#[derive(utoipa::IntoResponses)]
#[response(
    status = 422,
    description = "A well-formed request the server cannot do; the error says why"
)]
pub struct Unprocessable(pub ErrorBody);

// === bodies ===

/// Every error: what went wrong and what to do.
#[derive(ToSchema)]
pub struct ErrorBody {
    /// What went wrong and what to do next.
    pub error: String,
    /// The HTTP status again.
    pub status: u16,
}

/// `POST /oauth/token` errors, per RFC 6749.
#[derive(ToSchema)]
pub struct OAuthError {
    /// `invalid_request`, `invalid_client`, `unsupported_grant_type`, `slow_down`, `temporarily_unavailable`, ...
    pub error: String,
    pub error_description: Option<String>,
}

/// A client-credentials grant (also accepted as a form, or with HTTP Basic for the client).
#[derive(ToSchema)]
pub struct TokenRequest {
    /// `client_credentials`
    pub grant_type: String,
    pub client_id: Option<String>,
    pub client_secret: Option<String>,
}

#[derive(ToSchema)]
pub struct AccessToken {
    /// An EdDSA JWT for `POST /api/v1/reports`.
    pub access_token: String,
    /// `Bearer`
    pub token_type: String,
    /// Seconds until it expires.
    pub expires_in: i64,
}

/// The public signing keys (JWK set).
#[derive(ToSchema)]
pub struct Jwks {
    #[schema(value_type = Vec<Object>)]
    pub keys: Vec<()>,
}

/// An `EdgeReport` (schema_version 1); the README's "The EdgeReport format" has every field and
/// limit.
#[derive(ToSchema)]
pub struct EdgeReportBody {
    /// 1
    pub schema_version: u32,
    /// The idempotency key.
    pub report_id: uuid::Uuid,
    pub generated_at: chrono::DateTime<chrono::Utc>,
    #[schema(value_type = Vec<Object>)]
    pub edges: Vec<()>,
    #[schema(value_type = Option<Vec<Object>>)]
    pub exposed: Option<Vec<()>>,
}

#[derive(ToSchema)]
pub struct IngestResult {
    pub report_id: uuid::Uuid,
    /// The report id was seen before: nothing changed.
    pub duplicate: bool,
    pub edges_merged: u64,
}

#[derive(ToSchema)]
pub struct NewClusterBody {
    /// A DNS label: lower-case letters, digits and '-', at most 63 characters.
    pub name: String,
}

#[derive(ToSchema)]
pub struct NewTokenBody {
    /// 1-200 characters, no control characters.
    pub name: String,
    /// Of `read`, `write`, `admin`; each includes the ones before it.
    pub scopes: Vec<String>,
}

#[derive(ToSchema)]
pub struct WhoAmI {
    pub org_id: uuid::Uuid,
    pub org_name: String,
    pub token: crate::store::ApiTokenInfo,
}

// === the access graph (mirrors `model::graph`) ===

/// The organisation's merged access graph.
#[derive(ToSchema)]
pub struct AccessGraphBody {
    pub clusters: Vec<ClusterSummaryBody>,
    pub nodes: Vec<GraphNodeBody>,
    pub edges: Vec<GraphEdgeBody>,
    /// With `changed_since`: the moment and how many edges are new, seen and gone.
    pub changes: Option<ChangesSummary>,
    /// In a paged read (`limit=`), when more edges follow: the `after=` of the next page.
    pub next: Option<String>,
}

#[derive(ToSchema)]
pub struct ClusterSummaryBody {
    pub name: String,
    /// Edges observed in this cluster.
    pub edges: u64,
}

#[derive(ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum NodeKindBody {
    Workload,
    Service,
    Internet,
    Aws,
}

#[derive(ToSchema)]
pub struct GraphNodeBody {
    pub id: String,
    pub kind: NodeKindBody,
    pub cluster: Option<String>,
    pub namespace: Option<String>,
    pub name: String,
    /// `Deployment`, `StatefulSet`, ...
    pub workload_kind: Option<String>,
}

#[derive(ToSchema)]
pub struct PortBody {
    pub port: u16,
    /// `TCP`, `UDP` or `SCTP`
    pub protocol: String,
}

#[derive(ToSchema)]
pub struct HttpBody {
    pub path: String,
    pub methods: Option<Vec<String>>,
}

#[derive(ToSchema)]
pub struct KafkaBody {
    pub name: String,
    pub operations: Option<Vec<String>>,
    pub denied: Option<Vec<String>>,
}

#[derive(ToSchema)]
pub struct GraphEdgeBody {
    /// The calling node's id.
    pub source: String,
    /// The called node's id.
    pub target: String,
    /// The cluster whose agent observed the call.
    pub observed_in: String,
    pub ports: Option<Vec<PortBody>>,
    pub first_seen: chrono::DateTime<chrono::Utc>,
    pub last_seen: chrono::DateTime<chrono::Utc>,
    pub connections: u64,
    /// IAM actions, for AWS targets.
    pub actions: Option<Vec<String>>,
    /// Addresses or hostnames that resolved the target across clusters.
    pub via: Option<Vec<String>>,
    /// Incoming internet traffic (from the node `incoming/internet` to a workload): the
    /// addresses outside the cluster that called it.
    pub client_ips: Option<Vec<String>>,
    pub http: Option<Vec<HttpBody>>,
    pub kafka: Option<Vec<KafkaBody>>,
    /// Measured traffic volume, from the client's side; absent when not measured.
    pub bytes: Option<TrafficBody>,
    /// With `changed_since`: `new` (first seen after it), `gone` (not seen since) or `seen`.
    pub change: Option<http::changes::GraphChange>,
}

/// Bytes of a call, from the client's side, summed over reports (saturating at 2^63-1).
#[derive(ToSchema)]
pub struct TrafficBody {
    /// From the client to the target.
    pub sent: u64,
    /// From the target back to the client.
    pub received: u64,
}

#[derive(ToSchema)]
pub struct ChangesSummary {
    pub since: chrono::DateTime<chrono::Utc>,
    pub new: u64,
    pub seen: u64,
    pub gone: u64,
}

// === ClientIntents ===

/// `format=json`: the ClientIntents documents; with `diff_since`, an object with the documents
/// and every target's change.
#[derive(ToSchema)]
#[serde(untagged)]
pub enum IntentsJson {
    #[schema(value_type = Vec<Object>)]
    Documents(Vec<()>),
    Diff(IntentsDiff),
}

#[derive(ToSchema)]
pub struct IntentsDiff {
    pub diff_since: chrono::DateTime<chrono::Utc>,
    /// What `format=json` returns without `diff_since`.
    #[schema(value_type = Vec<Object>)]
    pub documents: Vec<()>,
    pub changes: Vec<TargetChangeBody>,
}

#[derive(ToSchema)]
pub struct ClientRef {
    pub namespace: String,
    pub name: String,
}

#[derive(ToSchema)]
pub struct TargetChangeBody {
    pub client: ClientRef,
    /// The target as its document writes it.
    #[schema(value_type = Object)]
    pub target: (),
    pub change: http::changes::TargetChange,
    pub first_seen: chrono::DateTime<chrono::Utc>,
    pub last_seen: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committed_document_is_the_generated_one() {
        let committed = include_str!("../openapi.json");
        assert!(
            committed == json(),
            "cloud-api/openapi.json is stale: run `cargo run -p cloud-api -- openapi > cloud-api/openapi.json` and commit it"
        );
    }

    #[test]
    fn every_reference_resolves() {
        let text = json();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        let schemas = doc["components"]["schemas"].as_object().unwrap();
        for part in text.split("\"#/components/schemas/").skip(1) {
            let name = &part[..part.find('"').unwrap()];
            assert!(schemas.contains_key(name), "{name} is referenced but not defined");
        }
    }

    #[test]
    fn every_route_is_documented() {
        let doc: serde_json::Value = serde_json::from_str(&json()).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for path in [
            "/oauth/token",
            "/.well-known/jwks.json",
            "/api/v1/reports",
            "/api/v1/clusters",
            "/api/v1/clusters/{cluster}",
            "/api/v1/clusters/{cluster}/revoke",
            "/api/v1/clusters/{cluster}/client-intents",
            "/api/v1/access-graph",
            "/api/v1/access-graph/summary",
            "/api/v1/whoami",
            "/api/v1/tokens",
            "/api/v1/tokens/{token}",
            "/api/v1/tokens/{token}/revoke",
            "/healthz",
            "/readyz",
            "/api/v1/openapi.json",
            "/api/v1/audit",
            "/api/v1/retention",
        ] {
            assert!(paths.contains_key(path), "{path} is in the document");
        }
        assert_eq!(paths.len(), 18, "{:?}", paths.keys().collect::<Vec<_>>());
    }
}
