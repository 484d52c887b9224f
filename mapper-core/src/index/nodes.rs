//! Nodes: their addresses and what listens on them (hostNetwork pods and `hostPort`s), and where
//! pods run, for the two things that must not take a pod's word for it: which node may report a
//! pod as a client (a node agent speaks for its own node only), and which pods really have an
//! Istio sidecar worth scraping.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Node;
use model::PortSpec;

use super::{dedup_ips, parse_ip, Index, Indexed, LabelledPod, Name, ObjectKey, PodRecord};
use crate::identity::{node_workload, Workload};
use crate::resolve::lease_at;

/// A node's addresses and what listens on them.
#[derive(Debug)]
pub(crate) struct HostRecord {
    pub has_node_object: bool,
    pub node_ips: Box<[IpAddr]>,
    pub pods: HashMap<ObjectKey, HostPod>,
    /// The addresses currently filed under this node in `Index::host_ips`.
    pub published: Box<[IpAddr]>,
    pub workload: Arc<Workload>,
}

#[derive(Debug, Clone)]
pub(crate) struct HostPod {
    pub ips: Box<[IpAddr]>,
    pub ports: Box<[PortSpec]>,
    pub workload: Arc<Workload>,
}

impl Indexed for Node {
    fn apply_to(&self, index: &mut Index) {
        index.apply_node(self);
    }

    fn delete_from(&self, index: &mut Index) {
        if let Some(name) = self.metadata.name.as_deref() {
            index.remove_node(name);
        }
    }

    fn reset_in(objects: &[Self], index: &mut Index) {
        let keep: HashSet<&str> =
            objects.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
        let gone: Vec<Name> = index
            .hosts
            .iter()
            .filter(|(name, h)| h.has_node_object && !keep.contains(&***name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            index.remove_node(&name);
        }
        for node in objects {
            index.apply_node(node);
        }
    }
}

impl Index {
    fn apply_node(&mut self, node: &Node) {
        let Some(name) = node.metadata.name.as_deref() else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let name = self.strings.intern(name);
        let ips = node
            .status
            .as_ref()
            .and_then(|s| s.addresses.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|a| parse_ip(&a.address))
            .collect();
        let host = self.host(&name);
        host.has_node_object = true;
        host.node_ips = dedup_ips(ips);
        self.dirty.hosts.insert(name);
    }

    fn remove_node(&mut self, name: &str) {
        let Some((name, host)) = self.hosts.get_key_value(name) else { return };
        let name = name.clone();
        if host.has_node_object {
            let host = self.host(&name);
            host.has_node_object = false;
            host.node_ips = Box::default();
            self.dirty.hosts.insert(name);
        }
    }

    pub(super) fn update_host_pods(
        &mut self,
        key: &ObjectKey,
        old: Option<&PodRecord>,
        new: Option<&PodRecord>,
    ) {
        if let Some(node) = old.filter(|o| o.binds_host_ports()).and_then(|o| o.node.as_ref()) {
            if let Some(host) = self.hosts.get_mut(node) {
                host.pods.remove(key);
                self.dirty.hosts.insert(node.clone());
            }
        }
        let Some(new) = new.filter(|n| n.binds_host_ports()) else { return };
        let Some(node) = new.node.clone() else { return };
        let host_pod = HostPod {
            ips: if new.host_network { new.ips.clone() } else { Box::default() },
            ports: new.host_ports.clone(),
            workload: new.workload.clone(),
        };
        self.host(&node).pods.insert(key.clone(), host_pod);
        self.dirty.hosts.insert(node);
    }

    fn host(&mut self, node: &Name) -> &mut HostRecord {
        let (namespace, kind) = (&self.node_namespace, &self.node_kind);
        self.hosts.entry(node.clone()).or_insert_with(|| HostRecord {
            has_node_object: false,
            node_ips: Box::default(),
            pods: HashMap::new(),
            published: Box::default(),
            workload: node_workload(node, namespace, kind),
        })
    }

    pub(super) fn refresh_host(&mut self, node: &Name) {
        let Some(host) = self.hosts.get_mut(node) else { return };
        for ip in host.published.iter() {
            if self.host_ips.get(ip) == Some(node) {
                self.host_ips.remove(ip);
            }
        }
        let ips = dedup_ips(
            host.node_ips
                .iter()
                .chain(host.pods.values().flat_map(|p| p.ips.iter()))
                .copied()
                .collect(),
        );
        for ip in ips.iter() {
            self.host_ips.insert(*ip, node.clone());
        }
        host.published = ips;
        if !host.has_node_object && host.pods.is_empty() {
            self.hosts.remove(node);
        }
    }
}

impl Index {
    /// The node of a live pod, by UID.
    pub fn pod_node_by_uid(&self, uid: &str) -> Option<&Name> {
        let key = self.pod_uids.get(uid)?;
        self.pod_node(&key.namespace, &key.name)
    }

