//! The proxy's certificate authority: generated with `rcgen`, kept in a Kubernetes Secret (in a
//! cluster) or a directory (outside one), rotated before it expires ([`rotation`]), and used to
//! issue leaf certificates for AWS host names on demand. Leaves share one key pair (generated at
//! start, never stored) and are cached per host until they near expiry.
//!
//! Opted-in pods trust this CA for every TLS connection they make, so it can only vouch for what
//! the proxy needs: its Name Constraints permit the DNS names `amazonaws.com`,
//! `amazonaws.com.cn` (and every name under them) and the webhook's own Service names, and
//! exclude every IP address. A leaf for any other name fails verification in the client, even
//! though the CA signed it. It lives [`rotation::RotationPolicy::validity`] (a year).

mod rotation;
mod store;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use rcgen::{
    BasicConstraints, CertificateParams, CidrSubnet, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, GeneralSubtree, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    NameConstraints,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;

pub use rotation::{plan, CaKeeper, Clock, Plan, RotationPolicy, SharedCa};
pub use store::{CaFacts, CaStore, StoredCa};

/// The CA's subject common name.
pub const CA_COMMON_NAME: &str = "intentmap aws-proxy CA";
/// The DNS subtrees every CA permits: the AWS zones the proxy intercepts.
pub const AWS_ZONES: [&str; 2] = ["amazonaws.com", "amazonaws.com.cn"];
/// How long an issued leaf is valid (it is re-issued from the cache well before).
const LEAF_VALIDITY: time::Duration = time::Duration::days(7);
/// How long a cached leaf is served before it is issued again.
const LEAF_REUSE: Duration = Duration::from_secs(24 * 3600);
/// At most this many hosts' leaves are cached; beyond it the cache starts again.
const MAX_CACHED_LEAVES: usize = 10_000;

/// Why the CA cannot be made, read, stored or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("generating a key pair: {0}")]
    Key(rcgen::Error),
    #[error("signing a certificate: {0}")]
    Sign(rcgen::Error),
    #[error("{0:?} are not valid certificate names")]
    Names(Vec<String>),
    #[error("the stored CA is unusable ({0}); delete it to have a new CA generated")]
    Unusable(String),
    #[error("{what} {path}: {source}")]
    Io { what: &'static str, path: std::path::PathBuf, source: std::io::Error },
    #[error("the CA Secret {secret}: {source} (RBAC needs get, create and update on it)")]
    Kube { secret: String, source: kube::Error },
    #[error("keeping the CA in a Secret needs Kubernetes access; outside a cluster pass --ca-dir instead")]
    NoKubernetes,
    #[error("the CA store keeps changing under us ({0}); check who else writes it")]
    Contended(String),
}

/// A leaf certificate issued by the CA, in both PEM (for files and Secrets) and rustls form.
pub struct IssuedCert {
    /// The leaf followed by the signing CA's certificate.
    pub cert_pem: String,
    pub key_pem: String,
    pub certified_key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

/// The CA as the proxy and the webhook use it at one moment: the certificate that signs leaves,
/// and every certificate clients must trust (the signing one and, while a rotation overlaps,
/// the other).
pub struct CertificateAuthority {
    signing_pem: String,
    signing_der: CertificateDer<'static>,
    signing_not_after: OffsetDateTime,
    trusted_pem: String,
    issuer: Issuer<'static, KeyPair>,
    leaf_key: KeyPair,
    leaf_signing_key: Arc<dyn rustls::sign::SigningKey>,
    leaves: Mutex<HashMap<String, (Instant, Arc<rustls::ServerConfig>)>>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority")
            .field("trusted_pem", &self.trusted_pem)
            .finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA held only in memory, permitted the AWS zones only (tests, emulators).
    pub fn generate() -> Result<Self, CaError> {
        Self::generate_for(&[])
    }

    /// A new CA held only in memory, permitted the AWS zones and `names` (e.g. the webhook's
    /// Service names).
    pub fn generate_for(names: &[String]) -> Result<Self, CaError> {
        let stored = generate_ca(
            OffsetDateTime::now_utc(),
            &permitted_names(names),
            RotationPolicy::default().validity,
        )?;
        Self::from_pem(&stored.cert_pem, &stored.key_pem)
    }

