//! How `list`, `export` and `visualize` reshape the mapper's edges for Otterize's CLI flags
//! `--as-kubernetes-service` and `--distinct-by-label KEY`. Both need what only the mapper's
//! index knows (the Services in front of a workload, the labels on its pods): the CLI asks
//! `GET /v1/edges?services=true&label_values=KEY` and gets each workload's [`WorkloadFacts`]
//! with the edges.
//!
//! **`--as-kubernetes-service`.** A call to a workload is named by the Kubernetes Service in
//! front of it: `service: {name}` in v2beta1, `kind: Service` in v1alpha3 (the form the
//! ClientIntents CRD accepts for Services), `svc` in `list`'s sense of a bare name. Otterize's
//! mapper knows which Service a connection was made to; ours keeps calls per workload, so the
//! Services are those whose backends are the target's pods now: behind one Service the call is
//! named by it, behind several by each of them (each reaches the same pods; a note says which
//! workloads these are), behind none it keeps the workload's name and a note says so. Kafka
//! brokers keep their workload's name (the operator finds a broker by its KafkaServerConfig,
//! which names the workload); calls that were already to a Service stay as they are.
//!
//! **`--distinct-by-label KEY`.** As in Otterize's CLI, clients are told apart by their name and
//! the value of label KEY on their pods instead of by name and namespace: workloads of the same
//! name whose pods carry different values are distinct entries, and workloads of the same name
//! and value in several namespaces are one (Otterize's "remove duplicates by service and this
//! label"). An entry is listed and exported in the first of its namespaces (alphabetically),
//! its targets named as each workload named them from its own namespace (a target in a
//! client's own namespace by its bare name), and `list` shows the value and every namespace:
//! `api (track=canary) in namespace team-b calls:`. Where Otterize writes every entry as
//! `metadata.name: <workload>` (so two values in one namespace overwrite each other when
//! applied), an entry with a value is exported as `metadata.name: <workload>-<value>` with
//! `metadata.labels: {KEY: value}`; `spec.workload` stays the workload, which is what the
//! intents operator matches pods by. Clients none of whose pods carry KEY (or with no pod
//! left) form the entry `(no KEY label)`, named as the workload. The mapper keeps calls per
//! workload, not per pod: a workload whose pods carry several values at once (a rollout) is an
//! entry per value, each with all of its calls, and a note says so.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use model::intents::{self, IntentsVersion};
use model::list::ListStyle;
use model::{Edge, ServiceRef, Target};
use serde::Deserialize;
use serde_json::{json, Value};

/// What the mapper's index says about one workload of the edges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct WorkloadFacts {
    pub namespace: String,
    pub name: String,
    /// The values of the `--distinct-by-label` key on the workload's pods (at most 16).
    #[serde(default)]
    pub label_values: Vec<String>,
    /// The pods carry more values than `label_values` holds.
    #[serde(default)]
    pub more_label_values: bool,
    /// The Services in front of the workload.
    #[serde(default)]
    pub services: Vec<String>,
}

/// The mapper's answer to `/v1/edges` with `services=true` or `label_values=KEY`.
#[derive(Debug, Deserialize)]
pub struct EdgesWithFacts {
    pub edges: Vec<Edge>,
    #[serde(default)]
    pub workloads: Vec<WorkloadFacts>,
}

/// The longest label key Kubernetes accepts: a DNS-subdomain prefix, `/`, a 63-character name.
pub const MAX_LABEL_KEY_LEN: usize = 317;

/// Checks `--distinct-by-label KEY` before the mapper is asked (which checks it fully).
pub fn check_label_key(key: &str) -> Result<(), String> {
    let valid = !key.is_empty()
        && key.len() <= MAX_LABEL_KEY_LEN
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_./".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{:?} is not a label key for --distinct-by-label: give [prefix/]name (letters, digits, '-', '_', '.'), e.g. --distinct-by-label app.kubernetes.io/version",
            key.chars().take(80).collect::<String>()
        ))
    }
}

fn facts_by_workload(facts: &[WorkloadFacts]) -> HashMap<(&str, &str), &WorkloadFacts> {
    facts.iter().map(|f| ((f.namespace.as_str(), f.name.as_str()), f)).collect()
}

