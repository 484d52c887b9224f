//! Who may say what about whom. A node agent sees its own node: it may name its own pods (and
//! the node's host processes) as clients, no one else's. Without this, one node's token would
//! forge calls for every pod in the cluster.

use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use model::observation::PodHint;

use super::Mapper;
use crate::identity::Workload;

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

/// The client named is on another node than the reporter's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Foreign;

impl Mapper {
    /// The client's workload as `reporter` may name it: `Ok(None)` when it names no known pod
    /// or node, `Err(Foreign)` when it names one the reporter does not speak for.
    pub(crate) fn reported_client(
        &self,
        reporter: Reporter<'_>,
        hint: Option<&PodHint>,
        src: IpAddr,
        at: DateTime<Utc>,
    ) -> Result<Option<Arc<Workload>>, Foreign> {
        let Reporter::Node(node) = reporter else { return Ok(self.client(hint, src, at)) };
        if let Some(hint) = hint {
            let by_uid = hint.uid.as_deref().and_then(|uid| {
                Some((self.index.pod_node_by_uid(uid), self.index.pod_workload_by_uid(uid)?))
            });
            let by_name = || {
                let (namespace, name) = (hint.namespace.as_deref()?, hint.name.as_deref()?);
                Some((
                    self.index.pod_node(namespace, name),
                    self.index.pod_workload(namespace, name)?,
                ))
            };
            if let Some((pod_node, workload)) = by_uid.or_else(by_name) {
                return match pod_node {
                    Some(pod_node) if &**pod_node == node => Ok(Some(workload)),
                    _ => Err(Foreign),
                };
            }
        }
        match self.index.address_node(src, at) {
            Some(owner) if &**owner == node => Ok(self.client(None, src, at)),
            Some(_) => Err(Foreign),
            None => Ok(None),
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
            src_ip: src.parse().unwrap(),
            src_port: 40000,
            dst_ip: dst.parse().unwrap(),
            dst_port: 8080,
            at: ts("2026-01-02T00:00:00Z"),
            count: 1,
            pid: None,
            netns: None,
            pod,
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
}
