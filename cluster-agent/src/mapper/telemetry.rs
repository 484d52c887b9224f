//! The mapper's own counters: written by its watchers ([`super::watch`], [`super::kafka`],
//! [`super::istio`]), read by its API for `/readyz` and `/metrics`. What the observations said
//! is in [`mapper_core::MapperStats`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub struct Telemetry {
    pub watches: WatchProgress,
    pub kafka: KafkaWatchStats,
    pub istio: IstioWatchStats,
}

impl Telemetry {
    /// Whether every Kubernetes watch has finished its first list.
    pub fn listed(&self) -> bool {
        let total = self.watches.total.load(Ordering::Relaxed);
        total > 0 && self.watches.synced.load(Ordering::Relaxed) >= total
    }

    /// Why the mapper is not ready, if it is not: `/readyz` answers 503 with it.
    pub fn not_ready(&self) -> Option<String> {
        self.watches.not_ready()
    }
}

/// How many Kubernetes watchers there are, how many have finished their first list, and how
/// many are broken now (failed, and neither delivered an event nor re-listed since).
#[derive(Debug, Default)]
pub struct WatchProgress {
    pub total: AtomicUsize,
    pub synced: AtomicUsize,
    pub broken: AtomicUsize,
}

impl WatchProgress {
    pub fn not_ready(&self) -> Option<String> {
        let total = self.total.load(Ordering::Relaxed);
        let synced = self.synced.load(Ordering::Relaxed);
        let broken = self.broken.load(Ordering::Relaxed);
        if total == 0 || synced < total {
            Some(format!(
                "{synced} of {total} Kubernetes watches have finished their first list; retry"
            ))
        } else if broken > 0 {
            Some(format!(
                "{broken} of {total} Kubernetes watches are broken (is the API server reachable? \
                 the mapper's log says why); pods made meanwhile are named once they resume"
            ))
        } else {
            None
        }
    }
}

/// The Kafka watcher's counters.
#[derive(Debug, Default)]
pub struct KafkaWatchStats {
    /// Broker log streams (pods and files) followed now.
    pub streams: AtomicU64,
    /// Log streams opened again after they ended or failed.
    pub reconnects: AtomicU64,
    /// Lines left unfinished by a disconnection (read again in full after it).
    pub cut_lines: AtomicU64,
    /// Lines received again after a reconnection and not counted twice.
    pub replayed_lines: AtomicU64,
    /// Lines longer than [`super::kafka::MAX_LINE_BYTES`], dropped.
    pub overlong_lines: AtomicU64,
    /// Log files replaced (rotated) or truncated under the watcher.
    pub file_rotations: AtomicU64,
    pub file_truncations: AtomicU64,
    /// Errors opening or reading a log (the API refused, a file unreadable); retried.
    pub errors: AtomicU64,
}

/// The Istio watcher's counters.
#[derive(Debug, Default)]
pub struct IstioWatchStats {
    pub rounds: AtomicU64,
    /// Sidecars in the last round.
    pub sidecars: AtomicU64,
    /// Ambient proxies (ztunnel, waypoints) in the last round.
    pub ambient_proxies: AtomicU64,
    /// 1 when istiod was found at the last round.
    pub control_plane: AtomicU64,
    /// Answers past `max_body_bytes`.
    pub oversized: AtomicU64,
}