/// `--as-kubernetes-service`: every call to a workload becomes a call to the Service(s) in
/// front of it (see the module documentation), with notes for stderr about workloads with no
/// Service or several.
pub fn as_kubernetes_services(
    edges: Vec<Edge>,
    facts: &[WorkloadFacts],
) -> (Vec<Edge>, Vec<String>) {
    let by_workload = facts_by_workload(facts);
    let mut without: BTreeSet<String> = BTreeSet::new();
    let mut several: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::with_capacity(edges.len());
    for edge in edges {
        let Target::Kubernetes(w) = &edge.target else {
            out.push(edge);
            continue;
        };
        let services = by_workload
            .get(&(w.namespace.as_str(), w.name.as_str()))
            .map(|f| f.services.as_slice())
            .unwrap_or_default();
        if services.is_empty() {
            without.insert(format!("{} in namespace {}", w.name, w.namespace));
            out.push(edge);
            continue;
        }
        if services.len() > 1 {
            several.insert(format!("{} in namespace {}", w.name, w.namespace), services.join(", "));
        }
        for service in services {
            let mut e = edge.clone();
            e.target = Target::Service(ServiceRef {
                namespace: w.namespace.clone(),
                name: service.clone(),
            });
            out.push(e);
        }
    }
    let mut notes: Vec<String> = without
        .into_iter()
        .map(|w| format!("{w} has no Service in front of it: its callers name the workload"))
        .collect();
    notes.extend(several.into_iter().map(|(w, services)| {
        format!("{w} is behind the Services {services}: the mapper does not record which one a client called, so each is named")
    }));
    (out, notes)
}

/// One client entry of `--distinct-by-label`: the workloads of one name and label value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    /// The label's value; `None` when none of the workloads' pods carries the label.
    pub value: Option<String>,
    /// The namespaces of the workloads, sorted; the entry is listed and exported in the first.
    pub namespaces: Vec<String>,
    /// Their edges, every client moved to the first namespace, a target in a client's own
    /// namespace moved with it.
    pub edges: Vec<Edge>,
}

impl Entry {
    /// `api (track=canary) in namespace team-b calls:`, or `in namespaces a, b`.
    pub fn heading(&self, key: &str) -> String {
        let namespaces = match self.namespaces.as_slice() {
            [one] => format!("namespace {one}"),
            many => format!("namespaces {}", many.join(", ")),
        };
        format!("{} ({}) in {namespaces} calls:", self.name, self.label(key))
    }

    fn label(&self, key: &str) -> String {
        match &self.value {
            Some(value) => format!("{key}={value}"),
            None => format!("no {key} label"),
        }
    }
}

/// What `--distinct-by-label KEY` makes of the edges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Distinct {
    pub key: String,
    /// The client entries, sorted by namespace, name and value.
    pub entries: Vec<Entry>,
    /// Incoming internet traffic: it names a workload's clients, not a client's calls, so it is
    /// shown as without the flag.
    pub incoming: Vec<Edge>,
}

/// `--distinct-by-label KEY`: the edges grouped into [`Entry`]s (see the module
/// documentation), with notes for stderr.
pub fn distinct_by_label(
    edges: Vec<Edge>,
    facts: &[WorkloadFacts],
    key: &str,
) -> (Distinct, Vec<String>) {
    let by_workload = facts_by_workload(facts);
    let mut notes = BTreeSet::new();
    let mut incoming = Vec::new();
    // (name, value) → namespace → edges
    let mut groups: BTreeMap<(String, Option<String>), BTreeMap<String, Vec<Edge>>> =
        BTreeMap::new();
    for edge in edges {
        if edge.target.type_name() == "incoming" {
            incoming.push(edge);
            continue;
        }
        let client = (edge.client.namespace.as_str(), edge.client.name.as_str());
        let (values, more) = by_workload
            .get(&client)
            .map(|f| (f.label_values.as_slice(), f.more_label_values))
            .unwrap_or_default();
        if values.len() > 1 || more {
            let values: Vec<String> = values.iter().map(|v| format!("{key}={v}")).collect();
            notes.insert(format!(
                "{} in namespace {} has pods with {}{}: the mapper keeps calls per workload, not per pod, so each of these entries lists all of its calls",
                client.1,
                client.0,
                values.join(", "),
                if more { " and more values (left out)" } else { "" }
            ));
        }
        let values: Vec<Option<String>> =
            if values.is_empty() { vec![None] } else { values.iter().cloned().map(Some).collect() };
        for value in values {
            groups
                .entry((edge.client.name.clone(), value))
                .or_default()
                .entry(edge.client.namespace.clone())
                .or_default()
                .push(edge.clone());
        }
    }
    let mut entries: Vec<Entry> = groups
        .into_iter()
        .filter_map(|((name, value), by_namespace)| {
            let first = by_namespace.keys().next()?.clone();
            let namespaces: Vec<String> = by_namespace.keys().cloned().collect();
            let edges = by_namespace
                .into_iter()
                .flat_map(|(namespace, edges)| {
                    let first = first.clone();
                    edges.into_iter().map(move |e| moved(e, &namespace, &first))
                })
                .collect();
            Some(Entry { name, value, namespaces, edges })
        })
        .collect();
    entries.sort_by(|a, b| {
        (&a.namespaces[0], &a.name, &a.value).cmp(&(&b.namespaces[0], &b.name, &b.value))
    });
    let distinct = Distinct { key: key.to_owned(), entries, incoming };
    (distinct, notes.into_iter().collect())
}

