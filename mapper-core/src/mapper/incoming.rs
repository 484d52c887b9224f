//! Incoming internet traffic: clients outside the cluster reaching a workload directly (its pod
//! address), through a load balancer's or external address, or through a node port.
//!
//! A node agent reports the server's side of a connection (`accepted`). When its source names no
//! pod or node, the call is held for [`SETTLE`] before it is judged, because a pod's address can
//! reach the index after its first connection: the index's address leases are then asked about
//! the time of the call, so a new pod's call is still its own edge, never "internet". What is
//! left is recorded as [`model::Target::Incoming`] on the workload that served it. A node agent
//! may only report connections its own pods accepted.

use std::collections::VecDeque;
use std::net::IpAddr;

use chrono::{DateTime, TimeDelta, Utc};
use model::observation::TcpConnection;
use model::{PortSpec, Protocol, Traffic};

use super::stats::bump;
use super::{Call, Mapper, Reporter};
use crate::edges::{Detail, Observation, ObservedTarget, Recorded};
use crate::index::Name;
use crate::resolve::Resolution;

/// How long an accepted connection from an unknown source waits before it is judged.
pub const SETTLE: TimeDelta = TimeDelta::seconds(10);

/// At most this many accepted connections wait; past it new ones are counted and dropped.
pub const MAX_PENDING: usize = 20_000;

/// An accepted connection from a source the index did not know when it arrived.
#[derive(Debug, Clone)]
pub(super) struct Pending {
    src: IpAddr,
    dst: IpAddr,
    port: u16,
    at: DateTime<Utc>,
    connections: u64,
    /// What a close line measured, from the (outside) client's view.
    bytes: Option<Traffic>,
    /// The node whose agent reported it (`None`: a reporter believed about any pod).
    node: Option<Name>,
}

#[derive(Debug, Default)]
pub(super) struct IncomingQueue {
    pending: VecDeque<Pending>,
}

impl Mapper {
    /// Holds an accepted connection whose source is no known pod or node (see the module
    /// documentation); whether it was taken.
    pub(super) fn hold_incoming(
        &mut self,
        connection: &TcpConnection,
        reporter: Reporter<'_>,
        at: DateTime<Utc>,
    ) -> bool {
        if !connection.accepted
            || connection.pod.is_some()
            || connection.dst_port == 0
            || !is_routable_source(connection.src_ip)
        {
            return false;
        }
        if self.incoming.pending.len() >= MAX_PENDING {
            bump(&mut self.stats.incoming_dropped);
            return true;
        }
        let node = match reporter {
            Reporter::Node(node) => Some(Name::from(node)),
            Reporter::Anyone => None,
            Reporter::AwsCalls => return false,
        };
        self.incoming.pending.push_back(Pending {
            src: connection.src_ip,
            dst: connection.dst_ip,
            port: connection.dst_port,
            at,
            connections: connection.count,
            bytes: connection.bytes.map(super::bounded),
            node,
        });
        true
    }

    /// Judges the held connections that arrived [`SETTLE`] or more before `now`.
    pub fn settle_incoming(&mut self, now: DateTime<Utc>) {
        while self.incoming.pending.front().is_some_and(|p| p.at + SETTLE <= now) {
            let Some(pending) = self.incoming.pending.pop_front() else { break };
            self.judge_incoming(&pending);
        }
    }

    fn judge_incoming(&mut self, p: &Pending) {
        let reporter = match &p.node {
            Some(node) => Reporter::Node(node),
            None => Reporter::Anyone,
        };
        let port = Some(PortSpec { port: p.port, protocol: Protocol::Tcp });
        // The source became known meanwhile: an ordinary call between workloads.
        match self.reported_client(reporter, None, p.src, p.at) {
            Ok(Some(client)) => {
                let resolution = self.index.resolve_address(p.dst, p.at, port);
                let call = Call {
                    client_ip: p.src,
                    port,
                    at: p.at,
                    connections: p.connections,
                    detail: Detail::None,
                    connection: true,
                    bytes: p.bytes,
                };
                if self.record(&client, &resolution, call) {
                    bump(self.stats.tcp_line(p.connections));
                }
                return;
            }
            Err(refused) => {
                self.count_refused(refused);
                return;
            }
            Ok(None) => {}
        }
        if !matches!(self.index.resolve_address(p.src, p.at, None), Resolution::External(_))
            || self.index.in_pod_network(p.src)
        {
            // A pod address nobody held then, one two pods held, or one in the pod network that
            // the index does not know (a pod gone before the mapper started): not the internet's.
            bump(&mut self.stats.unknown_clients);
            return;
        }
        if let Some(node) = &p.node {
            if self.index.address_node(p.dst, p.at) != Some(node) {
                bump(&mut self.stats.foreign_clients);
                return;
            }
        }
        let servers = self.index.resolve_incoming(p.dst, p.port, p.at);
        if servers.is_empty() {
            bump(&mut self.stats.unattributed_targets);
            return;
        }
        let mut recorded = false;
        for server in &servers {
            let observation = Observation {
                client: server,
                target: ObservedTarget::Incoming { ip: p.src.to_canonical() },
                port,
                at: p.at,
                connections: p.connections,
                detail: Detail::None,
                connection: false,
                // As the target, read the other way round: `sent` went from the outside client
                // to the workload (the direction the graph draws the edge).
                bytes: p.bytes,
            };
            recorded |= self.edges.record(&observation) != Recorded::Refused;
        }
        if recorded {
            bump(if p.connections == 0 {
                &mut self.stats.tcp_closes
            } else {
                &mut self.stats.incoming_connections
            });
        }
    }

