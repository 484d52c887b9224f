//! Loss-free upload of [`EdgeReport`]s from the mapper to the cloud.
//!
//! - [`CloudClient`]: authenticates as the cluster (OAuth2 client credentials, token cached
//!   until shortly before it expires) and posts one gzip-encoded report, classifying the answer
//!   as a [`SendOutcome`].
//! - [`Uploader`]: every interval asks a [`ReportSource`] for a new report, stores it in the
//!   [`Outbox`] first, then drains the outbox oldest first. When the cloud is unreachable or
//!   overloaded it backs off exponentially with full jitter and keeps every report; a report the
//!   cloud refuses for good is set aside so it cannot block the queue. Counters for metrics are
//!   in [`UploadStats`].
//!
//! Delivery is at least once from here and exactly once in effect: the cloud applies a
//! `report_id` once and answers a replay with `duplicate: true`.

use std::future::Future;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use model::{merge_edges, EdgeReport, ExposedWorkload};
use rand::Rng as _;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use reqwest::StatusCode;
use serde::Deserialize;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::outbox::{Outbox, OutboxStats};

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
}

impl CloudConfig {
    pub fn new(base_url: impl Into<String>, client_id: impl Into<String>, client_secret: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            ca_certificate: None,
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
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
        f.debug_struct("CloudClient").field("base_url", &self.base_url).field("client_id", &self.client_id).finish_non_exhaustive()
    }
}

/// An HTTP client using rustls, trusting the built-in roots plus the certificates in `ca_certificate`.
pub fn http_client(ca_certificate: Option<&Path>, timeout: Duration, connect_timeout: Duration) -> Result<reqwest::Client, UploadError> {
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
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(bytes.len() / 4), flate2::Compression::default());
    encoder.write_all(bytes)?;
    encoder.finish()
}

impl CloudClient {
    pub fn new(config: CloudConfig) -> Result<Self, UploadError> {
        let http = http_client(config.ca_certificate.as_deref(), config.timeout, config.connect_timeout)?;
        Ok(Self::with_http(config.base_url, config.client_id, config.client_secret, http))
    }

    /// With an HTTP client of the caller's making.
    pub fn with_http(base_url: impl Into<String>, client_id: impl Into<String>, client_secret: impl Into<String>, http: reqwest::Client) -> Self {
        let base_url = base_url.into().trim_end_matches('/').to_owned();
        Self { base_url, client_id: client_id.into(), client_secret: client_secret.into(), http, token: Default::default() }
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
        let form = [("grant_type", "client_credentials"), ("client_id", self.client_id.as_str()), ("client_secret", self.client_secret.as_str())];
        let response = self.http.post(&url).form(&form).send().await.map_err(|source| UploadError::TokenRequest { url: url.clone(), source })?;
        let status = response.status();
        if !status.is_success() {
            let body: OAuthError = response.json().await.unwrap_or_default();
            return Err(UploadError::TokenRefused { status: status.as_u16(), error: body.error, description: body.error_description });
        }
        let body: TokenResponse = response.json().await.map_err(|e| UploadError::TokenResponse(e.to_string()))?;
        if let Some(kind) = body.token_type.as_deref().filter(|t| !t.eq_ignore_ascii_case("bearer")) {
            return Err(UploadError::TokenResponse(format!("token_type {kind:?} is not Bearer")));
        }
        let lifetime = Duration::from_secs(body.expires_in.unwrap_or(60));
        debug!(expires_in = lifetime.as_secs(), "obtained a cluster access token");
        Ok(CachedToken { value: body.access_token, refresh_at: started + lifetime - refresh_margin(lifetime) })
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
                Err(e) => return Ok(SendOutcome::Retry { reason: e.to_string(), retry_after: None }),
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
                Err(e) => return Ok(SendOutcome::Retry { reason: format!("could not reach {url}: {:#}", anyhow::Error::new(e)), retry_after: None }),
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
        let text = if parsed.error.is_empty() { String::from_utf8_lossy(body).into_owned() } else { parsed.error };
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
        401 => {
            SendOutcome::Retry { reason: format!("the cloud refused a fresh access token ({}); is the cluster revoked?", message(&body)), retry_after: after }
        }
        408 | 429 => SendOutcome::Retry { reason: message(&body), retry_after: after },
        // Not about this report: the URL is wrong or the cloud is mid-deployment. Setting every
        // report aside would empty the outbox because of a configuration error.
        404 | 405 => SendOutcome::Retry { reason: format!("{}; check the cloud URL", message(&body)), retry_after: after },
        400..=499 => SendOutcome::Rejected(message(&body)),
        _ => SendOutcome::Retry { reason: message(&body), retry_after: after },
    }
}

