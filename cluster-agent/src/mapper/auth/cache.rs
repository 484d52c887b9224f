//! Verdicts on tokens, kept a little while so the API server sees one review per token rather
//! than one per request, in a map that never grows past its capacity however many distinct
//! tokens callers invent.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct VerdictCache<K, V> {
    capacity: usize,
    entries: HashMap<K, (Instant, V)>,
}

impl<K: Eq + Hash + Clone, V: Clone> VerdictCache<K, V> {
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), entries: HashMap::new() }
    }

    /// The verdict stored for `key`, if it is younger than `ttl`.
    pub fn get(&self, key: &K, ttl: Duration) -> Option<V> {
        self.entries.get(key).filter(|(at, _)| at.elapsed() < ttl).map(|(_, v)| v.clone())
    }

    /// Stores a verdict. When full, entries older than `ttl` go first, then the oldest.
    pub fn insert(&mut self, key: K, value: V, ttl: Duration) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            self.entries.retain(|_, (at, _)| at.elapsed() < ttl);
            while self.entries.len() >= self.capacity {
                let Some(oldest) =
                    self.entries.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| k.clone())
                else {
                    break;
                };
                self.entries.remove(&oldest);
            }
        }
        self.entries.insert(key, (Instant::now(), value));
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_of_distinct_keys_never_grows_it_past_its_capacity() {
        let mut cache = VerdictCache::new(64);
        let ttl = Duration::from_secs(60);
        for i in 0..10_000u32 {
            cache.insert(i, false, ttl);
            assert!(cache.len() <= 64);
        }
        assert_eq!(cache.get(&9_999, ttl), Some(false), "the newest is kept");
        assert_eq!(cache.get(&0, ttl), None, "the oldest made room");
        assert_eq!(cache.get(&9_999, Duration::ZERO), None, "expired");
    }
}
