//! Change over time: which calls are new, still seen or gone since a moment the caller names.
//! Stored edges keep when they were first and last seen, which is all this needs.
//!
//! - The access graph (`changed_since=T`) marks each edge `new` (first seen after T), `gone`
//!   (last seen before T) or `seen` (seen at T or after, and first seen at T or before).
//! - ClientIntents (`diff_since=T`) mark each target `added` (first seen after T) or
//!   `not_seen_since` (last seen before T), as YAML comments above the target or, in the JSON
//!   form, in a `changes` list beside the unchanged documents (which stay valid ClientIntents).

use std::collections::HashMap;

use chrono::{DateTime, SecondsFormat, Utc};
use model::intents::{self, IntentsVersion};
use model::{AccessGraph, Edge};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// Where an access-graph edge stands relative to `changed_since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum GraphChange {
    New,
    Seen,
    Gone,
}

impl GraphChange {
    pub fn of(first_seen: DateTime<Utc>, last_seen: DateTime<Utc>, since: DateTime<Utc>) -> Self {
        if first_seen > since {
            GraphChange::New
        } else if last_seen < since {
            GraphChange::Gone
        } else {
            GraphChange::Seen
        }
    }
}

/// The graph as JSON with `change` on every edge and a `changes` summary.
pub fn mark_graph(graph: &AccessGraph, since: DateTime<Utc>) -> Result<Value, serde_json::Error> {
    let mut value = serde_json::to_value(graph)?;
    let (mut new, mut seen, mut gone) = (0usize, 0usize, 0usize);
    if let Some(edges) = value.get_mut("edges").and_then(Value::as_array_mut) {
        for (edge, g) in edges.iter_mut().zip(&graph.edges) {
            let change = GraphChange::of(g.first_seen, g.last_seen, since);
            match change {
                GraphChange::New => new += 1,
                GraphChange::Seen => seen += 1,
                GraphChange::Gone => gone += 1,
            }
            if let Some(fields) = edge.as_object_mut() {
                fields.insert("change".into(), serde_json::to_value(change)?);
            }
        }
    }
    if let Some(fields) = value.as_object_mut() {
        fields.insert(
            "changes".into(),
            json!({ "since": rfc3339(since), "new": new, "seen": seen, "gone": gone }),
        );
    }
    Ok(value)
}

/// Where a ClientIntents target stands relative to `diff_since`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TargetChange {
    Added,
    NotSeenSince,
    Unchanged,
}

impl TargetChange {
    fn of(first_seen: DateTime<Utc>, last_seen: DateTime<Utc>, since: DateTime<Utc>) -> Self {
        match GraphChange::of(first_seen, last_seen, since) {
            GraphChange::New => TargetChange::Added,
            GraphChange::Gone => TargetChange::NotSeenSince,
            GraphChange::Seen => TargetChange::Unchanged,
        }
    }
}

/// One target of one ClientIntents document, with when it was seen.
#[derive(Debug, Clone)]
pub struct TargetDiff {
    pub change: TargetChange,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub target: Value,
}

/// A ClientIntents document and its targets' changes, in the document's order.
#[derive(Debug, Clone)]
pub struct DocumentDiff {
    pub document: Value,
    pub targets: Vec<TargetDiff>,
}

