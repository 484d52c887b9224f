//! The inventory of the cluster, kept by watchers through `apply` / `delete` / `reset`.
//!
//! Objects are reduced to the few fields resolution needs (a pod is a few hundred bytes, not
//! the tens of kilobytes of its manifest), with strings shared through an interner. Derived
//! lookups (IP → pod leases, ClusterIP → Service, Service → backing workloads, host IP → node)
//! are brought up to date at the end of every change, touching only what the change can affect,
//! so every query is a `&self` read that is never stale.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::api::core::v1::{Node, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use model::{PortSpec, Protocol, WorkloadRef};

use crate::identity::{
    annotated_workload_name, controller_reference, node_workload, OwnerLink, Workload, NODE_KIND,
    NODE_NAMESPACE, POD_KIND,
};
use crate::names::{normalize_dns_name, Interner};

mod nodes;

/// Names are shared, immutable strings.
pub type Name = Arc<str>;

/// The label EndpointSlices carry to name their Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Kinds the index holds as full objects: `apply_meta` refuses them.
const FULL_OBJECT_KINDS: [&str; 5] = ["Pod", "Service", "EndpointSlice", "Node", "Ingress"];

/// A running pod with an address of its own (see [`Index::istio_sidecars`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelledPod {
    pub pod: ObjectKey,
    pub uid: Option<Name>,
    /// Its first address.
    pub ip: IpAddr,
    /// When it started (else was created).
    pub started: Option<DateTime<Utc>>,
    pub workload: Arc<Workload>,
}

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

// === Records ===

/// Labels sorted by key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Labels(Box<[(Name, Name)]>);

impl Labels {
    pub(crate) fn get(&self, key: &str) -> Option<&str> {
        self.0.binary_search_by(|(k, _)| (**k).cmp(key)).ok().map(|i| &*self.0[i].1)
    }

    /// Whether every pair of `selector` is among these labels.
    pub(crate) fn matches(&self, selector: &Labels) -> bool {
        selector.0.iter().all(|(k, v)| self.get(k) == Some(v))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// When a pod's hold on an IP ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeaseEnd {
    Open,
    At(DateTime<Utc>),
    /// Ended at a time nobody told us; `noticed` is when [`Index::prune`] first saw it.
    Unknown {
        noticed: Option<DateTime<Utc>>,
    },
}

/// A pod's hold on an IP: from its start to its deletion.
#[derive(Debug, Clone)]
pub(crate) struct IpLease {
    pub pod: ObjectKey,
    pub uid: Option<Name>,
    pub workload: Arc<Workload>,
    pub from: Option<DateTime<Utc>>,
    pub end: LeaseEnd,
    /// The pod's node, which alone may report it as a client (see [`Index::address_node`]).
    pub node: Option<Name>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodRecord {
    pub uid: Option<Name>,
    pub labels: Labels,
    pub annotated_name: Option<Name>,
    pub controller: Option<OwnerLink>,
    pub ips: Box<[IpAddr]>,
    pub host_network: bool,
    pub node: Option<Name>,
    /// Ports the pod takes on its node's addresses: every container port of a hostNetwork pod,
    /// the `hostPort`s of any other.
    pub host_ports: Box<[PortSpec]>,
    pub from: Option<DateTime<Utc>>,
    /// `Open` while the pod may hold its IPs; set once it has succeeded or failed.
    pub end: LeaseEnd,
    pub workload: Arc<Workload>,
    /// Injected by Istio's sidecar injector (see [`crate::istio::is_injected`]).
    pub istio_sidecar: bool,
}

impl PodRecord {
    fn binds_host_ports(&self) -> bool {
        self.end == LeaseEnd::Open && (self.host_network || !self.host_ports.is_empty())
    }
}

#[derive(Debug, Clone)]
pub(crate) struct OwnerRecord {
    pub kind: Name,
    pub controller: Option<OwnerLink>,
}

/// An object controlled by the owner it is filed under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dependent {
    pub owner_kind: Name,
    pub kind: Name,
    pub name: Name,
}

#[derive(Debug, Clone)]
pub(crate) struct ServiceRecord {
    pub cluster_ips: Box<[IpAddr]>,
    pub selector: Option<Labels>,
    pub external_ips: Box<[Name]>,
    /// `status.loadBalancer.ingress`: IPs and hostnames.
    pub load_balancer: Box<[Name]>,
    pub backends: Arc<[Arc<Workload>]>,
}

#[derive(Debug, Clone)]
pub(crate) struct SliceEndpoint {
    pub addresses: Box<[IpAddr]>,
    pub pod: Option<Name>,
}

#[derive(Debug, Clone)]
pub(crate) struct SliceRecord {
    pub endpoints: Box<[SliceEndpoint]>,
    pub ports: Box<[u16]>,
}

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

#[derive(Debug, Clone)]
pub(crate) struct IngressRule {
    pub host: Option<Name>,
    pub services: Box<[Name]>,
}

#[derive(Debug, Clone)]
pub(crate) struct IngressRecord {
    pub rules: Box<[IngressRule]>,
    pub default_service: Option<Name>,
    pub load_balancer: Box<[Name]>,
}

/// Namespace → name → value, so a namespace can be walked and lookups take `&str`.
#[derive(Debug)]
pub(crate) struct Namespaced<T> {
    by_namespace: HashMap<Name, HashMap<Name, T>>,
}

impl<T> Default for Namespaced<T> {
    fn default() -> Self {
        Self { by_namespace: HashMap::new() }
    }
}

impl<T> Namespaced<T> {
    pub(crate) fn get(&self, namespace: &str, name: &str) -> Option<&T> {
        self.by_namespace.get(namespace)?.get(name)
    }