    /// A CA from its certificate and PKCS#8 key in PEM, trusted alone.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> Result<Self, CaError> {
        let stored = StoredCa { cert_pem: cert_pem.to_owned(), key_pem: key_pem.to_owned() };
        Self::with_trusted(&stored, &[&stored])
    }

    /// A CA signing with `signing` while clients are told to trust every one of `trusted`.
    pub(crate) fn with_trusted(signing: &StoredCa, trusted: &[&StoredCa]) -> Result<Self, CaError> {
        let key = KeyPair::from_pem(&signing.key_pem)
            .map_err(|e| CaError::Unusable(format!("the CA key is not a PKCS#8 PEM key: {e}")))?;
        let signing_der = CertificateDer::from(signing.der()?);
        let facts = store::CaFacts::of(&signing_der)?;
        let issuer = Issuer::from_ca_cert_der(&signing_der, key)
            .map_err(|e| CaError::Unusable(format!("the CA certificate: {e}")))?;
        let leaf_key = KeyPair::generate().map_err(CaError::Key)?;
        let leaf_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let leaf_signing_key = rustls::crypto::ring::sign::any_supported_type(&leaf_der)
            .map_err(|e| CaError::Unusable(format!("the leaf key is not usable by rustls: {e}")))?;
        let pem = |ca: &StoredCa| ca.cert_pem.trim().to_owned() + "\n";
        let mut trusted_pem = pem(signing);
        for other in trusted.iter().filter(|ca| ca.cert_pem.trim() != signing.cert_pem.trim()) {
            trusted_pem.push_str(&pem(other));
        }
        Ok(Self {
            signing_pem: pem(signing),
            signing_der,
            signing_not_after: facts.not_after,
            trusted_pem,
            issuer,
            leaf_key,
            leaf_signing_key,
            leaves: Mutex::default(),
        })
    }

    /// Loads the CA from `store`, or generates and stores one at first start, replacing a stored
    /// CA that is due for rotation or not constrained (see [`CaKeeper`]). When several replicas
    /// race to create it, the losers read the winner's.
    pub async fn load_or_create(
        store: &CaStore,
        kube: Option<kube::Client>,
    ) -> Result<Self, CaError> {
        CaKeeper::new(store.clone(), kube, &[]).refresh().await
    }

    /// The CA certificates clients must trust, PEM (`AWS_CA_BUNDLE`, the webhook's `caBundle`):
    /// the signing CA first, then the other while a rotation overlaps.
    pub fn ca_pem(&self) -> &str {
        &self.trusted_pem
    }

    /// The certificate that signs leaves now, PEM.
    pub fn signing_ca_pem(&self) -> &str {
        &self.signing_pem
    }

    /// Issues a leaf certificate for `names` (DNS names or IP addresses), signed by the CA. The
    /// CA's Name Constraints decide which of them clients accept.
    pub fn issue(&self, names: &[String]) -> Result<IssuedCert, CaError> {
        let first = names.first().ok_or_else(|| CaError::Names(Vec::new()))?;
        let mut params =
            CertificateParams::new(names.to_vec()).map_err(|_| CaError::Names(names.to_vec()))?;
        let now = OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = (now + LEAF_VALIDITY).min(self.signing_not_after);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, first.clone());
        params.key_usages =
            vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&self.leaf_key, &self.issuer).map_err(CaError::Sign)?;
        let chain = vec![cert.der().clone(), self.signing_der.clone()];
        Ok(IssuedCert {
            cert_pem: format!("{}{}", cert.pem(), self.signing_pem),
            key_pem: self.leaf_key.serialize_pem(),
            certified_key: Arc::new(CertifiedKey::new(chain, self.leaf_signing_key.clone())),
        })
    }

    /// A TLS server configuration presenting a leaf for `host` (ALPN h2 and http/1.1), issued on
    /// first use and cached.
    pub fn server_config(&self, host: &str) -> Result<Arc<rustls::ServerConfig>, CaError> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some((issued, config)) =
            self.leaves.lock().unwrap_or_else(PoisonError::into_inner).get(&host)
        {
            if issued.elapsed() < LEAF_REUSE {
                return Ok(config.clone());
            }
        }
        let leaf = self.issue(std::slice::from_ref(&host))?;
        let config = Arc::new(server_config_with(leaf.certified_key, &[b"h2", b"http/1.1"]));
        let mut leaves = self.leaves.lock().unwrap_or_else(PoisonError::into_inner);
        if leaves.len() >= MAX_CACHED_LEAVES {
            leaves.clear();
        }
        leaves.insert(host, (Instant::now(), config.clone()));
        Ok(config)
    }
}

