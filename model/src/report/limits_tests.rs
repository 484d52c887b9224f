//! The wire format's limits: refused while parsing, timestamps bounded, and senders' reports
//! fitted so that they are never refused as a whole.

use chrono::TimeZone;
use serde_json::json;

use super::fit::{fit, list_entries};
use super::*;
use crate::edge::{InternetTarget, PortSpec, Protocol};

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
}

fn report_with(edges: Vec<serde_json::Value>) -> serde_json::Value {
    json!({"schema_version": 1, "report_id": "6f1d3b5e-7c53-4d63-9a43-2d0c5b1b9a10", "generated_at": "2026-12-01T11:00:00Z", "edges": edges})
}

fn internet_edge(domains: serde_json::Value) -> serde_json::Value {
    json!({"client": {"namespace": "shop", "name": "frontend"}, "target": {"internet": {"domains": domains}},
           "first_seen": "2026-12-01T10:00:00Z", "last_seen": "2026-12-01T10:00:00Z", "connections": 1})
}

/// The JSON of a report whose edge's `domains` holds `count` entries and then, instead of the
/// rest of the document, bytes that are not JSON: parsing can only fail on the limit if it
/// stopped at the limit.
fn domains_then_garbage(count: usize) -> Vec<u8> {
    let text = report_with(vec![internet_edge(json!(["a.example"]))]).to_string();
    let (head, _) = text.split_once("\"a.example\"").unwrap();
    let mut out = head.as_bytes().to_vec();
    out.extend(std::iter::repeat_n(&b"\"a.example\","[..], count).flatten());
    out.extend_from_slice(b"\x00 not JSON");
    out
}

fn over_limit(result: Result<EdgeReport, ReportError>) -> String {
    match result {
        Err(ReportError::OverLimit { path, problem }) => format!("{path}: {problem}"),
        other => panic!("expected a refusal over a limit, got {other:?}"),
    }
}

#[test]
fn a_huge_list_is_refused_at_its_limit_while_parsing() {
    let bytes = domains_then_garbage(MAX_ADDRESSES_PER_LIST + 1);
    let refused = over_limit(EdgeReport::from_json_at(&bytes, now()));
    assert_eq!(refused, "edges[0].target.internet.domains: more than 1000 domains; at most 1000 are accepted (see the EdgeReport limits in README.md)");
    // From a stream too.
    let streamed = over_limit(EdgeReport::from_reader_at(&bytes[..], now()));
    assert_eq!(streamed, refused);
    // Within the limit the garbage is reached: that is a different refusal.
    let at_limit = EdgeReport::from_json_at(&domains_then_garbage(MAX_ADDRESSES_PER_LIST), now());
    assert!(matches!(at_limit, Err(ReportError::Malformed(_))), "{at_limit:?}");
}

#[test]
fn every_list_is_bounded() {
    let many = |n: usize, value: serde_json::Value| serde_json::Value::Array(vec![value; n]);
    let edge = |target: serde_json::Value| json!({"client": {"namespace": "shop", "name": "frontend"}, "target": target, "first_seen": "2026-12-01T10:00:00Z", "last_seen": "2026-12-01T10:00:00Z"});
    let mut ports = edge(json!({"service": {"namespace": "shop", "name": "cart"}}));
    ports["ports"] = many(1001, json!({"port": 80}));
    let cases = [
        (ports, "edges[0].ports: more than 1000 ports"),
        (
            edge(json!({"internet": {"ips": many(1001, json!("192.0.2.1"))}})),
            "edges[0].target.internet.ips: more than 1000 IPs",
        ),
        (
            edge(json!({"internet": {"domains": ["a.example"], "ports": many(1001, json!(443))}})),
            "edges[0].target.internet.ports: more than 1000 ports",
        ),
        (
            edge(json!({"incoming": {"ips": many(1001, json!("192.0.2.1"))}})),
            "edges[0].target.incoming.ips: more than 1000 IPs",
        ),
        (
            edge(
                json!({"aws": {"arn": "arn:aws:s3:::b", "actions": many(1001, json!("s3:GetObject"))}}),
            ),
            "edges[0].target.aws.actions: more than 1000 actions",
        ),
        (
            edge(json!({"aws": {"arn": format!("arn:aws:s3:::{}", "b".repeat(2048))}})),
            "edges[0].target.aws.arn: ARN too long: 2061 bytes, at most 2048",
        ),
    ];
    for (edge, expected) in cases {
        let refused =
            EdgeReport::from_json_at(report_with(vec![edge]).to_string().as_bytes(), now())
                .unwrap_err()
                .to_string();
        assert!(refused.starts_with(expected), "expected {expected:?}, got {refused:?}");
    }

    let exposed = |addresses: serde_json::Value| json!({"namespace": "shop", "name": "frontend", "addresses": addresses});
    let mut r = report_with(vec![]);
    r["exposed"] = json!([exposed(many(1001, json!("198.51.100.1")))]);
    let refused =
        EdgeReport::from_json_at(r.to_string().as_bytes(), now()).unwrap_err().to_string();
    assert!(refused.starts_with("exposed[0].addresses: more than 1000 addresses"), "{refused}");
    r["exposed"] = many(MAX_EXPOSED_PER_REPORT + 1, exposed(json!([])));
    let refused =
        EdgeReport::from_json_at(r.to_string().as_bytes(), now()).unwrap_err().to_string();
    assert!(refused.starts_with("exposed: more than 10000 exposed workloads"), "{refused}");
    r["exposed"] = json!([{"namespace": "n".repeat(254), "name": "frontend"}]);
    let refused =
        EdgeReport::from_json_at(r.to_string().as_bytes(), now()).unwrap_err().to_string();
    assert_eq!(refused, "exposed[0]: Kubernetes name too long: 254 bytes, at most 253");
}

