//! Who may send observations: node agents and `aws-proxy`, by their ServiceAccount token
//! (checked with a TokenReview, cached) or by a shared token in simple set-ups.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::api::PostParams;
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing `Authorization: Bearer <token>`; node agents send their ServiceAccount token")]
    Missing,
    #[error("the token was not accepted")]
    Invalid,
    #[error("{0} may not send observations (allowed: the configured ServiceAccounts)")]
    NotAllowed(String),
    #[error("the token could not be checked: {0}")]
    Unavailable(String),
}

/// The caller's name, or why not.
type Verdict = Result<String, AuthError>;

pub struct ObservationAuth {
    shared_token: Option<String>,
    kube: Option<kube::Client>,
    /// ServiceAccount user names allowed to send (`system:serviceaccount:NS:NAME`); empty allows any authenticated one.
    allowed: Vec<String>,
    ttl: Duration,
    cache: Mutex<HashMap<[u8; 32], (Instant, Verdict)>>,
}

impl ObservationAuth {
    pub fn new(shared_token: Option<String>, kube: Option<kube::Client>, allowed: Vec<String>) -> Self {
        Self { shared_token, kube, allowed, ttl: Duration::from_secs(60), cache: Mutex::new(HashMap::new()) }
    }

    /// The caller's name if `authorization` (the header value) is acceptable.
    pub async fn check(&self, authorization: Option<&str>) -> Result<String, AuthError> {
        let token = authorization
            .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Missing)?;
        if let Some(shared) = &self.shared_token {
            if constant_time_eq(shared.as_bytes(), token.as_bytes()) {
                return Ok("shared-token".into());
            }
        }
        let Some(kube) = &self.kube else { return Err(AuthError::Invalid) };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((at, verdict)) = self.cache.lock().expect("auth cache poisoned").get(&key) {
            if at.elapsed() < self.ttl {
                return verdict.clone();
            }
        }
        let verdict = self.review(kube, token).await;
        if !matches!(verdict, Err(AuthError::Unavailable(_))) {
            let mut cache = self.cache.lock().expect("auth cache poisoned");
            if cache.len() > 10_000 {
                cache.retain(|_, (at, _)| at.elapsed() < self.ttl);
            }
            cache.insert(key, (Instant::now(), verdict.clone()));
        }
        verdict
    }

    async fn review(&self, kube: &kube::Client, token: &str) -> Result<String, AuthError> {
        let api: kube::Api<TokenReview> = kube::Api::all(kube.clone());
        let review = TokenReview { spec: TokenReviewSpec { token: token.to_owned(), ..Default::default() }, ..Default::default() };
        let answer = api.create(&PostParams::default(), &review).await.map_err(|e| AuthError::Unavailable(e.to_string()))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(AuthError::Invalid);
        }
        let user = status.user.and_then(|u| u.username).unwrap_or_default();
        if self.allowed.is_empty() || self.allowed.iter().any(|a| a == &user) {
            Ok(user)
        } else {
            Err(AuthError::NotAllowed(user))
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_shared_token_is_accepted_and_anything_else_refused_without_kubernetes() {
        let auth = ObservationAuth::new(Some("s3cret".into()), None, vec![]);
        assert_eq!(auth.check(Some("Bearer s3cret")).await, Ok("shared-token".into()));
        assert_eq!(auth.check(Some("Bearer s3cre")).await, Err(AuthError::Invalid));
        assert_eq!(auth.check(Some("Basic s3cret")).await, Err(AuthError::Missing));
        assert_eq!(auth.check(None).await, Err(AuthError::Missing));
    }
}
