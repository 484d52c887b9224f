use super::*;
use crate::fixtures::{mk_endpoint_slice, mk_service};
use crate::Resolution;

fn workload_of(index: &Index, namespace: &str, pod: &str) -> (String, String, String) {
    let w = index
        .pod_workload(namespace, pod)
        .unwrap_or_else(|| panic!("{namespace}/{pod} is not indexed"));
    (w.namespace.to_string(), w.name.to_string(), w.kind.to_string())
}

fn expect(namespace: &str, name: &str, kind: &str) -> (String, String, String) {
    (namespace.to_owned(), name.to_owned(), kind.to_owned())
}

#[test]
fn deployments_cronjobs_statefulsets_daemonsets_and_rollouts_name_their_pods() {
    let mut index = Index::default();
    let web = deploy(&mut index, "shop", "web", &["10.244.0.5"]);

    index.apply_meta("CronJob", &mk_cronjob("shop", "nightly-report"));
    index.apply_meta("Job", &mk_job("shop", "nightly-report-29000000", Some("nightly-report")));
    index.apply(
        &mk_pod("shop", "nightly-report-29000000-abcde", &["10.244.0.6"])
            .owned_by("Job", "nightly-report-29000000"),
    );
    index.apply_meta("Job", &mk_job("shop", "migrate", None));
    index.apply(&mk_pod("shop", "migrate-f4g5h", &["10.244.0.7"]).owned_by("Job", "migrate"));

    index.apply_meta("StatefulSet", &mk_statefulset("shop", "redis"));
    index.apply(&mk_pod("shop", "redis-0", &["10.244.0.8"]).owned_by("StatefulSet", "redis"));
    index.apply_meta("DaemonSet", &mk_daemonset("kube-system", "fluent-bit"));
    index.apply(
        &mk_pod("kube-system", "fluent-bit-7xk2p", &["10.244.0.9"])
            .owned_by("DaemonSet", "fluent-bit"),
    );

    // An Argo Rollout owns ReplicaSets, whether or not the index watches Rollouts.
    index.apply_meta(
        "ReplicaSet",
        &mk_owned("shop", "checkout-6f7d8", Some(("Rollout", "checkout"))),
    );
    index.apply(
        &mk_pod("shop", "checkout-6f7d8-q1w2e", &["10.244.0.10"])
            .owned_by("ReplicaSet", "checkout-6f7d8"),
    );
    index.apply(&mk_pod("shop", "debug", &["10.244.0.11"]));

    assert_eq!(workload_of(&index, "shop", &web), expect("shop", "web", "Deployment"));
    assert_eq!(
        workload_of(&index, "shop", "nightly-report-29000000-abcde"),
        expect("shop", "nightly-report", "CronJob")
    );
    assert_eq!(workload_of(&index, "shop", "migrate-f4g5h"), expect("shop", "migrate", "Job"));
    assert_eq!(workload_of(&index, "shop", "redis-0"), expect("shop", "redis", "StatefulSet"));
    assert_eq!(
        workload_of(&index, "kube-system", "fluent-bit-7xk2p"),
        expect("kube-system", "fluent-bit", "DaemonSet")
    );
    assert_eq!(
        workload_of(&index, "shop", "checkout-6f7d8-q1w2e"),
        expect("shop", "checkout", "Rollout")
    );
    index.apply_meta("Rollout", &mk_owned("shop", "checkout", None));
    assert_eq!(
        workload_of(&index, "shop", "checkout-6f7d8-q1w2e"),
        expect("shop", "checkout", "Rollout")
    );
    assert_eq!(workload_of(&index, "shop", "debug"), expect("shop", "debug", "Pod"));
}

