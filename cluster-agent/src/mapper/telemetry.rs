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
    pub fn ready(&self) -> bool {
        self.watches.ready()
    }
}

/// How many Kubernetes watchers there are, and how many have finished their first list.
#[derive(Debug, Default)]
pub struct WatchProgress {
    pub total: AtomicUsize,
    pub synced: AtomicUsize,
}

impl WatchProgress {
    pub fn ready(&self) -> bool {
        let total = self.total.load(Ordering::Relaxed);
        total > 0 && self.synced.load(Ordering::Relaxed) >= total
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
    /// 1 when istiod was found at the last round.
    pub control_plane: AtomicU64,
    /// Answers past `max_body_bytes`.
    pub oversized: AtomicU64,
}
