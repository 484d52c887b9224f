use chrono::TimeDelta;
use model::{render_list, InternetTarget, Target};

use super::*;
use crate::fixtures::{mk_endpoint_slice, mk_ingress, mk_service, IngressBuilder, ServiceBuilder};
use crate::{EdgeFilter, EdgeStoreConfig, MapperConfig};

fn shop() -> Mapper {
    let mut mapper = mapper();
    deploy(&mut mapper.index, "shop", "web", &["10.244.0.5"]);
    let cart = deploy(&mut mapper.index, "shop", "cart", &["10.244.0.6"]);
    mapper.index.apply(&mk_service("shop", "cart", &["10.96.0.6"], &[]));
    mapper.index.apply(&mk_endpoint_slice(
        "shop",
        "cart",
        "cart-1",
        &[("10.244.0.6", Some(cart.as_str()))],
    ));
    mapper
}

#[test]
fn external_addresses_are_named_by_the_domain_the_client_was_given() {
    let mut mapper = shop();
    let answers = vec![
        dns(
            "10.244.0.5",
            "api.stripe.com.",
            &["stripe-api.cdn.example.net"],
            &["203.0.113.7", "203.0.113.8"],
            "2026-01-01T10:00:00Z",
        ),
        // Through an ExternalName Service: the name outside the cluster names it.
        dns(
            "10.244.0.6",
            "db.shop.svc.cluster.local",
            &["orders.abc123.eu-west-1.rds.amazonaws.com"],
            &["198.51.100.20"],
            "2026-01-01T10:00:00Z",
        ),
    ];
    mapper.observe(&ObservationBatch { dns: answers, ..ObservationBatch::default() }, later());
    mapper.observe(
        &batch(vec![
            tcp("10.244.0.5", "203.0.113.7", 443, "2026-01-01T10:00:01Z"),
            tcp("10.244.0.5", "203.0.113.8", 443, "2026-01-01T10:00:02Z"),
            tcp("10.244.0.6", "198.51.100.20", 5432, "2026-01-01T10:00:03Z"),
            // Another client was never told; much later, neither is this one.
            tcp("10.244.0.6", "203.0.113.7", 443, "2026-01-01T10:00:04Z"),
            tcp("10.244.0.5", "203.0.113.7", 8443, "2026-01-01T12:00:00Z"),
        ]),
        later(),
    );
    let edges = mapper.snapshot();
    assert_reportable(&edges);
    assert_eq!(
        render_list(&edges),
        "cart in namespace shop calls:\n  - 203.0.113.7 (internet, ports: 443)\n  - orders.abc123.eu-west-1.rds.amazonaws.com (internet, ports: 5432)\n\
         web in namespace shop calls:\n  - 203.0.113.7 (internet, ports: 8443)\n  - api.stripe.com (internet, ports: 443)\n"
    );
    let stripe = edges.iter().find(|e| e.key().target_name == "api.stripe.com").unwrap();
    assert_eq!(
        stripe.target,
        Target::Internet(InternetTarget {
            domains: vec!["api.stripe.com".into()],
            ips: vec!["203.0.113.7".into(), "203.0.113.8".into()],
            ports: vec![]
        })
    );
    assert_eq!(stripe.connections, 2);
    assert_eq!(mapper.stats().dns_answers, 2);
}

#[test]
fn edges_expire_after_their_ttl() {
    let config = MapperConfig {
        edges: EdgeStoreConfig {
            ttl: Some(TimeDelta::hours(1)),
            max_edges: 100,
            ..EdgeStoreConfig::default()
        },
        ..MapperConfig::default()
    };
    let mut mapper = Mapper::new(config);
    deploy(&mut mapper.index, "shop", "web", &["10.244.0.5"]);
    deploy(&mut mapper.index, "shop", "cart", &["10.244.0.6"]);
    deploy(&mut mapper.index, "shop", "pay", &["10.244.0.7"]);
    mapper.observe(
        &batch(vec![
            tcp("10.244.0.5", "10.244.0.6", 7070, "2026-01-01T10:00:00Z"),
            tcp("10.244.0.5", "10.244.0.7", 80, "2026-01-01T10:40:00Z"),
        ]),
        later(),
    );
    mapper.expire(ts("2026-01-01T11:00:00Z"));
    assert_eq!(mapper.snapshot().len(), 2, "both seen within the hour");
    mapper.expire(ts("2026-01-01T11:30:00Z"));
    assert_eq!(render_list(&mapper.snapshot()), "web in namespace shop calls:\n  - pay\n");
    assert_eq!(mapper.stats().expired_edges, 1);
}

