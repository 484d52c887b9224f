//! A **stand-in** Kubernetes API server for tests and the local demo. It is not a Kubernetes
//! API server and must never be mistaken for one: no API server can be installed on these
//! machines, so the real `kube::Client` (and `kube::runtime` watchers and reflectors) talk to
//! this one, in process, over real HTTP on 127.0.0.1.
//!
//! What it serves, following the Kubernetes API conventions that `kube-runtime` relies on:
//!
//! - LIST, WATCH and GET of the built-in resources the mapper reads (pods, services, nodes,
//!   namespaces, replicasets, deployments, statefulsets, daemonsets, jobs, cronjobs,
//!   endpointslices, ingresses) and of any other type once it is [`FakeApiServer::register`]ed
//!   or [`FakeApiServer::apply`]d, namespaced (`/api/v1/namespaces/{ns}/pods`, all namespaces
//!   at `/api/v1/pods`) or cluster-scoped (`/api/v1/nodes`).
//! - One global, monotonically increasing `resourceVersion`. Watches replay the change history
//!   after the requested version, then follow live changes; a version older than the last
//!   [`FakeApiServer::compact`] gets a single `ERROR` event carrying a 410 `Expired` `Status`.
//!   `BOOKMARK`s follow the replay and every [`BOOKMARK_INTERVAL`] of quiet when
//!   `allowWatchBookmarks` is set, and the stream ends after `timeoutSeconds`.
//!   `sendInitialEvents=true` (streaming lists) is honoured, ending with the
//!   `k8s.io/initial-events-end` bookmark.
//! - `labelSelector` (`k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`) and
//!   `fieldSelector` (`path=v`, `path!=v` over any dotted field path such as `metadata.name` or
//!   `spec.nodeName`). A watch with a label selector sees an object that stops (starts)
//!   matching as `DELETED` (`ADDED`), as a real server does.
//! - Metadata-only requests: `Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1`
//!   (lists) and `as=PartialObjectMetadata` (watches and single GETs) are answered with
//!   `meta.k8s.io/v1` `PartialObjectMetadata(List)` objects that carry only `metadata`.
//! - Writes of every served type, namespaced (`POST /api/v1/namespaces/{ns}/configmaps`) or
//!   cluster-scoped (`/apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations`):
//!   - `POST` creates (201) with a new `uid`, `creationTimestamp` and `resourceVersion` (and a
//!     name from `generateName`); an existing name is a 409 `AlreadyExists`.
//!   - `PUT` replaces (200), keeping `uid` and `creationTimestamp`; a `resourceVersion` in the
//!     body that is not the stored one is a 409 `Conflict`, as is a different `uid`.
//!   - `PATCH` with `application/merge-patch+json` (RFC 7386), `application/json-patch+json`
//!     (RFC 6902; a malformed patch is a 400, an operation that cannot apply a 422) or
//!     `application/strategic-merge-patch+json`, which is applied **as a JSON merge patch**:
//!     lists are replaced rather than merged by key, and a patch carrying a strategic directive
//!     (`$patch`, `$retainKeys`, ...) is refused with a 400 rather than mis-applied. Server-side
//!     apply (`application/apply-patch+yaml`) is a 415. The patched object is stored as a `PUT`
//!     of it would be.
//!   - `DELETE` removes at once and answers with the object; `DeleteOptions.preconditions`
//!     (`uid`, `resourceVersion`) are checked (409).
//!   - A missing object is a 404 `NotFound`; a body whose `apiVersion`, `kind`, namespace or
//!     name contradicts the URL is a 400.
//!
//!   Every write takes the next `resourceVersion` and is seen by watches exactly like
//!   [`FakeApiServer::apply`] and [`FakeApiServer::delete`]; [`FakeApiServer::get`] reads what
//!   was written.
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`, answered from
//!   [`FakeApiServer::set_token_review`] and [`FakeApiServer::set_token_identity`] (audiences
//!   and `user.extra`, as projected tokens have), and
//!   `POST /apis/authorization.k8s.io/v1/subjectaccessreviews`, answered from
//!   [`FakeApiServer::grant`] (see `kube_api/reviews.rs`).
//! - The pod log subresource, `GET /api/v1/namespaces/{ns}/pods/{name}/log`, serving the lines
//!   tests add with [`FakeApiServer::append_log`]: `timestamps=true` prefixes each line with
//!   its time as the kubelet does (RFC 3339 with up to nine fractional digits, trailing zeros
//!   dropped, `Z`); `sinceTime` (RFC 3339) and `sinceSeconds` keep the lines stamped at or after
//!   that time, `tailLines` the last ones; `follow=true` keeps the stream open and sends lines
//!   as they are added, until the pod is deleted, the server stops, or the test cuts it with
//!   [`FakeApiServer::cut_log_streams`] or, in the middle of a line, with
//!   [`FakeApiServer::append_log_and_cut`]. A pod has one log whatever container is asked for,
//!   but the `container` must be one of the pod's, and must be named when it has several (400
//!   otherwise, as on a real server); `previous=true` is a 400 (no container ever restarted)
//!   and `limitBytes` is refused with a 400. A pod that does not exist is a 404.
//! - Everything else is a 404 (or a 405 for a method a path does not serve, such as `POST` to
//!   the all-namespaces `/api/v1/configmaps`) with a Kubernetes `Status` body.
//!
//! Deliberate limitations: only types that are built in, [`FakeApiServer::register`]ed or
//! [`FakeApiServer::apply`]d are served; written objects are not validated against their schema
//! and no defaults are filled in (a write a real server would refuse as `Invalid` may be stored);
//! namespaces need not exist; there are no admission webhooks, finalizers, graceful deletion,
//! `generation`, `managedFields`, `dryRun` (refused with a 400), `deletecollection`,
//! subresources other than `pods/log` (`/status`, `/scale`, `/exec`, ...) or discovery; lists ignore `limit`/`continue` and
//! always return the latest state in one page; there is no authentication or authorisation of
//! callers; the history keeps the last [`MAX_HISTORY`] changes and older ones are compacted away.

use std::any::TypeId;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use anyhow::Context as _;
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use chrono::{DateTime, Utc};
use kube::core::NamespaceResourceScope;
use kube::Resource;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

mod reviews;
use reviews::Grant;
pub use reviews::{TokenIdentity, API_AUDIENCE};

/// How long a watch with `allowWatchBookmarks` may be quiet before it gets a `BOOKMARK`.
pub const BOOKMARK_INTERVAL: Duration = Duration::from_secs(2);
/// How many changes the server remembers for watches to replay; older ones are compacted away.
pub const MAX_HISTORY: usize = 10_000;
/// The watch duration when a request names no `timeoutSeconds` (the real default is 30–60 min).
const DEFAULT_WATCH_TIMEOUT: Duration = Duration::from_secs(30 * 60);

const META_API_VERSION: &str = "meta.k8s.io/v1";

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

/// A stand-in Kubernetes API server listening on 127.0.0.1; see the [module docs](self).
///
/// It serves from a tokio task of the runtime that called [`FakeApiServer::start`] and stops
/// when dropped (open watches end, new connections are refused).
pub struct FakeApiServer {
    shared: Arc<Shared>,
    url: String,
    task: JoinHandle<()>,
}

impl FakeApiServer {
    /// Binds a free port on 127.0.0.1 and starts serving.
    pub async fn start() -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the stand-in Kubernetes API server to 127.0.0.1")?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new());
        let app = Router::new().fallback(handle).with_state(shared.clone());
        let task = tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::warn!(%err, "the stand-in Kubernetes API server stopped");
            }
        });
        debug!(%addr, "stand-in Kubernetes API server listening");
        Ok(Self { shared, url: format!("http://{addr}"), task })
    }

    /// The base URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.url.clone()
    }

    /// A real `kube::Client` for this server: default namespace `default`, no authentication.
    ///
    /// Must be called inside a tokio runtime (the client spawns its request buffer there).
    pub fn client(&self) -> kube::Client {
        let uri = self.url.parse().expect("the stand-in API server's URL is a valid URI");
        kube::Client::try_from(kube::Config::new(uri))
            .expect("a kube client for the stand-in API server")
    }

    /// Makes the resource type `K` served (an empty collection) before any object of it is
    /// applied, e.g. a custom resource the code under test watches.
    pub fn register<K>(&self)
    where
        K: Resource<DynamicType = ()>,
        K::Scope: 'static,
    {
        self.shared.store().register(ResourceType::of::<K>());
    }

    /// Creates or replaces `obj` (by namespace and name) and returns its new `resourceVersion`.
    ///
    /// The stored object gets `apiVersion`/`kind`, the new `resourceVersion`, the `uid` and
    /// `creationTimestamp` it had before (or new ones) unless `obj` sets them, and the
    /// namespace `default` when a namespaced object has none. Watches see `ADDED` or `MODIFIED`.
    ///
    /// # Panics
    /// If `obj` has no `metadata.name`.
    pub fn apply<K>(&self, obj: &K) -> String
    where
        K: Resource<DynamicType = ()> + serde::Serialize,
        K::Scope: 'static,
    {
        let value = serde_json::to_value(obj).expect("a Kubernetes object serializes to JSON");
        let rv = self.shared.store().apply(ResourceType::of::<K>(), value);
        self.shared.changes.send_replace(rv);
        rv.to_string()
    }

    /// Deletes the object with `obj`'s namespace and name, if there is one, and returns the
    /// deletion's `resourceVersion`. Watches see `DELETED` with the object at that version.
    pub fn delete<K>(&self, obj: &K) -> Option<String>
    where
        K: Resource<DynamicType = ()>,
        K::Scope: 'static,
    {
        let ty = ResourceType::of::<K>();
        let namespace = if ty.namespaced {
            obj.meta().namespace.clone().unwrap_or_else(|| "default".to_owned())
        } else {
            String::new()
        };
        let name = obj.meta().name.clone().unwrap_or_default();
        let (rv, _) = self.shared.store().delete(&ty.gvr, namespace, name)?;
        self.shared.changes.send_replace(rv);
        Some(rv.to_string())
    }

    /// The stored object of type `K` named `name` in `namespace` (ignored for cluster-scoped
    /// types), as the last write left it; for tests to check what the code under test wrote.
    ///
    /// # Panics
    /// If the stored JSON does not deserialize into `K` (the server does not validate writes).
    pub fn get<K>(&self, namespace: &str, name: &str) -> Option<K>
    where
        K: Resource<DynamicType = ()> + serde::de::DeserializeOwned,
        K::Scope: 'static,
    {
        let ty = ResourceType::of::<K>();
        let namespace = if ty.namespaced { namespace.to_owned() } else { String::new() };
        let value = self.shared.store().object(&ty.gvr, &(namespace, name.to_owned())).cloned()?;
        Some(serde_json::from_value(value).unwrap_or_else(|err| {
            panic!("the stored {} {name:?} does not deserialize: {err}", ty.kind)
        }))
    }

    /// Forgets the change history: a watch (or an exact list) from any `resourceVersion` older
    /// than the current one now gets 410 Gone, reason `Expired`. Live watches that have not yet
    /// caught up with the latest change get it too, as on a real server.
    pub fn compact(&self) {
        let rv = {
            let mut store = self.shared.store();
            store.compacted = store.resource_version;
            store.history.clear();
            store.resource_version
        };
        self.shared.changes.send_replace(rv);
    }

    /// How `POST .../tokenreviews` answers for `token`: authenticated as `(username, groups)`
    /// whatever audiences are asked for, or not authenticated for `None`. Tokens never set are
    /// not authenticated either.
    pub fn set_token_review(&self, token: &str, user: Option<(&str, Vec<String>)>) {
        let identity = user.map(|(name, groups)| TokenIdentity {
            username: name.to_owned(),
            groups,
            ..TokenIdentity::default()
        });
        self.shared.store().token_reviews.insert(token.to_owned(), identity);
    }

    /// `token` authenticates as `identity`, for its audiences only (see [`TokenIdentity`]).
    pub fn set_token_identity(&self, token: &str, identity: TokenIdentity) {
        self.shared.store().token_reviews.insert(token.to_owned(), Some(identity));
    }

    /// `POST .../subjectaccessreviews` allows `user` to `verb` the `resource` of API `group` in
    /// `namespace` (`None`: every namespace). Anything not granted is denied.
    pub fn grant(
        &self,
        user: &str,
        verb: &str,
        group: &str,
        resource: &str,
        namespace: Option<&str>,
    ) {
        let grant = Grant {
            user: user.into(),
            verb: verb.into(),
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.map(str::to_owned),
        };
        self.shared.store().grants.push(grant);
    }

    /// Adds a line to the log of pod `pod` in `namespace`, stamped `at` (what `timestamps=true`
    /// shows and `sinceTime` compares). Open follow streams of the pod send it at once. The pod
    /// need not exist yet, but its log is only served while it does.
    ///
    /// # Panics
    /// If `line` holds a newline: a log line is one line.
    pub fn append_log(&self, namespace: &str, pod: &str, at: DateTime<Utc>, line: &str) {
        assert!(!line.contains('\n'), "a log line holds no newline: {line:?}");
        self.shared
            .store()
            .pod_logs
            .entry((namespace.to_owned(), pod.to_owned()))
            .or_default()
            .entries
            .push((at, line.to_owned()));
        self.shared.log_changes.send_modify(|n| *n += 1);
    }

    /// Adds `line` as [`FakeApiServer::append_log`] does, but every follow stream of the pod
    /// open now sends only the first `sent` bytes of it (counted as the stream writes it, with
    /// its timestamp prefix if asked for; at most all but its newline) and then ends: a
    /// disconnection in the middle of a line. The line is in the log in full for later requests.
    pub fn append_log_and_cut(
        &self,
        namespace: &str,
        pod: &str,
        at: DateTime<Utc>,
        line: &str,
        sent: usize,
    ) {
        assert!(!line.contains('\n'), "a log line holds no newline: {line:?}");
        {
            let mut store = self.shared.store();
            let log = store.pod_logs.entry((namespace.to_owned(), pod.to_owned())).or_default();
            log.entries.push((at, line.to_owned()));
            let entry = log.entries.len() - 1;
            log.cuts.push(LogCut { entry, sent });
        }
        self.shared.log_changes.send_modify(|n| *n += 1);
    }

    /// Ends every follow stream of the pod open now, after the lines it was already sent (a
    /// disconnection between two lines).
    pub fn cut_log_streams(&self, namespace: &str, pod: &str) {
        {
            let mut store = self.shared.store();
            let log = store.pod_logs.entry((namespace.to_owned(), pod.to_owned())).or_default();
            let entry = log.entries.len();
            log.cuts.push(LogCut { entry, sent: 0 });
        }
        self.shared.log_changes.send_modify(|n| *n += 1);
    }

    /// How many follow streams of the pod's log are open now.
    pub fn log_streams(&self, namespace: &str, pod: &str) -> usize {
        self.shared
            .store()
            .pod_logs
            .get(&(namespace.to_owned(), pod.to_owned()))
            .map_or(0, |log| log.followers)
    }

    /// How many requests so far had a path (query excluded) starting with `path_prefix`.
    pub fn request_count(&self, path_prefix: &str) -> usize {
        self.shared
            .store()
            .requests
            .iter()
            .filter(|(path, _)| path.starts_with(path_prefix))
            .map(|(_, n)| n)
            .sum()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
        self.task.abort();
    }
}

// === impl Store ===

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Gvr {
    group: String,
    version: String,
    plural: String,
}

impl Gvr {
    fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.clone()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }
}

#[derive(Clone, Debug)]
struct ResourceType {
    gvr: Gvr,
    kind: String,
    namespaced: bool,
}

impl ResourceType {
    fn of<K>() -> Self
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
enum ChangeKind {
    Added,
    Modified,
    Deleted,
}

/// One entry of the change history.
struct Change {
    rv: u64,
    gvr: Gvr,
    namespace: String,
    kind: ChangeKind,
    object: Value,
    /// The object before a modification, so selector-filtered watches can tell an object
    /// leaving or entering their selection.
    previous: Option<Value>,
}

/// Objects by (namespace, name); the namespace is empty for cluster-scoped objects.
type Objects = BTreeMap<(String, String), Value>;

struct Store {
    types: HashMap<Gvr, ResourceType>,
    objects: HashMap<Gvr, Objects>,
    resource_version: u64,
    /// Watches from a version older than this get 410 Gone.
    compacted: u64,
    history: VecDeque<Change>,
    token_reviews: HashMap<String, Option<TokenIdentity>>,
    grants: Vec<Grant>,
    requests: HashMap<String, usize>,
    /// Pod logs by (namespace, pod).
    pod_logs: HashMap<(String, String), PodLog>,
}

/// One pod's log: its lines, where follow streams are to be cut, and how many follow it.
#[derive(Default)]
struct PodLog {
    entries: Vec<(DateTime<Utc>, String)>,
    cuts: Vec<LogCut>,
    followers: usize,
}

/// Follow streams open when this was added send the entries before `entry`, then `sent` bytes
/// of `entry` (if any), then end.
struct LogCut {
    entry: usize,
    sent: usize,
}

impl Store {
    fn register(&mut self, ty: ResourceType) {
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

    fn apply(&mut self, ty: ResourceType, mut value: Value) -> u64 {
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
    fn put(&mut self, gvr: &Gvr, key: (String, String), mut value: Value) -> (u64, Value) {
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

    fn object(&self, gvr: &Gvr, key: &(String, String)) -> Option<&Value> {
        self.objects.get(gvr)?.get(key)
    }

    fn delete(&mut self, gvr: &Gvr, namespace: String, name: String) -> Option<(u64, Value)> {
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

struct Shared {
    store: Mutex<Store>,
    /// The latest resourceVersion; watches wake up when it changes.
    changes: watch::Sender<u64>,
    /// Bumped when a pod log changes; follow streams wake up.
    log_changes: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn new() -> Self {
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

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// === HTTP ===

type Params = HashMap<String, String>;

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    debug!(%method, %uri, "stand-in Kubernetes API server request");
    let path = uri.path().to_owned();
    *shared.store().requests.entry(path.clone()).or_default() += 1;
    let params: Params = match Query::try_from_uri(&uri) {
        Ok(Query(params)) => params,
        Err(err) => {
            return status(StatusCode::BAD_REQUEST, "BadRequest", format!("invalid query: {err}"))
        }
    };
    if path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        return match method {
            Method::POST => reviews::token_review(&shared, &body),
            _ => method_not_allowed(&method),
        };
    }
    if path == "/apis/authorization.k8s.io/v1/subjectaccessreviews" {
        return match method {
            Method::POST => reviews::subject_access_review(&shared, &body),
            _ => method_not_allowed(&method),
        };
    }
    if let Some((namespace, pod)) = log_path(&path) {
        return match method {
            Method::GET => pod_log(&shared, namespace, pod, &params),
            _ => method_not_allowed(&method),
        };
    }
    let Some(target) = parse_target(&shared.store(), &path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        );
    };
    if method != Method::GET && params.contains_key("dryRun") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the stand-in API server does not support dryRun".into(),
        );
    }
    // Both `as=PartialObjectMetadata` and `as=PartialObjectMetadataList`.
    let metadata_only = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=PartialObjectMetadata"));
    // A namespaced type's all-namespaces path (`/api/v1/configmaps`) only lists and watches.
    let collection = target.namespace.is_some() || !target.ty.namespaced;
    let selection = match Selection::new(target.ty, target.namespace, &params, metadata_only) {
        Ok(selection) => selection,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let result = match (&method, target.name) {
        (&Method::GET, Some(name)) => Ok(get(&shared, &selection, &name)),
        (&Method::GET, None)
            if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            Ok(watch(&shared, selection, &params))
        }
        (&Method::GET, None) => Ok(list(&shared, &selection, &params)),
        (&Method::POST, None) if collection => create(&shared, &selection, &body),
        (&Method::PUT, Some(name)) => replace(&shared, &selection, &name, &body),
        (&Method::PATCH, Some(name)) => patch(&shared, &selection, &name, &headers, &body),
        (&Method::DELETE, Some(name)) => remove(&shared, &selection, &name, &body),
        _ => Ok(method_not_allowed(&method)),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

struct Target {
    ty: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
}

/// `/api/v1/...` or `/apis/{group}/{version}/...`, then `{plural}[/{name}]` or
/// `namespaces/{ns}/{plural}[/{name}]`, checked against the resource's scope.
fn parse_target(store: &Store, path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let lookup = |plural: &str| {
        store
            .types
            .get(&Gvr { group: group.into(), version: version.into(), plural: plural.into() })
            .cloned()
    };
    let (ty, namespace, name) = match rest {
        ["namespaces", ns, plural, name @ ..] if name.len() <= 1 => {
            (lookup(plural).filter(|t| t.namespaced)?, Some(ns.to_string()), name.first())
        }
        [plural] => (lookup(plural)?, None, None),
        [plural, name] => (lookup(plural).filter(|t| !t.namespaced)?, None, Some(name)),
        _ => return None,
    };
    if namespace.as_deref() == Some("") || name.is_some_and(|n| n.is_empty()) {
        return None;
    }
    Some(Target { ty, namespace, name: name.map(|n| n.to_string()) })
}

fn get(shared: &Shared, selection: &Selection, name: &str) -> Response {
    let found = shared
        .store()
        .objects
        .get(&selection.ty.gvr)
        .and_then(|objects| objects.get(&selection.key(name)))
        .cloned();
    match found {
        Some(obj) => json_response(StatusCode::OK, &selection.render(&obj)),
        None => not_found(selection, name).into_response(),
    }
}

fn list(shared: &Shared, selection: &Selection, params: &Params) -> Response {
    let store = shared.store();
    let requested = match parse_version(params) {
        Ok(rv) => rv,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let exact = params.get("resourceVersionMatch").is_some_and(|m| m == "Exact");
    if let Some(rv) = requested.filter(|&rv| exact && rv < store.compacted) {
        return status(
            StatusCode::GONE,
            "Expired",
            format!("too old resource version: {rv} ({})", store.compacted),
        );
    }
    let items: Vec<Value> = store
        .objects
        .get(&selection.ty.gvr)
        .into_iter()
        .flat_map(|objects| objects.iter())
        .filter(|((ns, _), obj)| selection.in_namespace(ns) && selection.matches(obj))
        .map(|(_, obj)| selection.render(obj))
        .collect();
    let (api_version, kind) = if selection.metadata_only {
        (META_API_VERSION.to_owned(), "PartialObjectMetadataList".to_owned())
    } else {
        (selection.ty.gvr.api_version(), format!("{}List", selection.ty.kind))
    };
    let body = json!({
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {"resourceVersion": store.resource_version.to_string()},
        "items": items,
    });
    json_response(StatusCode::OK, &body)
}

/// The `resourceVersion` parameter: absent, empty and "0" all mean "any / the latest".
fn parse_version(params: &Params) -> Result<Option<u64>, String> {
    match params.get("resourceVersion").map(String::as_str) {
        None | Some("" | "0") => Ok(None),
        Some(rv) => rv.parse().map(Some).map_err(|_| format!("invalid resourceVersion {rv:?}")),
    }
}

fn watch(shared: &Arc<Shared>, selection: Selection, params: &Params) -> Response {
    let requested = match parse_version(params) {
        Ok(rv) => rv,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let timeout = params
        .get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .filter(|&t| t > 0)
        .map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
    let bookmarks = params.get("allowWatchBookmarks").is_some_and(|b| b == "true" || b == "1");
    let initial_events = params.get("sendInitialEvents").is_some_and(|b| b == "true" || b == "1");
    let mut stream = WatchStream {
        changes: shared.changes.subscribe(),
        shutdown: shared.shutdown.subscribe(),
        shared: shared.clone(),
        selection,
        bookmarks,
        cursor: 0,
        pending: VecDeque::new(),
        deadline: Instant::now() + timeout,
        finished: false,
    };
    {
        let store = shared.store();
        stream.changes.borrow_and_update();
        match requested {
            Some(rv) if !initial_events => {
                stream.cursor = rv;
                stream.catch_up(&store);
            }
            // Start from the current state, as synthetic ADDED events.
            _ => {
                stream.cursor = store.resource_version;
                for ((ns, _), obj) in
                    store.objects.get(&stream.selection.ty.gvr).into_iter().flatten()
                {
                    if stream.selection.in_namespace(ns) && stream.selection.matches(obj) {
                        stream.push_event("ADDED", obj);
                    }
                }
            }
        }
        if bookmarks && !stream.finished {
            stream.push_bookmark(initial_events);
        }
    }
    let body = Body::from_stream(futures::stream::unfold(stream, WatchStream::next_chunk));
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The body of one watch: newline-delimited JSON watch events.
struct WatchStream {
    shared: Arc<Shared>,
    selection: Selection,
    bookmarks: bool,
    /// Every change up to this version has been sent (or filtered out).
    cursor: u64,
    pending: VecDeque<Bytes>,
    changes: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    deadline: Instant,
    finished: bool,
}

impl WatchStream {
    async fn next_chunk(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if let Some(line) = self.pending.pop_front() {
                return Some((Ok(line), self));
            }
            if self.finished {
                return None;
            }
            let woke_by_change = tokio::select! {
                changed = self.changes.changed() => changed.is_ok(),
                _ = tokio::time::sleep(BOOKMARK_INTERVAL), if self.bookmarks => {
                    self.push_bookmark(false);
                    continue;
                }
                _ = tokio::time::sleep_until(self.deadline) => false,
                _ = async { drop(self.shutdown.wait_for(|&stop| stop).await) } => false,
            };
            if woke_by_change {
                let shared = self.shared.clone();
                self.catch_up(&shared.store());
            } else {
                self.finished = true;
            }
        }
    }

    /// Queues every change after the cursor that this watch selects, or the 410 if the
    /// history no longer reaches back to the cursor.
    fn catch_up(&mut self, store: &Store) {
        if self.cursor < store.compacted {
            let message =
                format!("too old resource version: {} ({})", self.cursor, store.compacted);
            self.push_line("ERROR", status_body(StatusCode::GONE, "Expired", message));
            self.finished = true;
            return;
        }
        let start = store.history.partition_point(|c| c.rv <= self.cursor);
        for change in store.history.range(start..) {
            if change.gvr != self.selection.ty.gvr
                || !self.selection.in_namespace(&change.namespace)
            {
                continue;
            }
            let now = self.selection.matches(&change.object);
            let before = change.previous.as_ref().is_some_and(|p| self.selection.matches(p));
            match (change.kind, before, now) {
                (ChangeKind::Added, _, true) => self.push_event("ADDED", &change.object),
                (ChangeKind::Deleted, _, true) => self.push_event("DELETED", &change.object),
                (ChangeKind::Modified, true, true) => self.push_event("MODIFIED", &change.object),
                (ChangeKind::Modified, false, true) => self.push_event("ADDED", &change.object),
                (ChangeKind::Modified, true, false) => {
                    let mut left = change.previous.clone().unwrap_or_default();
                    left["metadata"]["resourceVersion"] = change.rv.to_string().into();
                    self.push_event("DELETED", &left);
                }
                _ => {}
            }
        }
        self.cursor = store.resource_version;
    }

    fn push_event(&mut self, event_type: &str, obj: &Value) {
        let rendered = self.selection.render(obj);
        self.push_line(event_type, rendered);
    }

    fn push_bookmark(&mut self, initial_events_end: bool) {
        let (api_version, kind) = if self.selection.metadata_only {
            (META_API_VERSION.to_owned(), "PartialObjectMetadata".to_owned())
        } else {
            (self.selection.ty.gvr.api_version(), self.selection.ty.kind.clone())
        };
        let mut metadata = json!({"resourceVersion": self.cursor.to_string()});
        if initial_events_end {
            metadata["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        self.push_line(
            "BOOKMARK",
            json!({"apiVersion": api_version, "kind": kind, "metadata": metadata}),
        );
    }

    fn push_line(&mut self, event_type: &str, object: Value) {
        let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object}))
            .expect("JSON values serialize");
        line.push(b'\n');
        self.pending.push_back(line.into());
    }
}

// === Pod logs ===

/// `/api/v1/namespaces/{ns}/pods/{name}/log`.
fn log_path(path: &str) -> Option<(&str, &str)> {
    match path.trim_matches('/').split('/').collect::<Vec<_>>().as_slice() {
        ["api", "v1", "namespaces", namespace, "pods", pod, "log"]
            if !namespace.is_empty() && !pod.is_empty() =>
        {
            Some((namespace, pod))
        }
        _ => None,
    }
}

fn pod_log(shared: &Arc<Shared>, namespace: &str, pod: &str, params: &Params) -> Response {
    let flag = |name: &str| params.get(name).is_some_and(|v| v == "true" || v == "1");
    let key = (namespace.to_owned(), pod.to_owned());
    let pods = Gvr { group: String::new(), version: "v1".into(), plural: "pods".into() };
    let mut store = shared.store();
    let Some(object) = store.object(&pods, &key) else {
        return status(StatusCode::NOT_FOUND, "NotFound", format!("pods \"{pod}\" not found"));
    };
    let containers: Vec<String> = object["spec"]["containers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|c| c["name"].as_str())
        .map(str::to_owned)
        .collect();
    match params.get("container") {
        Some(container) if !containers.contains(container) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!("container {container} is not valid for pod {pod}"),
            );
        }
        None if containers.len() > 1 => {
            let choices = containers.join(" ");
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                format!(
                    "a container name must be specified for pod {pod}, choose one of: [{choices}]"
                ),
            );
        }
        _ => {}
    }
    if flag("previous") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("previous terminated container in pod \"{pod}\" not found"),
        );
    }
    if params.contains_key("limitBytes") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the stand-in API server does not support limitBytes".into(),
        );
    }
    let since = match (params.get("sinceTime"), params.get("sinceSeconds")) {
        (Some(_), Some(_)) => {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "at most one of sinceTime or sinceSeconds may be specified".into(),
            )
        }
        (Some(time), None) => match DateTime::parse_from_rfc3339(time) {
            Ok(time) => Some(time.with_timezone(&Utc)),
            Err(err) => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("invalid sinceTime {time:?}: {err}"),
                )
            }
        },
        (None, Some(seconds)) => match seconds.parse::<i64>() {
            Ok(seconds) if seconds > 0 => Some(Utc::now() - chrono::TimeDelta::seconds(seconds)),
            _ => {
                return status(
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    format!("invalid sinceSeconds {seconds:?}"),
                )
            }
        },
        (None, None) => None,
    };
    let tail = match params.get("tailLines").map(|t| t.parse::<usize>()) {
        None => None,
        Some(Ok(tail)) => Some(tail),
        Some(Err(_)) => {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "invalid tailLines".into())
        }
    };
    let follow = flag("follow");
    let log = store.pod_logs.entry(key.clone()).or_default();
    let next = tail.map_or(0, |tail| log.entries.len().saturating_sub(tail));
    let cuts_seen = log.cuts.len();
    if follow {
        log.followers += 1;
    }
    drop(store);
    let stream = LogStream {
        shared: shared.clone(),
        key,
        next,
        since,
        timestamps: flag("timestamps"),
        follow,
        cuts_seen,
        log_changes: shared.log_changes.subscribe(),
        changes: shared.changes.subscribe(),
        shutdown: shared.shutdown.subscribe(),
        finished: false,
    };
    let body = Body::from_stream(futures::stream::unfold(stream, LogStream::next_chunk));
    ([(header::CONTENT_TYPE, "text/plain")], body).into_response()
}

/// The body of one log request.
struct LogStream {
    shared: Arc<Shared>,
    key: (String, String),
    /// The next entry to consider.
    next: usize,
    since: Option<DateTime<Utc>>,
    timestamps: bool,
    follow: bool,
    /// Cuts added before this stream opened do not apply to it.
    cuts_seen: usize,
    log_changes: watch::Receiver<u64>,
    changes: watch::Receiver<u64>,
    shutdown: watch::Receiver<bool>,
    finished: bool,
}

impl LogStream {
    async fn next_chunk(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if self.finished {
                return None;
            }
            self.log_changes.borrow_and_update();
            self.changes.borrow_and_update();
            let (chunk, done) = self.take();
            if done {
                self.finished = true;
            }
            if !chunk.is_empty() {
                return Some((Ok(chunk.into()), self));
            }
            if done {
                return None;
            }
            tokio::select! {
                _ = self.log_changes.changed() => {}
                _ = self.changes.changed() => {}
                _ = async { drop(self.shutdown.wait_for(|&stop| stop).await) } => self.finished = true,
            }
        }
    }

    /// What to send now, and whether the stream ends after it.
    fn take(&mut self) -> (Vec<u8>, bool) {
        let shared = self.shared.clone();
        let store = shared.store();
        let pods = Gvr { group: String::new(), version: "v1".into(), plural: "pods".into() };
        let exists = store.object(&pods, &self.key).is_some();
        let Some(log) = store.pod_logs.get(&self.key) else {
            return (Vec::new(), !self.follow || !exists);
        };
        let cut = if self.follow { log.cuts.get(self.cuts_seen) } else { None };
        let until = cut.map_or(log.entries.len(), |c| c.entry.min(log.entries.len()));
        let mut chunk = Vec::new();
        while self.next < until {
            let (at, line) = &log.entries[self.next];
            self.next += 1;
            if self.since.is_none_or(|since| *at >= since) {
                chunk.extend_from_slice(&self.format(*at, line));
            }
        }
        if let Some(cut) = cut {
            if let Some((at, line)) = log
                .entries
                .get(cut.entry)
                .filter(|(at, _)| self.since.is_none_or(|since| *at >= since))
            {
                let whole = self.format(*at, line);
                chunk.extend_from_slice(&whole[..cut.sent.min(whole.len() - 1)]);
            }
            return (chunk, true);
        }
        (chunk, !self.follow || !exists)
    }

    fn format(&self, at: DateTime<Utc>, line: &str) -> Vec<u8> {
        let mut out =
            if self.timestamps { format!("{} ", kubelet_timestamp(at)) } else { String::new() };
        out.push_str(line);
        out.push('\n');
        out.into_bytes()
    }
}

impl Drop for LogStream {
    fn drop(&mut self) {
        if self.follow {
            if let Some(log) = self.shared.store().pod_logs.get_mut(&self.key) {
                log.followers = log.followers.saturating_sub(1);
            }
        }
    }
}

/// Go's `time.RFC3339Nano`, as the kubelet writes it: trailing zeros of the fraction dropped.
fn kubelet_timestamp(at: DateTime<Utc>) -> String {
    let seconds = at.format("%Y-%m-%dT%H:%M:%S");
    match at.timestamp_subsec_nanos() {
        0 => format!("{seconds}Z"),
        nanos => format!("{seconds}.{}Z", format!("{nanos:09}").trim_end_matches('0')),
    }
}

// === HTTP writes ===

/// A request's answer, or why it is refused.
type Reply = Result<Response, Refusal>;

/// A refused request: answered with a Kubernetes `Status`.
struct Refusal {
    code: StatusCode,
    body: Value,
}

impl Refusal {
    fn new(code: StatusCode, reason: &str, message: String) -> Self {
        Self { code, body: status_body(code, reason, message) }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        json_response(self.code, &self.body)
    }
}

fn create(shared: &Shared, selection: &Selection, body: &[u8]) -> Reply {
    let mut obj = decode_object(body)?;
    let name = admit(selection, &mut obj, None)?;
    let meta = metadata_mut(&mut obj);
    meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    meta.insert(
        "creationTimestamp".into(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into(),
    );
    for server_set in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        meta.remove(server_set);
    }
    let (rv, stored) = {
        let mut store = shared.store();
        let key = selection.key(&name);
        if store.object(&selection.ty.gvr, &key).is_some() {
            return Err(already_exists(selection, &name));
        }
        store.put(&selection.ty.gvr, key, Value::Object(obj))
    };
    shared.changes.send_replace(rv);
    Ok(json_response(StatusCode::CREATED, &selection.render(&stored)))
}

fn replace(shared: &Shared, selection: &Selection, name: &str, body: &[u8]) -> Reply {
    let obj = decode_object(body)?;
    update(shared, selection, name, |_| Ok(Value::Object(obj)))
}

fn patch(
    shared: &Shared,
    selection: &Selection,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let strategic = match media_type.as_str() {
        "application/json-patch+json" | "application/merge-patch+json" => false,
        "application/strategic-merge-patch+json" => true,
        _ => {
            let message = format!(
                "the body of the request was in an unknown format ({content_type:?}) - the stand-in API server accepts application/json-patch+json, \
                 application/merge-patch+json and application/strategic-merge-patch+json"
            );
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                message,
            ));
        }
    };
    let patch: Value = serde_json::from_slice(body)
        .map_err(|err| bad_request(format!("the patch is not JSON: {err}")))?;
    if media_type == "application/json-patch+json" {
        return update(shared, selection, name, |current| {
            let mut doc = current.clone();
            apply_json_patch(&mut doc, &patch).map_err(|err| match err {
                JsonPatchError::Malformed(message) => bad_request(message),
                JsonPatchError::Failed(message) => {
                    Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
                }
            })?;
            Ok(doc)
        });
    }
    if !patch.is_object() {
        return Err(bad_request("a merge patch must be a JSON object"));
    }
    if let Some(directive) = strategic.then(|| strategic_directive(&patch)).flatten() {
        return Err(bad_request(format!("the stand-in API server applies strategic merge patches as JSON merge patches and cannot honour {directive:?}")));
    }
    update(shared, selection, name, |current| {
        let mut doc = current.clone();
        merge_patch(&mut doc, &patch);
        Ok(doc)
    })
}

/// Replaces the stored object `name` with what `change` makes of it, as PUT and PATCH do: the
/// name, namespace, `uid` and `creationTimestamp` stay, and a `resourceVersion` in the new
/// object must be the stored one.
fn update(
    shared: &Shared,
    selection: &Selection,
    name: &str,
    change: impl FnOnce(&Value) -> Result<Value, Refusal>,
) -> Reply {
    let (rv, stored) = {
        let mut store = shared.store();
        let key = selection.key(name);
        let current = store
            .object(&selection.ty.gvr, &key)
            .cloned()
            .ok_or_else(|| not_found(selection, name))?;
        let Value::Object(mut obj) = change(&current)? else {
            return Err(bad_request("the object is not a JSON object"));
        };
        admit(selection, &mut obj, Some(name))?;
        let meta = metadata_mut(&mut obj);
        let stored_meta = &current["metadata"];
        check_preconditions(
            selection,
            name,
            stored_meta,
            text(meta, "uid"),
            text(meta, "resourceVersion"),
            false,
        )?;
        for kept in ["uid", "creationTimestamp"] {
            match stored_meta.get(kept) {
                Some(value) => meta.insert(kept.into(), value.clone()),
                None => meta.remove(kept),
            };
        }
        store.put(&selection.ty.gvr, key, Value::Object(obj))
    };
    shared.changes.send_replace(rv);
    Ok(json_response(StatusCode::OK, &selection.render(&stored)))
}

/// DELETE: removes the object at once (no finalizers, no grace period) and answers with it,
/// as the real server does for pods. `DeleteOptions.preconditions` are checked.
fn remove(shared: &Shared, selection: &Selection, name: &str, body: &[u8]) -> Reply {
    let options =
        if body.iter().all(u8::is_ascii_whitespace) { Map::new() } else { decode_object(body)? };
    let preconditions =
        options.get("preconditions").and_then(Value::as_object).cloned().unwrap_or_default();
    let (rv, deleted) = {
        let mut store = shared.store();
        let key = selection.key(name);
        let current =
            store.object(&selection.ty.gvr, &key).ok_or_else(|| not_found(selection, name))?;
        check_preconditions(
            selection,
            name,
            &current["metadata"],
            text(&preconditions, "uid"),
            text(&preconditions, "resourceVersion"),
            true,
        )?;
        store.delete(&selection.ty.gvr, key.0, key.1).expect("the object was just found")
    };
    shared.changes.send_replace(rv);
    Ok(json_response(StatusCode::OK, &selection.render(&deleted)))
}

/// Checks a writer's expected `uid` and `resourceVersion` against the stored metadata.
fn check_preconditions(
    selection: &Selection,
    name: &str,
    stored: &Value,
    uid: Option<String>,
    resource_version: Option<String>,
    deleting: bool,
) -> Result<(), Refusal> {
    let stored_field =
        |field: &str| stored.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(uid) = uid.filter(|uid| *uid != stored_field("uid")) {
        return Err(conflict(
            selection,
            name,
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                stored_field("uid")
            ),
        ));
    }
    if let Some(rv) = resource_version.filter(|rv| *rv != stored_field("resourceVersion")) {
        let detail = if deleting {
            format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", stored_field("resourceVersion"))
        } else {
            "the object has been modified; please apply your changes to the latest version and try again".to_owned()
        };
        return Err(conflict(selection, name, detail));
    }
    Ok(())
}

fn decode_object(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(bad_request("the body is not a JSON object")),
        Err(err) => Err(bad_request(format!("the body is not JSON: {err}"))),
    }
}

/// Checks a written object against the request's type, namespace and (for PUT and PATCH) the
/// name in the URL; fills in `apiVersion`, `kind`, the namespace and, for `generateName`, the
/// name; returns the name.
fn admit(
    selection: &Selection,
    obj: &mut Map<String, Value>,
    url_name: Option<&str>,
) -> Result<String, Refusal> {
    let ty = &selection.ty;
    for (field, expected) in [("apiVersion", ty.gvr.api_version()), ("kind", ty.kind.clone())] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(given)) if given.is_empty() || *given == expected => {}
            Some(given) => return Err(bad_request(format!("the {field} of the object ({given}) does not match the expected {field} ({expected})"))),
        }
        obj.insert(field.into(), expected.into());
    }
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    let Value::Object(meta) = meta else {
        return Err(bad_request("metadata is not a JSON object"));
    };
    match (&selection.namespace, text(meta, "namespace")) {
        (Some(url), Some(given)) if *url != given => {
            return Err(bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
        (Some(url), _) => {
            meta.insert("namespace".into(), url.clone().into());
        }
        (None, _) => {
            meta.remove("namespace");
        }
    }
    let name = match (url_name, text(meta, "name")) {
        (Some(url), Some(given)) if url != given => {
            return Err(bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({url})"
            )))
        }
        (Some(url), _) => url.to_owned(),
        (None, Some(given)) => given,
        (None, None) => match text(meta, "generateName") {
            Some(prefix) => format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..5]),
            None => {
                return Err(invalid(
                    selection,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ))
            }
        },
    };
    meta.insert("name".into(), name.clone().into());
    Ok(name)
}

/// The metadata of an object that went through [`admit`].
fn metadata_mut(obj: &mut Map<String, Value>) -> &mut Map<String, Value> {
    obj.get_mut("metadata").and_then(Value::as_object_mut).expect("admit makes metadata an object")
}

/// A non-empty string field.
fn text(obj: &Map<String, Value>, field: &str) -> Option<String> {
    obj.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// `configmaps` or `deployments.apps`, as Kubernetes names a resource in messages.
fn qualified_resource(selection: &Selection) -> String {
    let gvr = &selection.ty.gvr;
    if gvr.group.is_empty() {
        gvr.plural.clone()
    } else {
        format!("{}.{}", gvr.plural, gvr.group)
    }
}

fn status_with_details(
    selection: &Selection,
    name: &str,
    code: StatusCode,
    reason: &str,
    message: String,
) -> Refusal {
    let mut refusal = Refusal::new(code, reason, message);
    refusal.body["details"] =
        json!({"name": name, "group": selection.ty.gvr.group, "kind": selection.ty.gvr.plural});
    refusal
}

fn not_found(selection: &Selection, name: &str) -> Refusal {
    status_with_details(
        selection,
        name,
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", qualified_resource(selection)),
    )
}

fn already_exists(selection: &Selection, name: &str) -> Refusal {
    status_with_details(
        selection,
        name,
        StatusCode::CONFLICT,
        "AlreadyExists",
        format!("{} \"{name}\" already exists", qualified_resource(selection)),
    )
}

fn conflict(selection: &Selection, name: &str, detail: String) -> Refusal {
    let message = format!(
        "Operation cannot be fulfilled on {} \"{name}\": {detail}",
        qualified_resource(selection)
    );
    status_with_details(selection, name, StatusCode::CONFLICT, "Conflict", message)
}

fn invalid(selection: &Selection, name: &str, detail: &str) -> Refusal {
    let message = format!("{} \"{name}\" is invalid: {detail}", qualified_resource(selection));
    status_with_details(selection, name, StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
}

fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", message.into())
}

// === Patches ===

/// RFC 7386 JSON merge patch: objects merge recursively, `null` removes a member, anything
/// else (arrays included) replaces.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("target was just made an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

/// The first strategic-merge directive (`$patch`, `$retainKeys`, `$setElementOrder/...`, ...)
/// in a patch; a JSON merge patch cannot honour them.
fn strategic_directive(patch: &Value) -> Option<String> {
    match patch {
        Value::Object(members) => members.iter().find_map(|(key, value)| {
            if key.starts_with('$') {
                Some(key.clone())
            } else {
                strategic_directive(value)
            }
        }),
        Value::Array(items) => items.iter().find_map(strategic_directive),
        _ => None,
    }
}

#[derive(Debug, PartialEq)]
enum JsonPatchError {
    /// The patch is not a list of RFC 6902 operations (400).
    Malformed(String),
    /// An operation cannot be applied to the object (422).
    Failed(String),
}

/// RFC 6902 JSON patch, all or nothing: `add`, `remove`, `replace`, `move`, `copy`, `test`.
fn apply_json_patch(doc: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let malformed = |message: String| JsonPatchError::Malformed(message);
    let operations = patch
        .as_array()
        .ok_or_else(|| malformed("a JSON patch must be an array of operations".into()))?;
    let mut patched = doc.clone();
    for (i, operation) in operations.iter().enumerate() {
        let field = |name: &str| {
            operation
                .get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| malformed(format!("operation {i} has no string {name:?}")))
        };
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| malformed(format!("operation {i} has no \"value\"")))
        };
        let (op, path) = (field("op")?, field("path")?);
        let failed = |message: String| {
            JsonPatchError::Failed(format!("operation {i} ({op} {path}): {message}"))
        };
        match op {
            "add" => pointer_add(&mut patched, path, value()?).map_err(failed)?,
            "remove" => {
                pointer_remove(&mut patched, path).map_err(failed)?;
            }
            "replace" => {
                let value = value()?;
                *patched
                    .pointer_mut(path)
                    .ok_or_else(|| failed("the path does not exist".into()))? = value;
            }
            "move" => {
                let from = field("from")?;
                if path != from {
                    if path.starts_with(&format!("{from}/")) {
                        return Err(failed("cannot move a value into itself".into()));
                    }
                    let moved = pointer_remove(&mut patched, from).map_err(failed)?;
                    pointer_add(&mut patched, path, moved).map_err(failed)?;
                }
            }
            "copy" => {
                let copied = patched
                    .pointer(field("from")?)
                    .cloned()
                    .ok_or_else(|| failed("the \"from\" path does not exist".into()))?;
                pointer_add(&mut patched, path, copied).map_err(failed)?;
            }
            "test" => {
                let expected = value()?;
                if patched.pointer(path) != Some(&expected) {
                    return Err(failed(format!("the value is not {expected}")));
                }
            }
            other => return Err(malformed(format!("operation {i} has an unknown op {other:?}"))),
        }
    }
    *doc = patched;
    Ok(())
}

/// Splits a JSON pointer into its parent pointer and its unescaped last token.
fn split_pointer(path: &str) -> Result<Option<(&str, String)>, String> {
    if path.is_empty() {
        return Ok(None);
    }
    let (parent, last) = path
        .rsplit_once('/')
        .filter(|_| path.starts_with('/'))
        .ok_or_else(|| format!("{path:?} is not a JSON pointer"))?;
    Ok(Some((parent, last.replace("~1", "/").replace("~0", "~"))))
}

/// An array index token: digits without leading zeros, at most `max`; `-` is `len`.
fn array_index(token: &str, len: usize, max: usize) -> Result<usize, String> {
    let index = if token == "-" {
        len
    } else if token.bytes().all(|b| b.is_ascii_digit())
        && !token.is_empty()
        && (token == "0" || !token.starts_with('0'))
    {
        token.parse().map_err(|_| format!("array index {token} is out of range"))?
    } else {
        return Err(format!("{token:?} is not an array index"));
    };
    if index > max {
        return Err(format!("array index {token} is out of range (length {len})"));
    }
    Ok(index)
}

fn pointer_add(doc: &mut Value, path: &str, value: Value) -> Result<(), String> {
    let Some((parent, last)) = split_pointer(path)? else {
        *doc = value;
        return Ok(());
    };
    match doc.pointer_mut(parent) {
        Some(Value::Object(members)) => {
            members.insert(last, value);
        }
        Some(Value::Array(items)) => {
            let index = array_index(&last, items.len(), items.len())?;
            items.insert(index, value);
        }
        Some(_) => return Err(format!("{parent:?} is neither an object nor an array")),
        None => return Err(format!("the parent {parent:?} does not exist")),
    }
    Ok(())
}

fn pointer_remove(doc: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) =
        split_pointer(path)?.ok_or_else(|| "cannot remove the whole document".to_owned())?;
    match doc.pointer_mut(parent) {
        Some(Value::Object(members)) => {
            members.remove(&last).ok_or_else(|| "the path does not exist".to_owned())
        }
        Some(Value::Array(items)) if !items.is_empty() => {
            let index = array_index(&last, items.len(), items.len() - 1)?;
            Ok(items.remove(index))
        }
        _ => Err("the path does not exist".to_owned()),
    }
}

fn method_not_allowed(method: &Method) -> Response {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("the stand-in API server does not serve {method} here"),
    )
}

fn status_body(code: StatusCode, reason: &str, message: String) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

fn status(code: StatusCode, reason: &str, message: String) -> Response {
    json_response(code, &status_body(code, reason, message))
}

fn json_response(code: StatusCode, body: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}

// === Selection ===

/// What one request selects: a resource type, a namespace (or all), selectors, and whether
/// only metadata is wanted.
struct Selection {
    ty: ResourceType,
    namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
    metadata_only: bool,
}

impl Selection {
    fn new(
        ty: ResourceType,
        namespace: Option<String>,
        params: &Params,
        metadata_only: bool,
    ) -> Result<Self, String> {
        let labels = params
            .get("labelSelector")
            .map(|s| parse_label_selector(s))
            .transpose()?
            .unwrap_or_default();
        let fields = params
            .get("fieldSelector")
            .map(|s| parse_field_selector(s))
            .transpose()?
            .unwrap_or_default();
        Ok(Self { ty, namespace, labels, fields, metadata_only })
    }

    /// The store key of the object `name` in this selection's namespace.
    fn key(&self, name: &str) -> (String, String) {
        (self.namespace.clone().unwrap_or_default(), name.to_owned())
    }

    fn in_namespace(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        self.labels.iter().all(|req| req.matches(labels))
            && self.fields.iter().all(|req| req.matches(obj))
    }

    fn render(&self, obj: &Value) -> Value {
        if self.metadata_only {
            json!({"apiVersion": META_API_VERSION, "kind": "PartialObjectMetadata", "metadata": obj["metadata"]})
        } else {
            obj.clone()
        }
    }
}

#[derive(Debug, PartialEq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelRequirement {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        match self {
            Self::Equals(k, v) => value(k) == Some(v.as_str()),
            Self::NotEquals(k, v) => value(k) != Some(v.as_str()),
            Self::In(k, vs) => value(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Self::NotIn(k, vs) => value(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Self::Exists(k) => value(k).is_some(),
            Self::DoesNotExist(k) => value(k).is_none(),
        }
    }
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    let invalid = || format!("unable to parse requirement in labelSelector {selector:?}");
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or_else(invalid)?,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    let key = |k: &str| {
        Some(k.trim().to_owned()).filter(|k| !k.is_empty() && !k.contains(char::is_whitespace))
    };
    let mut requirements = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let requirement = if let Some((head, tail)) = term.split_once('(') {
            let values: Vec<String> = tail
                .strip_suffix(')')
                .ok_or_else(invalid)?
                .split(',')
                .map(|v| v.trim().to_owned())
                .collect();
            let head = head.trim_end();
            if let Some(k) = head.strip_suffix(" notin") {
                LabelRequirement::NotIn(key(k).ok_or_else(invalid)?, values)
            } else if let Some(k) = head.strip_suffix(" in") {
                LabelRequirement::In(key(k).ok_or_else(invalid)?, values)
            } else {
                return Err(invalid());
            }
        } else if let Some((k, v)) = term.split_once("!=") {
            LabelRequirement::NotEquals(key(k).ok_or_else(invalid)?, v.trim().to_owned())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelRequirement::Equals(key(k).ok_or_else(invalid)?, v.trim().to_owned())
        } else if let Some(k) = term.strip_prefix('!') {
            LabelRequirement::DoesNotExist(key(k).ok_or_else(invalid)?)
        } else {
            LabelRequirement::Exists(key(term).ok_or_else(invalid)?)
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

#[derive(Debug, PartialEq)]
struct FieldRequirement {
    path: Vec<String>,
    value: String,
    equal: bool,
}

impl FieldRequirement {
    fn matches(&self, obj: &Value) -> bool {
        let found = self.path.iter().try_fold(obj, |v, segment| v.get(segment));
        let actual = match found {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        (actual == self.value) == self.equal
    }
}

fn parse_field_selector(selector: &str) -> Result<Vec<FieldRequirement>, String> {
    let mut requirements = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
            (p, v, false)
        } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (p, v, true)
        } else {
            return Err(format!(
                "invalid field selector term {term:?}: expected field=value or field!=value"
            ));
        };
        let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("invalid field path in fieldSelector term {term:?}"));
        }
        requirements.push(FieldRequirement { path, value: value.trim().to_owned(), equal });
    }
    Ok(requirements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect()
    }

    #[test]
    fn label_selectors_parse_and_match() {
        let reqs =
            parse_label_selector("app=web, tier in (front, edge),!canary,env!=prod,team").unwrap();
        assert_eq!(
            reqs,
            vec![
                LabelRequirement::Equals("app".into(), "web".into()),
                LabelRequirement::In("tier".into(), vec!["front".into(), "edge".into()]),
                LabelRequirement::DoesNotExist("canary".into()),
                LabelRequirement::NotEquals("env".into(), "prod".into()),
                LabelRequirement::Exists("team".into()),
            ]
        );
        let ok = labels(&[("app", "web"), ("tier", "edge"), ("team", "a")]);
        assert!(reqs.iter().all(|r| r.matches(Some(&ok))));
        let wrong_tier = labels(&[("app", "web"), ("tier", "back"), ("team", "a")]);
        assert!(!reqs.iter().all(|r| r.matches(Some(&wrong_tier))));
        assert!(LabelRequirement::NotIn("x".into(), vec!["a".into()]).matches(None));
        assert!(parse_label_selector("a in (b").is_err());
        assert!(parse_label_selector("a b").is_err());
        assert!(parse_label_selector("").unwrap().is_empty());
    }

    fn patched(doc: Value, patch: Value) -> Result<Value, JsonPatchError> {
        let mut doc = doc;
        apply_json_patch(&mut doc, &patch).map(|()| doc)
    }

    #[test]
    fn json_patches_follow_rfc_6902() {
        let doc = json!({"foo": ["bar", "baz"], "a/b": 1, "m~n": 2});
        let ok = |patch: Value| patched(doc.clone(), patch).unwrap();
        assert_eq!(
            ok(json!([{"op": "add", "path": "/foo/1", "value": "qux"}]))["foo"],
            json!(["bar", "qux", "baz"])
        );
        assert_eq!(
            ok(json!([{"op": "add", "path": "/foo/-", "value": "end"}]))["foo"],
            json!(["bar", "baz", "end"])
        );
        assert_eq!(
            ok(json!([{"op": "add", "path": "/new", "value": {"x": 1}}]))["new"],
            json!({"x": 1})
        );
        assert_eq!(ok(json!([{"op": "replace", "path": "/a~1b", "value": 3}]))["a/b"], 3);
        assert_eq!(ok(json!([{"op": "remove", "path": "/m~0n"}])).get("m~n"), None);
        assert_eq!(ok(json!([{"op": "remove", "path": "/foo/0"}]))["foo"], json!(["baz"]));
        assert_eq!(ok(json!([{"op": "move", "from": "/foo/0", "path": "/first"}]))["first"], "bar");
        assert_eq!(
            ok(json!([{"op": "copy", "from": "/foo", "path": "/copy"}]))["copy"],
            json!(["bar", "baz"])
        );
        assert_eq!(ok(json!([{"op": "test", "path": "/foo/1", "value": "baz"}])), doc);
        assert_eq!(
            ok(json!([{"op": "replace", "path": "", "value": {"whole": true}}])),
            json!({"whole": true})
        );

        let failed =
            |patch: Value| matches!(patched(doc.clone(), patch), Err(JsonPatchError::Failed(_)));
        assert!(
            failed(json!([{"op": "add", "path": "/missing/x", "value": 1}])),
            "a missing parent"
        );
        assert!(failed(json!([{"op": "add", "path": "/foo/3", "value": 1}])), "past the end");
        assert!(failed(json!([{"op": "add", "path": "/foo/01", "value": 1}])), "a leading zero");
        assert!(
            failed(json!([{"op": "replace", "path": "/missing", "value": 1}])),
            "replace needs the path"
        );
        assert!(failed(json!([{"op": "remove", "path": "/foo/2"}])), "remove needs the element");
        assert!(failed(json!([{"op": "test", "path": "/foo/0", "value": "baz"}])), "a failed test");
        assert!(
            failed(json!([{"op": "move", "from": "/foo", "path": "/foo/0"}])),
            "a move into itself"
        );
        let malformed =
            |patch: Value| matches!(patched(doc.clone(), patch), Err(JsonPatchError::Malformed(_)));
        assert!(malformed(json!({"op": "add"})), "not an array");
        assert!(malformed(json!([{"op": "frobnicate", "path": "/a"}])), "an unknown op");
        assert!(malformed(json!([{"op": "add", "path": "/a"}])), "add without a value");

        // All or nothing: a failing operation leaves the document as it was.
        let mut unchanged = doc.clone();
        let patch = json!([{"op": "add", "path": "/x", "value": 1}, {"op": "test", "path": "/x", "value": 2}]);
        assert!(apply_json_patch(&mut unchanged, &patch).is_err());
        assert_eq!(unchanged, doc);
    }

    #[test]
    fn merge_patches_follow_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        merge_patch(
            &mut doc,
            &json!({"a": "z", "c": {"f": null}, "list": [3], "new": {"deep": 1}}),
        );
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "list": [3], "new": {"deep": 1}}));
        assert_eq!(
            strategic_directive(&json!({"spec": {"containers": [{"$patch": "delete"}]}}))
                .as_deref(),
            Some("$patch")
        );
        assert_eq!(strategic_directive(&json!({"spec": {"containers": [{"name": "a"}]}})), None);
    }

    #[test]
    fn log_timestamps_are_written_as_the_kubelet_writes_them() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(kubelet_timestamp(at("2023-03-12T13:51:55Z")), "2023-03-12T13:51:55Z");
        assert_eq!(kubelet_timestamp(at("2023-03-12T13:51:55.904Z")), "2023-03-12T13:51:55.904Z");
        assert_eq!(
            kubelet_timestamp(at("2023-03-12T13:51:55.000012300Z")),
            "2023-03-12T13:51:55.0000123Z"
        );
        assert_eq!(
            log_path("/api/v1/namespaces/kafka/pods/broker-0/log"),
            Some(("kafka", "broker-0"))
        );
        assert_eq!(log_path("/api/v1/namespaces/kafka/pods/broker-0"), None);
    }

    /// The log endpoint through the real `kube` client, as a log follower uses it.
    #[tokio::test]
    async fn pod_logs_follow_resume_and_cut_as_asked() {
        use futures::{AsyncBufReadExt as _, AsyncReadExt as _};
        use k8s_openapi::api::core::v1::Pod;
        use kube::api::LogParams;

        let api = FakeApiServer::start().await.unwrap();
        let mut pod: Pod = serde_json::from_value(
            json!({"metadata": {"name": "broker-0", "namespace": "kafka"}, "spec": {"containers": [{"name": "kafka"}, {"name": "exporter"}]}}),
        )
        .unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        api.append_log("kafka", "broker-0", at("2026-01-01T10:00:00Z"), "first");
        api.append_log("kafka", "broker-0", at("2026-01-01T10:00:01.5Z"), "second");
        let pods: kube::Api<Pod> = kube::Api::namespaced(api.client(), "kafka");
        let params = |container: &str| LogParams {
            container: Some(container.into()),
            timestamps: true,
            ..LogParams::default()
        };
        assert!(pods.logs("broker-0", &params("kafka")).await.is_err(), "no such pod yet");
        api.apply(&pod);
        let refused = pods.logs("broker-0", &LogParams::default()).await.unwrap_err().to_string();
        assert!(refused.contains("a container name must be specified"), "{refused}");
        assert!(pods.logs("broker-0", &params("sidecar")).await.is_err());
        assert_eq!(
            pods.logs("broker-0", &params("kafka")).await.unwrap(),
            "2026-01-01T10:00:00Z first\n2026-01-01T10:00:01.5Z second\n"
        );
        let since = LogParams {
            since_time: Some("2026-01-01T10:00:01Z".parse().unwrap()),
            ..params("kafka")
        };
        assert_eq!(pods.logs("broker-0", &since).await.unwrap(), "2026-01-01T10:00:01.5Z second\n");
        let tail = LogParams { tail_lines: Some(1), timestamps: false, ..params("kafka") };
        assert_eq!(pods.logs("broker-0", &tail).await.unwrap(), "second\n");

        // Following: new lines as they come, then a cut in the middle of one.
        let follow = LogParams { follow: true, tail_lines: Some(0), ..params("kafka") };
        let mut stream = pods.log_stream("broker-0", &follow).await.unwrap();
        assert_eq!(api.log_streams("kafka", "broker-0"), 1);
        api.append_log("kafka", "broker-0", at("2026-01-01T10:00:02Z"), "third");
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert_eq!(line, "2026-01-01T10:00:02Z third\n");
        api.append_log_and_cut("kafka", "broker-0", at("2026-01-01T10:00:03Z"), "fourth", 24);
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "2026-01-01T10:00:03Z fou", "the stream ends in the middle of the line");
        drop(stream);
        let since = LogParams {
            since_time: Some("2026-01-01T10:00:03Z".parse().unwrap()),
            ..params("kafka")
        };
        assert_eq!(
            pods.logs("broker-0", &since).await.unwrap(),
            "2026-01-01T10:00:03Z fourth\n",
            "the line is whole for the next request"
        );

        // A follow stream ends when the pod is deleted.
        let mut stream = pods.log_stream("broker-0", &follow).await.unwrap();
        pod.metadata.resource_version = None;
        api.delete(&pod);
        let mut rest = String::new();
        stream.read_to_string(&mut rest).await.unwrap();
        assert_eq!(rest, "");
    }

    #[test]
    fn field_selectors_follow_dotted_paths() {
        let pod = json!({"metadata": {"name": "web-1", "namespace": "shop"}, "spec": {"nodeName": "node-a"}});
        let reqs = parse_field_selector("metadata.name=web-1,spec.nodeName!=node-b").unwrap();
        assert!(reqs.iter().all(|r| r.matches(&pod)));
        let reqs = parse_field_selector("metadata.namespace==other").unwrap();
        assert!(!reqs[0].matches(&pod));
        assert!(parse_field_selector("metadata.name").is_err());
    }
}
