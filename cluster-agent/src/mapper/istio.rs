//! The Istio watcher: every interval, while istiod runs in its namespace, scrapes the Envoy
//! sidecar of every running pod Istio's injector injected (`http://<pod IP>:15090/stats/prometheus`,
//! plain HTTP, no `pods/exec`) and hands each answer to the mapper's round
//! ([`mapper_core::Mapper::observe_sidecar`]), which turns the increases of
//! `istio_requests_total` that something vouches for into HTTP edges (see [`mapper_core::istio`]).
//!
//! In Istio's ambient mode there are no sidecars: the same rounds scrape every ztunnel (`app=ztunnel`
//! in Istio's namespace) and waypoint proxy (`gateway.istio.io/managed=istio.io-mesh-controller` or
//! `istio.io/gateway-name`) at `http://<pod IP>:15020/stats/prometheus`
//! ([`mapper_core::Mapper::observe_ambient`], rules in [`mapper_core::istio::ambient`]).
//!
//! A sidecar's answer is the pod's word: it is read incrementally up to a small limit (larger
//! answers are refused and counted), never decompressed, never followed through a redirect,
//! and at most a few are read at once, so the mapper's memory does not depend on what pods say.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use mapper_core::{read_ambient_metrics, read_metrics, AmbientProxy, LabelledPod};

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
    /// The ambient proxies' (ztunnel, waypoints) Prometheus port and path.
    pub ambient_port: u16,
    pub ambient_path: String,
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
            ambient_port: 15020,
            ambient_path: "/stats/prometheus".to_owned(),
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
        if sidecars.is_none() {
            telemetry.istio.sidecars.store(0, Ordering::Relaxed);
            telemetry.istio.ambient_proxies.store(0, Ordering::Relaxed);
        }
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

/// What one round scrapes.
enum Proxy {
    Sidecar(LabelledPod),
    Ambient(AmbientProxy),
}

/// One round: while istiod is there, scrapes every injected sidecar and every ambient proxy
/// (ztunnel, waypoint) the index knows, a few at a time, each answer read into metrics outside
/// the mapper's lock and handed over as it comes; then ends the round. Returns how many proxies
/// there were, `None` without Istio.
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
        let sidecars = mapper.index.istio_sidecars();
        let ambient = mapper.index.istio_ambient_proxies(&config.namespace);
        stats.ambient_proxies.store(ambient.len() as u64, Ordering::Relaxed);
        let pods: Vec<LabelledPod> =
            sidecars.iter().cloned().chain(ambient.iter().map(|p| p.pod.clone())).collect();
        mapper.begin_istio_round(&pods, chrono::Utc::now());
        stats.sidecars.store(sidecars.len() as u64, Ordering::Relaxed);
        sidecars
            .into_iter()
            .map(Proxy::Sidecar)
            .chain(ambient.into_iter().map(Proxy::Ambient))
            .collect::<Vec<_>>()
    };
    let count = pods.len();
    let mut scrapes = futures::stream::iter(pods)
        .map(|proxy| async move {
            let (pod, port, path, read): (_, _, _, fn(&str) -> _) = match &proxy {
                Proxy::Sidecar(pod) => (pod, config.port, &config.path, read_metrics),
                Proxy::Ambient(p) => {
                    (&p.pod, config.ambient_port, &config.ambient_path, read_ambient_metrics)
                }
            };
            let metrics = match scrape(http, pod, port, path, config).await {
                Ok(text) => Ok(read(&text)),
                Err(e) => {
                    if matches!(e, ScrapeError::TooLarge(_)) {
                        stats.oversized.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!(pod = %pod.pod.name, namespace = %pod.pod.namespace, error = %e, "Istio proxy scrape failed");
                    Err(e.to_string())
                }
            };
            (proxy, metrics)
        })
        .buffer_unordered(config.concurrency.max(1));
    while let Some((proxy, metrics)) = scrapes.next().await {
        let metrics = metrics.as_ref().map_err(String::as_str);
        match &proxy {
            Proxy::Sidecar(pod) => mapper.lock().observe_sidecar(pod, metrics),
            Proxy::Ambient(proxy) => mapper.lock().observe_ambient(proxy, metrics),
        }
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
    port: u16,
    path: &str,
    config: &IstioConfig,
) -> Result<String, ScrapeError> {
    let url = format!("http://{}{}", SocketAddr::new(pod.ip, port), path);
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
