//! The report as it arrives, bounded while it is parsed.
//!
//! These types mirror the model's (same JSON, same field rules) but every list and string in
//! them stops at its limit from [`crate::limits`]: a list of twelve million domains is refused
//! at its 1,001st entry, not after it was built. Their only use is [`super::EdgeReport`]'s
//! parsing; the model's own types stay unbounded for the mapper, the CLI and the outbox.
//!
//! Serde passes no context down to a field's `Deserialize`, so the state of one parse (the
//! report-wide entry budget, where the parser is, and why it refused) lives in a thread-local
//! that [`parse`] sets up and takes down around exactly one call.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use chrono::{DateTime, Utc};
use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use uuid::Uuid;

use super::{ExposedWorkload, ReportError, SCHEMA_VERSION};
use crate::edge::{
    AwsTarget, Edge, HttpResource, InternetTarget, KafkaTopic, PortSpec, ServiceRef, Target,
    Traffic, WorkloadRef,
};
use crate::limits::*;
use crate::EdgeReport;

// === parse state ===

struct ParseState {
    entries_left: usize,
    refusal: Option<ReportError>,
}

thread_local! {
    static STATE: RefCell<Option<ParseState>> = const { RefCell::new(None) };
}

/// Clears the state however the parse ends (a panic included).
struct Armed;

impl Drop for Armed {
    fn drop(&mut self) {
        STATE.with(|s| s.borrow_mut().take());
    }
}

/// Runs one parse with a fresh budget. A refusal recorded by a bounded type wins over the
/// parser's own error, which then only says where it stopped.
pub(super) fn parse(
    run: impl FnOnce() -> Result<ReportIn, serde_json::Error>,
) -> Result<EdgeReport, ReportError> {
    let _armed = Armed;
    STATE.with(|s| {
        *s.borrow_mut() =
            Some(ParseState { entries_left: MAX_LIST_ENTRIES_PER_REPORT, refusal: None })
    });
    let parsed = run();
    let refusal = STATE.with(|s| s.borrow_mut().as_mut().and_then(|state| state.refusal.take()));
    match (parsed, refusal) {
        (_, Some(refusal)) => Err(refusal),
        (Ok(report), None) => Ok(report.into()),
        (Err(e), None) => Err(ReportError::Malformed(e.to_string())),
    }
}

fn with_state<T>(f: impl FnOnce(&mut ParseState) -> T) -> Option<T> {
    STATE.with(|s| s.borrow_mut().as_mut().map(f))
}

/// Records why the report is refused (its path relative to the innermost list element, which
/// the enclosing lists complete on the way out) and stops the parser.
fn refuse<E: de::Error>(refusal: ReportError) -> E {
    let message = refusal.to_string();
    with_state(|s| {
        s.refusal.get_or_insert(refusal);
    });
    E::custom(message)
}

/// Puts `field[index]` in front of the recorded refusal's path, as its error leaves that
/// element. Only refused reports pay for knowing where they are.
fn locate_refusal(field: &str, index: usize) {
    with_state(|s| {
        if let Some(ReportError::OverLimit { path, .. } | ReportError::Invalid { path, .. }) =
            &mut s.refusal
        {
            *path = if path.is_empty() {
                format!("{field}[{index}]")
            } else {
                format!("{field}[{index}].{path}")
            };
        }
    });
}

// === bounded lists and strings ===

/// A list's bound, its field name (relative to the enclosing list element), and how it counts.
pub(super) trait ListLimit {
    const MAX: usize;
    const FIELD: &'static str;
    /// What one entry is, for messages.
    const ENTRY: &'static str;
    /// Whether entries count against [`MAX_LIST_ENTRIES_PER_REPORT`].
    const BUDGETED: bool = true;
    /// Whether a refusal inside an element names it (`edges[3]`).
    const POSITIONED: bool = false;
}

pub(super) trait TextLimit {
    const MAX: usize;
    const WHAT: &'static str;
    /// The field, where every use of this limit is the same field.
    const FIELD: &'static str = "";
}

pub(super) struct List<T, L>(Vec<T>, PhantomData<L>);

