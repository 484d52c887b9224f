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
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews`, answered from
//!   [`FakeApiServer::set_token_review`].
//! - Everything else is a 404 (or 405 for writes) with a Kubernetes `Status` body.
//!
//! Deliberate limitations: objects change only through [`FakeApiServer::apply`] and
//! [`FakeApiServer::delete`] (HTTP writes, patches, subresources and discovery are not served);
//! lists ignore `limit`/`continue` and always return the latest state in one page; there is no
//! authentication or authorisation of callers; the history keeps the last [`MAX_HISTORY`]
//! changes and older ones are compacted away.

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
use kube::core::NamespaceResourceScope;
use kube::Resource;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::debug;

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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.context("binding the stand-in Kubernetes API server to 127.0.0.1")?;
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
        kube::Client::try_from(kube::Config::new(uri)).expect("a kube client for the stand-in API server")
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
        let namespace = if ty.namespaced { obj.meta().namespace.clone().unwrap_or_else(|| "default".to_owned()) } else { String::new() };
        let name = obj.meta().name.clone().unwrap_or_default();
        let rv = self.shared.store().delete(&ty.gvr, namespace, name)?;
        self.shared.changes.send_replace(rv);
        Some(rv.to_string())
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

    /// How `POST .../tokenreviews` answers for `token`: authenticated as `(username, groups)`,
    /// or not authenticated for `None`. Tokens never set are not authenticated either.
    pub fn set_token_review(&self, token: &str, user: Option<(&str, Vec<String>)>) {
        self.shared.store().token_reviews.insert(token.to_owned(), user.map(|(name, groups)| (name.to_owned(), groups)));
    }

    /// How many requests so far had a path (query excluded) starting with `path_prefix`.
    pub fn request_count(&self, path_prefix: &str) -> usize {
        self.shared.store().requests.iter().filter(|(path, _)| path.starts_with(path_prefix)).map(|(_, n)| n).sum()
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
            gvr: Gvr { group: K::group(&()).into_owned(), version: K::version(&()).into_owned(), plural: K::plural(&()).into_owned() },
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
    token_reviews: HashMap<String, Option<(String, Vec<String>)>>,
    requests: HashMap<String, usize>,
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
        let rv = self.next_version();
        let obj = value.as_object_mut().expect("a Kubernetes object serializes to a JSON object");
        obj.insert("apiVersion".into(), api_version.into());
        obj.insert("kind".into(), kind.into());
        let meta = obj.entry("metadata").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        let meta = meta.as_object_mut().expect("metadata was just made an object");
        let name =
            meta.get("name").and_then(Value::as_str).filter(|n| !n.is_empty()).expect("FakeApiServer::apply: the object has no metadata.name").to_owned();
        let namespace = if namespaced {
            let ns = meta.get("namespace").and_then(Value::as_str).filter(|n| !n.is_empty()).unwrap_or("default").to_owned();
            meta.insert("namespace".into(), ns.clone().into());
            ns
        } else {
            meta.remove("namespace");
            String::new()
        };
        let key = (namespace.clone(), name);
        let previous = self.objects.get(&gvr).and_then(|objects| objects.get(&key)).cloned();
        let earlier = |field: &str| previous.as_ref().and_then(|p| p["metadata"].get(field)).filter(|v| !v.is_null()).cloned();
        if meta.get("uid").is_none_or(Value::is_null) {
            let uid = earlier("uid").unwrap_or_else(|| uuid::Uuid::new_v4().to_string().into());
            meta.insert("uid".into(), uid);
        }
        if meta.get("creationTimestamp").is_none_or(Value::is_null) {
            let created = earlier("creationTimestamp").unwrap_or_else(|| chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into());
            meta.insert("creationTimestamp".into(), created);
        }
        meta.insert("resourceVersion".into(), rv.to_string().into());
        self.objects.entry(gvr.clone()).or_default().insert(key, value.clone());
        let kind = if previous.is_some() { ChangeKind::Modified } else { ChangeKind::Added };
        self.record(Change { rv, gvr, namespace, kind, object: value, previous });
        rv
    }

    fn delete(&mut self, gvr: &Gvr, namespace: String, name: String) -> Option<u64> {
        let mut object = self.objects.get_mut(gvr)?.remove(&(namespace.clone(), name))?;
        let rv = self.next_version();
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        self.record(Change { rv, gvr: gvr.clone(), namespace, kind: ChangeKind::Deleted, object, previous: None });
        Some(rv)
    }
}

struct Shared {
    store: Mutex<Store>,
    /// The latest resourceVersion; watches wake up when it changes.
    changes: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
}

impl Shared {
    fn new() -> Self {
        let types = BUILT_IN
            .iter()
            .map(|&(group, version, plural, kind, namespaced)| {
                let gvr = Gvr { group: group.into(), version: version.into(), plural: plural.into() };
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
            requests: HashMap::new(),
        };
        Self { store: Mutex::new(store), changes: watch::Sender::new(1), shutdown: watch::Sender::new(false) }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock leaves plain data behind; keep serving it.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

// === HTTP ===

type Params = HashMap<String, String>;

async fn handle(State(shared): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    debug!(%method, %uri, "stand-in Kubernetes API server request");
    let path = uri.path().to_owned();
    *shared.store().requests.entry(path.clone()).or_default() += 1;
    let params: Params = match Query::try_from_uri(&uri) {
        Ok(Query(params)) => params,
        Err(err) => return status(StatusCode::BAD_REQUEST, "BadRequest", format!("invalid query: {err}")),
    };
    if path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        return match method {
            Method::POST => token_review(&shared, &body),
            _ => method_not_allowed(&method),
        };
    }
    let Some(target) = parse_target(&shared.store(), &path) else {
        return status(StatusCode::NOT_FOUND, "NotFound", "the server could not find the requested resource".into());
    };
    if method != Method::GET {
        return method_not_allowed(&method);
    }
    // Both `as=PartialObjectMetadata` and `as=PartialObjectMetadataList`.
    let metadata_only = headers.get_all(header::ACCEPT).iter().filter_map(|v| v.to_str().ok()).any(|v| v.contains("as=PartialObjectMetadata"));
    let selection = match Selection::new(target.ty, target.namespace, &params, metadata_only) {
        Ok(selection) => selection,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    match target.name {
        Some(name) => get(&shared, &selection, &name),
        None if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) => watch(&shared, selection, &params),
        None => list(&shared, &selection, &params),
    }
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
    let lookup = |plural: &str| store.types.get(&Gvr { group: group.into(), version: version.into(), plural: plural.into() }).cloned();
    let (ty, namespace, name) = match rest {
        ["namespaces", ns, plural, name @ ..] if name.len() <= 1 => (lookup(plural).filter(|t| t.namespaced)?, Some(ns.to_string()), name.first()),
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
    let key = (selection.namespace.clone().unwrap_or_default(), name.to_owned());
    let found = shared.store().objects.get(&selection.ty.gvr).and_then(|objects| objects.get(&key)).cloned();
    match found {
        Some(obj) => json_response(StatusCode::OK, &selection.render(&obj)),
        None => {
            let plural = &selection.ty.gvr.plural;
            let mut body = status_body(StatusCode::NOT_FOUND, "NotFound", format!("{plural} \"{name}\" not found"));
            body["details"] = json!({"name": name, "group": selection.ty.gvr.group, "kind": plural});
            json_response(StatusCode::NOT_FOUND, &body)
        }
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
        return status(StatusCode::GONE, "Expired", format!("too old resource version: {rv} ({})", store.compacted));
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
    let timeout = params.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).filter(|&t| t > 0).map_or(DEFAULT_WATCH_TIMEOUT, Duration::from_secs);
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
                for ((ns, _), obj) in store.objects.get(&stream.selection.ty.gvr).into_iter().flatten() {
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
            let message = format!("too old resource version: {} ({})", self.cursor, store.compacted);
            self.push_line("ERROR", status_body(StatusCode::GONE, "Expired", message));
            self.finished = true;
            return;
        }
        let start = store.history.partition_point(|c| c.rv <= self.cursor);
        for change in store.history.range(start..) {
            if change.gvr != self.selection.ty.gvr || !self.selection.in_namespace(&change.namespace) {
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
        self.push_line("BOOKMARK", json!({"apiVersion": api_version, "kind": kind, "metadata": metadata}));
    }

    fn push_line(&mut self, event_type: &str, object: Value) {
        let mut line = serde_json::to_vec(&json!({"type": event_type, "object": object})).expect("JSON values serialize");
        line.push(b'\n');
        self.pending.push_back(line.into());
    }
}

fn token_review(shared: &Shared, body: &[u8]) -> Response {
    let review: Value = match serde_json::from_slice(body) {
        Ok(review @ Value::Object(_)) => review,
        _ => return status(StatusCode::BAD_REQUEST, "BadRequest", "the body is not a TokenReview".into()),
    };
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let token = spec.get("token").and_then(Value::as_str).unwrap_or_default();
    let answer = shared.store().token_reviews.get(token).cloned().flatten();
    let mut status = match answer {
        Some((username, groups)) => json!({"authenticated": true, "user": {"username": username, "groups": groups}}),
        None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    };
    if let Some(audiences) = spec.get("audiences").filter(|a| a.is_array()) {
        status["audiences"] = audiences.clone();
    }
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": review.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": spec,
        "status": status,
    });
    json_response(StatusCode::CREATED, &body)
}

fn method_not_allowed(method: &Method) -> Response {
    status(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", format!("the stand-in API server does not serve {method} here"))
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
    fn new(ty: ResourceType, namespace: Option<String>, params: &Params, metadata_only: bool) -> Result<Self, String> {
        let labels = params.get("labelSelector").map(|s| parse_label_selector(s)).transpose()?.unwrap_or_default();
        let fields = params.get("fieldSelector").map(|s| parse_field_selector(s)).transpose()?.unwrap_or_default();
        Ok(Self { ty, namespace, labels, fields, metadata_only })
    }

    fn in_namespace(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        self.labels.iter().all(|req| req.matches(labels)) && self.fields.iter().all(|req| req.matches(obj))
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
    let key = |k: &str| Some(k.trim().to_owned()).filter(|k| !k.is_empty() && !k.contains(char::is_whitespace));
    let mut requirements = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let requirement = if let Some((head, tail)) = term.split_once('(') {
            let values: Vec<String> = tail.strip_suffix(')').ok_or_else(invalid)?.split(',').map(|v| v.trim().to_owned()).collect();
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
            return Err(format!("invalid field selector term {term:?}: expected field=value or field!=value"));
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
        let reqs = parse_label_selector("app=web, tier in (front, edge),!canary,env!=prod,team").unwrap();
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