/// The targets list of a document: `spec.targets` (v2beta1) or `spec.calls` (v1alpha3).
fn targets_of(doc: &Value) -> &[Value] {
    let spec = &doc["spec"];
    spec.get("targets")
        .or_else(|| spec.get("calls"))
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A target of a client: (client namespace, client name, the target as JSON text).
type TargetKey = (String, String, String);
/// First and last seen.
type SeenWindow = (DateTime<Utc>, DateTime<Utc>);

/// The export of `edges` with every target's change since `since`.
///
/// Each target of a document is the rendering of exactly one merged edge, so each merged edge
/// is rendered alone to learn which target it is.
pub fn diff_intents(
    edges: &[Edge],
    version: IntentsVersion,
    since: DateTime<Utc>,
) -> Vec<DocumentDiff> {
    let mut seen_at: HashMap<TargetKey, SeenWindow> = HashMap::new();
    for edge in model::edge::merge_edges(edges.iter().cloned()) {
        let window = (edge.first_seen, edge.last_seen);
        for doc in intents::client_intents(std::slice::from_ref(&edge), version) {
            // Keyed by the document's own names, as the whole export below is looked up.
            let (namespace, name) = document_client(&doc);
            for target in targets_of(&doc) {
                let key = (namespace.clone(), name.clone(), target.to_string());
                seen_at
                    .entry(key)
                    .and_modify(|(first, last)| {
                        *first = (*first).min(window.0);
                        *last = (*last).max(window.1);
                    })
                    .or_insert(window);
            }
        }
    }
    intents::client_intents(edges, version)
        .into_iter()
        .map(|document| {
            let (namespace, name) = document_client(&document);
            let targets = targets_of(&document)
                .iter()
                .map(|target| {
                    let key = (namespace.clone(), name.clone(), target.to_string());
                    // Every target comes from an edge; a miss would mean the rendering depends on
                    // more than the edge, and then "unchanged" claims nothing false.
                    let (first_seen, last_seen) =
                        seen_at.get(&key).copied().unwrap_or((since, since));
                    TargetDiff {
                        change: TargetChange::of(first_seen, last_seen, since),
                        first_seen,
                        last_seen,
                        target: target.clone(),
                    }
                })
                .collect();
            DocumentDiff { document, targets }
        })
        .collect()
}

/// A document's `metadata.namespace` and `metadata.name`.
fn document_client(doc: &Value) -> (String, String) {
    let field = |k: &str| doc["metadata"][k].as_str().unwrap_or_default().to_owned();
    (field("namespace"), field("name"))
}

pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// The YAML export with a summary comment on each document and a comment above each target
/// that was added or not seen since `since` (unchanged targets have none).
pub fn diff_yaml(docs: &[DocumentDiff], since: DateTime<Utc>) -> String {
    let since_text = rfc3339(since);
    let mut out = String::new();
    for d in docs {
        let yaml = intents::to_yaml(std::slice::from_ref(&d.document));
        let count = |c: TargetChange| d.targets.iter().filter(|t| t.change == c).count();
        let summary = format!(
            "# diff since {since_text}: {} added, {} not seen since, {} unchanged\n",
            count(TargetChange::Added),
            count(TargetChange::NotSeenSince),
            count(TargetChange::Unchanged)
        );
        let comments: Vec<Option<String>> = d
            .targets
            .iter()
            .map(|t| match t.change {
                TargetChange::Added => {
                    Some(format!("# added: first seen {}", rfc3339(t.first_seen)))
                }
                TargetChange::NotSeenSince => Some(format!(
                    "# not seen since {since_text}: last seen {}",
                    rfc3339(t.last_seen)
                )),
                TargetChange::Unchanged => None,
            })
            .collect();
        out.push_str(&annotate(&yaml, &summary, &comments));
    }
    out
}

/// Puts `summary` after the document's `---` and `comments[i]` above the i-th item of
/// `spec.targets` / `spec.calls`. serde_yaml writes a mapping's sequence at the mapping's
/// indentation, so the list's items are the lines starting with exactly `  - ` after the
/// `  targets:` (or `  calls:`) line and before the next key of `spec`. When the items found are
/// not as many as the comments, each comment goes into the summary instead, naming its target.
fn annotate(yaml: &str, summary: &str, comments: &[Option<String>]) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let mut items = Vec::new();
    let mut in_list = false;
    for (i, line) in lines.iter().enumerate() {
        if *line == "  targets:" || *line == "  calls:" {
            in_list = true;
            continue;
        }
        if in_list {
            if line.starts_with("  - ") {
                items.push(i);
            } else if !line.starts_with("    ") {
                in_list = false;
            }
        }
    }
    let mut out = String::with_capacity(yaml.len() + 64 * comments.len());
    let inline = items.len() == comments.len();
    for (i, line) in lines.iter().enumerate() {
        out.push_str(line);
        out.push('\n');
        if i == 0 {
            out.push_str(summary);
            if !inline {
                for (n, c) in comments.iter().enumerate() {
                    if let Some(c) = c {
                        out.push_str(&format!("# target {}: {}\n", n + 1, &c[2..]));
                    }
                }
            }
        }
        if inline {
            if let Some(n) = items.iter().position(|&at| at == i + 1) {
                if let Some(c) = &comments[n] {
                    out.push_str("  ");
                    out.push_str(c);
                    out.push('\n');
                }
            }
        }
    }
    out
}

