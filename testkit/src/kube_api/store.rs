//! The object store: the served resource types, the objects by type, namespace and name, the
//! change history watches replay, and what tests set up (token reviews, grants, pod logs).

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use chrono::{DateTime, Utc};
use kube::core::NamespaceResourceScope;
use kube::Resource;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::reviews::{Grant, TokenIdentity};
use super::MAX_HISTORY;

/// The built-in resources served before anything is applied: group, version, plural, kind,
/// namespaced.
const BUILT_IN: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "pods", "Pod", true),
    ("", "v1", "services", "Service", true),
    ("", "v1", "nodes", "Node", false),
    ("", "v1", "namespaces", "Namespace", false),
    ("apps", "v1", "replicasets", "ReplicaSet", true),
    ("apps", "v1", "deployments", "Deployment", true),
    ("apps", "v1", "statefulsets", "StatefulSet", true),
    ("apps", "v1", "daemonsets", "DaemonSet", true),
    ("batch", "v1", "jobs", "Job", true),
    ("batch", "v1", "cronjobs", "CronJob", true),
    ("discovery.k8s.io", "v1", "endpointslices", "EndpointSlice", true),
    ("networking.k8s.io", "v1", "ingresses", "Ingress", true),
];

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct Gvr {
    pub(super) group: String,
    pub(super) version: String,
    pub(super) plural: String,
}

