//! The `list` / `export` filters: by client namespace, by server, and excluding clients by label.

use std::collections::HashSet;
use std::str::FromStr;

use model::{Edge, Target};

use crate::index::Index;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    #[error("{0:?} is not a server as name.namespace (for example cartservice.shop)")]
    Server(String),
    #[error("{0:?} is not a label as key=value or key (for example app=loadgenerator)")]
    Label(String),
}

/// `--server name.namespace`: a workload or Service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSelector {
    pub namespace: String,
    pub name: String,
}

impl FromStr for ServerSelector {
    type Err = FilterError;

    /// Namespaces have no dots, names may: the namespace follows the last dot.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let trimmed = s.trim();
        match trimmed.rsplit_once('.') {
            Some((name, namespace)) if !name.is_empty() && !namespace.is_empty() => {
                Ok(Self { namespace: namespace.to_owned(), name: name.to_owned() })
            }
            _ => Err(FilterError::Server(s.to_owned())),
        }
    }
}

/// `--exclude-labels key=value` (or `key`, for any value).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelSelector {
    pub key: String,
    pub value: Option<String>,
}

impl FromStr for LabelSelector {
    type Err = FilterError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (key, value) = match s.trim().split_once('=') {
            Some((key, value)) => (key.trim(), Some(value.trim().to_owned())),
            None => (s.trim(), None),
        };
        if key.is_empty() || key.contains(char::is_whitespace) {
            return Err(FilterError::Label(s.to_owned()));
        }
        Ok(Self { key: key.to_owned(), value })
    }
}

/// Which edges to show. An empty filter keeps everything.
///
/// The filters select **clients**, and a selected client keeps every call it makes: a
/// ClientIntents document lists all of a client's targets, and the intents operator keys
/// documents by name, so applying one that lists only some of them would take the others'
/// access away. `--server` therefore selects the clients that call that server (as Otterize's
/// mapper does), not only their calls to it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeFilter {
    /// Keep clients in one of these namespaces.
    pub namespaces: Vec<String>,
    /// Keep clients that call this workload or Service (with all their calls).
    pub server: Option<ServerSelector>,
    /// Leave out clients whose workload has a live pod with one of these labels.
    pub exclude_labels: Vec<LabelSelector>,
}

impl EdgeFilter {
    /// Whether the client of `edge` is one the namespace and label filters keep.
    fn keeps_client(&self, edge: &Edge, index: &Index) -> bool {
        if !self.namespaces.is_empty() && !self.namespaces.contains(&edge.client.namespace) {
            return false;
        }
        !self.exclude_labels.iter().any(|label| {
            index.workload_has_pod_labelled(&edge.client, &label.key, label.value.as_deref())
        })
    }

    /// Whether `edge` calls the `--server` workload or Service (true without one).
    fn calls_server(&self, edge: &Edge) -> bool {
        let Some(server) = &self.server else { return true };
        let (namespace, name) = match &edge.target {
            Target::Kubernetes(w) | Target::Kafka(w) => (&w.namespace, &w.name),
            Target::Service(s) => (&s.namespace, &s.name),
            Target::Internet(_) | Target::Aws(_) | Target::Incoming(_) => return false,
        };
        *namespace == server.namespace && *name == server.name
    }

    /// The edges of every client the filter selects, all of each client's calls included.
    pub fn apply(&self, edges: &[Edge], index: &Index) -> Vec<Edge> {
        let callers: HashSet<(&str, &str)> = edges
            .iter()
            .filter(|e| self.calls_server(e))
            .map(|e| (e.client.namespace.as_str(), e.client.name.as_str()))
            .collect();
        edges
            .iter()
            .filter(|e| callers.contains(&(e.client.namespace.as_str(), e.client.name.as_str())))
            .filter(|e| self.keeps_client(e, index))
            .cloned()
            .collect()
    }
}

