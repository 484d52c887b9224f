//! What one request selects: its resource type and namespace, `labelSelector` and
//! `fieldSelector`, and whether it wants only metadata.

use serde_json::{json, Map, Value};

use super::routing::Params;
use super::store::ResourceType;
use super::META_API_VERSION;

/// What one request selects: a resource type, a namespace (or all), selectors, and whether
/// only metadata is wanted.
pub(super) struct Selection {
    pub(super) ty: ResourceType,
    pub(super) namespace: Option<String>,
    labels: Vec<LabelRequirement>,
    fields: Vec<FieldRequirement>,
    pub(super) metadata_only: bool,
}

impl Selection {
    pub(super) fn new(
        ty: ResourceType,
        namespace: Option<String>,
        params: &Params,
        metadata_only: bool,
    ) -> Result<Self, String> {
        let labels = params
            .get("labelSelector")
            .map(|s| parse_label_selector(s))
            .transpose()?
            .unwrap_or_default();
        let fields = params
            .get("fieldSelector")
            .map(|s| parse_field_selector(s))
            .transpose()?
            .unwrap_or_default();
        Ok(Self { ty, namespace, labels, fields, metadata_only })
    }

    /// The store key of the object `name` in this selection's namespace.
    pub(super) fn key(&self, name: &str) -> (String, String) {
        (self.namespace.clone().unwrap_or_default(), name.to_owned())
    }

    pub(super) fn in_namespace(&self, namespace: &str) -> bool {
        self.namespace.as_deref().is_none_or(|ns| ns == namespace)
    }

    pub(super) fn matches(&self, obj: &Value) -> bool {
        let labels = obj["metadata"]["labels"].as_object();
        self.labels.iter().all(|req| req.matches(labels))
            && self.fields.iter().all(|req| req.matches(obj))
    }

    pub(super) fn render(&self, obj: &Value) -> Value {
        if self.metadata_only {
            json!({"apiVersion": META_API_VERSION, "kind": "PartialObjectMetadata", "metadata": obj["metadata"]})
        } else {
            obj.clone()
        }
    }
}

#[derive(Debug, PartialEq)]
enum LabelRequirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    DoesNotExist(String),
}

impl LabelRequirement {
    fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let value = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        match self {
            Self::Equals(k, v) => value(k) == Some(v.as_str()),
            Self::NotEquals(k, v) => value(k) != Some(v.as_str()),
            Self::In(k, vs) => value(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Self::NotIn(k, vs) => value(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Self::Exists(k) => value(k).is_some(),
            Self::DoesNotExist(k) => value(k).is_none(),
        }
    }
}

fn parse_label_selector(selector: &str) -> Result<Vec<LabelRequirement>, String> {
    let invalid = || format!("unable to parse requirement in labelSelector {selector:?}");
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or_else(invalid)?,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    let key = |k: &str| {
        Some(k.trim().to_owned()).filter(|k| !k.is_empty() && !k.contains(char::is_whitespace))
    };
    let mut requirements = Vec::new();
    for term in terms.into_iter().map(str::trim).filter(|t| !t.is_empty()) {
        let requirement = if let Some((head, tail)) = term.split_once('(') {
            let values: Vec<String> = tail
                .strip_suffix(')')
                .ok_or_else(invalid)?
                .split(',')
                .map(|v| v.trim().to_owned())
                .collect();
            let head = head.trim_end();
            if let Some(k) = head.strip_suffix(" notin") {
                LabelRequirement::NotIn(key(k).ok_or_else(invalid)?, values)
            } else if let Some(k) = head.strip_suffix(" in") {
                LabelRequirement::In(key(k).ok_or_else(invalid)?, values)
            } else {
                return Err(invalid());
            }
        } else if let Some((k, v)) = term.split_once("!=") {
            LabelRequirement::NotEquals(key(k).ok_or_else(invalid)?, v.trim().to_owned())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            LabelRequirement::Equals(key(k).ok_or_else(invalid)?, v.trim().to_owned())
        } else if let Some(k) = term.strip_prefix('!') {
            LabelRequirement::DoesNotExist(key(k).ok_or_else(invalid)?)
        } else {
            LabelRequirement::Exists(key(term).ok_or_else(invalid)?)
        };
        requirements.push(requirement);
    }
    Ok(requirements)
}

#[derive(Debug, PartialEq)]
struct FieldRequirement {
    path: Vec<String>,
    value: String,
    equal: bool,
}

impl FieldRequirement {
    fn matches(&self, obj: &Value) -> bool {
        let found = self.path.iter().try_fold(obj, |v, segment| v.get(segment));
        let actual = match found {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Null) | None => String::new(),
            Some(other) => other.to_string(),
        };
        (actual == self.value) == self.equal
    }
}

fn parse_field_selector(selector: &str) -> Result<Vec<FieldRequirement>, String> {
    let mut requirements = Vec::new();
    for term in selector.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
            (p, v, false)
        } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            (p, v, true)
        } else {
            return Err(format!(
                "invalid field selector term {term:?}: expected field=value or field!=value"
            ));
        };
        let path: Vec<String> = path.trim().split('.').map(str::to_owned).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("invalid field path in fieldSelector term {term:?}"));
        }
        requirements.push(FieldRequirement { path, value: value.trim().to_owned(), equal });
    }
    Ok(requirements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Map<String, Value> {
        pairs.iter().map(|(k, v)| (k.to_string(), Value::from(*v))).collect()
    }

    #[test]
    fn label_selectors_parse_and_match() {
        let reqs =
            parse_label_selector("app=web, tier in (front, edge),!canary,env!=prod,team").unwrap();
        assert_eq!(
            reqs,
            vec![
                LabelRequirement::Equals("app".into(), "web".into()),
                LabelRequirement::In("tier".into(), vec!["front".into(), "edge".into()]),
                LabelRequirement::DoesNotExist("canary".into()),
                LabelRequirement::NotEquals("env".into(), "prod".into()),
                LabelRequirement::Exists("team".into()),
            ]
        );
        let ok = labels(&[("app", "web"), ("tier", "edge"), ("team", "a")]);
        assert!(reqs.iter().all(|r| r.matches(Some(&ok))));
        let wrong_tier = labels(&[("app", "web"), ("tier", "back"), ("team", "a")]);
        assert!(!reqs.iter().all(|r| r.matches(Some(&wrong_tier))));
        assert!(LabelRequirement::NotIn("x".into(), vec!["a".into()]).matches(None));
        assert!(parse_label_selector("a in (b").is_err());
        assert!(parse_label_selector("a b").is_err());
        assert!(parse_label_selector("").unwrap().is_empty());
    }

    #[test]
    fn field_selectors_follow_dotted_paths() {
        let pod = json!({"metadata": {"name": "web-1", "namespace": "shop"}, "spec": {"nodeName": "node-a"}});
        let reqs = parse_field_selector("metadata.name=web-1,spec.nodeName!=node-b").unwrap();
        assert!(reqs.iter().all(|r| r.matches(&pod)));
        let reqs = parse_field_selector("metadata.namespace==other").unwrap();
        assert!(!reqs[0].matches(&pod));
        assert!(parse_field_selector("metadata.name").is_err());
    }
}
