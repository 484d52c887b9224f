//! Who may say what about whom. A node agent sees its own node: it may name its own pods (and
//! the node's host processes) as clients, no one else's. Without this, one node's token would
//! forge calls for every pod in the cluster.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use model::observation::PodHint;

use super::Mapper;
use crate::identity::Workload;
use crate::resolve::Held;

/// Who sent a batch, as the mapper's API authenticated it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter<'a> {
    /// Believed about any client: the shared token of tests and demos.
    Anyone,
    /// A node agent, bound to the node its token names: every client (a pod hint, a source or
    /// client address) must be a pod on this node or the node itself.
    Node(&'a str),
    /// `aws-proxy`: AWS calls of any client, and nothing else.
    AwsCalls,
}

/// Why a client named in an observation is not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The client is on another node than the reporter's.
    Foreign,
    /// The node named a pod (its pod hint) that the index does not know, and the source address
    /// was not that pod's at the time: the pod may be newer than the index, so the address's
    /// older holder is not blamed.
    UnknownPod,
    /// Two running pods held the source address at the time.
    Contested,
}

/// What a pod hint names.
enum Hinted<'a> {
    /// No hint, or one naming nothing (no UID, no namespace and name).
    Nothing,
    /// A pod the index knows, or knew: a deleted pod whose address lease (same UID or name) still
    /// covers the time.
    Pod { workload: Arc<Workload>, node: Option<&'a str> },
    /// A pod the index does not know.
    Unknown,
}

impl Mapper {
    /// The client's workload as `reporter` may name it: `Ok(None)` when it names no known pod
    /// or node, `Err` when it is refused (see [`Refused`]).
    ///
    /// A pod hint is decided by time. A hinted pod the index knows is the client. One it does
    /// not know is the client if the source address's lease at that time is that pod's (a pod
    /// deleted since, whose address still names it); otherwise the pod is newer than the index
    /// (its watch event has not arrived yet) and the address's holder at that time, if any,
    /// is someone else: refused and counted, never guessed from the address.
    pub(crate) fn reported_client(
        &self,
        reporter: Reporter<'_>,
        hint: Option<&PodHint>,
        src: IpAddr,
        at: DateTime<Utc>,
    ) -> Result<Option<Arc<Workload>>, Refused> {
        match self.hinted(hint, src, at) {
            Hinted::Pod { workload, node: pod_node } => {
                return match reporter {
                    Reporter::Node(node) if pod_node != Some(node) => Err(Refused::Foreign),
                    _ => Ok(Some(workload)),
                };
            }
            Hinted::Unknown => return Err(Refused::UnknownPod),
            Hinted::Nothing => {}
        }
        if matches!(self.index.pod_address_at(src, at), Held::Contested) {
            return Err(Refused::Contested);
        }
        let by_address = || self.index.resolve_address(src, at, None).client().cloned();
        let Reporter::Node(node) = reporter else { return Ok(by_address()) };
        match self.index.address_node(src, at) {
            Some(owner) if &**owner == node => Ok(by_address()),
            Some(_) => Err(Refused::Foreign),
            None => Ok(None),
        }
    }

    fn hinted(&self, hint: Option<&PodHint>, src: IpAddr, at: DateTime<Utc>) -> Hinted<'_> {
        let Some(hint) = hint else { return Hinted::Nothing };
        let uid = hint.uid.as_deref().filter(|u| !u.is_empty());
        let named = hint.namespace.as_deref().zip(hint.name.as_deref());
        if uid.is_none() && named.is_none() {
            return Hinted::Nothing;
        }
        let known = uid
            .and_then(|uid| {
                Some((self.index.pod_workload_by_uid(uid)?, self.index.pod_node_by_uid(uid)))
            })
            .or_else(|| {
                let (namespace, name) = named?;
                Some((
                    self.index.pod_workload(namespace, name)?,
                    self.index.pod_node(namespace, name),
                ))
            });
        if let Some((workload, node)) = known {
            return Hinted::Pod { workload, node: node.map(|n| &**n) };
        }
        match self.index.pod_address_at(src, at).lease() {
            Some(lease)
                if match uid {
                    Some(uid) => lease.uid.as_deref() == Some(uid),
                    None => named.is_some_and(|(namespace, name)| {
                        *lease.pod.namespace == *namespace && *lease.pod.name == *name
                    }),
                } =>
            {
                Hinted::Pod { workload: lease.workload.clone(), node: lease.node.as_deref() }
            }
            _ => Hinted::Unknown,
        }
    }
}