/// Exponential backoff with full jitter: the n-th consecutive failure waits a random time
/// between zero and `min(cap, base * 2^n)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { base: Duration::from_secs(1), cap: Duration::from_secs(60) }
    }
}

impl Backoff {
    /// The ceiling for the delay after `failures` consecutive failures before this one.
    pub fn ceiling(&self, failures: u32) -> Duration {
        self.base.saturating_mul(1u32 << failures.min(30)).min(self.cap)
    }

    pub fn delay(&self, failures: u32) -> Duration {
        let ceiling = self.ceiling(failures);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(rand::thread_rng().gen_range(0..=nanos))
    }
}

/// Where new reports come from (the mapper).
pub trait ReportSource {
    /// The report to upload now: the edges since the last one plus the full current exposed
    /// set; `None` when nothing changed.
    fn next_report(&mut self) -> Option<EdgeReport>;

    /// The current exposed set, asked for when no report was made for
    /// [`UploaderConfig::exposed_refresh`] so that the cloud keeps it fresh. `None` re-sends the
    /// last set seen in a report.
    fn exposed(&mut self) -> Option<Vec<ExposedWorkload>> {
        None
    }
}

impl<F: FnMut() -> Option<EdgeReport>> ReportSource for F {
    fn next_report(&mut self) -> Option<EdgeReport> {
        self()
    }
}

#[derive(Debug, Clone)]
pub struct UploaderConfig {
    /// How often to ask the source for a report (and drain the outbox when not backing off).
    pub interval: Duration,
    pub backoff: Backoff,
    /// Re-send the exposed set (in an edge-less report) when no report was made for this long.
    pub exposed_refresh: Option<Duration>,
    /// On shutdown, how long to keep trying to deliver what is pending (zero: don't).
    pub shutdown_flush: Duration,
}

impl Default for UploaderConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            backoff: Backoff::default(),
            exposed_refresh: Some(Duration::from_secs(300)),
            shutdown_flush: Duration::from_secs(5),
        }
    }
}

/// Upload counters for the caller's metrics.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Reports the cloud applied.
    pub sent: AtomicU64,
    /// Reports the cloud had already applied (a lost acknowledgement).
    pub duplicates: AtomicU64,
    /// Failed attempts that will be retried.
    pub retries: AtomicU64,
    /// Reports the cloud refused for good, set aside as `*.rejected`.
    pub rejected: AtomicU64,
    /// Reports waiting in the outbox.
    pub pending: AtomicU64,
}

/// A copy of [`UploadStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadCounts {
    pub sent: u64,
    pub duplicates: u64,
    pub retries: u64,
    pub rejected: u64,
    pub pending: u64,
}

impl UploadStats {
    pub fn snapshot(&self) -> UploadCounts {
        UploadCounts {
            sent: self.sent.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
        }
    }
}

/// The result of one [`Uploader::drain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drained {
    /// The outbox is empty.
    Empty,
    /// Delivery failed; everything pending was kept. `retry_after` is the cloud's request, if any.
    Retry { retry_after: Option<Duration> },
}

/// Moves reports from the source through the outbox to the cloud. See the module documentation.
pub struct Uploader {
    outbox: Outbox,
    client: CloudClient,
    config: UploaderConfig,
    stats: Arc<UploadStats>,
    /// A report the outbox could not store (disk full...), kept in memory and retried.
    unsaved: Option<EdgeReport>,
    last_exposed: Option<Vec<ExposedWorkload>>,
    last_report_at: Instant,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader").field("outbox", &self.outbox).field("client", &self.client).field("config", &self.config).finish_non_exhaustive()
    }
}

