//! Real AWS SDK clients (boto3) through the real proxy, against a local AWS emulator (`moto` in
//! server mode, behind TLS with a certificate for the AWS host names) standing in for the real
//! endpoints. The calls the proxy records go through the real shipping code into the real mapper
//! core, and the test checks the `aws` edges a user would see, and that the SDK got the
//! emulator's real answers.
//!
//! Needs `target/pytools` (boto3, moto), which `scripts/setup.sh` installs; without it the tests
//! fail naming the script that installs it (`testkit::need`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use aws_proxy::ca::CertificateAuthority;
use aws_proxy::proxy::{Proxy, ProxyArgs};
use cluster_agent::mapper::api::{router, ApiState};
use cluster_agent::mapper::auth::{ApiAuth, AuthConfig};
use cluster_agent::mapper::SharedMapper;
use mapper_core::fixtures::*;
use mapper_core::Mapper;
use model::{Edge, Target};
use observation_ship::{Credentials, Outgoing, Shipper};

use support::Moto;

mod support;

const ACCOUNT: &str = "123456789012";
const ACCESS_KEY_ID: &str = "AKIAINTENTMAPTEST0001";

const EMULATED_NAMES: &[&str] = &[
    "s3.amazonaws.com",
    "*.s3.amazonaws.com",
    "s3.us-east-1.amazonaws.com",
    "*.s3.us-east-1.amazonaws.com",
    "dynamodb.us-east-1.amazonaws.com",
    "sqs.us-east-1.amazonaws.com",
    "sts.us-east-1.amazonaws.com",
    "sts.amazonaws.com",
];

struct Setup {
    _emulator: Moto,
    proxy: Proxy,
    proxy_ca_file: PathBuf,
    mapper: SharedMapper,
    mapper_addr: SocketAddr,
    outgoing: Outgoing,
    tools: PathBuf,
    /// Removed when the test ends (after the emulator stops: fields drop in order).
    dir: testkit::process::TempDir,
}

async fn setup(name: &str) -> Setup {
    let tools = support::pytools();
    testkit::need::target_file(
        "pytools/bin/python",
        "scripts/ensure-python-tools.sh (boto3 and moto from PyPI)",
    );
    let temp = testkit::process::TempDir::new(&format!("aws-proxy-sdk-{name}"));
    let dir = temp.path().to_owned();
    let emulator =
        support::start_moto(&dir, EMULATED_NAMES).unwrap_or_else(|reason| panic!("{reason}"));

    let proxy_ca = Arc::new(CertificateAuthority::generate().unwrap());
    let proxy_ca_file = dir.join("proxy-ca.crt");
    std::fs::write(&proxy_ca_file, proxy_ca.ca_pem()).unwrap();
    let args = ProxyArgs {
        account_id: Some(ACCOUNT.to_owned()),
        upstream_ca_file: Some(emulator.ca_file.clone()),
        connect_to: vec![format!("amazonaws.com={}", emulator.addr)],
        ..ProxyArgs::loopback()
    };
    let outgoing = Outgoing::new(10_000);
    let proxy = Proxy::start(&args, proxy_ca, outgoing.clone()).await.unwrap();

    // The calling workload: a Deployment's pod whose address is the test's loopback.
    let mut mapper = Mapper::default();
    mapper.index.apply_meta("Deployment", &mk_deployment("billing", "invoicer"));
    mapper.index.apply_meta("ReplicaSet", &mk_replicaset("billing", "invoicer-7d9f", "invoicer"));
    mapper.index.apply(
        &mk_pod("billing", "invoicer-7d9f-x2x9q", &["127.0.0.1"])
            .owned_by("ReplicaSet", "invoicer-7d9f"),
    );
    let mapper = SharedMapper::new(mapper);
    let state = Arc::new(ApiState {
        mapper: mapper.clone(),
        auth: ApiAuth::new(
            AuthConfig { shared_token: Some("proxy-token".into()), ..AuthConfig::default() },
            None,
        ),
        telemetry: Arc::default(),
        upload: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mapper_addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router(state)).await.unwrap() });
    Setup {
        _emulator: emulator,
        proxy,
        proxy_ca_file,
        mapper,
        mapper_addr,
        outgoing,
        tools,
        dir: temp,
    }
}

impl Setup {
    /// Runs the boto3 script; returns what AWS answered.
    async fn run_sdk(&self, mode: &str, prefix: &str) -> serde_json::Value {
        let mut command = tokio::process::Command::new(self.tools.join("python"));
        command
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk_calls.py"))
            .arg(mode)
            .arg(self.proxy.tls_addr().port().to_string())
            .arg(prefix)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("AWS_ACCESS_KEY_ID", ACCESS_KEY_ID)
            .env("AWS_SECRET_ACCESS_KEY", "intentmap/test/secret/key/not/real/0000000")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .env("AWS_CA_BUNDLE", &self.proxy_ca_file)
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", self.dir.path().join("no-config"))
            .env("AWS_SHARED_CREDENTIALS_FILE", self.dir.path().join("no-credentials"));
        if mode == "connect" {
            command.env("HTTPS_PROXY", format!("http://{}", self.proxy.connect_addr()));
        }
        let output = tokio::time::timeout(Duration::from_secs(120), command.output())
            .await
            .expect("boto3 finished within 120 s")
            .unwrap();
        assert!(
            output.status.success(),
            "boto3 failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
            panic!("boto3 printed no JSON ({e}): {}", String::from_utf8_lossy(&output.stdout))
        })
    }

    async fn ship(&self) -> Vec<Edge> {
        let shipper = Shipper {
            mapper_url: format!("http://{}", self.mapper_addr),
            credentials: Credentials::Shared("proxy-token".into()),
            source: "aws-proxy".into(),
            http: reqwest::Client::new(),
            max_batch: 1000,
        };
        shipper.flush(&self.outgoing).await.unwrap();
        self.mapper.lock().snapshot()
    }
}

