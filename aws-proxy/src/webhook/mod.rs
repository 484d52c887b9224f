//! The mutating admission webhook that opts labelled pods in to AWS visibility.
//!
//! A pod labelled `network-mapper.otterize.com/aws-visibility: "true"` (Otterize's label) or
//! `intentmap.dev/aws-visibility: "true"` (ours), created in one of the opted-in namespaces
//! (`--opted-in-namespaces`), is patched at `CREATE` so that
//! - the ConfigMap [`DEFAULT_CA_CONFIGMAP`] of its namespace is mounted read-only at
//!   [`CA_MOUNT_PATH`] in every container and init container: `ca.crt` is the proxy's CA and
//!   `bundle.crt` the CA followed by the system roots, so that TLS to hosts that are not
//!   intercepted still verifies;
//! - the usual CA variables (`AWS_CA_BUNDLE`, `SSL_CERT_FILE`, `REQUESTS_CA_BUNDLE`,
//!   `CURL_CA_BUNDLE` → `bundle.crt`, `NODE_EXTRA_CA_CERTS` → `ca.crt`) are set where the
//!   container does not set them itself in `env` (a value from `envFrom` cannot be seen and is
//!   overridden);
//! - its DNS goes to the aws-proxy DNS server, then the cluster's DNS as a fallback
//!   (`dnsPolicy: None`, the cluster's search path and `ndots:5`, merged with the pod's own
//!   `dnsConfig`), except for `hostNetwork` pods and pods that already list that server;
//! - it carries [`INJECTED_ANNOTATION`]; a pod with it (or with the volume) is left alone, so
//!   the webhook is idempotent.
//!
//! A labelled pod in any other namespace is allowed unpatched with a warning, and nothing is
//! written for it: a forged review naming another namespace cannot make the webhook write there.
//! With `--client-ca-file` only callers presenting a certificate from that CA (the API server,
//! configured with an admission client certificate) get past the TLS handshake.
//!
//! The patch itself comes from [`mutate`], a pure function of the `AdmissionReview`. Around it,
//! [`Webhook`] serves HTTPS (`POST /mutate`, `GET /healthz`) with a certificate from the proxy's
//! own CA, keeps the CA ConfigMap in the opted-in namespaces, and can keep the `caBundle` of its
//! `MutatingWebhookConfiguration` (`--patch-webhook-configuration`), following CA rotation.
//!
//! The chart sets `failurePolicy: Ignore`, so a pod is never blocked by this webhook. A pod
//! mounting a ConfigMap that does not exist would never start, though; so when the ConfigMap
//! cannot be made right (no RBAC, API server unreachable), the pod is let through **unpatched**
//! and the failure logged: it runs without AWS visibility rather than not at all.

mod ca_bundle;
mod configmaps;
mod mutation;
mod server;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

pub use mutation::{is_injected, mutate, wants_injection, MutationConfig, WebhookError};
pub use server::{Webhook, WebhookStats, WebhookStatsSnapshot};

/// Otterize's opt-in label; the value must be `"true"`.
pub const OTTERIZE_LABEL: &str = "network-mapper.otterize.com/aws-visibility";
/// Our own opt-in label; the value must be `"true"`.
pub const LABEL: &str = "intentmap.dev/aws-visibility";
/// Set on patched pods, with the version of the webhook that patched them.
pub const INJECTED_ANNOTATION: &str = "intentmap.dev/aws-visibility-injected";
/// The name of the volume added to pods.
pub const CA_VOLUME: &str = "intentmap-aws-ca";
/// Where the CA ConfigMap is mounted in every container.
pub const CA_MOUNT_PATH: &str = "/etc/intentmap/aws-ca";
/// The default name of the CA ConfigMap kept in each namespace.
pub const DEFAULT_CA_CONFIGMAP: &str = "intentmap-aws-ca";
/// The ConfigMap key holding the proxy's CA certificate.
pub const CA_KEY: &str = "ca.crt";
/// The ConfigMap key holding the CA followed by the system roots.
pub const BUNDLE_KEY: &str = "bundle.crt";
/// The path the API server posts `AdmissionReview`s to.
pub const MUTATE_PATH: &str = "/mutate";

/// How to run the webhook.
#[derive(clap::Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Where to serve HTTPS.
    #[arg(long, env, default_value = "0.0.0.0:8443")]
    pub webhook_listen: SocketAddr,
    /// The Service in front of the webhook; its DNS names are in the serving certificate.
    #[arg(long, env, default_value = "aws-proxy")]
    pub webhook_service: String,
    /// The namespace of that Service.
    #[arg(long, env = "POD_NAMESPACE")]
    pub webhook_namespace: String,
    /// The namespaces whose labelled pods are patched (comma-separated); a review for any other
    /// namespace is allowed unpatched with a warning and nothing is written there.
    #[arg(long, env = "OPTED_IN_NAMESPACES", value_delimiter = ',', required = true)]
    pub opted_in_namespaces: Vec<String>,
    /// The address of the aws-proxy DNS server that patched pods resolve through.
    #[arg(long, env)]
    pub dns_server_ip: IpAddr,
    /// The cluster's DNS, listed second in patched pods so that they still resolve names while
    /// the aws-proxy DNS is down (default: the first nameserver of this pod's /etc/resolv.conf).
    #[arg(long, env)]
    pub cluster_dns_ip: Option<IpAddr>,
    /// List only the aws-proxy DNS server in patched pods (no fallback to the cluster's DNS).
    #[arg(long, env)]
    pub no_cluster_dns_fallback: bool,
    /// The cluster's DNS domain.
    #[arg(long, env, default_value = "cluster.local")]
    pub cluster_domain: String,
    /// The ConfigMap holding the CA bundle, kept in every opted-in namespace with a patched pod.
    #[arg(long, env, default_value = DEFAULT_CA_CONFIGMAP)]
    pub ca_configmap_name: String,
    /// The system roots appended to the CA in `bundle.crt` (skipped with a warning if absent).
    #[arg(long, env, default_value = "/etc/ssl/certs/ca-certificates.crt")]
    pub system_roots: PathBuf,
    /// A MutatingWebhookConfiguration whose webhooks' `caBundle` is kept equal to the CA bundle.
    #[arg(long, env)]
    pub patch_webhook_configuration: Option<String>,
    /// Accept only HTTPS clients presenting a certificate signed by this CA (PEM): the API
    /// server's admission client certificate (`--admission-control-config-file`).
    #[arg(long, env = "WEBHOOK_CLIENT_CA_FILE")]
    pub client_ca_file: Option<PathBuf>,
}

