//! `intentmap export` against Otterize's own expected output: the exact
//! `network-mapper export --format json` its CI diffs (the simple and Kafka tutorials), the
//! intents operator's v1alpha3 ⇄ v2beta1 conversion cases, a user's real export, and the
//! ClientIntents examples of Otterize's docs.
//!
//! The cases are read at run time from `../shared/reference/otterize/intents/` (never copied
//! here). The traffic goes through the real mapper core (`mapper_core::Mapper`, the index fed as
//! the watchers would) and out through the same functions the CLI uses
//! (`model::client_intents`, `intentmap::export::render`).

use intentmap::export::{self, Format};
use mapper_core::fixtures::*;
use mapper_core::{EdgeFilter, KafkaBroker, Mapper};
use model::observation::{ObservationBatch, TcpConnection};
use model::{client_intents, Edge, IntentsVersion, ServiceRef, Target, WorkloadRef};
use serde_json::{json, Value};

fn fixture(relative: &str) -> String {
    let path = testkit::need::shared_file(&format!("reference/otterize/intents/{relative}"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn case(id: &str) -> Value {
    let all: Value = serde_json::from_str(&fixture("otterize-conversion-and-export-cases.json"))
        .expect("the cases are JSON");
    all["cases"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap().clone()
}

fn tcp(src: &str, dst: &str, port: u16) -> TcpConnection {
    TcpConnection::between(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        port,
        ts("2026-01-01T00:01:00Z"),
    )
}

/// When the mapper is given the observations (a minute after they were made).
const NOW: &str = "2026-01-01T00:02:00Z";

fn deployment(mapper: &mut Mapper, namespace: &str, name: &str, address: &str) {
    mapper.index.apply_meta("Deployment", &mk_deployment(namespace, name));
    mapper.index.apply_meta("ReplicaSet", &mk_replicaset(namespace, &format!("{name}-7d9f"), name));
    mapper.index.apply(
        &mk_pod(namespace, &format!("{name}-7d9f-x2x9q"), &[address])
            .owned_by("ReplicaSet", &format!("{name}-7d9f")),
    );
}

fn json_export(edges: &[Edge]) -> Value {
    let text = export::render(&client_intents(edges, IntentsVersion::V2beta1), Format::Json);
    serde_json::from_str(&text).expect("export writes JSON")
}

#[test]
fn the_simple_tutorial_exports_exactly_what_otterizes_ci_expects() {
    let expected: Value =
        serde_json::from_str(&fixture("nm-e2e-simple-tutorial-expected.json")).unwrap();
    let ns = "otterize-tutorial-mapper";
    let mut mapper = Mapper::default();
    deployment(&mut mapper, ns, "client", "10.244.0.5");
    deployment(&mut mapper, ns, "client2", "10.244.0.6");
    deployment(&mut mapper, ns, "server", "10.244.0.7");
    mapper.index.apply(&mk_service(ns, "server", &["10.96.0.7"], &[]));
    mapper.index.apply(&mk_endpoint_slice(
        ns,
        "server",
        "server-1",
        &[("10.244.0.7", Some("server-7d9f-x2x9q"))],
    ));
    let batch = ObservationBatch {
        tcp: vec![tcp("10.244.0.5", "10.96.0.7", 80), tcp("10.244.0.6", "10.96.0.7", 80)],
        ..ObservationBatch::default()
    };
    mapper.observe(&batch, ts(NOW));
    // Issue 18, item 6: `metadata.creationTimestamp: null` and `status` as Otterize writes them;
    // everything else byte for byte apart from key order.
    assert_eq!(json_export(&mapper.snapshot()), expected);
}

/// The Kafka tutorial's cluster: clients `client` (consume, describe) and `client-2`
/// (describe, produce) of topic `mytopic` on the `kafka` StatefulSet, each also connected to the
/// broker over TCP.
fn kafka_tutorial() -> Mapper {
    let ns = "otterize-tutorial-kafka-mapping";
    let mut mapper = Mapper::default();
    deployment(&mut mapper, ns, "client", "10.244.0.5");
    deployment(&mut mapper, ns, "client-2", "10.244.0.6");
    mapper.index.apply_meta("StatefulSet", &mk_statefulset("kafka", "kafka"));
    mapper
        .index
        .apply(&mk_pod("kafka", "kafka-0", &["10.244.0.2"]).owned_by("StatefulSet", "kafka"));
    let batch = ObservationBatch {
        tcp: vec![tcp("10.244.0.5", "10.244.0.2", 9092), tcp("10.244.0.6", "10.244.0.2", 9092)],
        ..ObservationBatch::default()
    };
    mapper.observe(&batch, ts(NOW));
    let line = |host: &str, operation: &str, request: &str| {
        format!("[2026-01-01 00:01:00,000] DEBUG Principal = User:ANONYMOUS is Allowed Operation = {operation} from host = {host} on resource = Topic:LITERAL:mytopic for request = {request} with resourceRefCount = 1 (kafka.authorizer.logger)")
    };
    let lines = [
        line("10.244.0.5", "Describe", "Metadata"),
        line("10.244.0.5", "Read", "Fetch"),
        line("10.244.0.6", "Describe", "Metadata"),
        line("10.244.0.6", "Write", "Produce"),
    ];
    let broker = KafkaBroker::Pod { namespace: "kafka".into(), name: "kafka-0".into() };
    mapper.observe_kafka_log(
        &broker,
        lines.iter().map(|l| (ts("2026-01-01T00:01:00Z"), l.as_str())),
        ts(NOW),
    );
    mapper
}

fn without_workload_kind(mut docs: Value) -> Value {
    for doc in docs.as_array_mut().unwrap() {
        doc["spec"]["workload"].as_object_mut().unwrap().remove("kind");
    }
    docs
}

#[test]
fn the_kafka_tutorial_exports_what_otterizes_ci_expects() {
    // ci-kafka-tutorial: each client has a kafka target (topics, sorted operations) AND a
    // kubernetes target for the broker. CI deletes spec.workload.kind before diffing.
    let expected: Value =
        serde_json::from_str(&fixture("nm-e2e-kafka-tutorial-expected.json")).unwrap();
    assert!(case("ci-kafka-tutorial")["note"]
        .as_str()
        .unwrap()
        .contains("deletes spec.workload.kind"));
    let mapper = kafka_tutorial();
    assert_eq!(
        without_workload_kind(json_export(&mapper.snapshot())),
        without_workload_kind(expected)
    );

    // v1alpha3-kafka-without-topics: the operator's conversion turns a `type: kafka` call
    // without topics into an empty (invalid) target. The mapper records a Kafka edge only
    // with the topic of an authorizer line, so every exported Kafka call has its topics.
    let conversion = case("v1alpha3-kafka-without-topics");
    assert_eq!(conversion["expected_v2beta1_targets"], json!([{}]));
    for doc in client_intents(&mapper.snapshot(), IntentsVersion::V1alpha3) {
        for call in doc["spec"]["calls"].as_array().unwrap() {
            if call["type"] == "kafka" {
                assert!(!call["kafkaTopics"].as_array().unwrap().is_empty(), "{call}");
            }
        }
    }
}

/// Drops every `kind` below the top level of each document (a user's export without kinds).
fn without_kinds(v: &Value, top: bool) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| top || k.as_str() != "kind")
                .map(|(k, v)| (k.clone(), without_kinds(v, false)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| without_kinds(x, false)).collect()),
        other => other.clone(),
    }
}

#[test]
fn a_users_real_v1alpha3_export_comes_out_the_same() {
    // cli-161-real-export: `otterize network-mapper export -n kafka,shifumi`: the API server as
    // `svc:kubernetes.default`, a broker calling its own workload, cross-namespace names as
    // name.namespace. That export has no `kind`s; ours names kinds, compared without them.
    let case = case("cli-161-real-export");
    let mut mapper = Mapper::default();
    mapper.index.apply(&mk_service("default", "kubernetes", &["10.96.0.1"], &[]));
    mapper.index.apply(&mk_endpoint_slice(
        "default",
        "kubernetes",
        "kubernetes",
        &[("172.18.0.2", None)],
    ));
    deployment(&mut mapper, "kafka", "kafka-entity-operator", "10.244.0.3");
    deployment(&mut mapper, "shifumi", "shifumi-client", "10.244.0.4");
    mapper.index.apply_meta("StatefulSet", &mk_statefulset("kafka", "shifumi-kafka"));
    for (pod, address) in [("shifumi-kafka-0", "10.244.0.10"), ("shifumi-kafka-1", "10.244.0.11")] {
        mapper
            .index
            .apply(&mk_pod("kafka", pod, &[address]).owned_by("StatefulSet", "shifumi-kafka"));
    }
    deployment(&mut mapper, "elsewhere", "unrelated", "10.244.0.20");
    let batch = ObservationBatch {
        tcp: vec![
            tcp("10.244.0.3", "10.96.0.1", 443),
            tcp("10.244.0.3", "10.244.0.10", 9092),
            tcp("10.244.0.4", "10.244.0.11", 9092),
            tcp("10.244.0.10", "10.244.0.11", 9091),
            tcp("10.244.0.20", "10.244.0.10", 9092),
        ],
        ..ObservationBatch::default()
    };
    mapper.observe(&batch, ts(NOW));
    let filter =
        EdgeFilter { namespaces: vec!["kafka".into(), "shifumi".into()], ..EdgeFilter::default() };
    let edges = filter.apply(&mapper.snapshot(), &mapper.index);
    let ours: Vec<Value> = client_intents(&edges, IntentsVersion::V1alpha3)
        .iter()
        .map(|d| without_kinds(d, true))
        .collect();
    let yaml = case["yaml"].as_str().unwrap();
    let theirs: Vec<Value> = yaml
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    let sorted = |mut docs: Vec<Value>| {
        docs.sort_by_key(|d| d["metadata"]["name"].as_str().unwrap().to_owned());
        docs
    };
    assert_eq!(sorted(ours), sorted(theirs));
}

fn edge(client: &WorkloadRef, target: Target) -> Edge {
    Edge {
        client: client.clone(),
        target,
        ports: vec![],
        first_seen: ts("2026-01-01T00:01:00Z"),
        last_seen: ts("2026-01-01T00:01:00Z"),
        connections: 1,
        http: vec![],
        kafka: vec![],
        bytes: None,
    }
}

/// What the operator's `ConvertFrom` (v2beta1 → v1alpha3) makes of a v2beta1 target.
fn converted_from(target: &Value) -> Value {
    if let Some(k) = target.get("kubernetes") {
        return k.clone();
    }
    let name = target["service"]["name"].as_str().unwrap();
    if name == "kubernetes.default" {
        json!({ "name": "svc:kubernetes.default" })
    } else {
        json!({ "name": name, "kind": "Service" })
    }
}

#[test]
fn both_versions_name_the_same_targets_as_the_operators_conversion_does() {
    // v1alpha3-roundtrip, v2alpha1-roundtrip, v2beta1-api-server-to-v1alpha3: our v1alpha3
    // document is what the operator's conversion makes of our v2beta1 one, and the targets are
    // those of the round-trip cases (a same-namespace name written bare: the operator reads
    // `test` and `test.test` alike for a client in `test`).
    let v2 = case("v2alpha1-roundtrip")["v2alpha1_spec"].clone();
    let client = WorkloadRef::new("test", "test", None);
    let edges: Vec<Edge> = vec![
        edge(&client, Target::Kubernetes(WorkloadRef::new("test", "test", None))),
        edge(&client, Target::Kubernetes(WorkloadRef::new("test", "test2", Some("Deployment")))),
        edge(
            &client,
            Target::Kubernetes(WorkloadRef::new("other-namespace", "test3", Some("Deployment"))),
        ),
        edge(
            &client,
            Target::Service(ServiceRef { namespace: "default".into(), name: "kubernetes".into() }),
        ),
    ];
    let ours_v2 = &client_intents(&edges, IntentsVersion::V2beta1)[0]["spec"]["targets"];
    let mut expected = v2["targets"].as_array().unwrap().clone();
    expected[0]["kubernetes"]["name"] = json!("test");
    let sorted = |v: &mut Vec<Value>| v.sort_by_key(|t| t.to_string());
    let mut ours_v2_list = ours_v2.as_array().unwrap().clone();
    sorted(&mut ours_v2_list);
    sorted(&mut expected);
    assert_eq!(ours_v2_list, expected);

    let ours_v1 = client_intents(&edges, IntentsVersion::V1alpha3)[0]["spec"]["calls"].clone();
    let converted: Vec<Value> = ours_v2.as_array().unwrap().iter().map(converted_from).collect();
    assert_eq!(ours_v1, Value::Array(converted));
    let api = case("v2beta1-api-server-to-v1alpha3");
    assert!(ours_v1.as_array().unwrap().contains(&api["expected_v1alpha3_calls"][0]));
    let v1 = case("v1alpha3-roundtrip")["v1alpha3_spec"].clone();
    assert!(v1["calls"].as_array().unwrap().contains(&json!({"name": "svc:kubernetes.default"})));

    // v2beta1-empty-http-not-http: no paths, no `http` (and no `type: http` in v1alpha3).
    let empty = case("v2beta1-empty-http-not-http");
    let client = WorkloadRef::new("shop", "web", None);
    let edges = vec![
        edge(
            &client,
            Target::Service(ServiceRef { namespace: "shop".into(), name: "test".into() }),
        ),
        edge(&client, Target::Kubernetes(WorkloadRef::new("shop", "test2", None))),
    ];
    let calls = &client_intents(&edges, IntentsVersion::V1alpha3)[0]["spec"]["calls"];
    assert_eq!(*calls, empty["expected_v1alpha3_calls"]);
    let targets = &client_intents(&edges, IntentsVersion::V2beta1)[0]["spec"]["targets"];
    assert!(!targets.to_string().contains("http"), "{targets}");
}

#[test]
fn dotted_workload_names_are_exported_as_the_operator_reads_them() {
    // Issue 18, item 3 (serviceidresolver: `cool-versioned-application.4.2.0` →
    // `cool-versioned-application_4_2_0`).
    let mut mapper = Mapper::default();
    deployment(&mut mapper, "shop", "web", "10.244.0.5");
    deployment(&mut mapper, "shop", "cool-versioned-application.4.2.0", "10.244.0.6");
    let batch = ObservationBatch {
        tcp: vec![tcp("10.244.0.5", "10.244.0.6", 80)],
        ..ObservationBatch::default()
    };
    mapper.observe(&batch, ts(NOW));
    let edges = mapper.snapshot();
    assert!(
        matches!(&edges[0].target, Target::Kubernetes(w) if w.name == "cool-versioned-application.4.2.0")
    );
    let docs = json_export(&edges);
    assert_eq!(
        docs[0]["spec"]["targets"][0]["kubernetes"]["name"],
        "cool-versioned-application_4_2_0"
    );
}

#[test]
fn the_docs_examples_pass_the_crd_schema_but_the_two_known_broken_ones() {
    let schemas = testkit::crd::CrdSchemas::clientintents_reference();
    let dir = testkit::need::shared_file("reference/otterize/intents/docs-examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    let (mut docs, mut refused) = (0, Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        for (i, doc) in text
            .split("\n---")
            .filter(|d| !d.trim().trim_start_matches("---").trim().is_empty())
            .enumerate()
        {
            let doc: Value =
                serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("{name} doc {i}: {e}"));
            docs += 1;
            if schemas.validate(&doc).is_err() {
                refused.push(format!("{name}#{i}"));
            }
        }
    }
    assert_eq!(files.len(), 12);
    // The fixtures' README says 18 documents; the files hold 21 (`lab--intents.yaml` has five,
    // `shadow-mode--kafka-intents.yaml` three), every one a ClientIntents.
    assert_eq!(docs, 21, "{refused:?}");
    assert_eq!(
        refused,
        // Counted from 0: lab's frontend document has a `service:` with no body; the psql
        // client's an empty `table:`.
        ["lab--intents.yaml#2", "postgresql-visibility--psql-client-clientintents.yaml#0"]
    );
}

