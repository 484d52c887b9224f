//! The Istio watcher: every interval, scrapes the Envoy sidecar of every running pod labelled
//! `security.istio.io/tlsMode` (`http://<pod IP>:15090/stats/prometheus`, plain HTTP, no
//! `pods/exec`) and hands the round to [`mapper_core::Mapper::observe_istio`], which turns the
//! increases of `istio_requests_total` into HTTP edges (baselines, resets and the choice of
//! the reporting side are described there and in [`mapper_core::istio`]).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use mapper_core::{read_metrics, LabelledPod, SidecarScrape, ISTIO_SIDECAR_LABEL};

use super::watch::WatchProgress;
use super::SharedMapper;

#[derive(Debug, Clone)]
pub struct IstioConfig {
    pub interval: Duration,
    /// The sidecar's Prometheus port and path.
    pub port: u16,
    pub path: String,
    /// For one scrape, connection included.
    pub timeout: Duration,
    /// Sidecars scraped at the same time.
    pub concurrency: usize,
    /// Larger answers are refused (a sidecar with many series answers a few MiB).
    pub max_body_bytes: usize,
}

impl Default for IstioConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(30),
            port: 15090,
            path: "/stats/prometheus".to_owned(),
            timeout: Duration::from_secs(5),
            concurrency: 16,
            max_body_bytes: 64 << 20,
        }
    }
}

/// The watcher's own counters (what the metrics said is in [`mapper_core::MapperStats`]).
#[derive(Debug, Default)]
pub struct IstioWatchStats {
    pub rounds: AtomicU64,
    /// Sidecars in the last round.
    pub sidecars: AtomicU64,
}

/// Scrapes every interval until the process ends, once the inventory has been listed.
pub async fn run(mapper: SharedMapper, progress: Arc<WatchProgress>, config: IstioConfig) {
    while !progress.ready() {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let http = match client(&config) {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the HTTP client for Istio sidecars; the Istio watcher is off");
            return;
        }
    };
    tracing::info!(interval = ?config.interval, port = config.port, path = %config.path, "scraping Istio sidecars");
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let sidecars = scrape_round(&mapper, &http, &config).await;
        progress.istio.rounds.fetch_add(1, Ordering::Relaxed);
        progress.istio.sidecars.store(sidecars as u64, Ordering::Relaxed);
    }
}

/// The HTTP client for sidecars: no proxy (pod addresses are reached directly), the timeout.
pub fn client(config: &IstioConfig) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .user_agent(concat!("intentmap-cluster-agent/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One round: scrapes every sidecar the index knows, reads the metrics out of each answer
/// (outside the mapper's lock), then records what changed. Returns how many sidecars there were.
pub async fn scrape_round(mapper: &SharedMapper, http: &reqwest::Client, config: &IstioConfig) -> usize {
    let pods = mapper.lock().expect("mapper lock poisoned").index.pods_labelled(ISTIO_SIDECAR_LABEL);
    let count = pods.len();
    let scrapes: Vec<SidecarScrape> = futures::stream::iter(pods)
        .map(|pod| async move {
            let text = scrape(http, &pod, config).await;
            if let Err(e) = &text {
                tracing::debug!(pod = %pod.pod.name, namespace = %pod.pod.namespace, error = %e, "sidecar scrape failed");
            }
            SidecarScrape { pod, metrics: text.map(|text| read_metrics(&text)) }
        })
        .buffer_unordered(config.concurrency.max(1))
        .collect()
        .await;
    mapper.lock().expect("mapper lock poisoned").observe_istio(&scrapes, Utc::now());
    count
}

async fn scrape(http: &reqwest::Client, pod: &LabelledPod, config: &IstioConfig) -> Result<String, String> {
    let url = format!("http://{}{}", SocketAddr::new(pod.ip, config.port), config.path);
    let mut response = http.get(&url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("GET {url}: {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| format!("reading {url}: {e}"))? {
        if body.len() + chunk.len() > config.max_body_bytes {
            return Err(format!("{url} answered more than {} bytes", config.max_body_bytes));
        }
        body.extend_from_slice(&chunk);
    }
    String::from_utf8(body).map_err(|_| format!("{url} answered something that is not UTF-8 text"))
}