/// `edge` of a client in `from` as if its client were in `to`: a target in `from` goes along.
fn moved(mut edge: Edge, from: &str, to: &str) -> Edge {
    if from == to {
        return edge;
    }
    edge.client.namespace = to.to_owned();
    match &mut edge.target {
        Target::Kubernetes(w) | Target::Kafka(w) if w.namespace == from => {
            w.namespace = to.to_owned()
        }
        Target::Service(s) if s.namespace == from => s.namespace = to.to_owned(),
        _ => {}
    }
    edge
}

impl Distinct {
    /// `list`: each entry as `list` prints a client, under its heading; then incoming traffic
    /// as without the flag.
    pub fn render_list(&self, style: ListStyle) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            let text = model::list::render_list_with(&entry.edges, style);
            let body = text.split_once('\n').map(|(_, body)| body).unwrap_or("");
            if body.is_empty() {
                continue;
            }
            out.push_str(&entry.heading(&self.key));
            out.push('\n');
            out.push_str(body);
        }
        if !self.incoming.is_empty() {
            out.push_str(&model::list::render_list_with(&self.incoming, style));
        }
        if out.is_empty() {
            out.push_str("No connections found.\n");
        }
        out
    }

    /// `export`: a ClientIntents document per entry (see the module documentation for its name
    /// and labels).
    pub fn client_intents(&self, version: IntentsVersion) -> Vec<Value> {
        client_intents(&self.entries, &self.key, version)
    }

    /// `visualize`: each entry's client drawn as `name (KEY=value)`; incoming traffic as is.
    pub fn relabelled(&self) -> Vec<Edge> {
        let mut edges = relabelled(&self.entries, &self.key);
        edges.extend(self.incoming.iter().cloned());
        edges
    }
}

/// Whether `value` can be a Kubernetes label value (at most 63 characters of letters, digits,
/// `-`, `_`, `.`, beginning and ending with a letter or digit).
fn is_label_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 63
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
        && value.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// `<workload>-<value>` as a `metadata.name` (a DNS subdomain: lower case, at most 253).
fn document_name(workload: &str, value: &str) -> String {
    let value: String = value
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-' | '.') => c,
            _ => '-',
        })
        .collect();
    let mut name = format!("{workload}-{value}");
    name.truncate(253);
    name.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_owned()
}

fn client_intents(entries: &[Entry], key: &str, version: IntentsVersion) -> Vec<Value> {
    let mut taken: HashSet<(String, String)> = HashSet::new();
    let mut docs = Vec::new();
    for entry in entries {
        for mut doc in intents::client_intents(&entry.edges, version) {
            let namespace = entry.namespaces[0].clone();
            let base = match &entry.value {
                Some(value) => document_name(&entry.name, value),
                None => entry.name.clone(),
            };
            let mut name = base.clone();
            let mut n = 1;
            while !taken.insert((namespace.clone(), name.clone())) {
                n += 1;
                name = format!("{base}-{n}");
            }
            if let Some(metadata) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
                metadata.insert("name".into(), json!(name));
                if let Some(value) = entry.value.as_deref().filter(|v| is_label_value(v)) {
                    metadata.insert("labels".into(), json!({ key: value }));
                }
            }
            docs.push(doc);
        }
    }
    docs
}