    pub(crate) fn get_mut(&mut self, namespace: &str, name: &str) -> Option<&mut T> {
        self.by_namespace.get_mut(namespace)?.get_mut(name)
    }

    pub(crate) fn insert(&mut self, key: &ObjectKey, value: T) -> Option<T> {
        self.by_namespace.entry(key.namespace.clone()).or_default().insert(key.name.clone(), value)
    }

    pub(crate) fn entry_or_default(&mut self, key: &ObjectKey) -> &mut T
    where
        T: Default,
    {
        self.by_namespace
            .entry(key.namespace.clone())
            .or_default()
            .entry(key.name.clone())
            .or_default()
    }

    pub(crate) fn remove(&mut self, namespace: &str, name: &str) -> Option<T> {
        let names = self.by_namespace.get_mut(namespace)?;
        let removed = names.remove(name);
        if names.is_empty() {
            self.by_namespace.remove(namespace);
        }
        removed
    }

    pub(crate) fn in_namespace<'a>(
        &'a self,
        namespace: &str,
    ) -> impl Iterator<Item = (&'a Name, &'a T)> + 'a {
        self.by_namespace.get(namespace).into_iter().flatten()
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&Name, &Name, &T)> {
        self.by_namespace
            .iter()
            .flat_map(|(ns, names)| names.iter().map(move |(name, v)| (ns, name, v)))
    }

    pub(crate) fn keys(&self) -> Vec<ObjectKey> {
        self.iter()
            .map(|(ns, name, _)| ObjectKey { namespace: ns.clone(), name: name.clone() })
            .collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.by_namespace.values().map(HashMap::len).sum()
    }
}

/// What a change left to bring up to date.
#[derive(Debug, Default)]
struct Dirty {
    pods: HashSet<ObjectKey>,
    services: HashSet<ObjectKey>,
    hosts: HashSet<Name>,
}

