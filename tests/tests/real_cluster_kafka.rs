//! A real Apache Kafka broker (4.1.1, KRaft, `StandardAuthorizer`, SASL/PLAIN, ACLs) as a pod of
//! the real cluster, from an image built here (`scripts/kafka-image.sh`: this machine's Java
//! runtime and Kafka's jars from Maven Central), its authorizer log at DEBUG on stdout; its
//! clients as pods running Kafka's own console tools, each with its own principal. The real
//! `cluster-agent mapper` follows the broker's log through the API server and the real kubelet
//! (`--kafka-brokers infra/app=kafka`), as in production, and names each client by its
//! Deployment: checkout produces to `orders`, billing consumes it and is refused when it tries
//! to produce. Its own test binary (and so its own cluster).

use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use serde_json::Value;
use testkit::cluster::Cluster;
use tests::kube::{ready_pods, workspace};
use tests::{binary, run_ok, start_mapper_with};

const VERSION: &str = testkit::kafka::KAFKA_4;
const BROKER: &str = "kafka-0.kafka.infra.svc.cluster.local:9092";
const JAVA: &str = "java -Xmx160m -Xms32m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile=/config/tools-log4j2.properties -cp '/opt/kafka/libs/*'";

fn password(user: &str) -> String {
    testkit::kafka::password(user)
}

/// The broker's configuration, the logging set-ups and each client's properties.
fn config(cluster_id: &str) -> String {
    let plain = "org.apache.kafka.common.security.plain.PlainLoginModule required";
    let admin = format!("username=\"admin\" password=\"{}\"", password("admin"));
    let users =
        ["admin", "checkout", "billing"].map(|u| format!("user_{u}=\"{}\"", password(u))).join(" ");
    let server = format!(
        "process.roles=broker,controller\n\
         node.id=1\n\
         controller.quorum.voters=1@127.0.0.1:9093\n\
         listeners=CLIENT://:9092,CONTROLLER://127.0.0.1:9093\n\
         advertised.listeners=CLIENT://{BROKER}\n\
         controller.listener.names=CONTROLLER\n\
         inter.broker.listener.name=CLIENT\n\
         listener.security.protocol.map=CLIENT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT\n\
         sasl.enabled.mechanisms=PLAIN\n\
         sasl.mechanism.inter.broker.protocol=PLAIN\n\
         sasl.mechanism.controller.protocol=PLAIN\n\
         listener.name.client.plain.sasl.jaas.config={plain} {admin} {users};\n\
         listener.name.controller.plain.sasl.jaas.config={plain} {admin} {users};\n\
         authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer\n\
         super.users=User:admin\n\
         allow.everyone.if.no.acl.found=false\n\
         auto.create.topics.enable=false\n\
         log.dirs=/data\n\
         num.partitions=1\n\
         offsets.topic.replication.factor=1\n\
         offsets.topic.num.partitions=1\n\
         transaction.state.log.replication.factor=1\n\
         transaction.state.log.min.isr=1\n\
         group.initial.rebalance.delay.ms=0\n"
    );
    let layout = "[%d] %p %m (%c)%n";
    let broker_log = format!(
        "status = warn\n\
         appender.stdout.type = Console\n\
         appender.stdout.name = STDOUT\n\
         appender.stdout.layout.type = PatternLayout\n\
         appender.stdout.layout.pattern = {layout}\n\
         rootLogger.level = INFO\n\
         rootLogger.appenderRef.stdout.ref = STDOUT\n\
         logger.authorizer.name = kafka.authorizer.logger\n\
         logger.authorizer.level = DEBUG\n"
    );
    let tools_log = "status = warn\n\
         appender.stderr.type = Console\n\
         appender.stderr.name = STDERR\n\
         appender.stderr.target = SYSTEM_ERR\n\
         appender.stderr.layout.type = PatternLayout\n\
         appender.stderr.layout.pattern = %m%n\n\
         rootLogger.level = WARN\n\
         rootLogger.appenderRef.stderr.ref = STDERR\n";
    let indent = |text: &str| text.lines().map(|l| format!("    {l}\n")).collect::<String>();
    let mut data = format!(
        "  cluster-id: \"{cluster_id}\"\n  server.properties: |\n{}  log4j2.properties: |\n{}  tools-log4j2.properties: |\n{}",
        indent(&server),
        indent(&broker_log),
        indent(tools_log)
    );
    for user in ["admin", "checkout", "billing"] {
        let client = format!(
            "security.protocol=SASL_PLAINTEXT\nsasl.mechanism=PLAIN\n\
             sasl.jaas.config={plain} username=\"{user}\" password=\"{}\";\n",
            password(user)
        );
        data += &format!("  {user}.properties: |\n{}", indent(&client));
    }
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: infra\n---\n\
         apiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kafka\n  namespace: infra\ndata:\n{data}---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: kafka\n  namespace: shop\ndata:\n{data}"
    )
}