fn relabelled(entries: &[Entry], key: &str) -> Vec<Edge> {
    entries
        .iter()
        .flat_map(|entry| {
            let name = format!("{} ({})", entry.name, entry.label(key));
            entry.edges.iter().cloned().map(move |mut e| {
                e.client.name.clone_from(&name);
                e
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use model::WorkloadRef;

    fn edge(client: (&str, &str), target: (&str, &str)) -> Edge {
        Edge {
            client: WorkloadRef::new(client.0, client.1, Some("Deployment")),
            target: Target::Kubernetes(WorkloadRef::new(target.0, target.1, Some("Deployment"))),
            ports: vec![],
            first_seen: Utc::now(),
            last_seen: Utc::now(),
            connections: 1,
            http: vec![],
            kafka: vec![],
            bytes: None,
        }
    }

    fn facts(ns: &str, name: &str, values: &[&str], services: &[&str]) -> WorkloadFacts {
        WorkloadFacts {
            namespace: ns.into(),
            name: name.into(),
            label_values: values.iter().map(|v| v.to_string()).collect(),
            more_label_values: false,
            services: services.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn same_name_and_value_merge_across_namespaces_and_values_split() {
        let edges = vec![
            edge(("team-a", "api"), ("team-a", "db")),
            edge(("team-c", "api"), ("team-c", "db")),
            edge(("team-c", "api"), ("shared", "cache")),
            edge(("team-b", "api"), ("team-b", "db")),
            edge(("team-b", "web"), ("team-b", "api")),
        ];
        let facts = vec![
            facts("team-a", "api", &["stable"], &[]),
            facts("team-b", "api", &["canary"], &[]),
            facts("team-c", "api", &["stable"], &[]),
        ];
        let (distinct, notes) = distinct_by_label(edges, &facts, "track");
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!(
            distinct.render_list(ListStyle::Seeds),
            "\
api (track=stable) in namespaces team-a, team-c calls:
  - cache in namespace shared
  - db
api (track=canary) in namespace team-b calls:
  - db
web (no track label) in namespace team-b calls:
  - api
"
        );
        let docs = distinct.client_intents(IntentsVersion::V2beta1);
        let names: Vec<(&str, &str)> = docs
            .iter()
            .map(|d| {
                (
                    d["metadata"]["namespace"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(names, [("team-a", "api-stable"), ("team-b", "api-canary"), ("team-b", "web")]);
        assert_eq!(docs[0]["metadata"]["labels"], json!({"track": "stable"}));
        assert_eq!(docs[0]["spec"]["workload"]["name"], "api");
        assert!(docs[2]["metadata"].get("labels").is_none());
    }

    #[test]
    fn a_workload_with_two_values_at_once_is_an_entry_per_value_and_said_so() {
        let edges = vec![edge(("shop", "api"), ("shop", "db"))];
        let facts = vec![facts("shop", "api", &["V_2", "v1"], &[])];
        let (distinct, notes) = distinct_by_label(edges, &facts, "version");
        assert_eq!(distinct.entries.len(), 2);
        assert_eq!(notes.len(), 1);
        assert!(notes[0].contains("version=V_2, version=v1"), "{notes:?}");
        let docs = distinct.client_intents(IntentsVersion::V1alpha3);
        assert_eq!(docs[0]["metadata"]["name"], "api-v-2");
        assert_eq!(docs[1]["metadata"]["name"], "api-v1");
    }

    #[test]
    fn targets_become_their_services_or_stay_with_a_note() {
        let edges = vec![
            edge(("shop", "web"), ("shop", "cart")),
            edge(("shop", "web"), ("shop", "worker")),
            edge(("shop", "web"), ("infra", "redis")),
        ];
        let facts = vec![
            facts("shop", "cart", &[], &["cart-svc"]),
            facts("infra", "redis", &[], &["redis", "redis-replicas"]),
        ];
        let (edges, notes) = as_kubernetes_services(edges, &facts);
        assert_eq!(
            model::list::render_list(&edges),
            "web in namespace shop calls:\n  - cart-svc\n  - redis in namespace infra\n  - redis-replicas in namespace infra\n  - worker\n"
        );
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].starts_with("worker in namespace shop has no Service"), "{notes:?}");
        assert!(notes[1].contains("redis, redis-replicas"), "{notes:?}");
        let docs = intents::client_intents(&edges, IntentsVersion::V2beta1);
        assert_eq!(docs[0]["spec"]["targets"][0], json!({"service": {"name": "cart-svc"}}));
    }

    #[test]
    fn label_keys_are_checked() {
        assert!(check_label_key("app.kubernetes.io/version").is_ok());
        assert!(check_label_key("track").is_ok());
        assert!(check_label_key("").is_err());
        assert!(check_label_key("a b").unwrap_err().contains("--distinct-by-label"));
        assert!(check_label_key(&"a".repeat(400)).is_err());
    }
}
