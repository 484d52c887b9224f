//! Limits on credential checks: token buckets per caller address and per client ID, and caps on
//! how many checks run at once. What an unauthenticated caller can make the server do is
//! bounded by these, whatever it sends.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, SemaphorePermit};

/// The numbers, as `serve` flags set them.
#[derive(Debug, Clone)]
pub struct AuthLimits {
    /// Credential checks per second per caller address (every token request; API tokens only
    /// when they fail), refilled continuously...
    pub per_address_per_second: f64,
    /// ...into a bucket this big.
    pub per_address_burst: u32,
    /// Failed token requests per minute per client ID (also its burst).
    pub client_failures_per_minute: u32,
    /// Token requests being checked at once; more wait up to `queue_wait`, then get 503.
    pub concurrency: usize,
    pub queue_wait: Duration,
    /// argon2id checks of hashes from before keyed hashing, at once (19 MiB each).
    pub legacy_concurrency: usize,
    /// Callers and client IDs remembered at most (each bucket is a few dozen bytes); when full,
    /// new ones are refused until old ones refill.
    pub max_tracked: usize,
    /// Take the caller's address from `X-Forwarded-For` (the last address, the one the proxy in
    /// front of us added) instead of the peer: only behind a proxy that sets it.
    pub trust_forwarded_for: bool,
}

impl Default for AuthLimits {
    fn default() -> Self {
        Self {
            per_address_per_second: 10.0,
            per_address_burst: 100,
            client_failures_per_minute: 10,
            concurrency: 32,
            queue_wait: Duration::from_secs(1),
            legacy_concurrency: 2,
            max_tracked: 100_000,
            trust_forwarded_for: false,
        }
    }
}

/// Why a check was not even tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 429: this caller or client ID has used its budget; retry after this long.
    TooMany { retry_after: Duration },
    /// 503: too many checks in flight.
    Busy,
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Token buckets keyed by `K`, bounded in number.
pub struct RateLimiter<K> {
    per_second: f64,
    burst: f64,
    max_keys: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Eq + Hash + Clone> RateLimiter<K> {
    pub fn new(per_second: f64, burst: u32, max_keys: usize) -> Self {
        Self {
            per_second: per_second.max(f64::MIN_POSITIVE),
            burst: f64::from(burst.max(1)),
            max_keys,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refill(&self, bucket: &mut Bucket, now: Instant) {
        let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.per_second).min(self.burst);
        bucket.at = now;
    }

    fn retry_after(&self, bucket: &Bucket) -> Duration {
        Duration::from_secs_f64(((1.0 - bucket.tokens) / self.per_second).clamp(1.0, 3600.0).ceil())
    }

    /// Runs `f` on `key`'s bucket (refilled to now), making room for a new key if needed.
    fn with_bucket<T>(&self, key: &K, f: impl FnOnce(&mut Bucket) -> T, full: T) -> T {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if !buckets.contains_key(key) && buckets.len() >= self.max_keys {
            // Forget the callers whose buckets have refilled: they are as good as new.
            let (per_second, burst) = (self.per_second, self.burst);
            buckets.retain(|_, b| {
                b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * per_second < burst
            });
            if buckets.len() >= self.max_keys {
                return full;
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket { tokens: self.burst, at: now });
        self.refill(bucket, now);
        f(bucket)
    }

    fn refused(&self) -> Result<(), Refusal> {
        Err(Refusal::TooMany { retry_after: Duration::from_secs(1) })
    }

    /// Whether `key` has a whole token left, without using it.
    pub fn check(&self, key: &K) -> Result<(), Refusal> {
        self.with_bucket(
            key,
            |b| {
                if b.tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(Refusal::TooMany { retry_after: self.retry_after(b) })
                }
            },
            self.refused(),
        )
    }

    /// Uses one token of `key`'s, if it has one.
    pub fn take(&self, key: &K) -> Result<(), Refusal> {
        self.with_bucket(
            key,
            |b| {
                if b.tokens >= 1.0 {
                    b.tokens -= 1.0;
                    Ok(())
                } else {
                    Err(Refusal::TooMany { retry_after: self.retry_after(b) })
                }
            },
            self.refused(),
        )
    }

    /// Uses one token of `key`'s, never going below zero (after the fact: a failure).
    pub fn charge(&self, key: &K) {
        self.with_bucket(key, |b| b.tokens = (b.tokens - 1.0).max(0.0), ());
    }

    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The caller as rate limits see it: an IPv4 address, or an IPv6 /64 (what one host gets).
pub fn caller_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Everything that bounds credential checks, shared by every request.
pub struct AuthGuard {
    pub limits: AuthLimits,
    pub per_address: RateLimiter<Option<IpAddr>>,
    pub client_failures: RateLimiter<String>,
    in_flight: Semaphore,
    legacy: Semaphore,
}

impl AuthGuard {
    pub fn new(limits: AuthLimits) -> Self {
        Self {
            per_address: RateLimiter::new(
                limits.per_address_per_second,
                limits.per_address_burst,
                limits.max_tracked,
            ),
            client_failures: RateLimiter::new(
                f64::from(limits.client_failures_per_minute) / 60.0,
                limits.client_failures_per_minute,
                limits.max_tracked,
            ),
            in_flight: Semaphore::new(limits.concurrency.max(1)),
            legacy: Semaphore::new(limits.legacy_concurrency.max(1)),
            limits,
        }
    }

    /// A place among the token requests being checked, waiting at most `queue_wait`.
    pub async fn admit(&self) -> Result<SemaphorePermit<'_>, Refusal> {
        match tokio::time::timeout(self.limits.queue_wait, self.in_flight.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Refusal::Busy),
        }
    }

    /// A place among the argon2id checks (they are rare: each old hash is checked once).
    pub async fn admit_legacy(&self) -> Result<SemaphorePermit<'_>, Refusal> {
        match tokio::time::timeout(Duration::from_secs(10), self.legacy.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(Refusal::Busy),
        }
    }
}

