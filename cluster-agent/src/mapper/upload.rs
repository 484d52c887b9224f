//! Loss-free upload of [`EdgeReport`]s from the mapper to the cloud.
//!
//! - [`CloudClient`] (in `client`): authenticates as the cluster and posts one gzip-encoded
//!   report, classifying the answer as a [`SendOutcome`]. It refuses to send the cluster's
//!   secret over plain `http://` except to this machine, unless explicitly allowed.
//! - [`Uploader`]: every interval asks a [`ReportSource`] for a new report, fits it to the
//!   cloud's limits (splitting a large backlog, trimming over-long lists, leaving out edges the
//!   cloud would refuse, each counted), stores the parts in the [`Outbox`] first, then drains
//!   the outbox oldest first (in `drain`). When the cloud is unreachable or overloaded it backs
//!   off exponentially with full jitter and keeps every report; a report the cloud refuses for
//!   good, or keeps failing on while the reports behind it go through, is set aside so it cannot
//!   block the queue. Counters for metrics are in [`UploadStats`].
//!
//! Delivery is at least once from here and exactly once in effect: the cloud applies a
//! `report_id` once and answers a replay with `duplicate: true`.

mod client;
mod drain;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use model::report::fit::{fit, Fitted};
use model::report::MAX_EDGES_PER_REPORT;
use model::{merge_edges, EdgeReport, ExposedWorkload};
use rand::Rng as _;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

pub use self::client::{
    check_cloud_url, http_client, CloudClient, CloudConfig, SendOutcome, UploadError,
};
pub use self::drain::Drained;
use super::outbox::{Outbox, OutboxStats};

/// Edges held in memory while the outbox cannot store them (a full disk).
pub const MAX_UNSAVED_EDGES: usize = 4 * MAX_EDGES_PER_REPORT;

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
    /// A report the cloud fails on (500) this many times in a row with the same answer is set
    /// aside as `*.failed`, once a report behind it has been accepted (so it is not the cloud
    /// failing on everything).
    pub set_aside_after: u32,
}

impl Default for UploaderConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(5),
            backoff: Backoff::default(),
            exposed_refresh: Some(Duration::from_secs(300)),
            shutdown_flush: Duration::from_secs(5),
            set_aside_after: 5,
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
    /// Reports the cloud kept failing on while later ones went through, set aside as `*.failed`.
    pub failed: AtomicU64,
    /// List entries (ports, IPs, paths...) left off edges longer than a report may carry.
    pub trimmed_entries: AtomicU64,
    /// Edges left out of reports because the cloud would refuse them (a name, a time...), or
    /// because the outbox could not store them for too long.
    pub dropped_edges: AtomicU64,
}

/// A copy of [`UploadStats`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct UploadCounts {
    pub sent: u64,
    pub duplicates: u64,
    pub retries: u64,
    pub rejected: u64,
    pub pending: u64,
    pub failed: u64,
    pub trimmed_entries: u64,
    pub dropped_edges: u64,
}

impl UploadStats {
    pub fn snapshot(&self) -> UploadCounts {
        UploadCounts {
            sent: self.sent.load(Ordering::Relaxed),
            duplicates: self.duplicates.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            pending: self.pending.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            trimmed_entries: self.trimmed_entries.load(Ordering::Relaxed),
            dropped_edges: self.dropped_edges.load(Ordering::Relaxed),
        }
    }
}

/// Moves reports from the source through the outbox to the cloud. See the module documentation.
pub struct Uploader {
    outbox: Outbox,
    client: CloudClient,
    config: UploaderConfig,
    stats: Arc<UploadStats>,
    /// A report the outbox could not store (disk full...), kept in memory and retried.
    unsaved: Option<EdgeReport>,
    /// The oldest report's run of identical server errors.
    failing: Option<drain::Failing>,
    last_exposed: Option<Vec<ExposedWorkload>>,
    last_report_at: Instant,
}

