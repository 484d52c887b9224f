//! ClientIntents: one document per client workload, listing what it calls, for an intents
//! operator to turn into network policies and cloud IAM.
//!
//! Two API versions of `clientintents.k8s.otterize.com` are rendered: `v2beta1` (`spec.workload`
//! and typed `spec.targets`) and the older `v1alpha3` (`spec.service` and `spec.calls`). Only
//! fields the published CRD declares are emitted.
//!
//! The output is a function of the set of edges alone, never of their order:
//! - documents are sorted by the client's namespace, then name;
//! - targets are sorted by [`call_order`]: Kubernetes workloads and Services together by name
//!   (the client's own namespace before others, then by namespace; of the same name, a Kafka
//!   broker, then a workload, then a Service), then internet destinations by their first domain (else first IP), then
//!   AWS resources by ARN;
//! - lists inside a target (domains, IPs, ports, actions, HTTP paths and their methods, Kafka
//!   topics and their operations) are sorted and without duplicates;
//! - object keys are written in alphabetical order.
//!
//! A target in the client's own namespace is written by bare name, any other as `name.namespace`,
//! which is how the intents operator reads it.
//!
//! **Dots in workload names.** The operator splits a target name at its first `.` (what follows
//! is the namespace) and names a pod's workload with every `.` as `_` (Otterize's service
//! identity), so a workload named `app.4.2.0` (a valid Deployment name) is written `app_4_2_0` in
//! `spec.workload`/`spec.service` and in targets; `metadata.name` (any DNS subdomain) and the
//! access graph keep the real name.
//!
//! HTTP paths and Kafka topics:
//! - a workload or Service called over HTTP carries its paths: v2beta1
//!   `kubernetes: {name, http: [{path, methods}]}` (and `service: {...}` alike), v1alpha3
//!   `{name, type: http, HTTPResources: [{path, methods}]}`. `methods` is required by the CRD; a
//!   path seen without a method is written with `methods: []`;
//! - a Kafka broker is a target of its own: v2beta1 `kafka: {name, topics: [{name, operations}]}`,
//!   v1alpha3 `{name, type: kafka, kafkaTopics: [{name, operations}]}`, named like any workload.
//!   The same broker called over plain TCP is a separate `kubernetes` target, as the intents
//!   operator expects (network access and Kafka ACLs are separate intents).
//! - **Denied operations are exported.** A denied operation is one the client does call and the
//!   broker refused; ClientIntents declare what a client needs, and applying them is how that
//!   access gets granted. `list` and the access graph mark them as denied so that a refusal that
//!   should stay a refusal is seen before the intents are applied.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde_json::{json, Map, Value};

use crate::edge::{
    merge_edges, union, Edge, EdgeKey, HttpResource, InternetTarget, KafkaTopic, Target,
    WorkloadRef,
};

/// The API group of the ClientIntents CRD.
pub const INTENTS_API_GROUP: &str = "k8s.otterize.com";
/// The kind of the ClientIntents CRD.
pub const INTENTS_KIND: &str = "ClientIntents";

/// Which version of the ClientIntents API to write.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum IntentsVersion {
    #[default]
    V2beta1,
    V1alpha3,
}

impl IntentsVersion {
    pub const ALL: [IntentsVersion; 2] = [IntentsVersion::V2beta1, IntentsVersion::V1alpha3];

    /// The full `apiVersion`, e.g. `k8s.otterize.com/v2beta1`.
    pub fn api_version(self) -> &'static str {
        match self {
            IntentsVersion::V2beta1 => "k8s.otterize.com/v2beta1",
            IntentsVersion::V1alpha3 => "k8s.otterize.com/v1alpha3",
        }
    }

    /// The version alone, e.g. `v2beta1`.
    pub fn name(self) -> &'static str {
        match self {
            IntentsVersion::V2beta1 => "v2beta1",
            IntentsVersion::V1alpha3 => "v1alpha3",
        }
    }
}

impl fmt::Display for IntentsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A ClientIntents version this build cannot write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown ClientIntents version {0:?}: expected one of v2beta1, v1alpha3 (or k8s.otterize.com/v2beta1, k8s.otterize.com/v1alpha3)")]
pub struct UnknownIntentsVersion(pub String);

impl FromStr for IntentsVersion {
    type Err = UnknownIntentsVersion;

