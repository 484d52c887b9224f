//! Request routing: which part of the server answers a method and path.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use tracing::debug;

use super::logs::{log_path, pod_log};
use super::patch::patch;
use super::reads::{get, list, watch};
use super::responses::{method_not_allowed, status};
use super::reviews;
use super::selection::Selection;
use super::store::{Gvr, ResourceType, Shared, Store};
use super::writes::{create, remove, replace};

/// A request's query parameters.
pub(super) type Params = HashMap<String, String>;

/// Every request: counted, then answered by the part of the server its method and path name.
pub(super) async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    debug!(%method, %uri, "stand-in Kubernetes API server request");
    let path = uri.path().to_owned();
    *shared.store().requests.entry(path.clone()).or_default() += 1;
    let params: Params = match Query::try_from_uri(&uri) {
        Ok(Query(params)) => params,
        Err(err) => {
            return status(StatusCode::BAD_REQUEST, "BadRequest", format!("invalid query: {err}"))
        }
    };
    if path == "/apis/authentication.k8s.io/v1/tokenreviews" {
        return match method {
            Method::POST => reviews::token_review(&shared, &body),
            _ => method_not_allowed(&method),
        };
    }
    if path == "/apis/authorization.k8s.io/v1/subjectaccessreviews" {
        return match method {
            Method::POST => reviews::subject_access_review(&shared, &body),
            _ => method_not_allowed(&method),
        };
    }
    if let Some((namespace, pod)) = log_path(&path) {
        return match method {
            Method::GET => pod_log(&shared, namespace, pod, &params),
            _ => method_not_allowed(&method),
        };
    }
    let Some(target) = parse_target(&shared.store(), &path) else {
        return status(
            StatusCode::NOT_FOUND,
            "NotFound",
            "the server could not find the requested resource".into(),
        );
    };
    if method != Method::GET && params.contains_key("dryRun") {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the stand-in API server does not support dryRun".into(),
        );
    }
    // Both `as=PartialObjectMetadata` and `as=PartialObjectMetadataList`.
    let metadata_only = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("as=PartialObjectMetadata"));
    // A namespaced type's all-namespaces path (`/api/v1/configmaps`) only lists and watches.
    let collection = target.namespace.is_some() || !target.ty.namespaced;
    let selection = match Selection::new(target.ty, target.namespace, &params, metadata_only) {
        Ok(selection) => selection,
        Err(message) => return status(StatusCode::BAD_REQUEST, "BadRequest", message),
    };
    let result = match (&method, target.name) {
        (&Method::GET, Some(name)) => Ok(get(&shared, &selection, &name)),
        (&Method::GET, None)
            if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) =>
        {
            Ok(watch(&shared, selection, &params))
        }
        (&Method::GET, None) => Ok(list(&shared, &selection, &params)),
        (&Method::POST, None) if collection => create(&shared, &selection, &body),
        (&Method::PUT, Some(name)) => replace(&shared, &selection, &name, &body),
        (&Method::PATCH, Some(name)) => patch(&shared, &selection, &name, &headers, &body),
        (&Method::DELETE, Some(name)) => remove(&shared, &selection, &name, &body),
        _ => Ok(method_not_allowed(&method)),
    };
    result.unwrap_or_else(IntoResponse::into_response)
}

struct Target {
    ty: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
}

/// `/api/v1/...` or `/apis/{group}/{version}/...`, then `{plural}[/{name}]` or
/// `namespaces/{ns}/{plural}[/{name}]`, checked against the resource's scope.
fn parse_target(store: &Store, path: &str) -> Option<Target> {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segments.as_slice() {
        ["api", version, rest @ ..] => ("", *version, rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return None,
    };
    let lookup = |plural: &str| {
        store
            .types
            .get(&Gvr { group: group.into(), version: version.into(), plural: plural.into() })
            .cloned()
    };
    let (ty, namespace, name) = match rest {
        ["namespaces", ns, plural, name @ ..] if name.len() <= 1 => {
            (lookup(plural).filter(|t| t.namespaced)?, Some(ns.to_string()), name.first())
        }
        [plural] => (lookup(plural)?, None, None),
        [plural, name] => (lookup(plural).filter(|t| !t.namespaced)?, None, Some(name)),
        _ => return None,
    };
    if namespace.as_deref() == Some("") || name.is_some_and(|n| n.is_empty()) {
        return None;
    }
    Some(Target { ty, namespace, name: name.map(|n| n.to_string()) })
}
