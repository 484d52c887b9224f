//! What an observed address or DNS name is, at the time it was seen.
//!
//! An address is tried, in order, as:
//! 1. a Service ClusterIP → the Service and the workloads behind it (`default/kubernetes`: the API server);
//! 2. a pod IP → the pod that held it at that time. Each IP keeps a history of leases (pod,
//!    from its start, until its deletion or completion): a connection is blamed on the newest
//!    pod whose lease covers its time, so an IP reused by a newer pod is not blamed for a
//!    connection seen before that pod existed, and a deleted pod keeps naming its IP for
//!    connections seen before its deletion (plus [`CLOCK_TOLERANCE`]) until
//!    [`Index::prune`](crate::Index::prune) drops the lease after the grace period. An address
//!    with a history but no lease at that time is [`Resolution::Unattributed`], never guessed;
//!    one that two running pods' leases cover at that time (a CNI race, a stale pod object) is
//!    [`Resolution::Contested`], neither's. A pod still listed after its `deletionTimestamp`
//!    (a finalizer holds it) leases its IPs only until then;
//! 3. a node address with a port a hostNetwork pod (any container port) or a `hostPort` takes
//!    on that node → that pod's workload;
//! 4. an endpoint of the API server → the API server;
//! 5. any other node address (hostNetwork clients, host processes) → the node, as the workload
//!    named after the node, kind `Node`, in namespace [`NODE_NAMESPACE`](crate::NODE_NAMESPACE);
//! 6. anything else → outside the cluster.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use model::PortSpec;

use crate::identity::Workload;
use crate::index::{is_api_server, HostRecord, Index, IpLease, LeaseEnd, ObjectKey};
use crate::names::normalize_dns_name;

/// How far past a pod's deletion a connection's timestamp may lie and still be blamed on it:
/// Kubernetes timestamps have whole seconds and node clocks drift a little.
pub const CLOCK_TOLERANCE: TimeDelta = TimeDelta::seconds(2);

/// How an address or name was tied to a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    PodIp,
    HostPort,
    Node,
    DnsName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// A pod's workload, a hostNetwork pod's (by port) or a node.
    Workload { workload: Arc<Workload>, via: Via },
    /// A Service and the workloads behind it (none when nothing backs it).
    Service { service: ObjectKey, backends: Arc<[Arc<Workload>]> },
    /// The Kubernetes API server: the `kubernetes` Service in `default`.
    ApiServer,
    /// Not a cluster address.
    External(IpAddr),
    /// A pod address that no pod held at that time.
    Unattributed,
    /// A pod address two running pods held at that time (a CNI race, or a stale pod object):
    /// named as neither, never guessed.
    Contested,
}

impl Resolution {
    /// The workload of a client: only pods, hostNetwork pods and nodes open connections.
    pub fn client(&self) -> Option<&Arc<Workload>> {
        match self {
            Resolution::Workload { workload, .. } => Some(workload),
            _ => None,
        }
    }
}

impl Index {
    /// What `ip` was at time `at`; `port` (the destination port) tells hostNetwork pods apart.
    pub fn resolve_address(
        &self,
        ip: IpAddr,
        at: DateTime<Utc>,
        port: Option<PortSpec>,
    ) -> Resolution {
        let ip = ip.to_canonical();
        if let Some(service) = self.service_ips.get(&ip) {
            return self.service_resolution(service);
        }
        if let Some(leases) = self.pod_ips.get(&ip) {
            return match lease_at(leases, at) {
                Held::By(lease) => {
                    Resolution::Workload { workload: lease.workload.clone(), via: Via::PodIp }
                }
                Held::Contested => Resolution::Contested,
                Held::Nobody => Resolution::Unattributed,
            };
        }
        let host = self.host_ips.get(&ip).and_then(|node| self.hosts.get(node));
        if let Some(workload) = host.and_then(|h| port.and_then(|p| host_port_owner(h, p))) {
            return Resolution::Workload { workload: workload.clone(), via: Via::HostPort };
        }
        if self.api_server_ips.contains(&ip)
            && port.is_none_or(|p| {
                self.api_server_ports.is_empty() || self.api_server_ports.contains(&p.port)
            })
        {
            return Resolution::ApiServer;
        }
        match host {
            Some(host) => Resolution::Workload { workload: host.workload.clone(), via: Via::Node },
            None => Resolution::External(ip),
        }
    }