impl<T, L> Default for List<T, L> {
    fn default() -> Self {
        List(Vec::new(), PhantomData)
    }
}

impl<'de, T: Deserialize<'de>, L: ListLimit> Deserialize<'de> for List<T, L> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_seq(ListVisitor::<T, L>(PhantomData))
    }
}

struct ListVisitor<T, L>(PhantomData<(T, L)>);

impl<'de, T: Deserialize<'de>, L: ListLimit> Visitor<'de> for ListVisitor<T, L> {
    type Value = List<T, L>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of at most {} {}", L::MAX, L::ENTRY)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(L::MAX).min(1024));
        loop {
            let item = match seq.next_element::<T>() {
                Ok(Some(item)) => item,
                Ok(None) => break,
                Err(e) => {
                    if L::POSITIONED {
                        locate_refusal(L::FIELD, items.len());
                    }
                    return Err(e);
                }
            };
            if items.len() == L::MAX {
                let problem = format!("more than {} {}; at most {} are accepted (see the EdgeReport limits in README.md)", L::MAX, L::ENTRY, L::MAX);
                return Err(refuse(ReportError::OverLimit { path: L::FIELD.into(), problem }));
            }
            items.push(item);
        }
        // A list is at most `MAX` long, so counting it whole overshoots the budget by little.
        if L::BUDGETED && !items.is_empty() {
            let exhausted = with_state(|s| match s.entries_left.checked_sub(items.len()) {
                Some(left) => {
                    s.entries_left = left;
                    false
                }
                None => true,
            });
            if exhausted == Some(true) {
                let problem = format!(
                    "the report holds more than {MAX_LIST_ENTRIES_PER_REPORT} list entries in all (ports, domains, IPs, actions, paths, topics...); split it into smaller reports"
                );
                return Err(refuse(ReportError::OverLimit { path: L::FIELD.into(), problem }));
            }
        }
        Ok(List(items, PhantomData))
    }
}

/// Read as `I`, kept as the model's `O`: a list of them becomes the model's list in place.
pub(super) struct As<I, O>(O, PhantomData<I>);

impl<'de, I: Deserialize<'de> + Into<O>, O> Deserialize<'de> for As<I, O> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        I::deserialize(deserializer).map(|i| As(i.into(), PhantomData))
    }
}

pub(super) struct Text<L>(String, PhantomData<L>);

impl<'de, L: TextLimit> Deserialize<'de> for Text<L> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_string(TextVisitor::<L>(PhantomData))
    }
}

struct TextVisitor<L>(PhantomData<L>);

impl<L: TextLimit> TextVisitor<L> {
    fn check<E: de::Error>(len: usize) -> Result<(), E> {
        if len > L::MAX {
            let problem = format!("{} too long: {len} bytes, at most {}", L::WHAT, L::MAX);
            return Err(refuse(ReportError::Invalid { path: L::FIELD.into(), problem }));
        }
        Ok(())
    }
}

impl<L: TextLimit> Visitor<'_> for TextVisitor<L> {
    type Value = Text<L>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} of at most {} bytes", L::WHAT, L::MAX)
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Self::check(s.len())?;
        Ok(Text(s.to_owned(), PhantomData))
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Self::check(s.len())?;
        Ok(Text(s, PhantomData))
    }
}

macro_rules! list_limit {
    ($name:ident, $max:expr, $field:literal, $entry:literal $(, $key:ident = $value:expr)*) => {
        pub(super) struct $name;
        impl ListLimit for $name {
            const MAX: usize = $max;
            const FIELD: &'static str = $field;
            const ENTRY: &'static str = $entry;
            $(const $key: bool = $value;)*
        }
    };
}

