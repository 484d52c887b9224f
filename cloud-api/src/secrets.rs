//! Cluster client secrets and API token secrets: random, shown once, stored as keyed hashes.
//!
//! Both are 256-bit random values that nobody chooses, so a slow password hash buys nothing and
//! costs an unauthenticated caller's worth of CPU and 19 MiB per check. They are stored as
//! HMAC-SHA256 under a server key (`hmac-sha256$<key id>$<tag>`) and compared in constant time.
//! A check of an unknown id does the same work against a dummy tag, so the answer's timing does
//! not say which ids exist.
//!
//! Hashes from before (argon2id PHC strings) still verify, slowly and behind a small semaphore,
//! and the caller replaces them with an HMAC the first time they verify. Hashes under a key that
//! is no longer the first are replaced the same way, so keys rotate.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::RngCore;
use ring::hmac;
use sha2::{Digest, Sha256};

/// The shortest hashing key accepted, in bytes.
pub const MIN_KEY_BYTES: usize = 32;
const SCHEME: &str = "hmac-sha256";

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("a token hash key must be at least {MIN_KEY_BYTES} bytes; make one with `cloud-api admin generate-token-hash-key`")]
    ShortKey,
    #[error("no token hash key: give --token-hash-key-files, or run `cloud-api migrate` so the database holds one")]
    NoKey,
}

/// A fresh 256-bit secret, URL-safe, never starting with `-` (a command line would read
/// `--cloud-client-secret -Qx...` as an unknown flag). Drawing again in that case costs one
/// value in 64 of the first character's, not the secret's 256 random bits.
pub fn random_secret() -> String {
    loop {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let secret = URL_SAFE_NO_PAD.encode(bytes);
        if !secret.starts_with('-') {
            return secret;
        }
    }
}

/// What a secret is for: a hash made for one never verifies as the other.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    ClusterSecret,
    ApiToken,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            Purpose::ClusterSecret => b"intentmap cluster client secret\0",
            Purpose::ApiToken => b"intentmap API token\0",
        }
    }
}

/// One HMAC key with its id (16 hex digits of a hash of it; it names the key in stored hashes).
pub struct HashKey {
    kid: String,
    key: hmac::Key,
}

impl HashKey {
    pub fn new(bytes: &[u8]) -> Result<Self, SecretError> {
        if bytes.len() < MIN_KEY_BYTES {
            return Err(SecretError::ShortKey);
        }
        let mut id = Sha256::new();
        id.update(b"intentmap token hash key id\0");
        id.update(bytes);
        let kid = id.finalize()[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { kid, key: hmac::Key::new(hmac::HMAC_SHA256, bytes) })
    }

    /// A key file's contents: the text, surrounding whitespace removed.
    pub fn from_file_contents(text: &str) -> Result<Self, SecretError> {
        Self::new(text.trim().as_bytes())
    }

    pub fn kid(&self) -> &str {
        &self.kid
    }
}

/// Contents for a new key file: 256 random bits, URL-safe base64.
pub fn generate_key_file() -> String {
    format!("{}\n", random_secret())
}

/// The outcome of checking a secret against what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// It matches. `stale`: stored under a key other than the first; store a fresh hash.
    Matches { stale: bool },
    /// It does not match, or nothing is stored.
    Mismatch,
    /// Stored as argon2id: verify with [`verify_legacy`] (slow), then store a fresh hash.
    Legacy,
}

/// Hashes with the first key; verifies with any.
pub struct SecretHasher {
    keys: Vec<HashKey>,
    dummy_tag: [u8; 32],
}

