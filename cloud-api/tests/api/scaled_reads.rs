//! Reads that scale (issue 19, item 6): filters answered by the database, the aggregated graph,
//! and the streamed ClientIntents export. Each is compared with what the full graph (or the
//! unstreamed rendering) says, so a filter that drops an edge or a count that drifts fails here.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::{header, StatusCode};
use cloud_api::store::ReadLimits;
use cloud_api::{Config, Protections};
use model::intents::{self, IntentsVersion};
use serde_json::{json, Value};

use crate::common::*;

fn edge(ns: &str, client: &str, target: Value, last_seen: &str, connections: u64) -> Value {
    json!({
        "client": {"namespace": ns, "name": client, "kind": "Deployment"},
        "target": target,
        "ports": [{"port": 8080, "protocol": "TCP"}],
        "first_seen": "2026-09-01T00:00:00Z", "last_seen": last_seen,
        "connections": connections,
    })
}

fn workload(ns: &str, name: &str) -> Value {
    json!({"kubernetes": {"namespace": ns, "name": name, "kind": "Deployment"}})
}

const RECENT: &str = "2026-11-24T17:30:00Z";
const OLD: &str = "2026-10-01T00:00:00Z";

/// acme: `us` (shop, catalog, ops, infra) calls into `eu` (pay) through eu's public hostname;
/// globex, another organisation, uses the same namespace and workload names and some of its own.
pub(crate) async fn two_orgs(app: &TestApp) -> (String, String) {
    let acme = app.org("acme").await;
    let us = app.cluster(&acme.api_token, "us").await;
    let eu = app.cluster(&acme.api_token, "eu").await;
    let (us_jwt, eu_jwt) = (app.cluster_token(&us).await, app.cluster_token(&eu).await);
    let us_edges = vec![
        edge("shop", "frontend", workload("shop", "cart"), RECENT, 12),
        edge("shop", "frontend", workload("catalog", "products"), RECENT, 4),
        edge(
            "shop",
            "frontend",
            json!({"service": {"namespace": "shop", "name": "currency"}}),
            RECENT,
            2,
        ),
        edge("shop", "checkout", workload("shop", "cart"), OLD, 1),
        edge("catalog", "products", workload("catalog", "db"), RECENT, 30),
        edge(
            "shop",
            "checkout",
            json!({"kafka": {"namespace": "infra", "name": "kafka", "kind": "StatefulSet"}}),
            RECENT,
            3,
        ),
        edge("ops", "backup", workload("shop", "cart"), OLD, 1),
        internet_edge("shop", "checkout", "pay.example.com.", "198.51.100.10", 443),
        internet_edge("shop", "checkout", "api.stripe.com", "203.0.113.7", 443),
        internet_edge("ops", "backup", "backup.example.net", "203.0.113.9", 443),
        aws_edge("shop", "invoicer", "arn:aws:s3:::invoices", "s3:GetObject"),
    ];
    let reply = app.post_report(&us_jwt, &report(us_edges, vec![])).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let eu_exposed = vec![json!({"namespace": "pay", "name": "gateway", "kind": "Deployment",
        "addresses": ["198.51.100.10"], "hostnames": ["pay.example.com"]})];
    let eu_edges = vec![
        edge("pay", "gateway", workload("pay", "ledger"), RECENT, 9),
        edge("pay", "ledger", workload("shop", "cart"), RECENT, 1),
    ];
    let reply = app.post_report(&eu_jwt, &report(eu_edges, eu_exposed)).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());

    let (globex, _, globex_jwt) = app.tenant("globex", "us").await;
    let globex_edges = vec![
        edge("shop", "frontend", workload("shop", "globex-secret"), RECENT, 5),
        edge("pay", "globex-spy", workload("shop", "cart"), RECENT, 5),
        internet_edge("shop", "globex-spy", "pay.example.com", "198.51.100.10", 443),
    ];
    let reply = app.post_report(&globex_jwt, &report(globex_edges, vec![])).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    (acme.api_token, globex.api_token)
}

/// The graph's edges as (source, target, observed_in), sorted.
pub(crate) fn edge_set(graph: &Value) -> BTreeSet<(String, String, String)> {
    graph["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let s = |k: &str| e[k].as_str().unwrap().to_owned();
            (s("source"), s("target"), s("observed_in"))
        })
        .collect()
}

