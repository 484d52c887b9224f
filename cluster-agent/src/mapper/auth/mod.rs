//! Who may use the mapper's local API.
//!
//! - **Observations** (`POST /v1/observations`): node agents and `aws-proxy`, by a projected
//!   ServiceAccount token with the mapper's audience (`--token-audience`, checked in the
//!   TokenReview, so a token sent here is useless against the API server and the API server's
//!   own tokens are useless here). Node agents' ServiceAccounts (`--node-service-accounts`) are
//!   bound to the node their token names; `aws-proxy`'s (`--aws-service-accounts`) send AWS
//!   calls only. Or the shared token (`--shared-token`, tests and demos; believed about any pod).
//! - **People** (`GET /v1/edges`, `POST /v1/reset`): through `kubectl port-forward` (the API
//!   server checks `create pods/portforward`; the connection arrives from the pod's loopback),
//!   or with a token with the mapper's audience whose user the API server allows, by a
//!   SubjectAccessReview, to `get` (list) or `delete` (reset) `edges.intentmap.dev` in the
//!   mapper's namespace.
//!
//! Verdicts are cached (a minute, ten seconds for refusals) in bounded maps, and at most
//! [`MAX_REVIEWS_IN_FLIGHT`] reviews run at once: a flood of invented tokens costs the API
//! server a bounded rate and the mapper bounded memory.

mod cache;
pub mod review;

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use sha2::{Digest, Sha256};

use self::cache::VerdictCache;
pub use self::review::Identity;

/// Tokens (and token-and-verb verdicts) remembered at most.
pub const TOKEN_CACHE_CAPACITY: usize = 4_096;
/// Reviews sent to the API server at once at most; more wait up to [`REVIEW_WAIT`].
pub const MAX_REVIEWS_IN_FLIGHT: usize = 8;
const REVIEW_WAIT: Duration = Duration::from_secs(5);
/// Longer bearer tokens are refused unread (ServiceAccount tokens are about 1 KiB).
pub const MAX_TOKEN_BYTES: usize = 16 << 10;
const ACCEPTED_FOR: Duration = Duration::from_secs(60);
const REFUSED_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing `Authorization: Bearer <token>`: {0}")]
    Missing(&'static str),
    #[error(
        "the token was not accepted (the mapper takes ServiceAccount tokens made for its audience)"
    )]
    Invalid,
    #[error(
        "{0} may not send observations (allowed: the node agents' and aws-proxy's ServiceAccounts)"
    )]
    NotAllowed(String),
    #[error("{0}'s token names no pod: node agents need a projected ServiceAccount token (the chart mounts one)")]
    Unbound(String),
    #[error("{user} may not {verb} edges.intentmap.dev in namespace {namespace} (grant it with a Role, e.g. the chart's edges-viewer)")]
    Forbidden { user: String, verb: &'static str, namespace: String },
    #[error("the token could not be checked: {0}")]
    Unavailable(String),
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = match &self {
            AuthError::Missing(_) | AuthError::Invalid => StatusCode::UNAUTHORIZED,
            AuthError::NotAllowed(_) | AuthError::Unbound(_) | AuthError::Forbidden { .. } => {
                StatusCode::FORBIDDEN
            }
            AuthError::Unavailable(e) => {
                tracing::warn!(error = %e, "reviewing a token failed");
                let body = Json(
                    serde_json::json!({"error": "the token could not be checked right now; retry"}),
                );
                return (StatusCode::SERVICE_UNAVAILABLE, [(header::RETRY_AFTER, "1")], body)
                    .into_response();
            }
        };
        let body = Json(serde_json::json!({"error": self.to_string()}));
        if status == StatusCode::UNAUTHORIZED {
            (status, [(header::WWW_AUTHENTICATE, "Bearer")], body).into_response()
        } else {
            (status, body).into_response()
        }
    }
}

/// Who sent observations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observer {
    /// The shared token.
    Shared,
    /// A node agent: the node its token names, else the pod it is bound to (whose node the
    /// index knows).
    Node { user: String, node: Option<String>, pod_uid: Option<String> },
    /// `aws-proxy`.
    Aws { user: String },
}