    /// Accepts the version (`v2beta1`) or the full `apiVersion` (`k8s.otterize.com/v2beta1`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        let version = match trimmed.split_once('/') {
            Some((group, version)) if group == INTENTS_API_GROUP => version,
            Some(_) => return Err(UnknownIntentsVersion(s.to_owned())),
            None => trimmed,
        };
        IntentsVersion::ALL
            .into_iter()
            .find(|v| v.name() == version)
            .ok_or_else(|| UnknownIntentsVersion(s.to_owned()))
    }
}

// === Grouping shared with `list` ===

/// One client workload and everything it calls, merged and in [`call_order`].
#[derive(Debug, Clone)]
pub(crate) struct ClientCalls {
    pub client: WorkloadRef,
    pub calls: Vec<Edge>,
}

/// Merges the edges and groups them by client (namespace, then name), each client's calls in
/// [`call_order`]. Independent of the order of `edges`.
pub(crate) fn calls_by_client(edges: &[Edge]) -> Vec<ClientCalls> {
    // `merge_edges` lets the last observation that names a kind win; sorting first makes that
    // choice (the greatest kind name) independent of the order the edges arrived in.
    let mut sorted = edges.to_vec();
    sorted.sort_by_cached_key(|e| {
        (e.key(), e.client.kind.clone(), target_kind(&e.target).map(str::to_owned))
    });

    let mut by_client: BTreeMap<(String, String), ClientCalls> = BTreeMap::new();
    // Incoming internet traffic names a workload's clients, not its calls.
    sorted.retain(|e| !matches!(e.target, Target::Incoming(_)));
    for edge in merge_edges(sorted) {
        let key = (edge.client.namespace.clone(), edge.client.name.clone());
        let entry = by_client
            .entry(key)
            .or_insert_with(|| ClientCalls { client: edge.client.clone(), calls: Vec::new() });
        if edge.client.kind > entry.client.kind {
            entry.client.kind.clone_from(&edge.client.kind);
        }
        entry.calls.push(edge);
    }
    let mut clients: Vec<ClientCalls> = by_client.into_values().collect();
    for c in &mut clients {
        let ns = c.client.namespace.clone();
        c.calls.sort_by_cached_key(|e| call_order(&ns, e));
    }
    clients
}

fn target_kind(target: &Target) -> Option<&str> {
    match target {
        Target::Kubernetes(w) | Target::Kafka(w) => w.kind.as_deref(),
        _ => None,
    }
}

/// The sort key of a client's calls, documented at the top of this module:
/// in-cluster targets (by name, own namespace first, then namespace, then a Kafka broker before
/// a workload before a Service), then internet destinations, then AWS resources; the edge key
/// (whose target type orders `kafka`, `kubernetes`, `service`) breaks any tie.
pub(crate) fn call_order(
    client_namespace: &str,
    edge: &Edge,
) -> (u8, String, bool, String, EdgeKey) {
    let (rank, name, namespace) = match &edge.target {
        Target::Kubernetes(w) => (0, w.name.clone(), w.namespace.clone()),
        Target::Service(s) => (0, s.name.clone(), s.namespace.clone()),
        Target::Internet(i) => (1, i.identity().to_owned(), String::new()),
        Target::Aws(a) => (2, a.arn.clone(), String::new()),
        Target::Incoming(i) => (3, i.identity().to_owned(), String::new()),
        Target::Kafka(w) => (0, w.name.clone(), w.namespace.clone()),
    };
    let elsewhere = rank == 0 && namespace != client_namespace;
    (rank, name, elsewhere, namespace, edge.key())
}

/// A Kubernetes name as ClientIntents write it: bare in the client's namespace, else `name.namespace`.
pub(crate) fn qualified_name(client_namespace: &str, namespace: &str, name: &str) -> String {
    let name = intents_name(name);
    if namespace == client_namespace {
        name
    } else {
        format!("{name}.{namespace}")
    }
}

/// A workload name as the intents operator reads it: every `.` written `_` (see the module
/// documentation).
pub fn intents_name(name: &str) -> String {
    name.replace('.', "_")
}

/// The ports an internet call was seen on: the target's own plus the edge's.
pub(crate) fn internet_ports(edge: &Edge, internet: &InternetTarget) -> Vec<u16> {
    let seen: Vec<u16> = edge.ports.iter().map(|p| p.port).collect();
    union(&internet.ports, &seen)
}