#[test]
fn the_whole_report_has_an_entry_budget() {
    // 501 edges of 1,000 ports each: every list within its limit, the report over its budget.
    let ports: Vec<u16> = (1..=1000).collect();
    let edges: Vec<serde_json::Value> = (0..501)
        .map(|i| {
            let mut e = internet_edge(json!([format!("h{i}.example")]));
            e["target"]["internet"]["ports"] = json!(ports);
            e
        })
        .collect();
    let refused =
        over_limit(EdgeReport::from_json_at(report_with(edges).to_string().as_bytes(), now()));
    assert!(
        refused.starts_with(
            "edges[499].target.internet.ports: the report holds more than 500000 list entries"
        ),
        "{refused}"
    );
}

#[test]
fn too_many_edges_are_refused_while_parsing() {
    let edges = vec![internet_edge(json!(["a.example"])); MAX_EDGES_PER_REPORT + 1];
    let refused =
        over_limit(EdgeReport::from_json_at(report_with(edges).to_string().as_bytes(), now()));
    assert!(refused.starts_with("edges: more than 50000 edges"), "{refused}");
}

#[test]
fn timestamps_must_lie_between_2000_and_a_day_ahead() {
    let cases = [
        (
            "/generated_at",
            "9999-01-01T00:00:00Z",
            "generated_at: 9999-01-01T00:00:00+00:00 is more than a day ahead of the cloud's clock (2026-12-01T12:00:00Z)",
        ),
        ("/generated_at", "1999-12-31T23:59:59Z", "generated_at: 1999-12-31T23:59:59+00:00 is before 2000-01-01"),
        ("/edges/0/first_seen", "-5000-01-01T00:00:00Z", "edges[0].first_seen: -5000-01-01T00:00:00+00:00 is before 2000-01-01"),
        ("/edges/0/last_seen", "2026-12-02T12:00:01Z", "edges[0].last_seen: 2026-12-02T12:00:01+00:00 is more than a day ahead"),
    ];
    for (pointer, value, expected) in cases {
        let mut r = report_with(vec![internet_edge(json!(["a.example"]))]);
        *r.pointer_mut(pointer).unwrap() = json!(value);
        let refused = EdgeReport::from_json_at(r.to_string().as_bytes(), now()).unwrap_err();
        assert!(matches!(refused, ReportError::Invalid { .. }), "{refused:?}");
        assert!(refused.to_string().starts_with(expected), "expected {expected:?}, got {refused}");
    }
    // Up to a day ahead is a clock skew, not an error.
    let mut r = report_with(vec![internet_edge(json!(["a.example"]))]);
    r["generated_at"] = json!("2026-12-02T11:59:00Z");
    EdgeReport::from_json_at(r.to_string().as_bytes(), now()).unwrap();
}

fn edge(client: &str, target: Target) -> Edge {
    let at = now() - chrono::TimeDelta::hours(1);
    Edge {
        client: WorkloadRef::new("shop", client, None),
        target,
        ports: vec![],
        first_seen: at,
        last_seen: at,
        connections: 1,
        http: vec![],
        kafka: vec![],
        bytes: None,
    }
}

#[test]
fn fitting_trims_long_lists_and_keeps_the_name_of_the_target() {
    let domains: Vec<String> = (0..1500).rev().map(|i| format!("d{i:04}.example")).collect();
    let mut e = edge(
        "frontend",
        Target::Internet(InternetTarget {
            domains,
            ips: vec!["192.0.2.1".into()],
            ports: vec![443],
        }),
    );
    e.ports = (1..=1200).map(|port| PortSpec { port, protocol: Protocol::Tcp }).collect();
    e.connections = u64::MAX;
    let key = e.key();
    let fitted = fit(EdgeReport::new(Uuid::new_v4(), now(), vec![e], vec![]), now(), Uuid::new_v4);
    assert_eq!(fitted.trimmed_entries, 500 + 200);
    assert!(fitted.dropped.is_empty(), "{:?}", fitted.dropped);
    let [report] = &fitted.reports[..] else { panic!("one report expected: {fitted:?}") };
    report.validate_at(now()).unwrap();
    assert_eq!(report.edges[0].key(), key, "the target keeps the domain that names it");
    assert_eq!(report.edges[0].connections, i64::MAX as u64);
}