#[test]
fn each_workload_annotation_overrides_the_name_in_order_and_keeps_the_kind() {
    const OTTERIZE: &str = "intents.otterize.com/workload-name";
    const OTTERIZE_OLD: &str = "intents.otterize.com/service-name";
    const OURS: &str = "intentmap.dev/workload-name";
    const LABEL: &str = "otterize/service-name";
    let mut index = Index::default();
    index.apply_meta("Deployment", &mk_deployment("shop", "web"));
    index.apply_meta("ReplicaSet", &mk_replicaset("shop", "web-1", "web"));
    let pod = |name: &str, annotations: &[(&str, &str)]| {
        annotations
            .iter()
            .fold(mk_pod("shop", name, &[]).owned_by("ReplicaSet", "web-1"), |pod, (k, v)| {
                pod.annotated(k, v)
            })
    };
    index.apply(&pod(
        "all-three",
        &[(OTTERIZE, "storefront"), (OTTERIZE_OLD, "legacy"), (OURS, "ours")],
    ));
    index.apply(&pod("old-and-ours", &[(OTTERIZE_OLD, "legacy"), (OURS, "ours")]));
    index.apply(&pod("ours", &[(OURS, "ours")]));
    index.apply(&pod("unusable", &[(OTTERIZE, "Not A Name"), (OURS, "ours")]));
    index.apply(&mk_pod("shop", "bare-annotated", &[]).annotated(OTTERIZE, "tool"));
    index.apply(&pod("labelled", &[(OURS, "ours")]).labelled(LABEL, "shop-web"));
    index.apply(
        &pod("labelled-and-annotated", &[(OTTERIZE_OLD, "legacy")]).labelled(LABEL, "shop-web"),
    );
    index.apply(&pod("bad-label", &[(OURS, "ours")]).labelled(LABEL, "-bad-"));

    assert_eq!(
        workload_of(&index, "shop", "all-three"),
        expect("shop", "storefront", "Deployment")
    );
    assert_eq!(workload_of(&index, "shop", "old-and-ours"), expect("shop", "legacy", "Deployment"));
    assert_eq!(workload_of(&index, "shop", "ours"), expect("shop", "ours", "Deployment"));
    assert_eq!(workload_of(&index, "shop", "unusable"), expect("shop", "ours", "Deployment"));
    assert_eq!(workload_of(&index, "shop", "bare-annotated"), expect("shop", "tool", "Pod"));
    // The label comes after Otterize's annotations and before ours.
    assert_eq!(workload_of(&index, "shop", "labelled"), expect("shop", "shop-web", "Deployment"));
    assert_eq!(
        workload_of(&index, "shop", "labelled-and-annotated"),
        expect("shop", "legacy", "Deployment")
    );
    assert_eq!(workload_of(&index, "shop", "bad-label"), expect("shop", "ours", "Deployment"));
    assert_eq!(index.stats().invalid_workload_annotations, 2);
}

#[test]
fn owners_arriving_after_their_pods_rename_them_everywhere() {
    let mut index = Index::default();
    index.apply(
        &mk_pod("shop", "web-1-abc", &["10.244.0.5"])
            .owned_by("ReplicaSet", "web-1")
            .labelled("app", "web"),
    );
    index.apply(&mk_service("shop", "web", &["10.96.0.5"], &[("app", "web")]));
    let at = ts("2026-01-01T10:00:00Z");
    // Until the ReplicaSet is known, the walk stops at its reference.
    assert_eq!(workload_of(&index, "shop", "web-1-abc"), expect("shop", "web-1", "ReplicaSet"));

    index.apply_meta("ReplicaSet", &mk_replicaset("shop", "web-1", "web"));
    index.apply_meta("Deployment", &mk_deployment("shop", "web"));
    assert_eq!(workload_of(&index, "shop", "web-1-abc"), expect("shop", "web", "Deployment"));
    let Resolution::Workload { workload, .. } = index.resolve_address(ip("10.244.0.5"), at, None)
    else {
        panic!("the pod's IP names it")
    };
    assert_eq!(&*workload.name, "web");
    let Resolution::Service { backends, .. } = index.resolve_address(ip("10.96.0.5"), at, None)
    else {
        panic!("a Service")
    };
    assert_eq!(backends.iter().map(|w| w.name.to_string()).collect::<Vec<_>>(), ["web"]);

    // A ReplicaSet that is gone leaves its reference as the name.
    index.delete_meta("ReplicaSet", &mk_replicaset("shop", "web-1", "web"));
    assert_eq!(workload_of(&index, "shop", "web-1-abc"), expect("shop", "web-1", "ReplicaSet"));
    index.reset_meta("ReplicaSet", &[mk_replicaset("shop", "web-1", "web")]);
    assert_eq!(workload_of(&index, "shop", "web-1-abc"), expect("shop", "web", "Deployment"));
}

