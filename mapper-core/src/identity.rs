//! Which workload a pod belongs to.
//!
//! 1. A name on the pod names it, first match wins: the annotation
//!    `intents.otterize.com/workload-name`, the deprecated annotation
//!    `intents.otterize.com/service-name`, the label `otterize/service-name` (the name Otterize's
//!    network mapper documents), then our own annotation `intentmap.dev/workload-name`. Only the
//!    pod's own metadata is read (set it in the pod template); a value that is not a Kubernetes
//!    name is ignored, counted in
//!    [`IndexStats::invalid_workload_annotations`](crate::IndexStats), and the next one is tried.
//!    The name replaces the name only: the kind is still the root controller's.
//! 2. Otherwise the controller owner references are followed to the root: Pod → ReplicaSet →
//!    Deployment, Pod → Job → CronJob, Pod → StatefulSet, Pod → ReplicaSet → Rollout, any kind.
//!    The walk stops at an owner the index does not hold and names the workload by that
//!    reference's kind and name, with one exception: a pod of a ReplicaSet the index does not
//!    hold (yet: its watch is behind, or re-listing after a break), whose `pod-template-hash`
//!    label ends the ReplicaSet's name (`<deployment>-<hash>`, as only the Deployment
//!    controller names them), is named by that Deployment, so a watch gap never puts a
//!    ReplicaSet's name on the map. A pod without a controller reference follows its first
//!    owner reference, if any.
//! 3. A pod without owners is its own workload, of kind `Pod`.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use model::WorkloadRef;

use crate::index::{Index, Name};
use crate::names::{is_kind, is_kubernetes_name};

/// Where on a pod a workload name can be set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameSource {
    Annotation(&'static str),
    Label(&'static str),
}

/// Pod annotations and labels that name the pod's workload, in order of precedence.
pub const WORKLOAD_NAME_SOURCES: [NameSource; 4] = [
    NameSource::Annotation("intents.otterize.com/workload-name"),
    NameSource::Annotation("intents.otterize.com/service-name"),
    NameSource::Label("otterize/service-name"),
    NameSource::Annotation("intentmap.dev/workload-name"),
];

/// Nodes (and host processes on them) appear as workloads of kind [`NODE_KIND`] in this
/// namespace: a report needs a namespace, nodes have none, and `kube-` names are reserved for
/// Kubernetes itself, so no user namespace can collide with it.
pub const NODE_NAMESPACE: &str = "kube-node";
pub const NODE_KIND: &str = "Node";
pub const POD_KIND: &str = "Pod";

/// Owner chains longer than this are cut (they are loops or nonsense).
const MAX_OWNER_DEPTH: usize = 8;

/// A workload as resolved from the inventory: cheap to clone and to hash.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Workload {
    pub namespace: Name,
    pub name: Name,
    /// Empty for a workload known only by name (from Istio telemetry or a Kafka log file's
    /// configuration) that the index does not hold.
    pub kind: Name,
}

impl Workload {
    pub fn to_ref(&self) -> WorkloadRef {
        WorkloadRef::new(&self.namespace, &self.name, Some(&*self.kind).filter(|k| !k.is_empty()))
    }

    /// A workload known only by its name, of unknown kind.
    pub fn named(namespace: &str, name: &str, kind: Option<&str>) -> Self {
        Workload { namespace: namespace.into(), name: name.into(), kind: kind.unwrap_or("").into() }
    }

    /// Whether this is the workload `r` names (kinds are not compared, as in `model::EdgeKey`).
    pub fn is(&self, r: &WorkloadRef) -> bool {
        *self.namespace == *r.namespace && *self.name == *r.name
    }
}

/// A controller reference: who owns an object, by kind and name in the object's namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct OwnerLink {
    pub kind: Name,
    pub name: Name,
}

/// The owner reference the workload walk follows: the controller, else the first one. A
/// reference that could not name a workload in a report is not followed.
pub(crate) fn controller_reference(meta: &ObjectMeta) -> Option<&OwnerReference> {
    let refs = meta.owner_references.as_deref()?;
    refs.iter()
        .find(|r| r.controller == Some(true))
        .or_else(|| refs.first())
        .filter(|r| is_kind(&r.kind) && is_kubernetes_name(&r.name))
}

/// The label the Deployment controller sets on its ReplicaSets' pods, also the end of each
/// ReplicaSet's name.
const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// The Deployment a pod's ReplicaSet presumably belongs to, by the Deployment controller's
/// naming (`<deployment>-<pod-template-hash>`), for when the ReplicaSet itself is not known.
pub(crate) fn presumed_deployment<'a>(
    meta: &'a ObjectMeta,
    controller: &'a OwnerReference,
) -> Option<&'a str> {
    if controller.kind != "ReplicaSet" {
        return None;
    }
    let hash = meta.labels.as_ref()?.get(POD_TEMPLATE_HASH)?;
    let deployment = controller.name.strip_suffix(hash.as_str())?.strip_suffix('-')?;
    (!hash.is_empty() && is_kubernetes_name(deployment)).then_some(deployment)
}

/// The workload name the pod's annotations or labels give, and how many of them were unusable.
pub(crate) fn annotated_workload_name(meta: &ObjectMeta) -> (Option<&str>, u64) {
    let mut invalid = 0;
    for source in WORKLOAD_NAME_SOURCES {
        let value = match source {
            NameSource::Annotation(key) => meta.annotations.as_ref().and_then(|a| a.get(key)),
            NameSource::Label(key) => meta.labels.as_ref().and_then(|l| l.get(key)),
        };
        if let Some(value) = value {
            let value = value.trim();
            if is_kubernetes_name(value) {
                return (Some(value), invalid);
            }
            invalid += 1;
        }
    }
    (None, invalid)
}

// === impl Index ===

impl Index {
    /// The root of the controller chain that starts at `first`, in `namespace`.
    pub(crate) fn root_controller<'a>(
        &'a self,
        namespace: &str,
        first: &'a OwnerLink,
    ) -> &'a OwnerLink {
        let mut current = first;
        for _ in 0..MAX_OWNER_DEPTH {
            match self
                .owner(namespace, &current.kind, &current.name)
                .and_then(|o| o.controller.as_ref())
            {
                Some(next) => current = next,
                None => break,
            }
        }
        current
    }

    /// The workload of a pod with this controller and annotated name; `presumed` is the owner
    /// to name it by while the index does not hold its controller (see the module's notes).
    pub(crate) fn workload_of(
        &self,
        namespace: &Name,
        pod_name: &Name,
        controller: Option<&OwnerLink>,
        presumed: Option<&OwnerLink>,
        annotated: Option<&Name>,
    ) -> Workload {
        let (kind, name) = match controller {
            Some(link) => {
                let first = match presumed {
                    Some(presumed) if self.owner(namespace, &link.kind, &link.name).is_none() => {
                        presumed
                    }
                    _ => link,
                };
                let root = self.root_controller(namespace, first);
                (root.kind.clone(), root.name.clone())
            }
            None => (self.pod_kind.clone(), pod_name.clone()),
        };
        Workload { namespace: namespace.clone(), name: annotated.cloned().unwrap_or(name), kind }
    }
}

pub(crate) fn node_workload(node: &Name, namespace: &Name, kind: &Name) -> Arc<Workload> {
    Arc::new(Workload { namespace: namespace.clone(), name: node.clone(), kind: kind.clone() })
}
