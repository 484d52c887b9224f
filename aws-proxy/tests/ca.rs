//! The CA's reach, attacked: the webhook makes every opted-in pod trust it for all TLS, so a
//! leaf it signs for any name other than AWS's and the webhook's own must be refused by clients
//! (its Name Constraints, checked here by a real rustls client trusting only the CA), it lives a
//! year, rotates with an overlap (checked against a Secret in the stand-in API server at chosen
//! times), and a CA an earlier version made (unconstrained, ten years) is replaced at start.

use std::sync::Arc;

use aws_proxy::ca::{
    generate_ca, permitted_names, CaKeeper, CaStore, CertificateAuthority, StoredCa,
};
use k8s_openapi::api::core::v1::Secret;
use rustls::pki_types::ServerName;
use testkit::kube_api::FakeApiServer;
use time::OffsetDateTime;
use tokio::net::{TcpListener, TcpStream};

mod support;

const WEBHOOK_NAMES: [&str; 2] =
    ["aws-proxy.intentmap.svc", "aws-proxy.intentmap.svc.cluster.local"];

fn webhook_names() -> Vec<String> {
    WEBHOOK_NAMES.iter().map(|n| n.to_string()).collect()
}

/// Serves `leaf` once on loopback and connects a rustls client trusting only `trusted_pem`,
/// asking for `name`: the client's verdict.
async fn client_verdict(
    leaf: &aws_proxy::ca::IssuedCert,
    trusted_pem: &str,
    name: &str,
) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(aws_proxy::ca::server_config_with(
        leaf.certified_key.clone(),
        &[b"http/1.1"],
    )));
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let _ = acceptor.accept(tcp).await;
    });
    let tcp = TcpStream::connect(addr).await.unwrap();
    let server_name = ServerName::try_from(name.to_owned()).unwrap();
    let verdict =
        tokio_rustls::TlsConnector::from(support::client_tls(trusted_pem, &[b"http/1.1"]))
            .connect(server_name, tcp)
            .await;
    let _ = server.await;
    verdict.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn a_leaf_for_any_other_name_is_refused_by_a_client_trusting_only_the_ca() {
    let ca = CertificateAuthority::generate_for(&webhook_names()).unwrap();
    // What the CA is for: AWS names (both partitions) and the webhook's Service names.
    for name in [
        "s3.us-east-1.amazonaws.com",
        "sqs.cn-north-1.amazonaws.com.cn",
        WEBHOOK_NAMES[0],
        WEBHOOK_NAMES[1],
    ] {
        let leaf = ca.issue(&[name.to_owned()]).unwrap();
        client_verdict(&leaf, ca.ca_pem(), name)
            .await
            .unwrap_or_else(|e| panic!("a leaf for {name} was refused: {e}"));
    }
    // The attack: the CA's key signs a leaf for a bank, a look-alike, the API server, an IP.
    for name in [
        "www.bank.example",
        "amazonaws.com.evil.example",
        "kubernetes.default.svc",
        "notamazonaws.com",
        "127.0.0.1",
    ] {
        let leaf = ca.issue(&[name.to_owned()]).unwrap();
        let refused = client_verdict(&leaf, ca.ca_pem(), name)
            .await
            .expect_err(&format!("a leaf for {name} signed by the CA was trusted"));
        assert!(
            refused.contains("NameConstraintViolation"),
            "{name}: refused for another reason: {refused}"
        );
    }
    // A leaf naming an AWS host *and* another host is refused as a whole.
    let mixed = ca.issue(&["s3.amazonaws.com".into(), "www.bank.example".into()]).unwrap();
    assert!(client_verdict(&mixed, ca.ca_pem(), "s3.amazonaws.com").await.is_err());

    // Control: the same attack against a CA without Name Constraints succeeds, so the refusals
    // above are the constraints' doing.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let unconstrained = params.self_signed(&key).unwrap();
    let loose = CertificateAuthority::from_pem(&unconstrained.pem(), &key.serialize_pem()).unwrap();
    let leaf = loose.issue(&["www.bank.example".into()]).unwrap();
    client_verdict(&leaf, loose.ca_pem(), "www.bank.example")
        .await
        .expect("an unconstrained CA is trusted for anything");
}

#[tokio::test]
async fn the_ca_lives_a_year() {
    let ca = CertificateAuthority::generate_for(&webhook_names()).unwrap();
    let stored = StoredCa { cert_pem: ca.signing_ca_pem().to_owned(), key_pem: String::new() };
    let facts = stored.facts().unwrap();
    let lifetime = facts.not_after - facts.not_before;
    assert!(lifetime <= time::Duration::days(366), "{lifetime}");
    assert_eq!(
        facts.permitted_dns.unwrap(),
        ["amazonaws.com", "amazonaws.com.cn", WEBHOOK_NAMES[0], WEBHOOK_NAMES[1]]
    );
    assert!(facts.excludes_all_ips);
}