/// At most this many values of the `--distinct-by-label` key per workload, and this many
/// Services per workload, are reported: a workload's pods rarely carry more than a few values
/// of one label (a rollout, a canary), and the answer stays bounded whatever the pods carry.
pub const MAX_FACTS_PER_WORKLOAD: usize = 16;

/// The longest label key Kubernetes accepts: a DNS-subdomain prefix (253), `/`, a name (63).
pub const MAX_LABEL_KEY_LEN: usize = 317;

/// Whether `key` is a Kubernetes label key: `[prefix/]name`, the name at most 63 characters of
/// letters, digits, `-`, `_`, `.` beginning and ending with a letter or digit, the prefix a
/// DNS subdomain (lower-case).
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part.len() <= 63
                    && !part.starts_with('-')
                    && !part.ends_with('-')
                    && part
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            })
    });
    name_ok && prefix_ok
}

/// What the mapper knows about one workload of the edges, for the CLI's
/// `--distinct-by-label` and `--as-kubernetes-service`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadFacts {
    pub namespace: String,
    pub name: String,
    /// The values of the asked label on the workload's pods the index holds, sorted, at most
    /// [`MAX_FACTS_PER_WORKLOAD`] (empty: no pod carries it, or no pod is known).
    pub label_values: Vec<String>,
    /// More values than [`MAX_FACTS_PER_WORKLOAD`] were left out.
    pub more_label_values: bool,
    /// The Services (in the workload's namespace) whose backends include the workload, sorted,
    /// at most [`MAX_FACTS_PER_WORKLOAD`]; the API server's `kubernetes` Service is left out.
    pub services: Vec<String>,
}

