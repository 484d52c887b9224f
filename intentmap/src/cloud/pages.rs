//! The access graph read in pages (`limit=`, `after=`) and put back together as the one graph
//! an unpaged read returns: nodes by id, edges in the server's order, per-cluster counts and
//! `changes` summed. Pages hold whole clients, so no edge of the graph spans two of them.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use serde_json::{Map, Value};

/// Collects pages of one read; [`Pages::finish`] gives the whole graph.
#[derive(Default)]
pub struct Pages {
    pages: usize,
    clusters: Vec<(String, u64)>,
    nodes: BTreeMap<String, Value>,
    edges: Vec<((String, String, String), Value)>,
    changes: Option<Map<String, Value>>,
}

/// The counts of a `changes` summary, summed across pages.
const CHANGE_COUNTS: [&str; 3] = ["new", "seen", "gone"];

impl Pages {
    /// Adds one page; returns the `after=` of the next, if there is one.
    pub fn add(&mut self, page: Value) -> anyhow::Result<Option<String>> {
        let Value::Object(mut page) = page else { bail!("a page of the graph is not an object") };
        let next = match page.remove("next") {
            Some(Value::String(next)) => Some(next),
            Some(_) => bail!("a page's `next` is not a string"),
            None => None,
        };
        let list = |page: &mut Map<String, Value>, key: &str| match page.remove(key) {
            Some(Value::Array(items)) => Ok(items),
            _ => Err(anyhow::anyhow!("a page of the graph has no `{key}` list")),
        };
        for cluster in list(&mut page, "clusters")? {
            let name = cluster["name"].as_str().context("a cluster without a name")?;
            let edges = cluster["edges"].as_u64().unwrap_or(0);
            match self.clusters.iter_mut().find(|(n, _)| n == name) {
                Some((_, count)) => *count += edges,
                None => self.clusters.push((name.to_owned(), edges)),
            }
        }
        for node in list(&mut page, "nodes")? {
            let id = node["id"].as_str().context("a node without an id")?.to_owned();
            self.nodes.insert(id, node);
        }
        for edge in list(&mut page, "edges")? {
            let part = |k: &str| edge[k].as_str().unwrap_or_default().to_owned();
            self.edges.push(((part("source"), part("target"), part("observed_in")), edge));
        }
        if let Some(Value::Object(changes)) = page.remove("changes") {
            match &mut self.changes {
                None => self.changes = Some(changes),
                Some(sum) => {
                    for key in CHANGE_COUNTS {
                        let add = changes.get(key).and_then(Value::as_u64).unwrap_or(0);
                        let was = sum.get(key).and_then(Value::as_u64).unwrap_or(0);
                        sum.insert(key.into(), (was + add).into());
                    }
                }
            }
        }
        self.pages += 1;
        Ok(next)
    }

    /// How many pages were added.
    pub fn count(&self) -> usize {
        self.pages
    }

    /// The whole graph, as one unpaged read returns it.
    pub fn finish(mut self) -> Value {
        self.edges.sort_by(|a, b| a.0.cmp(&b.0));
        let mut graph = Map::new();
        let clusters = self
            .clusters
            .into_iter()
            .map(|(name, edges)| serde_json::json!({"name": name, "edges": edges}))
            .collect();
        graph.insert("clusters".into(), Value::Array(clusters));
        graph.insert("nodes".into(), Value::Array(self.nodes.into_values().collect()));
        graph.insert("edges".into(), Value::Array(self.edges.into_iter().map(|e| e.1).collect()));
        if let Some(changes) = self.changes {
            graph.insert("changes".into(), Value::Object(changes));
        }
        Value::Object(graph)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn edge(source: &str, target: &str) -> Value {
        json!({"source": source, "target": target, "observed_in": "us", "connections": 1})
    }

    #[test]
    fn pages_merge_into_the_unpaged_graph() {
        let mut pages = Pages::default();
        let first = json!({
            "clusters": [{"name": "eu", "edges": 0}, {"name": "us", "edges": 2}],
            "nodes": [{"id": "us/b/x"}, {"id": "us/a/y"}],
            "edges": [edge("us/b/x", "us/a/y"), edge("us/a/y", "us/a/y")],
            "changes": {"since": "2026-11-01T00:00:00Z", "new": 1, "seen": 1, "gone": 0},
            "next": "cursor",
        });
        assert_eq!(pages.add(first).unwrap().as_deref(), Some("cursor"));
        let last = json!({
            "clusters": [{"name": "eu", "edges": 0}, {"name": "us", "edges": 1}],
            "nodes": [{"id": "us/a/y"}, {"id": "us/c/z"}],
            "edges": [edge("us/c/z", "us/a/y")],
            "changes": {"since": "2026-11-01T00:00:00Z", "new": 0, "seen": 0, "gone": 1},
        });
        assert_eq!(pages.add(last).unwrap(), None);
        assert_eq!(pages.count(), 2);
        assert_eq!(
            pages.finish(),
            json!({
                "clusters": [{"name": "eu", "edges": 0}, {"name": "us", "edges": 3}],
                "nodes": [{"id": "us/a/y"}, {"id": "us/b/x"}, {"id": "us/c/z"}],
                "edges": [edge("us/a/y", "us/a/y"), edge("us/b/x", "us/a/y"), edge("us/c/z", "us/a/y")],
                "changes": {"since": "2026-11-01T00:00:00Z", "new": 1, "seen": 1, "gone": 1},
            })
        );
    }

    #[test]
    fn a_page_that_is_not_a_graph_is_an_error() {
        assert!(Pages::default().add(json!([])).is_err());
        assert!(Pages::default().add(json!({"clusters": [], "nodes": []})).is_err());
        assert!(Pages::default()
            .add(json!({"clusters": [], "nodes": [], "edges": [], "next": 5}))
            .is_err());
    }
}