impl Uploader {
    pub fn new(outbox: Outbox, client: CloudClient, config: UploaderConfig) -> Self {
        let stats = Arc::new(UploadStats::default());
        if let Ok(n) = outbox.len() {
            stats.pending.store(n as u64, Ordering::Relaxed);
        }
        Self { outbox, client, config, stats, unsaved: None, last_exposed: None, last_report_at: Instant::now() }
    }

    pub fn stats(&self) -> Arc<UploadStats> {
        self.stats.clone()
    }

    pub fn outbox_stats(&self) -> Arc<OutboxStats> {
        self.outbox.stats()
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Runs until `shutdown` completes: every interval asks `source` for a report, stores it,
    /// and drains the outbox unless backing off. On shutdown it asks the source once more, stores
    /// that report, and tries to deliver what is pending for at most
    /// [`UploaderConfig::shutdown_flush`]; whatever is left stays in the outbox for next time.
    pub async fn run(mut self, mut source: impl ReportSource, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let interval = self.config.interval.max(Duration::from_millis(1));
        info!(cloud = %self.client.base_url(), interval_ms = interval.as_millis() as u64, pending = self.pending(), "uploader started");
        let mut next_tick = Instant::now();
        let mut retry_at: Option<Instant> = None;
        let mut failures: u32 = 0;
        loop {
            let wake = retry_at.map_or(next_tick, |r| r.min(next_tick));
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if now >= next_tick {
                self.collect(&mut source);
                next_tick = now + interval;
            }
            if retry_at.is_some_and(|r| now < r) {
                continue;
            }
            let drained = tokio::select! {
                _ = &mut shutdown => break,
                d = self.drain() => d,
            };
            match drained {
                Drained::Empty => {
                    if failures > 0 {
                        info!(failed_attempts = failures, "the cloud is reachable again; outbox drained");
                    }
                    failures = 0;
                    retry_at = None;
                }
                Drained::Retry { retry_after } => {
                    let delay = self.config.backoff.delay(failures).max(retry_after.unwrap_or_default().min(self.config.backoff.cap));
                    failures = failures.saturating_add(1);
                    info!(delay_ms = delay.as_millis() as u64, failed_attempts = failures, pending = self.pending(), "backing off before the next attempt");
                    retry_at = Some(Instant::now() + delay);
                }
            }
        }
        self.collect(&mut source);
        if !self.config.shutdown_flush.is_zero() && self.pending() > 0 {
            info!(pending = self.pending(), "shutting down: delivering what is pending");
            if tokio::time::timeout(self.config.shutdown_flush, self.drain()).await.is_err() {
                warn!("shutting down: gave up delivering; pending reports stay in the outbox");
            }
        }
        info!(pending = self.pending(), "uploader stopped");
    }

    /// Asks the source for a report (or makes an exposed-set refresh) and stores it.
    fn collect(&mut self, source: &mut impl ReportSource) {
        let report = source.next_report().or_else(|| {
            let due = self.config.exposed_refresh.is_some_and(|every| self.last_report_at.elapsed() >= every);
            if !due {
                return None;
            }
            let exposed = source.exposed().or_else(|| self.last_exposed.clone())?;
            debug!(workloads = exposed.len(), "re-sending the exposed set");
            Some(EdgeReport::new(Uuid::new_v4(), Utc::now(), Vec::new(), exposed))
        });
        match report {
            Some(report) => {
                self.last_exposed = Some(report.exposed.clone());
                self.last_report_at = Instant::now();
                self.store(report);
            }
            None => {
                if let Some(report) = self.unsaved.take() {
                    self.store(report);
                }
            }
        }
    }

    fn store(&mut self, mut report: EdgeReport) {
        if let Some(earlier) = self.unsaved.take() {
            // Never stored nor sent, so its edges can join the newer report.
            report.edges = merge_edges(earlier.edges.into_iter().chain(std::mem::take(&mut report.edges)));
        }
        match self.outbox.push(&report) {
            Ok(()) => {
                let pending = self.pending();
                debug!(report_id = %report.report_id, edges = report.edges.len(), pending, "report queued");
            }
            Err(e) => {
                error!(report_id = %report.report_id, edges = report.edges.len(), error = %e, "could not store the report in the outbox; keeping it in memory and retrying");
                self.unsaved = Some(report);
            }
        }
    }

    /// Re-counts the outbox, updating the `pending` counter.
    fn pending(&self) -> u64 {
        match self.outbox.len() {
            Ok(n) => {
                self.stats.pending.store(n as u64, Ordering::Relaxed);
                n as u64
            }
            Err(_) => self.stats.pending.load(Ordering::Relaxed),
        }
    }

    /// Sends pending reports oldest first until the outbox is empty or a send must be retried.
    pub async fn drain(&mut self) -> Drained {
        loop {
            let report = match self.outbox.oldest() {
                Ok(Some(r)) => r,
                Ok(None) => {
                    self.stats.pending.store(0, Ordering::Relaxed);
                    return Drained::Empty;
                }
                Err(e) => {
                    error!(error = %e, "cannot read the outbox");
                    return Drained::Retry { retry_after: None };
                }
            };
            let report_id = report.report_id;
            let edges = report.edges.len();
            let outcome = match self.client.send(&report).await {
                Ok(outcome) => outcome,
                Err(e) => SendOutcome::Rejected(e.to_string()),
            };
            match outcome {
                SendOutcome::Accepted | SendOutcome::AlreadyApplied => {
                    if let Err(e) = self.outbox.ack(report_id) {
                        error!(report_id = %report_id, error = %e, "the cloud has the report but it could not be removed from the outbox");
                        return Drained::Retry { retry_after: None };
                    }
                    let pending = self.pending();
                    if outcome == SendOutcome::Accepted {
                        self.stats.sent.fetch_add(1, Ordering::Relaxed);
                        info!(report_id = %report_id, edges, pending, "report delivered");
                    } else {
                        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                        info!(report_id = %report_id, edges, pending, "report was already applied (an acknowledgement had been lost); removed from the outbox");
                    }
                }
                SendOutcome::Rejected(reason) => {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = self.outbox.reject(report_id, &reason) {
                        error!(report_id = %report_id, error = %e, "could not set the rejected report aside");
                        return Drained::Retry { retry_after: None };
                    }
                    let pending = self.pending();
                    error!(report_id = %report_id, edges, pending, reason, "the cloud rejected the report for good; set aside, continuing with the next");
                }
                SendOutcome::Retry { reason, retry_after } => {
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                    let pending = self.pending();
                    warn!(report_id = %report_id, edges, pending, reason, "could not deliver the report; keeping it and everything behind it");
                    return Drained::Retry { retry_after };
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap_with_full_jitter() {
        let b = Backoff::default();
        assert_eq!(b.ceiling(0), Duration::from_secs(1));
        assert_eq!(b.ceiling(3), Duration::from_secs(8));
        assert_eq!(b.ceiling(6), Duration::from_secs(60));
        assert_eq!(b.ceiling(1000), Duration::from_secs(60));
        let delays: Vec<Duration> = (0..200).map(|_| b.delay(10)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(60)));
        assert!(delays.iter().any(|d| *d < Duration::from_secs(30)) && delays.iter().any(|d| *d > Duration::from_secs(30)), "spread over the range");
    }

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
        let err = http_client(Some(&missing), Duration::from_secs(1), Duration::from_secs(1)).unwrap_err();
        assert!(matches!(err, UploadError::CaCertificate { .. }), "{err}");
        let empty = std::env::temp_dir().join(format!("empty-ca-{}.pem", Uuid::new_v4()));
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = http_client(Some(&empty), Duration::from_secs(1), Duration::from_secs(1)).unwrap_err().to_string();
        let _ = std::fs::remove_file(&empty);
        assert!(err.contains("no PEM certificate"), "{err}");
    }
}
