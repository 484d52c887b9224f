//! Which names a client was recently given for an address, so that a later connection to that
//! address can be named by the domain the client asked for rather than by a bare IP.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};

use crate::index::Name;
use crate::names::Interner;

/// Names kept per (client, address): a shared CDN address may answer for several.
const MAX_NAMES_PER_ADDRESS: usize = 4;

#[derive(Debug, Clone)]
pub struct DnsMemoryConfig {
    /// At most this many (client, address) pairs; past it the least recently answered is forgotten.
    pub max_entries: usize,
    /// How long past its TTL an answer still names its address. Clients keep using addresses
    /// after the TTL (connection pools, long-lived connections); every connection seen to the
    /// address extends this again.
    pub linger: TimeDelta,
}

impl Default for DnsMemoryConfig {
    fn default() -> Self {
        Self { max_entries: 100_000, linger: TimeDelta::minutes(5) }
    }
}

type ClientAddress = (IpAddr, IpAddr);

#[derive(Debug)]
struct Remembered {
    /// Most recently answered first.
    names: Vec<Name>,
    expires: DateTime<Utc>,
    /// Position in the answer order; stale queue items carry an older one.
    seq: u64,
}

#[derive(Debug)]
pub struct DnsMemory {
    config: DnsMemoryConfig,
    strings: Interner,
    entries: HashMap<ClientAddress, Remembered>,
    answer_order: VecDeque<(u64, ClientAddress)>,
    next_seq: u64,
    evictions: u64,
}

impl Default for DnsMemory {
    fn default() -> Self {
        Self::new(DnsMemoryConfig::default())
    }
}

impl DnsMemory {
    pub fn new(config: DnsMemoryConfig) -> Self {
        Self {
            config,
            strings: Interner::default(),
            entries: HashMap::new(),
            answer_order: VecDeque::new(),
            next_seq: 0,
            evictions: 0,
        }
    }

    /// `client` was told at `at` that `name` is at `address`, valid for `ttl_seconds`.
    pub fn remember(
        &mut self,
        client: IpAddr,
        address: IpAddr,
        name: &str,
        at: DateTime<Utc>,
        ttl_seconds: u32,
    ) {
        if self.config.max_entries == 0 {
            return;
        }
        let key = (client.to_canonical(), address.to_canonical());
        let expires = at + TimeDelta::seconds(i64::from(ttl_seconds)) + self.config.linger;
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        if !self.entries.contains_key(&key) {
            while self.entries.len() >= self.config.max_entries {
                self.evict_oldest();
            }
        }
        let name = self.strings.intern(name);
        let entry = self.entries.entry(key).or_insert_with(|| Remembered {
            names: Vec::new(),
            expires,
            seq,
        });
        entry.names.retain(|n| *n != name);
        entry.names.insert(0, name);
        entry.names.truncate(MAX_NAMES_PER_ADDRESS);
        entry.expires = entry.expires.max(expires);
        entry.seq = seq;
        self.answer_order.push_back((seq, key));
        if self.answer_order.len() > 2 * self.entries.len() + 1024 {
            self.compact_order();
        }
    }

    /// The names `client` was given for `address` that were still good at `at` (most recent
    /// first). Using them keeps them good for another `linger`.
    pub fn names(&mut self, client: IpAddr, address: IpAddr, at: DateTime<Utc>) -> &[Name] {
        let linger = self.config.linger;
        match self.entries.get_mut(&(client.to_canonical(), address.to_canonical())) {
            Some(entry) if at <= entry.expires => {
                entry.expires = entry.expires.max(at + linger);
                &entry.names
            }
            _ => &[],
        }
    }

    /// Forgets answers that are no longer good at `now`; returns how many.
    pub fn expire(&mut self, now: DateTime<Utc>) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, e| e.expires >= now);
        self.compact_order();
        self.strings.sweep();
        before - self.entries.len()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
        self.answer_order.clear();
        self.strings.sweep();
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Answers forgotten early because the memory was full.
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    fn evict_oldest(&mut self) {
        while let Some((seq, key)) = self.answer_order.pop_front() {
            if self.entries.get(&key).is_some_and(|e| e.seq == seq) {
                self.entries.remove(&key);
                self.evictions = self.evictions.saturating_add(1);
                return;
            }
        }
        // The order lost track (it never should); forget an arbitrary entry rather than grow.
        if let Some(key) = self.entries.keys().next().copied() {
            self.entries.remove(&key);
            self.evictions = self.evictions.saturating_add(1);
        }
    }

    fn compact_order(&mut self) {
        let mut order: Vec<(u64, ClientAddress)> =
            self.entries.iter().map(|(k, e)| (e.seq, *k)).collect();
        order.sort_unstable_by_key(|(seq, _)| *seq);
        self.answer_order = order.into();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn names_last_for_ttl_plus_linger_and_use_extends_them() {
        let mut dns =
            DnsMemory::new(DnsMemoryConfig { max_entries: 10, linger: TimeDelta::seconds(60) });
        dns.remember(
            ip("10.0.0.1"),
            ip("203.0.113.7"),
            "api.stripe.com",
            t("2026-01-01T10:00:00Z"),
            30,
        );
        assert_eq!(
            dns.names(ip("10.0.0.1"), ip("203.0.113.7"), t("2026-01-01T10:01:30Z")),
            [Name::from("api.stripe.com")]
        );
        assert!(
            dns.names(ip("10.0.0.2"), ip("203.0.113.7"), t("2026-01-01T10:00:00Z")).is_empty(),
            "another client was not told"
        );
        // The lookup at 10:01:30 extended it to 10:02:30.
        assert!(!dns
            .names(ip("10.0.0.1"), ip("203.0.113.7"), t("2026-01-01T10:02:29Z"))
            .is_empty());
        assert!(dns.names(ip("10.0.0.1"), ip("203.0.113.7"), t("2026-01-01T10:10:00Z")).is_empty());
        assert_eq!(dns.expire(t("2026-01-01T11:00:00Z")), 1);
        assert!(dns.is_empty());
    }

    #[test]
    fn a_full_memory_forgets_the_oldest_answer_and_counts_it() {
        let mut dns =
            DnsMemory::new(DnsMemoryConfig { max_entries: 2, linger: TimeDelta::seconds(60) });
        let at = t("2026-01-01T10:00:00Z");
        dns.remember(ip("10.0.0.1"), ip("203.0.113.1"), "a.example.com", at, 60);
        dns.remember(ip("10.0.0.1"), ip("203.0.113.2"), "b.example.com", at, 60);
        dns.remember(ip("10.0.0.1"), ip("203.0.113.1"), "a2.example.com", at, 60);
        dns.remember(ip("10.0.0.1"), ip("203.0.113.3"), "c.example.com", at, 60);
        assert_eq!(dns.len(), 2);
        assert_eq!(dns.evictions(), 1);
        assert!(
            dns.names(ip("10.0.0.1"), ip("203.0.113.2"), at).is_empty(),
            "b was answered longest ago"
        );
        assert_eq!(
            dns.names(ip("10.0.0.1"), ip("203.0.113.1"), at),
            [Name::from("a2.example.com"), Name::from("a.example.com")]
        );
    }
}
