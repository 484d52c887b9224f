//! The edges seen so far: what the local API lists, and what has not been uploaded yet.
//!
//! Every edge is kept twice over: its whole history (for `snapshot`, the TTL and the limit), and
//! what changed since the last `take_delta` (for the upload, which the cloud adds to what it has,
//! so a delta carries only new connections). An edge that expires, or is forgotten by `reset`,
//! before its changes were taken keeps them until the next `take_delta`.
//!
//! HTTP paths (with their methods) and Kafka topics (with their operations) accumulate on the
//! edge like ports do, sorted, and travel in deltas too. An edge keeps at most
//! [`EdgeStoreConfig::max_details_per_edge`] of each; past that new ones are counted in
//! `dropped_details` (paths with ids in them would otherwise grow an edge for ever).

use std::collections::HashMap;
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use model::limits::MAX_ADDRESSES_PER_LIST;
use model::{
    AwsTarget, Edge, HttpResource, InternetTarget, KafkaTopic, PortSpec, ServiceRef, Target,
    Traffic,
};

use crate::identity::Workload;
use crate::index::Name;

#[derive(Debug, Clone)]
pub struct EdgeStoreConfig {
    /// Edges not seen for this long are dropped by `expire`; `None` keeps them until `reset`.
    pub ttl: Option<TimeDelta>,
    /// At most this many edges; past it new edges are refused and counted in `dropped_edges`.
    pub max_edges: usize,
    /// At most this many HTTP paths, and this many Kafka topics, on one edge; past it new ones
    /// are left off and counted in `dropped_details` (the call itself is still recorded).
    pub max_details_per_edge: usize,
}

impl Default for EdgeStoreConfig {
    fn default() -> Self {
        Self { ttl: None, max_edges: 100_000, max_details_per_edge: 1_000 }
    }
}

/// What a client was seen calling, borrowed from the resolution.
#[derive(Debug, Clone, Copy)]
pub enum ObservedTarget<'a> {
    Workload(&'a Workload),
    Service {
        namespace: &'a Name,
        name: &'a Name,
    },
    /// `domains` may be empty: the address alone names the destination.
    Internet {
        domains: &'a [Name],
        ip: IpAddr,
    },
    Aws {
        arn: &'a str,
        action: Option<&'a str>,
    },
    /// A Kafka broker's workload, called through the Kafka protocol.
    Kafka(&'a Workload),
    /// Incoming internet traffic: `ip`, outside the cluster, called the observation's `client`
    /// (the workload that served it; see [`model::Target::Incoming`]).
    Incoming {
        ip: IpAddr,
    },
}

/// What an observation says about the call beyond its two ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Detail<'a> {
    #[default]
    None,
    /// An HTTP request to `path` (from Istio telemetry); `method` upper case, as in the CRD.
    Http { path: &'a str, method: Option<&'a str> },
    /// A Kafka operation on a topic, in the CRD's names (`consume`, `produce`, ...).
    Kafka { topic: &'a str, operation: &'a str, denied: bool },
}

/// One observation of an edge.
#[derive(Debug, Clone, Copy)]
pub struct Observation<'a> {
    pub client: &'a Workload,
    pub target: ObservedTarget<'a>,
    pub port: Option<PortSpec>,
    pub at: DateTime<Utc>,
    /// Connections (or requests, or Kafka accesses) this observation stands for.
    pub connections: u64,
    pub detail: Detail<'a>,
    /// A node agent saw the client's socket connect (a TCP observation): what Istio's
    /// request counters are checked against (see [`EdgeStore::connected_since`]).
    pub connection: bool,
    /// Bytes carried, from the client's view (a node agent's close line); added to the edge's.
    pub bytes: Option<Traffic>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    New,
    Updated,
    /// The store is full; counted in `dropped_edges`.
    Refused,
}

/// The identity of an edge, as `model::EdgeKey` but built without copying strings.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct SlotKey {
    client_namespace: Name,
    client_name: Name,
    target: TargetKey,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum TargetKey {
    Kubernetes(Name, Name),
    Service(Name, Name),
    /// Internet destinations are named by their least domain, else their address.
    Domain(Name),
    Ip(IpAddr),
    Aws(Box<str>),
    Kafka(Name, Name),
    Incoming,
}

