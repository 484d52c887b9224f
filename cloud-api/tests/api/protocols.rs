//! Kafka topics and HTTP paths on edges: ingested, merged across reports, drawn in the access
//! graph and exported in ClientIntents that validate against the CRD.

use axum::http::StatusCode;
use serde_json::{json, Value};

use crate::common::*;

fn kafka_edge(client: &str, topics: Value) -> Value {
    json!({
        "client": {"namespace": "shop", "name": client, "kind": "Deployment"},
        "target": {"kafka": {"namespace": "infra", "name": "kafka", "kind": "StatefulSet"}},
        "ports": [{"port": 9092, "protocol": "TCP"}],
        "kafka": topics,
        "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:30:00Z", "connections": 3,
    })
}

fn http_edge(target: Value, http: Value) -> Value {
    json!({
        "client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"},
        "target": target,
        "ports": [{"port": 8080, "protocol": "TCP"}],
        "http": http,
        "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:30:00Z", "connections": 5,
    })
}

fn cart() -> Value {
    json!({"kubernetes": {"namespace": "shop", "name": "cart", "kind": "Deployment"}})
}

fn currency() -> Value {
    json!({"service": {"namespace": "shop", "name": "currency"}})
}

/// Two overlapping reports from cluster `prod`; returns the org's API token.
async fn ingest_two_reports(app: &TestApp) -> String {
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    let mut tcp_to_broker = k8s_edge("shop", "checkout", "infra", "kafka", 9092, 1);
    tcp_to_broker["target"]["kubernetes"]["kind"] = json!("StatefulSet");
    let first = report(
        vec![
            kafka_edge(
                "checkout",
                json!([{"name": "orders", "operations": ["produce", "describe"], "denied": ["describe"]}, {"name": "payments", "operations": ["consume"]}]),
            ),
            http_edge(
                cart(),
                json!([{"path": "/api/cart", "methods": ["GET"]}, {"path": "/healthz"}]),
            ),
            http_edge(currency(), json!([{"path": "/convert", "methods": ["GET"]}])),
            // The same broker over plain TCP: drawn to the same node.
            tcp_to_broker,
        ],
        vec![],
    );
    let reply = app.post_report(&jwt, &first).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let second = report(
        vec![
            kafka_edge(
                "checkout",
                json!([{"name": "orders", "operations": ["consume", "produce"]}, {"name": "audit.log_v2", "operations": ["produce"]}]),
            ),
            http_edge(
                cart(),
                json!([{"path": "/api/cart", "methods": ["POST", "GET"]}, {"path": "/api/items,all", "methods": ["GET"]}]),
            ),
            http_edge(currency(), json!([{"path": "/convert", "methods": ["GET"]}])),
            // An edge without paths (plain TCP, or an older agent) leaves the stored paths alone.
            k8s_edge("shop", "frontend", "shop", "cart", 8080, 1),
        ],
        vec![],
    );
    let reply = app.post_report(&jwt, &second).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    org.api_token
}

fn edge_of<'a>(graph: &'a Value, source: &str, target: &str) -> &'a Value {
    let found: Vec<&Value> = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["source"] == source && e["target"] == target)
        .collect();
    assert_eq!(found.len(), 1, "exactly one edge {source} -> {target} in {graph:#}");
    found[0]
}

#[tokio::test]
async fn topics_and_paths_merge_across_reports_in_the_access_graph() {
    let app = test_app().await;
    let token = ingest_two_reports(&app).await;
    let graph = app.get("/api/v1/access-graph", &token).await.json();

    let broker = edge_of(&graph, "prod/shop/checkout", "prod/infra/kafka");
    assert_eq!(
        broker["kafka"],
        json!([
            {"name": "audit.log_v2", "operations": ["produce"]},
            {"name": "orders", "operations": ["consume", "describe", "produce"], "denied": ["describe"]},
            {"name": "payments", "operations": ["consume"]},
        ]),
        "topics and operations unioned, the denied one kept and marked"
    );
    assert_eq!(
        broker["connections"], 7,
        "two Kafka observations and one plain TCP one, on one edge"
    );
    assert!(broker.get("http").is_none());
    let nodes: Vec<&Value> =
        graph["nodes"].as_array().unwrap().iter().filter(|n| n["name"] == "kafka").collect();
    assert_eq!(nodes.len(), 1, "the broker is one workload node: {nodes:?}");
    assert_eq!(nodes[0]["kind"], "workload");
    assert_eq!(nodes[0]["workload_kind"], "StatefulSet");

    let to_cart = edge_of(&graph, "prod/shop/frontend", "prod/shop/cart");
    assert_eq!(
        to_cart["http"],
        json!([
            {"path": "/api/cart", "methods": ["GET", "POST"]},
            {"path": "/api/items,all", "methods": ["GET"]},
            {"path": "/healthz"},
        ])
    );
    assert_eq!(to_cart["connections"], 11);
    assert!(to_cart.get("kafka").is_none());
    let to_currency = edge_of(&graph, "prod/shop/frontend", "prod/shop/service/currency");
    assert_eq!(
        to_currency["http"],
        json!([{"path": "/convert", "methods": ["GET"]}]),
        "no duplicates"
    );
    assert_eq!(graph["edges"].as_array().unwrap().len(), 3);

    let dot = app.get("/api/v1/access-graph?format=dot", &token).await.text();
    assert!(dot.contains("topic orders: consume describe produce (denied: describe)"), "{dot}");
    assert!(dot.contains("GET,POST /api/cart"), "{dot}");
}

