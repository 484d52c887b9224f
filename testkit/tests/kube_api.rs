//! The stand-in Kubernetes API server, driven by the real `kube` client and `kube::runtime`.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, DeleteParams, ListParams, PartialObjectMeta, Patch, PatchParams, PostParams,
    Preconditions, WatchEvent, WatchParams,
};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{reflector, WatchStreamExt};
use kube::ResourceExt;
use testkit::kube_api::FakeApiServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const STEP: Duration = Duration::from_secs(5);

async fn server() -> FakeApiServer {
    FakeApiServer::start().await.expect("the stand-in API server starts")
}

fn meta(namespace: Option<&str>, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: namespace.map(str::to_owned),
        labels: (!labels.is_empty()).then(|| {
            labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()
        }),
        ..ObjectMeta::default()
    }
}

fn mk_pod(namespace: &str, name: &str, labels: &[(&str, &str)]) -> Pod {
    Pod { metadata: meta(Some(namespace), name, labels), ..Pod::default() }
}

fn mk_replicaset(namespace: &str, name: &str, deployment: &str) -> ReplicaSet {
    let owner = OwnerReference {
        api_version: "apps/v1".into(),
        kind: "Deployment".into(),
        name: deployment.into(),
        uid: format!("uid-{deployment}"),
        controller: Some(true),
        block_owner_deletion: Some(true),
    };
    ReplicaSet {
        metadata: ObjectMeta {
            owner_references: Some(vec![owner]),
            ..meta(Some(namespace), name, &[("app", deployment)])
        },
        ..ReplicaSet::default()
    }
}

fn names<K: ResourceExt>(objs: impl IntoIterator<Item = K>) -> Vec<String> {
    let mut names: Vec<String> = objs.into_iter().map(|o| o.name_any()).collect();
    names.sort();
    names
}

