//! The inventory of the cluster, kept by watchers through `apply` / `delete` / `reset`.
//!
//! Objects are reduced to the few fields resolution needs (a pod is a few hundred bytes, not
//! the tens of kilobytes of its manifest), with strings shared through an interner. Derived
//! lookups (IP → pod leases, ClusterIP → Service, Service → backing workloads, host IP → node)
//! are brought up to date at the end of every change, touching only what the change can affect,
//! so every query is a `&self` read that is never stale.
//!
//! The shared [`Index`] type and its entry points are here; what each kind of object becomes,
//! and what keeps the lookups derived from it current, is in a file of its own: pods (with the
//! IP leases they take), owners (workload controllers) and namespaces, Services, EndpointSlices,
//! nodes and Ingresses.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};

use crate::identity::{NODE_KIND, NODE_NAMESPACE, POD_KIND};
use crate::names::{normalize_dns_name, Interner};

mod endpoint_slices;
mod ingresses;
mod labels;
mod leases;
mod namespaced;
mod namespaces;
mod nodes;
mod owners;
mod pods;
mod services;

pub use pods::LabelledPod;

pub(crate) use endpoint_slices::SliceRecord;
pub(crate) use ingresses::IngressRecord;
pub(crate) use labels::Labels;
pub(crate) use leases::{IpLease, LeaseEnd};
pub(crate) use namespaced::Namespaced;
pub(crate) use nodes::HostRecord;
pub(crate) use owners::{Dependent, OwnerRecord};
pub(crate) use pods::PodRecord;
pub(crate) use services::{is_api_server, ServiceRecord};

/// Names are shared, immutable strings.
pub type Name = Arc<str>;

/// Kinds the index holds as full objects: `apply_meta` refuses them.
const FULL_OBJECT_KINDS: [&str; 5] = ["Pod", "Service", "EndpointSlice", "Node", "Ingress"];

/// A namespaced object's name.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectKey {
    pub namespace: Name,
    pub name: Name,
}

impl ObjectKey {
    pub fn new(namespace: &str, name: &str) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

#[derive(Debug, Clone)]
pub struct IndexConfig {
    /// The cluster's DNS domain: `svc.ns.svc.<cluster_domain>`.
    pub cluster_domain: String,
    /// How long a deleted pod's IP still names it, for connections observed before the deletion
    /// that are reported late. Ended leases are dropped by [`Index::prune`] after this.
    pub deleted_pod_ip_grace: TimeDelta,
}

impl Default for IndexConfig {
    fn default() -> Self {
        Self {
            cluster_domain: "cluster.local".to_owned(),
            deleted_pod_ip_grace: TimeDelta::minutes(5),
        }
    }
}

/// Sizes and counters, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IndexStats {
    pub namespaces: usize,
    pub pods: usize,
    pub owners: usize,
    pub services: usize,
    pub endpoint_slices: usize,
    pub nodes: usize,
    pub ingresses: usize,
    /// Pod IPs with at least one lease, and the leases (current and recently ended).
    pub pod_ips: usize,
    pub pod_ip_leases: usize,
    /// Objects without a name, or full-object kinds given to `apply_meta`.
    pub skipped_objects: u64,
    /// Workload-name annotations (and `otterize/service-name` labels) whose value is not a
    /// Kubernetes name.
    pub invalid_workload_annotations: u64,
}

/// What a change left to bring up to date.
#[derive(Debug, Default)]
struct Dirty {
    pods: HashSet<ObjectKey>,
    services: HashSet<ObjectKey>,
    hosts: HashSet<Name>,
}

/// The cluster inventory. See the module documentation.
#[derive(Debug)]
pub struct Index {
    pub(crate) config: IndexConfig,
    /// The cluster domain, lowercase and without a trailing dot.
    pub(crate) domain: String,
    strings: Interner,
    pub(crate) pod_kind: Name,
    node_namespace: Name,
    node_kind: Name,