    /// The workloads that a connection from outside the cluster to `ip`:`port` reached at `at`
    /// (incoming internet traffic): a pod's address → its workload; a load balancer's or an
    /// external address of Services → the workloads behind those of them that serve `port`; a
    /// node's address → the hostNetwork pod that takes `port` there, else the workloads behind
    /// the Service whose node port it is. Empty when it reached nothing known.
    pub fn resolve_incoming(&self, ip: IpAddr, port: u16, at: DateTime<Utc>) -> Vec<Arc<Workload>> {
        let ip = ip.to_canonical();
        if let Some(leases) = self.pod_ips.get(&ip) {
            return lease_at(leases, at)
                .lease()
                .map(|l| vec![l.workload.clone()])
                .unwrap_or_default();
        }
        let backends_of = |keys: &mut dyn Iterator<Item = &ObjectKey>| {
            let mut found: Vec<Arc<Workload>> = Vec::new();
            for key in keys {
                let Some(service) = self.services.get(&key.namespace, &key.name) else { continue };
                for backend in service.backends.iter() {
                    if !found.contains(backend) {
                        found.push(backend.clone());
                    }
                }
            }
            found
        };
        if let Some(keys) = self.outside_ips.get(&ip) {
            let serving = keys.iter().filter(|k| {
                self.services
                    .get(&k.namespace, &k.name)
                    .is_some_and(|s| s.ports.iter().any(|p| p.port == port))
            });
            return backends_of(&mut { serving });
        }
        let Some(host) = self.host_ips.get(&ip).and_then(|node| self.hosts.get(node)) else {
            return Vec::new();
        };
        let spec = PortSpec { port, protocol: model::Protocol::Tcp };
        if let Some(workload) = host_port_owner(host, spec) {
            return vec![workload.clone()];
        }
        backends_of(&mut self.node_ports.get(&port).into_iter())
    }

    /// What an in-cluster DNS name stands for; `None` for names outside the cluster or unknown.
    ///
    /// Understood: `svc.ns.svc.<domain>`, `svc.ns.svc`, `svc.ns` (Services, if they exist),
    /// `1-2-3-4.ns.pod.<domain>` (pods by address; IPv6 with `-` for `:`), and
    /// `host.svc.ns.svc.<domain>` (a StatefulSet pod by name, or a pod by dashed address).
    pub fn resolve_name(&self, name: &str) -> Option<Resolution> {
        let name = normalize_dns_name(name);
        let domain = &self.domain;
        let in_domain = name.strip_suffix(domain.as_str()).and_then(|rest| rest.strip_suffix('.'));
        let local = in_domain.unwrap_or(&name);
        if let Some(rest) = local.strip_suffix(".svc") {
            let labels: Vec<&str> = rest.split('.').collect();
            return match labels[..] {
                [service, namespace] => self.service_by_name(namespace, service),
                // A pod's own name under its Service (a StatefulSet pod, a dashed address);
                // when no such pod is known, the Service the name is under.
                [host, service, namespace] => self
                    .pod_by_host(namespace, host)
                    .or_else(|| self.service_by_name(namespace, service)),
                _ => None,
            };
        }
        if let Some(rest) = in_domain.and_then(|l| l.strip_suffix(".pod")) {
            return match rest.split('.').collect::<Vec<_>>()[..] {
                [dashed, namespace] => self.pod_by_dashed_ip(namespace, dashed),
                _ => None,
            };
        }
        if in_domain.is_none() {
            if let [service, namespace] = local.split('.').collect::<Vec<_>>()[..] {
                return self.service_by_name(namespace, service);
            }
        }
        None
    }

