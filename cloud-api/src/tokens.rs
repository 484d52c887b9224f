//! Secrets, API tokens and cluster JWTs.
//!
//! - Cluster client secrets and people's API tokens are random, shown once, and stored only as
//!   argon2id hashes; checks go through `argon2`'s constant-time comparison.
//! - Clusters trade their client ID and secret for short-lived EdDSA (Ed25519) JWTs; the public
//!   keys are published as a JWKS. Verification pins the algorithm and checks issuer, audience
//!   and expiry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand::RngCore;
use ring::signature::{Ed25519KeyPair, KeyPair};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token has expired; request a new one from /oauth/token")]
    Expired,
    #[error("the token was not issued for this service (issuer or audience mismatch)")]
    WrongAudience,
    #[error("the token's signature does not verify")]
    BadSignature,
    #[error("the token's signing key {0:?} is unknown")]
    UnknownKey(String),
    #[error("bad signing key: {0}")]
    BadKey(String),
}

// === secrets ===

/// A fresh 256-bit secret, URL-safe.
pub fn random_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// The argon2id PHC string for `secret`.
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default().hash_password(secret.as_bytes(), &salt).expect("argon2 with default parameters cannot fail").to_string()
}

/// Constant-time check of `secret` against a stored hash. A corrupt hash never matches.
pub fn verify_secret(secret: &str, stored_hash: &str) -> bool {
    PasswordHash::new(stored_hash).is_ok_and(|h| Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
}

/// A real hash of nothing anyone knows, checked against when a client id is unknown so that
/// unknown and known ids take the same time to refuse.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| hash_secret(&random_secret()));
    &DUMMY
}

const API_TOKEN_PREFIX: &str = "imt_";

/// An API token is `imt_<token id>_<secret>`: the id finds the row, the secret is checked against its hash.
pub fn format_api_token(id: Uuid, secret: &str) -> String {
    format!("{API_TOKEN_PREFIX}{}_{secret}", id.simple())
}

pub fn parse_api_token(token: &str) -> Option<(Uuid, &str)> {
    let (id, secret) = token.strip_prefix(API_TOKEN_PREFIX)?.split_once('_')?;
    if secret.is_empty() {
        return None;
    }
    Some((Uuid::try_parse(id).ok()?, secret))
}

/// Remembers recently verified API tokens (by SHA-256 of the whole token) so that each request
/// does not pay for an argon2 hash. Entries live `ttl`; revoking a token clears the cache.
pub struct VerifiedTokenCache {
    ttl: Duration,
    entries: Mutex<HashMap<[u8; 32], (Uuid, Uuid, Instant)>>,
}

impl VerifiedTokenCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// `(org_id, token_id)` of a token verified within the last `ttl`.
    pub fn get(&self, token: &str) -> Option<(Uuid, Uuid)> {
        let entries = self.entries.lock().expect("token cache poisoned");
        entries.get(&Self::digest(token)).filter(|(_, _, at)| at.elapsed() < self.ttl).map(|(org, id, _)| (*org, *id))
    }

    pub fn insert(&self, token: &str, org_id: Uuid, token_id: Uuid) {
        let mut entries = self.entries.lock().expect("token cache poisoned");
        if entries.len() > 10_000 {
            entries.retain(|_, (_, _, at)| at.elapsed() < self.ttl);
        }
        entries.insert(Self::digest(token), (org_id, token_id, Instant::now()));
    }

    pub fn clear(&self) {
        self.entries.lock().expect("token cache poisoned").clear();
    }
}

// === JWT ===

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ClusterClaims {
    pub iss: String,
    pub aud: String,
    pub sub: String,
    pub org: Uuid,
    pub cluster: Uuid,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
}

/// One Ed25519 signing key with its key id.
pub struct SigningKey {
    pub kid: String,
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl SigningKey {
    pub fn generate() -> Self {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).expect("the system RNG works");
        Self::from_pkcs8(pkcs8.as_ref()).expect("a freshly generated key parses")
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, TokenError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| TokenError::BadKey(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = hex(&Sha256::digest(&public)[..8]);
        Ok(Self { kid, pkcs8: der.to_vec(), public })
    }

    /// Reads a `-----BEGIN PRIVATE KEY-----` PEM file (as written by `cloud-api admin generate-jwt-key`
    /// or `openssl genpkey -algorithm ed25519`).
    pub fn from_pem(pem: &str) -> Result<Self, TokenError> {
        let body: String = pem.lines().map(str::trim).filter(|l| !l.starts_with("-----") && !l.is_empty()).collect();
        if !pem.contains("-----BEGIN PRIVATE KEY-----") {
            return Err(TokenError::BadKey("expected a PEM block `-----BEGIN PRIVATE KEY-----`".into()));
        }
        let der = base64::engine::general_purpose::STANDARD.decode(body).map_err(|e| TokenError::BadKey(format!("bad base64 in PEM: {e}")))?;
        Self::from_pkcs8(&der)
    }

    pub fn to_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.pkcs8);
        let mut out = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            out.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            out.push('\n');
        }
        out.push_str("-----END PRIVATE KEY-----\n");
        out
    }

    fn jwk(&self) -> serde_json::Value {
        serde_json::json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(&self.public), "kid": self.kid, "use": "sig", "alg": "EdDSA"})
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Issues and verifies cluster JWTs. The first key signs; all keys verify (for rotation).
pub struct JwtIssuer {
    pub issuer: String,
    pub audience: String,
    pub lifetime: Duration,
    keys: Vec<SigningKey>,
    decoding: HashMap<String, DecodingKey>,
}