// === Index ===

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
            slices: HashMap::new(),
            slice_services: HashMap::new(),
            service_pods: HashMap::new(),
            pod_services: HashMap::new(),
            selector_backed: HashMap::new(),
            api_server_ips: HashSet::new(),
            api_server_ports: HashSet::new(),
            pod_ips: HashMap::new(),
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
            "Namespace" => {
                if let Some(name) = meta.name.as_deref() {
                    self.namespaces.remove(name);
                }
            }
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
            "Namespace" => {
                self.namespaces.clear();
                for meta in metas {
                    self.apply_namespace(meta);
                }
            }
            _ if FULL_OBJECT_KINDS.contains(&kind) => {
                self.skipped_objects = self.skipped_objects.saturating_add(metas.len() as u64)
            }
            _ => {
                let keep: HashSet<ObjectKey> = metas.iter().filter_map(object_key).collect();
                let gone: Vec<ObjectKey> = self
                    .owners
                    .iter()
                    .filter(|(ns, name, records)| {
                        records.iter().any(|r| *r.kind == *kind)
                            && !keep.contains(&ObjectKey {
                                namespace: (*ns).clone(),
                                name: (*name).clone(),
                            })
                    })
                    .map(|(ns, name, _)| ObjectKey { namespace: ns.clone(), name: name.clone() })
                    .collect();
                for key in gone {
                    self.delete_owner(kind, &key);
                }
                for meta in metas {
                    self.apply_owner(kind, meta);
                }
            }
        }
        self.refresh();
        self.strings.sweep();
    }

    /// Drops IP leases of pods that ended longer than [`IndexConfig::deleted_pod_ip_grace`] ago.
    /// Returns how many were dropped.
    pub fn prune(&mut self, now: DateTime<Utc>) -> usize {
        let grace = self.config.deleted_pod_ip_grace;
        let mut dropped = 0;
        self.pod_ips.retain(|_, leases| {
            let before = leases.len();
            leases.retain_mut(|lease| match &mut lease.end {
                LeaseEnd::Open => true,
                LeaseEnd::At(end) => *end + grace >= now,
                LeaseEnd::Unknown { noticed } => *noticed.get_or_insert(now) + grace >= now,
            });
            dropped += before - leases.len();
            !leases.is_empty()
        });
        dropped
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

    /// Whether any live pod of this workload carries the label `key` (with `value`, if given).
    pub fn workload_has_pod_labelled(
        &self,
        workload: &WorkloadRef,
        key: &str,
        value: Option<&str>,
    ) -> bool {
        self.pods
            .in_namespace(&workload.namespace)
            .filter(|(_, pod)| *pod.workload.name == *workload.name)
            .any(|(_, pod)| match (pod.labels.get(key), value) {
                (Some(found), Some(wanted)) => found == wanted,
                (found, None) => found.is_some(),
                (None, Some(_)) => false,
            })
    }

    /// Running pods (with an address, not on the host network) that `keep` selects, sorted.
    pub(crate) fn running_pods_where(&self, keep: impl Fn(&PodRecord) -> bool) -> Vec<LabelledPod> {
        let mut pods: Vec<LabelledPod> = self
            .pods
            .iter()
            .filter(|(_, _, pod)| pod.end == LeaseEnd::Open && !pod.host_network && keep(pod))
            .filter_map(|(namespace, name, pod)| {
                Some(LabelledPod {
                    pod: ObjectKey { namespace: namespace.clone(), name: name.clone() },
                    uid: pod.uid.clone(),
                    ip: *pod.ips.first()?,
                    started: pod.from,
                    workload: pod.workload.clone(),
                })
            })
            .collect();
        pods.sort_by(|a, b| a.pod.cmp(&b.pod));
        pods
    }

    /// The workload another system names `name` in `namespace` (Istio's `source_workload`, the
    /// workload given for a Kafka log file): the workload of a live pod of that name, or of a
    /// pod whose root controller has that name (an annotation may rename the workload), else a
    /// root owner object (Deployment, StatefulSet...) of that name; `None` if the index knows none.
    pub fn workload_named(&self, namespace: &str, name: &str) -> Option<Arc<Workload>> {
        let mut by_controller = None;
        for (_, pod) in self.pods.in_namespace(namespace) {
            if *pod.workload.name == *name {
                return Some(pod.workload.clone());
            }
            if by_controller.is_none()
                && pod
                    .controller
                    .as_ref()
                    .is_some_and(|c| *self.root_controller(namespace, c).name == *name)
            {
                by_controller = Some(pod.workload.clone());
            }
        }
        by_controller.or_else(|| {
            let root = self.owners.get(namespace, name)?.iter().find(|r| r.controller.is_none())?;
            Some(Arc::new(Workload {
                namespace: namespace.into(),
                name: name.into(),
                kind: root.kind.clone(),
            }))
        })
    }

    pub(crate) fn owner(&self, namespace: &str, kind: &str, name: &str) -> Option<&OwnerRecord> {
        self.owners.get(namespace, name)?.iter().find(|r| *r.kind == *kind)
    }

    fn intern_key(&mut self, key: &ObjectKey) -> ObjectKey {
        ObjectKey {
            namespace: self.strings.intern(&key.namespace),
            name: self.strings.intern(&key.name),
        }
    }

    fn intern_labels(
        &mut self,
        labels: Option<&std::collections::BTreeMap<String, String>>,
    ) -> Labels {
        let pairs = labels
            .into_iter()
            .flatten()
            .map(|(k, v)| (self.strings.intern(k), self.strings.intern(v)))
            .collect();
        Labels(pairs)
    }
}

