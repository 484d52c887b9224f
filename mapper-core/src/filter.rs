//! The `list` / `export` filters: by client namespace, by server, and excluding clients by label.

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
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeFilter {
    /// Keep edges whose client is in one of these namespaces.
    pub namespaces: Vec<String>,
    /// Keep edges whose target is this workload or Service.
    pub server: Option<ServerSelector>,
    /// Drop edges whose client workload has a live pod with one of these labels.
    pub exclude_labels: Vec<LabelSelector>,
}

impl EdgeFilter {
    pub fn matches(&self, edge: &Edge, index: &Index) -> bool {
        if !self.namespaces.is_empty() && !self.namespaces.contains(&edge.client.namespace) {
            return false;
        }
        if let Some(server) = &self.server {
            let (namespace, name) = match &edge.target {
                Target::Kubernetes(w) | Target::Kafka(w) => (&w.namespace, &w.name),
                Target::Service(s) => (&s.namespace, &s.name),
                Target::Internet(_) | Target::Aws(_) => return false,
            };
            if *namespace != server.namespace || *name != server.name {
                return false;
            }
        }
        !self.exclude_labels.iter().any(|label| {
            index.workload_has_pod_labelled(&edge.client, &label.key, label.value.as_deref())
        })
    }

    pub fn apply(&self, edges: &[Edge], index: &Index) -> Vec<Edge> {
        edges.iter().filter(|e| self.matches(e, index)).cloned().collect()
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
