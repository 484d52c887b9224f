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
            Target::Internet(_) | Target::Aws(_) => return false,
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

#[cfg(test)]
mod tests {
    use super::*;

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
