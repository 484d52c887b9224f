//! Parsing and validation of reports.

use super::*;

const SAMPLE: &str = r#"{"schema_version": 1, "report_id": "6f1d3b5e-7c53-4d63-9a43-2d0c5b1b9a10", "generated_at": "2026-11-24T18:00:00Z",
  "edges": [
    {"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"},
     "target": {"kubernetes": {"namespace": "shop", "name": "cartservice", "kind": "Deployment"}},
     "ports": [{"port": 7070, "protocol": "TCP"}], "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:59:00Z", "connections": 12},
    {"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"},
     "target": {"internet": {"domains": ["api.stripe.com"], "ips": ["203.0.113.7"], "ports": [443]}},
     "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:00:00Z", "connections": 1},
    {"client": {"namespace": "shop", "name": "invoicer", "kind": "CronJob"},
     "target": {"aws": {"arn": "arn:aws:s3:::invoices", "actions": ["s3:GetObject"]}},
     "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:00:00Z"}],
  "exposed": [{"namespace": "shop", "name": "frontend", "kind": "Deployment", "addresses": ["198.51.100.10"], "hostnames": ["shop.example.com"]}]}"#;

#[test]
fn the_documented_sample_parses_and_round_trips() {
    let report = EdgeReport::from_json(SAMPLE.as_bytes()).unwrap();
    assert_eq!(report.edges.len(), 3);
    assert_eq!(report.edges[2].connections, 0);
    let again = EdgeReport::from_json(&serde_json::to_vec(&report).unwrap()).unwrap();
    assert_eq!(again, report);
}

#[test]
fn a_newer_schema_version_is_named_as_such() {
    let newer = SAMPLE.replace("\"schema_version\": 1", "\"schema_version\": 2");
    assert_eq!(EdgeReport::from_json(newer.as_bytes()), Err(ReportError::UnsupportedVersion(2)));
}

#[test]
fn unknown_fields_and_broken_json_are_refused_with_the_reason() {
    let extra = SAMPLE.replace("\"connections\": 12", "\"connections\": 12, \"volume\": 5");
    let err = EdgeReport::from_json(extra.as_bytes()).unwrap_err().to_string();
    assert!(err.contains("unknown field `volume`"), "{err}");
    let cut = &SAMPLE[..SAMPLE.len() / 2];
    assert!(matches!(EdgeReport::from_json(cut.as_bytes()), Err(ReportError::Malformed(_))));
}

