//! Finding the mapper with only a kubeconfig: the chart's mapper Service by its labels and a
//! Ready pod behind it, against the stand-in Kubernetes API server (real `kube::Client`, real
//! HTTP, real label selectors).

use intentmap::discover::{find_mapper, DiscoveryError, MapperPod};
use k8s_openapi::api::core::v1::{Pod, Service};
use serde_json::json;
use testkit::kube_api::FakeApiServer;

/// The mapper Service as `charts/cluster-agent/templates/mapper.yaml` renders it for a release
/// called `release` (labels from `_helpers.tpl`), with `target_port` as the chart's `http`.
fn chart_service(namespace: &str, release: &str, target_port: serde_json::Value) -> Service {
    let selector = json!({
        "app.kubernetes.io/name": "cluster-agent",
        "app.kubernetes.io/instance": release,
        "app.kubernetes.io/component": "mapper",
    });
    let mut labels = selector.clone();
    labels["app.kubernetes.io/part-of"] = json!("intentmap");
    labels["app.kubernetes.io/managed-by"] = json!("Helm");
    serde_json::from_value(json!({
        "metadata": {"namespace": namespace, "name": format!("{release}-mapper"), "labels": labels},
        "spec": {
            "selector": selector,
            "ports": [{"name": "http", "port": 9090, "targetPort": target_port}],
        },
    }))
    .unwrap()
}

/// A mapper pod of `release`: `state` is `ready`, `starting` (Running, not Ready), `pending` or
/// `terminating` (Ready, with a deletionTimestamp).
fn mapper_pod(namespace: &str, release: &str, name: &str, state: &str) -> Pod {
    let ready = matches!(state, "ready" | "terminating");
    let phase = if state == "pending" { "Pending" } else { "Running" };
    let mut metadata = json!({
        "namespace": namespace,
        "name": name,
        "labels": {
            "app.kubernetes.io/name": "cluster-agent",
            "app.kubernetes.io/instance": release,
            "app.kubernetes.io/component": "mapper",
        },
    });
    if state == "terminating" {
        metadata["deletionTimestamp"] = json!("2026-12-01T00:00:00Z");
    }
    serde_json::from_value(json!({
        "metadata": metadata,
        "spec": {"containers": [{
            "name": "mapper",
            "image": "intentmap/cluster-agent:0.1.0",
            "ports": [{"name": "http", "containerPort": 9090}],
        }]},
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}],
        },
    }))
    .unwrap()
}

#[tokio::test]
async fn no_mapper_service_says_to_install_the_chart() {
    let api = FakeApiServer::start().await.unwrap();
    // Another chart component's Service is not the mapper.
    let mut node = chart_service("intentmap", "intentmap", json!("http"));
    node.metadata.name = Some("intentmap-node".into());
    node.metadata
        .labels
        .as_mut()
        .unwrap()
        .insert("app.kubernetes.io/component".into(), "node".into());
    api.apply(&node);
    api.register::<Pod>();
    let err = find_mapper(&api.client(), None).await.unwrap_err();
    assert!(matches!(err, DiscoveryError::NoService { .. }), "{err}");
    let message = err.to_string();
    assert!(message.contains("Is the cluster-agent chart installed? helm install"), "{message}");
    assert!(message.contains("in any namespace"), "{message}");
    let err = find_mapper(&api.client(), Some("elsewhere")).await.unwrap_err();
    assert!(err.to_string().contains("in namespace elsewhere"), "{err}");
    for bad in ["../kube-system", "Intentmap", "", "a/b"] {
        let err = find_mapper(&api.client(), Some(bad)).await.unwrap_err();
        assert!(matches!(err, DiscoveryError::BadNamespace(_)), "{bad:?}: {err}");
    }
    assert_eq!(api.request_count("/api/v1/namespaces/.."), 0);
}