    /// Who held a pod address at `at` (`Nobody` for addresses that are no pod's).
    pub(crate) fn pod_address_at(&self, ip: IpAddr, at: DateTime<Utc>) -> Held<'_> {
        self.pod_ips.get(&ip.to_canonical()).map_or(Held::Nobody, |leases| lease_at(leases, at))
    }

    /// Whether a DNS name belongs to the cluster's own zone (not an internet destination).
    pub fn is_cluster_name(&self, name: &str) -> bool {
        let name = normalize_dns_name(name);
        let domain = &self.domain;
        name == *domain
            || name.strip_suffix(domain.as_str()).is_some_and(|rest| rest.ends_with('.'))
            || name.ends_with(".svc")
            || self.resolve_name(&name).is_some()
    }

    /// The workload of a live pod, by namespace and name.
    pub fn pod_workload(&self, namespace: &str, name: &str) -> Option<Arc<Workload>> {
        self.pods.get(namespace, name).map(|p| p.workload.clone())
    }

    /// The workload of a live pod, by UID.
    pub fn pod_workload_by_uid(&self, uid: &str) -> Option<Arc<Workload>> {
        let key = self.pod_uids.get(uid)?;
        self.pod_workload(&key.namespace, &key.name)
    }

    fn service_resolution(&self, key: &ObjectKey) -> Resolution {
        if is_api_server(key) {
            return Resolution::ApiServer;
        }
        let backends = self
            .services
            .get(&key.namespace, &key.name)
            .map(|s| s.backends.clone())
            .unwrap_or_else(|| Arc::from([]));
        Resolution::Service { service: key.clone(), backends }
    }

    fn service_by_name(&self, namespace: &str, name: &str) -> Option<Resolution> {
        self.services.get(namespace, name)?;
        Some(self.service_resolution(&ObjectKey::new(namespace, name)))
    }

    fn pod_by_host(&self, namespace: &str, host: &str) -> Option<Resolution> {
        if let Some(found) = self.pod_by_dashed_ip(namespace, host) {
            return Some(found);
        }
        let workload = self.pod_workload(namespace, host)?;
        Some(Resolution::Workload { workload, via: Via::DnsName })
    }

    fn pod_by_dashed_ip(&self, namespace: &str, dashed: &str) -> Option<Resolution> {
        let ip = dashed_ip(dashed)?;
        let lease = self
            .pod_ips
            .get(&ip)?
            .iter()
            .filter(|l| l.end == LeaseEnd::Open && *l.pod.namespace == *namespace)
            .max_by_key(|l| l.from)?;
        Some(Resolution::Workload { workload: lease.workload.clone(), via: Via::DnsName })
    }
}

/// Who held an address at a time.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Held<'a> {
    By(&'a IpLease),
    /// Two pods that are both still running hold it.
    Contested,
    Nobody,
}

impl<'a> Held<'a> {
    pub(crate) fn lease(self) -> Option<&'a IpLease> {
        match self {
            Held::By(lease) => Some(lease),
            Held::Contested | Held::Nobody => None,
        }
    }
}

/// The lease that held the address at `at`: the newest one begun by then and not ended before.
/// Two leases of running pods that both cover `at` contest the address: it is neither's.
pub(crate) fn lease_at(leases: &[IpLease], at: DateTime<Utc>) -> Held<'_> {
    let covering = || {
        leases.iter().filter(|l| l.from.is_none_or(|from| from <= at)).filter(|l| match l.end {
            LeaseEnd::At(end) => at <= end + CLOCK_TOLERANCE,
            LeaseEnd::Open | LeaseEnd::Unknown { .. } => true,
        })
    };
    let mut running = covering().filter(|l| l.end == LeaseEnd::Open);
    // Leases are per pod and UID, so a second open one is another pod's.
    if running.next().is_some() && running.next().is_some() {
        return Held::Contested;
    }
    covering().max_by_key(|l| l.from).map_or(Held::Nobody, Held::By)
}

/// The one workload that takes `port` on this node, if exactly one does.
fn host_port_owner(host: &HostRecord, port: PortSpec) -> Option<&Arc<Workload>> {
    let mut owners = host.pods.values().filter(|p| p.ports.contains(&port)).map(|p| &p.workload);
    let first = owners.next()?;
    owners.all(|w| w == first).then_some(first)
}

/// `10-244-0-5` or `fd00--5` as an address.
fn dashed_ip(dashed: &str) -> Option<IpAddr> {
    if let Ok(v4) = dashed.replace('-', ".").parse::<Ipv4Addr>() {
        return Some(IpAddr::V4(v4));
    }
    dashed.replace('-', ":").parse::<Ipv6Addr>().ok().map(|v6| IpAddr::V6(v6).to_canonical())
}
