//! Reading what an admission webhook answered.

use base64::Engine as _;
use serde_json::Value;

/// The JSON Patch operations (RFC 6902) of an `AdmissionReview` answer: its `response.patch`,
/// base64 of a JSON array. Panics saying what is missing when the answer has no such patch.
pub fn patch_operations(answer: &Value) -> Vec<Value> {
    let encoded = answer["response"]["patch"]
        .as_str()
        .unwrap_or_else(|| panic!("no base64 patch in the answer: {answer}"));
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .unwrap_or_else(|e| panic!("the patch is not base64 ({e}): {encoded}"));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| {
        panic!("the patch is not a JSON array ({e}): {}", String::from_utf8_lossy(&bytes))
    })
}

/// The operation of the answer's patch on `path` (`/spec/dnsConfig`); panics when there is none.
pub fn patch_operation(answer: &Value, path: &str) -> Value {
    patch_operations(answer)
        .into_iter()
        .find(|op| op["path"] == path)
        .unwrap_or_else(|| panic!("the patch sets nothing at {path}: {answer}"))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn answer(patch: &Value) -> Value {
        let encoded = base64::engine::general_purpose::STANDARD.encode(patch.to_string());
        json!({"response": {"uid": "1", "allowed": true, "patchType": "JSONPatch", "patch": encoded}})
    }

    #[test]
    fn the_operation_on_a_path_is_found_in_the_decoded_patch() {
        let patch = json!([
            {"op": "add", "path": "/metadata/labels", "value": {"a": "b"}},
            {"op": "add", "path": "/spec/dnsConfig", "value": {"nameservers": ["10.96.0.53"]}},
        ]);
        let op = patch_operation(&answer(&patch), "/spec/dnsConfig");
        assert_eq!(op["value"]["nameservers"], json!(["10.96.0.53"]));
        assert_eq!(patch_operations(&answer(&patch)).len(), 2);
    }

    #[test]
    #[should_panic(expected = "the patch sets nothing at /spec/volumes")]
    fn a_path_the_patch_does_not_touch_fails_the_test() {
        patch_operation(&answer(&json!([])), "/spec/volumes");
    }

    #[test]
    #[should_panic(expected = "no base64 patch")]
    fn an_answer_without_a_patch_fails_the_test() {
        patch_operations(&json!({"response": {"allowed": true}}));
    }
}
