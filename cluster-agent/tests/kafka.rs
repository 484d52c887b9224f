//! The Kafka watcher in the real mapper (`cluster_agent::mapper::serve`): broker authorizer
//! logs in Kafka's own formats, read through the stand-in API server's pod log endpoint with
//! the real `kube` client (streams cut between lines and in the middle of one, then resumed),
//! and from files (partial writes, rotation, truncation). Edges are read back from the
//! mapper's local API as the CLI reads them.

use std::io::Write as _;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use clap::Parser;
use cluster_agent::mapper::{serve, MapperArgs};
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Container, Pod};
use mapper_core::fixtures::*;
use model::{Edge, KafkaTopic, Target, WorkloadRef};
use testkit::kube_api::FakeApiServer;
use testkit::process::TempDir;
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(20);

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: MapperArgs,
}

/// A mapper serving its local API on a free port, watching `api`.
struct RunningMapper {
    url: String,
    task: JoinHandle<()>,
    http: reqwest::Client,
    _dir: TempDir,
}

impl Drop for RunningMapper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RunningMapper {
    async fn start(api: &FakeApiServer, flags: &[&str]) -> Self {
        let dir = TempDir::new("kafka-test");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let outbox = dir.path().join("outbox");
        let mut argv = vec![
            "mapper",
            "--istio-scrape-interval-seconds",
            "0",
            "--outbox-dir",
            outbox.to_str().unwrap(),
        ];
        argv.extend_from_slice(flags);
        let args = Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("mapper flags: {e}")).args;
        let client = api.client();
        let task =
            tokio::spawn(
                async move { serve(args, client, listener).await.expect("the mapper runs") },
            );
        let mapper = RunningMapper { url, task, http: reqwest::Client::new(), _dir: dir };
        mapper
            .until("the mapper is ready", || async {
                mapper.get("/readyz").await.filter(|b| b == "ready")
            })
            .await;
        mapper
    }

    async fn get(&self, path: &str) -> Option<String> {
        let response = self.http.get(format!("{}{path}", self.url)).send().await.ok()?;
        response.status().is_success().then_some(())?;
        response.text().await.ok()
    }

    async fn edges(&self) -> Vec<Edge> {
        serde_json::from_str(&self.get("/v1/edges").await.expect("GET /v1/edges"))
            .expect("edges as JSON")
    }

    async fn metric(&self, name: &str) -> u64 {
        let text = self.get("/metrics").await.expect("GET /metrics");
        let prefix = format!("intentmap_mapper_{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no metric {name} in\n{text}"))
            .parse()
            .unwrap()
    }

    /// Polls `check` until it gives a value; panics with `what` after the deadline.
    async fn until<T, F: std::future::Future<Output = Option<T>>>(
        &self,
        what: &str,
        mut check: impl FnMut() -> F,
    ) -> T {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            if let Some(value) = check().await {
                return value;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the Kafka edges add up to `accesses` and returns them.
    async fn kafka_edges(&self, accesses: u64) -> Vec<Edge> {
        let deadline = tokio::time::Instant::now() + DEADLINE;
        loop {
            let edges: Vec<Edge> = self
                .edges()
                .await
                .into_iter()
                .filter(|e| matches!(e.target, Target::Kafka(_)))
                .collect();
            let total: u64 = edges.iter().map(|e| e.connections).sum();
            if total == accesses {
                return edges;
            }
            assert!(
                total < accesses,
                "more Kafka accesses than there were lines ({total} > {accesses}): {edges:#?}"
            );
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {accesses} Kafka accesses; have {edges:#?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

// === the cluster ===

fn deploy(api: &FakeApiServer, namespace: &str, name: &str, ip: &str) {
    api.apply(&Deployment { metadata: mk_deployment(namespace, name), ..Default::default() });
    let replicaset = format!("{name}-7c9d5b");
    api.apply(&ReplicaSet {
        metadata: mk_replicaset(namespace, &replicaset, name),
        ..Default::default()
    });
    api.apply(
        &mk_pod(namespace, &format!("{replicaset}-q2x8z"), &[ip])
            .owned_by("ReplicaSet", &replicaset)
            .labelled("app", name),
    );
}

/// A broker pod of the `kafka` StatefulSet with the broker container and a JMX exporter beside it.
fn broker(name: &str, ip: &str) -> Pod {
    let mut pod = mk_pod("kafka", name, &[ip])
        .owned_by("StatefulSet", "kafka")
        .labelled("app.kubernetes.io/name", "kafka");
    let spec = pod.spec.as_mut().unwrap();
    spec.containers = vec![
        Container { name: "kafka".into(), ..Default::default() },
        Container { name: "jmx-exporter".into(), ..Default::default() },
    ];
    pod
}

fn cluster(api: &FakeApiServer) {
    deploy(api, "shop", "orders", "10.244.0.5");
    deploy(api, "shop", "billing", "10.244.0.6");
    api.apply(&StatefulSet { metadata: mk_statefulset("kafka", "kafka"), ..Default::default() });
    api.apply(&broker("kafka-0", "10.244.1.10"));
}

const ORDERS: &str = "10.244.0.5";
const BILLING: &str = "10.244.0.6";

/// An `AclAuthorizer` line (Kafka 2.4 to 3.x), as log4j writes it.
fn acl(decision: &str, operation: &str, host: &str, resource: &str, request: &str) -> String {
    let level = if decision == "Allowed" { "DEBUG" } else { "INFO" };
    format!(
        "[2026-11-24 18:00:00,123] {level} Principal = User:CN=client.shop,O=Acme is {decision} Operation = {operation} from host = {host} on resource = {resource} for request = {request} with resourceRefCount = 1 (kafka.authorizer.logger)"
    )
}

/// A KRaft `StandardAuthorizer` line.
fn kraft(decision: &str, operation: &str, host: &str, topic: &str) -> String {
    let rule = if decision == "Allowed" {
        "DefaultAllow"
    } else {
        "MatchingAcl(acl=StandardAcl[resourceType=TOPIC, resourceName=orders, patternType=LITERAL, principal=User:billing, host=*, operation=DELETE, permissionType=DENY])"
    };
    format!(
        "[2026-11-24 18:00:00,123] INFO Principal = User:billing is {decision} operation = {operation} from host = {host} on resource = Topic:LITERAL:{topic} for request = DeleteTopics with resourceRefCount = 1 based on rule {rule} (kafka.authorizer.logger)"
    )
}

/// A `SimpleAclAuthorizer` line (Kafka 1.x): no pattern type, no request.
fn simple(operation: &str, host: &str, topic: &str) -> String {
    format!("[2026-11-24 18:00:00,123] DEBUG Principal = User:ANONYMOUS is Allowed Operation = {operation} from host = {host} on resource = Topic:{topic} (kafka.authorizer.logger)")
}

fn topic(name: &str, operations: &[&str], denied: &[&str]) -> KafkaTopic {
    KafkaTopic {
        name: name.into(),
        operations: operations.iter().map(|o| (*o).into()).collect(),
        denied: denied.iter().map(|o| (*o).into()).collect(),
    }
}

fn kafka_edge<'e>(edges: &'e [Edge], client: &str) -> &'e Edge {
    edges
        .iter()
        .find(|e| e.client.name == client)
        .unwrap_or_else(|| panic!("no Kafka edge from {client}: {edges:#?}"))
}

#[tokio::test]
async fn broker_logs_through_the_api_become_topic_edges_counted_once_across_disconnections() {
    let api = FakeApiServer::start().await.unwrap();
    cluster(&api);
    // Logged before the mapper starts: not counted (only what brokers log from then on is).
    let before =
        (Utc::now() - TimeDelta::minutes(5)).duration_trunc(TimeDelta::seconds(1)).unwrap();
    api.append_log(
        "kafka",
        "kafka-0",
        before,
        &acl("Allowed", "Read", ORDERS, "Topic:LITERAL:yesterday", "Fetch"),
    );

    let mapper =
        RunningMapper::start(&api, &["--kafka-brokers", "kafka/app.kubernetes.io/name=kafka"])
            .await;
    mapper
        .until("the broker's log is followed", || async {
            (api.log_streams("kafka", "kafka-0") == 1).then_some(())
        })
        .await;

    // Every line of this part within one second, two of them with the very same stamp, so that
    // a reconnection replays them all.
    let second =
        (Utc::now() - TimeDelta::minutes(1)).duration_trunc(TimeDelta::seconds(1)).unwrap();
    let at = |millis: i64| second + TimeDelta::milliseconds(millis);
    let long_topic = "t".repeat(249);
    let lines: Vec<(DateTime<Utc>, String)> = vec![
        (at(100), acl("Allowed", "Write", ORDERS, "Topic:LITERAL:orders", "Produce")),
        (at(100), acl("Allowed", "Describe", ORDERS, "Topic:LITERAL:orders", "Metadata")),
        (at(110), acl("Allowed", "IdempotentWrite", ORDERS, "Cluster:LITERAL:kafka-cluster", "InitProducerId")),
        (at(120), acl("Denied", "Create", ORDERS, "Topic:LITERAL:orders-dlq", "CreateTopics")),
        (at(130), simple("Read", BILLING, "orders")),
        (at(140), kraft("Denied", "DELETE", BILLING, "orders")),
        (at(150), acl("Allowed", "Alter", BILLING, "Topic:LITERAL:audit.log_v2-eu", "CreatePartitions")),
        (at(160), acl("Allowed", "AlterConfigs", BILLING, "Topic:LITERAL:audit.log_v2-eu", "IncrementalAlterConfigs")),
        (at(170), acl("Allowed", "DescribeConfigs", BILLING, "Topic:LITERAL:audit.log_v2-eu", "DescribeConfigs")),
        (at(180), acl("Allowed", "ClusterAction", BILLING, "Topic:LITERAL:audit.log_v2-eu", "WriteTxnMarkers")),
        (at(190), acl("Allowed", "IdempotentWrite", BILLING, "Topic:LITERAL:audit.log_v2-eu", "Produce")),
        (at(200), acl("Allowed", "All", BILLING, &format!("Topic:LITERAL:{long_topic}"), "Produce")),
        // Skipped, and counted: not authorizer lines, broken ones, groups, patterns, operations
        // the CRD cannot name, clients that are not pods.
        (
            at(210),
            "[2026-11-24 18:00:00,200] INFO [GroupCoordinator 0]: Preparing to rebalance group billing (kafka.coordinator.group.GroupCoordinator)".into(),
        ),
        (at(220), "\u{1b}[31mthis is not a log line at all".into()),
        (at(230), "[2026-11-24 18:00:00,300] INFO Principal = User:CN=client is Allowed Operation = Read from host (kafka.authorizer.logger)".into()),
        (at(240), acl("Allowed", "Read", BILLING, "Group:LITERAL:billing consumers", "OffsetFetch")),
        (at(250), acl("Allowed", "Write", BILLING, "Topic:PREFIXED:orders-", "Produce")),
        (at(260), acl("Allowed", "CreateTokens", BILLING, "Topic:LITERAL:orders", "CreateDelegationToken")),
        (at(270), acl("Allowed", "Read", "203.0.113.50", "Topic:LITERAL:orders", "Fetch")),
    ];
    for (at, line) in &lines {
        api.append_log("kafka", "kafka-0", *at, line);
    }
    mapper.kafka_edges(11).await;

    // A disconnection in the middle of a line: the half line is not read; the stream resumes
    // from the start of that second, and of what it replays only that line is new.
    api.append_log_and_cut(
        "kafka",
        "kafka-0",
        at(500),
        &acl("Allowed", "Read", ORDERS, "Topic:LITERAL:orders", "Fetch"),
        70,
    );
    mapper.kafka_edges(12).await;
    mapper
        .until("the stream is resumed", || async {
            (api.log_streams("kafka", "kafka-0") == 1).then_some(())
        })
        .await;
    api.append_log(
        "kafka",
        "kafka-0",
        at(600),
        &acl("Allowed", "Write", BILLING, "Topic:LITERAL:orders-dlq", "Produce"),
    );
    mapper.kafka_edges(13).await;

    // A disconnection between two lines.
    api.cut_log_streams("kafka", "kafka-0");
    mapper
        .until("the broker's log is followed again", || async {
            (mapper.metric("kafka_log_reconnects_total").await >= 2).then_some(())
        })
        .await;
    mapper
        .until("the stream is resumed", || async {
            (api.log_streams("kafka", "kafka-0") == 1).then_some(())
        })
        .await;
    let later = second + TimeDelta::seconds(2);
    api.append_log(
        "kafka",
        "kafka-0",
        later,
        &acl("Allowed", "Read", ORDERS, "Topic:LITERAL:payments", "Fetch"),
    );

    // A broker that starts later is read from its start; its logs were written before it was seen.
    api.append_log(
        "kafka",
        "kafka-1",
        later,
        &acl("Allowed", "Read", BILLING, "Topic:LITERAL:invoices", "Fetch"),
    );
    api.apply(&broker("kafka-1", "10.244.1.11"));
    let edges = mapper.kafka_edges(15).await;

    let broker_workload = Target::Kafka(WorkloadRef::new("kafka", "kafka", Some("StatefulSet")));
    let orders = kafka_edge(&edges, "orders");
    assert_eq!(orders.client, WorkloadRef::new("shop", "orders", Some("Deployment")));
    assert_eq!(orders.target, broker_workload);
    assert_eq!(
        orders.kafka,
        vec![
            topic("orders", &["consume", "describe", "produce"], &[]),
            topic("orders-dlq", &["create"], &["create"]),
            topic("payments", &["consume"], &[])
        ]
    );
    assert_eq!((orders.connections, orders.first_seen, orders.last_seen), (5, at(100), later));
    assert!(orders.ports.is_empty() && orders.http.is_empty());

    let billing = kafka_edge(&edges, "billing");
    assert_eq!(billing.target, broker_workload);
    assert_eq!(
        billing.kafka,
        vec![
            topic(
                "audit.log_v2-eu",
                &["AlterConfigs", "ClusterAction", "DescribeConfigs", "IdempotentWrite", "alter"],
                &[]
            ),
            topic("invoices", &["consume"], &[]),
            topic("orders", &["consume", "delete"], &["delete"]),
            topic("orders-dlq", &["produce"], &[]),
            topic(&long_topic, &["all"], &[]),
        ]
    );
    assert_eq!((billing.connections, billing.first_seen, billing.last_seen), (10, at(130), later));
    assert_eq!(edges.len(), 2, "{edges:#?}");

    let counted = |name: &'static str| {
        let mapper = &mapper;
        async move { mapper.metric(name).await }
    };
    assert_eq!(counted("kafka_accesses_total").await, 15);
    assert_eq!(counted("kafka_other_lines_total").await, 2);
    assert_eq!(counted("kafka_malformed_lines_total").await, 1);
    assert_eq!(counted("kafka_non_topic_lines_total").await, 2, "the Cluster and the Group");
    assert_eq!(counted("kafka_topic_patterns_total").await, 1);
    assert_eq!(counted("kafka_unknown_operations_total").await, 1);
    assert_eq!(counted("kafka_unresolved_hosts_total").await, 1);
    assert_eq!(counted("kafka_log_cut_lines_total").await, 1);
    assert!(
        counted("kafka_log_replayed_lines_total").await >= 19,
        "the first reconnection replayed the whole second"
    );

    // A broker pod deleted is no longer followed.
    assert_eq!(counted("kafka_log_streams").await, 2);
    api.delete(&broker("kafka-0", "10.244.1.10"));
    mapper
        .until("the deleted broker is dropped", || async {
            (mapper.metric("kafka_log_streams").await == 1).then_some(())
        })
        .await;
    mapper
        .until("its stream is closed", || async {
            (api.log_streams("kafka", "kafka-0") == 0).then_some(())
        })
        .await;
}

// === files ===

fn append(path: &Path, text: &str) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(path).unwrap();
    file.write_all(text.as_bytes()).unwrap();
    file.flush().unwrap();
}

fn lines(lines: &[String]) -> String {
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn vm_edges(edges: &[Edge]) -> Vec<(String, u64, Vec<KafkaTopic>)> {
    let vm = Target::Kafka(WorkloadRef::new("data", "kafka-vm", None));
    edges
        .iter()
        .filter(|e| e.target == vm)
        .map(|e| (e.client.name.clone(), e.connections, e.kafka.clone()))
        .collect()
}

#[tokio::test]
async fn a_log_file_is_followed_across_partial_writes_rotation_and_truncation() {
    let api = FakeApiServer::start().await.unwrap();
    cluster(&api);
    let dir = TempDir::new("kafka-test");
    let log = dir.path().join("server.log");
    // There before the mapper: not counted; the file even ends in the middle of a line.
    append(&log, &lines(&[acl("Allowed", "Read", ORDERS, "Topic:LITERAL:before", "Fetch")]));
    append(&log, &acl("Allowed", "Read", ORDERS, "Topic:LITERAL:cut-at-start", "Fetch")[..60]);

    let flag = format!("{}=data/kafka-vm", log.display());
    let mapper = RunningMapper::start(&api, &["--kafka-log-file", &flag]).await;
    mapper
        .until("the file is open", || async {
            (mapper.metric("kafka_log_streams").await == 1).then_some(())
        })
        .await;
    let finish = &acl("Allowed", "Read", ORDERS, "Topic:LITERAL:cut-at-start", "Fetch")[60..];
    append(&log, &format!("{finish}\n"));

    append(&log, &lines(&[acl("Allowed", "Read", ORDERS, "Topic:LITERAL:orders", "Fetch")]));
    // A line written in two parts is read once, whole.
    let split = acl("Allowed", "Write", BILLING, "Topic:LITERAL:orders", "Produce");
    append(&log, &split[..80]);
    tokio::time::sleep(Duration::from_millis(600)).await;
    append(&log, &format!("{}\n", &split[80..]));
    mapper.kafka_edges(2).await;

    // Rotation: the last lines of the old file, then the new file from its start.
    append(
        &log,
        &lines(&[acl("Denied", "Describe", BILLING, "Topic:LITERAL:payments", "Metadata")]),
    );
    std::fs::rename(&log, dir.path().join("server.log.1")).unwrap();
    append(
        &log,
        &lines(&[
            acl(
                "Allowed",
                "Describe",
                ORDERS,
                "Topic:LITERAL:orders-with-a-rather-long-name-for-the-file-to-be-long",
                "Metadata",
            ),
            acl(
                "Allowed",
                "Create",
                ORDERS,
                "Topic:LITERAL:orders-with-a-rather-long-name-for-the-file-to-be-long",
                "CreateTopics",
            ),
        ]),
    );
    mapper.kafka_edges(5).await;
    assert!(mapper.metric("kafka_log_file_rotations_total").await >= 1);

    // Truncation in place (copytruncate), then a shorter line.
    std::fs::OpenOptions::new().write(true).truncate(true).open(&log).unwrap();
    append(&log, &lines(&[acl("Allowed", "Read", BILLING, "Topic:LITERAL:x", "Fetch")]));
    let edges = mapper.kafka_edges(6).await;
    assert_eq!(mapper.metric("kafka_log_file_truncations_total").await, 1);

    let long = "orders-with-a-rather-long-name-for-the-file-to-be-long";
    assert_eq!(
        vm_edges(&edges),
        vec![
            (
                "billing".to_owned(),
                3,
                vec![
                    topic("orders", &["produce"], &[]),
                    topic("payments", &["describe"], &["describe"]),
                    topic("x", &["consume"], &[])
                ]
            ),
            (
                "orders".to_owned(),
                3,
                vec![topic("orders", &["consume"], &[]), topic(long, &["create", "describe"], &[])]
            ),
        ]
    );
    assert_eq!(mapper.metric("kafka_malformed_lines_total").await, 0, "no half line was ever read");
}

#[tokio::test]
async fn read_from_start_counts_what_the_log_already_holds() {
    let api = FakeApiServer::start().await.unwrap();
    cluster(&api);
    let dir = TempDir::new("kafka-test");
    let log = dir.path().join("server.log");
    append(
        &log,
        &lines(&[
            acl("Allowed", "Read", ORDERS, "Topic:LITERAL:before", "Fetch"),
            acl("Allowed", "Write", BILLING, "Topic:LITERAL:before", "Produce"),
        ]),
    );
    let earlier =
        (Utc::now() - TimeDelta::minutes(10)).duration_trunc(TimeDelta::seconds(1)).unwrap();
    api.append_log(
        "kafka",
        "kafka-0",
        earlier,
        &acl("Denied", "Read", ORDERS, "Topic:LITERAL:old", "Fetch"),
    );

    let flag = format!("{}=data/kafka-vm", log.display());
    let mapper = RunningMapper::start(
        &api,
        &["--kafka-read-from-start", "--kafka-log-file", &flag, "--kafka-brokers", "kafka/kafka-0"],
    )
    .await;
    let edges = mapper.kafka_edges(3).await;
    assert_eq!(vm_edges(&edges).len(), 2);
    let from_pod = edges
        .iter()
        .find(|e| {
            e.target == Target::Kafka(WorkloadRef::new("kafka", "kafka", Some("StatefulSet")))
        })
        .expect("the pod's old line");
    assert_eq!(from_pod.kafka, vec![topic("old", &["consume"], &["consume"])]);
    assert_eq!(from_pod.first_seen, earlier, "stamped with the time the API gave the line");
}
