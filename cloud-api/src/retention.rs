//! The background pruner: every `--retention-interval-seconds`, for each organisation, deletes
//! edges last seen longer ago than the organisation's retention and report ids older than the
//! replay window. It walks the organisation's rows once in primary-key order, looking at
//! `--retention-batch` rows per short transaction with a pause in between, so ingest and reads
//! never wait long behind it and no row is looked at twice in a run. Counted in `/metrics`. Several replicas may run
//! it at once: deleting what another replica deleted is a no-op.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::http::AppState;
use crate::store::{Cursor, StoreError};

/// How the pruner runs and how long report ids are remembered.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    /// Time between pruning runs.
    pub interval: Duration,
    /// Rows deleted per transaction.
    pub batch: i64,
    /// Pause between two batches.
    pub pause: Duration,
    /// A report generated longer ago than this is refused (422): its id may have been pruned,
    /// so applying it could count it twice.
    pub replay_window: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            batch: 1000,
            pause: Duration::from_millis(50),
            replay_window: Duration::from_secs(30 * 24 * 3600),
        }
    }
}

/// Report ids are kept this much longer than the replay window, so that a cloud-api clock
/// behind the database's by less than this cannot accept a report whose id was pruned.
pub const REPLAY_MARGIN: Duration = Duration::from_secs(24 * 3600);

impl RetentionConfig {
    /// Whether a report generated at `generated_at` is older than the replay window at `now`.
    pub fn too_old(&self, generated_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let window = TimeDelta::from_std(self.replay_window).unwrap_or(TimeDelta::MAX);
        now.checked_sub_signed(window).is_some_and(|earliest| generated_at < earliest)
    }
}

/// What one pruning run deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pruned {
    pub edges: u64,
    pub reports: u64,
}

/// Runs the pruner until the task is dropped.
pub async fn run(state: AppState) {
    let mut tick = tokio::time::interval(state.config.retention.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match prune_once(&state).await {
            Ok(pruned) => {
                state.metrics.retention_run("ok");
                if pruned != Pruned::default() {
                    tracing::info!(
                        edges = pruned.edges,
                        reports = pruned.reports,
                        "retention: pruned"
                    );
                }
            }
            Err(e) => {
                state.metrics.retention_run("failed");
                tracing::warn!(error = %e, "retention: pruning failed; retrying at the next interval");
            }
        }
    }
}

/// One pass over every organisation.
pub async fn prune_once(state: &AppState) -> Result<Pruned, StoreError> {
    let mut pruned = Pruned::default();
    for org in state.store.retention_orgs().await? {
        let (edges, reports) = prune_org(state, org).await?;
        pruned.edges += edges;
        pruned.reports += reports;
    }
    Ok(pruned)
}

async fn prune_org(state: &AppState, org: Uuid) -> Result<(u64, u64), StoreError> {
    let cfg = &state.config.retention;
    let batch = cfg.batch.max(1);
    // One walk over the organisation's edges in primary-key order, `batch` rows a transaction.
    let mut edges = 0;
    let mut from = Cursor::START;
    loop {
        let done = state.store.prune_edges_batch(org, &from, batch).await?;
        edges += done.deleted;
        state.metrics.retention_edges_pruned.inc_by(done.deleted);
        let Some(next) = done.next else { break };
        from = next;
        tokio::time::sleep(cfg.pause).await;
    }
    let keep = cfg.replay_window.saturating_add(REPLAY_MARGIN).as_secs_f64();
    let mut reports = 0;
    let mut from = Cursor::START;
    loop {
        let done = state.store.prune_reports_batch(org, &from, keep, batch).await?;
        reports += done.deleted;
        state.metrics.retention_reports_pruned.inc_by(done.deleted);
        let Some(next) = done.next else { break };
        from = next;
        tokio::time::sleep(cfg.pause).await;
    }
    Ok((edges, reports))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_older_than_the_window_are_too_old() {
        let cfg =
            RetentionConfig { replay_window: Duration::from_secs(3600), ..Default::default() };
        let now = Utc::now();
        assert!(!cfg.too_old(now - TimeDelta::minutes(59), now));
        assert!(cfg.too_old(now - TimeDelta::minutes(61), now));
        assert!(!cfg.too_old(now + TimeDelta::hours(5), now));
        let forever = RetentionConfig { replay_window: Duration::MAX, ..Default::default() };
        assert!(!forever.too_old(DateTime::<Utc>::MIN_UTC, now));
    }
}