impl Gvr {
    pub(super) fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

#[derive(Clone, Debug)]
pub(super) struct ResourceType {
    pub(super) gvr: Gvr,
    pub(super) kind: String,
    pub(super) namespaced: bool,
}

impl ResourceType {
    pub(super) fn of<K>() -> Self
    where
        K: Resource<DynamicType = ()>,
        K::Scope: 'static,
    {
        Self {
            gvr: Gvr {
                group: K::group(&()).into_owned(),
                version: K::version(&()).into_owned(),
                plural: K::plural(&()).into_owned(),
            },
            kind: K::kind(&()).into_owned(),
            namespaced: TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of the change history.
pub(super) struct Change {
    pub(super) rv: u64,
    pub(super) gvr: Gvr,
    pub(super) namespace: String,
    pub(super) kind: ChangeKind,
    pub(super) object: Value,
    /// The object before a modification, so selector-filtered watches can tell an object
    /// leaving or entering their selection.
    pub(super) previous: Option<Value>,
}

/// Objects by (namespace, name); the namespace is empty for cluster-scoped objects.
pub(super) type Objects = BTreeMap<(String, String), Value>;

pub(super) struct Store {
    pub(super) types: HashMap<Gvr, ResourceType>,
    pub(super) objects: HashMap<Gvr, Objects>,
    pub(super) resource_version: u64,
    /// Watches from a version older than this get 410 Gone.
    pub(super) compacted: u64,
    pub(super) history: VecDeque<Change>,
    pub(super) token_reviews: HashMap<String, Option<TokenIdentity>>,
    pub(super) grants: Vec<Grant>,
    pub(super) requests: HashMap<String, usize>,
    /// Pod logs by (namespace, pod).
    pub(super) pod_logs: HashMap<(String, String), PodLog>,
}

/// One pod's log: its lines, where follow streams are to be cut, and how many follow it.
#[derive(Default)]
pub(super) struct PodLog {
    pub(super) entries: Vec<(DateTime<Utc>, String)>,
    pub(super) cuts: Vec<LogCut>,
    pub(super) followers: usize,
}

/// Follow streams open when this was added send the entries before `entry`, then `sent` bytes
/// of `entry` (if any), then end.
pub(super) struct LogCut {
    pub(super) entry: usize,
    pub(super) sent: usize,
}

impl Store {
    pub(super) fn register(&mut self, ty: ResourceType) {
        self.types.entry(ty.gvr.clone()).or_insert(ty);
    }

    fn next_version(&mut self) -> u64 {
        self.resource_version += 1;
        self.resource_version
    }

    fn record(&mut self, change: Change) {
        self.history.push_back(change);
        while self.history.len() > MAX_HISTORY {
            if let Some(dropped) = self.history.pop_front() {
                self.compacted = dropped.rv;
            }
        }
    }

    pub(super) fn apply(&mut self, ty: ResourceType, mut value: Value) -> u64 {
        let gvr = ty.gvr.clone();
        let (api_version, kind, namespaced) = (gvr.api_version(), ty.kind.clone(), ty.namespaced);
        self.register(ty);
        let obj = value.as_object_mut().expect("a Kubernetes object serializes to a JSON object");
        obj.insert("apiVersion".into(), api_version.into());
        obj.insert("kind".into(), kind.into());
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        let meta = meta.as_object_mut().expect("metadata was just made an object");
        let name = meta
            .get("name")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
            .expect("FakeApiServer::apply: the object has no metadata.name")
            .to_owned();
        let namespace = if namespaced {
            let ns = meta
                .get("namespace")
                .and_then(Value::as_str)
                .filter(|n| !n.is_empty())
                .unwrap_or("default")
                .to_owned();
            meta.insert("namespace".into(), ns.clone().into());
            ns
        } else {
            meta.remove("namespace");
            String::new()
        };
        let key = (namespace, name);
        let previous = self.object(&gvr, &key).cloned();
        let earlier = |field: &str| {
            previous
                .as_ref()
                .and_then(|p| p["metadata"].get(field))
                .filter(|v| !v.is_null())
                .cloned()
        };
        if meta.get("uid").is_none_or(Value::is_null) {
            let uid = earlier("uid").unwrap_or_else(|| uuid::Uuid::new_v4().to_string().into());
            meta.insert("uid".into(), uid);
        }
        if meta.get("creationTimestamp").is_none_or(Value::is_null) {
            let created = earlier("creationTimestamp").unwrap_or_else(|| {
                chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into()
            });
            meta.insert("creationTimestamp".into(), created);
        }
        self.put(&gvr, key, value).0
    }

    /// Stores `value` under `key` with a new `resourceVersion` and records the change; returns
    /// the version and the stored object.
    pub(super) fn put(
        &mut self,
        gvr: &Gvr,
        key: (String, String),
        mut value: Value,
    ) -> (u64, Value) {
        let rv = self.next_version();
        value["metadata"]["resourceVersion"] = rv.to_string().into();
        let previous =
            self.objects.entry(gvr.clone()).or_default().insert(key.clone(), value.clone());
        let kind = if previous.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        self.record(Change {
            rv,
            gvr: gvr.clone(),
            namespace: key.0,
            kind,
            object: value.clone(),
            previous,
        });
        (rv, value)
    }

    pub(super) fn object(&self, gvr: &Gvr, key: &(String, String)) -> Option<&Value> {
        self.objects.get(gvr)?.get(key)
    }

    pub(super) fn delete(
        &mut self,
        gvr: &Gvr,
        namespace: String,
        name: String,
    ) -> Option<(u64, Value)> {
        let mut object = self.objects.get_mut(gvr)?.remove(&(namespace.clone(), name))?;
        let rv = self.next_version();
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        self.record(Change {
            rv,
            gvr: gvr.clone(),
            namespace,
            kind: ChangeKind::Deleted,
            object: object.clone(),
            previous: None,
        });
        Some((rv, object))
    }
}

pub(super) struct Shared {
    store: Mutex<Store>,
    /// The latest resourceVersion; watches wake up when it changes.
    pub(super) changes: watch::Sender<u64>,
    /// Bumped when a pod log changes; follow streams wake up.
    pub(super) log_changes: watch::Sender<u64>,
    pub(super) shutdown: watch::Sender<bool>,
}

impl Shared {
    pub(super) fn new() -> Self {
        let types = BUILT_IN
            .iter()
            .map(|&(group, version, plural, kind, namespaced)| {
                let gvr =
                    Gvr { group: group.into(), version: version.into(), plural: plural.into() };
                (gvr.clone(), ResourceType { gvr, kind: kind.into(), namespaced })
            })
            .collect();
        let store = Store {
            types,
            objects: HashMap::new(),
            resource_version: 1,
            compacted: 1,
            history: VecDeque::new(),
            token_reviews: HashMap::new(),
            grants: Vec::new(),
            requests: HashMap::new(),
            pod_logs: HashMap::new(),
        };
        Self {
            store: Mutex::new(store),
            changes: watch::Sender::new(1),
            log_changes: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
        }
    }

    pub(super) fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
