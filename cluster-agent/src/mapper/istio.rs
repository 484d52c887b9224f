//! The Istio watcher: every interval, while istiod runs in its namespace, scrapes the Envoy
//! sidecar of every running pod Istio's injector injected (`http://<pod IP>:15090/stats/prometheus`,
//! plain HTTP, no `pods/exec`) and hands each answer to the mapper's round
//! ([`mapper_core::Mapper::observe_sidecar`]), which turns the increases of
//! `istio_requests_total` that something vouches for into HTTP edges (see [`mapper_core::istio`]).
//!
//! A sidecar's answer is the pod's word: it is read incrementally up to a small limit (larger
//! answers are refused and counted), never decompressed, never followed through a redirect,
//! and at most a few are read at once, so the mapper's memory does not depend on what pods say.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mapper_core::{read_metrics, LabelledPod};

use super::telemetry::{IstioWatchStats, Telemetry};
use super::SharedMapper;

#[derive(Debug, Clone)]
pub struct IstioConfig {
    pub interval: Duration,
    /// The sidecar's Prometheus port and path.
    pub port: u16,
    pub path: String,
    /// Where istiod runs: nothing is scraped while its Service is not there.
    pub namespace: String,
    /// For one scrape, connection included.
    pub timeout: Duration,
    /// Sidecars scraped at the same time.
    pub concurrency: usize,
    /// Larger answers are refused (a sidecar with thousands of request series answers about a MiB).
    pub max_body_bytes: usize,
}

impl Default for IstioConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            port: 15090,
            path: "/stats/prometheus".to_owned(),
            namespace: "istio-system".to_owned(),
            timeout: Duration::from_secs(5),
            concurrency: 4,
            max_body_bytes: 4 << 20,
        }
    }
}

/// Scrapes every interval until the process ends, once the inventory has been listed.
pub async fn run(mapper: SharedMapper, telemetry: Arc<Telemetry>, config: IstioConfig) {
    while !telemetry.listed() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let http = match client(&config) {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client for Istio sidecars; the Istio watcher is off");
            return;
        }
    };
    tracing::info!(interval = ?config.interval, port = config.port, path = %config.path, namespace = %config.namespace, "scraping Istio sidecars");
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut said_absent = false;
    loop {
        tick.tick().await;
        let sidecars = scrape_round(&mapper, &http, &config, &telemetry.istio).await;
        match sidecars {
            None if !said_absent => {
                tracing::info!(namespace = %config.namespace, "no istiod Service in that namespace: Istio is not installed, nothing is scraped");
                said_absent = true;
            }
            None => {}
            Some(_) => said_absent = false,
        }
        telemetry.istio.rounds.fetch_add(1, Ordering::Relaxed);
        telemetry.istio.sidecars.store(sidecars.unwrap_or(0) as u64, Ordering::Relaxed);
    }
}

/// The HTTP client for sidecars: no proxy (pod addresses are reached directly), no redirects
/// (a pod must not point the mapper elsewhere), no compression (the limit is on what is read).
pub fn client(config: &IstioConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .no_gzip()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .user_agent(concat!("intentmap-cluster-agent/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One round: while istiod is there, scrapes every injected sidecar the index knows, a few at
/// a time, each answer read into metrics outside the mapper's lock and handed over as it
/// comes; then ends the round. Returns how many sidecars there were, `None` without Istio.
pub async fn scrape_round(
    mapper: &SharedMapper,
    http: &reqwest::Client,
    config: &IstioConfig,
    stats: &IstioWatchStats,
) -> Option<usize> {
    let pods = {
        let mut mapper = mapper.lock();
        let present = mapper.index.istio_control_plane(&config.namespace);
        stats.control_plane.store(u64::from(present), Ordering::Relaxed);
        if !present {
            return None;
        }
        let pods = mapper.index.istio_sidecars();
        mapper.begin_istio_round(&pods, chrono::Utc::now());
        pods
    };
    let count = pods.len();
    let mut scrapes = futures::stream::iter(pods)
        .map(|pod| async move {
            let metrics = match scrape(http, &pod, config).await {
                Ok(text) => Ok(read_metrics(&text)),
                Err(e) => {
                    if matches!(e, ScrapeError::TooLarge(_)) {
                        stats.oversized.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(pod = %pod.pod.name, namespace = %pod.pod.namespace, error = %e, "sidecar scrape failed");
                    Err(e.to_string())
                }
            };
            (pod, metrics)
        })
        .buffer_unordered(config.concurrency.max(1));
    while let Some((pod, metrics)) = scrapes.next().await {
        mapper.lock().observe_sidecar(&pod, metrics.as_ref().map_err(String::as_str));
    }
    mapper.lock().end_istio_round(chrono::Utc::now());
    Some(count)
}

#[derive(Debug, thiserror::Error)]
pub enum ScrapeError {
    #[error("GET {0}: {1}")]
    Request(String, reqwest::Error),
    #[error("GET {0}: {1}")]
    Status(String, reqwest::StatusCode),
    #[error("{0} answered more than the limit")]
    TooLarge(String),
    #[error("{0} answered something that is not UTF-8 text")]
    NotText(String),
}

async fn scrape(
    http: &reqwest::Client,
    pod: &LabelledPod,
    config: &IstioConfig,
) -> Result<String, ScrapeError> {
    let url = format!("http://{}{}", SocketAddr::new(pod.ip, config.port), config.path);
    let mut response =
        http.get(&url).send().await.map_err(|e| ScrapeError::Request(url.clone(), e))?;
    if !response.status().is_success() {
        return Err(ScrapeError::Status(url, response.status()));
    }
    if response.content_length().is_some_and(|n| n > config.max_body_bytes as u64) {
        return Err(ScrapeError::TooLarge(url));
    }
    let mut body = Vec::new();
    while let Some(chunk) =
        response.chunk().await.map_err(|e| ScrapeError::Request(url.clone(), e))?
    {
        if body.len() + chunk.len() > config.max_body_bytes {
            return Err(ScrapeError::TooLarge(url));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| ScrapeError::NotText(url))
}
