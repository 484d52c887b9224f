//! The `EdgeReport`: what a cluster uploads to the cloud. Versioned by `schema_version`.

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::edge::{Edge, HttpResource, KafkaTopic, Target, WorkloadRef, HTTP_METHODS, KAFKA_OPERATIONS};

/// The only schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;
/// Reports larger than this must be split by the sender.
pub const MAX_EDGES_PER_REPORT: usize = 50_000;
/// HTTP paths, and Kafka topics, on one edge of one report.
pub const MAX_RESOURCES_PER_EDGE: usize = 1_000;
/// The longest HTTP path accepted, in bytes.
pub const MAX_HTTP_PATH_BYTES: usize = 2_048;
/// Kafka's own limit on topic names.
pub const MAX_TOPIC_NAME_CHARS: usize = 249;
/// Methods listed for one path, or operations for one topic (duplicates included).
const MAX_VERBS: usize = 32;

/// A batch of edges observed by one cluster, plus the addresses that cluster exposes.
///
/// `report_id` is the idempotency key: the cloud applies a given report at most once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EdgeReport {
    pub schema_version: u32,
    pub report_id: Uuid,
    /// The cluster's clock when the report was made.
    pub generated_at: DateTime<Utc>,
    #[serde(default)]
    pub edges: Vec<Edge>,
    /// The full current set of the cluster's exposed workloads; the newest report wins.
    #[serde(default)]
    pub exposed: Vec<ExposedWorkload>,
}

/// A workload reachable from outside its cluster (LoadBalancer IPs and hostnames, Ingress hosts).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExposedWorkload {
    pub namespace: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(default)]
    pub addresses: Vec<String>,
    #[serde(default)]
    pub hostnames: Vec<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("the report is not valid JSON for schema version {SCHEMA_VERSION}: {0}")]
    Malformed(String),
    #[error("schema_version {0} is not supported: this server reads schema_version {SCHEMA_VERSION}; upgrade the cloud or downgrade the agent")]
    UnsupportedVersion(u32),
    #[error("the report has {0} edges; split it into reports of at most {MAX_EDGES_PER_REPORT}")]
    TooManyEdges(usize),
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
}

#[derive(Deserialize)]
struct VersionProbe {
    schema_version: Option<u32>,
}

impl EdgeReport {
    pub fn new(report_id: Uuid, generated_at: DateTime<Utc>, edges: Vec<Edge>, exposed: Vec<ExposedWorkload>) -> Self {
        Self { schema_version: SCHEMA_VERSION, report_id, generated_at, edges, exposed }
    }

    /// Parses and validates a report. The version is checked first so that a newer agent gets
    /// "unsupported version" rather than a confusing complaint about a field it added.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReportError> {
        // One parse on the happy path; only a refused report pays for a second look at its version.
        let report: EdgeReport = match serde_json::from_slice(bytes) {
            Ok(report) => report,
            Err(e) => {
                return Err(match serde_json::from_slice::<VersionProbe>(bytes) {
                    Ok(VersionProbe { schema_version: Some(v) }) if v != SCHEMA_VERSION => ReportError::UnsupportedVersion(v),
                    _ => ReportError::Malformed(e.to_string()),
                })
            }
        };
        report.validate()?;
        Ok(report)
    }

    pub fn validate(&self) -> Result<(), ReportError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(ReportError::UnsupportedVersion(self.schema_version));
        }
        if self.edges.len() > MAX_EDGES_PER_REPORT {
            return Err(ReportError::TooManyEdges(self.edges.len()));
        }
        for (i, edge) in self.edges.iter().enumerate() {
            validate_edge(edge).map_err(|(field, problem)| ReportError::Invalid { path: format!("edges[{i}].{field}"), problem })?;
        }
        for (i, exposed) in self.exposed.iter().enumerate() {
            let at = |field: &str, problem: String| ReportError::Invalid { path: format!("exposed[{i}].{field}"), problem };
            check_name(&exposed.namespace).map_err(|p| at("namespace", p))?;
            check_name(&exposed.name).map_err(|p| at("name", p))?;
            for (j, a) in exposed.addresses.iter().enumerate() {
                check_ip(a).map_err(|p| at(&format!("addresses[{j}]"), p))?;
            }
            for (j, h) in exposed.hostnames.iter().enumerate() {
                check_hostname(h).map_err(|p| at(&format!("hostnames[{j}]"), p))?;
            }
        }
        Ok(())
    }
}