#[tokio::test]
async fn a_ready_pod_behind_the_chart_service_is_chosen_in_any_namespace() {
    let api = FakeApiServer::start().await.unwrap();
    api.apply(&chart_service("observability", "im", json!("http")));
    api.apply(&mapper_pod("observability", "im", "im-mapper-a-starting", "starting"));
    api.apply(&mapper_pod("observability", "im", "im-mapper-b-old", "terminating"));
    api.apply(&mapper_pod("observability", "im", "im-mapper-c-ready", "ready"));
    // A ready pod of another release in the namespace is not behind this Service.
    api.apply(&mapper_pod("observability", "other", "other-mapper-0", "ready"));
    let found = find_mapper(&api.client(), None).await.unwrap();
    assert_eq!(
        found,
        MapperPod {
            namespace: "observability".into(),
            service: "im-mapper".into(),
            pod: "im-mapper-c-ready".into(),
            port: 9090,
        }
    );
    assert_eq!(find_mapper(&api.client(), Some("observability")).await.unwrap(), found);
}

#[tokio::test]
async fn a_numeric_target_port_is_used_as_it_is() {
    let api = FakeApiServer::start().await.unwrap();
    api.apply(&chart_service("intentmap", "intentmap", json!(9191)));
    api.apply(&mapper_pod("intentmap", "intentmap", "intentmap-mapper-x", "ready"));
    assert_eq!(find_mapper(&api.client(), None).await.unwrap().port, 9191);
}

#[tokio::test]
async fn no_ready_pod_says_which_pods_are_there_and_what_to_look_at() {
    let api = FakeApiServer::start().await.unwrap();
    api.apply(&chart_service("intentmap", "intentmap", json!("http")));
    api.register::<Pod>();
    let err = find_mapper(&api.client(), None).await.unwrap_err();
    assert!(matches!(err, DiscoveryError::NotReady { .. }), "{err}");
    assert!(err.to_string().contains("no pod matches its selector"), "{err}");

    api.apply(&mapper_pod("intentmap", "intentmap", "intentmap-mapper-p", "pending"));
    api.apply(&mapper_pod("intentmap", "intentmap", "intentmap-mapper-s", "starting"));
    api.apply(&mapper_pod("intentmap", "intentmap", "intentmap-mapper-t", "terminating"));
    let message = find_mapper(&api.client(), None).await.unwrap_err().to_string();
    for expected in [
        "intentmap/intentmap-mapper has no Ready pod",
        "intentmap-mapper-p: Pending, not ready",
        "intentmap-mapper-s: Running, not ready",
        "intentmap-mapper-t: terminating",
        "kubectl -n intentmap get pods -l app.kubernetes.io/component=mapper",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }

    // A ready pod whose container has no port of the Service's targetPort name is no use.
    let mut portless = mapper_pod("intentmap", "intentmap", "intentmap-mapper-z", "ready");
    portless.spec.as_mut().unwrap().containers[0].ports = None;
    api.apply(&portless);
    let message = find_mapper(&api.client(), None).await.unwrap_err().to_string();
    assert!(message.contains("intentmap-mapper-z: ready, but has no port"), "{message}");
}

#[tokio::test]
async fn two_mapper_services_need_a_namespace() {
    let api = FakeApiServer::start().await.unwrap();
    for ns in ["team-a", "team-b"] {
        api.apply(&chart_service(ns, "intentmap", json!("http")));
        api.apply(&mapper_pod(ns, "intentmap", &format!("intentmap-mapper-{ns}"), "ready"));
    }
    let err = find_mapper(&api.client(), None).await.unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, DiscoveryError::SeveralServices { count: 2, .. }), "{message}");
    assert!(message.contains("team-a/intentmap-mapper, team-b/intentmap-mapper"), "{message}");
    assert!(message.contains("--mapper-namespace"), "{message}");
    let found = find_mapper(&api.client(), Some("team-b")).await.unwrap();
    assert_eq!(found.pod, "intentmap-mapper-team-b");
}

#[tokio::test]
async fn a_service_without_a_selector_is_reported() {
    let api = FakeApiServer::start().await.unwrap();
    let mut service = chart_service("intentmap", "intentmap", json!("http"));
    service.spec.as_mut().unwrap().selector = None;
    api.apply(&service);
    let err = find_mapper(&api.client(), None).await.unwrap_err();
    assert!(matches!(err, DiscoveryError::BadService { .. }), "{err}");
    assert!(err.to_string().contains("selects no pods"), "{err}");
}