// === Rendering ===

/// Renders one ClientIntents document per client workload.
///
/// Ports are written only for internet targets (the target's ports and the edge's), the one kind
/// of target whose schema has them. Internet targets with neither a domain nor an IP cannot be
/// expressed and are left out; a client left with nothing to call gets no document.
pub fn client_intents(edges: &[Edge], version: IntentsVersion) -> Vec<Value> {
    calls_by_client(edges)
        .into_iter()
        .filter_map(|c| {
            let ns = &c.client.namespace;
            let targets: Vec<Value> = c
                .calls
                .iter()
                .filter(|e| !matches!(&e.target, Target::Internet(i) if i.domains.is_empty() && i.ips.is_empty()))
                .map(|e| match version {
                    IntentsVersion::V2beta1 => v2beta1_target(ns, e),
                    IntentsVersion::V1alpha3 => v1alpha3_call(ns, e),
                })
                .collect();
            if targets.is_empty() {
                return None;
            }
            let spec = match version {
                IntentsVersion::V2beta1 => json!({ "workload": workload(&c.client), "targets": targets }),
                IntentsVersion::V1alpha3 => json!({ "service": workload(&c.client), "calls": targets }),
            };
            Some(json!({
                "apiVersion": version.api_version(),
                "kind": INTENTS_KIND,
                "metadata": { "name": c.client.name, "namespace": c.client.namespace },
                "spec": spec,
            }))
        })
        .collect()
}

/// `spec.workload` (v2beta1) and `spec.service` (v1alpha3) have the same shape.
fn workload(client: &WorkloadRef) -> Value {
    let mut w = Map::new();
    w.insert("name".into(), json!(intents_name(&client.name)));
    insert_some(&mut w, "kind", client.kind.as_deref());
    Value::Object(w)
}

fn v2beta1_target(client_namespace: &str, edge: &Edge) -> Value {
    match &edge.target {
        Target::Kubernetes(w) => {
            let mut k = Map::new();
            k.insert("name".into(), json!(qualified_name(client_namespace, &w.namespace, &w.name)));
            insert_some(&mut k, "kind", w.kind.as_deref());
            insert_nonempty(&mut k, "http", &http_resources(&edge.http));
            json!({ "kubernetes": k })
        }
        Target::Service(s) => {
            let mut svc = Map::new();
            svc.insert(
                "name".into(),
                json!(qualified_name(client_namespace, &s.namespace, &s.name)),
            );
            insert_nonempty(&mut svc, "http", &http_resources(&edge.http));
            json!({ "service": svc })
        }
        Target::Internet(i) => json!({ "internet": internet(edge, i) }),
        // Never reached: `calls_by_client` leaves incoming traffic out.
        Target::Incoming(_) => json!({}),
        Target::Aws(a) => {
            let mut aws = Map::new();
            aws.insert("arn".into(), json!(a.arn));
            insert_nonempty(&mut aws, "actions", &a.actions);
            json!({ "aws": aws })
        }
        Target::Kafka(w) => {
            let mut kafka = Map::new();
            kafka.insert(
                "name".into(),
                json!(qualified_name(client_namespace, &w.namespace, &w.name)),
            );
            insert_nonempty(&mut kafka, "topics", &kafka_topics(&edge.kafka));
            json!({ "kafka": kafka })
        }
    }
}