impl std::fmt::Debug for Uploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Uploader")
            .field("outbox", &self.outbox)
            .field("client", &self.client)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Uploader {
    pub fn new(outbox: Outbox, client: CloudClient, config: UploaderConfig) -> Self {
        let stats = Arc::new(UploadStats::default());
        if let Ok(n) = outbox.len() {
            stats.pending.store(n as u64, Ordering::Relaxed);
        }
        Self {
            outbox,
            client,
            config,
            stats,
            unsaved: None,
            failing: None,
            last_exposed: None,
            last_report_at: Instant::now(),
        }
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
                        info!(
                            failed_attempts = failures,
                            "the cloud is reachable again; outbox drained"
                        );
                    }
                    failures = 0;
                    retry_at = None;
                }
                Drained::Retry { retry_after } => {
                    let delay = self
                        .config
                        .backoff
                        .delay(failures)
                        .max(retry_after.unwrap_or_default().min(self.config.backoff.cap));
                    failures = failures.saturating_add(1);
                    info!(
                        delay_ms = delay.as_millis() as u64,
                        failed_attempts = failures,
                        pending = self.pending(),
                        "backing off before the next attempt"
                    );
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
            let due = self
                .config
                .exposed_refresh
                .is_some_and(|every| self.last_report_at.elapsed() >= every);
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

    /// Fits the report to the cloud's limits (see [`model::report::fit`]) and stores its parts.
    /// A part the outbox cannot store (a full disk) is kept in memory with those after it, and
    /// joins the next report; past [`MAX_UNSAVED_EDGES`] the least recently seen edges go.
    fn store(&mut self, mut report: EdgeReport) {
        if let Some(earlier) = self.unsaved.take() {
            // Never stored nor sent, so its edges can join the newer report.
            report.edges =
                merge_edges(earlier.edges.into_iter().chain(std::mem::take(&mut report.edges)));
        }
        let Fitted { reports, trimmed_entries, dropped } = fit(report, Utc::now(), Uuid::new_v4);
        if trimmed_entries > 0 {
            self.stats.trimmed_entries.fetch_add(trimmed_entries as u64, Ordering::Relaxed);
            warn!(trimmed_entries, "edges carried more ports, addresses, actions, paths or topics than a report may; the alphabetically first were kept");
        }
        if !dropped.is_empty() {
            self.stats.dropped_edges.fetch_add(dropped.len() as u64, Ordering::Relaxed);
            error!(dropped = dropped.len(), first = %dropped[0], "left edges out of the report: the cloud would refuse them");
        }
        let parts = reports.len();
        let mut reports = reports.into_iter();
        while let Some(part) = reports.next() {
            if let Err(e) = self.outbox.push(&part) {
                let left: Vec<EdgeReport> = std::iter::once(part).chain(reports).collect();
                let edges: usize = left.iter().map(|r| r.edges.len()).sum();
                error!(edges, error = %e, "could not store the report in the outbox; keeping it in memory and retrying");
                self.keep_unsaved(left);
                return;
            }
            let pending = self.pending();
            debug!(report_id = %part.report_id, edges = part.edges.len(), parts, pending, "report queued");
        }
    }

    fn keep_unsaved(&mut self, left: Vec<EdgeReport>) {
        let Some(newest) = left.last().map(|r| EdgeReport { edges: Vec::new(), ..r.clone() })
        else {
            return;
        };
        let mut edges = merge_edges(left.into_iter().flat_map(|r| r.edges));
        if edges.len() > MAX_UNSAVED_EDGES {
            edges.sort_by_key(|e| std::cmp::Reverse(e.last_seen));
            let dropped = edges.len() - MAX_UNSAVED_EDGES;
            edges.truncate(MAX_UNSAVED_EDGES);
            self.stats.dropped_edges.fetch_add(dropped as u64, Ordering::Relaxed);
            error!(
                dropped,
                kept = MAX_UNSAVED_EDGES,
                "the outbox has not been writable for long: DROPPED the least recently seen edges held in memory; free the outbox volume"
            );
        }
        self.unsaved = Some(EdgeReport { edges, ..newest });
    }

    /// Re-counts the outbox, updating the `pending` counter.
    pub(crate) fn pending(&self) -> u64 {
        match self.outbox.len() {
            Ok(n) => {
                self.stats.pending.store(n as u64, Ordering::Relaxed);
                n as u64
            }
            Err(_) => self.stats.pending.load(Ordering::Relaxed),
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
        assert!(
            delays.iter().any(|d| *d < Duration::from_secs(30))
                && delays.iter().any(|d| *d > Duration::from_secs(30)),
            "spread over the range"
        );
    }
}
