//! POST, PUT and DELETE, and what PATCH shares with PUT: admitting a written object, keeping
//! what the server owns, and checking preconditions.

use axum::http::StatusCode;
use serde_json::{json, Map, Value};

use super::responses::{
    already_exists, bad_request, conflict, invalid, json_response, not_found, Refusal, Reply,
};
use super::selection::Selection;
use super::store::Shared;

pub(super) fn create(shared: &Shared, selection: &Selection, body: &[u8]) -> Reply {
    let mut obj = decode_object(body)?;
    let name = admit(selection, &mut obj, None)?;
    let meta = metadata_mut(&mut obj);
    meta.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
    meta.insert(
        "creationTimestamp".into(),
        chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true).into(),
    );
    for server_set in ["resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"] {
        meta.remove(server_set);
    }
    let (rv, stored) = {
        let mut store = shared.store();
        let key = selection.key(&name);
        if store.object(&selection.ty.gvr, &key).is_some() {
            return Err(already_exists(selection, &name));
        }
        store.put(&selection.ty.gvr, key, Value::Object(obj))
    };
    shared.changes.send_replace(rv);
    Ok(json_response(StatusCode::CREATED, &selection.render(&stored)))
}

pub(super) fn replace(shared: &Shared, selection: &Selection, name: &str, body: &[u8]) -> Reply {
    let obj = decode_object(body)?;
    update(shared, selection, name, |_| Ok(Value::Object(obj)))
}

/// Replaces the stored object `name` with what `change` makes of it, as PUT and PATCH do: the
/// name, namespace, `uid` and `creationTimestamp` stay, and a `resourceVersion` in the new
/// object must be the stored one.
pub(super) fn update(
    shared: &Shared,
    selection: &Selection,
    name: &str,
    change: impl FnOnce(&Value) -> Result<Value, Refusal>,
) -> Reply {
    let (rv, stored) = {
        let mut store = shared.store();
        let key = selection.key(name);
        let current = store
            .object(&selection.ty.gvr, &key)
            .cloned()
            .ok_or_else(|| not_found(selection, name))?;
        let Value::Object(mut obj) = change(&current)? else {
            return Err(bad_request("the object is not a JSON object"));
        };
        admit(selection, &mut obj, Some(name))?;
        let meta = metadata_mut(&mut obj);
        let stored_meta = &current["metadata"];
        check_preconditions(
            selection,
            name,
            stored_meta,
            text(meta, "uid"),
            text(meta, "resourceVersion"),
            false,
        )?;
        for kept in ["uid", "creationTimestamp"] {
            match stored_meta.get(kept) {
                Some(value) => meta.insert(kept.into(), value.clone()),
                None => meta.remove(kept),
            };
        }
        store.put(&selection.ty.gvr, key, Value::Object(obj))
    };
    shared.changes.send_replace(rv);
    Ok(json_response(StatusCode::OK, &selection.render(&stored)))
}

/// DELETE: removes the object at once (no finalizers, no grace period) and answers with it,
/// as the real server does for pods. `DeleteOptions.preconditions` are checked.
pub(super) fn remove(shared: &Shared, selection: &Selection, name: &str, body: &[u8]) -> Reply {
    let options =
        if body.iter().all(u8::is_ascii_whitespace) { Map::new() } else { decode_object(body)? };
    let preconditions =
        options.get("preconditions").and_then(Value::as_object).cloned().unwrap_or_default();
    let (rv, deleted) = {
        let mut store = shared.store();
        let key = selection.key(name);
        let current =
            store.object(&selection.ty.gvr, &key).ok_or_else(|| not_found(selection, name))?;
        check_preconditions(
            selection,
            name,
            &current["metadata"],
            text(&preconditions, "uid"),
            text(&preconditions, "resourceVersion"),
            true,
        )?;
        store.delete(&selection.ty.gvr, key.0, key.1).expect("the object was just found")
    };
    shared.changes.send_replace(rv);
    Ok(json_response(StatusCode::OK, &selection.render(&deleted)))
}

