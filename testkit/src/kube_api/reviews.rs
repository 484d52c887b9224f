//! TokenReview and SubjectAccessReview, as a real API server answers them for the tokens and
//! grants a test sets up.
//!
//! A TokenReview asks for audiences (`spec.audiences`, else the API server's own,
//! [`API_AUDIENCE`]); a token is authenticated when it is valid for one of them, and the answer
//! names those (`status.audiences`). A token set with [`super::FakeApiServer::set_token_review`]
//! is valid for any audience; one set with [`super::FakeApiServer::set_token_identity`] only for
//! its own (none given: the API server's, as a ServiceAccount's default token).

use std::collections::BTreeMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{json, Value};

use super::responses::{json_response, status};
use super::store::Shared;

/// The stand-in API server's own audience: what default ServiceAccount tokens are for.
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

/// Who a token authenticates as.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TokenIdentity {
    pub username: String,
    pub groups: Vec<String>,
    /// The token's audiences; empty for tokens of [`super::FakeApiServer::set_token_review`]
    /// (any audience), else only these.
    pub audiences: Vec<String>,
    /// `user.extra`, e.g. `authentication.kubernetes.io/node-name` of a projected token.
    pub extra: BTreeMap<String, Vec<String>>,
}

impl TokenIdentity {
    /// A projected token of ServiceAccount `namespace/name` for `audience`, bound to a pod
    /// (`pod_name`, `pod_uid`) and, when given, naming its node (Kubernetes ≥ 1.30).
    pub fn projected(
        namespace: &str,
        name: &str,
        audience: &str,
        pod: (&str, &str),
        node: Option<&str>,
    ) -> Self {
        let mut extra = BTreeMap::new();
        extra.insert("authentication.kubernetes.io/pod-name".to_owned(), vec![pod.0.to_owned()]);
        extra.insert("authentication.kubernetes.io/pod-uid".to_owned(), vec![pod.1.to_owned()]);
        if let Some(node) = node {
            extra
                .insert("authentication.kubernetes.io/node-name".to_owned(), vec![node.to_owned()]);
        }
        Self {
            username: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".to_owned(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_owned(),
            ],
            audiences: vec![audience.to_owned()],
            extra,
        }
    }
}

/// One allowed (user, verb, group, resource, namespace).
#[derive(Debug, Clone)]
pub(super) struct Grant {
    pub user: String,
    pub verb: String,
    pub group: String,
    pub resource: String,
    /// `None`: every namespace.
    pub namespace: Option<String>,
}

/// The review in the body, or the 400 to answer.
fn decode(body: &[u8], kind: &str) -> Result<Value, Box<Response>> {
    match serde_json::from_slice(body) {
        Ok(review @ Value::Object(_)) => Ok(review),
        _ => Err(Box::new(status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            format!("the body is not a {kind}"),
        ))),
    }
}

pub(super) fn token_review(shared: &Shared, body: &[u8]) -> Response {
    let review = match decode(body, "TokenReview") {
        Ok(review) => review,
        Err(refused) => return *refused,
    };
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let token = spec.get("token").and_then(Value::as_str).unwrap_or_default();
    let asked: Vec<String> = match spec.get("audiences").and_then(Value::as_array) {
        Some(audiences) if !audiences.is_empty() => {
            audiences.iter().filter_map(Value::as_str).map(str::to_owned).collect()
        }
        _ => vec![API_AUDIENCE.to_owned()],
    };
    let identity = shared.store().token_reviews.get(token).cloned().flatten();
    let status = match identity {
        Some(identity) => {
            let valid: Vec<String> = if identity.audiences.is_empty() {
                asked.clone()
            } else {
                asked.iter().filter(|a| identity.audiences.contains(a)).cloned().collect()
            };
            if valid.is_empty() {
                json!({"authenticated": false, "user": {}, "error": format!("token audiences {:?} is invalid for the target audiences {asked:?}", identity.audiences)})
            } else {
                json!({"authenticated": true, "audiences": valid,
                       "user": {"username": identity.username, "groups": identity.groups, "extra": identity.extra}})
            }
        }
        None => json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    };
    let body = json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenReview",
        "metadata": review.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": spec,
        "status": status,
    });
    json_response(StatusCode::CREATED, &body)
}