/// v1alpha3 tells targets apart by `type` (absent for plain in-cluster calls) and `kind`: a
/// Service is `kind: Service` (the API server `svc:kubernetes.default`), an in-cluster call with HTTP paths is `type: http`, a Kafka
/// broker `type: kafka`, an AWS resource is `type: aws` with the ARN as `name`.
fn v1alpha3_call(client_namespace: &str, edge: &Edge) -> Value {
    let mut call = Map::new();
    let http = |call: &mut Map<String, Value>| {
        if !edge.http.is_empty() {
            call.insert("type".into(), json!("http"));
            call.insert("HTTPResources".into(), json!(http_resources(&edge.http)));
        }
    };
    match &edge.target {
        Target::Kubernetes(w) => {
            call.insert(
                "name".into(),
                json!(qualified_name(client_namespace, &w.namespace, &w.name)),
            );
            insert_some(&mut call, "kind", w.kind.as_deref());
            http(&mut call);
        }
        // The API server is no pod's: the operator's conversion (and Otterize's export) write
        // it `svc:kubernetes.default`, whatever the client's namespace.
        Target::Service(s) if s.namespace == "default" && s.name == "kubernetes" => {
            call.insert("name".into(), json!("svc:kubernetes.default"));
            http(&mut call);
        }
        Target::Service(s) => {
            call.insert(
                "name".into(),
                json!(qualified_name(client_namespace, &s.namespace, &s.name)),
            );
            call.insert("kind".into(), json!("Service"));
            http(&mut call);
        }
        Target::Internet(i) => {
            call.insert("type".into(), json!("internet"));
            call.insert("internet".into(), internet(edge, i));
        }
        // Never reached: `calls_by_client` leaves incoming traffic out.
        Target::Incoming(_) => {}
        Target::Aws(a) => {
            call.insert("type".into(), json!("aws"));
            call.insert("name".into(), json!(a.arn));
            insert_nonempty(&mut call, "awsActions", &a.actions);
        }
        Target::Kafka(w) => {
            call.insert("type".into(), json!("kafka"));
            call.insert(
                "name".into(),
                json!(qualified_name(client_namespace, &w.namespace, &w.name)),
            );
            insert_nonempty(&mut call, "kafkaTopics", &kafka_topics(&edge.kafka));
        }
    }
    Value::Object(call)
}

/// `[{path, methods}]`, the same in both versions. `methods` is required, so always written.
fn http_resources(http: &[HttpResource]) -> Vec<Value> {
    crate::edge::merge_http(http, &[])
        .into_iter()
        .map(|r| json!({ "path": r.path, "methods": r.methods }))
        .collect()
}

/// `[{name, operations}]`, the same in both versions; denied operations included (see the module
/// documentation). `operations` is required, so always written.
fn kafka_topics(kafka: &[KafkaTopic]) -> Vec<Value> {
    crate::edge::merge_kafka(kafka, &[])
        .into_iter()
        .map(|t| json!({ "name": t.name, "operations": union(&t.operations, &t.denied) }))
        .collect()
}

fn internet(edge: &Edge, i: &InternetTarget) -> Value {
    let mut m = Map::new();
    insert_nonempty(&mut m, "domains", &union(&i.domains, &[]));
    insert_nonempty(&mut m, "ips", &union(&i.ips, &[]));
    insert_nonempty(&mut m, "ports", &internet_ports(edge, i));
    Value::Object(m)
}

fn insert_some(m: &mut Map<String, Value>, key: &str, value: Option<&str>) {
    if let Some(v) = value {
        m.insert(key.into(), json!(v));
    }
}

fn insert_nonempty<T: serde::Serialize>(m: &mut Map<String, Value>, key: &str, values: &[T]) {
    if !values.is_empty() {
        m.insert(key.into(), json!(values));
    }
}

// === Output ===

/// Multi-document YAML: each document starts with `---`; no documents, no text.
///
/// Strings that a YAML 1.1 reader (kubectl's, among others) would take for a boolean or a number
/// are single-quoted, although serde_yaml, writing YAML 1.2, would leave them plain: a workload
/// named `on` or `n` must stay a string.
pub fn to_yaml(docs: &[Value]) -> String {
    docs.iter()
        .map(|d| {
            let yaml = serde_yaml::to_string(&mark_yaml11_lookalikes(&sorted_keys(d)))
                .expect("a JSON value always has a YAML form");
            format!("---\n{}", yaml.replace(&format!("'{YAML11_MARK}"), "'"))
        })
        .collect()
}

/// Prefixed to a string to make serde_yaml single-quote it (a plain scalar cannot start with
/// `*`), then removed from the output.
const YAML11_MARK: &str = "*intentmap-quote:";

fn mark_yaml11_lookalikes(v: &Value) -> Value {
    let mark =
        |s: &String| if is_yaml11_lookalike(s) { format!("{YAML11_MARK}{s}") } else { s.clone() };
    match v {
        Value::String(s) => Value::String(mark(s)),
        Value::Array(a) => Value::Array(a.iter().map(mark_yaml11_lookalikes).collect()),
        Value::Object(m) => {
            Value::Object(m.iter().map(|(k, v)| (mark(k), mark_yaml11_lookalikes(v))).collect())
        }
        other => other.clone(),
    }
}