#[test]
fn a_deployments_pod_is_named_by_the_deployment_while_its_replicaset_is_not_known() {
    // A watch gap (the ReplicaSet watch re-listing after a break, or simply behind the pod
    // watch): the Deployment controller's naming gives the workload, never the ReplicaSet's name.
    let mut index = Index::default();
    let hashed = |name: &str, rs: &str, hash: &str| {
        mk_pod("shop", name, &[])
            .owned_by("ReplicaSet", rs)
            .labelled("app", "web")
            .labelled("pod-template-hash", hash)
    };
    index.apply(&hashed("web-5d8f7c9b4-x1", "web-5d8f7c9b4", "5d8f7c9b4"));
    assert_eq!(
        workload_of(&index, "shop", "web-5d8f7c9b4-x1"),
        expect("shop", "web", "Deployment")
    );
    // A hash that does not end the ReplicaSet's name proves nothing: the reference names it.
    index.apply(&hashed("odd-77-x1", "odd-77", "5d8f7c9b4"));
    assert_eq!(workload_of(&index, "shop", "odd-77-x1"), expect("shop", "odd-77", "ReplicaSet"));
    // Once the ReplicaSet is known, its own owners decide: a bare ReplicaSet is the workload.
    index.apply(&hashed("bare-6c7d-x1", "bare-6c7d", "6c7d"));
    assert_eq!(workload_of(&index, "shop", "bare-6c7d-x1"), expect("shop", "bare", "Deployment"));
    index.apply_meta("ReplicaSet", &mk_meta(Some("shop"), "bare-6c7d"));
    assert_eq!(
        workload_of(&index, "shop", "bare-6c7d-x1"),
        expect("shop", "bare-6c7d", "ReplicaSet")
    );
    index.apply_meta("ReplicaSet", &mk_replicaset("shop", "web-5d8f7c9b4", "frontend"));
    assert_eq!(
        workload_of(&index, "shop", "web-5d8f7c9b4-x1"),
        expect("shop", "frontend", "Deployment")
    );
}

#[test]
fn services_follow_their_endpoint_slices_and_fall_back_to_selectors() {
    let mut index = Index::default();
    let web = deploy(&mut index, "shop", "web", &["10.244.0.5"]);
    let canary = deploy(&mut index, "shop", "web-canary", &["10.244.0.6"]);
    index.apply(&mk_service("shop", "web", &["10.96.0.5"], &[("app", "web")]));
    let backends = |index: &Index| match index.resolve_address(
        ip("10.96.0.5"),
        ts("2026-01-01T10:00:00Z"),
        None,
    ) {
        Resolution::Service { backends, .. } => {
            backends.iter().map(|w| w.name.to_string()).collect::<Vec<_>>()
        }
        other => panic!("a Service, not {other:?}"),
    };
    assert_eq!(backends(&index), ["web"], "by selector");
    index.apply(&mk_endpoint_slice(
        "shop",
        "web",
        "web-x1",
        &[("10.244.0.5", Some(web.as_str())), ("10.244.0.6", Some(canary.as_str()))],
    ));
    assert_eq!(backends(&index), ["web", "web-canary"], "by EndpointSlice");
    index.reset::<k8s_openapi::api::discovery::v1::EndpointSlice>(&[]);
    assert_eq!(backends(&index), ["web"]);
    index.delete(&mk_pod("shop", &web, &[]));
    assert!(backends(&index).is_empty());
}
