//! The client that reaches the real AWS endpoints: rustls verified against the public web roots
//! (plus `--upstream-ca-file`), HTTP/1.1 or HTTP/2, and `--connect-to` addresses.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hyper_util::client::legacy::connect::dns::Name;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::forward::Body;
use crate::strip_port;

pub(super) type Upstream =
    Client<hyper_rustls::HttpsConnector<HttpConnector<OverrideResolver>>, Body>;

pub(super) fn parse_connect_to(entries: &[String]) -> anyhow::Result<Vec<(String, SocketAddr)>> {
    entries
        .iter()
        .filter(|e| !e.trim().is_empty())
        .map(|entry| {
            let (suffix, addr) = entry
                .split_once('=')
                .with_context(|| format!("--connect-to {entry:?} is not SUFFIX=HOST:PORT"))?;
            let addr = addr
                .trim()
                .parse()
                .with_context(|| format!("--connect-to {entry:?}: {addr:?} is not an IP:PORT"))?;
            Ok((suffix.trim().trim_start_matches('.').to_ascii_lowercase(), addr))
        })
        .collect()
}

/// Resolves upstream names: `--connect-to` overrides first, the system resolver otherwise.
#[derive(Clone)]
pub(super) struct OverrideResolver {
    overrides: Arc<Vec<(String, SocketAddr)>>,
}

impl tower::Service<Name> for OverrideResolver {
    type Response = std::vec::IntoIter<SocketAddr>;
    type Error = std::io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, name: Name) -> Self::Future {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        let chosen = self
            .overrides
            .iter()
            .find(|(suffix, _)| host == *suffix || host.ends_with(&format!(".{suffix}")))
            .map(|(_, addr)| *addr);
        Box::pin(async move {
            if let Some(addr) = chosen {
                return Ok(vec![addr].into_iter());
            }
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((strip_port(&host), 0)).await?.collect();
            Ok(addrs.into_iter())
        })
    }
}

pub(super) fn client(
    extra_ca: Option<&std::path::Path>,
    overrides: Arc<Vec<(String, SocketAddr)>>,
) -> anyhow::Result<Upstream> {
    use rustls::pki_types::pem::PemObject as _;
    let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = extra_ca {
        let pem = std::fs::read(path)
            .with_context(|| format!("reading the upstream CA {}", path.display()))?;
        let mut added = 0;
        for cert in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
            roots
                .add(cert.with_context(|| format!("{} is not PEM", path.display()))?)
                .with_context(|| format!("a certificate in {}", path.display()))?;
            added += 1;
        }
        anyhow::ensure!(added > 0, "{} holds no certificate", path.display());
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS versions")?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut http = HttpConnector::new_with_resolver(OverrideResolver { overrides });
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(Duration::from_secs(10)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .timer(TokioTimer::new())
        .build(https))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_to_entries() {
        let parsed = parse_connect_to(&[
            "amazonaws.com=127.0.0.1:4566".into(),
            ".s3.amazonaws.com = 127.0.0.1:9000".into(),
        ])
        .unwrap();
        assert_eq!(parsed[1], ("s3.amazonaws.com".to_owned(), "127.0.0.1:9000".parse().unwrap()));
        assert!(parse_connect_to(&["nonsense".into()]).is_err());
    }
}