pub(super) fn subject_access_review(shared: &Shared, body: &[u8]) -> Response {
    let review = match decode(body, "SubjectAccessReview") {
        Ok(review) => review,
        Err(refused) => return *refused,
    };
    let spec = review.get("spec").cloned().unwrap_or_else(|| json!({}));
    let text = |v: &Value, field: &str| {
        v.get(field).and_then(Value::as_str).unwrap_or_default().to_owned()
    };
    let user = text(&spec, "user");
    let Some(attributes) = spec.get("resourceAttributes") else {
        return status(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "the stand-in API server reviews resourceAttributes only".into(),
        );
    };
    let (verb, group, resource, namespace) = (
        text(attributes, "verb"),
        text(attributes, "group"),
        text(attributes, "resource"),
        text(attributes, "namespace"),
    );
    let wild = |granted: &str, asked: &str| granted == "*" || granted == asked;
    let allowed = shared.store().grants.iter().any(|g| {
        g.user == user
            && wild(&g.verb, &verb)
            && wild(&g.group, &group)
            && wild(&g.resource, &resource)
            && g.namespace.as_deref().is_none_or(|ns| ns == namespace)
    });
    let reason =
        if allowed { "granted by the test" } else { "no grant in the stand-in API server" };
    let body = json!({
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "metadata": review.get("metadata").cloned().unwrap_or_else(|| json!({})),
        "spec": spec,
        "status": {"allowed": allowed, "reason": reason},
    });
    json_response(StatusCode::CREATED, &body)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
    };
    use kube::api::{Api, PostParams};

    use super::*;
    use crate::kube_api::FakeApiServer;

    #[tokio::test]
    async fn projected_tokens_are_valid_for_their_audience_and_grants_decide_access() {
        let server = FakeApiServer::start().await.expect("the stand-in API server");
        server.set_token_identity(
            "node-token",
            TokenIdentity::projected(
                "intentmap",
                "node",
                "intentmap-mapper",
                ("node-x1", "uid-1"),
                Some("node-a"),
            ),
        );
        server.set_token_identity(
            "default-token",
            TokenIdentity {
                username: "system:serviceaccount:shop:default".into(),
                audiences: vec![API_AUDIENCE.into()],
                ..Default::default()
            },
        );
        let reviews = Api::<TokenReview>::all(server.client());
        let review = |token: &str, audience: Option<&str>| TokenReview {
            spec: TokenReviewSpec {
                token: token.into(),
                audiences: audience.map(|a| vec![a.to_owned()]),
            },
            ..TokenReview::default()
        };
        let status = |review: TokenReview| review.status.expect("a status");

        let node = status(
            reviews
                .create(&PostParams::default(), &review("node-token", Some("intentmap-mapper")))
                .await
                .expect("a review"),
        );
        assert_eq!(node.authenticated, Some(true));
        assert_eq!(node.audiences, Some(vec!["intentmap-mapper".to_owned()]));
        let extra = node.user.and_then(|u| u.extra).expect("extras");
        assert_eq!(extra["authentication.kubernetes.io/node-name"], ["node-a"]);
        for (token, audience) in [("node-token", None), ("default-token", Some("intentmap-mapper"))]
        {
            let answer = status(
                reviews
                    .create(&PostParams::default(), &review(token, audience))
                    .await
                    .expect("a review"),
            );
            assert_eq!(answer.authenticated, Some(false), "{token} for {audience:?}");
        }
        assert_eq!(
            status(
                reviews
                    .create(&PostParams::default(), &review("default-token", None))
                    .await
                    .expect("a review")
            )
            .authenticated,
            Some(true)
        );

        server.grant("alice", "get", "intentmap.dev", "edges", Some("intentmap"));
        let access = Api::<SubjectAccessReview>::all(server.client());
        let ask = |user: &str, verb: &str, namespace: &str| SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(user.into()),
                resource_attributes: Some(ResourceAttributes {
                    verb: Some(verb.into()),
                    group: Some("intentmap.dev".into()),
                    resource: Some("edges".into()),
                    namespace: Some(namespace.into()),
                    ..Default::default()
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        for (user, verb, namespace, allowed) in [
            ("alice", "get", "intentmap", true),
            ("alice", "delete", "intentmap", false),
            ("alice", "get", "other", false),
            ("bob", "get", "intentmap", false),
        ] {
            let answer = access
                .create(&PostParams::default(), &ask(user, verb, namespace))
                .await
                .expect("a review");
            assert_eq!(
                answer.status.expect("a status").allowed,
                allowed,
                "{user} {verb} in {namespace}"
            );
        }
    }
}
