use model::{render_list, ServiceRef, Target, WorkloadRef};

use super::*;
use crate::fixtures::{mk_endpoint_slice, mk_node, mk_service};
use crate::{IndexConfig, Resolution, Via};

fn name_of(resolution: &Resolution) -> String {
    match resolution {
        Resolution::Workload { workload, .. } => {
            format!("{}/{}/{}", workload.namespace, workload.name, workload.kind)
        }
        Resolution::Service { service, backends } => {
            format!(
                "service {}/{} -> {:?}",
                service.namespace,
                service.name,
                backends.iter().map(|w| w.name.to_string()).collect::<Vec<_>>()
            )
        }
        Resolution::ApiServer => "api server".to_owned(),
        Resolution::External(ip) => format!("external {ip}"),
        Resolution::Unattributed => "unattributed".to_owned(),
        Resolution::Contested => "contested".to_owned(),
    }
}

#[test]
fn a_reused_ip_is_blamed_on_the_pod_that_held_it_at_the_time() {
    let mut mapper = mapper();
    mapper.index.apply_meta("Deployment", &mk_deployment("shop", "old"));
    mapper.index.apply_meta("ReplicaSet", &mk_replicaset("shop", "old-1", "old"));
    mapper.index.apply_meta("Deployment", &mk_deployment("shop", "new"));
    mapper.index.apply_meta("ReplicaSet", &mk_replicaset("shop", "new-1", "new"));
    deploy(&mut mapper.index, "shop", "db", &["10.244.0.99"]);
    let old = mk_pod("shop", "old-1-a", &["10.244.0.5"])
        .owned_by("ReplicaSet", "old-1")
        .started_at("2026-01-01T10:00:00Z");
    mapper.index.apply(&old);
    // Deleted at 10:10; the same address goes to a new pod at 10:12.
    mapper.index.delete(&old.clone().deleting_at("2026-01-01T10:10:00Z"));
    mapper.index.apply(
        &mk_pod("shop", "new-1-b", &["10.244.0.5"])
            .owned_by("ReplicaSet", "new-1")
            .started_at("2026-01-01T10:12:00Z"),
    );

    let holder =
        |index: &Index, t: &str| name_of(&index.resolve_address(ip("10.244.0.5"), ts(t), None));
    assert_eq!(
        holder(&mapper.index, "2026-01-01T10:05:00Z"),
        "shop/old/Deployment",
        "seen before the deletion, reported late"
    );
    assert_eq!(
        holder(&mapper.index, "2026-01-01T10:10:01Z"),
        "shop/old/Deployment",
        "within the clock tolerance"
    );
    assert_eq!(
        holder(&mapper.index, "2026-01-01T10:11:00Z"),
        "unattributed",
        "between the two pods"
    );
    assert_eq!(holder(&mapper.index, "2026-01-01T10:12:00Z"), "shop/new/Deployment");
    assert_eq!(holder(&mapper.index, "2026-01-01T09:00:00Z"), "unattributed", "before either pod");

    // The same through the pipeline, as client and as server.
    mapper.observe(
        &batch(vec![
            tcp("10.244.0.5", "10.244.0.99", 5432, "2026-01-01T10:05:00Z"),
            tcp("10.244.0.5", "10.244.0.99", 5432, "2026-01-01T10:11:00Z"),
        ]),
        later(),
    );
    mapper.observe(
        &batch(vec![tcp("10.244.0.99", "10.244.0.5", 8080, "2026-01-01T10:13:00Z")]),
        later(),
    );
    assert_eq!(
        render_list(&mapper.snapshot()),
        "db in namespace shop calls:\n  - new\nold in namespace shop calls:\n  - db\n"
    );
    assert_eq!(mapper.stats().unknown_clients, 1);

    // After the grace period the old lease is gone; its old connections are no longer blamed on anyone.
    assert_eq!(mapper.index.prune(ts("2026-01-01T10:16:00Z")), 1);
    assert_eq!(holder(&mapper.index, "2026-01-01T10:05:00Z"), "unattributed");
    assert_eq!(holder(&mapper.index, "2026-01-01T10:20:00Z"), "shop/new/Deployment");
}