fn broker(image: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Service
metadata:
  name: kafka
  namespace: infra
spec:
  clusterIP: None
  selector: {{app: kafka}}
  ports: [{{port: 9092}}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: kafka
  namespace: infra
spec:
  serviceName: kafka
  replicas: 1
  selector:
    matchLabels: {{app: kafka}}
  template:
    metadata:
      labels: {{app: kafka}}
    spec:
      terminationGracePeriodSeconds: 5
      volumes:
      - {{name: config, configMap: {{name: kafka}}}}
      - {{name: data, emptyDir: {{}}}}
      initContainers:
      - name: format
        image: {image}
        imagePullPolicy: Never
        command: [/bin/sh, -c, "{JAVA} kafka.tools.StorageTool format -t $(cat /config/cluster-id) -c /config/server.properties"]
        volumeMounts: [{{name: config, mountPath: /config}}, {{name: data, mountPath: /data}}]
      containers:
      - name: broker
        image: {image}
        imagePullPolicy: Never
        command: [/bin/sh, -c, "exec java -Xmx384m -Xms128m -XX:+UseSerialGC -Dlog4j2.configurationFile=/config/log4j2.properties -cp '/opt/kafka/libs/*' kafka.Kafka /config/server.properties"]
        ports: [{{containerPort: 9092}}]
        readinessProbe: {{tcpSocket: {{port: 9092}}, periodSeconds: 2}}
        volumeMounts: [{{name: config, mountPath: /config}}, {{name: data, mountPath: /data}}]
"#
    )
}

/// A client Deployment in `shop` running `script` (a shell loop of console tools) as `user`.
fn client(image: &str, user: &str, script: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {user}
  namespace: shop
spec:
  replicas: 1
  selector:
    matchLabels: {{app: {user}}}
  template:
    metadata:
      labels: {{app: {user}}}
    spec:
      terminationGracePeriodSeconds: 1
      volumes:
      - {{name: config, configMap: {{name: kafka}}}}
      containers:
      - name: main
        image: {image}
        imagePullPolicy: Never
        command: [/bin/sh, -c, "{script}"]
        volumeMounts: [{{name: config, mountPath: /config}}]
"#
    )
}

