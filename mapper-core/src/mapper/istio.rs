//! Istio sidecars' request counters into HTTP edges, a round of scrapes at a time: every
//! scrape advances its pod's window and renews its claims at once (the watcher takes the lock
//! per scrape, never holding every answer), and the increases wait for the round's end, when
//! every client's claims are in, to be checked (see [`crate::istio`]).
//!
//! A request between two sidecars is counted by both (`reporter="source"` and
//! `reporter="destination"`). The destination's count is used: it names the target by the pod
//! that served the call, as the index does. The source's count is used only when the
//! destination's sidecar is not followed (no sidecar, or never scraped), so each request is
//! counted once.
//!
//! Ambient mode's proxies (ztunnel, waypoints) take part in the same rounds ([`ambient`]): a
//! ztunnel's client-side count is left to the server's ztunnel when that one is followed, and
//! claims of either kind vouch for counts of the other.

mod ambient;

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use super::stats::{add, bump};
use super::{Call, Mapper};
use crate::edges::Detail;
use crate::identity::Workload;
use crate::index::{Index, LabelledPod, Name};
use crate::istio::corroboration::{ClaimedPath, Pair};
use crate::istio::{
    self, Claims, IstioWindows, PathRefused, RequestIncrease, SidecarMetrics, SidecarScrape,
    UnknownMethod,
};
use crate::names::is_kubernetes_name;
use crate::resolve::{Resolution, Via};

/// Increases held until a round's end at most (estimated bytes); past it they are counted in
/// `istio_dropped_increases` and not recorded.
pub const MAX_PENDING_BYTES: usize = 16 << 20;

#[derive(Debug)]
pub(crate) struct IstioState {
    windows: IstioWindows,
    claims: Claims,
    round: Round,
    connection_window: TimeDelta,
}

#[derive(Debug, Default)]
struct Round {
    /// Workloads `(namespace, name)` with a sidecar followed in this round.
    followed: HashSet<(Name, Name)>,
    /// Nodes whose ztunnel is followed in this round: the enrolled pods there are counted by
    /// their server side.
    ztunnel_nodes: HashSet<Name>,
    pending: Vec<Pending>,
    pending_bytes: usize,
}

/// An increase waiting for the round's end.
#[derive(Debug)]
struct Pending {
    /// The server's count (`Destination`), or the client's (`Source`, with the server's
    /// workload when its sidecar might count the same requests).
    side: Side,
    client: Arc<Workload>,
    target: Resolution,
    method: Result<Option<&'static str>, UnknownMethod>,
    path: Result<Option<Box<str>>, PathRefused>,
    requests: u64,
    /// The waypoint's workload that counted it: a client's claim of calls to the waypoint
    /// vouches too.
    via: Option<(Name, Name)>,
}

#[derive(Debug)]
enum Side {
    Destination,
    /// `ztunnel`: counted by the client's ztunnel, so the server's ztunnel counts the same.
    Source {
        server: Option<Arc<Workload>>,
        ztunnel: bool,
    },
}

impl IstioState {
    pub(crate) fn new(connection_window: TimeDelta) -> Self {
        Self {
            windows: IstioWindows::default(),
            claims: Claims::default(),
            round: Round::default(),
            connection_window,
        }
    }

    pub(crate) fn refused_claims(&self) -> u64 {
        self.claims.refused()
    }
}

fn key(workload: &Workload) -> (Name, Name) {
    (workload.namespace.clone(), workload.name.clone())
}

/// A workload as another system names it, matched against the index where it can be.
fn named_workload(index: &Index, namespace: &str, name: &str) -> Option<Arc<Workload>> {
    if name == "unknown" || !is_kubernetes_name(namespace) || !is_kubernetes_name(name) {
        return None;
    }
    Some(
        index
            .workload_named(namespace, name)
            .unwrap_or_else(|| Arc::new(Workload::named(namespace, name, None))),
    )
}

impl Mapper {
    /// One whole round at `now` over these scrapes (every pod with a sidecar, scraped or not).
    pub fn observe_istio(&mut self, scrapes: &[SidecarScrape], now: DateTime<Utc>) {
        let pods: Vec<LabelledPod> = scrapes.iter().map(|s| s.pod.clone()).collect();
        self.begin_istio_round(&pods, now);
        for scrape in scrapes {
            self.observe_sidecar(&scrape.pod, scrape.metrics.as_ref().map_err(String::as_str));
        }
        self.end_istio_round(now);
    }