    /// The node of a live pod, by namespace and name.
    pub fn pod_node(&self, namespace: &str, name: &str) -> Option<&Name> {
        self.pods.get(namespace, name)?.node.as_ref()
    }

    /// The node an address belonged to at `at`: the node of the pod that held it, or the node
    /// whose address it is (host processes and hostNetwork pods). `None` for Service addresses,
    /// addresses outside the cluster, and pod addresses nobody held then.
    pub fn address_node(&self, ip: IpAddr, at: DateTime<Utc>) -> Option<&Name> {
        let ip = ip.to_canonical();
        if let Some(leases) = self.pod_ips.get(&ip) {
            return lease_at(leases, at).lease()?.node.as_ref();
        }
        self.host_ips.get(&ip)
    }

    /// Running pods that Istio's injector gave a sidecar (see [`crate::istio::is_injected`]),
    /// with an address of their own, sorted.
    pub fn istio_sidecars(&self) -> Vec<LabelledPod> {
        self.running_pods_where(|pod| pod.istio_sidecar)
    }

    /// Whether Istio's control plane is installed in `namespace`: the namespace exists and holds
    /// istiod's Service (`istiod`, or a revision's `istiod-<revision>`). Creating either takes
    /// rights over that namespace, which a workload's owner does not have.
    pub fn istio_control_plane(&self, namespace: &str) -> bool {
        self.namespaces.contains_key(namespace)
            && self
                .services
                .in_namespace(namespace)
                .any(|(name, _)| &**name == "istiod" || name.starts_with("istiod-"))
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Namespace;

    use crate::fixtures::*;
    use crate::Index;

    #[test]
    fn pods_and_addresses_are_placed_on_their_nodes() {
        let mut index = Index::default();
        index.apply(&mk_node("node-a", &["192.168.1.10"]));
        index.apply(&mk_pod("shop", "web-1", &["10.244.1.5"]).on_node("node-a"));
        index.apply(&mk_pod("shop", "cart-1", &["10.244.2.5"]).on_node("node-b"));
        let now = ts("2026-01-02T00:00:00Z");
        assert_eq!(index.pod_node("shop", "web-1").map(|n| &**n), Some("node-a"));
        assert_eq!(index.pod_node_by_uid("uid-shop-cart-1").map(|n| &**n), Some("node-b"));
        assert_eq!(
            index.address_node("10.244.1.5".parse().unwrap(), now).map(|n| &**n),
            Some("node-a")
        );
        assert_eq!(
            index.address_node("10.244.2.5".parse().unwrap(), now).map(|n| &**n),
            Some("node-b")
        );
        assert_eq!(
            index.address_node("192.168.1.10".parse().unwrap(), now).map(|n| &**n),
            Some("node-a"),
            "the node's own address"
        );
        assert_eq!(index.address_node("203.0.113.9".parse().unwrap(), now), None);
        assert_eq!(
            index.address_node("10.244.1.5".parse().unwrap(), ts("2025-01-01T00:00:00Z")),
            None,
            "before the pod existed"
        );
    }

    #[test]
    fn only_injected_pods_are_sidecars_and_only_istiod_in_its_namespace_is_istio() {
        let mut index = Index::default();
        index.apply(&mk_pod("shop", "cart-1", &["10.244.2.5"]).with_istio_sidecar());
        // The label alone is what anyone can put on a pod.
        index.apply(
            &mk_pod("shop", "fake-1", &["10.244.2.6"])
                .labelled(crate::ISTIO_SIDECAR_LABEL, "istio"),
        );
        let sidecars: Vec<String> =
            index.istio_sidecars().iter().map(|p| p.pod.name.to_string()).collect();
        assert_eq!(sidecars, ["cart-1"]);

        assert!(!index.istio_control_plane("istio-system"));
        index.apply(&mk_service("attacker", "istiod", &["10.96.5.5"], &[]));
        assert!(
            !index.istio_control_plane("istio-system"),
            "an istiod Service elsewhere is not Istio"
        );
        index.apply_meta(
            "Namespace",
            &Namespace { metadata: mk_namespace("istio-system"), ..Default::default() }.metadata,
        );
        assert!(
            !index.istio_control_plane("istio-system"),
            "an empty namespace is not Istio either"
        );
        index.apply(&mk_service(
            "istio-system",
            "istiod-1-22",
            &["10.96.0.40"],
            &[("app", "istiod")],
        ));
        assert!(index.istio_control_plane("istio-system"));
    }
}
