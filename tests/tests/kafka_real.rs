//! A real Apache Kafka broker (from Maven Central, `scripts/kafka.sh`) and the real
//! `cluster-agent mapper` following its authorizer log file, for Kafka 4 (KRaft,
//! `StandardAuthorizer`) and Kafka 3 (ZooKeeper, `AclAuthorizer`).
//!
//! The broker and its clients are pods: network namespaces on a bridge, each with the address
//! the stand-in Kubernetes API gives its pod (the broker `kafka-0` of StatefulSet `infra/kafka`,
//! the clients of Deployments `shop/checkout` and `shop/billing`). The clients are Kafka's own
//! console tools, each with its own SASL/PLAIN user: checkout creates, describes and produces to
//! `orders`; billing consumes it in group `billing`, then tries to produce to it and is refused.
//! What the mapper shows (`/v1/edges`, `intentmap list`, `/metrics`) is checked against what the
//! broker logged: every authorizer line read once and none unreadable, the topic and the
//! operations each client used, the refused one marked denied. Then the broker restarts and its
//! log rolls over (log4j's rolling appender, a few KiB a file) while the clients go on: new
//! operations still show, nothing is lost or counted twice. Needs root (namespaces), java 17
//! and mvn.

use std::collections::{BTreeMap, BTreeSet};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use mapper_core::fixtures::*;
use serde_json::Value;
use testkit::kafka::{Broker, BrokerOptions, Tool};
use testkit::kube_api::FakeApiServer;
use testkit::netns::Bridge;
use testkit::process::TempDir;
use tests::{binary, run_ok, start_mapper_with, write_kubeconfig};

/// Two brokers at once would crowd a 2-core machine: the tests take turns.
static ONE_BROKER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(unprivileged, ignore = "needs root: network namespaces for the broker and its clients")]
async fn kafka_4_kraft_authorizer_log_is_followed_across_restart_and_rotation() {
    scenario(testkit::kafka::KAFKA_4, 4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(unprivileged, ignore = "needs root: network namespaces for the broker and its clients")]
async fn kafka_3_zookeeper_authorizer_log_is_followed_across_restart_and_rotation() {
    scenario(testkit::kafka::KAFKA_3, 3).await;
}

/// A Deployment `shop/<name>` with one pod at `ip`.
fn deploy(api: &FakeApiServer, name: &str, ip: &str) {
    api.apply(&Deployment { metadata: mk_deployment("shop", name), ..Default::default() });
    let rs = format!("{name}-7c9d5b8f4");
    api.apply(&ReplicaSet { metadata: mk_replicaset("shop", &rs, name), ..Default::default() });
    api.apply::<Pod>(
        &mk_pod("shop", &format!("{rs}-q2x7z"), &[ip])
            .owned_by("ReplicaSet", &rs)
            .labelled("app", name),
    );
}

/// Runs a client tool (off the async threads) and panics with its output if `ok` says it did
/// not do what it was run for.
fn client(
    broker: &Broker,
    ns: &str,
    user: &str,
    tool: Tool,
    args: &[&str],
    input: &str,
    ok: impl FnOnce(&Output) -> bool,
) -> Output {
    let output =
        tokio::task::block_in_place(|| broker.run_client(Some(ns), user, tool, args, input))
            .unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        ok(&output),
        "{user}'s {tool:?} {args:?} did not do what it should ({}):\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// ClientIntents' name for an ACL operation as either authorizer logs it (`Read`, `READ`,
/// `DescribeConfigs`, `DESCRIBE_CONFIGS`), written out here from Kafka's and the CRD's docs
/// rather than taken from the parser under test.
fn crd_name(logged: &str) -> Option<&'static str> {
    let folded: String = logged.chars().filter(|c| *c != '_').collect::<String>().to_lowercase();
    Some(match folded.as_str() {
        "read" => "consume",
        "write" => "produce",
        "create" => "create",
        "delete" => "delete",
        "alter" => "alter",
        "describe" => "describe",
        "describeconfigs" => "DescribeConfigs",
        "alterconfigs" => "AlterConfigs",
        "idempotentwrite" => "IdempotentWrite",
        "clusteraction" => "ClusterAction",
        "all" => "all",
        _ => return None,
    })
}

/// What a client did to topics, as the broker logged it.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
struct Used {
    /// Topic → operations (ClientIntents' names), allowed or not.
    topics: BTreeMap<String, BTreeSet<String>>,
    /// Topic → operations refused.
    denied: BTreeMap<String, BTreeSet<String>>,
    /// Authorizer lines about a literal topic with an operation ClientIntents names.
    accesses: u64,
}

/// Everything the broker's authorizer logger wrote, in every file (rolled ones included).
#[derive(Debug, Default)]
struct Logged {
    lines: u64,
    /// Lines of the logger that decide nothing (AclAuthorizer's notes beside its decisions).
    notes: u64,
    /// Per client address.
    by_host: BTreeMap<String, Used>,
    files: usize,
}

/// The word after `key` in `line`.
fn word_after<'a>(line: &'a str, key: &str) -> Option<&'a str> {
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()
}

