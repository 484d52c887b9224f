//! The `EdgeReport`: what a cluster uploads to the cloud. Versioned by `schema_version`.
//!
//! Parsing ([`EdgeReport::from_json_at`], [`EdgeReport::from_reader_at`]) enforces the limits in
//! [`crate::limits`] as it goes (see `wire`); validation then checks values and timestamps.
//! Senders fit their reports to the limits with [`fit`].

pub mod fit;
mod wire;

use std::io::Read;
use std::net::IpAddr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::edge::{
    Edge, HttpResource, InternetTarget, KafkaTopic, Target, WorkloadRef, HTTP_METHODS,
    KAFKA_OPERATIONS,
};
use crate::limits::*;
pub use crate::limits::{
    MAX_EDGES_PER_REPORT, MAX_HTTP_PATH_BYTES, MAX_RESOURCES_PER_EDGE, MAX_TOPIC_NAME_CHARS,
};

/// The only schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

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

impl ExposedWorkload {
    /// One entry per workload (namespace and name), sorted by them: the addresses and hostnames
    /// of every entry for it, each once and sorted, and the kind of its first entry. What the
    /// cloud stores as a cluster's exposed set.
    pub fn merge_all(exposed: &[ExposedWorkload]) -> Vec<ExposedWorkload> {
        let mut merged: std::collections::BTreeMap<(&str, &str), ExposedWorkload> =
            Default::default();
        for x in exposed {
            let entry = merged.entry((&x.namespace, &x.name)).or_insert_with(|| ExposedWorkload {
                addresses: vec![],
                hostnames: vec![],
                ..x.clone()
            });
            entry.addresses = crate::edge::union(&entry.addresses, &x.addresses);
            entry.hostnames = crate::edge::union(&entry.hostnames, &x.hostnames);
        }
        merged.into_values().collect()
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("the report is not valid JSON for schema version {SCHEMA_VERSION}: {0}")]
    Malformed(String),
    #[error("schema_version {0} is not supported: this server reads schema_version {SCHEMA_VERSION}; upgrade the cloud or downgrade the agent")]
    UnsupportedVersion(u32),
    #[error("the report has {0} edges; split it into reports of at most {MAX_EDGES_PER_REPORT}")]
    TooManyEdges(usize),
    /// A list, or the report as a whole, past one of the limits in [`crate::limits`].
    #[error("{path}: {problem}")]
    OverLimit { path: String, problem: String },
    #[error("{path}: {problem}")]
    Invalid { path: String, problem: String },
}

#[derive(Deserialize)]
struct VersionProbe {
    schema_version: Option<u32>,
}

impl EdgeReport {
    pub fn new(
        report_id: Uuid,
        generated_at: DateTime<Utc>,
        edges: Vec<Edge>,
        exposed: Vec<ExposedWorkload>,
    ) -> Self {
        Self { schema_version: SCHEMA_VERSION, report_id, generated_at, edges, exposed }
    }

    /// [`Self::from_json_at`] against the current clock.
    pub fn from_json(bytes: &[u8]) -> Result<Self, ReportError> {
        Self::from_json_at(bytes, Utc::now())
    }

    /// Parses and validates a report, `now` being the receiver's clock. Lists and strings are
    /// refused at their limit while parsing. The version is checked as soon as it is read, and
    /// again if the report is refused, so that a newer agent gets "unsupported version" rather
    /// than a confusing complaint about a field it added.
    pub fn from_json_at(bytes: &[u8], now: DateTime<Utc>) -> Result<Self, ReportError> {
        let parsed = wire::parse(|| serde_json::from_slice(bytes));
        let report = match parsed {
            Ok(report) => report,
            Err(ReportError::Malformed(e)) => {
                // Only a refused report pays for a second look at its version.
                return Err(match serde_json::from_slice::<VersionProbe>(bytes) {
                    Ok(VersionProbe { schema_version: Some(v) }) if v != SCHEMA_VERSION => {
                        ReportError::UnsupportedVersion(v)
                    }
                    _ => ReportError::Malformed(e),
                });
            }
            Err(e) => return Err(e),
        };
        report.validate_at(now)?;
        Ok(report)
    }