/// The cluster's ClientIntents in `version`, each validated against the CRD: `(checkout, frontend)`.
async fn export(app: &TestApp, token: &str, version: &str) -> (Value, Value) {
    let reply =
        app.get(&format!("/api/v1/clusters/prod/client-intents?version={version}"), token).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let docs: Vec<Value> = reply
        .text()
        .split("---\n")
        .filter(|d| !d.trim().is_empty())
        .map(|d| serde_yaml::from_str(d).unwrap())
        .collect();
    let schemas = testkit::crd::CrdSchemas::clientintents_reference();
    for doc in &docs {
        schemas.validate(doc).unwrap_or_else(|errs| {
            panic!("{version} document does not validate: {errs:?}\n{doc:#}")
        });
    }
    let by_name = |name: &str| {
        docs.iter()
            .find(|d| d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {docs:?}"))
            .clone()
    };
    (by_name("checkout"), by_name("frontend"))
}

#[tokio::test]
async fn client_intents_carry_topics_and_paths_and_validate_against_the_crd() {
    let app = test_app().await;
    let token = ingest_two_reports(&app).await;
    let orders = json!({"name": "orders", "operations": ["consume", "describe", "produce"]});
    let topics = json!([{"name": "audit.log_v2", "operations": ["produce"]}, orders, {"name": "payments", "operations": ["consume"]}]);
    let cart_http = json!([{"path": "/api/cart", "methods": ["GET", "POST"]}, {"path": "/api/items,all", "methods": ["GET"]}, {"path": "/healthz", "methods": []}]);

    let (checkout, frontend) = export(&app, &token, "v2beta1").await;
    assert_eq!(
        checkout["spec"]["targets"],
        json!([{"kafka": {"name": "kafka.infra", "topics": topics}}, {"kubernetes": {"kind": "StatefulSet", "name": "kafka.infra"}}]),
        "denied operations are exported: the client does call them"
    );
    assert_eq!(
        frontend["spec"]["targets"],
        json!([
            {"kubernetes": {"kind": "Deployment", "name": "cart", "http": cart_http}},
            {"service": {"name": "currency", "http": [{"path": "/convert", "methods": ["GET"]}]}},
        ])
    );

    let (checkout, frontend) = export(&app, &token, "v1alpha3").await;
    assert_eq!(
        checkout["spec"]["calls"],
        json!([{"name": "kafka.infra", "type": "kafka", "kafkaTopics": topics}, {"kind": "StatefulSet", "name": "kafka.infra"}])
    );
    assert_eq!(
        frontend["spec"]["calls"],
        json!([
            {"kind": "Deployment", "name": "cart", "type": "http", "HTTPResources": cart_http},
            {"kind": "Service", "name": "currency", "type": "http", "HTTPResources": [{"path": "/convert", "methods": ["GET"]}]},
        ])
    );
}

#[tokio::test]
async fn malformed_topics_and_paths_are_refused_with_the_field_and_write_nothing() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    let good = || {
        report(
            vec![
                k8s_edge("shop", "frontend", "shop", "cart", 7070, 1),
                http_edge(cart(), json!([{"path": "/api/cart", "methods": ["GET"]}])),
                kafka_edge("checkout", json!([{"name": "orders", "operations": ["produce"]}])),
            ],
            vec![],
        )
    };
    let mut http_on_internet = good();
    http_on_internet["edges"][1]["target"] = json!({"internet": {"domains": ["api.stripe.com"]}});
    let mut unknown_method = good();
    unknown_method["edges"][1]["http"][0]["methods"] = json!(["GET", "FETCH"]);
    let mut bad_topic = good();
    bad_topic["edges"][2]["kafka"][0]["name"] = json!("orders/eu");
    let mut unknown_operation = good();
    unknown_operation["edges"][2]["kafka"][0]["operations"] = json!(["Write"]);
    let mut kafka_on_workload = good();
    kafka_on_workload["edges"][2]["target"] =
        json!({"kubernetes": {"namespace": "infra", "name": "kafka"}});

    for (what, body, says) in [
        (
            "http on an internet target",
            http_on_internet,
            "edges[1].http: HTTP paths are only recorded for kubernetes and service targets",
        ),
        (
            "unknown method",
            unknown_method,
            "edges[1].http[0].methods[1]: \"FETCH\" is not one of the methods",
        ),
        ("bad topic", bad_topic, "edges[2].kafka[0].name: \"orders/eu\" is not a Kafka topic name"),
        ("unknown operation", unknown_operation, "edges[2].kafka[0].operations[0]: \"Write\""),
        (
            "kafka on a kubernetes target",
            kafka_on_workload,
            "edges[2].kafka: Kafka topics are only recorded for kafka targets",
        ),
    ] {
        let reply = app.post_report(&jwt, &body).await;
        assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY, "{what}: {}", reply.text());
        assert!(reply.error().starts_with(says), "{what}: {}", reply.error());
    }
    let graph = app.get("/api/v1/access-graph", &org.api_token).await.json();
    assert_eq!(graph["edges"], json!([]), "nothing half-written");
    assert_eq!(
        app.post_report(&jwt, &good()).await.status,
        StatusCode::ACCEPTED,
        "the corrected report is accepted"
    );
}
