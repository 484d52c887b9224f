//! The proxy's certificate authority: generated with `rcgen` at first start, kept in a Kubernetes
//! Secret (in a cluster) or in a directory (outside one), and used to issue leaf certificates for
//! AWS host names on demand. Leaves share one key pair (generated at start, never stored) and are
//! cached per host until they near expiry.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::sign::CertifiedKey;

/// The CA's subject common name.
pub const CA_COMMON_NAME: &str = "intentmap aws-proxy CA";
/// How long a generated CA is valid.
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
/// How long an issued leaf is valid (it is re-issued from the cache well before).
const LEAF_VALIDITY: time::Duration = time::Duration::days(7);
/// How long a cached leaf is served before it is issued again.
const LEAF_REUSE: Duration = Duration::from_secs(24 * 3600);
/// At most this many hosts' leaves are cached; beyond it the cache starts again.
const MAX_CACHED_LEAVES: usize = 10_000;

/// Where the CA's certificate and key are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaStore {
    /// A directory holding `ca.crt` and `ca.key` (the key written with mode 0600).
    Directory(PathBuf),
    /// A Kubernetes Secret with `ca.crt` and `ca.key`.
    Secret { namespace: String, name: String },
}

/// A leaf certificate issued by the CA, in both PEM (for files and Secrets) and rustls form.
pub struct IssuedCert {
    /// The leaf followed by the CA certificate.
    pub cert_pem: String,
    pub key_pem: String,
    pub certified_key: Arc<CertifiedKey>,
}

impl std::fmt::Debug for IssuedCert {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedCert").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

pub struct CertificateAuthority {
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
    leaf_key: KeyPair,
    leaf_signing_key: Arc<dyn rustls::sign::SigningKey>,
    leaves: Mutex<HashMap<String, (Instant, Arc<rustls::ServerConfig>)>>,
}

impl std::fmt::Debug for CertificateAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertificateAuthority").field("ca_pem", &self.ca_pem).finish_non_exhaustive()
    }
}

impl CertificateAuthority {
    /// A new CA held only in memory (tests, and the first step of [`Self::load_or_create`]).
    pub fn generate() -> anyhow::Result<Self> {
        let (cert_pem, key_pem) = generate_ca_pem()?;
        Self::from_pem(&cert_pem, &key_pem)
    }

    /// A CA from its certificate and PKCS#8 key in PEM.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Self> {
        let key = KeyPair::from_pem(key_pem).context("the CA key is not a PKCS#8 PEM key")?;
        let ca_der = CertificateDer::from(
            first_pem_block(cert_pem, "CERTIFICATE").context("the CA certificate is not a PEM CERTIFICATE; delete it to have a new CA generated")?,
        );
        let issuer = Issuer::from_ca_cert_pem(cert_pem, key).context("the CA certificate cannot be parsed; delete it to have a new CA generated")?;
        let leaf_key = KeyPair::generate().context("generating the leaf key")?;
        let leaf_der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let leaf_signing_key = rustls::crypto::ring::sign::any_supported_type(&leaf_der).context("the leaf key is not usable by rustls")?;
        Ok(Self { ca_pem: cert_pem.trim().to_owned() + "\n", ca_der, issuer, leaf_key, leaf_signing_key, leaves: Mutex::default() })
    }

    /// Loads the CA from `store`, or generates and stores one at first start. When several
    /// replicas race to create the Secret, the loser reads the winner's.
    pub async fn load_or_create(store: &CaStore, kube: Option<kube::Client>) -> anyhow::Result<Self> {
        match store {
            CaStore::Directory(dir) => Self::load_or_create_in(dir),
            CaStore::Secret { namespace, name } => {
                let client = kube.context("keeping the CA in a Secret needs Kubernetes access; outside a cluster pass --ca-dir instead")?;
                let api: Api<Secret> = Api::namespaced(client, namespace);
                for _ in 0..3 {
                    if let Some(secret) = api.get_opt(name).await.with_context(|| format!("reading the CA Secret {namespace}/{name}"))? {
                        let (cert, key) = secret_pem(&secret).with_context(|| format!("the Secret {namespace}/{name} lacks ca.crt/ca.key; delete it"))?;
                        tracing::info!(secret = %format!("{namespace}/{name}"), "loaded the CA");
                        return Self::from_pem(&cert, &key);
                    }
                    let (cert, key) = generate_ca_pem()?;
                    let secret = Secret {
                        metadata: kube::api::ObjectMeta { name: Some(name.clone()), namespace: Some(namespace.clone()), ..Default::default() },
                        data: Some(
                            [("ca.crt".to_owned(), ByteString(cert.clone().into_bytes())), ("ca.key".to_owned(), ByteString(key.clone().into_bytes()))]
                                .into_iter()
                                .collect(),
                        ),
                        type_: Some("Opaque".to_owned()),
                        ..Default::default()
                    };
                    match api.create(&PostParams::default(), &secret).await {
                        Ok(_) => {
                            tracing::info!(secret = %format!("{namespace}/{name}"), "generated a new CA and stored it");
                            return Self::from_pem(&cert, &key);
                        }
                        Err(kube::Error::Api(e)) if e.code == 409 => continue,
                        Err(e) => return Err(e).with_context(|| format!("storing the CA in Secret {namespace}/{name} (RBAC needs create on secrets)")),
                    }
                }
                anyhow::bail!("the CA Secret {namespace}/{name} keeps appearing and disappearing; check who deletes it")
            }
        }
    }

    fn load_or_create_in(dir: &Path) -> anyhow::Result<Self> {
        let (cert_path, key_path) = (dir.join("ca.crt"), dir.join("ca.key"));
        if cert_path.exists() || key_path.exists() {
            let cert = std::fs::read_to_string(&cert_path).with_context(|| format!("reading {}", cert_path.display()))?;
            let key = std::fs::read_to_string(&key_path).with_context(|| format!("reading {}", key_path.display()))?;
            tracing::info!(dir = %dir.display(), "loaded the CA");
            return Self::from_pem(&cert, &key).with_context(|| format!("the CA in {}", dir.display()));
        }
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let (cert, key) = generate_ca_pem()?;
        write_private(&key_path, &key)?;
        std::fs::write(&cert_path, &cert).with_context(|| format!("writing {}", cert_path.display()))?;
        tracing::info!(dir = %dir.display(), "generated a new CA and stored it");
        Self::from_pem(&cert, &key)
    }

    /// The CA certificate in PEM: what clients must trust (`AWS_CA_BUNDLE`).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Issues a leaf certificate for `names` (DNS names or IP addresses), signed by the CA.
    pub fn issue(&self, names: &[String]) -> anyhow::Result<IssuedCert> {
        anyhow::ensure!(!names.is_empty(), "a certificate needs at least one name");
        let mut params = CertificateParams::new(names.to_vec()).with_context(|| format!("{names:?} are not valid certificate names"))?;
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + LEAF_VALIDITY;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, names[0].clone());
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(random_serial());
        let cert = params.signed_by(&self.leaf_key, &self.issuer).context("signing the leaf certificate")?;
        let chain = vec![cert.der().clone(), self.ca_der.clone()];
        Ok(IssuedCert {
            cert_pem: format!("{}{}", cert.pem(), self.ca_pem),
            key_pem: self.leaf_key.serialize_pem(),
            certified_key: Arc::new(CertifiedKey::new(chain, self.leaf_signing_key.clone())),
        })
    }

    /// A TLS server configuration presenting a leaf for `host` (ALPN h2 and http/1.1), issued on
    /// first use and cached.
    pub fn server_config(&self, host: &str) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if let Some((issued, config)) = self.leaves.lock().expect("leaf cache poisoned").get(&host) {
            if issued.elapsed() < LEAF_REUSE {
                return Ok(config.clone());
            }
        }
        let leaf = self.issue(std::slice::from_ref(&host))?;
        let config = Arc::new(server_config_with(leaf.certified_key, &[b"h2", b"http/1.1"]));
        let mut leaves = self.leaves.lock().expect("leaf cache poisoned");
        if leaves.len() >= MAX_CACHED_LEAVES {
            leaves.clear();
        }
        leaves.insert(host, (Instant::now(), config.clone()));
        Ok(config)
    }
}