#[test]
fn past_the_edge_limit_new_edges_are_refused_and_counted() {
    let config = MapperConfig {
        edges: EdgeStoreConfig { ttl: None, max_edges: 2, ..EdgeStoreConfig::default() },
        ..MapperConfig::default()
    };
    let mut mapper = Mapper::new(config);
    deploy(&mut mapper.index, "shop", "web", &["10.244.0.5"]);
    let at = "2026-01-01T10:00:00Z";
    mapper.observe(
        &batch(vec![
            tcp("10.244.0.5", "203.0.113.1", 443, at),
            tcp("10.244.0.5", "203.0.113.2", 443, at),
            tcp("10.244.0.5", "203.0.113.3", 443, at),
            tcp("10.244.0.5", "203.0.113.4", 443, at),
            tcp("10.244.0.5", "203.0.113.1", 443, at),
        ]),
        later(),
    );
    assert_eq!(mapper.snapshot().len(), 2);
    assert_eq!(mapper.stats().dropped_edges, 2);
    assert_eq!(mapper.stats().tcp_connections, 3);
    assert_eq!(mapper.snapshot()[0].connections, 2, "known edges keep counting");
}

#[test]
fn deltas_add_up_to_the_snapshot_without_counting_twice() {
    let mut mapper = shop();
    let call = |at: &str| tcp("10.244.0.5", "10.96.0.6", 7070, at);
    mapper
        .observe(&batch(vec![call("2026-01-01T10:00:00Z"), call("2026-01-01T10:00:01Z")]), later());
    let first = mapper.take_delta();
    let again = mapper.take_delta();
    mapper.observe(&batch(vec![call("2026-01-01T10:05:00Z")]), later());
    let second = mapper.take_delta();

    assert_eq!(first.iter().map(|e| e.connections).sum::<u64>(), 2);
    assert!(again.is_empty());
    assert_eq!(second.len(), 1);
    assert_eq!(
        (second[0].connections, second[0].first_seen, second[0].last_seen),
        (1, ts("2026-01-01T10:05:00Z"), ts("2026-01-01T10:05:00Z"))
    );
    let merged = model::merge_edges(first.into_iter().chain(second));
    assert_eq!(merged, mapper.snapshot(), "what the cloud adds up is what the mapper lists");
    assert_reportable(&merged);
}

#[test]
fn aws_operations_become_aws_targets_that_pass_validation() {
    let mut mapper = shop();
    let at = "2026-01-01T10:00:00Z";
    let operations = vec![
        aws(
            "10.244.0.5",
            "s3",
            "s3:GetObject",
            Some("arn:aws:s3:::invoices/2026/01.pdf"),
            Some("eu-west-1"),
            at,
        ),
        aws("10.244.0.5", "s3", "PutObject", Some("arn:aws:s3:::invoices/2026/01.pdf"), None, at),
        aws("10.244.0.5", "SQS", "sqs:SendMessage", None, Some("cn-north-1"), at),
        aws("10.244.0.5", "dynamodb", "", Some("not an arn"), None, at),
        aws("10.244.0.5", "no such/service", "x:y", None, None, at),
        aws("10.9.9.9", "s3", "s3:GetObject", None, None, at),
    ];
    mapper.observe(&ObservationBatch { aws: operations, ..ObservationBatch::default() }, later());
    let edges = mapper.snapshot();
    assert_reportable(&edges);
    assert_eq!(
        render_list(&edges),
        "web in namespace shop calls:\n  - arn:aws-cn:sqs:cn-north-1::* (AWS: sqs:SendMessage)\n  - arn:aws:dynamodb:::* (AWS)\n  - arn:aws:s3:::invoices/2026/01.pdf (AWS: s3:GetObject, s3:PutObject)\n"
    );
    let stats = mapper.stats();
    assert_eq!(
        (stats.aws_operations, stats.invalid_observations, stats.unknown_clients),
        (4, 1, 1)
    );
}