    /// Accepted connections still waiting to be judged.
    pub fn pending_incoming(&self) -> usize {
        self.incoming.pending.len()
    }
}

/// Whether `ip` can be a client outside the cluster: not loopback (port-forwards and Istio's
/// inbound passthrough arrive from 127.x), unspecified, multicast or link-local.
fn is_routable_source(ip: IpAddr) -> bool {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            !(v4.is_loopback()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_link_local()
                || v4.is_broadcast())
        }
        IpAddr::V6(v6) => {
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || v6.is_unicast_link_local())
        }
    }
}

#[cfg(test)]
mod tests {
    use model::observation::ObservationBatch;
    use model::{Edge, Target};

    use super::*;
    use crate::fixtures::*;
    use crate::tests::tcp;

    const AT: &str = "2026-01-02T00:00:00Z";

    fn accepted(src: &str, dst: &str, port: u16) -> TcpConnection {
        TcpConnection { accepted: true, ..tcp(src, dst, port, AT) }
    }

    fn cluster() -> Mapper {
        let mut mapper = Mapper::default();
        mapper.index.apply(&mk_node("node-a", &["192.168.1.10"]));
        mapper.index.apply(&mk_node("node-b", &["192.168.1.11"]));
        mapper.index.apply(&mk_pod("shop", "web-1", &["10.244.1.5"]).on_node("node-a"));
        mapper.index.apply(&mk_pod("shop", "cart-1", &["10.244.2.5"]).on_node("node-b"));
        mapper
    }

    fn send(mapper: &mut Mapper, lines: Vec<TcpConnection>, reporter: Reporter<'_>) {
        let batch = ObservationBatch { tcp: lines, ..ObservationBatch::default() };
        mapper.observe_as(&batch, reporter, ts(AT));
        mapper.settle_incoming(ts(AT) + SETTLE);
    }