/// Whether a YAML 1.1 reader resolves this plain scalar to something other than a string.
fn is_yaml11_lookalike(s: &str) -> bool {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True", "TRUE", "false",
        "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "null", "Null", "NULL", "~", "",
    ];
    if WORDS.contains(&s) {
        return true;
    }
    if !s.starts_with(|c: char| c.is_ascii_digit() || "+-.".contains(c)) {
        return false;
    }
    // YAML 1.1 numbers may contain `_` and use 0b/0x/0 prefixes.
    let plain: String = s.chars().filter(|&c| c != '_').collect();
    let unsigned = plain.trim_start_matches(['+', '-']);
    let integer = match unsigned.get(..2) {
        Some("0b") => u64::from_str_radix(&unsigned[2..], 2).is_ok(),
        Some("0x") => u64::from_str_radix(&unsigned[2..], 16).is_ok(),
        Some("0o") => u64::from_str_radix(&unsigned[2..], 8).is_ok(),
        _ => !unsigned.is_empty() && unsigned.bytes().all(|b| b.is_ascii_digit()),
    };
    integer || plain.parse::<f64>().is_ok()
}

/// A pretty-printed JSON array of the documents, with a final newline.
pub fn to_json(docs: &[Value]) -> String {
    let docs: Vec<Value> = docs.iter().map(sorted_keys).collect();
    let mut out = serde_json::to_string_pretty(&docs).expect("a JSON value always serialises");
    out.push('\n');
    out
}

