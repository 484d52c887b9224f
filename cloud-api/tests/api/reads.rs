use axum::http::{header, Method, StatusCode};
use serde_json::{json, Value};

use crate::common::*;

/// Two clusters of one organisation: `us` runs the shop, `eu` runs the payment gateway it calls
/// through a public hostname.
async fn two_clusters(app: &TestApp) -> String {
    let org = app.org("acme").await;
    let us = app.cluster(&org.api_token, "us").await;
    let eu = app.cluster(&org.api_token, "eu").await;
    let (us_jwt, eu_jwt) = (app.cluster_token(&us).await, app.cluster_token(&eu).await);
    let mut old = k8s_edge("ops", "backup", "shop", "redis-cart", 6379, 1);
    old["first_seen"] = json!("2026-10-01T00:00:00Z");
    old["last_seen"] = json!("2026-10-01T00:00:00Z");
    let us_edges = vec![
        k8s_edge("shop", "frontend", "shop", "cartservice", 7070, 12),
        k8s_edge("shop", "frontend", "catalog", "productcatalog", 3550, 4),
        json!({"client": {"namespace": "shop", "name": "frontend", "kind": "Deployment"}, "target": {"service": {"namespace": "shop", "name": "currency"}},
               "ports": [{"port": 7000, "protocol": "TCP"}], "first_seen": "2026-11-24T17:00:00Z", "last_seen": "2026-11-24T17:30:00Z", "connections": 2}),
        internet_edge("shop", "checkout", "pay.example.com", "198.51.100.10", 443),
        internet_edge("shop", "checkout", "api.stripe.com", "203.0.113.7", 443),
        aws_edge("shop", "invoicer", "arn:aws:s3:::invoices", "s3:GetObject"),
        old,
    ];
    assert_eq!(
        app.post_report(&us_jwt, &report(us_edges, vec![])).await.status,
        StatusCode::ACCEPTED
    );
    let eu_exposed = vec![
        json!({"namespace": "pay", "name": "gateway", "kind": "Deployment", "addresses": ["198.51.100.10"], "hostnames": ["pay.example.com"]}),
    ];
    assert_eq!(
        app.post_report(
            &eu_jwt,
            &report(vec![k8s_edge("pay", "gateway", "pay", "ledger", 5432, 9)], eu_exposed)
        )
        .await
        .status,
        StatusCode::ACCEPTED
    );
    org.api_token
}

fn pairs(graph: &Value) -> Vec<(String, String)> {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (e["source"].as_str().unwrap().to_owned(), e["target"].as_str().unwrap().to_owned())
        })
        .collect()
}

#[tokio::test]
async fn the_access_graph_merges_clusters_and_filters() {
    let app = test_app().await;
    let token = two_clusters(&app).await;
    let graph = app.get("/api/v1/access-graph", &token).await.json();
    let clusters: Vec<&str> =
        graph["clusters"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(clusters, vec!["eu", "us"]);
    let edges = pairs(&graph);
    assert_eq!(edges.len(), 8, "{edges:?}");
    assert!(
        edges.contains(&("us/shop/checkout".into(), "eu/pay/gateway".into())),
        "the call to eu's public hostname is drawn to eu's workload: {edges:?}"
    );
    assert!(edges.contains(&("us/shop/checkout".into(), "internet/api.stripe.com".into())));
    assert!(edges.contains(&("us/shop/invoicer".into(), "aws/arn:aws:s3:::invoices".into())));
    let gateway =
        graph["nodes"].as_array().unwrap().iter().find(|n| n["id"] == "eu/pay/gateway").unwrap();
    assert_eq!(gateway["cluster"], "eu");
    assert_eq!(gateway["workload_kind"], "Deployment");
    let cart = graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["target"] == "us/shop/cartservice")
        .unwrap();
    assert_eq!(cart["connections"], 12);
    assert_eq!(cart["ports"], json!([{"port": 7070, "protocol": "TCP"}]));

    let only = |q: &str| {
        let app = &app;
        let token = &token;
        let q = q.to_owned();
        async move { pairs(&app.get(&format!("/api/v1/access-graph?{q}"), token).await.json()) }
    };
    assert_eq!(only("cluster=eu").await.len(), 2, "eu's own edge and the call into it");
    assert_eq!(
        only("namespace=catalog").await,
        vec![("us/shop/frontend".to_owned(), "us/catalog/productcatalog".to_owned())]
    );
    assert_eq!(only("workload=invoicer").await.len(), 1);
    assert_eq!(
        only("since=2026-11-01T00:00:00Z").await.len(),
        7,
        "the October edge is out of the window"
    );
    assert!(!only("since=2026-11-01T00:00:00Z").await.iter().any(|(s, _)| s.ends_with("backup")));

    for bad in ["since=yesterday", "format=png", "colour=blue"] {
        let reply = app.get(&format!("/api/v1/access-graph?{bad}"), &token).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}");
        assert!(!reply.error().is_empty());
    }
    assert_eq!(
        app.get("/api/v1/access-graph?cluster=mars", &token).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_graph_is_also_served_as_graphviz_dot() {
    let app = test_app().await;
    let token = two_clusters(&app).await;
    let reply = app.get("/api/v1/access-graph?format=dot", &token).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.headers[header::CONTENT_TYPE].to_str().unwrap().starts_with("text/vnd.graphviz"));
    let dot = reply.text();
    assert!(dot.starts_with("digraph access_graph {") && dot.trim_end().ends_with('}'), "{dot}");
    assert!(dot.contains("label=\"cluster us\"") && dot.contains("label=\"cluster eu\""));
    assert!(dot.contains("label=\"namespace shop\""));
    assert!(
        dot.contains("\"us/shop/checkout\" -> \"eu/pay/gateway\" [label=\"443/TCP\"];"),
        "{dot}"
    );
    assert!(
        dot.contains(
            "\"us/shop/invoicer\" -> \"aws/arn:aws:s3:::invoices\" [label=\"s3:GetObject\"];"
        ),
        "{dot}"
    );
    assert_eq!(dot.matches(" -> ").count(), 8);
}

