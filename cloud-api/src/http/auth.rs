//! Who is calling: people and scripts with an org API token (checked against the database on
//! every request, so a revoked token stops at once on every replica), clusters with a JWT.
//! Handlers take `CanRead`, `CanWrite` or `CanAdmin`, so each route states the scope it needs.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use uuid::Uuid;

use super::error::ApiError;
use super::AppState;
use crate::limits::{caller_key, Refusal};
use crate::secrets::{self, Check, Purpose};
use crate::tokens::{self, Scope, TokenError};

fn bearer(parts: &Parts) -> Result<&str, ApiError> {
    let value = parts.headers.get(AUTHORIZATION).ok_or_else(|| {
        ApiError::Unauthorized(
            "missing Authorization header; send `Authorization: Bearer <token>`".into(),
        )
    })?;
    let value = value
        .to_str()
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not valid text".into()))?;
    let (scheme, token) = value
        .split_once(' ')
        .ok_or_else(|| ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(ApiError::Unauthorized("expected `Authorization: Bearer <token>`".into()));
    }
    Ok(token.trim())
}

/// The caller's address as rate limits see it: the peer, or with `--trust-forwarded-for` the
/// last address the proxy in front added to `X-Forwarded-For`. `None` when neither is known
/// (in-process tests): all such callers share one budget.
#[derive(Debug, Clone, Copy)]
pub struct Caller(pub Option<IpAddr>);

impl Caller {
    pub fn of(parts: &Parts, trust_forwarded_for: bool) -> Caller {
        let forwarded = || {
            let last =
                parts.headers.get_all("x-forwarded-for").iter().next_back()?.to_str().ok()?;
            last.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
        };
        let peer =
            || parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ConnectInfo(addr)| addr.ip());
        let ip = if trust_forwarded_for { forwarded().or_else(peer) } else { peer() };
        Caller(ip.map(caller_key))
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Caller::of(parts, state.guard.limits.trust_forwarded_for))
    }
}

pub fn refusal(state: &AppState, r: Refusal, what: &str) -> ApiError {
    state.metrics.throttled(r);
    match r {
        Refusal::TooMany { retry_after } => ApiError::TooManyRequests(
            format!("too many {what} from this address; retry in {} s", retry_after.as_secs()),
            retry_after,
        ),
        Refusal::Busy => ApiError::Unavailable(format!(
            "too many {what} are being checked right now; retry in a second"
        )),
    }
}

/// A caller holding an organisation's API token, with its scopes.
#[derive(Debug, Clone)]
pub struct OrgAuth {
    pub org_id: Uuid,
    pub token_id: Uuid,
    pub scopes: Vec<Scope>,
}

impl OrgAuth {
    async fn authenticate(parts: &Parts, state: &AppState) -> Result<OrgAuth, ApiError> {
        let token = bearer(parts)?;
        let caller = Caller::of(parts, state.guard.limits.trust_forwarded_for);
        state
            .guard
            .per_address
            .check(&caller.0)
            .map_err(|r| refusal(state, r, "failed sign-ins"))?;
        let invalid = || {
            state.metrics.auth_failure("api_token");
            state.guard.per_address.charge(&caller.0);
            ApiError::Unauthorized("invalid or revoked API token; ask an org admin for one (POST /api/v1/tokens) or use `cloud-api admin create-token`".into())
        };
        let (token_id, secret) = tokens::parse_api_token(token).ok_or_else(invalid)?;
        let stored = state.store.api_token(token_id).await?;
        let hash = stored.as_ref().map(|s| s.secret_hash.as_str());
        let stale = match state.store.hasher().check(Purpose::ApiToken, secret, hash) {
            Check::Matches { stale } => stale,
            Check::Mismatch => return Err(invalid()),
            Check::Legacy => {
                let _permit =
                    state.guard.admit_legacy().await.map_err(|r| refusal(state, r, "sign-ins"))?;
                let (secret, hash) = (secret.to_owned(), hash.unwrap_or_default().to_owned());
                let ok =
                    tokio::task::spawn_blocking(move || secrets::verify_legacy(&secret, &hash))
                        .await
                        .map_err(|e| ApiError::Internal(e.into()))?;
                if !ok {
                    return Err(invalid());
                }
                true
            }
        };
        let Some(stored) = stored else { return Err(invalid()) };
        if stale {
            match state
                .store
                .rehash_api_token(stored.org_id, token_id, &stored.secret_hash, secret)
                .await
            {
                Ok(()) => state.metrics.secret_rehashed("api_token"),
                Err(e) => {
                    tracing::warn!(error = %e, token = %token_id, "could not store the API token's new hash; it stays on the old one")
                }
            }
        }
        Ok(OrgAuth { org_id: stored.org_id, token_id, scopes: stored.scopes })
    }

    fn require(self, scope: Scope) -> Result<OrgAuth, ApiError> {
        if scope.granted_by(&self.scopes) {
            return Ok(self);
        }
        let held: Vec<&str> = self.scopes.iter().map(|s| s.as_str()).collect();
        Err(ApiError::Forbidden(format!(
            "this API token has scope {}; this needs {}: ask an org admin for a token with it (POST /api/v1/tokens)",
            held.join(", "),
            scope.as_str()
        )))
    }
}

macro_rules! scoped {
    ($(#[$doc:meta])* $name:ident, $scope:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub OrgAuth);

        impl std::ops::Deref for $name {
            type Target = OrgAuth;
            fn deref(&self) -> &OrgAuth {
                &self.0
            }
        }

        impl FromRequestParts<AppState> for $name {
            type Rejection = ApiError;

            async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
                Ok($name(OrgAuth::authenticate(parts, state).await?.require($scope)?))
            }
        }
    };
}

scoped!(
    /// An API token with the `read` scope (or more).
    CanRead,
    Scope::Read
);
scoped!(
    /// An API token with the `write` scope (or `admin`).
    CanWrite,
    Scope::Write
);
scoped!(
    /// An API token with the `admin` scope.
    CanAdmin,
    Scope::Admin
);

/// A cluster agent holding a JWT from `/oauth/token`.
#[derive(Debug, Clone, Copy)]
pub struct ClusterAuth {
    pub org_id: Uuid,
    pub cluster_id: Uuid,
}

impl FromRequestParts<AppState> for ClusterAuth {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts)?;
        if token.starts_with("imt_") {
            state.metrics.auth_failure("jwt");
            return Err(ApiError::Unauthorized("this endpoint takes a cluster access token from POST /oauth/token, not an API token".into()));
        }
        let claims = state.jwt.verify(token).map_err(|e| {
            state.metrics.auth_failure("jwt");
            match e {
                TokenError::Expired => ApiError::Unauthorized(e.to_string()),
                other => ApiError::Unauthorized(format!(
                    "{other}; request a new token from /oauth/token"
                )),
            }
        })?;
        if !state.store.cluster_is_active(claims.org, claims.cluster).await? {
            state.metrics.auth_failure("jwt");
            return Err(ApiError::Unauthorized(
                "this cluster's credentials were revoked or the cluster was deleted".into(),
            ));
        }
        Ok(ClusterAuth { org_id: claims.org, cluster_id: claims.cluster })
    }
}