fn validate_edge(edge: &Edge) -> Result<(), (String, String)> {
    fn at(field: &'static str) -> impl Fn(String) -> (String, String) {
        move |p| (field.to_owned(), p)
    }
    check_workload(&edge.client).map_err(|(f, p)| (format!("client.{f}"), p))?;
    if edge.first_seen > edge.last_seen {
        return Err(("first_seen".into(), "first_seen is later than last_seen".into()));
    }
    for p in &edge.ports {
        if p.port == 0 {
            return Err(("ports".into(), "port 0 is not a destination port".into()));
        }
    }
    if !edge.http.is_empty() && !matches!(edge.target, Target::Kubernetes(_) | Target::Service(_)) {
        return Err(("http".into(), format!("HTTP paths are only recorded for kubernetes and service targets, not for {} targets", edge.target.type_name())));
    }
    if !edge.kafka.is_empty() && !matches!(edge.target, Target::Kafka(_)) {
        return Err(("kafka".into(), format!("Kafka topics are only recorded for kafka targets, not for {} targets", edge.target.type_name())));
    }
    check_http(&edge.http)?;
    check_kafka(&edge.kafka)?;
    match &edge.target {
        Target::Kubernetes(w) => check_workload(w).map_err(|(f, p)| (format!("target.kubernetes.{f}"), p)),
        Target::Kafka(w) => check_workload(w).map_err(|(f, p)| (format!("target.kafka.{f}"), p)),
        Target::Service(s) => {
            check_name(&s.namespace).map_err(at("target.service.namespace"))?;
            check_name(&s.name).map_err(at("target.service.name"))
        }
        Target::Internet(i) => {
            if i.domains.is_empty() && i.ips.is_empty() {
                return Err(("target.internet".into(), "an internet target needs at least one domain or IP".into()));
            }
            for d in &i.domains {
                check_hostname(d).map_err(at("target.internet.domains"))?;
            }
            for ip in &i.ips {
                check_ip(ip).map_err(at("target.internet.ips"))?;
            }
            if i.ports.contains(&0) {
                return Err(("target.internet.ports".into(), "port 0 is not a destination port".into()));
            }
            Ok(())
        }
        Target::Aws(a) => {
            if !a.arn.starts_with("arn:") || a.arn.split(':').count() < 6 {
                return Err(("target.aws.arn".into(), format!("{:?} is not an ARN (arn:partition:service:region:account:resource)", a.arn)));
            }
            for action in &a.actions {
                let charset_ok = action.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '*' | '-' | '_'));
                if !action.contains(':') || action.len() > 256 || !charset_ok {
                    return Err(("target.aws.actions".into(), format!("{action:?} is not an IAM action such as s3:GetObject")));
                }
            }
            Ok(())
        }
    }
}

fn check_http(http: &[HttpResource]) -> Result<(), (String, String)> {
    if http.len() > MAX_RESOURCES_PER_EDGE {
        return Err(("http".into(), format!("{} paths on one edge; at most {MAX_RESOURCES_PER_EDGE} a report", http.len())));
    }
    for (i, r) in http.iter().enumerate() {
        let at = |field: &str, problem: String| (format!("http[{i}].{field}"), problem);
        if !r.path.starts_with('/') {
            return Err(at("path", format!("{:?} is not an HTTP path: it must start with '/'", truncated(&r.path))));
        }
        if r.path.len() > MAX_HTTP_PATH_BYTES {
            return Err(at("path", format!("the path is {} bytes long; at most {MAX_HTTP_PATH_BYTES}", r.path.len())));
        }
        if r.path.chars().any(char::is_control) {
            return Err(at("path", format!("{:?} contains control characters", truncated(&r.path))));
        }
        if r.methods.len() > MAX_VERBS {
            return Err(at("methods", format!("{} methods listed; at most {MAX_VERBS}", r.methods.len())));
        }
        for (j, m) in r.methods.iter().enumerate() {
            if !HTTP_METHODS.contains(&m.as_str()) {
                return Err(at(
                    &format!("methods[{j}]"),
                    format!("{:?} is not one of the methods ClientIntents know: {}", truncated(m), HTTP_METHODS.join(", ")),
                ));
            }
        }
    }
    Ok(())
}