/// A rustls server configuration that always presents `key`.
pub fn server_config_with(key: Arc<CertifiedKey>, alpn: &[&[u8]]) -> rustls::ServerConfig {
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(key)));
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

fn generate_ca_pem() -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating the CA key")?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, CA_COMMON_NAME);
    params.distinguished_name.push(DnType::OrganizationName, "intentmap");
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    params.serial_number = Some(random_serial());
    let cert = params.self_signed(&key).context("self-signing the CA certificate")?;
    Ok((cert.pem(), key.serialize_pem()))
}

fn random_serial() -> rcgen::SerialNumber {
    let mut bytes = [0u8; 16];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).expect("the system random source works");
    bytes[0] &= 0x7f;
    rcgen::SerialNumber::from_slice(&bytes)
}

fn first_pem_block(pem: &str, label: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = pem.find(&begin)? + begin.len();
    let stop = start + pem[start..].find(&end)?;
    let body: String = pem[start..stop].chars().filter(|c| !c.is_whitespace()).collect();
    base64::engine::general_purpose::STANDARD.decode(body).ok()
}

fn secret_pem(secret: &Secret) -> Option<(String, String)> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| data.get(k).and_then(|b| String::from_utf8(b.0.clone()).ok());
    Some((text("ca.crt")?, text("ca.key")?))
}

fn write_private(path: &Path, contents: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).with_context(|| format!("creating {}", path.display()))?;
    file.write_all(contents.as_bytes()).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_ca_is_loaded_again_and_its_leaves_chain_to_it() {
        let dir = std::env::temp_dir().join(format!("aws-proxy-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let first = CertificateAuthority::load_or_create_in(&dir).unwrap();
        let again = CertificateAuthority::load_or_create_in(&dir).unwrap();
        assert_eq!(first.ca_pem(), again.ca_pem());
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(std::fs::metadata(dir.join("ca.key")).unwrap().permissions().mode() & 0o777, 0o600);
        let leaf = again.issue(&["s3.us-east-1.amazonaws.com".to_owned()]).unwrap();
        assert!(leaf.cert_pem.ends_with(first.ca_pem()));
        assert_eq!(leaf.certified_key.cert.len(), 2);
        std::fs::remove_dir_all(&dir).unwrap();
    }

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
        assert!(format!("{err:#}").contains("PKCS#8"), "{err:#}");
    }
}