    /// [`Self::from_json_at`] from a stream (a decompressor), so that a report refused early
    /// is never held whole. The version is only recognised when it comes before anything the
    /// parser refuses, as senders write it.
    pub fn from_reader_at(reader: impl Read, now: DateTime<Utc>) -> Result<Self, ReportError> {
        let report = wire::parse(|| {
            let mut de = serde_json::Deserializer::from_reader(reader);
            let report = serde::Deserialize::deserialize(&mut de)?;
            de.end()?;
            Ok(report)
        })?;
        report.validate_at(now)?;
        Ok(report)
    }

    /// [`Self::validate_at`] against the current clock.
    pub fn validate(&self) -> Result<(), ReportError> {
        self.validate_at(Utc::now())
    }

    /// Checks everything the cloud checks, `now` being its clock: the version, every limit,
    /// names, addresses, and that every timestamp lies between 2000-01-01 and a day after `now`.
    pub fn validate_at(&self, now: DateTime<Utc>) -> Result<(), ReportError> {
        if self.schema_version != SCHEMA_VERSION {
            return Err(ReportError::UnsupportedVersion(self.schema_version));
        }
        if self.edges.len() > MAX_EDGES_PER_REPORT {
            return Err(ReportError::TooManyEdges(self.edges.len()));
        }
        if self.exposed.len() > MAX_EXPOSED_PER_REPORT {
            let problem = format!(
                "{} exposed workloads; at most {MAX_EXPOSED_PER_REPORT}",
                self.exposed.len()
            );
            return Err(ReportError::OverLimit { path: "exposed".into(), problem });
        }
        let entries = fit::list_entries(self);
        if entries > MAX_LIST_ENTRIES_PER_REPORT {
            let problem = format!("the report holds {entries} list entries in all; at most {MAX_LIST_ENTRIES_PER_REPORT}: split it into smaller reports");
            return Err(ReportError::OverLimit { path: "edges".into(), problem });
        }
        let times = TimeBounds::at(now);
        times
            .check(self.generated_at)
            .map_err(|problem| ReportError::Invalid { path: "generated_at".into(), problem })?;
        for (i, edge) in self.edges.iter().enumerate() {
            validate_edge(edge, &times).map_err(|(field, problem)| ReportError::Invalid {
                path: format!("edges[{i}].{field}"),
                problem,
            })?;
        }
        for (i, exposed) in self.exposed.iter().enumerate() {
            validate_exposed(exposed).map_err(|(field, problem)| ReportError::Invalid {
                path: format!("exposed[{i}].{field}"),
                problem,
            })?;
        }
        Ok(())
    }
}

/// The timestamps the cloud can store and order: from 2000-01-01 to a day after its clock.
pub(crate) struct TimeBounds {
    now: DateTime<Utc>,
    earliest: DateTime<Utc>,
    latest: DateTime<Utc>,
}

impl TimeBounds {
    pub(crate) fn at(now: DateTime<Utc>) -> Self {
        Self { now, earliest: earliest_timestamp(), latest: now + MAX_CLOCK_AHEAD }
    }

    fn check(&self, at: DateTime<Utc>) -> Result<(), String> {
        if at < self.earliest {
            return Err(format!(
                "{} is before 2000-01-01; check the cluster's clock",
                at.to_rfc3339()
            ));
        }
        if at > self.latest {
            return Err(format!(
                "{} is more than a day ahead of the cloud's clock ({}); check the cluster's clock",
                at.to_rfc3339(),
                self.now.format("%Y-%m-%dT%H:%M:%SZ")
            ));
        }
        Ok(())
    }
}

fn check_count(field: &str, len: usize, max: usize, what: &str) -> Result<(), (String, String)> {
    if len > max {
        return Err((field.to_owned(), format!("{len} {what}; at most {max}")));
    }
    Ok(())
}

fn validate_exposed(exposed: &ExposedWorkload) -> Result<(), (String, String)> {
    let at = |field: &str, problem: String| (field.to_owned(), problem);
    check_name(&exposed.namespace).map_err(|p| at("namespace", p))?;
    check_name(&exposed.name).map_err(|p| at("name", p))?;
    if let Some(kind) = &exposed.kind {
        check_kind(kind).map_err(|p| at("kind", p))?;
    }
    check_count("addresses", exposed.addresses.len(), MAX_ADDRESSES_PER_LIST, "addresses")?;
    check_count("hostnames", exposed.hostnames.len(), MAX_ADDRESSES_PER_LIST, "hostnames")?;
    for (j, a) in exposed.addresses.iter().enumerate() {
        check_ip(a).map_err(|p| at(&format!("addresses[{j}]"), p))?;
    }
    for (j, h) in exposed.hostnames.iter().enumerate() {
        check_hostname(h).map_err(|p| at(&format!("hostnames[{j}]"), p))?;
    }
    Ok(())
}

