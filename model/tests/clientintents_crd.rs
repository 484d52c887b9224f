//! The ClientIntents we write validate against the published CRD (`../shared/reference/`), in
//! every version we write, and the validator does refuse what the CRD does not allow.

use model::edge::{HttpResource, KafkaTopic, HTTP_METHODS, KAFKA_OPERATIONS};
use model::{
    client_intents, to_yaml, AwsTarget, Edge, IntentsVersion, InternetTarget, PortSpec, Protocol,
    ServiceRef, Target, WorkloadRef,
};
use serde_json::{json, Value};
use testkit::crd::CrdSchemas;

fn reference() -> CrdSchemas {
    CrdSchemas::clientintents_reference()
}

fn edge(client: (&str, &str, Option<&str>), target: Target, ports: &[(u16, Protocol)]) -> Edge {
    Edge {
        client: WorkloadRef::new(client.0, client.1, client.2),
        target,
        ports: ports.iter().map(|&(port, protocol)| PortSpec { port, protocol }).collect(),
        first_seen: "2026-03-01T08:00:00Z".parse().unwrap(),
        last_seen: "2026-03-01T09:00:00Z".parse().unwrap(),
        connections: 12,
        http: Vec::new(),
        kafka: Vec::new(),
        bytes: None,
    }
}

