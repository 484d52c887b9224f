//! Pods: reduced to what resolution needs, named by their workload (see [`crate::identity`]).
//! A change to a pod brings its IP leases, its node's host ports and the backends of the
//! Services that name or select it up to date.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::api::core::v1::Pod;
use model::{PortSpec, Protocol, WorkloadRef};

use super::{
    dedup_ips, object_key, parse_ip, to_utc, Index, Indexed, Labels, LeaseEnd, Name, ObjectKey,
};
use crate::identity::{
    annotated_workload_name, controller_reference, presumed_deployment, OwnerLink, Workload,
};

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

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PodRecord {
    pub uid: Option<Name>,
    pub labels: Labels,
    pub annotated_name: Option<Name>,
    pub controller: Option<OwnerLink>,
    /// The Deployment to name the pod by while its ReplicaSet is not known.
    pub presumed_owner: Option<OwnerLink>,
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
    pub(super) fn binds_host_ports(&self) -> bool {
        self.end == LeaseEnd::Open && (self.host_network || !self.host_ports.is_empty())
    }
}

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
        let reference = controller_reference(meta);
        let controller = reference.map(|r| OwnerLink {
            kind: self.strings.intern(&r.kind),
            name: self.strings.intern(&r.name),
        });
        let presumed_owner = reference.and_then(|r| presumed_deployment(meta, r)).map(|name| {
            OwnerLink { kind: self.strings.intern("Deployment"), name: self.strings.intern(name) }
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
            // A pod whose deletion was requested but that is still listed (a finalizer holds
            // it, or its grace period runs) holds its IPs until its `deletionTimestamp`, no
            // longer: after that the address is not its own, whatever the object says.
            _ => meta
                .deletion_timestamp
                .as_ref()
                .and_then(to_utc)
                .map_or(LeaseEnd::Open, LeaseEnd::At),
        };
        let workload = Arc::new(self.workload_of(
            &key.namespace,
            &key.name,
            controller.as_ref(),
            presumed_owner.as_ref(),
            annotated_name.as_ref(),
        ));
        PodRecord {
            uid: meta.uid.as_deref().map(|u| self.strings.intern(u)),
            labels: self.intern_labels(meta.labels.as_ref()),
            annotated_name,
            controller,
            presumed_owner,
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

    pub(super) fn refresh_pod_workload(&mut self, key: &ObjectKey) {
        let Some(pod) = self.pods.get(&key.namespace, &key.name) else { return };
        let workload = self.workload_of(
            &key.namespace,
            &key.name,
            pod.controller.as_ref(),
            pod.presumed_owner.as_ref(),
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
}

// === Queries ===

impl Index {
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
}