/// An internet target's, or incoming traffic's, addresses and names (`path` names the field).
fn check_internet(path: &str, i: &InternetTarget) -> Result<(), (String, String)> {
    let at = |field: &str| {
        let field = format!("{path}.{field}");
        move |p: String| (field.clone(), p)
    };
    if i.domains.is_empty() && i.ips.is_empty() {
        return Err((path.to_owned(), format!("{path} needs at least one domain or IP")));
    }
    check_count(&format!("{path}.domains"), i.domains.len(), MAX_ADDRESSES_PER_LIST, "domains")?;
    check_count(&format!("{path}.ips"), i.ips.len(), MAX_ADDRESSES_PER_LIST, "IPs")?;
    check_count(&format!("{path}.ports"), i.ports.len(), MAX_PORTS_PER_EDGE, "ports")?;
    for d in &i.domains {
        check_hostname(d).map_err(at("domains"))?;
    }
    for ip in &i.ips {
        check_ip(ip).map_err(at("ips"))?;
    }
    if i.ports.contains(&0) {
        return Err((format!("{path}.ports"), "port 0 is not a destination port".into()));
    }
    Ok(())
}

/// One edge's values.
pub(crate) fn validate_edge(edge: &Edge, times: &TimeBounds) -> Result<(), (String, String)> {
    fn at(field: &'static str) -> impl Fn(String) -> (String, String) {
        move |p| (field.to_owned(), p)
    }
    check_workload(&edge.client).map_err(|(f, p)| (format!("client.{f}"), p))?;
    times.check(edge.first_seen).map_err(at("first_seen"))?;
    times.check(edge.last_seen).map_err(at("last_seen"))?;
    if edge.first_seen > edge.last_seen {
        return Err(("first_seen".into(), "first_seen is later than last_seen".into()));
    }
    check_count("ports", edge.ports.len(), MAX_PORTS_PER_EDGE, "ports")?;
    for p in &edge.ports {
        if p.port == 0 {
            return Err(("ports".into(), "port 0 is not a destination port".into()));
        }
    }
    if !edge.http.is_empty() && !matches!(edge.target, Target::Kubernetes(_) | Target::Service(_)) {
        return Err(("http".into(), format!("HTTP paths are only recorded for kubernetes and service targets, not for {} targets", edge.target.type_name())));
    }
    if !edge.kafka.is_empty() && !matches!(edge.target, Target::Kafka(_)) {
        return Err((
            "kafka".into(),
            format!(
                "Kafka topics are only recorded for kafka targets, not for {} targets",
                edge.target.type_name()
            ),
        ));
    }
    check_http(&edge.http)?;
    check_kafka(&edge.kafka)?;
    match &edge.target {
        Target::Kubernetes(w) => {
            check_workload(w).map_err(|(f, p)| (format!("target.kubernetes.{f}"), p))
        }
        Target::Kafka(w) => check_workload(w).map_err(|(f, p)| (format!("target.kafka.{f}"), p)),
        Target::Service(s) => {
            check_name(&s.namespace).map_err(at("target.service.namespace"))?;
            check_name(&s.name).map_err(at("target.service.name"))
        }
        Target::Internet(i) => check_internet("target.internet", i),
        Target::Incoming(i) => check_internet("target.incoming", i),
        Target::Aws(a) => {
            if a.arn.len() > MAX_ARN_BYTES {
                return Err((
                    "target.aws.arn".into(),
                    format!("the ARN is {} bytes long; at most {MAX_ARN_BYTES}", a.arn.len()),
                ));
            }
            if !a.arn.starts_with("arn:")
                || a.arn.split(':').count() < 6
                || a.arn.chars().any(char::is_control)
            {
                return Err((
                    "target.aws.arn".into(),
                    format!(
                        "{:?} is not an ARN (arn:partition:service:region:account:resource)",
                        truncated(&a.arn)
                    ),
                ));
            }
            check_count("target.aws.actions", a.actions.len(), MAX_ACTIONS_PER_EDGE, "actions")?;
            for action in &a.actions {
                let charset_ok = action
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '*' | '-' | '_'));
                if !action.contains(':') || action.len() > MAX_ACTION_BYTES || !charset_ok {
                    return Err((
                        "target.aws.actions".into(),
                        format!(
                            "{:?} is not an IAM action such as s3:GetObject",
                            truncated(action)
                        ),
                    ));
                }
            }
            Ok(())
        }
    }
}