    pub(crate) namespaces: HashMap<Name, Labels>,
    pub(crate) pods: Namespaced<PodRecord>,
    pub(crate) pod_uids: HashMap<Name, ObjectKey>,
    pub(crate) owners: Namespaced<Vec<OwnerRecord>>,
    /// Owner name → the objects it controls (any kind, pods included).
    dependents: Namespaced<Vec<Dependent>>,
    pub(crate) services: Namespaced<ServiceRecord>,
    pub(crate) service_ips: HashMap<IpAddr, ObjectKey>,
    /// External and load balancer addresses → the Services they reach (several may share one).
    pub(crate) outside_ips: HashMap<IpAddr, Vec<ObjectKey>>,
    /// Node ports → the Service each forwards to (node ports are unique in a cluster).
    pub(crate) node_ports: HashMap<u16, ObjectKey>,
    /// Service → slice name → slice.
    pub(crate) slices: HashMap<ObjectKey, HashMap<Name, SliceRecord>>,
    slice_services: HashMap<ObjectKey, ObjectKey>,
    /// Service → the pods its slices name, and back.
    service_pods: HashMap<ObjectKey, Box<[Name]>>,
    pod_services: HashMap<ObjectKey, Vec<Name>>,
    /// Services whose backends come from their selector, by namespace: pod changes there may change them.
    selector_backed: HashMap<Name, HashSet<Name>>,
    /// The API server's own addresses and ports (the endpoints of `default/kubernetes`).
    pub(crate) api_server_ips: HashSet<IpAddr>,
    pub(crate) api_server_ports: HashSet<u16>,
    pub(crate) pod_ips: HashMap<IpAddr, Vec<IpLease>>,
    /// Every /24 (IPv4) and /64 (IPv6) a pod address was ever seen in: the pod network, whose
    /// addresses are never clients from outside the cluster. Never shrinks (a few entries a node).
    pub(crate) pod_networks: HashSet<(bool, u128)>,
    pub(crate) hosts: HashMap<Name, HostRecord>,
    pub(crate) host_ips: HashMap<IpAddr, Name>,
    pub(crate) ingresses: Namespaced<IngressRecord>,

    dirty: Dirty,
    skipped_objects: u64,
    invalid_workload_annotations: u64,
}

impl Default for Index {
    fn default() -> Self {
        Self::new(IndexConfig::default())
    }
}

/// Kubernetes objects the index holds in full: `index.apply(&pod)`, `index.delete(&pod)`,
/// `index.reset(&pods)`.
pub trait Indexed: sealed::Sealed + Sized {
    #[doc(hidden)]
    fn apply_to(&self, index: &mut Index);
    #[doc(hidden)]
    fn delete_from(&self, index: &mut Index);
    #[doc(hidden)]
    fn reset_in(objects: &[Self], index: &mut Index);
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for k8s_openapi::api::core::v1::Pod {}
    impl Sealed for k8s_openapi::api::core::v1::Service {}
    impl Sealed for k8s_openapi::api::core::v1::Node {}
    impl Sealed for k8s_openapi::api::discovery::v1::EndpointSlice {}
    impl Sealed for k8s_openapi::api::networking::v1::Ingress {}
}

impl Index {
    pub fn new(config: IndexConfig) -> Self {
        let mut strings = Interner::default();
        let pod_kind = strings.intern(POD_KIND);
        let node_namespace = strings.intern(NODE_NAMESPACE);
        let node_kind = strings.intern(NODE_KIND);
        Self {
            domain: normalize_dns_name(&config.cluster_domain),
            config,
            strings,
            pod_kind,
            node_namespace,
            node_kind,
            namespaces: HashMap::new(),
            pods: Namespaced::default(),
            pod_uids: HashMap::new(),
            owners: Namespaced::default(),
            dependents: Namespaced::default(),
            services: Namespaced::default(),
            service_ips: HashMap::new(),
            outside_ips: HashMap::new(),
            node_ports: HashMap::new(),
            slices: HashMap::new(),
            slice_services: HashMap::new(),
            service_pods: HashMap::new(),
            pod_services: HashMap::new(),
            selector_backed: HashMap::new(),
            api_server_ips: HashSet::new(),
            api_server_ports: HashSet::new(),
            pod_ips: HashMap::new(),
            pod_networks: HashSet::new(),
            hosts: HashMap::new(),
            host_ips: HashMap::new(),
            ingresses: Namespaced::default(),
            dirty: Dirty::default(),
            skipped_objects: 0,
            invalid_workload_annotations: 0,
        }
    }

    pub fn config(&self) -> &IndexConfig {
        &self.config
    }