/// What people may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PeopleVerb {
    /// `GET /v1/edges`: RBAC verb `get`.
    Read,
    /// `POST /v1/reset`: RBAC verb `delete`.
    Reset,
}

impl PeopleVerb {
    fn rbac(self) -> &'static str {
        match self {
            PeopleVerb::Read => "get",
            PeopleVerb::Reset => "delete",
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    pub shared_token: Option<String>,
    /// The audience tokens must be made for.
    pub audience: String,
    /// `system:serviceaccount:NS:NAME` of node agents (bound to their node).
    pub node_accounts: Vec<String>,
    /// `system:serviceaccount:NS:NAME` of `aws-proxy` (AWS calls only).
    pub aws_accounts: Vec<String>,
    /// Where people's access is checked: the mapper's own namespace.
    pub namespace: String,
    /// Whether a connection from the pod's loopback (`kubectl port-forward`) is a person
    /// allowed to read and reset.
    pub trust_loopback: bool,
}

type TokenKey = [u8; 32];

pub struct ApiAuth {
    config: AuthConfig,
    kube: Option<kube::Client>,
    identities: Mutex<VerdictCache<TokenKey, Result<Identity, AuthError>>>,
    access: Mutex<VerdictCache<(TokenKey, PeopleVerb), bool>>,
    reviews: tokio::sync::Semaphore,
}

fn bearer<'a>(authorization: Option<&'a str>, hint: &'static str) -> Result<&'a str, AuthError> {
    let token = authorization
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or(AuthError::Missing(hint))?;
    if token.len() > MAX_TOKEN_BYTES {
        return Err(AuthError::Invalid);
    }
    Ok(token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl ApiAuth {
    pub fn new(config: AuthConfig, kube: Option<kube::Client>) -> Self {
        Self {
            config,
            kube,
            identities: Mutex::new(VerdictCache::new(TOKEN_CACHE_CAPACITY)),
            access: Mutex::new(VerdictCache::new(TOKEN_CACHE_CAPACITY)),
            reviews: tokio::sync::Semaphore::new(MAX_REVIEWS_IN_FLIGHT),
        }
    }

    pub fn config(&self) -> &AuthConfig {
        &self.config
    }

    /// Who sent observations with this `Authorization` header value.
    pub async fn observer(&self, authorization: Option<&str>) -> Result<Observer, AuthError> {
        let token = bearer(authorization, "node agents send their projected ServiceAccount token")?;
        if let Some(shared) = &self.config.shared_token {
            if constant_time_eq(shared.as_bytes(), token.as_bytes()) {
                return Ok(Observer::Shared);
            }
        }
        let (_, identity) = self.identity(token).await?;
        let user = identity.username.clone();
        if self.config.node_accounts.contains(&user) {
            let (node, pod_uid) =
                (identity.node().map(str::to_owned), identity.pod_uid().map(str::to_owned));
            if node.is_none() && pod_uid.is_none() {
                return Err(AuthError::Unbound(user));
            }
            return Ok(Observer::Node { user, node, pod_uid });
        }
        if self.config.aws_accounts.contains(&user) {
            return Ok(Observer::Aws { user });
        }
        Err(AuthError::NotAllowed(user))
    }

    /// Whether a person (connected from `peer`) may `verb` the edges; their name if so.
    pub async fn person(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
        verb: PeopleVerb,
    ) -> Result<String, AuthError> {
        if self.config.trust_loopback && peer.is_some_and(|p| p.ip().to_canonical().is_loopback()) {
            return Ok("port-forward".to_owned());
        }
        let token = bearer(authorization, "use `kubectl port-forward` to the mapper, or send a token made for the mapper's audience (`intentmap --token`)")?;
        let (key, identity) = self.identity(token).await?;
        if let Some(allowed) =
            self.access.lock().expect("access cache poisoned").get(&(key, verb), ACCEPTED_FOR)
        {
            return self.verdict(allowed, identity.username, verb);
        }
        let kube = self.kube.as_ref().ok_or(AuthError::Invalid)?;
        let allowed = {
            let _permit = self.permit().await?;
            review::may(kube, &identity, verb.rbac(), &self.config.namespace).await?
        };
        let ttl = if allowed { ACCEPTED_FOR } else { REFUSED_FOR };
        self.access.lock().expect("access cache poisoned").insert((key, verb), allowed, ttl);
        self.verdict(allowed, identity.username, verb)
    }

    fn verdict(&self, allowed: bool, user: String, verb: PeopleVerb) -> Result<String, AuthError> {
        if allowed {
            Ok(user)
        } else {
            Err(AuthError::Forbidden {
                user,
                verb: verb.rbac(),
                namespace: self.config.namespace.clone(),
            })
        }
    }

    async fn permit(&self) -> Result<tokio::sync::SemaphorePermit<'_>, AuthError> {
        match tokio::time::timeout(REVIEW_WAIT, self.reviews.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(AuthError::Unavailable("too many token reviews in flight".to_owned())),
        }
    }

    /// The token's identity for the mapper's audience (cached).
    async fn identity(&self, token: &str) -> Result<(TokenKey, Identity), AuthError> {
        let key: TokenKey = Sha256::digest(token.as_bytes()).into();
        let cached =
            self.identities.lock().expect("identity cache poisoned").get(&key, ACCEPTED_FOR);
        let verdict = match cached {
            Some(verdict) => verdict,
            None => {
                let kube = self.kube.as_ref().ok_or(AuthError::Invalid)?;
                let verdict = {
                    let _permit = self.permit().await?;
                    review::review_token(kube, token, &self.config.audience).await
                };
                let ttl = if verdict.is_ok() { ACCEPTED_FOR } else { REFUSED_FOR };
                if !matches!(verdict, Err(AuthError::Unavailable(_))) {
                    self.identities.lock().expect("identity cache poisoned").insert(
                        key,
                        verdict.clone(),
                        ttl,
                    );
                }
                verdict
            }
        };
        verdict.map(|identity| (key, identity))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(shared: Option<&str>) -> ApiAuth {
        ApiAuth::new(
            AuthConfig {
                shared_token: shared.map(str::to_owned),
                audience: "intentmap-mapper".into(),
                trust_loopback: true,
                ..AuthConfig::default()
            },
            None,
        )
    }

    #[tokio::test]
    async fn a_shared_token_is_accepted_and_anything_else_refused_without_kubernetes() {
        let auth = auth(Some("s3cret"));
        assert_eq!(auth.observer(Some("Bearer s3cret")).await, Ok(Observer::Shared));
        assert_eq!(auth.observer(Some("Bearer s3cre")).await, Err(AuthError::Invalid));
        assert!(matches!(auth.observer(Some("Basic s3cret")).await, Err(AuthError::Missing(_))));
        assert!(matches!(auth.observer(None).await, Err(AuthError::Missing(_))));
        assert_eq!(
            auth.observer(Some(&format!("Bearer {}", "x".repeat(MAX_TOKEN_BYTES + 1)))).await,
            Err(AuthError::Invalid)
        );
    }

    #[tokio::test]
    async fn people_on_the_loopback_are_port_forwarded_and_others_need_a_token() {
        let auth = auth(Some("s3cret"));
        let local: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let pod: SocketAddr = "10.244.1.7:5555".parse().unwrap();
        assert_eq!(
            auth.person(Some(local), None, PeopleVerb::Reset).await,
            Ok("port-forward".to_owned())
        );
        assert!(matches!(
            auth.person(Some(pod), None, PeopleVerb::Read).await,
            Err(AuthError::Missing(_))
        ));
        assert!(matches!(
            auth.person(None, None, PeopleVerb::Read).await,
            Err(AuthError::Missing(_))
        ));
        assert_eq!(
            auth.person(Some(pod), Some("Bearer s3cret"), PeopleVerb::Read).await,
            Err(AuthError::Invalid),
            "the node agents' token reads nothing"
        );
    }
}