/// `kafka-acls` (or another tool) as admin inside the broker's pod.
fn as_admin(cluster: &Cluster, class_and_args: &str) -> String {
    let command = format!(
        "{JAVA} {class_and_args} --bootstrap-server {BROKER} --command-config /config/admin.properties"
    );
    cluster
        .kubectl(&[
            "-n", "infra", "exec", "kafka-0", "-c", "broker", "--", "/bin/sh", "-c", &command,
        ])
        .unwrap_or_else(|e| panic!("{class_and_args}: {e:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[cfg_attr(
    unprivileged,
    ignore = "needs root: a real Kubernetes cluster (network links, mounts, cgroups, iptables)"
)]
async fn a_kafka_broker_pods_authorizer_log_names_its_clients_through_the_api_server() {
    testkit::need::root("a real Kubernetes cluster");
    let archive =
        run_ok(Command::new("bash").arg(workspace().join("scripts/kafka-image.sh")).arg(VERSION));
    let archive = String::from_utf8_lossy(&archive.stdout).trim().to_owned();
    let cluster = testkit::cluster::shared()
        .await
        .unwrap_or_else(|e| panic!("the test cluster did not start: {e:#}"));
    cluster.import_image(std::path::Path::new(&archive)).unwrap();
    let image = format!("intentmap.test/kafka:{VERSION}");

    let cluster_id =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(uuid::Uuid::new_v4().as_bytes());
    cluster.apply(&config(&cluster_id)).unwrap();
    cluster.apply(&broker(&image)).unwrap();
    ready_pods(cluster, "infra", "app=kafka", 1, Duration::from_secs(240));

    // The mapper follows the broker's log from now on.
    let dir = testkit::process::TempDir::new("e2e-kafka-pod");
    let (_mapper, mapper) = start_mapper_with(
        dir.path(),
        cluster.kubeconfig(),
        &["--kafka-brokers", "infra/app=kafka"],
    )
    .await;

    // The topic and the ACLs, as the broker's admin.
    tokio::task::block_in_place(|| {
        as_admin(
            cluster,
            "org.apache.kafka.tools.TopicCommand --create --topic orders --partitions 1 --replication-factor 1",
        );
        as_admin(
            cluster,
            "org.apache.kafka.tools.AclCommand --add --allow-principal User:checkout --operation Write --operation Describe --topic orders",
        );
        as_admin(
            cluster,
            "org.apache.kafka.tools.AclCommand --add --allow-principal User:billing --operation Read --operation Describe --topic orders --group billing",
        );
    });

    // checkout produces; billing consumes, then tries to produce and is refused.
    let produce = |user: &str| {
        format!(
            "echo order-$(date +%s) | {JAVA} org.apache.kafka.tools.ConsoleProducer --bootstrap-server {BROKER} --topic orders --producer.config /config/{user}.properties --producer-property enable.idempotence=false"
        )
    };
    let consume = format!(
        "{JAVA} org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server {BROKER} --topic orders --group billing --from-beginning --max-messages 1 --timeout-ms 20000 --consumer.config /config/billing.properties"
    );
    cluster
        .apply(&client(
            &image,
            "checkout",
            &format!("while true; do {}; sleep 5; done", produce("checkout")),
        ))
        .unwrap();
    cluster
        .apply(&client(
            &image,
            "billing",
            &format!("while true; do {consume}; {}; sleep 5; done", produce("billing")),
        ))
        .unwrap();

    // What the mapper makes of the broker's log: each client by its Deployment, with the
    // topic, what it did and what it was refused.
    let rt = tokio::runtime::Handle::current();
    let edges = tokio::task::block_in_place(|| {
        demo::on_cluster::wait_for(
            "both clients' Kafka calls in the mapper",
            Duration::from_secs(300),
            || {
                let edges = rt.block_on(mapper_edges(&mapper))?;
                let of = |client: &str| edges.iter().find(|e| e["client"]["name"] == client);
                let produced = of("checkout")
                    .is_some_and(|e| ops(e, "operations").contains(&"produce".into()));
                let refused = of("billing").is_some_and(|e| {
                    ops(e, "operations").contains(&"consume".into())
                        && ops(e, "denied").contains(&"produce".into())
                });
                if produced && refused {
                    Ok(edges)
                } else {
                    Err(format!("{edges:#?}"))
                }
            },
        )
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    // (The admin's tools ran inside the broker's pod: their calls are the broker's own.)
    let clients: Vec<&Value> =
        edges.iter().filter(|e| e["client"]["namespace"] == "shop").collect();
    assert_eq!(clients.len(), 2, "checkout and billing: {edges:#?}");
    for edge in &clients {
        assert_eq!(edge["target"]["kafka"]["namespace"], "infra", "{edge}");
        assert_eq!(edge["target"]["kafka"]["name"], "kafka", "{edge}");
        assert_eq!(edge["client"]["kind"], "Deployment", "{edge}");
    }
    let checkout = edges.iter().find(|e| e["client"]["name"] == "checkout").unwrap();
    assert!(ops(checkout, "denied").is_empty(), "checkout is refused nothing: {checkout}");
    assert!(!ops(checkout, "operations").contains(&"consume".to_owned()), "{checkout}");
    let listed = run_ok(Command::new(binary("intentmap")).args([
        "--mapper-url",
        &mapper,
        "list",
        "-n",
        "shop",
    ]));
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(
        listed.contains("checkout in namespace shop calls:\n  - kafka in namespace infra\n    - Kafka topic: orders"),
        "{listed}"
    );
    cluster.kubectl(&["delete", "namespace", "shop", "infra", "--wait=false"]).unwrap();
}

/// The mapper's edges whose target is a Kafka broker (`/v1/edges`).
async fn mapper_edges(mapper: &str) -> Result<Vec<Value>, String> {
    let edges: Value = reqwest::get(format!("{mapper}/v1/edges"))
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let edges = edges.as_array().or_else(|| edges["edges"].as_array()).cloned().unwrap_or_default();
    Ok(edges.into_iter().filter(|e| e["target"].get("kafka").is_some()).collect())
}

/// A Kafka edge's topic `orders`: its `operations` or `denied` list.
fn ops(edge: &Value, which: &str) -> Vec<String> {
    edge["kafka"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["name"] == "orders")
        .flat_map(|t| t[which].as_array().cloned().unwrap_or_default())
        .filter_map(|o| o.as_str().map(str::to_owned))
        .collect()
}