/// `text` with the words inside every `[...]` sorted, and each client's indented lines sorted:
/// Otterize's docs were written by hand, in no particular order; `list` sorts.
fn order_free(text: &str) -> Vec<String> {
    let mut blocks: Vec<Vec<String>> = Vec::new();
    for line in text.lines() {
        let line = match (line.find('['), line.rfind(']')) {
            (Some(open), Some(close)) => {
                let mut words: Vec<&str> = line[open + 1..close].split([' ', ',']).collect();
                words.sort();
                format!("{}[{}]{}", &line[..open], words.join(" "), &line[close + 1..])
            }
            _ => line.to_owned(),
        };
        match blocks.last_mut() {
            Some(block) if line.starts_with("    ") => block.push(line),
            _ => blocks.push(vec![line]),
        }
    }
    blocks
        .into_iter()
        .flat_map(|mut b| {
            b[1..].sort();
            b
        })
        .collect()
}

#[test]
fn the_docs_list_outputs_are_what_list_prints() {
    // Issue 18, item 7: Otterize's docs print every target as `<name> in namespace <ns>`;
    // `list --qualified` does, `list` keeps the seeds' bare names in the client's namespace.
    let semantics: Value = serde_json::from_str(
        &std::fs::read_to_string(testkit::need::shared_file(
            "reference/otterize/kafka/otterize-kafka-semantics.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let docs = &semantics["docs_expected_list_output"];
    let mut mapper = kafka_tutorial();
    let line = |host: &str| {
        format!("[2026-01-01 00:01:00,000] DEBUG Principal = User:ANONYMOUS is Allowed Operation = Describe from host = {host} on resource = Topic:LITERAL:transactions for request = Metadata with resourceRefCount = 1 (kafka.authorizer.logger)")
    };
    let lines = [line("10.244.0.5"), line("10.244.0.6")];
    let broker = KafkaBroker::Pod { namespace: "kafka".into(), name: "kafka-0".into() };
    mapper.observe_kafka_log(
        &broker,
        lines.iter().map(|l| (ts("2026-01-01T00:01:00Z"), l.as_str())),
        ts(NOW),
    );
    let listed = model::render_list_with(&mapper.snapshot(), model::ListStyle::Qualified);
    assert_eq!(order_free(&listed), order_free(docs["text"].as_str().unwrap()), "{listed}");

    let istio: Value = serde_json::from_str(
        &std::fs::read_to_string(testkit::need::shared_file(
            "reference/otterize/istio/otterize-istio-watcher-cases.json",
        ))
        .unwrap(),
    )
    .unwrap();
    let docs = &istio["docs_expected_list_output"];
    let ns = docs["namespace"].as_str().unwrap();
    let nginx = Target::Kubernetes(WorkloadRef::new(ns, "nginx", Some("Deployment")));
    let called = |client: &str, path: &str, method: &str| Edge {
        http: vec![model::HttpResource { path: path.into(), methods: vec![method.into()] }],
        ..edge(&WorkloadRef::new(ns, client, Some("Deployment")), nginx.clone())
    };
    let edges =
        [called("client", "/client-path", "GET"), called("client2", "/client2-path", "POST")];
    assert_eq!(
        model::render_list_with(&edges, model::ListStyle::Qualified),
        docs["text"].as_str().unwrap()
    );
    assert!(model::render_list(&edges).contains("  - nginx\n"), "the seeds' form by default");
}