fn read_log(broker: &Broker) -> Logged {
    let files = broker.authorizer_logs().expect("listing the broker's authorizer logs");
    let mut logged = Logged { files: files.len(), ..Logged::default() };
    for file in &files {
        let text = std::fs::read_to_string(file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", file.display()));
        for line in text.lines() {
            assert!(
                line.ends_with("(kafka.authorizer.logger)"),
                "{} holds a line of another logger (the log4j configuration is wrong): {line}",
                file.display()
            );
            logged.lines += 1;
            if !line.contains("Principal = ") {
                logged.notes += 1;
                continue;
            }
            let (Some(host), Some(resource)) =
                (word_after(line, "from host = "), word_after(line, "on resource = "))
            else {
                continue;
            };
            let Some(topic) = resource.strip_prefix("Topic:LITERAL:") else { continue };
            let operation = word_after(line, "Operation = ")
                .or_else(|| word_after(line, "operation = "))
                .and_then(crd_name);
            let Some(operation) = operation else { continue };
            let used = logged.by_host.entry(host.trim_start_matches('/').to_owned()).or_default();
            used.accesses += 1;
            used.topics.entry(topic.to_owned()).or_default().insert(operation.to_owned());
            if line.contains(" is Denied ") {
                used.denied.entry(topic.to_owned()).or_default().insert(operation.to_owned());
            }
        }
    }
    logged
}

/// The mapper's `<family>_total` counters whose names hold `kafka`, by the part after
/// `kafka_` (`accesses`, `malformed_lines`, ...).
async fn kafka_metrics(mapper: &str) -> BTreeMap<String, u64> {
    let metrics = tests::mapper_metrics(mapper).await.expect("the mapper's /metrics");
    metrics
        .into_iter()
        .filter_map(|(name, value)| {
            let name = name.strip_suffix("_total")?;
            let kind = &name[name.find("kafka_")? + "kafka_".len()..];
            Some((kind.to_owned(), value as u64))
        })
        .collect()
}

/// Compares the mapper's edges and counters with what the broker logged; `Err` says what
/// differs.
async fn mapper_matches_log(
    http: &reqwest::Client,
    mapper: &str,
    broker: &Broker,
    clients: &[(&str, &str)],
) -> Result<(Logged, Vec<Value>), String> {
    let logged = tokio::task::block_in_place(|| read_log(broker));
    let metrics = kafka_metrics(mapper).await;
    let counted: u64 = [
        "accesses",
        "other_lines",
        "malformed_lines",
        "unknown_operations",
        "non_topic_lines",
        "topic_patterns",
        "unresolved_hosts",
        "unknown_brokers",
    ]
    .iter()
    .map(|k| metrics.get(*k).copied().unwrap_or(0))
    .sum();
    let malformed = metrics.get("malformed_lines").copied().unwrap_or(0);
    if malformed != 0 {
        return Err(format!("{malformed} authorizer lines unreadable: {metrics:?}"));
    }
    if counted != logged.lines {
        return Err(format!(
            "the broker logged {} authorizer lines in {} files, the mapper counted {counted}: {metrics:?}",
            logged.lines, logged.files
        ));
    }
    let other = metrics.get("other_lines").copied().unwrap_or(0);
    if other != logged.notes {
        return Err(format!("{} notes logged, {other} other lines counted", logged.notes));
    }
    let edges: Value = http
        .get(format!("{mapper}/v1/edges"))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let edges = edges.as_array().cloned().unwrap_or_default();
    let mut found = Vec::new();
    for (name, ip) in clients {
        let Some(used) = logged.by_host.get(*ip) else {
            return Err(format!("the broker logged nothing from {name} ({ip}) yet"));
        };
        let edge = edges.iter().find(|e| {
            e["client"]["namespace"] == "shop"
                && e["client"]["name"] == *name
                && e["target"]["kafka"]["namespace"] == "infra"
                && e["target"]["kafka"]["name"] == "kafka"
        });
        let Some(edge) = edge else {
            return Err(format!("no edge {name} → kafka among {edges:?}"));
        };
        let expected: Vec<Value> = used
            .topics
            .iter()
            .map(|(topic, operations)| {
                let denied = used.denied.get(topic).cloned().unwrap_or_default();
                serde_json::json!({"name": topic, "operations": operations, "denied": denied})
            })
            .collect();
        let mut shown: Vec<Value> = edge["kafka"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|t| {
                let set = |v: &Value| -> BTreeSet<String> {
                    v.as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(str::to_owned))
                        .collect()
                };
                serde_json::json!({"name": t["name"], "operations": set(&t["operations"]), "denied": set(&t["denied"])})
            })
            .collect();
        shown.sort_by_key(|t| t["name"].to_string());
        if shown != expected {
            return Err(format!("{name} → kafka shows {shown:?}, the broker logged {expected:?}"));
        }
        if edge["connections"] != used.accesses {
            return Err(format!(
                "{name} → kafka counts {} accesses, the broker logged {}",
                edge["connections"], used.accesses
            ));
        }
        found.push(edge.clone());
    }
    Ok((logged, found))
}