/// The JSON form: `{diff_since, documents, changes}`; `documents` is what `format=json` returns
/// without `diff_since` (apply it as it is), `changes` lists every target with its change.
pub fn diff_json(docs: &[DocumentDiff], since: DateTime<Utc>) -> Value {
    let documents: Vec<Value> = docs.iter().map(|d| d.document.clone()).collect();
    let changes: Vec<Value> = docs
        .iter()
        .flat_map(|d| {
            let client = json!({
                "namespace": d.document["metadata"]["namespace"],
                "name": d.document["metadata"]["name"],
            });
            d.targets.iter().map(move |t| {
                let mut m = Map::new();
                m.insert("client".into(), client.clone());
                m.insert("target".into(), t.target.clone());
                m.insert("change".into(), json!(t.change));
                m.insert("first_seen".into(), json!(rfc3339(t.first_seen)));
                m.insert("last_seen".into(), json!(rfc3339(t.last_seen)));
                Value::Object(m)
            })
        })
        .collect();
    json!({ "diff_since": rfc3339(since), "documents": documents, "changes": changes })
}

#[cfg(test)]
mod tests {
    use super::*;
    use model::{AwsTarget, Target, WorkloadRef};

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn edge(client: &str, target: Target, first: &str, last: &str) -> Edge {
        Edge {
            client: WorkloadRef::new("shop", client, Some("Deployment")),
            target,
            ports: vec![],
            first_seen: t(first),
            last_seen: t(last),
            connections: 1,
            http: vec![],
            kafka: vec![],
            bytes: None,
        }
    }

    fn k8s(name: &str) -> Target {
        Target::Kubernetes(WorkloadRef::new("shop", name, Some("Deployment")))
    }

    #[test]
    fn graph_changes_are_decided_by_first_and_last_seen() {
        let since = t("2026-11-24T12:00:00Z");
        let of = |a, b| GraphChange::of(t(a), t(b), since);
        assert_eq!(of("2026-11-24T12:00:01Z", "2026-11-24T13:00:00Z"), GraphChange::New);
        assert_eq!(of("2026-11-24T11:00:00Z", "2026-11-24T11:59:59Z"), GraphChange::Gone);
        assert_eq!(of("2026-11-24T11:00:00Z", "2026-11-24T12:00:00Z"), GraphChange::Seen);
        assert_eq!(of("2026-11-24T12:00:00Z", "2026-11-24T12:30:00Z"), GraphChange::Seen);
    }

    #[test]
    fn every_target_gets_its_own_comment_in_both_versions() {
        let since = t("2026-11-24T12:00:00Z");
        let edges = vec![
            edge("frontend", k8s("cart"), "2026-11-24T12:30:00Z", "2026-11-24T13:00:00Z"),
            edge("frontend", k8s("ads"), "2026-11-24T10:00:00Z", "2026-11-24T11:00:00Z"),
            edge(
                "frontend",
                Target::Aws(AwsTarget { arn: "arn:aws:s3:::b".into(), actions: vec![] }),
                "2026-11-24T10:00:00Z",
                "2026-11-24T13:00:00Z",
            ),
        ];
        for version in IntentsVersion::ALL {
            let docs = diff_intents(&edges, version, since);
            assert_eq!(docs.len(), 1);
            let changes: Vec<TargetChange> = docs[0].targets.iter().map(|t| t.change).collect();
            // call order: ads, cart, then AWS
            assert_eq!(
                changes,
                [TargetChange::NotSeenSince, TargetChange::Added, TargetChange::Unchanged]
            );
            let yaml = diff_yaml(&docs, since);
            let lines: Vec<&str> = yaml.lines().collect();
            assert_eq!(lines[0], "---");
            assert_eq!(
                lines[1],
                "# diff since 2026-11-24T12:00:00Z: 1 added, 1 not seen since, 1 unchanged"
            );
            let ads = lines.iter().position(|l| l.contains("name: ads")).unwrap();
            let cart = lines.iter().position(|l| l.contains("name: cart")).unwrap();
            let comment_above = |at: usize| {
                (0..at).rev().find(|&i| lines[i].starts_with("  - ")).map(|i| lines[i - 1])
            };
            assert_eq!(
                comment_above(ads + 1),
                Some("  # not seen since 2026-11-24T12:00:00Z: last seen 2026-11-24T11:00:00Z"),
                "{yaml}"
            );
            assert_eq!(
                comment_above(cart + 1),
                Some("  # added: first seen 2026-11-24T12:30:00Z"),
                "{yaml}"
            );
            // Without the comments it is the plain export.
            let plain: String = yaml
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .map(|l| format!("{l}\n"))
                .collect();
            assert_eq!(plain, intents::to_yaml(&intents::client_intents(&edges, version)));
        }
    }
}
