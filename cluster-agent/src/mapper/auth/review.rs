//! Asking the API server: TokenReview (who is this token, for our audience?) and
//! SubjectAccessReview (may they do this?).

use std::collections::BTreeMap;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;

use super::AuthError;

/// The `user.extra` keys a projected ServiceAccount token's review carries.
pub const NODE_NAME_EXTRA: &str = "authentication.kubernetes.io/node-name";
pub const POD_NAME_EXTRA: &str = "authentication.kubernetes.io/pod-name";
pub const POD_UID_EXTRA: &str = "authentication.kubernetes.io/pod-uid";

/// The API group and resource people's access to the edges is checked on (no such objects
/// exist; RBAC grants verbs on it like on any resource).
pub const EDGES_GROUP: &str = "intentmap.dev";
pub const EDGES_RESOURCE: &str = "edges";

/// Who a token belongs to, as the API server said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub username: String,
    pub uid: Option<String>,
    pub groups: Vec<String>,
    pub extra: BTreeMap<String, Vec<String>>,
}

impl Identity {
    fn extra(&self, key: &str) -> Option<&str> {
        self.extra
            .get(key)
            .and_then(|values| values.first())
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// The node the token's pod runs on (Kubernetes ≥ 1.30 says so in the token).
    pub fn node(&self) -> Option<&str> {
        self.extra(NODE_NAME_EXTRA)
    }

    /// The pod the token is bound to.
    pub fn pod_uid(&self) -> Option<&str> {
        self.extra(POD_UID_EXTRA)
    }

    pub fn pod_name(&self) -> Option<&str> {
        self.extra(POD_NAME_EXTRA)
    }
}

/// What a TokenReview's status says, for `audience`: the token must be authenticated and
/// valid for that audience (an API server that ignored the audiences asked for answers
/// without them, and is not believed).
pub fn identity_of(status: TokenReviewStatus, audience: &str) -> Result<Identity, AuthError> {
    if status.authenticated != Some(true) {
        return Err(AuthError::Invalid);
    }
    if !status.audiences.unwrap_or_default().iter().any(|a| a == audience) {
        return Err(AuthError::Invalid);
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.filter(|u| !u.is_empty()).ok_or(AuthError::Invalid)?;
    Ok(Identity {
        username,
        uid: user.uid,
        groups: user.groups.unwrap_or_default(),
        extra: user.extra.unwrap_or_default(),
    })
}

/// A TokenReview of `token` for `audience`.
pub async fn review_token(
    kube: &kube::Client,
    token: &str,
    audience: &str,
) -> Result<Identity, AuthError> {
    let api: kube::Api<TokenReview> = kube::Api::all(kube.clone());
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: Some(vec![audience.to_owned()]),
        },
        ..Default::default()
    };
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
    identity_of(answer.status.unwrap_or_default(), audience)
}

/// Whether `identity` may `verb` the edges in `namespace` (a SubjectAccessReview).
pub async fn may(
    kube: &kube::Client,
    identity: &Identity,
    verb: &str,
    namespace: &str,
) -> Result<bool, AuthError> {
    let api: kube::Api<SubjectAccessReview> = kube::Api::all(kube.clone());
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(identity.username.clone()),
            uid: identity.uid.clone(),
            groups: Some(identity.groups.clone()),
            extra: Some(identity.extra.clone()),
            resource_attributes: Some(ResourceAttributes {
                namespace: Some(namespace.to_owned()),
                verb: Some(verb.to_owned()),
                group: Some(EDGES_GROUP.to_owned()),
                resource: Some(EDGES_RESOURCE.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let answer = api
        .create(&PostParams::default(), &review)
        .await
        .map_err(|e| AuthError::Unavailable(e.to_string()))?;
    Ok(answer.status.is_some_and(|s| s.allowed && s.denied != Some(true)))
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::authentication::v1::UserInfo;

    use super::*;

    fn status(authenticated: bool, audiences: Option<&[&str]>) -> TokenReviewStatus {
        TokenReviewStatus {
            authenticated: Some(authenticated),
            audiences: audiences.map(|a| a.iter().map(|s| (*s).to_owned()).collect()),
            user: Some(UserInfo {
                username: Some("system:serviceaccount:intentmap:node".into()),
                extra: Some(BTreeMap::from([(
                    NODE_NAME_EXTRA.to_owned(),
                    vec!["node-a".to_owned()],
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn only_an_authenticated_token_for_our_audience_is_an_identity() {
        let identity = identity_of(status(true, Some(&["intentmap-mapper"])), "intentmap-mapper")
            .expect("an identity");
        assert_eq!(identity.node(), Some("node-a"));
        assert_eq!(identity.pod_uid(), None);
        assert_eq!(
            identity_of(status(false, Some(&["intentmap-mapper"])), "intentmap-mapper"),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            identity_of(
                status(true, Some(&["https://kubernetes.default.svc"])),
                "intentmap-mapper"
            ),
            Err(AuthError::Invalid)
        );
        assert_eq!(
            identity_of(status(true, None), "intentmap-mapper"),
            Err(AuthError::Invalid),
            "audiences not checked by the API server"
        );
    }
}
