//! Kubernetes `Status` answers: the refusals every part of the server gives, and JSON replies.

use axum::http::{header, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::selection::Selection;

/// A request's answer, or why it is refused.
pub(super) type Reply = Result<Response, Refusal>;

/// A refused request: answered with a Kubernetes `Status`.
pub(super) struct Refusal {
    code: StatusCode,
    body: Value,
}

impl Refusal {
    pub(super) fn new(code: StatusCode, reason: &str, message: String) -> Self {
        Self { code, body: status_body(code, reason, message) }
    }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        json_response(self.code, &self.body)
    }
}

/// `configmaps` or `deployments.apps`, as Kubernetes names a resource in messages.
fn qualified_resource(selection: &Selection) -> String {
    let gvr = &selection.ty.gvr;
    if gvr.group.is_empty() {
        gvr.plural.clone()
    } else {
        format!("{}.{}", gvr.plural, gvr.group)
    }
}

fn status_with_details(
    selection: &Selection,
    name: &str,
    code: StatusCode,
    reason: &str,
    message: String,
) -> Refusal {
    let mut refusal = Refusal::new(code, reason, message);
    refusal.body["details"] =
        json!({"name": name, "group": selection.ty.gvr.group, "kind": selection.ty.gvr.plural});
    refusal
}

pub(super) fn not_found(selection: &Selection, name: &str) -> Refusal {
    status_with_details(
        selection,
        name,
        StatusCode::NOT_FOUND,
        "NotFound",
        format!("{} \"{name}\" not found", qualified_resource(selection)),
    )
}

pub(super) fn already_exists(selection: &Selection, name: &str) -> Refusal {
    status_with_details(
        selection,
        name,
        StatusCode::CONFLICT,
        "AlreadyExists",
        format!("{} \"{name}\" already exists", qualified_resource(selection)),
    )
}

pub(super) fn conflict(selection: &Selection, name: &str, detail: String) -> Refusal {
    let message = format!(
        "Operation cannot be fulfilled on {} \"{name}\": {detail}",
        qualified_resource(selection)
    );
    status_with_details(selection, name, StatusCode::CONFLICT, "Conflict", message)
}

pub(super) fn invalid(selection: &Selection, name: &str, detail: &str) -> Refusal {
    let message = format!("{} \"{name}\" is invalid: {detail}", qualified_resource(selection));
    status_with_details(selection, name, StatusCode::UNPROCESSABLE_ENTITY, "Invalid", message)
}

pub(super) fn bad_request(message: impl Into<String>) -> Refusal {
    Refusal::new(StatusCode::BAD_REQUEST, "BadRequest", message.into())
}

pub(super) fn method_not_allowed(method: &Method) -> Response {
    status(
        StatusCode::METHOD_NOT_ALLOWED,
        "MethodNotAllowed",
        format!("the stand-in API server does not serve {method} here"),
    )
}

pub(super) fn status_body(code: StatusCode, reason: &str, message: String) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Status",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code.as_u16(),
    })
}

pub(super) fn status(code: StatusCode, reason: &str, message: String) -> Response {
    json_response(code, &status_body(code, reason, message))
}

pub(super) fn json_response(code: StatusCode, body: &Value) -> Response {
    (code, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