impl SecretHasher {
    pub fn new(keys: Vec<HashKey>) -> Result<Self, SecretError> {
        if keys.is_empty() {
            return Err(SecretError::NoKey);
        }
        let mut dummy_tag = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut dummy_tag);
        Ok(Self { keys, dummy_tag })
    }

    pub fn primary_kid(&self) -> &str {
        &self.keys[0].kid
    }

    fn message(purpose: Purpose, secret: &str) -> Vec<u8> {
        [purpose.label(), secret.as_bytes()].concat()
    }

    /// The stored form of `secret`.
    pub fn hash(&self, purpose: Purpose, secret: &str) -> String {
        let key = &self.keys[0];
        let tag = hmac::sign(&key.key, &Self::message(purpose, secret));
        format!("{SCHEME}${}${}", key.kid, URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Checks `secret` against `stored` (`None`: the id is unknown) in constant time; every
    /// outcome but [`Check::Legacy`] costs one HMAC.
    pub fn check(&self, purpose: Purpose, secret: &str, stored: Option<&str>) -> Check {
        let message = Self::message(purpose, secret);
        let parsed = stored.and_then(|s| {
            let mut parts = s.split('$');
            match (parts.next(), parts.next(), parts.next(), parts.next()) {
                (Some(SCHEME), Some(kid), Some(tag), None) => {
                    Some((kid, URL_SAFE_NO_PAD.decode(tag).ok()?))
                }
                _ => None,
            }
        });
        let found = parsed.as_ref().and_then(|(kid, tag)| {
            self.keys.iter().position(|k| k.kid == *kid).map(|i| (i, tag.as_slice()))
        });
        match found {
            Some((index, tag)) => match hmac::verify(&self.keys[index].key, &message, tag) {
                Ok(()) => Check::Matches { stale: index != 0 },
                Err(_) => Check::Mismatch,
            },
            None => {
                // The same work as a real check, against a tag nobody can match.
                let _ = hmac::verify(&self.keys[0].key, &message, &self.dummy_tag);
                if stored.is_some_and(|s| s.starts_with("$argon2")) {
                    Check::Legacy
                } else {
                    if let Some((kid, _)) = parsed {
                        tracing::error!(kid, "a stored secret hash is under a key that is not configured; add that key to --token-hash-key-files");
                    }
                    Check::Mismatch
                }
            }
        }
    }
}

/// Checks `secret` against an argon2id PHC string from before keyed hashes (slow: 19 MiB and
/// tens of milliseconds; run it on a blocking thread behind a semaphore). A corrupt hash never
/// matches.
pub fn verify_legacy(secret: &str, stored: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    PasswordHash::new(stored)
        .is_ok_and(|h| argon2::Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_start_with_a_dash() {
        for _ in 0..2000 {
            let secret = random_secret();
            assert!(!secret.starts_with('-'), "{secret}");
            assert_eq!(secret.len(), 43);
        }
    }

    fn key() -> HashKey {
        HashKey::new(random_secret().as_bytes()).unwrap()
    }

    #[test]
    fn secrets_verify_only_against_their_own_hash_and_purpose() {
        let hasher = SecretHasher::new(vec![key()]).unwrap();
        let secret = random_secret();
        let stored = hasher.hash(Purpose::ClusterSecret, &secret);
        assert!(stored.starts_with(&format!("hmac-sha256${}$", hasher.primary_kid())), "{stored}");
        assert!(!stored.contains(&secret));
        assert_eq!(
            hasher.check(Purpose::ClusterSecret, &secret, Some(&stored)),
            Check::Matches { stale: false }
        );
        assert_eq!(
            hasher.check(Purpose::ClusterSecret, &random_secret(), Some(&stored)),
            Check::Mismatch
        );
        assert_eq!(
            hasher.check(Purpose::ApiToken, &secret, Some(&stored)),
            Check::Mismatch,
            "a cluster secret's hash is no API token's"
        );
        assert_eq!(hasher.check(Purpose::ClusterSecret, &secret, None), Check::Mismatch);
        assert_eq!(
            hasher.check(Purpose::ClusterSecret, &secret, Some("hmac-sha256$00$AAAA")),
            Check::Mismatch
        );
        assert_eq!(
            hasher.check(Purpose::ClusterSecret, &secret, Some("not a hash")),
            Check::Mismatch
        );
    }

    #[test]
    fn rotated_keys_verify_and_mark_the_hash_stale() {
        let (old, new) = (random_secret(), random_secret());
        let before = SecretHasher::new(vec![HashKey::new(old.as_bytes()).unwrap()]).unwrap();
        let secret = random_secret();
        let stored = before.hash(Purpose::ApiToken, &secret);
        let after = SecretHasher::new(vec![
            HashKey::new(new.as_bytes()).unwrap(),
            HashKey::new(old.as_bytes()).unwrap(),
        ])
        .unwrap();
        assert_eq!(
            after.check(Purpose::ApiToken, &secret, Some(&stored)),
            Check::Matches { stale: true }
        );
        let fresh = after.hash(Purpose::ApiToken, &secret);
        assert_eq!(
            after.check(Purpose::ApiToken, &secret, Some(&fresh)),
            Check::Matches { stale: false }
        );
        let without_old = SecretHasher::new(vec![HashKey::new(new.as_bytes()).unwrap()]).unwrap();
        assert_eq!(without_old.check(Purpose::ApiToken, &secret, Some(&stored)), Check::Mismatch);
    }

    #[test]
    fn argon2_hashes_from_before_are_recognised_and_verify() {
        use argon2::password_hash::{PasswordHasher, SaltString};
        let secret = random_secret();
        let salt = SaltString::generate(&mut rand::rngs::OsRng);
        let legacy =
            argon2::Argon2::default().hash_password(secret.as_bytes(), &salt).unwrap().to_string();
        let hasher = SecretHasher::new(vec![key()]).unwrap();
        assert_eq!(hasher.check(Purpose::ClusterSecret, &secret, Some(&legacy)), Check::Legacy);
        assert!(verify_legacy(&secret, &legacy));
        assert!(!verify_legacy(&random_secret(), &legacy));
        assert!(!verify_legacy(&secret, "$argon2id$garbage"));
    }

    #[test]
    fn keys_are_long_enough() {
        assert!(matches!(HashKey::new(b"short"), Err(SecretError::ShortKey)));
        assert!(HashKey::from_file_contents(&generate_key_file()).is_ok());
        assert!(matches!(SecretHasher::new(vec![]), Err(SecretError::NoKey)));
    }
}
