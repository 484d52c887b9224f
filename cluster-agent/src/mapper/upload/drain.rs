//! Draining the outbox oldest first, and what to do with a report that blocks it.
//!
//! A report the cloud refuses for good (a 4xx other than 401, 404, 405, 408 and 429) is set
//! aside as `*.rejected` at once. A report the cloud fails on (a 500) is retried with backoff,
//! since the cloud may be failing on everything; but once it has failed
//! [`super::UploaderConfig::set_aside_after`] times in a row with the same answer, the report
//! behind it is tried: if the cloud takes that one and then fails on this one once more, the
//! same way, the failure is this report's own (a value the cloud cannot store), so it is set
//! aside as `*.failed` and the queue moves on. If the next report fails too, the cloud is
//! failing, and nothing is set aside.

use std::sync::atomic::Ordering;
use std::time::Duration;

use model::EdgeReport;
use tracing::{error, info, warn};
use uuid::Uuid;

use super::{SendOutcome, Uploader};

/// The result of one [`Uploader::drain`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Drained {
    /// The outbox is empty.
    Empty,
    /// Delivery failed; everything pending was kept. `retry_after` is the cloud's request, if any.
    Retry { retry_after: Option<Duration> },
}

/// The oldest report's run of identical server errors.
#[derive(Debug)]
pub(super) struct Failing {
    report_id: Uuid,
    reason: String,
    attempts: u32,
}

/// How a report left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settled {
    Acknowledged,
    Rejected,
}

/// What trying the report behind a failing one showed.
enum Probe {
    /// The cloud took it: the failing report is at fault.
    Taken,
    /// No report behind it, or the cloud failed on that one too.
    Inconclusive,
}

impl Uploader {
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
            match self.deliver(&report).await {
                Ok(_) => {}
                Err(SendOutcome::ServerError { reason, retry_after }) => {
                    if self.failed_again(report_id, &reason)
                        && matches!(self.probe_behind(report_id).await, Probe::Taken)
                    {
                        // Once more now that the cloud is seen working: a failure that has just
                        // cleared up is not this report's.
                        match self.deliver(&report).await {
                            Ok(_) => continue,
                            Err(SendOutcome::ServerError { reason: again, .. })
                                if again == reason =>
                            {
                                self.set_aside(report_id, edges, &reason);
                                continue;
                            }
                            Err(_) => return Drained::Retry { retry_after },
                        }
                    }
                    let pending = self.pending();
                    warn!(report_id = %report_id, edges, pending, reason, "the cloud failed on the report; keeping it and everything behind it");
                    return Drained::Retry { retry_after };
                }
                Err(SendOutcome::Retry { reason, retry_after }) => {
                    let pending = self.pending();
                    warn!(report_id = %report_id, edges, pending, reason, "could not deliver the report; keeping it and everything behind it");
                    return Drained::Retry { retry_after };
                }
                Err(_) => return Drained::Retry { retry_after: None },
            }
        }
    }

    /// Sends one report and handles the answers that settle it: acknowledged (removed from the
    /// outbox) or rejected for good (set aside). Anything to retry is handed back.
    async fn deliver(&mut self, report: &EdgeReport) -> Result<Settled, SendOutcome> {
        let report_id = report.report_id;
        let edges = report.edges.len();
        let outcome = match self.client.send(report).await {
            Ok(outcome) => outcome,
            Err(e) => SendOutcome::Rejected(e.to_string()),
        };
        match outcome {
            SendOutcome::Accepted | SendOutcome::AlreadyApplied => {
                if let Err(e) = self.outbox.ack(report_id) {
                    error!(report_id = %report_id, error = %e, "the cloud has the report but it could not be removed from the outbox");
                    return Err(SendOutcome::Retry { reason: e.to_string(), retry_after: None });
                }
                if self.failing.as_ref().is_some_and(|f| f.report_id == report_id) {
                    self.failing = None;
                }
                let pending = self.pending();
                if outcome == SendOutcome::Accepted {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                    info!(report_id = %report_id, edges, pending, "report delivered");
                } else {
                    self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    info!(report_id = %report_id, edges, pending, "report was already applied (an acknowledgement had been lost); removed from the outbox");
                }
                Ok(Settled::Acknowledged)
            }
            SendOutcome::Rejected(reason) => {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                if let Err(e) = self.outbox.reject(report_id, &reason) {
                    error!(report_id = %report_id, error = %e, "could not set the rejected report aside");
                    return Err(SendOutcome::Retry { reason: e.to_string(), retry_after: None });
                }
                let pending = self.pending();
                error!(report_id = %report_id, edges, pending, reason, "the cloud rejected the report for good; set aside, continuing with the next");
                Ok(Settled::Rejected)
            }
            retry @ (SendOutcome::Retry { .. } | SendOutcome::ServerError { .. }) => {
                self.stats.retries.fetch_add(1, Ordering::Relaxed);
                Err(retry)
            }
        }
    }

    /// Counts a server error of the oldest report; whether it has now failed the same way often
    /// enough to try the report behind it.
    fn failed_again(&mut self, report_id: Uuid, reason: &str) -> bool {
        let failing = match self.failing.take() {
            Some(f) if f.report_id == report_id && f.reason == reason => {
                Failing { attempts: f.attempts.saturating_add(1), ..f }
            }
            _ => Failing { report_id, reason: reason.to_owned(), attempts: 1 },
        };
        let due = failing.attempts >= self.config.set_aside_after.max(1);
        self.failing = Some(failing);
        due
    }

    /// Tries the report right behind `report_id`.
    async fn probe_behind(&mut self, report_id: Uuid) -> Probe {
        let next = match self.outbox.next_after(report_id) {
            Ok(Some(next)) => next,
            Ok(None) => return Probe::Inconclusive,
            Err(e) => {
                error!(error = %e, "cannot read the outbox");
                return Probe::Inconclusive;
            }
        };
        info!(failing = %report_id, next = %next.report_id, "the cloud keeps failing on the oldest report; trying the one behind it");
        match self.deliver(&next).await {
            Ok(Settled::Acknowledged) => Probe::Taken,
            Ok(Settled::Rejected) | Err(_) => Probe::Inconclusive,
        }
    }

    fn set_aside(&mut self, report_id: Uuid, edges: usize, reason: &str) {
        let attempts = self.failing.take().map_or(0, |f| f.attempts);
        if let Err(e) = self.outbox.set_aside_failed(report_id) {
            error!(report_id = %report_id, error = %e, "could not set the failing report aside");
            return;
        }
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        error!(
            report_id = %report_id,
            edges,
            attempts,
            reason,
            outbox = %self.outbox.dir().display(),
            "REPORT SET ASIDE: the cloud failed on it every time while the report behind it was accepted, so it holds something the cloud cannot store; \
             it is kept as <sequence>-{report_id}.json.failed in the outbox: report the cloud's error, and rename the file back to .json to send it again once the cloud is fixed"
        );
    }
}