/// The same value with every object's keys in alphabetical order, whichever map serde_json was
/// built with, so output is byte-identical across builds.
fn sorted_keys(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            Value::Object(keys.into_iter().map(|k| (k.clone(), sorted_keys(&m[k]))).collect())
        }
        Value::Array(a) => Value::Array(a.iter().map(sorted_keys).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::{AwsTarget, PortSpec, Protocol, ServiceRef};

    const NS: &str = "otterize-ecom-demo";

    fn edge(client: &str, target: Target, ports: &[u16]) -> Edge {
        Edge {
            client: WorkloadRef::new(NS, client, Some("Deployment")),
            target,
            ports: ports.iter().map(|&port| PortSpec { port, protocol: Protocol::Tcp }).collect(),
            first_seen: "2026-01-01T10:00:00Z".parse().unwrap(),
            last_seen: "2026-01-01T10:05:00Z".parse().unwrap(),
            connections: 1,
            http: Vec::new(),
            kafka: Vec::new(),
            bytes: None,
        }
    }

    fn workload(ns: &str, name: &str, kind: Option<&str>) -> Target {
        Target::Kubernetes(WorkloadRef::new(ns, name, kind))
    }

    /// frontend calls a workload in its namespace, one in another namespace, a Service, the
    /// internet and S3; checkoutservice calls one workload.
    fn demo() -> Vec<Edge> {
        vec![
            edge("frontend", workload(NS, "cartservice", Some("Deployment")), &[7070]),
            edge("frontend", workload("shared", "redis", Some("StatefulSet")), &[6379]),
            edge(
                "frontend",
                Target::Service(ServiceRef {
                    namespace: "kube-system".into(),
                    name: "kube-dns".into(),
                }),
                &[53],
            ),
            edge(
                "frontend",
                Target::Internet(InternetTarget {
                    domains: vec!["api.stripe.com".into()],
                    ips: vec!["203.0.113.7".into()],
                    ports: vec![],
                }),
                &[443],
            ),
            edge(
                "frontend",
                Target::Aws(AwsTarget {
                    arn: "arn:aws:s3:::ecom-assets".into(),
                    actions: vec!["s3:PutObject".into(), "s3:GetObject".into()],
                }),
                &[443],
            ),
            edge("checkoutservice", workload(NS, "paymentservice", None), &[50051]),
        ]
    }

    const DEMO_V2BETA1: &str = "\
---
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
  name: checkoutservice
  namespace: otterize-ecom-demo
spec:
  targets:
  - kubernetes:
      name: paymentservice
  workload:
    kind: Deployment
    name: checkoutservice
---
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
  name: frontend
  namespace: otterize-ecom-demo
spec:
  targets:
  - kubernetes:
      kind: Deployment
      name: cartservice
  - service:
      name: kube-dns.kube-system
  - kubernetes:
      kind: StatefulSet
      name: redis.shared
  - internet:
      domains:
      - api.stripe.com
      ips:
      - 203.0.113.7
      ports:
      - 443
  - aws:
      actions:
      - s3:GetObject
      - s3:PutObject
      arn: arn:aws:s3:::ecom-assets
  workload:
    kind: Deployment
    name: frontend
";

    const DEMO_V1ALPHA3: &str = "\
---
apiVersion: k8s.otterize.com/v1alpha3
kind: ClientIntents
metadata:
  name: checkoutservice
  namespace: otterize-ecom-demo
spec:
  calls:
  - name: paymentservice
  service:
    kind: Deployment
    name: checkoutservice
---
apiVersion: k8s.otterize.com/v1alpha3
kind: ClientIntents
metadata:
  name: frontend
  namespace: otterize-ecom-demo
spec:
  calls:
  - kind: Deployment
    name: cartservice
  - kind: Service
    name: kube-dns.kube-system
  - kind: StatefulSet
    name: redis.shared
  - internet:
      domains:
      - api.stripe.com
      ips:
      - 203.0.113.7
      ports:
      - 443
    type: internet
  - awsActions:
    - s3:GetObject
    - s3:PutObject
    name: arn:aws:s3:::ecom-assets
    type: aws
  service:
    kind: Deployment
    name: frontend
";

    #[test]
    fn renders_the_demo_as_v2beta1() {
        assert_eq!(to_yaml(&client_intents(&demo(), IntentsVersion::V2beta1)), DEMO_V2BETA1);
    }

    #[test]
    fn renders_the_demo_as_v1alpha3() {
        assert_eq!(to_yaml(&client_intents(&demo(), IntentsVersion::V1alpha3)), DEMO_V1ALPHA3);
    }

    #[test]
    fn output_does_not_depend_on_input_order_or_duplicates() {
        let mut shuffled = demo();
        shuffled.reverse();
        shuffled.swap(0, 3);
        // The same internet destination seen again with another IP and port, and S3 again.
        shuffled.push(edge(
            "frontend",
            Target::Internet(InternetTarget {
                domains: vec!["api.stripe.com".into()],
                ips: vec!["203.0.113.7".into()],
                ports: vec![443],
            }),
            &[],
        ));
        shuffled.insert(
            1,
            edge(
                "frontend",
                Target::Aws(AwsTarget {
                    arn: "arn:aws:s3:::ecom-assets".into(),
                    actions: vec!["s3:GetObject".into()],
                }),
                &[],
            ),
        );
        for version in IntentsVersion::ALL {
            let expected = client_intents(&demo(), version);
            let actual = client_intents(&shuffled, version);
            assert_eq!(to_yaml(&actual), to_yaml(&expected), "{version}");
            assert_eq!(to_json(&actual), to_json(&expected), "{version}");
            for k in 0..shuffled.len() {
                shuffled.rotate_left(1);
                assert_eq!(client_intents(&shuffled, version), expected, "{version}, rotated {k}");
            }
        }
    }

    #[test]
    fn conflicting_kinds_resolve_the_same_way_in_any_order() {
        let a = edge("frontend", workload(NS, "cart", Some("Deployment")), &[80]);
        let mut b = edge("frontend", workload(NS, "cart", Some("StatefulSet")), &[80]);
        b.client.kind = Some("StatefulSet".into());
        let ab = to_yaml(&client_intents(&[a.clone(), b.clone()], IntentsVersion::V2beta1));
        let ba = to_yaml(&client_intents(&[b, a], IntentsVersion::V2beta1));
        assert_eq!(ab, ba);
    }

    #[test]
    fn addressless_internet_targets_are_left_out() {
        let nowhere = edge("frontend", Target::Internet(InternetTarget::default()), &[443]);
        assert!(client_intents(&[nowhere], IntentsVersion::V2beta1).is_empty());
        assert_eq!(to_yaml(&[]), "");
        assert_eq!(to_json(&[]), "[]\n");
    }

    #[test]
    fn json_output_is_an_array_of_the_same_documents() {
        let docs = client_intents(&demo(), IntentsVersion::V2beta1);
        let parsed: Vec<Value> = serde_json::from_str(&to_json(&docs)).unwrap();
        assert_eq!(parsed, docs);
    }

    #[test]
    fn strings_a_yaml_1_1_reader_would_misread_are_quoted() {
        let doc = json!({"on": ["on", "n", "No", "0b101", "1_000", "12", "1e3", "", "true", "online", "10.0.0.1", "2001:db8::1", "*.example.com", "arn:aws:s3:::b"]});
        let expected = "---\n'on':\n- 'on'\n- 'n'\n- 'No'\n- '0b101'\n- '1_000'\n- '12'\n- '1e3'\n- ''\n- 'true'\n- online\n- 10.0.0.1\n- 2001:db8::1\n- '*.example.com'\n- arn:aws:s3:::b\n";
        assert_eq!(to_yaml(std::slice::from_ref(&doc)), expected);
        let back: Value = serde_yaml::from_str(expected).unwrap();
        assert_eq!(back, doc);
    }

    fn http(path: &str, methods: &[&str]) -> HttpResource {
        HttpResource { path: path.into(), methods: methods.iter().map(|m| m.to_string()).collect() }
    }

    fn topic(name: &str, operations: &[&str], denied: &[&str]) -> KafkaTopic {
        KafkaTopic {
            name: name.into(),
            operations: operations.iter().map(|o| o.to_string()).collect(),
            denied: denied.iter().map(|o| o.to_string()).collect(),
        }
    }

    /// checkout produces to and consumes from a broker in another namespace (one operation
    /// denied), calls cart over HTTP as a workload and currency as a Service, and reaches the
    /// broker over plain TCP too.
    fn protocols() -> Vec<Edge> {
        let broker = Target::Kafka(WorkloadRef::new("infra", "kafka", Some("StatefulSet")));
        let mut kafka = edge("checkout", broker.clone(), &[9092]);
        kafka.kafka = vec![
            topic("orders", &["produce", "describe"], &["describe"]),
            topic("payments", &["consume"], &[]),
        ];
        // The same broker again, later: topics and operations are unioned.
        let mut kafka_again = edge("checkout", broker, &[9092]);
        kafka_again.kafka = vec![topic("orders", &["consume"], &[])];
        let mut cart = edge("checkout", workload(NS, "cart", Some("Deployment")), &[8080]);
        cart.http = vec![http("/api/cart", &["POST", "GET"]), http("/healthz", &[])];
        let mut currency = edge(
            "checkout",
            Target::Service(ServiceRef { namespace: NS.into(), name: "currency".into() }),
            &[7000],
        );
        currency.http = vec![http("/convert", &["GET"])];
        let tcp = edge("checkout", workload("infra", "kafka", Some("StatefulSet")), &[9092]);
        vec![kafka, cart, currency, tcp, kafka_again]
    }

    const PROTOCOLS_V2BETA1: &str = "\
---
apiVersion: k8s.otterize.com/v2beta1
kind: ClientIntents
metadata:
  name: checkout
  namespace: otterize-ecom-demo
spec:
  targets:
  - kubernetes:
      http:
      - methods:
        - GET
        - POST
        path: /api/cart
      - methods: []
        path: /healthz
      kind: Deployment
      name: cart
  - service:
      http:
      - methods:
        - GET
        path: /convert
      name: currency
  - kafka:
      name: kafka.infra
      topics:
      - name: orders
        operations:
        - consume
        - describe
        - produce
      - name: payments
        operations:
        - consume
  - kubernetes:
      kind: StatefulSet
      name: kafka.infra
  workload:
    kind: Deployment
    name: checkout
";

    const PROTOCOLS_V1ALPHA3: &str = "\
---
apiVersion: k8s.otterize.com/v1alpha3
kind: ClientIntents
metadata:
  name: checkout
  namespace: otterize-ecom-demo
spec:
  calls:
  - HTTPResources:
    - methods:
      - GET
      - POST
      path: /api/cart
    - methods: []
      path: /healthz
    kind: Deployment
    name: cart
    type: http
  - HTTPResources:
    - methods:
      - GET
      path: /convert
    kind: Service
    name: currency
    type: http
  - kafkaTopics:
    - name: orders
      operations:
      - consume
      - describe
      - produce
    - name: payments
      operations:
      - consume
    name: kafka.infra
    type: kafka
  - kind: StatefulSet
    name: kafka.infra
  service:
    kind: Deployment
    name: checkout
";

    #[test]
    fn http_paths_and_kafka_topics_in_both_versions() {
        assert_eq!(
            to_yaml(&client_intents(&protocols(), IntentsVersion::V2beta1)),
            PROTOCOLS_V2BETA1
        );
        assert_eq!(
            to_yaml(&client_intents(&protocols(), IntentsVersion::V1alpha3)),
            PROTOCOLS_V1ALPHA3
        );
        let mut shuffled = protocols();
        for k in 0..shuffled.len() {
            shuffled.rotate_left(1);
            for version in IntentsVersion::ALL {
                assert_eq!(
                    client_intents(&shuffled, version),
                    client_intents(&protocols(), version),
                    "{version}, rotated {k}"
                );
            }
        }
    }

    #[test]
    fn a_broker_in_the_client_namespace_is_named_bare_and_may_have_no_topics() {
        let e = edge("checkout", Target::Kafka(WorkloadRef::new(NS, "kafka", None)), &[9092]);
        let v2 = client_intents(std::slice::from_ref(&e), IntentsVersion::V2beta1);
        assert_eq!(v2[0]["spec"]["targets"], json!([{"kafka": {"name": "kafka"}}]));
        let v1 = client_intents(&[e], IntentsVersion::V1alpha3);
        assert_eq!(v1[0]["spec"]["calls"], json!([{"name": "kafka", "type": "kafka"}]));
    }

    #[test]
    fn dotted_workload_names_are_written_as_the_operator_reads_them() {
        let client = WorkloadRef::new("shop", "web.2.0", Some("Deployment"));
        let target = |ns: &str| Target::Kubernetes(WorkloadRef::new(ns, "cool-app.4.2.0", None));
        let edges: Vec<Edge> = [target("shop"), target("infra")]
            .into_iter()
            .map(|t| Edge { client: client.clone(), ..edge("web", t, &[]) })
            .collect();
        let doc = &client_intents(&edges, IntentsVersion::V2beta1)[0];
        assert_eq!(doc["metadata"]["name"], "web.2.0", "a valid object name, kept");
        assert_eq!(doc["spec"]["workload"]["name"], "web_2_0");
        assert_eq!(doc["spec"]["targets"][0]["kubernetes"]["name"], "cool-app_4_2_0");
        assert_eq!(doc["spec"]["targets"][1]["kubernetes"]["name"], "cool-app_4_2_0.infra");
        let doc = &client_intents(&edges, IntentsVersion::V1alpha3)[0];
        assert_eq!(doc["spec"]["service"]["name"], "web_2_0");
        assert_eq!(doc["spec"]["calls"][1]["name"], "cool-app_4_2_0.infra");
    }

    #[test]
    fn the_api_server_is_svc_kubernetes_default_in_v1alpha3() {
        let api =
            Target::Service(ServiceRef { namespace: "default".into(), name: "kubernetes".into() });
        let other = Target::Service(ServiceRef { namespace: "infra".into(), name: "dns".into() });
        for ns in ["shop", "default"] {
            let client = WorkloadRef::new(ns, "web", None);
            let edges: Vec<Edge> = [api.clone(), other.clone()]
                .into_iter()
                .map(|t| Edge { client: client.clone(), ..edge("web", t, &[]) })
                .collect();
            let doc = &client_intents(&edges, IntentsVersion::V1alpha3)[0];
            let calls = doc["spec"]["calls"].as_array().unwrap();
            assert!(calls.contains(&json!({"name": "svc:kubernetes.default"})), "{calls:?}");
            assert!(calls.contains(&json!({"name": "dns.infra", "kind": "Service"})), "{calls:?}");
            let doc = &client_intents(&edges, IntentsVersion::V2beta1)[0];
            let expected = if ns == "default" { "kubernetes" } else { "kubernetes.default" };
            assert!(doc["spec"]["targets"]
                .as_array()
                .unwrap()
                .contains(&json!({"service": {"name": expected}})));
        }
    }

    #[test]
    fn versions_parse_from_short_and_full_names() {
        assert_eq!("v2beta1".parse(), Ok(IntentsVersion::V2beta1));
        assert_eq!("k8s.otterize.com/v1alpha3".parse(), Ok(IntentsVersion::V1alpha3));
        assert_eq!(IntentsVersion::default().api_version(), "k8s.otterize.com/v2beta1");
        let err = "v1".parse::<IntentsVersion>().unwrap_err().to_string();
        assert!(err.contains("v2beta1") && err.contains("v1alpha3"), "{err}");
        assert!("example.com/v2beta1".parse::<IntentsVersion>().is_err());
    }
}
