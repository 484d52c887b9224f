//! AWS visibility as installed: the `aws-proxy all` binary (proxy, DNS and webhook in one
//! process) next to the `cluster-agent mapper` binary watching a (stand-in) Kubernetes API.
//! A workload's S3 call through the proxy (HTTPS_PROXY, real TLS with the proxy's CA) lands in
//! the mapper as an `aws` edge named by the workload's Deployment; the DNS role answers AWS names
//! with the proxy's address; the webhook patches a labelled pod in an opted-in namespace and
//! writes nothing for a forged review naming another; SIGTERM stops it cleanly.
//!
//! The AWS endpoint itself is absent here (the SDK against a real emulator is in
//! `aws-proxy/tests/sdk.rs`): the proxy answers 502 and still records the call it forwarded.

use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use mapper_core::fixtures::*;
use serde_json::{json, Value};
use testkit::kube_api::FakeApiServer;
use tests::{binary, free_port, spawn, start_mapper, wait_ready, write_kubeconfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_proxy_binary_records_calls_into_the_mapper_answers_dns_and_patches_pods() {
    let dir = std::env::temp_dir().join(format!("e2e-aws-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let api = FakeApiServer::start().await.unwrap();
    api.register::<ConfigMap>();
    api.apply(&Deployment { metadata: mk_deployment("billing", "invoicer"), ..Default::default() });
    api.apply(&ReplicaSet {
        metadata: mk_replicaset("billing", "invoicer-7d9f", "invoicer"),
        ..Default::default()
    });
    api.apply::<Pod>(
        &mk_pod("billing", "invoicer-7d9f-x2x9q", &["127.0.0.1"])
            .owned_by("ReplicaSet", "invoicer-7d9f"),
    );
    let kubeconfig = write_kubeconfig(&dir, &api.url());
    let (_mapper, mapper_url) = start_mapper(&dir, &kubeconfig).await;

    let (connect, health, webhook, dns, closed) =
        (free_port(), free_port(), free_port(), free_port(), free_port());
    let mut proxy = spawn(
        Command::new(binary("aws-proxy"))
            .args([
                "--ca-dir",
                dir.join("ca").to_str().unwrap(),
                "--mapper-url",
                &mapper_url,
                "--shared-token",
                "node-secret",
            ])
            .args([
                "--health-listen",
                &format!("127.0.0.1:{health}"),
                "--ship-interval-seconds",
                "0.2",
            ])
            .args([
                "all",
                "--tls-listen",
                &format!("127.0.0.1:{}", free_port()),
                "--connect-listen",
                &format!("127.0.0.1:{connect}"),
            ])
            .args(["--connect-to", &format!("amazonaws.com=127.0.0.1:{closed}")])
            .args([
                "--webhook-listen",
                &format!("127.0.0.1:{webhook}"),
                "--webhook-namespace",
                "intentmap",
                "--dns-server-ip",
                "10.96.0.53",
            ])
            .args(["--opted-in-namespaces", "billing", "--cluster-dns-ip", "10.96.0.10"])
            .args([
                "--dns-listen",
                &format!("127.0.0.1:{dns}"),
                "--proxy-address",
                "10.96.0.80",
                "--upstream",
                &format!("127.0.0.1:{closed}"),
            ])
            .args(["--upstream-deadline-ms", "500"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn"),
    );
    wait_ready(&format!("http://127.0.0.1:{health}/healthz"), Duration::from_secs(30)).await;
    let ca = std::fs::read(dir.join("ca/ca.crt")).expect("the CA was generated into --ca-dir");
    let ca = reqwest::Certificate::from_pem(&ca).unwrap();

    // A workload's S3 call through HTTPS_PROXY, trusting the proxy's CA as AWS_CA_BUNDLE does.
    let client = reqwest::Client::builder()
        .proxy(reqwest::Proxy::https(format!("http://127.0.0.1:{connect}")).unwrap())
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();
    let reply = client
        .get("https://invoices.s3.us-east-1.amazonaws.com/2026/11/inv-1.pdf")
        .header("x-amz-date", "20261124T120000Z")
        .header(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=AKIAE2ETEST000000001/20261124/us-east-1/s3/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
        )
        .send()
        .await
        .expect("TLS through the proxy verifies with the proxy's CA");
    assert_eq!(reply.status(), 502, "the endpoint is down here; the proxy says so");

    let mut edges = Value::Null;
    for _ in 0..100 {
        edges = reqwest::get(format!("{mapper_url}/v1/edges")).await.unwrap().json().await.unwrap();
        if edges.to_string().contains("arn:aws:s3:::invoices") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let aws: Vec<&Value> =
        edges.as_array().unwrap().iter().filter(|e| e["target"].get("aws").is_some()).collect();
    assert_eq!(aws.len(), 1, "{edges:#}");
    assert_eq!(aws[0]["client"]["name"], "invoicer");
    assert_eq!(aws[0]["client"]["namespace"], "billing");
    assert_eq!(
        aws[0]["target"]["aws"],
        json!({"arn": "arn:aws:s3:::invoices/2026/11/inv-1.pdf", "actions": ["s3:GetObject"]})
    );
    assert!(!edges.to_string().contains("AKIAE2ETEST"), "the access key id never leaves the proxy");

    // DNS: an AWS name is the proxy; anything else goes to the (dead) upstream: SERVFAIL.
    let dig = |name: &str| {
        Command::new("dig")
            .args(["@127.0.0.1", "-p", &dns.to_string(), "+tries=1", "+time=3", name, "A"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
    };
    testkit::need::command("dig", "dnsutils");
    let answer = dig("sqs.eu-west-1.amazonaws.com").unwrap();
    assert!(answer.contains("status: NOERROR") && answer.contains("10.96.0.80"), "{answer}");
    let other = dig("example.org").unwrap();
    assert!(other.contains("status: SERVFAIL"), "{other}");

    // The webhook: a labelled pod gets the CA bundle and our DNS; the ConfigMap appears.
    let pod = mk_pod("billing", "invoicer-7d9f-new", &[])
        .labelled("network-mapper.otterize.com/aws-visibility", "true");
    let review = json!({
        "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
        "request": {"uid": "e2e-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "namespace": "billing", "operation": "CREATE", "object": pod}
    });
    let https = reqwest::Client::builder()
        .add_root_certificate(ca)
        .resolve("aws-proxy.intentmap.svc", format!("127.0.0.1:{webhook}").parse().unwrap())
        .build()
        .unwrap();
    let mutate = |review: &Value| {
        let request = https
            .post(format!("https://aws-proxy.intentmap.svc:{webhook}/mutate"))
            .json(review)
            .send();
        async move { request.await.unwrap().json::<Value>().await.unwrap() }
    };
    let answer = mutate(&review).await;
    assert_eq!(answer["response"]["uid"], "e2e-1");
    assert_eq!(answer["response"]["allowed"], true);
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    assert!(
        api.get::<ConfigMap>("billing", "intentmap-aws-ca").is_some(),
        "the CA bundle ConfigMap is kept in the pod's namespace"
    );
    let dns = testkit::admission::patch_operation(&answer, "/spec/dnsConfig");
    assert_eq!(
        dns["value"]["nameservers"],
        json!(["10.96.0.53", "10.96.0.10"]),
        "the cluster's DNS is the fallback"
    );

    // A forged review naming kube-system (where, on EKS, aws-auth lives): answered, nothing written.
    let mut forged = review.clone();
    forged["request"]["namespace"] = "kube-system".into();
    forged["request"]["object"]["metadata"]["namespace"] = "kube-system".into();
    let answer = mutate(&forged).await;
    assert!(answer["response"].get("patch").is_none(), "{answer}");
    assert!(
        answer["response"]["warnings"][0].as_str().unwrap().contains("kube-system"),
        "{answer}"
    );
    assert!(
        api.get::<ConfigMap>("kube-system", "intentmap-aws-ca").is_none(),
        "nothing is written outside the opted-in namespaces"
    );
    assert_eq!(api.request_count("/api/v1/namespaces/kube-system/"), 0);

    let metrics = reqwest::get(format!("http://127.0.0.1:{health}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("aws_proxy_recorded_calls_total 1"), "{metrics}");
    assert!(metrics.contains("aws_proxy_upstream_errors_total 1"), "{metrics}");
    assert!(metrics.contains("aws_proxy_webhook_not_opted_in_total 1"), "{metrics}");

    let pid = proxy.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = tokio::task::spawn_blocking(move || {
        let status = proxy.0.wait();
        (proxy, status)
    });
    let (_proxy, status) = tokio::time::timeout(Duration::from_secs(15), status)
        .await
        .expect("aws-proxy stops on SIGTERM")
        .unwrap();
    assert!(status.unwrap().success());
    let _ = std::fs::remove_dir_all(&dir);
}