impl SlotKey {
    fn of(observation: &Observation<'_>) -> Self {
        let target = match observation.target {
            ObservedTarget::Workload(w) => {
                TargetKey::Kubernetes(w.namespace.clone(), w.name.clone())
            }
            ObservedTarget::Service { namespace, name } => {
                TargetKey::Service(namespace.clone(), name.clone())
            }
            ObservedTarget::Internet { domains, ip } => match domains.iter().min() {
                Some(domain) => TargetKey::Domain(domain.clone()),
                None => TargetKey::Ip(ip),
            },
            ObservedTarget::Aws { arn, .. } => TargetKey::Aws(arn.into()),
            ObservedTarget::Kafka(w) => TargetKey::Kafka(w.namespace.clone(), w.name.clone()),
            ObservedTarget::Incoming { .. } => TargetKey::Incoming,
        };
        Self {
            client_namespace: observation.client.namespace.clone(),
            client_name: observation.client.name.clone(),
            target,
        }
    }
}

#[derive(Debug, Clone)]
struct Tracked {
    edge: Edge,
    /// The internet target's addresses, to test membership without formatting them.
    ips: Vec<IpAddr>,
    /// The latest observed connection (not a request counter, a DNS lookup or a log line).
    last_connected: Option<DateTime<Utc>>,
}

impl Tracked {
    fn new(observation: &Observation<'_>) -> Self {
        let target = match observation.target {
            ObservedTarget::Workload(w) => Target::Kubernetes(w.to_ref()),
            ObservedTarget::Service { namespace, name } => Target::Service(ServiceRef {
                namespace: namespace.to_string(),
                name: name.to_string(),
            }),
            // Domains, addresses and actions are added by `fold`.
            ObservedTarget::Internet { .. } => Target::Internet(InternetTarget::default()),
            ObservedTarget::Aws { arn, .. } => {
                Target::Aws(AwsTarget { arn: arn.to_owned(), actions: Vec::new() })
            }
            ObservedTarget::Kafka(w) => Target::Kafka(w.to_ref()),
            ObservedTarget::Incoming { .. } => Target::Incoming(InternetTarget::default()),
        };
        let edge = Edge {
            client: observation.client.to_ref(),
            target,
            ports: Vec::new(),
            first_seen: observation.at,
            last_seen: observation.at,
            connections: 0,
            http: Vec::new(),
            kafka: Vec::new(),
            bytes: None,
        };
        let mut tracked = Tracked { edge, ips: Vec::new(), last_connected: None };
        tracked.fold(observation);
        tracked
    }