/// Every kind of target, in and out of the client's namespace, with and without optional parts.
fn rich_edges() -> Vec<Edge> {
    let frontend = ("shop", "frontend", Some("Deployment"));
    let worker = ("batch", "nightly-report", Some("CronJob"));
    let bare = ("shop", "debug-pod", None);
    let tcp = Protocol::Tcp;
    vec![
        edge(
            frontend,
            Target::Kubernetes(WorkloadRef::new("shop", "cartservice", Some("Deployment"))),
            &[(7070, tcp)],
        ),
        edge(
            frontend,
            Target::Kubernetes(WorkloadRef::new("data", "postgres", Some("StatefulSet"))),
            &[(5432, tcp)],
        ),
        edge(frontend, Target::Kubernetes(WorkloadRef::new("shop", "legacy", None)), &[]),
        edge(
            frontend,
            Target::Service(ServiceRef { namespace: "shop".into(), name: "cartservice".into() }),
            &[(7070, tcp)],
        ),
        edge(
            frontend,
            Target::Service(ServiceRef {
                namespace: "kube-system".into(),
                name: "kube-dns".into(),
            }),
            &[(53, Protocol::Udp), (53, tcp)],
        ),
        edge(
            frontend,
            Target::Service(ServiceRef { namespace: "default".into(), name: "kubernetes".into() }),
            &[(443, tcp)],
        ),
        edge(
            frontend,
            Target::Internet(InternetTarget {
                domains: vec!["api.stripe.com".into(), "hooks.stripe.com".into()],
                ips: vec!["203.0.113.7".into()],
                ports: vec![443],
            }),
            &[(443, tcp)],
        ),
        edge(
            frontend,
            Target::Internet(InternetTarget {
                domains: vec![],
                ips: vec!["198.51.100.20".into(), "2001:db8::20".into()],
                ports: vec![],
            }),
            &[(8443, tcp)],
        ),
        edge(
            frontend,
            Target::Internet(InternetTarget {
                domains: vec!["example.org".into()],
                ips: vec![],
                ports: vec![],
            }),
            &[],
        ),
        edge(
            frontend,
            Target::Aws(AwsTarget {
                arn: "arn:aws:s3:::shop-assets/*".into(),
                actions: vec!["s3:GetObject".into(), "s3:PutObject".into()],
            }),
            &[(443, tcp)],
        ),
        edge(
            frontend,
            Target::Aws(AwsTarget {
                arn: "arn:aws:sqs:eu-west-1:123456789012:orders".into(),
                actions: vec![],
            }),
            &[],
        ),
        edge(
            worker,
            Target::Kubernetes(WorkloadRef::new("data", "postgres", Some("StatefulSet"))),
            &[(5432, tcp)],
        ),
        edge(
            worker,
            Target::Aws(AwsTarget {
                arn: "arn:aws:dynamodb:eu-west-1:123456789012:table/reports".into(),
                actions: vec!["dynamodb:Query".into()],
            }),
            &[],
        ),
        edge(bare, Target::Kubernetes(WorkloadRef::new("shop", "on", Some("Deployment"))), &[]),
    ]
    .into_iter()
    .chain(protocol_edges())
    .collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// HTTP paths on workload and Service targets (every method, none, odd paths) and Kafka brokers
/// in and out of the client's namespace (every operation, denied ones, no topics at all).
fn protocol_edges() -> Vec<Edge> {
    let frontend = ("shop", "frontend", Some("Deployment"));
    let worker = ("batch", "nightly-report", Some("CronJob"));
    let tcp = Protocol::Tcp;
    let mut cart = edge(
        frontend,
        Target::Kubernetes(WorkloadRef::new("shop", "cartservice", Some("Deployment"))),
        &[(7070, tcp)],
    );
    cart.http = vec![
        HttpResource { path: "/api/cart".into(), methods: strings(&["GET", "POST"]) },
        HttpResource { path: "/".into(), methods: strings(&HTTP_METHODS) },
        HttpResource { path: "/healthz".into(), methods: vec![] },
        HttpResource { path: "/search?q=a,b c".into(), methods: strings(&["GET"]) },
    ];
    let mut currency = edge(
        frontend,
        Target::Service(ServiceRef { namespace: "money".into(), name: "currency".into() }),
        &[(7000, tcp)],
    );
    currency.http = vec![HttpResource { path: "/convert".into(), methods: strings(&["PUT"]) }];
    let mut broker = edge(
        frontend,
        Target::Kafka(WorkloadRef::new("infra", "kafka", Some("StatefulSet"))),
        &[(9092, tcp)],
    );
    broker.kafka = vec![
        KafkaTopic {
            name: "orders".into(),
            operations: strings(&["produce", "describe"]),
            denied: strings(&["describe"]),
        },
        KafkaTopic {
            name: "audit.log_v2-eu".into(),
            operations: strings(&KAFKA_OPERATIONS),
            denied: vec![],
        },
        KafkaTopic { name: "empty".into(), operations: vec![], denied: vec![] },
    ];
    let local_broker = edge(frontend, Target::Kafka(WorkloadRef::new("shop", "events", None)), &[]);
    let mut reports = edge(
        worker,
        Target::Kafka(WorkloadRef::new("infra", "kafka", Some("StatefulSet"))),
        &[(9092, tcp)],
    );
    reports.kafka = vec![KafkaTopic {
        name: "reports".into(),
        operations: strings(&["consume"]),
        denied: strings(&["consume"]),
    }];
    vec![cart, currency, broker, local_broker, reports]
}

fn assert_valid(crd: &CrdSchemas, doc: &Value) {
    if let Err(errors) = crd.validate(doc) {
        panic!("{} does not validate:\n  {}\n{doc:#}", doc["apiVersion"], errors.join("\n  "));
    }
}

#[test]
fn every_version_we_write_validates_against_the_reference_crd() {
    let crd = reference();
    for version in IntentsVersion::ALL {
        let docs = client_intents(&rich_edges(), version);
        assert_eq!(docs.len(), 3, "{version}: one document per client");
        for doc in &docs {
            assert_eq!(doc["apiVersion"], version.api_version());
            assert_valid(&crd, doc);
        }
        // The YAML text too, read back as an operator would read it.
        let yaml = to_yaml(&docs);
        for (i, text) in yaml.split("---\n").skip(1).enumerate() {
            let doc: Value = serde_yaml::from_str(text)
                .unwrap_or_else(|e| panic!("{version} document {i}: {e}\n{text}"));
            assert_eq!(doc, docs[i], "{version}: YAML round trip");
            assert_valid(&crd, &doc);
        }
    }
}

#[test]
fn http_paths_and_kafka_topics_are_written_where_each_version_declares_them() {
    let crd = reference();
    let docs = |version| client_intents(&protocol_edges(), version);

    let v2 = docs(IntentsVersion::V2beta1);
    let frontend =
        &v2.iter().find(|d| d["metadata"]["name"] == "frontend").unwrap()["spec"]["targets"];
    let find = |key: &str, name: &str| {
        frontend
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t[key]["name"] == name)
            .unwrap_or_else(|| panic!("{key} {name} in {frontend}"))
    };
    assert_eq!(
        find("kubernetes", "cartservice")["kubernetes"]["http"].as_array().unwrap().len(),
        4
    );
    assert_eq!(
        find("service", "currency.money")["service"]["http"],
        json!([{"path": "/convert", "methods": ["PUT"]}])
    );
    let topics = &find("kafka", "kafka.infra")["kafka"]["topics"];
    assert_eq!(
        topics[2],
        json!({"name": "orders", "operations": ["describe", "produce"]}),
        "denied operations are exported"
    );
    assert_eq!(topics[1], json!({"name": "empty", "operations": []}));
    assert_eq!(find("kafka", "events")["kafka"], json!({"name": "events"}));

    let v1 = docs(IntentsVersion::V1alpha3);
    let calls = &v1.iter().find(|d| d["metadata"]["name"] == "frontend").unwrap()["spec"]["calls"];
    let find = |name: &str| {
        calls
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap_or_else(|| panic!("{name} in {calls}"))
    };
    assert_eq!(find("cartservice")["type"], "http");
    assert_eq!(
        find("currency.money")["HTTPResources"],
        json!([{"path": "/convert", "methods": ["PUT"]}])
    );
    assert_eq!(find("kafka.infra")["type"], "kafka");
    assert_eq!(
        find("kafka.infra")["kafkaTopics"][2],
        json!({"name": "orders", "operations": ["describe", "produce"]})
    );

    for doc in v2.iter().chain(&v1) {
        assert_valid(&crd, doc);
    }
}

