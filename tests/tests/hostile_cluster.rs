//! Issue 14's cluster attacks against the real `cluster-agent mapper` binary, its Kubernetes
//! API played by the stand-in server (TokenReview with audiences and `user.extra`,
//! SubjectAccessReview), Istio sidecars played by HTTP servers on pod addresses (127.0.0.x):
//!
//! - someone on the pod network reads the map and wipes it right before an export (item 7);
//! - one node's token forges calls for pods of other nodes (item 8);
//! - a pod serves made-up Istio metrics naming `frontend` as its client (item 6), or huge
//!   answers, or counters at the edge of `u64` (item 10).
//!
//! Each asserts what a user checks: HTTP statuses, `intentmap list` and `export`, `/metrics`,
//! and the mapper's memory in /proc. The runtime has two threads: the stand-in API server must
//! answer the mapper's reviews while a test waits for the `intentmap` CLI.

use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use mapper_core::fixtures::*;
use serde_json::{json, Value};
use testkit::kube_api::{FakeApiServer, TokenIdentity, API_AUDIENCE};
use tests::{binary, start_mapper_only_with, start_mapper_with, until, write_kubeconfig};

const AUDIENCE: &str = "intentmap-mapper";
const NODE_ACCOUNT: &str = "system:serviceaccount:intentmap:intentmap-node";

// === the cluster ===

/// A Deployment `name` in `namespace` with one pod at `ip` on `node`; returns the pod.
fn deploy(api: &FakeApiServer, namespace: &str, name: &str, ip: &str, node: &str) -> Pod {
    let replicaset = format!("{name}-5d8f7c9b4");
    api.apply(&Deployment { metadata: mk_deployment(namespace, name), ..Default::default() });
    api.apply(&ReplicaSet {
        metadata: mk_replicaset(namespace, &replicaset, name),
        ..Default::default()
    });
    mk_pod(namespace, &format!("{replicaset}-x1"), &[ip])
        .owned_by("ReplicaSet", &replicaset)
        .labelled("app", name)
        .on_node(node)
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("e2e-hostile-{name}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

fn intentmap(mapper: &str, args: &[&str]) -> Output {
    Command::new(binary("intentmap"))
        .args(["--mapper-url", mapper])
        .args(args)
        .env_remove("INTENTMAP_TOKEN")
        .output()
        .expect("running intentmap")
}

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "intentmap failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// How long a wait of this test ([`until`]) may take.
const WAIT: Duration = Duration::from_secs(30);

async fn metric(mapper: &str, name: &str) -> u64 {
    let text = reqwest::get(format!("{mapper}/metrics"))
        .await
        .expect("the mapper's /metrics")
        .text()
        .await
        .expect("metrics text");
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("intentmap_mapper_{name} ")))
        .unwrap_or_else(|| panic!("no {name} in:\n{text}"));
    line.rsplit(' ').next().and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{line}"))
}

fn tcp(src: &str, dst: &str) -> Value {
    json!({"src_ip": src, "src_port": 40000, "dst_ip": dst, "dst_port": 8080, "at": chrono::Utc::now()})
}

async fn post(mapper: &str, token: Option<&str>, batch: &Value) -> (u16, Value) {
    let request = reqwest::Client::new().post(format!("{mapper}/v1/observations")).json(batch);
    let reply = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    }
    .send()
    .await
    .expect("the mapper answers");
    (reply.status().as_u16(), reply.json().await.unwrap_or(Value::Null))
}