#[test]
fn invalid_values_are_refused_with_their_path() {
    let bad_ip = SAMPLE.replace("203.0.113.7", "203.0.113.777");
    let err = EdgeReport::from_json(bad_ip.as_bytes()).unwrap_err();
    assert!(err.to_string().starts_with("edges[1].target.internet.ips"), "{err}");

    let bad_name = SAMPLE.replace("\"name\": \"cartservice\"", "\"name\": \"Cart Service\"");
    let err = EdgeReport::from_json(bad_name.as_bytes()).unwrap_err();
    assert!(err.to_string().starts_with("edges[0].target.kubernetes.name"), "{err}");

    let backwards = SAMPLE.replace(
        "\"last_seen\": \"2026-11-24T17:59:00Z\"",
        "\"last_seen\": \"2026-11-24T16:00:00Z\"",
    );
    assert!(EdgeReport::from_json(backwards.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("first_seen is later"));

    let bad_arn = SAMPLE.replace("arn:aws:s3:::invoices", "invoices");
    assert!(EdgeReport::from_json(bad_arn.as_bytes())
        .unwrap_err()
        .to_string()
        .contains("not an ARN"));
}

/// A report with a kafka edge and HTTP edges to a workload and a Service, as the mapper's
/// Kafka and Istio watchers send them.
fn with_protocols() -> serde_json::Value {
    serde_json::json!({"schema_version": 1, "report_id": "6f1d3b5e-7c53-4d63-9a43-2d0c5b1b9a10", "generated_at": "2026-11-24T18:00:00Z",
      "edges": [
        {"client": {"namespace": "shop", "name": "checkout"}, "target": {"kafka": {"namespace": "infra", "name": "kafka", "kind": "StatefulSet"}},
         "kafka": [{"name": "orders", "operations": ["produce", "describe"], "denied": ["describe"]}, {"name": "audit.log_v2-eu", "operations": ["consume"]}],
         "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:00:00Z"},
        {"client": {"namespace": "shop", "name": "frontend"}, "target": {"kubernetes": {"namespace": "shop", "name": "cart"}},
         "http": [{"path": "/api/cart", "methods": ["GET", "POST"]}, {"path": "/healthz"}],
         "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:00:00Z"},
        {"client": {"namespace": "shop", "name": "frontend"}, "target": {"service": {"namespace": "shop", "name": "currency"}},
         "http": [{"path": "/convert", "methods": ["PUT"]}],
         "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:00:00Z"}]})
}

fn refusal(report: &serde_json::Value) -> String {
    EdgeReport::from_json(report.to_string().as_bytes())
        .expect_err("this report should be refused")
        .to_string()
}

#[test]
fn http_paths_and_kafka_topics_parse_and_round_trip() {
    let report = EdgeReport::from_json(with_protocols().to_string().as_bytes()).unwrap();
    assert_eq!(report.edges[0].target.type_name(), "kafka");
    assert_eq!(report.edges[0].kafka[0].denied, vec!["describe"]);
    assert_eq!(report.edges[1].http[1], HttpResource { path: "/healthz".into(), methods: vec![] });
    let again = EdgeReport::from_json(&serde_json::to_vec(&report).unwrap()).unwrap();
    assert_eq!(again, report);
    // Without them, edges serialise exactly as before: older readers see nothing new.
    let plain = EdgeReport::from_json(SAMPLE.as_bytes()).unwrap();
    let text = serde_json::to_string(&plain).unwrap();
    assert!(!text.contains("\"http\"") && !text.contains("\"kafka\""), "{text}");
}

#[test]
fn http_and_kafka_only_on_the_targets_that_have_them() {
    let mut r = with_protocols();
    r["edges"][1]["target"] = serde_json::json!({"internet": {"domains": ["api.stripe.com"]}});
    let err = refusal(&r);
    assert_eq!(err, "edges[1].http: HTTP paths are only recorded for kubernetes and service targets, not for internet targets");

    let mut r = with_protocols();
    r["edges"][0]["target"] =
        serde_json::json!({"kubernetes": {"namespace": "infra", "name": "kafka"}});
    let err = refusal(&r);
    assert_eq!(err, "edges[0].kafka: Kafka topics are only recorded for kafka targets, not for kubernetes targets");

    let mut r = with_protocols();
    r["edges"][2]["target"] = serde_json::json!({"aws": {"arn": "arn:aws:s3:::invoices"}});
    assert!(refusal(&r).starts_with("edges[2].http: "));

    let mut r = with_protocols();
    r["edges"][1]["target"] = serde_json::json!({"kafka": {"namespace": "infra", "name": "kafka"}});
    assert!(refusal(&r).starts_with("edges[1].http: "));
}

#[test]
fn methods_operations_paths_and_topic_names_are_checked() {
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "/edges/1/http/0/methods/1",
            serde_json::json!("get"),
            "edges[1].http[0].methods[1]: \"get\" is not one of the methods",
        ),
        (
            "/edges/1/http/0/methods/1",
            serde_json::json!("HEAD"),
            "edges[1].http[0].methods[1]: \"HEAD\" is not one of the methods",
        ),
        (
            "/edges/1/http/0/path",
            serde_json::json!(""),
            "edges[1].http[0].path: \"\" is not an HTTP path",
        ),
        (
            "/edges/1/http/0/path",
            serde_json::json!("api/cart"),
            "edges[1].http[0].path: \"api/cart\" is not an HTTP path",
        ),
        (
            "/edges/1/http/0/path",
            serde_json::json!("/api\ncart"),
            "edges[1].http[0].path: \"/api\\ncart\" contains control characters",
        ),
        (
            "/edges/1/http/0/path",
            serde_json::json!(format!("/{}", "a".repeat(2048))),
            "edges[1].http[0].path: HTTP path too long: 2049 bytes, at most 2048",
        ),
        (
            "/edges/0/kafka/0/operations/0",
            serde_json::json!("Write"),
            "edges[0].kafka[0].operations[0]: \"Write\" is not one of the Kafka operations",
        ),
        (
            "/edges/0/kafka/0/denied/0",
            serde_json::json!("consume"),
            "edges[0].kafka[0].denied[0]: \"consume\" is denied but not listed in operations",
        ),
        (
            "/edges/0/kafka/0/denied/0",
            serde_json::json!("read"),
            "edges[0].kafka[0].denied[0]: \"read\" is not one of the Kafka operations",
        ),
        (
            "/edges/0/kafka/1/name",
            serde_json::json!("orders/eu"),
            "edges[0].kafka[1].name: \"orders/eu\" is not a Kafka topic name",
        ),
        (
            "/edges/0/kafka/1/name",
            serde_json::json!(""),
            "edges[0].kafka[1].name: \"\" is not a Kafka topic name",
        ),
        (
            "/edges/0/kafka/1/name",
            serde_json::json!(".."),
            "edges[0].kafka[1].name: \"..\" is not a Kafka topic name",
        ),
        (
            "/edges/0/kafka/1/name",
            serde_json::json!("t".repeat(250)),
            "edges[0].kafka[1].name: Kafka topic name too long: 250 bytes, at most 249",
        ),
    ];
    for (pointer, value, expected) in cases {
        let mut r = with_protocols();
        *r.pointer_mut(pointer).unwrap() = value;
        let err = refusal(&r);
        assert!(err.starts_with(expected), "{pointer}: expected {expected:?}, got {err:?}");
    }

    // The longest allowed values are accepted, and every operation and method the CRD knows.
    let mut r = with_protocols();
    r["edges"][0]["kafka"][1]["name"] = serde_json::json!("t".repeat(249));
    r["edges"][0]["kafka"][1]["operations"] = serde_json::json!(KAFKA_OPERATIONS);
    r["edges"][1]["http"][0]["path"] = serde_json::json!(format!("/{}", "a".repeat(2047)));
    r["edges"][1]["http"][0]["methods"] = serde_json::json!(HTTP_METHODS);
    EdgeReport::from_json(r.to_string().as_bytes()).unwrap();

    // A path is any text after the slash (spaces, commas, unicode), a query string included.
    let mut r = with_protocols();
    r["edges"][1]["http"][0]["path"] = serde_json::json!("/search?q=a,b c&l=é");
    EdgeReport::from_json(r.to_string().as_bytes()).unwrap();
}