    /// A new or updated object.
    pub fn apply<R: Indexed>(&mut self, object: &R) {
        object.apply_to(self);
        self.refresh();
    }

    /// An object that is gone. A pod's IPs keep naming it for connections observed before its
    /// `deletionTimestamp` (see [`IndexConfig::deleted_pod_ip_grace`]).
    pub fn delete<R: Indexed>(&mut self, object: &R) {
        object.delete_from(self);
        self.refresh();
    }

    /// The complete current set of objects of one kind (a watcher's initial list or relist).
    pub fn reset<R: Indexed>(&mut self, objects: &[R]) {
        R::reset_in(objects, self);
        self.refresh();
        self.strings.sweep();
    }

    /// A new or updated object known by its metadata only: `Namespace` or any owner kind
    /// (`ReplicaSet`, `Deployment`, `StatefulSet`, `DaemonSet`, `Job`, `CronJob`, `Rollout`, ...).
    pub fn apply_meta(&mut self, kind: &str, meta: &ObjectMeta) {
        match kind {
            "Namespace" => self.apply_namespace(meta),
            _ if FULL_OBJECT_KINDS.contains(&kind) => {
                self.skipped_objects = self.skipped_objects.saturating_add(1)
            }
            _ => self.apply_owner(kind, meta),
        }
        self.refresh();
    }

    pub fn delete_meta(&mut self, kind: &str, meta: &ObjectMeta) {
        match kind {
            "Namespace" => self.delete_namespace(meta),
            _ if FULL_OBJECT_KINDS.contains(&kind) => {
                self.skipped_objects = self.skipped_objects.saturating_add(1)
            }
            _ => {
                if let Some(key) = object_key(meta) {
                    self.delete_owner(kind, &key);
                }
            }
        }
        self.refresh();
    }

    pub fn reset_meta(&mut self, kind: &str, metas: &[ObjectMeta]) {
        match kind {
            "Namespace" => self.reset_namespaces(metas),
            _ if FULL_OBJECT_KINDS.contains(&kind) => {
                self.skipped_objects = self.skipped_objects.saturating_add(metas.len() as u64)
            }
            _ => self.reset_owners(kind, metas),
        }
        self.refresh();
        self.strings.sweep();
    }

    pub fn stats(&self) -> IndexStats {
        IndexStats {
            namespaces: self.namespaces.len(),
            pods: self.pods.len(),
            owners: self.owners.iter().map(|(_, _, records)| records.len()).sum(),
            services: self.services.len(),
            endpoint_slices: self.slices.values().map(HashMap::len).sum(),
            nodes: self.hosts.values().filter(|h| h.has_node_object).count(),
            ingresses: self.ingresses.len(),
            pod_ips: self.pod_ips.len(),
            pod_ip_leases: self.pod_ips.values().map(Vec::len).sum(),
            skipped_objects: self.skipped_objects,
            invalid_workload_annotations: self.invalid_workload_annotations,
        }
    }

    fn intern_key(&mut self, key: &ObjectKey) -> ObjectKey {
        ObjectKey {
            namespace: self.strings.intern(&key.namespace),
            name: self.strings.intern(&key.name),
        }
    }

    /// Brings the derived lookups up to date with what the last change touched.
    fn refresh(&mut self) {
        for key in std::mem::take(&mut self.dirty.pods) {
            self.refresh_pod_workload(&key);
        }
        for key in std::mem::take(&mut self.dirty.services) {
            self.refresh_service(&key);
        }
        for node in std::mem::take(&mut self.dirty.hosts) {
            self.refresh_host(&node);
        }
    }
}

fn object_key(meta: &ObjectMeta) -> Option<ObjectKey> {
    Some(ObjectKey::new(meta.namespace.as_deref().unwrap_or(""), meta.name.as_deref()?))
}

pub(crate) fn to_utc(time: &Time) -> Option<DateTime<Utc>> {
    let nanos = u32::try_from(time.0.subsec_nanosecond()).ok()?;
    DateTime::from_timestamp(time.0.as_second(), nanos)
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    s.trim().parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
}

fn dedup_ips(mut ips: Vec<IpAddr>) -> Box<[IpAddr]> {
    ips.sort_unstable();
    ips.dedup();
    ips.into_boxed_slice()
}