#[test]
fn a_completed_pod_does_not_keep_its_ip() {
    let mut index = Index::default();
    index.apply_meta("CronJob", &mk_cronjob("ops", "backup"));
    index.apply_meta("Job", &mk_job("ops", "backup-1", Some("backup")));
    let job_pod = mk_pod("ops", "backup-1-x", &["10.244.0.7"])
        .owned_by("Job", "backup-1")
        .started_at("2026-01-01T10:00:00Z");
    index.apply(&job_pod.succeeded_at("2026-01-01T10:03:00Z"));
    index.apply(&mk_pod("ops", "web", &["10.244.0.7"]).started_at("2026-01-01T10:30:00Z"));
    assert_eq!(
        name_of(&index.resolve_address(ip("10.244.0.7"), ts("2026-01-01T10:02:00Z"), None)),
        "ops/backup/CronJob"
    );
    assert_eq!(
        name_of(&index.resolve_address(ip("10.244.0.7"), ts("2026-01-01T10:20:00Z"), None)),
        "unattributed"
    );
    assert_eq!(
        name_of(&index.resolve_address(ip("10.244.0.7"), ts("2026-01-01T10:31:00Z"), None)),
        "ops/web/Pod"
    );
}

#[test]
fn host_network_pods_are_told_apart_by_port_and_otherwise_named_as_the_node() {
    let mut mapper = mapper();
    deploy(&mut mapper.index, "shop", "web", &["10.244.0.5"]);
    mapper.index.apply(&mk_node("node-1", &["10.0.0.1", "fd00:10::1"]));
    mapper.index.apply_meta("DaemonSet", &mk_daemonset("monitoring", "node-exporter"));
    mapper.index.apply(
        &mk_pod("monitoring", "node-exporter-abcde", &["10.0.0.1"])
            .owned_by("DaemonSet", "node-exporter")
            .on_node("node-1")
            .host_network(&[9100]),
    );
    mapper.index.apply_meta("DaemonSet", &mk_daemonset("ingress", "nginx"));
    mapper.index.apply(
        &mk_pod("ingress", "nginx-xyz", &["10.244.0.8"])
            .owned_by("DaemonSet", "nginx")
            .on_node("node-1")
            .host_port(443),
    );

    let at = ts("2026-01-01T10:00:00Z");
    let resolve = |port: Option<u16>| {
        name_of(&mapper.index.resolve_address(
            ip("10.0.0.1"),
            at,
            port.map(|p| model::PortSpec { port: p, protocol: model::Protocol::Tcp }),
        ))
    };
    assert_eq!(resolve(Some(9100)), "monitoring/node-exporter/DaemonSet");
    assert_eq!(resolve(Some(443)), "ingress/nginx/DaemonSet");
    assert_eq!(resolve(Some(22)), "kube-node/node-1/Node");
    assert_eq!(resolve(None), "kube-node/node-1/Node");
    assert!(matches!(
        mapper.index.resolve_address(ip("fd00:10::1"), at, None),
        Resolution::Workload { via: Via::Node, .. }
    ));

    mapper.observe(
        &batch(vec![
            tcp("10.244.0.5", "10.0.0.1", 9100, "2026-01-01T10:00:00Z"),
            tcp("10.0.0.1", "10.244.0.5", 8080, "2026-01-01T10:00:01Z"),
            hinted(
                tcp("10.0.0.1", "10.244.0.5", 8080, "2026-01-01T10:00:02Z"),
                "monitoring",
                "node-exporter-abcde",
            ),
        ]),
        later(),
    );
    let edges = mapper.snapshot();
    assert_reportable(&edges);
    assert_eq!(
        render_list(&edges),
        "node-1 in namespace kube-node calls:\n  - web in namespace shop\nnode-exporter in namespace monitoring calls:\n  - web in namespace shop\nweb in namespace shop calls:\n  - node-exporter in namespace monitoring\n"
    );
    assert_eq!(edges[0].client, WorkloadRef::new("kube-node", "node-1", Some("Node")));

    // When the pod leaves the node, its port is the node's again.
    mapper.index.delete(&mk_pod("monitoring", "node-exporter-abcde", &[]));
    assert_eq!(
        name_of(&mapper.index.resolve_address(
            ip("10.0.0.1"),
            at,
            Some("9100/TCP".parse().unwrap())
        )),
        "kube-node/node-1/Node"
    );
}