impl JwtIssuer {
    pub fn new(issuer: String, audience: String, lifetime: Duration, keys: Vec<SigningKey>) -> Result<Self, TokenError> {
        if keys.is_empty() {
            return Err(TokenError::BadKey("at least one signing key is needed".into()));
        }
        let mut decoding = HashMap::new();
        for key in &keys {
            let dk = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(&key.public)).map_err(|e| TokenError::BadKey(e.to_string()))?;
            decoding.insert(key.kid.clone(), dk);
        }
        Ok(Self { issuer, audience, lifetime, keys, decoding })
    }

    pub fn issue(&self, org: Uuid, cluster: Uuid, now: i64) -> (String, ClusterClaims) {
        let key = &self.keys[0];
        let claims = ClusterClaims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: format!("cluster:{cluster}"),
            org,
            cluster,
            iat: now,
            exp: now + self.lifetime.as_secs() as i64,
            jti: Uuid::new_v4(),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(key.kid.clone());
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&key.pkcs8)).expect("signing with a valid Ed25519 key cannot fail");
        (token, claims)
    }

    pub fn verify(&self, token: &str) -> Result<ClusterClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::BadSignature);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let key = self.decoding.get(&kid).ok_or(TokenError::UnknownKey(kid))?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<ClusterClaims>(token, key, &validation).map(|d| d.claims).map_err(|e| {
            use jsonwebtoken::errors::ErrorKind;
            match e.kind() {
                ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => TokenError::Expired,
                ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => TokenError::WrongAudience,
                ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => TokenError::BadSignature,
                _ => TokenError::Malformed,
            }
        })
    }

    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": self.keys.iter().map(SigningKey::jwk).collect::<Vec<_>>()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(keys: Vec<SigningKey>) -> JwtIssuer {
        JwtIssuer::new("https://cloud.test".into(), "intentmap-ingest".into(), Duration::from_secs(300), keys).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn secrets_verify_only_against_their_own_hash() {
        let secret = random_secret();
        let hash = hash_secret(&secret);
        assert!(hash.starts_with("$argon2id$"), "{hash}");
        assert!(!hash.contains(&secret));
        assert!(verify_secret(&secret, &hash));
        assert!(!verify_secret(&random_secret(), &hash));
        assert!(!verify_secret(&secret, "not a hash"));
    }

    #[test]
    fn api_tokens_carry_their_id() {
        let id = Uuid::new_v4();
        let token = format_api_token(id, "s3cret");
        assert_eq!(parse_api_token(&token), Some((id, "s3cret")));
        assert_eq!(parse_api_token("imt_nothex_x"), None);
        assert_eq!(parse_api_token(&format!("imt_{}_", id.simple())), None);
        assert_eq!(parse_api_token("Bearer x"), None);
    }

    #[test]
    fn a_jwt_round_trips_and_every_kind_of_wrong_is_refused() {
        let jwt = issuer(vec![SigningKey::generate()]);
        let (org, cluster) = (Uuid::new_v4(), Uuid::new_v4());
        let (token, claims) = jwt.issue(org, cluster, now());
        assert_eq!(jwt.verify(&token).unwrap(), claims);

        let (old, _) = jwt.issue(org, cluster, now() - 3600);
        assert!(matches!(jwt.verify(&old), Err(TokenError::Expired)));

        let other = issuer(vec![SigningKey::generate()]);
        let (foreign, _) = other.issue(org, cluster, now());
        assert!(matches!(jwt.verify(&foreign), Err(TokenError::UnknownKey(_))));

        let key = SigningKey::from_pem(&jwt.keys[0].to_pem()).unwrap();
        let wrong_aud = JwtIssuer::new("https://cloud.test".into(), "someone-else".into(), Duration::from_secs(300), vec![key]).unwrap();
        let (token2, _) = wrong_aud.issue(org, cluster, now());
        assert!(matches!(jwt.verify(&token2), Err(TokenError::WrongAudience)));

        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(jwt.verify(&tampered), Err(TokenError::BadSignature) | Err(TokenError::Malformed)));

        // alg=none and HS256 tokens are refused whatever their claims say.
        let body = token.split('.').nth(1).unwrap();
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#));
        assert!(jwt.verify(&none).is_err());
        let hs = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(b"guess")).unwrap();
        assert!(matches!(jwt.verify(&hs), Err(TokenError::BadSignature)));
        assert!(matches!(jwt.verify("garbage"), Err(TokenError::Malformed)));
    }

    #[test]
    fn rotated_keys_still_verify_and_are_published() {
        let old = SigningKey::generate();
        let old_pem = old.to_pem();
        let before = issuer(vec![old]);
        let (token, _) = before.issue(Uuid::new_v4(), Uuid::new_v4(), now());
        let after = issuer(vec![SigningKey::generate(), SigningKey::from_pem(&old_pem).unwrap()]);
        assert!(after.verify(&token).is_ok());
        let jwks = after.jwks();
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 2);
        assert_eq!(jwks["keys"][0]["crv"], "Ed25519");
    }
}