fn check_kafka(kafka: &[KafkaTopic]) -> Result<(), (String, String)> {
    if kafka.len() > MAX_RESOURCES_PER_EDGE {
        return Err(("kafka".into(), format!("{} topics on one edge; at most {MAX_RESOURCES_PER_EDGE} a report", kafka.len())));
    }
    for (i, t) in kafka.iter().enumerate() {
        let at = |field: &str, problem: String| (format!("kafka[{i}].{field}"), problem);
        check_topic_name(&t.name).map_err(|p| at("name", p))?;
        for (field, ops) in [("operations", &t.operations), ("denied", &t.denied)] {
            if ops.len() > MAX_VERBS {
                return Err(at(field, format!("{} operations listed; at most {MAX_VERBS}", ops.len())));
            }
            for (j, op) in ops.iter().enumerate() {
                if !KAFKA_OPERATIONS.contains(&op.as_str()) {
                    return Err(at(
                        &format!("{field}[{j}]"),
                        format!("{:?} is not one of the Kafka operations ClientIntents know: {}", truncated(op), KAFKA_OPERATIONS.join(", ")),
                    ));
                }
            }
        }
        if let Some((j, op)) = t.denied.iter().enumerate().find(|(_, op)| !t.operations.contains(op)) {
            return Err(at(&format!("denied[{j}]"), format!("{op:?} is denied but not listed in operations; a denied operation is one the client called")));
        }
    }
    Ok(())
}

/// Kafka topic names: 1 to 249 ASCII letters, digits, '.', '_' and '-', and neither "." nor "..".
fn check_topic_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_TOPIC_NAME_CHARS
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && name != "."
        && name != "..";
    if ok {
        Ok(())
    } else {
        Err(format!("{:?} is not a Kafka topic name (1 to {MAX_TOPIC_NAME_CHARS} letters, digits, '.', '_' and '-')", truncated(name)))
    }
}

/// At most the first 100 characters of a refused value, so an error message stays readable.
fn truncated(s: &str) -> String {
    match s.char_indices().nth(100) {
        Some((at, _)) => format!("{}...", &s[..at]),
        None => s.to_owned(),
    }
}

fn check_workload(w: &WorkloadRef) -> Result<(), (String, String)> {
    check_name(&w.namespace).map_err(|p| ("namespace".to_owned(), p))?;
    check_name(&w.name).map_err(|p| ("name".to_owned(), p))?;
    if let Some(kind) = &w.kind {
        if kind.is_empty() || kind.len() > 63 || !kind.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(("kind".into(), format!("{kind:?} is not a Kubernetes kind")));
        }
    }
    Ok(())
}

/// Kubernetes object names: DNS-1123 subdomains (lowercase alphanumerics, `-` and `.`, at most 253).
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a Kubernetes name (lowercase letters, digits, '-' and '.', at most 253 characters)"))
    }
}

fn check_hostname(name: &str) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed
            .split('.')
            .all(|label| !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*'));
    if ok {
        Ok(())
    } else {
        Err(format!("{name:?} is not a DNS name"))
    }
}

fn check_ip(ip: &str) -> Result<(), String> {
    ip.parse::<IpAddr>().map(|_| ()).map_err(|_| format!("{ip:?} is not an IPv4 or IPv6 address"))
}

