//! Services: their ClusterIPs, the addresses that expose them, and the workloads behind them
//! (from their EndpointSlices, else their selector), kept current as pods come and go.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Service;

use super::{
    dedup_ips, object_key, parse_ip, Index, Indexed, Labels, LeaseEnd, Name, ObjectKey, PodRecord,
};
use crate::identity::Workload;

#[derive(Debug, Clone)]
pub(crate) struct ServiceRecord {
    pub cluster_ips: Box<[IpAddr]>,
    pub selector: Option<Labels>,
    pub external_ips: Box<[Name]>,
    /// `status.loadBalancer.ingress`: IPs and hostnames.
    pub load_balancer: Box<[Name]>,
    /// `spec.ports`: each port and the node port that forwards to it, if any.
    pub ports: Box<[ServicePort]>,
    pub backends: Arc<[Arc<Workload>]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ServicePort {
    pub port: u16,
    pub node_port: Option<u16>,
}

impl ServiceRecord {
    /// The addresses outside the cluster that reach it: external IPs and load balancer IPs.
    fn outside_ips(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.external_ips.iter().chain(self.load_balancer.iter()).filter_map(|a| parse_ip(a))
    }
}

/// The `kubernetes` Service in `default`, which stands for the API server.
pub(crate) fn is_api_server(service: &ObjectKey) -> bool {
    &*service.namespace == "default" && &*service.name == "kubernetes"
}

impl Indexed for Service {
    fn apply_to(&self, index: &mut Index) {
        index.apply_service(self);
    }

    fn delete_from(&self, index: &mut Index) {
        if let Some(key) = object_key(&self.metadata) {
            index.remove_service(&key);
        }
    }

    fn reset_in(objects: &[Self], index: &mut Index) {
        let keep: HashSet<ObjectKey> =
            objects.iter().filter_map(|s| object_key(&s.metadata)).collect();
        for key in index.services.keys().into_iter().filter(|k| !keep.contains(k)) {
            index.remove_service(&key);
        }
        for service in objects {
            index.apply_service(service);
        }
    }
}

impl Index {
    fn apply_service(&mut self, service: &Service) {
        let Some(key) = object_key(&service.metadata) else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let key = self.intern_key(&key);
        let spec = service.spec.as_ref();
        let mut cluster_ips: Vec<IpAddr> = spec
            .and_then(|s| s.cluster_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|ip| parse_ip(ip))
            .collect();
        cluster_ips.extend(spec.and_then(|s| s.cluster_ip.as_deref()).and_then(parse_ip));
        let selector = spec
            .and_then(|s| s.selector.as_ref())
            .map(|s| self.intern_labels(Some(s)))
            .filter(|s| !s.is_empty());
        let external_ips = spec
            .and_then(|s| s.external_ips.as_ref())
            .into_iter()
            .flatten()
            .map(|ip| self.strings.intern(ip))
            .collect();
        let load_balancer = service
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|i| i.ip.iter().chain(i.hostname.iter()))
            .map(|a| self.strings.intern(a))
            .collect();
        let ports = spec
            .and_then(|s| s.ports.as_ref())
            .into_iter()
            .flatten()
            .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
            .filter_map(|p| {
                Some(ServicePort {
                    port: u16::try_from(p.port).ok()?,
                    node_port: p.node_port.and_then(|n| u16::try_from(n).ok()),
                })
            })
            .collect();
        let record = ServiceRecord {
            cluster_ips: dedup_ips(cluster_ips),
            selector,
            external_ips,
            load_balancer,
            ports,
            backends: Arc::from([]),
        };

        let previous = self.services.insert(&key, record);
        if let Some(previous) = &previous {
            self.unpublish_cluster_ips(&key, &previous.cluster_ips);
            self.unpublish_outside(&key, previous);
        }
        if let Some(current) = self.services.get_mut(&key.namespace, &key.name) {
            if let Some(previous) = previous {
                current.backends = previous.backends;
            }
            for ip in current.cluster_ips.iter() {
                self.service_ips.insert(*ip, key.clone());
            }
            for ip in current.outside_ips() {
                let keys = self.outside_ips.entry(ip).or_default();
                if !keys.contains(&key) {
                    keys.push(key.clone());
                }
            }
            for node_port in current.ports.iter().filter_map(|p| p.node_port) {
                self.node_ports.insert(node_port, key.clone());
            }
        }
        self.dirty.services.insert(key);
    }

    fn remove_service(&mut self, key: &ObjectKey) {
        let Some(previous) = self.services.remove(&key.namespace, &key.name) else { return };
        self.unpublish_cluster_ips(key, &previous.cluster_ips);
        self.unpublish_outside(key, &previous);
        if let Some(backed) = self.selector_backed.get_mut(&key.namespace) {
            backed.remove(&key.name);
        }
    }

    fn unpublish_outside(&mut self, key: &ObjectKey, service: &ServiceRecord) {
        for ip in service.outside_ips() {
            if let Some(keys) = self.outside_ips.get_mut(&ip) {
                keys.retain(|k| k != key);
                if keys.is_empty() {
                    self.outside_ips.remove(&ip);
                }
            }
        }
        for node_port in service.ports.iter().filter_map(|p| p.node_port) {
            if self.node_ports.get(&node_port) == Some(key) {
                self.node_ports.remove(&node_port);
            }
        }
    }

    fn unpublish_cluster_ips(&mut self, key: &ObjectKey, ips: &[IpAddr]) {
        for ip in ips {
            if self.service_ips.get(ip) == Some(key) {
                self.service_ips.remove(ip);
            }
        }
    }

    /// The workloads behind a Service: its EndpointSlices' pods, else the pods its selector matches.
    fn backends_of(
        &self,
        key: &ObjectKey,
        service: &ServiceRecord,
    ) -> (Arc<[Arc<Workload>]>, bool) {
        let live = |pod: &&PodRecord| pod.end == LeaseEnd::Open;
        let mut found: Vec<Arc<Workload>> = self
            .service_pods
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.pods.get(&key.namespace, name))
            .filter(live)
            .map(|pod| pod.workload.clone())
            .collect();
        let mut from_selector = false;
        if found.is_empty() {
            if let Some(selector) = &service.selector {
                from_selector = true;
                found.extend(
                    self.pods
                        .in_namespace(&key.namespace)
                        .map(|(_, pod)| pod)
                        .filter(live)
                        .filter(|pod| pod.labels.matches(selector))
                        .map(|pod| pod.workload.clone()),
                );
            }
        }
        found.sort_unstable();
        found.dedup();
        (found.into(), from_selector)
    }

    pub(super) fn refresh_service(&mut self, key: &ObjectKey) {
        let Some(service) = self.services.get(&key.namespace, &key.name) else { return };
        let (backends, from_selector) = self.backends_of(key, service);
        if let Some(service) = self.services.get_mut(&key.namespace, &key.name) {
            service.backends = backends;
        }
        let backed = self.selector_backed.entry(key.namespace.clone()).or_default();
        if from_selector {
            backed.insert(key.name.clone());
        } else {
            backed.remove(&key.name);
            if backed.is_empty() {
                self.selector_backed.remove(&key.namespace);
            }
        }
    }
}
