//! Where the CAs are kept: a Kubernetes Secret or a directory, each holding the current CA
//! (`ca.crt`, `ca.key`) and, while a rotation overlaps, the next one (`next.crt`, `next.key`).
//! Writes to a Secret carry its `resourceVersion`, so replicas rotating at once do not overwrite
//! each other: the loser sees a conflict and reads again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, ObjectMeta, PostParams};
use rustls::pki_types::CertificateDer;
use time::OffsetDateTime;

use super::CaError;

/// The file or Secret keys of the (at most two) CAs kept, oldest first.
const SLOTS: [(&str, &str); 2] = [("ca.crt", "ca.key"), ("next.crt", "next.key")];

/// Where the CA's certificate and key are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaStore {
    /// A directory holding `ca.crt` and `ca.key` (keys written with mode 0600).
    Directory(PathBuf),
    /// A Kubernetes Secret with `ca.crt` and `ca.key`.
    Secret { namespace: String, name: String },
}

/// One CA as stored: its certificate and PKCS#8 key, PEM.
#[derive(Clone, PartialEq, Eq)]
pub struct StoredCa {
    pub cert_pem: String,
    pub key_pem: String,
}

impl std::fmt::Debug for StoredCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredCa").field("cert_pem", &self.cert_pem).finish_non_exhaustive()
    }
}

impl StoredCa {
    /// The certificate, DER.
    pub fn der(&self) -> Result<Vec<u8>, CaError> {
        first_pem_block(&self.cert_pem, "CERTIFICATE").ok_or_else(|| {
            CaError::Unusable("the CA certificate is not a PEM CERTIFICATE".to_owned())
        })
    }

    /// What rotation needs to know about the certificate.
    pub fn facts(&self) -> Result<CaFacts, CaError> {
        CaFacts::of(&CertificateDer::from(self.der()?))
    }
}

/// A certificate's validity and Name Constraints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaFacts {
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The permitted DNS subtrees; `None` when the certificate has no Name Constraints.
    pub permitted_dns: Option<Vec<String>>,
    /// Whether every IPv4 and IPv6 address is excluded.
    pub excludes_all_ips: bool,
}

impl CaFacts {
    pub fn of(der: &CertificateDer<'_>) -> Result<Self, CaError> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der)
            .map_err(|e| CaError::Unusable(format!("the certificate does not parse: {e}")))?;
        let validity = cert.validity();
        let constraints = cert
            .name_constraints()
            .map_err(|e| CaError::Unusable(format!("its Name Constraints do not parse: {e}")))?;
        let (permitted_dns, excludes_all_ips) = match constraints {
            None => (None, false),
            Some(ext) => {
                let permitted = ext.value.permitted_subtrees.iter().flatten();
                let dns = permitted.filter_map(|subtree| match subtree.base {
                    GeneralName::DNSName(name) => Some(name.to_ascii_lowercase()),
                    _ => None,
                });
                let excluded: Vec<&[u8]> = ext
                    .value
                    .excluded_subtrees
                    .iter()
                    .flatten()
                    .filter_map(|subtree| match subtree.base {
                        GeneralName::IPAddress(bytes) => Some(bytes),
                        _ => None,
                    })
                    .collect();
                let everything = |len: usize| {
                    excluded
                        .iter()
                        .any(|bytes| bytes.len() == 2 * len && bytes[len..].iter().all(|b| *b == 0))
                };
                (Some(dns.collect()), everything(4) && everything(16))
            }
        };
        Ok(Self {
            not_before: validity.not_before.to_datetime(),
            not_after: validity.not_after.to_datetime(),
            permitted_dns,
            excludes_all_ips,
        })
    }
}

/// What a store holds, oldest first, and the version to write against.
#[derive(Debug, Clone, Default)]
pub(crate) struct Loaded {
    pub cas: Vec<StoredCa>,
    /// The Secret's `resourceVersion`; `None` when there is no Secret yet (or for a directory).
    pub version: Option<String>,
    pub secret: Option<Secret>,
}

/// A write lost a race with another writer: read again.
pub(crate) struct Conflict;

impl CaStore {
    pub fn describe(&self) -> String {
        match self {
            CaStore::Directory(dir) => dir.display().to_string(),
            CaStore::Secret { namespace, name } => format!("Secret {namespace}/{name}"),
        }
    }

    pub(crate) async fn load(&self, kube: Option<&kube::Client>) -> Result<Loaded, CaError> {
        match self {
            CaStore::Directory(dir) => load_dir(dir),
            CaStore::Secret { namespace, name } => {
                let api: Api<Secret> =
                    Api::namespaced(kube.ok_or(CaError::NoKubernetes)?.clone(), namespace);
                let secret = api.get_opt(name).await.map_err(|source| CaError::Kube {
                    secret: format!("{namespace}/{name}"),
                    source,
                })?;
                let Some(secret) = secret else { return Ok(Loaded::default()) };
                let data = secret.data.clone().unwrap_or_default();
                let text =
                    |key: &str| data.get(key).map(|b| String::from_utf8_lossy(&b.0).into_owned());
                let cas = SLOTS
                    .iter()
                    .filter_map(|(cert, key)| {
                        Some(StoredCa { cert_pem: text(cert)?, key_pem: text(key)? })
                    })
                    .collect();
                Ok(Loaded {
                    cas,
                    version: secret.metadata.resource_version.clone(),
                    secret: Some(secret),
                })
            }
        }
    }