async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(STEP, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

async fn next_event<K: Debug>(
    stream: &mut (impl Stream<Item = Result<Event<K>, watcher::Error>> + Unpin),
    what: &str,
) -> Event<K> {
    match within(what, stream.next()).await {
        Some(Ok(event)) => event,
        other => panic!("expected {what}, got {other:?}"),
    }
}

/// Polls until the store holds exactly `expected` (sorted names).
async fn store_converges(store: &reflector::Store<Pod>, expected: &[&str]) {
    within("the reflector store to converge", async {
        loop {
            if names(store.state().iter().map(|p| (**p).clone())) == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// A raw HTTP/1.1 GET; returns the whole response (the server ends watches at `timeoutSeconds`).
async fn raw_get(server: &FakeApiServer, path_and_query: &str) -> String {
    let addr = server.url().trim_start_matches("http://").to_owned();
    let mut conn =
        tokio::net::TcpStream::connect(&addr).await.expect("connect to the stand-in API server");
    let request = format!("GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nAccept: application/json\r\nConnection: close\r\n\r\n");
    conn.write_all(request.as_bytes()).await.expect("send the request");
    let mut response = String::new();
    within("the raw response to end", conn.read_to_string(&mut response))
        .await
        .expect("read the response");
    response
}

#[tokio::test]
async fn lists_across_namespaces_within_one_and_by_label() {
    let server = server().await;
    server.apply(&mk_pod("shop", "web-1", &[("app", "web"), ("tier", "front")]));
    server.apply(&mk_pod("shop", "db-1", &[("app", "db")]));
    server.apply(&mk_pod("default", "tool", &[]));
    let client = server.client();

    let all =
        Api::<Pod>::all(client.clone()).list(&ListParams::default()).await.expect("list all pods");
    assert_eq!(names(all.items.clone()), ["db-1", "tool", "web-1"]);
    assert_eq!(all.types.kind, "PodList");
    let rv: u64 = all
        .metadata
        .resource_version
        .as_deref()
        .expect("the list has a resourceVersion")
        .parse()
        .expect("a numeric resourceVersion");
    assert_eq!(rv, 4, "one version to start with, plus one per apply");
    for pod in &all.items {
        assert!(
            pod.metadata.uid.is_some() && pod.metadata.creation_timestamp.is_some(),
            "uid and creationTimestamp are filled in: {pod:?}"
        );
    }

    let shop = Api::<Pod>::namespaced(client.clone(), "shop");
    assert_eq!(names(shop.list(&ListParams::default()).await.unwrap()), ["db-1", "web-1"]);
    let default = Api::<Pod>::default_namespaced(client.clone());
    assert_eq!(names(default.list(&ListParams::default()).await.unwrap()), ["tool"]);

    let by = |selector: &str| ListParams::default().labels(selector);
    assert_eq!(names(shop.list(&by("app=web")).await.unwrap()), ["web-1"]);
    assert_eq!(names(shop.list(&by("app=web,tier=front")).await.unwrap()), ["web-1"]);
    assert_eq!(names(shop.list(&by("app=web,tier=back")).await.unwrap()), Vec::<String>::new());
    assert_eq!(
        names(Api::<Pod>::all(client.clone()).list(&by("app!=web")).await.unwrap()),
        ["db-1", "tool"]
    );
    assert_eq!(
        names(Api::<Pod>::all(client.clone()).list(&by("app in (web,db)")).await.unwrap()),
        ["db-1", "web-1"]
    );
    let named = ListParams::default().fields("metadata.name=db-1");
    assert_eq!(names(Api::<Pod>::all(client.clone()).list(&named).await.unwrap()), ["db-1"]);

    let err = shop.list(&by("app in (web")).await.expect_err("a malformed selector is rejected");
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 400), "{err:?}");

    assert_eq!(server.request_count("/api/v1/namespaces/shop/pods"), 5);
    assert_eq!(server.request_count("/api/v1/pods"), 4);
}

#[tokio::test]
async fn gets_single_objects_and_answers_404_with_a_status() {
    let server = server().await;
    let applied_rv = server.apply(&mk_pod("shop", "web-1", &[("app", "web")]));
    server.apply(&Node { metadata: meta(None, "node-a", &[]), ..Node::default() });
    let client = server.client();

    let pod =
        Api::<Pod>::namespaced(client.clone(), "shop").get("web-1").await.expect("get the pod");
    assert_eq!(pod.metadata.resource_version.as_deref(), Some(applied_rv.as_str()));
    assert_eq!(pod.labels().get("app").map(String::as_str), Some("web"));
    let node =
        Api::<Node>::all(client.clone()).get("node-a").await.expect("get a cluster-scoped object");
    assert_eq!(node.metadata.namespace, None);

    let err = Api::<Pod>::namespaced(client.clone(), "shop")
        .get("nope")
        .await
        .expect_err("a missing pod");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
    let err = Api::<ConfigMap>::all(client.clone())
        .list(&ListParams::default())
        .await
        .expect_err("an unserved resource type");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );

    // Replacing keeps uid and creationTimestamp, and bumps the resourceVersion.
    let first = pod.metadata.clone();
    let next_rv = server.apply(&mk_pod("shop", "web-1", &[("app", "web2")]));
    let pod = Api::<Pod>::namespaced(client, "shop").get("web-1").await.unwrap();
    assert_eq!(
        (pod.metadata.uid, pod.metadata.creation_timestamp),
        (first.uid, first.creation_timestamp)
    );
    assert_eq!(pod.metadata.resource_version, Some(next_rv));
}

#[tokio::test]
async fn watcher_sees_apply_modify_delete_in_order() {
    let server = server().await;
    server.apply(&mk_pod("shop", "old", &[]));
    let api = Api::<Pod>::namespaced(server.client(), "shop");
    let mut events = watcher::watcher(api, watcher::Config::default().timeout(2)).boxed();

    assert!(matches!(next_event(&mut events, "Init").await, Event::Init));
    assert!(
        matches!(next_event(&mut events, "InitApply").await, Event::InitApply(p) if p.name_any() == "old")
    );
    assert!(matches!(next_event(&mut events, "InitDone").await, Event::InitDone));

    server.apply(&mk_pod("shop", "web-1", &[("v", "1")]));
    server.apply(&mk_pod("other", "elsewhere", &[]));
    match next_event(&mut events, "the added pod").await {
        Event::Apply(p) => {
            assert_eq!((p.name_any().as_str(), p.labels()["v"].as_str()), ("web-1", "1"))
        }
        other => panic!("expected Apply(web-1), got {other:?}"),
    }
    server.apply(&mk_pod("shop", "web-1", &[("v", "2")]));
    match next_event(&mut events, "the modified pod").await {
        Event::Apply(p) => {
            assert_eq!((p.name_any().as_str(), p.labels()["v"].as_str()), ("web-1", "2"))
        }
        other => panic!("expected Apply(web-1 v2), got {other:?}"),
    }
    let deleted_rv = server.delete(&mk_pod("shop", "web-1", &[])).expect("web-1 existed");
    match next_event(&mut events, "the deleted pod").await {
        Event::Delete(p) => {
            assert_eq!(p.name_any(), "web-1");
            assert_eq!(
                p.metadata.resource_version,
                Some(deleted_rv),
                "DELETED carries the deletion's resourceVersion"
            );
        }
        other => panic!("expected Delete(web-1), got {other:?}"),
    }
    assert_eq!(server.delete(&mk_pod("shop", "web-1", &[])), None, "deleting twice is a no-op");

    // The server ends the watch after timeoutSeconds; kube reconnects from where it was.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    server.apply(&mk_pod("shop", "after-reconnect", &[]));
    assert!(
        matches!(next_event(&mut events, "a pod after the reconnect").await, Event::Apply(p) if p.name_any() == "after-reconnect")
    );
    assert!(
        server.request_count("/api/v1/namespaces/shop/pods") >= 3,
        "a list, a watch and a second watch"
    );
}

#[tokio::test]
async fn label_selected_watch_sees_objects_leave_and_enter() {
    let server = server().await;
    let api = Api::<Pod>::all(server.client());
    let mut events = api
        .watch(&WatchParams::default().labels("app=web").timeout(5), "1")
        .await
        .expect("start a watch")
        .boxed();
    server.apply(&mk_pod("shop", "p", &[("app", "web")]));
    server.apply(&mk_pod("shop", "p", &[("app", "db")]));
    server.apply(&mk_pod("shop", "p", &[("app", "web")]));
    let mut seen = Vec::new();
    while seen.len() < 3 {
        match within("a watch event", events.next()).await {
            Some(Ok(WatchEvent::Added(p))) => seen.push(format!("ADDED {}", p.labels()["app"])),
            Some(Ok(WatchEvent::Deleted(p))) => seen.push(format!("DELETED {}", p.labels()["app"])),
            Some(Ok(WatchEvent::Bookmark(_))) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["ADDED web", "DELETED web", "ADDED web"]);
}

#[tokio::test]
async fn metadata_watcher_gets_partial_objects_with_owner_references() {
    let server = server().await;
    server.apply(&mk_replicaset("shop", "web-abc", "web"));
    let api = Api::<ReplicaSet>::all(server.client());

    let listed = api.list_metadata(&ListParams::default()).await.expect("list metadata");
    assert_eq!(listed.types.kind, "PartialObjectMetadataList");
    assert_eq!(listed.types.api_version, "meta.k8s.io/v1");
    let got = api.get_metadata_opt("web-abc").await.expect("get metadata");
    assert!(got.is_none(), "an all-namespaces Api cannot get a namespaced object");
    let got = Api::<ReplicaSet>::namespaced(server.client(), "shop")
        .get_metadata("web-abc")
        .await
        .expect("get metadata");
    assert_eq!(got.types.as_ref().map(|t| t.kind.as_str()), Some("PartialObjectMetadata"));

    // kube 5's way to watch metadata only (`metadata_watcher` is deprecated).
    let mut events = watcher::watcher(
        Api::<PartialObjectMeta<ReplicaSet>>::all(server.client()),
        watcher::Config::default(),
    )
    .boxed();
    assert!(matches!(next_event(&mut events, "Init").await, Event::Init));
    match next_event(&mut events, "InitApply").await {
        Event::InitApply(rs) => {
            assert_eq!(
                rs.types.as_ref().map(|t| (t.api_version.as_str(), t.kind.as_str())),
                Some(("meta.k8s.io/v1", "PartialObjectMetadata"))
            );
            let owners = rs.metadata.owner_references.expect("owner references survive");
            assert_eq!(
                (owners[0].kind.as_str(), owners[0].name.as_str(), owners[0].controller),
                ("Deployment", "web", Some(true))
            );
        }
        other => panic!("expected InitApply, got {other:?}"),
    }
    assert!(matches!(next_event(&mut events, "InitDone").await, Event::InitDone));
    server.apply(&mk_replicaset("shop", "api-def", "api"));
    match next_event(&mut events, "Apply").await {
        Event::Apply(rs) => {
            assert_eq!(rs.types.as_ref().map(|t| t.kind.as_str()), Some("PartialObjectMetadata"));
            assert_eq!(
                rs.metadata.owner_references.expect("owner references survive")[0].name,
                "api"
            );
            assert_eq!(rs.metadata.labels.expect("labels survive")["app"], "api");
        }
        other => panic!("expected Apply, got {other:?}"),
    }
}

#[tokio::test]
async fn compaction_expires_old_watches_and_the_watcher_relists() {
    let server = server().await;
    server.apply(&mk_pod("shop", "a", &[]));
    let api = Api::<Pod>::namespaced(server.client(), "shop");
    let old_rv = api.list(&ListParams::default()).await.unwrap().metadata.resource_version.unwrap();

    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next_event(&mut events, "Init").await, Event::Init));
    assert!(
        matches!(next_event(&mut events, "InitApply(a)").await, Event::InitApply(p) if p.name_any() == "a")
    );
    assert!(matches!(next_event(&mut events, "InitDone").await, Event::InitDone));

    // While the watcher is not connected (its stream is lazy), the world moves on and the
    // history it would resume from is compacted away.
    server.apply(&mk_pod("shop", "b", &[]));
    server.delete(&mk_pod("shop", "a", &[]));
    server.compact();

    let mut raw = api
        .watch(&WatchParams::default().timeout(1), &old_rv)
        .await
        .expect("the watch request itself succeeds")
        .boxed();
    match within("the 410", raw.next()).await {
        Some(Ok(WatchEvent::Error(status))) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected a 410 ERROR event, got {other:?}"),
    }
    assert!(
        within("the end of the expired watch", raw.next()).await.is_none(),
        "the stream ends after the 410"
    );

    let err = api
        .list(&ListParams::default().at(&old_rv).matching(kube::api::VersionMatch::Exact))
        .await
        .expect_err("an exact list at a compacted version");
    assert!(matches!(&err, kube::Error::Api(s) if s.code == 410), "{err:?}");

    match within("the watcher's 410", events.next()).await {
        Some(Err(watcher::Error::WatchError(status))) => assert_eq!(status.code, 410),
        other => panic!("expected the watcher to report the 410, got {other:?}"),
    }
    assert!(matches!(next_event(&mut events, "Init again").await, Event::Init));
    assert!(
        matches!(next_event(&mut events, "InitApply(b)").await, Event::InitApply(p) if p.name_any() == "b")
    );
    assert!(matches!(next_event(&mut events, "InitDone again").await, Event::InitDone));
    server.apply(&mk_pod("shop", "c", &[]));
    assert!(
        matches!(next_event(&mut events, "Apply(c)").await, Event::Apply(p) if p.name_any() == "c")
    );
}

#[tokio::test]
async fn reflector_store_mirrors_the_server_through_a_compaction() {
    let server = server().await;
    server.apply(&mk_pod("shop", "a", &[]));
    server.apply(&mk_pod("shop", "b", &[]));
    let (store, writer) = reflector::store::<Pod>();
    let stream = reflector(
        writer,
        watcher::watcher(Api::<Pod>::all(server.client()), watcher::Config::default().timeout(1)),
    )
    .default_backoff()
    .applied_objects();
    let drain = tokio::spawn(stream.for_each(|_| async {}));

    within("the store to be ready", store.wait_until_ready()).await.expect("the writer is alive");
    store_converges(&store, &["a", "b"]).await;
    server.apply(&mk_pod("other", "c", &[]));
    server.delete(&mk_pod("shop", "a", &[]));
    store_converges(&store, &["b", "c"]).await;

    // Compaction while the watch is live and caught up does not disturb it.
    server.compact();
    server.apply(&mk_pod("shop", "d", &[]));
    store_converges(&store, &["b", "c", "d"]).await;
    let listed = Api::<Pod>::all(server.client()).list(&ListParams::default()).await.unwrap();
    assert_eq!(names(store.state().iter().map(|p| (**p).clone())), names(listed.items));
    drain.abort();
}

#[tokio::test]
async fn streaming_list_ends_with_the_initial_events_bookmark() {
    let server = server().await;
    server.apply(&mk_pod("shop", "a", &[]));
    let mut events = watcher::watcher(
        Api::<Pod>::all(server.client()),
        watcher::Config::default().streaming_lists(),
    )
    .boxed();
    assert!(matches!(next_event(&mut events, "Init").await, Event::Init));
    assert!(
        matches!(next_event(&mut events, "InitApply(a)").await, Event::InitApply(p) if p.name_any() == "a")
    );
    assert!(matches!(next_event(&mut events, "InitDone").await, Event::InitDone));
    server.apply(&mk_pod("shop", "b", &[]));
    assert!(
        matches!(next_event(&mut events, "Apply(b)").await, Event::Apply(p) if p.name_any() == "b")
    );
}

#[tokio::test]
async fn raw_watch_gets_bookmarks_and_ends_at_its_timeout() {
    let server = server().await;
    let rv = server.apply(&mk_pod("shop", "a", &[]));
    let started = std::time::Instant::now();
    let response = raw_get(&server, &format!("/api/v1/namespaces/shop/pods?watch=1&allowWatchBookmarks=true&timeoutSeconds=1&resourceVersion={rv}")).await;
    assert!(started.elapsed() >= Duration::from_millis(900), "the watch lasts its timeoutSeconds");
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    let bookmark = response
        .lines()
        .find(|l| l.contains(r#""type":"BOOKMARK""#))
        .unwrap_or_else(|| panic!("no BOOKMARK line in {response}"));
    let event: serde_json::Value =
        serde_json::from_str(bookmark).expect("a watch event is one JSON line");
    assert_eq!(event["object"]["kind"], "Pod");
    assert_eq!(event["object"]["metadata"]["resourceVersion"], rv.as_str());

    let old = (rv.parse::<u64>().unwrap() - 1).to_string();
    let response = raw_get(
        &server,
        &format!("/api/v1/namespaces/shop/pods?watch=true&resourceVersion={old}&timeoutSeconds=1"),
    )
    .await;
    assert!(
        response.contains(r#""type":"ADDED""#) && !response.contains("BOOKMARK"),
        "a replay, and no bookmarks unless asked: {response}"
    );

    let response = raw_get(&server, "/api/v1/namespaces/shop/pods/a/status").await;
    assert!(
        response.starts_with("HTTP/1.1 404") && response.contains(r#""kind":"Status""#),
        "{response}"
    );
}

#[tokio::test]
async fn token_reviews_answer_from_the_canned_table() {
    let server = server().await;
    server.set_token_review(
        "good",
        Some(("system:serviceaccount:mapper:agent", vec!["system:serviceaccounts".into()])),
    );
    server.set_token_review("revoked", None);
    let reviews = Api::<TokenReview>::all(server.client());
    let review = |token: &str| TokenReview {
        spec: TokenReviewSpec { token: token.into(), audiences: Some(vec!["mapper".into()]) },
        ..TokenReview::default()
    };

    let answer =
        reviews.create(&PostParams::default(), &review("good")).await.expect("a TokenReview");
    let status = answer.status.expect("a status");
    assert_eq!(status.authenticated, Some(true));
    let user = status.user.expect("a user");
    assert_eq!(user.username.as_deref(), Some("system:serviceaccount:mapper:agent"));
    assert_eq!(user.groups, Some(vec!["system:serviceaccounts".to_owned()]));
    assert_eq!(answer.spec.token, "good", "the spec is echoed");

    for token in ["revoked", "never-seen"] {
        let answer =
            reviews.create(&PostParams::default(), &review(token)).await.expect("a TokenReview");
        assert_eq!(answer.status.expect("a status").authenticated, Some(false), "{token}");
    }
    assert_eq!(server.request_count("/apis/authentication.k8s.io/v1/tokenreviews"), 3);
}

// === HTTP writes ===

fn mk_configmap(namespace: &str, name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: meta(Some(namespace), name, &[]),
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..ConfigMap::default()
    }
}

fn data(cm: &ConfigMap) -> Vec<(String, String)> {
    cm.data.clone().unwrap_or_default().into_iter().collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn api_error(err: kube::Error) -> (u16, String, String) {
    match err {
        kube::Error::Api(status) => (status.code, status.reason, status.message),
        other => panic!("expected a Kubernetes Status error, got {other:?}"),
    }
}

/// A JSON patch for `Patch::Json`, built without naming the json-patch crate.
fn json_patch(ops: serde_json::Value) -> Patch<()> {
    Patch::Json(serde_json::from_value(ops).expect("a valid RFC 6902 patch"))
}

#[tokio::test]
async fn writes_create_get_replace_patch_and_delete_with_kubernetes_semantics() {
    let server = server().await;
    server.register::<ConfigMap>();
    let api = Api::<ConfigMap>::namespaced(server.client(), "shop");
    let pp = PostParams::default();

    let created =
        api.create(&pp, &mk_configmap("shop", "settings", &[("a", "1")])).await.expect("create");
    let uid = created.metadata.uid.clone().expect("create assigns a uid");
    let created_at =
        created.metadata.creation_timestamp.clone().expect("create assigns a creationTimestamp");
    let rv1 = created.metadata.resource_version.clone().expect("create assigns a resourceVersion");
    assert_eq!(data(&created), pairs(&[("a", "1")]));
    let (code, reason, message) = api_error(
        api.create(&pp, &mk_configmap("shop", "settings", &[])).await.expect_err("a second create"),
    );
    assert_eq!((code, reason.as_str()), (409, "AlreadyExists"), "{message}");
    assert_eq!(
        data(&api.get("settings").await.expect("get what was created")),
        pairs(&[("a", "1")])
    );
    assert_eq!(
        server.get::<ConfigMap>("shop", "settings").map(|cm| data(&cm)),
        Some(pairs(&[("a", "1")]))
    );
    assert!(server.get::<ConfigMap>("other", "settings").is_none());

    // Replace: a current resourceVersion (or none) succeeds, a stale one conflicts.
    let mut next = created.clone();
    next.data = Some(pairs(&[("a", "2")]).into_iter().collect());
    let replaced =
        api.replace("settings", &pp, &next).await.expect("replace at the current version");
    assert_eq!(data(&replaced), pairs(&[("a", "2")]));
    assert_eq!(
        (replaced.metadata.uid.as_deref(), replaced.metadata.creation_timestamp.as_ref()),
        (Some(uid.as_str()), Some(&created_at))
    );
    assert_ne!(replaced.metadata.resource_version.as_deref(), Some(rv1.as_str()));
    let (code, reason, message) = api_error(
        api.replace("settings", &pp, &next).await.expect_err("replace at a stale version"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"), "{message}");
    assert!(message.contains("the object has been modified"), "{message}");
    let unconditional = mk_configmap("shop", "settings", &[("a", "3")]);
    assert_eq!(
        data(
            &api.replace("settings", &pp, &unconditional).await.expect("an unconditional replace")
        ),
        pairs(&[("a", "3")])
    );
    let (code, reason, _) = api_error(
        api.replace("missing", &pp, &mk_configmap("shop", "missing", &[]))
            .await
            .expect_err("replace a missing object"),
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
    let (code, _, message) = api_error(
        api.replace("settings", &pp, &mk_configmap("shop", "other-name", &[]))
            .await
            .expect_err("a name unlike the URL's"),
    );
    assert_eq!(code, 400, "{message}");

    // Patches.
    let patched = api
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"data": {"a": null, "b": "2"}})),
        )
        .await
        .expect("a merge patch");
    assert_eq!(data(&patched), pairs(&[("b", "2")]));
    let patched = api
        .patch(
            "settings",
            &PatchParams::default(),
            &Patch::Strategic(serde_json::json!({"metadata": {"labels": {"team": "x"}}})),
        )
        .await
        .expect("a strategic merge patch");
    assert_eq!(patched.labels().get("team").map(String::as_str), Some("x"));
    let patched = api
        .patch(
            "settings",
            &PatchParams::default(),
            &json_patch(serde_json::json!([{"op": "add", "path": "/data/c~1d", "value": "3"}, {"op": "remove", "path": "/data/b"}])),
        )
        .await
        .expect("a JSON patch");
    assert_eq!(data(&patched), pairs(&[("c/d", "3")]));
    assert_eq!(patched.metadata.uid.as_deref(), Some(uid.as_str()));
    let stale = serde_json::json!({"metadata": {"resourceVersion": rv1}, "data": {"x": "y"}});
    let (code, reason, _) = api_error(
        api.patch("settings", &PatchParams::default(), &Patch::Merge(stale))
            .await
            .expect_err("a patch at a stale version"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let failing =
        json_patch(serde_json::json!([{"op": "test", "path": "/data/c~1d", "value": "wrong"}]));
    let (code, _, message) = api_error(
        api.patch("settings", &PatchParams::default(), &failing)
            .await
            .expect_err("a failing JSON patch test"),
    );
    assert_eq!(code, 422, "{message}");
    let missing =
        json_patch(serde_json::json!([{"op": "add", "path": "/nope/deeper", "value": 1}]));
    assert_eq!(
        api_error(
            api.patch("settings", &PatchParams::default(), &missing)
                .await
                .expect_err("a path without a parent")
        )
        .0,
        422
    );
    let ssa = Patch::Apply(
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "settings"}}),
    );
    assert_eq!(
        api_error(
            api.patch("settings", &PatchParams::apply("test"), &ssa)
                .await
                .expect_err("server-side apply")
        )
        .0,
        415
    );
    assert_eq!(
        server.get::<ConfigMap>("shop", "settings").map(|cm| data(&cm)),
        Some(pairs(&[("c/d", "3")])),
        "failed patches change nothing"
    );

    // Delete, with and without preconditions.
    let stale_delete = DeleteParams {
        preconditions: Some(Preconditions { resource_version: Some(rv1.clone()), uid: None }),
        ..DeleteParams::default()
    };
    let (code, reason, _) = api_error(
        api.delete("settings", &stale_delete)
            .await
            .expect_err("a delete with a stale precondition"),
    );
    assert_eq!((code, reason.as_str()), (409, "Conflict"));
    let deleted = api.delete("settings", &DeleteParams::default()).await.expect("delete");
    assert_eq!(
        deleted.left().map(|cm| cm.name_any()),
        Some("settings".to_owned()),
        "the answer is the deleted object"
    );
    assert!(server.get::<ConfigMap>("shop", "settings").is_none());
    assert!(api.get_opt("settings").await.expect("get_opt").is_none());
    assert_eq!(
        api_error(
            api.delete("settings", &DeleteParams::default()).await.expect_err("a second delete")
        )
        .0,
        404
    );
}

#[tokio::test]
async fn writes_check_the_url_against_the_body_and_fill_in_generated_names() {
    let server = server().await;
    server.register::<ConfigMap>();
    let client = server.client();
    let shop = Api::<ConfigMap>::namespaced(client.clone(), "shop");
    let pp = PostParams::default();

    let (code, _, message) = api_error(
        shop.create(&pp, &mk_configmap("elsewhere", "x", &[]))
            .await
            .expect_err("a namespace unlike the URL's"),
    );
    assert_eq!(code, 400, "{message}");
    let no_namespace = ConfigMap {
        metadata: ObjectMeta { name: Some("x".into()), ..ObjectMeta::default() },
        ..ConfigMap::default()
    };
    assert_eq!(
        shop.create(&pp, &no_namespace)
            .await
            .expect("the URL's namespace is used")
            .namespace()
            .as_deref(),
        Some("shop")
    );
    let generated = ConfigMap {
        metadata: ObjectMeta { generate_name: Some("gen-".into()), ..ObjectMeta::default() },
        ..ConfigMap::default()
    };
    let generated = shop.create(&pp, &generated).await.expect("create with generateName");
    assert!(
        generated.name_any().starts_with("gen-") && generated.name_any().len() == 9,
        "{}",
        generated.name_any()
    );
    let nameless = ConfigMap::default();
    assert_eq!(api_error(shop.create(&pp, &nameless).await.expect_err("no name at all")).0, 422);

    // POST to the all-namespaces path is not served; unregistered types are not found.
    let all = Api::<ConfigMap>::all(client.clone());
    assert_eq!(
        api_error(
            all.create(&pp, &mk_configmap("shop", "y", &[]))
                .await
                .expect_err("create across namespaces")
        )
        .0,
        405
    );
    let (code, reason, _) = api_error(
        Api::<Secret>::namespaced(client, "shop")
            .create(&pp, &Secret::default())
            .await
            .expect_err("an unregistered type"),
    );
    assert_eq!((code, reason.as_str()), (404, "NotFound"));
}

#[tokio::test]
async fn cluster_scoped_objects_are_written_too() {
    let server = server().await;
    server.register::<MutatingWebhookConfiguration>();
    let api = Api::<MutatingWebhookConfiguration>::all(server.client());
    let webhook = MutatingWebhook {
        name: "pods.example.dev".into(),
        client_config: WebhookClientConfig::default(),
        side_effects: "None".into(),
        admission_review_versions: vec!["v1".into()],
        ..MutatingWebhook::default()
    };
    let config = MutatingWebhookConfiguration {
        metadata: meta(Some("ignored"), "hooks", &[]),
        webhooks: Some(vec![webhook]),
    };
    let created =
        api.create(&PostParams::default(), &config).await.expect("create a cluster-scoped object");
    assert_eq!(created.metadata.namespace, None, "a cluster-scoped object has no namespace");
    let patch = json_patch(serde_json::json!([
        {"op": "test", "path": "/webhooks/0/name", "value": "pods.example.dev"},
        {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": "Y2E="},
    ]));
    api.patch("hooks", &PatchParams::default(), &patch)
        .await
        .expect("a JSON patch of a cluster-scoped object");
    let stored =
        server.get::<MutatingWebhookConfiguration>("", "hooks").expect("the stored configuration");
    let bundle = stored.webhooks.expect("webhooks")[0]
        .client_config
        .ca_bundle
        .clone()
        .expect("the caBundle was set");
    assert_eq!(bundle.0, b"ca");
    api.delete("hooks", &DeleteParams::default()).await.expect("delete a cluster-scoped object");
    assert!(server.get::<MutatingWebhookConfiguration>("", "hooks").is_none());
}

#[tokio::test]
async fn watchers_see_http_writes_like_applies() {
    let server = server().await;
    server.register::<ConfigMap>();
    let api = Api::<ConfigMap>::namespaced(server.client(), "shop");
    let mut events = watcher::watcher(api.clone(), watcher::Config::default()).boxed();
    assert!(matches!(next_event(&mut events, "Init").await, Event::Init));
    assert!(matches!(next_event(&mut events, "InitDone").await, Event::InitDone));

    let created = api
        .create(&PostParams::default(), &mk_configmap("shop", "c", &[("v", "1")]))
        .await
        .expect("create");
    match next_event(&mut events, "the created object").await {
        Event::Apply(cm) => {
            assert_eq!(cm.metadata.resource_version, created.metadata.resource_version)
        }
        other => panic!("expected Apply, got {other:?}"),
    }
    api.replace("c", &PostParams::default(), &mk_configmap("shop", "c", &[("v", "2")]))
        .await
        .expect("replace");
    assert!(
        matches!(next_event(&mut events, "the replaced object").await, Event::Apply(cm) if data(&cm) == pairs(&[("v", "2")]))
    );
    let patched = api
        .patch("c", &PatchParams::default(), &Patch::Merge(serde_json::json!({"data": {"v": "3"}})))
        .await
        .expect("patch");
    match next_event(&mut events, "the patched object").await {
        Event::Apply(cm) => {
            assert_eq!(data(&cm), pairs(&[("v", "3")]));
            assert_eq!(cm.metadata.resource_version, patched.metadata.resource_version);
        }
        other => panic!("expected Apply, got {other:?}"),
    }
    api.delete("c", &DeleteParams::default()).await.expect("delete");
    assert!(
        matches!(next_event(&mut events, "the deleted object").await, Event::Delete(cm) if cm.name_any() == "c")
    );
    // An object applied directly interleaves with HTTP writes in one history.
    server.apply(&mk_configmap("shop", "d", &[]));
    assert!(
        matches!(next_event(&mut events, "the applied object").await, Event::Apply(cm) if cm.name_any() == "d")
    );
}
