//! Where pods run, for the two things that must not take a pod's word for it: which node may
//! report a pod as a client (a node agent speaks for its own node only), and which pods really
//! have an Istio sidecar worth scraping.

use std::net::IpAddr;

use chrono::{DateTime, Utc};

use super::{Index, LabelledPod, Name};
use crate::resolve::lease_at;

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
            return lease_at(leases, at)?.node.as_ref();
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