async fn until_mapper_matches_log(
    http: &reqwest::Client,
    mapper: &str,
    broker: &Broker,
    clients: &[(&str, &str)],
) -> (Logged, Vec<Value>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match mapper_matches_log(http, mapper, broker, clients).await {
            Ok(found) => return found,
            Err(e) if Instant::now() > deadline => {
                panic!("the mapper does not show what the broker logged: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

fn topic<'a>(edge: &'a Value, name: &str) -> &'a Value {
    edge["kafka"]
        .as_array()
        .and_then(|topics| topics.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no topic {name} on {edge}"))
}

fn strings(v: &Value) -> BTreeSet<&str> {
    v.as_array().into_iter().flatten().filter_map(Value::as_str).collect()
}

/// billing consumes `count` messages of orders in group billing; what it printed.
fn consume(broker: &Broker, ns: &str, count: &str) -> String {
    let consumed = client(
        broker,
        ns,
        "billing",
        Tool::ConsoleConsumer,
        &[
            "--topic",
            "orders",
            "--group",
            "billing",
            "--from-beginning",
            "--max-messages",
            count,
            "--timeout-ms",
            "60000",
        ],
        "",
        |o| o.status.success(),
    );
    stdout(&consumed)
}

/// billing may not write orders: the broker refuses its produce request (idempotence off, so
/// the refusal is of the topic write, not of a producer id).
fn refused(broker: &Broker, ns: &str, input: &str) {
    client(
        broker,
        ns,
        "billing",
        Tool::ConsoleProducer,
        &["--topic", "orders", "--producer-property", "enable.idempotence=false"],
        input,
        |o| {
            let err = stderr(o);
            err.contains("TopicAuthorizationException") || err.contains("Not authorized")
        },
    );
}

async fn scenario(version: &str, subnet: u8) {
    let _turn = ONE_BROKER_AT_A_TIME.lock().await;
    testkit::need::root("network namespaces for the broker and its clients");
    testkit::need::command("ip", "iproute2");
    testkit::need::command("timeout", "coreutils");
    testkit::need::command("java", "openjdk-17-jre-headless");
    testkit::need::command("mvn", "maven");
    let started = Instant::now();

    // The pods: the broker and two clients on a bridge. Should this process die without
    // unwinding (SIGTERM, SIGKILL), a watchdog kills what runs in the pods and the mapper and
    // removes the pods and the bridge (the broker has a watchdog of its own too).
    let dir = TempDir::new("e2e-kafka-real");
    let tag = format!("kfk{subnet}");
    Bridge::spawn_watchdog("e2e-kafka-watchdog", dir.path(), &tag, 3, "the Kafka test's pods")
        .expect("a watchdog for the test's pods");
    let ip = |host: u8| format!("10.214.{subnet}.{host}");
    let mut bridge = Bridge::new(&tag).expect("a bridge for the test pods");
    let kafka_ns = bridge.add_pod(&format!("{}/24", ip(2))).expect("the broker's pod");
    let checkout_ns = bridge.add_pod(&format!("{}/24", ip(3))).expect("checkout's pod");
    let billing_ns = bridge.add_pod(&format!("{}/24", ip(4))).expect("billing's pod");
    let (checkout_ip, billing_ip) = (ip(3), ip(4));

    // The cluster as the API shows it.
    let api = FakeApiServer::start().await.expect("the stand-in API server");
    for namespace in ["shop", "infra"] {
        api.apply(&Namespace { metadata: mk_namespace(namespace), ..Default::default() });
    }
    deploy(&api, "checkout", &checkout_ip);
    deploy(&api, "billing", &billing_ip);
    api.apply(&StatefulSet { metadata: mk_statefulset("infra", "kafka"), ..Default::default() });
    api.apply::<Pod>(
        &mk_pod("infra", "kafka-0", &[&ip(2)])
            .owned_by("StatefulSet", "kafka")
            .labelled("app", "kafka"),
    );

    // The broker, its authorizer log rolling over every few KiB.
    let mut options = BrokerOptions::new(version, &ip(2), &["checkout", "billing"]);
    options.netns = Some(kafka_ns.clone());
    options.authorizer_log_max_kib = 12;
    let mut broker = tokio::task::block_in_place(|| Broker::start(options))
        .unwrap_or_else(|e| panic!("starting Kafka {version}: {e:#}"));
    eprintln!("kafka {version}: pods, API and broker ready after {:.1?}", started.elapsed());

    // The mapper follows the log file from its start (the broker started first).
    let log_flag = format!("{}=infra/kafka", broker.authorizer_log().display());
    let (mapper_process, mapper) = start_mapper_with(
        dir.path(),
        &write_kubeconfig(dir.path(), &api.url()),
        &["--kafka-log-file", &log_flag, "--kafka-read-from-start"],
    )
    .await;
    std::fs::write(dir.path().join("mapper.pid"), mapper_process.0.id().to_string())
        .expect("noting the mapper's pid for the watchdog");

    // ACLs, as the super user: checkout may create, describe and write orders; billing may read
    // and describe orders and read in group billing; nothing else.
    tokio::task::block_in_place(|| {
        broker.acls(&[
            "--add",
            "--allow-principal",
            "User:checkout",
            "--operation",
            "Create",
            "--operation",
            "Describe",
            "--operation",
            "DescribeConfigs",
            "--operation",
            "Write",
            "--topic",
            "orders",
        ])?;
        broker.acls(&[
            "--add",
            "--allow-principal",
            "User:billing",
            "--operation",
            "Read",
            "--operation",
            "Describe",
            "--topic",
            "orders",
            "--group",
            "billing",
        ])
    })
    .unwrap_or_else(|e| panic!("{e:#}"));

    // What the clients do.
    client(
        &broker,
        &checkout_ns,
        "checkout",
        Tool::Topics,
        &["--create", "--topic", "orders", "--partitions", "1", "--replication-factor", "1"],
        "",
        |o| o.status.success() && stdout(o).contains("Created topic orders"),
    );
    client(
        &broker,
        &checkout_ns,
        "checkout",
        Tool::Topics,
        &["--describe", "--topic", "orders"],
        "",
        |o| o.status.success() && stdout(o).contains("orders"),
    );
    client(
        &broker,
        &checkout_ns,
        "checkout",
        Tool::ConsoleProducer,
        &["--topic", "orders"],
        "order-1\norder-2\norder-3\n",
        |o| o.status.success() && !stderr(o).contains("ERROR"),
    );
    let consumed = consume(&broker, &billing_ns, "3");
    assert_eq!(
        consumed.lines().collect::<Vec<_>>(),
        ["order-1", "order-2", "order-3"],
        "{consumed}"
    );
    refused(&broker, &billing_ns, "forged-1\n");

    let http = reqwest::Client::new();
    let clients = [("checkout", checkout_ip.as_str()), ("billing", billing_ip.as_str())];
    let (before, edges) = until_mapper_matches_log(&http, &mapper, &broker, &clients).await;
    // What a user checks: checkout produced to orders (and created and described it), billing
    // consumed it, and billing's produce was refused and is marked so.
    let checkout = topic(&edges[0], "orders");
    assert_eq!(edges[0]["kafka"].as_array().map(Vec::len), Some(1), "{}", edges[0]);
    for operation in ["create", "describe", "produce"] {
        assert!(strings(&checkout["operations"]).contains(operation), "{checkout}");
    }
    assert!(strings(&checkout["denied"]).is_empty(), "{checkout}");
    let billing = topic(&edges[1], "orders");
    assert_eq!(edges[1]["kafka"].as_array().map(Vec::len), Some(1), "{}", edges[1]);
    assert!(strings(&billing["operations"]).contains("consume"), "{billing}");
    assert_eq!(strings(&billing["denied"]), BTreeSet::from(["produce"]), "{billing}");
    assert!(strings(&billing["operations"]).contains("produce"), "denied ⊆ operations: {billing}");
    let listed = run_ok(Command::new(binary("intentmap")).args(["--mapper-url", &mapper, "list"]));
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    for name in ["checkout", "billing"] {
        // The client's header line and the indented lines under it.
        let header = format!("{name} in namespace shop calls:");
        let block: String = listed
            .lines()
            .skip_while(|l| *l != header)
            .enumerate()
            .take_while(|(n, l)| *n == 0 || l.starts_with(' '))
            .map(|(_, l)| format!("{l}\n"))
            .collect();
        assert!(!block.is_empty(), "no block for {name} in:\n{listed}");
        assert!(block.contains("kafka in namespace infra"), "{block}");
        assert!(block.contains("Kafka topic: orders, operations: ["), "{block}");
        assert_eq!(block.contains("denied: [produce]"), name == "billing", "{block}");
    }
    eprintln!(
        "kafka {version}: {} authorizer lines read, edges match, after {:.1?}",
        before.lines,
        started.elapsed()
    );

    // The broker restarts; the clients go on; the log rolls over.
    tokio::task::block_in_place(|| broker.restart()).unwrap_or_else(|e| panic!("{e:#}"));
    client(
        &broker,
        &checkout_ns,
        "checkout",
        Tool::ConsoleProducer,
        &["--topic", "orders"],
        "order-4\norder-5\n",
        |o| o.status.success() && !stderr(o).contains("ERROR"),
    );
    let consumed = consume(&broker, &billing_ns, "2");
    assert_eq!(consumed.lines().collect::<Vec<_>>(), ["order-4", "order-5"], "{consumed}");
    refused(&broker, &billing_ns, "forged-2\n");
    let (after, edges_after) = until_mapper_matches_log(&http, &mapper, &broker, &clients).await;
    let metrics = kafka_metrics(&mapper).await;
    assert!(
        after.files > 1 && metrics.get("log_file_rotations").copied().unwrap_or(0) >= 1,
        "the authorizer log should have rolled over ({} files, {metrics:?}); lower authorizer_log_max_kib",
        after.files
    );
    for (before_edge, after_edge) in edges.iter().zip(&edges_after) {
        assert!(
            after_edge["connections"].as_u64() > before_edge["connections"].as_u64(),
            "new accesses after the restart show: {before_edge} then {after_edge}"
        );
    }
    eprintln!(
        "kafka {version}: {} authorizer lines in {} files read after a restart and {} rotations, in {:.1?}",
        after.lines,
        after.files,
        metrics.get("log_file_rotations").copied().unwrap_or(0),
        started.elapsed()
    );
    drop(mapper_process);
    drop(broker);
    drop(bridge);
}