/// Checks a writer's expected `uid` and `resourceVersion` against the stored metadata.
fn check_preconditions(
    selection: &Selection,
    name: &str,
    stored: &Value,
    uid: Option<String>,
    resource_version: Option<String>,
    deleting: bool,
) -> Result<(), Refusal> {
    let stored_field =
        |field: &str| stored.get(field).and_then(Value::as_str).unwrap_or_default().to_owned();
    if let Some(uid) = uid.filter(|uid| *uid != stored_field("uid")) {
        return Err(conflict(
            selection,
            name,
            format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                stored_field("uid")
            ),
        ));
    }
    if let Some(rv) = resource_version.filter(|rv| *rv != stored_field("resourceVersion")) {
        let detail = if deleting {
            format!("Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}", stored_field("resourceVersion"))
        } else {
            "the object has been modified; please apply your changes to the latest version and try again".to_owned()
        };
        return Err(conflict(selection, name, detail));
    }
    Ok(())
}

fn decode_object(body: &[u8]) -> Result<Map<String, Value>, Refusal> {
    match serde_json::from_slice(body) {
        Ok(Value::Object(obj)) => Ok(obj),
        Ok(_) => Err(bad_request("the body is not a JSON object")),
        Err(err) => Err(bad_request(format!("the body is not JSON: {err}"))),
    }
}

/// Checks a written object against the request's type, namespace and (for PUT and PATCH) the
/// name in the URL; fills in `apiVersion`, `kind`, the namespace and, for `generateName`, the
/// name; returns the name.
fn admit(
    selection: &Selection,
    obj: &mut Map<String, Value>,
    url_name: Option<&str>,
) -> Result<String, Refusal> {
    let ty = &selection.ty;
    for (field, expected) in [("apiVersion", ty.gvr.api_version()), ("kind", ty.kind.clone())] {
        match obj.get(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(given)) if given.is_empty() || *given == expected => {}
            Some(given) => return Err(bad_request(format!("the {field} of the object ({given}) does not match the expected {field} ({expected})"))),
        }
        obj.insert(field.into(), expected.into());
    }
    let meta = obj.entry("metadata").or_insert_with(|| json!({}));
    if meta.is_null() {
        *meta = json!({});
    }
    let Value::Object(meta) = meta else {
        return Err(bad_request("metadata is not a JSON object"));
    };
    match (&selection.namespace, text(meta, "namespace")) {
        (Some(url), Some(given)) if *url != given => {
            return Err(bad_request("the namespace of the provided object does not match the namespace sent on the request"));
        }
        (Some(url), _) => {
            meta.insert("namespace".into(), url.clone().into());
        }
        (None, _) => {
            meta.remove("namespace");
        }
    }
    let name = match (url_name, text(meta, "name")) {
        (Some(url), Some(given)) if url != given => {
            return Err(bad_request(format!(
                "the name of the object ({given}) does not match the name on the URL ({url})"
            )))
        }
        (Some(url), _) => url.to_owned(),
        (None, Some(given)) => given,
        (None, None) => match text(meta, "generateName") {
            Some(prefix) => format!("{prefix}{}", &uuid::Uuid::new_v4().simple().to_string()[..5]),
            None => {
                return Err(invalid(
                    selection,
                    "",
                    "metadata.name: Required value: name or generateName is required",
                ))
            }
        },
    };
    meta.insert("name".into(), name.clone().into());
    Ok(name)
}

/// The metadata of an object that went through [`admit`].
fn metadata_mut(obj: &mut Map<String, Value>) -> &mut Map<String, Value> {
    obj.get_mut("metadata").and_then(Value::as_object_mut).expect("admit makes metadata an object")
}

/// A non-empty string field.
fn text(obj: &Map<String, Value>, field: &str) -> Option<String> {
    obj.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}