/// The facts about every client of `edges` (the values of `label`, when asked) and every
/// in-cluster workload target (its Services, when `services`), one entry per workload,
/// sorted by namespace, then name.
pub fn workload_facts(
    edges: &[Edge],
    index: &Index,
    label: Option<&str>,
    services: bool,
) -> Vec<WorkloadFacts> {
    let mut facts: std::collections::BTreeMap<(&str, &str), WorkloadFacts> = Default::default();
    let entry = |namespace: &str, name: &str| WorkloadFacts {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        ..Default::default()
    };
    if let Some(key) = label {
        for e in edges {
            let (namespace, name) = (e.client.namespace.as_str(), e.client.name.as_str());
            if facts.contains_key(&(namespace, name)) {
                continue;
            }
            let mut values: Vec<&str> = index
                .pods
                .in_namespace(namespace)
                .filter(|(_, pod)| *pod.workload.name == *name)
                .filter_map(|(_, pod)| pod.labels.get(key))
                .collect();
            values.sort_unstable();
            values.dedup();
            let mut f = entry(namespace, name);
            f.more_label_values = values.len() > MAX_FACTS_PER_WORKLOAD;
            f.label_values =
                values.into_iter().take(MAX_FACTS_PER_WORKLOAD).map(str::to_owned).collect();
            facts.insert((namespace, name), f);
        }
    }
    if services {
        for e in edges {
            let (Target::Kubernetes(w) | Target::Kafka(w)) = &e.target else { continue };
            let found = facts
                .entry((&w.namespace, &w.name))
                .or_insert_with(|| entry(&w.namespace, &w.name));
            if !found.services.is_empty() {
                continue;
            }
            let mut names: Vec<&str> = index
                .services
                .in_namespace(&w.namespace)
                .filter(|(service, _)| !(w.namespace == "default" && &***service == "kubernetes"))
                .filter(|(_, record)| record.backends.iter().any(|b| *b.name == *w.name))
                .map(|(service, _)| &**service)
                .collect();
            names.sort_unstable();
            found.services =
                names.into_iter().take(MAX_FACTS_PER_WORKLOAD).map(str::to_owned).collect();
        }
    }
    facts.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_are_checked_as_kubernetes_does() {
        for key in ["track", "app.kubernetes.io/version", "a_b.c-d", "x/Y9"] {
            assert!(is_label_key(key), "{key}");
        }
        for key in ["", "-track", "track-", "a b", "/x", "Example.com/x", "x/", &"a".repeat(64)] {
            assert!(!is_label_key(key), "{key}");
        }
    }

    #[test]
    fn workload_facts_give_label_values_and_services() {
        use crate::fixtures::*;
        use model::WorkloadRef;

        let mut index = Index::default();
        index.apply_meta("Deployment", &mk_deployment("shop", "api"));
        index.apply_meta("ReplicaSet", &mk_replicaset("shop", "api-7c9d", "api"));
        for (pod, ip, track) in [("a", "10.0.0.1", "stable"), ("b", "10.0.0.2", "canary")] {
            index.apply(
                &mk_pod("shop", &format!("api-7c9d-{pod}"), &[ip])
                    .owned_by("ReplicaSet", "api-7c9d")
                    .labelled("app", "api")
                    .labelled("track", track),
            );
        }
        // One pod per value beyond the cap: the answer stays bounded.
        for i in 0..MAX_FACTS_PER_WORKLOAD + 2 {
            index.apply(
                &mk_pod("shop", &format!("api-7c9d-x{i}"), &[&format!("10.0.1.{i}")])
                    .owned_by("ReplicaSet", "api-7c9d")
                    .labelled("app", "api")
                    .labelled("shard", &format!("s{i:02}")),
            );
        }
        index.apply(&mk_pod("shop", "db", &["10.0.0.3"]).labelled("app", "db"));
        index.apply(&mk_service("shop", "db", &["10.96.0.3"], &[("app", "db")]));
        index.apply(&mk_service("shop", "db-read", &["10.96.0.4"], &[("app", "db")]));
        let edge = |client: &str, target: &str| Edge {
            client: WorkloadRef::new("shop", client, None),
            target: Target::Kubernetes(WorkloadRef::new("shop", target, None)),
            ports: vec![],
            first_seen: chrono::Utc::now(),
            last_seen: chrono::Utc::now(),
            connections: 1,
            http: vec![],
            kafka: vec![],
            bytes: None,
        };
        let edges = [edge("api", "db"), edge("db", "api")];

        let facts = workload_facts(&edges, &index, Some("track"), true);
        let api = facts.iter().find(|f| f.name == "api").unwrap();
        assert_eq!(api.label_values, ["canary", "stable"]);
        assert!(api.services.is_empty());
        let db = facts.iter().find(|f| f.name == "db").unwrap();
        assert!(db.label_values.is_empty());
        assert_eq!(db.services, ["db", "db-read"]);

        let facts = workload_facts(&edges, &index, Some("shard"), false);
        let api = facts.iter().find(|f| f.name == "api").unwrap();
        assert_eq!(api.label_values.len(), MAX_FACTS_PER_WORKLOAD);
        assert!(api.more_label_values);
        assert!(facts.iter().all(|f| f.services.is_empty()));
        assert!(workload_facts(&edges, &index, None, false).is_empty());
    }

    #[test]
    fn selectors_parse_or_say_what_is_expected() {
        assert_eq!(
            "cartservice.shop".parse::<ServerSelector>(),
            Ok(ServerSelector { namespace: "shop".into(), name: "cartservice".into() })
        );
        assert_eq!("a.b.shop".parse::<ServerSelector>().map(|s| s.name), Ok("a.b".into()));
        assert!("cartservice"
            .parse::<ServerSelector>()
            .unwrap_err()
            .to_string()
            .contains("name.namespace"));
        assert_eq!(
            "app=web".parse::<LabelSelector>(),
            Ok(LabelSelector { key: "app".into(), value: Some("web".into()) })
        );
        assert_eq!(
            "canary".parse::<LabelSelector>(),
            Ok(LabelSelector { key: "canary".into(), value: None })
        );
        assert!("=x".parse::<LabelSelector>().is_err());
    }
}