    /// Folds `observation` in; whether all of it fit (an incoming edge keeps at most
    /// [`MAX_ADDRESSES_PER_LIST`] client addresses).
    fn fold(&mut self, observation: &Observation<'_>) -> bool {
        let mut fit = true;
        let edge = &mut self.edge;
        edge.first_seen = edge.first_seen.min(observation.at);
        edge.last_seen = edge.last_seen.max(observation.at);
        edge.connections = edge.connections.saturating_add(observation.connections);
        edge.bytes = Traffic::sum(edge.bytes, observation.bytes);
        if observation.connection {
            self.last_connected = self.last_connected.max(Some(observation.at));
        }
        if let Some(port) = observation.port {
            insert_sorted(&mut edge.ports, port);
        }
        match (&mut edge.target, observation.target) {
            (Target::Kubernetes(w), ObservedTarget::Workload(seen))
                if !seen.kind.is_empty() && w.kind.as_deref() != Some(&*seen.kind) =>
            {
                w.kind = Some(seen.kind.to_string())
            }
            (Target::Internet(internet), ObservedTarget::Internet { domains, ip }) => {
                for domain in domains {
                    insert_sorted_str(&mut internet.domains, domain);
                }
                if !self.ips.contains(&ip) {
                    self.ips.push(ip);
                    insert_sorted_str(&mut internet.ips, &ip.to_string());
                }
            }
            (Target::Incoming(incoming), ObservedTarget::Incoming { ip }) => {
                if self.ips.contains(&ip) {
                } else if self.ips.len() < MAX_ADDRESSES_PER_LIST {
                    self.ips.push(ip);
                    insert_sorted_str(&mut incoming.ips, &ip.to_string());
                } else {
                    fit = false;
                }
            }
            (Target::Aws(aws), ObservedTarget::Aws { action: Some(action), .. }) => {
                insert_sorted_str(&mut aws.actions, action)
            }
            (Target::Kafka(w), ObservedTarget::Kafka(seen))
                if !seen.kind.is_empty() && w.kind.as_deref() != Some(&*seen.kind) =>
            {
                w.kind = Some(seen.kind.to_string())
            }
            _ => {}
        }
        match observation.detail {
            Detail::None => {}
            Detail::Http { path, method } => {
                let at = match edge.http.binary_search_by(|r| r.path.as_str().cmp(path)) {
                    Ok(at) => at,
                    Err(at) => {
                        edge.http.insert(
                            at,
                            HttpResource { path: path.to_owned(), methods: Vec::new() },
                        );
                        at
                    }
                };
                if let Some(method) = method {
                    insert_sorted_str(&mut edge.http[at].methods, method);
                }
            }
            Detail::Kafka { topic, operation, denied } => {
                let at = match edge.kafka.binary_search_by(|t| t.name.as_str().cmp(topic)) {
                    Ok(at) => at,
                    Err(at) => {
                        edge.kafka.insert(
                            at,
                            KafkaTopic {
                                name: topic.to_owned(),
                                operations: Vec::new(),
                                denied: Vec::new(),
                            },
                        );
                        at
                    }
                };
                insert_sorted_str(&mut edge.kafka[at].operations, operation);
                if denied {
                    insert_sorted_str(&mut edge.kafka[at].denied, operation);
                }
            }
        }
        fit
    }

    /// Whether `detail` is already on the edge or there is room for it.
    fn has_room_for(&self, detail: &Detail<'_>, max: usize) -> bool {
        match *detail {
            Detail::None => true,
            Detail::Http { path, .. } => {
                self.edge.http.len() < max
                    || self.edge.http.binary_search_by(|r| r.path.as_str().cmp(path)).is_ok()
            }
            Detail::Kafka { topic, .. } => {
                self.edge.kafka.len() < max
                    || self.edge.kafka.binary_search_by(|t| t.name.as_str().cmp(topic)).is_ok()
            }
        }
    }
}

fn insert_sorted<T: Ord>(values: &mut Vec<T>, value: T) {
    if let Err(at) = values.binary_search(&value) {
        values.insert(at, value);
    }
}

fn insert_sorted_str(values: &mut Vec<String>, value: &str) {
    if let Err(at) = values.binary_search_by(|v| v.as_str().cmp(value)) {
        values.insert(at, value.to_owned());
    }
}

#[derive(Debug, Clone, Default)]
struct Slot {
    /// The edge as listed; `None` once expired or reset.
    current: Option<Tracked>,
    /// Changes since the last `take_delta`.
    unsent: Option<Tracked>,
}

#[derive(Debug, Default)]
pub struct EdgeStore {
    config: EdgeStoreConfig,
    slots: HashMap<SlotKey, Slot>,
    live: usize,
    dropped_edges: u64,
    expired_edges: u64,
    dropped_details: u64,
}

impl EdgeStore {
    pub fn new(config: EdgeStoreConfig) -> Self {
        Self { config, ..Self::default() }
    }