    /// Begins a round at `now` over every pod with a sidecar: the pods not among them are
    /// forgotten, and claims not renewed since the last round expire.
    pub fn begin_istio_round(&mut self, pods: &[LabelledPod], now: DateTime<Utc>) {
        let pods: Vec<&LabelledPod> = pods.iter().collect();
        self.istio.windows.begin_round(&pods, now);
        self.istio.claims.begin_round();
        self.istio.round = Round::default();
    }

    /// One sidecar's scrape in the current round: what it says its own workload called
    /// becomes claims at once, what its counters grew by waits for [`Mapper::end_istio_round`].
    pub fn observe_sidecar(&mut self, pod: &LabelledPod, metrics: Result<&SidecarMetrics, &str>) {
        if metrics.is_ok() || self.istio.windows.follows(pod) {
            self.istio.round.followed.insert(key(&pod.workload));
        }
        let Ok(metrics) = metrics else {
            bump(&mut self.stats.istio_scrape_failures);
            return;
        };
        bump(&mut self.stats.istio_scrapes);
        self.note_claims(pod, metrics);
        let (increases, counts) = self.istio.windows.increases(pod, metrics);
        add(&mut self.stats.istio_baselines, u64::from(counts.baseline));
        add(&mut self.stats.istio_counter_resets, counts.counter_resets);
        add(&mut self.stats.istio_malformed_lines, counts.malformed_lines);
        add(&mut self.stats.istio_untracked_series, counts.untracked_series);
        for increase in increases {
            self.hold(pod, increase);
        }
    }

    /// Ends the round: each increase something vouches for becomes requests on an edge at `now`.
    pub fn end_istio_round(&mut self, now: DateTime<Utc>) {
        let round = std::mem::take(&mut self.istio.round);
        let since = now - self.istio.connection_window;
        let mut ambient_followed: HashMap<(Name, Name), bool> = HashMap::new();
        for pending in round.pending {
            // The server's side counts the same requests when its sidecar is followed, and a
            // ztunnel's count the same connections when the server's node's ztunnel is.
            let server_followed = match &pending.side {
                Side::Source { server: Some(server), ztunnel } => {
                    round.followed.contains(&key(server))
                        || (*ztunnel
                            && *ambient_followed.entry(key(server)).or_insert_with(|| {
                                !round.ztunnel_nodes.is_empty()
                                    && self.index.ambient_pod_on(server, |node| {
                                        round.ztunnel_nodes.contains(node)
                                    })
                            }))
                }
                _ => false,
            };
            self.settle(pending, server_followed, since, now);
        }
    }

    /// The client-side series of the scraped pod, as claims of its own workload.
    fn note_claims(&mut self, pod: &LabelledPod, metrics: &SidecarMetrics) {
        let client = key(&pod.workload);
        let mut servers: HashMap<(&str, &str), Option<Arc<Workload>>> = HashMap::new();
        for sample in
            metrics.requests.iter().filter(|s| s.series.reporter == "source" && s.value > 0.0)
        {
            let series = &sample.series;
            let server = servers
                .entry((&series.destination_workload_namespace, &series.destination_workload))
                .or_insert_with(|| {
                    named_workload(
                        &self.index,
                        &series.destination_workload_namespace,
                        &series.destination_workload,
                    )
                });
            let Some(server) = server else { continue };
            let path = match istio::request_path(series.request_path.as_deref()) {
                Ok(Some(path)) => ClaimedPath::Path(path),
                Ok(None) => ClaimedPath::None,
                Err(_) => ClaimedPath::Unusable,
            };
            self.istio.claims.note(Pair { client: client.clone(), server: key(server) }, path);
        }
    }