#[test]
fn garbage_never_panics_and_is_counted() {
    let mut mapper = shop();
    mapper.observe(&ObservationBatch::default(), later());
    let at = "2026-01-01T10:00:00Z";
    let mut future = tcp("10.244.0.5", "10.96.0.6", 7070, "2030-01-01T00:00:00Z");
    future.count = u64::MAX;
    let mut unknown_hint = tcp("10.244.0.5", "10.96.0.6", 7070, at);
    unknown_hint.pod = Some(model::observation::PodHint {
        uid: Some("nope".into()),
        namespace: None,
        name: Some("ghost".into()),
    });
    let connections = vec![
        tcp("192.0.2.1", "10.96.0.6", 7070, at),
        tcp("::", "::", 0, at),
        tcp("10.244.0.5", "127.0.0.1", 8080, at),
        tcp("10.244.0.5", "224.0.0.1", 5353, at),
        tcp("10.244.0.5", "255.255.255.255", 67, at),
        tcp("10.244.0.5", "::", 80, at),
        tcp("10.244.0.5", "10.96.0.6", 0, at),
        tcp("10.96.0.6", "10.244.0.5", 80, at),
        future.clone(),
        future,
        unknown_hint,
    ];
    let answers = vec![
        dns("10.244.0.5", "", &[], &["203.0.113.1"], at),
        dns("10.244.0.5", "....", &["", "-"], &["203.0.113.1"], at),
        dns("10.244.0.5", "ünïcode.example", &[], &["203.0.113.2"], at),
        dns("10.244.0.5", "nothing.example.com", &[], &[], at),
        dns("192.0.2.1", "cart.shop.svc.cluster.local", &[], &["10.96.0.6"], at),
        dns("10.244.0.5", "a.b.c.d.e.svc.cluster.local", &[], &["10.96.0.6"], at),
        dns("10.244.0.5", "zz-zz.shop.pod.cluster.local", &[], &["10.96.0.6"], at),
    ];
    let operations = vec![aws("10.244.0.5", "", "", Some(""), Some("!!"), at)];
    mapper.observe(
        &ObservationBatch { source: None, tcp: connections, dns: answers, aws: operations },
        ts("2026-01-02T00:00:00Z"),
    );
    // Garbage in the index too.
    mapper.index.apply(&k8s_openapi::api::core::v1::Pod::default());
    mapper.index.apply_meta("Pod", &mk_deployment("shop", "x"));
    mapper.index.delete(&mk_pod("nowhere", "nothing", &["not an ip"]));
    mapper
        .index
        .apply(&mk_pod("shop", "odd", &["not an ip", "10.244.0.77"]).owned_by("Not/A Kind", "x"));
    mapper.expire(later());

    let edges = mapper.snapshot();
    assert_reportable(&edges);
    assert_eq!(render_list(&edges), "web in namespace shop calls:\n  - cart\n");
    let stats = mapper.stats();
    assert_eq!(stats.unknown_clients, 4, "{stats:?}");
    assert_eq!(stats.ignored_destinations, 4, "{stats:?}");
    assert_eq!(stats.clamped_timestamps, 2, "{stats:?}");
    assert_eq!(stats.invalid_observations, 4, "{stats:?}");
    assert_eq!(stats.unknown_cluster_names, 2, "{stats:?}");
    assert_eq!(edges[0].connections, u64::MAX, "counts saturate");
    assert_eq!(edges[0].last_seen, ts("2026-01-02T00:00:00Z"), "future times are taken as now");
    assert_eq!(mapper.index.stats().skipped_objects, 2);
    assert_eq!(
        mapper.index.pod_workload("shop", "odd").map(|w| w.kind.to_string()).as_deref(),
        Some("Pod")
    );
}