impl Default for AuthGuard {
    fn default() -> Self {
        Self::new(AuthLimits::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refuses_with_a_retry_time() {
        let limiter = RateLimiter::new(1.0, 3, 10);
        for _ in 0..3 {
            assert_eq!(limiter.take(&"a"), Ok(()));
        }
        match limiter.take(&"a") {
            Err(Refusal::TooMany { retry_after }) => assert!(
                retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(2)
            ),
            other => panic!("expected a refusal, got {other:?}"),
        }
        assert_eq!(limiter.take(&"b"), Ok(()), "another key has its own bucket");
        assert!(limiter.check(&"a").is_err());
    }

    #[test]
    fn charges_count_only_after_the_fact_and_never_go_below_zero() {
        let limiter = RateLimiter::new(0.001, 2, 10);
        assert_eq!(limiter.check(&"c"), Ok(()));
        limiter.charge(&"c");
        limiter.charge(&"c");
        limiter.charge(&"c");
        assert!(limiter.check(&"c").is_err());
    }

    #[test]
    fn the_number_of_keys_is_bounded() {
        let limiter = RateLimiter::new(0.001, 1, 3);
        for key in 0..3 {
            assert_eq!(limiter.take(&key), Ok(()));
        }
        assert!(
            limiter.take(&99).is_err(),
            "a fourth caller is refused while the others are still limited"
        );
        assert_eq!(limiter.len(), 3);
        let refilling = RateLimiter::new(1_000_000.0, 1, 3);
        for key in 0..10 {
            assert_eq!(refilling.take(&key), Ok(()), "refilled buckets make room");
        }
    }

    #[test]
    fn ipv6_callers_are_limited_per_64() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().unwrap();
        assert_eq!(caller_key(a), caller_key(b));
        let v4: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(caller_key(v4), "192.0.2.7".parse::<IpAddr>().unwrap());
    }

    #[tokio::test]
    async fn the_checks_in_flight_are_capped() {
        let guard = AuthGuard::new(AuthLimits {
            concurrency: 1,
            queue_wait: Duration::from_millis(20),
            ..Default::default()
        });
        let first = guard.admit().await.unwrap();
        assert_eq!(guard.admit().await.err(), Some(Refusal::Busy));
        drop(first);
        assert!(guard.admit().await.is_ok());
    }
}