fn check_http(http: &[HttpResource]) -> Result<(), (String, String)> {
    if http.len() > MAX_RESOURCES_PER_EDGE {
        return Err((
            "http".into(),
            format!("{} paths on one edge; at most {MAX_RESOURCES_PER_EDGE} a report", http.len()),
        ));
    }
    for (i, r) in http.iter().enumerate() {
        let at = |field: &str, problem: String| (format!("http[{i}].{field}"), problem);
        if !r.path.starts_with('/') {
            return Err(at(
                "path",
                format!("{:?} is not an HTTP path: it must start with '/'", truncated(&r.path)),
            ));
        }
        if r.path.len() > MAX_HTTP_PATH_BYTES {
            return Err(at(
                "path",
                format!("the path is {} bytes long; at most {MAX_HTTP_PATH_BYTES}", r.path.len()),
            ));
        }
        if r.path.chars().any(char::is_control) {
            return Err(at(
                "path",
                format!("{:?} contains control characters", truncated(&r.path)),
            ));
        }
        if r.methods.len() > MAX_VERBS {
            return Err(at(
                "methods",
                format!("{} methods listed; at most {MAX_VERBS}", r.methods.len()),
            ));
        }
        for (j, m) in r.methods.iter().enumerate() {
            if !HTTP_METHODS.contains(&m.as_str()) {
                return Err(at(
                    &format!("methods[{j}]"),
                    format!(
                        "{:?} is not one of the methods ClientIntents know: {}",
                        truncated(m),
                        HTTP_METHODS.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(())
}

fn check_kafka(kafka: &[KafkaTopic]) -> Result<(), (String, String)> {
    if kafka.len() > MAX_RESOURCES_PER_EDGE {
        return Err((
            "kafka".into(),
            format!(
                "{} topics on one edge; at most {MAX_RESOURCES_PER_EDGE} a report",
                kafka.len()
            ),
        ));
    }
    for (i, t) in kafka.iter().enumerate() {
        let at = |field: &str, problem: String| (format!("kafka[{i}].{field}"), problem);
        check_topic_name(&t.name).map_err(|p| at("name", p))?;
        for (field, ops) in [("operations", &t.operations), ("denied", &t.denied)] {
            if ops.len() > MAX_VERBS {
                return Err(at(
                    field,
                    format!("{} operations listed; at most {MAX_VERBS}", ops.len()),
                ));
            }
            for (j, op) in ops.iter().enumerate() {
                if !KAFKA_OPERATIONS.contains(&op.as_str()) {
                    return Err(at(
                        &format!("{field}[{j}]"),
                        format!(
                            "{:?} is not one of the Kafka operations ClientIntents know: {}",
                            truncated(op),
                            KAFKA_OPERATIONS.join(", ")
                        ),
                    ));
                }
            }
        }
        if let Some((j, op)) =
            t.denied.iter().enumerate().find(|(_, op)| !t.operations.contains(op))
        {
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
        check_kind(kind).map_err(|p| ("kind".to_owned(), p))?;
    }
    Ok(())
}

fn check_kind(kind: &str) -> Result<(), String> {
    if kind.is_empty()
        || kind.len() > MAX_KIND_BYTES
        || !kind.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(format!("{:?} is not a Kubernetes kind", truncated(kind)));
    }
    Ok(())
}

/// Kubernetes object names: DNS-1123 subdomains (lowercase alphanumerics, `-` and `.`, at most 253).
fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_BYTES
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(format!("{:?} is not a Kubernetes name (lowercase letters, digits, '-' and '.', at most {MAX_NAME_BYTES} characters)", truncated(name)))
    }
}

fn check_hostname(name: &str) -> Result<(), String> {
    let trimmed = name.strip_suffix('.').unwrap_or(name);
    let ok = !trimmed.is_empty()
        && trimmed.len() <= 253
        && trimmed.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '*')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("{:?} is not a DNS name", truncated(name)))
    }
}

fn check_ip(ip: &str) -> Result<(), String> {
    ip.parse::<IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("{:?} is not an IPv4 or IPv6 address", truncated(ip)))
}

#[cfg(test)]
mod limits_tests;
#[cfg(test)]
mod tests;