/// A rustls server configuration that always presents `key`.
pub fn server_config_with(key: Arc<CertifiedKey>, alpn: &[&[u8]]) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_no_client_auth()
    .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

/// The DNS subtrees a CA permits: the AWS zones, then `extra` (lower case, without duplicates).
pub fn permitted_names(extra: &[String]) -> Vec<String> {
    let mut names: Vec<String> = AWS_ZONES.iter().map(|zone| zone.to_string()).collect();
    for name in extra {
        let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
        if !name.is_empty() && !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// A new self-signed CA valid from an hour before `now` for `validity`, permitted the DNS
/// subtrees `permitted` and no IP address.
pub fn generate_ca(
    now: OffsetDateTime,
    permitted: &[String],
    validity: time::Duration,
) -> Result<StoredCa, CaError> {
    let key = KeyPair::generate().map_err(CaError::Key)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name.push(DnType::OrganizationName, "intentmap");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    params.name_constraints = Some(NameConstraints {
        permitted_subtrees: permitted
            .iter()
            .map(|name| GeneralSubtree::DnsName(name.clone()))
            .collect(),
        // Without an IP constraint every IP address would be permitted (RFC 5280 4.2.1.10).
        excluded_subtrees: vec![
            GeneralSubtree::IpAddress(CidrSubnet::V4([0; 4], [0; 4])),
            GeneralSubtree::IpAddress(CidrSubnet::V6([0; 16], [0; 16])),
        ],
    });
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + validity;
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key).map_err(CaError::Sign)?;
    Ok(StoredCa { cert_pem: cert.pem(), key_pem: key.serialize_pem() })
}

fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .expect("the system random source works");
    bytes[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_cached_per_host() {
        let ca = CertificateAuthority::generate().unwrap();
        let a = ca.server_config("S3.amazonaws.com.").unwrap();
        let b = ca.server_config("s3.amazonaws.com").unwrap();
        let c = ca.server_config("sqs.us-east-1.amazonaws.com").unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &c));
    }

    #[test]
    fn a_broken_store_says_what_to_do() {
        let err = CertificateAuthority::from_pem("not a cert", "not a key").unwrap_err();
        assert!(
            err.to_string().contains("PKCS#8") && err.to_string().contains("delete it"),
            "{err}"
        );
    }

    #[test]
    fn permitted_names_start_with_the_aws_zones() {
        let names = permitted_names(&[
            "Aws-Proxy.intentmap.svc.".into(),
            "amazonaws.com".into(),
            " ".into(),
        ]);
        assert_eq!(names, ["amazonaws.com", "amazonaws.com.cn", "aws-proxy.intentmap.svc"]);
    }

    #[test]
    fn leaves_never_outlive_the_ca() {
        let now = OffsetDateTime::now_utc();
        let stored = generate_ca(
            now - time::Duration::days(362),
            &permitted_names(&[]),
            time::Duration::days(365),
        )
        .unwrap();
        let ca = CertificateAuthority::from_pem(&stored.cert_pem, &stored.key_pem).unwrap();
        let leaf = ca.issue(&["s3.amazonaws.com".into()]).unwrap();
        let der = leaf.certified_key.cert[0].clone();
        let facts = store::CaFacts::of(&der).unwrap();
        assert!(
            facts.not_after <= ca.signing_not_after,
            "{} > {}",
            facts.not_after,
            ca.signing_not_after
        );
    }
}