// === item 7: the local API ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_map_is_read_and_reset_only_by_people_the_cluster_allows() {
    let api = FakeApiServer::start().await.unwrap();
    let names = [
        "frontend",
        "cartservice",
        "checkoutservice",
        "paymentservice",
        "currencyservice",
        "shippingservice",
        "redis-cart",
    ];
    for (i, name) in names.iter().enumerate() {
        api.apply(&deploy(&api, "shop", name, &format!("10.244.1.{}", 10 + i), "node-1"));
    }
    api.set_token_identity(
        "node-token",
        TokenIdentity::projected(
            "intentmap",
            "intentmap-node",
            AUDIENCE,
            ("intentmap-node-a1", "uid-agent-1"),
            Some("node-1"),
        ),
    );
    let made_for_mapper = |user: &str| TokenIdentity {
        username: user.into(),
        audiences: vec![AUDIENCE.into()],
        ..Default::default()
    };
    api.set_token_identity("viewer-token", made_for_mapper("system:serviceaccount:ci:viewer"));
    api.set_token_identity("admin-token", made_for_mapper("system:serviceaccount:ci:admin"));
    // Any pod's automounted token: valid, but for the API server.
    api.set_token_identity(
        "pod-token",
        TokenIdentity {
            username: "system:serviceaccount:attacker:default".into(),
            audiences: vec![API_AUDIENCE.into()],
            ..Default::default()
        },
    );
    api.grant(
        "system:serviceaccount:ci:viewer",
        "get",
        "intentmap.dev",
        "edges",
        Some("intentmap"),
    );
    api.grant("system:serviceaccount:ci:admin", "*", "intentmap.dev", "edges", Some("intentmap"));

    let dir = scratch("api");
    // `--loopback-access false`: every caller here is treated as coming from the pod network,
    // not through `kubectl port-forward` (the tests' connections are all on the loopback).
    let flags = [
        "--loopback-access",
        "false",
        "--namespace",
        "intentmap",
        "--node-service-accounts",
        NODE_ACCOUNT,
    ];
    let (_mapper, mapper) =
        start_mapper_only_with(&dir, &write_kubeconfig(&dir, &api.url()), &flags).await;
    let calls: Vec<Value> =
        (1..names.len()).map(|i| tcp("10.244.1.10", &format!("10.244.1.{}", 10 + i))).collect();
    assert_eq!(post(&mapper, Some("node-token"), &json!({"tcp": calls})).await.0, 202);

    let http = reqwest::Client::new();
    let edges = |token: Option<&'static str>| {
        let request = http.get(format!("{mapper}/v1/edges"));
        async move {
            let reply = match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            }
            .send()
            .await
            .unwrap();
            (reply.status().as_u16(), reply.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, body) = edges(None).await;
    assert_eq!(status, 401, "anyone on the network: {body}");
    assert!(
        body["error"].as_str().unwrap_or_default().contains("port-forward"),
        "the refusal says what to do: {body}"
    );
    assert_eq!(
        edges(Some("pod-token")).await.0,
        401,
        "a pod's own API token is not made for the mapper"
    );
    assert_eq!(edges(Some("node-token")).await.0, 403, "node agents send; they do not read");
    let (status, listed) = edges(Some("viewer-token")).await;
    assert_eq!((status, listed.as_array().map(Vec::len)), (200, Some(6)));

    // The wipe before an export.
    let reset = |token: Option<&'static str>| {
        let request = http.post(format!("{mapper}/v1/reset"));
        async move {
            match token {
                Some(token) => request.bearer_auth(token),
                None => request,
            }
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
        }
    };
    assert_eq!(reset(None).await, 401);
    assert_eq!(reset(Some("pod-token")).await, 401);
    assert_eq!(reset(Some("viewer-token")).await, 403, "reading is not resetting");
    assert_eq!(
        edges(Some("viewer-token")).await.1.as_array().map(Vec::len),
        Some(6),
        "nothing was wiped"
    );

    // The CLI: refused without a token (and told how), allowed with one, reset only by an admin.
    let refused = intentmap(&mapper, &["list"]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("kubectl port-forward"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(stdout(&intentmap(&mapper, &["--token", "viewer-token", "list"]))
        .starts_with("frontend in namespace shop calls:\n"));
    let out = Command::new(binary("intentmap"))
        .args(["--mapper-url", &mapper, "reset"])
        .env("INTENTMAP_TOKEN", "viewer-token")
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("edges-admin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&intentmap(&mapper, &["--token", "admin-token", "reset"]));
    assert_eq!(edges(Some("viewer-token")).await.1.as_array().map(Vec::len), Some(0));

    // Refused before the body is read: a client that announces 100 MiB and sends none of it
    // gets its answer at once.
    for (token, expected) in [(None, "HTTP/1.1 401"), (Some("node-token"), "HTTP/1.1 413")] {
        let answer = announce_without_body(&mapper, token).await;
        assert!(answer.starts_with(expected), "{token:?}: {answer}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Sends the head of a 100 MiB observation batch and no body; what the mapper answers.
async fn announce_without_body(mapper: &str, token: Option<&str>) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = mapper.trim_start_matches("http://");
    let mut stream =
        tokio::net::TcpStream::connect(address).await.expect("connecting to the mapper");
    let authorization = token.map(|t| format!("Authorization: Bearer {t}\r\n")).unwrap_or_default();
    let head =
        format!("POST /v1/observations HTTP/1.1\r\nHost: {address}\r\n{authorization}Content-Type: application/json\r\nContent-Length: 104857600\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0; 512];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut answer))
        .await
        .expect("an answer without the body")
        .unwrap();
    String::from_utf8_lossy(&answer[..read]).into_owned()
}

// === item 8: node agents ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_agent_speaks_only_for_the_pods_of_its_own_node() {
    let api = FakeApiServer::start().await.unwrap();
    api.apply(&deploy(&api, "shop", "web", "10.244.1.5", "node-a"));
    let cart = deploy(&api, "shop", "cart", "10.244.2.5", "node-b");
    api.apply(&cart);
    api.apply(&deploy(&api, "attacker", "evil", "10.244.1.9", "node-a"));
    // The agents' own pods (for tokens that name their pod only, before Kubernetes 1.30).
    api.apply(
        &mk_pod("intentmap", "intentmap-node-a1", &["10.244.1.2"])
            .with_uid("uid-agent-a")
            .on_node("node-a"),
    );
    let agent = |pod: (&str, &str), node: Option<&str>| {
        TokenIdentity::projected("intentmap", "intentmap-node", AUDIENCE, pod, node)
    };
    api.set_token_identity(
        "node-a-token",
        agent(("intentmap-node-a1", "uid-agent-a"), Some("node-a")),
    );
    api.set_token_identity("node-a-old-token", agent(("intentmap-node-a1", "uid-agent-a"), None));
    let mut unbound = agent(("", ""), None);
    unbound.extra.clear();
    api.set_token_identity("unbound-token", unbound);
    api.set_token_identity(
        "default-audience-token",
        TokenIdentity {
            username: NODE_ACCOUNT.into(),
            audiences: vec![API_AUDIENCE.into()],
            ..Default::default()
        },
    );

    let dir = scratch("node");
    let (_mapper, mapper) = start_mapper_only_with(
        &dir,
        &write_kubeconfig(&dir, &api.url()),
        &["--node-service-accounts", NODE_ACCOUNT],
    )
    .await;
    let cart_uid = cart.metadata.uid.clone().unwrap();
    let forged = json!({
        "tcp": [
            tcp("10.244.1.5", "10.244.2.5"),
            // node-b's cart calling the attacker: by address, and by a pod hint.
            tcp("10.244.2.5", "10.244.1.9"),
            {"src_ip": "10.244.1.9", "src_port": 40000, "dst_ip": "10.244.1.9", "dst_port": 8080, "at": chrono::Utc::now(), "pod": {"uid": cart_uid}},
        ],
        // cart "was told" a name for the attacker's address.
        "dns": [{"client_ip": "10.244.2.5", "name": "billing.internal.example", "addresses": ["203.0.113.66"], "ttl_seconds": 60, "at": chrono::Utc::now()}],
    });
    assert_eq!(post(&mapper, None, &forged).await.0, 401);
    assert_eq!(
        post(&mapper, Some("default-audience-token"), &forged).await.0,
        401,
        "a token for the API server, not the mapper"
    );
    assert_eq!(
        post(&mapper, Some("unbound-token"), &forged).await.0,
        403,
        "a token naming no pod or node binds to nothing"
    );
    for token in ["node-a-token", "node-a-old-token"] {
        let (status, answer) = post(&mapper, Some(token), &forged).await;
        assert_eq!((status, &answer["refused"]), (202, &json!(3)), "{token}: {answer}");
    }
    let listed = stdout(&intentmap(&mapper, &["list"]));
    assert_eq!(listed, "web in namespace shop calls:\n  - cart\n", "only node-a's own pod's call");
    assert_eq!(metric(&mapper, "foreign_clients_total").await, 6);
    let _ = std::fs::remove_dir_all(&dir);
}

// === items 6 and 10: Istio ===

/// Sidecars on `ips`, one port for all, each answering what its function makes; returns the
/// port and how often each was asked.
async fn sidecars(
    ips: &[&str],
    answers: Vec<Arc<dyn Fn() -> axum::body::Body + Send + Sync>>,
) -> (u16, Vec<Arc<AtomicUsize>>) {
    'port: for _ in 0..20 {
        let first = tokio::net::TcpListener::bind((ips[0], 0)).await.unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        for ip in &ips[1..] {
            match tokio::net::TcpListener::bind((*ip, port)).await {
                Ok(listener) => listeners.push(listener),
                Err(_) => continue 'port,
            }
        }
        let mut asked = Vec::new();
        for (listener, answer) in listeners.into_iter().zip(answers.clone()) {
            let count = Arc::new(AtomicUsize::new(0));
            let seen = count.clone();
            let app = axum::Router::new().route(
                "/stats/prometheus",
                axum::routing::get(move || {
                    seen.fetch_add(1, Ordering::SeqCst);
                    let body = answer();
                    async move { body }
                }),
            );
            tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
            asked.push(count);
        }
        return (port, asked);
    }
    panic!("no port free on all of {ips:?}");
}

fn series(
    reporter: &str,
    source: (&str, &str),
    destination: (&str, &str),
    path: &str,
    value: f64,
) -> String {
    format!(
        "istio_requests_total{{reporter=\"{reporter}\",source_workload=\"{}\",source_workload_namespace=\"{}\",destination_workload=\"{}\",\
         destination_workload_namespace=\"{}\",destination_service_name=\"{}\",destination_service_namespace=\"{}\",request_method=\"GET\",\
         request_path=\"{path}\",response_code=\"200\"}} {value}\n",
        source.1, source.0, destination.1, destination.0, destination.1, destination.0
    )
}

fn text(
    make: impl Fn() -> String + Send + Sync + 'static,
) -> Arc<dyn Fn() -> axum::body::Body + Send + Sync> {
    Arc::new(move || axum::body::Body::from(make()))
}

fn istio_installed(api: &FakeApiServer) {
    api.apply(&Namespace { metadata: mk_namespace("istio-system"), ..Default::default() });
    api.apply(&mk_service("istio-system", "istiod", &["10.96.0.40"], &[("app", "istiod")]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forged_sidecar_reaches_neither_the_list_nor_the_client_intents() {
    let api = FakeApiServer::start().await.unwrap();
    istio_installed(&api);
    let ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"];
    for (namespace, name, ip) in [
        ("shop", "frontend", ips[0]),
        ("shop", "cartservice", ips[1]),
        ("attacker", "evil-sidecar", ips[2]),
    ] {
        api.apply(&deploy(&api, namespace, name, ip, "node-1").with_istio_sidecar());
    }
    // Only the label: anyone can put it on a pod.
    api.apply(
        &deploy(&api, "attacker", "mimic", ips[3], "node-1")
            .labelled("security.istio.io/tlsMode", "istio"),
    );

    let calls = Arc::new(AtomicU64::new(10));
    let n = |calls: &Arc<AtomicU64>| calls.load(Ordering::SeqCst) as f64;
    let (c1, c2, c3, c4) = (calls.clone(), calls.clone(), calls.clone(), calls.clone());
    let (frontend, cart) = (("shop", "frontend"), ("shop", "cartservice"));
    let answers = vec![
        text(move || series("source", frontend, cart, "/api/cart", n(&c1))),
        text(move || series("destination", frontend, cart, "/api/cart", n(&c2))),
        text(move || {
            series("destination", frontend, ("attacker", "evil-sidecar"), "/admin/export", n(&c3))
        }),
        text(move || {
            series("destination", frontend, ("attacker", "mimic"), "/admin/mimic", n(&c4))
        }),
    ];
    let (port, asked) = sidecars(&ips, answers).await;
    let dir = scratch("istio");
    let port = port.to_string();
    let flags = ["--istio-scrape-interval-seconds", "0.2", "--istio-metrics-port", &port];
    let (_mapper, mapper) =
        start_mapper_with(&dir, &write_kubeconfig(&dir, &api.url()), &flags).await;

    until("every injected sidecar has a baseline", WAIT, || async {
        asked[..3].iter().all(|a| a.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    calls.fetch_add(5, Ordering::SeqCst);
    let listed = until("frontend's real call is listed", WAIT, || async {
        let listed = stdout(&intentmap(&mapper, &["list"]));
        listed.contains("cartservice").then_some(listed)
    })
    .await;
    let after = asked[2].load(Ordering::SeqCst);
    until("the forged sidecar is scraped twice more", WAIT, || async {
        (asked[2].load(Ordering::SeqCst) >= after + 2).then_some(())
    })
    .await;

    let listed_now = stdout(&intentmap(&mapper, &["list"]));
    assert_eq!(listed_now, listed);
    assert_eq!(listed_now, "frontend in namespace shop calls:\n  - cartservice\n    - path /api/cart, methods: [GET]\n");
    let intents = stdout(&intentmap(&mapper, &["export", "-n", "shop"]));
    assert!(
        intents.contains("cartservice")
            && !intents.contains("evil-sidecar")
            && !intents.contains("/admin"),
        "{intents}"
    );
    assert!(metric(&mapper, "istio_uncorroborated_total").await >= 1);
    assert_eq!(asked[3].load(Ordering::SeqCst), 0, "a pod with the label alone is never scraped");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The mapper's peak resident memory, in KiB.
fn peak_kib(pid: u32) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("the mapper's /proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_sidecar_answers_and_counters_at_the_limit_cost_the_mapper_nothing() {
    let api = FakeApiServer::start().await.unwrap();
    istio_installed(&api);
    let ips = ["127.0.0.12", "127.0.0.13", "127.0.0.14", "127.0.0.15", "127.0.0.16"];
    let ledger = deploy(&api, "shop", "ledger", "10.244.1.30", "node-1");
    api.apply(&ledger);
    api.apply(&mk_service("shop", "ledger", &["10.96.0.30"], &[("app", "ledger")]));
    for (i, ip) in ips.iter().enumerate() {
        api.apply(
            &deploy(&api, "attacker", &format!("evil-{i}"), ip, "node-1").with_istio_sidecar(),
        );
    }
    // Four sidecars answer 64 MiB each (well-formed series); the fifth counts its own calls to
    // ledger up by 1e300 a round, u64::MAX requests each time.
    let line = series("destination", ("shop", "ledger"), ("attacker", "evil-0"), "/x", 1.0);
    let body = axum::body::Bytes::from(line.repeat((64 << 20) / line.len()));
    let huge: Arc<dyn Fn() -> axum::body::Body + Send + Sync> =
        Arc::new(move || axum::body::Body::from(body.clone()));
    let rounds = Arc::new(AtomicU64::new(0));
    let counted = rounds.clone();
    let overflowing = text(move || {
        series(
            "source",
            ("attacker", "evil-4"),
            ("shop", "ledger"),
            "/",
            1e300 * counted.load(Ordering::SeqCst) as f64 + 1.0,
        )
    });
    let (port, asked) =
        sidecars(&ips, vec![huge.clone(), huge.clone(), huge.clone(), huge, overflowing]).await;

    let dir = scratch("istio-limits");
    let port = port.to_string();
    let flags = ["--istio-scrape-interval-seconds", "0.2", "--istio-metrics-port", &port];
    let (process, mapper) =
        start_mapper_with(&dir, &write_kubeconfig(&dir, &api.url()), &flags).await;
    // The attacker's pod really connects to ledger (a node agent sees it): its counts are believed.
    assert_eq!(
        post(&mapper, Some("node-secret"), &json!({"tcp": [tcp("127.0.0.16", "10.96.0.30")]}))
            .await
            .0,
        202
    );
    let before = peak_kib(process.0.id());

    for round in 1..=3 {
        let seen = asked[4].load(Ordering::SeqCst);
        rounds.store(round, Ordering::SeqCst);
        until("the overflowing sidecar is scraped again", WAIT, || async {
            (asked[4].load(Ordering::SeqCst) >= seen + 2).then_some(())
        })
        .await;
    }
    until("the huge sidecars were asked a few times", WAIT, || async {
        asked[..4].iter().all(|a| a.load(Ordering::SeqCst) >= 3).then_some(())
    })
    .await;

    assert!(
        reqwest::get(format!("{mapper}/healthz")).await.unwrap().status().is_success(),
        "the mapper is alive"
    );
    assert!(
        metric(&mapper, "istio_oversized_scrapes_total").await >= 12,
        "every 64 MiB answer is refused past the limit"
    );
    assert_eq!(metric(&mapper, "http_requests_total").await, u64::MAX, "saturated, not overflowed");
    let edges: Value =
        reqwest::get(format!("{mapper}/v1/edges")).await.unwrap().json().await.unwrap();
    let to_ledger = edges
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["client"]["name"] == "evil-4")
        .unwrap_or_else(|| panic!("{edges:#}"));
    assert_eq!(to_ledger["connections"], json!(u64::MAX));
    let grown_mib = peak_kib(process.0.id()).saturating_sub(before) / 1024;
    assert!(
        grown_mib < 48,
        "four 64 MiB answers a round grew the mapper's peak memory by {grown_mib} MiB"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
