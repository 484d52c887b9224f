//! Kafka authorizer logs through the mapper, the index fed as the watchers would.

use model::{Edge, KafkaTopic, Target, WorkloadRef};

use super::*;
use crate::KafkaBroker;

fn kafka_cluster() -> Mapper {
    let mut mapper = mapper();
    deploy(&mut mapper.index, "shop", "orders", &["10.244.0.5"]);
    deploy(&mut mapper.index, "shop", "billing", &["10.244.0.6"]);
    mapper.index.apply_meta("StatefulSet", &mk_statefulset("kafka", "broker"));
    mapper
        .index
        .apply(&mk_pod("kafka", "broker-0", &["10.244.1.10"]).owned_by("StatefulSet", "broker"));
    mapper
}

fn line(decision: &str, operation: &str, host: &str, resource: &str) -> String {
    format!(
        "[2026-01-01 10:00:00,000] INFO Principal = User:CN=client is {decision} Operation = {operation} from host = {host} on resource = {resource} for request = Metadata with resourceRefCount = 1 (kafka.authorizer.logger)"
    )
}

fn broker_pod() -> KafkaBroker {
    KafkaBroker::Pod { namespace: "kafka".into(), name: "broker-0".into() }
}

fn topics(edges: &[Edge], client: &str) -> Vec<KafkaTopic> {
    edges
        .iter()
        .find(|e| e.client.name == client)
        .unwrap_or_else(|| panic!("no edge from {client}: {edges:#?}"))
        .kafka
        .clone()
}

fn topic(name: &str, operations: &[&str], denied: &[&str]) -> KafkaTopic {
    KafkaTopic {
        name: name.into(),
        operations: operations.iter().map(|o| (*o).into()).collect(),
        denied: denied.iter().map(|o| (*o).into()).collect(),
    }
}

#[test]
fn authorizer_lines_become_kafka_edges_to_the_broker_workload() {
    let mut mapper = kafka_cluster();
    let lines = [
        line("Allowed", "Write", "10.244.0.5", "Topic:LITERAL:orders"),
        line("Allowed", "Describe", "10.244.0.5", "Topic:LITERAL:orders"),
        line("Denied", "Read", "10.244.0.5", "Topic:LITERAL:payments"),
        line("Allowed", "READ", "10.244.0.6", "Topic:orders"),
        line("Allowed", "Write", "10.244.0.6", "Topic:PREFIXED:orders-"),
        line("Allowed", "Read", "10.244.0.6", "Group:LITERAL:billing group"),
        line("Allowed", "ClusterAction", "10.244.1.10", "Cluster:LITERAL:kafka-cluster"),
        line("Allowed", "CreateTokens", "10.244.0.6", "Topic:LITERAL:orders"),
        line("Allowed", "Read", "203.0.113.9", "Topic:LITERAL:orders"),
        line("Allowed", "Read", "10.244.0.6", &format!("Topic:LITERAL:{}", "x".repeat(250))),
        "[2026-01-01 10:00:00,000] INFO [Controller id=0] Processing automatic preferred replica leader election (kafka.controller.KafkaController)".to_owned(),
        "[2026-01-01 10:00:00,000] INFO Principal = User:CN=client is Allowed Operation (kafka.authorizer.logger)".to_owned(),
    ];
    let at = ts("2026-01-01T10:00:00Z");
    mapper.observe_kafka_log(&broker_pod(), lines.iter().map(|l| (at, l.as_str())), later());

    let edges = mapper.snapshot();
    assert_reportable(&edges);
    assert_eq!(edges.len(), 2, "{edges:#?}");
    for edge in &edges {
        assert_eq!(
            edge.target,
            Target::Kafka(WorkloadRef::new("kafka", "broker", Some("StatefulSet")))
        );
        assert!(edge.ports.is_empty() && edge.http.is_empty());
        assert_eq!(edge.first_seen, at);
    }
    assert_eq!(
        topics(&edges, "orders"),
        vec![
            topic("orders", &["describe", "produce"], &[]),
            topic("payments", &["consume"], &["consume"])
        ]
    );
    assert_eq!(topics(&edges, "billing"), vec![topic("orders", &["consume"], &[])]);
    let stats = mapper.stats();
    assert_eq!(
        (
            stats.kafka_accesses,
            stats.kafka_non_topic_lines,
            stats.kafka_unknown_operations,
            stats.kafka_unresolved_hosts
        ),
        (4, 2, 1, 1),
        "{stats:#?}"
    );
    assert_eq!(
        (stats.kafka_malformed_lines, stats.kafka_other_lines),
        (2, 1),
        "a 250-character topic and a broken line; one other line"
    );
    assert_eq!(stats.kafka_topic_patterns, 1);
}

#[test]
fn a_log_files_broker_is_named_explicitly_and_unknown_broker_pods_are_counted() {
    let mut mapper = kafka_cluster();
    let at = ts("2026-01-01T10:00:00Z");
    let read = line("Allowed", "Read", "10.244.0.5", "Topic:orders");
    let outside = KafkaBroker::Workload(WorkloadRef::new("data", "kafka-vm", None));
    mapper.observe_kafka_log(&outside, [(at, read.as_str())], later());
    let gone = KafkaBroker::Pod { namespace: "kafka".into(), name: "broker-9".into() };
    mapper.observe_kafka_log(&gone, [(at, read.as_str())], later());
    let edges = mapper.snapshot();
    assert_eq!(edges.len(), 1);
    assert_eq!(edges[0].target, Target::Kafka(WorkloadRef::new("data", "kafka-vm", None)));
    assert_eq!(edges[0].client, WorkloadRef::new("shop", "orders", Some("Deployment")));
    assert_eq!(mapper.stats().kafka_unknown_brokers, 1);
}

#[test]
fn the_client_address_is_resolved_at_the_time_of_the_line() {
    let mut mapper = kafka_cluster();
    // 10.244.0.7 was `old-client`'s until 10:00, then `new-client`'s.
    mapper
        .index
        .apply(&mk_pod("shop", "old-client", &["10.244.0.7"]).deleting_at("2026-01-01T10:00:00Z"));
    mapper
        .index
        .delete(&mk_pod("shop", "old-client", &["10.244.0.7"]).deleting_at("2026-01-01T10:00:00Z"));
    mapper
        .index
        .apply(&mk_pod("shop", "new-client", &["10.244.0.7"]).started_at("2026-01-01T10:00:30Z"));
    let read = line("Allowed", "Read", "10.244.0.7", "Topic:LITERAL:orders");
    mapper.observe_kafka_log(
        &broker_pod(),
        [(ts("2026-01-01T09:59:00Z"), read.as_str()), (ts("2026-01-01T10:01:00Z"), read.as_str())],
        later(),
    );
    let clients: Vec<String> = mapper.snapshot().iter().map(|e| e.client.name.clone()).collect();
    assert_eq!(clients, vec!["new-client", "old-client"]);
}
