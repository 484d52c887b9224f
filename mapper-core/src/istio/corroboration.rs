//! What clients' own sidecars say they called, to check servers' sidecars against.
//!
//! A server's sidecar reports calls with the client's name in a label (`source_workload`),
//! which is only the server's word. The client's sidecar reports the same calls from its side
//! (`reporter="source"`), under its own identity: the mapper knows which pod it scraped. A
//! server's series is believed when some sidecar of the client's workload has a series of calls
//! to the server's workload (to the same path, when the client's side records paths). Claims
//! last while their sidecars keep reporting them: one round without them and they are gone.

use std::collections::{HashMap, HashSet};

use crate::index::Name;

/// Claimed (client, server) workload pairs at most; more are not kept (and then not believed).
pub const MAX_CLAIMED_PAIRS: usize = 50_000;
/// Claimed paths over all pairs at most.
pub const MAX_CLAIMED_PATHS: usize = 100_000;

/// A client workload and the server workload it says it called, each `(namespace, name)`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Pair {
    pub client: (Name, Name),
    pub server: (Name, Name),
}

#[derive(Debug, Default)]
struct Claim {
    /// The latest round it was made in.
    round: u64,
    /// Paths the client's side recorded.
    paths: HashSet<Box<str>>,
    /// The client's side has series to this server without a path (Istio's default metric):
    /// it vouches for the pair, not for paths.
    pathless: bool,
}

/// Clients' claims of the last two rounds.
#[derive(Debug, Default)]
pub struct Claims {
    round: u64,
    claims: HashMap<Pair, Claim>,
    paths: usize,
    /// Claims not kept for want of room.
    refused: u64,
}

/// What a client's series says about its path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimedPath<'a> {
    Path(&'a str),
    /// No path label (Istio's default metric).
    None,
    /// A path label that is not a usable path: it vouches for the pair only.
    Unusable,
}

impl Claims {
    /// A new round: claims not renewed in this one or the last are forgotten.
    pub fn begin_round(&mut self) {
        self.round = self.round.saturating_add(1);
        let oldest = self.round.saturating_sub(1);
        let mut dropped_paths = 0;
        self.claims.retain(|_, claim| {
            let keep = claim.round >= oldest;
            if !keep {
                dropped_paths += claim.paths.len();
            }
            keep
        });
        self.paths -= dropped_paths;
    }

    /// A client's sidecar (the client named by the pod scraped) has calls to `pair.server`.
    pub fn note(&mut self, pair: Pair, path: ClaimedPath<'_>) {
        let full = self.claims.len() >= MAX_CLAIMED_PAIRS;
        let claim = match self.claims.get_mut(&pair) {
            Some(claim) => claim,
            None if full => {
                self.refused = self.refused.saturating_add(1);
                return;
            }
            None => self.claims.entry(pair).or_default(),
        };
        claim.round = self.round;
        match path {
            ClaimedPath::Path(path) if !claim.paths.contains(path) => {
                if self.paths >= MAX_CLAIMED_PATHS {
                    self.refused = self.refused.saturating_add(1);
                } else {
                    claim.paths.insert(path.into());
                    self.paths += 1;
                }
            }
            ClaimedPath::None => claim.pathless = true,
            ClaimedPath::Path(_) | ClaimedPath::Unusable => {}
        }
    }

    /// Whether the client's side vouches for the server's series: a call to `path` (or, for
    /// `None`, any call to the server).
    pub fn vouch(&self, pair: &Pair, path: Option<&str>) -> bool {
        self.claims.get(pair).is_some_and(|claim| match path {
            None => true,
            Some(path) => claim.pathless || claim.paths.contains(path),
        })
    }

    /// Claims not kept for want of room, so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(client: &str, server: &str) -> Pair {
        Pair { client: ("shop".into(), client.into()), server: ("shop".into(), server.into()) }
    }

    #[test]
    fn a_claim_vouches_for_its_pair_and_paths_for_two_rounds() {
        let mut claims = Claims::default();
        claims.begin_round();
        claims.note(pair("web", "cart"), ClaimedPath::Path("/api/cart"));
        assert!(claims.vouch(&pair("web", "cart"), Some("/api/cart")));
        assert!(
            claims.vouch(&pair("web", "cart"), None),
            "calls without a path: the pair is enough"
        );
        assert!(
            !claims.vouch(&pair("web", "cart"), Some("/admin/export")),
            "a path the client never called"
        );
        assert!(!claims.vouch(&pair("cart", "web"), None), "the other way round");

        claims.begin_round();
        assert!(
            claims.vouch(&pair("web", "cart"), Some("/api/cart")),
            "a sidecar whose scrape failed once still vouches"
        );
        claims.begin_round();
        assert!(!claims.vouch(&pair("web", "cart"), None), "gone once not renewed");
    }

    #[test]
    fn a_client_that_records_no_paths_vouches_for_any_path_of_the_pair() {
        let mut claims = Claims::default();
        claims.begin_round();
        claims.note(pair("web", "catalog"), ClaimedPath::None);
        claims.note(pair("web", "cart"), ClaimedPath::Unusable);
        assert!(claims.vouch(&pair("web", "catalog"), Some("/any")));
        assert!(
            !claims.vouch(&pair("web", "cart"), Some("/any")),
            "an unusable path vouches for the pair only"
        );
        assert!(claims.vouch(&pair("web", "cart"), None));
    }

    #[test]
    fn claims_past_the_limits_are_refused_and_counted() {
        let mut claims = Claims::default();
        claims.begin_round();
        for i in 0..MAX_CLAIMED_PAIRS + 3 {
            claims.note(pair(&format!("c{i}"), "cart"), ClaimedPath::None);
        }
        assert_eq!(claims.refused(), 3);
        assert!(!claims.vouch(&pair(&format!("c{}", MAX_CLAIMED_PAIRS), "cart"), None));
        for i in 0..MAX_CLAIMED_PATHS + 2 {
            claims.note(pair("c0", "cart"), ClaimedPath::Path(&format!("/p{i}")));
        }
        assert_eq!(claims.refused(), 5);
    }
}