#[test]
fn fitting_splits_a_backlog_and_every_part_carries_the_exposed_set() {
    let edges: Vec<Edge> = (0..MAX_EDGES_PER_REPORT * 2 + 10)
        .map(|i| {
            edge(
                &format!("client-{i}"),
                Target::Service(crate::ServiceRef {
                    namespace: "shop".into(),
                    name: "cart".into(),
                }),
            )
        })
        .collect();
    let exposed = vec![ExposedWorkload {
        namespace: "shop".into(),
        name: "frontend".into(),
        kind: None,
        addresses: vec!["198.51.100.1".into()],
        hostnames: vec![],
    }];
    let id = Uuid::new_v4();
    let fitted = fit(EdgeReport::new(id, now(), edges, exposed.clone()), now(), Uuid::new_v4);
    let sizes: Vec<usize> = fitted.reports.iter().map(|r| r.edges.len()).collect();
    assert_eq!(sizes, vec![MAX_EDGES_PER_REPORT, MAX_EDGES_PER_REPORT, 10]);
    assert_eq!(fitted.reports[0].report_id, id);
    assert!(fitted.reports.iter().all(|r| r.exposed == exposed && r.generated_at == now()));
    for r in &fitted.reports {
        r.validate_at(now()).unwrap();
    }

    // Split by entries too: 600 edges of 1,000 ports make 600,000 entries, over one report's budget.
    let edges: Vec<Edge> = (0..600)
        .map(|i| {
            let mut e = edge(
                &format!("client-{i}"),
                Target::Service(crate::ServiceRef {
                    namespace: "shop".into(),
                    name: "cart".into(),
                }),
            );
            e.ports = (1..=1000).map(|port| PortSpec { port, protocol: Protocol::Tcp }).collect();
            e
        })
        .collect();
    let fitted = fit(EdgeReport::new(id, now(), edges, vec![]), now(), Uuid::new_v4);
    assert_eq!(fitted.reports.len(), 2);
    assert!(fitted.reports.iter().all(|r| list_entries(r) <= MAX_LIST_ENTRIES_PER_REPORT));
    assert_eq!(fitted.reports.iter().map(|r| r.edges.len()).sum::<usize>(), 600);
}

#[test]
fn fitting_drops_only_the_edges_the_cloud_would_refuse() {
    let good = edge(
        "frontend",
        Target::Service(crate::ServiceRef { namespace: "shop".into(), name: "cart".into() }),
    );
    let mut future = good.clone();
    future.client.name = "checkout".into();
    future.last_seen = now() + chrono::TimeDelta::days(30);
    let long_arn = edge(
        "invoicer",
        Target::Aws(crate::AwsTarget {
            arn: format!("arn:aws:s3:::{}", "b".repeat(3000)),
            actions: vec![],
        }),
    );
    let fitted = fit(
        EdgeReport::new(Uuid::new_v4(), now(), vec![good.clone(), future, long_arn], vec![]),
        now(),
        Uuid::new_v4,
    );
    assert_eq!(fitted.reports[0].edges, vec![good]);
    assert_eq!(fitted.dropped.len(), 2, "{:?}", fitted.dropped);
    assert!(
        fitted.dropped[0].starts_with("edge checkout.shop -> cart: last_seen: "),
        "{:?}",
        fitted.dropped
    );
    assert!(fitted.dropped[1].contains("target.aws.arn"), "{:?}", fitted.dropped);
}

#[test]
fn incoming_traffic_travels_in_reports_and_is_checked() {
    let incoming = |ips: serde_json::Value| json!({"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"}, "target": {"incoming": {"ips": ips}}, "ports": [{"port": 8080}], "first_seen": "2026-12-01T10:00:00Z", "last_seen": "2026-12-01T10:05:00Z", "connections": 3});
    let bytes = report_with(vec![incoming(json!(["203.0.113.7", "2001:db8::1"]))]).to_string();
    let report = EdgeReport::from_json_at(bytes.as_bytes(), now()).unwrap();
    let Target::Incoming(i) = &report.edges[0].target else { panic!("{:?}", report.edges[0]) };
    assert_eq!(i.ips, ["203.0.113.7", "2001:db8::1"]);
    assert_eq!(report.edges[0].key().target_name, crate::edge::INCOMING_NAME);
    // What a sender writes, the cloud reads back the same.
    let again = EdgeReport::from_json_at(&serde_json::to_vec(&report).unwrap(), now()).unwrap();
    assert_eq!(again, report);
    for (ips, problem) in [
        (json!(["not an address"]), "edges[0].target.incoming.ips"),
        (json!([]), "edges[0].target.incoming"),
    ] {
        let bytes = report_with(vec![incoming(ips)]).to_string();
        let refused = EdgeReport::from_json_at(bytes.as_bytes(), now()).unwrap_err().to_string();
        assert!(refused.starts_with(problem), "expected {problem:?}, got {refused:?}");
    }
}