/// The `kubernetes` Service in `default`, which stands for the API server.
pub(crate) fn is_api_server(service: &ObjectKey) -> bool {
    &*service.namespace == "default" && &*service.name == "kubernetes"
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

// === Namespaces and owners ===

impl Index {
    fn apply_namespace(&mut self, meta: &ObjectMeta) {
        let Some(name) = meta.name.as_deref() else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let name = self.strings.intern(name);
        let labels = self.intern_labels(meta.labels.as_ref());
        self.namespaces.insert(name, labels);
    }

    fn apply_owner(&mut self, kind: &str, meta: &ObjectMeta) {
        let Some(key) = object_key(meta) else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let key = self.intern_key(&key);
        let kind = self.strings.intern(kind);
        let controller = controller_reference(meta).map(|r| OwnerLink {
            kind: self.strings.intern(&r.kind),
            name: self.strings.intern(&r.name),
        });

        let records: &mut Vec<OwnerRecord> = self.owners.entry_or_default(&key);
        let previous = match records.iter_mut().find(|r| r.kind == kind) {
            // Status updates change nothing that identity depends on.
            Some(existing) if existing.controller == controller => return,
            Some(existing) => Some(std::mem::replace(&mut existing.controller, controller.clone())),
            None => {
                records.push(OwnerRecord { kind: kind.clone(), controller: controller.clone() });
                None
            }
        };
        if let Some(Some(old)) = &previous {
            self.unlink(&key, &kind, old);
        }
        if let Some(new) = &controller {
            self.link(&key, &kind, new);
        }
        self.invalidate_dependents(&key.namespace, &kind, &key.name);
    }

    fn delete_owner(&mut self, kind: &str, key: &ObjectKey) {
        let Some(records) = self.owners.get_mut(&key.namespace, &key.name) else { return };
        let Some(at) = records.iter().position(|r| *r.kind == *kind) else { return };
        let removed = records.swap_remove(at);
        if records.is_empty() {
            self.owners.remove(&key.namespace, &key.name);
        }
        let key = self.intern_key(key);
        if let Some(link) = &removed.controller {
            self.unlink(&key, &removed.kind, link);
        }
        self.invalidate_dependents(&key.namespace, &removed.kind, &key.name);
    }

    fn link(&mut self, child: &ObjectKey, child_kind: &Name, owner: &OwnerLink) {
        let owner_key = ObjectKey { namespace: child.namespace.clone(), name: owner.name.clone() };
        let dependent = Dependent {
            owner_kind: owner.kind.clone(),
            kind: child_kind.clone(),
            name: child.name.clone(),
        };
        let dependents = self.dependents.entry_or_default(&owner_key);
        if !dependents.contains(&dependent) {
            dependents.push(dependent);
        }
    }

    fn unlink(&mut self, child: &ObjectKey, child_kind: &Name, owner: &OwnerLink) {
        let Some(dependents) = self.dependents.get_mut(&child.namespace, &owner.name) else {
            return;
        };
        dependents.retain(|d| {
            !(d.owner_kind == owner.kind && d.kind == *child_kind && d.name == child.name)
        });
        if dependents.is_empty() {
            self.dependents.remove(&child.namespace, &owner.name);
        }
    }

    /// Marks for a workload recomputation every pod below this owner.
    fn invalidate_dependents(&mut self, namespace: &Name, kind: &Name, name: &Name) {
        let mut pending = vec![(kind.clone(), name.clone())];
        let mut seen = HashSet::new();
        while let Some((kind, name)) = pending.pop() {
            if !seen.insert((kind.clone(), name.clone())) {
                continue;
            }
            for dependent in self
                .dependents
                .get(namespace, &name)
                .into_iter()
                .flatten()
                .filter(|d| d.owner_kind == kind)
            {
                if dependent.kind == self.pod_kind {
                    self.dirty.pods.insert(ObjectKey {
                        namespace: namespace.clone(),
                        name: dependent.name.clone(),
                    });
                } else {
                    pending.push((dependent.kind.clone(), dependent.name.clone()));
                }
            }
        }
    }
}

// === Pods ===

impl Indexed for Pod {
    fn apply_to(&self, index: &mut Index) {
        index.apply_pod(self);
    }

    fn delete_from(&self, index: &mut Index) {
        let Some(key) = object_key(&self.metadata) else { return };
        let end = self
            .metadata
            .deletion_timestamp
            .as_ref()
            .and_then(to_utc)
            .map_or(LeaseEnd::Unknown { noticed: None }, LeaseEnd::At);
        index.remove_pod(&key, end);
    }

    fn reset_in(objects: &[Self], index: &mut Index) {
        let keep: HashSet<ObjectKey> =
            objects.iter().filter_map(|p| object_key(&p.metadata)).collect();
        for key in index.pods.keys().into_iter().filter(|k| !keep.contains(k)) {
            index.remove_pod(&key, LeaseEnd::Unknown { noticed: None });
        }
        for pod in objects {
            index.apply_pod(pod);
        }
    }
}

impl Index {
    fn apply_pod(&mut self, pod: &Pod) {
        let Some(key) = object_key(&pod.metadata) else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let key = self.intern_key(&key);
        let record = self.pod_record(&key, pod);
        let previous = self.pods.insert(&key, record.clone());
        if previous.as_ref() != Some(&record) {
            self.pod_changed(
                &key,
                previous.as_ref(),
                Some(&record),
                LeaseEnd::Unknown { noticed: None },
            );
        }
    }

    fn remove_pod(&mut self, key: &ObjectKey, end: LeaseEnd) {
        if let Some(previous) = self.pods.remove(&key.namespace, &key.name) {
            let key = self.intern_key(key);
            self.pod_changed(&key, Some(&previous), None, end);
        }
    }

    fn pod_record(&mut self, key: &ObjectKey, pod: &Pod) -> PodRecord {
        let meta = &pod.metadata;
        let spec = pod.spec.as_ref();
        let status = pod.status.as_ref();

        let (annotated, invalid) = annotated_workload_name(meta);
        self.invalid_workload_annotations =
            self.invalid_workload_annotations.saturating_add(invalid);
        let annotated_name = annotated.map(|n| self.strings.intern(n));
        let controller = controller_reference(meta).map(|r| OwnerLink {
            kind: self.strings.intern(&r.kind),
            name: self.strings.intern(&r.name),
        });

        let mut ips: Vec<IpAddr> = status
            .and_then(|s| s.pod_ips.as_ref())
            .into_iter()
            .flatten()
            .filter_map(|p| parse_ip(&p.ip))
            .collect();
        if ips.is_empty() {
            ips.extend(status.and_then(|s| s.pod_ip.as_deref()).and_then(parse_ip));
        }
        let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
        let mut host_ports: Vec<PortSpec> = spec
            .into_iter()
            .flat_map(|s| s.containers.iter().chain(s.init_containers.iter().flatten()))
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let port = if host_network {
                    p.host_port.unwrap_or(p.container_port)
                } else {
                    p.host_port?
                };
                let protocol = p.protocol.as_deref().and_then(Protocol::parse).unwrap_or_default();
                Some(PortSpec { port: u16::try_from(port).ok().filter(|p| *p != 0)?, protocol })
            })
            .collect();
        host_ports.sort_unstable();
        host_ports.dedup();

        let from = status
            .and_then(|s| s.start_time.as_ref())
            .or(meta.creation_timestamp.as_ref())
            .and_then(to_utc);
        let end = match status.and_then(|s| s.phase.as_deref()) {
            Some("Succeeded" | "Failed") => status
                .and_then(|s| s.container_statuses.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|c| {
                    to_utc(c.state.as_ref()?.terminated.as_ref()?.finished_at.as_ref()?)
                })
                .max()
                .map_or(LeaseEnd::Unknown { noticed: None }, LeaseEnd::At),
            _ => LeaseEnd::Open,
        };
        let workload = Arc::new(self.workload_of(
            &key.namespace,
            &key.name,
            controller.as_ref(),
            annotated_name.as_ref(),
        ));
        PodRecord {
            uid: meta.uid.as_deref().map(|u| self.strings.intern(u)),
            labels: self.intern_labels(meta.labels.as_ref()),
            annotated_name,
            controller,
            ips: dedup_ips(ips),
            host_network,
            node: spec.and_then(|s| s.node_name.as_deref()).map(|n| self.strings.intern(n)),
            host_ports: host_ports.into_boxed_slice(),
            from,
            end,
            workload,
            istio_sidecar: crate::istio::is_injected(pod),
        }
    }

    /// Brings everything derived from a pod in line with its new record (`None`: deleted, its
    /// leases ending with `removal_end`).
    fn pod_changed(
        &mut self,
        key: &ObjectKey,
        old: Option<&PodRecord>,
        new: Option<&PodRecord>,
        removal_end: LeaseEnd,
    ) {
        if let Some(uid) = old.and_then(|o| o.uid.as_ref()) {
            if new.and_then(|n| n.uid.as_ref()) != Some(uid) {
                self.pod_uids.remove(uid);
            }
        }
        if let Some(uid) = new.and_then(|n| n.uid.as_ref()) {
            self.pod_uids.insert(uid.clone(), key.clone());
        }

        let old_controller = old.and_then(|o| o.controller.as_ref());
        let new_controller = new.and_then(|n| n.controller.as_ref());
        if old_controller != new_controller {
            let pod_kind = self.pod_kind.clone();
            if let Some(link) = old_controller {
                self.unlink(key, &pod_kind, link);
            }
            if let Some(link) = new_controller {
                self.link(key, &pod_kind, link);
            }
        }

        self.update_leases(key, old, new, removal_end);
        self.update_host_pods(key, old, new);

        if let Some(services) = self.pod_services.get(key) {
            for service in services {
                self.dirty
                    .services
                    .insert(ObjectKey { namespace: key.namespace.clone(), name: service.clone() });
            }
        }
        if let Some(selector_backed) = self.selector_backed.get(&key.namespace) {
            for service in selector_backed {
                let Some(record) = self.services.get(&key.namespace, service) else { continue };
                let Some(selector) = &record.selector else { continue };
                if old.into_iter().chain(new).any(|p| p.labels.matches(selector)) {
                    self.dirty.services.insert(ObjectKey {
                        namespace: key.namespace.clone(),
                        name: service.clone(),
                    });
                }
            }
        }
    }

    fn update_leases(
        &mut self,
        key: &ObjectKey,
        old: Option<&PodRecord>,
        new: Option<&PodRecord>,
        removal_end: LeaseEnd,
    ) {
        if let Some(old) = old.filter(|o| !o.host_network) {
            let kept: &[IpAddr] = match new {
                Some(new) if new.uid == old.uid && !new.host_network => &new.ips,
                _ => &[],
            };
            for ip in old.ips.iter().filter(|ip| !kept.contains(ip)) {
                for lease in self.pod_ips.get_mut(ip).into_iter().flatten() {
                    if lease.pod == *key && lease.uid == old.uid && lease.end == LeaseEnd::Open {
                        lease.end = removal_end;
                    }
                }
            }
        }
        let Some(new) = new.filter(|n| !n.host_network) else { return };
        for ip in new.ips.iter() {
            // Most addresses only ever have one lease.
            let leases = self.pod_ips.entry(*ip).or_insert_with(|| Vec::with_capacity(1));
            match leases.iter_mut().find(|l| l.pod == *key && l.uid == new.uid) {
                Some(lease) => {
                    lease.workload = new.workload.clone();
                    lease.from = new.from;
                    lease.end = new.end;
                    lease.node = new.node.clone();
                }
                None => leases.push(IpLease {
                    pod: key.clone(),
                    uid: new.uid.clone(),
                    workload: new.workload.clone(),
                    from: new.from,
                    end: new.end,
                    node: new.node.clone(),
                }),
            }
        }
    }

    fn update_host_pods(
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
}