#[test]
fn load_balancers_external_ips_and_ingresses_expose_their_workloads() {
    let mut index = Index::default();
    let web = deploy(&mut index, "shop", "web", &["10.244.0.5"]);
    deploy(&mut index, "shop", "api", &["10.244.0.6"]);
    index.apply(
        &mk_service("shop", "web", &["10.96.0.5"], &[])
            .load_balancer(&["198.51.100.10", "web-123.elb.amazonaws.com"]),
    );
    index.apply(&mk_endpoint_slice("shop", "web", "web-1", &[("10.244.0.5", Some(web.as_str()))]));
    index.apply(
        &mk_service("shop", "api", &["10.96.0.6"], &[("app", "api")])
            .external_ips(&["198.51.100.11"]),
    );
    index.apply(
        &mk_service("shop", "idle", &["10.96.0.7"], &[("app", "nothing")])
            .load_balancer(&["198.51.100.12"]),
    );
    index.apply(
        &mk_ingress(
            "shop",
            "public",
            &[(Some("shop.example.com"), "web"), (Some("api.example.com"), "api")],
        )
        .load_balancer(&["198.51.100.20"]),
    );

    let exposed = index.exposed();
    let summary: Vec<String> = exposed
        .iter()
        .map(|e| {
            format!("{}/{} {:?} {:?} {:?}", e.namespace, e.name, e.kind, e.addresses, e.hostnames)
        })
        .collect();
    assert_eq!(
        summary,
        [
            r#"shop/api Some("Deployment") ["198.51.100.11", "198.51.100.20"] ["api.example.com"]"#,
            r#"shop/web Some("Deployment") ["198.51.100.10", "198.51.100.20"] ["shop.example.com", "web-123.elb.amazonaws.com"]"#,
        ]
    );
}

#[test]
fn filters_by_client_namespace_server_and_client_labels() {
    let mut mapper = shop();
    mapper.index.apply(&mk_pod("shop", "load-1", &["10.244.0.9"]).labelled("role", "loadgen"));
    deploy(&mut mapper.index, "other", "batch", &["10.244.1.5"]);
    mapper.observe(
        &batch(vec![
            tcp("10.244.0.5", "10.96.0.6", 7070, "2026-01-01T10:00:00Z"),
            tcp("10.244.0.9", "10.244.0.5", 80, "2026-01-01T10:00:00Z"),
            tcp("10.244.1.5", "10.96.0.6", 7070, "2026-01-01T10:00:00Z"),
        ]),
        later(),
    );
    let edges = mapper.snapshot();
    let shown = |filter: EdgeFilter| render_list(&filter.apply(&edges, &mapper.index));

    assert_eq!(
        shown(EdgeFilter { namespaces: vec!["other".into()], ..EdgeFilter::default() }),
        "batch in namespace other calls:\n  - cart in namespace shop\n"
    );
    let to_cart =
        EdgeFilter { server: Some("cart.shop".parse().unwrap()), ..EdgeFilter::default() };
    assert_eq!(shown(to_cart), "batch in namespace other calls:\n  - cart in namespace shop\nweb in namespace shop calls:\n  - cart\n");
    let no_loadgen = EdgeFilter {
        exclude_labels: vec!["role=loadgen".parse().unwrap()],
        ..EdgeFilter::default()
    };
    assert!(!shown(no_loadgen.clone()).contains("load-1"));
    assert_eq!(no_loadgen.apply(&edges, &mapper.index).len(), 2);
    let no_apps =
        EdgeFilter { exclude_labels: vec!["app".parse().unwrap()], ..EdgeFilter::default() };
    assert_eq!(shown(no_apps), "load-1 in namespace shop calls:\n  - web\n");
    assert_eq!(EdgeFilter::default().apply(&edges, &mapper.index), edges);

    // A client selected by `server` keeps every call it makes (its ClientIntents list them
    // all): load-1 calls web and, now, cart too.
    mapper.observe(
        &batch(vec![tcp("10.244.0.9", "10.96.0.6", 7070, "2026-01-01T10:00:01Z")]),
        later(),
    );
    let edges = mapper.snapshot();
    let to_web = EdgeFilter { server: Some("web.shop".parse().unwrap()), ..EdgeFilter::default() };
    assert_eq!(
        render_list(&to_web.apply(&edges, &mapper.index)),
        "load-1 in namespace shop calls:\n  - cart\n  - web\n"
    );
}

#[test]
fn a_pod_hint_names_the_client_before_its_address_does() {
    let mut mapper = shop();
    let web_uid = "uid-shop-web-5d9c7b-x2x9q";
    assert!(mapper.index.pod_workload_by_uid(web_uid).is_some());
    let mut from_node = tcp("10.0.0.1", "10.96.0.6", 7070, "2026-01-01T10:00:00Z");
    from_node.pod = Some(model::observation::PodHint {
        uid: Some(web_uid.to_owned()),
        namespace: None,
        name: None,
    });
    mapper.observe(&batch(vec![from_node]), later());
    assert_eq!(render_list(&mapper.snapshot()), "web in namespace shop calls:\n  - cart\n");
}

#[test]
fn the_mapper_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Mapper>();
    shareable::<Index>();
}
