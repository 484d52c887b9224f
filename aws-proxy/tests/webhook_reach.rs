//! The webhook's reach, attacked over real HTTPS against the stand-in Kubernetes API server:
//! a forged `AdmissionReview` naming a namespace that did not opt in (nothing may be written
//! there), callers without the API server's client certificate (refused at the handshake when
//! `--client-ca-file` is set), and a CA rotation that the serving certificate, the CA
//! ConfigMaps and the webhook configuration's `caBundle` must follow.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use aws_proxy::ca::{generate_ca, permitted_names, CaKeeper, CaStore, CertificateAuthority};
use aws_proxy::webhook::{mutate, MutationConfig, Webhook, WebhookArgs};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhook, MutatingWebhookConfiguration, ServiceReference, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::ObjectMeta;
use serde_json::{json, Value};
use testkit::kube_api::FakeApiServer;
use time::OffsetDateTime;

mod support;

const SERVICE_HOST: &str = "aws-proxy.intentmap.svc";
const DNS_IP: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 96, 0, 53));

fn names() -> Vec<String> {
    vec![SERVICE_HOST.to_owned(), format!("{SERVICE_HOST}.cluster.local")]
}

fn args(roots: &std::path::Path) -> WebhookArgs {
    WebhookArgs {
        webhook_listen: "127.0.0.1:0".parse().unwrap(),
        webhook_service: "aws-proxy".into(),
        webhook_namespace: "intentmap".into(),
        opted_in_namespaces: vec!["shop".into()],
        dns_server_ip: DNS_IP,
        cluster_dns_ip: Some("10.96.0.10".parse().unwrap()),
        no_cluster_dns_fallback: false,
        cluster_domain: "cluster.local".into(),
        ca_configmap_name: "intentmap-aws-ca".into(),
        system_roots: roots.to_owned(),
        patch_webhook_configuration: None,
        client_ca_file: None,
    }
}

/// A review of a labelled pod being created, as a ReplicaSet controller's request would be,
/// claiming `namespace`.
fn review(namespace: &str) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {
            "uid": "b9a1c3d4-0000-4000-8000-000000000001",
            "kind": {"group": "", "version": "v1", "kind": "Pod"},
            "resource": {"group": "", "version": "v1", "resource": "pods"},
            "namespace": namespace, "operation": "CREATE",
            "object": {
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"generateName": "orders-", "namespace": namespace, "labels": {"intentmap.dev/aws-visibility": "true"}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/orders:1"}]}
            }
        }
    })
}

fn temp_file(name: &str, contents: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("aws-proxy-reach-{}-{name}", std::process::id()));
    std::fs::write(&path, contents).unwrap();
    path
}

async fn fake_api() -> FakeApiServer {
    let server = FakeApiServer::start().await.expect("the stand-in API server starts");
    server.register::<ConfigMap>();
    server.register::<Secret>();
    server.register::<MutatingWebhookConfiguration>();
    server
}

fn client_trusting(
    ca_pem: &str,
    addr: SocketAddr,
    identity: Option<reqwest::Identity>,
) -> reqwest::Client {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .resolve(SERVICE_HOST, addr)
        .timeout(Duration::from_secs(10));
    for cert in reqwest::Certificate::from_pem_bundle(ca_pem.as_bytes()).unwrap() {
        builder = builder.add_root_certificate(cert);
    }
    if let Some(identity) = identity {
        builder = builder.identity(identity);
    }
    builder.build().unwrap()
}

async fn post(
    client: &reqwest::Client,
    addr: SocketAddr,
    review: &Value,
) -> reqwest::Result<Value> {
    client
        .post(format!("https://{SERVICE_HOST}:{}/mutate", addr.port()))
        .json(review)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await
}