    pub fn record(&mut self, observation: &Observation<'_>) -> Recorded {
        let key = SlotKey::of(observation);
        let full = self.live >= self.config.max_edges;
        let max_details = self.config.max_details_per_edge;
        let slots = self.slots.len();
        let slot = self.slots.get_mut(&key);
        let refused = match &slot {
            Some(slot) => slot.current.is_none() && full,
            // Slots kept only for their unsent changes count against twice the limit.
            None => full || slots >= self.config.max_edges.saturating_mul(2),
        };
        if refused {
            self.dropped_edges = self.dropped_edges.saturating_add(1);
            return Recorded::Refused;
        }
        let room = match &slot {
            Some(slot) => [&slot.current, &slot.unsent]
                .into_iter()
                .flatten()
                .all(|t| t.has_room_for(&observation.detail, max_details)),
            None => max_details > 0 || observation.detail == Detail::None,
        };
        let stripped;
        let observation = if room {
            observation
        } else {
            self.dropped_details = self.dropped_details.saturating_add(1);
            stripped = Observation { detail: Detail::None, ..*observation };
            &stripped
        };
        let Some(slot) = slot else {
            let tracked = Tracked::new(observation);
            self.slots.insert(key, Slot { current: Some(tracked.clone()), unsent: Some(tracked) });
            self.live += 1;
            return Recorded::New;
        };
        let recorded = match &mut slot.current {
            Some(current) => {
                if !current.fold(observation) {
                    self.dropped_details = self.dropped_details.saturating_add(1);
                }
                Recorded::Updated
            }
            None => {
                slot.current = Some(Tracked::new(observation));
                self.live += 1;
                Recorded::New
            }
        };
        match &mut slot.unsent {
            Some(unsent) => {
                unsent.fold(observation);
            }
            None => slot.unsent = Some(Tracked::new(observation)),
        }
        recorded
    }

    /// Drops edges last seen more than the TTL before `now`; returns how many.
    pub fn expire(&mut self, now: DateTime<Utc>) -> usize {
        let Some(ttl) = self.config.ttl else { return 0 };
        let mut expired = 0;
        self.slots.retain(|_, slot| {
            if slot.current.as_ref().is_some_and(|c| c.edge.last_seen + ttl < now) {
                slot.current = None;
                expired += 1;
            }
            slot.current.is_some() || slot.unsent.is_some()
        });
        self.live -= expired;
        self.expired_edges = self.expired_edges.saturating_add(expired as u64);
        expired
    }

    /// Every current edge, sorted by `model::EdgeKey`.
    pub fn snapshot(&self) -> Vec<Edge> {
        let mut edges: Vec<Edge> = self
            .slots
            .values()
            .filter_map(|s| s.current.as_ref())
            .map(|t| t.edge.clone())
            .collect();
        edges.sort_by_cached_key(Edge::key);
        edges
    }

    /// The edges changed since the last call, sorted by `model::EdgeKey`: `connections` counts
    /// only the new connections and `first_seen..=last_seen` spans only the changes, so adding
    /// every delta up never counts a connection twice.
    pub fn take_delta(&mut self) -> Vec<Edge> {
        let mut delta = Vec::new();
        self.slots.retain(|_, slot| {
            if let Some(unsent) = slot.unsent.take() {
                delta.push(unsent.edge);
            }
            slot.current.is_some()
        });
        delta.sort_by_cached_key(Edge::key);
        delta
    }

    /// Forgets every edge. Changes not yet taken by `take_delta` are still delivered.
    pub fn reset(&mut self) {
        self.slots.retain(|_, slot| {
            slot.current = None;
            slot.unsent.is_some()
        });
        self.live = 0;
    }

    /// Whether a connection from `client` to `target` was observed at or after `since` and the
    /// edge is still current.
    pub fn connected_since(
        &self,
        client: &Workload,
        target: ObservedTarget<'_>,
        since: DateTime<Utc>,
    ) -> bool {
        let probe = Observation {
            client,
            target,
            port: None,
            at: since,
            connections: 0,
            detail: Detail::None,
            connection: false,
            bytes: None,
        };
        self.slots
            .get(&SlotKey::of(&probe))
            .and_then(|slot| slot.current.as_ref())
            .and_then(|t| t.last_connected)
            .is_some_and(|at| at >= since)
    }

    /// Current edges.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Edges refused because the store was full.
    pub fn dropped_edges(&self) -> u64 {
        self.dropped_edges
    }

    /// Edges dropped by `expire` so far.
    pub fn expired_edges(&self) -> u64 {
        self.expired_edges
    }

    /// HTTP paths and Kafka topics left off edges that had `max_details_per_edge` of them.
    pub fn dropped_details(&self) -> u64 {
        self.dropped_details
    }
}

#[cfg(test)]
mod tests;