    fn incoming(edges: &[Edge]) -> Vec<(String, Vec<String>)> {
        edges
            .iter()
            .filter_map(|e| match &e.target {
                Target::Incoming(i) => Some((e.client.name.clone(), i.ips.clone())),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_source_that_turns_out_to_be_a_new_pod_is_an_ordinary_client() {
        let mut mapper = cluster();
        let batch = ObservationBatch {
            tcp: vec![accepted("10.244.1.7", "10.244.1.5", 8080)],
            ..ObservationBatch::default()
        };
        mapper.observe_as(&batch, Reporter::Anyone, ts(AT));
        // The pod's watch event arrives after its first connection was reported.
        mapper.index.apply(&mk_pod("shop", "checkout-1", &["10.244.1.7"]).on_node("node-a"));
        mapper.settle_incoming(ts(AT) + SETTLE);
        let edges = mapper.snapshot();
        assert_eq!(edges.len(), 1, "{edges:?}");
        assert_eq!(edges[0].client.name, "checkout-1");
        assert!(matches!(&edges[0].target, Target::Kubernetes(w) if w.name == "web-1"));
        assert_eq!(mapper.stats().incoming_connections, 0);
    }

    #[test]
    fn nothing_is_judged_before_it_settles() {
        let mut mapper = cluster();
        let batch = ObservationBatch {
            tcp: vec![accepted("203.0.113.4", "10.244.1.5", 8080)],
            ..ObservationBatch::default()
        };
        mapper.observe_as(&batch, Reporter::Anyone, ts(AT));
        mapper.settle_incoming(ts(AT) + SETTLE - chrono::TimeDelta::seconds(1));
        assert!(mapper.snapshot().is_empty());
        mapper.settle_incoming(ts(AT) + SETTLE);
        assert_eq!(
            incoming(&mapper.snapshot()),
            [("web-1".to_owned(), vec!["203.0.113.4".into()])]
        );
    }

    #[test]
    fn a_node_reports_only_what_its_own_pods_accepted() {
        let mut mapper = cluster();
        let lines = vec![
            accepted("203.0.113.4", "10.244.1.5", 8080),
            // node-b's pod: node-a cannot have seen it accept anything.
            accepted("203.0.113.5", "10.244.2.5", 8080),
        ];
        send(&mut mapper, lines, Reporter::Node("node-a"));
        assert_eq!(
            incoming(&mapper.snapshot()),
            [("web-1".to_owned(), vec!["203.0.113.4".into()])]
        );
        assert_eq!(mapper.stats().foreign_clients, 1);
        // A connection that was not accepted (a connect from an unknown source) is unknown.
        send(&mut mapper, vec![tcp("203.0.113.6", "10.244.1.5", 8080, AT)], Reporter::Anyone);
        assert_eq!(mapper.stats().unknown_clients, 1);
        assert_eq!(incoming(&mapper.snapshot()).len(), 1);
    }

    #[test]
    fn loopback_and_link_local_sources_are_never_the_internet() {
        let mut mapper = cluster();
        let lines = vec![
            accepted("127.0.0.6", "10.244.1.5", 8080),
            accepted("169.254.1.1", "10.244.1.5", 8080),
            accepted("fe80::1", "10.244.1.5", 8080),
        ];
        send(&mut mapper, lines, Reporter::Anyone);
        assert!(mapper.snapshot().is_empty());
        assert_eq!(mapper.pending_incoming(), 0);
        assert_eq!(mapper.stats().unknown_clients, 3);
    }

    #[test]
    fn an_unknown_address_in_the_pod_network_is_never_the_internet() {
        let mut mapper = cluster();
        // 10.244.1.77 is in the /24 of web-1's address: a pod gone before the index knew it.
        send(&mut mapper, vec![accepted("10.244.1.77", "10.244.1.5", 8080)], Reporter::Anyone);
        assert!(mapper.snapshot().is_empty());
        assert_eq!(mapper.stats().unknown_clients, 1);
        assert!(mapper.index.in_pod_network("10.244.1.77".parse().unwrap()));
        assert!(!mapper.index.in_pod_network("10.245.1.77".parse().unwrap()));
    }

    #[test]
    fn an_address_nobody_serves_is_unattributed() {
        let mut mapper = cluster();
        send(&mut mapper, vec![accepted("203.0.113.4", "10.244.9.9", 80)], Reporter::Anyone);
        assert!(mapper.snapshot().is_empty());
        assert_eq!(mapper.stats().unattributed_targets, 1);
    }

    #[test]
    fn client_addresses_per_workload_and_waiting_connections_are_bounded() {
        let mut mapper = cluster();
        let max = model::limits::MAX_ADDRESSES_PER_LIST;
        let lines: Vec<TcpConnection> = (0..max + 5)
            .map(|i| accepted(&format!("198.18.{}.{}", i / 250, i % 250 + 1), "10.244.1.5", 443))
            .collect();
        send(&mut mapper, lines, Reporter::Anyone);
        let found = incoming(&mapper.snapshot());
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].1.len(), max);
        assert_eq!(mapper.stats().dropped_details, 5);
        assert_eq!(mapper.stats().incoming_connections, (max + 5) as u64);

        let mut flooded = cluster();
        let lines = vec![accepted("203.0.113.4", "10.244.1.5", 8080); MAX_PENDING + 3];
        let batch = ObservationBatch { tcp: lines, ..ObservationBatch::default() };
        flooded.observe_as(&batch, Reporter::Anyone, ts(AT));
        assert_eq!(flooded.pending_incoming(), MAX_PENDING);
        assert_eq!(flooded.stats().incoming_dropped, 3);
    }

    /// A node agent's line for a closed socket: no new connection, the bytes it carried.
    fn closed(mut line: TcpConnection, sent: u64, received: u64) -> TcpConnection {
        line.count = 0;
        line.bytes = Some(Traffic { sent, received });
        line
    }

    #[test]
    fn closes_bring_bytes_to_calls_and_incoming_edges_once() {
        let mut mapper = cluster();
        let call = crate::tests::hinted(tcp("10.244.1.5", "10.244.2.5", 7070, AT), "shop", "web-1");
        let lines = vec![
            call.clone(),
            // The client's socket closed: its bytes, counted once.
            closed(call.clone(), 300, 4_000),
            // The server's side of that call, on the other node: the client's side tells it.
            closed(accepted("10.244.1.5", "10.244.2.5", 7070), 300, 4_000),
            // Incoming traffic: its connection and its close, held and judged together.
            accepted("203.0.113.4", "10.244.1.5", 8080),
            closed(accepted("203.0.113.4", "10.244.1.5", 8080), 20, 1_000_000),
        ];
        send(&mut mapper, lines, Reporter::Anyone);
        let edges = mapper.snapshot();
        let call = edges.iter().find(|e| matches!(&e.target, Target::Kubernetes(_))).unwrap();
        assert_eq!(
            (call.connections, call.bytes),
            (1, Some(Traffic { sent: 300, received: 4_000 }))
        );
        let incoming = edges.iter().find(|e| matches!(&e.target, Target::Incoming(_))).unwrap();
        assert_eq!(incoming.client.name, "web-1");
        assert_eq!(
            (incoming.connections, incoming.bytes),
            (1, Some(Traffic { sent: 20, received: 1_000_000 })),
            "read as the internet client's: it sent 20 bytes to the workload"
        );
        let stats = mapper.stats();
        assert_eq!(
            (stats.tcp_connections, stats.incoming_connections, stats.tcp_closes),
            (1, 1, 2)
        );
        assert_eq!(stats.accepted_from_workloads, 1);
        // The upload carries the same bytes.
        let delta = mapper.take_delta();
        assert_eq!(
            delta.iter().filter_map(|e| e.bytes).map(|b| b.received).sum::<u64>(),
            1_004_000
        );
    }
}