#[cfg(test)]
mod tests {
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
        let extra = SAMPLE.replace("\"connections\": 12", "\"connections\": 12, \"bytes\": 5");
        let err = EdgeReport::from_json(extra.as_bytes()).unwrap_err().to_string();
        assert!(err.contains("unknown field `bytes`"), "{err}");
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

        let backwards = SAMPLE.replace("\"last_seen\": \"2026-11-24T17:59:00Z\"", "\"last_seen\": \"2026-11-24T16:00:00Z\"");
        assert!(EdgeReport::from_json(backwards.as_bytes()).unwrap_err().to_string().contains("first_seen is later"));

        let bad_arn = SAMPLE.replace("arn:aws:s3:::invoices", "invoices");
        assert!(EdgeReport::from_json(bad_arn.as_bytes()).unwrap_err().to_string().contains("not an ARN"));
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
        EdgeReport::from_json(report.to_string().as_bytes()).expect_err("this report should be refused").to_string()
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
        r["edges"][0]["target"] = serde_json::json!({"kubernetes": {"namespace": "infra", "name": "kafka"}});
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
            ("/edges/1/http/0/methods/1", serde_json::json!("get"), "edges[1].http[0].methods[1]: \"get\" is not one of the methods"),
            ("/edges/1/http/0/methods/1", serde_json::json!("HEAD"), "edges[1].http[0].methods[1]: \"HEAD\" is not one of the methods"),
            ("/edges/1/http/0/path", serde_json::json!(""), "edges[1].http[0].path: \"\" is not an HTTP path"),
            ("/edges/1/http/0/path", serde_json::json!("api/cart"), "edges[1].http[0].path: \"api/cart\" is not an HTTP path"),
            ("/edges/1/http/0/path", serde_json::json!("/api\ncart"), "edges[1].http[0].path: \"/api\\ncart\" contains control characters"),
            ("/edges/1/http/0/path", serde_json::json!(format!("/{}", "a".repeat(2048))), "edges[1].http[0].path: the path is 2049 bytes long"),
            ("/edges/0/kafka/0/operations/0", serde_json::json!("Write"), "edges[0].kafka[0].operations[0]: \"Write\" is not one of the Kafka operations"),
            ("/edges/0/kafka/0/denied/0", serde_json::json!("consume"), "edges[0].kafka[0].denied[0]: \"consume\" is denied but not listed in operations"),
            ("/edges/0/kafka/0/denied/0", serde_json::json!("read"), "edges[0].kafka[0].denied[0]: \"read\" is not one of the Kafka operations"),
            ("/edges/0/kafka/1/name", serde_json::json!("orders/eu"), "edges[0].kafka[1].name: \"orders/eu\" is not a Kafka topic name"),
            ("/edges/0/kafka/1/name", serde_json::json!(""), "edges[0].kafka[1].name: \"\" is not a Kafka topic name"),
            ("/edges/0/kafka/1/name", serde_json::json!(".."), "edges[0].kafka[1].name: \"..\" is not a Kafka topic name"),
            ("/edges/0/kafka/1/name", serde_json::json!("t".repeat(250)), "edges[0].kafka[1].name: \"tttt"),
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
        r["edges"][1]["http"] = (0..=MAX_RESOURCES_PER_EDGE).map(|i| serde_json::json!({"path": format!("/p{i}")})).collect();
        assert!(refusal(&r).starts_with("edges[1].http: 1001 paths on one edge"));
        let mut r = with_protocols();
        r["edges"][0]["kafka"] = (0..=MAX_RESOURCES_PER_EDGE).map(|i| serde_json::json!({"name": format!("t{i}")})).collect();
        assert!(refusal(&r).starts_with("edges[0].kafka: 1001 topics on one edge"));
        let mut r = with_protocols();
        r["edges"][1]["http"][0]["methods"] = serde_json::json!(vec!["GET"; 33]);
        assert!(refusal(&r).starts_with("edges[1].http[0].methods: 33 methods listed"));
    }
}
