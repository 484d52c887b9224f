//! The edge store: deltas, expiry and reset, limits, details, connections.

use super::*;

fn t(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn workload(name: &str) -> Workload {
    Workload { namespace: "shop".into(), name: name.into(), kind: "Deployment".into() }
}

fn call<'a>(client: &'a Workload, server: &'a Workload, at: &str) -> Observation<'a> {
    Observation {
        client,
        target: ObservedTarget::Workload(server),
        port: Some("7070/TCP".parse().unwrap()),
        at: t(at),
        connections: 1,
        detail: Detail::None,
        connection: true,
        bytes: None,
    }
}

fn traffic(sent: u64, received: u64) -> Option<Traffic> {
    Some(Traffic { sent, received })
}

#[test]
fn a_close_adds_bytes_and_no_connection_and_deltas_carry_only_new_bytes() {
    let (front, cart) = (workload("frontend"), workload("cartservice"));
    let mut store = EdgeStore::new(EdgeStoreConfig::default());
    store.record(&call(&front, &cart, "2026-01-01T10:00:00Z"));
    assert_eq!(store.snapshot()[0].bytes, None, "a connection alone measures nothing");
    let close = |sent, received, at| Observation {
        connections: 0,
        bytes: traffic(sent, received),
        ..call(&front, &cart, at)
    };
    store.record(&close(1_000, 50_000, "2026-01-01T10:00:02Z"));
    let first = store.take_delta();
    assert_eq!((first[0].connections, first[0].bytes), (1, traffic(1_000, 50_000)));

    store.record(&close(24, 8, "2026-01-01T10:00:03Z"));
    store.record(&close(u64::MAX, 1, "2026-01-01T10:00:04Z"));
    let second = store.take_delta();
    assert_eq!(second[0].connections, 0, "closes are no new connections");
    assert_eq!(second[0].bytes, traffic(model::limits::MAX_CONNECTIONS, 9), "bounded");
    let listed = &store.snapshot()[0];
    assert_eq!(listed.connections, 1);
    assert_eq!(listed.bytes, traffic(model::limits::MAX_CONNECTIONS, 50_009));
}

#[test]
fn deltas_carry_only_new_connections() {
    let (front, cart) = (workload("frontend"), workload("cartservice"));
    let mut store = EdgeStore::new(EdgeStoreConfig::default());
    store.record(&call(&front, &cart, "2026-01-01T10:00:00Z"));
    store.record(&call(&front, &cart, "2026-01-01T10:00:05Z"));
    let first = store.take_delta();
    assert_eq!(first.len(), 1);
    assert_eq!(first[0].connections, 2);
    assert!(store.take_delta().is_empty(), "nothing new since");

    store.record(&call(&front, &cart, "2026-01-01T10:01:00Z"));
    let second = store.take_delta();
    assert_eq!(second[0].connections, 1);
    assert_eq!(second[0].first_seen, t("2026-01-01T10:01:00Z"));
    assert_eq!(store.snapshot()[0].connections, 3, "the listing keeps the whole history");
    assert_eq!(first[0].connections + second[0].connections, store.snapshot()[0].connections);
}

#[test]
fn expired_and_reset_edges_still_deliver_their_unsent_changes() {
    let (front, cart) = (workload("frontend"), workload("cartservice"));
    let mut store = EdgeStore::new(EdgeStoreConfig {
        ttl: Some(TimeDelta::minutes(10)),
        max_edges: 10,
        ..EdgeStoreConfig::default()
    });
    store.record(&call(&front, &cart, "2026-01-01T10:00:00Z"));
    assert_eq!(store.expire(t("2026-01-01T10:05:00Z")), 0);
    assert_eq!(store.expire(t("2026-01-01T10:11:00Z")), 1);
    assert!(store.snapshot().is_empty());
    assert_eq!(store.take_delta().len(), 1);

    store.record(&call(&front, &cart, "2026-01-01T10:12:00Z"));
    store.reset();
    assert!(store.is_empty());
    assert_eq!(store.take_delta()[0].connections, 1);
    assert!(store.take_delta().is_empty());
}

#[test]
fn a_full_store_refuses_and_counts_new_edges_but_updates_known_ones() {
    let (front, cart, pay) =
        (workload("frontend"), workload("cartservice"), workload("paymentservice"));
    let mut store =
        EdgeStore::new(EdgeStoreConfig { ttl: None, max_edges: 1, ..EdgeStoreConfig::default() });
    assert_eq!(store.record(&call(&front, &cart, "2026-01-01T10:00:00Z")), Recorded::New);
    assert_eq!(store.record(&call(&front, &pay, "2026-01-01T10:00:00Z")), Recorded::Refused);
    assert_eq!(store.record(&call(&front, &cart, "2026-01-01T10:00:01Z")), Recorded::Updated);
    assert_eq!(store.dropped_edges(), 1);
    assert_eq!(store.len(), 1);
}

#[test]
fn paths_and_topics_accumulate_sorted_and_deltas_carry_only_the_new_ones() {
    let (front, cart, kafka) = (workload("frontend"), workload("cartservice"), workload("kafka"));
    let mut store = EdgeStore::new(EdgeStoreConfig::default());
    let http = |path, method, at| Observation {
        detail: Detail::Http { path, method: Some(method) },
        port: None,
        ..call(&front, &cart, at)
    };
    store.record(&http("/cart", "POST", "2026-01-01T10:00:00Z"));
    store.record(&http("/api", "GET", "2026-01-01T10:00:01Z"));
    store.record(&http("/cart", "GET", "2026-01-01T10:00:02Z"));
    let topic = |topic, operation, denied| Observation {
        target: ObservedTarget::Kafka(&kafka),
        detail: Detail::Kafka { topic, operation, denied },
        port: None,
        ..call(&front, &kafka, "2026-01-01T10:00:03Z")
    };
    store.record(&topic("orders", "produce", false));
    store.record(&topic("orders", "describe", true));
    store.record(&topic("audit", "consume", false));

    let delta = store.take_delta();
    let to_cart = delta.iter().find(|e| matches!(e.target, Target::Kubernetes(_))).unwrap();
    assert_eq!(
        to_cart.http,
        vec![
            HttpResource { path: "/api".into(), methods: vec!["GET".into()] },
            HttpResource { path: "/cart".into(), methods: vec!["GET".into(), "POST".into()] }
        ]
    );
    let to_kafka = delta.iter().find(|e| matches!(e.target, Target::Kafka(_))).unwrap();
    assert_eq!(
        to_kafka.kafka,
        vec![
            KafkaTopic { name: "audit".into(), operations: vec!["consume".into()], denied: vec![] },
            KafkaTopic {
                name: "orders".into(),
                operations: vec!["describe".into(), "produce".into()],
                denied: vec!["describe".into()]
            },
        ]
    );
    assert_eq!(to_kafka.connections, 3);
    assert!(to_kafka.ports.is_empty());

    store.record(&http("/checkout", "PUT", "2026-01-01T10:01:00Z"));
    let second = store.take_delta();
    assert_eq!(second.len(), 1);
    assert_eq!(
        second[0].http,
        vec![HttpResource { path: "/checkout".into(), methods: vec!["PUT".into()] }]
    );
    let listed = store.snapshot();
    let listed_cart = listed.iter().find(|e| matches!(e.target, Target::Kubernetes(_))).unwrap();
    assert_eq!(listed_cart.http.len(), 3, "the listing keeps every path");
    assert_eq!(model::merge_edges(listed.clone()), listed, "the store's order is the model's");
}

#[test]
fn only_connections_count_as_connected_and_only_while_the_edge_is_current() {
    let (front, cart) = (workload("frontend"), workload("cartservice"));
    let mut store = EdgeStore::new(EdgeStoreConfig::default());
    let request = Observation {
        connection: false,
        detail: Detail::Http { path: "/a", method: Some("GET") },
        ..call(&front, &cart, "2026-01-01T10:05:00Z")
    };
    store.record(&request);
    let target = ObservedTarget::Workload(&cart);
    assert!(
        !store.connected_since(&front, target, t("2026-01-01T00:00:00Z")),
        "a request counter is not a connection"
    );
    store.record(&call(&front, &cart, "2026-01-01T10:00:00Z"));
    assert!(store.connected_since(&front, target, t("2026-01-01T09:00:00Z")));
    assert!(!store.connected_since(&front, target, t("2026-01-01T10:01:00Z")), "too long ago");
    assert!(
        !store.connected_since(&cart, ObservedTarget::Workload(&front), t("2026-01-01T09:00:00Z")),
        "the other way round"
    );
    store.reset();
    assert!(!store.connected_since(&front, target, t("2026-01-01T09:00:00Z")), "forgotten");
}

#[test]
fn past_the_detail_limit_new_paths_are_left_off_and_counted_but_the_call_is_recorded() {
    let (front, cart) = (workload("frontend"), workload("cartservice"));
    let mut store =
        EdgeStore::new(EdgeStoreConfig { max_details_per_edge: 2, ..EdgeStoreConfig::default() });
    for path in ["/a", "/b", "/c", "/a"] {
        store.record(&Observation {
            detail: Detail::Http { path, method: Some("GET") },
            ..call(&front, &cart, "2026-01-01T10:00:00Z")
        });
    }
    let edge = &store.snapshot()[0];
    assert_eq!(edge.http.iter().map(|r| r.path.as_str()).collect::<Vec<_>>(), vec!["/a", "/b"]);
    assert_eq!(edge.connections, 4);
    assert_eq!(store.dropped_details(), 1);
}