fn stored_in(api: &FakeApiServer) -> Vec<String> {
    let secret: Secret = api.get("intentmap", "aws-proxy-ca").expect("the CA Secret");
    let data = secret.data.unwrap_or_default();
    ["ca.crt", "next.crt"]
        .iter()
        .filter_map(|k| {
            data.get(*k).map(|b| String::from_utf8(b.0.clone()).unwrap().trim().to_owned())
        })
        .collect()
}

fn pem_count(pem: &str) -> usize {
    pem.matches("-----BEGIN CERTIFICATE-----").count()
}

#[tokio::test]
async fn the_secret_ca_rotates_publishing_the_next_one_before_it_signs() {
    let api = FakeApiServer::start().await.unwrap();
    api.register::<Secret>();
    let store = CaStore::Secret { namespace: "intentmap".into(), name: "aws-proxy-ca".into() };
    let keeper = CaKeeper::new(store, Some(api.client()), &webhook_names());
    let day = time::Duration::days(1);
    let t0 = OffsetDateTime::now_utc();

    let first = keeper.refresh_at(t0).await.unwrap();
    assert_eq!(stored_in(&api), [first.signing_ca_pem().trim()]);
    assert_eq!(first.ca_pem(), first.signing_ca_pem(), "one CA, trusted alone");

    // 300 days on: nothing changes.
    let later = keeper.refresh_at(t0 + 300 * day).await.unwrap();
    assert_eq!(later.signing_ca_pem(), first.signing_ca_pem());
    assert_eq!(stored_in(&api).len(), 1);

    // 310 days on (55 left): the next CA is published beside it; the first still signs.
    let published = keeper.refresh_at(t0 + 310 * day).await.unwrap();
    let stored = stored_in(&api);
    assert_eq!(stored.len(), 2);
    assert_eq!(published.signing_ca_pem(), first.signing_ca_pem());
    assert_eq!(pem_count(published.ca_pem()), 2, "pods started now trust both");
    assert!(published.ca_pem().contains(&stored[1]));

    // 340 days on (25 left): the next one signs; both still trusted.
    let switched = keeper.refresh_at(t0 + 340 * day).await.unwrap();
    assert_eq!(switched.signing_ca_pem().trim(), stored[1]);
    assert_eq!(pem_count(switched.ca_pem()), 2);
    let leaf = switched.issue(&["s3.amazonaws.com".into()]).unwrap();
    client_verdict(&leaf, published.ca_pem(), "s3.amazonaws.com")
        .await
        .expect("a pod holding the bundle published at day 310 trusts the new leaves");

    // 366 days on: the first has expired and is gone.
    let after = keeper.refresh_at(t0 + 366 * day).await.unwrap();
    assert_eq!(stored_in(&api), [stored[1].clone()]);
    assert_eq!(pem_count(after.ca_pem()), 1);

    // Replicas rotating at once (59 days before the second CA expires) agree on one next CA.
    let (a, b) = tokio::join!(keeper.refresh_at(t0 + 616 * day), keeper.refresh_at(t0 + 616 * day));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.ca_pem(), b.ca_pem(), "two replicas, one bundle");
    assert_eq!(stored_in(&api).len(), 2);
}

#[tokio::test]
async fn an_unconstrained_ten_year_ca_from_an_earlier_version_is_replaced() {
    let api = FakeApiServer::start().await.unwrap();
    api.register::<Secret>();
    // What an earlier version stored: no Name Constraints, valid ten years.
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params.not_after = OffsetDateTime::now_utc() + time::Duration::days(3650);
    let old = params.self_signed(&key).unwrap().pem();
    api.apply(&support::ca_secret(&old, &key.serialize_pem()));

    let store = CaStore::Secret { namespace: "intentmap".into(), name: "aws-proxy-ca".into() };
    let ca = CertificateAuthority::load_or_create(&store, Some(api.client())).await.unwrap();
    assert!(!ca.ca_pem().contains(old.trim()), "the unconstrained CA is trusted no more");
    assert_eq!(stored_in(&api), [ca.signing_ca_pem().trim()]);
    let facts = StoredCa { cert_pem: ca.signing_ca_pem().to_owned(), key_pem: String::new() }
        .facts()
        .unwrap();
    assert!(
        facts.permitted_dns.is_some()
            && facts.not_after - facts.not_before <= time::Duration::days(366)
    );

    // A constrained CA made here is kept as is on the next start.
    let again = CertificateAuthority::load_or_create(&store, Some(api.client())).await.unwrap();
    assert_eq!(again.ca_pem(), ca.ca_pem());
}

#[test]
fn a_generated_ca_can_be_rebuilt_from_what_is_stored() {
    let stored =
        generate_ca(OffsetDateTime::now_utc(), &permitted_names(&[]), time::Duration::days(365))
            .unwrap();
    let ca = CertificateAuthority::from_pem(&stored.cert_pem, &stored.key_pem).unwrap();
    assert_eq!(ca.signing_ca_pem().trim(), stored.cert_pem.trim());
}