    /// Names both ends of an increase and keeps it for the round's end.
    fn hold(&mut self, pod: &LabelledPod, increase: RequestIncrease) {
        let series = &increase.series;
        let (side, client, target) = match series.reporter.as_str() {
            "destination" => {
                let Some(client) = named_workload(
                    &self.index,
                    &series.source_workload_namespace,
                    &series.source_workload,
                ) else {
                    bump(&mut self.stats.istio_unknown_clients);
                    return;
                };
                (
                    Side::Destination,
                    client,
                    Resolution::Workload { workload: pod.workload.clone(), via: Via::PodIp },
                )
            }
            "source" => {
                let server = named_workload(
                    &self.index,
                    &series.destination_workload_namespace,
                    &series.destination_workload,
                );
                let target = match &server {
                    Some(server) => {
                        Some(Resolution::Workload { workload: server.clone(), via: Via::PodIp })
                    }
                    None if is_kubernetes_name(&series.destination_service_namespace)
                        && is_kubernetes_name(&series.destination_service_name) =>
                    {
                        self.index.resolve_name(&format!(
                            "{}.{}.svc",
                            series.destination_service_name, series.destination_service_namespace
                        ))
                    }
                    None => None,
                };
                let Some(target) = target.filter(|t| {
                    matches!(
                        t,
                        Resolution::Workload { .. }
                            | Resolution::Service { .. }
                            | Resolution::ApiServer
                    )
                }) else {
                    bump(&mut self.stats.istio_unknown_targets);
                    return;
                };
                (Side::Source { server, ztunnel: false }, pod.workload.clone(), target)
            }
            _ => {
                bump(&mut self.stats.istio_unknown_reporters);
                return;
            }
        };
        self.pend(side, client, target, &increase, None);
    }

    /// Keeps a named increase for the round's end, within [`MAX_PENDING_BYTES`].
    fn pend(
        &mut self,
        side: Side,
        client: Arc<Workload>,
        target: Resolution,
        increase: &RequestIncrease,
        via: Option<(Name, Name)>,
    ) {
        let series = &increase.series;
        let method = istio::request_method(series.request_method.as_deref());
        let path: Result<Option<Box<str>>, PathRefused> =
            istio::request_path(series.request_path.as_deref()).map(|p| p.map(Box::from));
        let bytes = std::mem::size_of::<Pending>()
            + path.as_ref().ok().and_then(Option::as_ref).map_or(0, |p| p.len());
        let round = &mut self.istio.round;
        if round.pending_bytes + bytes > MAX_PENDING_BYTES {
            bump(&mut self.stats.istio_dropped_increases);
            return;
        }
        round.pending_bytes += bytes;
        round.pending.push(Pending {
            side,
            client,
            target,
            method,
            path,
            requests: increase.requests,
            via,
        });
    }

    /// Records a held increase if it is the count to use and something vouches for it.
    fn settle(
        &mut self,
        pending: Pending,
        server_followed: bool,
        since: DateTime<Utc>,
        now: DateTime<Utc>,
    ) {
        let Pending { side, client, target, method, path, requests, via } = pending;
        if server_followed {
            bump(&mut self.stats.istio_left_to_destination);
            return;
        }
        if method.is_err() {
            bump(&mut self.stats.istio_unknown_methods);
        }
        let path = match path {
            Ok(path) => path,
            Err(PathRefused::NotAPath | PathRefused::TooLong) => {
                bump(&mut self.stats.istio_unusable_paths);
                None
            }
        };
        let detail = match (path.as_deref(), method) {
            // A method the CRD cannot name: the call is recorded, but no path that would allow it.
            (Some(path), Ok(method)) => Detail::Http { path, method },
            _ => Detail::None,
        };
        let claimed = match (&side, &target) {
            (Side::Destination, Resolution::Workload { workload, .. }) => {
                let path = match detail {
                    Detail::Http { path, .. } => Some(path),
                    _ => None,
                };
                self.istio.claims.vouch(&Pair { client: key(&client), server: key(workload) }, path)
                    || via.is_some_and(|waypoint| {
                        self.istio
                            .claims
                            .vouch(&Pair { client: key(&client), server: waypoint }, path)
                    })
            }
            _ => false,
        };
        if !claimed
            && self.for_each_target(&target, |edges, t| edges.connected_since(&client, t, since))
                != Some(true)
        {
            bump(&mut self.stats.istio_uncorroborated);
            return;
        }
        let call = Call {
            client_ip: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: None,
            at: now,
            connections: requests,
            detail,
            connection: false,
            bytes: None,
        };
        if self.record(&client, &target, call) {
            add(&mut self.stats.http_requests, requests);
        }
    }
}