// === Services and EndpointSlices ===

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

impl Indexed for EndpointSlice {
    fn apply_to(&self, index: &mut Index) {
        index.apply_slice(self);
    }

    fn delete_from(&self, index: &mut Index) {
        if let Some(key) = object_key(&self.metadata) {
            index.remove_slice(&key);
        }
    }

    fn reset_in(objects: &[Self], index: &mut Index) {
        let keep: HashSet<ObjectKey> =
            objects.iter().filter_map(|s| object_key(&s.metadata)).collect();
        let gone: Vec<ObjectKey> =
            index.slice_services.keys().filter(|k| !keep.contains(*k)).cloned().collect();
        for key in gone {
            index.remove_slice(&key);
        }
        for slice in objects {
            index.apply_slice(slice);
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
        let record = ServiceRecord {
            cluster_ips: dedup_ips(cluster_ips),
            selector,
            external_ips,
            load_balancer,
            backends: Arc::from([]),
        };

        let previous = self.services.insert(&key, record);
        if let Some(previous) = &previous {
            self.unpublish_cluster_ips(&key, &previous.cluster_ips);
        }
        if let Some(current) = self.services.get_mut(&key.namespace, &key.name) {
            if let Some(previous) = previous {
                current.backends = previous.backends;
            }
            for ip in current.cluster_ips.iter() {
                self.service_ips.insert(*ip, key.clone());
            }
        }
        self.dirty.services.insert(key);
    }

    fn remove_service(&mut self, key: &ObjectKey) {
        let Some(previous) = self.services.remove(&key.namespace, &key.name) else { return };
        self.unpublish_cluster_ips(key, &previous.cluster_ips);
        if let Some(backed) = self.selector_backed.get_mut(&key.namespace) {
            backed.remove(&key.name);
        }
    }

    fn unpublish_cluster_ips(&mut self, key: &ObjectKey, ips: &[IpAddr]) {
        for ip in ips {
            if self.service_ips.get(ip) == Some(key) {
                self.service_ips.remove(ip);
            }
        }
    }

    fn apply_slice(&mut self, slice: &EndpointSlice) {
        let Some(slice_key) = object_key(&slice.metadata) else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let Some(service_name) =
            slice.metadata.labels.as_ref().and_then(|l| l.get(SERVICE_NAME_LABEL))
        else {
            // A slice nobody's Service claims says nothing about any Service.
            self.remove_slice(&slice_key);
            return;
        };
        let slice_key = self.intern_key(&slice_key);
        let service = self.intern_key(&ObjectKey::new(&slice_key.namespace, service_name));
        let endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .map(|e| SliceEndpoint {
                addresses: dedup_ips(e.addresses.iter().filter_map(|a| parse_ip(a)).collect()),
                pod: e
                    .target_ref
                    .as_ref()
                    .filter(|r| r.kind.as_deref().is_none_or(|k| k == POD_KIND))
                    .and_then(|r| r.name.as_deref())
                    .map(|n| self.strings.intern(n)),
            })
            .collect();

        if let Some(previous_service) =
            self.slice_services.insert(slice_key.clone(), service.clone())
        {
            if previous_service != service {
                if let Some(slices) = self.slices.get_mut(&previous_service) {
                    slices.remove(&slice_key.name);
                }
                self.slices_changed(&previous_service);
            }
        }
        let ports =
            slice.ports.iter().flatten().filter_map(|p| u16::try_from(p.port?).ok()).collect();
        self.slices
            .entry(service.clone())
            .or_default()
            .insert(slice_key.name.clone(), SliceRecord { endpoints, ports });
        self.slices_changed(&service);
    }

    fn remove_slice(&mut self, slice_key: &ObjectKey) {
        let Some(service) = self.slice_services.remove(slice_key) else { return };
        if let Some(slices) = self.slices.get_mut(&service) {
            slices.remove(&slice_key.name);
            if slices.is_empty() {
                self.slices.remove(&service);
            }
        }
        self.slices_changed(&service);
    }

    fn slices_changed(&mut self, service: &ObjectKey) {
        let slices = self.slices.get(service);
        let mut pods: Vec<Name> = slices
            .into_iter()
            .flat_map(HashMap::values)
            .flat_map(|s| s.endpoints.iter())
            .filter_map(|e| e.pod.clone())
            .collect();
        pods.sort_unstable();
        pods.dedup();
        let previous = self.service_pods.remove(service).unwrap_or_default();
        for pod in previous.iter().filter(|p| pods.binary_search(p).is_err()) {
            let pod_key = ObjectKey { namespace: service.namespace.clone(), name: pod.clone() };
            if let Some(services) = self.pod_services.get_mut(&pod_key) {
                services.retain(|s| *s != service.name);
                if services.is_empty() {
                    self.pod_services.remove(&pod_key);
                }
            }
        }
        for pod in pods.iter().filter(|p| previous.binary_search(p).is_err()) {
            let pod_key = ObjectKey { namespace: service.namespace.clone(), name: pod.clone() };
            self.pod_services
                .entry(pod_key)
                .or_insert_with(|| Vec::with_capacity(1))
                .push(service.name.clone());
        }
        if !pods.is_empty() {
            self.service_pods.insert(service.clone(), pods.into_boxed_slice());
        }

        if is_api_server(service) {
            let slices = self.slices.get(service).into_iter().flat_map(HashMap::values);
            self.api_server_ips = slices
                .clone()
                .flat_map(|s| s.endpoints.iter())
                .flat_map(|e| e.addresses.iter().copied())
                .collect();
            self.api_server_ports = slices.flat_map(|s| s.ports.iter().copied()).collect();
        }
        self.dirty.services.insert(service.clone());
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
}

// === Nodes ===

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
}

// === Ingresses ===

impl Indexed for Ingress {
    fn apply_to(&self, index: &mut Index) {
        index.apply_ingress(self);
    }