fn aws_actions(edges: &[Edge], arn: &str) -> Vec<String> {
    let edge = edges
        .iter()
        .find(|e| matches!(&e.target, Target::Aws(a) if a.arn == arn))
        .unwrap_or_else(|| {
            panic!(
                "no edge to {arn}; edges: {:#?}",
                edges.iter().map(|e| &e.target).collect::<Vec<_>>()
            )
        });
    assert_eq!(
        (edge.client.namespace.as_str(), edge.client.name.as_str()),
        ("billing", "invoicer"),
        "the caller is named by its Deployment"
    );
    match &edge.target {
        Target::Aws(a) => a.actions.clone(),
        _ => unreachable!(),
    }
}

fn check_answers(answers: &serde_json::Value, prefix: &str) {
    assert_eq!(
        answers["s3_body"], "%PDF-1.7 invoice one",
        "the object came back through the proxy unchanged"
    );
    assert_eq!(answers["s3_keys"], serde_json::json!(["2026/11/inv-1.pdf"]));
    assert_eq!(answers["ddb_item"]["total"]["N"], "42");
    assert_eq!(answers["sqs_bodies"], serde_json::json!(["ship order o-1"]));
    assert_eq!(
        answers["sqs_queue_url"],
        format!("https://sqs.us-east-1.amazonaws.com/{ACCOUNT}/{prefix}-jobs")
    );
    assert_eq!(answers["sts_account"], ACCOUNT, "the emulator's own answer");
}

fn check_edges(edges: &[Edge], prefix: &str) {
    let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(
        aws_actions(edges, &format!("arn:aws:s3:::{prefix}-invoices")),
        strings(&["s3:CreateBucket", "s3:ListBucket"])
    );
    assert_eq!(
        aws_actions(edges, &format!("arn:aws:s3:::{prefix}-invoices/2026/11/inv-1.pdf")),
        strings(&["s3:GetObject", "s3:PutObject"])
    );
    assert_eq!(
        aws_actions(edges, &format!("arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{prefix}-orders")),
        strings(&["dynamodb:CreateTable", "dynamodb:GetItem", "dynamodb:PutItem"])
    );
    let queue = aws_actions(edges, &format!("arn:aws:sqs:us-east-1:{ACCOUNT}:{prefix}-jobs"));
    assert_eq!(queue, strings(&["sqs:CreateQueue", "sqs:ReceiveMessage", "sqs:SendMessage"]));
    assert_eq!(aws_actions(edges, "arn:aws:sts:us-east-1::*"), strings(&["sts:GetCallerIdentity"]));
    let all = serde_json::to_string(edges).unwrap();
    assert!(!all.contains(ACCESS_KEY_ID), "the access key id is never recorded");

    // What the user exports: one ClientIntents for the caller, with every ARN and its actions,
    // valid against the published CRD in both versions.
    for version in [model::IntentsVersion::V2beta1, model::IntentsVersion::V1alpha3] {
        let docs = model::client_intents(edges, version);
        assert_eq!(docs.len(), 1);
        let text = serde_json::to_string(&docs[0]).unwrap();
        assert!(
            text.contains(&format!("arn:aws:dynamodb:us-east-1:{ACCOUNT}:table/{prefix}-orders"))
                && text.contains("s3:PutObject"),
            "{text}"
        );
        let crd = testkit::crd::CrdSchemas::clientintents_reference();
        crd.validate(&docs[0]).unwrap_or_else(|errors| {
            panic!("{version:?} ClientIntents do not validate: {errors:?}\n{text}")
        });
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_through_https_proxy_connect() {
    let setup = setup("connect").await;
    let answers = setup.run_sdk("connect", "viaconnect").await;
    check_answers(&answers, "viaconnect");
    let edges = setup.ship().await;
    check_edges(&edges, "viaconnect");
    let stats = setup.proxy.stats().snapshot();
    assert_eq!(stats.upstream_errors, 0);
    assert_eq!(stats.unknown_service, 0);
    assert!(stats.recorded >= 11, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn boto3_to_aws_names_answered_with_the_proxy_address_sni() {
    let setup = setup("sni").await;
    let answers = setup.run_sdk("sni", "viasni").await;
    check_answers(&answers, "viasni");
    check_edges(&setup.ship().await, "viasni");
}
