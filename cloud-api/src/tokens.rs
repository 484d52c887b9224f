//! API tokens and cluster JWTs.
//!
//! - People's API tokens are `imt_<token id>_<secret>` with scopes; the secret is stored only as
//!   a keyed hash (see `secrets`).
//! - Clusters trade their client ID and secret for short-lived EdDSA (Ed25519) JWTs; the public
//!   keys are published as a JWKS. Verification pins the algorithm and checks issuer, audience
//!   and expiry.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
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
    /// The key id is not echoed: it is the caller's input.
    #[error("the token was not signed by any of this service's keys")]
    UnknownKey,
    #[error("bad signing key: {0}")]
    BadKey(String),
}

// === API tokens ===

const API_TOKEN_PREFIX: &str = "imt_";

/// An API token is `imt_<token id>_<secret>`: the id finds the row, the secret is checked against its hash.
pub fn format_api_token(id: Uuid, secret: &str) -> String {
    format!("{API_TOKEN_PREFIX}{}_{secret}", id.simple())
}

pub fn parse_api_token(token: &str) -> Option<(Uuid, &str)> {
    let (id, secret) = token.strip_prefix(API_TOKEN_PREFIX)?.split_once('_')?;
    if secret.is_empty() || secret.len() > 256 {
        return None;
    }
    Some((Uuid::try_parse(id).ok()?, secret))
}

/// What an API token may do. Each scope includes the ones before it: `write` can read, `admin`
/// can do everything.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// The access graph, clusters and ClientIntents.
    Read,
    /// Also register, revoke and delete clusters.
    Write,
    /// Also list, create and revoke API tokens.
    Admin,
}

impl Scope {
    pub const ALL: [Scope; 3] = [Scope::Read, Scope::Write, Scope::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
            Scope::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Scope> {
        Scope::ALL.into_iter().find(|scope| scope.as_str() == s)
    }

    /// Whether a token holding `held` may do what needs `self`.
    pub fn granted_by(self, held: &[Scope]) -> bool {
        held.iter().any(|h| *h >= self)
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
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .expect("the system RNG works");
        Self::from_pkcs8(pkcs8.as_ref()).expect("a freshly generated key parses")
    }

    pub fn from_pkcs8(der: &[u8]) -> Result<Self, TokenError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der)
            .map_err(|e| TokenError::BadKey(format!("not an Ed25519 PKCS#8 key: {e}")))?;
        let public = pair.public_key().as_ref().to_vec();
        let kid = hex(&Sha256::digest(&public)[..8]);
        Ok(Self { kid, pkcs8: der.to_vec(), public })
    }

    /// Reads a `-----BEGIN PRIVATE KEY-----` PEM file (as written by `cloud-api admin generate-jwt-key`
    /// or `openssl genpkey -algorithm ed25519`).
    pub fn from_pem(pem: &str) -> Result<Self, TokenError> {
        let body: String = pem
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("-----") && !l.is_empty())
            .collect();
        if !pem.contains("-----BEGIN PRIVATE KEY-----") {
            return Err(TokenError::BadKey(
                "expected a PEM block `-----BEGIN PRIVATE KEY-----`".into(),
            ));
        }
        let der = base64::engine::general_purpose::STANDARD
            .decode(body)
            .map_err(|e| TokenError::BadKey(format!("bad base64 in PEM: {e}")))?;
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
    pub fn new(
        issuer: String,
        audience: String,
        lifetime: Duration,
        keys: Vec<SigningKey>,
    ) -> Result<Self, TokenError> {
        if keys.is_empty() {
            return Err(TokenError::BadKey("at least one signing key is needed".into()));
        }
        let mut decoding = HashMap::new();
        for key in &keys {
            let dk = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(&key.public))
                .map_err(|e| TokenError::BadKey(e.to_string()))?;
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
        let token = jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ed_der(&key.pkcs8))
            .expect("signing with a valid Ed25519 key cannot fail");
        (token, claims)
    }

    pub fn verify(&self, token: &str) -> Result<ClusterClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::BadSignature);
        }
        let kid = header.kid.ok_or(TokenError::Malformed)?;
        let key = self.decoding.get(&kid).ok_or(TokenError::UnknownKey)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<ClusterClaims>(token, key, &validation).map(|d| d.claims).map_err(
            |e| {
                use jsonwebtoken::errors::ErrorKind;
                match e.kind() {
                    ErrorKind::ExpiredSignature | ErrorKind::ImmatureSignature => {
                        TokenError::Expired
                    }
                    ErrorKind::InvalidIssuer | ErrorKind::InvalidAudience => {
                        TokenError::WrongAudience
                    }
                    ErrorKind::InvalidSignature | ErrorKind::InvalidAlgorithm => {
                        TokenError::BadSignature
                    }
                    _ => TokenError::Malformed,
                }
            },
        )
    }

    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({"keys": self.keys.iter().map(SigningKey::jwk).collect::<Vec<_>>()})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(keys: Vec<SigningKey>) -> JwtIssuer {
        JwtIssuer::new(
            "https://cloud.test".into(),
            "intentmap-ingest".into(),
            Duration::from_secs(300),
            keys,
        )
        .unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn scopes_include_the_ones_before_them() {
        assert!(Scope::Read.granted_by(&[Scope::Admin]));
        assert!(Scope::Write.granted_by(&[Scope::Read, Scope::Write]));
        assert!(!Scope::Write.granted_by(&[Scope::Read]));
        assert!(!Scope::Admin.granted_by(&[Scope::Write]));
        assert!(!Scope::Read.granted_by(&[]));
        assert_eq!(Scope::parse("write"), Some(Scope::Write));
        assert_eq!(Scope::parse("Write"), None);
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
        assert!(matches!(jwt.verify(&foreign), Err(TokenError::UnknownKey)));

        let key = SigningKey::from_pem(&jwt.keys[0].to_pem()).unwrap();
        let wrong_aud = JwtIssuer::new(
            "https://cloud.test".into(),
            "someone-else".into(),
            Duration::from_secs(300),
            vec![key],
        )
        .unwrap();
        let (token2, _) = wrong_aud.issue(org, cluster, now());
        assert!(matches!(jwt.verify(&token2), Err(TokenError::WrongAudience)));

        let mut tampered = token.clone();
        tampered.pop();
        tampered.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(
            jwt.verify(&tampered),
            Err(TokenError::BadSignature) | Err(TokenError::Malformed)
        ));

        // alg=none and HS256 tokens are refused whatever their claims say.
        let body = token.split('.').nth(1).unwrap();
        let none = format!("{}.{body}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#));
        assert!(jwt.verify(&none).is_err());
        let hs = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"guess"),
        )
        .unwrap();
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