macro_rules! text_limit {
    ($name:ident, $max:expr, $what:literal $(, $field:literal)?) => {
        pub(super) struct $name;
        impl TextLimit for $name {
            const MAX: usize = $max;
            const WHAT: &'static str = $what;
            $(const FIELD: &'static str = $field;)?
        }
    };
}

list_limit!(Edges, MAX_EDGES_PER_REPORT, "edges", "edges", BUDGETED = false, POSITIONED = true);
list_limit!(
    Exposed,
    MAX_EXPOSED_PER_REPORT,
    "exposed",
    "exposed workloads",
    BUDGETED = false,
    POSITIONED = true
);
list_limit!(Ports, MAX_PORTS_PER_EDGE, "ports", "ports");
list_limit!(Domains, MAX_ADDRESSES_PER_LIST, "target.internet.domains", "domains");
list_limit!(Ips, MAX_ADDRESSES_PER_LIST, "target.internet.ips", "IPs");
list_limit!(InternetPorts, MAX_PORTS_PER_EDGE, "target.internet.ports", "ports");
list_limit!(IncomingDomains, MAX_ADDRESSES_PER_LIST, "target.incoming.domains", "domains");
list_limit!(IncomingIps, MAX_ADDRESSES_PER_LIST, "target.incoming.ips", "IPs");
list_limit!(IncomingPorts, MAX_PORTS_PER_EDGE, "target.incoming.ports", "ports");
list_limit!(Actions, MAX_ACTIONS_PER_EDGE, "target.aws.actions", "actions");
list_limit!(Paths, MAX_RESOURCES_PER_EDGE, "http", "paths", POSITIONED = true);
list_limit!(Methods, MAX_VERBS, "methods", "methods");
list_limit!(Topics, MAX_RESOURCES_PER_EDGE, "kafka", "topics", POSITIONED = true);
list_limit!(Operations, MAX_VERBS, "operations", "operations");
list_limit!(Denied, MAX_VERBS, "denied", "operations");
list_limit!(Addresses, MAX_ADDRESSES_PER_LIST, "addresses", "addresses");
list_limit!(Hostnames, MAX_ADDRESSES_PER_LIST, "hostnames", "hostnames");

text_limit!(Name, MAX_NAME_BYTES, "Kubernetes name");
text_limit!(Kind, MAX_KIND_BYTES, "Kubernetes kind");
text_limit!(DnsName, MAX_DNS_NAME_BYTES, "DNS name");
text_limit!(Ip, MAX_IP_BYTES, "IP address");
text_limit!(Arn, MAX_ARN_BYTES, "ARN", "target.aws.arn");
text_limit!(Action, MAX_ACTION_BYTES, "IAM action");
text_limit!(Path, MAX_HTTP_PATH_BYTES, "HTTP path", "path");
text_limit!(Topic, MAX_TOPIC_NAME_CHARS, "Kafka topic name", "name");
text_limit!(Verb, MAX_VERB_BYTES, "method or operation name");

// === the report ===

/// `schema_version`, refused as soon as it is read when this build does not speak it.
pub(super) struct Version;

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let version = u32::deserialize(deserializer)?;
        if version != SCHEMA_VERSION {
            return Err(refuse(ReportError::UnsupportedVersion(version)));
        }
        Ok(Version)
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReportIn {
    #[allow(dead_code)]
    schema_version: Version,
    report_id: Uuid,
    generated_at: DateTime<Utc>,
    #[serde(default)]
    edges: List<As<EdgeIn, Edge>, Edges>,
    #[serde(default)]
    exposed: List<As<ExposedIn, ExposedWorkload>, Exposed>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ExposedIn {
    namespace: Text<Name>,
    name: Text<Name>,
    kind: Option<Text<Kind>>,
    #[serde(default)]
    addresses: List<Text<Ip>, Addresses>,
    #[serde(default)]
    hostnames: List<Text<DnsName>, Hostnames>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct EdgeIn {
    client: WorkloadIn,
    target: TargetIn,
    #[serde(default)]
    ports: List<PortSpec, Ports>,
    first_seen: DateTime<Utc>,
    last_seen: DateTime<Utc>,
    #[serde(default)]
    connections: u64,
    #[serde(default)]
    http: List<HttpIn, Paths>,
    #[serde(default)]
    kafka: List<KafkaIn, Topics>,
    #[serde(default)]
    bytes: Option<Traffic>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadIn {
    namespace: Text<Name>,
    name: Text<Name>,
    kind: Option<Text<Kind>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "snake_case")]
enum TargetIn {
    Kubernetes(WorkloadIn),
    Service(ServiceIn),
    Internet(InternetIn),
    Aws(AwsIn),
    Kafka(WorkloadIn),
    Incoming(IncomingIn),
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServiceIn {
    namespace: Text<Name>,
    name: Text<Name>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct InternetIn {
    #[serde(default)]
    domains: List<Text<DnsName>, Domains>,
    #[serde(default)]
    ips: List<Text<Ip>, Ips>,
    #[serde(default)]
    ports: List<u16, InternetPorts>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct IncomingIn {
    #[serde(default)]
    domains: List<Text<DnsName>, IncomingDomains>,
    #[serde(default)]
    ips: List<Text<Ip>, IncomingIps>,
    #[serde(default)]
    ports: List<u16, IncomingPorts>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AwsIn {
    arn: Text<Arn>,
    #[serde(default)]
    actions: List<Text<Action>, Actions>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct HttpIn {
    path: Text<Path>,
    #[serde(default)]
    methods: List<Text<Verb>, Methods>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct KafkaIn {
    name: Text<Topic>,
    #[serde(default)]
    operations: List<Text<Verb>, Operations>,
    #[serde(default)]
    denied: List<Text<Verb>, Denied>,
}

// === into the model ===

fn strings<L>(list: List<Text<impl TextLimit>, L>) -> Vec<String> {
    list.0.into_iter().map(|t| t.0).collect()
}

impl From<ReportIn> for EdgeReport {
    fn from(r: ReportIn) -> Self {
        EdgeReport {
            schema_version: SCHEMA_VERSION,
            report_id: r.report_id,
            generated_at: r.generated_at,
            edges: r.edges.0.into_iter().map(|e| e.0).collect(),
            exposed: r.exposed.0.into_iter().map(|x| x.0).collect(),
        }
    }
}

impl From<ExposedIn> for ExposedWorkload {
    fn from(x: ExposedIn) -> Self {
        ExposedWorkload {
            namespace: x.namespace.0,
            name: x.name.0,
            kind: x.kind.map(|k| k.0),
            addresses: strings(x.addresses),
            hostnames: strings(x.hostnames),
        }
    }
}

impl From<WorkloadIn> for WorkloadRef {
    fn from(w: WorkloadIn) -> Self {
        WorkloadRef { namespace: w.namespace.0, name: w.name.0, kind: w.kind.map(|k| k.0) }
    }
}

impl From<EdgeIn> for Edge {
    fn from(e: EdgeIn) -> Self {
        let target = match e.target {
            TargetIn::Kubernetes(w) => Target::Kubernetes(w.into()),
            TargetIn::Service(s) => {
                Target::Service(ServiceRef { namespace: s.namespace.0, name: s.name.0 })
            }
            TargetIn::Internet(i) => Target::Internet(InternetTarget {
                domains: strings(i.domains),
                ips: strings(i.ips),
                ports: i.ports.0,
            }),
            TargetIn::Aws(a) => {
                Target::Aws(AwsTarget { arn: a.arn.0, actions: strings(a.actions) })
            }
            TargetIn::Kafka(w) => Target::Kafka(w.into()),
            TargetIn::Incoming(i) => Target::Incoming(InternetTarget {
                domains: strings(i.domains),
                ips: strings(i.ips),
                ports: i.ports.0,
            }),
        };
        Edge {
            client: e.client.into(),
            target,
            ports: e.ports.0,
            first_seen: e.first_seen,
            last_seen: e.last_seen,
            connections: e.connections,
            http: e
                .http
                .0
                .into_iter()
                .map(|h| HttpResource { path: h.path.0, methods: strings(h.methods) })
                .collect(),
            kafka: e
                .kafka
                .0
                .into_iter()
                .map(|k| KafkaTopic {
                    name: k.name.0,
                    operations: strings(k.operations),
                    denied: strings(k.denied),
                })
                .collect(),
            bytes: e.bytes,
        }
    }
}
