//! [`FakeApiServer`]: starting and stopping the server, and what tests call on it to set up and
//! inspect the cluster it stands in for.

use std::sync::Arc;

use anyhow::Context as _;
use axum::Router;
use chrono::{DateTime, Utc};
use kube::Resource;
use tokio::task::JoinHandle;
use tracing::debug;

use super::reviews::{Grant, TokenIdentity};
use super::routing::handle;
use super::store::{LogCut, ResourceType, Shared};

/// A stand-in Kubernetes API server listening on 127.0.0.1; see the [module docs](super).
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