/// Nodes by id.
pub(crate) fn nodes(graph: &Value) -> BTreeMap<String, Value> {
    graph["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| (n["id"].as_str().unwrap().to_owned(), n.clone()))
        .collect()
}

/// The full graph's edges with either end passing `keep`.
fn either_end(full: &Value, keep: impl Fn(&Value) -> bool) -> BTreeSet<(String, String, String)> {
    let by_id = nodes(full);
    edge_set(full).into_iter().filter(|(s, t, _)| keep(&by_id[s]) || keep(&by_id[t])).collect()
}

#[tokio::test]
async fn filtered_reads_return_exactly_the_edges_with_an_end_in_the_filter() {
    let app = test_app().await;
    let (acme, globex) = two_orgs(&app).await;
    let full = app.get("/api/v1/access-graph", &acme).await.json();
    let all = edge_set(&full);
    assert_eq!(all.len(), 13, "{all:?}");
    assert!(all.iter().all(|(s, t, _)| !s.contains("globex") && !t.contains("globex")));

    let read = |q: String| {
        let (app, acme) = (&app, &acme);
        async move {
            let reply = app.get(&format!("/api/v1/access-graph?{q}"), acme).await;
            assert_eq!(reply.status, StatusCode::OK, "{q}: {}", reply.text());
            reply.json()
        }
    };

    // One namespace: exactly the edges with either end in it (the call to eu's hostname lands
    // in `pay`, so it belongs to both `shop` and `pay`).
    let pay = edge_set(&read("namespace=pay".into()).await);
    let expected: BTreeSet<_> = [
        ("eu/pay/gateway", "eu/pay/ledger", "eu"),
        ("eu/pay/ledger", "eu/shop/cart", "eu"),
        ("us/shop/checkout", "eu/pay/gateway", "us"),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(pay, expected);

    for ns in ["shop", "catalog", "ops", "infra", "pay", "nowhere"] {
        let got = edge_set(&read(format!("namespace={ns}")).await);
        assert_eq!(got, either_end(&full, |n| n["namespace"] == ns), "namespace={ns}");
    }
    for cluster in ["us", "eu"] {
        let graph = read(format!("cluster={cluster}")).await;
        assert_eq!(edge_set(&graph), either_end(&full, |n| n["cluster"] == cluster), "{cluster}");
        assert_eq!(graph["clusters"].as_array().unwrap().len(), 1);
    }
    assert_eq!(
        edge_set(&read("cluster=eu".into()).await).len(),
        3,
        "eu's two edges and us's call into eu's gateway"
    );
    for name in ["cart", "gateway", "checkout", "api.stripe.com", "arn:aws:s3:::invoices", "kafka"]
    {
        let got = edge_set(&read(format!("workload={name}")).await);
        assert!(!got.is_empty(), "workload={name}");
        assert_eq!(got, either_end(&full, |n| n["name"] == name), "workload={name}");
    }
    // Combined, and with a time window: every part narrows.
    let combined =
        edge_set(&read("cluster=us&namespace=shop&since=2026-11-01T00:00:00Z".into()).await);
    let recent = edge_set(&read("since=2026-11-01T00:00:00Z".into()).await);
    assert_eq!(recent.len(), 11, "two edges were last seen in October");
    let expected: BTreeSet<_> = either_end(&full, |n| n["namespace"] == "shop")
        .intersection(&either_end(&full, |n| n["cluster"] == "us"))
        .filter(|e| recent.contains(e))
        .cloned()
        .collect();
    assert_eq!(combined, expected);
    assert!(combined.contains(&("us/shop/checkout".into(), "eu/pay/gateway".into(), "us".into())));

    // Another organisation's reads never see acme's rows, whatever the filter, nor acme globex's.
    let globex_full = app.get("/api/v1/access-graph", &globex).await.json();
    let globex_all = edge_set(&globex_full);
    assert_eq!(globex_all.len(), 3, "{globex_all:?}");
    assert!(
        globex_all.contains(&(
            "us/shop/globex-spy".into(),
            "internet/pay.example.com".into(),
            "us".into()
        )),
        "acme's exposure of pay.example.com does not reach into globex: {globex_all:?}"
    );
    for q in ["namespace=pay", "workload=gateway", "workload=cart", "namespace=catalog"] {
        let graph = app.get(&format!("/api/v1/access-graph?{q}"), &globex).await.json();
        assert!(edge_set(&graph).is_subset(&globex_all), "{q}");
        assert!(!graph.to_string().contains("frontend\",\"target\":\"us/shop/cart"), "{q}");
    }
    assert!(edge_set(&app.get("/api/v1/access-graph?namespace=catalog", &globex).await.json())
        .is_empty());
    assert_eq!(
        app.get("/api/v1/access-graph?cluster=eu", &globex).await.status,
        StatusCode::NOT_FOUND,
        "acme's cluster is not globex's"
    );
}

/// The summary's namespaces, external nodes and edges, computed from the full graph.
fn summary_of(full: &Value) -> Value {
    let by_id = nodes(full);
    let mut namespaces: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut external: BTreeMap<String, u64> = BTreeMap::new();
    for n in by_id.values() {
        match (n["cluster"].as_str(), n["namespace"].as_str()) {
            (Some(c), Some(ns)) => {
                let entry = namespaces.entry(format!("{c}/{ns}")).or_default();
                if n["kind"] == "service" {
                    entry.1 += 1;
                } else {
                    entry.0 += 1;
                }
            }
            _ => *external.entry(n["kind"].as_str().unwrap().to_owned()).or_default() += 1,
        }
    }
    let group = |id: &str| {
        let n = &by_id[id];
        match (n["cluster"].as_str(), n["namespace"].as_str()) {
            (Some(c), Some(ns)) => format!("{c}/{ns}"),
            _ => n["kind"].as_str().unwrap().to_owned(),
        }
    };
    let mut edges: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    for e in full["edges"].as_array().unwrap() {
        let key = (
            group(e["source"].as_str().unwrap()),
            group(e["target"].as_str().unwrap()),
            e["observed_in"].as_str().unwrap().to_owned(),
        );
        let entry = edges.entry(key).or_default();
        entry.0 += 1;
        entry.1 += e["connections"].as_u64().unwrap();
    }
    json!({
        "namespaces": namespaces.into_iter().map(|(id, (w, s))| json!([id, w, s])).collect::<Vec<_>>(),
        "external": external.into_iter().map(|(k, n)| json!([k, n])).collect::<Vec<_>>(),
        "edges": edges.into_iter().map(|((s, t, o), (n, c))| json!([s, t, o, n, c])).collect::<Vec<_>>(),
        "clusters": full["clusters"],
    })
}

/// The summary as `summary_of` writes it, sorted the same way.
fn flatten(summary: &Value) -> Value {
    let mut namespaces: Vec<Value> = summary["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| json!([n["id"], n["workloads"], n["services"]]))
        .collect();
    namespaces.sort_by_key(|v| v.to_string());
    let mut external: Vec<Value> = summary["external"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| json!([n["id"], n["targets"]]))
        .collect();
    external.sort_by_key(|v| v.to_string());
    let mut edges: Vec<Value> = summary["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| json!([e["source"], e["target"], e["observed_in"], e["edges"], e["connections"]]))
        .collect();
    edges.sort_by_key(|v| v.to_string());
    json!({"namespaces": namespaces, "external": external, "edges": edges, "clusters": summary["clusters"]})
}

#[tokio::test]
async fn the_aggregated_view_counts_what_the_full_graph_shows() {
    let app = test_app().await;
    let (acme, globex) = two_orgs(&app).await;
    for q in
        ["", "?since=2026-11-01T00:00:00Z", "?cluster=eu", "?cluster=us&since=2026-11-01T00:00:00Z"]
    {
        let full = app.get(&format!("/api/v1/access-graph{q}"), &acme).await.json();
        let reply = app.get(&format!("/api/v1/access-graph/summary{q}"), &acme).await;
        assert_eq!(reply.status, StatusCode::OK, "{q}: {}", reply.text());
        let summary = reply.json();
        let (mut want, got) = (summary_of(&full), flatten(&summary));
        // The summary's external ids are the kinds; the test's too. Sort both the same way.
        for key in ["namespaces", "external", "edges"] {
            let mut list = want[key].as_array().unwrap().clone();
            list.sort_by_key(|v| v.to_string());
            want[key] = Value::Array(list);
        }
        assert_eq!(got, want, "{q}");
    }
    // Spelled out once: us/shop calls eu/pay through the exposed hostname, and the aggregate edge
    // from us/shop to us/shop stands for frontend→cart, frontend→currency (a Service) and
    // checkout→cart.
    let summary = app.get("/api/v1/access-graph/summary", &acme).await.json();
    let find = |s: &str, t: &str| {
        summary["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["source"] == s && e["target"] == t)
            .cloned()
            .unwrap_or_else(|| panic!("no {s} -> {t} in {summary}"))
    };
    assert_eq!(find("us/shop", "eu/pay")["edges"], 1);
    assert_eq!(find("us/shop", "us/shop")["edges"], 3);
    assert_eq!(find("us/shop", "us/shop")["connections"], 15);
    assert_eq!(find("us/shop", "internet")["edges"], 1);
    let shop = summary["namespaces"].as_array().unwrap().iter().find(|n| n["id"] == "us/shop");
    assert_eq!(shop.unwrap()["workloads"], 4, "frontend, checkout, invoicer, cart: {summary}");
    assert_eq!(shop.unwrap()["services"], 1);

    // A cluster named by its id aggregates the same as by its name.
    let clusters = app.get("/api/v1/clusters", &acme).await.json();
    let eu_id = clusters.as_array().unwrap().iter().find(|c| c["name"] == "eu").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.get(&format!("/api/v1/access-graph/summary?cluster={eu_id}"), &acme).await.json(),
        app.get("/api/v1/access-graph/summary?cluster=eu", &acme).await.json()
    );

    // globex's summary holds globex's rows only.
    let theirs = app.get("/api/v1/access-graph/summary", &globex).await.json();
    let text = theirs.to_string();
    assert!(!text.contains("catalog") && !text.contains("eu/"), "{text}");
    assert_eq!(flatten(&theirs)["edges"].as_array().unwrap().len(), 3, "{theirs}");
}

/// What the export was before it streamed: every edge at once, rendered in one piece.
async fn unstreamed(
    app: &TestApp,
    org: &str,
    cluster: &str,
    namespace: Option<&str>,
    version: IntentsVersion,
    json: bool,
) -> String {
    let org_id =
        app.get("/api/v1/whoami", org).await.json()["org_id"].as_str().unwrap().parse().unwrap();
    let clusters = app.get("/api/v1/clusters", org).await.json();
    let cluster_id = clusters.as_array().unwrap().iter().find(|c| c["name"] == cluster).unwrap()
        ["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let edges: Vec<model::Edge> = app
        .state
        .store
        .cluster_edges(org_id, cluster_id, namespace, &ReadLimits::default())
        .await
        .unwrap()
        .into_iter()
        .map(|ce| ce.edge)
        .collect();
    let docs = intents::client_intents(&edges, version);
    if json {
        intents::to_json(&docs)
    } else {
        intents::to_yaml(&docs)
    }
}

#[tokio::test]
async fn the_streamed_export_equals_the_unstreamed_one() {
    let app = test_app().await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    // Names whose order differs between byte order and a linguistic collation ("a-b" < "ab"
    // bytewise, and en_US ignores the dash), many clients, several edges per client, and
    // clients with only an empty internet target (no document).
    let mut edges = Vec::new();
    for ns in ["a-b", "ab", "a.c", "shop"] {
        for c in 0..40 {
            let client = match c % 4 {
                0 => format!("x-{c}"),
                1 => format!("x{c}"),
                2 => format!("x.{c}"),
                _ => format!("svc-{c}"),
            };
            edges.push(k8s_edge(ns, &client, "shop", "cart", 7070, 1));
            edges.push(k8s_edge(ns, &client, ns, &format!("db-{}", c % 3), 5432, 2));
            if c % 5 == 0 {
                edges.push(internet_edge(ns, &client, "api.example.com", "203.0.113.1", 443));
            }
        }
    }
    let reply = app.post_report(&jwt, &report(edges, vec![])).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{}", reply.text());
    let token = &org.api_token;
    for version in IntentsVersion::ALL {
        for (format, json) in [("yaml", false), ("json", true)] {
            for namespace in [None, Some("a-b"), Some("shop"), Some("nowhere")] {
                let mut uri = format!(
                    "/api/v1/clusters/prod/client-intents?version={}&format={format}",
                    version.name()
                );
                if let Some(ns) = namespace {
                    uri.push_str(&format!("&namespace={ns}"));
                }
                let reply = app.get(&uri, token).await;
                assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
                let want = unstreamed(&app, token, "prod", namespace, version, json).await;
                assert_eq!(reply.text(), want, "{uri}");
                if json {
                    let docs = reply.json();
                    let expected = if namespace == Some("nowhere") { 0 } else { 1 };
                    assert!(docs.as_array().unwrap().len() >= expected, "{uri}");
                    assert!(reply.headers[header::CONTENT_TYPE]
                        .to_str()
                        .unwrap()
                        .starts_with("application/json"));
                }
            }
        }
    }
    let all = app.get("/api/v1/clusters/prod/client-intents?format=json", token).await.json();
    assert_eq!(all.as_array().unwrap().len(), 160, "one document per client");
}

#[tokio::test]
async fn bad_read_parameters_are_refused_with_what_to_fix() {
    let reads = ReadLimits { max_edges: 3, ..Default::default() };
    let app =
        test_app_protected(Config::default(), Protections { reads, ..Default::default() }).await;
    let (org, _, jwt) = app.tenant("acme", "prod").await;
    let token = &org.api_token;
    let long = "n".repeat(300);
    for (uri, status) in [
        ("/api/v1/access-graph/summary?colour=blue".to_owned(), StatusCode::BAD_REQUEST),
        ("/api/v1/access-graph/summary?since=yesterday".to_owned(), StatusCode::BAD_REQUEST),
        ("/api/v1/access-graph/summary?since=%E2%82%AC".to_owned(), StatusCode::BAD_REQUEST),
        ("/api/v1/access-graph/summary?cluster=mars".to_owned(), StatusCode::NOT_FOUND),
        (format!("/api/v1/access-graph?namespace={long}"), StatusCode::BAD_REQUEST),
        (format!("/api/v1/access-graph?workload={long}"), StatusCode::BAD_REQUEST),
        (format!("/api/v1/clusters/prod/client-intents?namespace={long}"), StatusCode::BAD_REQUEST),
        ("/api/v1/access-graph?namespace=%00".to_owned(), StatusCode::BAD_REQUEST),
        (
            "/api/v1/clusters/prod/client-intents?namespace=a%00b".to_owned(),
            StatusCode::BAD_REQUEST,
        ),
        ("/api/v1/access-graph/summary?cluster=%00".to_owned(), StatusCode::BAD_REQUEST),
        ("/api/v1/access-graph?cluster=a%00".to_owned(), StatusCode::BAD_REQUEST),
        ("/api/v1/clusters/%00/client-intents".to_owned(), StatusCode::BAD_REQUEST),
        ("/api/v1/access-graph?workload=%27%3B%20DROP%20TABLE%20edges".to_owned(), StatusCode::OK),
    ] {
        let reply = app.get(&uri, token).await;
        assert_eq!(reply.status, status, "{uri}: {}", reply.text());
        if status != StatusCode::OK {
            assert!(!reply.error().is_empty(), "{uri}");
        }
    }

    // Past --graph-max-edges: the summary and the export say how to narrow, before any byte of
    // a stream is sent.
    let edges = (0..4)
        .map(|i| k8s_edge(&format!("ns-{i}"), "client", "shop", "cart", 7070, 1))
        .collect::<Vec<_>>();
    assert_eq!(app.post_report(&jwt, &report(edges, vec![])).await.status, StatusCode::ACCEPTED);
    let summary = app.get("/api/v1/access-graph/summary", token).await;
    assert_eq!(summary.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", summary.text());
    assert!(summary.error().contains("cluster="), "{}", summary.error());
    let export = app.get("/api/v1/clusters/prod/client-intents?format=json", token).await;
    assert_eq!(export.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", export.text());
    assert!(export.error().contains("namespace="), "{}", export.error());
    // A filtered read below the cap is served although the organisation is above it.
    let one = app.get("/api/v1/access-graph?namespace=ns-1", token).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    assert_eq!(edge_set(&one.json()).len(), 1);
    let one = app.get("/api/v1/clusters/prod/client-intents?namespace=ns-2", token).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text());
    assert!(one.text().contains("namespace: ns-2"), "{}", one.text());
}