#[tokio::test]
async fn a_forged_review_for_a_namespace_not_opted_in_writes_nothing_there() {
    let server = fake_api().await;
    let roots = temp_file("roots-forged", "");
    let ca = Arc::new(CertificateAuthority::generate_for(&names()).unwrap());
    let webhook = Webhook::start(&args(&roots), ca.clone(), Some(server.client())).await.unwrap();
    let client = client_trusting(ca.ca_pem(), webhook.local_addr(), None);

    // The attack: anyone reaching the port posts a review naming kube-system.
    for (claimed, object_namespace) in
        [("kube-system", "kube-system"), ("kube-system", "shop"), ("default", "default")]
    {
        let mut forged = review(claimed);
        forged["request"]["object"]["metadata"]["namespace"] = object_namespace.into();
        let answer = post(&client, webhook.local_addr(), &forged).await.expect("an answer");
        assert_eq!(answer["response"]["allowed"], true, "the pod is never blocked: {answer}");
        assert!(
            answer["response"].get("patch").is_none(),
            "no patch for namespace {claimed}: {answer}"
        );
        let warning = answer["response"]["warnings"][0].as_str().unwrap_or_default();
        assert!(
            warning.contains(claimed) && warning.contains("not opted in"),
            "the user is told why: {answer}"
        );
        assert!(
            server.get::<ConfigMap>(claimed, "intentmap-aws-ca").is_none(),
            "a ConfigMap was written in {claimed}"
        );
        assert_eq!(
            server.request_count(&format!("/api/v1/namespaces/{claimed}/")),
            0,
            "the webhook touched namespace {claimed}"
        );
    }
    assert_eq!(webhook.stats().snapshot().not_opted_in, 3);

    // A dry run in the opted-in namespace is answered, and writes nothing either.
    let mut dry_run = review("shop");
    dry_run["request"]["dryRun"] = true.into();
    let answer = post(&client, webhook.local_addr(), &dry_run).await.unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");
    assert!(
        server.get::<ConfigMap>("shop", "intentmap-aws-ca").is_none(),
        "a dry run wrote the ConfigMap"
    );

    // The same review for the opted-in namespace is patched and writes the ConfigMap there.
    let answer = post(&client, webhook.local_addr(), &review("shop")).await.unwrap();
    assert_eq!(answer["response"]["patchType"], "JSONPatch", "{answer}");
    assert!(server.get::<ConfigMap>("shop", "intentmap-aws-ca").is_some());
    let dns = testkit::admission::patch_operation(&answer, "/spec/dnsConfig");
    assert_eq!(
        dns["value"]["nameservers"],
        json!(["10.96.0.53", "10.96.0.10"]),
        "the cluster DNS stays as the fallback"
    );

    // And the pure function says the same.
    let config = MutationConfig::new(DNS_IP, &["shop"]);
    let answer = mutate(&review("kube-system"), &config).unwrap();
    assert!(
        answer["response"].get("patch").is_none() && answer["response"]["warnings"].is_array(),
        "{answer}"
    );
    webhook.shutdown().await;
    let _ = std::fs::remove_file(roots);
}

/// A client CA (as a cluster's front CA would be) and a client certificate it signed for
/// `name` (clientAuth), PEM: (ca, cert + key).
fn client_credentials(name: &str) -> (String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::default();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    ca_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    ca_params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} client CA"));
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_params(&ca_params, &ca_key);
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), format!("{}{}", cert.pem(), key.serialize_pem()))
}

#[tokio::test]
async fn with_a_client_ca_only_callers_holding_its_certificates_are_answered() {
    let server = fake_api().await;
    let roots = temp_file("roots-mtls", "");
    let (apiserver_ca, apiserver_identity) = client_credentials("kube-apiserver");
    let (_, stranger_identity) = client_credentials("kube-apiserver");
    let client_ca = temp_file("client-ca.crt", &apiserver_ca);
    let ca = Arc::new(CertificateAuthority::generate_for(&names()).unwrap());
    let webhook = Webhook::start(
        &WebhookArgs { client_ca_file: Some(client_ca.clone()), ..args(&roots) },
        ca.clone(),
        Some(server.client()),
    )
    .await
    .unwrap();
    let addr = webhook.local_addr();

    let anonymous = post(&client_trusting(ca.ca_pem(), addr, None), addr, &review("shop")).await;
    assert!(
        anonymous.is_err(),
        "a caller without a client certificate was answered: {anonymous:?}"
    );
    let stranger = reqwest::Identity::from_pem(stranger_identity.as_bytes()).unwrap();
    let forged =
        post(&client_trusting(ca.ca_pem(), addr, Some(stranger)), addr, &review("shop")).await;
    assert!(forged.is_err(), "a certificate from another CA was accepted: {forged:?}");
    assert!(
        server.get::<ConfigMap>("shop", "intentmap-aws-ca").is_none(),
        "nothing was written for the refused callers"
    );

    let apiserver = reqwest::Identity::from_pem(apiserver_identity.as_bytes()).unwrap();
    let answer = post(&client_trusting(ca.ca_pem(), addr, Some(apiserver)), addr, &review("shop"))
        .await
        .expect("the API server is answered");
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert!(webhook.stats().snapshot().handshake_failures >= 2);
    webhook.shutdown().await;
    for file in [roots, client_ca] {
        let _ = std::fs::remove_file(file);
    }
}