#[test]
fn counts_are_capped() {
    let mut r = with_protocols();
    r["edges"][1]["http"] = (0..=MAX_RESOURCES_PER_EDGE)
        .map(|i| serde_json::json!({"path": format!("/p{i}")}))
        .collect();
    assert_eq!(refusal(&r), "edges[1].http: more than 1000 paths; at most 1000 are accepted (see the EdgeReport limits in README.md)");
    let mut r = with_protocols();
    r["edges"][0]["kafka"] = (0..=MAX_RESOURCES_PER_EDGE)
        .map(|i| serde_json::json!({"name": format!("t{i}")}))
        .collect();
    assert!(refusal(&r).starts_with("edges[0].kafka: more than 1000 topics"));
    let mut r = with_protocols();
    r["edges"][1]["http"][0]["methods"] = serde_json::json!(vec!["GET"; 33]);
    assert!(refusal(&r).starts_with("edges[1].http[0].methods: more than 32 methods"));
}

fn exposed(
    ns: &str,
    name: &str,
    kind: Option<&str>,
    addresses: &[&str],
    hosts: &[&str],
) -> ExposedWorkload {
    ExposedWorkload {
        namespace: ns.into(),
        name: name.into(),
        kind: kind.map(Into::into),
        addresses: addresses.iter().map(|s| s.to_string()).collect(),
        hostnames: hosts.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn exposed_workloads_merge_per_workload_with_sorted_unique_addresses() {
    let merged = ExposedWorkload::merge_all(&[
        exposed(
            "shop",
            "web",
            Some("Deployment"),
            &["198.51.100.9", "198.51.100.1"],
            &["b.example"],
        ),
        exposed("pay", "gateway", None, &["203.0.113.5"], &[]),
        exposed(
            "shop",
            "web",
            Some("StatefulSet"),
            &["198.51.100.1", "198.51.100.2"],
            &["a.example", "b.example"],
        ),
    ]);
    assert_eq!(
        merged,
        vec![
            exposed("pay", "gateway", None, &["203.0.113.5"], &[]),
            // The first entry's kind; every address and hostname once, sorted.
            exposed(
                "shop",
                "web",
                Some("Deployment"),
                &["198.51.100.1", "198.51.100.2", "198.51.100.9"],
                &["a.example", "b.example"]
            ),
        ]
    );
    assert_eq!(ExposedWorkload::merge_all(&[]), vec![]);
    // A single entry with duplicates comes back deduplicated.
    assert_eq!(
        ExposedWorkload::merge_all(&[exposed("a", "b", None, &["x", "x"], &["h", "h"])]),
        vec![exposed("a", "b", None, &["x"], &["h"])]
    );
}

#[test]
fn bytes_are_read_summed_and_bounded() {
    let with = SAMPLE.replace(
        "\"connections\": 12",
        "\"connections\": 12, \"bytes\": {\"sent\": 10, \"received\": 20}",
    );
    let report = EdgeReport::from_json(with.as_bytes()).unwrap();
    let measured = report.edges.iter().find(|e| e.bytes.is_some()).unwrap();
    assert_eq!(measured.bytes, Some(crate::Traffic { sent: 10, received: 20 }));
    assert!(
        report.edges.iter().filter(|e| e.bytes.is_none()).count() >= 1,
        "unmeasured stays None"
    );
    let mut twice = measured.clone();
    twice.absorb(measured);
    assert_eq!(twice.bytes, Some(crate::Traffic { sent: 20, received: 40 }));
    let huge = crate::Traffic { sent: u64::MAX, received: 1 };
    assert_eq!(huge.saturating_add(huge).sent, crate::limits::MAX_CONNECTIONS);
    let bad = SAMPLE.replace(
        "\"connections\": 12",
        "\"connections\": 12, \"bytes\": {\"sent\": -1, \"received\": 0}",
    );
    assert!(EdgeReport::from_json(bad.as_bytes()).is_err());
}