#[cfg(test)]
mod tests {
    use model::observation::{DnsAnswer, ObservationBatch, TcpConnection};

    use super::*;
    use crate::fixtures::*;

    fn cluster() -> Mapper {
        let mut mapper = Mapper::default();
        mapper.index.apply(&mk_node("node-a", &["192.168.1.10"]));
        mapper.index.apply(&mk_node("node-b", &["192.168.1.11"]));
        mapper.index.apply(&mk_pod("shop", "web-1", &["10.244.1.5"]).on_node("node-a"));
        mapper.index.apply(&mk_pod("shop", "cart-1", &["10.244.2.5"]).on_node("node-b"));
        mapper.index.apply(&mk_pod("attacker", "evil-1", &["10.244.1.9"]).on_node("node-a"));
        mapper
    }

    fn tcp(src: &str, dst: &str, pod: Option<PodHint>) -> TcpConnection {
        TcpConnection {
            pod,
            ..TcpConnection::between(
                src.parse().unwrap(),
                dst.parse().unwrap(),
                8080,
                ts("2026-01-02T00:00:00Z"),
            )
        }
    }

    fn hint(uid: &str) -> Option<PodHint> {
        Some(PodHint { uid: Some(uid.into()), namespace: None, name: None })
    }

    fn clients(mapper: &Mapper) -> Vec<String> {
        mapper
            .snapshot()
            .iter()
            .map(|e| format!("{}/{}", e.client.namespace, e.client.name))
            .collect()
    }

    #[test]
    fn a_node_names_only_its_own_pods_as_clients() {
        let mut mapper = cluster();
        let now = ts("2026-01-02T00:00:01Z");
        let batch = ObservationBatch {
            tcp: vec![
                // node-a's own pod: fine, by address or by hint.
                tcp("10.244.1.5", "10.244.1.9", None),
                // A pod of node-b, by its address, and by a hint naming it.
                tcp("10.244.2.5", "10.244.1.9", None),
                tcp("10.244.1.9", "10.244.1.5", hint("uid-shop-cart-1")),
                // node-a's host, and an address no pod or node has.
                tcp("192.168.1.10", "10.244.1.9", None),
                tcp("203.0.113.4", "10.244.1.9", None),
            ],
            ..ObservationBatch::default()
        };
        mapper.observe_as(&batch, Reporter::Node("node-a"), now);
        let mut found = clients(&mapper);
        found.sort();
        assert_eq!(found, ["kube-node/node-a", "shop/web-1"]);
        let stats = mapper.stats();
        assert_eq!(stats.foreign_clients, 2, "node-b's pod by address and by hint");
        assert_eq!(stats.unknown_clients, 1);

        // The same batch from anyone trusted names node-b's pod too.
        let mut trusting = cluster();
        trusting.observe_as(&batch, Reporter::Anyone, now);
        assert!(clients(&trusting).contains(&"shop/cart-1".to_owned()));
    }

