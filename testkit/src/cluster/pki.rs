//! A test cluster's certificates and keys, generated with rcgen at every start: one CA that
//! signs the API server's and the kubelet's serving certificates and every client certificate
//! (a component's identity is its certificate's CN and O, as in a kubeadm cluster), and the
//! service-account signing key.

use std::net::IpAddr;
use std::path::Path;

use anyhow::{Context, Result};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};

use super::config::{API_SERVICE_IP, NODE_IP, NODE_IP6, NODE_NAME};

/// A certificate and its key, in PEM.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: String,
    pub key: String,
}

/// Everything the components need, written to `<run dir>/pki`.
#[derive(Debug)]
pub struct Pki {
    pub ca: Pair,
    pub apiserver: Pair,
    pub apiserver_kubelet_client: Pair,
    pub kubelet: Pair,
    pub admin: Pair,
    pub controller_manager: Pair,
    pub scheduler: Pair,
    pub kubelet_client: Pair,
    pub kube_proxy: Pair,
    /// The service-account signing key (private, PEM) and its public half.
    pub service_account_key: String,
    pub service_account_pub: String,
}

/// Who a client certificate says it is: user (CN) and groups (O).
struct Identity<'a> {
    user: &'a str,
    groups: &'a [&'a str],
}

impl Pki {
    pub fn generate() -> Result<Self> {
        let ca_key = KeyPair::generate().context("generating the cluster CA key")?;
        let mut ca_params = CertificateParams::default();
        ca_params.distinguished_name = name("intentmap-test-ca", &[]);
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params.self_signed(&ca_key).context("self-signing the cluster CA")?;
        let ca = Pair { cert: ca_cert.pem(), key: ca_key.serialize_pem() };
        let issuer = Issuer::new(ca_params, ca_key);

        let api_names = [
            "kubernetes",
            "kubernetes.default",
            "kubernetes.default.svc",
            "kubernetes.default.svc.cluster.local",
            "localhost",
        ];
        let api_ips = [NODE_IP, NODE_IP6, API_SERVICE_IP, "127.0.0.1"];
        let apiserver = serving(&issuer, "kube-apiserver", &api_names, &api_ips)?;
        let kubelet = serving(
            &issuer,
            NODE_NAME,
            &[NODE_NAME, "localhost"],
            &[NODE_IP, NODE_IP6, "127.0.0.1"],
        )?;
        let client = |user: &str, groups: &[&str]| client(&issuer, &Identity { user, groups });
        let service_account =
            KeyPair::generate().context("generating the service-account signing key")?;
        Ok(Self {
            apiserver,
            kubelet,
            apiserver_kubelet_client: client("kube-apiserver-kubelet-client", &["system:masters"])?,
            admin: client("kubernetes-admin", &["system:masters"])?,
            controller_manager: client("system:kube-controller-manager", &[])?,
            scheduler: client("system:kube-scheduler", &[])?,
            kubelet_client: client(&format!("system:node:{NODE_NAME}"), &["system:nodes"])?,
            kube_proxy: client("system:kube-proxy", &[])?,
            service_account_key: service_account.serialize_pem(),
            service_account_pub: service_account.public_key_pem(),
            ca,
        })
    }

    /// Writes every file as `<dir>/<name>.crt` / `.key` (keys mode 0600).
    pub fn write(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let pairs = [
            ("ca", &self.ca),
            ("apiserver", &self.apiserver),
            ("apiserver-kubelet-client", &self.apiserver_kubelet_client),
            ("kubelet", &self.kubelet),
            ("admin", &self.admin),
        ];
        for (name, pair) in pairs {
            std::fs::write(dir.join(format!("{name}.crt")), &pair.cert)
                .with_context(|| format!("writing {name}.crt"))?;
            write_private(&dir.join(format!("{name}.key")), &pair.key)?;
        }
        write_private(&dir.join("sa.key"), &self.service_account_key)?;
        std::fs::write(dir.join("sa.pub"), &self.service_account_pub).context("writing sa.pub")?;
        Ok(())
    }
}

fn name(common_name: &str, organizations: &[&str]) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    for org in organizations {
        dn.push(DnType::OrganizationName, *org);
    }
    dn.push(DnType::CommonName, common_name);
    dn
}

fn serving(
    issuer: &Issuer<'_, KeyPair>,
    common_name: &str,
    dns: &[&str],
    ips: &[&str],
) -> Result<Pair> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(common_name, &[]);
    for d in dns {
        params.subject_alt_names.push(SanType::DnsName(
            (*d).try_into().with_context(|| format!("{d} is not a DNS name"))?,
        ));
    }
    for ip in ips {
        params.subject_alt_names.push(SanType::IpAddress(
            ip.parse::<IpAddr>().with_context(|| format!("{ip} is not an IP address"))?,
        ));
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    sign(issuer, params, common_name)
}

fn client(issuer: &Issuer<'_, KeyPair>, identity: &Identity) -> Result<Pair> {
    let mut params = CertificateParams::default();
    params.distinguished_name = name(identity.user, identity.groups);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    sign(issuer, params, identity.user)
}

fn sign(issuer: &Issuer<'_, KeyPair>, mut params: CertificateParams, what: &str) -> Result<Pair> {
    params.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().with_context(|| format!("generating the key of {what}"))?;
    let cert = params
        .signed_by(&key, issuer)
        .with_context(|| format!("signing the certificate of {what}"))?;
    Ok(Pair { cert: cert.pem(), key: key.serialize_pem() })
}

fn write_private(path: &Path, text: &str) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(text.as_bytes()).with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_certificate_is_issued_by_the_ca() {
        let pki = Pki::generate().unwrap();
        for pair in [&pki.apiserver, &pki.kubelet, &pki.admin, &pki.kubelet_client, &pki.kube_proxy]
        {
            assert!(pair.cert.starts_with("-----BEGIN CERTIFICATE-----"), "{}", pair.cert);
            assert!(pair.key.contains("PRIVATE KEY"));
            assert_ne!(pair.cert, pki.ca.cert);
        }
        assert!(pki.service_account_pub.starts_with("-----BEGIN PUBLIC KEY-----"));
        let dir =
            std::env::temp_dir().join(format!("testkit-pki-{}", uuid::Uuid::new_v4().simple()));
        pki.write(&dir).unwrap();
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(dir.join("admin.key")).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(dir.join("sa.pub").exists() && dir.join("ca.crt").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
