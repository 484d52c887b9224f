//! Keeping the outbox within its limits: merging the oldest pending reports (after the first,
//! which may be in flight) into one that the cloud still accepts, and dropping the oldest only
//! when merging cannot help. See the module documentation of [`super`].

use std::sync::atomic::Ordering;

use model::limits::{MAX_EDGES_PER_REPORT, MAX_LIST_ENTRIES_PER_REPORT};
use model::report::fit::{edge_entries, edge_within_limits};
use model::{merge_edges, Edge, EdgeReport};
use tracing::{error, warn};
use uuid::Uuid;

use super::{
    file_name, Entry, Journal, Outbox, OutboxError, Result, CORRUPT_SUFFIX, JOURNAL,
    MAX_MERGED_BYTES,
};

impl Outbox {
    pub(super) fn enforce_limits(&mut self) -> Result<()> {
        loop {
            let entries = self.scan()?;
            let bytes: u64 = entries.iter().map(|e| e.size).sum();
            if entries.len() <= self.limits.max_reports && bytes <= self.limits.max_bytes {
                return Ok(());
            }
            if entries.len() <= 1 {
                warn!(
                    bytes,
                    max_bytes = self.limits.max_bytes,
                    "a single pending report is larger than the outbox limit; keeping it"
                );
                return Ok(());
            }
            if self.compact(&entries)? {
                continue;
            }
            let oldest = &entries[0];
            let edges = self.read(oldest).map(|r| r.edges.len()).unwrap_or(0);
            self.remove(&oldest.name)?;
            self.sync_dir();
            let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            self.stats.dropped_edges.fetch_add(edges as u64, Ordering::Relaxed);
            error!(
                report_id = %oldest.id,
                edges,
                dropped_total = dropped,
                pending = entries.len() - 1,
                bytes,
                max_reports = self.limits.max_reports,
                max_bytes = self.limits.max_bytes,
                "OUTBOX FULL: DROPPED the oldest report, its edges are lost; the cloud has been unreachable too long or the limits are too small"
            );
        }
    }

    /// Merges the oldest reports after the first into one. Returns whether anything changed.
    fn compact(&mut self, entries: &[Entry]) -> Result<bool> {
        let candidates = &entries[1..];
        let want = (candidates.len() / 2).max(2);
        let mut taken: Vec<&Entry> = Vec::new();
        let mut edges: Vec<Edge> = Vec::new();
        let mut newest: Option<EdgeReport> = None;
        let mut input_bytes = 0u64;
        for entry in candidates.iter().take(want) {
            if !taken.is_empty() && input_bytes + entry.size > MAX_MERGED_BYTES {
                break;
            }
            let report = match self.read(entry) {
                Ok(r) => r,
                Err(problem) => {
                    warn!(file = %entry.name, problem, "unreadable report in the outbox; set aside as *.corrupt");
                    self.stats.corrupt.fetch_add(1, Ordering::Relaxed);
                    self.quarantine(&entry.name, CORRUPT_SUFFIX)?;
                    return Ok(true);
                }
            };
            let trial = merge_edges(edges.iter().cloned().chain(report.edges.iter().cloned()));
            // A merge must stay a report the cloud accepts: not too many edges or list entries (half
            // of them, as `fit` leaves the other half to the exposed set), and no edge with longer
            // lists than a report may carry (else the merged report is refused).
            let too_detailed = trial.iter().any(|e| !edge_within_limits(e));
            let entries: usize = trial.iter().map(edge_entries).sum();
            if !taken.is_empty()
                && (trial.len() > MAX_EDGES_PER_REPORT
                    || entries > MAX_LIST_ENTRIES_PER_REPORT / 2
                    || too_detailed)
            {
                break;
            }
            edges = trial;
            input_bytes += entry.size;
            taken.push(entry);
            let newer = newest.as_ref().is_none_or(|n| report.generated_at >= n.generated_at);
            if newer {
                newest = Some(EdgeReport { edges: Vec::new(), ..report });
            }
        }
        let Some(newest) = newest.filter(|_| taken.len() >= 2) else { return Ok(false) };
        let merged = EdgeReport::new(Uuid::new_v4(), newest.generated_at, edges, newest.exposed);
        let name = file_name(taken[0].seq, merged.report_id);
        let bytes = serde_json::to_vec(&merged)
            .map_err(|source| OutboxError::Encode { report_id: merged.report_id, source })?;
        let journal = Journal {
            merged: name.clone(),
            replaces: taken.iter().map(|e| e.name.clone()).collect(),
        };
        let journal_bytes = serde_json::to_vec(&journal)
            .map_err(|source| OutboxError::Encode { report_id: merged.report_id, source })?;

        self.write_atomic(JOURNAL, &journal_bytes)?;
        self.write_atomic(&name, &bytes)?;
        for entry in &taken {
            self.remove(&entry.name)?;
        }
        self.sync_dir();
        self.remove(JOURNAL)?;
        self.sync_dir();

        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        self.stats.merged.fetch_add(taken.len() as u64, Ordering::Relaxed);
        warn!(
            report_id = %merged.report_id,
            merged_reports = taken.len(),
            edges = merged.edges.len(),
            pending = entries.len() - taken.len() + 1,
            "outbox over its limit: merged the oldest pending reports into one (nothing dropped)"
        );
        Ok(true)
    }
}