#[tokio::test]
async fn client_intents_are_exported_per_cluster_and_validate_against_the_crd() {
    let app = test_app().await;
    let token = two_clusters(&app).await;
    let schemas = testkit::crd::CrdSchemas::clientintents_reference();
    for (query, api_version) in
        [("", "k8s.otterize.com/v2beta1"), ("?version=v1alpha3", "k8s.otterize.com/v1alpha3")]
    {
        let reply = app.get(&format!("/api/v1/clusters/us/client-intents{query}"), &token).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert!(reply.headers[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("application/yaml"));
        let yaml = reply.text();
        let docs: Vec<Value> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        let names: Vec<&str> =
            docs.iter().map(|d| d["metadata"]["name"].as_str().unwrap()).collect();
        assert_eq!(
            names,
            vec!["backup", "checkout", "frontend", "invoicer"],
            "one per client of cluster us, sorted"
        );
        for doc in &docs {
            assert_eq!(doc["apiVersion"], api_version);
            assert_eq!(doc["kind"], "ClientIntents");
            schemas.validate(doc).unwrap_or_else(|errs| {
                panic!("{api_version} document does not validate: {errs:?}\n{doc}")
            });
        }
        let again =
            app.get(&format!("/api/v1/clusters/us/client-intents{query}"), &token).await.text();
        assert_eq!(again, yaml, "two exports of the same data are byte-identical");
    }

    let yaml = app.get("/api/v1/clusters/us/client-intents", &token).await.text();
    assert!(yaml.contains("name: cartservice\n"), "same-namespace target by bare name:\n{yaml}");
    assert!(
        yaml.contains("name: productcatalog.catalog\n"),
        "other namespace as name.namespace:\n{yaml}"
    );
    assert!(yaml.contains("api.stripe.com"));
    assert!(yaml.contains("arn:aws:s3:::invoices"));

    let json =
        app.get("/api/v1/clusters/us/client-intents?format=json&namespace=ops", &token).await;
    assert_eq!(json.status, StatusCode::OK);
    let docs = json.json();
    assert_eq!(docs.as_array().unwrap().len(), 1);
    assert_eq!(docs[0]["metadata"]["name"], "backup");

    assert_eq!(
        app.get("/api/v1/clusters/us/client-intents?version=v9", &token).await.status,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        app.get("/api/v1/clusters/mars/client-intents", &token).await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn clusters_are_registered_listed_and_named_uniquely() {
    let app = test_app().await;
    let org = app.org("acme").await;
    let creds = app.cluster(&org.api_token, "prod").await;
    assert!(creds.client_id.starts_with("cl_") && creds.client_secret.len() >= 40);
    let dup = app
        .call(Method::POST, "/api/v1/clusters", Some(&org.api_token), Some(json!({"name": "prod"})))
        .await;
    assert_eq!(dup.status, StatusCode::CONFLICT);
    let bad = app
        .call(
            Method::POST,
            "/api/v1/clusters",
            Some(&org.api_token),
            Some(json!({"name": "Prod EU"})),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let junk = app
        .call(Method::POST, "/api/v1/clusters", Some(&org.api_token), Some(json!({"nom": "x"})))
        .await;
    assert_eq!(junk.status, StatusCode::BAD_REQUEST);
    let listed = app.get("/api/v1/clusters", &org.api_token).await.json();
    assert_eq!(listed[0]["name"], "prod");
    assert!(listed[0].get("client_secret").is_none(), "the secret is shown once, at creation");
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = test_app().await;
    assert_eq!(app.call(Method::GET, "/healthz", None, None).await.status, StatusCode::OK);
    assert_eq!(app.call(Method::GET, "/readyz", None, None).await.text(), "ready");
    let metrics = app.metrics().await;
    assert!(metrics.contains("# TYPE intentmap_cloud_reports counter"), "{metrics}");
    let missing = app.call(Method::GET, "/nope", None, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    assert!(missing.error().contains("README"));
}
