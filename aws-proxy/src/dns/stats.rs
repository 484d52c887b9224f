//! What the server has done: counters shared with a metrics endpoint.

use std::sync::atomic::{AtomicU64, Ordering};

/// The live counters behind [`DnsServer::stats`], shareable with a metrics endpoint.
#[derive(Debug, Default)]
pub struct DnsStats {
    pub(super) answered_aws: AtomicU64,
    pub(super) forwarded: AtomicU64,
    pub(super) servfail: AtomicU64,
    pub(super) formerr: AtomicU64,
    pub(super) dropped: AtomicU64,
}

impl DnsStats {
    pub fn snapshot(&self) -> DnsStatsSnapshot {
        DnsStatsSnapshot {
            answered_aws: self.answered_aws.load(Ordering::Relaxed),
            forwarded: self.forwarded.load(Ordering::Relaxed),
            servfail: self.servfail.load(Ordering::Relaxed),
            formerr: self.formerr.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

/// What the server has done since it started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStatsSnapshot {
    /// Queries for amazonaws.com names answered here: the proxy's address, or NODATA for other
    /// types.
    pub answered_aws: u64,
    /// Queries answered with an upstream's response, whatever its code (NXDOMAIN, SERVFAIL...).
    pub forwarded: u64,
    /// SERVFAIL made here: no upstream answered within the deadline, or the proxy's DNS name did
    /// not resolve.
    pub servfail: u64,
    /// Malformed queries answered with FORMERR.
    pub formerr: u64,
    /// Packets not answered: shorter than a DNS header, responses rather than queries, or over the
    /// in-flight limits.
    pub dropped: u64,
}
