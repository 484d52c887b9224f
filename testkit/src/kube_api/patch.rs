//! PATCH: JSON merge patches (RFC 7386), JSON patches (RFC 6902), both applied with the
//! `json-patch` crate, and strategic merge patches, applied as JSON merge patches when they
//! carry no strategic directive.

use axum::http::{header, HeaderMap, StatusCode};
use serde_json::Value;

use super::responses::{bad_request, Refusal, Reply};
use super::selection::Selection;
use super::store::Shared;
use super::writes::update;

/// PATCH of the object `name`, by the request's `Content-Type`; the patched object is then
/// stored as a PUT of it would be.
pub(super) fn patch(
    shared: &Shared,
    selection: &Selection,
    name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Reply {
    let content_type =
        headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or_default();
    let media_type = content_type.split(';').next().unwrap_or_default().trim().to_ascii_lowercase();
    let strategic = match media_type.as_str() {
        "application/json-patch+json" | "application/merge-patch+json" => false,
        "application/strategic-merge-patch+json" => true,
        _ => {
            let message = format!(
                "the body of the request was in an unknown format ({content_type:?}) - the stand-in API server accepts application/json-patch+json, \
                 application/merge-patch+json and application/strategic-merge-patch+json"
            );
            return Err(Refusal::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UnsupportedMediaType",
                message,
            ));
        }
    };
    let patch: Value = serde_json::from_slice(body)
        .map_err(|err| bad_request(format!("the patch is not JSON: {err}")))?;
    if media_type == "application/json-patch+json" {
        return update(shared, selection, name, |current| {
            let mut doc = current.clone();
            apply_json_patch(&mut doc, &patch).map_err(|err| match err {
                JsonPatchError::Malformed(message) => bad_request(message),
                JsonPatchError::Failed(message) => {
                    Refusal::new(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
                }
            })?;
            Ok(doc)
        });
    }
    if !patch.is_object() {
        return Err(bad_request("a merge patch must be a JSON object"));
    }
    if let Some(directive) = strategic.then(|| strategic_directive(&patch)).flatten() {
        return Err(bad_request(format!("the stand-in API server applies strategic merge patches as JSON merge patches and cannot honour {directive:?}")));
    }
    update(shared, selection, name, |current| {
        let mut doc = current.clone();
        json_patch::merge(&mut doc, &patch);
        Ok(doc)
    })
}

/// The first strategic-merge directive (`$patch`, `$retainKeys`, `$setElementOrder/...`, ...)
/// in a patch; a JSON merge patch cannot honour them.
fn strategic_directive(patch: &Value) -> Option<String> {
    match patch {
        Value::Object(members) => members.iter().find_map(|(key, value)| {
            if key.starts_with('$') {
                Some(key.clone())
            } else {
                strategic_directive(value)
            }
        }),
        Value::Array(items) => items.iter().find_map(strategic_directive),
        _ => None,
    }
}

#[derive(Debug, PartialEq)]
enum JsonPatchError {
    /// The patch is not a list of RFC 6902 operations (400).
    Malformed(String),
    /// An operation cannot be applied to the object (422).
    Failed(String),
}

/// RFC 6902 JSON patch, all or nothing: `add`, `remove`, `replace`, `move`, `copy`, `test`.
fn apply_json_patch(doc: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let operations: json_patch::Patch = serde_json::from_value(patch.clone()).map_err(|err| {
        if only_pointers_invalid(patch) {
            JsonPatchError::Failed(format!("a path of the patch is not a JSON pointer: {err}"))
        } else {
            JsonPatchError::Malformed(format!(
                "the patch is not a list of RFC 6902 operations: {err}"
            ))
        }
    })?;
    // `json_patch::patch` undoes the operations it applied when a later one fails.
    json_patch::patch(doc, &operations).map_err(|err| JsonPatchError::Failed(err.to_string()))
}

/// Whether `patch` would be well-formed operations if its `path` and `from` strings were JSON
/// pointers: one that names no place in any object cannot apply (422) rather than being
/// malformed (400).
fn only_pointers_invalid(patch: &Value) -> bool {
    let mut repaired = patch.clone();
    for operation in repaired.as_array_mut().into_iter().flatten() {
        for field in ["path", "from"] {
            if let Some(pointer) = operation.get_mut(field).filter(|p| p.is_string()) {
                *pointer = Value::from("");
            }
        }
    }
    serde_json::from_value::<json_patch::Patch>(repaired).is_ok()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn patched(doc: Value, patch: Value) -> Result<Value, JsonPatchError> {
        let mut doc = doc;
        apply_json_patch(&mut doc, &patch).map(|()| doc)
    }

    #[test]
    fn json_patches_follow_rfc_6902() {
        let doc = json!({"foo": ["bar", "baz"], "a/b": 1, "m~n": 2});
        let ok = |patch: Value| patched(doc.clone(), patch).unwrap();
        assert_eq!(
            ok(json!([{"op": "add", "path": "/foo/1", "value": "qux"}]))["foo"],
            json!(["bar", "qux", "baz"])
        );
        assert_eq!(
            ok(json!([{"op": "add", "path": "/foo/-", "value": "end"}]))["foo"],
            json!(["bar", "baz", "end"])
        );
        assert_eq!(
            ok(json!([{"op": "add", "path": "/new", "value": {"x": 1}}]))["new"],
            json!({"x": 1})
        );
        assert_eq!(ok(json!([{"op": "replace", "path": "/a~1b", "value": 3}]))["a/b"], 3);
        assert_eq!(ok(json!([{"op": "remove", "path": "/m~0n"}])).get("m~n"), None);
        assert_eq!(ok(json!([{"op": "remove", "path": "/foo/0"}]))["foo"], json!(["baz"]));
        assert_eq!(ok(json!([{"op": "move", "from": "/foo/0", "path": "/first"}]))["first"], "bar");
        assert_eq!(
            ok(json!([{"op": "copy", "from": "/foo", "path": "/copy"}]))["copy"],
            json!(["bar", "baz"])
        );
        assert_eq!(ok(json!([{"op": "test", "path": "/foo/1", "value": "baz"}])), doc);
        assert_eq!(
            ok(json!([{"op": "replace", "path": "", "value": {"whole": true}}])),
            json!({"whole": true})
        );

        let failed =
            |patch: Value| matches!(patched(doc.clone(), patch), Err(JsonPatchError::Failed(_)));
        assert!(
            failed(json!([{"op": "add", "path": "/missing/x", "value": 1}])),
            "a missing parent"
        );
        assert!(failed(json!([{"op": "add", "path": "/foo/3", "value": 1}])), "past the end");
        assert!(failed(json!([{"op": "add", "path": "/foo/01", "value": 1}])), "a leading zero");
        assert!(
            failed(json!([{"op": "replace", "path": "/missing", "value": 1}])),
            "replace needs the path"
        );
        assert!(failed(json!([{"op": "remove", "path": "/foo/2"}])), "remove needs the element");
        assert!(failed(json!([{"op": "test", "path": "/foo/0", "value": "baz"}])), "a failed test");
        assert!(
            failed(json!([{"op": "move", "from": "/foo", "path": "/foo/0"}])),
            "a move into itself"
        );
        let malformed =
            |patch: Value| matches!(patched(doc.clone(), patch), Err(JsonPatchError::Malformed(_)));
        assert!(
            failed(json!([{"op": "add", "path": "no/slash", "value": 1}])),
            "not a JSON pointer"
        );
        assert!(malformed(json!({"op": "add"})), "not an array");
        assert!(malformed(json!([{"op": "frobnicate", "path": "/a"}])), "an unknown op");
        assert!(malformed(json!([{"op": "add", "path": "/a"}])), "add without a value");

        // All or nothing: a failing operation leaves the document as it was.
        let mut unchanged = doc.clone();
        let patch = json!([{"op": "add", "path": "/x", "value": 1}, {"op": "test", "path": "/x", "value": 2}]);
        assert!(apply_json_patch(&mut unchanged, &patch).is_err());
        assert_eq!(unchanged, doc);
    }

    #[test]
    fn merge_patches_follow_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}, "list": [1, 2]});
        json_patch::merge(
            &mut doc,
            &json!({"a": "z", "c": {"f": null}, "list": [3], "new": {"deep": 1}}),
        );
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}, "list": [3], "new": {"deep": 1}}));
        assert_eq!(
            strategic_directive(&json!({"spec": {"containers": [{"$patch": "delete"}]}}))
                .as_deref(),
            Some("$patch")
        );
        assert_eq!(strategic_directive(&json!({"spec": {"containers": [{"name": "a"}]}})), None);
    }
}
