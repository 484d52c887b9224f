//! Talking to the cloud as one cluster: the cloud URL check, the OAuth2 client-credentials
//! token (cached until shortly before it expires), and one gzip-encoded report per request,
//! its answer classified as a [`SendOutcome`].

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use model::EdgeReport;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, info, warn};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("reading the CA certificate {}: {reason}", path.display())]
    CaCertificate { path: PathBuf, reason: String },
    #[error("building the HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
    #[error("requesting a cluster access token from {url}: {source}")]
    TokenRequest {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("the cloud refused the cluster's credentials ({status} {error}: {description}); check the client ID and secret")]
    TokenRefused { status: u16, error: String, description: String },
    #[error("unexpected answer from the token endpoint: {0}")]
    TokenResponse(String),
    #[error("encoding report {report_id}: {reason}")]
    Encode { report_id: Uuid, reason: String },
    #[error("the cloud URL {url:?} is not usable: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("the cloud URL {url:?} is plain http: the cluster's client secret and its edges would cross the network unencrypted; use https://, or pass --allow-insecure-cloud-url (ALLOW_INSECURE_CLOUD_URL=true) if the network path is otherwise protected")]
    InsecureUrl { url: String },
}

/// Where the cloud is and how to authenticate to it.
#[derive(Clone)]
pub struct CloudConfig {
    /// For example `https://cloud.example.com` (no trailing path needed).
    pub base_url: String,
    pub client_id: String,
    pub client_secret: String,
    /// A PEM file with extra CA certificates to trust (for a private CA), added to the built-in roots.
    pub ca_certificate: Option<PathBuf>,
    /// Limit for a whole request.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Allow an `http://` URL to another machine (the secret then crosses the network in clear).
    /// `http://` to the loopback interface (`127.0.0.0/8`, `::1`, `localhost`) is always allowed.
    pub allow_insecure_http: bool,
}

impl CloudConfig {
    pub fn new(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
    ) -> Self {
        Self {
            base_url: base_url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            ca_certificate: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            allow_insecure_http: false,
        }
    }
}

impl std::fmt::Debug for CloudConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudConfig")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("client_secret", &"<redacted>")
            .field("ca_certificate", &self.ca_certificate)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

/// What the cloud made of a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendOutcome {
    /// 202: applied now.
    Accepted,
    /// 200 `duplicate: true`: applied earlier (an acknowledgement was lost). Also acknowledged.
    AlreadyApplied,
    /// A 4xx other than 401/404/405/408/429 (400, 413, 415, 422...): this report will never be
    /// accepted. The reason is the status and the cloud's message.
    Rejected(String),
    /// The cloud failed on this report (500, or another 5xx than 502/503/504, which are about
    /// reaching it): retry, but a report that keeps failing the same way while the reports
    /// behind it go through is set aside (see [`super::Uploader::drain`]).
    ServerError { reason: String, retry_after: Option<Duration> },
    /// The cloud is unreachable, overloaded or failing (5xx, 408, 429, network errors), the
    /// endpoint is missing (404, 405: a wrong URL), or the cluster could not authenticate (401
    /// even with a fresh token, or no token): keep the report and try again later.
    Retry { reason: String, retry_after: Option<Duration> },
}

impl SendOutcome {
    /// Whether the cloud has the report (so it can leave the outbox).
    pub fn is_acknowledged(&self) -> bool {
        matches!(self, SendOutcome::Accepted | SendOutcome::AlreadyApplied)
    }
}

struct CachedToken {
    value: String,
    refresh_at: Instant,
}

/// Talks to the cloud as one cluster.
pub struct CloudClient {
    base_url: String,
    client_id: String,
    client_secret: String,
    http: reqwest::Client,
    token: tokio::sync::Mutex<Option<CachedToken>>,
}