    /// Replaces what `loaded` was read as with `cas` (oldest first, at most two).
    pub(crate) async fn save(
        &self,
        kube: Option<&kube::Client>,
        loaded: &Loaded,
        cas: &[StoredCa],
    ) -> Result<Result<(), Conflict>, CaError> {
        match self {
            CaStore::Directory(dir) => save_dir(dir, cas).map(Ok),
            CaStore::Secret { namespace, name } => {
                let api: Api<Secret> =
                    Api::namespaced(kube.ok_or(CaError::NoKubernetes)?.clone(), namespace);
                let mut secret = loaded.secret.clone().unwrap_or_else(|| Secret {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some(namespace.clone()),
                        ..Default::default()
                    },
                    type_: Some("Opaque".to_owned()),
                    ..Default::default()
                });
                let mut data: BTreeMap<String, ByteString> = secret.data.take().unwrap_or_default();
                for (i, (cert, key)) in SLOTS.iter().enumerate() {
                    match cas.get(i) {
                        Some(ca) => {
                            data.insert(
                                cert.to_string(),
                                ByteString(ca.cert_pem.clone().into_bytes()),
                            );
                            data.insert(
                                key.to_string(),
                                ByteString(ca.key_pem.clone().into_bytes()),
                            );
                        }
                        None => {
                            data.remove(*cert);
                            data.remove(*key);
                        }
                    }
                }
                secret.data = Some(data);
                let pp = PostParams {
                    field_manager: Some("aws-proxy".to_owned()),
                    ..PostParams::default()
                };
                let written = match &loaded.version {
                    None => api.create(&pp, &secret).await,
                    Some(_) => api.replace(name, &pp, &secret).await,
                };
                match written {
                    Ok(_) => Ok(Ok(())),
                    Err(kube::Error::Api(status)) if status.code == 409 => Ok(Err(Conflict)),
                    Err(source) => {
                        Err(CaError::Kube { secret: format!("{namespace}/{name}"), source })
                    }
                }
            }
        }
    }
}

fn load_dir(dir: &Path) -> Result<Loaded, CaError> {
    let mut cas = Vec::new();
    for (cert, key) in SLOTS {
        let (cert_path, key_path) = (dir.join(cert), dir.join(key));
        if !cert_path.exists() && !key_path.exists() {
            continue;
        }
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| CaError::Io {
                what: "reading",
                path: path.to_owned(),
                source,
            })
        };
        cas.push(StoredCa { cert_pem: read(&cert_path)?, key_pem: read(&key_path)? });
    }
    Ok(Loaded { cas, ..Loaded::default() })
}

fn save_dir(dir: &Path, cas: &[StoredCa]) -> Result<(), CaError> {
    std::fs::create_dir_all(dir).map_err(|source| CaError::Io {
        what: "creating",
        path: dir.to_owned(),
        source,
    })?;
    for (i, (cert, key)) in SLOTS.iter().enumerate() {
        let (cert_path, key_path) = (dir.join(cert), dir.join(key));
        match cas.get(i) {
            Some(ca) => {
                write_atomically(&key_path, &ca.key_pem, 0o600)?;
                write_atomically(&cert_path, &ca.cert_pem, 0o644)?;
            }
            None => {
                for path in [cert_path, key_path] {
                    match std::fs::remove_file(&path) {
                        Err(source) if source.kind() != std::io::ErrorKind::NotFound => {
                            return Err(CaError::Io { what: "removing", path, source })
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    Ok(())
}

/// Writes `contents` to a new file beside `path` with `mode`, then renames it over `path`.
fn write_atomically(path: &Path, contents: &str, mode: u32) -> Result<(), CaError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let tmp = path.with_extension("tmp");
    fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CaError + 'a {
        move |source| CaError::Io { what, path: path.to_owned(), source }
    }
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(io("creating", &tmp))?;
    file.write_all(contents.as_bytes()).map_err(io("writing", &tmp))?;
    file.sync_all().map_err(io("writing", &tmp))?;
    std::fs::rename(&tmp, path).map_err(io("renaming into place", path))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ca::{generate_ca, permitted_names};

    #[test]
    fn a_directory_keeps_keys_private_and_forgets_a_retired_slot() {
        let dir = std::env::temp_dir().join(format!("aws-proxy-ca-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = CaStore::Directory(dir.clone());
        let now = OffsetDateTime::now_utc();
        let (a, b) = (
            generate_ca(now, &permitted_names(&[]), time::Duration::days(1)).unwrap(),
            generate_ca(now, &permitted_names(&[]), time::Duration::days(2)).unwrap(),
        );
        save_dir(&dir, &[a.clone(), b.clone()]).unwrap();
        assert_eq!(load_dir(&dir).unwrap().cas, [a.clone(), b.clone()]);
        use std::os::unix::fs::PermissionsExt as _;
        for key in ["ca.key", "next.key"] {
            assert_eq!(
                std::fs::metadata(dir.join(key)).unwrap().permissions().mode() & 0o777,
                0o600,
                "{key}"
            );
        }
        save_dir(&dir, std::slice::from_ref(&b)).unwrap();
        assert_eq!(load_dir(&dir).unwrap().cas, [b]);
        assert!(!dir.join("next.crt").exists() && !dir.join("next.key").exists());
        let _ = store.describe();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn facts_tell_constraints_and_validity() {
        let now = OffsetDateTime::now_utc().replace_nanosecond(0).unwrap();
        let ca = generate_ca(
            now,
            &permitted_names(&["aws-proxy.intentmap.svc".into()]),
            time::Duration::days(365),
        )
        .unwrap();
        let facts = ca.facts().unwrap();
        assert_eq!(
            facts.permitted_dns.as_deref().unwrap(),
            ["amazonaws.com", "amazonaws.com.cn", "aws-proxy.intentmap.svc"]
        );
        assert!(facts.excludes_all_ips);
        assert_eq!(
            facts.not_after - facts.not_before,
            time::Duration::days(365) + time::Duration::hours(1)
        );
    }
}