    #[test]
    fn a_node_cannot_teach_other_nodes_pods_dns_names_and_aws_proxy_sends_only_aws_calls() {
        let mut mapper = cluster();
        let now = ts("2026-01-02T00:00:01Z");
        let answer = |client: &str| DnsAnswer {
            client_ip: client.parse().unwrap(),
            name: "api.evil.example".into(),
            cnames: vec![],
            addresses: vec!["203.0.113.7".parse().unwrap()],
            ttl_seconds: 60,
            at: ts("2026-01-02T00:00:00Z"),
        };
        mapper.observe_as(
            &ObservationBatch {
                dns: vec![answer("10.244.2.5"), answer("10.244.1.5")],
                ..Default::default()
            },
            Reporter::Node("node-a"),
            now,
        );
        assert_eq!(mapper.stats().foreign_clients, 1);
        assert_eq!(mapper.stats().dns_answers, 1, "only node-a's own pod's answer is remembered");

        let batch = ObservationBatch {
            tcp: vec![tcp("10.244.1.5", "10.244.2.5", None)],
            dns: vec![answer("10.244.1.5")],
            ..Default::default()
        };
        mapper.observe_as(&batch, Reporter::AwsCalls, now);
        assert_eq!(mapper.stats().unpermitted_observations, 2);
        assert!(mapper.snapshot().is_empty());
    }
    #[test]
    fn a_hint_naming_a_pod_the_index_does_not_know_is_decided_by_time() {
        let hinted = |uid: &str, at: &str| TcpConnection {
            at: ts(at),
            ..tcp("10.244.1.5", "10.244.1.9", hint(uid))
        };
        let send = |mapper: &mut Mapper, line: TcpConnection, reporter: Reporter<'_>| {
            let batch = ObservationBatch { tcp: vec![line], ..ObservationBatch::default() };
            mapper.observe_as(&batch, reporter, ts("2026-01-02T01:00:00Z"));
        };

        // The pod is newer than the index: web-1 still holds the address as far as the index
        // knows, the node names web-2 (its watch event not in yet). web-1 is not blamed.
        let mut mapper = cluster();
        send(
            &mut mapper,
            hinted("uid-shop-web-2", "2026-01-02T00:00:00Z"),
            Reporter::Node("node-a"),
        );
        assert!(clients(&mapper).is_empty(), "{:?}", clients(&mapper));
        assert_eq!(mapper.stats().unknown_hinted_pods, 1);
        assert_eq!(mapper.stats().unknown_clients, 0);
        // Once web-2 is indexed (web-1 gone), the same hint names it.
        mapper.index.delete(&mk_pod("shop", "web-1", &["10.244.1.5"]).on_node("node-a"));
        mapper.index.apply(
            &mk_pod("shop", "web-2", &["10.244.1.5"])
                .on_node("node-a")
                .started_at("2026-01-02T00:00:30Z"),
        );
        send(
            &mut mapper,
            hinted("uid-shop-web-2", "2026-01-02T00:01:00Z"),
            Reporter::Node("node-a"),
        );
        assert_eq!(clients(&mapper), ["shop/web-2"]);

        // The pod is older than the index: web-1 was deleted at 00:00:10, the node's report of
        // its connection at 00:00:05 arrives later. Its address lease (same UID) names it still;
        // a connection after its deletion is no one's.
        let mut mapper = cluster();
        mapper.index.delete(
            &mk_pod("shop", "web-1", &["10.244.1.5"])
                .on_node("node-a")
                .deleting_at("2026-01-02T00:00:10Z"),
        );
        assert!(mapper.index.pod_workload_by_uid("uid-shop-web-1").is_none());
        send(
            &mut mapper,
            hinted("uid-shop-web-1", "2026-01-02T00:00:05Z"),
            Reporter::Node("node-a"),
        );
        assert_eq!(clients(&mapper), ["shop/web-1"]);
        send(
            &mut mapper,
            hinted("uid-shop-web-1", "2026-01-02T00:05:00Z"),
            Reporter::Node("node-a"),
        );
        assert_eq!(mapper.stats().unknown_hinted_pods, 1);
        // Another node may not speak for it even then.
        send(
            &mut mapper,
            hinted("uid-shop-web-1", "2026-01-02T00:00:06Z"),
            Reporter::Node("node-b"),
        );
        assert_eq!(mapper.stats().foreign_clients, 1);
        assert_eq!(mapper.snapshot()[0].connections, 1);
    }
}