fn webhook_configuration() -> MutatingWebhookConfiguration {
    let webhook = MutatingWebhook {
        name: "intentmap-label.aws-visibility.intentmap.dev".into(),
        admission_review_versions: vec!["v1".into()],
        side_effects: "None".into(),
        client_config: WebhookClientConfig {
            service: Some(ServiceReference {
                name: "aws-proxy".into(),
                namespace: "intentmap".into(),
                path: Some("/mutate".into()),
                port: Some(8443),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    MutatingWebhookConfiguration {
        metadata: ObjectMeta {
            name: Some("intentmap-aws-visibility".into()),
            ..Default::default()
        },
        webhooks: Some(vec![webhook]),
    }
}

/// Waits until `check` holds (the keeper and the sweeps run in the background).
async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "{what} did not happen within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_rotation_reaches_the_serving_certificate_the_configmaps_and_the_ca_bundle() {
    let server = fake_api().await;
    server.apply(&webhook_configuration());
    // The CA in the Secret was made 320 days ago: 45 days left.
    let now = OffsetDateTime::now_utc();
    let old = generate_ca(
        now - time::Duration::days(320),
        &permitted_names(&names()),
        time::Duration::days(365),
    )
    .unwrap();
    server.apply(&support::ca_secret(&old.cert_pem, &old.key_pem));

    let days_ahead = Arc::new(AtomicI64::new(0));
    let ahead = days_ahead.clone();
    let clock: aws_proxy::ca::Clock = Arc::new(move || {
        OffsetDateTime::now_utc() + time::Duration::days(ahead.load(Ordering::SeqCst))
    });
    let store = CaStore::Secret { namespace: "intentmap".into(), name: "aws-proxy-ca".into() };
    let keeper = CaKeeper::new(store, Some(server.client()), &names()).with_clock(clock);
    let (shared, keeping) = keeper.start(Duration::from_millis(100)).await.unwrap();

    let roots = temp_file("roots-rotation", "");
    let webhook_args = WebhookArgs {
        patch_webhook_configuration: Some("intentmap-aws-visibility".into()),
        ..args(&roots)
    };
    let webhook =
        Webhook::start(&webhook_args, shared.clone(), Some(server.client())).await.unwrap();
    let addr = webhook.local_addr();
    let bundle = |server: &FakeApiServer| {
        server
            .get::<ConfigMap>("shop", "intentmap-aws-ca")
            .and_then(|c| c.data)
            .map(|d| d["ca.crt"].clone())
            .unwrap_or_default()
    };
    let ca_bundle = |server: &FakeApiServer| {
        let configuration =
            server.get::<MutatingWebhookConfiguration>("", "intentmap-aws-visibility").unwrap();
        String::from_utf8(
            configuration.webhooks.unwrap()[0]
                .client_config
                .ca_bundle
                .clone()
                .map(|b| b.0)
                .unwrap_or_default(),
        )
        .unwrap()
    };

    // 45 days left: the next CA is published; the old one still signs.
    let next = shared.current().ca_pem().replace(old.cert_pem.trim(), "").trim().to_owned();
    assert_eq!(
        next.matches("BEGIN CERTIFICATE").count(),
        1,
        "the bundle holds the old CA and the next one"
    );
    post(&client_trusting(&old.cert_pem, addr, None), addr, &review("shop"))
        .await
        .expect("served by a leaf of the old CA");
    assert!(
        bundle(&server).contains(old.cert_pem.trim()) && bundle(&server).contains(&next),
        "pods get both CAs"
    );
    eventually("the caBundle holding both CAs", || {
        ca_bundle(&server).contains(&next) && ca_bundle(&server).contains(old.cert_pem.trim())
    })
    .await;

    // 20 days on (25 left): the next CA signs; the webhook's certificate follows.
    days_ahead.store(20, Ordering::SeqCst);
    eventually("the switch to the next CA", || shared.current().signing_ca_pem().trim() == next)
        .await;
    post(&client_trusting(&next, addr, None), addr, &review("shop"))
        .await
        .expect("served by a leaf of the next CA");
    assert!(
        post(&client_trusting(&old.cert_pem, addr, None), addr, &review("shop")).await.is_err(),
        "the old CA signs no more"
    );

    // 50 days on: the old CA expired; every copy of the bundle drops it.
    days_ahead.store(50, Ordering::SeqCst);
    eventually("the ConfigMap without the old CA", || bundle(&server).trim() == next).await;
    eventually("the caBundle without the old CA", || ca_bundle(&server).trim() == next).await;

    webhook.shutdown().await;
    keeping.abort();
    let _ = std::fs::remove_file(roots);
}