impl WebhookArgs {
    /// The DNS names of the webhook's Service, as the API server connects to it.
    pub fn serving_names(&self) -> Vec<String> {
        let (service, namespace) = (&self.webhook_service, &self.webhook_namespace);
        vec![
            format!("{service}.{namespace}.svc"),
            format!("{service}.{namespace}.svc.{}", self.cluster_domain),
        ]
    }

    /// The fallback nameserver for patched pods: `--cluster-dns-ip`, else the first nameserver
    /// of `resolv_conf` that is not the aws-proxy DNS; `None` with `--no-cluster-dns-fallback`.
    pub fn fallback_dns_ip(&self, resolv_conf: &str) -> Option<IpAddr> {
        if self.no_cluster_dns_fallback {
            return None;
        }
        self.cluster_dns_ip.or_else(|| {
            crate::dns::parse_resolv_conf(resolv_conf)
                .into_iter()
                .map(|addr| addr.ip())
                .find(|ip| *ip != self.dns_server_ip)
        })
    }

    /// The mutation settings, with `fallback_dns_ip` as the cluster's DNS.
    pub fn mutation_config(&self, fallback_dns_ip: Option<IpAddr>) -> MutationConfig {
        MutationConfig {
            dns_server_ip: self.dns_server_ip,
            fallback_dns_ip,
            cluster_domain: self.cluster_domain.clone(),
            ca_configmap_name: self.ca_configmap_name.clone(),
            opted_in_namespaces: self
                .opted_in_namespaces
                .iter()
                .map(|ns| ns.trim().to_owned())
                .filter(|ns| !ns.is_empty())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        webhook: WebhookArgs,
    }

    #[test]
    fn args_have_defaults_for_all_but_the_namespaces_and_the_dns_server() {
        let required = [
            "aws-proxy",
            "--webhook-namespace",
            "intentmap",
            "--dns-server-ip",
            "10.96.0.53",
            "--opted-in-namespaces",
            "shop,billing",
        ];
        let args = <Cli as clap::Parser>::try_parse_from(required).unwrap().webhook;
        assert_eq!(args.webhook_listen, "0.0.0.0:8443".parse().unwrap());
        assert_eq!(
            args.serving_names(),
            ["aws-proxy.intentmap.svc", "aws-proxy.intentmap.svc.cluster.local"]
        );
        assert_eq!(
            args.mutation_config(None),
            MutationConfig::new("10.96.0.53".parse().unwrap(), &["billing", "shop"])
        );
        assert_eq!(args.system_roots, std::path::Path::new("/etc/ssl/certs/ca-certificates.crt"));
        assert_eq!((args.patch_webhook_configuration, args.client_ca_file), (None, None));
        assert!(
            <Cli as clap::Parser>::try_parse_from(&required[..5]).is_err(),
            "the opted-in namespaces are required"
        );
        assert!(
            <Cli as clap::Parser>::try_parse_from([
                "aws-proxy",
                "--webhook-namespace",
                "intentmap",
                "--opted-in-namespaces",
                "shop"
            ])
            .is_err(),
            "the DNS server is required"
        );
    }

    #[test]
    fn the_fallback_nameserver_is_the_flag_or_this_pods_own_cluster_dns() {
        let base = [
            "aws-proxy",
            "--webhook-namespace",
            "intentmap",
            "--dns-server-ip",
            "10.96.0.53",
            "--opted-in-namespaces",
            "shop",
        ];
        let resolv = "search intentmap.svc.cluster.local\nnameserver 10.96.0.53\nnameserver 10.96.0.10\noptions ndots:5\n";
        let args = <Cli as clap::Parser>::try_parse_from(base).unwrap().webhook;
        assert_eq!(
            args.fallback_dns_ip(resolv),
            Some("10.96.0.10".parse().unwrap()),
            "never the aws-proxy DNS itself"
        );
        let flagged = <Cli as clap::Parser>::try_parse_from(
            [&base[..], &["--cluster-dns-ip", "169.254.20.10"]].concat(),
        )
        .unwrap()
        .webhook;
        assert_eq!(flagged.fallback_dns_ip(resolv), Some("169.254.20.10".parse().unwrap()));
        let off = <Cli as clap::Parser>::try_parse_from(
            [&base[..], &["--no-cluster-dns-fallback"]].concat(),
        )
        .unwrap()
        .webhook;
        assert_eq!(off.fallback_dns_ip(resolv), None);
    }
}