#[test]
fn the_validator_refuses_documents_the_crd_does_not_allow() {
    let crd = reference();
    let v2 = || {
        client_intents(&rich_edges(), IntentsVersion::V2beta1)
            .into_iter()
            .find(|d| d["metadata"]["name"] == "frontend")
            .unwrap()
    };
    let v1 = || {
        client_intents(&rich_edges(), IntentsVersion::V1alpha3)
            .into_iter()
            .find(|d| d["metadata"]["name"] == "frontend")
            .unwrap()
    };

    let refused = |doc: Value, expected: &str| {
        let errors = crd.validate(&doc).expect_err("the CRD should refuse this document");
        assert!(
            errors.iter().any(|e| e.starts_with(expected)),
            "expected an error at {expected}, got {errors:?}"
        );
    };

    let mut doc = v2();
    doc["spec"]["targets"][0]["kubernetes"]["port"] = json!(7070);
    refused(doc, "/spec/targets/0/kubernetes/port: unknown field");

    let mut doc = v2();
    let i = doc["spec"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t.get("internet").is_some())
        .unwrap();
    doc["spec"]["targets"][i]["internet"]["ports"] = json!(["x"]);
    refused(
        doc,
        &format!("/spec/targets/{i}/internet/ports/0: expected integer, found string \"x\""),
    );

    let mut doc = v2();
    doc["spec"]["workload"].as_object_mut().unwrap().remove("name");
    refused(doc, "/spec/workload: required field \"name\" is missing");

    let mut doc = v2();
    doc["spec"]["calls"] = json!([]);
    refused(doc, "/spec/calls: unknown field");

    let mut doc = v1();
    doc["spec"]["calls"][0]["type"] = json!("kubernetes");
    refused(doc, "/spec/calls/0/type: \"kubernetes\" is not one of");

    let mut doc = v2();
    let i = doc["spec"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t["kubernetes"].get("http").is_some())
        .unwrap();
    doc["spec"]["targets"][i]["kubernetes"]["http"][0]["methods"] = json!(["HEAD"]);
    refused(doc, &format!("/spec/targets/{i}/kubernetes/http/0/methods/0: \"HEAD\" is not one of"));

    let mut doc = v2();
    let i = doc["spec"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .position(|t| t["kafka"].get("topics").is_some())
        .unwrap();
    doc["spec"]["targets"][i]["kafka"]["topics"][0].as_object_mut().unwrap().remove("operations");
    refused(
        doc,
        &format!("/spec/targets/{i}/kafka/topics/0: required field \"operations\" is missing"),
    );

    let mut doc = v1();
    let i = doc["spec"]["calls"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c.get("kafkaTopics").is_some())
        .unwrap();
    doc["spec"]["calls"][i]["kafkaTopics"][0]["operations"] = json!(["Read"]);
    refused(doc, &format!("/spec/calls/{i}/kafkaTopics/0/operations/0: \"Read\" is not one of"));

    let mut doc = v1();
    doc["apiVersion"] = json!("k8s.otterize.com/v1");
    refused(doc, "/apiVersion: no version v1");
}