impl std::fmt::Debug for CloudClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudClient")
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// An HTTP client using rustls, trusting the built-in roots plus the certificates in `ca_certificate`.
pub fn http_client(
    ca_certificate: Option<&Path>,
    timeout: Duration,
    connect_timeout: Duration,
) -> Result<reqwest::Client, UploadError> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(connect_timeout)
        // A redirected POST would lose its body; a redirect is a configuration error to report.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("intentmap-cluster-agent/", env!("CARGO_PKG_VERSION")));
    if let Some(path) = ca_certificate {
        let bad = |reason: String| UploadError::CaCertificate { path: path.to_owned(), reason };
        let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
        if certs.is_empty() {
            return Err(bad("no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into()));
        }
        info!(path = %path.display(), certificates = certs.len(), "trusting extra CA certificates");
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    builder.build().map_err(UploadError::HttpClient)
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    token_type: Option<String>,
    expires_in: Option<u64>,
}

#[derive(Deserialize, Default)]
struct OAuthError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

#[derive(Deserialize, Default)]
struct IngestReply {
    #[serde(default)]
    duplicate: bool,
}

#[derive(Deserialize, Default)]
struct ApiErrorBody {
    #[serde(default)]
    error: String,
}

/// How long before its expiry a token is replaced: a tenth of its lifetime, at most 30 s.
fn refresh_margin(lifetime: Duration) -> Duration {
    (lifetime / 10).min(Duration::from_secs(30))
}

fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers.get(RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4),
        flate2::Compression::default(),
    );
    encoder.write_all(bytes)?;
    encoder.finish()
}

/// Whether the client secret may be sent to `url`: `https://`; `http://` to this machine's
/// loopback interface (it never leaves the machine); `http://` anywhere only when allowed.
pub fn check_cloud_url(url: &str, allow_insecure_http: bool) -> Result<(), UploadError> {
    let bad = |reason: String| UploadError::BadUrl { url: url.to_owned(), reason };
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| bad(format!("{e}; for example https://cloud.example.com")))?;
    let host = parsed.host_str().unwrap_or_default();
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback || allow_insecure_http => Ok(()),
        "http" => Err(UploadError::InsecureUrl { url: url.to_owned() }),
        other => Err(bad(format!("the scheme {other:?} is neither https nor http"))),
    }
}

impl CloudClient {
    pub fn new(config: CloudConfig) -> Result<Self, UploadError> {
        check_cloud_url(&config.base_url, config.allow_insecure_http)?;
        if config.base_url.starts_with("http:") && config.allow_insecure_http {
            warn!(url = %config.base_url, "uploading over plain http (--allow-insecure-cloud-url): the client secret crosses the network unencrypted");
        }
        let http =
            http_client(config.ca_certificate.as_deref(), config.timeout, config.connect_timeout)?;
        Ok(Self::with_http(config.base_url, config.client_id, config.client_secret, http))
    }

    /// With an HTTP client of the caller's making.
    pub fn with_http(
        base_url: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: impl Into<String>,
        http: reqwest::Client,
    ) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Self {
            base_url,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            http,
            token: Default::default(),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// A valid access token: the cached one, or a new one from `POST /oauth/token` when there
    /// is none or it is about to expire.
    pub async fn token(&self) -> Result<String, UploadError> {
        let mut cached = self.token.lock().await;
        if let Some(t) = cached.as_ref().filter(|t| Instant::now() < t.refresh_at) {
            return Ok(t.value.clone());
        }
        let fresh = self.fetch_token().await?;
        let value = fresh.value.clone();
        *cached = Some(fresh);
        Ok(value)
    }

    /// Forgets the cached token if it is still `token` (another task may have replaced it).
    pub async fn invalidate_token(&self, token: &str) {
        let mut cached = self.token.lock().await;
        if cached.as_ref().is_some_and(|t| t.value == token) {
            *cached = None;
        }
    }

    async fn fetch_token(&self) -> Result<CachedToken, UploadError> {
        let url = format!("{}/oauth/token", self.base_url);
        let started = Instant::now();
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", self.client_id.as_str()),
            ("client_secret", self.client_secret.as_str()),
        ];
        let response = self
            .http
            .post(&url)
            .form(&form)
            .send()
            .await
            .map_err(|source| UploadError::TokenRequest { url: url.clone(), source })?;
        let status = response.status();
        if !status.is_success() {
            let body: OAuthError = response.json().await.unwrap_or_default();
            return Err(UploadError::TokenRefused {
                status: status.as_u16(),
                error: body.error,
                description: body.error_description,
            });
        }
        let body: TokenResponse =
            response.json().await.map_err(|e| UploadError::TokenResponse(e.to_string()))?;
        if let Some(kind) = body.token_type.as_deref().filter(|t| !t.eq_ignore_ascii_case("bearer"))
        {
            return Err(UploadError::TokenResponse(format!("token_type {kind:?} is not Bearer")));
        }
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60));
        debug!(expires_in = lifetime.as_secs(), "obtained a cluster access token");
        Ok(CachedToken {
            value: body.access_token,
            refresh_at: started + lifetime - refresh_margin(lifetime),
        })
    }

    /// Posts one report (gzip-encoded JSON) to `/api/v1/reports`. On 401 the token is replaced
    /// and the report sent once more. Errors are only local ones (the report cannot be encoded).
    pub async fn send(&self, report: &EdgeReport) -> Result<SendOutcome, UploadError> {
        let encode = |reason: String| UploadError::Encode { report_id: report.report_id, reason };
        let json = serde_json::to_vec(report).map_err(|e| encode(e.to_string()))?;
        let body = gzip(&json).map_err(|e| encode(e.to_string()))?;
        let url = format!("{}/api/v1/reports", self.base_url);
        let mut refreshed = false;
        loop {
            let token = match self.token().await {
                Ok(t) => t,
                Err(e) => {
                    return Ok(SendOutcome::Retry { reason: e.to_string(), retry_after: None })
                }
            };
            let sent = self
                .http
                .post(&url)
                .bearer_auth(&token)
                .header(CONTENT_TYPE, "application/json")
                .header(CONTENT_ENCODING, "gzip")
                .body(body.clone())
                .send()
                .await;
            let response = match sent {
                Ok(r) => r,
                Err(e) => {
                    return Ok(SendOutcome::Retry {
                        reason: format!("could not reach {url}: {:#}", anyhow::Error::new(e)),
                        retry_after: None,
                    })
                }
            };
            let status = response.status();
            if status == StatusCode::UNAUTHORIZED && !refreshed {
                debug!(report_id = %report.report_id, "the cloud refused the access token; fetching a new one");
                self.invalidate_token(&token).await;
                refreshed = true;
                continue;
            }
            return Ok(classify(status, response).await);
        }
    }
}

