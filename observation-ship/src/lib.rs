//! Shipping observations to the mapper: batched about once a second, a bounded buffer whose
//! overflow is counted (oldest dropped first), retries while the mapper is away, and a final
//! flush on shutdown.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use model::observation::{AwsOperation, DnsAnswer, ObservationBatch, TcpConnection};

/// Where the node agent's credentials come from.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A shared token from configuration.
    Shared(String),
    /// A (projected, rotating) ServiceAccount token file, re-read for every send.
    TokenFile(PathBuf),
}

impl Credentials {
    fn token(&self) -> std::io::Result<String> {
        match self {
            Credentials::Shared(t) => Ok(t.clone()),
            Credentials::TokenFile(path) => Ok(std::fs::read_to_string(path)?.trim().to_owned()),
        }
    }
}

/// One observation waiting to be shipped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Tcp(TcpConnection),
    Dns(DnsAnswer),
    Aws(AwsOperation),
}

#[derive(Debug, Default)]
pub struct ShipStats {
    pub shipped: AtomicU64,
    /// Observations dropped because the buffer was full while the mapper was unreachable.
    pub dropped: AtomicU64,
    pub failed_sends: AtomicU64,
}

/// The buffer between capture and the mapper. Cloneable handle; capture threads `push`.
#[derive(Clone)]
pub struct Outgoing {
    buffer: Arc<Mutex<VecDeque<Observed>>>,
    capacity: usize,
    pub stats: Arc<ShipStats>,
}

impl Outgoing {
    pub fn new(capacity: usize) -> Self {
        Self {
            buffer: Arc::new(Mutex::new(VecDeque::new())),
            capacity: capacity.max(1),
            stats: Arc::default(),
        }
    }

    pub fn push(&self, observed: Observed) {
        let mut buffer = self.buffer.lock().expect("ship buffer poisoned");
        if buffer.len() >= self.capacity {
            buffer.pop_front();
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
        }
        buffer.push_back(observed);
    }

    pub fn len(&self) -> usize {
        self.buffer.lock().expect("ship buffer poisoned").len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self, max: usize) -> Vec<Observed> {
        let mut buffer = self.buffer.lock().expect("ship buffer poisoned");
        let n = buffer.len().min(max);
        buffer.drain(..n).collect()
    }

    /// Puts a batch that could not be sent back at the front, within capacity.
    fn put_back(&self, batch: Vec<Observed>) {
        let mut buffer = self.buffer.lock().expect("ship buffer poisoned");
        for o in batch.into_iter().rev() {
            if buffer.len() >= self.capacity {
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            buffer.push_front(o);
        }
    }
}

pub struct Shipper {
    pub mapper_url: String,
    pub credentials: Credentials,
    pub source: String,
    pub http: reqwest::Client,
    pub max_batch: usize,
}

impl Shipper {
    fn batch_of(&self, items: &[Observed]) -> ObservationBatch {
        let mut batch =
            ObservationBatch { source: Some(self.source.clone()), ..Default::default() };
        for o in items {
            match o {
                Observed::Tcp(t) => batch.tcp.push(t.clone()),
                Observed::Dns(d) => batch.dns.push(d.clone()),
                Observed::Aws(a) => batch.aws.push(a.clone()),
            }
        }
        batch
    }

    /// Sends everything buffered, a batch at a time; on failure puts the batch back and stops.
    pub async fn flush(&self, outgoing: &Outgoing) -> Result<usize, String> {
        let mut sent = 0;
        loop {
            let items = outgoing.take(self.max_batch);
            if items.is_empty() {
                return Ok(sent);
            }
            match self.send(&self.batch_of(&items)).await {
                Ok(()) => {
                    sent += items.len();
                    outgoing.stats.shipped.fetch_add(items.len() as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    outgoing.stats.failed_sends.fetch_add(1, Ordering::Relaxed);
                    outgoing.put_back(items);
                    return Err(e);
                }
            }
        }
    }

    async fn send(&self, batch: &ObservationBatch) -> Result<(), String> {
        let token =
            self.credentials.token().map_err(|e| format!("reading the node's token: {e}"))?;
        let reply = self
            .http
            .post(format!("{}/v1/observations", self.mapper_url.trim_end_matches('/')))
            .bearer_auth(token)
            .json(batch)
            .send()
            .await
            .map_err(|e| format!("the mapper at {} is unreachable: {e}", self.mapper_url))?;
        if reply.status().is_success() {
            Ok(())
        } else {
            Err(format!(
                "the mapper refused the batch ({}): {}",
                reply.status(),
                reply.text().await.unwrap_or_default()
            ))
        }
    }

    /// Ships every `every` until `shutdown`, then flushes once more.
    pub async fn run(
        self,
        outgoing: Outgoing,
        every: Duration,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if let Err(e) = self.flush(&outgoing).await {
                        tracing::warn!(error = %e, buffered = outgoing.len(), "shipping observations failed; keeping them and retrying");
                    }
                }
                _ = &mut shutdown => break,
            }
        }
        match self.flush(&outgoing).await {
            Ok(n) => tracing::info!(shipped = n, "flushed observations before exiting"),
            Err(e) => {
                tracing::warn!(error = %e, lost = outgoing.len(), "could not flush observations before exiting")
            }
        }
    }
}