#[test]
fn ipv6_and_dual_stack_pods_and_services_resolve() {
    let mut mapper = mapper();
    deploy(&mut mapper.index, "shop", "web", &["10.244.0.5", "fd00:244::5"]);
    let cart = deploy(&mut mapper.index, "shop", "cart", &["fd00:244::6"]);
    mapper.index.apply(&mk_service(
        "shop",
        "cart",
        &["fd00:96::6", "10.96.0.6"],
        &[("app", "cart")],
    ));
    mapper.index.apply(&mk_endpoint_slice(
        "shop",
        "cart",
        "cart-v6",
        &[("fd00:244::6", Some(cart.as_str()))],
    ));
    mapper.observe(
        &batch(vec![
            tcp("fd00:244::5", "fd00:96::6", 7070, "2026-01-01T10:00:00Z"),
            tcp("::ffff:10.244.0.5", "10.96.0.6", 7070, "2026-01-01T10:00:01Z"),
            tcp("fd00:244::6", "fd00:244::5", 8080, "2026-01-01T10:00:02Z"),
        ]),
        later(),
    );
    let edges = mapper.snapshot();
    assert_eq!(
        render_list(&edges),
        "cart in namespace shop calls:\n  - web\nweb in namespace shop calls:\n  - cart\n"
    );
    assert_eq!(edges.iter().find(|e| e.client.name == "web").map(|e| e.connections), Some(2));
    assert_eq!(
        name_of(&mapper.index.resolve_name("fd00-244--6.shop.pod.cluster.local").unwrap()),
        "shop/cart/Deployment"
    );
}

#[test]
fn the_api_server_is_the_kubernetes_service_by_cluster_ip_endpoint_and_name() {
    let mut mapper = mapper();
    deploy(&mut mapper.index, "ops", "operator", &["10.244.0.5"]);
    mapper.index.apply(&mk_node("control-plane", &["172.18.0.2"]));
    mapper.index.apply(&mk_service("default", "kubernetes", &["10.96.0.1"], &[]));
    let mut endpoints =
        mk_endpoint_slice("default", "kubernetes", "kubernetes", &[("172.18.0.2", None)]);
    endpoints.ports = Some(vec![k8s_openapi::api::discovery::v1::EndpointPort {
        port: Some(6443),
        ..Default::default()
    }]);
    mapper.index.apply(&endpoints);

    let at = ts("2026-01-01T10:00:00Z");
    assert_eq!(
        mapper.index.resolve_address(ip("10.96.0.1"), at, Some("443/TCP".parse().unwrap())),
        Resolution::ApiServer
    );
    assert_eq!(
        mapper.index.resolve_address(ip("172.18.0.2"), at, Some("6443/TCP".parse().unwrap())),
        Resolution::ApiServer
    );
    assert_eq!(
        name_of(&mapper.index.resolve_address(
            ip("172.18.0.2"),
            at,
            Some("10250/TCP".parse().unwrap())
        )),
        "kube-node/control-plane/Node"
    );
    assert_eq!(
        mapper.index.resolve_name("kubernetes.default.svc.cluster.local"),
        Some(Resolution::ApiServer)
    );
    assert_eq!(mapper.index.resolve_name("kubernetes.default"), Some(Resolution::ApiServer));

    mapper.observe(
        &batch(vec![
            tcp("10.244.0.5", "10.96.0.1", 443, "2026-01-01T10:00:00Z"),
            tcp("10.244.0.5", "172.18.0.2", 6443, "2026-01-01T10:00:01Z"),
        ]),
        later(),
    );
    let edges = mapper.snapshot();
    assert_eq!(edges.len(), 1);
    assert_eq!(
        edges[0].target,
        Target::Service(ServiceRef { namespace: "default".into(), name: "kubernetes".into() })
    );
    assert_eq!(edges[0].connections, 2);
    assert_eq!(
        render_list(&edges),
        "operator in namespace ops calls:\n  - kubernetes in namespace default\n"
    );
}