async fn classify(status: StatusCode, response: reqwest::Response) -> SendOutcome {
    let after = retry_after(response.headers());
    let message = |body: &[u8]| {
        let parsed: ApiErrorBody = serde_json::from_slice(body).unwrap_or_default();
        let text = if parsed.error.is_empty() {
            String::from_utf8_lossy(body).into_owned()
        } else {
            parsed.error
        };
        let text: String = text.chars().take(500).collect();
        format!("{status}: {text}")
    };
    if status == StatusCode::ACCEPTED {
        return SendOutcome::Accepted;
    }
    let body = response.bytes().await.unwrap_or_default();
    match status.as_u16() {
        200 => match serde_json::from_slice::<IngestReply>(&body) {
            Ok(IngestReply { duplicate: true }) => SendOutcome::AlreadyApplied,
            _ => SendOutcome::Accepted,
        },
        201..=299 => SendOutcome::Accepted,
        401 => SendOutcome::Retry {
            reason: format!(
                "the cloud refused a fresh access token ({}); is the cluster revoked?",
                message(&body)
            ),
            retry_after: after,
        },
        408 | 429 => SendOutcome::Retry { reason: message(&body), retry_after: after },
        // Not about this report: the URL is wrong or the cloud is mid-deployment. Setting every
        // report aside would empty the outbox because of a configuration error.
        404 | 405 => SendOutcome::Retry {
            reason: format!("{}; check the cloud URL", message(&body)),
            retry_after: after,
        },
        400..=499 => SendOutcome::Rejected(message(&body)),
        // A proxy or load balancer that cannot reach the cloud, or the cloud overloaded.
        502..=504 => SendOutcome::Retry { reason: message(&body), retry_after: after },
        500..=599 => SendOutcome::ServerError { reason: message(&body), retry_after: after },
        _ => SendOutcome::Retry { reason: message(&body), retry_after: after },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_replaced_shortly_before_they_expire() {
        assert_eq!(refresh_margin(Duration::from_secs(300)), Duration::from_secs(30));
        assert_eq!(refresh_margin(Duration::from_secs(3600)), Duration::from_secs(30));
        assert_eq!(refresh_margin(Duration::from_secs(1)), Duration::from_millis(100));
    }

    /// A self-signed test CA made for these tests (`openssl req -x509 -newkey ec ...`).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----
MIIBjjCCATWgAwIBAgIUXCcoKgKnDRclGVpQIJtBDbgoV/MwCgYIKoZIzj0EAwIw
HDEaMBgGA1UEAwwRaW50ZW50bWFwIHRlc3QgQ0EwIBcNMjYxMTI0MTkwOTQ4WhgP
MjEyNjEwMzExOTA5NDhaMBwxGjAYBgNVBAMMEWludGVudG1hcCB0ZXN0IENBMFkw
EwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE53v0M/aiJKVSF6HG+4zu/Td3XiIQlmt0
ptPo28aF8T8epZ+f66fpihTBEBK07BQ/8xnk9DiwD9jaVly/Q06oaaNTMFEwHQYD
VR0OBBYEFBpIKiOEj62+0BPuzHkcYEIHabCDMB8GA1UdIwQYMBaAFBpIKiOEj62+
0BPuzHkcYEIHabCDMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIg
AfqiCGdhcYiY1Ok7AXYaO8d7JPICHyQmv6TJBu1cue4CIHjnQaeREutq9FVIJ/7w
/GiAuhic1+aRok5527R8CHuE
-----END CERTIFICATE-----
";

    #[test]
    fn extra_ca_certificates_are_added_to_the_roots() {
        let path = std::env::temp_dir().join(format!("test-ca-{}.pem", Uuid::new_v4()));
        std::fs::write(&path, format!("{TEST_CA}{TEST_CA}")).unwrap();
        let built = http_client(Some(&path), Duration::from_secs(1), Duration::from_secs(1));
        let _ = std::fs::remove_file(&path);
        built.unwrap();
    }

    #[test]
    fn a_missing_or_empty_ca_file_is_reported() {
        let missing = std::env::temp_dir().join(format!("no-such-ca-{}.pem", Uuid::new_v4()));
        let err = http_client(Some(&missing), Duration::from_secs(1), Duration::from_secs(1))
            .unwrap_err();
        assert!(matches!(err, UploadError::CaCertificate { .. }), "{err}");
        let empty = std::env::temp_dir().join(format!("empty-ca-{}.pem", Uuid::new_v4()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = http_client(Some(&empty), Duration::from_secs(1), Duration::from_secs(1))
            .unwrap_err()
            .to_string();
        let _ = std::fs::remove_file(&empty);
        assert!(err.contains("no PEM certificate"), "{err}");
    }

    #[test]
    fn the_secret_goes_over_https_or_to_this_machine_only() {
        for ok in [
            "https://cloud.example.com",
            "https://10.0.0.1:8443/",
            "http://127.0.0.1:8080",
            "http://127.0.0.2",
            "http://[::1]:80",
            "http://localhost:8080",
        ] {
            check_cloud_url(ok, false).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for insecure in [
            "http://cloud.example.com",
            "http://10.0.0.1:8080",
            "http://localhost.example.com",
            "http://[2001:db8::1]/",
        ] {
            let err = check_cloud_url(insecure, false).unwrap_err();
            assert!(matches!(err, UploadError::InsecureUrl { .. }), "{insecure}: {err}");
            assert!(err.to_string().contains("--allow-insecure-cloud-url"), "{err}");
            check_cloud_url(insecure, true)
                .unwrap_or_else(|e| panic!("{insecure} when allowed: {e}"));
        }
        for bad in ["cloud.example.com", "ftp://cloud.example.com", ""] {
            assert!(matches!(check_cloud_url(bad, true), Err(UploadError::BadUrl { .. })), "{bad}");
        }
        let refused =
            CloudClient::new(CloudConfig::new("http://cloud.example.com", "cl_x", "secret"))
                .unwrap_err();
        assert!(matches!(refused, UploadError::InsecureUrl { .. }), "{refused}");
    }

    #[test]
    fn server_errors_are_told_from_unreachable_clouds() {
        let outcome = |status: u16, body: &'static str| {
            let response = reqwest::Response::from(
                axum::http::Response::builder().status(status).body(body).unwrap(),
            );
            futures::executor::block_on(classify(StatusCode::from_u16(status).unwrap(), response))
        };
        assert!(
            matches!(outcome(500, r#"{"error": "internal error"}"#), SendOutcome::ServerError { reason, .. } if reason == "500 Internal Server Error: internal error")
        );
        for transient in [502, 503, 504, 429, 408, 404] {
            assert!(matches!(outcome(transient, ""), SendOutcome::Retry { .. }), "{transient}");
        }
        assert!(
            matches!(outcome(422, r#"{"error": "generated_at: too new"}"#), SendOutcome::Rejected(reason) if reason.ends_with("generated_at: too new"))
        );
    }
}
