//! What `intentmap export` writes: ClientIntents documents as YAML, or as JSON the way
//! Otterize's CLI writes them.

use model::intents;
use serde_json::{json, Value};

/// The output formats of `export`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    #[default]
    Yaml,
    Json,
}

/// Renders the documents in `format`.
///
/// JSON is an array of the documents as Otterize's `network-mapper export --format json`
/// writes them (and its CI diffs them): each with `metadata.creationTimestamp: null` and
/// `status: {upToDate: false, observedGeneration: 0}`, which is how a Go client marshals an
/// object that was never stored. `kubectl apply` accepts both (the API server sets the creation
/// time, and the CRD's status subresource ignores a `status` given to an apply), and the
/// operator reads an unreconciled document as not up to date either way. YAML leaves them out:
/// it is what people read and edit.
pub fn render(docs: &[Value], format: Format) -> String {
    match format {
        Format::Yaml => intents::to_yaml(docs),
        Format::Json => {
            let docs: Vec<Value> = docs.iter().map(as_otterize_writes).collect();
            intents::to_json(&docs)
        }
    }
}

fn as_otterize_writes(doc: &Value) -> Value {
    let mut doc = doc.clone();
    if let Some(metadata) = doc.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.entry("creationTimestamp").or_insert(Value::Null);
    }
    if let Some(object) = doc.as_object_mut() {
        object.entry("status").or_insert(json!({ "upToDate": false, "observedGeneration": 0 }));
    }
    doc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_carries_what_a_go_client_writes_and_yaml_does_not() {
        let doc = json!({"apiVersion": "k8s.otterize.com/v2beta1", "kind": "ClientIntents",
            "metadata": {"name": "a", "namespace": "b"}, "spec": {"workload": {"name": "a"}, "targets": []}});
        let parsed: Vec<Value> =
            serde_json::from_str(&render(std::slice::from_ref(&doc), Format::Json)).unwrap();
        assert_eq!(parsed[0]["metadata"]["creationTimestamp"], Value::Null);
        assert!(parsed[0]["metadata"].as_object().unwrap().contains_key("creationTimestamp"));
        assert_eq!(parsed[0]["status"], json!({"upToDate": false, "observedGeneration": 0}));
        let yaml = render(&[doc], Format::Yaml);
        assert!(!yaml.contains("status") && !yaml.contains("creationTimestamp"), "{yaml}");
    }
}
