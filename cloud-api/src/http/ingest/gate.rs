//! How many reports the cloud works on at once, in all and per organisation. A report holds
//! its body, its parse and a database transaction while it is worked on; these caps bound what
//! that costs however many clusters send at once, and keep one tenant from taking every slot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use clap::Args;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use uuid::Uuid;

/// The numbers, as `serve` flags set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestLimits {
    /// Reports received, parsed and stored at once; more wait up to `queue_wait`, then get 503.
    pub concurrent: usize,
    /// Reports of one organisation at once; more get 429 straight away.
    pub concurrent_per_org: usize,
    pub queue_wait: Duration,
}

impl Default for IngestLimits {
    fn default() -> Self {
        Self { concurrent: 4, concurrent_per_org: 2, queue_wait: Duration::from_secs(5) }
    }
}

#[derive(Debug, Clone, Args)]
pub struct IngestArgs {
    /// Reports worked on at once (each holds its body, its parse and a transaction); more wait
    /// up to --report-queue-wait-seconds, then get 503 with Retry-After.
    #[arg(long, env = "MAX_CONCURRENT_REPORTS", default_value_t = IngestLimits::default().concurrent)]
    pub max_concurrent_reports: usize,
    /// Reports of one organisation worked on at once; more get 429 with Retry-After.
    #[arg(long, env = "MAX_CONCURRENT_REPORTS_PER_ORG", default_value_t = IngestLimits::default().concurrent_per_org)]
    pub max_concurrent_reports_per_org: usize,
    #[arg(long, env = "REPORT_QUEUE_WAIT_SECONDS", default_value_t = IngestLimits::default().queue_wait.as_secs_f64())]
    pub report_queue_wait_seconds: f64,
}

impl IngestArgs {
    pub fn limits(&self) -> anyhow::Result<IngestLimits> {
        anyhow::ensure!(
            self.max_concurrent_reports > 0,
            "--max-concurrent-reports must be at least 1"
        );
        anyhow::ensure!(
            self.max_concurrent_reports_per_org > 0,
            "--max-concurrent-reports-per-org must be at least 1"
        );
        let queue_wait =
            Duration::try_from_secs_f64(self.report_queue_wait_seconds).map_err(|_| {
                anyhow::anyhow!(
                    "--report-queue-wait-seconds must be a number of seconds, 0 or more"
                )
            })?;
        Ok(IngestLimits {
            concurrent: self.max_concurrent_reports,
            concurrent_per_org: self.max_concurrent_reports_per_org,
            queue_wait,
        })
    }
}

/// Why a report was not taken on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 429: the organisation already has this many reports in flight.
    OrgBusy(usize),
    /// 503: every slot stayed taken for the whole wait.
    Busy,
}

/// The caps in force; one per server.
pub struct IngestGate {
    limits: IngestLimits,
    slots: Arc<Semaphore>,
    per_org: Arc<Mutex<HashMap<Uuid, usize>>>,
}

/// A report's place: both caps are released when it drops.
pub struct Admitted {
    _slot: OwnedSemaphorePermit,
    _org: OrgSlot,
}

struct OrgSlot {
    per_org: Arc<Mutex<HashMap<Uuid, usize>>>,
    org: Uuid,
}

impl Drop for OrgSlot {
    fn drop(&mut self) {
        let mut per_org = self.per_org.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = per_org.get_mut(&self.org) {
            *n -= 1;
            if *n == 0 {
                per_org.remove(&self.org);
            }
        }
    }
}

impl IngestGate {
    pub fn new(limits: IngestLimits) -> Self {
        let slots = Arc::new(Semaphore::new(limits.concurrent.max(1)));
        Self { limits, slots, per_org: Arc::default() }
    }

    pub fn limits(&self) -> &IngestLimits {
        &self.limits
    }

    /// Takes a place for one report of `org`: at once or not at all for the organisation's cap,
    /// waiting up to the queue wait for the server's.
    pub async fn admit(&self, org: Uuid) -> Result<Admitted, Refusal> {
        let org_slot = {
            let mut per_org = self.per_org.lock().unwrap_or_else(PoisonError::into_inner);
            let n = per_org.entry(org).or_insert(0);
            if *n >= self.limits.concurrent_per_org {
                return Err(Refusal::OrgBusy(*n));
            }
            *n += 1;
            OrgSlot { per_org: self.per_org.clone(), org }
        };
        let slot =
            match tokio::time::timeout(self.limits.queue_wait, self.slots.clone().acquire_owned())
                .await
            {
                Ok(Ok(slot)) => slot,
                // The semaphore is never closed; treat it as busy rather than panic.
                Ok(Err(_)) | Err(_) => return Err(Refusal::Busy),
            };
        Ok(Admitted { _slot: slot, _org: org_slot })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_organisation_gets_its_share_and_the_server_its_cap() {
        let gate = IngestGate::new(IngestLimits {
            concurrent: 3,
            concurrent_per_org: 2,
            queue_wait: Duration::from_millis(20),
        });
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let a1 = gate.admit(a).await.unwrap();
        let _a2 = gate.admit(a).await.unwrap();
        assert_eq!(gate.admit(a).await.err(), Some(Refusal::OrgBusy(2)));
        let _b1 = gate.admit(b).await.unwrap();
        assert_eq!(gate.admit(c).await.err(), Some(Refusal::Busy), "the server is full");
        drop(a1);
        let _c1 = gate.admit(c).await.unwrap();
        let _a3 = gate.admit(a).await.err().expect("the server is full again");
        assert!(
            gate.per_org.lock().unwrap().get(&a) == Some(&1),
            "a refused report leaves no count behind"
        );
    }
}