    fn delete_from(&self, index: &mut Index) {
        if let Some(key) = object_key(&self.metadata) {
            index.ingresses.remove(&key.namespace, &key.name);
        }
    }

    fn reset_in(objects: &[Self], index: &mut Index) {
        index.ingresses = Namespaced::default();
        for ingress in objects {
            index.apply_ingress(ingress);
        }
    }
}

impl Index {
    fn apply_ingress(&mut self, ingress: &Ingress) {
        let Some(key) = object_key(&ingress.metadata) else {
            self.skipped_objects = self.skipped_objects.saturating_add(1);
            return;
        };
        let key = self.intern_key(&key);
        let spec = ingress.spec.as_ref();
        let backend_service = |b: &IngressBackend| b.service.as_ref().map(|s| s.name.clone());
        let rules = spec
            .and_then(|s| s.rules.as_ref())
            .into_iter()
            .flatten()
            .map(|rule| {
                let services: Vec<String> = rule
                    .http
                    .iter()
                    .flat_map(|h| h.paths.iter())
                    .filter_map(|p| backend_service(&p.backend))
                    .collect();
                IngressRule {
                    host: rule.host.as_deref().map(|h| self.strings.intern(h)),
                    services: services.iter().map(|s| self.strings.intern(s)).collect(),
                }
            })
            .collect();
        let default_service = spec
            .and_then(|s| s.default_backend.as_ref())
            .and_then(backend_service)
            .map(|s| self.strings.intern(&s));
        let load_balancer = ingress
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .flat_map(|i| i.ip.iter().chain(i.hostname.iter()))
            .map(|a| self.strings.intern(a))
            .collect();
        self.ingresses.insert(&key, IngressRecord { rules, default_service, load_balancer });
    }
}

// === Keeping derived lookups current ===

impl Index {
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

    fn refresh_pod_workload(&mut self, key: &ObjectKey) {
        let Some(pod) = self.pods.get(&key.namespace, &key.name) else { return };
        let workload = self.workload_of(
            &key.namespace,
            &key.name,
            pod.controller.as_ref(),
            pod.annotated_name.as_ref(),
        );
        if *pod.workload == workload {
            return;
        }
        let previous = pod.clone();
        let mut current = previous.clone();
        current.workload = Arc::new(workload);
        self.pods.insert(key, current.clone());
        self.pod_changed(key, Some(&previous), Some(&current), LeaseEnd::Unknown { noticed: None });
        // `pod_changed` may have marked services; they are refreshed after all pods.
    }

    fn refresh_service(&mut self, key: &ObjectKey) {
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

    fn refresh_host(&mut self, node: &Name) {
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
