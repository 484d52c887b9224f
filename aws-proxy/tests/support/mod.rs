//! What the aws-proxy tests and benchmark share: a TLS client configuration trusting a given CA,
//! and moto (the AWS emulator from `target/pytools`) in server mode behind TLS.

// Each test file uses part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_proxy::ca::CertificateAuthority;
pub use testkit::process::free_port;

pub mod lab;

/// The Secret `intentmap/aws-proxy-ca` holding a CA's certificate and key (PEM), as the proxy
/// keeps its CA in a cluster.
pub fn ca_secret(cert_pem: &str, key_pem: &str) -> k8s_openapi::api::core::v1::Secret {
    let data = [("ca.crt", cert_pem), ("ca.key", key_pem)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), k8s_openapi::ByteString(v.as_bytes().to_vec())))
        .collect();
    k8s_openapi::api::core::v1::Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("aws-proxy-ca".into()),
            namespace: Some("intentmap".into()),
            ..Default::default()
        },
        data: Some(data),
        ..Default::default()
    }
}

/// Where `scripts/setup.sh` installs the Python tools (boto3, moto).
pub fn pytools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/pytools/bin")
}

/// A rustls client trusting only the CA certificates in `ca_pem`, offering `alpn`.
pub fn client_tls(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(config)
}

/// moto in server mode on TLS, with a certificate for `names` from its own CA; killed on drop.
pub struct Moto {
    child: Child,
    pub addr: SocketAddr,
    /// The CA that signed moto's certificate (PEM), and the file holding it.
    pub ca_pem: String,
    pub ca_file: PathBuf,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts moto with its files in `dir`; `Err` says what is missing.
pub fn start_moto(dir: &Path, names: &[&str]) -> Result<Moto, String> {
    let moto = pytools().join("moto_server");
    if !moto.exists() {
        return Err(format!(
            "{} is missing; run scripts/setup.sh (it installs boto3 and moto)",
            moto.display()
        ));
    }
    let ca = CertificateAuthority::generate().unwrap();
    let leaf = ca.issue(&names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    let (cert, key, ca_file) =
        (dir.join("moto.crt"), dir.join("moto.key"), dir.join("moto-ca.crt"));
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    std::fs::write(&ca_file, ca.ca_pem()).unwrap();
    let port = free_port();
    let child = Command::new(moto)
        .args(["-H", "127.0.0.1", "-p", &port.to_string(), "-c"])
        .arg(&cert)
        .arg("-k")
        .arg(&key)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting moto_server");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            Instant::now() < deadline,
            "moto_server did not start listening on {addr} within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(Moto { child, addr, ca_pem: ca.ca_pem().to_owned(), ca_file })
}