#[test]
fn cluster_dns_names_resolve_in_every_form_and_the_domain_is_configurable() {
    let mut index = Index::new(IndexConfig {
        cluster_domain: "corp.internal".into(),
        ..IndexConfig::default()
    });
    deploy(&mut index, "shop", "cart", &["10.244.0.6"]);
    index.apply(&mk_service("shop", "cart", &["10.96.0.6"], &[("app", "cart")]));
    index.apply_meta("StatefulSet", &mk_statefulset("shop", "redis"));
    index.apply(&mk_pod("shop", "redis-0", &["10.244.0.8"]).owned_by("StatefulSet", "redis"));
    index.apply(&mk_service("shop", "redis", &[], &[("app", "redis")]));

    let cart = "service shop/cart -> [\"cart\"]";
    for name in [
        "cart.shop.svc.corp.internal",
        "cart.shop.svc.corp.internal.",
        "CART.shop.svc",
        "cart.shop",
    ] {
        assert_eq!(index.resolve_name(name).as_ref().map(name_of).as_deref(), Some(cart), "{name}");
    }
    assert_eq!(
        index.resolve_name("redis-0.redis.shop.svc.corp.internal").as_ref().map(name_of).as_deref(),
        Some("shop/redis/StatefulSet")
    );
    assert_eq!(
        index.resolve_name("10-244-0-6.shop.pod.corp.internal").as_ref().map(name_of).as_deref(),
        Some("shop/cart/Deployment")
    );
    assert_eq!(
        index.resolve_name("10-244-0-6.other.pod.corp.internal"),
        None,
        "not in that namespace"
    );
    assert_eq!(index.resolve_name("cart.shop.svc.cluster.local"), None, "another cluster domain");
    assert_eq!(index.resolve_name("missing.shop.svc.corp.internal"), None);
    assert_eq!(index.resolve_name("example.com"), None);
    assert!(index.is_cluster_name("missing.shop.svc.corp.internal"));
    assert!(!index.is_cluster_name("api.stripe.com"));
}

#[test]
fn calls_across_namespaces_name_the_namespace() {
    let mut mapper = mapper();
    deploy(&mut mapper.index, "shop", "web", &["10.244.0.5"]);
    let redis = deploy(&mut mapper.index, "shared", "redis", &["10.244.0.6"]);
    mapper.index.apply(&mk_service("shared", "redis", &["10.96.0.6"], &[]));
    mapper.index.apply(&mk_endpoint_slice(
        "shared",
        "redis",
        "redis-1",
        &[("10.244.0.6", Some(redis.as_str()))],
    ));
    mapper.index.apply(&mk_service("shared", "legacy", &["10.96.0.7"], &[]));
    mapper.observe(
        &batch(vec![
            tcp("10.244.0.5", "10.96.0.6", 6379, "2026-01-01T10:00:00Z"),
            tcp("10.244.0.5", "10.96.0.7", 80, "2026-01-01T10:00:00Z"),
        ]),
        later(),
    );
    let edges = mapper.snapshot();
    assert_eq!(render_list(&edges), "web in namespace shop calls:\n  - legacy in namespace shared\n  - redis in namespace shared\n");
    assert!(
        edges.iter().any(|e| e.target
            == Target::Service(ServiceRef { namespace: "shared".into(), name: "legacy".into() })),
        "nothing backs legacy"
    );
    assert_reportable(&edges);
}
