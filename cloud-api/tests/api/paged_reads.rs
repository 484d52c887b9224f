//! Paged graph reads (`limit=`, `after=`): every page together is exactly the unpaged read,
//! whatever the filter and the page size; a page holds whole clients; cursors that this server
//! did not give are refused.

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use base64::Engine;
use serde_json::Value;

use crate::common::*;
use crate::scaled_reads::{edge_set, nodes, two_orgs};

/// Every page of `query` in pages of `limit`, following `next`.
async fn pages(app: &TestApp, token: &str, query: &str, limit: usize) -> Vec<Value> {
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut uri = format!("/api/v1/access-graph?{query}&limit={limit}");
        if let Some(a) = &after {
            uri.push_str(&format!("&after={a}"));
        }
        let reply = app.get(&uri, token).await;
        assert_eq!(reply.status, StatusCode::OK, "{uri}: {}", reply.text());
        let page = reply.json();
        after = page["next"].as_str().map(str::to_owned);
        pages.push(page);
        assert!(pages.len() <= 100, "{query} limit={limit}: the pages never end");
        if after.is_none() {
            return pages;
        }
    }
}

/// The client a graph edge belongs to, across clusters: (namespace, name) of its source, or of
/// its target for calls from outside the clusters.
fn client(edge: &Value, nodes: &BTreeMap<String, Value>) -> (String, String) {
    let source = &nodes[edge["source"].as_str().unwrap()];
    let end = if source["kind"] == "workload" {
        source
    } else {
        &nodes[edge["target"].as_str().unwrap()]
    };
    (end["namespace"].as_str().unwrap().into(), end["name"].as_str().unwrap().into())
}

#[tokio::test]
async fn pages_together_are_exactly_the_unpaged_read() {
    let app = test_app().await;
    let (acme, globex) = two_orgs(&app).await;
    for query in [
        "",
        "namespace=shop",
        "namespace=pay",
        "cluster=us",
        "cluster=eu",
        "workload=cart",
        "since=2026-11-01T00:00:00Z",
        "cluster=us&namespace=shop",
        "changed_since=2026-11-01T00:00:00Z",
    ] {
        let whole = app.get(&format!("/api/v1/access-graph?{query}"), &acme).await.json();
        assert!(whole.get("next").is_none(), "{query}: an unpaged read has no next");
        let mut whole_edges: Vec<Value> = whole["edges"].as_array().unwrap().clone();
        whole_edges.sort_by_key(|e| e.to_string());
        for limit in [1, 2, 3, 5, 1000] {
            let read = pages(&app, &acme, query, limit).await;
            let mut edges: Vec<Value> = Vec::new();
            let mut all_nodes = BTreeMap::new();
            let mut counts: BTreeMap<String, u64> = BTreeMap::new();
            let mut clients_seen = BTreeSet::new();
            for page in &read {
                let page_nodes = nodes(page);
                let page_edges = page["edges"].as_array().unwrap();
                let clients: BTreeSet<_> =
                    page_edges.iter().map(|e| client(e, &page_nodes)).collect();
                assert!(
                    page_edges.len() <= limit || clients.len() == 1,
                    "{query} limit={limit}: a page larger than its limit holds one client: {page}"
                );
                for c in &clients {
                    assert!(clients_seen.insert(c.clone()), "{query} limit={limit}: {c:?} split");
                }
                edges.extend(page_edges.iter().cloned());
                for (id, node) in page_nodes {
                    all_nodes.insert(id, node);
                }
                for c in page["clusters"].as_array().unwrap() {
                    *counts.entry(c["name"].as_str().unwrap().into()).or_default() +=
                        c["edges"].as_u64().unwrap();
                }
            }
            edges.sort_by_key(|e| e.to_string());
            assert_eq!(edges, whole_edges, "{query} limit={limit}: the pages' edges");
            assert_eq!(all_nodes, nodes(&whole), "{query} limit={limit}: the pages' nodes");
            let whole_counts: BTreeMap<String, u64> = whole["clusters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| (c["name"].as_str().unwrap().into(), c["edges"].as_u64().unwrap()))
                .collect();
            assert_eq!(counts, whole_counts, "{query} limit={limit}: per-cluster counts");
            if limit == 1 && whole_edges.len() > 1 {
                assert!(read.len() > 1, "{query}: one edge a page is more than one page");
            }
        }
    }
    // A client with more edges than a page comes whole: `us/shop/checkout` has four.
    let checkout = pages(&app, &acme, "workload=checkout", 2).await;
    let sizes: Vec<usize> = checkout.iter().map(|p| p["edges"].as_array().unwrap().len()).collect();
    assert!(sizes.iter().any(|&n| n >= 4), "checkout's edges in one page: {sizes:?}");

    // Another organisation's pages hold only its own edges.
    let globex_whole = edge_set(&app.get("/api/v1/access-graph", &globex).await.json());
    let globex_paged: BTreeSet<_> =
        pages(&app, &globex, "", 1).await.iter().flat_map(edge_set).collect();
    assert_eq!(globex_paged, globex_whole);
}

#[tokio::test]
async fn bad_page_parameters_are_refused_with_what_to_fix() {
    let app = test_app().await;
    let (acme, _) = two_orgs(&app).await;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let first = app.get("/api/v1/access-graph?limit=2", &acme).await.json();
    let next = first["next"].as_str().expect("more than two edges: a next page").to_owned();
    for (uri, wants) in [
        ("/api/v1/access-graph?limit=0".to_owned(), "limit="),
        ("/api/v1/access-graph?limit=99999999999999999999999".to_owned(), "limit"),
        ("/api/v1/access-graph?limit=-1".to_owned(), "limit"),
        ("/api/v1/access-graph?limit=many".to_owned(), "limit"),
        (format!("/api/v1/access-graph?after={next}"), "limit="),
        ("/api/v1/access-graph?limit=2&after=not-a-cursor!".to_owned(), "first page"),
        (format!("/api/v1/access-graph?limit=2&after={}", b64("[\"shop\"]")), "first page"),
        (
            format!("/api/v1/access-graph?limit=2&after={}", b64("[\"a\\u0000\",\"b\"]")),
            "first page",
        ),
        (format!("/api/v1/access-graph?limit=2&after={}", "A".repeat(5000)), "first page"),
        (format!("/api/v1/access-graph?limit=2&after={next}&format=dot"), "JSON"),
    ] {
        let reply = app.get(&uri, &acme).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{uri}: {}", reply.text());
        assert!(reply.error().contains(wants), "{uri}: {}", reply.error());
    }
    // A limit above --graph-max-edges is cut to it: one page, all of it, here.
    let big = app.get("/api/v1/access-graph?limit=1000000000", &acme).await;
    assert_eq!(big.status, StatusCode::OK, "{}", big.text());
    assert!(big.json().get("next").is_none());
    assert_eq!(
        edge_set(&big.json()),
        edge_set(&app.get("/api/v1/access-graph", &acme).await.json())
    );

    // A cursor past every client is an empty last page, not an error.
    let past = b64("[\"zzz\",\"zzz\"]");
    let last = app.get(&format!("/api/v1/access-graph?limit=2&after={past}"), &acme).await;
    assert_eq!(last.status, StatusCode::OK, "{}", last.text());
    assert!(edge_set(&last.json()).is_empty());
    assert!(last.json().get("next").is_none());
}
